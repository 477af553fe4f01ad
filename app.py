"""vitviz: the Streamlit app's entry point; each page lives in pages/."""

import streamlit as st

st.set_page_config(page_title="vitviz — see how Vision Transformers work", page_icon="🔍", layout="wide")

# One line per page, in menu order; Explore opens first.
PAGES = [
    st.Page("pages/explore.py", title="Explore", icon="🔍", default=True),
]

st.navigation(PAGES).run()
