"""A few-shot table computed by a detached process (the Fine-tune page's few-shot option).

A job is a hidden folder in the runs folder, `<runs>/.fewshot/<time>-<random>/`, holding the
`python -m vitviz finetune --mode few-shot` process's pid and log, and, once it is done, the table
(fewshot.json) and its chart (fewshot.html). The folder is the job: a refresh or a second tab reads it.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitviz.finetune.worker import spawn_background
from vitviz.runs import RunError, background_job_slot, job_folder_by_name, process_alive, read_tail, runs_root

__all__ = [
    "FEW_SHOT_CHART",
    "FEW_SHOT_FILE",
    "FEW_SHOT_JOBS_FOLDER",
    "FewShotJob",
    "FewShotRequest",
    "few_shot_command",
    "few_shot_job_by_name",
    "start_few_shot",
]

FEW_SHOT_JOBS_FOLDER = ".fewshot"  # in the runs folder; hidden, so list_runs never takes a job for a run
FEW_SHOT_FILE = "fewshot.json"  # the table (FewShotTable.as_dict())
FEW_SHOT_CHART = "fewshot.html"  # its chart, a standalone Plotly page
_PID_FILE = "pid"
_LOG_FILE = "fewshot.log"
_MAX_LOG_BYTES = 64 * 1024  # the tail a page reads
_MAX_TABLE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class FewShotRequest:
    """What a few-shot job computes: the data, the shot counts and the split, as the CLI takes them."""

    data: str  # "builtin:digits", "builtin:shapes" or a folder a page has checked (vitviz.serving)
    shots: tuple[int, ...]
    draws: int
    max_images: int | None
    val_fraction: float
    seed: int
    device: str
    data_label: str | None = None  # the name the table shows (a page's, never a server path)


def few_shot_command(request: FewShotRequest, out: Path) -> list[str]:
    """The `python -m vitviz finetune --mode few-shot ...` command line that writes its table into `out`."""
    command = [
        sys.executable, "-m", "vitviz", "finetune", "--mode", "few-shot", "--data", request.data,
        "--data-label", request.data_label or request.data,
        "--shots", ",".join(str(count) for count in request.shots), "--draws", str(request.draws),
        "--val-fraction", repr(request.val_fraction), "--seed", str(request.seed), "--device", request.device,
        "--out", str(out),
    ]  # fmt: skip
    if request.max_images is not None:
        command += ["--max-images", str(request.max_images)]
    return command


@dataclass(frozen=True)
class FewShotJob:
    """A few-shot process started by start_few_shot, and what it has written so far."""

    folder: Path  # <runs>/.fewshot/<name>

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def alive(self) -> bool:
        try:
            pid = int((self.folder / _PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return False
        return 0 < pid < 2**31 and process_alive(pid)

    def log_tail(self) -> str:
        """The last lines the process printed (its last 64 KiB)."""
        return read_tail(self.folder / _LOG_FILE, _MAX_LOG_BYTES)

    def last_line(self) -> str:
        lines = [line.strip() for line in self.log_tail().splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""

    def table(self) -> dict[str, Any] | None:
        """The finished table (FewShotTable.as_dict()), or None until the process has written it."""
        path = self.folder / FEW_SHOT_FILE
        try:
            if path.is_symlink() or path.stat().st_size > _MAX_TABLE_BYTES:
                return None
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return table if isinstance(table, dict) and isinstance(table.get("models"), dict) else None


def start_few_shot(request: FewShotRequest, root: str | Path | None = None) -> FewShotJob:
    """Starts the few-shot table of the bundled ViT and CNN in a detached process; returns its job.

    It takes one of the server's background-job slots (vitviz.runs.background_job_slot), the cap
    head rankings share, while its process lives.

    Raises:
        RunError: the process could not start, or every background-job slot is taken (JobLimitError).
    """
    root = runs_root() if root is None else Path(root)
    with background_job_slot(root) as hold_slot:
        folder = root / FEW_SHOT_JOBS_FOLDER / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        folder.mkdir(parents=True)
        try:
            process = spawn_background(few_shot_command(request, folder), folder / _LOG_FILE)
        except OSError as error:
            raise RunError(
                f"The few-shot evaluation could not start: {error.strerror or type(error).__name__}."
            ) from error
        hold_slot(process.pid)
    (folder / _PID_FILE).write_text(str(process.pid))
    return FewShotJob(folder)


def few_shot_job_by_name(name: str, root: str | Path | None = None) -> FewShotJob:
    """The few-shot job called `name` in the runs folder.

    Raises:
        RunError: no such job (a name of any other shape is refused without looking at the disk).
    """
    return FewShotJob(job_folder_by_name(name, FEW_SHOT_JOBS_FOLDER, "few-shot evaluation", root))
