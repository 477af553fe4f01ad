"""The guided story of the ViT paper told in presentation mode: its slides and their words."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import numpy as np

from vitviz.models import ModelFacts
from vitviz.text import grid_size_text, picture_size_text

__all__ = [
    "SLIDE_KEYS",
    "ComparedPair",
    "OpeningLayer",
    "Slide",
    "SlideKey",
    "opening_layer",
    "story_slides",
]

SlideKey = Literal["image", "patches", "tokens", "attention", "rollout", "prediction", "compare"]
# The story's order: the paper's pipeline from pixels to a class, then a CNN beside it.
SLIDE_KEYS: tuple[SlideKey, ...] = (
    "image",
    "patches",
    "tokens",
    "attention",
    "rollout",
    "prediction",
    "compare",
)


@dataclass(frozen=True)
class Slide:
    """One step of the story: what it shows (key), its title and a caption made from the model's facts."""

    key: SlideKey
    title: str
    caption: str


@dataclass(frozen=True)
class ComparedPair:
    """Two classifiers of the same classes, a ViT and a CNN, that the last slide sets side by side."""

    vit: str  # how the slide names the ViT: a fine-tune's run name, or a timm name
    cnn: str
    trained: (
        str  # what both were trained on, as one clause: "fine-tuned alike on builtin:digits (10 classes)"
    )


def _size(size: tuple[int, int]) -> str:
    """An input size or token stride, stored (height, width) as timm gives it, written width × height."""
    height, width = size
    return picture_size_text(width=width, height=height)


def _untrained(trained: bool) -> str:
    return "" if trained else " These are random, untrained weights: the maps show an untrained model."


def _prefix_phrase(facts: ModelFacts) -> str:
    count = facts.num_prefix_tokens
    if count == 0:
        return "There is no class token: the model averages its patch tokens at the end."
    if count == 1:
        return "A learned class token joins them at the front; its output will stand for the whole image."
    return f"{count} learned prefix tokens (class, distillation or register) join them at the front."


def _output_word(facts: ModelFacts) -> str:
    return "the class token" if facts.num_prefix_tokens and facts.global_pool == "token" else "the output"


def story_slides(
    vit: ModelFacts,
    image_name: str,
    image_size: tuple[int, int],
    cnn: ModelFacts | None = None,
    trained: bool = True,
    pair: ComparedPair | None = None,
) -> list[Slide]:
    """The slides for one ViT (or hybrid) and one image, with a CNN to compare at the end.

    Args:
        vit: facts of the transformer the story follows (family "vit" or "hybrid").
        image_name: the image's name, as shown to the audience.
        image_size: (width, height) of the image in pixels, as PIL reports it.
        cnn: facts of the CNN the last slide sets beside the story's transformer; None leaves that
            slide out unless `pair` is given.
        pair: a ViT and a CNN trained on the same classes; the last slide compares them instead.
        trained: False when the transformer's weights are random: every caption says so.

    Raises:
        ValueError: `vit` is a CNN.
    """
    if vit.family == "cnn" or vit.grid_size is None or vit.stride_px is None:
        raise ValueError(f"{vit.name} is a CNN: the story needs a transformer (ViT or hybrid).")
    rows, cols = vit.grid_size
    input_px = _size(vit.input_size)
    grid = grid_size_text(rows=rows, columns=cols)
    stride = _size(vit.stride_px)
    layers, heads = vit.num_layers, vit.num_heads
    note = _untrained(trained)
    if vit.family == "vit":
        patches = f"{input_px} image → {vit.num_patches} patches of {stride}, laid out on the {grid}."
    else:
        patches = (
            f"{input_px} image → a CNN stem → {vit.num_patches} feature cells, one per {stride}, "
            f"laid out on the {grid}. This hybrid's patches are cells of a CNN feature map."
        )
    query = "the class token" if vit.num_prefix_tokens else "the mean patch"
    slides = [
        Slide(
            "image",
            "An image goes in",
            f"{image_name}: a photo of {picture_size_text(width=image_size[0], height=image_size[1])}. "
            f"{vit.name} reads every image at {input_px}, so it is resized to that first.",
        ),
        Slide("patches", "Cut into patches", patches + note),
        Slide(
            "tokens",
            "Patches become tokens",
            f"Each patch becomes a token of {vit.embed_dim} numbers. {_prefix_phrase(vit)} "
            f"{vit.num_tokens} tokens × {vit.embed_dim}. A learned position embedding is added to each "
            "token: the map shows how alike one position's embedding is to every other's." + note,
        ),
        Slide(
            "attention",
            "Attention, layer by layer",
            f"{layers} layers × {heads} heads. Each frame shows where {query} looks in one layer "
            f"(mean of the {heads} heads). Press ▶ to play layers 0–{layers - 1}." + note,
        ),
        Slide(
            "rollout",
            "Attention rollout",
            f"Multiplying the attention of the {layers} layers, each mixed with the skip connection "
            f"(0.5·A + 0.5·I), traces how much each patch feeds {_output_word(vit)}. Layers where an "
            "attention sink takes most of the attention are left out; the map's title says which." + note,
        ),
    ]
    if vit.has_classifier:
        prediction = (
            f"{_output_word(vit).capitalize()}'s final {vit.embed_dim} numbers go through one linear "
            f"layer to {vit.num_classes} class scores; softmax makes them probabilities. The top 5:"
        )
    else:
        prediction = (
            f"{vit.name} has no classifier head: it was trained without labels (self-supervised), so "
            f"it predicts no class. Its output is the {vit.embed_dim}-number vector of "
            f"{_output_word(vit)} below; a linear classifier on top would turn it into class scores."
        )
    slides.append(Slide("prediction", "The prediction", prediction + note))
    if pair is not None:
        slides.append(
            Slide(
                "compare",
                "ViT vs CNN",
                f"Two classifiers {pair.trained}. Left: {pair.vit}, a ViT, which relates every patch to "
                f"every other through attention; right: {pair.cnn}, a CNN, which slides small filters over "
                "the image. Each shows its top 5 on the same image and its map for the same class (the "
                "ViT's top class).",
            )
        )
    elif cnn is not None:
        no_head = (
            f" {vit.name} has no classifier head, so only the CNN predicts a class (the ViT was trained "
            "without labels): this shows how the two work on the image, not which classifies better."
            if not vit.has_classifier
            else ""
        )
        slides.append(
            Slide(
                "compare",
                "ViT vs CNN",
                f"Left: {vit.name} relates every patch to every other through attention (its rollout). "
                f"Right: {cnn.name}, a CNN, has no patches and no attention; it slides small filters "
                f"over the {_size(cnn.input_size)} image and pools them into {cnn.num_classes} class "
                f"scores (its top 5).{no_head}" + note,
            )
        )
    return slides


@dataclass(frozen=True)
class OpeningLayer:
    """The layer the attention slide opens on, and the numbers that chose it."""

    layer: int
    top_share: float  # share of the map held by its top `top_fraction` of patches
    top_fraction: float
    skipped: tuple[int, ...]  # layers passed over because an attention sink dominates them

    def caption(self) -> str:
        """One line saying which layer the slide opens on and why, from the numbers."""
        line = (
            f"Opens on layer {self.layer}: of the layers without an attention sink, its map is the most "
            f"concentrated (its top {self.top_fraction:.0%} of patches draw {self.top_share:.0%} of the "
            "attention)."
        )
        if self.skipped:
            layers = ", ".join(map(str, self.skipped))
            line += f" Skipped as sink-dominated: layer{'s' if len(self.skipped) > 1 else ''} {layers}."
        return line


def opening_layer(
    maps_per_layer: np.ndarray, sink_layers: Collection[int], top_fraction: float = 0.1
) -> OpeningLayer:
    """The layer whose map shows the most structure: sink layers left out, then the most concentrated.

    A map where one sink patch draws most of the attention shows nothing of the image, and a
    nearly uniform map shows nothing either; of the remaining layers the one whose top patches
    hold the largest share of the map picks out a region.

    Args:
        maps_per_layer: (layers, rows, cols) non-negative maps, layer 0 first.
        sink_layers: layers in which a patch is an attention sink (`SinkReport.sink_layers`).
        top_fraction: the fraction of patches whose share measures concentration.
    """
    maps = np.asarray(maps_per_layer, dtype=np.float64).reshape(len(maps_per_layer), -1)
    count = max(1, round(top_fraction * maps.shape[1]))
    totals = np.where(maps.sum(axis=1) > 0, maps.sum(axis=1), 1.0)
    shares = np.sort(maps, axis=1)[:, -count:].sum(axis=1) / totals  # (layers,)
    candidates = [layer for layer in range(len(maps)) if layer not in set(sink_layers)]
    if not candidates:
        candidates = list(range(len(maps)))
    layer = max(candidates, key=lambda index: shares[index])
    skipped = tuple(sorted(index for index in set(sink_layers) if 0 <= index < len(maps)))
    return OpeningLayer(layer, float(shares[layer]), top_fraction, skipped)
