"""Helpers shared by the tests: archives, run folders and polling with a deadline."""
