"""A ViT/CNN pair: the bundled DINOv2 and EfficientNet fine-tuned alike, so Compare has two classifiers.

A pair is two ordinary run folders side by side in the runs folder, each holding the same small
manifest beside its run files:

    <runs>/<time>-vit_small_patch14_dinov2-probe-<random>/pair.json
    <runs>/<time>-tf_efficientnet_lite0-probe-<random>/pair.json

pair.json names both runs, their classes, the data, the split seed and the settings. Each run stays
a run like any other (listed, opened by name, stopped and deleted on the Fine-tune page, usable as a
model), and both went through the one trainer and worker (`vitviz.finetune.worker.execute_run`) with
the same config but the model: the same images, the same split, the same settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from vitviz.finetune.data import open_image_set
from vitviz.finetune.trainer import FinetuneConfig, FinetuneResult
from vitviz.finetune.worker import execute_run, run_image_set, spawn_background
from vitviz.runs import (
    JOB_NAME,
    MODEL_FILE,
    OWNER_ENV,
    PAIR_JOB_PID_FILE,
    PAIR_JOB_RUNS_FILE,
    PAIR_JOBS_FOLDER,
    RunError,
    job_folder_by_name,
    new_run_folder,
    owner_key,
    read_config,
    read_status,
    read_tail,
    read_val_predictions,
    run_folder_by_name,
    runs_root,
    training_slot,
    write_json_atomic,
)

__all__ = [
    "PAIR_FILE",
    "PAIR_JOBS_FOLDER",
    "PAIR_JOB_ENV",
    "PAIR_MODELS",
    "PAIR_SIDES",
    "HeldOutImage",
    "PairJob",
    "PairResult",
    "RunPair",
    "Side",
    "held_out_images",
    "list_pairs",
    "newest_pair",
    "pair_command",
    "pair_configs",
    "pair_job_by_name",
    "read_pair",
    "start_pair",
    "train_pair",
]

PAIR_FILE = "pair.json"
_PAIR_FORMAT = "vitviz pair"  # pair.json's "format", so no other JSON file is ever taken for one
_PAIR_VERSION = 1
_MAX_PAIR_BYTES = 64 * 1024  # a manifest is a few hundred bytes; anything larger is not one

Side = Literal["vit", "cnn"]
PAIR_SIDES: tuple[Side, ...] = ("vit", "cnn")  # in training order
# (timm name, weights) of each side: the only real ViT and CNN that load without a network.
PAIR_MODELS: dict[Side, tuple[str, str]] = {
    "vit": ("vit_small_patch14_dinov2", "bundled"),
    "cnn": ("tf_efficientnet_lite0", "bundled"),
}


@dataclass(frozen=True)
class RunPair:
    """Two runs trained alike, as their pair.json describes them."""

    runs: dict[Side, Path]  # side -> its run folder, both directly in one runs folder
    labels: tuple[str, ...]  # class names both runs predict, in label order
    data: str  # the data source, as the user named it
    seed: int  # the subset and split seed both runs used
    created: float  # time.time() when the pair was started

    @property
    def vit(self) -> Path:
        return self.runs["vit"]

    @property
    def cnn(self) -> Path:
        return self.runs["cnn"]

    @property
    def ready(self) -> bool:
        """Both runs finished with a saved model, so both load as models (Compare can open on it)."""
        return all(
            (run / MODEL_FILE).is_file() and read_status(run).state == "finished"
            for run in self.runs.values()
        )

    @property
    def label(self) -> str:
        """How pickers show the pair: "pair: <data>, <n> classes, <date and time>"."""
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.created))
        return f"pair: {self.data}, {len(self.labels)} classes, {started}"


@dataclass(frozen=True)
class PairResult:
    """What training a pair produced: each side's run folder and fine-tune, and the pair when complete."""

    runs: dict[Side, Path]  # the run folders made, in training order
    results: dict[Side, FinetuneResult]  # a side is missing when the pair stopped before it began
    pair: RunPair | None  # None unless both sides finished

    @property
    def stopped(self) -> bool:
        return self.pair is None


def pair_configs(config: FinetuneConfig) -> dict[Side, FinetuneConfig]:
    """Each side's config: `config` with that side's model and weights, every other field alike."""
    return {
        side: dataclasses.replace(config, model=model, weights=weights).resolved()
        for side, (model, weights) in PAIR_MODELS.items()
    }


def _manifest(
    config: FinetuneConfig, data: str, runs: dict[Side, Path], labels: list[str], created: float
) -> dict[str, Any]:
    resolved = config.resolved()
    return {
        "format": _PAIR_FORMAT,
        "version": _PAIR_VERSION,
        "runs": {side: folder.name for side, folder in runs.items()},
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


def _check_alike(runs: dict[Side, Path]) -> list[str]:
    """The classes both runs trained on, after checking they held out the same validation images.

    Raises:
        RunError: the runs disagree on classes or split (the trainer would have to have changed).
    """
    labels = [list(read_config(run)["labels"]) for run in runs.values()]
    if any(other != labels[0] for other in labels):
        raise RunError("The two runs of the pair trained on different classes.")
    keys = [sorted(p["key"] for p in read_val_predictions(run)) for run in runs.values()]
    if any(other != keys[0] for other in keys):
        raise RunError("The two runs of the pair held out different validation images.")
    return labels[0]


def _job_folder(root: Path, job: str | Path | None) -> Path | None:
    """The job folder that records this pair's runs: `job`, else $VITVIZ_PAIR_JOB (set by start_pair).

    Only a folder directly in `root`'s pair jobs folder is taken: the variable never leads out.
    """
    job = os.environ.get(PAIR_JOB_ENV) if job is None else job
    if not job:
        return None
    folder = Path(job)
    jobs = root / PAIR_JOBS_FOLDER
    try:
        inside = folder.parent.resolve() == jobs.resolve() and not folder.is_symlink() and folder.is_dir()
    except (OSError, ValueError):
        inside = False
    return folder if inside and JOB_NAME.fullmatch(folder.name) else None


def train_pair(
    config: FinetuneConfig,
    data: str,
    root: str | Path | None = None,
    *,
    data_label: str | None = None,
    log: Callable[[str], None] = print,
    job: str | Path | None = None,
) -> PairResult:
    """Fine-tunes the bundled ViT and then the bundled CNN alike on `data`, each into a new run folder.

    The CNN starts only when the ViT's run finished: stopping the ViT's run (its stop file, or
    SIGTERM) stops the pair. pair.json is written into both runs once both finished.

    Args:
        config: the settings both sides share; its model and weights are replaced per side.
        data: "builtin:digits", "builtin:shapes", a .zip of class folders or a folder of them.
        root: the runs folder to make both run folders in (default runs_root()).
        data_label: how to name the data (an upload's file name); default `data`.
        log: receives one line per event, each prefixed with its side.
        job: the pair job folder (start_pair's) to record each run folder in, as it is made and
            before its run starts; default $VITVIZ_PAIR_JOB, and none outside a job.

    Raises:
        DataError, ModelError, WeightsError, ValueError: as `execute_run` does, for either side.
    """
    if not data.lower().endswith(".zip"):  # a zip is checked as each side extracts it
        open_image_set(data)  # a wrong name or folder fails here, before any run folder is made
    root = runs_root() if root is None else Path(root)
    created = time.time()
    label = data_label or data
    job_folder = _job_folder(root, job)
    runs: dict[Side, Path] = {}
    results: dict[Side, FinetuneResult] = {}
    for side, side_config in pair_configs(config).items():
        # Made only when its turn comes: an empty folder would list as a broken run meanwhile.
        runs[side] = new_run_folder(side_config.model, side_config.mode, root)
        if job_folder is not None:  # how the job (and the page watching it) finds its runs
            write_json_atomic(job_folder / PAIR_JOB_RUNS_FILE, {name: run.name for name, run in runs.items()})

        def side_log(line: str, side: Side = side) -> None:
            log(f"[{side}] {line}")

        side_log(f"run folder {runs[side].name}")
        results[side] = execute_run(side_config, data, runs[side], data_label=label, log=side_log)
        if results[side].stopped:
            side_log("stopped: the pair is left incomplete")
            return PairResult(runs, results, None)
    manifest = _manifest(config, label, runs, _check_alike(runs), created)
    for folder in runs.values():
        write_json_atomic(folder / PAIR_FILE, manifest)
    return PairResult(runs, results, read_pair(runs["vit"]))


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / PAIR_FILE
    try:
        if path.is_symlink() or path.stat().st_size > _MAX_PAIR_BYTES:
            raise RunError(f"{folder.name}/{PAIR_FILE} is not a vitviz pair manifest.")
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RunError(f"{folder.name}/{PAIR_FILE} is unreadable ({type(error).__name__}).") from error
    if not isinstance(manifest, dict) or manifest.get("format") != _PAIR_FORMAT:
        raise RunError(f"{folder.name}/{PAIR_FILE} is not a vitviz pair manifest.")
    return manifest


def read_pair(run: str | Path) -> RunPair:
    """The pair a run belongs to, from its pair.json; the other run is its sibling in the runs folder.

    Raises:
        RunError: no readable pair.json, or it names a run that is not a plain folder beside this one.
    """
    run = Path(run)
    manifest = _read_manifest(run)
    try:
        names = {side: str(manifest["runs"][side]) for side in PAIR_SIDES}
        labels = tuple(str(label) for label in manifest["labels"])
        seed = int(manifest["split"]["seed"])
        data = str(manifest["data"])
        created = float(manifest["created"])
    except (KeyError, TypeError, ValueError) as error:
        raise RunError(f"{run.name}/{PAIR_FILE} lacks {error}") from error
    if run.name not in names.values():
        raise RunError(f"{run.name}/{PAIR_FILE} belongs to other runs.")
    # Names are checked as any run name is (one plain folder, no links): a manifest never leads out.
    runs: dict[Side, Path] = {side: run_folder_by_name(name, run.parent) for side, name in names.items()}
    return RunPair(runs, labels, data, seed, created)


def list_pairs(root: str | Path | None = None) -> list[RunPair]:
    """Every pair in `root` (default runs_root()), newest first, each once; unreadable ones left out."""
    root = runs_root() if root is None else Path(root)
    pairs = []
    try:
        folders = [entry for entry in root.iterdir() if not entry.name.startswith(".") and entry.is_dir()]
    except OSError:
        return []
    for folder in folders:
        if not (folder / PAIR_FILE).is_file():
            continue
        try:
            pair = read_pair(folder)
        except RunError:
            continue
        if pair.vit.name == folder.name:  # found again from the CNN's copy of the manifest
            pairs.append(pair)
    return sorted(pairs, key=lambda pair: pair.created, reverse=True)


def newest_pair(root: str | Path | None = None) -> RunPair | None:
    """The newest pair in `root` whose two runs both load as models, or None."""
    return next((pair for pair in list_pairs(root) if pair.ready), None)


@dataclass(frozen=True)
class HeldOutImage:
    """An image of a pair's data that neither of its runs trained on: the fair picture to compare them on."""

    image: Image.Image
    key: str  # the image's key in the data ("3/0042.png")
    label: str  # its true class
    data: str  # the data set, as the pair names it

    @property
    def name(self) -> str:
        """How pages name the picture."""
        return f"held-out “{self.label}” of {self.data} ({self.key})"


def held_out_images(pair: RunPair) -> list[HeldOutImage]:
    """One validation image of each class of `pair`, the first by key, in label order.

    Both runs of a pair share one split, so the ViT run's validation images are held out of both.

    Raises:
        RunError: the run's validation predictions are unreadable.
        DataError: its images cannot be opened again (gone, or outside this app's folders).
    """
    rows = sorted(read_val_predictions(pair.vit), key=lambda row: row["key"])
    image_set = run_image_set(pair.vit)
    items = {item.key: item for item in image_set.items}
    first_of_class: dict[int, HeldOutImage] = {}
    for row in rows:
        label = row["label"]
        if label in first_of_class or row["key"] not in items or label >= len(pair.labels):
            continue
        first_of_class[label] = HeldOutImage(
            items[row["key"]].load().convert("RGB"), row["key"], pair.labels[label], pair.data
        )
    return [first_of_class[label] for label in sorted(first_of_class)]


# --------------------------------------------------------------------------------------------
# A pair trained by a detached process (the page's "Train a ViT/CNN pair")
# --------------------------------------------------------------------------------------------

PAIR_JOB_ENV = "VITVIZ_PAIR_JOB"  # the job folder, for the pair process start_pair spawns
_JOB_LOG = "pair.log"
_MAX_JOB_LOG_BYTES = 1024 * 1024
_MAX_JOB_RUNS_BYTES = 64 * 1024


@dataclass(frozen=True)
class PairJob:
    """A `python -m vitviz finetune-pair` process started by start_pair, and what it has made so far."""

    folder: Path  # <runs>/.pairs/<name>: the process's log and pid
    root: Path  # the runs folder both runs are made in

    @property
    def name(self) -> str:
        return self.folder.name

    def log(self) -> str:
        """The process's output so far (the last MiB)."""
        return read_tail(self.folder / _JOB_LOG, _MAX_JOB_LOG_BYTES)

    def runs(self) -> dict[Side, Path]:
        """The run folders made so far, in training order (the CNN's appears when the ViT's is done).

        Read from the record train_pair writes into the job folder as it makes each run folder.
        """
        path = self.folder / PAIR_JOB_RUNS_FILE
        try:
            if path.is_symlink() or path.stat().st_size > _MAX_JOB_RUNS_BYTES:
                return {}
            names = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # no run folder made yet
        if not isinstance(names, dict):
            return {}
        found: dict[Side, Path] = {}
        for side in PAIR_SIDES:
            if side not in names:
                continue
            try:
                found[side] = run_folder_by_name(str(names[side]), self.root)
            except RunError:
                continue  # deleted meanwhile
        return found

    @property
    def alive(self) -> bool:
        """Whether the pair process still runs (it trains one side, or is between the two)."""
        try:
            pid = int((self.folder / PAIR_JOB_PID_FILE).read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        try:  # an ended process nobody has reaped yet (a zombie) is gone too
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return True

    def pair(self) -> RunPair | None:
        """The finished pair, once both runs hold their pair.json; None before (or when it stopped)."""
        runs = self.runs()
        if "vit" not in runs or not (runs["vit"] / PAIR_FILE).is_file():
            return None
        try:
            return read_pair(runs["vit"])
        except RunError:
            return None


def pair_command(config: FinetuneConfig, data: str, root: Path) -> list[str]:
    """The `python -m vitviz finetune-pair ...` command line that trains `config`'s settings on `data`."""
    argv = config.to_argv()
    # finetune-pair picks each side's model itself: drop the single run's --model and --weights.
    settings = [
        flag_or_value
        for index in range(0, len(argv), 2)
        if argv[index] not in ("--model", "--weights")
        for flag_or_value in argv[index : index + 2]
    ]
    return [sys.executable, "-m", "vitviz", "finetune-pair", "--data", data, "--out", str(root), *settings]


def start_pair(
    config: FinetuneConfig, data: str, root: str | Path | None = None, owner: str | None = None
) -> PairJob:
    """Starts train_pair on `data` in a detached process (as start_run does for one run); returns its job.

    Args:
        config: the settings both sides share; its model and weights are ignored.
        data: "builtin:digits", "builtin:shapes" or a folder of class folders (a page passes only
            folders checked by vitviz.serving.server_folder); not an upload.
        root: the runs folder (default runs_root()).
        owner: the session token of the visitor who starts it, recorded in both runs (see
            vitviz.finetune.worker.start_run); None for the operator.

    Raises:
        RunLimitError: the server already trains as many runs as it allows; nothing was started.
        RunError: the process could not start.
    """
    root = runs_root() if root is None else Path(root)
    with training_slot(root):
        folder = root / PAIR_JOBS_FOLDER / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        folder.mkdir(parents=True)
        try:
            process = spawn_background(
                pair_command(config, data, root),
                folder / _JOB_LOG,
                env={PAIR_JOB_ENV: str(folder)}
                | ({OWNER_ENV: owner_key(owner)} if owner is not None else {}),
            )
        except OSError as error:
            raise RunError(f"The pair could not start: {error.strerror or type(error).__name__}.") from error
        # Written inside the slot: from here the live process holds it until it ends (runs.training_count).
        (folder / PAIR_JOB_PID_FILE).write_text(str(process.pid))
    return PairJob(folder, root)


def pair_job_by_name(name: str, root: str | Path | None = None) -> PairJob:
    """The pair job called `name` (as start_pair named it) in the runs folder.

    Raises:
        RunError: no such job (a name of any other shape is refused without looking at the disk).
    """
    root = runs_root() if root is None else Path(root)
    return PairJob(job_folder_by_name(name, PAIR_JOBS_FOLDER, "pair job", root), root)
