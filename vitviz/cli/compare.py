"""The `probe` and `compare` commands: robustness curves, and two or three models side by side."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from vitviz.cli.common import (
    CommandError,
    add_class_argument,
    add_image_command,
    add_view_argument,
    terminal_progress,
)
from vitviz.methods import METHOD_NAMES

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from vitviz.figures.compare import OverlayPanel
    from vitviz.models import LoadedModel
    from vitviz.predict import Prediction
    from vitviz.preprocess import ImageView

__all__ = ["add_commands", "export_figure"]

_PROBE_KINDS = ("drop-salient", "drop-least-salient", "drop-random", "shuffle", "occlude")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Adds `probe` and `compare`."""
    probe = add_image_command(subparsers, _run_probe, "tf_efficientnet_lite0")
    probe.add_argument("--kind", choices=_PROBE_KINDS, default="drop-salient")
    _add_method_argument(probe, "salience for the salient drops")
    add_class_argument(probe, "the class whose probability is followed (default: the model's top class)")
    probe.add_argument("--steps", type=int, default=11, help="fractions from 0 to 1 (default 11)")
    probe.add_argument(
        "--remove-tokens", action="store_true", help="ViTs: take dropped tokens out of the sequence"
    )
    probe.add_argument("--seed", type=int, default=0, help="seed of drop-random and shuffle")
    add_view_argument(probe)
    probe.add_argument("--json", action="store_true", help="print JSON instead of a table")

    compare = subparsers.add_parser(
        "compare", help="two or three models' predictions and maps side by side, as .png or .html"
    )
    compare.add_argument("image", metavar="IMAGE")
    compare.add_argument("--models", nargs="+", required=True, metavar="NAME", help="two or three timm names")
    compare.add_argument(
        "--weights",
        nargs="+",
        default=["bundled"],
        metavar="W",
        help="one weights source per model, or one for all: bundled, hub, random or a file",
    )
    compare.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    _add_method_argument(compare, "map for every model that allows it")
    add_class_argument(compare, "the class every map explains (default: each model's top class)")
    compare.add_argument("--topk", type=int, default=5, help="predictions per model (default 5)")
    add_view_argument(compare)
    compare.add_argument("--out", required=True, type=Path, metavar="FIG.png|.html")
    compare.set_defaults(run=_run_compare)


def _add_method_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--method",
        choices=METHOD_NAMES,
        default=None,
        help=f"{what} (default: gradcam for CNNs, rollout for ViTs)",
    )


def _run_probe(args: argparse.Namespace) -> None:
    """target-class probability as patches are dropped, shuffled or occluded"""
    from vitviz.cli.common import load_from_args
    from vitviz.images import load_image_file
    from vitviz.methods.probes import run_probe
    from vitviz.preprocess import image_view

    if args.steps < 2:
        raise CommandError(f"--steps must be at least 2, got {args.steps}")
    image = load_image_file(args.image)
    loaded = load_from_args(args)
    fractions = [step / (args.steps - 1) for step in range(args.steps)]
    view = image_view(image, loaded.facts, args.view)
    curve = run_probe(
        loaded,
        view,
        args.kind,
        fractions,
        method=args.method,
        class_index=args.class_index,
        remove_tokens=args.remove_tokens,
        seed=args.seed,
    )
    baseline = None
    if args.kind in ("drop-salient", "drop-least-salient"):  # the random order makes the area readable
        baseline = run_probe(
            loaded,
            view,
            "drop-random",
            fractions,
            class_index=curve.target_index,
            remove_tokens=args.remove_tokens,
            seed=args.seed,
        )
    if not loaded.trained:
        print("note: random (untrained) weights: this curve shows an untrained model", file=sys.stderr)
    if args.json:
        payload = curve.to_json()
        if baseline is not None:
            payload["random_order_probability"] = [float(value) for value in baseline.target_probability]
        print(json.dumps(payload))
        return
    how = f" by {curve.method}" if curve.method else ""
    print(f"{curve.model} · {curve.kind}{how} · class {curve.target_index} ({curve.target_label})")
    if baseline is None:
        print("fraction  probability")
        for fraction, probability in zip(curve.fractions, curve.target_probability, strict=True):
            print(f"{fraction:8.3f}  {probability:11.4f}")
        print(f"area under the curve: {curve.area:.4f}")
        return
    print("fraction  probability  random order")
    for fraction, probability, random in zip(
        curve.fractions, curve.target_probability, baseline.target_probability, strict=True
    ):
        print(f"{fraction:8.3f}  {probability:11.4f}  {random:12.4f}")
    print(f"area under the curve: {curve.area:.4f} (random order: {baseline.area:.4f})")


def _weights_per_model(models: list[str], weights: list[str]) -> list[str]:
    if len(weights) == 1:
        return weights * len(models)
    if len(weights) != len(models):
        raise CommandError(
            f"--weights takes one source per model ({len(models)}) or one for all, got {len(weights)}"
        )
    return weights


def _model_panel(
    loaded: LoadedModel,
    view: ImageView,
    method: str | None,
    class_index: int | None,
    topk: int,
    weights: str,
) -> tuple[OverlayPanel, list[Prediction] | None, str]:
    """One model's map on the view (its own default method when the asked one does not fit), its top-k
    and the method used. Without --class the map explains the top class the bars show."""
    from vitviz.figures.compare import SCALE_PERCENTILE, OverlayPanel
    from vitviz.methods import available_methods, default_method, explain_pixels, method_title
    from vitviz.models import describe_weights
    from vitviz.predict import predict

    facts = loaded.facts
    chosen = method if method in available_methods(facts) else default_method(facts)
    if method is not None and chosen != method:
        print(f"note: {method} does not fit {facts.name}; using {chosen}", file=sys.stderr)
    predictions = predict(loaded, [view], topk)[0] if facts.has_classifier else None
    explained = None
    if predictions:
        explained = class_index if class_index is not None else predictions[0].index
    result = explain_pixels(loaded, view.tensor, chosen, None if explained is None else [explained])[0]
    target = f" · {result.target_label.split(',')[0]} ({result.target_index})" if result.target_label else ""
    untrained = "" if loaded.trained else " (untrained)"
    title = f"{facts.name}{untrained} · {describe_weights(weights)}<br>{method_title(chosen)}{target}"
    if result.note:  # a constant map is said, never drawn as relevance everywhere; a flat one is said too
        print(f"note: {facts.name}: {result.note}", file=sys.stderr)
    if result.constant_note:
        return OverlayPanel(title, None, note=result.constant_note, pixels=view.pixels), predictions, chosen
    shown = result.normalised(SCALE_PERCENTILE)
    return OverlayPanel(title, shown, note=result.flat_note or "", pixels=view.pixels), predictions, chosen


def export_figure(figure: go.Figure, path: Path, title: str | None = None) -> None:
    """Writes a Plotly figure as self-contained .html, or as .png through kaleido and Chromium."""
    from vitviz.export import ExportError, figure_html, figure_png

    suffix = path.suffix.lower()
    if suffix not in (".png", ".html"):
        raise CommandError(f"--out must end in .png or .html, not {path.suffix or 'nothing'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".html":
        path.write_text(figure_html(figure, title), encoding="utf-8")
        return
    try:
        path.write_bytes(figure_png(figure, scale=1))
    except ExportError as error:
        raise CommandError(str(error)) from error


def _run_compare(args: argparse.Namespace) -> None:
    from vitviz.device import default_device
    from vitviz.figures.compare import compare_figure
    from vitviz.images import load_image_file
    from vitviz.methods.faithfulness import faithfulness
    from vitviz.methods.verdicts import deletion_verdicts
    from vitviz.models import load_model
    from vitviz.preprocess import image_view

    if not 2 <= len(args.models) <= 3:
        raise CommandError(f"--models takes two or three names, got {len(args.models)}")
    if args.out.suffix.lower() not in (".png", ".html"):  # checked before minutes of work
        raise CommandError(f"--out must end in .png or .html, not {args.out.suffix or 'nothing'}")
    if args.topk < 1:
        raise CommandError(f"--topk must be at least 1, got {args.topk}")
    weights = _weights_per_model(args.models, args.weights)
    image = load_image_file(args.image)
    device = args.device or default_device()
    panels, predictions, scores = [], [], []
    for name, source in zip(args.models, weights, strict=True):
        loaded = load_model(name, source, device)
        view = image_view(image, loaded.facts, args.view)
        panel, top, method = _model_panel(loaded, view, args.method, args.class_index, args.topk, source)
        panels.append(panel)
        predictions.append(top)
        if top:
            explained = args.class_index if args.class_index is not None else top[0].index
            progress = terminal_progress(f"faithfulness of {name}", "steps")
            scores += faithfulness(loaded, view, [method], explained, progress=progress)
        if not loaded.trained:
            print(f"note: {name} has random (untrained) weights", file=sys.stderr)
    figure = compare_figure(image, panels, predictions, f"{Path(args.image).name} · {args.view} view")
    export_figure(figure, args.out, title=f"vitviz compare · {Path(args.image).name}")
    print(f"saved comparison of {', '.join(args.models)} to {args.out}")
    for score in scores:
        print(
            f"{score.model} · {score.method} · class {score.target_index}: deletion AUC "
            f"{score.deletion_auc:.4f} (random order {score.random_deletion_auc:.4f}, least salient first "
            f"{score.least_first_deletion_auc:.4f}); insertion AUC {score.insertion_auc:.4f} "
            f"(random order {score.random_insertion_auc:.4f})"
        )
    for verdict in deletion_verdicts(scores):  # the sentences the Compare page's Faithfulness tab shows
        print(verdict)
