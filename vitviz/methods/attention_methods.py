"""Class-agnostic attention maps as methods: attention rollout and one layer's raw attention."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from vitviz.capture import capture_attention
from vitviz.maths.attention import AttentionRecord, class_attention_map, rollout_relevance
from vitviz.maths.sinks import detect_sinks, plan_rollout, rollout_statement
from vitviz.methods.base import ExplanationMethod
from vitviz.models import LoadedModel

__all__ = ["AttentionRollout", "RawAttention", "attention_records"]


def attention_records(loaded: LoadedModel, pixels: torch.Tensor) -> list[AttentionRecord]:
    """Every layer's attention for each image of a batch, as the records `vitviz.maths.attention` reads.

    Args:
        loaded: a ViT or hybrid.
        pixels: (B, 3, H, W) normalised input on the model's device.

    Returns:
        One record per image, with (layers, heads, N, N) attention.
    """
    facts = loaded.facts
    assert facts.grid_size is not None, f"{facts.name} has no token grid"
    _, attentions = capture_attention(loaded.model, pixels)
    stacked = torch.stack(attentions, dim=1).float().cpu().numpy()  # (B, layers, heads, N, N)
    return [
        AttentionRecord(
            attentions=np.ascontiguousarray(per_image),
            grid_size=facts.grid_size,
            num_prefix_tokens=facts.num_prefix_tokens,
            global_pool=facts.global_pool,
        )
        for per_image in stacked
    ]


class _AttentionMap(ExplanationMethod):
    """A map read from captured attention: ViTs and hybrids only, and no class."""

    families = ("vit", "hybrid")
    class_specific = False


class AttentionRollout(_AttentionMap):
    """Attention rollout (Abnar & Zuidema, 2020) read out for the model's output token(s).

    Options:
        head_fusion: "mean", "max" or "min" (default mean).
        discard_ratio: fraction of each row's lowest patch weights dropped, in [0, 1) (default 0).
        start_layer: the earliest layer that takes part (default 0).
        sinks: "exclude" (default) to start after the layers where attention sinks dominate and leave
            sinks out of later ones (`vitviz.maths.sinks.plan_rollout`), "raw" for every layer as captured.

    The result's `source` is the rollout's statement (`rollout_statement`): which layers took part
    and which sinks were skipped, as a page prints it next to the map.
    """

    name: ClassVar[str] = "rollout"
    title: ClassVar[str] = "Attention rollout"

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        fusion = self.options.get("head_fusion", "mean")
        discard = float(self.options.get("discard_ratio", 0.0))
        start = int(self.options.get("start_layer", 0))
        sinks = self.options.get("sinks", "exclude")
        maps, statements = [], []
        for record in attention_records(self.loaded, pixels):
            report = detect_sinks(record)
            maps.append(rollout_relevance(record, fusion, discard, start, sinks=sinks, sink_report=report))
            statements.append(rollout_statement(plan_rollout(report, start, sinks)))
        # Images of a batch may differ in their sinks: one statement when they agree.
        source = statements[0] if len(set(statements)) == 1 else "; ".join(dict.fromkeys(statements))
        return torch.from_numpy(np.stack(maps)), None, source


class RawAttention(_AttentionMap):
    """One layer's attention from the class token (the mean patch query when there is none).

    Options:
        layer: layer from 0; negative counts from the end (default -1, the last).
        head: head from 0, or None for the mean over heads (default).
    """

    name: ClassVar[str] = "attention"
    title: ClassVar[str] = "Raw attention"

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        layer = int(self.options.get("layer", -1))
        head = self.options.get("head")
        layers = self.facts.num_layers
        layer = layer + layers if layer < 0 else layer
        maps = [class_attention_map(record, layer, head) for record in attention_records(self.loaded, pixels)]
        heads = "mean of heads" if head is None else f"head {head}"
        return torch.from_numpy(np.stack(maps)), None, f"layer {layer}, {heads}"
