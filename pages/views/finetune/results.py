"""A finished run's results: confusion matrix, mistakes, and attention before and after fine-tuning."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages.views import ui
from vitviz.figures.common import attention_overlay_figure
from vitviz.figures.finetune import (
    confusion_figure,
)
from vitviz.finetune.data import (
    DataError,
    ImageSet,
)
from vitviz.finetune.results import attention_change, run_results
from vitviz.finetune.worker import run_image_set
from vitviz.images import image_digest
from vitviz.maths.attention import class_attention_map, rollout_relevance
from vitviz.models import RUN_WEIGHTS, ModelError, no_token_attention_reason
from vitviz.runs import (
    RunError,
)
from vitviz.text import clipped
from vitviz.weights import WeightsError


@st.cache_resource(max_entries=8)
def cached_run_images(folder: str, modified: float) -> ImageSet:
    """The run's image set (file paths or generated shapes), opened once per run."""
    return run_image_set(folder)


def render_results(folder: Path, config: dict, device: str, downloads: dict[str, str]) -> None:
    """Confusion matrix, misclassified images, and attention before vs after fine-tuning."""
    try:
        results = run_results(folder)
    except RunError as error:
        st.error(f"The run's validation results cannot be read: {error}")
        return
    st.markdown(
        f"#### Validation results · accuracy {results.accuracy:.1%} on {int(results.matrix.sum())} images"
    )
    matrix_column, mistakes_column = st.columns([2, 3])
    with matrix_column:
        confusion = confusion_figure(results.matrix, results.labels)
        ui.plotly_chart(confusion, key="finetune_confusion", share=0.4)
        ui.figure_downloads(
            confusion, results.matrix, view="confusion matrix", key="finetune_confusion", **downloads
        )
    try:
        images = cached_run_images(str(folder), (folder / "config.json").stat().st_mtime)
    except (DataError, OSError) as error:
        st.warning(f"The run's images cannot be opened again ({error}); results without pictures.")
        return
    with mistakes_column:
        st.markdown(f"**Misclassified validation images** ({len(results.mistakes)})")
        if not results.mistakes:
            st.success("Every validation image was classified right.")
        shown = results.mistakes[:12]
        for start in range(0, len(shown), 4):
            columns = st.columns(4)
            for column, mistake in zip(columns, shown[start : start + 4], strict=False):
                try:
                    picture = images.item(mistake.key).load()
                except (KeyError, DataError):
                    column.caption(f"{mistake.key}: no longer readable")
                    continue
                column.image(
                    picture.resize((120, 120)),
                    caption=f"{results.labels[mistake.label]} → {results.labels[mistake.predicted]} "
                    f"({mistake.probability:.0%})",
                )
    render_attention_change(folder, config, images, results, device)


def render_attention_change(folder: Path, config: dict, images: ImageSet, results, device: str) -> None:
    """The same validation image's class-token attention and rollout, base model vs fine-tuned."""
    st.markdown("#### Attention before and after fine-tuning")
    keys = [mistake.key for mistake in results.mistakes] + [
        key for key in results.keys if key not in {m.key for m in results.mistakes}
    ]
    if not keys:
        st.info("This run has no validation images to look at.")
        return
    key = st.selectbox(
        "Validation image", keys, key=f"finetune_attention_image_{folder.name}", help="Mistakes first."
    )
    try:
        after = ui.cached_model(folder.name, RUN_WEIGHTS, device)
        before = ui.cached_model(str(config["base_model"]), str(config["weights"]), device)
    except (ModelError, WeightsError) as error:
        st.error(f"Cannot load the models to compare: {ui.load_problem(error)}")
        return
    except KeyError as error:
        st.error(f"Cannot load the models to compare: the run's config names no {error}")
        return
    if not after.facts.global_attention:
        st.info(no_token_attention_reason(after.facts, "attention maps to compare"))
        return
    try:
        picture = images.item(key).load()
    except KeyError:
        shown = clipped(key, 80)
        st.warning(
            f"The validation image {shown!r} is not among the run's images any more: no attention to compare."
        )
        return
    except DataError as error:
        st.warning(f"{error} No attention to compare.")
        return
    digest = image_digest(picture)
    record_before = ui.cached_attention(
        str(config["base_model"]), str(config["weights"]), device, digest, picture
    )
    record_after = ui.cached_attention(folder.name, RUN_WEIGHTS, device, digest, picture)
    layer = record_after.num_layers - 1
    pixels = ui.cached_view(folder.name, RUN_WEIGHTS, device, digest, picture).pixels
    stride = after.facts.stride_px
    maps = {
        "class-token attention, last layer": (
            class_attention_map(record_before, layer, None),
            class_attention_map(record_after, layer, None),
        ),
        "rollout": (rollout_relevance(record_before), rollout_relevance(record_after)),
    }
    # Random weights are drawn afresh on every load: "before" is a random twin, not the run's exact start.
    base_label = "before (a random twin)" if not before.trained else "before (base model)"
    sentences = []
    for row, (title, (old, new)) in enumerate(maps.items()):
        colorbar = "relevance" if title == "rollout" else "attention"
        # One colour scale for both, so equal colours mean equal values before and after.
        scale = {"zmin": float(min(old.min(), new.min())), "zmax": float(max(old.max(), new.max()))}
        before_figure = attention_overlay_figure(
            pixels, old, stride, f"{base_label}: {title}", colorbar_title=colorbar
        )
        after_figure = attention_overlay_figure(
            pixels, new, stride, f"after ({config.get('mode')}): {title}", colorbar_title=colorbar
        )
        for figure in (before_figure, after_figure):
            figure.update_traces(selector={"type": "heatmap"}, **scale)
        for column, figure, side in zip(
            st.columns(2), (before_figure, after_figure), ("before", "after"), strict=True
        ):
            with column:
                ui.plotly_chart(figure, key=f"finetune_{side}_{row}", theme=None)
        sentences.append(
            attention_change(title, old, new).sentence(str(config.get("mode")), not before.trained)
        )
    # Measured on these maps, not asserted: a probe's claim is checked against the numbers.
    st.info("  \n".join(sentences))
