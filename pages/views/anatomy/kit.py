"""The shared kit of Anatomy's tabs: the model sides, charts on the page's colour rule, titles, notes."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image
from streamlit.delta_generator import DeltaGenerator
from torch import nn

from pages.views import ui
from vitviz.figures.common import attention_overlay_figure
from vitviz.figures.scales import CLIP_PERCENTILE, colour_scale
from vitviz.maths.attention import AttentionRecord
from vitviz.models import LoadedModel, ModelError, ModelFacts, describe_weights, no_token_attention_reason
from vitviz.preprocess import ImageView, ViewMode, image_view

__all__ = ["RAW_COLOURS", "TWIN_LABEL", "ModelSide", "ViewComputation", "WeightsComputation", "model_sides"]

TWIN_LABEL = "random (untrained twin)"

T = TypeVar("T")


@dataclass(frozen=True)
class ModelSide:
    """One model a tab is drawn for: the chosen model, or its untrained twin."""

    loaded: LoadedModel
    choice: ui.ModelChoice  # what was picked; the twin is built from the same choice
    twin: bool
    view: ViewMode = "crop"  # the one view of the image every per-image tab computes on

    @property
    def label(self) -> str:
        """The side's heading, and the suffix of its figure titles."""
        return TWIN_LABEL if self.twin else describe_weights(self.loaded.weights, self.loaded.run)

    @property
    def key(self) -> tuple:
        """A hashable cache key naming the model.

        The twin's names what it is the twin of and its input size, so it never collides with a
        model loaded with "random" weights at its default size (DINOv2: 518 px, not 224).
        """
        facts = self.loaded.facts
        if self.twin:
            return (
                facts.name,
                f"untrained twin of {self.choice.weights}",
                str(self.loaded.device),
                facts.input_size,
            )
        return (facts.name, self.loaded.run or self.loaded.weights, str(self.loaded.device))

    @property
    def class_query(self) -> str:
        """What a "class" map attends from: the class token, or the mean patch of a model without one."""
        return "class token" if self.loaded.facts.num_prefix_tokens else "mean patch"

    @property
    def suffix(self) -> str:
        """Part of the side's widget keys: unique per side."""
        return "random" if self.twin else "model"

    def attention(self, picked: ui.ImageChoice) -> AttentionRecord:
        """Every layer's attention on the picked image, from the app's one attention cache."""
        choice = self.choice
        return ui.cached_attention(
            choice.name,
            choice.weights,
            choice.device,
            picked.digest,
            picked.image,
            twin=self.twin,
            view=self.view,
        )

    def view_of(self, picked: ui.ImageChoice) -> ImageView:
        """The picked image's view as this model sees it: what every computation of a tab takes."""
        return _cached_view(self.key, picked.digest, self.view, self.loaded.facts, picked.image)

    def pixels(self, picked: ui.ImageChoice) -> np.ndarray:
        """The picked image's view as this model sees it, for drawing maps over."""
        return self.view_of(picked).pixels

    def downloads(
        self, figure: go.Figure, array: np.ndarray | None, picked: ui.ImageChoice, what: str, key: str
    ) -> None:
        """The figure's download buttons, their files named after this side's model, weights and image."""
        loaded = self.loaded
        ui.figure_downloads(
            figure, array, loaded.run or loaded.facts.name, loaded.weights, picked.name, what, key
        )


def model_sides(
    choice: ui.ModelChoice, loaded: LoadedModel, compare: bool, view: ViewMode = "crop"
) -> list[ModelSide]:
    """The chosen model and, when `compare` asks for it, its untrained twin (random weights have none).

    Both sides compute every per-image tab on `view` of the picked image.
    """
    sides = [ModelSide(loaded, choice, twin=False, view=view)]
    if compare and not loaded.trained:
        st.info("These weights are already random: there is nothing untrained to compare them with.")
    elif compare:
        twin = ui.cached_twin(choice.name, choice.weights, choice.device)
        sides.append(ModelSide(twin, choice, twin=True, view=view))
    return sides


def _own_cache(
    computed: Callable[..., T], compute: Callable, spinner: str, max_entries: int
) -> Callable[..., T]:
    """`st.cache_data` over `computed`, a wrapper of `compute`, in a cache of its own.

    Streamlit names a function's cache after its qualified name and source, which every wrapper made
    here shares: named after `compute`, each computation keeps its own entries and `max_entries`.
    """
    computed.__qualname__ = f"{compute.__module__}.{compute.__qualname__}"
    return st.cache_data(show_spinner=spinner, max_entries=max_entries)(computed)


class ViewComputation(Generic[T]):
    """`compute(loaded, view, *options)` on a side's view of the picked image, cached.

    Keyed by the side's model key, the image's digest, the view mode and the options; the model and
    the view go in unhashed (the key names them). `spinner` shows while it runs.
    """

    def __init__(self, compute: Callable[..., T], spinner: str, max_entries: int = 16) -> None:
        def computed(
            model_key: tuple,
            digest: str,
            view: ViewMode,
            *options: Hashable,
            _loaded: LoadedModel,
            _view: ImageView,
        ) -> T:
            return compute(_loaded, _view, *options)

        self._cached = _own_cache(computed, compute, spinner, max_entries)

    def __call__(self, side: ModelSide, picked: ui.ImageChoice, *options: Hashable) -> T:
        return self._cached(
            side.key, picked.digest, side.view, *options, _loaded=side.loaded, _view=side.view_of(picked)
        )


class WeightsComputation(Generic[T]):
    """`compute(model, facts)` on a side's weights alone (no image), cached per model key."""

    def __init__(
        self, compute: Callable[[nn.Module, ModelFacts], T], spinner: str, max_entries: int = 16
    ) -> None:
        def computed(model_key: tuple, _loaded: LoadedModel) -> T:
            return compute(_loaded.model, _loaded.facts)

        self._cached = _own_cache(computed, compute, spinner, max_entries)

    def __call__(self, side: ModelSide) -> T:
        return self._cached(side.key, _loaded=side.loaded)


_GET_A_HEAD = (
    "Fine-tune a probe on the Fine-tune page (a head on these features), then pick its run as the model here."
)


def _columns(count: int) -> Sequence[DeltaGenerator]:
    return st.columns(count) if count > 1 else [st.container()]


def _each_side(
    sides: Sequence[ModelSide], failure: str, compute: Callable[[ModelSide], T]
) -> Iterator[tuple[ModelSide, T]]:
    """Each side under its heading (when there are two) with what `compute` made for it.

    A side whose computation fails shows one error line, "Could not `failure`: …", and is skipped.
    """
    for side in sides:
        if len(sides) > 1:
            st.subheader(side.label)
        try:
            result = compute(side)
        except (ModelError, ValueError, RuntimeError) as error:
            st.error(f"Could not {failure}: {error}")
            continue
        yield side, result


TITLE_TWO_LINES_TOP_PX = 72  # a figure's top margin when its title has a second, smaller line


def _chart(figure: go.Figure, key: str, **options) -> None:
    """`st.plotly_chart`, with room above the plot for a two-line title (the model's line in <sup>)."""
    title = figure.layout.title.text or ""
    top = figure.layout.margin.t
    if "<br>" in title and (top is None or top < TITLE_TWO_LINES_TOP_PX):
        figure.update_layout(margin={"t": TITLE_TWO_LINES_TOP_PX})
    ui.plotly_chart(figure, key=key, **options)


def _title(text: str, side: ModelSide) -> str:
    """A figure title of tabs 5–9: random weights say so in it."""
    return text if side.loaded.trained else f"{text}<br><sup>{side.label}</sup>"


def _export_title(text: str, side: ModelSide) -> str:
    """A title that still says which model and weights once the figure is exported."""
    return f"{text}<br><sup>{side.loaded.facts.name} · {side.label}</sup>"


RAW_COLOURS = "anatomy_raw_colours"  # toggle: the maps' colour bars span the raw range, not clipped


def _raw_colours() -> bool:
    return bool(st.session_state.get(RAW_COLOURS, False))


def _clip_percentile() -> float | None:
    """The page's colour rule: clip at the 99th percentile, or None when the raw toggle is on."""
    return None if _raw_colours() else CLIP_PERCENTILE


def _scaled(figure: go.Figure, values: np.ndarray, label: str) -> go.Figure:
    """Applies the page's colour rule to a map's heatmap: clipped at the 99th percentile unless raw."""
    scale = colour_scale(values, label, _clip_percentile())
    figure.update_traces(
        selector={"type": "heatmap"},
        zmin=scale.zmin,
        zmax=scale.zmax,
        colorbar={"title": {"text": scale.title, "side": "right"}},
    )
    return figure


def _overlay_chart(
    pixels: np.ndarray,
    values: np.ndarray,
    stride_px: tuple[int, int],
    title: str,
    label: str,
    key: str,
    sinks: Sequence[tuple[int, int]] = (),
) -> None:
    """A map over the view's pixels on the page's colour rule (clipped unless raw), its colour bar
    titled `label`; `sinks` are the token grid cells marked as attention sinks."""
    figure = attention_overlay_figure(pixels, values, stride_px, title, sinks=sinks)
    _chart(_scaled(figure, values, label), key=key, theme=None)


def _cnn_note(facts: ModelFacts, why: str) -> bool:
    """Says that the tab does not apply to a model without global attention over one grid, and why."""
    if facts.family == "cnn" or facts.grid_size is None:
        st.info(f"Does not apply: {facts.name} is a {facts.family_words}. {why}")
        return True
    if not facts.global_attention:
        st.info(f"Does not apply: {no_token_attention_reason(facts, 'these tabs about its attention')}")
        return True
    return False


@st.cache_resource(show_spinner=False, max_entries=16)
def _cached_view(
    model_key: tuple, digest: str, view: ViewMode, _facts: ModelFacts, _image: Image.Image
) -> ImageView:
    """The view, shared and never changed: a resource cache hands it out without copying its photo."""
    return image_view(_image, _facts, view)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()
