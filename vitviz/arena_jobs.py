"""The arena as background work: `score_image` over a page's images in a worker process that yields to the app.

An arena of a dozen methods takes seconds to minutes an image on a small CPU: run inside a visitor's
page it would hold the page and compete with every other visitor, so like a head ranking it runs in
a worker started by `spawn_background`, on CPU time the app leaves idle.

A job is a folder: `job.json` (model, methods, settings, image names), `images/NNNN.png` (the pictures
the page decoded through the safe loaders, lossless), then the worker's `status.json`, rewritten whole
after every step: steps done of all, each image's scores as it finishes, or the error.

    python -m vitviz.arena_jobs FOLDER
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vitviz.arena import ArenaSettings, ImageScores

__all__ = ["MAX_ARENA_IMAGES", "ArenaJob", "ArenaState", "read_arena", "run_arena_job", "start_arena"]

_JOB, _IMAGES, _STATUS, _LOG = "job.json", "images", "status.json", "log.txt"
MAX_ARENA_IMAGES = 24  # images one visitor's arena may score: a set, not a data set (the CLI has no cap)


@dataclass(frozen=True)
class ArenaJob:
    """What a worker scores: a model it can load again exactly, the methods, the settings, the images' names."""

    model: str  # a timm name or a run's name
    weights: str  # "bundled", "hub", "run" or a checkpoint path: not "random", which no worker can rebuild
    device: str
    methods: tuple[str, ...]
    settings: ArenaSettings
    images: tuple[str, ...]  # names shown in the table, in order


@dataclass(frozen=True)
class ArenaState:
    """What a job's folder says: steps done of all, the images scored so far, and the error if any."""

    done: int
    total: int
    scores: tuple[ImageScores, ...]
    error: str | None = None
    quiet_s: float = 0.0  # since the worker last wrote its status: a dead worker stays quiet
    finished: bool = False

    @property
    def ended(self) -> bool:
        return self.finished or self.error is not None


def start_arena(job: ArenaJob, images: Sequence[Image.Image], folder: Path) -> None:
    """Writes the job into `folder` (new and empty) and starts its worker.

    Raises:
        ValueError: random weights, or not one picture per name, or more than MAX_ARENA_IMAGES.
        JobLimitError (a ValueError): the server already runs as many background jobs as it allows.
        OSError: the folder cannot be written or the worker cannot start.
    """
    from vitviz.finetune.worker import spawn_background
    from vitviz.runs import background_job_slot, write_json_atomic

    if job.weights == "random":
        raise ValueError("a model with unseeded random weights cannot be loaded again in a worker")
    if len(images) != len(job.images) or not images:
        raise ValueError(f"{len(job.images)} image names for {len(images)} pictures")
    if len(images) > MAX_ARENA_IMAGES:
        raise ValueError(f"an arena in the app scores at most {MAX_ARENA_IMAGES} images; the CLI takes more")
    payload = dataclasses.asdict(job)
    (folder / _JOB).write_text(json.dumps(payload))
    (folder / _IMAGES).mkdir()
    for index, image in enumerate(images):
        image.save(folder / _IMAGES / f"{index:04d}.png")  # the very pixels the page decoded
    write_json_atomic(folder / _STATUS, {"done": 0, "total": 0, "scores": []})
    with background_job_slot() as hold_slot:  # one server-wide cap for every background job
        process = spawn_background([sys.executable, "-m", "vitviz.arena_jobs", str(folder)], folder / _LOG)
        hold_slot(process.pid)


def read_arena(folder: Path) -> ArenaState:
    """The job's state as its worker last wrote it; a worker that died unseen reads as not ended.

    Raises:
        OSError, ValueError: the folder is gone or its status unreadable.
    """
    path = folder / _STATUS
    status = json.loads(path.read_text())
    scores = tuple(ImageScores.from_json(item) for item in status["scores"])
    quiet_s = time.time() - path.stat().st_mtime
    return ArenaState(
        int(status["done"]),
        int(status["total"]),
        scores,
        status.get("error"),
        quiet_s,
        bool(status.get("finished", False)),
    )


def _read_job(folder: Path) -> ArenaJob:
    payload = json.loads((folder / _JOB).read_text())
    settings = payload.pop("settings")
    settings = ArenaSettings(
        **{
            **settings,
            "fractions": tuple(settings["fractions"]),
            "road_percentiles": tuple(settings["road_percentiles"]),
        }
    )
    return ArenaJob(
        **{**payload, "methods": tuple(payload["methods"]), "images": tuple(payload["images"])},
        settings=settings,
    )


def run_arena_job(folder: Path) -> None:
    """The worker: yields the cores to the app, loads the model, scores each image, writes as it goes."""
    from vitviz.arena import score_image
    from vitviz.finetune.worker import yield_to_the_app
    from vitviz.models import load_model
    from vitviz.runs import write_json_atomic

    yield_to_the_app()
    scored: list[dict] = []
    steps = 0
    total = 0
    try:
        job = _read_job(folder)
        loaded = load_model(job.model, job.weights, job.device)
        steps = 1 + 3 * len(job.methods)  # as score_image counts them
        total = steps * len(job.images)
        for index, name in enumerate(job.images):

            def progress(done: int, _all: int, base: int = index * steps) -> None:
                write_json_atomic(folder / _STATUS, {"done": base + done, "total": total, "scores": scored})

            with Image.open(folder / _IMAGES / f"{index:04d}.png") as opened:
                image = opened.convert("RGB")
            scored.append(score_image(loaded, image, name, job.methods, job.settings, progress).to_json())
    except Exception as error:  # the page shows it; a worker has no one else to tell
        write_json_atomic(
            folder / _STATUS,
            {"done": 0, "total": total, "scores": scored, "error": f"{type(error).__name__}: {error}"},
        )
        raise
    write_json_atomic(folder / _STATUS, {"done": total, "total": total, "scores": scored, "finished": True})


if __name__ == "__main__":
    run_arena_job(Path(sys.argv[1]))
