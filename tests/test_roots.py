"""The server's two folders and the one check that a path stays inside a folder (vitviz.roots)."""

import json
import os

import pytest

from vitviz.models import estimate_model, load_model
from vitviz.roots import DATA_ROOT_ENV, RUNS_DIR_ENV, confined, data_root, in_data_root, runs_root


@pytest.fixture
def root(tmp_path):
    """A root with a folder and a file inside, a link out of it, and a loop of links."""
    inside = tmp_path / "root"
    (inside / "pets" / "cats").mkdir(parents=True)
    (inside / "pets" / "cats" / "1.png").write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    (inside / "out").symlink_to(tmp_path / "outside")
    (inside / "loop").symlink_to(inside / "loop")
    return inside


def test_a_relative_path_is_read_from_the_root_and_shown_relative_to_it(root):
    found = confined("pets/cats/1.png", root)
    assert found is not None
    assert found.path == root / "pets" / "cats" / "1.png"
    assert found.shown == "pets/cats/1.png"
    assert found.root == root
    assert confined(".", root).shown == "."
    assert confined("pets/not-there-yet", root).shown == "pets/not-there-yet"  # nothing has to exist


def test_an_absolute_path_counts_only_when_it_points_into_the_root(root, tmp_path):
    assert confined(str(root / "pets"), root).shown == "pets"
    assert confined(str(tmp_path / "outside"), root) is None
    assert confined("/etc/passwd", root) is None


@pytest.mark.parametrize("text", ["..", "pets/../../outside", "out", "out/x.png", "loop", "bad\0byte"])
def test_climbing_out_following_a_link_out_and_impossible_paths_are_outside(root, text):
    assert confined(text, root) is None


def test_a_root_reached_through_a_link_is_resolved(root, tmp_path):
    (tmp_path / "link-to-root").symlink_to(root)
    found = confined("pets", tmp_path / "link-to-root")
    assert found is not None and found.path == root / "pets" and found.root == root


def test_the_data_root_is_off_unless_named_and_a_folder(root, tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    assert data_root() is None and in_data_root(root / "pets") is None
    monkeypatch.setenv(DATA_ROOT_ENV, str(root / "pets" / "cats" / "1.png"))
    assert data_root() is None
    monkeypatch.setenv(DATA_ROOT_ENV, str(root))
    assert data_root() == root
    assert in_data_root(root / "pets").shown == "pets"
    assert in_data_root(tmp_path / "outside") is None


def test_in_data_root_reads_a_relative_path_from_the_working_directory(root, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, str(root))
    monkeypatch.chdir(root / "pets")
    assert in_data_root("cats").shown == "pets/cats"


def test_the_runs_folder_is_the_setting_and_is_created(tmp_path, monkeypatch):
    monkeypatch.setenv(RUNS_DIR_ENV, str(tmp_path / "new" / "runs"))
    assert runs_root() == tmp_path / "new" / "runs" and runs_root().is_dir()


def test_a_timm_name_is_never_taken_for_a_folder_of_that_name(tmp_path, monkeypatch):
    """A page's model name is a timm name: a folder in the working directory bearing it is no run."""
    monkeypatch.chdir(tmp_path)
    decoy = tmp_path / "test_vit"
    decoy.mkdir()
    (decoy / "config.json").write_text(json.dumps({"timm_name": "no_such_model", "labels": ["a"]}))
    assert os.path.isdir("test_vit")
    assert estimate_model("test_vit", "random").weights_bytes > 0
    assert load_model("test_vit", "random").facts.name == "test_vit"
