"""What every benchmark script shares: the machine it ran on and interleaved median timing."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["cpu_model", "interleaved_medians", "machine"]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """One line naming the CPU, cores, torch and its threads, and Python."""
    return (
        f"{cpu_model()} · {os.cpu_count()} cores · torch {torch.__version__} "
        f"({torch.get_num_threads()} threads) · Python {platform.python_version()}"
    )


def interleaved_medians(works: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median wall time in seconds of each piece of work; each round runs every piece once, so
    load from other work on the machine falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(runs):
        for name, work in works.items():
            start = time.perf_counter()
            work()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
