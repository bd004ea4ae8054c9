"""Chunked helpers that never build an (n, d) temporary.

Each helper reads X a block of rows at a time and holds at most one float64
block (plus a boolean mask) at once; float64 input is read in place, never
copied.  ``column_mean`` keeps blocks of ``_ROWS`` rows, which fix the order of
its sums; the other helpers take blocks of about 1/32 of the rows
(:func:`row_blocks`), or of up to 2^17 values where that is more
(:func:`value_blocks`), so that their temporaries stay small beside X.
"""

import numpy as np

_ROWS = 65536


def row_blocks(n_samples, parts=32, low=1024, high=65536):
    """(start, stop) of consecutive row blocks: about ``n_samples / parts`` rows
    each, but at least ``low`` (few calls on small data) and at most ``high``."""
    rows = min(high, max(low, -(-n_samples // parts)))
    return [(start, min(n_samples, start + rows)) for start in range(0, n_samples, rows)]


def value_blocks(n_samples, n_features):
    """``row_blocks`` for loops that make a few (rows, n_features) temporaries
    a block: about 1/32 of the rows, or as many rows as hold 2^17 values (at
    most 16384) when that is more.  On small data each block costs a dozen
    numpy calls (and k-means++ a kernel call) whatever its size: k-means++
    at (1e4, 4, 3) took 4.4 ms in ten blocks of 1024 rows, 2.4-2.7 in one."""
    return row_blocks(n_samples, low=max(1024, min(16384, (1 << 17) // max(1, n_features))))


def weighted_sum(w, x):
    """``w @ x`` for a weight vector ``w`` (rows,) and a block ``x`` (rows,) or
    (rows, d), without BLAS.

    Multi-threaded BLAS (numpy's OpenBLAS) leaves its worker threads spinning
    for a while after a call this large; on a machine with as many cores as
    fastem threads they compete with the next compiled kernel.  One
    (65536, 16) ``w @ x`` before a two-thread K-means E-step at
    (1e6, 16, 16) made that E-step take 64 ms instead of 37 (medians of
    eight).  numpy's einsum sums the same products in its own loop, on the
    calling thread.
    """
    return np.einsum("i,i...->...", w, x)


def _as_float64(block):
    """The block itself if it is float64, else a float64 copy (layout kept)."""
    return block if block.dtype == np.float64 else block.astype(np.float64)


def column_mean(X, sample_weight=None, missing=False, return_weight=False):
    """Weighted column means in float64; with ``missing``, over observed entries.

    With ``return_weight``, also the weight each mean is over (NaN for a
    column of weight 0, without a warning: the caller checks the weights).
    """
    total = np.zeros(X.shape[1])
    weight = np.zeros(X.shape[1]) if missing else 0.0
    for start in range(0, X.shape[0], _ROWS):
        x = _as_float64(X[start:start + _ROWS])
        w = np.ones(x.shape[0]) if sample_weight is None else sample_weight[start:start + _ROWS]
        if missing:
            observed = ~np.isnan(x)
            total += weighted_sum(w, np.where(observed, x, 0.0))
            weight += weighted_sum(w, observed.astype(np.float64))
            del observed
        else:
            total += weighted_sum(w, x)
            weight += w.sum()
        del x  # before the next block is made: one block alive at a time
    if return_weight:
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / weight, weight
    return total / weight


def column_variance(X, missing=True):
    """Unweighted column variances (two passes, float64), over observed entries.

    ``missing=False`` promises that X has no NaN (the result is the same, with
    fewer temporaries).
    """
    mean = column_mean(X, missing=missing)
    total = np.zeros(X.shape[1])
    count = np.zeros(X.shape[1])
    for start, stop in value_blocks(*X.shape):
        diff = np.subtract(X[start:stop], mean, dtype=np.float64)
        nan = np.isnan(diff)
        diff[nan] = 0.0
        total += np.einsum("ij,ij->j", diff, diff)
        count += diff.shape[0] - nan.sum(axis=0)
        del diff, nan  # before the next block is made
    return total / count


def logsumexp_rows(a):
    """log(sum(exp(a), axis=1)), exact for rows of -inf."""
    top = np.max(a, axis=1)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore", under="ignore"):
        return top + np.log(np.sum(np.exp(a - top[:, None]), axis=1))
