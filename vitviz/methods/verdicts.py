"""What a faithfulness check shows, in words read from its numbers: does a map beat the random order?

The Compare page and `vitviz compare` print these same sentences. A map that finds the evidence
makes the probability fall faster than the random order when its most salient patches go first
(a lower number) and fall slower when its least salient go first (a higher number); each sentence
says, for both orders, whether the numbers bear that out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from vitviz.methods import method_title
from vitviz.methods.faithfulness import FaithfulnessResult, RoadResult
from vitviz.methods.probes import ProbeCurve

__all__ = [
    "PROBE_WORDS",
    "ROAD_WORDS",
    "OrderNumbers",
    "Verdict",
    "deletion_verdicts",
    "drop_verdicts",
    "road_verdicts",
]

# How a salient-first order compares with the random order, and the least-salient-first order with it:
# (better, not better) words for each.
PROBE_WORDS = (("falls faster than", "does not fall faster than"), ("stays above", "does not stay above"))
ROAD_WORDS = (("is below", "is not below"), ("is above", "is not above"))


class Verdict(NamedTuple):
    """One sentence about one model (and method): who it is about, and what its numbers show."""

    subject: str  # the model, or "model · method"; a page may set it in bold
    finding: str  # the rest of the sentence

    def __str__(self) -> str:
        return f"{self.subject}: {self.finding}"


class OrderNumbers(NamedTuple):
    """One number per removal order: most salient first, least salient first, random (lower: falls faster)."""

    most: float
    least: float
    random: float

    def finding(self, salient: str, measure: str, words: tuple[tuple[str, str], ...]) -> str:
        """The sentence read from the three numbers: is each ordered curve on the faithful side of random?"""
        falls = words[0][0] if self.most < self.random else words[0][1]
        keeps = words[1][0] if self.least > self.random else words[1][1]
        return (
            f"most {salient} first ({measure} {self.most:.3f}) {falls} the random order "
            f"({self.random:.3f}); least {salient} first ({self.least:.3f}) {keeps} it."
        )


def drop_verdicts(curves: Sequence[ProbeCurve]) -> list[Verdict]:
    """One verdict per model, read from its three drop curves' areas; a model without all three has none."""
    verdicts = []
    for model in dict.fromkeys(curve.model for curve in curves):
        areas = {curve.kind: curve.area for curve in curves if curve.model == model}
        if len(areas) < 3:
            continue
        orders = OrderNumbers(areas["drop-salient"], areas["drop-least-salient"], areas["drop-random"])
        verdicts.append(Verdict(model, orders.finding("salient", "area", PROBE_WORDS)))
    return verdicts


def deletion_verdicts(results: Sequence[FaithfulnessResult]) -> list[Verdict]:
    """One verdict per model and method, read from its deletion areas in the three orders."""
    return [
        Verdict(
            f"{result.model} · {method_title(result.method)}",
            OrderNumbers(
                result.deletion_auc, result.least_first_deletion_auc, result.random_deletion_auc
            ).finding("salient", "area", PROBE_WORDS),
        )
        for result in results
    ]


def road_verdicts(results: Sequence[RoadResult]) -> list[Verdict]:
    """One verdict per model and method, read from its ROAD means against the random order."""
    return [
        Verdict(
            f"{result.model} · {method_title(result.method)}",
            OrderNumbers(
                float(np.mean(result.most_relevant_first)),
                float(np.mean(result.least_relevant_first)),
                float(np.mean(result.random_order)),
            ).finding("relevant", "mean", ROAD_WORDS),
        )
        for result in results
    ]
