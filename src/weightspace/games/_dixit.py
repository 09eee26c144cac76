"""Dixit: exact rules and scoring, a deck of Tux Paint cards, and bots of several strengths.

A storyteller gives a hint for a secret card of their hand; every other player puts in the card
of their hand that fits the hint best; the played cards are shuffled face up and everyone but
the storyteller votes for the card they think is the storyteller's (never their own).
:func:`score_round` applies the rulebook's scoring; :class:`DixitGame` deals, rotates the
storyteller, refills hands of six and ends the game when the deck runs out or a player reaches
30 points. :func:`play_game` plays a whole game between bots.

Players see cards only through an image-text scorer (:class:`Eyes`); a storyteller knows what
its own card shows (the stamp's caption stands for looking at it). The bots:

* :class:`RandomBot`: random card, a hint of some other card, random choice and vote;
* :class:`LiteralBot`: a random card of its hand and its literal caption as the hint;
* :class:`AbstractBot`: a random card and the first evocative hint a :class:`HintWriter`
  (SmolLM2-135M-Instruct, :class:`LLMHintWriter`) proposes for it;
* :class:`StrategistBot`: every card of its hand and every hint (literal and written) is a
  candidate; it simulates the other players with the scorers it has (their hands drawn from
  the cards it has not seen, their card choice and vote by the scorers) and tells the
  candidate with the best expected score, that is a hint that some but not all will find.

As chooser and voter, every bot but the random one takes the card its scorer matches best with
the hint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from weightspace._cache import atomic_path, cache_dir, update_json_mapping
from weightspace._errors import WeightspaceValueError
from weightspace.games._scorers import EmbeddingScorer, ImageTextScorer
from weightspace.games._stamps import StampImages

__all__ = [
    "BOT_KINDS",
    "HAND_SIZE",
    "WINNING_SCORE",
    "AbstractBot",
    "DixitBot",
    "DixitGame",
    "DixitRound",
    "Eyes",
    "HintWriter",
    "LLMHintWriter",
    "LiteralBot",
    "RandomBot",
    "StrategistBot",
    "dixit_deck",
    "literal_hint",
    "make_bot",
    "play_game",
    "read_dixit_games",
    "score_round",
    "write_dixit_games",
]

logger = logging.getLogger(__name__)

HAND_SIZE = 6
"""Cards in every hand (the rulebook's six)."""

WINNING_SCORE = 30
"""The game ends after the round in which a player reaches this score."""

Phase = Literal["tell", "play", "vote", "over"]


def score_round(
    storyteller: int, played: Mapping[int, int], votes: Mapping[int, int]
) -> dict[int, int]:
    """Points of one round, by the rulebook.

    If all or none of the other players find the storyteller's card, the storyteller scores 0
    and every other player 2; otherwise the storyteller and every player who found the card
    score 3. Every player but the storyteller also scores 1 per vote their own card received.

    Args:
        storyteller: The storyteller's seat.
        played: The card each player put in (the storyteller's included), by seat.
        votes: The card each player but the storyteller voted for, by seat.

    Returns:
        Points of every seat in ``played`` (zeros included).

    Raises:
        WeightspaceValueError: if the storyteller is not in ``played`` or votes, a player did
            not vote or voted for their own card or a card not on the table, or two players
            put in the same card.

    Example:
        >>> score_round(0, {0: 10, 1: 11, 2: 12, 3: 13}, {1: 10, 2: 11, 3: 12})
        {0: 3, 1: 4, 2: 1, 3: 0}
    """
    if storyteller not in played:
        raise WeightspaceValueError(
            f"`storyteller` {storyteller} has no card in `played` {dict(played)}; add it"
        )
    if storyteller in votes:
        raise WeightspaceValueError(
            f"`votes` holds a vote of the storyteller (seat {storyteller}); the storyteller "
            "does not vote"
        )
    if len(set(played.values())) != len(played):
        raise WeightspaceValueError(f"`played` puts in one card twice: {dict(played)}")
    others = [p for p in played if p != storyteller]
    missing = [p for p in others if p not in votes]
    extra = [p for p in votes if p not in played]
    if missing or extra:
        raise WeightspaceValueError(
            f"`votes` must hold one vote per player but the storyteller: missing {missing}, "
            f"not playing {extra}"
        )
    owner = {card: p for p, card in played.items()}
    for p, card in votes.items():
        if card not in owner:
            raise WeightspaceValueError(
                f"seat {p} voted for card {card}, which is not on the table "
                f"{sorted(owner)}; vote for a played card"
            )
        if owner[card] == p:
            raise WeightspaceValueError(
                f"seat {p} voted for their own card {card}; a player cannot vote for their own card"
            )
    secret = played[storyteller]
    found = [p for p in others if votes[p] == secret]
    points = dict.fromkeys(played, 0)
    if 0 < len(found) < len(others):
        points[storyteller] = 3
        for p in found:
            points[p] += 3
    else:
        for p in others:
            points[p] += 2
    for card in votes.values():
        if card != secret:
            points[owner[card]] += 1
    return points


def literal_hint(caption: str) -> str:
    """The literal hint of a stamp caption, such as ``"albino peahen"`` for ``"An albino peahen."``.

    Args:
        caption: A Tux Paint caption.

    Returns:
        The caption without its article, parentheses and final period, in lower case.
    """
    text = re.sub(r"\([^)]*\)", "", caption).strip().rstrip(".!").strip()
    text = re.sub(r"^(a|an|the|some)\s+", "", text, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", text).lower()


def dixit_deck(
    stamps: StampImages, cards: int = 96, *, seed: int = 0
) -> tuple[StampImages, StampImages]:
    """Draw a Dixit deck of stamps with distinct captions, and the stamps left for training.

    Cards are drawn at random among stamps whose literal hints are distinct and at most three
    words long, spread over the stamp folders in proportion to their size. The second set holds
    every stamp whose caption is unlike every card's (to train a scorer that has never seen a
    card or its caption).

    Args:
        stamps: The stamps (:func:`stamp_images`).
        cards: Deck size (the game box has 84).
        seed: Seeds the draw.

    Returns:
        ``(deck, rest)``.

    Raises:
        WeightspaceValueError: if there are not enough usable stamps for ``cards``.
    """
    seen: dict[str, int] = {}
    for i, caption in enumerate(stamps.captions):
        hint = literal_hint(caption)
        if hint and len(hint.split()) <= 3 and hint not in seen:
            seen[hint] = i
    usable = sorted(seen.values())
    if not 1 <= cards <= len(usable):
        raise WeightspaceValueError(
            f"`cards` must be in [1, {len(usable)}] (stamps with distinct short captions), got "
            f"{cards}"
        )
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(usable), generator=gen).tolist()
    by_folder: dict[str, list[int]] = {}
    for k in perm:
        i = usable[k]
        by_folder.setdefault(stamps.categories[i], []).append(i)
    # Proportional to folder size: interleave the folders by their running share.
    picked: list[int] = []
    taken = dict.fromkeys(by_folder, 0)
    total = len(usable)
    while len(picked) < cards:
        folder = min(
            (f for f in by_folder if taken[f] < len(by_folder[f])),
            key=lambda f: ((taken[f] + 1) * total / len(by_folder[f]), f),
        )
        picked.append(by_folder[folder][taken[folder]])
        taken[folder] += 1
    picked.sort()
    words = {literal_hint(stamps.captions[i]) for i in picked}
    rest = [i for i in range(len(stamps)) if literal_hint(stamps.captions[i]) not in words]
    return stamps.subset(picked), stamps.subset(rest)


class Eyes:
    """What one player sees: a scorer's similarities between the deck's cards and hints.

    Card embeddings are computed once; each hint's column of similarities is cached, so a
    game asks the scorer only about new hints.

    Args:
        scorer: Any :class:`ImageTextScorer`.
        cards: The deck's images, ``[N, 3, H, W]``.
    """

    def __init__(self, scorer: ImageTextScorer, cards: Tensor) -> None:
        self.scorer = scorer
        self.name = scorer.name
        self.cards = cards.shape[0]
        self._images = cards
        self._embedded: Tensor | None = None
        if isinstance(scorer, EmbeddingScorer):
            self._embedded = scorer.embed_images(cards)
        self._columns: dict[str, Tensor] = {}

    def similarity(self, hints: Sequence[str]) -> Tensor:
        """Similarities of every card with every hint, ``[N, len(hints)]``.

        Args:
            hints: The hints.

        Returns:
            The ``[N, T]`` similarities.
        """
        new = [h for h in dict.fromkeys(hints) if h not in self._columns]
        if new:
            if self._embedded is not None and isinstance(self.scorer, EmbeddingScorer):
                cols = self._embedded @ self.scorer.embed_texts(new).T
            else:
                with torch.inference_mode():
                    cols = self.scorer.score(self._images, new)
            for h, c in zip(new, cols.T, strict=True):
                self._columns[h] = c.float().clone()
        return torch.stack([self._columns[h] for h in hints], dim=1)

    def best(self, cards: Sequence[int], hint: str) -> int:
        """The card among ``cards`` this scorer matches best with ``hint``.

        Args:
            cards: Candidate card ids.
            hint: The hint.

        Returns:
            A card id of ``cards`` (the first on ties).
        """
        col = self.similarity([hint])[:, 0]
        scores = col[torch.as_tensor(list(cards), dtype=torch.long)]
        return int(list(cards)[int(scores.argmax())])


@runtime_checkable
class HintWriter(Protocol):
    """Writes evocative hints for a thing: ``hints("frog") -> ["pond", "leap", ...]``."""

    def hints(self, thing: str) -> list[str]:
        """Return candidate hints for a picture of ``thing``, best first (may be empty)."""
        ...


_SYSTEM = (
    "You give short poetic hints for pictures. Answer with five words or short phrases "
    "separated by commas, never the name of the thing itself."
)
_SHOTS = (
    ("ocean", "waves, salt, deep, sailor, endless blue"),
    ("candle", "flame, birthday, night, glow, melting time"),
)


def _clean_hints(thing: str, reply: str, limit: int) -> list[str]:
    """Split a reply into distinct hints of 1-3 words that do not give the thing's words."""
    stems = {w[:4] for w in re.findall(r"[a-z]+", thing.lower()) if len(w) > 2}
    out: list[str] = []
    for part in re.split(r"[,;\n]", reply):
        hint = re.sub(r"[^a-z' -]", "", part.lower()).strip(" '-")
        hint = re.sub(r"\s+", " ", hint)
        words = re.findall(r"[a-z]+", hint)
        if not words or len(words) > 3 or hint in out:
            continue
        if any(w[:4] in stems for w in words if len(w) > 2):
            continue
        out.append(hint)
        if len(out) == limit:
            break
    return out


class LLMHintWriter:
    """Hints written by a chat model (SmolLM2-135M-Instruct), cached on disk.

    The model gets a system message and two worked examples, then ``"Hints for a picture of:
    <thing>"``; decoding is greedy with a repetition penalty of 1.2. The reply is split at
    commas; hints longer than three words or sharing a word stem with the thing are dropped.
    Replies are cached by model and prompt in the weightspace cache (``games/``), so a study
    asks the model once per card.

    Args:
        chat: A :class:`weightspace.models.ChatModel`; ``None`` loads
            :func:`weightspace.models.smollm2`.
        max_new_tokens: The most tokens per reply.
        limit: The most hints kept per thing.
        cache: Keep replies in a JSON file of the cache folder.

    Attributes:
        tokens: Tokens generated so far (cached replies excluded).
        seconds: Time spent generating them.
    """

    def __init__(
        self, chat: Any = None, *, max_new_tokens: int = 24, limit: int = 5, cache: bool = True
    ) -> None:
        if chat is None:
            from weightspace.models import smollm2

            chat = smollm2()
        self.chat = chat
        self.max_new_tokens = max_new_tokens
        self.limit = limit
        self.tokens = 0
        self.seconds = 0.0
        key = hashlib.sha256(json.dumps([_SYSTEM, _SHOTS, max_new_tokens]).encode())
        for p in list(chat.parameters())[:1]:
            key.update(p.detach()[:4].contiguous().float().numpy().tobytes())
        self._file = cache_dir("games") / f"dixit-hints-{key.hexdigest()[:16]}.json"
        self._cache = cache
        self._replies: dict[str, str] = {}
        if cache and self._file.is_file():
            try:
                self._replies = dict(json.loads(self._file.read_text(encoding="utf-8")))
            except (json.JSONDecodeError, TypeError, ValueError):
                logger.warning("ignoring the unreadable hint cache %s", self._file)

    def reply(self, thing: str) -> str:
        """The model's raw reply for ``thing`` (from the cache when asked before)."""
        if thing in self._replies:
            return self._replies[thing]
        tok = self.chat.tokenizer
        messages = [{"role": "system", "content": _SYSTEM}]
        for a, b in _SHOTS:
            messages.append({"role": "user", "content": f"Hints for a picture of: {a}"})
            messages.append({"role": "assistant", "content": b})
        messages.append({"role": "user", "content": f"Hints for a picture of: {thing}"})
        inputs = tok.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.chat.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                repetition_penalty=1.2,
            )
        new = out[0, inputs["input_ids"].shape[1] :]
        self.seconds += time.perf_counter() - start
        self.tokens += int(new.numel())
        text = str(tok.decode(new, skip_special_tokens=True)).strip()
        self._replies[thing] = text
        if self._cache:
            # Merged under a lock: another process may have added replies meanwhile.
            self._replies.update(update_json_mapping(self._file, {thing: text}))
        return text

    def hints(self, thing: str) -> list[str]:
        """Evocative hints for a picture of ``thing``, in the model's order.

        Args:
            thing: What the picture shows (a literal hint).

        Returns:
            Up to :attr:`limit` hints; empty when the model gave none usable.
        """
        return _clean_hints(thing, self.reply(thing), self.limit)

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second so far (``nan`` before the first reply)."""
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


class DixitBot(Protocol):
    """A Dixit player: storyteller, card chooser and voter."""

    name: str

    def tell(self, hand: Sequence[int], players: int, gen: torch.Generator) -> tuple[int, str]:
        """Pick a card of ``hand`` and a hint for it (``players`` seats at the table)."""
        ...

    def choose(self, hand: Sequence[int], hint: str, gen: torch.Generator) -> int:
        """Pick the card of ``hand`` to put in for ``hint``."""
        ...

    def vote(self, table: Sequence[int], own: int, hint: str, gen: torch.Generator) -> int:
        """Vote for a card of ``table`` other than ``own``."""
        ...


def _pick(items: Sequence[Any], gen: torch.Generator) -> Any:
    return items[int(torch.randint(len(items), (1,), generator=gen))]


@dataclass
class RandomBot:
    """Random everything: a random card, a hint of another random card, random choice and vote.

    Args:
        hints: The literal hints of the deck's cards (index = card id).
        name: The bot's label.
    """

    hints: Sequence[str]
    name: str = field(default="random", kw_only=True)

    def tell(self, hand: Sequence[int], players: int, gen: torch.Generator) -> tuple[int, str]:
        """A random card of ``hand`` and the literal hint of a random card outside it."""
        card = _pick(hand, gen)
        outside = [c for c in range(len(self.hints)) if c not in hand]
        return int(card), self.hints[_pick(outside or list(hand), gen)]

    def choose(self, hand: Sequence[int], hint: str, gen: torch.Generator) -> int:
        """A random card of ``hand``."""
        return int(_pick(hand, gen))

    def vote(self, table: Sequence[int], own: int, hint: str, gen: torch.Generator) -> int:
        """A random card of ``table`` other than ``own``."""
        return int(_pick([c for c in table if c != own], gen))


@dataclass
class LiteralBot:
    """Tells a random card by its literal caption; chooses and votes with its scorer.

    Args:
        eyes: What it sees.
        hints: The literal hints of the deck's cards (index = card id).
        name: The bot's label.
    """

    eyes: Eyes
    hints: Sequence[str]
    name: str = field(default="literal", kw_only=True)

    def tell(self, hand: Sequence[int], players: int, gen: torch.Generator) -> tuple[int, str]:
        """A random card of ``hand`` and its literal hint."""
        card = int(_pick(hand, gen))
        return card, self.hints[card]

    def choose(self, hand: Sequence[int], hint: str, gen: torch.Generator) -> int:
        """The card of ``hand`` the scorer matches best with ``hint``."""
        return self.eyes.best(hand, hint)

    def vote(self, table: Sequence[int], own: int, hint: str, gen: torch.Generator) -> int:
        """The card of ``table`` (not ``own``) the scorer matches best with ``hint``."""
        return self.eyes.best([c for c in table if c != own], hint)


@dataclass
class AbstractBot(LiteralBot):
    """Tells a random card by the first hint a :class:`HintWriter` writes for it.

    Falls back on the literal hint when the writer gives none. Chooses and votes like
    :class:`LiteralBot`.

    Args:
        eyes: What it sees.
        hints: The literal hints of the deck's cards (index = card id).
        writer: Writes evocative hints.
        name: The bot's label.
    """

    writer: HintWriter | None = None
    name: str = field(default="abstract", kw_only=True)

    def tell(self, hand: Sequence[int], players: int, gen: torch.Generator) -> tuple[int, str]:
        """A random card of ``hand`` and the writer's first hint for it."""
        card = int(_pick(hand, gen))
        written = self.writer.hints(self.hints[card]) if self.writer is not None else []
        return card, written[0] if written else self.hints[card]


@dataclass
class StrategistBot(LiteralBot):
    """Tells the card and hint with the best expected score against simulated players.

    Candidates are every card of its hand with its literal hint and the hints the writer gives
    for it. For each candidate, ``simulations`` tables are drawn: every other player gets six
    cards from those the bot has not seen and a scorer from ``models`` (the scorers the bot
    has); they put in the card their scorer matches best and vote for the best other card
    (never their own). The expected score is 3 times the share of tables on which some but not
    all find the card; the best candidate is told (the first on ties). The same simulated
    tables serve every candidate (common random numbers).

    Args:
        eyes: What it sees (as chooser and voter).
        hints: The literal hints of the deck's cards (index = card id).
        writer: Writes evocative hints; ``None`` uses literal hints only.
        models: The scorers it models the other players with; empty uses ``[eyes]``.
        simulations: Tables drawn per decision.
        name: The bot's label.

    Attributes:
        last_plan: The candidates of the last :meth:`tell` as ``(card, hint, expected
            points)``, in candidate order.
    """

    writer: HintWriter | None = None
    models: Sequence[Eyes] = ()
    simulations: int = 128
    name: str = field(default="strategist", kw_only=True)
    last_plan: list[tuple[int, str, float]] = field(default_factory=list, kw_only=True)

    def candidates(self, hand: Sequence[int]) -> list[tuple[int, str]]:
        """Every ``(card, hint)`` the bot considers for ``hand``."""
        out: list[tuple[int, str]] = []
        for card in hand:
            literal = self.hints[card]
            written = self.writer.hints(literal) if self.writer is not None else []
            for hint in dict.fromkeys([literal, *written]):
                out.append((int(card), hint))
        return out

    def expected_points(
        self, hand: Sequence[int], players: int, candidates: Sequence[tuple[int, str]], seed: int
    ) -> Tensor:
        """The storyteller's expected points of each candidate against simulated players.

        Args:
            hand: The bot's hand.
            players: Seats at the table (the bot included).
            candidates: ``(card, hint)`` pairs.
            seed: Seeds the simulated hands and scorers.

        Returns:
            ``[len(candidates)]`` expected points in ``[0, 3]``.
        """
        models = list(self.models) or [self.eyes]
        n_cards = self.eyes.cards
        others = players - 1
        pool = torch.tensor([c for c in range(n_cards) if c not in set(hand)], dtype=torch.long)
        if pool.numel() < others * HAND_SIZE:
            raise WeightspaceValueError(
                f"the deck of {n_cards} cards is too small to simulate {others} other hands"
            )
        hints = [h for _, h in candidates]
        sims = torch.stack([m.similarity(hints) for m in models])  # [K, N, C]
        n_cand = len(candidates)
        gen = torch.Generator().manual_seed(seed)
        s = self.simulations
        order = torch.rand(s, pool.numel(), generator=gen).argsort(dim=1)[:, : others * HAND_SIZE]
        hands = pool[order].view(s, others, HAND_SIZE)  # [S, O, 6]
        who = torch.randint(len(models), (s, others), generator=gen)  # [S, O]
        cand = torch.arange(n_cand)
        # Each simulated player puts in the card of its hand its scorer matches best.
        in_hand = sims[who[:, :, None, None], hands[:, :, :, None], cand]  # [S, O, 6, C]
        best = in_hand.argmax(dim=2)  # [S, O, C]
        decoy = hands.gather(2, best)  # [S, O, C]
        secret = torch.tensor([c for c, _ in candidates], dtype=torch.long)
        # Voter j sees the storyteller's card and the other decoys with its own scorer.
        told = sims[who[:, :, None], secret, cand]  # [S, O, C]
        seen = sims[who[:, :, None, None], decoy[:, None, :, :], cand]  # [S, O(voter), O, C]
        own = torch.eye(others, dtype=torch.bool)[None, :, :, None]
        rival = seen.masked_fill(own, float("-inf")).amax(dim=2)  # [S, O, C]
        finders = (told > rival).sum(dim=1)  # [S, C]
        scored = (finders > 0) & (finders < others)
        return 3.0 * scored.float().mean(dim=0)

    def tell(self, hand: Sequence[int], players: int, gen: torch.Generator) -> tuple[int, str]:
        """The candidate with the best expected score (see the class)."""
        candidates = self.candidates(hand)
        seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
        expected = self.expected_points(hand, players, candidates, seed)
        self.last_plan = [(c, h, float(e)) for (c, h), e in zip(candidates, expected, strict=True)]
        return candidates[int(expected.argmax())]


BOT_KINDS = ("random", "literal", "abstract", "strategist")
"""The bots by rising strength, as :func:`make_bot` names them."""


def make_bot(
    kind: str,
    eyes: Eyes,
    hints: Sequence[str],
    *,
    writer: HintWriter | None = None,
    models: Sequence[Eyes] = (),
    simulations: int = 128,
) -> DixitBot:
    """Build a bot of :data:`BOT_KINDS` by name.

    Args:
        kind: ``"random"``, ``"literal"``, ``"abstract"`` or ``"strategist"``.
        eyes: What it sees (ignored by the random bot).
        hints: The literal hints of the deck's cards (index = card id).
        writer: Writes evocative hints (abstract and strategist bots).
        models: The scorers a strategist models the other players with.
        simulations: Tables a strategist simulates per decision.

    Returns:
        The bot, labelled ``"<kind>/<scorer>"`` (``"random"`` for the random bot).

    Raises:
        WeightspaceValueError: if ``kind`` is unknown.
    """
    label = f"{kind}/{eyes.name}"
    if kind == "random":
        return RandomBot(hints)
    if kind == "literal":
        return LiteralBot(eyes, hints, name=label)
    if kind == "abstract":
        return AbstractBot(eyes, hints, writer, name=label)
    if kind == "strategist":
        return StrategistBot(eyes, hints, writer, models, simulations, name=label)
    raise WeightspaceValueError(f"`kind` must be one of {list(BOT_KINDS)}, got {kind!r}")


@dataclass(frozen=True)
class DixitRound:
    """One round of a game, as recorded.

    Attributes:
        storyteller: The storyteller's seat.
        hint: The hint.
        played: The card each seat put in (the storyteller's included).
        table: The played cards in the order shown.
        votes: The card each seat but the storyteller voted for.
        points: The points each seat scored.
    """

    storyteller: int
    hint: str
    played: dict[int, int]
    table: tuple[int, ...]
    votes: dict[int, int]
    points: dict[int, int]

    @property
    def found(self) -> int:
        """How many players found the storyteller's card."""
        secret = self.played[self.storyteller]
        return sum(card == secret for card in self.votes.values())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (seat keys as strings)."""
        return {
            "storyteller": self.storyteller,
            "hint": self.hint,
            "played": {str(k): v for k, v in self.played.items()},
            "table": list(self.table),
            "votes": {str(k): v for k, v in self.votes.items()},
            "points": {str(k): v for k, v in self.points.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DixitRound:
        """Read a dict written by :meth:`to_json`."""

        def seats(d: Mapping[str, Any]) -> dict[int, int]:
            return {int(k): int(v) for k, v in d.items()}

        return cls(
            int(data["storyteller"]),
            str(data["hint"]),
            seats(data["played"]),
            tuple(int(c) for c in data["table"]),
            seats(data["votes"]),
            seats(data["points"]),
        )


class DixitGame:
    """The state of one game: deck, hands, scores, and the phase of the current round.

    Seats are ``0 .. players - 1``; seat 0 tells first and the storyteller moves one seat on
    every round. A round goes ``tell`` → ``play`` (every other seat puts in a card) → ``vote``
    (every other seat votes) → scored. After scoring, the game ends if a player has reached
    :data:`WINNING_SCORE`; otherwise every hand is refilled to :data:`HAND_SIZE`, and the
    game ends when the deck cannot refill them all or its last card has been drawn.

    Three players play with one card each (the rulebook's three-player variant, with two
    cards per player, is not implemented).

    Args:
        players: Seats at the table, 3 to 8.
        cards: Cards in the deck (ids ``0 .. cards - 1``).
        seed: Seeds the shuffle of the deck and of every table.
    """

    def __init__(self, players: int, cards: int, *, seed: int = 0) -> None:
        if not 3 <= players <= 8:
            raise WeightspaceValueError(f"`players` must be in [3, 8], got {players}")
        if cards < players * (HAND_SIZE + 1):
            raise WeightspaceValueError(
                f"`cards` must be at least {players * (HAND_SIZE + 1)} for {players} players "
                f"(hands of {HAND_SIZE} and one round of refills), got {cards}"
            )
        self.players = players
        self.seed = seed
        self._gen = torch.Generator().manual_seed(seed)
        self.deck: list[int] = torch.randperm(cards, generator=self._gen).tolist()
        self.hands: list[list[int]] = [self._draw(HAND_SIZE) for _ in range(players)]
        self.scores = [0] * players
        self.storyteller = 0
        self.rounds: list[DixitRound] = []
        self.phase: Phase = "tell"
        self.hint = ""
        self.played: dict[int, int] = {}
        self.table: tuple[int, ...] = ()
        self.votes: dict[int, int] = {}
        self.end_reason = ""

    def _draw(self, n: int) -> list[int]:
        out, self.deck = self.deck[:n], self.deck[n:]
        return out

    def _check(self, phase: Phase, seat: int) -> None:
        if self.phase != phase:
            raise WeightspaceValueError(
                f"the game is in its {self.phase!r} phase, not {phase!r}; wait for your turn"
            )
        if not 0 <= seat < self.players:
            raise WeightspaceValueError(f"`seat` must be in [0, {self.players - 1}], got {seat}")

    def tell(self, card: int, hint: str) -> None:
        """The storyteller puts in ``card`` with ``hint``.

        Raises:
            WeightspaceValueError: if it is not the telling phase, the card is not in the
                storyteller's hand, or the hint is empty.
        """
        self._check("tell", self.storyteller)
        hint = " ".join(str(hint).split())[:80]
        if not hint:
            raise WeightspaceValueError("`hint` is empty; give a word or a short phrase")
        if card not in self.hands[self.storyteller]:
            raise WeightspaceValueError(
                f"`card` {card} is not in the storyteller's hand {self.hands[self.storyteller]}"
            )
        self.hint = hint
        self.played = {self.storyteller: card}
        self.phase = "play"

    @property
    def waiting(self) -> list[int]:
        """Seats whose move the current phase still needs."""
        if self.phase == "tell":
            return [self.storyteller]
        if self.phase == "play":
            return [p for p in range(self.players) if p not in self.played]
        if self.phase == "vote":
            return [p for p in range(self.players) if p != self.storyteller and p not in self.votes]
        return []

    def play(self, seat: int, card: int) -> None:
        """Seat ``seat`` puts in ``card`` for the hint; the table is laid out after the last.

        Raises:
            WeightspaceValueError: if it is not the playing phase, the seat has played or is
                the storyteller, or the card is not in its hand.
        """
        self._check("play", seat)
        if seat in self.played:
            raise WeightspaceValueError(f"seat {seat} has already put in a card this round")
        if card not in self.hands[seat]:
            raise WeightspaceValueError(f"`card` {card} is not in seat {seat}'s hand")
        self.played[seat] = card
        if len(self.played) == self.players:
            cards = [self.played[p] for p in range(self.players)]
            order = torch.randperm(len(cards), generator=self._gen).tolist()
            self.table = tuple(cards[i] for i in order)
            self.phase = "vote"

    def vote(self, seat: int, card: int) -> DixitRound | None:
        """Seat ``seat`` votes for ``card``; the last vote scores the round.

        Returns:
            The scored round after the last vote, else ``None``.

        Raises:
            WeightspaceValueError: if it is not the voting phase, the seat is the storyteller
                or has voted, or the card is not on the table or is the seat's own.
        """
        self._check("vote", seat)
        if seat == self.storyteller or seat in self.votes:
            raise WeightspaceValueError(f"seat {seat} cannot vote now (storyteller or voted)")
        if card not in self.table:
            raise WeightspaceValueError(f"`card` {card} is not on the table {list(self.table)}")
        if card == self.played[seat]:
            raise WeightspaceValueError(
                f"`card` {card} is seat {seat}'s own card; vote for another card"
            )
        self.votes[seat] = card
        if len(self.votes) < self.players - 1:
            return None
        return self._score()

    def _score(self) -> DixitRound:
        points = score_round(self.storyteller, self.played, self.votes)
        done = DixitRound(
            self.storyteller, self.hint, dict(self.played), self.table, dict(self.votes), points
        )
        self.rounds.append(done)
        for p, pts in points.items():
            self.scores[p] += pts
        for p, card in self.played.items():
            self.hands[p].remove(card)
        if max(self.scores) >= WINNING_SCORE:
            self.phase, self.end_reason = "over", "score"
        elif len(self.deck) < self.players:
            self.phase, self.end_reason = "over", "deck"
        else:
            for hand in self.hands:
                hand.extend(self._draw(1))
            if not self.deck:
                self.phase, self.end_reason = "over", "deck"
            else:
                self.phase = "tell"
                self.storyteller = (self.storyteller + 1) % self.players
        self.hint, self.played, self.table, self.votes = "", {}, (), {}
        return done

    def step(self, bots: Mapping[int, DixitBot], gen: torch.Generator) -> bool:
        """Let the bots make every move they can until a seat without a bot must move.

        Args:
            bots: The bot of each seat it plays (seats without one are people).
            gen: Seeds the bots' random choices.

        Returns:
            ``True`` when the game is over.
        """
        while self.phase != "over":
            waiting = [p for p in self.waiting if p in bots]
            if not waiting:
                return False
            for p in waiting:
                bot = bots[p]
                if self.phase == "tell":
                    card, hint = bot.tell(list(self.hands[p]), self.players, gen)
                    self.tell(card, hint)
                elif self.phase == "play":
                    self.play(p, bot.choose(list(self.hands[p]), self.hint, gen))
                else:
                    self.vote(p, bot.vote(self.table, self.played[p], self.hint, gen))
                    if self.phase != "vote":
                        break
        return True

    def to_json(self, names: Sequence[str]) -> dict[str, Any]:
        """The finished (or current) game as a JSON-ready dict.

        Args:
            names: The player of each seat (a bot's label or a person's name).
        """
        return {
            "seed": self.seed,
            "players": list(names),
            "scores": list(self.scores),
            "end": self.end_reason,
            "rounds": [r.to_json() for r in self.rounds],
        }


def play_game(
    bots: Sequence[DixitBot], cards: int, *, seed: int = 0
) -> tuple[list[int], list[DixitRound], str]:
    """Play a whole game between bots.

    Args:
        bots: One bot per seat (3 to 8).
        cards: Cards in the deck the bots see.
        seed: Seeds the deck, the tables and the bots' random choices.

    Returns:
        ``(final scores by seat, rounds, end reason)`` where the reason is ``"score"`` (a player
        reached 30) or ``"deck"``.
    """
    game = DixitGame(len(bots), cards, seed=seed)
    gen = torch.Generator().manual_seed(seed + 7919)
    game.step(dict(enumerate(bots)), gen)
    return list(game.scores), list(game.rounds), game.end_reason


def write_dixit_games(games: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write games (dicts of :meth:`DixitGame.to_json`) to a JSON file, atomically.

    Args:
        games: The games.
        path: The file.

    Returns:
        The path written.
    """
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps({"dixit_games": list(games)}, indent=1), encoding="utf-8")
    return target


def read_dixit_games(path: str | Path) -> list[dict[str, Any]]:
    """The games of a file written by :func:`write_dixit_games` (empty if there is no file).

    Args:
        path: The JSON file.

    Returns:
        The games, oldest first.

    Raises:
        WeightspaceValueError: if the file exists but is not a Dixit games file.
    """
    from weightspace.games._server import read_records

    return read_records(path, "dixit_games", "a Dixit games file")
