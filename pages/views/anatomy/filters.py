"""Tab 2, Filters: principal components of the patch-embedding filters (the ViT paper's Fig. 7 left)."""

from __future__ import annotations

import streamlit as st

from pages.views import ui
from pages.views.anatomy.kit import ModelSide, WeightsComputation, _chart, _columns
from vitviz.figures.anatomy import explained_variance_figure, filter_components_figure
from vitviz.maths.filters import (
    FilterComponents,
    FiltersNotApplicableError,
    component_tiles,
    embedding_filter_components,
    filter_spectrum,
    spectrum_sentence,
)
from vitviz.text import picture_size_text

__all__ = ["render_filters"]


_components = WeightsComputation(embedding_filter_components, "PCA of the patch-embedding filters…")


FILTER_TILE_PX = 88  # the side of a filter tile on screen, one model shown
FILTER_TILE_PX_BESIDE = 50  # the same beside the untrained twin


def render_filters(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """Tab 2: principal components of the linear patch-embedding filters (paper Fig. 7 left)."""
    try:  # the twin has the same architecture: one message covers both
        results = [_components(side) for side in sides]
    except FiltersNotApplicableError as error:
        st.info(f"Does not apply: {error}")
        return
    # One tile size for every side, small enough for two sides in half-width columns at 1280 px.
    tile_px = FILTER_TILE_PX if len(sides) == 1 else FILTER_TILE_PX_BESIDE
    for column, side, components in zip(_columns(len(sides)), sides, results, strict=True):
        with column:
            _chart(
                filter_components_figure(
                    component_tiles(components.components),
                    components.explained_variance_ratio,
                    f"First {components.num_components} PCs of the filters · {side.label}",
                    tile_px=tile_px,
                ),
                key=f"anatomy_filters_{side.suffix}",
                theme=None,
                width="content",
            )
            total = components.explained_variance_ratio.sum()
            _chart(
                explained_variance_figure(
                    components.explained_variance_ratio,
                    f"Explained variance: {total:.1%} in all · {side.label}",
                ),
                key=f"anatomy_variance_{side.suffix}",
            )
    facts = sides[0].loaded.facts
    height, width = facts.patch_size or (0, 0)
    st.caption(
        f"Each of the {facts.embed_dim} filters of the patch embedding is an RGB picture of "
        f"{picture_size_text(width=width, height=height)}; "
        "PCA (scikit-learn) finds the directions they vary along. Tiles are titled with the component's "
        "number and its share of the variance; each is stretched to full contrast on its own, and a "
        "component's sign is arbitrary. The ViT paper found smooth, low-frequency basis functions "
        f"for its own models. Measured here: {_spectrum_sentence(sides, results[0])}"
    )


def _spectrum_sentence(sides: list[ModelSide], components: FilterComponents) -> str:
    """What the chosen model's filter components are made of, measured against its untrained twin."""
    model = sides[0]
    measured = filter_spectrum(components.components)
    if not model.loaded.trained:
        return (
            f"these random filters' components keep {measured.median_low_frequency_share:.1%} of their "
            f"energy below {measured.cutoff:g} cycles per pixel (white noise {measured.white_noise_share:.1%})."
        )
    if len(sides) > 1:
        twin = sides[1]
    else:
        choice = model.choice
        twin = ModelSide(ui.cached_twin(choice.name, choice.weights, choice.device), choice, twin=True)
    untrained = filter_spectrum(_components(twin).components)
    return spectrum_sentence(measured, untrained, f"the {model.label} {model.loaded.facts.name}")
