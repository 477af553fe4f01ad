"""The Fine-tune page's sidebar (data and training settings) and the data summary."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from pages.views import ui
from vitviz import serving
from vitviz.figures.finetune import (
    class_counts_figure,
)
from vitviz.finetune.data import (
    BUILTIN_DIGITS,
    BUILTIN_SHAPES,
    DataError,
    DataSummary,
    open_image_set,
    planned_split,
    summarize,
)
from vitviz.finetune.data import builtin_shapes as make_builtin_shapes
from vitviz.finetune.safezip import UnsafeArchiveError
from vitviz.finetune.trainer import DEFAULT_EPOCHS, DEFAULT_LEARNING_RATES, MODES, FinetuneConfig, Mode
from vitviz.images import ImageDecodeError
from vitviz.serving import ServingError

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
CLASSES_PER_PAGE = 50  # bars of the class-counts chart: 10,000 bars were 190 kB and unreadable


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
        ui.plotly_chart(
            class_counts_figure(*_counts_page(summary.counts)), key="finetune_counts_chart", share=0.4
        )
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
