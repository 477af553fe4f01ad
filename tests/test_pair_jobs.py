"""A pair job in the background: it finds its run folders from its own record and holds one training slot."""

import json
import os
import subprocess
import sys

import pytest

from tests.support.run_folders import hand_made_run
from vitviz.finetune.pair import PAIR_JOB_ENV, PairJob, train_pair
from vitviz.finetune.trainer import FinetuneConfig
from vitviz.runs import (
    PAIR_JOB_PID_FILE,
    PAIR_JOB_RUNS_FILE,
    PAIR_JOBS_FOLDER,
    RunLimitError,
    training_count,
    training_slot,
)

JOB_NAME = "20260101-120000-abcdef"


@pytest.fixture
def one_slot(tmp_path, monkeypatch):
    """A runs folder on a server that trains one fine-tune at a time."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(root))
    monkeypatch.setenv("VITVIZ_MAX_RUNS", "1")
    return root


def pair_job(root, pid: int, runs: dict[str, str] | None) -> PairJob:
    """A job folder as start_pair and train_pair leave it: the process's pid, and the runs made so far."""
    folder = root / PAIR_JOBS_FOLDER / JOB_NAME
    folder.mkdir(parents=True)
    (folder / PAIR_JOB_PID_FILE).write_text(str(pid))
    if runs is not None:
        (folder / PAIR_JOB_RUNS_FILE).write_text(json.dumps(runs))
    return PairJob(folder, root)


def ended_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_pair_between_its_two_runs_still_holds_its_training_slot(one_slot):
    vit = hand_made_run(one_slot, "pair-vit")  # finished; the CNN's run is not made yet
    pair_job(one_slot, os.getpid(), {"vit": vit.name})
    assert training_count() == 1
    with pytest.raises(RunLimitError), training_slot():
        pass


def test_a_pair_job_that_has_made_no_run_yet_holds_its_slot(one_slot):
    pair_job(one_slot, os.getpid(), None)
    assert training_count() == 1


def test_a_pair_and_its_training_run_take_one_slot_not_two(one_slot, monkeypatch):
    monkeypatch.setenv("VITVIZ_MAX_RUNS", "2")
    vit = hand_made_run(one_slot, "pair-vit")
    cnn = hand_made_run(one_slot, "pair-cnn", status={"state": "running", "pid": os.getpid()})
    pair_job(one_slot, os.getpid(), {"vit": vit.name, "cnn": cnn.name})
    hand_made_run(one_slot, "alone", status={"state": "running", "pid": os.getpid()})
    assert training_count() == 2
    with pytest.raises(RunLimitError), training_slot():
        pass


def test_an_ended_pair_job_frees_its_slot(one_slot):
    vit = hand_made_run(one_slot, "pair-vit")
    pair_job(one_slot, ended_pid(), {"vit": vit.name})
    assert training_count() == 0
    with training_slot():
        pass


def test_a_job_reads_its_runs_from_its_record_and_never_leaves_the_runs_folder(one_slot, tmp_path):
    vit = hand_made_run(one_slot, "pair-vit")
    hand_made_run(tmp_path, "outside")
    job = pair_job(one_slot, os.getpid(), {"vit": vit.name, "cnn": "../outside"})
    assert job.runs() == {"vit": vit}
    assert job.log() == ""  # nothing was learnt from a log


def test_train_pair_records_each_run_folder_before_the_run_starts(one_slot, monkeypatch):
    job = pair_job(one_slot, os.getpid(), None)
    monkeypatch.setenv(PAIR_JOB_ENV, str(job.folder))  # as start_pair passes it to the pair process
    seen = []

    def log(line):
        if line.startswith("[vit] run folder "):
            seen.append(job.runs())  # the record is there before the run has loaded anything
        elif line.startswith("[vit] 1797 images"):  # claimed and loaded: stop it, as a page does
            (seen[0]["vit"] / "stop").touch()

    outcome = train_pair(FinetuneConfig(max_images=20, batch_size=1, device="cpu"), "builtin:digits", log=log)
    assert outcome.stopped
    assert seen == [{"vit": outcome.runs["vit"]}] and job.runs() == {"vit": outcome.runs["vit"]}


def test_a_job_folder_named_from_outside_the_pair_jobs_folder_is_not_written(one_slot, tmp_path, monkeypatch):
    elsewhere = tmp_path / JOB_NAME
    elsewhere.mkdir()
    monkeypatch.setenv(PAIR_JOB_ENV, str(elsewhere))
    log_lines = []

    def log(line):
        log_lines.append(line)
        if line.startswith("[vit] 1797 images"):
            (one_slot / log_lines[0].removeprefix("[vit] run folder ") / "stop").touch()

    train_pair(FinetuneConfig(max_images=20, batch_size=1, device="cpu"), "builtin:digits", log=log)
    assert list(elsewhere.iterdir()) == []
