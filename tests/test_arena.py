"""The arena: deletion/insertion against a hand-written oracle, the verdict from numbers, ranks and exports."""

import io
import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import vitviz.methods.faithfulness as faithfulness_module
import vitviz.methods.sanity as sanity_module
from tests.support.archives import png_bytes, zip_of
from tests.support.methods_helpers import count_maps
from tests.support.tiny_models import tiny_loaded
from vitviz.arena import (
    BAND_SDS,
    MAX_ARENA_IMAGES,
    MIN_BAND,
    ArenaImage,
    ArenaSettings,
    ArenaTable,
    ImageScores,
    MethodScores,
    arena_methods,
    arena_plan,
    arena_table,
    folder_images,
    run_arena,
    score_image,
    zip_images,
)
from vitviz.figures.arena import arena_csv, arena_figure, arena_maps_npz
from vitviz.finetune.safezip import UnsafeArchiveError
from vitviz.finetune.trainer import one_cpu_thread
from vitviz.jobs import JobSpec, decode_result, encode_result, read_job, run_job, start_job
from vitviz.methods import METHODS
from vitviz.methods.sanity import randomisation_stages
from vitviz.models import load_model
from vitviz.preprocess import image_view
from vitviz.progress import JobProgress


@pytest.fixture(autouse=True)
def one_thread():
    """The arena's work is many small forwards: with two threads on this busy 2-core CPU they ran ~10× slower."""
    with one_cpu_thread():
        yield


COARSE = ArenaSettings(fractions=(0.0, 0.25, 0.5, 0.75, 1.0), road_percentiles=(50,), random_orders=3)


def oracle_curves(model, pixels, salience, grid, cell, target, fractions):
    """Deletion and insertion areas computed here, patch by patch, independently of vitviz.methods.probes."""
    rows, cols = grid
    order = sorted(range(rows * cols), key=lambda patch: (-float(salience.flat[patch]), patch))
    deletion, insertion = [], []
    for fraction in fractions:
        count = round(fraction * rows * cols)
        deleted = pixels.clone()
        inserted = torch.zeros_like(pixels)  # zero in normalised space: the mean colour
        for patch in order[:count]:
            row, col = divmod(patch, cols)
            window = (
                slice(None),
                slice(None),
                slice(row * cell, (row + 1) * cell),
                slice(col * cell, (col + 1) * cell),
            )
            deleted[window] = 0.0
            inserted[window] = pixels[window]
        with torch.no_grad():
            deletion.append(float(model(deleted).softmax(-1)[0, target]))
            insertion.append(float(model(inserted).softmax(-1)[0, target]))

    def area(values):
        return sum(
            (fractions[i + 1] - fractions[i]) * (values[i] + values[i + 1]) / 2
            for i in range(len(values) - 1)
        )

    return area(deletion), area(insertion)


def test_deletion_and_insertion_areas_match_a_hand_written_oracle(tiny_models, cat):
    loaded = tiny_loaded(tiny_models, "vit")  # 64 px, a 4 × 4 grid of 16-px patches
    settings = ArenaSettings(
        fractions=COARSE.fractions, road_percentiles=(50,), random_orders=2, sanity=False
    )
    scores = score_image(loaded, cat, "cat", ["rollout", "gradcam"], settings)
    pixels = image_view(cat, loaded.facts, "crop").tensor
    with torch.no_grad():
        target = int(loaded.model(pixels).argmax(-1)[0])
    assert scores.target_index == target
    for method in scores.methods:
        assert method.map.shape == (4, 4)
        deletion, insertion = oracle_curves(
            loaded.model, pixels, method.map, (4, 4), 16, target, settings.fractions
        )
        # The same model on differently batched inputs: float32 matmuls may differ in the last bits.
        assert method.deletion == pytest.approx(deletion, abs=1e-6), method.method
        assert method.insertion == pytest.approx(insertion, abs=1e-6), method.method
    # The random baseline is a seeded permutation of the patches: the oracle on that order agrees too.
    permutation = np.random.default_rng(0).permutation(16)
    salience = np.empty(16)
    salience[permutation] = np.arange(16, 0, -1)  # most "salient" first = the permutation's order
    deletion, insertion = oracle_curves(
        loaded.model, pixels, salience, (4, 4), 16, target, settings.fractions
    )
    assert scores.random_deletion[0] == pytest.approx(deletion, abs=1e-6)
    assert scores.random_insertion[0] == pytest.approx(insertion, abs=1e-6)
    assert len(set(scores.random_deletion)) == 2  # two different random orders


def _method(name, deletion, insertion, road, sanity):
    return MethodScores(name, deletion, insertion, road, sanity, np.eye(3, dtype=np.float32))


def _image(name, methods, sanity_run=True):
    return ImageScores(
        image=name,
        target_index=1,
        target_label="one",
        methods=tuple(methods),
        random_deletion=(0.50, 0.52, 0.48, 0.50),
        random_insertion=(0.30, 0.32, 0.28, 0.30),
        random_road=(0.0, 0.01, -0.01, 0.0),
        sanity_run=sanity_run,
    )


def test_verdict_names_each_clause_only_where_the_numbers_bear_it_out():
    methods = [
        _method("saliency", 0.20, 0.80, 0.30, 0.95),  # the best numbers, but fails the sanity check
        _method("rollout", 0.50, 0.30, 0.0, 0.40),  # random's own means: like random everywhere
        _method("gradcam", 0.30, 0.60, 0.20, 0.20),
        _method("attention", 0.90, 0.05, -0.30, 0.10),  # worse than random everywhere
        _method("chefer", 0.25, 0.70, 0.25, -0.10),
        _method("fem", 0.30, 0.31, 0.20, 0.0),  # better on two, like random on insertion
    ]
    table = arena_table("m", True, [_image("cat", methods)])
    assert [row.method for row in table.rows] == [
        "chefer",
        "gradcam",
        "fem",
        "rollout",
        "attention",
        "saliency",
    ]
    assert [row.rank for row in table.rows] == [1, 2, 3, 4, 5, 6]
    assert table.verdict() == (
        "On this image, Chefer et al. relevance and Grad-CAM hold up best; Attention rollout scores like "
        "random order; Raw attention scores worse than random order; Saliency fails the sanity check."
    )
    # The band is 2 sample standard deviations of the four random orders.
    band = BAND_SDS * float(np.std([0.50, 0.52, 0.48, 0.50], ddof=1))
    assert table.rows[0].bands["deletion"] == pytest.approx(band)
    fem = next(row for row in table.rows if row.method == "fem")
    assert [fem.standing(measure) for measure in ("deletion", "insertion", "road")] == [
        "better",
        "like random",
        "better",
    ]
    payload = table.to_json()
    assert payload["methods"][-1] == {
        **payload["methods"][-1],
        "method": "saliency",
        "rank": 6,
        "sanity": 0.95,
    }
    assert payload["methods"][-1]["sanity_passed"] is False


def test_verdict_over_images_uses_medians_and_says_when_no_method_holds_up_or_sanity_was_not_run():
    first = [_method("gradcam", 0.30, 0.60, 0.20, None), _method("rollout", 0.50, 0.30, 0.0, None)]
    second = [_method("gradcam", 0.50, 0.30, 0.0, None), _method("rollout", 0.50, 0.30, 0.0, None)]
    third = [_method("gradcam", 0.51, 0.30, 0.0, None), _method("rollout", 0.50, 0.30, 0.0, None)]
    table = arena_table("m", True, [_image(name, methods, False) for name, methods in
                                     (("a", first), ("b", second), ("c", third))])  # fmt: skip
    gradcam = next(row for row in table.rows if row.method == "gradcam")
    assert gradcam.scores["deletion"].median == pytest.approx(0.50)
    assert (gradcam.scores["deletion"].low, gradcam.scores["deletion"].high) == pytest.approx((0.40, 0.505))
    assert table.verdict() == (
        "Over these 3 images, no method beats random order on all three scores; Grad-CAM and Attention "
        "rollout score like random order; the sanity check was not run."
    )
    assert table.to_json()["methods"][0]["sanity"] is None


def test_band_never_falls_below_its_floor():
    image = ImageScores("x", 0, "zero", (), (0.1, 0.1), (0.1, 0.1), (0.0, 0.0), True)
    assert image.band("deletion") == MIN_BAND


@pytest.fixture(scope="module")
def efficientnet():
    return load_model("tf_efficientnet_lite0", "bundled", "cpu")


def test_verdict_of_the_bundled_cnn_on_the_cat_matches_its_own_numbers(efficientnet, cat):
    scores = score_image(efficientnet, cat, "cat", ["gradcam", "eigencam", "layercam"], COARSE)
    assert scores.target_label.startswith("tiger cat") or scores.target_index in (281, 282, 285)
    table = arena_table(efficientnet.facts.name, True, [scores])
    expected = {"holds": [], "like": [], "worse": [], "fails": []}
    for row in table.rows:
        item = next(method for method in scores.methods if method.method == row.method)
        standings = []
        for measure, sign in (("deletion", -1), ("insertion", 1), ("road", 1)):
            random = np.asarray(getattr(scores, f"random_{measure}"))
            gain = sign * (getattr(item, measure) - random.mean())
            band = max(2 * random.std(ddof=1), 1e-3)
            standings.append("better" if gain > band else "worse" if gain < -band else "like")
        fails = item.sanity is not None and abs(item.sanity) > 0.9
        if fails:
            expected["fails"].append(row.title)
        if standings == ["better"] * 3 and not fails:
            expected["holds"].append(row.title)
        for word in ("like", "worse"):
            if standings == [word] * 3:
                expected[word].append(row.title)
    sentence = table.verdict()
    assert sentence.startswith("On this image, ")
    if expected["holds"]:
        assert " and ".join(expected["holds"][:2]) in sentence and "up best" in sentence
    else:
        assert "no method beats random order on all three scores" in sentence
    for key, words in (
        ("like", "like random order"),
        ("worse", "worse than random order"),
        ("fails", "sanity"),
    ):
        assert (words in sentence) == bool(expected[key]), (key, sentence)
        for title in expected[key]:
            assert title in sentence
    # Every method explained the same class and left a varying map.
    assert all(np.ptp(method.map) > 0 for method in scores.methods)
    # The exports carry the same table.
    csv_text = arena_csv(table)
    assert csv_text.splitlines()[1].startswith(f"1,{table.rows[0].title}")
    with np.load(io.BytesIO(arena_maps_npz(table))) as maps:
        assert sorted(maps.files) == sorted(f"{row.rank:02d}-{row.method}" for row in table.rows)
        assert np.array_equal(maps[f"01-{table.rows[0].method}"][0], table.rows[0].maps[0])
    figure = arena_figure(table)
    assert sentence[:60] in figure.layout.title.text.replace("<br>", " ")
    assert len(figure.data) == 1 + len(table.rows)


def test_fast_methods_by_default_and_the_slow_ones_on_request(efficientnet):
    fast = arena_methods(efficientnet)
    every = arena_methods(efficientnet, slow=True)
    assert "gradcam" in fast and "scorecam" not in fast and "integrated-gradients" not in fast
    assert set(every) - set(fast) == {name for name in every if METHODS[name].slow} != set()
    assert "rollout" not in every  # a CNN has no attention


def test_zip_images_are_read_in_memory_and_unsafe_archives_refused():
    archive = zip_of({"b/one.png": png_bytes((9, 9, 9)), "a.png": png_bytes(), "notes.txt": b"hello"})
    images = zip_images(archive)
    assert [image.name for image in images] == ["a.png", "b/one.png"]
    assert images[1].load().getpixel((0, 0)) == (9, 9, 9)
    with pytest.raises(UnsafeArchiveError):
        zip_images(zip_of({"../escape.png": png_bytes()}))
    with pytest.raises(UnsafeArchiveError):
        zip_images(b"not a zip")
    assert zipfile.is_zipfile(io.BytesIO(archive))


def test_folder_images_take_images_at_any_depth_and_leave_other_files_out(tmp_path):
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "ünï cödé.png").write_bytes(png_bytes())
    (tmp_path / "a.PNG").write_bytes(png_bytes((1, 2, 3)))
    (tmp_path / "readme.md").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(png_bytes())
    images = folder_images(tmp_path)
    assert [image.name for image in images] == ["a.PNG", "deep/er/ünï cödé.png"]
    assert images[0].load().getpixel((0, 0)) == (1, 2, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image"):
        folder_images(tmp_path / "empty")


@pytest.mark.parametrize("typed", ["x" * 5000, "a\x00b", "/no/such/folder"])
def test_a_typed_folder_that_cannot_be_one_is_refused_with_a_sentence(typed):
    """A 5,000-character name (too long for the file system: an OSError) or one with a NUL byte gets
    the same one-line refusal as a missing folder, the kind of error the Arena page shows."""
    with pytest.raises(ValueError, match="is not a folder on this machine"):
        folder_images(typed, shown_as="the typed folder")


def test_a_table_survives_the_json_a_job_writes_exactly(tiny_models, cat):
    loaded = tiny_loaded(tiny_models, "vit")
    settings = ArenaSettings(fractions=(0.0, 0.5, 1.0), road_percentiles=(50,), random_orders=2, sanity=False)
    table = run_arena(loaded, [ArenaImage("cat", lambda: cat)], ["rollout", "gradcam"], settings)
    again = decode_result(json.loads(json.dumps(encode_result(table))))
    assert isinstance(again, ArenaTable) and again.to_json() == table.to_json()
    assert again.text() == table.text() and again.random == table.random
    for row, before in zip(again.rows, table.rows, strict=True):
        assert row.maps[0].dtype == np.float32 and np.array_equal(row.maps[0], before.maps[0])
    whole = replace(settings, view="whole")
    assert (
        ArenaSettings.from_json(json.loads(json.dumps(whole.to_json()))) == settings
    )  # the job's view apart


def test_an_image_reports_every_step_of_its_plan_in_order_and_tells_a_job_progress_the_plan(
    tiny_models, cat, monkeypatch
):
    """The random orders (2 seeds: curves, then 2 thresholds × 2 orders of ROAD inputs each), each
    method's map, once for both scores, its faithfulness curves, its ROAD: every step of `arena_plan`
    is reported once, in order, never going back; a `JobProgress` is told the plan, whose kinds are
    the library's."""
    loaded = tiny_loaded(tiny_models, "vit")
    settings = ArenaSettings(
        fractions=(0.0, 0.5, 1.0), road_percentiles=(50, 80), random_orders=2, sanity=False
    )
    methods = ["gradcam", "rollout"]
    plan = arena_plan(loaded, methods, settings)
    # 2 curves + 8 ROAD inputs; 2 maps; 1 + 2 × 2 sets of curves; 2 × 5 ROAD inputs
    assert len(plan) == 10 + 2 + 5 + 10
    assert [step.kind for step in plan[:3]] == ["curves", "curves", "imputation"]
    assert [step.kind for step in plan[10:12]] == ["map: gradcam", "map: rollout"]
    assert [step.kind for step in plan[12:17]] == ["curves"] * 5
    explained = count_maps(monkeypatch, faithfulness_module)
    calls = []
    score_image(loaded, cat, "cat", methods, settings, lambda done, of: calls.append((done, of)))
    assert explained == methods  # each map computed once, for both scores and the thumbnail
    assert {of for _, of in calls} == {len(plan)} and calls[-1][0] == len(plan)
    done = [value for value, _ in calls]
    assert done == sorted(done) and set(range(1, len(plan) + 1)) <= set(done)
    progress = JobProgress("steps")
    score_image(loaded, cat, "cat", methods, settings, progress)
    assert progress.steps == tuple(plan) and progress.done == len(plan)


def test_with_the_sanity_check_each_original_map_is_computed_once_for_every_score(
    tiny_models, cat, monkeypatch
):
    """The map both scores read is the sanity check's original too: per method one map, then one per
    randomised stage, and every step of the plan reported."""
    loaded = tiny_loaded(tiny_models, "vit")
    settings = ArenaSettings(fractions=(0.0, 0.5, 1.0), road_percentiles=(50,), random_orders=2, sanity=True)
    plan = arena_plan(loaded, ["gradcam"], settings)
    scored_by_both = count_maps(monkeypatch, faithfulness_module)
    by_the_check = count_maps(monkeypatch, sanity_module)
    calls = []
    scores = score_image(loaded, cat, "cat", ["gradcam"], settings, lambda done, of: calls.append(done))
    stages = len(randomisation_stages(loaded.model))
    assert scored_by_both == ["gradcam"] and by_the_check == ["gradcam"] * stages
    assert calls[-1] == len(plan) and sum(step.kind == "map: gradcam" for step in plan) == 1 + stages
    assert scores.methods[0].sanity is not None


def test_a_background_job_writes_progress_and_the_same_scores_as_a_direct_call(tmp_path, monkeypatch, cat):
    torch.manual_seed(0)
    weights = tmp_path / "test_vit.pth"
    torch.save(timm.create_model("test_vit").state_dict(), weights)
    started = []

    class Started:
        pid = 2**22 + 1  # no such process: the slot it holds is free again at once

    def spawn(command, log_path, env=None):
        started.append(command)
        return Started()

    monkeypatch.setattr("vitviz.finetune.worker.spawn_background", spawn)
    settings = ArenaSettings(fractions=(0.0, 0.5, 1.0), road_percentiles=(50,), random_orders=2, sanity=False)
    mirrored = cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    names = ["the cat", "the cat, mirrored"]
    options = {"methods": ["gradcam"], "names": names, "settings": settings.to_json()}
    spec = JobSpec("arena", "test_vit", str(weights), "cpu", options, view="whole")  # the job's view
    folder = tmp_path / "job"
    folder.mkdir()
    start_job(spec, [cat, mirrored], folder)
    assert started and started[0][-2:] == ["vitviz.jobs", str(folder)]
    assert sorted(path.name for path in (folder / "images").iterdir()) == ["0000.png", "0001.png"]
    assert read_job(folder).progress is None and not read_job(folder).ended
    run_job(folder)  # what the worker process runs
    state = read_job(folder)
    assert state.ended and state.error is None and not state.cancelled
    # Steps done of all with the time left, as the general follower draws it: the arena's plan, per image.
    steps = 2 * len(arena_plan(load_model("test_vit", str(weights), "cpu"), ["gradcam"], settings))
    assert (state.progress.unit, state.progress.done, state.progress.total) == ("steps", steps, steps)
    table = state.result
    assert isinstance(table, ArenaTable) and table.images == tuple(names)
    model = load_model("test_vit", str(weights), "cpu")
    settings = replace(settings, view="whole")
    for index, picture in enumerate([cat, mirrored]):
        direct = score_image(model, picture, names[index], ["gradcam"], settings)
        assert table.rows[0].maps[index] == pytest.approx(direct.methods[0].map, abs=1e-6)
    pictures = [
        ArenaImage(name, lambda picture=picture: picture)
        for name, picture in zip(names, [cat, mirrored], strict=True)
    ]
    direct_table = run_arena(model, pictures, ["gradcam"], settings)
    assert table.rows[0].scores["deletion"].median == pytest.approx(
        direct_table.rows[0].scores["deletion"].median, abs=1e-6
    )
    assert table.verdict() == direct_table.verdict()


def test_an_arena_job_takes_one_picture_per_name_and_at_most_the_apps_cap(tmp_path, cat):
    settings = ArenaSettings(random_orders=2)

    def spec(names, weights="bundled"):
        options = {"methods": ["gradcam"], "names": names, "settings": settings.to_json()}
        return JobSpec("arena", "test_vit", weights, "cpu", options)

    with pytest.raises(ValueError, match="random"):
        start_job(spec(["x"], "random"), [cat], tmp_path)
    with pytest.raises(ValueError, match="2 image names for 1 pictures"):
        start_job(spec(["x", "y"]), [cat], tmp_path)
    many = [f"{index}" for index in range(MAX_ARENA_IMAGES + 1)]
    with pytest.raises(ValueError, match=f"at most {MAX_ARENA_IMAGES} images"):
        start_job(spec(many), [cat] * len(many), tmp_path)
    assert list(tmp_path.iterdir()) == []
