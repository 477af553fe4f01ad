"""Ranking every head, as background work: `head_importance` in a worker process that yields to the app.

A ranking runs one forward per few heads (a few seconds on a small CPU). Run inside a visitor's page,
it competes with every other visitor's interactions for the cores; run here, it is a worker started
by `spawn_background`, which runs only on CPU time the app leaves idle, like a fine-tune.

A job is a folder: `job.json` (what to rank), `image.png` (the picture, lossless), then the worker's
`status.json`, rewritten whole after every batch: heads done of all with the time left at the measured
pace, then the drops or the error. A `cancel` file (`vitviz.jobs.cancel_job`) stops it at the next batch.

    python -m vitviz.head_ranking FOLDER
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from vitviz.progress import JobCancelled, JobProgress, ProgressSnapshot

if TYPE_CHECKING:
    from vitviz.preprocess import ViewMode

__all__ = ["RankingJob", "RankingState", "read_ranking", "run_ranking", "start_ranking"]

_JOB, _IMAGE, _STATUS, _LOG = "job.json", "image.png", "status.json", "log.txt"


@dataclass(frozen=True)
class RankingJob:
    """What a worker ranks: a model it can load again exactly, the ablation and the view."""

    model: str  # a timm name or a run folder
    weights: str  # "bundled", "hub" or a checkpoint path: not "random", which no worker can rebuild
    device: str
    twin: bool  # rank the model's seeded untrained twin instead (`vitviz.models.untrained_twin`)
    mode: str  # "zero" or "mean"
    view: ViewMode  # the mode of the page's view: the worker makes the same view of the same pixels


@dataclass(frozen=True)
class RankingState:
    """What a job's folder says: heads done of all, and the drops or the error once it has ended."""

    done: int
    total: int
    drops: np.ndarray | None = None  # (layers, heads), as `head_importance` returns it
    error: str | None = None
    quiet_s: float = 0.0  # since the worker last wrote its status: a dead worker stays quiet
    progress: ProgressSnapshot | None = None  # heads done, the measured pace's time left
    cancelled: bool = False

    @property
    def ended(self) -> bool:
        return self.drops is not None or self.error is not None or self.cancelled


def start_ranking(job: RankingJob, image: Image.Image, folder: Path) -> None:
    """Writes the job into `folder` (which must be new and empty) and starts its worker.

    Raises:
        ValueError: random weights, which a worker would draw afresh and so rank another model.
        JobLimitError (a ValueError): the server already runs as many background jobs as it allows.
        OSError: the folder cannot be written or the worker cannot start.
    """
    from vitviz.finetune.worker import spawn_background
    from vitviz.runs import background_job_slot, write_json_atomic

    if job.weights == "random" and not job.twin:
        raise ValueError("a model with unseeded random weights cannot be loaded again in a worker")
    (folder / _JOB).write_text(json.dumps(dataclasses.asdict(job)))
    image.save(folder / _IMAGE)  # PNG: the worker ranks the very pixels the page shows
    write_json_atomic(folder / _STATUS, {"done": 0, "total": 0})
    with background_job_slot() as hold_slot:  # one server-wide cap for every background job
        process = spawn_background([sys.executable, "-m", "vitviz.head_ranking", str(folder)], folder / _LOG)
        hold_slot(process.pid)


def read_ranking(folder: Path) -> RankingState:
    """The job's state as its worker last wrote it; a worker that died unseen reads as not ended.

    Raises:
        OSError, ValueError: the folder is gone or its status unreadable.
    """
    path = folder / _STATUS
    status = json.loads(path.read_text())
    drops = np.array(status["drops"], dtype=np.float32) if "drops" in status else None
    quiet_s = time.time() - path.stat().st_mtime
    progress = ProgressSnapshot.from_json(status["progress"]) if status.get("progress") else None
    return RankingState(
        int(status["done"]),
        int(status["total"]),
        drops,
        status.get("error"),
        quiet_s,
        progress,
        bool(status.get("cancelled")),
    )


def run_ranking(folder: Path) -> None:
    """The worker: yields the cores to the app, loads the model, ranks its heads, writes the drops."""
    from vitviz.finetune.worker import yield_to_the_app
    from vitviz.forward.ablation import head_importance
    from vitviz.jobs import cancel_requested
    from vitviz.models import load_model, untrained_twin
    from vitviz.preprocess import image_view
    from vitviz.runs import write_json_atomic

    yield_to_the_app()

    def write(snapshot: ProgressSnapshot) -> None:
        status = {"done": int(snapshot.done), "total": int(snapshot.total), "progress": snapshot.to_json()}
        write_json_atomic(folder / _STATUS, status)

    clock = JobProgress("heads", cancelled=lambda: cancel_requested(folder), on_update=write)
    try:
        job = RankingJob(**json.loads((folder / _JOB).read_text()))
        loaded = load_model(job.model, job.weights, job.device)
        if job.twin:
            loaded = untrained_twin(loaded)
        with Image.open(folder / _IMAGE) as opened:
            image = opened.copy()
        view = image_view(image, loaded.facts, job.view)
        clock.restart()  # the pace is the ranking's, not the model load's
        drops = head_importance(loaded, view, job.mode, progress=clock)
    except JobCancelled:  # asked by the page (`vitviz.jobs.cancel_job`): the slot frees as the worker exits
        status = {"done": int(clock.done), "total": int(clock.total), "cancelled": True}
        write_json_atomic(folder / _STATUS, status)
        return
    except Exception as error:  # the page shows it; a worker has no one else to tell
        write_json_atomic(
            folder / _STATUS, {"done": 0, "total": 0, "error": f"{type(error).__name__}: {error}"}
        )
        raise
    # float32 → float → JSON → float32 is exact: the page gets the very numbers the worker made.
    total = int(drops.size)
    final = {"done": total, "total": total, "progress": clock.snapshot().to_json(), "drops": drops.tolist()}
    write_json_atomic(folder / _STATUS, final)


if __name__ == "__main__":
    run_ranking(Path(sys.argv[1]))
