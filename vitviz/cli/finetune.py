"""`python -m vitviz finetune` (one run, alone or as a torchrun rank) and `finetune-pair` (ViT + CNN)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path

from vitviz.cli.common import CommandError, add_command, add_model_arguments

__all__ = ["FEW_SHOT", "MODE_CHOICES", "add_commands", "output_folder"]

FEW_SHOT = (
    "few-shot"  # not a fine-tune: the ViT paper's closed-form few-shot evaluation of both bundled models
)
# The trainer's MODES and few-shot, repeated so that building the parser (and --help) does not import torch.
MODE_CHOICES: tuple[str, ...] = ("probe", "last-k", "full", FEW_SHOT)
_DATA_HELP = "builtin:digits, builtin:shapes, a .zip of class folders, or a folder of class folders"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Adds the `finetune` and `finetune-pair` commands."""
    parser = add_command(subparsers, _run_finetune)
    parser.add_argument("--data", required=True, help=_DATA_HELP)
    add_model_arguments(parser, "vit_small_patch14_dinov2")
    _add_training_arguments(parser)
    parser.add_argument("--data-label", default=None, help=argparse.SUPPRESS)  # the page's name for an upload
    parser.add_argument(
        "--name",
        default="",
        help="a name for the run, shown wherever the app lists it (at most 60 letters, digits, spaces "
        "and - _ . , ( ) + ' %% ·; not another run's); the folder keeps its own name",
    )
    parser.add_argument(
        "--shots",
        default="1,5,10,25",
        help="few-shot: images per class to fit on, comma-separated (default 1,5,10,25)",
    )
    parser.add_argument(
        "--draws", type=int, default=5, help="few-shot: random draws of the shots per count (default 5)"
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="NAME_OR_FOLDER",
        help="the run to make: a bare name makes it in the runs folder, where the app lists it; a path "
        "(with a '/', or '.' or '~') is taken as the run folder itself. Required but for few-shot, "
        "where it is an optional folder for fewshot.json and fewshot.html",
    )

    # A command of its own rather than `finetune --pair`: --model and --weights would mean nothing
    # for a pair, --out names the folder two runs are made in rather than one run's folder, and
    # `finetune` is also one rank of a torchrun job, which a pair (two runs in turn) is not.
    pair = add_command(subparsers, _run_finetune_pair)
    pair.add_argument("--data", default="builtin:digits", help=f"{_DATA_HELP} (default builtin:digits)")
    pair.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    _add_training_arguments(pair)
    pair.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="RUNS_FOLDER",
        help="where to make the two run folders (default: the runs folder, where the app finds them)",
    )


def output_folder(text: str) -> Path:
    """Where `--out` puts a run: a bare name inside the runs folder (as the app names runs), else the path.

    A name is text with no path separator that is not "." or ".." and does not start with "~"; such
    a run is then listed by the app and opened there by its name.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("give a run name or a folder")
    is_name = "/" not in text and "\\" not in text and text not in (".", "..") and not text.startswith("~")
    if not is_name:
        return Path(text).expanduser()
    from vitviz.runs import runs_root  # deferred: building the parser must not import torch

    return runs_root() / text


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The training settings, named after FinetuneConfig's fields (see FinetuneConfig.from_arguments)."""
    parser.add_argument(
        "--mode",
        choices=MODE_CHOICES,
        default="probe",
        help="probe: frozen backbone, new linear head fitted to its cached features (default); last-k: the "
        "last k blocks and the head; full: every parameter; few-shot: no run, the ViT paper's few-shot "
        "linear evaluation (closed-form least squares) of the bundled ViT and CNN against --shots",
    )
    parser.add_argument(
        "--last-k", type=int, default=2, help="blocks (stages) trained in last-k mode (default 2)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="default: 10 probe (rounds of its L-BFGS solve, one metrics row each), 3 last-k, 2 full",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="per process (default 32)")
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="AdamW learning rate of last-k and full (default 1e-4 last-k, 3e-5 full); a probe is solved "
        "to its optimum, with its L2 strength chosen by cross-validation on the training split",
    )
    parser.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (last-k, full)")
    parser.add_argument(
        "--max-images", type=int, default=None, help="keep at most N images, every class alike"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.2, help="held out of every class (default 0.2)"
    )
    parser.add_argument("--seed", type=int, default=0)


def _run_finetune(args: argparse.Namespace) -> None:
    """fine-tune a model on labelled images into a run folder (works under torchrun)

    Fine-tunes a copy of a model on an ImageFolder layout (one folder per class) and writes
    RUN_FOLDER: model.safetensors, config.json, labels.json, metrics.jsonl, status.json. The folder
    then works as --model in every other command.
    """
    if args.mode == FEW_SHOT:
        args.out = None if args.out is None else Path(args.out).expanduser()  # results, not a run
        _run_few_shot(args)
        return
    if args.out is None:
        raise CommandError(f"--out NAME_OR_FOLDER is required for --mode {args.mode}")
    try:
        args.out = output_folder(args.out)
    except argparse.ArgumentTypeError as error:
        raise CommandError(f"--out: {error}") from error
    from vitviz.device import default_device
    from vitviz.finetune.distributed import init_from_environment, shutdown
    from vitviz.finetune.trainer import FinetuneConfig
    from vitviz.finetune.worker import execute_run, yield_to_the_app
    from vitviz.runs import RunError, check_new_run_title

    try:  # the runs beside the new one (for a bare --out, the runs folder's) must not share its name
        title = check_new_run_title(args.name, args.out.parent) if args.name.strip() else ""
    except RunError as error:
        raise CommandError(f"--name: {error}") from error

    yield_to_the_app()
    try:
        config = FinetuneConfig.from_arguments(args)
    except ValueError as error:
        raise CommandError(str(error)) from error
    context, device = init_from_environment(args.device)
    config = dataclasses.replace(config, device=device or default_device())

    def log(line: str) -> None:
        if context.is_main:
            print(line, flush=True)

    try:
        result = execute_run(
            config, args.data, args.out, context=context, data_label=args.data_label, log=log, title=title
        )
    except (KeyboardInterrupt, CommandError, ValueError, OSError):
        raise
    except Exception as error:  # torch and timm raise RuntimeError & co; the user gets one line
        raise CommandError(f"{type(error).__name__}: {error}") from error
    finally:
        shutdown(context)
    if context.is_main:
        state = "stopped" if result.stopped else "finished"
        last = result.metrics[-1] if result.metrics else None
        accuracy = f", val acc {last.val_acc:.1%}" if last else ""
        print(f"{state}: {args.out}{accuracy}")


def _run_finetune_pair(args: argparse.Namespace) -> None:
    """fine-tune the bundled DINOv2 ViT and EfficientNet CNN alike, for a like-for-like Compare

    Fine-tunes the bundled DINOv2 ViT-S/14 and then the bundled EfficientNet-Lite0 on the same images,
    split and settings, each into a new run folder in RUNS_FOLDER with a pair.json that names both.
    Each run folder then works as --model in every other command.
    """
    from vitviz.device import default_device
    from vitviz.finetune.pair import train_pair
    from vitviz.finetune.trainer import FinetuneConfig
    from vitviz.finetune.worker import yield_to_the_app

    yield_to_the_app()
    try:
        config = FinetuneConfig.from_arguments(args)
    except ValueError as error:
        raise CommandError(str(error)) from error
    config = dataclasses.replace(config, device=args.device or default_device())
    try:
        outcome = train_pair(config, args.data, args.out, log=lambda line: print(line, flush=True))
    except (KeyboardInterrupt, CommandError, ValueError, OSError):
        raise
    except Exception as error:  # torch and timm raise RuntimeError & co; the user gets one line
        raise CommandError(f"{type(error).__name__}: {error}") from error
    for side, result in outcome.results.items():
        last = result.metrics[-1] if result.metrics else None
        accuracy = f"val acc {last.val_acc:.1%}" if last else "no epoch finished"
        state = "stopped" if result.stopped else "finished"
        print(f"{side} {state}: {outcome.runs[side]}, {accuracy}")
    if outcome.stopped:
        print("pair incomplete: a run was stopped, so neither run holds a pair.json")
    else:
        print("pair finished: both runs hold a pair.json naming each other")


def _every_tenth(print_line: Callable[[str], None]) -> Callable[[str, float], None]:
    """A progress callback that prints a line each time another tenth of the work is done."""
    printed = [-1]

    def report(message: str, fraction: float) -> None:
        tenth = int(fraction * 10)
        if tenth > printed[0]:
            printed[0] = tenth
            print_line(message)

    return report


def _run_few_shot(args: argparse.Namespace) -> None:
    from vitviz.device import default_device
    from vitviz.figures.finetune import few_shot_figure
    from vitviz.finetune.data import DataError, open_image_set
    from vitviz.finetune.fewshot import few_shot_comparison, parse_shots, planned_few_shot
    from vitviz.finetune.fewshot_jobs import FEW_SHOT_CHART, FEW_SHOT_FILE
    from vitviz.finetune.pair import PAIR_MODELS
    from vitviz.finetune.worker import yield_to_the_app
    from vitviz.models import load_model
    from vitviz.runs import write_json_atomic

    yield_to_the_app()
    try:
        shots = parse_shots(args.shots)
    except ValueError as error:
        raise CommandError(str(error)) from error
    if args.draws < 1:
        raise CommandError(f"--draws must be at least 1, got {args.draws}")
    if args.max_images is not None and args.max_images < 1:
        raise CommandError(f"--max images must be at least 1, got {args.max_images}")
    if not 0.0 < args.val_fraction < 1.0:
        raise CommandError(f"--val-fraction must lie between 0 and 1, got {args.val_fraction}")
    device = args.device or default_device()
    names = ", ".join(name for name, _ in PAIR_MODELS.values())
    print(f"few-shot linear evaluation of {names} on {args.data} (--model is not used: both bundled models)")
    try:
        image_set = open_image_set(args.data)
        planned_few_shot(  # refuses too many shots before any model loads
            image_set, shots, max_images=args.max_images, val_fraction=args.val_fraction, seed=args.seed
        )
        models = {name: load_model(name, weights, device) for name, weights in PAIR_MODELS.values()}
        table = few_shot_comparison(
            args.data_label or args.data,
            image_set,
            models,
            shots,
            draws=args.draws,
            max_images=args.max_images,
            val_fraction=args.val_fraction,
            seed=args.seed,
            batch_size=args.batch_size,
            on_progress=_every_tenth(lambda line: print(line, flush=True)),
        )
    except (KeyboardInterrupt, CommandError, OSError):
        raise
    except DataError as error:
        raise CommandError(str(error)) from error
    except Exception as error:  # torch and timm raise RuntimeError & co; the user gets one line
        raise CommandError(f"{type(error).__name__}: {error}") from error
    assert table is not None  # nothing asks it to stop here
    seconds = ", ".join(f"{name} {value:.1f} s" for name, value in table.feature_seconds.items())
    print(f"features: {seconds}; every fit of the table: {table.fit_seconds:.2f} s")
    print(f"held-out accuracy on {table.test_images} images, mean (lowest–highest) of {table.draws} draws:")
    print(table.markdown())
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        # The chart first: a reader that sees the table may take the job as done.
        few_shot_figure(table.as_dict()).write_html(args.out / FEW_SHOT_CHART, include_plotlyjs=True)
        write_json_atomic(args.out / FEW_SHOT_FILE, table.as_dict())
        print(f"wrote {args.out / FEW_SHOT_FILE} and {args.out / FEW_SHOT_CHART}")
