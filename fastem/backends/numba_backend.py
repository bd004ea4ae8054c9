"""The numba backend: the kernel table as ``@njit(parallel=True)`` kernels.

Each parallel kernel runs ``prange`` over chunks; a chunk is processed by a
serial helper that writes only its own slot of the statistic buffers, so the
result does not depend on the number of threads.  Data are read in their own
dtype (float32 or float64); every sum is carried in float64.
"""

import numpy as np
from numba import prange

from ._numba_jit import parallel, serial

__all__ = [
    "estep_full", "estep_tied", "estep_diag", "estep_spherical",
    "estep_bernoulli", "sqdist",
]


@serial
def _assign(i, lp, hard, labels, log_prob, want_lp):
    """Turn row i's weighted log-probabilities ``lp`` into responsibilities.

    ``lp`` is overwritten with the responsibilities.  Returns the label,
    the row's log-likelihood (log-sum-exp, or the maximum when ``hard``) and
    whether the label changed.
    """
    k = lp.shape[0]
    if want_lp:
        for j in range(k):
            log_prob[i, j] = lp[j]
    best = 0
    top = lp[0]
    for j in range(1, k):
        if lp[j] > top:
            top = lp[j]
            best = j
    changed = labels[i] != best
    labels[i] = best
    if hard or top == -np.inf:
        for j in range(k):
            lp[j] = 0.0
        if hard:
            lp[best] = 1.0
        return best, top, changed
    total = 0.0
    for j in range(k):
        lp[j] = np.exp(lp[j] - top)
        total += lp[j]
    inv = 1.0 / total
    for j in range(k):
        lp[j] *= inv
    return best, top + np.log(total), changed


@serial
def _accumulate_moments(xi, w, resp, means, nk, sx):
    """nk_j += w r_j and sx_j += w r_j (x - m_j) for every component."""
    k, d = means.shape
    for j in range(k):
        r = w * resp[j]
        if r == 0.0:
            continue
        nk[j] += r
        for a in range(d):
            sx[j, a] += r * (xi[a] - means[j, a])


# --------------------------------------------------------------- full
@serial
def _estep_full_chunk(X, sample_weight, means, prec_chol, log_norm, hard, start,
                      stop, labels, log_prob, nk, sx, sxx, obj):
    k, d = means.shape
    want_lp = log_prob.shape[0] == X.shape[0]
    xi = np.empty(d)
    diff = np.empty(d)
    y = np.empty(d)
    lp = np.empty(k)
    maha = np.empty(k)
    nk[:] = 0.0
    sx[:] = 0.0
    sxx[:] = 0.0
    obj[:] = 0.0
    for i in range(start, stop):
        for a in range(d):
            xi[a] = X[i, a]
        for j in range(k):
            # y = (x - mu_j) U_j, U_j upper triangular
            for b in range(d):
                y[b] = 0.0
            for a in range(d):
                da = xi[a] - means[j, a]
                for b in range(a, d):
                    y[b] += da * prec_chol[j, a, b]
            m = 0.0
            for b in range(d):
                m += y[b] * y[b]
            maha[j] = m
            lp[j] = log_norm[j] - 0.5 * m
        best, ll, changed = _assign(i, lp, hard, labels, log_prob, want_lp)
        obj[2] += changed
        w = sample_weight[i]
        if w == 0.0:
            continue
        obj[0] += w * ll
        if hard:
            obj[1] += w * maha[best]
        _accumulate_moments(xi, w, lp, means, nk, sx)
        for j in range(k):
            r = w * lp[j]
            if r == 0.0:
                continue
            for a in range(d):
                diff[a] = xi[a] - means[j, a]
            for a in range(d):
                ra = r * diff[a]
                for b in range(a + 1):
                    sxx[j, a, b] += ra * diff[b]


@parallel
def estep_full(X, sample_weight, means, prec_chol, log_norm, center, hard,
               chunk_size, labels, log_prob, nk, sx, sxx, obj):
    n = X.shape[0]
    for c in prange(nk.shape[0]):
        start = c * chunk_size
        _estep_full_chunk(X, sample_weight, means, prec_chol, log_norm, hard, start,
                          min(n, start + chunk_size), labels, log_prob, nk[c],
                          sx[c], sxx[c], obj[c])


# --------------------------------------------------------------- tied
@serial
def _estep_tied_chunk(X, sample_weight, means, means_prec, prec_chol, log_norm,
                      center, hard, start, stop, labels, log_prob, nk, sx, sxx, obj):
    k, d = means.shape
    want_lp = log_prob.shape[0] == X.shape[0]
    xi = np.empty(d)
    y = np.empty(d)
    lp = np.empty(k)
    maha = np.empty(k)
    nk[:] = 0.0
    sx[:] = 0.0
    sxx[:] = 0.0
    obj[:] = 0.0
    for i in range(start, stop):
        for b in range(d):
            y[b] = 0.0
        for a in range(d):
            xi[a] = X[i, a]
            for b in range(a, d):
                y[b] += xi[a] * prec_chol[a, b]
        # (x - mu_j) U = x U - mu_j U
        for j in range(k):
            m = 0.0
            for b in range(d):
                t = y[b] - means_prec[j, b]
                m += t * t
            maha[j] = m
            lp[j] = log_norm[j] - 0.5 * m
        best, ll, changed = _assign(i, lp, hard, labels, log_prob, want_lp)
        obj[2] += changed
        w = sample_weight[i]
        if w == 0.0:
            continue
        obj[0] += w * ll
        if hard:
            obj[1] += w * maha[best]
        _accumulate_moments(xi, w, lp, means, nk, sx)
        for a in range(d):
            wa = w * (xi[a] - center[a])
            for b in range(a + 1):
                sxx[a, b] += wa * (xi[b] - center[b])


@parallel
def estep_tied(X, sample_weight, means, prec_chol, log_norm, center, hard,
               chunk_size, labels, log_prob, nk, sx, sxx, obj):
    n = X.shape[0]
    k, d = means.shape
    means_prec = np.zeros((k, d))
    for j in range(k):
        for a in range(d):
            for b in range(a, d):
                means_prec[j, b] += means[j, a] * prec_chol[a, b]
    for c in prange(nk.shape[0]):
        start = c * chunk_size
        _estep_tied_chunk(X, sample_weight, means, means_prec, prec_chol, log_norm,
                          center, hard, start, min(n, start + chunk_size), labels,
                          log_prob, nk[c], sx[c], sxx[c], obj[c])


# --------------------------------------------------------------- diag / spherical
@serial
def _estep_coordinate_chunk(X, sample_weight, means, precision, log_norm, hard,
                            start, stop, labels, log_prob, nk, sx, sxx, obj):
    """Diagonal covariances; ``precision`` (k, d) holds 1 / variance."""
    k, d = means.shape
    want_lp = log_prob.shape[0] == X.shape[0]
    xi = np.empty(d)
    lp = np.empty(k)
    maha = np.empty(k)
    nk[:] = 0.0
    sx[:] = 0.0
    sxx[:] = 0.0
    obj[:] = 0.0
    for i in range(start, stop):
        for a in range(d):
            xi[a] = X[i, a]
        for j in range(k):
            m = 0.0
            for a in range(d):
                t = xi[a] - means[j, a]
                m += t * t * precision[j, a]
            maha[j] = m
            lp[j] = log_norm[j] - 0.5 * m
        best, ll, changed = _assign(i, lp, hard, labels, log_prob, want_lp)
        obj[2] += changed
        w = sample_weight[i]
        if w == 0.0:
            continue
        obj[0] += w * ll
        if hard:
            obj[1] += w * maha[best]
        for j in range(k):
            r = w * lp[j]
            if r == 0.0:
                continue
            nk[j] += r
            for a in range(d):
                t = xi[a] - means[j, a]
                sx[j, a] += r * t
                sxx[j, a] += r * t * t


@parallel
def _estep_coordinate(X, sample_weight, means, precision, log_norm, hard,
                      chunk_size, labels, log_prob, nk, sx, sxx, obj):
    n = X.shape[0]
    for c in prange(nk.shape[0]):
        start = c * chunk_size
        _estep_coordinate_chunk(X, sample_weight, means, precision, log_norm, hard,
                                start, min(n, start + chunk_size), labels, log_prob,
                                nk[c], sx[c], sxx[c], obj[c])


def estep_diag(X, sample_weight, means, prec_chol, log_norm, center, hard,
               chunk_size, labels, log_prob, nk, sx, sxx, obj):
    _estep_coordinate(X, sample_weight, means, prec_chol ** 2, log_norm, hard,
                      chunk_size, labels, log_prob, nk, sx, sxx, obj)


def estep_spherical(X, sample_weight, means, prec_chol, log_norm, center, hard,
                    chunk_size, labels, log_prob, nk, sx, sxx, obj):
    precision = np.repeat((prec_chol ** 2)[:, None], means.shape[1], axis=1)
    _estep_coordinate(X, sample_weight, means, precision, log_norm, hard,
                      chunk_size, labels, log_prob, nk, sx, sxx, obj)


# --------------------------------------------------------------- Bernoulli
@serial
def _estep_bernoulli_chunk(X, sample_weight, logit, log_norm, hard, start, stop,
                           labels, log_prob, nk, sx, obj):
    k, d = logit.shape
    want_lp = log_prob.shape[0] == X.shape[0]
    xi = np.empty(d)
    lp = np.empty(k)
    nk[:] = 0.0
    sx[:] = 0.0
    obj[:] = 0.0
    for i in range(start, stop):
        for a in range(d):
            xi[a] = X[i, a]
        for j in range(k):
            s = log_norm[j]
            for a in range(d):
                s += xi[a] * logit[j, a]
            lp[j] = s
        best, ll, changed = _assign(i, lp, hard, labels, log_prob, want_lp)
        obj[2] += changed
        w = sample_weight[i]
        if w == 0.0:
            continue
        obj[0] += w * ll
        for j in range(k):
            r = w * lp[j]
            if r == 0.0:
                continue
            nk[j] += r
            for a in range(d):
                sx[j, a] += r * xi[a]


@parallel
def estep_bernoulli(X, sample_weight, logit, log_norm, hard, chunk_size, labels,
                    log_prob, nk, sx, obj):
    n = X.shape[0]
    for c in prange(nk.shape[0]):
        start = c * chunk_size
        _estep_bernoulli_chunk(X, sample_weight, logit, log_norm, hard, start,
                               min(n, start + chunk_size), labels, log_prob, nk[c],
                               sx[c], obj[c])


# --------------------------------------------------------------- distances
@serial
def _sqdist_chunk(X, centers, start, stop, out):
    m, d = centers.shape
    for i in range(start, stop):
        for j in range(m):
            s = 0.0
            for a in range(d):
                t = X[i, a] - centers[j, a]
                s += t * t
            out[i, j] = s


@parallel
def sqdist(X, centers, chunk_size, out):
    n = X.shape[0]
    n_chunks = (n + chunk_size - 1) // chunk_size
    for c in prange(n_chunks):
        start = c * chunk_size
        _sqdist_chunk(X, centers, start, min(n, start + chunk_size), out)
