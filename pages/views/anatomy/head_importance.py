"""Every head ranked by its effect on the top class: an instant estimate, then the exact ranking."""

from __future__ import annotations

import numpy as np
import streamlit as st

from pages.views import background, ui
from pages.views.anatomy.kit import ModelSide, _chart, _clip_percentile, _export_title
from vitviz.figures.anatomy import head_importance_figure
from vitviz.figures.scales import colour_scale
from vitviz.forward.ablation import head_importance_estimate
from vitviz.jobs import JobSpec
from vitviz.maths.ablation import ranking_agreement
from vitviz.maths.attention import AttentionRecord
from vitviz.models import LoadedModel, ModelError
from vitviz.preprocess import ImageView, ViewMode

__all__ = ["ABLATION_WORDS"]

ABLATION_WORDS = {"zero": "zeroed", "mean": "token mean"}  # the mode in a button's few words
RANKING = "ranking"  # the first part of a ranking's job key: (RANKING, model key, digest, view, mode)


@st.cache_data(show_spinner="Estimating every head's effect…", max_entries=16)
def _cached_importance_estimate(
    model_key: tuple, digest: str, mode: str, view: str, _loaded: LoadedModel, _view: ImageView
) -> np.ndarray:
    return head_importance_estimate(_loaded, _view, mode)


def _done_to_heads(mode: str, count: int = 1) -> str:
    """What an ablation does to a head: "zeroed", or "replaced by its (their) token mean"."""
    return "zeroed" if mode == "zero" else f"replaced by {'its' if count == 1 else 'their'} token mean"


def _ranking(side: ModelSide, picked: ui.ImageChoice, mode: str, view: ViewMode) -> np.ndarray | None:
    """The rank button and the exact ranking's progress; its drops once they are there.

    The ranking is a background job (in a worker, or in this run for a model with unseeded random
    weights); a visitor runs one ranking at a time.
    """
    total = side.loaded.facts.num_layers * side.loaded.facts.num_heads
    choice = side.choice
    spec = JobSpec("ranking", choice.name, choice.weights, choice.device, {"mode": mode}, side.twin, view)
    return background.job_button(
        (RANKING, side.key, picked.digest, view, mode),
        f"Rank all {total} heads by their effect ({ABLATION_WORDS[mode]})",
        "anatomy_ablation_rank",
        lambda: (spec, [picked.image]),
        side.loaded,
        "Switching each head off in turn",
        "A ranking for another image, model or ablation is running; this one can start after it.",
    )


def _render_importance(side: ModelSide, picked: ui.ImageChoice, mode: str, view: ViewMode) -> None:
    """Ranks every head by how much the top class's probability drops when it alone is off."""
    facts = side.loaded.facts
    drops = _ranking(side, picked, mode, view)
    try:
        estimate = _cached_importance_estimate(
            side.key, picked.digest, mode, view, side.loaded, side.view_of(picked)
        )
    except (ModelError, ValueError, RuntimeError) as error:
        st.error(f"Could not estimate the heads' effects: {error}")
        estimate = None
    if drops is None and estimate is None:
        return
    exact = drops is not None
    shown = drops if exact else estimate
    scale = colour_scale(shown, "probability drop", _clip_percentile(), symmetric=True)
    top = side.attention(picked)
    top_label = _prediction_label(side, top)
    title = f"Drop of {top_label} with one head {_done_to_heads(mode)}"
    if not exact:
        title = f"Estimated drop of {top_label} with one head {_done_to_heads(mode)} (first order)"
    figure = head_importance_figure(shown, scale, _export_title(title, side))
    _chart(figure, key="anatomy_ablation_importance_chart")
    order = np.argsort(shown, axis=None)[::-1][:5]
    ranked = [np.unravel_index(index, shown.shape) for index in order]
    st.markdown(
        ("Heads that matter most here: " if exact else "Heads that matter most here, by the estimate: ")
        + ", ".join(f"{layer}:{head} ({shown[layer, head]:+.1%})" for layer, head in ranked)
        + f". Largest rise when removed: {shown.min():+.1%}."
    )
    if not exact:
        st.caption(
            "An estimate, shown at once: one forward and one backward pass give every head's first-order "
            "effect on the class's probability (attribution patching). The exact ranking switches each "
            "head off in turn; where a head's effect is not linear, the two differ."
        )
    elif estimate is not None:
        st.caption(
            f"The instant estimate ranked these heads with Spearman ρ = {ranking_agreement(estimate, drops):.2f} "
            "against this exact ranking (1: the same order)."
        )
    ui.figure_downloads(
        figure,
        shown,
        side.loaded.run or facts.name,
        side.loaded.weights,
        picked.name,
        f"head-importance-{mode}" if exact else f"head-importance-estimate-{mode}",
        "anatomy_importance",
    )


def _prediction_label(side: ModelSide, record: AttentionRecord) -> str:
    """The name of the model's top class on the record's forward."""
    index = int(np.argmax(record.logits))
    labels = side.loaded.labels
    return labels[index] if labels is not None and index < len(labels) else f"class {index}"
