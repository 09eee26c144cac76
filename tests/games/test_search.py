"""The Imagine searches: budgets, settings, the card distribution's update rules, regression."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from weightspace import WeightspaceValueError
from weightspace.games import (
    SEARCH_METHODS,
    SEARCH_OPTIONS,
    default_deck,
    random_compositions,
    search,
)
from weightspace.games._search import _Categorical, _log_weights, _ranks


class RedCentre:
    """A cheap deterministic scorer: redness of the canvas's centre, less overall darkness."""

    def score(self, images: Tensor, texts: Any) -> Tensor:
        side = images.shape[-1]
        c = images[:, :, side // 4 : 3 * side // 4, side // 4 : 3 * side // 4]
        red = (c[:, 0] - c[:, 2]).mean(dim=(1, 2))
        return (red - 0.1 * images.mean(dim=(1, 2, 3))).unsqueeze(1)


@pytest.fixture(scope="module")
def deck() -> Any:
    return default_deck()


# Best scores of the defaults before the settings became options (budget 128, popsize 16,
# seed 3, 64 px): the defaults must keep finding exactly these.
PINNED = {
    "pgpe": 0.5110850930213928,
    "cmaes": 0.6177517771720886,
    "ga": 0.5861546993255615,
    "random": 0.3356943726539612,
}


@pytest.mark.parametrize("method", SEARCH_METHODS)
def test_defaults_reproduce_the_pinned_searches(method: str, deck: Any) -> None:
    torch.set_num_threads(1)
    r = search(RedCentre(), "x", deck, method=method, budget=128, popsize=16, seed=3, size=64)  # type: ignore[arg-type]
    assert r.best_score == pytest.approx(PINNED[method], abs=1e-6)
    assert r.evaluations == 128
    assert [n for n, _ in r.curve] == list(range(16, 129, 16))
    scores = [s for _, s in r.curve]
    assert scores == sorted(scores) and scores[-1] == r.best_score
    assert r.options == {**SEARCH_OPTIONS[method], "popsize": 16}
    assert r.to_dict()["options"]["popsize"] == 16


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("pgpe", {"utility": "log", "card_rule": "natural", "card_lr": 0.5, "sigma": 1.5}),
        ("cmaes", {"utility": "log", "card_rule": "natural", "card_lr": 0.3}),
        ("ga", {"elites": 1, "tournament": 5, "spread": 2.0}),
        ("random", {"spread": 2.5}),
    ],
)
def test_tuned_settings_run_and_are_recorded(
    method: str, options: dict[str, Any], deck: Any
) -> None:
    kw: dict[str, Any] = {"budget": 64, "popsize": 8, "seed": 1, "size": 32, "options": options}
    r = search(RedCentre(), "x", deck, method=method, **kw)
    assert r.evaluations == 64 and len(r.curve) == 8
    for name, value in options.items():
        assert r.options[name] == value
    again = search(RedCentre(), "x", deck, method=method, **kw)
    assert again.curve == r.curve  # seeded


def test_pgpe_center_lr_follows_max_speed_unless_given(deck: Any) -> None:
    r = search(RedCentre(), "x", deck, budget=8, popsize=8, size=32, options={"max_speed": 0.5})
    assert r.options["center_lr"] == 0.25
    r = search(RedCentre(), "x", deck, budget=8, popsize=8, size=32, options={"center_lr": 0.1})
    assert r.options["center_lr"] == 0.1 and r.options["max_speed"] == 0.3


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("pgpe", {"mutation_std": 0.5}, "`options` ['mutation_std'] are not settings of 'pgpe'"),
        ("random", {"sigma": 1.0}, "`options` ['sigma'] are not settings of 'random'"),
        ("cmaes", {"card_rule": "softmax"}, "`options['card_rule']` must be one of ['logit'"),
        ("pgpe", {"utility": "linear"}, "`options['utility']` must be one of ['centred', 'log']"),
        (
            "ga",
            {"swap_rate": -0.1},
            "`options['swap_rate']` must be a finite number >= 0, got -0.1",
        ),
        ("pgpe", {"sigma": math.nan}, "`options['sigma']` must be a finite number >= 0, got nan"),
        ("ga", {"elites": 8}, "`options['elites']` must be in [0, popsize) = [0, 8), got 8"),
        ("ga", {"tournament": 0}, "`options['tournament']` must be at least 1, got 0"),
    ],
)
def test_bad_options_name_the_setting(
    method: str, options: dict[str, Any], message: str, deck: Any
) -> None:
    with pytest.raises(WeightspaceValueError) as err:
        search(RedCentre(), "x", deck, method=method, budget=8, popsize=8, options=options)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_random_compositions_scale_with_the_spread() -> None:
    a = random_compositions(5, 3, 53, generator=torch.Generator().manual_seed(0))
    b = random_compositions(5, 3, 53, generator=torch.Generator().manual_seed(0), spread=3.0)
    assert torch.equal(a[0], b[0])
    assert torch.allclose(b[1], 2 * a[1])


def test_log_weights_are_cma_es_recombination_weights() -> None:
    cma = pytest.importorskip("cma")
    f = torch.tensor([0.3, 0.9, 0.1, 0.5, 0.7, 0.2, 0.8, 0.4])
    w = _log_weights(f)
    es = cma.CMAEvolutionStrategy(np.zeros(3), 1.0, {"popsize": 8, "verbose": -9})
    expected = np.asarray(es.sp.weights)[:4]
    order = f.argsort(descending=True)
    assert np.allclose(w[order[:4]].numpy(), expected / expected.sum(), atol=1e-6)
    assert torch.equal(w[order[4:]], torch.zeros(4))
    assert float(w.sum()) == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-(10**4), 10**4), min_size=2, max_size=40, unique=True))
def test_utilities_depend_on_ranks_only(values: list[int]) -> None:
    f = torch.tensor(values, dtype=torch.float64)
    g = f**3 / 7 + 2 * f - 5  # strictly increasing
    assert torch.equal(_ranks(f), _ranks(g))
    assert torch.equal(_log_weights(f), _log_weights(g))
    n = len(values)
    assert torch.allclose(_ranks(f).sort().values, torch.linspace(-0.5, 0.5, n), atol=1e-6)


def test_natural_rule_moves_to_weighted_frequencies_and_keeps_the_margin() -> None:
    gen = torch.Generator().manual_seed(0)
    cat = _Categorical(2, 4, lr=1.0, generator=gen, rule="natural", utility="log")
    cards = torch.tensor([[0, 1], [0, 2], [3, 1], [2, 2]])
    weights = torch.tensor([0.5, 0.3, 0.2, 0.0])
    cat.update(cards, weights)
    margin = 0.5 / 4  # 1 / (2 * 3) capped at 1 / (2 * 4)
    top = 1 - 3 * margin
    # Slot 0: frequencies (0.8, 0, 0, 0.2), clipped to [margin, 1 - 3 margin], renormalised.
    raw0 = torch.tensor([top, margin, margin, 0.2])
    assert torch.allclose(cat.probs[0], raw0 / raw0.sum())
    raw1 = torch.tensor([margin, top, 0.3, margin])
    assert torch.allclose(cat.probs[1], raw1 / raw1.sum())
    assert torch.allclose(cat.probs.sum(dim=-1), torch.ones(2))


def test_natural_rule_concentrates_on_the_rewarded_card() -> None:
    gen = torch.Generator().manual_seed(0)
    cat = _Categorical(1, 10, lr=0.3, generator=gen, rule="natural", utility="centred")
    for _ in range(60):
        cards = cat.sample(16)
        cat.update(cards, _ranks((cards[:, 0] == 7).float() + 1e-3 * torch.rand(16, generator=gen)))
    margin = 0.5 / 10  # capped: 1 / (1 * 9) would leave no room for the best card
    assert float(cat.probs.min()) >= margin / 1.5
    assert float(cat.probs[0, 7]) > 0.5
    assert int(cat.probs[0].argmax()) == 7


def test_options_table_lists_every_method() -> None:
    assert set(SEARCH_OPTIONS) == set(SEARCH_METHODS)
    assert SEARCH_OPTIONS["random"] == {"spread": 1.5}


def test_options_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        SEARCH_OPTIONS["random"]["spread"] = 2.0  # type: ignore[index]
    with pytest.raises(TypeError):
        SEARCH_OPTIONS["new"] = {}  # type: ignore[index]
