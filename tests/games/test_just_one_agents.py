"""Just One bots: word lists, candidates, clue policies, seeded games and their scores."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from weightspace import WeightspaceValueError
from weightspace.games import (
    CardOutcome,
    JustOneBrain,
    JustOneCard,
    JustOneRecord,
    JustOneTable,
    LMScorer,
    WordVectors,
    clue_distribution,
    clue_words,
    deal_cards,
    filter_clues,
    guess_words,
    mystery_words,
    play_just_one,
    play_just_one_games,
    score_just_one,
    split_words,
    wordnet_lexicon,
)

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/wordnet/index.noun").is_file(),
    reason="needs Debian's wordnet-base (scripts/setup.sh installs it)",
)

DECK = ("ocean", "pizza", "guitar", "tiger", "snow", "castle", "coffee", "rocket", "apple",
        "train", "doctor", "garden", "moon")  # fmt: skip


@pytest.fixture(scope="module")
def brain() -> JustOneBrain:
    pytest.importorskip("wordfreq")
    from weightspace.models import minilm

    clues = clue_words(min_zipf=4.3)[:1200]
    guesses = guess_words(min_zipf=4.0)[:800]
    vectors = WordVectors(minilm(), [*clues, *guesses, *DECK])
    return JustOneBrain(wordnet_lexicon(), clues, guesses, vectors=vectors, candidates=20)


def test_word_lists_follow_their_filters() -> None:
    pytest.importorskip("wordfreq")
    cards = mystery_words()
    assert 800 <= len(cards) <= 1000
    assert all(w.isalpha() and w.islower() and 3 <= len(w) <= 10 for w in cards)
    assert {"ocean", "pizza", "guitar", "elephant"} <= set(cards)
    assert "tiger" not in cards  # its first WordNet sense is "a fierce person"
    # Not proper names, not plurals, not abstract nouns, not on the excluded list.
    assert not {"japan", "berlin", "years", "idea", "rape"} & set(cards)
    assert len(set(cards)) == len(cards)
    assert mystery_words(min_zipf=4.5, max_zipf=5.0) == tuple(
        w for w in cards if w in mystery_words(min_zipf=4.5, max_zipf=5.0)
    )
    with pytest.raises(WeightspaceValueError, match=r"`min_zipf` \(5\) is above `max_zipf` \(4\)"):
        mystery_words(min_zipf=5, max_zipf=4)
    val, test = split_words(cards, validation=0.2, seed=0)
    assert len(val) == round(0.2 * len(cards)) and not set(val) & set(test)
    assert split_words(cards, seed=0) == (val, test)


def test_deal_cards_is_seeded_and_distinct() -> None:
    words = [f"w{k}" for k in range(40)]
    deck = deal_cards(words, seed=3)
    assert len(deck) == 13 and len(set(deck)) == 13
    assert deal_cards(words, seed=3) == deck and deal_cards(words, seed=4) != deck
    with pytest.raises(WeightspaceValueError, match=r"`words` has 5 distinct words; a deck needs"):
        deal_cards(words[:5], seed=0)


def test_clue_candidates_are_valid_and_one_per_family(brain: JustOneBrain) -> None:
    words, z = brain.clue_candidates("ocean", "embedding")
    assert len(words) == 20 and z.shape == (20,)
    assert torch.all(z[:-1] >= z[1:])  # best first
    assert filter_clues(list(words), "ocean", brain.lexicon).kept == words  # none cancels
    assert "sea" in words[:5]
    with pytest.raises(WeightspaceValueError, match=r"`kind` 'llm' needs an `lm`"):
        brain.clue_candidates("ocean", "llm")


def test_guess_candidates_leave_the_clues_out(brain: JustOneBrain) -> None:
    words, _ = brain.guess_candidates(("sea", "waves", "beach"), "embedding")
    assert not {"sea", "wave", "waves", "beach"} & set(words)
    guess, confidence = brain.guess(("sea", "waves", "beach"), "embedding")
    assert guess == words[0] and confidence > 0
    with pytest.raises(WeightspaceValueError, match=r"`clues` is empty"):
        brain.guess((), "embedding")


def test_greedy_copies_always_cancel_each_other(brain: JustOneBrain) -> None:
    table = JustOneTable("greedy", "embedding", "greedy", "embedding")
    game = play_just_one(brain, table, DECK, seed=0)
    assert all(len(set(c.written)) == 1 and c.kept == () for c in game.cards)
    sheet = score_just_one(game)
    assert sheet.score == 0 and [o for _, o in sheet.log] == [CardOutcome.NO_CLUES] * 13


def test_games_are_seeded_and_awareness_cancels_fewer_clues(brain: JustOneBrain) -> None:
    aware = JustOneTable("aware", "embedding", "aware", "embedding", temperature=0.5)
    naive = JustOneTable("naive", "embedding", "naive", "embedding", temperature=0.5)
    first = play_just_one(brain, aware, DECK, seed=7)
    assert play_just_one(brain, aware, DECK, seed=7) == first
    assert play_just_one(brain, aware, DECK, seed=8) != first
    seeds = list(range(6))
    decks = [DECK] * len(seeds)
    batch = play_just_one_games(brain, aware, decks, seeds)
    assert batch[0] == play_just_one(brain, aware, DECK, seed=0)

    def cancelled(games: list[JustOneRecord]) -> int:
        return sum(
            v.startswith("identical") for g in games for c in g.cards for v in c.removed.values()
        )

    naive_games = play_just_one_games(brain, naive, decks, seeds)
    assert cancelled(batch) < cancelled(naive_games)
    for game in batch:
        for card in game.cards:
            assert len(card.written) == 4
            assert card.right == (card.guess == card.mystery)


def test_score_just_one_applies_the_pass_threshold() -> None:
    def card(word: str, confidence: float, right: bool, kept: tuple[str, ...] = ("x",)) -> Any:
        return JustOneCard(word, ("x",), kept, {}, word if right else "y", confidence, right)

    cards = (
        card("a", 2.0, True),
        card("b", 0.2, False),  # wrong: b and c lost; a pass at 0.5 loses only b
        card("c", 1.0, True),
        card("d", 0.1, True),  # right, but under 0.5 the guesser passes
        card("e", 0.0, False, kept=()),  # all clues cancelled
    )
    game = JustOneRecord("t", 0, cards)
    assert score_just_one(game).score == 2  # a, d
    assert score_just_one(game, pass_below=0.5).score == 2  # a, c
    assert score_just_one(game, pass_below=3.0).score == 0
    assert [o for _, o in score_just_one(game, 0.5).log] == [
        CardOutcome.RIGHT,
        CardOutcome.PASS,
        CardOutcome.RIGHT,
        CardOutcome.PASS,
        CardOutcome.NO_CLUES,
    ]


def test_table_and_policy_errors(brain: JustOneBrain) -> None:
    with pytest.raises(WeightspaceValueError, match=r"`policy` must be among"):
        JustOneTable("x", "embedding", "sneaky", "embedding")  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match=r"`givers` must be 2 to 6 \(3 to 7 players\)"):
        JustOneTable("x", "embedding", "naive", "embedding", givers=7)
    with pytest.raises(WeightspaceValueError, match=r"`temperature` must be positive, got 0"):
        brain.give_clue(
            "ocean", "embedding", "naive", others=3, temperature=0, generator=torch.Generator()
        )


@given(st.lists(st.floats(-3, 3), min_size=2, max_size=30), st.integers(1, 5))
def test_aware_distribution_is_a_distribution_that_shifts_mass_off_the_top(
    z: list[float], others: int
) -> None:
    scores = torch.tensor(z)
    p = clue_distribution(scores, 1.0, aware=False, others=others)
    q = clue_distribution(scores, 1.0, aware=True, others=others)
    assert torch.isclose(q.sum(), torch.tensor(1.0), atol=1e-5)
    assert bool((q >= 0).all())
    top = int(p.argmax())
    assert float(q[top]) <= float(p[top]) + 1e-6  # the likeliest clue is never favoured more


class _Tokenizer:
    """Word-level tokens (`` word``, punctuation); words over six letters split in two."""

    pad_token_id = 0

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {"<pad>": 0}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        pieces = []
        for chunk in re.findall(r" ?\w+|[^\w ]| ", text):
            pieces.extend([chunk[:4], chunk[4:]] if len(chunk) > 6 else [chunk])
        return [self.vocab.setdefault(p, len(self.vocab)) for p in pieces]


class _Model:
    """Next-token logits: +3 on `` sea`` and +1 on `` Sea``, whatever the prompt."""

    def __init__(self, tok: _Tokenizer) -> None:
        self.sea, self.Sea = tok.encode(" sea")[0], tok.encode(" Sea")[0]

    def __call__(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        logits = torch.zeros(input_ids.shape[0], 1, 128)
        logits[:, 0, self.sea] = 3.0
        logits[:, 0, self.Sea] = 1.0
        assert kwargs["logits_to_keep"] == 1 and "position_ids" in kwargs
        return SimpleNamespace(logits=logits)


def test_lm_scorer_reads_one_token_words_and_counts_tokens() -> None:
    tok = _Tokenizer()
    lm = LMScorer(SimpleNamespace(tokenizer=tok, model=_Model(tok)))
    assert lm.first_tokens("sea") == tuple(sorted((tok.encode(" sea")[0], tok.encode(" Sea")[0])))
    assert lm.single_token("sea") and not lm.single_token("seashell")
    prompt = "hint is:"
    lp = lm.logprobs(prompt)
    assert int(lp.argmax()) == tok.encode(" sea")[0]
    assert lm.tokens == len(tok.encode(prompt))
    scores = lm.word_scores(prompt, ["sea", "seashell", "boat"])
    sea = torch.logsumexp(lp[list(lm.first_tokens("sea"))], 0)
    e = torch.e
    exact = torch.log(torch.tensor((e**3 + e) / (e**3 + e + 126)))  # 126 tokens at logit 0
    assert torch.isclose(scores[0], sea) and torch.isclose(sea, exact)
    assert scores[1] == float("-inf")
    assert torch.isclose(scores[2], torch.logsumexp(lp[list(lm.first_tokens("boat"))], 0))
    before = lm.tokens
    lm.prefetch([prompt, "a b", "abc def de"], batch_size=2)
    assert lm.tokens == before + len(tok.encode("a b")) + len(tok.encode("abc def de"))
    assert torch.equal(lm.logprobs("a b"), lp)  # padding changes nothing here
