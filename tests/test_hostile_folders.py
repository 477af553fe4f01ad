"""Every page opens beside run folders no worker writes (odd names, a FIFO): they are listed as broken."""

import time

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.browser import REPO
from tests.support.run_folders import hand_made_run, odd_run_folders, released_after

PAGES = ["pages/explore.py", "pages/anatomy.py", "pages/compare.py", "pages/finetune.py"]
# A page beside the odd folders opens in a few seconds here; one that waits on the FIFO is let go
# after this long, and fails on its time.
PAGE_SECONDS = 40.0


@pytest.fixture
def odd_runs(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(root))
    monkeypatch.delenv("VITVIZ_DATA_ROOT", raising=False)
    good = hand_made_run(root)
    odd = odd_run_folders(root)
    with released_after(odd["FIFO status.json"] / "status.json", PAGE_SECONDS):
        yield good, odd


def open_page(page: str) -> AppTest:
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=3 * PAGE_SECONDS)
    app.switch_page(page)
    started = time.monotonic()
    app.run()
    assert time.monotonic() - started < PAGE_SECONDS, "the page waited on the FIFO"
    assert not app.exception, [element.value for element in app.exception]
    return app


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_beside_odd_run_folders(page, odd_runs):
    assert open_page(page).title


def test_the_finetune_page_lists_odd_run_folders_as_broken_with_why(odd_runs):
    """Odd names are broken runs; the run whose status.json is a FIFO is a failed run."""
    good, _ = odd_runs
    app = open_page("pages/finetune.py")
    broken = next(warning.value for warning in app.warning if "broken run" in warning.value)
    assert broken.startswith("2 broken runs")
    assert "its folder name is not UTF-8 text" in broken
    assert "its folder name is 200 characters long" in broken
    # Two unnamed runs alike are told apart by their folders' names.
    assert f"test_vit · probe · shapes · {good.name}" in app.selectbox(key="finetune_run_pick").options
    table = app.dataframe[0].value
    fifo_row = table[table["folder"] == "20250101-000000-test_vit-probe-fifo000"].iloc[0]
    assert fifo_row["state"].startswith("failed")
