"""Anatomy's tabs in menu order, each with the function that draws it and why a CNN has none; the
paragraphs that introduce some of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pages.views import ui
from pages.views.anatomy.all_heads import render_all_heads
from pages.views.anatomy.attention_distance import render_attention_distance
from pages.views.anatomy.filters import render_filters
from pages.views.anatomy.hybrid_stem import render_hybrid
from pages.views.anatomy.kit import ModelSide
from pages.views.anatomy.logit_lens import render_logit_lens
from pages.views.anatomy.patches_as_words import render_patches
from pages.views.anatomy.position_embeddings import render_position_embeddings
from pages.views.anatomy.queries_keys import render_queries_keys
from pages.views.anatomy.resolution import render_resolution
from pages.views.anatomy.sanity_check import render_sanity
from pages.views.anatomy.token_norms import render_token_norms

__all__ = ["INTRODUCTIONS", "TAB", "TABS", "Tab"]

TAB = "anatomy_tab"  # the open tab


@dataclass(frozen=True)
class Tab:
    """One tab of the page: the function that draws it, and why it does not apply to a CNN."""

    render: Callable[[list[ModelSide], ui.ImageChoice], None]
    cnn_reason: str | None = None  # None: the tab itself says why a CNN has nothing to show


def _lacks(what: str) -> str:
    return f"It has no {what}. Pick a ViT or a hybrid to see this tab."


# The tabs in menu order.
TABS: dict[str, Tab] = {
    "Patches as words": Tab(
        render_patches,
        "It never cuts the image into patches or tokens; its convolutions slide over the pixels. Pick a "
        "ViT or a hybrid to see patches as words.",
    ),
    "Filters": Tab(render_filters),
    "Position embeddings": Tab(render_position_embeddings),
    "Attention distance": Tab(
        render_attention_distance,
        "It has no attention heads; how far it looks is set by its kernel sizes and depth (its receptive "
        "field), not learned per head.",
    ),
    "Resolution": Tab(render_resolution, _lacks("patch grid and no position embedding to interpolate")),
    "Hybrid stem": Tab(render_hybrid, _lacks("token grid; its whole body is the CNN")),
    "Token norms": Tab(render_token_norms, _lacks("output tokens")),
    "All heads": Tab(render_all_heads, _lacks("attention heads")),
    "Queries & keys": Tab(render_queries_keys, _lacks("queries and keys")),
    "Logit lens": Tab(render_logit_lens, _lacks("tokens to read through the head layer by layer")),
    "Sanity check": Tab(render_sanity),
}

# The paragraph the page draws above a tab that applies, by tab; a tab not here introduces itself.
INTRODUCTIONS: dict[str, str] = {
    "Resolution": (
        "The ViT paper fine-tunes at a higher resolution than it pre-trains: the patch size stays, so a "
        "larger image gives **more tokens**, and the learned position embedding is **interpolated** "
        "(bicubic, in 2-D) to the larger grid. The model's weights are otherwise unchanged. A copy of "
        "the model is resized here; the loaded model is left as it is."
    ),
    "Token norms": (
        "The length (L2 norm) of every output token. *Vision Transformers Need Registers* (Darcet et al.) "
        "found that large ViTs trained without register tokens produce a few **high-norm tokens** on "
        "background patches, which they use as scratch space; register tokens take that role instead. "
        "The right-hand map colours each patch by the first three principal components of the patch "
        "features: patches the model sees alike get alike colours."
    ),
    "Queries & keys": (
        "One head's **queries** (●) and **keys** (✕) for every token, placed together in 2-D, coloured "
        "by grid position (hue: column, lightness: row), as in *AttentionViz*. A query attends most to "
        "the keys it points along, so where queries and keys of some patches mingle, the head groups those "
        "patches together. Prefix tokens are drawn large and named."
    ),
}
