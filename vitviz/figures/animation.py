"""Attention across layers as an animation: a Plotly figure with frames, or an animated GIF."""

from __future__ import annotations

import io
import re

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont

from vitviz.figures.common import MAP_COLORSCALE, PATCH_CENTRES_NAME, attention_overlay_figure

__all__ = ["apply_colormap", "attention_animation_figure", "attention_animation_gif", "normalise_per_layer"]

_RGB = re.compile(r"rgb\((\d+),\s*(\d+),\s*(\d+)\)")


def _colormap_stops() -> tuple[np.ndarray, np.ndarray]:
    """MAP_COLORSCALE as positions (K,) and colours (K, 3)."""
    positions = np.array([float(stop) for stop, _ in MAP_COLORSCALE])
    colours = []
    for _, colour in MAP_COLORSCALE:
        match = _RGB.fullmatch(str(colour))
        assert match is not None, f"MAP_COLORSCALE colours must be rgb() strings, got {colour!r}"
        colours.append([int(channel) for channel in match.groups()])
    return positions, np.array(colours, dtype=np.float64)


def apply_colormap(values: np.ndarray) -> np.ndarray:
    """Colours values in [0, 1] with the app's map colours (MAP_COLORSCALE), linearly between stops.

    Args:
        values: array of any shape; values outside [0, 1] are clipped.

    Returns:
        uint8 array of shape values.shape + (3,).
    """
    positions, colours = _colormap_stops()
    clipped = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    channels = [np.interp(clipped, positions, colours[:, channel]) for channel in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def normalise_per_layer(maps_per_layer: np.ndarray) -> np.ndarray:
    """Divides each layer's map by its own maximum, so every frame uses the whole colour range.

    Attention in early layers is spread thin and in late layers peaked; one shared scale would
    leave most frames dark.

    Args:
        maps_per_layer: (layers, rows, cols) non-negative maps.

    Returns:
        (layers, rows, cols) float32 in [0, 1]; an all-zero layer stays zero.
    """
    maps = np.asarray(maps_per_layer, dtype=np.float32)
    assert maps.ndim == 3, f"expected (layers, rows, cols), got shape {maps.shape}"
    peaks = maps.reshape(len(maps), -1).max(axis=1)  # (layers,)
    return maps / np.where(peaks > 0, peaks, 1.0)[:, None, None]


def attention_animation_figure(
    pixels: np.ndarray,
    maps_per_layer: np.ndarray,
    stride_px: tuple[int, int],
    title: str,
    opacity: float = 0.6,
    frame_ms: int = 700,
    active: int = 0,
) -> go.Figure:
    """One attention map per layer over the image, with ▶ Play / ❚❚ Pause buttons and a layer slider.

    Args:
        pixels: (H, W, 3) uint8 image at the model's input size.
        maps_per_layer: (layers, rows, cols) maps over the token grid, layer 0 first.
        stride_px: input pixels between neighbouring tokens.
        title: figure title; each frame appends "· layer k".
        opacity: opacity of the maps over the image.
        frame_ms: how long each layer shows while playing.
        active: the layer shown first (the slider starts on it; ▶ plays on from it).
    """
    maps = normalise_per_layer(maps_per_layer)
    assert 0 <= active < len(maps), f"active layer {active} outside 0..{len(maps) - 1}"
    figure = attention_overlay_figure(
        pixels,
        maps[active],
        stride_px,
        f"{title} · layer {active}",
        opacity=opacity,
        colorbar_title="÷ layer max",
    )
    # Hover values of the clickable patch centres would go stale in later frames: leave them out.
    figure.data = [trace for trace in figure.data if trace.name != PATCH_CENTRES_NAME]
    heatmap_index = next(index for index, trace in enumerate(figure.data) if isinstance(trace, go.Heatmap))
    figure.update_traces(zmin=0.0, zmax=1.0, selector={"type": "heatmap"})
    figure.frames = [
        go.Frame(
            data=[go.Heatmap(z=layer_map)],
            traces=[heatmap_index],
            name=str(layer),
            layout={"title": {"text": f"{title} · layer {layer}"}},
        )
        for layer, layer_map in enumerate(maps)
    ]
    still = {"frame": {"duration": 0, "redraw": True}, "mode": "immediate", "transition": {"duration": 0}}
    figure.update_layout(
        margin={"l": 0, "r": 0, "t": 40, "b": 120},
        updatemenus=[
            {
                "type": "buttons",
                "direction": "left",
                "x": 0.0,
                "y": -0.02,
                "xanchor": "left",
                "yanchor": "top",
                "pad": {"t": 10, "r": 10},
                "showactive": False,
                "buttons": [
                    {
                        "label": "▶ Play",
                        "method": "animate",
                        "args": [
                            None,
                            {
                                "frame": {"duration": frame_ms, "redraw": True},
                                "fromcurrent": True,
                                "transition": {"duration": 0},
                            },
                        ],
                    },
                    {"label": "❚❚ Pause", "method": "animate", "args": [[None], still]},
                ],
            }
        ],
        sliders=[
            {
                "active": active,
                "x": 0.2,
                "len": 0.8,
                "y": -0.02,
                "yanchor": "top",
                "pad": {"t": 10},
                "currentvalue": {"prefix": "layer ", "visible": True},
                "steps": [
                    {"label": str(layer), "method": "animate", "args": [[str(layer)], still]}
                    for layer in range(len(maps))
                ],
            }
        ],
    )
    return figure


def _upsample(grid_map: np.ndarray, stride_px: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """A (rows, cols) map as (H, W): each token fills its stride_px cell, edges padded to `size`."""
    cells = np.repeat(np.repeat(grid_map, stride_px[0], axis=0), stride_px[1], axis=1)
    height, width = size
    pad_y, pad_x = max(0, height - cells.shape[0]), max(0, width - cells.shape[1])
    return np.pad(cells, ((0, pad_y), (0, pad_x)), mode="edge")[:height, :width]


def attention_animation_gif(
    pixels: np.ndarray,
    maps_per_layer: np.ndarray,
    stride_px: tuple[int, int],
    opacity: float = 0.6,
    frame_ms: int = 700,
    scale: int = 2,
) -> bytes:
    """The same animation as an endlessly looping GIF, for slides that cannot play Plotly.

    Each frame blends one layer's map (scaled by its own maximum, in MAP_COLORSCALE colours) over
    the image and labels the layer in the top-left corner.

    Args:
        pixels: (H, W, 3) uint8 image at the model's input size.
        maps_per_layer: (layers, rows, cols) maps over the token grid, layer 0 first.
        stride_px: input pixels between neighbouring tokens.
        opacity: weight of the map colour over the image.
        frame_ms: milliseconds per frame.
        scale: integer enlargement of the frames (nearest neighbour keeps the token cells sharp).

    Returns:
        GIF file bytes.
    """
    maps = normalise_per_layer(maps_per_layer)
    height, width = pixels.shape[:2]
    base = pixels.astype(np.float32)
    font = ImageFont.load_default(size=9 * scale)
    frames = []
    for layer, layer_map in enumerate(maps):
        colours = apply_colormap(_upsample(layer_map, stride_px, (height, width))).astype(np.float32)
        blended = np.rint((1.0 - opacity) * base + opacity * colours).astype(np.uint8)  # (H, W, 3)
        frame = Image.fromarray(blended).resize((width * scale, height * scale), Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(frame)
        label = f"layer {layer}"
        left, top, right, bottom = draw.textbbox((8, 6), label, font=font)
        draw.rectangle((left - 4, top - 3, right + 4, bottom + 3), fill=(0, 0, 0))
        draw.text((8, 6), label, fill=(255, 255, 255), font=font)
        frames.append(frame)
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return buffer.getvalue()
