"""The verdict sentences of Compare and `vitviz compare`: each claim appears only when the numbers bear it out."""

import numpy as np
import pytest

from vitviz.methods.faithfulness import FaithfulnessResult, RoadResult
from vitviz.methods.probes import ProbeCurve
from vitviz.methods.verdicts import Verdict, deletion_verdicts, drop_verdicts, road_verdicts

FRACTIONS = np.linspace(0.0, 1.0, 5)
# Probability of the class as patches go: falling fast, falling slowly, and a straight line between.
FAST = np.array([0.9, 0.3, 0.1, 0.05, 0.0])  # area 0.225 (trapezoids)
STRAIGHT = np.array([0.9, 0.675, 0.45, 0.225, 0.0])  # area 0.45
SLOW = np.array([0.9, 0.85, 0.8, 0.6, 0.0])  # area 0.675


# What every result here shares: a trained model followed on the espresso class.
TARGET = {"trained": True, "target_index": 967, "target_label": "espresso"}


def _curve(model: str, kind: str, probability: np.ndarray) -> ProbeCurve:
    return ProbeCurve(
        model=model,
        family="cnn",
        kind=kind,
        method=None if kind == "drop-random" else "gradcam",
        **TARGET,
        fractions=FRACTIONS,
        target_probability=probability,
        removed_tokens=False,
        grid_size=(14, 14),
    )


def _drop(model: str, salient: np.ndarray, least: np.ndarray, random: np.ndarray) -> list[ProbeCurve]:
    return [
        _curve(model, "drop-salient", salient),
        _curve(model, "drop-least-salient", least),
        _curve(model, "drop-random", random),
    ]


# The (model, method) each kind of result below is of, and the subject its verdict names.
DELETION_RUN, DELETION = ("tf_efficientnet_lite0", "gradcam"), "tf_efficientnet_lite0 · Grad-CAM"
ROAD_RUN, ROAD = ("vit_small_patch14_dinov2", "chefer"), "vit_small_patch14_dinov2 · Chefer et al. relevance"


def _deletion(
    run: tuple[str, str], deletion: np.ndarray, least: np.ndarray, random: np.ndarray
) -> FaithfulnessResult:
    model, method = run
    return FaithfulnessResult(
        model=model,
        method=method,
        **TARGET,
        fractions=FRACTIONS,
        deletion=deletion,
        insertion=SLOW,
        least_first_deletion=least,
        random_deletion=random,
        random_insertion=STRAIGHT,
    )


def _road(run: tuple[str, str], most: np.ndarray, least: np.ndarray, random: np.ndarray) -> RoadResult:
    model, method = run
    return RoadResult(
        model=model,
        method=method,
        **TARGET,
        clean_probability=0.9,
        removed=np.linspace(0.1, 0.9, 5),
        most_relevant_first=most,
        least_relevant_first=least,
        random_order=random,
    )


def test_a_map_that_beats_the_random_order_is_said_to_in_both_orders():
    (verdict,) = drop_verdicts(_drop("resnet18", FAST, SLOW, STRAIGHT))
    assert verdict.subject == "resnet18"
    assert verdict.finding == (
        "most salient first (area 0.225) falls faster than the random order (0.450); "
        "least salient first (0.675) stays above it."
    )
    assert str(verdict) == f"resnet18: {verdict.finding}"


def test_a_map_worse_than_the_random_order_is_never_said_to_beat_it():
    (verdict,) = drop_verdicts(_drop("resnet18", SLOW, FAST, STRAIGHT))
    assert "does not fall faster than the random order (0.450)" in verdict.finding
    assert "least salient first (0.225) does not stay above it" in verdict.finding
    assert " falls faster" not in verdict.finding and " stays above" not in verdict.finding


def test_each_order_is_judged_on_its_own_numbers():
    (verdict,) = drop_verdicts(_drop("resnet18", FAST, FAST, STRAIGHT))
    assert " falls faster than" in verdict.finding and "does not stay above" in verdict.finding


def test_a_tie_with_the_random_order_is_not_a_win():
    (verdict,) = drop_verdicts(_drop("resnet18", STRAIGHT, STRAIGHT, STRAIGHT))
    assert "does not fall faster" in verdict.finding and "does not stay above" in verdict.finding


def test_one_drop_verdict_per_model_and_none_without_all_three_orders():
    curves = _drop("resnet18", FAST, SLOW, STRAIGHT) + _drop("deit_tiny", SLOW, FAST, STRAIGHT)[:2]
    assert [verdict.subject for verdict in drop_verdicts(curves)] == ["resnet18"]


# (verdicts, result, subject, what the sentence says: its two halves, joined by "|")
CASES = {
    "deletion-faithful": (deletion_verdicts, _deletion(DELETION_RUN, FAST, SLOW, STRAIGHT), DELETION,
        "(area 0.225) falls faster than the random order (0.450)|(0.675) stays above it"),
    "deletion-unfaithful": (deletion_verdicts, _deletion(DELETION_RUN, SLOW, FAST, STRAIGHT), DELETION,
        "(area 0.675) does not fall faster than|(0.225) does not stay above it"),
    "road-faithful": (road_verdicts, _road(ROAD_RUN, FAST, SLOW, STRAIGHT), ROAD,
        "(mean 0.270) is below the random order (0.450)|(0.630) is above it"),
    "road-unfaithful": (road_verdicts, _road(ROAD_RUN, SLOW, FAST, STRAIGHT), ROAD,
        "(mean 0.630) is not below the random order|(0.270) is not above it"),
}  # fmt: skip


@pytest.mark.parametrize(("verdicts", "result", "subject", "words"), CASES.values(), ids=CASES)
def test_deletion_and_road_verdicts_read_their_own_numbers(verdicts, result, subject, words):
    """Deletion reads the three deletion areas; ROAD the means of its three curves."""
    (verdict,) = verdicts([result])
    assert verdict.subject == subject
    assert all(word in verdict.finding for word in words.split("|")), verdict.finding


def test_verdicts_are_plain_text_for_the_terminal():
    verdicts: list[Verdict] = drop_verdicts(_drop("a*b", FAST, SLOW, STRAIGHT))
    assert "**" not in str(verdicts[0])
