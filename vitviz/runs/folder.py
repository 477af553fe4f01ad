"""The runs folder and the run folders in it: finding a run by name, making, listing and deleting runs, and who owns one."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitviz.roots import runs_root
from vitviz.runs.files import automatic_run_title, read_config, read_metrics, read_status
from vitviz.runs.safe_io import clip, is_regular_file
from vitviz.runs.schema import (
    CONFIG_FILE,
    MAX_RUN_NAME_CHARS,
    MODEL_FILE,
    SHORT_TITLE_CHARS,
    STATUS_FILE,
    RunError,
    RunStatus,
    check_run_title,
)

__all__ = [
    "OWNER_ENV",
    "RunSummary",
    "active_runs",
    "check_new_run_title",
    "check_owner",
    "delete_run",
    "is_run_folder",
    "list_runs",
    "new_run_folder",
    "owned_by",
    "owner_key",
    "run_folder_by_name",
    "run_summary",
]


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
    given_title: str = ""  # the name the user gave the run when starting it; "" when none

    @property
    def name(self) -> str:
        """The folder's name; bytes that are not UTF-8 shown as "\ufffd" (such a run is broken).

        The run's identity: links, the model box and the command line name a run by it."""
        return _shown_name(self.folder.name)

    @property
    def title(self) -> str:
        """What pickers, titles and captions call the run: the name the user gave it, else what it is
        (`automatic_run_title`: model, mode, data); a broken run by its folder's name."""
        if self.given_title:
            return self.given_title
        if self.problem is not None:
            return self.name
        return automatic_run_title(self.model, self.mode, self.data)

    @property
    def short_title(self) -> str:
        """The given name cut to SHORT_TITLE_CHARS (with "…"), for places that show the whole on hover;
        an automatic title whole (it is short)."""
        return clip(self.given_title, SHORT_TITLE_CHARS) if self.given_title else self.title

    @property
    def details(self) -> str:
        """One line for under a run's title: model, mode, data, when it started, and its folder."""
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.created)) if self.created else "?"
        metrics = read_metrics(self.folder) if self.problem is None else []
        accuracy = f" · {metrics[-1]['val_acc']:.1%} validation accuracy" if metrics else ""
        return f"{self.model} · {self.mode} · {self.data}{accuracy} · {started} · {self.name}"

    @property
    def has_model(self) -> bool:
        return self.problem is None and is_regular_file(self.folder / MODEL_FILE)

    @property
    def label(self) -> str:
        """How pickers show the run: "run: <short title> (<timm name>, <mode>)", and how early it ended
        when it was stopped or killed (its model is then its best finished epoch's checkpoint)."""
        label = f"run: {self.short_title}" + (f" ({self.model}, {self.mode})" if self.given_title else "")
        if self.status.state in ("stopped", "failed"):
            planned = f" of {self.status.epochs}" if self.status.epochs else ""
            label += f" — stopped early after {self.status.epoch}{planned} epochs"
        return label


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
        raise RunError(f"{clip(text)!r} is not the name of a run.")
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


def _created(config: dict[str, Any] | None, folder: Path) -> float:
    if config is not None and "created" in config:
        return config["created"]
    try:
        return folder.lstat().st_mtime
    except OSError:
        return 0.0


def run_summary(folder: Path) -> RunSummary:
    """The run as listed; a broken config.json gives a run marked broken, never an exception.

    A folder whose name no page could open it by is marked broken without reading anything in it.
    """
    name_problem = _folder_name_problem(folder.name)
    if name_problem is not None:
        problem = f"Run {clip(_shown_name(folder.name))}: {name_problem}."
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
        given_title=config.get("title", ""),
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
    return sorted((run_summary(folder) for folder in folders), key=lambda s: s.created, reverse=True)


def check_new_run_title(title: str, root: Path | None = None) -> str:
    """A name typed for a new run, checked (check_run_title) and unused by the runs in `root`.

    No two runs of a runs folder share a title, and no title is another run's folder name, so a
    name in a picker or a caption stands for one run. Letter case does not make a name new.

    Returns:
        The tidied title; "" for no title.

    Raises:
        RunError: the name is too long, holds a character a name may not, or is taken.
    """
    try:
        tidy = check_run_title(title)
    except ValueError as error:
        raise RunError(str(error)) from error
    if tidy and any(
        tidy.casefold() in (run.title.casefold(), run.name.casefold()) for run in list_runs(root)
    ):
        raise RunError(f"There is already a run named {clip(tidy, 40)!r}; pick another name.")
    return tidy


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
        raise RunError(f"{clip(folder.name)!r} is not a run folder in the runs folder; nothing was deleted.")
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
            f"Only the visitor whose session started run {clip(Path(folder).name)} can {action} it "
            "(the server's operator can, from the command line)."
        )
