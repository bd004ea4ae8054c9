"""The Cython backend: the kernel table compiled ahead of time, with OpenMP.

The kernels live in the extension modules ``_cython_kernels`` (complete
data) and ``_cython_missing`` (NaN entries), built by ``setup.py`` during
``pip install``; importing this module fails when they were not built, and
the dispatcher then falls back to the other backends.  On x86-64 they are
also built for AVX2 and FMA (``*_avx2``), and that build serves CPUs that
have both (``SIMD`` names the build in use; ``FASTEM_CYTHON_SIMD`` overrides
the choice).

The functions here are thin: they choose the float32 or float64 kernel from
``X``'s dtype, derive the small parameter arrays the compiled loops read
(transposed means, whitening matrices), hand every array but ``X`` over as
a flat C-contiguous float64 buffer, and pass fastem's thread count
(``fastem.get_num_threads()``; one for a call with little work,
``_config.threads_for``) to OpenMP.  ``X`` is read in place through
its strides, in any memory layout, and never copied or modified.  OUT arrays
that are not C-contiguous are filled through a contiguous copy.
"""

import os

import numpy as np

from .. import _config
from . import _cython_kernels as _ck_generic
from . import _cython_missing as _cm_generic
from . import _soft
from ._screen import screen_constants
from ._table import (check_labels, kmeans_without_bounds, second_moments_into_temporary,
                     second_moments_wanted, statistic_temporaries, statistics_optional,
                     statistics_wanted)

SIMD_CHOICES = ("auto", "avx2", "generic")


def _cpu_has_avx2_fma():
    """True if numpy's run-time CPU dispatch reports AVX2 and FMA3 (which
    includes the operating system's support for the AVX registers)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return False
    return bool(features.get("AVX2")) and bool(features.get("FMA3"))


def _select_build():
    """(kernels module, missing-value module, name) of the build to use.

    ``FASTEM_CYTHON_SIMD``: ``auto`` (default) takes the AVX2/FMA build when
    it was compiled and the CPU has both, else the generic one; ``generic``
    forces the generic build; ``avx2`` requires the AVX2/FMA build.
    """
    choice = os.environ.get("FASTEM_CYTHON_SIMD", "auto").strip().lower() or "auto"
    if choice not in SIMD_CHOICES:
        raise ValueError(f"environment variable FASTEM_CYTHON_SIMD={choice!r} must be one "
                         f"of {', '.join(SIMD_CHOICES)}")
    if choice == "generic":
        return _ck_generic, _cm_generic, "generic"
    if _cpu_has_avx2_fma():
        try:
            from . import _cython_kernels_avx2 as ck
            from . import _cython_missing_avx2 as cm
            return ck, cm, "avx2"
        except ImportError:
            if choice == "avx2":
                raise ImportError("FASTEM_CYTHON_SIMD=avx2, but fastem was installed "
                                  "without the AVX2/FMA build of its Cython extension")
    elif choice == "avx2":
        raise ValueError("FASTEM_CYTHON_SIMD=avx2, but this CPU lacks AVX2 or FMA")
    return _ck_generic, _cm_generic, "generic"


_ck, _cm, SIMD = _select_build()

__all__ = [
    "estep_full", "estep_tied", "estep_diag", "estep_spherical", "estep_kmeans",
    "estep_bernoulli", "sqdist",
    "estep_full_missing", "estep_tied_missing", "estep_diag_missing",
    "estep_spherical_missing", "estep_bernoulli_missing", "sqdist_missing",
    "count_nonfinite", "prec_chol",
]


# ---------------------------------------------------------------- argument helpers
def _data(X):
    """X as float32 or float64 whose strides are whole elements (no copy if so)."""
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if any(s % X.itemsize for s in X.strides) or not X.dtype.isnative:
        X = np.ascontiguousarray(X)
    return X


def _flat(a):
    """A small IN array as a flat C-contiguous float64 buffer."""
    return np.ascontiguousarray(a, dtype=np.float64).reshape(-1)


class _Outputs:
    """Flat C-contiguous views of OUT arrays, copied back on exit if needed."""

    def __init__(self, *arrays):
        self._pending = []
        self.flat = []
        for a in arrays:
            if a.flags.c_contiguous and a.flags.writeable:
                self.flat.append(a.reshape(-1))
            else:
                tmp = np.ascontiguousarray(a)
                if tmp is a:
                    tmp = a.copy()
                self._pending.append((a, tmp))
                self.flat.append(tmp.reshape(-1))

    def __enter__(self):
        return self.flat

    def __exit__(self, *exc):
        for a, tmp in self._pending:
            a[...] = tmp
        return False


def _labels(X, labels, hard):
    if labels.dtype != np.int64:
        raise TypeError(f"labels must be int64, got {labels.dtype}")
    check_labels(X, labels, hard)
    return labels


def _threads(work):
    """OpenMP threads for a call of about ``work`` multiply-adds (one below
    ``_config.SERIAL_WORK``: the pool is not woken for so little)."""
    return int(_config.threads_for(work))


def _upper(prec_chol):
    """Upper-triangular factors with their (unspecified) lower parts zeroed."""
    return np.triu(np.asarray(prec_chol, dtype=np.float64))


def _whitening(means, factors, center):
    """W (d, k d) = [U_1 | ... | U_k] and cw (k d,) = rows (mu_j - center) U_j."""
    k, d = means.shape
    W = np.ascontiguousarray(np.transpose(factors, (1, 0, 2)).reshape(d, k * d))
    cw = np.einsum("ja,jab->jb", means - center, factors).reshape(-1)
    return W.reshape(-1), np.ascontiguousarray(cw)


# ---------------------------------------------------------------- complete data
def estep_full(X, sample_weight, means, prec_chol, log_norm, center, hard,
               chunk_size, labels, log_prob, nk, sx, sxx, obj):
    if not hard and X.shape[1] <= _soft.PAIRS_MAX_D:
        _soft_estep("full", X, sample_weight, means, np.asarray(prec_chol, dtype=np.float64),
                    log_norm, chunk_size, labels, log_prob, nk, sx, sxx, obj)
        return
    if not statistics_wanted(nk):
        nk, sx, sxx, obj = statistic_temporaries("estep_full", X, np.shape(means)[0],
                                                 chunk_size)
    means = np.ascontiguousarray(means, dtype=np.float64)
    center = _flat(center)
    W, cw = _whitening(means, _upper(prec_chol), center)
    with _Outputs(_labels(X, labels, hard), log_prob, nk, sx, sxx, obj) as out:
        _ck.estep_full(_data(X), _flat(sample_weight), means.reshape(-1), W, cw,
                       _flat(log_norm), center, bool(hard), int(chunk_size), *out,
                       means.shape[0], _threads(np.size(X) * means.size))


def estep_tied(X, sample_weight, means, prec_chol, log_norm, center, hard,
               chunk_size, labels, log_prob, nk, sx, sxx, obj):
    if not hard and log_prob.shape[0] != X.shape[0]:
        # a fit's E-step (see _soft.tied_operands), as numba's
        c, shifted, G, A, W = _soft.tied_operands(np.asarray(means, dtype=np.float64),
                                                  np.asarray(prec_chol, dtype=np.float64),
                                                  _flat(log_norm), center)
        M, S = _soft_features(X, sample_weight, c, G, A, _LINEAR, chunk_size, labels,
                              log_prob, nk, obj, scatter=True)
        if statistics_wanted(nk):
            _soft.tied_statistics(M, S, shifted, W, nk, sx, sxx, obj)
        return
    if not statistics_wanted(nk):
        nk, sx, sxx, obj = statistic_temporaries("estep_tied", X, np.shape(means)[0],
                                                 chunk_size)
    means = np.ascontiguousarray(means, dtype=np.float64)
    center = _flat(center)
    U = _upper(prec_chol)
    cwT = np.ascontiguousarray(((means - center) @ U).T)
    with _Outputs(_labels(X, labels, hard), log_prob, nk, sx, sxx, obj) as out:
        _ck.estep_tied(_data(X), _flat(sample_weight), means.reshape(-1), _flat(U),
                       cwT.reshape(-1), _flat(log_norm), center, bool(hard),
                       int(chunk_size), *out, means.shape[0],
                       _threads(np.size(X) * (means.shape[0] + means.shape[1])))


def _coordinate_hard(X, sample_weight, means, precision, spherical, log_norm, chunk_size,
                     labels, log_prob, nk, sx, sxx, obj):
    means = np.ascontiguousarray(means, dtype=np.float64)
    with _Outputs(_labels(X, labels, True), log_prob, nk, sx, sxx, obj) as out:
        _ck.estep_coordinate_hard(_data(X), _flat(sample_weight), means.reshape(-1),
                                  _flat(means.T), _flat(precision.T), spherical,
                                  _flat(log_norm), int(chunk_size), *out, means.shape[0],
                                  _threads(3 * np.size(X) * means.shape[0]))


def _soft_features(X, sample_weight, c, G, A, features, chunk_size, labels, log_prob, nk,
                   obj, scatter=False):
    """The soft E-step on a feature map of ``_soft``: the moments (C, k, mp) about c,
    and with ``scatter`` the features' scatters (C, m, m), exact on and below the
    diagonal; with statistics off (``nk`` with no rows), the labels and log_prob
    only, and empty moments."""
    m, k = G.shape
    mp = (m + 7) // 8 * 8 if scatter else (m + 3) // 4 * 4
    GT = np.zeros((mp, k))
    GT[:m] = G
    M = np.empty((nk.shape[0], k, mp))
    S = np.empty((nk.shape[0] if scatter else 0, mp, mp))
    with _Outputs(_labels(X, labels, False), log_prob, nk, obj) as out:
        _ck.estep_soft_features(_data(X), _flat(sample_weight), _flat(c), GT.reshape(-1),
                                _flat(A), features, int(chunk_size), out[0], out[1], out[2],
                                M.reshape(-1), out[3], S.reshape(-1), k, mp,
                                _threads(np.shape(X)[0] * (2 if nk.shape[0] else 1) * k * mp))
    if scatter:
        return M, S[:, :m, :m]
    return M


_NO_PRECISION = np.zeros((0, 0))
_NO_NKO = np.zeros((0, 0, 0))


def _soft_estep(model, X, sample_weight, means, precision, log_norm, chunk_size, labels,
                log_prob, nk, sx, sxx, obj):
    """The soft full, diagonal or spherical E-step through ``_soft``'s feature map."""
    operands, features = _soft.MODELS[model]
    c, shifted, G, A = operands(np.asarray(means, dtype=np.float64), precision,
                                _flat(log_norm))
    M = _soft_features(X, sample_weight, c, G, A, features, chunk_size, labels, log_prob, nk,
                       obj)
    if not statistics_wanted(nk):
        return
    if features == _soft.PAIRS:
        _ck.pairs_statistics(M[:, :, :G.shape[0]], shifted, nk, sx, sxx, _threads(M.size))
    elif features == _soft.SPHERICAL:
        _ck.coordinate_statistics(M, shifted, nk, _NO_PRECISION, True, _NO_NKO, sx,
                                  sxx.reshape(sxx.shape + (1,)))
    else:
        _ck.coordinate_statistics(M, shifted, nk, _NO_PRECISION, False, _NO_NKO, sx, sxx)
    obj[:, 1] = 0.0


def estep_diag(X, sample_weight, means, prec_chol, log_norm, center, hard,
               chunk_size, labels, log_prob, nk, sx, sxx, obj):
    precision = np.asarray(prec_chol, dtype=np.float64) ** 2
    if not hard:
        _soft_estep("diag", X, sample_weight, means, precision, log_norm, chunk_size, labels,
                    log_prob, nk, sx, sxx, obj)
        return
    if not statistics_wanted(nk):
        nk, sx, sxx, obj = statistic_temporaries("estep_diag", X, np.shape(means)[0],
                                                 chunk_size)
    _coordinate_hard(X, sample_weight, means, precision, np.empty(0), log_norm, chunk_size,
                     labels, log_prob, nk, sx, sxx, obj)


def estep_spherical(X, sample_weight, means, prec_chol, log_norm, center, hard,
                    chunk_size, labels, log_prob, nk, sx, sxx, obj):
    if not second_moments_wanted(nk, sxx):
        # second moments off on a path without its own
        second_moments_into_temporary(estep_spherical, X, sample_weight, means, prec_chol,
                                      log_norm, center, hard, chunk_size, labels, log_prob,
                                      nk, sx, sxx, obj)
        return
    spherical = _flat(np.asarray(prec_chol, dtype=np.float64) ** 2)
    if not hard:
        _soft_estep("spherical", X, sample_weight, means, spherical, log_norm, chunk_size,
                    labels, log_prob, nk, sx, sxx, obj)
        return
    if not statistics_wanted(nk):
        nk, sx, sxx, obj = statistic_temporaries("estep_spherical", X, np.shape(means)[0],
                                                 chunk_size)
    # maha_j = p_j ||x - mu_j||^2: the scores of K-means, from differences
    if log_prob.shape[0] != np.shape(X)[0]:
        screen = _screen_constants(X, means, spherical, _flat(log_norm))
        if screen is not None:
            # the screened kernel sums the squares per feature; the table's
            # statistic is their sum
            per_feature = np.empty(np.shape(sx))
            with _Outputs(_labels(X, labels, hard), nk, sx, per_feature, obj) as out:
                _ck.estep_spherical_screened(
                    _data(X), _flat(sample_weight), _flat(means), spherical,
                    _flat(log_norm), *screen, int(chunk_size), *out, np.shape(means)[0],
                    _threads(np.size(X) * np.shape(means)[0]))
            np.sum(per_feature, axis=2, out=sxx)
            return
    precision = np.repeat(spherical[:, None], np.shape(means)[1], axis=1)
    _coordinate_hard(X, sample_weight, means, precision, spherical, log_norm, chunk_size,
                     labels, log_prob, nk, sx, sxx, obj)


# no bounds kept: the hard estep_spherical
estep_kmeans = kmeans_without_bounds(estep_spherical)


# The hard spherical E-step (K-means) screens its scores in float32, as the
# numba backend does (its comments derive the bound), at every d: with the
# rows in vector lanes the screen beat exact scores from differences even at
# d = 1 to 4 (2 threads, (2e5, d, k) = (2, 8) 5.1 -> 3.5 ms, (3, 3) 5.0 ->
# 3.7, (1, 8) 4.6 -> 2.9).
_SCREEN_MAX = 2.0 ** 100  # constants of this size go to the exact kernel
_LINEAR = 0  # the soft kernel's feature map x - c (_soft's maps are 1 to 4)


def _screen_constants(X, means, precision, log_norm):
    """(c, CT, A, e0, e1, h_max) of the screened hard spherical E-step, or
    None when the components' constants are out of float32's safe range.

    With x' = x - c (c the mean of the means, rounded to X's dtype) the score
    of component j is A_j + x' . CT[:d, j] - P_j ||x'||^2 / 2, A_j = log_norm_j
    - p_j ||mu_j - c||^2 / 2, CT[:d, j] = p_j (mu_j - c), CT[d, j] = P_j = p_j;
    CT (d + 1, kp) and A (kp,) are padded to whole groups of four components
    (A = -inf, CT = 0 there).  The float32 scores of a row are within e = e0 + e1 ||x'||^2 / 2 of the exact
    ones: the bound of the numba kernel's float32 screen, doubled, because
    the C code rounds products and sums apart (no fused multiply-add in the
    generic build); a larger bound only sends more rows to the exact scores.
    """
    means = np.asarray(means, dtype=np.float64)
    d = means.shape[1]
    sc = screen_constants(X, means, precision, log_norm)
    if sc.largest >= _SCREEN_MAX:
        return None
    a_max, pn_max, p_max = sc.a_max, sc.pn_max, sc.p_max
    unit, tiny, u64 = 2.0 ** -24, 2.0 ** -149, 2.0 ** -53
    s0 = a_max + (pn_max * pn_max / (2.0 * p_max) if p_max > 0.0 else 0.0)
    rel = (d + 4) * unit + 8.0 * u64
    e0 = rel * s0 + (d + 3 + np.sqrt(d) * (1.0 + pn_max) + p_max) * tiny
    e1 = rel * 2.0 * p_max + (np.sqrt(d) + 1.0) * tiny
    h_max = (_SCREEN_MAX - s0) / (2.0 * p_max) if p_max > 0.0 else np.inf
    k = means.shape[0]
    kp = -(-k // 4) * 4  # the kernel's tile takes four components at a time
    CT = np.zeros((d + 1, kp), dtype=np.float32)  # p_j (mu_j - c) transposed, then P
    CT[:d, :k] = sc.CT(precision)
    CT[d, :k] = precision
    A = np.full(kp, -np.inf, dtype=np.float32)
    A[:k] = sc.A
    return _flat(sc.c), CT.reshape(-1), A, 2.0 * e0, 2.0 * e1, h_max


@statistics_optional
def estep_bernoulli(X, sample_weight, logit, log_norm, hard, chunk_size,
                    labels, log_prob, nk, sx, obj):
    logit = np.asarray(logit, dtype=np.float64)
    with _Outputs(_labels(X, labels, hard), log_prob, nk, sx, obj) as out:
        _ck.estep_bernoulli(_data(X), _flat(sample_weight), _flat(logit.T),
                            _flat(log_norm), bool(hard), int(chunk_size), *out,
                            logit.shape[0], _threads(2 * np.size(X) * logit.shape[0]))


def sqdist(X, centers, chunk_size, out):
    centers = np.asarray(centers, dtype=np.float64)
    with _Outputs(out) as (flat,):
        _ck.sqdist(_data(X), _flat(centers.T), int(chunk_size), flat, centers.shape[0],
                   _threads(np.size(X) * centers.shape[0]))


# ---------------------------------------------------------------- missing values
def _dense_missing(tied, X, sample_weight, means, prec_chol, log_norm, center, hard,
                   chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj):
    means = np.ascontiguousarray(means, dtype=np.float64)
    k = means.shape[0]
    center = _flat(center)
    factors = _upper(prec_chol)
    if tied:
        factors = np.broadcast_to(factors, (k,) + factors.shape)
    factors = np.ascontiguousarray(factors)
    precisions = factors @ np.swapaxes(factors, 1, 2)
    W, cw = _whitening(means, factors, center)
    with _Outputs(_labels(X, labels, hard), log_prob, imputed, nk, nko, sx, sxx, obj) as out:
        _cm.estep_dense_missing(_data(X), _flat(sample_weight), means.reshape(-1),
                                factors.reshape(-1), _flat(precisions), W, cw,
                                _flat(log_norm), center, bool(tied), bool(hard),
                                int(chunk_size), *out, k, _threads(2 * np.size(X) * means.size))


def estep_full_missing(X, sample_weight, means, prec_chol, log_norm, center, hard,
                       chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj):
    d = np.shape(X)[1]
    if not hard and imputed.shape[0] != np.shape(X)[0] and d <= _soft.PAIRS_MAX_D:
        # on products, as numba's (see _soft)
        c, shifted, G, A, PL, SL, H1, H2, kbp = _soft.pairs_missing_operands(
            np.asarray(means, dtype=np.float64), np.asarray(prec_chol, dtype=np.float64),
            _flat(log_norm), 4)
        m, k = G.shape
        mp = (m + 3) // 4 * 4
        GT = np.zeros((mp, k))
        GT[:m] = G
        M = np.empty((nk.shape[0], k, mp))
        with _Outputs(_labels(X, labels, hard), log_prob, nk, obj) as out:
            _cm.estep_pairs_missing(_data(X), _flat(sample_weight), _flat(c), GT.reshape(-1),
                                    _flat(A), PL, SL, H1, H2, kbp, int(chunk_size), out[0],
                                    out[1], out[2], M.reshape(-1), out[3], k, mp,
                                    _threads(2 * np.shape(X)[0] * k * mp))
        P = d + d * (d + 1) // 2
        _ck.pairs_statistics(M[:, :, :P], shifted, nk, sx, sxx, _threads(M.size))
        nko[...] = M[:, :, P:P + d]
        obj[:, 1] = 0.0
        return
    _dense_missing(False, X, sample_weight, means, prec_chol, log_norm, center, hard,
                   chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj)


def estep_tied_missing(X, sample_weight, means, prec_chol, log_norm, center, hard,
                       chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj):
    _dense_missing(True, X, sample_weight, means, prec_chol, log_norm, center, hard,
                   chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj)


def _coordinate_missing(X, sample_weight, means, precision, log_norm, hard, chunk_size,
                        labels, log_prob, imputed, nk, nko, sx, sxx, obj):
    means = np.ascontiguousarray(means, dtype=np.float64)
    if not hard and imputed.shape[0] != np.shape(X)[0]:
        c, shifted, G, A = _soft.observed_operands(means, precision, _flat(log_norm))
        M = _soft_features(X, sample_weight, c, G, A, _soft.OBSERVED, chunk_size, labels,
                           log_prob, nk, obj)
        _ck.coordinate_statistics(M, shifted, nk, precision, False, nko, sx, sxx)
        obj[:, 1] = 0.0
        return
    with _Outputs(_labels(X, labels, hard), log_prob, imputed, nk, nko, sx, sxx, obj) as out:
        _cm.estep_coordinate_missing(_data(X), _flat(sample_weight), means.reshape(-1),
                                     _flat(precision), _flat(log_norm), bool(hard),
                                     int(chunk_size), *out, means.shape[0],
                                     _threads(3 * np.size(X) * means.shape[0]))


def estep_diag_missing(X, sample_weight, means, prec_chol, log_norm, center, hard,
                       chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj):
    precision = np.asarray(prec_chol, dtype=np.float64) ** 2
    _coordinate_missing(X, sample_weight, means, precision, log_norm, hard, chunk_size,
                        labels, log_prob, imputed, nk, nko, sx, sxx, obj)


def estep_spherical_missing(X, sample_weight, means, prec_chol, log_norm, center, hard,
                            chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx,
                            obj):
    precision = np.repeat((np.asarray(prec_chol, dtype=np.float64) ** 2)[:, None],
                          np.shape(means)[1], axis=1)
    per_feature = np.empty(np.shape(sx))  # summed into the table's (C, k) statistic
    _coordinate_missing(X, sample_weight, means, precision, log_norm, hard, chunk_size,
                        labels, log_prob, imputed, nk, nko, sx, per_feature, obj)
    np.sum(per_feature, axis=2, out=sxx)


def estep_bernoulli_missing(X, sample_weight, logit, log_norm, log_q, hard, chunk_size,
                            labels, log_prob, nk, nko, sx, obj):
    logit = np.asarray(logit, dtype=np.float64)
    with _Outputs(_labels(X, labels, hard), log_prob, nk, nko, sx, obj) as out:
        _cm.estep_bernoulli_missing(_data(X), _flat(sample_weight), _flat(logit),
                                    _flat(log_norm), _flat(log_q), bool(hard),
                                    int(chunk_size), *out, logit.shape[0],
                                    _threads(2 * np.size(X) * logit.shape[0]))


def sqdist_missing(X, centers, chunk_size, out):
    centers = np.asarray(centers, dtype=np.float64)
    with _Outputs(out) as (flat,):
        _cm.sqdist_missing(_data(X), _flat(centers), int(chunk_size), flat,
                           centers.shape[0], _threads(np.size(X) * centers.shape[0]))


# ---------------------------------------------------------------- validation
def count_nonfinite(X, chunk_size, out):
    with _Outputs(out) as (flat,):
        _ck.count_nonfinite(_data(X), int(chunk_size), flat, _threads(np.size(X)))


# the M-step's small factorisations: the NumPy kernel (LAPACK's Cholesky and
# stacked triangular products), no compiled version of its own
from .numpy_backend import prec_chol  # noqa: E402
