"""Tab 9, Queries & keys: one head's queries and keys placed together in 2-D, as in AttentionViz."""

from __future__ import annotations

import streamlit as st

from pages.views import ui
from pages.views.anatomy.kit import ModelSide, ViewComputation, _chart, _each_side, _title
from vitviz.figures.anatomy import position_key_figure, query_key_figure
from vitviz.forward.qk import query_keys
from vitviz.maths.qk import ProjectionMethod, QueryKeyProjection, QueryKeys, project_queries_keys
from vitviz.preprocess import ViewMode

__all__ = ["render_queries_keys"]

_query_keys = ViewComputation(query_keys, "Capturing queries and keys…", max_entries=32)


@st.cache_data(show_spinner="Projecting queries and keys…", max_entries=32)
def _cached_projection(
    model_key: tuple,
    digest: str,
    view: ViewMode,
    layer: int,
    head: int,
    method: ProjectionMethod,
    align: bool,
    _qk: QueryKeys,
) -> QueryKeyProjection:
    return project_queries_keys(_qk, method=method, align=align)


PROJECTIONS: dict[str, ProjectionMethod] = {"PCA": "pca", "t-SNE (slower)": "tsne"}
QK_LAYER = "anatomy_qk_layer"
QK_HEAD = "anatomy_qk_head"


def render_queries_keys(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """Tab 9: one head's queries and keys placed together in 2-D, as in AttentionViz."""
    facts = sides[0].loaded.facts
    # Widgets keep their values across models: bring a layer or head of a deeper model back in range.
    if not 0 <= st.session_state.get(QK_LAYER, -1) < facts.num_layers:
        st.session_state[QK_LAYER] = facts.num_layers - 1
    if not 0 <= st.session_state.get(QK_HEAD, -1) < facts.num_heads:
        st.session_state[QK_HEAD] = 0
    controls = st.columns([3, 2, 2, 3])
    layer = controls[0].slider("Layer", 0, facts.num_layers - 1, key=QK_LAYER)
    head = controls[1].selectbox("Head", list(range(facts.num_heads)), key=QK_HEAD)
    method_label = controls[2].radio(
        "Projection",
        list(PROJECTIONS),
        key="anatomy_qk_method",
        help="PCA is linear and instant. t-SNE keeps neighbourhoods rather than distances and takes "
        "seconds for a few hundred tokens.",
    )
    align = controls[3].checkbox(
        "Align keys with queries",
        value=True,
        key="anatomy_qk_align",
        help="Moves the keys' centre onto the queries' and evens out their lengths; softmax(q·kᵀ) is "
        "unchanged by both, but the two clouds stop sitting apart (AttentionViz does the same).",
    )
    method = PROJECTIONS[method_label]

    def project(side: ModelSide) -> tuple[QueryKeys, QueryKeyProjection]:
        source = _query_keys(side, picked, layer, head)
        return source, _cached_projection(
            side.key, picked.digest, side.view, layer, head, method, align, source
        )

    for side, (source, projection) in _each_side(
        sides, f"capture the queries and keys of {facts.name}", project
    ):
        scatter_column, key_column = st.columns([3, 1])
        with scatter_column:
            tokens = len(source.queries)
            title = f"Layer {layer}, head {head}: {tokens} queries and {tokens} keys ({method_label})"
            _chart(
                query_key_figure(projection, source, _title(title, side)),
                key=f"anatomy_qk_scatter_{side.suffix}",
                theme=None,
            )
        with key_column:
            _chart(position_key_figure(source.grid_size), key=f"anatomy_qk_key_{side.suffix}", theme=None)
            st.caption(
                f"Check: softmax(q·kᵀ/√{source.queries.shape[1]}) from these vectors reproduces the "
                f"model's attention of this head to within {source.reproduction_error():.1e}."
            )
            if method == "tsne":
                st.caption("t-SNE distances are not to scale; only neighbourhoods mean something.")
