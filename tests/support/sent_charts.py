"""Charts as a page sent them (AppTest), with the line breaks the title fitting added taken out.

`ui.plotly_chart` breaks a title line too wide for its chart at spaces (`SOFT_BREAK`) and inside
a long name (`WORD_BREAK`, see `vitviz.figures.titles`); tests that look for a title's words read
it as it was written.
"""

from __future__ import annotations

import json

from vitviz.figures.titles import SOFT_BREAK, WORD_BREAK

__all__ = ["sent_spec", "sent_text"]


def _written(value):
    """Every string in `value` (nested dicts and lists) as written: each break added inside a word
    taken out, each added at a space read as that space."""
    if isinstance(value, str):
        return value.replace(WORD_BREAK, "").replace(SOFT_BREAK, " ")
    if isinstance(value, list):
        return [_written(item) for item in value]
    if isinstance(value, dict):
        return {key: _written(item) for key, item in value.items()}
    return value


def sent_spec(chart) -> dict:
    """A chart's sent figure as a dict, its titles as they were written."""
    return _written(json.loads(chart.proto.spec))


def sent_text(chart) -> str:
    """A chart's sent figure as JSON text (characters unescaped), its titles as they were written."""
    return json.dumps(sent_spec(chart), ensure_ascii=False)
