"""The library's layers stay apart: `vitviz.maths` reads arrays and never runs a model (that is
`vitviz.forward`), and below the pages a view travels as an `ImageView`, never as a string."""

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

import vitviz

LIBRARY = Path(vitviz.__file__).parent
MATHS = LIBRARY / "maths"
# Modules that load, hook, preprocess for or run a model: maths may name their types for annotations only.
MODEL_RUNNERS = (
    "vitviz.models",
    "vitviz.capture",
    "vitviz.preprocess",
    "vitviz.predict",
    "vitviz.forward",
    "timm",
)
# Attributes whose call runs (part of) a model.
FORWARD_CALLS = {
    "model",
    "forward",
    "forward_features",
    "forward_head",
    "forward_intermediates",
    "patch_embed",
}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of the module except those under `if TYPE_CHECKING:`."""
    found: list[ast.AST] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        found.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                pending.extend(child.orelse)
            else:
                pending.append(child)
    return found


def _imported_modules(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module]
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return []


def model_running_lines(source: str) -> list[str]:
    """Each place in a module's source that imports a model runner at run time or calls a model."""
    problems = []
    for node in _runtime_nodes(ast.parse(source)):
        for module in _imported_modules(node):
            if any(module == runner or module.startswith(f"{runner}.") for runner in MODEL_RUNNERS):
                problems.append(f"line {node.lineno}: imports {module}")
        if isinstance(node, ast.Call):
            called = node.func
            name = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", None)
            if name in FORWARD_CALLS:
                problems.append(f"line {node.lineno}: calls {ast.unparse(called)}")
        if isinstance(node, ast.arg) and node.annotation and "LoadedModel" in ast.unparse(node.annotation):
            problems.append(f"line {node.lineno}: takes a LoadedModel ({node.arg})")
    return problems


def _found_in(paths: list[Path], check: Callable[[str], list[str]]) -> dict[str, list[str]]:
    """What `check` finds in each module's source, by path under vitviz/; modules where it finds nothing are left out."""
    return {
        str(path.relative_to(LIBRARY)): found
        for path in paths
        if (found := check(path.read_text(encoding="utf-8")))
    }


def test_the_layering_check_sees_an_import_a_call_and_a_loaded_model():
    source = (
        "from typing import TYPE_CHECKING\n"
        "import numpy as np\n"
        "from vitviz.capture import capture_attention\n"
        "if TYPE_CHECKING:\n"
        "    from vitviz.models import ModelFacts\n"
        "def f(loaded: 'LoadedModel', x):\n"
        "    import vitviz.preprocess\n"
        "    return loaded.model.forward_features(x)\n"
    )
    assert sorted(model_running_lines(source)) == [
        "line 3: imports vitviz.capture",
        "line 6: takes a LoadedModel (loaded)",
        "line 7: imports vitviz.preprocess",
        "line 8: calls loaded.model.forward_features",
    ]
    assert model_running_lines("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import timm\n") == []


def string_views(source: str) -> list[str]:
    """Each public function of a module with a parameter `view` that is a string (`str` or `ViewMode`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name.startswith("_"):
            continue
        arguments = node.args
        for argument in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
            annotation = ast.unparse(argument.annotation) if argument.annotation else ""
            if argument.arg == "view" and annotation in {"str", "ViewMode", "'str'", "'ViewMode'"}:
                found.append(f"{node.name}(view: {annotation})")
    return found


# (modules, what finds a breach, at least how many modules, what to do instead)
LAYER_RULES = {
    "no maths module imports a model runner or calls a model": (
        lambda: sorted(MATHS.glob("*.py")),
        model_running_lines,
        10,
        "move the model-running code to vitviz/forward/",
    ),
    "no public library function takes a view as a string": (
        lambda: sorted(LIBRARY.rglob("*.py")),
        string_views,
        40,
        "take an ImageView (vitviz.preprocess.image_view) instead",
    ),
}


@pytest.mark.parametrize("rule", list(LAYER_RULES))
def test_the_library_keeps_its_layers(rule):
    modules, check, at_least, instead = LAYER_RULES[rule]
    paths = modules()
    assert len(paths) >= at_least, "the library moved"
    assert _found_in(paths, check) == {}, instead


def test_the_view_check_sees_a_mode_string_but_not_a_view_value_or_a_private_helper():
    source = (
        "def predict(loaded, images, view: ViewMode = 'crop'): ...\n"
        "def export(name, view: str): ...\n"
        "def record(loaded, view: ImageView): ...\n"
        "def _helper(view: str): ...\n"
    )
    assert string_views(source) == ["predict(view: ViewMode)", "export(view: str)"]
