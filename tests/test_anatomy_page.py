"""AppTest of the Anatomy page: every tab on every model family, with and without the untrained twin,
and the interventions (head ablation, logit lens, sanity check) on a real fine-tuned probe."""

import os
import re
import shutil
from collections.abc import Iterator

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from streamlit.testing.v1 import AppTest

from pages.views.anatomy.tabs import INTRODUCTIONS
from tests.support.anatomy_apptest import figure_titles, open_anatomy, open_tab, page_texts
from tests.support.interventions import dinov2_probe_run
from tests.support.jobs import make_worker_silent
from tests.support.polling import wait_for
from vitviz.forward.ablation import head_importance, head_importance_estimate
from vitviz.forward.resolution import compare_resolutions
from vitviz.images import builtin_photo
from vitviz.maths.ablation import ranking_agreement
from vitviz.models import load_model
from vitviz.preprocess import image_view

PAPER_TABS = ("Patches as words", "Filters", "Position embeddings", "Attention distance")
FURTHER_TABS = ("Resolution", "Hybrid stem", "Token norms", "All heads", "Queries & keys")
INTERVENTION_TABS = ("Logit lens", "Sanity check")
TIMEOUT_S = 240


def _anatomy(model: str | None = None, weights: str | None = None, path: str | None = None) -> AppTest:
    return open_anatomy(model, weights, path, timeout_s=TIMEOUT_S)


def _open(at: AppTest, tab: str) -> AppTest:
    """Opens a tab; it must also show no error message."""
    open_tab(at, tab)
    assert not at.error, [e.value for e in at.error]
    return at


def _has_title(at: AppTest, fragment: str) -> bool:
    return any(fragment in title for title in figure_titles(at))


def _few_photos(at: AppTest) -> None:
    """Two photos instead of eight keep the attention-distance runs short."""
    at.multiselect(key="anatomy_distance_photos").set_value(["cat (chelsea)", "coffee"]).run()
    assert not at.exception, at.exception


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Iterator[dict[str, str]]:
    """Seeded tiny models saved as checkpoint files: "trained" weights, so the twin has something to differ from."""
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    torch.manual_seed(1)
    for name in ("vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "vit_tiny_r_s16_p8_224"):
        path = folder / f"{name}.safetensors"
        safetensors.torch.save_file(timm.create_model(name, pretrained=False).state_dict(), str(path))
        paths[name] = path.name
    # Pages offer weights files only inside an operator-named data root: this folder is it.
    previous = os.environ.get("VITVIZ_DATA_ROOT")
    os.environ["VITVIZ_DATA_ROOT"] = str(folder)
    yield paths
    if previous is None:
        os.environ.pop("VITVIZ_DATA_ROOT", None)
    else:
        os.environ["VITVIZ_DATA_ROOT"] = previous


def test_bundled_dinov2_every_tab_alone():
    at = _anatomy()
    assert [tab.label for tab in at.tabs] == [*PAPER_TABS, *FURTHER_TABS, *INTERVENTION_TABS]
    text = page_texts(at)
    assert "`(3, 224, 224)`" in text and "`(256, 588)`" in text and "`(256, 384)`" in text
    assert "`(257, 384)`" in text and "14×14×3 = 588 values" in text
    assert any("1 prefix + 256 patches" in title for title in figure_titles(at))

    open_tab(at, "Filters")
    titles = figure_titles(at)
    assert titles[0] == "First 28 PCs of the filters · bundled (offline)"
    assert titles[1].startswith("Explained variance: ") and "in all · bundled (offline)" in titles[1]

    open_tab(at, "Position embeddings")
    assert "Position (8, 8) · bundled (offline)" in figure_titles(at)
    assert "direct neighbour for 51% of positions and within 2 steps for 100%" in page_texts(at)

    open_tab(at, "Attention distance")
    _few_photos(at)
    assert figure_titles(at) == ["Mean attention distance, 2 images · bundled (offline)"]
    assert "uniform attention: 117 px" in page_texts(at)


def test_bundled_dinov2_every_tab_beside_its_untrained_twin():
    at = _anatomy()
    at.toggle(key="anatomy_compare_random").set_value(True).run()
    assert not at.exception
    titles = figure_titles(at)
    assert "Encoder input (257, 384) · bundled (offline)" in titles
    assert "Encoder input (257, 384) · random (untrained twin)" in titles

    open_tab(at, "Filters")
    titles = figure_titles(at)
    assert "First 28 PCs of the filters · random (untrained twin)" in titles
    assert sum("Explained variance" in title for title in titles) == 2

    open_tab(at, "Position embeddings")
    titles = figure_titles(at)
    assert {"Position (8, 8) · bundled (offline)", "Position (8, 8) · random (untrained twin)"} <= set(titles)

    open_tab(at, "Attention distance")
    _few_photos(at)
    assert figure_titles(at) == [
        "Mean attention distance, 2 images · bundled (offline)",
        "Mean attention distance, 2 images · random (untrained twin)",
    ]


@pytest.mark.parametrize(
    ("model", "grid", "prefix"),
    [
        ("vit_tiny_patch16_224", "14 × 14", "class"),
        ("deit_tiny_distilled_patch16_224", "14 × 14", "class, distillation"),
        ("vit_tiny_r_s16_p8_224", "7 × 7", "class"),
    ],
)
def test_tiny_models_every_tab_with_the_twin(checkpoints, model, grid, prefix):
    at = _anatomy(model, path=checkpoints[model])
    at.toggle(key="anatomy_compare_random").set_value(True).run()
    assert not at.exception
    text = page_texts(at)
    assert f"{grid} grid (rows × columns)" in text
    assert f"in front: {prefix}." in text
    hybrid = model.startswith("vit_tiny_r")
    if hybrid:
        assert "**CNN feature map**" in text and "cells of the CNN feature map" in text

    open_tab(at, "Filters")
    if hybrid:
        assert page_texts(at).count("is a hybrid: its tokens come from a CNN feature map") == 1
        assert figure_titles(at) == []  # no figure in the tab (the view's photo sits above the tabs)
    else:
        assert sum("PCs of the filters" in title for title in figure_titles(at)) == 2

    open_tab(at, "Position embeddings")
    assert sum(title.startswith("Position (") for title in figure_titles(at)) == 2

    open_tab(at, "Attention distance")
    _few_photos(at)
    assert len(figure_titles(at)) == 2


def test_register_model_without_class_embedding_rows():
    at = _anatomy("vit_little_patch16_reg4_gap_256", weights="random")
    text = page_texts(at)
    assert "4 learned tokens that come from no patch go in front: register 1, register 2" in text
    assert "the 256 patches only; prefix tokens get none" in text
    open_tab(at, "Position embeddings")
    assert "no rows for its prefix tokens" in page_texts(at)
    open_tab(at, "Attention distance")
    at.multiselect(key="anatomy_distance_photos").set_value(["coffee"]).run()
    assert not at.exception
    assert figure_titles(at) == ["Mean attention distance, 1 image · random (untrained)"]


def test_cnn_gets_a_message_in_every_tab_not_an_exception():
    at = _anatomy("tf_efficientnet_lite0")  # the bundled CNN, through the "other model" box
    at.toggle(key="anatomy_compare_random").set_value(True).run()
    assert not at.exception
    for tab in PAPER_TABS:
        open_tab(at, tab)
        assert "Does not apply:" in page_texts(at), tab
        assert figure_titles(at) == [], tab


def test_rotary_model_says_it_has_no_position_table():
    at = _anatomy("vit_medium_patch16_rope_reg1_gap_256", weights="random")
    open_tab(at, "Position embeddings")
    assert "has no absolute position embedding" in page_texts(at)


def test_no_photos_gives_a_message():
    at = _anatomy()
    open_tab(at, "Attention distance")
    at.multiselect(key="anatomy_distance_photos").set_value([]).run()
    assert not at.exception
    assert "Pick at least one built-in photo" in page_texts(at)


def test_bundled_dinov2_shows_all_five_further_tabs():
    at = _anatomy()
    assert [tab.label for tab in at.tabs][-7:] == [*FURTHER_TABS, *INTERVENTION_TABS]

    _open(at, "Resolution")
    at.select_slider(key="anatomy_resolution_size").set_value("336×336").run()
    texts = page_texts(at)
    assert (
        "224 × 224 px (width × height): 16 × 16 grid (rows × columns) = 256 patches + 1 prefix = **257 tokens**"
        in texts
    )
    assert (
        "336 × 336 px (width × height): 24 × 24 grid (rows × columns) = 576 patches + 1 prefix = **577 tokens**"
        in texts
    )
    assert _has_title(at, "Position embedding interpolated (24 × 24 grid (rows × columns), 3 PCs)")
    # The rollout's title is the library's statement of it at that size: which layers, which sinks.
    dinov2 = load_model("vit_small_patch14_dinov2", "bundled")
    photo = builtin_photo(at.selectbox(key="anatomy_photo").value)
    after = compare_resolutions(dinov2, image_view(photo, dinov2.facts), (336, 336))[1]
    assert after.rollout_statement.startswith("Rollout of layers")
    assert _has_title(at, f"336 × 336 px (width × height): rollout<br><sup>{after.rollout_statement}</sup>")
    assert "no classifier head" in texts

    _open(at, "Hybrid stem")
    assert "is a plain ViT" in page_texts(at)

    _open(at, "Token norms")
    assert "No patch exceeds 2× the median norm" in page_texts(at)
    assert _has_title(at, "Patch-token norm, before final norm")
    at.radio(key="anatomy_norms_place").set_value("after the final norm (forward_features output)").run()
    assert not at.exception
    assert _has_title(at, "Patch-token norm, after final norm")

    _open(at, "All heads")
    assert _has_title(at, "All heads: attention from class token")
    assert _has_title(at, "Layer 11, head 0: attention from class token")

    _open(at, "Queries & keys")
    assert _has_title(at, "Layer 11, head 0: 257 queries and 257 keys (PCA)")
    assert "reproduces the model's attention of this head" in page_texts(at)


def test_all_heads_follow_the_chosen_head_and_clicked_patch():
    at = _anatomy()
    _open(at, "All heads")
    at.session_state["anatomy_heads_selected"] = (2, 4)
    at.session_state["anatomy_heads_patch"] = (5, 9)
    at.radio(key="anatomy_heads_query").set_value("clicked patch").run()
    assert not at.exception
    assert _has_title(at, "All heads: attention from patch (5, 9)")
    assert _has_title(at, "Layer 2, head 4: attention from patch (5, 9)")


def test_dinov2_with_its_untrained_twin_labels_the_random_side_in_every_tab():
    at = _anatomy()
    at.toggle(key="anatomy_compare_random").set_value(True)
    at.session_state["anatomy_resolution_size"] = "168×168"  # small, so the twin runs quickly too
    for tab in FURTHER_TABS:
        _open(at, tab)
        if tab == "Hybrid stem":
            continue
        assert any("random (untrained twin)" in title for title in figure_titles(at)), tab
        assert [element.value for element in at.subheader][-2:] == [
            "bundled (offline)",
            "random (untrained twin)",
        ]
    at.toggle(key="anatomy_compare_random").set_value(False)
    _open(at, "Queries & keys")
    assert not any("random (untrained" in title for title in figure_titles(at))


def test_tiny_random_vit_shows_every_tab_and_t_sne():
    at = _anatomy("vit_tiny_patch16_224", "random")
    _open(at, "Resolution")
    assert "14 × 14 grid (rows × columns) = 196 patches + 1 prefix = **197 tokens**" in page_texts(at)
    assert page_texts(at).count(INTRODUCTIONS["Resolution"]) == 1
    for tab in FURTHER_TABS[1:]:
        _open(at, tab)
        if tab in INTRODUCTIONS:  # drawn once, above the tab
            assert page_texts(at).count(INTRODUCTIONS[tab]) == 1, tab
    at.radio(key="anatomy_qk_method").set_value("t-SNE (slower)").run()
    assert not at.exception
    assert _has_title(at, "197 queries and 197 keys (t-SNE (slower))")
    assert "only neighbourhoods mean something" in page_texts(at)


def test_hybrid_stem_with_its_untrained_twin(checkpoints):
    at = _anatomy("vit_tiny_r_s16_p8_224", path=checkpoints["vit_tiny_r_s16_p8_224"])
    at.toggle(key="anatomy_compare_random").set_value(True)
    _open(at, "Hybrid stem")
    texts = page_texts(at)
    # 224 px → stem ÷4 → 56×56 cells → 8×8-cell patches → 7×7 tokens, 32 px apart.
    assert "**64×56×56** feature map" in texts
    assert "`Conv2d(64 → 192, kernel 8×8, stride 8×8)`" in texts
    assert "**7 × 7 grid (rows × columns) = 49 tokens** of width 192" in texts
    assert "**32 × 32 px (width × height) of input**" in texts
    assert _has_title(
        at, "Stem output: mean and the 6 most varying channels<br><sup>random (untrained twin)</sup>"
    )
    for tab in ("Resolution", "Token norms", "All heads", "Queries & keys"):
        _open(at, tab)


def test_a_cnn_gets_a_note_in_every_tab():
    at = _anatomy("tf_efficientnet_lite0", "bundled")
    for tab in FURTHER_TABS:
        _open(at, tab)
        assert "Does not apply: tf_efficientnet_lite0 is a CNN" in page_texts(at), tab
        if tab in INTRODUCTIONS:  # a tab that does not apply is not introduced
            assert INTRODUCTIONS[tab] not in page_texts(at), tab


# Interventions on a real probe: a run folder in the runs folder loads as a model. ---------------


@pytest.fixture(scope="module")
def probe_run():
    """The tiny DINOv2 shapes probe, listed in a runs folder of its own so the model picker offers it."""
    run = dinov2_probe_run()
    previous = os.environ.get("VITVIZ_RUNS_DIR")
    os.environ["VITVIZ_RUNS_DIR"] = str(run.parent)
    yield run
    if previous is None:
        os.environ.pop("VITVIZ_RUNS_DIR", None)
    else:
        os.environ["VITVIZ_RUNS_DIR"] = previous


def _probe_page(run, tab: str) -> AppTest:
    at = _anatomy()
    at.selectbox(key="anatomy_model").set_value(run.name).run()  # a run is picked by its name
    assert not at.exception, at.exception
    return _open(at, tab)


def _sentence_numbers(text: str) -> tuple[float, float]:
    """The before and after percentages of "goes from X% to Y%"."""
    found = re.search(r"goes from ([\d.]+)% to ([\d.]+)%", text)
    assert found, text
    return float(found.group(1)) / 100, float(found.group(2)) / 100


def test_switching_layers_off_changes_the_probe_prediction_as_the_library_says(probe_run):
    from vitviz import load_model
    from vitviz.forward.ablation import ablate_heads
    from vitviz.images import builtin_photo
    from vitviz.predict import predict

    at = _probe_page(probe_run, "All heads")
    assert "Every head is on" in page_texts(at)
    assert _has_title(at, "Top-5, every head on<br><sup>vit_small_patch14_dinov2 · fine-tuned run")
    at.multiselect(key="anatomy_ablation_layers").set_value([10, 11]).run()
    assert not at.exception, at.exception
    texts = page_texts(at)
    assert _has_title(at, "Top-5 with 12 heads zeroed")
    assert _has_title(at, "All heads: attention from class token with 12 heads off")

    loaded = load_model(str(probe_run))
    photo = builtin_photo(at.selectbox(key="anatomy_photo").value)
    heads = [(layer, head) for layer in (10, 11) for head in range(loaded.facts.num_heads)]
    result = ablate_heads(loaded, image_view(photo, loaded.facts), heads, "zero")
    before, after = _sentence_numbers(texts)
    top = predict(loaded, [image_view(photo, loaded.facts)], topk=1)[0][0]
    assert before == pytest.approx(top.probability, abs=0.0006)
    probabilities = np.exp(result.record.logits - result.record.logits.max())
    probabilities /= probabilities.sum()
    assert after == pytest.approx(float(probabilities[top.index]), abs=0.0006)

    at.radio(key="anatomy_ablation_mode").set_value("replaced by its mean over the image's tokens").run()
    assert not at.exception, at.exception
    assert _has_title(at, "Top-5 with 12 heads replaced by their token mean")


def test_ranking_heads_shows_the_drop_of_each_head_alone(probe_run):
    at = _probe_page(probe_run, "All heads")
    # Before any ranking, the one-backward estimate is drawn at once and called an estimate.
    assert _has_title(at, "Estimated drop of"), figure_titles(at)
    assert "Heads that matter most here, by the estimate:" in page_texts(at)
    at.button(key="anatomy_ablation_rank").click().run()
    assert not at.exception, at.exception
    # The ranking runs in a background worker; the page shows its progress, with a Cancel, until it has ended.
    ((key, (folder, _)),) = at.session_state["background_jobs"].items()
    assert key[0] == "ranking" and key[-1] == "zero"
    assert at.button(key="anatomy_ablation_rank").disabled  # one ranking at a time
    assert at.button(key="anatomy_ablation_rank_job_0").label == "Cancel"

    def ranked_after_a_run() -> bool:
        at.run()
        assert not at.exception, at.exception
        assert not at.error, [error.value for error in at.error]
        return _has_title(at, "with one head zeroed<br><sup>vit_small_patch14_dinov2")

    wait_for(
        ranked_after_a_run, 240, lambda: f"the ranking; the page says:\n{page_texts(at)}", interval_s=1.0
    )
    assert not folder.exists() and not at.session_state["background_jobs"]  # the job's folder is gone
    drops = at.session_state["background_results"][key]
    assert drops.shape == (12, 6)
    # The worker's numbers are the page's own function's, on the same model, picture and view.
    photo = builtin_photo(at.selectbox(key="anatomy_photo").value)
    probe = load_model(str(probe_run))
    seen = image_view(photo, probe.facts)
    np.testing.assert_allclose(drops, head_importance(probe, seen, "zero"), atol=1e-5)
    layer, head = np.unravel_index(int(np.argmax(drops)), drops.shape)
    assert f"Heads that matter most here: {layer}:{head} ({drops[layer, head]:+.1%})" in page_texts(at)
    estimate = head_importance_estimate(probe, seen, "zero")
    rho = ranking_agreement(estimate, drops)
    assert rho > 0.5  # 0.80-0.91 measured on held-out shapes
    assert f"Spearman ρ = {rho:.2f} against this exact ranking" in page_texts(at)
    # Cached per image, model and view: on the next run the button is spent until one of them changes.
    at.run()
    assert not at.exception, at.exception
    assert f"{layer}:{head} ({drops[layer, head]:+.1%})" in page_texts(at)
    assert at.button(key="anatomy_ablation_rank").disabled


def test_a_ranking_whose_folder_vanished_or_whose_worker_died_says_so_and_can_start_again(
    probe_run, tmp_path
):
    from vitviz.jobs import cancel_job

    at = _probe_page(probe_run, "All heads")
    at.button(key="anatomy_ablation_rank").click().run()
    ((_, (folder, _)),) = at.session_state["background_jobs"].items()
    cancel_job(folder)  # the worker stops at its next batch, whatever happens to the page's record
    shutil.rmtree(folder)  # a temp folder cleaned under the page
    at.run()
    assert not at.exception, at.exception
    assert (
        "Switching each head off in turn — could not compute it: its folder could not be read"
        in page_texts(at)
    )
    assert at.button(key="anatomy_ablation_rank").disabled  # the ending shows until the visitor runs it again
    at.button(key="anatomy_ablation_rank_job_again_0").click().run()
    assert not at.exception, at.exception
    assert not at.button(key="anatomy_ablation_rank").disabled
    # A worker that died without a word: its status has not changed for ten minutes.
    at.button(key="anatomy_ablation_rank").click().run()
    dead = tmp_path / "dead"
    make_worker_silent(at, dead)
    at.run()
    assert not at.exception, at.exception
    assert (
        "Switching each head off in turn — could not compute it: the worker was silent for 600 s"
        in page_texts(at)
    )
    assert not at.session_state["background_jobs"] and not dead.exists()


def test_logit_lens_last_layer_agrees_with_the_prediction(probe_run):
    at = _probe_page(probe_run, "Logit lens")
    texts = page_texts(at)
    found = re.search(r"the last layer's reading is the model's prediction \(([\d.]+)% both\)", texts)
    assert found, texts
    assert _has_title(at, "Logit lens: each layer's top classes<br><sup>vit_small_patch14_dinov2")
    assert _has_title(at, "Layer 11: the class each patch token alone reads as")
    at.slider(key="anatomy_lens_layer").set_value(3).run()
    assert not at.exception, at.exception
    assert _has_title(at, "Layer 3: the class each patch token alone reads as")
    assert re.search(r"At layer 3, \d+% of the 256 patches read as", page_texts(at))


def test_sanity_check_reports_the_rank_correlation_at_the_checkpoint(probe_run):
    at = _probe_page(probe_run, "Sanity check")
    # Slow: no sanity map is made before the button (the page's view thumbnail is a figure too).
    assert not any(title.startswith("Sanity check") for title in figure_titles(at)), figure_titles(at)
    at.button(key="anatomy_sanity_run").click().run()
    assert not at.exception, at.exception
    # The check runs in a background worker; the page follows it until its maps arrive.
    wait_for(
        lambda: _has_title(at.run(), "Sanity check of Attention rollout"), 300, "the sanity check's maps"
    )
    assert not at.exception, at.exception
    verdicts = [element.value for element in [*at.success, *at.warning, *at.info]]
    assert any(re.search(r"ρ = -?[\d.]+ at stage “blocks\.\d+”", text) for text in verdicts), verdicts
    assert _has_title(at, "Sanity check of Attention rollout<br><sup>vit_small_patch14_dinov2")


def test_model_without_classifier_says_how_to_get_one():
    at = _anatomy()
    for tab in ("All heads", "Logit lens"):
        _open(at, tab)
        assert "Fine-tune a probe on the Fine-tune page" in page_texts(at), tab


def test_filters_caption_says_what_was_measured_against_the_untrained_twin():
    at = _open(_anatomy(), "Filters")
    texts = page_texts(at)
    assert "untrained filters give noise" not in texts
    found = re.search(
        r"keep ([\d.]+)% of their energy below 0.125 cycles per pixel \(untrained twin ([\d.]+)%", texts
    )
    assert found, texts
    assert float(found.group(1)) < float(found.group(2))  # the bundled DINOv2: finer than random
    assert "fine patterns, not smooth filters" in texts


def test_page_shows_the_view_and_a_robust_colour_scale_with_a_raw_toggle():
    at = _open(_anatomy(), "All heads")
    assert (
        "computed on one view of the photo: centre crop (the model's eval transform) — centre crop"
        in page_texts(at)
    )
    at.toggle(key="anatomy_raw_colours").set_value(True).run()
    assert not at.exception, at.exception
    assert at.query_params["raw"] == ["1"] or at.query_params["raw"] == "1"


def test_link_opens_the_tab_and_switches_heads_off(probe_run):
    at = AppTest.from_file(str(_repo_app()), default_timeout=TIMEOUT_S)
    at.switch_page("pages/anatomy.py")
    at.query_params["tab"] = "All heads"
    at.query_params["off"] = "11,3:2"
    at.run()
    assert not at.exception, at.exception
    at.selectbox(key="anatomy_model").set_value(probe_run.name).run()
    assert not at.exception, at.exception
    assert _has_title(at, "Top-5 with 7 heads zeroed")


def test_hostile_link_gets_a_note_not_an_exception():
    at = AppTest.from_file(str(_repo_app()), default_timeout=TIMEOUT_S)
    at.switch_page("pages/anatomy.py")
    at.query_params["tab"] = "<script>"
    at.query_params["off"] = "99:99,x"
    at.query_params["ablation"] = "explode"
    at.run()
    assert not at.exception, at.exception
    notes = " ".join(element.value for element in at.info)
    assert "tab '<script>'" in notes and "heads off" in notes and "ablation 'explode'" in notes


def _repo_app():
    from tests.support.browser import REPO

    return REPO / "app.py"


def test_a_model_without_a_classifier_is_told_what_each_tab_needs():
    at = open_anatomy()  # the bundled DINOv2: a backbone with no head
    open_tab(at, "Logit lens")
    texts = page_texts(at)
    assert "The logit lens reads every layer through the model's own final norm and classifier" in texts
    assert "switching heads off" not in texts
    open_tab(at, "All heads")
    subheaders = [element.value for element in at.subheader]
    assert "Switch heads off" not in subheaders  # not offered where it changes nothing
    assert "switching heads off would change no prediction, so it is not offered" in page_texts(at)
