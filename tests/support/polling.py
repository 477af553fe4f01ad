"""Waiting for work done elsewhere (a worker process, a server, a browser) by polling with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout_s: float = 240.0,
    what: str | Callable[[], str] = "the condition",
    interval_s: float = 0.1,
    pause: Callable[[float], None] = time.sleep,
) -> T:
    """Polls `condition` until it returns something truthy and returns that; fails after `timeout_s`.

    Args:
        condition: checked first at once, then after each pause; may itself assert.
        timeout_s: the deadline, in seconds from the call.
        what: named in the failure; a callable is asked at the deadline (a log, the page's texts).
        interval_s: the pause between checks, in seconds.
        pause: how to wait `interval_s`; a browser test passes one that lets the page's events run
            (Playwright's `page.wait_for_timeout`), which `time.sleep` would block.
    """
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        pause(interval_s)
    return value
