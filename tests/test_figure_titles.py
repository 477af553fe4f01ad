"""Figure titles fitted to the width they are drawn in: Plotly never wraps a title, and cuts it off."""

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from vitviz.figures.titles import (
    SOFT_BREAK,
    TITLE_LINE_PX,
    WORD_BREAK,
    fit_title,
    fitted_layout,
    text_width_px,
)

LONG_RUN = "fine-tuned run " + "W" * 40 + " (probe from random weights)"


def test_wide_letters_are_measured_wider_than_narrow_ones():
    assert text_width_px("W" * 10, 10) > 2.5 * text_width_px("i" * 10, 10)
    assert text_width_px("<sup>abc</sup>", 10) == text_width_px("abc", 10)  # markup takes no room


def test_a_title_that_fits_is_returned_unchanged():
    title = "Top-5 predictions<br><sup>bundled (offline)</sup>"
    assert fit_title(title, 400, 15) == (title, 0.0)


def test_a_long_subtitle_is_broken_into_small_lines_that_each_fit():
    title = f"Top-5 predictions<br><sup>{LONG_RUN}</sup>"
    fitted, added_px = fit_title(title, 300, 15)
    heading, subtitle = fitted.split("<br>")
    assert heading == "Top-5 predictions" and subtitle.startswith("<sup>") and subtitle.endswith("</sup>")
    lines = subtitle.removeprefix("<sup>").removesuffix("</sup>").split(SOFT_BREAK)
    assert len(lines) >= 3 and all(text_width_px(line, 15 * 0.7) <= 300 for line in lines)
    assert added_px == (len(lines) - 1) * 15 * TITLE_LINE_PX  # each added line as tall as the title's
    # Every word is kept but the one too long for any line, which is cut with an ellipsis.
    words = fitted.replace(SOFT_BREAK, " ")
    assert "<sup>fine-tuned run W" in words and words.endswith("… (probe from random weights)</sup>")
    assert "W" * 40 not in fitted


def test_breaks_it_adds_read_back_as_the_spaces_they_replaced():
    title = "cat (chelsea): attention rollout<br><sup>Rollout of layers 1–11 (layer 0 skipped: sink at patch (2, 8))<br>vit_small_patch14_dinov2 · bundled (offline)</sup>"
    fitted, _ = fit_title(title, 250, 15)
    assert fitted != title and fitted.replace(SOFT_BREAK, " ") == title


def test_a_small_part_spanning_several_lines_is_measured_small_on_each():
    line = "x" * 40  # 24 em: too wide at 15 px in 300 px, narrow enough at 70% of it
    assert fit_title(f"Map<br><sup>first<br>{line}</sup>", 300, 15)[0] == f"Map<br><sup>first<br>{line}</sup>"
    assert fit_title(f"Map<br>first<br>{line}", 300, 15)[0] != f"Map<br>first<br>{line}"


def test_a_figure_layout_gets_its_title_and_subplot_titles_fitted_and_room_above():
    figure = make_subplots(rows=1, cols=2, subplot_titles=["1. " + "W" * 40, "2. short"])
    figure.update_layout(title={"text": f"Maps<br><sup>{LONG_RUN}</sup>"}, height=300, margin={"t": 60})
    layout = figure.to_dict()["layout"]
    fitted = fitted_layout(layout, 400)
    assert fitted is not None and layout["title"]["text"] == f"Maps<br><sup>{LONG_RUN}</sup>"  # a copy
    subplot_px = (layout["xaxis"]["domain"][1] - layout["xaxis"]["domain"][0]) * (400 - 160)
    first = fitted["annotations"][0]["text"]
    assert first != "1. " + "W" * 40 and all(
        text_width_px(line, 16) <= subplot_px for line in first.split(SOFT_BREAK)
    )
    assert fitted["annotations"][1]["text"] == "2. short"
    grown = fitted["margin"]["t"] - 60
    assert grown > 0 and fitted["height"] == 300  # the figure keeps its height: the plot makes room


def test_a_layout_whose_titles_fit_needs_no_copy():
    assert fitted_layout(go.Figure(layout={"title": {"text": "Loss"}}).to_dict()["layout"], 400) is None


def test_a_long_name_breaks_after_an_underscore_and_reads_back_whole():
    title = "3. deit_small_distilled_patch16_224<br>random (untrained)"
    fitted, added_px = fit_title(title, 200, 13)
    first = fitted.split("<br>")[0]
    assert first == f"3. deit_small_distilled_{WORD_BREAK}patch16_224" and added_px == 13 * TITLE_LINE_PX
    assert fitted.replace(WORD_BREAK, "").replace(SOFT_BREAK, " ") == title


def test_an_upright_colour_bar_title_longer_than_its_bar_stands_in_lines_that_fit():
    from vitviz.figures.titles import fitted_colour_bars

    title = "cosine similarity (clipped at the 99th percentile)"
    figure = go.Figure(
        [
            go.Heatmap(z=[[0, 1], [1, 0]], colorbar={"title": {"text": title, "side": "right"}}),
            go.Bar(x=[1], y=[1]),
        ],
        layout={"height": 300, "margin": {"t": 60, "b": 40}},
    )
    spec = figure.to_dict()
    bars = [trace.get("colorbar") for trace in spec["data"]]
    fitted = fitted_colour_bars(bars, spec["layout"])
    assert fitted is not None and bars[0]["title"]["text"] == title  # a copy
    lines = fitted[0]["title"]["text"].split(SOFT_BREAK)
    assert len(lines) == 2 and all(text_width_px(line, 12) <= 300 - 60 - 40 for line in lines)
    assert fitted[1] is None  # a trace without a colour bar is left as it is
    # On a tall figure the same title fits along its bar; a title above the bar is not turned.
    tall = go.Figure(layout={"height": 900}).to_dict()["layout"]
    assert fitted_colour_bars(bars, tall) is None
    assert fitted_colour_bars([{"title": {"text": title, "side": "top"}}], spec["layout"]) is None
