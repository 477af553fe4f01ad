"""Long work in a background worker: the result it hands back, its progress, and a cancel that frees its slot.

Every kind runs through the one job folder: Score-CAM maps, faithfulness, sanity checks, probes,
head rankings (here) and arenas (tests/test_arena.py)."""

import dataclasses
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import vitviz.methods.faithfulness as faithfulness_module
from tests.support.methods_helpers import count_maps
from tests.support.polling import wait_for
from tests.support.tiny_models import tiny_loaded
from vitviz.forward.ablation import head_importance
from vitviz.images import builtin_photo
from vitviz.jobs import (
    JobSpec,
    cancel_job,
    decode_result,
    encode_result,
    prepare_job,
    read_job,
    run_job,
    start_job,
)
from vitviz.methods import explanation_map
from vitviz.methods.faithfulness import faithfulness, road, scored_maps
from vitviz.models import load_model, untrained_twin
from vitviz.preprocess import image_view
from vitviz.runs import JobLimitError, background_job_count, background_job_slot

TINY = "vit_tiny_patch16_224"


def _write(folder, spec: JobSpec) -> None:
    """The folder `start_job` writes, without starting a worker: a test runs `run_job` itself."""
    (folder / "job.json").write_text(json.dumps(dataclasses.asdict(spec)))
    (folder / "images").mkdir()
    builtin_photo("coffee").save(folder / "images" / "0000.png")
    (folder / "status.json").write_text("{}")


def test_a_score_cam_job_hands_back_the_map_the_page_would_compute_and_counts_masks(tmp_path, tiny_models):
    loaded = tiny_loaded(tiny_models, "vit")
    options = {"method": "scorecam", "method_options": {"batch_size": 64}}
    _write(tmp_path, JobSpec("explanation", TINY, "bundled", "cpu", options, view="whole"))
    run_job(tmp_path, load=lambda spec: loaded)  # in this process: what the worker runs
    state = read_job(tmp_path)
    whole = image_view(builtin_photo("coffee"), loaded.facts, "whole")  # the view the job records
    expected = explanation_map(loaded, whole, "scorecam", batch_size=64)
    assert state.ended and state.error is None and not state.cancelled
    assert (state.progress.unit, state.progress.done, state.progress.total) == ("masks", 192, 192)
    assert state.result.method == "scorecam" and state.result.input_size == expected.input_size
    np.testing.assert_allclose(state.result.values, expected.values, rtol=1e-4, atol=1e-6)


def test_a_faithfulness_job_holds_both_tables(tmp_path, tiny_models):
    loaded = tiny_loaded(tiny_models, "vit")
    options = {"methods": ["gradcam"], "class_index": 3, "road": False}
    _write(tmp_path, JobSpec("faithfulness", TINY, "bundled", "cpu", options))
    run_job(tmp_path, load=lambda spec: loaded)
    scored, road_results = read_job(tmp_path).result
    (expected,) = faithfulness(loaded, image_view(builtin_photo("coffee"), loaded.facts), ["gradcam"], 3)
    assert road_results == [] and scored[0].target_index == 3
    np.testing.assert_allclose(scored[0].deletion, expected.deletion, rtol=1e-4, atol=1e-6)


def test_a_faithfulness_job_with_road_computes_each_map_once_for_both_tables_and_counts_its_plan(
    tmp_path, tiny_models, monkeypatch
):
    """The map once, then ROAD's 9 × 3 imputations, then deletion's random curves and the map's two
    sets of curves: 31 steps, and both tables as the library's own calls give them (each of which
    computes the map itself)."""
    loaded = tiny_loaded(tiny_models, "vit")
    view = image_view(builtin_photo("coffee"), loaded.facts)
    (expected_road,) = road(loaded, view, ["gradcam"], 3)
    (expected,) = faithfulness(loaded, view, ["gradcam"], 3)
    explained = count_maps(monkeypatch, faithfulness_module)
    _write(
        tmp_path, JobSpec("faithfulness", TINY, "bundled", "cpu", {"methods": ["gradcam"], "class_index": 3})
    )
    run_job(tmp_path, load=lambda spec: loaded)
    state = read_job(tmp_path)
    scored, road_results = state.result
    assert explained == ["gradcam"]
    assert (state.progress.unit, state.progress.done, state.progress.total) == ("steps", 31, 31)
    assert road_results[0].method == scored[0].method == "gradcam" and road_results[0].target_index == 3
    np.testing.assert_allclose(scored[0].deletion, expected.deletion, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        road_results[0].most_relevant_first, expected_road.most_relevant_first, rtol=1e-4, atol=1e-6
    )


def test_maps_handed_to_road_must_be_the_methods_maps_of_the_followed_class(tiny_models):
    loaded = tiny_loaded(tiny_models, "vit")
    view = image_view(builtin_photo("coffee"), loaded.facts)
    maps = scored_maps(loaded, view, ["gradcam"], 3)
    with pytest.raises(ValueError, match="maps given explain"):
        road(loaded, view, ["gradcam"], 4, maps=maps)
    with pytest.raises(ValueError, match="maps given explain"):
        faithfulness(loaded, view, ["gradcam", "rollout"], 3, maps=maps)


@pytest.mark.parametrize(
    ("options", "orders"),
    [
        ({"kind": "drop", "method": "gradcam"}, ["drop-salient", "drop-least-salient", "drop-random"]),
        (
            {"kind": "drop", "method": "gradcam", "remove_tokens": True},
            ["drop-salient", "drop-least-salient", "drop-random"],
        ),
        ({"kind": "occlude", "centre": [0.25, 0.75]}, ["occlude"]),
    ],
)
def test_a_probe_job_hands_back_compares_curves_counted_in_images(tmp_path, tiny_models, options, orders):
    from vitviz.methods.probes import run_probe

    loaded = tiny_loaded(tiny_models, "vit")
    fractions = [0.0, 0.5, 1.0]
    _write(
        tmp_path,
        JobSpec("probe", TINY, "bundled", "cpu", {**options, "fractions": fractions, "class_index": 3}),
    )
    run_job(tmp_path, load=lambda spec: loaded)
    state = read_job(tmp_path)
    assert state.error is None and [curve.kind for curve in state.result] == orders
    maps = len(orders) if options.get("remove_tokens") or options["kind"] != "drop" else 1
    assert (state.progress.unit, state.progress.total) == ("images", 2 * maps + 3 * len(orders))
    assert state.progress.done == state.progress.total
    expected = run_probe(
        loaded, image_view(builtin_photo("coffee"), loaded.facts), orders[-1], fractions, options.get("method"),
        3, bool(options.get("remove_tokens")), centre=tuple(options.get("centre", (0.5, 0.5))),
    )  # fmt: skip
    np.testing.assert_allclose(
        state.result[-1].target_probability, expected.target_probability, rtol=1e-4, atol=1e-6
    )


def test_a_job_cancelled_mid_way_stops_at_its_next_unit(tmp_path, tiny_models):
    loaded = tiny_loaded(tiny_models, "vit")
    # One mask per forward: 192 units, so the cancel lands while masks remain.
    options = {"method": "scorecam", "method_options": {"batch_size": 1}}
    _write(tmp_path, JobSpec("explanation", TINY, "bundled", "cpu", options))
    worker = threading.Thread(target=run_job, args=(tmp_path,), kwargs={"load": lambda spec: loaded})
    worker.start()
    wait_for(lambda: read_job(tmp_path).progress, 60, "the first masks")
    cancel_job(tmp_path)
    asked = time.monotonic()
    worker.join(30)
    assert not worker.is_alive()
    stopped_after = time.monotonic() - asked
    state = read_job(tmp_path)
    assert state.cancelled and state.result is None and state.progress.done < 192
    assert stopped_after < 5.0, f"the cancel took {stopped_after:.1f} s"


def test_a_cancelled_worker_exits_and_frees_its_slot(tmp_path, monkeypatch):
    """A real worker process: a sanity check of Score-CAM (minutes of masks) cancelled once it has started."""
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "runs").mkdir()
    folder = tmp_path / "job"
    folder.mkdir()
    options = {"method": "scorecam"}
    start_job(JobSpec("sanity", TINY, "random", "cpu", options, twin=True), [builtin_photo("coffee")], folder)
    assert background_job_count() == 1
    wait_for(lambda: read_job(folder).progress, 240, "the worker's first progress")
    cancel_job(folder)
    asked = time.monotonic()
    wait_for(lambda: background_job_count() == 0, 60, "the worker to exit")
    freed_after = time.monotonic() - asked
    state = read_job(folder)
    assert state.cancelled and state.result is None
    assert freed_after < 15.0, f"the slot freed {freed_after:.1f} s after the cancel"


def test_a_worker_whose_server_ended_stops_at_its_next_unit_and_frees_its_slot(tmp_path, monkeypatch):
    """A server process starts a Score-CAM sanity check (minutes of masks) and quits once the worker
    has begun: nobody can read the result, so the worker stops as if cancelled, within seconds."""
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "runs").mkdir()
    folder = tmp_path / "job"
    folder.mkdir()
    server = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from vitviz.images import builtin_photo\n"
        "from vitviz.jobs import JobSpec, read_job, start_job\n"
        "folder = Path(sys.argv[1])\n"
        f"spec = JobSpec('sanity', {TINY!r}, 'random', 'cpu', {{'method': 'scorecam'}}, twin=True)\n"
        "start_job(spec, [builtin_photo('coffee')], folder)\n"
        "deadline = time.monotonic() + 240\n"
        "while not read_job(folder).progress and time.monotonic() < deadline:\n"
        "    time.sleep(0.1)\n"
    )
    subprocess.run([sys.executable, "-c", server, str(folder)], check=True, timeout=300)
    ended = time.monotonic()
    assert read_job(folder).progress is not None, "the worker never reported"
    wait_for(lambda: background_job_count() == 0, 60, "the orphaned worker to exit")
    stopped_after = time.monotonic() - ended
    state = read_job(folder)
    assert state.cancelled and state.result is None
    assert state.progress.done < state.progress.total
    assert stopped_after < 15.0, f"the worker stopped {stopped_after:.1f} s after its server"


def test_random_weights_unknown_kinds_views_and_picture_counts_are_refused(tmp_path):
    coffee = builtin_photo("coffee")
    with pytest.raises(ValueError, match="cannot be loaded again"):
        start_job(JobSpec("explanation", TINY, "random", "cpu"), [coffee], tmp_path)
    with pytest.raises(ValueError, match="cannot be loaded again"):
        start_job(JobSpec("ranking", TINY, "random", "cpu", {"mode": "zero"}), [coffee], tmp_path)
    with pytest.raises(ValueError, match="unknown job kind"):
        start_job(JobSpec("mine bitcoin", TINY, "bundled", "cpu"), [coffee], tmp_path)
    with pytest.raises(ValueError, match="takes one picture, got 2"):
        start_job(JobSpec("ranking", TINY, "bundled", "cpu", {"mode": "zero"}), [coffee, coffee], tmp_path)
    with pytest.raises(ValueError, match="unknown view 'sideways'"):
        JobSpec("ranking", TINY, "bundled", "cpu", {"mode": "zero"}, view="sideways")
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing started


def test_a_result_names_only_the_result_types_it_may_hold():
    encoded = encode_result([(np.arange(3, dtype=np.float32), None, {"deletion": 0.25})])
    decoded = decode_result(json.loads(json.dumps(encoded)))
    assert decoded[0][0].dtype == np.float32 and decoded[0][1] is None and decoded[0][2] == {"deletion": 0.25}
    with pytest.raises(ValueError, match="unknown type"):
        decode_result({"dataclass": "Popen", "fields": {"args": ["rm"]}})
    with pytest.raises(ValueError, match="keys that are not text"):
        encode_result({1: "one"})


def _ranking(twin: bool = True, mode: str = "zero", view: str = "crop") -> JobSpec:
    return JobSpec("ranking", TINY, "random", "cpu", {"mode": mode}, twin=twin, view=view)


def test_a_ranking_job_hands_back_the_drops_of_the_seeded_twin_the_page_shows(tmp_path):
    _write(tmp_path, _ranking(mode="mean", view="whole"))
    run_job(tmp_path)  # in this process, loading the model as the worker does
    state = read_job(tmp_path)
    twin = untrained_twin(load_model(TINY, "random", "cpu"))
    expected = head_importance(twin, image_view(builtin_photo("coffee"), twin.facts, "whole"), "mean")
    assert state.ended and state.error is None and not state.cancelled
    # Heads done of all with the time left: the general follower draws it, with its Cancel button.
    assert (state.progress.unit, state.progress.done, state.progress.total) == ("heads", 36, 36)
    assert state.progress.eta_s == 0.0
    # Exact: run_job calls head_importance in this process, on the same seeded twin and picture,
    # and the drops travel through JSON, where float32 round-trips exactly.
    assert state.result.dtype == np.float32
    np.testing.assert_array_equal(state.result, expected)


def test_a_ranking_cancelled_once_the_model_is_loaded_stops_at_its_next_batch(tmp_path):
    twin = untrained_twin(load_model(TINY, "random", "cpu"))
    _write(tmp_path, _ranking())

    def load_then_cancel(spec: JobSpec):
        cancel_job(tmp_path)  # asked while the first batch runs: the worker stops after it
        return twin

    run_job(tmp_path, load=load_then_cancel)
    state = read_job(tmp_path)
    assert state.ended and state.cancelled and state.result is None and state.error is None
    assert (state.progress.done, state.progress.total) == (16, 36)  # one batch of 16 heads of 12 × 3


def test_a_job_that_fails_says_why_in_its_folder(tmp_path):
    _write(tmp_path, JobSpec("ranking", "no_such_model_224", "hub", "cpu", {"mode": "zero"}))
    with pytest.raises(Exception, match="no_such_model_224"):
        run_job(tmp_path)
    state = read_job(tmp_path)
    assert state.ended and state.result is None and "no_such_model_224" in state.error


def test_background_jobs_share_one_server_wide_cap(tmp_path, monkeypatch):
    """Four rankings at once took about 4 GB: with VITVIZ_MAX_JOBS=1, a second waits for the first."""
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("VITVIZ_MAX_JOBS", "1")
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # another job's worker
    try:
        with background_job_slot() as hold_slot:
            hold_slot(busy.pid)
        (tmp_path / "refused").mkdir()
        with pytest.raises(JobLimitError, match=r"already running 1 background job .*VITVIZ_MAX_JOBS"):
            start_job(_ranking(), [builtin_photo("coffee")], tmp_path / "refused")
        assert background_job_count() == 1
    finally:
        busy.kill()
        busy.wait()
    assert background_job_count() == 0  # the ended job's slot is free again
    (tmp_path / "started").mkdir()
    start_job(_ranking(), [builtin_photo("coffee")], tmp_path / "started")
    assert background_job_count() == 1
    state = wait_for(lambda: (state := read_job(tmp_path / "started")).ended and state, what="the ranking")
    assert state.error is None and state.result.shape == (12, 3)
    wait_for(lambda: background_job_count() == 0, what="the worker to exit")


def test_a_worker_that_died_unseen_reads_as_quiet_not_as_ended(tmp_path):
    """No status for ten minutes: the job has not ended, and how long it has been quiet tells the page."""
    import os

    _write(tmp_path, _ranking())
    (tmp_path / "status.json").write_text(
        json.dumps({"progress": {"unit": "heads", "done": 16, "total": 36, "elapsed_s": 4.0, "eta_s": 5.0}})
    )
    ten_minutes_ago = time.time() - 600
    os.utime(tmp_path / "status.json", (ten_minutes_ago, ten_minutes_ago))
    state = read_job(tmp_path)
    assert not state.ended and 600 <= state.quiet_s < 660
    assert state.eta_now() == 0.0  # the time left it last said has run out


def test_a_worker_imports_what_its_job_runs_before_the_clock_starts():
    """`prepare_job` imports a sanity check's methods (pytorch-grad-cam: seconds on a busy machine) so
    the worker does it while its model loads, not inside the first map it times; an unknown kind is
    refused there."""
    script = (
        "import sys\n"
        "from vitviz.jobs import JobSpec, prepare_job\n"
        "before = 'pytorch_grad_cam' in sys.modules\n"
        "prepare_job(JobSpec('sanity', 'any', 'bundled', 'cpu'))\n"
        "print(before, 'pytorch_grad_cam' in sys.modules)\n"
    )
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert shown.stdout.split() == ["False", "True"]
    with pytest.raises(ValueError, match="unknown job kind"):
        prepare_job(JobSpec("portrait", TINY, "bundled", "cpu"))
