"""Terms of a distillation objective: modules over the student's and the teacher's outputs."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace.distill._capture import FeatureCapture, resolve_module
from weightspace.distill._losses import (
    attention_loss,
    dkd_loss,
    hint_loss,
    kd_loss,
    output_loss,
)

__all__ = [
    "DKD",
    "KD",
    "AttentionTransfer",
    "Hint",
    "OutputMatch",
    "Outputs",
    "Task",
    "Term",
    "connector",
    "inputs_of",
    "targets_of",
]


def inputs_of(batch: Any) -> Any:
    """The model input of a batch: the first element of a tuple or list, else the batch."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise WeightspaceValueError("a batch is an empty tuple; pass (inputs, targets)")
        return batch[0]
    return batch


def targets_of(batch: Any) -> Tensor:
    """The targets of an ``(inputs, targets)`` batch."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[1], Tensor):
        return batch[1]
    raise WeightspaceValueError(
        "this term compares with the true classes and needs (inputs, targets) batches, got a "
        f"batch of type {type(batch).__name__}"
    )


def _weight(value: object) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0:  # type: ignore[operator]
        raise WeightspaceValueError(f"`weight` must be a finite number >= 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _tensor(value: Any, who: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise WeightspaceValueError(
            f"the {who} output is a {type(value).__name__}; this term needs a tensor (pass "
            "`student_forward` / `teacher_forward` to the Distiller to pick one)"
        )
    return value


@dataclass(frozen=True)
class Outputs:
    """What one model produced on a batch: its output and the captured features.

    Attributes:
        output: The model's output (logits, a prediction, ...; whatever its forward returns).
        features: ``module name -> output`` of the submodules the terms asked for.
    """

    output: Any
    features: Mapping[str, Tensor] = field(default_factory=dict)


class Term(nn.Module):
    """One weighted part of a distillation objective.

    A term is a module (so that it can hold learnable connectors, which the
    :class:`Distiller` trains with the student and writes into its checkpoints). Subclasses
    implement :meth:`forward` and list the submodules whose outputs they need in
    ``student_layers`` / ``teacher_layers``; :meth:`bind` resolves those names against the two
    models once, when the distiller is built.

    Args:
        weight: The factor of this term in the total loss.

    Attributes:
        weight: The factor of this term in the total loss.
        student_layers: Names of the student's submodules to capture.
        teacher_layers: Names of the teacher's submodules to capture.
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = _weight(weight)
        self.student_layers: tuple[str, ...] = ()
        self.teacher_layers: tuple[str, ...] = ()

    def bind(self, student: nn.Module, teacher: nn.Module) -> None:
        """Resolve the layer names against the two models (called by the distiller)."""

    def forward(self, student: Outputs, teacher: Outputs, batch: Any) -> Tensor:
        """The unweighted loss of this term on one batch.

        Args:
            student: The student's output and features (attached to its graph).
            teacher: The teacher's output and features (no graph).
            batch: The batch, e.g. ``(inputs, targets)``.

        Returns:
            A scalar tensor.
        """
        raise NotImplementedError

    def extra_repr(self) -> str:
        """The weight, shown in ``repr``."""
        return f"weight={self.weight}"


class Task(Term):
    """The student's own loss on the labels (cross-entropy by default); ignores the teacher.

    Args:
        loss: ``loss(output, targets) -> scalar``; default
            :func:`torch.nn.functional.cross_entropy`.
        weight: The factor of this term.

    Example:
        >>> import torch
        >>> from weightspace import distill
        >>> term = distill.Task()
        >>> out = distill.Outputs(torch.zeros(2, 4))
        >>> round(term(out, out, (None, torch.tensor([0, 3]))).item(), 4)  # log 4
        1.3863
    """

    def __init__(
        self,
        loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        *,
        weight: float = 1.0,
    ) -> None:
        super().__init__(weight)
        if loss is not None and not callable(loss):
            raise WeightspaceValueError(
                f"`loss` must be a callable (output, targets) -> tensor, got {type(loss).__name__}"
            )
        self.loss = loss or F.cross_entropy

    def forward(self, student: Outputs, teacher: Outputs, batch: Any) -> Tensor:
        """Cross-entropy (or ``loss``) of the student's output against the batch's targets."""
        return self.loss(_tensor(student.output, "student"), targets_of(batch))


class KD(Term):
    r"""Hinton's soft-target loss :func:`kd_loss` between the two outputs (logits).

    Args:
        temperature: The softmax temperature.
        weight: The factor of this term (Hinton's :math:`\alpha` when a :class:`Task` term
            has weight :math:`1 - \alpha`).
    """

    def __init__(self, temperature: float = 4.0, *, weight: float = 1.0) -> None:
        super().__init__(weight)
        kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), temperature=temperature)  # validate
        self.temperature = float(temperature)

    def forward(self, student: Outputs, teacher: Outputs, batch: Any) -> Tensor:
        """:func:`kd_loss` of the student's logits against the teacher's."""
        return kd_loss(
            _tensor(student.output, "student"),
            _tensor(teacher.output, "teacher"),
            temperature=self.temperature,
        )

    def extra_repr(self) -> str:
        """The temperature and weight."""
        return f"temperature={self.temperature}, weight={self.weight}"


class DKD(Term):
    """Decoupled knowledge distillation, :func:`dkd_loss` (needs ``(inputs, targets)`` batches).

    Args:
        alpha: Weight of the target-class part.
        beta: Weight of the non-target-class part.
        temperature: The softmax temperature.
        warmup: Grow the term linearly from 0 over this many calls (optimiser steps), as the
            authors do over their first 20 epochs; 0 for none.
        weight: The factor of this term.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        *,
        warmup: int = 0,
        weight: float = 1.0,
    ) -> None:
        super().__init__(weight)
        z = torch.zeros(1, 2)
        dkd_loss(z, z, torch.zeros(1, dtype=torch.long), alpha=alpha, beta=beta,
                 temperature=temperature)  # fmt: skip
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise WeightspaceValueError(f"`warmup` must be an int >= 0, got {warmup!r}")
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)
        self.warmup = warmup
        self.calls: Tensor
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))  # checkpointed

    def forward(self, student: Outputs, teacher: Outputs, batch: Any) -> Tensor:
        """:func:`dkd_loss` of the two logits and the batch's targets, times the warm-up."""
        value = dkd_loss(
            _tensor(student.output, "student"),
            _tensor(teacher.output, "teacher"),
            targets_of(batch),
            alpha=self.alpha,
            beta=self.beta,
            temperature=self.temperature,
        )
        if self.training:
            self.calls += 1
        if self.warmup:
            value = value * min(int(self.calls) / self.warmup, 1.0)
        return value

    def extra_repr(self) -> str:
        """The settings."""
        return (
            f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}, "
            f"warmup={self.warmup}, weight={self.weight}"
        )


def connector(student_channels: int, teacher_channels: int, *, spatial_dims: int = 2) -> nn.Module:
    """A learnable map from the student's channels to the teacher's (FitNets' regressor).

    A 1x1 convolution for feature maps (``spatial_dims`` 1, 2 or 3), a linear layer for
    vectors (``spatial_dims=0``), without bias as in the usual FitNets code.

    Args:
        student_channels: Channels (dimension 1) of the student's features.
        teacher_channels: Channels of the teacher's features.
        spatial_dims: Number of dimensions after the channels.

    Returns:
        The connector (initialised by PyTorch's default, from the global RNG).

    Raises:
        WeightspaceValueError: on a non-positive channel count or ``spatial_dims`` not in 0-3.

    Example:
        >>> from weightspace import distill
        >>> distill.connector(16, 64)
        Conv2d(16, 64, kernel_size=(1, 1), stride=(1, 1), bias=False)
    """
    for name, v in (("student_channels", student_channels), ("teacher_channels", teacher_channels)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise WeightspaceValueError(f"`{name}` must be an int >= 1, got {v!r}")
    if spatial_dims == 0:
        return nn.Linear(student_channels, teacher_channels, bias=False)
    convs: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
    if spatial_dims not in convs:
        raise WeightspaceValueError(f"`spatial_dims` must be 0, 1, 2 or 3, got {spatial_dims!r}")
    return convs[spatial_dims](student_channels, teacher_channels, 1, bias=False)


class Hint(Term):
    """FitNets' hint: the teacher's hidden layer regressed from the student's, through a connector.

    Args:
        student_layer: The student's *guided* submodule (exact name or dotted suffix).
        teacher_layer: The teacher's *hint* submodule.
        connector: A module mapping the student's features to the teacher's shape (trained
            with the student); ``None`` when they already agree. :meth:`for_models` builds one
            from the shapes.
        weight: The factor of this term.
    """

    def __init__(
        self,
        student_layer: str,
        teacher_layer: str,
        connector: nn.Module | None = None,
        *,
        weight: float = 1.0,
    ) -> None:
        super().__init__(weight)
        if connector is not None and not isinstance(connector, nn.Module):
            raise WeightspaceValueError(
                f"`connector` must be an nn.Module or None, got {type(connector).__name__}"
            )
        self.student_layer, self.teacher_layer = student_layer, teacher_layer
        self.student_layers, self.teacher_layers = (student_layer,), (teacher_layer,)
        self.connector = connector if connector is not None else nn.Identity()

    @classmethod
    def for_models(
        cls,
        student: nn.Module,
        teacher: nn.Module,
        student_layer: str,
        teacher_layer: str,
        example: Any,
        *,
        weight: float = 1.0,
    ) -> Hint:
        """A hint whose connector is sized by running both models once on ``example``.

        Args:
            student: The student.
            teacher: The teacher.
            student_layer: The student's guided submodule.
            teacher_layer: The teacher's hint submodule.
            example: A model input (not a batch pair), e.g. ``x[:2]``.
            weight: The factor of this term.

        Returns:
            The hint, with a :func:`connector` when the channels differ (none when the shapes
            already match).

        Raises:
            ShapeMismatchError: if the batch or spatial sizes differ, which a channel map
                cannot fix.
        """
        shapes = []
        for model, layer, arg in ((student, student_layer, "student_layer"),
                                  (teacher, teacher_layer, "teacher_layer")):  # fmt: skip
            name = resolve_module(model, layer, arg)
            was = model.training
            model.eval()
            try:
                with torch.no_grad(), FeatureCapture(model, [name], detach=True) as cap:
                    model(example)
            finally:
                model.train(was)
            shapes.append(tuple(cap.features[name].shape))
        s, t = shapes
        if s == t:
            return cls(student_layer, teacher_layer, weight=weight)
        if len(s) != len(t) or s[:1] != t[:1] or s[2:] != t[2:]:
            raise ShapeMismatchError(
                f"student features {list(s)} and teacher features {list(t)} differ beyond the "
                "channels (dimension 1); pick layers of equal resolution"
            )
        conn = connector(s[1], t[1], spatial_dims=len(s) - 2)
        return cls(student_layer, teacher_layer, conn, weight=weight)

    def bind(self, student: nn.Module, teacher: nn.Module) -> None:
        """Resolve the two layer names to full module names."""
        self.student_layers = (resolve_module(student, self.student_layer, "student_layer"),)
        self.teacher_layers = (resolve_module(teacher, self.teacher_layer, "teacher_layer"),)

    def forward(self, student: Outputs, teacher: Outputs, batch: Any) -> Tensor:
        """:func:`hint_loss` of the connected student features against the teacher's."""
        s = student.features[self.student_layers[0]]
        t = teacher.features[self.teacher_layers[0]]
        return hint_loss(self.connector(s), t)


class AttentionTransfer(Term):
    r"""Attention transfer over pairs of layers: the sum of :func:`attention_loss` per pair.

    Args:
        pairs: ``(student_layer, teacher_layer)`` pairs of equal spatial size.
        p: The exponent of the attention maps.
        weight: The factor of this term; the paper's :math:`\beta / 2` with
            :math:`\beta = 1000` is the default.
    """

    def __init__(
        self, pairs: Sequence[tuple[str, str]], *, p: float = 2.0, weight: float = 500.0
    ) -> None:
        super().__init__(weight)
        pairs = list(pairs)
        if not pairs or not all(isinstance(q, (tuple, list)) and len(q) == 2 for q in pairs):
            raise WeightspaceValueError(
                f"`pairs` must be a non-empty list of (student_layer, teacher_layer), got {pairs!r}"
            )
        self.pairs = [(str(a), str(b)) for a, b in pairs]
        self.p = float(p)
        self.student_layers = tuple(a for a, _ in self.pairs)
        self.teacher_layers = tuple(b for _, b in self.pairs)

    def bind(self, student: nn.Module, teacher: nn.Module) -> None:
        """Resolve the layer names to full module names."""
        self.student_layers = tuple(resolve_module(student, a, "pairs") for a, _ in self.pairs)
        self.teacher_layers = tuple(resolve_module(teacher, b, "pairs") for _, b in self.pairs)

    def forward(self, student: Outputs, teacher: Outputs, batch: Any) -> Tensor:
        """The sum over pairs of :func:`attention_loss`."""
        losses = [
            attention_loss(student.features[a], teacher.features[b], p=self.p)
            for a, b in zip(self.student_layers, self.teacher_layers, strict=True)
        ]
        return torch.stack(losses).sum()


class OutputMatch(Term):
    """Output matching for regression and generative teachers, :func:`output_loss`.

    Args:
        kind: ``"mse"`` or ``"l1"``.
        weight: The factor of this term.
    """

    def __init__(self, kind: Literal["mse", "l1"] = "mse", *, weight: float = 1.0) -> None:
        super().__init__(weight)
        output_loss(torch.zeros(1), torch.zeros(1), kind=kind)  # validate
        self.kind: Literal["mse", "l1"] = kind

    def forward(self, student: Outputs, teacher: Outputs, batch: Any) -> Tensor:
        """:func:`output_loss` of the student's output against the teacher's."""
        return output_loss(
            _tensor(student.output, "student"), _tensor(teacher.output, "teacher"), kind=self.kind
        )

    def extra_repr(self) -> str:
        """The kind and weight."""
        return f"kind={self.kind!r}, weight={self.weight}"
