"""The Fine-tune page's runs: the table, the open run's live progress and its outcome."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import streamlit as st

from pages.views import ui
from pages.views.finetune.results import render_results
from pages.views.finetune.state import (
    LIVE_REFRESH_S,
    NOT_YOURS,
    OPEN_RUN,
    RUN_PARAM,
    RUN_PICK,
    eta_text,
    session_owner,
    stop_button,
)
from vitviz.figures.finetune import (
    training_curves_figure,
)
from vitviz.finetune.results import curves_array
from vitviz.finetune.worker import shown_log
from vitviz.models import RUN_WEIGHTS, describe_weights
from vitviz.runs import (
    RunError,
    RunStatus,
    RunSummary,
    delete_run,
    list_runs,
    owned_by,
    read_config,
    read_metrics,
    read_status,
    run_folder_by_name,
    run_summary,
)


def _state_text(run: RunSummary | RunStatus) -> str:
    """The state in a word; a run whose worker is still starting up counts as training."""
    if isinstance(run, RunSummary):
        if run.problem is not None and not run.status.active:
            return "broken"
        run = run.status
    return "training" if run.active else run.state


def open_run_folder() -> Path | None:
    """The run shown on the page: from the session, or from ?run= after a refresh or in a new tab.

    Runs are named, never given as paths: a name that is no run of the runs folder gets one line
    (which quotes at most 80 characters of it and never a server path) and no run is shown.
    """
    name = st.session_state.get(OPEN_RUN) or st.query_params.get(RUN_PARAM)
    if not name:
        return None
    try:
        return run_folder_by_name(str(name))
    except RunError as error:
        st.error(f"{error} Pick a run from the list.")
        st.session_state.pop(OPEN_RUN, None)
        return None


def set_open_run(folder: Path | None, select: bool = False) -> None:
    """Shows `folder` below the form (None: no run); `select` also picks it in the runs list.

    `select` is only allowed before the runs list is drawn in this script run.
    """
    if select and folder is not None:
        st.session_state[RUN_PICK] = folder.name
    if folder is None:
        st.session_state.pop(OPEN_RUN, None)
        st.query_params.pop(RUN_PARAM, None)
    else:
        st.session_state[OPEN_RUN] = folder.name
        st.query_params[RUN_PARAM] = folder.name


def runs_section(device: str) -> None:
    """Every run in a table, and the open one below it."""
    st.divider()
    st.markdown("##### Runs")
    render_runs(list_runs())
    folder = open_run_folder()
    if folder is not None:
        st.divider()
        render_run(folder, device)


def _open_picked(name: str) -> Path | None:
    try:
        return run_folder_by_name(name)
    except RunError as error:
        st.error(str(error))
        return None


def render_runs(runs: list[RunSummary]) -> None:
    """A table of every run (broken ones marked, with their reason), and buttons to open or delete one."""
    if not runs:
        st.caption("No runs yet: pick data and a model in the sidebar, then press Start.")
        return
    rows = []
    for run in runs:
        metrics = read_metrics(run.folder) if run.problem is None else []
        rows.append(
            {
                "run": run.title,
                "state": _state_text(run),
                "model": run.model,
                "weights": describe_weights(run.weights, run.base_model),
                "mode": run.mode,
                "data": run.data,
                "epochs": len(metrics),
                "val acc": f"{metrics[-1]['val_acc']:.1%}" if metrics else "",
                "problem": run.problem or "",
                "folder": run.name,  # tells runs alike apart; links and the command line use it
            }
        )
    st.dataframe(rows, hide_index=True, key="finetune_runs_table")
    broken = [run for run in runs if run.problem is not None]
    if broken:
        st.warning(
            f"{len(broken)} broken run{'s' if len(broken) != 1 else ''} (it cannot be opened as a model; "
            "delete it): " + "; ".join(str(run.problem) for run in broken[:5])
        )
    names = [run.name for run in runs]
    by_name = {run.name: run for run in runs}
    titles = Counter(run.short_title for run in runs)

    def shown(name: str) -> str:  # runs alike ("DINOv2 ViT-S · probe · shapes") told apart by folder
        title = by_name[name].short_title
        return title if titles[title] == 1 else f"{title} · {name}"

    current = st.session_state.get(OPEN_RUN)
    columns = st.columns([4, 1, 1], vertical_alignment="bottom")
    picked = columns[0].selectbox(
        "Run",
        names,
        index=names.index(current) if current in names else 0,
        format_func=shown,
        help="Each run by its name; the open run's model, mode, data, date and folder are shown under it.",
        key=RUN_PICK,
    )
    if columns[1].button("Open", key="finetune_open", width="stretch"):
        folder = _open_picked(picked)
        if folder is not None:
            set_open_run(folder)
            st.rerun()
    with columns[2].popover("Delete", width="stretch"):
        if not owned_by(by_name[picked].folder, session_owner()):
            st.write(NOT_YOURS.format(name=by_name[picked].short_title, action="delete"))
            return
        st.write(f"Delete **{by_name[picked].short_title}** and everything in its folder?")
        if st.button("Delete for good", key="finetune_delete", type="primary"):
            folder = _open_picked(picked)
            try:
                if folder is not None:
                    delete_run(folder, owner=session_owner())
            except RunError as error:
                st.error(str(error))
            else:
                if folder is not None:
                    if st.session_state.get(OPEN_RUN) == picked:
                        set_open_run(None)
                    st.rerun()


def _planned_epochs(folder: Path) -> int:
    try:
        return int(read_config(folder).get("hyperparameters", {}).get("epochs") or 0)
    except RunError:
        return 0


def _progress_view(folder: Path, status: RunStatus, downloads: dict[str, str] | None = None) -> None:
    """The progress bar and the curves; `downloads` (model, weights, data) adds the curves' files."""
    metrics = read_metrics(folder)
    epochs = _planned_epochs(folder)
    text = status.message or status.state
    if status.active:
        text += f" · {eta_text(status.eta_s)}"
    st.progress(min(1.0, max(0.0, status.progress)), text=text)
    if metrics:
        figure = training_curves_figure(metrics, epochs)
        ui.plotly_chart(figure, key=f"finetune_curves_{status.state}", share=1.0)
        if downloads is not None:
            ui.figure_downloads(
                figure, curves_array(metrics), view="training curves", key="finetune_curves", **downloads
            )
    elif status.active:
        st.caption("Curves appear after the first epoch.")


@st.fragment(run_every=LIVE_REFRESH_S)
def live_run(folder: Path) -> None:
    """Progress of a running run, redrawn every second without rerunning the page."""
    status = read_status(folder)
    if not status.active:
        st.rerun()  # finished, stopped or failed: the whole page redraws with the results
    _progress_view(folder, status)
    if stop_button(folder, "Stop", "finetune_stop"):
        st.toast("Stopping after the current step…")
    if (folder / "stop").exists():
        st.caption("Stop requested: the run ends after its current step.")


def render_run(folder: Path, device: str) -> None:
    """The open run: live progress while it trains, then curves and results."""
    status = read_status(folder)
    shown = run_summary(folder)
    # A long name is cut; the whole of it is the heading's tooltip.
    st.subheader(f"Run {shown.short_title}", help=shown.title if shown.short_title != shown.title else None)
    try:
        config = read_config(folder)
    except RunError as error:
        st.error(f"This run is broken and cannot be shown: {error}")
        return
    origin = config.get("weights", "?")
    origin_text = (
        "random (untrained) weights"
        if origin == "random"
        else describe_weights(origin, config.get("base_model"))
    )
    # The folder's name only: the runs folder's place on the server is not the visitor's business.
    st.caption(
        f"**{config.get('timm_name', '?')}** · from {origin_text} · {config.get('mode', '?')} · "
        f"data {config.get('data', {}).get('label', '?')} · run `{folder.name}`"
    )
    if origin == "random":
        st.warning(
            "This run started from random, untrained weights: only what the run itself trained has "
            "learned anything. Its backbone's attention shows an untrained network."
        )
    if status.active:
        live_run(folder)
        return
    if status.state == "failed":
        st.error(f"The run failed: {status.error or 'no reason recorded'}")
        log = shown_log(folder)  # paths inside the run relative to it, no other server path
        if log:
            with st.expander("Worker log"):
                st.code(log)
    downloads = {  # a run's files are named by the run's name
        "model": folder.name,
        "weights": RUN_WEIGHTS,
        "image": str(config.get("data", {}).get("label", "data")),
    }
    _progress_view(folder, status, downloads)
    if (folder / "model.safetensors").is_file():
        render_results(folder, config, device, downloads)
    elif status.state == "stopped":
        st.info("The run was stopped before it trained anything, so there is no model to show.")
