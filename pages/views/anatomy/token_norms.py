"""Tab 7, Token norms: the length of every output token, and the patch features as colours."""

from __future__ import annotations

import numpy as np
import streamlit as st

from pages.views import ui
from pages.views.anatomy.kit import ModelSide, ViewComputation, _chart, _each_side, _overlay_chart, _title
from vitviz.figures.anatomy import norm_histogram_figure, rgb_grid_figure
from vitviz.forward.token_features import output_tokens
from vitviz.maths.token_features import (
    OutputTokens,
    PrincipalColours,
    TokenNorms,
    TokenPlace,
    high_norm_patches,
    patch_feature_colours,
    token_norms,
)
from vitviz.preprocess import ViewMode

__all__ = ["render_token_norms"]


_output_tokens = ViewComputation(output_tokens, "Reading the output tokens…")


@st.cache_data(show_spinner=False, max_entries=32)
def _cached_colours(
    model_key: tuple, digest: str, view: ViewMode, place: TokenPlace, _tokens: OutputTokens
) -> PrincipalColours:
    return patch_feature_colours(_tokens, place)


HIGH_NORM_FACTOR = 2.0  # a patch counts as high-norm above this multiple of the median patch norm
PLACES: dict[str, TokenPlace] = {
    "before the final norm (last block's output)": "before_norm",
    "after the final norm (forward_features output)": "after_norm",
}


def render_token_norms(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """Tab 7: the length of every output token, high-norm tokens named, and patch features as colours."""
    facts = sides[0].loaded.facts
    place_label = st.radio(
        "Read the tokens", list(PLACES), horizontal=True, key="anatomy_norms_place", index=0
    )
    place = PLACES[place_label]
    where = "before final norm" if place == "before_norm" else "after final norm"
    for side, tokens in _each_side(
        sides,
        f"read the output tokens of {facts.name}",
        lambda side: _output_tokens(side, picked),
    ):
        norms = token_norms(tokens, place)
        colours = _cached_colours(side.key, picked.digest, side.view, place, tokens)
        if tokens.final_norm == "Identity":
            st.caption("This model has no final norm before its head: both places give the same tokens.")
        norm_column, pca_column = st.columns(2)
        with norm_column:
            _overlay_chart(
                side.pixels(picked),
                norms.patch_norms,
                facts.stride_px,
                _title(f"Patch-token norm, {where}", side),
                "L2 norm",
                f"anatomy_norms_map_{side.suffix}",
            )
        with pca_column:
            ratios = ", ".join(f"{ratio:.0%}" for ratio in colours.explained_variance_ratio)
            _chart(
                rgb_grid_figure(
                    colours.rgb, _title("Patch features: 3 PCs as RGB", side), height=520, hover_name="PCs"
                ),
                key=f"anatomy_norms_pca_{side.suffix}",
                theme=None,
            )
            st.caption(f"Red, green, blue: principal components 1–3, explaining {ratios} of the variance.")
        _chart(
            norm_histogram_figure(norms, _title(f"Norms of all tokens, {where}", side)),
            key=f"anatomy_norms_histogram_{side.suffix}",
        )
        _norm_summary(norms)


def _norm_summary(norms: TokenNorms) -> None:
    """One line of numbers: median and largest patch norm, prefix norms, high-norm patches."""
    median = float(np.median(norms.patch_norms))
    prefix = " · ".join(
        f"{name} {value:.1f}" for name, value in zip(norms.prefix_names, norms.prefix_norms, strict=True)
    )
    high = high_norm_patches(norms, HIGH_NORM_FACTOR)
    peak = float(norms.patch_norms.max())
    text = f"Patch norms: median {median:.1f}, largest {peak:.1f} ({peak / median:.2f}× the median)." + (
        f" Prefix tokens: {prefix}." if prefix else ""
    )
    if high:
        listed = ", ".join(f"({row}, {col}) {value:.1f}" for row, col, value in high[:12])
        more = f" and {len(high) - 12} more" if len(high) > 12 else ""
        text += f" **{len(high)} high-norm patches** (> {HIGH_NORM_FACTOR:g}× median): {listed}{more}."
    else:
        text += f" No patch exceeds {HIGH_NORM_FACTOR:g}× the median norm: no high-norm artefact tokens here."
    st.markdown(text)
