"""Streamlit glue of the Compare page: model slots, predictions, maps on one scale, probes, faithfulness."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeVar

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from pages.views import ui
from vitviz.availability import best_pair, check_weights, paper_models
from vitviz.figures.common import photo_view_figure
from vitviz.figures.compare import (
    SCALE_PERCENTILE,
    OverlayPanel,
    faithfulness_curves_figure,
    predictions_comparison_figure,
    probe_curves_figure,
    road_curves_figure,
    shared_overlays_figure,
)
from vitviz.figures.scales import colour_scale
from vitviz.finetune.data import DataError
from vitviz.finetune.pair import HeldOutImage, held_out_images, read_pair
from vitviz.maths.sinks import SinkReport, sink_sentence
from vitviz.methods import (
    METHODS,
    ExplanationResult,
    available_methods,
    default_method,
    explain_pixels,
    method_title,
)
from vitviz.methods.faithfulness import (
    FaithfulnessResult,
    RoadResult,
    faithfulness,
    faithfulness_rows,
    road,
    road_rows,
)
from vitviz.methods.probes import ProbeCurve, run_drop_orders, run_probe
from vitviz.models import (
    RUN_WEIGHTS,
    SUGGESTED_MODELS,
    WEIGHTS_SOURCES,
    LoadedModel,
    ModelError,
    describe_weights,
)
from vitviz.predict import Prediction
from vitviz.preprocess import VIEW_LABELS, ImageView, ViewMode
from vitviz.runs import RunError, run_folder_by_name, runs_root
from vitviz.serving import ServingError, is_visitor_run, visitor_model
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

T = TypeVar("T")
THIRD_MODEL = "compare_third_model"
TOP_CLASS = "each model's own top class"
OTHER_CLASS = "another class index…"
# The optional third slot when the paper's models do not load: a distilled DeiT (two prefix tokens).
THIRD_FALLBACK = ("deit_small_distilled_patch16_224", "random")
# Per slot number: the method its map uses, and the class it explains (None: the model's top class).
SlotMethods = dict[int, str]
SlotClasses = dict[int, int | None]
ScoreMetric = Literal["deletion and insertion", "ROAD"]
VIEW_KEY = "compare_view"
LINK_VIEWS: tuple[ViewMode, ...] = ("crop", "whole")  # the views the page offers, as a link names them
RAW_ROLLOUT = "compare_raw_rollout"
RAW_SINKS_CHOICE = "compare_link_sinks"  # a link's sinks=exclude|raw, until it sets the toggle
# Methods that take about a minute per map on a laptop CPU: marked in the menu, never a default.
SLOW_METHODS = frozenset({"scorecam", "ablationcam"})
DROP = "drop"  # the drop probe, run in its three orders so that the random baseline sits beside it
PROBES = {
    DROP: "drop patches: most salient first, least salient first, random order",
    "shuffle": "shuffle a growing share of patches",
    "occlude": "grey a growing central region",
}
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
        return f"{self.choice.name}{untrained}"


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
    return (pair.vit, pair.cnn, THIRD_FALLBACK), note


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
    """Sidebar: two model pickers, and a third behind a toggle; each with its own weights source."""
    defaults, note = opening_models()
    if THIRD_MODEL not in st.session_state:
        st.session_state[THIRD_MODEL] = len(defaults) == 3 and defaults[2] != THIRD_FALLBACK
    if note:
        st.caption(note)
    choices = []
    for number, (name, weights) in enumerate(defaults, start=1):
        key = f"compare_{number}"
        if number == 3 and not st.toggle("Add a third model", key=THIRD_MODEL):
            break
        if f"{key}_model" not in st.session_state:
            st.session_state[f"{key}_model"] = name
        if f"{key}_weights" not in st.session_state and weights != RUN_WEIGHTS:  # a run has no weights menu
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


def views_section(slots: Sequence[ModelSlot], picked: ui.ImageChoice, view: str) -> dict[int, ImageView]:
    """The photo once, with the box each model sees drawn on it, and each view's note.

    Returns:
        Each slot's view, by slot number.
    """
    views = {
        slot.number: ui.cached_view(
            slot.choice.name, slot.choice.weights, slot.choice.device, picked.digest, picked.image, view
        )
        for slot in slots
    }
    boxes: dict[tuple[float, ...], list[str]] = {}
    for slot in slots:
        boxes.setdefault(tuple(round(edge, 1) for edge in views[slot.number].box), []).append(
            str(slot.number)
        )
    labelled = [(f"model {', '.join(numbers)}", box) for box, numbers in boxes.items()]
    columns = st.columns([1, 2])
    with columns[0]:
        boxes_figure = cached_figure(
            repr(("boxes", picked.digest, labelled)),
            lambda: photo_view_figure(picked.image, labelled, longest=320),
        )
        ui.plotly_chart(boxes_figure, key="compare_view_boxes", theme=None)
    with columns[1]:
        st.markdown(
            f"**View: {VIEW_LABELS[view]}.** Every prediction, map, probe and score below is computed on it."
        )
        for slot in slots:
            note = views[slot.number].note
            st.caption(f"{slot.number}. {slot.choice.name}: {note or 'the model sees the whole photo'}")
    return views


def with_classifier(slots: Sequence[ModelSlot]) -> list[ModelSlot]:
    """The slots whose model has a classifier head: only they predict, probe and score faithfulness."""
    return [slot for slot in slots if slot.loaded.facts.has_classifier]


def predictions_section(
    slots: Sequence[ModelSlot], picked: ui.ImageChoice, options: DisplayOptions
) -> dict[int, list[Prediction]]:
    """Predictions side by side, classes another model also lists marked; a note for each headless model.

    Returns:
        Each classifier's top-k on the page's view, by slot number.
    """
    classifiers = with_classifier(slots)
    predictions = {
        slot.number: ui.cached_predictions(
            slot.choice.name,
            slot.choice.weights,
            slot.choice.device,
            picked.digest,
            picked.image,
            options.topk,
            options.view,
        )
        for slot in classifiers
    }
    st.subheader("Predictions")
    if predictions:
        columns = [(f"{slot.number}. {slot.title}", predictions[slot.number]) for slot in classifiers]
        figure = cached_figure(repr(("predictions", columns)), lambda: predictions_comparison_figure(columns))
        ui.plotly_chart(figure, key="compare_predictions_chart")
    for slot in slots:
        if not slot.loaded.facts.has_classifier:
            st.info(headless_note(slot))
    return predictions


@st.cache_resource(max_entries=32, show_spinner=False)
def cached_figure(key: str, _build: Callable[[], go.Figure]) -> go.Figure:
    """A figure built once per `key` (everything it is drawn from) and shared: Plotly's subplot
    validation made building the Compare figures ~100 ms of each ~150 ms rerun. Never mutated after."""
    return _build()


def headless_note(slot: ModelSlot) -> str:
    """What a model without a classifier head cannot show, and what it can; "self-supervised" only for
    DINO-family weights, the one kind of headless backbone this can be said of from its name."""
    assert slot.loaded is not None
    tag = str(getattr(slot.loaded.model, "pretrained_cfg", {}).get("tag") or "")
    kind = " (a self-supervised DINO backbone)" if "dino" in f"{slot.choice.name} {tag}".lower() else ""
    agnostic = ", ".join(method_title(name) for name in available_methods(slot.loaded.facts))
    return (
        f"{slot.number}. {slot.choice.name} has no classifier head{kind}: it makes no predictions, so it "
        f"has no class-specific maps, probes or faithfulness scores. Offered for it: {agnostic}."
    )


def explained_classes(
    slots: Sequence[ModelSlot], predictions: dict[int, list[Prediction]], picked_class: int | None
) -> SlotClasses:
    """The class each model's map explains: the picked one, else the top class its bars show.

    Headless models explain no class (None).
    """
    return {
        slot.number: (
            None
            if slot.number not in predictions
            else picked_class
            if picked_class is not None
            else predictions[slot.number][0].index
        )
        for slot in slots
    }


def explanations_section(
    slots: Sequence[ModelSlot],
    predictions: dict[int, list[Prediction]],
    picked: ui.ImageChoice,
    options: DisplayOptions,
    views: dict[int, ImageView],
) -> tuple[SlotMethods, SlotClasses]:
    """A method picker per model and the class to explain, then every map on one colour scale.

    Returns:
        The method picked for each slot number, and the class each slot explains.
    """
    st.subheader("Explanations")
    classifiers = with_classifier(slots)
    controls = st.columns(len(slots) + 1 if classifiers else len(slots))
    methods = {}
    for column, slot in zip(controls, slots, strict=False):
        with column:
            methods[slot.number] = method_picker(slot)
    picked_class = None
    if classifiers:
        with controls[-1]:
            num_classes = max(slot.loaded.facts.num_classes for slot in classifiers)
            picked_class = class_picker(list(predictions.values()), num_classes)
    classes = explained_classes(slots, predictions, picked_class)
    panels, arrays = [], []
    percentile = SCALE_PERCENTILE if options.robust else 100.0
    label = "relevance, each map on its own range"
    title = label
    reports = {slot.number: slot_sinks(slot, picked, options.view) for slot in slots}
    statements: SlotMethods = {}
    for slot in slots:
        method = methods[slot.number]
        panel, result = explanation_panel(
            slot,
            method,
            classes[slot.number],
            options,
            picked,
            views[slot.number],
            percentile,
            reports[slot.number],
        )
        if result is not None and method == "rollout":
            statements[slot.number] = result.source
        panels.append(panel)
        arrays.append(None if result is None else result.values)
        if result is not None and options.robust:
            scale = colour_scale(result.values, label, SCALE_PERCENTILE)
            title = scale.title if scale.clipped else title
    if not options.robust:
        title = f"{label} (raw: ÷ its maximum, not clipped)"
    names = " vs ".join(
        f"{slot.choice.name} ({describe_weights(slot.choice.weights, slot.choice.run)})" for slot in slots
    )
    # Everything the maps are drawn from, so a rerun that changes none of it reuses the figures.
    drawn = (picked.digest, picked.name, options, tuple(slot.model_key for slot in slots), methods, classes)

    def maps_figure() -> go.Figure:
        figure = shared_overlays_figure(
            picked.image, panels, options.opacity, title.replace(", each", ",<br>each")
        )
        figure.update_layout(
            title={
                "text": f"{picked.name} · {VIEW_LABELS[options.view]} · {names}",
                "font": {"size": 12},
                "y": 0.99,
            },
            margin={"t": 90},
        )
        return figure

    figure = cached_figure(repr(("maps", drawn)), maps_figure)
    ui.plotly_chart(figure, key="compare_maps_chart", theme=None)
    sink_lines(slots, reports, statements)
    ui.figure_downloads(
        figure,
        None,
        "-vs-".join(slot.choice.name for slot in slots),
        "-".join(describe_weights(slot.choice.weights, slot.choice.run).split(" ")[0] for slot in slots),
        picked.name,
        f"{VIEW_LABELS[options.view]} maps",
        "compare_maps",
    )
    with st.expander("Each model's map as an array"):
        for slot, values in zip(slots, arrays, strict=True):
            if values is None:
                continue
            st.caption(f"{slot.number}. {slot.choice.name}: {values.shape[0]}×{values.shape[1]} map")
            panel = panels[slots.index(slot)]
            single = cached_figure(
                repr(("map", slot.number, drawn)),
                lambda panel=panel: shared_overlays_figure(picked.image, [panel], options.opacity, title),
            )
            ui.figure_downloads(
                single,
                values,
                slot.choice.name,
                slot.choice.weights,
                picked.name,
                f"{VIEW_LABELS[options.view]} {methods[slot.number]}",
                f"compare_map_{slot.number}",
            )
    return methods, classes


class CheckedModels(NamedTuple):
    """What the probes and faithfulness tabs check: the models with a head, on the page's photo and view."""

    classifiers: Sequence[ModelSlot]
    methods: SlotMethods  # each slot's map method above, the default salience
    picked: ui.ImageChoice
    classes: SlotClasses
    view: str


def checks_section(
    slots: Sequence[ModelSlot],
    methods: SlotMethods,
    picked: ui.ImageChoice,
    classes: SlotClasses,
    view: str,
) -> None:
    """Robustness probes and faithfulness scores, each in its tab, for the models with a head."""
    classifiers = with_classifier(slots)
    if not classifiers:
        st.info(
            "Probes and faithfulness follow a class probability: none of these models has a classifier head."
        )
        return
    probes_tab, faithfulness_tab = st.tabs(["Robustness probes", "Faithfulness"])
    checked = CheckedModels(classifiers, methods, picked, classes, view)
    with probes_tab:
        probes_section(checked)
    with faithfulness_tab:
        faithfulness_section(checked)


@st.cache_data(show_spinner="Explaining…", max_entries=64)
def cached_explanation(
    name: str,
    weights: str,
    device: str,
    digest: str,
    view: str,
    method: str,
    class_index: int | None,
    options: tuple[tuple[str, object], ...],
    _image: Image.Image,
) -> ExplanationResult:
    """One map of the page's view of the image."""
    loaded = ui.cached_model(name, weights, device)
    pixels = ui.cached_view(name, weights, device, digest, _image, view).tensor
    classes = None if class_index is None else [class_index]
    return explain_pixels(loaded, pixels, method, classes, **dict(options))[0]


@st.cache_data(show_spinner="Probing…", max_entries=64)
def cached_probe(
    name: str,
    weights: str,
    device: str,
    digest: str,
    view: str,
    kind: str,
    method: str,
    class_index: int | None,
    remove_tokens: bool,
    steps: int,
    centre: tuple[float, float],
    _image: Image.Image,
) -> list[ProbeCurve]:
    """The probe's curves: for "drop" the three orders (most, least salient first, random), else one."""
    fractions = [step / (steps - 1) for step in range(steps)]
    loaded = ui.cached_model(name, weights, device)
    seen = ui.cached_view(name, weights, device, digest, _image, view)
    if kind == DROP and not remove_tokens:
        return run_drop_orders(loaded, seen, fractions, method, class_index)
    if kind == DROP:
        return [
            run_probe(loaded, seen, order, fractions, method, class_index, True)
            for order in ("drop-salient", "drop-least-salient", "drop-random")
        ]
    return [run_probe(loaded, seen, kind, fractions, None, class_index, centre=centre)]


@st.cache_data(show_spinner="Scoring faithfulness…", max_entries=64)
def cached_scores(
    metric: ScoreMetric,
    name: str,
    weights: str,
    device: str,
    digest: str,
    view: str,
    methods: tuple[str, ...],
    class_index: int | None,
    _image: Image.Image,
) -> list[FaithfulnessResult] | list[RoadResult]:
    """Deletion and insertion curves over 11 fractions, or ROAD's, of each method on one model."""
    loaded = ui.cached_model(name, weights, device)
    seen = ui.cached_view(name, weights, device, digest, _image, view)
    if metric == "ROAD":
        return road(loaded, seen, methods, class_index)
    return faithfulness(loaded, seen, methods, class_index, [step / 10 for step in range(11)])


def method_label(method: str) -> str:
    """A method's menu label; a slow one says so."""
    return method_title(method) + (" (slow: about a minute)" if method in SLOW_METHODS else "")


def method_picker(slot: ModelSlot) -> str:
    """Every registered method that fits this model, its family's default first chosen; slow ones marked."""
    assert slot.loaded is not None
    facts = slot.loaded.facts
    options = available_methods(facts)
    return st.selectbox(
        f"Method for {facts.name}",
        options,
        index=options.index(default_method(facts)),
        format_func=method_label,
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
    labels: SlotMethods = {}
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


def slot_sinks(slot: ModelSlot, picked: ui.ImageChoice, view: str) -> SinkReport | None:
    """The attention sinks of a ViT or hybrid on this view (None for a CNN, or when capture fails)."""
    assert slot.loaded is not None
    if slot.loaded.facts.grid_size is None or slot.loaded.facts.num_layers == 0:
        return None
    choice = slot.choice
    try:
        record = ui.cached_attention(
            choice.name, choice.weights, choice.device, picked.digest, picked.image, view=view
        )
    except (ValueError, RuntimeError):
        return None  # the slot's map reports the failure itself
    return ui.cached_sinks(choice.name, choice.weights, choice.device, picked.digest, view, record)


def sink_lines(
    slots: Sequence[ModelSlot], reports: dict[int, SinkReport | None], statements: SlotMethods
) -> None:
    """Under the maps, per ViT: the rollout's statement when it shows rollout, and its sinks in one line."""
    for slot in slots:
        report = reports[slot.number]
        if report is None:
            continue
        parts = []
        if slot.number in statements:
            parts.append(f"**{statements[slot.number]}.**")
        sentence = sink_sentence(report)
        if sentence:
            parts.append(f"✕ marks its attention sinks. {sentence}")
        elif slot.number not in statements:  # a rollout statement already says so
            parts.append(f"No patch is an attention sink (none {report.rule}).")
        st.markdown(f"{slot.number}. {slot.choice.name}: " + " ".join(parts))


def explanation_panel(
    slot: ModelSlot,
    method: str,
    class_index: int | None,
    options: DisplayOptions,
    picked: ui.ImageChoice,
    view: ImageView,
    percentile: float,
    sinks: SinkReport | None = None,
) -> tuple[OverlayPanel, ExplanationResult | None]:
    """One model's map over its view, as a panel of the shared-scale row; a failure becomes the panel's note.

    Attention sinks are marked on a map drawn on the model's token grid.
    """
    assert slot.loaded is not None
    choice = slot.choice
    # Three lines, so that three panels' titles never run into each other: model, weights, method.
    title = f"{slot.number}. {choice.name}<br>{describe_weights(choice.weights, choice.run)}<br>{method_title(method)}"
    try:
        result = cached_explanation(
            choice.name,
            choice.weights,
            choice.device,
            picked.digest,
            view.mode,
            method,
            class_index,
            tuple(sorted(options.method_options(method).items())),
            picked.image,
        )
    except (ValueError, RuntimeError) as error:
        return OverlayPanel(title, None, note=_wrap(str(error)), pixels=view.pixels), None
    if result.target_label:
        title += f" · {result.target_label.split(',')[0]} ({result.target_index})"
    marks: tuple[tuple[int, int], ...] = ()
    if sinks is not None and result.grid_size == slot.loaded.facts.grid_size:
        marks = tuple(sink.position for sink in sinks.patch_sinks if sink.position is not None)
    if result.constant_note:  # a constant map is said to be one, never drawn as relevance everywhere
        return OverlayPanel(title, None, note=_wrap(result.constant_note), pixels=view.pixels), result
    return OverlayPanel(title, result.normalised(percentile), pixels=view.pixels, sinks=marks), result


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


def probes_section(checked: CheckedModels) -> None:
    """The probe controls and, once switched on, every model's curves on one plot with their areas."""
    classifiers, methods, picked, classes, view = checked
    run = st.toggle("Run probes", key="compare_run_probes")
    row = st.columns([2, 1, 1])
    kind = row[0].selectbox(
        "Probe",
        list(PROBES),
        format_func=PROBES.get,
        key="compare_probe_kind",
        help="drop: grey (mean colour) a growing share of patches, ordered by each model's map above, "
        "and in a random order as the baseline; shuffle: move a growing share of patches; occlude: "
        "grey a growing region.",
    )
    steps = row[1].slider("Points", 5, 21, 11, 2, key="compare_probe_steps")
    remove_tokens = row[2].checkbox(
        "ViTs: remove dropped tokens",
        key="compare_remove_tokens",
        disabled=kind != DROP,
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
    curves: list[ProbeCurve] = []
    for slot in classifiers:
        choice = slot.choice
        method = methods[slot.number]
        if method in SLOW_METHODS or method not in available_methods(slot.loaded.facts):
            method = default_method(slot.loaded.facts)
        removing = remove_tokens and kind == DROP and slot.loaded.facts.family in ("vit", "hybrid")
        try:
            curves += cached_probe(
                choice.name,
                choice.weights,
                choice.device,
                picked.digest,
                view,
                kind,
                method,
                classes[slot.number],
                removing,
                steps,
                centre,
                picked.image,
            )
        except (ValueError, RuntimeError) as error:
            st.error(f"{slot.number}. {choice.name}: {error}")
    figure = probe_curves_figure(curves, f"{PROBES[kind]} · {picked.name} · {VIEW_LABELS[view]}")
    ui.plotly_chart(figure, key="compare_probe_chart")
    st.dataframe(
        [
            {
                "model": curve.model,
                "order" if kind == DROP else "probe": curve.kind,
                "salience": method_title(curve.method) if curve.method else "—",
                "class": f"{curve.target_label} ({curve.target_index})",
                "area": round(curve.area, 4),
            }
            for curve in curves
        ],
        hide_index=True,
        key="compare_probe_table",
    )
    if kind == DROP:
        for line in drop_verdicts(curves):
            st.markdown(line)
    ui.figure_downloads(
        figure,
        None,
        "-vs-".join(slot.choice.name for slot in classifiers),
        "probe",
        picked.name,
        kind,
        "compare_probe",
    )
    st.caption(
        "Patches are the token grid for ViTs and hybrids, 16-px patches for CNNs; greyed pixels are the "
        "dataset mean colour. The first point is the clean prediction. A map that finds the evidence "
        "puts its most-salient-first curve below the random order and its least-salient-first above."
    )


# How a salient-first order compares with the random order, and the least-salient-first order with it:
# (better, not better) words for each.
PROBE_WORDS = (("falls faster than", "does not fall faster than"), ("stays above", "does not stay above"))
ROAD_WORDS = (("is below", "is not below"), ("is above", "is not above"))


class _Orders(NamedTuple):
    """One number per removal order: most salient first, least salient first, random (lower: falls faster)."""

    most: float
    least: float
    random: float

    def verdict(self, subject: str, salient: str, measure: str, words: tuple[tuple[str, str], ...]) -> str:
        """One sentence read from the three numbers: is each ordered curve on the faithful side of random?"""
        falls = words[0][0] if self.most < self.random else words[0][1]
        keeps = words[1][0] if self.least > self.random else words[1][1]
        return (
            f"{subject}: most {salient} first ({measure} {self.most:.3f}) {falls} the random order "
            f"({self.random:.3f}); least {salient} first ({self.least:.3f}) {keeps} it."
        )


def drop_verdicts(curves: Sequence[ProbeCurve]) -> list[str]:
    """One line per model, read from its three drop curves: does its map beat the random order?"""
    lines = []
    for model in dict.fromkeys(curve.model for curve in curves):
        areas = {curve.kind: curve.area for curve in curves if curve.model == model}
        if len(areas) < 3:
            continue
        orders = _Orders(areas["drop-salient"], areas["drop-least-salient"], areas["drop-random"])
        lines.append(orders.verdict(f"**{model}**", "salient", "area", PROBE_WORDS))
    return lines


def score_each_model(
    checked: CheckedModels, chosen: Sequence[str], fits: dict[int, list[str]], metric: ScoreMetric
) -> list:
    """One metric's results for each model, with the chosen methods that fit it; a failure stays in its slot."""
    results = []
    for slot in checked.classifiers:
        fitting = tuple(name for name in chosen if name in fits[slot.number])
        if not fitting:
            continue
        try:
            results += cached_scores(
                metric,
                *slot.model_key,
                checked.picked.digest,
                checked.view,
                fitting,
                checked.classes[slot.number],
                checked.picked.image,
            )
        except (ValueError, RuntimeError) as error:
            st.error(f"{slot.number}. {slot.choice.name}, {metric}: {error}")
    return results


def road_verdicts(results: Sequence[RoadResult]) -> list[str]:
    """One line per model and method, read from its ROAD means against the random order."""
    lines = []
    for result in results:
        orders = _Orders(
            float(np.mean(result.most_relevant_first)),
            float(np.mean(result.least_relevant_first)),
            float(np.mean(result.random_order)),
        )
        lines.append(
            orders.verdict(
                f"**{result.model} · {method_title(result.method)}**", "relevant", "mean", ROAD_WORDS
            )
        )
    return lines


def faithfulness_section(checked: CheckedModels) -> None:
    """Methods to score, and once switched on the deletion / insertion table and curves with baselines."""
    classifiers, shown_per_slot, picked, _, view = checked
    shown = [shown_per_slot[slot.number] for slot in classifiers]
    fits = {slot.number: available_methods(slot.loaded.facts) for slot in classifiers}
    offered = [name for name in METHODS if any(name in methods for methods in fits.values())]
    chosen = st.multiselect(
        "Methods to score",
        offered,
        default=[name for name in offered if name in shown and name not in SLOW_METHODS],
        format_func=method_label,
        key="compare_faithfulness_methods",
        help="Each method is scored on every model it fits. Integrated Gradients and Occlusion take "
        "seconds per model; Score-CAM and Ablation-CAM about a minute.",
    )
    if not st.toggle("Score faithfulness", key="compare_run_faithfulness"):
        st.caption("Switch on **Score faithfulness** to compute deletion, insertion and ROAD curves.")
        return
    results = score_each_model(checked, chosen, fits, "deletion and insertion")
    if not results:
        st.info("Pick at least one method to score.")
        return
    road_results = score_each_model(checked, chosen, fits, "ROAD")
    st.markdown("**Deletion and insertion** (patches greyed or restored)")
    st.dataframe(faithfulness_rows(results), hide_index=True, key="compare_faithfulness_table")
    st.caption(
        "Deletion greys the most salient patches first: a faithful map makes the probability fall faster "
        "than the random order (lower area) and faster than least-salient-first. Insertion restores them "
        "first onto a grey image: a faithful map makes it rise faster than the random order (higher area)."
    )
    figure = faithfulness_curves_figure(results)
    ui.plotly_chart(figure, key="compare_faithfulness_chart")
    ui.figure_downloads(
        figure,
        None,
        "-vs-".join(slot.choice.name for slot in classifiers),
        "faithfulness",
        picked.name,
        VIEW_LABELS[view],
        "compare_faithfulness",
    )
    if road_results:
        st.markdown("**ROAD** (pixels imputed from their neighbours, so no grey shape gives them away)")
        st.dataframe(road_rows(road_results), hide_index=True, key="compare_road_table")
        for line in road_verdicts(road_results):
            st.markdown(line)
        road_figure = road_curves_figure(road_results)
        ui.plotly_chart(road_figure, key="compare_road_chart")
        st.caption(
            "At each step ROAD imputes the map's most (or least) relevant pixels from their neighbours "
            "with pytorch-grad-cam's noisy linear imputation. The random order ranks pixels by a seeded "
            "random map on the same patch grid."
        )
        ui.figure_downloads(
            road_figure,
            None,
            "-vs-".join(slot.choice.name for slot in classifiers),
            "road",
            picked.name,
            VIEW_LABELS[view],
            "compare_road",
        )


# Shareable links: the photo, the view and each slot's model and weights live in the URL.


def read_link() -> None:
    """Seeds the widgets from the URL once per session; anything unknown falls back, with one note."""
    params = ui.url_params_once("compare")
    if not params:
        return
    limits = ui.view_limits()
    notes = []
    ui.take_link_choice(params, "image", limits.images, "compare_photo", notes, " (not a built-in photo)")
    ui.take_link_choice(params, "view", LINK_VIEWS, VIEW_KEY, notes, " (use crop or whole)")
    for number in (1, 2, 3):
        model, weights = params.get(f"model{number}"), params.get(f"weights{number}")
        if model is not None:
            if model in dict(SUGGESTED_MODELS) or is_visitor_run(model):
                st.session_state[f"compare_{number}_model"] = model  # a run is picked by its name
            else:
                notes.append(f"model{number} {model[:40]!r} (not a suggested timm model or a finished run)")
        if weights is not None:
            if weights in limits.weights:
                st.session_state[f"compare_{number}_weights"] = weights
            else:
                notes.append(f"weights{number} {weights[:40]!r} (use bundled, hub or random)")
    if params.get("third") in ("0", "1"):
        st.session_state[THIRD_MODEL] = params["third"] == "1"
    ui.take_link_choice(params, "sinks", ("exclude", "raw"), RAW_SINKS_CHOICE, notes, " (use exclude or raw)")
    if RAW_SINKS_CHOICE in st.session_state:
        st.session_state[RAW_ROLLOUT] = st.session_state.pop(RAW_SINKS_CHOICE) == "raw"
    ui.url_notes(notes)


def share_link(slots: Sequence[ModelSlot], picked: ui.ImageChoice, options: DisplayOptions) -> None:
    """Makes the URL say what the page shows (built-in photos, suggested models and named weights,
    and runs by their names only)."""
    params = {"view": options.view, "third": "1" if len(slots) == 3 else "0"}
    if st.session_state.get("compare_image_source", "Built-in photo") == "Built-in photo":
        params["image"] = picked.name
    for slot in slots:
        if slot.choice.run is not None:
            params[f"model{slot.number}"] = slot.choice.run
        elif slot.choice.name in dict(SUGGESTED_MODELS) and slot.choice.weights in WEIGHTS_SOURCES:
            params[f"model{slot.number}"] = slot.choice.name
            params[f"weights{slot.number}"] = slot.choice.weights
    if options.raw_rollout:
        params["sinks"] = "raw"
    ui.sync_url(params)
