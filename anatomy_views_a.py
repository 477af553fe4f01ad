"""Streamlit glue of the Anatomy views 1–4: patches as words, filters, position embeddings, attention distance."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import streamlit as st
from PIL import Image
from streamlit.delta_generator import DeltaGenerator

from pages.views import ui
from vitviz.figures.anatomy import (
    attention_distance_figure,
    encoder_input_figure,
    explained_variance_figure,
    filter_components_figure,
    similarity_grid_figure,
    similarity_map_figure,
    token_sequence_figure,
)
from vitviz.figures.common import patch_grid_figure, selected_patch
from vitviz.images import (
    BUILTIN_PHOTOS,
    UPLOAD_EXTENSIONS,
    ImageDecodeError,
    builtin_photo,
    decode_image,
    image_digest,
)
from vitviz.maths.distance import AttentionDistances, attention_distances_over_images
from vitviz.maths.filters import (
    FilterComponents,
    FiltersNotApplicableError,
    component_tiles,
    filter_components,
    patch_embedding_filters,
)
from vitviz.maths.posembed import (
    NoPositionEmbeddingError,
    grid_position_embedding,
    local_fraction,
    mosaic_step,
    position_similarity,
    similarity_mosaic,
)
from vitviz.maths.tokens_as_words import TokenTrace, cut_into_patches, trace_tokens
from vitviz.models import LoadedModel, describe_weights, untrained_twin
from vitviz.preprocess import explanation_image

__all__ = [
    "TAB_LABELS",
    "cached_twin",
    "render_attention_distance",
    "render_filters",
    "render_patches",
    "render_position_embeddings",
]

TAB_LABELS: tuple[str, ...] = ("Patches as words", "Filters", "Position embeddings", "Attention distance")

POSITION = "anatomy_posembed_position"  # (row, col) of the position shown large
SEEN_POSITIONS = "anatomy_posembed_seen"  # last click seen per chart, so a rerun is not a new click
DISTANCE_RESULTS = "anatomy_distance_results"  # AttentionDistances per (model, images), newest last
GRID_CHART = "anatomy_posembed_grid"
MOSAIC_GAP = 1  # blank cells between the small maps of the position-similarity grid
MAX_KEPT_DISTANCES = 8
STRIP_PATCHES = 16  # patches shown in the token-sequence strip before the ellipsis
MAX_HEATMAP_TOKENS = 600  # rows of the encoder-input heatmap; longer sequences are cut, and say so


@st.cache_resource(show_spinner="Building the untrained twin…", max_entries=4)
def cached_twin(name: str, weights: str, device: str) -> LoadedModel:
    """The chosen model's architecture and input size with seeded random weights."""
    return untrained_twin(ui.cached_model(name, weights, device))


def _sides(loaded: LoadedModel, random_loaded: LoadedModel | None) -> list[tuple[LoadedModel, str, tuple]]:
    """The models to show: the chosen one, and its untrained twin if asked for.

    Each comes with a heading and a hashable cache key; the twin's key names what it is the twin
    of, so it never collides with `load_model(name, "random")` (built at the default size).
    """
    key = (loaded.facts.name, loaded.weights, str(loaded.device))
    sides = [(loaded, describe_weights(loaded.weights), key)]
    if random_loaded is not None:
        twin_key = (loaded.facts.name, f"untrained twin of {loaded.weights}", str(loaded.device))
        sides.append((random_loaded, "random (untrained twin)", twin_key))
    return sides


def _columns(count: int) -> Sequence[DeltaGenerator]:
    return st.columns(count) if count > 1 else [st.container()]


def _is_open(tab: DeltaGenerator) -> bool:
    """Whether a tab's content should run: lazy tabs say so; tabs without state always run."""
    return getattr(tab, "open", None) is not False


def _patch_label(loaded: LoadedModel) -> str:
    height, width = loaded.facts.patch_size or (0, 0)
    return f"{height}×{width}"


def _images_label(count: int) -> str:
    return "1 image" if count == 1 else f"{count} images"


# 1. Patches as words -------------------------------------------------------------------------


@st.cache_data(show_spinner="Cutting the image into tokens…", max_entries=16)
def _cached_trace(model_key: tuple, digest: str, _loaded: LoadedModel, _image: Image.Image) -> TokenTrace:
    return trace_tokens(_loaded, _image)


def _strip_indices(num_patches: int) -> list[int]:
    shown = list(range(min(STRIP_PATCHES, num_patches)))
    if num_patches > STRIP_PATCHES:
        shown.append(num_patches - 1)
    return shown


def render_patches(
    tab: DeltaGenerator, loaded: LoadedModel, random_loaded: LoadedModel | None, picked_image: ui.ImageChoice
) -> None:
    """View 1: the image cut into patches, flattened, projected, prefixed and position-embedded."""
    if not _is_open(tab):
        return
    with tab:
        facts = loaded.facts
        if facts.family == "cnn":
            st.info(
                f"Does not apply: {facts.name} is a CNN. It never cuts the image into patches or tokens; "
                "its convolutions slide over the pixels. Pick a ViT or a hybrid to see patches as words."
            )
            return
        sides = _sides(loaded, random_loaded)
        traces = [
            _cached_trace(key, picked_image.digest, model, picked_image.image) for model, _, key in sides
        ]
        trace = traces[0]
        rows, cols = facts.grid_size
        pixels = explanation_image(picked_image.image, facts)
        grid_column, steps_column = st.columns([2, 3])
        with grid_column:
            st.plotly_chart(
                patch_grid_figure(
                    pixels,
                    facts.grid_size,
                    facts.stride_px,
                    f"{picked_image.name}: {rows}×{cols} tokens, one per {facts.stride_px[0]} px",
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
        st.plotly_chart(
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
        if random_loaded is not None:
            st.caption("The shapes are the same with random weights; only the numbers in the tokens differ.")
        for index, (column, (_, heading, _), side_trace) in enumerate(
            zip(_columns(len(sides)), sides, traces, strict=True)
        ):
            with column:
                if side_trace.encoder_input is None:
                    st.info(f"{facts.name} adds its prefix tokens and positions in a way vitviz cannot read.")
                    continue
                count, dim = side_trace.encoder_input.shape
                shown = "" if count <= MAX_HEATMAP_TOKENS else f", first {MAX_HEATMAP_TOKENS} rows"
                st.plotly_chart(
                    encoder_input_figure(
                        side_trace.encoder_input[:MAX_HEATMAP_TOKENS],
                        side_trace.prefix_names,
                        f"Encoder input ({count}, {dim}){shown} · {heading}",
                    ),
                    key=f"anatomy_encoder_input_{index}",
                )


# 2. Filters ---------------------------------------------------------------------------------


@st.cache_data(show_spinner="PCA of the patch-embedding filters…", max_entries=16)
def _cached_components(model_key: tuple, _loaded: LoadedModel) -> FilterComponents:
    return filter_components(patch_embedding_filters(_loaded.model, _loaded.facts))


def render_filters(tab: DeltaGenerator, loaded: LoadedModel, random_loaded: LoadedModel | None) -> None:
    """View 2: principal components of the linear patch-embedding filters (paper Fig. 7 left)."""
    if not _is_open(tab):
        return
    with tab:
        sides = _sides(loaded, random_loaded)
        try:  # the twin has the same architecture: one message covers both
            results = [_cached_components(key, model) for model, _, key in sides]
        except FiltersNotApplicableError as error:
            st.info(f"Does not apply: {error}")
            return
        for index, (column, (_, heading, _), components) in enumerate(
            zip(_columns(len(sides)), sides, results, strict=True)
        ):
            with column:
                st.plotly_chart(
                    filter_components_figure(
                        component_tiles(components.components),
                        components.explained_variance_ratio,
                        f"First {components.num_components} PCs of the filters · {heading}",
                    ),
                    key=f"anatomy_filters_{index}",
                    theme=None,
                )
                total = components.explained_variance_ratio.sum()
                st.plotly_chart(
                    explained_variance_figure(
                        components.explained_variance_ratio,
                        f"Explained variance: {total:.1%} in all · {heading}",
                    ),
                    key=f"anatomy_variance_{index}",
                )
        st.caption(
            f"Each of the {loaded.facts.embed_dim} filters of the patch embedding is a "
            f"{_patch_label(loaded)} RGB picture; PCA (scikit-learn) finds the directions they vary along. "
            "Tiles are titled with the component's number and its share of the variance; each is stretched "
            "to full contrast on its own, and a component's sign is arbitrary. The paper found smooth, "
            "low-frequency basis functions; untrained filters give noise."
        )


# 3. Position embeddings ---------------------------------------------------------------------


@st.cache_data(show_spinner="Comparing position embeddings…", max_entries=16)
def _cached_similarity(model_key: tuple, _loaded: LoadedModel) -> np.ndarray:
    return position_similarity(grid_position_embedding(_loaded.model, _loaded.facts))


def _chosen_position(grid_size: tuple[int, int], chart_keys: Sequence[str]) -> tuple[int, int]:
    """The position clicked last on any of the grids; the centre before the first click."""
    if SEEN_POSITIONS not in st.session_state:
        st.session_state[SEEN_POSITIONS] = {}
    seen = st.session_state[SEEN_POSITIONS]
    for key in chart_keys:
        clicked = selected_patch(st.session_state.get(key), grid_size)
        if clicked is not None and seen.get(key) != clicked:
            seen[key] = clicked
            st.session_state[POSITION] = clicked
    position = st.session_state.get(POSITION)
    rows, cols = grid_size
    if position is None or not (position[0] < rows and position[1] < cols):  # another model's grid
        position = st.session_state[POSITION] = (rows // 2, cols // 2)
    return position


def render_position_embeddings(
    tab: DeltaGenerator, loaded: LoadedModel, random_loaded: LoadedModel | None
) -> None:
    """View 3: cosine similarity of the position embeddings as a grid of grids, one position large."""
    if not _is_open(tab):
        return
    with tab:
        sides = _sides(loaded, random_loaded)
        similarities = []
        for model, _, key in sides:
            try:
                similarities.append(_cached_similarity(key, model))
            except NoPositionEmbeddingError as error:
                st.info(f"Does not apply: {error}")
                return
        grid_size = loaded.facts.grid_size
        rows, cols = grid_size
        chart_keys = [f"{GRID_CHART}_{index}" for index in range(len(sides))]
        position = _chosen_position(grid_size, chart_keys)
        step = mosaic_step(grid_size)
        single = len(sides) == 1
        columns = st.columns([3, 2]) if single else st.columns(2)
        for index, ((_, heading, _), similarity) in enumerate(zip(sides, similarities, strict=True)):
            with columns[0] if single else columns[index]:
                st.plotly_chart(
                    similarity_grid_figure(
                        similarity_mosaic(similarity, grid_size, MOSAIC_GAP, step),
                        grid_size,
                        MOSAIC_GAP,
                        f"Position similarity · {heading}",
                        selected=position,
                        step=step,
                    ),
                    key=chart_keys[index],
                    on_select="rerun",
                    selection_mode="points",
                    theme=None,
                )
            with columns[1] if single else columns[index]:
                row, col = position
                st.plotly_chart(
                    similarity_map_figure(
                        similarity.reshape(rows, cols, rows, cols)[row, col],
                        position,
                        f"Position ({row}, {col}) · {heading}",
                    ),
                    key=f"anatomy_posembed_map_{index}",
                    theme=None,
                )
                near, close = (
                    local_fraction(similarity, grid_size, 1),
                    local_fraction(similarity, grid_size, 2),
                )
                others = max(1, rows * cols - 1)
                st.caption(
                    f"{heading}: the most similar other position is a direct neighbour for {near:.0%} of "
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
            image = decode_image(upload.getvalue())
        except ImageDecodeError as error:
            problems.append(f"{upload.name}: {error}")
            continue
        names.append(f"upload:{image_digest(image)}")
        loaders.append(lambda image=image: image)
    return names, loaders, problems


def _distances(
    model: LoadedModel, model_key: tuple, image_keys: list[str], loaders: list, heading: str
) -> AttentionDistances:
    """One model's distances over the images: from this session's store, or computed with a progress bar."""
    store: dict = st.session_state.setdefault(DISTANCE_RESULTS, {})
    key = (*model_key, tuple(image_keys))
    if key in store:
        store[key] = store.pop(key)  # newest last
        return store[key]
    bar = st.progress(0.0, text=f"Mean attention distance · {heading}: loading {len(loaders)} images…")
    images = [load() for load in loaders]

    def report(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Mean attention distance · {heading}: layer pass {done} of {total}")

    result = attention_distances_over_images(model, images, progress=report)
    bar.empty()
    store[key] = result
    while len(store) > MAX_KEPT_DISTANCES:
        store.pop(next(iter(store)))
    return result


def render_attention_distance(
    tab: DeltaGenerator, loaded: LoadedModel, random_loaded: LoadedModel | None
) -> None:
    """View 4: mean attention distance of every head against depth (paper Fig. 7 right)."""
    if not _is_open(tab):
        return
    with tab:
        facts = loaded.facts
        if facts.family == "cnn":
            st.info(
                f"Does not apply: {facts.name} is a CNN. It has no attention heads; how far it looks is set "
                "by its kernel sizes and depth (its receptive field), not learned per head."
            )
            return
        picker, uploader = st.columns(2)
        photos = picker.multiselect(
            "Built-in photos",
            list(BUILTIN_PHOTOS),
            default=list(BUILTIN_PHOTOS),
            key="anatomy_distance_photos",
        )
        uploads = uploader.file_uploader(
            "Add your own images",
            type=list(UPLOAD_EXTENSIONS),
            accept_multiple_files=True,
            key="anatomy_distance_uploads",
        )
        image_keys, loaders, problems = _distance_images(photos, uploads)
        for problem in problems:
            st.warning(f"Left out {problem}")
        if not loaders:
            st.info("Pick at least one built-in photo or upload an image to measure attention distance.")
            return
        sides = _sides(loaded, random_loaded)
        results = [_distances(model, key, image_keys, loaders, heading) for model, heading, key in sides]
        top = max(max(float(result.mean.max()), result.uniform_reference) for result in results) * 1.12
        for index, (column, (_, heading, _), result) in enumerate(
            zip(_columns(len(sides)), sides, results, strict=True)
        ):
            with column:
                st.plotly_chart(
                    attention_distance_figure(
                        result.mean,
                        result.uniform_reference,
                        f"Mean attention distance, {_images_label(result.num_images)} · {heading}",
                        y_max=top,
                    ),
                    key=f"anatomy_distance_{index}",
                )
                first, last = result.mean[0], result.mean[-1]
                st.caption(
                    f"{heading}: layer 0 heads look {first.min():.0f}–{first.max():.0f} px away, the last "
                    f"layer's {last.min():.0f}–{last.max():.0f} px (uniform attention: "
                    f"{result.uniform_reference:.0f} px; input {result.input_size[0]}×{result.input_size[1]} px)."
                )
        height, width = facts.input_size
        st.caption(
            "Per head and layer: Σⱼ Aᵢⱼ·‖gᵢ − gⱼ‖ in pixels of the model's input, averaged over query patches "
            f"and images; prefix tokens left out as queries and keys, no renormalisation (the paper's "
            f"appendix D.7). Images are resized whole to {height}×{width} px."
        )
