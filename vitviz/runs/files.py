"""Each file of a run folder, written as the worker writes it and read back checked: status, config, metrics, predictions, model."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from vitviz.runs.limits import check_disk_room
from vitviz.runs.safe_io import (
    MissingFileError,
    clip,
    file_problem,
    is_regular_file,
    read_bytes,
    read_json,
    read_tail,
    write_json_atomic,
)
from vitviz.runs.schema import (
    CONFIG_FILE,
    DATA_FOLDER,
    LABELS_FILE,
    LOG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    SHORT_TITLE_CHARS,
    STATUS_FILE,
    STOP_FILE,
    UPLOAD_FILE,
    VAL_PREDICTIONS_FILE,
    WORKER_PID_FILE,
    RunError,
    RunStatus,
    checked_prediction,
    checked_status,
    metrics_row,
    validate_run_config,
)

__all__ = [
    "MODEL_WORDS",
    "RunModel",
    "append_metrics",
    "automatic_run_title",
    "describe_run",
    "free_run_data",
    "process_alive",
    "read_config",
    "read_log_tail",
    "read_metrics",
    "read_run_model",
    "read_status",
    "read_val_predictions",
    "remove_temporary_files",
    "request_stop",
    "save_model",
    "save_state_dict",
    "short_run_title",
    "stop_requested",
    "write_config",
    "write_status",
    "write_val_predictions",
]


# Read limits: what the worker writes stays far below them; anything larger is not a run's file.
_MAX_CONFIG_BYTES = 8 * 1024**2
_MAX_STATUS_BYTES = 1024**2
_MAX_METRICS_BYTES = 16 * 1024**2
_MAX_PREDICTIONS_BYTES = 32 * 1024**2
# An active run with no worker pid (its start never launched one) is given up after this long.
_UNKNOWN_WORKER_GRACE_S = 300.0


def write_status(folder: Path, status: RunStatus) -> None:
    payload = dataclasses.asdict(status)
    payload["updated"] = time.time()
    if not payload["host"]:
        payload["host"] = socket.gethostname()
    write_json_atomic(Path(folder) / STATUS_FILE, payload)


def process_alive(pid: int) -> bool:
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
        status = checked_status(read_json(folder / STATUS_FILE, _MAX_STATUS_BYTES))
    except MissingFileError:
        return RunStatus("failed", error="this run has no status.json")
    except ValueError as error:
        return RunStatus("failed", error=file_problem(STATUS_FILE, error))
    if not status.active or status.host not in ("", socket.gethostname()):
        return status
    pid = status.pid if status.pid is not None else _worker_pid(folder)
    if pid is not None and not process_alive(pid):
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
            "; the model of its best finished epoch is kept" if is_regular_file(folder / MODEL_FILE) else ""
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
        pid = int(read_bytes(folder / WORKER_PID_FILE, 64).decode("ascii").strip())
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
        return validate_run_config(read_json(Path(folder) / CONFIG_FILE, _MAX_CONFIG_BYTES))
    except ValueError as error:
        raise RunError(f"Run {name}: {file_problem(CONFIG_FILE, error)}.") from error


def append_metrics(folder: Path, row: dict[str, float]) -> None:
    """Adds one epoch's line to metrics.jsonl (a line is written in one call, so readers see it whole)."""
    with open(Path(folder) / METRICS_FILE, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(row) + "\n")


def read_metrics(folder: str | Path) -> list[dict[str, float]]:
    """Every complete line of metrics.jsonl, up to the first that is not one the trainer wrote
    (a line still being written is left for the next read). Never raises."""
    try:
        data = read_bytes(Path(folder) / METRICS_FILE, _MAX_METRICS_BYTES)
    except ValueError:
        return []
    rows = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        row = metrics_row(line)
        if row is None:
            break
        rows.append(row)
    return rows


def read_log_tail(folder: str | Path, max_bytes: int = 4000) -> str:
    """The last `max_bytes` of the worker's log, as text; "" when it is missing or not a plain file.

    Only the tail is read, however long the log has grown; bytes that are not UTF-8 read as "\ufffd".
    """
    return read_tail(Path(folder) / LOG_FILE, max_bytes)


def write_val_predictions(folder: Path, predictions: list[dict[str, Any]]) -> None:
    write_json_atomic(Path(folder) / VAL_PREDICTIONS_FILE, predictions)


def read_val_predictions(folder: str | Path) -> list[dict[str, Any]]:
    """The fine-tuned model's answer per validation image ([] before the run has written them).

    Raises:
        RunError: the file is unreadable or holds something the worker does not write.
    """
    path = Path(folder) / VAL_PREDICTIONS_FILE
    if not path.exists() and not path.is_symlink():
        return []
    try:
        rows = read_json(path, _MAX_PREDICTIONS_BYTES)
        if not isinstance(rows, list):
            raise ValueError("is not a list")
        return [checked_prediction(row) for row in rows]
    except ValueError as error:
        raise RunError(f"Run {Path(folder).name}: {file_problem(VAL_PREDICTIONS_FILE, error)}.") from error


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
    if not is_regular_file(folder / MODEL_FILE):
        raise RunError(f"Run {folder.name} has no trained model ({read_status(folder).state}).")
    return RunModel(config["timm_name"], labels, build_args, folder / MODEL_FILE)


def describe_run(folder: str | Path) -> str:
    """A short label for a run as a weights source, by its title (cut to SHORT_TITLE_CHARS) or else its
    folder's name (whole: it tells runs apart); says when it started from random weights."""
    folder = Path(folder)
    try:
        config = read_config(folder)
    except RunError:
        return f"run {folder.name} (unreadable)"
    origin = " from random weights" if config.get("weights") == "random" else ""
    return f"fine-tuned run {_short_title(config, folder)} ({config.get('mode', '?')}{origin})"


# Bundled models by the names their papers use; any other timm name is shown as it is.
MODEL_WORDS = {"vit_small_patch14_dinov2": "DINOv2 ViT-S", "tf_efficientnet_lite0": "EfficientNet-Lite0"}


def automatic_run_title(model: str, mode: str, data: str) -> str:
    """What a run the user did not name is called: what it is, in one line.

    "DINOv2 ViT-S · probe · shapes": the model (by its paper name when bundled), the mode and the data
    (a built-in set without its "builtin:" prefix). No accuracy: a name must not change while the run
    trains (pickers key their choices by it); the accuracy is in the runs table and the details line.
    Two runs alike differ in their details line (start time, folder).
    """
    parts = [MODEL_WORDS.get(model, model), mode, data.removeprefix("builtin:")]
    return " · ".join(part for part in parts if part and part != "?")  # what is unknown is left out


def _short_title(config: dict[str, Any], folder: Path) -> str:
    if config.get("title"):
        return clip(config["title"], SHORT_TITLE_CHARS)
    data = config.get("data", {})
    label = str(data.get("label", "?")) if isinstance(data, dict) else "?"
    return automatic_run_title(str(config.get("timm_name", "?")), str(config.get("mode", "?")), label)


def short_run_title(folder: str | Path) -> str:
    """How text names the run in one line: the name the user gave it, cut to SHORT_TITLE_CHARS, else
    its folder's name (whole: it tells runs apart); the folder's name when config.json is unreadable."""
    folder = Path(folder)
    try:
        return _short_title(read_config(folder), folder)
    except RunError:
        return folder.name
