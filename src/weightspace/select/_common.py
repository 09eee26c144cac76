"""Common parts of two different architectures: :func:`common`."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Literal

from weightspace._errors import WeightspaceValueError
from weightspace.io import StateDictLike
from weightspace.select._blocks import Layers, align_depths, shared_blocks
from weightspace.select._grammar import Targets, _describe, pattern
from weightspace.select._index import ModelIndex, build_index
from weightspace.select._roles import match_roles
from weightspace.select._selection import Selection

__all__ = ["common"]

_Signature = tuple[object, tuple[tuple[str, tuple[int, ...]], ...]]


def common(
    a: StateDictLike,
    b: StateDictLike,
    *,
    by: Literal["name_shape", "structure", "mapping", "role"] = "name_shape",
    mapping: Mapping[str, str] | None = None,
    targets: Targets | None = None,
    layers: Layers | None = None,
    roles: Sequence[str] | None = None,
) -> Selection:
    """Find the tensors that two (possibly different) architectures share.

    Four ways to pair tensors of ``a`` with tensors of ``b``:

    * ``by="name_shape"``: the same name with the same shape in both.
    * ``by="structure"``: walk the submodules of ``a``, larger ones first and in registration
      order among equals; pair a submodule with the submodule of ``b`` of the same type whose
      tensors have the same relative names and shapes. The largest shared submodule wins (its
      children are not considered again). When ``a`` and ``b`` hold the same number of such
      candidates, they are paired in order; otherwise the match is ambiguous and an error lists
      them. With state dicts, "modules" are the dotted prefixes of the names and types are not
      compared.
      Example: ``cnn.head.0.weight`` <-> ``vit.classifier.0.weight``.
    * ``by="mapping"``: an explicit mapping of module-name prefixes of ``a`` to prefixes of
      ``b`` (``{"features.head": "encoder.head"}``); every tensor of ``a`` under a prefix must
      exist in ``b`` with the same shape.
    * ``by="role"``: for :mod:`transformers` models of the supported families (BERT /
      RoBERTa, GPT-2, Llama / Mistral / Qwen2, ViT; module or state dict), pair the tensors
      that hold the same role (token embedding, attention q/k/v/o, MLP gate/up/down, norms,
      LM head), block by block. Views (:class:`TensorView`) split fused tensors and undo
      transposed layouts: GPT-2's ``attn.c_attn.weight`` ``[d, 3d]`` feeds Llama's
      ``q_proj`` / ``k_proj`` / ``v_proj`` ``[d, d]`` as ``[:, 0:d].T``, ``[:, d:2d].T`` and
      ``[:, 2d:3d].T``. The table of roles is in :doc:`/guide/common_across_architectures`.

    Repeated blocks of different depths (``layers``, with ``by="structure"`` or
    ``by="role"``): the blocks of ``a`` (``encoder.layer.0``, ``encoder.layer.1``) are paired
    with blocks of ``b`` by ``"prefix"`` (block ``i`` with block ``i``), ``"suffix"`` (the
    last blocks of each), ``"spread"`` (the shallower model's blocks spread evenly over the
    deeper one, first on first and last on last, as in depth up-scaling), or explicit index
    pairs ``[(0, 0), (1, 3)]``. With ``by="structure"`` the blocks are the longest run of
    sibling modules ``<prefix>.<i>`` whose tensors have the same names and shapes in both
    models; the tensors outside them are paired by structure as above. ``str(selection)``
    prints the block-to-block table.

    Args:
        a: Model A: an ``nn.Module`` (its parameters), a mapping of tensors or a path.
        b: Model B, in any of the same forms.
        by: The matching mode.
        mapping: The prefix mapping, for ``by="mapping"`` only.
        targets: Optional restriction of ``a``'s tensors in :func:`parameters`' grammar (for
            ``"structure"``, only submodules whose tensors are all targeted are paired).
        layers: How repeated blocks of two depths are paired (``by="structure"`` or
            ``"role"``): ``"prefix"``, ``"suffix"``, ``"spread"`` or a list of ``(i, j)``
            block index pairs. ``by="role"`` pairs equal depths block by block without it.
        roles: For ``by="role"``, the roles to keep (``"attn.q"``, ``"mlp.up"``, or with the
            tensor kind: ``"attn.q.bias"``); all by default.

    Returns:
        A :class:`Selection` from names of ``a`` to names of ``b``, in ``a``'s order, with
        shapes.

    Raises:
        WeightspaceValueError: if nothing is shared (the message says what was tried, how many
            names were compared, and the closest candidates), if a structural match is
            ambiguous (listing the candidates), if ``mapping`` is malformed or points at
            tensors that ``b`` lacks or holds with another shape, if ``layers`` is malformed
            or the models hold no blocks in common, or if ``by="role"`` does not know a
            model's family or the numbers of attention heads differ.
        ShapeMismatchError: if, with ``by="role"``, a role has other shapes in ``a`` and ``b``
            (the message names the role and both shapes).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from weightspace import select
        >>> cnn = nn.ModuleDict({"conv": nn.Conv2d(3, 4, 3), "head": nn.Linear(4, 2)})
        >>> vit = nn.ModuleDict({"proj": nn.Linear(3, 4), "classifier": nn.Linear(4, 2)})
        >>> select.common(cnn, vit, by="structure").mapping["head.weight"]
        'classifier.weight'
    """
    if by not in ("name_shape", "structure", "mapping", "role"):
        raise WeightspaceValueError(
            f"`by` must be 'name_shape', 'structure', 'mapping' or 'role', got {by!r}"
        )
    if (mapping is not None) != (by == "mapping"):
        raise WeightspaceValueError(
            '`mapping` must be given exactly when `by="mapping"`, got '
            f"by={by!r} and mapping={'None' if mapping is None else 'a mapping'}"
        )
    if layers is not None and by not in ("structure", "role"):
        raise WeightspaceValueError(
            f'`layers` pairs repeated blocks with by="structure" or by="role", got by={by!r}; '
            'pass by="structure"'
        )
    if roles is not None and by != "role":
        raise WeightspaceValueError(f'`roles` only applies to by="role", got by={by!r}')
    if roles is not None and (isinstance(roles, str) or not all(isinstance(r, str) for r in roles)):
        raise WeightspaceValueError(
            f"`roles` must be a list of role names such as ['attn.q', 'mlp.up'], got {roles!r}"
        )
    ia = build_index(a, argument="a")
    ib = build_index(b, argument="b")
    allowed = set(ia.params) if targets is None else pattern(targets)._params(ia)
    blocks: list[tuple[str, str]] = []
    origin = f"by={by!r}"
    if by == "role":
        found = match_roles(ia, ib, allowed, layers, roles)
        if not found.pairs:
            raise _nothing_shared(ia, ib, by, targets, allowed)
        return Selection(
            found.pairs,
            shapes={n: ia.shapes[n] for n, _ in found.pairs},
            views=found.views,
            roles=found.roles,
            blocks=found.blocks,
            origin=found.origin,
        )
    if by == "name_shape":
        pairs = {
            n: n
            for n in ia.params
            if n in allowed and n in ib.shapes and ib.shapes[n] == ia.shapes[n]
        }
    elif by == "mapping":
        assert mapping is not None
        pairs = _by_mapping(ia, ib, mapping, allowed)
    elif layers is not None:
        pairs, blocks = _by_layers(ia, ib, allowed, layers)
        origin += f", layers={layers!r}"
    else:
        pairs = _by_structure(ia, ib, allowed)
    if not pairs:
        raise _nothing_shared(ia, ib, by, targets, allowed)
    return Selection(pairs, shapes={n: ia.shapes[n] for n in pairs}, blocks=blocks, origin=origin)


def _by_layers(
    ia: ModelIndex, ib: ModelIndex, allowed: set[str], layers: Layers
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    run_a, run_b = shared_blocks(ia, ib)
    index_pairs = align_depths(len(run_a.names), len(run_b.names), layers)
    in_a = {n for m in run_a.names for n in ia.under(m)}
    in_b = {n for m in run_b.names for n in ib.under(m)}
    pairs: dict[str, str] = {}
    for i, j in index_pairs:
        for na, nb in zip(ia.under(run_a.names[i]), ib.under(run_b.names[j]), strict=True):
            if na in allowed:
                pairs[na] = nb
    pairs.update(_by_structure(ia, ib, allowed - in_a, excluded_b=in_b))
    order = {n: k for k, n in enumerate(ia.params)}
    blocks = [(run_a.names[i], run_b.names[j]) for i, j in index_pairs]
    return dict(sorted(pairs.items(), key=lambda p: order[p[0]])), blocks


def _by_mapping(
    ia: ModelIndex, ib: ModelIndex, mapping: Mapping[str, str], allowed: set[str]
) -> dict[str, str]:
    if not isinstance(mapping, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise WeightspaceValueError(
            f"`mapping` must map module-name prefixes of `a` to prefixes of `b`, got {mapping!r}"
        )
    # longest prefixes first, so that {"x": ..., "x.y": ...} sends x.y.* through "x.y"
    prefixes = sorted(mapping, key=len, reverse=True)
    pairs: dict[str, str] = {}
    problems: list[str] = []
    unused = [p for p in prefixes if not any(_under(n, p) for n in ia.params)]
    if unused:
        nearest = {p: difflib.get_close_matches(p, ia.modules, n=3) for p in unused}
        raise WeightspaceValueError(
            f"prefixes of `mapping` hold no tensor of `a`: {unused}; closest module names of "
            f"`a`: {nearest}"
        )
    for name in ia.params:
        if name not in allowed:
            continue
        prefix = next((p for p in prefixes if _under(name, p)), None)
        if prefix is None:
            continue
        target = mapping[prefix] + name[len(prefix) :] if prefix else f"{mapping[prefix]}.{name}"
        target = target.lstrip(".")
        if target not in ib.shapes:
            close = difflib.get_close_matches(target, ib.params, n=3)
            problems.append(f"{name!r} -> {target!r} is not in `b` (closest: {close})")
        elif ib.shapes[target] != ia.shapes[name]:
            problems.append(
                f"{name!r} {tuple(ia.shapes[name])} -> {target!r} {tuple(ib.shapes[target])}: "
                "shapes differ"
            )
        else:
            pairs[name] = target
    if problems:
        raise WeightspaceValueError(
            f"`mapping` does not line `a` up with `b`: {len(problems)} problems: "
            + "; ".join(problems[:6])
        )
    return pairs


def _under(name: str, prefix: str) -> bool:
    return not prefix or name == prefix or name.startswith(prefix + ".")


def _signature(index: ModelIndex, module: str) -> _Signature | None:
    names = index.under(module)
    if not names:
        return None
    cut = len(module) + 1 if module else 0
    kind: object = type(index.types[module]) if module in index.types else None
    return kind, tuple((n[cut:], tuple(index.shapes[n])) for n in names)


def _by_structure(
    ia: ModelIndex, ib: ModelIndex, allowed: set[str], excluded_b: set[str] | None = None
) -> dict[str, str]:
    under_a = {m: ia.under(m) for m in ["", *ia.modules]}
    under_b = {m: ib.under(m) for m in ["", *ib.modules]}
    groups_b: dict[_Signature, list[str]] = {}
    for mb in under_b:
        sig = _signature(ib, mb)
        if sig is not None:
            groups_b.setdefault(sig, []).append(mb)
    groups_a: dict[_Signature, list[str]] = {}
    sig_a: dict[str, _Signature] = {}
    for ma in under_a:
        sig = _signature(ia, ma)
        if sig is not None:
            sig_a[ma] = sig
            groups_a.setdefault(sig, []).append(ma)
    paired_a: set[str] = set()
    paired_b: set[str] = set()
    pairs: dict[str, str] = {}

    def free_a(m: str) -> bool:
        return all(n in allowed and n not in paired_a for n in under_a[m])

    excluded = excluded_b or set()

    def free_b(m: str) -> bool:
        return not any(n in paired_b or n in excluded for n in under_b[m])

    order = {m: i for i, m in enumerate(under_a)}
    # larger submodules first (so the largest shared part wins), then registration order
    for m in sorted(under_a, key=lambda m: (-len(under_a[m]), order[m])):
        sig = sig_a.get(m)
        if sig is None or not free_a(m):
            continue
        cands = [mb for mb in groups_b.get(sig, []) if free_b(mb)]
        if not cands:
            continue
        peers = [ma for ma in groups_a[sig] if free_a(ma)]
        if len(peers) != len(cands):
            raise WeightspaceValueError(
                f"ambiguous structural match: {len(peers)} submodules of `a` "
                f"{[p or '<root>' for p in peers]} and {len(cands)} submodules of `b` "
                f"{[c or '<root>' for c in cands]} have the same type and tensor shapes; "
                "restrict `a` with `targets=`, pair repeated blocks of different depths with "
                '`layers="prefix"`, "suffix", "spread" or [(i, j), ...], or pair them with '
                '`by="mapping"`'
            )
        for ma, mb in zip(peers, cands, strict=False):
            for na, nb in zip(under_a[ma], under_b[mb], strict=True):
                pairs[na] = nb
                paired_a.add(na)
                paired_b.add(nb)
    return {n: pairs[n] for n in ia.params if n in pairs}


def _nothing_shared(
    ia: ModelIndex, ib: ModelIndex, by: str, targets: Targets | None, allowed: set[str]
) -> WeightspaceValueError:
    scored: list[tuple[float, str, str]] = []
    for n in [p for p in ia.params if p in allowed][:200]:
        matcher = difflib.SequenceMatcher(b=n)
        for c in ib.params:
            matcher.set_seq1(c)
            if matcher.real_quick_ratio() >= 0.6 and matcher.ratio() >= 0.6:
                scored.append((matcher.ratio(), n, c))
    scored.sort(key=lambda t: -t[0])
    close = [
        f"{n!r} ~ {c!r} {tuple(ia.shapes[n])} vs {tuple(ib.shapes[c])}" for _, n, c in scored[:6]
    ]
    same_name = [n for n in allowed if n in ib.shapes and ib.shapes[n] != ia.shapes[n]]
    msg = (
        f"`a` and `b` share no tensors with by={by!r}"
        + (f" and `targets`={_describe(targets)}" if targets is not None else "")
        + f": compared {len(allowed)} tensor names of `a` with {len(ib.params)} of `b`"
    )
    if same_name:
        msg += f"; {len(same_name)} names match but with different shapes: {sorted(same_name)[:5]}"
    if close:
        msg += "; closest candidates: " + "; ".join(close[:6])
    if by == "name_shape":
        msg += '; try by="structure" or by="mapping"'
    return WeightspaceValueError(msg)
