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
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace._errors import WeightspaceValueError
from weightspace.saliency._batches import Data, as_pair, iter_batches

__all__ = ["MIAResult", "UnlearnReport", "accuracy", "evaluate", "membership_inference"]

Feature = Literal["confidence", "loss", "entropy", "all"]


def _logits(model: nn.Module, data: Data, batch_size: int, argument: str) -> tuple[Tensor, Tensor]:
    if not isinstance(model, nn.Module):
        raise WeightspaceValueError(f"`model` must be an nn.Module, got {type(model).__name__}")
    was_training = model.training
    model.eval()
    outs: list[Tensor] = []
    ys: list[Tensor] = []
    try:
        with torch.no_grad():
            for x, y in iter_batches(data, argument, batch_size):
                outs.append(model(x).to(torch.float32))
                ys.append(y)
    finally:
        model.train(was_training)
    return torch.cat(outs), torch.cat(ys)


def accuracy(model: nn.Module, data: Data, *, batch_size: int = 1024) -> float:
    """Return the fraction of examples whose arg-max output is their target.

    Args:
        model: A classifier returning logits ``[N, classes]`` (run in eval mode, then its mode
            is restored).
        data: ``(inputs, targets)`` tensors or an iterable of such batches.
        batch_size: Batch size when ``data`` is a pair of tensors.

    Returns:
        The accuracy in ``[0, 1]``.

    Raises:
        WeightspaceValueError: if ``data`` is empty or malformed.

    Shapes:
        - inputs: ``[N, *]``; targets: ``[N]`` int64.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> 0.0 <= accuracy(net, (torch.randn(10, 2), torch.zeros(10, dtype=torch.long))) <= 1.0
        True
    """
    logits, y = _logits(model, data, batch_size, "data")
    return float((logits.argmax(1) == y).to(torch.float64).mean())


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
    members: tuple[Tensor, Tensor],
    non_members: tuple[Tensor, Tensor],
    target: tuple[Tensor, Tensor],
    feature: Feature = "all",
    max_samples: int | None = 2000,
    seed: int = 0,
    batch_size: int = 1024,
) -> MIAResult:
    r"""Fit a confidence-based membership-inference attack and apply it to ``target``.

    See the module notes for the protocol. Members and non-members are subsampled (seeded) to
    the same count, at most ``max_samples`` each; half of each trains the attack, half
    measures it.

    Args:
        model: The classifier under attack (not modified).
        members: ``(inputs, targets)`` the model was trained on (e.g. the retain set).
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
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> data = (torch.randn(20, 2), torch.randint(0, 2, (20,)))
        >>> r = membership_inference(net, members=data, non_members=data, target=data)
        >>> 0.0 <= r.efficacy <= 1.0
        True
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
    m = as_pair(members, "members")
    nm = as_pair(non_members, "non_members")
    tg = as_pair(target, "target")
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
        mia_efficacy: :attr:`MIAResult.efficacy` on the forget set (``None`` if not run).

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
    forget: tuple[Tensor, Tensor],
    retain: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    new: tuple[Tensor, Tensor] | None = None,
    forget_test: tuple[Tensor, Tensor] | None = None,
    mia: bool = True,
    mia_samples: int = 2000,
    seed: int = 0,
    batch_size: int = 1024,
) -> UnlearnReport:
    """Measure an unlearned model: forget / retain / test / new-class accuracy and MIA efficacy.

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
