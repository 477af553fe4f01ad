"""The library stays UI-free: nothing under vitviz/ imports Streamlit, directly or indirectly."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

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


def _package_imports(root: Path, package: str) -> dict[str, set[str]]:
    """Module → the package's modules it imports anywhere in its text (inside functions too)."""
    modules = {
        ".".join((package, *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__"): path
        for path in root.rglob("*.py")
    }
    imports: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
                found.update(target for target in targets if target in modules)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name in modules)
        # Importing "pkg.x" runs "pkg" first: the package's own re-exports are not a cycle.
        imports[name] = found - {name, package}
    return imports


def _import_cycle(imports: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the import graph, as the modules along it, or None."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(imports.get(module, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target, [*path, target])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(imports):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def test_vitviz_has_no_import_cycle_even_inside_functions():
    imports = _package_imports(Path(vitviz.__file__).parent, "vitviz")
    assert len(imports) >= 40
    assert "vitviz.runs" in imports["vitviz.models"]  # models loads run folders through runs
    assert _import_cycle(imports) is None


def test_cycle_check_sees_a_cycle_hidden_inside_a_function(tmp_path):
    package = tmp_path / "loop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from loop.b import x\n")
    (package / "b.py").write_text("def f():\n    from loop import a\n")
    assert _import_cycle(_package_imports(package, "loop")) == ["loop.a", "loop.b", "loop.a"]


def test_the_top_level_holds_only_the_design_card():
    top = Path(__file__).resolve().parent.parent
    python_files = sorted(path.name for path in top.glob("*.py"))
    assert python_files == ["app.py"]


def test_pages_draw_plotly_figures_through_the_one_chart_helper():
    """`ui.plotly_chart` sends a figure's photo once as a media file; a direct call would resend it."""
    pages = Path(__file__).resolve().parent.parent / "pages"
    # ui/charts.py owns the call; frame.py's blank chart (it only fetches Plotly early) has no photo.
    allowed = {"views/ui/charts.py", "views/frame.py"}
    callers = []
    for path in sorted(pages.rglob("*.py")):
        module = path.relative_to(pages).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            is_chart = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            is_chart = is_chart and node.func.attr == "plotly_chart" and module not in allowed
            through_ui = is_chart and isinstance(node.func.value, ast.Name) and node.func.value.id == "ui"
            if is_chart and not through_ui:
                callers.append(f"{path.relative_to(pages)}:{node.lineno}")
    assert callers == [], f"call ui.plotly_chart instead: {callers}"


def test_every_uploader_states_the_limit_it_enforces():
    """Images go through `ui.image_uploader` (the 25 MB decode_image takes); Fine-tune's and Arena's zips set their own."""
    pages = Path(__file__).resolve().parent.parent / "pages"
    direct = []
    for path in sorted(pages.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "file_uploader":
                sized = any(keyword.arg == "max_upload_size" for keyword in node.keywords)
                direct.append((f"{path.relative_to(pages)}", sized))
    assert sorted(direct) == [
        ("views/arena.py", True),
        ("views/finetune/data.py", True),
        ("views/ui/pickers.py", True),
    ]
