"""One batching contract for training, evaluation, saliency, unlearning and alignment."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeAlias

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset, default_collate

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace.train._checks import positive_int

__all__ = [
    "Batch",
    "Data",
    "Source",
    "as_pair",
    "batch_len",
    "batches",
    "collect_pair",
    "epoch_order",
    "inputs_of",
    "legacy_batch_list",
    "source",
    "targets_of",
    "to_device",
]

Batch: TypeAlias = Any
"""One batch: an ``(inputs, targets)`` pair, a tensor of inputs, a dict, a PyG batch..."""

Data: TypeAlias = Any
"""Data in the one batching contract of :func:`batches`: a ``Dataset`` (``__len__`` and
``__getitem__``, including ``TensorDataset`` and lists of samples), a ``DataLoader``, an
``(inputs, targets)`` pair of tensors, a tensor of inputs, or an iterable of ready batches."""

Collate: TypeAlias = Callable[[list[Any]], Any]


def _is_pair(data: object) -> bool:
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and isinstance(data[0], Tensor)
        and isinstance(data[1], Tensor)
    )


def as_pair(data: object, argument: str, *, allow_empty: bool = False) -> tuple[Tensor, Tensor]:
    """Check that ``data`` is an ``(inputs, targets)`` pair of tensors and return it as a tuple.

    Args:
        data: The object to check.
        argument: The argument's name, for the message.
        allow_empty: Accept a pair of zero examples.

    Returns:
        ``(inputs, targets)``.

    Raises:
        WeightspaceValueError: if ``data`` is not a pair of tensors, or is empty.
        ShapeMismatchError: if the two tensors differ in their first dimension.
    """
    if not _is_pair(data):
        raise WeightspaceValueError(
            f"`{argument}` must be a pair (inputs, targets) of tensors, got "
            f"{type(data).__name__}; pass e.g. `dataset.tensors()`"
        )
    assert isinstance(data, (tuple, list))
    x, y = data
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ShapeMismatchError(
            f"`{argument}` as a pair (inputs, targets) needs tensors with the same first "
            f"dimension, got shapes {list(x.shape)} and {list(y.shape)}; pass one target per input"
        )
    if x.shape[0] == 0 and not allow_empty:
        raise WeightspaceValueError(f"`{argument}` is empty (0 examples); pass at least one")
    return x, y


def collect_pair(
    data: Data, argument: str, *, allow_empty: bool = False, batch_size: int = 1024
) -> tuple[Tensor, Tensor]:
    """``data`` in the contract of :func:`batches` as one ``(inputs, targets)`` pair.

    A pair of tensors is returned as it is (checked); any other form (a ``Dataset``, a
    ``DataLoader``, an iterable of ``(inputs, targets)`` batches) is read once, in order, and
    its batches are concatenated. For methods that index, shuffle or mix whole sets.
    """
    if _is_pair(data):
        return as_pair(data, argument, allow_empty=allow_empty)
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    for batch in Source(data, None, argument).iterate(batch_size):
        x, y = as_pair(batch, f"a batch of `{argument}`", allow_empty=True)
        xs.append(x)
        ys.append(y)
    return as_pair((torch.cat(xs), torch.cat(ys)), argument, allow_empty=allow_empty)


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> Tensor:
    """The indices one rank reads in one epoch (``DistributedSampler(shuffle=True)``'s order).

    ``torch.randperm(n)`` from a generator seeded with ``seed + epoch``, padded by repeating its
    first indices until ``world`` divides its length, of which rank ``rank`` takes every
    ``world``-th index starting at ``rank``.

    Args:
        n: Number of examples.
        seed: The run's seed.
        epoch: The epoch (0-based).
        rank: This process's rank.
        world: Number of data-parallel processes.

    Returns:
        ``ceil(n / world)`` int64 indices.

    Example:
        >>> from weightspace.train import epoch_order
        >>> epoch_order(5, seed=0, epoch=0, rank=0, world=2).tolist()
        [4, 1, 2]
    """
    g = torch.Generator().manual_seed(seed + epoch)
    perm = torch.randperm(n, generator=g)
    total = math.ceil(n / world) * world
    if total > n:
        repeats = math.ceil((total - n) / n)
        perm = torch.cat([perm, perm.repeat(repeats)[: total - n]])
    return perm[rank:total:world]


class Source:
    """Data in the batching contract, with indexed access where the form allows it.

    ``n`` is the number of examples of an indexed form (pair, tensor, dataset) and ``None``
    for a ``DataLoader`` or an iterable of ready batches, which are read as they come.
    """

    def __init__(self, data: Data, collate_fn: Collate | None, argument: str = "data") -> None:
        self.argument = argument
        self.tensors: tuple[Tensor, ...] | None = None
        self.dataset: Any = None
        self.iterable: Iterable[Any] | None = None
        self.n: int | None
        if isinstance(data, Tensor):
            if data.ndim == 0:
                raise WeightspaceValueError(
                    f"`{argument}` as a tensor of inputs needs a first (example) dimension, "
                    "got a 0-d tensor"
                )
            self.tensors = (data,)
            self.n = int(data.shape[0])
        elif _is_pair(data):
            self.tensors = as_pair(data, argument, allow_empty=True)
            self.n = int(self.tensors[0].shape[0])
        elif isinstance(data, TensorDataset) and collate_fn is None:
            self.tensors = tuple(data.tensors)
            self.n = len(data)
        elif isinstance(data, DataLoader):
            self.iterable = data
            self.n = None
        elif (
            hasattr(data, "__len__")
            and hasattr(data, "__getitem__")
            and not isinstance(data, (str, bytes, Mapping))
        ):
            self.dataset = data
            self.n = len(data)
        elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
            self.iterable = data
            self.n = None
        else:
            raise WeightspaceValueError(
                f"`{argument}` must be a Dataset, a DataLoader, a pair (inputs, targets) of "
                f"tensors, a tensor of inputs or an iterable of batches, got {type(data).__name__}"
            )
        if self.n == 0:
            raise WeightspaceValueError(
                f"`{argument}` is empty (0 examples): there is nothing to train or evaluate on"
            )
        self.collate: Collate = collate_fn or default_collate

    @property
    def indexed(self) -> bool:
        """Whether examples can be read by index (and so shuffled and split across ranks)."""
        return self.n is not None

    def batch(self, idx: Tensor) -> Batch:
        """The batch of the examples at ``idx`` (indexed forms only)."""
        if self.tensors is not None:
            if len(self.tensors) == 1:
                return self.tensors[0][idx]
            return tuple(t[idx] for t in self.tensors)
        return self.collate([self.dataset[int(i)] for i in idx])

    def steps(self, batch_size: int, drop_last: bool, world: int = 1) -> int | None:
        """Batches per epoch and rank, or ``None`` if unknown (an iterable without length)."""
        if self.n is None:
            try:
                return len(self.iterable)  # type: ignore[arg-type]
            except TypeError:
                return None
        per_rank = math.ceil(self.n / world)
        return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)

    def iterate(
        self,
        batch_size: int,
        *,
        order: Tensor | None = None,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        """Yield batches: of ``order`` (default: every example in turn) for an indexed form."""
        if self.n is None:
            assert self.iterable is not None
            seen = 0
            for item in self.iterable:
                seen += 1
                yield item
            if seen == 0:
                raise WeightspaceValueError(
                    f"`{self.argument}` holds no batch; pass at least one example"
                )
            return
        if order is None:
            order = torch.arange(self.n)
        m = int(order.shape[0])
        stop = m - m % batch_size if drop_last else m
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size])


def source(data: Data, collate_fn: Collate | None = None, argument: str = "data") -> Source:
    """Wrap ``data`` for indexed or sequential batch access (see :class:`Source`)."""
    return Source(data, collate_fn, argument)


def batches(
    data: Data,
    *,
    batch_size: int,
    shuffle: bool = False,
    seed: int | torch.Generator = 0,
    epoch: int = 0,
    collate_fn: Collate | None = None,
    drop_last: bool = False,
) -> Iterator[Batch]:
    """Cut ``data`` into batches: the one batching contract of the library.

    Every function that trains, evaluates or scores on data takes it in one of these forms:

    * an ``(inputs, targets)`` pair of tensors with the same first dimension: batches are
      ``(inputs[idx], targets[idx])``;
    * a tensor of inputs alone (for prediction and activations): batches are ``inputs[idx]``;
    * a ``Dataset`` (``__len__`` and ``__getitem__``: a torch ``Dataset``, a
      ``TensorDataset``, a list of samples, a list of PyG ``Data``): batches are
      ``collate_fn([dataset[i] for i in idx])`` (default
      :func:`~torch.utils.data.default_collate`; a ``TensorDataset`` without ``collate_fn``
      gives a tuple of its tensors indexed at ``idx``);
    * a ``DataLoader`` or any other iterable of ready batches (a generator, ``iter(list)``):
      read as it comes; it brings its own batch size and order, so ``batch_size``,
      ``shuffle``, ``seed``, ``collate_fn`` and ``drop_last`` do not apply. A list is a
      dataset of samples, not of batches: wrap a list of batches in ``iter(...)``.

    Args:
        data: The data, in one of the forms above.
        batch_size: Examples per batch.
        shuffle: Read the examples in a seeded random order instead of in turn.
        seed: With ``shuffle``, an int: the order is ``torch.randperm(n)`` from a generator
            seeded with ``seed + epoch`` (the order of ``DistributedSampler(shuffle=True,
            seed=seed)`` at that epoch); or a ``torch.Generator`` that the permutation is drawn
            from (advancing it).
        epoch: With an int ``seed``, the epoch whose order to read.
        collate_fn: Turns a list of samples into a batch, for a ``Dataset``.
        drop_last: Skip the last batch if it is smaller than ``batch_size``.

    Returns:
        An iterator over the batches, in order.

    Raises:
        WeightspaceValueError: if ``data`` is in none of the forms, holds no example, or an
            argument is bad (the message names it).

    Example:
        >>> import torch
        >>> from weightspace import train
        >>> x, y = torch.arange(5.0)[:, None], torch.arange(5)
        >>> [b[1].tolist() for b in train.batches((x, y), batch_size=2)]
        [[0, 1], [2, 3], [4]]
        >>> [b[1].tolist() for b in train.batches((x, y), batch_size=2, shuffle=True, seed=0)]
        [[4, 0], [1, 3], [2]]
    """
    batch_size = positive_int(batch_size, "batch_size")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise WeightspaceValueError(f"`epoch` must be an int >= 0, got {epoch!r}")
    if not isinstance(seed, torch.Generator) and (
        isinstance(seed, bool) or not isinstance(seed, int)
    ):
        raise WeightspaceValueError(f"`seed` must be an int or a torch.Generator, got {seed!r}")
    src = Source(data, collate_fn)
    order = None
    if shuffle and src.n is not None:
        if isinstance(seed, torch.Generator):
            order = torch.randperm(src.n, generator=seed)
        else:
            order = epoch_order(src.n, seed, epoch)
    return src.iterate(batch_size, order=order, drop_last=drop_last)


def legacy_batch_list(data: Data, func: str) -> Data:
    """Read a list of ``(inputs, targets)`` batches as batches, with a deprecation warning.

    Before the one batching contract, :mod:`weightspace.saliency` and the unlearning metrics
    read any iterable as batches, lists included; in the contract a list is a dataset of
    samples. For one release, a list whose every item is an ``(inputs, targets)`` pair with a
    batch dimension on the targets is still read as batches by those functions.
    """
    if isinstance(data, list) and data and all(_is_pair(b) and b[1].ndim >= 1 for b in data):
        from weightspace._deprecation import warn_deprecated

        warn_deprecated(
            f"{func}(<a list of batches>)",
            f"{func}(iter(<list of batches>)) or a DataLoader (a list is a dataset of samples)",
            since="0.1",
        )
        return iter(data)
    return data


def batch_len(batch: Batch) -> int:
    """Examples in a batch: the first dimension of its first tensor (or ``num_graphs``)."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, (tuple, list)):
        for item in batch:
            if isinstance(item, Tensor) and item.ndim:
                return int(item.shape[0])
    if isinstance(batch, Mapping):
        for item in batch.values():
            if isinstance(item, Tensor) and item.ndim:
                return int(item.shape[0])
    num = getattr(batch, "num_graphs", None)
    if isinstance(num, int):
        return num
    return 1


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Move the tensors of ``batch`` (nested in tuples, lists and dicts) to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch


def inputs_of(batch: Batch) -> Any:
    """The model input of a batch: the first element of a tuple or list, else the batch."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise WeightspaceValueError("a batch is an empty tuple; pass (inputs, targets)")
        return batch[0]
    return batch


def targets_of(batch: Batch, argument: str = "data") -> Tensor:
    """The targets of an ``(inputs, targets)`` batch."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[1], Tensor):
        return batch[1]
    raise WeightspaceValueError(
        f"`{argument}` must give (inputs, targets) batches to measure against targets, got a "
        f"batch of type {type(batch).__name__}"
    )
