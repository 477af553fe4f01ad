"""Anatomy commands: position-embedding similarity, mean attention distance and patch-embedding filters."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from vitviz.cli.common import add_model_arguments, load_from_args
from vitviz.text import grid_size_text, picture_size_text

__all__ = ["add_commands"]

_DEFAULT_MODEL = "vit_small_patch14_dinov2"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Adds `posembed`, `attention-distance` and `filters` to the `python -m vitviz` parser."""
    posembed = subparsers.add_parser(
        "posembed", help="cosine similarity of every grid position's embedding with every other, as .npy"
    )
    add_model_arguments(posembed, _DEFAULT_MODEL)
    posembed.add_argument("--out", required=True, type=Path, metavar="SIM.npy")
    posembed.set_defaults(run=_run_posembed)

    distance = subparsers.add_parser(
        "attention-distance", help="mean attention distance per layer and head over images, as CSV"
    )
    distance.add_argument("images", nargs="+", metavar="IMAGE")
    add_model_arguments(distance, _DEFAULT_MODEL)
    distance.add_argument(
        "--batch-size", type=int, default=None, help="images per forward pass (default: as memory allows)"
    )
    distance.add_argument("--out", required=True, type=Path, metavar="D.csv")
    distance.set_defaults(run=_run_attention_distance)

    filters = subparsers.add_parser(
        "filters", help="principal components of the patch-embedding filters as an RGB tile picture"
    )
    add_model_arguments(filters, _DEFAULT_MODEL)
    filters.add_argument("--components", type=int, default=28, help="how many components (default 28)")
    filters.add_argument("--scale", type=int, default=4, help="picture pixels per filter value (default 4)")
    filters.add_argument("--out", required=True, type=Path, metavar="PCS.png")
    filters.set_defaults(run=_run_filters)


def _untrained_note(trained: bool) -> str:
    return "" if trained else " (random, untrained weights)"


def _run_posembed(args: argparse.Namespace) -> None:
    from vitviz.maths.posembed import local_fraction, position_embedding_similarity

    loaded = load_from_args(args)
    similarity = position_embedding_similarity(loaded.model, loaded.facts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, similarity.astype(np.float32))
    rows, cols = loaded.facts.grid_size
    near = local_fraction(similarity, (rows, cols))
    print(
        f"saved position similarity {similarity.shape[0]}×{similarity.shape[1]} (positions of the "
        f"{grid_size_text(rows=rows, columns=cols)}) to "
        f"{args.out}{_untrained_note(loaded.trained)}; most similar other position is a neighbour for "
        f"{near:.0%} of positions"
    )


def _print_progress(done: int, total: int) -> None:
    print(
        f"attention distance: {done}/{total} layer passes ({done / total:.0%})", file=sys.stderr, flush=True
    )


def _run_attention_distance(args: argparse.Namespace) -> None:
    from vitviz.forward.distance import attention_distances_over_images
    from vitviz.images import load_image_file
    from vitviz.preprocess import image_view

    images = [load_image_file(path) for path in args.images]
    loaded = load_from_args(args)
    views = [image_view(image, loaded.facts) for image in images]
    result = attention_distances_over_images(loaded, views, args.batch_size, progress=_print_progress)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    mean = result.mean  # (layers, heads)
    with args.out.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["layer", "head", "mean_distance_px"])
        for layer in range(mean.shape[0]):
            for head in range(mean.shape[1]):
                writer.writerow([layer, head, f"{mean[layer, head]:.4f}"])
    height, width = result.input_size
    print(
        f"saved mean attention distance of {mean.shape[0]} layers × {mean.shape[1]} heads over "
        f"{result.num_images} image(s) to {args.out}{_untrained_note(loaded.trained)}; pixels of the "
        f"{picture_size_text(width=width, height=height)} input, uniform attention would give "
        f"{result.uniform_reference:.1f} px"
    )


def _run_filters(args: argparse.Namespace) -> None:
    from vitviz.maths.filters import component_tiles, embedding_filter_components, tile_mosaic

    if args.components < 1 or args.scale < 1:
        raise ValueError("--components and --scale must be at least 1")
    loaded = load_from_args(args)
    components = embedding_filter_components(loaded.model, loaded.facts, args.components)
    height, width = components.components.shape[2:]  # each component is shaped like a filter
    picture = tile_mosaic(component_tiles(components.components), scale=args.scale)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(args.out, format="PNG")
    shares = ", ".join(f"{ratio:.1%}" for ratio in components.explained_variance_ratio[:5])
    print(
        f"saved {components.num_components} principal components of {components.num_filters} "
        f"filters of {picture_size_text(width=width, height=height)} to "
        f"{args.out}{_untrained_note(loaded.trained)}; "
        f"explained variance {components.explained_variance_ratio.sum():.1%} in all (first: {shares})"
    )
