"""Compare's checks of the maps: robustness probes and faithfulness scores, for the models with a head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import streamlit as st

from pages.views import background, ui
from pages.views.compare.explanations import method_label
from pages.views.compare.slots import (
    SLOW_METHODS,
    ModelSlot,
    SlotClasses,
    SlotMethods,
    with_classifier,
)
from vitviz.figures.compare import faithfulness_curves_figure, probe_curves_figure, road_curves_figure
from vitviz.jobs import JobSpec
from vitviz.methods import METHODS, available_methods, default_method, method_title
from vitviz.methods.faithfulness import FaithfulnessResult, RoadResult, faithfulness_rows, road_rows
from vitviz.methods.probes import DROP_ALL_ORDERS, ProbeCurve
from vitviz.methods.verdicts import Verdict, deletion_verdicts, drop_verdicts, road_verdicts
from vitviz.preprocess import VIEW_LABELS

__all__ = [
    "DROP",
    "PROBES",
    "CheckedModels",
    "ProbeSettings",
    "checks_section",
    "faithfulness_section",
    "probe_each_model",
    "probes_section",
    "score_each_model",
    "show_verdicts",
]

DROP = DROP_ALL_ORDERS  # the drop probe, run in its three orders so that the random baseline sits beside it
PROBES = {
    DROP: "drop patches: most salient first, least salient first, random order",
    "shuffle": "shuffle a growing share of patches",
    "occlude": "grey a growing central region",
}


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


class ProbeSettings(NamedTuple):
    """The probe the controls ask for, the same on every model."""

    kind: str  # a key of PROBES
    steps: int  # points on each curve
    remove_tokens: bool  # ViTs: remove dropped tokens instead of greying them
    centre: tuple[float, float]  # (row, col) fractions of the occluded region's centre


def probe_each_model(checked: CheckedModels, probe: ProbeSettings) -> list[ProbeCurve]:
    """The curves that have arrived of each model's probe: each a background job (its progress in
    images, time left and Cancel drawn here); a failure stays in its slot."""
    curves: list[ProbeCurve] = []
    keys = []
    fractions = [step / (probe.steps - 1) for step in range(probe.steps)]
    for slot in checked.classifiers:
        choice = slot.choice
        method = checked.methods[slot.number]
        if method in SLOW_METHODS or method not in available_methods(slot.loaded.facts):
            method = default_method(slot.loaded.facts)
        removing = (
            probe.remove_tokens and probe.kind == DROP and slot.loaded.facts.family in ("vit", "hybrid")
        )
        class_index, view = checked.classes[slot.number], checked.view
        key = ("probe", *slot.model_key, checked.picked.digest, view, class_index, method, removing, *probe)
        options = {
            "kind": probe.kind,
            "fractions": fractions,
            "method": method,
            "class_index": class_index,
            "remove_tokens": removing,
            "centre": list(probe.centre),
        }
        spec = JobSpec("probe", choice.name, choice.weights, choice.device, options, view=view)
        what = f"{slot.number}. {probe.kind} probe of {choice.shown}"
        outcome = background.job_outcome(key, spec, [checked.picked.image], slot.loaded, what)
        keys.append(key)
        if outcome.result is not None:
            curves += outcome.result
    background.job_controls(keys, "compare_probe_job")
    return curves


def probes_section(checked: CheckedModels) -> None:
    """The probe controls and, once switched on, every model's curves on one plot with their areas."""
    classifiers, _, picked, _, view = checked
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
    curves = probe_each_model(checked, ProbeSettings(kind, steps, remove_tokens, centre))
    if not curves:
        return
    figure = probe_curves_figure(curves, f"{PROBES[kind]} · {picked.name} · {VIEW_LABELS[view]}")
    ui.plotly_chart(figure, key="compare_probe_chart", share=1.0)
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
        show_verdicts(drop_verdicts(curves))
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


def show_verdicts(verdicts: Sequence[Verdict]) -> None:
    """Each verdict as a line of its own, the model (and method) it is about in bold."""
    for verdict in verdicts:
        st.markdown(f"**{verdict.subject}**: {verdict.finding}")


def score_each_model(
    checked: CheckedModels, chosen: Sequence[str], fits: dict[int, list[str]]
) -> tuple[list[FaithfulnessResult], list[RoadResult], bool]:
    """Deletion / insertion and ROAD results of each model, with the chosen methods that fit it.

    Each model's scoring is a background job (its progress, time left and Cancel drawn here); a
    failure stays in its slot.

    Returns:
        The results that have arrived, and whether any model has methods to score.
    """
    results: list[FaithfulnessResult] = []
    road_results: list[RoadResult] = []
    keys = []
    for slot in checked.classifiers:
        fitting = tuple(name for name in chosen if name in fits[slot.number])
        if not fitting:
            continue
        class_index, view = checked.classes[slot.number], checked.view
        key = ("faithfulness", *slot.model_key, checked.picked.digest, view, fitting, class_index)
        options = {"methods": list(fitting), "class_index": class_index}
        choice = slot.choice
        spec = JobSpec("faithfulness", choice.name, choice.weights, choice.device, options, view=view)
        what = f"{slot.number}. faithfulness and ROAD of {slot.choice.shown}"
        outcome = background.job_outcome(key, spec, [checked.picked.image], slot.loaded, what)
        keys.append(key)
        if outcome.result is not None:
            results += outcome.result[0]
            road_results += outcome.result[1]
    background.job_controls(keys, "compare_faithfulness_job")
    return results, road_results, bool(keys)


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
        help="Each method is scored on every model it fits, in a background worker that shows its "
        "progress and the time left; Score-CAM and Ablation-CAM take one forward per channel.",
    )
    if not st.toggle("Score faithfulness", key="compare_run_faithfulness"):
        st.caption("Switch on **Score faithfulness** to compute deletion, insertion and ROAD curves.")
        return
    results, road_results, any_method = score_each_model(checked, chosen, fits)
    if not any_method:
        st.info("Pick at least one method to score.")
        return
    if not results:
        return
    st.markdown("**Deletion and insertion** (patches greyed or restored)")
    st.dataframe(faithfulness_rows(results), hide_index=True, key="compare_faithfulness_table")
    show_verdicts(deletion_verdicts(results))
    st.caption(
        "Deletion greys the most salient patches first: a faithful map makes the probability fall faster "
        "than the random order (lower area) and faster than least-salient-first. Insertion restores them "
        "first onto a grey image: a faithful map makes it rise faster than the random order (higher area)."
    )
    figure = faithfulness_curves_figure(results)
    ui.plotly_chart(figure, key="compare_faithfulness_chart", share=1.0)
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
        show_verdicts(road_verdicts(road_results))
        road_figure = road_curves_figure(road_results)
        ui.plotly_chart(road_figure, key="compare_road_chart", share=1.0)
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
