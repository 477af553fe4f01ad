"""Run folders: what a fine-tune writes to disk, and reading, listing, reopening and deleting runs.

A served app meets run folders that were hand-edited, half-written or left by a killed worker.
Every reader here checks what it reads against what the worker writes (known keys, types, sizes)
and turns anything else into one `RunError` line; listings show such a run as broken instead.
Pages name runs by their folder name only (`run_folder_by_name`), never by a path.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import hmac
import json
import math
import os
import re
import shutil
import socket
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, get_args

import safetensors.torch
import timm
import torch
from torch import nn

from vitviz.text import clipped
from vitviz.weights import cache_dir

__all__ = [
    "CONFIG_FILE",
    "DATA_FOLDER",
    "DEFAULT_MAX_JOBS",
    "DEFAULT_MAX_RUNS",
    "DEFAULT_RUN_DISK_BYTES",
    "JOBS_FOLDER",
    "JOB_NAME",
    "LABELS_FILE",
    "LOG_FILE",
    "MAX_JOBS_ENV",
    "MAX_LABELS",
    "MAX_LABEL_CHARS",
    "MAX_RUNS_ENV",
    "MAX_RUN_NAME_CHARS",
    "METRICS_FILE",
    "MODEL_FILE",
    "OWNER_ENV",
    "PAIR_JOBS_FOLDER",
    "PAIR_JOB_PID_FILE",
    "PAIR_JOB_RUNS_FILE",
    "RUNS_DIR_ENV",
    "RUN_DISK_ENV",
    "STATUS_FILE",
    "STOP_FILE",
    "UPLOAD_FILE",
    "VAL_PREDICTIONS_FILE",
    "WORKER_PID_FILE",
    "JobLimitError",
    "RunError",
    "RunLimitError",
    "RunModel",
    "RunState",
    "RunStatus",
    "RunSummary",
    "active_runs",
    "append_metrics",
    "background_job_count",
    "background_job_slot",
    "check_disk_room",
    "check_owner",
    "delete_run",
    "describe_run",
    "folder_bytes",
    "free_run_data",
    "is_run_folder",
    "job_folder_by_name",
    "list_runs",
    "max_background_jobs",
    "max_concurrent_runs",
    "new_run_folder",
    "owned_by",
    "owner_key",
    "process_alive",
    "read_config",
    "read_log_tail",
    "read_metrics",
    "read_run_model",
    "read_status",
    "read_tail",
    "read_val_predictions",
    "remove_temporary_files",
    "request_stop",
    "run_disk_limit",
    "run_folder_by_name",
    "runs_root",
    "save_model",
    "save_state_dict",
    "start_lock",
    "stop_requested",
    "training_count",
    "training_slot",
    "validate_run_config",
    "write_config",
    "write_json_atomic",
    "write_status",
    "write_val_predictions",
]

RUNS_DIR_ENV = "VITVIZ_RUNS_DIR"
MAX_RUNS_ENV = "VITVIZ_MAX_RUNS"  # fine-tunes that may train at once on this server
DEFAULT_MAX_RUNS = 2
RUN_DISK_ENV = "VITVIZ_RUN_DISK_BYTES"  # bytes one run folder may hold
DEFAULT_RUN_DISK_BYTES = 2 * 1024**3

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
DATA_FOLDER = "data"  # where an uploaded zip is extracted, inside its run folder
_START_LOCK_FILE = ".start.lock"  # held while a start counts the active runs and claims a slot

MAX_RUN_NAME_CHARS = 128  # new_run_folder's names are under 80 characters
MAX_LABELS = 10_000
MAX_LABEL_CHARS = 200
_MAX_PATH_CHARS = 4096  # a path as config.json records it (data root, weights file)
_MAX_TEXT_CHARS = 1000  # labels of data sources, status messages
_MAX_IMAGE_SIDE = 4096  # largest img_size a run may ask timm to build
_MAX_SKIPPED = 1000  # file names config.json lists as skipped
# Read limits: what the worker writes stays far below them; anything larger is not a run's file.
_MAX_CONFIG_BYTES = 8 * 1024**2
_MAX_STATUS_BYTES = 1024**2
_MAX_METRICS_BYTES = 16 * 1024**2
_MAX_PREDICTIONS_BYTES = 32 * 1024**2
# An active run with no worker pid (its start never launched one) is given up after this long.
_UNKNOWN_WORKER_GRACE_S = 300.0


class RunError(ValueError):
    """A run folder that cannot be read or used: one line for the user, without server paths."""


class _MissingFileError(ValueError):
    """A file of the run folder that is not there (yet): for readers that treat that apart."""


class RunLimitError(RunError):
    """A new fine-tune was refused because the server already trains as many as it allows."""


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
    problem: str | None = None  # why the run is broken (an unreadable config.json); None when fine
    base_model: str = "?"  # what it was fine-tuned from: a timm name, or a run's name (weights "run")

    @property
    def name(self) -> str:
        """The folder's name; bytes that are not UTF-8 shown as "\ufffd" (such a run is broken)."""
        return _shown_name(self.folder.name)

    @property
    def has_model(self) -> bool:
        return self.problem is None and _is_regular_file(self.folder / MODEL_FILE)

    @property
    def label(self) -> str:
        """How pickers show the run: "run: <name> (<timm name>, <mode>)", and how early it ended
        when it was stopped or killed (its model is then its best finished epoch's checkpoint)."""
        label = f"run: {self.name} ({self.model}, {self.mode})"
        if self.status.state in ("stopped", "failed"):
            planned = f" of {self.status.epochs}" if self.status.epochs else ""
            label += f" — stopped early after {self.status.epoch}{planned} epochs"
        return label


def _clip(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters, for quoting a user's input back in one line."""
    return clipped(text, limit)


def _shown_name(name: str) -> str:
    """A file name as text that can be shown: undecodable bytes (kept by Python as surrogates) as "\ufffd"."""
    return os.fsencode(name).decode("utf-8", errors="replace")


def _folder_name_problem(name: str) -> str | None:
    """Why a folder in the runs folder cannot be a run by its name alone; None when it can."""
    if _shown_name(name) != name:
        return "its folder name is not UTF-8 text"
    if len(name) > MAX_RUN_NAME_CHARS:
        return (
            f"its folder name is {len(name)} characters long; a run's name has at most {MAX_RUN_NAME_CHARS}"
        )
    if not name.isprintable():
        return "its folder name holds characters that cannot be shown"
    return None


def _is_regular_file(path: Path) -> bool:
    """True for a plain file (not a folder, device or link to one); False for any path that cannot be."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return False


def runs_root() -> Path:
    """Where runs live: ``$VITVIZ_RUNS_DIR`` if set, else ``<cache_dir()>/runs``; created if missing."""
    configured = os.environ.get(RUNS_DIR_ENV)
    root = Path(configured).expanduser() if configured else cache_dir() / "runs"
    root.mkdir(parents=True, exist_ok=True)
    return root


def run_folder_by_name(name: str, root: Path | None = None) -> Path:
    """The run folder called `name` directly inside the runs folder: how pages and links name a run.

    A name is one plain folder name: no separators, no "." or "..", nothing hidden, nothing longer
    than MAX_RUN_NAME_CHARS. The folder must be a real folder in the runs folder, not a link.

    Returns:
        ``root / name`` (root defaults to runs_root()), as list_runs names the same run.

    Raises:
        RunError: the name is not a plain folder name, or there is no run folder of that name. A
            link and a missing run read alike, so a name reveals nothing else about the disk.
    """
    text = str(name)
    if (
        not text
        or len(text) > MAX_RUN_NAME_CHARS
        or text.startswith(".")
        or "/" in text
        or "\\" in text
        or not text.isprintable()
    ):
        raise RunError(f"{_clip(text)!r} is not the name of a run.")
    root = runs_root() if root is None else Path(root)
    folder = root / text
    try:
        found = not folder.is_symlink() and folder.is_dir() and folder.resolve().parent == root.resolve()
    except OSError:
        found = False
    if not found:
        raise RunError(f"There is no run named {text!r}.")
    return folder


def _safe_part(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:40].strip("-.") or "model"


def new_run_folder(model: str, mode: str, root: Path | None = None) -> Path:
    """Creates a new, empty, uniquely named run folder under `root` (default runs_root())."""
    root = runs_root() if root is None else Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    model_part = _safe_part(Path(model).name)
    mode_part = _safe_part(mode)[:10]
    while True:
        # The random part keeps two users who press Start in the same second apart.
        folder = root / f"{stamp}-{model_part}-{mode_part}-{uuid.uuid4().hex[:6]}"
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


def _open_plain_file(path: Path) -> BinaryIO:
    """`path` opened for reading, if it is a plain file.

    Opened first and checked through the handle, so what is checked is what is read: a link to
    /dev/zero or a folder in the file's place is refused instead of read forever. O_NONBLOCK: a
    FIFO would otherwise hold the open until a writer comes, which may be never (the flag does
    nothing to a plain file's reads).

    Raises:
        OSError: it cannot be opened (FileNotFoundError when it is missing).
        ValueError: it is not a plain file.
    """
    handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    stream = os.fdopen(handle, "rb")
    if not stat.S_ISREG(os.fstat(handle).st_mode):
        stream.close()
        raise ValueError(f"{path.name} is not a plain file")
    return stream


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    """The bytes of a plain file of at most `max_bytes`.

    Raises:
        ValueError: the file is missing, not a plain file, or too large (a one-line reason).
    """
    try:
        with _open_plain_file(path) as stream:
            data = stream.read(max_bytes + 1)
    except FileNotFoundError as error:
        raise _MissingFileError(f"{path.name} is missing") from error
    except OSError as error:
        raise ValueError(f"{path.name} cannot be read ({error.strerror or type(error).__name__})") from error
    if len(data) > max_bytes:
        raise ValueError(f"{path.name} is larger than {max_bytes // 1024**2} MB")
    return data


def _problem(file_name: str, error: ValueError) -> str:
    """A reader's error as a phrase that names the file once: "config.json field 'x' must be ..."."""
    detail = str(error)
    return detail if detail.startswith(file_name) else f"{file_name} {detail}"


def _read_json(path: Path, max_bytes: int) -> Any:
    """Parsed JSON of a plain file of at most `max_bytes`.

    Raises:
        ValueError: unreadable, too large, not UTF-8, not JSON, or nested too deeply to parse.
    """
    data = _read_bytes(path, max_bytes)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path.name} is not UTF-8 text") from error
    except RecursionError as error:
        raise ValueError(f"{path.name} is nested too deeply") from error
    except ValueError as error:  # JSONDecodeError, and integers of thousands of digits
        raise ValueError(f"{path.name} is not valid JSON ({_clip(str(error), 120)})") from error


def is_run_folder(path: str | Path) -> bool:
    """True for a folder with a config.json, which is how a run folder passes as a model name.

    Any path may be asked about (the CLI reads run folders anywhere); impossible paths (too long,
    a NUL byte) are simply not run folders.
    """
    try:
        path = Path(path)
        return path.is_dir() and (path / CONFIG_FILE).is_file()
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# Checking what a run folder holds
# --------------------------------------------------------------------------------------------


def _text(value: Any, field: str, max_chars: int) -> str:
    if not isinstance(value, str) or len(value) > max_chars:
        raise ValueError(f"field {field!r} must be text of at most {max_chars:,} characters")
    return value


def _optional_text(value: Any, field: str, max_chars: int) -> str | None:
    return None if value is None else _text(value, field, max_chars)


def _integer(value: Any, field: str, low: int, high: int) -> int:
    # bool is an int to Python, never to a run folder.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"field {field!r} must be a whole number from {low:,} to {high:,}")
    return value


def _number(value: Any, field: str, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"field {field!r} must be a number")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"field {field!r} must be a finite number from {low:g} to {high:g}")
    return number


def _mapping(value: Any, field: str, max_entries: int) -> dict[str, Any]:
    if not isinstance(value, dict) or len(value) > max_entries:
        raise ValueError(f"field {field!r} must be an object of at most {max_entries:,} entries")
    return value


def _labels(value: Any) -> list[str]:
    if (
        not isinstance(value, list)
        or len(value) > MAX_LABELS
        or not all(isinstance(label, str) and len(label) <= MAX_LABEL_CHARS for label in value)
    ):
        raise ValueError(
            f"field 'labels' must be a list of at most {MAX_LABELS:,} names of at most "
            f"{MAX_LABEL_CHARS} characters"
        )
    return list(value)


def _timm_name(value: Any) -> str:
    name = _text(value, "timm_name", 200)
    if not timm.is_model(name):
        raise ValueError(f"field 'timm_name' names no timm model ({_clip(name)!r})")
    return name


def _image_size(value: Any) -> int | list[int]:
    field = "build_args.img_size"
    if isinstance(value, list):
        if len(value) != 2:
            raise ValueError(f"field {field!r} must be one side or [height, width]")
        return [_integer(side, field, 1, _MAX_IMAGE_SIDE) for side in value]
    return _integer(value, field, 1, _MAX_IMAGE_SIDE)


# build_args may only say how big to build the model: never a file, a URL or a pretrained config.
_BUILD_ARGS: dict[str, Any] = {
    "img_size": _image_size,
    "num_classes": lambda value: _integer(value, "build_args.num_classes", 1, MAX_LABELS),
}


def _build_args(value: Any) -> dict[str, Any]:
    arguments = _mapping(value, "build_args", len(_BUILD_ARGS))
    unknown = sorted(set(arguments) - set(_BUILD_ARGS))
    if unknown:
        allowed = ", ".join(_BUILD_ARGS)
        raise ValueError(f"field 'build_args' may only hold {allowed}, not {_clip(str(unknown[0]))!r}")
    return {key: _BUILD_ARGS[key](item) for key, item in arguments.items()}


# Hyperparameters as FinetuneConfig.hyperparameters() writes them: name -> (type check).
_HYPERPARAMETERS: dict[str, Any] = {
    "mode": lambda value: _text(value, "hyperparameters.mode", 32),
    "last_k": lambda value: _integer(value, "hyperparameters.last_k", 1, 10_000),
    "epochs": lambda value: _integer(value, "hyperparameters.epochs", 1, 10**9),
    "batch_size": lambda value: _integer(value, "hyperparameters.batch_size", 1, 10**6),
    "lr": lambda value: _number(value, "hyperparameters.lr", 0.0),
    "weight_decay": lambda value: _number(value, "hyperparameters.weight_decay", 0.0),
    "max_images": lambda value: (
        None if value is None else _integer(value, "hyperparameters.max_images", 1, 10**9)
    ),
    "seed": lambda value: _integer(value, "hyperparameters.seed", -(2**63), 2**63),
    "val_fraction": lambda value: _number(value, "hyperparameters.val_fraction", 0.0, 1.0),
}


def _known_fields(value: Any, field: str, checks: dict[str, Any]) -> dict[str, Any]:
    """An object whose keys are all in `checks`, each value passed through its check."""
    entries = _mapping(value, field, len(checks))
    unknown = sorted(set(entries) - set(checks))
    if unknown:
        raise ValueError(f"field {field!r} has an unknown entry {_clip(str(unknown[0]))!r}")
    return {key: checks[key](item) for key, item in entries.items()}


def _class_counts(value: Any) -> dict[str, int]:
    counts = _mapping(value, "data.class_counts", MAX_LABELS)
    return {
        _text(name, "data.class_counts", MAX_LABEL_CHARS): _integer(count, "data.class_counts", 0, 10**9)
        for name, count in counts.items()
    }


def _skipped(value: Any) -> list[str]:
    if not isinstance(value, list) or len(value) > _MAX_SKIPPED:
        raise ValueError(f"field 'data.skipped' must be a list of at most {_MAX_SKIPPED:,} file names")
    return [_text(name, "data.skipped", _MAX_PATH_CHARS) for name in value]


_DATA_FIELDS: dict[str, Any] = {
    "spec": lambda value: _text(value, "data.spec", _MAX_PATH_CHARS),
    "label": lambda value: _text(value, "data.label", _MAX_TEXT_CHARS),
    "root": lambda value: _text(value, "data.root", _MAX_PATH_CHARS),
    "images": lambda value: _integer(value, "data.images", 0, 10**9),
    "class_counts": _class_counts,
    "skipped": _skipped,
}

# Every field the worker writes into config.json, with its check; timm_name and labels are required.
_CONFIG_FIELDS: dict[str, Any] = {
    "timm_name": _timm_name,
    "weights": lambda value: _text(value, "weights", _MAX_PATH_CHARS),
    "base_model": lambda value: _text(value, "base_model", _MAX_PATH_CHARS),
    "mode": lambda value: _text(value, "mode", 32),
    "hyperparameters": lambda value: _known_fields(value, "hyperparameters", _HYPERPARAMETERS),
    "labels": _labels,
    "num_classes": lambda value: _integer(value, "num_classes", 0, MAX_LABELS),
    "build_args": _build_args,
    "data": lambda value: _known_fields(value, "data", _DATA_FIELDS),
    "device": lambda value: _text(value, "device", 64),
    "world_size": lambda value: _integer(value, "world_size", 1, 65_536),
    "created": lambda value: _number(value, "created", 0.0),
    "owner": lambda value: _text(value, "owner", 64),  # owner_key of the session that started the run
}


def validate_run_config(payload: Any) -> dict[str, Any]:
    """config.json's contents checked against what the worker writes: known keys, types and sizes.

    timm_name must be a timm model, labels a list of at most MAX_LABELS names of at most
    MAX_LABEL_CHARS characters, and build_args may only hold img_size and num_classes as whole
    numbers: nothing in a run folder can hand timm a file path.

    Returns:
        The checked fields, with the same values.

    Raises:
        ValueError: the first problem, as a phrase such as "field 'labels' must be ...".
    """
    if not isinstance(payload, dict):
        raise ValueError("is not a JSON object")
    unknown = sorted(set(payload) - set(_CONFIG_FIELDS))
    if unknown:
        raise ValueError(f"has an unknown field {_clip(str(unknown[0]))!r}")
    for required in ("timm_name", "labels"):
        if required not in payload:
            raise ValueError(f"lacks the field {required!r}")
    return {key: _CONFIG_FIELDS[key](value) for key, value in payload.items()}


def _checked_status(payload: Any) -> RunStatus:
    """A RunStatus from status.json's contents; unknown keys are ignored, known ones checked."""
    if not isinstance(payload, dict):
        raise ValueError("is not a JSON object")
    state = payload.get("state")
    if state not in get_args(RunState):
        raise ValueError(f"field 'state' must be one of {', '.join(get_args(RunState))}")
    pid = payload.get("pid")
    eta_s = payload.get("eta_s")
    return RunStatus(
        state=state,
        progress=_number(payload.get("progress", 0.0), "progress", 0.0, 1.0),
        eta_s=None if eta_s is None else _number(eta_s, "eta_s", 0.0),
        message=_text(payload.get("message", ""), "message", _MAX_TEXT_CHARS),
        epoch=_integer(payload.get("epoch", 0), "epoch", 0, 10**9),
        epochs=_integer(payload.get("epochs", 0), "epochs", 0, 10**9),
        pid=None if pid is None else _integer(pid, "pid", 1, 2**31),
        host=_text(payload.get("host", ""), "host", 255),
        error=_optional_text(payload.get("error"), "error", 4 * _MAX_TEXT_CHARS),
        updated=_number(payload.get("updated", 0.0), "updated", 0.0),
    )


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------


def write_status(folder: Path, status: RunStatus) -> None:
    payload = dataclasses.asdict(status)
    payload["updated"] = time.time()
    if not payload["host"]:
        payload["host"] = socket.gethostname()
    write_json_atomic(Path(folder) / STATUS_FILE, payload)


def process_alive(pid: int) -> bool:
    """True while the process exists and has not exited (a zombie counts as gone)."""
    return _process_alive(pid)


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
    """The run's status; never raises.

    A missing or malformed status.json reads as a failed run with the reason. A run whose worker
    died without saying so (killed, or the machine restarted) is settled on this read: its
    status.json is rewritten as failed (or stopped, when a stop had been asked for) with the
    epochs it finished, its temporary files and extracted data are removed, and the best
    finished epoch's model stays.
    """
    folder = Path(folder)
    try:
        status = _checked_status(_read_json(folder / STATUS_FILE, _MAX_STATUS_BYTES))
    except _MissingFileError:
        return RunStatus("failed", error="this run has no status.json")
    except ValueError as error:
        return RunStatus("failed", error=_problem(STATUS_FILE, error))
    if not status.active or status.host not in ("", socket.gethostname()):
        return status
    pid = status.pid if status.pid is not None else _worker_pid(folder)
    if pid is not None and not _process_alive(pid):
        return _settle_dead_run(
            folder, status, "the training process ended without finishing (killed, or the machine restarted)"
        )
    if pid is None and time.time() - status.updated > _UNKNOWN_WORKER_GRACE_S:
        # No process to ask about (a start that never launched its worker, or a hand-made status):
        # it must not hold a training slot forever.
        return _settle_dead_run(folder, status, "no training process was recorded for this run")
    return status


def _settle_dead_run(folder: Path, status: RunStatus, what_happened: str) -> RunStatus:
    """Makes a dead worker's run consistent on disk, and returns the status it now has."""
    finished = len(read_metrics(folder))
    epochs = f"{finished} finished epoch" + ("" if finished == 1 else "s")
    if stop_requested(folder):
        settled = dataclasses.replace(
            status, state="stopped", epoch=finished, eta_s=0.0, message=f"stopped after {epochs}"
        )
    else:
        kept = (
            "; the model of its best finished epoch is kept" if _is_regular_file(folder / MODEL_FILE) else ""
        )
        settled = dataclasses.replace(
            status,
            state="failed",
            epoch=finished,
            eta_s=None,
            error=f"{what_happened} after {epochs}{kept}; see {LOG_FILE} in the run folder",
        )
    try:
        write_status(folder, settled)
        remove_temporary_files(folder)
        free_run_data(folder)
    except OSError:
        pass  # a folder this process may not write still reads as settled
    return settled


def _worker_pid(folder: Path) -> int | None:
    """The pid start_run recorded, for a worker that has not written its status yet."""
    try:
        pid = int(_read_bytes(folder / WORKER_PID_FILE, 64).decode("ascii").strip())
    except (ValueError, UnicodeDecodeError):
        return None
    return pid if 0 < pid < 2**31 else None


def request_stop(folder: str | Path) -> None:
    """Asks the run's trainer to stop after its current step (it polls for this file)."""
    (Path(folder) / STOP_FILE).touch()


def stop_requested(folder: str | Path) -> bool:
    return (Path(folder) / STOP_FILE).exists()


def remove_temporary_files(folder: str | Path) -> None:
    """Removes the ``.<name>.*.tmp`` files an atomic write leaves when its process is killed mid-write."""
    for path in Path(folder).glob(".*.tmp"):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)


def free_run_data(folder: str | Path) -> None:
    """Deletes a run's extracted upload (data/) and any upload.zip still waiting: failed and
    stopped runs give their disk back. Data the run read from elsewhere is never touched."""
    folder = Path(folder)
    data = folder / DATA_FOLDER
    if data.is_dir() and not data.is_symlink():
        shutil.rmtree(data, ignore_errors=True)
    upload = folder / UPLOAD_FILE
    if upload.is_file() and not upload.is_symlink():
        upload.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# How many runs, how much disk
# --------------------------------------------------------------------------------------------


def _positive_setting(name: str, default: int) -> int:
    """An operator's whole-number setting from the environment; a typo is an error, not a default."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise RunError(f"{name} must be a whole number of at least 1, got {_clip(text)!r}.")
    return value


def max_concurrent_runs() -> int:
    """Fine-tunes that may train at once on this server: ``$VITVIZ_MAX_RUNS``, default 2."""
    return _positive_setting(MAX_RUNS_ENV, DEFAULT_MAX_RUNS)


def run_disk_limit() -> int:
    """Bytes one run folder may hold: ``$VITVIZ_RUN_DISK_BYTES``, default 2 GiB.

    Extracted images, checkpoints and the final model all count. An upload is refused when it
    would unpack to more; a checkpoint that would not fit ends the run with a clear error.
    """
    return _positive_setting(RUN_DISK_ENV, DEFAULT_RUN_DISK_BYTES)


def folder_bytes(folder: str | Path) -> int:
    """Bytes of the files under `folder` (links are not followed)."""
    total = 0
    for directory, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                continue  # removed while counting
    return total


def _size_text(byte_count: int) -> str:
    if byte_count >= 1024**3:
        return f"{byte_count / 1024**3:.1f} GiB"
    return f"{byte_count / 1024**2:.1f} MiB"


def check_disk_room(folder: str | Path, more_bytes: int) -> None:
    """Raises RunError when writing `more_bytes` into the run folder would pass run_disk_limit()."""
    limit = run_disk_limit()
    used = folder_bytes(folder)
    if used + more_bytes > limit:
        raise RunError(
            f"Run {Path(folder).name} would hold {_size_text(used + more_bytes)}, more than the "
            f"{_size_text(limit)} of disk a run may use ({RUN_DISK_ENV})."
        )


@contextmanager
def start_lock(root: Path | None = None) -> Iterator[None]:
    """Held while a start counts the active runs and creates its folder, so that two visitors who
    press Start at once cannot both take the last free slot (an advisory lock on a file)."""
    root = runs_root() if root is None else Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / _START_LOCK_FILE, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Config, labels, metrics, predictions, model
# --------------------------------------------------------------------------------------------


def write_config(folder: Path, config: dict[str, Any]) -> None:
    """config.json, and labels.json beside it when the labels are known."""
    write_json_atomic(Path(folder) / CONFIG_FILE, config)
    if config.get("labels"):
        write_json_atomic(Path(folder) / LABELS_FILE, list(config["labels"]))


def read_config(folder: str | Path) -> dict[str, Any]:
    """The run's config.json, checked with validate_run_config.

    Raises:
        RunError: the file is missing, unreadable or breaks the schema (one line, naming the run).
    """
    name = Path(folder).name
    try:
        return validate_run_config(_read_json(Path(folder) / CONFIG_FILE, _MAX_CONFIG_BYTES))
    except ValueError as error:
        raise RunError(f"Run {name}: {_problem(CONFIG_FILE, error)}.") from error


def append_metrics(folder: Path, row: dict[str, float]) -> None:
    """Adds one epoch's line to metrics.jsonl (a line is written in one call, so readers see it whole)."""
    with open(Path(folder) / METRICS_FILE, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(row) + "\n")


_METRIC_FIELDS = ("train_loss", "val_loss", "val_acc", "seconds")


def _metrics_row(line: str) -> dict[str, float] | None:
    """One line of metrics.jsonl as the trainer writes it, or None for anything else."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(row, dict):
        return None
    epoch = row.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        return None
    values = [row.get(field) for field in _METRIC_FIELDS]
    if not all(isinstance(value, int | float) and not isinstance(value, bool) for value in values):
        return None  # NaN is allowed: a loss can be one
    return {
        "epoch": epoch,
        **{field: float(value) for field, value in zip(_METRIC_FIELDS, values, strict=True)},
    }


def read_metrics(folder: str | Path) -> list[dict[str, float]]:
    """Every complete line of metrics.jsonl, up to the first that is not one the trainer wrote
    (a line still being written is left for the next read). Never raises."""
    try:
        data = _read_bytes(Path(folder) / METRICS_FILE, _MAX_METRICS_BYTES)
    except ValueError:
        return []
    rows = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        row = _metrics_row(line)
        if row is None:
            break
        rows.append(row)
    return rows


def read_log_tail(folder: str | Path, max_bytes: int = 4000) -> str:
    """The last `max_bytes` of the worker's log, as text; "" when it is missing or not a plain file.

    Only the tail is read, however long the log has grown; bytes that are not UTF-8 read as "\ufffd".
    """
    return read_tail(Path(folder) / LOG_FILE, max_bytes)


def read_tail(path: Path, max_bytes: int) -> str:
    """The last `max_bytes` of a log file, as text; "" when it is missing or not a plain file.

    Only the tail is read, however long the file has grown, and a FIFO is never waited on; bytes
    that are not UTF-8 read as "\ufffd".
    """
    try:
        with _open_plain_file(path) as stream:
            stream.seek(max(0, os.fstat(stream.fileno()).st_size - max_bytes))
            return stream.read(max_bytes).decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return ""


def write_val_predictions(folder: Path, predictions: list[dict[str, Any]]) -> None:
    write_json_atomic(Path(folder) / VAL_PREDICTIONS_FILE, predictions)


def _prediction_row(row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ValueError("holds an entry that is not an object")
    return {
        "key": _text(row.get("key"), "key", _MAX_PATH_CHARS),
        "label": _integer(row.get("label"), "label", 0, MAX_LABELS - 1),
        "predicted": _integer(row.get("predicted"), "predicted", 0, MAX_LABELS - 1),
        "probability": _number(row.get("probability"), "probability", 0.0, 1.0),
    }


def read_val_predictions(folder: str | Path) -> list[dict[str, Any]]:
    """The fine-tuned model's answer per validation image ([] before the run has written them).

    Raises:
        RunError: the file is unreadable or holds something the worker does not write.
    """
    path = Path(folder) / VAL_PREDICTIONS_FILE
    if not path.exists() and not path.is_symlink():
        return []
    try:
        rows = _read_json(path, _MAX_PREDICTIONS_BYTES)
        if not isinstance(rows, list):
            raise ValueError("is not a list")
        return [_prediction_row(row) for row in rows]
    except ValueError as error:
        raise RunError(f"Run {Path(folder).name}: {_problem(VAL_PREDICTIONS_FILE, error)}.") from error


def save_state_dict(folder: Path, state: dict[str, torch.Tensor]) -> Path:
    """Writes a model's state dict as model.safetensors, atomically, within the run's disk limit.

    Raises:
        RunError: the file would take the run past run_disk_limit().
    """
    target = Path(folder) / MODEL_FILE
    tensors = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in state.items()}
    check_disk_room(folder, sum(tensor.numel() * tensor.element_size() for tensor in tensors.values()))
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".model.", suffix=".tmp")
    os.close(handle)
    try:
        safetensors.torch.save_file(tensors, temp_name, metadata={"format": "pt"})
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target


def save_model(folder: Path, model: nn.Module) -> Path:
    """Writes the model's full state dict as model.safetensors (see save_state_dict)."""
    return save_state_dict(folder, model.state_dict())


@dataclass(frozen=True)
class RunModel:
    """What a run folder says about its model: enough for `vitviz.models.load_model` to build it."""

    timm_name: str  # the architecture the run fine-tuned
    labels: tuple[str, ...]  # class names, in label order; the head has len(labels) outputs
    build_args: dict[str, Any]  # checked keyword arguments of timm.create_model: img_size only
    weights_file: Path  # the fine-tuned state dict


def read_run_model(folder: str | Path) -> RunModel:
    """The model a run folder describes, from its checked config.json only.

    Raises:
        RunError: config.json is unreadable or breaks the schema, names no classes, or the run
            has no trained model yet.
    """
    folder = Path(folder)
    config = read_config(folder)
    labels = tuple(config["labels"])
    if not labels:
        raise RunError(f"Run {folder.name} has no classes yet ({read_status(folder).state}).")
    build_args = dict(config.get("build_args", {}))
    # The head's size comes from the labels; a build_args entry may only agree with them.
    classes = build_args.pop("num_classes", len(labels))
    if classes != len(labels):
        raise RunError(
            f"Run {folder.name}: config.json build_args.num_classes is {classes} but there are "
            f"{len(labels)} labels."
        )
    if "img_size" in build_args and isinstance(build_args["img_size"], list):
        build_args["img_size"] = tuple(build_args["img_size"])
    if not _is_regular_file(folder / MODEL_FILE):
        raise RunError(f"Run {folder.name} has no trained model ({read_status(folder).state}).")
    return RunModel(config["timm_name"], labels, build_args, folder / MODEL_FILE)


def describe_run(folder: str | Path) -> str:
    """A short label for a run as a weights source; says when it started from random weights."""
    folder = Path(folder)
    try:
        config = read_config(folder)
    except RunError:
        return f"run {folder.name} (unreadable)"
    origin = " from random weights" if config.get("weights") == "random" else ""
    return f"fine-tuned run {folder.name} ({config.get('mode', '?')}{origin})"


# --------------------------------------------------------------------------------------------
# Listing and deleting
# --------------------------------------------------------------------------------------------


def _created(config: dict[str, Any] | None, folder: Path) -> float:
    if config is not None and "created" in config:
        return config["created"]
    try:
        return folder.lstat().st_mtime
    except OSError:
        return 0.0


def _summary(folder: Path) -> RunSummary:
    """The run as listed; a broken config.json gives a run marked broken, never an exception.

    A folder whose name no page could open it by is marked broken without reading anything in it.
    """
    name_problem = _folder_name_problem(folder.name)
    if name_problem is not None:
        problem = f"Run {_clip(_shown_name(folder.name))}: {name_problem}."
        return RunSummary(
            folder,
            "?",
            "?",
            "?",
            (),
            "?",
            RunStatus("failed", error=problem),
            _created(None, folder),
            problem,
        )
    status = read_status(folder)
    try:
        config = read_config(folder)
    except RunError as error:
        problem = str(error)
        # A worker still alive keeps its state; anything else with a broken config cannot be used.
        shown = status if status.active else dataclasses.replace(status, state="failed", error=problem)
        return RunSummary(folder, "?", "?", "?", (), "?", shown, _created(None, folder), problem)
    return RunSummary(
        folder=folder,
        model=config["timm_name"],
        weights=config.get("weights", "?"),
        mode=config.get("mode", "?"),
        labels=tuple(config["labels"]),
        data=config.get("data", {}).get("label", "?"),
        status=status,
        created=_created(config, folder),
        base_model=config.get("base_model", "?"),
    )


def list_runs(root: Path | None = None) -> list[RunSummary]:
    """Every run folder directly under `root` (default runs_root()), newest first; never raises.

    Links and hidden entries are not runs. A folder that cannot be read is listed as broken, with
    the reason in `problem`, so that one bad folder never takes a page down.
    """
    root = runs_root() if root is None else Path(root)
    try:
        folders = [
            entry
            for entry in root.iterdir()
            if not entry.name.startswith(".") and not entry.is_symlink() and entry.is_dir()
        ]
    except OSError:
        return []
    return sorted((_summary(folder) for folder in folders), key=lambda s: s.created, reverse=True)


# A pair of runs (vitviz.finetune.pair) trains as one detached process that makes its two run
# folders in turn. Its job folder lives here, beside the runs, so that the training cap sees it.
PAIR_JOBS_FOLDER = ".pairs"  # in the runs folder; hidden, so list_runs never takes a job for a run
PAIR_JOB_PID_FILE = "pid"  # the pair process, written by whoever started it
PAIR_JOB_RUNS_FILE = "runs.json"  # {side: run folder name}, rewritten before each side's run starts
_MAX_PAIR_JOB_RUNS_BYTES = 64 * 1024


def _live_pair_jobs(root: Path) -> list[set[str]]:
    """For each pair job whose process still lives, the names of the run folders it has made."""
    try:
        folders = [entry for entry in (root / PAIR_JOBS_FOLDER).iterdir() if not entry.is_symlink()]
    except OSError:
        return []
    jobs = []
    for folder in folders:
        try:
            pid = int(_read_bytes(folder / PAIR_JOB_PID_FILE, 64).decode("ascii").strip())
        except (ValueError, UnicodeDecodeError):
            continue
        if not (0 < pid < 2**31 and _process_alive(pid)):
            continue
        try:
            runs = _read_json(folder / PAIR_JOB_RUNS_FILE, _MAX_PAIR_JOB_RUNS_BYTES)
        except ValueError:
            runs = {}  # alive, no run folder made yet
        jobs.append({str(name) for name in runs.values()} if isinstance(runs, dict) else set())
    return jobs


def training_count(root: Path | None = None) -> int:
    """Training slots in use: each active run, and each live pair job once for its whole life.

    A pair job holds one slot from its start until its process ends, also while neither of its runs
    is active (before the first starts, and between the ViT's end and the CNN's start); its active
    run is not counted a second time.
    """
    root = runs_root() if root is None else Path(root)
    jobs = _live_pair_jobs(root)
    claimed = set().union(*jobs) if jobs else set()
    return len(jobs) + sum(1 for run in active_runs(root) if run.name not in claimed)


@contextmanager
def training_slot(root: Path | None = None) -> Iterator[None]:
    """Claims one of the server's training slots: inside, the caller creates what makes its run active.

    Counting the active runs and claiming a slot happen under `start_lock`, so two visitors who press
    Start at once cannot both take the last free slot.

    Raises:
        RunLimitError: the server already trains `max_concurrent_runs()` runs; nothing is claimed.
    """
    with start_lock(root):
        training = training_count(root)
        if training >= max_concurrent_runs():
            runs = f"{training} fine-tune" + ("" if training == 1 else "s")
            raise RunLimitError(
                f"The server is already training {runs}, as many as it runs at once; "
                "try again when one has finished or been stopped."
            )
        yield


def active_runs(root: Path | None = None) -> list[RunSummary]:
    """The runs whose worker is starting or training now, newest first (dead workers do not count)."""
    return [run for run in list_runs(root) if run.status.active]


def delete_run(folder: str | Path, root: Path | None = None, *, owner: str | None = None) -> None:
    """Deletes a run folder that lies directly in `root` and is not training.

    Args:
        owner: the session token of a visitor, who may delete only the runs that session started
            (see check_owner); None for the operator (the command line), who may delete any.

    Raises:
        RunError: the folder is not a run folder in the runs folder, is still training, or was not
            started by `owner`.
    """
    root = runs_root() if root is None else Path(root)
    folder = Path(folder)
    try:
        inside = (
            folder.parent.resolve() == root.resolve()
            and not folder.is_symlink()
            and folder.is_dir()
            and (folder / STATUS_FILE).exists()
        )
    except (OSError, ValueError):
        inside = False
    if not inside:
        raise RunError(f"{_clip(folder.name)!r} is not a run folder in the runs folder; nothing was deleted.")
    check_owner(folder, owner, "delete")
    if read_status(folder).active:
        raise RunError(f"Run {folder.name} is still training: stop it first.")
    shutil.rmtree(folder)


# --------------------------------------------------------------------------------------------
# Who may stop or delete a run
# --------------------------------------------------------------------------------------------

# A served app's visitor may stop or delete only the runs their session started. The session keeps
# a random token; the run's config.json records only its digest (owner_key), so nothing on disk or
# in a listing lets another visitor act as that session. The operator (the command line) passes no
# token and may act on every run. Pair jobs hand the key to their worker in this variable.
OWNER_ENV = "VITVIZ_RUN_OWNER"


def owner_key(token: str) -> str:
    """What config.json records for the session holding `token`: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def owned_by(folder: str | Path, owner: str | None) -> bool:
    """True when `owner` may stop or delete the run: the operator (None) always, a session token
    only when the run's config.json names that session. A run with an unreadable config.json
    belongs to the operator alone."""
    if owner is None:
        return True
    try:
        recorded = read_config(folder).get("owner")
    except RunError:
        return False
    return recorded is not None and hmac.compare_digest(recorded, owner_key(owner))


def check_owner(folder: str | Path, owner: str | None, action: str = "stop") -> None:
    """Raises RunError unless `owner` may `action` ("stop", "delete") the run (see owned_by)."""
    if not owned_by(folder, owner):
        raise RunError(
            f"Only the visitor whose session started run {_clip(Path(folder).name)} can {action} it "
            "(the server's operator can, from the command line)."
        )


# --------------------------------------------------------------------------------------------
# Background jobs: one server-wide cap for the work pages hand to worker processes
# --------------------------------------------------------------------------------------------

# Head rankings (vitviz.head_ranking) and any other job a page starts in a worker take a slot here;
# fine-tunes have their own cap (max_concurrent_runs). A job is a file named by its process id in
# this folder of the runs folder, so every process of the server (and a restart) counts the same.
JOBS_FOLDER = ".jobs"
MAX_JOBS_ENV = "VITVIZ_MAX_JOBS"  # background jobs that may run at once on this server
DEFAULT_MAX_JOBS = 2


class JobLimitError(RunError):
    """A background job was refused because the server already runs as many as it allows."""


def max_background_jobs() -> int:
    """Background jobs that may run at once on this server: ``$VITVIZ_MAX_JOBS``, default 2."""
    return _positive_setting(MAX_JOBS_ENV, DEFAULT_MAX_JOBS)


def background_job_count(root: Path | None = None) -> int:
    """Background jobs whose process still lives; the files of ended ones are removed on the way."""
    folder = (runs_root() if root is None else Path(root)) / JOBS_FOLDER
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    alive = 0
    for entry in entries:
        if entry.name.isdigit() and 0 < int(entry.name) < 2**31 and _process_alive(int(entry.name)):
            alive += 1
        else:
            entry.unlink(missing_ok=True)
    return alive


@contextmanager
def background_job_slot(root: Path | None = None) -> Iterator[Callable[[int], None]]:
    """Claims one of the server's background-job slots for a process the caller starts inside.

    Yields a function to call with the started process's id: the slot is held while that process
    lives. Counting and claiming happen under `start_lock`, so two visitors cannot both take the
    last slot; a caller whose start fails registers nothing and holds nothing.

    Raises:
        JobLimitError: the server already runs `max_background_jobs()` jobs; nothing is claimed.
    """
    root = runs_root() if root is None else Path(root)
    with start_lock(root):
        running, allowed = background_job_count(root), max_background_jobs()
        if running >= allowed:
            raise JobLimitError(
                f"The server is already running {running} background job{'' if running == 1 else 's'} "
                f"(head rankings and the like), as many as it runs at once ({MAX_JOBS_ENV}); try again "
                "when one has finished."
            )

        def register(pid: int) -> None:
            folder = root / JOBS_FOLDER
            folder.mkdir(exist_ok=True)
            (folder / str(pid)).touch()

        yield register


# The name every job starter gives its folder ("20261206-142343-8f5804"): a time stamp and 6 hex digits.
JOB_NAME = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")


def job_folder_by_name(name: str, jobs_folder: str, what: str, root: str | Path | None = None) -> Path:
    """The folder of a background job (a pair's training, a few-shot table) called `name`.

    Args:
        name: the job's name, as its starter made it (JOB_NAME).
        jobs_folder: the folder of such jobs inside the runs folder.
        what: the job's kind, for the message ("pair job").

    Raises:
        RunError: no such job; a name of any other shape is refused without looking at the disk.
    """
    root = runs_root() if root is None else Path(root)
    text = str(name)
    folder = root / jobs_folder / text
    if not JOB_NAME.fullmatch(text) or folder.is_symlink() or not folder.is_dir():
        raise RunError(f"There is no such {what}.")
    return folder
