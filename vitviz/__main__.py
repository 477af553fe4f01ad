"""Entry point of `python -m vitviz`."""

import sys

from vitviz.cli import main

sys.exit(main())
