"""Ranking every head in a background worker: the job folder, the model it loads again, its errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.support.polling import wait_for
from vitviz.forward.ablation import head_importance
from vitviz.head_ranking import RankingJob, read_ranking, run_ranking, start_ranking
from vitviz.images import builtin_photo
from vitviz.models import load_model, untrained_twin
from vitviz.preprocess import image_view
from vitviz.runs import JobLimitError, background_job_count, background_job_slot

TINY = "vit_tiny_patch16_224"


def _write_job(folder, job: RankingJob) -> None:
    from dataclasses import asdict

    (folder / "job.json").write_text(json.dumps(asdict(job)))
    builtin_photo("coffee").save(folder / "image.png")


def test_the_worker_ranks_the_seeded_twin_the_page_shows(tmp_path):
    _write_job(tmp_path, RankingJob(TINY, "random", "cpu", twin=True, mode="mean", view="whole"))
    run_ranking(tmp_path)  # in this process: what the worker runs
    state = read_ranking(tmp_path)
    twin = untrained_twin(load_model(TINY, "random", "cpu"))
    expected = head_importance(twin, image_view(builtin_photo("coffee"), twin.facts, "whole"), "mean")
    assert state.ended and state.error is None and (state.done, state.total) == (36, 36)
    # Exact: run_ranking calls head_importance in this process, on the same seeded twin and picture,
    # and the drops travel through JSON, where float32 round-trips exactly.
    np.testing.assert_array_equal(state.drops, expected)


def test_a_model_with_unseeded_random_weights_is_not_sent_to_a_worker(tmp_path):
    job = RankingJob(TINY, "random", "cpu", twin=False, mode="zero", view="crop")
    with pytest.raises(ValueError, match="cannot be loaded again"):
        start_ranking(job, builtin_photo("coffee"), tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing started


def test_a_ranking_that_fails_says_why_in_its_folder(tmp_path):
    _write_job(tmp_path, RankingJob("no_such_model_224", "hub", "cpu", twin=False, mode="zero", view="crop"))
    with pytest.raises(Exception, match="no_such_model_224"):
        run_ranking(tmp_path)
    state = read_ranking(tmp_path)
    assert state.ended and state.drops is None and "no_such_model_224" in state.error


def test_background_jobs_share_one_server_wide_cap(tmp_path, monkeypatch):
    """Four rankings at once took about 4 GB: with VITVIZ_MAX_JOBS=1, a second waits for the first."""
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("VITVIZ_MAX_JOBS", "1")
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # another job's worker
    try:
        with background_job_slot() as hold_slot:
            hold_slot(busy.pid)
        job = RankingJob(TINY, "random", "cpu", twin=True, mode="zero", view="crop")
        (tmp_path / "refused").mkdir()
        with pytest.raises(JobLimitError, match=r"already running 1 background job .*VITVIZ_MAX_JOBS"):
            start_ranking(job, builtin_photo("coffee"), tmp_path / "refused")
        assert background_job_count() == 1
    finally:
        busy.kill()
        busy.wait()
    assert background_job_count() == 0  # the ended job's slot is free again
    (tmp_path / "started").mkdir()
    start_ranking(job, builtin_photo("coffee"), tmp_path / "started")
    assert background_job_count() == 1
    state = wait_for(
        lambda: (state := read_ranking(tmp_path / "started")).ended and state, what="the ranking"
    )
    assert state.error is None and state.drops.shape == (12, 3)
    wait_for(lambda: background_job_count() == 0, what="the worker to exit")


def test_a_cancelled_ranking_stops_at_its_next_batch_and_says_so(tmp_path):
    from vitviz.jobs import cancel_job

    _write_job(tmp_path, RankingJob(TINY, "random", "cpu", twin=True, mode="zero", view="crop"))
    cancel_job(tmp_path)  # asked before the first batch ends: the worker stops at it
    run_ranking(tmp_path)
    state = read_ranking(tmp_path)
    assert state.ended and state.cancelled and state.drops is None and state.error is None
    assert state.done == 16 and state.total == 36  # one batch of 16 heads (of 12 layers × 3) was done


def test_a_running_ranking_reports_heads_and_the_time_left(tmp_path):
    _write_job(tmp_path, RankingJob(TINY, "random", "cpu", twin=True, mode="zero", view="crop"))
    run_ranking(tmp_path)
    state = read_ranking(tmp_path)
    assert state.progress is not None and state.progress.unit == "heads"
    assert (state.progress.done, state.progress.total) == (36, 36) and state.progress.eta_s == 0.0
