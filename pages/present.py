"""Present: the ViT paper told as a story, one large slide at a time, for an audience."""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from pages.views import ui
from vitviz.device import default_device
from vitviz.figures.animation import attention_animation_figure, attention_animation_gif
from vitviz.figures.common import (
    attention_overlay_figure,
    patch_grid_figure,
    predictions_figure,
    selected_patch,
)
from vitviz.figures.slides import embedding_figure, image_figure, similarity_figure, style_for_slides
from vitviz.figures.story import SLIDE_KEYS, story_slides
from vitviz.images import (
    BUILTIN_PHOTOS,
    UPLOAD_EXTENSIONS,
    ImageDecodeError,
    builtin_photo,
    decode_image,
    image_digest,
)
from vitviz.maths.attention import class_attention_map
from vitviz.maths.tokens import token_stages
from vitviz.models import SUGGESTED_MODELS, WEIGHTS_SOURCES, LoadedModel, ModelError, describe_weights
from vitviz.share import parse_view_state
from vitviz.weights import WeightsError

SLIDE = "present_slide"  # index of the slide on screen
DARK = "present_dark"  # theme toggle
FULLSCREEN = "present_fullscreen"  # presentation-mode toggle, mirrored by ?present=1
IMAGE = "present_image"  # the ImageChoice shown; kept while the picker (slide 1 only) is off screen
UPLOAD_ID = "present_upload_id"  # file id of the decoded upload, so it is decoded once
MODEL = "present_model"  # (timm name, weights) of the transformer the story follows
POSITION = "present_position"  # grid position of the position-embedding slide
SOURCE = "present_source"  # picker values kept while slide 1 is off screen
PHOTO = "present_photo"
CNN_NAME = "tf_efficientnet_lite0"  # the bundled CNN of the last slide
DEFAULT_MODEL = ("vit_small_patch14_dinov2", "bundled")
BUILT_IN, UPLOAD = "Built-in photo", "Upload"
# The transformers a presenter may pick: the suggested models minus the CNNs.
STORY_MODELS = [name for name, text in SUGGESTED_MODELS if "CNN" not in text]
FIGURE_HEIGHT = 640
DISPLAY_PX = 1024  # longest side of the photo drawn on the first slide

device = default_device()


def _seed_from_link() -> list[str]:
    """At a session's first run, takes slide, theme, image and model from the URL."""
    params = ui.url_params_once("present")
    if params is None:
        return []
    state, notes = parse_view_state(params, ui.view_limits(DEFAULT_MODEL[0]))
    if state.model in STORY_MODELS:
        st.session_state[MODEL] = (state.model, state.weights)
    elif "model" in params and state.model != DEFAULT_MODEL[0]:
        notes.append(f"model={state.model!r} (the story offers {', '.join(STORY_MODELS)})")
    if state.image is not None:
        st.session_state[PHOTO] = state.image
    slide = params.get("slide", "1")
    if slide.isdigit() and 1 <= int(slide) <= len(SLIDE_KEYS):
        st.session_state[SLIDE] = int(slide) - 1
    else:
        notes.append(f"slide={slide!r} (slides are 1–{len(SLIDE_KEYS)})")
    st.session_state[DARK] = params.get("theme") == "dark"
    st.session_state[FULLSCREEN] = params.get("present") == "1"
    return notes


link_notes = _seed_from_link()
for key, default in (
    (SLIDE, 0),
    (MODEL, DEFAULT_MODEL),
    (SOURCE, BUILT_IN),
    (PHOTO, next(iter(BUILTIN_PHOTOS))),
):
    if key not in st.session_state:
        st.session_state[key] = default
if IMAGE not in st.session_state or (
    st.session_state[SOURCE] == BUILT_IN and st.session_state[IMAGE].name != st.session_state[PHOTO]
):
    photo = builtin_photo(st.session_state[PHOTO])
    st.session_state[IMAGE] = ui.ImageChoice(photo, st.session_state[PHOTO], image_digest(photo))

dark = st.session_state.get(DARK, False)
fullscreen = st.session_state.get(FULLSCREEN, False)


def _page_css(dark: bool, fullscreen: bool) -> str:
    """Large type for a room, the theme's colours, and in presentation mode no sidebar or toolbar."""
    background, text, muted = ("#0e1117", "#f3f4f8", "#c4c8d4") if dark else ("#ffffff", "#1b1f2a", "#454b5a")
    main = '[data-testid="stMain"]'
    css = f"""
    .stApp, [data-testid="stAppViewContainer"], [data-testid="stHeader"] {{
        background-color: {background}; color: {text};
    }}
    {main} h1, {main} h2, {main} h3, {main} p, {main} li, {main} label, {main} td, {main} th {{
        color: {text};
    }}
    {main} h1.vv-title {{ font-size: 2.7rem; padding: 0.2rem 0 0.4rem 0; }}
    {main} .vv-caption {{ font-size: 1.45rem; line-height: 1.45; color: {muted}; margin-bottom: 0.6rem; }}
    {main} .vv-progress {{ font-size: 1.2rem; color: {muted}; min-width: 4rem; }}
    {main} .vv-source {{ font-size: 0.95rem; color: {muted}; margin-bottom: 0.4rem; }}
    {main} .vv-shapes td, {main} .vv-shapes th {{ font-size: 1.2rem; padding: 0.35rem 0.8rem; }}
    {main} .vv-shapes td:nth-child(2) {{ white-space: nowrap; }}
    {main} .vv-shapes td:nth-child(3) {{ font-size: 1rem; }}
    {main} button p {{ font-size: 1.1rem; }}
    """
    if dark:
        css += f"""
        {main} [data-testid^="stBaseButton"], {main} [data-baseweb="select"] > div,
        {main} [data-testid="stFileUploaderDropzone"], {main} [data-testid="stExpander"] details {{
            background-color: #262a36; color: {text}; border-color: #4a5062;
        }}
        [data-testid="stSidebar"] {{ background-color: #161a24; }}
        [data-testid="stSidebar"] span, [data-testid="stSidebar"] p {{ color: {text}; }}
        """
    if fullscreen:
        css += """
        [data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"],
        [data-testid="stExpandSidebarButton"], [data-testid="stHeader"], [data-testid="stToolbar"],
        [data-testid="stDecoration"] { display: none !important; }
        [data-testid="stMainBlockContainer"] { padding-top: 1.2rem; max-width: 100%; }
        """
    return f"<style>{css}</style>"


st.html(_page_css(dark, fullscreen))


def _step(delta: int) -> None:
    st.session_state[SLIDE] = min(max(0, st.session_state[SLIDE] + delta), len(SLIDE_KEYS) - 1)


def _toggle_fullscreen() -> None:
    # Runs before the app script, so app.py hides the navigation in this very run.
    if st.session_state[FULLSCREEN]:
        st.query_params["present"] = "1"
    elif "present" in st.query_params:
        del st.query_params["present"]


def _keep(widget_key: str, kept_key: str) -> None:
    st.session_state[kept_key] = st.session_state[widget_key]


index = st.session_state[SLIDE]
with st.container(horizontal=True, vertical_alignment="center", gap="medium", key="present_nav"):
    st.button("◀ Previous", key="present_previous", on_click=_step, args=(-1,), disabled=index == 0)
    st.button("Next ▶", key="present_next", on_click=_step, args=(1,), disabled=index == len(SLIDE_KEYS) - 1)
    progress = st.empty()
    st.toggle("Dark", key=DARK)
    st.toggle(
        "Presentation mode",
        key=FULLSCREEN,
        on_change=_toggle_fullscreen,
        help="Hides the sidebar and toolbar (URL ?present=1). Arrow keys ← → step.",
    )
ui.url_notes(link_notes)


def story_model() -> LoadedModel:
    """The transformer the story follows; the default one, with a message, when it cannot be used.

    Falling back (rather than stopping) keeps the model picker on the first slide reachable.
    """
    name, source = st.session_state[MODEL]
    try:
        loaded = ui.cached_model(name, source, device)
    except (ModelError, WeightsError) as error:
        problem = str(error)
    else:
        if loaded.facts.family != "cnn":
            return loaded
        problem = f"{name} is a CNN: the story follows a transformer."
    st.session_state[MODEL] = DEFAULT_MODEL
    st.error(f"{problem} Showing {DEFAULT_MODEL[0]} ({describe_weights(DEFAULT_MODEL[1])}) instead.")
    return ui.load_or_stop(ui.ModelChoice(*DEFAULT_MODEL, device))


loaded = story_model()
model_name, weights = st.session_state[MODEL]
facts = loaded.facts
picked = st.session_state[IMAGE]
# The CNN is loaded only for the last slide, so the first slide appears sooner.
cnn = ui.load_or_stop(ui.ModelChoice(CNN_NAME, "bundled", device)) if SLIDE_KEYS[index] == "compare" else None
slides = story_slides(
    facts, picked.name, picked.image.size, cnn.facts if cnn else None, trained=loaded.trained
)
slide = slides[index]
progress.markdown(
    f'<div class="vv-progress"><b>{index + 1} / {len(SLIDE_KEYS)}</b></div>', unsafe_allow_html=True
)
st.markdown(f'<h1 class="vv-title">{html.escape(slide.title)}</h1>', unsafe_allow_html=True)
st.markdown(f'<div class="vv-caption">{html.escape(slide.caption)}</div>', unsafe_allow_html=True)
st.markdown(
    f'<div class="vv-source">{model_name} · {describe_weights(weights)} · {html.escape(picked.name)}</div>',
    unsafe_allow_html=True,
)
ui.untrained_warning(loaded)

pixels = ui.cached_explanation_image(model_name, weights, device, picked.digest, picked.image)
rows, cols = facts.grid_size


def show(
    figure: go.Figure, key: str, view: str, array: np.ndarray | None = None, height: int = FIGURE_HEIGHT
) -> None:
    """Draws a figure large and themed; outside presentation mode, its downloads follow."""
    style_for_slides(figure, dark, height)
    st.plotly_chart(figure, key=key, theme=None, config={"displayModeBar": not fullscreen})
    if not fullscreen:
        ui.figure_downloads(figure, array, model_name, weights, picked.name, view, key=key)


def attention_record():
    try:
        return ui.cached_attention(model_name, weights, device, picked.digest, picked.image)
    except (ValueError, RuntimeError) as error:
        st.error(f"Could not capture attention of {model_name}: {error}")
        st.stop()


def image_controls() -> None:
    """The image (built-in or upload) and the transformer, on the first slide only."""
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
    upload = st.file_uploader("Upload an image", type=list(UPLOAD_EXTENSIONS), key="present_upload")
    if upload is not None and st.session_state.get(UPLOAD_ID) != upload.file_id:
        try:
            image = decode_image(upload.getvalue())
        except ImageDecodeError as error:
            st.error(f"{upload.name}: {error}")
            return
        st.session_state[UPLOAD_ID] = upload.file_id
        st.session_state[IMAGE] = ui.ImageChoice(image, upload.name, image_digest(image))
        st.rerun()  # the captions above already named the previous image
    if upload is None:
        st.caption(f"Showing {st.session_state[IMAGE].name} until an image is uploaded.")


def _keep_model() -> None:
    st.session_state[MODEL] = (
        st.session_state["present_model_widget"],
        st.session_state["present_weights_widget"],
    )


def model_controls() -> None:
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


if slide.key == "image":
    figure_column, controls_column = st.columns([3, 2], gap="large")
    with figure_column:
        height, width = picked.image.height, picked.image.width
        shown = picked.image.copy()
        shown.thumbnail((DISPLAY_PX, DISPLAY_PX))  # a phone photo would be megabytes of PNG per run
        show(
            image_figure(np.asarray(shown), f"{picked.name} ({width}×{height} px)"),
            "present_photo_chart",
            "photo",
        )
    with controls_column:
        image_controls()
        model_controls()

elif slide.key == "patches":
    figure = patch_grid_figure(
        pixels,
        facts.grid_size,
        facts.stride_px,
        f"{picked.name}: {rows}×{cols} patches of {facts.stride_px[0]} px",
    )
    show(figure, "present_patches_chart", "patch-grid")

elif slide.key == "tokens":
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
        position = st.session_state.get(POSITION) or (rows // 2, cols // 2)
        if not (position[0] < rows and position[1] < cols):
            position = (rows // 2, cols // 2)
        clicked = selected_patch(st.session_state.get("present_similarity_chart"), facts.grid_size)
        if clicked is not None:
            position = st.session_state[POSITION] = clicked
        try:
            similarity = ui.cached_position_similarity(model_name, weights, device, position)
        except ValueError as error:  # ModelError too: no learned absolute position embedding
            st.info(str(error))
        else:
            title = f"Similarity to position ({position[0]}, {position[1]}); click another"
            figure = similarity_figure(similarity, position, title)
            style_for_slides(figure, dark, FIGURE_HEIGHT)
            st.plotly_chart(
                figure,
                key="present_similarity_chart",
                on_select="rerun",
                selection_mode="points",
                theme=None,
                config={"displayModeBar": not fullscreen},
            )
            if not fullscreen:
                view = f"position-similarity-{position[0]}-{position[1]}"
                ui.figure_downloads(
                    figure, similarity, model_name, weights, picked.name, view, "present_similarity"
                )

elif slide.key == "attention":
    record = attention_record()
    maps = np.stack([class_attention_map(record, layer, None) for layer in range(record.num_layers)])
    source = "class token" if facts.num_prefix_tokens else "mean patch"
    figure = attention_animation_figure(
        pixels, maps, facts.stride_px, f"{picked.name}: attention from the {source}"
    )
    show(figure, "present_animation_chart", "attention-per-layer", maps, height=FIGURE_HEIGHT + 60)
    if not fullscreen:
        st.download_button(
            "GIF of the animation",
            data=lambda: attention_animation_gif(pixels, maps, facts.stride_px),
            file_name=ui.export_filename(model_name, weights, picked.name, "attention-per-layer", "gif"),
            mime="image/gif",
            key="present_gif",
            on_click="ignore",
            icon=":material/download:",
        )

elif slide.key == "rollout":
    relevance = ui.cached_rollout(
        model_name, weights, device, picked.digest, "mean", 0.0, 0, attention_record()
    )
    figure = attention_overlay_figure(
        pixels,
        relevance,
        facts.stride_px,
        f"{picked.name}: rollout over {facts.num_layers} layers",
        colorbar_title="relevance",
    )
    show(figure, "present_rollout_chart", "rollout-mean", relevance)

elif slide.key == "prediction":
    if facts.has_classifier:
        predictions = ui.cached_predictions(model_name, weights, device, picked.digest, picked.image, 5)
        untrained = "" if loaded.trained else " (untrained)"
        show(
            predictions_figure(predictions, f"{model_name}: top-5 predictions{untrained}"),
            "present_predictions_chart",
            "top5-predictions",
            height=420,
        )
    else:
        vector = ui.cached_output_embedding(model_name, weights, device, picked.digest, picked.image)
        figure = embedding_figure(
            vector, f"{model_name}: the {len(vector)} numbers it outputs for {picked.name}"
        )
        show(figure, "present_embedding_chart", "output-embedding", vector, height=460)

elif slide.key == "compare":
    vit_column, cnn_column = st.columns(2, gap="large")
    with vit_column:
        relevance = ui.cached_rollout(
            model_name, weights, device, picked.digest, "mean", 0.0, 0, attention_record()
        )
        figure = attention_overlay_figure(
            pixels, relevance, facts.stride_px, f"ViT · {model_name}: rollout", colorbar_title="relevance"
        )
        show(figure, "present_compare_vit_chart", "rollout-mean", relevance, height=560)
    with cnn_column:
        predictions = ui.cached_predictions(CNN_NAME, "bundled", device, picked.digest, picked.image, 5)
        show(
            predictions_figure(predictions, f"CNN · {CNN_NAME}: top-5 predictions"),
            "present_compare_cnn_chart",
            "cnn-top5-predictions",
            height=420,
        )
        if not facts.has_classifier:
            st.info(f"{model_name} has no classifier head (self-supervised), so only the CNN predicts.")

ui.sync_url(
    {
        "slide": str(index + 1),
        "theme": "dark" if dark else "light",
        "model": model_name,
        "weights": weights,
        **(
            {"image": picked.name}
            if picked.name in BUILTIN_PHOTOS and st.session_state[SOURCE] == BUILT_IN
            else {}
        ),
    }
)

# Arrow keys click Next / Previous. st.html runs in the page itself (no iframe); the handler
# replaces any earlier one; keys meant for text boxes, radios and sliders are left to them.
st.html(
    """
    <script>
    (() => {
      const keys = {ArrowRight: "present_next", PageDown: "present_next", ArrowLeft: "present_previous", PageUp: "present_previous"};
      if (window.__vitvizSlideKeys) document.removeEventListener("keydown", window.__vitvizSlideKeys);
      window.__vitvizSlideKeys = (event) => {
        if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) return;
        const target = event.target;
        const typing = target && (target.isContentEditable || ["TEXTAREA", "SELECT"].includes(target.tagName)
          || (target.tagName === "INPUT" && target.type !== "checkbox") || target.getAttribute("role") === "slider");
        if (typing) return;
        const key = keys[event.key];
        const buttons = key ? [...document.querySelectorAll(`.st-key-${key} button`)] : [];
        const button = buttons.find((candidate) => candidate.offsetParent !== null);
        if (button && !button.disabled) { event.preventDefault(); button.click(); }
      };
      document.addEventListener("keydown", window.__vitvizSlideKeys);
    })();
    </script>
    """,
    unsafe_allow_javascript=True,
)
