"""The Present page's session-state keys, the story's fixed choices, and seeding them from a link."""

from __future__ import annotations

import streamlit as st

from pages.views import ui
from vitviz.figures.story import SLIDE_KEYS, SlideKey
from vitviz.images import BUILTIN_PHOTOS
from vitviz.models import SUGGESTED_MODELS
from vitviz.preprocess import ViewMode
from vitviz.share import parse_view_state
from vitviz.text import clipped

__all__ = [
    "APP_RERUN",
    "BUILT_IN",
    "CLASS_MAP_METHODS",
    "CNN_NAME",
    "DARK",
    "DEFAULT_MODEL",
    "DISPLAY_PX",
    "FIGURE_HEIGHT",
    "FULLSCREEN",
    "IMAGE",
    "MODEL",
    "PAIR_IMAGE",
    "PHOTO",
    "POSITION",
    "SLIDE",
    "SOURCE",
    "STORY_MODELS",
    "STORY_VIEWS",
    "UPLOAD",
    "UPLOAD_ID",
    "VIEW",
    "VIEW_CHOICE",
    "VIEW_SLIDES",
    "seed_session",
]

SLIDE = "present_slide"  # index of the slide on screen
DARK = "present_dark"  # theme toggle
FULLSCREEN = "present_fullscreen"  # presentation-mode toggle, mirrored by ?present=1
IMAGE = "present_image"  # the ImageChoice shown; kept while the picker (slide 1 only) is off screen
UPLOAD_ID = "present_upload_id"  # file id of the decoded upload, so it is decoded once
MODEL = "present_model"  # (timm name, weights) of the transformer the story follows
POSITION = "present_position"  # grid position of the position-embedding slide
SOURCE = "present_source"  # picker values kept while slide 1 is off screen
PHOTO = "present_photo"
VIEW = "present_view"  # the view picker (ui.view_picker), drawn on the slides that show the image
VIEW_CHOICE = "present_view_choice"  # the view, kept while its picker is off screen
# The views the story offers, as its first slide names the box. Not "aspect": the story's slides are
# drawn for a square grid.
STORY_VIEWS: tuple[ViewMode, ...] = ("crop", "whole")  # the views the story offers
PAIR_IMAGE = "present_pair_image"  # which held-out image of a trained pair's data the last slide shows
APP_RERUN = "present_app_rerun"  # set by a toggle whose change the whole app must see, not only the slide
CNN_NAME = "tf_efficientnet_lite0"  # the bundled CNN of the last slide, when no pair of classifiers loads
# The class-specific map of each side of a pair: Grad-CAM for a CNN, Chefer's relevance for a transformer.
CLASS_MAP_METHODS = {"cnn": "gradcam", "vit": "chefer", "hybrid": "chefer"}
VIEW_SLIDES: frozenset[SlideKey] = frozenset(SLIDE_KEYS) - {"tokens"}  # slides drawn from the view
DEFAULT_MODEL = ("vit_small_patch14_dinov2", "bundled")
BUILT_IN, UPLOAD = "Built-in photo", "Upload"
# The transformers a presenter may pick: the suggested models minus the CNNs.
STORY_MODELS = [name for name, text in SUGGESTED_MODELS if "CNN" not in text]
# Tall enough to read across a room, short enough that every slide fits a 1440×1000 screen unscrolled
# (the browser test measures it).
FIGURE_HEIGHT = 450
# The main area beside the sidebar on the 1440-px screen the slides are laid out for: what a slide
# figure's title is fitted to (a share of it).
SLIDE_MAIN_PX = 960
DISPLAY_PX = 1024  # longest side of the photo drawn on the first slide


# Session state --------------------------------------------------------------------------------


def seed_session() -> list[str]:
    """Takes slide, theme, image and model from the URL at a session's first run, then fills defaults.

    Returns:
        Notes naming what the link asked for that the story cannot show.
    """
    notes = _seed_from_link()
    for key, default in (
        (SLIDE, 0),
        (MODEL, DEFAULT_MODEL),
        (SOURCE, BUILT_IN),
        (PHOTO, next(iter(BUILTIN_PHOTOS))),
    ):
        if key not in st.session_state:
            st.session_state[key] = default
    if IMAGE not in st.session_state or (
        st.session_state[SOURCE] == BUILT_IN and st.session_state[IMAGE].name != st.session_state[PHOTO]
    ):
        st.session_state[IMAGE] = ui.photo_choice(st.session_state[PHOTO])
    return notes


def _seed_from_link() -> list[str]:
    params = ui.url_params_once("present")
    if params is None:
        return []
    state, notes = parse_view_state(params, ui.view_limits(DEFAULT_MODEL[0]))
    if state.model in STORY_MODELS:
        st.session_state[MODEL] = (state.model, state.weights)
    elif "model" in params and state.model != DEFAULT_MODEL[0]:
        notes.append(f"model={state.model!r} (the story offers {', '.join(STORY_MODELS)})")
    if state.image is not None:
        st.session_state[PHOTO] = state.image
    if params.get("view") in STORY_VIEWS:
        st.session_state[VIEW_CHOICE] = params["view"]
    slide = params.get("slide", "1")
    # ASCII digits only, and few of them: "²" passes str.isdigit() and int() refuses it, and int()
    # refuses strings of over 4,300 digits.
    if slide.isascii() and slide.isdigit() and len(slide) <= 3 and 1 <= int(slide) <= len(SLIDE_KEYS):
        st.session_state[SLIDE] = int(slide) - 1
    else:
        shown = clipped(slide, 20)
        notes.append(f"slide={shown!r} (slides are 1–{len(SLIDE_KEYS)})")
    st.session_state[DARK] = params.get("theme") == "dark"
    st.session_state[FULLSCREEN] = params.get("present") == "1"
    return notes
