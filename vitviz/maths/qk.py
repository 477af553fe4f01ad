"""Queries and keys of one attention head, captured by `vitviz.capture` and projected jointly to 2-D (AttentionViz)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

__all__ = [
    "ProjectionMethod",
    "QueryKeyProjection",
    "QueryKeys",
    "align_queries_keys",
    "attention_from_queries_keys",
    "project_queries_keys",
]

ProjectionMethod = Literal["pca", "tsne"]


def attention_from_queries_keys(queries: np.ndarray, keys: np.ndarray, scale: float) -> np.ndarray:
    """softmax(q · kᵀ · scale) row by row, as the attention layer computes it.

    Args:
        queries: (N, head_dim).
        keys: (N, head_dim).
        scale: the layer's scale, head_dim ** -0.5.

    Returns:
        (N, N) attention probabilities, rows summing to 1.
    """
    logits = (queries.astype(np.float64) @ keys.astype(np.float64).T) * scale  # (N, N)
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class QueryKeys:
    """The queries and keys of one head in one layer for one image, with that head's attention."""

    queries: np.ndarray  # (N, head_dim) float32
    keys: np.ndarray  # (N, head_dim) float32
    attention: np.ndarray  # (N, N) float32, the model's own attention probabilities of this head
    scale: float  # the layer's scale on q · k
    layer: int
    head: int
    grid_size: tuple[int, int]  # (rows, cols) of the patch tokens
    prefix_names: tuple[str, ...]  # names of the tokens before the patches

    @property
    def num_prefix_tokens(self) -> int:
        return len(self.prefix_names)

    def reproduction_error(self) -> float:
        """Largest gap between softmax(q · kᵀ · scale) and the captured attention."""
        recomputed = attention_from_queries_keys(self.queries, self.keys, self.scale)
        return float(np.abs(recomputed - self.attention).max())


def align_queries_keys(queries: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Moves keys onto the queries' centroid and evens out their norms, attention unchanged (AttentionViz).

    Adding one vector c to every key adds q · c to a query's every logit, which its softmax
    ignores; scaling queries by s and keys by 1/s leaves every q · k as it is. Without this the
    two clouds often sit apart in any projection and say nothing about which pairs match.

    Returns:
        (queries, keys) of the same shapes, giving the same attention as the inputs.
    """
    queries = queries.astype(np.float64)
    keys = keys.astype(np.float64) - keys.mean(axis=0) + queries.mean(axis=0)
    query_norm = float(np.linalg.norm(queries, axis=1).mean())
    key_norm = float(np.linalg.norm(keys, axis=1).mean())
    if query_norm < 1e-12 or key_norm < 1e-12:
        return queries, keys
    factor = np.sqrt(key_norm / query_norm)
    return queries * factor, keys / factor


@dataclass(frozen=True)
class QueryKeyProjection:
    """Queries and keys of one head placed in one shared 2-D space."""

    queries: np.ndarray  # (N, 2)
    keys: np.ndarray  # (N, 2)
    method: ProjectionMethod
    aligned: bool  # keys moved and norms evened out first (attention unchanged)
    explained_variance_ratio: np.ndarray | None  # (2,) for PCA, None for t-SNE


def project_queries_keys(
    source: QueryKeys, method: ProjectionMethod = "pca", align: bool = True, seed: int = 0
) -> QueryKeyProjection:
    """Projects queries and keys together, so a query lands near the keys it matches.

    Args:
        source: one head's queries and keys.
        method: "pca" (fast, linear) or "tsne" (slower, keeps neighbourhoods rather than distances).
        align: apply `align_queries_keys` first.
        seed: t-SNE's random state, so the same input gives the same picture.

    Returns:
        2-D positions of every query and key.
    """
    queries, keys = (
        align_queries_keys(source.queries, source.keys)
        if align
        else (source.queries.astype(np.float64), source.keys.astype(np.float64))
    )
    tokens = len(queries)
    joint = np.concatenate([queries, keys])  # (2N, head_dim)
    explained = None
    if method == "pca":
        pca = PCA(n_components=2, svd_solver="full").fit(joint)
        projected = pca.transform(joint)
        explained = pca.explained_variance_ratio_.copy()
    elif method == "tsne":
        perplexity = float(min(30.0, (len(joint) - 1) / 3))
        projected = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            joint
        )
    else:
        raise ValueError(f"unknown projection {method!r}: use pca or tsne")
    return QueryKeyProjection(
        queries=projected[:tokens],
        keys=projected[tokens:],
        method=method,
        aligned=align,
        explained_variance_ratio=explained,
    )
