"""Shareable links: a page's state lives in the URL's query parameters."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import streamlit as st

from pages.views.ui.choices import DEFAULT_MODEL
from vitviz.images import BUILTIN_PHOTOS
from vitviz.models import WEIGHTS_SOURCES
from vitviz.serving import is_visitor_run
from vitviz.share import TimmModelNames, ViewLimits

__all__ = ["sync_url", "take_link_choice", "url_notes", "url_params_once", "view_limits"]


def take_link_choice(
    params: Mapping[str, str],
    name: str,
    choices: Collection[str],
    state_key: str,
    notes: list[str],
    hint: str = "",
) -> None:
    """A link's `name` into the widget `state_key` when it is one of `choices`; else noted as ignored."""
    if name not in params:
        return
    if params[name] in choices:
        st.session_state[state_key] = params[name]
    else:
        notes.append(f"{name} {params[name][:40]!r}{hint}")


def url_params_once(page: str) -> dict[str, str] | None:
    """The URL's query parameters at the first run of `page` in this session; None on later runs.

    A link is read once, to seed the widgets; from then on the widgets write the URL.
    """
    flag = f"{page}_url_read"
    if flag in st.session_state:
        return None
    st.session_state[flag] = True
    return st.query_params.to_dict()


def sync_url(params: Mapping[str, str], keep: Collection[str] = ("present",)) -> None:
    """Makes the URL's query parameters say `params` (plus those named in `keep`), without a rerun."""
    current = st.query_params.to_dict()
    wanted = {name: current[name] for name in keep if name in current} | dict(params)
    if current != wanted:
        st.query_params.from_dict(wanted)


def url_notes(notes: list[str]) -> None:
    """One note naming every link parameter that was ignored in favour of its default."""
    if notes:
        st.info(
            "This link asked for something unavailable; defaults used instead of: " + "; ".join(notes) + "."
        )


class _LinkModels(TimmModelNames):
    """What a link's `model` may name: any timm model, or a finished run by its name."""

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or (isinstance(name, str) and is_visitor_run(name))


def view_limits(default_model: str = DEFAULT_MODEL) -> ViewLimits:
    """What a link may name in this app: any timm model or finished run, the named weights sources,
    the built-in photos."""
    return ViewLimits(
        models=_LinkModels(),
        weights=WEIGHTS_SOURCES,
        images=tuple(BUILTIN_PHOTOS),
        default_model=default_model,
    )
