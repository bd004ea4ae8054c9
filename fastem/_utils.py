"""Chunked helpers that never build an (n, d) temporary."""

import numpy as np

_ROWS = 65536


def column_mean(X, sample_weight=None):
    """Weighted column means in float64."""
    total = np.zeros(X.shape[1])
    weight = 0.0
    for start in range(0, X.shape[0], _ROWS):
        x = X[start:start + _ROWS]
        w = None if sample_weight is None else sample_weight[start:start + _ROWS]
        if w is None:
            total += x.sum(axis=0, dtype=np.float64)
            weight += x.shape[0]
        else:
            total += w @ x.astype(np.float64)
            weight += w.sum()
    return total / weight


def column_variance(X):
    """Unweighted column variances (two passes, float64)."""
    mean = column_mean(X)
    total = np.zeros(X.shape[1])
    for start in range(0, X.shape[0], _ROWS):
        diff = X[start:start + _ROWS].astype(np.float64) - mean
        total += np.einsum("ij,ij->j", diff, diff)
    return total / X.shape[0]


def logsumexp_rows(a):
    """log(sum(exp(a), axis=1)), exact for rows of -inf."""
    top = np.max(a, axis=1)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore", under="ignore"):
        return top + np.log(np.sum(np.exp(a - top[:, None]), axis=1))
