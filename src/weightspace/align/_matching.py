"""Finding the permutation that aligns one network to another: weight and activation matching."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace.align._permutation import Permutation
from weightspace.align._spec import PermutationSpec, expand_index
from weightspace.align._trace import _eval_mode
from weightspace.io import StateDictLike, as_state_dict

__all__ = ["activation_matching", "batches", "weight_matching"]

logger = logging.getLogger(__name__)


def _check_pair(
    spec: PermutationSpec, reference: Mapping[str, Tensor], other: Mapping[str, Tensor]
) -> dict[str, int]:
    sizes = spec.check(reference, name="reference")
    sizes_other = spec.check(other, name="other")
    for key in spec.axes:
        a, b = reference[key], other[key]
        if a.shape != b.shape:
            raise ShapeMismatchError(
                f"`reference[{key!r}]` has shape {list(a.shape)} but `other[{key!r}]` has "
                f"{list(b.shape)}; align two networks of the same architecture"
            )
    assert sizes == sizes_other
    return sizes


def weight_matching(
    spec: PermutationSpec,
    reference: StateDictLike,
    other: StateDictLike,
    *,
    max_iter: int = 100,
    seed: int = 0,
    init: Permutation | None = None,
) -> Permutation:
    r"""Find the permutation of ``other``'s units that brings its weights closest to ``reference``.

    The weight matching of Git Re-Basin (Ainsworth, Hayase & Srinivasa, ICLR 2023,
    `arXiv:2209.04836 <https://arxiv.org/abs/2209.04836>`_): maximise
    :math:`\sum_\ell \langle W^A_\ell, P_\ell W^B_\ell P_{\ell-1}^\top \rangle` over the
    permutations of all groups by coordinate descent. Each step picks one group and solves its
    linear assignment problem exactly (:func:`scipy.optimize.linear_sum_assignment`) with all
    other groups held at their current permutation; the groups are visited in a random order
    per sweep (seeded), and the search stops after a sweep in which no group improves.

    The first sweep differs in one detail from starting at the identity: a tensor that a group
    shares with groups not visited yet (the next layer's weight, whose other axis is still
    unaligned) is left out of that group's cost, instead of being scored against an arbitrary
    order. This start makes the search recover exactly permuted copies reliably even in narrow
    networks, where scoring against the identity can trap it in a local optimum. Pass ``init``
    to start from a given permutation instead (then every sweep uses every tensor).

    Args:
        spec: Which axes each group moves.
        reference: The network to align to (module, state dict or checkpoint path); unchanged.
        other: The network to permute (module, state dict or checkpoint path); unchanged.
        max_iter: Most sweeps over all groups.
        seed: Seed of the visiting order.
        init: Starting permutation (default: the sequential start described above).

    Returns:
        The :class:`Permutation` ``p`` such that ``p.apply(spec, other)`` is aligned to
        ``reference``. For ``other`` an exactly permuted copy of ``reference`` it is the
        inverse of that permutation, and the aligned state dict equals ``reference`` bit for
        bit.

    Raises:
        ShapeMismatchError: if the state dicts do not fit the spec or each other.
        WeightspaceValueError: if ``max_iter`` is not positive.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from weightspace import align
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> spec = align.permutation_spec(net, torch.zeros(2, 4))
        >>> p = align.Permutation.random(spec, seed=3)
        >>> shuffled = p.apply(spec, net.state_dict())
        >>> found = align.weight_matching(spec, net, shuffled)
        >>> found == p.inverse()
        True
    """
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise WeightspaceValueError(f"`max_iter` must be a positive integer, got {max_iter!r}")
    ref = as_state_dict(reference, argument="reference")
    oth = as_state_dict(other, argument="other")
    sizes = _check_pair(spec, ref, oth)
    perms = {g: torch.arange(n) for g, n in sizes.items()}
    if init is not None:
        for g, p in init.items():
            if g in perms:
                if len(p) != sizes[g]:
                    raise ShapeMismatchError(
                        f"`init[{g!r}]` has {len(p)} units but the state dicts have {sizes[g]}"
                    )
                perms[g] = p.clone()
    groups = list(sizes)
    # float64 copies, once
    ref64 = {k: ref[k].detach().to("cpu", torch.float64) for k in spec.axes}
    oth64 = {k: oth[k].detach().to("cpu", torch.float64) for k in spec.axes}
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(seed)
    solved: set[str] | None = set() if init is None else None  # first sweep: see the docstring
    for sweep in range(max_iter):
        progress = False
        for gi in rng.permutation(len(groups)):
            g = groups[int(gi)]
            n = sizes[g]
            refs = spec.group_axes[g]
            if solved is not None:
                known = [r for r in refs if _others_known(spec, r.key, r.axis, solved)]
                refs = tuple(known) or refs
                solved.add(g)
            cost = torch.zeros(n, n, dtype=torch.float64)
            for r in refs:
                wa, wb = ref64[r.key], oth64[r.key]
                for dim, axis in enumerate(spec.axes[r.key]):
                    if axis is None or dim == r.axis:
                        continue
                    wb = wb.index_select(dim, expand_index(perms[axis.group], axis.repeat))
                wa = wa.movedim(r.axis, 0).reshape(n, -1)
                wb = wb.movedim(r.axis, 0).reshape(n, -1)
                cost += wa @ wb.T
            c = cost.numpy()
            _, cols = linear_sum_assignment(c, maximize=True)
            old = float(c[np.arange(n), perms[g].numpy()].sum())
            new = float(c[np.arange(n), cols].sum())
            if new > old + 1e-12 * max(1.0, abs(old)):
                perms[g] = torch.from_numpy(cols.astype(np.int64))
                progress = True
        if solved is not None:
            solved, progress = None, True  # always follow the start with a full sweep
        elif not progress:
            logger.debug("weight matching converged after %d sweeps", sweep + 1)
            break
    return Permutation(perms)


def _others_known(spec: PermutationSpec, key: str, axis: int, solved: set[str]) -> bool:
    return all(a is None or a.group in solved for d, a in enumerate(spec.axes[key]) if d != axis)


# ---- activation matching --------------------------------------------------------------------


def batches(data: Any, name: str = "data") -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Yield ``(args, kwargs)`` model inputs from data in the contract of ``train.batches``.

    A tensor of inputs, or an ``(inputs, targets)`` pair, is one batch of all its examples; a
    ``Dataset`` is read in batches of 256; a ``DataLoader`` or another iterable of batches as
    it comes (:func:`weightspace.train.batches`). A batch that is a tensor is the input, a
    tuple or list gives its first element (as ``(x, y)`` pairs from a
    :class:`~torch.utils.data.DataLoader`), a dict is keyword inputs. For one release a list
    is still read as a list of batches, with a ``FutureWarning`` (in the contract a list is a
    dataset of samples).
    """
    from weightspace._deprecation import warn_deprecated
    from weightspace.train._batches import Source

    if isinstance(data, list):
        warn_deprecated(
            f"`{name}` as a list of batches",
            "iter(<list of batches>) or a DataLoader (a list is a dataset of samples)",
            since="0.1",
        )
        if not data:
            raise WeightspaceValueError(f"`{name}` holds no batches; pass at least one input batch")
        data = iter(data)
    if isinstance(data, (str, bytes)) or not (
        isinstance(data, (Tensor, Iterable)) or hasattr(data, "__getitem__")
    ):
        raise WeightspaceValueError(
            f"`{name}` must be a tensor, a Dataset, a DataLoader or an iterable of batches, got "
            f"{type(data).__name__}; pass an input tensor or a DataLoader"
        )
    src = Source(data, None, name)
    whole: list[Any] = []
    if src.tensors is not None:  # a tensor or a pair: one batch of every example, uncopied
        whole = [src.tensors[0] if len(src.tensors) == 1 else src.tensors]
    count = 0
    for batch in whole or src.iterate(256):
        count += 1
        if isinstance(batch, Tensor):
            yield (batch,), {}
        elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
            yield (batch[0],), {}
        elif isinstance(batch, Mapping):
            yield (), dict(batch)
        else:
            raise WeightspaceValueError(
                f"each batch of `{name}` must be a tensor, an (input, target) pair or a dict of "
                f"inputs, got {type(batch).__name__}"
            )
    if count == 0:
        raise WeightspaceValueError(f"`{name}` holds no batches; pass at least one input batch")


class _Moments:
    """Running sums for the cross-correlation of two sets of ``n`` features."""

    def __init__(self, n: int) -> None:
        self.count = 0
        self.sa = torch.zeros(n, dtype=torch.float64)
        self.sb = torch.zeros(n, dtype=torch.float64)
        self.saa = torch.zeros(n, dtype=torch.float64)
        self.sbb = torch.zeros(n, dtype=torch.float64)
        self.sab = torch.zeros(n, n, dtype=torch.float64)

    def add(self, a: Tensor, b: Tensor) -> None:
        a, b = a.to(torch.float64), b.to(torch.float64)
        self.count += a.shape[0]
        self.sa += a.sum(0)
        self.sb += b.sum(0)
        self.saa += (a * a).sum(0)
        self.sbb += (b * b).sum(0)
        self.sab += a.T @ b

    def correlation(self) -> Tensor:
        n = max(self.count, 1)
        ma, mb = self.sa / n, self.sb / n
        cov = self.sab / n - ma[:, None] * mb[None, :]
        va = (self.saa / n - ma * ma).clamp_min(0)
        vb = (self.sbb / n - mb * mb).clamp_min(0)
        return cov / (va.sqrt()[:, None] * vb.sqrt()[None, :] + 1e-12)


def _features(output: Any, dim: int, units: int, where: str) -> Tensor:
    t = next((o for o in _flat_tensors(output)), None)
    if t is None:
        raise WeightspaceValueError(f"module {where!r} returned no tensor to match units on")
    t = t.detach()
    if t.ndim == 0 or not -t.ndim <= dim < t.ndim:
        raise ShapeMismatchError(
            f"module {where!r} returned a tensor of shape {list(t.shape)}, which has no axis "
            f"{dim}; fix `producers` in the spec"
        )
    size = int(t.shape[dim])
    if size % units:
        raise ShapeMismatchError(
            f"axis {dim} of the output of {where!r} has {size} entries, not a multiple of its "
            f"group's {units} units; fix `producers` in the spec"
        )
    t = t.movedim(dim, -1)
    repeat = size // units
    t = t.reshape(*t.shape[:-1], units, repeat).movedim(-1, 0)
    return t.reshape(-1, units)


def _flat_tensors(obj: Any) -> Iterator[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _flat_tensors(o)
    elif isinstance(obj, Mapping):
        for o in obj.values():
            yield from _flat_tensors(o)


def activation_matching(
    reference: nn.Module,
    other: nn.Module,
    data: Any,
    spec: PermutationSpec,
    *,
    max_batches: int | None = None,
) -> Permutation:
    """Match the units of two networks by the correlation of their activations on data.

    The activation matching of Git Re-Basin (Ainsworth, Hayase & Srinivasa, ICLR 2023,
    `arXiv:2209.04836 <https://arxiv.org/abs/2209.04836>`_): for every group, run both networks
    on the same inputs, record the outputs of the modules that produce the group (forward
    hooks at :attr:`PermutationSpec.producers`: the linear layer or convolution that creates a
    hidden axis, every producer of a residual stream), compute the Pearson correlation of each
    unit of ``reference`` with each unit of ``other``, and solve one linear assignment problem
    per group (maximal total correlation). A group with several producers sums their
    correlation matrices. Groups are independent, so no iteration is needed.

    Both networks run in eval mode under :func:`torch.no_grad`; their modes are restored, and
    hooks removed, afterwards.

    Args:
        reference: The network to align to.
        other: The network whose units are permuted.
        data: Inputs in the contract of :func:`weightspace.train.batches`: an input tensor
            or an ``(inputs, targets)`` pair (one batch), a ``Dataset`` (batches of 256), or a
            :class:`~torch.utils.data.DataLoader` or other iterable of batches (tensors,
            ``(input, target)`` pairs or dicts of keyword inputs).
        spec: The spec from :func:`permutation_spec` (or a hand-written one with
            ``producers``).
        max_batches: Use at most this many batches of ``data``.

    Returns:
        The :class:`Permutation` ``p`` such that ``p.apply(spec, other.state_dict())`` is
        aligned to ``reference``.

    Raises:
        WeightspaceValueError: if a group has no producing module, a module name is unknown or
            ``data`` holds no batch.
        ShapeMismatchError: if the networks do not fit the spec or each other.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from weightspace import align
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> spec = align.permutation_spec(net, torch.zeros(2, 4))
        >>> p = align.Permutation.random(spec, seed=3)
        >>> found = align.activation_matching(net, align.permute(net, spec, p), torch.randn(64, 4),
        ...                                   spec)
        >>> found == p.inverse()
        True
    """
    for obj, name in ((reference, "reference"), (other, "other")):
        if not isinstance(obj, nn.Module):
            raise WeightspaceValueError(
                f"`{name}` must be a torch.nn.Module (activations need a forward pass), got "
                f"{type(obj).__name__}; load the state dict into a module first"
            )
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
    ):
        raise WeightspaceValueError(
            f"`max_batches` must be a positive integer or None, got {max_batches!r}"
        )
    sizes = _check_pair(spec, reference.state_dict(), other.state_dict())
    missing = [g for g in sizes if not spec.producers.get(g)]
    if missing:
        raise WeightspaceValueError(
            f"groups {missing} have no producing module to record activations at; derive the "
            "spec with `align.permutation_spec(model, example_input)` or give "
            "`producers={group: [(module name, feature dim)]}` in the hand-written spec"
        )
    modules_ref, modules_oth = dict(reference.named_modules()), dict(other.named_modules())
    sites = sorted({s for g in sizes for s in spec.producers[g]})
    for module, _ in sites:
        for table, name in ((modules_ref, "reference"), (modules_oth, "other")):
            if module not in table:
                raise WeightspaceValueError(
                    f"the spec's producer {module!r} is not a submodule of `{name}`; names "
                    f"include {[n for n in table if n][:10]}"
                )
    moments = {(g, s): _Moments(sizes[g]) for g in sizes for s in spec.producers[g]}

    def hook(store: dict[str, list[Any]], module: str) -> Any:
        def fn(_m: nn.Module, _args: Any, output: Any) -> None:
            store.setdefault(module, []).append(output)

        return fn

    handles = []
    store_ref: dict[str, list[Any]] = {}
    store_oth: dict[str, list[Any]] = {}
    modules = sorted({m for m, _ in sites})
    try:
        for m in modules:
            handles.append(modules_ref[m].register_forward_hook(hook(store_ref, m)))
            handles.append(modules_oth[m].register_forward_hook(hook(store_oth, m)))
        with torch.no_grad(), _eval_mode(reference, other):
            for i, (args, kwargs) in enumerate(batches(data)):
                if max_batches is not None and i >= max_batches:
                    break
                reference(*args, **kwargs)
                other(*args, **kwargs)
                for (g, (m, dim)), mom in moments.items():
                    outs_a, outs_b = store_ref.get(m, []), store_oth.get(m, [])
                    if len(outs_a) != len(outs_b):
                        raise WeightspaceValueError(
                            f"module {m!r} ran {len(outs_a)} times in `reference` but "
                            f"{len(outs_b)} times in `other`; the networks must be the same "
                            "architecture"
                        )
                    for oa, ob in zip(outs_a, outs_b, strict=True):
                        mom.add(_features(oa, dim, sizes[g], m), _features(ob, dim, sizes[g], m))
                store_ref.clear()
                store_oth.clear()
    finally:
        for h in handles:
            h.remove()
    from scipy.optimize import linear_sum_assignment

    perms: dict[str, Tensor] = {}
    for g, n in sizes.items():
        corr = torch.zeros(n, n, dtype=torch.float64)
        for s in spec.producers[g]:
            corr += moments[(g, s)].correlation()
        _, cols = linear_sum_assignment(corr.numpy(), maximize=True)
        perms[g] = torch.from_numpy(cols.astype(np.int64))
    return Permutation(perms)
