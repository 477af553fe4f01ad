"""A run's own name: what a user may call a run, where the name is kept, and how it is shown."""

import os
import subprocess
import sys

import pytest

from tests.support.run_folders import TINY_RUN_CONFIG, hand_made_run
from vitviz.cli.main import main
from vitviz.finetune.trainer import FinetuneConfig
from vitviz.finetune.worker import execute_run, start_run
from vitviz.models import RUN_WEIGHTS, describe_weights
from vitviz.runs import (
    MAX_RUN_TITLE_CHARS,
    RunError,
    append_metrics,
    automatic_run_title,
    check_new_run_title,
    check_run_title,
    list_runs,
    read_config,
    run_summary,
    runs_root,
)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """The server's runs folder for this test, made by runs_root() as the app makes it."""
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path / "runs"))
    return runs_root()


def titled_run(root, title: str, name: str = "20250101-000000-test_vit-probe-abcdef"):
    return hand_made_run(root, name, config={**TINY_RUN_CONFIG, "title": title})


@pytest.mark.parametrize(
    ("typed", "kept"),
    [
        ("cats vs dogs", "cats vs dogs"),
        ("  DINOv2   probe · shapes (v2) 96.7% ", "DINOv2 probe · shapes (v2) 96.7%"),
        ("Zürich façades, l'été", "Zürich façades, l'été"),
        ("   ", ""),
        ("tab\tinside", "tab inside"),  # whitespace of any kind is tidied to one space
        ("x" * MAX_RUN_TITLE_CHARS, "x" * MAX_RUN_TITLE_CHARS),
    ],
)
def test_a_typed_name_is_kept_tidied(typed, kept):
    assert check_run_title(typed) == kept


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("x" * 5000, f"at most {MAX_RUN_TITLE_CHARS} characters; this one has 5,000"),
        ("/etc/passwd", "a name, not a path"),
        ("..\\..\\runs", "a name, not a path"),
        ("<b>bold", "not '<'"),
        ("$x$ **y**", "not '$'"),
        ("bell\x07", "not a control character"),
        (".hidden", "cannot start with a dot"),
    ],
)
def test_a_long_name_a_path_or_markup_gets_one_clear_sentence(typed, says):
    with pytest.raises(ValueError) as refused:
        check_run_title(typed)
    message = str(refused.value)
    assert says in message and "\n" not in message and len(message) < 200, message


def test_a_name_is_unique_in_its_runs_folder_whatever_its_case(runs_dir):
    run = titled_run(runs_dir, "Cats v Dogs")
    for taken in ("cats v dogs", "  CATS  V DOGS ", run.name.upper()):
        with pytest.raises(RunError, match="already a run named"):
            check_new_run_title(taken, runs_dir)
    assert check_new_run_title("cats v dogs, again", runs_dir) == "cats v dogs, again"
    assert check_new_run_title("", runs_dir) == ""


def test_start_run_refuses_a_taken_name_before_making_anything(runs_dir):
    titled_run(runs_dir, "my probe")
    config = FinetuneConfig(model="test_vit", weights="random", epochs=1, batch_size=4)
    with pytest.raises(RunError, match="already a run named 'My Probe'"):
        start_run(config, "builtin:shapes", title="My Probe")
    with pytest.raises(RunError, match="a name, not a path"):
        start_run(config, "builtin:shapes", title="../../etc")
    assert [run.title for run in list_runs()] == ["my probe"]


def test_a_run_is_shown_by_its_name_with_a_details_line_and_a_long_name_is_cut(runs_dir):
    long_title = "a rather long name for a probe of the shapes, third try"
    run = run_summary(titled_run(runs_dir, long_title))
    assert run.name == "20250101-000000-test_vit-probe-abcdef"  # the identity stays the folder's name
    assert run.title == long_title
    assert run.short_title == long_title[:31] + "…" and len(run.short_title) == 32
    assert run.label == f"run: {run.short_title} (test_vit, probe)"
    assert run.details.startswith("test_vit · probe · builtin:shapes · 2023-11-1")
    assert run.details.endswith(f" · {run.name}")
    assert (
        describe_weights(RUN_WEIGHTS, run.name)
        == f"fine-tuned run {run.short_title} (probe from random weights)"
    )


def test_the_command_line_lists_a_run_with_the_name_it_was_given(runs_dir, capsys):
    folder = titled_run(runs_dir, "shapes, first try")
    assert main(["runs", "list"]) == 0
    assert f"{folder.name}\tfinished\ttest_vit\tprobe\tstarted by the command line\tshapes, first try\n" in (
        capsys.readouterr().out
    )


def test_a_run_without_a_name_is_called_what_it_is_and_its_details_give_the_accuracy(runs_dir):
    folder = hand_made_run(runs_dir)
    run = run_summary(folder)
    assert run.given_title == "" and run.title == run.short_title == "test_vit · probe · shapes"
    assert run.label == "run: test_vit · probe · shapes"  # model and mode are said once
    assert "accuracy" not in run.details and run.details.endswith(f" · {run.name}")
    for epoch, accuracy in ((1, 0.5), (2, 0.9667)):
        row = {"epoch": epoch, "train_loss": 0.3, "val_loss": 0.2, "val_acc": accuracy, "seconds": 1.0}
        append_metrics(folder, row)
    run = run_summary(folder)
    assert run.title == "test_vit · probe · shapes"  # the name stays while epochs come in
    assert "· builtin:shapes · 96.7% validation accuracy · " in run.details  # the last epoch's
    assert describe_weights(RUN_WEIGHTS, run.name) == (
        "fine-tuned run test_vit · probe · shapes (probe from random weights)"
    )


def test_a_bundled_models_run_is_called_by_the_models_paper_name():
    title = automatic_run_title("vit_small_patch14_dinov2", "probe", "builtin:digits")
    assert title == "DINOv2 ViT-S · probe · digits"
    assert automatic_run_title("convnext_tiny", "full", "cats-v-dogs") == "convnext_tiny · full · cats-v-dogs"


@pytest.mark.parametrize("title", ["x" * 5000, "a/b", "<script>", "", 7])
def test_a_hand_edited_name_that_breaks_the_rules_marks_the_run_broken(runs_dir, title):
    hand_made_run(runs_dir, config={**TINY_RUN_CONFIG, "title": title})
    (run,) = list_runs()
    assert run.problem is not None and "title" in run.problem, run.problem
    assert len(run.problem) < 300


def test_execute_run_records_the_name_in_config_json(tmp_path):
    config = FinetuneConfig(
        model="test_vit", weights="random", mode="probe", epochs=1, batch_size=8, max_images=20
    )
    execute_run(config, "builtin:shapes", tmp_path / "run", log=lambda line: None, title="shapes, first try")
    assert read_config(tmp_path / "run")["title"] == "shapes, first try"
    assert run_summary(tmp_path / "run").title == "shapes, first try"


def run_cli(*args: str, runs: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VITVIZ_RUNS_DIR": runs}
    command = [sys.executable, "-m", "vitviz", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_the_command_line_refuses_a_5000_character_name_in_one_line_and_makes_nothing(runs_dir):
    titled_run(runs_dir, "My Probe")
    name, says = "x" * 5000, "at most 60 characters"
    before = sorted(path.name for path in runs_dir.iterdir())
    result = run_cli(
        "finetune", "--data", "builtin:shapes", "--model", "test_vit", "--weights", "random",
        "--out", "new-run", "--name", name, runs=str(runs_dir),
    )  # fmt: skip
    assert result.returncode != 0
    assert says in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(path.name for path in runs_dir.iterdir()) == before
