"""Explanation methods by name: one module per method over the shared pipeline in `base`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vitviz.methods.attention_methods import AttentionRollout, RawAttention
from vitviz.methods.attnlrp import AttnLRP
from vitviz.methods.base import (
    ExplanationMethod,
    ExplanationResult,
    MethodUnavailableError,
    feature_grid,
    pool_to_grid,
)
from vitviz.methods.cam_library import LIBRARY_CAMS
from vitviz.methods.captum_methods import GradientShap, IntegratedGradients, Occlusion, Saliency, SmoothGrad
from vitviz.methods.chefer import Chefer
from vitviz.methods.grad_rollout import GradRollout
from vitviz.methods.gradcam import GradCAM, GradCAMPlusPlus
from vitviz.methods.legrad import LeGrad
from vitviz.models import LoadedModel, ModelFacts
from vitviz.preprocess import ImageView, check_view

__all__ = [
    "METHODS",
    "METHOD_NAMES",
    "ExplanationMethod",
    "ExplanationResult",
    "MethodUnavailableError",
    "available_methods",
    "default_method",
    "explain_pixels",
    "explanation_map",
    "feature_grid",
    "method_title",
    "pool_to_grid",
]

# Name → class, in the order menus list them.
METHODS: dict[str, type[ExplanationMethod]] = {
    method.name: method
    for method in (
        AttentionRollout,
        RawAttention,
        GradCAM,
        GradCAMPlusPlus,
        GradRollout,
        Chefer,
        AttnLRP,
        LeGrad,
        *LIBRARY_CAMS,
        IntegratedGradients,
        Occlusion,
        Saliency,
        SmoothGrad,
        GradientShap,
    )
}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)


def _method_class(method: str) -> type[ExplanationMethod]:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHOD_NAMES)}")
    return METHODS[method]


def method_title(method: str) -> str:
    """The human name of a method, e.g. "Grad-CAM"."""
    return _method_class(method).title


def available_methods(facts: ModelFacts) -> list[str]:
    """The methods that can explain a model: by family, and class-specific ones only with a head."""
    return [name for name, method in METHODS.items() if method.unavailable_reason(facts) is None]


def default_method(facts: ModelFacts) -> str:
    """Attention rollout where it applies, else raw attention (Swin's windows), else Grad-CAM, else the first that fits."""
    available = available_methods(facts)
    for method in ("rollout", "attention", "gradcam"):
        if method in available:
            return method
    return available[0] if available else ("gradcam" if facts.family == "cnn" else "rollout")


def explain_pixels(
    loaded: LoadedModel,
    pixels: torch.Tensor,
    method: str,
    class_indices: Sequence[int] | None = None,
    **options: Any,
) -> list[ExplanationResult]:
    """Explains a batch of prepared inputs.

    Args:
        loaded: the model; never modified.
        pixels: (B, 3, H, W) normalised input at the model's input size.
        method: a name from `METHOD_NAMES`.
        class_indices: one class per image (or one for all), or None for each image's top class.
        options: the method's own options (see each class).

    Raises:
        MethodUnavailableError: the method does not fit the model.
        ValueError: unknown method, bad class or bad option.
    """
    return _method_class(method)(loaded, **options).explain(pixels, class_indices)


def explanation_map(
    loaded: LoadedModel,
    view: ImageView,
    method: str,
    class_index: int | None = None,
    **options: Any,
) -> ExplanationResult:
    """Explains one image's view (`vitviz.preprocess.image_view`: the eval crop, the whole photo, …).

    Args:
        loaded: the model; never modified.
        view: the image's view.
        method: a name from `METHOD_NAMES`.
        class_index: the class to explain, or None for the model's most probable class on this input.
        options: the method's own options.

    Returns:
        The map over the token / feature grid, the class explained and where the map comes from.
    """
    check_view(loaded, view)
    pixels = view.tensor
    classes = None if class_index is None else [class_index]
    return explain_pixels(loaded, pixels, method, classes, **options)[0]
