"""One forward that keeps every layer's attention and the output: the record every attention map reads."""

from __future__ import annotations

import torch

from vitviz.capture import capture_attention
from vitviz.maths.attention import AttentionRecord
from vitviz.models import LoadedModel, ModelError, no_token_attention_reason
from vitviz.preprocess import ImageView, check_view

__all__ = ["record_attention"]


def record_attention(loaded: LoadedModel, view: ImageView) -> AttentionRecord:
    """Runs the model once on the view and keeps every attention map and the output.

    One forward gives both: predictions read from `record.logits` agree with every map.

    Args:
        loaded: the model; shared models are only read (see vitviz.capture).
        view: what the model sees of the photo (`vitviz.preprocess.image_view`).

    Raises:
        ModelError: the model has no self-attention (a CNN), or cannot take the "aspect" view.
    """
    facts = loaded.facts
    if not facts.global_attention:
        raise ModelError(no_token_attention_reason(facts, "attention maps"))
    check_view(loaded, view)
    pixels = view.tensor.to(loaded.device)
    assert view.grid_size is not None, "a ViT's view has a token grid"
    tokens = facts.num_prefix_tokens + view.grid_size[0] * view.grid_size[1]
    # Each layer's attention is copied here as it is made, instead of kept and stacked afterwards;
    # a capture of another token count fails in the copy.
    stacked = torch.empty((facts.num_layers, 1, facts.num_heads, tokens, tokens), device=loaded.device)
    output, attentions = capture_attention(loaded.model, pixels, into=stacked)
    assert len(attentions) == facts.num_layers, (
        f"captured {len(attentions)} layers, expected {facts.num_layers}"
    )
    attentions = stacked[:, 0].cpu().numpy()  # (layers, heads, N, N); no copy on the CPU
    attentions.setflags(write=False)  # records are shared between sessions by the app's cache
    logits = output[0].float().cpu().numpy() if facts.has_classifier else None
    return AttentionRecord(
        attentions=attentions,
        grid_size=view.grid_size,
        num_prefix_tokens=facts.num_prefix_tokens,
        global_pool=facts.global_pool,
        logits=logits,
        view=view,
    )
