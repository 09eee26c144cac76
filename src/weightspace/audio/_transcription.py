"""Note-transcription metrics as in the literature (``mir_eval``): F, F_no and frame accuracy.

Notes are rows ``(onset s, offset s, MIDI pitch, ...)`` (extra columns are ignored), such as
:attr:`weightspace.data.Piece.notes` or a list of
:class:`~weightspace.models.NoteEvent`. The three numbers Bittner et al. (ICASSP 2022) report:

* ``F``: note F-measure with offsets (``mir_eval.transcription``: onset within 50 ms, pitch
  within 50 cents, offset within 20 % of the reference duration or 50 ms, whichever is larger);
* ``F_no``: the same without the offset condition;
* ``Acc``: frame-level multi-pitch accuracy (``mir_eval.multipitch``), here computed on both
  note lists sampled every ``hop`` seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from weightspace._errors import WeightspaceValueError
from weightspace._optional import require_module

__all__ = ["frame_accuracy", "note_f_measure", "notes_array", "transcription_scores"]


def notes_array(notes: ArrayLike | Sequence[Any]) -> np.ndarray:
    """Notes as a float64 ``[n, 3]`` array of ``(onset s, offset s, MIDI pitch)``.

    Args:
        notes: Rows of at least three numbers, a tensor, or note events (named tuples with
            ``start``, ``end`` and ``pitch``).

    Returns:
        The array (``[0, 3]`` for no notes).

    Raises:
        WeightspaceValueError: if rows have fewer than three values or an offset precedes
            its onset.
    """
    if isinstance(notes, Sequence) and len(notes) and hasattr(notes[0], "pitch"):
        rows = [(float(n.start), float(n.end), float(n.pitch)) for n in notes]  # type: ignore[union-attr]
        array = np.asarray(rows, dtype=np.float64)
    else:
        if hasattr(notes, "detach"):
            notes = notes.detach().cpu().numpy()
        array = np.asarray(notes, dtype=np.float64)
        if array.size == 0:
            return np.zeros((0, 3))
        if array.ndim != 2 or array.shape[1] < 3:
            raise WeightspaceValueError(
                "`notes` must be rows of (onset, offset, pitch, ...), got shape "
                f"{list(array.shape)}"
            )
        array = array[:, :3]
    if array.size and bool((array[:, 1] < array[:, 0]).any()):
        raise WeightspaceValueError("`notes` has an offset before its onset; check the columns")
    return array.reshape(-1, 3)


def _hz(pitch: np.ndarray) -> np.ndarray:
    result: np.ndarray = 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)
    return result


def note_f_measure(
    reference: ArrayLike | Sequence[Any],
    estimate: ArrayLike | Sequence[Any],
    *,
    offsets: bool = True,
    onset_tolerance: float = 0.05,
) -> tuple[float, float, float]:
    """Note precision, recall and F-measure (``mir_eval.transcription``).

    Args:
        reference: Reference notes.
        estimate: Estimated notes.
        offsets: Require matching offsets (``F``); ``False`` gives ``F_no``.
        onset_tolerance: Largest onset difference of a match, in seconds.

    Returns:
        ``(precision, recall, f_measure)``; all 0 when either side has no notes.

    Example:
        >>> from weightspace.audio import note_f_measure
        >>> ref = [(0.0, 1.0, 60), (1.0, 2.0, 62)]
        >>> est = [(0.01, 1.0, 60), (1.0, 1.2, 62), (2.0, 3.0, 64)]
        >>> [round(v, 4) for v in note_f_measure(ref, est)]
        [0.3333, 0.5, 0.4]
        >>> [round(v, 4) for v in note_f_measure(ref, est, offsets=False)]
        [0.6667, 1.0, 0.8]
    """
    mir_eval = require_module("mir_eval", pip="mir_eval", extra="pitch")
    ref, est = notes_array(reference), notes_array(estimate)
    if len(ref) == 0 or len(est) == 0:
        return 0.0, 0.0, 0.0
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ref[:, :2],
        _hz(ref[:, 2]),
        est[:, :2],
        _hz(est[:, 2]),
        onset_tolerance=onset_tolerance,
        offset_ratio=0.2 if offsets else None,
    )
    return float(p), float(r), float(f)


def _frames(notes: np.ndarray, times: np.ndarray) -> list[np.ndarray]:
    active: list[list[float]] = [[] for _ in times]
    for onset, offset, pitch in notes:
        lo, hi = np.searchsorted(times, [onset, offset], side="left")
        for i in range(lo, hi):
            active[i].append(float(_hz(np.array(pitch))))
    return [np.array(sorted(set(a))) for a in active]


def frame_accuracy(
    reference: ArrayLike | Sequence[Any],
    estimate: ArrayLike | Sequence[Any],
    *,
    hop: float = 256 / 22050,
) -> float:
    """Frame-level multi-pitch accuracy ``TP / (TP + FP + FN)`` (``mir_eval.multipitch``).

    Both note lists are sampled every ``hop`` seconds (a note sounds in frames whose time lies
    in ``[onset, offset)``); a pitch matches within half a semitone.

    Args:
        reference: Reference notes.
        estimate: Estimated notes.
        hop: Frame spacing in seconds (Basic Pitch's by default).

    Returns:
        The accuracy in ``[0, 1]`` (0 when either side has no notes).

    Example:
        >>> from weightspace.audio import frame_accuracy
        >>> frame_accuracy([(0.0, 1.0, 60)], [(0.0, 0.5, 60)], hop=0.1)
        0.5
    """
    mir_eval = require_module("mir_eval", pip="mir_eval", extra="pitch")
    ref, est = notes_array(reference), notes_array(estimate)
    if len(ref) == 0 or len(est) == 0:
        return 0.0  # no true positive; mir_eval would warn about the empty side
    end = max(float(ref[:, 1].max()), float(est[:, 1].max()))
    times = np.arange(0.0, end + hop, hop)
    scores = mir_eval.multipitch.metrics(times, _frames(ref, times), times, _frames(est, times))
    return float(scores[2])  # (precision, recall, accuracy, ...)


def transcription_scores(
    reference: ArrayLike | Sequence[Any],
    estimate: ArrayLike | Sequence[Any],
    *,
    hop: float = 256 / 22050,
) -> dict[str, float]:
    """The paper's three numbers for one recording: ``F``, ``F_no`` and ``Acc``.

    Args:
        reference: Reference notes.
        estimate: Estimated notes.
        hop: Frame spacing of ``Acc`` in seconds.

    Returns:
        ``{"F": ..., "F_no": ..., "Acc": ..., "P": ..., "R": ...}`` (``P``, ``R`` with
        offsets).

    Example:
        >>> from weightspace.audio import transcription_scores
        >>> s = transcription_scores([(0.0, 1.0, 60)], [(0.0, 1.0, 60)], hop=0.1)
        >>> s["F"], s["F_no"], s["Acc"]
        (1.0, 1.0, 1.0)
    """
    p, r, f = note_f_measure(reference, estimate, offsets=True)
    _, _, f_no = note_f_measure(reference, estimate, offsets=False)
    acc = frame_accuracy(reference, estimate, hop=hop)
    return {"F": f, "F_no": f_no, "Acc": acc, "P": p, "R": r}
