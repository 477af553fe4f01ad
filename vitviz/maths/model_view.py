"""The "model view": one token's attention over the patches in every layer and head at once."""

from __future__ import annotations

import numpy as np

from vitviz.maths.attention import AttentionRecord, patch_token

__all__ = ["CLASS_QUERY", "model_view_maps", "query_label"]

# Query meaning "the class token", or the mean patch query for models that have no class token,
# as `vitviz.maths.attention.class_attention_map` reads it.
CLASS_QUERY = None


def model_view_maps(record: AttentionRecord, patch: tuple[int, int] | None = CLASS_QUERY) -> np.ndarray:
    """Every layer's and head's attention from one token over the patch grid.

    Args:
        record: captured attention of one image.
        patch: (row, col) of the querying patch, or `CLASS_QUERY` for the class token (the mean
            patch query when the model has no prefix token).

    Returns:
        (layers, heads, rows, cols) attention weights; prefix-token columns are left out.
    """
    prefix = record.num_prefix_tokens
    layers, heads = record.num_layers, record.num_heads
    if patch is not None:
        rows = record.attentions[:, :, patch_token(record, *patch), prefix:]  # (layers, heads, P)
    elif prefix > 0:
        rows = record.attentions[:, :, 0, prefix:]
    else:
        rows = record.attentions.mean(axis=2)  # mean over the patch queries, no prefix to drop
    return rows.reshape(layers, heads, *record.grid_size)


def query_label(record: AttentionRecord, patch: tuple[int, int] | None) -> str:
    """Words for the querying token, for titles."""
    if patch is not None:
        return f"patch ({patch[0]}, {patch[1]})"
    return "class token" if record.num_prefix_tokens > 0 else "mean of patches"
