"""Slide 7 of the story: a ViT beside a CNN, a trained pair side by side when one loads."""

from __future__ import annotations

import streamlit as st
from PIL import Image

from pages.views import ui
from pages.views.present.state import CLASS_MAP_METHODS, CNN_NAME, PAIR_IMAGE
from pages.views.present.story import Story, cached_held_out
from vitviz.availability import ModelPair
from vitviz.figures.common import attention_overlay_figure, predictions_figure
from vitviz.figures.scales import colour_scale
from vitviz.finetune.data import DataError
from vitviz.methods import ExplanationResult, explanation_map, method_title
from vitviz.models import LoadedModel, ModelError
from vitviz.predict import Prediction
from vitviz.preprocess import ViewMode
from vitviz.runs import RunError
from vitviz.weights import WeightsError

__all__ = [
    "PAIR_FIGURE_HEIGHT",
    "render_compare",
]

# 7. ViT vs CNN ----------------------------------------------------------------------------------


# Each side of a trained pair: its top 5 and its map side by side, one row for both sides.
PAIR_FIGURE_HEIGHT = 370


def render_compare(story: Story) -> None:
    if story.pair is None:
        _story_model_beside_a_cnn(story)
    else:
        _pair_side_by_side(story, story.pair)


def _story_model_beside_a_cnn(story: Story) -> None:
    """No two classifiers of the same classes load here: the story's transformer beside the bundled CNN."""
    vit_column, cnn_column = st.columns(2, gap="large")
    with vit_column:
        story.show_rollout(f"ViT · {story.model_name}: rollout", "present_compare_vit_chart", height=560)
    with cnn_column:
        story.show(
            predictions_figure(
                story.predictions((CNN_NAME, "bundled"), 5), f"CNN · {CNN_NAME}: top-5 predictions"
            ),
            "present_compare_cnn_chart",
            f"cnn-top5-predictions-{story.view}",
            height=420,
            model=(CNN_NAME, "bundled"),
        )
        if not story.loaded.facts.has_classifier:
            st.info(
                f"{story.model_name} has no classifier head (self-supervised), so only the CNN predicts: "
                "this slide shows how each works on the image, not which classifies better."
            )
    st.info(
        "To compare a ViT and a CNN that classify the same classes, train a pair: Fine-tune → "
        "“Train a ViT/CNN pair”."
    )


@st.cache_data(show_spinner="Explaining…", max_entries=32)
def _cached_class_map(
    name: str,
    weights: str,
    device: str,
    digest: str,
    view: ViewMode,
    method: str,
    class_index: int,
    _image: Image.Image,
) -> ExplanationResult:
    """One model's map of one class on the view of the image."""
    seen = ui.cached_view(name, weights, device, digest, _image, view)
    return explanation_map(ui.cached_model(name, weights, device), seen, method, class_index)


def _probability(predictions: list[Prediction], index: int) -> float:
    return next(prediction.probability for prediction in predictions if prediction.index == index)


def _pair_side_by_side(story: Story, pair: ModelPair) -> None:
    """Both classifiers' top 5 on the view, then each one's map of the same class: the ViT's top class.

    A model that fails to load fails in its own column; the other still shows. Each side lays its
    top 5 beside its map, so that the slide fits a 1440×1000 screen unscrolled.
    """
    sides = {"ViT": pair.vit, "CNN": pair.cnn}
    loaded: dict[str, LoadedModel] = {}
    problems: dict[str, str] = {}
    for side, (name, weights) in sides.items():
        try:
            loaded[side] = ui.cached_model(name, weights, story.device)
        except (ModelError, WeightsError) as error:
            problems[side] = f"{name} could not be loaded: {ui.load_problem(error)}"
    # Every class, so that each side can say how probable it finds the class both maps explain.
    predictions = {
        side: story.predictions(sides[side], model.facts.num_classes) for side, model in loaded.items()
    }
    explained = next(iter(predictions.values()))[0] if predictions else None
    picker_column, sentence_column = st.columns([1, 2], gap="large", vertical_alignment="bottom")
    with picker_column:
        _held_out_picker(pair)
    if explained is not None and len(predictions) == 2:
        sentence_column.caption(_explained_sentence(predictions["ViT"], predictions["CNN"], explained))
    for side, column in zip(sides, st.columns(2, gap="large"), strict=True):
        with column:
            if side in problems:
                st.error(problems[side])
                continue
            name, weights = sides[side]
            shown = (name, weights)
            key = f"present_compare_{side.lower()}"
            bars_column, map_column = st.columns([2, 3], gap="small")
            with bars_column:
                bars = predictions_figure(predictions[side][:5], f"{side}: top 5")
                # Room right of the longest bar for its percentage, which a narrow column would cut off.
                bars.update_xaxes(range=[0, 1.45], tickvals=[0, 0.5, 1])
                story.show(
                    bars,
                    f"{key}_predictions_chart",
                    f"top5-predictions-{story.view}",
                    height=PAIR_FIGURE_HEIGHT,
                    model=shown,
                    share=0.2,  # two fifths of half the slide
                )
            facts = loaded[side].facts
            # Chefer needs global attention over one grid; any other model gets its Grad-CAM.
            method = CLASS_MAP_METHODS[facts.family] if facts.global_attention else CLASS_MAP_METHODS["cnn"]
            result = _cached_class_map(
                name, weights, story.device, story.picked.digest, story.view, method, explained.index,
                story.picked.image,
            )  # fmt: skip
            pixels = ui.cached_view(
                name, weights, story.device, story.picked.digest, story.picked.image, story.view
            ).pixels
            figure = attention_overlay_figure(
                pixels,
                result.values,
                result.stride_px,
                f"{side}: {method_title(method)}<br>for “{explained.label}”",
                scale=colour_scale(result.values, "relevance"),
            )
            with map_column:
                story.show(
                    figure,
                    f"{key}_chart",
                    f"{method}-{explained.label}-{story.view}",
                    result.values,
                    PAIR_FIGURE_HEIGHT,
                    shown,
                    share=0.3,
                )


def _explained_sentence(vit: list[Prediction], cnn: list[Prediction], explained: Prediction) -> str:
    """One line on the class both maps explain, from both models' probabilities."""
    line = (
        f"Both maps explain “{explained.label}”, the ViT's top class: the ViT gives it "
        f"{_probability(vit, explained.index):.0%}, the CNN {_probability(cnn, explained.index):.0%}"
    )
    top = cnn[0]
    if top.index == explained.index:
        return line + ", its top class too."
    return line + f"; the CNN's own top class is “{top.label}” ({top.probability:.0%})."


def _held_out_picker(pair: ModelPair) -> None:
    """Which held-out image the slide shows: one per class of the pair's data."""
    if pair.kind != "trained":
        return
    try:
        images = cached_held_out(pair.vit[0])
    except (RunError, DataError):
        return
    if len(images) > 1:
        st.selectbox(
            "Held-out image",
            range(len(images)),
            format_func=lambda index: f"a “{images[index].label}” ({images[index].key})",
            key=PAIR_IMAGE,
            help=f"One image of each class of {images[0].data}, held out of both models' training.",
        )
