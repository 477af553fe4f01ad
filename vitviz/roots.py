"""The two server folders a visitor's work may touch, and the one check that a path stays inside one.

The runs folder (``$VITVIZ_RUNS_DIR``, default ``<cache>/runs``) holds fine-tuned runs and the
server's job folders; the data root (``$VITVIZ_DATA_ROOT``), when the operator names one, holds the
folders and weights files visitors may open. This module is the only one that reads those settings,
and `confined` is the only place that decides whether a path lies inside a folder: the served
app's paths (vitviz.serving), the fine-tune worker's data and a run's recorded images all ask it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vitviz.weights import cache_dir

__all__ = [
    "DATA_ROOT_ENV",
    "RUNS_DIR_ENV",
    "ServerPath",
    "confined",
    "data_root",
    "in_data_root",
    "runs_root",
]

RUNS_DIR_ENV = "VITVIZ_RUNS_DIR"
DATA_ROOT_ENV = "VITVIZ_DATA_ROOT"


@dataclass(frozen=True)
class ServerPath:
    """A path checked to lie inside a root folder (the data root, or a run's own folder)."""

    path: Path  # the real path (links resolved), inside the root
    shown: str  # the path relative to the root, "/"-separated, as messages and pages show it
    root: Path  # the root it lies in, links resolved


def runs_root() -> Path:
    """Where runs live: ``$VITVIZ_RUNS_DIR`` if set, else ``<cache_dir()>/runs``; created if missing."""
    configured = os.environ.get(RUNS_DIR_ENV)
    root = Path(configured).expanduser() if configured else cache_dir() / "runs"
    root.mkdir(parents=True, exist_ok=True)
    return root


def data_root() -> Path | None:
    """The operator's data root (``$VITVIZ_DATA_ROOT``) with links resolved; None when unset or not a folder."""
    configured = os.environ.get(DATA_ROOT_ENV, "").strip()
    if not configured:
        return None
    try:
        root = Path(configured).expanduser().resolve()
        return root if root.is_dir() else None
    except (OSError, ValueError):
        return None


def confined(path: str | Path, root: Path) -> ServerPath | None:
    """`path` with every link resolved, when it lies inside `root`; None when it leaves it.

    A relative `path` is read from `root`; an absolute one must already point into it. Nothing has
    to exist there yet. A path that cannot be resolved (a NUL byte, a loop of links) is outside.

    Args:
        path: the text or path to check.
        root: the folder it must stay in; resolved here, so a root reached through a link works.
    """
    try:
        real_root = Path(root).resolve()
        resolved = (real_root / path).resolve()
    except (OSError, ValueError, RuntimeError):  # RuntimeError: a loop of links
        return None
    if not resolved.is_relative_to(real_root):
        return None
    return ServerPath(resolved, resolved.relative_to(real_root).as_posix() or ".", real_root)


def in_data_root(path: str | Path) -> ServerPath | None:
    """`path` inside the operator's data root (see confined); None when there is no data root or it
    lies outside. A relative path is read from the working directory, as the command line reads it."""
    root = data_root()
    if root is None:
        return None
    try:
        absolute = Path(path).resolve()
    except (OSError, ValueError, RuntimeError):
        return None
    return confined(absolute, root)
