"""A chart's photo travels as a media file the browser can keep, and the figure a page exports keeps its own copy."""

import json

from streamlit.testing.v1 import AppTest


def _map_page() -> None:
    import numpy as np
    import streamlit as st

    from pages.views import ui
    from vitviz.figures.common import attention_overlay_figure

    pixels = np.zeros((224, 224, 3), np.uint8)
    pixels[:112] = (200, 40, 40)
    values = np.linspace(0, 1, 256).reshape(16, 16)
    figure = attention_overlay_figure(pixels, values, (14, 14), "a map")
    ui.plotly_chart(figure, key="map")
    st.session_state["kept"] = (figure.data[0].source[:22], figure.data[0].visible, len(figure.layout.images))


def test_the_photo_is_a_media_file_under_the_map_and_the_figure_is_given_back_whole():
    app = AppTest.from_function(_map_page).run()
    assert not app.exception, app.exception
    spec = json.loads(app.get("plotly_chart")[0].proto.spec)
    photo_trace = spec["data"][0]
    assert photo_trace["type"] == "image" and photo_trace["visible"] is False and "source" not in photo_trace
    assert "data:image" not in app.get("plotly_chart")[0].proto.spec
    (image,) = spec["layout"]["images"]
    assert "/media/" in image["source"] and image["source"].endswith(".jpg")
    # Pixel edges, as the image trace drew them: pixel (0, 0) is centred on (0, 0).
    assert (image["x"], image["y"], image["sizex"], image["sizey"]) == (-0.5, -0.5, 224, 224)
    assert (image["xref"], image["yref"], image["layer"], image["sizing"]) == ("x", "y", "below", "stretch")
    # The exported figure (downloads) still holds the photo itself.
    assert app.session_state["kept"] == ("data:image/jpeg;base64", None, 0)


def _kept_map_page() -> None:
    import numpy as np
    import streamlit as st
    from streamlit import runtime

    from pages.views import ui
    from vitviz.figures.common import attention_overlay_figure

    if "figure" not in st.session_state:  # built once, drawn on every run, as Explore keeps its grid
        st.session_state["built"] = st.session_state.get("built", 0) + 1
        values = np.linspace(0, 1, 256).reshape(16, 16)
        st.session_state["figure"] = attention_overlay_figure(
            np.zeros((224, 224, 3), np.uint8), values, (14, 14), "a map"
        )
    ui.plotly_chart(st.session_state["figure"], key="map")
    # Last run's orphans were removed before this run: the photo must still be there to be read.
    file_id = (
        st.session_state["figure"]._vitviz_served.spec["layout"]["images"][0]["source"].rsplit("/", 1)[1]
    )
    served = runtime.get_instance().media_file_mgr.read_file(file_id.split(".")[0])
    st.session_state["photo bytes"] = None if served is None else served.content[:2]


def test_a_kept_figure_drawn_again_sends_the_same_chart_and_keeps_its_photo_file():
    app = AppTest.from_function(_kept_map_page).run()
    first = app.get("plotly_chart")[0].proto.spec
    for _ in range(2):
        app.run()
    assert not app.exception and app.session_state["built"] == 1
    assert app.get("plotly_chart")[0].proto.spec == first
    assert app.session_state["photo bytes"] == b"\xff\xd8"  # the JPEG is still served


def test_a_photo_url_follows_the_base_path_the_app_is_served_under(monkeypatch):
    from pages.views.ui import charts

    monkeypatch.setattr(charts.st, "get_option", lambda name: {"server.baseUrlPath": "/vitviz/"}[name])
    assert charts._under_base_path("/media/abc.jpg") == "/vitviz/media/abc.jpg"
    monkeypatch.setattr(charts.st, "get_option", lambda name: {"server.baseUrlPath": ""}[name])
    assert charts._under_base_path("/media/abc.jpg") == "/media/abc.jpg"
