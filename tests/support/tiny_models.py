"""The tiny random timm models of tests/conftest.py wrapped as loaded models, and state snapshots."""

from __future__ import annotations

import torch

from tests.conftest import TINY_MODELS
from vitviz.models import LoadedModel, model_facts

# The keys of the tiny models that are transformers: every family but the CNN.
TRANSFORMER_KEYS = ("vit", "deit_distilled", "registers", "hybrid", "vit_rectangular")


def tiny_loaded(tiny_models: dict[str, torch.nn.Module], key: str) -> LoadedModel:
    """The session's tiny model of this family as a LoadedModel with random weights (shared, not copied)."""
    name = TINY_MODELS[key][0]
    model = tiny_models[key]
    return LoadedModel(model, model_facts(name, model), "random", torch.device("cpu"), None)


def state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of the model's state, copied, to check later that nothing changed."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
