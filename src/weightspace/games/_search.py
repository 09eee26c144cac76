"""Searches for the composition a scorer finds most similar to a text.

Four methods share one budget of evaluations (renders scored by the scorer):

* ``"pgpe"``: PGPE (Sehnke et al., 2010) with the ClipUp optimiser (Toklu et al., 2020) over
  the continuous placement parameters, plus a categorical distribution per slot over the
  cards, updated with the same ranked fitness (a categorical natural-gradient ES);
* ``"cmaes"``: CMA-ES (Hansen, the ``cma`` package) over the continuous parameters, with the
  same categorical ES for the cards;
* ``"ga"``: a classic genetic algorithm (tournament selection, uniform crossover of whole
  cards, Gaussian and card-swap mutation, elites);
* ``"random"``: random compositions, the best kept.

This mirrors es-clip (Tian & Ha, "Modern Evolution Strategies for Creativity", arXiv
2109.08857), which searches primitives' parameters with PGPE + ClipUp under a CLIP loss.

The card distribution of the two evolution strategies is updated by one of two rules
(option ``card_rule``): ``"logit"``, a plain gradient step on the logits of a softmax
(the default), or ``"natural"``, the natural-gradient step of the information-geometric
optimisation framework (Ollivier et al., JMLR 2017) on the probabilities themselves, as in
ASNG (Akimoto et al., ICML 2019) and CatCMA (Hamano et al., GECCO 2024): the probabilities
move towards the weighted frequencies of the cards in the population, and stay above a
margin of ``1 / (slots * (cards - 1))`` (at most ``1 / (2 * cards)``), so that no card is ruled
out for good. The weights
(option ``utility``) are centred ranks (``"centred"``, PGPE's usual shaping) or the
log-rank weights of the better half that CMA-ES uses (``"log"``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from weightspace._errors import WeightspaceValueError
from weightspace._optional import require_module
from weightspace.games._compose import PARAMS_PER_CARD, Composition, render
from weightspace.games._deck import Deck
from weightspace.games._scorers import ImageTextScorer

__all__ = ["SEARCH_METHODS", "SEARCH_OPTIONS", "SearchResult", "random_compositions", "search"]

logger = logging.getLogger(__name__)

Method = Literal["pgpe", "cmaes", "ga", "random"]
SEARCH_METHODS: tuple[str, ...] = ("pgpe", "cmaes", "ga", "random")
"""The methods :func:`search` knows."""

_PRIOR_STD = 1.5  # spread of random placements (and of the ES's initial distribution)
Fitness = Callable[[Tensor, Tensor], Tensor]
Options = Mapping[str, float | str]

SEARCH_OPTIONS: Mapping[str, Mapping[str, float | str]] = MappingProxyType(
    {
        "pgpe": MappingProxyType(
            {
                "sigma": 1.0,
                "max_speed": 0.3,
                "center_lr": 0.15,
                "momentum": 0.9,
                "sigma_lr": 0.1,
                "utility": "centred",
                "card_rule": "logit",
                "card_lr": 1.0,
            }
        ),
        "cmaes": MappingProxyType(
            {"sigma": 1.0, "utility": "centred", "card_rule": "logit", "card_lr": 1.0}
        ),
        "ga": MappingProxyType(
            {
                "mutation_std": 0.5,
                "gene_rate": 0.2,
                "swap_rate": 0.1,
                "elites": 2,
                "tournament": 3,
                "spread": _PRIOR_STD,
            }
        ),
        "random": MappingProxyType({"spread": _PRIOR_STD}),
    }
)
"""Every method's settings (the ``options`` of :func:`search`) with their defaults (read-only).

PGPE's ``center_lr`` defaults to half of ``max_speed`` (0.15 for the default 0.3) when
``max_speed`` is given and ``center_lr`` is not."""

_CHOICES: dict[str, tuple[str, ...]] = {
    "utility": ("centred", "log"),
    "card_rule": ("logit", "natural"),
}


@dataclass(frozen=True)
class SearchResult:
    """What a search found, and how fast.

    Attributes:
        method: The search method.
        text: The text the composition was made for.
        best: The best composition found.
        best_score: Its score.
        curve: ``(evaluations, best score so far)`` after every generation.
        evaluations: Evaluations used (equal to the budget).
        seconds: Wall-clock time of the search.
        seed: The seed.
        options: The method's settings, defaults filled in (see :data:`SEARCH_OPTIONS`),
            with ``popsize``.
    """

    method: str
    text: str
    best: Composition
    best_score: float
    curve: list[tuple[int, float]] = field(repr=False)
    evaluations: int
    seconds: float
    seed: int
    options: dict[str, float | str] = field(default_factory=dict)

    def evaluations_to_reach(self, threshold: float) -> int | None:
        """The evaluations after which the best score first reached ``threshold`` (or None)."""
        for n, s in self.curve:
            if s >= threshold:
                return n
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the result."""
        return {
            "method": self.method,
            "text": self.text,
            "best": self.best.to_dict(),
            "best_score": self.best_score,
            "curve": [[n, s] for n, s in self.curve],
            "evaluations": self.evaluations,
            "seconds": self.seconds,
            "seed": self.seed,
            "options": dict(self.options),
        }


def random_compositions(
    n: int,
    slots: int,
    deck_size: int,
    *,
    generator: torch.Generator,
    spread: float = _PRIOR_STD,
) -> tuple[Tensor, Tensor]:
    """Draw ``n`` random compositions of ``slots`` cards: uniform cards, N(0, spread²) params.

    Args:
        n: How many compositions.
        slots: Cards per composition.
        deck_size: Cards in the deck.
        generator: The random generator.
        spread: Standard deviation of the unconstrained placement parameters (see
            :func:`~weightspace.games.placement`).

    Returns:
        ``(cards [n, slots], params [n, slots, 5])``.
    """
    cards = torch.randint(0, deck_size, (n, slots), generator=generator)
    params = torch.randn(n, slots, PARAMS_PER_CARD, generator=generator) * spread
    return cards, params


def _ranks(fitness: Tensor) -> Tensor:
    """Centred ranks in ``[-0.5, 0.5]`` (higher fitness, higher rank)."""
    n = fitness.numel()
    ranks = torch.empty(n)
    ranks[fitness.argsort()] = torch.arange(n, dtype=torch.float32)
    return ranks / max(n - 1, 1) - 0.5


def _log_weights(fitness: Tensor) -> Tensor:
    """CMA-ES's weights: ``log((n + 1) / 2) - log(rank)`` for the better half, 0 below; sum 1."""
    n = fitness.numel()
    mu = max(n // 2, 1)
    raw = math.log((n + 1) / 2) - torch.log(torch.arange(1, mu + 1, dtype=torch.float32))
    weights = torch.zeros(n)
    weights[fitness.argsort(descending=True)[:mu]] = raw / raw.sum()
    return weights


def _utility(fitness: Tensor, kind: str) -> Tensor:
    """Per-sample weights from ranks: centred ranks or CMA-ES's log-rank weights."""
    return _ranks(fitness) if kind == "centred" else _log_weights(fitness)


class _Categorical:
    """A categorical distribution per slot over the cards, updated by ranked fitness.

    ``rule="logit"``: a gradient step on softmax logits, ``lr * cards * mean(u (onehot - p))``.
    ``rule="natural"``: the natural-gradient step on the probabilities,
    ``p += lr * sum(w (onehot - p))`` with ``w`` the utilities (centred ranks divided by the
    population, or log-rank weights summing to 1), then clipped to the margin and normalised.
    """

    def __init__(
        self,
        slots: int,
        cards: int,
        lr: float,
        generator: torch.Generator,
        rule: str = "logit",
        utility: str = "centred",
    ) -> None:
        self.logits = torch.zeros(slots, cards)
        self.probs = torch.full((slots, cards), 1.0 / cards)
        self.lr = lr
        self.gen = generator
        self.rule = rule
        self.average = utility == "centred"  # centred ranks are averaged, log weights summed
        self.margin = min(1.0 / (slots * (cards - 1)), 0.5 / cards) if cards > 1 else 0.0

    def distribution(self) -> Tensor:
        return self.logits.softmax(dim=-1) if self.rule == "logit" else self.probs

    def sample(self, n: int) -> Tensor:
        probs = self.distribution()
        return torch.multinomial(probs, n, replacement=True, generator=self.gen).T.contiguous()

    def update(self, cards: Tensor, utility: Tensor) -> None:
        probs = self.distribution()
        onehot = torch.nn.functional.one_hot(cards, probs.shape[-1]).float()
        if self.rule == "logit":
            grad = (utility.view(-1, 1, 1) * (onehot - probs)).mean(dim=0)
            self.logits += self.lr * probs.shape[-1] * grad
            return
        weights = utility / utility.numel() if self.average else utility
        step = (weights.view(-1, 1, 1) * (onehot - probs)).sum(dim=0)
        k = probs.shape[-1]
        new = (probs + self.lr * step).clamp(self.margin, 1.0 - self.margin * (k - 1))
        self.probs = new / new.sum(dim=-1, keepdim=True)


def _pgpe(
    fitness: Fitness, slots: int, deck_size: int, budget: int, popsize: int, gen: torch.Generator,
    curve: Callable[[Tensor, Tensor, Tensor], None], options: dict[str, Any],
) -> None:  # fmt: skip
    dim = slots * PARAMS_PER_CARD
    half = popsize // 2
    mu = torch.zeros(dim)
    sigma = torch.full((dim,), float(options["sigma"]))
    velocity = torch.zeros(dim)
    max_speed = float(options["max_speed"])
    step = float(options["center_lr"])
    momentum = float(options["momentum"])
    sigma_lr = float(options["sigma_lr"])
    kind = str(options["utility"])
    rule = str(options["card_rule"])
    cat = _Categorical(slots, deck_size, float(options["card_lr"]), gen, rule, kind)
    for _ in range(budget // popsize):
        eps = torch.randn(half, dim, generator=gen) * sigma
        x = torch.cat([mu + eps, mu - eps])
        pair_cards = cat.sample(half)
        cards = torch.cat([pair_cards, pair_cards])
        f = fitness(cards, x.view(popsize, slots, PARAMS_PER_CARD))
        curve(f, cards, x.view(popsize, slots, PARAMS_PER_CARD))
        u = _utility(f, kind)
        up, down = u[:half], u[half:]
        grad_mu = ((up - down).unsqueeze(1) * eps).mean(dim=0) / 2
        base = (up + down) / 2
        if kind != "centred":  # a baseline, so that the spread's step has mean zero
            base = base - base.mean()
        grad_sigma = (base.unsqueeze(1) * (eps**2 - sigma**2) / sigma).mean(dim=0)
        # ClipUp: normalised gradient step, momentum, then a cap on the speed.
        norm = float(grad_mu.norm())
        if norm > 0:
            velocity = momentum * velocity + step * grad_mu / norm
        speed = float(velocity.norm())
        if speed > max_speed:
            velocity = velocity * (max_speed / speed)
        mu = mu + velocity
        change = (sigma_lr * grad_sigma).clamp(-0.2 * sigma, 0.2 * sigma)
        sigma = (sigma + change).clamp(min=0.05, max=3.0)
        cat.update(cards, u)


def _cmaes(
    fitness: Fitness, slots: int, deck_size: int, budget: int, popsize: int, gen: torch.Generator,
    curve: Callable[[Tensor, Tensor, Tensor], None], options: dict[str, Any], seed: int,
) -> None:  # fmt: skip
    cma = require_module("cma", pip="cma", extra="games")
    dim = slots * PARAMS_PER_CARD
    es = cma.CMAEvolutionStrategy(
        np.zeros(dim),
        float(options["sigma"]),
        {"popsize": popsize, "seed": seed + 1, "verbose": -9, "verb_log": 0, "verb_disp": 0},
    )
    kind = str(options["utility"])
    rule = str(options["card_rule"])
    cat = _Categorical(slots, deck_size, float(options["card_lr"]), gen, rule, kind)
    for _ in range(budget // popsize):
        solutions = es.ask()
        x = torch.tensor(np.asarray(solutions), dtype=torch.float32)
        cards = cat.sample(popsize)
        f = fitness(cards, x.view(popsize, slots, PARAMS_PER_CARD))
        curve(f, cards, x.view(popsize, slots, PARAMS_PER_CARD))
        es.tell(solutions, (-f).double().tolist())
        cat.update(cards, _utility(f, kind))


def _ga(
    fitness: Fitness, slots: int, deck_size: int, budget: int, popsize: int, gen: torch.Generator,
    curve: Callable[[Tensor, Tensor, Tensor], None], options: dict[str, Any],
) -> None:  # fmt: skip
    elites = int(options["elites"])
    size = int(options["tournament"])
    mutation = float(options["mutation_std"])
    gene_rate = float(options["gene_rate"])
    swap_rate = float(options["swap_rate"])
    cards, params = random_compositions(
        popsize, slots, deck_size, generator=gen, spread=float(options["spread"])
    )
    for g in range(budget // popsize):
        f = fitness(cards, params)
        curve(f, cards, params)
        if g == budget // popsize - 1:
            break
        order = f.argsort(descending=True)
        new_cards = [cards[order[:elites]]]
        new_params = [params[order[:elites]]]
        n = popsize - elites
        # Tournaments of `size`, twice per child.
        entrants = torch.randint(0, popsize, (2, n, size), generator=gen)
        winners = entrants.gather(2, f[entrants].argmax(dim=2, keepdim=True)).squeeze(2)
        a, b = winners[0], winners[1]
        take_a = torch.rand(n, slots, generator=gen) < 0.5
        child_cards = torch.where(take_a, cards[a], cards[b])
        child_params = torch.where(take_a.unsqueeze(-1), params[a], params[b])
        mutate = torch.rand(child_params.shape, generator=gen) < gene_rate
        noise = torch.randn(child_params.shape, generator=gen) * mutation
        child_params = child_params + mutate * noise
        swap = torch.rand(n, slots, generator=gen) < swap_rate
        child_cards = torch.where(
            swap, torch.randint(0, deck_size, (n, slots), generator=gen), child_cards
        )
        cards = torch.cat([*new_cards, child_cards])
        params = torch.cat([*new_params, child_params])


def _random(
    fitness: Fitness, slots: int, deck_size: int, budget: int, popsize: int, gen: torch.Generator,
    curve: Callable[[Tensor, Tensor, Tensor], None], options: dict[str, Any],
) -> None:  # fmt: skip
    for _ in range(budget // popsize):
        cards, params = random_compositions(
            popsize, slots, deck_size, generator=gen, spread=float(options["spread"])
        )
        curve(fitness(cards, params), cards, params)


def _resolve_options(method: str, options: Options | None, popsize: int) -> dict[str, Any]:
    """The method's settings: defaults overridden by ``options``, every name and value checked."""
    defaults = SEARCH_OPTIONS[method]
    given = dict(options or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise WeightspaceValueError(
            f"`options` {unknown} are not settings of {method!r}; it takes {sorted(defaults)}"
        )
    resolved: dict[str, Any] = {**defaults, **given}
    if method == "pgpe" and "center_lr" not in given:
        resolved["center_lr"] = float(resolved["max_speed"]) / 2
    for name, value in resolved.items():
        choices = _CHOICES.get(name)
        if choices is not None:
            if value not in choices:
                raise WeightspaceValueError(
                    f"`options[{name!r}]` must be one of {list(choices)}, got {value!r}"
                )
        elif isinstance(value, str) or not math.isfinite(float(value)) or float(value) < 0:
            raise WeightspaceValueError(
                f"`options[{name!r}]` must be a finite number >= 0, got {value!r}"
            )
    if method == "ga" and not 0 <= int(resolved["elites"]) < popsize:
        raise WeightspaceValueError(
            f"`options['elites']` must be in [0, popsize) = [0, {popsize}), got "
            f"{resolved['elites']!r}"
        )
    if method == "ga" and int(resolved["tournament"]) < 1:
        raise WeightspaceValueError(
            f"`options['tournament']` must be at least 1, got {resolved['tournament']!r}"
        )
    return {**resolved, "popsize": popsize}


def search(
    scorer: ImageTextScorer,
    text: str,
    deck: Deck,
    *,
    method: Method = "pgpe",
    slots: int = 4,
    budget: int = 1024,
    popsize: int = 32,
    size: int = 128,
    seed: int = 0,
    options: Options | None = None,
) -> SearchResult:
    """Search for the composition of ``slots`` cards that ``scorer`` finds closest to ``text``.

    Every method gets exactly ``budget`` evaluations, in generations of ``popsize``; the
    curve records the best score found so far after each generation.

    Args:
        scorer: The image-text scorer that guides the search.
        text: The text to depict, such as ``"A snowman."``.
        deck: The cards.
        method: ``"pgpe"``, ``"cmaes"``, ``"ga"`` or ``"random"``.
        slots: Cards per composition.
        budget: Evaluations in all; a multiple of ``popsize``.
        popsize: Compositions per generation (even, for PGPE's symmetric pairs).
        size: Side of the rendered canvas in pixels.
        seed: Seeds everything random in the search.
        options: Method settings (:data:`SEARCH_OPTIONS` lists them with their defaults):
            ``sigma`` (initial spread), ``max_speed``, ``center_lr``, ``momentum`` and
            ``sigma_lr`` (ClipUp) for PGPE; ``sigma`` for CMA-ES; ``utility``
            (``"centred"`` or ``"log"``), ``card_rule`` (``"logit"`` or ``"natural"``) and
            ``card_lr`` (the card distribution's step) for both; ``mutation_std``,
            ``gene_rate``, ``swap_rate``, ``elites``, ``tournament`` and ``spread`` (of the
            first generation) for the GA; ``spread`` for random search.

    Returns:
        A :class:`SearchResult`.

    Raises:
        WeightspaceValueError: if ``method`` is unknown, an option is not one of the
            method's or out of range, or the sizes do not fit.
    """
    if method not in SEARCH_METHODS:
        raise WeightspaceValueError(
            f"`method` must be one of {list(SEARCH_METHODS)}, got {method!r}"
        )
    if popsize < 2 or popsize % 2:
        raise WeightspaceValueError(f"`popsize` must be even and at least 2, got {popsize}")
    if budget < popsize or budget % popsize:
        raise WeightspaceValueError(
            f"`budget` must be a positive multiple of `popsize` ({popsize}), got {budget}; "
            f"try {max(1, round(budget / popsize)) * popsize}"
        )
    if slots < 1:
        raise WeightspaceValueError(f"`slots` must be at least 1, got {slots}")
    opts = _resolve_options(method, options, popsize)
    gen = torch.Generator().manual_seed(seed)
    best: dict[str, Any] = {"score": -math.inf, "cards": None, "params": None, "n": 0}
    curve: list[tuple[int, float]] = []

    def fitness(cards: Tensor, params: Tensor) -> Tensor:
        images = render(deck, cards, params, size=size)
        return scorer.score(images, [text])[:, 0].float()

    def record(f: Tensor, cards: Tensor, params: Tensor) -> None:
        i = int(f.argmax())
        best["n"] += int(f.numel())
        if float(f[i]) > best["score"]:
            best.update(score=float(f[i]), cards=cards[i].clone(), params=params[i].clone())
        curve.append((best["n"], best["score"]))

    start = time.perf_counter()
    with torch.inference_mode(False), torch.no_grad():
        if method == "pgpe":
            _pgpe(fitness, slots, len(deck), budget, popsize, gen, record, opts)
        elif method == "cmaes":
            _cmaes(fitness, slots, len(deck), budget, popsize, gen, record, opts, seed)
        elif method == "ga":
            _ga(fitness, slots, len(deck), budget, popsize, gen, record, opts)
        else:
            _random(fitness, slots, len(deck), budget, popsize, gen, record, opts)
    seconds = time.perf_counter() - start
    composition = Composition(
        tuple(deck.names[int(c)] for c in best["cards"]), best["params"].float()
    )
    logger.info("%s search for %r: %.4f after %d evaluations", method, text, best["score"], budget)
    return SearchResult(
        method, text, composition, float(best["score"]), curve, int(best["n"]), seconds, seed,
        opts,
    )  # fmt: skip
