"""The reference backend: every kernel of the table in plain NumPy.

Written for clarity, not speed: it is the oracle the compiled backends are
tested against, and the backend of last resort.  Each chunk is handled with
whole-array NumPy operations; only chunk-sized temporaries are created.  Each
chunk is read as a C-contiguous float64 copy, so the rounding of the matrix
products does not depend on the memory layout of X.
"""

import numpy as np

from .. import _linalg

from ._table import (OBJ_CHANGED, OBJ_LOGLIK, OBJ_MAHA, check_labels, kmeans_without_bounds,
                     statistics_optional)

__all__ = [
    "estep_full", "estep_tied", "estep_diag", "estep_spherical", "estep_kmeans",
    "estep_bernoulli", "sqdist",
    "estep_full_missing", "estep_tied_missing", "estep_diag_missing",
    "estep_spherical_missing", "estep_bernoulli_missing", "sqdist_missing",
    "count_nonfinite", "prec_chol",
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
    if labels.shape[0] > 0:  # (0,): a soft iteration, which needs no labels
        obj[c, OBJ_CHANGED] = np.count_nonzero(labels[start:stop] != new_labels)
        labels[start:stop] = new_labels
    else:
        obj[c, OBJ_CHANGED] = 0
    if log_prob.shape[0] > 0:
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


@statistics_optional
def estep_full(X, sample_weight, means, prec_chol, log_norm, center, hard,
               chunk_size, labels, log_prob, nk, sx, sxx, obj):
    check_labels(X, labels, hard)
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


@statistics_optional
def estep_tied(X, sample_weight, means, prec_chol, log_norm, center, hard,
               chunk_size, labels, log_prob, nk, sx, sxx, obj):
    check_labels(X, labels, hard)
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
            squares = (x - means[j]) ** 2
            # spherical: one sum over the features (the table's (C, k) statistic)
            sxx[c, j] = wresp[:, j] @ (squares if sxx.ndim == 3 else squares.sum(axis=1))

    _gaussian_estep(maha_fn, accumulate_sxx, X, sample_weight, means, log_norm,
                    hard, chunk_size, labels, log_prob, nk, sx, obj)


@statistics_optional
def estep_diag(X, sample_weight, means, prec_chol, log_norm, center, hard,
               chunk_size, labels, log_prob, nk, sx, sxx, obj):
    check_labels(X, labels, hard)
    _estep_per_coordinate(prec_chol ** 2, X, sample_weight, means, log_norm, hard,
                          chunk_size, labels, log_prob, nk, sx, sxx, obj)


@statistics_optional
def estep_spherical(X, sample_weight, means, prec_chol, log_norm, center, hard,
                    chunk_size, labels, log_prob, nk, sx, sxx, obj):
    check_labels(X, labels, hard)
    precision = np.repeat((prec_chol ** 2)[:, None], means.shape[1], axis=1)
    _estep_per_coordinate(precision, X, sample_weight, means, log_norm, hard,
                          chunk_size, labels, log_prob, nk, sx, sxx, obj)


# no bounds kept: the hard estep_spherical
estep_kmeans = kmeans_without_bounds(estep_spherical)


@statistics_optional
def estep_bernoulli(X, sample_weight, logit, log_norm, hard, chunk_size,
                    labels, log_prob, nk, sx, obj):
    check_labels(X, labels, hard)
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


# ---------------------------------------------------------------- missing values
#
# NaN entries are missing at random.  A row's log-density is the marginal of its
# observed coordinates o; with the precision Lambda of a component and m the
# missing coordinates (Schur complement of Lambda_mm):
#   Sigma_oo^-1 = Lambda_oo - Lambda_om Lambda_mm^-1 Lambda_mo,
#   log det Sigma_oo = log det Sigma + log det Lambda_mm,
#   E[x_m | x_o] = mu_m - Lambda_mm^-1 Lambda_mo (x_o - mu_o),
#   Cov[x_m | x_o] = Lambda_mm^-1.
# The statistics are the expected ones (Ghahramani & Jordan, 1994): the
# conditional mean fills the missing coordinates and the conditional covariance
# is added to the second moment.  Rows are grouped by missingness pattern
# within a chunk, so each pattern's factorizations are done once.

def _patterns(miss):
    """(pattern masks, row indices of each pattern) of a chunk's NaN mask."""
    masks, inverse = np.unique(miss, axis=0, return_inverse=True)
    inverse = np.ravel(inverse)
    return [(masks[p], np.flatnonzero(inverse == p)) for p in range(masks.shape[0])]


def _gaussian_missing(cov_type, X, sample_weight, means, prec_chol, log_norm, center,
                      hard, chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj):
    k, d = means.shape
    if cov_type in ("full", "tied"):
        factors = prec_chol if cov_type == "full" else np.broadcast_to(prec_chol, (k, d, d))
        precisions = factors @ np.swapaxes(factors, 1, 2)
    else:
        pc = prec_chol if cov_type == "diag" else np.repeat(prec_chol[:, None], d, axis=1)
        precisions = pc ** 2  # (k, d): 1 / variance
    for c, start, stop in _chunks(X.shape[0], chunk_size):
        x = np.ascontiguousarray(X[start:stop], dtype=np.float64)
        miss = np.isnan(x)
        rows_total = x.shape[0]
        lp = np.empty((rows_total, k))
        maha = np.empty((rows_total, k))
        dhat = np.zeros((rows_total, k, d))      # E[x | x_o, j] - means_j
        cond = []                                 # (rows, missing mask, (k, q, q) covariances)
        for mask, rows in _patterns(miss):
            obs = ~mask
            q = int(mask.sum())
            covs = np.zeros((k, q, q))
            for j in range(k):
                delta = np.where(mask, 0.0, x[rows] - means[j])
                if cov_type in ("full", "tied"):
                    lam = precisions[j]
                    quad = np.einsum("ra,ab,rb->r", delta, lam, delta)
                    if q:
                        lam_mm = lam[np.ix_(mask, mask)]
                        chol = np.linalg.cholesky(lam_mm)
                        g = delta[:, obs] @ lam[np.ix_(obs, mask)]   # Lambda_mo delta_o
                        z = np.linalg.solve(lam_mm, g.T).T
                        quad = quad - np.sum(g * z, axis=1)
                        half_log_det_mm = np.sum(np.log(np.diag(chol)))
                        covs[j] = np.linalg.inv(lam_mm)
                        delta[:, mask] = -z
                    else:
                        half_log_det_mm = 0.0
                    correction = half_log_det_mm
                else:
                    quad = np.sum(delta ** 2 * precisions[j], axis=1)
                    # log det of the missing variances' precisions, halved
                    correction = 0.5 * np.sum(np.log(precisions[j][mask]))
                    covs[j] = np.diag(1.0 / precisions[j][mask])
                maha[rows, j] = quad
                lp[rows, j] = log_norm[j] + 0.5 * q * np.log(2 * np.pi) - correction - 0.5 * quad
                dhat[rows, j] = delta
            cond.append((rows, mask, covs))
        wresp, new_labels = _finish_chunk(c, start, stop, lp, hard, sample_weight,
                                          labels, log_prob, obj)
        obj[c, OBJ_MAHA] = (
            np.sum(sample_weight[start:stop] * maha[np.arange(rows_total), new_labels])
            if hard else 0.0
        )
        nk[c] = wresp.sum(axis=0)
        nko[c] = wresp.T @ (~miss)
        for j in range(k):
            sx[c, j] = wresp[:, j] @ dhat[:, j]
        if cov_type == "full":
            for j in range(k):
                sxx[c, j] = (wresp[:, j, None] * dhat[:, j]).T @ dhat[:, j]
                for rows, mask, covs in cond:
                    sxx[c, j][np.ix_(mask, mask)] += wresp[rows, j].sum() * covs[j]
        elif cov_type == "tied":
            sxx[c] = 0.0
            for j in range(k):
                centred = dhat[:, j] + (means[j] - center)
                sxx[c] += (wresp[:, j, None] * centred).T @ centred
            for rows, mask, covs in cond:
                # the conditional covariance is the same for every component
                sxx[c][np.ix_(mask, mask)] += sample_weight[start + rows].sum() * covs[0]
        else:
            for j in range(k):
                expected = dhat[:, j] ** 2 + miss / precisions[j]
                sxx[c, j] = wresp[:, j] @ (expected if cov_type == "diag"
                                           else expected.sum(axis=1))
        if imputed.shape[0] == X.shape[0]:
            resp = _responsibilities(lp, hard)[0]  # one-hot when hard
            filled = np.einsum("rj,rja->ra", resp, dhat + means[None, :, :])
            imputed[start:stop] = np.where(miss, filled, x)


def estep_full_missing(X, sample_weight, means, prec_chol, log_norm, center, hard,
                       chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj):
    check_labels(X, labels, hard)
    _gaussian_missing("full", X, sample_weight, means, prec_chol, log_norm, center,
                      hard, chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj)


def estep_tied_missing(X, sample_weight, means, prec_chol, log_norm, center, hard,
                       chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj):
    check_labels(X, labels, hard)
    _gaussian_missing("tied", X, sample_weight, means, prec_chol, log_norm, center,
                      hard, chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj)


def estep_diag_missing(X, sample_weight, means, prec_chol, log_norm, center, hard,
                       chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj):
    check_labels(X, labels, hard)
    _gaussian_missing("diag", X, sample_weight, means, prec_chol, log_norm, center,
                      hard, chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj)


def estep_spherical_missing(X, sample_weight, means, prec_chol, log_norm, center, hard,
                            chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj):
    check_labels(X, labels, hard)
    _gaussian_missing("spherical", X, sample_weight, means, prec_chol, log_norm, center,
                      hard, chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj)


def estep_bernoulli_missing(X, sample_weight, logit, log_norm, log_q, hard, chunk_size,
                            labels, log_prob, nk, nko, sx, obj):
    check_labels(X, labels, hard)
    for c, start, stop in _chunks(X.shape[0], chunk_size):
        x = np.ascontiguousarray(X[start:stop], dtype=np.float64)
        miss = np.isnan(x)
        x0 = np.where(miss, 0.0, x)
        # drop the missing coordinates' terms: log(1 - p) for each missing j
        lp = log_norm[None, :] + x0 @ logit.T - miss @ log_q.T
        wresp, _ = _finish_chunk(c, start, stop, lp, hard, sample_weight, labels,
                                 log_prob, obj)
        obj[c, OBJ_MAHA] = 0.0
        nk[c] = wresp.sum(axis=0)
        nko[c] = wresp.T @ (~miss)
        sx[c] = wresp.T @ x0


def sqdist_missing(X, centers, chunk_size, out):
    for _, start, stop in _chunks(X.shape[0], chunk_size):
        x = np.ascontiguousarray(X[start:stop], dtype=np.float64)
        out[start:stop] = np.stack(
            [np.nansum((x - c) ** 2, axis=1) for c in centers], axis=1
        )


# ---------------------------------------------------------------- validation
def count_nonfinite(X, chunk_size, out):
    for c, start, stop in _chunks(X.shape[0], chunk_size):
        x = X[start:stop]
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.sum(x)):  # no NaN or infinity (nor an overflow)
                out[c] = 0.0
                continue
        out[c, 0] = np.count_nonzero(np.isnan(x))
        out[c, 1] = np.count_nonzero(np.isinf(x))


# ---------------------------------------------------------------- M-step
def _first_failing(L):
    """The index of the first factor with a diagonal entry not above 0 (LAPACK
    passes NaN through without an error), else -1."""
    bad = np.flatnonzero(~np.all(np.diagonal(L, axis1=-2, axis2=-1) > 0, axis=-1))
    return int(bad[0]) if bad.size else -1


def prec_chol(covariances, out):
    try:
        L = np.linalg.cholesky(covariances)
    except np.linalg.LinAlgError:
        for j, matrix in enumerate(covariances):
            try:
                if _first_failing(np.linalg.cholesky(matrix)[None]) == 0:
                    return j
            except np.linalg.LinAlgError:
                return j
        raise
    bad = _first_failing(L)
    if bad >= 0:
        return bad
    out[...] = np.swapaxes(_linalg._invert_lower(L), -1, -2)
    return -1
