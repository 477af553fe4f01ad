"""The arena: every explanation method that fits a model, scored on an image or a set of images and ranked.

Each method's map of the model's top class is scored by three faithfulness measures and one
sanity check, all computed by `vitviz.methods.faithfulness` and `vitviz.methods.sanity`:

- deletion area (patches greyed most salient first; lower is better),
- insertion area (patches restored most salient first onto grey; higher is better),
- ROAD, pytorch-grad-cam's combined (LeRF − MoRF)/2 with noisy linear imputation (higher is better),
- cascading randomisation: Spearman's ρ between the map and the map once the head and half the
  blocks are random; |ρ| above `UNFAITHFUL_RANK_CORRELATION` (0.9) fails the check.

Every faithfulness score is read against random order: `random_orders` seeded random patch orders
(deletion, insertion) and random maps (ROAD) give a mean and a spread per image. A method's *gain*
on a measure is how much better than the random mean it scores (deletion: random − method; the
others: method − random); its *band* is `BAND_SDS` standard deviations of the random scores (at
least `MIN_BAND`). Over several images the gain and the band are each the median over images.

- "better than random" on a measure: gain > band; "worse": gain < −band; else "like random".
- A method *holds up* when it passes the sanity check (or it was not run) and is better than random
  on all three measures; the verdict names the (at most two) best-ranked such methods.
- A method *scores like random order* when it is like random on all three measures, and *worse
  than random order* when it is worse on all three.

Ranks: methods that pass the sanity check come first; within each group the order is the mean of
the method's ranks by gain on the three measures (ties share a rank), then the registry's order.

Over a set under torchrun each process scores every `world_size`-th image from its rank, rank 0
(and every other rank) merges them in the set's order: one image is scored the same whichever
process scores it, so the table is that of a single process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.stats import rankdata

from vitviz.finetune.distributed import SINGLE_PROCESS, DistributedContext
from vitviz.methods import METHODS, available_methods, method_title
from vitviz.methods.faithfulness import (
    faithfulness,
    faithfulness_plan,
    map_step,
    maps_plan,
    random_order_plan,
    random_order_scores,
    road,
    road_plan,
    scored_maps,
)
from vitviz.methods.probes import DEFAULT_FRACTIONS, probe_target
from vitviz.methods.sanity import UNFAITHFUL_RANK_CORRELATION, cascading_randomisation, randomisation_stages
from vitviz.models import LoadedModel
from vitviz.preprocess import ViewMode, image_view
from vitviz.progress import PlanStep, ProgressCallback, declare_parts, plan_units

__all__ = [
    "ARENA_ROAD_PERCENTILES",
    "BAND_SDS",
    "MAX_ARENA_IMAGES",
    "MEASURES",
    "MIN_BAND",
    "ArenaImage",
    "ArenaRow",
    "ArenaSettings",
    "ArenaTable",
    "ImageScores",
    "MethodScores",
    "Spread",
    "arena_methods",
    "arena_plan",
    "arena_table",
    "builtin_photo_images",
    "folder_images",
    "image_set_images",
    "run_arena",
    "run_held_out_images",
    "score_image",
    "zip_images",
]

MEASURES: tuple[str, ...] = ("deletion", "insertion", "road")
# ROAD imputes by solving a sparse system per threshold (about a second at 224 px on one CPU core):
# three thresholds instead of the library's nine keep an arena of fifteen methods in minutes.
ARENA_ROAD_PERCENTILES: tuple[int, ...] = (20, 50, 80)
MAX_ARENA_IMAGES = 24  # images one visitor's arena may score: a set, not a data set (the CLI has no cap)
BAND_SDS = 2.0  # a score within this many standard deviations of random order's mean is "like random"
MIN_BAND = 1e-3  # the band's floor: random orders that happen to agree do not make every difference count
_STANDINGS = ("better", "like random", "worse")


@dataclass(frozen=True)
class ArenaSettings:
    """How the arena scores each image; the defaults are what the CLI and the page use."""

    fractions: tuple[float, ...] = DEFAULT_FRACTIONS  # deletion / insertion steps, from 0 to 1
    road_percentiles: tuple[int, ...] = ARENA_ROAD_PERCENTILES  # ROAD thresholds, each in (0, 100)
    random_orders: int = 4  # random patch orders and random maps per image (at least 2: a spread)
    sanity: bool = True  # run the cascading-randomisation check
    seed: int = 0  # first seed of the random orders, and the seed of the randomised weights
    view: ViewMode = "crop"  # what the model sees of each image

    def __post_init__(self) -> None:
        if self.random_orders < 2:
            raise ValueError(
                f"the arena needs at least 2 random orders for a spread, got {self.random_orders}"
            )

    def to_json(self) -> dict[str, Any]:
        """Every setting but the view, as plain JSON types: a job records its view on its own (`JobSpec.view`)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "view"}

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> ArenaSettings:
        """The settings `to_json` wrote, on the default view: a job replaces it with the view it records."""
        settings = {name: payload[name] for name in cls.__dataclass_fields__ if name != "view"}
        for name in ("fractions", "road_percentiles"):
            settings[name] = tuple(settings[name])
        return cls(**settings)


@dataclass(frozen=True)
class ArenaImage:
    """One image of an arena: a name to show and how to decode it (only when its turn comes)."""

    name: str
    load: Callable[[], Image.Image] = field(compare=False)


@dataclass(frozen=True)
class MethodScores:
    """One method's scores on one image."""

    method: str  # registry name
    deletion: float  # area under the deletion curve
    insertion: float  # area under the insertion curve
    road: float  # (LeRF − MoRF) / 2
    sanity: float | None  # Spearman ρ at the randomisation checkpoint; None when undefined or not run
    map: np.ndarray  # (rows, cols) float32, the method's map of the image

    @property
    def sanity_failed(self) -> bool:
        return self.sanity is not None and abs(self.sanity) > UNFAITHFUL_RANK_CORRELATION


@dataclass(frozen=True)
class ImageScores:
    """Every method's scores on one image, with the random orders' scores beside them."""

    image: str
    target_index: int
    target_label: str
    methods: tuple[MethodScores, ...]
    random_deletion: tuple[float, ...]  # (random_orders,) deletion areas of random patch orders
    random_insertion: tuple[float, ...]
    random_road: tuple[float, ...]  # ROAD scores of random maps
    sanity_run: bool

    def random_scores(self, measure: str) -> np.ndarray:
        return np.asarray(getattr(self, f"random_{measure}"), dtype=np.float64)

    def gain(self, scores: MethodScores, measure: str) -> float:
        """How much better than random order's mean the method scores (positive: better)."""
        difference = getattr(scores, measure) - float(self.random_scores(measure).mean())
        return -difference if measure == "deletion" else difference

    def band(self, measure: str) -> float:
        """The spread of random order: `BAND_SDS` sample standard deviations, at least `MIN_BAND`."""
        return max(BAND_SDS * float(self.random_scores(measure).std(ddof=1)), MIN_BAND)


@dataclass(frozen=True)
class Spread:
    """Median and quartiles of one number over images."""

    median: float
    low: float  # first quartile
    high: float  # third quartile
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        array = np.asarray(values, dtype=np.float64)
        low, median, high = np.percentile(array, [25, 50, 75])
        return cls(float(median), float(low), float(high), int(array.size))

    def text(self, digits: int = 3) -> str:
        if self.count == 1:
            return f"{self.median:.{digits}f}"
        return f"{self.median:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class ArenaRow:
    """One method over every image: its scores, where they stand against random order, its rank."""

    method: str
    title: str
    scores: dict[str, Spread]  # measure → spread of the method's score over images
    gains: dict[str, float]  # measure → median gain over random order
    bands: dict[str, float]  # measure → median band of random order
    sanity: Spread | None  # of Spearman ρ at the checkpoint; None when never defined or not run
    rank: int
    maps: tuple[np.ndarray, ...]  # the method's map of each image, in image order

    def standing(self, measure: str) -> str:
        """ "better", "like random" or "worse" than random order on this measure."""
        gain, band = self.gains[measure], self.bands[measure]
        return "better" if gain > band else "worse" if gain < -band else "like random"

    @property
    def sanity_failed(self) -> bool:
        return self.sanity is not None and abs(self.sanity.median) > UNFAITHFUL_RANK_CORRELATION

    @property
    def holds_up(self) -> bool:
        return not self.sanity_failed and all(self.standing(measure) == "better" for measure in MEASURES)


@dataclass(frozen=True)
class ArenaTable:
    """The ranked table over a set of images (one image is a set of one)."""

    model: str
    trained: bool
    images: tuple[str, ...]
    targets: tuple[str, ...]  # the class explained on each image, "label (index)"
    rows: tuple[ArenaRow, ...]  # best first
    random: dict[str, Spread]  # measure → spread of random order's mean score over images
    sanity_run: bool

    def verdict(self) -> str:
        """One sentence of what the numbers say; each clause only where the numbers bear it out."""
        where = "On this image" if len(self.images) == 1 else f"Over these {len(self.images)} images"
        best = [row.title for row in self.rows if row.holds_up][:2]
        clauses = []
        if best:
            clauses.append(f"{_listed(best)} {'hold' if len(best) > 1 else 'holds'} up best")
        else:
            clauses.append("no method beats random order on all three scores")
        for standing, words in (("like random", "like random order"), ("worse", "worse than random order")):
            named = [row.title for row in self.rows if all(row.standing(m) == standing for m in MEASURES)]
            if named:
                clauses.append(f"{_listed(named)} {'score' if len(named) > 1 else 'scores'} {words}")
        failed = [row.title for row in self.rows if row.sanity_failed]
        if failed:
            clauses.append(f"{_listed(failed)} {'fail' if len(failed) > 1 else 'fails'} the sanity check")
        if not self.sanity_run:
            clauses.append("the sanity check was not run")
        return f"{where}, {'; '.join(clauses)}."

    def to_json(self) -> dict[str, Any]:
        """`{"model", "images", "verdict", "random", "methods": [{"method", "deletion", "insertion",
        "road", "sanity", "rank", …}]}`: medians over the images, quartiles under "spread"."""
        return {
            "model": self.model,
            "trained": self.trained,
            "images": list(self.images),
            "targets": list(self.targets),
            "verdict": self.verdict(),
            "random": {measure: spread.median for measure, spread in self.random.items()},
            "methods": [
                {
                    "method": row.method,
                    "title": row.title,
                    **{measure: row.scores[measure].median for measure in MEASURES},
                    "sanity": None if row.sanity is None else row.sanity.median,
                    "rank": row.rank,
                    "sanity_passed": None if not self.sanity_run else not row.sanity_failed,
                    "against_random": {measure: row.standing(measure) for measure in MEASURES},
                    "gain": dict(row.gains),
                    "band": dict(row.bands),
                    "spread": {
                        measure: [row.scores[measure].low, row.scores[measure].high] for measure in MEASURES
                    },
                }
                for row in self.rows
            ],
        }

    def table_rows(self) -> list[dict[str, Any]]:
        """One readable row per method, best first (medians [quartiles] over several images)."""
        rows = []
        for row in self.rows:
            shown: dict[str, Any] = {"rank": row.rank, "method": row.title}
            for measure, arrow in zip(MEASURES, ("↓", "↑", "↑"), strict=True):
                shown[f"{measure} {arrow}"] = row.scores[measure].text()
                shown[f"{measure} vs random"] = row.standing(measure)
            shown["sanity ρ"] = (
                "not run" if not self.sanity_run else "—" if row.sanity is None else row.sanity.text()
            )
            shown["sanity"] = "not run" if not self.sanity_run else "fails" if row.sanity_failed else "passes"
            rows.append(shown)
        return rows

    def text(self) -> str:
        """The table as fixed-width text, the random orders and the verdict: what the CLI prints."""
        rows = self.table_rows()
        columns = list(rows[0]) if rows else ["rank", "method"]
        widths = {column: max(len(column), *(len(str(row[column])) for row in rows)) for column in columns}
        lines = ["  ".join(column.ljust(widths[column]) for column in columns)]
        lines += ["  ".join(str(row[column]).ljust(widths[column]) for column in columns) for row in rows]
        randoms = ", ".join(f"{measure} {spread.text()}" for measure, spread in self.random.items())
        lines.append(f"random order: {randoms}")
        lines.append(self.verdict())
        return "\n".join(lines)


def _listed(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def arena_methods(loaded: LoadedModel, slow: bool = False) -> list[str]:
    """Every registry method that fits the model, in registry order; slow ones only when asked."""
    return [name for name in available_methods(loaded.facts) if slow or not METHODS[name].slow]


def _plan_parts(loaded: LoadedModel, methods: Sequence[str], settings: ArenaSettings) -> list[list[PlanStep]]:
    """One image's plan in the parts `score_image` runs one call each: the random orders' curves and
    ROAD inputs, each method's map (computed once for both scores), each method's faithfulness
    curves, each method's ROAD, then with the sanity check per method its map at each randomised
    stage (its original map is the one already computed)."""
    sanity_maps = len(randomisation_stages(loaded.model))
    return [
        random_order_plan(settings.random_orders, settings.fractions, settings.road_percentiles),
        maps_plan(methods),
        faithfulness_plan(methods, settings.fractions, with_maps=False),
        road_plan(methods, settings.road_percentiles, with_maps=False),
        *([map_step(method)] * sanity_maps for method in methods if settings.sanity),
    ]


def arena_plan(loaded: LoadedModel, methods: Sequence[str], settings: ArenaSettings) -> list[PlanStep]:
    """The steps `score_image` reports for one image, in order (see `_plan_parts`)."""
    return [step for part in _plan_parts(loaded, methods, settings) for step in part]


def score_image(
    loaded: LoadedModel,
    image: Image.Image,
    name: str,
    methods: Sequence[str],
    settings: ArenaSettings = ArenaSettings(),
    progress: ProgressCallback | None = None,
) -> ImageScores:
    """Every method's scores on one image, each map explaining the model's top class.

    Args:
        loaded: a model with a classifier head; never modified.
        image: any RGB image.
        name: how tables name the image.
        methods: registry names; each must fit the model.
        settings: steps, random orders, sanity check, seed and view.
        progress: called with (steps done, steps in all), the steps of `arena_plan` (a slow map's
            masks move its step); a `JobProgress` is told the plan, so each kind is priced apart.

    Raises:
        NoClassifierError: the model has no classifier head (nothing to follow).
        MethodUnavailableError, ValueError: a method that does not fit, or bad settings.
    """
    if not methods:
        raise ValueError("the arena needs at least one method")
    # each part's progress, as the call that runs its steps reports it
    orders_moved, maps_moved, curves_moved, road_moved, *sanity_moved = declare_parts(
        progress, _plan_parts(loaded, methods, settings)
    )

    seen = image_view(image, loaded.facts, settings.view)
    target = probe_target(loaded, seen)
    seeds = [settings.seed + offset for offset in range(settings.random_orders)]
    common = {"class_index": target.index}
    baseline = random_order_scores(
        loaded,
        target,
        seeds,
        settings.fractions,
        settings.road_percentiles,
        progress=orders_moved,
    )
    maps = scored_maps(loaded, seen, methods, progress=maps_moved, **common)
    curves = faithfulness(
        loaded,
        seen,
        methods,
        fractions=settings.fractions,
        seed=settings.seed,
        progress=curves_moved,
        maps=maps,
        **common,
    )
    roads = road(
        loaded,
        seen,
        methods,
        percentiles=settings.road_percentiles,
        seed=settings.seed,
        progress=road_moved,
        maps=maps,
        **common,
    )
    scored = []
    for index, (method, curve, imputed) in enumerate(zip(methods, curves, roads, strict=True)):
        sanity: float | None = None
        values = maps[index].values
        if settings.sanity:
            check = cascading_randomisation(
                loaded,
                seen,
                method,
                seed=settings.seed,
                progress=sanity_moved[index],
                original=values,
                **common,
            )
            sanity = check.rank_correlation[check.checkpoint]
        scored.append(
            MethodScores(
                method=method,
                deletion=curve.deletion_auc,
                insertion=curve.insertion_auc,
                road=imputed.score,
                sanity=sanity,
                map=np.asarray(values, dtype=np.float32),
            )
        )
    return ImageScores(
        image=name,
        target_index=target.index,
        target_label=target.label,
        methods=tuple(scored),
        random_deletion=tuple(float(value) for value in baseline.deletion),
        random_insertion=tuple(float(value) for value in baseline.insertion),
        random_road=tuple(float(value) for value in baseline.road),
        sanity_run=settings.sanity,
    )


def arena_table(model: str, trained: bool, scores: Sequence[ImageScores]) -> ArenaTable:
    """Every method's scores over the images, aggregated and ranked (see the module's docstring).

    Raises:
        ValueError: no images, or images scored with different methods.
    """
    if not scores:
        raise ValueError("the arena scored no image")
    methods = [item.method for item in scores[0].methods]
    if any([item.method for item in image.methods] != methods for image in scores):
        raise ValueError("every image of an arena must be scored with the same methods")
    rows = []
    for position, method in enumerate(methods):
        per_image = [image.methods[position] for image in scores]
        correlations = [item.sanity for item in per_image if item.sanity is not None]
        rows.append(
            ArenaRow(
                method=method,
                title=method_title(method),
                scores={
                    measure: Spread.of([getattr(item, measure) for item in per_image]) for measure in MEASURES
                },
                gains={
                    measure: float(
                        np.median(
                            [image.gain(item, measure) for image, item in zip(scores, per_image, strict=True)]
                        )
                    )
                    for measure in MEASURES
                },
                bands={
                    measure: float(np.median([image.band(measure) for image in scores]))
                    for measure in MEASURES
                },
                sanity=Spread.of(correlations) if correlations else None,
                rank=0,
                maps=tuple(item.map for item in per_image),
            )
        )
    # Mean rank by gain over the measures (rankdata: 1 = largest gain after negating), sanity first.
    by_measure = np.stack([rankdata([-row.gains[measure] for row in rows]) for measure in MEASURES])
    mean_rank = by_measure.mean(axis=0)
    order = sorted(range(len(rows)), key=lambda index: (rows[index].sanity_failed, mean_rank[index], index))
    ranked = tuple(replace(rows[index], rank=place) for place, index in enumerate(order, start=1))
    return ArenaTable(
        model=model,
        trained=trained,
        images=tuple(image.image for image in scores),
        targets=tuple(f"{image.target_label} ({image.target_index})" for image in scores),
        rows=ranked,
        random={
            measure: Spread.of([float(image.random_scores(measure).mean()) for image in scores])
            for measure in MEASURES
        },
        sanity_run=all(image.sanity_run for image in scores),
    )


def run_arena(
    loaded: LoadedModel,
    images: Sequence[ArenaImage],
    methods: Sequence[str] | None = None,
    settings: ArenaSettings = ArenaSettings(),
    context: DistributedContext = SINGLE_PROCESS,
    progress: ProgressCallback | None = None,
) -> ArenaTable:
    """The arena over a set of images; under torchrun each process scores its share and all merge.

    Args:
        loaded: a model with a classifier head; never modified.
        images: the images, each decoded when its turn comes.
        methods: registry names (default: `arena_methods(loaded)`, the fast ones).
        settings: see `ArenaSettings`.
        context: this process's place among torchrun's (default: alone).
        progress: called with (steps done, steps in all) of this process's share: each image's
            `arena_plan`; a `JobProgress` is told the whole plan.

    Returns:
        The table, the same on every process.
    """
    if not images:
        raise ValueError("the arena needs at least one image")
    chosen = list(methods) if methods is not None else arena_methods(loaded)
    mine = context.shard(list(range(len(images))))
    plan = arena_plan(loaded, chosen, settings)
    per_image = declare_parts(progress, [plan] * len(mine))
    if progress is not None:  # the steps are known before the first ends
        progress(0, plan_units(plan) * len(mine))
    local: list[tuple[int, ImageScores]] = []
    for step, index in zip(per_image, mine, strict=True):
        image = images[index]
        try:
            picture = image.load()
        except ValueError as error:  # ImageDecodeError, DataError: say which of many images it was
            if image.name in str(error):
                raise
            raise type(error)(f"{image.name}: {error}") from error
        local.append((index, score_image(loaded, picture, image.name, chosen, settings, step)))
    merged = sorted(
        (pair for share in context.gather_objects(local) for pair in share), key=lambda pair: pair[0]
    )
    return arena_table(loaded.facts.name, loaded.trained, [scores for _, scores in merged])


# ---- image sets: every source goes through the project's safe loaders ------------------------------


def builtin_photo_images() -> list[ArenaImage]:
    """The photos shipped in scikit-image and scikit-learn (see `vitviz.images.BUILTIN_PHOTOS`)."""
    from vitviz.images import BUILTIN_PHOTOS, builtin_photo

    return [ArenaImage(name, lambda name=name: builtin_photo(name)) for name in BUILTIN_PHOTOS]


def image_set_images(image_set: Any, keys: Sequence[str] | None = None) -> list[ArenaImage]:
    """The images of a `vitviz.finetune.data.ImageSet` (all, or those named by `keys`, in that order)."""
    items = image_set.items if keys is None else [image_set.item(key) for key in keys]
    return [ArenaImage(item.key, item.load) for item in items]


def run_held_out_images(run_folder: str | Path) -> list[ArenaImage]:
    """A fine-tuned run's validation images, opened again from its own record of its data.

    Raises:
        RunError, DataError: the run's record or its images cannot be read.
    """
    from vitviz.finetune.worker import run_image_set  # deferred: the worker pulls in the trainer
    from vitviz.runs import read_val_predictions

    keys = [row["key"] for row in read_val_predictions(run_folder)]
    return image_set_images(run_image_set(run_folder), keys)


def folder_images(
    folder: str | Path,
    *,
    shown_as: str | None = None,
    inside: Path | None = None,
    max_images: int | None = None,
) -> list[ArenaImage]:
    """The image files under a folder (any layout), sorted by path; other files are left out.

    Args:
        folder: the folder.
        shown_as: how image names start (default: the folder as given); a served app names it
            relative to its data root.
        inside: when given, files that link outside this folder are left out.
        max_images: keep the first this many.

    Raises:
        DataError: not a folder, or no image in it.
    """
    from vitviz.finetune.data import DataError, walk_folder
    from vitviz.finetune.safezip import is_image_name
    from vitviz.images import load_image_file

    shown = str(folder) if shown_as is None else shown_as
    path, relative, _ = walk_folder(folder, shown, inside)
    names = sorted(name for name in relative if is_image_name(name))[:max_images]
    if not names:
        raise DataError(f"{shown} holds no image files (PNG, JPEG, WebP, GIF, BMP or TIFF).")
    return [ArenaImage(name, lambda name=name: load_image_file(path / name, shown_as=name)) for name in names]


def zip_images(source: bytes | str | Path, max_images: int | None = None) -> list[ArenaImage]:
    """The images of an archive, checked whole and held in memory (nothing is written to disk).

    Raises:
        UnsafeArchiveError: the archive was refused (see `vitviz.finetune.safezip`).
        DataError: it holds no image.
    """
    from vitviz.finetune.data import DataError
    from vitviz.finetune.safezip import inspect_image_zip
    from vitviz.images import decode_image

    contents = inspect_image_zip(source, keep=lambda images, _skipped: sorted(images)[:max_images])
    if not contents.kept:
        raise DataError("the archive holds no images (PNG, JPEG, WebP, GIF, BMP or TIFF).")
    return [
        ArenaImage(name, lambda data=data: decode_image(data)) for name, data in sorted(contents.kept.items())
    ]
