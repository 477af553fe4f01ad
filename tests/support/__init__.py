"""Helpers shared by the test modules: tiny models, browsers, archives, run folders, polling with a deadline."""
