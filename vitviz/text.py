"""Text quoted back to a person on one line: cut to a length, an ellipsis saying that it was cut."""

from __future__ import annotations

__all__ = ["ELLIPSIS", "clipped", "printable_clipped"]

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
