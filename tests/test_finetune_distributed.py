"""The same trainer under torchrun: two CPU processes with gloo and DDP; rank 0 writes the run folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vitviz.models import load_model
from vitviz.runs import read_config, read_metrics, read_status

REPO = Path(__file__).resolve().parent.parent


def torchrun(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "vitviz", "finetune", "--data", "builtin:shapes", "--model", "test_vit",
        "--weights", "random", "--max-images", "20", "--batch-size", "4", "--device", "cpu",
        "--out", str(out), *args,
    ]  # fmt: skip
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    ("mode", "extra"),
    [("last-k", ["--last-k", "1", "--epochs", "2"]), ("probe", ["--epochs", "3"])],
)
def test_two_process_torchrun_finishes_and_rank_0_writes_the_run(tmp_path, mode, extra):
    out = tmp_path / f"run-{mode}"
    result = torchrun(out, "--mode", mode, *extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "on 2 process(es)" in result.stdout
    # Only rank 0 prints and writes: one summary line, one metrics line per epoch.
    assert result.stdout.count("finished:") == 1
    epochs = int(extra[extra.index("--epochs") + 1])
    rows = read_metrics(out)
    assert [row["epoch"] for row in rows] == list(range(1, epochs + 1))
    config = read_config(out)
    assert config["world_size"] == 2 and config["mode"] == mode
    assert read_status(out).state == "finished"
    # Each rank validated its own share; rank 0 gathered all five validation images.
    predictions = json.loads((out / "val_predictions.json").read_text())
    assert len(predictions) == 5 and len({p["key"] for p in predictions}) == 5
    assert {p["key"].split("/")[0] for p in predictions} == set(config["labels"])
    reloaded = load_model(str(out), device="cpu")
    assert reloaded.facts.num_classes == 5
