"""The compared models' slots and the sidebar's settings: what Compare opens on, pickers, loading."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import streamlit as st

from pages.views import ui
from vitviz.availability import best_pair, check_weights, next_model, paper_models
from vitviz.finetune.data import DataError
from vitviz.finetune.pair import HeldOutImage, held_out_images, read_pair
from vitviz.models import RUN_WEIGHTS, LoadedModel, ModelError
from vitviz.preprocess import ViewMode
from vitviz.runs import RunError, run_folder_by_name, runs_root
from vitviz.serving import ServingError, visitor_model
from vitviz.weights import WeightsError

__all__ = [
    "GRADCAM_LAYERS",
    "LINK_VIEWS",
    "RAW_ROLLOUT",
    "RAW_SINKS_CHOICE",
    "SLOW_METHODS",
    "THIRD_MODEL",
    "VIEW_KEY",
    "DisplayOptions",
    "ModelSlot",
    "SlotClasses",
    "SlotMethods",
    "display_options",
    "load_slot",
    "model_pickers",
    "opening_held_out",
    "opening_models",
    "ready_slots",
    "with_classifier",
]

THIRD_MODEL = "compare_third_model"
# Per slot number: the method its map uses, and the class it explains (None: the model's top class).
SlotMethods = dict[int, str]
SlotClasses = dict[int, int | None]
LINK_VIEWS: tuple[ViewMode, ...] = ("crop", "whole")  # the views the page offers, as a link names them
VIEW_KEY = "compare_view"
RAW_ROLLOUT = "compare_raw_rollout"
RAW_SINKS_CHOICE = "compare_link_sinks"  # a link's sinks=exclude|raw, until it sets the toggle
# Methods of one forward per channel (minutes on a small CPU): marked in the menu, never a default, run
# in a background worker that shows their progress and time left.
SLOW_METHODS = frozenset({"scorecam", "ablationcam"})
GRADCAM_LAYERS = {
    "": "per family (features · stem · tokens)",
    "features": "forward_features output",
    "stem": "hybrid CNN stem",
    "tokens": "token grid entering the last block",
}


@dataclass(frozen=True)
class ModelSlot:
    """One compared model: what was picked and the loaded model, or why it could not load."""

    number: int  # 1, 2 or 3, as the sidebar names it
    choice: ui.ModelChoice
    loaded: LoadedModel | None
    error: str | None

    @property
    def key(self) -> str:
        return f"compare_{self.number}"

    @property
    def model_key(self) -> tuple[str, str, str]:
        """(name, weights, device): the first arguments of every cache of a model's results."""
        return self.choice.name, self.choice.weights, self.choice.device

    @property
    def title(self) -> str:
        untrained = "" if self.loaded is None or self.loaded.trained else " (untrained)"
        return f"{self.choice.shown}{untrained}"


@dataclass(frozen=True)
class DisplayOptions:
    """The sidebar's settings shared by every compared model."""

    view: str  # "crop" (each model's eval transform) or "whole" (the photo resized): every result uses it
    topk: int  # predictions listed per model
    opacity: float  # of the maps over the picture
    robust: bool  # maps clipped at their 99th percentile rather than scaled to their maximum
    gradcam_layer: str  # a key of GRADCAM_LAYERS; "" lets each family choose
    ig_steps: int  # Integrated Gradients' path steps
    raw_rollout: bool  # rollout multiplies every layer as captured, attention sinks included

    def method_options(self, method: str) -> dict[str, object]:
        """The options this method takes from the sidebar."""
        if method == "rollout" and self.raw_rollout:
            return {"sinks": "raw"}
        if method in ("gradcam", "gradcam++") and self.gradcam_layer:
            return {"layer": self.gradcam_layer}
        if method == "integrated-gradients":
            return {"steps": self.ig_steps}
        return {}


def display_options() -> DisplayOptions:
    """Sidebar: the view, top-k, map opacity and scaling, and the method options behind an expander."""
    view = ui.view_picker(VIEW_KEY, horizontal=True)
    topk = st.slider("Top-k predictions", 1, 10, 5, key="compare_topk")
    opacity = st.slider("Map opacity", 0.1, 1.0, 0.6, 0.05, key="compare_opacity")
    robust = st.toggle(
        "Clip maps at their 99th percentile",
        value=True,
        key="compare_robust_scale",
        help="Off: raw values, each map from its minimum to its maximum, so one outlier cell can "
        "darken the rest.",
    )
    raw_rollout = st.toggle(
        "Raw rollout (sinks included)",
        key=RAW_ROLLOUT,
        help="Off: rollout starts after the layers where attention sinks dominate and leaves sinks out "
        "of later ones. On: every layer as captured, sinks and all.",
    )
    with st.expander("Method options"):
        gradcam_layer = st.selectbox(
            "Grad-CAM layer",
            list(GRADCAM_LAYERS),
            format_func=GRADCAM_LAYERS.get,
            key="compare_gradcam_layer",
        )
        ig_steps = st.slider("Integrated Gradients steps", 4, 64, 16, 4, key="compare_ig_steps")
    return DisplayOptions(view, topk, opacity, robust, gradcam_layer, ig_steps, raw_rollout)


def opening_models() -> tuple[tuple[tuple[str, str], ...], str]:
    """The models Compare opens on, and one line on them (empty when nothing needs saying).

    Cached for a minute per runs folder, so a server whose runs folder changes sees the change.
    """
    return _opening_models(str(runs_root()))


@st.cache_data(ttl=60, show_spinner=False)
def _opening_models(runs_folder: str) -> tuple[tuple[tuple[str, str], ...], str]:
    """`opening_models` for one runs folder.

    The paper's ViT-B/16, R50+ViT-B/16 hybrid and ResNet-50 when they load here; else the best pair
    that loads (a trained ViT/CNN pair from the runs folder, or the bundled DINOv2 + EfficientNet).
    """
    pair = best_pair()
    if pair.kind == "paper":
        return paper_models(), ""
    note = (
        ""
        if pair.kind == "trained"
        else "Train a ViT/CNN pair on the Fine-tune page to compare two classifiers."
    )
    return (pair.vit, pair.cnn), note


def opening_held_out() -> list[HeldOutImage]:
    """Images held out of the trained pair Compare opens on, one per class; none for other openings."""
    return _opening_held_out(str(runs_root()))


@st.cache_data(ttl=60, show_spinner=False)
def _opening_held_out(runs_folder: str) -> list[HeldOutImage]:
    """`opening_held_out` for one runs folder."""
    pair = best_pair()
    if pair.kind != "trained":
        return []
    try:
        return held_out_images(read_pair(run_folder_by_name(pair.vit[0])))
    except (RunError, DataError):  # the pair's images are gone: the photos remain
        return []


def model_pickers() -> list[ui.ModelChoice]:
    """Sidebar: two model pickers, and a third behind a toggle; each with its own weights source.

    The third opens on the paper's third model when Compare opens on the paper's, else on the
    natural next model beside the first two (vitviz.availability.next_model): a trained one first.
    """
    defaults, note = opening_models()
    if THIRD_MODEL not in st.session_state:
        st.session_state[THIRD_MODEL] = len(defaults) == 3
    if note:
        st.caption(note)
    choices: list[ui.ModelChoice] = []
    for number in (1, 2, 3):
        key = f"compare_{number}"
        if number == 3 and not st.toggle("Add a third model", key=THIRD_MODEL):
            break
        if number > len(defaults) and f"{key}_model" not in st.session_state:  # asked once, not each rerun
            defaults = (*defaults, next_model([(choice.name, choice.weights) for choice in choices]))
        if number <= len(defaults):
            name, weights = defaults[number - 1]
            if f"{key}_model" not in st.session_state:
                st.session_state[f"{key}_model"] = name
            # A run has no weights menu.
            if f"{key}_weights" not in st.session_state and weights != RUN_WEIGHTS:
                st.session_state[f"{key}_weights"] = weights
        with st.expander(f"Model {number}", expanded=True):
            choices.append(ui.model_picker(key, default_name=""))
    return choices


def load_slot(number: int, choice: ui.ModelChoice) -> ModelSlot:
    """Loads one model; a failure stays with its slot, in one line a browser user can act on.

    What a visitor typed is checked first (vitviz.serving): nothing outside the runs folder and the
    data root is looked at, and a missing name and one outside get the same line.
    """
    try:
        availability = check_weights(*visitor_model(choice.name, choice.weights))
    except ServingError as error:
        return ModelSlot(number, choice, None, str(error))
    if not availability.loads:
        return ModelSlot(number, choice, None, availability.note)
    try:
        loaded = ui.cached_model(choice.name, choice.weights, choice.device)
    except (ModelError, WeightsError) as error:
        return ModelSlot(number, choice, None, ui.load_problem(error))
    return ModelSlot(number, choice, loaded, None)


def ready_slots(choices: Sequence[ui.ModelChoice]) -> list[ModelSlot]:
    """The picked models that load, each with its caption; one error line for each that does not.

    The script stops with a message when none loads.
    """
    slots = [load_slot(number, choice) for number, choice in enumerate(choices, start=1)]
    for slot in slots:
        if slot.error:
            st.error(f"Model {slot.number} ({slot.choice.shown}): {slot.error}")
    ready = [slot for slot in slots if slot.loaded is not None]
    if not ready:
        st.info("Pick at least one model that loads to compare.")
        st.stop()
    for slot in ready:
        st.caption(ui.model_caption(slot.loaded, slot.choice.weights, slot.number))
        if not slot.loaded.trained:
            st.warning(
                f"{slot.number}. {slot.choice.shown}: random, untrained weights: its maps, predictions "
                "and curves show an untrained model."
            )
    return ready


def with_classifier(slots: Sequence[ModelSlot]) -> list[ModelSlot]:
    """The slots whose model has a classifier head: only they predict, probe and score faithfulness."""
    return [slot for slot in slots if slot.loaded.facts.has_classifier]
