"""Intervene and verify: `ablate` (heads off), `lens` (logit lens) and `sanity` (cascading randomisation)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

from vitviz.cli.common import (
    CommandError,
    add_class_argument,
    add_image_command,
    add_listing_arguments,
    load_from_args,
    terminal_progress,
)
from vitviz.methods import METHOD_NAMES

if TYPE_CHECKING:
    from vitviz.predict import Prediction

__all__ = ["add_commands"]

# The same words as `vitviz.capture.ABLATION_MODES`, repeated so that --help does not import torch.
_ABLATION_MODES = ("zero", "mean")


def add_commands(commands: argparse._SubParsersAction) -> None:
    ablate = add_image_command(commands, _run_ablate, "vit_small_patch14_dinov2")
    ablate.add_argument(
        "--heads",
        required=True,
        help="L:H,L:H (layers and heads from 0), a whole layer as L or L:*, all, or none",
    )
    ablate.add_argument("--mode", choices=_ABLATION_MODES, default="zero", help="default zero")
    add_listing_arguments(ablate, "classes listed")

    lens = add_image_command(commands, _run_lens, "vit_small_patch14_dinov2")
    add_listing_arguments(lens, "classes listed per layer")

    sanity = add_image_command(commands, _run_sanity, "vit_small_patch14_dinov2")
    sanity.add_argument("--method", choices=METHOD_NAMES, default="rollout", help="default rollout")
    add_class_argument(sanity, "class explained at every stage (default: the model's top class)")
    sanity.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    sanity.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _check_topk(topk: int) -> None:
    if topk < 1:
        raise CommandError(f"--topk must be at least 1, got {topk}")


def _untrained_note(trained: bool) -> None:
    if not trained:
        print("note: random (untrained) weights: these predictions mean nothing", file=sys.stderr)


def _predictions_line(predictions: list[Prediction]) -> str:
    return ", ".join(f"{p.label} ({p.index}) {p.probability:.2%}" for p in predictions)


def _run_ablate(args: argparse.Namespace) -> None:
    """switch attention heads off and compare the top-k predictions before and after

    Switches heads off in every forward of one image: each head's slice of its layer's output-projection
    input is zeroed (--mode zero) or replaced by its mean over the image's tokens (--mode mean).
    """
    from vitviz.forward.ablation import ablate_heads
    from vitviz.images import load_image_file
    from vitviz.maths.ablation import parse_heads
    from vitviz.models import no_token_attention_reason
    from vitviz.preprocess import image_view

    _check_topk(args.topk)
    image = load_image_file(args.image)
    loaded = load_from_args(args)
    facts = loaded.facts
    if not facts.global_attention or facts.num_heads == 0:
        raise CommandError(no_token_attention_reason(facts, "attention heads to switch off"))
    heads = parse_heads(args.heads, facts.num_layers, facts.num_heads)
    result = ablate_heads(loaded, image_view(image, loaded.facts), heads, args.mode, args.topk)
    if args.json:
        payload = {
            "heads": [[layer, head] for layer, head in result.heads],
            "before": [asdict(p) for p in result.before],
            "after": [asdict(p) for p in result.after],
        }
        print(json.dumps(payload, indent=2))
        return
    _untrained_note(loaded.trained)
    count = len(result.heads)
    print(f"{count} of {facts.num_layers * facts.num_heads} heads off ({args.mode})")
    for name, predictions in (("before", result.before), ("after", result.after)):
        print(name)
        for p in predictions:
            print(f"  {p.probability:7.2%}  {p.index:5d}  {p.label}")


def _run_lens(args: argparse.Namespace) -> None:
    """logit lens: each layer's tokens read through the final norm and head

    Reads the residual stream after every block through the model's own final norm and head (pooled as
    the model pools) and lists each layer's top classes; layers from 0.
    """
    from vitviz.forward.logit_lens import logit_lens
    from vitviz.images import load_image_file
    from vitviz.preprocess import image_view

    _check_topk(args.topk)
    image = load_image_file(args.image)
    loaded = load_from_args(args)
    lens = logit_lens(loaded, image_view(image, loaded.facts), args.topk)
    if args.json:
        payload = {
            "layers": [
                {"layer": layer, "predictions": [asdict(p) for p in predictions]}
                for layer, predictions in enumerate(lens.predictions)
            ]
        }
        print(json.dumps(payload, indent=2))
        return
    _untrained_note(loaded.trained)
    for layer, predictions in enumerate(lens.predictions):
        print(f"layer {layer:2d}: {_predictions_line(predictions)}")


def _run_sanity(args: argparse.Namespace) -> None:
    """cascading randomisation: does a method's map change when the weights are destroyed?

    Re-draws a copy's weights from the head down, one stage at a time, and prints the Spearman rank
    correlation of the method's map with the original at each stage (null: the map became constant).
    """
    from vitviz.images import load_image_file
    from vitviz.methods.sanity import UNFAITHFUL_RANK_CORRELATION, cascading_randomisation
    from vitviz.preprocess import image_view

    image = load_image_file(args.image)
    loaded = load_from_args(args)
    view = image_view(image, loaded.facts)
    progress = terminal_progress(f"sanity check of {args.method}", "maps")
    result = cascading_randomisation(
        loaded, view, args.method, args.class_index, seed=args.seed, progress=progress
    )
    if args.json:
        payload = {"stages": list(result.stages), "rank_correlation": list(result.rank_correlation)}
        print(json.dumps(payload, indent=2))
        return
    for stage, value in zip(result.stages, result.rank_correlation, strict=True):
        shown = "constant map" if value is None else f"{value:+.3f}"
        print(f"  {stage:<16} {shown}")
    checkpoint = result.stages[result.checkpoint]
    value = result.rank_correlation[result.checkpoint]
    if value is None:
        print(
            f"{args.method}: with weights random down to {checkpoint} the map is constant: it depends on them"
        )
    elif result.flagged:
        print(
            f"{args.method}: |ρ| = {abs(value):.2f} > {UNFAITHFUL_RANK_CORRELATION} with weights random down to "
            f"{checkpoint}: the map barely depends on the weights (not faithful to them)"
        )
    else:
        print(
            f"{args.method}: |ρ| = {abs(value):.2f} ≤ {UNFAITHFUL_RANK_CORRELATION} with weights random down to "
            f"{checkpoint}: the map depends on the weights"
        )
