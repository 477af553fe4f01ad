"""Streamlit views of the Fine-tune page: data and training settings, run list, live progress and results."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from pages.views import ui
from vitviz import serving
from vitviz.figures.common import attention_overlay_figure
from vitviz.figures.finetune import (
    class_counts_figure,
    confusion_figure,
    few_shot_figure,
    training_curves_figure,
)
from vitviz.finetune.data import (
    BUILTIN_DIGITS,
    BUILTIN_SHAPES,
    DataError,
    DataSummary,
    ImageSet,
    open_image_set,
    planned_split,
    summarize,
)
from vitviz.finetune.data import builtin_shapes as make_builtin_shapes
from vitviz.finetune.fewshot import DEFAULT_DRAWS, DEFAULT_SHOTS, parse_shots
from vitviz.finetune.fewshot_jobs import FewShotJob, FewShotRequest, few_shot_job_by_name, start_few_shot
from vitviz.finetune.pair import PAIR_MODELS, PAIR_SIDES, PairJob, pair_job_by_name, start_pair
from vitviz.finetune.results import attention_change, curves_array, run_results
from vitviz.finetune.safezip import UnsafeArchiveError
from vitviz.finetune.trainer import DEFAULT_EPOCHS, DEFAULT_LEARNING_RATES, MODES, FinetuneConfig, Mode
from vitviz.finetune.worker import run_image_set, shown_log, start_run, stop_run
from vitviz.images import ImageDecodeError, image_digest
from vitviz.maths.attention import class_attention_map, rollout_relevance
from vitviz.models import RUN_WEIGHTS, ModelError, describe_weights, no_token_attention_reason
from vitviz.preprocess import explanation_image
from vitviz.progress import duration_text
from vitviz.runs import (
    RunError,
    RunStatus,
    RunSummary,
    active_runs,
    delete_run,
    list_runs,
    max_concurrent_runs,
    owned_by,
    read_config,
    read_metrics,
    read_status,
    run_folder_by_name,
)
from vitviz.serving import ServingError
from vitviz.weights import WeightsError

__all__ = [
    "OPEN_RUN",
    "PAIR_PARAM",
    "RUN_PARAM",
    "DataChoice",
    "TrainingSettings",
    "data_picker",
    "data_section",
    "data_summary_or_message",
    "folder_summary",
    "live_run",
    "open_run_folder",
    "pair_section",
    "render_data",
    "render_run",
    "render_runs",
    "runs_section",
    "session_owner",
    "set_open_run",
    "shapes_summary",
    "start_section",
    "training_settings",
    "zip_summary",
]

OPEN_RUN = "finetune_open_run"  # session key: the folder name of the run shown below the form
RUN_PARAM = "run"  # query parameter with the same name, so a refresh reopens the run
CLASSES_PER_PAGE = 50  # bars of the class-counts chart: 10,000 bars were 190 kB and unreadable
RUN_PICK = "finetune_run_pick"  # the runs list's selectbox
OPEN_PAIR = "finetune_open_pair"  # session key: the pair job this session started
PAIR_PARAM = "pair"  # its query parameter, so a refresh shows the pair's progress again
OPEN_FEW_SHOT = "finetune_few_shot_job"  # session key: the few-shot job this session started
FEW_SHOT_PARAM = "fewshot"  # its query parameter, so a refresh shows the table again
MY_RUNS = "finetune_my_runs"  # session key: names of the runs this session started
OWNER_TOKEN = "finetune_owner_token"  # session key: the secret whose digest the runs it starts record
LIVE_REFRESH_S = 1.0
SHAPES = "built-in shapes"
DIGITS = "built-in digits"
BUILTIN_DATA = {SHAPES: BUILTIN_SHAPES, DIGITS: BUILTIN_DIGITS}
UPLOAD = "upload a .zip"
FOLDER = "folder on the server"
MODE_HELP = {
    "probe": "probe — frozen backbone, new linear head on cached features (fast)",
    "last-k": "last-k — the last k blocks and a new head",
    "full": "full — every parameter (slow on a CPU)",
}
MAX_ZIP_MB = 200
NOT_YOURS = (
    "Only the visitor whose session started run {name} can {action} it (the server's operator can "
    "too); a session that started a run stops owning it when its page is reloaded."
)


# --------------------------------------------------------------------------------------------
# Sidebar: data and training settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataChoice:
    """Where the training images come from."""

    source: str  # SHAPES, DIGITS, UPLOAD or FOLDER
    upload: UploadedFile | None  # the .zip, once uploaded
    folder: str | None  # the typed folder path


@dataclass(frozen=True)
class TrainingSettings:
    """How to train, as the sidebar sets it."""

    mode: Mode
    last_k: int  # blocks trained in last-k mode
    epochs: int
    lr: float
    batch_size: int
    max_images: int | None  # None: every image
    val_fraction: float
    seed: int

    def config(self, choice: ui.ModelChoice) -> FinetuneConfig:
        """The run's configuration for the picked model."""
        return FinetuneConfig(
            model=choice.name,
            weights=choice.weights,
            mode=self.mode,
            last_k=self.last_k,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            max_images=self.max_images,
            seed=self.seed,
            val_fraction=self.val_fraction,
            device=choice.device,
        )


def data_picker() -> DataChoice:
    """Sidebar: built-in shapes or digits, an uploaded .zip of class folders, or a folder on the server.

    A folder on the server is offered only when the operator named a data root for visitors.
    """
    st.subheader("Data")
    sources = [SHAPES, DIGITS, UPLOAD] + ([FOLDER] if serving.server_paths_allowed() else [])
    source = st.radio("Images", sources, key="finetune_data_source")
    upload = folder = None
    if source == UPLOAD:
        upload = st.file_uploader(
            "A .zip of class folders (cats/001.jpg, dogs/001.jpg, …)",
            type=ui.ZIP_UPLOAD_TYPES,
            max_upload_size=MAX_ZIP_MB,
            key="finetune_upload",
        )
    elif source == FOLDER:
        folder = st.text_input(
            "Folder of class folders, in the app's data folder",
            key="finetune_folder",
            placeholder="pets",
            max_chars=serving.MAX_PATH_CHARS,
        ).strip()
    return DataChoice(source, upload, folder)


def training_settings() -> TrainingSettings:
    """Sidebar: mode, epochs, learning rate, batch size, image count, validation share and seed."""
    st.subheader("Training")
    mode = st.radio("Mode", MODES, format_func=MODE_HELP.get, key="finetune_mode")
    last_k = 2
    if mode == "last-k":
        last_k = int(st.number_input("Blocks to train (k)", 1, 48, 2, key="finetune_last_k"))
    # Keys carry the mode, so switching mode brings that mode's defaults back.
    epochs = int(st.number_input("Epochs", 1, 10_000, DEFAULT_EPOCHS[mode], key=f"finetune_epochs_{mode}"))
    if mode == "probe":
        # The probe's head is solved to its optimum (vitviz.finetune.logistic): no learning rate.
        lr = DEFAULT_LEARNING_RATES[mode]
        st.caption(
            "A probe's head is solved to its optimum (L-BFGS), with its L2 strength chosen on part of "
            "the training images; each epoch is one round of the solve."
        )
    else:
        lr = st.number_input(
            "Learning rate", 1e-6, 1.0, DEFAULT_LEARNING_RATES[mode], format="%.0e", key=f"finetune_lr_{mode}"
        )
    batch_size = int(st.number_input("Batch size", 1, 512, 32, key="finetune_batch_size"))
    max_images = int(
        st.number_input("Max images (0 = all)", 0, 1_000_000, 0, step=50, key="finetune_max_images")
    )
    val_fraction = st.slider("Validation share", 0.05, 0.5, 0.2, 0.05, key="finetune_val_fraction")
    seed = int(st.number_input("Seed", 0, 2**31 - 1, 0, key="finetune_seed"))
    return TrainingSettings(
        mode, last_k, epochs, float(lr), batch_size, max_images or None, val_fraction, seed
    )


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@st.cache_data(show_spinner="Drawing the shapes…")
def shapes_summary() -> DataSummary:
    return summarize(make_builtin_shapes(), samples_per_class=4)


@st.cache_data(show_spinner="Writing the digits…")
def digits_summary() -> DataSummary:
    return summarize(open_image_set(BUILTIN_DIGITS), samples_per_class=4)


@st.cache_data(show_spinner="Reading the folder…", ttl=60, max_entries=8)
def folder_summary(folder: str) -> DataSummary:
    """A folder inside the operator's data root; raises ServingError for anything else."""
    return summarize(serving.server_image_set(folder), samples_per_class=4)


@st.cache_data(show_spinner="Checking the archive…", max_entries=4)
def zip_summary(file_id: str, name: str, _data: bytes) -> DataSummary:
    from vitviz.finetune.data import summarize_zip

    return summarize_zip(_data, name, samples_per_class=4)


def data_summary_or_message(load) -> DataSummary | None:
    """Runs a summary loader; a refused or unusable source becomes a message, never a traceback."""
    try:
        return load()
    except UnsafeArchiveError as error:
        st.error(f"{error} Nothing was extracted.")
    except (ServingError, DataError, ImageDecodeError, OSError) as error:
        st.error(str(error))
    return None


def data_section(data: DataChoice, settings: TrainingSettings) -> DataSummary | None:
    """The chosen data's classes, samples and split; None, with a message, until there is usable data."""
    st.markdown("##### Data")
    if data.source == SHAPES:
        summary = data_summary_or_message(shapes_summary)
    elif data.source == DIGITS:
        summary = data_summary_or_message(digits_summary)
    elif data.source == UPLOAD and data.upload is not None:
        upload = data.upload
        summary = data_summary_or_message(lambda: zip_summary(upload.file_id, upload.name, upload.getvalue()))
    elif data.source == FOLDER and data.folder:
        folder = data.folder
        summary = data_summary_or_message(lambda: folder_summary(folder))
    else:
        summary = None
        st.info(
            "Upload a .zip of class folders."
            if data.source == UPLOAD
            else "Type a folder of class folders, relative to the app's data folder."
        )
    if summary is not None:
        render_data(summary, settings.val_fraction, settings.seed, settings.max_images)
    return summary


def session_owner() -> str:
    """This session's secret token: the runs it starts record its digest, and only it (or the
    operator, from the command line) may stop or delete them. A refresh starts a new session."""
    if OWNER_TOKEN not in st.session_state:
        st.session_state[OWNER_TOKEN] = secrets.token_urlsafe(32)
    return st.session_state[OWNER_TOKEN]


def _session_runs() -> list[str]:
    if MY_RUNS not in st.session_state:
        st.session_state[MY_RUNS] = []
    return st.session_state[MY_RUNS]


def running_in_session() -> str | None:
    """What this session is training now (a run's or a pair's name), or None: one at a time per visitor."""
    for name in _session_runs():
        try:
            if read_status(run_folder_by_name(name)).active:
                return f"run {name}"
        except RunError:
            continue  # deleted meanwhile
    job = st.session_state.get(OPEN_PAIR)
    if job:
        try:
            if pair_job_by_name(job).alive:
                return f"the ViT/CNN pair {job}"
        except RunError:
            pass
    return None


def start_refusal() -> str | None:
    """Why a start would be refused now (this visitor's run, or the server's cap), or None."""
    mine = running_in_session()
    if mine is not None:
        return (
            f"You are already training {mine}: one fine-tune at a time per visitor. Stop it or let it finish."
        )
    try:
        training, allowed = len(active_runs()), max_concurrent_runs()
    except RunError as error:  # the operator's setting is unreadable
        return str(error)
    if training >= allowed:
        return (
            f"The server is already training {training} of the {allowed} fine-tunes it runs at once; "
            "try again when one has finished or been stopped."
        )
    return None


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
    start = st.button(
        "Start fine-tuning",
        type="primary",
        disabled=summary is None or refusal is not None,
        key="finetune_start",
    )
    if not start or summary is None or refusal is not None:
        return
    try:
        # What the visitor typed is checked here, before any worker sees it: a timm name, a run of
        # the runs folder by its name, or a weights file inside the data root (its real path).
        config = settings.config(
            ui.ModelChoice(*serving.visitor_model(choice.name, choice.weights), choice.device)
        )
        if data.source == UPLOAD and data.upload is not None:
            run_folder = start_run(
                config, "", upload=data.upload.getvalue(), upload_name=data.upload.name, owner=session_owner()
            )
        else:
            run_folder = start_run(config, _data_argument(data), owner=session_owner())
    except (RunError, ServingError, DataError, ModelError) as error:  # RunLimitError is a RunError
        st.error(str(error))
        return
    _session_runs().append(run_folder.name)
    set_open_run(run_folder, select=True)
    st.rerun()


Job = TypeVar("Job", PairJob, FewShotJob)  # a background job a link can name


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


def pair_section(
    data: DataChoice, summary: DataSummary | None, settings: TrainingSettings, device: str
) -> None:
    """Train the bundled ViT and CNN alike on the chosen data, watch both, then compare them."""
    st.divider()
    st.markdown("##### Train a ViT/CNN pair")
    (vit_name, _), (cnn_name, _) = PAIR_MODELS["vit"], PAIR_MODELS["cnn"]
    st.caption(
        f"The bundled ViT ({vit_name}) and then the bundled CNN ({cnn_name}), fine-tuned with the same "
        "images, split and training settings from the sidebar (the model picker does not apply), so "
        "Compare can set a ViT and a CNN that learned the same task side by side."
    )
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
        config = settings.config(ui.ModelChoice(vit_name, "bundled", device))
        try:
            job = start_pair(config, _data_argument(data), owner=session_owner())
        except (RunError, ServingError, DataError) as error:  # RunLimitError is a RunError
            st.error(str(error))
            return
        st.session_state[OPEN_PAIR] = job.name
        st.query_params[PAIR_PARAM] = job.name
        st.rerun()
    if job is None:
        return
    if job.alive:
        live_pair(job)
    else:
        pair_progress(job)


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
            text += f" · {_eta_text(status.eta_s)}"
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
    if training is not None and _stop_button(training, "Stop the pair", "finetune_pair_stop"):
        st.toast("Stopping after the current step…")  # the pair process stops when its current run does


def few_shot_section(
    data: DataChoice, summary: DataSummary | None, settings: TrainingSettings, device: str
) -> None:
    """The ViT paper's few-shot linear evaluation (§4.1) of the bundled ViT and CNN: accuracy against shots."""
    st.divider()
    st.markdown("##### Few-shot: accuracy against images per class")
    (vit_name, _), (cnn_name, _) = PAIR_MODELS["vit"], PAIR_MODELS["cnn"]
    st.caption(
        f"As in the ViT paper (§4.1): frozen features of k images per class of the bundled ViT ({vit_name}) "
        f"and CNN ({cnn_name}), a least-squares map to ±1 class targets solved in closed form, scored on "
        "the held-out images of the sidebar's split (max images, validation share and seed apply). Each "
        "count is drawn several times; the chart shows the mean and the range."
    )
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
        try:
            request = FewShotRequest(
                _data_argument(data), shots, draws, settings.max_images, settings.val_fraction, settings.seed,
                device, data_label=BUILTIN_DATA.get(data.source, data.folder),
            )  # fmt: skip
            job = start_few_shot(request)
        except (RunError, ServingError, OSError) as error:
            st.error(str(error))
            return
        st.session_state[OPEN_FEW_SHOT] = job.name
        st.query_params[FEW_SHOT_PARAM] = job.name
        st.rerun()
    if job is None:
        return
    if job.alive:
        live_few_shot(job)
    else:
        few_shot_outcome(job)


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
    ui.plotly_chart(few_shot_figure(table), key="finetune_few_shot_chart")
    seconds = ", ".join(f"{name} {value:.1f} s" for name, value in table["feature_seconds"].items())
    st.caption(
        f"{table['data']}: {len(table['classes'])} classes, {table['test_images']} held-out images, "
        f"{table['draws']} draws per count. Features: {seconds}; every fit of the table together: "
        f"{table['fit_seconds']:.2f} s."
    )


def render_data(summary: DataSummary, val_fraction: float, seed: int, max_images: int | None) -> None:
    """Class counts, a few samples of every class, and the train/val split the run will use."""
    total = summary.total
    try:
        split = planned_split(summary.counts, max_images, val_fraction, seed)
        used = len(split.train) + len(split.val)
        split_text = f"{len(split.train)} train / {len(split.val)} validation images"
        if used != total:
            split_text += f" (max images: {used} of {total})"
    except DataError as error:
        split_text = str(error)
    st.caption(
        f"**{summary.source}** · {len(summary.classes)} classes · {total} images · split: {split_text}"
    )
    counts_column, samples_column = st.columns([2, 3])
    with counts_column:
        ui.plotly_chart(class_counts_figure(*_counts_page(summary.counts)), key="finetune_counts_chart")
    with samples_column:
        by_class: dict[str, list] = {}
        for name, image in summary.samples:
            by_class.setdefault(name, []).append(image)
        for name, images in list(by_class.items())[:8]:
            columns = st.columns([1, 4])
            columns[0].markdown(f"**{name}**  \n{summary.counts[name]} images")
            columns[1].image([image.resize((72, 72)) for image in images], width=72)
    if summary.skipped:
        with st.expander(f"{len(summary.skipped)} files skipped (not images, or outside a class folder)"):
            st.code("\n".join(summary.skipped[:200]) + ("\n…" if len(summary.skipped) > 200 else ""))


def _counts_page(counts: dict[str, int]) -> tuple[dict[str, int], str]:
    """The classes of the chart's page (a picker when there are more than a page of them), and its title."""
    if len(counts) <= CLASSES_PER_PAGE:
        return counts, "Images per class"
    pages = -(-len(counts) // CLASSES_PER_PAGE)
    page = int(st.number_input(f"Classes page (of {pages:,})", 1, pages, 1, key="finetune_counts_page"))
    first = (page - 1) * CLASSES_PER_PAGE
    shown = dict(itertools.islice(counts.items(), first, first + CLASSES_PER_PAGE))
    return shown, f"Images per class: classes {first + 1:,}–{first + len(shown):,} of {len(counts):,}"


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def _eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "estimating time left…"
    return f"about {duration_text(seconds)} left"


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
                "run": run.name,
                "state": _state_text(run),
                "model": run.model,
                "weights": describe_weights(run.weights, run.base_model),
                "mode": run.mode,
                "data": run.data,
                "epochs": len(metrics),
                "val acc": f"{metrics[-1]['val_acc']:.1%}" if metrics else "",
                "problem": run.problem or "",
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
    current = st.session_state.get(OPEN_RUN)
    columns = st.columns([4, 1, 1], vertical_alignment="bottom")
    picked = columns[0].selectbox(
        "Run", names, index=names.index(current) if current in names else 0, key=RUN_PICK
    )
    if columns[1].button("Open", key="finetune_open", width="stretch"):
        folder = _open_picked(picked)
        if folder is not None:
            set_open_run(folder)
            st.rerun()
    with columns[2].popover("Delete", width="stretch"):
        if not owned_by(runs[names.index(picked)].folder, session_owner()):
            st.write(NOT_YOURS.format(name=picked, action="delete"))
            return
        st.write(f"Delete **{picked}** and everything in its folder?")
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
        text += f" · {_eta_text(status.eta_s)}"
    st.progress(min(1.0, max(0.0, status.progress)), text=text)
    if metrics:
        figure = training_curves_figure(metrics, epochs)
        ui.plotly_chart(figure, key=f"finetune_curves_{status.state}")
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
    if _stop_button(folder, "Stop", "finetune_stop"):
        st.toast("Stopping after the current step…")
    if (folder / "stop").exists():
        st.caption("Stop requested: the run ends after its current step.")


def _stop_button(folder: Path, label: str, key: str) -> bool:
    """A stop button for the run's owner; for anyone else, a line saying who may stop it. True once stopped."""
    if not owned_by(folder, session_owner()):
        st.caption(NOT_YOURS.format(name=folder.name, action="stop"))
        return False
    if not st.button(label, key=key, icon=":material/stop:"):
        return False
    try:
        stop_run(folder, owner=session_owner())
    except RunError as error:
        st.error(str(error))
        return False
    return True


def render_run(folder: Path, device: str) -> None:
    """The open run: live progress while it trains, then curves and results."""
    status = read_status(folder)
    st.subheader(f"Run {folder.name}")
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


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@st.cache_resource(max_entries=8)
def cached_run_images(folder: str, modified: float) -> ImageSet:
    """The run's image set (file paths or generated shapes), opened once per run."""
    return run_image_set(folder)


def render_results(folder: Path, config: dict, device: str, downloads: dict[str, str]) -> None:
    """Confusion matrix, misclassified images, and attention before vs after fine-tuning."""
    try:
        results = run_results(folder)
    except RunError as error:
        st.error(f"The run's validation results cannot be read: {error}")
        return
    st.markdown(
        f"#### Validation results · accuracy {results.accuracy:.1%} on {int(results.matrix.sum())} images"
    )
    matrix_column, mistakes_column = st.columns([2, 3])
    with matrix_column:
        confusion = confusion_figure(results.matrix, results.labels)
        ui.plotly_chart(confusion, key="finetune_confusion")
        ui.figure_downloads(
            confusion, results.matrix, view="confusion matrix", key="finetune_confusion", **downloads
        )
    try:
        images = cached_run_images(str(folder), (folder / "config.json").stat().st_mtime)
    except (DataError, OSError) as error:
        st.warning(f"The run's images cannot be opened again ({error}); results without pictures.")
        return
    with mistakes_column:
        st.markdown(f"**Misclassified validation images** ({len(results.mistakes)})")
        if not results.mistakes:
            st.success("Every validation image was classified right.")
        shown = results.mistakes[:12]
        for start in range(0, len(shown), 4):
            columns = st.columns(4)
            for column, mistake in zip(columns, shown[start : start + 4], strict=False):
                try:
                    picture = images.item(mistake.key).load()
                except (KeyError, DataError):
                    column.caption(f"{mistake.key}: no longer readable")
                    continue
                column.image(
                    picture.resize((120, 120)),
                    caption=f"{results.labels[mistake.label]} → {results.labels[mistake.predicted]} "
                    f"({mistake.probability:.0%})",
                )
    render_attention_change(folder, config, images, results, device)


def render_attention_change(folder: Path, config: dict, images: ImageSet, results, device: str) -> None:
    """The same validation image's class-token attention and rollout, base model vs fine-tuned."""
    st.markdown("#### Attention before and after fine-tuning")
    keys = [mistake.key for mistake in results.mistakes] + [
        key for key in results.keys if key not in {m.key for m in results.mistakes}
    ]
    if not keys:
        st.info("This run has no validation images to look at.")
        return
    key = st.selectbox(
        "Validation image", keys, key=f"finetune_attention_image_{folder.name}", help="Mistakes first."
    )
    try:
        after = ui.cached_model(folder.name, RUN_WEIGHTS, device)
        before = ui.cached_model(str(config["base_model"]), str(config["weights"]), device)
    except (ModelError, WeightsError) as error:
        st.error(f"Cannot load the models to compare: {ui.load_problem(error)}")
        return
    except KeyError as error:
        st.error(f"Cannot load the models to compare: the run's config names no {error}")
        return
    if not after.facts.global_attention:
        st.info(no_token_attention_reason(after.facts, "attention maps to compare"))
        return
    try:
        picture = images.item(key).load()
    except KeyError:
        shown = key if len(key) <= 80 else key[:79] + "…"
        st.warning(
            f"The validation image {shown!r} is not among the run's images any more: no attention to compare."
        )
        return
    except DataError as error:
        st.warning(f"{error} No attention to compare.")
        return
    digest = image_digest(picture)
    record_before = ui.cached_attention(
        str(config["base_model"]), str(config["weights"]), device, digest, picture
    )
    record_after = ui.cached_attention(folder.name, RUN_WEIGHTS, device, digest, picture)
    layer = record_after.num_layers - 1
    pixels = explanation_image(picture, after.facts)
    stride = after.facts.stride_px
    maps = {
        "class-token attention, last layer": (
            class_attention_map(record_before, layer, None),
            class_attention_map(record_after, layer, None),
        ),
        "rollout": (rollout_relevance(record_before), rollout_relevance(record_after)),
    }
    # Random weights are drawn afresh on every load: "before" is a random twin, not the run's exact start.
    base_label = "before (a random twin)" if not before.trained else "before (base model)"
    sentences = []
    for row, (title, (old, new)) in enumerate(maps.items()):
        colorbar = "relevance" if title == "rollout" else "attention"
        # One colour scale for both, so equal colours mean equal values before and after.
        scale = {"zmin": float(min(old.min(), new.min())), "zmax": float(max(old.max(), new.max()))}
        before_figure = attention_overlay_figure(
            pixels, old, stride, f"{base_label}: {title}", colorbar_title=colorbar
        )
        after_figure = attention_overlay_figure(
            pixels, new, stride, f"after ({config.get('mode')}): {title}", colorbar_title=colorbar
        )
        for figure in (before_figure, after_figure):
            figure.update_traces(selector={"type": "heatmap"}, **scale)
        for column, figure, side in zip(
            st.columns(2), (before_figure, after_figure), ("before", "after"), strict=True
        ):
            with column:
                ui.plotly_chart(figure, key=f"finetune_{side}_{row}", theme=None)
        sentences.append(
            attention_change(title, old, new).sentence(str(config.get("mode")), not before.trained)
        )
    # Measured on these maps, not asserted: a probe's claim is checked against the numbers.
    st.info("  \n".join(sentences))
