"""Figure titles that fit their figure: each line wrapped to the width it is drawn in.

Plotly draws a title as SVG text, which never wraps: a line wider than its figure is cut off at the
figure's edge (a fine-tune's long run name in a half-width figure's subtitle lost its end). Text
width is estimated here from the characters' usual widths in a sans-serif font, on the generous side,
so a line judged to fit does fit; a line that does not is broken at spaces (a single word too long
for a line is cut, ending in "…").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "SOFT_BREAK",
    "SUBPLOT_TITLE_FONT_PX",
    "TITLE_FONT_PX",
    "TITLE_LINE_PX",
    "WORD_BREAK",
    "fit_title",
    "fitted_colour_bars",
    "fitted_layout",
    "text_width_px",
]

# Widths in em of a sans-serif font (Open Sans, Plotly's default, and its fallbacks), rounded up.
_NARROW = frozenset("iljtfrI.,;:'!|()[]{} ")
_WIDE = frozenset("WMmw@%—")
_EM_NARROW, _EM_CAPITAL, _EM_WIDE, _EM_OTHER = 0.32, 0.78, 0.98, 0.60
_SUP_SCALE = 0.7  # Plotly draws <sup> text at 70% of the title's size
_TAG = re.compile(r"<[^>]*>")
TITLE_LINE_PX = 1.3  # a title line's height, in font sizes
_MAX_LINES = 4  # lines one source line may wrap into before the rest is cut
# Line breaks this module adds: Plotly breaks the line at each as at "<br>" (its tag may hold
# spaces), and they tell themselves apart from a title's own: one at a space, one inside a word.
SOFT_BREAK = "<br >"
WORD_BREAK = "<br  >"
_WORD_PARTS = re.compile(r"[^_\-/.:]+[_\-/.:]*|[_\-/.:]+")  # a word's parts, each ending at its joints


def text_width_px(text: str, font_px: float) -> float:
    """The width `text` (markup removed) takes at `font_px`, estimated on the generous side."""
    ems = 0.0
    for character in _TAG.sub("", text):
        if character in _NARROW:
            ems += _EM_NARROW
        elif character in _WIDE:
            ems += _EM_WIDE
        elif character.isupper():
            ems += _EM_CAPITAL
        else:
            ems += _EM_OTHER
    return ems * font_px


def _cut(word: str, width_px: float, font_px: float) -> str:
    """`word` shortened to fit `width_px`, ending in "…"."""
    while len(word) > 1 and text_width_px(word + "…", font_px) > width_px:
        word = word[:-1]
    return word + "…"


def _wrapped(line: str, width_px: float, font_px: float) -> list[tuple[str, str]]:
    """One line of plain text as lines that fit, each with the break that comes before it.

    Lines break at spaces (SOFT_BREAK); a word too long for a line breaks inside it, after a `_`,
    `-`, `/`, `.` or `:` (WORD_BREAK: "deit_small_distilled_", then "patch16_224"); a part still too
    long is cut, ending in "…".
    """

    def fits(text: str) -> bool:
        return text_width_px(text, font_px) <= width_px

    lines: list[tuple[str, str]] = []  # (the break before the line, the line)
    current, joint = "", ""
    for word in line.split(" "):
        candidate = f"{current} {word}" if current else word
        if fits(candidate):
            current = candidate
            continue
        if fits(word):  # the word starts the next line
            lines.append((joint, current))
            current, joint = word, SOFT_BREAK
            continue
        # Too long for any line: its parts fill this line on from a space, then the next ones.
        current = f"{current} " if current else ""
        started = False  # whether a part of the word stands on the current line
        for part in _WORD_PARTS.findall(word):
            if fits(current + part):
                current, started = current + part, True
                continue
            if current.strip():
                lines.append((joint, current.rstrip()))
                joint = WORD_BREAK if started else SOFT_BREAK
            current, started = (part if fits(part) else _cut(part, width_px, font_px)), True
    lines.append((joint, current))
    if len(lines) > _MAX_LINES:
        rest = "".join(("" if joint == WORD_BREAK else " ") + text for joint, text in lines[_MAX_LINES - 1 :])
        lines = [*lines[: _MAX_LINES - 1], (lines[_MAX_LINES - 1][0], _cut(rest.strip(), width_px, font_px))]
    return lines


def fit_title(title: str, width_px: float, font_px: float) -> tuple[str, float]:
    """`title` with every line that would run past `width_px` broken into lines that fit.

    A title's lines are separated by "<br>"; lines inside <sup>…</sup> (which may span lines) are
    drawn at 70% and measured so. Lines that fit are kept as they are; a line that does not is broken
    at spaces with SOFT_BREAK (a word too long for a line inside it, with WORD_BREAK), so that
    removing each WORD_BREAK and replacing each SOFT_BREAK with a space gives the line back (but for
    a part too long for any line, which is cut, and markup inside the line, which is dropped).

    Returns:
        The fitted title, and the height in px its added lines take (for the figure's top margin).
    """
    fitted: list[str] = []
    added_px = 0.0
    small = False  # inside a <sup> opened on an earlier line
    for line in title.split("<br>"):
        size = font_px * (_SUP_SCALE if small or line.startswith("<sup>") else 1.0)
        opened, closed = line.rfind("<sup>"), line.rfind("</sup>")
        if opened != closed:  # the line opens or closes a <sup> (both are -1 when it does neither)
            small = opened > closed
        if text_width_px(line, size) <= width_px:
            fitted.append(line)
            continue
        lead = "<sup>" if line.startswith("<sup>") else ""
        trail = "</sup>" if line.endswith("</sup>") else ""
        pieces = _wrapped(_TAG.sub("", line[len(lead) : len(line) - len(trail)]), width_px, size)
        fitted.append(lead + "".join(joint + text for joint, text in pieces) + trail)
        # Each added line is as tall as the title's own lines, <sup> or not.
        added_px += (len(pieces) - 1) * font_px * TITLE_LINE_PX
    return "<br>".join(fitted), added_px


# Plotly's defaults where a figure's layout sets none.
TITLE_FONT_PX = 17.0  # a title's size: 1.4 × the 12-px base font
SUBPLOT_TITLE_FONT_PX = 16.0  # make_subplots' titles
_DEFAULT_MARGIN = {"l": 80, "r": 80, "t": 100, "b": 80}
_SIDE_PAD_PX = 4  # kept between a title and the figure's edge
_TOP_PAD_PX = 8  # above a fitted title
_COLOUR_BAR_PX = 110  # a colour bar with its tick labels and title, beside the plots
_DEFAULT_HEIGHT_PX = 450  # a figure's height where its layout sets none
_BASE_FONT_PX = 12.0  # the font of text a figure sizes nowhere


def fitted_layout(layout: dict, width_px: float) -> dict | None:
    """A figure's layout (as `Figure.to_dict()` gives it) with its title and its subplots' titles
    fitted to a figure `width_px` wide, its top margin grown to hold every line (a figure of a set
    height keeps it: its plot gives the lines their room), and its shared colour bar's title fitted
    to the bar; None when everything fits as it is. `layout` is not changed.

    A subplot title (an annotation on the paper, anchored at its bottom) gets its subplot's width,
    less a shared colour bar's share.
    """
    title = dict(layout.get("title") or {})
    text = title.get("text") or ""
    size = float((title.get("font") or {}).get("size") or TITLE_FONT_PX)
    title["text"], added_px = fit_title(text, width_px - 2 * _SIDE_PAD_PX, size)
    changed = title["text"] != text
    margin = _margin(layout)
    plot_px = width_px - margin["l"] - margin["r"] - (_COLOUR_BAR_PX if _has_colour_bar(layout) else 0)
    annotations = []
    subplots_added_px = 0.0
    for annotation in layout.get("annotations") or []:
        annotation = dict(annotation)
        domain = _x_domain(layout, annotation)
        if domain is not None and annotation.get("text"):
            size_px = float((annotation.get("font") or {}).get("size") or SUBPLOT_TITLE_FONT_PX)
            fitted, added = fit_title(annotation["text"], (domain[1] - domain[0]) * plot_px, size_px)
            changed |= fitted != annotation["text"]
            annotation["text"] = fitted
            subplots_added_px = max(subplots_added_px, added)
        annotations.append(annotation)
    fitted_layout = dict(layout)
    if changed:
        # Hung from the figure's top (Plotly otherwise centres a title in the top margin, and one of
        # many lines ran into the plot), with the margin below it tall enough for all its lines.
        # Plotly hangs a title of several lines about one font size higher than its pad says
        # (measured: 11 px for 12-px, 20 px for 22-px titles), so the pad holds that too.
        pad_px = round(_TOP_PAD_PX + size)
        if title.get("y") in (None, "auto"):
            title.update(y=1.0, yref="container", yanchor="top", pad={"t": pad_px})
        lines = title["text"].count("<br") + 1
        needed = round(pad_px + lines * size * TITLE_LINE_PX + 2 * _SIDE_PAD_PX)
        top = max(margin["t"] + round(added_px + subplots_added_px), needed)
        fitted_layout.update(title=title, margin={**(layout.get("margin") or {}), "t": top})
        if annotations:
            fitted_layout["annotations"] = annotations
    axis = layout.get("coloraxis")  # a shared colour bar, as long as the plot the title left
    bar = _fitted_bar(axis.get("colorbar"), fitted_layout) if isinstance(axis, dict) else None
    if bar is not None:
        fitted_layout["coloraxis"] = {**axis, "colorbar": bar}
    return fitted_layout if changed or bar is not None else None


def fitted_colour_bars(bars: Sequence[dict | None], layout: dict) -> list[dict | None] | None:
    """Each trace's colour bar (as `to_plotly_json()` gives it; None for a trace without one) with
    an upright bar's title broken into lines that fit the bar's length: the fitted bar, or None where
    it fits as it is; None when every title fits. The bars are not changed.

    A colour bar titled on its right side reads its title bottom to top along the bar, which on a
    short figure ran past both ends (a map's "cosine similarity (clipped at the 99th percentile)");
    its lines stand side by side.
    """
    fitted = [_fitted_bar(bar, layout) for bar in bars]
    return fitted if any(bar is not None for bar in fitted) else None


def _margin(layout: dict) -> dict:
    """The figure's margins, Plotly's default where its layout sets none."""
    set_here = {key: value for key, value in (layout.get("margin") or {}).items() if value is not None}
    return {**_DEFAULT_MARGIN, **set_here}


def _fitted_bar(bar: dict | None, layout: dict) -> dict | None:
    """An upright colour bar with its side title broken into lines that fit its length; None when
    it fits (or the bar is not upright, or its title stands above it)."""
    title = (bar or {}).get("title") or {}
    if not title.get("text") or title.get("side") != "right" or bar.get("orientation") == "h":
        return None
    margin = _margin(layout)
    plot_px = (layout.get("height") or _DEFAULT_HEIGHT_PX) - margin["t"] - margin["b"]
    length = bar.get("len", 1.0) * (plot_px if bar.get("lenmode", "fraction") == "fraction" else 1.0)
    base_px = float((layout.get("font") or {}).get("size") or _BASE_FONT_PX)
    size = float((title.get("font") or {}).get("size") or base_px)
    text, _ = fit_title(title["text"], length, size)
    return None if text == title["text"] else {**bar, "title": {**title, "text": text}}


def _has_colour_bar(layout: dict) -> bool:
    """Whether the figure draws a colour bar of its layout's shared colour axis (beside its plots)."""
    axis = layout.get("coloraxis")
    return isinstance(axis, dict) and axis.get("showscale", True) is not False


def _x_domain(layout: dict, annotation: dict) -> tuple[float, float] | None:
    """The x domain of the subplot an annotation titles (on the paper, anchored at its bottom)."""
    if annotation.get("xref") != "paper" or annotation.get("yanchor") != "bottom":
        return None
    x = annotation.get("x")
    if not isinstance(x, int | float):
        return None
    for key, axis in layout.items():
        if key.startswith("xaxis") and isinstance(axis, dict) and axis.get("domain"):
            start, end = axis["domain"]
            if start <= x <= end:
                return float(start), float(end)
    return None
