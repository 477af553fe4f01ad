"""Attention sinks: tokens that draw an outlier share of a layer's attention, and a rollout they do not capture.

ViTs trained without register tokens route much of some layers' attention to a few low-information
tokens (Darcet et al., "Vision Transformers Need Registers", ICLR 2024). Rollout multiplies every
layer's attention, so one such token can become the brightest cell of the map. Measured on the
bundled DINOv2 (ViT-S/14 at 224 px) and the eight built-in photos, centre crop and whole photo alike:
in layer 0 one patch receives 8.9–16.8% of all attention (46–100× the median patch's share), nearly
all of it from one head that sends 53–99% of its attention there from almost every query; no other
token of layer 0 exceeds 28×, and in later layers only one token of the 16 images exceeds 33× (59×:
a background patch below the flower, whole photo, layer 9). Output-token norms do not stand out on
that model (at most 1.43× the median patch's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from vitviz.maths.token_features import OutputTokens, high_norm_patches, token_norms

__all__ = [
    "NORM_FACTOR",
    "SINK_MEDIAN_MULTIPLE",
    "SINK_MIN_UNIFORM_MULTIPLE",
    "AttentionLayers",
    "RolloutPlan",
    "SinkMode",
    "SinkReport",
    "SinkToken",
    "attention_shares",
    "detect_sinks",
    "plan_rollout",
    "rollout_statement",
    "sink_sentence",
]

# A token is a sink in a layer when its share of that layer's attention is at least this many times
# the median patch's share. Chosen on the measurements above (bench/sinks.py): the layer-0 sinks lie
# at 46–100× and every other token of every layer at or below 33×, but for one that the rule also
# calls a sink (59×: 9% of layer 9's attention, from 77% of the queries, on a background patch).
SINK_MEDIAN_MULTIPLE = 40.0
# ...and at least this many tokens' worth of uniform attention (5/N): otherwise, in a layer where most
# patches receive nothing (a median of 0), every patch that receives anything would count.
SINK_MIN_UNIFORM_MULTIPLE = 5.0
# An output token's norm "stands out" at this multiple of the median patch norm (as `high_norm_patches`).
NORM_FACTOR = 2.0

# "exclude": rollout skips the leading layers where sinks dominate and leaves sink tokens out of any
# later layer where they dominate; "raw": every layer and token as captured.
SinkMode = Literal["exclude", "raw"]


class AttentionLayers(Protocol):
    """What detection reads from an `AttentionRecord` (named here, not imported: the record's module
    imports this one for its rollout default)."""

    @property
    def attentions(self) -> np.ndarray: ...  # (layers, heads, N, N)

    @property
    def grid_size(self) -> tuple[int, int]: ...

    @property
    def num_prefix_tokens(self) -> int: ...


@dataclass(frozen=True)
class SinkToken:
    """One token that draws an outlier share of attention in at least one layer."""

    token: int  # sequence index (prefix tokens first, then patches in reading order)
    name: str  # "patch (3, 9)", or the prefix token's name ("class", "register 2")
    position: tuple[int, int] | None  # (row, col) of a patch on the grid; None for a prefix token
    layers: tuple[int, ...]  # layers (from 0) in which it is a sink, ascending
    shares: tuple[float, ...]  # its share of each of those layers' attention, in [0, 1]
    median_multiples: tuple[float, ...]  # each share over the median patch's share in that layer
    norm_ratio: float | None  # its output-token norm over the median patch's; None without norms

    @property
    def is_patch(self) -> bool:
        return self.position is not None

    @property
    def peak_share(self) -> float:
        return max(self.shares)

    @property
    def peak_layer(self) -> int:
        return self.layers[int(np.argmax(self.shares))]


@dataclass(frozen=True)
class SinkReport:
    """The sinks of one image in one model, and how they were found."""

    patch_sinks: tuple[SinkToken, ...]  # the ones that show on a map, largest peak share first
    prefix_sinks: tuple[SinkToken, ...]  # class / distillation / register tokens, largest first
    num_layers: int
    median_multiple: float  # the detection rule's multiple of the median patch share
    high_norm_patches: tuple[tuple[int, int, float], ...] | None  # (row, col, norm ratio); None without norms

    @property
    def sink_layers(self) -> tuple[int, ...]:
        """Layers in which at least one patch is a sink, ascending."""
        return tuple(sorted({layer for sink in self.patch_sinks for layer in sink.layers}))

    def patch_sinks_in(self, layer: int) -> tuple[SinkToken, ...]:
        """The patch sinks of one layer."""
        return tuple(sink for sink in self.patch_sinks if layer in sink.layers)


def attention_shares(attentions: np.ndarray) -> np.ndarray:
    """The share of each layer's attention that each token receives.

    Every query's attention sums to 1 in every head, so a layer hands out heads × N units; a token's
    share is what its column receives over that total.

    Args:
        attentions: (layers, heads, N, N) attention probabilities.

    Returns:
        (layers, N) shares; each row sums to 1.
    """
    assert attentions.ndim == 4, f"expected (layers, heads, N, N), got {attentions.shape}"
    return attentions.mean(axis=(1, 2), dtype=np.float64)  # accumulates in float64 without a copy


def _patch_name(position: tuple[int, int]) -> str:
    return f"patch ({position[0]}, {position[1]})"


def detect_sinks(
    record: AttentionLayers,
    tokens: OutputTokens | None = None,
    prefix_names: Sequence[str] | None = None,
    median_multiple: float = SINK_MEDIAN_MULTIPLE,
) -> SinkReport:
    """Finds the tokens that draw an outlier share of a layer's attention.

    A token is a sink in a layer when its share (`attention_shares`) is at least `median_multiple`
    times the median patch's share and at least 5/N. Prefix tokens are judged by the same rule but
    reported apart, under their names: a register is meant to collect attention, and no prefix token
    is drawn on a map of the grid.

    Args:
        record: one image's attention (an `AttentionRecord`).
        tokens: the same image's output tokens (`output_tokens`), to add each token's norm ratio and
            the patches whose norm stands out; None to judge by attention alone.
        prefix_names: names of the prefix tokens in order; by default those of `tokens`, else
            "prefix 1", "prefix 2", ...
        median_multiple: the rule's multiple of the median patch share.

    Returns:
        The sinks, patches and prefix tokens apart.
    """
    if median_multiple <= 1.0:
        raise ValueError(f"a sink must draw more than the median share: multiple {median_multiple} ≤ 1")
    prefix = record.num_prefix_tokens
    rows, cols = record.grid_size
    shares = attention_shares(record.attentions)  # (layers, N)
    num_layers, num_tokens = shares.shape
    assert num_tokens == prefix + rows * cols, f"{num_tokens} tokens for {prefix} + {rows}×{cols}"
    if prefix_names is None:
        prefix_names = (
            tokens.prefix_names if tokens is not None else [f"prefix {i + 1}" for i in range(prefix)]
        )
    assert len(prefix_names) == prefix, f"{len(prefix_names)} names for {prefix} prefix tokens"

    median_share = np.median(shares[:, prefix:], axis=1, keepdims=True)  # (layers, 1)
    floor = SINK_MIN_UNIFORM_MULTIPLE / num_tokens
    is_sink = (shares >= median_multiple * median_share) & (shares >= floor)  # (layers, N)
    with np.errstate(divide="ignore", invalid="ignore"):
        multiples = shares / median_share  # inf (or NaN for 0/0) where the median is 0

    norm_ratios, high_norm = _norm_ratios(tokens, prefix) if tokens is not None else (None, None)
    found: list[SinkToken] = []
    for token in np.flatnonzero(is_sink.any(axis=0)):
        layers = np.flatnonzero(is_sink[:, token])
        position = divmod(int(token) - prefix, cols) if token >= prefix else None
        found.append(
            SinkToken(
                token=int(token),
                name=_patch_name(position) if position is not None else prefix_names[token],
                position=position,
                layers=tuple(int(layer) for layer in layers),
                shares=tuple(float(shares[layer, token]) for layer in layers),
                median_multiples=tuple(float(multiples[layer, token]) for layer in layers),
                norm_ratio=float(norm_ratios[token]) if norm_ratios is not None else None,
            )
        )
    found.sort(key=lambda sink: -sink.peak_share)
    return SinkReport(
        patch_sinks=tuple(sink for sink in found if sink.is_patch),
        prefix_sinks=tuple(sink for sink in found if not sink.is_patch),
        num_layers=num_layers,
        median_multiple=median_multiple,
        high_norm_patches=high_norm,
    )


def _norm_ratios(tokens: OutputTokens, prefix: int) -> tuple[np.ndarray, tuple[tuple[int, int, float], ...]]:
    """Every token's norm over the median patch norm, and the patches that stand out.

    Read before the final norm: a final LayerNorm evens norms out, so artefacts show before it.
    """
    assert tokens.num_prefix_tokens == prefix, "tokens and attention come from different models"
    norms = token_norms(tokens, "before_norm")
    median = float(np.median(norms.patch_norms)) or 1.0
    ratios = np.concatenate([norms.prefix_norms, norms.patch_norms.ravel()]) / median  # (N,)
    standing_out = tuple(
        (row, col, norm / median) for row, col, norm in high_norm_patches(norms, factor=NORM_FACTOR)
    )
    return ratios, standing_out


def _percent(share: float) -> str:
    return f"{share:.0%}" if share >= 0.01 else f"{share:.1%}"


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _layer_list(layers: Sequence[int]) -> str:
    """Layers in words: "layer 0", "layers 0–2" or "layers 0, 3 and 9"."""
    if len(layers) == 1:
        return f"layer {layers[0]}"
    if list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"layers {layers[0]}–{layers[-1]}"
    return "layers " + _join([str(layer) for layer in layers])


def _draw(sink: SinkToken) -> str:
    """What a sink receives: "16% of layer 0's attention" or "up to 16% of a layer's attention (layers 0–2)"."""
    if len(sink.layers) == 1:
        return f"{_percent(sink.shares[0])} of layer {sink.layers[0]}'s attention"
    return f"up to {_percent(sink.peak_share)} of a layer's attention ({_layer_list(sink.layers)})"


def sink_sentence(report: SinkReport) -> str | None:
    """The one line a page prints under a map, from the numbers; None when no patch stands out.

    Examples: "Patch (3, 9) receives 16% of layer 0's attention: an attention sink."
    Prefix sinks are not mentioned: they are not on the map.
    """
    parts: list[str] = []
    sinks = report.patch_sinks
    if sinks:
        first, *others = sinks
        clauses = [f"{first.name} receives {_draw(first)}"]
        clauses += [f"{sink.name} {_draw(sink)}" for sink in others]
        verdict = "an attention sink" if len(sinks) == 1 else "attention sinks"
        line = f"{_join(clauses)}: {verdict}"
        line = line[0].upper() + line[1:]
        high_norm_sinks = [
            sink for sink in sinks if sink.norm_ratio is not None and sink.norm_ratio >= NORM_FACTOR
        ]
        if high_norm_sinks:
            ratios = _join([f"{sink.norm_ratio:.1f}×" for sink in high_norm_sinks])
            line += f", with an output norm {ratios} the median patch's"
        parts.append(line + ".")
    sink_positions = {sink.position for sink in sinks}
    lone_high_norm = [item for item in report.high_norm_patches or () if item[:2] not in sink_positions]
    if lone_high_norm:
        names = _join([f"{_patch_name(item[:2])} ({item[2]:.1f}×)" for item in lone_high_norm[:3]])
        more = f" and {len(lone_high_norm) - 3} more" if len(lone_high_norm) > 3 else ""
        parts.append(
            f"High-norm output tokens (over {NORM_FACTOR:g}× the median patch's norm): {names}{more}."
        )
    return " ".join(parts) or None


@dataclass(frozen=True)
class RolloutPlan:
    """Which layers and tokens a rollout multiplies."""

    start_layer: int  # first layer (from 0) that takes part
    excluded: Mapping[int, tuple[int, ...]]  # layer → sequence indices left out of that layer
    skipped: tuple[SinkToken, ...]  # sinks of the leading layers skipped because of them
    left_out: tuple[SinkToken, ...]  # sinks left out of later layers
    num_layers: int
    sinks: SinkMode


def plan_rollout(report: SinkReport, start_layer: int = 0, sinks: SinkMode = "exclude") -> RolloutPlan:
    """The sink-aware rollout: start after the leading layers where sinks dominate, and leave sink
    tokens out of any later layer where they dominate.

    Compared on the boxed built-in photos, whole photo resized (bench/sinks.py --view whole,
    tests/support/subjects.py): zeroing the sinks' columns in their layers but keeping layer 0
    concentrates less relevance on the subject (box concentration cat 1.27, coffee 1.55, astronaut
    0.55, rocket 3.25) than skipping the sink layers (1.79, 2.06, 1.91, 3.99; raw 0.83, 1.12, 0.45,
    2.42): in layer 0 the sink head's leftover and the other heads still pick out isolated patches,
    and rollout carries them to the map. In the centre crop (the default view) the order is the same
    on the cat, the cup and the astronaut (1.29 / 1.26 / 0.55 against 1.47 / 1.55 / 1.91).

    Args:
        report: the image's sinks (`detect_sinks`).
        start_layer: the earliest layer the caller wants; the plan never starts before it.
        sinks: "exclude" for the plan above, "raw" for every layer from `start_layer` and every token.

    Returns:
        The plan; with no patch sinks, "exclude" is the same as "raw".
    """
    if sinks not in ("exclude", "raw"):
        raise ValueError(f"unknown sink handling {sinks!r}: use exclude or raw")
    num_layers = report.num_layers
    if not 0 <= start_layer < num_layers:
        raise ValueError(f"start layer {start_layer} outside 0..{num_layers - 1}")
    if sinks == "raw":
        return RolloutPlan(start_layer, {}, (), (), num_layers, sinks)
    sink_layers = set(report.sink_layers)
    start = start_layer
    while start in sink_layers and start < num_layers - 1:  # the last layer always takes part
        start += 1
    excluded = {
        layer: tuple(sink.token for sink in report.patch_sinks_in(layer))
        for layer in sorted(sink_layers)
        if layer >= start
    }
    skipped = tuple(
        sink for sink in report.patch_sinks if any(start_layer <= layer < start for layer in sink.layers)
    )
    left_out = tuple(sink for sink in report.patch_sinks if any(layer in excluded for layer in sink.layers))
    return RolloutPlan(start, excluded, skipped, left_out, num_layers, sinks)


def rollout_statement(plan: RolloutPlan) -> str:
    """The short statement of the method printed next to the map.

    Examples: "Rollout of layers 1–11 (layer 0 skipped: sink at patch (3, 9))";
    "Raw rollout of layers 0–11, sinks included".
    """
    last = plan.num_layers - 1
    if plan.sinks == "raw":
        return f"Raw rollout of layers {plan.start_layer}–{last}, sinks included"
    line = (
        f"Rollout of layers {plan.start_layer}–{last}"
        if plan.start_layer < last
        else f"Rollout of layer {last}"
    )
    if plan.skipped:
        skipped_layers = sorted(
            {layer for sink in plan.skipped for layer in sink.layers if layer < plan.start_layer}
        )
        names = _join([sink.name for sink in plan.skipped])
        noun = "sink at" if len(plan.skipped) == 1 else "sinks at"
        line += f" ({_layer_list(skipped_layers)} skipped: {noun} {names})"
    for sink in plan.left_out:
        layers = [layer for layer in sink.layers if layer in plan.excluded]
        line += f"; sink {sink.name} left out of {_layer_list(layers)}"
    if not plan.skipped and not plan.left_out:
        # From a later start layer, earlier layers were not looked at for this map.
        line += (
            "; no attention sinks found" if plan.start_layer == 0 else "; no attention sinks in these layers"
        )
    return line
