"""The pages' typed boxes and links under AppTest: a box takes a timm name, a run's name or a file
relative to the data root, nothing else; a run is named, never given as a path, in links, titles,
captions, downloads and logs."""

from pathlib import Path

import pytest
import safetensors.torch
import torch
from streamlit.testing.v1 import AppTest

from tests.support.run_folders import dead_looking_run, folder_snapshot, hand_made_run
from tests.support.sent_charts import sent_spec
from vitviz.export import slug
from vitviz.models import RUN_WEIGHTS
from vitviz.runs import RunError, list_runs
from vitviz.serving import DATA_ROOT_ENV

APP = str(Path(__file__).resolve().parent.parent / "app.py")
OTHER_MODEL = "other timm model…"  # pages.views.ui.pickers.OTHER_MODEL
WEIGHTS_FILE = "file on the server…"  # pages.views.ui.pickers.WEIGHTS_FILE


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A runs folder with one finished run, a data root with a weights file, and a secret place
    beside them holding a run folder and a weights file."""
    runs = tmp_path / "runs"
    run = hand_made_run(runs)
    data = tmp_path / "data"
    data.mkdir()
    safetensors.torch.save_file({"w": torch.zeros(2)}, data / "inside.safetensors")
    secret = tmp_path / "secret"
    secret.mkdir()
    safetensors.torch.save_file({"w": torch.zeros(2)}, secret / "outside.safetensors")
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(runs))
    monkeypatch.setenv(DATA_ROOT_ENV, str(data))
    return {"tmp": tmp_path, "runs": runs, "run": run, "data": data, "secret": secret}


def open_page(page: str, **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    for name, value in query.items():
        at.query_params[name] = value
    at.switch_page(page)
    at.run()
    assert not at.exception, [element.value for element in at.exception]
    return at


def texts(at: AppTest, *kinds: str) -> list[str]:
    kinds = kinds or ("error", "warning", "info", "caption", "markdown", "code")
    return [str(element.value) for kind in kinds for element in at.get(kind)]


def without_paths(at: AppTest, *paths: Path, typed: tuple[str, ...] = ()) -> None:
    """No text on the page names these paths, except where it quotes what the visitor typed."""
    for text in texts(at):
        for quoted in typed:
            text = text.replace(quoted, "")
        for path in paths:
            assert str(path) not in text, text


def type_model(at: AppTest, key: str, text: str) -> None:
    at.selectbox(key=f"{key}_model").set_value(OTHER_MODEL).run()
    at.text_input(key=f"{key}_model_name").input(text).run()


def type_weights(at: AppTest, key: str, text: str) -> None:
    at.selectbox(key=f"{key}_weights").set_value(WEIGHTS_FILE).run()
    at.text_input(key=f"{key}_weights_path").input(text).run()


# --------------------------------------------------------------------------------------------
# Fine-tune: Start trains only from a timm name, a run's name, or a weights file in the data root
# --------------------------------------------------------------------------------------------


@pytest.fixture
def started(monkeypatch) -> list:
    """Every config the Fine-tune page hands to start_run; no worker is started."""
    from pages.views.finetune import jobs as finetune

    calls = []

    def record(config, data, **options):
        calls.append(config)
        raise RunError("Not started: a test recorded this start.")

    monkeypatch.setattr(finetune, "start_run", record)
    return calls


def start_with(at: AppTest) -> str:
    """Presses Start; the one error line the page then shows."""
    at.button(key="finetune_start").click().run()
    assert not at.exception, [element.value for element in at.exception]
    errors = texts(at, "error")
    assert len(errors) == 1, errors
    return errors[0]


def test_finetune_never_starts_from_a_run_folder_outside_the_runs_folder(server, started):
    outside = dead_looking_run(server["secret"], with_model=True)
    at = open_page("pages/finetune.py")
    type_model(at, "finetune", str(outside))
    refused_outside = start_with(at)
    type_model(at, "finetune", str(server["secret"] / "no-such-run"))
    refused_missing = start_with(at)
    assert started == [], "the worker was handed a folder outside the runs folder"
    assert refused_outside == refused_missing
    assert [run.name for run in list_runs()] == [server["run"].name]
    without_paths(at, server["tmp"])


def test_finetune_starts_from_a_run_picked_by_its_name(server, started):
    at = open_page("pages/finetune.py")
    at.selectbox(key="finetune_model").set_value(server["run"].name).run()
    at.button(key="finetune_start").click().run()
    assert [(config.model, config.weights) for config in started] == [(server["run"].name, RUN_WEIGHTS)]


def test_finetune_weights_files_are_read_relative_to_the_data_root_only(server, started):
    at = open_page("pages/finetune.py")
    type_model(at, "finetune", "test_vit")
    type_weights(at, "finetune", "inside.safetensors")
    start_with(at)  # the recording start_run's line
    assert [config.weights for config in started] == [str((server["data"] / "inside.safetensors").resolve())]
    type_weights(at, "finetune", str(server["secret"] / "outside.safetensors"))
    refused_outside = start_with(at)
    type_weights(at, "finetune", "missing.safetensors")
    refused_missing = start_with(at)
    assert len(started) == 1, "a weights file outside the data root went to the worker"
    assert refused_outside == refused_missing
    without_paths(at, server["tmp"])


def test_a_failed_runs_worker_log_names_paths_relative_to_the_run(server):
    failed = hand_made_run(
        server["runs"], "20250101-000000-test_vit-probe-failed", status={"state": "failed", "error": "x"}
    )
    (failed / "worker.log").write_text(
        f"error: [Errno 17] File exists: '{failed}/data/cats/1.png'\n"
        f'  File "{Path(__file__).resolve()}", line 1, in <module>\n'
    )
    at = open_page("pages/finetune.py", run=failed.name)
    log = "\n".join(texts(at, "code"))
    assert "File exists: 'data/cats/1.png'" in log, log
    assert f"…/{Path(__file__).name}" in log, log
    without_paths(at, server["tmp"], Path(__file__).parent)


# --------------------------------------------------------------------------------------------
# Compare and Explore: a box's answer is the same for outside and missing, and nothing changes
# --------------------------------------------------------------------------------------------


def slot_errors(at: AppTest) -> dict[int, str]:
    """Each failing slot's reason, by slot number, without the slot's own label."""
    errors = {}
    for text in texts(at, "error"):
        if text.startswith("Model "):
            errors[int(text[6])] = text.split("): ", 1)[1]
    return errors


def test_compare_model_boxes_answer_alike_for_an_outside_run_and_a_missing_path(server):
    outside = dead_looking_run(server["secret"])  # a reader would settle it
    before = folder_snapshot(outside)
    at = open_page("pages/compare.py")
    type_model(at, "compare_1", str(outside))
    type_model(at, "compare_2", str(server["secret"] / "no-such-run"))
    errors = slot_errors(at)
    assert set(errors) == {1, 2} and errors[1] == errors[2], errors
    assert folder_snapshot(outside) == before, "a folder outside the runs folder was changed"
    without_paths(at, server["tmp"], typed=(str(outside), str(server["secret"] / "no-such-run")))


def test_compare_weights_boxes_answer_alike_for_a_system_file_and_a_missing_one(server):
    at = open_page("pages/compare.py")
    for slot, text in ((1, "/etc/passwd"), (2, "passwd")):
        at.selectbox(key=f"compare_{slot}_model").set_value("vit_small_patch14_dinov2").run()
        type_weights(at, f"compare_{slot}", text)
    errors = slot_errors(at)
    assert set(errors) == {1, 2} and errors[1] == errors[2], errors
    without_paths(at, server["tmp"], Path("/etc"))


def test_explores_model_box_does_not_tell_a_run_from_a_missing_name(server):
    unfinished = dead_looking_run(server["runs"], "20250101-000000-test_vit-probe-unfinished")
    answers = []
    for text in (
        str(server["run"]),  # a run's path, even inside the runs folder
        str(server["runs"] / "missing"),
        unfinished.name,
        "20250101-000000-no-such-run",
    ):
        at = open_page("pages/explore.py")
        type_model(at, "explore", text)
        answers.append(texts(at, "error"))
        without_paths(at, server["tmp"])
    assert all(answer == answers[0] and len(answer) == 1 for answer in answers), answers


# --------------------------------------------------------------------------------------------
# A run is a name: links, titles, captions and downloads
# --------------------------------------------------------------------------------------------


@pytest.fixture
def download_names(monkeypatch) -> list[str]:
    """The file name of every download button the pages draw."""
    from pages.views.ui import charts

    names = []
    real = charts.export_filename

    def record(*arguments):
        names.append(real(*arguments))
        return names[-1]

    monkeypatch.setattr(charts, "export_filename", record)
    return names


def figure_titles(at: AppTest) -> list[str]:
    titles = []
    for chart in at.get("plotly_chart"):
        layout = sent_spec(chart).get("layout", {})
        titles.append(str(layout.get("title", {}).get("text", "")))
        titles += [str(note.get("text", "")) for note in layout.get("annotations", [])]
    return titles


def test_a_run_picked_in_explore_is_named_in_its_link_titles_and_downloads(server, download_names):
    name = server["run"].name
    at = open_page("pages/explore.py")
    download_names.clear()  # those of the model the page opened on
    at.selectbox(key="explore_model").set_value(name).run()
    assert not at.exception, [element.value for element in at.exception]
    assert at.query_params["model"] in ([name], name)
    assert "weights" not in at.query_params
    titles = figure_titles(at)
    assert any("test_vit · probe · shapes" in title for title in titles), titles  # the run's own title
    assert download_names and all(file.startswith(f"{slug(name)}__run__") for file in download_names), (
        download_names
    )
    for text in [*titles, *download_names, *texts(at)]:
        assert str(server["runs"]) not in text and "tmp-" not in text, text

    reopened = open_page("pages/explore.py", model=name)
    assert reopened.selectbox(key="explore_model").value == name
    assert not [text for text in texts(reopened, "info") if "defaults used" in text]


def test_compare_names_runs_by_name_in_captions_titles_and_its_link(server):
    name = server["run"].name
    at = open_page("pages/compare.py")
    for slot in (1, 2):
        at.selectbox(key=f"compare_{slot}_model").set_value(name).run()
    assert not at.exception, [element.value for element in at.exception]
    assert not texts(at, "error"), texts(at, "error")
    assert any("1. test_vit · probe · shapes" in text for text in texts(at, "caption")), texts(at, "caption")
    assert any("test_vit · probe · shapes" in title for title in figure_titles(at))
    assert at.query_params["model1"] in ([name], name)
    without_paths(at, server["runs"])
    reopened = open_page("pages/compare.py", model1=name)
    assert reopened.selectbox(key="compare_1_model").value == name
