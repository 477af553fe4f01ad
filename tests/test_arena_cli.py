"""`vitviz arena`: its JSON on one image and on a folder, its errors, and the same table under torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from vitviz.cli.main import main
from vitviz.finetune.trainer import one_cpu_thread
from vitviz.images import builtin_photo


@pytest.fixture(autouse=True)
def one_thread():
    """The arena's work is many small forwards: with two threads on this busy 2-core CPU they ran ~10× slower."""
    with one_cpu_thread():
        yield


REPO = Path(__file__).resolve().parent.parent
# A small ViT (160 px, 10 × 10 tokens) with seeded weights saved to a file: every process loads the same.
FAST = ["--model", "test_vit", "--methods", "rollout", "gradcam", "--steps", "3", "--road-percentiles", "50",
        "--random-orders", "2", "--device", "cpu"]  # fmt: skip
# Merged and single-process tables come from the same code on the same inputs, but in other processes
# (thread counts, kernels): their numbers are compared to this absolute tolerance.
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "test_vit.pth"
    torch.save(timm.create_model("test_vit").state_dict(), path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("arena images")
    builtin_photo("coffee").resize((180, 120)).save(folder / "coffee wide.png")
    (folder / "nested").mkdir()
    builtin_photo("rocket").save(folder / "nested" / "röcket.jpg")
    builtin_photo("astronaut").resize((100, 100)).save(folder / "astronaut.webp")
    (folder / "notes.txt").write_text("not an image")
    return folder


def arena_json(capsys, *args: str) -> dict:
    assert main(["arena", *args, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_json_on_one_image_lists_every_method_with_its_scores_and_rank(weights, folder, capsys):
    payload = arena_json(capsys, str(folder / "coffee wide.png"), *FAST, "--weights", str(weights))
    assert payload["images"] == ["coffee wide.png"] and payload["model"] == "test_vit"
    methods = payload["methods"]
    assert {row["method"] for row in methods} == {"rollout", "gradcam"}
    for row in methods:
        assert {"method", "deletion", "insertion", "road", "sanity", "rank"} <= set(row)
        assert 0.0 <= row["deletion"] <= 1.0 and 0.0 <= row["insertion"] <= 1.0
        assert -0.5 <= row["road"] <= 0.5 and (row["sanity"] is None or -1.0 <= row["sanity"] <= 1.0)
    assert sorted(row["rank"] for row in methods) == [1, 2]
    assert [row["rank"] for row in methods] == [1, 2]  # listed best first
    assert payload["verdict"].startswith("On this image, ")


def test_json_on_a_folder_takes_every_image_in_it_in_path_order(weights, folder, capsys):
    payload = arena_json(capsys, str(folder), *FAST, "--weights", str(weights), "--no-sanity")
    assert payload["images"] == ["astronaut.webp", "coffee wide.png", "nested/röcket.jpg"]
    assert payload["verdict"].startswith("Over these 3 images, ") and "not run" in payload["verdict"]
    assert all(row["sanity"] is None and len(row["spread"]["deletion"]) == 2 for row in payload["methods"])


def test_the_readable_table_ends_with_the_verdict(weights, folder, capsys):
    assert (
        main(["arena", str(folder / "astronaut.webp"), *FAST, "--weights", str(weights), "--no-sanity"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split()[:3] == ["rank", "method", "deletion"]
    assert lines[-2].startswith("random order: deletion ") and lines[-1].startswith("On this image, ")


@pytest.mark.parametrize(
    ("images", "extra", "words"),
    [
        (["no-such-file.png"], [], "no-such-file.png"),
        (["builtin:nope"], [], "builtin:photos"),
        (["IMAGE"], ["--random-orders", "1"], "at least 2 random orders"),
        (["IMAGE"], ["--methods", "chefer"], "Chefer"),
        (["IMAGE"], ["--steps", "1"], "--steps"),
        (["BAD_ZIP"], [], "zip"),
    ],
)
def test_bad_requests_are_one_line_errors(images, extra, words, weights, folder, tmp_path, capsys):
    (tmp_path / "bad.zip").write_bytes(b"PK not really")
    named = {"IMAGE": str(folder / "astronaut.webp"), "BAD_ZIP": str(tmp_path / "bad.zip")}
    args = [named.get(image, image) for image in images]
    command = ["arena", *args, "--model", "tf_efficientnet_lite0", "--steps", "3", "--device", "cpu", *extra]
    assert main(command) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and words in error and "\n" not in error


def test_two_torchrun_processes_merge_to_the_single_process_table(weights, folder, capsys):
    single = arena_json(capsys, str(folder), *FAST, "--weights", str(weights))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "vitviz", "arena", str(folder), *FAST, "--weights", str(weights), "--json"]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    printed = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # only rank 0 prints
    merged = json.loads(printed[0])
    assert merged["images"] == single["images"] and merged["targets"] == single["targets"]
    assert merged["verdict"] == single["verdict"]
    assert [row["method"] for row in merged["methods"]] == [row["method"] for row in single["methods"]]
    for mine, theirs in zip(merged["methods"], single["methods"], strict=True):
        assert mine["rank"] == theirs["rank"]
        for measure in ("deletion", "insertion", "road", "sanity"):
            assert mine[measure] == pytest.approx(theirs[measure], abs=TOLERANCE), measure
            assert mine["spread"].get(measure, [0, 0]) == pytest.approx(
                theirs["spread"].get(measure, [0, 0]), abs=TOLERANCE
            )
