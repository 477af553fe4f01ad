"""Lays down a Hugging Face hub cache entry exactly as a download leaves it, so hub loads run offline."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

__all__ = ["FAKE_COMMIT", "lay_down_hub_model"]

FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"  # any 40 hex digits name a snapshot


def lay_down_hub_model(
    hub_cache: Path, repo_id: str, files: dict[str, Path], commit: str = FAKE_COMMIT
) -> Path:
    """Writes `files` into `hub_cache` as the hub does: content-addressed blobs, a snapshot of links to
    them and `refs/main` naming the snapshot's commit.

    Args:
        hub_cache: the hub cache folder (`$HF_HOME/hub`).
        repo_id: e.g. "timm/tf_efficientnet_lite0.in1k".
        files: file name in the repository -> a local file to store under it.

    Returns:
        The snapshot folder.
    """
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        digest = hashlib.sha256(source.read_bytes()).hexdigest()  # the hub names LFS blobs by sha256
        blob = repo / "blobs" / digest
        shutil.copyfile(source, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
