"""Streamlit glue of the Present page: the story's session state, its look for a room, one renderer per slide."""

from __future__ import annotations

import html
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image
from streamlit.delta_generator import DeltaGenerator

from pages.views import ui
from vitviz.availability import ModelPair, best_pair
from vitviz.device import default_device
from vitviz.export import export_filename
from vitviz.figures.animation import attention_animation_figure, attention_animation_gif
from vitviz.figures.common import (
    attention_overlay_figure,
    patch_grid_figure,
    photo_view_figure,
    predictions_figure,
    selected_patch,
)
from vitviz.figures.scales import colour_scale
from vitviz.figures.slides import embedding_figure, similarity_figure, style_for_slides
from vitviz.figures.story import SLIDE_KEYS, ComparedPair, Slide, SlideKey, opening_layer, story_slides
from vitviz.finetune.data import DataError
from vitviz.finetune.pair import HeldOutImage, held_out_images, read_pair
from vitviz.forward.tokens import token_stages
from vitviz.images import BUILTIN_PHOTOS, image_digest
from vitviz.maths.attention import AttentionRecord, class_attention_map
from vitviz.maths.sinks import SinkReport, detect_sinks, plan_rollout, rollout_statement, sink_sentence
from vitviz.methods import ExplanationResult, explanation_map, method_title
from vitviz.models import SUGGESTED_MODELS, WEIGHTS_SOURCES, LoadedModel, ModelError, describe_weights
from vitviz.predict import Prediction
from vitviz.preprocess import VIEW_LABELS, ViewMode
from vitviz.runs import RunError, run_folder_by_name, runs_root
from vitviz.share import parse_view_state
from vitviz.weights import WeightsError

__all__ = [
    "SLIDE_RENDERERS",
    "Story",
    "apply_style",
    "navigation",
    "render_slide",
    "seed_session",
    "share_and_listen",
    "slides",
    "story",
]

SLIDE = "present_slide"  # index of the slide on screen
DARK = "present_dark"  # theme toggle
FULLSCREEN = "present_fullscreen"  # presentation-mode toggle, mirrored by ?present=1
IMAGE = "present_image"  # the ImageChoice shown; kept while the picker (slide 1 only) is off screen
UPLOAD_ID = "present_upload_id"  # file id of the decoded upload, so it is decoded once
MODEL = "present_model"  # (timm name, weights) of the transformer the story follows
POSITION = "present_position"  # grid position of the position-embedding slide
SOURCE = "present_source"  # picker values kept while slide 1 is off screen
PHOTO = "present_photo"
VIEW = "present_view"  # the view picker (ui.view_picker), drawn on the slides that show the image
VIEW_CHOICE = "present_view_choice"  # the view, kept while its picker is off screen
# The views the story offers, as its first slide names the box. Not "aspect": the story's slides are
# drawn for a square grid.
STORY_VIEWS: tuple[ViewMode, ...] = ("crop", "whole")  # the views the story offers
PAIR_IMAGE = "present_pair_image"  # which held-out image of a trained pair's data the last slide shows
APP_RERUN = "present_app_rerun"  # set by a toggle whose change the whole app must see, not only the slide
CNN_NAME = "tf_efficientnet_lite0"  # the bundled CNN of the last slide, when no pair of classifiers loads
# The class-specific map of each side of a pair: Grad-CAM for a CNN, Chefer's relevance for a transformer.
CLASS_MAP_METHODS = {"cnn": "gradcam", "vit": "chefer", "hybrid": "chefer"}
VIEW_SLIDES: frozenset[SlideKey] = frozenset(SLIDE_KEYS) - {"tokens"}  # slides drawn from the view
DEFAULT_MODEL = ("vit_small_patch14_dinov2", "bundled")
BUILT_IN, UPLOAD = "Built-in photo", "Upload"
# The transformers a presenter may pick: the suggested models minus the CNNs.
STORY_MODELS = [name for name, text in SUGGESTED_MODELS if "CNN" not in text]
# Tall enough to read across a room, short enough that every slide fits a 1440×1000 screen unscrolled
# (the browser test measures it).
FIGURE_HEIGHT = 450
DISPLAY_PX = 1024  # longest side of the photo drawn on the first slide

# The page's look, all in one place. Theme colours arrive as CSS variables set on every run, so
# the rules themselves never change: large type for a room, the theme's colours, and in
# presentation mode no sidebar or toolbar.
COLOURS = {  # (background, text, muted) per theme, dark first
    True: ("#0e1117", "#f3f4f8", "#c4c8d4"),
    False: ("#ffffff", "#1b1f2a", "#454b5a"),
}
THEME_CSS = """
.stApp, [data-testid="stAppViewContainer"], [data-testid="stHeader"] {
    background-color: var(--vv-background); color: var(--vv-text);
}
[data-testid="stMain"] h1, [data-testid="stMain"] h2, [data-testid="stMain"] h3, [data-testid="stMain"] p,
[data-testid="stMain"] li, [data-testid="stMain"] label, [data-testid="stMain"] td, [data-testid="stMain"] th {
    color: var(--vv-text);
}
[data-testid="stMain"] h1.vv-title { font-size: 2.7rem; padding: 0.2rem 0 0.4rem 0; }
[data-testid="stMain"] .vv-caption {
    font-size: 1.45rem; line-height: 1.45; color: var(--vv-muted); margin-bottom: 0.6rem;
}
[data-testid="stMain"] .vv-progress { font-size: 1.2rem; color: var(--vv-muted); min-width: 4rem; }
[data-testid="stMain"] .st-key-present_source [data-testid="stCaptionContainer"] { opacity: 1; }
[data-testid="stMain"] .st-key-present_source p {
    font-size: 0.95rem; color: var(--vv-muted); margin-bottom: 0.4rem;
}
[data-testid="stMain"] .vv-shapes td, [data-testid="stMain"] .vv-shapes th {
    font-size: 1.2rem; padding: 0.35rem 0.8rem;
}
[data-testid="stMain"] .vv-shapes td:nth-child(2) { white-space: nowrap; }
[data-testid="stMain"] .vv-shapes td:nth-child(3) { font-size: 1rem; }
[data-testid="stMain"] button p { font-size: 1.1rem; }
[data-testid="stMain"] .st-key-present_view [data-testid="stRadio"] {
    display: flex; flex-direction: row; align-items: center; gap: 1rem;
}
"""
DARK_CSS = """
[data-testid="stMain"] [data-testid^="stBaseButton"], [data-testid="stMain"] [data-baseweb="select"] > div,
[data-testid="stMain"] [data-testid="stFileUploaderDropzone"], [data-testid="stMain"] [data-testid="stExpander"] details {
    background-color: #262a36; color: var(--vv-text); border-color: #4a5062;
}
[data-testid="stSidebar"] { background-color: #161a24; }
[data-testid="stSidebar"] span, [data-testid="stSidebar"] p { color: var(--vv-text); }
"""
FULLSCREEN_CSS = """
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"],
[data-testid="stExpandSidebarButton"], [data-testid="stHeader"], [data-testid="stToolbar"],
[data-testid="stDecoration"] { display: none !important; }
[data-testid="stMainBlockContainer"] { padding-top: 1.2rem; max-width: 100%; }
"""
# Arrow keys click Next / Previous. st.html runs in the page itself (no iframe); the handler
# replaces any earlier one; keys meant for text boxes, radios and sliders are left to them.
SLIDE_KEYS_JS = """
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
"""


# Session state --------------------------------------------------------------------------------


def seed_session() -> list[str]:
    """Takes slide, theme, image and model from the URL at a session's first run, then fills defaults.

    Returns:
        Notes naming what the link asked for that the story cannot show.
    """
    notes = _seed_from_link()
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
        st.session_state[IMAGE] = ui.photo_choice(st.session_state[PHOTO])
    return notes


def _seed_from_link() -> list[str]:
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
    if params.get("view") in STORY_VIEWS:
        st.session_state[VIEW_CHOICE] = params["view"]
    slide = params.get("slide", "1")
    # ASCII digits only, and few of them: "²" passes str.isdigit() and int() refuses it, and int()
    # refuses strings of over 4,300 digits.
    if slide.isascii() and slide.isdigit() and len(slide) <= 3 and 1 <= int(slide) <= len(SLIDE_KEYS):
        st.session_state[SLIDE] = int(slide) - 1
    else:
        shown = slide if len(slide) <= 20 else slide[:19] + "…"
        notes.append(f"slide={shown!r} (slides are 1–{len(SLIDE_KEYS)})")
    st.session_state[DARK] = params.get("theme") == "dark"
    st.session_state[FULLSCREEN] = params.get("present") == "1"
    return notes


def apply_style() -> None:
    """The page's CSS for the session's theme and mode."""
    dark, fullscreen = st.session_state.get(DARK, False), st.session_state.get(FULLSCREEN, False)
    background, text, muted = COLOURS[dark]
    variables = f":root {{ --vv-background: {background}; --vv-text: {text}; --vv-muted: {muted}; }}"
    css = variables + THEME_CSS + (DARK_CSS if dark else "") + (FULLSCREEN_CSS if fullscreen else "")
    st.html(f"<style>{css}</style>")


# Navigation -----------------------------------------------------------------------------------


def _step(delta: int) -> None:
    st.session_state[SLIDE] = min(max(0, st.session_state[SLIDE] + delta), len(SLIDE_KEYS) - 1)


def _toggle_fullscreen() -> None:
    # Runs before the rerun; app.py, which hides the navigation, runs only in a rerun of the app.
    if st.session_state[FULLSCREEN]:
        st.query_params["present"] = "1"
    elif "present" in st.query_params:
        del st.query_params["present"]
    st.session_state[APP_RERUN] = True


def navigation() -> DeltaGenerator:
    """Previous / Next, a place for the slide number, and the theme and presentation-mode toggles.

    Returns:
        The place where `render_slide` writes "n / 7".
    """
    index = st.session_state[SLIDE]
    with st.container(horizontal=True, vertical_alignment="center", gap="medium", key="present_nav"):
        st.button("◀ Previous", key="present_previous", on_click=_step, args=(-1,), disabled=index == 0)
        st.button(
            "Next ▶", key="present_next", on_click=_step, args=(1,), disabled=index == len(SLIDE_KEYS) - 1
        )
        progress = st.empty()
        st.toggle("Dark", key=DARK)
        st.toggle(
            "Presentation mode",
            key=FULLSCREEN,
            on_change=_toggle_fullscreen,
            help="Hides the sidebar and toolbar (URL ?present=1). Arrow keys ← → step.",
        )
    return progress


# The story on screen --------------------------------------------------------------------------


@dataclass(frozen=True)
class Story:
    """Everything a slide's renderer draws from: the model, the image, the theme, the slide itself."""

    loaded: LoadedModel  # the transformer the story follows
    model_name: str
    weights: str
    device: str
    picked: ui.ImageChoice
    view: ViewMode  # the one view of the image every prediction and map is computed on
    pixels: np.ndarray  # the view's pixels: the picked image as the model sees it
    index: int  # of the slide on screen
    slide: Slide
    dark: bool
    fullscreen: bool
    pair: ModelPair | None = None  # the last slide's classifiers; None: the story's model and a CNN

    def show(
        self,
        figure: go.Figure,
        key: str,
        view: str,
        array: np.ndarray | None = None,
        height: int = FIGURE_HEIGHT,
        model: tuple[str, str] | None = None,
    ) -> None:
        """Draws a figure large and themed; outside presentation mode, its downloads follow.

        The title gains a line naming the model and weights that made the figure (the story's
        transformer unless `model` names another), so an exported figure still says them.
        """
        name, weights = model or (self.model_name, self.weights)
        title = figure.layout.title.text or ""
        source = describe_weights(weights, name)  # a fine-tune's description names its run already
        made_by = source if name in source else f"{name} · {source}"
        # Wrapped: a fine-tune's long run name would run past a half-width slide's figure.
        figure.update_layout(title_text=f"{title}<br><sup>{'<br>'.join(textwrap.wrap(made_by, 48))}</sup>")
        style_for_slides(figure, self.dark, height)
        figure.update_layout(margin={"t": 30 + 30 * (figure.layout.title.text.count("<br>") + 1)})
        ui.plotly_chart(figure, key=key, theme=None, config={"displayModeBar": not self.fullscreen})
        if not self.fullscreen:
            ui.figure_downloads(figure, array, name, weights, self.picked.name, view, key=key)

    def attention(self) -> AttentionRecord:
        """Every layer's attention on the image; a failure stops the slide with one line."""
        try:
            return ui.cached_attention(
                self.model_name,
                self.weights,
                self.device,
                self.picked.digest,
                self.picked.image,
                view=self.view,
            )
        except (ValueError, RuntimeError) as error:
            st.error(f"Could not capture attention of {self.model_name}: {error}")
            st.stop()
            raise  # unreachable: st.stop() raises

    def sinks(self) -> SinkReport:
        """The attention sinks of the image's record."""
        return detect_sinks(self.attention())

    def show_rollout(self, title: str, key: str, height: int = FIGURE_HEIGHT) -> str:
        """Sink-aware mean-of-heads rollout over the image, as the story shows it.

        Returns:
            The rollout statement: which layers were multiplied and which sinks were left out.
        """
        report = self.sinks()
        relevance = ui.cached_rollout(
            self.model_name,
            self.weights,
            self.device,
            self.picked.digest,
            "mean",
            0.0,
            0,
            self.attention(),
            view=self.view,
        )  # rollout_relevance's default: sinks excluded
        statement = rollout_statement(plan_rollout(report, 0, "exclude"))
        figure = attention_overlay_figure(
            self.pixels,
            relevance,
            self.loaded.facts.stride_px,
            # Wrapped: one line of it would run past a half-width slide's figure.
            f"{title}<br><sup>{'<br>'.join(textwrap.wrap(statement, 75))}</sup>",
            scale=colour_scale(relevance, "relevance"),
            sinks=[sink.position for sink in report.patch_sinks if sink.position is not None],
        )
        self.show(figure, key, f"rollout-mean-{self.view}", relevance, height=height)
        return statement

    def predictions(self, model: tuple[str, str], topk: int) -> list[Prediction]:
        """A model's top-k on the story's view of the image."""
        name, weights = model
        picked = self.picked
        return ui.cached_predictions(name, weights, self.device, picked.digest, picked.image, topk, self.view)


def _story_model(device: str) -> LoadedModel:
    """The transformer the story follows; the default one, with a message, when it cannot be used.

    Falling back (rather than stopping) keeps the model picker on the first slide reachable.
    """
    name, source = st.session_state[MODEL]
    try:
        loaded = ui.cached_model(name, source, device)
    except (ModelError, WeightsError) as error:
        problem = ui.load_problem(error)
    else:
        if loaded.facts.global_attention:
            return loaded
        problem = f"{name} is a {loaded.facts.family_words}: the story follows a ViT with global attention."
    st.session_state[MODEL] = DEFAULT_MODEL
    st.error(f"{problem} Showing {DEFAULT_MODEL[0]} ({describe_weights(DEFAULT_MODEL[1])}) instead.")
    return ui.load_or_stop(ui.ModelChoice(*DEFAULT_MODEL, device))


@st.cache_data(ttl=30, show_spinner=False)
def _compared_pair(runs_folder: str) -> ModelPair:
    """The most like-for-like ViT/CNN pair that loads here (vitviz.availability.best_pair).

    Keyed by the runs folder, so a server pointed at another one never shows this one's pair.
    """
    return best_pair(runs_folder)


def _story_view() -> ViewMode:
    """The view the story is drawn on: the picker's value while it is on screen, else the one kept."""
    if VIEW in st.session_state:  # the picker's value, which the visitor may just have changed
        st.session_state[VIEW_CHOICE] = st.session_state[VIEW]
    view = st.session_state.get(VIEW_CHOICE, "crop")
    view = view if view in STORY_VIEWS else "crop"
    st.session_state[VIEW] = view  # the picker, drawn after the story is made, opens on it
    return view


def story() -> Story:
    """The model, image, view and slide on screen; the models of the last slide load only when shown."""
    device = default_device()
    loaded = _story_model(device)
    model_name, weights = st.session_state[MODEL]
    picked = st.session_state[IMAGE]
    index = st.session_state[SLIDE]
    view = _story_view()
    cnn, pair, compared = None, None, None
    if SLIDE_KEYS[index] == "compare":  # loaded only here, so the first slides appear sooner
        pair = _compared_pair(str(runs_root()))
        try:
            if pair.kind != "bundled":
                # A fine-tune is named by its run's name, as pages and links name it.
                compared = ComparedPair(pair.vit[0], pair.cnn[0], _trained_clause(pair))
        except RunError:  # the pair was deleted since it was looked up
            pass
        if compared is None:  # no two classifiers of the same classes load here
            pair = None
            cnn = ui.load_or_stop(ui.ModelChoice(CNN_NAME, "bundled", device))
        else:  # a pair trained on its own data is shown an image of it, held out of both trainings
            picked = _held_out_choice(pair) or picked
    slides = story_slides(
        loaded.facts,
        picked.name,
        picked.image.size,
        cnn.facts if cnn else None,
        trained=loaded.trained,
        pair=compared,
    )
    return Story(
        picked=picked,
        view=view,
        pixels=ui.cached_view(model_name, weights, device, picked.digest, picked.image, view).pixels,
        loaded=loaded,
        model_name=model_name,
        weights=weights,
        device=device,
        index=index,
        slide=slides[index],
        dark=st.session_state.get(DARK, False),
        fullscreen=st.session_state.get(FULLSCREEN, False),
        pair=pair,
    )


@st.cache_data(show_spinner=False, max_entries=4)
def _cached_held_out(run: str) -> list[HeldOutImage]:
    """One held-out image per class of the pair the run belongs to (read once per pair)."""
    return held_out_images(read_pair(run_folder_by_name(run)))


def _held_out_choice(pair: ModelPair) -> ui.ImageChoice | None:
    """The held-out image of a trained pair's data the last slide shows; None for ImageNet classifiers.

    A trained pair knows only its own classes: a photo would make each pick one of them regardless.
    """
    if pair.kind != "trained":
        return None
    try:
        images = _cached_held_out(pair.vit[0])
    except (RunError, DataError):
        return None
    if not images:
        return None
    chosen = images[st.session_state.get(PAIR_IMAGE, 0) % len(images)]
    return ui.ImageChoice(chosen.image, chosen.name, image_digest(chosen.image))


def _held_out_picker(pair: ModelPair) -> None:
    """Which held-out image the slide shows: one per class of the pair's data."""
    if pair.kind != "trained":
        return
    try:
        images = _cached_held_out(pair.vit[0])
    except (RunError, DataError):
        return
    if len(images) > 1:
        st.selectbox(
            "Held-out image",
            range(len(images)),
            format_func=lambda index: f"a “{images[index].label}” ({images[index].key})",
            key=PAIR_IMAGE,
            help=f"One image of each class of {images[0].data}, held out of both models' training.",
        )


def _trained_clause(pair: ModelPair) -> str:
    """What both classifiers of `pair` were trained on, as the last slide's caption says it."""
    if pair.kind == "paper":
        return "from the ViT paper's comparison, both trained on ImageNet-1k (1,000 classes)"
    trained = read_pair(run_folder_by_name(pair.vit[0]))
    return (
        f"fine-tuned alike on {trained.data} ({len(trained.labels)} classes) with the same images, split and "
        "settings"
    )


def render_slide(story: Story, progress: DeltaGenerator) -> None:
    """The slide number, title, caption and model line, then the slide's own figures."""
    progress.markdown(
        f'<div class="vv-progress"><b>{story.index + 1} / {len(SLIDE_KEYS)}</b></div>', unsafe_allow_html=True
    )
    st.markdown(f'<h1 class="vv-title">{html.escape(story.slide.title)}</h1>', unsafe_allow_html=True)
    st.markdown(f'<div class="vv-caption">{html.escape(story.slide.caption)}</div>', unsafe_allow_html=True)
    with st.container(key="present_source"):
        if story.pair is None:
            st.caption(f"{ui.model_caption(story.loaded, story.weights)} · {story.picked.name}")
        else:
            names = " and ".join(model for model, _ in (story.pair.vit, story.pair.cnn))
            st.caption(f"{names} · {story.picked.name}")
    if story.slide.key in VIEW_SLIDES:
        ui.view_picker(VIEW, horizontal=True)
    if story.pair is None:
        ui.untrained_warning(story.loaded)
    SLIDE_RENDERERS[story.slide.key](story)


@st.fragment
def slides() -> None:
    """The slide with its navigation: a step (Next, Back, a toggle, a picker) reruns only this part.

    A change the rest of the app must see (presentation mode hides app.py's navigation) reruns the
    whole app.
    """
    if st.session_state.pop(APP_RERUN, False):
        st.rerun()
    apply_style()
    progress = navigation()
    shown = story()
    render_slide(shown, progress)
    share_and_listen(shown)


def share_and_listen(story: Story) -> None:
    """Writes the slide, theme, model and photo into the URL, and lets the arrow keys step."""
    built_in = story.picked.name in BUILTIN_PHOTOS and st.session_state[SOURCE] == BUILT_IN
    ui.sync_url(
        {
            "slide": str(story.index + 1),
            "theme": "dark" if story.dark else "light",
            "model": story.model_name,
            "weights": story.weights,
            "view": story.view,
            **({"image": story.picked.name} if built_in else {}),
        }
    )
    st.html(SLIDE_KEYS_JS, unsafe_allow_javascript=True)


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
            f"{story.picked.name} ({image.width}×{image.height} px)"
            f"<br><sup>box: what the model sees, {VIEW_LABELS[story.view]}</sup>"
        )
        figure, note = _photo_with_view(
            story.model_name, story.weights, story.device, story.picked.digest, story.view, title, image
        )
        # As tall as a wide photo needs, so it does not float in a square of empty space.
        height = min(FIGURE_HEIGHT, 140 + round(520 * image.height / image.width))
        story.show(figure, "present_photo_chart", f"photo-{story.view}", height=height)
        if note:
            st.caption(note)
    with controls_column:
        _image_controls()
        _model_controls()


# 2. Cut into patches ----------------------------------------------------------------------------


def render_patches(story: Story) -> None:
    facts = story.loaded.facts
    rows, cols = facts.grid_size
    figure = patch_grid_figure(
        story.pixels,
        facts.grid_size,
        facts.stride_px,
        f"{story.picked.name}: {rows}×{cols} patches of {facts.stride_px[0]} px",
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


# 7. ViT vs CNN ----------------------------------------------------------------------------------


def render_compare(story: Story) -> None:
    if story.pair is None:
        _story_model_beside_a_cnn(story)
    else:
        _pair_side_by_side(story, story.pair)


def _story_model_beside_a_cnn(story: Story) -> None:
    """No two classifiers of the same classes load here: the story's transformer beside the bundled CNN."""
    vit_column, cnn_column = st.columns(2, gap="large")
    with vit_column:
        story.show_rollout(f"ViT · {story.model_name}: rollout", "present_compare_vit_chart", height=560)
    with cnn_column:
        story.show(
            predictions_figure(
                story.predictions((CNN_NAME, "bundled"), 5), f"CNN · {CNN_NAME}: top-5 predictions"
            ),
            "present_compare_cnn_chart",
            f"cnn-top5-predictions-{story.view}",
            height=420,
            model=(CNN_NAME, "bundled"),
        )
        if not story.loaded.facts.has_classifier:
            st.info(
                f"{story.model_name} has no classifier head (self-supervised), so only the CNN predicts: "
                "this slide shows how each works on the image, not which classifies better."
            )
    st.info(
        "To compare a ViT and a CNN that classify the same classes, train a pair: Fine-tune → "
        "“Train a ViT/CNN pair”."
    )


@st.cache_data(show_spinner="Explaining…", max_entries=32)
def _cached_class_map(
    name: str,
    weights: str,
    device: str,
    digest: str,
    view: ViewMode,
    method: str,
    class_index: int,
    _image: Image.Image,
) -> ExplanationResult:
    """One model's map of one class on the view of the image."""
    seen = ui.cached_view(name, weights, device, digest, _image, view)
    return explanation_map(ui.cached_model(name, weights, device), seen, method, class_index)


def _probability(predictions: list[Prediction], index: int) -> float:
    return next(prediction.probability for prediction in predictions if prediction.index == index)


def _pair_side_by_side(story: Story, pair: ModelPair) -> None:
    """Both classifiers' top 5 on the view, then each one's map of the same class: the ViT's top class.

    A model that fails to load fails in its own column; the other still shows.
    """
    _held_out_picker(pair)
    sides = {"ViT": pair.vit, "CNN": pair.cnn}
    loaded: dict[str, LoadedModel] = {}
    problems: dict[str, str] = {}
    for side, (name, weights) in sides.items():
        try:
            loaded[side] = ui.cached_model(name, weights, story.device)
        except (ModelError, WeightsError) as error:
            problems[side] = f"{name} could not be loaded: {ui.load_problem(error)}"
    # Every class, so that each side can say how probable it finds the class both maps explain.
    predictions = {
        side: story.predictions(sides[side], model.facts.num_classes) for side, model in loaded.items()
    }
    explained = next(iter(predictions.values()))[0] if predictions else None
    for side, column in zip(sides, st.columns(2, gap="large"), strict=True):
        with column:
            if side in problems:
                st.error(problems[side])
                continue
            name, weights = sides[side]
            shown = (name, weights)
            key = f"present_compare_{side.lower()}"
            story.show(
                predictions_figure(predictions[side][:5], f"{side}: top 5"),
                f"{key}_predictions_chart",
                f"top5-predictions-{story.view}",
                height=300,
                model=shown,
            )
            facts = loaded[side].facts
            # Chefer needs global attention over one grid; any other model gets its Grad-CAM.
            method = CLASS_MAP_METHODS[facts.family] if facts.global_attention else CLASS_MAP_METHODS["cnn"]
            result = _cached_class_map(
                name, weights, story.device, story.picked.digest, story.view, method, explained.index,
                story.picked.image,
            )  # fmt: skip
            pixels = ui.cached_view(
                name, weights, story.device, story.picked.digest, story.picked.image, story.view
            ).pixels
            figure = attention_overlay_figure(
                pixels,
                result.values,
                result.stride_px,
                f"{side}: {method_title(method)} for “{explained.label}”",
                scale=colour_scale(result.values, "relevance"),
            )
            story.show(
                figure, f"{key}_chart", f"{method}-{explained.label}-{story.view}", result.values, 380, shown
            )
    if explained is not None and len(predictions) == 2:
        st.caption(_explained_sentence(predictions["ViT"], predictions["CNN"], explained))


def _explained_sentence(vit: list[Prediction], cnn: list[Prediction], explained: Prediction) -> str:
    """One line on the class both maps explain, from both models' probabilities."""
    line = (
        f"Both maps explain “{explained.label}”, the ViT's top class: the ViT gives it "
        f"{_probability(vit, explained.index):.0%}, the CNN {_probability(cnn, explained.index):.0%}"
    )
    top = cnn[0]
    if top.index == explained.index:
        return line + ", its top class too."
    return line + f"; the CNN's own top class is “{top.label}” ({top.probability:.0%})."


# Each slide of the story, by its key, with the one function that draws it.
SLIDE_RENDERERS: dict[SlideKey, Callable[[Story], None]] = {
    "image": render_image,
    "patches": render_patches,
    "tokens": render_tokens,
    "attention": render_attention,
    "rollout": render_rollout,
    "prediction": render_prediction,
    "compare": render_compare,
}
assert tuple(SLIDE_RENDERERS) == SLIDE_KEYS, "every slide of the story needs exactly one renderer"
