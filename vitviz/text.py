"""Text written for a person: a quoted line cut to a length, and sizes written one labelled way."""

from __future__ import annotations

__all__ = [
    "ELLIPSIS",
    "clipped",
    "grid_size_text",
    "patch_size_text",
    "picture_size_text",
    "printable_clipped",
]

ELLIPSIS = "…"


def clipped(text: str, limit: int) -> str:
    """`text` itself when it has at most `limit` characters; else its first `limit - 1` and "…".

    The result never has more than `limit` characters (code points: a character outside the Basic
    Multilingual Plane counts as one, and is never split).

    Raises:
        ValueError: when `limit` is below 1 (there is no room for the ellipsis).
    """
    if limit < 1:
        raise ValueError(f"a clipped text needs room for at least one character, not {limit}")
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def printable_clipped(text: str, limit: int) -> str:
    """`text` with every character that is not printable shown as "?" (line breaks and tabs
    included, so it stays on one line), then `clipped` to `limit` characters."""
    return clipped("".join(character if character.isprintable() else "?" for character in text), limit)


# Sizes are written one way wherever they are printed: a grid as rows × columns, a picture as
# width × height in pixels, each with its order said, since the library stores both orders (input
# sizes and grids as (rows, cols), PIL sizes as (width, height)). Keyword-only, so no call site can
# pass a (height, width) tuple in the wrong order unnoticed.


def grid_size_text(*, rows: int, columns: int) -> str:
    """A token grid's size, labelled: "18 × 15 grid (rows × columns)"."""
    return f"{rows} × {columns} grid (rows × columns)"


def picture_size_text(*, width: int, height: int) -> str:
    """A picture's size in pixels, labelled: "451 × 300 px (width × height)"."""
    return f"{width} × {height} px (width × height)"


def patch_size_text(*, width: int, height: int) -> str:
    """A patch's size where a title has little room: "14-px" for a square patch (no order to state),
    else the labelled picture size, "16 × 8 px (width × height)"."""
    return f"{width}-px" if width == height else picture_size_text(width=width, height=height)
