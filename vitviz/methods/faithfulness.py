"""Faithfulness of explanations: deletion and insertion curves and their areas, per method and model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from vitviz.methods import method_title
from vitviz.methods.probes import (
    DEFAULT_FRACTIONS,
    area_under_curve,
    drop_mask,
    probe_grid,
    probe_target,
    salience_on_grid,
    salience_order,
    target_probabilities,
)
from vitviz.models import LoadedModel

__all__ = ["FaithfulnessResult", "faithfulness", "faithfulness_rows"]


@dataclass(frozen=True)
class FaithfulnessResult:
    """Deletion and insertion curves of one method's map on one model and image.

    Deletion greys the most salient patches first (a faithful map makes the probability fall
    fast: low area); insertion starts from an all-grey image and restores the most salient
    patches first (a faithful map makes it rise fast: high area).
    """

    model: str  # timm name
    trained: bool  # False for random (untrained) weights
    method: str  # registry name
    target_index: int
    target_label: str
    fractions: np.ndarray  # (F,) fraction of patches deleted / inserted
    deletion: np.ndarray  # (F,) target probability
    insertion: np.ndarray  # (F,) target probability

    @property
    def deletion_auc(self) -> float:
        return area_under_curve(self.fractions, self.deletion)

    @property
    def insertion_auc(self) -> float:
        return area_under_curve(self.fractions, self.insertion)


def faithfulness(
    loaded: LoadedModel,
    image: Image.Image,
    methods: Sequence[str],
    class_index: int | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    method_options: dict[str, dict[str, Any]] | None = None,
) -> list[FaithfulnessResult]:
    """Deletion and insertion curves of each method's map, on the prediction input.

    Args:
        loaded: a model with a classifier head; never modified.
        image: any RGB image.
        methods: registry names; each must fit the model.
        class_index: class to follow (default: the top class on the clean input).
        fractions: increasing fractions from 0 to 1.
        method_options: per-method options, by method name.

    Returns:
        One result per method, in the order given.
    """
    steps = np.asarray(list(fractions), dtype=np.float64)
    if steps.size < 2 or steps[0] != 0.0 or np.any(np.diff(steps) <= 0) or steps[-1] > 1.0:
        raise ValueError("fractions must rise strictly from 0 to at most 1")
    target = probe_target(loaded, image, class_index)
    grid = probe_grid(loaded)
    pixels = target.pixels[0].cpu()  # (3, H, W)
    input_size = (pixels.shape[1], pixels.shape[2])
    counts = [round(fraction * grid.num_patches) for fraction in steps]
    results = []
    for method in methods:
        options = (method_options or {}).get(method, {})
        salience = salience_on_grid(loaded, target, grid, method, **options)
        order = salience_order(salience, "drop-salient")
        deleted = [pixels * ~drop_mask(order[:count], grid, input_size) for count in counts]
        inserted = [pixels * drop_mask(order[:count], grid, input_size) for count in counts]
        probabilities = target_probabilities(loaded, torch.stack(deleted + inserted), target.index)
        results.append(
            FaithfulnessResult(
                model=loaded.facts.name,
                trained=loaded.trained,
                method=method,
                target_index=target.index,
                target_label=target.label,
                fractions=steps,
                deletion=probabilities[: len(steps)],
                insertion=probabilities[len(steps) :],
            )
        )
    return results


def faithfulness_rows(results: Sequence[FaithfulnessResult]) -> list[dict[str, Any]]:
    """One table row per result: lower deletion area and higher insertion area mean more faithful."""
    return [
        {
            "model": result.model + ("" if result.trained else " (untrained)"),
            "method": method_title(result.method),
            "class": f"{result.target_label} ({result.target_index})",
            "deletion AUC ↓": round(result.deletion_auc, 4),
            "insertion AUC ↑": round(result.insertion_auc, 4),
            "insertion − deletion": round(result.insertion_auc - result.deletion_auc, 4),
        }
        for result in results
    ]
