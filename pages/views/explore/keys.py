"""The Explore page's session-state keys, shared by its sections and its shared links."""

from __future__ import annotations

from vitviz.models import ModelFacts

__all__ = [
    "ATTENTION_CHART",
    "CLICKED_PATCH",
    "GRID_CHART",
    "GRID_FIGURE",
    "HEAD",
    "OPACITY",
    "PARTITIONED_LAYER",
    "QUERY_KIND",
    "QUERY_PATCH",
    "RAW_COLOURS",
    "RAW_ROLLOUT",
    "SEEN_SELECTIONS",
    "VIEW",
    "class_query",
]

OPACITY = "explore_opacity"
VIEW = "explore_view"
RAW_COLOURS = "explore_raw_colours"
RAW_ROLLOUT = "explore_raw_rollout"
GRID_CHART = "explore_grid_chart"
GRID_FIGURE = "explore_grid_figure"  # (what it was drawn from, the figure): the grid of the last run
ATTENTION_CHART = "explore_attention_chart"
QUERY_PATCH = "explore_query_patch"
SEEN_SELECTIONS = "explore_seen_selections"
QUERY_KIND = "explore_query_kind"
PARTITIONED_LAYER = "explore_partitioned_layer"
HEAD = "explore_head"
CLICKED_PATCH = "clicked patch"


def class_query(facts: ModelFacts) -> str:
    """The query option of a map read from the class token, or from the mean of patches without one."""
    return "class token" if facts.num_prefix_tokens else "mean of patches"
