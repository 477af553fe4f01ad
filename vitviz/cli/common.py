"""What every command shares: the one-line user error and the --model/--weights/--device arguments."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vitviz.models import LoadedModel

__all__ = ["CommandError", "add_model_arguments", "add_view_argument", "load_from_args"]

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


def add_view_argument(parser: argparse.ArgumentParser) -> None:
    """--view: what the model sees of each image, as the app's view picker says it."""
    parser.add_argument(
        "--view",
        choices=("crop", "whole"),
        default="crop",
        help="crop: the model's eval transform, resize and centre crop (default); whole: the whole image resized",
    )


def load_from_args(args: argparse.Namespace) -> LoadedModel:
    """The model named by --model / --weights / --device."""
    from vitviz.device import default_device
    from vitviz.models import load_model

    return load_model(args.model, args.weights, args.device or default_device())
