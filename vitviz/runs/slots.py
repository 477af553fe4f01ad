"""The server's training slots and background-job slots: how many fine-tunes and jobs run at once."""

from __future__ import annotations

import fcntl
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from vitviz.roots import runs_root
from vitviz.runs.files import process_alive
from vitviz.runs.folder import active_runs
from vitviz.runs.limits import positive_setting
from vitviz.runs.safe_io import read_bytes, read_json
from vitviz.runs.schema import RunError

__all__ = [
    "DEFAULT_MAX_JOBS",
    "DEFAULT_MAX_RUNS",
    "JOBS_FOLDER",
    "JOB_NAME",
    "MAX_JOBS_ENV",
    "MAX_RUNS_ENV",
    "PAIR_JOBS_FOLDER",
    "PAIR_JOB_PID_FILE",
    "PAIR_JOB_RUNS_FILE",
    "JobLimitError",
    "RunLimitError",
    "background_job_count",
    "background_job_slot",
    "job_folder_by_name",
    "max_background_jobs",
    "max_concurrent_runs",
    "start_lock",
    "training_count",
    "training_slot",
]


MAX_RUNS_ENV = "VITVIZ_MAX_RUNS"  # fine-tunes that may train at once on this server
DEFAULT_MAX_RUNS = 2


_START_LOCK_FILE = ".start.lock"  # held while a start counts the active runs and claims a slot


class RunLimitError(RunError):
    """A new fine-tune was refused because the server already trains as many as it allows."""


def max_concurrent_runs() -> int:
    """Fine-tunes that may train at once on this server: ``$VITVIZ_MAX_RUNS``, default 2."""
    return positive_setting(MAX_RUNS_ENV, DEFAULT_MAX_RUNS)


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
            pid = int(read_bytes(folder / PAIR_JOB_PID_FILE, 64).decode("ascii").strip())
        except (ValueError, UnicodeDecodeError):
            continue
        if not (0 < pid < 2**31 and process_alive(pid)):
            continue
        try:
            runs = read_json(folder / PAIR_JOB_RUNS_FILE, _MAX_PAIR_JOB_RUNS_BYTES)
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


# --------------------------------------------------------------------------------------------
# Background jobs: one server-wide cap for the work pages hand to worker processes
# --------------------------------------------------------------------------------------------

# Every job a page starts in a worker (`vitviz.jobs`: head rankings, arenas, maps…) takes a slot here;
# fine-tunes have their own cap (max_concurrent_runs). A job is a file named by its process id in
# this folder of the runs folder, so every process of the server (and a restart) counts the same.
JOBS_FOLDER = ".jobs"
MAX_JOBS_ENV = "VITVIZ_MAX_JOBS"  # background jobs that may run at once on this server
DEFAULT_MAX_JOBS = 2


class JobLimitError(RunError):
    """A background job was refused because the server already runs as many as it allows."""


def max_background_jobs() -> int:
    """Background jobs that may run at once on this server: ``$VITVIZ_MAX_JOBS``, default 2."""
    return positive_setting(MAX_JOBS_ENV, DEFAULT_MAX_JOBS)


def background_job_count(root: Path | None = None) -> int:
    """Background jobs whose process still lives; the files of ended ones are removed on the way."""
    folder = (runs_root() if root is None else Path(root)) / JOBS_FOLDER
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    alive = 0
    for entry in entries:
        if entry.name.isdigit() and 0 < int(entry.name) < 2**31 and process_alive(int(entry.name)):
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
