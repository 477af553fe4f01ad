"""The Anatomy commands of the CLI (vitviz.cli.anatomy): posembed, attention-distance, filters."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vitviz.forward.distance import attention_distances_over_images
from vitviz.images import BUILTIN_PHOTOS, builtin_photo
from vitviz.maths.posembed import (
    grid_position_embedding,
    position_similarity,
)
from vitviz.preprocess import image_view

CAT, COFFEE = str(BUILTIN_PHOTOS["cat (chelsea)"]), str(BUILTIN_PHOTOS["coffee"])


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vitviz", *args], capture_output=True, text=True, env=env, timeout=300
    )


def assert_one_line_error(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_posembed_saves_the_grid_similarity(tmp_path, dinov2):
    out = tmp_path / "sim.npy"
    result = run_cli("posembed", "--out", str(out))
    assert result.returncode == 0, result.stderr
    similarity = np.load(out)
    assert similarity.shape == (256, 256) and similarity.dtype == np.float32
    expected = position_similarity(grid_position_embedding(dinov2.model, dinov2.facts))
    np.testing.assert_allclose(similarity, expected, atol=1e-6)
    assert "16×16 grid" in result.stdout


@pytest.mark.slow
def test_cli_attention_distance_writes_one_row_per_layer_and_head(tmp_path, dinov2):
    out = tmp_path / "d.csv"
    result = run_cli("attention-distance", CAT, COFFEE, "--batch-size", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    with out.open() as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["layer", "head", "mean_distance_px"]
    assert [(int(row["layer"]), int(row["head"])) for row in rows] == [
        (layer, head) for layer in range(12) for head in range(6)
    ]
    values = np.array([float(row["mean_distance_px"]) for row in rows]).reshape(12, 6)
    expected = attention_distances_over_images(
        dinov2,
        [
            image_view(builtin_photo("cat (chelsea)"), dinov2.facts),
            image_view(builtin_photo("coffee"), dinov2.facts),
        ],
    )
    np.testing.assert_allclose(values, expected.mean, atol=1e-3)
    progress = [line for line in result.stderr.splitlines() if line.startswith("attention distance:")]
    assert len(progress) == 24 and progress[-1] == "attention distance: 24/24 layer passes (100%)"


@pytest.mark.slow
def test_cli_filters_writes_the_tile_picture(tmp_path):
    out = tmp_path / "pcs.png"
    result = run_cli("filters", "--out", str(out))
    assert result.returncode == 0, result.stderr
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.mode == "RGB"
        assert picture.size == (7 * 58 + 2, 4 * 58 + 2)  # 4 rows of 7 tiles, 14 px × 4, 2-px gaps
    assert "28 principal components of 384 14×14 filters" in result.stdout


@pytest.mark.slow
def test_cli_bad_input_is_one_line(tmp_path):
    assert_one_line_error(
        run_cli("posembed", "--model", "tf_efficientnet_lite0", "--out", str(tmp_path / "s.npy"))
    )
    assert_one_line_error(
        run_cli(
            "filters",
            "--model",
            "vit_tiny_r_s16_p8_224",
            "--weights",
            "random",
            "--out",
            str(tmp_path / "f.png"),
        )
    )
    bad = tmp_path / "holiday.jpg"
    bad.write_text("not a photo")
    assert_one_line_error(run_cli("attention-distance", str(bad), "--out", str(tmp_path / "d.csv")))
    assert not (tmp_path / "s.npy").exists() and not (tmp_path / "d.csv").exists()
