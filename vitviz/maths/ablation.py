"""Which heads to switch off: heads read from text, as a mask, and how far two head rankings agree."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "Head",
    "head_mask",
    "parse_heads",
    "ranking_agreement",
]

Head = tuple[int, int]  # (layer, head), both from 0


def parse_heads(spec: str, num_layers: int, num_heads: int) -> list[Head]:
    """Reads heads from text: "L:H,L:H", a whole layer as "L" or "L:*", "all" or "none".

    Args:
        spec: the text, layers and heads numbered from 0.
        num_layers: attention layers of the model.
        num_heads: heads per layer.

    Returns:
        Sorted distinct (layer, head) pairs.

    Raises:
        ValueError: a malformed item or a layer / head outside the model.
    """
    text = spec.strip().lower()
    if text == "none" or not text:
        return []
    if text == "all":
        return [(layer, head) for layer in range(num_layers) for head in range(num_heads)]
    heads: set[Head] = set()
    for item in text.split(","):
        layer_text, _, head_text = item.strip().partition(":")
        try:
            layer = int(layer_text)
            head_list = range(num_heads) if head_text in ("", "*") else [int(head_text)]
        except ValueError:
            raise ValueError(
                f"cannot read {item.strip()!r}: write heads as L:H, a layer as L, or all"
            ) from None
        if not 0 <= layer < num_layers:
            raise ValueError(f"layer {layer} outside 0..{num_layers - 1}")
        for head in head_list:
            if not 0 <= head < num_heads:
                raise ValueError(f"head {head} outside 0..{num_heads - 1}")
            heads.add((layer, head))
    return sorted(heads)


def head_mask(heads: Sequence[Head], num_layers: int, num_heads: int) -> torch.Tensor:
    """(layers, heads) bool, True for each head in `heads`."""
    mask = torch.zeros(num_layers, num_heads, dtype=torch.bool)
    for layer, head in heads:
        if not (0 <= layer < num_layers and 0 <= head < num_heads):
            raise ValueError(f"head {layer}:{head} outside the model's {num_layers}×{num_heads} heads")
        mask[layer, head] = True
    return mask


def ranking_agreement(estimate: np.ndarray, exact: np.ndarray) -> float:
    """Spearman's rank correlation of two head rankings (1: the same order; 0: unrelated)."""
    from scipy.stats import spearmanr  # deferred: scipy comes with scikit-learn, needed only here

    if estimate.shape != exact.shape:
        raise ValueError(f"rankings of different shapes: {estimate.shape} and {exact.shape}")
    return float(spearmanr(np.ravel(estimate), np.ravel(exact)).statistic)
