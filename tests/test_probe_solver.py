"""The probe's head is the best regularised linear model of the frozen features: the L-BFGS solver
reaches scikit-learn's optimum, chooses its L2 strength without the validation images, and on real
features of the bundled models scores at least LogisticRegression's validation accuracy less a point."""

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from tests.support.probe_features import ProbeFeatures, probe_with_features
from vitviz.finetune.data import ImageSet, builtin_shapes, split_train_val
from vitviz.finetune.logistic import choose_l2_strength, cross_validation_folds, fit_head, penalised_loss
from vitviz.finetune.trainer import FinetuneConfig, finetune
from vitviz.models import LoadedModel, model_facts


@pytest.fixture(autouse=True)
def one_thread():
    """As the trainer runs the solver: on a busy 2-core CPU two threads on these small matrices wait
    for each other (measured here: 98 s with two threads for what takes 1.3 s with one)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def separable_enough(
    rows: int, width: int, classes: int, seed: int, noise: float = 4.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear classes with noise: features (rows, width) and labels (rows,)."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(rows, width, generator=generator)
    directions = torch.randn(width, classes, generator=generator)
    labels = (features @ directions + noise * torch.randn(rows, classes, generator=generator)).argmax(dim=1)
    return features, labels


def zero_head(width: int, classes: int) -> torch.nn.Linear:
    head = torch.nn.Linear(width, classes)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    return head


def test_the_solver_reaches_scikit_learns_optimum_at_the_same_strength():
    features, labels = separable_enough(240, 60, 4, seed=0)
    head = zero_head(60, 4)
    # scikit-learn minimises C·Σ CE + ½‖W‖², the same optimum as mean CE + λ/2·‖W‖² with λ = 1/(C·n).
    fit_head(head, features, labels, l2=1.0 / len(labels))
    oracle = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(features.numpy(), labels.numpy())
    ours = head(features).detach().numpy()
    theirs = oracle.decision_function(features.numpy())
    # Softmax logits are defined up to a constant per row: compare them centred.
    ours, theirs = ours - ours.mean(1, keepdims=True), theirs - theirs.mean(1, keepdims=True)
    np.testing.assert_allclose(ours, theirs, atol=2e-3 * np.abs(theirs).max())
    # And the objective it reached is not above the oracle's (float32 vs float64: 1e-5 relative).
    their_head = zero_head(60, 4)
    with torch.no_grad():
        their_head.weight.copy_(torch.from_numpy(oracle.coef_).float())
        their_head.bias.copy_(torch.from_numpy(oracle.intercept_).float())
    ours_loss = float(penalised_loss(head, features, labels, 1.0 / len(labels)).detach())
    theirs_loss = float(penalised_loss(their_head, features, labels, 1.0 / len(labels)).detach())
    assert ours_loss <= theirs_loss * (1 + 1e-5), (ours_loss, theirs_loss)


def test_cross_validation_deals_every_class_over_every_fold():
    labels = [0] * 9 + [1] * 6 + [2] * 3
    parts = cross_validation_folds(labels, 3, seed=1)
    assert sorted(p for part in parts for p in part) == list(range(18))
    assert [len(part) for part in parts] == [6, 6, 6]
    assert all(sorted(labels[p] for p in part) == [0, 0, 0, 1, 1, 2] for part in parts)
    assert cross_validation_folds(labels, 3, seed=1) == parts
    assert cross_validation_folds([0, 1], 3, seed=0) == [[0], [1]]  # empty folds are dropped


def test_cross_validation_scores_each_strength_on_rows_its_fit_never_saw():
    clean_features, clean_labels = separable_enough(150, 10, 3, seed=1, noise=0.3)
    clean = choose_l2_strength(zero_head(10, 3), clean_features, clean_labels, held_out=3)
    assert clean is not None and clean.count == 150  # every row held out once
    once = choose_l2_strength(zero_head(10, 3), clean_features, clean_labels)
    assert once is not None and once.count == 50  # by default a third of the rows, once
    assert clean.accuracy(clean.chosen()) > 0.85
    assert clean.chosen() == min(clean.strengths, key=lambda l2: clean.loss[l2])
    # Labels that are pure noise: 100 dimensions fit 100 training rows perfectly at the weakest
    # penalty, yet held out they are right only by chance (a third of the time, give or take).
    noise_features = torch.randn(150, 100, generator=torch.Generator().manual_seed(2))
    noise_labels = torch.arange(150) % 3
    noisy = choose_l2_strength(zero_head(100, 3), noise_features, noise_labels, held_out=3)
    assert noisy is not None
    assert all(noisy.accuracy(l2) < 0.5 for l2 in noisy.strengths), [
        noisy.accuracy(l2) for l2 in noisy.strengths
    ]
    weakest = zero_head(100, 3)
    fit_head(weakest, noise_features[:100], noise_labels[:100], min(noisy.strengths))
    assert float((weakest(noise_features[:100]).argmax(1) == noise_labels[:100]).float().mean()) == 1.0


def tiny_vit() -> LoadedModel:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2).eval()
    model.requires_grad_(False)
    return LoadedModel(model, model_facts("vit_tiny_patch16_224", model), "random", torch.device("cpu"), None)


def test_the_validation_images_never_choose_the_strength_nor_move_the_head():
    shapes = builtin_shapes(per_class=8)
    split = split_train_val(shapes.labels, 0.25, seed=0)
    # Other pictures (same keys and classes) in every validation slot: only the scores may change.
    redrawn = list(shapes.items)
    for index in split.val:
        redrawn[index] = dataclasses.replace(redrawn[index], shape_seed=(redrawn[index].shape_seed or 0) + 99)
    other = ImageSet(shapes.source, shapes.root, shapes.classes, tuple(redrawn), shapes.skipped)
    config = FinetuneConfig(mode="probe", epochs=3, val_fraction=0.25)
    results, messages = [], []
    for image_set in (shapes, other):
        seen: list[str] = []
        results.append(
            finetune(config, image_set, base=tiny_vit(), on_progress=lambda p, s=seen: s.append(p.message))
        )
        messages.append([m for m in seen if "L2 strength" in m][-1])
    assert messages[0] == messages[1], messages
    first, second = (result.model.get_classifier() for result in results)
    torch.testing.assert_close(first.weight, second.weight, rtol=1e-4, atol=1e-6)
    assert [row.train_loss for row in results[0].metrics] == pytest.approx(
        [row.train_loss for row in results[1].metrics], rel=1e-4
    )
    assert [row.epoch for row in results[0].metrics] == [1, 2, 3]


# --------------------------------------------------------------------------------------------
# Real features of the bundled models: the probe against LogisticRegression on the same rows
# --------------------------------------------------------------------------------------------


def logistic_regression_accuracy(run: ProbeFeatures) -> float:
    """LogisticRegression() as it is mostly called (C = 1, its 100-iteration default) on the raw rows."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        oracle = LogisticRegression().fit(run.train_features, run.train_labels)
    return float(oracle.score(run.val_features, run.val_labels))


# The real-feature runs: (model, data, images read), each small enough that its head takes seconds.
PROBE_RUNS: dict[str, tuple[str, str, int]] = {
    "efficientnet_digits": ("tf_efficientnet_lite0", "builtin:digits", 400),
    "efficientnet_shapes": ("tf_efficientnet_lite0", "builtin:shapes", 300),
    "dinov2_digits": ("vit_small_patch14_dinov2", "builtin:digits", 250),
    "dinov2_shapes": ("vit_small_patch14_dinov2", "builtin:shapes", 150),
}


@pytest.fixture(scope="module", params=list(PROBE_RUNS))
def probe_run(request: pytest.FixtureRequest) -> ProbeFeatures:
    """One of PROBE_RUNS, made once per module (a test may pick one with indirect parametrisation)."""
    model, data, max_images = PROBE_RUNS[request.param]
    return probe_with_features(model, data, max_images=max_images)


@pytest.mark.slow
def test_the_probe_scores_at_least_logistic_regression_less_a_point(probe_run: ProbeFeatures):
    oracle = logistic_regression_accuracy(probe_run)
    final = probe_run.result.metrics[-1].val_acc
    assert final >= oracle - 0.01, (final, oracle)  # the test id names the run
    assert math.isfinite(probe_run.result.metrics[-1].val_loss)
    # The head phase (choosing λ and the solve) took seconds, not the features' minutes.
    assert probe_run.head_seconds < 30, probe_run.head_seconds


@pytest.mark.slow
@pytest.mark.parametrize("probe_run", ["efficientnet_digits"], indirect=True)
def test_the_saved_probe_takes_raw_features_as_the_model_head_does(probe_run: ProbeFeatures):
    """The standardisation is folded into the real head: the returned model's logits on raw features
    give the validation predictions the run recorded."""
    run = probe_run
    head = run.result.model.get_classifier()
    with torch.no_grad():
        predicted = head(torch.from_numpy(run.val_features)).argmax(dim=1).tolist()
    keys = [run.result.image_set.items[i].key for i in run.result.split.val]
    by_key = dict(zip(keys, predicted, strict=True))
    assert all(by_key[p.key] == p.predicted for p in run.result.val_predictions)
    assert float(np.mean(np.array(predicted) == run.val_labels)) == pytest.approx(
        run.result.metrics[-1].val_acc
    )
