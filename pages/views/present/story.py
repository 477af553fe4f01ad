"""The story on screen: the model, image, view and slide every renderer draws from."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from pages.views import ui
from pages.views.present.state import (
    CNN_NAME,
    DARK,
    DEFAULT_MODEL,
    FIGURE_HEIGHT,
    FULLSCREEN,
    IMAGE,
    MODEL,
    PAIR_IMAGE,
    SLIDE,
    STORY_VIEWS,
    VIEW,
    VIEW_CHOICE,
)
from vitviz.availability import ModelPair, best_pair
from vitviz.device import default_device
from vitviz.figures.common import attention_overlay_figure
from vitviz.figures.scales import colour_scale
from vitviz.figures.slides import style_for_slides
from vitviz.figures.story import SLIDE_KEYS, ComparedPair, Slide, story_slides
from vitviz.finetune.data import DataError
from vitviz.finetune.pair import HeldOutImage, held_out_images, read_pair
from vitviz.images import image_digest
from vitviz.maths.attention import AttentionRecord
from vitviz.maths.sinks import SinkReport, detect_sinks, plan_rollout, rollout_statement
from vitviz.models import RUN_WEIGHTS, LoadedModel, ModelError, describe_weights
from vitviz.predict import Prediction
from vitviz.preprocess import ViewMode
from vitviz.runs import RunError, run_folder_by_name, runs_root, short_run_title
from vitviz.weights import WeightsError

__all__ = [
    "Story",
    "cached_held_out",
    "story",
]

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
        share: float = 0.5,
    ) -> None:
        """Draws a figure large and themed; outside presentation mode, its downloads follow.

        The title gains a line naming the model and weights that made the figure (the story's
        transformer unless `model` names another), so an exported figure still says them; on the
        page each title line is fitted to the chart's `share` of the main area (`ui.plotly_chart`).
        """
        name, weights = model or (self.model_name, self.weights)
        title = figure.layout.title.text or ""
        source = describe_weights(weights, name)  # a fine-tune's description names its run already
        made_by = source if weights == RUN_WEIGHTS or name in source else f"{name} · {source}"
        figure.update_layout(title_text=f"{title}<br><sup>{made_by}</sup>")
        style_for_slides(figure, self.dark, height)
        # Room for every line of the title, which Plotly centres in the top margin: at 30 px a line, a
        # title of four lines (the pair slide's) ran into its plot.
        figure.update_layout(margin={"t": 30 + 36 * (figure.layout.title.text.count("<br>") + 1)})
        ui.plotly_chart(
            figure, key=key, share=share, theme=None, config={"displayModeBar": not self.fullscreen}
        )
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
                compared = ComparedPair(_pair_name(pair, 0), _pair_name(pair, 1), _trained_clause(pair))
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
def cached_held_out(run: str) -> list[HeldOutImage]:
    """One held-out image per class of the pair the run belongs to (read once per pair)."""
    return held_out_images(read_pair(run_folder_by_name(run)))


def _held_out_choice(pair: ModelPair) -> ui.ImageChoice | None:
    """The held-out image of a trained pair's data the last slide shows; None for ImageNet classifiers.

    A trained pair knows only its own classes: a photo would make each pick one of them regardless.
    """
    if pair.kind != "trained":
        return None
    try:
        images = cached_held_out(pair.vit[0])
    except (RunError, DataError):
        return None
    if not images:
        return None
    chosen = images[st.session_state.get(PAIR_IMAGE, 0) % len(images)]
    return ui.ImageChoice(chosen.image, chosen.name, image_digest(chosen.image))


def _pair_name(pair: ModelPair, side: int) -> str:
    """How the slide's text names side 0 (the ViT) or 1 (the CNN) of `pair`: a fine-tune by the name
    its user gave it (its folder's name when it has none), an ImageNet model by its timm name."""
    name = (pair.vit, pair.cnn)[side][0]
    return short_run_title(run_folder_by_name(name)) if pair.kind == "trained" else name


def _trained_clause(pair: ModelPair) -> str:
    """What both classifiers of `pair` were trained on, as the last slide's caption says it."""
    if pair.kind == "paper":
        return "from the ViT paper's comparison, both trained on ImageNet-1k (1,000 classes)"
    trained = read_pair(run_folder_by_name(pair.vit[0]))
    return (
        f"fine-tuned alike on {trained.data} ({len(trained.labels)} classes) with the same images, split and "
        "settings"
    )
