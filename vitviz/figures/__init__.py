"""Plotly figures: one module per surface, sharing the colour scales and image helpers of `common`."""
