"""The README's library example runs as written, using only the names vitviz exports."""

import re
from pathlib import Path

import pytest

import vitviz

README = Path(__file__).resolve().parent.parent / "README.md"


def _library_example() -> str:
    section = README.read_text(encoding="utf-8").split("## The library", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_library_example_uses_only_the_public_api():
    code = _library_example()
    assert re.findall(r"^(?:from|import) .*$", code, re.M) == ["import vitviz"]
    used = set(re.findall(r"vitviz\.(\w+)", code))
    assert used <= set(vitviz.__all__), used - set(vitviz.__all__)


@pytest.mark.slow
def test_the_library_example_runs(capsys):
    exec(compile(_library_example(), str(README), "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("Prediction(index=")


def test_public_names_stay_functions_after_their_modules_are_imported():
    import vitviz.predict

    assert callable(vitviz.predict) and vitviz.predict.__name__ == "predict"
    assert callable(vitviz.explain) and callable(vitviz.record_attention)
