"""AttnLRP (Achtibat et al., ICML 2024) with CP-LRP inside attention: a ViT's logit, propagated to its input.

Layer-wise relevance propagation in its Gradient×Input form: during one forward the rules are put
into the graph (forward hooks that keep every value and change only how gradient flows back), so
one backward gives each input element's gradient g and its relevance x·g. The rules follow the
`lxt` package's supported ViT path (torchvision's `vit_b_16` with zennit's Gamma rule):

- LayerNorm: the identity rule, by treating the standard deviation as a constant;
- the MLP's activation: the identity rule (gradient out/in);
- attention: CP-LRP, queries and keys are constants, so relevance flows through the values only;
- the patch embedding's convolution and the MLP's and head's linear layers: the generalised
  Gamma rule (zennit's `Gamma`), with one γ for convolutions and one for linear layers. The
  attention's value and output projections stay plain (LRP-0), as in lxt's torchvision path, where
  `nn.MultiheadAttention` never calls its projections as modules.

Relevance is conserved up to what biases, the position embedding and the prefix tokens absorb:
with those zero, the input relevance sums to the explained logit (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vitviz.capture import ModelHooks, model_lock
from vitviz.methods.base import AttentionKindMethod, ExplanationMethod, MethodUnavailableError, pool_to_grid
from vitviz.models import ModelFacts, linear_heads, plain_blocks_problem

__all__ = ["AttnLRP", "RelevanceRules", "stabilised"]

GAMMA_STABILISER = 1e-6  # zennit's default for the Gamma rule's denominators
INPUT_STABILISER = 1e-10  # lxt's when it turns a layer's input relevance back into a gradient


def stabilised(values: torch.Tensor, epsilon: float) -> torch.Tensor:
    """`values` moved away from zero by `epsilon` in the direction of their sign (zero counts as positive)."""
    sign = (values == 0).to(values) + values.sign()
    return values + epsilon * sign


@dataclass(frozen=True)
class _LinearMap:
    """A linear or convolution layer's map without its bias, its transpose, and its bias as a broadcast.

    The Gamma rule needs the layer with other weights (|W|) and its transpose; parameters are read
    here and never changed.
    """

    module: nn.Module

    def apply(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if isinstance(self.module, nn.Conv2d):
            return self.module._conv_forward(x, weight, None)
        return F.linear(x, weight)

    def transpose(
        self, output_gradient: torch.Tensor, weight: torch.Tensor, input_shape: torch.Size
    ) -> torch.Tensor:
        """The input gradient of the map with these weights, for this output gradient."""
        module = self.module
        if isinstance(module, nn.Conv2d):
            if module.padding_mode != "zeros" or isinstance(module.padding, str):
                with torch.enable_grad():  # padding conv2d_input cannot express: let autograd transpose it
                    leaf = torch.zeros(
                        input_shape, dtype=weight.dtype, device=weight.device, requires_grad=True
                    )
                    return torch.autograd.grad(self.apply(leaf, weight), leaf, output_gradient)[0]
            return torch.nn.grad.conv2d_input(
                input_shape,
                weight,
                output_gradient,
                module.stride,
                module.padding,
                module.dilation,
                module.groups,
            )
        return output_gradient @ weight

    def broadcast(self, bias: torch.Tensor) -> torch.Tensor:
        """The bias shaped to add to the output: channels first for a convolution, last for a linear layer."""
        return bias[:, None, None] if isinstance(self.module, nn.Conv2d) else bias


class _GammaRule(torch.autograd.Function):
    """Passes a layer's output on unchanged; backward turns the output relevance g·z into input relevance.

    The generalised Gamma rule (zennit's `Gamma`, in lxt's Gradient×Input form): a positive output
    is explained by x⁺·(W + γW⁺) + x⁻·(W + γW⁻) + b + γb⁺, a negative one by x⁺·(W + γW⁻) +
    x⁻·(W + γW⁺) + b + γb⁻, each input receiving its share; the input relevance is divided by the
    stabilised input to give the gradient that, times the input, is that relevance again.

    The four sign-split products reduce to two: with P = x⁺W⁺ + x⁻W⁻ and Q = x⁺W⁻ + x⁻W⁺,
    P + Q = xW and P − Q = |x||W|, and the same holds backward for the output shares. So the rule
    costs one extra product forward and two backward (zennit runs the layer four times, then four
    transposes).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        inputs: torch.Tensor,
        output: torch.Tensor,
        layer: _LinearMap,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        gamma: float,
    ) -> torch.Tensor:
        ctx.save_for_backward(inputs, output)
        ctx.layer, ctx.weight, ctx.bias, ctx.gamma = layer, weight.detach(), bias, gamma
        return output.view_as(output)

    @staticmethod
    def backward(ctx: Any, gradient: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        inputs, output = ctx.saved_tensors
        layer, weight, gamma = ctx.layer, ctx.weight, ctx.gamma
        bias = None if ctx.bias is None else layer.broadcast(ctx.bias.detach())
        magnitude = weight.abs()
        with torch.no_grad():
            product = output if bias is None else output - bias  # xW
            spread = layer.apply(inputs.abs(), magnitude)  # |x||W| = P − Q
            positive_total = output + gamma * (product + spread) / 2  # b + γb⁺ and x⁺W↑ + x⁻W↓
            negative_total = output + gamma * (product - spread) / 2
            if bias is not None:
                positive_total = positive_total + gamma * bias.clamp(min=0)
                negative_total = negative_total + gamma * bias.clamp(max=0)
            relevance = gradient * output
            share_positive = (output > 0) * relevance / stabilised(positive_total, GAMMA_STABILISER)
            share_negative = (output < 0) * relevance / stabilised(negative_total, GAMMA_STABILISER)
            plain = layer.transpose(share_positive + share_negative, weight, inputs.shape)  # S·W = U + V
            split = layer.transpose(share_positive - share_negative, magnitude, inputs.shape)  # D·|W| = U − V
            relevance_in = inputs * plain + gamma * (
                inputs.clamp(min=0) * (plain + split) / 2 + inputs.clamp(max=0) * (plain - split) / 2
            )
            return relevance_in / stabilised(inputs, INPUT_STABILISER), None, None, None, None, None


class RelevanceRules(ModelHooks):
    """Puts AttnLRP's rules into this thread's forwards of a timm ViT, for the context's lifetime.

    Every hook returns a tensor with the module's own output values, so the logits are the model's;
    only the backward changes. Holds the model's lock; every hook is removed on exit.

    Args:
        model: a timm `VisionTransformer` (or DeiT, or hybrid) whose blocks use timm's `Attention`
            and `Mlp`.
        conv_gamma: γ of the patch embedding's convolution.
        linear_gamma: γ of the MLP's and the head's linear layers.
        embedding: whether the patch embedding's convolution gets the Gamma rule (plain ViTs, whose
            relevance is read on the pixels) or the patch embedding's output becomes a leaf of the
            graph, kept in `tokens` (hybrids, read on the tokens; the CNN stem stays out of the graph).
    """

    def __init__(self, model: nn.Module, conv_gamma: float, linear_gamma: float, embedding: bool) -> None:
        super().__init__(model)
        self.conv_gamma = conv_gamma
        self.linear_gamma = linear_gamma
        self.embedding = embedding
        self.tokens: list[torch.Tensor] = []  # (B, tokens, dim) patch embeddings, when not `embedding`

    def _attach(self) -> None:
        model = self.model
        constants: set[nn.Module] = set()
        for block in model.blocks:
            constants.update((block.attn.q_norm, block.attn.k_norm))
        for module in model.modules():
            if isinstance(module, nn.LayerNorm) and module not in constants:
                self._hook(module, _layer_norm_rule)
        for block in model.blocks:
            self._hook(block.attn.q_norm, _constant)
            self._hook(block.attn.k_norm, _constant)
            self._hook(block.mlp.act, _identity_rule)
            self._gamma(block.mlp.fc1, self.linear_gamma)
            self._gamma(block.mlp.fc2, self.linear_gamma)
        for head in linear_heads(model):
            self._gamma(head, self.linear_gamma)
        self.tokens = []
        if self.embedding:
            self._gamma(model.patch_embed.proj, self.conv_gamma)
        else:
            self._hook(model.patch_embed, self._token_leaf)

    def _token_leaf(self, module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        leaf = output.detach().requires_grad_(True)
        self.tokens.append(leaf)
        return leaf

    def _gamma(self, module: nn.Module, gamma: float) -> None:
        layer = _LinearMap(module)

        def rule(hooked: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            return _GammaRule.apply(inputs[0], output, layer, hooked.weight, hooked.bias, gamma)

        self._hook(module, rule)


def _constant(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    """CP-LRP: queries and keys carry no relevance, so the attention weights act as constants."""
    return output.detach()


def _identity_rule(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    """An element-wise activation passes its relevance on unchanged: gradient out/in (lxt's identity rule)."""
    x = inputs[0]
    ratio = (output / (x + INPUT_STABILISER)).detach()
    return output.detach() + ratio * (x - x.detach())


def _layer_norm_rule(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    """LayerNorm with its standard deviation held constant: linear in the input, so LRP-0 through it."""
    x = inputs[0]
    centred = x - x.mean(dim=-1, keepdim=True)
    scale = (centred.pow(2).mean(dim=-1, keepdim=True) + module.eps).sqrt().detach()
    normalised = centred / scale
    if module.weight is not None:
        normalised = normalised * module.weight
    if module.bias is not None:
        normalised = normalised + module.bias
    return output.detach() + (normalised - normalised.detach())


class AttnLRP(AttentionKindMethod):
    """AttnLRP relevance of each patch for any chosen class, in one forward and one backward, batched.

    Plain ViTs (with registers or a distillation token) are explained down to the pixels, summed
    over each patch; hybrids down to the tokens their CNN stem hands the transformer.

    Options:
        conv_gamma: γ of the patch embedding's convolution (default 0.25, as in lxt's ViT example).
        linear_gamma: γ of the linear layers (default 0.05).
    """

    name: ClassVar[str] = "attnlrp"
    title: ClassVar[str] = "AttnLRP"

    @classmethod
    def unavailable_reason(cls, facts: ModelFacts) -> str | None:
        reason = super().unavailable_reason(facts)
        if reason is None and facts.block_problem is not None:
            return f"{cls.title} has no rules for {facts.name}: {facts.block_problem}."
        return reason

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        facts = self.facts
        assert facts.grid_size is not None, f"{facts.name} has no token grid"
        problem = plain_blocks_problem(self.model)
        if problem is not None:
            raise MethodUnavailableError(f"{self.title} has no rules for {facts.name}: {problem}.")
        conv_gamma = self._gamma("conv_gamma", 0.25)
        linear_gamma = self._gamma("linear_gamma", 0.05)
        on_pixels = facts.family == "vit"
        relevance, classes = input_relevance(
            self.model, pixels, class_indices, conv_gamma, linear_gamma, on_pixels
        )
        if on_pixels:
            maps = pool_to_grid(relevance, facts.grid_size, _cell(facts.stride_px), reduce="sum")
            where = "pixels, summed over each patch"
        else:
            maps = relevance.reshape(relevance.shape[0], *facts.grid_size)
            where = "the tokens the CNN stem hands the transformer"
        return maps, classes, f"relevance on {where} (γ conv {conv_gamma:g}, linear {linear_gamma:g})"

    def _gamma(self, option: str, default: float) -> float:
        value = self.options.get(option, default)
        try:
            gamma = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{option} must be a number, got {value!r}") from None
        if not math.isfinite(gamma) or gamma < 0:
            raise ValueError(f"{option} must be a finite number ≥ 0, got {value!r}")
        return gamma


def _cell(stride: tuple[int, int] | None) -> tuple[int, int]:
    assert stride is not None, "a ViT has a patch stride"
    return int(stride[0]), int(stride[1])


def input_relevance(
    model: nn.Module,
    pixels: torch.Tensor,
    class_indices: torch.Tensor | None,
    conv_gamma: float = 0.25,
    linear_gamma: float = 0.05,
    on_pixels: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each input element's AttnLRP relevance for each image's class.

    Args:
        model: a timm ViT that `vitviz.models.plain_blocks_problem` accepts.
        pixels: (B, 3, H, W) on the model's device.
        class_indices: (B,) classes, or None for each image's most probable class.
        on_pixels: relevance per pixel (summed over colour channels); else per token of the patch
            embedding's output (a hybrid's transformer part).

    Returns:
        (B, H, W) or (B, tokens) relevance, and the (B,) classes explained. Where biases and the
        position embedding are zero, each image's relevance sums to its class logit.
    """
    with torch.inference_mode(False), torch.enable_grad():
        start = pixels.detach().requires_grad_(on_pixels)
        # The backward reads the weights again (the Gamma rule): the lock keeps anyone from changing
        # them meanwhile; the rules themselves are thread-bound and gone after the forward.
        with model_lock(model):
            with RelevanceRules(model, conv_gamma, linear_gamma, embedding=on_pixels) as rules:
                logits = model(start)
            classes = ExplanationMethod.chosen_classes(logits, class_indices)
            score = ExplanationMethod.class_score(logits, classes)
            explained = start if on_pixels else rules.tokens[0]
            (gradient,) = torch.autograd.grad(score, explained)
    relevance = (explained.detach() * gradient).sum(dim=1 if on_pixels else -1)
    return relevance, classes
