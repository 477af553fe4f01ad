"""Captures attention probabilities from timm models whose attention is normally fused."""

from __future__ import annotations

from types import TracebackType

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["AttentionCapture", "attention_modules", "capture_attention"]


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Lists the self-attention modules whose probabilities can be captured, in forward order.

    A module qualifies when it computes softmaxed attention and passes it through `attn_drop`
    on its unfused path, as timm's `Attention` does; CNNs have none.
    """
    return [
        module
        for module in model.modules()
        if hasattr(module, "fused_attn") and isinstance(getattr(module, "attn_drop", None), nn.Module)
    ]


class AttentionCapture:
    """Records each attention layer's probabilities, (B, heads, N, N), during a forward pass.

    On entry the fused kernel is switched off (it never materialises the probabilities) and a
    hook on each `attn_drop` records its input; on exit the hooks are removed and every fused
    flag is restored, also when the forward raised. Exceptions are never swallowed.

    With `detach=False` the recorded tensors stay in the autograd graph, so gradient methods
    can ask `torch.autograd.grad(score, capture.attentions)` for each layer's own gradient.

    Example:
        with AttentionCapture(model) as capture:
            logits = model(x)
        attentions = capture.attentions  # one (B, heads, N, N) tensor per layer
    """

    def __init__(self, model: nn.Module, *, detach: bool = True) -> None:
        self.modules = attention_modules(model)
        if not self.modules:
            raise ValueError(f"{type(model).__name__} has no self-attention layers to capture")
        self.detach = detach
        self.attentions: list[torch.Tensor] = []
        self._handles: list[RemovableHandle] = []
        self._fused_flags: list[bool] = []

    def __enter__(self) -> AttentionCapture:
        self.attentions = []
        for module in self.modules:
            self._fused_flags.append(module.fused_attn)
            module.fused_attn = False
            self._handles.append(module.attn_drop.register_forward_hook(self._record))
        return self

    def _record(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: object) -> None:
        attention = inputs[0]
        self.attentions.append(attention.detach() if self.detach else attention)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for handle in self._handles:
            handle.remove()
        for module, fused in zip(self.modules, self._fused_flags, strict=True):
            module.fused_attn = fused
        self._handles = []
        self._fused_flags = []


@torch.inference_mode()
def capture_attention(model: nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Runs the model once and returns its output with every layer's attention.

    Args:
        model: a timm model with self-attention (ViT, DeiT, DINOv2, hybrids).
        pixels: (B, 3, H, W) normalised input.

    Returns:
        The model's output and one (B, heads, N, N) tensor per attention layer, first layer first.
    """
    with AttentionCapture(model) as capture:
        output = model(pixels)
    return output, capture.attentions
