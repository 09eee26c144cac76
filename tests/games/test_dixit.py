"""Dixit: the rulebook's scoring on hand-worked rounds, the game's flow, and the bots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from weightspace import WeightspaceValueError
from weightspace.games import (
    BOT_KINDS,
    HAND_SIZE,
    WINNING_SCORE,
    AbstractBot,
    DixitGame,
    Eyes,
    LiteralBot,
    RandomBot,
    StrategistBot,
    dixit_deck,
    literal_hint,
    make_bot,
    play_game,
    read_dixit_games,
    score_round,
    write_dixit_games,
)
from weightspace.games._dixit import _clean_hints
from weightspace.games._stamps import StampImages


class TableScorer:
    """A scorer that looks its similarities up in a table: ``columns[hint][card]``."""

    def __init__(self, name: str, columns: dict[str, Sequence[float]], default: float = 0.0):
        self.name = name
        self.columns = columns
        self.default = default

    def score(self, images: Tensor, texts: Sequence[str]) -> Tensor:
        n = images.shape[0]
        cols = [
            torch.tensor(self.columns[t], dtype=torch.float32)
            if t in self.columns
            else torch.full((n,), self.default)
            for t in texts
        ]
        return torch.stack(cols, dim=1)


class DictWriter:
    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    def hints(self, thing: str) -> list[str]:
        return list(self.table.get(thing, []))


def _cards(n: int) -> Tensor:
    return torch.zeros(n, 3, 8, 8, dtype=torch.uint8)


# --- scoring, hand-worked ------------------------------------------------------------------


def test_some_find_the_card_storyteller_and_finders_score_three_plus_decoy_votes() -> None:
    # Seat 0 tells card 10; seat 1 finds it; seat 2 votes for seat 1's card; seat 3 for 2's.
    points = score_round(0, {0: 10, 1: 11, 2: 12, 3: 13}, {1: 10, 2: 11, 3: 12})
    assert points == {0: 3, 1: 3 + 1, 2: 0 + 1, 3: 0}


def test_all_find_the_card_storyteller_scores_nothing_others_two() -> None:
    points = score_round(2, {0: 5, 1: 6, 2: 7, 3: 8}, {0: 7, 1: 7, 3: 7})
    assert points == {0: 2, 1: 2, 2: 0, 3: 2}


def test_none_find_the_card_others_score_two_plus_their_votes() -> None:
    # Nobody votes for card 7; seat 0's card gets two votes, seat 1's one.
    points = score_round(2, {0: 5, 1: 6, 2: 7, 3: 8}, {0: 6, 1: 5, 3: 5})
    assert points == {0: 2 + 2, 1: 2 + 1, 2: 0, 3: 2}


def test_three_players_one_of_two_finds() -> None:
    points = score_round(1, {0: 1, 1: 2, 2: 3}, {0: 2, 2: 1})
    assert points == {0: 3 + 1, 1: 3, 2: 0}


def test_six_players_mixed_round() -> None:
    played = {0: 30, 1: 31, 2: 32, 3: 33, 4: 34, 5: 35}
    votes = {0: 33, 1: 33, 2: 30, 4: 31, 5: 33}  # seat 3 tells card 33; three of five find it
    assert score_round(3, played, votes) == {0: 3 + 1, 1: 3 + 1, 2: 0, 3: 3, 4: 0, 5: 3}


def test_scoring_refuses_illegal_votes() -> None:
    played = {0: 1, 1: 2, 2: 3}
    with pytest.raises(WeightspaceValueError, match=r"seat 2 voted for their own card 3"):
        score_round(0, played, {1: 1, 2: 3})
    with pytest.raises(WeightspaceValueError, match=r"card 9, which is not on the table"):
        score_round(0, played, {1: 9, 2: 1})
    with pytest.raises(WeightspaceValueError, match=r"the storyteller does not vote"):
        score_round(0, played, {0: 2, 1: 1, 2: 1})
    with pytest.raises(WeightspaceValueError, match=r"missing \[2\]"):
        score_round(0, played, {1: 1})
    with pytest.raises(WeightspaceValueError, match=r"puts in one card twice"):
        score_round(0, {0: 1, 1: 1, 2: 3}, {1: 3, 2: 1})


@settings(max_examples=200, deadline=None)
@given(st.integers(3, 8), st.data())
def test_points_add_up_by_the_rules(players: int, data: st.DataObject) -> None:
    storyteller = data.draw(st.integers(0, players - 1))
    played = {p: 100 + p for p in range(players)}
    votes = {}
    for p in range(players):
        if p != storyteller:
            choices = [c for q, c in played.items() if q != p]
            votes[p] = data.draw(st.sampled_from(choices))
    points = score_round(storyteller, played, votes)
    found = sum(v == played[storyteller] for v in votes.values())
    decoy_votes = len(votes) - found
    if 0 < found < players - 1:
        assert points[storyteller] == 3
        assert sum(points.values()) == 3 + 3 * found + decoy_votes
    else:
        assert points[storyteller] == 0
        assert sum(points.values()) == 2 * (players - 1) + decoy_votes
    assert all(points[p] >= (2 if found in (0, players - 1) else 0) for p in votes)


# --- the game's flow -----------------------------------------------------------------------


def test_deal_hands_of_six_and_refill_after_each_round() -> None:
    game = DixitGame(4, 96, seed=3)
    assert [len(h) for h in game.hands] == [HAND_SIZE] * 4
    assert len(game.deck) == 96 - 24
    bots = [RandomBot([f"h{i}" for i in range(96)]) for _ in range(4)]
    gen = torch.Generator().manual_seed(0)
    n_rounds = 0
    while game.phase != "over":
        game.tell(*bots[0].tell(game.hands[game.storyteller], 4, gen))
        for p in game.waiting:
            game.play(p, game.hands[p][0])
        for p in game.waiting:
            game.vote(p, next(c for c in game.table if c != game.played[p]))
        n_rounds += 1
        if game.phase != "over":
            assert [len(h) for h in game.hands] == [HAND_SIZE] * 4
            assert game.storyteller == n_rounds % 4
    seen = [c for r in game.rounds for c in r.played.values()] + [c for h in game.hands for c in h]
    assert sorted(seen + game.deck) == list(range(96))  # every card dealt at most once
    if game.end_reason == "deck":
        assert n_rounds == (96 - 24) // 4 and game.deck == []
    else:
        assert max(game.scores) >= WINNING_SCORE


@pytest.mark.parametrize(("cards", "rounds"), [(28, 1), (30, 2), (32, 2), (34, 3), (36, 3)])
def test_the_game_ends_when_the_deck_runs_out(cards: int, rounds: int) -> None:
    hints = [f"h{i}" for i in range(cards)]
    scores, played, end = play_game([RandomBot(hints) for _ in range(4)], cards, seed=1)
    assert (len(played), end) == (rounds, "deck")
    assert scores == [sum(r.points[p] for r in played) for p in range(4)]


def test_the_game_ends_when_a_player_reaches_thirty() -> None:
    game = DixitGame(3, 60, seed=0)
    game.scores = [WINNING_SCORE - 3, 0, 0]
    game.tell(game.hands[0][0], "sea")
    game.play(1, game.hands[1][0])
    game.play(2, game.hands[2][0])
    secret = game.played[0]
    game.vote(1, secret)
    game.vote(2, game.played[1])  # one of two finds it: the storyteller scores 3
    assert (game.phase, game.end_reason, game.scores[0]) == ("over", "score", WINNING_SCORE)
    with pytest.raises(WeightspaceValueError, match=r"in its 'over' phase, not 'tell'"):
        game.tell(game.hands[1][0], "late")


def test_the_game_refuses_moves_out_of_turn_and_own_votes() -> None:
    game = DixitGame(3, 30, seed=0)
    with pytest.raises(WeightspaceValueError, match=r"in its 'tell' phase, not 'play'"):
        game.play(1, game.hands[1][0])
    with pytest.raises(WeightspaceValueError, match=r"is not in the storyteller's hand"):
        game.tell(game.hands[1][0], "x")
    with pytest.raises(WeightspaceValueError, match=r"`hint` is empty"):
        game.tell(game.hands[0][0], "   ")
    game.tell(game.hands[0][0], "x")
    game.play(1, game.hands[1][0])
    with pytest.raises(WeightspaceValueError, match=r"seat 1 has already put in"):
        game.play(1, game.hands[1][1])
    game.play(2, game.hands[2][0])
    with pytest.raises(WeightspaceValueError, match=r"is seat 1's own card"):
        game.vote(1, game.played[1])
    with pytest.raises(WeightspaceValueError, match=r"seat 0 cannot vote"):
        game.vote(0, game.played[1])
    with pytest.raises(WeightspaceValueError, match=r"`players` must be in \[3, 8\], got 2"):
        DixitGame(2, 30)
    with pytest.raises(WeightspaceValueError, match=r"`cards` must be at least 28"):
        DixitGame(4, 27)


def test_bot_games_are_reproducible_and_written_to_json(tmp_path: Path) -> None:
    hints = [f"h{i}" for i in range(40)]
    eyes = Eyes(TableScorer("t", {}), _cards(40))
    bots = [RandomBot(hints), LiteralBot(eyes, hints), RandomBot(hints), LiteralBot(eyes, hints)]
    a = play_game(bots, 40, seed=5)
    b = play_game(bots, 40, seed=5)
    assert a == b and a != play_game(bots, 40, seed=6)
    game = DixitGame(4, 40, seed=5)
    game.step(dict(enumerate(bots)), torch.Generator().manual_seed(5 + 7919))
    record = game.to_json(["r", "l", "r", "l"])
    assert record["scores"] == a[0] and record["end"] == a[2]
    path = write_dixit_games([record], tmp_path / "games.json")
    assert read_dixit_games(path) == [record]
    assert read_dixit_games(tmp_path / "none.json") == []
    (tmp_path / "bad.json").write_text('{"guesses": []}')
    with pytest.raises(WeightspaceValueError, match=r"is not a Dixit games file"):
        read_dixit_games(tmp_path / "bad.json")


# --- hints, deck and bots -------------------------------------------------------------------


def test_literal_hints_and_cleaned_written_hints() -> None:
    assert literal_hint("An albino peahen (a female peafowl, or peacock).") == "albino peahen"
    assert literal_hint("A frog.") == "frog"
    assert literal_hint("The   Moon!") == "moon"
    reply = "frog, toad, Slithery, hideous creature that lives in water, frogs' eggs, pond."
    assert _clean_hints("frog", reply, 5) == ["toad", "slithery", "pond"]
    assert _clean_hints("fire truck", "Firefighter, siren, red, truckload", 2) == ["siren", "red"]


def test_deck_draws_distinct_short_captions_and_keeps_them_out_of_the_rest() -> None:
    captions = [f"A thing{i}." for i in range(30)] + ["A thing0.", "A very long caption here."]
    names = [f"{'ab'[i % 2]}/s{i}" for i in range(32)]
    images = torch.arange(32, dtype=torch.uint8).view(32, 1, 1, 1).expand(32, 3, 8, 8)
    stamps = StampImages(images.contiguous(), tuple(captions), tuple(names))
    deck, rest = dixit_deck(stamps, 12, seed=0)
    hints = [literal_hint(c) for c in deck.captions]
    assert len(deck) == 12 and len(set(hints)) == 12
    assert sorted(c.split("/")[0] for c in deck.names).count("a") == 6  # proportional folders
    assert not {literal_hint(c) for c in rest.captions} & set(hints)
    assert len(rest) == 32 - 12 - ("thing0" in hints)
    assert deck.names == dixit_deck(stamps, 12, seed=0)[0].names
    with pytest.raises(WeightspaceValueError, match=r"`cards` must be in \[1, 30\]"):
        dixit_deck(stamps, 31)


def test_literal_and_abstract_bots_choose_and_vote_by_their_scorer() -> None:
    scorer = TableScorer("t", {"sea": [0.1, 0.9, 0.5, 0.2, 0.0, 0.0]})
    eyes = Eyes(scorer, _cards(6))
    hints = ["c0", "c1", "c2", "c3", "c4", "c5"]
    bot = LiteralBot(eyes, hints)
    gen = torch.Generator().manual_seed(0)
    assert bot.choose([0, 2, 3], "sea", gen) == 2
    assert bot.vote([0, 1, 2, 3], 1, "sea", gen) == 2  # never its own card 1
    card, hint = bot.tell([3, 4], 4, gen)
    assert hint == hints[card]
    abstract = AbstractBot(eyes, hints, DictWriter({"c3": ["tide"], "c4": []}))
    told = {abstract.tell([3, 4], 4, torch.Generator().manual_seed(s)) for s in range(20)}
    assert told == {(3, "tide"), (4, "c4")}  # no written hint: falls back on the literal


def test_strategist_tells_the_hint_some_but_not_all_find() -> None:
    n = 40
    obvious = [0.0] * n
    obvious[0] = 1.0  # every scorer finds card 0
    hopeless = [0.0] * n
    hopeless[0] = -1.0  # nobody does
    split_a, split_b = list(obvious), list(hopeless)  # scorer a finds it, scorer b does not
    a = Eyes(TableScorer("a", {"c0": obvious, "gone": hopeless, "split": split_a}), _cards(n))
    b = Eyes(TableScorer("b", {"c0": obvious, "gone": hopeless, "split": split_b}), _cards(n))
    hints = [f"c{i}" for i in range(n)]
    writer = DictWriter({"c0": ["gone", "split"]})
    bot = StrategistBot(a, hints, writer, models=[a, b], simulations=4096)
    hand = [0, 1, 2, 3, 4, 5]
    expected = bot.expected_points(hand, 4, [(0, "c0"), (0, "gone"), (0, "split")], seed=0)
    assert expected[:2].tolist() == [0.0, 0.0]
    # Three voters, each with scorer a or b at random: all alike with probability 1/4.
    assert abs(float(expected[2]) - 3 * 0.75) < 0.05
    assert bot.tell(hand, 4, torch.Generator().manual_seed(0)) == (0, "split")
    assert [(c, h) for c, h, _ in bot.last_plan][:3] == [(0, "c0"), (0, "gone"), (0, "split")]
    alone = StrategistBot(a, hints, writer, simulations=256)  # models only itself
    assert float(alone.expected_points(hand, 4, [(0, "split")], seed=0)[0]) == 0.0


def test_make_bot_builds_each_kind_by_name() -> None:
    eyes = Eyes(TableScorer("lit", {}), _cards(6))
    hints = [f"c{i}" for i in range(6)]
    bots = [make_bot(kind, eyes, hints) for kind in BOT_KINDS]
    assert [type(b).__name__ for b in bots] == [
        "RandomBot",
        "LiteralBot",
        "AbstractBot",
        "StrategistBot",
    ]
    assert [b.name for b in bots] == ["random", "literal/lit", "abstract/lit", "strategist/lit"]
    with pytest.raises(WeightspaceValueError, match=r"`kind` must be one of .*got 'wizard'"):
        make_bot("wizard", eyes, hints)
