"""Run folders met as a served app meets them: named by visitors, hand-edited, half-written or broken."""

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm

from tests.support.run_folders import TINY_RUN_CONFIG, hand_made_run, odd_run_folders, within_or_release
from vitviz.finetune.results import run_results
from vitviz.models import ModelError, describe_weights, load_model
from vitviz.runs import (
    MAX_LABELS,
    MAX_RUN_NAME_CHARS,
    RunError,
    active_runs,
    list_runs,
    read_config,
    read_log_tail,
    read_metrics,
    read_status,
    run_folder_by_name,
    validate_run_config,
)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(root))
    return root


def dead_pid() -> int:
    """The pid of a process that has already exited (and been reaped)."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    return int(finished.stdout)


def assert_one_line_without(message: str, *paths: Path) -> None:
    assert message and "\n" not in message, message
    for path in paths:
        assert str(path) not in message, message


# --------------------------------------------------------------------------------------------
# Runs are named, never given as paths
# --------------------------------------------------------------------------------------------


def test_a_run_is_found_by_its_plain_name_directly_in_the_runs_folder(runs_dir):
    folder = hand_made_run(runs_dir, "my-run")
    assert run_folder_by_name("my-run") == folder


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "a/b",
        "../runs/my-run",
        "/etc",
        "a\\b",
        "x" * (MAX_RUN_NAME_CHARS + 1),
        ".hidden",
        "a\0b",
    ],
)
def test_run_names_that_are_not_plain_folder_names_are_refused(runs_dir, name):
    hand_made_run(runs_dir, "my-run")
    with pytest.raises(RunError) as refused:
        run_folder_by_name(name)
    assert_one_line_without(str(refused.value), runs_dir)


def test_a_link_in_the_runs_folder_to_a_run_elsewhere_is_no_run(runs_dir, tmp_path):
    elsewhere = hand_made_run(tmp_path / "elsewhere", "outside-run")
    (runs_dir / "linked").symlink_to(elsewhere, target_is_directory=True)
    missing, linked = [pytest.raises(RunError) for _ in range(2)]
    with missing as missing_error:
        run_folder_by_name("no-such-run")
    with linked as linked_error:
        run_folder_by_name("linked")
    # A link and a missing run read alike, so a name reveals nothing about the disk.
    assert str(linked_error.value) == str(missing_error.value).replace("no-such-run", "linked")
    assert [run.name for run in list_runs()] == []


# --------------------------------------------------------------------------------------------
# config.json is checked against a schema before anything is built
# --------------------------------------------------------------------------------------------


def test_a_config_with_a_file_path_in_build_args_is_refused_before_anything_is_built(
    runs_dir, tmp_path, monkeypatch
):
    secret = tmp_path / "secret.pth"
    secret.write_bytes(b"not for visitors")
    config = {**TINY_RUN_CONFIG, "build_args": {"img_size": [32, 32], "checkpoint_path": str(secret)}}
    folder = hand_made_run(runs_dir, config=config)
    built = []
    monkeypatch.setattr(timm, "create_model", lambda *args, **kwargs: built.append(kwargs))
    with pytest.raises(ModelError, match="build_args") as refused:
        load_model(str(folder))
    assert built == []
    assert_one_line_without(str(refused.value), secret, runs_dir)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"labels": 5}, "labels"),
        ({"labels": [1, 2]}, "labels"),
        ({"labels": ["x" * 201, "b"]}, "labels"),
        ({"labels": [f"c{i}" for i in range(MAX_LABELS + 1)]}, "labels"),
        ({"timm_name": "no_such_model"}, "timm_name"),
        ({"timm_name": ["test_vit"]}, "timm_name"),
        ({"build_args": {"img_size": "huge"}}, "build_args"),
        ({"build_args": {"img_size": [32, 32, 32]}}, "build_args"),
        ({"build_args": {"img_size": 10**9}}, "build_args"),
        ({"build_args": {"pretrained_cfg_overlay": {"file": "/etc/passwd"}}}, "build_args"),
        ({"build_args": [1, 2]}, "build_args"),
        ({"created": "yesterday"}, "created"),
        ({"created": float("inf")}, "created"),
        ({"hyperparameters": {"epochs": "many"}}, "hyperparameters"),
        ({"data": 5}, "data"),
        ({"data": {"label": "x", "root": ["a"]}}, "data"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_the_config_schema_names_the_first_field_that_breaks_it(change, words):
    with pytest.raises(ValueError, match=words):
        validate_run_config({**TINY_RUN_CONFIG, **change})


def test_the_config_schema_accepts_what_the_worker_writes():
    checked = validate_run_config(TINY_RUN_CONFIG)
    assert checked == TINY_RUN_CONFIG
    preliminary = {
        key: TINY_RUN_CONFIG[key] for key in ("timm_name", "weights", "base_model", "mode", "hyperparameters")
    }
    assert validate_run_config({**preliminary, "labels": [], "data": {"label": "pets.zip"}, "created": 1.0})


def test_a_build_arg_num_classes_that_disagrees_with_the_labels_is_refused(runs_dir):
    folder = hand_made_run(runs_dir, config={**TINY_RUN_CONFIG, "build_args": {"num_classes": 7}})
    with pytest.raises(ModelError, match="num_classes"):
        load_model(str(folder))


def test_a_valid_hand_made_run_loads_as_a_model(runs_dir):
    loaded = load_model(str(hand_made_run(runs_dir)))
    assert loaded.labels == ("circle", "square") and loaded.facts.input_size == (32, 32)


# --------------------------------------------------------------------------------------------
# One malformed folder never takes the runs list down
# --------------------------------------------------------------------------------------------


def test_labels_that_are_a_number_show_the_run_as_broken_instead_of_raising(runs_dir):
    hand_made_run(runs_dir, "broken", config={**TINY_RUN_CONFIG, "labels": 5})
    hand_made_run(runs_dir, "fine")
    runs = {run.name: run for run in list_runs()}
    assert set(runs) == {"broken", "fine"}
    assert runs["fine"].problem is None and runs["fine"].status.state == "finished"
    broken = runs["broken"]
    assert broken.status.state == "failed" and "labels" in broken.problem
    assert_one_line_without(broken.problem, runs_dir)


def test_a_deeply_nested_status_reads_as_a_failed_run(runs_dir):
    folder = hand_made_run(runs_dir, status=b"[" * 100_000 + b"]" * 100_000)
    status = read_status(folder)
    assert status.state == "failed" and "status.json" in status.error
    assert [run.status.state for run in list_runs()] == ["failed"]


# Hostile or accidental contents of config.json and status.json, as bytes.
MALFORMED_JSON: list[bytes] = [
    b"",
    b"{",
    b"null",
    b'"a string"',
    b"[1, 2, 3]",
    b"\xff\xfe\x00\x00not utf-8",
    b"[" * 50_000 + b"]" * 50_000,
    b'{"a": ' * 5_000 + b"1" + b"}" * 5_000,
    b"9" * 5_000,
    b"1e999",
    b'{"state": "running", "progress": 1e999}',
    b'{"state": "banana"}',
    b'{"state": "finished", "progress": "half"}',
    b'{"state": "running", "pid": "me"}',
    b'{"state": "running", "pid": -4}',
    b'{"state": "running", "pid": 1e300}',
    b'{"state": "finished", "epoch": 99999999999999999999999}',
    b'{"state": "failed", "error": {"nested": true}}',
    b'{"state": "finished", "message": ' + json.dumps("m" * 100_000).encode() + b"}",
]


def malformed_configs() -> list[bytes]:
    """Broken config.json files: malformed JSON, and the worker's config with one field spoiled."""
    spoiled = [
        {"labels": 5},
        {"labels": None},
        {"labels": [["nested"]]},
        {"timm_name": 12},
        {"timm_name": "x" * 100_000},
        {"build_args": "img_size=32"},
        {"build_args": {"img_size": -3}},
        {"build_args": {"img_size": True}},
        {"build_args": {"checkpoint_path": "/etc/passwd"}},
        {"num_classes": "two"},
        {"data": []},
        {"data": {"label": 5}},
        {"data": {"class_counts": {"a": "many"}}},
        {"created": -1e999},
        {"hyperparameters": []},
        {"hyperparameters": {"lr": "fast"}},
        {"world_size": 0},
    ]
    return MALFORMED_JSON + [json.dumps({**TINY_RUN_CONFIG, **change}).encode() for change in spoiled]


def make_malformed_folders(root: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` run folders, each with one or more of config.json, status.json, model.safetensors,
    metrics.jsonl and val_predictions.json broken at random: bad bytes, a folder in the file's
    place, a missing file, or a link to an endless device."""
    rng = random.Random(seed)
    configs, statuses = malformed_configs(), MALFORMED_JSON
    folders = []
    for index in range(count):
        folder = root / f"run-{index:03d}"
        folder.mkdir()
        files = {
            "config.json": rng.choice([*configs, json.dumps(TINY_RUN_CONFIG).encode()]),
            "status.json": rng.choice([*statuses, b'{"state": "finished", "progress": 1.0}']),
            "model.safetensors": rng.choice([b"", b"\x00" * 64, b"garbage", None]),
            "metrics.jsonl": rng.choice(
                [b'{"epoch": "one"}\n', b"[1]\n", b"\xff\n", b'{"epoch": 1}\n', None]
            ),
            "val_predictions.json": rng.choice(
                [b'[{"key": 1}]', b'{"a": 1}', b"[[[", b'[{"label": 9}]', None]
            ),
        }
        for name, data in files.items():
            how = rng.random()
            if how < 0.08:
                (folder / name).mkdir()  # a folder where a file should be
            elif how < 0.12 and name in ("config.json", "status.json"):
                (folder / name).symlink_to("/dev/zero")  # reads forever if read whole
            elif how < 0.2 or data is None:
                continue  # missing
            else:
                (folder / name).write_bytes(data)
        folders.append(folder)
    return folders


def test_malformed_run_folders_are_listed_as_broken_and_load_with_one_clear_error(runs_dir):
    folders = make_malformed_folders(runs_dir, 120)
    summaries = list_runs()
    assert sorted(run.name for run in summaries) == sorted(folder.name for folder in folders)
    for run in summaries:
        text = run.problem or run.status.error or ""
        assert "\n" not in text and str(runs_dir) not in text, text
        assert run.status.state in ("starting", "running", "finished", "stopped", "failed")
        assert 0.0 <= run.status.progress <= 1.0
        assert all(isinstance(label, str) for label in run.labels)
        if run.problem is not None:
            assert run.status.state == "failed"
    for folder in folders:
        assert isinstance(describe_weights(str(folder)), str)
        assert isinstance(read_status(folder).state, str)
        assert all(isinstance(row["val_acc"], float) for row in read_metrics(folder))
        try:
            run_results(folder)
        except RunError as error:
            assert_one_line_without(str(error), runs_dir)
        try:
            load_model(str(folder))
        except ModelError as error:
            # The command line may name any folder; a folder that is no run is quoted as given.
            assert_one_line_without(str(error).replace(str(folder), folder.name), runs_dir)


def test_read_config_of_a_link_to_an_endless_device_is_a_run_error(runs_dir):
    folder = hand_made_run(runs_dir, with_model=False)
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to("/dev/zero")
    with pytest.raises(RunError, match=r"config\.json"):
        read_config(folder)


# --------------------------------------------------------------------------------------------
# A worker that died: its status is settled on disk, its leftovers removed
# --------------------------------------------------------------------------------------------


def test_a_dead_workers_run_is_settled_on_disk_with_its_finished_epochs(runs_dir):
    folder = hand_made_run(runs_dir, status={"state": "running", "progress": 0.3, "pid": dead_pid()})
    (folder / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"epoch": epoch, "train_loss": 1.0, "val_loss": 1.0, "val_acc": 0.5, "seconds": 0.1})
            + "\n"
            for epoch in (1, 2)
        )
    )
    (folder / ".model.x1y2.tmp").write_bytes(b"half a checkpoint")
    (folder / ".status.json.z3.tmp").write_text("{")
    (folder / "data" / "cats").mkdir(parents=True)
    (folder / "data" / "cats" / "1.png").write_bytes(b"extracted")
    (folder / "upload.zip").write_bytes(b"PK")
    status = read_status(folder)
    assert (status.state, status.epoch) == ("failed", 2)
    assert "ended without finishing" in status.error and "epoch" in status.error
    on_disk = json.loads((folder / "status.json").read_text())
    assert (on_disk["state"], on_disk["epoch"]) == ("failed", 2)
    assert sorted(path.name for path in folder.iterdir()) == [
        "config.json",
        "metrics.jsonl",
        "model.safetensors",
        "status.json",
    ]


def test_a_dead_worker_that_was_asked_to_stop_reads_as_stopped(runs_dir):
    folder = hand_made_run(runs_dir, status={"state": "running", "pid": dead_pid()})
    (folder / "stop").touch()
    assert read_status(folder).state == "stopped"


def test_an_active_run_without_a_worker_pid_holds_its_slot_only_for_a_while(runs_dir):
    fresh = hand_made_run(runs_dir, "fresh", status={"state": "starting", "updated": time.time()})
    stale = hand_made_run(runs_dir, "stale", status={"state": "running", "updated": time.time() - 3600})
    assert read_status(fresh).state == "starting"
    assert read_status(stale).state == "failed" and "no training process" in read_status(stale).error


def test_only_live_workers_count_as_active_runs(runs_dir):
    hand_made_run(runs_dir, "alive", status={"state": "running", "pid": os.getpid()})
    hand_made_run(runs_dir, "dead", status={"state": "running", "pid": dead_pid()})
    hand_made_run(runs_dir, "done")
    assert [run.name for run in active_runs()] == ["alive"]


# --------------------------------------------------------------------------------------------
# Folders no worker writes: odd names, a FIFO, a log that never ends
# --------------------------------------------------------------------------------------------


def test_odd_run_folders_are_listed_as_broken_with_why_and_show_as_text(runs_dir):
    odd = odd_run_folders(runs_dir)
    runs = within_or_release(list_runs, odd["FIFO status.json"] / "status.json")
    by_folder = {run.folder: run for run in runs}
    non_utf8 = by_folder[odd["non-UTF-8 name"]]
    assert non_utf8.problem == "Run 20250101-000000-run-\ufffd\ufffd: its folder name is not UTF-8 text."
    assert non_utf8.name == "20250101-000000-run-\ufffd\ufffd"
    long_name = by_folder[odd["200-character name"]]
    assert long_name.problem.endswith(
        f"its folder name is 200 characters long; a run's name has at most {MAX_RUN_NAME_CHARS}."
    )
    fifo = by_folder[odd["FIFO status.json"]]
    assert fifo.status.state == "failed" and fifo.status.error == "status.json is not a plain file"
    for run in by_folder.values():
        run.name.encode("utf-8")  # every name can be sent to a browser
        assert not run.has_model or run.problem is None
    assert not non_utf8.has_model and not long_name.has_model


def test_a_fifo_as_status_json_is_read_at_once_not_waited_on(runs_dir):
    folder = odd_run_folders(runs_dir)["FIFO status.json"]
    status = within_or_release(lambda: read_status(folder), folder / "status.json")
    assert status.state == "failed" and status.error == "status.json is not a plain file"


def test_the_worker_log_is_read_as_a_bounded_tail_of_a_plain_file_only(runs_dir):
    folder = hand_made_run(runs_dir)
    (folder / "worker.log").write_bytes(b"x" * 1_000_000 + b"\xff last line\n")
    assert read_log_tail(folder, 100) == "x" * 88 + "\ufffd last line\n"
    (folder / "worker.log").unlink()
    os.mkfifo(folder / "worker.log")
    assert within_or_release(lambda: read_log_tail(folder), folder / "worker.log") == ""
