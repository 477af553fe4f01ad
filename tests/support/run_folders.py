"""Run folders written by hand, the way the fine-tune worker leaves them, for tests of readers."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import safetensors.torch
import timm
import torch

T = TypeVar("T")

__all__ = [
    "NON_UTF8_RUN_NAME",
    "TINY_RUN_CONFIG",
    "dead_looking_run",
    "folder_snapshot",
    "hand_made_run",
    "odd_run_folders",
    "released_after",
    "tiny_run_weights",
    "within_or_release",
]

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


NON_UTF8_RUN_NAME = b"20250101-000000-run-\xff\xfe"  # a Latin-1 tool's name: not UTF-8


def odd_run_folders(root: Path) -> dict[str, Path]:
    """Run folders no worker writes but a shared disk may hold, each otherwise a finished run.

    Returns:
        {"non-UTF-8 name", "200-character name", "FIFO status.json": folder}. Reading the FIFO
        blocks until a writer opens it, so a reader that opens it the ordinary way hangs.
    """
    staged = hand_made_run(root, ".staged")
    non_utf8 = os.fsencode(root) + b"/" + NON_UTF8_RUN_NAME
    os.mkdir(non_utf8)
    for file in staged.iterdir():
        os.rename(file, non_utf8 + b"/" + os.fsencode(file.name))
    staged.rmdir()
    fifo = hand_made_run(root, "20250101-000000-test_vit-probe-fifo000")
    (fifo / "status.json").unlink()
    os.mkfifo(fifo / "status.json")
    return {
        "non-UTF-8 name": Path(os.fsdecode(non_utf8)),
        "200-character name": hand_made_run(root, "r" * 200),
        "FIFO status.json": fifo,
    }


def within_or_release(call: Callable[[], T], fifo: Path, timeout_s: float = 10.0) -> T:
    """What `call` returns, when it returns within `timeout_s`; else a failed test.

    A call stuck opening `fifo` is released first (opening the FIFO for writing ends its wait),
    so a failing test does not leave a thread blocked for good.
    """
    answer: list[T] = []
    worker = threading.Thread(target=lambda: answer.append(call()), daemon=True)
    worker.start()
    worker.join(timeout=timeout_s)
    stuck = worker.is_alive()
    if stuck:
        _release(fifo)
        worker.join(timeout=timeout_s)
    assert not stuck, f"still waiting after {timeout_s} s (on the FIFO {fifo.name}?)"
    return answer[0]


def _release(fifo: Path) -> None:
    """Ends the wait of whoever is opening `fifo` for reading (no one waiting: nothing happens)."""
    with suppress(OSError):  # ENXIO: no reader has it open
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@contextmanager
def released_after(fifo: Path, delay_s: float) -> Iterator[None]:
    """From `delay_s` seconds on, and until the block ends, every reader stuck opening `fifo` is let go.

    A page that opens the FIFO the ordinary way then finishes late instead of never, so a test
    of it fails on its time instead of hanging the test run.
    """
    done = threading.Event()

    def keep_releasing() -> None:
        if done.wait(delay_s):
            return
        while not done.wait(0.05):
            _release(fifo)

    releaser = threading.Thread(target=keep_releasing, daemon=True)
    releaser.start()
    try:
        yield
    finally:
        done.set()
        releaser.join()
        _release(fifo)
