"""Role-based matching across model families: which tensor holds the query projection, and how.

Each supported family of :mod:`transformers` models lists where its tensors keep each *role*
(token embedding, attention q/k/v/o, MLP gate/up/down, norms, LM head) and in which layout.
The canonical layout is ``nn.Linear``'s ``[out, in]``: GPT-2's ``Conv1D`` weights are stored
transposed (``[in, out]``) and its ``c_attn`` holds q, k and v side by side along the output
axis, so its query is ``c_attn.weight[:, 0:d].T``. Two tensors that hold the same role are
paired through a :class:`~weightspace.select.TensorView` that undoes both layouts.

The table of every family's roles is in the guide page
``docs/guide/common_across_architectures.rst`` (keep the two in step). A role pairs a
``weight`` with a ``weight`` and a ``bias`` with a ``bias``; where one family has a bias and
the other none (GPT-2 and Llama), the bias is left out. BERT's norms follow their sublayer
(post-norm) where GPT-2's and Llama's precede it; the table pairs the norm of each sublayer
all the same.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace._task_vector._views import Slice, TensorView
from weightspace.select._blocks import Layers, align_depths
from weightspace.select._index import ModelIndex

__all__ = ["FAMILIES", "Family", "match_roles"]


@dataclass(frozen=True)
class _Entry:
    """Where one role lives: a tensor name pattern, and the layout of the tensor."""

    role: str  # "attn.q.weight"
    pattern: str  # regex, full match on the tensor name (relative to the block for blocks)
    conv1d: bool = False  # a 2-D weight stored [in, out]
    part: int = 0  # which of `parts` equal pieces along the output axis
    parts: int = 1

    def locate(self, shape: tuple[int, ...]) -> tuple[Slice | None, bool] | str:
        """Return ``(slice, transpose)`` of the role in a tensor of ``shape``, or a problem."""
        is_weight = self.role.endswith(".weight") and len(shape) == 2
        transpose = self.conv1d and is_weight
        if self.parts == 1:
            return None, transpose
        axis = 1 if transpose else 0
        if shape[axis] % self.parts:
            return f"axis {axis} of {shape} does not split into {self.parts} equal parts"
        size = shape[axis] // self.parts
        return (axis, self.part * size, (self.part + 1) * size), transpose


def _linear(role: str, module: str, *, conv1d: bool = False, parts: int = 1) -> list[_Entry]:
    names = role.split("|")
    return [
        _Entry(f"{name}.{kind}", rf"{module}\.{kind}", conv1d, i, parts)
        for i, name in enumerate(names)
        for kind in ("weight", "bias")
    ]


def _tensor(role: str, pattern: str) -> list[_Entry]:
    return [_Entry(role, pattern)]


@dataclass(frozen=True)
class Family:
    """A family of architectures: where its blocks are and which tensor holds each role.

    Attributes:
        name: Short name (``"gpt2"``).
        label: The models it covers, for messages.
        block: Regex (full match) of the module that holds the repeated blocks.
        marker: A tensor name, relative to a block, that identifies the family.
        block_roles: Roles inside each block.
        global_roles: Roles outside the blocks (patterns on full tensor names).
    """

    name: str
    label: str
    block: str
    marker: str
    block_roles: tuple[_Entry, ...]
    global_roles: tuple[_Entry, ...]


_BERT_TOP = r"(?:bert\.|roberta\.)?"
_BERT = Family(
    "bert",
    "BERT / RoBERTa",
    r"(?:bert\.|roberta\.)?encoder\.layer",
    "attention.self.query.weight",
    (
        *_linear("attn.q", r"attention\.self\.query"),
        *_linear("attn.k", r"attention\.self\.key"),
        *_linear("attn.v", r"attention\.self\.value"),
        *_linear("attn.o", r"attention\.output\.dense"),
        *_linear("norm.attn", r"attention\.output\.LayerNorm"),
        *_linear("mlp.up", r"intermediate\.dense"),
        *_linear("mlp.down", r"output\.dense"),
        *_linear("norm.mlp", r"output\.LayerNorm"),
    ),
    (
        *_tensor(
            "embed.tokens.weight", r"(?:bert\.|roberta\.)?embeddings\.word_embeddings\.weight"
        ),
        *_tensor(
            "embed.positions.weight",
            r"(?:bert\.|roberta\.)?embeddings\.position_embeddings\.weight",
        ),
        *_tensor(
            "embed.token_types.weight",
            r"(?:bert\.|roberta\.)?embeddings\.token_type_embeddings\.weight",
        ),
        *_linear("norm.embed", r"(?:bert\.|roberta\.)?embeddings\.LayerNorm"),
        *_linear("pooler", r"(?:bert\.|roberta\.)?pooler\.dense"),
    ),
)

_GPT2 = Family(
    "gpt2",
    "GPT-2",
    r"(?:transformer\.)?h",
    "attn.c_attn.weight",
    (
        *_linear("attn.q|attn.k|attn.v", r"attn\.c_attn", conv1d=True, parts=3),
        *_linear("attn.o", r"attn\.c_proj", conv1d=True),
        *_linear("mlp.up", r"mlp\.c_fc", conv1d=True),
        *_linear("mlp.down", r"mlp\.c_proj", conv1d=True),
        *_linear("norm.attn", r"ln_1"),
        *_linear("norm.mlp", r"ln_2"),
    ),
    (
        *_tensor("embed.tokens.weight", r"(?:transformer\.)?wte\.weight"),
        *_tensor("embed.positions.weight", r"(?:transformer\.)?wpe\.weight"),
        *_linear("norm.final", r"(?:transformer\.)?ln_f"),
        *_tensor("lm_head.weight", r"lm_head\.weight"),
    ),
)

_LLAMA = Family(
    "llama",
    "Llama / Mistral / Qwen2",
    r"(?:model\.)?layers",
    "self_attn.q_proj.weight",
    (
        *_linear("attn.q", r"self_attn\.q_proj"),
        *_linear("attn.k", r"self_attn\.k_proj"),
        *_linear("attn.v", r"self_attn\.v_proj"),
        *_linear("attn.o", r"self_attn\.o_proj"),
        *_linear("mlp.gate", r"mlp\.gate_proj"),
        *_linear("mlp.up", r"mlp\.up_proj"),
        *_linear("mlp.down", r"mlp\.down_proj"),
        *_linear("norm.attn", r"input_layernorm"),
        *_linear("norm.mlp", r"post_attention_layernorm"),
    ),
    (
        *_tensor("embed.tokens.weight", r"(?:model\.)?embed_tokens\.weight"),
        *_linear("norm.final", r"(?:model\.)?norm"),
        *_tensor("lm_head.weight", r"lm_head\.weight"),
    ),
)

_VIT = Family(
    "vit",
    "ViT",
    r"(?:vit\.)?(?:encoder\.layer|layers)",
    "layernorm_before.weight",
    (
        *_linear("attn.q", r"attention\.(?:attention\.query|q_proj)"),
        *_linear("attn.k", r"attention\.(?:attention\.key|k_proj)"),
        *_linear("attn.v", r"attention\.(?:attention\.value|v_proj)"),
        *_linear("attn.o", r"attention\.(?:output\.dense|o_proj)"),
        *_linear("mlp.up", r"(?:intermediate\.dense|mlp\.fc1)"),
        *_linear("mlp.down", r"(?:output\.dense|mlp\.fc2)"),
        *_linear("norm.attn", r"layernorm_before"),
        *_linear("norm.mlp", r"layernorm_after"),
    ),
    (
        *_tensor("embed.cls", r"(?:vit\.)?embeddings\.cls_token"),
        *_tensor("embed.positions", r"(?:vit\.)?embeddings\.position_embeddings"),
        *_linear("embed.patches", r"(?:vit\.)?embeddings\.patch_embeddings\.projection"),
        *_linear("norm.final", r"(?:vit\.)?layernorm"),
        *_linear("pooler", r"(?:vit\.)?pooler\.dense"),
    ),
)

FAMILIES: tuple[Family, ...] = (_BERT, _GPT2, _LLAMA, _VIT)
"""The supported families, in the order they are tried."""


@dataclass(frozen=True)
class _Found:
    family: Family
    blocks: tuple[str, ...]  # block module names by index
    roles: tuple[dict[str, tuple[str, _Entry]], ...]  # per block: role -> (tensor, entry)
    outside: dict[str, tuple[str, _Entry]]


def _detect(index: ModelIndex, argument: str) -> _Found:
    tried: list[str] = []
    for family in FAMILIES:
        block_re = re.compile(rf"({family.block})\.(\d+)\.(.+)")
        blocks: dict[int, str] = {}
        for name in index.params:
            m = block_re.fullmatch(name)
            if m is not None:
                blocks.setdefault(int(m.group(2)), f"{m.group(1)}.{m.group(2)}")
        order = [blocks[i] for i in sorted(blocks)]
        if not order or not any(f"{b}.{family.marker}" in index.shapes for b in order):
            tried.append(f"{family.label} (blocks {family.block!r}, with {family.marker!r})")
            continue
        per_block = tuple(_roles_in(index, family.block_roles, b) for b in order)
        outside = _roles_in(index, family.global_roles, "", skip=tuple(order))
        return _Found(family, tuple(order), per_block, outside)
    raise WeightspaceValueError(
        f'`by="role"` knows no family of `{argument}`, whose tensors start '
        f"{list(index.params[:4])}; supported: {'; '.join(tried)}; pair tensors with "
        '`by="structure"` or `by="mapping"` instead'
    )


def _roles_in(
    index: ModelIndex, entries: Sequence[_Entry], block: str, skip: tuple[str, ...] = ()
) -> dict[str, tuple[str, _Entry]]:
    cut = len(block) + 1 if block else 0
    found: dict[str, tuple[str, _Entry]] = {}
    names = index.under(block) if block else list(index.params)
    for name in names:
        if any(name.startswith(b + ".") for b in skip):
            continue
        rel = name[cut:]
        for entry in entries:
            if entry.role not in found and re.fullmatch(entry.pattern, rel):
                found[entry.role] = (name, entry)
    return found


def _heads(model: nn.Module | None) -> int | None:
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    return heads if isinstance(heads, int) else None


@dataclass(frozen=True)
class RoleMatch:
    """What :func:`match_roles` found: pairs, their views and roles, and the block pairs."""

    pairs: list[tuple[str, str]]
    views: dict[tuple[str, str], TensorView]
    roles: dict[tuple[str, str], str]
    blocks: list[tuple[str, str]]
    origin: str


def match_roles(
    ia: ModelIndex,
    ib: ModelIndex,
    allowed: set[str],
    layers: Layers | None,
    roles: Sequence[str] | None,
) -> RoleMatch:
    """Pair the tensors of ``a`` and ``b`` that hold the same role (see the module notes).

    Raises:
        WeightspaceValueError: if a model's family is not supported, depths differ and
            ``layers`` is not given, or the numbers of attention heads differ.
        ShapeMismatchError: if a role has other shapes in ``a`` and ``b`` (the message names
            the role, both tensors and both shapes).
    """
    if roles is not None:
        known = {e.role for f in FAMILIES for e in (*f.block_roles, *f.global_roles)}
        known |= {r.rpartition(".")[0] for r in known}
        unknown = [r for r in roles if r not in known]
        if unknown:
            raise WeightspaceValueError(
                f"`roles` names unknown roles {unknown}; known roles: {sorted(known)}"
            )
    fa, fb = _detect(ia, "a"), _detect(ib, "b")
    na, nb = len(fa.blocks), len(fb.blocks)
    if layers is None and na != nb:
        raise WeightspaceValueError(
            f"`a` has {na} blocks ({fa.blocks[0]} ...) and `b` has {nb} ({fb.blocks[0]} ...); "
            'say how to pair them with `layers="prefix"`, "suffix", "spread" or [(i, j), ...]'
        )
    index_pairs = align_depths(na, nb, "prefix" if layers is None else layers)
    heads_a, heads_b = _heads(ia.model), _heads(ib.model)
    attention = any(_wanted(f"attn.{x}.weight", roles) for x in "qkv")
    if attention and heads_a is not None and heads_b is not None and heads_a != heads_b:
        raise WeightspaceValueError(
            f"roles 'attn.q', 'attn.k', 'attn.v' cannot be paired: `a` has {heads_a} attention "
            f"heads and `b` has {heads_b}; leave them out with `roles=`"
        )
    groups = [(fa.outside, fb.outside)]
    groups += [(fa.roles[i], fb.roles[j]) for i, j in index_pairs]
    pairs: list[tuple[str, str]] = []
    views: dict[tuple[str, str], TensorView] = {}
    role_of: dict[tuple[str, str], str] = {}
    problems: dict[str, list[str]] = {}
    for roles_a, roles_b in groups:
        for role, (name_a, entry_a) in roles_a.items():
            if role not in roles_b or name_a not in allowed or not _wanted(role, roles):
                continue
            name_b, entry_b = roles_b[role]
            shape_a, shape_b = tuple(ia.shapes[name_a]), tuple(ib.shapes[name_b])
            where_a, where_b = entry_a.locate(shape_a), entry_b.locate(shape_b)
            if isinstance(where_a, str) or isinstance(where_b, str):
                problem = where_a if isinstance(where_a, str) else where_b
                problems.setdefault(role, []).append(f"{problem}")
                continue
            try:
                view = TensorView(
                    shape_a, shape_b, where_a[0], where_b[0], where_a[1] != where_b[1]
                )
            except ShapeMismatchError:
                problems.setdefault(role, []).append(
                    f"`a` gives {_canonical(shape_a, *where_a)} from {name_a!r} {shape_a}, "
                    f"`b` needs {_canonical(shape_b, *where_b)} for {name_b!r} {shape_b}"
                )
                continue
            pairs.append((name_a, name_b))
            role_of[(name_a, name_b)] = role
            if not view.is_identity:
                views[(name_a, name_b)] = view
    if problems:
        shown = [
            f"role {role!r}: {found[0]}" + (f" ({len(found)} times)" if len(found) > 1 else "")
            for role, found in problems.items()
        ]
        raise ShapeMismatchError(
            f"{len(problems)} roles do not line up between `a` ({fa.family.label}) and `b` "
            f"({fb.family.label}): " + "; ".join(shown[:6]) + "; leave them out with `roles=` "
            "(the roles to keep, e.g. roles=['attn.q', 'attn.o', 'mlp.up', 'mlp.down'])"
        )
    order = {n: i for i, n in enumerate(ia.params)}
    pairs.sort(key=lambda p: order[p[0]])
    origin = f"by='role', {fa.family.name} -> {fb.family.name}"
    if layers is not None:
        origin += f", layers={layers!r}"
    blocks = [(fa.blocks[i], fb.blocks[j]) for i, j in index_pairs]
    return RoleMatch(pairs, views, role_of, blocks, origin)


def _wanted(role: str, roles: Sequence[str] | None) -> bool:
    return roles is None or role in roles or role.rpartition(".")[0] in roles


def _canonical(shape: tuple[int, ...], part: Slice | None, transpose: bool) -> tuple[int, ...]:
    out = list(shape)
    if part is not None:
        out[part[0]] = part[2] - part[1]
    return tuple(reversed(out)) if transpose else tuple(out)
