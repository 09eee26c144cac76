"""The container of the image data sets: ``uint8`` images and targets, immutable, in memory."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from weightspace._errors import ShapeMismatchError, WeightspaceValueError

__all__ = ["ImageDataset", "Transform", "describe"]

Transform = Callable[[Tensor], Tensor]


class ImageDataset(torch.utils.data.Dataset[tuple[Tensor, int]]):
    """An immutable image classification data set held in memory as ``uint8`` tensors.

    Indexing returns ``(image, target)``: the image as ``float32`` in ``[0, 1]`` of shape
    ``[C, H, W]`` (or ``transform(image)`` when a transform is set) and the target as an
    ``int``, so it plugs into :class:`torch.utils.data.DataLoader` as it is. For fast training
    on the CPU, :meth:`tensors` returns the whole set as one float tensor instead.

    Nothing is mutated in place: :meth:`subset`, :meth:`relabel` and :meth:`with_transform`
    return new data sets that share the unchanged tensors. The tensors returned by
    :attr:`images` and :attr:`targets` are the stored ones; treat them as read-only.

    Args:
        images: ``uint8`` images.
        targets: ``int64`` class indices into ``classes``.
        classes: Class names; ``targets`` index into them.
        transform: Optional function applied to each ``float32`` image by ``__getitem__``.
        name: A short label shown by ``repr``, such as ``"mnist/train"``.

    Shapes:
        - images: :math:`(N, C, H, W)`
        - targets: :math:`(N,)`

    Raises:
        WeightspaceValueError: if a tensor has the wrong dtype or a target is out of range.
        ShapeMismatchError: if ``images`` and ``targets`` differ in length.

    Example:
        >>> ds = ImageDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8),
        ...                   torch.tensor([0, 1, 1, 0]), classes=("a", "b"))
        >>> image, target = ds[1]
        >>> image.shape, target
        (torch.Size([1, 2, 2]), 1)
        >>> ds.class_counts()
        {'a': 2, 'b': 2}
    """

    __slots__ = ("_classes", "_images", "_name", "_targets", "_transform")

    def __init__(
        self,
        images: Tensor,
        targets: Tensor,
        classes: Sequence[str],
        *,
        transform: Transform | None = None,
        name: str = "",
    ) -> None:
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            raise WeightspaceValueError(
                f"`images` must be a uint8 tensor of shape [N, C, H, W], got "
                f"{describe(images)}; convert with `(x * 255).round().to(torch.uint8)`"
            )
        if not isinstance(targets, Tensor) or targets.dtype != torch.int64 or targets.ndim != 1:
            raise WeightspaceValueError(
                f"`targets` must be an int64 tensor of shape [N], got {describe(targets)}; "
                "convert with `targets.long()`"
            )
        if len(images) != len(targets):
            raise ShapeMismatchError(
                f"`images` holds {len(images)} images but `targets` holds {len(targets)} "
                "targets; pass one target per image"
            )
        classes = tuple(classes)
        if not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
            raise WeightspaceValueError(
                f"`classes` must be distinct strings, got {classes!r}; pass one name per class"
            )
        if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= len(classes)):
            raise WeightspaceValueError(
                f"`targets` must lie in [0, {len(classes)}) to index `classes`, got values in "
                f"[{int(targets.min())}, {int(targets.max())}]; pass the full list of classes"
            )
        if transform is not None and not callable(transform):
            raise WeightspaceValueError(
                f"`transform` must be callable or None, got {transform!r}; pass a function "
                "from a float image tensor to a tensor"
            )
        self._images = images
        self._targets = targets
        self._classes: tuple[str, ...] = classes
        self._transform = transform
        self._name = name

    # ---- read-only attributes --------------------------------------------------------------

    @property
    def images(self) -> Tensor:
        """The ``uint8`` images, shape ``[N, C, H, W]`` (the stored tensor: do not modify)."""
        return self._images

    @property
    def targets(self) -> Tensor:
        """The ``int64`` class indices, shape ``[N]`` (the stored tensor: do not modify)."""
        return self._targets

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names; ``targets`` index into them."""
        return self._classes

    @property
    def transform(self) -> Transform | None:
        """The function applied to each image by ``__getitem__``, or ``None``."""
        return self._transform

    @property
    def name(self) -> str:
        """A short label of the data set, such as ``"mnist/train"``."""
        return self._name

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The shape ``(C, H, W)`` of one image."""
        c, h, w = self._images.shape[1:]
        return (int(c), int(h), int(w))

    # ---- Dataset protocol ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self._images[index].to(torch.float32).div_(255.0)
        if self._transform is not None:
            image = self._transform(image)
        return image, int(self._targets[index])

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        label = f"{self._name!r}, " if self._name else ""
        extra = f", transform={self._transform!r}" if self._transform is not None else ""
        return (
            f"ImageDataset({label}n={len(self)}, image_shape=({c}, {h}, {w}), "
            f"classes={len(self._classes)}{extra})"
        )

    # ---- derived data sets -----------------------------------------------------------------

    def _replace(
        self,
        *,
        images: Tensor | None = None,
        targets: Tensor | None = None,
        classes: Sequence[str] | None = None,
        transform: Transform | Literal["keep"] | None = "keep",
        name: str | None = None,
    ) -> ImageDataset:
        return ImageDataset(
            self._images if images is None else images,
            self._targets if targets is None else targets,
            self._classes if classes is None else classes,
            transform=self._transform if transform == "keep" else transform,
            name=self._name if name is None else name,
        )

    def with_transform(self, transform: Transform | None) -> ImageDataset:
        """Return the same data with another per-image transform.

        Args:
            transform: Function applied by ``__getitem__`` to each ``float32`` image in
                ``[0, 1]``, or ``None`` for none.

        Returns:
            A new data set sharing this one's tensors.
        """
        return self._replace(transform=transform)

    def subset(
        self,
        *,
        classes: Iterable[int | str] | None = None,
        indices: Sequence[int] | Tensor | None = None,
    ) -> ImageDataset:
        """Return the images of some classes, or at some positions, as a new data set.

        Exactly one of ``classes`` and ``indices`` must be given. Targets keep their values
        and ``classes`` keeps all names; call :meth:`relabel` to renumber the kept classes.

        Args:
            classes: Class indices or names to keep, in any order (order is not changed).
            indices: Positions to keep, in the order given (may repeat), or a boolean mask of
                length ``len(self)``.

        Returns:
            A new data set; ``self`` is unchanged.

        Raises:
            WeightspaceValueError: if both or neither argument is given, a class is unknown or
                an index is out of range.

        Example:
            >>> from weightspace.data import mnist
            >>> zeros_and_ones = mnist("test").subset(classes=[0, 1])
            >>> len(zeros_and_ones)
            2115
        """
        if (classes is None) == (indices is None):
            raise WeightspaceValueError(
                "pass exactly one of `classes` and `indices` to `subset`, got "
                f"classes={classes!r}, indices={indices!r}"
            )
        if classes is not None:
            wanted = self._class_indices(classes, "classes")
            mask = torch.isin(self._targets, torch.tensor(wanted, dtype=torch.int64))
            index = mask.nonzero().squeeze(1)
        else:
            assert indices is not None
            index = self._as_index(indices)
        return self._replace(images=self._images[index], targets=self._targets[index])

    def relabel(
        self,
        mapping: Mapping[int, int] | Mapping[str, int] | None = None,
        *,
        classes: Sequence[str] | None = None,
    ) -> ImageDataset:
        """Return the data set with renumbered classes.

        Args:
            mapping: Old class (index or name) to new class index. The new indices must be
                ``0 .. K-1`` without gaps, and every class present in :attr:`targets` must be
                mapped. Several old classes may map to one new class. ``None`` (the default)
                numbers the classes present in :attr:`targets` ``0 .. K-1`` in their old order.
            classes: Names of the new classes. By default, each new class is named by the
                names of the old classes mapped to it, joined by ``"+"``.

        Returns:
            A new data set; ``self`` is unchanged.

        Raises:
            WeightspaceValueError: if the mapping is incomplete or its values are not
                ``0 .. K-1``, or ``classes`` has the wrong length.

        Example:
            >>> from weightspace.data import digits
            >>> odd_even = digits().relabel({i: i % 2 for i in range(10)})
            >>> odd_even.classes
            ('0+2+4+6+8', '1+3+5+7+9')
        """
        if mapping is None:
            present = torch.unique(self._targets).tolist()
            old_to_new = {int(old): new for new, old in enumerate(present)}
        else:
            if not isinstance(mapping, Mapping):
                raise WeightspaceValueError(
                    f"`mapping` must be a mapping from old class to new class index, got "
                    f"{mapping!r}; pass a dict such as {{3: 0, 7: 1}}"
                )
            keys = self._class_indices(mapping.keys(), "mapping")
            old_to_new = {}
            for old, new in zip(keys, mapping.values(), strict=True):
                if isinstance(new, bool) or not isinstance(new, int) or new < 0:
                    raise WeightspaceValueError(
                        f"the values of `mapping` must be non-negative ints, got {new!r}; "
                        "map each old class to a new class index 0 .. K-1"
                    )
                old_to_new[old] = new
        new_values = sorted(set(old_to_new.values()))
        if new_values != list(range(len(new_values))):
            raise WeightspaceValueError(
                f"the values of `mapping` must be 0 .. K-1 without gaps, got {new_values}; "
                "renumber the new classes"
            )
        present = sorted(int(t) for t in torch.unique(self._targets).tolist())
        unmapped = [self._classes[t] for t in present if t not in old_to_new]
        if unmapped:
            raise WeightspaceValueError(
                f"`mapping` does not map the classes {unmapped}, which occur in the targets; "
                "map them too, or drop them first with `subset(classes=...)`"
            )
        if classes is None:
            new_classes = tuple(
                "+".join(self._classes[o] for o in sorted(old_to_new) if old_to_new[o] == k)
                for k in new_values
            )
        else:
            new_classes = tuple(classes)
            if len(new_classes) != len(new_values):
                raise WeightspaceValueError(
                    f"`classes` must name the {len(new_values)} new classes, got "
                    f"{len(new_classes)} names: {new_classes!r}"
                )
        lookup = torch.full((len(self._classes),), -1, dtype=torch.int64)
        for old, new in old_to_new.items():
            lookup[old] = new
        return self._replace(targets=lookup[self._targets], classes=new_classes)

    # ---- statistics and bulk access --------------------------------------------------------

    def class_counts(self) -> dict[str, int]:
        """Return the number of images of each class, in class order (zeros included).

        Returns:
            A dict from class name to count.
        """
        counts = torch.bincount(self._targets, minlength=len(self._classes)).tolist()
        return dict(zip(self._classes, (int(c) for c in counts), strict=True))

    def mean_std(self) -> tuple[Tensor, Tensor]:
        """Return the per-channel mean and standard deviation of the images scaled to [0, 1].

        Use the training set's statistics to normalise its test set:
        ``test.tensors(normalize=train.mean_std())``.

        Returns:
            ``(mean, std)``, each ``float32`` of shape ``[C]``.

        Raises:
            WeightspaceValueError: if the data set is empty.
        """
        if len(self) == 0:
            raise WeightspaceValueError("`mean_std` needs a non-empty data set, got 0 images")
        channels = self._images.shape[1]
        total = torch.zeros(channels, dtype=torch.float64)
        total_sq = torch.zeros(channels, dtype=torch.float64)
        for start in range(0, len(self), 8192):
            chunk = self._images[start : start + 8192].to(torch.float64).div_(255.0)
            total += chunk.sum(dim=(0, 2, 3))
            total_sq += chunk.square().sum(dim=(0, 2, 3))
        n = len(self) * self._images.shape[2] * self._images.shape[3]
        mean = total / n
        std = (total_sq / n - mean.square()).clamp_min(0.0).sqrt()
        return mean.to(torch.float32), std.to(torch.float32)

    def tensors(
        self,
        *,
        normalize: bool | tuple[Sequence[float] | Tensor, Sequence[float] | Tensor] = False,
        flatten: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Return all images as one ``float32`` tensor, and a copy of the targets.

        The transform, if any, is not applied.

        Args:
            normalize: ``False`` for values in ``[0, 1]``; ``True`` to subtract this data set's
                per-channel mean and divide by its standard deviation; or ``(mean, std)``,
                sequences of one float per channel (such as the training set's
                :meth:`mean_std`).
            flatten: Return images as vectors of length ``C * H * W``.

        Returns:
            ``(images, targets)``: ``float32`` images of shape ``[N, C, H, W]`` (or
            ``[N, C*H*W]`` when ``flatten``) and ``int64`` targets of shape ``[N]``.

        Raises:
            WeightspaceValueError: if ``normalize`` has the wrong form or a zero std.

        Example:
            >>> from weightspace.data import mnist
            >>> train = mnist("train")
            >>> x, y = train.tensors(normalize=train.mean_std(), flatten=True)
            >>> x.shape
            torch.Size([60000, 784])
        """
        x = self._images.to(torch.float32).div_(255.0)
        mean: Tensor | None
        std: Tensor | None
        if normalize is True:
            mean, std = self.mean_std()
        elif normalize is False:
            mean = std = None
        elif isinstance(normalize, tuple) and len(normalize) == 2:
            channels = self._images.shape[1]
            mean = torch.as_tensor(normalize[0], dtype=torch.float32).reshape(-1)
            std = torch.as_tensor(normalize[1], dtype=torch.float32).reshape(-1)
            if mean.numel() != channels or std.numel() != channels:
                raise WeightspaceValueError(
                    f"`normalize` must hold one mean and one std per channel ({channels}), got "
                    f"{mean.numel()} means and {std.numel()} stds; pass `dataset.mean_std()`"
                )
        else:
            raise WeightspaceValueError(
                f"`normalize` must be a bool or a (mean, std) pair, got {normalize!r}; pass "
                "`True` or `train_set.mean_std()`"
            )
        if mean is not None and std is not None:
            if bool((std <= 0).any()):
                raise WeightspaceValueError(
                    f"`normalize` has a non-positive std {std.tolist()}; pass positive stds"
                )
            x = x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
        if flatten:
            x = x.flatten(1)
        return x, self._targets.clone()

    # ---- helpers ---------------------------------------------------------------------------

    def _class_indices(self, classes: Iterable[int | str], arg: str) -> list[int]:
        if isinstance(classes, (str, int)):
            raise WeightspaceValueError(
                f"`{arg}` must be a collection of classes, got {classes!r}; pass [{classes!r}]"
            )
        out: list[int] = []
        for c in classes:
            if isinstance(c, str) and c in self._classes:
                out.append(self._classes.index(c))
            elif (
                isinstance(c, (int, np.integer))
                and not isinstance(c, bool)
                and 0 <= int(c) < len(self._classes)
            ):
                out.append(int(c))
            else:
                raise WeightspaceValueError(
                    f"`{arg}` names an unknown class {c!r}; pass class indices in "
                    f"[0, {len(self._classes)}) or names from {list(self._classes)}"
                )
        return out

    def _as_index(self, indices: Sequence[int] | Tensor) -> Tensor:
        index = torch.as_tensor(indices)
        if index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise WeightspaceValueError(
                    f"a boolean `indices` mask must have shape ({len(self)},), got "
                    f"{tuple(index.shape)}"
                )
            return index.nonzero().squeeze(1)
        if index.numel() == 0:
            return torch.zeros(0, dtype=torch.int64)
        if index.is_floating_point() or index.is_complex() or index.ndim != 1:
            raise WeightspaceValueError(
                f"`indices` must be a 1-D sequence of ints or a boolean mask, got {describe(index)}"
            )
        index = index.to(torch.int64)
        bad = (index < -len(self)) | (index >= len(self))
        if bool(bad.any()):
            raise WeightspaceValueError(
                f"`indices` must lie in [{-len(self)}, {len(self)}), got "
                f"{index[bad][:5].tolist()}; the data set holds {len(self)} images"
            )
        return index


def describe(value: object) -> str:
    """A short description of a bad argument for an error message (type and value)."""
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    return f"{type(value).__name__} {value!r}"[:200]
