"""Run folders: what a fine-tune writes to disk, and reading, listing, reopening and deleting runs.

A served app meets run folders that were hand-edited, half-written or left by a killed worker.
Every reader here checks what it reads against what the worker writes (known keys, types, sizes)
and turns anything else into one `RunError` line; listings show such a run as broken instead.
Pages name runs by their folder name only (`run_folder_by_name`), never by a path.

One module per concern, this one their public face:

- `safe_io`: plain-file-only opens and bounded reads (a FIFO or /dev/zero is never read forever);
- `schema`: the files a run folder holds and the checks every reader applies to them;
- `limits`: the disk one run may hold;
- `files`: each file of a run folder, written and read back checked (status, config, metrics, model);
- `folder`: the runs folder: a run by its name, new runs, listing, deleting, owners;
- `slots`: how many fine-tunes and background jobs run at once on the server.

Where the runs folder is comes from `vitviz.roots`.
"""

from __future__ import annotations

from vitviz.roots import RUNS_DIR_ENV, runs_root
from vitviz.runs import files, folder, limits, schema, slots
from vitviz.runs.files import *  # noqa: F403 - this package's face re-exports each concern's public names
from vitviz.runs.folder import *  # noqa: F403
from vitviz.runs.limits import *  # noqa: F403
from vitviz.runs.safe_io import read_tail, write_json_atomic
from vitviz.runs.schema import *  # noqa: F403
from vitviz.runs.slots import *  # noqa: F403

__all__ = [  # the concerns' own lists, so that a name is listed once, where it is defined
    "RUNS_DIR_ENV",
    "read_tail",
    "runs_root",
    "write_json_atomic",
    *files.__all__,
    *folder.__all__,
    *limits.__all__,
    *schema.__all__,
    *slots.__all__,
]
