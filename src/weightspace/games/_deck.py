"""The deck of Imagine: transparent cards with one simple drawing each, drawn by our own code."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from weightspace._errors import WeightspaceValueError
from weightspace._optional import require_module

__all__ = ["CARD_NAMES", "Deck", "default_deck"]

_HI = 256  # drawing resolution before antialiased downsampling
Point = tuple[float, float]
Painter = Callable[[Any, tuple[int, int, int, int]], object]


def _p(x: float, y: float) -> tuple[float, float]:
    return (x * _HI, y * _HI)


def _box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    return (x0 * _HI, y0 * _HI, x1 * _HI, y1 * _HI)


def _w(width: float) -> int:
    return max(1, round(width * _HI))


def _regular(n: int, r: float = 0.42, start: float = -90.0, c: Point = (0.5, 0.5)) -> list[Point]:
    return [
        _p(c[0] + r * math.cos(math.radians(start + 360 * k / n)),
           c[1] + r * math.sin(math.radians(start + 360 * k / n)))
        for k in range(n)
    ]  # fmt: skip


def _star(points: int = 5, outer: float = 0.45, inner: float = 0.19) -> list[Point]:
    out = []
    for k in range(2 * points):
        r = outer if k % 2 == 0 else inner
        a = math.radians(-90 + 180 * k / points)
        out.append(_p(0.5 + r * math.cos(a), 0.52 + r * math.sin(a)))
    return out


def _heart() -> list[Point]:
    pts = []
    for k in range(120):
        t = 2 * math.pi * k / 120
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append(_p(0.5 + x / 38, 0.47 - y / 38))
    return pts


def _lens(angle: float, half_width: float) -> list[Point]:
    """A pointed oval (leaf, eye) across the card, turned by ``angle`` degrees."""
    a = math.radians(angle)
    pts = []
    for k in range(81):
        u = -1 + 2 * (k % 41) / 40 if k < 41 else 1 - 2 * ((k - 40) % 41) / 40
        v = half_width * (1 - u * u) * (1 if k < 41 else -1)
        x, y = 0.45 * u, v
        pts.append(
            _p(0.5 + x * math.cos(a) - y * math.sin(a), 0.5 + x * math.sin(a) + y * math.cos(a))
        )
    return pts


def _curve(f: Callable[[float], Point], n: int = 80) -> list[Point]:
    return [_p(*f(k / (n - 1))) for k in range(n)]


def _spiral(t: float) -> Point:
    a = 3.2 * 2 * math.pi * t
    return (0.5 + 0.43 * t * math.cos(a), 0.5 + 0.43 * t * math.sin(a))


def _cards() -> list[tuple[str, tuple[int, int, int], Painter]]:
    """(name, colour, painter) for every card; painters draw on a 256 x 256 ImageDraw."""
    lw = 0.06
    cards: list[tuple[str, tuple[int, int, int], Painter]] = [
        # --- shapes
        ("circle", (220, 40, 40), lambda d, c: d.ellipse(_box(0.1, 0.1, 0.9, 0.9), fill=c)),
        ("ring", (30, 80, 200), lambda d, c: d.ellipse(_box(0.1, 0.1, 0.9, 0.9), outline=c,
                                                       width=_w(0.09))),
        ("square", (40, 150, 60), lambda d, c: d.rectangle(_box(0.15, 0.15, 0.85, 0.85), fill=c)),
        ("triangle", (240, 170, 0), lambda d, c: d.polygon(_regular(3, 0.45, -90, (0.5, 0.58)),
                                                           fill=c)),
        ("diamond", (150, 40, 180), lambda d, c: d.polygon(_regular(4, 0.45, -90), fill=c)),
        ("pentagon", (0, 150, 150), lambda d, c: d.polygon(_regular(5, 0.43), fill=c)),
        ("hexagon", (200, 110, 20), lambda d, c: d.polygon(_regular(6, 0.43, 0), fill=c)),
        ("star", (250, 200, 0), lambda d, c: d.polygon(_star(), fill=c)),
        ("heart", (230, 30, 90), lambda d, c: d.polygon(_heart(), fill=c)),
        ("crescent", (240, 210, 60), lambda d, c: (
            d.ellipse(_box(0.1, 0.1, 0.9, 0.9), fill=c),
            d.ellipse(_box(0.3, 0.02, 1.05, 0.8), fill=(0, 0, 0, 0)))),
        ("semicircle", (20, 120, 220), lambda d, c: d.pieslice(_box(0.08, 0.25, 0.92, 1.09),
                                                               180, 360, fill=c)),
        ("ellipse", (120, 70, 30), lambda d, c: d.ellipse(_box(0.05, 0.3, 0.95, 0.7), fill=c)),
        ("rectangle", (110, 110, 120), lambda d, c: d.rectangle(_box(0.05, 0.32, 0.95, 0.68),
                                                                fill=c)),
        ("plus", (210, 30, 30), lambda d, c: (
            d.rectangle(_box(0.4, 0.1, 0.6, 0.9), fill=c),
            d.rectangle(_box(0.1, 0.4, 0.9, 0.6), fill=c))),
        ("cross", (20, 20, 20), lambda d, c: (
            d.line([_p(0.15, 0.15), _p(0.85, 0.85)], fill=c, width=_w(0.12)),
            d.line([_p(0.85, 0.15), _p(0.15, 0.85)], fill=c, width=_w(0.12)))),
        # --- lines
        ("line", (20, 20, 20), lambda d, c: d.line([_p(0.05, 0.5), _p(0.95, 0.5)], fill=c,
                                                   width=_w(lw))),
        ("bar", (120, 70, 30), lambda d, c: d.rectangle(_box(0.42, 0.02, 0.58, 0.98), fill=c)),
        ("wavy line", (30, 110, 230), lambda d, c: d.line(_curve(
            lambda t: (0.05 + 0.9 * t, 0.5 + 0.15 * math.sin(4 * math.pi * t))), fill=c,
            width=_w(lw), joint="curve")),
        ("zigzag", (230, 120, 0), lambda d, c: d.line(
            [_p(0.05 + 0.15 * k, 0.35 if k % 2 else 0.65) for k in range(7)], fill=c,
            width=_w(lw), joint="curve")),
        ("spiral", (140, 40, 160), lambda d, c: d.line(_curve(_spiral, 160), fill=c,
                                                       width=_w(0.045), joint="curve")),
        ("arc", (20, 20, 20), lambda d, c: d.arc(_box(0.1, 0.25, 0.9, 1.05), 190, 350, fill=c,
                                                 width=_w(lw))),
        ("dashes", (60, 60, 60), lambda d, c: [
            d.line([_p(0.05 + 0.2 * k, 0.5), _p(0.17 + 0.2 * k, 0.5)], fill=c, width=_w(lw))
            for k in range(5)]),
        ("parallel lines", (20, 20, 20), lambda d, c: [
            d.line([_p(0.05, y), _p(0.95, y)], fill=c, width=_w(0.05)) for y in (0.3, 0.5, 0.7)]),
        # --- arrows
        ("arrow", (20, 20, 20), lambda d, c: (
            d.line([_p(0.08, 0.5), _p(0.7, 0.5)], fill=c, width=_w(0.08)),
            d.polygon([_p(0.95, 0.5), _p(0.65, 0.3), _p(0.65, 0.7)], fill=c))),
        ("curved arrow", (210, 30, 30), lambda d, c: (
            d.arc(_box(0.12, 0.15, 0.88, 0.95), 180, 330, fill=c, width=_w(0.07)),
            d.polygon([_p(0.9, 0.43), _p(0.7, 0.3), _p(0.88, 0.2)], fill=c))),
        ("double arrow", (30, 80, 200), lambda d, c: (
            d.line([_p(0.25, 0.5), _p(0.75, 0.5)], fill=c, width=_w(0.07)),
            d.polygon([_p(0.97, 0.5), _p(0.72, 0.33), _p(0.72, 0.67)], fill=c),
            d.polygon([_p(0.03, 0.5), _p(0.28, 0.33), _p(0.28, 0.67)], fill=c))),
        # --- nature
        ("sun", (250, 180, 0), lambda d, c: (
            d.ellipse(_box(0.3, 0.3, 0.7, 0.7), fill=c),
            [d.line([_p(0.5 + 0.26 * math.cos(a), 0.5 + 0.26 * math.sin(a)),
                     _p(0.5 + 0.46 * math.cos(a), 0.5 + 0.46 * math.sin(a))], fill=c,
                    width=_w(0.05)) for a in [k * math.pi / 4 for k in range(8)]])),
        ("cloud", (150, 170, 200), lambda d, c: [
            d.ellipse(_box(x - r, y - r, x + r, y + r), fill=c)
            for x, y, r in ((0.3, 0.58, 0.18), (0.5, 0.45, 0.24), (0.7, 0.58, 0.18),
                            (0.5, 0.62, 0.16))]),
        ("raindrop", (40, 120, 230), lambda d, c: (
            d.ellipse(_box(0.28, 0.42, 0.72, 0.86), fill=c),
            d.polygon([_p(0.5, 0.08), _p(0.29, 0.6), _p(0.71, 0.6)], fill=c))),
        ("leaf", (50, 160, 50), lambda d, c: (
            d.polygon(_lens(-45.0, 0.2), fill=c),
            d.line([_p(0.22, 0.78), _p(0.7, 0.3)], fill=(20, 90, 20, 255), width=_w(0.025)))),
        ("flower", (230, 80, 160), lambda d, c: (
            [d.ellipse(_box(0.5 + 0.22 * math.cos(a) - 0.16, 0.5 + 0.22 * math.sin(a) - 0.16,
                            0.5 + 0.22 * math.cos(a) + 0.16, 0.5 + 0.22 * math.sin(a) + 0.16),
                       fill=c) for a in [k * 2 * math.pi / 6 for k in range(6)]],
            d.ellipse(_box(0.38, 0.38, 0.62, 0.62), fill=(250, 210, 0, 255)))),
        ("tree", (40, 140, 40), lambda d, c: (
            d.rectangle(_box(0.43, 0.55, 0.57, 0.95), fill=(110, 60, 20, 255)),
            d.ellipse(_box(0.18, 0.05, 0.82, 0.65), fill=c))),
        ("pine tree", (20, 110, 50), lambda d, c: (
            d.rectangle(_box(0.45, 0.78, 0.55, 0.97), fill=(110, 60, 20, 255)),
            d.polygon([_p(0.5, 0.03), _p(0.15, 0.8), _p(0.85, 0.8)], fill=c))),
        ("mountain", (110, 100, 90), lambda d, c: (
            d.polygon([_p(0.02, 0.9), _p(0.5, 0.12), _p(0.98, 0.9)], fill=c),
            d.polygon([_p(0.5, 0.12), _p(0.38, 0.32), _p(0.62, 0.32)], fill=(255, 255, 255, 255)))),
        ("wave", (20, 100, 200), lambda d, c: d.polygon(
            [*_curve(lambda t: (t, 0.55 + 0.12 * math.sin(6 * math.pi * t))), _p(1, 0.95),
             _p(0, 0.95)], fill=c)),
        ("flame", (240, 90, 10), lambda d, c: (
            d.ellipse(_box(0.22, 0.4, 0.78, 0.96), fill=c),
            d.polygon([_p(0.5, 0.02), _p(0.23, 0.66), _p(0.77, 0.66)], fill=c),
            d.ellipse(_box(0.37, 0.62, 0.63, 0.9), fill=(250, 200, 0, 255)),
            d.polygon([_p(0.5, 0.38), _p(0.38, 0.74), _p(0.62, 0.74)], fill=(250, 200, 0, 255)))),
        ("lightning", (250, 210, 0), lambda d, c: d.polygon(
            [_p(0.6, 0.02), _p(0.2, 0.55), _p(0.47, 0.55), _p(0.35, 0.98), _p(0.82, 0.4),
             _p(0.53, 0.4)], fill=c)),
        ("snowflake", (60, 160, 230), lambda d, c: [
            d.line([_p(0.5 - 0.45 * math.cos(a), 0.5 - 0.45 * math.sin(a)),
                    _p(0.5 + 0.45 * math.cos(a), 0.5 + 0.45 * math.sin(a))], fill=c,
                   width=_w(0.05)) for a in [k * math.pi / 3 for k in range(3)]]),
        ("grass", (60, 170, 40), lambda d, c: [
            d.polygon([_p(x - 0.05, 0.95), _p(x + 0.03, 0.25 + 0.2 * (k % 2)), _p(x + 0.05, 0.95)],
                      fill=c) for k, x in enumerate((0.15, 0.32, 0.5, 0.68, 0.85))]),
        # --- animals and people
        ("fish", (240, 120, 20), lambda d, c: (
            d.ellipse(_box(0.1, 0.3, 0.72, 0.7), fill=c),
            d.polygon([_p(0.65, 0.5), _p(0.95, 0.3), _p(0.95, 0.7)], fill=c),
            d.ellipse(_box(0.22, 0.42, 0.3, 0.5), fill=(0, 0, 0, 255)))),
        ("bird", (20, 20, 20), lambda d, c: (
            d.arc(_box(0.05, 0.3, 0.5, 0.8), 200, 340, fill=c, width=_w(0.06)),
            d.arc(_box(0.5, 0.3, 0.95, 0.8), 200, 340, fill=c, width=_w(0.06)))),
        ("stick figure", (20, 20, 20), lambda d, c: (
            d.ellipse(_box(0.39, 0.04, 0.61, 0.26), outline=c, width=_w(0.045)),
            d.line([_p(0.5, 0.26), _p(0.5, 0.62)], fill=c, width=_w(0.045)),
            d.line([_p(0.22, 0.4), _p(0.78, 0.4)], fill=c, width=_w(0.045)),
            d.line([_p(0.5, 0.62), _p(0.3, 0.95)], fill=c, width=_w(0.045)),
            d.line([_p(0.5, 0.62), _p(0.7, 0.95)], fill=c, width=_w(0.045)))),
        ("eye", (20, 20, 20), lambda d, c: (
            d.polygon(_lens(0.0, 0.24), outline=c, width=_w(0.04)),
            d.ellipse(_box(0.37, 0.37, 0.63, 0.63), fill=(40, 120, 200, 255)),
            d.ellipse(_box(0.45, 0.45, 0.55, 0.55), fill=c))),
        ("smile", (20, 20, 20), lambda d, c: d.arc(_box(0.15, 0.05, 0.85, 0.75), 20, 160,
                                                   fill=c, width=_w(0.07))),
        ("paw", (90, 60, 40), lambda d, c: (
            d.ellipse(_box(0.28, 0.45, 0.72, 0.88), fill=c),
            [d.ellipse(_box(x - 0.09, y - 0.11, x + 0.09, y + 0.11), fill=c)
             for x, y in ((0.2, 0.4), (0.38, 0.2), (0.62, 0.2), (0.8, 0.4))])),
        # --- objects
        ("house", (190, 60, 40), lambda d, c: (
            d.rectangle(_box(0.2, 0.45, 0.8, 0.95), fill=(230, 190, 120, 255)),
            d.polygon([_p(0.08, 0.48), _p(0.5, 0.08), _p(0.92, 0.48)], fill=c),
            d.rectangle(_box(0.42, 0.68, 0.58, 0.95), fill=(110, 60, 20, 255)))),
        ("wheel", (40, 40, 40), lambda d, c: (
            d.ellipse(_box(0.08, 0.08, 0.92, 0.92), outline=c, width=_w(0.08)),
            [d.line([_p(0.5 - 0.4 * math.cos(a), 0.5 - 0.4 * math.sin(a)),
                     _p(0.5 + 0.4 * math.cos(a), 0.5 + 0.4 * math.sin(a))], fill=c,
                    width=_w(0.035)) for a in [k * math.pi / 4 for k in range(4)]])),
        ("window", (60, 140, 220), lambda d, c: (
            d.rectangle(_box(0.12, 0.12, 0.88, 0.88), outline=c, width=_w(0.06)),
            d.line([_p(0.5, 0.12), _p(0.5, 0.88)], fill=c, width=_w(0.05)),
            d.line([_p(0.12, 0.5), _p(0.88, 0.5)], fill=c, width=_w(0.05)))),
        ("grid", (90, 90, 90), lambda d, c: [
            d.line([_p(v, 0.05), _p(v, 0.95)] if k < 4 else [_p(0.05, v), _p(0.95, v)], fill=c,
                   width=_w(0.03)) for k, v in enumerate((0.2, 0.4, 0.6, 0.8) * 2)]),
        ("dots", (210, 30, 30), lambda d, c: [
            d.ellipse(_box(x - 0.08, y - 0.08, x + 0.08, y + 0.08), fill=c)
            for x, y in ((0.25, 0.3), (0.7, 0.22), (0.5, 0.55), (0.28, 0.8), (0.78, 0.72))]),
        ("music note", (20, 20, 20), lambda d, c: (
            d.ellipse(_box(0.2, 0.66, 0.5, 0.9), fill=c),
            d.line([_p(0.47, 0.78), _p(0.47, 0.1)], fill=c, width=_w(0.05)),
            d.polygon([_p(0.47, 0.1), _p(0.8, 0.25), _p(0.8, 0.37), _p(0.47, 0.22)], fill=c))),
        ("key", (200, 160, 30), lambda d, c: (
            d.ellipse(_box(0.05, 0.32, 0.41, 0.68), outline=c, width=_w(0.08)),
            d.line([_p(0.4, 0.5), _p(0.95, 0.5)], fill=c, width=_w(0.08)),
            d.line([_p(0.85, 0.5), _p(0.85, 0.68)], fill=c, width=_w(0.07)),
            d.line([_p(0.72, 0.5), _p(0.72, 0.64)], fill=c, width=_w(0.07)))),
        ("bone", (235, 230, 210), lambda d, c: (
            d.rectangle(_box(0.2, 0.42, 0.8, 0.58), fill=c),
            [d.ellipse(_box(x - 0.11, y - 0.11, x + 0.11, y + 0.11), fill=c)
             for x in (0.15, 0.85) for y in (0.38, 0.62)])),
    ]  # fmt: skip
    return cards


CARD_NAMES: tuple[str, ...] = tuple(name for name, _, _ in _cards())
"""The names of the cards of :func:`default_deck`, in deck order."""


@dataclass(frozen=True)
class Deck:
    """A deck of transparent cards: one RGBA image per card.

    Attributes:
        names: Card names, such as ``"circle"`` or ``"stick figure"``.
        images: ``float32`` RGBA images in ``[0, 1]``, colour not premultiplied; the alpha
            channel is where the card is drawn on.

    Shapes:
        - images: ``[cards, 4, size, size]``.
    """

    names: tuple[str, ...]
    images: Tensor

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 4:
            raise WeightspaceValueError(
                f"`images` must be RGBA cards of shape [cards, 4, size, size], got "
                f"{list(self.images.shape)}"
            )
        if len(self.names) != self.images.shape[0]:
            raise WeightspaceValueError(
                f"`names` has {len(self.names)} entries for {self.images.shape[0]} cards"
            )

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """The position of the card called ``name``.

        Raises:
            WeightspaceValueError: if no card has that name.
        """
        try:
            return self.names.index(name)
        except ValueError:
            raise WeightspaceValueError(
                f"`name` {name!r} is not a card of this deck; choose from {list(self.names)}"
            ) from None

    def subset(self, names: Sequence[str]) -> Deck:
        """A deck with the named cards only, in the given order."""
        idx = [self.index(n) for n in names]
        return Deck(tuple(self.names[i] for i in idx), self.images[idx].clone())

    def contact_sheet(self, *, columns: int = 8, background: float = 1.0) -> Tensor:
        """All cards on one image, in deck order, over a plain background.

        Args:
            columns: Cards per row.
            background: Grey level of the background (1 is white).

        Returns:
            A ``float32`` ``[3, rows * size, columns * size]`` image in ``[0, 1]``.
        """
        n, _, s, _ = self.images.shape
        rows = math.ceil(n / columns)
        sheet = torch.full((3, rows * s, columns * s), float(background))
        for k in range(n):
            r, c = divmod(k, columns)
            rgb, a = self.images[k, :3], self.images[k, 3:]
            cell = sheet[:, r * s : (r + 1) * s, c * s : (c + 1) * s]
            cell.copy_(rgb * a + cell * (1 - a))
        return sheet


@functools.cache
def _default_images(size: int) -> Tensor:
    image_mod = require_module("PIL.Image", pip="pillow", extra="vision")
    draw_mod = require_module("PIL.ImageDraw", pip="pillow", extra="vision")
    out = []
    for _, colour, paint in _cards():
        im = image_mod.new("RGBA", (_HI, _HI), (0, 0, 0, 0))
        paint(draw_mod.Draw(im), (*colour, 255))
        data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
        out.append(data.view(_HI, _HI, 4).permute(2, 0, 1).float() / 255.0)
    hi = torch.stack(out)
    # Downsample premultiplied colour so that edges do not take the transparent black.
    pre = torch.cat([hi[:, :3] * hi[:, 3:], hi[:, 3:]], dim=1)
    low = F.interpolate(pre, size=(size, size), mode="area")
    alpha = low[:, 3:]
    rgb = low[:, :3] / alpha.clamp(min=1e-6)
    return torch.cat([rgb.clamp(0, 1), alpha.clamp(0, 1)], dim=1).contiguous()


def default_deck(size: int = 64) -> Deck:
    """The 53 cards of our Imagine deck: shapes, lines, arrows, nature, animals and objects.

    Each card is one flat-coloured drawing on a transparent background, drawn with Pillow at
    256 x 256 and downsampled (area averaging of premultiplied colour) to ``size``. The names
    are in :data:`CARD_NAMES`; :meth:`Deck.contact_sheet` shows them all.

    Args:
        size: Side of each card in pixels.

    Returns:
        The deck.

    Raises:
        MissingSourceError: if Pillow is not installed.
        WeightspaceValueError: if ``size`` is below 8.

    Example:
        >>> deck = default_deck()
        >>> len(deck), deck.images.shape[1:]
        (53, torch.Size([4, 64, 64]))
        >>> deck.names[:4]
        ('circle', 'ring', 'square', 'triangle')
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise WeightspaceValueError(f"`size` must be an int of at least 8, got {size!r}")
    return Deck(CARD_NAMES, _default_images(size).clone())
