"""A ViT/CNN pair: both bundled models fine-tuned alike, found again as a pair, loading as models."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.support.pairs import hand_made_pair
from vitviz.finetune.digits import digit_image
from vitviz.finetune.pair import PAIR_FILE, held_out_images, list_pairs, newest_pair, read_pair, train_pair
from vitviz.finetune.trainer import FinetuneConfig
from vitviz.finetune.worker import run_image_set
from vitviz.models import load_model
from vitviz.predict import predict
from vitviz.preprocess import image_view
from vitviz.runs import list_runs, read_config, read_val_predictions

DIGITS = tuple(str(digit) for digit in range(10))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vitviz", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory):
    """`python -m vitviz finetune-pair` on 30 digits (2 or 3 of each), run as a user runs it."""
    root = tmp_path_factory.mktemp("runs")
    result = run_cli(
        "finetune-pair", "--data", "builtin:digits", "--max-images", "30", "--epochs", "3",
        "--batch-size", "8", "--device", "cpu", "--out", str(root),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return root, result.stdout


def test_both_sides_train_on_the_same_images_split_and_settings(trained_pair):
    root, stdout = trained_pair
    (pair,) = list_pairs(root)
    assert pair.ready and pair.labels == DIGITS and pair.seed == 0 and pair.data == "builtin:digits"
    configs = {side: read_config(run) for side, run in pair.runs.items()}
    assert configs["vit"]["timm_name"] == "vit_small_patch14_dinov2"
    assert configs["cnn"]["timm_name"] == "tf_efficientnet_lite0"
    assert configs["vit"]["hyperparameters"] == configs["cnn"]["hyperparameters"]
    assert configs["vit"]["hyperparameters"]["max_images"] == 30
    assert configs["vit"]["data"]["class_counts"] == configs["cnn"]["data"]["class_counts"]
    held_out = [sorted(p["key"] for p in read_val_predictions(run)) for run in pair.runs.values()]
    assert held_out[0] == held_out[1] and len(held_out[0]) == 10  # one of each class
    manifests = [json.loads((run / PAIR_FILE).read_text()) for run in pair.runs.values()]
    assert manifests[0] == manifests[1]
    assert manifests[0]["split"] == {"seed": 0, "val_fraction": 0.2, "max_images": 30}
    assert "[vit] " in stdout and "[cnn] " in stdout and "pair finished" in stdout


def test_both_runs_are_ordinary_runs_that_load_as_classifiers_with_the_same_labels(trained_pair):
    root = trained_pair[0]
    (pair,) = list_pairs(root)
    assert {run.folder for run in list_runs(root)} == {pair.vit, pair.cnn}
    assert all(run.status.state == "finished" and run.problem is None for run in list_runs(root))
    vit, cnn = load_model(str(pair.vit)), load_model(str(pair.cnn))
    assert (vit.facts.family, cnn.facts.family) == ("vit", "cnn")
    assert vit.labels == cnn.labels == DIGITS
    assert vit.facts.num_classes == cnn.facts.num_classes == 10
    for loaded in (vit, cnn):
        (top,) = predict(loaded, [image_view(digit_image(0), loaded.facts)], topk=1)[0]
        assert top.label in DIGITS and 0.0 < top.probability <= 1.0


def test_a_digits_run_finds_its_validation_images_again(trained_pair):
    (pair,) = list_pairs(trained_pair[0])
    image_set = run_image_set(pair.vit)  # how a page reopens a run's images, from its config.json
    assert len(image_set.items) == 1797 and image_set.classes == DIGITS
    for prediction in read_val_predictions(pair.vit):
        row = int(prediction["key"].split("/")[1][:4])
        assert np.array_equal(
            np.asarray(image_set.item(prediction["key"]).load()), np.asarray(digit_image(row))
        )


def test_the_newest_ready_pair_is_found_once(tmp_path):
    older = hand_made_pair(tmp_path, "older", created=1.0)
    newer = hand_made_pair(tmp_path, "newer", created=2.0)
    hand_made_pair(tmp_path, "broken", created=3.0, cnn_has_model=False)  # newest, but cannot load
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / PAIR_FILE).write_text("{")
    assert [pair.vit.name for pair in list_pairs(tmp_path)] == ["broken-vit", "newer-vit", "older-vit"]
    assert newest_pair(tmp_path).runs == newer
    assert read_pair(older["cnn"]).runs == older  # either run of a pair leads to both


def test_a_pair_whose_run_was_deleted_is_no_pair(tmp_path):
    runs = hand_made_pair(tmp_path, "half", created=1.0)
    for path in runs["cnn"].iterdir():
        path.unlink()
    runs["cnn"].rmdir()
    assert list_pairs(tmp_path) == [] and newest_pair(tmp_path) is None


def test_a_manifest_never_leads_outside_the_runs_folder(tmp_path):
    runs = hand_made_pair(tmp_path / "runs", "pair", created=1.0)
    hand_made_pair(tmp_path, "outside", created=1.0)
    for run in runs.values():
        manifest = json.loads((run / PAIR_FILE).read_text())
        manifest["runs"]["cnn"] = "../outside-cnn"
        (run / PAIR_FILE).write_text(json.dumps(manifest))
    assert list_pairs(tmp_path / "runs") == []


def test_unknown_data_is_one_line_before_any_run_folder_is_made(tmp_path):
    result = run_cli("finetune-pair", "--data", "builtin:letters", "--out", str(tmp_path))
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "builtin:letters" in result.stderr
    assert list(tmp_path.iterdir()) == []
    help_text = run_cli("finetune-pair", "--help")
    assert help_text.returncode == 0 and "--max-images" in help_text.stdout
    assert "--weights" not in help_text.stdout  # the pair's models are fixed: DINOv2 and EfficientNet


def test_a_stopped_vit_run_stops_the_pair_before_its_cnn(tmp_path):
    folders = []

    def log(line):
        if line.startswith("[vit] run folder "):
            folders.append(tmp_path / line.removeprefix("[vit] run folder "))
        elif line.startswith("[vit] 1797 images"):  # claimed and loaded: ask the run to stop, as a page does
            (folders[0] / "stop").touch()

    config = FinetuneConfig(max_images=20, batch_size=1, device="cpu")
    outcome = train_pair(config, "builtin:digits", tmp_path, log=log)
    assert outcome.stopped and outcome.pair is None
    assert list(outcome.results) == ["vit"] and outcome.results["vit"].stopped
    assert [run.folder for run in list_runs(tmp_path)] == [outcome.runs["vit"]]  # no CNN run was made
    assert list_pairs(tmp_path) == []


def test_a_pair_is_shown_held_out_images_of_its_own_data_one_per_class(trained_pair):
    (pair,) = list_pairs(trained_pair[0])
    held_out = held_out_images(pair)
    assert [image.label for image in held_out] == list(DIGITS)  # 30 digits, 10 held out: one of each
    held_out_keys = {row["key"] for row in read_val_predictions(pair.cnn)}
    for image in held_out:
        assert image.key in held_out_keys and image.data == "builtin:digits"
        row = int(image.key.split("/")[1][:4])
        assert np.array_equal(np.asarray(image.image.convert("L")), np.asarray(digit_image(row).convert("L")))
        assert image.name == f"held-out “{image.label}” of builtin:digits ({image.key})"
