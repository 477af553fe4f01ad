"""Run folders: what a fine-tune writes to disk, and reading, listing, reopening and deleting runs."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import safetensors.torch
from torch import nn

from vitviz.weights import cache_dir

__all__ = [
    "CONFIG_FILE",
    "LABELS_FILE",
    "LOG_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "RUNS_DIR_ENV",
    "STATUS_FILE",
    "STOP_FILE",
    "UPLOAD_FILE",
    "VAL_PREDICTIONS_FILE",
    "WORKER_PID_FILE",
    "RunError",
    "RunModel",
    "RunState",
    "RunStatus",
    "RunSummary",
    "append_metrics",
    "delete_run",
    "describe_run",
    "is_run_folder",
    "list_runs",
    "new_run_folder",
    "read_config",
    "read_metrics",
    "read_run_model",
    "read_status",
    "read_val_predictions",
    "request_stop",
    "runs_root",
    "save_model",
    "stop_requested",
    "write_config",
    "write_json_atomic",
    "write_status",
    "write_val_predictions",
]

RUNS_DIR_ENV = "VITVIZ_RUNS_DIR"
MODEL_FILE = "model.safetensors"  # the whole fine-tuned timm model's state dict
CONFIG_FILE = "config.json"  # timm name, weights source, mode, hyperparameters, labels, data
LABELS_FILE = "labels.json"  # class names, in label order
METRICS_FILE = "metrics.jsonl"  # one JSON object per finished epoch
STATUS_FILE = "status.json"  # state, progress, time left, pid, error: rewritten atomically
VAL_PREDICTIONS_FILE = "val_predictions.json"  # the fine-tuned model's answer per validation image
STOP_FILE = "stop"  # its presence asks the trainer to stop after the current step
LOG_FILE = "worker.log"  # the worker's stdout and stderr
WORKER_PID_FILE = "worker.pid"  # the detached worker's pid, written by whoever started it
UPLOAD_FILE = "upload.zip"  # an uploaded archive, until the worker has extracted it


class RunError(ValueError):
    """A run folder that cannot be read or used: one line for the user."""


RunState = Literal["starting", "running", "finished", "stopped", "failed"]
ACTIVE_STATES: tuple[RunState, ...] = ("starting", "running")


@dataclass(frozen=True)
class RunStatus:
    """status.json: where a run stands, as its worker last wrote it."""

    state: RunState
    progress: float = 0.0  # of the whole run, 0..1
    eta_s: float | None = None  # seconds left, as estimated by the trainer
    message: str = ""  # what the trainer is doing, e.g. "epoch 3/10"
    epoch: int = 0  # epochs finished
    epochs: int = 0
    pid: int | None = None  # the worker process (of rank 0)
    host: str = ""  # the machine the worker runs on: a pid only means something there
    error: str | None = None  # why a run failed
    updated: float = 0.0  # time.time() of the write

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


@dataclass(frozen=True)
class RunSummary:
    """One run as listed in pickers and on the Fine-tune page."""

    folder: Path
    model: str  # timm name
    weights: str  # where the starting weights came from
    mode: str
    labels: tuple[str, ...]
    data: str  # the data source, as the user named it
    status: RunStatus
    created: float  # time.time() when the folder was made

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def has_model(self) -> bool:
        return (self.folder / MODEL_FILE).is_file()

    @property
    def label(self) -> str:
        """How pickers show the run: "run: <name> (<timm name>, <mode>)"."""
        return f"run: {self.name} ({self.model}, {self.mode})"


def runs_root() -> Path:
    """Where runs live: ``$VITVIZ_RUNS_DIR`` if set, else ``<cache_dir()>/runs``; created if missing."""
    configured = os.environ.get(RUNS_DIR_ENV)
    root = Path(configured).expanduser() if configured else cache_dir() / "runs"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _safe_part(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:40].strip("-.") or "model"


def new_run_folder(model: str, mode: str, root: Path | None = None) -> Path:
    """Creates a new, empty, uniquely named run folder under `root` (default runs_root())."""
    root = runs_root() if root is None else Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    model_part = _safe_part(Path(model).name)
    while True:
        # The random part keeps two users who press Start in the same second apart.
        folder = root / f"{stamp}-{model_part}-{mode}-{uuid.uuid4().hex[:6]}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def write_json_atomic(path: Path, payload: Any) -> None:
    """Writes JSON to a temporary file beside `path`, then renames it over `path`.

    Readers (the page, every second) see the old file or the new one, never half of one.
    """
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(payload, stream, indent=2)
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def is_run_folder(path: str | Path) -> bool:
    """True for a folder with a config.json, which is how a run folder passes as a model name."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file()


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------


def write_status(folder: Path, status: RunStatus) -> None:
    payload = dataclasses.asdict(status)
    payload["updated"] = time.time()
    if not payload["host"]:
        payload["host"] = socket.gethostname()
    write_json_atomic(Path(folder) / STATUS_FILE, payload)


def _process_alive(pid: int) -> bool:
    """True while the process exists and has not exited (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process with that pid: alive, not ours to judge
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    except (OSError, IndexError):
        return True


def read_status(folder: str | Path) -> RunStatus:
    """The run's status; a run whose worker died without saying so reads as failed."""
    path = Path(folder) / STATUS_FILE
    try:
        payload = _read_json(path)
        status = RunStatus(
            **{f.name: payload[f.name] for f in dataclasses.fields(RunStatus) if f.name in payload}
        )
    except FileNotFoundError:
        return RunStatus("failed", error="this run has no status.json")
    except (OSError, ValueError, TypeError) as error:
        return RunStatus("failed", error=f"status.json is unreadable: {error}")
    same_host = status.host in ("", socket.gethostname())
    pid = status.pid if status.pid is not None else _worker_pid(Path(folder))
    if status.active and pid is not None and same_host and not _process_alive(pid):
        return dataclasses.replace(
            status,
            state="failed",
            error="the training process ended without finishing (killed, or the machine restarted); "
            f"see {LOG_FILE} in the run folder",
        )
    return status


def _worker_pid(folder: Path) -> int | None:
    """The pid start_run recorded, for a worker that has not written its status yet."""
    try:
        return int((folder / WORKER_PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def request_stop(folder: str | Path) -> None:
    """Asks the run's trainer to stop after its current step (it polls for this file)."""
    (Path(folder) / STOP_FILE).touch()


def stop_requested(folder: str | Path) -> bool:
    return (Path(folder) / STOP_FILE).exists()


# --------------------------------------------------------------------------------------------
# Config, labels, metrics, predictions, model
# --------------------------------------------------------------------------------------------


def write_config(folder: Path, config: dict[str, Any]) -> None:
    """config.json, and labels.json beside it when the labels are known."""
    write_json_atomic(Path(folder) / CONFIG_FILE, config)
    if config.get("labels"):
        write_json_atomic(Path(folder) / LABELS_FILE, list(config["labels"]))


def read_config(folder: str | Path) -> dict[str, Any]:
    try:
        return _read_json(Path(folder) / CONFIG_FILE)
    except (OSError, ValueError) as error:
        raise RunError(f"{Path(folder).name} is not a readable run folder: {error}") from error


def append_metrics(folder: Path, row: dict[str, float]) -> None:
    """Adds one epoch's line to metrics.jsonl (a line is written in one call, so readers see it whole)."""
    with open(Path(folder) / METRICS_FILE, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(row) + "\n")


def read_metrics(folder: str | Path) -> list[dict[str, float]]:
    """Every complete line of metrics.jsonl; a line still being written is left for the next read."""
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    return rows


def write_val_predictions(folder: Path, predictions: list[dict[str, Any]]) -> None:
    write_json_atomic(Path(folder) / VAL_PREDICTIONS_FILE, predictions)


def read_val_predictions(folder: str | Path) -> list[dict[str, Any]]:
    path = Path(folder) / VAL_PREDICTIONS_FILE
    return _read_json(path) if path.is_file() else []


def save_model(folder: Path, model: nn.Module) -> Path:
    """Writes the model's full state dict as model.safetensors (atomically)."""
    target = Path(folder) / MODEL_FILE
    state = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in model.state_dict().items()}
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".model.", suffix=".tmp")
    os.close(handle)
    try:
        safetensors.torch.save_file(state, temp_name, metadata={"format": "pt"})
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target


@dataclass(frozen=True)
class RunModel:
    """What a run folder says about its model: enough for `vitviz.models.load_model` to build it."""

    timm_name: str  # the architecture the run fine-tuned
    labels: tuple[str, ...]  # class names, in label order; the head has len(labels) outputs
    build_args: dict[str, Any]  # extra keyword arguments of timm.create_model (e.g. img_size)
    weights_file: Path  # the fine-tuned state dict


def read_run_model(folder: str | Path) -> RunModel:
    """The model a finished run folder describes.

    Raises:
        RunError: config.json is unreadable or incomplete, or the run has no trained model yet.
    """
    folder = Path(folder)
    config = read_config(folder)
    try:
        name = str(config["timm_name"])
        labels = tuple(str(label) for label in config["labels"])
        build_args = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in config.get("build_args", {}).items()
        }
    except (KeyError, TypeError) as error:
        raise RunError(f"{folder.name}/config.json lacks {error}") from error
    if not (folder / MODEL_FILE).is_file():
        state = read_status(folder).state
        raise RunError(f"Run {folder.name} has no trained model ({state}).")
    return RunModel(name, labels, build_args, folder / MODEL_FILE)


def describe_run(folder: str | Path) -> str:
    """A short label for a run as a weights source; says when it started from random weights."""
    folder = Path(folder)
    try:
        config = read_config(folder)
    except RunError:
        return f"run {folder.name}"
    origin = " from random weights" if config.get("weights") == "random" else ""
    return f"fine-tuned run {folder.name} ({config.get('mode', '?')}{origin})"


# --------------------------------------------------------------------------------------------
# Listing and deleting
# --------------------------------------------------------------------------------------------


def _summary(folder: Path) -> RunSummary | None:
    try:
        config = _read_json(folder / CONFIG_FILE)
    except (OSError, ValueError):
        return None
    return RunSummary(
        folder=folder,
        model=str(config.get("timm_name", "?")),
        weights=str(config.get("weights", "?")),
        mode=str(config.get("mode", "?")),
        labels=tuple(config.get("labels") or ()),
        data=str(config.get("data", {}).get("label", "?")),
        status=read_status(folder),
        created=float(config.get("created", folder.stat().st_mtime)),
    )


def list_runs(root: Path | None = None) -> list[RunSummary]:
    """Every run under `root` (default runs_root()), newest first."""
    root = runs_root() if root is None else Path(root)
    if not root.is_dir():
        return []
    summaries = [
        _summary(folder) for folder in root.iterdir() if folder.is_dir() and not folder.name.startswith(".")
    ]
    return sorted((s for s in summaries if s is not None), key=lambda s: s.created, reverse=True)


def delete_run(folder: str | Path, root: Path | None = None) -> None:
    """Deletes a run folder that lies under `root` and is not training.

    Raises:
        ValueError: the folder is outside the runs root, is not a run, or is still training.
    """
    root = (runs_root() if root is None else Path(root)).resolve()
    folder = Path(folder).resolve()
    if folder.parent != root or not (folder / STATUS_FILE).exists():
        raise ValueError(f"{folder} is not a run folder under {root}; nothing was deleted.")
    if read_status(folder).active:
        raise ValueError(f"Run {folder.name} is still training: stop it first.")
    shutil.rmtree(folder)
