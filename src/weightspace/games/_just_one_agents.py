"""Just One bots: clue givers and guessers on MiniLM word vectors and SmolLM2 word scores.

Every bot ranks words from a fixed vocabulary; nothing is generated token by token.

* **Embedding** (:class:`WordVectors`): MiniLM embeds each word alone; a clue giver scores
  clue words by cosine similarity to the mystery word, a guesser scores nouns by cosine
  similarity to the mean of the clues' vectors.
* **LLM** (:class:`LMScorer`): one forward pass of SmolLM2-135M-Instruct over a short
  prompt ("... a good one-word clue for the secret word "ocean" is:" or "... the one-word
  clues salt, waves point to the secret word:") gives the distribution of the next token; a
  word scores the log-probability of its token `` word`` (lower- or upper-case, summed),
  minus its log-probability after the same prompt with a neutral slot ("... for the secret
  word "something" is:"): a calibration that keeps words likely after any such prompt
  ("one", "simply") from winning every time (contextual calibration, Zhao et al. 2021).
  Only words that are one token with their leading space get an LLM score (84 % of the clue
  words, 70 % of the guess words, 93 % of the mystery words); the LLM-only bots consider
  only those. The prompts are plain text, without the chat template (which would triple
  the tokens per prompt on two busy cores).
* **Hybrid**: the union of both top lists, each score standardised over it, added (a word
  without an LLM score gets the list's lowest).

A clue giver draws its clue from ``softmax(z / temperature)`` over its candidates (the
standardised scores ``z`` of the valid clue words, one per word family). A **naive** giver
draws from it as is; it ignores the other givers, who often draw the same best clue, which
cancels. A **cancellation-aware** giver (``aware=True``) assumes the other ``n - 1`` givers
are naive copies of itself and weighs each clue by the chance that none of them writes it:
``q(c) ∝ p(c) (1 - p(c))^(n-1)``, which moves mass from the obvious clue to the next ones.
A **greedy** giver always writes its best clue (every greedy copy writes the same one).

The guesser guesses its best noun that is not one of the clues; its confidence is the margin
between its two best standardised scores. Whether a confidence is enough to guess rather than
pass is the game's ``pass_below`` threshold, tuned on validation words.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from weightspace._cache import cache_dir, cached_file
from weightspace._errors import WeightspaceValueError
from weightspace.games._just_one_rules import (
    CARDS,
    CardOutcome,
    FilteredClues,
    Lexicon,
    ScoreSheet,
    check_clue,
    filter_clues,
    normalise,
    same_family,
    same_word,
)

__all__ = [
    "JustOneBrain",
    "JustOneCard",
    "JustOneRecord",
    "JustOneTable",
    "LMScorer",
    "WordVectors",
    "clue_distribution",
    "deal_cards",
    "load_just_one_brain",
    "play_just_one",
    "play_just_one_games",
    "score_just_one",
    "word_vectors",
]

logger = logging.getLogger(__name__)

Kind = Literal["embedding", "llm", "hybrid"]
Policy = Literal["naive", "aware", "greedy"]
_KINDS = ("embedding", "llm", "hybrid")
_POLICIES = ("naive", "aware", "greedy")

#: The clue givers' prompt; the next token is the clue (`` word``).
CLUE_PROMPT = 'In the word game Just One, a good one-word clue for the secret word "{word}" is:'
#: The guesser's prompt; the next token is the guess.
GUESS_PROMPT = "In the word game Just One, the one-word clues {clues} point to the secret word:"
NEUTRAL_GUESS = GUESS_PROMPT.format(clues="something")


class WordVectors:
    """MiniLM embeddings of single words, unit length, computed once.

    Args:
        encoder: A :class:`~weightspace.models.SentenceEncoder` (MiniLM), or ``None`` when
            ``vectors`` are given and no other word will be asked for.
        words: The vocabulary.
        vectors: Precomputed embeddings of ``words`` (``[len(words), dim]``), e.g. from a
            cache file.
        batch_size: Words per encoder batch.

    Raises:
        WeightspaceValueError: if neither an encoder nor matching vectors are given.
    """

    def __init__(
        self,
        encoder: Any,
        words: Sequence[str],
        *,
        vectors: Tensor | None = None,
        batch_size: int = 256,
    ) -> None:
        self.encoder = encoder
        self.words = tuple(dict.fromkeys(words))
        if vectors is None:
            if encoder is None:
                raise WeightspaceValueError("`encoder` is None and no `vectors` are given")
            vectors = encoder.encode(list(self.words), batch_size=batch_size)
        if vectors.shape[0] != len(self.words):
            raise WeightspaceValueError(
                f"`vectors` has {vectors.shape[0]} rows for {len(self.words)} distinct words"
            )
        self.matrix = vectors.float()
        self.index = {w: i for i, w in enumerate(self.words)}
        self._extra: dict[str, Tensor] = {}

    def vector(self, word: str) -> Tensor:
        """The unit vector of one word (encoded on first use if it is not in the vocabulary).

        Raises:
            WeightspaceValueError: for an unknown word without an encoder.
        """
        if word in self.index:
            return self.matrix[self.index[word]]
        if word not in self._extra:
            if self.encoder is None:
                raise WeightspaceValueError(f"`word` {word!r} is not in the vocabulary")
            self._extra[word] = self.encoder.encode([word])[0].float()
        return self._extra[word]

    def similarity(self, query: Tensor, words: Sequence[str]) -> Tensor:
        """Cosine similarity of a unit query vector to each of ``words``."""
        return torch.stack([self.vector(w) for w in words]) @ query


class LMScorer:
    """SmolLM2's next-token log-probabilities at the start of its reply, read for whole words.

    Args:
        chat: A :class:`~weightspace.models.ChatModel` (SmolLM2-135M-Instruct).

    Attributes:
        tokens: Prompt tokens run through the model so far (for tokens per second).
        seconds: Time spent in the model so far.
    """

    def __init__(self, chat: Any) -> None:
        self.chat = chat
        self.tokens = 0
        self.seconds = 0.0
        self._cache: dict[str, Tensor] = {}
        self._first: dict[str, tuple[int, ...]] = {}
        self._single: dict[str, bool] = {}

    def first_tokens(self, word: str) -> tuple[int, ...]:
        """The token of `` word`` and of `` Word`` if it is one (the space follows ``:``)."""
        if word not in self._first:
            tok = self.chat.tokenizer
            lower = tok.encode(" " + word, add_special_tokens=False)
            upper = tok.encode(" " + word.capitalize(), add_special_tokens=False)
            # A variant counts only if it is one token: a first piece such as " Sh" would
            # stand for every word that starts with it.
            ids = {lower[0]} | ({upper[0]} if len(upper) == 1 else set())
            self._first[word] = tuple(sorted(ids))
            self._single[word] = len(lower) == 1
        return self._first[word]

    def single_token(self, word: str) -> bool:
        """Whether `` word`` is one token, so that its first token's score is the word's."""
        self.first_tokens(word)
        return self._single[word]

    def prefetch(self, prompts: Sequence[str], batch_size: int = 16) -> None:
        """Compute the log-probabilities of many prompts in batches (left-padded) and cache them.

        Batching keeps the cores busy: on two loaded cores a batch of 16 runs several times
        as many tokens per second as single prompts.
        """
        todo = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        tok = self.chat.tokenizer
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            encoded = [tok.encode(p, add_special_tokens=False) for p in chunk]
            width = max(len(e) for e in encoded)
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0
            ids = torch.full((len(chunk), width), int(pad), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, e in enumerate(encoded):
                ids[row, width - len(e) :] = torch.tensor(e)
                mask[row, width - len(e) :] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            start = time.perf_counter()
            with torch.inference_mode():
                out = self.chat.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1
                )
            self.seconds += time.perf_counter() - start
            self.tokens += int(mask.sum())
            lps = out.logits[:, -1].float().log_softmax(-1)
            for p, lp in zip(chunk, lps, strict=True):
                self._cache[p] = lp

    def logprobs(self, prompt: str) -> Tensor:
        """The log-probabilities of the token that follows ``prompt`` (cached per prompt).

        Prompts are plain text that ends where the word should come (``... is:``), without
        the chat template, which would triple the tokens each prompt costs.

        Shapes:
            - output: ``[vocab_size]``.
        """
        if prompt not in self._cache:
            self.prefetch([prompt], batch_size=1)
        return self._cache[prompt]

    def word_scores(self, prompt: str, words: Sequence[str]) -> Tensor:
        """Each word's score: the log of the summed probabilities of its first tokens.

        ``-inf`` for a word that is more than one token (its first token would stand for
        every word that starts with it).
        """
        lp = self.logprobs(prompt)
        scores = [
            torch.logsumexp(lp[list(self.first_tokens(w))], dim=0)
            if self.single_token(w)
            else torch.tensor(float("-inf"))
            for w in words
        ]
        return torch.stack(scores)


def _zscore(x: Tensor) -> Tensor:
    if x.numel() < 2:
        return torch.zeros_like(x)
    return (x - x.mean()) / x.std().clamp(min=1e-6)


class JustOneBrain:
    """What a table of bots knows: vocabularies, the lexicon, MiniLM vectors, SmolLM2 scores.

    Candidate lists are cached per mystery word and per set of clues, so repeated games and
    several configurations share the work.

    Args:
        lexicon: The rules' lexicon.
        clue_words: The words bots may write as clues, most frequent first.
        guess_words: The words bots may guess, most frequent first.
        vectors: MiniLM vectors covering both vocabularies (``None``: no embedding bots).
        lm: SmolLM2 scores (``None``: no LLM bots).
        candidates: How many of each source's best words are considered.
    """

    def __init__(
        self,
        lexicon: Lexicon,
        clue_words: Sequence[str],
        guess_words: Sequence[str],
        *,
        vectors: WordVectors | None = None,
        lm: LMScorer | None = None,
        candidates: int = 40,
    ) -> None:
        self.lexicon = lexicon
        self.clue_words = tuple(clue_words)
        self.guess_words = tuple(guess_words)
        self.vectors = vectors
        self.lm = lm
        self.candidates = candidates
        # A tiny frequency prior (at most 0.02 nats) breaks ties between equal LLM scores.
        self._clue_prior = -1e-6 * torch.arange(len(self.clue_words), dtype=torch.float32)
        self._guess_prior = -1e-6 * torch.arange(len(self.guess_words), dtype=torch.float32)
        self._clue_cache: dict[tuple[str, str], tuple[tuple[str, ...], Tensor]] = {}
        self._guess_cache: dict[tuple[str, tuple[str, ...]], tuple[tuple[str, ...], Tensor]] = {}
        self._clue_rows: Tensor | None = None
        self._guess_rows: Tensor | None = None
        self._clue_tokens: Tensor | None = None
        self._guess_tokens: Tensor | None = None

    def _need(self, kind: str) -> None:
        if kind not in _KINDS:
            raise WeightspaceValueError(f"`kind` must be one of {_KINDS}, got {kind!r}")
        if kind in ("embedding", "hybrid") and self.vectors is None:
            raise WeightspaceValueError(f"`kind` {kind!r} needs MiniLM `vectors` in the brain")
        if kind in ("llm", "hybrid") and self.lm is None:
            raise WeightspaceValueError(f"`kind` {kind!r} needs an `lm` (SmolLM2) in the brain")

    def _rows(self, words: tuple[str, ...]) -> Tensor:
        assert self.vectors is not None
        return torch.stack([self.vectors.vector(w) for w in words])

    def _token_table(self, words: tuple[str, ...]) -> Tensor:
        assert self.lm is not None
        firsts = [self.lm.first_tokens(w) for w in words]
        single = [int(self.lm.single_token(w)) for w in words]
        return torch.tensor([(f[0], f[-1], s) for f, s in zip(firsts, single, strict=True)])

    def _embedding_scores(self, query: Tensor, which: str) -> Tensor:
        if which == "clue":
            if self._clue_rows is None:
                self._clue_rows = self._rows(self.clue_words)
            return self._clue_rows @ query
        if self._guess_rows is None:
            self._guess_rows = self._rows(self.guess_words)
        return self._guess_rows @ query

    def _lm_scores(self, prompt: str, which: str) -> Tensor:
        assert self.lm is not None
        if which == "clue":
            if self._clue_tokens is None:
                self._clue_tokens = self._token_table(self.clue_words)
            table, prior = self._clue_tokens, self._clue_prior
        else:
            if self._guess_tokens is None:
                self._guess_tokens = self._token_table(self.guess_words)
            table, prior = self._guess_tokens, self._guess_prior
        # Calibrated: minus the same prompt's scores with a neutral slot, so that words
        # likely after any such prompt ("one", "simply") do not win for every word.
        neutral = CLUE_PROMPT.format(word="something") if which == "clue" else NEUTRAL_GUESS
        lp = self.lm.logprobs(prompt) - self.lm.logprobs(neutral)
        both = torch.stack([lp[table[:, 0]], lp[table[:, 1]]], dim=1)
        # A word whose two spellings share a first token counts it once.
        same = table[:, 0] == table[:, 1]
        summed = torch.where(same, both[:, 0], torch.logsumexp(both, dim=1))
        # Only one-token words have a score of their own; the others get none.
        return torch.where(table[:, 2] == 1, summed + prior, float("-inf"))

    def _combine(
        self, kind: str, emb: Tensor | None, lm: Tensor | None, words: tuple[str, ...]
    ) -> tuple[list[int], Tensor]:
        k = self.candidates
        if kind == "embedding":
            assert emb is not None
            top = emb.topk(min(4 * k, len(words))).indices.tolist()
            return top, emb[top]
        if kind == "llm":
            assert lm is not None
            top = lm.topk(min(4 * k, int(torch.isfinite(lm).sum()))).indices.tolist()
            return top, lm[top]
        assert emb is not None
        assert lm is not None
        top = list(
            dict.fromkeys(
                emb.topk(min(2 * k, len(words))).indices.tolist()
                + lm.topk(min(2 * k, len(words))).indices.tolist()
            )
        )
        lm_top = lm[top]
        finite = torch.isfinite(lm_top)
        floor = lm_top[finite].min() if bool(finite.any()) else torch.tensor(0.0)
        # A word the LLM cannot score (several tokens) gets the lowest LLM score shown.
        return top, _zscore(emb[top]) + _zscore(torch.where(finite, lm_top, floor))

    def clue_candidates(self, mystery: str, kind: Kind) -> tuple[tuple[str, ...], Tensor]:
        """The valid clues a ``kind`` giver considers for ``mystery``, best first, and z-scores.

        At most :attr:`candidates` words, one per word family, none invalid for ``mystery``.
        """
        self._need(kind)
        key = (mystery, kind)
        if key in self._clue_cache:
            return self._clue_cache[key]
        emb = lm = None
        if kind != "llm":
            assert self.vectors is not None
            emb = self._embedding_scores(self.vectors.vector(mystery), "clue")
        if kind != "embedding":
            lm = self._lm_scores(CLUE_PROMPT.format(word=mystery), "clue")
        top, scores = self._combine(kind, emb, lm, self.clue_words)
        order = scores.argsort(descending=True).tolist()
        chosen: list[str] = []
        values: list[float] = []
        for i in order:
            word = self.clue_words[top[i]]
            if check_clue(word, mystery, self.lexicon) is not None:
                continue
            if any(same_family(word, c, self.lexicon) for c in chosen):
                continue
            chosen.append(word)
            values.append(float(scores[i]))
            if len(chosen) == self.candidates:
                break
        result = (tuple(chosen), _zscore(torch.tensor(values)))
        self._clue_cache[key] = result
        return result

    def guess_candidates(self, clues: Sequence[str], kind: Kind) -> tuple[tuple[str, ...], Tensor]:
        """The words a ``kind`` guesser considers for these clues, best first, and z-scores.

        Words that are one of the clues (up to inflection, gender or spelling) are left out.

        Raises:
            WeightspaceValueError: if ``clues`` is empty.
        """
        self._need(kind)
        if not clues:
            raise WeightspaceValueError("`clues` is empty; a guesser needs at least one clue")
        key = (kind, tuple(clues))
        if key in self._guess_cache:
            return self._guess_cache[key]
        emb = lm = None
        if kind != "llm":
            assert self.vectors is not None
            centre = torch.stack([self.vectors.vector(normalise(c) or c) for c in clues]).mean(0)
            centre = centre / centre.norm().clamp(min=1e-9)
            emb = self._embedding_scores(centre, "guess")
        if kind != "embedding":
            lm = self._lm_scores(GUESS_PROMPT.format(clues=", ".join(clues)), "guess")
        top, scores = self._combine(kind, emb, lm, self.guess_words)
        order = scores.argsort(descending=True).tolist()
        chosen: list[str] = []
        values: list[float] = []
        for i in order:
            word = self.guess_words[top[i]]
            if any(same_word(word, c, self.lexicon) for c in clues):
                continue
            chosen.append(word)
            values.append(float(scores[i]))
            if len(chosen) == self.candidates:
                break
        result = (tuple(chosen), _zscore(torch.tensor(values)))
        self._guess_cache[key] = result
        return result

    def prefetch_clues(self, words: Sequence[str], kind: Kind) -> None:
        """Run the LLM on the clue prompts of many mystery words at once (if ``kind`` uses it)."""
        self._need(kind)
        if kind != "embedding" and self.lm is not None:
            self.lm.prefetch([CLUE_PROMPT.format(word=w) for w in ("something", *words)])

    def prefetch_guesses(self, clue_sets: Sequence[Sequence[str]], kind: Kind) -> None:
        """Run the LLM on the guess prompts of many sets of clues at once."""
        self._need(kind)
        if kind != "embedding" and self.lm is not None:
            prompts = [GUESS_PROMPT.format(clues=", ".join(c)) for c in clue_sets]
            self.lm.prefetch([NEUTRAL_GUESS, *prompts])

    def give_clue(
        self,
        mystery: str,
        kind: Kind,
        policy: Policy,
        *,
        others: int,
        temperature: float,
        generator: torch.Generator,
    ) -> str:
        """One giver's clue for ``mystery``.

        Args:
            mystery: The mystery word.
            kind: ``"embedding"``, ``"llm"`` or ``"hybrid"``.
            policy: ``"naive"``, ``"aware"`` (plans around cancellation) or ``"greedy"``.
            others: How many other clue givers there are.
            temperature: The softmax temperature over standardised scores.
            generator: The giver's random numbers.

        Raises:
            WeightspaceValueError: for an unknown policy or a non-positive temperature.
        """
        if policy not in _POLICIES:
            raise WeightspaceValueError(f"`policy` must be one of {_POLICIES}, got {policy!r}")
        if temperature <= 0:
            raise WeightspaceValueError(f"`temperature` must be positive, got {temperature}")
        words, z = self.clue_candidates(mystery, kind)
        if not words:
            return ""
        if policy == "greedy":
            return words[0]
        p = clue_distribution(z, temperature, aware=policy == "aware", others=others)
        return words[int(torch.multinomial(p, 1, generator=generator))]

    def guess(self, clues: Sequence[str], kind: Kind) -> tuple[str, float]:
        """The guess for these clues and the guesser's confidence (margin of its top two)."""
        words, z = self.guess_candidates(clues, kind)
        if not words:
            return "", float("-inf")
        margin = float(z[0] - z[1]) if len(words) > 1 else float("inf")
        return words[0], margin


def clue_distribution(z: Tensor, temperature: float, *, aware: bool, others: int) -> Tensor:
    """A giver's distribution over its candidate clues.

    ``p = softmax(z / temperature)``; an aware giver uses ``q ∝ p (1 - p)^others`` (the chance
    that none of ``others`` naive copies writes the same clue).

    Example:
        >>> z = torch.tensor([2.0, 1.0, 0.0])
        >>> [round(float(x), 3) for x in clue_distribution(z, 1.0, aware=False, others=3)]
        [0.665, 0.245, 0.09]
        >>> [round(float(x), 3) for x in clue_distribution(z, 1.0, aware=True, others=3)]
        [0.126, 0.532, 0.342]
    """
    p = torch.softmax(z / temperature, dim=0)
    if not aware:
        return p
    q = p * (1 - p).clamp(min=0) ** others
    total = q.sum()
    return q / total if total > 0 else p


@dataclasses.dataclass(frozen=True)
class JustOneTable:
    """One configuration of bots around the table.

    Args:
        name: A label for tables.
        giver: The clue givers' model: ``"embedding"``, ``"llm"`` or ``"hybrid"``.
        policy: The clue givers' policy: ``"naive"``, ``"aware"`` or ``"greedy"``.
        guesser: The guesser's model.
        givers: How many clue givers (a five-player table has four).
        temperature: The givers' softmax temperature.
    """

    name: str
    giver: Kind
    policy: Policy
    guesser: Kind
    givers: int = 4
    temperature: float = 0.5

    def __post_init__(self) -> None:
        if self.giver not in _KINDS or self.guesser not in _KINDS:
            raise WeightspaceValueError(
                f"`giver` and `guesser` must be among {_KINDS}, got {self.giver!r}, "
                f"{self.guesser!r}"
            )
        if self.policy not in _POLICIES:
            raise WeightspaceValueError(f"`policy` must be among {_POLICIES}, got {self.policy!r}")
        if not 2 <= self.givers <= 6:
            raise WeightspaceValueError(
                f"`givers` must be 2 to 6 (3 to 7 players), got {self.givers}"
            )


@dataclasses.dataclass(frozen=True)
class JustOneCard:
    """One card played by bots: the clues, what survived, the guess and its confidence."""

    mystery: str
    written: tuple[str, ...]
    kept: tuple[str, ...]
    removed: dict[int, str]
    guess: str | None
    confidence: float
    right: bool

    def outcome(self, pass_below: float) -> CardOutcome:
        """How the card ends when the guesser passes below a confidence of ``pass_below``."""
        if not self.kept:
            return CardOutcome.NO_CLUES
        if self.confidence < pass_below:
            return CardOutcome.PASS
        return CardOutcome.RIGHT if self.right else CardOutcome.WRONG


@dataclasses.dataclass(frozen=True)
class JustOneRecord:
    """A game of bots: one :class:`JustOneCard` per card of the deck, in order.

    Every card is simulated, also those a wrong guess will discard, each with random numbers
    of its own, so :func:`score_just_one` can score the game for any pass threshold.
    """

    config: str
    seed: int
    cards: tuple[JustOneCard, ...]


def play_just_one(
    brain: JustOneBrain, config: JustOneTable, words: Sequence[str], *, seed: int
) -> JustOneRecord:
    """Play one game of bots on a deck of mystery words (13 in a real game).

    Args:
        brain: The bots' models.
        config: The table.
        words: The deck, in playing order.
        seed: The game's seed; card ``k`` of giver ``g`` draws from seed
            ``(seed, k, g)``, so the cards are independent of each other.

    Raises:
        WeightspaceValueError: if ``words`` is empty.
    """
    return play_just_one_games(brain, config, [words], [seed])[0]


def play_just_one_games(
    brain: JustOneBrain,
    config: JustOneTable,
    decks: Sequence[Sequence[str]],
    seeds: Sequence[int],
) -> list[JustOneRecord]:
    """Play many games of bots; the LLM's prompts of all games go through it in batches.

    The same as :func:`play_just_one` on each deck and seed, up to the float rounding of
    batched forward passes.

    Raises:
        WeightspaceValueError: if a deck is empty or the lengths differ.
    """
    if len(decks) != len(seeds):
        raise WeightspaceValueError(f"{len(decks)} `decks` but {len(seeds)} `seeds`")
    if any(not d for d in decks):
        raise WeightspaceValueError("a deck in `decks` is empty; pass the mystery words")
    brain.prefetch_clues([w for d in decks for w in d], config.giver)
    turns: list[list[tuple[str, FilteredClues]]] = []
    for words, seed in zip(decks, seeds, strict=True):
        game = []
        for k, mystery in enumerate(words):
            clues = []
            for g in range(config.givers):
                gen = torch.Generator().manual_seed(((seed * 1009 + k) * 17 + g) % (2**63))
                clues.append(
                    brain.give_clue(
                        mystery,
                        config.giver,
                        config.policy,
                        others=config.givers - 1,
                        temperature=config.temperature,
                        generator=gen,
                    )
                )
            game.append((mystery, filter_clues(clues, mystery, brain.lexicon)))
        turns.append(game)
    brain.prefetch_guesses([r.kept for g in turns for _, r in g if r.kept], config.guesser)
    records = []
    for game, seed in zip(turns, seeds, strict=True):
        cards = []
        for mystery, result in game:
            if result.kept:
                guess, confidence = brain.guess(result.kept, config.guesser)
                right = bool(guess) and same_word(guess, mystery, brain.lexicon)
            else:
                guess, confidence, right = None, float("-inf"), False
            cards.append(
                JustOneCard(
                    mystery, result.written, result.kept, result.removed, guess, confidence, right
                )
            )
        records.append(JustOneRecord(config.name, seed, tuple(cards)))
    return records


def score_just_one(game: JustOneRecord, pass_below: float = float("-inf")) -> ScoreSheet:
    """Score a game of bots by the rules, the guesser passing below ``pass_below``.

    Example:
        >>> right = JustOneCard("sun", ("sky",), ("sky",), {}, "sun", 2.0, True)
        >>> wrong = JustOneCard("moon", ("sky",), ("sky",), {}, "star", 0.1, False)
        >>> game = JustOneRecord("demo", 0, (right, wrong, right, right))
        >>> score_just_one(game).score, score_just_one(game, pass_below=0.5).score
        (2, 3)
    """
    sheet = ScoreSheet([c.mystery for c in game.cards])
    for card in game.cards:
        if sheet.over:
            break
        if sheet.next_card() != card.mystery:
            continue  # discarded by a wrong guess
        sheet.record(card.mystery, card.outcome(pass_below))
    return sheet


def deal_cards(words: Sequence[str], seed: int, cards: int = CARDS) -> tuple[str, ...]:
    """A seeded deck of ``cards`` distinct mystery words drawn from ``words``.

    Raises:
        WeightspaceValueError: if there are fewer distinct words than cards.
    """
    pool = list(dict.fromkeys(words))
    if len(pool) < cards:
        raise WeightspaceValueError(f"`words` has {len(pool)} distinct words; a deck needs {cards}")
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:cards]
    return tuple(pool[i] for i in order.tolist())


def word_vectors(words: Sequence[str], encoder: Any = None) -> WordVectors:
    """MiniLM vectors of ``words``, cached on disk under the weightspace cache folder.

    Args:
        words: The vocabulary.
        encoder: A MiniLM :class:`~weightspace.models.SentenceEncoder`; loaded if ``None``.
    """
    from weightspace.models import minilm

    encoder = minilm() if encoder is None else encoder
    unique = list(dict.fromkeys(words))
    digest = hashlib.sha256("\n".join(unique).encode()).hexdigest()[:16]
    path = cache_dir("games", "just_one") / f"minilm_words_{digest}.pt"

    def build(tmp: Path) -> None:
        vectors = encoder.encode(unique, batch_size=256)
        torch.save({"words": unique, "vectors": vectors}, tmp)

    cached_file(path, build, meta={"words": digest, "model": "all-MiniLM-L6-v2", "version": 1})
    data = torch.load(path, weights_only=True)
    return WordVectors(encoder, data["words"], vectors=data["vectors"])


def load_just_one_brain(
    *,
    embedding: bool = True,
    llm: bool = True,
    clue_zipf: float = 3.5,
    guess_zipf: float = 3.0,
    candidates: int = 40,
) -> JustOneBrain:
    """The bots' models with the default vocabularies (see :mod:`._just_one_words`).

    Args:
        embedding: Load MiniLM word vectors (cached on disk after the first call).
        llm: Load SmolLM2-135M-Instruct (20 to 40 s on two cores).
        clue_zipf: The least Zipf frequency of a clue word.
        guess_zipf: The least Zipf frequency of a guessed word.
        candidates: How many words each source proposes.
    """
    from weightspace.games._just_one_rules import wordnet_lexicon
    from weightspace.games._just_one_words import clue_words, guess_words, mystery_words

    clues = clue_words(min_zipf=clue_zipf)
    guesses = guess_words(min_zipf=guess_zipf)
    vectors = None
    if embedding:
        vectors = word_vectors([*clues, *guesses, *mystery_words()])
    lm = None
    if llm:
        from weightspace.models import smollm2

        lm = LMScorer(smollm2())
    return JustOneBrain(
        wordnet_lexicon(), clues, guesses, vectors=vectors, lm=lm, candidates=candidates
    )
