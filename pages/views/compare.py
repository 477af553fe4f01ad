"""Streamlit glue of the Compare page: model slots, predictions, maps on one scale, probes, faithfulness."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import streamlit as st
from PIL import Image

from pages.views import ui
from vitviz.figures.compare import (
    SCALE_PERCENTILE,
    SCALE_TITLE,
    OverlayPanel,
    faithfulness_curves_figure,
    predictions_comparison_figure,
    probe_curves_figure,
    shared_overlays_figure,
)
from vitviz.methods import (
    METHODS,
    ExplanationResult,
    available_methods,
    default_method,
    explanation_map,
    method_title,
)
from vitviz.methods.faithfulness import FaithfulnessResult, faithfulness, faithfulness_rows
from vitviz.methods.probes import PROBE_KINDS, ProbeCurve, run_probe
from vitviz.models import LoadedModel, ModelError
from vitviz.predict import Prediction
from vitviz.weights import WeightsError

__all__ = [
    "DisplayOptions",
    "ModelSlot",
    "checks_section",
    "display_options",
    "explanations_section",
    "model_pickers",
    "predictions_section",
    "ready_slots",
]

THIRD_MODEL = "compare_third_model"
TOP_CLASS = "each model's own top class"
OTHER_CLASS = "another class index…"
# Defaults of the slots: a ViT and a CNN with real bundled weights, and a distilled DeiT (two
# prefix tokens) as the optional third, untrained unless the hub is reachable.
SLOT_DEFAULTS: tuple[tuple[str, str], ...] = (
    ("vit_small_patch14_dinov2", "bundled"),
    ("tf_efficientnet_lite0", "bundled"),
    ("deit_small_distilled_patch16_224", "random"),
)
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
    def title(self) -> str:
        untrained = "" if self.loaded is None or self.loaded.trained else " (untrained)"
        return f"{self.choice.name}{untrained}"


@dataclass(frozen=True)
class DisplayOptions:
    """The sidebar's settings shared by every compared model."""

    topk: int  # predictions listed per model
    opacity: float  # of the maps over the picture
    robust: bool  # maps scaled to their 99th percentile rather than their maximum
    gradcam_layer: str  # a key of GRADCAM_LAYERS; "" lets each family choose
    ig_steps: int  # Integrated Gradients' path steps

    def method_options(self, method: str) -> dict[str, object]:
        """The options this method takes from the sidebar."""
        if method in ("gradcam", "gradcam++") and self.gradcam_layer:
            return {"layer": self.gradcam_layer}
        if method == "integrated-gradients":
            return {"steps": self.ig_steps}
        return {}


def display_options() -> DisplayOptions:
    """Sidebar: top-k, map opacity and scaling, and the method options behind an expander."""
    topk = st.slider("Top-k predictions", 1, 10, 5, key="compare_topk")
    opacity = st.slider("Map opacity", 0.1, 1.0, 0.6, 0.05, key="compare_opacity")
    robust = st.toggle(
        "Scale maps to their 99th percentile",
        value=True,
        key="compare_robust_scale",
        help="Off: each map is divided by its maximum, so one outlier cell can darken the rest.",
    )
    with st.expander("Method options"):
        gradcam_layer = st.selectbox(
            "Grad-CAM layer",
            list(GRADCAM_LAYERS),
            format_func=GRADCAM_LAYERS.get,
            key="compare_gradcam_layer",
        )
        ig_steps = st.slider("Integrated Gradients steps", 4, 64, 16, 4, key="compare_ig_steps")
    return DisplayOptions(topk, opacity, robust, gradcam_layer, ig_steps)


def model_pickers() -> list[ui.ModelChoice]:
    """Sidebar: two model pickers, and a third behind a toggle; each with its own weights source."""
    choices = []
    for number, (name, weights) in enumerate(SLOT_DEFAULTS, start=1):
        key = f"compare_{number}"
        if number == 3 and not st.toggle("Add a third model", key=THIRD_MODEL):
            break
        if f"{key}_weights" not in st.session_state:
            st.session_state[f"{key}_weights"] = weights  # the picker's own default is "bundled"
        with st.expander(f"Model {number}", expanded=True):
            choices.append(ui.model_picker(key, default_name=name))
    return choices


def load_slot(number: int, choice: ui.ModelChoice) -> ModelSlot:
    """Loads one model; a failure stays with its slot so the other models still show."""
    try:
        loaded = ui.cached_model(choice.name, choice.weights, choice.device)
    except (ModelError, WeightsError) as error:
        return ModelSlot(number, choice, None, str(error))
    return ModelSlot(number, choice, loaded, None)


def ready_slots(choices: Sequence[ui.ModelChoice]) -> list[ModelSlot]:
    """The picked models that load, each with its caption; one error line for each that does not.

    The script stops with a message when none loads.
    """
    slots = [load_slot(number, choice) for number, choice in enumerate(choices, start=1)]
    for slot in slots:
        if slot.error:
            st.error(f"Model {slot.number} ({slot.choice.name}): {slot.error}")
    ready = [slot for slot in slots if slot.loaded is not None]
    if not ready:
        st.info("Pick at least one model that loads to compare.")
        st.stop()
    for slot in ready:
        st.caption(ui.model_caption(slot.loaded, slot.choice.weights, slot.number))
        if not slot.loaded.trained:
            st.warning(
                f"{slot.number}. {slot.choice.name}: random, untrained weights: its maps, predictions "
                "and curves show an untrained model."
            )
    return ready


def with_classifier(slots: Sequence[ModelSlot]) -> list[ModelSlot]:
    """The slots whose model has a classifier head: only they predict, probe and score faithfulness."""
    return [slot for slot in slots if slot.loaded.facts.has_classifier]


def predictions_section(
    slots: Sequence[ModelSlot], picked: ui.ImageChoice, topk: int
) -> dict[int, list[Prediction]]:
    """Predictions side by side, classes another model also lists marked; a note for each headless model.

    Returns:
        Each classifier's top-k, by slot number.
    """
    classifiers = with_classifier(slots)
    predictions = {
        slot.number: ui.cached_predictions(
            slot.choice.name, slot.choice.weights, slot.choice.device, picked.digest, picked.image, topk
        )
        for slot in classifiers
    }
    st.subheader("Predictions")
    if predictions:
        st.plotly_chart(
            predictions_comparison_figure(
                [(f"{slot.number}. {slot.title}", predictions[slot.number]) for slot in classifiers]
            ),
            key="compare_predictions_chart",
        )
    for slot in slots:
        if not slot.loaded.facts.has_classifier:
            st.info(
                f"{slot.number}. {slot.choice.name} has no classifier head (a self-supervised backbone): it "
                "makes no predictions, so it has no class-specific maps, probes or faithfulness scores. "
                "Attention rollout and raw attention are offered for it."
            )
    return predictions


def explanations_section(
    slots: Sequence[ModelSlot],
    predictions: dict[int, list[Prediction]],
    picked: ui.ImageChoice,
    options: DisplayOptions,
) -> tuple[dict[int, str], int | None]:
    """A method picker per model and the class to explain, then every map on one colour scale.

    Returns:
        The method picked for each slot number, and the class explained (None: each model's own top).
    """
    st.subheader("Explanations")
    classifiers = with_classifier(slots)
    controls = st.columns(len(slots) + 1 if classifiers else len(slots))
    methods = {}
    for column, slot in zip(controls, slots, strict=False):
        with column:
            methods[slot.number] = method_picker(slot)
    class_index = None
    if classifiers:
        with controls[-1]:
            num_classes = max(slot.loaded.facts.num_classes for slot in classifiers)
            class_index = class_picker(list(predictions.values()), num_classes)
    panels = []
    for slot in slots:
        method = methods[slot.number]
        options_for_method = options.method_options(method)
        panel, _ = explanation_panel(
            slot, method, class_index, options_for_method, picked.digest, picked.image, options.robust
        )
        panels.append(panel)
    colour_title = SCALE_TITLE if options.robust else "relevance (÷ own max)"
    st.plotly_chart(
        shared_overlays_figure(picked.image, panels, options.opacity, colour_title),
        key="compare_maps_chart",
        theme=None,
    )
    return methods, class_index


def checks_section(
    slots: Sequence[ModelSlot], methods: dict[int, str], picked: ui.ImageChoice, class_index: int | None
) -> None:
    """Robustness probes and faithfulness scores, each in its tab, for the models with a head."""
    classifiers = with_classifier(slots)
    probes_tab, faithfulness_tab = st.tabs(["Robustness probes", "Faithfulness"])
    with probes_tab:
        probes_section(classifiers, picked, class_index)
    with faithfulness_tab:
        faithfulness_section(classifiers, [methods[slot.number] for slot in classifiers], picked, class_index)


@st.cache_data(show_spinner="Explaining…", max_entries=64)
def cached_explanation(
    name: str,
    weights: str,
    device: str,
    digest: str,
    method: str,
    class_index: int | None,
    options: tuple[tuple[str, object], ...],
    _image: Image.Image,
) -> ExplanationResult:
    return explanation_map(
        ui.cached_model(name, weights, device), _image, method, class_index, **dict(options)
    )


@st.cache_data(show_spinner="Probing…", max_entries=64)
def cached_probe(
    name: str,
    weights: str,
    device: str,
    digest: str,
    kind: str,
    class_index: int | None,
    remove_tokens: bool,
    steps: int,
    centre: tuple[float, float],
    _image: Image.Image,
) -> ProbeCurve:
    fractions = [step / (steps - 1) for step in range(steps)]
    loaded = ui.cached_model(name, weights, device)
    return run_probe(loaded, _image, kind, fractions, None, class_index, remove_tokens, centre=centre)


@st.cache_data(show_spinner="Scoring faithfulness…", max_entries=32)
def cached_faithfulness(
    name: str,
    weights: str,
    device: str,
    digest: str,
    methods: tuple[str, ...],
    class_index: int | None,
    steps: int,
    _image: Image.Image,
) -> list[FaithfulnessResult]:
    fractions = [step / (steps - 1) for step in range(steps)]
    loaded = ui.cached_model(name, weights, device)
    return faithfulness(loaded, _image, methods, class_index, fractions)


def method_picker(slot: ModelSlot) -> str:
    """The methods that fit this model's family and head, its family's default first chosen."""
    assert slot.loaded is not None
    facts = slot.loaded.facts
    options = available_methods(facts)
    return st.selectbox(
        f"Method for {facts.name}",
        options,
        index=options.index(default_method(facts)),
        format_func=method_title,
        key=f"{slot.key}_method",
    )


def class_picker(predictions: Sequence[Sequence[Prediction]], num_classes: int) -> int | None:
    """The class every class-specific map explains: each model's own top class, or one chosen.

    Args:
        predictions: the top-k lists of the models with a classifier head.
        num_classes: the largest class count among those models.

    Returns:
        A class index, or None for each model's own top class.
    """
    labels: dict[int, str] = {}
    for items in predictions:
        for prediction in items:
            labels.setdefault(prediction.index, prediction.label)
    options: list[object] = [TOP_CLASS, *labels, OTHER_CLASS]
    picked = st.selectbox(
        "Class to explain",
        options,
        format_func=lambda option: option if isinstance(option, str) else f"{labels[option]} ({option})",
        key="compare_class",
        help="Class-specific maps (Grad-CAM, Chefer, IG, …) and the probes follow this class.",
    )
    if picked == TOP_CLASS:
        return None
    if picked == OTHER_CLASS:
        return int(
            st.number_input("Class index", 0, max(0, num_classes - 1), 0, step=1, key="compare_class_index")
        )
    return int(picked)


def explanation_panel(
    slot: ModelSlot,
    method: str,
    class_index: int | None,
    options: dict[str, object],
    image_digest: str,
    image: Image.Image,
    robust: bool,
) -> tuple[OverlayPanel, ExplanationResult | None]:
    """One model's map as a panel of the shared-scale row; a failure becomes the panel's note."""
    assert slot.loaded is not None
    facts = slot.loaded.facts
    choice = slot.choice
    title = f"{slot.number}. {slot.title}<br>{method_title(method)}"
    own_class = class_index if facts.has_classifier else None
    try:
        result = cached_explanation(
            choice.name,
            choice.weights,
            choice.device,
            image_digest,
            method,
            own_class,
            tuple(sorted(options.items())),
            image,
        )
    except (ValueError, RuntimeError) as error:
        return OverlayPanel(title, None, note=_wrap(str(error))), None
    if result.target_label:
        title += f" · {result.target_label.split(',')[0]} ({result.target_index})"
    values = result.normalised(SCALE_PERCENTILE if robust else 100.0)
    return OverlayPanel(title, values), result


def _wrap(text: str, width: int = 40) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "<br>".join(lines)


def probes_section(classifiers: Sequence[ModelSlot], picked: ui.ImageChoice, class_index: int | None) -> None:
    """The probe controls and, once switched on, one curve per model with a head on one plot."""
    if not classifiers:
        st.info("Probes follow a class probability: none of these models has a classifier head.")
        return
    run = st.toggle("Run probes", key="compare_run_probes")
    row = st.columns([2, 1, 1])
    kind = row[0].selectbox(
        "Probe",
        PROBE_KINDS,
        key="compare_probe_kind",
        help="drop: grey (mean colour) a growing share of patches, by salience (Grad-CAM for CNNs, "
        "rollout for ViTs) or at random; shuffle: move a growing share of patches; occlude: grey a "
        "growing region.",
    )
    steps = row[1].slider("Points", 5, 21, 11, 2, key="compare_probe_steps")
    remove_tokens = row[2].checkbox(
        "ViTs: remove dropped tokens",
        key="compare_remove_tokens",
        disabled=not kind.startswith("drop-"),
        help="Take dropped patch tokens out of a ViT's sequence instead of greying them (CNNs grey).",
    )
    centre = (0.5, 0.5)
    if kind == "occlude":
        centre_row = st.columns(2)
        centre = (
            centre_row[0].slider("Region centre, from top", 0.0, 1.0, 0.5, 0.05, key="compare_centre_y"),
            centre_row[1].slider("Region centre, from left", 0.0, 1.0, 0.5, 0.05, key="compare_centre_x"),
        )
    if not run:
        st.caption("Switch on **Run probes** to draw the curves (each costs a few forward passes).")
        return
    curves = []
    for slot in classifiers:
        choice = slot.choice
        removing = remove_tokens and kind.startswith("drop-") and slot.loaded.facts.family != "cnn"
        try:
            curves.append(
                cached_probe(
                    choice.name,
                    choice.weights,
                    choice.device,
                    picked.digest,
                    kind,
                    class_index,
                    removing,
                    steps,
                    centre,
                    picked.image,
                )
            )
        except (ValueError, RuntimeError) as error:
            st.error(f"{slot.number}. {choice.name}: {error}")
    st.plotly_chart(probe_curves_figure(curves, f"{kind} on {picked.name}"), key="compare_probe_chart")
    st.caption(
        "Patches are the token grid for ViTs and hybrids, 16-px patches for CNNs; greyed pixels are the "
        "dataset mean colour. The first point is the clean prediction."
    )


def faithfulness_section(
    classifiers: Sequence[ModelSlot], shown: Sequence[str], picked: ui.ImageChoice, class_index: int | None
) -> None:
    """Methods to score, and once switched on the deletion / insertion table and curves."""
    if not classifiers:
        st.info("Faithfulness follows a class probability: none of these models has a classifier head.")
        return
    fits = {slot.number: available_methods(slot.loaded.facts) for slot in classifiers}
    offered = [name for name in METHODS if any(name in methods for methods in fits.values())]
    chosen = st.multiselect(
        "Methods to score",
        offered,
        default=[name for name in offered if name in shown],
        format_func=method_title,
        key="compare_faithfulness_methods",
        help="Each method is scored on every model it fits. Integrated Gradients and Occlusion take "
        "seconds per model.",
    )
    if not st.toggle("Score faithfulness", key="compare_run_faithfulness"):
        st.caption("Switch on **Score faithfulness** to compute deletion and insertion curves.")
        return
    results: list[FaithfulnessResult] = []
    for slot in classifiers:
        fitting = tuple(name for name in chosen if name in fits[slot.number])
        if not fitting:
            continue
        choice = slot.choice
        try:
            results += cached_faithfulness(
                choice.name,
                choice.weights,
                choice.device,
                picked.digest,
                fitting,
                class_index,
                11,
                picked.image,
            )
        except (ValueError, RuntimeError) as error:
            st.error(f"{slot.number}. {choice.name}: {error}")
    if not results:
        st.info("Pick at least one method to score.")
        return
    st.dataframe(faithfulness_rows(results), hide_index=True, key="compare_faithfulness_table")
    st.caption(
        "Deletion greys the most salient patches first: a faithful map makes the probability fall fast "
        "(low area). Insertion restores them first onto a grey image: a faithful map makes it rise fast "
        "(high area)."
    )
    st.plotly_chart(faithfulness_curves_figure(results), key="compare_faithfulness_chart")
