"""The shared pipeline of every explanation method: checks, target classes, one map per image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from vitviz.models import ATTENTION_WORDS, Family, LoadedModel, ModelError, ModelFacts

__all__ = [
    "NEARLY_FLAT_SPREAD",
    "AttentionKindMethod",
    "ExplanationMethod",
    "ExplanationResult",
    "MethodUnavailableError",
    "feature_grid",
    "map_is_constant",
    "map_relative_spread",
    "pool_to_grid",
    "reads_partitions",
]


NEARLY_FLAT_SPREAD = 0.10
"""Below this range over its largest magnitude a map is called nearly uniform. Measured on three
built-in photos: rollout of untrained ViT-Ti/DeiT-Ti spans 3–7 % (every token attends almost
evenly); the bundled models' maps span 60 % or more (rollout 77–87 %, Grad-CAM 85 %)."""


class MethodUnavailableError(ModelError):
    """The method cannot explain this model: wrong family, or class-specific without a classifier head."""


@dataclass(frozen=True)
class ExplanationResult:
    """One image's explanation: a map over the grid of the input the model saw, and what it explains.

    The explained input is the image's view (vitviz.preprocess: the model's eval crop by default, or
    the whole photo resized), so the map lies over the same pixels the model's predictions came from.
    """

    values: np.ndarray  # (rows, cols) float32; higher means more relevant; may be negative (IG)
    method: str  # registry name, e.g. "gradcam"
    target_index: int | None  # the class explained; None for class-agnostic maps (rollout, attention)
    target_label: str | None  # that class's name, when known
    stride_px: tuple[float, float]  # input pixels per map cell, (rows, cols)
    input_size: tuple[int, int]  # (height, width) of the explained input
    source: str  # what the map was read from, e.g. "forward_features" or "blocks.11.norm1"
    trained: bool  # False for random (untrained) weights

    @property
    def grid_size(self) -> tuple[int, int]:
        return int(self.values.shape[0]), int(self.values.shape[1])

    @property
    def constant(self) -> bool:
        """Whether the map says nothing: every cell equal (all zero included), or not finite anywhere.

        Cells closer than a millionth of the map's largest magnitude count as equal: float noise on
        a map that is constant in exact arithmetic.
        """
        return map_is_constant(self.values)

    @property
    def constant_note(self) -> str | None:
        """One line for every surface that shows a constant map, or None when the map varies."""
        if not self.constant:
            return None
        values = self.values
        if not np.isfinite(values).all():
            return f"{self.method}: the map is not finite; nothing is drawn."
        level = float(values.flat[0]) if values.size else 0.0
        what = "all zero" if level == 0.0 else f"the same value ({level:.3g}) everywhere"
        return f"{self.method}: constant — no information: the map is {what}, so nothing is drawn."

    @property
    def relative_spread(self) -> float:
        """The map's range over its largest magnitude: 0 for a constant map, 1 or more for one with contrast."""
        return map_relative_spread(self.values)

    @property
    def nearly_flat(self) -> bool:
        """Whether the map varies, but by less than `NEARLY_FLAT_SPREAD` of its largest magnitude."""
        return not self.constant and self.relative_spread < NEARLY_FLAT_SPREAD

    @property
    def flat_note(self) -> str | None:
        """One line for every surface that draws a nearly flat map, or None when the map has contrast.

        Scaled to its largest value, such a map is drawn almost one colour everywhere; the line says
        how small the differences are, so the colour is not read as relevance everywhere.
        """
        if not self.nearly_flat:
            return None
        percent = 100.0 * self.relative_spread
        return (
            f"{self.method}: nearly uniform — its cells differ by at most {percent:.1f}% of the largest "
            "value, so the map singles out almost nothing."
        )

    @property
    def note(self) -> str | None:
        """The line every surface prints with this map: constant, nearly flat, or None."""
        return self.constant_note or self.flat_note

    def normalised(self, percentile: float = 100.0) -> np.ndarray:
        """The map's positive evidence scaled to [0, 1], for one colour scale shared by every map.

        Args:
            percentile: the value mapped to 1, as a percentile of the map's cells; 100 is its
                maximum, 99 keeps one outlier cell (such as DINOv2's high-norm artefact tokens)
                from darkening the rest. Cells above it are clipped to 1.

        Returns:
            (rows, cols) float32; all zeros when nothing is positive.
        """
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile must lie in (0, 100], got {percentile}")
        if self.constant:  # never drawn as "maximum relevance everywhere"
            return np.zeros(self.values.shape, dtype=np.float32)
        positive = np.clip(self.values.astype(np.float32), 0.0, None)
        peak = float(np.percentile(positive, percentile)) if positive.size else 0.0
        if peak <= 0:
            peak = float(positive.max()) if positive.size else 0.0
        if peak <= 0:
            return np.zeros_like(positive)
        return np.clip(positive / peak, 0.0, 1.0)


def map_is_constant(values: np.ndarray, relative: float = 1e-6) -> bool:
    """Whether every cell of a map is equal up to `relative` of its largest magnitude, or any is not finite."""
    if values.size == 0 or not np.isfinite(values).all():
        return True
    spread = float(np.ptp(values))
    return spread <= relative * float(np.abs(values).max())


def map_relative_spread(values: np.ndarray) -> float:
    """(max − min) / max |value| of a map's cells; 0 for an empty, all-zero or non-finite map."""
    if values.size == 0 or not np.isfinite(values).all():
        return 0.0
    largest = float(np.abs(values).max())
    return float(np.ptp(values)) / largest if largest > 0 else 0.0


def feature_grid(
    loaded: LoadedModel, input_size: tuple[int, int] | None = None
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The grid a map is drawn on when the method is not tied to one: tokens, or the last feature map.

    ViTs and hybrids use their token grid; CNNs the grid of their last feature map, read from the
    model's own `feature_info` reduction (32 for most ImageNet CNNs).

    Args:
        loaded: the model.
        input_size: (H, W) of the input; default the model's own input size. (A CNN takes any size.)

    Returns:
        (rows, cols) and the input pixels per cell (rows, cols).
    """
    facts = loaded.facts
    if facts.grid_size is not None and facts.stride_px is not None:
        return facts.grid_size, facts.stride_px
    info = getattr(loaded.model, "feature_info", None)
    reduction = 32
    if info:
        last = info[-1] if isinstance(info, list) else info.get_dicts()[-1]
        reduction = int(last.get("reduction", reduction))
    height, width = input_size or facts.input_size
    return (max(1, height // reduction), max(1, width // reduction)), (reduction, reduction)


def pool_to_grid(
    per_pixel: torch.Tensor, grid_size: tuple[int, int], cell_px: tuple[int, int], reduce: str = "sum"
) -> torch.Tensor:
    """Sums (or averages) a per-pixel map over each grid cell; pixels past the last whole cell are left out.

    Args:
        per_pixel: (B, H, W) attribution per pixel.
        grid_size: (rows, cols) of the target grid.
        cell_px: (height, width) of one cell in pixels.
        reduce: "sum" or "mean" over the pixels of a cell.

    Returns:
        (B, rows, cols).
    """
    rows, cols = grid_size
    cell_h, cell_w = cell_px
    covered = per_pixel[:, : rows * cell_h, : cols * cell_w]
    cells = covered.reshape(per_pixel.shape[0], rows, cell_h, cols, cell_w)
    return cells.sum(dim=(2, 4)) if reduce == "sum" else cells.mean(dim=(2, 4))


class ExplanationMethod:
    """One explanation method over the shared pipeline; a subclass overrides only what differs.

    Subclasses set the class attributes and implement `attribute`; `explain` does the rest:
    checks that the method fits the model, moves the input to the model's device, validates the
    classes asked for, and packs each image's map into an `ExplanationResult`.
    """

    name: ClassVar[str]  # registry name, as on the command line
    title: ClassVar[str]  # human name for menus and titles
    families: ClassVar[tuple[Family, ...]] = ("vit", "hybrid", "hierarchical", "conv-attention", "cnn")
    class_specific: ClassVar[bool] = True  # explains one class, so needs a classifier head
    takes_layer: ClassVar[bool] = False  # reads a target layer from the "layer" option (CAMs)
    # One map costs tens of forward passes or more at the default options (one per channel, window,
    # step or sample): the arena leaves such methods out unless asked (see vitviz.arena).
    slow: ClassVar[bool] = False

    def __init__(self, loaded: LoadedModel, **options: Any) -> None:
        reason = self.unavailable_reason(loaded.facts)
        if reason is not None:
            raise MethodUnavailableError(reason)
        self.loaded = loaded
        self.options = options

    @classmethod
    def unavailable_reason(cls, facts: ModelFacts) -> str | None:
        """Why this method cannot explain a model with these facts, or None when it can."""
        if facts.family not in cls.families:
            kinds = ", ".join(_FAMILY_PLURALS[family] for family in cls.families)
            attention = "" if facts.attention == "none" else f" with {ATTENTION_WORDS[facts.attention]}"
            return f"{cls.title} works on {kinds}; {facts.name} is a {facts.family_words}{attention}."
        if cls.class_specific and not facts.has_classifier:
            return (
                f"{cls.title} explains one class, and {facts.name} has no classifier head; "
                "only class-agnostic maps (attention rollout, raw attention) are possible."
            )
        return None

    @property
    def model(self) -> nn.Module:
        return self.loaded.model

    @property
    def facts(self) -> ModelFacts:
        return self.loaded.facts

    def explain(
        self, pixels: torch.Tensor, class_indices: Sequence[int] | None = None
    ) -> list[ExplanationResult]:
        """Explains each image of a batch.

        Args:
            pixels: (B, 3, H, W) normalised input at the model's input size.
            class_indices: one class per image, or None for each image's most probable class.
                Ignored by class-agnostic methods.

        Returns:
            One `ExplanationResult` per image.
        """
        assert pixels.ndim == 4, f"expected (B, 3, H, W) pixels, got {tuple(pixels.shape)}"
        # A plain copy: a caller's inference-mode tensor could not start a graph.
        with torch.inference_mode(False):
            pixels = pixels.to(self.loaded.device, dtype=torch.float32).clone()
        requested = None
        if self.class_specific and class_indices is not None:
            requested = self._checked_classes(class_indices, pixels.shape[0])
        maps, targets, source = self.attribute(pixels, requested)  # (B, rows, cols), (B,) or None
        height, width = pixels.shape[-2:]
        rows, cols = maps.shape[-2:]
        stride = (height / rows, width / cols)
        labels = self.loaded.labels
        results = []
        for index, values in enumerate(maps.detach().float().cpu().numpy()):
            target = None if targets is None else int(targets[index])
            label = None
            if target is not None:
                label = labels[target] if labels else f"class {target}"
            results.append(
                ExplanationResult(
                    values=values.astype(np.float32),
                    method=self.name,
                    target_index=target,
                    target_label=label,
                    stride_px=stride,
                    input_size=(int(height), int(width)),
                    source=source,
                    trained=self.loaded.trained,
                )
            )
        return results

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        """The method itself.

        Args:
            pixels: (B, 3, H, W) on the model's device.
            class_indices: (B,) long classes to explain, or None for each image's top class.

        Returns:
            (B, rows, cols) maps, the (B,) classes explained (None when class-agnostic) and a short
            description of what the map was read from.
        """
        raise NotImplementedError

    def _checked_classes(self, class_indices: Sequence[int], batch: int) -> torch.Tensor:
        classes = [int(index) for index in class_indices]
        if len(classes) == 1 and batch > 1:
            classes = classes * batch
        if len(classes) != batch:
            raise ValueError(f"got {len(classes)} classes for {batch} images")
        limit = self.facts.num_classes
        for index in classes:
            if not 0 <= index < limit:
                raise ValueError(f"class {index} outside 0..{limit - 1} of {self.facts.name}")
        return torch.tensor(classes, dtype=torch.long, device=self.loaded.device)

    @staticmethod
    def chosen_classes(logits: torch.Tensor, class_indices: torch.Tensor | None) -> torch.Tensor:
        """The classes asked for, or each row's most probable class.

        Args:
            logits: (B, classes).
            class_indices: (B,) or None.

        Returns:
            (B,) long.
        """
        if class_indices is not None:
            return class_indices
        return logits.detach().argmax(dim=-1)

    @staticmethod
    def class_score(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """The sum over the batch of each image's logit for its class: one backward explains them all.

        Images do not interact in an eval-mode forward, so each image's gradient is its own.
        """
        return logits.gather(1, classes[:, None]).sum()


class AttentionKindMethod(ExplanationMethod):
    """A method read from token-to-token attention: it refuses models whose attention is of another kind."""

    families: ClassVar[tuple[Family, ...]] = ("vit", "hybrid")
    # Where the attention must live for the method to mean anything (see vitviz.models.ATTENTION_WORDS).
    attention_kinds: ClassVar[tuple[str, ...]] = ("global",)

    @classmethod
    def unavailable_reason(cls, facts: ModelFacts) -> str | None:
        # A CNN has no attention whatever its facts' default says (facts written by hand).
        if (
            facts.family != "cnn"
            and facts.attention != "none"
            and (facts.family not in cls.families or facts.attention not in cls.attention_kinds)
        ):
            instead = (
                f" Raw attention shows {_PARTITION_WORDS[facts.attention]} instead."
                if reads_partitions(facts)
                else ""
            )
            return (
                f"{cls.title} needs global attention between every pair of tokens of one grid; "
                f"{facts.name} is a {facts.family_words} with {ATTENTION_WORDS[facts.attention]}.{instead}"
            )
        return super().unavailable_reason(facts)


def reads_partitions(facts: ModelFacts) -> bool:
    """Whether raw attention reads this model layer by layer on each layer's own feature map.

    Its attention lives inside windows, dilated grids or unfolded patches (Swin, MaxViT, MobileViT)
    and it has layers of a kind `vitviz.capture.partitioned_attention_layers` knows.
    """
    return facts.attention in _PARTITION_WORDS and facts.partitioned_layers > 0


# How raw attention shows each kind of partitioned attention, as a refusal points to it.
_PARTITION_WORDS: dict[str, str] = {
    "windowed": "its attention window by window",
    "block-grid": "its window and grid attention on each layer's own feature map",
    "dilated-grid": "its grid attention on each layer's own feature map",
    "unfolded": "its attention folded back onto each MobileViT block's feature map",
}


_FAMILY_PLURALS: dict[str, str] = {
    "vit": "ViTs",
    "hybrid": "hybrids",
    "hierarchical": "hierarchical transformers",
    "conv-attention": "convolution–attention hybrids",
    "cnn": "CNNs",
}
