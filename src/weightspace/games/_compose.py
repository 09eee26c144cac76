"""Compositions of transparent cards: a few cards placed, scaled, turned and stacked."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace.games._deck import Deck

__all__ = ["PARAMS_PER_CARD", "Composition", "placement", "render"]

PARAMS_PER_CARD = 5
"""Real parameters of one placed card: x, y, scale, rotation and depth (see :func:`placement`)."""

MIN_SCALE = 0.15
MAX_SCALE = 0.8


def placement(params: Tensor) -> dict[str, Tensor]:
    """Map unconstrained parameters ``[..., 5]`` to the placement of each card.

    Every real vector is a valid placement, so that search methods need no bounds:

    * ``x, y = sigmoid(p0), sigmoid(p1)``: the card's centre, as a share of the canvas
      (0 is the left or top edge);
    * ``scale = 0.15 + 0.65 * sigmoid(p2)``: the card's side as a share of the canvas;
    * ``angle = p3 * pi / 2``: the rotation, in radians (periodic, never clipped);
    * ``depth = p4``: the stacking order; higher is drawn later, on top.

    (es-clip instead min-max normalises each parameter across primitives before drawing,
    which makes a primitive's placement depend on the others'.)

    Args:
        params: Unconstrained parameters.

    Returns:
        A dict of tensors ``x``, ``y``, ``scale``, ``angle`` and ``depth``, each ``[...]``.
    """
    return {
        "x": torch.sigmoid(params[..., 0]),
        "y": torch.sigmoid(params[..., 1]),
        "scale": MIN_SCALE + (MAX_SCALE - MIN_SCALE) * torch.sigmoid(params[..., 2]),
        "angle": params[..., 3] * (math.pi / 2),
        "depth": params[..., 4],
    }


def render(
    deck: Deck,
    cards: Tensor,
    params: Tensor,
    *,
    size: int = 128,
    background: float = 1.0,
) -> Tensor:
    """Draw a batch of compositions: each card warped into place, stacked by depth.

    Cards are warped with bilinear sampling (:func:`torch.nn.functional.grid_sample`) and
    alpha-composited over a plain background, lowest depth first.

    Args:
        deck: The cards.
        cards: Card indices into ``deck``, ``[P, K]`` (``K`` cards per composition).
        params: Unconstrained placement parameters, ``[P, K, 5]`` (see :func:`placement`).
        size: Side of the square canvas in pixels.
        background: Grey level of the canvas (1 is white).

    Returns:
        ``[P, 3, size, size]`` ``float32`` images in ``[0, 1]``.

    Raises:
        ShapeMismatchError: if ``cards`` and ``params`` do not agree.
        WeightspaceValueError: if a card index is out of range.

    Example:
        >>> from weightspace.games import default_deck
        >>> deck = default_deck()
        >>> cards = torch.tensor([[deck.index("sun"), deck.index("house")]])
        >>> image = render(deck, cards, torch.zeros(1, 2, 5), size=64)
        >>> image.shape
        torch.Size([1, 3, 64, 64])
    """
    if cards.ndim != 2 or params.shape != (*cards.shape, PARAMS_PER_CARD):
        raise ShapeMismatchError(
            f"`cards` must be [P, K] and `params` [P, K, {PARAMS_PER_CARD}]; got "
            f"{list(cards.shape)} and {list(params.shape)}"
        )
    if cards.numel() and (int(cards.min()) < 0 or int(cards.max()) >= len(deck)):
        raise WeightspaceValueError(
            f"`cards` must index the deck's {len(deck)} cards, got values in "
            f"[{int(cards.min())}, {int(cards.max())}]"
        )
    p, k = cards.shape
    place = placement(params.float())
    order = place["depth"].argsort(dim=1)
    cards = cards.gather(1, order)
    place = {name: v.gather(1, order) for name, v in place.items()}
    # Output pixel u (in [-1, 1]^2) samples the card at R(-angle) (u - centre) / scale.
    cos, sin = torch.cos(place["angle"]), torch.sin(place["angle"])
    inv = 1.0 / place["scale"]
    cx, cy = 2 * place["x"] - 1, 2 * place["y"] - 1
    theta = torch.empty(p, k, 2, 3)
    theta[..., 0, 0] = cos * inv
    theta[..., 0, 1] = sin * inv
    theta[..., 1, 0] = -sin * inv
    theta[..., 1, 1] = cos * inv
    theta[..., 0, 2] = -(theta[..., 0, 0] * cx + theta[..., 0, 1] * cy)
    theta[..., 1, 2] = -(theta[..., 1, 0] * cx + theta[..., 1, 1] * cy)
    src = deck.images[cards.reshape(-1)]
    premult = torch.cat([src[:, :3] * src[:, 3:], src[:, 3:]], dim=1)
    grid = F.affine_grid(theta.view(-1, 2, 3), [p * k, 4, size, size], align_corners=False)
    warped = F.grid_sample(premult, grid, mode="bilinear", align_corners=False).view(
        p, k, 4, size, size
    )
    canvas = torch.full((p, 3, size, size), float(background))
    for j in range(k):
        layer = warped[:, j]
        canvas = layer[:, :3] + canvas * (1.0 - layer[:, 3:])
    return canvas.clamp(0.0, 1.0)


@dataclass(frozen=True)
class Composition:
    """One composition: which cards, and where.

    Attributes:
        cards: The card names, in slot order.
        params: Unconstrained placement parameters, one row of 5 per card (see
            :func:`placement`).

    Shapes:
        - params: ``[len(cards), 5]``.
    """

    cards: tuple[str, ...]
    params: Tensor

    def __post_init__(self) -> None:
        if self.params.shape != (len(self.cards), PARAMS_PER_CARD):
            raise ShapeMismatchError(
                f"`params` must be [{len(self.cards)}, {PARAMS_PER_CARD}] for "
                f"{len(self.cards)} cards, got {list(self.params.shape)}"
            )

    def render(self, deck: Deck, *, size: int = 128) -> Tensor:
        """Draw this composition with the cards of ``deck``: a ``[3, size, size]`` image."""
        idx = torch.tensor([[deck.index(c) for c in self.cards]])
        return render(deck, idx, self.params.unsqueeze(0), size=size)[0]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: card names, raw parameters and the readable placement."""
        place = placement(self.params)
        return {
            "cards": list(self.cards),
            "params": [[round(float(v), 6) for v in row] for row in self.params],
            "placement": [
                {name: round(float(place[name][i]), 4) for name in place}
                for i in range(len(self.cards))
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Composition:
        """Rebuild a composition written by :meth:`to_dict`."""
        return cls(tuple(data["cards"]), torch.tensor(data["params"], dtype=torch.float32))
