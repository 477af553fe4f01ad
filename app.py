"""vitviz: the Streamlit app's entry point; each page lives in pages/."""

import streamlit as st

from pages.views import frame

frame.configure_page()

# One line per page, in menu order; Explore opens first. Material icons ship with Streamlit,
# so they render on machines without an emoji font.
PAGES = [
    st.Page("pages/explore.py", title="Explore", icon=":material/visibility:", default=True),
    st.Page("pages/anatomy.py", title="Anatomy", icon=":material/biotech:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/arena.py", title="Arena", icon=":material/leaderboard:"),
    st.Page("pages/finetune.py", title="Fine-tune", icon=":material/model_training:"),
    st.Page("pages/present.py", title="Present", icon=":material/slideshow:"),
]

# ?present=1 on any page's URL opens presentation mode: the Present page, with no navigation shown.
presenting = st.query_params.get("present") == "1"
page = st.navigation(PAGES, position="hidden" if presenting else "sidebar")
if presenting and page.url_path != "present":
    st.switch_page("pages/present.py", query_params=st.query_params.to_dict())


# A session's first run also sends a blank chart, so the browser fetches Plotly while the page works.
with frame.plotly_fetched_early():
    page.run()
