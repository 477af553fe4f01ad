"""Few-shot linear evaluation as in the ViT paper (§4.1): a regularised least-squares map from frozen
features of k images per class to {−1, 1}^K targets, solved in closed form, scored on held-out images.

`few_shot_comparison` runs it for the bundled ViT and CNN on the same images, split and shot draws,
so the table is the paper's Fig. 4-style comparison on real offline data.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from vitviz.finetune.data import DataError, ImageSet, Split, limit_images, split_train_val
from vitviz.models import LoadedModel

__all__ = [
    "DEFAULT_DRAWS",
    "DEFAULT_SHOTS",
    "RIDGE_STRENGTHS",
    "FewShotCell",
    "FewShotTable",
    "draw_shots",
    "few_shot_comparison",
    "few_shot_table",
    "parse_shots",
    "planned_few_shot",
    "ridge_few_shot",
]

DEFAULT_SHOTS: tuple[int, ...] = (1, 5, 10, 25)
DEFAULT_DRAWS = 5  # random draws of the shots per count; the table gives their mean and range
# Ridge strengths, as multiples of the shots' mean squared (centred) feature norm, so one grid fits
# features of any scale. The one used is chosen by leave-one-out on the shots themselves.
RIDGE_STRENGTHS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def parse_shots(text: str) -> tuple[int, ...]:
    """ "1,5,10,25" → (1, 5, 10, 25), sorted and without repeats.

    Raises:
        ValueError: anything but positive whole numbers separated by commas.
    """
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        shots = sorted({int(part) for part in parts})
    except ValueError:
        raise ValueError(
            f"shots must be whole numbers separated by commas, like 1,5,10,25; got {text!r}"
        ) from None
    if not shots or shots[0] < 1:
        raise ValueError(f"shots must be at least 1 image per class; got {text!r}")
    return tuple(shots)


@dataclass(frozen=True)
class RidgeFit:
    """A closed-form few-shot fit and how it did on the held-out images."""

    accuracy: float  # share of held-out images whose largest output is their class
    strength: float  # the chosen entry of RIDGE_STRENGTHS


def ridge_few_shot(
    shot_features: torch.Tensor,
    shot_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    strengths: Sequence[float] = RIDGE_STRENGTHS,
) -> RidgeFit:
    """Fits W minimising ‖(X − μ)W + b − Y‖² + λ‖W‖² with Y in {−1, 1}^K, and scores argmax on the test rows.

    Solved through the m×m kernel of the m shots (m ≪ D): W = (X − μ)ᵀ(K + λI)⁻¹(Y − Ȳ), b = Ȳ, with
    K = (X − μ)(X − μ)ᵀ eigendecomposed once for every λ. λ is chosen by leave-one-out on the shots
    (closed form through the hat matrix: exact for the ridge on features centred on all shots): most
    shots right first, then the lower squared error.

    Args:
        shot_features: (m, D) features of the shots; shot_labels (m,) their classes.
        test_features: (t, D); test_labels (t,).
    """
    x = shot_features.double()
    mean = x.mean(dim=0, keepdim=True)
    x = x - mean
    targets = 2.0 * torch.nn.functional.one_hot(shot_labels, num_classes).double() - 1.0  # (m, K)
    offset = targets.mean(dim=0, keepdim=True)
    centred_targets = targets - offset
    kernel = x @ x.T  # (m, m)
    eigenvalues, eigenvectors = torch.linalg.eigh(kernel)
    eigenvalues = eigenvalues.clamp_min(0.0)
    scale = float(kernel.diagonal().mean()) or 1.0
    rotated = eigenvectors.T @ centred_targets  # (m, K)
    best: tuple[tuple[int, float], float] | None = None
    for strength in strengths:
        shrink = eigenvalues / (eigenvalues + strength * scale)  # (m,)
        fitted = eigenvectors @ (shrink[:, None] * rotated)  # (m, K)
        # The hat matrix's diagonal, the unpenalised offset's 1/m included.
        leverage = (1.0 / len(x) + (eigenvectors.square() * shrink).sum(dim=1)).clamp_max(1.0 - 1e-9)  # (m,)
        left_out = centred_targets - (centred_targets - fitted) / (1.0 - leverage)[:, None]
        right = int((left_out.argmax(dim=1) == shot_labels).sum())
        error = float((left_out - centred_targets).square().sum())
        score = (right, -error)
        if best is None or score > best[0]:
            best = (score, strength)
    assert best is not None, "no ridge strength to try"
    strength = best[1]
    coefficients = eigenvectors @ (rotated / (eigenvalues + strength * scale)[:, None])  # (m, K)
    outputs = (test_features.double() - mean) @ (x.T @ coefficients) + offset  # (t, K)
    accuracy = float((outputs.argmax(dim=1) == test_labels).double().mean())
    return RidgeFit(accuracy, strength)


def draw_shots(labels: Sequence[int], shots: int, seed: int) -> list[int]:
    """Positions of `shots` images of every class in `labels`, drawn by `seed`.

    Raises:
        DataError: a class has fewer than `shots` images.
    """
    rng = random.Random(seed)
    chosen: list[int] = []
    for label in sorted(set(labels)):
        positions = [position for position, value in enumerate(labels) if value == label]
        if len(positions) < shots:
            raise DataError(
                f"{shots} shots need {shots} training images of every class; one class has {len(positions)}."
            )
        chosen.extend(rng.sample(positions, shots))
    return sorted(chosen)


@dataclass(frozen=True)
class FewShotCell:
    """One model at one shot count, over every draw."""

    shots: int
    accuracies: tuple[float, ...]  # one per draw
    strengths: tuple[float, ...]  # the ridge strength leave-one-out chose in each draw

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def low(self) -> float:
        return min(self.accuracies)

    @property
    def high(self) -> float:
        return max(self.accuracies)


@dataclass(frozen=True)
class FewShotTable:
    """Accuracy against shots for several models on the same images, split and draws."""

    data: str  # the data set as the user named it
    classes: tuple[str, ...]
    test_images: int  # held-out images every cell is scored on
    draws: int
    cells: dict[str, tuple[FewShotCell, ...]]  # model name → one cell per shot count, in shot order
    feature_seconds: dict[str, float]  # model name → seconds its backbone pass took
    fit_seconds: float  # every closed-form fit of the table together

    @property
    def shots(self) -> tuple[int, ...]:
        first = next(iter(self.cells.values()))
        return tuple(cell.shots for cell in first)

    def as_dict(self) -> dict[str, object]:
        return {
            "data": self.data,
            "classes": list(self.classes),
            "test_images": self.test_images,
            "draws": self.draws,
            "shots": list(self.shots),
            "models": {
                name: [
                    {"shots": c.shots, "mean": c.mean, "low": c.low, "high": c.high, "accuracies": list(c.accuracies),
                     "ridge_strengths": list(c.strengths)}
                    for c in cells
                ]
                for name, cells in self.cells.items()
            },
            "feature_seconds": self.feature_seconds,
            "fit_seconds": self.fit_seconds,
        }  # fmt: skip

    def markdown(self) -> str:
        """The table as Markdown: one row per shot count, one column per model (mean, range over draws)."""
        names = list(self.cells)
        lines = [
            "| shots per class | " + " | ".join(names) + " |",
            "|---:|" + "---|" * len(names),
        ]
        for row, shots in enumerate(self.shots):
            values = [
                f"{self.cells[name][row].mean:.3f} ({self.cells[name][row].low:.3f}–{self.cells[name][row].high:.3f})"
                for name in names
            ]
            lines.append(f"| {shots} | " + " | ".join(values) + " |")
        return "\n".join(lines)


def few_shot_table(
    data: str,
    classes: Sequence[str],
    features: dict[str, torch.Tensor],
    labels: torch.Tensor,
    split: Split,
    shots: Sequence[int],
    *,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    feature_seconds: dict[str, float] | None = None,
) -> FewShotTable:
    """Accuracy against shots for every model's features of the same images.

    Args:
        features: model name → (n, D) features of images 0..n−1; labels (n,) their classes.
        split: which of those images the shots are drawn from (train) and scored on (val).
        draws: shot draws per count; draw d of count k uses the same images for every model.
    """
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    from vitviz.finetune.trainer import one_cpu_thread  # deferred: the trainer imports torch's training stack

    # Small dense algebra: on a busy CPU a second thread mostly waits for the first (measured: 25 s
    # for the 40 fits of a 600-digit table with two threads at load ~20).
    started = time.perf_counter()
    with one_cpu_thread():
        cells = {
            name: _few_shot_row(rows, labels, split, shots, draws, seed, len(classes))
            for name, rows in features.items()
        }
    return FewShotTable(
        data=data,
        classes=tuple(classes),
        test_images=len(split.val),
        draws=draws,
        cells=cells,
        feature_seconds=dict(feature_seconds or {}),
        fit_seconds=time.perf_counter() - started,
    )


def _few_shot_row(
    rows: torch.Tensor,
    labels: torch.Tensor,
    split: Split,
    shots: Sequence[int],
    draws: int,
    seed: int,
    num_classes: int,
) -> tuple[FewShotCell, ...]:
    """One model's cells: for each shot count, `draws` ridge fits on the same draws every model gets."""
    train = torch.tensor(split.train, dtype=torch.long)
    val = torch.tensor(split.val, dtype=torch.long)
    train_labels = labels[train].tolist()
    cells = []
    for k in shots:
        chosen_draws = [draw_shots(train_labels, k, seed * 1_000_003 + 7919 * k + d) for d in range(draws)]
        fits = [
            ridge_few_shot(rows[train[chosen]], labels[train[chosen]], rows[val], labels[val], num_classes)
            for chosen in chosen_draws
        ]
        cells.append(FewShotCell(k, tuple(fit.accuracy for fit in fits), tuple(fit.strength for fit in fits)))
    return tuple(cells)


def planned_few_shot(
    image_set: ImageSet,
    shots: Sequence[int],
    *,
    max_images: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[ImageSet, Split]:
    """The images a few-shot table uses and their split (as a fine-tune makes them), checked before
    any model runs.

    Raises:
        DataError: too few images, or fewer training images in some class than the largest shot count.
    """
    image_set = limit_images(image_set, max_images, seed)
    split = split_train_val(image_set.labels, val_fraction, seed)
    counts = dict.fromkeys(range(len(image_set.classes)), 0)
    for index in split.train:
        counts[image_set.items[index].label] += 1
    short = min(counts, key=lambda label: counts[label])
    if max(shots) > counts[short]:
        raise DataError(
            f"{max(shots)} shots per class need {max(shots)} training images of every class, but class "
            f"{image_set.classes[short]!r} has {counts[short]} (use fewer shots, more images or a smaller "
            "validation share)."
        )
    return image_set, split


def few_shot_comparison(
    data: str,
    image_set: ImageSet,
    models: dict[str, LoadedModel],
    shots: Sequence[int] = DEFAULT_SHOTS,
    *,
    draws: int = DEFAULT_DRAWS,
    max_images: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    batch_size: int = 32,
    on_progress: Callable[[str, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FewShotTable | None:
    """Features of the same images through every model, then the few-shot table; None when stopped.

    Args:
        data: the data set's name, for the table.
        image_set: its images; max_images and the train/val split are applied here, as a fine-tune does.
        models: name → vitviz.models.LoadedModel (used as they are, never changed).
        on_progress: called with a message and the fraction of the features done.

    Raises:
        DataError: too few images, or too few training images of some class for the largest shot count.
    """
    from vitviz.finetune.trainer import image_features  # deferred: the trainer imports torch's training stack

    image_set, split = planned_few_shot(
        image_set, shots, max_images=max_images, val_fraction=val_fraction, seed=seed
    )
    indices = list(range(len(image_set.items)))
    labels = torch.tensor(image_set.labels, dtype=torch.long)
    total = len(indices) * len(models)
    done = 0
    features: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    for name, loaded in models.items():
        started = time.perf_counter()

        def counted(count: int, name: str = name) -> None:
            nonlocal done
            done += count
            if on_progress is not None:
                on_progress(f"features of {name}: {done}/{total}", done / total)

        rows = image_features(
            loaded.model, loaded.facts, image_set, indices, batch_size=batch_size, on_count=counted,
            should_stop=should_stop,
        )  # fmt: skip
        if rows is None:
            return None
        features[name] = rows.cpu()
        seconds[name] = time.perf_counter() - started
    return few_shot_table(
        data,
        image_set.classes,
        features,
        labels,
        split,
        shots,
        draws=draws,
        seed=seed,
        feature_seconds=seconds,
    )
