"""Bit-packed storage of a set of per-task boolean masks over named tensors."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType

import torch

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace.merge import _core

__all__ = ["PackedMasks"]


class PackedMasks:
    """Immutable, bit-packed storage of one boolean mask per task and tensor name.

    Each tensor name maps to a ``torch.uint8`` tensor ``[n_tasks, ceil(numel / 8)]``: row
    ``t`` holds task ``t``'s mask, flattened in row-major order, 8 entries per byte in
    little-endian bit order (see :func:`weightspace.merge.functional.pack_mask`). This is the
    compact form of TALL masks (Wang et al., ICML 2024, https://arxiv.org/abs/2405.07813): one
    bit per weight and task instead of a full task vector per task.

    Args:
        masks: One mapping ``name -> bool tensor`` per task, all with the same names and,
            name by name, the same shapes (for instance the output of
            :func:`weightspace.merge.tall_masks`).

    Raises:
        WeightspaceValueError: if ``masks`` is empty or a value is not a boolean tensor.
        ShapeMismatchError: if names or shapes differ between tasks.

    Example:
        >>> import torch
        >>> from weightspace.merge import PackedMasks
        >>> masks = [{"w": torch.tensor([True, False, True])}, {"w": torch.tensor([False] * 3)}]
        >>> packed = PackedMasks(masks)
        >>> len(packed), packed.nbytes
        (2, 2)
        >>> packed.unpack()[0]["w"]
        tensor([ True, False,  True])
    """

    __slots__ = ("_data", "_n_tasks", "_shapes")

    _data: Mapping[str, torch.Tensor]
    _shapes: Mapping[str, tuple[int, ...]]
    _n_tasks: int

    def __init__(self, masks: Sequence[Mapping[str, torch.Tensor]]) -> None:
        if isinstance(masks, Mapping) or not isinstance(masks, Sequence) or len(masks) == 0:
            raise WeightspaceValueError(
                "`masks` must be a non-empty sequence of mappings name -> bool tensor (one per "
                f"task), got {type(masks).__name__}"
                + (" of length 0" if isinstance(masks, Sequence) else "")
            )
        names = list(masks[0].keys())
        shapes: dict[str, tuple[int, ...]] = {}
        data: dict[str, torch.Tensor] = {}
        for task, mask in enumerate(masks):
            if set(mask.keys()) != set(names):
                raise ShapeMismatchError(
                    f"`masks[{task}]` does not have the names of `masks[0]`: "
                    f"{sorted(set(names) ^ set(mask.keys()))[:5]} differ"
                )
        for name in names:
            rows = []
            for task, mask in enumerate(masks):
                value = mask[name]
                if not isinstance(value, torch.Tensor) or value.dtype != torch.bool:
                    got = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
                    raise WeightspaceValueError(
                        f"`masks[{task}][{name!r}]` must be a boolean tensor, got {got}; "
                        "convert it with .bool()"
                    )
                shape = tuple(value.shape)
                if task == 0:
                    shapes[name] = shape
                elif shape != shapes[name]:
                    raise ShapeMismatchError(
                        f"`masks[{task}][{name!r}]` has shape {shape} but `masks[0][{name!r}]` "
                        f"has shape {shapes[name]}"
                    )
                rows.append(_core.pack_bits(value.detach().cpu()))
            data[name] = torch.stack(rows)
        self._init(data, shapes, len(masks))

    def _init(
        self, data: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], n_tasks: int
    ) -> None:
        object.__setattr__(self, "_data", MappingProxyType(data))
        object.__setattr__(self, "_shapes", MappingProxyType(shapes))
        object.__setattr__(self, "_n_tasks", n_tasks)

    @classmethod
    def from_tensors(
        cls, packed: Mapping[str, torch.Tensor], shapes: Mapping[str, Sequence[int]]
    ) -> PackedMasks:
        """Rebuild from the output of :meth:`to_tensors` (for instance read from a file).

        Args:
            packed: ``name -> uint8 tensor [n_tasks, ceil(numel / 8)]``.
            shapes: ``name -> shape`` of the original masks.

        Returns:
            The packed masks (the tensors are copied).

        Raises:
            WeightspaceValueError: if a tensor has the wrong dtype or size, or names differ.

        Example:
            >>> import torch
            >>> from weightspace.merge import PackedMasks
            >>> p = PackedMasks([{"w": torch.tensor([True, False])}])
            >>> PackedMasks.from_tensors(p.to_tensors(), p.shapes).unpack()[0]["w"]
            tensor([ True, False])
        """
        if set(packed) != set(shapes):
            raise WeightspaceValueError(
                f"`packed` and `shapes` must have the same names, got {sorted(packed)[:5]} and "
                f"{sorted(shapes)[:5]}"
            )
        data: dict[str, torch.Tensor] = {}
        dims: dict[str, tuple[int, ...]] = {}
        n_tasks: int | None = None
        for name, tensor in packed.items():
            dims[name] = tuple(int(s) for s in shapes[name])
            numel = 1
            for size in dims[name]:
                numel *= size
            width = (numel + 7) // 8
            if (
                not isinstance(tensor, torch.Tensor)
                or tensor.dtype != torch.uint8
                or tensor.ndim != 2
                or tensor.shape[1] != width
                or (n_tasks is not None and tensor.shape[0] != n_tasks)
            ):
                got = (
                    f"{tensor.dtype} {tuple(tensor.shape)}"
                    if isinstance(tensor, torch.Tensor)
                    else type(tensor).__name__
                )
                raise WeightspaceValueError(
                    f"`packed[{name!r}]` must be a uint8 tensor [n_tasks, {width}] for shape "
                    f"{dims[name]}, got {got}; pass the output of to_tensors unchanged"
                )
            n_tasks = tensor.shape[0]
            data[name] = tensor.detach().cpu().clone()
        if not n_tasks:
            raise WeightspaceValueError("`packed` must hold at least one task and one name")
        obj = cls.__new__(cls)
        obj._init(data, dims, n_tasks)
        return obj

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"PackedMasks is immutable; cannot set {name!r}")

    def __len__(self) -> int:
        """Return the number of tasks."""
        return self._n_tasks

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        """Iterate over the tasks' unpacked masks."""
        for task in range(self._n_tasks):
            yield self.task(task)

    def __repr__(self) -> str:
        return f"PackedMasks({self._n_tasks} tasks, {len(self._data)} tensors, {self.nbytes} bytes)"

    @property
    def names(self) -> tuple[str, ...]:
        """The tensor names, in insertion order."""
        return tuple(self._data)

    @property
    def shapes(self) -> Mapping[str, tuple[int, ...]]:
        """Read-only ``name -> shape`` of the masks."""
        return self._shapes

    @property
    def nbytes(self) -> int:
        """Bytes of packed storage: ``sum over names of n_tasks * ceil(numel / 8)``."""
        return sum(t.numel() for t in self._data.values())

    def task(self, index: int) -> dict[str, torch.Tensor]:
        """Unpack the masks of one task.

        Args:
            index: Task position, ``0 <= index < len(self)`` (negative counts from the end).

        Returns:
            A new ``name -> bool tensor`` dict.

        Raises:
            WeightspaceValueError: if ``index`` is out of range.

        Example:
            >>> import torch
            >>> from weightspace.merge import PackedMasks
            >>> PackedMasks([{"w": torch.tensor([True])}]).task(0)["w"]
            tensor([True])
        """
        if not isinstance(index, int) or not -self._n_tasks <= index < self._n_tasks:
            raise WeightspaceValueError(
                f"`index` must be an int in [0, {self._n_tasks}), got {index!r}"
            )
        return {
            name: _core.unpack_bits(packed[index], self._shapes[name])
            for name, packed in self._data.items()
        }

    def unpack(self) -> list[dict[str, torch.Tensor]]:
        """Unpack every task's masks.

        Returns:
            One new ``name -> bool tensor`` dict per task, equal to the masks packed.

        Example:
            >>> import torch
            >>> from weightspace.merge import PackedMasks
            >>> PackedMasks([{"w": torch.tensor([True, False])}]).unpack()
            [{'w': tensor([ True, False])}]
        """
        return [self.task(t) for t in range(self._n_tasks)]

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Return copies of the packed tensors, ``name -> uint8 [n_tasks, ceil(numel / 8)]``.

        Together with :attr:`shapes` they rebuild the masks with :meth:`from_tensors`; they can
        be written to a safetensors file.

        Returns:
            A new dict of new tensors.

        Example:
            >>> import torch
            >>> from weightspace.merge import PackedMasks
            >>> PackedMasks([{"w": torch.ones(9, dtype=torch.bool)}]).to_tensors()["w"]
            tensor([[255,   1]], dtype=torch.uint8)
        """
        return {name: t.clone() for name, t in self._data.items()}
