"""Progress of long work in units a person understands, the time left from its own measured pace, and a cancel.

A long computation (Score-CAM's masks, a faithfulness table's steps, a ranking's heads) reports
`(done, total)` into a callback between its units. `JobProgress` is such a callback: it keeps the
units done, measures the pace over the recent part of the run (so a machine that got busier, or a
first unit slowed by warm-up, does not skew it for long), says the time left, and raises
`JobCancelled` at the next unit once its cancel flag is up, so the computation stops there.

A job whose steps differ in cost (a faithfulness table's maps, curves and ROAD imputations; a sanity
check whose first map pays the process's warm-up) declares its plan up front: a sequence of
`PlanStep`s, each of a kind. `JobProgress` then times each kind as it runs and says the time left as
the remaining steps of each kind at that kind's measured cost; a kind not yet run is priced from the
step's structural guess (forward passes), scaled by what the kinds already run cost per guess.
`PlannedSteps` walks a plan and checks each step is the kind the plan says.

A worker alone in its process also passes a work clock (its CPU time): each kind is then priced in
seconds of work, which a busy machine does not stretch, and the time left is the work left at the
share of the machine the job has had. A worker yields the cores to everyone else, so a burst of
other work stops it for a second or two; timed in wall seconds, the cheap steps that waited then
priced their whole kind as if every one of them would wait as long. A step whose work cannot use
every thread (ROAD's sparse solve runs on one core) says so (`PlanStep.cores`): it goes at most at
the share that many cores give, not at the share two-thread steps had. A worker's job without a plan
(Score-CAM's masks, a ranking's heads) counts its units as one kind, priced the same way.

The share a run has had so far is a short sample of a machine whose other work comes in bursts: a
worker that waited through its first second, or met no one, would price the rest by that luck. A
worker on Linux also passes its thread's run-queue clock (`thread_schedule`: seconds on a core,
seconds waiting for one), read since the worker started, model load and imports included: the
job's share is then scaled by how often the thread got a core over that longer span against how
often it got one during the run.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "JobCancelled",
    "JobProgress",
    "PlanStep",
    "PlannedSteps",
    "ProgressCallback",
    "ProgressSnapshot",
    "declare_parts",
    "declare_plan",
    "duration_text",
    "plan_units",
    "portion",
    "report",
    "reporting",
    "thread_schedule",
    "within_unit",
]

ProgressCallback = Callable[[float, float], None]  # (units done, units in all); may raise to stop
ScheduleClock = Callable[[], "tuple[float, float] | None"]  # (seconds on a core, seconds waiting for one)

# The pace is measured over this share of the time run so far (at least the last few updates), so
# it follows a machine that slows down or speeds up, yet averages over enough units to be steady.
RECENT_SHARE = 0.3
MIN_RECENT_UPDATES = 3
# A job that waited for a core this share of the time it wanted one says so beside its time left.
BUSY_WAITED_SHARE = 0.2
_MAX_SAMPLES = 4096  # updates kept for the pace; older ones fall out of the window anyway

_CURRENT: contextvars.ContextVar[ProgressCallback | None] = contextvars.ContextVar(
    "vitviz_progress", default=None
)


@dataclass(frozen=True)
class PlanStep:
    """One step of a job's plan: what kind of work it is, the job's units it counts as, a guess of its cost.

    Steps of one kind cost as their guesses say (every Grad-CAM map of one model alike; a ROAD
    imputation as the pixels it fills), so the first ones timed price the rest of the kind. `cost`
    is a structural guess per unit in a currency shared by the plan (forward passes): across kinds
    it counts only until a kind's first step has run.
    """

    kind: str  # "map: gradcam", "curves", "imputation", "images"…
    units: float = 1.0  # the job's units this step advances (a probe's map counts as two images)
    cost: float = 1.0  # guessed cost of one unit, e.g. forward passes (a backward counts as two)
    # the most cores the step's work can use (ROAD's sparse solve: one), or None: every thread the
    # job has. Priced in work, a one-core step goes at one core's share of the machine at most.
    cores: int | None = None


def plan_units(steps: Sequence[PlanStep]) -> float:
    """How many of the job's units a plan counts: what its progress reports as the total."""
    return float(sum(step.units for step in steps))


def thread_schedule() -> tuple[float, float] | None:
    """The calling thread's seconds on a core and seconds it was ready but waited for one, or None
    where the system does not say (Linux's /proc/thread-self/schedstat)."""
    try:
        ran, waited, _ = Path("/proc/thread-self/schedstat").read_text().split()
        return int(ran) / 1e9, int(waited) / 1e9
    except (OSError, ValueError):
        return None


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
    # of the time the job's thread wanted a core during the run, the share it waited for one (None
    # where the job does not read its thread's schedule)
    waited_share: float | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0

    def text(self) -> str:
        """ "masks 128/384 · about 20 s left" (or "… · measuring the pace" before the first unit), and
        how often the job waited for a core where that was a fifth of the time or more: other work on
        the machine then sets the time left more than the job does."""
        counts = f"{self.unit} {math.floor(self.done + 1e-9):.0f}/{self.total:.0f}"
        if self.eta_s is None:
            return f"{counts} · measuring the pace"
        said = f"{counts} · about {duration_text(self.eta_s)} left"
        if self.waited_share is not None and self.waited_share >= BUSY_WAITED_SHARE:
            waited = f"{self.waited_share:.0%}"
            said += f" · the machine is busy (waited for a core {waited} of the time), so this may change"
        return said

    def to_json(self) -> dict[str, float | str | None]:
        return {
            "unit": self.unit,
            "done": self.done,
            "total": self.total,
            "elapsed_s": self.elapsed_s,
            "eta_s": self.eta_s,
            "waited_share": self.waited_share,
        }

    @classmethod
    def from_json(cls, payload: dict) -> ProgressSnapshot:
        """The snapshot a status file holds; raises ValueError on anything of another shape."""
        try:
            eta, waited = payload.get("eta_s"), payload.get("waited_share")
            snapshot = cls(
                str(payload["unit"])[:40],
                float(payload["done"]),
                float(payload["total"]),
                float(payload["elapsed_s"]),
                None if eta is None else float(eta),
                None if waited is None else float(waited),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a progress record: {error}") from error
        numbers = [snapshot.done, snapshot.total, snapshot.elapsed_s] + [
            value for value in (snapshot.eta_s, snapshot.waited_share) if value is not None
        ]
        if not all(math.isfinite(value) and value >= 0 for value in numbers):
            raise ValueError("a progress record holds a negative or non-finite number")
        if snapshot.waited_share is not None and snapshot.waited_share > 1:
            raise ValueError("a progress record's share of time waited is over 1")
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


class _Segment(NamedTuple):
    """Units [start, end) of a job's plan, all of one kind."""

    start: float
    end: float
    kind: str
    cost: float  # the plan's guess per unit
    first: bool  # the first step of its kind, which pays that kind's warm-up
    cores: int | None  # the most cores its work can use; None: every thread


_UNPLANNED = ""  # the kind of units past the plan's end (or of every unit when there is no plan)


class JobProgress:
    """A progress callback that measures its own pace: units done of all, time left, and a cancel.

    Without a plan every unit is taken to cost alike, at the pace of the recent part of the run (so
    a machine that got busier shows within a few units); with a work clock as well (a worker's
    Score-CAM masks, a ranking's heads), the units are one kind of a plan, priced in work at the run's
    share like any plan's: the recent pace of a worker that yields the cores follows other visitors'
    bursts (replayed traces, BENCHMARKS.md). With one (`plan`), each kind of step is
    timed apart and the time left sums the remaining steps at their kind's average cost so far; the
    first step of each kind, which also pays that kind's warm-up (the job's first, the process's),
    prices its kind only until another step of it has run.

    Args:
        unit: what one unit is, plural ("masks", "heads", "epochs").
        cancelled: asked before each update; once it says True the update raises `JobCancelled`.
        on_update: called with each new snapshot (a status file, a progress bar).
        clock: seconds, monotonic (a test passes a fake one).
        work_clock: seconds of work the job has had, e.g. `time.process_time` in a process that runs
            only the job (never in the app, whose other visitors' work would count). With a plan,
            kinds are then priced in work and the time left divides the work left by the share of
            the machine (work per second) the run has had.
        schedule_clock: with a work clock, the seconds the reporting thread has run and waited for a
            core (`thread_schedule`). The run's share is then scaled by how often the thread got a
            core since this progress was made (the worker's start) against how often during the run.
    """

    def __init__(
        self,
        unit: str,
        *,
        cancelled: Callable[[], bool] | None = None,
        on_update: Callable[[ProgressSnapshot], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        work_clock: Callable[[], float] | None = None,
        schedule_clock: ScheduleClock | None = None,
    ) -> None:
        self.unit = unit
        self.cancelled = cancelled
        self.on_update = on_update
        self.clock = clock
        self.work_clock = work_clock
        self.schedule_clock = schedule_clock if work_clock is not None else None
        self.started = clock()
        # the thread's (ran, waited) since it was made, at the run's start, at the last update
        self._schedule = [self._read_schedule()] * 3
        self.done = 0.0
        self.total = 0.0
        self.steps: tuple[PlanStep, ...] = ()  # the plan declared, if any
        self._segments: list[_Segment] = []  # the plan, in unit order; empty: no plan
        # (time, units done, work): work is the work clock's reading, or the time without one
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=_MAX_SAMPLES)
        self._samples.append(self._sample(self.started, 0.0))
        self._clear_measures()

    def _sample(self, now: float, done: float) -> tuple[float, float, float]:
        return now, done, now if self.work_clock is None else self.work_clock()

    def _clear_measures(self) -> None:
        # kind -> [seconds, guessed cost of the units they went to]; each kind's first step apart
        self._spent: dict[str, list[float]] = {}
        self._first_spent: dict[str, list[float]] = {}
        # [work, seconds] of the steps free to use every thread: the machine's share they got
        self._free_steps = [0.0, 0.0]
        self._last = self._samples[-1]

    def restart(self) -> None:
        """Starts the clock again at nothing done: the pace is the work's, not a model load's before it."""
        self.started = self.clock()
        self.done = 0.0
        self._samples.clear()
        self._samples.append(self._sample(self.started, 0.0))
        self._clear_measures()
        self._schedule[1] = self._schedule[2] = self._read_schedule()

    def _read_schedule(self) -> tuple[float, float] | None:
        return None if self.schedule_clock is None else self.schedule_clock()

    def _got_a_core(self, since: tuple[float, float] | None) -> float | None:
        """Of the time the thread wanted a core from `since` to the last update, the share it had one;
        None without a schedule clock or before it has run."""
        last = self._schedule[2]
        if since is None or last is None:
            return None
        ran, waited = last[0] - since[0], last[1] - since[1]
        return ran / (ran + waited) if ran > 0 and waited >= 0 else None

    def waited_share(self) -> float | None:
        """Of the time the thread wanted a core since the run started, the share it waited for one;
        None without a schedule clock or before it has run."""
        during_run = self._got_a_core(self._schedule[1])
        return None if during_run is None else 1.0 - during_run

    def _availability_ratio(self) -> float:
        """How often the thread got a core since this progress was made, over how often during the run
        (1 without a schedule clock, or before the thread has run)."""
        since_made, during_run = self._got_a_core(self._schedule[0]), self._got_a_core(self._schedule[1])
        return 1.0 if since_made is None or during_run is None else since_made / during_run

    def plan(self, steps: Sequence[PlanStep]) -> None:
        """Declares the job's steps in order from its first unit: each kind's pace is then measured apart."""
        self.steps = tuple(steps)
        self._lay_out(steps)

    def _lay_out(self, steps: Sequence[PlanStep]) -> None:
        """The plan's segments, and its measures started afresh."""
        self._segments, at, seen = [], 0.0, set()
        for step in steps:
            if step.units <= 0 or not math.isfinite(step.units):
                raise ValueError(f"a plan's step counts a positive number of units, not {step.units}")
            if step.cores is not None and step.cores < 1:
                raise ValueError(f"a plan's step runs on one core or more, not {step.cores}")
            last = self._segments[-1] if self._segments else None
            same = (step.kind, step.cost, step.cores)
            if last is not None and not last.first and (last.kind, last.cost, last.cores) == same:
                self._segments[-1] = last._replace(end=at + step.units)
            else:
                cost = max(step.cost, 1e-9)
                first = step.kind not in seen
                self._segments.append(_Segment(at, at + step.units, step.kind, cost, first, step.cores))
            seen.add(step.kind)
            at += step.units
        self._clear_measures()

    def __call__(self, done: float, total: float) -> None:
        """Records `done` of `total` units; then raises JobCancelled if the job was asked to stop."""
        now = self.clock()
        self.total = float(max(total, 0))
        self._schedule[2] = self._read_schedule()
        if done < self.done:  # a job that starts over (another stage) measures its pace afresh
            self._samples.clear()
            self._samples.append(self._sample(now, float(done)))
            self._segments = []  # a plan's steps never go back: it no longer holds
            self._schedule[1] = self._schedule[2]
        if not self._segments and not self.steps and self.work_clock is not None and self.total > 0:
            # a worker's job without a plan: its units are alike, one kind whose first pays the warm-up
            rest = [PlanStep(self.unit, self.total - 1.0)] if self.total > 1 else []
            self._lay_out([PlanStep(self.unit), *rest])
        self.done = float(min(max(done, 0), self.total))
        sample = self._sample(now, self.done)
        self._attribute(sample)
        self._samples.append(sample)
        if self.on_update is not None:
            self.on_update(self.snapshot(now))
        self.check_cancelled()  # the unit just done counts; the next one is never started

    def check_cancelled(self) -> None:
        """Raises JobCancelled if the job was asked to stop (a computation may call it inside a unit)."""
        if self.cancelled is not None and self.cancelled():
            raise JobCancelled(f"cancelled after {self.done:.0f} of {self.total:.0f} {self.unit}")

    def _pieces(self, start: float, end: float) -> Iterator[tuple[float, float, _Segment]]:
        """The parts of units [start, end) in each segment of the plan (or past its end): (from, to, segment)."""
        plan_end = self._segments[-1].end if self._segments else 0.0
        tail = _Segment(plan_end, math.inf, _UNPLANNED, 1.0, False, None)
        for segment in [*self._segments, tail]:
            low, high = max(start, segment.start), min(end, segment.end)
            if high > low:
                yield low, high, segment

    def _attribute(self, sample: tuple[float, float, float]) -> None:
        """Adds the work since the last update (its time, without a work clock) to the kinds of the
        units it covered (or is working on), and with its time to the steps free to use every thread."""
        then, before, worked = self._last
        self._last = sample
        seconds, wall = sample[2] - worked, sample[0] - then
        if not self._segments or seconds <= 0:
            return
        covered = list(self._pieces(before, self.done))
        if not covered:  # no unit finished: the time belongs to the one under way
            covered = [(low, low, segment) for low, _, segment in self._pieces(before, before + 1e-9)]
        span = self.done - before
        for low, high, segment in covered:
            share = (high - low) / span if span > 0 else 1.0 / len(covered)
            buckets = self._first_spent if segment.first else self._spent
            bucket = buckets.setdefault(segment.kind, [0.0, 0.0])
            bucket[0] += seconds * share
            bucket[1] += (high - low) * segment.cost
            if segment.cores is None:
                self._free_steps[0] += seconds * share
                self._free_steps[1] += wall * share

    def _rates(self) -> dict[str, float] | None:
        """Seconds per guessed cost of each kind of the plan, or None before anything has run.

        Within a kind, steps cost as their guesses say (an imputation of more pixels, more); the
        kind's measured seconds per guess sets the level. A kind's first step pays its warm-up (the
        job's first also the process's: first forward, first backward), so it sets its kind's rate
        only until another step of the kind has run, and only up to the average rate of what else
        has run; a kind not yet run goes at that average. The average is over the steps after each
        kind's first, or over the first steps while there are no others.
        """
        measured = {
            kind: seconds / guessed for kind, (seconds, guessed) in self._spent.items() if guessed > 0
        }
        firsts = {
            kind: seconds / guessed for kind, (seconds, guessed) in self._first_spent.items() if guessed > 0
        }
        job_first = self._segments[0].kind
        pool = self._spent if measured else {k: v for k, v in self._first_spent.items() if k != job_first}
        pool = {kind: spent for kind, spent in pool.items() if spent[1] > 0}
        if pool:
            average = sum(seconds for seconds, _ in pool.values()) / sum(
                guessed for _, guessed in pool.values()
            )
        elif job_first in firsts:
            average = firsts[job_first]
        else:
            return None
        kinds = {segment.kind for segment in self._segments} | {_UNPLANNED}
        return {
            kind: measured[kind] if kind in measured else min(firsts.get(kind, average), average)
            for kind in kinds
        }

    def _work(
        self,
        start: float,
        end: float,
        rates: dict[str, float] | None,
        shares: tuple[float, float] | None = None,
    ) -> float:
        """The expected seconds of units [start, end) at each kind's rate (without a plan: the units);
        with `shares` (`_shares`), work priced in the work clock's seconds turned into seconds."""
        if rates is None:
            return max(0.0, end - start)
        total = 0.0
        for low, high, segment in self._pieces(start, end):
            rate = rates[segment.kind]
            if segment.first and self._first_spent.get(segment.kind, [0.0, 0.0])[1] > 0:
                seconds, guessed = self._first_spent[segment.kind]  # what it took, warm-up and all
                rate = seconds / guessed
            work = (high - low) * segment.cost * rate
            if shares is not None:
                every_thread, one_core = shares
                limit = math.inf if segment.cores is None else segment.cores * one_core
                work /= min(every_thread, limit)
            total += work
        return total

    def _shares(self, worked: float, span: float) -> tuple[float, float] | None:
        """The work per second the rest of the run may expect: (for a step free to use every thread,
        for each core a step is limited to), or None before any work.

        The first is what the steps free to use every thread got so far (what the whole run got,
        before any of them ran); the second what one core gave the job's thread, the share of time it
        had one (1 without a schedule clock). Both are scaled by `_availability_ratio`.
        """
        if span <= 0:
            return None
        free_work, free_seconds = self._free_steps
        every_thread = free_work / free_seconds if free_work > 0 and free_seconds > 0 else worked / span
        if every_thread <= 0:
            return None
        one_core = self._got_a_core(self._schedule[1]) or 1.0
        ratio = self._availability_ratio()
        return every_thread * ratio, one_core * ratio

    def _window(self, now: float) -> tuple[tuple[float, float, float], tuple[float, float, float]] | None:
        """The first and last samples (time, units, work) of the recent window, or None before a unit.

        The window reaches back `RECENT_SHARE` of the time run so far, and over at least the last
        `MIN_RECENT_UPDATES` updates.
        """
        last = self._samples[-1]
        reach = now - RECENT_SHARE * (now - self.started)
        samples = list(self._samples)
        inside = next((i for i, sample in enumerate(samples) if sample[0] >= reach), len(samples) - 1)
        first = samples[max(0, min(inside - 1, len(samples) - 1 - MIN_RECENT_UPDATES))]
        if last[1] - first[1] <= 0:
            first = samples[0]
        if last[1] - first[1] <= 0 or last[0] <= first[0]:
            return None
        return first, last

    def units_per_second(self, now: float | None = None) -> float | None:
        """The pace over the recent part of the run (`_window`), or None before any unit is done."""
        window = self._window(self.clock() if now is None else now)
        if window is None:
            return None
        (start_time, start_done, _), (last_time, last_done, _) = window
        return (last_done - start_done) / (last_time - start_time)

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left at the recent pace, or None before it is known.

        Without a plan the units left go at the pace of the recent window. With one, the units left
        cost their kind's average so far, and go at the pace of the whole run: a recent window on top
        of that followed the bursts of a shared machine rather than its trend (replayed bench traces,
        BENCHMARKS.md). With a work clock as well, the work left goes at the work per second of the
        whole run, the share of the machine the job has had: a recent window followed a yielding
        worker's stops of a second or two (replayed traces beside bursting visitors, BENCHMARKS.md).
        That share is measured over the steps free to use every thread; a step limited to fewer cores
        goes at most at their share (`_shares`), so ROAD's one-core solves after two-thread curves
        are not priced at two cores. With a schedule clock, both are scaled by `_availability_ratio`.
        Between updates the time since the last one is taken off; a unit that runs longer than the
        pace says slows the pace instead (counted up to now), so a stalled job's time left does not
        fall to zero and stay there.
        """
        now = self.clock() if now is None else now
        window = self._window(now)
        rates = self._rates() if self._segments else None
        if window is None or (self._segments and rates is None):
            return None
        (start_time, start_done, start_work), (last_time, last_done, last_work) = window
        if rates is not None:  # each kind's rate is already its own average; so is the machine's share
            start_time, start_done, start_work = self._samples[0]
        shares = None
        if rates is not None and self.work_clock is not None:
            shares = self._shares(last_work - start_work, last_time - start_time)
            if shares is None:
                return None
            worked = last_time - start_time  # the work left is priced in seconds at the shares
        else:
            worked = self._work(start_done, last_done, rates)  # without a plan: the units done
        if worked <= 0:
            return None
        remaining = self._work(last_done, self.total, rates, shares)
        next_unit = min(self.total, math.floor(last_done + 1e-9) + 1.0)
        this_unit = self._work(last_done, next_unit, rates, shares)
        if rates is None:
            this_unit = 1.0
        at_pace = remaining * (last_time - start_time) / worked - (now - last_time)
        after_this_unit = (remaining - min(remaining, this_unit)) * (now - start_time) / worked
        return max(at_pace, after_this_unit, 0.0)

    def snapshot(self, now: float | None = None) -> ProgressSnapshot:
        now = self.clock() if now is None else now
        return ProgressSnapshot(
            self.unit, self.done, self.total, now - self.started, self.eta_s(now), self.waited_share()
        )

    def text(self) -> str:
        return self.snapshot().text()


def declare_plan(callback: ProgressCallback | None, steps: Sequence[PlanStep]) -> None:
    """Tells a job's `JobProgress` its plan; any other callback (a part of a job, a plain function) ignores it."""
    if isinstance(callback, JobProgress):
        callback.plan(steps)


def declare_parts(
    callback: ProgressCallback | None, parts: Sequence[Sequence[PlanStep]]
) -> list[ProgressCallback | None]:
    """Declares a job's plan made of parts that separate calls run, in order, and gives each part's
    callback: the (done, all) a part's call reports moves the job through that part's steps."""
    plan = [step for part in parts for step in part]
    declare_plan(callback, plan)
    total, start, moved = plan_units(plan), 0.0, []
    for part in parts:
        span = plan_units(part)
        moved.append(portion(callback, start, span, total))
        start += span
    return moved


class PlannedSteps:
    """Walks a job's plan: declares it to the job's progress, then moves the progress through each step.

    A plan reaches a `JobProgress` directly; through a part of a job (`portion`, `within_unit`) it is
    ignored, since the job that holds the progress declared the whole plan.

        steps = PlannedSteps(progress, [PlanStep("map", cost=3), PlanStep("curves", cost=22)])
        with steps.step("map"):
            ...  # nested reports (Score-CAM's masks) move the job within this step
    """

    def __init__(self, callback: ProgressCallback | None, plan: Sequence[PlanStep]) -> None:
        self.callback = callback
        self.plan = tuple(plan)
        self.total = plan_units(self.plan)
        self._next = 0
        self._done = 0.0
        declare_plan(callback, self.plan)

    @contextmanager
    def step(self, kind: str) -> Iterator[None]:
        """The plan's next step, which must be of this kind; it counts as done when the block ends."""
        assert self._next < len(self.plan), (
            f"the plan has {len(self.plan)} steps; a step of {kind!r} is one more"
        )
        planned = self.plan[self._next]
        assert planned.kind == kind, f"the plan's step {self._next + 1} is {planned.kind!r}, not {kind!r}"
        with within_unit(self.callback, self._done, self.total, planned.units):
            yield
        self._next += 1
        self._done += planned.units


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
