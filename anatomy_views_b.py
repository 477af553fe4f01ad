"""Streamlit glue of the Anatomy views 5–9: resolution, hybrid stem, token norms, all heads, queries & keys."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import streamlit as st
from PIL import Image
from streamlit.delta_generator import DeltaGenerator

from pages.views import ui
from vitviz.figures.anatomy import (
    MODEL_VIEW_MARGIN_PX,
    feature_maps_figure,
    model_view_figure,
    norm_histogram_figure,
    position_key_figure,
    query_key_figure,
    rgb_grid_figure,
    selected_head,
    stem_grid_figure,
)
from vitviz.figures.common import attention_overlay_figure, predictions_figure, selected_patch
from vitviz.maths.attention import AttentionRecord, class_attention_map, record_attention, rollout_relevance
from vitviz.maths.hybrid import HybridStem, hybrid_stem
from vitviz.maths.model_view import model_view_maps, query_label
from vitviz.maths.qk import ProjectionMethod, QueryKeyProjection, QueryKeys, project_queries_keys, query_keys
from vitviz.maths.resolution import ResolutionSide, compare_resolutions, resolution_choices
from vitviz.maths.token_features import (
    OutputTokens,
    PrincipalColours,
    TokenNorms,
    TokenPlace,
    high_norm_patches,
    output_tokens,
    patch_feature_colours,
    token_norms,
)
from vitviz.models import LoadedModel, ModelError, ModelFacts, describe_weights
from vitviz.preprocess import explanation_image

__all__ = ["TAB_LABELS", "render_tabs"]

TAB_LABELS = ("Resolution", "Hybrid stem", "Token norms", "All heads", "Queries & keys")
RANDOM_LABEL = "random (untrained)"
HIGH_NORM_FACTOR = 2.0  # a patch counts as high-norm above this multiple of the median patch norm

# Session-state keys of the "All heads" view.
HEAD = "anatomy_b_heads_selected"  # (layer, head) shown large
QUERY_PATCH = "anatomy_b_heads_patch"  # (row, col) of the clicked query patch, or None
QUERY_KIND = "anatomy_b_heads_query"  # radio: class token or clicked patch
SEEN = "anatomy_b_heads_seen"  # last selection seen per chart, so only new clicks count
CLICKED_PATCH = "clicked patch"
RESOLUTION_SIZE = "anatomy_b_resolution_size"  # "H×W" of the resized copy


class ModelSide(NamedTuple):
    """One model a view is shown for."""

    loaded: LoadedModel
    label: str  # heading, and the suffix of figure titles for the untrained twin
    key: tuple  # hashable cache key naming the model
    suffix: str  # "model" or "random": part of widget keys, unique per side


def _sides(loaded: LoadedModel, random_loaded: LoadedModel | None) -> list[ModelSide]:
    """The chosen model and, when asked for, its untrained twin.

    The twin's cache key names what it is the twin of and its input size, so it never collides
    with a model loaded with "random" weights at its default size.
    """
    facts = loaded.facts
    key = (facts.name, loaded.weights, str(loaded.device))
    sides = [ModelSide(loaded, describe_weights(loaded.weights), key, "model")]
    if random_loaded is not None:
        twin_key = (facts.name, f"untrained twin of {loaded.weights}", str(loaded.device), facts.input_size)
        sides.append(ModelSide(random_loaded, RANDOM_LABEL, twin_key, "random"))
    return sides


def _is_open(tab: DeltaGenerator) -> bool:
    """Lazy tabs (on_change="rerun") say whether they are open; tabs without state always run."""
    return getattr(tab, "open", None) is not False


def _cnn_note(facts: ModelFacts, what: str) -> bool:
    """Says that a CNN has no `what`; True when the view does not apply."""
    if facts.family == "cnn" or facts.grid_size is None:
        st.info(f"{facts.name} is a CNN: it has no {what}. Pick a ViT or a hybrid to see this view.")
        return True
    return False


def _heading(label: str, sides: Sequence[ModelSide]) -> None:
    if len(sides) > 1:
        st.subheader(label)


def _title(text: str, label: str) -> str:
    return f"{text} · {label}" if label == RANDOM_LABEL else text


# Cached computations: the model is passed unhashed, its key names it. -------------------------


@st.cache_resource(show_spinner="Capturing attention…", max_entries=8)
def _cached_record(
    model_key: tuple, digest: str, _loaded: LoadedModel, _image: Image.Image
) -> AttentionRecord:
    """Every layer's attention; a resource cache shares the read-only arrays without copying them."""
    return record_attention(_loaded, _image)


@st.cache_data(show_spinner="Running the model at both sizes…", max_entries=8)
def _cached_resolution(
    model_key: tuple, digest: str, size: tuple[int, int], _loaded: LoadedModel, _image: Image.Image
) -> tuple[ResolutionSide, ResolutionSide]:
    return compare_resolutions(_loaded, _image, size)


@st.cache_data(show_spinner="Running the CNN stem…", max_entries=16)
def _cached_stem(model_key: tuple, digest: str, _loaded: LoadedModel, _image: Image.Image) -> HybridStem:
    return hybrid_stem(_loaded, _image)


@st.cache_data(show_spinner="Reading the output tokens…", max_entries=16)
def _cached_tokens(model_key: tuple, digest: str, _loaded: LoadedModel, _image: Image.Image) -> OutputTokens:
    return output_tokens(_loaded, _image)


@st.cache_data(show_spinner=False, max_entries=32)
def _cached_colours(
    model_key: tuple, digest: str, place: TokenPlace, _tokens: OutputTokens
) -> PrincipalColours:
    return patch_feature_colours(_tokens, place)


@st.cache_data(show_spinner="Capturing queries and keys…", max_entries=32)
def _cached_query_keys(
    model_key: tuple, digest: str, layer: int, head: int, _loaded: LoadedModel, _image: Image.Image
) -> QueryKeys:
    return query_keys(_loaded, _image, layer, head)


@st.cache_data(show_spinner="Projecting queries and keys…", max_entries=32)
def _cached_projection(
    model_key: tuple,
    digest: str,
    layer: int,
    head: int,
    method: ProjectionMethod,
    align: bool,
    _qk: QueryKeys,
) -> QueryKeyProjection:
    return project_queries_keys(_qk, method=method, align=align)


@st.cache_data(show_spinner=False, max_entries=16)
def _cached_pixels(model_key: tuple, digest: str, _facts: ModelFacts, _image: Image.Image) -> np.ndarray:
    return explanation_image(_image, _facts)


def render_tabs(
    tabs: Sequence[DeltaGenerator],
    loaded: LoadedModel,
    random_loaded: LoadedModel | None,
    picked_image: ui.ImageChoice,
) -> None:
    """Renders views 5–9 into five tabs, in the order of `TAB_LABELS`; closed lazy tabs are skipped.

    Args:
        tabs: five `st.tabs` containers.
        loaded: the chosen model (shared: never mutated).
        random_loaded: its untrained twin, or None when no comparison is asked for.
        picked_image: the image every view runs on.
    """
    assert len(tabs) == len(TAB_LABELS), f"expected {len(TAB_LABELS)} tabs, got {len(tabs)}"
    sides = _sides(loaded, random_loaded)
    renderers = (_render_resolution, _render_hybrid, _render_token_norms, _render_all_heads, _render_qk)
    for tab, render in zip(tabs, renderers, strict=True):
        if _is_open(tab):
            with tab:
                render(sides, picked_image)


# 5. Resolution -------------------------------------------------------------------------------


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


def _render_resolution(sides: list[ModelSide], picked_image: ui.ImageChoice) -> None:
    facts = sides[0].loaded.facts
    if _cnn_note(facts, "patch grid and no position embedding to interpolate"):
        return
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
    picked = st.select_slider(
        "Run at input size",
        options=list(choices),
        format_func=lambda text: _size_label(facts, choices[text]),
        key=RESOLUTION_SIZE,
        help="Any multiple of the token stride, keeping the aspect ratio; up to a 32×32 grid.",
    )
    size = choices[picked]
    for loaded, label, key, suffix in sides:
        _heading(label, sides)
        try:
            before, after = _cached_resolution(key, picked_image.digest, size, loaded, picked_image.image)
        except (ModelError, ValueError, RuntimeError) as error:
            st.error(f"Could not run {facts.name} at {size[0]}×{size[1]} px: {error}")
            continue
        st.markdown(f"{_token_count(before.facts)} → {_token_count(after.facts)}")
        columns = st.columns(2)
        for column, side, name in zip(columns, (before, after), ("before", "after"), strict=True):
            _render_resolution_side(column, side, name, label, suffix)
        peaks = [float(side.rollout.max() / np.median(side.rollout)) for side in (before, after)]
        dominated = (
            " A few tokens dominate it: the class-token maps above spread more evenly."
            if max(peaks) > 10
            else ""
        )
        st.caption(
            f"Rollout's largest value is {peaks[0]:.1f}× its median at {before.facts.input_size[0]} px and "
            f"{peaks[1]:.1f}× at {after.facts.input_size[0]} px.{dominated}"
        )


def _render_resolution_side(
    column: DeltaGenerator, side: ResolutionSide, name: str, label: str, suffix: str
) -> None:
    facts = side.facts
    rows, cols = facts.grid_size
    size = f"{facts.input_size[0]}×{facts.input_size[1]} px"
    chart_key = f"anatomy_b_resolution_{name}_{suffix}"
    with column:
        if side.position_rgb is not None:
            what = "as loaded" if name == "before" else "interpolated"
            st.plotly_chart(
                rgb_grid_figure(
                    side.position_rgb,
                    _title(f"Position embedding {what} ({rows}×{cols}, 3 PCs)", label),
                    height=360,
                    hover_name="PCs",
                ),
                key=f"{chart_key}_posembed",
                theme=None,
            )
        else:
            st.info(f"{facts.name} has no learned absolute position embedding to interpolate.")
        query = "class token" if facts.num_prefix_tokens else "mean patch"
        st.plotly_chart(
            attention_overlay_figure(
                side.pixels,
                side.class_attention,
                facts.stride_px,
                _title(f"{size}: last-layer {query} attention", label),
            ),
            key=f"{chart_key}_attention",
            theme=None,
        )
        st.plotly_chart(
            attention_overlay_figure(
                side.pixels,
                side.rollout,
                facts.stride_px,
                _title(f"{size}: rollout, {facts.num_layers} layers", label),
                colorbar_title="relevance",
            ),
            key=f"{chart_key}_rollout",
            theme=None,
        )
        if side.predictions is not None:
            untrained = " (untrained)" if label == RANDOM_LABEL else ""
            st.plotly_chart(
                predictions_figure(side.predictions, f"{size}: top-5 predictions{untrained}"),
                key=f"{chart_key}_predictions",
            )
        elif name == "before":
            st.caption(f"{facts.name} has no classifier head, so there are no predictions to compare.")


# 6. Hybrid stem ------------------------------------------------------------------------------


def _render_hybrid(sides: list[ModelSide], picked_image: ui.ImageChoice) -> None:
    facts = sides[0].loaded.facts
    if _cnn_note(facts, "token grid; its whole body is the CNN"):
        return
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
    for loaded, label, key, suffix in sides:
        _heading(label, sides)
        try:
            stem = _cached_stem(key, picked_image.digest, loaded, picked_image.image)
            record = _cached_record(key, picked_image.digest, loaded, picked_image.image)
        except (ModelError, ValueError, RuntimeError) as error:
            st.error(f"Could not run the stem of {facts.name}: {error}")
            continue
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
        pixels = _cached_pixels(key, picked_image.digest, loaded.facts, picked_image.image)
        grid_column, maps_column = st.columns([2, 3])
        with grid_column:
            st.plotly_chart(
                stem_grid_figure(pixels, stem, _title("Feature cells and tokens", label)),
                key=f"anatomy_b_stem_grid_{suffix}",
                theme=None,
            )
        with maps_column:
            st.plotly_chart(
                feature_maps_figure(
                    stem,
                    _title(f"Stem output: mean and the {len(stem.channels)} most varying channels", label),
                ),
                key=f"anatomy_b_stem_maps_{suffix}",
                theme=None,
            )
        attention_column, rollout_column = st.columns(2)
        query = "class token" if facts.num_prefix_tokens else "mean patch"
        with attention_column:
            st.plotly_chart(
                attention_overlay_figure(
                    pixels,
                    class_attention_map(record, record.num_layers - 1, None),
                    facts.stride_px,
                    _title(f"Last-layer {query} attention, {rows}×{cols} tokens", label),
                ),
                key=f"anatomy_b_stem_attention_{suffix}",
                theme=None,
            )
        with rollout_column:
            st.plotly_chart(
                attention_overlay_figure(
                    pixels,
                    rollout_relevance(record),
                    facts.stride_px,
                    _title(f"Rollout, {rows}×{cols} tokens", label),
                    colorbar_title="relevance",
                ),
                key=f"anatomy_b_stem_rollout_{suffix}",
                theme=None,
            )


# 7. Token norms and features -----------------------------------------------------------------

PLACES: dict[str, TokenPlace] = {
    "before the final norm (last block's output)": "before_norm",
    "after the final norm (forward_features output)": "after_norm",
}


def _render_token_norms(sides: list[ModelSide], picked_image: ui.ImageChoice) -> None:
    facts = sides[0].loaded.facts
    if _cnn_note(facts, "output tokens"):
        return
    st.markdown(
        "The length (L2 norm) of every output token. *Vision Transformers Need Registers* (Darcet et al.) "
        "found that large ViTs trained without register tokens produce a few **high-norm tokens** on "
        "background patches, which they use as scratch space; register tokens take that role instead. "
        "The right-hand map colours each patch by the first three principal components of the patch "
        "features: patches the model sees alike get alike colours."
    )
    place_label = st.radio(
        "Read the tokens", list(PLACES), horizontal=True, key="anatomy_b_norms_place", index=0
    )
    place = PLACES[place_label]
    for loaded, label, key, suffix in sides:
        _heading(label, sides)
        try:
            tokens = _cached_tokens(key, picked_image.digest, loaded, picked_image.image)
        except (ModelError, ValueError, RuntimeError) as error:
            st.error(f"Could not read the output tokens of {facts.name}: {error}")
            continue
        norms = token_norms(tokens, place)
        colours = _cached_colours(key, picked_image.digest, place, tokens)
        pixels = _cached_pixels(key, picked_image.digest, loaded.facts, picked_image.image)
        if tokens.final_norm == "Identity":
            st.caption("This model has no final norm before its head: both places give the same tokens.")
        norm_column, pca_column = st.columns(2)
        where = "before final norm" if place == "before_norm" else "after final norm"
        with norm_column:
            st.plotly_chart(
                attention_overlay_figure(
                    pixels,
                    norms.patch_norms,
                    loaded.facts.stride_px,
                    _title(f"Patch-token norm, {where}", label),
                    colorbar_title="L2 norm",
                ),
                key=f"anatomy_b_norms_map_{suffix}",
                theme=None,
            )
        with pca_column:
            ratios = ", ".join(f"{ratio:.0%}" for ratio in colours.explained_variance_ratio)
            st.plotly_chart(
                rgb_grid_figure(
                    colours.rgb,
                    _title("Patch features: 3 PCs as RGB", label),
                    height=520,
                    hover_name="PCs",
                ),
                key=f"anatomy_b_norms_pca_{suffix}",
                theme=None,
            )
            st.caption(f"Red, green, blue: principal components 1–3, explaining {ratios} of the variance.")
        st.plotly_chart(
            norm_histogram_figure(norms, _title(f"Norms of all tokens, {where}", label)),
            key=f"anatomy_b_norms_histogram_{suffix}",
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


def _init_heads_state() -> None:
    for name, value in ((HEAD, None), (QUERY_PATCH, None), (SEEN, {})):
        if name not in st.session_state:
            st.session_state[name] = value


def _new_clicks(chart_keys: Sequence[str], layers: int, heads: int, grid: tuple[int, int]) -> None:
    """Stores a head or patch clicked since the last run on any of the charts."""
    seen = st.session_state[SEEN]
    for chart in chart_keys:
        selection = st.session_state.get(chart)
        picked = (
            selected_head(selection, layers, heads) if "mosaic" in chart else selected_patch(selection, grid)
        )
        if picked is not None and seen.get(chart) != picked:
            seen[chart] = picked
            if "mosaic" in chart:
                st.session_state[HEAD] = picked
            else:
                st.session_state[QUERY_PATCH] = picked
                st.session_state[QUERY_KIND] = CLICKED_PATCH


def _render_all_heads(sides: list[ModelSide], picked_image: ui.ImageChoice) -> None:
    facts = sides[0].loaded.facts
    if _cnn_note(facts, "attention heads"):
        return
    _init_heads_state()
    layers, heads = facts.num_layers, facts.num_heads
    chart_keys = [f"anatomy_b_heads_{kind}_{side.suffix}" for side in sides for kind in ("mosaic", "large")]
    _new_clicks(chart_keys, layers, heads, facts.grid_size)
    head = st.session_state[HEAD]
    if head is None or not (head[0] < layers and head[1] < heads):
        head = st.session_state[HEAD] = (layers - 1, 0)
    patch = st.session_state[QUERY_PATCH]
    if patch is not None and not (patch[0] < facts.grid_size[0] and patch[1] < facts.grid_size[1]):
        patch = st.session_state[QUERY_PATCH] = None  # a patch of another model's grid
    class_option = "class token" if facts.num_prefix_tokens else "mean of patches"
    options = [class_option, CLICKED_PATCH]
    if st.session_state.get(QUERY_KIND) not in options:
        st.session_state[QUERY_KIND] = class_option
    st.markdown(
        f"One small map per layer (rows) and head (columns): where the chosen token attends, "
        f"{layers}×{heads} maps at once, each scaled to its own maximum. **Click a small map** to open it "
        "large; **click a patch on the large map** to make it the attending token."
    )
    kind = st.radio("Attention from", options, horizontal=True, key=QUERY_KIND)
    query = patch if kind == CLICKED_PATCH else None
    if kind == CLICKED_PATCH and patch is None:
        st.caption("No patch clicked yet: showing the class token. Click a patch on the large map.")
    for loaded, label, key, suffix in sides:
        _heading(label, sides)
        try:
            record = _cached_record(key, picked_image.digest, loaded, picked_image.image)
        except (ModelError, ValueError, RuntimeError) as error:
            st.error(f"Could not capture attention of {facts.name}: {error}")
            continue
        maps = model_view_maps(record, query)
        source = query_label(record, query)
        # Up to 8 heads the mosaic and the large map fit side by side in a wide layout (about 460 px
        # each); wider models stack them. Sized to fit, the mosaic's cells stay square and unclipped.
        side_by_side = heads <= 8
        mosaic_area, large_area = st.columns([1, 1]) if side_by_side else (st.container(), st.container())
        with mosaic_area:
            st.plotly_chart(
                model_view_figure(
                    maps,
                    _title(f"All heads: attention from {source}", label),
                    selected=head,
                    map_px=min(64, ((460 if side_by_side else 940) - MODEL_VIEW_MARGIN_PX) // heads),
                ),
                key=f"anatomy_b_heads_mosaic_{suffix}",
                on_select="rerun",
                selection_mode="points",
                theme=None,
                width="content",
            )
        pixels = _cached_pixels(key, picked_image.digest, loaded.facts, picked_image.image)
        layer, head_index = head
        with large_area:
            st.plotly_chart(
                attention_overlay_figure(
                    pixels,
                    maps[layer, head_index],
                    loaded.facts.stride_px,
                    _title(f"Layer {layer}, head {head_index}: attention from {source}", label),
                    selected=query,
                ),
                key=f"anatomy_b_heads_large_{suffix}",
                on_select="rerun",
                selection_mode="points",
                theme=None,
            )


# 9. Queries and keys together ----------------------------------------------------------------

METHODS: dict[str, ProjectionMethod] = {"PCA": "pca", "t-SNE (slower)": "tsne"}
QK_LAYER = "anatomy_b_qk_layer"
QK_HEAD = "anatomy_b_qk_head"


def _render_qk(sides: list[ModelSide], picked_image: ui.ImageChoice) -> None:
    facts = sides[0].loaded.facts
    if _cnn_note(facts, "queries and keys"):
        return
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
        list(METHODS),
        key="anatomy_b_qk_method",
        help="PCA is linear and instant. t-SNE keeps neighbourhoods rather than distances and takes "
        "seconds for a few hundred tokens.",
    )
    align = controls[3].checkbox(
        "Align keys with queries",
        value=True,
        key="anatomy_b_qk_align",
        help="Moves the keys' centre onto the queries' and evens out their lengths; softmax(q·kᵀ) is "
        "unchanged by both, but the two clouds stop sitting apart (AttentionViz does the same).",
    )
    method = METHODS[method_label]
    for loaded, label, key, suffix in sides:
        _heading(label, sides)
        try:
            source = _cached_query_keys(key, picked_image.digest, layer, head, loaded, picked_image.image)
            projection = _cached_projection(key, picked_image.digest, layer, head, method, align, source)
        except (ModelError, ValueError, RuntimeError) as error:
            st.error(f"Could not capture the queries and keys of {facts.name}: {error}")
            continue
        scatter_column, key_column = st.columns([3, 1])
        with scatter_column:
            tokens = len(source.queries)
            st.plotly_chart(
                query_key_figure(
                    projection,
                    source,
                    _title(
                        f"Layer {layer}, head {head}: {tokens} queries and {tokens} keys ({method_label})",
                        label,
                    ),
                ),
                key=f"anatomy_b_qk_scatter_{suffix}",
                theme=None,
            )
        with key_column:
            st.plotly_chart(
                position_key_figure(source.grid_size),
                key=f"anatomy_b_qk_key_{suffix}",
                theme=None,
            )
            st.caption(
                f"Check: softmax(q·kᵀ/√{source.queries.shape[1]}) from these vectors reproduces the "
                f"model's attention of this head to within {source.reproduction_error():.1e}."
            )
            if method == "tsne":
                st.caption("t-SNE distances are not to scale; only neighbourhoods mean something.")
