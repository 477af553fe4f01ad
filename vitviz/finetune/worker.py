"""Runs a fine-tune into its run folder, in this process or in a detached worker process."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import vitviz
from vitviz.finetune.data import BUILTIN_SHAPES, DataError, ImageSet, open_image_set, scan_image_folder
from vitviz.finetune.distributed import SINGLE_PROCESS, DistributedContext
from vitviz.finetune.safezip import extract_image_zip
from vitviz.finetune.trainer import FinetuneConfig, FinetuneResult, Progress, finetune
from vitviz.models import load_model
from vitviz.runs import (
    CONFIG_FILE,
    LOG_FILE,
    STATUS_FILE,
    UPLOAD_FILE,
    WORKER_PID_FILE,
    RunStatus,
    append_metrics,
    new_run_folder,
    read_config,
    read_status,
    request_stop,
    save_model,
    stop_requested,
    write_config,
    write_status,
    write_val_predictions,
)

__all__ = ["DATA_FOLDER", "execute_run", "run_image_set", "start_run", "stop_run", "worker_command"]

DATA_FOLDER = "data"  # where an uploaded zip is extracted, inside its run folder
_STATUS_INTERVAL_S = 0.5  # at most two status writes a second, however fast the steps are
_STOP_POLL_S = 0.25
# Files start_run leaves in a folder before the worker takes it over.
_PREPARED_FILES = frozenset({STATUS_FILE, CONFIG_FILE, UPLOAD_FILE, LOG_FILE, WORKER_PID_FILE})
_PROJECT_ROOT = Path(vitviz.__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# Starting and stopping a detached worker
# --------------------------------------------------------------------------------------------


def worker_command(config: FinetuneConfig, data: str, out: Path, data_label: str | None = None) -> list[str]:
    """The `python -m vitviz finetune ...` command line that trains `config` into `out`."""
    command = [
        sys.executable,
        "-m",
        "vitviz",
        "finetune",
        "--data",
        data,
        "--out",
        str(out),
        *config.to_argv(),
    ]
    if data_label:
        command += ["--data-label", data_label]
    return command


def start_run(
    config: FinetuneConfig,
    data: str,
    *,
    root: Path | None = None,
    upload: bytes | None = None,
    upload_name: str | None = None,
) -> Path:
    """Starts a fine-tune in a new process, detached from the caller, and returns its run folder.

    The worker is its own session: it keeps training through a page refresh, a closed tab or a
    restart of the Streamlit server. Everything it does is read back from the run folder.

    Args:
        config: what and how to train.
        data: "builtin:shapes", a .zip or a folder; ignored when `upload` is given.
        root: the runs folder (default runs_root()).
        upload: the bytes of an uploaded .zip; it is saved into the run folder and extracted there.
        upload_name: the upload's file name, to show.
    """
    folder = new_run_folder(config.model, config.mode, root)
    label = data
    if upload is not None:
        (folder / UPLOAD_FILE).write_bytes(upload)
        data, label = str(folder / UPLOAD_FILE), upload_name or "uploaded .zip"
    write_config(folder, _preliminary_config(config, label))
    write_status(folder, RunStatus("starting", message="starting the worker"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }
    with open(folder / LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            worker_command(config, data, folder, label),
            cwd=_PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (folder / WORKER_PID_FILE).write_text(str(process.pid))
    # Reap the child when it ends, so a finished worker does not linger as a zombie of the server.
    threading.Thread(target=process.wait, name=f"reap-{folder.name}", daemon=True).start()
    return folder


def stop_run(folder: str | Path) -> None:
    """Asks a run to stop after its current step; the model trained so far is kept."""
    request_stop(folder)


# --------------------------------------------------------------------------------------------
# Training into a run folder (what the worker process does)
# --------------------------------------------------------------------------------------------


def _preliminary_config(config: FinetuneConfig, data_label: str) -> dict[str, Any]:
    return {
        "timm_name": Path(config.model).name,
        "weights": config.weights,
        "base_model": config.model,
        "mode": config.mode,
        "hyperparameters": config.hyperparameters(),
        "labels": [],
        "data": {"label": data_label},
        "created": time.time(),
    }


def _claim(out: Path) -> float:
    """Checks that `out` is new, empty, or prepared by start_run; returns its creation time."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder.")
    if out.is_dir():
        extra = {path.name for path in out.iterdir()} - _PREPARED_FILES
        prepared = (out / STATUS_FILE).is_file() and read_status(out).state == "starting"
        if extra or ((out / STATUS_FILE).exists() and not prepared):
            raise ValueError(f"--out {out} already holds a run or other files; pick a new folder.")
        if (out / CONFIG_FILE).is_file():
            return float(read_config(out).get("created", time.time()))
    out.mkdir(parents=True, exist_ok=True)
    return time.time()


def _open_data(data: str, out: Path, context: DistributedContext, stack: ExitStack) -> tuple[ImageSet, str]:
    """The image set, and its class root as config.json records it (relative to `out` when inside)."""
    if data.lower().endswith(".zip"):
        source = Path(data)
        if not source.is_file():
            raise DataError(f"{data} is not a file.")
        # Rank 0 extracts into the run folder; other ranks into a private folder of their own, so
        # several machines never need a shared disk and never write into each other's files.
        target = (
            out / DATA_FOLDER
            if context.is_main
            else Path(stack.enter_context(tempfile.TemporaryDirectory())) / "d"
        )
        contents = extract_image_zip(source, target)
        image_set = scan_image_folder(target)
        # Files the archive held but extraction skipped are listed too, with their paths in the zip.
        image_set = dataclasses.replace(
            image_set, skipped=tuple(sorted({*image_set.skipped, *contents.skipped}))
        )
        context.barrier()
        if context.is_main and source.resolve().parent == out.resolve():
            source.unlink()  # the upload lives on as the extracted images
        assert image_set.root is not None
        root = image_set.root.resolve().relative_to(out.resolve()) if context.is_main else image_set.root
        return image_set, str(root)
    image_set = open_image_set(data)
    return image_set, str(image_set.root.resolve()) if image_set.root is not None else ""


def run_image_set(folder: str | Path) -> ImageSet:
    """The images a run trained on, opened again from what its config.json recorded."""
    folder = Path(folder)
    data = read_config(folder).get("data", {})
    if data.get("spec") == BUILTIN_SHAPES:
        return open_image_set(BUILTIN_SHAPES)
    root = Path(data.get("root", ""))
    return scan_image_folder(root if root.is_absolute() else folder / root)


@dataclass
class _StatusWriter:
    """Turns progress reports into status.json writes (throttled) and metrics.jsonl lines."""

    folder: Path
    log: Callable[[str], None]
    last_write: float = 0.0

    def __call__(self, progress: Progress) -> None:
        if progress.metrics is not None:
            append_metrics(self.folder, progress.metrics.as_dict())
            m = progress.metrics
            self.log(
                f"epoch {m.epoch}/{progress.epochs}: train loss {m.train_loss:.4f}, "
                f"val loss {m.val_loss:.4f}, val acc {m.val_acc:.1%} ({m.seconds:.2f} s)"
            )
        now = time.monotonic()
        if progress.metrics is None and now - self.last_write < _STATUS_INTERVAL_S:
            return
        self.last_write = now
        write_status(
            self.folder,
            RunStatus(
                "running",
                progress=progress.fraction,
                eta_s=progress.eta_s,
                message=progress.message,
                epoch=progress.epoch,
                epochs=progress.epochs,
                pid=os.getpid(),
            ),
        )


def _watch_stop_file(folder: Path, stop: threading.Event, done: threading.Event) -> None:
    while not done.wait(_STOP_POLL_S):
        if stop_requested(folder):
            stop.set()
            return


def execute_run(
    config: FinetuneConfig,
    data: str,
    out: str | Path,
    *,
    context: DistributedContext = SINGLE_PROCESS,
    data_label: str | None = None,
    log: Callable[[str], None] = print,
) -> FinetuneResult:
    """Trains `config` on `data` and writes the run folder `out` (rank 0 only writes).

    A `stop` file in the folder or SIGTERM stops training after the current step; the model
    trained so far is still saved. Any failure is recorded in status.json before it is raised.
    """
    out = Path(out)
    config = config.resolved()
    stop = threading.Event()
    done = threading.Event()
    claimed = False
    with ExitStack() as stack:
        try:
            created = _claim(out) if context.is_main else 0.0
            claimed = context.is_main
            if context.is_main:
                write_status(
                    out, RunStatus("running", message="loading the model and the data", pid=os.getpid())
                )
                watcher = threading.Thread(target=_watch_stop_file, args=(out, stop, done), daemon=True)
                watcher.start()
                stack.callback(done.set)
            if threading.current_thread() is threading.main_thread():
                previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
                stack.callback(signal.signal, signal.SIGTERM, previous)
            image_set, root = _open_data(data, out, context, stack)
            base = load_model(config.model, config.weights, config.device)
            if context.is_main:
                write_config(
                    out,
                    _final_config(config, base.facts, image_set, data, data_label, root, created, context),
                )
            total = len(image_set.items)
            used = min(total, config.max_images or total)
            log(
                f"{total} images of {len(image_set.classes)} classes"
                + (f", {used} used (--max-images)" if used < total else "")
                + f"; fine-tuning {base.facts.name} ({config.mode}) on {context.world_size} process(es)"
            )
            result = finetune(
                config,
                image_set,
                base=base,
                on_progress=_StatusWriter(out, log) if context.is_main else None,
                stop=stop,
                context=context,
            )
            if context.is_main:
                _record_result(out, result)
            return result
        except BaseException as error:
            if claimed:
                message = str(error) or type(error).__name__
                write_status(out, RunStatus("failed", error=message, pid=os.getpid()))
            raise


def _final_config(
    config: FinetuneConfig,
    facts: Any,
    image_set: ImageSet,
    data: str,
    data_label: str | None,
    root: str,
    created: float,
    context: DistributedContext,
) -> dict[str, Any]:
    # ViTs are rebuilt at the input size they were trained at (DINOv2's default is 518 px).
    build_args = {"img_size": list(facts.input_size)} if facts.family != "cnn" else {}
    return {
        "timm_name": facts.name,
        "weights": config.weights,
        "base_model": config.model,
        "mode": config.mode,
        "hyperparameters": config.hyperparameters(),
        "labels": list(image_set.classes),
        "num_classes": len(image_set.classes),
        "build_args": build_args,
        "data": {
            "spec": BUILTIN_SHAPES if data == BUILTIN_SHAPES else data,
            "label": data_label or data,
            "root": root,
            "images": len(image_set.items),
            "class_counts": image_set.class_counts(),
            "skipped": list(image_set.skipped[:200]),
        },
        "device": config.device,
        "world_size": context.world_size,
        "created": created,
    }


def _record_result(out: Path, result: FinetuneResult) -> None:
    if result.model is not None:
        save_model(out, result.model)
    write_val_predictions(
        out,
        [
            {"key": p.key, "label": p.label, "predicted": p.predicted, "probability": p.probability}
            for p in result.val_predictions
        ],
    )
    last = result.metrics[-1] if result.metrics else None
    summary = f"val acc {last.val_acc:.1%} after {last.epoch} epochs" if last else "no epoch finished"
    state = "stopped" if result.stopped else "finished"
    write_status(
        out,
        RunStatus(
            state,
            progress=1.0 if state == "finished" else len(result.metrics) / max(1, result.config.epochs or 1),
            eta_s=0.0,
            message=f"{state}: {summary}",
            epoch=len(result.metrics),
            epochs=result.config.epochs or 0,
            pid=os.getpid(),
        ),
    )
