"""The command line, run as users run it: `python -m vitviz ...` in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vitviz.images import BUILTIN_PHOTOS
from vitviz.preprocess import image_view

CAT = str(BUILTIN_PHOTOS["cat (chelsea)"])
COFFEE = str(BUILTIN_PHOTOS["coffee"])
BAD_IMAGES = Path(__file__).parent / "data" / "bad_images"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vitviz", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_predict_json_lists_each_image_with_its_top_k():
    result = run_cli("predict", CAT, COFFEE, "--model", "tf_efficientnet_lite0", "--topk", "3", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [entry["image"] for entry in payload] == [CAT, COFFEE]
    cat_predictions = payload[0]["predictions"]
    assert len(cat_predictions) == 3
    assert set(cat_predictions[0]) == {"index", "label", "probability"}
    assert cat_predictions[0]["index"] in range(281, 286)
    assert 0.0 < cat_predictions[0]["probability"] <= 1.0


def test_predict_table_is_readable():
    result = run_cli("predict", CAT, "--model", "tf_efficientnet_lite0", "--topk", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == CAT and len(lines) == 3 and "%" in lines[1]


def test_explain_rollout_saves_a_map_over_the_token_grid(tmp_path):
    out = tmp_path / "map.npy"
    result = run_cli(
        "explain", CAT, "--model", "vit_small_patch14_dinov2", "--method", "rollout", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    values = np.load(out)
    assert values.shape == (16, 16) and values.dtype == np.float32
    assert np.all(values > 0)


def test_explain_attention_of_one_layer_and_head_matches_the_library(tmp_path):
    from vitviz.forward.attention import record_attention
    from vitviz.images import load_image_file
    from vitviz.maths.attention import class_attention_map
    from vitviz.models import load_model

    out = tmp_path / "attention.npy"
    result = run_cli(
        "explain", CAT, "--method", "attention", "--layer", "3", "--head", "2", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    loaded = load_model("vit_small_patch14_dinov2", "bundled")
    record = record_attention(loaded, image_view(load_image_file(CAT), loaded.facts))
    np.testing.assert_allclose(np.load(out), class_attention_map(record, 3, 2), rtol=1e-4, atol=1e-6)


def test_explain_attention_reads_the_layer_and_head_asked_for_on_a_mobilevit(tmp_path):
    from vitviz.images import load_image_file
    from vitviz.methods import explanation_map
    from vitviz.models import load_model

    out = tmp_path / "attention.npy"
    args = ("explain", CAT, "--model", "mobilevit_xxs", "--weights", "random", "--method", "attention")
    result = run_cli(*args, "--layer", "-1", "--head", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    loaded = load_model("mobilevit_xxs", "random")
    expected = explanation_map(
        loaded, image_view(load_image_file(CAT), loaded.facts), "attention", layer=-1, head=1
    )
    assert expected.grid_size == loaded.facts.stage_grids[-1] and "head 1" in expected.source
    np.testing.assert_allclose(np.load(out), expected.values, rtol=1e-4, atol=1e-7)
    beyond = run_cli(*args, "--layer", "9", "--out", str(tmp_path / "m.npy"))
    assert beyond.returncode == 1
    assert beyond.stderr.strip() == "error: attention layer 9 outside -9..8"


@pytest.mark.parametrize("bad", ["not_an_image.txt", "empty.png", "truncated.png", "bomb_30000x30000.png"])
def test_bad_image_exits_non_zero_with_one_line(bad):
    result = run_cli("predict", str(BAD_IMAGES / bad), "--model", "tf_efficientnet_lite0")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_unknown_model_and_bad_layer_are_one_line_errors(tmp_path):
    missing = run_cli("predict", str(tmp_path / "nope.jpg"))
    unknown = run_cli("predict", CAT, "--model", "not_a_model")
    bad_layer = run_cli(
        "explain", CAT, "--method", "attention", "--layer", "40", "--out", str(tmp_path / "m.npy")
    )
    for result, words in [
        (missing, "nope.jpg"),
        (unknown, "no model named"),
        (bad_layer, "--layer 40 is outside -12..11"),
    ]:
        assert result.returncode == 1
        assert result.stderr.startswith("error: ") and words in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1


def test_explain_into_a_folder_is_refused_and_nothing_is_written(tmp_path):
    result = run_cli("explain", CAT, "--model", "test_vit", "--weights", "random", "--out", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "is a folder" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_explain_says_the_path_it_really_wrote(tmp_path):
    result = run_cli(
        "explain", CAT, "--model", "test_vit", "--weights", "random", "--out", str(tmp_path / "map")
    )
    assert result.returncode == 0, result.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["map.npy"]
    assert result.stdout.rstrip().split(" to ", 1)[1].startswith(str(tmp_path / "map.npy"))


def test_a_negative_layer_out_of_range_is_reported_as_given_with_the_valid_range(tmp_path):
    result = run_cli(
        "explain", CAT, "--method", "attention", "--layer", "-99", "--out", str(tmp_path / "m.npy")
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --layer -99 is outside -12..11 (the model has 12 layers)."


def test_a_legacy_checkpoint_fails_with_one_line_and_no_torch_warning(tmp_path):
    import torch

    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False, pickle_protocol=5)
    result = run_cli("predict", CAT, "--model", "test_vit", "--weights", str(legacy))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: legacy.pth"), result.stderr


def test_a_cnn_has_no_attention_to_explain(tmp_path):
    result = run_cli("explain", CAT, "--model", "tf_efficientnet_lite0", "--out", str(tmp_path / "m.npy"))
    assert result.returncode == 1 and "no attention" in result.stderr


@pytest.mark.parametrize("command", [[], ["predict"], ["explain"], ["prepare-weights"]])
def test_every_command_has_help(command):
    result = run_cli(*command, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("view", ["crop", "whole"])
def test_predict_and_explain_use_the_view_asked_for(tmp_path, view):
    from vitviz.forward.attention import record_attention
    from vitviz.images import builtin_photo
    from vitviz.maths.attention import rollout_relevance
    from vitviz.models import load_model
    from vitviz.predict import predict

    predicted = run_cli("predict", CAT, "--model", "tf_efficientnet_lite0", "--view", view, "--json")
    assert predicted.returncode == 0, predicted.stderr
    cnn = load_model("tf_efficientnet_lite0", "bundled")
    expected = predict(cnn, [image_view(builtin_photo("cat (chelsea)"), cnn.facts, view)])[0]
    got = json.loads(predicted.stdout)[0]["predictions"]
    assert [p["index"] for p in got] == [p.index for p in expected]
    assert got[0]["probability"] == pytest.approx(expected[0].probability, rel=1e-4)

    out = tmp_path / "rollout.npy"
    explained = run_cli("explain", CAT, "--method", "rollout", "--view", view, "--out", str(out))
    assert explained.returncode == 0, explained.stderr
    dino = load_model("vit_small_patch14_dinov2", "bundled")
    record = record_attention(dino, image_view(builtin_photo("cat (chelsea)"), dino.facts, view))
    np.testing.assert_allclose(np.load(out), rollout_relevance(record), rtol=1e-4, atol=1e-7)


def test_the_crop_and_whole_views_see_the_cat_differently(tmp_path):
    crop, whole = tmp_path / "crop.npy", tmp_path / "whole.npy"
    for view, out in (("crop", crop), ("whole", whole)):
        result = run_cli(
            "explain", CAT, "--method", "attention", "--layer", "5", "--view", view, "--out", str(out)
        )
        assert result.returncode == 0, result.stderr
    assert np.load(crop).shape == np.load(whole).shape == (16, 16)
    assert not np.allclose(np.load(crop), np.load(whole))


def test_explain_rollout_can_keep_the_sinks(tmp_path):
    kept, left_out = tmp_path / "raw.npy", tmp_path / "default.npy"
    assert (
        run_cli("explain", CAT, "--method", "rollout", "--sinks", "raw", "--out", str(kept)).returncode == 0
    )
    assert run_cli("explain", CAT, "--method", "rollout", "--out", str(left_out)).returncode == 0
    raw, default = np.load(kept), np.load(left_out)
    # Measured: the raw map's peak is the layer-0 sink patch, many times its median cell.
    assert raw.max() / np.median(raw) > 3 * (default.max() / np.median(default))


def test_explain_attnlrp_takes_its_gammas_and_legrad_its_layers(tmp_path):
    out = tmp_path / "lrp.npy"
    random_deit = ("--model", "deit_tiny_patch16_224", "--weights", "random")
    result = run_cli("explain", CAT, *random_deit, "--method", "attnlrp", "--class", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (
        "attnlrp map on the 14 × 14 grid (rows × columns) for class 3" in result.stdout
        and "untrained" in result.stdout
    )
    assert np.load(out).shape == (14, 14)
    refused = run_cli(
        "explain", CAT, *random_deit, "--method", "attnlrp", "--linear-gamma", "-1", "--out", str(out)
    )
    assert refused.returncode == 1 and "linear_gamma must be a finite number ≥ 0" in refused.stderr
    refused = run_cli(
        "explain", CAT, *random_deit, "--method", "legrad", "--start-layer", "12", "--out", str(out)
    )
    assert refused.returncode == 1 and "start layer 12 outside 0..11" in refused.stderr
