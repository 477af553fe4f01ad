"""Progress of long work in units a person understands, the time left from its own measured pace, and a cancel.

A long computation (Score-CAM's masks, a faithfulness table's steps, a ranking's heads) reports
`(done, total)` into a callback between its units. `JobProgress` is such a callback: it keeps the
units done, measures the pace over the recent part of the run (so a machine that got busier, or a
first unit slowed by warm-up, does not skew it for long), says the time left, and raises
`JobCancelled` at the next unit once its cancel flag is up, so the computation stops there.

Code that cannot take a callback (pytorch-grad-cam's channel loop) reports through `report`, which
reaches the callback made current by `reporting`; `within_unit` turns a nested computation's
progress into a fraction of the enclosing job's current unit.

    progress = JobProgress("masks")
    with reporting(progress):
        explain_pixels(loaded, pixels, "scorecam")  # progress.text(): "masks 128/384 · about 20 s left"
"""

from __future__ import annotations

import contextvars
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = [
    "JobCancelled",
    "JobProgress",
    "ProgressCallback",
    "ProgressSnapshot",
    "duration_text",
    "portion",
    "report",
    "reporting",
    "within_unit",
]

ProgressCallback = Callable[[float, float], None]  # (units done, units in all); may raise to stop

# The pace is measured over this share of the time run so far (at least the last few updates), so
# it follows a machine that slows down or speeds up, yet averages over enough units to be steady.
RECENT_SHARE = 0.3
MIN_RECENT_UPDATES = 3
_MAX_SAMPLES = 4096  # updates kept for the pace; older ones fall out of the window anyway

_CURRENT: contextvars.ContextVar[ProgressCallback | None] = contextvars.ContextVar(
    "vitviz_progress", default=None
)


class JobCancelled(Exception):  # noqa: N818 - a request, not an error
    """Raised between units of a job whose cancel was asked for: the computation stops there."""


@dataclass(frozen=True)
class ProgressSnapshot:
    """What a job has done and how long it has left, as a page or a status file shows it."""

    unit: str  # "masks", "heads", "steps"…
    done: float
    total: float
    elapsed_s: float
    eta_s: float | None  # None until the pace is known

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0

    def text(self) -> str:
        """ "masks 128/384 · about 20 s left" (or "… · measuring the pace" before the first unit)."""
        counts = f"{self.unit} {math.floor(self.done + 1e-9):.0f}/{self.total:.0f}"
        if self.eta_s is None:
            return f"{counts} · measuring the pace"
        return f"{counts} · about {duration_text(self.eta_s)} left"

    def to_json(self) -> dict[str, float | str | None]:
        return {
            "unit": self.unit,
            "done": self.done,
            "total": self.total,
            "elapsed_s": self.elapsed_s,
            "eta_s": self.eta_s,
        }

    @classmethod
    def from_json(cls, payload: dict) -> ProgressSnapshot:
        """The snapshot a status file holds; raises ValueError on anything of another shape."""
        try:
            eta = payload.get("eta_s")
            snapshot = cls(
                str(payload["unit"])[:40],
                float(payload["done"]),
                float(payload["total"]),
                float(payload["elapsed_s"]),
                None if eta is None else float(eta),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a progress record: {error}") from error
        numbers = [snapshot.done, snapshot.total, snapshot.elapsed_s] + (
            [] if eta is None else [snapshot.eta_s]
        )
        if not all(math.isfinite(value) and value >= 0 for value in numbers):
            raise ValueError("a progress record holds a negative or non-finite number")
        return snapshot


def duration_text(seconds: float) -> str:
    """ "8 s", "2 min 10 s", "1 h 5 min": a duration as a person reads it."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if minutes < 10 and rest else f"{minutes} min"
    hours, rest = divmod(round(seconds / 60), 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


class JobProgress:
    """A progress callback that measures its own pace: units done of all, time left, and a cancel.

    Args:
        unit: what one unit is, plural ("masks", "heads", "epochs").
        cancelled: asked before each update; once it says True the update raises `JobCancelled`.
        on_update: called with each new snapshot (a status file, a progress bar).
        clock: seconds, monotonic (a test passes a fake one).
    """

    def __init__(
        self,
        unit: str,
        *,
        cancelled: Callable[[], bool] | None = None,
        on_update: Callable[[ProgressSnapshot], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.unit = unit
        self.cancelled = cancelled
        self.on_update = on_update
        self.clock = clock
        self.started = clock()
        self.done = 0.0
        self.total = 0.0
        self._samples: deque[tuple[float, float]] = deque([(self.started, 0.0)], maxlen=_MAX_SAMPLES)

    def restart(self) -> None:
        """Starts the clock again at nothing done: the pace is the work's, not a model load's before it."""
        self.started = self.clock()
        self.done = 0.0
        self._samples.clear()
        self._samples.append((self.started, 0.0))

    def __call__(self, done: float, total: float) -> None:
        """Records `done` of `total` units; then raises JobCancelled if the job was asked to stop."""
        now = self.clock()
        self.total = float(max(total, 0))
        if done < self.done:  # a job that starts over (another stage) measures its pace afresh
            self._samples.clear()
            self._samples.append((now, float(done)))
        self.done = float(min(max(done, 0), self.total))
        self._samples.append((now, self.done))
        if self.on_update is not None:
            self.on_update(self.snapshot(now))
        self.check_cancelled()  # the unit just done counts; the next one is never started

    def check_cancelled(self) -> None:
        """Raises JobCancelled if the job was asked to stop (a computation may call it inside a unit)."""
        if self.cancelled is not None and self.cancelled():
            raise JobCancelled(f"cancelled after {self.done:.0f} of {self.total:.0f} {self.unit}")

    def _window(self, now: float) -> tuple[float, float, float, float] | None:
        """(start time, start units, last time, last units) of the recent window, or None before a unit."""
        last_time, last_done = self._samples[-1]
        reach = now - RECENT_SHARE * (now - self.started)
        samples = list(self._samples)
        inside = next((i for i, (moment, _) in enumerate(samples) if moment >= reach), len(samples) - 1)
        first = max(0, min(inside - 1, len(samples) - 1 - MIN_RECENT_UPDATES))
        start_time, start_done = samples[first]
        if last_done - start_done <= 0:
            start_time, start_done = samples[0]
        if last_done - start_done <= 0 or last_time <= start_time:
            return None
        return start_time, start_done, last_time, last_done

    def units_per_second(self, now: float | None = None) -> float | None:
        """The pace over the recent part of the run, or None before any unit is done.

        The window reaches back `RECENT_SHARE` of the time run so far, and over at least the last
        `MIN_RECENT_UPDATES` updates.
        """
        window = self._window(self.clock() if now is None else now)
        if window is None:
            return None
        start_time, start_done, last_time, last_done = window
        return (last_done - start_done) / (last_time - start_time)

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left at the recent pace, or None before it is known.

        Between updates the time since the last one is taken off; a unit that runs longer than
        the pace says slows the pace instead (counted up to now), so a stalled job's time left
        does not fall to zero and stay there.
        """
        now = self.clock() if now is None else now
        window = self._window(now)
        if window is None:
            return None
        start_time, start_done, last_time, last_done = window
        remaining = max(0.0, self.total - last_done)
        at_pace = remaining / ((last_done - start_done) / (last_time - start_time)) - (now - last_time)
        after_this_unit = (remaining - min(remaining, 1.0)) / ((last_done - start_done) / (now - start_time))
        return max(at_pace, after_this_unit, 0.0)

    def snapshot(self, now: float | None = None) -> ProgressSnapshot:
        now = self.clock() if now is None else now
        return ProgressSnapshot(self.unit, self.done, self.total, now - self.started, self.eta_s(now))

    def text(self) -> str:
        return self.snapshot().text()


@contextmanager
def reporting(callback: ProgressCallback | None) -> Iterator[None]:
    """Makes `callback` the receiver of `report` calls made below, in this thread (or task)."""
    token = _CURRENT.set(callback)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def report(done: float, total: float) -> None:
    """Reports into the callback made current by `reporting`; nothing happens when there is none."""
    callback = _CURRENT.get()
    if callback is not None:
        callback(done, total)


def portion(
    callback: ProgressCallback | None, start: float, span: float, total: float
) -> ProgressCallback | None:
    """A callback for a part of a job: its (done, all) moves the job from `start` to `start + span` of `total`."""
    if callback is None:
        return None

    def part(inner_done: float, inner_total: float) -> None:
        share = min(1.0, inner_done / inner_total) if inner_total > 0 else 0.0
        callback(start + span * share, total)

    return part


@contextmanager
def within_unit(
    callback: ProgressCallback | None, done: float, total: float, span: float = 1.0
) -> Iterator[None]:
    """While the enclosing job works on its units `done` to `done + span` of `total`, nested reports move it there.

    A faithfulness table whose map is Score-CAM counts the map as one step; the map's masks then
    advance that step smoothly instead of leaving the table's progress still for a minute.
    """
    with reporting(portion(callback, done, span, total)):
        yield
    if callback is not None:
        callback(done + span, total)
