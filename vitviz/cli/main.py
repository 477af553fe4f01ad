"""The command line: `python -m vitviz COMMAND`; each command group adds its own subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vitviz.cli import anatomy, compare, core, finetune, interventions, report, runs
from vitviz.cli.common import CommandError

__all__ = ["build_parser", "main"]

# Each module adds its subcommands with `add_commands(subparsers)` and sets `run=` on its parsers.
COMMAND_GROUPS = (core, anatomy, report, compare, finetune, runs, interventions)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vitviz", description="See how Vision Transformers work, from the command line."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the exit status. Bad input ends with one line on stderr."""
    args = build_parser().parse_args(argv)
    from vitviz.images import ImageDecodeError
    from vitviz.models import ModelError
    from vitviz.weights import WeightsError

    try:
        args.run(args)
    except (CommandError, ImageDecodeError, ModelError, WeightsError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
