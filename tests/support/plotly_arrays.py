"""Arrays out of a Plotly figure's JSON, as the browser receives them."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

__all__ = ["plotly_array"]


def plotly_array(value: Any) -> np.ndarray:
    """Plotly writes numpy arrays as {"dtype", "bdata" (base64), "shape"}; lists stay lists. float64 out."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = tuple(int(n) for n in str(value["shape"]).split(","))
        return flat.reshape(shape).astype(np.float64)
    return np.asarray(value, dtype=np.float64)
