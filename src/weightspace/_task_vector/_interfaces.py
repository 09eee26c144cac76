"""What :class:`~weightspace.TaskVector` expects from the layers above it.

The core sits below :mod:`weightspace.select` and :mod:`weightspace._lora`, which both build on
task vectors; it never imports them. Instead:

* :meth:`~weightspace.TaskVector.restrict` and :meth:`~weightspace.TaskVector.transfer` accept
  anything that satisfies :class:`SupportsNameMapping` (a :class:`~weightspace.select.Selection`
  does);
* the LoRA methods (:meth:`~weightspace.TaskVector.from_lora`,
  :meth:`~weightspace.TaskVector.low_rank`, :meth:`~weightspace.TaskVector.to_lora`) call the
  functions that :mod:`weightspace._lora` registers here when it is imported (``import
  weightspace`` imports it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from weightspace._errors import ShapeMismatchError, WeightspaceError, WeightspaceValueError
from weightspace._task_vector._views import TensorView

if TYPE_CHECKING:
    from weightspace._lora import LoraAdapter, LowRankTaskVector
    from weightspace._task_vector._vector import TaskVector

__all__ = [
    "LoraConversions",
    "SupportsNameMapping",
    "check_recorded_shapes",
    "lora_conversions",
    "register_lora_conversions",
    "views_of",
]


@runtime_checkable
class SupportsNameMapping(Protocol):
    """Something that maps names of model A onto names of model B, pair by pair.

    ``names_a[i]`` is renamed to ``names_b[i]``. :class:`~weightspace.select.Selection` is the
    library's implementation; an object that also has a ``shape(name_a)`` method returning a
    recorded shape (or ``None``) has those shapes checked by
    :meth:`~weightspace.TaskVector.transfer`, and one with a ``views`` sequence (a
    :class:`~weightspace.select.TensorView` or ``None`` per pair) has its views applied.
    """

    @property
    def names_a(self) -> Sequence[str]:
        """Names of model A, in order."""
        ...

    @property
    def names_b(self) -> Sequence[str]:
        """Names of model B, paired with :attr:`names_a`."""
        ...


def names_a_of(selection: object) -> list[str]:
    """The names of model A in ``selection``: its ``names_a``, or the names it iterates over.

    Raises:
        WeightspaceValueError: if ``selection`` is neither (a string is refused, not split).
    """
    names_a = getattr(selection, "names_a", None)
    if names_a is not None:
        return list(names_a)
    if isinstance(selection, str) or not isinstance(selection, Iterable):
        raise WeightspaceValueError(
            "`selection` must be a weightspace.select.Selection or an iterable of names, "
            f"got {selection!r}"
        )
    return [str(n) for n in selection]


def check_recorded_shapes(
    selection: object, names_a: Sequence[str], shape: Callable[[str], torch.Size]
) -> None:
    """Check the shapes that ``selection`` records (its optional ``shape(name_a)`` method).

    Raises:
        ShapeMismatchError: if a recorded shape differs from ``shape(name_a)``.
    """
    recorded_shape = getattr(selection, "shape", None)
    if not callable(recorded_shape):
        return
    for a_name in dict.fromkeys(names_a):
        recorded = recorded_shape(a_name)
        if recorded is not None and tuple(recorded) != tuple(shape(a_name)):
            raise ShapeMismatchError(
                f"`selection` records shape {tuple(recorded)} for {a_name!r} but the "
                f"task vector's tensor has shape {tuple(shape(a_name))}"
            )


def views_of(selection: object, n_pairs: int) -> list[TensorView | None] | None:
    """The optional per-pair views of ``selection``, or ``None`` if it carries none.

    Raises:
        WeightspaceValueError: if ``views`` is not one view (or ``None``) per pair.
    """
    views = getattr(selection, "views", None)
    if views is None:
        return None
    out = list(views)
    if len(out) != n_pairs or not all(v is None or isinstance(v, TensorView) for v in out):
        raise WeightspaceValueError(
            f"`selection.views` must hold one TensorView or None per pair ({n_pairs} pairs), "
            f"got {len(out)} entries"
        )
    return None if all(v is None for v in out) else out


@dataclass(frozen=True)
class LoraConversions:
    """The LoRA conversions that :class:`~weightspace.TaskVector` delegates to.

    Attributes:
        from_lora: :func:`weightspace._lora.lora_to_task_vector`.
        low_rank: :func:`weightspace._lora.low_rank`.
        to_lora: :func:`weightspace._lora.to_lora`.
    """

    from_lora: Callable[..., TaskVector]
    low_rank: Callable[[TaskVector, int], LowRankTaskVector]
    to_lora: Callable[..., LoraAdapter]


_registered: list[LoraConversions] = []


def register_lora_conversions(conversions: LoraConversions) -> None:
    """Register the LoRA conversions (called once, by :mod:`weightspace._lora` at import)."""
    _registered[:] = [conversions]


def lora_conversions() -> LoraConversions:
    """Return the registered LoRA conversions.

    Raises:
        WeightspaceError: if :mod:`weightspace._lora` has not been imported (it always is by
            ``import weightspace``).
    """
    if not _registered:
        # weightspace._lora registers itself on import; the top-level package loads the core
        # classes lazily, so a caller may reach TaskVector before anything imported it.
        importlib.import_module("weightspace._lora")
    if not _registered:
        raise WeightspaceError(
            "the LoRA conversions of TaskVector are not registered; `import weightspace` "
            "(which imports weightspace._lora) before calling them"
        )
    return _registered[0]
