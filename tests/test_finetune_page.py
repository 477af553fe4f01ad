"""The Fine-tune page under AppTest: data, a real run through the worker, results, refused uploads."""

import io
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from vitviz.runs import RunStatus, read_config, read_status, write_config, write_status

PAGE = "pages/finetune.py"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(root))  # the worker process inherits it
    return root


def open_page() -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, at.exception
    return at


def captions(at: AppTest) -> str:
    return "\n".join(caption.value for caption in at.caption)


def png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_page_shows_the_builtin_shapes_and_their_split(runs_dir):
    at = open_page()
    assert "builtin:shapes** · 5 classes · 300 images · split: 240 train / 60 validation images" in captions(
        at
    )
    at.number_input(key="finetune_max_images").set_value(50).run()
    assert "split: 40 train / 10 validation images (max images: 50 of 300)" in captions(at)
    assert not at.button(key="finetune_start").disabled
    assert "No runs yet" in captions(at)


def test_a_probe_run_trains_in_the_worker_and_its_results_render(runs_dir):
    at = open_page()
    at.number_input(key="finetune_max_images").set_value(25).run()
    at.number_input(key="finetune_epochs_probe").set_value(4).run()
    at.button(key="finetune_start").click().run()
    assert not at.exception, at.exception
    name = at.session_state["finetune_open_run"]
    assert at.query_params["run"] == [name] or at.query_params["run"] == name
    folder = runs_dir / name
    deadline = time.monotonic() + 300
    while read_status(folder).active:
        assert time.monotonic() < deadline, (folder / "worker.log").read_text()
        time.sleep(0.5)
    assert read_status(folder).state == "finished", (folder / "worker.log").read_text()

    at.run()
    assert not at.exception, at.exception
    markdown = "\n".join(block.value for block in at.markdown)
    assert "#### Validation results · accuracy" in markdown
    assert "#### Attention before and after fine-tuning" in markdown
    assert any("A probe keeps the backbone frozen" in info.value for info in at.info)
    # Curves, confusion matrix, and 2 × 2 attention maps (plus the class counts).
    assert len(at.get("plotly_chart")) >= 7
    # The finished run is now a model in every page's picker.
    options = at.selectbox(key="finetune_model").options
    assert any(option.startswith(f"run: {name} (vit_small_patch14_dinov2, probe)") for option in options)

    # Another page takes the run as its model: the fine-tuned head predicts the shape classes.
    at.switch_page("pages/explore.py")
    at.run()
    at.selectbox(key="explore_model").select(str(folder)).run()
    assert not at.exception, at.exception
    assert f"fine-tuned run {name} (probe)" in captions(at)
    assert not any("untrained" in warning.value for warning in at.warning)


def test_a_refreshed_page_reopens_the_run_named_in_the_url(runs_dir):
    folder = runs_dir / "20250101-000000-vit-probe-abcdef"
    folder.mkdir(parents=True)
    write_config(
        folder, {"timm_name": "vit_small_patch14_dinov2", "weights": "random", "mode": "probe", "labels": []}
    )
    write_status(folder, RunStatus("failed", error="out of memory"))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.switch_page(PAGE)
    at.query_params["run"] = folder.name
    at.run()
    assert not at.exception, at.exception
    assert [sub.value for sub in at.subheader if sub.value.startswith("Run ")] == [f"Run {folder.name}"]
    assert any(error.value == "The run failed: out of memory" for error in at.error)
    assert any("started from random, untrained weights" in warning.value for warning in at.warning)


def test_a_hostile_zip_upload_gets_a_message_and_no_start(runs_dir):
    at = open_page()
    at.radio(key="finetune_data_source").set_value("upload a .zip").run()
    evil = zip_bytes({"cats/a.png": png((255, 0, 0)), "dogs/b.png": png((0, 0, 255)), "../evil.png": b"x"})
    at.file_uploader(key="finetune_upload").set_value(("pets.zip", evil, "application/zip")).run()
    assert not at.exception, at.exception
    assert [error.value for error in at.error] == [
        "The archive was refused: entry '../evil.png' climbs out of its folder with '..'. Nothing was extracted."
    ]
    assert at.button(key="finetune_start").disabled
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_a_good_zip_upload_shows_counts_and_the_skipped_file(runs_dir):
    at = open_page()
    at.radio(key="finetune_data_source").set_value("upload a .zip").run()
    entries = {f"pets/cats/{i}.png": png((200, 20 * i, 0)) for i in range(3)}
    entries |= {f"pets/dogs/{i}.png": png((0, 20 * i, 200)) for i in range(2)}
    entries["pets/readme.txt"] = b"hello"
    at.file_uploader(key="finetune_upload").set_value(
        ("pets.zip", zip_bytes(entries), "application/zip")
    ).run()
    assert not at.exception, at.exception
    assert not at.error, [error.value for error in at.error]
    assert "**pets.zip** · 2 classes · 5 images · split: 3 train / 2 validation images" in captions(at)
    assert [expander.label for expander in at.expander] == [
        "1 files skipped (not images, or outside a class folder)"
    ]


def test_the_stop_button_stops_a_running_worker(runs_dir):
    at = open_page()
    at.selectbox(key="finetune_model").select("other timm model…").run()
    at.text_input(key="finetune_model_name").set_value("test_vit").run()
    at.selectbox(key="finetune_weights").select("random").run()
    at.radio(key="finetune_mode").set_value("full").run()
    at.number_input(key="finetune_epochs_full").set_value(5000).run()
    at.number_input(key="finetune_max_images").set_value(10).run()
    at.number_input(key="finetune_batch_size").set_value(1).run()
    at.button(key="finetune_start").click().run()
    folder = runs_dir / at.session_state["finetune_open_run"]
    assert read_config(folder)["hyperparameters"]["epochs"] == 5000
    deadline = time.monotonic() + 240
    while not (folder / "metrics.jsonl").exists():
        assert time.monotonic() < deadline, (folder / "worker.log").read_text()
        time.sleep(0.3)
    at.run()
    assert read_status(folder).state == "running"
    at.button(key="finetune_stop").click().run()
    assert not at.exception, at.exception
    while read_status(folder).active:
        assert time.monotonic() < deadline, (folder / "worker.log").read_text()
        time.sleep(0.3)
    at.run()
    assert read_status(folder).state == "stopped"
    assert any("started from random, untrained weights" in warning.value for warning in at.warning)
    assert any("finished" not in bar.text and "stopped" in bar.text for bar in at.get("progress"))
