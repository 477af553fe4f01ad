"""Chooses the torch device: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import torch

__all__ = ["available_devices", "default_device"]


def available_devices() -> list[str]:
    """Lists the devices this machine can run on, best first."""
    devices = []
    if torch.cuda.is_available():
        devices.extend(f"cuda:{index}" if index else "cuda" for index in range(torch.cuda.device_count()))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    devices.append("cpu")
    return devices


def default_device() -> str:
    """The best device available: the first of `available_devices()`."""
    return available_devices()[0]
