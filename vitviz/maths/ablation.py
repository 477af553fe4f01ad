"""Head ablation: switch attention heads off and see what the prediction and the attention become."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from vitviz.capture import ABLATION_MODES, AttentionCapture, HeadAblation, HeadOutputs
from vitviz.maths.attention import AttentionRecord
from vitviz.models import LoadedModel, ModelError, no_token_attention_reason
from vitviz.predict import NoClassifierError, Prediction, top_predictions
from vitviz.preprocess import ViewMode, image_view, prediction_tensor, view_tensor

__all__ = [
    "ABLATION_MODES",
    "AblationResult",
    "Head",
    "ablate_heads",
    "ablated_logits",
    "head_importance",
    "head_importance_estimate",
    "head_mask",
    "parse_heads",
    "ranking_agreement",
]

Head = tuple[int, int]  # (layer, head), both from 0
# Called after each batch of a ranking with (ablations done, ablations in all); raise to stop.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class AblationResult:
    """One image's predictions with every head on and with some switched off, and the attention after."""

    heads: tuple[Head, ...]  # the heads switched off, sorted
    mode: str  # "zero" or "mean" (see `vitviz.capture.HeadAblation`)
    before: list[Prediction]  # top-k with every head on: exactly what `predict` gives
    after: list[Prediction]  # top-k with `heads` off
    record: AttentionRecord  # every layer's attention in the ablated forward, for maps


def _check_attention(loaded: LoadedModel) -> None:
    facts = loaded.facts
    if not facts.global_attention or facts.num_heads == 0:
        raise ModelError(no_token_attention_reason(facts, "attention heads to switch off"))
    if not facts.has_classifier:
        raise NoClassifierError(
            f"{facts.name} has no classifier head, so switching heads off changes no prediction; "
            "fine-tune one first (python -m vitviz finetune)."
        )


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


@torch.inference_mode()
def ablated_logits(
    loaded: LoadedModel, pixels: torch.Tensor, masks: torch.Tensor, mode: str = "zero"
) -> torch.Tensor:
    """The model's logits with heads switched off.

    Args:
        loaded: a ViT or hybrid; shared, left as it was.
        pixels: (B, 3, H, W) normalised input.
        masks: (layers, heads) for every image, or (B, layers, heads) one ablation per image.
        mode: "zero" or "mean".

    Returns:
        (B, classes) logits.
    """
    with HeadAblation(loaded.model, masks, mode):
        return loaded.model(pixels.to(loaded.device))


def ablate_heads(
    loaded: LoadedModel,
    image: Image.Image,
    heads: Sequence[Head],
    mode: str = "zero",
    topk: int = 5,
    view: ViewMode = "crop",
) -> AblationResult:
    """Predicts one image with every head on, then with `heads` off, and records the ablated attention.

    Both forwards see the image's one view ("crop": the model's eval transform, or "whole"), so
    `before` is exactly what `vitviz.predict` gives for that view and the record's maps lie over it.

    Raises:
        ModelError: a CNN (no heads) or a model with no classifier head.
        ValueError: a head outside the model or an unknown mode.
    """
    _check_attention(loaded)
    facts = loaded.facts
    masks = head_mask(heads, facts.num_layers, facts.num_heads)
    seen = image_view(image, facts, view)
    pixels = view_tensor(seen, facts).to(loaded.device)
    with torch.inference_mode():
        clean = loaded.model(pixels)
        with HeadAblation(loaded.model, masks, mode), AttentionCapture(loaded.model) as capture:
            ablated = loaded.model(pixels)
    attentions = torch.stack([attention[0] for attention in capture.attentions]).float().cpu().numpy()
    attentions.setflags(write=False)
    record = AttentionRecord(
        attentions=attentions,  # (layers, heads, N, N)
        grid_size=facts.grid_size or (0, 0),
        num_prefix_tokens=facts.num_prefix_tokens,
        global_pool=facts.global_pool,
        logits=ablated[0].float().cpu().numpy(),
        view=seen,
    )
    before, after = (top_predictions(logits, topk, loaded.labels)[0] for logits in (clean, ablated))
    chosen = tuple(sorted({(int(layer), int(head)) for layer, head in heads}))
    return AblationResult(chosen, mode, before, after, record)


def head_importance(
    loaded: LoadedModel,
    image: Image.Image,
    mode: str = "zero",
    class_index: int | None = None,
    batch_size: int = 16,
    progress: Progress | None = None,
    view: ViewMode = "crop",
) -> np.ndarray:
    """How much the class's probability drops when each head alone is switched off.

    The image is repeated along the batch and each row switches a different head off, so one
    forward measures `batch_size` heads.

    Args:
        loaded: a ViT or hybrid with a classifier head; shared, left as it was.
        image: any RGB image.
        mode: "zero" or "mean".
        class_index: the class followed; default the model's top class on the image.
        batch_size: ablations per forward.
        progress: called after each forward with (ablations done, ablations in all); an exception
            it raises stops the ranking.
        view: "crop" (the model's eval transform) or "whole" (see `vitviz.preprocess`).

    Returns:
        (layers, heads) float32: clean probability − probability with that head off. Positive
        means the head helped the class; sort it to rank the heads.
    """
    _check_attention(loaded)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    facts = loaded.facts
    layers, heads = facts.num_layers, facts.num_heads
    pixels = prediction_tensor(image, facts, view).to(loaded.device)
    with torch.inference_mode():
        clean = loaded.model(pixels).float().softmax(dim=-1)[0]
    if class_index is None:
        class_index = int(clean.argmax())
    elif not 0 <= class_index < facts.num_classes:
        raise ValueError(f"class {class_index} outside 0..{facts.num_classes - 1} of {facts.name}")
    total = layers * heads
    drops = np.zeros(total, dtype=np.float32)
    for start in range(0, total, batch_size):
        count = min(batch_size, total - start)
        masks = torch.zeros(count, total, dtype=torch.bool)
        masks[torch.arange(count), torch.arange(start, start + count)] = True  # row i: head start + i off
        logits = ablated_logits(
            loaded, pixels.expand(count, -1, -1, -1), masks.reshape(count, layers, heads), mode
        )
        probabilities = logits.float().softmax(dim=-1)[:, class_index]
        drops[start : start + count] = (clean[class_index] - probabilities).cpu().numpy()
        if progress is not None:
            progress(start + count, total)
    return drops.reshape(layers, heads)


def head_importance_estimate(
    loaded: LoadedModel,
    image: Image.Image,
    mode: str = "zero",
    class_index: int | None = None,
    view: ViewMode = "crop",
) -> np.ndarray:
    """`head_importance` to first order, from one forward and one backward pass (attribution patching).

    Switching head h of a layer off replaces its slice x of the heads' concatenated output by x'
    (zero, or its mean over the tokens); the class probability p then moves by about
    ∇ₓp · (x' − x), summed over the tokens and the head's channels. Every head's estimate comes
    from the same backward, so the whole ranking costs about three forwards instead of one
    forward per head; where a head's effect is far from linear, the estimate is off.

    Args:
        loaded: a ViT or hybrid with a classifier head; shared, left as it was.
        image: any RGB image.
        mode: "zero" or "mean", as for `head_importance`.
        class_index: the class followed; default the model's top class on the image.
        view: "crop" or "whole" (see `vitviz.preprocess`).

    Returns:
        (layers, heads) float32 estimates of clean probability − probability with that head off.
    """
    _check_attention(loaded)
    if mode not in ABLATION_MODES:
        raise ValueError(f"unknown ablation mode {mode!r}: use one of {', '.join(ABLATION_MODES)}")
    facts = loaded.facts
    pixels = prediction_tensor(image, facts, view).to(loaded.device).requires_grad_(True)
    with torch.enable_grad(), HeadOutputs(loaded.model) as heads:
        probabilities = loaded.model(pixels).float().softmax(dim=-1)[0]  # (classes,)
        if class_index is None:
            class_index = int(probabilities.argmax())
        elif not 0 <= class_index < facts.num_classes:
            raise ValueError(f"class {class_index} outside 0..{facts.num_classes - 1} of {facts.name}")
        probabilities[class_index].backward()
        estimates = []
        for output in heads.outputs:
            assert output is not None and output.grad is not None, "every attention layer ran"
            batch, tokens, _ = output.shape
            per_head = output.detach().reshape(batch, tokens, facts.num_heads, -1)  # (1, N, heads, head_dim)
            gradient = output.grad.reshape(batch, tokens, facts.num_heads, -1)
            replaced = torch.zeros_like(per_head) if mode == "zero" else per_head.mean(dim=1, keepdim=True)
            estimates.append(-(gradient * (replaced - per_head)).sum(dim=(0, 1, 3)))  # (heads,)
    return torch.stack(estimates).float().cpu().numpy()


def ranking_agreement(estimate: np.ndarray, exact: np.ndarray) -> float:
    """Spearman's rank correlation of two head rankings (1: the same order; 0: unrelated)."""
    from scipy.stats import spearmanr  # deferred: scipy comes with scikit-learn, needed only here

    if estimate.shape != exact.shape:
        raise ValueError(f"rankings of different shapes: {estimate.shape} and {exact.shape}")
    return float(spearmanr(np.ravel(estimate), np.ravel(exact)).statistic)
