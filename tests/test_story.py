"""The presentation story: slide words from a model's facts, token shapes, position similarity, animation."""

import io

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from tests.conftest import TINY_MODELS
from vitviz.figures.animation import (
    apply_colormap,
    attention_animation_figure,
    attention_animation_gif,
    normalise_per_layer,
)
from vitviz.figures.story import SLIDE_KEYS, story_slides
from vitviz.forward.tokens import output_embedding, position_similarity, token_stages
from vitviz.models import LoadedModel, ModelError, model_facts
from vitviz.preprocess import image_view


@pytest.fixture(scope="module")
def dino_facts():
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=224)
    return model_facts("vit_small_patch14_dinov2", model)


@pytest.fixture(scope="module")
def cnn_facts(tiny_models):
    return model_facts("resnet18", tiny_models["cnn"])


def _facts(tiny_models, key):
    return model_facts(TINY_MODELS[key][0], tiny_models[key])


def _loaded(tiny_models, key) -> LoadedModel:
    model = tiny_models[key]
    return LoadedModel(model, _facts(tiny_models, key), "random", torch.device("cpu"), None)


def test_slides_follow_the_paper_in_order(dino_facts, cnn_facts):
    slides = story_slides(dino_facts, "cat (chelsea)", (451, 300), cnn_facts)
    assert tuple(slide.key for slide in slides) == SLIDE_KEYS
    assert len({slide.title for slide in slides}) == len(slides)


def test_captions_are_computed_from_the_dinov2_facts(dino_facts, cnn_facts):
    slides = {slide.key: slide for slide in story_slides(dino_facts, "cat (chelsea)", (451, 300), cnn_facts)}
    assert slides["image"].caption.startswith("cat (chelsea): a 451×300 photo.")
    assert "224×224 image → 256 patches of 14×14 px (a 16×16 grid)." in slides["patches"].caption
    assert "257 tokens × 384" in slides["tokens"].caption
    assert (
        "12 layers × 6 heads" in slides["attention"].caption and "layers 0–11" in slides["attention"].caption
    )
    assert "no classifier head" in slides["prediction"].caption
    assert "1000 class scores" in slides["compare"].caption
    assert "no classifier head, so only the CNN predicts" in slides["compare"].caption
    assert not any("untrained" in slide.caption for slide in slides.values())


def test_a_hybrid_is_told_its_patches_are_cnn_feature_cells(tiny_models):
    facts = _facts(tiny_models, "hybrid")
    patches = story_slides(facts, "x", (96, 96))[1]
    assert "96×96 image → a CNN stem → 9 feature cells, one per 32×32 px (a 3×3 grid)" in patches.caption


def test_a_classifier_vit_shows_its_predictions_and_random_weights_are_said_untrained(tiny_models):
    slides = story_slides(_facts(tiny_models, "vit"), "x", (64, 64), trained=False)
    assert [slide.key for slide in slides][-1] == "prediction"  # no CNN given: no comparison slide
    assert "to 1000 class scores" in slides[-1].caption
    assert all("untrained" in slide.caption for slide in slides[1:])


def test_the_story_refuses_a_cnn(cnn_facts):
    with pytest.raises(ValueError, match="is a CNN"):
        story_slides(cnn_facts, "x", (10, 10))


def test_token_shapes_of_dinov2(dino_facts):
    stages = token_stages(dino_facts)
    assert [(stage.name, stage.shape) for stage in stages] == [
        ("image", (3, 224, 224)),
        ("patches, flattened", (256, 588)),
        ("patch embeddings", (256, 384)),
        ("+ prefix tokens", (257, 384)),
        ("+ position embedding", (257, 384)),
    ]


def test_register_tokens_are_counted_as_prefix_tokens(tiny_models):
    stages = token_stages(_facts(tiny_models, "registers"))
    assert stages[3].shape == (16 + 5, 384) and "5 prefix tokens" in stages[3].note


def test_position_similarity_is_cosine_similarity_of_grid_rows(tiny_models):
    loaded = _loaded(tiny_models, "vit")  # 4×4 grid, class token embedded in pos_embed
    similarity = position_similarity(loaded, (1, 2))
    table = tiny_models["vit"].pos_embed[0, 1:].detach().numpy()
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    np.testing.assert_allclose(similarity.ravel(), unit @ unit[1 * 4 + 2], rtol=1e-5, atol=1e-6)
    assert similarity[1, 2] == pytest.approx(1.0)


def test_position_similarity_without_prefix_rows(tiny_models):
    loaded = _loaded(tiny_models, "registers")  # no_embed_class: pos_embed holds grid rows only
    similarity = position_similarity(loaded, (0, 0))
    assert similarity.shape == (4, 4) and similarity[0, 0] == pytest.approx(1.0)


def test_position_similarity_of_a_cnn_is_a_clear_error(tiny_models):
    with pytest.raises(ModelError, match="no tokens and no position embedding"):
        position_similarity(_loaded(tiny_models, "cnn"), (0, 0))


def test_output_embedding_is_the_class_token_after_the_final_norm(tiny_models):
    loaded = _loaded(tiny_models, "vit")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    vector = output_embedding(loaded, image_view(image, loaded.facts))
    assert vector.shape == (192,)

    with torch.inference_mode():
        expected = tiny_models["vit"].forward_head(
            tiny_models["vit"].forward_features(image_view(image, loaded.facts).tensor), pre_logits=True
        )[0]
    np.testing.assert_allclose(vector, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_colormap_hits_the_scale_ends():
    colours = apply_colormap(np.array([0.0, 1.0, -3.0, 7.0]))
    assert colours.dtype == np.uint8
    assert colours[0].tolist() == [0, 0, 4] and colours[1].tolist() == [252, 255, 164]  # Inferno ends
    assert colours[2].tolist() == colours[0].tolist() and colours[3].tolist() == colours[1].tolist()


def test_each_layer_is_scaled_by_its_own_maximum():
    maps = np.stack([np.full((2, 2), 0.25), np.array([[0.0, 2.0], [1.0, 0.5]]), np.zeros((2, 2))])
    scaled = normalise_per_layer(maps)
    np.testing.assert_allclose(scaled[0], np.ones((2, 2)))
    np.testing.assert_allclose(scaled[1], [[0.0, 1.0], [0.5, 0.25]])
    np.testing.assert_array_equal(scaled[2], np.zeros((2, 2)))


def test_animation_has_one_frame_per_layer_and_a_play_button():
    pixels = np.zeros((32, 48, 3), dtype=np.uint8)
    maps = np.random.default_rng(1).random((5, 4, 6))
    figure = attention_animation_figure(pixels, maps, (8, 8), "cat")
    assert [frame.name for frame in figure.frames] == ["0", "1", "2", "3", "4"]
    np.testing.assert_allclose(np.asarray(figure.frames[3].data[0].z), maps[3] / maps[3].max(), rtol=1e-6)
    assert figure.frames[4].layout.title.text == "cat · layer 4"
    assert figure.layout.updatemenus[0].buttons[0].label == "▶ Play"
    assert len(figure.layout.sliders[0].steps) == 5


def test_gif_has_one_frame_per_layer_blended_over_the_image():
    pixels = np.full((32, 32, 3), 100, dtype=np.uint8)
    maps = np.zeros((3, 2, 2))
    maps[0, 1, 1] = maps[1, 1, 0] = maps[2, 0, 1] = 1.0  # one hot token per layer, the rest cold
    gif = attention_animation_gif(pixels, maps, (16, 16), opacity=0.5, scale=1, frame_ms=250)
    with Image.open(io.BytesIO(gif)) as image:
        assert image.format == "GIF" and image.n_frames == 3 and image.size == (32, 32)
        assert image.info["duration"] == 250
        first = np.asarray(image.convert("RGB")).astype(int)
        image.seek(1)
        second = np.asarray(image.convert("RGB")).astype(int)
    # 0.5·100 + 0.5·colour: Inferno's hot end (252, 255, 164) and cold end (0, 0, 4), ±2 for the palette.
    hot, cold = [176, 178, 132], [50, 50, 52]
    np.testing.assert_allclose(first[28, 28], hot, atol=2)
    np.testing.assert_allclose(first[28, 4], cold, atol=2)
    np.testing.assert_allclose(second[28, 4], hot, atol=2)
    np.testing.assert_allclose(second[28, 28], cold, atol=2)


def test_opening_layer_skips_sink_layers_and_picks_the_most_concentrated_map():
    from vitviz.figures.story import opening_layer

    uniform = np.full((4, 4), 1 / 16)
    focused = np.zeros((4, 4))
    focused[1:3, 1:3] = 0.25  # four patches hold everything
    sink = np.zeros((4, 4))
    sink[0, 0] = 1.0  # one patch holds everything: the most concentrated, but a sink
    maps = np.stack([sink, uniform, focused, uniform])
    chosen = opening_layer(maps, sink_layers=[0], top_fraction=0.25)
    assert chosen.layer == 2 and chosen.top_share == pytest.approx(1.0)
    assert chosen.skipped == (0,)
    assert "layer 2" in chosen.caption() and "layer 0" in chosen.caption()


def test_animation_starts_on_the_active_layer():
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    maps = np.random.default_rng(0).random((3, 4, 4))
    figure = attention_animation_figure(pixels, maps, (8, 8), "cat", active=2)
    assert figure.layout.sliders[0].active == 2 and figure.layout.title.text.endswith("layer 2")
