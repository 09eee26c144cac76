"""Imagine: one player composes cards to show a concept, the others guess it among candidates."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from weightspace._cache import atomic_path
from weightspace._errors import WeightspaceValueError
from weightspace.games._compose import Composition
from weightspace.games._deck import Deck
from weightspace.games._scorers import ImageTextScorer

__all__ = [
    "CONCEPTS",
    "ImagineGame",
    "challenge",
    "guess",
    "read_games",
    "write_games",
]

CONCEPTS: tuple[str, ...] = (
    "snowman", "boat", "rain", "night", "garden", "robot", "spider", "rocket",
    "island", "volcano", "lighthouse", "butterfly", "car", "clock", "bicycle", "face",
)  # fmt: skip
"""The concepts of our Imagine games: things a few of the deck's cards can suggest, none of
them the name of a card. As in the board game, each challenge shows eight of them and one is
the secret answer (chance 1/8)."""

PER_CARD = 8


def challenge(
    answer: str, *, concepts: Sequence[str] = CONCEPTS, size: int = PER_CARD, seed: int = 0
) -> tuple[str, ...]:
    """A challenge card: ``answer`` among ``size - 1`` other concepts, in a seeded order.

    Args:
        answer: The secret concept.
        concepts: Where the other candidates come from.
        size: Candidates on the card.
        seed: Seeds the choice and the order.

    Returns:
        ``size`` distinct concepts, ``answer`` among them.

    Raises:
        WeightspaceValueError: if there are not enough concepts.
    """
    others = [c for c in dict.fromkeys(concepts) if c != answer]
    if size < 2 or len(others) < size - 1:
        raise WeightspaceValueError(
            f"`size` must be in [2, {len(others) + 1}] for {len(others) + 1} concepts, got {size}"
        )
    rng = random.Random(f"{seed}:{answer}")
    card = [answer, *rng.sample(others, size - 1)]
    rng.shuffle(card)
    return tuple(card)


def guess(
    scorer: ImageTextScorer,
    images: Tensor,
    candidates: Sequence[str],
    *,
    template: str = "A {}.",
) -> Tensor:
    """Each image's guess: the index of the candidate whose prompt the scorer rates highest.

    Args:
        scorer: The guessing player.
        images: ``[3, H, W]`` or ``[N, 3, H, W]`` images.
        candidates: The concepts on the challenge card.
        template: Turns a concept into a prompt; ``{}`` is the concept.

    Returns:
        ``[N]`` indices into ``candidates``.

    Raises:
        WeightspaceValueError: if ``template`` has no ``{}``.
    """
    if "{}" not in template:
        raise WeightspaceValueError(f"`template` must contain '{{}}', got {template!r}")
    return scorer.score(images, [template.format(c) for c in candidates]).argmax(dim=1)


@dataclass(frozen=True)
class ImagineGame:
    """One game of Imagine: a composition made for a secret concept, and a challenge card.

    Attributes:
        name: A short identifier (``"g03"``).
        answer: The secret concept.
        candidates: The concepts on the challenge card, the answer among them.
        composition: The cards the composer placed.
        composer: Who composed it (a scorer's name, or ``"random"``).
        guesses: Each guessing player's answer (a concept), by player name.
    """

    name: str
    answer: str
    candidates: tuple[str, ...]
    composition: Composition
    composer: str
    guesses: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.answer not in self.candidates:
            raise WeightspaceValueError(
                f"`answer` {self.answer!r} is not among `candidates` {list(self.candidates)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "answer": self.answer,
            "candidates": list(self.candidates),
            "composition": self.composition.to_dict(),
            "composer": self.composer,
            "guesses": dict(self.guesses),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImagineGame:
        """Rebuild a game written by :meth:`to_dict`."""
        return cls(
            str(data["name"]),
            str(data["answer"]),
            tuple(data["candidates"]),
            Composition.from_dict(data["composition"]),
            str(data["composer"]),
            dict(data.get("guesses", {})),
        )


def write_games(games: Sequence[ImagineGame], folder: str | Path, deck: Deck) -> Path:
    """Write games for people to play: ``games.json`` and one PNG per composition.

    ``games.json`` holds everything, answers included; the page of :func:`serve_imagine`
    shows a player only the picture and the candidates.

    Args:
        games: The games, with distinct names.
        folder: Where to write; created if needed.
        deck: The cards the compositions use.

    Returns:
        The path of ``games.json``.

    Raises:
        WeightspaceValueError: if two games share a name or a name is not a simple word.
    """
    from weightspace._optional import require_module

    pil = require_module("PIL.Image", pip="pillow", extra="vision")
    names = [g.name for g in games]
    if len(set(names)) != len(names) or not names:
        raise WeightspaceValueError(f"`games` must have distinct names, got {names}")
    bad = [n for n in names if not n.replace("-", "").replace("_", "").isalnum()]
    if bad:
        raise WeightspaceValueError(
            f"game names must be letters, digits, '-' or '_', got {bad}; rename them"
        )
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for g in games:
        image = g.composition.render(deck, size=256)
        array = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        with atomic_path(out / f"{g.name}.png") as tmp:
            pil.fromarray(array).save(tmp, format="PNG")
    target = out / "games.json"
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps({"games": [g.to_dict() for g in games]}, indent=1))
    return target


def read_games(path: str | Path) -> list[ImagineGame]:
    """Read the games of a ``games.json`` written by :func:`write_games`.

    Raises:
        WeightspaceValueError: if the file is missing or not a games file.
    """
    file = Path(path)
    if not file.is_file():
        raise WeightspaceValueError(
            f"`path` {str(path)!r} is not a file; pass the games.json written by write_games"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        return [ImagineGame.from_dict(g) for g in data["games"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise WeightspaceValueError(
            f"`path` {str(path)!r} is not a games file written by write_games ({exc})"
        ) from None
