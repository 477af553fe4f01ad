"""Switching heads off in the All heads tab: the choice, its forward, and the top-5 before and after."""

from __future__ import annotations

import streamlit as st

from pages.views import ui
from pages.views.anatomy.head_importance import _done_to_heads, _render_importance
from pages.views.anatomy.kit import _GET_A_HEAD, ModelSide, _chart, _export_title, _softmax
from vitviz.figures.common import predictions_figure
from vitviz.forward.ablation import AblationResult, ablate_heads
from vitviz.models import LoadedModel, ModelFacts
from vitviz.preprocess import ImageView

__all__ = ["ABLATED", "ABLATED_LAYERS", "ABLATION_MODE", "ABLATION_MODES"]

ABLATED = "anatomy_ablation_heads"  # multiselect of "layer:head" labels switched off
ABLATED_LAYERS = "anatomy_ablation_layers"  # multiselect of whole layers switched off
ABLATION_MODE = "anatomy_ablation_mode"  # radio: zeroed or replaced by the mean
ABLATION_MODES = {
    "zeroed": "zero",
    "replaced by its mean over the image's tokens": "mean",
}


NO_CLASSIFIER_FOR_ABLATION = f"has no classifier head: switching heads off would change no prediction, so it is not offered. {_GET_A_HEAD}"


def _head_label(head: tuple[int, int]) -> str:
    return f"{head[0]}:{head[1]}"


def _toggle_head(head: tuple[int, int]) -> None:
    """A click in "switch off" mode: the head goes off, or back on when it was off."""
    chosen = list(st.session_state.get(ABLATED, []))
    label = _head_label(head)
    st.session_state[ABLATED] = (
        [item for item in chosen if item != label] if label in chosen else [*chosen, label]
    )


@st.cache_resource(show_spinner="Running the model with heads switched off…", max_entries=8)
def _cached_ablation(
    model_key: tuple,
    digest: str,
    heads: tuple[tuple[int, int], ...],
    mode: str,
    view: str,
    _loaded: LoadedModel,
    _view: ImageView,
) -> AblationResult:
    return ablate_heads(_loaded, _view, list(heads), mode, topk=5)


def _ablated_heads(facts: ModelFacts) -> list[tuple[int, int]]:
    """The heads chosen one by one plus every head of the chosen layers, sorted."""
    heads = set()
    for label in st.session_state.get(ABLATED, []):
        layer, _, head = label.partition(":")
        heads.add((int(layer), int(head)))
    for layer in st.session_state.get(ABLATED_LAYERS, []):
        heads.update((layer, head) for head in range(facts.num_heads))
    return sorted(heads)


def _render_ablation(side: ModelSide, picked: ui.ImageChoice) -> AblationResult | None:
    """Head ablation: switch heads off, see the top-k and the maps change; rank heads by their effect.

    Returns the ablated forward when some head is off, so the maps below draw it; None otherwise.
    """
    facts = side.loaded.facts
    if not facts.has_classifier:
        st.caption(f"{facts.name} {NO_CLASSIFIER_FOR_ABLATION}")
        return None
    st.subheader("Switch heads off")
    options = [
        _head_label((layer, head)) for layer in range(facts.num_layers) for head in range(facts.num_heads)
    ]
    st.session_state[ABLATED] = [label for label in st.session_state.get(ABLATED, []) if label in options]
    st.session_state[ABLATED_LAYERS] = [
        layer for layer in st.session_state.get(ABLATED_LAYERS, []) if 0 <= layer < facts.num_layers
    ]
    if st.session_state.get(ABLATION_MODE) not in ABLATION_MODES:
        st.session_state[ABLATION_MODE] = next(iter(ABLATION_MODES))
    columns = st.columns([3, 2, 3])
    columns[0].multiselect(
        "Heads off (layer:head)",
        options,
        key=ABLATED,
        help="Or choose “switches the head off” above and click small maps.",
    )
    columns[1].multiselect("Whole layers off", list(range(facts.num_layers)), key=ABLATED_LAYERS)
    mode_label = columns[2].radio("A head switched off is", list(ABLATION_MODES), key=ABLATION_MODE)
    mode = ABLATION_MODES[mode_label]
    heads = _ablated_heads(facts)
    view = side.view
    result = _cached_ablation(
        side.key, picked.digest, tuple(heads), mode, view, side.loaded, side.view_of(picked)
    )
    before, after = result.before, result.after
    top = before[0]
    after_probability = float(_softmax(result.record.logits)[top.index])
    count = len(heads)
    off = _heads_off(count, mode)
    chart_columns = st.columns(2)
    with chart_columns[0]:
        _chart(
            predictions_figure(before, _export_title("Top-5, every head on", side)),
            key="anatomy_ablation_before",
        )
    with chart_columns[1]:
        after_title = f"Top-5 with {off}" if count else "Top-5, no head off yet"
        after_figure = predictions_figure(after, _export_title(after_title, side))
        _chart(after_figure, key="anatomy_ablation_after")
        side.downloads(
            after_figure, None, picked, f"ablation-{mode}-{count}-heads", "anatomy_ablation_after_files"
        )
    if count:
        changed = "the top class changes" if after[0].index != top.index else "the top class stays"
        st.markdown(
            f"With {off}, **{top.label}** goes from {top.probability:.1%} to {after_probability:.1%} "
            f"({after_probability - top.probability:+.1%}); {changed}"
            + (
                f" to **{after[0].label}** ({after[0].probability:.1%})."
                if after[0].index != top.index
                else "."
            )
            + " The maps below show the forward with these heads off."
        )
    else:
        st.caption("Every head is on: choose heads or layers to switch off.")
    _render_importance(side, picked, mode, view)
    return result if count else None


def _heads_off(count: int, mode: str) -> str:
    """ "3 heads zeroed", "1 head replaced by its token mean": the count and what was done to them."""
    return f"{count} head{'s' if count != 1 else ''} {_done_to_heads(mode, count)}"
