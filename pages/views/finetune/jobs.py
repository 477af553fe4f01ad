"""Starting work on the Fine-tune page: one run, a ViT/CNN pair, the few-shot evaluation, and following them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from pages.views import ui
from pages.views.finetune.data import BUILTIN_DATA, UPLOAD, DataChoice, TrainingSettings
from pages.views.finetune.runs import set_open_run
from pages.views.finetune.state import (
    FEW_SHOT_PARAM,
    LIVE_REFRESH_S,
    OPEN_FEW_SHOT,
    OPEN_PAIR,
    PAIR_PARAM,
    eta_text,
    session_owner,
    session_runs,
    start_refusal,
    stop_button,
)
from vitviz import serving
from vitviz.figures.finetune import (
    few_shot_figure,
)
from vitviz.finetune.data import (
    DataError,
    DataSummary,
)
from vitviz.finetune.fewshot import DEFAULT_DRAWS, DEFAULT_SHOTS, parse_shots
from vitviz.finetune.fewshot_jobs import FewShotJob, FewShotRequest, few_shot_job_by_name, start_few_shot
from vitviz.finetune.pair import PAIR_MODELS, PAIR_SIDES, PairJob, pair_job_by_name, start_pair
from vitviz.finetune.worker import start_run
from vitviz.models import ModelError
from vitviz.runs import (
    MAX_RUN_TITLE_CHARS,
    TITLE_PUNCTUATION,
    RunError,
    check_new_run_title,
    read_status,
)
from vitviz.serving import ServingError

Job = TypeVar("Job", PairJob, FewShotJob)  # a background job a link can name


def _data_argument(data: DataChoice) -> str:
    """The data argument of a run: a built-in name, or the real path of a folder inside the data root.

    Raises:
        ServingError: the folder is outside the data root, missing, or server folders are off.
    """
    if data.source in BUILTIN_DATA:
        return BUILTIN_DATA[data.source]
    return str(serving.server_folder(data.folder or "").path)


def start_section(
    data: DataChoice, summary: DataSummary | None, choice: ui.ModelChoice, settings: TrainingSettings
) -> None:
    """The start button: a click starts a worker on the data and opens its run below."""
    if choice.weights == "random":
        st.warning("Random, untrained weights: the run will start from a network that has learned nothing.")
    refusal = start_refusal()
    if refusal is not None:
        st.info(refusal)
    typed_title = st.text_input(
        "Run name (optional)",
        key="finetune_run_title",
        help=f"Shown wherever the run appears, instead of its folder's name: at most {MAX_RUN_TITLE_CHARS} "
        f"letters, digits, spaces and {' '.join(TITLE_PUNCTUATION)}, and not another run's name.",
    )
    try:
        title = check_new_run_title(typed_title)
    except RunError as error:
        st.error(str(error))
        title = None
    start = st.button(
        "Start fine-tuning",
        type="primary",
        disabled=summary is None or refusal is not None or title is None,
        key="finetune_start",
    )
    if not start or summary is None or refusal is not None or title is None:
        return
    try:
        # What the visitor typed is checked here, before any worker sees it: a timm name, a run of
        # the runs folder by its name, or a weights file inside the data root (its real path).
        config = settings.config(
            ui.ModelChoice(*serving.visitor_model(choice.name, choice.weights), choice.device)
        )
        if data.source == UPLOAD and data.upload is not None:
            run_folder = start_run(
                config,
                "",
                upload=data.upload.getvalue(),
                upload_name=data.upload.name,
                owner=session_owner(),
                title=title,
            )
        else:
            run_folder = start_run(config, _data_argument(data), owner=session_owner(), title=title)
    except (RunError, ServingError, DataError, ModelError) as error:  # RunLimitError is a RunError
        st.error(str(error))
        return
    session_runs().append(run_folder.name)
    set_open_run(run_folder, select=True)
    st.rerun()


def _open_job(session_key: str, param: str, by_name: Callable[[str], Job], again: str) -> Job | None:
    """The background job this session started (its name under `session_key`), or the one the link's
    `param` names after a refresh; a name that finds none gets one line ending in `again`."""
    name = st.session_state.get(session_key) or st.query_params.get(param)
    if not name:
        return None
    try:
        job = by_name(str(name))
    except RunError as error:
        st.error(f"{error} {again}")
        st.session_state.pop(session_key, None)
        st.query_params.pop(param, None)
        return None
    st.session_state[session_key] = job.name
    return job


def _launch(begin: Callable[[], Job], session_key: str, param: str) -> None:
    """Starts a background job; a refusal is one error line, a start reruns the page following the job
    (its name kept in the session and the link, so a refresh follows it too)."""
    try:
        job = begin()
    except (RunError, ServingError, DataError, OSError) as error:  # RunLimitError is a RunError
        st.error(str(error))
        return
    st.session_state[session_key] = job.name
    st.query_params[param] = job.name
    st.rerun()


def _follow(job: Job | None, live: Callable[[Job], None], outcome: Callable[[Job], None]) -> None:
    """A running job redrawn live; a finished one's outcome; nothing without a job."""
    if job is not None:
        (live if job.alive else outcome)(job)


VIT_NAME, CNN_NAME = PAIR_MODELS["vit"][0], PAIR_MODELS["cnn"][0]  # the bundled pair's two models
PAIR_CAPTION = (
    f"The bundled ViT ({VIT_NAME}) and then the bundled CNN ({CNN_NAME}), fine-tuned with the same "
    "images, split and training settings from the sidebar (the model picker does not apply), so "
    "Compare can set a ViT and a CNN that learned the same task side by side."
)
FEW_SHOT_CAPTION = (
    f"As in the ViT paper (§4.1): frozen features of k images per class of the bundled ViT ({VIT_NAME}) "
    f"and CNN ({CNN_NAME}), a least-squares map to ±1 class targets solved in closed form, scored on "
    "the held-out images of the sidebar's split (max images, validation share and seed apply). Each "
    "count is drawn several times; the chart shows the mean and the range."
)


def _bundled_pair_heading(heading: str, caption: str) -> None:
    """The start of a section on the bundled ViT and CNN: a rule, its heading, what it does with them."""
    st.divider()
    st.markdown(f"##### {heading}")
    st.caption(caption)


def pair_section(
    data: DataChoice, summary: DataSummary | None, settings: TrainingSettings, device: str
) -> None:
    """Train the bundled ViT and CNN alike on the chosen data, watch both, then compare them."""
    _bundled_pair_heading("Train a ViT/CNN pair", PAIR_CAPTION)
    job = _open_job(OPEN_PAIR, PAIR_PARAM, pair_job_by_name, "Start a pair below.")
    refusal = start_refusal()
    upload = data.source == UPLOAD
    if upload:
        st.info("A pair trains on built-in data or a folder on the server; an upload trains a single run.")
    start = st.button(
        "Train a ViT/CNN pair",
        key="finetune_pair_start",
        disabled=summary is None or upload or refusal is not None,
        icon=":material/compare:",
    )
    if start and summary is not None and not upload and refusal is None:
        config = settings.config(ui.ModelChoice(VIT_NAME, "bundled", device))
        _launch(
            lambda: start_pair(config, _data_argument(data), owner=session_owner()), OPEN_PAIR, PAIR_PARAM
        )
    _follow(job, live_pair, pair_progress)


def pair_progress(job: PairJob) -> None:
    """Each side's progress bar, then what came of the pair."""
    runs = job.runs()
    for side in PAIR_SIDES:
        model = PAIR_MODELS[side][0]
        if side not in runs:
            waiting = "waiting for the ViT to finish" if job.alive else "not started"
            st.progress(0.0, text=f"{side.upper()} {model}: {waiting}")
            continue
        status = read_status(runs[side])
        text = f"{side.upper()} {model} · run {runs[side].name}: {status.message or status.state}"
        if status.active:
            text += f" · {eta_text(status.eta_s)}"
        st.progress(min(1.0, max(0.0, status.progress)), text=text)
    if job.alive:
        return
    pair = job.pair()
    if pair is not None:
        st.success(
            f"Both runs finished: the pair opens in Compare — pick run {pair.vit.name} and run "
            f"{pair.cnn.name} as its two models ({len(pair.labels)} classes, data {pair.data})."
        )
        st.page_link("pages/compare.py", label="Open Compare", icon=":material/compare:")
        return
    lines = [line for line in job.log().splitlines() if line.strip()]
    last = lines[-1][:300] if lines else "no output"
    st.warning(f"The pair ended before both runs finished, so it is no pair: {last}")


@st.fragment(run_every=LIVE_REFRESH_S)
def live_pair(job: PairJob) -> None:
    """The pair's progress, redrawn every second without rerunning the page."""
    if not job.alive:
        st.rerun()  # done or stopped: the whole page redraws with the outcome
    pair_progress(job)
    runs = job.runs()
    training = next((folder for folder in runs.values() if read_status(folder).active), None)
    if training is not None and stop_button(training, "Stop the pair", "finetune_pair_stop"):
        st.toast("Stopping after the current step…")  # the pair process stops when its current run does


def few_shot_section(
    data: DataChoice, summary: DataSummary | None, settings: TrainingSettings, device: str
) -> None:
    """The ViT paper's few-shot linear evaluation (§4.1) of the bundled ViT and CNN: accuracy against shots."""
    _bundled_pair_heading("Few-shot: accuracy against images per class", FEW_SHOT_CAPTION)
    job = _open_job(OPEN_FEW_SHOT, FEW_SHOT_PARAM, few_shot_job_by_name, "Start one below.")
    left, right = st.columns(2)
    shots_text = left.text_input(
        "Images per class",
        ",".join(str(count) for count in DEFAULT_SHOTS),
        max_chars=60,
        key="finetune_shots",
    )
    draws = int(right.number_input("Draws per count", 1, 20, DEFAULT_DRAWS, key="finetune_draws"))
    try:
        shots = parse_shots(shots_text)
    except ValueError as error:
        st.error(str(error))
        shots = None
    upload = data.source == UPLOAD
    if upload:
        st.info("Few-shot runs on built-in data or a folder on the server.")
    busy = job is not None and job.alive
    start = st.button(
        "Compare few-shot accuracy",
        key="finetune_few_shot_start",
        disabled=summary is None or upload or shots is None or busy,
        icon=":material/stacked_line_chart:",
    )
    if start and summary is not None and not upload and shots is not None and not busy:
        chosen = shots

        def begin() -> FewShotJob:
            request = FewShotRequest(
                _data_argument(data), chosen, draws, settings.max_images, settings.val_fraction, settings.seed,
                device, data_label=BUILTIN_DATA.get(data.source, data.folder),
            )  # fmt: skip
            return start_few_shot(request)

        _launch(begin, OPEN_FEW_SHOT, FEW_SHOT_PARAM)
    _follow(job, live_few_shot, few_shot_outcome)


@st.fragment(run_every=LIVE_REFRESH_S)
def live_few_shot(job: FewShotJob) -> None:
    """The few-shot job's last line, redrawn every second until it ends."""
    if not job.alive:
        st.rerun()
    st.info(f"Few-shot evaluation running: {job.last_line() or 'starting'}", icon=":material/hourglass_top:")


def few_shot_outcome(job: FewShotJob) -> None:
    """The finished table and chart, or why there is none."""
    table = job.table()
    if table is None:
        st.warning(f"The few-shot evaluation ended without a table: {job.last_line() or 'no output'}")
        return
    models = list(table["models"])
    rows = []
    for index, shots in enumerate(table["shots"]):
        row: dict[str, object] = {"images per class": shots}
        for name in models:
            cell = table["models"][name][index]
            row[name] = f"{cell['mean']:.1%} ({cell['low']:.1%}–{cell['high']:.1%})"
        rows.append(row)
    st.dataframe(rows, hide_index=True, key="finetune_few_shot_table")
    ui.plotly_chart(few_shot_figure(table), key="finetune_few_shot_chart", share=1.0)
    seconds = ", ".join(f"{name} {value:.1f} s" for name, value in table["feature_seconds"].items())
    st.caption(
        f"{table['data']}: {len(table['classes'])} classes, {table['test_images']} held-out images, "
        f"{table['draws']} draws per count. Features: {seconds}; every fit of the table together: "
        f"{table['fit_seconds']:.2f} s."
    )
