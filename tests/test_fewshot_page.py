"""The Fine-tune page's few-shot option under AppTest: a finished table renders, bad input and
hostile links get one line, and a real job runs in the background and fills the table."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.polling import wait_for
from tests.support.sent_charts import sent_spec
from vitviz.finetune.fewshot_jobs import FEW_SHOT_FILE, FEW_SHOT_JOBS_FOLDER, few_shot_job_by_name

PAGE = "pages/finetune.py"
REPO = Path(__file__).resolve().parent.parent
FINISHED = {
    "data": "builtin:shapes",
    "classes": ["circle", "square", "triangle", "star", "cross"],
    "test_images": 60,
    "draws": 3,
    "shots": [1, 5],
    "models": {
        "vit_small_patch14_dinov2": [
            {"shots": 1, "mean": 0.5, "low": 0.4, "high": 0.6, "accuracies": [0.4, 0.5, 0.6], "ridge_strengths": [1, 1, 1]},
            {"shots": 5, "mean": 0.9, "low": 0.85, "high": 0.95, "accuracies": [0.85, 0.9, 0.95], "ridge_strengths": [1, 1, 1]},
        ],
        "tf_efficientnet_lite0": [
            {"shots": 1, "mean": 0.3, "low": 0.2, "high": 0.4, "accuracies": [0.2, 0.3, 0.4], "ridge_strengths": [1, 1, 1]},
            {"shots": 5, "mean": 0.7, "low": 0.6, "high": 0.8, "accuracies": [0.6, 0.7, 0.8], "ridge_strengths": [1, 1, 1]},
        ],
    },
    "feature_seconds": {"vit_small_patch14_dinov2": 12.5, "tf_efficientnet_lite0": 3.25},
    "fit_seconds": 0.05,
}  # fmt: skip


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(root))  # the few-shot process inherits it
    return root


def open_page(**query) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.switch_page(PAGE)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def test_a_finished_few_shot_job_shows_its_table_and_chart(runs_dir):
    folder = runs_dir / FEW_SHOT_JOBS_FOLDER / "20260101-120000-abcdef"
    folder.mkdir(parents=True)
    (folder / FEW_SHOT_FILE).write_text(json.dumps(FINISHED))
    at = open_page(fewshot=folder.name)
    table = at.dataframe[-1].value
    assert list(table.columns) == ["images per class", "vit_small_patch14_dinov2", "tf_efficientnet_lite0"]
    assert table.iloc[1].tolist() == [5, "90.0% (85.0%–95.0%)", "70.0% (60.0%–80.0%)"]
    caption = "\n".join(c.value for c in at.caption)
    assert "60 held-out images, 3 draws per count" in caption
    assert "vit_small_patch14_dinov2 12.5 s, tf_efficientnet_lite0 3.2 s" in caption
    chart = sent_spec(at.get("plotly_chart")[-1])
    assert [trace["name"] for trace in chart["data"]] == ["vit_small_patch14_dinov2", "tf_efficientnet_lite0"]
    assert chart["data"][0]["y"] == [0.5, 0.9]


@pytest.mark.parametrize("name", ["../../etc", "x" * 400, "20260101-120000-abcdef"])
def test_a_few_shot_link_that_names_no_job_gets_one_line(runs_dir, name):
    at = open_page(fewshot=name)
    errors = [error.value for error in at.error]
    assert errors == ["There is no such few-shot evaluation. Start one below."]
    assert str(runs_dir) not in errors[0]


def test_a_bad_shot_list_gets_a_message_and_no_start(runs_dir):
    at = open_page()
    at.text_input(key="finetune_shots").set_value("1, five").run()
    assert not at.exception
    assert any("shots must be whole numbers" in error.value for error in at.error)
    assert at.button(key="finetune_few_shot_start").disabled


@pytest.mark.slow
def test_a_few_shot_job_runs_in_the_background_and_fills_the_table(runs_dir):
    at = open_page()
    at.number_input(key="finetune_max_images").set_value(50).run()
    at.text_input(key="finetune_shots").set_value("1,3").run()
    at.number_input(key="finetune_draws").set_value(2).run()
    at.button(key="finetune_few_shot_start").click().run()
    assert not at.exception, at.exception
    name = at.query_params["fewshot"]
    name = name[0] if isinstance(name, list) else name
    job = few_shot_job_by_name(name)
    wait_for(lambda: not job.alive, what="the few-shot process to end", timeout_s=600)
    assert job.table() is not None, job.log_tail()[-2000:]
    at.run()
    table = at.dataframe[-1].value
    assert table["images per class"].tolist() == [1, 3]
    assert job.table()["data"] == "builtin:shapes" and job.table()["test_images"] == 10


def test_a_few_shot_job_takes_a_slot_of_the_one_server_wide_cap(runs_dir, monkeypatch):
    """Few-shot jobs are background jobs like head rankings: with every slot taken, none starts."""
    import subprocess
    import sys

    from vitviz.finetune.fewshot_jobs import FewShotRequest, start_few_shot
    from vitviz.runs import JobLimitError, background_job_count, background_job_slot

    monkeypatch.setenv("VITVIZ_MAX_JOBS", "1")
    request = FewShotRequest("builtin:shapes", (1,), 1, 20, 0.2, 0, "cpu")
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # a ranking's worker
    try:
        with background_job_slot() as hold_slot:
            hold_slot(busy.pid)
        with pytest.raises(JobLimitError, match="VITVIZ_MAX_JOBS"):
            start_few_shot(request)
        assert not (runs_dir / FEW_SHOT_JOBS_FOLDER).exists() or not any(
            (runs_dir / FEW_SHOT_JOBS_FOLDER).iterdir()
        )
    finally:
        busy.kill()
        busy.wait()
    job = start_few_shot(request)
    assert background_job_count() == 1
    wait_for(lambda: not job.alive, what="the few-shot job", timeout_s=300)
    wait_for(lambda: background_job_count() == 0, what="its slot to be free")
