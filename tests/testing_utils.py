"""Helpers shared by the test modules (imported, unlike conftest fixtures)."""

import numpy as np


def rel_err(actual, expected):
    """Largest absolute difference relative to the largest entry of ``expected``.

    Norm-wise rather than element-wise, so entries that are sums cancelling to
    nearly zero are judged on the scale of the whole array.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if expected.size == 0:
        return 0.0
    scale = np.max(np.abs(expected))
    diff = np.max(np.abs(actual - expected))
    if scale == 0.0:
        return float(diff)
    return float(diff / scale)
