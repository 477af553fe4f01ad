"""What a finished run got right and wrong on its validation images: confusion matrix and mistakes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix

from vitviz.runs import read_config, read_val_predictions

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
    """Confusion matrix (scikit-learn) and mistakes from a run's val_predictions.json."""
    labels = tuple(read_config(folder).get("labels", ()))
    rows = read_val_predictions(folder)
    truth = [int(row["label"]) for row in rows]
    guesses = [int(row["predicted"]) for row in rows]
    matrix = confusion_matrix(truth, guesses, labels=list(range(len(labels))))
    mistakes = sorted(
        (
            Mistake(str(row["key"]), int(row["label"]), int(row["predicted"]), float(row["probability"]))
            for row in rows
            if row["label"] != row["predicted"]
        ),
        key=lambda mistake: -mistake.probability,
    )
    return RunResults(labels, tuple(str(row["key"]) for row in rows), matrix, tuple(mistakes))
