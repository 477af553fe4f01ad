"""Plotly figures of the Compare view: shared-scale overlays, predictions, probe and faithfulness curves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from vitviz.figures.common import MAP_COLORSCALE, png_data_uri, sink_marks
from vitviz.maths.agreement import PredictionAgreement, prediction_agreement
from vitviz.methods import method_title
from vitviz.methods.faithfulness import FaithfulnessResult, RoadResult
from vitviz.methods.probes import ProbeCurve
from vitviz.predict import Prediction
from vitviz.text import clipped

__all__ = [
    "AGREE_COLOUR",
    "DISPLAY_SIDE",
    "SCALE_PERCENTILE",
    "SCALE_TITLE",
    "OverlayPanel",
    "compare_figure",
    "display_image",
    "faithfulness_curves_figure",
    "predictions_comparison_figure",
    "probe_curves_figure",
    "road_curves_figure",
    "shared_overlays_figure",
]

DISPLAY_SIDE = 384  # longest side of the picture shown under every map
# Each map is divided by its own 99th percentile: one outlier cell (DINOv2's high-norm artefact
# tokens) would otherwise darken the rest of its map.
SCALE_PERCENTILE = 99.0
SCALE_TITLE = "relevance (÷ own 99th pct.)"
AGREE_COLOUR = "#e45756"  # a class in the top-k of another model too
OWN_COLOUR = "#4c78a8"
_MODEL_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2")
_FAMILY_DASH = {"vit": "solid", "hybrid": "dot", "cnn": "dash"}
# Dash of the three drop orders, so that each model's random baseline sits beside its salient curves.
_ORDER_DASH = {"drop-salient": "solid", "drop-least-salient": "dot", "drop-random": "dash"}
_FAMILY_WORDS = {"vit": "ViT", "hybrid": "hybrid", "cnn": "CNN"}


@dataclass(frozen=True)
class OverlayPanel:
    """One model's map for the shared-scale row."""

    title: str  # model, method and class, with "(untrained)" for random weights
    values: (
        np.ndarray | None
    )  # (rows, cols) in [0, 1] covering the whole picture; None shows the picture only
    note: str = ""  # shown under the panel, e.g. why there is no map
    pixels: np.ndarray | None = None  # (H, W, 3) uint8 the map lies over (the model's view); None: the photo
    sinks: tuple[tuple[int, int], ...] = ()  # (row, col) of attention-sink cells of `values`, each marked ✕


def display_image(image: Image.Image, side: int = DISPLAY_SIDE) -> np.ndarray:
    """The whole picture at its own aspect ratio, longest side `side`: every map is drawn over it.

    Returns:
        (H, W, 3) uint8.
    """
    rgb = image.convert("RGB")
    scale = side / max(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    return np.asarray(rgb.resize(size, Image.Resampling.BILINEAR))


def _add_overlay(
    figure: go.Figure, pixels: np.ndarray, panel: OverlayPanel, row: int, col: int, opacity: float
) -> None:
    """The picture and, stretched over all of it, one map on the figure's shared colour axis."""
    height, width = pixels.shape[:2]
    figure.add_trace(go.Image(source=png_data_uri(pixels), hoverinfo="skip"), row=row, col=col)
    if panel.values is not None:
        rows, cols = panel.values.shape
        # The map covers the pixels it was made on (the panel's view, or the picture), edge to edge.
        dx, dy = width / cols, height / rows
        figure.add_trace(
            go.Heatmap(
                z=panel.values,
                x0=dx / 2 - 0.5,
                dx=dx,
                y0=dy / 2 - 0.5,
                dy=dy,
                coloraxis="coloraxis",
                opacity=opacity,
                hovertemplate="row %{customdata[0]}, col %{customdata[1]}<br>%{z:.3f}<extra></extra>",
                customdata=np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"), axis=-1),
            ),
            row=row,
            col=col,
        )
        if panel.sinks:
            # The same cross as on Explore's maps.
            figure.add_trace(sink_marks(panel.sinks, (dy, dx)), row=row, col=col)
    figure.update_xaxes(visible=False, range=[-0.5, width - 0.5], row=row, col=col)
    figure.update_yaxes(visible=False, range=[height - 0.5, -0.5], row=row, col=col)


def _shared_colour_axis(figure: go.Figure, colorbar_title: str) -> None:
    figure.update_layout(
        coloraxis={
            "colorscale": MAP_COLORSCALE,
            "cmin": 0.0,
            "cmax": 1.0,
            "colorbar": {"title": {"text": colorbar_title, "side": "right"}, "thickness": 14, "len": 0.9},
        }
    )


def shared_overlays_figure(
    image: Image.Image,
    panels: Sequence[OverlayPanel],
    opacity: float = 0.6,
    colorbar_title: str = SCALE_TITLE,
) -> go.Figure:
    """Each model's map over the same picture, side by side, on one colour scale from 0 to 1.

    Args:
        image: the picture every model explained.
        panels: one per model, maps already scaled to [0, 1].
        opacity: opacity of the maps.
        colorbar_title: title of the single colour bar.
    """
    pixels = display_image(image)
    count = max(1, len(panels))
    figure = make_subplots(
        rows=1, cols=count, subplot_titles=[panel.title for panel in panels], horizontal_spacing=0.03
    )
    for index, panel in enumerate(panels, start=1):
        shown = pixels if panel.pixels is None else panel.pixels
        _add_overlay(figure, shown, panel, 1, index, opacity)
        if panel.note:
            x_domain = figure.layout[f"xaxis{index if index > 1 else ''}"].domain
            figure.add_annotation(
                text=panel.note,
                xref="paper",
                yref="paper",
                x=sum(x_domain) / 2,
                y=0.5 if panel.values is None else 0.04,  # over a drawn map, at its foot
                showarrow=False,
                font={"color": "white", "size": 13},
                bgcolor="rgba(0,0,0,0.65)",
            )
    _shared_colour_axis(figure, colorbar_title)
    if any(panel.pixels is not None for panel in panels):
        pixels = next(panel.pixels for panel in panels if panel.pixels is not None)
    height, width = pixels.shape[:2]
    panel_height = 360 * height / width if width >= height else 360
    figure.update_layout(
        height=round(panel_height + 80), margin={"l": 0, "r": 0, "t": 60, "b": 10}, dragmode=False
    )
    figure.update_annotations(font_size=13, selector={"xref": "paper"})
    return figure


def predictions_comparison_figure(columns: Sequence[tuple[str, Sequence[Prediction]]]) -> go.Figure:
    """Top-k bars of each model side by side; classes another model also lists are marked.

    Args:
        columns: (title, top-k predictions) per model with a classifier head.
    """
    agreement = prediction_agreement([predictions for _, predictions in columns])
    count = max(1, len(columns))
    titles = []
    for title, predictions in columns:
        top_mark = " · top-1 agrees ✓" if agreement.top1_agree and predictions else ""
        titles.append(title + top_mark)
    figure = make_subplots(rows=1, cols=count, subplot_titles=titles, horizontal_spacing=0.12)
    longest = 1
    for index, (_, predictions) in enumerate(columns, start=1):
        longest = max(longest, len(predictions))
        figure.add_trace(
            _agreement_bars(
                predictions,
                agreement,
                label_limit=28,
                percent_format=".1%",
                hovertemplate="%{y}: %{x:.2%}<extra></extra>",
            ),
            row=1,
            col=index,
        )
        figure.update_xaxes(range=[0, 1], tickformat=".0%", row=1, col=index)
        figure.update_yaxes(automargin=True, row=1, col=index)
    figure.update_layout(
        height=150 + 30 * longest,
        margin={"l": 10, "r": 10, "t": 50, "b": 80},
        annotations=[
            *figure.layout.annotations,
            go.layout.Annotation(
                text=f"<span style='color:{AGREE_COLOUR}'>■ ✓</span> also in another model's top-k",
                xref="paper",
                yref="paper",
                x=0.0,
                y=0,
                yshift=-40,  # below the tick labels, whatever the figure's height
                yanchor="top",
                showarrow=False,
                font={"size": 12},
            ),
        ],
    )
    figure.update_annotations(font_size=13, selector={"yref": "paper", "y": 1.0})
    return figure


def _agreement_bars(
    predictions: Sequence[Prediction],
    agreement: PredictionAgreement,
    label_limit: int,
    percent_format: str,
    hovertemplate: str | None = None,
) -> go.Bar:
    """Horizontal top-k bars, most probable on top; classes another model also lists are marked ✓."""
    ordered = list(reversed(list(predictions)))
    shared = [p.index in agreement.shared for p in ordered]
    return go.Bar(
        x=[p.probability for p in ordered],
        y=[
            f"{'✓ ' if is_shared else ''}{_short(p.label, label_limit)} ({p.index})"
            for p, is_shared in zip(ordered, shared, strict=True)
        ],
        orientation="h",
        text=[f"{p.probability:{percent_format}}" for p in ordered],
        textposition="auto",
        marker={"color": [AGREE_COLOUR if is_shared else OWN_COLOUR for is_shared in shared]},
        hovertemplate=hovertemplate,
        showlegend=False,
    )


def _short(label: str, limit: int = 28) -> str:
    return clipped(label.split(",")[0], limit)


def _model_words(model: str, family: str, trained: bool) -> str:
    return f"{model} ({_FAMILY_WORDS.get(family, family)}{'' if trained else ', untrained'})"


def probe_curves_figure(curves: Sequence[ProbeCurve], title: str = "") -> go.Figure:
    """Target-class probability against the perturbed fraction, one line per model and probe.

    Colour tells models apart. The dash tells the drop orders apart when the curves are drop
    probes (solid most salient first, dotted least salient first, dashed random: the baseline),
    else the family (solid ViT, dotted hybrid, dashed CNN). Each legend entry ends with the area.
    """
    drops = bool(curves) and all(curve.kind in _ORDER_DASH for curve in curves)
    figure = go.Figure()
    colours: dict[str, str] = {}
    for curve in curves:
        colour = colours.setdefault(curve.model, _MODEL_COLOURS[len(colours) % len(_MODEL_COLOURS)])
        how = curve.kind + (f" by {method_title(curve.method)}" if curve.method else "")
        if curve.removed_tokens:
            how += ", tokens removed"
        figure.add_trace(
            go.Scatter(
                x=curve.fractions,
                y=curve.target_probability,
                mode="lines+markers",
                name=f"{_model_words(curve.model, curve.family, curve.trained)} · {how} · area {curve.area:.3f}",
                line={
                    "color": colour,
                    "dash": _ORDER_DASH[curve.kind] if drops else _FAMILY_DASH.get(curve.family, "solid"),
                    "width": 2.5,
                },
                hovertemplate=f"{curve.target_label}<br>fraction %{{x:.2f}}: %{{y:.3f}}<extra></extra>",
            )
        )
    figure.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 15}},
        xaxis={"title": "fraction perturbed", "range": [0, 1]},
        yaxis={"title": "target-class probability", "rangemode": "tozero"},
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0.0},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        height=440 + 22 * len(curves),
    )
    return figure


def _curve(x: np.ndarray, y: np.ndarray, name: str, colour: str, dash: str, hover: str) -> go.Scatter:
    """One curve of a faithfulness figure: solid (the method's order) drawn heavier than its baselines."""
    return go.Scatter(
        x=x,
        y=y,
        mode="lines+markers",
        name=name,
        line={"color": colour, "dash": dash, "width": 2.5 if dash == "solid" else 1.8},
        hovertemplate=hover,
    )


def faithfulness_curves_figure(results: Sequence[FaithfulnessResult]) -> go.Figure:
    """Deletion (left) and insertion (right) curves, one line per model and method, with baselines.

    Solid: most salient first. Dotted (deletion): least salient first. Dashed grey-toned: a random
    order, once per model; every legend entry ends with its area.
    """
    figure = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=[
            "Deletion: most salient greyed first (lower is better)",
            "Insertion: most salient restored first (higher is better)",
        ],
    )
    colours: dict[tuple[str, str], str] = {}
    baselines: set[str] = set()
    for result in results:
        key = (result.model, result.method)
        colour = colours.setdefault(key, _MODEL_COLOURS[len(colours) % len(_MODEL_COLOURS)])
        model = f"{result.model}{'' if result.trained else ' (untrained)'}"
        name = f"{model} · {method_title(result.method)}"
        lines = [
            (1, result.deletion, f"{name} · most salient first", "solid", result.deletion_auc),
            (
                1,
                result.least_first_deletion,
                f"{name} · least salient first",
                "dot",
                result.least_first_deletion_auc,
            ),
            (2, result.insertion, f"{name} · most salient first", "solid", result.insertion_auc),
        ]
        if result.model not in baselines:  # the random order is the same for every method of a model
            baselines.add(result.model)
            lines += [
                (1, result.random_deletion, f"{model} · random order", "dash", result.random_deletion_auc),
                (2, result.random_insertion, f"{model} · random order", "dash", result.random_insertion_auc),
            ]
        for col, values, label, dash, area in lines:
            side = "deletion" if col == 1 else "insertion"
            figure.add_trace(
                _curve(
                    result.fractions,
                    values,
                    f"{side}: {label} · area {area:.3f}",
                    colour,
                    dash,
                    f"{label}<br>%{{x:.2f}}: %{{y:.3f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    figure.update_xaxes(title="fraction of patches", range=[0, 1])
    figure.update_yaxes(title="target-class probability", rangemode="tozero", col=1)
    figure.update_yaxes(rangemode="tozero", col=2)
    figure.update_layout(
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0.0},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        height=420 + 66 * len(results),
    )
    return figure


def road_curves_figure(results: Sequence[RoadResult]) -> go.Figure:
    """ROAD: the target probability as a growing share of pixels is imputed, one colour per model and
    method. Solid: most relevant first (lower is better); dotted: least relevant first (higher is
    better); dashed: the random order, once per model. Each legend entry ends with its mean.
    """
    figure = go.Figure()
    colours: dict[tuple[str, str], str] = {}
    baselines: set[str] = set()
    for result in results:
        colour = colours.setdefault(
            (result.model, result.method), _MODEL_COLOURS[len(colours) % len(_MODEL_COLOURS)]
        )
        model = f"{result.model}{'' if result.trained else ' (untrained)'}"
        name = f"{model} · {method_title(result.method)}"
        lines = [
            (result.most_relevant_first, f"{name} · most relevant first", "solid"),
            (result.least_relevant_first, f"{name} · least relevant first", "dot"),
        ]
        if result.model not in baselines:  # the random order is the same for every method of a model
            baselines.add(result.model)
            lines.append((result.random_order, f"{model} · random order", "dash"))
        for values, label, dash in lines:
            figure.add_trace(
                _curve(
                    result.removed,
                    values,
                    f"{label} · mean {float(np.mean(values)):.3f}",
                    colour,
                    dash,
                    f"{label}<br>%{{x:.0%}} imputed: %{{y:.3f}}<extra></extra>",
                )
            )
    figure.update_xaxes(
        title="fraction of pixels imputed from their neighbours", range=[0, 1], tickformat=".0%"
    )
    figure.update_yaxes(title="target-class probability", rangemode="tozero")
    figure.update_layout(
        title={"text": "ROAD: pixels imputed, most or least relevant first", "font": {"size": 13}},
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0.0},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        height=380 + 44 * len(results),
    )
    return figure


def compare_figure(
    image: Image.Image,
    panels: Sequence[OverlayPanel],
    predictions: Sequence[Sequence[Prediction] | None],
    title: str,
    opacity: float = 0.6,
    colorbar_title: str = SCALE_TITLE,
) -> go.Figure:
    """One figure for export: maps on one scale over the picture (top), each model's top-k (bottom).

    Args:
        image: the picture.
        panels: one per model.
        predictions: each model's top-k, or None for a model without a classifier head.
        title: figure title.
    """
    count = max(1, len(panels))
    pixels = display_image(image)
    # Rows sized in pixels: a panel is about 300 px wide, so a wide picture needs a short top row.
    image_row = 300 * pixels.shape[0] / pixels.shape[1]
    longest = max([len(items) for items in predictions if items] or [1])
    bars_row = 40 + 34 * longest
    height = round(image_row + bars_row + 230)
    figure = make_subplots(
        rows=2,
        cols=count,
        row_heights=[image_row, bars_row],
        vertical_spacing=90 / height,
        horizontal_spacing=0.14,
        subplot_titles=[panel.title for panel in panels] + [""] * count,
    )
    for index, panel in enumerate(panels, start=1):
        _add_overlay(figure, pixels if panel.pixels is None else panel.pixels, panel, 1, index, opacity)
    agreement = prediction_agreement([p for p in predictions if p])
    for index, items in enumerate(predictions, start=1):
        if not items:
            # Paper coordinates: an axis with no trace is not drawn, so its domain cannot anchor text.
            x_domain = figure.layout[f"xaxis{count + index}"].domain
            y_domain = figure.layout[f"yaxis{count + index}"].domain
            figure.add_annotation(
                text="no classifier head:<br>no predictions",
                xref="paper",
                yref="paper",
                x=sum(x_domain) / 2,
                y=sum(y_domain) / 2,
                showarrow=False,
                font={"size": 14},
            )
            figure.update_xaxes(visible=False, row=2, col=index)
            figure.update_yaxes(visible=False, row=2, col=index)
            continue
        figure.add_trace(
            _agreement_bars(items, agreement, label_limit=20, percent_format=".0%"), row=2, col=index
        )
        figure.update_xaxes(range=[0, 1], tickformat=".0%", row=2, col=index)
    _shared_colour_axis(figure, colorbar_title)
    figure.update_layout(
        coloraxis_colorbar={"len": image_row / (image_row + bars_row), "y": 1.0, "yanchor": "top"}
    )
    compared = sum(1 for items in predictions if items)
    agree_text = ""
    if compared >= 2:
        agree_text = " · top-1 classes agree ✓" if agreement.top1_agree else " · top-1 classes differ"
    figure.update_layout(
        title={
            "text": f"{title}{agree_text} · <span style='color:{AGREE_COLOUR}'>✓</span> = also in "
            "another model's top-k",
            "x": 0.01,
            "y": 0.985,
            "yanchor": "top",
        },
        width=430 * count + 120,
        height=height,
        margin={"l": 10, "r": 10, "t": 120, "b": 20},
    )
    return figure
