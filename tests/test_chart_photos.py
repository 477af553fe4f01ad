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
