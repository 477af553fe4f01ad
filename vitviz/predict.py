"""Top-k class predictions of a model with a classifier head."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vitviz.capture import grid_for
from vitviz.models import LoadedModel, ModelError
from vitviz.preprocess import ImageView, check_view

__all__ = ["NoClassifierError", "Prediction", "followed_class", "predict", "top_predictions"]


class NoClassifierError(ModelError):
    """The model has no classifier head (e.g. a self-supervised backbone), so it predicts nothing."""


@dataclass(frozen=True)
class Prediction:
    """One class with its softmax probability."""

    index: int
    label: str
    probability: float


def top_predictions(
    logits: torch.Tensor, topk: int, labels: tuple[str, ...] | None
) -> list[list[Prediction]]:
    """Turns (B, classes) logits into the `topk` most probable classes of each row."""
    probabilities = logits.float().softmax(dim=-1)
    values, indices = probabilities.topk(min(topk, probabilities.shape[-1]), dim=-1)
    return [
        [
            Prediction(int(index), labels[index] if labels else f"class {index}", float(value))
            for value, index in zip(row_values.tolist(), row_indices.tolist(), strict=True)
        ]
        for row_values, row_indices in zip(values, indices, strict=True)
    ]


def followed_class(
    loaded: LoadedModel, view: ImageView, class_index: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The view's input, the model's class probabilities on it and the class a measurement follows.

    Args:
        class_index: the class to follow; None for the most probable one.

    Returns:
        (1, 3, H, W) input on the model's device, (classes,) float32 probabilities, the class.

    Raises:
        ValueError: `class_index` outside the model's classes.
    """
    check_view(loaded, view)
    pixels = view.tensor.to(loaded.device)  # made outside inference mode: callers may take gradients of it
    with torch.inference_mode():
        probabilities = loaded.model(pixels).float().softmax(dim=-1)[0]
    facts = loaded.facts
    if class_index is None:
        class_index = int(probabilities.argmax())
    elif not 0 <= class_index < facts.num_classes:
        raise ValueError(f"class {class_index} outside 0..{facts.num_classes - 1} of {facts.name}")
    return pixels, probabilities, class_index


def _forward(loaded: LoadedModel, pixels: torch.Tensor) -> torch.Tensor:
    with grid_for(loaded.model, pixels):
        return loaded.model(pixels)


@torch.inference_mode()
def predict(loaded: LoadedModel, views: Sequence[ImageView], topk: int = 5) -> list[list[Prediction]]:
    """Classifies each view (`vitviz.preprocess.image_view`): the same input every map of it reads.

    Raises:
        NoClassifierError: the model has no classifier head.
    """
    if not loaded.facts.has_classifier:
        raise NoClassifierError(
            f"{loaded.facts.name} has no classifier head, so it makes no predictions; "
            "its attention and features can still be explored."
        )
    if topk < 1:
        raise ValueError(f"topk must be at least 1, got {topk}")
    for view in views:
        check_view(loaded, view)
    tensors = [view.tensor.to(loaded.device) for view in views]
    # An aspect-kept photo has a grid of its own shape: one forward each.
    if any(view.mode == "aspect" for view in views):
        logits = torch.cat([_forward(loaded, pixels) for pixels in tensors])
    else:
        logits = loaded.model(torch.cat(tensors))
    return top_predictions(logits, topk, loaded.labels)
