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

The attack that asks what unlearning should answer (:func:`holdout_mia`): can the model's
per-example loss tell the forget set (members) from held-out examples of the *same original
class* that the model never saw (non-members)? A model retrained without the forget set has
seen neither, so no attack separates them better than chance; a model that still remembers
its training examples gives them a lower loss than their unseen look-alikes. The labels do
not matter for the comparison (both sets carry the same one), which removes the problem above.
Protocol (a threshold attack on the loss, as in Yeom et al., CSF 2018, optionally calibrated
per example by a reference model, as in Watson et al., ICLR 2022):

1. Members and non-members are subsampled (seeded) to the same count and each split into
   two halves.
2. On one half of each, the attack picks the direction (lower or higher score = member) and
   the threshold that maximise its balanced accuracy; it is scored on the other halves; the
   roles swap and the two scores are averaged (two-fold cross-fitting, so the choice of the
   threshold does not inflate the accuracy).
3. :attr:`HoldoutMIAResult.attack_accuracy` is that held-out balanced accuracy: 0.5 for a
   model that treats the forget set as unseen data (retraining), above 0.5 when the forget
   set is still told apart (remembered, or, if its loss is *higher* than that of unseen
   look-alikes, over-forgotten: the "Streisand effect"). :attr:`HoldoutMIAResult.auc` gives
   the direction: the probability that a member has a lower score than a non-member.

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
from weightspace._deprecation import deprecated, warn_deprecated
from weightspace._errors import WeightspaceValueError
from weightspace.train._batches import Source, collect_pair, targets_of, to_device
from weightspace.train._evaluate import eval_mode

__all__ = [
    "HoldoutMIAResult",
    "MIAResult",
    "UnlearnReport",
    "accuracy",
    "evaluate",
    "holdout_mia",
    "membership_inference",
]

Feature = Literal["confidence", "loss", "entropy", "all"]
HoldoutScore = Literal["loss", "confidence"]


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
    feature: Feature = "confidence",
    max_samples: int | None = 2000,
    seed: int = 0,
    batch_size: int = 1024,
) -> MIAResult:
    r"""Fit a confidence-based membership-inference attack and apply it to ``target``.

    See the module notes for the protocol. Members and non-members are subsampled (seeded) to
    the same count, at most ``max_samples`` each; half of each trains the attack, half
    measures it.

    Read the efficacy only next to :attr:`MIAResult.attack_accuracy`: an attack at chance
    (near 0.5) has learnt no rule, and the fraction of targets it calls non-members is then
    arbitrary. To ask whether a model still remembers the forget set, :func:`holdout_mia` is
    the direct test.

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
        feature: ``"confidence"`` (log-odds of :math:`p_y`; the default), ``"loss"`` or
            ``"entropy"``. ``"all"`` (the three together, the default before 0.1) is
            deprecated: the three are nearly collinear, and when the attack is at chance its
            standardised weights are noise that the forget set's out-of-range features
            amplify, so the efficacy it gave could be anything (0.13 where
            ``"confidence"`` gave 1.0 on the same model, with the attack at 0.51).
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
    if feature == "all":
        warn_deprecated(
            'membership_inference(feature="all")',
            'membership_inference(feature="confidence") and holdout_mia',
            since="0.1",
        )
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
class HoldoutMIAResult:
    """The outcome of :func:`holdout_mia`.

    Attributes:
        attack_accuracy: Held-out balanced accuracy of the attack at telling the forget set
            from unseen examples of the same class (0.5: they look alike, as after retraining).
        auc: Probability that a forget example has a lower score (loss) than an unseen one
            (ties count half): above 0.5, the forget set is remembered; below, it is
            over-forgotten (its loss is higher than that of data never seen).
        n: Examples per side that the attack used.

    Example:
        >>> r = HoldoutMIAResult(attack_accuracy=0.51, auc=0.5, n=900)
        >>> f"attack {r.attack_accuracy:.0%}: no better than chance"
        'attack 51%: no better than chance'
    """

    attack_accuracy: float
    auc: float
    n: int


def _scores(model: nn.Module, data: tuple[Tensor, Tensor], score: HoldoutScore, arg: str) -> Tensor:
    logits, y = _logits(model, data, 1024, arg)
    logp = F.log_softmax(logits.to(torch.float64), dim=1)
    logp_y = logp.gather(1, y[:, None]).squeeze(1)
    if score == "loss":
        return -logp_y
    others = logp.scatter(1, y[:, None], float("-inf"))
    return -(logp_y - torch.logsumexp(others, dim=1)).clamp(-1e4, 1e4)


def _best_threshold(member: Tensor, non_member: Tensor) -> tuple[float, float]:
    """Direction (+1: a lower score is a member) and threshold of the best balanced accuracy."""
    values = torch.cat([member, non_member])
    is_member = torch.cat([torch.ones_like(member), torch.zeros_like(non_member)])
    order = torch.argsort(values, stable=True)
    v, m = values[order], is_member[order]
    # Cut after position k (k = 0..N): "member" = the k lowest scores.
    tp = torch.cat([torch.zeros(1, dtype=m.dtype), m.cumsum(0)])
    fp = torch.cat([torch.zeros(1, dtype=m.dtype), (1 - m).cumsum(0)])
    tpr, fpr = tp / member.numel(), fp / non_member.numel()
    # Only cut between distinct values (and at the two ends).
    ok = torch.ones(v.numel() + 1, dtype=torch.bool)
    ok[1:-1] = v[1:] != v[:-1]
    low = torch.where(ok, 0.5 * (1 + tpr - fpr), torch.tensor(-1.0, dtype=tpr.dtype))
    high = torch.where(ok, 0.5 * (1 - tpr + fpr), torch.tensor(-1.0, dtype=tpr.dtype))
    k_low, k_high = int(low.argmax()), int(high.argmax())
    direction, k = (1.0, k_low) if low[k_low] >= high[k_high] else (-1.0, k_high)
    edges = torch.cat([v[:1] - 1.0, v, v[-1:] + 1.0])
    threshold = 0.5 * float(edges[k] + edges[k + 1])
    return direction, threshold


def _balanced_accuracy(
    member: Tensor, non_member: Tensor, direction: float, threshold: float
) -> float:
    def called_member(t: Tensor) -> Tensor:
        return (direction * (t - threshold)) < 0

    tpr = called_member(member).to(torch.float64).mean()
    tnr = (~called_member(non_member)).to(torch.float64).mean()
    return float(0.5 * (tpr + tnr))


def holdout_mia(
    model: nn.Module,
    *,
    forget: train.Data,
    holdout: train.Data,
    score: HoldoutScore = "loss",
    reference: nn.Module | None = None,
    max_samples: int | None = None,
    seed: int = 0,
) -> HoldoutMIAResult:
    r"""Can the model tell the forget set from unseen examples of the same class?

    The membership-inference test of unlearning (see the module notes for the protocol): the
    *members* are the forget examples, the *non-members* held-out examples of the same
    original class(es) with the same labels, so that a model retrained without the forget set
    has no way to tell them apart. A per-example score (the loss at the given label, or the
    negative log-odds ``"confidence"``) is thresholded, with the direction and threshold
    fitted on one half of each set and the accuracy measured on the other (two folds).

    Args:
        model: The classifier under attack (not modified).
        forget: ``(inputs, targets)`` the model was trained on and should have forgotten, in
            any form of :func:`weightspace.train.batches`.
        holdout: ``(inputs, targets)`` of the same class(es), never trained on (e.g. test
            examples of the forgotten class, with the same labels as ``forget``).
        score: ``"loss"`` (cross-entropy at the label) or ``"confidence"`` (minus the log-odds
            of :math:`p_y`; a monotone function of the loss for a single example, kept for
            symmetry with :func:`membership_inference`).
        reference: A model that saw neither set (e.g. one trained on other data of the same
            kind). If given, each score is calibrated by subtracting the reference model's
            score on the same example (difficulty calibration, Watson et al., ICLR 2022), so
            that examples that are hard for any model do not pass for non-members.
        max_samples: Cap on examples per side (``None``: all of the smaller set).
        seed: Seed of the subsampling and of the split into halves.

    Returns:
        A :class:`HoldoutMIAResult`.

    Raises:
        WeightspaceValueError: if ``score`` is unknown, ``max_samples`` is not an int >= 4 or
            ``None``, or a set has fewer than 4 examples.

    Example:
        A "model" (the identity on logits) that is sure of the examples it was trained on and
        unsure of unseen ones is caught; one that treats both alike is not.

        >>> import torch
        >>> from torch import nn
        >>> y = torch.zeros(40, dtype=torch.long)
        >>> sure = torch.tensor([[6.0, 0.0]]).repeat(40, 1)
        >>> unsure = torch.tensor([[0.5, 0.0]]).repeat(40, 1)
        >>> holdout_mia(nn.Identity(), forget=(sure, y), holdout=(unsure, y)).attack_accuracy
        1.0
        >>> holdout_mia(nn.Identity(), forget=(unsure, y), holdout=(unsure, y)).attack_accuracy
        0.5
    """
    if score not in ("loss", "confidence"):
        raise WeightspaceValueError(f"`score` must be 'loss' or 'confidence', got {score!r}")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 4
    ):
        raise WeightspaceValueError(
            f"`max_samples` must be an int >= 4 or None, got {max_samples!r}"
        )
    if reference is not None and not isinstance(reference, nn.Module):
        raise WeightspaceValueError(
            f"`reference` must be an nn.Module or None, got {type(reference).__name__}"
        )
    f = collect_pair(forget, "forget")
    h = collect_pair(holdout, "holdout")
    n = min(f[0].shape[0], h[0].shape[0])
    if max_samples is not None:
        n = min(n, max_samples)
    if n < 4:
        raise WeightspaceValueError(
            f"the attack needs at least 4 examples in `forget` and in `holdout`, got {n}; pass "
            "more data"
        )
    gen = torch.Generator().manual_seed(seed)
    fi = torch.randperm(f[0].shape[0], generator=gen)[:n]
    hi = torch.randperm(h[0].shape[0], generator=gen)[:n]
    fs, hs = (f[0][fi], f[1][fi]), (h[0][hi], h[1][hi])
    sf, sh = _scores(model, fs, score, "forget"), _scores(model, hs, score, "holdout")
    if reference is not None:
        sf = sf - _scores(reference, fs, score, "forget")
        sh = sh - _scores(reference, hs, score, "holdout")
    half = n // 2
    folds = [(slice(0, half), slice(half, n)), (slice(half, n), slice(0, half))]
    accs = []
    for fit, test in folds:
        direction, threshold = _best_threshold(sf[fit], sh[fit])
        accs.append(_balanced_accuracy(sf[test], sh[test], direction, threshold))
    less = (sf[:, None] < sh[None, :]).to(torch.float64).mean()
    ties = (sf[:, None] == sh[None, :]).to(torch.float64).mean()
    return HoldoutMIAResult(
        attack_accuracy=0.5 * (accs[0] + accs[1]), auc=float(less + 0.5 * ties), n=n
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
        mia_attack_accuracy: :attr:`MIAResult.attack_accuracy` of that attack (members: the
            retain set, non-members: the test set); read the efficacy only when it is clearly
            above 0.5.
        holdout_mia_accuracy: :attr:`HoldoutMIAResult.attack_accuracy` of :func:`holdout_mia`
            (forget set against ``forget_test``; ``None`` if either is not given or not run):
            0.5 means the forget set looks like unseen data of its class, as after retraining.
        holdout_mia_auc: :attr:`HoldoutMIAResult.auc` of the same attack.

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
    mia_attack_accuracy: float | None = None
    holdout_mia_accuracy: float | None = None
    holdout_mia_auc: float | None = None

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
    """Measure an unlearned model: accuracies and two membership-inference attacks.

    Accuracies are :func:`weightspace.train.accuracy`; every set may come in any form of
    :func:`weightspace.train.batches`. The efficacy is :func:`membership_inference` with the
    retain set as members, the test set as non-members and ``forget`` as target, with the
    labels ``forget`` carries (read its notes before comparing methods that give the
    forgotten class's output to a new class), and the report carries that attack's own
    accuracy. With ``forget_test``, :func:`holdout_mia` also asks whether the forget set can
    be told from unseen examples of its class: the test of remembering that a retrained model
    passes (accuracy near 0.5).

    Args:
        model: The classifier (not modified).
        forget: The forget set with its original labels.
        retain: The retain set (members for the attack).
        test: Held-out examples of the kept classes (non-members for the attack).
        new: Held-out examples of the new class with its new labels.
        forget_test: Held-out examples of the forgotten class with their original labels
            (the non-members of :func:`holdout_mia`).
        mia: Run the attacks (:func:`membership_inference` on ``forget``, and
            :func:`holdout_mia` if ``forget_test`` is given).
        mia_samples: ``max_samples`` of :func:`membership_inference`.
        seed: Seed of the attacks' subsampling.
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
    efficacy = attack_acc = holdout_acc = holdout_auc = None
    if mia:
        attack = membership_inference(
            model,
            members=retain,
            non_members=test,
            target=forget,
            max_samples=mia_samples,
            seed=seed,
            batch_size=batch_size,
        )
        efficacy, attack_acc = attack.efficacy, attack.attack_accuracy
        if forget_test is not None:
            same_class = holdout_mia(model, forget=forget, holdout=forget_test, seed=seed)
            holdout_acc, holdout_auc = same_class.attack_accuracy, same_class.auc
    result = UnlearnReport(
        forget_accuracy=forget_acc,
        retain_accuracy=accuracy(model, retain, batch_size=batch_size),
        test_accuracy=accuracy(model, test, batch_size=batch_size),
        new_accuracy=new_acc,
        forget_test_accuracy=ft_acc,
        mia_efficacy=efficacy,
        mia_attack_accuracy=attack_acc,
        holdout_mia_accuracy=holdout_acc,
        holdout_mia_auc=holdout_auc,
    )
    if not all(math.isfinite(v) for v in result.as_dict().values() if v is not None):
        raise WeightspaceValueError(f"a metric is not finite: {result}")
    return result
