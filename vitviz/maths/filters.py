"""Patch-embedding filters (ViT paper, Fig. 7 left): principal components of the linear patch projection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sklearn.decomposition import PCA
from torch import nn

if TYPE_CHECKING:  # facts are only read here; loading models is vitviz.models'
    from vitviz.models import ModelFacts

__all__ = [
    "LOW_FREQUENCY_CUTOFF",
    "PAPER_COMPONENTS",
    "FilterComponents",
    "FilterSpectrum",
    "FiltersNotApplicableError",
    "component_tiles",
    "embedding_filter_components",
    "filter_components",
    "filter_spectrum",
    "patch_embedding_filters",
    "spectrum_sentence",
    "tile_mosaic",
]

# The paper shows the first 28 principal components.
PAPER_COMPONENTS = 28
# "Low frequency": at most 1/8 cycle per pixel (a quarter of the Nyquist frequency), i.e. a period of
# 8 pixels or more: at most about two cycles across a 14- or 16-pixel filter.
LOW_FREQUENCY_CUTOFF = 0.125


class FiltersNotApplicableError(ValueError):
    """The model has no linear projection of RGB patches; the message is meant for a user."""


@dataclass(frozen=True)
class FilterComponents:
    """Principal components of the patch-embedding filters, each shaped like a filter."""

    components: np.ndarray  # (k, 3, P, P) unit-norm directions in filter space
    explained_variance_ratio: np.ndarray  # (k,) share of the filters' variance each component explains
    num_filters: int  # D, the number of filters (the token width)

    @property
    def num_components(self) -> int:
        return self.components.shape[0]


def patch_embedding_filters(model: nn.Module, facts: ModelFacts) -> np.ndarray:
    """The linear patch-embedding filters of a ViT, one RGB P×P filter per token dimension.

    Returns:
        (D, 3, P, P) weights of `patch_embed.proj`.

    Raises:
        FiltersNotApplicableError: a CNN, a hybrid (its projection reads CNN feature channels, not
            pixels) or a patch embedding that is not one convolution over RGB.
    """
    if facts.family == "cnn":
        raise FiltersNotApplicableError(
            f"{facts.name} is a CNN: it has no patch embedding. Its first convolution's filters "
            "are a different thing (small, overlapping windows)."
        )
    projection = getattr(getattr(model, "patch_embed", None), "proj", None)
    if facts.family == "hybrid":
        detail = ""
        if isinstance(projection, nn.Conv2d):
            height, width = projection.kernel_size
            detail = (
                f" Its projection is {height}×{width} over the {projection.in_channels} channels of the CNN "
                "stem's feature map, so its filters cannot be shown as RGB pictures."
            )
        raise FiltersNotApplicableError(
            f"{facts.name} is a hybrid: its tokens come from a CNN feature map, not from pixel patches.{detail}"
        )
    if not isinstance(projection, nn.Conv2d) or projection.in_channels != 3:
        raise FiltersNotApplicableError(
            f"{facts.name}'s patch embedding is not one linear projection of RGB patches."
        )
    return projection.weight.detach().float().cpu().numpy()


def filter_components(filters: np.ndarray, num_components: int = PAPER_COMPONENTS) -> FilterComponents:
    """PCA (scikit-learn) of the filters, each filter one sample of C·P·P values.

    Args:
        filters: (D, C, P, P) filters.
        num_components: how many components to keep; fewer when D or C·P·P is smaller.

    Returns:
        The first components, most variance first.
    """
    num_filters = filters.shape[0]
    samples = filters.reshape(num_filters, -1).astype(np.float64)  # (D, C·P·P)
    keep = min(num_components, num_filters, samples.shape[1])
    pca = PCA(n_components=keep, svd_solver="full").fit(samples)
    return FilterComponents(
        components=pca.components_.reshape(keep, *filters.shape[1:]),
        explained_variance_ratio=pca.explained_variance_ratio_,
        num_filters=num_filters,
    )


def embedding_filter_components(
    model: nn.Module, facts: ModelFacts, num_components: int = PAPER_COMPONENTS
) -> FilterComponents:
    """Principal components of the model's patch-embedding filters (`patch_embedding_filters`).

    Raises:
        FiltersNotApplicableError: as `patch_embedding_filters`.
    """
    return filter_components(patch_embedding_filters(model, facts), num_components)


def component_tiles(components: np.ndarray) -> np.ndarray:
    """Each component as an RGB picture, stretched to [0, 1] on its own (a component's sign is arbitrary).

    Args:
        components: (k, 3, P, P).

    Returns:
        (k, P, P, 3) floats in [0, 1]; a constant component comes out mid-grey.
    """
    tiles = components.transpose(0, 2, 3, 1)  # (k, P, P, 3)
    low = tiles.min(axis=(1, 2, 3), keepdims=True)
    high = tiles.max(axis=(1, 2, 3), keepdims=True)
    span = high - low
    return np.where(span > 0, (tiles - low) / np.where(span > 0, span, 1.0), 0.5)


def tile_mosaic(tiles: np.ndarray, columns: int = 7, scale: int = 4, gap: int = 2) -> np.ndarray:
    """Tiles in rows of `columns`, each enlarged `scale` times without smoothing, on white.

    Args:
        tiles: (k, P, P, 3) floats in [0, 1].
        columns: tiles per row (7 gives the paper's 4 × 7 for 28 components).
        scale: pixels per filter value.
        gap: white pixels between tiles.

    Returns:
        (H, W, 3) uint8 picture.
    """
    count, height, width = tiles.shape[:3]
    rows = -(-count // columns)
    cell_h, cell_w = height * scale, width * scale
    mosaic = np.full((rows * (cell_h + gap) + gap, columns * (cell_w + gap) + gap, 3), 255, np.uint8)
    enlarged = np.repeat(np.repeat(tiles, scale, axis=1), scale, axis=2)  # (k, P·s, P·s, 3)
    as_bytes = np.round(enlarged * 255).astype(np.uint8)
    for index in range(count):
        row, col = divmod(index, columns)
        top, left = gap + row * (cell_h + gap), gap + col * (cell_w + gap)
        mosaic[top : top + cell_h, left : left + cell_w] = as_bytes[index]
    return mosaic


@dataclass(frozen=True)
class FilterSpectrum:
    """Where the energy of each filter component lies in spatial frequency."""

    low_frequency_share: np.ndarray  # (k,) share of each component's energy at or below `cutoff`
    mean_frequency: np.ndarray  # (k,) energy-weighted mean radial frequency, cycles per pixel
    cutoff: float  # cycles per pixel
    white_noise_share: float  # the low-frequency share of white noise: the band's share of frequencies

    @property
    def median_low_frequency_share(self) -> float:
        return float(np.median(self.low_frequency_share))

    @property
    def median_frequency(self) -> float:
        return float(np.median(self.mean_frequency))


def filter_spectrum(components: np.ndarray, cutoff: float = LOW_FREQUENCY_CUTOFF) -> FilterSpectrum:
    """The 2-D power spectrum of each component, summed over colour channels, split at `cutoff`.

    Args:
        components: (k, C, P, P) filters or principal components.
        cutoff: radial frequency in cycles per pixel (Nyquist is 0.5) up to which energy counts as low;
            the constant (DC) term counts as low.

    Returns:
        Per component: the low-frequency share of energy and the mean radial frequency.
    """
    assert components.ndim == 4, f"expected (k, C, P, P), got {components.shape}"
    if not 0.0 < cutoff < 0.5:
        raise ValueError(f"cutoff must lie in (0, 0.5) cycles per pixel, got {cutoff}")
    height, width = components.shape[-2:]
    frequency_y = np.fft.fftfreq(height)[:, None]  # cycles per pixel
    frequency_x = np.fft.fftfreq(width)[None, :]
    radius = np.sqrt(frequency_y**2 + frequency_x**2)  # (P, P)
    power = (np.abs(np.fft.fft2(components.astype(np.float64))) ** 2).sum(axis=1)  # (k, P, P)
    energy = power.sum(axis=(1, 2))
    energy = np.where(energy > 0, energy, 1.0)  # an all-zero component has no spectrum: share 0
    low = radius <= cutoff
    return FilterSpectrum(
        low_frequency_share=(power * low).sum(axis=(1, 2)) / energy,
        mean_frequency=(power * radius).sum(axis=(1, 2)) / energy,
        cutoff=cutoff,
        white_noise_share=float(low.mean()),
    )


def spectrum_sentence(trained: FilterSpectrum, untrained: FilterSpectrum, model_label: str) -> str:
    """What the filter components are made of, from the numbers, in one line.

    Args:
        trained: spectrum of the trained model's components.
        untrained: spectrum of the same architecture's randomly initialised components.
        model_label: how to name the trained model ("the bundled DINOv2").

    Returns:
        E.g. "The bundled DINOv2's filter components keep 0.1% of their energy below 0.125 cycles per
        pixel (untrained twin 4.4%, white noise 4.6%); it centres on 0.26 cycles per pixel, a 3.9-pixel
        period: fine patterns, not smooth filters."
    """
    share = trained.median_low_frequency_share
    reference = max(untrained.median_low_frequency_share, trained.white_noise_share)
    frequency = trained.median_frequency
    if share >= 0.5 and share >= 2 * reference:
        verdict = "smooth, low-frequency filters"
    elif share > 1.5 * reference:
        verdict = "smoother than random filters, but mostly not low-frequency"
    elif share * 1.5 < reference:
        verdict = "fine patterns, not smooth filters"
    else:
        verdict = "no smoother than random filters"
    period = f", a {1 / frequency:.1f}-pixel period" if frequency > 0 else ""
    return (
        f"{model_label[0].upper()}{model_label[1:]}'s filter components keep {share:.1%} of their energy "
        f"below {trained.cutoff:g} cycles per pixel (untrained twin {untrained.median_low_frequency_share:.1%}, "
        f"white noise {trained.white_noise_share:.1%}); it centres on {frequency:.2f} cycles per pixel"
        f"{period}: {verdict}."
    )
