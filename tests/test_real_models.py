"""Real-weight checks on the bundled models and the photos shipped in scikit-image / scikit-learn."""

import numpy as np
import pytest
import torch

from vitviz.forward.attention import record_attention
from vitviz.images import builtin_photo
from vitviz.maths.attention import class_attention_map, rollout_relevance
from vitviz.maths.distance import mean_attention_distance
from vitviz.models import ModelError, load_model
from vitviz.predict import NoClassifierError, predict
from vitviz.preprocess import image_view
from vitviz.weights import WeightsError

# ImageNet-1k indices of the domestic cats: tabby, tiger cat, Persian, Siamese, Egyptian cat.
CAT_CLASSES = range(281, 286)
COFFEE_MUG_CLASSES = {504, 967, 968}  # coffee mug, espresso, cup


@pytest.fixture(scope="module")
def dinov2():
    return load_model("vit_small_patch14_dinov2", "bundled", "cpu")


@pytest.fixture(scope="module")
def efficientnet():
    return load_model("tf_efficientnet_lite0", "bundled", "cpu")


def test_bundled_dinov2_facts_come_from_the_built_model(dinov2):
    facts = dinov2.facts
    assert facts.family == "vit"
    assert facts.input_size == (224, 224)
    assert (facts.grid_size, facts.patch_size, facts.stride_px) == ((16, 16), (14, 14), (14, 14))
    assert (facts.num_prefix_tokens, facts.num_tokens) == (1, 257)
    assert (facts.num_layers, facts.num_heads, facts.embed_dim) == (12, 6, 384)
    assert not facts.has_classifier
    assert dinov2.trained


def test_bundled_efficientnet_is_a_cnn_with_an_imagenet_head(efficientnet):
    facts = efficientnet.facts
    assert (facts.family, facts.num_classes, facts.grid_size) == ("cnn", 1000, None)
    assert facts.mean == (0.5, 0.5, 0.5) and facts.std == (0.5, 0.5, 0.5)
    assert efficientnet.labels[281] == "tabby, tabby cat"


def test_efficientnet_calls_the_cat_photo_a_cat(efficientnet):
    (top,) = predict(efficientnet, [image_view(builtin_photo("cat (chelsea)"), efficientnet.facts)], topk=5)
    assert top[0].index in CAT_CLASSES, top
    assert top[0].probability > 0.3
    probabilities = [p.probability for p in top]
    assert probabilities == sorted(probabilities, reverse=True)


def test_efficientnet_predicts_a_batch_in_order(efficientnet):
    cat, coffee = builtin_photo("cat (chelsea)"), builtin_photo("coffee")
    cat_top, coffee_top = predict(
        efficientnet, [image_view(cat, efficientnet.facts), image_view(coffee, efficientnet.facts)], topk=3
    )
    assert cat_top[0].index in CAT_CLASSES
    assert coffee_top[0].index in COFFEE_MUG_CLASSES, coffee_top


def test_a_model_without_a_head_says_so(dinov2):
    with pytest.raises(NoClassifierError, match="no classifier head"):
        predict(dinov2, [image_view(builtin_photo("cat (chelsea)"), dinov2.facts)])


def test_dinov2_attention_record_has_every_layer_and_head(dinov2):
    record = record_attention(dinov2, image_view(builtin_photo("cat (chelsea)"), dinov2.facts))
    assert record.attentions.shape == (12, 6, 257, 257)
    np.testing.assert_allclose(record.attentions.sum(-1), 1.0, atol=1e-4)
    class_map = class_attention_map(record, layer=11, head=None)
    assert class_map.shape == (16, 16)
    # Prefix column left out: the class token's patch weights sum to less than one.
    assert 0.0 < class_map.sum() < 1.0
    relevance = rollout_relevance(record)
    assert relevance.shape == (16, 16) and np.all(relevance > 0)


def test_dinov2_early_layers_hold_both_local_and_global_heads(dinov2):
    # ViT paper, Fig. 7 right: in early layers some heads attend within a patch or two,
    # others across most of the image (uniform attention here would average 117 px).
    record = record_attention(dinov2, image_view(builtin_photo("cat (chelsea)"), dinov2.facts))
    distances = mean_attention_distance(record.attentions, (16, 16), (14, 14), num_prefix_tokens=1)
    assert distances.shape == (12, 6)
    early = distances[1:5]
    assert early.min() < 25.0, early
    assert early.max() > 90.0, early


def test_random_weights_are_marked_untrained():
    loaded = load_model("vit_tiny_patch16_224", "random", "cpu")
    assert not loaded.trained
    assert loaded.facts.num_classes == 1000


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(ModelError, match="no model named 'vit_smal_patch14_dinov2'"):
        load_model("vit_smal_patch14_dinov2", "random")
    with pytest.raises(ModelError, match="Did you mean"):
        load_model("dinov2", "random")


def test_no_bundled_weights_for_other_models():
    with pytest.raises(WeightsError, match="No bundled weights for resnet18"):
        load_model("resnet18", "bundled")


def test_hub_weights_offline_give_a_clear_message():
    with pytest.raises(WeightsError, match="hub"):
        load_model("vit_tiny_patch16_224", "hub")


def test_checkpoint_file_with_a_new_head_loads(tmp_path):
    from safetensors.torch import save_file

    model = load_model("vit_tiny_patch16_224", "random").model
    state = {key: value.clone() for key, value in model.state_dict().items()}
    state["head.weight"] = torch.randn(4, 192)
    state["head.bias"] = torch.zeros(4)
    path = tmp_path / "finetuned.safetensors"
    save_file(state, path)
    loaded = load_model("vit_tiny_patch16_224", str(path))
    assert loaded.facts.num_classes == 4 and loaded.labels is None
    torch.testing.assert_close(loaded.model.head.weight, state["head.weight"])


def test_checkpoint_of_another_model_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3)}, tmp_path / "other.safetensors")
    with pytest.raises(WeightsError, match="do not fit"):
        load_model("vit_tiny_patch16_224", str(tmp_path / "other.safetensors"))


def test_random_weights_are_the_same_on_every_load_so_a_link_shows_every_visitor_one_model():
    state = torch.get_rng_state()
    first, second = load_model("test_vit", "random"), load_model("test_vit", "random")
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left alone
    pairs = zip(first.model.state_dict().items(), second.model.state_dict().items(), strict=True)
    for (name, one), (_, other) in pairs:
        assert torch.equal(one, other), name


def test_random_weights_stay_the_same_while_another_thread_builds_models():
    """The server's warm-up and other visitors build models meanwhile; each build holds one lock."""
    import threading

    expected = load_model("test_vit", "random").model.state_dict()
    stop = threading.Event()

    def build_others() -> None:
        while not stop.is_set():
            load_model("test_vit", "random")

    other = threading.Thread(target=build_others)
    other.start()
    try:
        built = [load_model("test_vit", "random").model.state_dict() for _ in range(5)]
    finally:
        stop.set()
        other.join()
    for state in built:
        assert all(torch.equal(state[name], value) for name, value in expected.items())
