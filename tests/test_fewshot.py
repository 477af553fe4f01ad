"""Few-shot linear evaluation (ViT paper §4.1): the closed-form ridge map, its leave-one-out choice of
strength, the shot draws, the table, and `vitviz finetune --mode few-shot`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from vitviz.finetune.data import DataError, Split
from vitviz.finetune.fewshot import draw_shots, few_shot_table, parse_shots, ridge_few_shot


def clustered(count: int, width: int, classes: int, seed: int, spread: float = 2.0, draw: int = 0):
    """Features around one random centre per class (fixed by `seed`), with noise drawn by `draw`:
    (count, width) and labels (count,)."""
    centres = torch.randn(classes, width, generator=torch.Generator().manual_seed(seed)) * 3 + 5
    labels = torch.arange(count) % classes
    noise = torch.randn(count, width, generator=torch.Generator().manual_seed(1000 + draw))
    return centres[labels] + spread * noise, labels


def ridge_targets(labels: torch.Tensor, classes: int) -> np.ndarray:
    return 2.0 * np.eye(classes)[labels.numpy()] - 1.0


def test_the_closed_form_equals_scikit_learns_ridge_at_one_strength():
    shots, labels = clustered(30, 200, 5, seed=0, spread=15.0)
    test, test_labels = clustered(60, 200, 5, seed=0, spread=15.0, draw=1)
    fit = ridge_few_shot(shots, labels, test, test_labels, 5, strengths=(0.1,))
    centred = shots.double() - shots.double().mean(dim=0)
    alpha = 0.1 * float(
        centred.square().sum(dim=1).mean()
    )  # the strength is relative to the mean squared norm
    oracle = Ridge(alpha=alpha).fit(shots.double().numpy(), ridge_targets(labels, 5))
    expected = float((oracle.predict(test.double().numpy()).argmax(1) == test_labels.numpy()).mean())
    assert fit.strength == 0.1
    assert fit.accuracy == pytest.approx(expected, abs=1e-12)
    assert 0.2 < fit.accuracy < 1.0  # a case where the answer is not trivially all right or all wrong


def test_leave_one_out_picks_the_strength_refitting_without_each_shot_picks():
    strengths = (1e-3, 1e-1, 10.0)
    shots, labels = clustered(24, 50, 4, seed=3, spread=5.0)
    test, test_labels = clustered(40, 50, 4, seed=3, spread=5.0, draw=1)
    fit = ridge_few_shot(shots, labels, test, test_labels, 4, strengths=strengths)
    targets = ridge_targets(labels, 4)
    scores = []
    for strength in strengths:
        right, error = 0, 0.0
        for left in range(len(shots)):
            kept = [i for i in range(len(shots)) if i != left]
            # The strength scales with the mean squared norm of all the shots, centred on all of them.
            centred = shots.double() - shots.double().mean(dim=0)
            alpha = strength * float(centred.square().sum(dim=1).mean())
            model = Ridge(alpha=alpha).fit(shots.double().numpy()[kept], targets[kept])
            guess = model.predict(shots.double().numpy()[[left]])[0]
            right += int(guess.argmax() == labels[left])
            error += float(np.square(guess - targets[left]).sum())
        scores.append((right, -error))
    assert fit.strength == strengths[int(np.argmax([s[0] * 1e6 + s[1] for s in scores]))], scores


def test_shots_are_drawn_per_class_and_reproducibly():
    labels = [0] * 6 + [1] * 4 + [2] * 5
    chosen = draw_shots(labels, 3, seed=7)
    assert sorted(labels[i] for i in chosen) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert draw_shots(labels, 3, seed=7) == chosen
    assert draw_shots(labels, 3, seed=8) != chosen
    with pytest.raises(DataError, match="5 shots need 5 training images of every class; one class has 4"):
        draw_shots(labels, 5, seed=0)


@pytest.mark.parametrize(("text", "expected"), [("1,5,10,25", (1, 5, 10, 25)), (" 10, 1 ,1,", (1, 10))])
def test_shot_lists_are_read_sorted_and_without_repeats(text, expected):
    assert parse_shots(text) == expected


@pytest.mark.parametrize("text", ["", "0,5", "five", "1;5", "-3"])
def test_a_bad_shot_list_gets_a_message_not_a_traceback(text):
    with pytest.raises(ValueError, match="shots must"):
        parse_shots(text)


def test_the_table_scores_every_model_on_the_same_draws_and_more_shots_help():
    features, labels = clustered(400, 64, 4, seed=1, spread=7.0)
    split = Split(tuple(range(0, 300)), tuple(range(300, 400)))
    table = few_shot_table(
        "synthetic", ("a", "b", "c", "d"), {"one": features, "same": features.clone(), "noise": torch.randn(400, 64)},
        labels, split, (1, 5, 25), draws=3,
    )  # fmt: skip
    assert table.shots == (1, 5, 25) and table.test_images == 100 and table.draws == 3
    assert table.cells["one"] == table.cells["same"]  # the same shots for every model
    means = [cell.mean for cell in table.cells["one"]]
    assert means[0] < means[2] and means[2] > 0.9, means
    assert all(cell.mean < 0.45 for cell in table.cells["noise"])  # chance is 0.25
    for cell in table.cells["one"]:
        assert len(cell.accuracies) == 3 and cell.low <= cell.mean <= cell.high
    lines = table.markdown().splitlines()
    assert lines[0] == "| shots per class | one | same | noise |" and len(lines) == 5
    assert lines[4].startswith("| 25 | ") and f"{means[2]:.3f}" in lines[4]
    assert json.loads(json.dumps(table.as_dict()))["models"]["one"][2]["mean"] == pytest.approx(means[2])


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vitviz", "finetune", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_the_cli_refuses_bad_shots_and_too_many_shots_in_one_line(tmp_path):
    result = run_cli("--mode", "few-shot", "--data", "builtin:shapes", "--shots", "1,x")
    assert result.returncode != 0 and "shots must be whole numbers" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("--mode", "few-shot", "--data", "builtin:shapes", "--max-images", "50", "--shots", "25")
    assert result.returncode != 0 and "25 shots per class need 25 training images" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("--mode", "probe", "--data", "builtin:shapes")
    assert result.returncode != 0 and "--out NAME_OR_FOLDER is required" in result.stderr


@pytest.mark.slow
def test_the_cli_compares_the_bundled_vit_and_cnn_against_shots(tmp_path):
    out = tmp_path / "few"
    result = run_cli(
        "--mode", "few-shot", "--data", "builtin:shapes", "--max-images", "100", "--shots", "1,5",
        "--draws", "2", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| shots per class | vit_small_patch14_dinov2 | tf_efficientnet_lite0 |" in result.stdout
    table = json.loads((out / "fewshot.json").read_text())
    assert table["shots"] == [1, 5] and table["test_images"] == 20 and table["draws"] == 2
    for cells in table["models"].values():
        assert [cell["shots"] for cell in cells] == [1, 5]
        assert all(0.0 <= cell["low"] <= cell["mean"] <= cell["high"] <= 1.0 for cell in cells)
    # Five shots per class of real features beat chance (0.2) by far on the shapes.
    assert table["models"]["vit_small_patch14_dinov2"][1]["mean"] > 0.6, table
    assert "plotly" in (out / "fewshot.html").read_text()[:200000].lower()
