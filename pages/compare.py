"""Compare: two or three models' predictions, maps on one colour scale, robustness probes, faithfulness."""

from __future__ import annotations

import streamlit as st

import compare_views as views
import ui
from vitviz.compare_figures import (
    SCALE_TITLE,
    faithfulness_curves_figure,
    predictions_comparison_figure,
    probe_curves_figure,
    shared_overlays_figure,
)
from vitviz.faithfulness import faithfulness_rows
from vitviz.methods import METHODS, available_methods, method_title
from vitviz.probes import PROBE_KINDS

GRADCAM_LAYERS = {
    "": "per family (features · stem · tokens)",
    "features": "forward_features output",
    "stem": "hybrid CNN stem",
    "tokens": "token grid entering the last block",
}

st.title("Compare")
st.caption(
    "The same picture through two or three models: do they predict the same, and do they look at "
    "the same places? Maps are made on the whole picture resized to each model's input."
)

with st.sidebar:
    picked_image = ui.image_picker("compare")
    choices = views.model_pickers()
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
            "Grad-CAM layer", list(GRADCAM_LAYERS), format_func=GRADCAM_LAYERS.get, key="compare_gradcam_layer"
        )
        ig_steps = st.slider("Integrated Gradients steps", 4, 64, 16, 4, key="compare_ig_steps")

slots = [views.load_slot(number, choice) for number, choice in enumerate(choices, start=1)]
for slot in slots:
    if slot.error:
        st.error(f"Model {slot.number} ({slot.choice.name}): {slot.error}")
ready = [slot for slot in slots if slot.loaded is not None]
if len(ready) < 1:
    st.info("Pick at least one model that loads to compare.")
    st.stop()
for slot in ready:
    st.caption(views.describe(slot))
    if not slot.loaded.trained:
        st.warning(f"{slot.number}. {slot.choice.name}: random, untrained weights: its maps, predictions "
                   "and curves show an untrained model.")  # fmt: skip

classifiers = [slot for slot in ready if slot.loaded.facts.has_classifier]
headless = [slot for slot in ready if not slot.loaded.facts.has_classifier]
image = picked_image.image
digest = picked_image.digest

# Predictions side by side, classes that another model also lists marked.
predictions = {
    slot.number: ui.cached_predictions(
        slot.choice.name, slot.choice.weights, slot.choice.device, digest, image, topk
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
for slot in headless:
    st.info(
        f"{slot.number}. {slot.choice.name} has no classifier head (a self-supervised backbone): it makes "
        "no predictions, so it has no class-specific maps, probes or faithfulness scores. Attention "
        "rollout and raw attention are offered for it."
    )

# Maps, all on one colour scale over the same picture.
st.subheader("Explanations")
controls = st.columns(len(ready) + 1 if classifiers else len(ready))
methods = {}
for column, slot in zip(controls, ready, strict=False):
    with column:
        methods[slot.number] = views.method_picker(slot)
class_index = None
if classifiers:
    with controls[-1]:
        num_classes = max(slot.loaded.facts.num_classes for slot in classifiers)
        class_index = views.class_picker(list(predictions.values()), num_classes)


def _options(method: str) -> dict[str, object]:
    if method in ("gradcam", "gradcam++") and gradcam_layer:
        return {"layer": gradcam_layer}
    if method == "integrated-gradients":
        return {"steps": ig_steps}
    return {}


panels = []
for slot in ready:
    method = methods[slot.number]
    panel, _ = views.explanation_panel(
        slot, method, class_index, _options(method), digest, image, robust
    )
    panels.append(panel)
colour_title = SCALE_TITLE if robust else "relevance (÷ own max)"
st.plotly_chart(
    shared_overlays_figure(image, panels, opacity, colour_title), key="compare_maps_chart", theme=None
)

probes_tab, faithfulness_tab = st.tabs(["Robustness probes", "Faithfulness"])
with probes_tab:
    if not classifiers:
        st.info("Probes follow a class probability: none of these models has a classifier head.")
    else:
        run_probes = st.toggle("Run probes", key="compare_run_probes")
        row = st.columns([2, 1, 1])
        kind = row[0].selectbox(
            "Probe", PROBE_KINDS, key="compare_probe_kind",
            help="drop: grey (mean colour) a growing share of patches, by salience (Grad-CAM for CNNs, "
            "rollout for ViTs) or at random; shuffle: move a growing share of patches; occlude: grey a "
            "growing centred region.",
        )  # fmt: skip
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
        if run_probes:
            curves = []
            for slot in classifiers:
                removing = remove_tokens and kind.startswith("drop-") and slot.loaded.facts.family != "cnn"
                try:
                    curves.append(
                        views.cached_probe(
                            slot.choice.name, slot.choice.weights, slot.choice.device, digest, kind,
                            class_index, removing, steps, centre, image,
                        )  # fmt: skip
                    )
                except (ValueError, RuntimeError) as error:
                    st.error(f"{slot.number}. {slot.choice.name}: {error}")
            st.plotly_chart(
                probe_curves_figure(curves, f"{kind} on {picked_image.name}"), key="compare_probe_chart"
            )
            st.caption(
                "Patches are the token grid for ViTs and hybrids, 16-px patches for CNNs; greyed pixels "
                "are the dataset mean colour. The first point is the clean prediction."
            )
        else:
            st.caption("Switch on **Run probes** to draw the curves (each costs a few forward passes).")

with faithfulness_tab:
    if not classifiers:
        st.info("Faithfulness follows a class probability: none of these models has a classifier head.")
    else:
        offered = [name for name in METHODS if any(name in available_methods(s.loaded.facts) for s in classifiers)]
        shown = [methods[slot.number] for slot in classifiers]
        picked = st.multiselect(
            "Methods to score",
            offered,
            default=[name for name in offered if name in shown],
            format_func=method_title,
            key="compare_faithfulness_methods",
        )
        run_faithfulness = st.toggle("Score faithfulness", key="compare_run_faithfulness")
        if run_faithfulness and picked:
            results = []
            for slot in classifiers:
                fitting = tuple(name for name in picked if name in available_methods(slot.loaded.facts))
                if not fitting:
                    continue
                try:
                    results += views.cached_faithfulness(
                        slot.choice.name, slot.choice.weights, slot.choice.device, digest, fitting,
                        class_index, 11, image,
                    )  # fmt: skip
                except (ValueError, RuntimeError) as error:
                    st.error(f"{slot.number}. {slot.choice.name}: {error}")
            st.dataframe(faithfulness_rows(results), hide_index=True, key="compare_faithfulness_table")
            st.caption(
                "Deletion greys the most salient patches first: a faithful map makes the probability fall "
                "fast (low area). Insertion restores them first onto a grey image: a faithful map makes it "
                "rise fast (high area)."
            )
            st.plotly_chart(faithfulness_curves_figure(results), key="compare_faithfulness_chart")
        elif not run_faithfulness:
            st.caption("Switch on **Score faithfulness** to compute deletion and insertion curves.")
