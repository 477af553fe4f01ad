"""Attention maps over the token grid of one image: raw attention per layer and head, and rollout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from vitviz.maths.rollout import HeadFusion, attention_rollout, rollout_map
from vitviz.maths.sinks import SinkMode, SinkReport, detect_sinks, plan_rollout

if TYPE_CHECKING:  # a record only names the view it was made on; making views is vitviz.preprocess's
    from vitviz.preprocess import ImageView

__all__ = [
    "AttentionRecord",
    "class_attention_map",
    "patch_token",
    "query_attention_map",
    "rollout_relevance",
]


@dataclass(frozen=True)
class AttentionRecord:
    """Every layer's attention for one image, kept so that maps can be read without a new forward."""

    attentions: np.ndarray  # (layers, heads, N, N) float32, N = prefix tokens + rows * cols
    grid_size: tuple[int, int]  # (rows, cols) of the patch tokens: the view's grid, not always the model's
    num_prefix_tokens: int  # class / distillation / register tokens before the patches
    global_pool: str  # how the model's head pools its tokens
    # The same forward's output: (classes,) logits, or None for a model without a classifier head.
    logits: np.ndarray | None = None
    view: ImageView | None = None  # what the model saw of the photo; None for a record built by hand

    @property
    def num_layers(self) -> int:
        return self.attentions.shape[0]

    @property
    def num_heads(self) -> int:
        return self.attentions.shape[1]

    @property
    def pooling(self) -> str:
        """Which rows stand for the model's output: the class token's, or the patches' mean."""
        return "token" if self.num_prefix_tokens > 0 and self.global_pool == "token" else "avg"


def _check_layer_head(record: AttentionRecord, layer: int, head: int | None) -> None:
    if not 0 <= layer < record.num_layers:
        raise ValueError(f"layer {layer} outside 0..{record.num_layers - 1}")
    if head is not None and not 0 <= head < record.num_heads:
        raise ValueError(f"head {head} outside 0..{record.num_heads - 1}")


def patch_token(record: AttentionRecord, row: int, col: int) -> int:
    """The sequence index of the patch token at (row, col) of the grid."""
    rows, cols = record.grid_size
    if not (0 <= row < rows and 0 <= col < cols):
        raise ValueError(f"patch ({row}, {col}) outside the {rows}×{cols} grid")
    return record.num_prefix_tokens + row * cols + col


def query_attention_map(record: AttentionRecord, layer: int, head: int | None, query: int) -> np.ndarray:
    """How much token `query` attends to each patch token, in one layer.

    Args:
        record: captured attention.
        layer: layer index from 0, as `model.blocks[layer]`.
        head: head index from 0, or None for the mean over heads.
        query: sequence index of the attending token (0 is the class token when there is one).

    Returns:
        (rows, cols) attention weights; prefix-token columns are left out, so they need not sum to 1.
    """
    _check_layer_head(record, layer, head)
    layer_attention = record.attentions[layer]  # (heads, N, N)
    weights = layer_attention.mean(axis=0) if head is None else layer_attention[head]  # (N, N)
    return weights[query, record.num_prefix_tokens :].reshape(record.grid_size)


def class_attention_map(record: AttentionRecord, layer: int, head: int | None) -> np.ndarray:
    """The class token's attention over the patches; the mean patch query when there is no class token.

    Returns:
        (rows, cols) attention weights.
    """
    if record.num_prefix_tokens > 0:
        return query_attention_map(record, layer, head, query=0)
    _check_layer_head(record, layer, head)
    layer_attention = record.attentions[layer]
    weights = layer_attention.mean(axis=0) if head is None else layer_attention[head]
    return weights.mean(axis=0).reshape(record.grid_size)


def rollout_relevance(
    record: AttentionRecord,
    head_fusion: HeadFusion = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    *,
    sinks: SinkMode = "exclude",
    sink_report: SinkReport | None = None,
) -> np.ndarray:
    """Attention rollout read out as a relevance map over the patch grid.

    Args:
        record: captured attention.
        head_fusion: how each layer's heads are combined.
        discard_ratio: fraction of each row's lowest patch weights dropped.
        start_layer: the earliest layer that takes part.
        sinks: "exclude" (default) starts after the leading layers where attention sinks dominate and
            leaves sinks out of later layers where they dominate (`vitviz.maths.sinks.plan_rollout`);
            "raw" multiplies every layer from `start_layer` as captured.
        sink_report: the record's sinks when already detected (`detect_sinks`), to save the work.

    Returns:
        (rows, cols) relevance of each patch for the model's output token(s).
    """
    report = sink_report if sink_report is not None else detect_sinks(record)
    plan = plan_rollout(report, start_layer, sinks)
    stacked = torch.tensor(record.attentions)  # a copy: the record's arrays are read-only
    attentions = [layer[None] for layer in stacked]  # (1, heads, N, N) per layer
    rollout = attention_rollout(
        attentions,
        head_fusion=head_fusion,
        discard_ratio=discard_ratio,
        start_layer=plan.start_layer,
        num_prefix_tokens=record.num_prefix_tokens,
        excluded_tokens=plan.excluded,
    )
    relevance = rollout_map(rollout, record.num_prefix_tokens, record.grid_size, record.pooling)
    return relevance[0].numpy()
