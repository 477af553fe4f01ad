"""Class-agnostic attention maps as methods: attention rollout and one layer's raw attention."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from vitviz.capture import (
    AttentionCapture,
    InputCapture,
    class_attention_layers,
    grid_for,
    partitioned_attention_layers,
)
from vitviz.maths.attention import AttentionRecord, class_attention_map, rollout_relevance
from vitviz.maths.partitions import (
    fold_dilated_grids,
    fold_unfolded_patches,
    fold_windows,
    received_attention,
)
from vitviz.maths.rollout import attention_rollout, embed_class_attention, rollout_map
from vitviz.maths.sinks import detect_sinks, plan_rollout, rollout_statement
from vitviz.methods.base import AttentionKindMethod, reads_partitions
from vitviz.models import LoadedModel, ModelFacts

__all__ = [
    "AttentionRollout",
    "RawAttention",
    "attention_records",
    "class_attention_rollout",
    "partitioned_attention_map",
]


def attention_records(
    loaded: LoadedModel, pixels: torch.Tensor, modules: list[nn.Module] | None = None
) -> list[AttentionRecord]:
    """Every layer's attention for each image of a batch, as the records `vitviz.maths.attention` reads.

    Args:
        loaded: a ViT or hybrid.
        pixels: (B, 3, H, W) normalised input on the model's device.
        modules: the layers to record, when not every attention layer (CaiT's and XCiT's
            class-attention layers, whose rows are (1, N)).

    Returns:
        One record per image, with (layers, heads, N, N) attention ((layers, heads, 1, N) for
        class-attention layers).
    """
    facts = loaded.facts
    assert facts.grid_size is not None, f"{facts.name} has no token grid"
    with (
        torch.inference_mode(),
        AttentionCapture(loaded.model, modules=modules) as capture,
        grid_for(loaded.model, pixels),
    ):
        loaded.model(pixels)
    stacked = torch.stack(capture.attentions, dim=1).float().cpu().numpy()  # (B, layers, heads, N, N)
    return [
        AttentionRecord(
            attentions=np.ascontiguousarray(per_image),
            grid_size=facts.grid_size,
            num_prefix_tokens=facts.num_prefix_tokens,
            global_pool=facts.global_pool,
        )
        for per_image in stacked
    ]


def class_attention_rollout(
    loaded: LoadedModel,
    pixels: torch.Tensor,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
) -> tuple[torch.Tensor, str]:
    """Rollout through CaiT's self-attention layers followed by its class-attention rows.

    CaiT's talking heads mix the heads after the softmax, so a layer's weights may be negative: they
    are clipped at zero before the residual and the row normalisation of rollout.

    Returns:
        (B, rows, cols) relevance of each patch for the class token, and what it was read from.
    """
    facts = loaded.facts
    assert facts.grid_size is not None, f"{facts.name} has no token grid"
    self_layers, class_layers = class_attention_layers(loaded.model)
    with (
        torch.inference_mode(),
        AttentionCapture(loaded.model, modules=self_layers + class_layers) as capture,
    ):
        loaded.model(pixels)
    count = len(self_layers)
    self_attentions = [attention.float().clamp(min=0) for attention in capture.attentions[:count]]
    class_attentions = [attention.float() for attention in capture.attentions[count:]]
    layers = embed_class_attention(self_attentions, class_attentions, facts.num_prefix_tokens)
    rollout = attention_rollout(
        layers, head_fusion, discard_ratio, start_layer, num_prefix_tokens=facts.num_prefix_tokens
    )
    maps = rollout_map(rollout, facts.num_prefix_tokens, facts.grid_size, "token")
    source = f"{count} self-attention layers, then {len(class_attentions)} class-attention rows, from layer {start_layer}"
    return maps.cpu(), source


def partitioned_attention_map(
    loaded: LoadedModel, pixels: torch.Tensor, layer_index: int, head: int | None = None
) -> tuple[torch.Tensor, str]:
    """Raw attention of one layer that attends inside partitions of its feature map, put back on that map.

    Swin's windows and MaxViT's block attention are windows; MaxViT's grid attention, dilated
    grids; MobileViT's blocks, the attention between patches at each pixel position inside a patch
    (see `vitviz.capture.PartitionedAttention`). Inside each partition every query's row sums to 1;
    a cell's value is the attention its token receives, averaged over the partition's queries and
    the heads, so each partition's cells sum to 1 (MobileViT-v2's linear attention has one context
    score per patch, which is that already).

    Args:
        loaded: a model with such layers (`ModelFacts.partitioned_layers`).
        pixels: (B, 3, H, W) normalised input on the model's device.
        layer_index: from 0 in forward order; negative counts from the end.
        head: one head from 0 instead of the mean of the heads (None).

    Returns:
        (B, rows, cols) on the layer's own feature map, and what it was read from.
    """
    layers = partitioned_attention_layers(loaded.model)
    if not layers:
        raise ValueError(f"{loaded.facts.name} has no attention over windows, grids or unfolded patches")
    if not -len(layers) <= layer_index < len(layers):
        raise ValueError(f"attention layer {layer_index} outside {-len(layers)}..{len(layers) - 1}")
    index = layer_index % len(layers)
    layer = layers[index]
    with (
        torch.inference_mode(),
        AttentionCapture(loaded.model, modules=[layer.attention]) as capture,
        InputCapture(loaded.model, layer.owner) as entering,
    ):
        loaded.model(pixels)
    (attention,) = (
        capture.attentions
    )  # (groups, heads, queries, keys); v2's linear: (B, 1, positions, patches)
    assert entering.input is not None, f"{layer.name} did not run"
    linear = type(layer.attention).__name__ == "LinearSelfAttention"  # MobileViT-v2: one score, no heads
    heads = 1 if linear else attention.shape[1]
    if head is not None and not 0 <= head < heads:
        raise ValueError(f"head {head} outside 0..{heads - 1} of {layer.name}")
    if head is not None and not linear:
        attention = attention[:, head : head + 1]
    summary = f"mean of queries, head {head}" if head is not None else "mean of queries and heads"
    shape = entering.input.shape  # the feature map the layer partitions
    height, width = (int(side) for side in (shape[1:3] if layer.channels_last else shape[2:4]))
    batch = pixels.shape[0]
    rows, cols = layer.size
    # Swin's blocks keep the name the page has always given them.
    label = (
        f"window block {index}"
        if hasattr(layer.owner, "shift_size")
        else f"attention layer {index} ({layer.name})"
    )
    if layer.kind == "window":
        maps = fold_windows(received_attention(attention), batch, (height, width), layer.size)
        where = f"inside {rows}×{cols} windows on its {height}×{width} grid, {summary}"
    elif layer.kind == "grid":
        maps = fold_dilated_grids(received_attention(attention), batch, (height, width), layer.size)
        step_h, step_w = height // rows, width // cols
        apart = f"{step_h} apart" if step_h == step_w else f"{step_h} rows and {step_w} columns apart"
        where = f"inside dilated {rows}×{cols} grids (tokens {apart}) on its {height}×{width} grid, {summary}"
    else:
        patches = (-(-height // rows), -(-width // cols))
        area, count = rows * cols, patches[0] * patches[1]
        if linear:  # (B, 1, positions, patches)
            received, summary = attention.float()[:, 0], "one context score per patch"
        else:  # softmax attention between the patches, (B · positions, heads, patches, patches)
            received = received_attention(attention).reshape(batch, area, count)
        maps = fold_unfolded_patches(received, layer.size, patches)
        folded = (patches[0] * rows, patches[1] * cols)
        resized = "" if folded == (height, width) else f" (its {height}×{width} map resized to whole patches)"
        where = (
            f"between its {patches[0]}×{patches[1]} patches of {rows}×{cols} at each position inside a "
            f"patch, folded onto its {folded[0]}×{folded[1]} grid{resized}, {summary}"
        )
    return maps.cpu(), f"{label}: attention received {where}"


class _AttentionMap(AttentionKindMethod):
    """A map read from captured attention: ViTs and hybrids with global attention only, and no class."""

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
    attention_kinds: ClassVar[tuple[str, ...]] = ("global", "class-attention")

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        fusion = self.options.get("head_fusion", "mean")
        discard = float(self.options.get("discard_ratio", 0.0))
        start = int(self.options.get("start_layer", 0))
        sinks = self.options.get("sinks", "exclude")
        if self.facts.attention == "class-attention":
            maps, source = class_attention_rollout(self.loaded, pixels, fusion, discard, start)
            return maps, None, source
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

    On CaiT and XCiT the layers are the class-attention layers; on Swin, MaxViT and MobileViT, the
    layers that attend inside windows, dilated grids or unfolded patches of their feature map, each
    put back on that map (`partitioned_attention_map`).

    Options:
        layer: layer from 0; negative counts from the end (default -1, the last; on Swin, MaxViT and
            MobileViT 0, the first such layer, on the finest map).
        head: head from 0, or None for the mean over heads (default).
    """

    name: ClassVar[str] = "attention"
    title: ClassVar[str] = "Raw attention"
    # CaiT's and XCiT's class-attention layers: the class token's row over the patches.
    attention_kinds: ClassVar[tuple[str, ...]] = ("global", "class-attention", "cross-covariance")

    @classmethod
    def unavailable_reason(cls, facts: ModelFacts) -> str | None:
        """Swin's, MaxViT's and MobileViT's attention is shown on each layer's own feature map."""
        if reads_partitions(facts):
            return None
        return super().unavailable_reason(facts)

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        if reads_partitions(self.facts):  # each window, grid or patch position put back on its map
            head = self.options.get("head")
            layer = int(self.options.get("layer", 0))
            maps, source = partitioned_attention_map(
                self.loaded, pixels, layer, None if head is None else int(head)
            )
            return maps, None, source
        layer = int(self.options.get("layer", -1))
        head = self.options.get("head")
        modules, kind = None, "layer"
        if self.facts.attention != "global":  # only the class-attention layers attend between tokens
            modules, kind = class_attention_layers(self.model)[1], "class-attention layer"
        records = attention_records(self.loaded, pixels, modules)
        layers = records[0].num_layers
        if not -layers <= layer < layers:  # said as asked, before a negative layer counts from the end
            raise ValueError(f"{kind} {layer} outside {-layers}..{layers - 1}")
        layer = layer + layers if layer < 0 else layer
        maps = [class_attention_map(record, layer, head) for record in records]
        heads = "mean of heads" if head is None else f"head {head}"
        return torch.from_numpy(np.stack(maps)), None, f"{kind} {layer}, {heads}"
