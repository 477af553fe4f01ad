"""Glue of the Arena page: images and settings in, the arena as a background job, the ranked table out."""

from __future__ import annotations

import json

import streamlit as st
from PIL import Image

from pages.views import background, ui
from pages.views.finetune.data import MAX_ZIP_MB
from vitviz.arena import (
    ARENA_ROAD_PERCENTILES,
    MAX_ARENA_IMAGES,
    ArenaImage,
    ArenaSettings,
    ArenaTable,
    arena_methods,
    builtin_photo_images,
    folder_images,
    run_held_out_images,
    zip_images,
)
from vitviz.export import export_filename
from vitviz.figures.arena import arena_csv, arena_figure, arena_maps_npz, thumbnail_rgb
from vitviz.figures.common import png_data_uri
from vitviz.finetune.data import DataError
from vitviz.images import BUILTIN_PHOTOS, ImageDecodeError, decode_upload
from vitviz.jobs import JobSpec
from vitviz.methods import method_title
from vitviz.models import LoadedModel
from vitviz.runs import RunError, list_runs
from vitviz.serving import ServingError, server_folder, server_paths_allowed

__all__ = ["image_source", "render_table", "run_section", "settings_picker"]

ARENA = "arena"  # the first part of an arena's job key: (ARENA, model, weights, device, methods, settings, images, source)
_SOURCES = ("Built-in photos", "Upload images or a zip", "A run's held-out images", "Server folder")


def image_source() -> tuple[list[ArenaImage], str]:
    """Sidebar widgets for the images; returns them (not yet decoded) and a digest of what was picked.

    A source that yields nothing stops the page with a message saying why.
    """
    source = st.radio("Images", _SOURCES[: 4 if server_paths_allowed() else 3], key="arena_source")
    if source == _SOURCES[0]:
        names = st.multiselect(
            "Photos", list(BUILTIN_PHOTOS), default=list(BUILTIN_PHOTOS)[:1], key="arena_photos"
        )
        images = [image for image in builtin_photo_images() if image.name in names]
        return _some(images, "Pick at least one photo."), "photos:" + "|".join(names)
    if source == _SOURCES[1]:
        uploads = ui.image_uploader(st, "Images", key="arena_uploads", several=True) or []
        archive = st.file_uploader(
            "…or a .zip of images", type=ui.ZIP_UPLOAD_TYPES, max_upload_size=MAX_ZIP_MB, key="arena_zip"
        )
        images: list[ArenaImage] = [_uploaded(upload.name, upload.getvalue()) for upload in uploads]
        if archive is not None:
            try:
                images += zip_images(archive.getvalue(), MAX_ARENA_IMAGES)
            except (ValueError, OSError) as error:
                st.error(f"{archive.name}: {error}")
                st.stop()
        uploads = [*uploads, *([archive] if archive is not None else [])]
        digest = "|".join(f"{upload.file_id}" for upload in uploads or [])
        return _some(images, "Upload images or a zip of images."), "upload:" + digest
    if source == _SOURCES[2]:
        runs = [run for run in list_runs() if run.has_model and run.problem is None]
        if not runs:
            st.info("No finished fine-tuned run yet: train one on the Fine-tune page.")
            st.stop()
        name = st.selectbox("Run", [run.name for run in runs], key="arena_run")
        folder = next(run.folder for run in runs if run.name == name)
        try:
            images = run_held_out_images(folder)
        except (RunError, DataError, OSError, KeyError) as error:
            st.error(f"The run's held-out images cannot be opened: {error}")
            st.stop()
        return _some(images, "This run held no image out."), f"run:{name}"
    text = st.text_input("Folder under the data root", key="arena_folder")
    if not text:
        st.info("Name a folder of images under the server's data root.")
        st.stop()
    try:
        folder = server_folder(text)
        images = folder_images(
            folder.path, shown_as=folder.shown, inside=folder.root, max_images=MAX_ARENA_IMAGES
        )
    except (ServingError, DataError, OSError) as error:
        st.error(str(error))
        st.stop()
    return images, f"folder:{folder.shown}"


def _uploaded(name: str, data: bytes) -> ArenaImage:
    return ArenaImage(name, lambda: decode_upload(data))


def _some(images: list[ArenaImage], message: str) -> list[ArenaImage]:
    if not images:
        st.info(message)
        st.stop()
    return images


def settings_picker(loaded: LoadedModel) -> tuple[tuple[str, ...], ArenaSettings]:
    """Sidebar widgets for the methods and how finely each is scored."""
    slow = st.checkbox(
        "Include slow methods",
        key="arena_slow",
        help="Score-CAM, Ablation-CAM, Integrated Gradients, Occlusion, SmoothGrad, GradientSHAP: "
        "tens of forward passes or more per map.",
    )
    offered = arena_methods(loaded, slow=True)
    default = arena_methods(loaded, slow=slow)
    methods = st.multiselect(
        "Methods", offered, default=default, format_func=method_title, key=f"arena_methods_{slow}"
    )
    steps = st.slider("Deletion / insertion steps", 3, 21, 11, key="arena_steps")
    orders = st.slider("Random orders per image", 2, 8, 4, key="arena_random_orders")
    sanity = st.checkbox("Cascading-randomisation sanity check", value=True, key="arena_sanity")
    settings = ArenaSettings(
        fractions=tuple(step / (steps - 1) for step in range(steps)),
        road_percentiles=ARENA_ROAD_PERCENTILES,
        random_orders=orders,
        sanity=sanity,
    )
    return tuple(methods), settings


def run_section(
    choice: ui.ModelChoice,
    loaded: LoadedModel,
    images: list[ArenaImage],
    methods: tuple[str, ...],
    settings: ArenaSettings,
    source: str,
) -> ArenaTable | None:
    """The start button, the running job's progress, and the table once it is there (None before).

    The arena is a background job (`background.job_button`: in a worker, or in this run for
    unseeded random weights); a visitor runs one arena at a time.

    Args:
        source: what `image_source` says was picked: with the images' names, it tells two arenas apart.
    """
    count = len(images)
    if count > MAX_ARENA_IMAGES:
        st.warning(
            f"The app scores the first {MAX_ARENA_IMAGES} of these {count} images; `vitviz arena` takes any number."
        )
        images = images[:MAX_ARENA_IMAGES]
    if not methods:
        st.info("Pick at least one method.")
        return None
    names = tuple(image.name for image in images)
    what = f"{_counted(len(methods), 'method')} on {_counted(len(images), 'image')}"

    def make_job() -> tuple[JobSpec, list[Image.Image]] | None:
        pictures = _decoded(images)  # only on the click: a set of uploads is decoded once
        if pictures is None:
            return None
        options = {"methods": list(methods), "names": list(names), "settings": settings.to_json()}
        return JobSpec(
            "arena", choice.name, choice.weights, choice.device, options, view=settings.view
        ), pictures

    return background.job_button(
        (ARENA, choice.name, choice.weights, choice.device, methods, settings, names, source),
        f"Run the arena: {what}",
        "arena_start",
        make_job,
        loaded,
        f"Arena of {what}",
        "An arena for other images, model or settings is running; this one can start after it.",
        primary=True,
    )


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _decoded(images: list[ArenaImage]) -> list[Image.Image] | None:
    pictures = []
    for image in images:
        try:
            pictures.append(image.load())
        except (ImageDecodeError, DataError, OSError) as error:
            st.error(f"{image.name}: {error}")
            return None
    return pictures


def render_table(table: ArenaTable, choice: ui.ModelChoice) -> None:
    """The verdict, the ranked table with each map as a thumbnail, the figure and the downloads."""
    st.markdown(f"**Verdict.** {table.verdict()}", help=_THRESHOLDS_HELP)
    image_index = 0
    if len(table.images) > 1:
        image_index = st.selectbox(
            "Thumbnails of",
            range(len(table.images)),
            format_func=lambda index: table.images[index],
            key="arena_thumbs",
        )
    rows = table.table_rows()
    for row, arena_row in zip(rows, table.rows, strict=True):
        row["map"] = png_data_uri(thumbnail_rgb(arena_row.maps[image_index]))
    st.dataframe(
        rows,
        column_order=["rank", "map", *[column for column in rows[0] if column not in ("rank", "map")]],
        column_config={"map": st.column_config.ImageColumn("map", width="small")},
        hide_index=True,
        key="arena_table",
    )
    randoms = ", ".join(f"{measure} {spread.text()}" for measure, spread in table.random.items())
    targets = "; ".join(
        f"{image}: {target}" for image, target in zip(table.images, table.targets, strict=True)
    )
    st.caption(f"Random order scored {randoms}. Class explained — {targets}.")
    figure = arena_figure(table, image_index)
    with st.expander("Figure"):
        ui.plotly_chart(figure, key="arena_figure", share=1.0)
    model = choice.run or table.model
    name = table.images[0] if len(table.images) == 1 else f"{len(table.images)}-images"
    ui.figure_downloads(figure, None, model, choice.weights, name, "arena", "arena_figure")
    files = (
        ("Table CSV", "table csv", "csv", "text/csv", lambda: arena_csv(table)),
        ("JSON", "table", "json", "application/json", lambda: json.dumps(table.to_json())),
        ("Maps .npz", "maps", "npz", "application/octet-stream", lambda: arena_maps_npz(table)),
    )
    with st.container(horizontal=True, gap="small", key="arena_table_downloads"):
        for label, view, ext, mime, make in files:
            st.download_button(
                label,
                data=make,
                file_name=export_filename(model, choice.weights, name, f"arena {view}", ext),
                mime=mime,
                key=f"arena_download_{ext}",
                on_click="ignore",
                icon=":material/download:",
            )


_THRESHOLDS_HELP = (
    "Each score is read against random order: several seeded random patch orders (deletion, insertion) "
    "and random maps (ROAD) on each image. 'Like random' means within two standard deviations of the random "
    "orders' mean; 'holds up' means better than that on all three scores and a map that changes "
    "(|Spearman ρ| ≤ 0.9) once the head and half the blocks are randomised. Over several images: medians."
)
