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

from vitviz.roots import (
    RUNS_DIR_ENV,
    runs_root,
)
from vitviz.runs.files import (
    RunModel,
    append_metrics,
    describe_run,
    free_run_data,
    process_alive,
    read_config,
    read_log_tail,
    read_metrics,
    read_run_model,
    read_status,
    read_val_predictions,
    remove_temporary_files,
    request_stop,
    save_model,
    save_state_dict,
    stop_requested,
    write_config,
    write_status,
    write_val_predictions,
)
from vitviz.runs.folder import (
    OWNER_ENV,
    RunSummary,
    active_runs,
    check_owner,
    delete_run,
    is_run_folder,
    list_runs,
    new_run_folder,
    owned_by,
    owner_key,
    run_folder_by_name,
)
from vitviz.runs.limits import (
    DEFAULT_RUN_DISK_BYTES,
    RUN_DISK_ENV,
    check_disk_room,
    folder_bytes,
    run_disk_limit,
)
from vitviz.runs.safe_io import (
    read_tail,
    write_json_atomic,
)
from vitviz.runs.schema import (
    CONFIG_FILE,
    DATA_FOLDER,
    LABELS_FILE,
    LOG_FILE,
    MAX_LABEL_CHARS,
    MAX_LABELS,
    MAX_RUN_NAME_CHARS,
    METRICS_FILE,
    MODEL_FILE,
    STATUS_FILE,
    STOP_FILE,
    UPLOAD_FILE,
    VAL_PREDICTIONS_FILE,
    WORKER_PID_FILE,
    RunError,
    RunState,
    RunStatus,
    validate_run_config,
)
from vitviz.runs.slots import (
    DEFAULT_MAX_JOBS,
    DEFAULT_MAX_RUNS,
    JOB_NAME,
    JOBS_FOLDER,
    MAX_JOBS_ENV,
    MAX_RUNS_ENV,
    PAIR_JOB_PID_FILE,
    PAIR_JOB_RUNS_FILE,
    PAIR_JOBS_FOLDER,
    JobLimitError,
    RunLimitError,
    background_job_count,
    background_job_slot,
    job_folder_by_name,
    max_background_jobs,
    max_concurrent_runs,
    start_lock,
    training_count,
    training_slot,
)

__all__ = [
    "CONFIG_FILE",
    "DATA_FOLDER",
    "DEFAULT_MAX_JOBS",
    "DEFAULT_MAX_RUNS",
    "DEFAULT_RUN_DISK_BYTES",
    "JOBS_FOLDER",
    "JOB_NAME",
    "LABELS_FILE",
    "LOG_FILE",
    "MAX_JOBS_ENV",
    "MAX_LABELS",
    "MAX_LABEL_CHARS",
    "MAX_RUNS_ENV",
    "MAX_RUN_NAME_CHARS",
    "METRICS_FILE",
    "MODEL_FILE",
    "OWNER_ENV",
    "PAIR_JOBS_FOLDER",
    "PAIR_JOB_PID_FILE",
    "PAIR_JOB_RUNS_FILE",
    "RUNS_DIR_ENV",
    "RUN_DISK_ENV",
    "STATUS_FILE",
    "STOP_FILE",
    "UPLOAD_FILE",
    "VAL_PREDICTIONS_FILE",
    "WORKER_PID_FILE",
    "JobLimitError",
    "RunError",
    "RunLimitError",
    "RunModel",
    "RunState",
    "RunStatus",
    "RunSummary",
    "active_runs",
    "append_metrics",
    "background_job_count",
    "background_job_slot",
    "check_disk_room",
    "check_owner",
    "delete_run",
    "describe_run",
    "folder_bytes",
    "free_run_data",
    "is_run_folder",
    "job_folder_by_name",
    "list_runs",
    "max_background_jobs",
    "max_concurrent_runs",
    "new_run_folder",
    "owned_by",
    "owner_key",
    "process_alive",
    "read_config",
    "read_log_tail",
    "read_metrics",
    "read_run_model",
    "read_status",
    "read_tail",
    "read_val_predictions",
    "remove_temporary_files",
    "request_stop",
    "run_disk_limit",
    "run_folder_by_name",
    "runs_root",
    "save_model",
    "save_state_dict",
    "start_lock",
    "stop_requested",
    "training_count",
    "training_slot",
    "validate_run_config",
    "write_config",
    "write_json_atomic",
    "write_status",
    "write_val_predictions",
]
