"""The distillation trainer: :class:`weightspace.train.Trainer` plus a frozen teacher."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from weightspace._errors import WeightspaceValueError
from weightspace.distill._capture import FeatureCapture, union
from weightspace.distill._terms import Outputs, Term, inputs_of
from weightspace.train import GradHook, OptimizerName, Trainer

__all__ = ["Distiller", "Forward"]

Forward = Callable[[nn.Module, Any], Any]
"""``forward(model, batch) -> output``: how a model is run on a batch."""


def _default_forward(model: nn.Module, batch: Any) -> Any:
    return model(inputs_of(batch))


class _Trained(nn.Module):
    """What the optimiser trains and the checkpoints hold: the student and the terms."""

    def __init__(self, student: nn.Module, terms: Sequence[Term]) -> None:
        super().__init__()
        self.student = student
        self.terms = nn.ModuleList(terms)


class Distiller(Trainer):
    r"""Train a student to imitate a frozen teacher (a trainer with a teacher in its loss).

    A :class:`~weightspace.train.Trainer` whose :meth:`compute_loss` adds the teacher.

    Each step runs the student (with its graph) and the teacher (in eval mode, under
    :func:`torch.no_grad`, its mode restored afterwards) on the same batch, captures the
    features that the terms ask for with forward hooks (:class:`FeatureCapture`), and
    minimises :math:`\sum_k w_k\,\ell_k`. Everything else is the trainer's: the seeded
    order, the progress bar, masks, gradient clipping, safetensors checkpoints with
    resume (which restore the student, the terms' connectors and the optimiser bit for bit)
    and data parallelism under ``torchrun`` with the same code.

    The optimiser trains the student and the terms' parameters (connectors); the teacher is
    never in the optimiser, never receives a gradient, and its BatchNorm statistics do not
    move. Under ``torchrun`` every rank starts from rank 0's student, connectors and teacher.

    Args:
        student: The network to train (in place).
        teacher: The trained network to imitate; it must not share parameters with the
            student.
        terms: The objective, e.g. ``[Task(weight=0.1), KD(4.0, weight=0.9)]``
            (:class:`Task`, :class:`KD`, :class:`DKD`, :class:`Hint`,
            :class:`AttentionTransfer`, :class:`OutputMatch`, or your own :class:`Term`).
        student_forward: ``forward(student, batch) -> output``; default
            ``student(batch[0])`` for a tuple batch, ``student(batch)`` otherwise.
        teacher_forward: The same for the teacher (e.g. two steps of a sampler, for
            progressive distillation).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        lr: Learning rate.
        weight_decay: The optimiser's weight decay.
        momentum: SGD momentum.
        trainable: Which parameters to train, in :func:`weightspace.select.parameters`'
            grammar over the names ``student.<name>`` and ``terms.<k>.<name>``; ``None``
            trains the student and every connector.
        masks: Parameter masks (names as for ``trainable``), see
            :class:`~weightspace.train.Trainer`.
        grad_hooks: Gradient hooks, see :class:`~weightspace.train.Trainer`.
        max_grad_norm: Clip the global gradient norm.
        seed: Seed of the order of the examples and of the student's randomness.
        distributed: As for :class:`~weightspace.train.Trainer`.

    Attributes:
        student: The student.
        teacher: The teacher.
        terms: The terms, as a :class:`torch.nn.ModuleList`.
        last_terms_: The unweighted value of each term at the last :meth:`compute_loss`,
            keyed ``"<index>:<class name>"``.

    Raises:
        WeightspaceValueError: on a bad argument (the message names it), a teacher that
            shares parameters with the student, or a term layer that names no submodule.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from weightspace import distill, train
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(256, 4)
        >>> y = (x[:, 0] > x[:, 1]).long()
        >>> teacher = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2))
        >>> _ = train.fit_(teacher, (x, y), epochs=30, lr=0.01)
        >>> student = nn.Linear(4, 2)
        >>> d = distill.Distiller(student, teacher, [distill.Task(weight=0.5),
        ...                                          distill.KD(2.0, weight=0.5)], lr=0.05)
        >>> history = d.fit((x, y), epochs=10, batch_size=32)
        >>> history.losses[-1] < history.losses[0], train.accuracy(student, (x, y)) > 0.9
        (True, True)
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        terms: Sequence[Term],
        *,
        student_forward: Forward | None = None,
        teacher_forward: Forward | None = None,
        optimizer: OptimizerName = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trainable: object = None,
        masks: Mapping[str, Tensor] | None = None,
        grad_hooks: Sequence[GradHook] = (),
        max_grad_norm: float | None = None,
        seed: int = 0,
        distributed: bool | None = None,
    ) -> None:
        for name, model in (("student", student), ("teacher", teacher)):
            if not isinstance(model, nn.Module):
                raise WeightspaceValueError(
                    f"`{name}` must be an nn.Module, got {type(model).__name__}"
                )
        shared = {id(p) for p in student.parameters()} & {id(p) for p in teacher.parameters()}
        if shared:
            raise WeightspaceValueError(
                f"`teacher` shares {len(shared)} parameter tensor(s) with `student`; pass a "
                "separate copy (copy.deepcopy) as the teacher"
            )
        terms = list(terms) if isinstance(terms, Sequence) else [terms]
        if not terms or not all(isinstance(t, Term) for t in terms):
            raise WeightspaceValueError(
                "`terms` must be a non-empty list of distill.Term (Task, KD, DKD, Hint, "
                f"AttentionTransfer, OutputMatch), got {terms!r}"
            )
        for name, fn in (("student_forward", student_forward),
                         ("teacher_forward", teacher_forward)):  # fmt: skip
            if fn is not None and not callable(fn):
                raise WeightspaceValueError(
                    f"`{name}` must be a callable (model, batch) -> output, got {type(fn).__name__}"
                )
        for term in terms:
            term.bind(student, teacher)
        super().__init__(
            _Trained(student, terms),
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            trainable=trainable,
            masks=masks,
            grad_hooks=grad_hooks,
            max_grad_norm=max_grad_norm,
            seed=seed,
            distributed=distributed,
        )
        self.student = student
        self.teacher = teacher
        self.terms: nn.ModuleList = self.model.terms  # type: ignore[assignment]
        self.student_forward: Forward = student_forward or _default_forward
        self.teacher_forward: Forward = teacher_forward or _default_forward
        self._student_layers = union(t.student_layers for t in terms)
        self._teacher_layers = union(t.teacher_layers for t in terms)
        self.last_terms_: dict[str, float] = {}
        if self.world_size > 1:
            import torch.distributed as dist

            with torch.no_grad():
                for t in teacher.state_dict().values():
                    dist.broadcast(t, src=0)

    @contextlib.contextmanager
    def _frozen_teacher(self) -> Iterator[None]:
        was = self.teacher.training
        self.teacher.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.teacher.train(was)

    def teacher_outputs(self, batch: Any) -> Outputs:
        """Run the frozen teacher on a batch: its output and the features the terms need.

        Args:
            batch: One batch, on the teacher's device.

        Returns:
            :class:`Outputs` without a graph.
        """
        with (
            self._frozen_teacher(),
            FeatureCapture(self.teacher, list(self._teacher_layers), detach=True) as cap,
        ):
            out = self.teacher_forward(self.teacher, batch)
        return Outputs(out, dict(cap.features))

    def compute_loss(self, batch: Any) -> Tensor:
        """The weighted sum of the terms on one batch (student with graph, teacher frozen).

        Args:
            batch: One batch, on the models' device.

        Returns:
            A scalar tensor attached to the student's (and connectors') graph.
        """
        with FeatureCapture(self.student, list(self._student_layers)) as cap:
            out = self.student_forward(self.student, batch)
        student = Outputs(out, dict(cap.features))
        teacher = self.teacher_outputs(batch)
        total: Tensor | None = None
        self.last_terms_ = {}
        for k, term in enumerate(self.terms):
            assert isinstance(term, Term)
            value = term(student, teacher, batch)
            if value.ndim != 0:
                raise WeightspaceValueError(
                    f"term {k} ({type(term).__name__}) returned shape {list(value.shape)}; a "
                    "term must return a scalar"
                )
            self.last_terms_[f"{k}:{type(term).__name__}"] = float(value.detach())
            weighted = value * term.weight
            total = weighted if total is None else total + weighted
        assert total is not None
        return total
