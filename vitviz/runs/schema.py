"""What a run folder holds, as the worker writes it: its file names, their limits, and the checks every reader applies."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import timm

from vitviz.runs.safe_io import clip

__all__ = [
    "ACTIVE_STATES",
    "CONFIG_FILE",
    "DATA_FOLDER",
    "LABELS_FILE",
    "LOG_FILE",
    "MAX_LABELS",
    "MAX_LABEL_CHARS",
    "MAX_RUN_NAME_CHARS",
    "MAX_RUN_TITLE_CHARS",
    "METRICS_FILE",
    "MODEL_FILE",
    "SHORT_TITLE_CHARS",
    "STATUS_FILE",
    "STOP_FILE",
    "TITLE_PUNCTUATION",
    "UPLOAD_FILE",
    "VAL_PREDICTIONS_FILE",
    "WORKER_PID_FILE",
    "RunError",
    "RunState",
    "RunStatus",
    "check_run_title",
    "checked_prediction",
    "checked_status",
    "metrics_row",
    "validate_run_config",
]


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

MAX_RUN_NAME_CHARS = 128  # new_run_folder's names are under 80 characters
MAX_RUN_TITLE_CHARS = 60  # a name the user gives a run (config.json "title"), in characters
SHORT_TITLE_CHARS = 32  # a title shown in full up to this length; longer ones are cut, whole on hover
MAX_LABELS = 10_000
MAX_LABEL_CHARS = 200
_MAX_PATH_CHARS = 4096  # a path as config.json records it (data root, weights file)
_MAX_TEXT_CHARS = 1000  # labels of data sources, status messages
_MAX_IMAGE_SIDE = 4096  # largest img_size a run may ask timm to build
_MAX_SKIPPED = 1000  # file names config.json lists as skipped


class RunError(ValueError):
    """A run folder that cannot be read or used: one line for the user, without server paths."""


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
        raise ValueError(f"field 'timm_name' names no timm model ({clip(name)!r})")
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
        raise ValueError(f"field 'build_args' may only hold {allowed}, not {clip(str(unknown[0]))!r}")
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
        raise ValueError(f"field {field!r} has an unknown entry {clip(str(unknown[0]))!r}")
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
    "title": lambda value: _field_title(value),  # the name the user gave the run (check_run_title)
}


# Besides letters and digits (of any script) and spaces, a title may hold these: nothing that
# Markdown, HTML or a shell reads specially, and no path separator.
TITLE_PUNCTUATION = "-_.,()+'%·"


def check_run_title(text: str) -> str:
    """A name a user typed for a run, tidied (runs of spaces made one), or why it cannot be one.

    The name is what pickers, titles and captions show; the run's folder keeps its own safe name.

    Returns:
        The tidied name; "" when only spaces were typed (the run then has no name of its own).

    Raises:
        ValueError: a sentence for the user: too long, or a character a name may not hold (a
            path, markup or a control character), quoted back at most 40 characters long.
    """
    tidy = " ".join(str(text).split())
    if len(tidy) > MAX_RUN_TITLE_CHARS:
        raise ValueError(
            f"A run name has at most {MAX_RUN_TITLE_CHARS} characters; this one has {len(tidy):,}."
        )
    if "/" in tidy or "\\" in tidy:
        raise ValueError("A run name is a name, not a path: it cannot hold / or \\.")
    odd = [
        character for character in tidy if not (character.isalnum() or character in f" {TITLE_PUNCTUATION}")
    ]
    if odd:
        shown = repr(odd[0]) if odd[0].isprintable() else "a control character"
        raise ValueError(
            f"A run name holds letters, digits, spaces and {' '.join(TITLE_PUNCTUATION)} only, not {shown}."
        )
    if tidy.startswith("."):
        raise ValueError("A run name cannot start with a dot.")
    return tidy


def _field_title(value: Any) -> str:
    text = _text(value, "title", MAX_RUN_TITLE_CHARS)
    try:
        if check_run_title(text) != text or not text:
            raise ValueError("is not tidy")
    except ValueError as error:
        raise ValueError(f"field 'title' must be a run name as check_run_title keeps it ({error})") from error
    return text


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
        raise ValueError(f"has an unknown field {clip(str(unknown[0]))!r}")
    for required in ("timm_name", "labels"):
        if required not in payload:
            raise ValueError(f"lacks the field {required!r}")
    return {key: _CONFIG_FIELDS[key](value) for key, value in payload.items()}


def checked_status(payload: Any) -> RunStatus:
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


_METRIC_FIELDS = ("train_loss", "val_loss", "val_acc", "seconds")


def metrics_row(line: str) -> dict[str, float] | None:
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


def checked_prediction(row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ValueError("holds an entry that is not an object")
    return {
        "key": _text(row.get("key"), "key", _MAX_PATH_CHARS),
        "label": _integer(row.get("label"), "label", 0, MAX_LABELS - 1),
        "predicted": _integer(row.get("predicted"), "predicted", 0, MAX_LABELS - 1),
        "probability": _number(row.get("probability"), "probability", 0.0, 1.0),
    }
