"""The HTML report: one self-contained file per folder, bad files listed, progress on stderr."""

import re
import shutil

import pytest
from plotly.offline import get_plotlyjs

from vitviz.cli.main import main
from vitviz.figures.report import build_report, render_report
from vitviz.images import BUILTIN_PHOTOS
from vitviz.models import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    shutil.copy(BUILTIN_PHOTOS["coffee"], folder / "coffee.png")
    shutil.copy(BUILTIN_PHOTOS["cat (chelsea)"], folder / "chelsea.png")
    (folder / "holiday.jpg").write_text("this is not a photo")
    (folder / ".hidden.png").write_text("skipped silently")
    (folder / "subfolder").mkdir()
    return folder


def _outside_plotlyjs(html: str) -> str:
    """The report without the inline plotly.js bundle (which carries URL strings it never loads)."""
    bundle = get_plotlyjs()
    assert html.count(bundle) == 1, "plotly.js must be inline exactly once"
    return html.replace(bundle, "")


def test_cli_report_for_a_cnn_is_self_contained_with_predictions_and_skips(photo_folder, tmp_path, capsys):
    out = tmp_path / "nested" / "report.html"
    status = main(["report", str(photo_folder), "--model", "tf_efficientnet_lite0", "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 0
    assert captured.out.strip() == f"wrote {out}: 2 images, 1 skipped"
    assert captured.err.splitlines() == [
        "[1/3] chelsea.png: ok",
        "[2/3] coffee.png: ok",
        "[3/3] holiday.jpg: skipped (This file is not an image in a format this app can read "
        "(PNG, JPEG, WebP, GIF, BMP or TIFF).)",
    ]
    html = out.read_text(encoding="utf-8")
    rest = _outside_plotlyjs(html)
    assert not re.search(r"<script[^>]*\bsrc=", html) and "<link" not in rest
    assert not re.search(r"https?://", rest), "the report must open without a network"
    assert rest.count("data:image/jpeg;base64,") == 2  # one thumbnail per image
    assert "<h2>chelsea.png</h2>" in rest and "<h2>coffee.png</h2>" in rest
    # EfficientNet-Lite0's real top classes for the two photos.
    assert re.search(r'<td class="label">espresso</td><td class="index">967</td>', rest)
    assert re.search(r'<td class="label">(tiger cat|tabby, tabby cat)</td>', rest)
    assert "<b>holiday.jpg</b>: This file is not an image" in rest
    assert ".hidden.png" not in rest and "subfolder" not in rest
    assert "tf_efficientnet_lite0" in rest and "num classes" in rest  # the model's facts
    assert "Random, untrained" not in rest and "(untrained)" not in rest


def test_rollout_report_for_dinov2_says_it_has_no_classifier(photo_folder):
    report = build_report(photo_folder, load_model("vit_small_patch14_dinov2", "bundled"))
    html = _outside_plotlyjs(render_report(report))
    assert [entry.name for entry in report.images] == ["chelsea.png", "coffee.png", "holiday.jpg"]
    assert all(entry.map_figure is not None for entry in report.images[:2])
    # The bundled DINOv2's layer 0 is captured by a sink patch on both photos: rollout starts after it.
    # (the title sits in the figure's JSON, which writes the en dash as \u2013)
    assert html.count("(layer 0 skipped: sink at patch") == 2
    assert html.count("has no classifier head, so it makes no predictions") == 2
    assert "Top-5 predictions" not in html


def test_random_weights_are_labelled_untrained_in_the_report(photo_folder):
    report = build_report(photo_folder, load_model("tf_efficientnet_lite0", "random"), topk=3)
    html = render_report(report)
    assert "Random, untrained weights" in html and "Top-3 predictions (untrained)" in html
    assert "random (untrained)" in html  # in the title


def test_a_missing_folder_is_one_line_and_exit_status_one(tmp_path, capsys):
    status = main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r.html")])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.err.strip() == f"error: {tmp_path / 'nope'} is not a folder"
    assert not (tmp_path / "r.html").exists()


def test_an_empty_folder_is_an_error_not_an_empty_report(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")]) == 1
    assert "has no files" in capsys.readouterr().err
