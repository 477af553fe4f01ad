"""Sanity checks for saliency maps: cascading randomisation of the weights (Adebayo et al., 2018).

A map that explains the model must change when the model's weights are destroyed. Starting from
the top (the head), one stage at a time down to the input, a deep copy of the model has its
weights re-drawn at random and the method's map is made again; its Spearman rank correlation with
the original map says how much of the map was left standing. The shared model is never touched.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from vitviz.capture import model_lock
from vitviz.methods import METHODS, explain_pixels
from vitviz.models import LoadedModel
from vitviz.preprocess import ImageView, check_view
from vitviz.progress import PlannedSteps, PlanStep

__all__ = [
    "ORIGINAL_STAGE",
    "UNFAITHFUL_RANK_CORRELATION",
    "SanityResult",
    "cascading_randomisation",
    "randomisation_stages",
    "rank_correlation",
]

# A method whose map still has |ρ| above this once the head and half the blocks are random does
# not depend on the weights it claims to explain (Adebayo et al. show edge detectors doing so).
UNFAITHFUL_RANK_CORRELATION = 0.9
ORIGINAL_STAGE = "original"  # the first stage: nothing randomised

# Containers whose children are the model's blocks, in forward order (ViTs and EfficientNets:
# blocks; ConvNeXt, Swin: stages / layers; ResNets: layer1 … layer4).
_BLOCK_CONTAINERS = re.compile(r"blocks|stages|layers|layer\d+")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SanityResult:
    """One method's maps as the weights are randomised from the top down."""

    method: str  # registry name
    stages: tuple[str, ...]  # "original", "head", the blocks from the last, "embedding" (ViT) / "stem" (CNN)
    maps: np.ndarray  # (stages, rows, cols) float32, the method's map at each stage
    rank_correlation: tuple[float | None, ...]  # with the original map; None where a map is constant
    checkpoint: int  # the stage where the head and half the blocks are random
    target_index: int | None  # the class explained at every stage (None for class-agnostic maps)

    @property
    def flagged(self) -> bool:
        """True when the map barely changed by the checkpoint: not faithful to the weights."""
        value = self.rank_correlation[self.checkpoint]
        return value is not None and abs(value) > UNFAITHFUL_RANK_CORRELATION


def rank_correlation(reference: np.ndarray, other: np.ndarray) -> float | None:
    """Spearman's ρ between two maps' cells, or None when either map is constant (ρ is undefined)."""
    first = np.asarray(reference, dtype=np.float64).ravel()
    second = np.asarray(other, dtype=np.float64).ravel()
    if first.shape != second.shape:
        raise ValueError(f"maps of {first.size} and {second.size} cells cannot be compared")
    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return None
    if np.array_equal(first, second):
        return 1.0  # exactly, where scipy's arithmetic may give 0.9999999999999999
    return float(spearmanr(first, second).statistic)


def _block_names(model: nn.Module) -> list[str]:
    """The model's blocks in forward order, nested sequences flattened (EfficientNet's stages)."""

    def flatten(prefix: str, module: nn.Module) -> list[str]:
        if isinstance(module, nn.Sequential | nn.ModuleList):
            return [
                name for child, sub in module.named_children() for name in flatten(f"{prefix}.{child}", sub)
            ]
        return [prefix]

    return [
        name
        for child, module in model.named_children()
        if _BLOCK_CONTAINERS.fullmatch(child)
        for name in flatten(child, module)
    ]


def randomisation_stages(model: nn.Module) -> list[tuple[str, list[str]]]:
    """The parameters re-drawn at each stage, top first: head, each block from the last, embedding.

    The head stage holds the classifier and everything after the last block (final norms, a
    CNN's last conv); the embedding stage everything before the first block (patch embedding,
    class token, position embedding, a CNN stem).

    Returns:
        (stage name, parameter names) pairs; every parameter is in exactly one stage.
    """
    blocks = _block_names(model)
    names = [name for name, _ in model.named_parameters()]

    def in_block(name: str, block: str) -> bool:
        return name.startswith(block + ".")

    block_of = {name: next((block for block in blocks if in_block(name, block)), None) for name in names}
    positions = [index for index, name in enumerate(names) if block_of[name] is not None]
    first, last = (positions[0], positions[-1]) if positions else (len(names), len(names) - 1)
    head = [name for index, name in enumerate(names) if block_of[name] is None and index > last]
    embedding = [name for index, name in enumerate(names) if block_of[name] is None and index < first]
    stages = [("head", head)]
    stages += [(block, [name for name in names if block_of[name] == block]) for block in reversed(blocks)]
    stages.append(("embedding" if hasattr(model, "patch_embed") else "stem", embedding))
    return [(stage, members) for stage, members in stages if members]


def _redraw(parameters: list[torch.Tensor], generator: torch.Generator) -> None:
    """Re-draws each tensor from a Gaussian with its own mean and standard deviation.

    Keeping each tensor's scale (rather than a layer's default init) leaves e.g. DINOv2's small
    LayerScale factors small, so a random block perturbs the stream as much as a trained one.
    """
    with torch.no_grad():
        for tensor in parameters:
            values = tensor.detach().float()
            std = float(values.std()) if values.numel() > 1 else 0.0
            drawn = torch.randn(tensor.shape, generator=generator) * std + float(values.mean())
            tensor.copy_(drawn.to(tensor.device, tensor.dtype))


def cascading_randomisation(
    loaded: LoadedModel,
    view: ImageView,
    method: str,
    class_index: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    original: np.ndarray | None = None,
    **options: Any,
) -> SanityResult:
    """The method's map as the model's weights are randomised from the head down, stage by stage.

    Args:
        loaded: the model; shared and never modified (a deep copy is randomised).
        view: the image's view (`vitviz.preprocess.image_view`).
        method: a name from the registry.
        class_index: the class explained at every stage; default the model's top class.
        seed: seed of the random weights.
        progress: called after each map with (maps done, maps in all); an exception it raises stops.
            Every map is a step of one kind: the first, which also pays the process's warm-up,
            prices the others only until the second has been timed.
        original: the method's map of this view for `class_index` on the model as it is, when the
            caller has it (the arena): it is not computed again, and the maps reported are one fewer.
        options: the method's own options.

    Returns:
        Maps and rank correlations for "original" and every stage of `randomisation_stages`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}")
    with model_lock(loaded.model):  # no capture may be half-way (hooks, fused flags) while copying
        model = copy.deepcopy(loaded.model)
    copied = replace(loaded, model=model)
    check_view(loaded, view)
    pixels = view.tensor.to(loaded.device)
    stages = randomisation_stages(model)
    walk = PlannedSteps(progress, [PlanStep("map")] * (len(stages) + int(original is None)))
    classes = None
    if class_index is not None:
        classes = [class_index]
    elif METHODS[method].class_specific and loaded.facts.has_classifier:
        with torch.inference_mode():
            classes = [int(model(pixels).argmax(dim=-1)[0])]
    parameters = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(seed)
    if original is not None:
        maps = [np.asarray(original, dtype=np.float32)]
    else:
        with walk.step("map"):  # a slow method's masks move the map's step
            maps = [explain_pixels(copied, pixels, method, classes, **options)[0].values]
    for _, names in stages:
        _redraw([parameters[name] for name in names], generator)
        with walk.step("map"):
            maps.append(explain_pixels(copied, pixels, method, classes, **options)[0].values)
        if maps[-1].shape != maps[0].shape:  # a given original that does not fit: said at the first stage
            raise ValueError(
                f"the original map given is {maps[0].shape}; the method's maps are {maps[-1].shape}"
            )
    blocks = sum(1 for name, _ in stages if name not in ("head", "embedding", "stem"))
    has_head = stages[0][0] == "head"
    checkpoint = min(len(stages), int(has_head) + math.ceil(blocks / 2))
    return SanityResult(
        method=method,
        stages=(ORIGINAL_STAGE, *(name for name, _ in stages)),
        maps=np.stack(maps).astype(np.float32),
        rank_correlation=tuple(rank_correlation(maps[0], values) for values in maps),
        checkpoint=checkpoint,
        target_index=None if classes is None else classes[0],
    )
