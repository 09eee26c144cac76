"""Just One's rules on hand-worked cases: identical and invalid clues, the score, the scale."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace import WeightspaceValueError
from weightspace.games import (
    RULEBOOK_SCALE,
    CardOutcome,
    Lexicon,
    ScoreSheet,
    check_clue,
    filter_clues,
    just_one_rating,
    same_family,
    same_word,
    wordnet_lexicon,
)

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/wordnet/index.noun").is_file(),
    reason="needs Debian's wordnet-base (scripts/setup.sh installs it)",
)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Mouse", "mouse"),  # case
        ("crème", "CREME"),  # accents
        ("prince", "Princes"),  # plural
        ("mouse", "mice"),  # irregular plural (WordNet's exception list)
        ("boxes", "box"),
        ("ran", "run"),  # irregular verb form
        ("actor", "actress"),  # gender variants
        ("prince", "princess"),
        ("host", "hostesses"),
        ("god", "goddess"),
        ("policeman", "policewoman"),
        ("Philosophy", "filosofie"),  # the rulebook's spelling slip
        ("elephant", "elefant"),
        ("beautiful", "beutiful"),
        ("receive", "recieve"),  # transposition
    ],
)
def test_same_word(a: str, b: str) -> None:
    assert same_word(a, b)
    assert same_word(b, a)
    assert same_family(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("bear", "beer"),  # both real words: not a slip
        ("cat", "car"),
        ("sea", "see"),  # homophones are not caught
        ("king", "queen"),  # different words, not variants
        ("address", "adder"),  # -ress folds only between people and animals
        ("party", "part"),
        ("baker", "bake"),  # family, but not the same word
        ("ocean", "oceanic"),
    ],
)
def test_not_same_word(a: str, b: str) -> None:
    assert not same_word(a, b)


@pytest.mark.parametrize(
    ("a", "b", "family"),
    [
        ("bake", "baker", True),  # WordNet's derivational links
        ("ocean", "Oceanic", True),
        ("swim", "swimmers", True),
        ("fish", "fishing", True),
        ("sun", "moon", False),
        ("water", "wet", False),
        ("flour", "flower", False),
    ],
)
def test_same_family(a: str, b: str, family: bool) -> None:
    assert same_family(a, b) is family
    assert same_family(b, a) is family


def test_invalid_clues() -> None:
    assert check_clue("sea", "ocean") is None
    assert check_clue("OCEAN", "ocean") == "the mystery word"
    assert check_clue("oceans", "ocean") == "the mystery word"
    assert check_clue("ocaen", "ocean") == "the mystery word"  # misspelt
    assert check_clue("princess", "prince") == "the mystery word"  # gender variant
    assert check_clue("baker", "bake") == "of the family of the mystery word"
    assert check_clue("sandstone", "sand") == "a compound of the mystery word"
    assert check_clue("elephant", "ant") is None  # "eleph" is no word
    assert check_clue("big wave", "ocean") == "not one word"
    assert check_clue("r2d2", "robot") == "not one word"
    assert check_clue("   ", "ocean") == "empty"
    assert check_clue("rock-n-roll", "music") is None  # hyphens and apostrophes allowed


def test_filter_clues_hand_worked_turns() -> None:
    # The rulebook's picture: two identical clues and a plural of a third go, the rest stay.
    out = filter_clues(["Waves", "wave", "salt", "ocean", "blue"], "ocean")
    assert out.kept == ("salt", "blue")
    assert out.removed == {
        0: "identical to wave",
        1: "identical to Waves",
        3: "invalid: the mystery word",
    }
    # Three of one family go together; transitive: princess~prince~princes.
    out = filter_clues(["princess", "Princes", "crown", "prince"], "king")
    assert out.kept == ("crown",)
    assert sorted(out.removed) == [0, 1, 3]
    # All cancelled: nothing is left for the guesser.
    out = filter_clues(["mice", "mouse"], "cheese")
    assert out.kept == () and out.removed == {0: "identical to mouse", 1: "identical to mice"}
    # A misspelt duplicate cancels too.
    assert filter_clues(["elephant", "elefant", "trunk"], "ivory").kept == ("trunk",)
    # Real words that merely look alike both stay.
    assert filter_clues(["bear", "beer"], "brew").kept == ("bear", "beer")


def test_score_sheet_right_pass_and_wrong() -> None:
    words = [f"w{k}" for k in range(13)]
    sheet = ScoreSheet(words)
    sheet.record("w0", CardOutcome.RIGHT)
    sheet.record("w1", CardOutcome.PASS)  # only this card
    sheet.record("w2", CardOutcome.WRONG)  # this card and the next (w3)
    assert sheet.next_card() == "w4"
    sheet.record("w4", CardOutcome.NO_CLUES)  # all clues cancelled: the card is lost
    assert (sheet.score, sheet.lost, sheet.position) == (1, ["w1", "w2", "w3", "w4"], 5)
    for k in range(5, 13):
        sheet.record(f"w{k}", CardOutcome.RIGHT)
    assert sheet.over and sheet.next_card() is None and sheet.score == 9
    assert just_one_rating(sheet.score) == "excellent"
    with pytest.raises(
        WeightspaceValueError, match=r"`word` 'w12' is not the card in play \(None\)"
    ):
        sheet.record("w12", CardOutcome.RIGHT)


def test_wrong_guess_on_the_last_card_costs_a_won_card() -> None:
    sheet = ScoreSheet(["a", "b", "c"])
    sheet.record("a", CardOutcome.RIGHT)
    sheet.record("b", CardOutcome.RIGHT)
    sheet.record("c", CardOutcome.WRONG)
    assert (sheet.score, sheet.won, sheet.lost) == (1, ["a"], ["c", "b"])
    empty = ScoreSheet(["a"])
    empty.record("a", CardOutcome.WRONG)  # nothing won yet: nothing more to lose
    assert (empty.score, empty.lost) == (0, ["a"])
    with pytest.raises(WeightspaceValueError, match=r"`word` 'b' is not the card in play \('a'\)"):
        ScoreSheet(["a", "b"]).record("b", CardOutcome.RIGHT)
    with pytest.raises(WeightspaceValueError, match=r"`words` is empty"):
        ScoreSheet([])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list(CardOutcome)), min_size=13, max_size=13))
def test_every_card_is_won_or_lost_exactly_once(outcomes: list[CardOutcome]) -> None:
    words = [f"w{k}" for k in range(13)]
    sheet = ScoreSheet(words)
    for outcome in outcomes:
        card = sheet.next_card()
        if card is None:
            break
        sheet.record(card, outcome)
    assert sheet.over
    assert sorted(sheet.won + sheet.lost) == sorted(words)
    rights = sum(o is CardOutcome.RIGHT for o, _ in zip(outcomes, sheet.log, strict=False))
    assert sheet.score <= rights


def test_rulebook_scale() -> None:
    expected = {
        13: "perfect score",
        12: "incredible",
        11: "awesome",
        10: "excellent",
        9: "excellent",
        8: "average",
        7: "average",
        6: "a good start",
        4: "a good start",
        3: "try again",
        0: "try again",
    }
    assert {s: just_one_rating(s) for s in expected} == expected
    covered = sorted(s for low, high, _ in RULEBOOK_SCALE for s in range(low, high + 1))
    assert covered == list(range(14))
    with pytest.raises(WeightspaceValueError, match=r"`score` must be between 0 and 13, got 14"):
        just_one_rating(14)


def test_lexicon_from_words_without_wordnet() -> None:
    lex = Lexicon(frozenset({"actor", "act", "mouse"}), {"mice": ("mouse",)})
    assert same_word("Actresses", "actor", lex)
    assert same_word("mice", "mouse", lex)
    assert "mice" in lex and "actors" in lex and "blorp" not in lex
    full = wordnet_lexicon()
    assert len(full.words) > 70000 and "ocean" in full.words
    with pytest.raises(WeightspaceValueError, match=r"no WordNet in '/nonexistent'"):
        wordnet_lexicon("/nonexistent")
