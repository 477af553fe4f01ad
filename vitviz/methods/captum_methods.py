"""Integrated Gradients and Occlusion through Captum, summed over the model's token or feature grid."""

from __future__ import annotations

from typing import ClassVar

import torch
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from captum.attr import Occlusion as CaptumOcclusion

from vitviz.methods.base import ExplanationMethod, feature_grid, pool_to_grid

__all__ = ["IntegratedGradients", "Occlusion"]


class _CaptumMethod(ExplanationMethod):
    """Shared steps: each image's class, the grid to aggregate on, and the all-zero baseline.

    Zero in normalised space is the dataset mean colour, the same fill the probes use.
    """

    def grid(self, pixels: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
        """(rows, cols) and cell size in pixels: `cell_px` when given, else the token / feature grid."""
        height, width = int(pixels.shape[-2]), int(pixels.shape[-1])
        cell = self.options.get("cell_px")
        if cell is None:
            return feature_grid(self.loaded, (height, width))
        cell_h, cell_w = (int(cell), int(cell)) if isinstance(cell, int | float) else map(int, cell)
        if not (0 < cell_h <= height and 0 < cell_w <= width):
            raise ValueError(f"cell size {cell_h}×{cell_w} does not fit a {height}×{width} input")
        return (height // cell_h, width // cell_w), (cell_h, cell_w)

    def classes(self, pixels: torch.Tensor, class_indices: torch.Tensor | None) -> torch.Tensor:
        if class_indices is not None:
            return class_indices
        with torch.inference_mode():
            return self.model(pixels).argmax(dim=-1)


class IntegratedGradients(_CaptumMethod):
    """Integrated Gradients (Sundararajan et al., 2017) from the mean-colour baseline, via Captum.

    Per-pixel attributions are summed over colour channels and over each grid cell, so the cells
    add up to (score(x) − score(baseline)) up to the integration error.

    Options:
        steps: integration steps (default 16).
        internal_batch_size: images per forward inside Captum (default 16).
        cell_px: cell size to sum over instead of the token / feature grid.
    """

    name: ClassVar[str] = "integrated-gradients"
    title: ClassVar[str] = "Integrated Gradients"

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        classes = self.classes(pixels, class_indices)
        steps = int(self.options.get("steps", 16))
        with torch.inference_mode(False), torch.enable_grad():
            attributions = CaptumIntegratedGradients(self.model).attribute(
                pixels,
                baselines=torch.zeros_like(pixels),
                target=classes,
                n_steps=steps,
                internal_batch_size=int(self.options.get("internal_batch_size", 16)),
            )  # (B, 3, H, W)
        grid_size, cell = self.grid(pixels)
        maps = pool_to_grid(attributions.detach().sum(dim=1), grid_size, cell, reduce="sum")
        return maps, classes, f"{steps} steps from the mean colour, summed per {cell[0]}×{cell[1]} px cell"


class Occlusion(_CaptumMethod):
    """Occlusion (Zeiler & Fergus, 2014) via Captum: how much the class logit drops when a cell is greyed.

    Windows tile the grid without overlap, so each cell's value is exactly the drop of the logit
    when that cell alone is set to the mean colour.

    Options:
        cell_px: window size instead of the token / feature grid cell.
        perturbations_per_eval: occluded copies per forward (default 16).
    """

    name: ClassVar[str] = "occlusion"
    title: ClassVar[str] = "Occlusion"

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        classes = self.classes(pixels, class_indices)
        grid_size, cell = self.grid(pixels)
        window = (pixels.shape[1], *cell)
        with torch.inference_mode():
            attributions = CaptumOcclusion(self.model).attribute(
                pixels,
                sliding_window_shapes=window,
                strides=window,
                baselines=0.0,
                target=classes,
                perturbations_per_eval=int(self.options.get("perturbations_per_eval", 16)),
            )  # (B, 3, H, W), every pixel of a window holds that window's drop
        maps = pool_to_grid(attributions[:, 0], grid_size, cell, reduce="mean")
        return maps, classes, f"{cell[0]}×{cell[1]} px windows set to the mean colour"
