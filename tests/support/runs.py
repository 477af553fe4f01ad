"""Run and pair folders laid down with the library's own writers, for tests that only read them."""

from __future__ import annotations

import time
from pathlib import Path

import timm

from vitviz.finetune.pair import PAIR_FILE
from vitviz.runs import RunState, RunStatus, save_model, write_config, write_json_atomic, write_status

__all__ = ["lay_down_pair", "lay_down_run"]


def lay_down_run(
    folder: Path, labels: tuple[str, ...], state: RunState = "finished", with_model: bool = True
) -> Path:
    """A run folder of a tiny random resnet18 head for `labels`, in `state`."""
    folder.mkdir(parents=True)
    write_config(
        folder, {"timm_name": "resnet18", "mode": "probe", "labels": list(labels), "created": time.time()}
    )
    if with_model:
        save_model(folder, timm.create_model("resnet18", pretrained=False, num_classes=len(labels)))
    write_status(folder, RunStatus(state))
    return folder


def lay_down_pair(folder: Path, labels: tuple[str, ...], created: float, complete: bool = True) -> Path:
    """A pair folder with vit/ and cnn/ runs and a pair.json; `complete=False` leaves the CNN training."""
    lay_down_run(folder / "vit", labels)
    lay_down_run(folder / "cnn", labels, "finished" if complete else "running", with_model=complete)
    manifest = {
        "format": "vitviz pair",
        "version": 1,
        "runs": {"vit": "vit", "cnn": "cnn"},
        "labels": list(labels) if complete else [],
        "data": "builtin:digits",
        "split": {"seed": 0, "val_fraction": 0.2, "max_images": None},
        "created": created,
    }
    write_json_atomic(folder / PAIR_FILE, manifest)
    return folder
