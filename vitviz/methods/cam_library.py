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

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import ClassVar, TypeVar

import numpy as np
import pytorch_grad_cam.ablation_cam
import pytorch_grad_cam.score_cam
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
    SegEigenCAM,
    ShapleyCAM,
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
from vitviz.methods.gradcam import FEATURES, as_feature_map, default_layer, feature_map_reason, layer_module
from vitviz.models import ModelFacts
from vitviz.progress import report
from vitviz.text import picture_size_text

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
    "SegEigenCam",
    "ShapleyCam",
    "XGradCam",
    "bias_layers",
]

T = TypeVar("T")


class _NoProgressBars:
    """Stands in for the `tqdm` module inside the library's Score-CAM and Ablation-CAM.

    Both wrap their loop over channel batches in `tqdm.tqdm(...)`, which drew a progress bar on the
    server's stderr (or the command line's) for every map. tqdm reads its `TQDM_DISABLE` setting once,
    when it is imported, so the bars are switched off here, for those two modules only. Instead,
    each batch reports the channels done of all to `vitviz.progress.report` (a page's or a job's
    progress; a cancelled job stops there).
    """

    @staticmethod
    def tqdm(iterable: Iterable[T], *_args: object, **_kwargs: object) -> Iterable[T]:
        if not isinstance(iterable, range) or iterable.step <= 0:
            return iterable
        return _reported_batches(iterable)


def _reported_batches(starts: range) -> Iterator[int]:
    """The batch starts of a channel loop, reporting (channels done, channels) after each batch."""
    total = max(0, starts.stop)
    report(0, total)
    for start in starts:
        yield start
        report(min(start + starts.step, total), total)


for _module in (pytorch_grad_cam.ablation_cam, pytorch_grad_cam.score_cam):
    _module.tqdm = _NoProgressBars  # type: ignore[attr-defined]


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


@contextmanager
def _unfused_attention(model: nn.Module, unfuse: bool) -> Iterator[None]:
    """With `unfuse`, attention runs on its unfused path for the time of a run, each flag restored after.

    Fused attention has no second derivative on the CPU, which ShapleyCAM's Hessian-vector product
    needs. Call it with the model's lock held.
    """
    # Every fused module, an attention-pooling head's too (SigLIP's), not only the captured layers.
    modules = (
        [module for module in model.modules() if isinstance(vars(module).get("fused_attn"), bool)]
        if unfuse
        else []
    )
    flags = [module.fused_attn for module in modules]
    try:
        for module in modules:
            module.fused_attn = False
        yield
    finally:
        for module, flag in zip(modules, flags, strict=True):
            module.fused_attn = flag


def _release(cam: BaseCAM) -> None:
    """Removes the library's hooks from a finished run.

    The stored activations and gradients are dropped first: the library's `clear()` detaches them in
    place, which fails on the reshaped views it keeps when the graph is kept (ShapleyCAM), and its
    `__del__` would print that failure later.
    """
    hooks = cam.activations_and_grads
    hooks.activations, hooks.gradients = [], []
    hooks.release()


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
    # The backward runs down to the input, not only from the target layer up (ShapleyCAM
    # differentiates the gradient again and asks for the input's gradient).
    whole_graph: ClassVar[bool] = False

    @classmethod
    def unavailable_reason(cls, facts: ModelFacts) -> str | None:
        return super().unavailable_reason(facts) or feature_map_reason(cls.title, facts)

    @property
    def starts_graph(self) -> bool:
        """Whether the recorded graph starts at the target layer (cheaper: nothing below it is kept)."""
        return self.uses_gradients and not self.whole_graph

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        layer = self.options.get("layer") or default_layer(self.facts)
        targets = None
        if self.class_specific and class_indices is not None:
            targets = [ClassifierOutputTarget(int(index)) for index in class_indices]
        wrapper = _TappedModel(self.model, features=layer == FEATURES, start_graph=self.starts_graph)
        with (
            model_lock(self.model),
            _frozen(self.model),
            _unfused_attention(self.model, self.whole_graph),
            self._routed(wrapper, layer) as source,
        ):
            cam = self.make_cam(wrapper, pixels)
            try:
                with torch.inference_mode(False), torch.set_grad_enabled(self.uses_gradients):
                    maps = cam(pixels, targets)  # (B, rows, cols) in [0, 1]
                outputs = cam.outputs
            finally:
                _release(cam)
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
        with LayerTap(self.model, module, wrapper.route, start_graph=self.starts_graph):
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
            if activation.ndim == 3:  # kept as the layer gave it (ShapleyCAM keeps the graph)
                activation = feature_map(activation)
            return int(activation.shape[-1]), int(activation.shape[-2])

        cam.get_target_width_height = layer_grid  # type: ignore[method-assign]
        return cam


def _library_method(
    cam_class: type[BaseCAM], name: str, title: str, summary: str, **overrides: bool
) -> type[LibraryCAM]:
    """A method that is the library's class as it is, under vitviz's name and title."""
    attributes = {
        "__doc__": summary,
        "__module__": __name__,
        "name": name,
        "title": title,
        "cam_class": cam_class,
    }
    attributes.update(overrides)
    return type(cam_class.__name__ + "Method", (LibraryCAM,), attributes)


# (library class, name, title, what it computes); the first two are kept to check vitviz's own against.
_AS_THE_LIBRARY_HAS_THEM: tuple[tuple[type[BaseCAM], str, str, str], ...] = (
    (LibraryGradCAMClass, "library-gradcam", "Grad-CAM (pytorch-grad-cam)", "The library's Grad-CAM."),
    (LibraryGradCAMPlusPlusClass, "library-gradcam++", "Grad-CAM++ (pytorch-grad-cam)", "The library's Grad-CAM++."),
    (HiResCAM, "hirescam", "HiResCAM",
     "HiResCAM (Draelos & Carin, 2020): Σ_k ∂score/∂A_k ⊙ A_k, each cell its own gradient (no averaging)."),
    (GradCAMElementWise, "gradcam-elementwise", "Grad-CAM element-wise",
     "Grad-CAM element-wise: Σ_k ReLU(∂score/∂A_k ⊙ A_k), HiResCAM with the ReLU per element."),
    (XGradCAM, "xgradcam", "XGrad-CAM",
     "XGrad-CAM (Fu et al., 2020): channel weights Σ_ij g·A / Σ_ij A, from two axioms of attribution."),
    (LayerCAM, "layercam", "LayerCAM", "LayerCAM (Jiang et al., 2021): Σ_k ReLU(∂score/∂A_k) ⊙ A_k, weights per cell."),
    (EigenGradCAM, "eigengradcam", "Eigen-Grad-CAM",
     "Eigen-Grad-CAM: the first principal component of the gradient-weighted activations."),
)  # fmt: skip
(
    LibraryGradCAM,
    LibraryGradCAMPlusPlus,
    HiResCam,
    GradCamElementWise,
    XGradCam,
    LayerCam,
    EigenGradCam,
) = (_library_method(*row) for row in _AS_THE_LIBRARY_HAS_THEM)


class _GridShapleyCAM(ShapleyCAM):
    """The library's ShapleyCAM, its weights applied to the reshaped activations.

    Keeping the graph, the library stores activations as the layer gave them; its weights are
    reshaped to the grid but the product with the activations is not, so token outputs (B, N, C)
    failed. The weights themselves are the library's, but where the score is linear in the layer's
    output (a pooled linear head on `forward_features`): the gradient then has no graph and the
    Hessian is zero, so the weights are the mean gradient, as Grad-CAM's.
    """

    def get_cam_weights(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[nn.Module],
        activations: torch.Tensor,
        grads: torch.Tensor,
    ) -> np.ndarray:
        if grads.requires_grad:
            return super().get_cam_weights(input_tensor, target_layer, targets, activations, grads)
        return self._on_grid(grads).mean(dim=(2, 3)).detach().cpu().numpy()

    def get_cam_image(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[nn.Module],
        activations: torch.Tensor,
        grads: torch.Tensor,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        weights = self.get_cam_weights(input_tensor, target_layer, targets, activations, grads)  # (B, C)
        grid = self._on_grid(activations).detach().cpu().numpy()
        return (weights[:, :, None, None] * grid).sum(axis=1)  # (B, rows, cols)

    def _on_grid(self, tensor: torch.Tensor) -> torch.Tensor:
        """A layer's activations or gradients as (B, C, rows, cols), through the model's own reshape."""
        transform = self.activations_and_grads.reshape_transform
        return transform(tensor) if transform is not None else tensor


class ShapleyCam(LibraryCAM):
    """ShapleyCAM (Cai et al., 2025): channel weights from the gradient and the Hessian-vector product,
    g − ½·H·A, a second-order estimate of each channel's Shapley value for the class score."""

    name: ClassVar[str] = "shapleycam"
    title: ClassVar[str] = "ShapleyCAM"
    cam_class = _GridShapleyCAM
    whole_graph: ClassVar[bool] = True


class SegEigenCam(LibraryCAM):
    """Seg-Eigen-CAM (Chung & Ying, 2025): the first principal component of |gradient| ⊙ activations,
    its sign set so that the salient region is positive. Made for segmentation; on a classifier it
    follows the class score like Eigen-Grad-CAM."""

    name: ClassVar[str] = "seg-eigencam"
    title: ClassVar[str] = "Seg-Eigen-CAM"
    cam_class = SegEigenCAM


class ScoreCam(LibraryCAM):
    """Score-CAM (Wang et al., 2020): each channel, upsampled, masks the input; the class score weighs it.

    One forward per channel of the layer (e.g. 1280 for EfficientNet-Lite0, 384 for ViT-S), in
    batches of `batch_size`: the slowest method here.
    """

    name: ClassVar[str] = "scorecam"
    title: ClassVar[str] = "Score-CAM"
    slow: ClassVar[bool] = True
    cam_class = ScoreCAM
    uses_gradients: ClassVar[bool] = False


class AblationCam(LibraryCAM):
    """Ablation-CAM (Desai & Ramaswamy, 2020): each channel's weight is the class score's drop when it is ablated.

    One forward per channel, in batches of `batch_size`. The library ablates a channel by zeroing
    it when the layer's minimum is 0, else by setting it far below the minimum.
    """

    name: ClassVar[str] = "ablationcam"
    title: ClassVar[str] = "Ablation-CAM"
    slow: ClassVar[bool] = True
    cam_class = AblationCAM
    uses_gradients: ClassVar[bool] = False

    def make_cam(self, wrapper: _TappedModel, pixels: torch.Tensor) -> BaseCAM:
        cam = super().make_cam(wrapper, pixels)
        # Channels-last outputs, tokens (B, N, C) or Swin's maps (B, h, w, C), need the library's ViT
        # ablation layer (it ablates the last dimension), conv maps the plain one.
        with torch.inference_mode():
            seen: list[torch.Tensor] = []
            handle = wrapper.tap.register_forward_hook(lambda _m, _i, output: seen.append(output))
            try:
                wrapper(pixels[:1])
            finally:
                handle.remove()
        output = seen[0] if seen else None
        # as_feature_map returns a conv map itself, and permutes a channels-last one.
        channels_last = output is not None and (
            output.ndim == 3 or as_feature_map(output, self.facts, "the target layer") is not output
        )
        cam.ablation_layer = AblationLayerVit() if channels_last else AblationLayer()
        cam.batch_size = int(self.options.get("batch_size", 32))
        return cam


_CLASS_AGNOSTIC = {
    "uses_gradients": False,
    "class_specific": False,
}  # no gradient, no class: headless models too
EigenCam = _library_method(
    EigenCAM, "eigencam", "EigenCAM",
    "EigenCAM (Muhammad & Yeasin, 2020): the first principal component of the layer's activations.",
    **_CLASS_AGNOSTIC,
)  # fmt: skip
KernelPcaCam = _library_method(
    KPCA_CAM, "kpca-cam", "KPCA-CAM",
    "KPCA-CAM (Karmani et al., 2024): EigenCAM with kernel PCA (sigmoid kernel) instead of linear PCA.",
    **_CLASS_AGNOSTIC,
)  # fmt: skip


class FeatureExplanationMethod(LibraryCAM):
    """FEM (Fuad et al., 2020): channels weighted by how often they fire above their mean + 2 σ.

    Class-agnostic, like EigenCAM.
    """

    name: ClassVar[str] = "fem"
    title: ClassVar[str] = "FEM"
    cam_class = FEM
    uses_gradients: ClassVar[bool] = False
    class_specific: ClassVar[bool] = False

    @classmethod
    def unavailable_reason(cls, facts: ModelFacts) -> str | None:
        """On n cells no value lies more than (n − 1)/√n standard deviations above the mean: under 6 cells, never 2."""
        reason = super().unavailable_reason(facts)
        grid = facts.grid_size or (facts.stage_grids[-1] if facts.stage_grids else None)
        if reason is None and grid is not None and grid[0] * grid[1] < 6:
            return (
                f"FEM marks cells more than 2 standard deviations above their map's mean, which no cell of "
                f"{facts.name}'s {grid[0]}×{grid[1]} feature grid can be (it needs at least 6 cells)."
            )
        return reason


def bias_layers(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """FullGrad's layers: (the module whose output is hooked, the module whose bias it reads).

    Every `Conv2d` with a bias and every `BatchNorm2d`, subclasses included. timm's fused
    norm-activation layers (`BatchNormAct2d`, a `BatchNorm2d` subclass) apply their activation after
    the norm: their bias gradient is the gradient at the norm's output, before the activation, so
    the hook sits on their `drop` module (an identity in eval mode), which that output passes
    through first. pytorch-grad-cam's own search matches exact types only and finds none of them.
    """
    layers = []
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            fused = isinstance(getattr(module, "act", None), nn.Module) and isinstance(
                getattr(module, "drop", None), nn.Module
            )
            layers.append((module.drop if fused else module, module))
        elif isinstance(module, nn.Conv2d) and module.bias is not None:
            layers.append((module, module))
    return layers


class _BiasLayersFullGrad(FullGrad):
    """The library's FullGrad on layers found by `bias_layers` instead of its exact-type search."""

    def __init__(self, model: nn.Module, layers: list[tuple[nn.Module, nn.Module]]) -> None:
        BaseCAM.__init__(self, model, [hooked for hooked, _ in layers], None, compute_input_gradient=True)
        self.bias_data = [self.get_bias_data(owner).cpu().numpy() for _, owner in layers]


class FullGradCam(LibraryCAM):
    """FullGrad (Srinivas & Fleuret, 2019): |input × its gradient| plus |bias × gradient| of every layer.

    CNNs only. Every conv and batch-norm bias counts, including those of timm's fused
    norm-activation layers (EfficientNet's `BatchNormAct2d`), read before their activation
    (`bias_layers`). The map is computed per pixel and averaged over the cells of the model's last
    feature grid. The `layer` option does not apply.
    """

    name: ClassVar[str] = "fullgrad"
    title: ClassVar[str] = "FullGrad"
    cam_class = FullGrad
    families: ClassVar[tuple[str, ...]] = ("cnn",)  # type: ignore[assignment]

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        targets = None if class_indices is None else [ClassifierOutputTarget(int(i)) for i in class_indices]
        layers = bias_layers(self.model)
        if not layers:
            raise MethodUnavailableError(
                f"FullGrad finds no conv or batch-norm layer with a bias in {self.facts.name}."
            )
        with model_lock(self.model), _frozen(self.model):
            cam = _BiasLayersFullGrad(self.model, layers)
            try:
                with torch.inference_mode(False), torch.enable_grad():
                    per_pixel = cam(pixels, targets)  # (B, H, W) in [0, 1]
                outputs = cam.outputs
            finally:
                _release(cam)
        grid_size, cell = feature_grid(self.loaded, (int(pixels.shape[-2]), int(pixels.shape[-1])))
        maps = pool_to_grid(torch.from_numpy(per_pixel), grid_size, cell, reduce="mean")
        classes = self.chosen_classes(outputs, class_indices)
        return (
            maps,
            classes,
            f"input and {len(layers)} bias layers, mean per cell of {picture_size_text(width=cell[1], height=cell[0])}",
        )


# The library's methods offered in menus, in the order they are listed.
LIBRARY_CAMS: tuple[type[LibraryCAM], ...] = (
    HiResCam,
    GradCamElementWise,
    XGradCam,
    LayerCam,
    EigenGradCam,
    ShapleyCam,
    SegEigenCam,
    ScoreCam,
    AblationCam,
    EigenCam,
    KernelPcaCam,
    FeatureExplanationMethod,
    FullGradCam,
)
