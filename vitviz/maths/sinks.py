"""Attention sinks: tokens that nearly every query of a head attends to, and a rollout they do not capture.

ViTs trained without register tokens route much of some heads' attention to a few low-information
tokens, whatever the query (Darcet et al., "Vision Transformers Need Registers", ICLR 2024; Jiang et
al., "Vision Transformers Don't Need Trained Registers", 2025). Rollout multiplies every layer's
attention, so one such token can become the brightest cell of the map.

What makes a sink is query independence within a head: a token that takes a large share of one
head's attention from the average query and is the single most attended key of most queries. A token
that merely receives more than the median patch is not one: on a flat background the median share is
near zero, and the object's outline would pass (an earlier rule, 40× the median, named up to 19
outline patches of a flat shape and 19–26 of a line drawing as sinks).

Measured on the bundled DINOv2 (ViT-S/14 at 224 px; bench/sinks.py --validate, BENCHMARKS.md): in
layer 0 one head (head 5) sends 53–100% of its attention to one patch from 62–100% of the queries on
every built-in photo, crop and whole, and nothing else meets the rule on a photo. On textured
composites, flat shapes and line drawings the rule finds 0–2 tokens, all in layer 0. Closest below
it: 39% from 91% of the queries (head 5 on a small flat square), 40% from 43% (a second head-5 patch
on brick) and, in later layers, at most 33% (layer 10: a patch on a pasted face that 86% of the
queries attend to most; late layers look at the object from everywhere, which is no sink). Where a
sink lies is not part of the rule: on photos it is a background patch, on a flat shape it may sit
on the outline. Output-token norms do not stand out on that model (at most 1.43× the median
patch's), so they are reported, not required.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from vitviz.maths.token_features import OutputTokens, high_norm_patches, token_norms

__all__ = [
    "MAX_NAMED_SINKS",
    "NORM_FACTOR",
    "SINK_HEAD_DRAW",
    "SINK_MIN_UNIFORM_MULTIPLE",
    "SINK_QUERY_FRACTION",
    "AttentionLayers",
    "HeadDraws",
    "RolloutPlan",
    "SinkMode",
    "SinkReport",
    "SinkToken",
    "attention_shares",
    "detect_sinks",
    "head_draws",
    "plan_rollout",
    "rollout_statement",
    "sink_sentence",
]

# A token is a sink in a head when the average query (itself left out) gives it at least this share
# of its attention... Photos' sinks draw 53–100%; a late layer's object patch up to 33% (see above).
SINK_HEAD_DRAW = 0.4
# ...and it is the most attended key of at least this fraction of the other queries: it is attended
# to whatever the query. Photos' sinks: 62–100%.
SINK_QUERY_FRACTION = 0.5
# ...and its draw is at least this many tokens' worth of uniform attention (5/N): on a tiny grid
# uniform attention alone would otherwise pass.
SINK_MIN_UNIFORM_MULTIPLE = 5.0
# An output token's norm "stands out" at this multiple of the median patch norm (as `high_norm_patches`).
NORM_FACTOR = 2.0
# A sentence about sinks names at most this many tokens and counts the rest.
MAX_NAMED_SINKS = 3

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
    """One token that nearly every query of some head attends to, in at least one layer."""

    token: int  # sequence index (prefix tokens first, then patches in reading order)
    name: str  # "patch (3, 9)", or the prefix token's name ("class", "register 2")
    position: tuple[int, int] | None  # (row, col) of a patch on the grid; None for a prefix token
    layers: tuple[int, ...]  # layers (from 0) in which it is a sink, ascending
    shares: tuple[float, ...]  # its share of each of those layers' attention (all heads), in [0, 1]
    heads: tuple[int, ...]  # per layer, the head that attends to it most
    head_draws: tuple[float, ...]  # per layer, that head's attention to it from the average other query
    query_fractions: tuple[
        float, ...
    ]  # per layer, the fraction of that head's other queries whose top key it is
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
    head_draw: float  # the rule's least share of a head's attention from the average query
    query_fraction: float  # the rule's least fraction of a head's queries whose top key it is
    high_norm_patches: tuple[tuple[int, int, float], ...] | None  # (row, col, norm ratio); None without norms

    @property
    def rule(self) -> str:
        """The detection rule in words, for a sentence that says no patch met it."""
        return (
            f"receives {self.head_draw:.0%} of a head's attention from the average query while being "
            f"the top key of {self.query_fraction:.0%} of its queries"
        )

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


@dataclass(frozen=True)
class HeadDraws:
    """How query-independent each key of each head of one layer is."""

    draws: np.ndarray  # (heads, N): attention each key receives from the average other query
    top_fractions: np.ndarray  # (heads, N): fraction of the other queries whose most attended key it is


def head_draws(layer_attention: np.ndarray) -> HeadDraws:
    """What each key of each head receives from the other queries, on average and as their top key.

    A query's attention to itself is left out of both: a token that only attends to itself is not
    attended to by anyone else.

    Args:
        layer_attention: (heads, N, N) attention probabilities of one layer, N ≥ 2.

    Returns:
        The draws and top-key fractions, (heads, N) each.
    """
    num_tokens = layer_attention.shape[-1]
    assert num_tokens >= 2, "a key needs another query"
    diagonal = np.einsum("hii->hi", layer_attention)  # (heads, N) a view, no copy
    draws = (layer_attention.sum(axis=1, dtype=np.float64) - diagonal) / (num_tokens - 1)
    others = np.array(layer_attention, dtype=np.float32)  # one layer's copy, never the whole record
    others[:, np.arange(num_tokens), np.arange(num_tokens)] = -np.inf
    top_keys = others.argmax(axis=2)  # (heads, N) each query's most attended other token
    top_fractions = np.stack([np.bincount(keys, minlength=num_tokens) for keys in top_keys]) / (
        num_tokens - 1
    )
    return HeadDraws(draws, top_fractions)


def _patch_name(position: tuple[int, int]) -> str:
    return f"patch ({position[0]}, {position[1]})"


def detect_sinks(
    record: AttentionLayers,
    tokens: OutputTokens | None = None,
    prefix_names: Sequence[str] | None = None,
    head_draw: float = SINK_HEAD_DRAW,
    query_fraction: float = SINK_QUERY_FRACTION,
) -> SinkReport:
    """Finds the tokens that nearly every query of a head attends to, whatever the query.

    A token is a sink in a layer when, in at least one head, the average other query gives it at
    least `head_draw` of its attention, it is the most attended key of at least `query_fraction` of
    the other queries, and its draw is at least 5/N. Prefix tokens are judged by the same rule but
    reported apart, under their names: a register is meant to collect attention, and no prefix token
    is drawn on a map of the grid.

    Args:
        record: one image's attention (an `AttentionRecord`).
        tokens: the same image's output tokens (`output_tokens`), to add each token's norm ratio and
            the patches whose norm stands out; None to judge by attention alone.
        prefix_names: names of the prefix tokens in order; by default those of `tokens`, else
            "prefix 1", "prefix 2", ...
        head_draw: the rule's least share of a head's attention, in (0, 1].
        query_fraction: the rule's least fraction of queries whose top key it is, in (0, 1].

    Returns:
        The sinks, patches and prefix tokens apart.
    """
    if not 0.0 < head_draw <= 1.0 or not 0.0 < query_fraction <= 1.0:
        raise ValueError(
            f"a sink's head draw ({head_draw}) and query fraction ({query_fraction}) must lie in (0, 1]"
        )
    prefix = record.num_prefix_tokens
    rows, cols = record.grid_size
    attentions = record.attentions
    num_layers, _, num_tokens, _ = attentions.shape
    assert num_tokens == prefix + rows * cols, f"{num_tokens} tokens for {prefix} + {rows}×{cols}"
    if prefix_names is None:
        prefix_names = (
            tokens.prefix_names if tokens is not None else [f"prefix {i + 1}" for i in range(prefix)]
        )
    assert len(prefix_names) == prefix, f"{len(prefix_names)} names for {prefix} prefix tokens"

    least_draw = max(head_draw, SINK_MIN_UNIFORM_MULTIPLE / num_tokens)
    # token → [(layer, head, draw, top fraction)], the head that attends to it most in each layer
    found_in: dict[int, list[tuple[int, int, float, float]]] = {}
    if num_tokens >= 2:
        for layer in range(num_layers):
            per_head = head_draws(attentions[layer])
            is_sink = (per_head.draws >= least_draw) & (per_head.top_fractions >= query_fraction)
            for token in np.flatnonzero(is_sink.any(axis=0)):
                heads = np.flatnonzero(is_sink[:, token])
                head = int(heads[np.argmax(per_head.draws[heads, token])])
                draw, fraction = per_head.draws[head, token], per_head.top_fractions[head, token]
                found_in.setdefault(int(token), []).append((layer, head, float(draw), float(fraction)))
    shares = attention_shares(attentions) if found_in else None  # (layers, N)

    norm_ratios, high_norm = _norm_ratios(tokens, prefix) if tokens is not None else (None, None)
    found: list[SinkToken] = []
    for token, where in sorted(found_in.items()):
        position = divmod(token - prefix, cols) if token >= prefix else None
        assert shares is not None
        found.append(
            SinkToken(
                token=token,
                name=_patch_name(position) if position is not None else prefix_names[token],
                position=position,
                layers=tuple(layer for layer, _, _, _ in where),
                shares=tuple(float(shares[layer, token]) for layer, _, _, _ in where),
                heads=tuple(head for _, head, _, _ in where),
                head_draws=tuple(draw for _, _, draw, _ in where),
                query_fractions=tuple(fraction for _, _, _, fraction in where),
                norm_ratio=float(norm_ratios[token]) if norm_ratios is not None else None,
            )
        )
    found.sort(key=lambda sink: -sink.peak_share)
    return SinkReport(
        patch_sinks=tuple(sink for sink in found if sink.is_patch),
        prefix_sinks=tuple(sink for sink in found if not sink.is_patch),
        num_layers=num_layers,
        head_draw=head_draw,
        query_fraction=query_fraction,
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


def _join_counted(items: Sequence[str], patches: bool = False) -> str:
    """The first MAX_NAMED_SINKS items joined, the rest counted: "a, b, c and 22 more (patches)"."""
    if len(items) <= MAX_NAMED_SINKS:
        return _join(items)
    rest = len(items) - MAX_NAMED_SINKS
    return _join([*items[:MAX_NAMED_SINKS], f"{rest} more{_more_patches(rest) if patches else ''}"])


def _runs(values: Sequence[int]) -> list[str]:
    """Consecutive integers as ranges: [0, 1, 2, 5, 9, 10] → ["0–2", "5", "9–10"]."""
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return [f"{run[0]}–{run[-1]}" if len(run) > 1 else f"{run[0]}" for run in runs]


def _layer_list(layers: Sequence[int]) -> str:
    """Layers in words: "layer 0", "layers 0–2" or "layers 0, 3 and 9–11"."""
    if len(layers) == 1:
        return f"layer {layers[0]}"
    return "layers " + _join(_runs(layers))


def _draw(sink: SinkToken) -> str:
    """What a sink receives: "16% of layer 0's attention" or "up to 16% of a layer's attention (layers 0–2)"."""
    if len(sink.layers) == 1:
        return f"{_percent(sink.shares[0])} of layer {sink.layers[0]}'s attention"
    return f"up to {_percent(sink.peak_share)} of a layer's attention ({_layer_list(sink.layers)})"


def _span(low: float, high: float) -> str:
    """Two ratios as "2.1–3.5×", or one "3.0×" where they print alike."""
    low_text, high_text = f"{low:.1f}", f"{high:.1f}"
    return f"{low_text}×" if low_text == high_text else f"{low_text}–{high_text}×"


def _more_patches(count: int) -> str:
    return " patch" if count == 1 else " patches"


def _sinks_clause(sinks: Sequence[SinkToken]) -> str:
    """The sinks named with what each draws; past MAX_NAMED_SINKS, three names, a count and the peak."""
    if len(sinks) > MAX_NAMED_SINKS:
        names = _join_counted([sink.name for sink in sinks], patches=True)
        layers = sorted({layer for sink in sinks for layer in sink.layers})
        peak = max(sink.peak_share for sink in sinks)
        line = (
            f"{names} are attention sinks, drawing up to {_percent(peak)} of a layer's attention "
            f"({_layer_list(layers)})"
        )
    else:
        first, *others = sinks
        clauses = [f"{first.name} receives {_draw(first)}"] + [
            f"{sink.name} {_draw(sink)}" for sink in others
        ]
        line = f"{_join(clauses)}: {'an attention sink' if len(sinks) == 1 else 'attention sinks'}"
    ratios = [
        sink.norm_ratio for sink in sinks if sink.norm_ratio is not None and sink.norm_ratio >= NORM_FACTOR
    ]
    if 0 < len(ratios) <= MAX_NAMED_SINKS:
        line += f", with an output norm {_join([f'{ratio:.1f}×' for ratio in ratios])} the median patch's"
    elif ratios:
        line += f", {len(ratios)} of them with an output norm {_span(min(ratios), max(ratios))} the median patch's"
    return line[0].upper() + line[1:] + "."


def sink_sentence(report: SinkReport) -> str | None:
    """The one line a page prints under a map, from the numbers; None when no patch stands out.

    The whole line names at most MAX_NAMED_SINKS tokens (the largest sinks first, then tokens of high
    norm) and counts the rest, so that it stays short beside a map whatever an image does. Examples:
    "Patch (3, 9) receives 16% of layer 0's attention: an attention sink."; "Patch (2, 4), patch
    (7, 7), patch (1, 1) and 4 more patches are attention sinks, drawing up to 30% of a layer's
    attention (layers 0–2)." Prefix sinks are not mentioned: they are not on the map.
    """
    parts: list[str] = []
    sinks = report.patch_sinks
    if sinks:
        parts.append(_sinks_clause(sinks))
    sink_positions = {sink.position for sink in sinks}
    lone_high_norm = [item for item in report.high_norm_patches or () if item[:2] not in sink_positions]
    names_left = max(0, MAX_NAMED_SINKS - len(sinks))
    rule = f"over {NORM_FACTOR:g}× the median patch's norm"
    if lone_high_norm and names_left:
        names = [f"{_patch_name(item[:2])} ({item[2]:.1f}×)" for item in lone_high_norm[:names_left]]
        rest = len(lone_high_norm) - len(names)
        if rest > 0:
            names.append(f"{rest} more{_more_patches(rest)}")
        parts.append(f"High-norm output tokens ({rule}): {_join(names)}.")
    elif lone_high_norm:
        count = len(lone_high_norm)
        parts.append(
            f"{count} other{_more_patches(count)} {'has' if count == 1 else 'have'} an output norm {rule}."
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
    """The short statement of the method printed next to the map; it names at most MAX_NAMED_SINKS
    sinks in each of its clauses and counts the rest.

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
        names = _join_counted([sink.name for sink in plan.skipped], patches=True)
        noun = "sink at" if len(plan.skipped) == 1 else "sinks at"
        line += f" ({_layer_list(skipped_layers)} skipped: {noun} {names})"
    if len(plan.left_out) == 1:
        (sink,) = plan.left_out
        layers = [layer for layer in sink.layers if layer in plan.excluded]
        line += f"; sink {sink.name} left out of {_layer_list(layers)}"
    elif plan.left_out:
        names = _join_counted([sink.name for sink in plan.left_out], patches=True)
        line += f"; sinks {names} left out where they are sinks ({_layer_list(sorted(plan.excluded))})"
    if not plan.skipped and not plan.left_out:
        # From a later start layer, earlier layers were not looked at for this map.
        line += (
            "; no attention sinks found" if plan.start_layer == 0 else "; no attention sinks in these layers"
        )
    return line
