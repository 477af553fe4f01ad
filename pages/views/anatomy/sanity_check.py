"""Tab 11, Sanity check: a method's map as the weights are randomised from the head down."""

from __future__ import annotations

import numpy as np
import streamlit as st

from pages.views import background, ui
from pages.views.anatomy.kit import ModelSide, _chart, _clip_percentile, _export_title, _raw_colours
from vitviz.figures.anatomy import sanity_maps_figure
from vitviz.figures.scales import CLIP_PERCENTILE, colour_scale
from vitviz.jobs import JobSpec
from vitviz.methods import METHODS, available_methods, default_method
from vitviz.methods.sanity import UNFAITHFUL_RANK_CORRELATION, SanityResult

__all__ = ["render_sanity"]

SANITY_METHOD = "anatomy_sanity_method"
SANITY_RESULTS = (
    "anatomy_sanity_requests"  # {(model key, digest, view, method)} asked for; results: background
)


def render_sanity(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """Tab 11: a method's map as the weights are randomised from the head down (Adebayo et al.)."""
    side = sides[0]
    loaded, facts = side.loaded, side.loaded.facts
    methods = available_methods(facts)
    if not methods:
        st.info(f"No explanation method applies to {facts.name}.")
        return
    if st.session_state.get(SANITY_METHOD) not in methods:
        st.session_state[SANITY_METHOD] = (
            default_method(facts) if default_method(facts) in methods else methods[0]
        )
    method = st.selectbox("Method", methods, format_func=lambda name: METHODS[name].title, key=SANITY_METHOD)
    st.markdown(
        "Each stage redraws more of the weights at random, from the head down; a map that explains the "
        "model should change with them. ρ is the rank correlation with the original map."
    )
    view = side.view
    requested = st.session_state.setdefault(SANITY_RESULTS, set())  # the keys whose check was asked for
    cache_key = (side.key, picked.digest, view, method)
    if st.button("Run the sanity check", key="anatomy_sanity_run", disabled=cache_key in requested):
        requested.add(cache_key)
    if cache_key not in requested:
        st.caption("It redraws the weights stage by stage and maps each stage: it runs in the background.")
        return
    choice = side.choice
    options = {"method": method, "view": view}
    spec = JobSpec("sanity", choice.name, choice.weights, choice.device, options, twin=side.twin)
    what = f"Sanity check of {METHODS[method].title}"
    outcome = background.job_outcome(cache_key, spec, picked.image, loaded, what)
    background.job_controls([cache_key], "anatomy_sanity_job")
    result: SanityResult | None = outcome.result
    if result is None:
        return
    _render_sanity_result(side, picked, result)


def _render_sanity_result(side: ModelSide, picked: ui.ImageChoice, result: SanityResult) -> None:
    tops = []
    constant = []
    for stage, values in zip(result.stages, result.maps, strict=True):
        scale = colour_scale(values, "map", _clip_percentile())
        tops.append(np.clip((values - scale.zmin) / (scale.zmax - scale.zmin), 0.0, 1.0))
        if float(values.max()) == float(values.min()):
            constant.append(stage)
    titles = [
        f"{stage} · ρ {'n/a' if value is None else f'{value:.2f}'}"
        for stage, value in zip(result.stages, result.rank_correlation, strict=True)
    ]
    colour_title = "map / its range" + ("" if _raw_colours() else f" (clipped at {CLIP_PERCENTILE:g}th pct)")
    figure = sanity_maps_figure(
        np.stack(tops),
        titles,
        colour_title,
        _export_title(f"Sanity check of {METHODS[result.method].title}", side),
    )
    _chart(figure, key="anatomy_sanity_chart", theme=None)
    side.downloads(figure, result.maps, picked, f"sanity-{result.method}", "anatomy_sanity_files")
    checkpoint = result.checkpoint
    value = result.rank_correlation[checkpoint]
    stage = result.stages[checkpoint]
    if constant:
        st.warning(f"The map is constant at: {', '.join(constant)}; it says nothing about the image there.")
    if value is None:
        st.info(f"At stage “{stage}” the map is constant, so no rank correlation can be computed.")
    elif result.flagged:
        st.warning(
            f"{METHODS[result.method].title} barely changes: ρ = {value:.2f} at stage “{stage}” (head and half "
            f"the blocks random), |ρ| above {UNFAITHFUL_RANK_CORRELATION}. It does not follow the weights it explains."
        )
    else:
        st.success(
            f"{METHODS[result.method].title} follows the weights: ρ = {value:.2f} at stage “{stage}” "
            f"(head and half the blocks random); |ρ| of at most {UNFAITHFUL_RANK_CORRELATION} allowed."
        )
