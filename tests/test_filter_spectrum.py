"""Spatial frequency of the patch-embedding filter components: synthetic patterns, and the bundled DINOv2 vs its untrained twin."""

import numpy as np
import pytest

from vitviz.maths.filters import (
    LOW_FREQUENCY_CUTOFF,
    FilterSpectrum,
    filter_components,
    filter_spectrum,
    patch_embedding_filters,
    spectrum_sentence,
)
from vitviz.models import LoadedModel, load_model, untrained_twin


def as_components(pattern: np.ndarray) -> np.ndarray:
    """One RGB component that repeats a (P, P) pattern in every channel."""
    return np.broadcast_to(pattern, (1, 3, *pattern.shape)).copy()


def test_a_constant_and_a_slow_wave_are_all_low_frequency():
    cols = np.arange(14)[None, :].repeat(14, axis=0)
    constant = filter_spectrum(as_components(np.ones((14, 14))))
    slow = filter_spectrum(as_components(np.cos(2 * np.pi * cols / 14)))  # 1/14 cycle per pixel
    assert constant.low_frequency_share[0] == pytest.approx(1.0)
    assert constant.mean_frequency[0] == pytest.approx(0.0)
    assert slow.low_frequency_share[0] == pytest.approx(1.0)
    assert slow.mean_frequency[0] == pytest.approx(1 / 14)


def test_a_checkerboard_has_no_low_frequency_energy():
    rows, cols = np.mgrid[0:14, 0:14]
    spectrum = filter_spectrum(as_components((-1.0) ** (rows + cols)))
    assert spectrum.low_frequency_share[0] == pytest.approx(0.0, abs=1e-12)
    assert spectrum.mean_frequency[0] == pytest.approx(np.sqrt(0.5**2 + 0.5**2))


def test_white_noise_keeps_the_band_share_of_its_energy_below_the_cutoff():
    noise = np.random.default_rng(0).normal(size=(400, 3, 14, 14))
    spectrum = filter_spectrum(noise)
    # 9 of the 196 frequencies of a 14×14 filter lie within 1/8 cycle per pixel of zero.
    assert spectrum.white_noise_share == pytest.approx(9 / 196)
    assert spectrum.median_low_frequency_share == pytest.approx(9 / 196, rel=0.2)
    assert spectrum.cutoff == LOW_FREQUENCY_CUTOFF


def test_cutoff_outside_the_spectrum_is_refused():
    with pytest.raises(ValueError, match="cutoff"):
        filter_spectrum(np.ones((1, 3, 4, 4)), cutoff=0.5)


def spectrum_of(share: float, frequency: float) -> FilterSpectrum:
    return FilterSpectrum(np.array([share]), np.array([frequency]), 0.125, 9 / 196)


def test_the_sentence_follows_the_numbers():
    untrained = spectrum_of(0.045, 0.38)
    smooth = spectrum_sentence(spectrum_of(0.8, 0.05), untrained, "a smooth model")
    assert smooth.startswith(
        "A smooth model's filter components keep 80.0% of their energy below 0.125 cycles"
    )
    assert smooth.endswith(": smooth, low-frequency filters.")
    assert spectrum_sentence(spectrum_of(0.15, 0.2), untrained, "m").endswith("but mostly not low-frequency.")
    assert spectrum_sentence(spectrum_of(0.05, 0.3), untrained, "m").endswith(
        "no smoother than random filters."
    )
    assert spectrum_sentence(spectrum_of(0.001, 0.29), untrained, "m").endswith(
        "0.29 cycles per pixel, a 3.4-pixel period: fine patterns, not smooth filters."
    )


@pytest.fixture(scope="module")
def dinov2() -> LoadedModel:
    return load_model("vit_small_patch14_dinov2", "bundled", "cpu")


def test_bundled_dinov2_components_are_not_smooth_low_frequency_filters(dinov2):
    trained = filter_spectrum(
        filter_components(patch_embedding_filters(dinov2.model, dinov2.facts)).components
    )
    twin = untrained_twin(dinov2)
    untrained = filter_spectrum(filter_components(patch_embedding_filters(twin.model, twin.facts)).components)
    # Measured: every one of the 28 trained components keeps at most 0.2% of its energy below 1/8 cycle
    # per pixel (median 0.09%), the untrained twin 2.3–6% (median 4.3%), white noise 4.6%. The trained
    # energy centres on 0.27–0.32 cycles per pixel (a 3–4 pixel period), the untrained on 0.36–0.40.
    assert trained.low_frequency_share.max() < 0.01
    assert untrained.median_low_frequency_share == pytest.approx(trained.white_noise_share, rel=0.3)
    assert np.all((trained.mean_frequency > 0.25) & (trained.mean_frequency < 0.34))
    assert untrained.median_frequency > trained.median_frequency + 0.05
    sentence = spectrum_sentence(trained, untrained, "the bundled DINOv2")
    assert sentence.startswith("The bundled DINOv2's filter components keep 0.1% of their energy")
    assert sentence.endswith("fine patterns, not smooth filters.")
