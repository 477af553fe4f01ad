"""Who may stop or delete a run: the visitor whose session started it, and the operator on the command line."""

import json
import os
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.browser import REPO
from tests.support.polling import wait_for
from tests.support.run_folders import TINY_RUN_CONFIG, hand_made_run
from vitviz.cli.main import main
from vitviz.finetune.trainer import FinetuneConfig
from vitviz.finetune.worker import execute_run, start_run, stop_run
from vitviz.runs import (
    OWNER_ENV,
    RunError,
    RunStatus,
    delete_run,
    list_runs,
    owned_by,
    owner_key,
    read_config,
    read_status,
    write_status,
)

ALICE, BOB = "alice-session-token", "bob-session-token"


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """This test's own runs folder (the worker processes inherit it)."""
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path))
    return tmp_path


def alices_run(runs_dir, name: str = "20250101-000000-test_vit-probe-alice0", **status):
    folder = hand_made_run(runs_dir, name, config={**TINY_RUN_CONFIG, "owner": owner_key(ALICE)})
    if status:
        write_status(folder, RunStatus(**status))
    return folder


def test_a_visitor_may_stop_and_delete_only_the_runs_their_session_started(runs_dir):
    folder = alices_run(runs_dir, state="running", pid=os.getpid())  # this process stands in for its worker
    assert owned_by(folder, ALICE) and not owned_by(folder, BOB) and owned_by(folder, None)
    with pytest.raises(RunError, match=r"Only the visitor whose session started run .* can stop it"):
        stop_run(folder, owner=BOB)
    assert not (folder / "stop").exists()
    stop_run(folder, owner=ALICE)
    assert (folder / "stop").exists()
    write_status(folder, RunStatus("stopped"))
    with pytest.raises(RunError, match="can delete it"):
        delete_run(folder, owner=BOB)
    assert folder.is_dir()
    delete_run(folder, owner=ALICE)
    assert not folder.exists()


def test_a_run_without_an_owner_or_with_a_broken_config_belongs_to_the_operator_alone(runs_dir):
    cli_run = hand_made_run(runs_dir, "20250101-000000-test_vit-probe-cli000")  # no owner: the command line's
    broken = hand_made_run(runs_dir, "20250101-000000-test_vit-probe-broken", config=b"{ not json")
    for folder in (cli_run, broken):
        assert not owned_by(folder, ALICE)
        with pytest.raises(RunError):
            delete_run(folder, owner=ALICE)
        delete_run(folder)  # the operator
        assert not folder.exists()


def test_the_owner_a_page_records_survives_the_workers_final_config(runs_dir):
    config = FinetuneConfig(model="test_vit", weights="random", epochs=1, batch_size=8, max_images=20)
    folder = start_run(config, "builtin:shapes", owner=ALICE)
    assert read_config(folder)["owner"] == owner_key(ALICE)  # from the start, before the worker runs
    final = wait_for(lambda: (s := read_status(folder)).state != "starting" and not s.active and s)
    assert final.state == "finished", (folder / "worker.log").read_text()
    recorded = read_config(folder)
    assert recorded["owner"] == owner_key(ALICE) and recorded["labels"]  # the worker's final config.json
    assert ALICE not in (folder / "config.json").read_text()  # only the digest is on disk


def test_the_command_line_lists_stops_and_deletes_any_run(runs_dir, capsys):
    folder = alices_run(runs_dir, state="running", pid=os.getpid())
    assert main(["runs", "list"]) == 0
    assert (
        f"{folder.name}\trunning\ttest_vit\tprobe\tstarted by a visitor's session" in capsys.readouterr().out
    )
    assert main(["runs", "delete", folder.name]) == 1
    assert "still training: stop it first" in capsys.readouterr().err
    assert main(["runs", "stop", folder.name]) == 0 and (folder / "stop").exists()
    write_status(folder, RunStatus("stopped"))
    assert main(["runs", "delete", folder.name]) == 0 and not folder.exists()
    assert main(["runs", "delete", "../etc"]) == 1
    assert "is not the name of a run" in capsys.readouterr().err


def dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    return int(finished.stdout)


def test_a_killed_run_with_a_checkpoint_is_offered_in_the_pickers_marked_as_stopped_early(runs_dir):
    folder = alices_run(runs_dir, state="running", pid=dead_pid(), epoch=2, epochs=3)
    with open(folder / "metrics.jsonl", "w") as metrics:
        for epoch in (1, 2):
            row = {"epoch": epoch, "train_loss": 0.5, "val_loss": 0.4, "val_acc": 0.9, "seconds": 1.0}
            metrics.write(json.dumps(row) + "\n")
    label = "run: test_vit · probe · shapes — stopped early after 2 of 3 epochs"
    assert [run.label for run in list_runs()] == [label]  # the dead worker's run is settled as it is listed
    assert read_status(folder).state == "failed"
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    app.run()
    assert not app.exception, app.exception
    assert label in app.selectbox(key="explore_model").options


def test_the_runs_a_pair_job_makes_record_the_owner_it_was_handed(runs_dir, monkeypatch):
    """start_pair hands its worker the owner's key in VITVIZ_RUN_OWNER; each run it makes records it."""
    config = FinetuneConfig(model="test_vit", weights="random", epochs=1, batch_size=8, max_images=20)
    monkeypatch.setenv(OWNER_ENV, owner_key(ALICE))
    execute_run(config, "builtin:shapes", runs_dir / "side", log=lambda line: None)
    assert owned_by(runs_dir / "side", ALICE) and not owned_by(runs_dir / "side", BOB)
    monkeypatch.setenv(OWNER_ENV, "not a key")  # anything but a key is no owner
    execute_run(config, "builtin:shapes", runs_dir / "other", log=lambda line: None)
    assert "owner" not in read_config(runs_dir / "other")
