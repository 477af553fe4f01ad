"""Installing vitviz the ways users and hosts do, over this environment instead of a new torch.

A full fresh environment holds torch (gigabytes); the tests build one of two lighter kinds instead:
- the wheel installed with `--no-deps` into a target folder, which is put on PYTHONPATH over this
  environment (the wheel's files and console scripts, this environment's dependencies);
- a host: a new virtual environment that sees only the distributions requirements.txt needs
  (followed through their own requirements), linked from this environment, and nothing else.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.browser import REPO

__all__ = [
    "HOST_FILES",
    "build_wheel",
    "copy_host_files",
    "host_environment",
    "install_wheel",
    "required_distributions",
    "requirement_lines",
]

# What a Streamlit host reads from the repository (the README's "Host a demo" names the same).
HOST_FILES = ("app.py", "pages", "vitviz", ".streamlit/config.toml", "requirements.txt", "packages.txt")
_NOT_SOURCES = shutil.ignore_patterns(
    ".venv", ".git", "artifacts", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"
)


def build_wheel(folder: Path) -> Path:
    """`pip wheel . --no-deps` of a copy of the project (the checkout is left as it is); the wheel."""
    source = folder / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCES, symlinks=True)
    wheels = folder / "wheels"
    _pip("wheel", str(source), "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels))
    (wheel,) = wheels.glob("vitviz-*.whl")
    return wheel


def install_wheel(wheel: Path, target: Path) -> Path:
    """Installs the wheel alone into `target` (put it on PYTHONPATH); its scripts land in target/bin."""
    _pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel))
    return target


def _pip(*arguments: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"pip {arguments[0]} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )


def requirement_lines(path: Path) -> list[Requirement]:
    """The requirements of a requirements file (comments and blank lines skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [Requirement(line) for line in lines if line]


def required_distributions(requirements: list[Requirement]) -> dict[str, metadata.Distribution]:
    """Every installed distribution `requirements` need, followed through their own requirements.

    Raises:
        AssertionError: a requirement that no installed distribution satisfies (what pip would
            download is not here, so the environment would differ from a host's).
    """
    environment = default_environment()
    found: dict[str, metadata.Distribution] = {}
    pending = [(requirement, ()) for requirement in requirements]
    while pending:
        requirement, extras = pending.pop()
        if requirement.marker is not None and not any(
            requirement.marker.evaluate({**environment, "extra": extra}) for extra in (*extras, "")
        ):
            continue
        name = canonicalize_name(requirement.name)
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise AssertionError(f"{requirement} is needed but not installed here") from None
        assert requirement.specifier.contains(distribution.version, prereleases=True), (
            f"{requirement} is needed but {name} {distribution.version} is installed"
        )
        if name in found:
            continue
        found[name] = distribution
        pending.extend((Requirement(line), tuple(requirement.extras)) for line in distribution.requires or ())
    return found


def _top_level_entries(distribution: metadata.Distribution) -> set[str]:
    """The names directly inside site-packages that a distribution installed (its dist-info too)."""
    entries = set()
    for file in distribution.files or ():
        first = file.parts[0]
        if first != ".." and first != "__pycache__":
            entries.add(first)
    return entries


def host_environment(folder: Path, requirements: Path) -> Path:
    """A new virtual environment holding exactly what `requirements` need; returns its python.

    Each needed distribution is linked from this environment's site-packages, so nothing is
    downloaded; a distribution that nothing in `requirements` asks for is not there, as on a host.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    host_site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    here_site = Path(sysconfig.get_path("purelib"))
    for distribution in required_distributions(requirement_lines(requirements)).values():
        for entry in _top_level_entries(distribution):
            link = host_site / entry
            if (here_site / entry).exists() and not link.exists():
                link.symlink_to(here_site / entry)
    return python


def copy_host_files(folder: Path) -> Path:
    """The files a host reads, copied into `folder` as a host's checkout of the repository."""
    for name in HOST_FILES:
        source = REPO / name
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(source, target)
    return folder
