"""`vitviz app`: the Streamlit app, started with `make run`'s launcher from a checkout or an install.

The app's files are app.py and pages/ (with pages/views/serve.py, the launcher). In a checkout they
sit beside vitviz/; a wheel carries them in a folder of their own, vitviz_app/, beside vitviz/ in
site-packages. The app runs in a process of its own (the library never imports Streamlit), which
finds `pages` on its path before anything else, so a `pages` folder where the user stands is never
taken for the app's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from vitviz.cli.common import CommandError, add_command

__all__ = ["add_commands", "app_folder", "launch_command", "served_settings"]

_INSTALLED_FOLDER = "vitviz_app"  # the wheel's name for the folder holding app.py and pages/
# Runs the launcher's main() with the app's folder first on the path; argv[1] is that folder.
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); from pages.views.serve import main; main(sys.argv[1:])"
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Adds the `app` command."""
    parser = add_command(commands, _run_app)
    # Every option this parser does not know is passed on to `streamlit run` (see main.main).
    parser.set_defaults(passes_options_on=True)


def app_folder() -> Path:
    """The folder holding app.py and pages/ that belongs to this copy of vitviz.

    Raises:
        CommandError: this vitviz came without its app (a copy of the library alone).
    """
    beside = Path(__file__).resolve().parents[2]  # site-packages, or the checkout's root
    for folder in (beside / _INSTALLED_FOLDER, beside):
        if (folder / "app.py").is_file() and (folder / "pages" / "views" / "serve.py").is_file():
            return folder
    raise CommandError(f"the app's files (app.py and pages/) are not installed beside vitviz in {beside}")


def served_settings(folder: Path) -> list[str]:
    """The settings of `folder/.streamlit/config.toml` as `streamlit run` options.

    Streamlit reads that file only from the folder it starts in; an installed app starts anywhere.
    """
    config = folder / ".streamlit" / "config.toml"
    if not config.is_file():
        return []
    settings = tomllib.loads(config.read_text(encoding="utf-8"))
    return [
        f"--{section}.{key}={str(value).lower() if isinstance(value, bool) else value}"
        for section, values in settings.items()
        for key, value in values.items()
    ]


def launch_command(options: list[str]) -> list[str]:
    """The command line that serves the app: the launcher, the app's settings, then `options`
    (given later, an option the user names wins over the shipped setting)."""
    folder = app_folder()
    return [sys.executable, "-c", _BOOT, str(folder), *served_settings(folder), *options]


def _run_app(args: argparse.Namespace) -> None:
    """start the browser app (the same launcher as `make run`)

    Starts the Streamlit app on http://localhost:8501 with the settings it is served with everywhere
    (.streamlit/config.toml beside app.py). Any further options go to `streamlit run`, e.g.
    `vitviz app --server.port=8600 --server.headless=true`.
    """
    command = launch_command(list(args.passed_on))
    sys.stdout.flush()
    if os.name != "posix":
        raise SystemExit(subprocess.call(command))
    os.execv(command[0], command)  # the server becomes this process: signals reach it directly
