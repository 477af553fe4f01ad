"""The `python -m vitviz` command line: the same library calls as the app, for a terminal."""
