"""What a visitor of the served app reaches on the server: the data root the operator named, nothing else."""

from pathlib import Path

import pytest
import safetensors.torch
import torch

from tests.support.archives import png_bytes
from tests.support.run_folders import dead_looking_run, folder_snapshot, hand_made_run
from vitviz.finetune.data import DataError, scan_image_folder
from vitviz.finetune.worker import _data_root_folder
from vitviz.images import ImageDecodeError, load_image_file
from vitviz.models import RUN_WEIGHTS, ModelError, describe_weights, load_model
from vitviz.runs import RunError, delete_run, run_folder_by_name
from vitviz.serving import (
    DATA_ROOT_ENV,
    ServingError,
    is_visitor_run,
    server_folder,
    server_image_set,
    server_paths_allowed,
    server_weights_file,
    visitor_model,
)
from vitviz.weights import WeightsError, load_state_dict_file


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A data root with a folder of class folders, a weights file, and a secret folder beside it."""
    root = tmp_path / "data"
    for label, colour in (("cats", (200, 30, 30)), ("dogs", (30, 30, 200))):
        (root / "pets" / label).mkdir(parents=True)
        for index in range(3):
            (root / "pets" / label / f"{index}.png").write_bytes(png_bytes(colour))
    safetensors.torch.save_file({"w": torch.zeros(2)}, root / "tiny.safetensors")
    secret = tmp_path / "secret"
    for label in ("a", "b"):
        (secret / label).mkdir(parents=True)
        (secret / label / "x.png").write_bytes(png_bytes())
    safetensors.torch.save_file({"w": torch.zeros(2)}, secret / "hidden.safetensors")
    monkeypatch.setenv(DATA_ROOT_ENV, str(root))
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path / "runs"))
    return root, secret


def assert_one_line_without(message: str, *paths: Path) -> None:
    assert message and "\n" not in message, message
    for path in paths:
        assert str(path) not in message, message


# --------------------------------------------------------------------------------------------
# Off unless the operator names a root
# --------------------------------------------------------------------------------------------


def test_server_folders_and_files_are_off_unless_the_operator_names_a_root(served, monkeypatch):
    root, _ = served
    monkeypatch.delenv(DATA_ROOT_ENV)
    assert not server_paths_allowed()
    for ask in (lambda: server_folder(str(root / "pets")), lambda: server_weights_file("tiny.safetensors")):
        with pytest.raises(ServingError, match="turned off") as refused:
            ask()
        assert_one_line_without(str(refused.value), root)


def test_a_root_that_is_not_a_folder_keeps_server_paths_off(served, monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "missing"))
    assert not server_paths_allowed()
    with pytest.raises(ServingError, match="turned off"):
        server_folder("pets")


# --------------------------------------------------------------------------------------------
# Inside the root only: no "..", no absolute escape, no link out
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["pets", "./pets/", "pets/../pets", "{root}/pets"])
def test_a_visitor_path_resolves_inside_the_root_and_is_shown_relative_to_it(served, text):
    root, _ = served
    folder = server_folder(text.format(root=root))
    assert folder.path == (root / "pets").resolve() and folder.shown == "pets"


def test_escapes_read_exactly_like_a_missing_folder(served, tmp_path):
    root, secret = served
    (root / "link-out").symlink_to(secret, target_is_directory=True)
    escapes = ["..", "../secret", str(secret), "/", "/etc", "pets/../../secret", "link-out", "link-out/a"]
    messages = {}
    for text in [*escapes, "no-such-folder"]:
        with pytest.raises(ServingError) as refused:
            server_folder(text)
        messages[text] = str(refused.value)
        assert_one_line_without(messages[text], root, tmp_path)
    assert len(set(messages.values())) == 1, messages


def test_a_file_is_not_a_folder_and_a_folder_is_not_a_weights_file(served):
    with pytest.raises(ServingError):
        server_folder("tiny.safetensors")
    with pytest.raises(ServingError):
        server_weights_file("pets")


def test_the_weights_box_reaches_only_weights_files_inside_the_root(served):
    root, secret = served
    assert server_weights_file("tiny.safetensors").path == (root / "tiny.safetensors").resolve()
    with pytest.raises(ServingError) as outside:
        server_weights_file(str(secret / "hidden.safetensors"))
    with pytest.raises(ServingError) as missing:
        server_weights_file("nope.safetensors")
    assert str(outside.value) == str(missing.value)
    (root / "notes.txt").write_text("not weights")
    with pytest.raises(ServingError, match="safetensors"):
        server_weights_file("notes.txt")


def test_a_server_image_set_names_everything_relative_to_the_root(served):
    root, secret = served
    (root / "pets" / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "pets" / "dogs" / "leak.png").symlink_to(secret / "a" / "x.png")
    image_set = server_image_set("pets")
    assert image_set.source == "pets"
    assert image_set.class_counts() == {"cats": 4, "dogs": 3}  # the link out of the root is skipped
    with pytest.raises(DataError) as broken:
        image_set.item("cats/broken.png").load()
    assert str(broken.value) == "cats/broken.png: The image is truncated or corrupt."
    (root / "pets" / "cats" / "0.png").unlink()
    with pytest.raises(DataError) as gone:
        image_set.item("cats/0.png").load()
    assert_one_line_without(str(gone.value), root)
    (root / "single" / "only").mkdir(parents=True)
    (root / "single" / "only" / "a.png").write_bytes(png_bytes())
    with pytest.raises(DataError) as one_class:
        server_image_set("single")
    assert str(one_class.value).startswith("single: need at least two class folders")


# --------------------------------------------------------------------------------------------
# Model names and weights from visitors
# --------------------------------------------------------------------------------------------


def test_a_path_in_the_model_box_reads_like_a_missing_one_and_touches_nothing(served, tmp_path):
    elsewhere = dead_looking_run(tmp_path / "elsewhere")
    before = folder_snapshot(elsewhere)
    runs = hand_made_run(tmp_path / "runs").parent
    texts = [
        str(elsewhere),
        str(tmp_path / "elsewhere" / "missing"),
        str(runs / elsewhere.name),
        "../elsewhere",
    ]
    messages = set()
    for text in texts:
        for weights in (RUN_WEIGHTS, "random", "bundled"):
            with pytest.raises(ServingError) as refused:
                visitor_model(text, weights)
            assert_one_line_without(str(refused.value), tmp_path)
            messages.add(str(refused.value))
    assert messages == {"There is no timm model or finished run of that name."}
    assert folder_snapshot(elsewhere) == before, "a folder outside the runs folder was rewritten"


def test_a_run_is_taken_by_its_name_in_the_runs_folder_only(served, tmp_path):
    run = hand_made_run(tmp_path / "runs")
    dead = dead_looking_run(tmp_path / "runs")
    assert is_visitor_run(run.name) and visitor_model(run.name, RUN_WEIGHTS) == (run.name, RUN_WEIGHTS)
    assert not is_visitor_run(str(run)) and not is_visitor_run(dead.name) and not is_visitor_run("gone")
    refusals = set()
    for text in (str(run), dead.name, "gone", ".", ".."):
        with pytest.raises(ServingError) as refused:
            visitor_model(text, RUN_WEIGHTS)
        refusals.add(str(refused.value))
    assert len(refusals) == 1, refusals
    assert not (dead / "data").exists(), "a dead run inside the runs folder is settled as before"


def test_a_timm_name_and_a_weights_file_relative_to_the_root_are_accepted(served):
    root, secret = served
    assert visitor_model("vit_tiny_patch16_224", "random") == ("vit_tiny_patch16_224", "random")
    assert visitor_model("test_vit", "tiny.safetensors") == (
        "test_vit",
        str((root / "tiny.safetensors").resolve()),
    )
    with pytest.raises(ServingError) as outside:
        visitor_model("test_vit", str(secret / "hidden.safetensors"))
    with pytest.raises(ServingError) as missing:
        visitor_model("test_vit", "gone.safetensors")
    assert str(outside.value) == str(missing.value)
    with pytest.raises(ServingError) as system:
        visitor_model("test_vit", "/etc/passwd")
    with pytest.raises(ServingError) as missing_inside:
        visitor_model("test_vit", "passwd")
    assert str(system.value) == str(missing_inside.value) and "/etc" not in str(system.value)


def test_the_worker_confines_its_data_with_the_same_function_as_the_pages(served, tmp_path):
    root, secret = served
    assert _data_root_folder(str(root / "pets")) == server_folder("pets")
    assert _data_root_folder(str(secret)) is None  # the command line's own folder: not the root's
    assert _data_root_folder("builtin:shapes") is None


# --------------------------------------------------------------------------------------------
# Long and odd text: one clear line, never a traceback or a server path
# --------------------------------------------------------------------------------------------

ODD_TEXTS = ["x" * 300, "a/" * 200 + "b", "../" * 50, "bad\0byte", "\n".join(["two", "lines"]), ""]
ODD_IDS = ["long", "deep", "climb", "nul", "newline", "empty"]


@pytest.mark.parametrize("text", ODD_TEXTS, ids=ODD_IDS)
def test_visitor_text_gives_one_line_without_a_server_path(served, tmp_path, text):
    root, _ = served
    # Every library call a page hands a visitor's text to, with the one error type it may raise.
    entry_points = {
        "server_folder": (lambda: server_folder(text), ServingError),
        "server_image_set": (lambda: server_image_set(text), ServingError),
        "server_weights_file": (lambda: server_weights_file(text), ServingError),
        "visitor_model name": (lambda: visitor_model(text, "random"), ServingError),
        "visitor_model weights": (lambda: visitor_model("test_vit", text), ServingError),
        "run_folder_by_name": (lambda: run_folder_by_name(text), RunError),
        "delete_run": (lambda: delete_run(text), RunError),
        "load_model name": (lambda: load_model(text, "random"), ModelError),
        "load_model weights": (lambda: load_model("test_vit", text), WeightsError),
    }
    for name, (call, expected) in entry_points.items():
        try:
            call()
        except expected as error:
            message = str(error)
            assert message and "\n" not in message, (name, message)
            assert str(root) not in message and str(tmp_path) not in message, (name, message)
        else:
            pytest.fail(f"{name} accepted {text!r}")
    label = describe_weights(text)
    assert label and "\n" not in label and str(root) not in label


@pytest.mark.parametrize("text", ["x" * 300, "bad\0byte", "two\nlines"], ids=["long", "nul", "newline"])
def test_odd_paths_on_the_command_line_give_one_line_errors(text):
    """The CLI reads any path its user names; an impossible one is still one line, never a traceback."""
    for call, expected in [
        (lambda: load_state_dict_file(text), WeightsError),
        (lambda: scan_image_folder(text), DataError),
        (lambda: load_image_file(text), ImageDecodeError),
        (lambda: load_model(text, "random"), ModelError),
    ]:
        with pytest.raises(expected) as refused:
            call()
        assert "\n" not in str(refused.value), str(refused.value)
