"""Streamlit glue shared by the pages, one module per concern; this is the face the pages import.

- `choices`: what a visitor picked (`ModelChoice`, `ImageChoice`) and the model a page opens on.
- `caches`: the shared model cache and the results derived from its models.
- `pickers`: the sidebar's model, image and view pickers, the uploader, the model's caption.
- `links`: a page's state read from and written to the URL.
- `charts`: figures sent to the page, clicks read from them, their download buttons.
"""

from pages.views.ui import caches, charts, choices, links, pickers
from pages.views.ui.caches import *  # noqa: F403
from pages.views.ui.charts import *  # noqa: F403
from pages.views.ui.choices import *  # noqa: F403
from pages.views.ui.links import *  # noqa: F403
from pages.views.ui.navigation import use_app_navigation
from pages.views.ui.pickers import *  # noqa: F403

# Each concern module's `__all__` says what it offers the pages; this face offers all of them.
__all__ = [*caches.__all__, *charts.__all__, *choices.__all__, *links.__all__, *pickers.__all__]

# The first page run to import this package on a fresh server hands deep links to app.py.
use_app_navigation()
