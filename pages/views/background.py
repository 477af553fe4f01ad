"""Streamlit glue for long work: run it in a background worker, follow its progress and time left, cancel it.

A page asks `job_outcome` for a result by key: the first time it starts the job (`vitviz.jobs`) and
says it is running; `follow_jobs` then draws each running job's progress bar, with the time left
from the worker's measured pace and a Cancel button, and reruns the page once the result arrives.
The rest of the page stays usable while the worker runs. A model no worker can load again (unseeded
random weights) is computed in the script run instead, with the same progress bar. A page that
starts its job only on a button (a head ranking, an arena) reads `recorded_outcome` until then.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import streamlit as st
from PIL import Image

from vitviz.jobs import JobSpec, JobState, cancel_job, compute_job, job_unit, read_job, start_job
from vitviz.models import LoadedModel, ModelError
from vitviz.progress import JobCancelled, JobProgress, ProgressSnapshot

__all__ = [
    "JobOutcome",
    "ending_note",
    "follow_jobs",
    "forget",
    "job_button",
    "job_controls",
    "job_outcome",
    "recorded_outcome",
    "running_keys",
]

JOBS = "background_jobs"  # {key: (job folder, what it computes)}
RESULTS = "background_results"  # {key: result}
ENDINGS = "background_endings"  # {key: the sentence saying why it has no result (`_ending_sentence`)}
REFRESH_S = 1.0  # how often a running job's progress is read
SILENT_S = 600  # a worker this long without a status update has died (one arena's ROAD step can take minutes)


class JobOutcome(NamedTuple):
    """Where a page's job stands: its result, why there is none, or that it is still running."""

    result: Any = None
    ending: str | None = None  # a sentence naming the job and why it has no result: its error, or a cancel
    running: bool = False


def recorded_outcome(key: Hashable) -> JobOutcome | None:
    """The key's result, why it has none, or that it is running; None where no job was started for it."""
    results, endings = st.session_state.setdefault(RESULTS, {}), st.session_state.setdefault(ENDINGS, {})
    if key in results:
        return JobOutcome(results[key])
    if key in endings:
        return JobOutcome(ending=endings[key])
    if key in st.session_state.setdefault(JOBS, {}):
        return JobOutcome(running=True)
    return None


def running_keys(kind: str) -> list[tuple]:
    """The keys, tuples that start with `kind`, of the visitor's jobs running in a worker now.

    A page that allows a visitor one job of a kind at a time (a head ranking, an arena) asks this.
    """
    return [key for key in st.session_state.get(JOBS, {}) if isinstance(key, tuple) and key[:1] == (kind,)]


def job_outcome(
    key: Hashable, spec: JobSpec, images: Sequence[Image.Image], loaded: LoadedModel, what: str
) -> JobOutcome:
    """The job's result once it has one; else starts it in a worker (once per key and visitor).

    Args:
        key: everything the result depends on (model, image digests, view, options).
        spec: what to compute; its model must be `loaded`.
        images: the pictures it computes on (one, or an arena's set).
        loaded: the page's model, used only where no worker can load it again (random weights).
        what: a few words for the progress bar ("Score-CAM of vit_small…").
    """
    known = recorded_outcome(key)
    if known is not None:
        return known
    if spec.weights == "random" and not spec.twin:  # unseeded: computed here, with the same bar
        return _compute_here(key, spec, images, loaded, what)
    jobs: dict[Hashable, tuple[Path, str]] = st.session_state[JOBS]
    folder = Path(tempfile.mkdtemp(prefix="vitviz-job-"))
    try:
        start_job(spec, images, folder)
    except (OSError, ValueError) as error:  # the server's job cap included: the page says so
        shutil.rmtree(folder, ignore_errors=True)
        return JobOutcome(ending=_ending_sentence(what, f"could not start ({error})"))
    jobs[key] = (folder, what)
    return JobOutcome(running=True)


def forget(key: Hashable) -> None:
    """Drops the key's result or ending, so that the next `job_outcome` starts it again."""
    st.session_state.get(RESULTS, {}).pop(key, None)
    st.session_state.get(ENDINGS, {}).pop(key, None)


def _compute_here(
    key: Hashable, spec: JobSpec, images: Sequence[Image.Image], loaded: LoadedModel, what: str
) -> JobOutcome:
    bar = st.progress(0.0, text=f"{what}: starting…")

    def draw(snapshot: ProgressSnapshot) -> None:
        bar.progress(snapshot.fraction, text=f"{what}: {snapshot.text()}")

    try:
        result = compute_job(spec, loaded, images, JobProgress(job_unit(spec), on_update=draw))
    except (ModelError, ValueError, RuntimeError, JobCancelled) as error:
        why = "cancelled" if isinstance(error, JobCancelled) else str(error)
        st.session_state[ENDINGS][key] = _ending_sentence(what, why)
        return JobOutcome(ending=st.session_state[ENDINGS][key])
    finally:
        bar.empty()
    st.session_state[RESULTS][key] = result
    return JobOutcome(result)


def job_button(
    key: tuple,
    label: str,
    widget_key: str,
    make_job: Callable[[], tuple[JobSpec, Sequence[Image.Image]] | None],
    loaded: LoadedModel,
    what: str,
    busy: str,
    primary: bool = False,
) -> Any:
    """A job the visitor starts with a button, one of its kind (`key[0]`) at a time; its result once there.

    Draws the button (off while the key has an outcome or another job of its kind runs), `busy`
    under it while another one runs, and `job_controls` for this job and that one.

    Args:
        key: the kind, then everything the result depends on.
        make_job: on the click, the job and its pictures; None where they cannot be made (it says why).
        loaded, what: as for `job_outcome`.
    """
    outcome = recorded_outcome(key)
    others = [other for other in running_keys(key[0]) if other != key]
    if st.button(
        label,
        key=widget_key,
        type="primary" if primary else "secondary",
        disabled=outcome is not None or bool(others),
        help="Runs in a background worker, on CPU time the app leaves idle; the page follows its progress.",
    ):
        job = make_job()
        if job is not None:
            outcome = job_outcome(key, job[0], job[1], loaded, what)
            if outcome.running:
                st.rerun()  # drawn again with the button off while the worker runs
            if outcome.ending is not None and key not in st.session_state[ENDINGS]:
                st.error(outcome.ending)  # it never started (the server's cap): click again later
                outcome = None
    if others:
        st.caption(busy)
    job_controls([key, *others], f"{widget_key}_job")
    return None if outcome is None else outcome.result


def job_controls(keys: Sequence[Hashable], widget_key: str) -> None:
    """The running jobs of `keys` followed (`follow_jobs`); for each that ended without a result, why, and a Run again button."""
    endings = st.session_state.get(ENDINGS, {})
    for number, key in enumerate(keys):
        if key in endings:
            row = st.columns([5, 1], vertical_alignment="center")
            row[0].caption(endings[key])
            if row[1].button("Run again", key=f"{widget_key}_again_{number}"):
                forget(key)
                st.rerun()
    if any(key in st.session_state.get(JOBS, {}) for key in keys):
        follow_jobs(keys, widget_key)


def ending_note(outcome: JobOutcome) -> str:
    """A panel's note for a job without a result: running, cancelled, or its error."""
    if outcome.running:
        return "Computing in the background (progress below)…"
    return outcome.ending or ""


def _ending_sentence(what: str, why: str) -> str:
    """ "1. drop probe of ViT-S/16 — cancelled." or "… — could not compute it: <error>": which job ended, and why.

    A page may follow several jobs (one per model); the sentence names the one it speaks of.
    """
    return f"{what} — cancelled." if why == "cancelled" else f"{what} — could not compute it: {why}"


@st.fragment(run_every=REFRESH_S)
def follow_jobs(keys: Sequence[Hashable], widget_key: str) -> None:
    """Each running job of `keys`: a progress bar with the time left and a Cancel button.

    Once one ends, its result (or its error) joins the visitor's session and the page reruns.
    """
    jobs: dict[Hashable, tuple[Path, str]] = st.session_state.get(JOBS, {})
    ended = False
    for number, key in enumerate(keys):
        if key not in jobs:
            continue
        folder, what = jobs[key]
        try:
            state = read_job(folder)
        except (OSError, ValueError) as error:  # the folder was removed or damaged under the page
            state = JobState(None, error=f"its folder could not be read ({error})")
        if not state.ended and state.quiet_s < SILENT_S:
            _running_bar(state, what, folder, f"{widget_key}_{number}")
            continue
        ended = True
        del jobs[key]
        shutil.rmtree(folder, ignore_errors=True)
        if state.result is not None:
            st.session_state.setdefault(RESULTS, {})[key] = state.result
        else:
            why = "cancelled" if state.cancelled else state.error or f"the worker was silent for {SILENT_S} s"
            st.session_state.setdefault(ENDINGS, {})[key] = _ending_sentence(what, why)
    if ended:
        st.rerun()  # the whole page: the result takes its place


def _running_bar(state: JobState, what: str, folder: Path, widget_key: str) -> None:
    row = st.columns([5, 1], vertical_alignment="center")
    if state.progress is None or state.progress.total <= 0:
        row[0].progress(0.0, text=f"{what}: loading the model in the background…")
    else:
        shown = dataclasses.replace(state.progress, eta_s=state.eta_now())
        row[0].progress(shown.fraction, text=f"{what}: in the background · {shown.text()}")
    if row[1].button("Cancel", key=widget_key, help="Stops the worker at its next unit."):
        cancel_job(folder)
        row[0].caption("Cancelling…")
