"""Top-k class predictions of a model with a classifier head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from vitviz.capture import grid_for
from vitviz.models import LoadedModel, ModelError
from vitviz.preprocess import ViewMode, check_view, prediction_tensor

__all__ = ["NoClassifierError", "Prediction", "predict", "top_predictions"]


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


def _forward(loaded: LoadedModel, pixels: torch.Tensor) -> torch.Tensor:
    with grid_for(loaded.model, pixels):
        return loaded.model(pixels)


@torch.inference_mode()
def predict(
    loaded: LoadedModel, images: list[Image.Image], topk: int = 5, view: ViewMode = "crop"
) -> list[list[Prediction]]:
    """Classifies each image's view: by default the model's own eval transform, as maps use it too.

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
    check_view(loaded, view)
    tensors = [prediction_tensor(image, loaded.facts, view).to(loaded.device) for image in images]
    if view == "aspect":  # each photo has a grid of its own shape: one forward each
        logits = torch.cat([_forward(loaded, pixels) for pixels in tensors])
    else:
        logits = loaded.model(torch.cat(tensors))
    return top_predictions(logits, topk, loaded.labels)
