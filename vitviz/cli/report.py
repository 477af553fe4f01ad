"""The `report` command: `python -m vitviz report FOLDER --out REPORT.html`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vitviz.cli.common import CommandError, add_model_arguments, add_view_argument, load_from_args

__all__ = ["add_commands"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser(
        "report", help="one self-contained HTML report (predictions, maps, model facts) for a folder"
    )
    report.add_argument("folder", type=Path, metavar="FOLDER", help="a folder of images")
    add_model_arguments(report, "vit_small_patch14_dinov2")
    report.add_argument("--out", type=Path, required=True, metavar="REPORT.html")
    report.add_argument("--topk", type=int, default=5, help="how many classes to list (default 5)")
    add_view_argument(report)
    report.set_defaults(run=_run_report)


def _run_report(args: argparse.Namespace) -> None:
    from vitviz.figures.report import build_report, render_report

    if not args.folder.is_dir():
        raise CommandError(f"{args.folder} is not a folder")
    if not any(path.is_file() and not path.name.startswith(".") for path in args.folder.iterdir()):
        raise CommandError(f"{args.folder} has no files to report on")
    if args.topk < 1:
        raise CommandError(f"--topk must be at least 1, got {args.topk}")
    loaded = load_from_args(args)
    report = build_report(
        args.folder,
        loaded,
        topk=args.topk,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        mode=args.view,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_report(report), encoding="utf-8")
    done = len(report.images) - len(report.skipped)
    untrained = "" if loaded.trained else " (random, untrained weights)"
    print(f"wrote {args.out}: {done} images, {len(report.skipped)} skipped{untrained}")
