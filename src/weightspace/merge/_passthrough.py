"""``passthrough`` with slices: a model whose layers are stacked from other models' layers.

mergekit's "frankenmerges" (``merge_method: passthrough`` with ``slices``) copy ranges of
layers of one or more models, in order, into one deeper (or shallower) model; nothing is
computed. Here each slice ``(model, start, stop)`` contributes that model's layers ``start``
to ``stop - 1``, renumbered after the layers of the slices before it (a tensor's layer is
the number after ``layers.``, ``h.``, ``blocks.`` or ``layer.`` in its name). The tensors
outside the layers come, as in mergekit, from the first slice's model for the embeddings
(names with ``embed``, ``wte``, ``wpe``) and from the last slice's model for the others (final
norm, output head). The output's ``config.json`` is the base's with ``num_hidden_layers`` set
to the new depth (and ``torch_dtype`` to the output dtype, when there is one).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import torch

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace.io import LazyStateDict
from weightspace.merge._whole import LAYER_RE

if TYPE_CHECKING:
    from weightspace.merge._config import MergeConfig

__all__ = ["PassthroughView", "stacked_layers"]

_PRE = re.compile(r"embed|wte|wpe")


def _layers(sd: LazyStateDict) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for name in sd:
        m = LAYER_RE.search(name)
        if m:
            out.setdefault(int(m.group(1)), []).append(name)
    return out


def _renamed(name: str, layer: int) -> str:
    m = LAYER_RE.search(name)
    assert m is not None
    return name[: m.start(1)] + str(layer) + name[m.end(1) :]


def stacked_layers(
    config: MergeConfig, models: list[LazyStateDict]
) -> tuple[dict[str, tuple[LazyStateDict, str]], int]:
    """The output's tensors (``name -> (model, its name there)``) and number of layers.

    Args:
        config: A ``passthrough`` config.
        models: Its models, opened.

    Returns:
        The tensors in output order (embeddings, layers, the rest) and the layer count.

    Raises:
        WeightspaceValueError: if a slice asks for layers a model lacks.
        ShapeMismatchError: if a stacked layer's tensors differ from the first layer's.
    """
    slices = config._resolved.slices
    layer_maps = [_layers(sd) for sd in models]
    first, last = models[slices[0][0]], models[slices[-1][0]]
    pre = [n for n in first if not LAYER_RE.search(n) and _PRE.search(n)]
    post = [n for n in last if not LAYER_RE.search(n) and not _PRE.search(n)]
    out: dict[str, tuple[LazyStateDict, str]] = {n: (first, n) for n in pre}
    reference: dict[str, tuple[torch.Size, torch.dtype]] | None = None
    depth = 0
    for i, (m, start, stop) in enumerate(slices):
        have = layer_maps[m]
        missing = [j for j in range(start, stop) if j not in have]
        if missing:
            raise WeightspaceValueError(
                f"`parameters.slices[{i}]` takes layers {start} to {stop - 1} of "
                f"`{config.models[m].source_key}`, which has layers "
                f"{min(have, default=0)} to {max(have, default=-1)} only; fix the layer range"
            )
        sd = models[m]
        for j in range(start, stop):
            shapes = {_renamed(n, 0): (sd.shape(n), sd.dtype(n)) for n in have[j]}
            if reference is None:
                reference = shapes
            elif shapes != reference:
                raise ShapeMismatchError(
                    f"layer {j} of `{config.models[m].source_key}` does not have the tensors, "
                    "shapes and dtypes of the first stacked layer; stack layers of one "
                    "architecture"
                )
            for n in have[j]:
                out[_renamed(n, depth)] = (sd, n)
            depth += 1
    out.update({n: (last, n) for n in post})
    return out, depth


class PassthroughView(Mapping[str, torch.Tensor]):
    """The stacked model: each tensor read from its source when looked up.

    Args:
        sources: ``name -> (model, its name there)``.
        out_dtype: Dtype of the floating output tensors (``None``: as read).
    """

    def __init__(
        self, sources: Mapping[str, tuple[LazyStateDict, str]], out_dtype: torch.dtype | None
    ) -> None:
        self._sources = dict(sources)
        self._out = out_dtype

    def __getitem__(self, name: str) -> torch.Tensor:
        sd, src = self._sources[name]
        return sd[src].to(self.dtype(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    def shape(self, name: str) -> torch.Size:
        """Shape of output tensor ``name``."""
        sd, src = self._sources[name]
        return sd.shape(src)

    def dtype(self, name: str) -> torch.dtype:
        """Dtype of output tensor ``name``."""
        sd, src = self._sources[name]
        dtype = sd.dtype(src)
        return self._out if self._out is not None and dtype.is_floating_point else dtype
