"""Background jobs as a page follows them, for page tests: one swapped for a worker that died."""

from __future__ import annotations

import os
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.support.polling import wait_for
from vitviz.jobs import cancel_job
from vitviz.runs import background_job_count

__all__ = ["make_worker_silent"]


def make_worker_silent(at: AppTest, folder: Path) -> None:
    """Stops the page's one running job (and waits for its worker to exit, freeing the server's job
    slot other tests need) and hands the page, in its place, the folder of a worker that died
    without a word: a status file unchanged for ten minutes (`background.SILENT_S`)."""
    ((key, (running, what)),) = at.session_state["background_jobs"].items()
    cancel_job(running)  # the real worker stops at its next unit, and frees its slot as it exits
    wait_for(lambda: background_job_count() == 0, 120, "the cancelled worker to exit")
    folder.mkdir()
    (folder / "status.json").write_text("{}")
    ten_minutes_ago = time.time() - 600
    os.utime(folder / "status.json", (ten_minutes_ago, ten_minutes_ago))
    at.session_state["background_jobs"] = {key: (folder, what)}
