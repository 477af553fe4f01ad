"""Pairs of run folders: written by hand as finetune-pair leaves them, for tests of readers, or trained."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from tests.support.run_folders import TINY_RUN_CONFIG, hand_made_run
from vitviz.finetune.pair import PAIR_FILE, RunPair, train_pair
from vitviz.finetune.trainer import FinetuneConfig

__all__ = ["PAIR_LABELS", "hand_made_pair", "trained_pair"]

PAIR_LABELS: tuple[str, ...] = tuple(TINY_RUN_CONFIG["labels"])


def hand_made_pair(
    root: Path,
    tag: str,
    created: float,
    *,
    cnn_has_model: bool = True,
    titles: tuple[str, str] | None = None,
) -> dict[str, Path]:
    """Two finished tiny runs in `root`, "<tag>-vit" and "<tag>-cnn", each holding the pair's pair.json.

    `cnn_has_model=False` leaves the CNN's run without its model file (deleted, or a broken disk);
    `titles` names the ViT's and the CNN's run.
    """
    configs = {}
    for side, title in zip(("vit", "cnn"), titles or (None, None), strict=True):
        configs[side] = copy.deepcopy(TINY_RUN_CONFIG)
        configs[side]["created"] = created
        if title is not None:
            configs[side]["title"] = title
    runs = {
        "vit": hand_made_run(root, f"{tag}-vit", config=configs["vit"]),
        "cnn": hand_made_run(root, f"{tag}-cnn", config=configs["cnn"], with_model=cnn_has_model),
    }
    manifest = {
        "format": "vitviz pair",
        "version": 1,
        "runs": {side: folder.name for side, folder in runs.items()},
        "labels": list(PAIR_LABELS),
        "data": "builtin:shapes",
        "split": {"seed": 0, "val_fraction": 0.2, "max_images": None},
        "created": created,
    }
    for folder in runs.values():
        (folder / PAIR_FILE).write_text(json.dumps(manifest))
    return runs


def trained_pair(root: Path) -> RunPair:
    """A real pair, as "Train a ViT/CNN pair" makes it: the bundled DINOv2 and EfficientNet each
    fine-tuned (a probe, one epoch) on the same 20 handwritten digits, in `root`."""
    config = FinetuneConfig(max_images=20, epochs=1, batch_size=8, device="cpu")
    outcome = train_pair(config, "builtin:digits", root, log=lambda line: None)
    assert outcome.pair is not None and outcome.pair.ready, outcome
    return outcome.pair
