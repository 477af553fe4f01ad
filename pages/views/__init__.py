"""Streamlit glue of the pages: shared widgets and caches in `ui`, one module per page."""
