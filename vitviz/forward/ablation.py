"""Head ablation: switch attention heads off and see what the prediction and the attention become."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vitviz.capture import ABLATION_MODES, AttentionCapture, HeadAblation, HeadOutputs
from vitviz.maths.ablation import Head, head_mask
from vitviz.maths.attention import AttentionRecord
from vitviz.models import LoadedModel, ModelError, no_token_attention_reason
from vitviz.predict import NoClassifierError, Prediction, followed_class, top_predictions
from vitviz.preprocess import ImageView, check_view

__all__ = [
    "ABLATION_MODES",
    "AblationResult",
    "Progress",
    "ablate_heads",
    "ablated_logits",
    "head_importance",
    "head_importance_estimate",
]

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
    view: ImageView,
    heads: Sequence[Head],
    mode: str = "zero",
    topk: int = 5,
) -> AblationResult:
    """Predicts one image with every head on, then with `heads` off, and records the ablated attention.

    Both forwards see the one view (`vitviz.preprocess.image_view`), so `before` is exactly what
    `vitviz.predict` gives for that view and the record's maps lie over it.

    Raises:
        ModelError: a CNN (no heads) or a model with no classifier head.
        ValueError: a head outside the model or an unknown mode.
    """
    _check_attention(loaded)
    facts = loaded.facts
    masks = head_mask(heads, facts.num_layers, facts.num_heads)
    check_view(loaded, view)
    pixels = view.tensor.to(loaded.device)
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
        view=view,
    )
    before, after = (top_predictions(logits, topk, loaded.labels)[0] for logits in (clean, ablated))
    chosen = tuple(sorted({(int(layer), int(head)) for layer, head in heads}))
    return AblationResult(chosen, mode, before, after, record)


def head_importance(
    loaded: LoadedModel,
    view: ImageView,
    mode: str = "zero",
    class_index: int | None = None,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> np.ndarray:
    """How much the class's probability drops when each head alone is switched off.

    The image is repeated along the batch and each row switches a different head off, so one
    forward measures `batch_size` heads.

    Args:
        loaded: a ViT or hybrid with a classifier head; shared, left as it was.
        view: the image's view (`vitviz.preprocess.image_view`).
        mode: "zero" or "mean".
        class_index: the class followed; default the model's top class on the image.
        batch_size: ablations per forward.
        progress: called after each forward with (ablations done, ablations in all); an exception
            it raises stops the ranking.

    Returns:
        (layers, heads) float32: clean probability − probability with that head off. Positive
        means the head helped the class; sort it to rank the heads.
    """
    _check_attention(loaded)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    facts = loaded.facts
    layers, heads = facts.num_layers, facts.num_heads
    pixels, clean, class_index = followed_class(loaded, view, class_index)
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
    view: ImageView,
    mode: str = "zero",
    class_index: int | None = None,
) -> np.ndarray:
    """`head_importance` to first order, from one forward and one backward pass (attribution patching).

    Switching head h of a layer off replaces its slice x of the heads' concatenated output by x'
    (zero, or its mean over the tokens); the class probability p then moves by about
    ∇ₓp · (x' − x), summed over the tokens and the head's channels. Every head's estimate comes
    from the same backward, so the whole ranking costs about three forwards instead of one
    forward per head; where a head's effect is far from linear, the estimate is off.

    Args:
        loaded: a ViT or hybrid with a classifier head; shared, left as it was.
        view: the image's view (`vitviz.preprocess.image_view`).
        mode: "zero" or "mean", as for `head_importance`.
        class_index: the class followed; default the model's top class on the image.

    Returns:
        (layers, heads) float32 estimates of clean probability − probability with that head off.
    """
    _check_attention(loaded)
    if mode not in ABLATION_MODES:
        raise ValueError(f"unknown ablation mode {mode!r}: use one of {', '.join(ABLATION_MODES)}")
    facts = loaded.facts
    check_view(loaded, view)
    pixels = view.tensor.to(loaded.device).requires_grad_(True)
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
