"""The library stays UI-free: nothing under vitviz/ imports Streamlit, directly or indirectly."""

import pkgutil
import subprocess
import sys

import vitviz


def test_no_vitviz_module_pulls_in_streamlit():
    modules = [info.name for info in pkgutil.walk_packages(vitviz.__path__, "vitviz.")]
    modules = [name for name in modules if name != "vitviz.__main__"]
    assert len(modules) >= 10
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'streamlit'))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
