"""Fine-tune: train a new head (or more) on your images in a worker, watch it learn, compare attention."""

from __future__ import annotations

import streamlit as st

from pages.views import finetune as views
from pages.views import ui
from vitviz.finetune.data import BUILTIN_SHAPES
from vitviz.finetune.trainer import DEFAULT_EPOCHS, DEFAULT_LEARNING_RATES, MODES, FinetuneConfig
from vitviz.finetune.worker import start_run

SHAPES = "built-in shapes"
UPLOAD = "upload a .zip"
FOLDER = "folder on the server"
MODE_HELP = {
    "probe": "probe — frozen backbone, new linear head on cached features (fast)",
    "last-k": "last-k — the last k blocks and a new head",
    "full": "full — every parameter (slow on a CPU)",
}
MAX_ZIP_MB = 200

st.title("Fine-tune")

with st.sidebar:
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
    st.subheader("Model")
    choice = ui.model_picker("finetune")
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

st.markdown("##### Data")
if source == SHAPES:
    summary = views.data_summary_or_message(views.shapes_summary)
elif source == UPLOAD and upload is not None:
    summary = views.data_summary_or_message(
        lambda: views.zip_summary(upload.file_id, upload.name, upload.getvalue())
    )
elif source == FOLDER and folder:
    summary = views.data_summary_or_message(lambda: views.folder_summary(folder))
else:
    summary = None
    st.info(
        "Upload a .zip of class folders."
        if source == UPLOAD
        else "Type the path of a folder of class folders."
    )
if summary is not None:
    views.render_data(summary, val_fraction, seed, max_images or None)

if choice.weights == "random":
    st.warning("Random, untrained weights: the run will start from a network that has learned nothing.")
start = st.button("Start fine-tuning", type="primary", disabled=summary is None, key="finetune_start")
if start and summary is not None:
    config = FinetuneConfig(
        model=choice.name,
        weights=choice.weights,
        mode=mode,
        last_k=last_k,
        epochs=epochs,
        batch_size=batch_size,
        lr=float(lr),
        max_images=max_images or None,
        seed=seed,
        val_fraction=val_fraction,
        device=choice.device,
    )
    if source == UPLOAD and upload is not None:
        run_folder = start_run(config, "", upload=upload.getvalue(), upload_name=upload.name)
    else:
        run_folder = start_run(config, BUILTIN_SHAPES if source == SHAPES else folder)
    views.set_open_run(run_folder, select=True)
    st.rerun()

st.divider()
st.markdown("##### Runs")
views.render_runs(views.list_runs())

open_folder = views.open_run_folder()
if open_folder is not None:
    st.divider()
    views.render_run(open_folder, choice.device)
