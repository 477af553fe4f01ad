"""One random ViT twice: in timm's `vit_base_patch16_224` layout and as torchvision's `VisionTransformer`.

The reference implementations of AttnLRP (lxt) and LeGrad (TorchCAM) support torchvision's ViT;
vitviz explains timm's. The same weights in both let each be checked against its reference.
"""

from __future__ import annotations

import numpy as np
import timm
import torch
from torchvision.models.vision_transformer import VisionTransformer

from tests.support.methods_helpers import frozen_loaded
from vitviz.images import BUILTIN_PHOTOS, builtin_photo
from vitviz.models import LoadedModel
from vitviz.preprocess import image_view

__all__ = ["TWIN_CONFIG", "pearson", "timm_and_torchvision_twins", "twins_on_five_photos"]

# vit_base_patch16_224's layout (class token, pre-norm blocks, GELU MLP, token head), made small.
TWIN_CONFIG = {"img_size": 96, "depth": 3, "embed_dim": 96, "num_heads": 4, "num_classes": 10}


def timm_and_torchvision_twins(seed: int = 0) -> tuple[LoadedModel, VisionTransformer]:
    """A seeded random timm ViT (frozen, as the app loads models) and a torchvision ViT with its weights.

    The attention's query/key weights and the head are scaled up so that attention is peaked and
    the logits spread: at timm's initialisation every layer attends almost uniformly and a map
    would say little about which rule produced it.
    """
    torch.manual_seed(seed)
    model = timm.create_model("vit_base_patch16_224", pretrained=False, **TWIN_CONFIG).eval()
    dim = TWIN_CONFIG["embed_dim"]
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[: 2 * dim].mul_(6.0)
            for bias in (block.attn.qkv.bias, block.attn.proj.bias, block.mlp.fc1.bias, block.mlp.fc2.bias):
                bias.normal_(0.0, 0.05)
        model.pos_embed.normal_(0.0, 0.2)
        model.head.weight.mul_(20.0)
        model.head.bias.normal_(0.0, 0.1)
    loaded = frozen_loaded(model, "vit_base_patch16_224")
    twin = VisionTransformer(
        image_size=TWIN_CONFIG["img_size"],
        patch_size=16,
        num_layers=TWIN_CONFIG["depth"],
        num_heads=TWIN_CONFIG["num_heads"],
        hidden_dim=dim,
        mlp_dim=4 * dim,
        num_classes=TWIN_CONFIG["num_classes"],
    ).eval()
    twin.load_state_dict(_torchvision_state(loaded.model.state_dict()), strict=True)
    twin.requires_grad_(False)
    return loaded, twin


def _torchvision_state(timm_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's parameter names mapped to torchvision's (q, k, v are stacked in the same order in both)."""
    state = {
        "class_token": timm_state["cls_token"],
        "conv_proj.weight": timm_state["patch_embed.proj.weight"],
        "conv_proj.bias": timm_state["patch_embed.proj.bias"],
        "encoder.pos_embedding": timm_state["pos_embed"],
        "encoder.ln.weight": timm_state["norm.weight"],
        "encoder.ln.bias": timm_state["norm.bias"],
        "heads.head.weight": timm_state["head.weight"],
        "heads.head.bias": timm_state["head.bias"],
    }
    for index in range(TWIN_CONFIG["depth"]):
        ours, theirs = f"blocks.{index}.", f"encoder.layers.encoder_layer_{index}."
        for timm_name, torchvision_name in (
            ("norm1", "ln_1"),
            ("norm2", "ln_2"),
            ("attn.proj", "self_attention.out_proj"),
            ("mlp.fc1", "mlp.0"),
            ("mlp.fc2", "mlp.3"),
        ):
            for kind in ("weight", "bias"):
                state[f"{theirs}{torchvision_name}.{kind}"] = timm_state[f"{ours}{timm_name}.{kind}"]
        state[f"{theirs}self_attention.in_proj_weight"] = timm_state[f"{ours}attn.qkv.weight"]
        state[f"{theirs}self_attention.in_proj_bias"] = timm_state[f"{ours}attn.qkv.bias"]
    return {name: tensor.clone() for name, tensor in state.items()}


def twins_on_five_photos(seed: int = 0) -> tuple[LoadedModel, VisionTransformer, torch.Tensor]:
    """The twins and five built-in photos as the timm model's eval view, (5, 3, H, W)."""
    loaded, torchvision_vit = timm_and_torchvision_twins(seed)
    photos = list(BUILTIN_PHOTOS)[:5]
    pixels = torch.cat([image_view(builtin_photo(name), loaded.facts).tensor for name in photos])
    return loaded, torchvision_vit, pixels


def pearson(first: np.ndarray, second: np.ndarray) -> float:
    """Pearson's r between two maps of any shape with the same number of cells."""
    return float(np.corrcoef(np.ravel(first), np.ravel(second))[0, 1])
