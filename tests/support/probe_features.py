"""A real probe of a bundled model, with the frozen features its backbone pass produced kept aside."""

import time
from dataclasses import dataclass

import numpy as np
import pytest

from vitviz.finetune import trainer
from vitviz.finetune.data import open_image_set
from vitviz.finetune.trainer import FinetuneConfig, FinetuneResult, Progress, finetune
from vitviz.models import load_model


@dataclass(frozen=True)
class ProbeFeatures:
    """A finished probe and the very rows it was fitted (train) and scored (val) on."""

    result: FinetuneResult
    train_features: np.ndarray  # (n_train, D), raw (before the probe's standardisation)
    train_labels: np.ndarray
    val_features: np.ndarray
    val_labels: np.ndarray
    head_seconds: float  # from the features being done to the run's end: choosing λ and the solve


def probe_with_features(model: str, data: str, max_images: int, epochs: int = 10) -> ProbeFeatures:
    """Runs `finetune` in probe mode on the bundled weights, observing (not replacing) its features."""
    captured = []
    extract = trainer._extract_features

    def observed(*args, **kwargs):
        features = extract(*args, **kwargs)
        captured.append(features)
        return features

    marks: dict[str, float] = {}

    def on_progress(progress: Progress) -> None:
        if progress.phase == "train":
            marks.setdefault("features done", time.perf_counter())

    config = FinetuneConfig(
        model=model, weights="bundled", mode="probe", epochs=epochs, max_images=max_images
    )
    base = load_model(model, "bundled", "cpu")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "_extract_features", observed)
        result = finetune(config, open_image_set(data), base=base, on_progress=on_progress)
    ended = time.perf_counter()
    (features,) = captured
    rows = features.numpy()
    labels = np.array([result.image_set.items[i].label for i in [*result.split.train, *result.split.val]])
    count = len(result.split.train)
    return ProbeFeatures(
        result, rows[:count], labels[:count], rows[count:], labels[count:], ended - marks["features done"]
    )
