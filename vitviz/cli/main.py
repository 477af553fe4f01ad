"""The command line: `python -m vitviz COMMAND`; each command group adds its own subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vitviz.cli import anatomy, app, arena, compare, core, finetune, interventions, report, runs
from vitviz.cli.common import CommandError

__all__ = ["build_parser", "main"]

# Each module adds its subcommands with `add_commands(subparsers)` and sets `run=` on its parsers.
COMMAND_GROUPS = (core, anatomy, report, compare, arena, finetune, runs, interventions, app)


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
    parser = build_parser()
    args, passed_on = parser.parse_known_args(argv)
    if passed_on and not getattr(args, "passes_options_on", False):
        parser.error(f"unrecognized arguments: {' '.join(passed_on)}")
    args.passed_on = passed_on  # `app`'s options for `streamlit run`
    from vitviz.images import ImageDecodeError
    from vitviz.models import ModelError
    from vitviz.weights import WeightsError

    try:
        args.run(args)
    except WeightsError as error:
        remedy = f" Try --weights {' or '.join(error.alternatives)}." if error.alternatives else ""
        print(f"error: {error}{remedy}", file=sys.stderr)
        return 1
    except (CommandError, ImageDecodeError, ModelError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
