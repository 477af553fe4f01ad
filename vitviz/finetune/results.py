"""What a finished run got right and wrong on its validation images: confusion matrix and mistakes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix

from vitviz.runs import RunError, read_config, read_val_predictions

__all__ = ["Mistake", "RunResults", "run_results"]


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
