"""The :class:`Recordings` data set: clips of real recordings with the item and offset of each."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from weightspace._errors import WeightspaceValueError
from weightspace.data._clips import ClipSet, index_mask

__all__ = ["Recordings", "_under"]


@dataclass(frozen=True, eq=False, repr=False)
class Recordings(ClipSet, Dataset[tuple[Tensor, Tensor]]):
    """Fixed-length clips cut from recorded audio files, with the item each clip comes from.

    An *item* is the unit a clip belongs to: a stamp for :func:`stamp_captions` (the same
    stamp's caption is recorded in several languages) and :func:`sound_effects`, a sample file
    for :func:`sonic_pi_samples` (which may cut several windows from one file). Split by item
    (:meth:`split`) so that no recording, or no stamp, reaches both the training and the test
    set.

    Item ``i`` of the data set is ``(waveform, label)``: the waveform as a ``[1, T]`` float32
    tensor (or ``transform`` of it) and the label as an int64 scalar indexing :attr:`classes`.
    Labels index the full :attr:`classes` and item ids the full :attr:`items`, also in subsets.

    Shapes:
        - waveforms: ``[N, T]`` float32, ``T = round(duration * sample_rate)``, peak 0.9.
        - labels, item: ``[N]`` int64.
        - offset: ``[N]`` float32, seconds.

    Attributes:
        waveforms: All clips.
        labels: Index of each clip's class in :attr:`classes`.
        classes: The class names, in label order.
        sample_rate: Samples per second.
        item: Index of each clip's item in :attr:`items`.
        offset: Where each clip starts in its source file, in seconds (negative when a short
            recording was centred in a longer window).
        items: The items of the build, such as ``"animals/mammals/badger"`` or ``"bd_808"``.
        item_category: The category of each item, aligned with :attr:`items`: the stamp's
            folder (``"animals/mammals"``) or the sample's prefix (``"bd"``).
        source: Where the audio comes from, such as ``"tuxpaint-stamps-default"``.
        transform: Applied to the ``[1, T]`` waveform in :meth:`__getitem__`, if not ``None``.

    Example:
        >>> from weightspace.data import sonic_pi_samples
        >>> ds = sonic_pi_samples(["tabla", "bd"], progress=False)
        >>> ds
        Recordings(sonic-pi-samples: 39 clips, 2 classes, 39 items, 1 s at 16000 Hz)
        >>> wave, label = ds[0]
        >>> wave.shape, ds.classes[int(label)], ds.item_name[0]
        (torch.Size([1, 16000]), 'bd', 'bd_808')
    """

    waveforms: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    sample_rate: int
    item: Tensor
    offset: Tensor
    items: tuple[str, ...]
    item_category: tuple[str, ...]
    source: str
    transform: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if self.waveforms.ndim != 2:
            raise WeightspaceValueError(
                f"`waveforms` must have shape [N, T], got {tuple(self.waveforms.shape)}"
            )
        n = self.waveforms.shape[0]
        for arg in ("labels", "item", "offset"):
            shape = tuple(getattr(self, arg).shape)
            if shape != (n,):
                raise WeightspaceValueError(
                    f"`{arg}` must have shape [{n}] to match `waveforms`, got {shape}"
                )
        if len(self.item_category) != len(self.items):
            raise WeightspaceValueError(
                f"`item_category` must have one entry per item ({len(self.items)}), "
                f"got {len(self.item_category)}"
            )

    def __repr__(self) -> str:
        return (
            f"Recordings({self.source}: {len(self)} clips, {len(self.classes)} classes, "
            f"{len(set(self.item.tolist()))} items, {self.duration:g} s at {self.sample_rate} Hz)"
        )

    @property
    def item_name(self) -> tuple[str, ...]:
        """The item (stamp or sample file) of each clip."""
        return tuple(self.items[i] for i in self.item.tolist())

    @property
    def category(self) -> tuple[str, ...]:
        """The category of each clip's item (see :attr:`item_category`)."""
        return tuple(self.item_category[i] for i in self.item.tolist())

    def counts(self) -> dict[str, int]:
        """Return the number of clips of each class, in class order.

        Example:
            >>> from weightspace.data import sonic_pi_samples
            >>> sonic_pi_samples(["tabla", "bd"], progress=False).counts()
            {'tabla': 26, 'bd': 13}
        """
        found = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return {c: int(k) for c, k in zip(self.classes, found, strict=True)}

    def with_transform(self, transform: Callable[[Tensor], Tensor] | None) -> Recordings:
        """Return a copy that applies ``transform`` to each ``[1, T]`` waveform it yields.

        Args:
            transform: A function of a ``[1, T]`` float32 tensor, or ``None`` for none.

        Returns:
            A new data set sharing this one's tensors.

        Example:
            >>> from weightspace.data import sonic_pi_samples
            >>> ds = sonic_pi_samples(["bd"], progress=False)
            >>> ds.with_transform(lambda w: w[:, :100])[0][0].shape
            torch.Size([1, 100])
        """
        return dataclasses.replace(self, transform=transform)

    def subset(
        self,
        *,
        classes: Sequence[str] | str | None = None,
        items: Sequence[str] | str | None = None,
        categories: Sequence[str] | str | None = None,
        indices: Sequence[int] | Tensor | None = None,
    ) -> Recordings:
        """Return the clips that match every given filter, in their original order.

        Example:
            >>> from weightspace.data import sonic_pi_samples
            >>> ds = sonic_pi_samples(["tabla", "bd", "sn"], progress=False)
            >>> len(ds.subset(classes=["bd", "sn"])), len(ds.subset(items="bd_808"))
            (17, 1)

        Args:
            classes: Classes to keep; a single name is accepted too. Labels are not renumbered.
            items: Items to keep, by name (see :attr:`items`).
            categories: Categories to keep: a category matches itself and every category
                below it (``"animals"`` keeps ``"animals/birds"``).
            indices: Clip indices to keep (a sequence of ints, an int tensor or a bool mask
                of length ``len(self)``).

        Returns:
            A new data set; this one is not changed.

        Raises:
            WeightspaceValueError: if a class, item, category or index is not in this data set.
        """
        n = len(self)
        mask = torch.ones(n, dtype=torch.bool)
        if classes is not None:
            wanted = _names("classes", classes, self.classes)
            ids = torch.tensor([self.classes.index(c) for c in wanted], dtype=torch.int64)
            mask &= torch.isin(self.labels, ids)
        if items is not None:
            wanted = _names("items", items, self.items)
            ids = torch.tensor([self.items.index(i) for i in wanted], dtype=torch.int64)
            mask &= torch.isin(self.item, ids)
        if categories is not None:
            chosen = [categories] if isinstance(categories, str) else list(categories)
            keep = [
                i for i, cat in enumerate(self.item_category) if any(_under(cat, c) for c in chosen)
            ]
            if not keep:
                known = sorted(set(self.item_category))
                raise WeightspaceValueError(
                    f"`categories` {chosen} match no item of this data set; choose from {known}"
                )
            mask &= torch.isin(self.item, torch.tensor(keep, dtype=torch.int64))
        if indices is not None:
            mask &= index_mask(indices, n)
        return self._take(mask.nonzero().squeeze(1))

    def split(
        self, fractions: Sequence[float] = (0.6, 0.2, 0.2), *, seed: int = 0
    ) -> tuple[Recordings, ...]:
        """Split the clips into parts by item, so that no item has clips in two parts.

        Items are grouped by the set of classes of their clips (for Sonic Pi samples: by
        class; for stamp captions: by the languages the stamp was recorded in); each group is
        shuffled with ``seed`` and cut by ``fractions`` (rounded cumulative counts), so that
        every class is spread over the parts in about those proportions.

        Example:
            >>> from weightspace.data import sonic_pi_samples
            >>> ds = sonic_pi_samples(["tabla", "bd"], progress=False)
            >>> train, val, test = ds.split((0.6, 0.2, 0.2), seed=0)
            >>> len(train), len(val), len(test)
            (24, 7, 8)

        Args:
            fractions: Positive fractions that sum to 1, one per part.
            seed: Seed of the shuffle, a non-negative integer.

        Returns:
            One data set per fraction, each in the original clip order.

        Raises:
            WeightspaceValueError: if ``fractions`` or ``seed`` is invalid.
        """
        parts = [float(f) for f in fractions]
        if not parts or any(not (math.isfinite(f) and f > 0) for f in parts):
            raise WeightspaceValueError(
                f"`fractions` must be positive numbers, got {list(fractions)}"
            )
        if abs(sum(parts) - 1.0) > 1e-6:
            raise WeightspaceValueError(
                f"`fractions` must sum to 1, got {list(fractions)} (sum {sum(parts):g}); "
                "divide them by their sum"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise WeightspaceValueError(f"`seed` must be a non-negative integer, got {seed!r}")
        present = sorted(set(self.item.tolist()))
        labels_of: dict[int, set[int]] = {i: set() for i in present}
        for i, y in zip(self.item.tolist(), self.labels.tolist(), strict=True):
            labels_of[i].add(y)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in present:
            groups.setdefault(tuple(sorted(labels_of[i])), []).append(i)
        part_of: dict[int, int] = {}
        for g, (key, members) in enumerate(sorted(groups.items())):
            rng = np.random.default_rng([seed, g, *key])
            order = [members[k] for k in rng.permutation(len(members))]
            bounds = np.rint(np.cumsum(parts) * len(order)).astype(int)
            bounds[-1] = len(order)
            start = 0
            for p, stop in enumerate(bounds.tolist()):
                for i in order[start:stop]:
                    part_of[i] = p
                start = max(start, stop)
        assignment = torch.tensor([part_of[i] for i in self.item.tolist()], dtype=torch.int64)
        return tuple(self._take((assignment == p).nonzero().squeeze(1)) for p in range(len(parts)))

    def _take(self, keep: Tensor) -> Recordings:
        return dataclasses.replace(
            self,
            waveforms=self.waveforms[keep],
            labels=self.labels[keep],
            item=self.item[keep],
            offset=self.offset[keep],
        )


def _under(category: str, prefix: str) -> bool:
    prefix = prefix.strip("/")
    return category == prefix or category.startswith(prefix + "/")


def _names(argument: str, given: Sequence[str] | str, known: Sequence[str]) -> list[str]:
    wanted = [given] if isinstance(given, str) else list(given)
    unknown = [w for w in wanted if w not in known]
    if unknown:
        shown = list(known) if len(known) <= 20 else [*known[:20], "..."]
        raise WeightspaceValueError(
            f"`{argument}` has names that are not in this data set: {unknown}; choose from {shown}"
        )
    return wanted
