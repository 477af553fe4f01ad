"""Compare's page sections: the view each model sees, the predictions, and every map on one scale."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from pages.views import background, ui
from pages.views.compare.slots import (
    SLOW_METHODS,
    DisplayOptions,
    ModelSlot,
    SlotClasses,
    SlotMethods,
    with_classifier,
)
from vitviz.figures.common import photo_view_figure
from vitviz.figures.compare import (
    SCALE_PERCENTILE,
    OverlayPanel,
    predictions_comparison_figure,
    shared_overlays_figure,
)
from vitviz.figures.scales import colour_scale
from vitviz.jobs import JobSpec
from vitviz.maths.sinks import SinkReport, sink_sentence
from vitviz.methods import ExplanationResult, available_methods, default_method, explain_pixels, method_title
from vitviz.models import describe_weights
from vitviz.predict import Prediction
from vitviz.preprocess import VIEW_LABELS, ImageView, ViewMode
from vitviz.text import grid_size_text

__all__ = [
    "OTHER_CLASS",
    "TOP_CLASS",
    "cached_explanation",
    "cached_figure",
    "class_picker",
    "explained_classes",
    "explanation_of",
    "explanation_panel",
    "explanations_section",
    "headless_note",
    "method_label",
    "method_picker",
    "predictions_section",
    "sink_lines",
    "slot_sinks",
    "slow_map_job",
    "views_section",
]

TOP_CLASS = "each model's own top class"
OTHER_CLASS = "another class index…"


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
        ui.plotly_chart(boxes_figure, key="compare_view_boxes", share=0.33, theme=None)
    with columns[1]:
        st.markdown(
            f"**View: {VIEW_LABELS[view]}.** Every prediction, map, probe and score below is computed on it."
        )
        for slot in slots:
            note = views[slot.number].note
            st.caption(f"{slot.number}. {slot.choice.shown}: {note or 'the model sees the whole photo'}")
    return views


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
        ui.plotly_chart(figure, key="compare_predictions_chart", share=0.67)
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
        f"{slot.number}. {slot.choice.shown} has no classifier head{kind}: it makes no predictions, so it "
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
        f"{slot.choice.shown} ({describe_weights(slot.choice.weights, slot.choice.run)})" for slot in slots
    )
    # Everything the maps are drawn from, so a rerun that changes none of it reuses the figures.
    drawn = (
        picked.digest,
        picked.name,
        options,
        tuple(slot.model_key for slot in slots),
        methods,
        classes,
        tuple(panel.note for panel in panels),  # a slow map still running, then arrived
    )

    def maps_figure() -> go.Figure:
        figure = shared_overlays_figure(
            picked.image, panels, options.opacity, title.replace(", each", ",<br>each")
        )
        figure.update_layout(
            title={
                "text": f"{picked.name} · {VIEW_LABELS[options.view]} · {names}",
                "font": {"size": 12},
                "y": 1.0,
                "yanchor": "top",  # its first line hangs from the figure's top edge, 8 px down
                "pad": {"t": 8},
            },
            margin={"t": 90},
        )
        return figure

    figure = cached_figure(repr(("maps", drawn)), maps_figure)
    ui.plotly_chart(figure, key="compare_maps_chart", share=1.0, theme=None)
    slow = [
        slow_map_job(
            slot,
            methods[slot.number],
            classes[slot.number],
            options.method_options(methods[slot.number]),
            picked.digest,
            views[slot.number].mode,
        )[0]
        for slot in slots
        if methods[slot.number] in SLOW_METHODS
    ]
    if slow:
        background.job_controls(slow, "compare_slow_map")
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
            rows, cols = values.shape
            st.caption(
                f"{slot.number}. {slot.choice.shown}: map on the {grid_size_text(rows=rows, columns=cols)}"
            )
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


def explanation_of(
    choice: ui.ModelChoice,
    picked: ui.ImageChoice,
    view: ViewMode,
    method: str,
    class_index: int | None,
    options: tuple[tuple[str, object], ...] = (),
) -> ExplanationResult:
    """`cached_explanation` of the chosen model on the picked image's view."""
    return cached_explanation(
        choice.name,
        choice.weights,
        choice.device,
        picked.digest,
        view,
        method,
        class_index,
        options,
        picked.image,
    )


def method_label(method: str) -> str:
    """A method's menu label; a slow one says so."""
    return method_title(method) + (" (slow: runs in the background)" if method in SLOW_METHODS else "")


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
        st.markdown(f"{slot.number}. {slot.choice.shown}: " + " ".join(parts))


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

    Attention sinks are marked on a map drawn on the model's token grid. A slow method's map is
    computed in a background worker: until it arrives the panel says so (`background.job_controls`
    under the maps shows its progress).
    """
    assert slot.loaded is not None
    choice = slot.choice
    # Three lines, so that three panels' titles never run into each other: model, weights, method.
    title = f"{slot.number}. {choice.shown}<br>{describe_weights(choice.weights, choice.run)}<br>{method_title(method)}"
    if method in SLOW_METHODS:
        outcome = background.job_outcome(
            *slow_map_job(
                slot, method, class_index, options.method_options(method), picked.digest, view.mode
            ),
            [picked.image],
            slot.loaded,
            f"{slot.number}. {method_title(method)} of {choice.shown}",
        )
        if outcome.result is None:
            return OverlayPanel(
                title, None, note=_wrap(background.ending_note(outcome)), pixels=view.pixels
            ), None
        return _panel(slot, title, outcome.result, percentile, view, sinks), outcome.result
    try:
        result = explanation_of(
            choice,
            picked,
            view.mode,
            method,
            class_index,
            tuple(sorted(options.method_options(method).items())),
        )
    except (ValueError, RuntimeError) as error:
        return OverlayPanel(title, None, note=_wrap(str(error)), pixels=view.pixels), None
    return _panel(slot, title, result, percentile, view, sinks), result


def slow_map_job(
    slot: ModelSlot, method: str, class_index: int | None, options: dict, digest: str, view: ViewMode
) -> tuple[tuple, JobSpec]:
    """The key and the worker's job of a slow method's map: everything the map depends on is in both.

    Args:
        options: the method's own options (`DisplayOptions.method_options`).
        digest, view: the picked image's digest and the view mode.
    """
    choice = slot.choice
    key = ("map", *slot.model_key, digest, view, method, class_index, tuple(sorted(options.items())))
    job_options = {"method": method, "class_index": class_index, "method_options": options}
    return key, JobSpec("explanation", choice.name, choice.weights, choice.device, job_options, view=view)


def _panel(
    slot: ModelSlot,
    title: str,
    result: ExplanationResult,
    percentile: float,
    view: ImageView,
    sinks: SinkReport | None,
) -> OverlayPanel:
    """The panel of a map that was computed: its class in the title, sinks marked, or the note of a constant map."""
    assert slot.loaded is not None
    if result.target_label:
        title += f" · {result.target_label.split(',')[0]} ({result.target_index})"
    marks: tuple[tuple[int, int], ...] = ()
    if sinks is not None and result.grid_size == slot.loaded.facts.grid_size:
        marks = tuple(sink.position for sink in sinks.patch_sinks if sink.position is not None)
    if result.constant_note:  # a constant map is said to be one, never drawn as relevance everywhere
        return OverlayPanel(title, None, note=_wrap(result.constant_note), pixels=view.pixels)
    shown = result.normalised(percentile)  # a nearly flat map is drawn, with a line saying how flat
    return OverlayPanel(title, shown, note=_wrap(result.flat_note or ""), pixels=view.pixels, sinks=marks)


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
