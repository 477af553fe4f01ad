"""What a model costs in memory before it is built, the server's budget for it, and a byte-bounded model cache.

A served app builds whatever model a visitor names: a timm name, a fine-tune's run folder whose
config.json asks for a 4096-pixel input, a link to ViT-L with random weights. Here a model is
estimated on PyTorch's `meta` device first (no memory, a fraction of a second), and refused when
its estimate passes the operator's budget; the models the app keeps loaded are bounded by their
bytes, the least recently used leaving first.

Settings (whole numbers of bytes, `_` allowed, or with a K/M/G/T suffix in powers of 1024):
    VITVIZ_MEMORY_BYTES: what the app may hold in models, cached or being built (default 6 GiB);
        no model whose estimate passes it is built, by the app or the command line.
    VITVIZ_VISITOR_MODEL_BYTES: the largest estimate of one model a visitor may load (default 3 GiB).
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import timm
import torch
from torch import nn

from vitviz.capture import attention_modules
from vitviz.text import picture_size_text

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_VISITOR_MODEL_BYTES",
    "MEMORY_BUDGET_ENV",
    "RUNTIME_OVERHEAD_BYTES",
    "VISITOR_MODEL_ENV",
    "WORKING_SET_FACTOR",
    "MemoryEstimate",
    "MemorySettingError",
    "ModelCache",
    "byte_setting",
    "estimate_build",
    "memory_budget",
    "module_bytes",
    "size_text",
    "visitor_model_limit",
]

MEMORY_BUDGET_ENV = "VITVIZ_MEMORY_BYTES"
# On a 24 GB machine, 6 GiB of models in the app leaves room for two fine-tune workers and two
# background jobs (each loads its own model: four head rankings took about 4 GB), a Python with torch
# per process and the OS.
DEFAULT_MEMORY_BUDGET = 6 * 1024**3
VISITOR_MODEL_ENV = "VITVIZ_VISITOR_MODEL_BYTES"
DEFAULT_VISITOR_MODEL_BYTES = 3 * 1024**3  # ViT-L/16 with hub weights (about 2.4 GiB) loads; ViT-H does not

# One forward's working set, in multiples of its largest single activation: the block's input, the
# attention scores, their softmax and the output held at once (measured peaks stay below it).
WORKING_SET_FACTOR = 4
# What one load adds beside the model's own tensors: the image's view, timm's initialisation
# temporaries and the allocator's slack (measured 30-40 MiB for small models here).
RUNTIME_OVERHEAD_BYTES = 32 * 1024**2

_SUFFIXES = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class MemorySettingError(ValueError):
    """An operator's memory setting that cannot be read: one line naming the variable."""


def byte_setting(name: str, default: int) -> int:
    """Bytes from the environment variable `name`: "8589934592", "8_000_000_000", "8G" or "8GiB"."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    number = text.upper().removesuffix("IB").removesuffix("B")
    suffix = number[-1:] if number[-1:] in _SUFFIXES else ""
    try:
        value = int(number.removesuffix(suffix).replace("_", "")) * _SUFFIXES[suffix]
    except ValueError:
        value = 0
    if value < 1:
        raise MemorySettingError(
            f"{name} must be a number of bytes such as 8589934592 or 8G, got {text[:40]!r}."
        )
    return value


def memory_budget() -> int:
    """Bytes the app may hold in models: ``$VITVIZ_MEMORY_BYTES``, default 6 GiB."""
    return byte_setting(MEMORY_BUDGET_ENV, DEFAULT_MEMORY_BUDGET)


def visitor_model_limit() -> int:
    """The largest estimate of one model a visitor may load: ``$VITVIZ_VISITOR_MODEL_BYTES``, default 3 GiB."""
    return byte_setting(VISITOR_MODEL_ENV, DEFAULT_VISITOR_MODEL_BYTES)


def size_text(byte_count: float) -> str:
    """Bytes as people read them: "1.2 GiB", "83.5 MiB", or "2.3 TiB" for what no server holds."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3)):
        if byte_count >= scale:
            return f"{byte_count / scale:.1f} {unit}"
    return f"{byte_count / 1024**2:.1f} MiB"


@dataclass(frozen=True)
class MemoryEstimate:
    """What building a model and looking at one image with it takes, in bytes."""

    name: str  # timm name
    input_size: tuple[int, int]  # (height, width) the model is built for
    weights_bytes: int  # parameters and buffers
    loading_bytes: int  # a state dict held beside the model while it loads (0 for random weights)
    attention_bytes: int  # every layer's attention of one image, as a capture keeps it (0 for CNNs)
    working_bytes: int  # WORKING_SET_FACTOR × the largest activation of one forward

    @property
    def total(self) -> int:
        parts = (self.weights_bytes, self.loading_bytes, self.attention_bytes, self.working_bytes)
        return sum(parts) + RUNTIME_OVERHEAD_BYTES

    def describe(self) -> str:
        """One phrase: the total and its largest parts."""
        parts = [f"{size_text(self.weights_bytes)} of weights"]
        if self.loading_bytes:
            parts.append(f"{size_text(self.loading_bytes)} while they load")
        if self.attention_bytes:
            parts.append(f"{size_text(self.attention_bytes)} of attention maps for one image")
        parts.append(f"{size_text(self.working_bytes)} to run it")
        height, width = self.input_size
        return f"{self.name} at {picture_size_text(width=width, height=height)} needs about {size_text(self.total)} ({', '.join(parts)})"

    def problem(self, limit: int, setting: str, allowance: str = "this server allows") -> str | None:
        """Why the model is refused under `limit` (named by its environment variable); None if it fits.

        `allowance` says whose limit it is: "more than the 8.0 GiB <this server allows> (SETTING)".
        """
        if self.total <= limit:
            return None
        return f"{self.describe()}: more than the {size_text(limit)} {allowance} ({setting})."


def module_bytes(model: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (a tensor shared by two modules counts once)."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _input_size(model: nn.Module) -> tuple[int, int]:
    patch_embed = getattr(model, "patch_embed", None)
    size = getattr(patch_embed, "img_size", None)
    if size is None:
        size = timm.data.resolve_model_data_config(model)["input_size"][1:]
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


@functools.lru_cache(maxsize=256)
def _estimate(name: str, build_items: tuple[tuple[str, Any], ...], loads_state: bool) -> MemoryEstimate:
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **dict(build_items))
    model.eval()
    weights = module_bytes(model)
    attentions = attention_modules(model)
    for attention in attentions:  # the unfused path shows the (B, heads, N, N) scores a capture keeps
        attention.fused_attn = False
    drops = {id(attention.attn_drop) for attention in attentions}
    outputs: list[tuple[int, bool]] = []  # (bytes, is an attention map)

    def record(module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            outputs.append((output.numel() * output.element_size(), id(module) in drops))

    leaves = [module for module in model.modules() if not module._modules]
    handles = [leaf.register_forward_hook(record) for leaf in leaves]
    height, width = _input_size(model)
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, height, width, device="meta"))  # (B, C, H, W): shapes only
    finally:
        for handle in handles:
            handle.remove()
    largest = max((size for size, _ in outputs), default=0)
    return MemoryEstimate(
        name=name,
        input_size=(height, width),
        weights_bytes=weights,
        loading_bytes=weights if loads_state else 0,
        attention_bytes=sum(size for size, is_attention in outputs if is_attention),
        working_bytes=WORKING_SET_FACTOR * largest,
    )


def estimate_build(
    name: str, build_args: dict[str, Any] | None = None, loads_state: bool = True
) -> MemoryEstimate:
    """Estimates a timm model's memory without allocating it: built and run once on the `meta` device.

    Args:
        name: a timm model name.
        build_args: keyword arguments of `timm.create_model` (img_size, num_classes); estimates
            are remembered by them.
        loads_state: weights will be loaded from a state dict (bundled, hub, a file, a run), which
            holds a second copy of the weights while it loads; False for random weights.

    Returns:
        The estimate; measured peaks of loading a model and capturing one image's attention were
        within 0.75–1.25× of it (tests/test_memory.py).

    Raises:
        TypeError, ValueError, RuntimeError: the arguments do not build this model, as timm says.
    """
    # Sizes as tuples, so that a [height, width] list read from JSON is remembered like any size.
    items = tuple(
        sorted((key, tuple(v) if isinstance(v, list) else v) for key, v in (build_args or {}).items())
    )
    return _estimate(name, items, loads_state)


_Value = TypeVar("_Value")


@dataclass
class _Entry(Generic[_Value]):
    value: _Value
    size: int


class ModelCache(Generic[_Value]):
    """Loaded models shared by every session, bounded by their bytes; the least recently used leave first.

    Any number of threads (Streamlit sessions) may ask at once: a model is loaded once however many
    ask for it together (the others wait for that load), a failed load is not kept, and a hit costs a
    dictionary lookup. A load makes room for its model first, from its estimate (`make_room`), and
    the cache is trimmed to the budget again with its real size. A model that leaves the cache is only
    dropped from it: a session still using it keeps it until that session's run ends, and its lock
    (`vitviz.capture.model_lock`) goes with it.
    """

    def __init__(self, budget: Callable[[], int]) -> None:
        self._budget = budget  # read at each load, so an operator's change applies without a restart
        self._entries: OrderedDict[Hashable, _Entry[_Value]] = OrderedDict()
        self._loading: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], _Value], size: Callable[[_Value], int]) -> _Value:
        """The value under `key`, loaded with `load()` on a miss.

        Args:
            key: what identifies the model, e.g. (name, weights, device).
            load: builds the value (and may first call `make_room` with its estimate); what it
                raises reaches the caller and nothing is kept.
            size: the bytes a loaded value holds.
        """
        hit = self._hit(key)
        if hit is not None:
            return hit.value
        with self._guard:
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            hit = self._hit(key)  # loaded by another session while this one waited
            if hit is not None:
                return hit.value
            try:
                value = load()
                entry = _Entry(value, size(value))
                with self._guard:
                    if entry.size <= self._budget():
                        self._entries[key] = entry
                        self._trim(0, keep=key)
            finally:
                with self._guard:
                    self._loading.pop(key, None)
        return value

    def make_room(self, room: int) -> None:
        """Drops the least recently used models until `room` more bytes fit the budget."""
        with self._guard:
            self._trim(room)

    def _hit(self, key: Hashable) -> _Entry[_Value] | None:
        with self._guard:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def _trim(self, room: int, keep: Hashable | None = None) -> None:
        """Drops the least recently used entries until `room` more bytes fit the budget (guard held)."""
        budget = self._budget()
        while self._entries and self.total_bytes + room > budget:
            oldest = next(iter(self._entries))
            if oldest == keep:
                break
            del self._entries[oldest]

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self._entries.values())

    def keys(self) -> list[Hashable]:
        """The cached keys, least recently used first."""
        with self._guard:
            return list(self._entries)

    def clear(self) -> None:
        with self._guard:
            self._entries.clear()
