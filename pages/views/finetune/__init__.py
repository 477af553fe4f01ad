"""Streamlit glue of the Fine-tune page: data and training settings, starting runs and jobs, the runs
list with live progress, and a finished run's results.

One module per part: `data` (the sidebar and the data summary), `state` (session keys, ownership,
the one-at-a-time rule), `jobs` (a run, a ViT/CNN pair, the few-shot evaluation), `runs` (the table
and the open run) and `results` (what a finished run shows). The page script calls the names below.
"""

from __future__ import annotations

from pages.views.finetune.data import data_picker, data_section, training_settings
from pages.views.finetune.jobs import few_shot_section, pair_section, start_section
from pages.views.finetune.runs import runs_section

__all__ = [
    "data_picker",
    "data_section",
    "few_shot_section",
    "pair_section",
    "runs_section",
    "start_section",
    "training_settings",
]
