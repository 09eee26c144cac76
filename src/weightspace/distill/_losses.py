"""Distillation losses as small pure functions over tensors (see the package docstring)."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from weightspace._errors import ShapeMismatchError, WeightspaceValueError

__all__ = [
    "Reduction",
    "attention_loss",
    "attention_map",
    "dkd_loss",
    "hint_loss",
    "kd_loss",
    "output_loss",
]

Reduction = Literal["mean", "none"]
"""``"mean"``: the batch mean (a scalar); ``"none"``: one value per example."""


def _temperature(value: object) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value <= 0:  # type: ignore[operator]
        raise WeightspaceValueError(f"`temperature` must be a finite number > 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _reduction(value: object) -> Reduction:
    if value not in ("mean", "none"):
        raise WeightspaceValueError(f"`reduction` must be 'mean' or 'none', got {value!r}")
    return value


def _logits_pair(student: Tensor, teacher: Tensor) -> None:
    if student.ndim != 2 or student.shape != teacher.shape:
        raise ShapeMismatchError(
            "`student_logits` and `teacher_logits` must both have shape [N, classes], got "
            f"{list(student.shape)} and {list(teacher.shape)}; flatten extra dimensions into N"
        )


def _kl_rows(p_log_teacher: Tensor, p_log_student: Tensor) -> Tensor:
    """``sum_c p_t (log p_t - log p_s)`` per row, from log-probabilities (0 log 0 = 0)."""
    p_teacher = p_log_teacher.exp()
    terms = torch.where(
        p_teacher > 0, p_teacher * (p_log_teacher - p_log_student), p_teacher.new_zeros(())
    )
    return terms.sum(dim=1)


def _reduce(per_example: Tensor, reduction: Reduction) -> Tensor:
    return per_example.mean() if reduction == "mean" else per_example


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 4.0,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Hinton et al.'s knowledge-distillation loss, with the :math:`T^2` factor.

    .. math::

        \ell = T^2 \, \mathrm{KL}\big(\mathrm{softmax}(z_t / T) \,\|\,
        \mathrm{softmax}(z_s / T)\big)

    per example (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network",
    arXiv:1503.02531). The factor :math:`T^2` keeps the gradients' scale independent of the
    temperature, so the loss can be mixed with the cross-entropy on labels at any ``T``.

    Args:
        student_logits: The student's logits.
        teacher_logits: The teacher's logits (detach them: the teacher is not trained).
        temperature: The softmax temperature :math:`T > 0`.
        reduction: ``"mean"`` over the batch (the KL summed over classes, i.e. PyTorch's
            ``"batchmean"``) or ``"none"``.

    Returns:
        A scalar, or ``[N]`` with ``reduction="none"``.

    Shapes:
        ``student_logits``, ``teacher_logits``: ``[N, classes]``.

    Raises:
        ShapeMismatchError: if the two logits differ in shape or are not 2-D.
        WeightspaceValueError: on a bad ``temperature`` or ``reduction``.

    Example:
        >>> import math, torch
        >>> from weightspace import distill
        >>> s = torch.tensor([[0.0, 0.0]])
        >>> t = torch.tensor([[math.log(3.0), 0.0]])  # teacher: 0.75 / 0.25
        >>> round(distill.kd_loss(s, t, temperature=1.0).item(), 6)  # 0.75 ln 1.5 + 0.25 ln 0.5
        0.130812
    """
    _logits_pair(student_logits, teacher_logits)
    temp = _temperature(temperature)
    reduction = _reduction(reduction)
    log_s = F.log_softmax(student_logits / temp, dim=1)
    log_t = F.log_softmax(teacher_logits / temp, dim=1)
    return _reduce(_kl_rows(log_t, log_s) * temp**2, reduction)


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Decoupled knowledge distillation (Zhao et al., CVPR 2022, arXiv:2203.08679).

    The KD loss splits into a *target-class* part (TCKD: the binary distribution "target
    class or not") and a *non-target-class* part (NCKD: the distribution among the other
    classes), and DKD weighs them independently:

    .. math::

        \ell = \alpha\,T^2\,\mathrm{KL}(b^t \| b^s) + \beta\,T^2\,
        \mathrm{KL}(\hat p^t \| \hat p^s)

    with :math:`b = (p_y, 1 - p_y)` and :math:`\hat p_c = p_c / (1 - p_y)` for
    :math:`c \neq y`, all at temperature :math:`T`. Per example, Hinton's loss is
    :math:`\mathrm{TCKD} + (1 - p^t_y)\,\mathrm{NCKD}`: KD suppresses NCKD exactly where the
    teacher is confident, and DKD sets the two weights free. The paper's defaults are
    ``alpha=1``, ``beta=8``, ``T=4``.

    Args:
        student_logits: The student's logits.
        teacher_logits: The teacher's logits.
        targets: The true classes.
        alpha: Weight of TCKD (>= 0).
        beta: Weight of NCKD (>= 0).
        temperature: The softmax temperature :math:`T > 0`.
        reduction: ``"mean"`` over the batch or ``"none"``.

    Returns:
        A scalar, or ``[N]`` with ``reduction="none"``.

    Shapes:
        ``student_logits``, ``teacher_logits``: ``[N, classes]`` with at least 2 classes;
        ``targets``: ``[N]`` integer classes.

    Raises:
        ShapeMismatchError: on mismatched shapes.
        WeightspaceValueError: on a bad weight, temperature, reduction or target class.

    Example:
        >>> import torch
        >>> from weightspace import distill
        >>> z = torch.tensor([[2.0, 1.0, 0.0]])
        >>> distill.dkd_loss(z, z, torch.tensor([0])).item()  # same logits: nothing to learn
        0.0
    """
    _logits_pair(student_logits, teacher_logits)
    temp = _temperature(temperature)
    reduction = _reduction(reduction)
    for name, w in (("alpha", alpha), ("beta", beta)):
        ok = isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
        if not ok or w < 0:
            raise WeightspaceValueError(f"`{name}` must be a finite number >= 0, got {w!r}")
    n, classes = student_logits.shape
    if classes < 2:
        raise ShapeMismatchError(f"DKD needs at least 2 classes, got logits of shape {[n, 1]}")
    if targets.shape != (n,) or targets.dtype not in (torch.int64, torch.int32):
        raise ShapeMismatchError(
            f"`targets` must be integer classes of shape [{n}], got {targets.dtype} of shape "
            f"{list(targets.shape)}"
        )
    if n and (int(targets.min()) < 0 or int(targets.max()) >= classes):
        raise WeightspaceValueError(
            f"`targets` must lie in [0, {classes - 1}], got values from {int(targets.min())} "
            f"to {int(targets.max())}"
        )
    gt = F.one_hot(targets.long(), classes).bool()
    log_s = F.log_softmax(student_logits / temp, dim=1)
    log_t = F.log_softmax(teacher_logits / temp, dim=1)
    # Binary distributions (p_y, 1 - p_y), in log space; log1p(-p) is exact for small 1 - p.
    ls_y = log_s[gt]
    lt_y = log_t[gt]
    ls_rest = torch.logsumexp(log_s.masked_fill(gt, -math.inf), dim=1)
    lt_rest = torch.logsumexp(log_t.masked_fill(gt, -math.inf), dim=1)
    tckd = _kl_rows(torch.stack([lt_y, lt_rest], 1), torch.stack([ls_y, ls_rest], 1))
    # Distributions among the non-target classes: a softmax over the other logits only.
    rest_s = (student_logits / temp)[~gt].view(n, classes - 1)
    rest_t = (teacher_logits / temp)[~gt].view(n, classes - 1)
    nckd = _kl_rows(F.log_softmax(rest_t, dim=1), F.log_softmax(rest_s, dim=1))
    return _reduce((alpha * tckd + beta * nckd) * temp**2, reduction)


def hint_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    r"""FitNets' hint loss: the mean squared error between two feature tensors.

    ``student_features`` is the output of the connector (the *regressor* of Romero et al.,
    "FitNets: Hints for Thin Deep Nets", ICLR 2015, arXiv:1412.6550) that maps the student's
    hidden layer to the shape of the teacher's *hint* layer; see :class:`Hint`. The mean runs
    over every element (the paper's :math:`\frac12\|\cdot\|^2` up to a constant factor).

    Args:
        student_features: The (connected) student features.
        teacher_features: The teacher's features, of the same shape.

    Returns:
        A scalar.

    Raises:
        ShapeMismatchError: if the shapes differ (the message says to add a connector).

    Example:
        >>> import torch
        >>> from weightspace import distill
        >>> distill.hint_loss(torch.zeros(2, 2), torch.tensor([[1.0, 2.0], [0.0, 1.0]])).item()
        1.5
    """
    if student_features.shape != teacher_features.shape:
        raise ShapeMismatchError(
            f"hint features differ in shape: student {list(student_features.shape)}, teacher "
            f"{list(teacher_features.shape)}; give the Hint a `connector` (see "
            "distill.connector) that maps one to the other"
        )
    return F.mse_loss(student_features, teacher_features)


def attention_map(features: Tensor, *, p: float = 2.0) -> Tensor:
    r"""The spatial attention map of Zagoruyko and Komodakis (ICLR 2017, arXiv:1612.03928).

    .. math:: Q = \frac{\mathrm{vec}(F)}{\|\mathrm{vec}(F)\|_2}, \quad
              F_{hw} = \frac1C \sum_c |A_{chw}|^p

    Args:
        features: Activations with channels on dimension 1.
        p: The exponent (2 in the paper).

    Returns:
        The L2-normalised maps, flattened.

    Shapes:
        ``features``: ``[N, C, *spatial]`` (``[N, C]`` is allowed: one "position" per
        channel is not meaningful, so at least one spatial dimension is required) ->
        ``[N, prod(spatial)]``.

    Raises:
        ShapeMismatchError: if ``features`` has fewer than 3 dimensions.
        WeightspaceValueError: if ``p`` is not a finite number > 0.

    Example:
        >>> import torch
        >>> from weightspace import distill
        >>> a = torch.tensor([[[[3.0, 0.0], [0.0, 4.0]]]])  # one channel, 2x2
        >>> [round(v, 4) for v in distill.attention_map(a)[0].tolist()]  # (9, 0, 0, 16) / 18.36
        [0.4903, 0.0, 0.0, 0.8716]
    """
    if features.ndim < 3:
        raise ShapeMismatchError(
            f"`features` must have shape [N, C, *spatial], got {list(features.shape)}; use "
            "hint_loss for vectors"
        )
    ok = isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and p > 0
    if not ok:
        raise WeightspaceValueError(f"`p` must be a finite number > 0, got {p!r}")
    maps = features.abs().pow(p).mean(dim=1).flatten(1)
    return F.normalize(maps, dim=1)


def attention_loss(student_features: Tensor, teacher_features: Tensor, *, p: float = 2.0) -> Tensor:
    r"""Attention transfer: the mean squared difference of the two attention maps.

    ``((attention_map(s) - attention_map(t)) ** 2).mean()``, as in the authors' code; the
    paper multiplies it by :math:`\beta/2` with :math:`\beta = 1000` (set the
    :class:`AttentionTransfer` term's ``weight``). Channels may differ; the spatial sizes must
    match.

    Args:
        student_features: ``[N, C_s, *spatial]``.
        teacher_features: ``[N, C_t, *spatial]``.
        p: The exponent of :func:`attention_map`.

    Returns:
        A scalar.

    Raises:
        ShapeMismatchError: if the batch or spatial sizes differ.

    Example:
        >>> import torch
        >>> from weightspace import distill
        >>> s = torch.tensor([[[[1.0, 0.0]]]])  # maps (1, 0) and (0, 1)
        >>> t = torch.tensor([[[[0.0, 2.0]], [[0.0, 1.0]]]])
        >>> distill.attention_loss(s, t).item()  # ((1 - 0)^2 + (0 - 1)^2) / 2
        1.0
    """
    s_shape, t_shape = student_features.shape, teacher_features.shape
    if s_shape[:1] != t_shape[:1] or s_shape[2:] != t_shape[2:]:
        raise ShapeMismatchError(
            f"attention transfer needs the same batch and spatial sizes, got student "
            f"{list(s_shape)} and teacher {list(t_shape)}; pick layers of equal resolution or "
            "pool one of them"
        )
    return (
        (attention_map(student_features, p=p) - attention_map(teacher_features, p=p)).pow(2).mean()
    )


def output_loss(
    student_output: Tensor,
    teacher_output: Tensor,
    *,
    kind: Literal["mse", "l1"] = "mse",
) -> Tensor:
    """Output matching for regression and generative teachers: MSE or L1 to the teacher.

    The student imitates the teacher's output itself (a denoiser's prediction, a separated
    signal, a regression), the form knowledge distillation takes when there are no logits:
    progressive distillation of a diffusion sampler (Salimans and Ho, ICLR 2022) regresses
    the student on a target computed by the teacher.

    Args:
        student_output: The student's output.
        teacher_output: The teacher's output (or a target built from it), same shape.
        kind: ``"mse"`` (mean squared error) or ``"l1"`` (mean absolute error).

    Returns:
        A scalar.

    Raises:
        ShapeMismatchError: if the shapes differ.
        WeightspaceValueError: on an unknown ``kind``.

    Example:
        >>> import torch
        >>> from weightspace import distill
        >>> distill.output_loss(torch.zeros(4), torch.tensor([1.0, -1.0, 2.0, 0.0]), kind="l1")
        tensor(1.)
    """
    if student_output.shape != teacher_output.shape:
        raise ShapeMismatchError(
            f"`student_output` {list(student_output.shape)} and `teacher_output` "
            f"{list(teacher_output.shape)} must have the same shape"
        )
    if kind == "mse":
        return F.mse_loss(student_output, teacher_output)
    if kind == "l1":
        return F.l1_loss(student_output, teacher_output)
    raise WeightspaceValueError(f"`kind` must be 'mse' or 'l1', got {kind!r}")
