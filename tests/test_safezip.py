"""Hostile uploads: every trick is refused as a whole archive, and nothing is written anywhere."""

import io
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.archives import png_bytes, zip_of
from vitviz.finetune import safezip
from vitviz.finetune.safezip import (
    UnsafeArchiveError,
    ZipLimits,
    extract_image_zip,
    inspect_image_zip,
)


def good_entries() -> dict[str, bytes]:
    return {"cats/a.png": png_bytes(), "dogs/b.png": png_bytes((0, 0, 200))}


def snapshot(folder: Path) -> list[tuple[str, int]]:
    """Every path under `folder` with its size: equal snapshots mean nothing was written."""
    return sorted((str(p.relative_to(folder)), p.lstat().st_size) for p in folder.rglob("*"))


@pytest.fixture
def sandbox(tmp_path):
    """A parent folder with one existing file; the archive goes to parent/run/data."""
    parent = tmp_path / "runs"
    parent.mkdir()
    (parent / "keep.txt").write_text("untouched")
    return parent


def assert_refused(archive: bytes, sandbox: Path, match: str, limits: ZipLimits | None = None) -> None:
    before = snapshot(sandbox.parent)
    target = sandbox / "run" / "data"
    with pytest.raises(UnsafeArchiveError, match=match):
        extract_image_zip(archive, target, **({"limits": limits} if limits else {}))
    assert snapshot(sandbox.parent) == before
    assert not (sandbox / "run").exists()


def test_traversal_with_dot_dot_is_refused_and_nothing_written(sandbox):
    archive = zip_of({**good_entries(), "cats/../../evil.png": png_bytes()})
    assert_refused(archive, sandbox, r"climbs out of its folder with '\.\.'")
    assert not (sandbox / "evil.png").exists()


def test_windows_style_traversal_is_refused(sandbox):
    archive = zip_of({**good_entries(), "..\\evil.png": png_bytes()})
    assert_refused(archive, sandbox, "climbs out")


def test_absolute_path_is_refused(sandbox):
    archive = zip_of({**good_entries(), "/tmp/evil.png": png_bytes()})
    assert_refused(archive, sandbox, "is an absolute path")
    assert not Path("/tmp/evil.png").exists() or Path("/tmp/evil.png").stat().st_size != len(png_bytes())


def test_symlink_entry_is_refused(sandbox):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in good_entries().items():
            archive.writestr(name, data)
        link = zipfile.ZipInfo("cats/link.png")
        link.create_system = 3  # Unix, so the mode bits count
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    assert_refused(buffer.getvalue(), sandbox, "is a symbolic link")


def test_too_many_entries_is_refused(sandbox):
    entries = {f"cats/{index}.png": b"x" for index in range(60)}
    assert_refused(zip_of(entries), sandbox, "60 entries; the limit is 50", ZipLimits(max_entries=50))


def test_highly_compressible_huge_entry_is_refused_from_its_header(sandbox):
    # 64 MiB of zeros compresses to about 64 KiB: a small upload that would fill a disk.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cats/a.png", png_bytes())
        with archive.open("cats/bomb.bmp", "w") as member:
            chunk = bytes(1024 * 1024)
            for _ in range(65):
                member.write(chunk)
    archive_bytes = buffer.getvalue()
    assert len(archive_bytes) < 200_000
    assert_refused(archive_bytes, sandbox, "unpacks to 65.0 MiB; the limit is 25.0 MiB per file")


def test_an_image_over_the_per_image_limit_is_refused_by_the_page_check(sandbox):
    # 63 MB of zeros packs into about 60 kB: it passed the check and filled the run folder.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cats/a.png", png_bytes())
        for index in range(3):
            with archive.open(f"dogs/{index}.png", "w") as member:
                for _ in range(63):
                    member.write(bytes(1_000_000))
    archive_bytes = buffer.getvalue()
    assert len(archive_bytes) < 1_000_000
    with pytest.raises(UnsafeArchiveError, match=r"the limit is 25\.0 MiB per file"):
        inspect_image_zip(archive_bytes)
    assert_refused(archive_bytes, sandbox, "the limit is 25.0 MiB per file")


def test_an_image_entry_that_does_not_start_like_an_image_is_refused_by_the_page_check(sandbox):
    archive = zip_of({**good_entries(), "dogs/zeros.png": bytes(20 * 1024**2)})
    with pytest.raises(UnsafeArchiveError, match=r"'dogs/zeros\.png' is not an image"):
        inspect_image_zip(archive)
    assert_refused(archive, sandbox, "is not an image")


def test_total_size_limit_counts_every_entry(sandbox):
    entries = {f"cats/{index}.bmp": bytes(400_000) for index in range(4)}
    limits = ZipLimits(max_total_bytes=1_000_000)
    assert_refused(zip_of(entries), sandbox, "unpacks to more than", limits)


def _lie_about_size(archive: bytes, name: str, claimed: int) -> bytes:
    """Rewrites the uncompressed size of `name` in both its local header and the central directory."""
    data = bytearray(archive)
    with zipfile.ZipFile(io.BytesIO(archive)) as parsed:
        info = parsed.getinfo(name)
    real = info.file_size.to_bytes(4, "little")
    local = info.header_offset
    assert data[local + 22 : local + 26] == real
    data[local + 22 : local + 26] = claimed.to_bytes(4, "little")
    central = data.find(b"PK\x01\x02")
    while central != -1:
        name_length = int.from_bytes(data[central + 28 : central + 30], "little")
        if data[central + 46 : central + 46 + name_length] == name.encode():
            assert data[central + 24 : central + 28] == real
            data[central + 24 : central + 28] = claimed.to_bytes(4, "little")
            return bytes(data)
        central = data.find(b"PK\x01\x02", central + 4)
    raise AssertionError("central directory entry not found")


def test_header_lying_about_size_is_caught_while_decompressing(sandbox):
    archive = zip_of({**good_entries(), "cats/big.bmp": bytes(3_000_000)})
    liar = _lie_about_size(archive, "cats/big.bmp", 1_000)
    with zipfile.ZipFile(io.BytesIO(liar)) as parsed:
        assert parsed.getinfo("cats/big.bmp").file_size == 1_000  # the header now claims 1 kB
    # Limits the header alone passes: only the real byte count can tell.
    assert_refused(liar, sandbox, "header lies|more than its header says", ZipLimits(max_entry_bytes=10_000))


def test_good_zip_extracts_images_and_lists_the_skipped_file(sandbox):
    archive = zip_of(
        {**good_entries(), "README.txt": b"hello", "cats/notes.txt": b"x", "__MACOSX/._a.png": b"junk"}
    )
    target = sandbox / "run" / "data"
    contents = extract_image_zip(archive, target)
    assert contents.images == ("cats/a.png", "dogs/b.png")
    assert set(contents.skipped) == {"README.txt", "cats/notes.txt", "__MACOSX/._a.png"}
    written = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert written == ["cats/a.png", "dogs/b.png"]
    assert (target / "cats" / "a.png").read_bytes() == png_bytes()
    assert (sandbox / "keep.txt").read_text() == "untouched"


def test_inspect_writes_nothing_and_refuses_a_non_zip():
    contents = inspect_image_zip(zip_of(good_entries()))
    assert contents.image_bytes == sum(len(v) for v in good_entries().values())
    with pytest.raises(UnsafeArchiveError, match=r"not a readable \.zip"):
        inspect_image_zip(b"this is not a zip")


def test_extract_refuses_a_folder_that_is_not_empty(sandbox):
    with pytest.raises(FileExistsError):
        extract_image_zip(zip_of(good_entries()), sandbox)
    assert snapshot(sandbox) == [("keep.txt", 9)]


def test_cli_refuses_a_hostile_zip_with_one_line_and_exit_1(sandbox, tmp_path):
    evil = tmp_path / "evil.zip"
    evil.write_bytes(zip_of({**good_entries(), "../evil.png": png_bytes()}))
    out = sandbox / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VITVIZ_RUNS_DIR": str(sandbox)}
    result = subprocess.run(
        [sys.executable, "-m", "vitviz", "finetune", "--data", str(evil), "--model", "test_vit",
         "--weights", "random", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: The archive was refused: entry '../evil.png' climbs out of its folder with '..'."
    ]
    assert not (out / "data").exists()
    assert not (sandbox / "evil.png").exists()


def test_extraction_stops_at_the_first_image_that_does_not_decode(sandbox, monkeypatch):
    """Starting like a PNG passes the archive check; decoding before writing finds the damage."""
    damaged = png_bytes()[:40] + bytes(200)  # a PNG signature and header, then zeros
    entries = {"cats/a.png": png_bytes(), "cats/b.png": damaged}
    entries |= {f"dogs/{index}.png": png_bytes((0, 0, 200)) for index in range(5)}
    inspect_image_zip(zip_of(entries))  # the whole-archive check lets it through
    decoded = []
    real_decode = safezip.decode_image
    monkeypatch.setattr(safezip, "decode_image", lambda data: decoded.append(len(data)) or real_decode(data))
    assert_refused(
        zip_of(entries), sandbox, r"entry 'cats/b.png' is not a readable image \(The image is truncated"
    )
    assert decoded == [len(entries["cats/a.png"]), len(damaged)]  # nothing after it was read or written
