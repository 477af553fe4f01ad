"""Each long job's time-left estimate against the real time left, at 10%, 25% and 50% done.

Runs every job the app runs in the background as its worker does: in a fresh process started by
`spawn_background` (so it yields the cores to everything else, and its OpenMP threads sleep while
they wait), the job's modules imported and its model loaded before the clock starts
(`vitviz.jobs.prepare_job`, then `JobProgress.restart`), then the same `compute_job` call (or
`head_importance` for the ranking, whose random-weights model no worker rebuilds). A `JobProgress`
logs the estimate at every update; once the job has ended, the real time left at each checkpoint is
known. Prints one Markdown row per run and the machine's load before and after.

`--busy N` keeps N visitors computing beside the jobs, as a shared server's would: each in its own
process, bursts of two-thread 512 × 512 matrix products of 0.2–1 s with pauses of 0.2–1 s between
them (seeded), so the machine is busy at a level that is steady on average but never still.

    python bench/job_estimates.py [--only NAME]... [--runs R] [--busy N] [--trace]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import machine
from vitviz.finetune.worker import spawn_background
from vitviz.progress import PlanStep

CHECKPOINTS = (0.10, 0.25, 0.50)
# The bundled DINOv2 has no classifier head: class-specific jobs run on the bundled CNN, the rankings
# on ViTs with random weights (`RANKED`).
CNN = "tf_efficientnet_lite0"
JOBS: dict[str, tuple[str, dict]] = {
    "Score-CAM map, EfficientNet-Lite0 (1,280 masks in batches of 32)": (
        "explanation",
        {"method": "scorecam"},
    ),
    "Ablation-CAM map, EfficientNet-Lite0 (1,280 channels)": ("explanation", {"method": "ablationcam"}),
    "faithfulness + ROAD, EfficientNet-Lite0, Grad-CAM and Integrated Gradients (52 steps)": (
        "faithfulness",
        {"methods": ["gradcam", "integrated-gradients"]},
    ),
    "sanity check, EfficientNet-Lite0, Grad-CAM (19 maps)": ("sanity", {"method": "gradcam"}),
    "drop probe in 3 orders, EfficientNet-Lite0, Grad-CAM, 21 points (65 images)": (
        "probe",
        {"fractions": [step / 20 for step in range(21)]},
    ),
    "arena, EfficientNet-Lite0, Grad-CAM, one image, default settings (59 steps)": (
        "arena",
        {"methods": ["gradcam"], "names": ["coffee"]},
    ),
    "head ranking, ViT-S/16 (72 heads, 16 per forward)": ("ranking", {"mode": "zero"}),
    "head ranking, ViT-B/16 (144 heads, 16 per forward)": ("ranking", {"mode": "zero"}),
}
# The ranked models, random weights: a ranking's time per head is what matters here.
RANKED = {
    "head ranking, ViT-S/16 (72 heads, 16 per forward)": "vit_small_patch16_224",
    "head ranking, ViT-B/16 (144 heads, 16 per forward)": "vit_base_patch16_224",
}
_VISITOR = """
import random, sys, time
import torch
rng, a = random.Random(int(sys.argv[1])), torch.randn(512, 512)
while True:
    until = time.monotonic() + rng.uniform(0.2, 1.0)
    while time.monotonic() < until:
        a @ a
    time.sleep(rng.uniform(0.2, 1.0))
"""


def run_one(name: str) -> dict:
    """One job as a worker runs it, in this (fresh) process: its seconds from the clock's start, and
    each update's (real seconds left, done, total, estimate), and what the run and its preparation
    took (see `main`'s --save)."""
    from vitviz.finetune.worker import yield_to_the_app
    from vitviz.images import builtin_photo
    from vitviz.jobs import JobSpec, compute_job, job_unit, prepare_job
    from vitviz.models import load_model
    from vitviz.preprocess import image_view
    from vitviz.progress import JobProgress, thread_schedule

    yield_to_the_app()
    kind, options = JOBS[name]
    if kind == "arena":  # the app's default settings, as the page sends them
        from vitviz.arena import ArenaSettings

        options = {**options, "settings": ArenaSettings().to_json()}
    spec = JobSpec(kind, CNN, "bundled", "cpu", options)

    def reading() -> tuple[float, float, float, float]:  # wall, CPU, on a core, waiting for one
        ran, waited = thread_schedule() or (0.0, 0.0)
        return time.monotonic(), time.process_time(), ran, waited

    log: list[tuple[tuple[float, float, float, float], float, float, float | None]] = []
    made = reading()
    progress = JobProgress(  # as `vitviz.jobs.run_job` makes it
        job_unit(spec),
        work_clock=time.process_time,
        schedule_clock=thread_schedule,
        on_update=lambda shot: log.append((reading(), shot.done, shot.total, shot.eta_s)),
    )
    prepare_job(spec)
    photo = builtin_photo("coffee")
    if kind == "ranking":
        from vitviz.forward.ablation import head_importance

        vit = load_model(RANKED[name], "random", "cpu")
        progress.restart()
        started = reading()
        head_importance(vit, image_view(photo, vit.facts), "zero", progress=progress)
    else:
        loaded = load_model(CNN, "bundled", "cpu")
        progress.restart()
        started = reading()
        compute_job(spec, loaded, [photo], progress)
    ended = time.monotonic()
    return {
        "seconds": ended - progress.started,
        "log": [(ended - read[0], done, total, eta) for read, done, total, eta in log],
        # for replaying other estimators: since the clock's start, (wall s, process CPU s, done, total,
        # the thread's seconds on a core and waiting); before it, what the preparation took
        "plan": [(step.kind, step.units, step.cost, step.cores) for step in progress.steps],
        "trace": [
            (
                read[0] - started[0],
                read[1] - started[1],
                done,
                total,
                read[2] - started[2],
                read[3] - started[3],
            )
            for read, done, total, _ in log
        ],
        "prepared": [after - before for before, after in zip(made, started, strict=True)],
    }


def checkpoint_cells(log: list[tuple[float, float, float, float | None]]) -> str:
    """ "estimate / real left (error)" at the first update at or past each checkpoint, as table cells."""
    cells = []
    for checkpoint in CHECKPOINTS:
        found = next(
            (
                (eta, real_left)
                for real_left, done, total, eta in log
                if total > 0 and done / total >= checkpoint and eta is not None
            ),
            None,
        )
        if found is None:
            cells.append("no update there")
            continue
        estimate, real = found
        error = (estimate - real) / real if real > 0 else 0.0
        cells.append(f"{estimate:.1f} / {real:.1f} s ({error:+.0%})")
    return " | ".join(cells)


def as_worker(name: str) -> dict:
    """`run_one(name)` in a process started as the app starts its workers; raises if it fails."""
    with tempfile.TemporaryDirectory() as folder:
        output, log = Path(folder) / "measured.json", Path(folder) / "log.txt"
        worker = spawn_background([sys.executable, __file__, "--child", name, str(output)], log)
        if worker.wait() != 0:
            raise RuntimeError(f"the job {name!r} failed:\n{log.read_text()[-4000:]}")
        return json.loads(output.read_text())


def _saved_step(kind: str, units: float, cost: float, cores: int | None = None) -> PlanStep:
    """A saved plan's step. Runs saved before steps declared their cores had one kind limited to one
    core, ROAD's imputation (`vitviz.methods.faithfulness`)."""
    return PlanStep(kind, units, cost, cores if cores is not None or kind != "imputation" else 1)


def replayed(record: dict, work: bool, schedule: bool = False) -> dict[float, float]:
    """{checkpoint: signed error} of a `JobProgress` fed a saved run's updates on fake clocks, its
    kinds priced in wall seconds or (`work`) in the worker's CPU seconds, and with `schedule` (where
    the run saved it) its share scaled by the thread's availability since the worker started."""
    from vitviz.progress import JobProgress

    prepared = record.get("prepared") if schedule else None
    now: dict = {"wall": 0.0, "work": 0.0, "schedule": (0.0, 0.0)}
    if prepared:  # the progress is made before the preparation, as the worker makes it
        now.update(wall=-prepared[0], work=-prepared[1], schedule=(-prepared[2], -prepared[3]))
    progress = JobProgress(
        "units",
        clock=lambda: now["wall"],
        work_clock=(lambda: now["work"]) if work else None,
        schedule_clock=(lambda: now["schedule"]) if prepared else None,
    )
    now.update(wall=0.0, work=0.0, schedule=(0.0, 0.0))
    progress.restart()
    if record["plan"]:
        progress.plan([_saved_step(*step) for step in record["plan"]])
    ended, found = record["trace"][-1][0], {}
    for wall, used, done, total, *ran_waited in record["trace"]:
        now.update(wall=wall, work=used, schedule=tuple(ran_waited) or (0.0, 0.0))
        progress(done, total)
        estimate = progress.eta_s()
        for checkpoint in CHECKPOINTS:
            if checkpoint not in found and estimate is not None and done >= checkpoint * total:
                found[checkpoint] = (estimate - (ended - wall)) / max(ended - wall, 1e-9)
    return found


def bounds(record: dict) -> tuple[dict[float, float], dict[float, float]]:
    """{checkpoint: signed error} of two estimates no worker can make, as bounds: the work left known
    exactly (the CPU seconds the run still used) at the share of the machine the run has had so far,
    and at the share it had over its whole run (known only once it has ended)."""
    ended, used_in_all = record["trace"][-1][0], record["trace"][-1][1]
    so_far, whole = {}, {}
    for wall, used, done, total, *_ in record["trace"]:
        for checkpoint in CHECKPOINTS:
            if checkpoint not in so_far and wall > 0 and used > 0 and done >= checkpoint * total:
                left, real = used_in_all - used, max(ended - wall, 1e-9)
                so_far[checkpoint] = (left * wall / used - real) / real
                whole[checkpoint] = (left * ended / used_in_all - real) / real
    return so_far, whole


def replay(path: Path) -> None:
    """Prints, for each saved run, the errors of the estimate priced in wall seconds, in work, and in
    work with the thread's schedule read (runs saved before it was recorded: "–")."""
    print(
        "| job | visitors | time | wall-priced: 10% / 25% / 50% | work-priced: 10% / 25% / 50% "
        "| work-priced, schedule read: 10% / 25% / 50% | exact work, share so far | exact work, whole run's share |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for line in path.read_text().splitlines():
        record = json.loads(line)
        cells = [
            " / ".join(f"{found[point]:+.0%}" if point in found else "–" for point in CHECKPOINTS)
            for found in (
                replayed(record, work=False),
                replayed(record, work=True),
                replayed(record, work=True, schedule=True) if "prepared" in record else {},
                *bounds(record),
            )
        ]
        print(
            f"| {record['job']} | {record['busy']} | {record['trace'][-1][0]:.1f} s | {' | '.join(cells)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", default=[], help="run only the jobs whose name contains this (repeatable)"
    )
    parser.add_argument("--runs", type=int, default=1, help="runs of each job, each in a fresh process")
    parser.add_argument("--busy", type=int, default=0, help="other processes computing beside the jobs")
    parser.add_argument("--trace", action="store_true", help="every update's estimate on stderr")
    parser.add_argument(
        "--save",
        type=Path,
        help="append each run's trace (wall, CPU, done, total, on a core, waiting) to this JSON-lines file",
    )
    parser.add_argument("--replay", type=Path, help="replay the runs saved in this file (see --save)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # job, output: as a worker would
    args = parser.parse_args()
    if args.replay:
        replay(args.replay)
        return
    if args.child:
        name, output = args.child
        Path(output).write_text(json.dumps(run_one(name)))
        return
    visitors = [subprocess.Popen([sys.executable, "-c", _VISITOR, str(seed)]) for seed in range(args.busy)]
    try:
        time.sleep(5 if visitors else 0)  # the load settles before the first job
        print(machine() + (f" · {args.busy} visitors computing in bursts" if visitors else ""))
        print(f"load before: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
        print(
            "| job | time | "
            + " | ".join(f"at {checkpoint:.0%}: estimate / real left (error)" for checkpoint in CHECKPOINTS)
            + " | load after |"
        )
        print("|---|---|" + "---|" * (len(CHECKPOINTS) + 1))
        for name in JOBS:
            if args.only and not any(part in name for part in args.only):
                continue
            for _ in range(args.runs):
                measured = as_worker(name)
                log, seconds = measured["log"], measured["seconds"]
                if args.save:
                    with args.save.open("a") as saved:
                        record = {"job": name, "busy": args.busy, "load": os.getloadavg()[0]}
                        saved.write(
                            json.dumps(
                                {**record, **{key: measured[key] for key in ("plan", "trace", "prepared")}}
                            )
                            + "\n"
                        )
                if args.trace:
                    for real_left, done, total, eta in log:
                        estimate = "-" if eta is None else f"{eta:.1f}"
                        print(
                            f"{seconds - real_left:7.2f} s  {done:6.2f}/{total:.0f}  estimate {estimate}"
                            f"  real {real_left:.1f}",
                            file=sys.stderr,
                        )
                print(
                    f"| {name} | {seconds:.1f} s | {checkpoint_cells(log)} | {os.getloadavg()[0]:.1f} |",
                    flush=True,
                )
        print(f"load after: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
    finally:
        for visitor in visitors:
            visitor.kill()


if __name__ == "__main__":
    main()
