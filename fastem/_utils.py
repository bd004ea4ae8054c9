"""Chunked helpers that never build an (n, d) temporary."""

import numpy as np

_ROWS = 65536


def has_nan(X):
    """True if any entry of X is NaN (X is known to hold no infinity)."""
    return any(np.isnan(np.sum(X[start:start + _ROWS], dtype=np.float64))
               for start in range(0, X.shape[0], _ROWS))


def column_mean(X, sample_weight=None, missing=False):
    """Weighted column means in float64; with ``missing``, over observed entries."""
    total = np.zeros(X.shape[1])
    weight = np.zeros(X.shape[1]) if missing else 0.0
    for start in range(0, X.shape[0], _ROWS):
        x = X[start:start + _ROWS].astype(np.float64)
        w = np.ones(x.shape[0]) if sample_weight is None else sample_weight[start:start + _ROWS]
        if missing:
            observed = ~np.isnan(x)
            total += w @ np.where(observed, x, 0.0)
            weight += w @ observed
        else:
            total += w @ x
            weight += w.sum()
    return total / weight


def column_variance(X):
    """Unweighted column variances (two passes, float64), over observed entries."""
    mean = column_mean(X, missing=True)
    total = np.zeros(X.shape[1])
    count = np.zeros(X.shape[1])
    for start in range(0, X.shape[0], _ROWS):
        diff = X[start:start + _ROWS].astype(np.float64) - mean
        observed = ~np.isnan(diff)
        diff = np.where(observed, diff, 0.0)
        total += np.einsum("ij,ij->j", diff, diff)
        count += observed.sum(axis=0)
    return total / count


def logsumexp_rows(a):
    """log(sum(exp(a), axis=1)), exact for rows of -inf."""
    top = np.max(a, axis=1)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore", under="ignore"):
        return top + np.log(np.sum(np.exp(a - top[:, None]), axis=1))
