"""Turns a PIL image into the one view a model sees: its pixels, its normalised tensor and where it lies.

For each (image, model) there is ONE view, and predictions, maps, probes and exports all come from
it, so that a map always lies over the pixels the prediction was made on:
- "crop" (default): the model's own eval transform from timm's data config — resize the shorter
  side to input / crop_pct, centre-crop the input size, normalise with the model's mean and std;
- "whole": the whole image resized to the input size; the aspect ratio changes unless the image
  already has the input's;
- "aspect": the whole image with its aspect ratio kept, for plain ViTs whose position embedding can
  be resampled (timm's dynamic image size): the photo is resized so that its sides are multiples of
  the patch size and its token grid holds about as many patches as the model's own, so a 4:1
  panorama becomes a grid with four times more columns than rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import timm.data
import torch
from PIL import Image
from timm.layers import PatchEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from vitviz.models import LoadedModel, ModelError, ModelFacts

__all__ = [
    "VIEW_LABELS",
    "VIEW_MODES",
    "ImageView",
    "ViewMode",
    "aspect_view_problem",
    "check_view",
    "image_view",
    "supports_aspect_view",
]

ViewMode = Literal["crop", "whole", "aspect"]
VIEW_MODES: tuple[ViewMode, ...] = ("crop", "whole", "aspect")
# What each view is called wherever it is named: menus, titles, captions, sentences, the CLI.
VIEW_LABELS: dict[ViewMode, str] = {
    "crop": "centre crop (the model's eval transform)",
    "whole": "whole image",
    "aspect": "whole image, aspect kept",
}
# An aspect ratio this far from the input's counts as changed when the whole image is resized.
_ASPECT_TOLERANCE = 0.02
# The "aspect" view's grid holds at most this many times the model's own number of patches.
_ASPECT_MAX_PATCHES = 2


@dataclass(frozen=True, eq=False)
class ImageView:
    """What the model sees of one photo, made once (by `image_view`) and passed down to every forward.

    Functions that run a model take a view (or its tensor), never a photo and a mode to rebuild it:
    predictions, maps, probes and exports made from one view all lie over the same pixels.
    """

    photo: Image.Image  # the RGB photo the view was made from
    mode: ViewMode
    # (H, W, 3) uint8, the model's input before mean/std: the model's input size, except in the
    # "aspect" view, whose sides are the token grid times the patch size
    pixels: np.ndarray
    box: tuple[float, float, float, float]  # (left, top, right, bottom) of the view on the photo, in pixels
    note: str  # one line on what the view does to the photo ("" when nothing needs saying)
    grid_size: tuple[int, int] | None  # (rows, cols) of the token grid it gives; None for a CNN
    facts: ModelFacts  # the model whose eval transform made it: its size, mean and std

    @property
    def tensor(self) -> torch.Tensor:
        """(1, 3, H, W) normalised model input on the CPU, made anew on each call from the view's pixels.

        A view is shared (pages cache one per photo and model); its tensor is the caller's own to
        move, change or take gradients of.
        """
        return _normalise(self.pixels, self.facts).unsqueeze(0)

    @property
    def photo_size(self) -> tuple[int, int]:
        """(width, height) of the photo."""
        return self.photo.size

    @property
    def label(self) -> str:
        """What the view is called (`VIEW_LABELS`)."""
        return VIEW_LABELS[self.mode]

    @property
    def covers_whole_photo(self) -> bool:
        return _covers(self.box, self.photo_size)


def _covers(box: tuple[float, float, float, float], photo_size: tuple[int, int]) -> bool:
    left, top, right, bottom = box
    width, height = photo_size
    return left <= 0.5 and top <= 0.5 and right >= width - 0.5 and bottom >= height - 0.5


def _view(
    photo: Image.Image,
    mode: ViewMode,
    pixels: np.ndarray,
    box: tuple[float, float, float, float],
    note: str,
    grid_size: tuple[int, int] | None,
    facts: ModelFacts,
) -> ImageView:
    pixels.setflags(write=False)  # a view is shared: nobody draws on its pixels
    return ImageView(photo, mode, pixels, box, note, grid_size, facts)


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
    note = ""
    if not _covers(box, photo.size):
        shown = (box[2] - box[0]) * (box[3] - box[1]) / (photo.width * photo.height)
        note = f"centre crop: the model sees {shown:.0%} of the photo"
    return _view(photo, "crop", pixels, box, note, facts.grid_size, facts)


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
    return _view(photo, "whole", pixels, _whole_box(photo), note, facts.grid_size, facts)


def _whole_box(photo: Image.Image) -> tuple[float, float, float, float]:
    return (0.0, 0.0, float(photo.width), float(photo.height))


def aspect_grid(photo_size: tuple[int, int], grid_size: tuple[int, int]) -> tuple[int, int]:
    """The (rows, cols) grid of the photo's shape holding about as many patches as `grid_size`.

    The shorter side is rounded first and the longer one follows from it, so the aspect ratio is
    kept as closely as whole patches allow (an 8:1 panorama on a 16×16 model: 6×48, not 6×45).

    Args:
        photo_size: (width, height) of the photo.
        grid_size: (rows, cols) of the model's own grid.

    Returns:
        (rows, cols), at most twice the model's number of patches (narrower photos are squeezed).
    """
    width, height = photo_size
    patches = grid_size[0] * grid_size[1]
    longest = _ASPECT_MAX_PATCHES * patches  # a sliver of one patch across would otherwise be endless
    aspect = width / height
    if aspect >= 1.0:
        rows = max(1, round(math.sqrt(patches / aspect)))
        return rows, min(longest // rows, max(1, round(rows * aspect)))
    cols = max(1, round(math.sqrt(patches * aspect)))
    return min(longest // cols, max(1, round(cols / aspect))), cols


def _aspect_view(photo: Image.Image, facts: ModelFacts) -> ImageView:
    if facts.grid_size is None or facts.stride_px is None:
        raise ValueError(f"{facts.name} has no token grid: the aspect-kept view needs a ViT")
    rows, cols = aspect_grid(photo.size, facts.grid_size)
    height, width = rows * facts.stride_px[0], cols * facts.stride_px[1]
    pixels = np.asarray(photo.resize((width, height), _interpolation(facts)))
    change = abs((width / height) / (photo.width / photo.height) - 1.0)
    if change < 0.0005:
        kept = "kept"
    elif change < _ASPECT_TOLERANCE:
        kept = f"kept to within {change:.1%}"
    else:
        patches = facts.grid_size[0] * facts.grid_size[1]
        kept = f"changed by {change:.0%}: a grid of about {patches} whole patches cannot keep it"
    note = (
        f"the whole photo ({photo.width}×{photo.height}) is resized to {width}×{height}, a grid of "
        f"{rows}×{cols} patches: its aspect ratio is {kept}"
    )
    return _view(photo, "aspect", pixels, _whole_box(photo), note, (rows, cols), facts)


def aspect_view_problem(model: nn.Module) -> str:
    """Why the "aspect" view cannot be offered for this model; "" when it can.

    The view needs a plain ViT: timm's `VisionTransformer` with its own position-embedding step, a
    learned absolute position embedding to resample, and a plain patch embedding whose grid is the
    input divided by the patch size.
    """
    name = type(model).__name__
    if not isinstance(model, VisionTransformer):
        return f"{name} is not a plain ViT: it has no position embedding to resample"
    if type(model)._pos_embed is not VisionTransformer._pos_embed:
        return f"{name} adds extra tokens (e.g. a distillation token) in its own way"
    if not isinstance(model.patch_embed, PatchEmbed) or hasattr(model.patch_embed, "backbone"):
        return f"{name}'s tokens come from a CNN stem (a hybrid), not from patches of the image"
    if model.pos_embed is None:
        return f"{name} has no learned absolute position embedding to resample"
    return ""


def supports_aspect_view(model: nn.Module) -> bool:
    """Whether the model can see the whole image with its aspect ratio kept (a non-square grid)."""
    return not aspect_view_problem(model)


def check_view(loaded: LoadedModel, view: ImageView) -> None:
    """Raises when `view` cannot go into this model.

    Raises:
        ModelError: the model cannot take the view's mode ("aspect" needs a plain ViT), with the reason.
        ValueError: the view was made for another model's input (size, mean or std).
    """
    if view.mode == "aspect":
        problem = aspect_view_problem(loaded.model)
        if problem:
            raise ModelError(f"no 'whole image, aspect kept' view for {loaded.facts.name}: {problem}")
    made, wanted = view.facts, loaded.facts
    if (made.input_size, made.mean, made.std) != (wanted.input_size, wanted.mean, wanted.std):
        raise ValueError(
            f"this view was made for {made.name} at {made.input_size[0]}×{made.input_size[1]} px; "
            f"make one for {wanted.name} with image_view(photo, loaded.facts, mode)"
        )


def image_view(image: Image.Image, facts: ModelFacts, mode: ViewMode = "crop") -> ImageView:
    """The one view of `image` that the model with `facts` sees: make it once, pass it down.

    Args:
        image: any PIL image (converted to RGB).
        facts: the model's facts (input size, eval transform settings).
        mode: "crop" (the model's eval transform), "whole" (the whole photo resized) or "aspect"
            (the whole photo, aspect ratio kept, on a grid of about the model's number of patches;
            check `supports_aspect_view(model)` first).

    Returns:
        The view: the photo, pixels (H, W, 3) uint8, the box on the photo, a note, the token grid and
        the (1, 3, H, W) normalised tensor every forward reads.
    """
    if mode not in VIEW_MODES:
        raise ValueError(f"unknown view {mode!r}: use one of {', '.join(VIEW_MODES)}")
    photo = image.convert("RGB")
    views = {"crop": _crop_view, "whole": _whole_view, "aspect": _aspect_view}
    return views[mode](photo, facts)


def _normalise(pixels: np.ndarray, facts: ModelFacts) -> torch.Tensor:
    tensor = (
        torch.from_numpy(np.ascontiguousarray(pixels).copy()).permute(2, 0, 1).float().div_(255.0)
    )  # (3, H, W)
    return TF.normalize(tensor, list(facts.mean), list(facts.std))
