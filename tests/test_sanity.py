"""Sanity checks: cascading randomisation on a copy, rank correlations, constant maps and the faithfulness flag."""

import argparse
import json
import math
from typing import ClassVar

import numpy as np
import pytest
import timm
import torch

import vitviz.methods.sanity as sanity_module
from tests.support.interventions import noise_picture, run_command, saved_picture
from tests.support.methods_helpers import count_maps, frozen_loaded, hook_counts
from vitviz.capture import model_lock
from vitviz.cli import interventions
from vitviz.methods import METHODS
from vitviz.methods.base import ExplanationMethod, feature_grid, pool_to_grid
from vitviz.methods.sanity import (
    ORIGINAL_STAGE,
    UNFAITHFUL_RANK_CORRELATION,
    cascading_randomisation,
    randomisation_stages,
    rank_correlation,
)
from vitviz.models import load_model
from vitviz.preprocess import image_view

# --- Rank correlation -------------------------------------------------------------------------


def test_rank_correlation_is_spearmans_rho_and_none_for_a_constant_map():
    ramp = np.arange(12.0).reshape(3, 4)
    assert rank_correlation(ramp, ramp**3) == pytest.approx(1.0)  # same order, other values
    assert rank_correlation(ramp, -ramp) == pytest.approx(-1.0)
    # Ranks (1, 2, 3, 4) against (2, 1, 4, 3): ρ = 1 − 6·Σd² / (n(n² − 1)) = 1 − 6·4/60 = 0.6
    assert rank_correlation(np.array([1.0, 2, 3, 4]), np.array([20.0, 10, 40, 30])) == pytest.approx(0.6)
    assert rank_correlation(ramp, np.zeros((3, 4))) is None
    assert rank_correlation(np.full((3, 4), 2.0), ramp) is None
    with pytest.raises(ValueError, match="cannot be compared"):
        rank_correlation(ramp, np.zeros(5))


# --- Stages -----------------------------------------------------------------------------------


def test_vit_stages_go_from_the_head_down_to_the_embedding_and_cover_every_weight(tiny_models):
    model = tiny_models["registers"]
    stages = randomisation_stages(model)
    names = [name for name, _ in stages]
    assert names == ["head", "blocks.1", "blocks.0", "embedding"]
    members = dict(stages)
    assert "norm.weight" in members["head"] and "head.weight" not in members["head"]  # no head: DINOv2 style
    assert {"cls_token", "reg_token", "pos_embed", "patch_embed.proj.weight"} <= set(members["embedding"])
    assert all(name.startswith("blocks.1.") for name in members["blocks.1"])
    every = [name for _, group in stages for name in group]
    assert sorted(every) == sorted(name for name, _ in model.named_parameters())


def test_cnn_stages_flatten_nested_blocks_and_keep_the_last_conv_with_the_head():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    stages = dict(randomisation_stages(model))
    names = list(stages)
    assert names[0] == "head" and names[1] == "blocks.6.0" and names[-1] == "stem"
    assert names.index("blocks.5.3") < names.index("blocks.5.0") < names.index("blocks.4.2")
    assert {"classifier.weight", "conv_head.weight", "bn2.weight"} <= set(stages["head"])
    assert "conv_stem.weight" in stages["stem"]


# --- Cascading randomisation --------------------------------------------------------------------


class InputBrightness(ExplanationMethod):
    """A map that ignores the weights: each cell's mean input. Adebayo et al.'s edge detector, in spirit."""

    name: ClassVar[str] = "input-brightness"
    title: ClassVar[str] = "Input brightness"
    class_specific: ClassVar[bool] = False

    def attribute(self, pixels, class_indices):
        grid_size, cell = feature_grid(self.loaded, tuple(pixels.shape[-2:]))
        return pool_to_grid(pixels.mean(dim=1), grid_size, cell, reduce="mean"), None, "pixels"


class ConstantOnceTheHeadIsRandom(ExplanationMethod):
    """The trained head's weights give a ramp; any other head gives a constant map."""

    name: ClassVar[str] = "head-ramp"
    title: ClassVar[str] = "Head ramp"
    class_specific: ClassVar[bool] = False
    trained_head: ClassVar[torch.Tensor]

    def attribute(self, pixels, class_indices):
        rows, cols = self.facts.grid_size
        ramp = torch.arange(rows * cols, dtype=torch.float32).reshape(1, rows, cols)
        same_head = torch.equal(self.model.head.weight, self.trained_head)
        return (ramp if same_head else torch.ones_like(ramp)).expand(pixels.shape[0], -1, -1), None, "head"


@pytest.fixture
def extra_methods(monkeypatch):
    for method in (InputBrightness, ConstantOnceTheHeadIsRandom):
        monkeypatch.setitem(METHODS, method.name, method)


def test_the_shared_model_is_never_changed_and_the_copy_is_randomised_stage_by_stage(tiny_models):
    loaded = frozen_loaded(tiny_models["vit"], "vit")
    before = {name: tensor.clone() for name, tensor in loaded.model.state_dict().items()}
    calls = []
    result = cascading_randomisation(
        loaded,
        image_view(noise_picture(), loaded.facts),
        "gradcam",
        progress=lambda done, total: calls.append((done, total)),
    )
    assert all(torch.equal(before[name], tensor) for name, tensor in loaded.model.state_dict().items())
    assert hook_counts(loaded.model) == (0, 0, 0, 0)
    assert model_lock(loaded.model).acquire(blocking=False)
    model_lock(loaded.model).release()
    assert result.stages == (ORIGINAL_STAGE, "head", "blocks.1", "blocks.0", "embedding")
    assert result.maps.shape == (5, *loaded.facts.grid_size)
    assert result.rank_correlation[0] == 1.0 and len(result.rank_correlation) == 5
    assert calls == [(index, 5) for index in range(1, 6)]
    assert result.checkpoint == 1 + math.ceil(2 / 2)  # the head and half of two blocks
    assert result.target_index is not None


def test_a_map_that_ignores_the_weights_is_flagged_as_not_faithful(tiny_models, extra_methods):
    loaded = frozen_loaded(tiny_models["vit_rectangular"], "vit")
    result = cascading_randomisation(loaded, image_view(noise_picture(), loaded.facts), "input-brightness")
    assert result.rank_correlation == (1.0,) * len(result.stages)
    assert result.flagged and UNFAITHFUL_RANK_CORRELATION < 1.0


def test_a_map_that_becomes_constant_is_reported_as_none_not_zero_or_nan(tiny_models, extra_methods):
    loaded = frozen_loaded(tiny_models["vit"], "vit")
    ConstantOnceTheHeadIsRandom.trained_head = loaded.model.head.weight.clone()
    result = cascading_randomisation(loaded, image_view(noise_picture(), loaded.facts), "head-ramp")
    assert result.rank_correlation == (1.0, None, None, None, None)
    assert not result.flagged  # a map destroyed by the randomisation did change


def test_randomisation_is_seeded(tiny_models):
    loaded = frozen_loaded(tiny_models["hybrid"], "hybrid")
    image = noise_picture()
    first = cascading_randomisation(loaded, image_view(image, loaded.facts), "rollout", seed=3)
    again = cascading_randomisation(loaded, image_view(image, loaded.facts), "rollout", seed=3)
    other = cascading_randomisation(loaded, image_view(image, loaded.facts), "rollout", seed=4)
    # Exact: the same seed through the same code in one process runs the same kernels on the same data.
    np.testing.assert_array_equal(first.maps, again.maps)
    assert not np.array_equal(first.maps[-1], other.maps[-1])


def test_a_check_handed_the_original_map_computes_only_the_stages_and_agrees_with_one_that_does(
    tiny_models, monkeypatch
):
    """The arena hands the map both scores read: the check then computes one map per randomised stage
    (not one more for the original) and reports the same correlations; a map of another shape is refused."""
    loaded = frozen_loaded(tiny_models["vit"])
    view = image_view(noise_picture(), loaded.facts)
    whole = cascading_randomisation(loaded, view, "gradcam", class_index=2, seed=1)
    calls = count_maps(monkeypatch, sanity_module)
    steps = []
    handed = cascading_randomisation(
        loaded,
        view,
        "gradcam",
        class_index=2,
        seed=1,
        original=whole.maps[0],
        progress=lambda d, t: steps.append(t),
    )
    assert len(calls) == len(whole.stages) - 1 and set(steps) == {len(whole.stages) - 1}
    assert handed.stages == whole.stages
    np.testing.assert_allclose(handed.maps, whole.maps, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(handed.rank_correlation, whole.rank_correlation, atol=1e-6)
    with pytest.raises(ValueError, match="original map given"):
        cascading_randomisation(loaded, view, "gradcam", class_index=2, original=np.zeros((3, 3)))


def test_unknown_methods_are_refused(tiny_models):
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        loaded = frozen_loaded(tiny_models["vit"])
        cascading_randomisation(loaded, image_view(noise_picture(), loaded.facts), "magic")


@pytest.mark.slow
def test_efficientnet_gradcam_passes_and_a_weight_blind_map_fails(extra_methods):
    from vitviz.images import builtin_photo

    efficientnet = load_model("tf_efficientnet_lite0", "bundled")
    cat = builtin_photo("cat (chelsea)")
    gradcam = cascading_randomisation(efficientnet, image_view(cat, efficientnet.facts), "gradcam")
    assert len(gradcam.stages) == 1 + 1 + 16 + 1  # original, head, 16 blocks, stem
    assert not gradcam.flagged, gradcam.rank_correlation
    assert cascading_randomisation(
        efficientnet, image_view(cat, efficientnet.facts), "input-brightness"
    ).flagged


def test_cli_sanity_prints_every_stage_with_its_rank_correlation(tmp_path):
    picture = saved_picture(noise_picture(), tmp_path)
    status, payload, stderr = run_command(
        "sanity", picture, "--model", "resnet18", "--weights", "random", "--method", "gradcam", "--json"
    )
    assert status == 0, stderr
    assert set(payload) == {"stages", "rank_correlation"}
    assert payload["stages"][:3] == ["original", "head", "layer4.1"] and payload["stages"][-1] == "stem"
    assert len(payload["rank_correlation"]) == len(payload["stages"])
    assert payload["rank_correlation"][0] == 1.0
    values = [value for value in payload["rank_correlation"] if value is not None]  # null: constant map
    assert all(-1.0 <= value <= 1.0 for value in values)


def test_sanity_json_writes_a_constant_map_as_null(tiny_models, extra_methods, monkeypatch, capsys):
    loaded = frozen_loaded(tiny_models["vit"], "vit")
    ConstantOnceTheHeadIsRandom.trained_head = loaded.model.head.weight.clone()
    monkeypatch.setattr(interventions, "load_from_args", lambda _args: loaded)
    args = argparse.Namespace(image=None, method="head-ramp", class_index=None, seed=0, json=True)
    monkeypatch.setattr("vitviz.images.load_image_file", lambda _path: noise_picture())
    interventions._run_sanity(args)
    printed = capsys.readouterr().out
    assert '"rank_correlation": [\n    1.0,\n    null,' in printed
    assert json.loads(printed)["rank_correlation"][1:] == [None] * 4
