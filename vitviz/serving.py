"""What a visitor of the served app may reach on the server: an operator-named data root and the runs folder.

The app is served to several people at once, so text a visitor types (a folder, a weights file, a
model name) must never reach the rest of the server's disk. A model box takes a timm name or the
name of a finished run (found only in the runs folder, by `vitviz.runs.run_folder_by_name`); server
folders and weights files are off unless the operator names a data root (``$VITVIZ_DATA_ROOT``),
and then a visitor's path resolves inside it (no "..", no absolute path elsewhere, no link out),
and every message names paths relative to it. A missing path and one outside read exactly alike,
and a refusal never quotes a path back, so messages reveal nothing about the disk; nothing outside
the runs folder is read as a run, so nothing there is ever rewritten or deleted. This module is the
place that decides what a visitor may name; what lies inside the data root is `vitviz.roots`'s to say.

The command line, which runs as its user on their own machine, reads any path: pages call these
functions; `vitviz.images.load_image_file` and `vitviz.models.load_model` stay as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import timm

from vitviz.finetune.data import ImageSet, scan_image_folder
from vitviz.models import RUN_WEIGHTS, WEIGHTS_SOURCES
from vitviz.roots import DATA_ROOT_ENV, ServerPath, confined, data_root
from vitviz.runs import MODEL_FILE, RunError, read_status, run_folder_by_name
from vitviz.text import clipped

__all__ = [
    "DATA_ROOT_ENV",
    "MAX_PATH_CHARS",
    "WEIGHTS_SUFFIXES",
    "ServerPath",
    "ServingError",
    "data_root",
    "is_visitor_run",
    "server_folder",
    "server_image_set",
    "server_paths_allowed",
    "server_weights_file",
    "visitor_model",
]

MAX_PATH_CHARS = 1024  # what a visitor may type as a path, in characters
WEIGHTS_SUFFIXES: tuple[str, ...] = (".safetensors", ".pth", ".pt", ".bin")  # as load_state_dict_file reads
_MAX_MODEL_NAME_CHARS = 200
# What a timm name looks like (architecture, then an optional ".pretrained_tag"): such text is
# quoted back and looked up for close matches; anything else (a path) is neither.
_MODEL_NAME = re.compile(r"[A-Za-z0-9_]{1,100}(\.[A-Za-z0-9_]{1,100})?")


class ServingError(ValueError):
    """A visitor's path or name was refused; ``str(error)`` is one line that reveals no server path."""


def server_paths_allowed() -> bool:
    """Whether pages may offer folders and weights files on the server at all."""
    return data_root() is not None


def _quoted(text: str) -> str:
    """A visitor's text quoted back on one line, cut to 80 characters (for names, never paths)."""
    return repr(clipped(text, 80))


def _no_such(what: str) -> ServingError:
    """The one refusal for a path that is missing, outside the root, or of the wrong kind."""
    return ServingError(f"There is no such {what} in this app's data folder.")


def _confined(text: str, what: str) -> ServerPath:
    """A visitor's text as a path inside the data root (vitviz.roots.confined decides).

    Raises:
        ServingError: server paths are off, the text is no possible path, or it resolves outside
            the root (then in the same words as a missing `what`).
    """
    root = data_root()
    if root is None:
        raise ServingError(
            f"Server folders and files are turned off here: the operator has not named a data folder "
            f"({DATA_ROOT_ENV})."
        )
    text = text.strip()
    if not text or len(text) > MAX_PATH_CHARS or not text.isprintable():
        raise ServingError(f"A path here is 1 to {MAX_PATH_CHARS:,} printable characters.")
    inside = confined(text, root)
    if inside is None:
        raise _no_such(what)
    return inside


def _exists_as(path: Path, kind: Callable[[Path], bool]) -> bool:
    """`kind(path)` (Path.is_dir, Path.is_file), False for a name the file system cannot hold."""
    try:
        return kind(path)
    except OSError:
        return False


def server_folder(text: str) -> ServerPath:
    """A folder a visitor named, inside the data root.

    Raises:
        ServingError: off, outside the root, missing, or not a folder (the last three alike).
    """
    folder = _confined(text, "folder")
    if not _exists_as(folder.path, Path.is_dir):
        raise _no_such("folder")
    return folder


def server_image_set(text: str) -> ImageSet:
    """The images of a folder of class folders a visitor named, inside the data root.

    Files linked from outside the root are skipped; the set, its messages and its images' errors
    name paths relative to the root.

    Raises:
        ServingError: the folder cannot be reached (see server_folder).
        DataError: it is no usable folder of class folders (message relative to the root).
    """
    folder = server_folder(text)
    return scan_image_folder(folder.path, shown_as=folder.shown, inside=folder.root)


def server_weights_file(text: str) -> ServerPath:
    """A weights file (.safetensors, .pth, .pt, .bin) a visitor named, inside the data root.

    Raises:
        ServingError: off, outside the root, missing, not a file, or of another type.
    """
    # The type first: it is read from the text alone, so its answer says nothing about the disk.
    if server_paths_allowed() and Path(text.strip()).suffix.lower() not in WEIGHTS_SUFFIXES:
        raise ServingError(f"A weights file here is one of {', '.join(WEIGHTS_SUFFIXES)}.")
    weights_file = _confined(text, "weights file")
    if not _exists_as(weights_file.path, Path.is_file):
        raise _no_such("weights file")
    return weights_file


# The one answer for a model box's text that is neither a timm name nor a finished run: a path,
# a run outside the runs folder, a missing run and an unfinished one all read alike.
_NO_MODEL = "There is no timm model or finished run of that name."


def is_visitor_run(name: str) -> bool:
    """Whether `name` names a run in the runs folder that is no longer training and holds a trained
    model (finished, or stopped or killed after a finished epoch, with that epoch's checkpoint): the
    runs a visitor may pick, type or link to (as the pickers list them). Never raises.

    Only the runs folder is looked in (a path is never a run's name), so a dead worker's run that
    this read settles (vitviz.runs.read_status) is always one of the server's own runs.
    """
    try:
        folder = run_folder_by_name(name.strip())
    except RunError:
        return False
    model = folder / MODEL_FILE
    return not read_status(folder).active and model.is_file() and not model.is_symlink()


def visitor_model(name: str, weights: str) -> tuple[str, str]:
    """The (name, weights) to load for a visitor's choice; the page passes these to load_model.

    A name is a timm model name, or with RUN_WEIGHTS the name of a finished run in the runs folder
    (see is_visitor_run). Weights are bundled, hub, random, or a weights file inside the data root
    (see server_weights_file). Nothing else on disk is ever looked at, and a refusal quotes a name
    back only when it is no path.

    Returns:
        (timm name or run name, weights source or the file's real path).

    Raises:
        ServingError: an unknown model name or run, or weights that cannot be reached (one line).
    """
    name = name.strip()
    if weights == RUN_WEIGHTS:
        if not is_visitor_run(name):
            raise ServingError(_NO_MODEL)
        return name, RUN_WEIGHTS
    if not name or len(name) > _MAX_MODEL_NAME_CHARS or not timm.is_model(name):
        if not _MODEL_NAME.fullmatch(name):
            raise ServingError(_NO_MODEL)
        close = timm.list_models(f"*{name}*")[:5]
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ServingError(f"timm has no model named {_quoted(name)}.{hint}")
    if weights in WEIGHTS_SOURCES:
        return name, weights
    return name, str(server_weights_file(weights).path)
