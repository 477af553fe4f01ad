"""`python -m vitviz arena`: every explanation method scored on images and ranked; runs under torchrun."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from vitviz.cli.common import CommandError, add_command, add_model_arguments, add_view_argument
from vitviz.methods import METHOD_NAMES

if TYPE_CHECKING:
    from vitviz.arena import ArenaImage

__all__ = ["BUILTIN_PHOTOS_SPEC", "RUN_PREFIX", "add_commands", "arena_images"]

BUILTIN_PHOTOS_SPEC = "builtin:photos"  # every photo shipped in scikit-image and scikit-learn
RUN_PREFIX = "run:"  # "run:NAME": a fine-tuned run's held-out (validation) images


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Adds `arena`."""
    arena = add_command(commands, _run_arena)
    arena.add_argument(
        "images",
        nargs="+",
        metavar="IMAGES",
        help=f"image files, folders of images, .zip archives, {BUILTIN_PHOTOS_SPEC}, or {RUN_PREFIX}NAME "
        "(a fine-tuned run's held-out images)",
    )
    add_model_arguments(arena, "tf_efficientnet_lite0")
    methods_help = "methods to score (default: every fast method that fits the model)"
    _add_list_option(arena, "--methods", "METHOD", methods_help, choices=METHOD_NAMES)
    arena.add_argument(
        "--slow", action="store_true", help="also the slow methods (Score-CAM, IG, Occlusion …)"
    )
    arena.add_argument(
        "--steps", type=int, default=11, help="deletion/insertion fractions from 0 to 1 (default 11)"
    )
    _add_list_option(
        arena, "--road-percentiles", "P", "ROAD thresholds in (0, 100) (default 20 50 80)", type=int
    )
    arena.add_argument(
        "--random-orders", type=int, default=4, help="random orders per image (default 4, at least 2)"
    )
    arena.add_argument("--no-sanity", action="store_true", help="skip the cascading-randomisation check")
    arena.add_argument("--seed", type=int, default=0, help="seed of the random orders and weights")
    arena.add_argument("--max-images", type=int, default=None, help="score at most this many images")
    add_view_argument(arena)
    arena.add_argument("--json", action="store_true", help="print JSON instead of a table")
    arena.add_argument(
        "--out", type=Path, default=None, metavar="FIG.png|.html", help="also write the figure"
    )


def _add_list_option(
    parser: argparse.ArgumentParser, flag: str, metavar: str, help_text: str, **kind: object
) -> None:
    """`flag` followed by one value or more (`kind`: their type or choices); left out, it is None
    and the arena's own default applies."""
    parser.add_argument(flag, nargs="+", default=None, metavar=metavar, help=help_text, **kind)


def arena_images(specs: list[str], max_images: int | None = None) -> list[ArenaImage]:
    """The images the arguments name, in order, through the project's safe loaders.

    Raises:
        CommandError: an argument that names nothing readable.
    """
    from vitviz.arena import (
        ArenaImage,
        builtin_photo_images,
        folder_images,
        run_held_out_images,
        zip_images,
    )
    from vitviz.images import load_image_file
    from vitviz.runs import run_folder_by_name

    images: list[ArenaImage] = []
    for spec in specs:
        if spec == BUILTIN_PHOTOS_SPEC:
            images += builtin_photo_images()
        elif spec.startswith(RUN_PREFIX):
            images += run_held_out_images(run_folder_by_name(spec.removeprefix(RUN_PREFIX)))
        elif spec.startswith("builtin:"):
            raise CommandError(
                f"unknown built-in image set {spec!r}: the built-in one is {BUILTIN_PHOTOS_SPEC}"
            )
        elif Path(spec).is_dir():
            images += folder_images(spec)
        elif spec.lower().endswith(".zip"):
            images += zip_images(Path(spec))
        else:
            images.append(ArenaImage(Path(spec).name, lambda spec=spec: load_image_file(spec)))
    if max_images is not None:
        if max_images < 1:
            raise CommandError(f"--max-images must be at least 1, got {max_images}")
        images = images[:max_images]
    return images


def _run_arena(args: argparse.Namespace) -> None:
    """score every explanation method on images (deletion, insertion, ROAD, sanity) and rank them

    Scores each method's map of the model's top class by deletion and insertion areas and ROAD, each
    against random order, and by the cascading-randomisation sanity check; ranks the methods and says
    in one sentence which hold up. Over several images the table gives medians and quartiles. Under
    torchrun each process scores its share of the images.
    """
    from vitviz.arena import ARENA_ROAD_PERCENTILES, ArenaSettings, arena_methods, run_arena
    from vitviz.cli.compare import export_figure
    from vitviz.device import default_device
    from vitviz.finetune.distributed import init_from_environment, shutdown
    from vitviz.methods import METHODS, MethodUnavailableError
    from vitviz.models import load_model

    if args.steps < 2:
        raise CommandError(f"--steps must be at least 2, got {args.steps}")
    try:
        settings = ArenaSettings(
            fractions=tuple(step / (args.steps - 1) for step in range(args.steps)),
            road_percentiles=tuple(args.road_percentiles or ARENA_ROAD_PERCENTILES),
            random_orders=args.random_orders,
            sanity=not args.no_sanity,
            seed=args.seed,
            view=args.view,
        )
    except ValueError as error:
        raise CommandError(str(error)) from error
    images = arena_images(args.images, args.max_images)
    context, device = init_from_environment(args.device)
    try:
        if context.enabled and args.weights == "random":
            raise CommandError(
                "--weights random draws other weights in every process; save them to a file and pass that"
            )
        loaded = load_model(args.model, args.weights, device or default_device())
        methods = args.methods or arena_methods(loaded, slow=args.slow)
        for method in methods:
            reason = METHODS[method].unavailable_reason(loaded.facts)
            if reason is not None:
                raise CommandError(reason)
        table = run_arena(loaded, images, methods, settings, context)
    except MethodUnavailableError as error:
        raise CommandError(str(error)) from error
    finally:
        shutdown(context)
    if not context.is_main:
        return
    if args.out is not None:
        from vitviz.figures.arena import arena_figure

        export_figure(arena_figure(table), args.out, title=f"Arena · {table.model}")
    if args.json:
        print(json.dumps(table.to_json()))
        return
    print(f"{table.model}{'' if table.trained else ' (untrained)'} · {len(table.images)} image(s)")
    print(table.text())
