"""Compare: two or three models' predictions, maps on one colour scale, robustness probes, faithfulness."""

from __future__ import annotations

import streamlit as st

from pages.views import compare as views
from pages.views import ui
from vitviz.figures.compare import SCALE_TITLE, predictions_comparison_figure, shared_overlays_figure

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
            "Grad-CAM layer",
            list(GRADCAM_LAYERS),
            format_func=GRADCAM_LAYERS.get,
            key="compare_gradcam_layer",
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
        st.warning(
            f"{slot.number}. {slot.choice.name}: random, untrained weights: its maps, predictions "
            "and curves show an untrained model."
        )

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
    panel, _ = views.explanation_panel(slot, method, class_index, _options(method), digest, image, robust)
    panels.append(panel)
colour_title = SCALE_TITLE if robust else "relevance (÷ own max)"
st.plotly_chart(
    shared_overlays_figure(image, panels, opacity, colour_title), key="compare_maps_chart", theme=None
)

probes_tab, faithfulness_tab = st.tabs(["Robustness probes", "Faithfulness"])
with probes_tab:
    views.probes_section(classifiers, picked_image, class_index)
with faithfulness_tab:
    views.faithfulness_section(
        classifiers, [methods[slot.number] for slot in classifiers], picked_image, class_index
    )
