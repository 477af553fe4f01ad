"""The `lxt` package's own AttnLRP on torchvision's ViT, as a test oracle, with every global patch undone.

lxt's supported ViT path patches torch's `nn.GELU`, `nn.LayerNorm` and `nn.MultiheadAttention`
classes and zennit's `BasicHook` for the whole process, then explains with zennit's Gamma rules
on `Conv2d` and `Linear`. `lxt_relevance` applies those patches only while it runs and puts every
class back as it was, so no other test in the process sees them.

lxt 2.1's `lxt.efficient` package imports every language model it supports from `transformers`
when it is imported, and with transformers 5 (the one that fits timm's huggingface_hub) that
import fails on a name transformers removed. The ViT rules need none of it: their three modules
(`rules`, `patches`, `zennit_patches`, plus `models/vit_torch`) import only torch, torchvision and
zennit, so they are loaded from lxt's own files without running the two package `__init__`s.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["lxt_relevance"]

_PATCHED_CLASSES = (nn.GELU, nn.LayerNorm, nn.MultiheadAttention)


def _lxt_vit_modules() -> tuple[Any, Any]:
    """lxt's torchvision-ViT patch map (`cp_LRP`) and its zennit patch, from lxt's installed files."""
    spec = importlib.util.find_spec("lxt")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("lxt is not installed")
    efficient = Path(next(iter(spec.submodule_search_locations))) / "efficient"
    for package, folder in (("lxt.efficient", efficient), ("lxt.efficient.models", efficient / "models")):
        if package not in sys.modules:
            stand_in = types.ModuleType(package)
            stand_in.__path__ = [str(folder)]
            sys.modules[package] = stand_in
    vit_torch = importlib.import_module("lxt.efficient.models.vit_torch")
    zennit_patches = importlib.import_module("lxt.efficient.zennit_patches")
    return vit_torch.cp_LRP, zennit_patches.monkey_patch_zennit


@contextmanager
def _lxt_patches() -> Iterator[None]:
    """lxt's patches on torch's classes and zennit's hook, undone on exit (also on error)."""
    import zennit.core

    cp_lrp, patch_zennit = _lxt_vit_modules()
    saved = {cls: dict(cls.__dict__) for cls in (*_PATCHED_CLASSES, zennit.core.BasicHook)}
    try:
        for target, patch in cp_lrp.items():
            assert patch(target), f"lxt could not patch {target.__name__}"
        patch_zennit()
        yield
    finally:
        for cls, attributes in saved.items():
            for name in set(cls.__dict__) - set(attributes):
                delattr(cls, name)
            for name, value in attributes.items():
                if cls.__dict__.get(name) is not value:
                    setattr(cls, name, value)


def lxt_relevance(
    model: nn.Module, pixels: torch.Tensor, classes: list[int], conv_gamma: float, linear_gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """lxt's AttnLRP relevance per pixel (summed over colour channels) for each image's class.

    As lxt's ViT example does it: its patches, zennit's Gamma rule on every Conv2d and Linear, one
    backward from the class logit, relevance = input × gradient.

    Args:
        model: torchvision's `VisionTransformer`, eval mode.
        pixels: (B, 3, H, W).
        classes: one class per image.

    Returns:
        (B, H, W) relevance and the (B,) logits explained.
    """
    from zennit.composites import LayerMapComposite
    from zennit.rules import Gamma

    with _lxt_patches():
        composite = LayerMapComposite([(nn.Conv2d, Gamma(conv_gamma)), (nn.Linear, Gamma(linear_gamma))])
        composite.register(model)
        try:
            start = pixels.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                logits = model(start)
                explained = logits.gather(1, torch.tensor(classes)[:, None])
                (gradient,) = torch.autograd.grad(explained.sum(), start)
        finally:
            composite.remove()
    return (start.detach() * gradient).sum(dim=1), explained.detach()[:, 0]
