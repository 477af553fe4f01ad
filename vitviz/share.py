"""A view's state as URL query parameters, so that a copied link reopens the same view."""

from __future__ import annotations

import math
from collections.abc import Collection, Container, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import timm

from vitviz.export import slug
from vitviz.models import WEIGHTS_SOURCES
from vitviz.text import grid_size_text

__all__ = [
    "DEFAULT_OPACITY",
    "TimmModelNames",
    "ViewLimits",
    "ViewState",
    "parse_view_state",
    "view_state_params",
]

QueryKind = Literal["class", "patch"]
HeadFusion = Literal["mean", "max", "min"]
SinkHandling = Literal["exclude", "raw"]  # as vitviz.maths.sinks.SinkMode: rollout without or with sinks
ColourRange = Literal[
    "clipped", "raw"
]  # colour bars clipped at the 99th percentile, or each map's full range

DEFAULT_OPACITY = 0.6
_FUSIONS: tuple[HeadFusion, ...] = ("mean", "max", "min")
_QUERIES: tuple[QueryKind, ...] = ("class", "patch")
_SINK_HANDLINGS: tuple[SinkHandling, ...] = ("exclude", "raw")
_COLOUR_RANGES: tuple[ColourRange, ...] = ("clipped", "raw")
# Bounds of the page's sliders; a link outside them falls back to the default.
_OPACITY_RANGE = (0.1, 1.0)
_DISCARD_RANGE = (0.0, 0.95)


class TimmModelNames(Container[str]):
    """Every model name timm can build, as a container: `name in TimmModelNames()`."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(name) and timm.is_model(name)


@dataclass(frozen=True)
class ViewState:
    """What a page shows, in the words of its widgets; None means "the page's default"."""

    model: str  # timm model name
    weights: str  # "bundled", "hub", "random" or a checkpoint path (never written to, or read from, a link)
    image: str | None = None  # built-in photo name; None for the default photo (or an upload)
    layer: int | None = None  # layer from 0; None: the last layer
    head: int | None = None  # head from 0; None: the mean of heads
    query: QueryKind = "class"  # attention from the class token or from the clicked patch
    patch: tuple[int, int] | None = None  # (row, col) of the query patch
    fusion: HeadFusion = "mean"  # rollout head fusion
    discard: float = 0.0  # rollout discard ratio
    start_layer: int = 0  # rollout start layer
    opacity: float = DEFAULT_OPACITY  # map opacity over the image
    sinks: SinkHandling = "exclude"  # "raw": the rollout toggle "raw rollout (sinks included)" is on
    colours: ColourRange = "clipped"  # "raw": the toggle "raw colour values" is on (bars span the full range)


@dataclass(frozen=True)
class ViewLimits:
    """What a link may name: known models, weights and photos, and the current model's sizes.

    The model's sizes are None until the model is known; layers, heads and patches are then only
    checked for form, and a second parse with the sizes filled in checks their range.
    """

    models: Container[str]  # model names that exist
    weights: Sequence[str]  # weights sources a link may pick
    images: Sequence[str]  # built-in photo names
    default_model: str
    default_weights: str = "bundled"
    num_layers: int | None = None
    num_heads: int | None = None
    grid_size: tuple[int, int] | None = None  # (rows, cols)


def _integer(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _photo(name: str, images: Sequence[str]) -> str | None:
    """The photo a link names, by its exact name or its slug ("cat-chelsea" for "cat (chelsea)")."""
    if name in images:
        return name
    wanted = slug(name)
    return next((image for image in images if slug(image) == wanted), None)


# How much of a link's value a note quotes back: enough to recognise it, on one line.
_QUOTED_CHARS = 40


def _quoted(value: str) -> str:
    """`value` quoted for a note: its first _QUOTED_CHARS characters, "…" when there were more."""
    return repr(value) if len(value) <= _QUOTED_CHARS else repr(value[: _QUOTED_CHARS - 1]) + "…"


def _range_text(count: int) -> str:
    return f"0–{count - 1}"


def _bounded_index(text: str, count: int | None, noun: str, alternative: str = "") -> tuple[int | None, str]:
    """A layer or head number from a link and "", or None and why it is refused."""
    value = _integer(text)
    if value is None or value < 0:
        return None, f"not a {noun} number{alternative}"
    if count is not None and value >= count:
        return None, f"this model has {noun}s {_range_text(count)}"
    return value, ""


def parse_view_state(params: Mapping[str, str], limits: ViewLimits) -> tuple[ViewState, list[str]]:
    """Reads a view from URL query parameters; anything unknown or out of range falls back.

    Parameters: ``model``, ``weights``, ``image``, ``layer``, ``head`` (a number or ``mean``),
    ``query`` (``class`` or ``patch``), ``patch`` (``row,col``), ``fusion``, ``discard``, ``start``,
    ``opacity``, ``sinks`` (``exclude`` or ``raw``), ``colours`` (``clipped`` or ``raw``). Other parameters (such as ``present``) are left to their pages.

    Returns:
        The state, and one short note per ignored parameter, saying what was ignored and why.
    """
    notes: list[str] = []

    def ignore(name: str, value: str, why: str) -> None:
        notes.append(f"{name}={_quoted(value)} ({why})")

    model = limits.default_model
    if "model" in params:
        if params["model"] in limits.models:
            model = params["model"]
        else:
            ignore("model", params["model"], "no such model")
    weights = limits.default_weights
    if "weights" in params:
        if params["weights"] in limits.weights:
            weights = params["weights"]
        else:
            ignore("weights", params["weights"], f"weights must be one of {', '.join(limits.weights)}")
    state = ViewState(model=model, weights=weights)

    def take_index(
        state: ViewState, key: str, field: str, count: int | None, noun: str, or_: str = ""
    ) -> ViewState:
        """The state with a layer or head number from the link, or unchanged and the number noted as ignored."""
        value, why = _bounded_index(params[key], count, noun, or_)
        if value is None:
            ignore(key, params[key], why)
            return state
        return replace(state, **{field: value})

    def take_choice(state: ViewState, key: str, choices: Collection[str], why: str) -> ViewState:
        """The state with a word from the link when it is one of `choices`, else unchanged and noted."""
        if params[key] in choices:
            return replace(state, **{key: params[key]})
        ignore(key, params[key], why)
        return state

    if "image" in params:
        photo = _photo(params["image"], limits.images)
        if photo is None:
            ignore("image", params["image"], "no such built-in photo")
        else:
            state = replace(state, image=photo)

    if "layer" in params:
        state = take_index(state, "layer", "layer", limits.num_layers, "layer")

    if "head" in params and params["head"] != "mean":
        state = take_index(state, "head", "head", limits.num_heads, "head", " or 'mean'")

    if "query" in params:
        state = take_choice(state, "query", _QUERIES, "use class or patch")

    if "patch" in params:
        parts = [_integer(part) for part in params["patch"].split(",")]
        if len(parts) != 2 or any(part is None or part < 0 for part in parts):
            ignore("patch", params["patch"], "use row,col")
        elif limits.grid_size is not None and not (
            parts[0] < limits.grid_size[0] and parts[1] < limits.grid_size[1]  # type: ignore[operator]
        ):
            rows, cols = limits.grid_size
            ignore("patch", params["patch"], f"outside the {grid_size_text(rows=rows, columns=cols)}")
        else:
            state = replace(state, patch=(parts[0], parts[1]))  # type: ignore[arg-type]

    if "fusion" in params:
        state = take_choice(state, "fusion", _FUSIONS, "use mean, max or min")

    if "discard" in params:
        discard = _number(params["discard"])
        if discard is None or not _DISCARD_RANGE[0] <= discard <= _DISCARD_RANGE[1]:
            ignore(
                "discard", params["discard"], f"use a ratio from {_DISCARD_RANGE[0]} to {_DISCARD_RANGE[1]}"
            )
        else:
            state = replace(state, discard=discard)

    if "start" in params:
        state = take_index(state, "start", "start_layer", limits.num_layers, "layer")

    if "sinks" in params:
        state = take_choice(state, "sinks", _SINK_HANDLINGS, "use exclude or raw")

    if "colours" in params:
        state = take_choice(state, "colours", _COLOUR_RANGES, "use clipped or raw")

    if "opacity" in params:
        opacity = _number(params["opacity"])
        if opacity is None or not _OPACITY_RANGE[0] <= opacity <= _OPACITY_RANGE[1]:
            ignore("opacity", params["opacity"], f"use {_OPACITY_RANGE[0]} to {_OPACITY_RANGE[1]}")
        else:
            state = replace(state, opacity=opacity)
    return state, notes


def _decimal(value: float) -> str:
    """A slider value without float noise: 0.6000000000000001 → "0.6"."""
    return f"{round(value, 4):g}"


def view_state_params(state: ViewState, attention: bool = True) -> dict[str, str]:
    """The query parameters that reopen `state`; parse_view_state reads them back unchanged.

    Weights from a checkpoint file are left out (a link never names a server path), as are the
    attention and rollout parameters when `attention` is False (a CNN has none).
    """
    params = {"model": state.model}
    if state.weights in WEIGHTS_SOURCES:
        params["weights"] = state.weights
    if state.image is not None:
        params["image"] = state.image
    if attention:
        if state.layer is not None:
            params["layer"] = str(state.layer)
        params["head"] = "mean" if state.head is None else str(state.head)
        params["query"] = state.query
        if state.patch is not None:
            params["patch"] = f"{state.patch[0]},{state.patch[1]}"
        params["fusion"] = state.fusion
        params["discard"] = _decimal(state.discard)
        params["start"] = str(state.start_layer)
        if state.sinks != "exclude":  # the default rollout leaves the link as it was
            params["sinks"] = state.sinks
    params["opacity"] = _decimal(state.opacity)
    if state.colours != "clipped":  # the default colour bars leave the link as it was
        params["colours"] = state.colours
    return params
