"""Streamlit views of the Fine-tune page: data and training settings, run list, live progress and results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from pages.views import ui
from vitviz.figures.common import attention_overlay_figure
from vitviz.figures.finetune import class_counts_figure, confusion_figure, training_curves_figure
from vitviz.finetune.data import (
    BUILTIN_SHAPES,
    DataError,
    DataSummary,
    ImageSet,
    planned_split,
    scan_image_folder,
    summarize,
)
from vitviz.finetune.data import builtin_shapes as make_builtin_shapes
from vitviz.finetune.results import run_results
from vitviz.finetune.safezip import UnsafeArchiveError
from vitviz.finetune.trainer import DEFAULT_EPOCHS, DEFAULT_LEARNING_RATES, MODES, FinetuneConfig, Mode
from vitviz.finetune.worker import run_image_set, start_run, stop_run
from vitviz.images import ImageDecodeError, image_digest
from vitviz.maths.attention import class_attention_map, rollout_relevance
from vitviz.models import ModelError, describe_weights
from vitviz.preprocess import explanation_image
from vitviz.runs import (
    LOG_FILE,
    RunStatus,
    RunSummary,
    delete_run,
    list_runs,
    read_config,
    read_metrics,
    read_status,
    runs_root,
)
from vitviz.weights import WeightsError

__all__ = [
    "OPEN_RUN",
    "RUN_PARAM",
    "DataChoice",
    "TrainingSettings",
    "data_picker",
    "data_section",
    "data_summary_or_message",
    "folder_summary",
    "live_run",
    "open_run_folder",
    "render_data",
    "render_run",
    "render_runs",
    "runs_section",
    "set_open_run",
    "shapes_summary",
    "start_section",
    "training_settings",
    "zip_summary",
]

OPEN_RUN = "finetune_open_run"  # session key: the folder name of the run shown below the form
RUN_PARAM = "run"  # query parameter with the same name, so a refresh reopens the run
RUN_PICK = "finetune_run_pick"  # the runs list's selectbox
LIVE_REFRESH_S = 1.0
SHAPES = "built-in shapes"
UPLOAD = "upload a .zip"
FOLDER = "folder on the server"
MODE_HELP = {
    "probe": "probe — frozen backbone, new linear head on cached features (fast)",
    "last-k": "last-k — the last k blocks and a new head",
    "full": "full — every parameter (slow on a CPU)",
}
MAX_ZIP_MB = 200


# --------------------------------------------------------------------------------------------
# Sidebar: data and training settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataChoice:
    """Where the training images come from."""

    source: str  # SHAPES, UPLOAD or FOLDER
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
    """Sidebar: built-in shapes, an uploaded .zip of class folders, or a folder on the server."""
    st.subheader("Data")
    source = st.radio("Images", [SHAPES, UPLOAD, FOLDER], key="finetune_data_source")
    upload = folder = None
    if source == UPLOAD:
        upload = st.file_uploader(
            "A .zip of class folders (cats/001.jpg, dogs/001.jpg, …)",
            type=["zip"],
            max_upload_size=MAX_ZIP_MB,
            key="finetune_upload",
        )
    elif source == FOLDER:
        folder = st.text_input(
            "Folder of class folders", key="finetune_folder", placeholder="/data/pets"
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


@st.cache_data(show_spinner="Reading the folder…", ttl=60, max_entries=8)
def folder_summary(folder: str) -> DataSummary:
    return summarize(scan_image_folder(folder), samples_per_class=4)


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
    except (DataError, ImageDecodeError, OSError) as error:
        st.error(str(error))
    return None


def data_section(data: DataChoice, settings: TrainingSettings) -> DataSummary | None:
    """The chosen data's classes, samples and split; None, with a message, until there is usable data."""
    st.markdown("##### Data")
    if data.source == SHAPES:
        summary = data_summary_or_message(shapes_summary)
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
            else "Type the path of a folder of class folders."
        )
    if summary is not None:
        render_data(summary, settings.val_fraction, settings.seed, settings.max_images)
    return summary


def start_section(
    data: DataChoice, summary: DataSummary | None, choice: ui.ModelChoice, settings: TrainingSettings
) -> None:
    """The start button: a click starts a worker on the data and opens its run below."""
    if choice.weights == "random":
        st.warning("Random, untrained weights: the run will start from a network that has learned nothing.")
    start = st.button("Start fine-tuning", type="primary", disabled=summary is None, key="finetune_start")
    if not start or summary is None:
        return
    config = settings.config(choice)
    if data.source == UPLOAD and data.upload is not None:
        run_folder = start_run(config, "", upload=data.upload.getvalue(), upload_name=data.upload.name)
    else:
        run_folder = start_run(config, BUILTIN_SHAPES if data.source == SHAPES else data.folder)
    set_open_run(run_folder, select=True)
    st.rerun()


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
        st.plotly_chart(class_counts_figure(summary.counts), key="finetune_counts_chart")
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


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def _eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "estimating time left…"
    if seconds < 60:
        return f"about {seconds:.0f} s left"
    return f"about {seconds / 60:.0f} min left"


def _state_text(status: RunStatus) -> str:
    """The state in a word; a run whose worker is still starting up counts as training."""
    return "training" if status.active else status.state


def open_run_folder() -> Path | None:
    """The run shown on the page: from the session, or from ?run= after a refresh or in a new tab."""
    name = st.session_state.get(OPEN_RUN) or st.query_params.get(RUN_PARAM)
    if not name:
        return None
    folder = runs_root() / Path(str(name)).name  # only names under the runs folder, never a path
    if not folder.is_dir():
        return None
    return folder


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


def render_runs(runs: list[RunSummary]) -> None:
    """A table of every run, and buttons to open or delete one."""
    if not runs:
        st.caption("No runs yet: pick data and a model in the sidebar, then press Start.")
        return
    rows = []
    for run in runs:
        metrics = read_metrics(run.folder)
        rows.append(
            {
                "run": run.name,
                "state": _state_text(run.status),
                "model": run.model,
                "weights": run.weights,
                "mode": run.mode,
                "data": run.data,
                "epochs": len(metrics),
                "val acc": f"{metrics[-1]['val_acc']:.1%}" if metrics else "",
            }
        )
    st.dataframe(rows, hide_index=True, key="finetune_runs_table")
    names = [run.name for run in runs]
    current = st.session_state.get(OPEN_RUN)
    columns = st.columns([4, 1, 1], vertical_alignment="bottom")
    picked = columns[0].selectbox(
        "Run", names, index=names.index(current) if current in names else 0, key=RUN_PICK
    )
    if columns[1].button("Open", key="finetune_open", width="stretch"):
        set_open_run(runs_root() / picked)
        st.rerun()
    with columns[2].popover("Delete", width="stretch"):
        st.write(f"Delete **{picked}** and everything in its folder?")
        if st.button("Delete for good", key="finetune_delete", type="primary"):
            try:
                delete_run(runs_root() / picked)
            except ValueError as error:
                st.error(str(error))
            else:
                if st.session_state.get(OPEN_RUN) == picked:
                    set_open_run(None)
                st.rerun()


def _progress_view(folder: Path, status: RunStatus) -> None:
    config = read_config(folder)
    metrics = read_metrics(folder)
    epochs = int(config.get("hyperparameters", {}).get("epochs") or 0)
    text = status.message or status.state
    if status.active:
        text += f" · {_eta_text(status.eta_s)}"
    st.progress(min(1.0, max(0.0, status.progress)), text=text)
    if metrics:
        st.plotly_chart(training_curves_figure(metrics, epochs), key=f"finetune_curves_{status.state}")
    elif status.active:
        st.caption("Curves appear after the first epoch.")


@st.fragment(run_every=LIVE_REFRESH_S)
def live_run(folder: Path) -> None:
    """Progress of a running run, redrawn every second without rerunning the page."""
    status = read_status(folder)
    if not status.active:
        st.rerun()  # finished, stopped or failed: the whole page redraws with the results
    _progress_view(folder, status)
    if st.button("Stop", key="finetune_stop", icon=":material/stop:"):
        stop_run(folder)
        st.toast("Stopping after the current step…")
    if (folder / "stop").exists():
        st.caption("Stop requested: the run ends after its current step.")


def render_run(folder: Path, device: str) -> None:
    """The open run: live progress while it trains, then curves and results."""
    status = read_status(folder)
    config = read_config(folder)
    origin = config.get("weights", "?")
    st.subheader(f"Run {folder.name}")
    origin_text = "random (untrained) weights" if origin == "random" else describe_weights(origin)
    st.caption(
        f"**{config.get('timm_name', '?')}** · from {origin_text} · {config.get('mode', '?')} · "
        f"data {config.get('data', {}).get('label', '?')} · folder `{folder}`"
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
        log = folder / LOG_FILE
        if log.is_file():
            with st.expander("Worker log"):
                st.code(log.read_text(errors="replace")[-4000:])
    _progress_view(folder, status)
    if (folder / "model.safetensors").is_file():
        render_results(folder, config, device)
    elif status.state == "stopped":
        st.info("The run was stopped before it trained anything, so there is no model to show.")


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@st.cache_resource(max_entries=8)
def cached_run_images(folder: str, modified: float) -> ImageSet:
    """The run's image set (file paths or generated shapes), opened once per run."""
    return run_image_set(folder)


def render_results(folder: Path, config: dict, device: str) -> None:
    """Confusion matrix, misclassified images, and attention before vs after fine-tuning."""
    results = run_results(folder)
    st.markdown(
        f"#### Validation results · accuracy {results.accuracy:.1%} on {int(results.matrix.sum())} images"
    )
    matrix_column, mistakes_column = st.columns([2, 3])
    with matrix_column:
        st.plotly_chart(confusion_figure(results.matrix, results.labels), key="finetune_confusion")
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
        after = ui.cached_model(str(folder), str(folder), device)
        before = ui.cached_model(str(config["base_model"]), str(config["weights"]), device)
    except (ModelError, WeightsError, KeyError) as error:
        st.error(f"Cannot load the models to compare: {error}")
        return
    if after.facts.family == "cnn":
        st.info(f"{after.facts.name} is a CNN: it has no attention to compare.")
        return
    picture = images.item(key).load()
    digest = image_digest(picture)
    record_before = ui.cached_attention(
        str(config["base_model"]), str(config["weights"]), device, digest, picture
    )
    record_after = ui.cached_attention(str(folder), str(folder), device, digest, picture)
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
        left, right = st.columns(2)
        left.plotly_chart(before_figure, key=f"finetune_before_{row}", theme=None)
        right.plotly_chart(after_figure, key=f"finetune_after_{row}", theme=None)
        change = float(np.abs(new - old).max())
        st.caption(f"{title}: largest change of one patch {change:.2e}")
    if config.get("mode") == "probe":
        st.info(
            "A probe keeps the backbone frozen and only trains a new head, so attention is the same "
            "before and after by construction; last-k and full fine-tunes can change it."
        )
