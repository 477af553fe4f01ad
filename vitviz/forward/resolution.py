"""Runs a ViT at another input size: a resized copy with its position embedding interpolated."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from vitviz.capture import model_lock
from vitviz.forward.attention import record_attention
from vitviz.maths.attention import class_attention_map, rollout_relevance
from vitviz.maths.sinks import detect_sinks, plan_rollout, rollout_statement
from vitviz.maths.token_features import principal_components_rgb
from vitviz.models import LoadedModel, ModelError, ModelFacts, model_facts, no_token_grid_reason
from vitviz.predict import Prediction, predict
from vitviz.preprocess import ImageView, image_view

__all__ = [
    "MAX_PATCHES",
    "ResolutionSide",
    "check_input_size",
    "compare_resolutions",
    "interpolate_position_embedding",
    "position_embedding_grid",
    "resize_model",
    "resolution_choices",
]

# Captured attention grows with the square of the token count (12 layers × 6 heads × N² floats
# is 300 MB at 1025 tokens), so the view stops at a 32×32 grid.
MAX_PATCHES = 1024


def check_input_size(facts: ModelFacts, input_size: tuple[int, int]) -> None:
    """Raises a `ModelError` saying why `input_size` cannot be used, if it cannot.

    Raises:
        ModelError: the model is a CNN, or the size is not a positive multiple of the token stride,
            or it makes more than `MAX_PATCHES` patches.
    """
    if facts.family == "cnn" or facts.grid_size is None or facts.stride_px is None:
        raise ModelError(no_token_grid_reason(facts, "position embedding to interpolate"))
    height, width = input_size
    stride_h, stride_w = facts.stride_px
    if height <= 0 or width <= 0 or height % stride_h or width % stride_w:
        raise ModelError(
            f"{height}×{width} px is not a multiple of the {stride_h}×{stride_w} px token stride of {facts.name}."
        )
    patches = (height // stride_h) * (width // stride_w)
    if patches > MAX_PATCHES:
        raise ModelError(f"{height}×{width} px makes {patches} patches; this view stops at {MAX_PATCHES}.")


def resolution_choices(facts: ModelFacts) -> list[tuple[int, int]]:
    """Input sizes offered for a model: its own aspect ratio, whole tokens, from ½× up to `MAX_PATCHES`.

    Returns:
        (height, width) sizes in pixels, smallest first, the model's own size among them.
    """
    if facts.grid_size is None or facts.stride_px is None:
        return []
    rows, cols = facts.grid_size
    choices = []
    for new_rows in range(max(2, rows // 2), 4 * rows + 1):
        new_cols = max(1, round(new_rows * cols / rows))
        if new_rows * new_cols > MAX_PATCHES:
            break
        choices.append((new_rows * facts.stride_px[0], new_cols * facts.stride_px[1]))
    return choices


def interpolate_position_embedding(
    embedding: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], embedded_prefix: int
) -> torch.Tensor:
    """Resamples the patch rows of an absolute position embedding from one grid to another.

    Bicubic without antialiasing, as `vitviz.weights.fit_position_embedding` does on load, so a
    model resized here equals one built at the new size from the same checkpoint. Unlike that
    function, the old grid may be rectangular.

    Args:
        embedding: (1, embedded_prefix + old_rows * old_cols, D).
        old_grid: (rows, cols) the embedding was learned for.
        new_grid: (rows, cols) wanted.
        embedded_prefix: leading prefix rows (class, registers) kept as they are.

    Returns:
        (1, embedded_prefix + new_rows * new_cols, D).
    """
    return resample_abs_pos_embed(
        embedding,
        new_size=list(new_grid),
        old_size=list(old_grid),
        num_prefix_tokens=embedded_prefix,
        antialias=False,
    )


def resize_model(loaded: LoadedModel, input_size: tuple[int, int]) -> LoadedModel:
    """A copy of the model built for another input size; the shared model is left untouched.

    The copy keeps every weight; only its patch grid changes and its absolute position embedding
    is interpolated from the old grid to the new one (prefix rows kept as they are).

    Args:
        loaded: the model to copy.
        input_size: (height, width) in pixels, a multiple of the token stride.

    Returns:
        A new `LoadedModel` with the same weights label, device and labels, and facts read from the copy.

    Raises:
        ModelError: see `check_input_size`; or timm cannot resize this architecture.
    """
    check_input_size(loaded.facts, input_size)
    if tuple(input_size) == loaded.facts.input_size:
        return loaded
    if not hasattr(loaded.model, "set_input_size"):
        raise ModelError(f"{loaded.facts.name} cannot be rebuilt for another input size by timm.")
    with model_lock(loaded.model):  # a copy taken mid-capture would carry that capture's hooks and flags
        model = copy.deepcopy(loaded.model)
    old_grid = tuple(model.patch_embed.grid_size)
    old_embedding = None if model.pos_embed is None else model.pos_embed.detach().clone()
    model.set_input_size(img_size=tuple(input_size))
    new_grid = tuple(model.patch_embed.grid_size)
    if old_embedding is not None:
        embedded_prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        resampled = interpolate_position_embedding(old_embedding, old_grid, new_grid, embedded_prefix)
        model.pos_embed = nn.Parameter(resampled, requires_grad=False)
    model.eval().requires_grad_(False)
    facts = model_facts(loaded.facts.name, model)
    assert facts.input_size == tuple(input_size), f"resized to {facts.input_size}, asked {input_size}"
    return LoadedModel(model, facts, loaded.weights, loaded.device, loaded.labels, loaded.run)


def position_embedding_grid(model: nn.Module) -> np.ndarray | None:
    """The position embedding of every grid position, prefix rows left out.

    Returns:
        (rows, cols, D) float32, or None when the model has no learned absolute position embedding.
    """
    embedding = getattr(model, "pos_embed", None)
    if embedding is None:
        return None
    rows, cols = model.patch_embed.grid_size
    embedded_prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    patch_rows = embedding[0, embedded_prefix:]  # (rows * cols, D)
    assert patch_rows.shape[0] == rows * cols, f"{patch_rows.shape[0]} rows for a {rows}×{cols} grid"
    return patch_rows.detach().float().cpu().numpy().reshape(rows, cols, -1)


@dataclass(frozen=True)
class ResolutionSide:
    """What the model shows at one input size."""

    facts: ModelFacts  # facts of the model at this size (grid, token count, input size)
    pixels: np.ndarray  # (H, W, 3) uint8 image at this input size
    class_attention: np.ndarray  # (rows, cols) last layer, mean of heads, class token (or mean patch)
    rollout: np.ndarray  # (rows, cols) attention rollout, mean of heads, sink-aware (the default)
    rollout_statement: str  # which layers the rollout multiplied and which sinks it left out
    sink_patches: tuple[tuple[int, int], ...]  # (row, col) of each patch detected as an attention sink
    position_rgb: np.ndarray | None  # (rows, cols, 3) in [0, 1]: position embedding, shared PCA basis
    predictions: list[Prediction] | None  # top-5, None without a classifier head


def compare_resolutions(
    loaded: LoadedModel,
    view: ImageView,
    input_size: tuple[int, int],
    topk: int = 5,
) -> tuple[ResolutionSide, ResolutionSide]:
    """The model at its own size and at `input_size`: attention, rollout, position embedding, predictions.

    Each side sees the view's photo in the view's mode, made for that side's input size.
    Position embeddings of both sides are coloured by the same 3-component PCA (fitted on the
    original grid), so a colour means the same direction of the embedding on both sides.

    Returns:
        (before, after).

    Raises:
        ModelError: see `check_input_size`.
    """
    resized = resize_model(loaded, input_size)
    before_grid = position_embedding_grid(loaded.model)
    after_grid = position_embedding_grid(resized.model)
    colours: list[np.ndarray | None] = [None, None]
    if before_grid is not None and after_grid is not None:
        before_rows, before_cols, dim = before_grid.shape
        stacked = np.concatenate([before_grid.reshape(-1, dim), after_grid.reshape(-1, dim)])
        rgb = principal_components_rgb(stacked, fit_rows=before_rows * before_cols).rgb
        colours = [
            rgb[: before_rows * before_cols].reshape(before_rows, before_cols, 3),
            rgb[before_rows * before_cols :].reshape(*after_grid.shape[:2], 3),
        ]
    sides = []
    for model, position_rgb in zip((loaded, resized), colours, strict=True):
        seen = view if model is loaded else image_view(view.photo, model.facts, view.mode)
        record = record_attention(model, seen)
        sinks = detect_sinks(record)
        predictions = predict(model, [seen], topk=topk)[0] if model.facts.has_classifier else None
        sides.append(
            ResolutionSide(
                facts=model.facts,
                pixels=seen.pixels,
                class_attention=class_attention_map(record, record.num_layers - 1, None),
                rollout=rollout_relevance(record, sink_report=sinks),
                rollout_statement=rollout_statement(plan_rollout(sinks)),
                sink_patches=tuple(sink.position for sink in sinks.patch_sinks if sink.position is not None),
                position_rgb=position_rgb,
                predictions=predictions,
            )
        )
        del record  # the larger side's attention is hundreds of MB; free it before the next forward
    return sides[0], sides[1]
