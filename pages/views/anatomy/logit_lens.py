"""Tab 10, Logit lens: each layer's residual stream read through the model's own final norm and head."""

from __future__ import annotations

import numpy as np
import streamlit as st

from pages.views import ui
from pages.views.anatomy.kit import (
    _GET_A_HEAD,
    ModelSide,
    ViewComputation,
    _chart,
    _clip_percentile,
    _export_title,
    _softmax,
)
from vitviz.figures.anatomy import logit_lens_figure, patch_class_figure
from vitviz.figures.scales import colour_scale
from vitviz.forward.logit_lens import LogitLens, logit_lens
from vitviz.models import LoadedModel, ModelError

__all__ = ["render_logit_lens"]

NO_CLASSIFIER_FOR_LENS = (
    "has no classifier head. The logit lens reads every layer through the model's own final norm and "
    f"classifier, so it needs one. {_GET_A_HEAD}"
)


LENS_LAYER = "anatomy_lens_layer"  # the layer whose per-patch classes are drawn


_logit_lens = ViewComputation(logit_lens, "Reading every layer through the head…")
LENS_TOPK = 5  # classes listed per layer


def _class_name(loaded: LoadedModel, index: int) -> str:
    labels = loaded.labels
    return labels[index] if labels is not None and 0 <= index < len(labels) else f"class {index}"


def render_logit_lens(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """Tab 10: each layer's residual stream read through the model's own final norm and head."""
    side = sides[0]
    loaded, facts = side.loaded, side.loaded.facts
    if not facts.has_classifier:
        st.info(f"{facts.name} {NO_CLASSIFIER_FOR_LENS}")
        return
    record = side.attention(picked)
    try:
        lens = _logit_lens(side, picked, LENS_TOPK)
    except (ModelError, ValueError, RuntimeError) as error:
        st.error(f"Could not read the layers through the head: {error}")
        return
    shown: list[int] = []  # every layer's top class, then the final top-5, each once
    for index in [layer[0].index for layer in lens.predictions] + [p.index for p in lens.predictions[-1]]:
        if index not in shown:
            shown.append(index)
    shown = shown[:12]
    logits = lens.logits.astype(np.float64)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    table = probabilities[:, shown]
    labels = [_class_name(loaded, index) for index in shown]
    scale = colour_scale(table, "probability", _clip_percentile())
    figure = logit_lens_figure(
        table, labels, scale, _export_title("Logit lens: each layer's top classes", side)
    )
    _chart(figure, key="anatomy_lens_chart", theme=None)
    side.downloads(figure, table, picked, "logit-lens", "anatomy_lens_chart_files")
    final, model_top = lens.predictions[-1][0], int(np.argmax(record.logits))
    model_probability = float(_softmax(record.logits)[model_top])
    first = lens.num_layers - 1  # the first layer from which the final class stays on top
    while first > 0 and lens.predictions[first - 1][0].index == final.index:
        first -= 1
    pooled = "class token" if lens.pooling == "token" else f"{lens.pooling or 'pooled'}-pooled patch tokens"
    agrees = final.index == model_top and abs(final.probability - model_probability) < 1e-3
    st.markdown(
        f"Each layer's {pooled}, read through the model's final norm and head. "
        f"**{final.label}** is the top class from layer {first} on"
        + (
            f"; the last layer's reading is the model's prediction ({final.probability:.1%} both)."
            if agrees
            else f"; the model's own prediction is {_class_name(loaded, model_top)} ({model_probability:.1%})."
        )
    )
    _lens_patch_map(side, picked, lens)


@st.fragment
def _lens_patch_map(side: ModelSide, picked: ui.ImageChoice, lens: LogitLens) -> None:
    """The per-patch classes of one layer, with its slider: a layer step reruns this map alone."""
    loaded, facts = side.loaded, side.loaded.facts
    if LENS_LAYER not in st.session_state or not 0 <= st.session_state[LENS_LAYER] < lens.num_layers:
        st.session_state[LENS_LAYER] = lens.num_layers - 1
    layer = st.slider("Layer of the patch map", 0, lens.num_layers - 1, key=LENS_LAYER)
    classes = lens.patch_classes[layer]
    present, counts = np.unique(classes, return_counts=True)
    order = np.argsort(-counts)
    kept = [int(present[index]) for index in order[:9]]
    codes = np.array(
        [[kept.index(value) if value in kept else len(kept) for value in row] for row in classes]
    )
    names = [_class_name(loaded, index) for index in kept] + (["other"] if len(present) > len(kept) else [])
    patch_figure = patch_class_figure(
        side.pixels(picked),
        codes,
        names,
        facts.stride_px,
        _export_title(f"Layer {layer}: the class each patch token alone reads as", side),
    )
    _chart(patch_figure, key="anatomy_lens_patches", theme=None)
    side.downloads(
        patch_figure, classes, picked, f"logit-lens-patches-layer{layer}", "anatomy_lens_patch_files"
    )
    top_share = counts[order[0]] / classes.size
    st.caption(
        f"At layer {layer}, {top_share:.0%} of the {classes.size} patches read as "
        f"{_class_name(loaded, int(present[order[0]]))}; {len(present)} classes in all."
    )
