"""Tiny random builds of timm architectures from every family, and a textured image to explain."""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from vitviz.models import LoadedModel, model_facts


def _input(side: int) -> dict[str, Any]:
    """Build arguments that make a model without `img_size` (CNNs, MobileViT, FastViT) report a small input."""
    return {"pretrained_cfg_overlay": {"input_size": (3, side, side)}}


# key: (timm name, build arguments). Small depths, widths and inputs where timm allows.
ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "vit": ("vit_tiny_patch16_224", {"img_size": 64, "depth": 2}),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", {"img_size": 64, "depth": 2}),
    "registers": ("vit_small_patch14_reg4_dinov2", {"img_size": 56, "depth": 2, "num_classes": 10}),
    "clip": (
        "vit_base_patch16_clip_224",
        {"img_size": 64, "depth": 2, "embed_dim": 64, "num_heads": 2, "num_classes": 10},
    ),
    "siglip": (
        "vit_base_patch16_siglip_224",
        {"img_size": 64, "depth": 2, "embed_dim": 64, "num_heads": 2, "num_classes": 10},
    ),
    "gap": ("vit_tiny_patch16_224", {"img_size": 64, "depth": 2, "global_pool": "avg", "class_token": False}),
    "eva": ("eva02_tiny_patch14_224", {"img_size": 56, "depth": 2, "num_classes": 10}),
    "beit": ("beit_base_patch16_224", {"img_size": 64, "depth": 2, "embed_dim": 64, "num_heads": 2}),
    "flexivit": ("flexivit_small", {"img_size": 64, "depth": 2, "embed_dim": 64, "num_heads": 2}),
    "cait": ("cait_xxs24_224", {"img_size": 64, "depth": 2, "depth_token_only": 1}),
    "xcit": ("xcit_nano_12_p16_224", {"img_size": 64, "depth": 2}),
    "swin": (
        "swin_tiny_patch4_window7_224",
        {"img_size": 112, "depths": (1, 1, 1, 1), "embed_dim": 32, "num_heads": (1, 2, 4, 8)},
    ),
    "levit": ("levit_128s", {"img_size": 128}),
    "pit": ("pit_ti_224", {"img_size": 64}),
    "mobilevit": ("mobilevit_xxs", _input(128)),
    "fastvit": ("fastvit_sa12", {"layers": (1, 1, 1, 1), **_input(64)}),
    "maxvit": ("maxvit_rmlp_pico_rw_256", {"img_size": 128}),
    "hybrid_s16": ("vit_tiny_r_s16_p8_224", {"img_size": 96, "depth": 2}),
    "hybrid_r26": ("vit_small_r26_s32_224", {"img_size": 96, "depth": 2}),
    "resnet": ("resnet18", _input(96)),
    "efficientnet": ("tf_efficientnet_lite0", _input(96)),
    "convnext": ("convnext_atto", _input(96)),
}


def build_architecture(key: str, seed: int = 0) -> LoadedModel:
    """The architecture with seeded random weights, frozen and in eval mode like `load_model` leaves it.

    The classifier heads are scaled up, and the query and key projections of every attention layer
    sharpened: at random initialisation some heads are so small (BEiT's 0.001) that every
    gradient-based map is flat to float precision, and near-uniform attention makes every token of
    LeViT's downsampling stages (attention with no residual) the same mean, so every map of its last
    stage is exactly flat. Either would test the initialisation rather than the method.
    """
    name, build_args = ARCHITECTURES[key]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=False, **build_args)
    model.eval().requires_grad_(False)
    with torch.no_grad():
        for head in _classifier_layers(model):
            head.weight.mul_(0.5 / max(float(head.weight.std()), 1e-12))
        for module in model.modules():
            if "Attention" in type(module).__name__ or type(module).__name__.endswith("Attn"):
                for part, layer in module.named_modules():
                    if isinstance(layer, nn.Linear) and part.split(".")[0] in ("qkv", "q", "k", "kv"):
                        layer.weight.mul_(4.0)
    return LoadedModel(model, model_facts(name, model), "random", torch.device("cpu"), None)


def _classifier_layers(model: nn.Module) -> list[nn.Linear]:
    heads = model.get_classifier() if hasattr(model, "get_classifier") else ()
    heads = heads if isinstance(heads, tuple) else (heads,)
    return [head for head in heads if isinstance(head, nn.Linear)]


def textured_input(height: int, width: int, seed: int = 1) -> torch.Tensor:
    """(1, 3, H, W): stripes of several frequencies and orientations plus noise, in normalised units."""
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 6.28, height), torch.linspace(0, 6.28, width), indexing="ij")
    image = torch.stack([torch.sin(3 * x) * torch.cos(2 * y), torch.sin(5 * y + x), torch.cos(4 * x * y / 6)])
    return (image + 0.3 * torch.randn(3, height, width, generator=generator))[None]
