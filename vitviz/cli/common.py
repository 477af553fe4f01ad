"""What every command shares: the one-line user error and the --model/--weights/--device arguments."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from vitviz.progress import JobProgress, ProgressSnapshot

if TYPE_CHECKING:
    from vitviz.models import LoadedModel

__all__ = [
    "ASPECT_METHODS",
    "CommandError",
    "add_class_argument",
    "add_command",
    "add_image_command",
    "add_listing_arguments",
    "add_model_arguments",
    "add_view_argument",
    "load_from_args",
    "terminal_progress",
]

_WEIGHTS_HELP = (
    "bundled (offline, default), hub (timm pretrained, needs the model hub), "
    "random (untrained) or a path to a .safetensors/.pth file"
)


class CommandError(Exception):
    """A user-facing failure: printed as one line on stderr, exit status 1."""


def add_model_arguments(parser: argparse.ArgumentParser, default_model: str) -> None:
    """--model, --weights and --device, the same words as in the app."""
    parser.add_argument("--model", default=default_model, help=f"timm model name (default {default_model})")
    parser.add_argument("--weights", default="bundled", help=_WEIGHTS_HELP)
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")


# The maps that follow the view's own token grid; every other method works on the model's grid.
ASPECT_METHODS = ("attention", "rollout")


def add_view_argument(parser: argparse.ArgumentParser, *, aspect: bool = False) -> None:
    """--view: what the model sees of each image, as the app's view picker says it.

    Args:
        parser: the command's parser.
        aspect: the command also takes "aspect" (the whole image, aspect ratio kept, plain ViTs).
    """
    help_text = (
        "crop: the model's eval transform, resize and centre crop (default); whole: the whole image resized"
    )
    if aspect:
        help_text += (
            "; aspect: the whole image, aspect ratio kept, on a token grid of its own shape "
            f"(plain ViTs; explain: {' and '.join(ASPECT_METHODS)} only)"
        )
    parser.add_argument(
        "--view",
        choices=("crop", "whole", "aspect") if aspect else ("crop", "whole"),
        default="crop",
        help=help_text,
    )


def add_command(
    commands: argparse._SubParsersAction, run: Callable[[argparse.Namespace], None]
) -> argparse.ArgumentParser:
    """A command that calls `run`, described by `run` itself.

    The command is named after `run` (`_run_NAME`, underscores as hyphens); its help is the first
    paragraph of `run`'s docstring and its description the paragraphs after it (or the help again).
    """
    name = run.__name__.removeprefix("_run_").replace("_", "-")
    summary, _, details = (run.__doc__ or "").strip().partition("\n\n")
    summary = " ".join(summary.split())
    parser = commands.add_parser(name, help=summary, description=" ".join(details.split()) or summary)
    parser.set_defaults(run=run)
    return parser


def add_image_command(
    commands: argparse._SubParsersAction, run: Callable[[argparse.Namespace], None], default_model: str
) -> argparse.ArgumentParser:
    """A command (`add_command`) that reads one IMAGE with one model (--model, --weights, --device)."""
    parser = add_command(commands, run)
    parser.add_argument("image", metavar="IMAGE")
    add_model_arguments(parser, default_model)
    return parser


def add_listing_arguments(parser: argparse.ArgumentParser, topk_help: str) -> None:
    """--topk and --json, for a command that lists classes."""
    parser.add_argument("--topk", type=int, default=5, help=f"{topk_help} (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_class_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """--class IDX: the class an explanation explains."""
    parser.add_argument("--class", dest="class_index", type=int, default=None, metavar="IDX", help=help_text)


def load_from_args(args: argparse.Namespace) -> LoadedModel:
    """The model named by --model / --weights / --device.

    Raises:
        CommandError: --view aspect with a model or method that cannot take it.
    """
    from vitviz.device import default_device
    from vitviz.models import load_model
    from vitviz.preprocess import aspect_view_problem

    aspect = getattr(args, "view", None) == "aspect"
    method = getattr(args, "method", None)
    if aspect and isinstance(method, str) and method not in ASPECT_METHODS:
        raise CommandError(
            f"--view aspect gives only the {' and '.join(ASPECT_METHODS)} maps: {method} works on the "
            "model's own grid (use --view crop or whole)"
        )
    loaded = load_model(args.model, args.weights, args.device or default_device())
    problem = aspect_view_problem(loaded.model) if aspect else ""
    if problem:
        raise CommandError(f"--view aspect: {problem}")
    return loaded


def terminal_progress(
    what: str, unit: str, stream: TextIO | None = None, every_s: float = 5.0
) -> JobProgress:
    """A progress callback that tells the terminal the units done and the time left, on stderr.

    On a terminal one line is redrawn in place; into a file or a pipe, a line every `every_s`
    seconds and the last one, so a log stays short. Ctrl-C stops the work, as anywhere.
    """
    out = sys.stderr if stream is None else stream
    live = out.isatty()
    printed = [-float("inf")]

    def show(snapshot: ProgressSnapshot) -> None:
        finished = snapshot.done >= snapshot.total
        now = time.monotonic()
        if live:
            out.write(f"\r{what}: {snapshot.text():<60}" + ("\n" if finished else ""))
        elif finished or now - printed[0] >= every_s:
            out.write(f"{what}: {snapshot.text()}\n")
        else:
            return
        printed[0] = now
        out.flush()

    return JobProgress(unit, on_update=show)
