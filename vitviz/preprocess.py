"""Turns a PIL image into the one view a model sees: its pixels, its normalised tensor and where it lies.

For each (image, model) there is ONE view, and predictions, maps, probes and exports all come from
it, so that a map always lies over the pixels the prediction was made on:
- "crop" (default): the model's own eval transform from timm's data config — resize the shorter
  side to input / crop_pct, centre-crop the input size, normalise with the model's mean and std;
- "whole": the whole image resized to the input size; the aspect ratio changes unless the image
  already has the input's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import timm.data
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from vitviz.models import ModelFacts

__all__ = [
    "VIEW_MODES",
    "ImageView",
    "ViewMode",
    "explanation_image",
    "explanation_tensor",
    "image_view",
    "prediction_tensor",
    "view_tensor",
]

ViewMode = Literal["crop", "whole"]
VIEW_MODES: tuple[ViewMode, ...] = ("crop", "whole")
# An aspect ratio this far from the input's counts as changed when the whole image is resized.
_ASPECT_TOLERANCE = 0.02


@dataclass(frozen=True)
class ImageView:
    """What the model sees of one image, and where that lies on the photo."""

    mode: ViewMode
    pixels: np.ndarray  # (H, W, 3) uint8 at the model's input size: the model's input before mean/std
    box: tuple[float, float, float, float]  # (left, top, right, bottom) of the view on the photo, in pixels
    photo_size: tuple[int, int]  # (width, height) of the photo
    note: str  # one line on what the view does to the photo ("" when nothing needs saying)

    @property
    def covers_whole_photo(self) -> bool:
        left, top, right, bottom = self.box
        width, height = self.photo_size
        return left <= 0.5 and top <= 0.5 and right >= width - 0.5 and bottom >= height - 0.5


def _interpolation(facts: ModelFacts) -> Image.Resampling:
    names = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}
    return names.get(facts.interpolation, Image.Resampling.BICUBIC)


def _eval_geometry(facts: ModelFacts) -> list[object]:
    """The resize and centre-crop steps of the model's eval transform (timm's, not a copy of it)."""
    transform = timm.data.create_transform(
        input_size=(3, *facts.input_size),
        interpolation=facts.interpolation,
        mean=facts.mean,
        std=facts.std,
        crop_pct=facts.crop_pct,
        is_training=False,
    )
    steps = list(transform.transforms)
    # timm ends an eval transform with to-tensor and normalise; everything before is geometry.
    assert isinstance(steps[-1], T.Normalize), f"unexpected eval transform {transform}"
    return steps[:-2]


def _crop_view(photo: Image.Image, facts: ModelFacts) -> ImageView:
    image = photo
    box = (0.0, 0.0, float(photo.width), float(photo.height))
    for step in _eval_geometry(facts):
        before = image.size
        image = step(image)
        left, top, right, bottom = box
        if isinstance(step, T.CenterCrop):
            # torchvision's centre crop: offsets rounded from half the spare pixels
            crop_height, crop_width = facts.input_size
            offset_top = round((before[1] - crop_height) / 2.0)
            offset_left = round((before[0] - crop_width) / 2.0)
            scale_x, scale_y = (right - left) / before[0], (bottom - top) / before[1]
            box = (
                left + offset_left * scale_x,
                top + offset_top * scale_y,
                left + (offset_left + crop_width) * scale_x,
                top + (offset_top + crop_height) * scale_y,
            )
        # a resize keeps the box: it only changes how many pixels stand for it
    pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[:2] == facts.input_size, (
        f"eval transform gave {pixels.shape}, expected {facts.input_size}"
    )
    view = ImageView("crop", pixels, box, photo.size, "")
    if not view.covers_whole_photo:
        shown = (box[2] - box[0]) * (box[3] - box[1]) / (photo.width * photo.height)
        note = f"centre crop: the model sees {shown:.0%} of the photo"
        view = ImageView("crop", pixels, box, photo.size, note)
    return view


def _whole_view(photo: Image.Image, facts: ModelFacts) -> ImageView:
    height, width = facts.input_size
    pixels = np.asarray(photo.resize((width, height), _interpolation(facts)))
    photo_aspect, input_aspect = photo.width / photo.height, width / height
    note = ""
    if abs(photo_aspect / input_aspect - 1.0) > _ASPECT_TOLERANCE:
        note = (
            f"the whole photo ({photo.width}×{photo.height}) is resized to {width}×{height}: "
            "its aspect ratio changed"
        )
    return ImageView("whole", pixels, (0.0, 0.0, float(photo.width), float(photo.height)), photo.size, note)


def image_view(image: Image.Image, facts: ModelFacts, mode: ViewMode = "crop") -> ImageView:
    """The one view of `image` that the model with `facts` sees.

    Args:
        image: any PIL image (converted to RGB).
        facts: the model's facts (input size, eval transform settings).
        mode: "crop" (the model's eval transform) or "whole" (the whole photo resized).

    Returns:
        The view: pixels (H, W, 3) uint8 at the input size, the box on the photo, a note.
    """
    if mode not in VIEW_MODES:
        raise ValueError(f"unknown view {mode!r}: use one of {', '.join(VIEW_MODES)}")
    photo = image.convert("RGB")
    return _crop_view(photo, facts) if mode == "crop" else _whole_view(photo, facts)


def _normalise(pixels: np.ndarray, facts: ModelFacts) -> torch.Tensor:
    tensor = (
        torch.from_numpy(np.ascontiguousarray(pixels).copy()).permute(2, 0, 1).float().div_(255.0)
    )  # (3, H, W)
    return TF.normalize(tensor, list(facts.mean), list(facts.std))


def view_tensor(view: ImageView, facts: ModelFacts) -> torch.Tensor:
    """(1, 3, H, W) normalised model input of a view made by `image_view`."""
    return _normalise(view.pixels, facts).unsqueeze(0)


def explanation_image(image: Image.Image, facts: ModelFacts, view: ViewMode = "crop") -> np.ndarray:
    """The pixels the model sees in `view`, for drawing maps over.

    Returns:
        (H, W, 3) uint8 array at the model's input size.
    """
    return image_view(image, facts, view).pixels


def explanation_tensor(image: Image.Image, facts: ModelFacts, view: ViewMode = "crop") -> torch.Tensor:
    """(1, 3, H, W) normalised input of the view: what every map and probe is computed on."""
    return view_tensor(image_view(image, facts, view), facts)


def prediction_tensor(image: Image.Image, facts: ModelFacts, view: ViewMode = "crop") -> torch.Tensor:
    """(1, 3, H, W) normalised input for predictions: the same view as the maps, so the two agree."""
    return explanation_tensor(image, facts, view)
