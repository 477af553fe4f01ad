"""One forward that keeps a ViT's output tokens, before and after its final norm."""

from __future__ import annotations

import torch
from torch import nn

from vitviz.capture import InputCapture
from vitviz.maths.token_features import OutputTokens
from vitviz.models import LoadedModel, ModelError, no_token_grid_reason, prefix_token_names
from vitviz.preprocess import ImageView, check_view

__all__ = ["output_tokens"]


@torch.inference_mode()
def output_tokens(loaded: LoadedModel, view: ImageView) -> OutputTokens:
    """Runs `forward_features` once and keeps its output and the input of the final norm.

    Raises:
        ModelError: the model has no tokens (a CNN).
    """
    facts = loaded.facts
    if facts.family == "cnn" or facts.grid_size is None:
        raise ModelError(no_token_grid_reason(facts, "token features"))
    model = loaded.model
    final_norm = getattr(model, "norm", None)
    check_view(loaded, view)
    pixels = view.tensor.to(loaded.device)
    if isinstance(final_norm, nn.Module):
        with InputCapture(model, final_norm) as capture:
            after = model.forward_features(pixels)  # (1, N, D)
        before = capture.input if capture.input is not None else after
    else:
        after = before = model.forward_features(pixels)
    assert after.shape[1] == facts.num_tokens, f"{after.shape[1]} tokens, expected {facts.num_tokens}"
    return OutputTokens(
        before_norm=before[0].float().cpu().numpy(),
        after_norm=after[0].float().cpu().numpy(),
        grid_size=facts.grid_size,
        prefix_names=prefix_token_names(model),
        final_norm=type(final_norm).__name__ if isinstance(final_norm, nn.Module) else "none",
    )
