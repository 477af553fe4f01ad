"""Helpers for the method and probe tests: tiny models wrapped as loaded models, hook and grad checks."""

from __future__ import annotations

import copy

import torch
from torch import nn

from vitviz.capture import attention_modules
from vitviz.models import LoadedModel, ModelFacts, model_facts


def frozen_loaded(
    model: nn.Module, name: str = "tiny", weights: str = "random", num_classes: int | None = None
) -> LoadedModel:
    """A copy of a tiny fixture model, frozen like `load_model` freezes, so the fixture stays as it is.

    `num_classes` gives the copy a new random head (the DINOv2-style register model has none).
    """
    frozen = copy.deepcopy(model)
    if num_classes is not None:
        frozen.reset_classifier(num_classes)
    frozen.eval().requires_grad_(False)
    labels = tuple(f"label {index}" for index in range(getattr(frozen, "num_classes", 0) or 0)) or None
    return LoadedModel(frozen, model_facts(name, frozen), weights, torch.device("cpu"), labels)


def hand_made_loaded(model: nn.Module, input_size: tuple[int, int], num_classes: int) -> LoadedModel:
    """A toy CNN with facts written by hand (it is no timm model)."""
    facts = ModelFacts(
        name="toy",
        family="cnn",
        input_size=input_size,
        grid_size=None,
        patch_size=None,
        stride_px=None,
        num_prefix_tokens=0,
        num_layers=0,
        num_heads=0,
        embed_dim=2,
        global_pool="avg",
        num_classes=num_classes,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        interpolation="bilinear",
        crop_pct=1.0,
        num_params=sum(p.numel() for p in model.parameters()),
    )
    return LoadedModel(model.eval().requires_grad_(False), facts, "toy", torch.device("cpu"), None)


def hook_counts(model: nn.Module) -> tuple[int, int, int, int]:
    """Forward, forward-pre, backward and backward-pre hooks over every module."""
    modules = list(model.modules())
    return (
        sum(len(m._forward_hooks) for m in modules),
        sum(len(m._forward_pre_hooks) for m in modules),
        sum(len(m._backward_hooks) for m in modules),
        sum(len(m._backward_pre_hooks) for m in modules),
    )


def parameters_untouched(model: nn.Module, requires_grad: bool = False) -> bool:
    return all(p.grad is None and p.requires_grad == requires_grad for p in model.parameters())


def fused_flags(model: nn.Module) -> list[bool]:
    return [module.fused_attn for module in attention_modules(model)]


def model_input(loaded: LoadedModel, batch: int = 1, seed: int = 0) -> torch.Tensor:
    height, width = loaded.facts.input_size
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def count_maps(monkeypatch, module) -> list[str]:
    """The methods whose maps `module` (faithfulness and ROAD's, the sanity check's) computes from here
    on, one entry a map, in order: its `explain_pixels` calls, still computed."""
    explained: list[str] = []
    computed = module.explain_pixels

    def counted(loaded, pixels, method, *rest, **options):
        explained.append(method)
        return computed(loaded, pixels, method, *rest, **options)

    monkeypatch.setattr(module, "explain_pixels", counted)
    return explained
