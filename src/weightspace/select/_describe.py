"""The text of ``str(selection)``: the block-to-block table and the pairs, with roles and views."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from weightspace.select._selection import Selection

__all__ = ["describe"]

_MAX_ROWS = 40


def describe(selection: Selection) -> str:
    """Return the table that ``str(selection)`` prints (see :meth:`Selection.describe`)."""
    n = len(selection)
    head = f"Selection: {n} pair{'' if n == 1 else 's'} of `a` onto `b`"
    if selection._origin:
        head += f" ({selection._origin})"
    lines = [head]
    blocks = selection.blocks
    in_block: list[tuple[str, str] | None] = []
    for a, b in selection.pairs:
        in_block.append(next((k for k in blocks if _under(a, k[0]) and _under(b, k[1])), None))
    show_roles = any(r is not None for r in selection.roles)
    show_views = any(v is not None for v in selection.views)
    if blocks:
        rows = [["block of a", "block of b", "pairs"]]
        for blk in blocks:
            rows.append([blk[0], blk[1], str(sum(1 for x in in_block if x == blk))])
        outside = sum(1 for x in in_block if x is None)
        if outside:
            rows.append(["(outside blocks)", "", str(outside)])
        lines += _table(rows, right=(2,))
    inside: dict[tuple[str, ...], None] = {}
    others: list[tuple[str, ...]] = []
    for (a, b), view, role, k in zip(
        selection.pairs, selection.views, selection.roles, in_block, strict=True
    ):
        cells = [role or ""] if show_roles else []
        if k is not None:
            a, b = a[len(k[0]) + 1 :], b[len(k[1]) + 1 :]
        cells += [a, b]
        if show_views:
            cells.append("" if view is None else str(view))
        if k is None:
            others.append(tuple(cells))
        else:
            inside.setdefault(tuple(cells), None)
    header = (["role"] if show_roles else []) + ["a", "b"] + (["view"] if show_views else [])
    if inside:
        lines.append("pairs within blocks (names relative to the block):")
        lines += _table([header, *[list(r) for r in list(inside)[:_MAX_ROWS]]])
        if len(inside) > _MAX_ROWS:
            lines.append(f"  ... and {len(inside) - _MAX_ROWS} more")
    if others:
        lines.append("pairs outside blocks:" if blocks else "pairs:")
        lines += _table([header, *[list(r) for r in others[:_MAX_ROWS]]])
        if len(others) > _MAX_ROWS:
            lines.append(f"  ... and {len(others) - _MAX_ROWS} more")
    return "\n".join(lines)


def _under(name: str, prefix: str) -> bool:
    return not prefix or name.startswith(prefix + ".")


def _table(rows: list[list[str]], right: tuple[int, ...] = ()) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        out.append(("  " + "  ".join(cells)).rstrip())
    return out
