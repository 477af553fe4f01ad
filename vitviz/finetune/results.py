"""What a finished run got right and wrong on its validation images: confusion matrix and mistakes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix

from vitviz.runs import RunError, read_config, read_val_predictions

__all__ = ["AttentionChange", "Mistake", "RunResults", "attention_change", "curves_array", "run_results"]


@dataclass(frozen=True)
class Mistake:
    """A validation image the fine-tuned model got wrong."""

    key: str  # the image's key in the run's image set
    label: int  # true class
    predicted: int
    probability: float  # how sure the model was of its wrong answer


@dataclass(frozen=True)
class RunResults:
    """The fine-tuned model's answers on the validation images."""

    labels: tuple[str, ...]  # class names
    keys: tuple[str, ...]  # validation images, in key order
    matrix: np.ndarray  # (classes, classes) counts; rows true class, columns predicted
    mistakes: tuple[Mistake, ...]  # most confident first

    @property
    def accuracy(self) -> float:
        total = int(self.matrix.sum())
        return float(np.trace(self.matrix) / total) if total else float("nan")


def run_results(folder: str | Path) -> RunResults:
    """Confusion matrix (scikit-learn) and mistakes from a run's val_predictions.json.

    Raises:
        RunError: config.json or val_predictions.json is unreadable, or a prediction names a
            class the run does not have.
    """
    labels = tuple(read_config(folder)["labels"])
    rows = read_val_predictions(folder)
    for row in rows:
        if max(row["label"], row["predicted"]) >= len(labels):
            raise RunError(
                f"Run {Path(folder).name}: val_predictions.json names class "
                f"{max(row['label'], row['predicted'])} but the run has {len(labels)} classes."
            )
    truth = [row["label"] for row in rows]
    guesses = [row["predicted"] for row in rows]
    classes = len(labels)
    # scikit-learn refuses an empty input; a run stopped before validating has no predictions.
    matrix = (
        confusion_matrix(truth, guesses, labels=list(range(classes)))
        if rows
        else np.zeros((classes, classes), dtype=np.int64)
    )
    mistakes = sorted(
        (
            Mistake(row["key"], row["label"], row["predicted"], row["probability"])
            for row in rows
            if row["label"] != row["predicted"]
        ),
        key=lambda mistake: -mistake.probability,
    )
    return RunResults(labels, tuple(row["key"] for row in rows), matrix, tuple(mistakes))


def curves_array(metrics: Sequence[Mapping[str, float]]) -> np.ndarray:
    """metrics.jsonl rows as one (epochs, 4) array: epoch, train loss, validation loss, validation accuracy."""
    columns = ("epoch", "train_loss", "val_loss", "val_acc")
    return np.array([[float(row.get(column, np.nan)) for column in columns] for row in metrics]).reshape(
        -1, 4
    )


@dataclass(frozen=True)
class AttentionChange:
    """How far a run's attention map moved from its base model's, on one image."""

    title: str  # which map, e.g. "rollout"
    largest: float  # the largest change of one patch, in the map's own units
    identical: bool  # every patch equal to within float noise

    def sentence(self, mode: str, from_random: bool) -> str:
        """What the numbers say, with the claim a probe makes about them."""
        measured = (
            f"{self.title}: the maps before and after are identical (largest change of one patch "
            f"{self.largest:.1e})"
            if self.identical
            else f"{self.title}: the maps differ (largest change of one patch {self.largest:.2e})"
        )
        if mode != "probe":
            return measured + "."
        if from_random:
            return (
                measured + ". A probe freezes the backbone, so it cannot change its attention; "
                "here the 'before' model is a fresh random twin, not the run's exact start."
            )
        if self.identical:
            return (
                measured
                + ", as they must be: a probe freezes the backbone, so it cannot change its attention."
            )
        return (
            measured + ", yet a probe freezes the backbone, so training cannot have changed its attention: "
            "the base model loaded now is not the backbone this run started from."
        )


def attention_change(
    title: str, before: np.ndarray, after: np.ndarray, tolerance: float = 1e-6
) -> AttentionChange:
    """The largest per-patch change between two maps of one image; `tolerance` absorbs float noise."""
    before = np.asarray(before, dtype=np.float64)
    after = np.asarray(after, dtype=np.float64)
    if before.shape != after.shape:
        return AttentionChange(title, float("inf"), False)
    largest = float(np.abs(after - before).max()) if before.size else 0.0
    return AttentionChange(title, largest, largest <= tolerance)
