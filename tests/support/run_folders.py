"""Run folders written by hand, the way the fine-tune worker leaves them, for tests of readers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import timm
import torch

__all__ = ["TINY_RUN_CONFIG", "dead_looking_run", "folder_snapshot", "hand_made_run", "tiny_run_weights"]

# What the worker writes for a probe of timm's tiny `test_vit` on two classes.
TINY_RUN_CONFIG: dict[str, Any] = {
    "timm_name": "test_vit",
    "weights": "random",
    "base_model": "test_vit",
    "mode": "probe",
    "hyperparameters": {
        "mode": "probe",
        "last_k": 2,
        "epochs": 3,
        "batch_size": 8,
        "lr": 0.01,
        "weight_decay": 0.05,
        "max_images": None,
        "seed": 0,
        "val_fraction": 0.2,
    },
    "labels": ["circle", "square"],
    "num_classes": 2,
    "build_args": {"img_size": [32, 32]},
    "data": {
        "spec": "builtin:shapes",
        "label": "builtin:shapes",
        "root": "",
        "images": 20,
        "class_counts": {"circle": 10, "square": 10},
        "skipped": [],
    },
    "device": "cpu",
    "world_size": 1,
    "created": 1_700_000_000.0,
}


def tiny_run_weights() -> dict[str, torch.Tensor]:
    """The state dict of the model TINY_RUN_CONFIG describes."""
    torch.manual_seed(0)
    return timm.create_model("test_vit", num_classes=2, img_size=32).state_dict()


def hand_made_run(
    root: Path,
    name: str = "20250101-000000-test_vit-probe-abcdef",
    *,
    config: dict[str, Any] | bytes | None = None,
    status: dict[str, Any] | bytes | None = None,
    with_model: bool = True,
) -> Path:
    """A run folder under `root`; `config` / `status` given as bytes are written exactly as given."""
    folder = root / name
    folder.mkdir(parents=True)
    config = TINY_RUN_CONFIG if config is None else config
    status = {"state": "finished", "progress": 1.0, "epoch": 3, "epochs": 3} if status is None else status
    for file_name, payload in (("config.json", config), ("status.json", status)):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        (folder / file_name).write_bytes(data)
    if with_model:
        safetensors.torch.save_file(tiny_run_weights(), folder / "model.safetensors")
    return folder


def dead_looking_run(
    root: Path, name: str = "20250101-000000-test_vit-probe-dead00", *, with_model: bool = False
) -> Path:
    """A run whose status says it trains, with no worker recorded (a reader settles such a run, if
    it is one of the runs folder's), and the extracted data and upload a settled run gives back."""
    folder = hand_made_run(root, name, status={"state": "running", "updated": 1.0}, with_model=with_model)
    (folder / "data" / "cats").mkdir(parents=True)
    (folder / "data" / "cats" / "1.png").write_bytes(b"not really a png")
    (folder / "upload.zip").write_bytes(b"PK")
    return folder


def folder_snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by its relative path, with its bytes: to show nothing changed."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}
