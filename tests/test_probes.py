"""Robustness probes and faithfulness: exact perturbations, curves that start at the clean prediction."""

import numpy as np
import pytest
import torch

from tests.support.methods_helpers import frozen_loaded, hook_counts, parameters_untouched
from vitviz.images import builtin_photo
from vitviz.methods.faithfulness import faithfulness, faithfulness_rows
from vitviz.methods.probes import (
    DROP_ORDERS,
    ProbeGrid,
    area_under_curve,
    drop_mask,
    occlude_region,
    probe_grid,
    resample_to_grid,
    run_drop_orders,
    run_probe,
    salience_order,
    shuffle_patches,
)
from vitviz.predict import NoClassifierError, predict
from vitviz.preprocess import image_view

FAMILIES = ["vit", "deit_distilled", "registers", "hybrid", "vit_rectangular", "cnn"]
FEW = (0.0, 0.5, 1.0)


def classifier(tiny_models, key):
    return frozen_loaded(tiny_models[key], key, num_classes=10 if key == "registers" else None)


@pytest.fixture(scope="module")
def photo():
    return builtin_photo("coffee")


# --- Pure pieces ------------------------------------------------------------------------------


def test_area_under_curve_is_the_trapezoid():
    assert area_under_curve([0.0, 0.5, 1.0], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
    assert area_under_curve([0.0, 0.25, 1.0], [1.0, 1.0, 0.0]) == pytest.approx(0.25 + 0.375)


def test_salience_order_most_least_and_random():
    salience = np.array([[0.1, 0.9], [0.5, 0.3]])
    assert salience_order(salience, "drop-salient").tolist() == [1, 2, 3, 0]
    assert salience_order(salience, "drop-least-salient").tolist() == [0, 3, 2, 1]
    random = salience_order(None, "drop-random", seed=3, size=4)
    assert sorted(random.tolist()) == [0, 1, 2, 3]
    assert random.tolist() == salience_order(None, "drop-random", seed=3, size=4).tolist()


def test_drop_mask_covers_exactly_the_listed_patches():
    grid = ProbeGrid((2, 3), (2, 2))
    mask = drop_mask(np.array([1, 5]), grid, (5, 6))  # one pixel row past the last whole patch
    expected = np.zeros((5, 6), dtype=bool)
    expected[0:2, 2:4] = True  # patch 1: row 0, col 1
    expected[2:4, 4:6] = True  # patch 5: row 1, col 2
    np.testing.assert_array_equal(mask.numpy(), expected)


def test_shuffle_moves_every_chosen_patch_and_keeps_the_rest():
    grid = ProbeGrid((2, 2), (2, 3))
    pixels = torch.arange(3 * 4 * 6, dtype=torch.float32).reshape(3, 4, 6)
    shuffled = shuffle_patches(pixels, np.array([0, 3, 1]), grid)

    def tile(tensor, patch):
        row, col = divmod(patch, 2)
        return tensor[:, row * 2 : row * 2 + 2, col * 3 : col * 3 + 3]

    # Patch 0 takes patch 1's content, 3 takes 0's, 1 takes 3's; patch 2 stays.
    torch.testing.assert_close(tile(shuffled, 0), tile(pixels, 1))
    torch.testing.assert_close(tile(shuffled, 3), tile(pixels, 0))
    torch.testing.assert_close(tile(shuffled, 1), tile(pixels, 3))
    torch.testing.assert_close(tile(shuffled, 2), tile(pixels, 2))
    torch.testing.assert_close(shuffle_patches(pixels, np.array([2]), grid), pixels)


def test_occlusion_greys_the_asked_area_inside_the_image():
    pixels = torch.ones(3, 8, 8)
    centred = occlude_region(pixels, 0.25)
    assert int((centred[0] == 0).sum()) == 16
    assert bool((centred[:, 2:6, 2:6] == 0).all())
    corner = occlude_region(pixels, 0.25, centre=(0.0, 1.0))  # moved inside, still 16 pixels
    assert int((corner[0] == 0).sum()) == 16 and bool((corner[:, 0:4, 4:8] == 0).all())
    assert not occlude_region(pixels, 1.0).any()


def test_resample_keeps_a_map_on_the_probe_grid_and_averages_any_other():
    grid = ProbeGrid((4, 4), (8, 8))
    values = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_array_equal(resample_to_grid(values, (32, 32), grid), values)  # exact: kept as it is
    coarse = np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    fine = resample_to_grid(coarse, (32, 32), grid)
    assert fine.shape == (4, 4) and fine[0, 0] == fine.max() and fine[3, 3] == fine.min()
    np.testing.assert_allclose(
        resample_to_grid(np.full((2, 2), 0.3, np.float32), (32, 32), grid), 0.3, rtol=1e-6
    )


# --- Probes on tiny models of every family ----------------------------------------------------


@pytest.mark.parametrize("key", FAMILIES)
def test_probe_starts_at_the_clean_prediction_and_greys_everything_at_the_end(tiny_models, key, photo):
    loaded = classifier(tiny_models, key)
    top = predict(loaded, [image_view(photo, loaded.facts)], topk=1)[0][0]
    curve = run_probe(loaded, image_view(photo, loaded.facts), "drop-salient", FEW)
    assert curve.target_index == top.index
    assert curve.target_probability[0] == pytest.approx(top.probability, abs=1e-5)
    assert curve.method == ("gradcam" if key == "cnn" else "rollout")
    expected_grid = (14, 14) if key == "cnn" else loaded.facts.grid_size  # CNNs: 16-px patches
    assert curve.grid_size == expected_grid
    # Every patch greyed: the input is the mean colour, whatever the order.
    least = run_probe(loaded, image_view(photo, loaded.facts), "drop-least-salient", FEW)
    assert curve.target_probability[-1] == pytest.approx(least.target_probability[-1], abs=1e-6)
    assert hook_counts(loaded.model) == (0, 0, 0, 0) and parameters_untouched(loaded.model)


@pytest.mark.parametrize("key", ["vit", "deit_distilled", "registers", "hybrid", "vit_rectangular"])
def test_removing_tokens_runs_the_models_own_steps(tiny_models, key, photo):
    loaded = classifier(tiny_models, key)
    removed = run_probe(loaded, image_view(photo, loaded.facts), "drop-random", FEW, remove_tokens=True)
    greyed = run_probe(loaded, image_view(photo, loaded.facts), "drop-random", FEW)
    # Nothing removed: the hand-run forward equals the model's own forward.
    assert removed.target_probability[0] == pytest.approx(greyed.target_probability[0], abs=1e-5)
    assert removed.removed_tokens and np.isfinite(removed.target_probability).all()
    assert not np.allclose(removed.target_probability[1:], greyed.target_probability[1:])


@pytest.mark.parametrize("kind", ["shuffle", "occlude", "drop-random"])
def test_every_probe_kind_gives_one_probability_per_fraction(tiny_models, kind, photo):
    loaded = classifier(tiny_models, "vit_rectangular")
    curve = run_probe(loaded, image_view(photo, loaded.facts), kind, (0.0, 0.1, 0.4, 1.0), class_index=3)
    assert curve.target_index == 3 and curve.fractions.tolist() == [0.0, 0.1, 0.4, 1.0]
    assert curve.target_probability.shape == (4,) and (curve.target_probability >= 0).all()
    assert set(curve.to_json()) == {"target_index", "fractions", "target_probability"}


def test_probe_errors_are_clear(tiny_models, photo):
    cnn = classifier(tiny_models, "cnn")
    with pytest.raises(ValueError, match="unknown probe 'melt'"):
        run_probe(cnn, image_view(photo, cnn.facts), "melt")
    with pytest.raises(ValueError, match="no tokens to remove"):
        run_probe(cnn, image_view(photo, cnn.facts), "drop-random", remove_tokens=True)
    with pytest.raises(ValueError, match="rise from 0"):
        run_probe(cnn, image_view(photo, cnn.facts), "drop-random", (0.5, 1.0))
    with pytest.raises(NoClassifierError, match="no classifier head"):
        backbone = frozen_loaded(tiny_models["registers"])
        run_probe(backbone, image_view(photo, backbone.facts), "shuffle")


def test_probe_grid_of_each_family(tiny_models):
    assert probe_grid(classifier(tiny_models, "hybrid")) == ProbeGrid((3, 3), (32, 32))
    assert probe_grid(classifier(tiny_models, "vit_rectangular")) == ProbeGrid((3, 4), (16, 16))
    assert probe_grid(classifier(tiny_models, "cnn")) == ProbeGrid((14, 14), (16, 16))


def test_faithfulness_curves_meet_at_the_clean_and_the_grey_image(tiny_models, photo):
    loaded = classifier(tiny_models, "deit_distilled")
    results = faithfulness(
        loaded, image_view(photo, loaded.facts), ["chefer", "rollout"], fractions=(0.0, 0.25, 0.5, 1.0)
    )
    for result in results:
        assert result.deletion[0] == pytest.approx(result.insertion[-1], abs=1e-5)  # clean image
        assert result.deletion[-1] == pytest.approx(result.insertion[0], abs=1e-5)  # all grey
        assert result.deletion_auc == pytest.approx(area_under_curve(result.fractions, result.deletion))
    rows = faithfulness_rows(results)
    assert [row["method"] for row in rows] == ["Chefer et al. relevance", "Attention rollout"]
    assert rows[0]["model"] == "deit_distilled (untrained)"


# --- Real weights -----------------------------------------------------------------------------


def test_efficientnet_most_salient_first_falls_faster_than_least_salient_first(photo):
    """Measured on the coffee photo (espresso, 95%) with Grad-CAM and 11 points: areas 0.19 and
    0.74. On the cat photo, which the cat fills, the two curves are alike (0.33 and 0.32)."""
    from vitviz.models import load_model

    loaded = load_model("tf_efficientnet_lite0", "bundled")
    fractions = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    salient = run_probe(loaded, image_view(photo, loaded.facts), "drop-salient", fractions)
    least = run_probe(loaded, image_view(photo, loaded.facts), "drop-least-salient", fractions)
    top = predict(loaded, [image_view(photo, loaded.facts)], topk=1)[0][0]
    assert salient.target_index == top.index == 967
    assert salient.target_probability[0] == pytest.approx(top.probability, abs=1e-5)
    assert salient.method == "gradcam"
    assert salient.area < least.area - 0.3, (salient.area, least.area)
    assert salient.target_probability[2] < 0.5 * least.target_probability[2]

    (scores,) = faithfulness(loaded, image_view(photo, loaded.facts), ["gradcam"], fractions=fractions)
    # Deletion is the most-salient-first curve; insertion mirrors the least-salient-first one.
    np.testing.assert_allclose(scores.deletion, salient.target_probability, atol=1e-6)
    assert scores.deletion_auc < scores.insertion_auc
    for parameter in loaded.model.parameters():
        assert parameter.grad is None and not parameter.requires_grad


def test_drop_orders_share_one_map_and_the_random_order_is_run_probes_own(tiny_models, photo):
    loaded = classifier(tiny_models, "deit_distilled")
    curves = run_drop_orders(loaded, image_view(photo, loaded.facts), FEW, "rollout")
    assert [curve.kind for curve in curves] == list(DROP_ORDERS)
    alone = {
        kind: run_probe(loaded, image_view(photo, loaded.facts), kind, FEW, "rollout") for kind in DROP_ORDERS
    }
    for curve in curves:
        np.testing.assert_allclose(curve.target_probability, alone[curve.kind].target_probability, atol=1e-6)
    assert curves[2].method is None and curves[0].method == "rollout"


def test_faithfulness_carries_its_baselines_and_they_meet_at_the_ends(tiny_models, photo):
    loaded = classifier(tiny_models, "deit_distilled")
    fractions = (0.0, 0.25, 0.5, 1.0)
    chefer, rollout = faithfulness(
        loaded, image_view(photo, loaded.facts), ["chefer", "rollout"], fractions=fractions
    )
    np.testing.assert_allclose(chefer.random_deletion, rollout.random_deletion)  # one random order per model
    random = run_probe(loaded, image_view(photo, loaded.facts), "drop-random", fractions)
    np.testing.assert_allclose(chefer.random_deletion, random.target_probability, atol=1e-6)
    for result in (chefer, rollout):
        assert result.least_first_deletion[0] == pytest.approx(result.deletion[0])
        assert result.random_insertion[-1] == pytest.approx(result.deletion[0], abs=1e-5)
    row = faithfulness_rows([chefer])[0]
    assert row["random-order deletion AUC"] == round(chefer.random_deletion_auc, 4)


def test_probes_follow_the_view_they_are_given(tiny_models):
    loaded = classifier(tiny_models, "deit_distilled")
    wide = builtin_photo("astronaut").crop((0, 0, 512, 300))  # far from square: the two views differ
    for view in ("crop", "whole"):
        curve = run_probe(loaded, image_view(wide, loaded.facts, view), "occlude", FEW)
        top = predict(loaded, [image_view(wide, loaded.facts, view)], topk=1)[0][0]
        assert curve.target_index == top.index
        assert curve.target_probability[0] == pytest.approx(top.probability, abs=1e-5)
