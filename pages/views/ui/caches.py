"""The server's caches: models shared by every session (loaded once, bounded by bytes) and the
results derived from them, keyed by everything that determines them."""

from __future__ import annotations

import gc
import threading

import numpy as np
import streamlit as st
from PIL import Image

from pages.views.ui.choices import ModelChoice
from vitviz.availability import ModelSuggestion, model_suggestions
from vitviz.forward.attention import record_attention
from vitviz.forward.tokens import output_embedding, position_similarity
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
    LoadedModel,
    ModelError,
    describe_weights,
    estimate_model,
    load_model,
    untrained_twin,
)
from vitviz.predict import Prediction, predict
from vitviz.preprocess import ImageView, ViewMode, image_view
from vitviz.runs import MODEL_FILE, RunError, run_folder_by_name
from vitviz.serving import ServingError, visitor_model
from vitviz.weights import WeightsError

__all__ = [
    "cached_attention",
    "cached_model",
    "cached_output_embedding",
    "cached_position_similarity",
    "cached_predictions",
    "cached_rollout",
    "cached_sinks",
    "cached_suggestions",
    "cached_twin",
    "cached_view",
    "load_or_stop",
    "load_problem",
    "shared_models",
]


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


@st.cache_data(ttl=300, show_spinner=False)
def cached_suggestions() -> list[ModelSuggestion]:
    """The suggested models and the weights that load here, checked at most every five minutes."""
    return model_suggestions()


@st.cache_data(show_spinner=False, max_entries=32)
def cached_position_similarity(name: str, weights: str, device: str, position: tuple[int, int]) -> np.ndarray:
    return position_similarity(cached_model(name, weights, device), position)


@st.cache_data(show_spinner="Running the model…", max_entries=24)
def cached_output_embedding(
    name: str, weights: str, device: str, digest: str, _image: Image.Image, view: ViewMode = "crop"
) -> np.ndarray:
    seen = cached_view(name, weights, device, digest, _image, view)
    return output_embedding(cached_model(name, weights, device), seen)
