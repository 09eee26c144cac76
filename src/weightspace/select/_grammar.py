"""PEFT's ``target_modules`` grammar, presets, and the ``modules`` / ``parameters`` verbs.

The grammar (from PEFT's ``LoraConfig.target_modules`` / ``exclude_modules``):

* a **list or tuple** of names matches a name exactly or as a dotted suffix: ``"q_proj"``
  matches ``layers.0.self_attn.q_proj`` but not ``layers.0.self_attn.xq_proj``;
* a **string** is a regular expression that must match the whole name (``re.fullmatch``);
* a :class:`Selector` (the presets :data:`LINEAR`, :data:`NO_NORMS`, :data:`NO_EMBEDDINGS`,
  :func:`linear`, :func:`pattern`), combined with ``&``, ``|``, ``-`` and ``~``.

For :func:`parameters`, a tensor is selected when the target matches its full name (such as
``"layers.0.fc.weight"``) or the name of any module that contains it (``"layers.0.fc"``,
``"layers.0"``, ``"layers"``), so ``["head"]`` selects every tensor under ``head``.
"""

from __future__ import annotations

import abc
import difflib
import re
from collections.abc import Sequence

from torch import nn

from weightspace._errors import WeightspaceValueError
from weightspace.io import StateDictLike
from weightspace.select._index import ModelIndex, build_index
from weightspace.select._selection import Selection

__all__ = [
    "LINEAR",
    "NO_EMBEDDINGS",
    "NO_NORMS",
    "Selector",
    "Targets",
    "linear",
    "modules",
    "parameters",
    "pattern",
]


class Selector(abc.ABC):
    """A rule that selects tensors and modules of a model; combine with ``&``, ``|``, ``-``, ``~``.

    Selectors are what the presets are, and what :func:`pattern` turns the list / regex
    grammar into. They are evaluated against a model by :func:`parameters` and :func:`modules`.

    Example:
        >>> import torch
        >>> from weightspace import select
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
        >>> select.parameters(model, select.LINEAR | select.pattern(["1"])).names_a
        ('0.weight', '0.bias', '1.weight', '1.bias')
    """

    __slots__ = ()

    @abc.abstractmethod
    def _params(self, index: ModelIndex) -> set[str]:
        """The names of the tensors this rule selects in ``index``."""

    @abc.abstractmethod
    def _modules(self, index: ModelIndex) -> set[str]:
        """The names of the modules this rule selects in ``index``."""

    def __or__(self, other: object) -> Selector:
        if not isinstance(other, Selector):
            return NotImplemented
        return _Combined("|", self, other)

    def __and__(self, other: object) -> Selector:
        if not isinstance(other, Selector):
            return NotImplemented
        return _Combined("&", self, other)

    def __sub__(self, other: object) -> Selector:
        if not isinstance(other, Selector):
            return NotImplemented
        return _Combined("-", self, other)

    def __invert__(self) -> Selector:
        return _Not(self)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"selectors are immutable; cannot set {name!r}")


Targets = str | Sequence[str] | Selector
"""A target in PEFT's grammar: list of names / dotted suffixes, full-match regex, or Selector."""


def _set_attrs(obj: object, **values: object) -> None:
    for key, value in values.items():
        object.__setattr__(obj, key, value)


class _Names(Selector):
    __slots__ = ("names",)
    names: tuple[str, ...]

    def __init__(self, names: Sequence[str]) -> None:
        _set_attrs(self, names=tuple(names))

    def _hit(self, name: str) -> bool:
        return any(name == t or name.endswith("." + t) for t in self.names)

    def _params(self, index: ModelIndex) -> set[str]:
        return {
            p for p in index.params if self._hit(p) or any(self._hit(m) for m in index.ancestors(p))
        }

    def _modules(self, index: ModelIndex) -> set[str]:
        return {m for m in index.modules if self._hit(m)}

    def __repr__(self) -> str:
        return repr(list(self.names))


class _Regex(Selector):
    __slots__ = ("regex",)
    regex: re.Pattern[str]

    def __init__(self, regex: str) -> None:
        try:
            compiled = re.compile(regex)
        except re.error as exc:
            raise WeightspaceValueError(
                f"`targets` is a string, so it is a regular expression, but {regex!r} does not "
                f"compile: {exc}; pass a list of names to match names or suffixes"
            ) from None
        _set_attrs(self, regex=compiled)

    def _params(self, index: ModelIndex) -> set[str]:
        f = self.regex.fullmatch
        return {p for p in index.params if f(p) or any(f(m) for m in index.ancestors(p))}

    def _modules(self, index: ModelIndex) -> set[str]:
        return {m for m in index.modules if self.regex.fullmatch(m)}

    def __repr__(self) -> str:
        return repr(self.regex.pattern)


class _Combined(Selector):
    __slots__ = ("left", "op", "right")
    op: str
    left: Selector
    right: Selector

    def __init__(self, op: str, left: Selector, right: Selector) -> None:
        _set_attrs(self, op=op, left=left, right=right)

    def _combine(self, a: set[str], b: set[str]) -> set[str]:
        if self.op == "|":
            return a | b
        if self.op == "&":
            return a & b
        return a - b

    def _params(self, index: ModelIndex) -> set[str]:
        return self._combine(self.left._params(index), self.right._params(index))

    def _modules(self, index: ModelIndex) -> set[str]:
        return self._combine(self.left._modules(index), self.right._modules(index))

    def __repr__(self) -> str:
        return f"({self.left!r} {self.op} {self.right!r})"


class _Not(Selector):
    __slots__ = ("inner",)
    inner: Selector

    def __init__(self, inner: Selector) -> None:
        _set_attrs(self, inner=inner)

    def _params(self, index: ModelIndex) -> set[str]:
        return set(index.params) - self.inner._params(index)

    def _modules(self, index: ModelIndex) -> set[str]:
        return set(index.modules) - self.inner._modules(index)

    def __repr__(self) -> str:
        return f"~{self.inner!r}"


class _TypeSelector(Selector):
    """Tensors whose owning module is of a kind (by type for modules, by name for state dicts)."""

    __slots__ = ("kind",)
    kind: str

    def __init__(self, kind: str) -> None:
        _set_attrs(self, kind=kind)

    def _is_kind(self, index: ModelIndex, module: str) -> bool:
        if index.model is None:
            return _NAME_HEURISTICS[self.kind].search(module) is not None
        m = index.types.get(module) if module else index.model
        return m is not None and _is_type(m, self.kind)

    def _params(self, index: ModelIndex) -> set[str]:
        out = {p for p in index.params if self._is_kind(index, index.owner(p))}
        if self.kind == "embedding":
            leaf = _NAME_HEURISTICS["embedding"]
            out |= {p for p in index.params if leaf.search(p.rpartition(".")[2])}
        return out

    def _modules(self, index: ModelIndex) -> set[str]:
        return {m for m in index.modules if self._is_kind(index, m)}

    def __repr__(self) -> str:
        return f"<{self.kind} modules>"


class _Linear(Selector):
    __slots__ = ("exclude_head",)
    exclude_head: bool

    def __init__(self, exclude_head: bool) -> None:
        _set_attrs(self, exclude_head=exclude_head)

    def _linear_modules(self, index: ModelIndex) -> list[str]:
        model = index.model
        if model is None:
            raise WeightspaceValueError(
                "the LINEAR preset needs module types, so it needs an nn.Module, not a state "
                "dict or path; pass the model, or name the layers with a list or regex"
            )
        names = [m for m in index.modules if isinstance(index.types[m], nn.Linear)]
        if self.exclude_head and names:
            head: str | None = names[-1]
            get_out = getattr(model, "get_output_embeddings", None)
            if callable(get_out):
                out = get_out()
                head = next((m for m in index.modules if index.types[m] is out), head)
            names = [m for m in names if m != head]
        return names

    def _params(self, index: ModelIndex) -> set[str]:
        mods = set(self._linear_modules(index))
        return {p for p in index.params if index.owner(p) in mods}

    def _modules(self, index: ModelIndex) -> set[str]:
        return set(self._linear_modules(index))

    def __repr__(self) -> str:
        return "select.linear(exclude_head=True)" if self.exclude_head else "select.LINEAR"


_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)

_NAME_HEURISTICS = {
    "norm": re.compile(r"(^|\.)(\w*norm\w*|ln\w*|bn\d*|\w+_ln)$", re.IGNORECASE),
    "embedding": re.compile(r"(^|\.)(\w*embed\w*|wte|wpe|tok_embeddings)$", re.IGNORECASE),
}


def _is_type(module: nn.Module, kind: str) -> bool:
    cls_name = type(module).__name__.lower()
    if kind == "norm":
        return isinstance(module, _NORM_TYPES) or "norm" in cls_name
    return isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or "embedding" in cls_name


def linear(*, exclude_head: bool = False) -> Selector:
    """Select every ``nn.Linear`` layer, like PEFT's ``target_modules="all-linear"``.

    Args:
        exclude_head: Leave out the output layer: the module returned by the model's
            ``get_output_embeddings()`` (Hugging Face models), otherwise the last ``nn.Linear``
            in registration order. PEFT's ``"all-linear"`` corresponds to ``True``.

    Returns:
        A selector (needs an ``nn.Module``, since it tests module types).

    Example:
        >>> import torch
        >>> from weightspace import select
        >>> mlp = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
        >>> select.modules(mlp, select.linear(exclude_head=True))
        ('0',)
    """
    return _Linear(exclude_head)


LINEAR: Selector = _Linear(False)
"""Every ``nn.Linear`` weight and bias (see :func:`linear` to leave out the output head)."""

NO_NORMS: Selector = ~_TypeSelector("norm")
"""Everything except normalisation layers (LayerNorm, BatchNorm, GroupNorm, RMSNorm, any module
whose class name contains ``Norm``; for state dicts, names such as ``norm1``, ``ln_f``,
``bn2``)."""

NO_EMBEDDINGS: Selector = ~_TypeSelector("embedding")
"""Everything except embeddings (``nn.Embedding`` / ``EmbeddingBag`` modules, classes whose name
contains ``Embedding``, and tensors or modules whose name contains ``embed``, ``wte``,
``wpe``)."""


def pattern(targets: Targets) -> Selector:
    r"""Turn a target in PEFT's grammar into a :class:`Selector`, to combine it with presets.

    Args:
        targets: A list/tuple of exact names or dotted suffixes, a full-match regex string, or
            a selector (returned as is).

    Returns:
        The selector.

    Raises:
        WeightspaceValueError: if ``targets`` has the wrong type, is empty, or is an invalid
            regex.

    Example:
        >>> import torch
        >>> from weightspace import select
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
        >>> select.parameters(model, select.pattern(r".*\.weight") & select.NO_NORMS).names_a
        ('0.weight',)
    """
    if isinstance(targets, Selector):
        return targets
    if isinstance(targets, str):
        return _Regex(targets)
    if isinstance(targets, (list, tuple, set, frozenset)):
        names = list(targets)
        bad = [t for t in names if not isinstance(t, str) or not t]
        if bad:
            raise WeightspaceValueError(f"`targets` must hold non-empty strings, got {bad[:5]!r}")
        return _Names(sorted(names) if isinstance(targets, (set, frozenset)) else names)
    raise WeightspaceValueError(
        "`targets` must be a list of names or dotted suffixes, a regular expression string or "
        f"a weightspace.select.Selector, got {type(targets).__name__}"
    )


def _close_candidates(targets: Targets, index: ModelIndex, limit: int = 5) -> list[str]:
    """Names of the model closest to the targets (difflib), to put in error messages."""
    names = set(index.params) | set(index.modules)
    suffixes: set[str] = set()
    for n in names:
        parts = n.split(".")
        suffixes.update(".".join(parts[i:]) for i in range(len(parts)))
    if isinstance(targets, str):
        words = [targets]
    elif isinstance(targets, Selector):
        return []
    else:
        words = [str(t) for t in targets]
    found: list[str] = []
    for w in words:
        for c in difflib.get_close_matches(w, sorted(suffixes), n=limit, cutoff=0.5):
            if c not in found:
                found.append(c)
    return found[:limit]


def _empty_error(
    what: str, targets: Targets, exclude: Targets | None, index: ModelIndex, before: int
) -> WeightspaceValueError:
    cands = _close_candidates(targets, index)
    tried = f"`targets`={_describe(targets)}" + (
        f", `exclude`={_describe(exclude)}" if exclude is not None else ""
    )
    msg = (
        f"no {what} of the model match {tried}; compared {len(index.params)} tensor names and "
        f"{len(index.modules)} module names (lists match exact names or dotted suffixes, a "
        "string is a full-match regex)"
    )
    if before:
        msg += f"; `targets` matched {before}, all removed by `exclude`"
    if cands:
        msg += f"; closest names: {cands}"
    return WeightspaceValueError(msg)


def _describe(targets: Targets | None) -> str:
    if isinstance(targets, Selector):
        return repr(targets)
    if isinstance(targets, str):
        return f"regex {targets!r}"
    return repr(list(targets)) if targets is not None else "None"


def parameters(
    model: StateDictLike,
    targets: Targets,
    *,
    exclude: Targets | None = None,
    buffers: bool = False,
) -> Selection:
    r"""Select tensors of a model with PEFT's ``target_modules`` / ``exclude_modules`` grammar.

    A tensor is selected when ``targets`` matches its full name or the name of a module that
    contains it, and ``exclude`` matches neither.

    Args:
        model: An ``nn.Module`` (its parameters), a mapping of tensors or a checkpoint path
            (its floating-point tensors).
        targets: A list/tuple of exact names or dotted suffixes, a full-match regex string,
            or a :class:`Selector` (presets such as :data:`LINEAR`).
        exclude: Same grammar; matching tensors are removed.
        buffers: For modules, also consider floating-point buffers (BatchNorm statistics).

    Returns:
        An identity :class:`Selection` in the model's order, with shapes.

    Raises:
        WeightspaceValueError: if nothing is selected (the message says what was tried and
            lists the closest names), or an argument is malformed.

    Example:
        >>> import torch
        >>> from weightspace import select
        >>> model = torch.nn.ModuleDict({"attn": torch.nn.ModuleDict(
        ...     {"q_proj": torch.nn.Linear(2, 2), "k_proj": torch.nn.Linear(2, 2)})})
        >>> select.parameters(model, ["q_proj"], exclude=r".*\.bias").names_a
        ('attn.q_proj.weight',)
    """
    selector = pattern(targets)
    excluder = pattern(exclude) if exclude is not None else None
    index = build_index(model, argument="model", buffers=buffers)
    chosen = selector._params(index)
    before = len(chosen)
    if excluder is not None:
        chosen -= excluder._params(index)
    if not chosen:
        raise _empty_error("tensors", targets, exclude, index, before)
    names = [p for p in index.params if p in chosen]
    return Selection(names, shapes={n: index.shapes[n] for n in names})


def modules(
    model: StateDictLike,
    targets: Targets,
    *,
    exclude: Targets | None = None,
) -> tuple[str, ...]:
    r"""Return the names of the modules that match PEFT's ``target_modules`` grammar.

    Args:
        model: An ``nn.Module``, or a mapping of tensors / checkpoint path (its modules are the
            dotted prefixes of the tensor names).
        targets: A list/tuple of exact names or dotted suffixes, a full-match regex string, or
            a :class:`Selector`.
        exclude: Same grammar; matching modules are removed.

    Returns:
        Module names in registration order.

    Raises:
        WeightspaceValueError: if no module matches (with the closest names).

    Example:
        >>> import torch
        >>> from weightspace import select
        >>> model = torch.nn.ModuleDict({"layers": torch.nn.ModuleList(
        ...     [torch.nn.ModuleDict({"q_proj": torch.nn.Linear(2, 2)}) for _ in range(2)])})
        >>> select.modules(model, ["q_proj"], exclude=r"layers\.1\..*")
        ('layers.0.q_proj',)
    """
    selector = pattern(targets)
    excluder = pattern(exclude) if exclude is not None else None
    index = build_index(model, argument="model")
    chosen = selector._modules(index)
    before = len(chosen)
    if excluder is not None:
        chosen -= excluder._modules(index)
    if not chosen:
        raise _empty_error("modules", targets, exclude, index, before)
    return tuple(m for m in index.modules if m in chosen)
