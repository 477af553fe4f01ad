"""The first commands: predict, explain (any method by name) and prepare-weights."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vitviz.cli.common import (
    CommandError,
    add_class_argument,
    add_image_command,
    add_listing_arguments,
    add_model_arguments,
    add_view_argument,
    load_from_args,
    terminal_progress,
)
from vitviz.methods import METHOD_NAMES
from vitviz.text import grid_size_text

if TYPE_CHECKING:
    from vitviz.methods import ExplanationResult
    from vitviz.models import LoadedModel
    from vitviz.preprocess import ImageView

__all__ = ["add_commands"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser("predict", help="top-k ImageNet predictions for images")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    add_model_arguments(predict, "tf_efficientnet_lite0")
    add_listing_arguments(predict, "how many classes to list")
    add_view_argument(predict, aspect=True)
    predict.set_defaults(run=_run_predict)

    explain = add_image_command(commands, _run_explain, "vit_small_patch14_dinov2")
    explain.add_argument("--method", choices=METHOD_NAMES, default="rollout")
    add_class_argument(
        explain, "class to explain for class-specific methods (default: the model's top class)"
    )
    explain.add_argument(
        "--target-layer",
        default=None,
        help="CAM methods only: features, stem, tokens or a module name (default per family)",
    )
    explain.add_argument("--steps", type=int, default=32, help="integrated-gradients only (default 32)")
    explain.add_argument(
        "--layer",
        type=int,
        default=None,
        help="layer from 0 for --method attention; negative counts from the end (default -1, the last; "
        "on Swin, MaxViT and MobileViT 0, the first layer, on the finest map)",
    )
    explain.add_argument("--head", type=int, default=None, help="head from 0 (default: mean over heads)")
    explain.add_argument("--head-fusion", choices=("mean", "max", "min"), default="mean", help="rollout only")
    explain.add_argument("--discard-ratio", type=float, default=0.0, help="rollout only, in [0, 1)")
    explain.add_argument(
        "--start-layer", type=int, default=0, help="rollout, grad-rollout, chefer and legrad"
    )
    explain.add_argument(
        "--conv-gamma",
        type=float,
        default=0.25,
        help="attnlrp only: γ of the patch convolution (default 0.25)",
    )
    explain.add_argument(
        "--linear-gamma", type=float, default=0.05, help="attnlrp only: γ of the linear layers (default 0.05)"
    )
    explain.add_argument(
        "--sinks",
        choices=("exclude", "raw"),
        default="exclude",
        help="rollout only: leave attention sinks out (default) or multiply every layer as it is",
    )
    add_view_argument(explain, aspect=True)
    explain.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="MAP.npy",
        help="the map's file; .npy is added when missing",
    )

    prepare = commands.add_parser(
        "prepare-weights", help="convert the bundled offline weights into the cache"
    )
    prepare.set_defaults(run=_run_prepare_weights)


def _run_predict(args: argparse.Namespace) -> None:
    from vitviz.images import load_image_file
    from vitviz.predict import predict
    from vitviz.preprocess import image_view

    images = [load_image_file(path) for path in args.images]
    loaded = load_from_args(args)
    results = predict(
        loaded, [image_view(image, loaded.facts, args.view) for image in images], topk=args.topk
    )
    if args.json:
        payload = [
            {"image": path, "predictions": [asdict(p) for p in predictions]}
            for path, predictions in zip(args.images, results, strict=True)
        ]
        print(json.dumps(payload, indent=2))
        return
    if not loaded.trained:
        print("note: random (untrained) weights: these predictions mean nothing", file=sys.stderr)
    for path, predictions in zip(args.images, results, strict=True):
        print(path)
        for p in predictions:
            print(f"  {p.probability:7.2%}  {p.index:5d}  {p.label}")


def _run_explain(args: argparse.Namespace) -> None:
    """save an explanation map over the token / feature grid as .npy"""
    from vitviz.forward.attention import record_attention
    from vitviz.images import load_image_file
    from vitviz.maths.attention import class_attention_map, rollout_relevance
    from vitviz.methods.base import map_is_constant
    from vitviz.preprocess import image_view

    out = _map_file(args.out)  # before anything slow: a folder given as --out is refused at once
    image = load_image_file(args.image)
    loaded = load_from_args(args)
    view = image_view(image, loaded.facts, args.view)
    target = ""
    # The captured record and its sink handling serve global attention (and say why a CNN has none);
    # CaiT's class-attention rollout and Swin's windows go through the method registry.
    if args.method in ("rollout", "attention") and (
        loaded.facts.global_attention or loaded.facts.family == "cnn"
    ):
        record = record_attention(loaded, view)
        if args.method == "rollout":
            values = rollout_relevance(
                record, args.head_fusion, args.discard_ratio, args.start_layer, sinks=args.sinks
            )
        else:
            layer = -1 if args.layer is None else args.layer
            values = class_attention_map(record, _layer_index(layer, record.num_layers), args.head)
    else:
        result = _class_specific_map(loaded, view, args)
        values = result.values
        if result.target_index is not None:  # class-agnostic maps (EigenCAM, …) explain no class
            target = f" for class {result.target_index} ({result.target_label})"
    if map_is_constant(values):
        print(f"note: the {args.method} map is constant: it singles out no patch.", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, values.astype(np.float32))
    rows, cols = values.shape
    trained = "" if loaded.trained else " (random, untrained weights)"
    print(
        f"saved {args.method} map on the {grid_size_text(rows=rows, columns=cols)}{target} to {out}{trained}"
    )


def _map_file(out: Path) -> Path:
    """The file np.save really writes for --out: `out` when it ends in .npy, else `out` + ".npy".

    Raises:
        CommandError: that path is a folder.
    """
    file = out if out.suffix == ".npy" else out.with_name(out.name + ".npy")
    for path in (out, file):
        if path.is_dir():
            raise CommandError(f"--out {path} is a folder; name a file in it, such as {path / 'map.npy'}")
    return file


def _layer_index(layer: int, num_layers: int) -> int:
    """--layer from 0, or from the end when negative (-1 is the last).

    Raises:
        CommandError: outside -num_layers..num_layers - 1, reported as the user gave it.
    """
    if not -num_layers <= layer < num_layers:
        raise CommandError(
            f"--layer {layer} is outside {-num_layers}..{num_layers - 1} (the model has {num_layers} layers)."
        )
    return layer % num_layers


def _class_specific_map(loaded: LoadedModel, view: ImageView, args: argparse.Namespace) -> ExplanationResult:
    """The gradient, CAM and perturbation methods of `explain`, on the view of the image."""
    from vitviz.methods import METHODS, explanation_map

    options: dict[str, object] = {}
    if METHODS[args.method].takes_layer and args.target_layer:
        options["layer"] = args.target_layer
    if args.method in ("grad-rollout", "chefer", "legrad"):
        options["start_layer"] = args.start_layer
    if args.method == "attnlrp":
        options.update(conv_gamma=args.conv_gamma, linear_gamma=args.linear_gamma)
    if args.method in ("grad-rollout", "rollout"):
        options["discard_ratio"] = args.discard_ratio
    if args.method == "rollout":
        options.update(head_fusion=args.head_fusion, start_layer=args.start_layer)
    if args.method == "attention":  # CaiT's class-attention layers, Swin's, MaxViT's and MobileViT's layers
        options.update(
            {name: value for name, value in (("layer", args.layer), ("head", args.head)) if value is not None}
        )
    if args.method == "integrated-gradients":
        if args.steps < 1:
            raise CommandError(f"--steps must be at least 1, got {args.steps}")
        options["steps"] = args.steps
    from vitviz.progress import reporting

    # Score-CAM and Ablation-CAM report their channels (the other methods take a pass or a few).
    unit = {"scorecam": "masks", "ablationcam": "channels"}.get(args.method, "steps")
    with reporting(terminal_progress(METHODS[args.method].title, unit)):
        return explanation_map(loaded, view, args.method, args.class_index, **options)


def _run_prepare_weights(args: argparse.Namespace) -> None:
    from vitviz.weights import prepare_bundled_weights

    for path in prepare_bundled_weights():
        print(path)
