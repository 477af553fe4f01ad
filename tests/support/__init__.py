"""Helpers shared by the tests: a real browser against `streamlit run`, AppTest drivers, tiny models."""
