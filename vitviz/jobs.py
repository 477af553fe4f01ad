"""Long work in a background worker: a job folder, its progress with the time left, a cancel, its result.

A Score-CAM map, a faithfulness table with ROAD, a sanity check, a ranking of every head or an
arena of every method takes from seconds to minutes on a small shared CPU. Run inside a visitor's
page, it would hold the page and compete with every other visitor for the cores; here it runs in a
worker started by `spawn_background` (on CPU time the app leaves idle, like a fine-tune), holding
one of the server's background-job slots, while the page follows its progress and the visitor
keeps exploring.

A job is a folder: `job.json` (what to compute, with which model, view and options),
`images/NNNN.png` (the pictures, lossless: one, or an arena's set), then the worker's `status.json`
(units done of all, the time left at the measured pace, then the result or the error). A `cancel`
file asks the worker to stop: it stops between two units, so its slot frees at once. A worker whose
server has ended (quit, or killed) stops the same way: nobody is left to read its result.

    python -m vitviz.jobs FOLDER
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from vitviz.progress import (
    JobCancelled,
    JobProgress,
    ProgressCallback,
    ProgressSnapshot,
    reporting,
    thread_schedule,
)

if TYPE_CHECKING:
    from vitviz.methods.faithfulness import FaithfulnessResult, RoadResult
    from vitviz.models import LoadedModel
    from vitviz.preprocess import ImageView, ViewMode

__all__ = [
    "JOB_KINDS",
    "JobSpec",
    "JobState",
    "cancel_job",
    "cancel_requested",
    "check_pictures",
    "compute_job",
    "decode_result",
    "encode_result",
    "job_unit",
    "prepare_job",
    "read_job",
    "run_job",
    "start_job",
]

_JOB, _IMAGES, _STATUS, _LOG, _CANCEL = "job.json", "images", "status.json", "log.txt", "cancel"
_OWNER_ENV = "VITVIZ_JOB_OWNER"  # the pid of the process that started the worker (the server)
_MAX_STATUS_BYTES = 64 * 1024**2  # a sanity check of a large grid holds every stage's map
_WRITE_EVERY_S = 0.25  # the status file is rewritten at most this often while the job runs

# What a worker can compute, each over (loaded model, pictures, options, progress); see `compute_job`.
# An arena scores a set of pictures (at most `vitviz.arena.MAX_ARENA_IMAGES`); every other kind one.
# Each kind names the modules it runs, which a worker imports before its clock starts: importing
# pytorch-grad-cam (and the scikit-learn it pulls in) took 2.3 s of a 2.9-s sanity check on a quiet
# machine, time that would otherwise be charged to the job's first step and inflate its estimate.
_KIND_MODULES: dict[str, tuple[str, ...]] = {
    "explanation": ("vitviz.methods",),
    "faithfulness": ("vitviz.methods.faithfulness",),
    "sanity": ("vitviz.methods.sanity",),
    "probe": ("vitviz.methods.probes",),
    "ranking": ("vitviz.forward.ablation",),
    "arena": ("vitviz.arena",),
}
JOB_KINDS = tuple(_KIND_MODULES)


@dataclass(frozen=True)
class JobSpec:
    """What a worker computes: a model it can load again exactly, the kind of work and its options."""

    kind: str  # one of JOB_KINDS
    model: str  # a timm name or a run folder
    weights: str  # "bundled", "hub", a run or a checkpoint: not "random", which no worker can rebuild
    device: str
    options: dict[str, Any] = field(default_factory=dict)  # JSON: the kind's keyword arguments
    twin: bool = False  # the model's seeded untrained twin instead (`vitviz.models.untrained_twin`)
    view: ViewMode = "crop"  # the mode of the page's view: the worker makes the same view of the same pixels

    def __post_init__(self) -> None:
        # Deferred: imported at the top, `pages.views.background` pulled timm in while the server's
        # warm-up thread (`pages.views.serve`) was importing it, and saw `timm.data` half made.
        from vitviz.preprocess import VIEW_MODES

        if self.view not in VIEW_MODES:
            raise ValueError(f"unknown view {str(self.view)[:40]!r}: use one of {', '.join(VIEW_MODES)}")


@dataclass(frozen=True)
class JobState:
    """What a job's folder says: its progress, then its result, its error, or that it was cancelled."""

    progress: ProgressSnapshot | None  # None until the worker has written any
    result: Any = None
    error: str | None = None
    cancelled: bool = False
    quiet_s: float = 0.0  # since the worker last wrote its status: a dead worker stays quiet

    @property
    def ended(self) -> bool:
        return self.result is not None or self.error is not None or self.cancelled

    def eta_now(self) -> float | None:
        """The time left as the worker last estimated it, less the time since it said so."""
        if self.progress is None or self.progress.eta_s is None:
            return None
        return max(0.0, self.progress.eta_s - self.quiet_s)


def job_unit(spec: JobSpec) -> str:
    """What the job counts: "masks" for Score-CAM, "channels" for Ablation-CAM, "maps", "images", "heads", "steps"."""
    if spec.kind == "explanation":
        return {"scorecam": "masks", "ablationcam": "channels"}.get(str(spec.options.get("method")), "steps")
    return {"sanity": "maps", "probe": "images", "ranking": "heads"}.get(spec.kind, "steps")


def check_pictures(spec: JobSpec, count: int) -> None:
    """Raises ValueError unless the job has as many pictures as its kind takes: an arena's set, else one."""
    if spec.kind != "arena":
        if count != 1:
            raise ValueError(f"a {spec.kind} job takes one picture, got {count}")
        return
    from vitviz.arena import MAX_ARENA_IMAGES

    names = spec.options.get("names", [])
    if count != len(names) or not count:
        raise ValueError(f"{len(names)} image names for {count} pictures")
    if count > MAX_ARENA_IMAGES:
        raise ValueError(f"an arena in the app scores at most {MAX_ARENA_IMAGES} images; the CLI takes more")


def start_job(spec: JobSpec, images: Sequence[Image.Image], folder: Path) -> None:
    """Writes the job and its pictures into `folder` (which must be new and empty) and starts its worker.

    Raises:
        ValueError: unknown kind, random weights (a worker would draw them afresh), or not as many
            pictures as the kind takes (`check_pictures`).
        JobLimitError (a ValueError): the server already runs as many background jobs as it allows.
        OSError: the folder cannot be written or the worker cannot start.
    """
    from vitviz.finetune.worker import spawn_background
    from vitviz.runs import background_job_slot, write_json_atomic

    if spec.kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {spec.kind!r}: use one of {', '.join(JOB_KINDS)}")
    if spec.weights == "random" and not spec.twin:
        raise ValueError("a model with unseeded random weights cannot be loaded again in a worker")
    check_pictures(spec, len(images))
    (folder / _JOB).write_text(json.dumps(dataclasses.asdict(spec)))
    (folder / _IMAGES).mkdir()
    for index, image in enumerate(images):  # PNG: the worker computes on the very pixels the page shows
        image.save(folder / _IMAGES / f"{index:04d}.png")
    write_json_atomic(folder / _STATUS, {})
    with background_job_slot() as hold_slot:  # one server-wide cap for every background job
        command = [sys.executable, "-m", "vitviz.jobs", str(folder)]
        process = spawn_background(command, folder / _LOG, env={_OWNER_ENV: str(os.getpid())})
        hold_slot(process.pid)


def cancel_job(folder: Path) -> None:
    """Asks the job's worker to stop; it does at its next unit, and its slot frees when it exits."""
    (folder / _CANCEL).touch()


def cancel_requested(folder: Path) -> bool:
    """Whether `cancel_job` was called on this folder (a worker asks between its units)."""
    return (folder / _CANCEL).exists()


def owner_ended() -> bool:
    """Whether the process that started this worker (the app's server) has ended, so that nobody will
    read the result: the worker was handed to another parent. False in a process `start_job` did not
    start (a test runs `run_job` itself)."""
    owner = os.environ.get(_OWNER_ENV, "")
    return owner.isdigit() and os.getppid() != int(owner)


def read_job(folder: Path) -> JobState:
    """The job's state as its worker last wrote it; a worker that died unseen reads as not ended.

    Raises:
        OSError, ValueError: the folder is gone or its status unreadable.
    """
    path = folder / _STATUS
    if path.stat().st_size > _MAX_STATUS_BYTES:
        raise ValueError("status.json is larger than a job writes")
    status = json.loads(path.read_text())
    if not isinstance(status, dict):
        raise ValueError("status.json does not hold an object")
    progress = ProgressSnapshot.from_json(status["progress"]) if status.get("progress") else None
    result = decode_result(status["result"]) if "result" in status else None
    error = status.get("error")
    quiet_s = max(0.0, time.time() - path.stat().st_mtime)
    return JobState(
        progress, result, None if error is None else str(error)[:2000], bool(status.get("cancelled")), quiet_s
    )


# Results travel as JSON: arrays as nested lists with their dtype, dataclasses by an allowed name.
def _result_classes() -> dict[str, type]:
    from vitviz.arena import ArenaRow, ArenaTable, Spread
    from vitviz.methods.base import ExplanationResult
    from vitviz.methods.faithfulness import FaithfulnessResult, RoadResult
    from vitviz.methods.probes import ProbeCurve
    from vitviz.methods.sanity import SanityResult

    allowed = (ExplanationResult, FaithfulnessResult, RoadResult, ProbeCurve, SanityResult)
    return {cls.__name__: cls for cls in (*allowed, ArenaTable, ArenaRow, Spread)}


def encode_result(value: Any) -> Any:
    """A result (dataclasses of arrays, lists, tuples, numbers, text) as JSON-ready values; exact for float32/64."""
    if isinstance(value, np.ndarray):
        return {"array": value.tolist(), "dtype": str(value.dtype)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {item.name: encode_result(getattr(value, item.name)) for item in dataclasses.fields(value)}
        return {"dataclass": type(value).__name__, "fields": fields}
    if isinstance(value, tuple):
        return {"tuple": [encode_result(item) for item in value]}
    if isinstance(value, list):
        return [encode_result(item) for item in value]
    if isinstance(value, dict):  # by text keys only: JSON would turn any other key into text
        if not all(isinstance(key, str) for key in value):
            raise ValueError("a job's result holds a mapping with keys that are not text")
        return {"dict": {key: encode_result(item) for key, item in value.items()}}
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode_result(value: Any, _classes: dict[str, type] | None = None) -> Any:
    """The inverse of `encode_result`; a dataclass of a name not allowed raises ValueError."""
    classes = _result_classes() if _classes is None else _classes
    if isinstance(value, list):
        return [decode_result(item, classes) for item in value]
    if not isinstance(value, dict):
        return value
    if "array" in value:
        return np.asarray(value["array"], dtype=np.dtype(str(value["dtype"])))
    if "tuple" in value:
        return tuple(decode_result(item, classes) for item in value["tuple"])
    if "dict" in value:
        return {str(key): decode_result(item, classes) for key, item in dict(value["dict"]).items()}
    if "dataclass" in value:
        cls = classes.get(str(value["dataclass"]))
        if cls is None:
            raise ValueError(f"a job's result names an unknown type {str(value['dataclass'])[:40]!r}")
        return cls(**{name: decode_result(item, classes) for name, item in dict(value["fields"]).items()})
    raise ValueError("a job's result holds an object of an unknown shape")


def prepare_job(spec: JobSpec) -> None:
    """Imports what the job's kind runs, so a worker can do it while the model loads, before its clock starts.

    Raises:
        ValueError: an unknown kind.
    """
    if spec.kind not in _KIND_MODULES:
        raise ValueError(f"unknown job kind {spec.kind!r}")
    for module in _KIND_MODULES[spec.kind]:
        importlib.import_module(module)


def compute_job(spec: JobSpec, loaded: Any, images: Sequence[Image.Image], progress: ProgressCallback) -> Any:
    """The work itself, in this process: what a worker runs, and what a page runs for a model no worker can load.

    Each picture's view is made here, once, from the mode the job records (`spec.view`).

    Raises:
        ValueError: not as many pictures as the kind takes, or an unknown kind.
    """
    from vitviz.preprocess import image_view

    check_pictures(spec, len(images))
    options = dict(spec.options)
    if spec.kind == "arena":
        from vitviz.arena import ArenaImage, ArenaSettings, run_arena

        settings = dataclasses.replace(ArenaSettings.from_json(options["settings"]), view=spec.view)
        named = [
            ArenaImage(str(name), lambda image=image: image)
            for name, image in zip(options["names"], images, strict=True)
        ]
        return run_arena(loaded, named, list(options["methods"]), settings, progress=progress)
    view = image_view(images[0], loaded.facts, spec.view)
    if spec.kind == "ranking":
        from vitviz.forward.ablation import head_importance

        return head_importance(loaded, view, options["mode"], progress=progress)
    if spec.kind == "explanation":
        from vitviz.methods import explanation_map

        method, class_index = options["method"], options.get("class_index")
        with reporting(progress):  # Score-CAM's and Ablation-CAM's channel loops report here
            return explanation_map(loaded, view, method, class_index, **options.get("method_options", {}))
    if spec.kind == "faithfulness":
        return _faithfulness_job(loaded, view, list(options["methods"]), options, progress)
    if spec.kind == "sanity":
        from vitviz.methods.sanity import cascading_randomisation

        return cascading_randomisation(
            loaded, view, options["method"], options.get("class_index"), progress=progress
        )
    if spec.kind == "probe":
        from vitviz.methods.probes import probe_curves

        return probe_curves(loaded, view, progress=progress, **options)
    raise ValueError(f"unknown job kind {spec.kind!r}")


def _faithfulness_job(
    loaded: LoadedModel,
    view: ImageView,
    methods: list[str],
    options: dict[str, Any],
    progress: ProgressCallback,
) -> tuple[list[FaithfulnessResult], list[RoadResult]]:
    """The deletion and insertion table, and with `road` (the default) ROAD's table of the same maps.

    With ROAD, each method's map is computed once for both tables, then ROAD runs first: its
    imputations are most of the time and differ most in cost, so timing them from the job's first
    steps on prices the rest; each kind of step is priced apart (the job's plan).
    """
    from vitviz.methods.faithfulness import (
        faithfulness,
        faithfulness_plan,
        maps_plan,
        road,
        road_plan,
        scored_maps,
    )
    from vitviz.progress import declare_parts

    class_index = options.get("class_index")
    if not options.get("road", True):
        return faithfulness(loaded, view, methods, class_index, progress=progress), []
    parts = [
        maps_plan(methods),
        road_plan(methods, with_maps=False),
        faithfulness_plan(methods, with_maps=False),
    ]
    maps_moved, road_moved, curves_moved = declare_parts(progress, parts)
    maps = scored_maps(loaded, view, methods, class_index, progress=maps_moved)
    roads = road(loaded, view, methods, class_index, progress=road_moved, maps=maps)
    return faithfulness(loaded, view, methods, class_index, progress=curves_moved, maps=maps), roads


def _status_writer(folder: Path) -> Callable[[ProgressSnapshot], None]:
    """Writes each snapshot into status.json, at most every `_WRITE_EVERY_S` (and always the last unit)."""
    from vitviz.runs import write_json_atomic

    written = [0.0]

    def write(snapshot: ProgressSnapshot) -> None:
        now = time.monotonic()
        if now - written[0] >= _WRITE_EVERY_S or snapshot.done >= snapshot.total:
            written[0] = now
            write_json_atomic(folder / _STATUS, {"progress": snapshot.to_json()})

    return write


def run_job(folder: Path, load: Callable[[JobSpec], Any] | None = None) -> None:
    """The worker: yields the cores to the app, loads the model, computes, writes the result.

    Args:
        folder: the job's folder, as `start_job` wrote it.
        load: turns the spec into a loaded model (a test passes its own); default `load_model`.
    """
    from vitviz.finetune.worker import yield_to_the_app
    from vitviz.runs import write_json_atomic

    yield_to_the_app()
    progress: JobProgress | None = None
    try:
        spec = JobSpec(**json.loads((folder / _JOB).read_text()))
        progress = JobProgress(
            job_unit(spec),
            cancelled=lambda: cancel_requested(folder) or owner_ended(),
            on_update=_status_writer(folder),
            work_clock=time.process_time,  # this process runs only the job: its CPU time is its work
            schedule_clock=thread_schedule,  # how often it got a core, model load included
        )
        progress.check_cancelled()
        prepare_job(spec)
        loaded = (load or _load)(spec)
        images = []
        for path in sorted((folder / _IMAGES).glob("*.png")):
            with Image.open(path) as opened:
                images.append(opened.convert("RGB"))
        progress.restart()  # the pace is the work's, not the model load's or the imports'
        result = compute_job(spec, loaded, images, progress)
    except JobCancelled:
        snapshot = None if progress is None else progress.snapshot().to_json()
        write_json_atomic(folder / _STATUS, {"progress": snapshot, "cancelled": True})
        return
    except Exception as error:  # the page shows it; a worker has no one else to tell
        write_json_atomic(folder / _STATUS, {"error": f"{type(error).__name__}: {error}"})
        raise
    final = None if progress is None else progress.snapshot().to_json()
    write_json_atomic(folder / _STATUS, {"progress": final, "result": encode_result(result)})


def _load(spec: JobSpec) -> Any:
    from vitviz.models import load_model, untrained_twin

    loaded = load_model(spec.model, spec.weights, spec.device)
    return untrained_twin(loaded) if spec.twin else loaded


if __name__ == "__main__":
    run_job(Path(sys.argv[1]))
