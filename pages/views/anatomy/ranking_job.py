"""Follows the head ranking that runs in a background worker, and brings its result into the page."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import streamlit as st

from pages.views import ui
from pages.views.anatomy.kit import ModelSide
from vitviz.head_ranking import RankingJob, RankingState, read_ranking, start_ranking
from vitviz.jobs import cancel_job

__all__ = ["IMPORTANCE", "RANKING_JOBS"]

IMPORTANCE = "anatomy_ablation_importance"  # {(model key, digest, view, mode): (layers, heads) drops}
RANKING_JOBS = "anatomy_ranking_jobs"  # {the same key: the folder of its running background ranking}
RANKING_REFRESH_S = 1.0  # how often a running ranking's progress is read
RANKING_SILENT_S = 300  # a worker this long without a status update has died


def _start_ranking(
    side: ModelSide, picked: ui.ImageChoice, mode: str, view: str, jobs: dict[tuple, Path], key: tuple
) -> bool:
    """Starts the ranking in a background worker, which `_ranking_progress` follows; False if it could not."""
    choice = side.choice
    job = RankingJob(choice.name, choice.weights, choice.device, side.twin, mode, view)
    folder = Path(tempfile.mkdtemp(prefix="vitviz-head-ranking-"))
    try:
        start_ranking(job, picked.image, folder)
    except (OSError, ValueError) as error:
        shutil.rmtree(folder, ignore_errors=True)
        st.error(f"Could not start ranking the heads: {error}")
        return False
    jobs[key] = folder
    return True


@st.fragment(run_every=RANKING_REFRESH_S)
def _ranking_progress(key: tuple) -> None:
    """The background ranking's progress; once it has ended, its drops join the page (or its error shows)."""
    jobs: dict[tuple, Path] = st.session_state.get(RANKING_JOBS, {})
    folder = jobs.get(key)
    if folder is None:
        return
    try:
        state = read_ranking(folder)
    except (OSError, ValueError) as error:  # the folder was removed or damaged under the page
        state = RankingState(0, 0, error=f"its folder could not be read ({error})")
    if not state.ended and state.quiet_s < RANKING_SILENT_S:
        fraction = state.done / state.total if state.total else 0.0
        words = "Loading the model…"
        if (
            state.progress is not None and state.total
        ):  # heads done of all, the time left at the measured pace
            left = None if state.progress.eta_s is None else max(0.0, state.progress.eta_s - state.quiet_s)
            words = f"Switching each head off in turn: {replace(state.progress, eta_s=left).text()}"
        row = st.columns([5, 1], vertical_alignment="center")
        row[0].progress(fraction, text=f"{words} (in the background)")
        if row[1].button("Cancel", key="anatomy_ranking_cancel", help="Stops the worker at its next batch."):
            cancel_job(folder)
        return
    del jobs[key]
    shutil.rmtree(folder, ignore_errors=True)
    if state.cancelled:
        st.caption("Ranking cancelled: the estimate stays; rank again when you like.")
        return
    if state.drops is None:
        error = state.error or f"the worker stopped without a word for {RANKING_SILENT_S} s"
        st.error(f"Could not rank the heads: {error}")
        return
    st.session_state.setdefault(IMPORTANCE, {})[key] = state.drops
    st.rerun()  # the whole page: the ranking's figure and sentence follow the button
