"""Test set-up: no test may reach the network, and the UI-free library must stay UI-free."""

import os

# Set before timm / huggingface_hub are imported anywhere, so no test can download.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TIMM_FUSED_ATTN", "1")

import pytest
import timm
import torch

# Tiny random models of every family the app knows, built from real timm architectures.
TINY_MODELS: dict[str, tuple[str, dict]] = {
    "vit": ("vit_tiny_patch16_224", {"img_size": 64, "depth": 2}),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", {"img_size": 64, "depth": 2}),
    "registers": ("vit_small_patch14_reg4_dinov2", {"img_size": 56, "depth": 2}),
    "hybrid": ("vit_tiny_r_s16_p8_224", {"img_size": 96, "depth": 2}),
    "vit_rectangular": ("vit_tiny_patch16_224", {"img_size": (48, 64), "depth": 3}),
    "cnn": ("resnet18", {}),
}


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        key: timm.create_model(name, pretrained=False, **kwargs).eval()
        for key, (name, kwargs) in TINY_MODELS.items()
    }
