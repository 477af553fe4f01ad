"""Agreement between top-k lists and the Compare figures: one colour scale, marked shared classes."""

import numpy as np
import pytest
from PIL import Image

from vitviz.figures.common import photo_view_figure
from vitviz.figures.compare import (
    AGREE_COLOUR,
    OWN_COLOUR,
    OverlayPanel,
    compare_figure,
    display_image,
    predictions_comparison_figure,
    shared_overlays_figure,
)
from vitviz.maths.agreement import prediction_agreement
from vitviz.predict import Prediction


def _top(*indices: int) -> list[Prediction]:
    return [Prediction(index, f"class {index}", 0.5 / (rank + 1)) for rank, index in enumerate(indices)]


def test_agreement_of_top_one_shared_and_common_classes():
    agreement = prediction_agreement([_top(1, 2, 3), _top(1, 3, 4), _top(1, 5, 3)])
    assert agreement.top1_agree and agreement.top1_index == 1
    assert agreement.shared == {1, 3} and agreement.common == {1, 3}
    two = prediction_agreement([_top(7, 2), _top(2, 9)])
    assert not two.top1_agree and two.shared == {2} and two.common == {2}
    assert not prediction_agreement([_top(1, 2)]).top1_agree  # one model agrees with nobody


def test_shared_classes_are_coloured_and_ticked():
    figure = predictions_comparison_figure([("a", _top(1, 2)), ("b", _top(2, 3))])
    first, second = figure.data
    # Bars run bottom-up: the least probable first.
    assert list(first.marker.color) == [AGREE_COLOUR, OWN_COLOUR]
    assert list(first.y) == ["✓ class 2 (2)", "class 1 (1)"]
    assert list(second.marker.color) == [OWN_COLOUR, AGREE_COLOUR]


def test_overlays_share_one_colour_axis_and_stretch_over_the_whole_picture():
    image = Image.new("RGB", (600, 400), "grey")
    panels = [OverlayPanel("vit", np.eye(16, dtype=np.float32)), OverlayPanel("cnn", np.ones((7, 7)) * 0.5)]
    figure = shared_overlays_figure(image, panels)
    heatmaps = [trace for trace in figure.data if trace.type == "heatmap"]
    assert [trace.coloraxis for trace in heatmaps] == ["coloraxis", "coloraxis"]
    assert (figure.layout.coloraxis.cmin, figure.layout.coloraxis.cmax) == (0.0, 1.0)
    height, width = display_image(image).shape[:2]
    assert (height, width) == (256, 384)  # the picture's own aspect ratio
    for trace, cells in zip(heatmaps, (16, 7), strict=True):
        assert trace.dx * cells == width and trace.dy * cells == height


def test_export_figure_says_when_a_model_has_no_head():
    image = Image.new("RGB", (300, 300), "white")
    panels = [OverlayPanel("dino", np.zeros((4, 4))), OverlayPanel("cnn", np.ones((2, 2)))]
    figure = compare_figure(image, panels, [None, _top(3, 4)], "photo")
    texts = [annotation.text for annotation in figure.layout.annotations]
    assert "no classifier head:<br>no predictions" in texts
    assert "top-1" not in figure.layout.title.text  # one model with a head agrees with nobody
    both = compare_figure(image, panels, [_top(3, 5), _top(3, 4)], "photo")
    assert "top-1 classes agree ✓" in both.layout.title.text


def test_compare_library_modules_never_import_streamlit():
    import subprocess
    import sys

    modules = "vitviz.methods, vitviz.methods.probes, vitviz.methods.faithfulness, vitviz.figures.compare, vitviz.cli.compare"
    code = f"import sys, {modules}; print('streamlit' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_view_boxes_are_drawn_on_the_photo_at_its_display_scale():
    photo = Image.new("RGB", (640, 480))
    figure = photo_view_figure(
        photo, [("model 1", (80.0, 0.0, 560.0, 480.0)), ("model 2", (0.0, 0.0, 640.0, 480.0))], longest=320
    )
    first, second = figure.layout.shapes
    assert first.x0 == 80 * 0.5 - 0.5 and first.x1 == 560 * 0.5 - 0.5  # 640 px shown at 320
    assert second.x0 > -0.5 and second.line.color != first.line.color
    assert [a.text for a in figure.layout.annotations] == ["model 1", "model 2"]


@pytest.mark.parametrize("size", [(6000, 32), (32, 5000)])
def test_view_boxes_of_a_panorama_make_a_figure_plotly_accepts(size):
    """Shown 320 px wide, a 6000×32 photo is 2 px tall; the figure is at least 10 px each way."""
    photo = Image.new("RGB", size)
    figure = photo_view_figure(photo, [("model 1", (0.0, 0.0, *map(float, size)))], longest=320)
    assert figure.layout.width >= 10 and figure.layout.height >= 10
    shown_height, shown_width = display_image(photo, 320).shape[:2]
    assert min(shown_height, shown_width) <= 2  # what Plotly would have refused as the figure's size
    assert figure.layout.xaxis.range == (-0.5, shown_width - 0.5)


def test_a_panel_with_its_own_view_pixels_is_drawn_over_them():
    photo = Image.new("RGB", (640, 480))
    view = np.zeros((224, 224, 3), dtype=np.uint8)
    figure = shared_overlays_figure(photo, [OverlayPanel("m", np.ones((7, 7)), pixels=view)])
    heatmap = next(trace for trace in figure.data if trace.type == "heatmap")
    assert heatmap.dx == 224 / 7 and figure.layout.xaxis.range == (-0.5, 223.5)
