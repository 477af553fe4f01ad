"""Safe reading of uploaded zip archives: the whole archive is refused before anything is written."""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from vitviz.images import UPLOAD_EXTENSIONS

__all__ = [
    "DEFAULT_LIMITS",
    "UnsafeArchiveError",
    "ZipContents",
    "ZipLimits",
    "ZipSource",
    "extract_image_zip",
    "inspect_image_zip",
    "is_image_name",
    "read_zip_member",
]

ZipSource = bytes | str | Path | BinaryIO

_CHUNK_BYTES = 1024 * 1024
_IMAGE_SUFFIXES = frozenset(f".{extension}" for extension in UPLOAD_EXTENSIONS)
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
# File-type bits of a Unix mode, as zip tools store it in the top 16 bits of external_attr.
_REGULAR_OR_UNSET = (0, stat.S_IFREG)


@dataclass(frozen=True)
class ZipLimits:
    """What an uploaded archive may hold; anything beyond is treated as a zip bomb."""

    max_entries: int = 20_000  # members of any kind, folders included
    max_total_bytes: int = 1024**3  # uncompressed bytes of all members together
    max_entry_bytes: int = 64 * 1024**2  # uncompressed bytes of one member


DEFAULT_LIMITS = ZipLimits()


class UnsafeArchiveError(ValueError):
    """The archive was refused as a whole; ``str(error)`` says why, for a user."""


@dataclass(frozen=True)
class ZipContents:
    """The members of an accepted archive, split into images kept and other files skipped."""

    images: tuple[str, ...]  # member paths of image files, normalised to "a/b/c.png"
    skipped: tuple[str, ...]  # member paths that are not images: listed, never extracted
    image_bytes: int  # uncompressed bytes of the images, as measured while decompressing


def is_image_name(name: str) -> bool:
    """True for file names with an image extension this app reads; hidden files never count."""
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and Path(base).suffix.lower() in _IMAGE_SUFFIXES


def _open(source: ZipSource) -> zipfile.ZipFile:
    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(source)
    elif hasattr(source, "seek"):
        source.seek(0)
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as error:
        raise UnsafeArchiveError(f"This is not a readable .zip archive ({error}).") from error


def _normalised_name(info: zipfile.ZipInfo) -> str:
    """The member's path with "/" separators, refusing any path that could land outside the folder."""
    raw = info.filename
    shown = raw if len(raw) <= 80 else raw[:77] + "..."
    if "\x00" in raw:
        raise UnsafeArchiveError(f"The archive was refused: entry {shown!r} has a NUL byte in its name.")
    name = raw.replace("\\", "/")  # Windows tools may write backslashes; "..\\x" climbs out too
    if name.startswith("/") or _DRIVE_LETTER.match(name):
        raise UnsafeArchiveError(f"The archive was refused: entry {shown!r} is an absolute path.")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(
            f"The archive was refused: entry {shown!r} climbs out of its folder with '..'."
        )
    return "/".join(parts)


def _check_type(info: zipfile.ZipInfo, name: str) -> None:
    """Refuses links, devices and encrypted members: only plain files and folders are accepted."""
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type == stat.S_IFLNK:
        raise UnsafeArchiveError(f"The archive was refused: entry {name!r} is a symbolic link.")
    if file_type not in (*_REGULAR_OR_UNSET, stat.S_IFDIR):
        raise UnsafeArchiveError(f"The archive was refused: entry {name!r} is not a plain file or folder.")
    if info.flag_bits & 0x1:
        raise UnsafeArchiveError(f"The archive was refused: entry {name!r} is encrypted.")


def _size_text(byte_count: int) -> str:
    if byte_count >= 1024**3:
        return f"{byte_count / 1024**3:.1f} GiB"
    return f"{byte_count / 1024**2:.1f} MiB"


def _plan(archive: zipfile.ZipFile, limits: ZipLimits) -> tuple[list[tuple[zipfile.ZipInfo, str]], list[str]]:
    """Checks every member's name, type and declared size; returns (images to keep, names skipped)."""
    members = archive.infolist()
    if len(members) > limits.max_entries:
        raise UnsafeArchiveError(
            f"The archive was refused: it has {len(members):,} entries; the limit is {limits.max_entries:,}."
        )
    keep: list[tuple[zipfile.ZipInfo, str]] = []
    skipped: list[str] = []
    seen: set[str] = set()
    declared_total = 0
    for info in members:
        name = _normalised_name(info)
        _check_type(info, name or info.filename)
        if info.is_dir() or not name:
            continue
        if name in seen:
            raise UnsafeArchiveError(f"The archive was refused: entry {name!r} appears more than once.")
        seen.add(name)
        if info.file_size > limits.max_entry_bytes:
            raise UnsafeArchiveError(
                f"The archive was refused: entry {name!r} unpacks to {_size_text(info.file_size)}; "
                f"the limit is {_size_text(limits.max_entry_bytes)} per file."
            )
        declared_total += info.file_size
        if declared_total > limits.max_total_bytes:
            raise UnsafeArchiveError(
                "The archive was refused: it unpacks to more than "
                f"{_size_text(limits.max_total_bytes)} (a zip bomb?)."
            )
        if is_image_name(name):
            keep.append((info, name))
        else:
            skipped.append(name)
    return keep, skipped


def _stream(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    name: str,
    limits: ZipLimits,
    total_so_far: int,
    sink: Callable[[bytes], object],
) -> int:
    """Decompresses one member into `sink`, counting the real bytes against the limits.

    Headers can lie: the count, not the declared size, is what is checked. zipfile also stops at
    the declared size and checks the CRC, so a member longer than its header says fails here.

    Returns:
        The member's real uncompressed size.
    """
    written = 0
    try:
        with archive.open(info) as member:
            while chunk := member.read(_CHUNK_BYTES):
                written += len(chunk)
                if written > info.file_size or written > limits.max_entry_bytes:
                    raise UnsafeArchiveError(
                        f"The archive was refused: entry {name!r} unpacks to more than its header says "
                        "or than the per-file limit (a zip bomb?)."
                    )
                if total_so_far + written > limits.max_total_bytes:
                    raise UnsafeArchiveError(
                        "The archive was refused: it unpacks to more than "
                        f"{_size_text(limits.max_total_bytes)} (a zip bomb?)."
                    )
                sink(chunk)
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, RuntimeError) as error:
        raise UnsafeArchiveError(
            f"The archive was refused: entry {name!r} is corrupt or its header lies about it ({error})."
        ) from error
    return written


def inspect_image_zip(source: ZipSource, limits: ZipLimits = DEFAULT_LIMITS) -> ZipContents:
    """Checks a whole archive without writing anything: names, types, declared and real sizes.

    Every image member is decompressed into nothing, so corrupt data and lying headers are found
    before a single byte is written. Non-image members are listed, never decompressed.

    Raises:
        UnsafeArchiveError: an absolute path, a ".." climb, a link, an encrypted or corrupt member,
            or more entries or bytes than `limits` allow.
    """
    with _open(source) as archive:
        keep, skipped = _plan(archive, limits)
        total = 0
        for info, name in keep:
            total += _stream(archive, info, name, limits, total, lambda _chunk: None)
    return ZipContents(tuple(name for _, name in keep), tuple(skipped), total)


def extract_image_zip(
    source: ZipSource, destination: str | Path, limits: ZipLimits = DEFAULT_LIMITS
) -> ZipContents:
    """Extracts the image members of an archive into `destination`, and nothing anywhere else.

    The archive is first checked as a whole with :func:`inspect_image_zip`; a refused archive
    writes nothing at all. `destination` must not exist yet or be empty; if writing fails midway,
    everything written is removed again.

    Returns:
        What was extracted and what was skipped.

    Raises:
        UnsafeArchiveError: the archive was refused (see :func:`inspect_image_zip`).
        FileExistsError: `destination` holds files already.
    """
    contents = inspect_image_zip(source, limits)
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise FileExistsError(f"{destination} is not empty; archives are only extracted into a new folder.")
    created = not destination.exists()
    destination.mkdir(parents=True, exist_ok=True)
    root = destination.resolve()
    try:
        with _open(source) as archive:
            keep, _ = _plan(archive, limits)
            total = 0
            for info, name in keep:
                target = (root / name).resolve()
                if not target.is_relative_to(root):  # belt and braces: _normalised_name refused ".."
                    raise UnsafeArchiveError(
                        f"The archive was refused: entry {name!r} lands outside its folder."
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                # "xb": never overwrite, and never write through a link that is already there.
                with open(target, "xb") as handle:
                    total += _stream(archive, info, name, limits, total, handle.write)
                os.chmod(target, 0o644)
    except BaseException:
        if created:
            shutil.rmtree(destination, ignore_errors=True)
        else:
            for child in destination.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        raise
    return contents


def read_zip_member(source: ZipSource, name: str, limits: ZipLimits = DEFAULT_LIMITS) -> bytes:
    """The bytes of one image member of an archive already checked by :func:`inspect_image_zip`."""
    with _open(source) as archive:
        keep, _ = _plan(archive, limits)
        for info, member_name in keep:
            if member_name == name:
                buffer = bytearray()
                _stream(archive, info, name, limits, 0, buffer.extend)
                return bytes(buffer)
    raise KeyError(f"the archive has no image named {name!r}")
