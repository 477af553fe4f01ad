"""`explain` with every method, `probe` and `compare`, run as users run them."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from vitviz.cli.main import main
from vitviz.images import BUILTIN_PHOTOS
from vitviz.methods import method_title

COFFEE = str(BUILTIN_PHOTOS["coffee"])

EFFICIENTNET = ("--model", "tf_efficientnet_lite0")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vitviz", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_probe_json_is_exactly_the_documented_shape_and_starts_at_predict():
    probe = run_cli("probe", COFFEE, "--kind", "drop-salient", "--steps", "5", "--json")
    predicted = run_cli("predict", COFFEE, "--topk", "1", "--json")
    assert probe.returncode == 0, probe.stderr
    payload = json.loads(probe.stdout)
    # A salient drop also carries its random-order baseline, so its numbers can be read.
    assert list(payload) == ["target_index", "fractions", "target_probability", "random_order_probability"]
    assert payload["random_order_probability"][0] == payload["target_probability"][0]
    assert payload["fractions"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    top = json.loads(predicted.stdout)[0]["predictions"][0]
    assert payload["target_index"] == top["index"] == 967
    assert payload["target_probability"][0] == pytest.approx(top["probability"], abs=1e-5)
    assert payload["target_probability"][2] < 0.5 * payload["target_probability"][0]


def test_explain_gradcam_and_chefer_save_maps_for_the_chosen_class(tmp_path):
    gradcam_file = str(tmp_path / "gradcam.npy")
    gradcam = run_cli(
        "explain", COFFEE, *EFFICIENTNET, "--method", "gradcam", "--class", "968", "--out", gradcam_file
    )
    assert gradcam.returncode == 0, gradcam.stderr
    assert "for class 968 (cup)" in gradcam.stdout
    values = np.load(tmp_path / "gradcam.npy")
    assert values.shape == (7, 7) and values.dtype == np.float32 and values.max() > 0

    chefer = run_cli(
        "explain",
        COFFEE,
        "--model",
        "deit_tiny_distilled_patch16_224",
        "--weights",
        "random",
        "--method",
        "chefer",
        "--class",
        "5",
        "--out",
        str(tmp_path / "chefer.npy"),
    )
    assert chefer.returncode == 0, chefer.stderr
    assert "untrained" in chefer.stdout and np.load(tmp_path / "chefer.npy").shape == (14, 14)


def test_compare_writes_a_self_contained_html_and_a_png(tmp_path):
    html = tmp_path / "compare.html"
    png = tmp_path / "compare.png"
    models = ["vit_small_patch14_dinov2", "tf_efficientnet_lite0", "deit_tiny_patch16_224"]
    result = run_cli(
        "compare",
        COFFEE,
        "--models",
        *models,
        "--weights",
        "bundled",
        "bundled",
        "random",
        "--out",
        str(html),
    )
    assert result.returncode == 0, result.stderr
    assert "deit_tiny_patch16_224 has random (untrained) weights" in result.stderr
    text = html.read_text()
    assert "<script src=" not in text.replace('<script src="data:', "")  # plotly.js is inlined
    assert "Grad-CAM" in text and "espresso" in text and "deit_tiny_patch16_224 (untrained)" in text
    assert "bundled" in text and "crop view" in text  # exported titles say model, weights and view
    # Each classifier's map is scored beside its random-order baseline.
    scores = [line for line in result.stdout.splitlines() if "deletion AUC" in line]
    assert len(scores) == 2 and all("random order" in line for line in scores)
    assert scores[0].startswith("tf_efficientnet_lite0 · gradcam · class 967")
    # Then each one's verdict, as the Compare page words it, read from the same numbers.
    verdicts = [line for line in result.stdout.splitlines() if "most salient first (area " in line]
    named = [line.split(" · ")[:2] for line in scores]  # model, registry name of the scored map
    assert [line.split(":")[0] for line in verdicts] == [
        f"{model} · {method_title(method)}" for model, method in named
    ]
    for score, verdict in zip(scores, verdicts, strict=True):
        numbers = re.search(
            r"deletion AUC ([\d.]+) \(random order ([\d.]+), least salient first ([\d.]+)\)", score
        )
        deletion, random, least = (float(number) for number in numbers.groups())
        assert f"(area {deletion:.3f})" in verdict and f"random order ({random:.3f})" in verdict
        if abs(deletion - random) > 1e-3:  # printed to 4 places: a closer pair may round either way
            assert ("does not fall faster" not in verdict) == (deletion < random), (score, verdict)
        if abs(least - random) > 1e-3:
            assert ("does not stay above" not in verdict) == (least > random), (score, verdict)
    # On the espresso, Grad-CAM's most salient patches make the bundled EfficientNet's class fall faster.
    assert ") falls faster than the random order" in verdicts[0]

    result = run_cli("compare", COFFEE, "--models", *models[:2], "--out", str(png))
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            [
                "compare",
                COFFEE,
                "--models",
                "resnet18",
                "resnet34",
                "--weights",
                "random",
                "random",
                "random",
                "--out",
                "x.png",
            ],
            "one source per model",
        ),
        (
            ["compare", COFFEE, "--models", "resnet18", "resnet34", "--out", "x.pdf"],
            "must end in .png or .html",
        ),
        (
            ["explain", COFFEE, "--model", "tf_efficientnet_lite0", "--method", "chefer", "--out", "x.npy"],
            "works on ViTs, hybrids",
        ),
        (
            ["explain", COFFEE, *EFFICIENTNET, "--method", "gradcam", "--class", "1000", "--out", "x.npy"],
            "class 1000 outside 0..999",
        ),
        (["explain", COFFEE, "--method", "gradcam", "--out", "x.npy"], "has no classifier head"),
        (["probe", COFFEE, "--model", "vit_small_patch14_dinov2"], "no classifier head"),
    ],
)
def test_bad_requests_are_one_line_errors(args, words, tmp_path, capsys):
    # In-process through `main`, the same path as `python -m vitviz`, without a torch start-up each.
    status = main([str(tmp_path / arg) if arg.startswith("x.") else arg for arg in args])
    stderr = capsys.readouterr().err
    assert status == 1
    assert stderr.startswith("error: ") and words in stderr, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr


@pytest.mark.parametrize("command", ["probe", "compare"])
def test_new_commands_have_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out


def test_probe_table_prints_the_random_order_beside_the_salient_curve():
    result = run_cli("probe", COFFEE, "--kind", "drop-salient", "--steps", "5", "--view", "whole")
    assert result.returncode == 0, result.stderr
    assert "fraction  probability  random order" in result.stdout
    assert "(random order: " in result.stdout.splitlines()[-1]
