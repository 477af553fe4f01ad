"""Safe reading of uploaded zip archives: the whole archive is refused before anything is written.

An archive is checked in one pass that opens it once and decompresses every image member once
(counting real bytes, not what headers claim); a summary can keep a few members' bytes from that
same pass. Extraction checks each member against the limits before writing a byte of it.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import zipfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from vitviz.images import (
    MAX_UPLOAD_BYTES,
    UPLOAD_EXTENSIONS,
    ImageDecodeError,
    decode_image,
    looks_like_image,
)

__all__ = [
    "DEFAULT_LIMITS",
    "UnsafeArchiveError",
    "ZipContents",
    "ZipLimits",
    "ZipSource",
    "extract_image_zip",
    "inspect_image_zip",
    "is_image_name",
]

ZipSource = bytes | str | Path | BinaryIO

_CHUNK_BYTES = 1024 * 1024
_HEAD_BYTES = 12  # enough of a member's start to tell every supported image format
_IMAGE_SUFFIXES = frozenset(f".{extension}" for extension in UPLOAD_EXTENSIONS)
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
# File-type bits of a Unix mode, as zip tools store it in the top 16 bits of external_attr.
_REGULAR_OR_UNSET = (0, stat.S_IFREG)


@dataclass(frozen=True)
class ZipLimits:
    """What an uploaded archive may hold; anything beyond is treated as a zip bomb."""

    max_entries: int = 20_000  # members of any kind, folders included
    max_total_bytes: int = 1024**3  # uncompressed bytes of all members together
    # Uncompressed bytes of one member: no more than vitviz.images ever decodes, so nothing larger
    # than a usable image is written (a 63 MB "image" of zeros packs into 60 kB).
    max_entry_bytes: int = MAX_UPLOAD_BYTES
    # Why max_total_bytes is what it is, said when an archive passes it (a run's disk cap, say).
    total_note: str = "a zip bomb?"


DEFAULT_LIMITS = ZipLimits()


class UnsafeArchiveError(ValueError):
    """The archive was refused as a whole; ``str(error)`` says why, for a user."""


@dataclass(frozen=True)
class ZipContents:
    """The members of an accepted archive, split into images kept and other files skipped."""

    images: tuple[str, ...]  # member paths of image files, normalised to "a/b/c.png"
    skipped: tuple[str, ...]  # member paths that are not images: listed, never extracted
    image_bytes: int  # uncompressed bytes of the images, as measured while decompressing
    kept: Mapping[str, bytes] = field(default_factory=dict)  # bytes of the members `keep` chose


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
    if byte_count >= 1024**2:
        return f"{byte_count / 1024**2:.1f} MiB"
    return f"{byte_count / 1024:.1f} KiB"


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
                f"{_size_text(limits.max_total_bytes)} ({limits.total_note})."
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
    """Decompresses one image member into `sink`, counting the real bytes against the limits.

    Headers can lie: the count, not the declared size, is what is checked. zipfile also stops at
    the declared size and checks the CRC, so a member longer than its header says fails here.
    A member that does not start like an image is refused at its first bytes.

    Returns:
        The member's real uncompressed size.
    """
    written = 0
    head = b""
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
                        f"{_size_text(limits.max_total_bytes)} ({limits.total_note})."
                    )
                if len(head) < _HEAD_BYTES:
                    head += chunk[: _HEAD_BYTES - len(head)]
                    if len(head) == _HEAD_BYTES:
                        _check_image_start(head, name)
                sink(chunk)
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, RuntimeError) as error:
        raise UnsafeArchiveError(
            f"The archive was refused: entry {name!r} is corrupt or its header lies about it ({error})."
        ) from error
    if len(head) < _HEAD_BYTES:
        _check_image_start(head, name)  # a member shorter than any image header
    return written


def _check_image_start(head: bytes, name: str) -> None:
    if not looks_like_image(head):
        raise UnsafeArchiveError(
            f"The archive was refused: entry {name!r} is not an image (it does not start like a "
            "PNG, JPEG, WebP, GIF, BMP or TIFF file)."
        )


def _check_decodes(data: bytes, name: str) -> None:
    """Refuses a member that starts like an image but does not decode as one.

    Extraction stops at the first such member, before writing the next: an archive of damaged
    pictures would otherwise be written whole (up to a gigabyte) and fail only when training reads it.
    """
    try:
        decode_image(data).close()
    except ImageDecodeError as error:
        raise UnsafeArchiveError(
            f"The archive was refused: entry {name!r} is not a readable image ({error})"
        ) from error


def inspect_image_zip(
    source: ZipSource,
    limits: ZipLimits = DEFAULT_LIMITS,
    keep: Callable[[tuple[str, ...], tuple[str, ...]], Collection[str]] | None = None,
) -> ZipContents:
    """Checks a whole archive without writing anything: names, types, declared and real sizes.

    The archive is opened once and every image member is decompressed once, so corrupt data,
    lying headers and members that are not images are found before a single byte is written.
    Non-image members are listed, never decompressed. The work grows linearly with the archive.

    Args:
        source: the archive's bytes, a path or an open binary file.
        limits: what the archive may hold.
        keep: given (image names, skipped names), picks images whose bytes to keep from the same
            pass (e.g. a summary's samples), so nothing is read twice.

    Raises:
        UnsafeArchiveError: an absolute path, a ".." climb, a link, an encrypted or corrupt member,
            an image member that is not an image, or more entries or bytes than `limits` allow.
    """
    with _open(source) as archive:
        planned, skipped = _plan(archive, limits)
        images = tuple(name for _, name in planned)
        wanted = set(keep(images, tuple(skipped))) if keep is not None else set()
        kept: dict[str, bytes] = {}
        total = 0
        for info, name in planned:
            if name in wanted:
                buffer = bytearray()
                total += _stream(archive, info, name, limits, total, buffer.extend)
                kept[name] = bytes(buffer)
            else:
                total += _stream(archive, info, name, limits, total, lambda _chunk: None)
    return ZipContents(images, tuple(skipped), total, kept)


def extract_image_zip(
    source: ZipSource, destination: str | Path, limits: ZipLimits = DEFAULT_LIMITS
) -> ZipContents:
    """Extracts the image members of an archive into `destination`, and nothing anywhere else.

    The archive is first checked as a whole with :func:`inspect_image_zip`; a refused archive
    writes nothing at all. Each image is then decoded before it is written, and the first that
    does not decode ends the extraction. `destination` must not exist yet or be empty; if writing fails midway,
    everything written is removed again.

    Returns:
        What was extracted and what was skipped.

    Raises:
        UnsafeArchiveError: the archive was refused (see :func:`inspect_image_zip`), or an image
            in it does not decode (what was written is removed again).
        FileExistsError: `destination` holds files already.
    """
    contents = inspect_image_zip(source, limits)
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise FileExistsError(
            f"{destination.name} is not empty; archives are only extracted into a new folder."
        )
    created = not destination.exists()
    made = destination  # the outermost folder this call makes: removed whole if extraction fails
    while not made.parent.exists():
        made = made.parent
    destination.mkdir(parents=True, exist_ok=True)
    root = destination.resolve()
    try:
        with _open(source) as archive:
            planned, _ = _plan(archive, limits)
            total = 0
            for info, name in planned:
                target = (root / name).resolve()
                if not target.is_relative_to(root):  # belt and braces: _normalised_name refused ".."
                    raise UnsafeArchiveError(
                        f"The archive was refused: entry {name!r} lands outside its folder."
                    )
                # The member is read and checked whole (at most limits.max_entry_bytes) before
                # a byte of it is written.
                buffer = bytearray()
                total += _stream(archive, info, name, limits, total, buffer.extend)
                _check_decodes(bytes(buffer), name)
                target.parent.mkdir(parents=True, exist_ok=True)
                # "xb": never overwrite, and never write through a link that is already there.
                with open(target, "xb") as handle:
                    handle.write(buffer)
                os.chmod(target, 0o644)
    except BaseException:
        if created:
            shutil.rmtree(made, ignore_errors=True)
        else:
            for child in destination.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        raise
    return contents
