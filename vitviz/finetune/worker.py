"""Runs a fine-tune into its run folder, in this process or in a detached worker process.

A served app bounds this work: at most max_concurrent_runs() workers train at once, a run folder
holds at most run_disk_limit() bytes, every finished epoch's best model is checkpointed (so a
killed worker loses nothing it finished), and failed or stopped runs give their extracted data back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm

import vitviz
from vitviz.finetune.data import BUILTIN_SHAPES, DataError, ImageSet, open_image_set, scan_image_folder
from vitviz.finetune.distributed import SINGLE_PROCESS, DistributedContext
from vitviz.finetune.safezip import DEFAULT_LIMITS, ZipLimits, extract_image_zip
from vitviz.finetune.trainer import FinetuneConfig, FinetuneResult, Progress, finetune
from vitviz.models import RUN_WEIGHTS, ModelError, load_model
from vitviz.roots import ServerPath, confined, in_data_root
from vitviz.runs import (
    CONFIG_FILE,
    DATA_FOLDER,
    LOG_FILE,
    MAX_LABEL_CHARS,
    MAX_LABELS,
    OWNER_ENV,
    RUN_DISK_ENV,
    STATUS_FILE,
    UPLOAD_FILE,
    WORKER_PID_FILE,
    RunError,
    RunStatus,
    append_metrics,
    check_new_run_title,
    check_owner,
    folder_bytes,
    free_run_data,
    new_run_folder,
    owner_key,
    read_config,
    read_log_tail,
    read_run_model,
    read_status,
    remove_temporary_files,
    request_stop,
    run_disk_limit,
    run_folder_by_name,
    runs_root,
    save_model,
    save_state_dict,
    stop_requested,
    training_slot,
    write_config,
    write_status,
    write_val_predictions,
)
from vitviz.text import clipped

__all__ = [
    "BACKGROUND_ENV",
    "DATA_FOLDER",
    "execute_run",
    "run_image_set",
    "shown_log",
    "spawn_background",
    "start_run",
    "stop_run",
    "worker_command",
    "yield_to_the_app",
]

_STATUS_INTERVAL_S = 0.5  # at most two status writes a second, however fast the steps are
_STOP_POLL_S = 0.25
# Files start_run leaves in a folder before the worker takes it over.
_PREPARED_FILES = frozenset({STATUS_FILE, CONFIG_FILE, UPLOAD_FILE, LOG_FILE, WORKER_PID_FILE})
_PROJECT_ROOT = Path(vitviz.__file__).resolve().parent.parent
# An absolute path of at least one folder ("/srv/x/y.png"); not "1/2" or "cats/a.png".
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/(?:[^\s'\"/:,;()]+/)+([^\s'\"/:,;()]*)")


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
    owner: str | None = None,
    title: str = "",
) -> Path:
    """Starts a fine-tune in a new process, detached from the caller, and returns its run folder.

    The worker is its own session: it keeps training through a page refresh, a closed tab or a
    restart of the Streamlit server. Everything it does is read back from the run folder. At most
    max_concurrent_runs() runs train at once on the server (``$VITVIZ_MAX_RUNS``); how many one
    visitor may start is the page's to decide (see vitviz.runs.active_runs).

    Args:
        config: what and how to train.
        data: "builtin:shapes", a .zip or a folder; ignored when `upload` is given. A page passes
            only folders checked by vitviz.serving.server_folder.
        root: the runs folder (default runs_root()).
        upload: the bytes of an uploaded .zip; it is saved into the run folder, extracted there and
            deleted.
        upload_name: the upload's file name, to show.
        owner: the session token of the visitor who starts it: only that session may stop or
            delete the run (vitviz.runs.check_owner); None, from the command line, for the operator.
        title: the name the user gave the run, shown wherever the run appears ("" for none);
            checked by vitviz.runs.check_new_run_title while the slot is claimed.

    Raises:
        RunLimitError: the server already trains as many runs as it allows; nothing was created.
        RunError: the upload alone is larger than a run may hold on disk, or `title` is no name a
            run may have (too long, a path, markup) or another run's.
        ModelError: config.model is no timm model, or with RUN_WEIGHTS no run of the runs folder
            with a model.
    """
    timm_name = _timm_name_of(config)
    root = runs_root() if root is None else Path(root)
    if upload is not None and len(upload) > run_disk_limit():
        raise RunError(f"The upload is larger than the disk a run may use ({RUN_DISK_ENV}).")
    label = _clipped(upload_name or "uploaded .zip") if upload is not None else _data_label(data)
    with training_slot(root):
        title = check_new_run_title(title, root)
        folder = new_run_folder(config.model, config.mode, root)
        write_config(folder, _preliminary_config(config, timm_name, label, owner, title))
        write_status(folder, RunStatus("starting", message="starting the worker"))
    try:
        if upload is not None:
            (folder / UPLOAD_FILE).write_bytes(upload)
            data = str(folder / UPLOAD_FILE)
        process = spawn_background(worker_command(config, data, folder, label), folder / LOG_FILE)
        (folder / WORKER_PID_FILE).write_text(str(process.pid))
    except OSError as error:  # no disk, or no process: the slot must not stay taken
        free_run_data(folder)
        write_status(
            folder, RunStatus("failed", error=f"the worker could not start: {error.strerror or error}")
        )
        raise RunError(f"The fine-tune could not start: {error.strerror or type(error).__name__}.") from error
    return folder


BACKGROUND_ENV = "VITVIZ_BACKGROUND"  # set for detached workers: they yield the cores to the app


def spawn_background(
    command: list[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen:
    """Starts `command` detached from the caller (its own session), writing to `log_path`.

    The app and its workers share a small machine: two processes with two OpenMP threads each
    slowed small tensor work 10–100× here (threads spin while they wait for a core). So a worker's
    OpenMP threads sleep rather than spin while they wait (`OMP_WAIT_POLICY=PASSIVE`) and, once
    started, the worker runs only on CPU time nobody else wants (see `yield_to_the_app`): the app's
    interactions keep the cores they need, and the worker may use every core they leave idle. The
    child is reaped when it ends, so a finished worker never lingers as a zombie of the server.

    `env` adds variables to the child's environment.

    Raises:
        OSError: the log cannot be opened or the process cannot start.
    """
    env = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
        "OMP_WAIT_POLICY": "PASSIVE",
        BACKGROUND_ENV: "1",
    }
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            cwd=_PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # At once, so that even the child's imports (seconds of CPU) yield; the child still moves
    # every thread it has when it starts its work, in case it got ahead of this call.
    _idle_class(process.pid)
    threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()
    return process


def yield_to_the_app() -> None:
    """In a worker started by `spawn_background`: run only when the app leaves a core idle.

    Linux's SCHED_IDLE class gives a core to its threads only while no ordinary thread wants it, and
    an ordinary thread that wakes takes the core back at once. So the worker keeps torch's thread
    count and may use every core the app leaves idle; measured beside a visitor on an otherwise quiet
    machine, it slowed Explore's layer steps less than one thread at nice 10 did and finished a probe
    sooner (BENCHMARKS.md, "Background work"). On a machine busy with other work the worker waits:
    it gets only the time nobody else wants. Every thread already running (importing torch starts
    one) is moved, and threads the worker starts later inherit the class. Where there is no
    SCHED_IDLE, the worker takes the lowest nice value instead.
    """
    if os.environ.get(BACKGROUND_ENV) != "1":
        return
    if not _idle_class(0):
        with contextlib.suppress(OSError):  # a platform without nice
            os.nice(19)
        return
    for task in Path("/proc/self/task").iterdir():
        _idle_class(int(task.name))


def _idle_class(thread: int) -> bool:
    """Moves a thread (0: the calling one; a process id: its main thread) into SCHED_IDLE; False
    where the platform has no such class. A thread that has ended meanwhile is left alone."""
    if not hasattr(os, "SCHED_IDLE"):
        return False
    try:
        os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
    except ProcessLookupError:
        pass
    except OSError:  # a kernel without SCHED_IDLE
        return False
    return True


def _timm_name_of(config: FinetuneConfig) -> str:
    """The timm architecture a fine-tune trains: config.model itself, or the named run's architecture."""
    if config.weights == RUN_WEIGHTS:
        try:
            return read_run_model(run_folder_by_name(config.model)).timm_name
        except RunError as error:
            raise ModelError(str(error)) from error
    if not timm.is_model(config.model):
        raise ModelError(f"timm has no model named {_clipped(config.model, 80)!r}.")
    return config.model


def _data_label(data: str) -> str:
    """How runs lists show a data source to every visitor: a folder in the data root relative to it."""
    folder = _data_root_folder(data)
    return _clipped(folder.shown if folder is not None else data)


def _clipped(text: str, limit: int = 300) -> str:
    """Text as config.json records a label: one line, at most `limit` characters."""
    return clipped(" ".join(text.split()), limit)


def stop_run(folder: str | Path, owner: str | None = None) -> None:
    """Asks a run to stop after its current step; the model trained so far is kept.

    Raises:
        RunError: `owner` (a visitor's session token; None for the operator) did not start the run.
    """
    check_owner(folder, owner, "stop")
    request_stop(folder)


# --------------------------------------------------------------------------------------------
# Training into a run folder (what the worker process does)
# --------------------------------------------------------------------------------------------


def _preliminary_config(
    config: FinetuneConfig, timm_name: str, data_label: str, owner: str | None, title: str
) -> dict[str, Any]:
    return {
        "timm_name": timm_name,
        "weights": config.weights,
        "base_model": config.model,
        "mode": config.mode,
        "hyperparameters": config.hyperparameters(),
        "labels": [],
        "data": {"label": data_label},
        "created": time.time(),
        **({"owner": owner_key(owner)} if owner is not None else {}),
        **({"title": title} if title else {}),
    }


def _claim(out: Path, title: str = "") -> dict[str, Any]:
    """Checks that `out` is new, empty, or prepared by start_run; returns what the final config.json
    keeps of it: its creation time, the owner start_run recorded or a pair job handed down, and the
    title start_run recorded or the command line's `title`."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder.")
    if out.is_dir():
        extra = {path.name for path in out.iterdir()} - _PREPARED_FILES
        prepared = (out / STATUS_FILE).is_file() and read_status(out).state == "starting"
        if extra or ((out / STATUS_FILE).exists() and not prepared):
            raise ValueError(f"--out {out} already holds a run or other files; pick a new folder.")
        if (out / CONFIG_FILE).is_file():
            prepared_config = read_config(out)
            kept = {
                key: prepared_config[key] for key in ("created", "owner", "title") if key in prepared_config
            }
            return {"created": time.time(), **({"title": title} if title else {}), **kept}
    out.mkdir(parents=True, exist_ok=True)
    owner = os.environ.get(OWNER_ENV, "")
    recorded = len(owner) == 64 and all(
        character in "0123456789abcdef" for character in owner
    )  # an owner_key
    return {
        "created": time.time(),
        **({"owner": owner} if recorded else {}),
        **({"title": title} if title else {}),
    }


def _open_data(data: str, out: Path, context: DistributedContext, stack: ExitStack) -> tuple[ImageSet, str]:
    """The image set, and its class root as config.json records it (relative to `out` when inside)."""
    if data.lower().endswith(".zip"):
        return _extract_zip(Path(data), out, context, stack)
    folder = _data_root_folder(data)
    if folder is not None:
        # A folder in the served app's data root: links out of the root are skipped, and every
        # message (status.json is shown to every visitor) names paths relative to the root.
        image_set = scan_image_folder(folder.path, shown_as=folder.shown, inside=folder.root)
    else:
        image_set = open_image_set(data)
    return image_set, str(image_set.root.resolve()) if image_set.root is not None else ""


def _data_root_folder(data: str) -> ServerPath | None:
    """`data` as a path inside the served app's data root (vitviz.roots decides), or None.

    A relative `data` is read from the working directory, as the command line reads it.
    """
    return None if data.startswith("builtin:") else in_data_root(data)


def _extract_zip(
    source: Path, out: Path, context: DistributedContext, stack: ExitStack
) -> tuple[ImageSet, str]:
    """Extracts an archive into the run folder (rank 0) and opens it; an upload is deleted either way."""
    upload = context.is_main and source.parent.resolve() == out.resolve()
    try:
        if not source.is_file():
            raise DataError(f"{source.name} is not a file.")
        # Rank 0 extracts into the run folder; other ranks into a private folder of their own, so
        # several machines never need a shared disk and never write into each other's files.
        if context.is_main:
            target = out / DATA_FOLDER
            limits = _run_zip_limits(out, source if upload else None)
        else:
            target = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "d"
            limits = DEFAULT_LIMITS
        contents = extract_image_zip(source, target, limits)
        image_set = scan_image_folder(target, shown_as=DATA_FOLDER if context.is_main else None)
        # Files the archive held but extraction skipped are listed too, with their paths in the zip.
        image_set = dataclasses.replace(
            image_set, skipped=tuple(sorted({*image_set.skipped, *contents.skipped}))
        )
        context.barrier()
    finally:
        if upload:
            source.unlink(missing_ok=True)  # kept as its extracted images, or not at all
    assert image_set.root is not None
    root = image_set.root.resolve().relative_to(out.resolve()) if context.is_main else image_set.root
    return image_set, str(root)


def _run_zip_limits(out: Path, upload: Path | None) -> ZipLimits:
    """The archive limits inside a run folder: the usual ones, and no more than the run's disk left.

    The upload itself is deleted once extracted, so it does not count against its own images.
    """
    used = folder_bytes(out) - (upload.stat().st_size if upload is not None else 0)
    room = max(0, run_disk_limit() - used)
    if room >= DEFAULT_LIMITS.max_total_bytes:
        return DEFAULT_LIMITS
    return dataclasses.replace(
        DEFAULT_LIMITS, max_total_bytes=room, total_note=f"the disk this run may still use, {RUN_DISK_ENV}"
    )


def run_image_set(folder: str | Path) -> ImageSet:
    """The images a run trained on, opened again from what its config.json recorded.

    Only a built-in set, the run's own extracted upload, or a folder inside the served app's data
    root is opened, with paths shown relative to it: a config.json that points anywhere else
    opens nothing.

    Raises:
        RunError: config.json is unreadable.
        DataError: the images are gone, or lie outside the run folder and the data root.
    """
    folder = Path(folder)
    data = read_config(folder).get("data", {})
    spec = data.get("spec", "")
    if spec.startswith("builtin:"):
        return open_image_set(spec)
    recorded = Path(data.get("root", ""))
    if not recorded.is_absolute():
        own = confined(recorded, folder)
        if own is not None:
            return scan_image_folder(own.path, shown_as=recorded.as_posix(), inside=own.root)
    else:
        shared = _data_root_folder(str(recorded))
        if shared is not None:
            return scan_image_folder(shared.path, shown_as=shared.shown, inside=shared.root)
    raise DataError(
        f"Run {folder.name} trained on images outside this app's data folder; they are not shown."
    )


@dataclass
class _StatusWriter:
    """Turns progress reports into status.json writes (throttled), metrics.jsonl lines and a
    checkpoint of the best finished epoch (model.safetensors, written atomically)."""

    folder: Path
    log: Callable[[str], None]
    last_write: float = 0.0
    best: tuple[float, float] | None = None  # (val acc, -val loss) of the checkpointed epoch

    def __call__(self, progress: Progress) -> None:
        if progress.metrics is not None:
            # The checkpoint first: every epoch metrics.jsonl lists has been weighed for keeping.
            self._checkpoint(progress)
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

    def _checkpoint(self, progress: Progress) -> None:
        """Saves the model after an epoch that beats every earlier one (accuracy, then loss)."""
        assert progress.metrics is not None
        if progress.model_state is None:
            return
        score = (_finite_or_worst(progress.metrics.val_acc), _finite_or_worst(-progress.metrics.val_loss))
        if self.best is not None and score <= self.best:
            return
        save_state_dict(self.folder, progress.model_state())
        self.best = score


def _finite_or_worst(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


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
    title: str = "",
) -> FinetuneResult:
    """Trains `config` on `data` and writes the run folder `out` (rank 0 only writes).

    A `stop` file in the folder or SIGTERM stops training after the current step; the model
    trained so far is still saved. Any failure is recorded in status.json before it is raised.
    `title` is the name the user gave the run, already checked (vitviz.runs.check_new_run_title);
    a folder start_run prepared keeps the title recorded there.
    """
    out = Path(out)
    config = config.resolved()
    stop = threading.Event()
    done = threading.Event()
    claimed = False
    with ExitStack() as stack:
        try:
            kept = _claim(out, title) if context.is_main else {}
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
            _check_labels(image_set)
            base = load_model(config.model, config.weights, config.device)
            if context.is_main:
                write_config(
                    out,
                    _final_config(config, base.facts, image_set, data, data_label, root, context) | kept,
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
                free_run_data(out)  # a failed run gives its extracted images back; its checkpoint stays
                remove_temporary_files(out)
                write_status(out, RunStatus("failed", error=_error_line(error, out), pid=os.getpid()))
            raise


def _check_labels(image_set: ImageSet) -> None:
    """Refuses class names a run folder could not record (see vitviz.runs.validate_run_config)."""
    if len(image_set.classes) > MAX_LABELS:
        raise DataError(f"{len(image_set.classes):,} classes are more than a run can hold ({MAX_LABELS:,}).")
    long_names = [name for name in image_set.classes if len(name) > MAX_LABEL_CHARS]
    if long_names:
        raise DataError(
            f"Class folder {_clipped(long_names[0], 60)!r} has a name longer than {MAX_LABEL_CHARS} characters."
        )


def _error_line(error: BaseException, out: Path) -> str:
    """A failure as status.json records it for every visitor: one line, and no server path (an
    OSError names only the file)."""
    if isinstance(error, OSError) and error.strerror:
        text = f"{error.strerror}: {Path(str(error.filename)).name}" if error.filename else error.strerror
    else:
        text = str(error) or type(error).__name__
    return _clipped(_without_server_paths(" ".join(text.split()), out), 2000)


def _without_server_paths(text: str, out: Path) -> str:
    """`text` with paths inside the run folder written relative to it ("data/cats/1.png", the
    folder itself "."), and any other absolute path cut to its last part ("…/worker.py")."""
    for folder in sorted({str(out.resolve()), str(out.absolute()), str(out)}, key=len, reverse=True):
        text = text.replace(folder + os.sep, "").replace(folder, ".")
    return _ABSOLUTE_PATH.sub(lambda match: "…/" + match.group(1), text)


def shown_log(folder: str | Path, max_chars: int = 4000) -> str:
    """The end of a run's worker.log as visitors may see it: at most `max_chars` characters, paths
    inside the run relative to it and no other server path. "" when there is no log."""
    folder = Path(folder)
    if (folder / LOG_FILE).is_symlink():  # a run's own log is a plain file
        return ""
    text = read_log_tail(folder, 4 * max_chars)  # bounded, plain files only: a FIFO is not waited on
    return _without_server_paths(text, folder)[-max_chars:]


def _final_config(
    config: FinetuneConfig,
    facts: Any,
    image_set: ImageSet,
    data: str,
    data_label: str | None,
    root: str,
    context: DistributedContext,
) -> dict[str, Any]:
    """config.json once the data is known; execute_run adds what `_claim` kept (created, owner)."""
    # ViTs are rebuilt at the input size they were trained at (DINOv2's default is 518 px).
    build_args = {"img_size": list(facts.input_size)} if facts.family in ("vit", "hybrid") else {}
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
            "label": _clipped(data_label or data),
            "root": root,
            "images": len(image_set.items),
            "class_counts": image_set.class_counts(),
            "skipped": [_clipped(name, 1000) for name in image_set.skipped[:200]],
        },
        "device": config.device,
        "world_size": context.world_size,
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
    if result.stopped:
        free_run_data(out)  # a stopped run keeps its model, not its extracted images
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
