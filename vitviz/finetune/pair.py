"""A ViT/CNN pair: the bundled DINOv2 and EfficientNet fine-tuned alike, so Compare has two classifiers.

A pair folder holds two ordinary run folders and a manifest:

    <pair folder>/pair.json   which runs, their classes, data, split seed and settings
    <pair folder>/vit/        run folder of the bundled DINOv2 ViT-S/14
    <pair folder>/cnn/        run folder of the bundled EfficientNet-Lite0

Both runs go through the one trainer and worker (`vitviz.finetune.worker.execute_run`) with the
same config but the model, so they see the same images, the same split and the same settings.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vitviz.finetune.data import open_image_set
from vitviz.finetune.trainer import FinetuneConfig, FinetuneResult
from vitviz.finetune.worker import execute_run
from vitviz.runs import (
    MODEL_FILE,
    STOP_FILE,
    RunError,
    new_run_folder,
    read_config,
    read_status,
    read_val_predictions,
    request_stop,
    runs_root,
    write_json_atomic,
)

__all__ = [
    "PAIR_FILE",
    "PAIR_MODELS",
    "PAIR_SIDES",
    "PairResult",
    "RunPair",
    "Side",
    "list_pairs",
    "newest_pair",
    "pair_configs",
    "read_pair",
    "stop_pair",
    "train_pair",
]

PAIR_FILE = "pair.json"
_PAIR_FORMAT = "vitviz pair"  # pair.json's "format", so other JSON files are never taken for one
_PAIR_VERSION = 1

Side = Literal["vit", "cnn"]
PAIR_SIDES: tuple[Side, ...] = ("vit", "cnn")  # also the run folders' names inside a pair folder
# (timm name, weights) of each side: the only real ViT and CNN that load without a network.
PAIR_MODELS: dict[Side, tuple[str, str]] = {
    "vit": ("vit_small_patch14_dinov2", "bundled"),
    "cnn": ("tf_efficientnet_lite0", "bundled"),
}


@dataclass(frozen=True)
class RunPair:
    """A pair folder as pair.json and its two runs describe it."""

    folder: Path  # the pair folder
    runs: dict[Side, Path]  # side -> its run folder
    labels: tuple[str, ...]  # class names both runs predict, in label order; () until both finished
    data: str  # the data source, as the user named it
    seed: int  # the subset and split seed both runs used
    created: float  # time.time() when the pair was started

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def vit(self) -> Path:
        return self.runs["vit"]

    @property
    def cnn(self) -> Path:
        return self.runs["cnn"]

    @property
    def ready(self) -> bool:
        """Both runs finished with a saved model, so both load as models (Compare can open on it)."""
        return bool(self.labels) and all(
            (run / MODEL_FILE).is_file() and read_status(run).state == "finished"
            for run in self.runs.values()
        )

    @property
    def label(self) -> str:
        """How pickers show the pair: "pair: <name> (<data>, <n> classes)"."""
        return f"pair: {self.name} ({self.data}, {len(self.labels)} classes)"


@dataclass(frozen=True)
class PairResult:
    """What training a pair produced: the pair and each side's fine-tune."""

    pair: RunPair
    results: dict[Side, FinetuneResult]  # a side is missing when training stopped before it began

    @property
    def stopped(self) -> bool:
        return len(self.results) < len(PAIR_SIDES) or any(result.stopped for result in self.results.values())


def pair_configs(config: FinetuneConfig) -> dict[Side, FinetuneConfig]:
    """Each side's config: `config` with that side's model and weights, every other field alike."""
    return {
        side: dataclasses.replace(config, model=model, weights=weights).resolved()
        for side, (model, weights) in PAIR_MODELS.items()
    }


def _manifest(config: FinetuneConfig, data: str, labels: list[str], created: float) -> dict[str, Any]:
    resolved = config.resolved()
    return {
        "format": _PAIR_FORMAT,
        "version": _PAIR_VERSION,
        "runs": {side: side for side in PAIR_SIDES},
        "models": {
            side: {"model": model, "weights": weights} for side, (model, weights) in PAIR_MODELS.items()
        },
        "labels": labels,
        "data": data,
        "split": {
            "seed": resolved.seed,
            "val_fraction": resolved.val_fraction,
            "max_images": resolved.max_images,
        },
        "hyperparameters": resolved.hyperparameters(),
        "created": created,
    }


def _claim_pair_folder(out: Path | None, mode: str) -> Path:
    """A new pair folder under the runs folder ("<time>-pair-<mode>-<random>"), or `out` when new or empty."""
    if out is None:
        return new_run_folder("pair", mode)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already exists and is not an empty folder; pick a new folder for the pair.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _check_alike(folder: Path) -> list[str]:
    """The classes both runs trained on, after checking they held out the same validation images.

    Raises:
        RunError: the runs disagree on classes or split (the trainer would have to have changed).
    """
    runs = [folder / side for side in PAIR_SIDES]
    labels = [list(read_config(run).get("labels", [])) for run in runs]
    if any(other != labels[0] for other in labels):
        raise RunError(f"The runs of pair {folder.name} trained on different classes.")
    keys = [sorted(p["key"] for p in read_val_predictions(run)) for run in runs]
    if any(other != keys[0] for other in keys):
        raise RunError(f"The runs of pair {folder.name} held out different validation images.")
    return labels[0]


def train_pair(
    config: FinetuneConfig,
    data: str,
    out: str | Path | None = None,
    *,
    data_label: str | None = None,
    log: Callable[[str], None] = print,
) -> PairResult:
    """Fine-tunes the bundled ViT and the bundled CNN alike on `data`, one after the other.

    Args:
        config: the settings both sides share; its model and weights are replaced per side.
        data: "builtin:digits", "builtin:shapes", a .zip of class folders or a folder of them.
        out: the pair folder, new or empty; None makes a new one in the runs folder.
        data_label: how to name the data in the manifest (an upload's file name); default `data`.
        log: receives one line per event, each prefixed with its side.

    Returns:
        The pair (read back from its folder) and both fine-tunes. When the ViT's run is stopped,
        the CNN's is not started.

    Raises:
        DataError, ModelError, WeightsError, ValueError: as `execute_run` does, for either side.
    """
    if not data.lower().endswith(".zip"):  # a zip is checked as each side extracts it
        open_image_set(data)  # a wrong name or folder fails here, before any folder is made
    folder = _claim_pair_folder(None if out is None else Path(out), config.mode)
    created = time.time()
    label = data_label or data
    # Written first, so a page can show a pair in progress; its labels follow once both runs finish.
    write_json_atomic(folder / PAIR_FILE, _manifest(config, label, [], created))
    results: dict[Side, FinetuneResult] = {}
    for side, side_config in pair_configs(config).items():
        if (folder / STOP_FILE).exists():
            log(f"[{side}] not started: the pair was asked to stop")
            break

        def side_log(line: str, side: Side = side) -> None:
            log(f"[{side}] {line}")

        result = execute_run(side_config, data, folder / side, data_label=label, log=side_log)
        results[side] = result
        if result.stopped:
            log(f"[{side}] stopped: the pair is left incomplete")
            break
    if len(results) == len(PAIR_SIDES) and not any(result.stopped for result in results.values()):
        write_json_atomic(folder / PAIR_FILE, _manifest(config, label, _check_alike(folder), created))
    return PairResult(read_pair(folder), results)


def stop_pair(folder: str | Path) -> None:
    """Asks a pair to stop: the running side after its current step, and the next side not to start."""
    folder = Path(folder)
    request_stop(folder)  # a run folder made after this must not be claimed with a stop file in it
    for side in PAIR_SIDES:
        if (folder / side).is_dir():
            request_stop(folder / side)


def _read_manifest(folder: Path) -> dict[str, Any]:
    try:
        with open(folder / PAIR_FILE, encoding="utf-8") as stream:
            manifest = json.load(stream)
    except (OSError, ValueError) as error:
        raise RunError(f"{folder.name} is not a readable pair folder: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != _PAIR_FORMAT:
        raise RunError(f"{folder.name}/{PAIR_FILE} is not a vitviz pair manifest.")
    return manifest


def read_pair(folder: str | Path) -> RunPair:
    """The pair a pair folder describes.

    Raises:
        RunError: pair.json is missing, unreadable or incomplete, or names a run outside the folder.
    """
    folder = Path(folder)
    manifest = _read_manifest(folder)
    try:
        names = {side: str(manifest["runs"][side]) for side in PAIR_SIDES}
        labels = tuple(str(label) for label in manifest["labels"])
        seed = int(manifest["split"]["seed"])
        data = str(manifest["data"])
        created = float(manifest["created"])
    except (KeyError, TypeError, ValueError) as error:
        raise RunError(f"{folder.name}/{PAIR_FILE} lacks {error}") from error
    runs: dict[Side, Path] = {}
    for side, name in names.items():
        run = folder / name
        if run.resolve().parent != folder.resolve():  # a manifest never points outside its pair
            raise RunError(f"{folder.name}/{PAIR_FILE} names a run outside the pair: {name!r}")
        runs[side] = run
    return RunPair(folder, runs, labels, data, seed, created)


def list_pairs(root: str | Path | None = None) -> list[RunPair]:
    """Every pair folder directly under `root` (default runs_root()), newest first; unreadable ones left out."""
    root = runs_root() if root is None else Path(root)
    if not root.is_dir():
        return []
    pairs = []
    for folder in root.iterdir():
        if folder.is_dir() and not folder.name.startswith(".") and (folder / PAIR_FILE).is_file():
            try:
                pairs.append(read_pair(folder))
            except RunError:
                continue
    return sorted(pairs, key=lambda pair: pair.created, reverse=True)


def newest_pair(root: str | Path | None = None) -> RunPair | None:
    """The newest pair under `root` whose two runs both load as models, or None."""
    return next((pair for pair in list_pairs(root) if pair.ready), None)
