"""From pixels to tokens: the shapes on the way, position-embedding similarity and the output token."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vitviz.maths.posembed import NoPositionEmbeddingError, grid_position_embedding
from vitviz.maths.posembed import position_similarity as all_position_similarity
from vitviz.models import LoadedModel, ModelError, ModelFacts, no_token_grid_reason
from vitviz.preprocess import ImageView, check_view

__all__ = ["TokenStage", "output_embedding", "position_similarity", "token_stages"]


@dataclass(frozen=True)
class TokenStage:
    """One step from image to token sequence, with the tensor shape after it (batch left out)."""

    name: str
    shape: tuple[int, ...]
    note: str


def _prefix_words(count: int) -> str:
    if count == 1:
        return "1 class token"
    return f"{count} prefix tokens (class, distillation or register)"


def token_stages(facts: ModelFacts) -> list[TokenStage]:
    """The shapes from the input image to the sequence the first transformer block reads.

    Raises:
        ModelError: the model is a CNN (it makes no tokens).
    """
    if facts.family == "cnn" or facts.grid_size is None or facts.stride_px is None:
        raise ModelError(no_token_grid_reason(facts, "patch tokens"))
    height, width = facts.input_size
    rows, cols = facts.grid_size
    step_y, step_x = facts.stride_px
    patches, dim, prefix = facts.num_patches, facts.embed_dim, facts.num_prefix_tokens
    stages = [TokenStage("image", (3, height, width), f"{height}×{width} px, 3 colour channels")]
    if facts.family == "vit":
        stages.append(
            TokenStage(
                "patches, flattened",
                (patches, 3 * step_y * step_x),
                f"{rows}×{cols} patches of {step_y}×{step_x} px, each 3·{step_y}·{step_x} numbers",
            )
        )
        stages.append(TokenStage("patch embeddings", (patches, dim), f"one linear map to {dim} numbers"))
    else:
        stages.append(
            TokenStage(
                "patch embeddings",
                (patches, dim),
                f"a CNN stem, then one {dim}-number token per {step_y}×{step_x} px cell",
            )
        )
    if prefix:
        stages.append(
            TokenStage("+ prefix tokens", (facts.num_tokens, dim), f"{_prefix_words(prefix)} in front")
        )
    stages.append(
        TokenStage(
            "+ position embedding",
            (facts.num_tokens, dim),
            "a learned vector per position, added to each token",
        )
    )
    return stages


def position_similarity(loaded: LoadedModel, position: tuple[int, int]) -> np.ndarray:
    """Cosine similarity of one grid position's learned embedding with every position's.

    Prefix-token rows of the position embedding are dropped (they have no place on the grid).

    Args:
        loaded: a ViT or hybrid with a learned absolute position embedding.
        position: (row, col) on the token grid.

    Returns:
        (rows, cols) similarities in [-1, 1]; 1 at `position` itself.

    Raises:
        ModelError: a CNN, or a model with no learned absolute position embedding.
    """
    facts = loaded.facts
    try:
        embeddings = grid_position_embedding(loaded.model, facts)  # (rows·cols, D)
    except NoPositionEmbeddingError as error:
        raise ModelError(str(error)) from error
    rows, cols = facts.grid_size
    if not (0 <= position[0] < rows and 0 <= position[1] < cols):
        raise ValueError(f"position {position} outside the {rows}×{cols} grid")
    chosen = embeddings[position[0] * cols + position[1]][None]  # (1, D)
    return all_position_similarity(np.concatenate([chosen, embeddings]))[0, 1:].reshape(rows, cols)


@torch.inference_mode()
def output_embedding(loaded: LoadedModel, view: ImageView) -> np.ndarray:
    """What the transformer hands its head, on one view of the image: the class token's final vector, or the patch mean.

    Returns:
        (embed_dim,) float32 vector, after the final norm.

    Raises:
        ModelError: the model is a CNN.
    """
    facts = loaded.facts
    if facts.grid_size is None:
        raise ModelError(no_token_grid_reason(facts, "output token"))
    check_view(loaded, view)
    pixels = view.tensor.to(loaded.device)
    with torch.inference_mode():
        tokens = loaded.model.forward_features(pixels)[0].float().cpu()  # (N, D)
    prefix = facts.num_prefix_tokens
    pooled = tokens[0] if prefix and facts.global_pool == "token" else tokens[prefix:].mean(dim=0)
    return pooled.numpy()
