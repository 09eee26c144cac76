"""Transcription metrics (mir_eval) on hand-made cases whose scores are known."""

from __future__ import annotations

import pytest
import torch

from weightspace import WeightspaceValueError
from weightspace.audio import frame_accuracy, note_f_measure, notes_array, transcription_scores
from weightspace.models import NoteEvent

pytest.importorskip("mir_eval")

REFERENCE = [(0.0, 1.0, 60), (1.0, 2.0, 62), (2.0, 3.0, 64), (3.0, 4.0, 65)]
ESTIMATE = [
    (0.02, 0.98, 60),  # onset and offset within tolerance: a match with offsets
    (1.03, 2.05, 62),  # the same
    (2.01, 2.30, 64),  # onset right, offset 0.7 s early (> 20 % of 1 s): matches only F_no
    (3.0, 4.0, 66),  # wrong pitch: no match
    (5.0, 6.0, 67),  # nothing there: a false positive
]


def test_note_f_measure_with_and_without_offsets() -> None:
    p, r, f = note_f_measure(REFERENCE, ESTIMATE)
    assert (p, r) == (pytest.approx(2 / 5), pytest.approx(2 / 4))
    assert f == pytest.approx(2 * (2 / 5) * (2 / 4) / (2 / 5 + 2 / 4))  # 4/9
    p, r, f = note_f_measure(REFERENCE, ESTIMATE, offsets=False)
    assert (p, r, f) == (pytest.approx(3 / 5), pytest.approx(3 / 4), pytest.approx(2 / 3))


def test_onset_tolerance_is_50_ms_by_default() -> None:
    late = [(0.06, 1.0, 60)]
    assert note_f_measure([(0.0, 1.0, 60)], late)[2] == 0.0
    assert note_f_measure([(0.0, 1.0, 60)], late, onset_tolerance=0.1)[2] == 1.0


def test_frame_accuracy_counts_true_positives_over_all_errors() -> None:
    # 10 reference frames of C; the estimate has C for 5 of them and E for 5 more frames.
    ref = [(0.0, 1.0, 60)]
    est = [(0.0, 0.5, 60), (0.5, 1.0, 64)]
    assert frame_accuracy(ref, est, hop=0.1) == pytest.approx(5 / (5 + 5 + 5))
    assert frame_accuracy(ref, ref, hop=0.1) == 1.0
    assert frame_accuracy(ref, [], hop=0.1) == 0.0


def test_transcription_scores_bundle_the_three_numbers() -> None:
    scores = transcription_scores(REFERENCE, ESTIMATE, hop=0.01)
    assert scores["F"] == pytest.approx(4 / 9)
    assert scores["F_no"] == pytest.approx(2 / 3)
    assert scores["P"] == pytest.approx(2 / 5) and scores["R"] == pytest.approx(1 / 2)
    assert 0.0 < scores["Acc"] < 1.0
    assert transcription_scores(REFERENCE, [], hop=0.01) == {
        "F": 0.0,
        "F_no": 0.0,
        "Acc": 0.0,
        "P": 0.0,
        "R": 0.0,
    }


def test_notes_array_accepts_events_tensors_and_rows() -> None:
    events = [NoteEvent(0.0, 1.0, 60, 0.5, None), NoteEvent(1.0, 2.0, 62, 0.5, [1])]
    expected = [[0.0, 1.0, 60.0], [1.0, 2.0, 62.0]]
    assert notes_array(events).tolist() == expected
    rows = torch.tensor([[0.0, 1.0, 60.0, 90.0, 0.0], [1.0, 2.0, 62.0, 90.0, 1.0]])
    assert notes_array(rows).tolist() == expected
    assert notes_array([]).shape == (0, 3)
    with pytest.raises(WeightspaceValueError, match="must be rows of"):
        notes_array([[0.0, 1.0]])
    with pytest.raises(WeightspaceValueError, match="offset before its onset"):
        notes_array([[1.0, 0.5, 60]])
