"""Progress of long work: the time left from the measured pace (also when the machine slows), each kind
of a planned job's steps priced apart, the cancel between units, and the units Score-CAM,
Ablation-CAM, faithfulness, ROAD, probes and the sanity check report."""

import json
import random
import time
from pathlib import Path

import pytest
import torch

from tests.support.tiny_models import tiny_loaded
from vitviz.images import builtin_photo
from vitviz.methods import explanation_map
from vitviz.methods.faithfulness import faithfulness, faithfulness_plan, road, road_plan
from vitviz.methods.probes import run_drop_orders
from vitviz.methods.sanity import cascading_randomisation
from vitviz.preprocess import ImageView, image_view
from vitviz.progress import (
    JobCancelled,
    JobProgress,
    PlannedSteps,
    PlanStep,
    ProgressSnapshot,
    duration_text,
    reporting,
    thread_schedule,
)


def _coffee(loaded) -> ImageView:
    return image_view(builtin_photo("coffee"), loaded.facts)


DATA = Path(__file__).parent / "data"
TOLERANCE = 0.30  # the bound on the estimate's error once 10% is done
CHECKPOINTS = (0.10, 0.25, 0.50, 0.75, 0.90)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _estimate_errors(unit_seconds: list[float]) -> dict[float, float]:
    """Runs a synthetic job of these unit times on a fake clock; the estimate's relative error at each checkpoint."""
    clock = FakeClock()
    progress = JobProgress("units", clock=clock)
    total = len(unit_seconds)
    errors: dict[float, float] = {}
    for done, seconds in enumerate(unit_seconds, start=1):
        clock.now += seconds
        progress(done, total)
        for checkpoint in CHECKPOINTS:
            if checkpoint not in errors and done >= checkpoint * total:
                truth = sum(unit_seconds[done:])
                errors[checkpoint] = abs(progress.eta_s() - truth) / truth
    return errors


def test_the_estimate_follows_a_machine_that_became_three_times_slower_before_10_percent():
    """Units of 0.1 s that jitter ±25%, three times slower from 5% on (other work started on the machine):
    an average over the whole run would say a third too little at 10%; the recent pace is within 30%."""
    rng = random.Random(0)
    units = [0.1 * (1 if index < 20 else 3) * rng.uniform(0.75, 1.25) for index in range(400)]
    errors = _estimate_errors(units)
    assert set(errors) == set(CHECKPOINTS)
    assert max(errors.values()) <= TOLERANCE, errors


def test_the_estimate_recovers_from_a_slow_first_unit():
    """The first unit pays for warm-up (ten units' time): from 10% on the estimate is within 30%."""
    rng = random.Random(1)
    units = [2.0] + [0.2 * rng.uniform(0.8, 1.2) for _ in range(199)]
    errors = _estimate_errors(units)
    assert max(errors.values()) <= TOLERANCE, errors


def test_the_estimate_of_a_real_job_slowed_by_an_injected_sleep_is_within_30_percent():
    """A real job on the real clock: 40 units of 5 ms, then 15 ms each from the 4th on (a sleep in each unit)."""
    progress = JobProgress("units")
    total, estimates = 40, {}
    started = time.monotonic()
    for done in range(1, total + 1):
        time.sleep(0.005 if done < 4 else 0.015)
        progress(done, total)
        if done in (10, 20, 30):
            estimates[done] = (time.monotonic(), progress.eta_s())
    finished = time.monotonic()
    for done, (moment, estimate) in estimates.items():
        truth = finished - moment
        assert abs(estimate - truth) <= TOLERANCE * truth, (done, estimate, truth, finished - started)


def _planned_errors(updates: list[tuple[float, float]], plan: list[PlanStep] | None) -> dict[float, float]:
    """A job of these updates (units advanced, seconds taken) on a fake clock, with or without its plan:
    the estimate's signed relative error at the first update at or past 10%, 25% and 50%."""
    trace, seconds, done = [], 0.0, 0.0
    for units, taken in updates:
        seconds, done = seconds + taken, done + units
        trace.append([seconds, seconds, done])
    return _traced_errors(trace, plan, work=False)


def test_a_planned_sanity_check_prices_its_maps_without_the_first_ones_warm_up():
    """20 maps of 0.3 s (±25%) after a first one of 5 s (the process's first backward): at 10% the
    uniform pace still counts the warm-up and says more than twice the time; the plan is within 30%."""
    rng = random.Random(2)
    updates = [(1.0, 5.0)] + [(1.0, 0.3 * rng.uniform(0.75, 1.25)) for _ in range(19)]
    uniform = _planned_errors(updates, None)
    planned = _planned_errors(updates, [PlanStep("map")] * 20)
    assert uniform[0.10] > 1.0, uniform
    assert max(abs(error) for error in planned.values()) <= TOLERANCE, planned


def _traced_errors(
    trace: list[list[float]], plan: list[PlanStep] | None, work: bool, prepared: list[float] | None = None
) -> dict[float, float]:
    """A job's traced updates (seconds, CPU seconds, steps done, and with `prepared` the thread's
    seconds on a core and waiting) replayed into a `JobProgress` on fake clocks, with or without its
    plan, its kinds priced in wall seconds or (`work`) in CPU seconds: the estimate's signed relative
    error at the first update at or past 10%, 25% and 50%. `prepared` (seconds, CPU seconds, on a
    core, waiting) is what the worker's preparation took before the clock started; with it the
    progress also reads the thread's schedule."""
    wall, used, schedule = FakeClock(), FakeClock(), FakeClock()
    schedule.now = (0.0, 0.0)  # seconds on a core, seconds waiting
    if prepared is not None:  # the progress is made when the worker starts, before its preparation
        wall.now, used.now, schedule.now = -prepared[0], -prepared[1], (-prepared[2], -prepared[3])
    progress = JobProgress(
        "steps",
        clock=wall,
        work_clock=used if work else None,
        schedule_clock=schedule if prepared is not None else None,
    )
    wall.now, used.now, schedule.now = 0.0, 0.0, (0.0, 0.0)
    progress.restart()
    if plan is not None:
        progress.plan(plan)
    total, ended, errors = trace[-1][2], trace[-1][0], {}
    for seconds, cpu, done, *ran_waited in trace:
        wall.now, used.now = seconds, cpu
        schedule.now = tuple(ran_waited) or (0.0, 0.0)
        progress(done, total)
        for checkpoint in CHECKPOINTS[:3]:
            if checkpoint not in errors and done >= checkpoint * total - 1e-9:
                errors[checkpoint] = (progress.eta_s() - (ended - seconds)) / (ended - seconds)
    return errors


def _faithfulness_trace(name: str) -> list[list[float]]:
    return json.loads((DATA / "job_traces.json").read_text())["faithfulness"][name]


@pytest.mark.parametrize("name", ["quiet", "busy"])
def test_a_traced_faithfulness_job_is_priced_within_30_percent_at_10_25_and_50_percent(name):
    """Two real runs of the faithfulness job (tests/data/job_traces.json; ROAD's imputations grow
    nineteen-fold from 10% to 90% filled), replayed with the job's own plan: priced in work at the
    machine's share, the estimate is within 30% at 10%, 25% and 50% on the quiet machine and beside
    two bursting visitors; the uniform pace is off by over 30% at 25% on both."""
    methods = ["gradcam", "integrated-gradients"]
    plan = [*road_plan(methods), *faithfulness_plan(methods)]
    trace = _faithfulness_trace(name)
    planned = _traced_errors(trace, plan, work=True)
    uniform = _traced_errors(trace, [PlanStep("step")] * len(plan), work=False)
    assert max(abs(error) for error in planned.values()) <= TOLERANCE, planned
    assert abs(uniform[0.25]) > TOLERANCE, uniform


def test_a_burst_of_other_work_in_a_cheap_step_does_not_price_a_workers_whole_kind():
    """Beside two bursting visitors, the worker waited while some of ROAD's cheapest imputations ran:
    timed in wall seconds, those waits price every imputation left (+121% at 10%); priced in CPU
    seconds at the share of the machine the run got, the estimate is within 30% (the trace above)."""
    methods = ["gradcam", "integrated-gradients"]
    plan = [*road_plan(methods), *faithfulness_plan(methods)]
    trace = _faithfulness_trace("busy")
    by_wall, by_work = _traced_errors(trace, plan, work=False), _traced_errors(trace, plan, work=True)
    assert by_wall[0.10] > 0.6 and by_wall[0.25] > 0.3, by_wall
    assert abs(by_work[0.10]) <= TOLERANCE and abs(by_work[0.25]) <= TOLERANCE, by_work


def test_a_workers_job_without_a_plan_is_priced_in_work_at_the_runs_share_not_at_its_recent_pace():
    """A real Score-CAM map beside two bursting visitors (tests/data/job_traces.json; no plan, 1,280
    masks alike): at the recent wall-clock pace the estimate at 25% is over 30% high, after a burst;
    a worker, which also counts its CPU time, prices the masks left in work at the whole run's share
    and is within 30% at 10%, 25% and 50%."""
    trace = json.loads((DATA / "job_traces.json").read_text())["score_cam_beside_visitors"]
    recent = _traced_errors(trace, None, work=False)
    worker = _traced_errors(trace, None, work=True)
    assert recent[0.25] > TOLERANCE, recent
    assert max(abs(error) for error in worker.values()) <= TOLERANCE, worker


def test_a_workers_share_is_scaled_by_how_often_its_thread_got_a_core_since_it_started():
    """A worker prepared for 3 s without waiting, then waited 1 s in its first 2-s step (1 s of work):
    the run's share (0.5) is scaled by the thread's availability since it started (4 of 5 s on a
    core) over its availability during the run (1 of 2 s), so the 9 steps left, 1 s of work each, go
    at 0.8 (11.25 s) instead of 0.5 (18 s)."""
    estimates = {}
    for reads_schedule in (False, True):
        wall, used, schedule = FakeClock(), FakeClock(), FakeClock()
        schedule.now = (0.0, 0.0)  # seconds on a core, seconds waiting
        progress = JobProgress(
            "steps", clock=wall, work_clock=used, schedule_clock=schedule if reads_schedule else None
        )
        wall.now, used.now, schedule.now = 3.0, 3.0, (3.0, 0.0)
        progress.restart()
        progress.plan([PlanStep("step")] * 10)
        wall.now, used.now, schedule.now = 5.0, 4.0, (4.0, 1.0)
        progress(1, 10)
        estimates[reads_schedule] = progress.eta_s()
    assert estimates[False] == pytest.approx(18.0)
    assert estimates[True] == pytest.approx(11.25)


def test_a_burst_met_early_in_a_traced_run_is_weighed_against_the_workers_longer_look():
    """A real faithfulness run beside two bursting visitors (tests/data/job_traces.json), each update
    with the worker's thread's seconds on a core and waiting: priced from the run's share alone the
    estimate is 18%, 9% and 20% short at 10%, 25% and 50%; scaled by the thread's availability since
    the worker started (preparation included) it is within 30% at each, and half as far off on
    average."""
    methods = ["gradcam", "integrated-gradients"]
    plan = [*road_plan(methods), *faithfulness_plan(methods)]
    traced = json.loads((DATA / "job_traces.json").read_text())["faithfulness_with_waits"]
    alone = _traced_errors([row[:3] for row in traced["trace"]], plan, work=True)
    weighed = _traced_errors(traced["trace"], plan, work=True, prepared=traced["prepared"])

    def mean_error(errors: dict[float, float]) -> float:
        return sum(abs(error) for error in errors.values()) / len(errors)

    assert max(abs(error) for error in weighed.values()) <= TOLERANCE, weighed
    assert mean_error(weighed) < mean_error(alone) / 1.5, (weighed, alone)


def test_a_job_that_waited_for_a_core_a_fifth_of_the_time_or_more_says_so_beside_its_time_left():
    """The worker's thread wanted a core for 2 s of its first step and waited 1 s of it: the snapshot
    counts half the time waited and its text says the estimate may change; after 8 more seconds on a
    core with 0.1 s more waiting (1.1 of 10.1 s, 11%), the text says the time left alone."""
    wall, used, schedule = FakeClock(), FakeClock(), FakeClock()
    schedule.now = (0.0, 0.0)
    progress = JobProgress("steps", clock=wall, work_clock=used, schedule_clock=schedule)
    progress.plan([PlanStep("step")] * 10)
    wall.now, used.now, schedule.now = 2.0, 1.0, (1.0, 1.0)
    progress(1, 10)
    busy = progress.snapshot()
    assert busy.waited_share == pytest.approx(0.5)
    assert "waited for a core 50% of the time), so this may change" in busy.text()
    wall.now, used.now, schedule.now = 10.1, 9.0, (9.0, 1.1)
    progress(9, 10)
    calm = progress.snapshot()
    assert calm.waited_share == pytest.approx(1.1 / 10.1)
    assert calm.text().startswith("steps 9/10 · about ") and "waited" not in calm.text()


def test_a_status_record_keeps_the_share_of_time_waited_and_refuses_more_than_all_of_it():
    """A snapshot read back from its JSON is the same; a record written before the share was kept
    reads as not known; a share over 1 or below 0 is not a progress record."""
    snapshot = ProgressSnapshot("steps", 3.0, 10.0, 4.0, 9.5, 0.25)
    assert ProgressSnapshot.from_json(json.loads(json.dumps(snapshot.to_json()))) == snapshot
    older = {"unit": "steps", "done": 3, "total": 10, "elapsed_s": 4.0, "eta_s": 9.5}
    assert ProgressSnapshot.from_json(older).waited_share is None
    for share in (1.5, -0.1):
        with pytest.raises(ValueError):
            ProgressSnapshot.from_json({**older, "waited_share": share})


def test_the_thread_schedule_counts_the_seconds_a_thread_ran():
    """Linux says how long the calling thread ran and waited for a core: over 0.2 s of the thread's
    arithmetic its run grows as the thread's CPU clock does (within 0.05 s and 10%; the two are kept
    apart by the kernel), and its waits never fall."""
    before, cpu_before = thread_schedule(), time.thread_time()
    if before is None:
        pytest.skip("this system does not report a thread's schedule")
    while time.thread_time() - cpu_before < 0.2:
        sum(range(1000))
    after, cpu = thread_schedule(), time.thread_time() - cpu_before
    assert after[0] - before[0] == pytest.approx(cpu, rel=0.1, abs=0.05)
    assert after[1] >= before[1]


def test_a_planned_probe_prices_its_images_apart_from_its_map():
    """A drop probe in 3 orders of 21 images: the map (two units, 4.7 s with the warm-up), then each order
    in batches of 16 and 5 images at 0.15 s an image. The uniform pace at 10% (after the first batch)
    is set by the map; per kind, the images' own pace is within 30%."""
    updates = [(2.0, 4.7)] + [(units, 0.15 * units) for _ in range(3) for units in (16.0, 5.0)]
    uniform = _planned_errors(updates, None)
    planned = _planned_errors(updates, [PlanStep("map", 2.0, 3.0), *[PlanStep("images")] * 63])
    assert uniform[0.10] > 1.0, uniform
    assert max(abs(error) for error in planned.values()) <= TOLERANCE, planned


def test_a_kind_not_yet_run_is_priced_by_its_guess_scaled_by_what_has_run():
    """Two curves steps (guessed 20 forwards) timed at 2 s each price a map guessed at 3 forwards at 0.3 s."""
    clock = FakeClock()
    progress = JobProgress("steps", clock=clock)
    progress.plan([PlanStep("curves", cost=20)] * 3 + [PlanStep("map", cost=3)])
    for done in (1, 2):
        clock.now += 2.0
        progress(done, 4)
    assert progress.eta_s() == pytest.approx(2.0 + 0.3)
    assert progress.text() == "steps 2/4 · about 2 s left"


def test_a_step_limited_to_one_core_goes_at_one_cores_share_not_at_the_two_thread_steps():
    """Four sets of curves on two threads (1 s each, 1.6 s of work), then ROAD's imputations on one
    core (1 s each, 1 s of work). After two imputations, the eight left are 8 s of work: declared to
    run on one core they take 8 s; priced at the whole run's share (8.4 s of work in 6 s) they would
    take 5.7 s, 29% short."""
    estimates = {}
    for cores in (1, None):
        wall, used = FakeClock(), FakeClock()
        progress = JobProgress("steps", clock=wall, work_clock=used)
        progress.plan([PlanStep("curves", cost=10)] * 4 + [PlanStep("imputation", cost=1, cores=cores)] * 10)
        for done in range(1, 7):
            wall.now += 1.0
            used.now += 1.6 if done <= 4 else 1.0
            progress(done, 14)
        estimates[cores] = progress.eta_s()
    assert estimates[1] == pytest.approx(8.0)
    assert estimates[None] == pytest.approx(8.0 / (8.4 / 6.0))


def test_a_plan_refuses_a_step_on_fewer_than_one_core():
    with pytest.raises(ValueError, match="one core or more"):
        JobProgress("steps").plan([PlanStep("imputation", cores=0)])


def test_a_kinds_first_step_pays_its_warm_up_and_stops_counting_once_a_second_has_run():
    """A map (1 s), then imputations: the first takes 5 s (its solver's first call), the second 1 s.
    The two left are then priced at the second's 1 s each, not at the average of 3 s."""
    clock = FakeClock()
    progress = JobProgress("steps", clock=clock)
    progress.plan([PlanStep("map")] + [PlanStep("imputation")] * 4)
    for done, seconds in enumerate((1.0, 5.0, 1.0), start=1):
        clock.now += seconds
        progress(done, 5)
    assert progress.eta_s() == pytest.approx(2.0)


def test_planned_steps_move_the_progress_and_refuse_a_step_of_another_kind():
    progress, updates = _recorded("steps")
    steps = PlannedSteps(progress, [PlanStep("map", 2.0), PlanStep("curves")])
    with steps.step("map"):
        progress(0.5, 3)  # a nested report inside the map's step
    assert updates[-1] == (2.0, 3.0)
    with pytest.raises(AssertionError, match="step 2 is 'curves', not 'map'"), steps.step("map"):
        pass


def test_a_stalled_unit_makes_the_time_left_grow_instead_of_reaching_zero():
    clock = FakeClock()
    progress = JobProgress("units", clock=clock)
    for done in range(1, 11):
        clock.now += 1.0
        progress(done, 100)
    assert progress.eta_s() == pytest.approx(90.0)
    clock.now += 50.0  # the 11th unit takes 51 s
    assert progress.eta_s() > 20.0


def test_the_text_names_the_units_and_the_time_left():
    clock = FakeClock()
    progress = JobProgress("masks", clock=clock)
    assert progress.text() == "masks 0/0 · measuring the pace"
    clock.now = 10.0
    progress(128, 384)
    assert progress.text() == "masks 128/384 · about 20 s left"
    assert duration_text(130) == "2 min 10 s" and duration_text(3900) == "1 h 5 min"


def test_a_cancelled_job_stops_at_its_next_unit():
    asked = []
    progress = JobProgress("units", cancelled=lambda: bool(asked))
    progress(1, 10)
    asked.append(True)
    with pytest.raises(JobCancelled):
        progress(2, 10)
    assert progress.done == 2  # the unit it reported was done; no later one starts


def _recorded(unit: str) -> tuple[JobProgress, list[tuple[float, float]]]:
    updates: list[tuple[float, float]] = []
    progress = JobProgress(unit, on_update=lambda snapshot: updates.append((snapshot.done, snapshot.total)))
    return progress, updates


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_score_cam_and_ablation_cam_report_their_channels(tiny_models, method):
    loaded = tiny_loaded(tiny_models, "vit")
    progress, updates = _recorded("masks")
    with reporting(progress):
        explanation_map(loaded, _coffee(loaded), method, batch_size=64)
    channels = 192  # ViT-Tiny's width: one mask (or one ablated channel) each
    assert updates[-1] == (channels, channels)
    assert [done for done, _ in updates] == sorted(done for done, _ in updates)
    assert len(updates) == 1 + -(-channels // 64)  # the start, then one per batch


def test_a_cancel_stops_score_cam_and_leaves_the_model_usable(tiny_models):
    loaded = tiny_loaded(tiny_models, "vit")
    progress = JobProgress("masks", cancelled=lambda: progress.done >= 64)
    with reporting(progress), pytest.raises(JobCancelled):
        explanation_map(loaded, _coffee(loaded), "scorecam", batch_size=32)
    assert progress.done == 64
    assert not any(module._forward_hooks for module in loaded.model.modules())  # the library's hooks are gone
    assert explanation_map(loaded, _coffee(loaded), "gradcam").values.shape == (4, 4)


def test_faithfulness_and_road_count_their_steps_and_score_cam_moves_inside_one(tiny_models):
    loaded = tiny_loaded(tiny_models, "vit")
    progress, updates = _recorded("steps")
    faithfulness(loaded, _coffee(loaded), ["gradcam", "scorecam"], progress=progress)
    assert updates[-1] == (7, 7)  # the baseline curves, then per method its map and two sets of curves
    fractional = [done for done, _ in updates if 4 < done < 5]  # Score-CAM's map is step 5
    assert fractional, "Score-CAM's masks should move the step its map takes"
    assert [done for done, _ in updates] == sorted(done for done, _ in updates)
    progress, updates = _recorded("steps")
    road(loaded, _coffee(loaded), ["gradcam"], percentiles=(20, 50, 80), progress=progress)
    assert updates[-1] == (3 + 1 + 6, 10)  # the random order's 3 imputations, then the map and 2 × 3


def test_the_sanity_check_and_the_drop_probe_report_their_steps(tiny_models):
    loaded = tiny_loaded(tiny_models, "vit")
    progress, updates = _recorded("maps")
    result = cascading_randomisation(loaded, _coffee(loaded), "gradcam", progress=progress)
    assert updates[-1] == (len(result.stages), len(result.stages))
    progress, updates = _recorded("images")
    run_drop_orders(loaded, _coffee(loaded), [0.0, 0.5, 1.0], progress=progress)
    assert updates[-1] == (2 + 3 * 3, 2 + 3 * 3)  # the map as two images, then 3 orders of 3 inputs


def test_no_callback_leaves_every_computation_as_it_was(tiny_models):
    loaded = tiny_loaded(tiny_models, "vit")
    with torch.random.fork_rng():
        plain = explanation_map(loaded, _coffee(loaded), "scorecam", batch_size=64).values
        progress, _ = _recorded("masks")
        with reporting(progress):
            followed = explanation_map(loaded, _coffee(loaded), "scorecam", batch_size=64).values
    torch.testing.assert_close(torch.from_numpy(followed), torch.from_numpy(plain), rtol=1e-5, atol=1e-6)
