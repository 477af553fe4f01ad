"""Reading files a run folder holds, which anyone with disk access may have replaced: plain files only, bounded reads."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from vitviz.text import clipped

__all__ = [
    "MissingFileError",
    "clip",
    "file_problem",
    "is_regular_file",
    "open_plain_file",
    "read_bytes",
    "read_json",
    "read_tail",
    "write_json_atomic",
]


class MissingFileError(ValueError):
    """A file of the run folder that is not there (yet): for readers that treat that apart."""


def clip(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters, for quoting a user's input back in one line."""
    return clipped(text, limit)


def is_regular_file(path: Path) -> bool:
    """True for a plain file (not a folder, device or link to one); False for any path that cannot be."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return False


def write_json_atomic(path: Path, payload: Any) -> None:
    """Writes JSON to a temporary file beside `path`, then renames it over `path`.

    Readers (the page, every second) see the old file or the new one, never half of one.
    """
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(payload, stream, indent=2)
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def open_plain_file(path: Path) -> BinaryIO:
    """`path` opened for reading, if it is a plain file.

    Opened first and checked through the handle, so what is checked is what is read: a link to
    /dev/zero or a folder in the file's place is refused instead of read forever. O_NONBLOCK: a
    FIFO would otherwise hold the open until a writer comes, which may be never (the flag does
    nothing to a plain file's reads).

    Raises:
        OSError: it cannot be opened (FileNotFoundError when it is missing).
        ValueError: it is not a plain file.
    """
    handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    stream = os.fdopen(handle, "rb")
    if not stat.S_ISREG(os.fstat(handle).st_mode):
        stream.close()
        raise ValueError(f"{path.name} is not a plain file")
    return stream


def read_bytes(path: Path, max_bytes: int) -> bytes:
    """The bytes of a plain file of at most `max_bytes`.

    Raises:
        ValueError: the file is missing, not a plain file, or too large (a one-line reason).
    """
    try:
        with open_plain_file(path) as stream:
            data = stream.read(max_bytes + 1)
    except FileNotFoundError as error:
        raise MissingFileError(f"{path.name} is missing") from error
    except OSError as error:
        raise ValueError(f"{path.name} cannot be read ({error.strerror or type(error).__name__})") from error
    if len(data) > max_bytes:
        raise ValueError(f"{path.name} is larger than {max_bytes // 1024**2} MB")
    return data


def file_problem(file_name: str, error: ValueError) -> str:
    """A reader's error as a phrase that names the file once: "config.json field 'x' must be ..."."""
    detail = str(error)
    return detail if detail.startswith(file_name) else f"{file_name} {detail}"


def read_json(path: Path, max_bytes: int) -> Any:
    """Parsed JSON of a plain file of at most `max_bytes`.

    Raises:
        ValueError: unreadable, too large, not UTF-8, not JSON, or nested too deeply to parse.
    """
    data = read_bytes(path, max_bytes)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path.name} is not UTF-8 text") from error
    except RecursionError as error:
        raise ValueError(f"{path.name} is nested too deeply") from error
    except ValueError as error:  # JSONDecodeError, and integers of thousands of digits
        raise ValueError(f"{path.name} is not valid JSON ({clip(str(error), 120)})") from error


def read_tail(path: Path, max_bytes: int) -> str:
    """The last `max_bytes` of a log file, as text; "" when it is missing or not a plain file.

    Only the tail is read, however long the file has grown, and a FIFO is never waited on; bytes
    that are not UTF-8 read as "\ufffd".
    """
    try:
        with open_plain_file(path) as stream:
            stream.seek(max(0, os.fstat(stream.fileno()).st_size - max_bytes))
            return stream.read(max_bytes).decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return ""
