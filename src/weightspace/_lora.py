r"""LoRA adapters as task vectors, and task vectors as low-rank factors.

A LoRA adapter (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022,
`arXiv:2106.09685 <https://arxiv.org/abs/2106.09685>`_) adds to a weight :math:`W \in
\mathbb{R}^{d_{out} \times d_{in}}` the low-rank update

.. math::

    \Delta W = s\, B A, \qquad B \in \mathbb{R}^{d_{out} \times r},\;
    A \in \mathbb{R}^{r \times d_{in}},\; s = \alpha / r
    \;(\text{or } \alpha / \sqrt{r} \text{ with rsLoRA}),

which is exactly a task vector restricted to the adapted modules (Ilharco et al., ICLR 2023).

:func:`lora_to_task_vector` reads PEFT's format: ``adapter_config.json`` and
``adapter_model.safetensors`` with keys ``base_model.model.<module>.lora_A.weight`` and
``...lora_B.weight`` (in-memory state dicts may carry the adapter name:
``lora_A.default.weight``). Supported: linear layers (with ``fan_in_fan_out``), convolutions
whose ``lora_B`` has a 1x1 kernel (PEFT's layout, ungrouped), embeddings
(``lora_embedding_A`` / ``lora_embedding_B``), ``lora_bias``, ``rank_pattern``,
``alpha_pattern`` and ``use_rslora``. Not supported (error): DoRA (``use_dora``),
``modules_to_save`` and trainable tokens, which store full weights rather than updates.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from weightspace._errors import WeightspaceValueError
from weightspace._task_vector import TaskVector
from weightspace._task_vector._interfaces import LoraConversions, register_lora_conversions
from weightspace.io import open_state_dict, save_state_dict, shape_of

__all__ = ["LoraAdapter", "LowRankTaskVector", "lora_to_task_vector", "low_rank", "to_lora"]

_LORA_PARTS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B")
_UNSUPPORTED_PARTS = ("lora_magnitude_vector", "modules_to_save", "trainable_tokens")
_PEFT_PREFIX = "base_model.model."


# --------------------------------------------------------------------------------------------
# Reading adapters
# --------------------------------------------------------------------------------------------


def _read_config(config: object) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        result = to_dict()
        if isinstance(result, Mapping):
            return dict(result)
    raise WeightspaceValueError(
        "`config` must be a mapping (the content of adapter_config.json) or a peft.LoraConfig, "
        f"got {type(config).__name__}"
    )


def _open_adapter(
    adapter: str | os.PathLike[str] | Mapping[str, Tensor], config: object
) -> tuple[Mapping[str, Tensor], dict[str, Any]]:
    if isinstance(adapter, Mapping):
        if config is None:
            raise WeightspaceValueError(
                "`config` is required when `adapter` is a mapping of tensors: pass the content of "
                "adapter_config.json (a dict with at least 'r' and 'lora_alpha') or a LoraConfig"
            )
        return adapter, _read_config(config)
    if not isinstance(adapter, (str, os.PathLike)):
        raise WeightspaceValueError(
            "`adapter` must be a PEFT adapter folder or a mapping of tensors, got "
            f"{type(adapter).__name__}"
        )
    folder = Path(adapter)
    if not folder.is_dir():
        raise WeightspaceValueError(
            f"`adapter` must be a PEFT adapter folder (with adapter_config.json), got "
            f"{str(folder)!r}, which is not a directory"
        )
    if config is None:
        cfg_path = folder / "adapter_config.json"
        if not cfg_path.is_file():
            raise WeightspaceValueError(
                f"{str(cfg_path)!r} does not exist; pass `config=` or point `adapter` at the "
                "folder written by `peft_model.save_pretrained(...)`"
            )
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    else:
        cfg = _read_config(config)
    for filename in ("adapter_model.safetensors", "adapter_model.bin"):
        if (folder / filename).is_file():
            return open_state_dict(folder / filename), cfg
    raise WeightspaceValueError(
        f"no adapter_model.safetensors (or adapter_model.bin) in {str(folder)!r}"
    )


def _pattern_key(patterns: Mapping[str, Any], module: str) -> str | None:
    """PEFT's ``get_pattern_key``: the first pattern that matches the end of ``module``."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return None


@dataclass
class _Parts:
    kind: str = ""  # "linear" or "embedding"
    a: str | None = None
    b: str | None = None
    bias: str | None = None


@dataclass(frozen=True)
class _LoraDelta:
    """The dense delta of one adapted module, computed on call."""

    sd: Mapping[str, Tensor]
    a_key: str
    b_key: str
    kind: str
    scale: float
    fan_in_fan_out: bool
    dtype: torch.dtype

    def __call__(self) -> Tensor:
        acc = torch.float64 if self.dtype == torch.float64 else torch.float32
        a = self.sd[self.a_key].to(acc)
        b = self.sd[self.b_key].to(acc)
        if self.kind == "embedding":
            return (b @ a).T * self.scale
        if a.dim() == 2:
            delta = b @ a
            return (delta.T if self.fan_in_fan_out else delta) * self.scale
        # convolution: A (r, in, *k), B (out, r, 1, ...); delta[o, i] = sum_r B[o, r] A[r, i]
        return torch.einsum("or,r...->o...", b.flatten(1), a) * self.scale


@dataclass(frozen=True)
class _LoraBias:
    sd: Mapping[str, Tensor]
    key: str
    scale: float

    def __call__(self) -> Tensor:
        return self.sd[self.key].to(torch.float64) * self.scale


def lora_to_task_vector(
    adapter: str | os.PathLike[str] | Mapping[str, Tensor],
    *,
    config: Mapping[str, Any] | None = None,
    base_names: Mapping[str, str] | Callable[[str], str] | None = None,
    adapter_name: str = "default",
    dtype: torch.dtype = torch.float32,
) -> TaskVector:
    r"""Turn a PEFT LoRA adapter into the dense task vector :math:`s\,BA` per adapted module.

    The vector is lazy: each delta is computed from its two factors when it is read. Keys are
    the base model's tensor names, ``<module>.weight`` (and ``<module>.bias`` with
    ``lora_bias``), where ``<module>`` is the adapter key without PEFT's ``base_model.model.``
    prefix. The scale is ``lora_alpha / r`` (``lora_alpha / sqrt(r)`` with ``use_rslora``),
    with ``r`` and ``lora_alpha`` taken from ``rank_pattern`` / ``alpha_pattern`` when a
    pattern matches the module (PEFT's rule: the pattern matches the end of the module name
    at a dot boundary). With ``fan_in_fan_out`` (GPT-2's ``Conv1D``) the delta is transposed.

    Args:
        adapter: A folder written by ``save_pretrained`` (``adapter_config.json`` and
            ``adapter_model.safetensors``), or a mapping of the adapter's tensors.
        config: The configuration (a dict like ``adapter_config.json`` or a
            ``peft.LoraConfig``); read from the folder when omitted, required for a mapping.
        base_names: Renames the keys to the base model's names: a mapping (keys missing from it
            are kept) or a function of the name.
        adapter_name: For keys that carry an adapter name (``lora_A.<name>.weight``), the
            adapter to read; others are ignored.
        dtype: Dtype of the deltas (float32 or float64).

    Returns:
        A lazy :class:`~weightspace.TaskVector`.

    Raises:
        WeightspaceValueError: if the configuration lacks ``r`` / ``lora_alpha``, a factor is
            missing, ranks disagree with the configuration, or the adapter uses DoRA,
            ``modules_to_save`` or trainable tokens.

    Example:
        >>> import torch
        >>> from weightspace._lora import lora_to_task_vector
        >>> sd = {
        ...     "base_model.model.fc.lora_A.weight": torch.ones(2, 3),
        ...     "base_model.model.fc.lora_B.weight": torch.ones(4, 2),
        ... }
        >>> tv = lora_to_task_vector(sd, config={"r": 2, "lora_alpha": 4})
        >>> tv["fc.weight"].shape, tv["fc.weight"][0, 0].item()
        (torch.Size([4, 3]), 4.0)
    """
    if dtype not in (torch.float32, torch.float64):
        raise WeightspaceValueError(f"`dtype` must be torch.float32 or torch.float64, got {dtype}")
    sd, cfg = _open_adapter(adapter, config)
    if cfg.get("use_dora"):
        raise WeightspaceValueError(
            "the adapter uses DoRA (`use_dora=True`), whose update is not a fixed delta "
            "(it rescales the merged weight); merge it with PEFT and use "
            "`TaskVector.from_models(base=base, finetuned=merged)` instead"
        )
    if cfg.get("target_parameters"):
        raise WeightspaceValueError(
            "the adapter targets parameters directly (`target_parameters`), which is not "
            "supported; merge it with PEFT and use "
            "`TaskVector.from_models(base=base, finetuned=merged)`"
        )
    try:
        r_default = int(cfg["r"])
        alpha_default = float(cfg["lora_alpha"])
    except (KeyError, TypeError, ValueError):
        raise WeightspaceValueError(
            "`config` must hold integer 'r' and numeric 'lora_alpha' (as in "
            f"adapter_config.json), got keys {sorted(cfg)}"
        ) from None
    rank_pattern: Mapping[str, Any] = cfg.get("rank_pattern") or {}
    alpha_pattern: Mapping[str, Any] = cfg.get("alpha_pattern") or {}
    rslora = bool(cfg.get("use_rslora", False))
    fan_in_fan_out = bool(cfg.get("fan_in_fan_out", False))

    modules: dict[str, _Parts] = {}
    for key in sd:
        parts = key.split(".")
        bad = next((p for p in parts if p in _UNSUPPORTED_PARTS), None)
        if bad is not None:
            raise WeightspaceValueError(
                f"the adapter holds {key!r} ({bad}): full weights, not a low-rank update, are "
                "not supported; merge with PEFT and use "
                "`TaskVector.from_models(base=base, finetuned=merged)`"
            )
        idx = next((i for i, p in enumerate(parts) if p in _LORA_PARTS), None)
        if idx is None:
            continue  # base weights of a full PeftModel state dict
        module = ".".join(parts[:idx])
        if module.startswith(_PEFT_PREFIX):
            module = module[len(_PEFT_PREFIX) :]
        part, rest = parts[idx], parts[idx + 1 :]
        if part.startswith("lora_embedding"):
            if len(rest) > 1 or (rest and rest[0] != adapter_name):
                continue
            suffix = "weight"
        else:
            if len(rest) == 2:
                if rest[0] != adapter_name:
                    continue
                rest = rest[1:]
            if len(rest) != 1 or rest[0] not in ("weight", "bias"):
                raise WeightspaceValueError(f"unrecognised LoRA key {key!r}")
            suffix = rest[0]
        entry = modules.setdefault(module, _Parts())
        entry.kind = "embedding" if part.startswith("lora_embedding") else "linear"
        if suffix == "bias":
            if part != "lora_B":
                raise WeightspaceValueError(f"unrecognised LoRA key {key!r}")
            entry.bias = key
        elif part.endswith("A"):
            entry.a = key
        else:
            entry.b = key
    if not modules:
        raise WeightspaceValueError(
            "`adapter` holds no LoRA factors (keys like "
            "'base_model.model.<module>.lora_A.weight'); "
            f"first keys: {list(sd)[:5]}"
        )

    entries: dict[str, Callable[[], Tensor]] = {}
    shapes: dict[str, torch.Size] = {}
    for module, p in modules.items():
        if p.a is None or p.b is None:
            raise WeightspaceValueError(
                f"module {module!r} has only one of its LoRA factors (A: {p.a}, B: {p.b})"
            )
        a_shape, b_shape = shape_of(sd, p.a), shape_of(sd, p.b)
        rank = a_shape[0]
        r_key = _pattern_key(rank_pattern, module)
        r_cfg = int(rank_pattern[r_key]) if r_key is not None else r_default
        if r_cfg != rank:
            raise WeightspaceValueError(
                f"module {module!r} has rank {rank} (lora_A shape {tuple(a_shape)}) but the "
                f"configuration says r={r_cfg}; the adapter and its configuration do not match"
            )
        a_key = _pattern_key(alpha_pattern, module)
        alpha = float(alpha_pattern[a_key]) if a_key is not None else alpha_default
        scale = alpha / math.sqrt(rank) if rslora else alpha / rank
        if p.kind == "embedding":
            shape = torch.Size((a_shape[1], b_shape[0]))
        elif len(a_shape) == 2:
            shape = torch.Size((b_shape[0], a_shape[1]))
            if fan_in_fan_out:
                shape = torch.Size((a_shape[1], b_shape[0]))
        else:
            if any(k != 1 for k in b_shape[2:]):
                raise WeightspaceValueError(
                    f"module {module!r}: lora_B has kernel {tuple(b_shape[2:])}; only PEFT's "
                    "layout with a 1x1 lora_B kernel is supported for convolutions"
                )
            shape = torch.Size((b_shape[0], *a_shape[1:]))
        name = f"{module}.weight"
        entries[name] = _LoraDelta(sd, p.a, p.b, p.kind, scale, fan_in_fan_out, dtype)
        shapes[name] = shape
        if p.bias is not None:
            entries[f"{module}.bias"] = _LoraBias(sd, p.bias, scale)
            shapes[f"{module}.bias"] = shape_of(sd, p.bias)

    if base_names is not None:
        rename = base_names if callable(base_names) else (lambda n, m=base_names: m.get(n, n))
        renamed = {rename(n): v for n, v in entries.items()}
        if len(renamed) != len(entries):
            raise WeightspaceValueError("`base_names` maps two adapter keys to the same name")
        shapes = {rename(n): s for n, s in shapes.items()}
        entries = renamed
    metadata = {"source": "lora", "lora_r": str(r_default), "lora_alpha": str(alpha_default)}
    return TaskVector(entries, dtype=dtype, metadata=metadata, shapes=shapes)


# --------------------------------------------------------------------------------------------
# Low rank
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LowRankTaskVector:
    r"""Truncated-SVD factors of a task vector: :math:`\tau_W \approx B A` for 2-D tensors.

    Attributes:
        rank: The requested rank.
        factors: ``name -> (B, A)`` with ``B`` of shape ``(out, k)`` and ``A`` of shape
            ``(k, in)``, ``k = min(rank, out, in)``; ``B = U_k \Sigma_k``, ``A = V_k^T``.
        dense: Tensors that are not 2-D, kept as they are.
        relative_error: ``name -> ||tau - B A||_F / ||tau||_F`` (0 for zero tensors and for
            the dense ones).
        dtype: Dtype of the original vector.

    Example:
        >>> import torch
        >>> from weightspace import TaskVector
        >>> lr = TaskVector({"w": torch.eye(3)}).low_rank(2)
        >>> round(lr.relative_error["w"], 4)
        0.5774
    """

    rank: int
    factors: Mapping[str, tuple[Tensor, Tensor]]
    dense: Mapping[str, Tensor]
    relative_error: Mapping[str, float]
    dtype: torch.dtype = field(default=torch.float32)

    def to_task_vector(self) -> TaskVector:
        """Return the low-rank approximation as a (lazy) task vector.

        Returns:
            A task vector with ``B @ A`` for the factored tensors and the dense ones as they are.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> tv = TaskVector({"w": torch.ones(2, 2)})
            >>> tv.low_rank(1).to_task_vector().allclose(tv)
            True
        """
        entries: dict[str, Tensor | Callable[[], Tensor]] = {}
        shapes: dict[str, torch.Size] = {}
        for name, (b, a) in self.factors.items():
            entries[name] = _Product(b, a)
            shapes[name] = torch.Size((b.shape[0], a.shape[1]))
        for name, t in self.dense.items():
            entries[name] = t
            shapes[name] = t.shape
        return TaskVector(entries, dtype=self.dtype, shapes=shapes)


@dataclass(frozen=True)
class _Product:
    b: Tensor
    a: Tensor

    def __call__(self) -> Tensor:
        return self.b @ self.a


def _check_rank(rank: object) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise WeightspaceValueError(f"`rank` must be a positive integer, got {rank!r}")
    return rank


def _svd_factors(t: Tensor, rank: int) -> tuple[Tensor, Tensor, float]:
    work = t.to(torch.float64)
    u, s, vh = torch.linalg.svd(work, full_matrices=False)
    k = min(rank, s.numel())
    b = u[:, :k] * s[:k]
    a = vh[:k]
    total = float(torch.linalg.vector_norm(s))
    rest = float(torch.linalg.vector_norm(s[k:])) if k < s.numel() else 0.0
    err = rest / total if total > 0 else 0.0
    return b.to(t.dtype), a.to(t.dtype), err


def low_rank(tv: TaskVector, rank: int) -> LowRankTaskVector:
    """Factor every 2-D tensor of a task vector by truncated SVD (computed in float64).

    Args:
        tv: The task vector.
        rank: Number of singular values kept per tensor.

    Returns:
        The factors, the dense non-2-D tensors and the relative Frobenius errors.

    Raises:
        WeightspaceValueError: if ``rank`` is not a positive integer.

    Example:
        >>> import torch
        >>> from weightspace import TaskVector
        >>> from weightspace._lora import low_rank
        >>> lr = low_rank(TaskVector({"w": torch.ones(4, 3), "b": torch.ones(4)}), 1)
        >>> lr.factors["w"][0].shape, lr.factors["w"][1].shape, list(lr.dense)
        (torch.Size([4, 1]), torch.Size([1, 3]), ['b'])
    """
    rank = _check_rank(rank)
    factors: dict[str, tuple[Tensor, Tensor]] = {}
    dense: dict[str, Tensor] = {}
    errors: dict[str, float] = {}
    for name in tv:
        t = tv[name]
        if t.dim() == 2:
            b, a, err = _svd_factors(t, rank)
            factors[name] = (b, a)
            errors[name] = err
        else:
            dense[name] = t
            errors[name] = 0.0
    return LowRankTaskVector(rank, factors, dense, errors, tv.dtype)


@dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter in PEFT's format, built from a task vector by :func:`to_lora`.

    Attributes:
        state_dict: ``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight`` tensors.
        config: The ``adapter_config.json`` content (``r``, ``lora_alpha``,
            ``target_modules``, ``peft_type``).
        relative_error: ``name -> ||tau - s B A||_F / ||tau||_F`` per tensor.

    Example:
        >>> import torch
        >>> from weightspace import TaskVector
        >>> adapter = TaskVector({"fc.weight": torch.ones(3, 2)}).to_lora(1)
        >>> adapter.config["r"], adapter.config["target_modules"]
        (1, ['fc'])
    """

    state_dict: Mapping[str, Tensor]
    config: Mapping[str, Any]
    relative_error: Mapping[str, float]

    def to_task_vector(self) -> TaskVector:
        """Return the dense task vector of the adapter (see :func:`lora_to_task_vector`).

        Returns:
            The lazy task vector ``s B A``.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> tv = TaskVector({"fc.weight": torch.ones(3, 2)})
            >>> tv.to_lora(1).to_task_vector().allclose(tv)
            True
        """
        return lora_to_task_vector(dict(self.state_dict), config=self.config)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``adapter_config.json`` and ``adapter_model.safetensors`` into ``folder``.

        The folder can be loaded by ``peft.PeftModel.from_pretrained(base_model, folder)``.

        Args:
            folder: Output folder (created if needed).

        Returns:
            The folder's path.

        Example:
            >>> import tempfile, torch
            >>> from weightspace import TaskVector
            >>> adapter = TaskVector({"fc.weight": torch.ones(3, 2)}).to_lora(1)
            >>> path = adapter.save(tempfile.mkdtemp())
            >>> sorted(p.name for p in path.iterdir())
            ['adapter_config.json', 'adapter_model.safetensors']
        """
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        save_state_dict(
            {k: v.contiguous() for k, v in self.state_dict.items()},
            out / "adapter_model.safetensors",
        )
        tmp = out / "adapter_config.json.tmp"
        tmp.write_text(json.dumps(dict(self.config), indent=2), encoding="utf-8")
        os.replace(tmp, out / "adapter_config.json")
        return out


def to_lora(tv: TaskVector, rank: int, *, alpha: float | None = None) -> LoraAdapter:
    """Approximate a task vector by a LoRA adapter of rank ``rank`` (truncated SVD).

    Every key must be a 2-D ``<module>.weight`` tensor (restrict the vector first otherwise).
    The factors are scaled so that PEFT's ``lora_alpha / r`` scaling reproduces the
    truncated SVD: ``B = U_k Sigma_k r / alpha``, ``A = V_k^T``.

    Args:
        tv: The task vector.
        rank: The LoRA rank ``r``; tensors of smaller rank are zero-padded to it.
        alpha: ``lora_alpha`` (default ``rank``, i.e. scale 1).

    Returns:
        The adapter.

    Raises:
        WeightspaceValueError: if ``rank`` is not positive, ``alpha`` is not finite and
            non-zero, or a key is not a 2-D ``.weight`` tensor.

    Example:
        >>> import torch
        >>> from weightspace import TaskVector
        >>> from weightspace._lora import to_lora
        >>> to_lora(TaskVector({"fc.weight": torch.eye(2)}), 1).relative_error["fc.weight"] > 0.7
        True
    """
    rank = _check_rank(rank)
    alpha_f = float(rank if alpha is None else alpha)
    if not math.isfinite(alpha_f) or alpha_f == 0.0:
        raise WeightspaceValueError(f"`alpha` must be finite and non-zero, got {alpha!r}")
    bad = [n for n in tv if not n.endswith(".weight") or len(tv.shape(n)) != 2]
    if bad:
        raise WeightspaceValueError(
            f"LoRA factors exist only for 2-D '<module>.weight' tensors; {len(bad)} keys are "
            f"not: {bad[:6]}; restrict the vector first, e.g. "
            "`tv.restrict(select.parameters(model, select.LINEAR, exclude=r'.*\\.bias'))`"
        )
    scale = alpha_f / rank
    state: dict[str, Tensor] = {}
    errors: dict[str, float] = {}
    targets: list[str] = []
    for name in tv:
        t = tv[name]
        b, a, err = _svd_factors(t, rank)
        k = a.shape[0]
        if k < rank:
            b = torch.cat([b, b.new_zeros(b.shape[0], rank - k)], dim=1)
            a = torch.cat([a, a.new_zeros(rank - k, a.shape[1])], dim=0)
        module = name[: -len(".weight")]
        state[f"{_PEFT_PREFIX}{module}.lora_A.weight"] = a.contiguous()
        state[f"{_PEFT_PREFIX}{module}.lora_B.weight"] = (b / scale).contiguous()
        errors[name] = err
        targets.append(module)
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": alpha_f if alpha is not None else rank,
        "target_modules": targets,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    return LoraAdapter(state, config, errors)


# TaskVector.from_lora / low_rank / to_lora delegate to these functions: this module depends on
# the task vector, never the reverse.
register_lora_conversions(
    LoraConversions(from_lora=lora_to_task_vector, low_rank=low_rank, to_lora=to_lora)
)
