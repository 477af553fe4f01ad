"""Where two or three models' top-k predictions agree: the same top class, classes they share."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vitviz.predict import Prediction

__all__ = ["PredictionAgreement", "prediction_agreement"]


@dataclass(frozen=True)
class PredictionAgreement:
    """Agreement between the top-k lists of models that share a label space."""

    top1_agree: bool  # every model's most probable class is the same (needs two lists or more)
    top1_index: int | None  # that class, when they agree
    shared: frozenset[int]  # classes in the top-k of at least two models
    common: frozenset[int]  # classes in the top-k of every model


def prediction_agreement(predictions: Sequence[Sequence[Prediction]]) -> PredictionAgreement:
    """Compares the top-k lists of several models (models without predictions left out by the caller).

    Args:
        predictions: one top-k list per model, most probable first.
    """
    lists = [list(items) for items in predictions if items]
    counts = Counter(index for items in lists for index in {p.index for p in items})
    tops = {items[0].index for items in lists}
    agree = len(lists) >= 2 and len(tops) == 1
    return PredictionAgreement(
        top1_agree=agree,
        top1_index=next(iter(tops)) if agree else None,
        shared=frozenset(index for index, count in counts.items() if count >= 2),
        common=frozenset(index for index, count in counts.items() if len(lists) >= 2 and count == len(lists)),
    )
