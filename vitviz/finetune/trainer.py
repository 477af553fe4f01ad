"""Fine-tunes a copy of a timm model: a linear probe on cached features, the last k blocks, or all of it."""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vitviz.finetune.data import ImageSet, Split, limit_images, split_train_val
from vitviz.finetune.distributed import SINGLE_PROCESS, DistributedContext
from vitviz.finetune.logistic import choose_l2_strength, fit_head
from vitviz.models import LoadedModel, ModelError, ModelFacts, load_model
from vitviz.preprocess import image_view
from vitviz.progress import JobProgress

__all__ = [
    "DEFAULT_EPOCHS",
    "DEFAULT_LEARNING_RATES",
    "MODES",
    "EpochMetrics",
    "FinetuneConfig",
    "FinetuneResult",
    "Mode",
    "Progress",
    "ValPrediction",
    "block_names",
    "finetune",
    "image_features",
    "one_cpu_thread",
    "prepare_model",
    "trainable_module_names",
]

Mode = Literal["probe", "last-k", "full"]
MODES: tuple[Mode, ...] = ("probe", "last-k", "full")
# A probe trains one linear layer on standardised features, so it takes a large step; the deeper a
# fine-tune reaches into pretrained weights, the smaller the step that keeps them useful.
DEFAULT_LEARNING_RATES: dict[Mode, float] = {"probe": 1e-2, "last-k": 1e-4, "full": 3e-5}
# Probe epochs cost milliseconds once features are cached; backbone epochs cost whole passes.
DEFAULT_EPOCHS: dict[Mode, int] = {"probe": 10, "last-k": 3, "full": 2}

# Submodule names timm uses for its sequence of blocks (ViTs, EfficientNets) or stages (ConvNeXts).
_BLOCK_CONTAINERS = ("blocks", "stages", "layers")


@dataclass(frozen=True)
class FinetuneConfig:
    """What to fine-tune, how, and on which device."""

    model: str = "vit_small_patch14_dinov2"  # timm model name, or a run folder to fine-tune further
    weights: str = "bundled"  # where the starting weights come from: bundled, hub, random or a file
    mode: Mode = "probe"  # probe: frozen backbone, new head; last-k: last k blocks + head; full: all
    last_k: int = 2  # blocks (stages for CNNs) that train in last-k mode
    epochs: int | None = None  # passes over the training images; None: DEFAULT_EPOCHS[mode]
    batch_size: int = 32  # images (or cached feature vectors) per step and process
    lr: float | None = None  # AdamW learning rate; None: DEFAULT_LEARNING_RATES[mode]
    weight_decay: float = 0.05  # AdamW weight decay
    max_images: int | None = None  # keep at most this many images, the same share of every class
    seed: int = 0  # seeds the subset, the split, the new head and the batch order
    val_fraction: float = 0.2  # share of every class held out for validation
    device: str = "cpu"  # torch device

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("last_k", "epochs", "batch_size", "max_images"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1, got {value}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"the learning rate must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight decay must not be negative, got {self.weight_decay}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"the validation fraction must lie between 0 and 1, got {self.val_fraction}")

    def to_argv(self) -> list[str]:
        """The resolved config as `python -m vitviz finetune` flags: `--last-k 2` for `last_k`, and so on.

        Each field is one flag named after it; `from_arguments` reads them back by the same names.
        """
        argv: list[str] = []
        for field in dataclasses.fields(self):
            value = getattr(self.resolved(), field.name)
            if value is not None:
                argv += [
                    f"--{field.name.replace('_', '-')}",
                    repr(value) if isinstance(value, float) else str(value),
                ]
        return argv

    @classmethod
    def from_arguments(cls, arguments: object) -> FinetuneConfig:
        """The config from parsed `to_argv` flags (an argparse namespace); unset flags keep the defaults.

        Raises:
            ValueError: a value out of range.
        """
        values = {
            field.name: getattr(arguments, field.name)
            for field in dataclasses.fields(cls)
            if getattr(arguments, field.name, None) is not None
        }
        return cls(**values)

    def resolved(self) -> FinetuneConfig:
        """The config with the mode's default epochs and learning rate filled in."""
        return dataclasses.replace(
            self,
            epochs=self.epochs if self.epochs is not None else DEFAULT_EPOCHS[self.mode],
            lr=self.lr if self.lr is not None else DEFAULT_LEARNING_RATES[self.mode],
        )

    def hyperparameters(self) -> dict[str, object]:
        """The training settings as plain values, for config.json."""
        resolved = self.resolved()
        return {
            "mode": resolved.mode,
            "last_k": resolved.last_k,
            "epochs": resolved.epochs,
            "batch_size": resolved.batch_size,
            "lr": resolved.lr,
            "weight_decay": resolved.weight_decay,
            "max_images": resolved.max_images,
            "seed": resolved.seed,
            "val_fraction": resolved.val_fraction,
        }


@dataclass(frozen=True)
class EpochMetrics:
    """One finished epoch, as written to metrics.jsonl."""

    epoch: int  # from 1
    train_loss: float  # mean cross-entropy over the epoch's training batches
    val_loss: float  # mean cross-entropy on the validation images after the epoch
    val_acc: float  # share of validation images classified right
    seconds: float  # wall time of the epoch, validation included

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Progress:
    """Where a run stands, reported after every step."""

    phase: Literal["features", "train"]  # computing the probe's features, or training
    fraction: float  # of the whole run, 0..1
    eta_s: float | None  # seconds left, estimated from the speed so far
    epoch: int  # epochs finished
    epochs: int
    message: str
    metrics: EpochMetrics | None = None  # set when an epoch has just finished
    # Set with metrics: the model's state dict as it would be saved now (computed when called),
    # so that whoever records progress can checkpoint every finished epoch.
    model_state: Callable[[], dict[str, torch.Tensor]] | None = None


@dataclass(frozen=True)
class ValPrediction:
    """The fine-tuned model's answer for one validation image."""

    key: str  # the image's key in its ImageSet
    label: int  # the true class
    predicted: int
    probability: float  # softmax probability of the predicted class


@dataclass(frozen=True)
class FinetuneResult:
    """A fine-tuned model (eval mode, frozen) and everything a run folder records about it."""

    model: nn.Module | None  # None when stopped before a single step trained
    facts: ModelFacts  # of the starting model (the fine-tuned one differs in its class count)
    labels: tuple[str, ...]
    config: FinetuneConfig  # resolved
    metrics: list[EpochMetrics]
    split: Split
    image_set: ImageSet  # after max_images
    val_predictions: list[ValPrediction]
    stopped: bool
    base_trained: bool  # False when the starting weights were random


ProgressCallback = Callable[[Progress], None]


# --------------------------------------------------------------------------------------------
# Which parts train
# --------------------------------------------------------------------------------------------


def block_names(model: nn.Module) -> list[str]:
    """Names of the model's blocks (ViTs, EfficientNets) or stages (ConvNeXts, ResNets), in order.

    Raises:
        ModelError: the model has no recognisable sequence of blocks.
    """
    children = dict(model.named_children())
    for container in _BLOCK_CONTAINERS:
        child = children.get(container)
        if isinstance(child, nn.Sequential | nn.ModuleList) and len(child) > 0:
            return [f"{container}.{name}" for name, _ in child.named_children()]
    layers = [name for name in children if name.startswith("layer") and name[5:].isdigit()]
    if layers:
        return sorted(layers, key=lambda name: int(name[5:]))
    raise ModelError(
        f"{type(model).__name__} has no sequence of blocks or stages, so last-k does not apply; use probe or full."
    )


def _classifier_name(model: nn.Module) -> str:
    classifier = model.get_classifier()
    for name, module in model.named_modules():
        if module is classifier:
            return name
    raise ModelError(f"{type(model).__name__} has no classifier module to train.")


def trainable_module_names(model: nn.Module, mode: Mode, last_k: int) -> list[str]:
    """The submodules that train: the head (probe), the last k blocks and all after them, or all ("").

    Raises:
        ModelError: last-k on a model without blocks, or k larger than the number of blocks.
    """
    if mode == "full":
        return [""]
    if mode == "probe":
        return [_classifier_name(model)]
    blocks = block_names(model)
    if last_k > len(blocks):
        raise ModelError(f"last-k: k = {last_k} but {type(model).__name__} has only {len(blocks)} blocks.")
    # Top-level modules registered after the blocks (final norm, pooling, head) follow them in
    # the forward pass of every timm family, so they train too.
    top_level = [name for name, _ in model.named_children()]
    last_block_parent = blocks[-1].split(".")[0]
    after = top_level[top_level.index(last_block_parent) + 1 :]
    return [*blocks[-last_k:], *after]


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(prefix == "" or name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def prepare_model(
    base_model: nn.Module, num_classes: int, mode: Mode, last_k: int
) -> tuple[nn.Module, list[str]]:
    """A deep copy of `base_model` with a new head for `num_classes`; only the trainable parts require grad.

    The shared model is never touched: pages and caches may hold it.

    Returns:
        (the copy, in train mode only where it trains; names of its trainable submodules).
    """
    model = copy.deepcopy(base_model)
    model.reset_classifier(num_classes)
    trainable = trainable_module_names(model, mode, last_k)
    model.requires_grad_(False)
    model.eval()  # frozen BatchNorms keep their statistics, frozen dropouts stay off
    for name, module in model.named_modules():
        if _under(name, trainable):
            module.requires_grad_(True)
            module.train()
    return model, trainable


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


class _ImageTensors(Dataset):
    """Images of a set, decoded and put through the model's own eval transform on demand."""

    def __init__(self, image_set: ImageSet, indices: Sequence[int], facts: ModelFacts) -> None:
        self.items = [image_set.items[index] for index in indices]
        self.facts = facts

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        item = self.items[position]
        return image_view(item.load(), self.facts).tensor[0], item.label  # (3, H, W)


class _Clock:
    """Progress in work units (images through the backbone), and the time left at the recent pace.

    The pace is `vitviz.progress.JobProgress`'s: measured over the recent part of the run, so a
    first epoch slowed by warm-up, or a machine that got busier, does not skew the estimate for long.
    """

    def __init__(self, total_units: float) -> None:
        self.total = max(total_units, 1e-9)
        self.done = 0.0
        self._progress = JobProgress("images")

    def advance(self, units: float) -> None:
        self.done = min(self.total, self.done + units)
        self._progress(self.done, self.total)

    @property
    def fraction(self) -> float:
        return self.done / self.total

    @property
    def eta_s(self) -> float | None:
        return self._progress.eta_s()


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _pre_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, D) features right before the classifier, pooled the model's own way."""
    return model.forward_head(model.forward_features(images), pre_logits=True)


@torch.inference_mode()
def _extract_features(
    model: nn.Module,
    dataset: _ImageTensors,
    steps: int,
    batch_size: int,
    device: torch.device,
    advance: Callable[[int], None],
    should_stop: Callable[[], bool],
) -> torch.Tensor | None:
    """(n, D) pre-logit features of every image, or None when stopped.

    Every rank takes exactly `steps` steps (the last ones may be empty), because each step asks
    all ranks whether to stop.
    """
    features = [torch.empty((0, model.num_features), device=device)]
    for step in range(steps):
        if should_stop():
            return None
        batch = [
            dataset[position]
            for position in range(step * batch_size, min(len(dataset), (step + 1) * batch_size))
        ]
        if batch:
            images = torch.stack([image for image, _ in batch]).to(device)  # (B, 3, H, W)
            features.append(_pre_logits(model, images).float())
            advance(len(batch))
    return torch.cat(features)


def image_features(
    model: nn.Module,
    facts: ModelFacts,
    image_set: ImageSet,
    indices: Sequence[int],
    *,
    batch_size: int = 32,
    on_count: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor | None:
    """(len(indices), D) pre-logit features of those images, as a probe computes them; None when stopped.

    Args:
        on_count: called with the number of images of each batch once it is done.
        should_stop: asked before every batch.
    """
    device = next(model.parameters()).device
    dataset = _ImageTensors(image_set, indices, facts)
    steps = math.ceil(len(dataset) / batch_size)
    return _extract_features(
        model,
        dataset,
        steps,
        batch_size,
        device,
        on_count or (lambda count: None),
        should_stop or (lambda: False),
    )


@contextmanager
def one_cpu_thread() -> Iterator[None]:
    """Runs the block with one intra-op CPU thread, then restores the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's state dict (training goes on changing the model)."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


def _state_with_folded_head(
    model: nn.Module, head: nn.Linear, mean: torch.Tensor, std: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The probe's model as it will be saved: its head trained on standardised features, with the
    standardisation folded in (as _fold_standardisation does at the end), the live head untouched."""
    state = _state_copy(model)
    folded = copy.deepcopy(head)
    _fold_standardisation(folded, mean, std)
    prefix = next(name for name, module in model.named_modules() if module is head)
    state[f"{prefix}.weight"] = folded.weight.detach().to("cpu", copy=True)
    state[f"{prefix}.bias"] = folded.bias.detach().to("cpu", copy=True)
    return state


def _fold_standardisation(head: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Makes head(x) equal what it computed on (x - mean) / std, so the saved model takes raw features."""
    with torch.no_grad():
        head.weight.div_(std)
        head.bias.sub_(head.weight @ mean)


def finetune(
    config: FinetuneConfig,
    image_set: ImageSet,
    *,
    base: LoadedModel | None = None,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    context: DistributedContext = SINGLE_PROCESS,
) -> FinetuneResult:
    """Fine-tunes a copy of the model on `image_set` and reports progress after every step.

    probe: the backbone stays frozen and runs once over every image; a new linear head then trains
    on the cached, standardised features (the standardisation is folded into the head at the end).
    last-k / full: the last k blocks and everything after them / every parameter train, with the
    images run through the model every epoch.

    Args:
        config: what and how to train.
        image_set: labelled images; max_images and the train/val split are applied here.
        base: the starting model, when already loaded (it is copied, never changed); else it is
            loaded from config.model / config.weights.
        on_progress: called on the main process after every step and epoch.
        stop: when set, training ends after the current step; the model trained so far is returned.
        context: the processes of a torchrun run; every rank must call this with the same arguments.

    Raises:
        DataError: too few images, or an image that cannot be read.
        ModelError: the model cannot do the requested mode.
    """
    config = config.resolved()
    assert config.epochs is not None and config.lr is not None
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    image_set = limit_images(image_set, config.max_images, config.seed)
    split = split_train_val(image_set.labels, config.val_fraction, config.seed)
    if base is None:
        base = load_model(config.model, config.weights, device)
    model, _ = prepare_model(base.model, len(image_set.classes), config.mode, config.last_k)
    model.to(device)

    def should_stop() -> bool:
        return context.any(stop is not None and stop.is_set(), device)

    def report(progress: Progress) -> None:
        if on_progress is not None and context.is_main:
            on_progress(progress)

    trainer = _probe if config.mode == "probe" else _backbone
    metrics, predictions, stopped, trained_any = trainer(
        _TrainingJob(model, base.facts, image_set, split, config, device, context, should_stop, report)
    )
    model.eval().requires_grad_(False)
    return FinetuneResult(
        model=model if trained_any else None,
        facts=base.facts,
        labels=image_set.classes,
        config=config,
        metrics=metrics,
        split=split,
        image_set=image_set,
        val_predictions=predictions,
        stopped=stopped,
        base_trained=base.trained,
    )


_TrainOutcome = tuple[list[EpochMetrics], list[ValPrediction], bool, bool]


@dataclass(frozen=True)
class _TrainingJob:
    """What either way of training (probe, or images through the backbone) works from."""

    model: nn.Module
    facts: ModelFacts
    image_set: ImageSet
    split: Split
    config: FinetuneConfig
    device: torch.device
    context: DistributedContext
    should_stop: Callable[[], bool]
    report: ProgressCallback


def _epoch_loader(
    dataset: Dataset, config: FinetuneConfig, context: DistributedContext, epoch: int
) -> DataLoader:
    """This process's shuffled share of the training set for one epoch (all of it without torchrun)."""
    sampler = DistributedSampler(
        dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=config.seed
    )
    sampler.set_epoch(epoch)
    return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, num_workers=0)


def _reduced_mean(total: float, count: int, context: DistributedContext, device: torch.device) -> float:
    values = context.all_reduce_sum(torch.tensor([total, float(count)], device=device, dtype=torch.float64))
    return float(values[0] / values[1]) if values[1] > 0 else math.nan


def _val_outcome(
    logits: torch.Tensor,
    labels: torch.Tensor,
    keys: list[str],
    context: DistributedContext,
    device: torch.device,
) -> tuple[float, float, list[ValPrediction]]:
    """Validation loss and accuracy over every process, and this process's predictions."""
    loss_sum = float(F.cross_entropy(logits, labels, reduction="sum")) if len(labels) else 0.0
    probabilities = logits.float().softmax(dim=-1)
    confidence, predicted = probabilities.max(dim=-1)
    correct = float((predicted == labels).sum()) if len(labels) else 0.0
    totals = context.all_reduce_sum(
        torch.tensor([loss_sum, correct, float(len(labels))], device=device, dtype=torch.float64)
    )
    predictions = [
        ValPrediction(key, int(label), int(guess), float(p))
        for key, label, guess, p in zip(
            keys, labels.tolist(), predicted.tolist(), confidence.tolist(), strict=True
        )
    ]
    return float(totals[0] / totals[2]), float(totals[1] / totals[2]), predictions


def _all_predictions(local: list[ValPrediction], context: DistributedContext) -> list[ValPrediction]:
    gathered = [prediction for part in context.gather_objects(local) for prediction in part]
    return sorted(gathered, key=lambda prediction: prediction.key)


def _epoch_end(
    clock: _Clock,
    row: EpochMetrics,
    epochs: int,
    state: Callable[[], dict[str, torch.Tensor]],
    note: str = "",
) -> Progress:
    """The progress report at the end of an epoch: its metrics, and how to copy the weights it reached."""
    message = f"epoch {row.epoch}/{epochs}{note}"
    return Progress("train", clock.fraction, clock.eta_s, row.epoch, epochs, message, row, state)


def _probe(job: _TrainingJob) -> _TrainOutcome:
    """Features once through the frozen backbone (each rank its share), then the head on them."""
    model, facts, image_set, split, config = job.model, job.facts, job.image_set, job.split, job.config
    device, context, should_stop, report = job.device, job.context, job.should_stop, job.report
    used = [*split.train, *split.val]
    # Most of the time goes into features; choosing the L2 strength and the final fit get a token share.
    clock = _Clock(len(used) + len(split.train) * 0.01 + len(used) * 0.01)
    epochs = config.epochs or 1

    def advance(count: int) -> None:
        clock.advance(count * context.world_size)
        report(
            Progress(
                "features", clock.fraction, clock.eta_s, 0, epochs, f"features {clock.done:.0f}/{len(used)}"
            )
        )

    mine = context.shard(list(range(len(used))))
    steps = math.ceil(math.ceil(len(used) / context.world_size) / config.batch_size)
    dataset = _ImageTensors(image_set, [used[i] for i in mine], facts)
    local = _extract_features(model, dataset, steps, config.batch_size, device, advance, should_stop)
    if local is None:
        return [], [], True, False
    features = context.all_gather_rows(local, mine, len(used))  # (n, D), same on every rank
    labels = torch.tensor([image_set.items[index].label for index in used], device=device)
    train_count = len(split.train)
    train_features, val_features = features[:train_count], features[train_count:]
    val_labels = labels[train_count:]
    val_keys = [image_set.items[index].key for index in split.val]

    head = model.get_classifier()
    linear = isinstance(head, nn.Linear)
    mean = train_features.mean(dim=0) if linear else torch.zeros(features.shape[1], device=device)
    # Centred, and scaled by one number (the root mean variance) so that one grid of L2 strengths fits
    # every model. Not per feature: that lifts near-constant channels to the scale of informative ones
    # (measured on 400 digits, EfficientNet-Lite0: 0.85 validation accuracy at every strength of the
    # grid, against 0.89-0.91 with one scale, as scikit-learn reaches on the raw features).
    scale = train_features.var(dim=0).mean().sqrt().clamp_min(1e-6) if linear and train_count > 1 else None
    std = torch.full_like(mean, float(scale)) if scale is not None else torch.ones_like(mean)
    train_labels = labels[:train_count]
    standard_train, standard_val = (train_features - mean) / std, (val_features - mean) / std
    # A linear head's optimum lies in the span of the training rows (every gradient does), so when
    # there are fewer rows than features it is fitted in the rows' own coordinates: the same model,
    # in n dimensions rather than D.
    with one_cpu_thread():
        basis = _row_space(standard_train) if linear else None
    solved = nn.Linear(basis.shape[1], head.out_features, device=device) if basis is not None else head
    fit_train = standard_train @ basis if basis is not None else standard_train
    fit_val = standard_val @ basis if basis is not None else standard_val

    def place(into: nn.Linear) -> None:
        """Copies the solution (in row-space coordinates) into a real head on standardised features."""
        if basis is not None:
            with torch.no_grad():
                into.weight.copy_(solved.weight @ basis.T)
                into.bias.copy_(solved.bias)

    def saved_state() -> dict[str, torch.Tensor]:
        if not linear:
            return _state_copy(model)
        place(head)
        return _state_with_folded_head(model, head, mean, std)

    # Everything the solver does is small dense algebra; on a busy CPU a second thread mostly waits
    # for the first (measured: 250 ms per AdamW epoch with 2 threads, 3 ms with 1).
    metrics: list[EpochMetrics] = []
    predictions: list[ValPrediction] = []
    with one_cpu_thread():
        chosen, stopped = _choose_probe_strength(job, solved, fit_train, train_labels, clock, epochs)
        trained_any = False
        if not stopped:
            for parameter in solved.parameters():
                parameter.detach().zero_()
            solved.requires_grad_(True)
            started = time.monotonic()

            def after_round(round_number: int) -> bool:
                nonlocal started, predictions
                with torch.no_grad():
                    train_loss = float(F.cross_entropy(solved(fit_train), train_labels))
                    val_loss, val_acc, predictions = _val_outcome(
                        solved(fit_val), val_labels, val_keys, SINGLE_PROCESS, device
                    )
                clock.advance(len(used) * 0.01 / epochs)
                row = EpochMetrics(round_number, train_loss, val_loss, val_acc, time.monotonic() - started)
                metrics.append(row)
                report(_epoch_end(clock, row, epochs, saved_state, f" of L-BFGS at L2 strength {chosen:g}"))
                started = time.monotonic()
                return should_stop()

            fit_head(solved, fit_train, train_labels, chosen, rounds=epochs, after_round=after_round)
            solved.requires_grad_(False)
            trained_any = True
            stopped = len(metrics) < epochs
    place(head)
    if linear:
        _fold_standardisation(head, mean, std)
    # Every rank solved the same problem on all features, so its predictions are already complete.
    return metrics, sorted(predictions, key=lambda p: p.key), stopped, trained_any


def _row_space(rows: torch.Tensor) -> torch.Tensor | None:
    """(D, r) orthonormal basis of the span of (n, D) rows, or None when D ≤ n (nothing to gain).

    From the eigendecomposition of the n×n Gram matrix rather than an SVD of the rows (measured for
    320×1280: 0.06 s against 0.33 s); directions with no variance to speak of (eigenvalues below 1e-10
    of the largest) are left out.
    """
    count, width = rows.shape
    if width <= count:
        return None
    values, vectors = torch.linalg.eigh((rows @ rows.T).double())  # (n,), (n, n)
    keep = values > values.max() * 1e-10
    return (rows.double().T @ (vectors[:, keep] / values[keep].sqrt())).to(rows.dtype)  # (D, r)


def _choose_probe_strength(
    job: _TrainingJob,
    head: nn.Module,
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    clock: _Clock,
    epochs: int,
) -> tuple[float, bool]:
    """The L2 strength that cross-validation inside the training split prefers (the validation
    images are never seen), and whether a stop was asked for meanwhile."""
    stopped = False

    def after_fit(done: int, total: int) -> bool:
        nonlocal stopped
        clock.advance(len(job.split.train) * 0.01 / total)
        job.report(
            Progress(
                "train",
                clock.fraction,
                clock.eta_s,
                0,
                epochs,
                f"choosing the L2 strength: fit {done}/{total}",
            )
        )
        stopped = job.should_stop()
        return stopped

    scores = choose_l2_strength(head, train_features, train_labels, seed=job.config.seed, after_fit=after_fit)
    if stopped:
        return math.nan, True
    # Too few training images to hold any out: scikit-learn's default strength (C = 1), λ = 1/n.
    return (scores.chosen() if scores is not None else 1.0 / max(1, len(train_labels))), False


def _backbone(job: _TrainingJob) -> _TrainOutcome:
    """last-k and full: images through the whole model every step; DDP averages the gradients."""
    model, facts, image_set, split, config = job.model, job.facts, job.image_set, job.split, job.config
    device, context, should_stop, report = job.device, job.context, job.should_stop, job.report
    epochs = config.epochs or 1
    train_set = _ImageTensors(image_set, split.train, facts)
    val_indices = context.shard(list(split.val))
    val_set = _ImageTensors(image_set, val_indices, facts)
    val_keys = [image_set.items[index].key for index in val_indices]
    # A training image costs about three forward passes (forward and backward), a validation one.
    clock = _Clock(epochs * (3 * len(split.train) + len(split.val)))
    training_modes = {name: module.training for name, module in model.named_modules()}
    step_model = context.wrap(model, device)
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimiser = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)

    def restore_training_modes() -> None:
        for name, module in model.named_modules():
            module.train(training_modes[name])

    def evaluate(advance: bool) -> tuple[float, float, list[ValPrediction]]:
        model.eval()
        logits, labels = [], []
        with torch.no_grad():
            for images, targets in DataLoader(val_set, batch_size=config.batch_size, num_workers=0):
                logits.append(model(images.to(device)).float())
                labels.append(targets.to(device))
                if advance:
                    clock.advance(len(targets) * context.world_size)
        restore_training_modes()
        classes = len(image_set.classes)
        stacked = torch.cat(logits) if logits else torch.empty((0, classes), device=device)
        targets = torch.cat(labels) if labels else torch.empty((0,), dtype=torch.long, device=device)
        return _val_outcome(stacked, targets, val_keys, context, device)

    metrics: list[EpochMetrics] = []
    predictions: list[ValPrediction] = []
    stopped = False
    trained_any = False
    for epoch in range(epochs):
        started = time.monotonic()
        total, count = 0.0, 0
        for step, (images, targets) in enumerate(_epoch_loader(train_set, config, context, epoch)):
            if should_stop():
                stopped = True
                break
            loss = F.cross_entropy(step_model(images.to(device)), targets.to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            trained_any = True
            total, count = total + loss.item() * len(targets), count + len(targets)
            clock.advance(3 * len(targets) * context.world_size)
            report(
                Progress(
                    "train",
                    clock.fraction,
                    clock.eta_s,
                    epoch,
                    epochs,
                    f"epoch {epoch + 1}/{epochs}, step {step + 1}",
                )
            )
        if stopped:
            break
        val_loss, val_acc, predictions = evaluate(advance=True)
        train_loss = _reduced_mean(total, count, context, device)
        row = EpochMetrics(epoch + 1, train_loss, val_loss, val_acc, time.monotonic() - started)
        metrics.append(row)
        report(_epoch_end(clock, row, epochs, lambda: _state_copy(model)))
    if trained_any and (stopped or not metrics):
        _, _, predictions = evaluate(advance=False)  # the model moved since the last evaluation
    return metrics, _all_predictions(predictions, context), stopped, trained_any
