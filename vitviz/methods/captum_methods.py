"""Captum's attributions (IG, Occlusion, Saliency, SmoothGrad, GradientSHAP), summed over the model's grid."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import numpy as np
import torch
from captum.attr import GradientShap as CaptumGradientShap
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from captum.attr import NoiseTunnel
from captum.attr import Occlusion as CaptumOcclusion
from captum.attr import Saliency as CaptumSaliency

from vitviz.methods.base import ExplanationMethod, feature_grid, pool_to_grid

__all__ = ["GradientShap", "IntegratedGradients", "Occlusion", "Saliency", "SmoothGrad"]


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
        # no_grad rather than inference mode: Captum gathers the target logits with these indices
        # inside its graph, which an inference tensor may not enter.
        with torch.no_grad():
            return self.model(pixels).argmax(dim=-1)

    def on_grid(self, per_pixel: torch.Tensor, pixels: torch.Tensor) -> tuple[torch.Tensor, str]:
        """(B, H, W) attributions summed over each grid cell, and the cell size in words."""
        grid_size, cell = self.grid(pixels)
        return pool_to_grid(per_pixel.detach(), grid_size, cell, reduce="sum"), f"{cell[0]}×{cell[1]} px cell"

    @contextmanager
    def seeded(self, device: torch.device) -> Iterator[None]:
        """Draws from `seed` (option, default 0), leaving the global random states as they were.

        Captum draws GradientSHAP's baselines and path points from NumPy's global generator, so
        that one is seeded and restored too (another thread drawing from it meanwhile would see
        the seeded stream).
        """
        seed = int(self.options.get("seed", 0))
        devices = [device] if device.type == "cuda" else []
        numpy_state = np.random.get_state()
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                np.random.seed(seed)
                yield
        finally:
            np.random.set_state(numpy_state)


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
    slow: ClassVar[bool] = True

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
    slow: ClassVar[bool] = True

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


class Saliency(_CaptumMethod):
    """Saliency (Simonyan et al., 2014) via Captum: max over colour channels of |∂score/∂pixel|.

    Options:
        cell_px: cell size to sum over instead of the token / feature grid.
    """

    name: ClassVar[str] = "saliency"
    title: ClassVar[str] = "Saliency"

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        classes = self.classes(pixels, class_indices)
        with torch.inference_mode(False), torch.enable_grad():
            pixels = pixels.detach().requires_grad_(True)  # our own copy: Captum would set it and warn
            gradients = CaptumSaliency(self.model).attribute(pixels, target=classes, abs=True)  # (B, 3, H, W)
        maps, cell = self.on_grid(gradients.amax(dim=1), pixels)
        return maps, classes, f"|gradient|, max over colours, summed per {cell}"


class SmoothGrad(_CaptumMethod):
    """SmoothGrad (Smilkov et al., 2017): Saliency averaged over noisy copies, Captum's NoiseTunnel.

    Options:
        samples: noisy copies (default 16).
        noise_level: σ of the Gaussian noise as a fraction of the input's range (default 0.15,
            within the paper's 10–20 %).
        samples_per_batch: copies per forward (default 8).
        seed: noise seed (default 0): the same image gives the same map.
        cell_px: cell size to sum over instead of the token / feature grid.
    """

    name: ClassVar[str] = "smoothgrad"
    title: ClassVar[str] = "SmoothGrad"
    slow: ClassVar[bool] = True

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        classes = self.classes(pixels, class_indices)
        samples = int(self.options.get("samples", 16))
        noise_level = float(self.options.get("noise_level", 0.15))
        if samples < 1 or noise_level < 0:
            raise ValueError(
                f"SmoothGrad needs samples ≥ 1 and noise_level ≥ 0, got {samples}, {noise_level}"
            )
        sigma = noise_level * float(pixels.max() - pixels.min())
        with torch.inference_mode(False), torch.enable_grad(), self.seeded(pixels.device):
            gradients = NoiseTunnel(CaptumSaliency(self.model)).attribute(
                pixels,
                nt_type="smoothgrad",
                nt_samples=samples,
                nt_samples_batch_size=int(self.options.get("samples_per_batch", 8)),
                stdevs=sigma,
                target=classes,
                abs=True,
            )  # (B, 3, H, W)
        maps, cell = self.on_grid(gradients.amax(dim=1), pixels)
        return maps, classes, f"{samples} copies with σ = {noise_level:.0%} of the range, summed per {cell}"


class GradientShap(_CaptumMethod):
    """GradientSHAP (Lundberg & Lee, 2017) via Captum: expected gradients × (input − baseline).

    Baselines are drawn from two references, the mean colour and one Gaussian-noise image, and a
    random point on the straight path to the input; the cells add up to the score's expected rise
    from the baselines, up to sampling error.

    Options:
        samples: random (baseline, point) draws per image (default 16).
        seed: seed of the draws and of the noise baseline (default 0).
        cell_px: cell size to sum over instead of the token / feature grid.
    """

    name: ClassVar[str] = "gradient-shap"
    title: ClassVar[str] = "GradientSHAP"
    slow: ClassVar[bool] = True

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        classes = self.classes(pixels, class_indices)
        samples = int(self.options.get("samples", 16))
        if samples < 1:
            raise ValueError(f"GradientSHAP needs at least one sample, got {samples}")
        with torch.inference_mode(False), torch.enable_grad(), self.seeded(pixels.device):
            reference = torch.zeros_like(pixels[:1])
            baselines = torch.cat([reference, torch.randn_like(reference)])  # (2, 3, H, W)
            attributions = CaptumGradientShap(self.model).attribute(
                pixels, baselines=baselines, n_samples=samples, target=classes
            )  # (B, 3, H, W)
        maps, cell = self.on_grid(attributions.sum(dim=1), pixels)
        return maps, classes, f"{samples} draws from the mean colour and a noise image, summed per {cell}"
