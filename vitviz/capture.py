"""Every forward hook vitviz puts on a model: attention, queries and keys, module inputs, activation leaves.

Models are shared (the app loads each once for every visitor), so a capture must never leak into
another caller's forward pass or leave the model changed:
- every capture holds the model's own re-entrant lock from entry to exit, so two captures on one
  model never interleave, and the fused-attention flags one saves are the model's real flags;
- every hook records only forwards run by the thread that entered the capture, so a plain forward
  another thread runs meanwhile (a prediction) is never recorded or altered; the one forward a
  capture replaces (timm's attention, to write its probabilities straight into a record) runs the
  replacement for that thread only and timm's own forward for every other;
- on exit every hook is removed, every flag restored and every forward put back, also when the
  forward raised; exceptions are never swallowed.
"""

from __future__ import annotations

import contextlib
import math
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import torch
from timm.layers import resample_abs_pos_embed
from timm.layers.attention import Attention
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "ABLATION_MODES",
    "ActivationLeaf",
    "AttentionCapture",
    "HeadAblation",
    "HeadOutputs",
    "InputCapture",
    "LayerTap",
    "ModelHooks",
    "ModuleOutputs",
    "PartitionedAttention",
    "QueryKeyCapture",
    "ResampledGrid",
    "attention_modules",
    "capture_attention",
    "class_attention_layers",
    "grid_for",
    "model_lock",
    "partitioned_attention_layers",
    "token_grid",
]

_locks: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()

ForwardHook = Callable[[nn.Module, tuple[Any, ...], Any], Any]
ForwardPreHook = Callable[[nn.Module, tuple[Any, ...]], Any]


def model_lock(model: nn.Module) -> threading.RLock:
    """The one lock of a model: held by every capture, and by anyone else who changes the model."""
    with _locks_guard:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.RLock()
        return lock


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Lists the self-attention modules whose probabilities can be captured, in forward order.

    A module qualifies when it computes softmaxed attention and passes it through `attn_drop`
    on its unfused path, as timm's `Attention` does; CNNs have none.
    """
    # `_modules` first: `hasattr` on a module without the attribute raises inside torch's
    # `__getattr__`, which over a ViT's few hundred modules cost a third of a millisecond per capture.
    return [
        module
        for module in model.modules()
        if isinstance(module._modules.get("attn_drop"), nn.Module) and hasattr(module, "fused_attn")
    ]


def class_attention_layers(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """A CaiT-style model's token self-attention layers and its class-attention layers, in forward order.

    Class-attention layers (timm's `ClassAttn`, CaiT's and XCiT's) let the class token alone attend,
    a (B, heads, 1, N) row each. Token self-attention layers are those of `attention_modules` plus
    CaiT's talking-heads attention (which has no fused path, so no `fused_attn` flag); XCiT's
    cross-covariance layers attend between channels and are neither.
    """
    self_attention, class_attention = [], []
    for module in model.modules():
        if not isinstance(module._modules.get("attn_drop"), nn.Module):
            continue
        name = type(module).__name__
        if name == "ClassAttn":
            class_attention.append(module)
        elif name != "XCA" and (hasattr(module, "fused_attn") or hasattr(module, "proj_w")):
            self_attention.append(module)
    return self_attention, class_attention


@dataclass(frozen=True)
class PartitionedAttention:
    """One attention layer that attends inside partitions of its own feature map, and how they tile it.

    - "window": non-overlapping windows of `size` (rows, cols) tokens, row-major over the map
      (padded up to whole windows), tokens row-major inside each (Swin, MaxViT's block attention);
    - "grid": a `size` (rows, cols) grid of tokens spaced H / rows and W / cols apart, one such grid
      per offset, offsets row-major, tokens row-major inside each (MaxViT's grid attention);
    - "unfolded": patches of `size` (rows, cols) pixels; one attention between all patches per pixel
      position inside a patch, positions row-major, patches row-major (MobileViT's blocks, whose
      feature map is first resized to whole patches).
    """

    name: str  # the owner's path in the model, e.g. "stages.0.blocks.0.attn_grid"
    attention: nn.Module  # the module whose `attn_drop` sees the probabilities
    owner: nn.Module  # the module whose input is the feature map that is partitioned
    kind: Literal["window", "grid", "unfolded"]
    size: tuple[int, int]  # window, grid or patch (rows, cols)
    channels_last: bool  # the owner's input is (B, H, W, C), not (B, C, H, W)


def partitioned_attention_layers(model: nn.Module) -> list[PartitionedAttention]:
    """The attention layers whose maps lie on partitions of their own feature map, in forward order.

    Swin's blocks whose windows are not shifted (a shifted window's attention would need the shift
    undone as well); MaxViT's block and grid attention (timm's `PartitionAttentionCl`,
    `PartitionAttention2d` and MaxxViT-v2's parallel pair); each attention layer inside MobileViT's
    blocks (v1's softmax attention, v2's linear attention). Any other model gives [].
    """
    layers: list[PartitionedAttention] = []
    for name, module in model.named_modules():
        kind = type(module).__name__
        attention = module._modules.get("attn")
        swin_block = hasattr(module, "shift_size") and hasattr(module, "input_resolution")
        if swin_block and isinstance(attention, nn.Module) and not any(module.shift_size):
            layers.append(
                PartitionedAttention(name, attention, module, "window", _pair_of(module.window_size), True)
            )
        elif kind in ("PartitionAttentionCl", "PartitionAttention2d") and isinstance(attention, nn.Module):
            partition = "window" if module.partition_block else "grid"
            size = _pair_of(module.partition_size)
            channels_last = kind.endswith("Cl")
            layers.append(PartitionedAttention(name, attention, module, partition, size, channels_last))
        elif kind == "ParallelPartitionAttention":  # both attend over halves of the channels, side by side
            size = _pair_of(module.partition_size)
            for part, partition in (("attn_block", "window"), ("attn_grid", "grid")):
                layers.append(
                    PartitionedAttention(
                        f"{name}.{part}", module._modules[part], module, partition, size, True
                    )
                )
        elif kind in ("MobileVitBlock", "MobileVitV2Block"):
            size = _pair_of(module.patch_size)
            for index, layer in enumerate(module.transformer):
                attention = layer._modules.get("attn")
                if isinstance(attention, nn.Module) and isinstance(
                    attention._modules.get("attn_drop"), nn.Module
                ):
                    layers.append(
                        PartitionedAttention(
                            f"{name}.transformer.{index}", attention, module, "unfolded", size, False
                        )
                    )
    return layers


def _pair_of(value: int | tuple[int, ...] | list[int]) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


class ModelHooks:
    """The machinery every capture shares: the model's lock, thread-bound hooks, removal on exit.

    A subclass registers its hooks in `_attach` with `self._hook(module, function)` and undoes any
    other change in `_restore`.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._lock = model_lock(model)
        self._handles: list[RemovableHandle] = []
        self._thread: int | None = None

    def _attach(self) -> None:
        raise NotImplementedError

    def _restore(self) -> None:
        """Undoes what `_attach` changed besides hooks; nothing by default."""

    def _hook(self, module: nn.Module, function: ForwardHook) -> None:
        def bound_to_thread(hooked: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
            if threading.get_ident() != self._thread:
                return None  # another caller's forward on the shared model: leave it alone
            return function(hooked, inputs, output)

        self._handles.append(module.register_forward_hook(bound_to_thread))

    def _pre_hook(self, module: nn.Module, function: ForwardPreHook) -> None:
        """Like `_hook`, before the module runs: `function` may return new inputs for it."""

        def bound_to_thread(hooked: nn.Module, inputs: tuple[Any, ...]) -> Any:
            if threading.get_ident() != self._thread:
                return None  # another caller's forward on the shared model: leave it alone
            return function(hooked, inputs)

        self._handles.append(module.register_forward_pre_hook(bound_to_thread))

    def __enter__(self) -> Self:
        self._lock.acquire()
        self._thread = threading.get_ident()
        try:
            self._attach()
        except BaseException:
            self._release()
            raise
        return self

    def _release(self) -> None:
        try:
            for handle in self._handles:
                handle.remove()
            self._handles = []
            self._restore()
        finally:
            self._thread = None
            self._lock.release()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._release()


class AttentionCapture(ModelHooks):
    """Records each attention layer's probabilities, (B, heads, N, N), during a forward pass.

    On entry the fused kernel is switched off (it never materialises the probabilities) and a
    hook on each `attn_drop` records its input; on exit the hooks are removed and every fused
    flag is restored.

    With `detach=False` the recorded tensors stay in the autograd graph, so gradient methods
    can ask `torch.autograd.grad(score, capture.attentions)` for each layer's own gradient.

    With `into`, a (layers, B, heads, N, N) tensor, each layer's probabilities are written
    straight into their slice: one allocation for the whole record instead of one per layer plus a
    stack of them all afterwards, and no copy. A layer of timm's own `Attention` runs, on this
    thread and without autograd, `_attention_into` (timm's unfused forward, step for step, with
    `q @ kᵀ` made in a scratch reused by every layer and the softmax written from it into the
    slice); any other layer's probabilities are copied into their slice the moment they are made.
    `capture.attentions` then holds the slices.

    Example:
        with AttentionCapture(model) as capture:
            logits = model(x)
        attentions = capture.attentions  # one (B, heads, N, N) tensor per layer
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        detach: bool = True,
        into: torch.Tensor | None = None,
        modules: list[nn.Module] | None = None,
    ) -> None:
        super().__init__(model)
        # `modules`: the layers to record instead of `attention_modules` (CaiT's, see class_attention_layers).
        self.modules = attention_modules(model) if modules is None else list(modules)
        if not self.modules:
            raise ValueError(f"{type(model).__name__} has no self-attention layers to capture")
        if into is not None and (not detach or len(into) != len(self.modules)):
            raise ValueError(f"`into` needs detach=True and one slice per layer ({len(self.modules)})")
        self.detach = detach
        self.into = into
        self.attentions: list[torch.Tensor] = []
        self._fused_flags: list[bool | None] = []
        # The instance `forward` each module had before `_attach` replaced it (None: the class's).
        self._own_forwards: list[tuple[nn.Module, Callable[..., Any] | None]] = []
        self._scores: torch.Tensor | None = None  # one image's q @ kᵀ, reused by every layer

    def _attach(self) -> None:
        self.attentions = []
        # None for a layer without a fused path (CaiT's talking heads): nothing to switch or restore.
        self._fused_flags = [getattr(module, "fused_attn", None) for module in self.modules]
        for module, fused in zip(self.modules, self._fused_flags, strict=True):
            if fused is not None:
                module.fused_attn = False
            self._hook(module.attn_drop, self._record)
            if self.into is not None and type(module).forward is Attention.forward:
                self._write_into_record(module)

    def _restore(self) -> None:
        for module, fused in zip(self.modules, self._fused_flags, strict=True):
            if fused is not None:
                module.fused_attn = fused
        self._fused_flags = []
        for module, forward in reversed(self._own_forwards):
            if forward is None:
                del module.forward
            else:
                module.forward = forward
        self._own_forwards = []
        self._scores = None

    def _write_into_record(self, module: nn.Module) -> None:
        """Makes this thread's forwards of a timm `Attention` write its softmax into the record.

        The module's `forward` is replaced for the capture's lifetime (under the model's lock, put
        back on exit); any other thread, a mask, autograd, or a slice that does not fit runs timm's
        own forward, whose probabilities `_record` then copies.
        """
        self._own_forwards.append((module, module.__dict__.get("forward")))
        timm_forward = module.forward

        def forward(
            x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
        ) -> torch.Tensor:
            assert self.into is not None
            layer = len(self.attentions)
            probabilities = self.into[layer] if layer < len(self.into) else None
            if (
                threading.get_ident() != self._thread  # another caller's forward on the shared model
                or attn_mask is not None
                or is_causal
                or torch.is_grad_enabled()
                or not _fits(probabilities, x, module.num_heads)
            ):
                return timm_forward(x, attn_mask=attn_mask, is_causal=is_causal)
            if self._scores is None or self._scores.shape != probabilities.shape[1:]:
                self._scores = torch.empty_like(probabilities[0])  # (heads, N, N)
            return _attention_into(module, x, probabilities, self._scores)

        module.forward = forward

    def _record(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: object) -> None:
        attention = inputs[0]
        if self.into is not None:
            slot = self.into[len(self.attentions)]
            if attention.data_ptr() != slot.data_ptr():  # not written there by `_attention_into`
                slot.copy_(attention)
            self.attentions.append(slot)
            return
        self.attentions.append(attention.detach() if self.detach else attention)


def _fits(probabilities: torch.Tensor | None, x: torch.Tensor, heads: int) -> bool:
    """Whether a slice of the record can hold the probabilities of the tokens `x` (B, N, dim)."""
    if probabilities is None:
        return False
    batch, tokens, _ = x.shape
    same_kind = probabilities.dtype == x.dtype and probabilities.device == x.device
    return (
        same_kind and probabilities.shape == (batch, heads, tokens, tokens) and probabilities.is_contiguous()
    )


def _attention_into(
    module: Attention, x: torch.Tensor, probabilities: torch.Tensor, scores: torch.Tensor
) -> torch.Tensor:
    """timm's `Attention.forward` on its unfused path, with the probabilities made in `probabilities`.

    The same operations in the same order as timm's (`q * scale`, `q @ kᵀ`, softmax, `attn_drop`,
    `attn @ v`, every submodule called as a module so that hooks on it still fire), so the output
    and the probabilities are bit for bit timm's; only where they are made differs: `q @ kᵀ` goes
    into `scores`, reused from layer to layer (so still in the CPU's cache), and the softmax straight
    into `probabilities`, instead of into two fresh tensors, one of which a hook would copy; a
    power-of-two scale is applied to the product instead of to q (exact, so the same bits).

    Args:
        module: a timm `Attention` (its class's own forward, not a subclass's).
        x: (B, N, dim) tokens.
        probabilities: (B, heads, N, N) slice of the record, same dtype and device as `x`.
        scores: (heads, N, N) scratch, same dtype and device.

    Returns:
        (B, N, dim_out), as timm's forward.
    """
    batch, tokens, _ = x.shape
    gate = module.gate(x).sigmoid() if module.gate is not None else None
    qkv = module.qkv(x).reshape(batch, tokens, 3, module.num_heads, module.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B, heads, N, head_dim) each
    q, k = module.q_norm(q), module.k_norm(k)
    keys = k.transpose(-2, -1)  # (B, heads, head_dim, N)
    # A power of two (head_dim 4, 16, 64, 256) scales exactly, so scaling the product by it gives
    # the bits of timm's `(q * scale) @ kᵀ` and saves a pass over q.
    exact_scale = math.frexp(module.scale)[0] == 0.5
    for image in range(batch):
        if exact_scale:  # beta=0: the scratch's old contents are ignored, NaN included
            torch.baddbmm(scores, q[image], keys[image], beta=0, alpha=module.scale, out=scores)
        else:
            torch.matmul(q[image] * module.scale, keys[image], out=scores)
        torch.softmax(scores, dim=-1, out=probabilities[image])  # (heads, N, N)
    x = module.attn_drop(probabilities) @ v  # (B, heads, N, head_dim)
    x = x.transpose(1, 2).reshape(batch, tokens, module.attn_dim)
    x = module.norm(x)
    if gate is not None:
        x = x * gate
    return module.proj_drop(module.proj(x))


class QueryKeyCapture(ModelHooks):
    """Records one attention layer's queries and keys, (B, heads, N, head_dim), during a forward pass.

    timm's `Attention` passes q and k through `q_norm` and `k_norm` (identities unless the model
    normalises them) right before the dot product, so hooks on their outputs see exactly the
    vectors the attention is computed from, fused kernel or not.

    Example:
        with QueryKeyCapture(model, layer=3) as capture:
            model(x)
        queries, keys = capture.queries, capture.keys
    """

    def __init__(self, model: nn.Module, layer: int) -> None:
        super().__init__(model)
        modules = attention_modules(model)
        if not modules:
            raise ValueError(f"{type(model).__name__} has no self-attention layers")
        if not 0 <= layer < len(modules):
            raise ValueError(f"layer {layer} outside 0..{len(modules) - 1}")
        self.module = modules[layer]
        if not all(isinstance(getattr(self.module, name, None), nn.Module) for name in ("q_norm", "k_norm")):
            raise ValueError(
                f"{type(self.module).__name__} has no q_norm/k_norm to read queries and keys from"
            )
        self.scale = float(self.module.scale)
        self.queries: torch.Tensor | None = None
        self.keys: torch.Tensor | None = None

    def _attach(self) -> None:
        self.queries = self.keys = None
        self._hook(self.module.q_norm, self._record("queries"))
        self._hook(self.module.k_norm, self._record("keys"))

    def _record(self, name: str) -> ForwardHook:
        def record(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            setattr(self, name, output.detach())

        return record


class InputCapture(ModelHooks):
    """Keeps the input of one module of the model (e.g. what enters the final norm)."""

    def __init__(self, model: nn.Module, module: nn.Module) -> None:
        super().__init__(model)
        self.module = module
        self.input: torch.Tensor | None = None

    def _attach(self) -> None:
        self.input = None
        self._hook(self.module, self._record)

    def _record(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: object) -> None:
        self.input = inputs[0].detach()


class ActivationLeaf(ModelHooks):
    """Makes one module's output the start of the autograd graph, and keeps it.

    A forward hook swaps the output for a copy of a fresh leaf that requires grad, so a backward
    from the class score stops there: nothing upstream is recorded, and the frozen parameters
    never receive a gradient.
    """

    def __init__(self, model: nn.Module, module: nn.Module) -> None:
        super().__init__(model)
        self.module = module
        self.activation: torch.Tensor | None = None

    def _attach(self) -> None:
        self.activation = None
        self._hook(self.module, self._swap)

    def _swap(self, _module: nn.Module, _inputs: tuple[Any, ...], output: Any) -> Any:
        tensor = output[-1] if isinstance(output, list | tuple) else output
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{type(self.module).__name__} does not output a tensor")
        leaf = tensor.detach().requires_grad_(True)
        self.activation = leaf
        # A clone, so that an in-place activation downstream never writes into the leaf.
        replaced = leaf.clone()
        if isinstance(output, list | tuple):
            return type(output)([*output[:-1], replaced])
        return replaced


class ResampledGrid(ModelHooks):
    """Lets this thread's forwards of a plain ViT take an input of any size the patches tile exactly.

    timm's ViT checks the input against its built size and adds a position embedding of its built
    grid. Changing its attributes (timm's `dynamic_img_size`) would change the shared model for
    every other caller, so two thread-bound hooks do it instead, on this thread only:
    - before `patch_embed` runs, the real input is kept and replaced by a one-image input of the
      built size (so its size check passes; its result is discarded);
    - before `pos_drop` (the end of the ViT's `_pos_embed`), the dummy's tokens are replaced by the
      real input's patches with the prefix tokens and the position embedding resampled to their
      grid by timm's own `resample_abs_pos_embed`, exactly as timm's dynamic image size does it.
    Everything after (blocks, norm, head) runs unchanged, so other hooks (attention capture) see
    the real tokens. A model built with `dynamic_img_size` needs none of this and gets no hooks.

    Check `vitviz.preprocess.supports_aspect_view(model)` first.

    Example:
        with ResampledGrid(model):
            logits = model(pixels)  # pixels (1, 3, 112, 448): an 8×32 grid of 14-px patches
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.patch_embed = model.patch_embed
        self._pixels: list[torch.Tensor] = []  # the real input of the forward under way

    def _attach(self) -> None:
        self._pixels = []
        if getattr(self.model, "dynamic_img_size", False):
            return
        self._pre_hook(self.patch_embed, self._swap_input)
        self._pre_hook(self.model.pos_drop, self._real_tokens)

    def _swap_input(self, _module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        pixels = inputs[0]  # (B, 3, H, W)
        self._pixels.append(pixels)
        height, width = self.patch_embed.img_size
        return (pixels.new_zeros(1, pixels.shape[1], height, width), *inputs[1:])

    def _real_tokens(self, _module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        model, patch_embed = self.model, self.patch_embed
        pixels = self._pixels.pop()
        rows, cols = token_grid(model, pixels)
        patches = patch_embed.norm(patch_embed.proj(pixels).flatten(2).transpose(1, 2))  # (B, rows·cols, D)
        prefix = [
            token.expand(pixels.shape[0], -1, -1)
            for token in (model.cls_token, model.reg_token)
            if token is not None
        ]  # (B, 1, D) and (B, registers, D)
        position = resample_abs_pos_embed(
            model.pos_embed,
            new_size=(rows, cols),
            old_size=patch_embed.grid_size,
            num_prefix_tokens=0 if model.no_embed_class else model.num_prefix_tokens,
        )
        # timm's two conventions: deit-3 / big vision add the embedding to the patches only
        if model.no_embed_class:
            tokens = torch.cat([*prefix, patches + position], dim=1)
        else:
            tokens = torch.cat([*prefix, patches], dim=1) + position
        return (tokens, *inputs[1:])  # (B, prefix + rows·cols, D)


def token_grid(model: nn.Module, pixels: torch.Tensor) -> tuple[int, int]:
    """The (rows, cols) of patches a plain ViT cuts `pixels` (B, 3, H, W) into."""
    patch_height, patch_width = model.patch_embed.patch_size
    height, width = pixels.shape[-2:]
    if height % patch_height or width % patch_width:
        raise ValueError(f"a {height}×{width} input is not tiled by {patch_height}×{patch_width} patches")
    return height // patch_height, width // patch_width


def grid_for(model: nn.Module, pixels: torch.Tensor) -> ResampledGrid | contextlib.nullcontext:
    """`ResampledGrid(model)` when `pixels` is not the size the model was built for, else nothing to do."""
    patch_embed = getattr(model, "patch_embed", None)
    built = getattr(patch_embed, "img_size", None)
    if built is None or tuple(pixels.shape[-2:]) == tuple(built):
        return contextlib.nullcontext()
    return ResampledGrid(model)


@torch.inference_mode()
def capture_attention(
    model: nn.Module, pixels: torch.Tensor, into: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Runs the model once and returns its output with every layer's attention.

    Args:
        model: a timm model with self-attention (ViT, DeiT, DINOv2, hybrids).
        pixels: (B, 3, H, W) normalised input; a plain ViT also takes any size its patches tile
            (see `ResampledGrid`).
        into: optional (layers, B, heads, N, N) tensor to copy each layer's attention into as it is
            made (see `AttentionCapture`); the returned tensors are then its slices.

    Returns:
        The model's output and one (B, heads, N, N) tensor per attention layer, first layer first.
    """
    with AttentionCapture(model, into=into) as capture, grid_for(model, pixels):
        output = model(pixels)
    return output, capture.attentions


# --- Interventions: hooks that change what a forward computes, for this thread only -------------

# How a switched-off head is replaced: by zeros, or by its own output averaged over the tokens
# (which keeps the head's mean contribution and removes only what differs from token to token).
ABLATION_MODES: tuple[str, ...] = ("zero", "mean")


class HeadAblation(ModelHooks):
    """Switches attention heads off during this thread's forwards.

    Each attention layer concatenates its heads' outputs, (B, N, heads · head_dim), right before
    its output projection `proj`; a forward-pre-hook on `proj` replaces the slices of the heads
    switched off, so every later layer sees the model without them. The head count and width are
    read from each layer (`num_heads`, `proj.in_features`), never assumed.

    Args:
        model: a timm model with self-attention layers.
        masks: bool, True where a head is off: (layers, heads) for every image alike, or
            (B, layers, heads) with one row per image of the batch (several ablations per forward).
        mode: "zero" sets the slice to zero; "mean" sets every token's slice to its mean over the
            image's tokens (prefix tokens included).

    Example:
        masks = torch.zeros(12, 6, dtype=torch.bool); masks[3, 1] = True
        with HeadAblation(model, masks, "mean"):
            logits = model(x)
    """

    def __init__(self, model: nn.Module, masks: torch.Tensor, mode: str = "zero") -> None:
        super().__init__(model)
        self.modules = attention_modules(model)
        if not self.modules:
            raise ValueError(f"{type(model).__name__} has no attention heads to switch off")
        if mode not in ABLATION_MODES:
            raise ValueError(f"unknown ablation mode {mode!r}: use one of {', '.join(ABLATION_MODES)}")
        heads = {int(module.num_heads) for module in self.modules}
        if len(heads) != 1:
            raise ValueError(f"{type(model).__name__} has layers with different head counts: {sorted(heads)}")
        expected = (len(self.modules), heads.pop())
        masks = torch.as_tensor(masks, dtype=torch.bool)
        if masks.ndim not in (2, 3) or tuple(masks.shape[-2:]) != expected:
            raise ValueError(
                f"head masks must be (layers, heads) = {expected} or (batch, *{expected}), "
                f"got {tuple(masks.shape)}"
            )
        for module in self.modules:
            proj = getattr(module, "proj", None)
            if not isinstance(proj, nn.Linear) or proj.in_features % module.num_heads:
                raise ValueError(f"{type(module).__name__} has no output projection split into heads")
        self.masks = masks
        self.mode = mode

    def _attach(self) -> None:
        per_layer = self.masks.any(dim=0) if self.masks.ndim == 3 else self.masks  # (layers, heads)
        for layer, module in enumerate(self.modules):
            if per_layer[layer].any():  # a layer with every head on runs untouched
                self._pre_hook(module.proj, self._ablation(layer))

    def _ablation(self, layer: int) -> ForwardPreHook:
        def ablate(_module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
            heads_out = inputs[0]  # (B, N, heads · head_dim)
            batch, tokens, width = heads_out.shape
            heads = self.masks.shape[-1]
            if self.masks.ndim == 3:
                if self.masks.shape[0] != batch:
                    raise ValueError(f"{self.masks.shape[0]} rows of head masks for a batch of {batch}")
                off = self.masks[:, layer]  # (B, heads)
            else:
                off = self.masks[layer].expand(batch, heads)
            off = off.to(heads_out.device)[:, None, :, None]  # (B, 1, heads, 1)
            per_head = heads_out.reshape(batch, tokens, heads, width // heads)  # (B, N, heads, head_dim)
            if self.mode == "zero":
                replaced = per_head.masked_fill(off, 0.0)
            else:
                replaced = torch.where(off, per_head.mean(dim=1, keepdim=True), per_head)
            return (replaced.reshape(batch, tokens, width), *inputs[1:])

        return ablate


class LayerTap(ModelHooks):
    """Routes one module's output through a function of the caller's during this thread's forwards.

    A third-party library that wants hooks on a layer (pytorch-grad-cam) can then hook a module of
    its own that `route` calls, instead of the shared model. With `start_graph=True` the output is
    first detached into a fresh leaf that requires grad, so a backward from the class score stops
    there: only the layers after it are recorded, and the frozen parameters get no gradient.

    Args:
        model: the shared model.
        module: the module whose output is routed.
        route: called on the (possibly detached) output; its result replaces the output.
        start_graph: start the autograd graph at the output.
    """

    def __init__(
        self,
        model: nn.Module,
        module: nn.Module,
        route: Callable[[torch.Tensor], torch.Tensor],
        *,
        start_graph: bool = False,
    ) -> None:
        super().__init__(model)
        self.module = module
        self.route = route
        self.start_graph = start_graph

    def _attach(self) -> None:
        self._hook(self.module, self._route)

    def _route(self, _module: nn.Module, _inputs: tuple[Any, ...], output: Any) -> Any:
        tensor = output[-1] if isinstance(output, list | tuple) else output
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{type(self.module).__name__} does not output a tensor")
        if self.start_graph:
            tensor = tensor.detach().requires_grad_(True)
        routed = self.route(tensor)
        if isinstance(output, list | tuple):
            return type(output)([*output[:-1], routed])
        return routed


class ModuleOutputs(ModelHooks):
    """Keeps the output of each of several modules (e.g. every transformer block), detached."""

    def __init__(self, model: nn.Module, modules: list[nn.Module]) -> None:
        super().__init__(model)
        self.modules = list(modules)
        self.outputs: list[torch.Tensor | None] = [None] * len(self.modules)

    def _attach(self) -> None:
        self.outputs = [None] * len(self.modules)
        for index, module in enumerate(self.modules):
            self._hook(module, self._record(index))

    def _record(self, index: int) -> ForwardHook:
        def record(_module: nn.Module, _inputs: tuple[Any, ...], output: Any) -> None:
            tensor = output[-1] if isinstance(output, list | tuple) else output
            self.outputs[index] = tensor.detach()

        return record


class HeadOutputs(ModelHooks):
    """Keeps each attention layer's concatenated head outputs, (B, N, heads · head_dim), with their gradient.

    The tensor is the input of the layer's output projection `proj`, where `HeadAblation` switches
    heads off; it is kept in the graph (`retain_grad`), so after a backward `self.outputs[layer].grad`
    says how the followed score moves with each head's output. A forward with autograd on and an
    input that requires grad is needed: the shared model's own parameters stay frozen.

    Example:
        with HeadOutputs(model) as heads:
            score = model(pixels.requires_grad_()).softmax(-1)[0, 281]
            score.backward()
        grads = [output.grad for output in heads.outputs]
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.modules = attention_modules(model)
        if not self.modules:
            raise ValueError(f"{type(model).__name__} has no attention heads")
        self.outputs: list[torch.Tensor | None] = [None] * len(self.modules)

    def _attach(self) -> None:
        self.outputs = [None] * len(self.modules)
        for layer, module in enumerate(self.modules):
            self._pre_hook(module.proj, self._keep(layer))

    def _keep(self, layer: int) -> ForwardPreHook:
        def keep(_module: nn.Module, inputs: tuple[Any, ...]) -> None:
            heads_out = inputs[0]
            if heads_out.requires_grad:
                heads_out.retain_grad()
            self.outputs[layer] = heads_out

        return keep
