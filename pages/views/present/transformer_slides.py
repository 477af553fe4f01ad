"""Slides 1–6 of the story: one transformer, from the image going in to its prediction."""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from pages.views import ui
from pages.views.present.state import (
    BUILT_IN,
    DISPLAY_PX,
    FIGURE_HEIGHT,
    IMAGE,
    MODEL,
    PHOTO,
    POSITION,
    SOURCE,
    STORY_MODELS,
    UPLOAD,
    UPLOAD_ID,
)
from pages.views.present.story import Story
from vitviz.export import export_filename
from vitviz.figures.animation import attention_animation_figure, attention_animation_gif
from vitviz.figures.common import patch_grid_figure, photo_view_figure, predictions_figure, selected_patch
from vitviz.figures.slides import embedding_figure, similarity_figure, style_for_slides
from vitviz.figures.story import opening_layer
from vitviz.forward.tokens import token_stages
from vitviz.images import BUILTIN_PHOTOS
from vitviz.maths.attention import class_attention_map
from vitviz.maths.sinks import sink_sentence
from vitviz.models import WEIGHTS_SOURCES, describe_weights
from vitviz.preprocess import VIEW_LABELS, ViewMode
from vitviz.text import grid_size_text, patch_size_text, picture_size_text

__all__ = [
    "render_attention",
    "render_image",
    "render_patches",
    "render_prediction",
    "render_rollout",
    "render_tokens",
]

# 1. An image goes in: the photo, and the pickers of image and model ---------------------------


def _keep(widget_key: str, kept_key: str) -> None:
    st.session_state[kept_key] = st.session_state[widget_key]


def _image_controls() -> None:
    """The image (built-in or upload), kept in the session while this slide is off screen.

    ui.image_picker cannot serve here: it lives in the sidebar and returns the image from its
    widgets on every run, while this picker is drawn only on the first slide, after the title and
    caption that already named the image, so the choice must outlive its widgets.
    """
    st.session_state["present_source_widget"] = st.session_state[SOURCE]
    source = st.radio(
        "Image",
        [BUILT_IN, UPLOAD],
        horizontal=True,
        key="present_source_widget",
        on_change=_keep,
        args=("present_source_widget", SOURCE),
    )
    if source == BUILT_IN:
        st.session_state["present_photo_widget"] = st.session_state[PHOTO]
        st.selectbox(
            "Built-in photo",
            list(BUILTIN_PHOTOS),
            key="present_photo_widget",
            on_change=_keep,
            args=("present_photo_widget", PHOTO),
        )
        return
    upload = ui.image_uploader(st, "Upload an image", key="present_upload")
    if upload is not None and st.session_state.get(UPLOAD_ID) != upload.file_id:
        uploaded = ui.upload_choice(upload)
        if uploaded is None:
            return
        st.session_state[UPLOAD_ID] = upload.file_id
        st.session_state[IMAGE] = uploaded
        st.rerun()  # the captions above already named the previous image
    if upload is None:
        st.caption(f"Showing {st.session_state[IMAGE].name} until an image is uploaded.")


def _keep_model() -> None:
    st.session_state[MODEL] = (
        st.session_state["present_model_widget"],
        st.session_state["present_weights_widget"],
    )


def _model_controls() -> None:
    with st.expander("Model"):
        name, source = st.session_state[MODEL]
        st.session_state["present_model_widget"] = name
        st.session_state["present_weights_widget"] = source
        names = STORY_MODELS if name in STORY_MODELS else [name, *STORY_MODELS]
        st.selectbox("Transformer", names, key="present_model_widget", on_change=_keep_model)
        st.selectbox(
            "Weights",
            WEIGHTS_SOURCES,
            format_func=describe_weights,
            key="present_weights_widget",
            on_change=_keep_model,
        )


@st.cache_data(max_entries=16, show_spinner=False)
def _photo_with_view(
    name: str, weights: str, device: str, digest: str, view: ViewMode, title: str, _image: Image.Image
) -> tuple[go.Figure, str]:
    """The photo, at most DISPLAY_PX on its longest side, with the view's box; and the view's note."""
    seen = ui.cached_view(name, weights, device, digest, _image, view)
    # At most DISPLAY_PX: a phone photo would be megabytes of PNG per run.
    return photo_view_figure(seen.photo, [("", seen.box)], title, longest=DISPLAY_PX), seen.note


def render_image(story: Story) -> None:
    figure_column, controls_column = st.columns([3, 2], gap="large")
    with figure_column:
        image = story.picked.image
        title = (
            f"{story.picked.name}, {picture_size_text(width=image.width, height=image.height)}"
            f"<br><sup>box: what the model sees, {VIEW_LABELS[story.view]}</sup>"
        )
        figure, note = _photo_with_view(
            story.model_name, story.weights, story.device, story.picked.digest, story.view, title, image
        )
        # As tall as a wide photo needs, so it does not float in a square of empty space.
        height = min(FIGURE_HEIGHT, 140 + round(520 * image.height / image.width))
        story.show(figure, "present_photo_chart", f"photo-{story.view}", height=height, share=0.6)
        if note:
            st.caption(note)
    with controls_column:
        _image_controls()
        _model_controls()


# 2. Cut into patches ----------------------------------------------------------------------------


def render_patches(story: Story) -> None:
    facts = story.loaded.facts
    (rows, cols), (stride_rows, stride_cols) = facts.grid_size, facts.stride_px
    figure = patch_grid_figure(
        story.pixels,
        facts.grid_size,
        facts.stride_px,
        f"{story.picked.name}: {grid_size_text(rows=rows, columns=cols)} of "
        f"{patch_size_text(width=stride_cols, height=stride_rows)} patches",
    )
    story.show(figure, "present_patches_chart", "patch-grid")


# 3. Patches become tokens: the shapes, and the position embedding's similarity ------------------


def render_tokens(story: Story) -> None:
    facts = story.loaded.facts
    shapes_column, similarity_column = st.columns([1, 1], gap="large")
    with shapes_column:
        rows_html = "".join(
            f"<tr><td>{html.escape(stage.name)}</td><td><b>{' × '.join(map(str, stage.shape))}</b></td>"
            f"<td>{html.escape(stage.note)}</td></tr>"
            for stage in token_stages(facts)
        )
        st.markdown(
            f'<table class="vv-shapes"><tr><th>step</th><th>shape</th><th></th></tr>{rows_html}</table>',
            unsafe_allow_html=True,
        )
    with similarity_column:
        rows, cols = facts.grid_size
        position = st.session_state.get(POSITION) or (rows // 2, cols // 2)
        if not (position[0] < rows and position[1] < cols):
            position = (rows // 2, cols // 2)
        clicked = selected_patch(st.session_state.get("present_similarity_chart"), facts.grid_size)
        if clicked is not None:
            position = st.session_state[POSITION] = clicked
        try:
            similarity = ui.cached_position_similarity(
                story.model_name, story.weights, story.device, position
            )
        except ValueError as error:  # ModelError too: no learned absolute position embedding
            st.info(str(error))
            return
        title = (
            f"Similarity to position ({position[0]}, {position[1]})"
            f"<br><sup>{story.model_name} · {describe_weights(story.weights, story.model_name)}</sup>"
        )
        figure = similarity_figure(similarity, position, title)
        st.caption("Click another position to compare it with the rest.")
        style_for_slides(figure, story.dark, FIGURE_HEIGHT)
        ui.plotly_chart(
            figure,
            key="present_similarity_chart",
            on_select="rerun",
            selection_mode="points",
            theme=None,
            config={"displayModeBar": not story.fullscreen},
        )
        if not story.fullscreen:
            view = f"position-similarity-{position[0]}-{position[1]}"
            ui.figure_downloads(
                figure,
                similarity,
                story.model_name,
                story.weights,
                story.picked.name,
                view,
                "present_similarity",
            )


# 4. Attention, layer by layer -------------------------------------------------------------------


def render_attention(story: Story) -> None:
    facts = story.loaded.facts
    record = story.attention()
    maps = np.stack([class_attention_map(record, layer, None) for layer in range(record.num_layers)])
    source = "class token" if facts.num_prefix_tokens else "mean patch"
    opening = opening_layer(maps, story.sinks().sink_layers)
    figure = attention_animation_figure(
        story.pixels,
        maps,
        facts.stride_px,
        f"{story.picked.name}: attention from the {source}",
        active=opening.layer,
    )
    st.caption(opening.caption())
    story.show(figure, "present_animation_chart", "attention-per-layer", maps, height=FIGURE_HEIGHT)
    if not story.fullscreen:
        st.download_button(
            "GIF of the animation",
            data=lambda: attention_animation_gif(story.pixels, maps, facts.stride_px),
            file_name=export_filename(
                story.model_name, story.weights, story.picked.name, "attention-per-layer", "gif"
            ),
            mime="image/gif",
            key="present_gif",
            on_click="ignore",
            icon=":material/download:",
        )


# 5. Attention rollout ---------------------------------------------------------------------------


def render_rollout(story: Story) -> None:
    story.show_rollout(f"{story.picked.name}: attention rollout", "present_rollout_chart")
    report = story.sinks()
    sentence = sink_sentence(report)
    if sentence:
        marks = {0: "", 1: "✕ marks the sink. "}.get(len(report.patch_sinks), "✕ marks the sinks. ")
        st.caption(f"{marks}{sentence}")


# 6. The prediction (or, for a backbone without a head, the vector it outputs) -------------------


def render_prediction(story: Story) -> None:
    picked = story.picked
    if story.loaded.facts.has_classifier:
        predictions = story.predictions((story.model_name, story.weights), 5)
        untrained = "" if story.loaded.trained else " (untrained)"
        story.show(
            predictions_figure(predictions, f"{story.model_name}: top-5 predictions{untrained}"),
            "present_predictions_chart",
            f"top5-predictions-{story.view}",
            height=420,
        )
        return
    vector = ui.cached_output_embedding(
        story.model_name, story.weights, story.device, picked.digest, picked.image, story.view
    )
    norm = float(np.linalg.norm(vector))
    count = 12
    figure = embedding_figure(
        vector, f"{picked.name}: the {count} largest of its {len(vector)} output numbers", count=count
    )
    st.caption(
        f"The output vector has {len(vector)} numbers and length (norm) {norm:.1f}; the bars show the "
        f"{count} largest by size, each named by its dimension. The .npy download holds all of them."
    )
    story.show(figure, "present_embedding_chart", "output-embedding", vector, height=460)
