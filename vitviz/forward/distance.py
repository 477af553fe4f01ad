"""Mean attention distance over a set of images: each layer's attention reduced as the model makes it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from vitviz.capture import AttentionCapture
from vitviz.maths.distance import AttentionDistances, patch_distances
from vitviz.models import LoadedModel, ModelError, no_token_attention_reason
from vitviz.preprocess import ImageView, check_view

__all__ = ["ProgressCallback", "attention_distances_over_images"]

# Called as progress(done, total) after each layer of each batch: done of total layer passes.
ProgressCallback = Callable[[int, int], None]


# Attention bytes one layer may hold for a whole batch; bounds the batch size of large models.
_ATTENTION_BYTES_PER_BATCH = 256 * 1024 * 1024


class _DistanceCapture(AttentionCapture):
    """Reduces each layer's attention to (B, heads) distances as it is computed.

    Only one layer's attention is alive at a time, so a batch of images costs the memory of one
    layer rather than of all of them.
    """

    def __init__(
        self,
        model: nn.Module,
        distances: torch.Tensor,
        num_prefix_tokens: int,
        on_layer: Callable[[], None],
    ) -> None:
        super().__init__(model)
        self.distances = distances  # (P, P) pixels, on the model's device
        self.num_prefix_tokens = num_prefix_tokens
        self.on_layer = on_layer
        self.layer_distances: list[torch.Tensor] = []

    def __enter__(self) -> _DistanceCapture:
        super().__enter__()
        self.layer_distances = []
        return self

    def _record(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: object) -> None:
        prefix = self.num_prefix_tokens
        patch_attention = inputs[0][..., prefix:, prefix:].float()  # (B, heads, P, P)
        assert patch_attention.shape[-1] == self.distances.shape[0], "grid does not match the attention"
        per_query = (patch_attention * self.distances).sum(dim=-1)  # (B, heads, P)
        self.layer_distances.append(per_query.mean(dim=-1).cpu())  # (B, heads)
        self.on_layer()


def _batch_size(num_heads: int, num_tokens: int, requested: int | None) -> int:
    if requested is not None:
        if requested < 1:
            raise ValueError(f"batch size must be at least 1, got {requested}")
        return requested
    per_image = num_heads * num_tokens * num_tokens * 4  # one layer's float32 attention
    return max(1, _ATTENTION_BYTES_PER_BATCH // per_image)


@torch.inference_mode()
def attention_distances_over_images(
    loaded: LoadedModel,
    views: Sequence[ImageView],
    batch_size: int | None = None,
    progress: ProgressCallback | None = None,
) -> AttentionDistances:
    """Mean attention distance per image, layer and head, images run through the model in batches.

    Each image is seen in its view, as for the attention maps, so distances are in pixels of that input.

    Args:
        loaded: a ViT or hybrid.
        views: the images' views (`vitviz.preprocess.image_view`), one model input size; at least one.
        batch_size: images per forward pass; by default as many as fit a memory budget for one
            layer's attention (all ten images of a ViT-S at 224 px in one pass).
        progress: called as progress(done, total) after every layer of every batch.

    Raises:
        ModelError: the model has no self-attention (a CNN).
        ValueError: no images.
    """
    facts = loaded.facts
    if not facts.global_attention or facts.grid_size is None or facts.stride_px is None:
        raise ModelError(no_token_attention_reason(facts, "attention distances"))
    if not views:
        raise ValueError("mean attention distance needs at least one image")
    for view in views:
        check_view(loaded, view)
    size = _batch_size(facts.num_heads, facts.num_tokens, batch_size)
    batches = [views[start : start + size] for start in range(0, len(views), size)]
    total = len(batches) * facts.num_layers
    done = 0

    def on_layer() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    distances = torch.from_numpy(patch_distances(facts.grid_size, facts.stride_px)).float()
    distances = distances.to(loaded.device)
    per_batch: list[torch.Tensor] = []
    for batch in batches:
        pixels = torch.cat([view.tensor for view in batch]).to(loaded.device)
        with _DistanceCapture(loaded.model, distances, facts.num_prefix_tokens, on_layer) as capture:
            loaded.model(pixels)
        per_batch.append(torch.stack(capture.layer_distances, dim=1))  # (B, layers, heads)
    return AttentionDistances(
        per_image=torch.cat(per_batch).numpy().astype(np.float64),
        grid_size=facts.grid_size,
        stride_px=facts.stride_px,
        input_size=facts.input_size,
    )
