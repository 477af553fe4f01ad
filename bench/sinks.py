"""Attention sinks on the bundled DINOv2: raw vs sink-aware rollout on every built-in photo, and what detection costs.

Run with `.venv/bin/python bench/sinks.py [--view crop|whole] [--png-dir DIR] [--validate]`. With
--validate, prints only the sink rule's validation table: per picture (photos, textured composites,
flat shapes, line drawings, builtin:shapes) the sinks the rule finds, those the earlier rule (40× the
median patch's share and 5/N) found, and whether each rollout's peak cell touches the object. Else, per photo:
the sinks found, the peak/median ratio of both maps, and for the photos with a hand-drawn box
(tests/support/subjects.py) how much of the relevance above the median lies in it; then the
candidates compared for the default, the colour-scale clip, and the cost of detection next to one
forward pass. With --png-dir, writes one PNG per photo (photo with its box, raw map on two scales,
default map) for a person to look at.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import interleaved_medians, machine  # noqa: E402

from tests.support.subjects import (  # noqa: E402
    SUBJECT_BOXES,
    box_coverage,
    box_in_view,
    largest_outside_share,
    subject_concentration,
)
from tests.support.validation_pictures import (  # noqa: E402
    KnownPicture,
    flat_shapes,
    line_drawings,
    object_coverage,
    peak_on_object,
    textured_composites,
)
from vitviz.figures.scales import colour_scale  # noqa: E402
from vitviz.finetune.shapes import SHAPE_CLASSES, make_shapes  # noqa: E402
from vitviz.forward.attention import record_attention  # noqa: E402
from vitviz.forward.token_features import output_tokens  # noqa: E402
from vitviz.images import BUILTIN_PHOTOS, builtin_photo  # noqa: E402
from vitviz.maths.attention import AttentionRecord, rollout_relevance  # noqa: E402
from vitviz.maths.rollout import attention_rollout, rollout_map  # noqa: E402
from vitviz.maths.sinks import (  # noqa: E402
    SinkReport,
    attention_shares,
    detect_sinks,
    plan_rollout,
    rollout_statement,
    sink_sentence,
)
from vitviz.models import LoadedModel, load_model  # noqa: E402
from vitviz.preprocess import ViewMode, image_view  # noqa: E402

# Inferno's stops, for the PNGs (no plotting library needed).
_INFERNO = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64
)


def peak_over_median(relevance: np.ndarray) -> float:
    return float(relevance.max() / np.median(relevance))


def leave_sinks_out_from_layer_zero(record: AttentionRecord, report: SinkReport) -> np.ndarray:
    """The candidate not chosen: every layer, each sink's column zeroed in the layers where it dominates."""
    excluded = {layer: [sink.token for sink in report.patch_sinks_in(layer)] for layer in report.sink_layers}
    layers = [torch.tensor(layer)[None] for layer in record.attentions]
    rollout = attention_rollout(layers, num_prefix_tokens=record.num_prefix_tokens, excluded_tokens=excluded)
    return rollout_map(rollout, record.num_prefix_tokens, record.grid_size, record.pooling)[0].numpy()


def box_columns(relevance: np.ndarray, coverage: np.ndarray | None) -> str:
    if coverage is None:
        return f"{'—':>6} {'—':>6} {'—':>4}"
    row, col = np.unravel_index(np.argmax(relevance), relevance.shape)
    inside = "yes" if coverage[row, col] > 0.5 else "no"
    concentration = subject_concentration(relevance, coverage)
    return f"{concentration:6.2f} {largest_outside_share(relevance, coverage):6.1%} {inside:>4}"


def coloured(relevance: np.ndarray, size: int, clip_percentile: float | None) -> np.ndarray:
    """(size, size, 3) uint8 Inferno picture of a map on `colour_scale`'s rule, cells kept square."""
    scale = colour_scale(relevance, "relevance", clip_percentile)
    level = np.clip((relevance - scale.zmin) / (scale.zmax - scale.zmin), 0.0, 1.0) * (len(_INFERNO) - 1)
    lower = np.floor(level).astype(int).clip(0, len(_INFERNO) - 2)
    weight = (level - lower)[..., None]
    rgb = _INFERNO[lower] * (1 - weight) + _INFERNO[lower + 1] * weight  # (rows, cols, 3)
    picture = Image.fromarray(rgb.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(picture)


def save_panel(
    path: Path,
    pixels: np.ndarray,
    box: tuple[float, float, float, float] | None,
    maps: dict[str, tuple[np.ndarray, float | None]],
) -> None:
    """Photo (with its box) and each (map, clip percentile) laid over it at 60%, side by side, 2× enlarged."""
    scale, size = 2, pixels.shape[0]
    tiles = [pixels]
    for relevance, clip_percentile in maps.values():
        tiles.append((0.4 * pixels + 0.6 * coloured(relevance, size, clip_percentile)).astype(np.uint8))
    panel = Image.new("RGB", (len(tiles) * (size + 8) * scale, (size + 20) * scale), "white")
    draw = ImageDraw.Draw(panel)
    for index, (tile, title) in enumerate(zip(tiles, ["photo", *maps], strict=True)):
        left = index * (size + 8) * scale
        panel.paste(Image.fromarray(tile).resize((size * scale, size * scale)), (left, 20 * scale))
        draw.text((left + 4, 6), title, fill="black")
        if box is not None:
            x0, y0, x1, y1 = (round(value * scale) for value in box)
            draw.rectangle(
                (left + x0, 20 * scale + y0, left + x1, 20 * scale + y1), outline=(0, 255, 0), width=3
            )
    panel.save(path)


def photo_rows(loaded: LoadedModel, view: ViewMode, png_dir: Path | None) -> None:
    print(
        "\n## Raw vs default rollout (concentration: box's share of the relevance above the median over its area)"
    )
    print(f"{'photo':20} {'map':8} {'peak/med':>8} {'conc.':>6} {'out.max':>6} {'peak in':>4}")
    for name in BUILTIN_PHOTOS:
        photo = builtin_photo(name)
        record = record_attention(loaded, image_view(photo, loaded.facts, view))
        assert record.view is not None
        # output_tokens always reads the default view (the crop): norms only where the views agree
        tokens = output_tokens(loaded, image_view(photo, loaded.facts)) if view == "crop" else None
        report = detect_sinks(record, tokens=tokens)
        box = box_in_view(SUBJECT_BOXES[name], record.view) if name in SUBJECT_BOXES else None
        coverage = box_coverage(box, record.grid_size, loaded.facts.input_size) if box else None
        maps = {
            "raw": rollout_relevance(record, sinks="raw"),
            "default": rollout_relevance(record, sink_report=report),
        }
        for label, relevance in maps.items():
            print(
                f"{name:20} {label:8} {peak_over_median(relevance):8.1f} {box_columns(relevance, coverage)}"
            )
        print(f"{'':20} {sink_sentence(report) or 'no sink'}")
        print(f"{'':20} {rollout_statement(plan_rollout(report))}")
        if png_dir is not None:
            png_dir.mkdir(parents=True, exist_ok=True)
            stem = name.split(" ")[0]
            panels = {
                "raw, scaled to its maximum": (maps["raw"], None),
                "raw, clipped at the 99th percentile": (maps["raw"], 99.0),
                "default, clipped at the 99th percentile": (maps["default"], 99.0),
            }
            save_panel(png_dir / f"{stem}-{view}.png", record.view.pixels, box, panels)


def candidate_rows(loaded: LoadedModel, view: ViewMode) -> None:
    print("\n## Candidates for the default, on the boxed photos (conc. / largest outside cell / peak in box)")
    print(f"{'photo':16} {'raw':>20}   {'sinks left out, from 0':>20}   {'after sink layers':>20}")
    for name in SUBJECT_BOXES:
        record = record_attention(loaded, image_view(builtin_photo(name), loaded.facts, view))
        assert record.view is not None
        report = detect_sinks(record)
        box = box_in_view(SUBJECT_BOXES[name], record.view)
        coverage = box_coverage(box, record.grid_size, loaded.facts.input_size)
        cells = [
            box_columns(relevance, coverage)
            for relevance in (
                rollout_relevance(record, sinks="raw"),
                leave_sinks_out_from_layer_zero(record, report),
                rollout_relevance(record, sink_report=report),
            )
        ]
        print(f"{name:16} {cells[0]:>20}   {cells[1]:>20}   {cells[2]:>20}")


def scale_rows(loaded: LoadedModel, view: ViewMode) -> None:
    print("\n## Colour scale on raw rollout: the top colour's value over the median cell")
    print(f"{'photo':20} {'max':>6} {'p99.5':>6} {'p99':>6} {'p98':>6} {'p95':>6}")
    for name in BUILTIN_PHOTOS:
        raw = rollout_relevance(
            record_attention(loaded, image_view(builtin_photo(name), loaded.facts, view)), sinks="raw"
        )
        median = np.median(raw)
        tops = [raw.max(), *(np.percentile(raw, p) for p in (99.5, 99, 98, 95))]
        print(f"{name:20} " + " ".join(f"{top / median:6.1f}" for top in tops))


def cost_rows(loaded: LoadedModel, runs: int) -> None:
    photo = builtin_photo("cat (chelsea)")
    pixels = image_view(photo, loaded.facts).tensor
    record = record_attention(loaded, image_view(photo, loaded.facts))
    tokens = output_tokens(loaded, image_view(photo, loaded.facts))
    report = detect_sinks(record)

    def forward() -> None:
        with torch.inference_mode():
            loaded.model(pixels)

    medians = interleaved_medians(
        {
            "one forward (fused attention)": forward,
            "record_attention (forward + capture)": lambda: record_attention(
                loaded, image_view(photo, loaded.facts)
            ),
            "detect_sinks(record)": lambda: detect_sinks(record),
            "detect_sinks(record, tokens)": lambda: detect_sinks(record, tokens=tokens),
            "rollout, raw": lambda: rollout_relevance(record, sinks="raw"),
            "rollout, default (detects)": lambda: rollout_relevance(record),
            "rollout, default (report given)": lambda: rollout_relevance(record, sink_report=report),
        },
        runs=runs,
    )
    forward_s = medians["one forward (fused attention)"]
    print(f"\n## Cost, cat photo, median of {runs} interleaved runs")
    for label, seconds in medians.items():
        print(f"{label:40} {seconds * 1000:8.1f} ms  {seconds / forward_s:5.2f}× a forward")


def median_rule_sinks(record: AttentionRecord) -> int:
    """Patches the earlier rule called sinks: in some layer, 40× the median patch's share and 5/N."""
    shares = attention_shares(record.attentions)[:, record.num_prefix_tokens :]  # (layers, patches)
    median = np.median(shares, axis=1, keepdims=True)
    floor = 5.0 / record.attentions.shape[-1]
    return int(((shares >= 40.0 * median) & (shares >= floor)).any(axis=0).sum())


def pointing(relevance: np.ndarray, coverage: np.ndarray | None) -> str:
    """Whether the map's brightest cell touches the object (`peak_on_object`); "–" without a known object."""
    if coverage is None:
        return "–"
    return "yes" if peak_on_object(relevance, coverage) else "no"


def validation_rows(loaded: LoadedModel, view: ViewMode) -> None:
    print(
        f"\n## The sink rule's validation ({view} view): sinks found, earlier rule, rollout peak on the object"
    )
    print(f"{'set':12} {'picture':24} {'sinks':>5} {'before':>6} {'default':>7} {'raw':>4}  where")
    photos = [(name, builtin_photo(name), None) for name in BUILTIN_PHOTOS]
    known = [
        ("composite", textured_composites()),
        ("flat shape", flat_shapes()),
        ("drawing", line_drawings()),
    ]
    probe_shapes = [
        (f"{SHAPE_CLASSES[item.label]} {index}", item.image, None)
        for index, item in enumerate(make_shapes(per_class=2, seed=0))
    ]
    rows: list[tuple[str, str, object, KnownPicture | None]] = [
        ("photo", name, image, None) for name, image, _ in photos
    ]
    rows += [(kind, picture.name, picture.image, picture) for kind, pictures in known for picture in pictures]
    rows += [("shapes data", name, image, None) for name, image, _ in probe_shapes]
    for kind, name, image, picture in rows:
        record = record_attention(loaded, image_view(image, loaded.facts, view))
        assert record.view is not None
        report = detect_sinks(record)
        if picture is not None:
            coverage = object_coverage(picture, loaded.facts, view)
        elif name in SUBJECT_BOXES:
            box = box_in_view(SUBJECT_BOXES[name], record.view)
            coverage = box_coverage(box, record.grid_size, loaded.facts.input_size)
        else:
            coverage = None
        default = pointing(rollout_relevance(record, sink_report=report), coverage)
        raw = pointing(rollout_relevance(record, sinks="raw"), coverage)
        where = ", ".join(
            f"{sink.name} L{sink.layers[0]} h{sink.heads[0]} {sink.head_draws[0]:.2f}/{sink.query_fractions[0]:.2f}"
            for sink in report.patch_sinks
        )
        print(
            f"{kind:12} {name[:24]:24} {len(report.patch_sinks):5d} {median_rule_sinks(record):6d} "
            f"{default:>7} {raw:>4}  {where}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--png-dir", type=Path, help="write one PNG per photo here (photo, raw map, default map)"
    )
    parser.add_argument("--runs", type=int, default=15, help="timing runs per measurement")
    parser.add_argument(
        "--view", choices=["crop", "whole"], default="crop", help="what the model sees of each photo"
    )
    parser.add_argument("--validate", action="store_true", help="print only the sink rule's validation table")
    args = parser.parse_args()
    print(machine())
    print(
        f"load average: {Path('/proc/loadavg').read_text().split()[:3]}"
        if Path("/proc/loadavg").exists()
        else ""
    )
    loaded = load_model("vit_small_patch14_dinov2", "bundled", "cpu")
    print(f"view: {args.view}")
    if args.validate:
        validation_rows(loaded, args.view)
        return
    photo_rows(loaded, args.view, args.png_dir)
    candidate_rows(loaded, args.view)
    scale_rows(loaded, args.view)
    cost_rows(loaded, args.runs)


if __name__ == "__main__":
    main()
