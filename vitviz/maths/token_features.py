"""Output tokens of a ViT: their L2 norms over the grid and their principal components as colours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "OutputTokens",
    "PrincipalColours",
    "TokenNorms",
    "TokenPlace",
    "high_norm_patches",
    "patch_feature_colours",
    "principal_components_rgb",
    "token_norms",
]

# Where the output tokens are read: the last block's output, or after the model's final norm
# (what `forward_features` returns). A final LayerNorm evens norms out, so artefacts show before it.
TokenPlace = Literal["before_norm", "after_norm"]


@dataclass(frozen=True)
class OutputTokens:
    """Every output token of one image, before and after the model's final norm."""

    before_norm: np.ndarray  # (N, D) float32, the last block's output
    after_norm: np.ndarray  # (N, D) float32, `forward_features` output
    grid_size: tuple[int, int]  # (rows, cols) of the patch tokens
    prefix_names: tuple[str, ...]  # one name per prefix token, in sequence order
    final_norm: str  # class name of the final norm ("LayerNorm", "Identity", ...)

    @property
    def num_prefix_tokens(self) -> int:
        return len(self.prefix_names)

    def tokens(self, place: TokenPlace) -> np.ndarray:
        """(N, D) tokens at `place`."""
        if place == "before_norm":
            return self.before_norm
        if place == "after_norm":
            return self.after_norm
        raise ValueError(f"unknown token place {place!r}: use before_norm or after_norm")


@dataclass(frozen=True)
class TokenNorms:
    """L2 norm of every output token at one place."""

    patch_norms: np.ndarray  # (rows, cols)
    prefix_norms: np.ndarray  # (prefix,), in the order of `prefix_names`
    prefix_names: tuple[str, ...]
    place: TokenPlace


def token_norms(tokens: OutputTokens, place: TokenPlace = "before_norm") -> TokenNorms:
    """The L2 norm of each token, patches laid out over the grid."""
    norms = np.linalg.norm(tokens.tokens(place), axis=-1)  # (N,)
    prefix = tokens.num_prefix_tokens
    return TokenNorms(
        patch_norms=norms[prefix:].reshape(tokens.grid_size),
        prefix_norms=norms[:prefix],
        prefix_names=tokens.prefix_names,
        place=place,
    )


def high_norm_patches(norms: TokenNorms, factor: float = 2.0) -> list[tuple[int, int, float]]:
    """Patches whose norm exceeds `factor` times the median patch norm, largest first.

    Returns:
        (row, col, norm) of each such patch.
    """
    threshold = factor * float(np.median(norms.patch_norms))
    rows, cols = np.nonzero(norms.patch_norms > threshold)
    found = [(int(r), int(c), float(norms.patch_norms[r, c])) for r, c in zip(rows, cols, strict=True)]
    return sorted(found, key=lambda item: -item[2])


@dataclass(frozen=True)
class PrincipalColours:
    """The first three principal components of a set of vectors, each scaled to [0, 1] as R, G, B."""

    rgb: np.ndarray  # (..., 3) float in [0, 1]
    explained_variance_ratio: np.ndarray  # (components,) of the fitted rows, components ≤ 3


def principal_components_rgb(vectors: np.ndarray, fit_rows: int | None = None) -> PrincipalColours:
    """Projects vectors on their first three principal components and maps each to a colour channel.

    Each component is scaled so that the 1st–99th percentiles of the fitted rows span [0, 1] and
    clipped, so a few extreme tokens do not wash the rest out. With fewer than three components
    available, the missing channels are a constant 0.5.

    Args:
        vectors: (M, D) vectors.
        fit_rows: fit the PCA and the scaling on the first `fit_rows` rows only (all when None) and
            apply them to every row, so two sets can be coloured on the same basis.

    Returns:
        Colours of shape (M, 3) and the explained variance ratios.
    """
    assert vectors.ndim == 2, f"expected (M, D), got {vectors.shape}"
    fitted = vectors[: fit_rows or len(vectors)].astype(np.float64)
    components = min(3, fitted.shape[0], fitted.shape[1])
    rgb = np.full((len(vectors), 3), 0.5)
    if components == 0:
        return PrincipalColours(rgb, np.zeros(0))
    # Deferred: scikit-learn (with SciPy) takes ~1 s to import, and Explore's first map, which
    # reaches this module through vitviz.maths.sinks, never needs it.
    from sklearn.decomposition import PCA

    pca = PCA(n_components=components, svd_solver="full").fit(fitted)
    fitted_projection = pca.transform(fitted)  # (fit_rows, components)
    projection = pca.transform(vectors.astype(np.float64))  # (M, components)
    low = np.percentile(fitted_projection, 1, axis=0)
    high = np.percentile(fitted_projection, 99, axis=0)
    span = np.where(high - low > 1e-12, high - low, 1.0)
    scaled = np.clip((projection - low) / span, 0.0, 1.0)
    rgb[:, :components] = np.where(high - low > 1e-12, scaled, 0.5)
    return PrincipalColours(rgb, pca.explained_variance_ratio_.copy())


def patch_feature_colours(tokens: OutputTokens, place: TokenPlace = "after_norm") -> PrincipalColours:
    """The first three principal components of the patch tokens as an RGB image over the grid.

    Returns:
        Colours of shape (rows, cols, 3) and the explained variance ratios.
    """
    patches = tokens.tokens(place)[tokens.num_prefix_tokens :]  # (rows * cols, D)
    colours = principal_components_rgb(patches)
    return PrincipalColours(colours.rgb.reshape(*tokens.grid_size, 3), colours.explained_variance_ratio)
