"""How much disk one run may hold, and how the operator's whole-number settings are read."""

from __future__ import annotations

import os
from pathlib import Path

from vitviz.runs.safe_io import clip
from vitviz.runs.schema import RunError

__all__ = [
    "DEFAULT_RUN_DISK_BYTES",
    "RUN_DISK_ENV",
    "check_disk_room",
    "folder_bytes",
    "positive_setting",
    "run_disk_limit",
]


RUN_DISK_ENV = "VITVIZ_RUN_DISK_BYTES"  # bytes one run folder may hold
DEFAULT_RUN_DISK_BYTES = 2 * 1024**3


def positive_setting(name: str, default: int) -> int:
    """An operator's whole-number setting from the environment; a typo is an error, not a default."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise RunError(f"{name} must be a whole number of at least 1, got {clip(text)!r}.")
    return value


def run_disk_limit() -> int:
    """Bytes one run folder may hold: ``$VITVIZ_RUN_DISK_BYTES``, default 2 GiB.

    Extracted images, checkpoints and the final model all count. An upload is refused when it
    would unpack to more; a checkpoint that would not fit ends the run with a clear error.
    """
    return positive_setting(RUN_DISK_ENV, DEFAULT_RUN_DISK_BYTES)


def folder_bytes(folder: str | Path) -> int:
    """Bytes of the files under `folder` (links are not followed)."""
    total = 0
    for directory, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                continue  # removed while counting
    return total


def _size_text(byte_count: int) -> str:
    if byte_count >= 1024**3:
        return f"{byte_count / 1024**3:.1f} GiB"
    return f"{byte_count / 1024**2:.1f} MiB"


def check_disk_room(folder: str | Path, more_bytes: int) -> None:
    """Raises RunError when writing `more_bytes` into the run folder would pass run_disk_limit()."""
    limit = run_disk_limit()
    used = folder_bytes(folder)
    if used + more_bytes > limit:
        raise RunError(
            f"Run {Path(folder).name} would hold {_size_text(used + more_bytes)}, more than the "
            f"{_size_text(limit)} of disk a run may use ({RUN_DISK_ENV})."
        )
