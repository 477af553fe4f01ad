"""Tab 4, Attention distance: mean attention distance of every head against depth (Fig. 7 right)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import streamlit as st
from PIL import Image

from pages.views import ui
from pages.views.anatomy.kit import ModelSide, _chart, _columns
from vitviz.figures.anatomy import attention_distance_figure
from vitviz.forward.distance import attention_distances_over_images
from vitviz.images import BUILTIN_PHOTOS, ImageDecodeError, builtin_photo, decode_upload
from vitviz.images import image_digest as digest_of
from vitviz.maths.distance import AttentionDistances
from vitviz.preprocess import VIEW_LABELS, image_view

__all__ = ["render_attention_distance"]

DISTANCE_RESULTS = "anatomy_distance_results"  # AttentionDistances per (model, images), newest last
MAX_KEPT_DISTANCES = 8


def _distance_images(
    photos: Sequence[str], uploads: Sequence | None
) -> tuple[list[str], list[Callable[[], Image.Image]], list[str]]:
    """Keys, loaders and problems of the chosen photos and uploads; bad uploads are left out, named.

    Photos are keyed by name and read only when a result is not stored yet.
    """
    names: list[str] = []
    loaders: list[Callable[[], Image.Image]] = []
    problems: list[str] = []
    for photo in photos:
        names.append(f"photo:{photo}")
        loaders.append(lambda photo=photo: builtin_photo(photo))
    for upload in uploads or []:
        try:
            image = decode_upload(upload.getvalue())
        except ImageDecodeError as error:
            problems.append(f"{upload.name}: {error}")
            continue
        names.append(f"upload:{digest_of(image)}")
        loaders.append(lambda image=image: image)
    return names, loaders, problems


def _distances(side: ModelSide, image_keys: list[str], loaders: list) -> AttentionDistances:
    """One model's distances over the images: from this session's store, or computed with a progress bar."""
    store: dict = st.session_state.setdefault(DISTANCE_RESULTS, {})
    key = (*side.key, side.view, tuple(image_keys))
    if key in store:
        store[key] = store.pop(key)  # newest last
        return store[key]
    text = f"Mean attention distance · {side.label}"
    bar = st.progress(0.0, text=f"{text}: loading {len(loaders)} images…")
    images = [load() for load in loaders]

    def report(done: int, total: int) -> None:
        bar.progress(done / total, text=f"{text}: layer pass {done} of {total}")

    views = [image_view(image, side.loaded.facts, side.view) for image in images]
    result = attention_distances_over_images(side.loaded, views, progress=report)
    bar.empty()
    store[key] = result
    while len(store) > MAX_KEPT_DISTANCES:
        store.pop(next(iter(store)))
    return result


def render_attention_distance(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """Tab 4: mean attention distance of every head against depth (paper Fig. 7 right)."""
    facts = sides[0].loaded.facts
    picker, uploader = st.columns(2)
    photos = picker.multiselect(
        "Built-in photos", list(BUILTIN_PHOTOS), default=list(BUILTIN_PHOTOS), key="anatomy_distance_photos"
    )
    uploads = ui.image_uploader(uploader, "Add your own images", key="anatomy_distance_uploads", several=True)
    image_keys, loaders, problems = _distance_images(photos, uploads)
    for problem in problems:
        st.warning(f"Left out {problem}")
    if not loaders:
        st.info("Pick at least one built-in photo or upload an image to measure attention distance.")
        return
    results = [_distances(side, image_keys, loaders) for side in sides]
    top = max(max(float(result.mean.max()), result.uniform_reference) for result in results) * 1.12
    for column, side, result in zip(_columns(len(sides)), sides, results, strict=True):
        with column:
            images = "1 image" if result.num_images == 1 else f"{result.num_images} images"
            _chart(
                attention_distance_figure(
                    result.mean,
                    result.uniform_reference,
                    f"Mean attention distance, {images} · {side.label}",
                    y_max=top,
                ),
                key=f"anatomy_distance_{side.suffix}",
            )
            first, last = result.mean[0], result.mean[-1]
            st.caption(
                f"{side.label}: layer 0 heads look {first.min():.0f}–{first.max():.0f} px away, the last "
                f"layer's {last.min():.0f}–{last.max():.0f} px (uniform attention: "
                f"{result.uniform_reference:.0f} px; input {result.input_size[0]}×{result.input_size[1]} px)."
            )
    height, width = facts.input_size
    st.caption(
        "Per head and layer: Σⱼ Aᵢⱼ·‖gᵢ − gⱼ‖ in pixels of the model's input, averaged over query patches "
        f"and images; prefix tokens left out as queries and keys, no renormalisation (the paper's "
        f"appendix D.7). Each image is seen in the page's view: {VIEW_LABELS[sides[0].view]}, "
        f"{height}×{width} px."
    )
