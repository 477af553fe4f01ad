"""Comparing floats that two code paths made: within float32 rounding, never bit for bit.

Two ways of computing the same thing (a batched matmul against one per image, `baddbmm` against
`q * scale @ kᵀ`, one thread count against another) round differently, and by how much depends on
the CPU: on an AMD EPYC with MKL the capture's two matmul paths gave outputs 2.8e-7 apart where
another CPU gave identical bits. So such results are compared in units of float32's machine epsilon
scaled by the largest magnitude compared: a wrong scale, head or layer is off by far more than that.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["FLOAT32_EPS", "assert_same_up_to_float32_rounding"]

FLOAT32_EPS = torch.finfo(torch.float32).eps  # 2**-23 ≈ 1.19e-7


def assert_same_up_to_float32_rounding(
    actual: torch.Tensor | np.ndarray, expected: torch.Tensor | np.ndarray, ulps: float = 32.0
) -> None:
    """Asserts every element differs by at most `ulps` float32 epsilons of the largest |expected|.

    Args:
        actual: values from one code path.
        expected: the same quantity from another code path, same shape.
        ulps: how many epsilons of the largest magnitude are allowed. 32 leaves an eight-fold margin
            over the most measured between the capture's two paths (3.8, on AMD EPYC with
            AVX-512, AVX2 and no vector unit forced through `ATEN_CPU_CAPABILITY`).
    """
    # Copied from NumPy: a capture record's arrays are read-only, which torch will not wrap.
    actual = torch.tensor(actual) if isinstance(actual, np.ndarray) else actual
    expected = torch.tensor(expected) if isinstance(expected, np.ndarray) else expected
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    tolerance = ulps * FLOAT32_EPS * max(scale, torch.finfo(torch.float32).tiny)
    torch.testing.assert_close(actual.detach(), expected.detach(), rtol=0.0, atol=tolerance)
