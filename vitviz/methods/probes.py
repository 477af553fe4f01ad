"""Robustness probes: the target-class probability as patches are dropped, shuffled or occluded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from vitviz.methods import default_method, explain_pixels
from vitviz.models import Family, LoadedModel, no_token_grid_reason
from vitviz.predict import NoClassifierError, followed_class
from vitviz.preprocess import ImageView
from vitviz.progress import PlannedSteps, PlanStep, ProgressCallback, declare_parts, report

__all__ = [
    "CNN_PATCH_PX",
    "DEFAULT_FRACTIONS",
    "DROP_ALL_ORDERS",
    "DROP_ORDERS",
    "PROBE_KINDS",
    "ProbeCurve",
    "ProbeGrid",
    "ProbeKind",
    "ProbeTarget",
    "area_under_curve",
    "drop_mask",
    "occlude_region",
    "probe_curves",
    "probe_grid",
    "probe_target",
    "resample_to_grid",
    "run_drop_orders",
    "run_probe",
    "salience_on_grid",
    "salience_order",
    "shuffle_patches",
    "target_probabilities",
]

ProbeKind = Literal["drop-salient", "drop-least-salient", "drop-random", "shuffle", "occlude"]
PROBE_KINDS: tuple[str, ...] = ("drop-salient", "drop-least-salient", "drop-random", "shuffle", "occlude")
# The three orders a drop probe can take: a salience map is worth reading only against the random
# order (its baseline) and the least-salient-first order (its opposite).
DROP_ORDERS: tuple[str, ...] = ("drop-salient", "drop-least-salient", "drop-random")
DROP_ALL_ORDERS = "drop"  # `probe_curves`' name for the drop probe in all of DROP_ORDERS
_MAP_IMAGES = 2  # what a salience map counts as in a probe's progress: about a forward and a backward
# A map's two units guessed at 1.5 forwards each (a backward costs about two forwards): the guess
# prices images only until the first batch of them has been timed.
_MAP_STEP = PlanStep("map", _MAP_IMAGES, 1.5)
DEFAULT_FRACTIONS: tuple[float, ...] = tuple(round(step / 10, 1) for step in range(11))  # 0.0 … 1.0
# CNNs have no tokens: they are probed on 16-px patches, the ViT-B/16 grid the probes were made for.
CNN_PATCH_PX = 16
_BATCH = 16  # perturbed copies per forward


@dataclass(frozen=True)
class ProbeGrid:
    """The patches a probe drops or shuffles: the token grid, or 16-px patches for a CNN."""

    grid_size: tuple[int, int]  # (rows, cols)
    cell_px: tuple[int, int]  # (height, width) of one patch; pixels past the last whole patch stay

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]


@dataclass(frozen=True)
class ProbeTarget:
    """The prediction input of one image and the class whose probability a probe follows."""

    pixels: torch.Tensor  # (1, 3, H, W) timm eval transform of the image
    index: int  # class followed
    label: str
    clean_probability: float  # its probability on the unmodified input


@dataclass(frozen=True)
class ProbeCurve:
    """The target-class probability at each perturbed fraction, for one model and one probe."""

    model: str  # timm name
    family: Family
    trained: bool  # False for random (untrained) weights
    kind: str  # one of PROBE_KINDS
    method: str | None  # salience method of drop-salient / drop-least-salient, else None
    target_index: int
    target_label: str
    fractions: np.ndarray  # (F,) fraction of patches (or of the area, for occlude); first is 0
    target_probability: np.ndarray  # (F,)
    removed_tokens: bool  # dropped patches were taken out of the token sequence, not greyed
    grid_size: tuple[int, int]  # (rows, cols) of the probed patches

    @property
    def area(self) -> float:
        """Area under the curve over the fraction (trapezoid)."""
        return area_under_curve(self.fractions, self.target_probability)

    def to_json(self) -> dict[str, Any]:
        """`{"target_index", "fractions", "target_probability"}`, as the CLI prints it."""
        return {
            "target_index": self.target_index,
            "fractions": [float(value) for value in self.fractions],
            "target_probability": [float(value) for value in self.target_probability],
        }


def area_under_curve(fractions: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray) -> float:
    """Trapezoid area of `values` over `fractions`."""
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def probe_grid(loaded: LoadedModel) -> ProbeGrid:
    """The model's own token grid for ViTs and hybrids; 16-px patches for CNNs."""
    facts = loaded.facts
    if facts.grid_size is not None and facts.stride_px is not None:
        return ProbeGrid(facts.grid_size, facts.stride_px)
    height, width = facts.input_size
    cell = CNN_PATCH_PX
    return ProbeGrid((max(1, height // cell), max(1, width // cell)), (cell, cell))


def probe_target(loaded: LoadedModel, view: ImageView, class_index: int | None = None) -> ProbeTarget:
    """The prediction input of the view and the class to follow: the top class by default.

    Args:
        view: the image's view (`vitviz.preprocess.image_view`), as `predict` takes it.

    Raises:
        NoClassifierError: the model has no classifier head, so there is no probability to follow.
    """
    facts = loaded.facts
    if not facts.has_classifier:
        raise NoClassifierError(
            f"{facts.name} has no classifier head, so it has no class probability to probe."
        )
    pixels, probabilities, class_index = followed_class(loaded, view, class_index)
    label = loaded.labels[class_index] if loaded.labels else f"class {class_index}"
    return ProbeTarget(pixels, class_index, label, float(probabilities[class_index]))


def resample_to_grid(values: np.ndarray, input_size: tuple[int, int], grid: ProbeGrid) -> np.ndarray:
    """A map over any grid of the input, averaged onto the probe's patches.

    A map already on the probe's grid is returned as it is; any other is upsampled bilinearly to
    pixels and averaged over each patch.

    Args:
        values: (r, c) map covering the whole input.
        input_size: (H, W) of the input the map covers.
        grid: the probe's patches.

    Returns:
        (rows, cols) float64.
    """
    if tuple(values.shape) == grid.grid_size and all(
        size == cells * cell
        for size, cells, cell in zip(input_size, grid.grid_size, grid.cell_px, strict=True)
    ):
        return values.astype(np.float64)
    per_pixel = F.interpolate(
        torch.from_numpy(values.astype(np.float32))[None, None], size=input_size, mode="bilinear"
    )[0, 0]
    rows, cols = grid.grid_size
    cell_h, cell_w = grid.cell_px
    covered = per_pixel[: rows * cell_h, : cols * cell_w].reshape(rows, cell_h, cols, cell_w)
    return covered.mean(dim=(1, 3)).double().numpy()


def salience_on_grid(
    loaded: LoadedModel, target: ProbeTarget, grid: ProbeGrid, method: str, **options: Any
) -> np.ndarray:
    """A method's map of the prediction input for the target class, on the probe's patches.

    Returns:
        (rows, cols) salience.
    """
    result = explain_pixels(loaded, target.pixels, method, [target.index], **options)[0]
    return resample_to_grid(result.values, result.input_size, grid)


def salience_order(
    salience: np.ndarray | None, kind: str, seed: int = 0, size: int | None = None
) -> np.ndarray:
    """The order in which patches are dropped, as flat patch indices.

    Args:
        salience: (rows, cols) map, needed for drop-salient and drop-least-salient.
        kind: "drop-salient" (most salient first), "drop-least-salient" or "drop-random".
        seed: seed of the random order.
        size: number of patches, when no salience is given.

    Returns:
        (patches,) permutation; ties keep the grid's reading order.
    """
    if kind == "drop-random":
        count = size if size is not None else int(np.asarray(salience).size)
        return np.random.default_rng(seed).permutation(count)
    assert salience is not None, f"{kind} needs a salience map"
    flat = np.asarray(salience, dtype=np.float64).ravel()
    if kind == "drop-salient":
        return np.argsort(-flat, kind="stable")
    if kind == "drop-least-salient":
        return np.argsort(flat, kind="stable")
    raise ValueError(f"unknown drop order {kind!r}")


def drop_mask(patches: np.ndarray, grid: ProbeGrid, input_size: tuple[int, int]) -> torch.Tensor:
    """A pixel mask that is True over the given patches.

    Args:
        patches: flat patch indices.
        grid: the probe's patches.
        input_size: (H, W).

    Returns:
        (H, W) bool.
    """
    rows, cols = grid.grid_size
    cell_h, cell_w = grid.cell_px
    on_grid = torch.zeros(rows * cols, dtype=torch.bool)
    on_grid[torch.as_tensor(np.asarray(patches, dtype=np.int64))] = True
    cells = on_grid.reshape(rows, cols).repeat_interleave(cell_h, 0).repeat_interleave(cell_w, 1)
    mask = torch.zeros(input_size, dtype=torch.bool)
    mask[: rows * cell_h, : cols * cell_w] = cells
    return mask


def shuffle_patches(pixels: torch.Tensor, patches: np.ndarray, grid: ProbeGrid) -> torch.Tensor:
    """Moves the content of each listed patch to the next listed patch's place (the last to the first).

    Args:
        pixels: (3, H, W).
        patches: flat patch indices to shuffle among themselves; fewer than two change nothing.
        grid: the probe's patches.

    Returns:
        (3, H, W) copy.
    """
    rows, cols = grid.grid_size
    cell_h, cell_w = grid.cell_px
    channels = pixels.shape[0]
    shuffled = pixels.clone()
    if len(patches) < 2:
        return shuffled
    covered = pixels[:, : rows * cell_h, : cols * cell_w]
    tiles = covered.reshape(channels, rows, cell_h, cols, cell_w).permute(1, 3, 0, 2, 4)
    tiles = tiles.reshape(rows * cols, channels, cell_h, cell_w).clone()
    index = torch.as_tensor(np.asarray(patches, dtype=np.int64))
    tiles[index] = tiles[index.roll(1)]  # every chosen patch moves, none stays in place
    tiles = tiles.reshape(rows, cols, channels, cell_h, cell_w).permute(2, 0, 3, 1, 4)
    shuffled[:, : rows * cell_h, : cols * cell_w] = tiles.reshape(channels, rows * cell_h, cols * cell_w)
    return shuffled


def occlude_region(
    pixels: torch.Tensor, fraction: float, centre: tuple[float, float] = (0.5, 0.5)
) -> torch.Tensor:
    """Greys (zero in normalised space) a rectangle covering `fraction` of the image around `centre`.

    The rectangle has the image's aspect ratio and is moved inside the image when it would cross
    an edge, so its area is always the fraction asked for (to the pixel).

    Args:
        pixels: (3, H, W).
        fraction: area fraction in [0, 1].
        centre: (row, col) of the centre as fractions of the height and width.

    Returns:
        (3, H, W) copy.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    height, width = pixels.shape[-2:]
    box_h, box_w = round(height * fraction**0.5), round(width * fraction**0.5)
    top = min(max(round(centre[0] * height - box_h / 2), 0), height - box_h)
    left = min(max(round(centre[1] * width - box_w / 2), 0), width - box_w)
    occluded = pixels.clone()
    occluded[:, top : top + box_h, left : left + box_w] = 0.0
    return occluded


@torch.inference_mode()
def target_probabilities(loaded: LoadedModel, batch: torch.Tensor, target: int) -> np.ndarray:
    """The softmax probability of `target` for each input, in chunks.

    Args:
        batch: (F, 3, H, W) inputs.

    Returns:
        (F,) float64.
    """
    values = []
    for chunk in batch.split(_BATCH):
        logits = loaded.model(chunk.to(loaded.device))
        values.append(logits.float().softmax(dim=-1)[:, target].double().cpu())
        report(sum(len(part) for part in values), len(batch))  # a cancelled job stops here
    return torch.cat(values).numpy()


@torch.inference_mode()
def _probabilities_without_tokens(
    loaded: LoadedModel, pixels: torch.Tensor, dropped: list[np.ndarray], target: int
) -> np.ndarray:
    """The target probability when the dropped patch tokens are removed from the sequence.

    Runs timm's own steps of `forward_features` (patch embedding, position embedding with the
    prefix tokens, blocks, norm) and keeps only the prefix and the remaining patch tokens.
    """
    model = loaded.model
    prefix = loaded.facts.num_prefix_tokens
    tokens = model._pos_embed(model.patch_embed(pixels))  # (1, prefix + patches, D)
    values = []
    for patches in dropped:
        keep = np.setdiff1d(np.arange(tokens.shape[1] - prefix), patches) + prefix
        kept = torch.cat([torch.arange(prefix), torch.as_tensor(keep, dtype=torch.long)]).to(tokens.device)
        x = model.norm_pre(tokens[:, kept])
        x = model.norm(model.blocks(x))
        logits = model.forward_head(x)
        values.append(float(logits.float().softmax(dim=-1)[0, target]))
        report(len(values), len(dropped))
    return np.asarray(values, dtype=np.float64)


def _check_token_removal(loaded: LoadedModel, kind: str) -> None:
    model = loaded.model
    if loaded.facts.family not in ("vit", "hybrid"):
        raise ValueError(no_token_grid_reason(loaded.facts, "tokens to remove"))
    if not kind.startswith("drop-"):
        raise ValueError(f"only the drop probes can remove tokens, not {kind}")
    needed = ("patch_embed", "_pos_embed", "norm_pre", "blocks", "norm", "forward_head")
    if not all(hasattr(model, name) for name in needed):
        raise ValueError(f"removing tokens needs a timm VisionTransformer; {loaded.facts.name} is not one")


def run_probe(
    loaded: LoadedModel,
    view: ImageView,
    kind: str,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    method: str | None = None,
    class_index: int | None = None,
    remove_tokens: bool = False,
    seed: int = 0,
    centre: tuple[float, float] = (0.5, 0.5),
    progress: ProgressCallback | None = None,
    **method_options: Any,
) -> ProbeCurve:
    """Perturbs a growing fraction of the image and follows the target-class probability.

    Works on the prediction input (timm's eval transform). Dropped and occluded pixels are set to
    zero in normalised space, the dataset mean colour; with `remove_tokens` a ViT's dropped patch
    tokens are instead taken out of the sequence (at least one patch token always stays).

    Args:
        loaded: a model with a classifier head; never modified.
        view: the image's view probed (`vitviz.preprocess.image_view`), as `predict` takes it.
        kind: one of PROBE_KINDS. For "shuffle" a fraction is the share of patches moved; for
            "occlude" the share of the area greyed around `centre`.
        fractions: increasing fractions in [0, 1]; the first must be 0.
        method: salience method of the salient drops (default: Grad-CAM for CNNs, rollout for ViTs).
        class_index: class to follow (default: the top class on the clean input).
        remove_tokens: remove dropped tokens from a ViT's sequence instead of greying them.
        seed: seed of drop-random and shuffle.
        centre: (row, col) fractions of the occluded region's centre.
        progress: called with (images done, images in all): the salience map as two, then the
            perturbed inputs; an exception it raises (a cancel) stops the probe.
        method_options: options of the salience method.

    Returns:
        The curve; its first probability is the clean one `predict` reports for the same view.
    """
    if kind not in PROBE_KINDS:
        raise ValueError(f"unknown probe {kind!r}: use one of {', '.join(PROBE_KINDS)}")
    steps = np.asarray(list(fractions), dtype=np.float64)
    if steps.size == 0 or steps[0] != 0.0 or np.any(np.diff(steps) < 0) or steps[-1] > 1.0:
        raise ValueError("fractions must rise from 0 to at most 1")
    if remove_tokens:
        _check_token_removal(loaded, kind)
    facts = loaded.facts
    target = probe_target(loaded, view, class_index)
    grid = probe_grid(loaded)
    pixels = target.pixels[0].cpu()  # (3, H, W)
    input_size = (pixels.shape[1], pixels.shape[2])
    salient = kind in ("drop-salient", "drop-least-salient")
    method = (method or default_method(facts)) if salient else None
    order = np.arange(grid.num_patches)
    walk = PlannedSteps(progress, _probe_plan(steps.size))
    with walk.step("map"):
        if kind.startswith("drop-"):
            salience = salience_on_grid(loaded, target, grid, method, **method_options) if method else None
            order = salience_order(salience, kind, seed, size=grid.num_patches)
        elif kind == "shuffle":
            order = np.random.default_rng(seed).permutation(grid.num_patches)
    counts = [round(fraction * grid.num_patches) for fraction in steps]

    with walk.step("images"):
        if remove_tokens:
            dropped = [order[: min(count, grid.num_patches - 1)] for count in counts]
            probabilities = _probabilities_without_tokens(loaded, target.pixels, dropped, target.index)
        else:
            if kind == "occlude":
                perturbed = [occlude_region(pixels, float(fraction), centre) for fraction in steps]
            elif kind == "shuffle":
                perturbed = [shuffle_patches(pixels, order[:count], grid) for count in counts]
            else:
                perturbed = [pixels * ~drop_mask(order[:count], grid, input_size) for count in counts]
            probabilities = target_probabilities(loaded, torch.stack(perturbed), target.index)
    return ProbeCurve(
        model=facts.name,
        family=facts.family,
        trained=loaded.trained,
        kind=kind,
        method=method,
        target_index=target.index,
        target_label=target.label,
        fractions=steps,
        target_probability=probabilities,
        removed_tokens=remove_tokens,
        grid_size=grid.grid_size,
    )


def _probe_plan(points: int, orders: int = 1) -> list[PlanStep]:
    """A probe's steps: the map (two units), then each order's perturbed inputs (a unit, a forward, each)."""
    return [_MAP_STEP] + [PlanStep("images", points)] * orders


def run_drop_orders(
    loaded: LoadedModel,
    view: ImageView,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    method: str | None = None,
    class_index: int | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    **method_options: Any,
) -> list[ProbeCurve]:
    """The drop probe in all three orders: most salient first, least salient first, and random.

    The random order is the baseline that makes the salient curves readable: a map that knows
    where the evidence lies falls below it when its most salient patches go first, and stays
    above it when its least salient ones go first. One salience map serves both salient orders.
    `progress` is called with (images done, images in all): the map counts as two, then each
    order's perturbed inputs.

    Returns:
        Three curves, in DROP_ORDERS' order.
    """
    steps = np.asarray(list(fractions), dtype=np.float64)
    if steps.size == 0 or steps[0] != 0.0 or np.any(np.diff(steps) < 0) or steps[-1] > 1.0:
        raise ValueError("fractions must rise from 0 to at most 1")
    facts = loaded.facts
    target = probe_target(loaded, view, class_index)
    grid = probe_grid(loaded)
    pixels = target.pixels[0].cpu()  # (3, H, W)
    input_size = (pixels.shape[1], pixels.shape[2])
    method = method or default_method(facts)
    # Counted in images through the model: the map as two (a forward and a backward), then each order's.
    walk = PlannedSteps(progress, _probe_plan(steps.size, len(DROP_ORDERS)))
    with walk.step("map"):
        salience = salience_on_grid(loaded, target, grid, method, **method_options)
    counts = [round(fraction * grid.num_patches) for fraction in steps]
    curves = []
    for kind in DROP_ORDERS:
        order = salience_order(salience, kind, seed, size=grid.num_patches)
        perturbed = [pixels * ~drop_mask(order[:count], grid, input_size) for count in counts]
        with walk.step("images"):
            probabilities = target_probabilities(loaded, torch.stack(perturbed), target.index)
        curves.append(
            ProbeCurve(
                model=facts.name,
                family=facts.family,
                trained=loaded.trained,
                kind=kind,
                method=None if kind == "drop-random" else method,
                target_index=target.index,
                target_label=target.label,
                fractions=steps,
                target_probability=probabilities,
                removed_tokens=False,
                grid_size=grid.grid_size,
            )
        )
    return curves


def probe_curves(
    loaded: LoadedModel,
    view: ImageView,
    kind: str = DROP_ALL_ORDERS,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    method: str | None = None,
    class_index: int | None = None,
    remove_tokens: bool = False,
    centre: Sequence[float] = (0.5, 0.5),
    progress: ProgressCallback | None = None,
) -> list[ProbeCurve]:
    """A probe's curves as a comparison reads them: the drop probe in all three orders, else one curve.

    Args:
        kind: DROP_ALL_ORDERS (most salient first, least salient first, random: one map serves
            both salient orders unless a ViT's tokens are removed, where each order runs apart),
            or "shuffle" / "occlude" (one curve, no map).
        remove_tokens: for the drop probe, remove a ViT's dropped tokens (`run_probe`).
        centre: (row, col) fractions of the occluded region's centre.
        progress: called with (images done, images in all), each map counting as two.
        Other arguments as `run_probe`.
    """
    if kind != DROP_ALL_ORDERS:
        return [
            run_probe(
                loaded,
                view,
                kind,
                fractions,
                None,
                class_index,
                centre=(centre[0], centre[1]),
                progress=progress,
            )
        ]
    if not remove_tokens:
        return run_drop_orders(loaded, view, fractions, method, class_index, progress=progress)
    each_order = declare_parts(progress, [_probe_plan(len(fractions))] * len(DROP_ORDERS))
    return [
        run_probe(loaded, view, order, fractions, method, class_index, True, progress=moved)
        for order, moved in zip(DROP_ORDERS, each_order, strict=True)
    ]
