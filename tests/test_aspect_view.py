"""The "whole image, aspect kept" view: a non-square token grid on a shared plain ViT, never changing it."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import timm
import torch

from tests.conftest import TINY_MODELS
from tests.support.panoramas import panorama
from tests.support.tiny_models import state_copy, tiny_loaded
from vitviz.capture import ResampledGrid, capture_attention, model_lock
from vitviz.figures.common import attention_overlay_figure
from vitviz.forward.attention import record_attention
from vitviz.images import builtin_photo
from vitviz.maths.attention import class_attention_map, patch_token, query_attention_map, rollout_relevance
from vitviz.maths.sinks import detect_sinks
from vitviz.models import ModelError
from vitviz.predict import predict
from vitviz.preprocess import aspect_grid, aspect_view_problem, image_view, supports_aspect_view

PLAIN_VITS = ("vit", "registers", "vit_rectangular")


def dynamic_twin(models: dict[str, torch.nn.Module], key: str) -> torch.nn.Module:
    """The same weights in timm's own dynamic-image-size model: the reference for a resampled grid."""
    name, kwargs = TINY_MODELS[key]
    twin = timm.create_model(name, pretrained=False, dynamic_img_size=True, **kwargs).eval()
    twin.load_state_dict(models[key].state_dict())
    return twin


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("deit_distilled", "distillation token"),
        ("hybrid", "CNN stem"),
        ("cnn", "not a plain ViT"),
    ],
)
def test_only_plain_vits_support_the_aspect_view_and_the_others_say_why(tiny_models, key, reason):
    assert all(supports_aspect_view(tiny_models[plain]) for plain in PLAIN_VITS)
    assert not supports_aspect_view(tiny_models[key])
    assert reason in aspect_view_problem(tiny_models[key])


def test_a_four_to_one_panorama_gets_four_times_more_columns_and_is_not_squashed(dinov2):
    photo = panorama(4)
    seen = image_view(photo, dinov2.facts, "aspect")
    assert seen.grid_size == (8, 32)  # 256 patches, as the model's own 16×16
    height, width = seen.pixels.shape[:2]
    assert (height, width) == (8 * 14, 32 * 14)
    assert width / height == pytest.approx(photo.width / photo.height)
    assert seen.covers_whole_photo and "aspect ratio is kept" in seen.note
    # the "whole" view of the same photo is squashed to a square; this one is not
    assert image_view(photo, dinov2.facts, "whole").pixels.shape[:2] == (224, 224)


def test_the_aspect_grid_keeps_the_shape_and_about_the_models_number_of_patches():
    assert aspect_grid((800, 100), (16, 16)) == (6, 48)
    assert aspect_grid((100, 800), (16, 16)) == (48, 6)
    assert aspect_grid((300, 300), (16, 16)) == (16, 16)
    rows, cols = aspect_grid((10_000, 10), (16, 16))  # a sliver: at most twice the patches
    assert rows == 1 and cols == 512


@pytest.mark.parametrize("key", PLAIN_VITS)
def test_a_resampled_grid_gives_timms_dynamic_image_size_output(tiny_models, key):
    loaded = tiny_loaded(tiny_models, key)
    seen = image_view(panorama(3), loaded.facts, "aspect")
    pixels = seen.tensor
    rows, cols = seen.grid_size
    assert cols > rows
    output, attentions = capture_attention(loaded.model, pixels)
    with torch.inference_mode():
        expected = dynamic_twin(tiny_models, key)(pixels)
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    tokens = loaded.facts.num_prefix_tokens + rows * cols
    assert attentions[0].shape[-2:] == (tokens, tokens)


def test_on_a_square_photo_the_aspect_view_is_the_whole_view_to_1e5(tiny_models, dinov2):
    loaded = tiny_loaded(tiny_models, "vit")
    square = builtin_photo("cat (chelsea)").crop((0, 0, 300, 300))
    aspect = record_attention(loaded, image_view(square, loaded.facts, "aspect"))
    whole = record_attention(loaded, image_view(square, loaded.facts, "whole"))
    assert aspect.grid_size == whole.grid_size == loaded.facts.grid_size
    np.testing.assert_allclose(aspect.logits, whole.logits, atol=1e-5)
    # DINOv2's eval transform crops nothing (crop_pct 1): on a square photo all three views agree
    records = [
        record_attention(dinov2, image_view(square, dinov2.facts, view))
        for view in ("crop", "whole", "aspect")
    ]
    for record in records[1:]:
        np.testing.assert_allclose(record.attentions, records[0].attentions, atol=1e-5)


def test_record_maps_rollout_and_sinks_follow_the_views_grid(dinov2):
    record = record_attention(dinov2, image_view(panorama(4), dinov2.facts, "aspect"))
    assert record.grid_size == (8, 32)
    assert record.attentions.shape == (12, 6, 1 + 256, 1 + 256)
    assert class_attention_map(record, 11, None).shape == (8, 32)
    last = patch_token(record, 7, 31)
    assert last == 256
    assert query_attention_map(record, 0, 2, last).shape == (8, 32)
    relevance = rollout_relevance(record)
    assert relevance.shape == (8, 32) and np.all(relevance >= 0)
    for sink in detect_sinks(record).patch_sinks:
        row, col = sink.position
        assert 0 <= row < 8 and 0 <= col < 32


def test_a_cnn_or_hybrid_refuses_the_aspect_view_with_the_reason(tiny_models):
    with pytest.raises(ModelError, match="CNN stem"):
        hybrid = tiny_loaded(tiny_models, "hybrid")
        record_attention(hybrid, image_view(panorama(2), hybrid.facts, "aspect"))
    cnn = tiny_loaded(tiny_models, "cnn")
    with pytest.raises(ValueError, match="no token grid"):  # a CNN's facts make no aspect-kept view
        image_view(panorama(2), cnn.facts, "aspect")
    vit = tiny_loaded(tiny_models, "vit")
    with pytest.raises(ModelError, match="ResNet is not a plain ViT"):  # nor does one made for a ViT go in
        predict(cnn, [image_view(panorama(2), vit.facts, "aspect")])


def test_predictions_of_photos_of_different_shapes_each_use_their_own_grid(tiny_models):
    loaded = tiny_loaded(tiny_models, "vit")
    photos = [panorama(4), panorama(2)]
    results = predict(loaded, [image_view(image, loaded.facts, "aspect") for image in photos], topk=3)
    for photo, predictions in zip(photos, results, strict=True):
        logits = torch.from_numpy(record_attention(loaded, image_view(photo, loaded.facts, "aspect")).logits)
        expected = logits.softmax(dim=-1).topk(3)
        assert [p.index for p in predictions] == expected.indices.tolist()
        assert [p.probability for p in predictions] == pytest.approx(expected.values.tolist(), abs=1e-6)


def test_a_plain_forward_beside_a_resampled_grid_is_unchanged_and_the_model_restored(tiny_models):
    model = tiny_models["vit"]
    loaded = tiny_loaded(tiny_models, "vit")
    before = state_copy(model)
    native = torch.randn(2, 3, *loaded.facts.input_size)
    wide = image_view(panorama(4), loaded.facts, "aspect").tensor
    with torch.inference_mode():
        expected_native = model(native)
        expected_wide = dynamic_twin(tiny_models, "vit")(wide)
    beside: dict[str, object] = {}

    def other_caller() -> None:  # another session's thread, holding no lock, as a prediction does
        with torch.inference_mode():
            beside["native"] = model(native)
            try:
                model(wide)
            except (AssertionError, RuntimeError) as error:  # timm's size check: still the built model
                beside["wide"] = error

    with ResampledGrid(model), torch.inference_mode():
        thread = threading.Thread(target=other_caller)
        thread.start()
        thread.join()  # runs while this thread's hooks are on the model
        wide_output = model(wide)
    torch.testing.assert_close(beside["native"], expected_native)
    assert "doesn't match model" in str(beside["wide"])
    torch.testing.assert_close(wide_output, expected_wide, atol=1e-5, rtol=1e-5)
    # every hook gone, every tensor as it was, the lock free
    assert not model.patch_embed._forward_pre_hooks and not model.pos_drop._forward_pre_hooks
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert model_lock(model).acquire(blocking=False)
    model_lock(model).release()
    with torch.inference_mode():
        torch.testing.assert_close(model(native), expected_native)


def test_concurrent_aspect_captures_and_plain_predictions_each_get_their_own_answer(tiny_models):
    loaded = tiny_loaded(tiny_models, "vit")
    photos = {"wide": panorama(4), "tall": panorama(3).rotate(90, expand=True)}
    expected = {
        name: record_attention(loaded, image_view(photo, loaded.facts, "aspect"))
        for name, photo in photos.items()
    }
    native = torch.randn(1, 3, *loaded.facts.input_size)
    with torch.inference_mode():
        expected_native = loaded.model(native)
    failures: list[str] = []

    def capture(name: str) -> None:
        for _ in range(5):
            record = record_attention(loaded, image_view(photos[name], loaded.facts, "aspect"))
            if record.grid_size != expected[name].grid_size or not np.allclose(
                record.logits, expected[name].logits, atol=1e-5
            ):
                failures.append(f"{name}: {record.grid_size}")

    def plain() -> None:
        for _ in range(10):
            with torch.inference_mode():
                if not torch.allclose(loaded.model(native), expected_native, atol=1e-6):
                    failures.append("plain forward changed")

    threads = [threading.Thread(target=capture, args=(name,)) for name in photos]
    threads.append(threading.Thread(target=plain))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert expected["tall"].grid_size[0] > expected["tall"].grid_size[1]


# The command line: `--view aspect` where it makes sense, one clear line where it does not.


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vitviz", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_cli_explain_rollout_on_the_aspect_view_follows_the_panoramas_grid(tmp_path):
    photo, out = tmp_path / "panorama.png", tmp_path / "map.npy"
    panorama(4).save(photo)
    args = ("--model", "vit_small_patch14_dinov2", "--method", "rollout", "--view", "aspect")
    result = run_cli("explain", str(photo), *args, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert np.load(out).shape == (8, 32)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ("predict", "--model", "resnet18", "--weights", "random"),
            "--view aspect: ResNet is not a plain ViT",
        ),
        (("explain", "--method", "gradcam", "--out", "map.npy"), "gives only the attention and rollout maps"),
    ],
)
def test_cli_aspect_view_where_it_cannot_be_is_one_clear_line(tmp_path, args, said):
    photo = tmp_path / "panorama.png"
    panorama(2).save(photo)
    command, *options = args
    result = run_cli(command, str(photo), *options, "--view", "aspect")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and said in result.stderr
    assert "Traceback" not in result.stderr


def test_a_wide_map_is_drawn_short_with_its_colour_bar_underneath():
    values = np.arange(8 * 32, dtype=float).reshape(8, 32)
    wide = attention_overlay_figure(np.zeros((112, 448, 3), np.uint8), values, (14, 14), "wide")
    square = attention_overlay_figure(np.zeros((224, 224, 3), np.uint8), values[:, :8], (28, 28), "square")
    heatmap = next(trace for trace in wide.data if trace.type == "heatmap")
    assert heatmap.colorbar.orientation == "h"
    assert wide.layout.height == 40 + 560 * 112 // 448 + 90  # the map's own height, then the bar's room
    assert square.layout.height == 520
    assert next(trace for trace in square.data if trace.type == "heatmap").colorbar.orientation is None
