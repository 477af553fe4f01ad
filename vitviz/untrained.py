"""Untrained twins of loaded models: the same architecture and input size with random weights."""

from __future__ import annotations

import timm
import torch

from vitviz.models import LoadedModel, ModelError, model_facts

__all__ = ["UNTRAINED_SEED", "untrained_twin"]

# Twins are seeded so that "random weights" show the same numbers on every run and in every test.
UNTRAINED_SEED = 0


def untrained_twin(loaded: LoadedModel, seed: int = UNTRAINED_SEED) -> LoadedModel:
    """The loaded model's architecture with freshly initialised weights, for side-by-side views.

    `load_model(name, "random")` builds a model at its default size (DINOv2 at 518 px, a 37×37
    grid), while the bundled DINOv2 runs at 224 px (16×16); a twin keeps the loaded model's input
    size and class count, so both sides of a comparison have the same grid. The global random
    state is left untouched.

    Returns:
        A LoadedModel in eval mode on the same device, with weights "random".
    """
    facts = loaded.facts
    build_args: dict[str, object] = {"num_classes": facts.num_classes}
    if facts.family != "cnn":
        build_args["img_size"] = facts.input_size  # CNN constructors take no img_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = timm.create_model(facts.name, pretrained=False, **build_args)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ModelError(f"Could not build an untrained {facts.name}: {error}") from error
    model.eval().requires_grad_(False)
    model.to(loaded.device)
    return LoadedModel(model, model_facts(facts.name, model), "random", loaded.device, loaded.labels)
