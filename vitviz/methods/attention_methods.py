"""Class-agnostic attention maps as methods: attention rollout and one layer's raw attention."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from vitviz.capture import AttentionCapture, class_attention_layers, grid_for
from vitviz.maths.attention import AttentionRecord, class_attention_map, rollout_relevance
from vitviz.maths.rollout import attention_rollout, embed_class_attention, rollout_map
from vitviz.maths.sinks import detect_sinks, plan_rollout, rollout_statement
from vitviz.methods.base import AttentionKindMethod
from vitviz.models import LoadedModel, ModelFacts

__all__ = [
    "AttentionRollout",
    "RawAttention",
    "attention_records",
    "class_attention_rollout",
    "window_attention_map",
    "window_blocks",
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


def window_blocks(model: nn.Module) -> list[nn.Module]:
    """A Swin model's blocks whose windows are not shifted, in forward order (their windows tile the grid as is)."""
    return [
        module
        for module in model.modules()
        if hasattr(module, "shift_size")
        and hasattr(module, "input_resolution")
        and isinstance(module._modules.get("attn"), nn.Module)
        and not any(module.shift_size)
    ]


def window_attention_map(
    loaded: LoadedModel, pixels: torch.Tensor, block_index: int
) -> tuple[torch.Tensor, str]:
    """Raw attention per window of one unshifted Swin block, assembled onto that stage's grid.

    Inside each window every token's row sums to 1; a cell's value is the attention its token
    receives, averaged over the window's queries and the heads, so each window's cells sum to 1.

    Returns:
        (B, rows, cols) on the block's own grid, and what it was read from.
    """
    blocks = window_blocks(loaded.model)
    if not blocks:
        raise ValueError(f"{loaded.facts.name} has no unshifted window-attention block")
    if not -len(blocks) <= block_index < len(blocks):
        raise ValueError(f"window block {block_index} outside 0..{len(blocks) - 1}")
    index = block_index % len(blocks)
    block = blocks[index]
    with torch.inference_mode(), AttentionCapture(loaded.model, modules=[block.attn]) as capture:
        loaded.model(pixels)
    (attention,) = capture.attentions  # (B · windows, heads, area, area)
    height, width = (int(side) for side in block.input_resolution)
    window_h, window_w = (int(side) for side in block.window_size)
    across, down = (
        -(-width // window_w),
        -(-height // window_h),
    )  # windows per row and column, padding included
    batch = pixels.shape[0]
    received = attention.float().mean(dim=1).mean(dim=-2)  # (B · windows, area)
    tiles = received.reshape(batch, down, across, window_h, window_w).permute(0, 1, 3, 2, 4)
    maps = tiles.reshape(batch, down * window_h, across * window_w)[:, :height, :width]
    source = (
        f"window block {index}: attention received inside {window_h}×{window_w} windows on its "
        f"{height}×{width} grid, mean of queries and heads"
    )
    return maps.cpu(), source


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

    On CaiT and XCiT the layers are the class-attention layers; on Swin, the unshifted window
    blocks, each window's attention assembled onto its stage's grid (`window_attention_map`).

    Options:
        layer: layer from 0; negative counts from the end (default -1, the last; on Swin 0, the
            first stage's first block, the finest grid).
        head: head from 0, or None for the mean over heads (default).
    """

    name: ClassVar[str] = "attention"
    title: ClassVar[str] = "Raw attention"
    # CaiT's and XCiT's class-attention layers: the class token's row over the patches.
    attention_kinds: ClassVar[tuple[str, ...]] = ("global", "class-attention", "cross-covariance")

    @classmethod
    def unavailable_reason(cls, facts: ModelFacts) -> str | None:
        """Swin's windows are shown one window at a time, assembled onto the stage's grid."""
        if facts.family == "hierarchical" and facts.attention == "windowed":
            return None
        return super().unavailable_reason(facts)

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        if self.facts.attention == "windowed":  # Swin: each window's attention, assembled onto its stage
            maps, source = window_attention_map(self.loaded, pixels, int(self.options.get("layer", 0)))
            return maps, None, source
        layer = int(self.options.get("layer", -1))
        head = self.options.get("head")
        modules, kind = None, "layer"
        if self.facts.attention != "global":  # only the class-attention layers attend between tokens
            modules, kind = class_attention_layers(self.model)[1], "class-attention layer"
        records = attention_records(self.loaded, pixels, modules)
        layers = records[0].num_layers
        layer = layer + layers if layer < 0 else layer
        maps = [class_attention_map(record, layer, head) for record in records]
        heads = "mean of heads" if head is None else f"head {head}"
        return torch.from_numpy(np.stack(maps)), None, f"{kind} {layer}, {heads}"
