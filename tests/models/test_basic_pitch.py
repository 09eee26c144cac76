"""Basic Pitch in PyTorch against the released model under onnxruntime and the official code.

The parity tests render a real piece (a Bach chorale through FluidSynth), run it through our
port and through onnxruntime on the ``nmp.onnx`` file of the basic-pitch wheel, and decode the
notes with our port and with the official ``basic_pitch.note_creation``. They skip when the
``pitch`` extra or FluidSynth is missing.
"""

from __future__ import annotations

import shutil
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from weightspace import WeightspaceValueError
from weightspace.models import (
    BasicPitch,
    NoteEvent,
    Posteriorgrams,
    basic_pitch,
    basic_pitch_loss,
    note_targets,
    notes_from_posteriorgrams,
    notes_to_midi,
)
from weightspace.models._basic_pitch import onnx_posteriorgrams, onnx_session


def _official() -> tuple[Any, Any]:
    """The official inference and note-creation modules (TensorFlow-free paths only)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("librosa")
    pytest.importorskip("basic_pitch")
    # basic_pitch.note_creation imports resampy (for sonification only), which needs the
    # pkg_resources module that setuptools>=81 removed: give it an empty stand-in.
    try:
        import resampy  # noqa: F401
    except ImportError:
        sys.modules.setdefault("resampy", types.ModuleType("resampy"))
    import basic_pitch.inference as inference
    import basic_pitch.note_creation as note_creation

    return inference, note_creation


@pytest.fixture(scope="module")
def chorale() -> np.ndarray:
    """Eight seconds of a rendered Bach chorale (four instruments), mono at 22,050 Hz."""
    pytest.importorskip("music21")
    pytest.importorskip("pretty_midi")
    if shutil.which("fluidsynth") is None:
        pytest.skip("needs the fluidsynth program")
    from weightspace.data import rendered_music

    piece = rendered_music("ensemble", split="test", n_pieces=1, max_seconds=8.0)[0]
    audio: np.ndarray = piece.mixture.numpy()
    return audio


@pytest.fixture(scope="module")
def released() -> BasicPitch:
    pytest.importorskip("onnx")
    pytest.importorskip("basic_pitch")
    return basic_pitch()


def test_released_weights_fill_every_layer(released: BasicPitch) -> None:
    assert sum(p.numel() for p in released.parameters() if p.requires_grad) == 16782
    assert released.cqt_norm.weight.item() == pytest.approx(2.480741024017334)
    assert released.cqt_norm.bias.item() == pytest.approx(-0.8769183158874512)
    assert released.contour_conv.bias.tolist() == pytest.approx(
        [
            0.77295971,
            -1.23256314,
            -1.2648083,
            0.98053026,
            -0.49099299,
            1.20079279,
            0.68604892,
            -1.60691202,
        ]
    )
    # Folded batch norms are identities in eval mode.
    x = torch.randn(2, 8, 5, 7)
    assert torch.allclose(released.contour_norm(x), x, atol=1e-6)


def test_cqt_constants_equal_the_released_graph(released: BasicPitch) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from weightspace.models._basic_pitch import _onnx_state_dict  # noqa: F401
    from weightspace.models._common import package_file

    path = package_file("basic_pitch", "saved_models/icassp_2022/nmp.onnx", pip="basic-pitch")
    graph = onnx.load(str(path)).graph
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    banks = [a for a in arrays.values() if a.shape == (36, 1, 1, 256)]
    lowpass = [a for a in arrays.values() if a.shape == (1, 1, 1, 256)]
    gains = [a for a in arrays.values() if a.shape == (309, 1, 1)]
    ours = released.cqt.kernels[:, 0].numpy()
    assert len(banks) == 2
    assert {tuple(b[:2, 0, 0, 100].round(8)) for b in banks} == {
        tuple(ours[:2, 100].round(8)),
        tuple(ours[36:38, 100].round(8)),
    }
    for bank in banks:
        assert (
            min(np.abs(bank[:, 0, 0] - ours[:36]).max(), np.abs(bank[:, 0, 0] - ours[36:]).max())
            == 0.0
        )
    assert np.array_equal(lowpass[0].ravel(), released.cqt.lowpass.numpy().ravel())
    assert np.array_equal(gains[0].ravel(), released.cqt.gains.numpy())


def test_posteriorgrams_equal_onnxruntime_on_rendered_audio(
    released: BasicPitch, chorale: np.ndarray
) -> None:
    session = onnx_session()
    windows, n_frames = released.windows(chorale)
    assert windows.shape == (-(-(len(chorale) + 3840) // 36164), 43844)
    assert n_frames == len(chorale) * 86 // 22050
    with torch.no_grad():
        ours = released(windows)
    theirs = onnx_posteriorgrams(session, windows)
    for name in ("contour", "note", "onset"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert a.shape == b.shape
        assert float((a - b).abs().max()) < 1e-3, name
    assert float(theirs.note.max()) > 0.5  # the check is not on silence


def test_notes_equal_the_official_pipeline(
    released: BasicPitch, chorale: np.ndarray, tmp_path: Path
) -> None:
    inference, note_creation = _official()
    sf = pytest.importorskip("soundfile")
    wav = tmp_path / "chorale.wav"
    sf.write(str(wav), chorale, 22050, subtype="FLOAT")
    model = inference.Model(
        str(Path(inference.__file__).parent / "saved_models/icassp_2022/nmp.onnx")
    )
    with warnings.catch_warnings():
        # librosa.load imports audioread, which imports the deprecated `aifc` module.
        warnings.simplefilter("ignore", DeprecationWarning)
        official_out = inference.run_inference(str(wav), model)
    _, official_notes = note_creation.model_output_to_notes(
        official_out, onset_thresh=0.5, frame_thresh=0.3, min_note_len=11
    )
    ours_out = released.predict(chorale)
    for name in ("contour", "note", "onset"):
        assert np.abs(ours_out.numpy()[name] - official_out[name]).max() < 1e-3
    ours = notes_from_posteriorgrams(ours_out)
    assert len(ours) == len(official_notes) > 10
    for mine, theirs in zip(ours, official_notes, strict=True):
        assert (mine.start, mine.end, mine.pitch) == (theirs[0], theirs[1], theirs[2])
        assert mine.amplitude == pytest.approx(float(theirs[3]), abs=1e-4)
        assert mine.pitch_bends == [int(b) for b in theirs[4]]


def test_note_creation_matches_official_on_random_posteriorgrams() -> None:
    _, note_creation = _official()
    rng = np.random.default_rng(3)
    n = 400
    note = (rng.random((n, 88)) ** 6).astype(np.float32)
    note[50:120, 40] = 0.8
    note[200:260, 52] = 0.6
    onset = (rng.random((n, 88)) ** 8).astype(np.float32)
    onset[50, 40] = 0.9
    contour = rng.random((n, 264)).astype(np.float32)
    out = {"note": note, "onset": onset, "contour": contour}
    for kwargs, theirs_kwargs in [
        ({}, {}),
        ({"melodia_trick": False}, {"melodia_trick": False}),
        ({"min_freq": 100.0, "max_freq": 800.0}, {"min_freq": 100.0, "max_freq": 800.0}),
    ]:
        _, theirs = note_creation.model_output_to_notes(
            {k: v.copy() for k, v in out.items()},
            onset_thresh=0.5,
            frame_thresh=0.3,
            min_note_len=11,
            **theirs_kwargs,
        )
        ours = notes_from_posteriorgrams(out, **kwargs)
        assert [(o.start, o.end, o.pitch, o.pitch_bends) for o in ours] == [
            (t[0], t[1], t[2], [int(b) for b in t[4]]) for t in theirs
        ]


def test_notes_from_a_hand_made_posteriorgram() -> None:
    note = np.zeros((100, 88), dtype=np.float32)
    onset = np.zeros((100, 88), dtype=np.float32)
    contour = np.zeros((100, 264), dtype=np.float32)
    note[10:40, 39] = 0.9  # middle C
    onset[10, 39] = 0.8
    contour[10:40, 3 * 39 + 1] = 1.0  # a third of a semitone sharp
    (event,) = notes_from_posteriorgrams({"note": note, "onset": onset, "contour": contour})
    assert event.pitch == 60
    assert event.start == pytest.approx(10 * 256 / 22050)
    assert event.end == pytest.approx(40 * 256 / 22050)
    assert event.amplitude == pytest.approx(0.9)
    assert event.pitch_bends == [1] * 30
    # Too short to keep: 11 frames (127.7 ms) or fewer.
    note[:] = 0
    note[10:21, 39] = 0.9
    assert notes_from_posteriorgrams({"note": note, "onset": onset, "contour": contour}) == []


def test_notes_reject_batched_posteriorgrams() -> None:
    with pytest.raises(WeightspaceValueError, match="decode each recording separately"):
        notes_from_posteriorgrams(
            {
                "note": np.zeros((2, 172, 88)),
                "onset": np.zeros((2, 172, 88)),
                "contour": np.zeros((2, 172, 264)),
            }
        )


def test_notes_to_midi_writes_notes_and_bends() -> None:
    pytest.importorskip("pretty_midi")
    notes = [
        NoteEvent(0.5, 1.0, 60, 0.5, [0, 1, 3]),
        NoteEvent(2.0, 2.5, 64, 1.0, None),
    ]
    midi = notes_to_midi(notes)
    (instrument,) = midi.instruments
    assert [(n.start, n.end, n.pitch, n.velocity) for n in instrument.notes] == [
        (0.5, 1.0, 60, 64),
        (2.0, 2.5, 64, 127),
    ]
    assert [(b.pitch, round(b.time, 3)) for b in instrument.pitch_bends] == [
        (0, 0.5),
        (1365, 0.75),
        (4096, 1.0),
    ]
    overlapping = [NoteEvent(0.0, 1.0, 60, 0.5, [1]), NoteEvent(0.5, 1.5, 64, 0.5, [2])]
    assert notes_to_midi(overlapping).instruments[0].pitch_bends == []
    assert len(notes_to_midi(overlapping, multiple_pitch_bends=True).instruments) == 2


def test_loss_matches_hand_computation() -> None:
    probs = Posteriorgrams(
        contour=torch.full((1, 2, 264), 0.25),
        note=torch.full((1, 2, 88), 0.25),
        onset=torch.tensor([[[0.5] + [0.25] * 87, [0.25] * 88]]),
    )
    target = Posteriorgrams(
        contour=torch.zeros(1, 2, 264),
        note=torch.zeros(1, 2, 88),
        onset=torch.zeros(1, 2, 88).index_put_(
            (torch.tensor([0]), torch.tensor([0]), torch.tensor([0])), torch.tensor(1.0)
        ),
    )
    smooth = 0.2
    y0 = 0.5 * smooth  # a zero label after smoothing
    bce_neg = -(y0 * np.log(0.25) + (1 - y0) * np.log(0.75))
    bce_pos = -((1 - y0) * np.log(0.5) + y0 * np.log(0.5))
    expected = bce_neg + bce_neg + (0.95 * bce_pos + 0.05 * bce_neg)
    assert float(basic_pitch_loss(probs, target)) == pytest.approx(expected, rel=1e-5)
    no_smooth = basic_pitch_loss(probs, target, label_smoothing=0.0, positive_onset_weight=0.5)
    assert float(no_smooth) == pytest.approx(
        -2 * np.log(0.75) + 0.5 * -np.log(0.5) + 0.5 * -np.log(0.75), rel=1e-5
    )
    with pytest.raises(WeightspaceValueError, match="`label_smoothing` must be in"):
        basic_pitch_loss(probs, target, label_smoothing=1.0)


def test_note_targets_mark_frames_onsets_and_contours() -> None:
    notes = torch.tensor([[0.1, 0.5, 60.0, 90.0, 0.0], [1.9, 3.0, 21.0, 90.0, 1.0]])
    targets = note_targets(notes, start=0.0, n_frames=172)
    hop = 256 / 22050
    on = round(0.1 / hop)
    off = round(0.5 / hop)
    assert targets.note[:, 39].nonzero().ravel().tolist() == list(range(on, off))
    assert targets.onset[:, 39].nonzero().ravel().tolist() == [on]
    assert targets.contour[:, 117].nonzero().ravel().tolist() == list(range(on, off))
    # A note running past the window is cut; its onset before the window is not marked.
    late = note_targets(notes, start=2.0, n_frames=172)
    assert late.note[:, 0].nonzero().ravel().tolist() == list(range(0, round(1.0 / hop)))
    assert late.onset[:, 0].sum() == 0
    assert targets.note.shape == (172, 88) and targets.contour.shape == (172, 264)


def test_loader_errors(tmp_path: Path, hide_package: Any) -> None:
    with pytest.raises(WeightspaceValueError, match="`path` does not exist"):
        basic_pitch(path=tmp_path / "missing.onnx")
    with pytest.raises(WeightspaceValueError, match="but `pretrained=False`"):
        basic_pitch(pretrained=False, path=tmp_path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    pytest.importorskip("onnx")
    with pytest.raises(WeightspaceValueError, match="could not be read as an ONNX model"):
        basic_pitch(path=bad)
    hide_package("basic_pitch")
    from weightspace import MissingSourceError

    with pytest.raises(MissingSourceError, match="pip install --no-deps basic-pitch"):
        basic_pitch()


def test_untrained_model_shapes_and_validation() -> None:
    model = BasicPitch(n_harmonics=1).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 43844))
    assert out.note.shape == (2, 172, 88) and out.contour.shape == (2, 172, 264)
    with pytest.raises(WeightspaceValueError, match="`n_harmonics` must be a positive integer"):
        BasicPitch(n_harmonics=0)
    with pytest.raises(WeightspaceValueError, match=r"`audio` must be \[batch, samples\]"):
        model.features(torch.zeros(1, 1, 100))


def test_predict_stitches_windows_like_the_official_code() -> None:
    model = BasicPitch().eval()
    audio = np.random.default_rng(0).standard_normal(80000).astype(np.float32) * 0.1
    windows, n_frames = model.windows(audio)
    assert windows.shape == (3, 43844)
    assert n_frames == int(80000 * 86 / 22050)
    assert torch.equal(windows[0, :3840], torch.zeros(3840))
    assert torch.equal(windows[0, 3840:], torch.from_numpy(audio[: 43844 - 3840]))
    assert torch.equal(windows[1, :100], torch.from_numpy(audio[36164 - 3840 : 36164 - 3840 + 100]))
    out = model.predict(audio)
    assert out.note.shape == (n_frames, 88) and model.training is False
    with torch.no_grad():
        direct = model(windows)
    assert torch.equal(out.note[:10], direct.note[0, 15:25])
    assert torch.equal(out.note[142:152], direct.note[1, 15:25])
