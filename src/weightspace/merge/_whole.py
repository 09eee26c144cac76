"""Merge methods computed on whole tensors: SLERP, Model Stock, Breadcrumbs and DELLA.

These methods need a statistic of the whole tensor before any entry of the output can be
computed (SLERP's angle, Model Stock's mean cosine, the magnitude ranks of Breadcrumbs and
DELLA), and are computed here one tensor at a time, from the full tensors of the base and the
models, in float32 (float64 for float64 base tensors), with one torch thread (so that sums
give the same bits on every machine). They do not take the chunked engine of
:func:`weightspace.merge.run_merge`: memory is that of a few float32 copies of the largest
tensor per model, as on the lazy path of the other methods.

Their semantics are mergekit 0.1's, so that a mergekit config gives the same tensors:

* ``slerp``: spherical interpolation between the base (``t = 0``) and one model (``t = 1``)
  of each tensor as one flat vector; when the normalised vectors are nearly collinear
  (``|cos| > 0.9995``) it falls back to linear interpolation. ``t`` may vary by tensor:
  a list is a *gradient* over the layers (layer ``i`` of ``L`` sits at ``i / (L - 1)`` of the
  list, interpolated linearly; tensors outside the layers sit at 0), and a list of
  ``{filter: TEXT, value: ...}`` entries gives the value of the first entry whose ``filter``
  is a substring of the tensor name (an entry without ``filter`` matches everything).
* ``model_stock``: ``t = N cos / (1 + (N - 1) cos)`` with ``cos`` the mean pairwise cosine of
  the N task vectors (per tensor, or per row with ``filter_wise``); the output is
  ``t * mean(models) + (1 - t) * base`` (the base where the denominator vanishes).
* ``breadcrumbs``/``breadcrumbs_ties``: each task vector keeps ``int(density * n)`` entries
  after dropping the ``int(gamma * n)`` largest ones (and as many of the smallest as needed),
  ranked by magnitude (ties in index order).
* ``della``/``della_linear``: each entry of a row is kept with a probability that grows
  linearly with its magnitude rank in the row, from ``density - epsilon`` to ``density +
  epsilon``; drawn from weightspace's per-(seed, task, tensor) generators, so the masks differ
  from mergekit's (which uses torch's global generator) while following the same law.
* With ``rescale``, a sparsified task vector is multiplied by the ratio of its L1 norms before
  and after (mergekit's rescaling), so its L1 norm is kept. The weighted task vectors are then
  summed, with the TIES sign election for ``breadcrumbs_ties`` and ``della`` (a coordinate
  keeps the values whose sign is that of the weighted sum, ``+`` for a zero sum); with
  ``normalize`` the sum is divided by the sum of the (agreeing) weights. Finally the product
  by ``scale`` (mergekit's ``lambda``) is added to the base.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from weightspace._errors import WeightspaceValueError
from weightspace.merge import _core
from weightspace.merge._seeding import derived_generator

__all__ = [
    "LAYER_RE",
    "WholeMerge",
    "check_setting",
    "della_keep",
    "gta_combine",
    "layer_positions",
    "model_stock",
    "outlier_keep",
    "resolve_setting",
    "slerp",
]

#: A layer's index in a tensor name: ``model.layers.3.mlp...``, ``transformer.h.3...``.
LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


# -- per-tensor settings (mergekit's gradients and filters) ----------------------------------


def check_setting(value: object, key: str) -> Any:
    """Check a setting that may vary by tensor: a number, a gradient list, or filters.

    Args:
        value: A number; a non-empty list of numbers (a gradient); or a list of mappings
            ``{filter: TEXT, value: NUMBER_OR_GRADIENT}`` (``filter`` optional).
        key: The config key, for messages.

    Returns:
        The value, with mappings turned into plain dicts and numbers into floats.

    Raises:
        WeightspaceValueError: on anything else.
    """

    def number(v: object, where: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise WeightspaceValueError(f"`{where}` must be a finite number, got {v!r}")
        return float(v)

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return number(value, key)
    if isinstance(value, list) and value and all(not isinstance(v, Mapping) for v in value):
        return [number(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        out = []
        for i, entry in enumerate(value):
            unknown = sorted(set(entry) - {"filter", "value"})
            if unknown or "value" not in entry:
                raise WeightspaceValueError(
                    f"`{key}[{i}]` must be a mapping with `value` and an optional `filter`, "
                    f"got {dict(entry)!r}"
                )
            flt = entry.get("filter")
            if flt is not None and not isinstance(flt, str):
                raise WeightspaceValueError(
                    f"`{key}[{i}].filter` must be a string (matched as a substring of the "
                    f"tensor names), got {flt!r}"
                )
            inner = entry["value"]
            if isinstance(inner, list) and any(isinstance(v, Mapping) for v in inner):
                raise WeightspaceValueError(f"`{key}[{i}].value` cannot hold filters itself")
            out.append({"filter": flt, "value": check_setting(inner, f"{key}[{i}].value")})
        return out
    raise WeightspaceValueError(
        f"`{key}` must be a number, a gradient (a list of numbers spread over the layers) or "
        f"a list of `{{filter: NAME_PART, value: ...}}` entries, got {value!r}"
    )


def resolve_setting(setting: Any, name: str, position: float) -> float | None:
    """The value of a checked setting for tensor ``name`` at layer position ``position``.

    Args:
        setting: What :func:`check_setting` returned.
        name: The tensor's name.
        position: Its place in ``[0, 1]`` along the layers (0 outside the layers).

    Returns:
        The value, or ``None`` when no filter matches.
    """
    if isinstance(setting, float):
        return setting
    if setting and isinstance(setting[0], dict):
        for entry in setting:
            flt = entry["filter"]
            if flt is None or flt == "*" or flt in name:
                return resolve_setting(entry["value"], name, position)
        return None
    values: list[float] = setting
    scaled = position * (len(values) - 1)
    i0 = int(scaled)
    i1 = min(len(values) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * values[i0] + frac * values[i1]


def layer_positions(names: Sequence[str]) -> dict[str, float]:
    """Each tensor's position along the layers: ``i / (L - 1)`` for layer ``i`` of ``L``.

    ``L`` is the number of layer indices among ``names`` (1 when there is one layer: it sits
    at 1, as in mergekit); tensors outside the layers sit at 0.
    """
    index = {n: int(m.group(1)) for n in names if (m := LAYER_RE.search(n))}
    layers = sorted(set(index.values()))
    rank = {layer: i for i, layer in enumerate(layers)}
    count = len(layers)
    out = {}
    for n in names:
        if n not in index:
            out[n] = 0.0
        elif count == 1:
            out[n] = 1.0
        else:
            out[n] = rank[index[n]] / (count - 1)
    return out


# -- kernels ---------------------------------------------------------------------------------


def slerp(
    t: float, v0: torch.Tensor, v1: torch.Tensor, dot_threshold: float = 0.9995, eps: float = 1e-8
) -> torch.Tensor:
    """Spherical interpolation of two tensors as flat vectors (linear when nearly collinear).

    Args:
        t: 0 gives ``v0``, 1 gives ``v1``.
        v0: The first tensor (float32 or float64).
        v1: The second, of the same shape and dtype.
        dot_threshold: Above this ``|cos|`` the interpolation is linear.
        eps: Norms below this count as 1.

    Returns:
        A tensor of ``v0``'s shape and dtype.
    """
    a, b = v0.reshape(-1), v1.reshape(-1)
    if a.numel() == 0:
        return v0.clone()
    acc = torch.float64
    norm_a = float(torch.linalg.vector_norm(a, dtype=acc))
    norm_b = float(torch.linalg.vector_norm(b, dtype=acc))
    norm_a = norm_a if norm_a > eps else 1.0
    norm_b = norm_b if norm_b > eps else 1.0
    dot = float(torch.dot(a.to(acc), b.to(acc))) / (norm_a * norm_b)
    dot = min(1.0, max(-1.0, dot))
    if abs(dot) > dot_threshold:
        ca, cb = 1.0 - t, t
    else:
        theta = math.acos(dot)
        s = math.sin(theta)
        ca, cb = math.sin((1 - t) * theta) / s, math.sin(t * theta) / s
    return (ca * v0 + cb * v1).to(v0.dtype)


def model_stock(
    base: torch.Tensor, models: Sequence[torch.Tensor], filter_wise: bool = False
) -> torch.Tensor:
    """Model Stock: the base moved towards the models' mean by their mean pairwise cosine.

    Args:
        base: The base tensor (float32 or float64).
        models: Two or more fine-tuned tensors of its shape and dtype.
        filter_wise: One ratio per row (first dimension) rather than per tensor.

    Returns:
        ``t * mean(models) + (1 - t) * base``, ``t = N cos / (1 + (N - 1) cos)``.
    """
    shape = base.shape
    if filter_wise:
        w0 = base.reshape(1, -1) if base.dim() <= 1 else base.reshape(base.shape[0], -1)
    else:
        w0 = base.reshape(1, -1)
    ws = [m.reshape(w0.shape) for m in models]
    acc = torch.float64
    offsets = [(w - w0).to(acc) for w in ws]
    cosines = []
    for i, a in enumerate(offsets):
        for b in offsets[i + 1 :]:
            norms = torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1)
            cosines.append(((a * b).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    n = len(ws)
    denominator = 1 + (n - 1) * cos
    singular = denominator.abs() < 1e-6
    t = torch.where(singular, 0.0, n * cos / torch.where(singular, 1.0, denominator))
    mean = _core.ordered_sum(ws, divide_by_count=True)
    out = t * mean.to(acc) + (1 - t) * w0.to(acc)
    return out.to(base.dtype).reshape(shape)


def outlier_keep(delta: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """Breadcrumbs' mask: ``int(density*n)`` entries, after the ``int(gamma*n)`` largest.

    Entries are ranked by magnitude, ties in index order.

    Args:
        delta: A task vector's tensor.
        density: Fraction kept.
        gamma: Fraction of the largest entries dropped.

    Returns:
        A boolean mask of ``delta``'s shape.
    """
    n = delta.numel()
    keep = int(density * n)
    top = int(gamma * n)
    bottom = max(0, n - keep - top)
    order = torch.sort(delta.abs().reshape(-1).float(), stable=True).indices
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[bottom : bottom + keep]] = True
    return mask.reshape(delta.shape)


def della_keep(
    delta: torch.Tensor, density: float, epsilon: float, generator: torch.Generator
) -> torch.Tensor:
    """DELLA's mask: keep probability rising with the magnitude rank within each row.

    Args:
        delta: A task vector's tensor (a vector is one row).
        density: The mean keep probability.
        epsilon: Half the spread of the probabilities: ``density +- epsilon``.
        generator: Where the draws come from.

    Returns:
        A boolean mask of ``delta``'s shape.
    """
    rows = delta.reshape(1, -1) if delta.dim() <= 1 else delta.reshape(delta.shape[0], -1)
    cols = rows.shape[1]
    order = torch.sort(rows.abs().float(), dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(cols).expand_as(order).contiguous())
    spread = ranks.to(torch.float64) / max(cols - 1, 1)
    probs = (density - epsilon) + spread * 2 * epsilon
    draws = torch.rand(rows.shape, generator=generator, dtype=torch.float64)
    return (draws < probs).reshape(delta.shape)


def _l1_rescaled(delta: torch.Tensor, mask: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    masked = torch.where(mask, delta, torch.zeros((), dtype=delta.dtype))
    before = float(delta.abs().sum(dtype=torch.float64))
    after = float(masked.abs().sum(dtype=torch.float64))
    if before < eps or after < eps:
        return masked
    return masked * (before / after)


def gta_combine(
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    *,
    consensus: bool,
    normalize: bool,
    scale: float,
) -> torch.Tensor:
    """Mergekit's generalized task arithmetic of sparsified task vectors.

    Args:
        deltas: The (sparsified) task vectors' tensors.
        weights: One weight per task.
        consensus: Keep, per coordinate, the weighted values whose sign is that of their sum
            (``+`` for a zero sum).
        normalize: Divide by the sum of the (agreeing) weights (a zero sum divides by 1).
        scale: The final factor (mergekit's ``lambda``).

    Returns:
        The merged delta.
    """
    weighted = [d * w for d, w in zip(deltas, weights, strict=True)]
    if consensus:
        total = _core.ordered_sum(weighted)
        majority = torch.where(total >= 0, 1.0, -1.0).to(total.dtype)
        masks = [torch.sign(wd) == majority for wd in weighted]
        mixed = _core.ordered_sum(weighted, masks=masks)
        divisor = sum(torch.where(m, float(w), 0.0) for m, w in zip(masks, weights, strict=True))
        assert isinstance(divisor, torch.Tensor)
        divisor = torch.where(divisor == 0, 1.0, divisor).to(mixed.dtype)
        if normalize:
            mixed = mixed / divisor
    else:
        mixed = _core.ordered_sum(weighted)
        total_w = sum(weights)
        if normalize and abs(total_w) >= 1e-8:
            mixed = mixed / total_w
    return mixed * scale if scale != 1.0 else mixed


# -- one output tensor -----------------------------------------------------------------------


class WholeMerge:
    """Computes the output tensors of a whole-tensor method from full input tensors.

    Args:
        resolved: The method (a :class:`~weightspace.merge._methods.ResolvedMethod`).
        base: ``name -> tensor`` of the base.
        models: ``name -> tensor`` of each model.
        names: The merged tensor names (their layer positions are computed from them).
    """

    def __init__(
        self,
        resolved: Any,
        base: Mapping[str, torch.Tensor],
        models: Sequence[Mapping[str, torch.Tensor]],
        names: Sequence[str],
    ) -> None:
        self.r = resolved
        self.base = base
        self.models = list(models)
        self.positions = layer_positions(names)

    def __call__(self, name: str) -> torch.Tensor:
        """The merged tensor ``name`` in float32 (float64 for a float64 base tensor).

        Computed with one torch thread, so that the reductions (norms, dot products, L1
        sums) give the same bits whatever the thread count (and a busy machine does not
        make every operation wait for a descheduled thread).
        """
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._compute(name)
        finally:
            torch.set_num_threads(threads)

    def _compute(self, name: str) -> torch.Tensor:
        r = self.r
        b_raw = self.base[name]
        acc = torch.float64 if b_raw.dtype == torch.float64 else torch.float32
        b = b_raw.to(acc)
        ms = [m[name].to(acc) for m in self.models]
        combine: str = r.combine
        if combine == "slerp":
            t = resolve_setting(r.t, name, self.positions.get(name, 0.0))
            if t is None:
                raise WeightspaceValueError(
                    f"no entry of `parameters.t` matches tensor {name!r}; add an entry "
                    "without `filter` as the default"
                )
            return slerp(t, b, ms[0])
        if combine == "model_stock":
            return model_stock(b, ms, r.filter_wise)
        deltas = [m - b for m in ms]
        sparse = []
        densities = r.densities or (1.0,) * len(deltas)
        for task, (d, density) in enumerate(zip(deltas, densities, strict=True)):
            if density >= 1.0:
                sparse.append(d)
                continue
            if r.sparsify == "outliers":
                mask = outlier_keep(d, density, r.gamma)
            else:
                mask = della_keep(d, density, r.epsilon, _generator(r.seed, name, task))
            if r.rescale:
                sparse.append(_l1_rescaled(d, mask))
            else:
                sparse.append(torch.where(mask, d, torch.zeros((), dtype=d.dtype)))
        weights = r.weights or (1.0,) * len(deltas)
        merged = gta_combine(
            sparse,
            weights,
            consensus=combine == "gta_ties",
            normalize=r.normalize,
            scale=r.scale,
        )
        return b + merged


def _generator(seed: int | tuple[int, ...], name: str, task: int) -> torch.Generator:
    if isinstance(seed, int):
        return derived_generator(seed, name, task)
    return derived_generator(seed[task], name, None)


#: Signature of :class:`WholeMerge` instances (``name -> output tensor``).
TensorFn = Callable[[str], torch.Tensor]
