"""The Fine-tune page under AppTest: data, a real run through the worker, results, refused uploads."""

import io
import json
import os
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.support.archives import class_folder_zip
from tests.support.polling import wait_for
from tests.support.run_folders import TINY_RUN_CONFIG, hand_made_run
from tests.support.sent_charts import sent_spec
from vitviz.runs import RunStatus, read_config, read_status, write_config, write_status

PAGE = "pages/finetune.py"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(root))  # the worker process inherits it
    return root


def open_page(run: str | None = None, *, pair: str | None = None, session: dict | None = None) -> AppTest:
    """The page, opened on a link naming `run` or `pair` when given, with `session` state set first;
    no exception raised in it."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.switch_page(PAGE)
    for key, value in (session or {}).items():
        at.session_state[key] = value
    for name, value in (("run", run), ("pair", pair)):
        if value is not None:
            at.query_params[name] = value
    at.run()
    assert not at.exception, at.exception
    return at


def captions(at: AppTest) -> str:
    return "\n".join(caption.value for caption in at.caption)


def png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def pets_folder(root: Path, folder: str = "pets") -> None:
    """root/folder: class folders cats and dogs of three PNGs each."""
    for name, colour in (("cats", (200, 0, 0)), ("dogs", (0, 0, 200))):
        (root / folder / name).mkdir(parents=True)
        for index in range(3):
            (root / folder / name / f"{index}.png").write_bytes(png(colour))


def open_server_folder(folder: str) -> AppTest:
    """The page with `folder` of the data root typed as the data."""
    at = open_page()
    at.radio(key="finetune_data_source").set_value("folder on the server").run()
    at.text_input(key="finetune_folder").set_value(folder).run()
    return at


def _worker_log(folder: Path) -> Callable[[], str]:
    """What a wait on a run's worker says when it times out: the worker's log."""
    return lambda: f"the worker; its log:\n{(folder / 'worker.log').read_text()}"


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
    wait_for(lambda: not read_status(folder).active, 300, _worker_log(folder), interval_s=0.5)
    assert read_status(folder).state == "finished", (folder / "worker.log").read_text()

    at.run()
    assert not at.exception, at.exception
    markdown = "\n".join(block.value for block in at.markdown)
    assert "#### Validation results · accuracy" in markdown
    assert "#### Attention before and after fine-tuning" in markdown
    # The probe's claim is measured: its frozen backbone's maps are the base model's, patch for patch.
    assert any(
        "class-token attention, last layer: the maps before and after are identical" in info.value
        and "rollout: the maps before and after are identical" in info.value
        and "as they must be: a probe freezes the backbone, so it cannot change its attention." in info.value
        for info in at.info
    ), [info.value for info in at.info]
    # The curves and the confusion matrix download as PNG, HTML and arrays; the URL names the run.
    download_keys = {button.key for button in at.get("download_button")}
    for figure in ("finetune_curves", "finetune_confusion"):
        assert {f"{figure}_png", f"{figure}_html", f"{figure}_npy", f"{figure}_csv"} <= download_keys
    assert at.query_params["run"] in ([name], name)
    # Curves, confusion matrix, and 2 × 2 attention maps (plus the class counts).
    assert len(at.get("plotly_chart")) >= 7
    # The finished run is now a model in every page's picker.
    options = at.selectbox(key="finetune_model").options
    assert any(option.startswith("run: DINOv2 ViT-S · probe · shapes") for option in options)

    # Another page takes the run as its model: the fine-tuned head predicts the shape classes.
    at.switch_page("pages/explore.py")
    at.run()
    at.selectbox(key="explore_model").select(folder.name).run()  # a run is picked by its name
    assert not at.exception, at.exception
    assert "fine-tuned run DINOv2 ViT-S · probe · shapes (probe)" in captions(at)
    assert not any("untrained" in warning.value for warning in at.warning)


def test_a_refreshed_page_reopens_the_run_named_in_the_url(runs_dir):
    folder = runs_dir / "20250101-000000-vit-probe-abcdef"
    folder.mkdir(parents=True)
    write_config(
        folder, {"timm_name": "vit_small_patch14_dinov2", "weights": "random", "mode": "probe", "labels": []}
    )
    write_status(folder, RunStatus("failed", error="out of memory"))
    at = open_page(folder.name)
    assert [sub.value for sub in at.subheader if sub.value.startswith("Run ")] == ["Run DINOv2 ViT-S · probe"]
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
    started = time.monotonic()  # one deadline of 240 s for the first epoch and the stop together
    wait_for(lambda: (folder / "metrics.jsonl").exists(), 240, _worker_log(folder), interval_s=0.3)
    at.run()
    assert read_status(folder).state == "running"
    at.button(key="finetune_stop").click().run()
    assert not at.exception, at.exception
    left_s = 240 - (time.monotonic() - started)
    wait_for(lambda: not read_status(folder).active, left_s, _worker_log(folder), interval_s=0.3)
    at.run()
    assert read_status(folder).state == "stopped"
    assert any("started from random, untrained weights" in warning.value for warning in at.warning)
    assert any("finished" not in bar.text and "stopped" in bar.text for bar in at.get("progress"))


# --------------------------------------------------------------------------------------------
# Serving safety: runs by name, server folders inside the data root, limits per visitor and server
# --------------------------------------------------------------------------------------------

HOSTILE_RUN_NAMES = {
    "..": "'..' is not the name of a run. Pick a run from the list.",
    ".": "'.' is not the name of a run. Pick a run from the list.",
    "r" * 300: f"'{'r' * 79}…' is not the name of a run. Pick a run from the list.",
    "²": "There is no run named '²'. Pick a run from the list.",
    "9" * 400: f"'{'9' * 79}…' is not the name of a run. Pick a run from the list.",
    "/etc": "'/etc' is not the name of a run. Pick a run from the list.",
}


def every_text(at: AppTest) -> str:
    blocks = [*at.error, *at.info, *at.warning, *at.caption, *at.markdown, *at.subheader]
    return "\n".join(str(block.value) for block in blocks)


@pytest.mark.parametrize(
    "name", list(HOSTILE_RUN_NAMES), ids=["dotdot", "dot", "300-chars", "non-ascii", "huge", "abs"]
)
def test_a_hostile_run_link_gets_one_line_and_never_a_server_path(runs_dir, name):
    at = open_page(name)
    assert [error.value for error in at.error] == [HOSTILE_RUN_NAMES[name]]
    assert not [sub for sub in at.subheader if sub.value.startswith("Run ")]
    assert str(runs_dir) not in every_text(at)


def fake_run(runs_dir: Path, name: str, state: str = "finished", config: dict | None = None) -> Path:
    folder = runs_dir / name
    folder.mkdir(parents=True)
    write_config(
        folder,
        config
        or {
            "timm_name": "vit_small_patch14_dinov2",
            "weights": "bundled",
            "mode": "probe",
            "labels": ["a", "b"],
        },
    )
    # A running run needs a live worker: this test's own process stands in for it.
    write_status(folder, RunStatus(state, pid=os.getpid() if state == "running" else None))
    return folder


def test_an_open_run_names_its_folder_not_its_server_path(runs_dir):
    folder = fake_run(runs_dir, "20250101-000000-vit-probe-aaaaaa")
    at = open_page(folder.name)
    assert f"run `{folder.name}`" in captions(at)
    assert str(runs_dir) not in every_text(at)


def test_a_broken_run_is_listed_as_broken_with_its_reason(runs_dir):
    folder = runs_dir / "20250101-000000-vit-probe-broken"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{ not json")
    write_status(folder, RunStatus("finished"))
    at = open_page()
    table = at.dataframe[0].value
    row = table[table["run"] == folder.name].iloc[0]
    assert row["state"] == "broken"
    assert row["problem"].startswith(f"Run {folder.name}: config.json")
    assert any(
        warning.value.startswith(
            f"1 broken run (it cannot be opened as a model; delete it): Run {folder.name}: "
        )
        for warning in at.warning
    )
    at.button(key="finetune_open").click().run()
    assert not at.exception, at.exception
    assert any(error.value.startswith("This run is broken and cannot be shown: Run ") for error in at.error)


def test_the_folder_on_the_server_is_offered_only_inside_a_data_root(runs_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("VITVIZ_DATA_ROOT", raising=False)
    at = open_page()
    assert at.radio(key="finetune_data_source").options == [
        "built-in shapes",
        "built-in digits",
        "upload a .zip",
    ]

    root = tmp_path / "data"
    pets_folder(root)
    monkeypatch.setenv("VITVIZ_DATA_ROOT", str(root))
    at = open_server_folder("pets")
    assert not at.exception, at.exception
    assert "**pets** · 2 classes · 6 images" in captions(at)
    assert not at.button(key="finetune_start").disabled
    for outside in ("..", "/etc", str(tmp_path), "pets/../../"):
        at.text_input(key="finetune_folder").set_value(outside).run()
        assert not at.exception, at.exception
        assert [error.value for error in at.error] == ["There is no such folder in this app's data folder."]
        assert at.button(key="finetune_start").disabled
        assert str(tmp_path) not in every_text(at)


def test_a_visitor_trains_one_fine_tune_at_a_time(runs_dir):
    mine = fake_run(runs_dir, "20250101-000000-vit-probe-mine00", state="running")
    at = open_page()
    assert not at.button(key="finetune_start").disabled  # someone else's run: the server has room for 2
    at.session_state["finetune_my_runs"] = [mine.name]
    at.run()
    assert [info.value for info in at.info] == [
        f"You are already training run {mine.name}: one fine-tune at a time per visitor. Stop it or let it finish."
    ]
    assert at.button(key="finetune_start").disabled
    assert at.button(key="finetune_pair_start").disabled


def test_the_server_cap_refuses_a_start_with_a_clear_message(runs_dir, monkeypatch):
    monkeypatch.setenv("VITVIZ_MAX_RUNS", "1")
    fake_run(runs_dir, "20250101-000000-vit-probe-other0", state="running")
    at = open_page()
    assert (
        "The server is already training 1 of the 1 fine-tunes it runs at once; try again when one has "
        "finished or been stopped."
    ) in [info.value for info in at.info]
    assert at.button(key="finetune_start").disabled
    # The library's own check holds when two visitors press Start at once.
    from vitviz.finetune.trainer import FinetuneConfig
    from vitviz.finetune.worker import start_run
    from vitviz.runs import RunLimitError

    with pytest.raises(RunLimitError, match="already training 1 fine-tune,"):
        start_run(FinetuneConfig(model="test_vit", weights="random"), "builtin:shapes")


def test_a_pair_link_that_names_no_pair_gets_one_line(runs_dir):
    at = open_page(pair="../" + "x" * 300)
    assert [error.value for error in at.error] == ["There is no such pair job. Start a pair below."]


def test_a_vit_cnn_pair_trains_on_digits_in_the_background_and_opens_in_compare(runs_dir):
    at = open_page()
    at.radio(key="finetune_data_source").set_value("built-in digits").run()
    assert "builtin:digits** · 10 classes · 1797 images" in captions(at)
    at.number_input(key="finetune_max_images").set_value(40).run()
    at.number_input(key="finetune_epochs_probe").set_value(2).run()
    at.button(key="finetune_pair_start").click().run()
    assert not at.exception, at.exception
    job = at.session_state["finetune_open_pair"]
    assert at.query_params["pair"] in ([job], job)
    from vitviz.finetune.pair import pair_job_by_name

    pair_job = pair_job_by_name(job)
    # While it trains, the visitor may not start another.
    at.run()
    assert at.button(key="finetune_start").disabled
    wait_for(
        lambda: not pair_job.alive, 600, lambda: f"the pair job; its log:\n{pair_job.log()}", interval_s=1.0
    )
    pair = pair_job.pair()
    assert pair is not None, pair_job.log()
    assert {read_config(folder)["timm_name"] for folder in pair.runs.values()} == {
        "vit_small_patch14_dinov2",
        "tf_efficientnet_lite0",
    }
    # The same settings for both sides.
    settings = [read_config(folder)["hyperparameters"] for folder in pair.runs.values()]
    assert settings[0] == settings[1] and settings[0]["epochs"] == 2

    at.run()
    assert not at.exception, at.exception
    assert [success.value for success in at.success] == [
        f"Both runs finished: the pair opens in Compare — pick run {pair.vit.name} and run "
        f"{pair.cnn.name} as its two models (10 classes, data builtin:digits)."
    ]
    bars = [bar.text for bar in at.get("progress")]
    assert any(text.startswith(f"VIT vit_small_patch14_dinov2 · run {pair.vit.name}: ") for text in bars)
    assert any(text.startswith(f"CNN tf_efficientnet_lite0 · run {pair.cnn.name}: ") for text in bars)


def test_digit_classes_stay_categories_on_the_confusion_matrix():
    from vitviz.figures.finetune import class_counts_figure, confusion_figure

    labels = [str(digit) for digit in range(10)]
    figure = confusion_figure(np.eye(10, dtype=int), labels)
    assert figure.layout.xaxis.type == figure.layout.yaxis.type == "category"
    assert class_counts_figure(dict.fromkeys(labels, 3)).layout.xaxis.type == "category"


def test_a_validation_prediction_naming_a_missing_image_gets_a_line_not_a_key_error(runs_dir):
    folder = hand_made_run(runs_dir)
    missing = {"key": "circle/999.png", "label": 0, "predicted": 1, "probability": 0.9}
    (folder / "val_predictions.json").write_text(json.dumps([missing]))
    at = open_page(folder.name)
    assert "circle/999.png: no longer readable" in captions(at)
    assert [warning.value for warning in at.warning][-1] == (
        "The validation image 'circle/999.png' is not among the run's images any more: no attention "
        "to compare."
    )


def test_a_class_folder_whose_name_is_not_utf8_is_skipped_and_listed(runs_dir, tmp_path, monkeypatch):
    root = tmp_path / "data"
    # The page caches a folder's summary by its name for a minute: a name no other test uses.
    pets_folder(root, "pets-and-cafe")
    odd = os.fsencode(root / "pets-and-cafe") + b"/caf\xe9"  # Latin-1 "café"
    os.mkdir(odd)
    Path(os.fsdecode(odd + b"/0.png")).write_bytes(png((0, 200, 0)))
    monkeypatch.setenv("VITVIZ_DATA_ROOT", str(root))
    at = open_server_folder("pets-and-cafe")
    assert not at.exception, at.exception
    assert "**pets-and-cafe** · 2 classes · 6 images" in captions(at)
    assert [expander.label for expander in at.expander] == [
        "1 files skipped (not images, or outside a class folder)"
    ]
    assert "caf\ufffd/0.png (its name is not UTF-8 text)" in at.code[0].value


def test_a_10000_class_zip_is_summarised_at_once_and_its_counts_paged(runs_dir):
    at = open_page()
    at.radio(key="finetune_data_source").set_value("upload a .zip").run()
    archive = class_folder_zip(classes=10_000, per_class=2)
    started = time.monotonic()
    at.file_uploader(key="finetune_upload").set_value(("many.zip", archive, "application/zip")).run()
    seconds = time.monotonic() - started
    assert not at.exception, at.exception
    assert "**many.zip** · 10000 classes · 20000 images · split: 10000 train / 10000 validation images" in (
        captions(at)
    )
    # The split alone took 10.6 s here (a pass over every image per class); the check takes ~1.5 s.
    assert seconds < 8, seconds
    chart = sent_spec(at.get("plotly_chart")[0])
    assert len(chart["data"][0]["x"]) == 50
    assert chart["layout"]["title"]["text"].endswith("classes 1–50 of 10,000")
    at.number_input(key="finetune_counts_page").set_value(200).run()
    chart = sent_spec(at.get("plotly_chart")[0])
    assert chart["data"][0]["x"][-1] == "class09999"


def test_a_run_whose_config_asks_for_4096_pixels_gets_a_message_instead_of_a_huge_allocation(runs_dir):
    from tests.support.run_folders import TINY_RUN_CONFIG, hand_made_run

    config = {**TINY_RUN_CONFIG, "build_args": {"img_size": [4096, 4096]}}  # within the schema
    folder = hand_made_run(runs_dir, config=config)
    mistake = {"key": "circle/000.png", "label": 0, "predicted": 1, "probability": 0.6}
    (folder / "val_predictions.json").write_text(json.dumps([mistake]))
    at = open_page(folder.name)
    errors = [error.value for error in at.error]
    assert any(
        error.startswith(
            "Cannot load the models to compare: test_vit at 4096 × 4096 px (width × height) needs about "
        )
        and "(VITVIZ_VISITOR_MODEL_BYTES)" in error
        for error in errors
    ), errors


def test_only_the_session_that_started_a_run_gets_its_stop_and_delete_buttons(runs_dir):
    from vitviz.runs import owner_key

    config = {"timm_name": "test_vit", "weights": "random", "mode": "probe", "labels": []}
    folder = fake_run(
        runs_dir, "20250101-000000-vit-probe-theirs", "running", {**config, "owner": owner_key("a")}
    )
    for token, owns in (("b", False), ("a", True)):
        at = open_page(folder.name, session={"finetune_owner_token": token})
        keys = {button.key for button in at.button}
        assert ("finetune_stop" in keys) is owns and ("finetune_delete" in keys) is owns
        refusals = [
            text
            for text in (captions(at), *(block.value for block in at.markdown))
            if "Only the visitor" in text
        ]
        assert bool(refusals) is not owns, refusals


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("x" * 5000, "A run name has at most 60 characters; this one has 5,000."),
        ("/etc/passwd", "not a path"),
    ],
)
def test_a_run_name_too_long_or_a_path_gets_a_clear_message_and_start_waits(runs_dir, typed, says):
    at = open_page()
    at.text_input(key="finetune_run_title").set_value(typed).run()
    assert not at.exception, at.exception
    assert [error.value for error in at.error if says in error.value], [error.value for error in at.error]
    assert at.button(key="finetune_start").disabled
    at.text_input(key="finetune_run_title").set_value("shapes, first try").run()
    assert not at.error and not at.button(key="finetune_start").disabled


def test_a_named_run_is_listed_picked_and_headed_by_its_name_with_its_folder_in_the_details(runs_dir):
    long_title = "a rather long name for a probe of the shapes, third try"
    folder = hand_made_run(runs_dir, config={**TINY_RUN_CONFIG, "title": long_title})
    at = open_page()
    assert list(at.dataframe[0].value["run"]) == [long_title]
    short = long_title[:31] + "…"
    assert at.selectbox(key="finetune_run_pick").options == [short]
    assert f"run: {short} (test_vit, probe)" in at.selectbox(key="finetune_model").options
    at.selectbox(key="finetune_model").select(folder.name).run()
    assert not at.exception, at.exception
    weights = next(caption for caption in at.sidebar.caption if caption.value.startswith("Weights:"))
    assert f"fine-tuned run {short} (probe from random weights)" in weights.value
    assert "test_vit · probe · builtin:shapes · " in weights.value and folder.name in weights.value
    assert weights.help == long_title
    at.button(key="finetune_open").click().run()
    assert not at.exception, at.exception
    assert f"Run {short}" in [header.value for header in at.subheader]
