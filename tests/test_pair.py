"""A ViT/CNN pair: both bundled models fine-tuned alike, found again as a pair, loading as models."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.support.runs import lay_down_pair
from vitviz.finetune.digits import digit_image
from vitviz.finetune.pair import PAIR_FILE, list_pairs, newest_pair, read_pair, stop_pair, train_pair
from vitviz.finetune.trainer import FinetuneConfig
from vitviz.finetune.worker import run_image_set
from vitviz.models import load_model
from vitviz.predict import predict
from vitviz.runs import read_config, read_val_predictions

DIGITS = tuple(str(digit) for digit in range(10))


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory):
    """`python -m vitviz finetune-pair` on 30 digits (2 or 3 of each), run as a user runs it."""
    root = tmp_path_factory.mktemp("runs")
    out = root / "digits-pair"
    command = [sys.executable, "-m", "vitviz", "finetune-pair", "--data", "builtin:digits"]
    command += [
        "--max-images",
        "30",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_both_sides_train_on_the_same_images_split_and_settings(trained_pair):
    out, stdout = trained_pair
    pair = read_pair(out)
    assert pair.ready and pair.labels == DIGITS and pair.seed == 0 and pair.data == "builtin:digits"
    configs = {side: read_config(run) for side, run in pair.runs.items()}
    assert configs["vit"]["timm_name"] == "vit_small_patch14_dinov2"
    assert configs["cnn"]["timm_name"] == "tf_efficientnet_lite0"
    assert configs["vit"]["hyperparameters"] == configs["cnn"]["hyperparameters"]
    assert configs["vit"]["hyperparameters"]["max_images"] == 30
    assert configs["vit"]["data"]["class_counts"] == configs["cnn"]["data"]["class_counts"]
    held_out = [sorted(p["key"] for p in read_val_predictions(run)) for run in pair.runs.values()]
    assert held_out[0] == held_out[1] and len(held_out[0]) == 10  # one of each class
    manifest = json.loads((out / PAIR_FILE).read_text())
    assert manifest["split"] == {"seed": 0, "val_fraction": 0.2, "max_images": 30}
    assert "[vit] " in stdout and "[cnn] " in stdout and f"finished: pair {out}" in stdout


def test_both_runs_load_as_classifiers_with_the_same_labels(trained_pair):
    pair = read_pair(trained_pair[0])
    vit, cnn = load_model(str(pair.vit)), load_model(str(pair.cnn))
    assert (vit.facts.family, cnn.facts.family) == ("vit", "cnn")
    assert vit.labels == cnn.labels == DIGITS
    assert vit.facts.num_classes == cnn.facts.num_classes == 10
    for loaded in (vit, cnn):
        (top,) = predict(loaded, [digit_image(0)], topk=1)[0]
        assert top.label in DIGITS and 0.0 < top.probability <= 1.0


def test_a_digits_run_finds_its_validation_images_again(trained_pair):
    run = read_pair(trained_pair[0]).vit
    image_set = run_image_set(run)  # how a page reopens a run's images, from its config.json
    assert len(image_set.items) == 1797 and image_set.classes == DIGITS
    for prediction in read_val_predictions(run):
        row = int(prediction["key"].split("/")[1][:4])
        assert np.array_equal(
            np.asarray(image_set.item(prediction["key"]).load()), np.asarray(digit_image(row))
        )


def test_the_pair_is_found_in_its_runs_folder(trained_pair):
    out = trained_pair[0]
    lay_down_pair(out.parent / "unfinished", DIGITS, created=9e12, complete=False)  # newer, but not ready
    (out.parent / "not-a-pair").mkdir()
    (out.parent / "broken").mkdir()
    (out.parent / "broken" / PAIR_FILE).write_text("{")
    assert [pair.name for pair in list_pairs(out.parent)] == ["unfinished", "digits-pair"]
    assert newest_pair(out.parent).folder == out


def test_a_folder_that_holds_files_is_refused_before_training(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty folder"):
        train_pair(FinetuneConfig(max_images=20), "builtin:digits", tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_unknown_data_is_one_line_before_any_folder_is_made(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vitviz",
            "finetune-pair",
            "--data",
            "builtin:letters",
            "--out",
            str(tmp_path / "p"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "builtin:letters" in result.stderr
    assert not (tmp_path / "p").exists()
    help_text = subprocess.run(
        [sys.executable, "-m", "vitviz", "finetune-pair", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        help_text.returncode == 0
        and "--max-images" in help_text.stdout
        and "--weights" not in help_text.stdout
    )


def test_a_manifest_pointing_outside_its_pair_is_refused(tmp_path):
    folder = lay_down_pair(tmp_path / "pair", DIGITS, created=1.0)
    manifest = json.loads((folder / PAIR_FILE).read_text())
    manifest["runs"]["cnn"] = "../elsewhere"
    (folder / PAIR_FILE).write_text(json.dumps(manifest))
    assert list_pairs(tmp_path) == []


def test_a_stopped_pair_never_starts_its_cnn(tmp_path):
    out = tmp_path / "pair"
    lines = []

    def log(line):
        lines.append(line)
        if len(lines) == 1:  # the ViT's first line: its model and data are loaded
            stop_pair(out)

    outcome = train_pair(
        FinetuneConfig(max_images=20, batch_size=1, device="cpu"), "builtin:digits", out, log=log
    )
    assert outcome.stopped and list(outcome.results) == ["vit"]
    assert not (out / "cnn").exists() and not read_pair(out).ready
    assert newest_pair(tmp_path) is None
