"""Plotly figures of a fine-tune: class counts, loss and accuracy curves, the confusion matrix, few-shot accuracy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["class_counts_figure", "confusion_figure", "few_shot_figure", "training_curves_figure"]

_TRAIN_COLOUR = "#4c78a8"
_VAL_COLOUR = "#f58518"
# Blues written as rgb() stops: Streamlit's theme swaps some hex colours in figures it renders.
_COUNT_COLORSCALE = [[0.0, "rgb(247, 251, 255)"], [0.5, "rgb(107, 174, 214)"], [1.0, "rgb(8, 48, 107)"]]


def _title(text: str) -> dict:
    return {"text": text, "x": 0.0, "xanchor": "left", "font": {"size": 15}}


def class_counts_figure(counts: Mapping[str, int], title: str = "Images per class") -> go.Figure:
    """Bars of images per class."""
    names = list(counts)
    figure = go.Figure(
        go.Bar(
            x=names,
            y=[counts[name] for name in names],
            text=[counts[name] for name in names],
            textposition="auto",
            marker={"color": _TRAIN_COLOUR},
            hovertemplate="%{x}: %{y} images<extra></extra>",
        )
    )
    figure.update_layout(
        title=_title(title),
        height=260,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis={"type": "category"},  # digit classes "0".."9" are names, not numbers
        yaxis={"title": "images"},
    )
    return figure


def training_curves_figure(metrics: Sequence[Mapping[str, float]], epochs: int | None = None) -> go.Figure:
    """Loss (train and validation) and validation accuracy per epoch, side by side.

    Args:
        metrics: metrics.jsonl rows with epoch, train_loss, val_loss, val_acc.
        epochs: the planned number of epochs, to fix the x axis while a run is still going.
    """
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=("Loss", "Validation accuracy"), horizontal_spacing=0.12
    )
    xs = [row["epoch"] for row in metrics]
    curves = (
        (1, "train_loss", "train loss", {"color": _TRAIN_COLOUR}, None),
        (1, "val_loss", "validation loss", {"color": _VAL_COLOUR}, None),
        (
            2,
            "val_acc",
            "validation accuracy",
            {"color": _VAL_COLOUR, "dash": "dot"},
            "epoch %{x}: %{y:.1%}<extra></extra>",
        ),
    )
    for col, field, name, line, hover in curves:
        figure.add_trace(
            go.Scatter(
                x=xs, y=[row[field] for row in metrics], name=name, mode="lines+markers", line=line,
                hovertemplate=hover,
            ),
            row=1, col=col,
        )  # fmt: skip
    last_epoch = max([epochs or 1, *xs, 1])
    for col in (1, 2):
        figure.update_xaxes(
            title_text="epoch", range=[0.5, last_epoch + 0.5], dtick=max(1, last_epoch // 10), row=1, col=col
        )
    figure.update_yaxes(rangemode="tozero", row=1, col=1)
    figure.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    figure.update_layout(
        height=320,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.25, "x": 0.0},
    )
    return figure


def confusion_figure(matrix: np.ndarray, labels: Sequence[str], title: str = "Confusion matrix") -> go.Figure:
    """Counts of (true class, predicted class) on the validation images, numbers in the cells."""
    matrix = np.asarray(matrix)
    figure = go.Figure(
        go.Heatmap(
            z=matrix,
            x=list(labels),
            y=list(labels),
            colorscale=_COUNT_COLORSCALE,
            zmin=0,
            text=matrix.astype(str),
            texttemplate="%{text}",
            hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
            showscale=False,
        )
    )
    size = 120 + 48 * len(labels)
    figure.update_layout(
        title=_title(title),
        height=size,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        # Categories always: class names such as "0".."9" would otherwise make a numeric axis.
        xaxis={"title": "predicted", "side": "bottom", "type": "category"},
        yaxis={"title": "true", "autorange": "reversed", "scaleanchor": "x", "type": "category"},
    )
    return figure


_MODEL_COLOURS = (_TRAIN_COLOUR, _VAL_COLOUR, "#54a24b", "#e45756")


def few_shot_figure(table: Mapping[str, object]) -> go.Figure:
    """Held-out accuracy against shots per class, one line per model, each draw's range as error bars.

    Args:
        table: `vitviz.finetune.fewshot.FewShotTable.as_dict()` (as fewshot.json holds it).
    """
    figure = go.Figure()
    models: Mapping[str, Sequence[Mapping[str, float]]] = table["models"]  # type: ignore[assignment]
    for index, (name, cells) in enumerate(models.items()):
        means = [cell["mean"] for cell in cells]
        figure.add_trace(
            go.Scatter(
                x=[cell["shots"] for cell in cells],
                y=means,
                name=name,
                mode="lines+markers",
                line={"color": _MODEL_COLOURS[index % len(_MODEL_COLOURS)]},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [cell["high"] - mean for cell, mean in zip(cells, means, strict=True)],
                    "arrayminus": [mean - cell["low"] for cell, mean in zip(cells, means, strict=True)],
                },
                hovertemplate=f"{name}<br>%{{x}} shots per class: %{{y:.1%}}<extra></extra>",
            )
        )
    shots = list(table["shots"])  # type: ignore[call-overload]
    figure.update_layout(
        title=_title(
            f"Few-shot linear accuracy on {table['test_images']} held-out images "
            f"(mean and range of {table['draws']} draws)"
        ),
        height=360,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        xaxis={
            "title": "images per class",
            "type": "log",
            "tickvals": shots,
            "ticktext": [str(s) for s in shots],
        },
        yaxis={"title": "accuracy", "tickformat": ".0%", "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.25},
    )
    return figure
