"""Streamlit glue of the Anatomy page: nine views of a model, each beside its untrained twin on request.

Views 1–4 follow the ViT paper (patches as words, Fig. 7's filters, position embeddings and
attention distance); views 5–9 go further (resolution, hybrid stem, token norms, all heads, queries
and keys). Every view draws the same list of `ModelSide`s: the chosen model, and its twin.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image
from streamlit.delta_generator import DeltaGenerator

from pages.views import ui
from vitviz.figures.anatomy import (
    MODEL_VIEW_MARGIN_PX,
    attention_distance_figure,
    encoder_input_figure,
    explained_variance_figure,
    feature_maps_figure,
    filter_components_figure,
    head_importance_figure,
    logit_lens_figure,
    model_view_figure,
    norm_histogram_figure,
    patch_class_figure,
    position_key_figure,
    query_key_figure,
    rgb_grid_figure,
    sanity_maps_figure,
    selected_head,
    similarity_grid_figure,
    similarity_map_figure,
    stem_grid_figure,
    token_sequence_figure,
)
from vitviz.figures.common import (
    attention_overlay_figure,
    patch_grid_figure,
    photo_view_figure,
    predictions_figure,
    selected_patch,
)
from vitviz.figures.scales import CLIP_PERCENTILE, colour_scale, ordinal
from vitviz.forward.ablation import AblationResult, ablate_heads, head_importance, head_importance_estimate
from vitviz.forward.distance import attention_distances_over_images
from vitviz.forward.hybrid import HybridStem, hybrid_stem
from vitviz.forward.logit_lens import LogitLens, logit_lens
from vitviz.forward.qk import query_keys
from vitviz.forward.resolution import ResolutionSide, compare_resolutions, resolution_choices
from vitviz.forward.token_features import output_tokens
from vitviz.forward.tokens_as_words import trace_tokens
from vitviz.head_ranking import RankingJob, RankingState, read_ranking, start_ranking
from vitviz.images import BUILTIN_PHOTOS, ImageDecodeError, builtin_photo, decode_upload
from vitviz.images import image_digest as digest_of
from vitviz.maths.ablation import parse_heads, ranking_agreement
from vitviz.maths.attention import AttentionRecord, class_attention_map, rollout_relevance
from vitviz.maths.distance import AttentionDistances
from vitviz.maths.filters import (
    FilterComponents,
    FiltersNotApplicableError,
    component_tiles,
    filter_components,
    filter_spectrum,
    patch_embedding_filters,
    spectrum_sentence,
)
from vitviz.maths.model_view import model_view_maps, query_label
from vitviz.maths.posembed import (
    NoPositionEmbeddingError,
    grid_position_embedding,
    local_fraction,
    mosaic_step,
    position_similarity,
    similarity_mosaic,
)
from vitviz.maths.qk import ProjectionMethod, QueryKeyProjection, QueryKeys, project_queries_keys
from vitviz.maths.sinks import detect_sinks, plan_rollout, rollout_statement, sink_sentence
from vitviz.maths.token_features import (
    OutputTokens,
    PrincipalColours,
    TokenNorms,
    TokenPlace,
    high_norm_patches,
    patch_feature_colours,
    token_norms,
)
from vitviz.maths.tokens_as_words import TokenTrace, cut_into_patches
from vitviz.methods import METHODS, available_methods, default_method
from vitviz.methods.sanity import UNFAITHFUL_RANK_CORRELATION, SanityResult, cascading_randomisation
from vitviz.models import LoadedModel, ModelError, ModelFacts, describe_weights, no_token_attention_reason
from vitviz.preprocess import VIEW_LABELS, ImageView, ViewMode, image_view

__all__ = ["COMPARE_RANDOM", "TABS", "VIEW", "ModelSide", "model_sides", "render_tabs", "seed_from_link"]

COMPARE_RANDOM = "anatomy_compare_random"  # sidebar toggle: show the untrained twin beside the model
TAB = "anatomy_tab"  # the open tab
TWIN_LABEL = "random (untrained twin)"

T = TypeVar("T")


@dataclass(frozen=True)
class ModelSide:
    """One model a view is drawn for: the chosen model, or its untrained twin."""

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

    def pixels(self, picked: ui.ImageChoice) -> np.ndarray:
        """The picked image's view as this model sees it, for drawing maps over."""
        return _cached_view(self.key, picked.digest, self.view, self.loaded.facts, picked.image).pixels


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


def render_tabs(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """The nine views as lazy tabs: only the open tab's view runs, so a slow view never delays another.

    Args:
        sides: from `model_sides`; the first is the chosen model (shared: never mutated).
        picked: the image every view runs on.
    """
    facts = sides[0].loaded.facts
    _read_link(facts)
    st.toggle(
        "Raw colour scale",
        key=RAW_COLOURS,
        help=f"Off: the maps' colours stop at the {CLIP_PERCENTILE:g}th percentile, so one outlier token "
        "does not wash the rest out (the colour bar says so). On: minimum to maximum.",
    )
    _view_note(sides[0], picked)
    tabs = st.tabs(list(TABS), key=TAB, on_change="rerun")
    for tab, name in zip(tabs, TABS, strict=True):
        if _is_open(tab):
            with tab:
                _render_view(name, sides, picked)
    _write_link(picked)


@st.fragment
def _render_view(name: str, sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """One tab's view as a fragment: its sliders and clicks rerun this tab alone, not the photo or the sidebar."""
    view = TABS[name]
    if view.cnn_reason is None or not _cnn_note(sides[0].loaded.facts, view.cnn_reason):
        view.render(sides, picked)
    _write_link(picked)  # a fragment's rerun skips the page's own call


VIEW = "anatomy_view"  # the sidebar's view picker: crop or whole image
LINK_PARAMS = "anatomy_link_params"  # a link's parameters, kept until the model's sizes can check them
UPLOAD_SOURCE = "upload"  # the link parameter `source` when the picture was an upload


def seed_from_link() -> None:
    """At a session's first run, before the sidebar's widgets exist: the view from the URL.

    The rest of the link waits in the session until `render_tabs` knows the model's sizes. A link
    made from an uploaded picture does not apply its view to another picture.
    """
    params = ui.url_params_once("anatomy")
    if not params:
        return
    st.session_state[LINK_PARAMS] = params
    if params.get("source") != UPLOAD_SOURCE and params.get("view") in VIEW_LABELS:
        st.session_state[VIEW] = params["view"]


def _read_link(facts: ModelFacts) -> None:
    """Seeds the open tab, the ablation and the colour rule from a shared link, once per session."""
    params = st.session_state.pop(LINK_PARAMS, None)
    if not params:
        return
    notes = []
    if params.get("source") == UPLOAD_SOURCE:
        notes.append("the uploaded picture it was made from (a link cannot carry it) and its view")
    elif "view" in params and params["view"] not in VIEW_LABELS:
        notes.append(f"view {params['view'][:20]!r}")
    ui.take_link_choice(params, "tab", TABS, TAB, notes)
    if params.get("raw") == "1":
        st.session_state[RAW_COLOURS] = True
    if "off" in params and facts.num_layers and facts.num_heads:
        try:
            parse_heads(params["off"], facts.num_layers, facts.num_heads)  # validates every item
            items = [item.strip() for item in params["off"].split(",") if item.strip()]
            st.session_state[ABLATED_LAYERS] = [int(item) for item in items if item.isdigit()]
            st.session_state[ABLATED] = [
                _head_label(head)
                for item in items
                if not item.isdigit()
                for head in parse_heads(item, facts.num_layers, facts.num_heads)
            ]
        except ValueError as error:
            notes.append(f"heads off ({error})")
    if "ablation" in params:
        modes = {mode: label for label, mode in ABLATION_MODES.items()}
        if params["ablation"] in modes:
            st.session_state[ABLATION_MODE] = modes[params["ablation"]]
        else:
            notes.append(f"ablation {params['ablation'][:20]!r}")
    ui.url_notes(notes)


def _write_link(picked: ui.ImageChoice) -> None:
    """Makes the URL say the open tab, the view and the main choices, so a copied link reopens them."""
    params = {"tab": str(st.session_state.get(TAB, next(iter(TABS))))}
    view = st.session_state.get(VIEW, "crop")
    if view != "crop":
        params["view"] = str(view)
    if picked.name not in BUILTIN_PHOTOS:
        params["source"] = UPLOAD_SOURCE
    if _raw_colours():
        params["raw"] = "1"
    off = [*st.session_state.get(ABLATED, []), *map(str, st.session_state.get(ABLATED_LAYERS, []))]
    if off:
        params["off"] = ",".join(off)
    mode = ABLATION_MODES.get(st.session_state.get(ABLATION_MODE, ""))
    if mode is not None and mode != "zero":
        params["ablation"] = mode
    ui.sync_url(params, keep=("present", "model", "weights", "image"))


def _view_note(side: ModelSide, picked: ui.ImageChoice) -> None:
    """The photo with the view's box on it, once above the tabs: every map below lies over that view."""
    view = _cached_view(side.key, picked.digest, side.view, side.loaded.facts, picked.image)
    photo_column, note_column = st.columns([1, 4])
    with photo_column:
        figure = photo_view_figure(view.photo, [("", view.box)], longest=240)
        ui.plotly_chart(figure, key="anatomy_view_photo", theme=None)
        st.caption("What the model sees (cyan box)")
    with note_column:
        label = VIEW_LABELS.get(view.mode, view.mode)
        note = f" — {view.note}" if view.note else ""
        st.caption(
            f"Every map, prediction and probe on this page is computed on one view of the photo: {label}"
            f"{note}. The cyan box marks it on the photo; change it under View in the sidebar."
        )


def _is_open(tab: DeltaGenerator) -> bool:
    """Lazy tabs (on_change="rerun") say whether they are open; tabs without state always run."""
    return getattr(tab, "open", None) is not False


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
    """A figure title of views 5–9: random weights say so in it."""
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


def _overlay_chart(figure: go.Figure, values: np.ndarray, label: str, key: str) -> None:
    """A map's figure on the page's colour rule (clipped unless raw), its colour bar titled `label`."""
    _chart(_scaled(figure, values, label), key=key, theme=None)


def _class_query(facts: ModelFacts) -> str:
    """What a "class" map attends from: the class token, or the mean patch of a model without one."""
    return "class token" if facts.num_prefix_tokens else "mean patch"


def _cnn_note(facts: ModelFacts, why: str) -> bool:
    """Says that the view does not apply to a model without global attention over one grid, and why."""
    if facts.family == "cnn" or facts.grid_size is None:
        st.info(f"Does not apply: {facts.name} is a {facts.family_words}. {why}")
        return True
    if not facts.global_attention:
        st.info(f"Does not apply: {no_token_attention_reason(facts, 'views of its attention')}")
        return True
    return False


# Cached computations: the model is passed unhashed, its side's key names it. -----------------


@st.cache_data(show_spinner=False, max_entries=16)
def _cached_view(
    model_key: tuple, digest: str, view: ViewMode, _facts: ModelFacts, _image: Image.Image
) -> ImageView:
    return image_view(_image, _facts, view)


@st.cache_data(show_spinner="Cutting the image into tokens…", max_entries=16)
def _cached_trace(
    model_key: tuple, digest: str, view: ViewMode, _loaded: LoadedModel, _image: Image.Image
) -> TokenTrace:
    return trace_tokens(_loaded, _cached_view(model_key, digest, view, _loaded.facts, _image))


@st.cache_data(show_spinner="PCA of the patch-embedding filters…", max_entries=16)
def _cached_components(model_key: tuple, _loaded: LoadedModel) -> FilterComponents:
    return filter_components(patch_embedding_filters(_loaded.model, _loaded.facts))


@st.cache_data(show_spinner="Comparing position embeddings…", max_entries=16)
def _cached_similarity(model_key: tuple, _loaded: LoadedModel) -> np.ndarray:
    return position_similarity(grid_position_embedding(_loaded.model, _loaded.facts))


@st.cache_data(show_spinner="Running the model at both sizes…", max_entries=8)
def _cached_resolution(
    model_key: tuple,
    digest: str,
    view: ViewMode,
    size: tuple[int, int],
    _loaded: LoadedModel,
    _image: Image.Image,
) -> tuple[ResolutionSide, ResolutionSide]:
    return compare_resolutions(_loaded, _cached_view(model_key, digest, view, _loaded.facts, _image), size)


@st.cache_data(show_spinner="Running the CNN stem…", max_entries=16)
def _cached_stem(
    model_key: tuple, digest: str, view: ViewMode, _loaded: LoadedModel, _image: Image.Image
) -> HybridStem:
    return hybrid_stem(_loaded, _cached_view(model_key, digest, view, _loaded.facts, _image))


@st.cache_data(show_spinner="Reading the output tokens…", max_entries=16)
def _cached_tokens(
    model_key: tuple, digest: str, view: ViewMode, _loaded: LoadedModel, _image: Image.Image
) -> OutputTokens:
    return output_tokens(_loaded, _cached_view(model_key, digest, view, _loaded.facts, _image))


@st.cache_data(show_spinner=False, max_entries=32)
def _cached_colours(
    model_key: tuple, digest: str, view: ViewMode, place: TokenPlace, _tokens: OutputTokens
) -> PrincipalColours:
    return patch_feature_colours(_tokens, place)


@st.cache_data(show_spinner="Capturing queries and keys…", max_entries=32)
def _cached_query_keys(
    model_key: tuple,
    digest: str,
    view: ViewMode,
    layer: int,
    head: int,
    _loaded: LoadedModel,
    _image: Image.Image,
) -> QueryKeys:
    return query_keys(_loaded, _cached_view(model_key, digest, view, _loaded.facts, _image), layer, head)


@st.cache_data(show_spinner="Projecting queries and keys…", max_entries=32)
def _cached_projection(
    model_key: tuple,
    digest: str,
    view: ViewMode,
    layer: int,
    head: int,
    method: ProjectionMethod,
    align: bool,
    _qk: QueryKeys,
) -> QueryKeyProjection:
    return project_queries_keys(_qk, method=method, align=align)


# 1. Patches as words -------------------------------------------------------------------------

STRIP_PATCHES = 16  # patches shown in the token-sequence strip before the ellipsis
MAX_HEATMAP_TOKENS = 600  # rows of the encoder-input heatmap; longer sequences are cut, and say so


def _strip_indices(num_patches: int) -> list[int]:
    shown = list(range(min(STRIP_PATCHES, num_patches)))
    if num_patches > STRIP_PATCHES:
        shown.append(num_patches - 1)
    return shown


def render_patches(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """View 1: the image cut into patches, flattened, projected, prefixed and position-embedded."""
    facts = sides[0].loaded.facts
    traces = [_cached_trace(side.key, picked.digest, side.view, side.loaded, picked.image) for side in sides]
    trace = traces[0]
    rows, cols = facts.grid_size
    pixels = sides[0].pixels(picked)
    grid_column, steps_column = st.columns([2, 3])
    with grid_column:
        _chart(
            patch_grid_figure(
                pixels,
                facts.grid_size,
                facts.stride_px,
                f"{picked.name}: {rows}×{cols} tokens, one per {facts.stride_px[0]} px",
            ).update_layout(height=420),
            key="anatomy_patch_grid",
            theme=None,
        )
    with steps_column:
        st.markdown("**From image to encoder, with this model's shapes**")
        lines = [
            f"{index}. **{step.name}** `{tuple(step.shape)}` — {step.explanation}"
            for index, step in enumerate(trace.steps, start=1)
        ]
        st.markdown("\n".join(lines))
        if facts.family == "hybrid":
            st.caption(
                f'A hybrid\'s "patches" are cells of the CNN feature map: patch size '
                f"{facts.patch_size[0]} on that map, so one token per {facts.stride_px[0]} px of the image."
            )
    cells = cut_into_patches(pixels, facts.grid_size, facts.stride_px).reshape(
        rows * cols, facts.stride_px[0], facts.stride_px[1], 3
    )
    shown = _strip_indices(rows * cols)
    what = (
        "feature-map cells (each drawn as the image region under it)"
        if facts.family == "hybrid"
        else "patches"
    )
    prefix = f"{len(trace.prefix_names)} prefix + " if trace.prefix_names else "no prefix tokens, "
    _chart(
        token_sequence_figure(
            cells[shown],
            shown,
            facts.grid_size,
            trace.prefix_names,
            f"The sequence the encoder reads: {prefix}{rows * cols} {what} in reading order (first "
            f"{min(STRIP_PATCHES, rows * cols)} and the last shown)",
        ),
        key="anatomy_token_strip",
        theme=None,
    )
    if len(sides) > 1:
        st.caption("The shapes are the same with random weights; only the numbers in the tokens differ.")
    for column, side, side_trace in zip(_columns(len(sides)), sides, traces, strict=True):
        with column:
            if side_trace.encoder_input is None:
                st.info(f"{facts.name} adds its prefix tokens and positions in a way vitviz cannot read.")
                continue
            count, dim = side_trace.encoder_input.shape
            cut = "" if count <= MAX_HEATMAP_TOKENS else f", first {MAX_HEATMAP_TOKENS} rows"
            _chart(
                encoder_input_figure(
                    side_trace.encoder_input[:MAX_HEATMAP_TOKENS],
                    side_trace.prefix_names,
                    f"Encoder input ({count}, {dim}){cut} · {side.label}",
                ),
                key=f"anatomy_encoder_input_{side.suffix}",
            )


# 2. Filters ---------------------------------------------------------------------------------


FILTER_TILE_PX = 88  # the side of a filter tile on screen, one model shown
FILTER_TILE_PX_BESIDE = 50  # the same beside the untrained twin


def render_filters(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """View 2: principal components of the linear patch-embedding filters (paper Fig. 7 left)."""
    try:  # the twin has the same architecture: one message covers both
        results = [_cached_components(side.key, side.loaded) for side in sides]
    except FiltersNotApplicableError as error:
        st.info(f"Does not apply: {error}")
        return
    # One tile size for every side, small enough for two sides in half-width columns at 1280 px.
    tile_px = FILTER_TILE_PX if len(sides) == 1 else FILTER_TILE_PX_BESIDE
    for column, side, components in zip(_columns(len(sides)), sides, results, strict=True):
        with column:
            _chart(
                filter_components_figure(
                    component_tiles(components.components),
                    components.explained_variance_ratio,
                    f"First {components.num_components} PCs of the filters · {side.label}",
                    tile_px=tile_px,
                ),
                key=f"anatomy_filters_{side.suffix}",
                theme=None,
                width="content",
            )
            total = components.explained_variance_ratio.sum()
            _chart(
                explained_variance_figure(
                    components.explained_variance_ratio,
                    f"Explained variance: {total:.1%} in all · {side.label}",
                ),
                key=f"anatomy_variance_{side.suffix}",
            )
    facts = sides[0].loaded.facts
    height, width = facts.patch_size or (0, 0)
    st.caption(
        f"Each of the {facts.embed_dim} filters of the patch embedding is a {height}×{width} RGB picture; "
        "PCA (scikit-learn) finds the directions they vary along. Tiles are titled with the component's "
        "number and its share of the variance; each is stretched to full contrast on its own, and a "
        "component's sign is arbitrary. The ViT paper found smooth, low-frequency basis functions "
        f"for its own models. Measured here: {_spectrum_sentence(sides, results[0])}"
    )


def _spectrum_sentence(sides: list[ModelSide], components: FilterComponents) -> str:
    """What the chosen model's filter components are made of, measured against its untrained twin."""
    model = sides[0]
    measured = filter_spectrum(components.components)
    if not model.loaded.trained:
        return (
            f"these random filters' components keep {measured.median_low_frequency_share:.1%} of their "
            f"energy below {measured.cutoff:g} cycles per pixel (white noise {measured.white_noise_share:.1%})."
        )
    if len(sides) > 1:
        twin = sides[1]
    else:
        choice = model.choice
        twin = ModelSide(ui.cached_twin(choice.name, choice.weights, choice.device), choice, twin=True)
    untrained = filter_spectrum(_cached_components(twin.key, twin.loaded).components)
    return spectrum_sentence(measured, untrained, f"the {model.label} {model.loaded.facts.name}")


# 3. Position embeddings ---------------------------------------------------------------------

POSITION = "anatomy_posembed_position"  # (row, col) of the position shown large
SEEN_POSITIONS = "anatomy_posembed_seen"  # last click seen per chart, so a rerun is not a new click
MOSAIC_GAP = 1  # blank cells between the small maps of the position-similarity grid


def _chosen_position(grid_size: tuple[int, int], chart_keys: Sequence[str]) -> tuple[int, int]:
    """The position clicked last on any of the grids; the centre before the first click."""
    for key in chart_keys:
        clicked = ui.new_click(key, SEEN_POSITIONS, lambda selection: selected_patch(selection, grid_size))
        if clicked is not None:
            st.session_state[POSITION] = clicked
    position = st.session_state.get(POSITION)
    rows, cols = grid_size
    if position is None or not (position[0] < rows and position[1] < cols):  # another model's grid
        position = st.session_state[POSITION] = (rows // 2, cols // 2)
    return position


def render_position_embeddings(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """View 3: cosine similarity of the position embeddings as a grid of grids, one position large."""
    similarities = []
    for side in sides:
        try:
            similarities.append(_cached_similarity(side.key, side.loaded))
        except NoPositionEmbeddingError as error:
            st.info(f"Does not apply: {error}")
            return
    loaded = sides[0].loaded
    grid_size = loaded.facts.grid_size
    rows, cols = grid_size
    chart_keys = [f"anatomy_posembed_grid_{side.suffix}" for side in sides]
    position = _chosen_position(grid_size, chart_keys)
    step = mosaic_step(grid_size)
    single = len(sides) == 1
    columns = st.columns([3, 2]) if single else st.columns(2)
    for index, (side, similarity, chart_key) in enumerate(zip(sides, similarities, chart_keys, strict=True)):
        with columns[0] if single else columns[index]:
            mosaic = similarity_mosaic(similarity, grid_size, MOSAIC_GAP, step)
            _chart(
                _scaled(
                    similarity_grid_figure(
                        mosaic,
                        grid_size,
                        MOSAIC_GAP,
                        f"Position similarity · {side.label}",
                        selected=position,
                        step=step,
                    ),
                    mosaic,
                    "cosine similarity",
                ),
                key=chart_key,
                on_select="rerun",
                selection_mode="points",
                theme=None,
            )
        with columns[1] if single else columns[index]:
            row, col = position
            values = similarity.reshape(rows, cols, rows, cols)[row, col]
            _chart(
                _scaled(
                    similarity_map_figure(values, position, f"Position ({row}, {col}) · {side.label}"),
                    values,
                    "cosine similarity",
                ),
                key=f"anatomy_posembed_map_{side.suffix}",
                theme=None,
            )
            near, close = local_fraction(similarity, grid_size, 1), local_fraction(similarity, grid_size, 2)
            others = max(1, rows * cols - 1)
            st.caption(
                f"{side.label}: the most similar other position is a direct neighbour for {near:.0%} of "
                f"positions and within 2 steps for {close:.0%} (by chance about {min(1, 8 / others):.0%} "
                f"and {min(1, 24 / others):.0%})."
            )
    prefix_note = (
        "This model's position embedding has no rows for its prefix tokens."
        if getattr(loaded.model, "no_embed_class", False)
        else "Rows of the prefix tokens are left out."
    )
    thinned = (
        f" The {rows}×{cols} grid is large: a small map is drawn for one position in {step} along "
        "each row and column; the large map works for every position."
        if step > 1
        else ""
    )
    st.caption(
        "The grid of small maps: the small map at (row, col) shows how similar that "
        "position's learned embedding is to every position's (cosine similarity), as in the paper's "
        f"Fig. 7. Click a small map to see it large. {prefix_note}{thinned}"
    )


# 4. Attention distance ----------------------------------------------------------------------

DISTANCE_RESULTS = "anatomy_distance_results"  # AttentionDistances per (model, images), newest last
MAX_KEPT_DISTANCES = 8


def _distance_images(
    photos: Sequence[str], uploads: Sequence | None
) -> tuple[list[str], list[Callable[[], Image.Image]], list[str]]:
    """Keys, loaders and problems of the chosen photos and uploads; bad uploads are left out, named.

    Photos are keyed by name and read only when a result is not stored yet.
    """
    names: list[str] = []
    loaders: list[Callable[[], Image.Image]] = []
    problems: list[str] = []
    for photo in photos:
        names.append(f"photo:{photo}")
        loaders.append(lambda photo=photo: builtin_photo(photo))
    for upload in uploads or []:
        try:
            image = decode_upload(upload.getvalue())
        except ImageDecodeError as error:
            problems.append(f"{upload.name}: {error}")
            continue
        names.append(f"upload:{digest_of(image)}")
        loaders.append(lambda image=image: image)
    return names, loaders, problems


def _distances(side: ModelSide, image_keys: list[str], loaders: list) -> AttentionDistances:
    """One model's distances over the images: from this session's store, or computed with a progress bar."""
    store: dict = st.session_state.setdefault(DISTANCE_RESULTS, {})
    key = (*side.key, side.view, tuple(image_keys))
    if key in store:
        store[key] = store.pop(key)  # newest last
        return store[key]
    text = f"Mean attention distance · {side.label}"
    bar = st.progress(0.0, text=f"{text}: loading {len(loaders)} images…")
    images = [load() for load in loaders]

    def report(done: int, total: int) -> None:
        bar.progress(done / total, text=f"{text}: layer pass {done} of {total}")

    views = [image_view(image, side.loaded.facts, side.view) for image in images]
    result = attention_distances_over_images(side.loaded, views, progress=report)
    bar.empty()
    store[key] = result
    while len(store) > MAX_KEPT_DISTANCES:
        store.pop(next(iter(store)))
    return result


def render_attention_distance(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """View 4: mean attention distance of every head against depth (paper Fig. 7 right)."""
    facts = sides[0].loaded.facts
    picker, uploader = st.columns(2)
    photos = picker.multiselect(
        "Built-in photos", list(BUILTIN_PHOTOS), default=list(BUILTIN_PHOTOS), key="anatomy_distance_photos"
    )
    uploads = ui.image_uploader(uploader, "Add your own images", key="anatomy_distance_uploads", several=True)
    image_keys, loaders, problems = _distance_images(photos, uploads)
    for problem in problems:
        st.warning(f"Left out {problem}")
    if not loaders:
        st.info("Pick at least one built-in photo or upload an image to measure attention distance.")
        return
    results = [_distances(side, image_keys, loaders) for side in sides]
    top = max(max(float(result.mean.max()), result.uniform_reference) for result in results) * 1.12
    for column, side, result in zip(_columns(len(sides)), sides, results, strict=True):
        with column:
            images = "1 image" if result.num_images == 1 else f"{result.num_images} images"
            _chart(
                attention_distance_figure(
                    result.mean,
                    result.uniform_reference,
                    f"Mean attention distance, {images} · {side.label}",
                    y_max=top,
                ),
                key=f"anatomy_distance_{side.suffix}",
            )
            first, last = result.mean[0], result.mean[-1]
            st.caption(
                f"{side.label}: layer 0 heads look {first.min():.0f}–{first.max():.0f} px away, the last "
                f"layer's {last.min():.0f}–{last.max():.0f} px (uniform attention: "
                f"{result.uniform_reference:.0f} px; input {result.input_size[0]}×{result.input_size[1]} px)."
            )
    height, width = facts.input_size
    st.caption(
        "Per head and layer: Σⱼ Aᵢⱼ·‖gᵢ − gⱼ‖ in pixels of the model's input, averaged over query patches "
        f"and images; prefix tokens left out as queries and keys, no renormalisation (the paper's "
        f"appendix D.7). Each image is seen in the page's view: {VIEW_LABELS[sides[0].view]}, "
        f"{height}×{width} px."
    )


# 5. Resolution -------------------------------------------------------------------------------

RESOLUTION_SIZE = "anatomy_resolution_size"  # "H×W" of the resized copy


def _size_label(facts: ModelFacts, size: tuple[int, int]) -> str:
    rows, cols = size[0] // facts.stride_px[0], size[1] // facts.stride_px[1]
    own = " (its own)" if size == facts.input_size else ""
    return f"{size[0]}×{size[1]} px · {rows}×{cols} grid{own}"


def _token_count(facts: ModelFacts) -> str:
    rows, cols = facts.grid_size
    return (
        f"{facts.input_size[0]}×{facts.input_size[1]} px: {rows}×{cols} = {facts.num_patches} patches "
        f"+ {facts.num_prefix_tokens} prefix = **{facts.num_tokens} tokens**"
    )


def render_resolution(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """View 5: the model run at a larger input, its position embedding interpolated to the larger grid."""
    facts = sides[0].loaded.facts
    st.markdown(
        "The ViT paper fine-tunes at a higher resolution than it pre-trains: the patch size stays, so a "
        "larger image gives **more tokens**, and the learned position embedding is **interpolated** "
        "(bicubic, in 2-D) to the larger grid. The model's weights are otherwise unchanged. A copy of "
        "the model is resized here; the loaded model is left as it is."
    )
    # Options are "H×W" strings: a select slider reads a tuple value as a range.
    choices = {f"{height}×{width}": (height, width) for height, width in resolution_choices(facts)}
    rows = facts.grid_size[0]
    if st.session_state.get(RESOLUTION_SIZE) not in choices:  # first run, or another model's size
        st.session_state[RESOLUTION_SIZE] = max(
            (text for text, size in choices.items() if size[0] // facts.stride_px[0] <= 2 * rows),
            key=lambda text: choices[text][0],
            default=list(choices)[-1],
        )
    picked_size = st.select_slider(
        "Run at input size",
        options=list(choices),
        format_func=lambda text: _size_label(facts, choices[text]),
        key=RESOLUTION_SIZE,
        help="Any multiple of the token stride, keeping the aspect ratio; up to a 32×32 grid.",
    )
    size = choices[picked_size]
    for side, (before, after) in _each_side(
        sides,
        f"run {facts.name} at {size[0]}×{size[1]} px",
        lambda side: _cached_resolution(side.key, picked.digest, side.view, size, side.loaded, picked.image),
    ):
        st.markdown(f"{_token_count(before.facts)} → {_token_count(after.facts)}")
        for column, resized, name in zip(st.columns(2), (before, after), ("before", "after"), strict=True):
            with column:
                _render_resolution_side(resized, name, side)
        peaks = [float(resized.rollout.max() / np.median(resized.rollout)) for resized in (before, after)]
        dominated = (
            " A few tokens dominate it: the class-token maps above spread more evenly."
            if max(peaks) > 10
            else ""
        )
        st.caption(
            f"Rollout's largest value is {peaks[0]:.1f}× its median at {before.facts.input_size[0]} px and "
            f"{peaks[1]:.1f}× at {after.facts.input_size[0]} px.{dominated}"
        )


def _render_resolution_side(resized: ResolutionSide, name: str, side: ModelSide) -> None:
    facts = resized.facts
    rows, cols = facts.grid_size
    size = f"{facts.input_size[0]}×{facts.input_size[1]} px"
    chart_key = f"anatomy_resolution_{name}_{side.suffix}"
    if resized.position_rgb is not None:
        what = "as loaded" if name == "before" else "interpolated"
        _chart(
            rgb_grid_figure(
                resized.position_rgb,
                _title(f"Position embedding {what} ({rows}×{cols}, 3 PCs)", side),
                height=360,
                hover_name="PCs",
            ),
            key=f"{chart_key}_posembed",
            theme=None,
        )
    else:
        st.info(f"{facts.name} has no learned absolute position embedding to interpolate.")
    query = _class_query(facts)
    pixels, stride = resized.pixels, facts.stride_px
    attention_title = _title(f"{size}: last-layer {query} attention", side)
    _overlay_chart(
        attention_overlay_figure(
            pixels, resized.class_attention, stride, attention_title, sinks=resized.sink_patches
        ),
        resized.class_attention,
        "attention",
        f"{chart_key}_attention",
    )
    rollout_title = _title(f"{size}: rollout<br><sup>{resized.rollout_statement}</sup>", side)
    _overlay_chart(
        attention_overlay_figure(pixels, resized.rollout, stride, rollout_title, sinks=resized.sink_patches),
        resized.rollout,
        "relevance",
        f"{chart_key}_rollout",
    )
    if resized.predictions is not None:
        untrained = "" if side.loaded.trained else " (untrained)"
        _chart(
            predictions_figure(resized.predictions, f"{size}: top-5 predictions{untrained}"),
            key=f"{chart_key}_predictions",
        )
    elif name == "before":
        st.caption(f"{facts.name} has no classifier head, so there are no predictions to compare.")


# 6. Hybrid stem ------------------------------------------------------------------------------


def render_hybrid(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """View 6: how a hybrid's CNN stem turns the image into the feature map its tokens are cut from."""
    facts = sides[0].loaded.facts
    if facts.family != "hybrid":
        patch = f"{facts.patch_size[0]}×{facts.patch_size[1]}"
        st.info(
            f"{facts.name} is a plain ViT: its patch embedding is a single {patch} convolution with stride "
            f"{patch} on the pixels, with no CNN stem before it. Pick a hybrid such as "
            "vit_small_r26_s32_224 or vit_base_r50_s16_384 (hub weights, or random offline) to see how a "
            "CNN's feature map becomes the token grid."
        )
        return
    st.markdown(
        "A hybrid ViT does not cut the **pixels** into patches: a CNN stem first turns the image into a "
        "feature map, and the patch embedding cuts **that map** into patches (usually of 1×1 cell), so "
        "each token stands for one cell of the stem's output, 16 or 32 input pixels apart."
    )
    for side, (stem, record) in _each_side(
        sides,
        f"run the stem of {facts.name}",
        lambda side: (
            _cached_stem(side.key, picked.digest, side.view, side.loaded, picked.image),
            side.attention(picked),
        ),
    ):
        channels, height, width = stem.feature_shape
        rows, cols = stem.grid_size
        st.markdown(
            f"**{stem.input_size[0]}×{stem.input_size[1]}×3 px** → `{stem.backbone}` stem "
            f"(÷{stem.feature_ratio[0]}) → **{channels}×{height}×{width}** feature map → "
            f"`{stem.projection}` (patch {stem.patch_size[0]}×{stem.patch_size[1]} cells) → "
            f"**{rows}×{cols} = {rows * cols} tokens** of width {stem.embed_dim} "
            f"+ {facts.num_prefix_tokens} prefix. One token per **{stem.stride_px[0]}×{stem.stride_px[1]} "
            "input px** (its receptive field through the stem is larger)."
        )
        pixels = side.pixels(picked)
        grid_column, maps_column = st.columns([2, 3])
        with grid_column:
            _chart(
                stem_grid_figure(pixels, stem, _title("Feature cells and tokens", side)),
                key=f"anatomy_stem_grid_{side.suffix}",
                theme=None,
            )
        with maps_column:
            _chart(
                feature_maps_figure(
                    stem,
                    _title(f"Stem output: mean and the {len(stem.channels)} most varying channels", side),
                ),
                key=f"anatomy_stem_maps_{side.suffix}",
                theme=None,
            )
        sinks = detect_sinks(record)
        marks = [sink.position for sink in sinks.patch_sinks if sink.position is not None]
        attention = class_attention_map(record, record.num_layers - 1, None)
        rollout = rollout_relevance(record, sink_report=sinks)
        statement = rollout_statement(plan_rollout(sinks))
        attention_title = _title(f"Last-layer {_class_query(facts)} attention, {rows}×{cols} tokens", side)
        attention_column, rollout_column = st.columns(2)
        with attention_column:
            _overlay_chart(
                attention_overlay_figure(pixels, attention, facts.stride_px, attention_title, sinks=marks),
                attention,
                "attention",
                f"anatomy_stem_attention_{side.suffix}",
            )
        with rollout_column:
            _overlay_chart(
                attention_overlay_figure(
                    pixels,
                    rollout,
                    facts.stride_px,
                    _title(f"Rollout, {rows}×{cols} tokens<br><sup>{statement}</sup>", side),
                    sinks=marks,
                ),
                rollout,
                "relevance",
                f"anatomy_stem_rollout_{side.suffix}",
            )


# 7. Token norms and features -----------------------------------------------------------------

HIGH_NORM_FACTOR = 2.0  # a patch counts as high-norm above this multiple of the median patch norm
PLACES: dict[str, TokenPlace] = {
    "before the final norm (last block's output)": "before_norm",
    "after the final norm (forward_features output)": "after_norm",
}


def render_token_norms(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """View 7: the length of every output token, high-norm tokens named, and patch features as colours."""
    facts = sides[0].loaded.facts
    st.markdown(
        "The length (L2 norm) of every output token. *Vision Transformers Need Registers* (Darcet et al.) "
        "found that large ViTs trained without register tokens produce a few **high-norm tokens** on "
        "background patches, which they use as scratch space; register tokens take that role instead. "
        "The right-hand map colours each patch by the first three principal components of the patch "
        "features: patches the model sees alike get alike colours."
    )
    place_label = st.radio(
        "Read the tokens", list(PLACES), horizontal=True, key="anatomy_norms_place", index=0
    )
    place = PLACES[place_label]
    where = "before final norm" if place == "before_norm" else "after final norm"
    for side, tokens in _each_side(
        sides,
        f"read the output tokens of {facts.name}",
        lambda side: _cached_tokens(side.key, picked.digest, side.view, side.loaded, picked.image),
    ):
        norms = token_norms(tokens, place)
        colours = _cached_colours(side.key, picked.digest, side.view, place, tokens)
        if tokens.final_norm == "Identity":
            st.caption("This model has no final norm before its head: both places give the same tokens.")
        norm_column, pca_column = st.columns(2)
        with norm_column:
            _overlay_chart(
                attention_overlay_figure(
                    side.pixels(picked),
                    norms.patch_norms,
                    facts.stride_px,
                    _title(f"Patch-token norm, {where}", side),
                ),
                norms.patch_norms,
                "L2 norm",
                f"anatomy_norms_map_{side.suffix}",
            )
        with pca_column:
            ratios = ", ".join(f"{ratio:.0%}" for ratio in colours.explained_variance_ratio)
            _chart(
                rgb_grid_figure(
                    colours.rgb, _title("Patch features: 3 PCs as RGB", side), height=520, hover_name="PCs"
                ),
                key=f"anatomy_norms_pca_{side.suffix}",
                theme=None,
            )
            st.caption(f"Red, green, blue: principal components 1–3, explaining {ratios} of the variance.")
        _chart(
            norm_histogram_figure(norms, _title(f"Norms of all tokens, {where}", side)),
            key=f"anatomy_norms_histogram_{side.suffix}",
        )
        _norm_summary(norms)


def _norm_summary(norms: TokenNorms) -> None:
    """One line of numbers: median and largest patch norm, prefix norms, high-norm patches."""
    median = float(np.median(norms.patch_norms))
    prefix = " · ".join(
        f"{name} {value:.1f}" for name, value in zip(norms.prefix_names, norms.prefix_norms, strict=True)
    )
    high = high_norm_patches(norms, HIGH_NORM_FACTOR)
    peak = float(norms.patch_norms.max())
    text = f"Patch norms: median {median:.1f}, largest {peak:.1f} ({peak / median:.2f}× the median)." + (
        f" Prefix tokens: {prefix}." if prefix else ""
    )
    if high:
        listed = ", ".join(f"({row}, {col}) {value:.1f}" for row, col, value in high[:12])
        more = f" and {len(high) - 12} more" if len(high) > 12 else ""
        text += f" **{len(high)} high-norm patches** (> {HIGH_NORM_FACTOR:g}× median): {listed}{more}."
    else:
        text += f" No patch exceeds {HIGH_NORM_FACTOR:g}× the median norm: no high-norm artefact tokens here."
    st.markdown(text)


# 8. All heads at once ------------------------------------------------------------------------

HEAD = "anatomy_heads_selected"  # (layer, head) shown large
QUERY_PATCH = "anatomy_heads_patch"  # (row, col) of the clicked query patch, or None
QUERY_KIND = "anatomy_heads_query"  # radio: class token or clicked patch
SEEN_HEAD_CLICKS = "anatomy_heads_seen"  # last selection seen per chart, so only new clicks count
CLICKED_PATCH = "clicked patch"


def _read_head_clicks(sides: Sequence[ModelSide], facts: ModelFacts) -> None:
    """Stores a head clicked on a mosaic, or a patch clicked on a large map, since the last run."""
    for side in sides:
        mosaic, large = f"anatomy_heads_mosaic_{side.suffix}", f"anatomy_heads_large_{side.suffix}"
        head = ui.new_click(
            mosaic,
            SEEN_HEAD_CLICKS,
            lambda selection: selected_head(selection, facts.num_layers, facts.num_heads),
        )
        if head is not None and st.session_state.get(CLICK_ACTION) == SWITCH_OFF:
            _toggle_head(head)
        elif head is not None:
            st.session_state[HEAD] = head
        patch = ui.new_click(
            large, SEEN_HEAD_CLICKS, lambda selection: selected_patch(selection, facts.grid_size)
        )
        if patch is not None:
            st.session_state[QUERY_PATCH] = patch
            st.session_state[QUERY_KIND] = CLICKED_PATCH


def render_all_heads(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """View 8: every layer's and head's attention as small maps; one opens large, a patch can attend."""
    facts = sides[0].loaded.facts
    layers, heads = facts.num_layers, facts.num_heads
    _read_head_clicks(sides, facts)
    head = st.session_state.get(HEAD)
    if head is None or not (head[0] < layers and head[1] < heads):
        head = st.session_state[HEAD] = (layers - 1, 0)
    patch = st.session_state.get(QUERY_PATCH)
    if patch is not None and not (patch[0] < facts.grid_size[0] and patch[1] < facts.grid_size[1]):
        patch = st.session_state[QUERY_PATCH] = None  # a patch of another model's grid
    class_option = "class token" if facts.num_prefix_tokens else "mean of patches"
    options = [class_option, CLICKED_PATCH]
    if st.session_state.get(QUERY_KIND) not in options:
        st.session_state[QUERY_KIND] = class_option
    st.markdown(
        f"One small map per layer (rows) and head (columns): where the chosen token attends, "
        f"{layers}×{heads} maps at once, each scaled to its own {_mosaic_top()}. A click on a small map opens it "
        "large or switches that head off (below); a click on a patch of the large map makes it the "
        "attending token."
    )
    controls = st.columns(2)
    kind = controls[0].radio("Attention from", options, horizontal=True, key=QUERY_KIND)
    if CLICK_ACTION not in st.session_state:
        st.session_state[CLICK_ACTION] = OPEN_LARGE
    controls[1].radio("A click on a small map", [OPEN_LARGE, SWITCH_OFF], horizontal=True, key=CLICK_ACTION)
    ablation = _render_ablation(sides[0], picked)
    query = patch if kind == CLICKED_PATCH else None
    if kind == CLICKED_PATCH and patch is None:
        st.caption("No patch clicked yet: showing the class token. Click a patch on the large map.")
    # Up to 8 heads the mosaic and the large map fit side by side in a wide layout (about 460 px
    # each); wider models stack them. Sized to fit, the mosaic's cells stay square and unclipped.
    side_by_side = heads <= 8
    map_px = min(64, ((460 if side_by_side else 940) - MODEL_VIEW_MARGIN_PX) // heads)
    for side, record in _each_side(
        sides, f"capture attention of {facts.name}", lambda side: side.attention(picked)
    ):
        if ablation is not None and not side.twin:
            record = ablation.record  # the maps of the forward with the chosen heads off
        maps = model_view_maps(record, query)
        source = query_label(record, query)
        if ablation is not None and not side.twin:
            source += f" with {len(ablation.heads)} head{'s' if len(ablation.heads) != 1 else ''} off"
        off = list(ablation.heads) if ablation is not None and not side.twin else []
        mosaic_area, large_area = st.columns([1, 1]) if side_by_side else (st.container(), st.container())
        with mosaic_area:
            _chart(
                model_view_figure(
                    maps,
                    _title(f"All heads: attention from {source}", side),
                    selected=head,
                    map_px=map_px,
                    clip_percentile=_clip_percentile(),
                    switched_off=off,
                ),
                key=f"anatomy_heads_mosaic_{side.suffix}",
                on_select="rerun",
                selection_mode="points",
                theme=None,
                width="content",
            )
            if off:
                listed = ", ".join(_head_label(item) for item in off[:12]) + (" …" if len(off) > 12 else "")
                st.caption(
                    f"Dotted red outlines and crosses mark the {_heads_off(len(off), ablation.mode)}: {listed}."
                )
        layer, head_index = head
        sinks = detect_sinks(record)  # of the forward shown: switching heads off can move them
        with large_area:
            _chart(
                _scaled(
                    attention_overlay_figure(
                        side.pixels(picked),
                        maps[layer, head_index],
                        facts.stride_px,
                        _export_title(f"Layer {layer}, head {head_index}: attention from {source}", side),
                        selected=query,
                        sinks=[sink.position for sink in sinks.patch_sinks if sink.position is not None],
                    ),
                    maps[layer, head_index],
                    "attention",
                ),
                key=f"anatomy_heads_large_{side.suffix}",
                on_select="rerun",
                selection_mode="points",
                theme=None,
            )
            sentence = sink_sentence(sinks)
            if sentence:
                st.caption(f"✕ marks attention sinks. {sentence}")


CLICK_ACTION = "anatomy_heads_click"  # radio: a click on a small map opens it or switches it off
OPEN_LARGE = "opens it large"
SWITCH_OFF = "switches the head off"
ABLATED = "anatomy_ablation_heads"  # multiselect of "layer:head" labels switched off
ABLATED_LAYERS = "anatomy_ablation_layers"  # multiselect of whole layers switched off
ABLATION_MODE = "anatomy_ablation_mode"  # radio: zeroed or replaced by the mean
ABLATION_MODES = {
    "zeroed": "zero",
    "replaced by its mean over the image's tokens": "mean",
}
ABLATION_WORDS = {"zero": "zeroed", "mean": "token mean"}  # the mode in a button's few words
IMPORTANCE = "anatomy_ablation_importance"  # {(model key, digest, view, mode): (layers, heads) drops}
RANKING_JOBS = "anatomy_ranking_jobs"  # {the same key: the folder of its running background ranking}
RANKING_REFRESH_S = 1.0  # how often a running ranking's progress is read
RANKING_SILENT_S = 300  # a worker this long without a status update has died
_GET_A_HEAD = (
    "Fine-tune a probe on the Fine-tune page (a head on these features), then pick its run as the model here."
)
NO_CLASSIFIER_FOR_ABLATION = f"has no classifier head: switching heads off would change no prediction, so it is not offered. {_GET_A_HEAD}"
NO_CLASSIFIER_FOR_LENS = (
    "has no classifier head. The logit lens reads every layer through the model's own final norm and "
    f"classifier, so it needs one. {_GET_A_HEAD}"
)


def _mosaic_top() -> str:
    """What each small map of the mosaic is divided by, under the page's colour rule."""
    if _raw_colours():
        return "maximum"
    return f"{ordinal(CLIP_PERCENTILE)} percentile (its top {100 - CLIP_PERCENTILE:g}% share the brightest colour)"


def _head_label(head: tuple[int, int]) -> str:
    return f"{head[0]}:{head[1]}"


def _toggle_head(head: tuple[int, int]) -> None:
    """A click in "switch off" mode: the head goes off, or back on when it was off."""
    chosen = list(st.session_state.get(ABLATED, []))
    label = _head_label(head)
    st.session_state[ABLATED] = (
        [item for item in chosen if item != label] if label in chosen else [*chosen, label]
    )


@st.cache_resource(show_spinner="Running the model with heads switched off…", max_entries=8)
def _cached_ablation(
    model_key: tuple,
    digest: str,
    heads: tuple[tuple[int, int], ...],
    mode: str,
    view: str,
    _loaded: LoadedModel,
    _image: Image.Image,
) -> AblationResult:
    return ablate_heads(
        _loaded, _cached_view(model_key, digest, view, _loaded.facts, _image), list(heads), mode, topk=5
    )


@st.cache_data(show_spinner="Estimating every head's effect…", max_entries=16)
def _cached_importance_estimate(
    model_key: tuple, digest: str, mode: str, view: str, _loaded: LoadedModel, _image: Image.Image
) -> np.ndarray:
    return head_importance_estimate(
        _loaded, _cached_view(model_key, digest, view, _loaded.facts, _image), mode
    )


def _ablated_heads(facts: ModelFacts) -> list[tuple[int, int]]:
    """The heads chosen one by one plus every head of the chosen layers, sorted."""
    heads = set()
    for label in st.session_state.get(ABLATED, []):
        layer, _, head = label.partition(":")
        heads.add((int(layer), int(head)))
    for layer in st.session_state.get(ABLATED_LAYERS, []):
        heads.update((layer, head) for head in range(facts.num_heads))
    return sorted(heads)


def _render_ablation(side: ModelSide, picked: ui.ImageChoice) -> AblationResult | None:
    """Head ablation: switch heads off, see the top-k and the maps change; rank heads by their effect.

    Returns the ablated forward when some head is off, so the maps below draw it; None otherwise.
    """
    facts = side.loaded.facts
    if not facts.has_classifier:
        st.caption(f"{facts.name} {NO_CLASSIFIER_FOR_ABLATION}")
        return None
    st.subheader("Switch heads off")
    options = [
        _head_label((layer, head)) for layer in range(facts.num_layers) for head in range(facts.num_heads)
    ]
    st.session_state[ABLATED] = [label for label in st.session_state.get(ABLATED, []) if label in options]
    st.session_state[ABLATED_LAYERS] = [
        layer for layer in st.session_state.get(ABLATED_LAYERS, []) if 0 <= layer < facts.num_layers
    ]
    if st.session_state.get(ABLATION_MODE) not in ABLATION_MODES:
        st.session_state[ABLATION_MODE] = next(iter(ABLATION_MODES))
    columns = st.columns([3, 2, 3])
    columns[0].multiselect(
        "Heads off (layer:head)",
        options,
        key=ABLATED,
        help="Or choose “switches the head off” above and click small maps.",
    )
    columns[1].multiselect("Whole layers off", list(range(facts.num_layers)), key=ABLATED_LAYERS)
    mode_label = columns[2].radio("A head switched off is", list(ABLATION_MODES), key=ABLATION_MODE)
    mode = ABLATION_MODES[mode_label]
    heads = _ablated_heads(facts)
    view = side.view
    result = _cached_ablation(side.key, picked.digest, tuple(heads), mode, view, side.loaded, picked.image)
    before, after = result.before, result.after
    top = before[0]
    after_probability = float(_softmax(result.record.logits)[top.index])
    count = len(heads)
    off = _heads_off(count, mode)
    chart_columns = st.columns(2)
    with chart_columns[0]:
        _chart(
            predictions_figure(before, _export_title("Top-5, every head on", side)),
            key="anatomy_ablation_before",
        )
    with chart_columns[1]:
        after_title = f"Top-5 with {off}" if count else "Top-5, no head off yet"
        after_figure = predictions_figure(after, _export_title(after_title, side))
        _chart(after_figure, key="anatomy_ablation_after")
        ui.figure_downloads(
            after_figure,
            None,
            side.loaded.run or facts.name,
            side.loaded.weights,
            picked.name,
            f"ablation-{mode}-{count}-heads",
            "anatomy_ablation_after_files",
        )
    if count:
        changed = "the top class changes" if after[0].index != top.index else "the top class stays"
        st.markdown(
            f"With {off}, **{top.label}** goes from {top.probability:.1%} to {after_probability:.1%} "
            f"({after_probability - top.probability:+.1%}); {changed}"
            + (
                f" to **{after[0].label}** ({after[0].probability:.1%})."
                if after[0].index != top.index
                else "."
            )
            + " The maps below show the forward with these heads off."
        )
    else:
        st.caption("Every head is on: choose heads or layers to switch off.")
    _render_importance(side, picked, mode, view)
    return result if count else None


def _done_to_heads(mode: str, count: int = 1) -> str:
    """What an ablation does to a head: "zeroed", or "replaced by its (their) token mean"."""
    return "zeroed" if mode == "zero" else f"replaced by {'its' if count == 1 else 'their'} token mean"


def _heads_off(count: int, mode: str) -> str:
    """ "3 heads zeroed", "1 head replaced by its token mean": the count and what was done to them."""
    return f"{count} head{'s' if count != 1 else ''} {_done_to_heads(mode, count)}"


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def _rank_here(
    side: ModelSide, picked: ui.ImageChoice, mode: str, view: str, store: dict, key: tuple
) -> None:
    """Ranks in this run, with a progress bar: for models no worker can load again."""
    bar = st.progress(0.0, text="Switching each head off in turn…")

    def report(done: int, all_heads: int) -> None:
        bar.progress(done / all_heads, text=f"{done} of {all_heads} heads switched off in turn")

    try:
        seen = _cached_view(side.key, picked.digest, view, side.loaded.facts, picked.image)
        store[key] = head_importance(side.loaded, seen, mode, progress=report)
    except (ModelError, ValueError, RuntimeError) as error:
        st.error(f"Could not rank the heads: {error}")
    bar.empty()


def _start_ranking(
    side: ModelSide, picked: ui.ImageChoice, mode: str, view: str, jobs: dict[tuple, Path], key: tuple
) -> bool:
    """Starts the ranking in a background worker, which `_ranking_progress` follows; False if it could not."""
    choice = side.choice
    job = RankingJob(choice.name, choice.weights, choice.device, side.twin, mode, view)
    folder = Path(tempfile.mkdtemp(prefix="vitviz-head-ranking-"))
    try:
        start_ranking(job, picked.image, folder)
    except (OSError, ValueError) as error:
        shutil.rmtree(folder, ignore_errors=True)
        st.error(f"Could not start ranking the heads: {error}")
        return False
    jobs[key] = folder
    return True


@st.fragment(run_every=RANKING_REFRESH_S)
def _ranking_progress(key: tuple) -> None:
    """The background ranking's progress; once it has ended, its drops join the page (or its error shows)."""
    jobs: dict[tuple, Path] = st.session_state.get(RANKING_JOBS, {})
    folder = jobs.get(key)
    if folder is None:
        return
    try:
        state = read_ranking(folder)
    except (OSError, ValueError) as error:  # the folder was removed or damaged under the page
        state = RankingState(0, 0, error=f"its folder could not be read ({error})")
    if not state.ended and state.quiet_s < RANKING_SILENT_S:
        fraction = state.done / state.total if state.total else 0.0
        words = (
            f"{state.done} of {state.total} heads switched off in turn"
            if state.total
            else "Loading the model…"
        )
        st.progress(fraction, text=f"{words} (in the background)")
        return
    del jobs[key]
    shutil.rmtree(folder, ignore_errors=True)
    if state.drops is None:
        error = state.error or f"the worker stopped without a word for {RANKING_SILENT_S} s"
        st.error(f"Could not rank the heads: {error}")
        return
    st.session_state.setdefault(IMPORTANCE, {})[key] = state.drops
    st.rerun()  # the whole page: the ranking's figure and sentence follow the button


def _render_importance(side: ModelSide, picked: ui.ImageChoice, mode: str, view: str) -> None:
    """Ranks every head by how much the top class's probability drops when it alone is off."""
    facts = side.loaded.facts
    store = st.session_state.setdefault(IMPORTANCE, {})
    cache_key = (side.key, picked.digest, view, mode)
    total = facts.num_layers * facts.num_heads
    jobs: dict[tuple, Path] = st.session_state.setdefault(RANKING_JOBS, {})
    if st.button(
        f"Rank all {total} heads by their effect ({ABLATION_WORDS[mode]})",
        key="anatomy_ablation_rank",
        disabled=cache_key in store or bool(jobs),  # one ranking at a time per visitor
        help="Runs in a background worker, on CPU time the app leaves idle; the page follows its progress.",
    ):
        if side.loaded.weights == "random" and not side.twin:  # unseeded: no worker could load them again
            _rank_here(side, picked, mode, view, store, cache_key)
        elif _start_ranking(side, picked, mode, view, jobs, cache_key):
            st.rerun()  # drawn again with the button off while the worker runs
    if cache_key in jobs:
        _ranking_progress(cache_key)
    elif jobs:
        st.caption("A ranking for another image, model or ablation is running; this one can start after it.")
    try:
        estimate = _cached_importance_estimate(side.key, picked.digest, mode, view, side.loaded, picked.image)
    except (ModelError, ValueError, RuntimeError) as error:
        st.error(f"Could not estimate the heads' effects: {error}")
        estimate = None
    drops = store.get(cache_key)
    if drops is None and estimate is None:
        return
    exact = drops is not None
    shown = drops if exact else estimate
    scale = colour_scale(shown, "probability drop", _clip_percentile(), symmetric=True)
    top = side.attention(picked)
    top_label = _prediction_label(side, top)
    title = f"Drop of {top_label} with one head {_done_to_heads(mode)}"
    if not exact:
        title = f"Estimated drop of {top_label} with one head {_done_to_heads(mode)} (first order)"
    figure = head_importance_figure(shown, scale, _export_title(title, side))
    _chart(figure, key="anatomy_ablation_importance_chart")
    order = np.argsort(shown, axis=None)[::-1][:5]
    ranked = [np.unravel_index(index, shown.shape) for index in order]
    st.markdown(
        ("Heads that matter most here: " if exact else "Heads that matter most here, by the estimate: ")
        + ", ".join(f"{layer}:{head} ({shown[layer, head]:+.1%})" for layer, head in ranked)
        + f". Largest rise when removed: {shown.min():+.1%}."
    )
    if not exact:
        st.caption(
            "An estimate, shown at once: one forward and one backward pass give every head's first-order "
            "effect on the class's probability (attribution patching). The exact ranking switches each "
            "head off in turn; where a head's effect is not linear, the two differ."
        )
    elif estimate is not None:
        st.caption(
            f"The instant estimate ranked these heads with Spearman ρ = {ranking_agreement(estimate, drops):.2f} "
            "against this exact ranking (1: the same order)."
        )
    ui.figure_downloads(
        figure,
        shown,
        side.loaded.run or facts.name,
        side.loaded.weights,
        picked.name,
        f"head-importance-{mode}" if exact else f"head-importance-estimate-{mode}",
        "anatomy_importance",
    )


def _prediction_label(side: ModelSide, record: AttentionRecord) -> str:
    """The name of the model's top class on the record's forward."""
    index = int(np.argmax(record.logits))
    labels = side.loaded.labels
    return labels[index] if labels is not None and index < len(labels) else f"class {index}"


# 9. Queries and keys together ----------------------------------------------------------------

PROJECTIONS: dict[str, ProjectionMethod] = {"PCA": "pca", "t-SNE (slower)": "tsne"}
QK_LAYER = "anatomy_qk_layer"
QK_HEAD = "anatomy_qk_head"


def render_queries_keys(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """View 9: one head's queries and keys placed together in 2-D, as in AttentionViz."""
    facts = sides[0].loaded.facts
    st.markdown(
        "One head's **queries** (●) and **keys** (✕) for every token, placed together in 2-D, coloured "
        "by grid position (hue: column, lightness: row), as in *AttentionViz*. A query attends most to "
        "the keys it points along, so where queries and keys of some patches mingle, the head groups those "
        "patches together. Prefix tokens are drawn large and named."
    )
    # Widgets keep their values across models: bring a layer or head of a deeper model back in range.
    if not 0 <= st.session_state.get(QK_LAYER, -1) < facts.num_layers:
        st.session_state[QK_LAYER] = facts.num_layers - 1
    if not 0 <= st.session_state.get(QK_HEAD, -1) < facts.num_heads:
        st.session_state[QK_HEAD] = 0
    controls = st.columns([3, 2, 2, 3])
    layer = controls[0].slider("Layer", 0, facts.num_layers - 1, key=QK_LAYER)
    head = controls[1].selectbox("Head", list(range(facts.num_heads)), key=QK_HEAD)
    method_label = controls[2].radio(
        "Projection",
        list(PROJECTIONS),
        key="anatomy_qk_method",
        help="PCA is linear and instant. t-SNE keeps neighbourhoods rather than distances and takes "
        "seconds for a few hundred tokens.",
    )
    align = controls[3].checkbox(
        "Align keys with queries",
        value=True,
        key="anatomy_qk_align",
        help="Moves the keys' centre onto the queries' and evens out their lengths; softmax(q·kᵀ) is "
        "unchanged by both, but the two clouds stop sitting apart (AttentionViz does the same).",
    )
    method = PROJECTIONS[method_label]

    def project(side: ModelSide) -> tuple[QueryKeys, QueryKeyProjection]:
        key = (side.key, picked.digest, side.view, layer, head)
        source = _cached_query_keys(*key, side.loaded, picked.image)
        return source, _cached_projection(*key, method, align, source)

    for side, (source, projection) in _each_side(
        sides, f"capture the queries and keys of {facts.name}", project
    ):
        scatter_column, key_column = st.columns([3, 1])
        with scatter_column:
            tokens = len(source.queries)
            title = f"Layer {layer}, head {head}: {tokens} queries and {tokens} keys ({method_label})"
            _chart(
                query_key_figure(projection, source, _title(title, side)),
                key=f"anatomy_qk_scatter_{side.suffix}",
                theme=None,
            )
        with key_column:
            _chart(position_key_figure(source.grid_size), key=f"anatomy_qk_key_{side.suffix}", theme=None)
            st.caption(
                f"Check: softmax(q·kᵀ/√{source.queries.shape[1]}) from these vectors reproduces the "
                f"model's attention of this head to within {source.reproduction_error():.1e}."
            )
            if method == "tsne":
                st.caption("t-SNE distances are not to scale; only neighbourhoods mean something.")


# 10. Logit lens ------------------------------------------------------------------------------

LENS_LAYER = "anatomy_lens_layer"  # the layer whose per-patch classes are drawn


@st.cache_data(show_spinner="Reading every layer through the head…", max_entries=16)
def _cached_lens(
    model_key: tuple, digest: str, view: str, _loaded: LoadedModel, _image: Image.Image
) -> LogitLens:
    return logit_lens(_loaded, _cached_view(model_key, digest, view, _loaded.facts, _image), topk=5)


def _class_name(loaded: LoadedModel, index: int) -> str:
    labels = loaded.labels
    return labels[index] if labels is not None and 0 <= index < len(labels) else f"class {index}"


def render_logit_lens(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """View 10: each layer's residual stream read through the model's own final norm and head."""
    side = sides[0]
    loaded, facts = side.loaded, side.loaded.facts
    if not facts.has_classifier:
        st.info(f"{facts.name} {NO_CLASSIFIER_FOR_LENS}")
        return
    record = side.attention(picked)
    try:
        lens = _cached_lens(side.key, picked.digest, side.view, loaded, picked.image)
    except (ModelError, ValueError, RuntimeError) as error:
        st.error(f"Could not read the layers through the head: {error}")
        return
    shown: list[int] = []  # every layer's top class, then the final top-5, each once
    for index in [layer[0].index for layer in lens.predictions] + [p.index for p in lens.predictions[-1]]:
        if index not in shown:
            shown.append(index)
    shown = shown[:12]
    logits = lens.logits.astype(np.float64)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    table = probabilities[:, shown]
    labels = [_class_name(loaded, index) for index in shown]
    scale = colour_scale(table, "probability", _clip_percentile())
    figure = logit_lens_figure(
        table, labels, scale, _export_title("Logit lens: each layer's top classes", side)
    )
    _chart(figure, key="anatomy_lens_chart", theme=None)
    ui.figure_downloads(
        figure,
        table,
        loaded.run or facts.name,
        loaded.weights,
        picked.name,
        "logit-lens",
        "anatomy_lens_chart_files",
    )
    final, model_top = lens.predictions[-1][0], int(np.argmax(record.logits))
    model_probability = float(_softmax(record.logits)[model_top])
    first = lens.num_layers - 1  # the first layer from which the final class stays on top
    while first > 0 and lens.predictions[first - 1][0].index == final.index:
        first -= 1
    pooled = "class token" if lens.pooling == "token" else f"{lens.pooling or 'pooled'}-pooled patch tokens"
    agrees = final.index == model_top and abs(final.probability - model_probability) < 1e-3
    st.markdown(
        f"Each layer's {pooled}, read through the model's final norm and head. "
        f"**{final.label}** is the top class from layer {first} on"
        + (
            f"; the last layer's reading is the model's prediction ({final.probability:.1%} both)."
            if agrees
            else f"; the model's own prediction is {_class_name(loaded, model_top)} ({model_probability:.1%})."
        )
    )
    _lens_patch_map(side, picked, lens)


@st.fragment
def _lens_patch_map(side: ModelSide, picked: ui.ImageChoice, lens: LogitLens) -> None:
    """The per-patch classes of one layer, with its slider: a layer step reruns this map alone."""
    loaded, facts = side.loaded, side.loaded.facts
    if LENS_LAYER not in st.session_state or not 0 <= st.session_state[LENS_LAYER] < lens.num_layers:
        st.session_state[LENS_LAYER] = lens.num_layers - 1
    layer = st.slider("Layer of the patch map", 0, lens.num_layers - 1, key=LENS_LAYER)
    classes = lens.patch_classes[layer]
    present, counts = np.unique(classes, return_counts=True)
    order = np.argsort(-counts)
    kept = [int(present[index]) for index in order[:9]]
    codes = np.array(
        [[kept.index(value) if value in kept else len(kept) for value in row] for row in classes]
    )
    names = [_class_name(loaded, index) for index in kept] + (["other"] if len(present) > len(kept) else [])
    patch_figure = patch_class_figure(
        side.pixels(picked),
        codes,
        names,
        facts.stride_px,
        _export_title(f"Layer {layer}: the class each patch token alone reads as", side),
    )
    _chart(patch_figure, key="anatomy_lens_patches", theme=None)
    ui.figure_downloads(
        patch_figure,
        classes,
        loaded.run or facts.name,
        loaded.weights,
        picked.name,
        f"logit-lens-patches-layer{layer}",
        "anatomy_lens_patch_files",
    )
    top_share = counts[order[0]] / classes.size
    st.caption(
        f"At layer {layer}, {top_share:.0%} of the {classes.size} patches read as "
        f"{_class_name(loaded, int(present[order[0]]))}; {len(present)} classes in all."
    )


# 11. Sanity check ----------------------------------------------------------------------------

SANITY_METHOD = "anatomy_sanity_method"
SANITY_RESULTS = "anatomy_sanity_results"  # {(model key, digest, view, method): SanityResult}


def render_sanity(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """View 11: a method's map as the weights are randomised from the head down (Adebayo et al.)."""
    side = sides[0]
    loaded, facts = side.loaded, side.loaded.facts
    methods = available_methods(facts)
    if not methods:
        st.info(f"No explanation method applies to {facts.name}.")
        return
    if st.session_state.get(SANITY_METHOD) not in methods:
        st.session_state[SANITY_METHOD] = (
            default_method(facts) if default_method(facts) in methods else methods[0]
        )
    method = st.selectbox("Method", methods, format_func=lambda name: METHODS[name].title, key=SANITY_METHOD)
    st.markdown(
        "Each stage redraws more of the weights at random, from the head down; a map that explains the "
        "model should change with them. ρ is the rank correlation with the original map."
    )
    view = side.view
    store = st.session_state.setdefault(SANITY_RESULTS, {})
    cache_key = (side.key, picked.digest, view, method)
    if st.button("Run the sanity check (slow)", key="anatomy_sanity_run", disabled=cache_key in store):
        bar = st.progress(0.0, text="Randomising the weights stage by stage…")

        def report(done: int, total: int) -> None:
            bar.progress(done / total, text=f"{done} of {total} maps")

        try:
            seen = _cached_view(side.key, picked.digest, view, loaded.facts, picked.image)
            store[cache_key] = cascading_randomisation(loaded, seen, method, progress=report)
        except (ModelError, ValueError, RuntimeError) as error:
            st.error(f"Could not run the sanity check: {error}")
            return
        bar.empty()
    result: SanityResult | None = store.get(cache_key)
    if result is None:
        return
    _render_sanity_result(side, picked, result)


def _render_sanity_result(side: ModelSide, picked: ui.ImageChoice, result: SanityResult) -> None:
    facts = side.loaded.facts
    tops = []
    constant = []
    for stage, values in zip(result.stages, result.maps, strict=True):
        scale = colour_scale(values, "map", _clip_percentile())
        tops.append(np.clip((values - scale.zmin) / (scale.zmax - scale.zmin), 0.0, 1.0))
        if float(values.max()) == float(values.min()):
            constant.append(stage)
    titles = [
        f"{stage} · ρ {'n/a' if value is None else f'{value:.2f}'}"
        for stage, value in zip(result.stages, result.rank_correlation, strict=True)
    ]
    colour_title = "map / its range" + ("" if _raw_colours() else f" (clipped at {CLIP_PERCENTILE:g}th pct)")
    figure = sanity_maps_figure(
        np.stack(tops),
        titles,
        colour_title,
        _export_title(f"Sanity check of {METHODS[result.method].title}", side),
    )
    _chart(figure, key="anatomy_sanity_chart", theme=None)
    ui.figure_downloads(
        figure,
        result.maps,
        side.loaded.run or facts.name,
        side.loaded.weights,
        picked.name,
        f"sanity-{result.method}",
        "anatomy_sanity_files",
    )
    checkpoint = result.checkpoint
    value = result.rank_correlation[checkpoint]
    stage = result.stages[checkpoint]
    if constant:
        st.warning(f"The map is constant at: {', '.join(constant)}; it says nothing about the image there.")
    if value is None:
        st.info(f"At stage “{stage}” the map is constant, so no rank correlation can be computed.")
    elif result.flagged:
        st.warning(
            f"{METHODS[result.method].title} barely changes: ρ = {value:.2f} at stage “{stage}” (head and half "
            f"the blocks random), |ρ| above {UNFAITHFUL_RANK_CORRELATION}. It does not follow the weights it explains."
        )
    else:
        st.success(
            f"{METHODS[result.method].title} follows the weights: ρ = {value:.2f} at stage “{stage}” "
            f"(head and half the blocks random); |ρ| of at most {UNFAITHFUL_RANK_CORRELATION} allowed."
        )


@dataclass(frozen=True)
class _View:
    """One tab's view: the function that draws it, and why it does not apply to a CNN."""

    render: Callable[[list[ModelSide], ui.ImageChoice], None]
    cnn_reason: str | None = None  # None: the view itself says why a CNN has nothing to show


def _lacks(what: str) -> str:
    return f"It has no {what}. Pick a ViT or a hybrid to see this view."


# The tabs in menu order.
TABS: dict[str, _View] = {
    "Patches as words": _View(
        render_patches,
        "It never cuts the image into patches or tokens; its convolutions slide over the pixels. Pick a "
        "ViT or a hybrid to see patches as words.",
    ),
    "Filters": _View(render_filters),
    "Position embeddings": _View(render_position_embeddings),
    "Attention distance": _View(
        render_attention_distance,
        "It has no attention heads; how far it looks is set by its kernel sizes and depth (its receptive "
        "field), not learned per head.",
    ),
    "Resolution": _View(render_resolution, _lacks("patch grid and no position embedding to interpolate")),
    "Hybrid stem": _View(render_hybrid, _lacks("token grid; its whole body is the CNN")),
    "Token norms": _View(render_token_norms, _lacks("output tokens")),
    "All heads": _View(render_all_heads, _lacks("attention heads")),
    "Queries & keys": _View(render_queries_keys, _lacks("queries and keys")),
    "Logit lens": _View(render_logit_lens, _lacks("tokens to read through the head layer by layer")),
    "Sanity check": _View(render_sanity),
}
