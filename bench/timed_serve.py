"""`make run`'s launcher, with every script run of the server timed: for `bench/interactions.py`.

Each run (a whole page, or a fragment's rerun alone) appends one line to the file named by
`VITVIZ_RUN_TIMES`: the wall-clock time it ended, `full` or `fragment`, and its seconds from the
start of the run to its end, Streamlit's post-run collection (`runner.postScriptGC`) included. That
is the server's side of an interaction, measured where it happens rather than re-enacted.

    VITVIZ_RUN_TIMES=/tmp/runs.txt python -m bench.timed_serve [streamlit run options]
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

RUN_TIMES = "VITVIZ_RUN_TIMES"


def time_script_runs(path: Path) -> None:
    """Wraps Streamlit's ScriptRunner so that each run appends its kind and duration to `path`."""
    from streamlit.runtime.scriptrunner.script_runner import ScriptRunner

    run_script = ScriptRunner._run_script
    lock = threading.Lock()

    def timed(self: ScriptRunner, rerun_data: object) -> None:
        start = time.perf_counter()
        try:
            run_script(self, rerun_data)
        finally:
            seconds = time.perf_counter() - start
            kind = "fragment" if getattr(rerun_data, "fragment_id_queue", None) else "full"
            with lock, path.open("a") as log:
                log.write(f"{time.time():.6f} {kind} {seconds:.6f}\n")

    ScriptRunner._run_script = timed


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pages.views import serve

    time_script_runs(Path(os.environ[RUN_TIMES]))
    serve.main(sys.argv[1:])


if __name__ == "__main__":
    main()
