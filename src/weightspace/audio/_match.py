"""Fit synthesizer parameters to a target sound under a fixed budget of renders.

Three search methods share one contract, so that they can be compared at equal cost: each
gets a target waveform, a :class:`~weightspace.audio.Synth` and a number of renders, and
returns the best parameters it rendered, with the best distance after every render.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from weightspace._errors import WeightspaceValueError
from weightspace._optional import require_module
from weightspace.audio._losses import spectral_distance
from weightspace.audio._synth import Synth

__all__ = ["MatchResult", "match"]

logger = logging.getLogger(__name__)

Distance = Callable[[Tensor, Tensor], Tensor]
"""``distance(candidates [B, T], target [1, T]) -> [B]``, lower is better."""

METHODS = ("random", "cma", "gradient")


@dataclass(frozen=True)
class MatchResult:
    """The outcome of :func:`match`.

    Attributes:
        params: Best normalised parameters found, ``[P]``.
        distance: Their distance to the target.
        curve: Best distance after each render, ``[renders]`` (non-increasing).
        renders: Number of renders spent (the budget).
        method: The search method.
        seconds: Wall-clock time of the search.
    """

    params: Tensor
    distance: float
    curve: Tensor
    renders: int
    method: str
    seconds: float


class _Tracker:
    """Keeps the best candidate and the best-so-far curve while renders are counted."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.curve: list[float] = []
        self.best = math.inf
        self.best_params: Tensor | None = None

    @property
    def left(self) -> int:
        return self.budget - len(self.curve)

    def add(self, params: Tensor, distances: Tensor) -> None:
        for p, d in zip(params.detach(), distances.detach().tolist(), strict=True):
            value = d if math.isfinite(d) else math.inf
            if value < self.best or self.best_params is None:
                self.best, self.best_params = value, p.clone()
            self.curve.append(self.best)


def match(
    target: Tensor,
    synth: Synth,
    *,
    method: Literal["random", "cma", "gradient"] = "cma",
    budget: int = 200,
    seed: int = 0,
    distance: Distance | None = None,
    init: Tensor | None = None,
    batch_size: int = 16,
    sigma: float = 0.3,
    lr: float = 0.05,
    restarts: int = 4,
) -> MatchResult:
    r"""Search the synthesizer's parameters that render closest to ``target``.

    Methods, each charged one render per candidate it synthesises:

    * ``"random"``: uniform samples of the normalised parameters, ``batch_size`` at a time.
    * ``"cma"``: CMA-ES (Hansen, the ``cma`` package) in the normalised box, bounds [0, 1],
      initial mean ``init`` (default the box's centre), step size ``sigma``, default
      population size :math:`4 + \lfloor 3 \ln P \rfloor` (= 12 for 16 parameters).
    * ``"gradient"``: Adam with learning rate ``lr`` on the logits of the normalised parameters,
      from ``restarts`` random starts (the first at ``init`` when given; starts are clipped to
      [0.02, 0.98] so that their logits are finite) run in parallel: each
      step renders every start once (a forward and a backward pass, counted as one render,
      which costs about three forward renders of time).

    Args:
        target: Target waveform, ``[T]`` with ``T = synth.num_samples``.
        synth: The synthesizer.
        method: ``"random"``, ``"cma"`` or ``"gradient"``.
        budget: Number of renders, positive.
        seed: Seed of every random choice.
        distance: ``distance(candidates [B, T], target [1, T]) -> [B]``; defaults to
            :func:`~weightspace.audio.spectral_distance`. ``"gradient"`` needs it
            differentiable.
        init: Starting normalised parameters ``[P]`` for ``"cma"`` and ``"gradient"``.
        batch_size: Candidates rendered per call for ``"random"``.
        sigma: Initial CMA-ES step size in normalised units.
        lr: Adam learning rate for ``"gradient"``.
        restarts: Parallel starts for ``"gradient"``.

    Returns:
        A :class:`MatchResult` whose ``curve`` has exactly ``budget`` entries.

    Raises:
        WeightspaceValueError: on an unknown method or a bad argument.
        MissingSourceError: for ``"cma"`` without the ``cma`` package.

    Example:
        >>> synth = Synth(duration=0.25)
        >>> target = synth.render(synth.sample(1, seed=3)[0])
        >>> result = match(target, synth, method="random", budget=32, seed=0)
        >>> result.curve.shape, bool(result.curve[-1] <= result.curve[0])
        (torch.Size([32]), True)
    """
    if method not in METHODS:
        raise WeightspaceValueError(f"`method` must be one of {METHODS}, got {method!r}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise WeightspaceValueError(f"`budget` must be a positive integer, got {budget!r}")
    if not isinstance(target, Tensor) or tuple(target.shape) != (synth.num_samples,):
        shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise WeightspaceValueError(
            f"`target` must be a waveform of shape [{synth.num_samples}] (the synth's length), "
            f"got {shape}"
        )
    if init is not None and tuple(init.shape) != (synth.num_params,):
        raise WeightspaceValueError(
            f"`init` must have shape [{synth.num_params}], got {tuple(init.shape)}"
        )
    dist: Distance = distance if distance is not None else spectral_distance
    tgt = target.detach().float().unsqueeze(0)
    tracker = _Tracker(budget)
    start = time.perf_counter()
    if method == "random":
        _random(tracker, synth, tgt, dist, seed, batch_size)
    elif method == "cma":
        _cma(tracker, synth, tgt, dist, seed, init, sigma)
    else:
        _gradient(tracker, synth, tgt, dist, seed, init, lr, restarts)
    assert tracker.best_params is not None
    return MatchResult(
        params=tracker.best_params,
        distance=tracker.best,
        curve=torch.tensor(tracker.curve, dtype=torch.float32),
        renders=budget,
        method=method,
        seconds=time.perf_counter() - start,
    )


def _random(
    tracker: _Tracker, synth: Synth, tgt: Tensor, dist: Distance, seed: int, batch_size: int
) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise WeightspaceValueError(f"`batch_size` must be a positive integer, got {batch_size!r}")
    gen = torch.Generator().manual_seed(int(seed))
    while tracker.left > 0:
        x = torch.rand(min(batch_size, tracker.left), synth.num_params, generator=gen)
        with torch.no_grad():
            tracker.add(x, dist(synth.render(x), tgt))


def _cma(
    tracker: _Tracker,
    synth: Synth,
    tgt: Tensor,
    dist: Distance,
    seed: int,
    init: Tensor | None,
    sigma: float,
) -> None:
    cma = require_module("cma", pip="cma", extra="rl")
    if not (math.isfinite(sigma) and sigma > 0):
        raise WeightspaceValueError(f"`sigma` must be a positive number, got {sigma!r}")
    x0 = [0.5] * synth.num_params if init is None else init.double().clamp(0, 1).tolist()
    options = {
        "bounds": [0.0, 1.0],
        "seed": int(seed) + 1,  # cma treats seed 0 as "draw one"
        "verbose": -9,
        "verb_log": 0,
        "verb_disp": 0,
        "tolx": 0.0,
        "tolfun": 0.0,
        "tolfunhist": 0.0,
        "tolstagnation": 10**9,
    }
    es = cma.CMAEvolutionStrategy(x0, float(sigma), options)
    while tracker.left > 0:
        pop = es.ask()
        take = min(len(pop), tracker.left)
        x = torch.tensor([list(p) for p in pop[:take]], dtype=torch.float32).clamp(0.0, 1.0)
        with torch.no_grad():
            d = dist(synth.render(x), tgt)
        tracker.add(x, d)
        if take == len(pop):
            values = [v if math.isfinite(v) else 1e30 for v in d.tolist()]
            es.tell(pop, values)


def _gradient(
    tracker: _Tracker,
    synth: Synth,
    tgt: Tensor,
    dist: Distance,
    seed: int,
    init: Tensor | None,
    lr: float,
    restarts: int,
) -> None:
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise WeightspaceValueError(f"`restarts` must be a positive integer, got {restarts!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise WeightspaceValueError(f"`lr` must be a positive number, got {lr!r}")
    gen = torch.Generator().manual_seed(int(seed))
    starts = torch.rand(min(restarts, tracker.budget), synth.num_params, generator=gen)
    if init is not None:
        starts[0] = init.float()
    logits = torch.logit(starts.clamp(0.02, 0.98)).requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    while tracker.left > 0:
        k = min(len(starts), tracker.left)
        x = torch.sigmoid(logits)
        d = dist(synth.render(x[:k]), tgt)
        tracker.add(x[:k], d)
        if tracker.left <= 0:
            break
        opt.zero_grad()
        torch.autograd.backward(torch.nan_to_num(d, nan=0.0, posinf=0.0).sum())
        opt.step()
