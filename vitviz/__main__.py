"""Entry point of `python -m vitviz`."""

import sys

from vitviz.cli.main import main

sys.exit(main())
