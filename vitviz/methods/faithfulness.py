"""Faithfulness of explanations: deletion and insertion curves, and ROAD, per method and model."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

from vitviz.methods import METHODS, explain_pixels, method_title
from vitviz.methods.base import ExplanationResult
from vitviz.methods.probes import (
    DEFAULT_FRACTIONS,
    ProbeGrid,
    ProbeTarget,
    area_under_curve,
    drop_mask,
    probe_grid,
    probe_target,
    resample_to_grid,
    salience_order,
    target_probabilities,
)
from vitviz.models import LoadedModel
from vitviz.preprocess import ImageView
from vitviz.progress import PlannedSteps, PlanStep, ProgressCallback

__all__ = [
    "ROAD_PERCENTILES",
    "FaithfulnessResult",
    "RandomOrderScores",
    "RoadResult",
    "faithfulness",
    "faithfulness_plan",
    "faithfulness_rows",
    "map_step",
    "maps_plan",
    "random_order_plan",
    "random_order_scores",
    "road",
    "road_plan",
    "road_rows",
    "scored_maps",
]

# The map percentiles ROAD thresholds at (the library's defaults); at p, (100 − p) % of the pixels
# are imputed.
ROAD_PERCENTILES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)

# Guessed costs of the steps, in forward passes of one image (`vitviz.progress.PlanStep`): across
# kinds they count only until a kind has been timed. A map is a forward and a backward (a backward
# costs about two forwards); a slow method's tens of them (Integrated Gradients' 16 steps). A set of
# curves is its images in one batch, about half a lone forward each. An imputation is a forward and
# a sparse solve over the pixels it fills, which grows faster than the pixels: one threshold's
# imputations took 11–19 times as long at 90% filled as at 10%; the solve runs on one core. These
# numbers are fitted to 63 traced runs of the faithfulness and arena jobs on EfficientNet-Lite0 (AMD
# EPYC; quiet, beside bursting visitors and beside a test suite; BENCHMARKS.md): replayed, 89% of
# their estimates at 10%, 25% and 50% are within 30%; the solve priced at the whole run's share and
# 80 forwards (the previous fit) gave 77%.
_MAP_FORWARDS, _SLOW_MAP_FORWARDS, _CURVE_IMAGE_FORWARDS = 3.0, 48.0, 0.5
_IMPUTATION_FORWARDS, _IMPUTATION_SOLVE_FORWARDS, _IMPUTATION_SOLVE_POWER = 1.5, 60.0, 1.5


def _imputation_step(percentile: int) -> PlanStep:
    """Imputing the pixels above a map's percentile (or below it): its cost grows with the fill."""
    fill = (100 - percentile) / 100
    cost = _IMPUTATION_FORWARDS + _IMPUTATION_SOLVE_FORWARDS * fill**_IMPUTATION_SOLVE_POWER
    return PlanStep("imputation", cost=cost, cores=1)  # the sparse solve runs on one core


def map_step(method: str) -> PlanStep:
    """One method's map as a step of a plan: maps of one method cost alike, of two methods not."""
    slow = method in METHODS and METHODS[method].slow
    return PlanStep(f"map: {method}", cost=_SLOW_MAP_FORWARDS if slow else _MAP_FORWARDS)


@dataclass(frozen=True)
class FaithfulnessResult:
    """Deletion and insertion curves of one method's map on one model and image, with their baselines.

    Deletion greys the most salient patches first (a faithful map makes the probability fall
    fast: low area); insertion starts from an all-grey image and restores the most salient
    patches first (a faithful map makes it rise fast: high area). An area means something only
    beside its baselines: the same curves in a random patch order (seeded, the same for every
    method of a model), and deletion of the least salient patches first (a faithful map keeps the
    probability up: high area).
    """

    model: str  # timm name
    trained: bool  # False for random (untrained) weights
    method: str  # registry name
    target_index: int
    target_label: str
    fractions: np.ndarray  # (F,) fraction of patches deleted / inserted
    deletion: np.ndarray  # (F,) target probability
    insertion: np.ndarray  # (F,) target probability
    least_first_deletion: np.ndarray  # (F,) target probability, least salient patches greyed first
    random_deletion: np.ndarray  # (F,) target probability, patches greyed in a random order
    random_insertion: np.ndarray  # (F,) target probability, patches restored in a random order

    @property
    def least_first_deletion_auc(self) -> float:
        return area_under_curve(self.fractions, self.least_first_deletion)

    @property
    def random_deletion_auc(self) -> float:
        return area_under_curve(self.fractions, self.random_deletion)

    @property
    def random_insertion_auc(self) -> float:
        return area_under_curve(self.fractions, self.random_insertion)

    @property
    def deletion_auc(self) -> float:
        return area_under_curve(self.fractions, self.deletion)

    @property
    def insertion_auc(self) -> float:
        return area_under_curve(self.fractions, self.insertion)


def faithfulness(
    loaded: LoadedModel,
    view: ImageView,
    methods: Sequence[str],
    class_index: int | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    method_options: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    maps: Sequence[ExplanationResult] | None = None,
) -> list[FaithfulnessResult]:
    """Deletion and insertion curves of each method's map on the view's input, with random baselines.

    Args:
        loaded: a model with a classifier head; never modified.
        view: the image's view scored (`vitviz.preprocess.image_view`).
        methods: registry names; each must fit the model.
        class_index: class to follow (default: the top class on the clean input).
        fractions: increasing fractions from 0 to 1.
        method_options: per-method options, by method name.
        seed: seed of the random order of the baseline curves.
        progress: called with (steps done, steps in all): the steps of `faithfulness_plan`, the
            baseline curves, then per method its map and its two sets of curves (a slow map moves
            within its step); an exception it raises (a cancel) stops the scoring.
        maps: the methods' maps, in order, as `scored_maps` gives them, when `road` scores them too:
            then no map is computed here, and the steps are `faithfulness_plan(..., with_maps=False)`.

    Raises:
        ValueError: `maps` that are not the methods' maps of this input's class.

    Returns:
        One result per method, in the order given.
    """
    steps = _checked_fractions(fractions)
    target = probe_target(loaded, view, class_index)
    _check_maps(maps, methods, target)
    grid = probe_grid(loaded)

    def curves(order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _order_curves(loaded, target, grid, steps, order)

    walk = PlannedSteps(progress, faithfulness_plan(methods, steps, with_maps=maps is None))
    with walk.step("curves"):
        random_deletion, random_insertion = curves(
            salience_order(None, "drop-random", seed, grid.num_patches)
        )
    results = []
    for index, method in enumerate(methods):
        if maps is None:
            with walk.step(map_step(method).kind):  # Score-CAM's masks move this step
                explained = _method_map(loaded, target, method, method_options)
        else:
            explained = maps[index]
        salience = resample_to_grid(explained.values, explained.input_size, grid)
        with walk.step("curves"):
            deletion, insertion = curves(salience_order(salience, "drop-salient"))
        with walk.step("curves"):
            least_first, _ = curves(salience_order(salience, "drop-least-salient"))
        results.append(
            FaithfulnessResult(
                **_scored_map(loaded, method, target),
                fractions=steps,
                deletion=deletion,
                insertion=insertion,
                least_first_deletion=least_first,
                random_deletion=random_deletion,
                random_insertion=random_insertion,
            )
        )
    return results


def _scored_map(loaded: LoadedModel, method: str, target: ProbeTarget) -> dict[str, Any]:
    """The fields FaithfulnessResult and RoadResult begin with: whose map, and the class it follows."""
    return {
        "model": loaded.facts.name,
        "trained": loaded.trained,
        "method": method,
        "target_index": target.index,
        "target_label": target.label,
    }


def faithfulness_plan(
    methods: Sequence[str], fractions: Sequence[float] = DEFAULT_FRACTIONS, with_maps: bool = True
) -> list[PlanStep]:
    """The steps `faithfulness` reports, in order: the random order's curves, then per method its map
    (unless the maps were given) and its two sets of curves (each set a deletion and an insertion
    curve, a forward per point)."""
    curves = PlanStep("curves", cost=_CURVE_IMAGE_FORWARDS * 2 * len(fractions))
    per_method = [[map_step(method)] if with_maps else [] for method in methods]
    return [curves] + [step for own_map in per_method for step in (*own_map, curves, curves)]


def maps_plan(methods: Sequence[str]) -> list[PlanStep]:
    """The steps `scored_maps` reports: each method's map."""
    return [map_step(method) for method in methods]


def scored_maps(
    loaded: LoadedModel,
    view: ImageView,
    methods: Sequence[str],
    class_index: int | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    progress: ProgressCallback | None = None,
) -> list[ExplanationResult]:
    """Each method's map of the view's prediction input for the class `faithfulness` and `road` follow,
    computed once to hand both (a slow map, Score-CAM's, would otherwise be computed twice).

    Args:
        loaded, view, methods, class_index, method_options: as `faithfulness` and `road` take them.
        progress: called with (maps done, maps in all), the steps of `maps_plan` (a slow map's masks
            move within its step); an exception it raises (a cancel) stops it.
    """
    target = probe_target(loaded, view, class_index)
    walk = PlannedSteps(progress, maps_plan(methods))
    explained = []
    for method in methods:
        with walk.step(map_step(method).kind):
            explained.append(_method_map(loaded, target, method, method_options))
    return explained


def _method_map(
    loaded: LoadedModel, target: ProbeTarget, method: str, method_options: dict[str, dict[str, Any]] | None
) -> ExplanationResult:
    """The method's map of the target's input for its class, with the method's own options."""
    options = (method_options or {}).get(method, {})
    return explain_pixels(loaded, target.pixels, method, [target.index], **options)[0]


def _check_maps(
    maps: Sequence[ExplanationResult] | None, methods: Sequence[str], target: ProbeTarget
) -> None:
    """Refuses given maps that are not, in order, the methods' maps for the target's class (a
    class-agnostic map, rollout's, names none)."""
    if maps is None:
        return
    named = [(explained.method, explained.target_index) for explained in maps]
    if len(named) != len(methods) or any(
        method != named_method or index not in (None, target.index)
        for method, (named_method, index) in zip(methods, named, strict=False)
    ):
        wanted = [(method, target.index) for method in methods]
        raise ValueError(f"the maps given explain {named}, not {wanted} (method, class)")


def _checked_fractions(fractions: Sequence[float]) -> np.ndarray:
    steps = np.asarray(list(fractions), dtype=np.float64)
    if steps.size < 2 or steps[0] != 0.0 or np.any(np.diff(steps) <= 0) or steps[-1] > 1.0:
        raise ValueError("fractions must rise strictly from 0 to at most 1")
    return steps


def _order_curves(
    loaded: LoadedModel, target: ProbeTarget, grid: ProbeGrid, steps: np.ndarray, order: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(deletion, insertion) target probabilities, each (F,), when patches go in this order."""
    pixels = target.pixels[0].cpu()  # (3, H, W)
    input_size = (pixels.shape[1], pixels.shape[2])
    counts = [round(fraction * grid.num_patches) for fraction in steps]
    deleted = [pixels * ~drop_mask(order[:count], grid, input_size) for count in counts]
    inserted = [pixels * drop_mask(order[:count], grid, input_size) for count in counts]
    probabilities = target_probabilities(loaded, torch.stack(deleted + inserted), target.index)
    return probabilities[: len(steps)], probabilities[len(steps) :]


def faithfulness_rows(results: Sequence[FaithfulnessResult]) -> list[dict[str, Any]]:
    """One table row per result: lower deletion area and higher insertion area mean more faithful."""
    return [
        {
            "model": result.model + ("" if result.trained else " (untrained)"),
            "method": method_title(result.method),
            "class": f"{result.target_label} ({result.target_index})",
            "deletion AUC ↓": round(result.deletion_auc, 4),
            "insertion AUC ↑": round(result.insertion_auc, 4),
            "insertion − deletion": round(result.insertion_auc - result.deletion_auc, 4),
            "least-salient-first deletion AUC": round(result.least_first_deletion_auc, 4),
            "random-order deletion AUC": round(result.random_deletion_auc, 4),
            "random-order insertion AUC": round(result.random_insertion_auc, 4),
        }
        for result in results
    ]


@dataclass(frozen=True)
class RoadResult:
    """ROAD (Rong et al., 2022) of one method's map: the target probability as pixels are imputed.

    Removed pixels are not greyed but filled in from their neighbours (the library's noisy linear
    imputation), so the model never sees the tell-tale grey shapes that let deletion curves leak
    the removed region's outline. Most-relevant-first (MoRF) should fall fast, least-relevant-
    first (LeRF) stay high, each read beside the random order: the same imputation ranked by a
    seeded random map on the model's patch grid (the same for every method of a model).
    """

    model: str  # timm name
    trained: bool  # False for random (untrained) weights
    method: str  # registry name
    target_index: int
    target_label: str
    clean_probability: float  # with nothing removed
    removed: np.ndarray  # (P,) fraction of pixels imputed, rising
    most_relevant_first: np.ndarray  # (P,) target probability, most relevant pixels imputed
    least_relevant_first: np.ndarray  # (P,) target probability, least relevant pixels imputed
    random_order: np.ndarray  # (P,) target probability, pixels imputed in the order of a random map

    @property
    def score(self) -> float:
        """Mean over the thresholds of (LeRF − MoRF) / 2, the library's combined ROAD: higher is more faithful."""
        return _road_score(self.most_relevant_first, self.least_relevant_first)


def _road_score(most_relevant_first: np.ndarray, least_relevant_first: np.ndarray) -> float:
    return float(np.mean(least_relevant_first - most_relevant_first) / 2.0)


def road(
    loaded: LoadedModel,
    view: ImageView,
    methods: Sequence[str],
    class_index: int | None = None,
    percentiles: Sequence[int] = ROAD_PERCENTILES,
    seed: int = 0,
    method_options: dict[str, dict[str, Any]] | None = None,
    progress: ProgressCallback | None = None,
    maps: Sequence[ExplanationResult] | None = None,
) -> list[RoadResult]:
    """ROAD curves of each method's map on the prediction input, with pytorch-grad-cam's ROAD metric.

    Args:
        loaded: a model with a classifier head; never modified.
        view: the image's view scored (`vitviz.preprocess.image_view`).
        methods: registry names; each must fit the model.
        class_index: class to follow (default: the top class on the clean input).
        percentiles: thresholds of the map, each in (0, 100).
        seed: seed of the imputation noise and of the random-order map (the global random state
            is left as it was).
        method_options: per-method options, by method name.
        progress: called with (steps done, steps in all), the steps of `road_plan`: each method's
            map, then the imputed inputs, a threshold at a time across every map (so the first
            imputations timed are a fair sample of them all); an exception it raises (a cancel)
            stops the scoring.
        maps: the methods' maps, in order, as `scored_maps` gives them, when `faithfulness` scores
            them too: then no map is computed here, and the steps are `road_plan(..., with_maps=False)`.

    Returns:
        One result per method, in the order given.

    Raises:
        ValueError: bad percentiles, or `maps` that are not the methods' maps of this input's class.
    """
    steps = _road_steps(percentiles)
    target = probe_target(loaded, view, class_index)
    _check_maps(maps, methods, target)
    walk = PlannedSteps(progress, road_plan(methods, steps, with_maps=maps is None))
    values = []
    for index, method in enumerate(methods):
        if maps is None:
            with walk.step(map_step(method).kind):  # Score-CAM's masks move this step
                values.append(_method_map(loaded, target, method, method_options).values)
        else:
            values.append(maps[index].values)
    both = [ROADMostRelevantFirst, ROADLeastRelevantFirst]
    imputed = [(_random_road_map(loaded, seed), [ROADMostRelevantFirst])] + [
        (method_values, both) for method_values in values
    ]
    (random_order,), *per_method = _imputed_curves(loaded, target, imputed, steps, seed, walk)
    return [
        RoadResult(
            **_scored_map(loaded, method, target),
            clean_probability=target.clean_probability,
            removed=np.asarray([1.0 - step / 100 for step in steps]),
            most_relevant_first=most_first,
            least_relevant_first=least_first,
            random_order=random_order,
        )
        for method, (most_first, least_first) in zip(methods, per_method, strict=True)
    ]


def road_plan(
    methods: Sequence[str], percentiles: Sequence[int] = ROAD_PERCENTILES, with_maps: bool = True
) -> list[PlanStep]:
    """The steps `road` reports, in order: each method's map (unless the maps were given), then the
    imputed inputs a threshold at a time (the random order's one, each method's two), from the fewest
    pixels filled to the most."""
    maps = maps_plan(methods) if with_maps else []
    per_threshold = 1 + 2 * len(methods)  # the random order's, then each method's two
    return maps + [
        _imputation_step(percentile) for percentile in _road_steps(percentiles) for _ in range(per_threshold)
    ]


def _road_steps(percentiles: Sequence[int]) -> list[int]:
    """The thresholds, highest first. At percentile p both orders impute (100 − p) % of the pixels:
    the most relevant ones (MoRF) or the least relevant ones (LeRF); so the fraction removed rises."""
    steps = sorted({int(value) for value in percentiles}, reverse=True)
    if not steps or steps[-1] <= 0 or steps[0] >= 100:
        raise ValueError("ROAD percentiles must lie strictly between 0 and 100")
    return steps


def _random_road_map(loaded: LoadedModel, seed: int) -> np.ndarray:
    """A seeded random map on the model's patch grid: ROAD's random order."""
    return np.random.default_rng(seed).random(probe_grid(loaded).grid_size).astype(np.float32)


def _imputed_curves(
    loaded: LoadedModel,
    target: ProbeTarget,
    maps: Sequence[tuple[np.ndarray, Sequence[type]]],
    steps: Sequence[int],
    seed: int,
    walk: PlannedSteps | None = None,
) -> list[list[np.ndarray]]:
    """The target probability at each threshold of each map: per map, (P,) for each of its ROAD orders.

    The thresholds are taken in turn, each across every map; each map draws its imputation noise
    from its own stream seeded with `seed`, so its curves are those it would give alone. Each
    imputed input is an "imputation" step of `walk`.
    """
    pixels = target.pixels  # (1, 3, H, W)
    input_size = (int(pixels.shape[-2]), int(pixels.shape[-1]))
    targets = [ClassifierOutputSoftmaxTarget(target.index)]
    devices = [pixels.device] if pixels.device.type == "cuda" else []
    per_pixel = [
        F.interpolate(
            torch.from_numpy(values)[None, None], size=input_size, mode="bilinear", align_corners=False
        )[0].numpy()  # (1, H, W): ROAD thresholds pixels
        for values, _ in maps
    ]
    curves: list[list[list[float]]] = [[[] for _ in orders] for _, orders in maps]
    # Plain forwards only (the library hooks nothing here), so no model lock is needed.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        streams = [torch.get_rng_state() for _ in maps]  # the noise only the CPU draws
        for percentile in steps:
            for index, (_, orders) in enumerate(maps):
                torch.set_rng_state(streams[index])
                for curve, metric in zip(curves[index], orders, strict=True):
                    with nullcontext() if walk is None else walk.step("imputation"):
                        after = metric(percentile)(
                            pixels, per_pixel[index], targets, loaded.model, return_diff=False
                        )
                    curve.append(float(after[0]))
                streams[index] = torch.get_rng_state()
    return [[np.asarray(curve) for curve in map_curves] for map_curves in curves]


@dataclass(frozen=True)
class RandomOrderScores:
    """What random orders score on one image: the spread a method's map must leave behind it.

    Seed s gives the very patch order `faithfulness(..., seed=s)` uses for its random baseline, and
    the very map (and imputation noise) `road(..., seed=s)` uses for its random order.
    """

    deletion: np.ndarray  # (S,) deletion area of each seed's random patch order
    insertion: np.ndarray  # (S,) insertion area of the same orders
    road: np.ndarray  # (S,) combined ROAD score, as `RoadResult.score`, of each seed's random map


def random_order_plan(
    seeds: int, fractions: Sequence[float] = DEFAULT_FRACTIONS, percentiles: Sequence[int] = ROAD_PERCENTILES
) -> list[PlanStep]:
    """The steps `random_order_scores` reports, in order: each seed's curves, then each seed's ROAD
    inputs, both orders imputed a threshold at a time."""
    curves = PlanStep("curves", cost=_CURVE_IMAGE_FORWARDS * 2 * len(fractions))
    imputations = [_imputation_step(percentile) for percentile in _road_steps(percentiles) for _ in range(2)]
    return [curves] * seeds + imputations * seeds


def random_order_scores(
    loaded: LoadedModel,
    target: ProbeTarget,
    seeds: Sequence[int],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    percentiles: Sequence[int] = ROAD_PERCENTILES,
    progress: ProgressCallback | None = None,
) -> RandomOrderScores:
    """Deletion and insertion areas and ROAD scores of random orders, one per seed.

    A random order favours no patch or pixel, so these spread around what chance gives.

    Args:
        loaded: a model with a classifier head; never modified.
        target: the view's input and the class followed (`vitviz.methods.probes.probe_target`).
        seeds: one random order per seed.
        fractions: as `faithfulness`.
        percentiles: as `road`.
        progress: called with (steps done, steps in all), the steps of `random_order_plan`.
    """
    steps = _checked_fractions(fractions)
    thresholds = _road_steps(percentiles)
    grid = probe_grid(loaded)
    walk = PlannedSteps(progress, random_order_plan(len(seeds), fractions, percentiles))
    curves = []
    for seed in seeds:
        with walk.step("curves"):
            order = salience_order(None, "drop-random", seed, grid.num_patches)
            curves.append(_order_curves(loaded, target, grid, steps, order))
    both = [ROADMostRelevantFirst, ROADLeastRelevantFirst]
    road = []
    for seed in seeds:
        ((most_first, least_first),) = _imputed_curves(
            loaded, target, [(_random_road_map(loaded, seed), both)], thresholds, seed, walk
        )
        road.append(_road_score(most_first, least_first))
    return RandomOrderScores(
        deletion=np.asarray([area_under_curve(steps, deletion) for deletion, _ in curves]),
        insertion=np.asarray([area_under_curve(steps, insertion) for _, insertion in curves]),
        road=np.asarray(road),
    )


def road_rows(results: Sequence[RoadResult]) -> list[dict[str, Any]]:
    """One table row per result: lower MoRF, higher LeRF and a higher combined score mean more faithful."""
    return [
        {
            "model": result.model + ("" if result.trained else " (untrained)"),
            "method": method_title(result.method),
            "class": f"{result.target_label} ({result.target_index})",
            "ROAD MoRF ↓": round(float(np.mean(result.most_relevant_first)), 4),
            "ROAD LeRF ↑": round(float(np.mean(result.least_relevant_first)), 4),
            "ROAD (LeRF − MoRF)/2 ↑": round(result.score, 4),
            "random-order ROAD": round(float(np.mean(result.random_order)), 4),
        }
        for result in results
    ]
