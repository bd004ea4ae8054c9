"""The reference backend: every kernel of the table in plain NumPy.

Written for clarity, not speed: it is the oracle the compiled backends are
tested against, and the backend of last resort.  Each chunk is handled with
whole-array NumPy operations; only chunk-sized temporaries are created.  Each
chunk is read as a C-contiguous float64 copy, so the rounding of the matrix
products does not depend on the memory layout of X.
"""

import numpy as np

from ._table import OBJ_CHANGED, OBJ_LOGLIK, OBJ_MAHA

__all__ = [
    "estep_full", "estep_tied", "estep_diag", "estep_spherical",
    "estep_bernoulli", "sqdist",
]


def _chunks(n, chunk_size):
    for c, start in enumerate(range(0, n, chunk_size)):
        yield c, start, min(n, start + chunk_size)


def _responsibilities(log_prob, hard):
    """Turn weighted log-probabilities (m, k) into (resp, ll, labels)."""
    labels = np.argmax(log_prob, axis=1)
    top = log_prob[np.arange(log_prob.shape[0]), labels]
    if hard:
        resp = np.zeros_like(log_prob)
        resp[np.arange(log_prob.shape[0]), labels] = 1.0
        return resp, top, labels
    # log-sum-exp, safe for rows whose entries are all -inf
    finite_top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(under="ignore"):
        shifted = np.exp(log_prob - finite_top[:, None])
    ll = finite_top + np.log(shifted.sum(axis=1))
    with np.errstate(invalid="ignore", under="ignore"):
        resp = np.exp(log_prob - ll[:, None])
    resp[~np.isfinite(ll)] = 0.0
    return resp, ll, labels


def _finish_chunk(c, start, stop, log_prob_chunk, hard, sample_weight, labels,
                  log_prob, obj):
    """Shared tail of every E-step: labels, objective, optional log_prob."""
    resp, ll, new_labels = _responsibilities(log_prob_chunk, hard)
    w = sample_weight[start:stop]
    obj[c, OBJ_LOGLIK] = np.sum(w * ll) if np.any(w) else 0.0
    obj[c, OBJ_CHANGED] = np.count_nonzero(labels[start:stop] != new_labels)
    labels[start:stop] = new_labels
    if log_prob.shape[0] == labels.shape[0]:
        log_prob[start:stop] = log_prob_chunk
    return resp * w[:, None], new_labels


def _gaussian_estep(maha_fn, accumulate_sxx, X, sample_weight, means, log_norm,
                    hard, chunk_size, labels, log_prob, nk, sx, obj):
    k = means.shape[0]
    for c, start, stop in _chunks(X.shape[0], chunk_size):
        x = np.ascontiguousarray(X[start:stop], dtype=np.float64)
        maha = maha_fn(x)  # (m, k) squared Mahalanobis distances
        lp = log_norm[None, :] - 0.5 * maha
        wresp, new_labels = _finish_chunk(c, start, stop, lp, hard, sample_weight,
                                          labels, log_prob, obj)
        rows = np.arange(x.shape[0])
        obj[c, OBJ_MAHA] = (
            np.sum(sample_weight[start:stop] * maha[rows, new_labels]) if hard else 0.0
        )
        nk[c] = wresp.sum(axis=0)
        for j in range(k):
            diff = x - means[j]
            sx[c, j] = wresp[:, j] @ diff
        accumulate_sxx(c, start, stop, x, wresp)


def estep_full(X, sample_weight, means, prec_chol, log_norm, center, hard,
               chunk_size, labels, log_prob, nk, sx, sxx, obj):
    k = means.shape[0]

    def maha_fn(x):
        # y = (x - mu_k) U_k with U_k the upper-triangular precision factor
        return np.stack(
            [np.sum(((x - means[j]) @ prec_chol[j]) ** 2, axis=1) for j in range(k)],
            axis=1,
        )

    def accumulate_sxx(c, start, stop, x, wresp):
        for j in range(k):
            diff = x - means[j]
            sxx[c, j] = (wresp[:, j, None] * diff).T @ diff

    _gaussian_estep(maha_fn, accumulate_sxx, X, sample_weight, means, log_norm,
                    hard, chunk_size, labels, log_prob, nk, sx, obj)


def estep_tied(X, sample_weight, means, prec_chol, log_norm, center, hard,
               chunk_size, labels, log_prob, nk, sx, sxx, obj):
    def maha_fn(x):
        return np.stack(
            [np.sum(((x - mu) @ prec_chol) ** 2, axis=1) for mu in means], axis=1
        )

    def accumulate_sxx(c, start, stop, x, wresp):
        diff = x - center
        sxx[c] = (sample_weight[start:stop, None] * diff).T @ diff

    _gaussian_estep(maha_fn, accumulate_sxx, X, sample_weight, means, log_norm,
                    hard, chunk_size, labels, log_prob, nk, sx, obj)


def _estep_per_coordinate(precision, X, sample_weight, means, log_norm, hard,
                          chunk_size, labels, log_prob, nk, sx, sxx, obj):
    """Diagonal and spherical: ``precision`` is (k, d), 1 / variance."""
    k = means.shape[0]

    def maha_fn(x):
        return np.stack(
            [np.sum((x - means[j]) ** 2 * precision[j], axis=1) for j in range(k)],
            axis=1,
        )

    def accumulate_sxx(c, start, stop, x, wresp):
        for j in range(k):
            sxx[c, j] = wresp[:, j] @ (x - means[j]) ** 2

    _gaussian_estep(maha_fn, accumulate_sxx, X, sample_weight, means, log_norm,
                    hard, chunk_size, labels, log_prob, nk, sx, obj)


def estep_diag(X, sample_weight, means, prec_chol, log_norm, center, hard,
               chunk_size, labels, log_prob, nk, sx, sxx, obj):
    _estep_per_coordinate(prec_chol ** 2, X, sample_weight, means, log_norm, hard,
                          chunk_size, labels, log_prob, nk, sx, sxx, obj)


def estep_spherical(X, sample_weight, means, prec_chol, log_norm, center, hard,
                    chunk_size, labels, log_prob, nk, sx, sxx, obj):
    precision = np.repeat((prec_chol ** 2)[:, None], means.shape[1], axis=1)
    _estep_per_coordinate(precision, X, sample_weight, means, log_norm, hard,
                          chunk_size, labels, log_prob, nk, sx, sxx, obj)


def estep_bernoulli(X, sample_weight, logit, log_norm, hard, chunk_size,
                    labels, log_prob, nk, sx, obj):
    for c, start, stop in _chunks(X.shape[0], chunk_size):
        x = np.ascontiguousarray(X[start:stop], dtype=np.float64)
        # log p(x | k) = sum_j x_j log p_kj + (1 - x_j) log(1 - p_kj)
        lp = log_norm[None, :] + x @ logit.T
        wresp, _ = _finish_chunk(c, start, stop, lp, hard, sample_weight, labels,
                                 log_prob, obj)
        obj[c, OBJ_MAHA] = 0.0
        nk[c] = wresp.sum(axis=0)
        sx[c] = wresp.T @ x


def sqdist(X, centers, chunk_size, out):
    for _, start, stop in _chunks(X.shape[0], chunk_size):
        x = np.ascontiguousarray(X[start:stop], dtype=np.float64)
        out[start:stop] = np.stack(
            [np.sum((x - c) ** 2, axis=1) for c in centers], axis=1
        )
