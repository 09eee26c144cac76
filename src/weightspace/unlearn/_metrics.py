r"""What the unlearning literature reports: accuracies and membership inference on the forget set.

Membership-inference protocol (:func:`membership_inference`), as in the "MIA-efficacy" of
Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023
(`arXiv:2304.04934 <https://arxiv.org/abs/2304.04934>`_) and SalUn (Fan et al., ICLR 2024,
`arXiv:2310.12508 <https://arxiv.org/abs/2310.12508>`_), with the confidence features of
Song & Mittal, "Systematic Evaluation of Privacy Risks of Machine Learning Models", USENIX
Security 2021:

1. For every example, the model's output gives features computed at the example's label
   :math:`y`: the scaled-logit confidence :math:`z_y - \log\sum_{k\ne y} e^{z_k}` (the
   log-odds of :math:`p_y`), the loss :math:`-\log p_y` and the entropy of :math:`p`.
2. A logistic-regression attack is fitted (full-batch L-BFGS on standardised features) to tell
   *members* (retain examples, which the model was trained on) from *non-members* (test
   examples), balanced by subsampling to the same count; half of each is held out to measure
   the attack's own accuracy.
3. The attack is applied to the forget set. **MIA efficacy** is the fraction of forget
   examples it calls non-members: near 1 for a model that never saw them (retraining), lower
   for one that still remembers them.

What it measures, exactly: every feature is read at the label the target data carries, so the
attack asks "is the model as sure of *this label* as it is of a training example's label?".
:func:`evaluate` passes the forget set with the labels it is given. When a new class takes the
forgotten class's output (replacement "in its place", as in the project-1 study), that label
is the new class's output: a model that has forgotten the old class and learnt the new one is
unsure of it on the forget set for that reason alone, so the efficacy then mostly re-measures
``1 - forget accuracy`` and reads close to 1 for every method that forgets, whatever the
model remembers. The attack's own accuracy (:attr:`MIAResult.attack_accuracy`) says whether
it separates members from non-members at all.

Accuracy is :func:`weightspace.train.accuracy`; every metric takes data in the batching
contract of :func:`weightspace.train.batches`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace import train
from weightspace._deprecation import deprecated
from weightspace._errors import WeightspaceValueError
from weightspace.train._batches import Source, collect_pair, targets_of, to_device
from weightspace.train._evaluate import eval_mode

__all__ = ["MIAResult", "UnlearnReport", "accuracy", "evaluate", "membership_inference"]

Feature = Literal["confidence", "loss", "entropy", "all"]


def _logits(
    model: nn.Module, data: train.Data, batch_size: int, argument: str
) -> tuple[Tensor, Tensor]:
    if not isinstance(model, nn.Module):
        raise WeightspaceValueError(f"`model` must be an nn.Module, got {type(model).__name__}")
    outs: list[Tensor] = []
    ys: list[Tensor] = []
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with eval_mode(model):
        for batch in Source(data, None, argument).iterate(batch_size):
            y = targets_of(batch, argument)
            outs.append(model(to_device(batch[0], device)).to(torch.float32).cpu())
            ys.append(y.cpu())
    return torch.cat(outs), torch.cat(ys)


accuracy = deprecated(
    since="0.1", alternative="weightspace.train.accuracy", name="weightspace.unlearn.accuracy"
)(train.accuracy)


def _features(logits: Tensor, y: Tensor, feature: Feature) -> Tensor:
    logp = F.log_softmax(logits.to(torch.float64), dim=1)
    logp_y = logp.gather(1, y[:, None]).squeeze(1)
    others = logp.scatter(1, y[:, None], float("-inf"))
    confidence = logp_y - torch.logsumexp(others, dim=1)
    entropy = -(logp.exp() * logp).nan_to_num(0.0).sum(1)
    cols = {"confidence": [confidence], "loss": [-logp_y], "entropy": [entropy]}
    if feature == "all":
        stacked = torch.stack([confidence, -logp_y, entropy], dim=1)
    else:
        stacked = torch.stack(cols[feature], dim=1)
    return stacked.clamp(-1e4, 1e4)


@dataclass(frozen=True)
class MIAResult:
    """The outcome of :func:`membership_inference`.

    Attributes:
        efficacy: Fraction of the target examples the attack calls non-members.
        attack_accuracy: Balanced accuracy of the attack on held-out members and non-members
            (0.5 means the model leaks nothing the attack can use).
        n_target: Number of target examples.

    Example:
        >>> r = MIAResult(efficacy=0.98, attack_accuracy=0.51, n_target=1000)
        >>> f"{r.efficacy:.0%} of the forget set looks unseen"
        '98% of the forget set looks unseen'
    """

    efficacy: float
    attack_accuracy: float
    n_target: int


def _fit_logistic(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=50, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ w + b, y) + 1e-4 * w.square().sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    return w.detach(), b.detach()


def membership_inference(
    model: nn.Module,
    *,
    members: train.Data,
    non_members: train.Data,
    target: train.Data,
    feature: Feature = "all",
    max_samples: int | None = 2000,
    seed: int = 0,
    batch_size: int = 1024,
) -> MIAResult:
    r"""Fit a confidence-based membership-inference attack and apply it to ``target``.

    See the module notes for the protocol. Members and non-members are subsampled (seeded) to
    the same count, at most ``max_samples`` each; half of each trains the attack, half
    measures it.

    What the efficacy measures: the fraction of ``target`` examples whose features, read at
    the labels ``target`` carries, look like those of the non-members (to a logistic
    regression fitted on them). It is a statement about the model's confidence in *those
    labels*: give the forget set its original labels to ask whether the model still holds
    them as it holds training examples. If the forgotten class's output has been handed to a
    new class, the original label is the new class's output, and the efficacy then mostly
    re-measures ``1 - forget accuracy`` (see the module notes).

    Args:
        model: The classifier under attack (not modified).
        members: ``(inputs, targets)`` the model was trained on (e.g. the retain set), in any
            form of :func:`weightspace.train.batches`.
        non_members: ``(inputs, targets)`` it was not trained on (e.g. the test set).
        target: ``(inputs, targets)`` whose membership is judged (e.g. the forget set, with
            its original labels).
        feature: ``"confidence"`` (log-odds of :math:`p_y`), ``"loss"``, ``"entropy"`` or
            ``"all"`` three.
        max_samples: Cap on examples per class of the attack's data (``None``: no cap).
        seed: Seed of the subsampling and split.
        batch_size: Batch size of the forward passes.

    Returns:
        An :class:`MIAResult`.

    Raises:
        WeightspaceValueError: if a set is empty or has fewer than 2 examples for the attack,
            or ``feature`` is unknown.

    Example:
        A "model" (the identity on logits) that is sure of its members' labels and unsure of
        everything else: the attack separates the two perfectly, calls every unsure target a
        non-member and every sure one a member.

        >>> import torch
        >>> from torch import nn
        >>> g = torch.Generator().manual_seed(0)
        >>> y = torch.randint(0, 3, (40,), generator=g)
        >>> sure = 8.0 * nn.functional.one_hot(y, 3).float()
        >>> unsure = 0.1 * torch.randn(40, 3, generator=g)
        >>> attack = {"members": (sure, y), "non_members": (unsure, y)}
        >>> r = membership_inference(nn.Identity(), **attack, target=(unsure[:10], y[:10]))
        >>> r.efficacy, r.attack_accuracy, r.n_target
        (1.0, 1.0, 10)
        >>> membership_inference(nn.Identity(), **attack, target=(sure[:10], y[:10])).efficacy
        0.0
    """
    if feature not in ("confidence", "loss", "entropy", "all"):
        raise WeightspaceValueError(
            f"`feature` must be 'confidence', 'loss', 'entropy' or 'all', got {feature!r}"
        )
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2
    ):
        raise WeightspaceValueError(
            f"`max_samples` must be an int >= 2 or None, got {max_samples!r}"
        )
    m = collect_pair(members, "members")
    nm = collect_pair(non_members, "non_members")
    tg = collect_pair(target, "target")
    gen = torch.Generator().manual_seed(seed)
    n = min(m[0].shape[0], nm[0].shape[0])
    if max_samples is not None:
        n = min(n, max_samples)
    if n < 2:
        raise WeightspaceValueError(
            f"the attack needs at least 2 members and 2 non-members, got {n}; pass more data"
        )
    mi = torch.randperm(m[0].shape[0], generator=gen)[:n]
    ni = torch.randperm(nm[0].shape[0], generator=gen)[:n]
    fm = _features(*_logits(model, (m[0][mi], m[1][mi]), batch_size, "members"), feature)
    fn = _features(*_logits(model, (nm[0][ni], nm[1][ni]), batch_size, "non_members"), feature)
    ft = _features(*_logits(model, tg, batch_size, "target"), feature)
    half = n // 2
    train_x = torch.cat([fm[:half], fn[:half]])
    train_y = torch.cat([torch.ones(half), torch.zeros(half)]).to(torch.float64)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-8)

    def z(t: Tensor) -> Tensor:
        return (t - mean) / std

    w, b = _fit_logistic(z(train_x), train_y)

    def member(t: Tensor) -> Tensor:
        return (z(t) @ w + b) > 0

    tpr = float(member(fm[half:]).to(torch.float64).mean())
    tnr = float((~member(fn[half:])).to(torch.float64).mean())
    efficacy = float((~member(ft)).to(torch.float64).mean())
    return MIAResult(
        efficacy=efficacy, attack_accuracy=0.5 * (tpr + tnr), n_target=int(ft.shape[0])
    )


@dataclass(frozen=True)
class UnlearnReport:
    """The numbers of one unlearned model, as :func:`evaluate` measures them.

    Attributes:
        forget_accuracy: Accuracy on the forget set with its original labels (lower is more
            forgetting; compare with retraining, not with 0).
        retain_accuracy: Accuracy on the retain set.
        test_accuracy: Accuracy on held-out examples of the kept classes.
        new_accuracy: Accuracy on held-out examples of the new class (``None`` if not given).
        forget_test_accuracy: Accuracy on held-out examples of the forgotten class with their
            original labels (``None`` if not given).
        mia_efficacy: :attr:`MIAResult.efficacy` on the forget set with the labels it was
            given (``None`` if not run; see :func:`membership_inference` for what it measures).

    Example:
        >>> r = UnlearnReport(forget_accuracy=0.01, retain_accuracy=0.98, test_accuracy=0.96)
        >>> r.as_dict()["retain_accuracy"], r.new_accuracy is None
        (0.98, True)
    """

    forget_accuracy: float
    retain_accuracy: float
    test_accuracy: float
    new_accuracy: float | None = None
    forget_test_accuracy: float | None = None
    mia_efficacy: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        """Return the fields as a dict (for JSON and tables).

        Returns:
            ``field name -> value``.
        """
        return asdict(self)


def evaluate(
    model: nn.Module,
    *,
    forget: train.Data,
    retain: train.Data,
    test: train.Data,
    new: train.Data | None = None,
    forget_test: train.Data | None = None,
    mia: bool = True,
    mia_samples: int = 2000,
    seed: int = 0,
    batch_size: int = 1024,
) -> UnlearnReport:
    """Measure an unlearned model: forget / retain / test / new-class accuracy and MIA efficacy.

    Accuracies are :func:`weightspace.train.accuracy`; every set may come in any form of
    :func:`weightspace.train.batches`. The efficacy is :func:`membership_inference` with the
    retain set as members, the test set as non-members and ``forget`` as target, with the
    labels ``forget`` carries (read its notes before comparing methods that give the
    forgotten class's output to a new class).

    Args:
        model: The classifier (not modified).
        forget: The forget set with its original labels.
        retain: The retain set (members for the attack).
        test: Held-out examples of the kept classes (non-members for the attack).
        new: Held-out examples of the new class with its new labels.
        forget_test: Held-out examples of the forgotten class with their original labels.
        mia: Run :func:`membership_inference` on ``forget``.
        mia_samples: ``max_samples`` of the attack.
        seed: Seed of the attack's subsampling.
        batch_size: Batch size of the forward passes.

    Returns:
        An :class:`UnlearnReport`.

    Raises:
        WeightspaceValueError: if a set is empty or malformed.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 3)
        >>> d = (torch.randn(12, 2), torch.randint(0, 3, (12,)))
        >>> evaluate(net, forget=d, retain=d, test=d, mia=False).mia_efficacy is None
        True
    """
    accuracy = train.accuracy
    forget_acc = accuracy(model, forget, batch_size=batch_size)
    new_acc = accuracy(model, new, batch_size=batch_size) if new is not None else None
    ft_acc = (
        accuracy(model, forget_test, batch_size=batch_size) if forget_test is not None else None
    )
    efficacy = None
    if mia:
        efficacy = membership_inference(
            model,
            members=retain,
            non_members=test,
            target=forget,
            max_samples=mia_samples,
            seed=seed,
            batch_size=batch_size,
        ).efficacy
    result = UnlearnReport(
        forget_accuracy=forget_acc,
        retain_accuracy=accuracy(model, retain, batch_size=batch_size),
        test_accuracy=accuracy(model, test, batch_size=batch_size),
        new_accuracy=new_acc,
        forget_test_accuracy=ft_acc,
        mia_efficacy=efficacy,
    )
    if not all(math.isfinite(v) for v in result.as_dict().values() if v is not None):
        raise WeightspaceValueError(f"a metric is not finite: {result}")
    return result
