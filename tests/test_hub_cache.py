"""The hub weights path, tested without a network: a cache laid down as the hub leaves it, read offline."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from huggingface_hub import constants as hub_constants

from tests.support.floats import assert_same_up_to_float32_rounding
from tests.support.hub_cache import lay_down_hub_model
from vitviz.availability import check_weights
from vitviz.images import BUILTIN_PHOTOS, builtin_photo
from vitviz.models import load_model
from vitviz.preprocess import image_view
from vitviz.weights import WeightsError, bundled_weights_file

CAT = str(BUILTIN_PHOTOS["cat (chelsea)"])
EFFICIENTNET_HUB = "tf_efficientnet_lite0.in1k"  # the tag timm's hub weights of the bundled CNN carry


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """An HF_HOME holding only the bundled EfficientNet, as timm/tf_efficientnet_lite0.in1k, offline."""
    home = tmp_path / "hf"
    lay_down_hub_model(
        home / "hub",
        f"timm/{EFFICIENTNET_HUB}",
        {"model.safetensors": bundled_weights_file("tf_efficientnet_lite0")},
    )
    monkeypatch.setenv("HF_HOME", str(home))  # for subprocesses
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub read HF_HOME when it was imported; point this process's reads at the new one.
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(home / "hub"))
    return home


def test_hub_weights_load_from_the_local_cache_offline(hf_home):
    from_hub = load_model(EFFICIENTNET_HUB, "hub")
    bundled = load_model("tf_efficientnet_lite0", "bundled")
    assert from_hub.weights == "hub" and from_hub.facts.num_classes == 1000
    image = image_view(builtin_photo("cat (chelsea)"), bundled.facts).tensor
    bundled_state = bundled.model.state_dict()
    assert all(
        torch.equal(tensor, bundled_state[name]) for name, tensor in from_hub.model.state_dict().items()
    )
    with torch.inference_mode():  # two instances: their kernels may pick other layouts, so a tolerance
        assert_same_up_to_float32_rounding(from_hub.model(image), bundled.model(image))


def test_predict_command_with_hub_weights_reads_the_cache_offline(hf_home):
    def predict(*model_args: str) -> list[dict]:
        result = subprocess.run(
            [sys.executable, "-m", "vitviz", "predict", CAT, *model_args, "--topk", "3", "--json"],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)[0]["predictions"]

    from_hub = predict("--model", EFFICIENTNET_HUB, "--weights", "hub", "--device", "cpu")
    assert from_hub[0]["index"] in range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    bundled = predict("--model", "tf_efficientnet_lite0", "--weights", "bundled", "--device", "cpu")
    assert [row["index"] for row in from_hub] == [row["index"] for row in bundled]
    # Two processes, each its own instance of the same weights: equal within float32 rounding.
    assert [row["probability"] for row in from_hub] == pytest.approx(
        [row["probability"] for row in bundled], abs=1e-6
    )


def test_availability_says_a_cached_hub_model_is_in_the_local_cache(hf_home):
    for name in (EFFICIENTNET_HUB, "tf_efficientnet_lite0"):  # the untagged name means the same weights
        availability = check_weights(name, "hub")
        assert availability.loads and availability.note == "hub: in the local cache"
    other = check_weights("resnet50.a1_in1k", "hub")
    assert other.status == "needs internet" and "offline" in other.note


def test_an_uncached_hub_model_offline_is_one_clear_error(hf_home):
    with pytest.raises(WeightsError, match=re.escape("Could not get hub weights for resnet50.a1_in1k")):
        load_model("resnet50.a1_in1k", "hub")


def test_the_command_line_words_the_alternatives_as_flags(hf_home):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "vitviz",
        "predict",
        CAT,
        "--model",
        "resnet50.a1_in1k",
        "--weights",
        "hub",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1
    assert result.stderr.startswith("error: Could not get hub weights for resnet50.a1_in1k")
    assert result.stderr.rstrip().endswith("Try --weights random.")  # no bundled weights for a ResNet-50
