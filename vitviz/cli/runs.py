"""`python -m vitviz runs list|stop|delete`: the operator's hand on every run in the runs folder.

A served app's visitor may stop or delete only the runs their own session started; the command line
runs as the server's user, so it may stop or delete any run, whoever started it.
"""

from __future__ import annotations

import argparse

__all__ = ["add_commands"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Adds the `runs` command and its `list`, `stop` and `delete` actions."""
    parser = subparsers.add_parser(
        "runs",
        help="list, stop or delete fine-tune runs in the runs folder (any run, whoever started it)",
        description="The runs in the runs folder ($VITVIZ_RUNS_DIR, default ~/.cache/vitviz/runs), "
        "named by their folder names as the app lists them.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="every run: name, state, model, mode, whose session started it, and the name it was given",
    )
    listing.set_defaults(run=_list)
    stop = actions.add_parser(
        "stop", help="ask a training run to stop after its current step (its model is kept)"
    )
    stop.add_argument("name", help="the run's folder name")
    stop.set_defaults(run=_stop)
    delete = actions.add_parser("delete", help="delete a run that is not training, and its folder")
    delete.add_argument("name", help="the run's folder name")
    delete.set_defaults(run=_delete)


def _list(args: argparse.Namespace) -> None:
    from vitviz.runs import list_runs, read_config

    for run in list_runs():
        try:
            owner = "a visitor's session" if "owner" in read_config(run.folder) else "the command line"
        except ValueError:
            owner = "unknown (broken config.json)"
        state = "broken" if run.problem and not run.status.active else run.status.state
        title = f"\t{run.given_title}" if run.given_title else ""  # the name the user gave it, if any
        print(f"{run.name}\t{state}\t{run.model}\t{run.mode}\tstarted by {owner}{title}")


def _stop(args: argparse.Namespace) -> None:
    from vitviz.finetune.worker import stop_run
    from vitviz.runs import RunError, read_status, run_folder_by_name

    folder = run_folder_by_name(args.name)
    if not read_status(folder).active:
        raise RunError(f"Run {folder.name} is not training ({read_status(folder).state}); nothing to stop.")
    stop_run(folder)  # no owner: the operator may stop any run
    print(f"stop requested: {folder.name} ends after its current step")


def _delete(args: argparse.Namespace) -> None:
    from vitviz.runs import delete_run, run_folder_by_name

    folder = run_folder_by_name(args.name)
    delete_run(folder)  # no owner: the operator may delete any run
    print(f"deleted: {folder.name}")
