"""Logit lens: what each layer's tokens already predict when read through the model's final norm and head."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vitviz.capture import ModuleOutputs
from vitviz.models import LoadedModel, ModelError, no_token_grid_reason
from vitviz.predict import NoClassifierError, Prediction, top_predictions
from vitviz.preprocess import ImageView, check_view

__all__ = ["LogitLens", "logit_lens", "logit_lens_pixels"]


@dataclass(frozen=True)
class LogitLens:
    """Each layer's reading of one image through the model's own final norm and head.

    Layer l is the residual stream after block l (numbered from 0); the last layer's reading is
    the model's own output.
    """

    predictions: list[list[Prediction]]  # per layer: top-k of the pooled tokens, as the model pools
    logits: np.ndarray  # (layers, classes) float32 of the pooled tokens
    patch_classes: np.ndarray  # (layers, rows, cols) int64: the top class of each patch token alone
    patch_probabilities: np.ndarray  # (layers, rows, cols) float32: that class's probability
    grid_size: tuple[int, int]  # (rows, cols)
    pooling: str  # how the tokens were pooled: the model's `global_pool`

    @property
    def num_layers(self) -> int:
        return int(self.logits.shape[0])


def _lens_parts(loaded: LoadedModel) -> tuple[nn.ModuleList | nn.Sequential, nn.Module]:
    """The model's blocks and final norm, with clear errors for models the lens cannot read."""
    facts = loaded.facts
    model = loaded.model
    if facts.family == "cnn" or facts.grid_size is None:
        raise ModelError(no_token_grid_reason(facts, "token stream for a logit lens"))
    if not facts.has_classifier:
        raise NoClassifierError(
            f"{facts.name} has no classifier head to read its layers through; "
            "fine-tune one first (python -m vitviz finetune)."
        )
    blocks = getattr(model, "blocks", None)
    norm = getattr(model, "norm", None)
    if (
        not isinstance(blocks, nn.ModuleList | nn.Sequential)
        or norm is None
        or not hasattr(model, "forward_head")
    ):
        raise ModelError(f"{facts.name} has no blocks → norm → forward_head layout for a logit lens")
    return blocks, norm


def _token_logits(model: nn.Module, normed: torch.Tensor) -> torch.Tensor:
    """Every token through the head alone, without pooling.

    Args:
        normed: (B, T, C) tokens after the final norm.

    Returns:
        (B, T, classes); a distilled model averages its two heads, as its own eval forward does.
        (An attention-pool head is skipped: a token is read straight through the classifier.)
    """
    tokens = getattr(model, "fc_norm", nn.Identity())(normed)
    classifier = model.get_classifier()
    if isinstance(classifier, tuple):
        return torch.stack([head(tokens) for head in classifier]).mean(dim=0)
    return classifier(tokens)


@torch.inference_mode()
def logit_lens_pixels(loaded: LoadedModel, pixels: torch.Tensor, topk: int = 5) -> LogitLens:
    """The logit lens of one prepared input.

    Args:
        loaded: a ViT or hybrid with a classifier head; shared, left as it was.
        pixels: (1, 3, H, W) normalised input at the model's input size.
        topk: classes listed per layer.

    Returns:
        The lens; its last layer equals the model's own output.
    """
    assert pixels.ndim == 4 and pixels.shape[0] == 1, f"expected (1, 3, H, W), got {tuple(pixels.shape)}"
    blocks, norm = _lens_parts(loaded)
    model = loaded.model
    facts = loaded.facts
    with ModuleOutputs(model, list(blocks)) as capture:
        model(pixels.to(loaded.device))
    streams = [tokens for tokens in capture.outputs if tokens is not None]
    assert len(streams) == len(blocks), f"{len(blocks) - len(streams)} blocks did not run"
    pooled, per_patch = [], []
    for tokens in streams:  # (1, N, C) each
        normed = norm(tokens)
        pooled.append(model.forward_head(normed)[0])  # (classes,): the model's own pooling
        per_patch.append(_token_logits(model, normed[:, facts.num_prefix_tokens :])[0])  # (P, classes)
    logits = torch.stack(pooled).float()  # (layers, classes)
    patch_probabilities, patch_classes = torch.stack(per_patch).float().softmax(dim=-1).max(dim=-1)
    rows, cols = facts.grid_size  # type: ignore[misc]  # checked in _lens_parts
    layers = logits.shape[0]
    return LogitLens(
        predictions=top_predictions(logits, topk, loaded.labels),
        logits=logits.cpu().numpy(),
        patch_classes=patch_classes.reshape(layers, rows, cols).cpu().numpy().astype(np.int64),
        patch_probabilities=patch_probabilities.reshape(layers, rows, cols).cpu().numpy(),
        grid_size=(rows, cols),
        pooling=facts.global_pool,
    )


def logit_lens(loaded: LoadedModel, view: ImageView, topk: int = 5) -> LogitLens:
    """The logit lens of one image's view (`vitviz.preprocess.image_view`).

    Raises:
        ModelError: a CNN, or a model with no classifier head.
    """
    check_view(loaded, view)
    return logit_lens_pixels(loaded, view.tensor, topk)
