"""The CAM methods of pytorch-grad-cam on any timm model: the library's maths on vitviz's layers and grids.

pytorch-grad-cam hooks the layers it is given and, for Ablation-CAM, swaps a layer for its own.
Neither may happen to a model that every visitor shares, so the library never sees the target
layer itself: it sees `_TappedModel`, a wrapper whose `tap` (an identity of its own) the target
layer's output is routed through by a thread-bound `LayerTap` from `vitviz.capture`. Its hooks
and its layer swap land on the tap. The whole run holds the model's lock. (FullGrad is the one
exception: it hooks every conv and batch-norm layer with a bias, so it hooks the model itself,
under the lock, and the hooks are removed before the lock is released.)

Maps are read on the layer's own grid (the token grid reshaped from `num_prefix_tokens` and
`grid_size`, or the conv map), not upsampled to pixels: the library scales each map to [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import numpy as np
import torch
from pytorch_grad_cam import (
    FEM,
    KPCA_CAM,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAMElementWise,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam import GradCAM as LibraryGradCAMClass
from pytorch_grad_cam import GradCAMPlusPlus as LibraryGradCAMPlusPlusClass
from pytorch_grad_cam.ablation_layer import AblationLayer, AblationLayerVit
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from vitviz.capture import LayerTap, model_lock
from vitviz.methods.base import ExplanationMethod, MethodUnavailableError, feature_grid, pool_to_grid
from vitviz.methods.gradcam import FEATURES, as_feature_map, default_layer, layer_module

__all__ = [
    "LIBRARY_CAMS",
    "AblationCam",
    "EigenCam",
    "EigenGradCam",
    "FeatureExplanationMethod",
    "FullGradCam",
    "GradCamElementWise",
    "HiResCam",
    "KernelPcaCam",
    "LayerCam",
    "LibraryCAM",
    "LibraryGradCAM",
    "LibraryGradCAMPlusPlus",
    "ScoreCam",
    "XGradCam",
]


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """No parameter requires grad for the time of a run, and each flag is restored after.

    The library calls `loss.backward()`, which would leave a `.grad` on every parameter that
    requires one (a loaded model requires none; a model being fine-tuned might). Call it with
    the model's lock held.
    """
    parameters = list(model.parameters())
    flags = [parameter.requires_grad for parameter in parameters]
    try:
        for parameter in parameters:
            parameter.requires_grad_(False)
        yield
    finally:
        for parameter, flag in zip(parameters, flags, strict=True):
            parameter.requires_grad_(flag)


class _TappedModel(nn.Module):
    """The shared model as pytorch-grad-cam sees it: the target layer's output passes through `tap`.

    The model is registered as a child only so that the library finds its device and can call
    `eval()` (a no-op on a shared model, which is always in eval mode). With `features=True` the
    target is the output of `forward_features`, routed here without any hook on the model.
    """

    def __init__(self, model: nn.Module, *, features: bool, start_graph: bool) -> None:
        super().__init__()
        self.model = model
        self.tap: nn.Module = nn.Identity()  # Ablation-CAM replaces it with its ablation layer
        self.features = features
        self.start_graph = start_graph

    def route(self, tensor: torch.Tensor) -> torch.Tensor:
        """Passes a target-layer output through the current tap (looked up now: it may be swapped)."""
        return self.tap(tensor)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if not self.features:
            return self.model(pixels)
        features = self.model.forward_features(pixels)
        if self.start_graph:  # the backward stops here: only the head is recorded
            features = features.detach().requires_grad_(True)
        return self.model.forward_head(self.route(features))


class LibraryCAM(ExplanationMethod):
    """A pytorch-grad-cam method over vitviz's pipeline; each subclass names the library class.

    Options:
        layer: "features", "stem", "tokens" or a module name, as for Grad-CAM (default per family:
            features for CNNs, the CNN stem for hybrids, the token grid entering the last block for
            ViTs).
        batch_size: masked or ablated copies per forward, for Score-CAM and Ablation-CAM.
    """

    takes_layer: ClassVar[bool] = True

    cam_class: ClassVar[type[BaseCAM]]
    uses_gradients: ClassVar[bool] = True  # a backward from the class score is needed

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        layer = self.options.get("layer") or default_layer(self.facts)
        targets = None
        if self.class_specific and class_indices is not None:
            targets = [ClassifierOutputTarget(int(index)) for index in class_indices]
        wrapper = _TappedModel(self.model, features=layer == FEATURES, start_graph=self.uses_gradients)
        with model_lock(self.model), _frozen(self.model), self._routed(wrapper, layer) as source:
            cam = self.make_cam(wrapper, pixels)
            try:
                with torch.inference_mode(False), torch.set_grad_enabled(self.uses_gradients):
                    maps = cam(pixels, targets)  # (B, rows, cols) in [0, 1]
                outputs = cam.outputs
            finally:
                cam.activations_and_grads.release()
        classes = None
        if self.class_specific:
            classes = self.chosen_classes(outputs, class_indices)
        return torch.from_numpy(np.ascontiguousarray(maps)), classes, source

    @contextmanager
    def _routed(self, wrapper: _TappedModel, layer: str) -> Iterator[str]:
        """Routes the target layer through the wrapper's tap for the time of the run."""
        if layer == FEATURES:
            yield "forward_features"
            return
        module, source = layer_module(self.model, self.facts, layer)
        with LayerTap(self.model, module, wrapper.route, start_graph=self.uses_gradients):
            yield source

    def make_cam(self, wrapper: _TappedModel, pixels: torch.Tensor) -> BaseCAM:
        """The library's object on the wrapper's tap, reading its map on the layer's own grid."""
        facts = self.facts

        def feature_map(tensor: torch.Tensor) -> torch.Tensor:
            return as_feature_map(tensor, facts, "the target layer")

        cam = self.cam_class(model=wrapper, target_layers=[wrapper.tap], reshape_transform=feature_map)
        cam.batch_size = int(self.options.get("batch_size", 32))  # read by Score-CAM

        def layer_grid(_input: torch.Tensor) -> tuple[int, int]:
            # The size the library resizes each map to, (width, height): the layer's own grid.
            activation = cam.activations_and_grads.activations[0]
            return int(activation.shape[-1]), int(activation.shape[-2])

        cam.get_target_width_height = layer_grid  # type: ignore[method-assign]
        return cam


class LibraryGradCAM(LibraryCAM):
    """The library's Grad-CAM: not offered in menus (vitviz's own `gradcam` is); kept to check it against."""

    name: ClassVar[str] = "library-gradcam"
    title: ClassVar[str] = "Grad-CAM (pytorch-grad-cam)"
    cam_class = LibraryGradCAMClass


class LibraryGradCAMPlusPlus(LibraryCAM):
    """The library's Grad-CAM++, kept to check vitviz's own `gradcam++` against."""

    name: ClassVar[str] = "library-gradcam++"
    title: ClassVar[str] = "Grad-CAM++ (pytorch-grad-cam)"
    cam_class = LibraryGradCAMPlusPlusClass


class HiResCam(LibraryCAM):
    """HiResCAM (Draelos & Carin, 2020): Σ_k ∂score/∂A_k ⊙ A_k, each cell its own gradient (no averaging)."""

    name: ClassVar[str] = "hirescam"
    title: ClassVar[str] = "HiResCAM"
    cam_class = HiResCAM


class GradCamElementWise(LibraryCAM):
    """Grad-CAM element-wise: Σ_k ReLU(∂score/∂A_k ⊙ A_k), HiResCAM with the ReLU per element."""

    name: ClassVar[str] = "gradcam-elementwise"
    title: ClassVar[str] = "Grad-CAM element-wise"
    cam_class = GradCAMElementWise


class XGradCam(LibraryCAM):
    """XGrad-CAM (Fu et al., 2020): channel weights Σ_ij g·A / Σ_ij A, from two axioms of attribution."""

    name: ClassVar[str] = "xgradcam"
    title: ClassVar[str] = "XGrad-CAM"
    cam_class = XGradCAM


class LayerCam(LibraryCAM):
    """LayerCAM (Jiang et al., 2021): Σ_k ReLU(∂score/∂A_k) ⊙ A_k, weights per cell."""

    name: ClassVar[str] = "layercam"
    title: ClassVar[str] = "LayerCAM"
    cam_class = LayerCAM


class EigenGradCam(LibraryCAM):
    """Eigen-Grad-CAM: the first principal component of the gradient-weighted activations."""

    name: ClassVar[str] = "eigengradcam"
    title: ClassVar[str] = "Eigen-Grad-CAM"
    cam_class = EigenGradCAM


class ScoreCam(LibraryCAM):
    """Score-CAM (Wang et al., 2020): each channel, upsampled, masks the input; the class score weighs it.

    One forward per channel of the layer (e.g. 1280 for EfficientNet-Lite0, 384 for ViT-S), in
    batches of `batch_size`: the slowest method here.
    """

    name: ClassVar[str] = "scorecam"
    title: ClassVar[str] = "Score-CAM"
    cam_class = ScoreCAM
    uses_gradients: ClassVar[bool] = False


class AblationCam(LibraryCAM):
    """Ablation-CAM (Desai & Ramaswamy, 2020): each channel's weight is the class score's drop when it is ablated.

    One forward per channel, in batches of `batch_size`. The library ablates a channel by zeroing
    it when the layer's minimum is 0, else by setting it far below the minimum.
    """

    name: ClassVar[str] = "ablationcam"
    title: ClassVar[str] = "Ablation-CAM"
    cam_class = AblationCAM
    uses_gradients: ClassVar[bool] = False

    def make_cam(self, wrapper: _TappedModel, pixels: torch.Tensor) -> BaseCAM:
        cam = super().make_cam(wrapper, pixels)
        # Token outputs (B, N, C) need the library's ViT ablation layer, conv maps the plain one.
        with torch.inference_mode():
            seen: list[torch.Tensor] = []
            handle = wrapper.tap.register_forward_hook(lambda _m, _i, output: seen.append(output))
            try:
                wrapper(pixels[:1])
            finally:
                handle.remove()
        cam.ablation_layer = AblationLayerVit() if seen and seen[0].ndim == 3 else AblationLayer()
        cam.batch_size = int(self.options.get("batch_size", 32))
        return cam


class EigenCam(LibraryCAM):
    """EigenCAM (Muhammad & Yeasin, 2020): the first principal component of the layer's activations.

    Class-agnostic: no gradient and no class, so it also explains models without a head.
    """

    name: ClassVar[str] = "eigencam"
    title: ClassVar[str] = "EigenCAM"
    cam_class = EigenCAM
    uses_gradients: ClassVar[bool] = False
    class_specific: ClassVar[bool] = False


class KernelPcaCam(LibraryCAM):
    """KPCA-CAM (Karmani et al., 2024): EigenCAM with kernel PCA (sigmoid kernel) instead of linear PCA."""

    name: ClassVar[str] = "kpca-cam"
    title: ClassVar[str] = "KPCA-CAM"
    cam_class = KPCA_CAM
    uses_gradients: ClassVar[bool] = False
    class_specific: ClassVar[bool] = False


class FeatureExplanationMethod(LibraryCAM):
    """FEM (Fuad et al., 2020): channels weighted by how often they fire above their mean + 2 σ.

    Class-agnostic, like EigenCAM.
    """

    name: ClassVar[str] = "fem"
    title: ClassVar[str] = "FEM"
    cam_class = FEM
    uses_gradients: ClassVar[bool] = False
    class_specific: ClassVar[bool] = False


class FullGradCam(LibraryCAM):
    """FullGrad (Srinivas & Fleuret, 2019): |input × its gradient| plus |bias × gradient| of every layer.

    CNNs only, and only those whose biased layers are plain `Conv2d` / `BatchNorm2d`: the library
    picks them by exact type, so it sees none in models built from timm's fused norm-activation
    layers (EfficientNet's `BatchNormAct2d`), and then refuses. The map is computed per pixel and
    averaged over the cells of the model's last feature grid. The `layer` option does not apply.
    """

    name: ClassVar[str] = "fullgrad"
    title: ClassVar[str] = "FullGrad"
    cam_class = FullGrad
    families: ClassVar[tuple[str, ...]] = ("cnn",)  # type: ignore[assignment]

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        targets = None if class_indices is None else [ClassifierOutputTarget(int(i)) for i in class_indices]
        with model_lock(self.model), _frozen(self.model):
            cam = FullGrad(model=self.model, target_layers=[])
            try:
                if not cam.target_layers:
                    raise MethodUnavailableError(
                        f"FullGrad finds no plain Conv2d / BatchNorm2d layer with a bias in {self.facts.name} "
                        "(timm's fused norm-activation layers are not seen by the library)."
                    )
                with torch.inference_mode(False), torch.enable_grad():
                    per_pixel = cam(pixels, targets)  # (B, H, W) in [0, 1]
                outputs = cam.outputs
            finally:
                cam.activations_and_grads.release()
        grid_size, cell = feature_grid(self.loaded, (int(pixels.shape[-2]), int(pixels.shape[-1])))
        maps = pool_to_grid(torch.from_numpy(per_pixel), grid_size, cell, reduce="mean")
        classes = self.chosen_classes(outputs, class_indices)
        return (
            maps,
            classes,
            f"input and {len(cam.target_layers)} bias layers, mean per {cell[0]}×{cell[1]} px cell",
        )


# The library's methods offered in menus, in the order they are listed.
LIBRARY_CAMS: tuple[type[LibraryCAM], ...] = (
    HiResCam,
    GradCamElementWise,
    XGradCam,
    LayerCam,
    EigenGradCam,
    ScoreCam,
    AblationCam,
    EigenCam,
    KernelPcaCam,
    FeatureExplanationMethod,
    FullGradCam,
)
