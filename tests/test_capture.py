"""Attention capture on tiny random timm models of every family: shapes, hooks, fused flags."""

import threading

import pytest
import torch

from vitviz.capture import AttentionCapture, attention_modules, capture_attention, model_lock
from vitviz.models import model_facts, model_family

ATTENTION_FAMILIES = ["vit", "deit_distilled", "registers", "hybrid", "vit_rectangular"]


def _input(model: torch.nn.Module) -> torch.Tensor:
    height, width = model.patch_embed.img_size
    return torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("key", ATTENTION_FAMILIES)
def test_capture_returns_softmaxed_attention_per_layer(tiny_models, key):
    model = tiny_models[key]
    facts = model_facts(key, model)
    output, attentions = capture_attention(model, _input(model))
    tokens = facts.num_prefix_tokens + facts.grid_size[0] * facts.grid_size[1]
    assert len(attentions) == facts.num_layers == len(model.blocks)
    for attention in attentions:
        assert attention.shape == (2, facts.num_heads, tokens, tokens)
        torch.testing.assert_close(attention.sum(-1), torch.ones(2, facts.num_heads, tokens))
    assert output.shape[0] == 2


@pytest.mark.parametrize("key", ATTENTION_FAMILIES)
def test_capture_leaves_output_unchanged_and_restores_flags_and_hooks(tiny_models, key):
    model = tiny_models[key]
    pixels = _input(model)
    flags_before = [m.fused_attn for m in attention_modules(model)]
    hooks_before = _hook_count(model)
    with torch.inference_mode():
        fused_output = model(pixels)
    output, _ = capture_attention(model, pixels)
    torch.testing.assert_close(output, fused_output, atol=1e-5, rtol=1e-5)
    assert [m.fused_attn for m in attention_modules(model)] == flags_before
    assert _hook_count(model) == hooks_before


def test_capture_cleans_up_when_the_forward_raises(tiny_models):
    model = tiny_models["vit"]
    flags_before = [m.fused_attn for m in attention_modules(model)]
    hooks_before = _hook_count(model)
    wrong_size = torch.randn(1, 3, 40, 40)
    with pytest.raises(AssertionError), AttentionCapture(model):
        model(wrong_size)
    assert [m.fused_attn for m in attention_modules(model)] == flags_before
    assert _hook_count(model) == hooks_before


def test_fused_flags_restored_to_their_own_values(tiny_models):
    model = tiny_models["vit"]
    modules = attention_modules(model)
    modules[0].fused_attn = False  # a mix of fused and unfused layers must come back as it was
    try:
        capture_attention(model, _input(model))
        assert [m.fused_attn for m in modules] == [False] + [True] * (len(modules) - 1)
    finally:
        modules[0].fused_attn = True


def test_cnn_has_nothing_to_capture(tiny_models):
    with pytest.raises(ValueError, match="no self-attention"):
        AttentionCapture(tiny_models["cnn"])


@pytest.mark.parametrize(
    ("key", "family", "prefix", "grid", "stride"),
    [
        ("vit", "vit", 1, (4, 4), (16, 16)),
        ("deit_distilled", "vit", 2, (4, 4), (16, 16)),
        ("registers", "vit", 5, (4, 4), (14, 14)),
        ("hybrid", "hybrid", 1, (3, 3), (32, 32)),
        ("vit_rectangular", "vit", 1, (3, 4), (16, 16)),
        ("cnn", "cnn", 0, None, None),
    ],
)
def test_facts_come_from_the_model(tiny_models, key, family, prefix, grid, stride):
    facts = model_facts(key, tiny_models[key])
    assert model_family(tiny_models[key]) == family
    assert (facts.family, facts.num_prefix_tokens, facts.grid_size, facts.stride_px) == (
        family,
        prefix,
        grid,
        stride,
    )


# --- One model shared by several sessions (the app caches each model once for every visitor) ---

_THREADS = 4
_ROUNDS = 12


def _run_together(work: list) -> list:
    """Runs each callable in its own thread, all released at once; returns their results in order."""
    barrier = threading.Barrier(len(work))
    results: list = [None] * len(work)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work[index]()
        except BaseException as error:  # surfaced below, with the thread's own traceback
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a capture never finished"
    if errors:
        raise errors[0]
    return results


def _distinct_inputs(model: torch.nn.Module, count: int) -> list[torch.Tensor]:
    height, width = model.patch_embed.img_size
    return [
        torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(100 + index))
        for index in range(count)
    ]


def _captured(model: torch.nn.Module, pixels: torch.Tensor, written_into_record: bool) -> list[torch.Tensor]:
    """Every layer's attention, kept by the hooks or written into a preallocated record."""
    if not written_into_record:
        return capture_attention(model, pixels)[1]
    modules = attention_modules(model)
    tokens = model.num_prefix_tokens + model.patch_embed.num_patches
    record = torch.full((len(modules), pixels.shape[0], modules[0].num_heads, tokens, tokens), float("nan"))
    return capture_attention(model, pixels, into=record)[1]


@pytest.mark.parametrize("written_into_record", [False, True])
def test_concurrent_captures_on_one_shared_model_each_see_only_their_own_image(
    tiny_models, written_into_record
):
    model = tiny_models["vit"]
    inputs = _distinct_inputs(model, _THREADS)
    alone = [capture_attention(model, pixels)[1] for pixels in inputs]
    flags_before = [module.fused_attn for module in attention_modules(model)]

    def captures(index: int):
        return [_captured(model, inputs[index], written_into_record) for _ in range(_ROUNDS)]

    results = _run_together([lambda index=index: captures(index) for index in range(_THREADS)])
    for index, rounds in enumerate(results):
        for attentions in rounds:
            assert len(attentions) == len(alone[index]), "another session's layers were recorded"
            for got, expected in zip(attentions, alone[index], strict=True):
                torch.testing.assert_close(got, expected)
    assert [module.fused_attn for module in attention_modules(model)] == flags_before
    assert _hook_count(model) == 0


@pytest.mark.parametrize("written_into_record", [False, True])
def test_a_plain_forward_beside_a_capture_is_neither_recorded_nor_changed(tiny_models, written_into_record):
    model = tiny_models["hybrid"]
    captured_input, plain_input = _distinct_inputs(model, 2)
    with torch.inference_mode():
        plain_alone = model(plain_input)
    alone = capture_attention(model, captured_input)[1]

    def captures():
        return [_captured(model, captured_input, written_into_record) for _ in range(_ROUNDS)]

    def plain_forwards():
        with torch.inference_mode():
            return [model(plain_input) for _ in range(3 * _ROUNDS)]

    captured, plain = _run_together([captures, plain_forwards])
    for attentions in captured:
        assert len(attentions) == len(alone)
        for got, expected in zip(attentions, alone, strict=True):
            torch.testing.assert_close(got, expected)
    for output in plain:
        torch.testing.assert_close(output, plain_alone, rtol=1e-4, atol=1e-5)
    assert _hook_count(model) == 0


def test_capture_releases_the_model_lock_when_the_forward_raises(tiny_models):
    model = tiny_models["vit"]
    with pytest.raises(AssertionError), AttentionCapture(model):
        model(torch.zeros(1, 3, 80, 80))  # timm refuses a wrong input size

    def another_session_takes_the_lock() -> bool:
        lock = model_lock(model)
        if not lock.acquire(timeout=5):
            return False
        lock.release()
        return True

    assert _run_together([another_session_takes_the_lock]) == [True]
