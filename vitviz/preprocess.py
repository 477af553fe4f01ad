"""Turns a PIL image into model input: whole-image for explanations, eval transform for predictions."""

from __future__ import annotations

import numpy as np
import timm.data
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from vitviz.models import ModelFacts

__all__ = ["explanation_image", "explanation_tensor", "prediction_tensor"]


def _interpolation(facts: ModelFacts) -> Image.Resampling:
    names = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}
    return names.get(facts.interpolation, Image.Resampling.BICUBIC)


def explanation_image(image: Image.Image, facts: ModelFacts) -> np.ndarray:
    """The whole image resized to the model's input, so a map lies over the picture the user gave.

    Returns:
        (H, W, 3) uint8 array at the model's input size (no crop).
    """
    height, width = facts.input_size
    return np.asarray(image.convert("RGB").resize((width, height), _interpolation(facts)))


def _normalise(pixels: np.ndarray, facts: ModelFacts) -> torch.Tensor:
    tensor = (
        torch.from_numpy(np.ascontiguousarray(pixels).copy()).permute(2, 0, 1).float().div_(255.0)
    )  # (3, H, W)
    return TF.normalize(tensor, list(facts.mean), list(facts.std))


def explanation_tensor(image: Image.Image, facts: ModelFacts) -> torch.Tensor:
    """(1, 3, H, W) normalised input of the whole image resized to the model's input size."""
    return _normalise(explanation_image(image, facts), facts).unsqueeze(0)


def prediction_tensor(image: Image.Image, facts: ModelFacts) -> torch.Tensor:
    """(1, 3, H, W) input made by the model's own eval transform: resize, centre crop, mean/std."""
    transform = timm.data.create_transform(
        input_size=(3, *facts.input_size),
        interpolation=facts.interpolation,
        mean=facts.mean,
        std=facts.std,
        crop_pct=facts.crop_pct,
        is_training=False,
    )
    return transform(image.convert("RGB")).unsqueeze(0)
