"""The Explore page's sections: the view, predictions, clicked patches, raw attention, rollout.

Models without one grid of global attention (Swin, MaxViT, MobileViT, CaiT, XCiT) get the registry's
attention maps that fit them, and a line for each it refuses; where raw attention reads layer by layer
on each layer's own feature map, a picker chooses the layer.

Each map and its own controls live in an `st.fragment`: moving a layer slider or clicking a patch
reruns that fragment alone, and the photo, the predictions and the other map are not sent again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from pages.views import ui
from pages.views.compare.explanations import explanation_of
from pages.views.explore.keys import (
    ATTENTION_CHART,
    CLICKED_PATCH,
    GRID_CHART,
    GRID_FIGURE,
    HEAD,
    PARTITIONED_LAYER,
    QUERY_KIND,
    QUERY_PATCH,
    RAW_ROLLOUT,
    SEEN_SELECTIONS,
    VIEW,
    class_query,
)
from pages.views.explore.links import sync_link
from vitviz.capture import partitioned_attention_layers
from vitviz.figures.common import (
    attention_overlay_figure,
    patch_grid_figure,
    photo_view_figure,
    predictions_figure,
    selected_patch,
)
from vitviz.figures.scales import CLIP_PERCENTILE, colour_scale
from vitviz.maths.attention import AttentionRecord, class_attention_map, patch_token, query_attention_map
from vitviz.maths.sinks import SinkReport, plan_rollout, rollout_statement, sink_sentence
from vitviz.methods import METHODS, available_methods
from vitviz.methods.base import reads_partitions
from vitviz.models import LoadedModel, ModelFacts, no_token_attention_reason
from vitviz.predict import Prediction, top_predictions
from vitviz.preprocess import VIEW_LABELS, ImageView, ViewMode
from vitviz.text import grid_size_text, patch_size_text, picture_size_text

__all__ = [
    "ExplorePage",
    "attention_maps_offered",
    "keep_head_choice",
    "render_attention",
    "render_attention_maps",
    "render_cnn",
    "view_picker",
]


def view_picker(choice: ui.ModelChoice) -> str:
    """The one view every map and prediction of the page is computed on; "aspect" only for a plain ViT."""
    return ui.view_picker(VIEW, aspect_problem=ui.aspect_problem_of([choice]))


def keep_head_choice() -> None:
    """Keeps the Head picker's choice while a CNN (which has no Head picker) is shown.

    Streamlit forgets a widget's state on a run that does not draw it; a shadow key remembers it.
    """
    shadow = f"{HEAD}_kept"
    if HEAD in st.session_state:
        st.session_state[shadow] = st.session_state[HEAD]
    elif shadow in st.session_state:
        st.session_state[HEAD] = st.session_state[shadow]


# Cached results of one view -------------------------------------------------------------------


@st.cache_data(max_entries=16)
def _photo_with_box(digest: str, view: str, title: str, _seen: ImageView) -> go.Figure:
    """The photo with the view's box, drawn once per photo and view (a large photo is resized)."""
    return photo_view_figure(_seen.photo, [("", _seen.box)], title)


def _show_view(picked: ui.ImageChoice, seen: ImageView, view: str) -> None:
    """The whole photo with the view's box: what of the photo the model sees; its note when it has one."""
    width, height = seen.photo_size
    title = f"{picked.name}, {picture_size_text(width=width, height=height)}<br><sup>box: {VIEW_LABELS[view]}</sup>"
    figure = _photo_with_box(picked.digest, view, title, seen)
    ui.plotly_chart(figure, key="explore_photo_chart", share=0.4, theme=None)
    if seen.note:
        st.caption(seen.note)


# The page's views -----------------------------------------------------------------------------


def _export_title(choice: ui.ModelChoice, picked: ui.ImageChoice, view: str, what: str) -> str:
    """A figure title that still says model, weights, photo and view once exported."""
    return f"{what}<br><sup>{choice.label} · {picked.name} · {VIEW_LABELS[view]}</sup>"


def _bars(choice, picked, view: str, predictions: list[Prediction], what: str, key: str) -> None:
    bars = predictions_figure(predictions, _export_title(choice, picked, view, what))
    bars.update_layout(margin={"t": 60})
    ui.plotly_chart(bars, key=key, share=0.6)
    ui.figure_downloads(bars, None, choice.name, choice.weights, picked.name, f"top5-predictions {view}", key)


def render_cnn(page: ExplorePage) -> None:
    """A model without global attention over one grid: the view and what it predicts, with a line saying why."""
    loaded, choice, picked, view = page.loaded, page.choice, page.picked, page.view
    facts = loaded.facts
    if facts.family == "cnn":
        st.info(f"{facts.name} is a CNN: it has no patches and no attention to show. Its predictions:")
    else:
        reason = no_token_attention_reason(facts, "this page's attention maps")
        st.info(f"{reason} Its predictions:")
    _view_and_predictions(loaded, choice, picked, view)


def _view_and_predictions(
    loaded: LoadedModel, choice: ui.ModelChoice, picked: ui.ImageChoice, view: str
) -> None:
    """The photo with its view's box beside the model's top-5 predictions on that view."""
    seen = ui.cached_view(choice.name, choice.weights, choice.device, picked.digest, picked.image, view)
    photo_column, bars_column = st.columns([2, 3])
    with photo_column:
        _show_view(picked, seen, view)
    with bars_column:
        predictions = ui.cached_predictions(
            choice.name, choice.weights, choice.device, picked.digest, picked.image, 5, view
        )
        untrained = "" if loaded.trained else " (untrained)"
        _bars(choice, picked, view, predictions, f"Top-5 predictions{untrained}", "explore_cnn_bars")


# Maps read from attention, in the order the page shows them: one layer's attention, then rollout.
ATTENTION_MAP_METHODS: tuple[str, ...] = ("attention", "rollout")
# How raw attention's heading says where it reads a model whose attention lives in partitions.
_PARTITIONED_HEADINGS: dict[str, str] = {
    "windowed": ", window by window",
    "block-grid": ", window by window and grid by grid",
    "dilated-grid": ", grid by grid",
    "unfolded": ", folded back onto each block's map",
}


@dataclass(frozen=True)
class ExplorePage:
    """What the page draws, picked once in the sidebar: the model, the picture, its view, the map settings."""

    loaded: LoadedModel
    choice: ui.ModelChoice
    picked: ui.ImageChoice
    view: ViewMode
    opacity: float
    raw_colours: bool

    def parts(self) -> tuple[LoadedModel, ui.ModelChoice, ui.ImageChoice, ViewMode, float, bool]:
        return self.loaded, self.choice, self.picked, self.view, self.opacity, self.raw_colours


def attention_maps_offered(facts: ModelFacts) -> list[str]:
    """The registry's attention maps that explain this model (Swin's windows, CaiT's class attention, …)."""
    offered = available_methods(facts)
    return [method for method in ATTENTION_MAP_METHODS if method in offered]


def render_attention_maps(page: ExplorePage) -> None:
    """A model without one grid of global attention whose attention the registry can still map.

    The view and the predictions, then each attention map the registry offers for this model over
    the view, titled with what it was read from; a map it refuses says the registry's reason.
    """
    loaded, choice, picked, view, opacity, raw_colours = page.parts()
    facts = loaded.facts
    reason = no_token_attention_reason(facts, "the clickable patch grid and the per-head maps")
    st.info(f"{reason} The attention maps that do explain it are below.")
    _view_and_predictions(loaded, choice, picked, view)
    seen = ui.cached_view(choice.name, choice.weights, choice.device, picked.digest, picked.image, view)
    offered = attention_maps_offered(facts)
    # A map needs the room of its title and colour bar; a refusal is one paragraph.
    widths = [3 if method in offered else 2 for method in ATTENTION_MAP_METHODS]
    columns = st.columns(widths)
    for column, width, method in zip(columns, widths, ATTENTION_MAP_METHODS, strict=True):
        with column:
            partitioned = method == "attention" and reads_partitions(facts)
            st.subheader(
                METHODS[method].title + (_PARTITIONED_HEADINGS[facts.attention] if partitioned else "")
            )
            if method not in offered:
                st.info(f"Not shown: {METHODS[method].unavailable_reason(facts)}")
                continue
            options = (("layer", _partitioned_layer_picker(loaded)),) if partitioned else ()
            share = width / sum(widths)  # of the page's main area, which the map's title is fitted to
            _attention_method_map(choice, picked, view, seen, method, opacity, raw_colours, options, share)


def _partitioned_layer_picker(loaded: LoadedModel) -> int:
    """Which attention layer raw attention reads, each named by where it lies in the model; 0 (the finest map) first."""
    layers = partitioned_attention_layers(loaded.model)
    if st.session_state.get(PARTITIONED_LAYER) not in range(len(layers)):  # another model's layer
        st.session_state[PARTITIONED_LAYER] = 0
    kinds = {"window": "window attention", "grid": "grid attention", "unfolded": "unfolded attention"}
    return st.selectbox(
        "Attention layer",
        range(len(layers)),
        format_func=lambda index: f"{index}: {layers[index].name} ({kinds[layers[index].kind]})",
        key=PARTITIONED_LAYER,
        help="Each layer's map lies on the feature map it attends over: later stages are coarser.",
    )


def _attention_method_map(
    choice: ui.ModelChoice,
    picked: ui.ImageChoice,
    view: str,
    seen: ImageView,
    method: str,
    opacity: float,
    raw_colours: bool,
    options: tuple[tuple[str, object], ...] = (),
    share: float = 0.5,
) -> None:
    """One registry map over the view, at the method's default options or those given, with its note when it has one."""
    try:
        result = explanation_of(choice, picked, view, method, None, options)
    except (ValueError, RuntimeError) as error:  # MethodUnavailableError is a ValueError too
        st.error(f"Could not compute {METHODS[method].title} of {choice.name}: {error}")
        return
    title = METHODS[method].title
    st.caption(f"Read from {result.source}.")
    if result.note:
        st.caption(result.note)
    if result.constant:  # nothing to draw: the note says why
        return
    label = "attention" if method == "attention" else "relevance"
    figure = attention_overlay_figure(
        seen.pixels,
        result.values,
        result.stride_px,
        _export_title(choice, picked, view, f"{title}<br><sup>{result.source}</sup>"),
        opacity=opacity,
        scale=colour_scale(result.values, label, None if raw_colours else CLIP_PERCENTILE),
    )
    # The title hangs from the top: Plotly centres its first line in the top margin and lets the
    # others fall below it, onto the map once `ui.plotly_chart` breaks a long source (MaxViT's,
    # MobileViT's) into more lines. Room for the name, the source and the export line, ~20 px each.
    figure.update_layout(
        title={"y": 1.0, "yref": "container", "yanchor": "top", "pad": {"t": 18}}, margin={"t": 88}
    )
    key = f"explore_{method}_map"
    ui.plotly_chart(figure, key=key, share=share, theme=None)
    ui.figure_downloads(
        figure, result.values, choice.name, choice.weights, picked.name, f"{method} {view}", key
    )


@dataclass(frozen=True)
class _Maps:
    """What every map of the page is drawn from: one model, one image, one view, its attention."""

    choice: ui.ModelChoice
    picked: ui.ImageChoice
    facts: ModelFacts
    record: AttentionRecord
    sinks: SinkReport
    view: str
    opacity: float
    raw_colours: bool

    @property
    def pixels(self) -> np.ndarray:
        """The view's pixels: the image as the model saw it in this record's forward."""
        assert self.record.view is not None, "the page's records are captured on a view"
        return self.record.view.pixels

    @property
    def sink_patches(self) -> list[tuple[int, int]]:
        return [sink.position for sink in self.sinks.patch_sinks if sink.position is not None]

    def overlay(
        self, values: np.ndarray, what: str, label: str, selected: tuple[int, int] | None = None
    ) -> go.Figure:
        """A map over the view's pixels, in the page's colour scale, with the sinks marked."""
        return attention_overlay_figure(
            self.pixels,
            values,
            self.facts.stride_px,
            self.title(what),
            opacity=self.opacity,
            selected=selected,
            scale=colour_scale(values, label, None if self.raw_colours else CLIP_PERCENTILE),
            sinks=self.sink_patches,
        )

    def title(self, what: str) -> str:
        return _export_title(self.choice, self.picked, self.view, what)

    def chart(
        self,
        figure: go.Figure,
        chart_key: str,
        downloads_key: str,
        name: str,
        array: np.ndarray | None = None,
        clickable: bool = False,
    ) -> None:
        """A figure and its row of downloads; a click on a clickable figure reruns its fragment."""
        if clickable:
            ui.plotly_chart(figure, key=chart_key, on_select="rerun", selection_mode="points", theme=None)
        else:
            ui.plotly_chart(figure, key=chart_key, theme=None)
        choice = self.choice
        ui.figure_downloads(
            figure, array, choice.name, choice.weights, self.picked.name, f"{name} {self.view}", downloads_key
        )

    def sync(self) -> None:
        sync_link(self.choice, self.picked, self.opacity, self.facts)


def render_attention(page: ExplorePage) -> None:
    """The photo with its view and the predictions, then the patch grid with raw attention, then rollout.

    Everything comes from one forward on one view; each map reruns alone when its controls move.
    """
    loaded, choice, picked, view, opacity, raw_colours = page.parts()
    facts = loaded.facts
    try:
        record = ui.cached_attention(
            choice.name, choice.weights, choice.device, picked.digest, picked.image, view=view
        )
    except (ValueError, RuntimeError) as error:
        st.error(f"Could not capture attention of {facts.name}: {error}")
        st.stop()
    report = ui.cached_sinks(choice.name, choice.weights, choice.device, picked.digest, view, record)
    maps = _Maps(choice, picked, facts, record, report, view, opacity, raw_colours)

    photo_column, predictions_column = st.columns([2, 3])
    with photo_column:
        _show_view(picked, record.view, view)
    with predictions_column:
        if record.logits is not None:
            untrained = "" if loaded.trained else " (untrained)"
            predictions = top_predictions(torch.from_numpy(record.logits)[None], 5, loaded.labels)[0]
            _bars(choice, picked, view, predictions, f"Top-5 predictions{untrained}", "explore_bars")
        else:
            # Said only of trained weights: it must never sit under the "untrained" warning.
            backbone = " Its attention below is the trained backbone's own." if loaded.trained else ""
            st.info(f"{facts.name} has no classifier head, so it makes no predictions.{backbone}")
    sentence = sink_sentence(report)
    if sentence:
        st.caption(f"✕ marks attention sinks on every map. {sentence}")
    _grid_and_attention(maps)
    _rollout(maps)


@st.fragment
def _grid_and_attention(maps: _Maps) -> None:
    """The patch grid and the raw attention map: a click on either picks the query patch."""
    grid_size = maps.record.grid_size  # the view's grid: not the model's own in the aspect-kept view
    query_patch = _query_patch(grid_size)
    grid_column, attention_column = st.columns(2)
    with grid_column:
        facts = maps.facts
        rows, cols = grid_size
        stride_rows, stride_cols = facts.stride_px
        title = maps.title(
            f"{maps.picked.name}: {grid_size_text(rows=rows, columns=cols)} of "
            f"{patch_size_text(width=stride_cols, height=stride_rows)} patches"
        )
        # Kept between the fragment's reruns: a layer or head step leaves the grid as it was.
        inputs = (maps.choice.name, maps.choice.weights, maps.picked.digest, maps.view, title, query_patch)
        kept = st.session_state.get(GRID_FIGURE)
        if kept is None or kept[0] != inputs:
            figure = patch_grid_figure(maps.pixels, grid_size, facts.stride_px, title, selected=query_patch)
            kept = st.session_state[GRID_FIGURE] = (inputs, figure)
        grid_figure = kept[1]
        st.subheader("Patches")
        st.caption("Click a patch on either image to see where that token attends.")
        maps.chart(grid_figure, GRID_CHART, "explore_grid", "patch-grid", clickable=True)
    with attention_column:
        _raw_attention(maps, query_patch)
    maps.sync()


def _query_patch(grid_size: tuple[int, int]) -> tuple[int, int] | None:
    """The patch whose attention is asked for: the one clicked last on either chart, if still on this grid."""
    for chart in (GRID_CHART, ATTENTION_CHART):
        clicked = ui.new_click(chart, SEEN_SELECTIONS, lambda selection: selected_patch(selection, grid_size))
        if clicked is not None:
            st.session_state[QUERY_PATCH] = clicked
            st.session_state[QUERY_KIND] = CLICKED_PATCH  # a click means "show me this patch"
            break
    patch = st.session_state.get(QUERY_PATCH)
    if patch is not None and not (patch[0] < grid_size[0] and patch[1] < grid_size[1]):
        patch = st.session_state[QUERY_PATCH] = None  # a patch of another model's grid
    return patch


def _raw_attention(maps: _Maps, query_patch: tuple[int, int] | None) -> None:
    """One layer's and head's attention from the class token (or mean patch) or a clicked patch."""
    facts, record = maps.facts, maps.record
    st.subheader("Raw attention")
    controls = st.columns([3, 2])
    layer = controls[0].slider("Layer", 0, facts.num_layers - 1, facts.num_layers - 1, key="explore_layer")
    head = controls[1].selectbox(
        "Head",
        [None, *range(facts.num_heads)],
        format_func=lambda h: "mean of heads" if h is None else f"head {h}",
        key=HEAD,
    )
    query_options = [class_query(facts), CLICKED_PATCH]
    if st.session_state.get(QUERY_KIND) not in query_options:
        st.session_state[QUERY_KIND] = query_options[0]
    query_kind = st.radio(
        "Attention from",
        query_options,
        horizontal=True,
        key=QUERY_KIND,
        help="Click a patch on either image to see where that token attends.",
    )
    head_label = "mean of heads" if head is None else f"head {head}"
    if query_kind == CLICKED_PATCH and query_patch is not None:
        values = query_attention_map(record, layer, head, patch_token(record, *query_patch))
        source = f"patch ({query_patch[0]}, {query_patch[1]})"
    else:
        if query_kind == CLICKED_PATCH:
            st.caption("No patch clicked yet: showing the class token. Click a patch on an image.")
        values = class_attention_map(record, layer, head)
        source = query_options[0]
    figure = maps.overlay(
        values,
        f"Layer {layer}, {head_label}: attention from {source}",
        "attention",
        selected=query_patch if query_kind == CLICKED_PATCH else None,
    )
    name = f"layer{layer} {'mean' if head is None else f'head{head}'} attention from {source}"
    maps.chart(figure, ATTENTION_CHART, "explore_attention", name, values, clickable=True)


@st.fragment
def _rollout(maps: _Maps) -> None:
    """Attention rollout, sink-aware by default, with its head fusion, discard ratio and start layer."""
    facts, choice = maps.facts, maps.choice
    st.subheader("Attention rollout")
    options = st.columns([2, 3, 3])
    fusion = options[0].selectbox("Head fusion", ["mean", "max", "min"], key="explore_fusion")
    # A shared link may have set these already: their widgets get no second default.
    st.session_state.setdefault("explore_discard", 0.0)
    st.session_state.setdefault("explore_start_layer", 0)
    discard = options[1].slider("Discard ratio", 0.0, 0.95, step=0.05, key="explore_discard")
    start = options[2].slider("Start layer", 0, facts.num_layers - 1, key="explore_start_layer")
    raw = st.toggle(
        "raw rollout (sinks included)",
        key=RAW_ROLLOUT,
        help="Multiply every layer from the start layer as captured, attention sinks and all.",
    )
    sinks = "raw" if raw else "exclude"
    relevance = ui.cached_rollout(
        choice.name,
        choice.weights,
        choice.device,
        maps.picked.digest,
        fusion,
        discard,
        start,
        maps.record,
        maps.view,
        sinks,
        maps.sinks,
    )
    statement = rollout_statement(plan_rollout(maps.sinks, start, sinks))
    figure = maps.overlay(relevance, f"{statement}; {fusion} of heads, discard {discard:.0%}", "relevance")
    map_column, words_column = st.columns([3, 2])
    with map_column:
        name = f"rollout {sinks} {fusion} discard{round(discard * 100)} start{start}"
        maps.chart(figure, "explore_rollout_chart", "explore_rollout", name, relevance)
    with words_column:
        st.markdown(f"**{statement}.**")
        sentence = sink_sentence(maps.sinks)
        if sentence:
            st.caption(sentence)
    maps.sync()
