"""One forward that keeps one head's queries, keys and attention."""

from __future__ import annotations

import torch

from vitviz.capture import AttentionCapture, QueryKeyCapture
from vitviz.maths.qk import QueryKeys
from vitviz.models import LoadedModel, ModelError, no_token_attention_reason, prefix_token_names
from vitviz.preprocess import ImageView, check_view

__all__ = ["query_keys"]


@torch.inference_mode()
def query_keys(loaded: LoadedModel, view: ImageView, layer: int, head: int) -> QueryKeys:
    """Runs the model once and keeps one head's queries, keys and attention.

    Raises:
        ModelError: the model has no attention (a CNN).
        ValueError: layer or head out of range.
    """
    facts = loaded.facts
    if not facts.global_attention:
        raise ModelError(no_token_attention_reason(facts, "queries and keys over one token grid"))
    if not 0 <= head < facts.num_heads:
        raise ValueError(f"head {head} outside 0..{facts.num_heads - 1}")
    check_view(loaded, view)
    pixels = view.tensor.to(loaded.device)
    with QueryKeyCapture(loaded.model, layer) as capture, AttentionCapture(loaded.model) as attention:
        loaded.model(pixels)
    assert capture.queries is not None and capture.keys is not None, "the hooked layer did not run"
    return QueryKeys(
        queries=capture.queries[0, head].float().cpu().numpy(),
        keys=capture.keys[0, head].float().cpu().numpy(),
        attention=attention.attentions[layer][0, head].float().cpu().numpy(),
        scale=capture.scale,
        layer=layer,
        head=head,
        grid_size=facts.grid_size,
        prefix_names=prefix_token_names(loaded.model),
    )
