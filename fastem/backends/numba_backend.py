"""The numba backend: the kernel table as numba kernels run in parallel over chunks.

Each kernel of the table runs a chunk kernel through ``run_chunks``, the one
``@njit(parallel=True)`` driver (``prange`` over chunks; a call whose estimated
work, its ``work=``, is small runs the chunks on the calling thread).  A chunk kernel
processes the rows of its chunk and writes only its own slot of the statistic
buffers, so the result does not depend on the number of threads.  Data are
read in their own dtype (float32 or float64); every sum is carried in float64.

Within a chunk, rows are taken four at a time (``_BLOCK``; a short last block
is padded with zero rows of zero weight) and the innermost loops run over
contiguous float64 vectors: per-component quantities are laid out transposed,
(n_features, n_components), and the full-covariance whitening of all
components is one block-times-matrix product with ``W = [U_1 | ... | U_k]``
of shape (d, k * d).  Each value loaded from memory then feeds four
multiply-adds, which LLVM vectorizes.  Distances are always formed from
differences (never from ``|x|^2 - 2 x.mu + |mu|^2``), so no precision is lost
to cancellation.
"""

import numpy as np

from ._numba_jit import (Constant, inline_leaf, leaf, ordered, ordered_inline_leaf, run_chunks,
                          serial, strict)
from . import _soft
from ._table import (check_bounds, check_labels, chunk_count, second_moments_into_temporary,
                     second_moments_wanted, statistic_temporaries, statistics_wanted)
from ._simd import (ROW_BYTES, VECTOR_BYTES, VECTOR_REGISTERS, bfold, bload, bsplat,
                    exp2_of_rounded, lanes, prefetch_rows, prefetch_rows_near, rlanes, rload,
                    rsplat, sadd, sfma, sload, sstore, stage_rows4, vadd, vdiv, vexp_nonpositive,
                    vfma, vhsum, vload, vload4_f64, vmax, vmul, vselect_ge, vselect_nan, vsplat,
                    vstore, vsub, vtranspose4, vtranspose8, vzero, bload8_f64)

__all__ = [
    "estep_full", "estep_tied", "estep_diag", "estep_spherical", "estep_kmeans",
    "estep_bernoulli", "sqdist",
    "estep_full_missing", "estep_tied_missing", "estep_diag_missing",
    "estep_spherical_missing", "estep_bernoulli_missing", "sqdist_missing",
    "count_nonfinite", "prec_chol",
]

_BLOCK = 4  # rows per block; the unrolled expressions below assume 4


_LOG2E = 1.4426950408889634
_ROUND = 6755399441055744.0           # 1.5 * 2**52: t + _ROUND - _ROUND rounds t
_LN2_HI = 6.93147180369123816490e-01  # ln 2 in 32 bits: n * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10  # ln 2 - _LN2_HI
_EXP_MIN = -708.0                     # below: 0 (exp(-708) = 3e-308)


@strict
def _exp_nonpositive(x):
    """exp(x) for x <= 0, within about 1 ulp; 0 below -708.

    Branch-free arithmetic, so that loops over it vectorize (numba's
    ``np.exp`` is a scalar call).  Cody-Waite reduction x = n ln 2 + r with
    |r| <= ln 2 / 2, then the Taylor polynomial of degree 13 (truncation
    below 5e-18 relative).  Compiled without fast-math: the reduction must run
    in the written order.
    """
    xc = max(x, _EXP_MIN)
    t = xc * _LOG2E + _ROUND
    n = t - _ROUND
    r = (xc - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    value = p * exp2_of_rounded(t)
    return value if x >= _EXP_MIN else 0.0


@leaf
def _assign(i, lp, hard, labels, log_prob, want_lp):
    """Label row i from its weighted log-probabilities ``lp``.

    Returns the label, the row's log-likelihood (log-sum-exp, or the maximum
    when ``hard``) and 1 if the label changed, else 0.  When not ``hard``,
    ``lp`` is overwritten with the responsibilities.
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
    changed = 0
    if labels.shape[0] > 0:  # (0,): a soft iteration, which needs no labels
        changed = 1 if labels[i] != best else 0
        labels[i] = best
    if hard:
        return best, top, changed
    if top == -np.inf:
        for j in range(k):
            lp[j] = 0.0
        return best, top, changed
    L = lanes(lp)
    whole = k - k % L
    shift = vsplat(lp, -top)
    acc = vsplat(lp, 0.0)
    for jt in range(0, whole, L):
        e = vexp_nonpositive(vadd(vload(lp, jt), shift))
        vstore(lp, jt, e)
        acc = vadd(acc, e)
    total = vhsum(acc)
    for j in range(whole, k):
        lp[j] = _exp_nonpositive(lp[j] - top)
        total += lp[j]
    inv = 1.0 / total
    for j in range(k):
        lp[j] *= inv
    return best, top + np.log(total), changed


@leaf
def _load_block(X, i0, n_rows, xb):
    """Copy rows i0 .. i0 + n_rows - 1 of X into xb (float64), zero-padding."""
    d = xb.shape[1]
    for r in range(_BLOCK):
        if r < n_rows:
            for a in range(d):
                xb[r, a] = X[i0 + r, a]
        else:
            for a in range(d):
                xb[r, a] = 0.0


@leaf
def _gaussian_log_prob(maha, log_norm, lp):
    """lp[r, j] = log_norm[j] - maha[r, j] / 2 for a block."""
    for r in range(maha.shape[0]):
        for j in range(maha.shape[1]):
            lp[r, j] = log_norm[j] - 0.5 * maha[r, j]


@leaf
def _finish_block(i0, n_rows, lp, maha, hard, sample_weight, labels, log_prob,
                  want_lp, wr, best_of, obj):
    """Labels, objective and responsibilities of a block from its ``lp``.

    Sets ``best_of[r]``, the label of row r, or -1 when the row adds nothing
    (padding or zero weight).  Soft: writes ``wr[r, j] = w_i r_ij`` (0 for
    rows that add nothing).  Hard: leaves ``wr`` alone; the caller adds row r
    with its weight to component ``best_of[r]`` only.  ``maha`` is the squared
    Mahalanobis distance, added to ``obj[1]`` for the assigned component when
    ``hard``.
    """
    k = lp.shape[1]
    for r in range(_BLOCK):
        best_of[r] = -1
        if r >= n_rows:
            if not hard:
                for j in range(k):
                    wr[r, j] = 0.0
            continue
        i = i0 + r
        best, ll, changed = _assign(i, lp[r], hard, labels, log_prob, want_lp)
        obj[2] += changed
        w = sample_weight[i]
        if w == 0.0:
            if not hard:
                for j in range(k):
                    wr[r, j] = 0.0
            continue
        best_of[r] = best
        obj[0] += w * ll
        if hard:
            obj[1] += w * maha[r, best]
        else:
            for j in range(k):
                wr[r, j] = w * lp[r, j]


@serial
def _transpose(a):
    out = np.empty((a.shape[1], a.shape[0]))
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[j, i] = a[i, j]
    return out


@leaf
def _accumulate_first(xb, wr, means, j, nk, sx):
    """nk_j and sx_j (moments about means_j) from the four rows of a block."""
    d = xb.shape[1]
    r0 = wr[0, j]
    r1 = wr[1, j]
    r2 = wr[2, j]
    r3 = wr[3, j]
    nk[j] += r0 + r1 + r2 + r3
    for a in range(d):
        m = means[j, a]
        sx[j, a] += r0 * (xb[0, a] - m) + r1 * (xb[1, a] - m) + r2 * (xb[2, a] - m) + r3 * (xb[3, a] - m)


@inline_leaf
def _block_sqdist(xb, centersT, acc):
    """acc[r, j] = |xb[r] - centersT[:, j]|^2 for the four rows of a block,
    from differences, the components of a feature at a time."""
    d, m = centersT.shape
    acc[:, :] = 0.0
    for a in range(d):
        x0 = xb[0, a]
        x1 = xb[1, a]
        x2 = xb[2, a]
        x3 = xb[3, a]
        for j in range(m):
            c = centersT[a, j]
            acc[0, j] += (x0 - c) * (x0 - c)
            acc[1, j] += (x1 - c) * (x1 - c)
            acc[2, j] += (x2 - c) * (x2 - c)
            acc[3, j] += (x3 - c) * (x3 - c)


# --------------------------------------------------------------- full
_MOMENT_ROWS = 64  # rows whose second moments one pass of the moment tile adds


@leaf
def _lower_moment_tile(D, Z, rows, dp, d, S, so):
    """S[so + a * dp + b] += sum_{i < rows} D[i * dp + a] Z[i * dp + b]
    over the 4 x 8 blocks of (a, b) that meet the lower triangle b <= a < d.

    ``D`` and ``Z`` hold ``rows`` rows of ``dp`` floats (a multiple of 8,
    zero past d).  A block keeps its 32 sums in eight registers while the
    rows stream past: each value loaded feeds four or eight multiply-adds,
    and ``S`` is read and written once per call instead of once per row.
    """
    for a0 in range(0, d, 4):
        for b0 in range(0, a0 + 4, 8):
            s00 = vzero(Z)
            s01 = s00
            s10 = s00
            s11 = s00
            s20 = s00
            s21 = s00
            s30 = s00
            s31 = s00
            for i in range(rows):
                o = i * dp
                z0 = vload(Z, o + b0)
                z1 = vload(Z, o + b0 + 4)
                x = vsplat(Z, sload(D, o + a0))
                s00 = vfma(x, z0, s00)
                s01 = vfma(x, z1, s01)
                x = vsplat(Z, sload(D, o + a0 + 1))
                s10 = vfma(x, z0, s10)
                s11 = vfma(x, z1, s11)
                x = vsplat(Z, sload(D, o + a0 + 2))
                s20 = vfma(x, z0, s20)
                s21 = vfma(x, z1, s21)
                x = vsplat(Z, sload(D, o + a0 + 3))
                s30 = vfma(x, z0, s30)
                s31 = vfma(x, z1, s31)
            t = so + a0 * dp + b0
            vstore(S, t, vadd(vload(S, t), s00))
            vstore(S, t + 4, vadd(vload(S, t + 4), s01))
            t += dp
            vstore(S, t, vadd(vload(S, t), s10))
            vstore(S, t + 4, vadd(vload(S, t + 4), s11))
            t += dp
            vstore(S, t, vadd(vload(S, t), s20))
            vstore(S, t + 4, vadd(vload(S, t + 4), s21))
            t += dp
            vstore(S, t, vadd(vload(S, t), s30))
            vstore(S, t + 4, vadd(vload(S, t + 4), s31))


@leaf
def _add_component_moments(XS, WRS, rows, j, MP, dp, d, D, Z, nk, SX, SA):
    """Moments about mu_j (``MP[j]``) of ``rows`` staged rows weighted by WRS[:, j]:
    nk[j], SX[j] (first) and, through the moment tile, SA[j] (second)."""
    mo = j * dp
    total = 0.0
    for i in range(rows):
        total += WRS[i, j]
    if total == 0.0:  # no weight here (the weights are never negative)
        return
    nk[j] += total
    for i in range(rows):
        o = i * dp
        r = vsplat(Z, WRS[i, j])
        for a in range(0, dp, 4):
            v = vsub(vload(XS, o + a), vload(MP, mo + a))
            vstore(D, o + a, v)
            z = vmul(r, v)
            vstore(Z, o + a, z)
            vstore(SX, mo + a, vadd(vload(SX, mo + a), z))
    _lower_moment_tile(D, Z, rows, dp, d, SA, j * dp * dp)


@leaf
def _full_block_maha(X, i1, n_rows, center, W, cw, depth, xb, xc, y, no_p, no_half, maha):
    """Load rows i1 .. i1 + n_rows - 1 into xb (zero rows past them) and set
    maha[r, j] = |(x_r - mu_j) U_j|^2: y_j = (x - c) U_j - (mu_j - c) U_j for
    all components at once by the register tile (W and -cw zero-padded to
    kdp columns), then |y_j|^2."""
    k = maha.shape[1]
    d = xb.shape[1]
    kdp = cw.shape[0]
    L = lanes(cw)
    _load_block(X, i1, n_rows, xb)
    for r in range(_BLOCK):
        for a in range(d):
            xc[r, a] = xb[r, a] - center[a]
    _score_tile(xc, W, cw, no_p, kdp, no_half, depth, y)
    for r in range(_BLOCK):
        for j in range(k):
            # a vector of coordinates at a time (a chain of d dependent adds
            # as a scalar loop)
            o = r * kdp + j * d
            acc = vzero(y)
            b = 0
            while b + L <= d:
                v = vload(y, o + b)
                acc = vfma(v, v, acc)
                b += L
            m = vhsum(acc)
            while b < d:
                m += y[o + b] * y[o + b]
                b += 1
            maha[r, j] = m


@serial
def _estep_full_soft_chunk(ci, X, sample_weight, means, W, cw, depth, log_norm, center,
                           chunk_size, labels, log_prob, nk_all, sx_all, sxx_all, obj_all):
    """Rows are whitened four at a time by the register tile, their softmax
    taken eight at a time (rows in vector lanes); ``_MOMENT_ROWS`` rows and
    their responsibilities are staged, then their moments about each mean
    added through the moment tile."""
    start = ci * chunk_size
    stop = min(X.shape[0], start + chunk_size)
    nk, sx, sxx, obj = nk_all[ci], sx_all[ci], sxx_all[ci], obj_all[ci]
    k, d = means.shape
    kdp = cw.shape[0]
    want_lp = log_prob.shape[0] == X.shape[0]
    xb = np.empty((_BLOCK, d))
    xc = np.empty((_BLOCK, d))
    y = np.empty(_BLOCK * kdp)
    no_p = np.zeros(kdp)
    no_half = np.zeros(_BLOCK)
    maha = np.empty((_BLOCK, k))
    dp = -(-d // 8) * 8
    R = _MOMENT_ROWS
    XS = np.zeros(R * dp)
    D = np.zeros(R * dp)
    Z = np.zeros(R * dp)
    WRS = np.zeros((R, k))
    MP = np.zeros(k * dp)
    SX = np.zeros(k * dp)
    SA = np.zeros(k * dp * dp)
    for j in range(k):
        for a in range(d):
            MP[j * dp + a] = means[j, a]
    nk[:] = 0.0
    sx[:] = 0.0
    sxx[:] = 0.0
    obj[:] = 0.0
    kp = -(-k // 4) * 4
    ST = _zeros64(kp * _RB)  # a block's scores, rows in lanes (_softmax_lanes)
    NKV = np.zeros(kp * 4)  # not read: nk comes with the moments
    lane = np.zeros(40)
    lane[16] = 1.0
    staged = 0
    for i0 in range(start, stop, _RB):
        for h in range(0, _RB, _BLOCK):
            _full_block_maha(X, i0 + h, max(0, min(_BLOCK, stop - i0 - h)), center, W, cw,
                             depth, xb, xc, y, no_p, no_half, maha)
            for j in range(k):
                for r in range(_BLOCK):
                    ST[j * _RB + h + r] = log_norm[j] - 0.5 * maha[r, j]
            for r in range(_BLOCK):
                o = (staged + h + r) * dp
                for a in range(d):
                    sstore(XS, o + a, xb[r, a])
        # the softmax overwrites the padding components' -inf
        for j in range(k, kp):
            for r in range(_RB):
                ST[j * _RB + r] = -np.inf
        _softmax_lanes(ST, 0, k, kp, i0, min(_RB, stop - i0), sample_weight, labels,
                       log_prob, want_lp, lane, NKV, obj, True)
        # stage w r (0 for padding rows)
        for r in range(_RB):
            for j in range(k):
                WRS[staged + r, j] = ST[j * _RB + r]
        staged += _RB
        if staged == R or i0 + _RB >= stop:
            for j in range(k):
                _add_component_moments(XS, WRS, staged, j, MP, dp, d, D, Z, nk, SX, SA)
            staged = 0
    _flush_log_total(lane, obj)
    for j in range(k):
        for a in range(d):
            sx[j, a] = SX[j * dp + a]
            for b in range(a + 1):  # the lower triangle: the M-step reads no more
                sxx[j, a, b] = SA[(j * dp + a) * dp + b]


@serial
def _estep_full_hard_chunk(ci, X, sample_weight, means, W, cw, depth, log_norm, center,
                           chunk_size, labels, log_prob, nk_all, sx_all, sxx_all, obj_all):
    """Rows are whitened four at a time by the register tile and each added
    to its component at once."""
    start = ci * chunk_size
    stop = min(X.shape[0], start + chunk_size)
    nk, sx, sxx, obj = nk_all[ci], sx_all[ci], sxx_all[ci], obj_all[ci]
    k, d = means.shape
    kdp = cw.shape[0]
    want_lp = log_prob.shape[0] == X.shape[0]
    xb = np.empty((_BLOCK, d))
    xc = np.empty((_BLOCK, d))
    y = np.empty(_BLOCK * kdp)
    no_p = np.zeros(kdp)
    no_half = np.zeros(_BLOCK)
    diff = np.empty(d)
    lp = np.empty((_BLOCK, k))
    maha = np.empty((_BLOCK, k))
    wr = np.empty((_BLOCK, k))
    best_of = np.empty(_BLOCK, dtype=np.int64)
    nk[:] = 0.0
    sx[:] = 0.0
    sxx[:] = 0.0
    obj[:] = 0.0
    for i0 in range(start, stop, _BLOCK):
        n_rows = min(_BLOCK, stop - i0)
        _full_block_maha(X, i0, n_rows, center, W, cw, depth, xb, xc, y, no_p, no_half, maha)
        _gaussian_log_prob(maha, log_norm, lp)
        _finish_block(i0, n_rows, lp, maha, True, sample_weight, labels, log_prob,
                      want_lp, wr, best_of, obj)
        for r in range(n_rows):
            j = best_of[r]
            if j < 0:
                continue
            w = sample_weight[i0 + r]
            nk[j] += w
            for a in range(d):
                diff[a] = xb[r, a] - means[j, a]
                sx[j, a] += w * diff[a]
            for a in range(d):
                u = w * diff[a]
                for b in range(a + 1):
                    sxx[j, a, b] += u * diff[b]


@serial
def _full_tile_operands(means, prec_chol, center):
    """W = [U_1 | ... | U_k] (d, kdp) flattened, cw = -[(mu_j - c) U_j] (kdp)
    and the tile's row count per column block, for ``_score_tile``.

    Computed once per call, before the chunks run.
    """
    k, d = means.shape
    kdp = -(-(k * d) // 8) * 8  # whole pairs of vectors for the tile
    W = np.zeros((d, kdp))
    cw = np.zeros(kdp)
    for j in range(k):
        for a in range(d):
            ma = means[j, a] - center[a]
            for b in range(a, d):
                W[a, j * d + b] = prec_chol[j, a, b]
                cw[j * d + b] -= ma * prec_chol[j, a, b]
    # column block t of the tile (columns 8t .. 8t + 7) reads rows a <= b of U_j
    # only, b its columns' largest index within their component
    depth = np.zeros(kdp // 8, dtype=np.int64)
    for col in range(k * d):
        t = col // 8
        depth[t] = max(depth[t], col % d + 1)
    return W.ravel(), cw, depth


# --------------------------------------------------------------- tied
@serial
def _estep_tied_chunk(ci, X, sample_weight, means, U, cwT, CT, A, P, log_norm, center, hard,
                      chunk_size, labels, log_prob, nk_all, sx_all, sxx_all, obj_all):
    """``U`` is the shared Cholesky factor of the precision, (d, dp) flattened.

    With y = (x - c) U and b_j = (mu_j - c) U (``cwT``), the soft E-step takes
    log_norm_j - |y - b_j|^2 / 2 = A_j + y . b_j - |y|^2 / 2 from a second
    register tile (``CT`` = b transposed, padded to kp columns; ``A``, ``P``
    as ``_score_tile`` wants them), as the diagonal path expands its scores;
    the hard E-step forms |y - b_j|^2 from differences.
    """
    start = ci * chunk_size
    stop = min(X.shape[0], start + chunk_size)
    nk, sx, sxx, obj = nk_all[ci], sx_all[ci], sxx_all[ci], obj_all[ci]
    k, d = means.shape
    dp = U.shape[0] // d
    kp = A.shape[0]
    want_lp = log_prob.shape[0] == X.shape[0]
    xb = np.empty((_BLOCK, d))
    xc = np.empty((_BLOCK, d))
    yb = np.empty(_BLOCK * dp)
    y2 = np.empty((_BLOCK, d))
    nhalf = np.empty(_BLOCK)
    sc = np.empty(_BLOCK * kp)
    no_a = np.zeros(dp)
    no_half = np.zeros(_BLOCK)
    # U is upper triangular: columns b < 8t + 8 of block t need rows a <= b only
    u_depth = np.empty(dp // 8, dtype=np.int64)
    for t in range(dp // 8):
        u_depth[t] = min(d, 8 * t + 8)
    c_depth = np.full(kp, d, dtype=np.int64)
    lp = np.empty((_BLOCK, k))
    maha = np.empty((_BLOCK, k))
    wr = np.empty((_BLOCK, k))
    wrow = np.empty(_BLOCK)
    best_of = np.empty(_BLOCK, dtype=np.int64)
    # rows x - c and w (x - c) staged for the moment tile (zero past d)
    XS = np.zeros(_MOMENT_ROWS * dp)
    ZS = np.zeros(_MOMENT_ROWS * dp)
    SA = np.zeros(dp * dp)
    staged = 0
    nk[:] = 0.0
    sx[:] = 0.0
    sxx[:] = 0.0
    obj[:] = 0.0
    for i0 in range(start, stop, _BLOCK):
        n_rows = min(_BLOCK, stop - i0)
        _load_block(X, i0, n_rows, xb)
        for r in range(_BLOCK):
            for a in range(d):
                xc[r, a] = xb[r, a] - center[a]
        # (x - c) U for the block's four rows by the register tile
        _score_tile(xc, U, no_a, no_a, dp, no_half, u_depth, yb)
        for r in range(_BLOCK):
            ss = 0.0
            for b in range(d):
                v = sload(yb, r * dp + b)
                y2[r, b] = v
                ss += v * v
            nhalf[r] = -0.5 * ss
        if hard:
            # |(x - mu_j) U|^2 = |(x - c) U - (mu_j - c) U|^2, from differences
            _block_sqdist(y2, cwT, maha)
            _gaussian_log_prob(maha, log_norm, lp)
        else:
            _score_tile(y2, CT, A, P, kp, nhalf, c_depth, sc)
            for r in range(_BLOCK):
                for j in range(k):
                    lp[r, j] = sc[r * kp + j]
        _finish_block(i0, n_rows, lp, maha, hard, sample_weight, labels, log_prob,
                      want_lp, wr, best_of, obj)
        for r in range(_BLOCK):
            wrow[r] = sample_weight[i0 + r] if r < n_rows else 0.0
        if hard:
            for r in range(n_rows):
                j = best_of[r]
                if j >= 0:
                    nk[j] += wrow[r]
                    for a in range(d):
                        sx[j, a] += wrow[r] * (xb[r, a] - means[j, a])
        else:
            for j in range(k):
                if wr[0, j] == 0.0 and wr[1, j] == 0.0 and wr[2, j] == 0.0 and wr[3, j] == 0.0:
                    continue
                _accumulate_first(xb, wr, means, j, nk, sx)
        # the tied scatter about the fixed center needs no responsibilities
        for r in range(_BLOCK):
            o = (staged + r) * dp
            for a in range(d):
                sstore(XS, o + a, xc[r, a])
                sstore(ZS, o + a, wrow[r] * xc[r, a])
        staged += _BLOCK
        if staged == _MOMENT_ROWS or i0 + _BLOCK >= stop:
            _lower_moment_tile(XS, ZS, staged, dp, d, SA, 0)
            staged = 0
    for a in range(d):
        for b in range(a + 1):  # the lower triangle: the M-step reads no more
            sxx[a, b] = SA[a * dp + b]


@serial
def _tied_tile_operands(means, prec_chol, log_norm, center):
    """U (d, dp) flattened, cwT = [(mu_j - c) U] transposed (d, k), and the
    second tile's CT, A, P (see ``_estep_tied_chunk``); serial, as
    ``_full_tile_operands``."""
    k, d = means.shape
    cwT = np.zeros((d, k))
    for j in range(k):
        for a in range(d):
            ma = means[j, a] - center[a]
            for b in range(a, d):
                cwT[b, j] += ma * prec_chol[a, b]
    dp = -(-d // 8) * 8  # U zero-padded to whole pairs of vectors for the tile
    U = np.zeros((d, dp))
    for a in range(d):
        for b in range(a, d):
            U[a, b] = prec_chol[a, b]
    kp = -(-k // 4) * 4
    CT = np.zeros(d * kp)
    A = np.full(kp, -np.inf)
    P = np.zeros(kp)
    for j in range(k):
        bb = 0.0
        for b in range(d):
            CT[b * kp + j] = cwT[b, j]
            bb += cwT[b, j] * cwT[b, j]
        A[j] = log_norm[j] - 0.5 * bb
        P[j] = 1.0
    return U.ravel(), cwT, CT, A, P


# --------------------------------------------------------------- diag / spherical
@leaf
def _hard_coordinate_block(i0, n_rows, xb, maha, log_norm, means, sample_weight,
                           labels, nk, sx, sxx, obj):
    """Hard E-step of a block without a log-probability row (the K-means path)."""
    k, d = means.shape
    changed = 0
    ll = 0.0
    dist = 0.0
    for r in range(n_rows):
        i = i0 + r
        best = 0
        top = log_norm[0] - 0.5 * maha[r, 0]
        for j in range(1, k):
            v = log_norm[j] - 0.5 * maha[r, j]
            if v > top:
                top = v
                best = j
        if labels[i] != best:
            changed += 1
            labels[i] = best
        w = sample_weight[i]
        if w == 0.0:
            continue
        ll += w * top
        dist += w * maha[r, best]
        nk[best] += w
        for a in range(d):
            t = xb[r, a] - means[best, a]
            sx[best, a] += w * t
            sxx[best, a] += w * t * t
    obj[0] += ll
    obj[1] += dist
    obj[2] += changed


@serial
def _estep_coordinate_chunk(ci, X, sample_weight, means, meansT, precT, log_norm, hard,
                            chunk_size, labels, log_prob, nk_all, sx_all, sxx_all, obj_all):
    """Diagonal covariances; ``precT`` (d, k) holds 1 / variance, transposed."""
    start = ci * chunk_size
    stop = min(X.shape[0], start + chunk_size)
    nk, sx, sxx, obj = nk_all[ci], sx_all[ci], sxx_all[ci], obj_all[ci]
    k, d = means.shape
    want_lp = log_prob.shape[0] == X.shape[0]
    xb = np.empty((_BLOCK, d))
    lp = np.empty((_BLOCK, k))
    maha = np.empty((_BLOCK, k))
    wr = np.empty((_BLOCK, k))
    best_of = np.empty(_BLOCK, dtype=np.int64)
    nk[:] = 0.0
    sx[:] = 0.0
    sxx[:] = 0.0
    obj[:] = 0.0
    for i0 in range(start, stop, _BLOCK):
        n_rows = min(_BLOCK, stop - i0)
        _load_block(X, i0, n_rows, xb)
        maha[:, :] = 0.0
        for a in range(d):
            x0 = xb[0, a]
            x1 = xb[1, a]
            x2 = xb[2, a]
            x3 = xb[3, a]
            for j in range(k):
                m = meansT[a, j]
                p = precT[a, j]
                maha[0, j] += (x0 - m) * (x0 - m) * p
                maha[1, j] += (x1 - m) * (x1 - m) * p
                maha[2, j] += (x2 - m) * (x2 - m) * p
                maha[3, j] += (x3 - m) * (x3 - m) * p
        if hard and not want_lp:
            _hard_coordinate_block(i0, n_rows, xb, maha, log_norm, means, sample_weight,
                                   labels, nk, sx, sxx, obj)
            continue
        _gaussian_log_prob(maha, log_norm, lp)
        _finish_block(i0, n_rows, lp, maha, hard, sample_weight, labels, log_prob,
                      want_lp, wr, best_of, obj)
        if hard:
            for r in range(n_rows):
                j = best_of[r]
                if j < 0:
                    continue
                w = sample_weight[i0 + r]
                nk[j] += w
                for a in range(d):
                    t = xb[r, a] - means[j, a]
                    sx[j, a] += w * t
                    sxx[j, a] += w * t * t
            continue
        for j in range(k):
            r0 = wr[0, j]
            r1 = wr[1, j]
            r2 = wr[2, j]
            r3 = wr[3, j]
            if r0 == 0.0 and r1 == 0.0 and r2 == 0.0 and r3 == 0.0:
                continue
            nk[j] += r0 + r1 + r2 + r3
            for a in range(d):
                m = means[j, a]
                t0 = xb[0, a] - m
                t1 = xb[1, a] - m
                t2 = xb[2, a] - m
                t3 = xb[3, a] - m
                sx[j, a] += r0 * t0 + r1 * t1 + r2 * t2 + r3 * t3
                sxx[j, a] += r0 * t0 * t0 + r1 * t1 * t1 + r2 * t2 * t2 + r3 * t3 * t3


def _estep_coordinate(X, sample_weight, means, precision, log_norm, hard,
                      chunk_size, labels, log_prob, nk, sx, sxx, obj):
    run_chunks(_estep_coordinate_chunk, nk.shape[0], X, sample_weight, means,
               _transpose(means), _transpose(precision), log_norm, hard, chunk_size, labels,
               log_prob, nk, sx, sxx, obj, work=3 * X.size * means.shape[0])


def estep_diag(X, sample_weight, means, prec_chol, log_norm, center, hard,
               chunk_size, labels, log_prob, nk, sx, sxx, obj):
    check_labels(X, labels, hard)
    if not hard:
        _estep_soft("diag", X, sample_weight, means, prec_chol ** 2, log_norm, chunk_size,
                    labels, log_prob, nk, sx, sxx, obj)
        return
    if not statistics_wanted(nk):
        nk, sx, sxx, obj = statistic_temporaries("estep_diag", X, means.shape[0], chunk_size)
    _estep_coordinate(X, sample_weight, means, prec_chol ** 2, log_norm, hard,
                      chunk_size, labels, log_prob, nk, sx, sxx, obj)


def estep_spherical(X, sample_weight, means, prec_chol, log_norm, center, hard,
                    chunk_size, labels, log_prob, nk, sx, sxx, obj):
    check_labels(X, labels, hard)
    fit_hard = hard and log_prob.shape[0] != X.shape[0]
    if not second_moments_wanted(nk, sxx) and not fit_hard:
        # second moments off on a path without its own
        second_moments_into_temporary(estep_spherical, X, sample_weight, means, prec_chol,
                                      log_norm, center, hard, chunk_size, labels, log_prob,
                                      nk, sx, sxx, obj)
        return
    if not hard:
        _estep_soft("spherical", X, sample_weight, means, prec_chol ** 2, log_norm,
                    chunk_size, labels, log_prob, nk, sx, sxx, obj)
        return
    if not statistics_wanted(nk):
        nk, sx, sxx, obj = statistic_temporaries("estep_spherical", X, means.shape[0],
                                                 chunk_size)
    if fit_hard:
        _hard_fit(X, sample_weight, means, prec_chol ** 2, log_norm, chunk_size, labels, nk,
                  sx, sxx, obj)
        return
    # the per-coordinate path accumulates the squares per feature; the table's
    # statistic is their sum
    per_feature = np.empty(sx.shape)
    precision = np.repeat((prec_chol ** 2)[:, None], means.shape[1], axis=1)
    _estep_coordinate(X, sample_weight, means, precision, log_norm, hard,
                      chunk_size, labels, log_prob, nk, sx, per_feature, obj)
    np.sum(per_feature, axis=2, out=sxx)


# ------------------------------------------------ hard spherical (the K-means path)
# Hard spherical E-step without log-probabilities: the E-step of KMeans.  With
# x' = x - c and mu_j' = mu_j - c for a fixed point c (the mean of the
# centres, which keeps the numbers small), the score of component j is
#     lp_j = log_norm_j - p_j / 2 * ||x - mu_j||^2
#          = A_j + p_j x' . mu_j' - p_j ||x'||^2 / 2,  A_j = log_norm_j - p_j / 2 ||mu_j'||^2.
# For a block of 2 L rows (L lanes a vector: 16 rows in float32, 8 in float64)
# held in the lanes of two vectors, the scores of every component come out of
# a register tile of SIMD vectors (``_score_tile_lanes``) in float32, whatever the
# data's dtype (in float64 if a component's |A_j|, p_j ||mu_j'|| or p_j
# reaches 2^100, and then with the float64 u and t below): one multiply-add
# per (row, component, feature) instead of the subtract, multiply and add of
# a difference, eight lanes to a vector.  The
# expansion in float32 loses precision, so it only *screens*.  With u = 2^-24
# the unit roundoff of float32 and
#     S = max_j |A_j| + ||x'|| max_j p_j ||mu_j'|| + max_j p_j ||x'||^2 / 2,
# every computed score of a row is within
#     E = (d + 4) u S + (d + 3 + sqrt(d) (||x'|| + max_j p_j ||mu_j'||)
#         + max_j p_j + ||x'||^2 / 2) t
# (+ float64 rounding) of the exact one, where t = 2^-149 is float32's
# smallest subnormal (the absolute error of a result that underflows).  When
# another component scores within 4 E of the best (2 E would do), or S is
# too large for float32 (S >= 2^100, so nothing can overflow), the row is
# decided on exact scores formed from differences in float64, as the other
# kernels do; the assigned component's distance (the objective) is always
# formed from differences.  The labels are therefore those of exact
# distances, whatever the dtype.  (Screening float64 data in float64 halves
# the lanes and doubles the tile's cost; a close call needs a score gap
# below about 1e-5 S at d = 16, so the exact path is rarely taken.)  With
# the rows in lanes, the screen is a few vector operations per component for
# all the block's rows: each row's maximum, the first component reaching it
# and the largest other score (``_top_two_lanes``); the row is decided when
# that second score is below the cut.  With components in lanes, one row at a
# time, the screen had been a third of the E-step (one thread, float32,
# (1e6, 16, 16): 39.6 -> 29.9 ns a row; (1e6, 32, 128): 158 -> 146); a
# maximum, then a count of the components above the cut, took 133 ns a row
# at (1e6, 32, 128) and 23.2 at (1e6, 16, 16), the two largest in one pass
# 129 and 22.3 (the same labels).
# Exact differences for every score (no screening) when the scores are this
# few: the screen's cost per row (staging, cut, candidates) outweighs its
# saving per score.  One thread, ns a row, exact vs screened: (d, k) = (2, 2)
# 14.5 vs 16.6, (3, 3) 23.3 vs 28.6, (1, 8) 16.3 vs 16.6, (2, 8) 20.0 vs 18.9,
# (4, 8) 34.6 vs 31.1, (4, 30) 44.7 vs 25.6.
_SMALL_D, _SMALL_DK = 4, 12
# rows whose S reaches this are decided exactly (see above), so the tile cannot overflow
_SCREEN_MAX_32, _SCREEN_MAX_64 = 2.0 ** 100, 2.0 ** 1000
_ADD_BLOCK = 64  # rows labelled before their statistics are added in one call
# Bounds (``estep_kmeans``; Hamerly, 2010).  When every component has the same
# precision p and the same log_norm (K-means), the label is the nearest mean.
# A row may carry u >= ||x - mu_a|| (its label a) and l <= min_{j != a}
# ||x - mu_j||, from the E-step before; once the means have moved by at most
# shift_j, u + shift_a and l - max_{j != a} shift_j bound the distances to
# the new means (triangle inequality).  A row whose bounds then give
#     (1 - gamma) l^2 - (1 + gamma) u^2 > margin,
#     gamma = (d + 16) 2^-50, margin = 2^-48 |LN| / p,
# keeps label a without being scored.  The means' separations tighten l
# where a few means moved far (Elkan, 2003; Hamerly's s(a)): with
# sep_a <= min_{j != a} ||mu_a - mu_j||, the triangle inequality about the
# row's own mean gives ||x - mu_j|| >= sep_a - u for every j != a, and with
# the movers (the means that moved far more than the rest, ``_shift_bounds``)
# at msep_a or more from mu_a, the rest having moved by mshift_a at most,
#     l' = max(min(l - mshift_a, max(l - max_j shift_j, msep_a - u)), sep_a - u)
# bounds the other distances too, at the cost of a few operations a row
# (``_separations`` computes sep and msep once a call).  Before, the rows
# that l alone left had their distances to the movers computed in a pass of
# their own: reading those rows cost about as much as scoring them.  In one
# fit at (1e6, 16, 16) float32, the rows read in the 5th to 11th E-steps
# went from 202-918 thousand to 112-368 thousand; fits of 10 iterations
# took 8-30 % less time there in six runs of seven, and 3-13 % less at
# (1e6, 32, 128) (two threads, the best of 7-11 alternating fits each; see
# benchmarks/PERFORMANCE.md).  A row that holds keeps
# label a without being scored: the float64 scores formed from
# differences, LN - p/2 ||x - mu_j||^2, carry a relative error below
# (d + 3) 2^-53 in the distance and 2^-53 |score| in all, so even they would
# put a strictly first; the screen, which decides only when its gap exceeds
# its error bound, cannot do otherwise.  The label, the statistics and the
# count of changes are therefore those of the unpruned E-step, bit for bit.
# A scored row decided by the screen gets its bounds from its two best
# screened scores (the squared distances are 2 (LN - score) / p, each score
# within E of the exact one; 2 E is used); a row decided on exact scores
# gets (inf, 0), nothing known.  Rows are taken a group (_GROUP_BLOCKS
# blocks) at a time: the group's rows that need scores are gathered into
# blocks, so a block is full whenever enough of its group needs scoring,
# then the whole group's statistics are added in row order.
_GROUP_BLOCKS = 4
# with the sums reading X, no float64 copy limits a group: its rows stay in the
# level-2 cache, and the few rows that need scores late in a fit fill whole blocks
_GROUP_BLOCKS_DIRECT = 128
# Kept sums (_KEPT_SUMS; ``estep_kmeans``'s ``sums``).  A row whose bounds hold
# keeps its label, so its share of its component's sums does not change.  Each
# chunk keeps S_j = [sum w, sum w (x - center)] over its rows labelled j from
# one call to the next; a row that changes label moves from the old S to the
# new one, in row order, and the statistics come from S (sx_j = S_j -
# nk_j (mu_j - center)).  The rows whose bounds hold are then never read:
# their data cost nothing.  The sums are no longer the row-order sums about
# the current means of the unpruned E-step: they agree with them to rounding
# (a relative 2^-52 or so per move, times |mu_j - center| / the spread of the
# component), and the chunk layout still fixes their order, so any thread
# count gives the same bits.  With second moments (K-means' final E-step, or
# an iteration that prints its inertia) the statistics are added in row order
# as without kept sums, and S is kept up to date beside them.  S holding NaN
# means "not kept" (a reset, or a call that kept no bounds): every row is
# scored and added afresh.


@leaf
def _score_tile(xb, CT, A, P, kp, nhalf, depth, scores):
    """Scores of the four rows of ``xb`` (shifted rows x - c) against every component.

    scores[r * kp + j] = A[j] + sum_a xb[r, a] CT[a * kp + j] + P[j] * nhalf[r].

    ``CT`` holds p_j mu_j' transposed and ``A``, ``P`` the components'
    constants, all zero-padded to ``kp`` columns (a multiple of one vector;
    padding has A = -inf); the arithmetic is in ``CT``'s dtype.  Column block
    t (columns t * 2L .. t * 2L + 2L - 1, L lanes a vector) reads only rows
    a < depth[t] of CT, which must be zero below: triangular factors skip
    their zeros.
    """
    L = lanes(CT)
    h0 = vsplat(CT, nhalf[0])
    h1 = vsplat(CT, nhalf[1])
    h2 = vsplat(CT, nhalf[2])
    h3 = vsplat(CT, nhalf[3])
    jt = 0
    while jt < kp:
        if jt + 2 * L <= kp:
            a00 = vload(A, jt)
            a01 = vload(A, jt + L)
            a10 = a00
            a11 = a01
            a20 = a00
            a21 = a01
            a30 = a00
            a31 = a01
            for a in range(depth[jt // (2 * L)]):
                c0 = vload(CT, a * kp + jt)
                c1 = vload(CT, a * kp + jt + L)
                x = vsplat(CT, xb[0, a])
                a00 = vfma(x, c0, a00)
                a01 = vfma(x, c1, a01)
                x = vsplat(CT, xb[1, a])
                a10 = vfma(x, c0, a10)
                a11 = vfma(x, c1, a11)
                x = vsplat(CT, xb[2, a])
                a20 = vfma(x, c0, a20)
                a21 = vfma(x, c1, a21)
                x = vsplat(CT, xb[3, a])
                a30 = vfma(x, c0, a30)
                a31 = vfma(x, c1, a31)
            p0 = vload(P, jt)
            p1 = vload(P, jt + L)
            a00 = vfma(h0, p0, a00)
            a01 = vfma(h0, p1, a01)
            a10 = vfma(h1, p0, a10)
            a11 = vfma(h1, p1, a11)
            a20 = vfma(h2, p0, a20)
            a21 = vfma(h2, p1, a21)
            a30 = vfma(h3, p0, a30)
            a31 = vfma(h3, p1, a31)
            vstore(scores, jt, a00)
            vstore(scores, jt + L, a01)
            vstore(scores, kp + jt, a10)
            vstore(scores, kp + jt + L, a11)
            vstore(scores, 2 * kp + jt, a20)
            vstore(scores, 2 * kp + jt + L, a21)
            vstore(scores, 3 * kp + jt, a30)
            vstore(scores, 3 * kp + jt + L, a31)
            jt += 2 * L
        else:  # one vector left
            a00 = vload(A, jt)
            a10 = a00
            a20 = a00
            a30 = a00
            for a in range(depth[jt // (2 * L)]):
                c0 = vload(CT, a * kp + jt)
                a00 = vfma(vsplat(CT, xb[0, a]), c0, a00)
                a10 = vfma(vsplat(CT, xb[1, a]), c0, a10)
                a20 = vfma(vsplat(CT, xb[2, a]), c0, a20)
                a30 = vfma(vsplat(CT, xb[3, a]), c0, a30)
            p0 = vload(P, jt)
            a00 = vfma(h0, p0, a00)
            a10 = vfma(h1, p0, a10)
            a20 = vfma(h2, p0, a20)
            a30 = vfma(h3, p0, a30)
            vstore(scores, jt, a00)
            vstore(scores, kp + jt, a10)
            vstore(scores, 2 * kp + jt, a20)
            vstore(scores, 3 * kp + jt, a30)
            jt += L


@inline_leaf
def _top_two_step(v, t, s, f, jv):
    """One component's scores v into a running (top, second, first), see
    ``_top_two_lanes``."""
    s = vselect_ge(t, v, vmax(s, v), t)
    f = vselect_ge(t, v, f, jv)
    return vmax(t, v), s, f


@leaf
def _top_two_lanes(sc, k, top, second, first):
    """For the R = 2 L rows in lanes: top[l] = max_{j < k} sc[j * R + l],
    first[l] = the least j reaching it (as an exact small integer in the
    scores' dtype) and second[l] = the largest score of the other components
    (top[l] again when two components share the maximum; -inf for k = 1).

    The components are taken in two halves, j < h and j >= h, with running
    values of their own (four chains of dependent selects instead of two),
    merged at the end: the lower half wins ties, so first stays the least j.
    """
    L = lanes(sc)
    R = 2 * L
    h = (k + 1) // 2
    ninf = vsplat(sc, -np.inf)
    zero = vsplat(sc, 0.0)
    ta0 = vload(sc, 0)
    ta1 = vload(sc, L)
    sa0 = ninf
    sa1 = ninf
    fa0 = zero
    fa1 = zero
    tb0 = ninf
    tb1 = ninf
    sb0 = ninf
    sb1 = ninf
    fb0 = zero
    fb1 = zero
    if h < k:
        tb0 = vload(sc, h * R)
        tb1 = vload(sc, h * R + L)
        fb0 = vsplat(sc, h)
        fb1 = fb0
    for q in range(1, h):
        jv = vsplat(sc, q)
        ta0, sa0, fa0 = _top_two_step(vload(sc, q * R), ta0, sa0, fa0, jv)
        ta1, sa1, fa1 = _top_two_step(vload(sc, q * R + L), ta1, sa1, fa1, jv)
        j = h + q
        if j < k:
            jv = vsplat(sc, j)
            tb0, sb0, fb0 = _top_two_step(vload(sc, j * R), tb0, sb0, fb0, jv)
            tb1, sb1, fb1 = _top_two_step(vload(sc, j * R + L), tb1, sb1, fb1, jv)
    vstore(top, 0, vmax(ta0, tb0))
    vstore(top, L, vmax(ta1, tb1))
    vstore(first, 0, vselect_ge(ta0, tb0, fa0, fb0))
    vstore(first, L, vselect_ge(ta1, tb1, fa1, fb1))
    # the loser of the two halves' maxima competes for second place
    vstore(second, 0, vmax(vmax(sa0, sb0), vselect_ge(ta0, tb0, tb0, ta0)))
    vstore(second, L, vmax(vmax(sa1, sb1), vselect_ge(ta1, tb1, tb1, ta1)))


@inline_leaf
def _add_hard_block(X, from_x, xr, M, dp, i0, n_rows, labels, sample_weight, nk, SX, SXX,
                    with_sxx):
    """Add rows i0..i0+n_rows-1 wholly to their components ``labels[i]``
    (to SXX only with ``with_sxx``).  w (x - mu) is added to SX by one fused
    multiply-add: as a product and a sum the compiler fused them or not
    depending on whether SXX also read the product, so that leaving SXX out
    changed SX's last bits.

    ``xr`` holds the rows in float64, row r at ``xr[r * dp:]`` (``dp`` = d
    padded to whole vectors, padding 0), or with ``from_x`` they are read from
    X (C order, d a multiple of 4: ``dp`` = d) and widened there: rows whose
    label bounds proved need no copy then (staging them had cost 2.4 ns a row
    more, one thread, (1e6, 16, 16) float32, every row held: 12.5 against
    10.1); ``M`` the means and ``SX``, ``SXX``
    the chunk's sums of w (x - mu) and w (x - mu)^2 in the same layout.
    Differences are formed a vector of features at a time.  The objective is
    left to ``_hard_objective``, from SXX once a chunk: a row's own distance
    (a horizontal sum and three dependent scalar steps) had cost about a
    quarter of the hard E-step (one thread, (2e5, 2, 8)).  Inlined into its
    callers: as a call, passing its arguments cost about as much as a row's
    update (one thread, (1e6, 16, 16): 44 ns a row inlined, 48-51 as a call).
    """
    L = lanes(xr)
    for r in range(n_rows):
        i = i0 + r
        w = sample_weight[i]
        if w == 0.0:
            continue
        best = labels[i]
        nk[best] += w
        wv = vsplat(xr, w)
        o = r * dp
        m = best * dp
        if from_x:
            for a in range(0, dp, L):
                t = vsub(vload4_f64(X, i, a), vload(M, m + a))
                vstore(SX, m + a, vfma(wv, t, vload(SX, m + a)))
                if with_sxx:
                    vstore(SXX, m + a, vfma(vmul(wv, t), t, vload(SXX, m + a)))
        else:
            for a in range(0, dp, L):
                t = vsub(vload(xr, o + a), vload(M, m + a))
                vstore(SX, m + a, vfma(wv, t, vload(SX, m + a)))
                if with_sxx:
                    vstore(SXX, m + a, vfma(vmul(wv, t), t, vload(SXX, m + a)))


@inline_leaf
def _add_hard_block_one(xr, M, i0, n_rows, labels, sample_weight, nk, SX, SXX, with_sxx):
    """``_add_hard_block`` for rows of one vector (dp = lanes, d <= 4).

    The general loop over a row's vectors, its remainder path and numba's
    wraparound tests on ``labels[i]``, ``sample_weight[i]`` and ``nk[best]``
    (indices it cannot prove non-negative) had been about a third of the hard
    E-step at (2e5, 2, 8) (profile, one thread); here a row is one vector
    update of each sum, with unchecked scalar loads.
    """
    L = lanes(xr)
    for r in range(n_rows):
        i = i0 + r
        w = sload(sample_weight, i)
        if w == 0.0:
            continue
        best = sload(labels, i)
        sstore(nk, best, sload(nk, best) + w)
        m = best * L
        t = vsub(vload(xr, r * L), vload(M, m))
        wv = vsplat(xr, w)
        vstore(SX, m, vfma(wv, t, vload(SX, m)))
        if with_sxx:
            vstore(SXX, m, vfma(vmul(wv, t), t, vload(SXX, m)))


@inline_leaf
def _hard_objective(nk, SXX, dp, precision, log_norm):
    """(sum w log-likelihood, sum w p ||x - mu||^2) of a chunk's hard
    assignments, from its sums nk and SXX (sum w (x - mu)^2, padded rows):
    component j adds p_j S_j to the distance and nk_j log_norm_j - p_j S_j / 2
    to the log-likelihood, S_j = sum_a SXX[j, a]."""
    ll = 0.0
    dist = 0.0
    for j in range(nk.shape[0]):
        if nk[j] == 0.0:  # no row: adds nothing (log_norm_j may be -inf)
            continue
        s = 0.0
        for a in range(dp):
            s += SXX[j * dp + a]
        m = precision[j] * s
        dist += m
        ll += nk[j] * log_norm[j] - 0.5 * m
    return ll, dist


@leaf
def _finish_hard_chunk(ci, nk, SX, SXX, dp, precision, log_norm, changed, sx, sxx_all, obj):
    """sx[j, a] = SX[j * dp + a] (the padded chunk sums), and unless ``sxx_all``
    has no rows (second moments off: obj[0] and obj[1] are then 0) likewise
    sxx_all[ci] and the objective (``_hard_objective``)."""
    k, d = sx.shape
    for j in range(k):
        for a in range(d):
            sx[j, a] = SX[j * dp + a]
    obj[0] = 0.0
    obj[1] = 0.0
    obj[2] = changed
    if sxx_all.shape[0] == 0:
        return
    sxx = sxx_all[ci]
    for j in range(k):
        for a in range(d):
            sxx[j, a] = SXX[j * dp + a]
    obj[0], obj[1] = _hard_objective(nk, SXX, dp, precision, log_norm)


@inline_leaf
def _prepare_value(X, i, a, c, xr, ro, xT, R, r):
    """Feature a of row i for the K-means screen: X[i, a] into the float64 row
    copy ``xr`` (at ro + a), the shifted value X[i, a] - c[a] into lane r of
    the transposed block ``xT`` (R lanes); returns its square in float64."""
    xa = X[i, a]
    sstore(xr, ro + a, xa)
    v = xa - c[a]
    sstore(xT, a * R + r, v)
    return np.float64(v) * np.float64(v)


@inline_leaf
def _stage_values(X, i, a0, a1, c, xr, ro, xT, R, r, xx, half):
    """Features a0 .. a1 - 1 of row i by ``_prepare_value``, their squares
    added to ``xx``; then half[r] = xx / 2 and -half[r] into the block's last
    feature."""
    for a in range(a0, a1):
        xx += _prepare_value(X, i, a, c, xr, ro, xT, R, r)
    half[r] = 0.5 * xx
    sstore(xT, (xT.shape[0] // R - 1) * R + r, -half[r])


@leaf
def _exact_score(X, i, means, j, precision, log_norm):
    """log_norm_j - p_j / 2 * ||x_i - mu_j||^2 from differences."""
    d = means.shape[1]
    ss = 0.0
    for a in range(d):
        t = X[i, a] - means[j, a]
        ss += t * t
    return log_norm[j] - 0.5 * precision[j] * ss


@inline_leaf
def _store_bounds(bounds, i, u, l):
    """bounds[2 i] = u and bounds[2 i + 1] = l in float32, rounded outwards
    (the stored upper bound is >= u and the lower one <= l, subnormals
    included; past float32's range the upper bound is inf)."""
    sstore(bounds, 2 * i, np.float32(u * (1.0 + 2.0 ** -22) + 2.0 ** -140))
    sstore(bounds, 2 * i + 1, np.float32(max(0.0, l * (1.0 - 2.0 ** -22) - 2.0 ** -140)))


@inline_leaf
def _bounds_test(u, l, gamma, margin):
    """Whether distances u >= ||x - mu_a|| and l <= min_{j != a} ||x - mu_j||
    make a the label (see ``_BOUNDS``)."""
    return l > u and (1.0 - gamma) * l * l - (1.0 + gamma) * u * u > margin


@inline_leaf
def _moved_bounds(bounds, i, up, down):
    """Row i's stored bounds moved with the means: (u + up, l - down), each
    rounded outwards."""
    u = (np.float64(sload(bounds, 2 * i)) + up) * (1.0 + 2.0 ** -50)
    l = (np.float64(sload(bounds, 2 * i + 1)) - down) * (1.0 - 2.0 ** -50)
    return u, l


@inline_leaf
def _bounds_hold(bounds, i, a, shift, oshift, mshift, sep, msep, gamma, margin):
    """Whether row i's bounds prove that its label ``a`` stands (never for a
    label out of range, such as -1 before the first E-step), with the largest
    shift of the other means and the separations of the means (``_separations``:
    the bound on the other distances from the row's own mean); if so, they are
    moved to the current means and stored (see ``_BOUNDS``)."""
    b = min(max(a, 0), shift.shape[0] - 1)
    u, l = _moved_bounds(bounds, i, shift[b], oshift[b])
    # the movers are at l or more, and at msep - u or more; the others moved by
    # mshift at most (without movers mshift = oshift and msep = inf: l stands).
    # Without branches: a test here, even one never taken, had tripled the
    # cost of the rows whose bounds hold (one thread, (1e6, 16, 16) float32,
    # every row held: 5.3 -> 15.4 ns a row)
    lo = _less(np.float64(sload(bounds, 2 * i + 1)), mshift[b])
    l = min(lo, max(l, _less(msep[b], u)))
    # the triangle inequality about the row's own mean
    l = max(l, _less(sep[b], u))
    if a == b and _bounds_test(u, l, gamma, margin):
        _store_bounds(bounds, i, u, l)
        return True
    return False


@inline_leaf
def _less(s, u):
    """s - u rounded down: a lower bound on a distance from a lower bound s and
    a shift or an upper bound u (with s <= ||mu_a - mu_j|| and
    u >= ||x - mu_a||, one on ||x - mu_j|| by the triangle inequality)."""
    return (s - u) * (1.0 - 2.0 ** -50)


@inline_leaf
def _stage_row(X, i, d, xr, o):
    """Row i of X in float64 into xr[o:o + d] (a row whose label its bounds
    proved: the sums' copy alone).  Element by element: as 4-element vectors
    (``vload4_f64``) this had cost three times as much (one thread,
    (1e5, 16, 16) float32: 6.5 ns a row against 2.2)."""
    for a in range(d):
        sstore(xr, o + a, np.float64(X[i, a]))


@inline_leaf
def _screen_error(d, unit, tiny, screen_max, a_max, pn_max, p_max):
    """(e0, e1, h_max): the bound E of a row (see above) without its square
    root.  With ||x'|| q <= p ||x'||^2 / 2 + q^2 / (2 p) and
    ||x'|| <= 1 + ||x'||^2 / 2, S <= S0 + 2 p_max h and E <= e0 + e1 h, where
    h = ||x'||^2 / 2; rows with h >= h_max are not screened."""
    s0 = a_max + (pn_max * pn_max / (2.0 * p_max) if p_max > 0.0 else 0.0)
    rel = (d + 4) * unit + 8.0 * 2.0 ** -53
    root_d = np.sqrt(d)
    e0 = rel * s0 + (d + 3 + root_d * (1.0 + pn_max) + p_max) * tiny
    e1 = rel * 2.0 * p_max + (root_d + 1.0) * tiny
    h_max = (screen_max - s0) / (2.0 * p_max) if p_max > 0.0 else np.inf
    return e0, e1, h_max


@inline_leaf
def _zeros64(n):
    """n float64 zeros starting on a 64-byte boundary.  numba aligns arrays
    to 32 bytes, so every other block vector (``bload``, 64 bytes) of a tile
    buffer would straddle two cache lines."""
    buf = np.zeros(n + 8)
    off = (-buf.ctypes.data % 64) // 8
    return buf[off:off + n]


@inline_leaf
def _zeros64_like(n, like):
    """``_zeros64`` of ``like``'s dtype."""
    size = like.itemsize
    buf = np.zeros(n + 64 // size, dtype=like.dtype)
    off = (-buf.ctypes.data % 64) // size
    return buf[off:off + n]


@serial
def _screen_buffers(d, kp, R, CT):
    """A block's buffers for the screen: the shifted rows, feature-major, and a
    last feature -||x'||^2 / 2 (CT's last row holds P); their scores,
    component-major; each row's top score, cut, second score, first
    component, ||x'||^2 / 2 and whether it is screened."""
    return (_zeros64_like((d + 1) * R, CT), _zeros64_like(kp * R, CT),
            np.empty(R, dtype=CT.dtype), np.zeros(R, dtype=CT.dtype),
            np.empty(R, dtype=CT.dtype), np.empty(R, dtype=CT.dtype), np.zeros(R),
            np.zeros(R, dtype=np.bool_))


@inline_leaf
def _screen_cuts(n_rows, top, half, e0, e1, h_max, cut, screened):
    """The screen's cut of each of a block's rows, and whether its scores are in
    range (see above)."""
    for r in range(n_rows):
        # 4 x the bound on the screening error of every score of this row,
        # compared in the scores' dtype: rounding moves it by far less than 2 E
        cr = np.float64(top[r]) - 4.0 * (e0 + e1 * half[r])
        cut[r] = cr
        screened[r] = half[r] < h_max and np.isfinite(cr)


@inline_leaf
def _exact_label(X, i, means, precision, log_norm, sc, R, r, cut, screened):
    """Row i's label from exact scores (a close call, or scores out of the
    screen's range): the components the screen left within reach of the best."""
    best = 0
    v_best = _exact_score(X, i, means, 0, precision, log_norm)
    for j in range(1, means.shape[0]):
        if not screened or sc[j * R + r] >= cut:
            v = _exact_score(X, i, means, j, precision, log_norm)
            if v > v_best:
                v_best = v
                best = j
    return best


@serial
def _estep_spherical_hard_chunk(ci, X, sample_weight, means, M, precision, log_norm, c, CT, A,
                                kp, unit, tiny, screen_max, a_max, pn_max, p_max, chunk_size,
                                labels, nk_all, sx_all, sxx_all, obj_all):
    start = ci * chunk_size
    stop = min(X.shape[0], start + chunk_size)
    nk, sx, obj = nk_all[ci], sx_all[ci], obj_all[ci]
    with_sxx = sxx_all.shape[0] > 0  # else second moments off
    k, d = means.shape
    e0, e1, h_max = _screen_error(d, unit, tiny, screen_max, a_max, pn_max, p_max)
    R = 2 * lanes(CT)  # rows a block, in the lanes of two vectors
    xT, sc, top, cut, second, first, half, screened = _screen_buffers(d, kp, R, CT)
    dp = M.shape[0] // k
    xr = np.zeros(R * dp)
    SX = np.zeros(k * dp)
    SXX = np.zeros(k * dp)
    nk[:] = 0.0
    changed = 0
    one_vector = dp == lanes(xr)
    by_rows = X.strides[1] == X.itemsize
    d4 = d - d % 4
    hn = np.zeros(4)
    rows = np.empty(R, dtype=np.int64)  # the block's rows, for stage_rows4
    for i0 in range(start, stop, R):
        n_rows = min(R, stop - i0)
        # lanes past a short last block: stale, not read
        if one_vector:
            # d <= 4: the same steps, unrolled (the general loop's setup and
            # remainder path had cost more than its d iterations)
            for r in range(n_rows):
                xx = 0.0
                for a in range(4):
                    if a < d:
                        xx += _prepare_value(X, i0 + r, a, c, xr, r * dp, xT, R, r)
                half[r] = 0.5 * xx
                sstore(xT, d * R + r, -half[r])
        elif by_rows and n_rows == R:
            # 4 rows by 4 features at a time, transposed in registers (one
            # value at a time, the stores into the lanes had been about a
            # third of the E-step: one thread, (1e6, 16, 16), ns a row:
            # float32 26.5 -> 23.0, float64 27.5 -> 23.7; same labels)
            for r in range(R):
                rows[r] = i0 + r
            for r0 in range(0, R, 4):
                hn[:] = 0.0
                for a in range(0, d4, 4):
                    stage_rows4(X, rows, r0, a, c, xT, r0, R, xr, i0, dp, hn, 0)
                for q in range(4):
                    r = r0 + q
                    xx = hn[q]
                    for a in range(d4, d):
                        xx += _prepare_value(X, i0 + r, a, c, xr, r * dp, xT, R, r)
                    half[r] = 0.5 * xx
                    sstore(xT, d * R + r, -half[r])
        else:
            for r in range(n_rows):
                _stage_values(X, i0 + r, 0, d, c, xr, r * dp, xT, R, r, 0.0, half)
        _score_tile_lanes(xT, 0, d + 1, CT, A, kp, sc, 0)
        _top_two_lanes(sc, k, top, second, first)
        _screen_cuts(n_rows, top, half, e0, e1, h_max, cut, screened)
        for r in range(n_rows):
            i = i0 + r
            best = np.int64(first[r])
            # the best alone above the cut (the second below it) is the label
            if not second[r] < cut[r] or not screened[r]:
                # a close call, or scores out of range: exact scores decide
                best = _exact_label(X, i, means, precision, log_norm, sc, R, r, cut[r],
                                    screened[r])
            if labels[i] != best:
                changed += 1
                labels[i] = best
        if one_vector:
            _add_hard_block_one(xr, M, i0, n_rows, labels, sample_weight, nk, SX, SXX, with_sxx)
        else:
            _add_hard_block(X, False, xr, M, dp, i0, n_rows, labels, sample_weight, nk, SX, SXX,
                            with_sxx)
    _finish_hard_chunk(ci, nk, SX, SXX, dp, precision, log_norm, changed, sx, sxx_all, obj)


@inline_leaf
def _move_row(X, i, w, old, new, center, S):
    """Row i (weight w) out of component ``old``'s kept sums (none for
    old < 0) and into ``new``'s: S[j] = [sum w, sum w (x - center)].  Each
    term is one fused multiply-add (``sfma``), which the fast-math flags
    cannot contract in one compiled layout of X and not in another."""
    if old >= 0:
        S[old, 0] = sadd(S[old, 0], -w)
    S[new, 0] = sadd(S[new, 0], w)
    for a in range(X.shape[1]):
        v = np.float64(X[i, a]) - center[a]
        if old >= 0:
            S[old, 1 + a] = sfma(-w, v, S[old, 1 + a])
        S[new, 1 + a] = sfma(w, v, S[new, 1 + a])


@leaf
def _sums_to_statistics(S, means, center, nk, SX, dp):
    """nk and SX (sum w (x - mu_j), padded rows) from the kept sums S about
    ``center``: SX_j = S_j - nk_j (mu_j - center)."""
    k, d = means.shape
    for j in range(k):
        nk[j] = S[j, 0]
        for a in range(d):
            SX[j * dp + a] = sfma(-S[j, 0], means[j, a] - center[a], S[j, 1 + a])


@serial
def _estep_kmeans_chunk(ci, X, sample_weight, means, M, precision, log_norm, c, CT, A, kp,
                        unit, tiny, screen_max, a_max, pn_max, p_max, bounds, shift, oshift,
                        mshift, sep, msep, center, keep, sums_all, chunk_size, labels, nk_all,
                        sx_all, sxx_all, obj_all):
    """``_estep_spherical_hard_chunk`` with K-means' bounds (see ``_BOUNDS``):
    rows are taken a group at a time; the rows whose bounds hold are not
    scored, the others are gathered into blocks and scored as there.  With
    second moments, or without kept sums, the group's statistics are then
    added in row order; else (see ``_KEPT_SUMS``) only the rows that changed
    label move between the chunk's kept sums, and the statistics come from
    those."""
    start = ci * chunk_size
    stop = min(X.shape[0], start + chunk_size)
    nk, sx, obj = nk_all[ci], sx_all[ci], obj_all[ci]
    with_sxx = sxx_all.shape[0] > 0  # else second moments off
    S = sums_all[ci if keep else 0]  # (k, d + 1); one unused chunk without keep
    rebuild = keep and np.isnan(S[0, 0])  # not kept: every row goes in afresh
    if rebuild:
        S[:, :] = 0.0
    by_changes = keep and not with_sxx  # the statistics from the kept sums
    k, d = means.shape
    e0, e1, h_max = _screen_error(d, unit, tiny, screen_max, a_max, pn_max, p_max)
    # bounds (see _BOUNDS): one precision p and one log_norm LN for all
    p = precision[0]
    LN = log_norm[0]
    gamma = (d + 16) * 2.0 ** -50
    margin = 2.0 ** -48 * abs(LN) / p
    two_over_p = 2.0 / p  # within 2^-52 of the quotient it replaces: the bounds keep 2^-20
    R = 2 * lanes(CT)  # rows a block, in the lanes of two vectors
    dp = M.shape[0] // k
    one_vector = dp == VECTOR_BYTES // 8  # d <= 4: a row is one float64 vector
    by_rows = X.strides[1] == X.itemsize
    # the sums read every row from X (C order, d a multiple of 4), else from
    # float64 copies made while staging (xr, a row every rs values); from the
    # kept sums, no row is read for them
    direct = by_rows and dp == d and not one_vector
    G = (_GROUP_BLOCKS_DIRECT if direct or by_changes else _GROUP_BLOCKS) * R  # rows a group
    rs = 0 if direct or by_changes else dp
    # a rebuild on rows read as vectors adds each group to the sums at once
    # (_add_hard_block about ``center``), in row order as _move_row would: the
    # same bits, where a call of _move_row a row had taken about a seventh of
    # the first E-step's profile (one thread, (1e6, 16, 16) float32: 38 -> 36
    # ms a call with the division below)
    by_block = rebuild and direct
    MC = np.zeros(k * dp if by_block else 0)
    SC = np.zeros(k * dp if by_block else 0)
    NC = np.zeros(k if by_block else 0)
    if by_block:
        for j in range(k):
            MC[j * dp:j * dp + d] = center
    xT, sc, top, cut, second, first, half, screened = _screen_buffers(d, kp, R, CT)
    upper = np.empty(R)
    lower = np.empty(R)
    scored = np.empty(G, dtype=np.int64)  # the group's rows that are scored
    xr = np.zeros(max(G * rs, dp))  # the group's rows in float64, row i at (i - g0) * rs
    SX = np.zeros(k * dp)
    SXX = np.zeros(k * dp)
    nk[:] = 0.0
    changed = 0
    d4 = d - d % 4
    hn = np.zeros(4)
    for g0 in range(start, stop, G):
        g1 = min(stop, g0 + G)
        # rows whose bounds prove their label keep it and are not scored
        m = 0
        for i in range(g0, g1):
            if not rebuild and _bounds_hold(bounds, i, sload(labels, i), shift, oshift, mshift,
                                            sep, msep, gamma, margin):
                if rs > 0:
                    _stage_row(X, i, d, xr, (i - g0) * rs)  # the sums' copy
                continue
            if by_rows and not rebuild:
                # the rows that need scores are few and scattered: without this
                # hint each waited for memory when staged (one thread,
                # (1e6, 16, 16) float32, 5 % of the rows scored: 95 -> 80 ns a
                # scored row); a rebuild scores them all, in order
                prefetch_rows_near(X, i, 1)
            scored[m] = i
            m += 1
        for b0 in range(0, m, R):
            n_rows = min(R, m - b0)
            # lanes past a short last block: stale, not read
            if one_vector:
                # d <= 4: the same steps, unrolled (the general loop's setup and
                # remainder path had cost more than its d iterations)
                for r in range(n_rows):
                    i = scored[b0 + r]
                    xx = 0.0
                    for a in range(4):
                        if a < d:
                            xx += _prepare_value(X, i, a, c, xr, (i - g0) * rs, xT, R, r)
                    half[r] = 0.5 * xx
                    sstore(xT, d * R + r, -half[r])
            else:
                r0 = 0
                if by_rows:
                    # 4 rows by 4 features at a time, transposed in registers (one
                    # value at a time, the stores into the lanes had been about a
                    # third of the E-step: one thread, (1e6, 16, 16), ns a row:
                    # float32 26.5 -> 23.0, float64 27.5 -> 23.7; same labels)
                    while r0 + 4 <= n_rows:
                        hn[:] = 0.0
                        for a in range(0, d4, 4):
                            stage_rows4(X, scored, b0 + r0, a, c, xT, r0, R, xr, g0, rs, hn, 0)
                        for q in range(4):
                            r = r0 + q
                            i = scored[b0 + r]
                            xx = hn[q]
                            for a in range(d4, d):
                                xx += _prepare_value(X, i, a, c, xr, (i - g0) * rs, xT, R, r)
                            half[r] = 0.5 * xx
                            sstore(xT, d * R + r, -half[r])
                        r0 += 4
                for r in range(r0, n_rows):
                    i = scored[b0 + r]
                    _stage_values(X, i, 0, d, c, xr, (i - g0) * rs, xT, R, r, 0.0, half)
            _score_tile_lanes(xT, 0, d + 1, CT, A, kp, sc, 0)
            _top_two_lanes(sc, k, top, second, first)
            _screen_cuts(n_rows, top, half, e0, e1, h_max, cut, screened)
            # the bounds of rows decided by the screen: its scores are within E of
            # the exact ones (2 E leaves room for rounding), and the squared
            # distances are 2 (LN - score) / p
            for r in range(n_rows):
                e2 = 2.0 * (e0 + e1 * half[r])
                du = (LN - np.float64(top[r]) + e2) * two_over_p
                dl = (LN - np.float64(second[r]) - e2) * two_over_p
                upper[r] = np.sqrt(max(du, 0.0)) * (1.0 + 2.0 ** -20)
                lower[r] = np.sqrt(max(dl, 0.0)) * (1.0 - 2.0 ** -20)
            for r in range(n_rows):
                i = scored[b0 + r]
                best = np.int64(first[r])
                # the best alone above the cut (the second below it) is the label
                if not second[r] < cut[r] or not screened[r]:
                    # a close call, or scores out of range: exact scores decide
                    best = _exact_label(X, i, means, precision, log_norm, sc, R, r, cut[r],
                                        screened[r])
                    _store_bounds(bounds, i, np.inf, 0.0)  # nothing known
                else:
                    _store_bounds(bounds, i, upper[r], lower[r])
                old = labels[i]
                if old != best:
                    changed += 1
                    labels[i] = best
                if keep and (old != best or rebuild) and sample_weight[i] != 0.0 \
                        and not by_block:
                    # a label out of range (-1 before the first E-step) is in no sum
                    out = -1 if rebuild or not 0 <= old < k else old
                    _move_row(X, i, sample_weight[i], out, best, center, S)
        if by_block:
            _add_hard_block(X, True, xr, MC, dp, g0, g1 - g0, labels, sample_weight, NC, SC,
                            SC, False)
        if by_changes:
            continue
        if one_vector:
            _add_hard_block_one(xr, M, g0, g1 - g0, labels, sample_weight, nk, SX, SXX,
                                with_sxx)
        else:
            _add_hard_block(X, direct, xr, M, dp, g0, g1 - g0, labels, sample_weight, nk, SX,
                            SXX, with_sxx)
    if by_block:
        for j in range(k):
            S[j, 0] = NC[j]
            S[j, 1:] = SC[j * dp:j * dp + d]
    if by_changes:
        _sums_to_statistics(S, means, center, nk, SX, dp)
    _finish_hard_chunk(ci, nk, SX, SXX, dp, precision, log_norm, changed, sx, sxx_all, obj)


@serial
def _estep_spherical_hard_small_chunk(ci, X, sample_weight, means, M, precision, log_norm, LN,
                                      NHP, chunk_size, labels, nk_all, sx_all, sxx_all,
                                      obj_all):
    """Hard spherical E-step for few features: exact scores, rows in lanes.

    With d small the expansion saves little, so every score is formed from
    differences, for four rows at once (one row per vector lane):
    lp_j = log_norm_j - p_j / 2 * sum_a (x_a - mu_ja)^2 (``LN`` = log_norm,
    ``NHP`` = -p / 2).  The label, the first j reaching the row's maximum,
    comes from vector selects.  (Components in lanes, one row at a time, ran
    a chain of dependent steps per row: 22-23 ns a row at (2e5, 2, 8), one
    thread.)
    """
    start = ci * chunk_size
    stop = min(X.shape[0], start + chunk_size)
    nk, sx, obj = nk_all[ci], sx_all[ci], obj_all[ci]
    with_sxx = sxx_all.shape[0] > 0  # else second moments off
    k, d = means.shape
    L = lanes(LN)
    xt = np.zeros(d * L)             # four rows, feature-major: xt[a * L + l]
    sc = np.empty(k * L)             # their scores, component-major
    lane = np.empty(L)
    dp = M.shape[0] // k
    xr = np.zeros(_ADD_BLOCK * dp)
    SX = np.zeros(k * dp)
    SXX = np.zeros(k * dp)
    nk[:] = 0.0
    changed = 0
    for i0 in range(start, stop, _ADD_BLOCK):
        i1 = min(stop, i0 + _ADD_BLOCK)
        for r0 in range(i0, i1, L):
            n_rows = min(L, i1 - r0)
            for l in range(n_rows):  # lanes past a short last group: stale, not read
                for a in range(d):
                    xa = np.float64(X[r0 + l, a])
                    xr[(r0 - i0 + l) * dp + a] = xa
                    xt[a * L + l] = xa
            top = vsplat(xt, -np.inf)
            for j in range(k):
                acc = vsplat(xt, 0.0)
                for a in range(d):
                    t = vsub(vload(xt, a * L), vsplat(xt, means[j, a]))
                    acc = vfma(t, t, acc)
                v = vfma(vsplat(xt, NHP[j]), acc, vsplat(xt, LN[j]))
                vstore(sc, j * L, v)
                top = vmax(top, v)
            first = vsplat(xt, 0.0)  # also the label of a row whose scores are all -inf
            for j in range(k - 1, -1, -1):
                first = vselect_ge(vload(sc, j * L), top, vsplat(xt, j), first)
            vstore(lane, 0, first)
            for l in range(n_rows):
                i = r0 + l
                best = np.int64(lane[l])
                if labels[i] != best:
                    changed += 1
                    labels[i] = best
        _add_hard_block_one(xr, M, i0, i1 - i0, labels, sample_weight, nk, SX, SXX, with_sxx)
    _finish_hard_chunk(ci, nk, SX, SXX, dp, precision, log_norm, changed, sx, sxx_all, obj)


_NO_BOUNDS = np.zeros(0, dtype=np.float32)
_NO_SHIFT = np.zeros(0)
_NO_SUMS = np.zeros((0, 1, 1))

# Bounds spare a row its scores and, with kept sums, its data altogether, at
# the cost of their test and, for the rows that still need scores, of
# gathering them and moving them between sums.  Marginal time per iteration
# of fits from the same start, bounded against unbounded, two threads,
# float32, ms (a slow spell of the machine: the unbounded (1e6, 16, 16) ran at
# twice its usual time): (1e6, 32, 128) 21.4 against 103.9; (1e6, 16, 16)
# 6.6 against 23.3; (2e5, 8, 8) 1.5 against 3.5; (2e5, 4, 8) 0.5-1.2 against
# 2.5; (2e5, 6, 8) 2.5 against 3.5.  With three features or fewer a row's
# scores cost little more than its test and its gathering: (2e5, 3, 16) 3.1
# against 2.0, (2e5, 2, 8) 2.7 against 2.6, (2e5, 2, 32) 3.2 against 3.4.
_BOUNDS_MIN_FEATURES = 4


def kmeans_bounds_pay(n_features, n_clusters):
    """Whether ``estep_kmeans`` keeps bounds worth their 8 bytes a sample."""
    return n_features >= _BOUNDS_MIN_FEATURES and n_clusters >= 2


_MOVERS = 4  # at most this many movers (``_shift_bounds``)


def _shift_bounds(shift):
    """From the means' shifts s_j: (oshift, movers, mshift) of ``_bounds_hold``.

    oshift[a] = max_{j != a} s_j.  ``movers``: the means among the _MOVERS
    that moved farthest whose shift exceeds twice that of every other mean
    (none when no such gap); mshift[a] = max s_j over the others, j != a
    (oshift without movers).
    """
    k = shift.shape[0]
    order = np.argsort(-shift, kind="stable")
    oshift = np.full(k, shift[order[0]])
    oshift[order[0]] = shift[order[1]] if k > 1 else 0.0
    # at most one in eight means: the movers' bound takes the separation of
    # the nearest mover, which more movers can only lower.  Replayed from one
    # fit's E-steps ((1e6, 16, 16) float32), the rows held were within 0.5-6
    # points (of 100) of those held by the best of 1 to 8 movers, row by row
    most = min(_MOVERS, k // 8)
    rest = shift[order[most]] if k > most else 0.0
    movers = order[:most][shift[order[:most]] > 2.0 * rest]
    others = np.ones(k, dtype=bool)
    others[movers] = False
    mshift = np.zeros(k)
    if others.any():
        top = order[others[order]]  # the others, farthest first
        mshift[:] = shift[top[0]]
        mshift[top[0]] = shift[top[1]] if top.shape[0] > 1 else 0.0
    return oshift, np.ascontiguousarray(movers, dtype=np.int64), mshift


@serial
def _separations(means, movers, every):
    """(sep, msep) of ``_bounds_hold``: sep[a] <= min_{j != a} ||mu_a - mu_j||
    (with ``every``; else 0, no bound) and msep[a] <= the same minimum over
    the movers j != a (inf when there is none; sep is 0 for k = 1).  Each
    distance is the square root of a float64 sum of d squares by fused
    multiply-adds, within (d + 3) 2^-53 relative of the exact one, scaled
    down by 2^-20, as the screen's distances are (room for a square root the
    fast-math flags might approximate).  The squared distances of one mean to
    all the others are summed a feature at a time, a vector of means at once
    (``_separation_row``)."""
    k, d = means.shape
    down = 1.0 - 2.0 ** -20
    kp = -(-k // 4) * 4
    MT = np.zeros(d * kp)  # the means feature-major, padded with zeros
    for a in range(k):
        for b in range(d):
            MT[b * kp + a] = means[a, b]
    ss = np.empty(kp)
    sep = np.zeros(k)
    msep = np.full(k, np.inf)
    for t in range(movers.shape[0]):
        j = movers[t]
        _separation_row(means, j, MT, kp, ss)
        for a in range(k):
            if a != j:
                msep[a] = min(msep[a], np.sqrt(ss[a]) * down)
    top = np.empty(4)
    for a in range(k if every and k > 1 else 0):
        _separation_row(means, a, MT, kp, ss)
        ss[a] = np.inf
        ss[k:] = np.inf
        # the least, as the largest negation: four lanes, then one
        neg = vsplat(ss, -np.inf)
        for j0 in range(0, kp, 4):
            neg = vmax(neg, vsub(vzero(ss), vload(ss, j0)))
        vstore(top, 0, neg)
        sep[a] = np.sqrt(-max(max(top[0], top[1]), max(top[2], top[3]))) * down
    return sep, msep


@leaf
def _separation_row(means, a, MT, kp, ss):
    """ss[j] = ||mu_a - mu_j||^2 for every j < kp (padding: junk): four
    vectors of means at a time, each its own chain of multiply-adds over the
    features."""
    d = means.shape[1]
    j0 = 0
    while j0 < kp:
        s0 = vzero(MT)
        s1 = s0
        s2 = s0
        s3 = s0
        wide = j0 + 16 <= kp
        for b in range(d):
            v = vsplat(MT, means[a, b])
            o = b * kp + j0
            t = vsub(vload(MT, o), v)
            s0 = vfma(t, t, s0)
            if wide:
                t = vsub(vload(MT, o + 4), v)
                s1 = vfma(t, t, s1)
                t = vsub(vload(MT, o + 8), v)
                s2 = vfma(t, t, s2)
                t = vsub(vload(MT, o + 12), v)
                s3 = vfma(t, t, s3)
        vstore(ss, j0, s0)
        if wide:
            vstore(ss, j0 + 4, s1)
            vstore(ss, j0 + 8, s2)
            vstore(ss, j0 + 12, s3)
            j0 += 16
        else:
            j0 += 4


@strict
def _rows_mean(means):
    """``means.mean(axis=0)`` with numpy's bits: the rows added in order, then
    divided by their count."""
    k, d = means.shape
    c = np.zeros(d)
    for j in range(k):
        for a in range(d):
            c[a] += means[j, a]
    for a in range(d):
        c[a] /= k
    return c


_EPS32_HALF = float(np.finfo(np.float32).eps) / 2
_TINY32 = float(np.finfo(np.float32).smallest_subnormal)
_EPS64_HALF = float(np.finfo(np.float64).eps) / 2
_TINY64 = float(np.finfo(np.float64).smallest_subnormal)


@strict
def _screen_operands(means, precision, log_norm, c, kp):
    """``_screen.screen_constants`` and the tile's operands in one compiled
    call, in float64, for a tile of kp components (a float64 tile, of fewer
    padding components, takes the first columns): writes c (the mean of the
    means, rounded to its array's dtype, X's) and returns (CT (d + 1, kp): p_j
    (mu_j - c) transposed, then p_j; A (kp,), -inf past k; a_max, pn_max,
    p_max).  numpy's version and the tile's arrays took 0.11-0.12 ms
    an E-step, K-means at (2e5, 2, 8): 6 % of its iteration on two threads.
    The mean as numpy's (the same bits); ||mu_j - c||^2 sums the features in
    their order (numpy's einsum may differ in the last bit)."""
    k, d = means.shape
    m = _rows_mean(means)
    for a in range(d):
        c[a] = m[a]
    CT = np.zeros((d + 1, kp))
    A = np.full(kp, -np.inf)
    a_max = 0.0
    pn_max = -np.inf
    p_max = -np.inf
    for j in range(k):
        p = precision[j]
        norm2 = 0.0
        for a in range(d):
            t = means[j, a] - np.float64(c[a])
            CT[a, j] = p * t
            norm2 += t * t
        CT[d, j] = p
        norm = np.sqrt(norm2)
        A[j] = log_norm[j] - 0.5 * p * norm ** 2
        if np.isfinite(A[j]):
            a_max = max(a_max, abs(A[j]))
        pn_max = max(pn_max, p * norm)
        p_max = max(p_max, p)
    return CT, A, a_max, pn_max, p_max


def _estep_spherical_hard(X, sample_weight, means, precision, log_norm, chunk_size,
                          labels, nk, sx, sxx, obj, bounds=_NO_BOUNDS, shift=_NO_SHIFT,
                          center=_NO_SHIFT, sums=_NO_SUMS):
    """The hard spherical E-step without log-probabilities; with ``bounds``
    (flat, 2 n float32), ``shift``, ``center`` and ``sums`` (kept sums, see
    ``_KEPT_SUMS``), ``estep_kmeans``'s pruned one."""
    k, d = means.shape
    dp = _padded(d, 4)
    M = np.zeros((k, dp))  # means in the padded row layout of _add_hard_block
    M[:, :d] = means
    M = M.ravel()
    if d <= _SMALL_D and d * k <= _SMALL_DK:
        run_chunks(_estep_spherical_hard_small_chunk, nk.shape[0], X, sample_weight, means, M,
                   precision, log_norm, np.ascontiguousarray(log_norm, dtype=np.float64),
                   -0.5 * precision, chunk_size, labels, nk, sx, sxx, obj,
                   work=X.size * k)
        if bounds.shape[0] > 0:
            bounds[0::2] = np.inf  # exact scores for every row: no bounds kept
            bounds[1::2] = 0.0
            sums[...] = np.nan  # nor sums
        return
    # the tile's dtype (see above): float32 unless the components' constants
    # are out of its range
    kp = _padded(k, 8)  # the lanes of a float32 tile
    c = np.empty(d, dtype=X.dtype)
    CT, A, a_max, pn_max, p_max = _screen_operands(means, precision, log_norm, c, kp)
    if max(a_max, pn_max, p_max) < _SCREEN_MAX_32:
        screen = (c, CT.astype(np.float32).ravel(), A.astype(np.float32), kp,
                  _EPS32_HALF, _TINY32, _SCREEN_MAX_32, a_max, pn_max, p_max)
    else:  # a float64 tile, four lanes: the same operands, fewer padding components
        kp = _padded(k, 4)
        screen = (c, np.ascontiguousarray(CT[:, :kp]).ravel(), A[:kp].copy(), kp,
                  _EPS64_HALF, _TINY64, _SCREEN_MAX_64, a_max, pn_max, p_max)
    if bounds.shape[0] == 0:
        run_chunks(_estep_spherical_hard_chunk, nk.shape[0], X, sample_weight, means, M,
                   precision, log_norm, *screen, chunk_size, labels, nk, sx, sxx, obj,
                   work=X.size * k)
        return
    shift = np.ascontiguousarray(shift, dtype=np.float64)
    keep = sums.shape[0] > 0
    oshift, movers, mshift = _shift_bounds(shift)
    # every separation costs O(k^2 d), a few percent of the E-step whose rows
    # all hold (about 5 ns a row) at k^2 d = n: (1e6, 32, 128) 0.06 ms; past
    # that, the movers' alone (O(k d) each)
    every = k * k * d <= X.shape[0]
    run_chunks(_estep_kmeans_chunk, nk.shape[0], X, sample_weight, means, M, precision,
               log_norm, *screen, bounds, shift, oshift, mshift,
               *_separations(means, movers, every),
               np.ascontiguousarray(center, dtype=np.float64), keep,
               sums if keep else np.zeros((1, k, d + 1)), chunk_size, labels, nk, sx, sxx, obj,
               work=X.size * k)


def estep_kmeans(X, sample_weight, means, prec_chol, log_norm, center, chunk_size, labels,
                 bounds, shift, sums, nk, sx, sxx, obj):
    check_labels(X, labels, True)
    check_bounds(X, means, chunk_size, bounds, shift, sums)
    if not statistics_wanted(nk):
        nk, sx, sxx, obj = statistic_temporaries("estep_spherical", X, means.shape[0],
                                                 chunk_size)
    _hard_fit(X, sample_weight, means, prec_chol ** 2, log_norm, chunk_size, labels, nk, sx,
              sxx, obj, bounds.reshape(-1), shift, center, sums)  # (n, 2) C order: a view


def _hard_fit(X, sample_weight, means, precision, log_norm, chunk_size, labels, nk, sx, sxx,
              obj, bounds=_NO_BOUNDS, shift=_NO_SHIFT, center=_NO_SHIFT, sums=_NO_SUMS):
    """``_estep_spherical_hard`` into the table's statistics: with second
    moments off (K-means' iterations) the chunks leave them out; else they
    accumulate the squares per feature, and the table's statistic is their sum."""
    if not second_moments_wanted(nk, sxx):
        _estep_spherical_hard(X, sample_weight, means, precision, log_norm, chunk_size,
                              labels, nk, sx, np.empty((0,) + sx.shape[1:]), obj, bounds, shift,
                              center, sums)
        return
    per_feature = np.empty(sx.shape)
    _estep_spherical_hard(X, sample_weight, means, precision, log_norm, chunk_size, labels,
                          nk, sx, per_feature, obj, bounds, shift, center, sums)
    np.sum(per_feature, axis=2, out=sxx)


# ------------------------------------------------ soft E-steps through tiles
# The soft E-step of the diagonal, spherical and Bernoulli models is two dense
# products with a row-wise softmax between them.  With a feature map f(x) of m
# features, a (m, k) matrix G and constants A,
#     log(w_j p_j(x)) = A_j + f(x) . G[:, j]
# (Bernoulli: f(x) = x, G = logit; diagonal: f(x) = (x', x'^2) with x' = x - c,
# G = (p_j mu_j', -p_j / 2), A_j = log_norm_j - 1/2 sum_a p_ja mu_ja'^2;
# spherical: f(x) = (x', ||x'||^2); with NaN: (o x', o x'^2, o); see ``_soft``),
# and the statistics are the moments sum_i w_i r_ij f(x_i), from which sx and
# sxx about the current means follow.  Rows are taken ``_SUB`` at a time: their
# features and weighted responsibilities fill two small buffers that stay in
# cache, held in blocks of ``_RB`` rows with the rows in vector lanes.  The
# scores come from ``_score_tile_lanes`` and the moments from
# ``_moment_tile_lanes``, both register tiles of SIMD vectors in float64, and
# ``_softmax_lanes`` takes the maximum, the exps and the normalisation of
# four rows at once (one row at a time, the softmax is a chain of dependent
# operations; (2e5, 2, 8) diagonal, one thread: 93-120 ns a row before,
# 66-88 after).  The shift
# c (the mean of the means) keeps the expansion of (x - mu)^2 well conditioned:
# the moments about c are turned into moments about mu_j with a relative
# rounding error of about u (1 + |mu_j - c|^2 / var_j).
# Rows per sub-block, a multiple of _RB.  The moment tile streams the
# sub-block's features and scores once per tile of components and features:
# 64 rows keep them near the core where 256 did not (one thread, time per row
# 256 -> 64: Bernoulli (1e5, 64, 32) 470 -> 384 ns, diagonal (5e4, 64, 8)
# 345 -> 288 ns; no change at (1e5, 16, 16) or (2e5, 2, 8)).
_SUB = 64


_RB = 8  # rows per block of the soft path: two float64 vectors, rows in lanes
_PRODUCT_MAX = 2.0 ** 900  # flush point of _softmax_lanes' product of totals
_FLOAT_MAX = np.finfo(np.float64).max
# feature maps of the soft path (_soft_tiled_chunk); _soft's codes
_LINEAR, _QUADRATIC, _OBSERVED, _SPHERICAL, _PAIRS, _PAIRS_OBSERVED = (
    0, _soft.QUADRATIC, _soft.OBSERVED, _soft.SPHERICAL, _soft.PAIRS, _soft.PAIRS_OBSERVED)


@leaf
def _score_tile_lanes(FT, fo, m, G, A, kp, ST, so):
    """Scores of a block of R = 2 L rows (L lanes a vector: ``_RB`` = 8 in
    float64, 16 in float32), rows in vector lanes.

    ST[so + j * R + r] = A[j] + sum_{a < m} FT[fo + a * R + r] G[a * kp + j]
    for every (padded) component j < kp, kp a multiple of 4, the products added
    in the order of a; ``FT`` holds the block's features transposed
    (feature-major, row r in lane r), padding components have A = -inf and
    G = 0.  A block's rows are one block vector (``bload``, 64 bytes): one
    AVX-512 register, or two AVX registers, lane for lane the same sums.
    """
    R = 2 * lanes(FT)
    for j0 in range(0, kp, 4):
        s0 = bsplat(FT, A[j0])
        s1 = bsplat(FT, A[j0 + 1])
        s2 = bsplat(FT, A[j0 + 2])
        s3 = bsplat(FT, A[j0 + 3])
        for a in range(m):
            x = bload(FT, fo + a * R)
            g = a * kp + j0
            s0 = vfma(x, bsplat(FT, sload(G, g)), s0)
            s1 = vfma(x, bsplat(FT, sload(G, g + 1)), s1)
            s2 = vfma(x, bsplat(FT, sload(G, g + 2)), s2)
            s3 = vfma(x, bsplat(FT, sload(G, g + 3)), s3)
        o = so + j0 * R
        vstore(ST, o, s0)
        vstore(ST, o + R, s1)
        vstore(ST, o + 2 * R, s2)
        vstore(ST, o + 3 * R, s3)


@inline_leaf
def _quad_sums(FT, fo, fstep, G, g0, kp, j0, n, c0, c1, c2, c3):
    """The 16 sums of a score tile of four blocks by four components: for
    component j0 + j and block q (block vector c_j at the start),
    c_j + sum_{i < n} FT[fo + q fstep + i R] G[(g0 + i) kp + j0 + j], the
    products added in the order of i; returned as (j = 0: q = 0..3, j = 1:
    ...), 16 block vectors."""
    R = 2 * lanes(FT)
    s00 = c0
    s01 = c0
    s02 = c0
    s03 = c0
    s10 = c1
    s11 = c1
    s12 = c1
    s13 = c1
    s20 = c2
    s21 = c2
    s22 = c2
    s23 = c2
    s30 = c3
    s31 = c3
    s32 = c3
    s33 = c3
    for i in range(n):
        f = fo + i * R
        x0 = bload(FT, f)
        x1 = bload(FT, f + fstep)
        x2 = bload(FT, f + 2 * fstep)
        x3 = bload(FT, f + 3 * fstep)
        g = (g0 + i) * kp + j0
        c = bsplat(FT, sload(G, g))
        s00 = vfma(x0, c, s00)
        s01 = vfma(x1, c, s01)
        s02 = vfma(x2, c, s02)
        s03 = vfma(x3, c, s03)
        c = bsplat(FT, sload(G, g + 1))
        s10 = vfma(x0, c, s10)
        s11 = vfma(x1, c, s11)
        s12 = vfma(x2, c, s12)
        s13 = vfma(x3, c, s13)
        c = bsplat(FT, sload(G, g + 2))
        s20 = vfma(x0, c, s20)
        s21 = vfma(x1, c, s21)
        s22 = vfma(x2, c, s22)
        s23 = vfma(x3, c, s23)
        c = bsplat(FT, sload(G, g + 3))
        s30 = vfma(x0, c, s30)
        s31 = vfma(x1, c, s31)
        s32 = vfma(x2, c, s32)
        s33 = vfma(x3, c, s33)
    return (s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33)


@leaf
def _score_tile_quad(FT, fo, m, G, A, kp, ST, so, fstep, sstep):
    """``_score_tile_lanes`` for four blocks at once, block q at fo + q fstep
    (features) and so + q sstep (scores): four block vectors by four
    components, each broadcast of G feeding four multiply-adds, for CPUs
    with 32 vector registers (``_WIDE_TILES``); every score summed in the
    order of a, as there (the same bits)."""
    R = 2 * lanes(FT)
    for j0 in range(0, kp, 4):
        s = _quad_sums(FT, fo, fstep, G, 0, kp, j0, m, bsplat(FT, A[j0]),
                       bsplat(FT, A[j0 + 1]), bsplat(FT, A[j0 + 2]), bsplat(FT, A[j0 + 3]))
        o = so + j0 * R
        vstore(ST, o, s[0])
        vstore(ST, o + sstep, s[1])
        vstore(ST, o + 2 * sstep, s[2])
        vstore(ST, o + 3 * sstep, s[3])
        o += R
        vstore(ST, o, s[4])
        vstore(ST, o + sstep, s[5])
        vstore(ST, o + 2 * sstep, s[6])
        vstore(ST, o + 3 * sstep, s[7])
        o += R
        vstore(ST, o, s[8])
        vstore(ST, o + sstep, s[9])
        vstore(ST, o + 2 * sstep, s[10])
        vstore(ST, o + 3 * sstep, s[11])
        o += R
        vstore(ST, o, s[12])
        vstore(ST, o + sstep, s[13])
        vstore(ST, o + 2 * sstep, s[14])
        vstore(ST, o + 3 * sstep, s[15])


@inline_leaf
def _score_blocks(FT, blocks, m, G, A, kp, mp, ST):
    """The scores of ``blocks`` consecutive blocks of ``_RB`` rows (block b's
    features at FT[b * mp * _RB], its scores to ST[b * kp * _RB]), over their
    first m features; four blocks at a time when the registers hold that tile."""
    fstep = mp * _RB
    sstep = kp * _RB
    b = 0
    if _WIDE_TILES:
        while b + 3 < blocks:
            _score_tile_quad(FT, b * fstep, m, G, A, kp, ST, b * sstep, fstep, sstep)
            b += 4
    while b < blocks:
        _score_tile_lanes(FT, b * fstep, m, G, A, kp, ST, b * sstep)
        b += 1


@leaf
def _stage_and_score(X, s0, rows, c, features, m, mp, m_score, G, A, kp, FT, ST):
    """Stage rows s0 .. s0 + rows - 1 (``_stage_features``; the rows past them up
    to a whole block get zero features) and score them over their first
    ``m_score`` features (``_score_blocks``); return the number of blocks."""
    blocks = -(-rows // _RB)
    _stage_features(X, s0, rows, c, features, mp, FT)
    for i in range(rows, blocks * _RB):
        fo = (i // _RB) * mp * _RB + i % _RB
        for a in range(m):
            FT[fo + a * _RB] = 0.0
    _score_blocks(FT, blocks, m_score, G, A, kp, mp, ST)
    return blocks


@leaf
def _softmax_lanes(ST, so, k, kp, i0, n_rows, sample_weight, labels, log_prob, want_lp,
                   lane, NKV, obj, exps):
    """Softmax of a block of ``_RB`` rows whose scores are in ST (rows in lanes).

    Without ``exps`` (statistics off) only the labels and log_prob are
    written: the scores, NKV, obj and ``lane`` are left as they are.

    Rows i0 .. i0 + n_rows - 1 get their label (first index of the maximum;
    not when ``labels`` is empty) and their log-likelihood (added, times w,
    to obj[0]); the scores become w_i r_ij, 0 for padding rows and
    components; NKV[j * 4 + l] sums them over the rows r = l mod 4.  The rows
    go through in row vectors (``rload``): all 8 of the block at once with
    AVX-512, four at a time elsewhere; the exps are lane for lane the same.
    ``lane`` is scratch of 40 floats (lane[0:8] the maxima, lane[8:16] the
    totals, lane[24:32] the block's weights, 0 past its rows, lane[32:40] the
    labels); lane[16] (1 before the first call) carries the product of the
    totals t_i of rows of weight 1, whose log the caller adds to obj[0] at
    the end (``_flush_log_total``): a libm log
    per row had been 7 % of the diagonal E-step (one thread, (1e5, 16, 16)).
    The totals are in [1, kp] (the best component adds exp(0)), so the
    product is flushed before it can overflow.
    """
    want_labels = labels.shape[0] > 0
    # the weights are stored long before the vector loads that read them
    if exps:
        for r in range(_RB):
            lane[24 + r] = sample_weight[i0 + r] if r < n_rows else 0.0
    RL = rlanes(ST)
    for h in range(0, _RB, RL):
        base = so + h
        # each row's maximum and the first component reaching it, a row
        # vector's rows at once, in one pass and without branches (their outcome follows
        # the data and is mispredicted): a later component takes the label
        # only when strictly above the running maximum (two passes, the
        # second for the labels, took 2 % longer: one thread, diag (1e5, 16, 16))
        top = rload(ST, base)
        rows = min(RL, n_rows - h)
        if want_labels:
            first = rsplat(ST, 0.0)
            for j in range(1, kp):
                s = rload(ST, base + j * _RB)
                first = vselect_ge(top, s, first, rsplat(ST, j))
                top = vmax(top, s)
            vstore(lane, 32, first)
            for r in range(rows):
                i = i0 + h + r
                best = np.int64(lane[32 + r])
                if labels[i] != best:
                    obj[2] += 1
                    labels[i] = best
        else:  # a soft iteration: the maxima only (one thread, 3 % of diag (1e5, 16, 16))
            for j in range(1, kp):
                top = vmax(top, rload(ST, base + j * _RB))
        if want_lp:
            for r in range(rows):
                for j in range(k):
                    log_prob[i0 + h + r, j] = ST[base + j * _RB + r]
        if not exps:
            continue
        vstore(lane, 0, top)
        # a row whose scores are all -inf is shifted by 0: its exps are 0.
        # Vector selects, here and for the scale below: lanes stored one at a
        # time and loaded as a vector wait for the stores to complete (one
        # thread, ns a row, with the shorter exp: diagonal (1e5, 16, 16)
        # 84.9 -> 79.3, (2e5, 2, 8) 29.6 -> 24.8; Bernoulli (2e5, 64, 32)
        # 330 -> 305; the same bits)
        shift = vselect_ge(top, rsplat(ST, -_FLOAT_MAX), vsub(rsplat(ST, -0.0), top),
                           rsplat(ST, 0.0))
        total = rsplat(ST, 0.0)
        for j in range(kp):
            o = base + j * _RB
            e = vexp_nonpositive(vadd(rload(ST, o), shift))
            vstore(ST, o, e)
            total = vadd(total, e)
        vstore(lane, 8, total)
        # w / t, and 0 for rows of weight 0 and rows whose scores are all -inf
        # (t = 0; otherwise t >= 1, the best component's exp(0))
        scale_v = vselect_ge(total, rsplat(ST, 0.5), vdiv(rload(lane, 24 + h), total),
                             rsplat(ST, 0.0))
        for r in range(rows):
            w = lane[24 + h + r]
            t = lane[8 + r]
            if w != 0.0:
                obj[0] += w * lane[r]
                if t > 0.0:
                    if w == 1.0:
                        p = lane[16] * t
                        if p > _PRODUCT_MAX:
                            obj[0] += np.log(p)
                            p = 1.0
                        lane[16] = p
                    else:
                        obj[0] += w * np.log(t)
        for j in range(kp):
            o = base + j * _RB
            resp = vmul(rload(ST, o), scale_v)
            vstore(ST, o, resp)
            vstore(NKV, j * 4, vadd(vload(NKV, j * 4), bfold(resp)))


@inline_leaf
def _flush_log_total(lane, obj):
    """obj[0] += log of the product of totals that ``_softmax_lanes`` kept."""
    obj[0] += np.log(lane[16])
    lane[16] = 1.0


@inline_leaf
def _lane_tile_4x2(P, po, pstep, Q, qo, qstep, n_blocks, MV, o, ostep):
    """MV[(o + j ostep + f) * 4 + l] += sum over the blocks b < n_blocks and
    their rows r in lane l (r = l mod 4) of P[po + b pstep + j R + r]
    Q[qo + b qstep + f R + r], for j < 4 and f < 2 (R = ``_RB``): a tile of 8
    accumulators of 4-lane vectors, the moment tiles' on CPUs with 16 vector
    registers."""
    s00 = vsplat(Q, 0.0)
    s01 = s00
    s10 = s00
    s11 = s00
    s20 = s00
    s21 = s00
    s30 = s00
    s31 = s00
    for b in range(n_blocks):
        for h in range(0, _RB, 4):
            fo = b * qstep + qo + h
            f0 = vload(Q, fo)
            f1 = vload(Q, fo + _RB)
            ro = b * pstep + po + h
            r = vload(P, ro)
            s00 = vfma(r, f0, s00)
            s01 = vfma(r, f1, s01)
            r = vload(P, ro + _RB)
            s10 = vfma(r, f0, s10)
            s11 = vfma(r, f1, s11)
            r = vload(P, ro + 2 * _RB)
            s20 = vfma(r, f0, s20)
            s21 = vfma(r, f1, s21)
            r = vload(P, ro + 3 * _RB)
            s30 = vfma(r, f0, s30)
            s31 = vfma(r, f1, s31)
    _add_lanes4(MV, o, s00)
    _add_lanes4(MV, o + 1, s01)
    o += ostep
    _add_lanes4(MV, o, s10)
    _add_lanes4(MV, o + 1, s11)
    o += ostep
    _add_lanes4(MV, o, s20)
    _add_lanes4(MV, o + 1, s21)
    o += ostep
    _add_lanes4(MV, o, s30)
    _add_lanes4(MV, o + 1, s31)


@inline_leaf
def _lane_tile_4x4(P, po, pstep, Q, qo, qstep, n_blocks, MV, o, ostep):
    """``_lane_tile_4x2`` for f < 4 with block vectors (``bload``, a block's 8
    rows): 16 accumulators, each load feeding four multiply-adds, for CPUs
    with 32 vector registers; a block's sums of rows r and r + 4 go to lane r
    (``_add_block_lanes``)."""
    s00 = bsplat(Q, 0.0)
    s01 = s00
    s02 = s00
    s03 = s00
    s10 = s00
    s11 = s00
    s12 = s00
    s13 = s00
    s20 = s00
    s21 = s00
    s22 = s00
    s23 = s00
    s30 = s00
    s31 = s00
    s32 = s00
    s33 = s00
    for b in range(n_blocks):
        fo = b * qstep + qo
        f0 = bload(Q, fo)
        f1 = bload(Q, fo + _RB)
        f2 = bload(Q, fo + 2 * _RB)
        f3 = bload(Q, fo + 3 * _RB)
        ro = b * pstep + po
        r = bload(P, ro)
        s00 = vfma(r, f0, s00)
        s01 = vfma(r, f1, s01)
        s02 = vfma(r, f2, s02)
        s03 = vfma(r, f3, s03)
        r = bload(P, ro + _RB)
        s10 = vfma(r, f0, s10)
        s11 = vfma(r, f1, s11)
        s12 = vfma(r, f2, s12)
        s13 = vfma(r, f3, s13)
        r = bload(P, ro + 2 * _RB)
        s20 = vfma(r, f0, s20)
        s21 = vfma(r, f1, s21)
        s22 = vfma(r, f2, s22)
        s23 = vfma(r, f3, s23)
        r = bload(P, ro + 3 * _RB)
        s30 = vfma(r, f0, s30)
        s31 = vfma(r, f1, s31)
        s32 = vfma(r, f2, s32)
        s33 = vfma(r, f3, s33)
    _add_block_lanes(MV, o, s00)
    _add_block_lanes(MV, o + 1, s01)
    _add_block_lanes(MV, o + 2, s02)
    _add_block_lanes(MV, o + 3, s03)
    o += ostep
    _add_block_lanes(MV, o, s10)
    _add_block_lanes(MV, o + 1, s11)
    _add_block_lanes(MV, o + 2, s12)
    _add_block_lanes(MV, o + 3, s13)
    o += ostep
    _add_block_lanes(MV, o, s20)
    _add_block_lanes(MV, o + 1, s21)
    _add_block_lanes(MV, o + 2, s22)
    _add_block_lanes(MV, o + 3, s23)
    o += ostep
    _add_block_lanes(MV, o, s30)
    _add_block_lanes(MV, o + 1, s31)
    _add_block_lanes(MV, o + 2, s32)
    _add_block_lanes(MV, o + 3, s33)


@leaf
def _moment_tile_narrow(FT, ST, n_blocks, m, kp, mp, MV, lower):
    """MV[(j * mp + a) * 4 + l] += sum over the blocks and their rows r in
    lane l (r = l mod 4) of ST[., j, r] FT[., a, r], for j < kp, a < m (rounded
    up to even; padding features are 0); with ``lower``, only for a < j0 + 4,
    j0 the multiple of 4 at or below j (a symmetric matrix's lower triangle
    and a little more).  The caller sums each entry's four lanes once, at the
    end of its chunk (``_fold_lanes``)."""
    fstep = mp * _RB
    sstep = kp * _RB
    for j0 in range(0, kp, 4):
        for a0 in range(0, min(m, j0 + 4) if lower else m, 2):
            _lane_tile_4x2(ST, j0 * _RB, sstep, FT, a0 * _RB, fstep, n_blocks, MV,
                           j0 * mp + a0, mp)


@leaf
def _moment_tile_wide(FT, ST, n_blocks, m, kp, mp, MV, lower):
    """``_moment_tile_narrow`` with block vectors (``bload``: a block's 8 rows,
    64 bytes) four features by four components: 16 accumulators, each load
    feeding four multiply-adds, for CPUs with 32 vector registers.  A sub-block's
    sums of rows r and r + 4 of its blocks are added to lane r of the entry's
    4 lane sums (``_add_block_lanes``).  a < m rounded up to a multiple of 4
    (mp is a multiple of 8)."""
    fstep = mp * _RB
    sstep = kp * _RB
    for j0 in range(0, kp, 4):
        for a0 in range(0, min(m, j0 + 4) if lower else m, 4):
            _lane_tile_4x4(ST, j0 * _RB, sstep, FT, a0 * _RB, fstep, n_blocks, MV,
                           j0 * mp + a0, mp)


# The wider register tiles (16 accumulators) need 32 vector registers; with 16
# (AVX2) they would spill.  One thread, ns a row, narrow -> wide moment and
# score tiles of 32-byte vectors: Bernoulli (2e5, 64, 32) 276 -> 255, diagonal
# (5e4, 64, 8) 160 -> 151, full (5e4, 64, 8) 2008 -> 1865, full (1e5, 16, 16)
# 275 -> 258 (a Zen 4 machine, which runs 64-byte vectors as two halves).  The
# wide tiles now hold block vectors of 64 bytes, which CPUs with full-width
# AVX-512 units multiply-add at twice the rate (measured in PERFORMANCE.md).
_WIDE_TILES = VECTOR_REGISTERS >= 32


@inline_leaf
def _moment_tile_lanes(FT, ST, n_blocks, m, kp, mp, MV, lower):
    """MV[(j * mp + a) * 4 + lane] += sum over the blocks and their rows in that
    lane of ST[., j, r] FT[., a, r] (see ``_moment_tile_narrow`` and
    ``_moment_tile_wide``), by the widest tile the registers hold."""
    if _WIDE_TILES:
        _moment_tile_wide(FT, ST, n_blocks, m, kp, mp, MV, lower)
    else:
        _moment_tile_narrow(FT, ST, n_blocks, m, kp, mp, MV, lower)


@inline_leaf
def _add_lanes4(MV, o, s):
    """MV[o * 4 : o * 4 + 4] += s: a tile's partial sums of one entry, lane by lane."""
    vstore(MV, o * 4, vadd(vload(MV, o * 4), s))


@inline_leaf
def _add_block_lanes(MV, o, s):
    """MV[o * 4 : o * 4 + 4] += the halves of s added (``bfold``): a block
    vector of one entry's partial sums, rows r and r + 4 of the blocks in
    lane r, the layout of the narrow tile's sums.  Eight lane sums an entry
    would double MV, which for the full model's 2144 features (1.1 MB at
    k = 8) no longer fits beside the features in the level-2 cache."""
    vstore(MV, o * 4, vadd(vload(MV, o * 4), bfold(s)))


@leaf
def _fold_lanes(MV, M):
    """M[q] += the sum of MV[q * 4 : q * 4 + 4] (``vhsum``) for every entry q of M.

    The moment tiles keep each entry's four lane sums over a whole chunk and
    sum the lanes once here: summing them after every sub-block of rows, as
    before, took 16 horizontal sums and scalar additions per tile of 16
    vector accumulators (one thread, ns a row: full (5e4, 64, 8) 1883 ->
    1787, (1e5, 16, 16) 256 -> 236; Bernoulli (2e5, 64, 32) 249 -> 232;
    diagonal (5e4, 64, 8) 191 -> 182, (1e5, 16, 16) 82 -> 79)."""
    for q in range(M.shape[0]):
        M[q] += vhsum(vload(MV, q * 4))


@inline_leaf
def _feature_count(features, d):
    if features == _LINEAR:
        return d
    if features == _SPHERICAL:
        return d + 1
    if features == _PAIRS:
        return d + d * (d + 1) // 2
    if features == _PAIRS_OBSERVED:
        return 2 * d + d * (d + 1) // 2
    return 2 * d if features == _QUADRATIC else 3 * d


@inline_leaf
def _observed_at(features, d):
    """Index of the first o feature (``_OBSERVED``, ``_PAIRS_OBSERVED``)."""
    return 2 * d if features == _OBSERVED else d + d * (d + 1) // 2


@inline_leaf
def _stage_lanes(FT, fo, a, d, v, features):
    """Feature a of the 4 rows in v's lanes (see ``_soft_tiled_chunk``) into FT."""
    if features == _OBSERVED or features == _PAIRS_OBSERVED:
        zero = vzero(FT)
        vstore(FT, fo + (_observed_at(features, d) + a) * _RB,
               vselect_nan(v, zero, vsplat(FT, 1.0)))
        v = vselect_nan(v, zero, v)
    vstore(FT, fo + a * _RB, v)
    if features == _QUADRATIC or features == _OBSERVED:
        vstore(FT, fo + (d + a) * _RB, vmul(v, v))


@inline_leaf
def _stage_block(FT, fo, a, d, v, features):
    """Feature a of a block's 8 rows, in the lanes of block vector v, into FT
    (``_LINEAR``, ``_QUADRATIC`` and ``_SPHERICAL`` only, as ``_stage_lanes``;
    the caller sums the spherical norm)."""
    vstore(FT, fo + a * _RB, v)
    if features == _QUADRATIC:
        vstore(FT, fo + (d + a) * _RB, vmul(v, v))


@inline_leaf
def _stage_one(FT, fo, a, d, v, features):
    """Feature a of one row, value v, into FT (as ``_stage_lanes``)."""
    if features == _OBSERVED or features == _PAIRS_OBSERVED:
        o = 1.0
        if np.isnan(v):
            v = 0.0
            o = 0.0
        sstore(FT, fo + (_observed_at(features, d) + a) * _RB, o)
    sstore(FT, fo + a * _RB, v)
    if features == _QUADRATIC or features == _OBSERVED:
        sstore(FT, fo + (d + a) * _RB, v * v)


@inline_leaf
def _stage_pairs(FT, fo, d, four):
    """``_PAIRS``: the products x_a x_b (b <= a, a-major) of the values
    already staged at FT[fo + a * _RB], for four rows in lanes or one row."""
    q = d
    for a in range(d):
        if four:
            v = vload(FT, fo + a * _RB)
            for b in range(a + 1):
                vstore(FT, fo + (q + b) * _RB, vmul(v, vload(FT, fo + b * _RB)))
        else:
            v = sload(FT, fo + a * _RB)
            for b in range(a + 1):
                sstore(FT, fo + (q + b) * _RB, v * sload(FT, fo + b * _RB))
        q += a + 1


@leaf
def _stage_features(X, s0, rows, c, features, mp, FT):
    """The features of rows s0 .. s0 + rows - 1 of X into FT, feature-major
    blocks of ``_RB`` rows in lanes (the layout of ``_soft_tiled_chunk``).

    Four rows at a time with vectors: in C order, 4 x 4 tiles of X loaded
    along rows and transposed; in Fortran order, 4 rows of a column in one
    load (element by element: one thread, ns a row, diagonal (1e5, 16, 16)
    101 -> 95, (5e4, 64, 8) 211 -> 190).  Each value is x - c and its
    square, in float64, as element by element, so the results are the same
    bits.  ``_SPHERICAL`` adds ||x - c||^2 as feature d, the same way in
    every path: the squares of the first d4 = d - d % 4 features in four
    partial sums (feature a into sum a % 4, in the order of the features),
    then (s0 + s1) + (s2 + s3), then the squares of the rest in order.  One
    sum in the order of the features was a chain of dependent multiply-adds
    of four cycles each (one thread, ns a row, spherical (5e4, 64, 8): the
    staging alone, rows in the cache, 21.8 -> 17.7; the E-step 90.6 -> 85.6).

    ``features`` is a constant wherever this is called (a ``Constant`` of
    ``run_chunks`` in ``_soft_tiled_chunk``), so numba compiles it for each
    feature map on its first use, without the other maps' tests in its loops
    (one thread, ns a row: spherical (5e4, 64, 8) 92.5 -> 89.7, diagonal
    (5e4, 64, 8) 139.4 -> 135.4, (1e5, 16, 16) 73.9 -> 72.7), and a fit
    compiles only its own map.  It was inlined, once per map, into a helper
    that tested ``features`` at run time: numba copied its IR five times,
    and that helper's compile for one data type and layout took 34-39 s
    (its eight compiles were 426 s of the test suite's 657 s of compiling);
    a first diagonal fit with an empty cache took 58.6 s.
    """
    sph = features == _SPHERICAL
    pairs = features == _PAIRS or features == _PAIRS_OBSERVED
    d = X.shape[1]
    by_rows = X.strides[1] == X.itemsize
    by_cols = X.strides[0] == X.itemsize and not by_rows
    r4 = rows - rows % 4 if by_rows or by_cols else 0
    d4 = d - d % 4
    # whole blocks of rows 8 by 8 features, where a row vector holds 8 float64
    # (AVX-512): 24 shuffles and 8 stores of 64 bytes, where four 4 x 4 tiles
    # take 32 and 16 of 32 bytes.  The same bits.  The staging alone, one
    # thread, ns a row, diagonal d = 64: rows from memory 69.0 -> 54.2 (float32
    # 47.9 -> 37.7), rows in the level-2 cache 35.7 -> 32.3; a diagonal fit at
    # (5e4, 64, 8), two threads, 4.77 -> 4.53 ms an iteration (11 of 12 pairs)
    # (the spherical map when d8 = d4: its norm's four partial sums then take
    # the features in the order of the 4 x 4 tiles, the same bits; d = 64,
    # one thread, ns a row: from memory 31.2 -> 29.4, in the level-2 cache
    # 30.9 -> 19.5; a spherical fit at (5e4, 64, 8), two threads, 0.946)
    r8 = 0
    d8 = d - d % 8
    if ROW_BYTES == 64 and by_rows and (features == _LINEAR or features == _QUADRATIC
                                        or (sph and d8 == d4)):
        r8 = rows - rows % 8
    for i in range(0, r8, 8):
        fo = (i // _RB) * mp * _RB
        x = s0 + i
        prefetch_rows_near(X, x + 8, min(8, X.shape[0] - x - 8))
        m0 = bsplat(FT, 0.0)
        m1 = m0
        m2 = m0
        m3 = m0
        for a in range(0, d8, 8):
            cv = bload(c, a)
            t = vtranspose8(vsub(bload8_f64(X, x, a), cv), vsub(bload8_f64(X, x + 1, a), cv),
                            vsub(bload8_f64(X, x + 2, a), cv), vsub(bload8_f64(X, x + 3, a), cv),
                            vsub(bload8_f64(X, x + 4, a), cv), vsub(bload8_f64(X, x + 5, a), cv),
                            vsub(bload8_f64(X, x + 6, a), cv), vsub(bload8_f64(X, x + 7, a), cv))
            _stage_block(FT, fo, a, d, t[0], features)
            _stage_block(FT, fo, a + 1, d, t[1], features)
            _stage_block(FT, fo, a + 2, d, t[2], features)
            _stage_block(FT, fo, a + 3, d, t[3], features)
            _stage_block(FT, fo, a + 4, d, t[4], features)
            _stage_block(FT, fo, a + 5, d, t[5], features)
            _stage_block(FT, fo, a + 6, d, t[6], features)
            _stage_block(FT, fo, a + 7, d, t[7], features)
            if sph:
                m0 = vfma(t[0], t[0], m0)
                m1 = vfma(t[1], t[1], m1)
                m2 = vfma(t[2], t[2], m2)
                m3 = vfma(t[3], t[3], m3)
                m0 = vfma(t[4], t[4], m0)
                m1 = vfma(t[5], t[5], m1)
                m2 = vfma(t[6], t[6], m2)
                m3 = vfma(t[7], t[7], m3)
        for r in range(8):
            for a in range(d8, d):
                _stage_one(FT, fo + r, a, d, np.float64(X[x + r, a]) - c[a], features)
        if sph:
            norm = vadd(vadd(m0, m1), vadd(m2, m3))
            for a in range(d8, d):
                v = bload(FT, fo + a * _RB)
                norm = vfma(v, v, norm)
            vstore(FT, fo + d * _RB, norm)
    for i in range(r8, r4, 4):
        fo = (i // _RB) * mp * _RB + i % _RB
        x = s0 + i
        n0 = vzero(FT)
        n1 = n0
        n2 = n0
        n3 = n0
        if by_rows:
            # the rows 8 on into the level-1 cache (the sub-block's prefetch
            # brought them to level 2): one thread, ns a row, (5e4, 64, 8)
            # diagonal 133.6 -> 131.4, spherical 86.4 -> 84.5
            prefetch_rows_near(X, x + 8, min(4, X.shape[0] - x - 8))
            for a in range(0, d4, 4):
                cv = vload(c, a)
                r0 = vsub(vload4_f64(X, x, a), cv)
                r1 = vsub(vload4_f64(X, x + 1, a), cv)
                r2 = vsub(vload4_f64(X, x + 2, a), cv)
                r3 = vsub(vload4_f64(X, x + 3, a), cv)
                t = vtranspose4(r0, r1, r2, r3)
                _stage_lanes(FT, fo, a, d, t[0], features)
                _stage_lanes(FT, fo, a + 1, d, t[1], features)
                _stage_lanes(FT, fo, a + 2, d, t[2], features)
                _stage_lanes(FT, fo, a + 3, d, t[3], features)
                if sph:
                    n0 = vfma(t[0], t[0], n0)
                    n1 = vfma(t[1], t[1], n1)
                    n2 = vfma(t[2], t[2], n2)
                    n3 = vfma(t[3], t[3], n3)
            for r in range(4):
                for a in range(d4, d):
                    _stage_one(FT, fo + r, a, d, np.float64(X[x + r, a]) - c[a], features)
        else:
            for a in range(0, d4, 4):
                v0 = vsub(vload4_f64(X, x, a), vsplat(FT, c[a]))
                v1 = vsub(vload4_f64(X, x, a + 1), vsplat(FT, c[a + 1]))
                v2 = vsub(vload4_f64(X, x, a + 2), vsplat(FT, c[a + 2]))
                v3 = vsub(vload4_f64(X, x, a + 3), vsplat(FT, c[a + 3]))
                _stage_lanes(FT, fo, a, d, v0, features)
                _stage_lanes(FT, fo, a + 1, d, v1, features)
                _stage_lanes(FT, fo, a + 2, d, v2, features)
                _stage_lanes(FT, fo, a + 3, d, v3, features)
                if sph:
                    n0 = vfma(v0, v0, n0)
                    n1 = vfma(v1, v1, n1)
                    n2 = vfma(v2, v2, n2)
                    n3 = vfma(v3, v3, n3)
            for a in range(d4, d):
                v = vsub(vload4_f64(X, x, a), vsplat(FT, c[a]))
                _stage_lanes(FT, fo, a, d, v, features)
        if sph:
            # the features past d4 (just stored), in order
            norm = vadd(vadd(n0, n1), vadd(n2, n3))
            for a in range(d4, d):
                v = vload(FT, fo + a * _RB)
                norm = vfma(v, v, norm)
            vstore(FT, fo + d * _RB, norm)
        if pairs:
            _stage_pairs(FT, fo, d, True)
    for i in range(r4, rows):
        fo = (i // _RB) * mp * _RB + i % _RB
        q0 = 0.0
        q1 = 0.0
        q2 = 0.0
        q3 = 0.0
        for a in range(0, d4, 4):  # as the vector paths' multiply-adds, in their order
            v = np.float64(X[s0 + i, a]) - c[a]
            _stage_one(FT, fo, a, d, v, features)
            q0 = sfma(v, v, q0)
            v = np.float64(X[s0 + i, a + 1]) - c[a + 1]
            _stage_one(FT, fo, a + 1, d, v, features)
            q1 = sfma(v, v, q1)
            v = np.float64(X[s0 + i, a + 2]) - c[a + 2]
            _stage_one(FT, fo, a + 2, d, v, features)
            q2 = sfma(v, v, q2)
            v = np.float64(X[s0 + i, a + 3]) - c[a + 3]
            _stage_one(FT, fo, a + 3, d, v, features)
            q3 = sfma(v, v, q3)
        n2 = sadd(sadd(q0, q1), sadd(q2, q3))
        for a in range(d4, d):
            v = np.float64(X[s0 + i, a]) - c[a]
            _stage_one(FT, fo, a, d, v, features)
            n2 = sfma(v, v, n2)
        if sph:
            sstore(FT, fo + d * _RB, n2)
        if pairs:
            _stage_pairs(FT, fo, d, False)


# ------------------------------------------------- the full model's fused pairs
# The soft full E-step up to ``_soft.PAIRS_MAX_D`` features scores the pairs map
# (x' and its products x'_a x'_b, b <= a: m = d + d (d + 1) / 2 features)
# without staging the products: the tiles below form them from the d staged
# values of x' as they go.  Staged, the products of a block of 8 rows took
# 133 KB at d = 64 (1.1 MB a sub-block, read three times from the level-2
# cache); the values alone take 4.5 KB and stay in the level-1 cache.  Staged,
# the products serve every component; formed in the tiles, they cost in each
# component's loops, which are short when d is small (the triangle's rows,
# each rounded up to 4, and the updates after each row).  So the fused path
# takes d >= max(_PAIRS_FUSED_D, 2 kp).  Two threads, ms an iteration, staged
# -> fused: (5e4, 64, 8) 70.0 -> 45.7; (5e4, 20, 8) 9.6 -> 7.7 and (5e4, 18,
# 8) 5.9 -> 5.1, but (1e5, 16, 16) 14.4 -> 17.3, (5e4, 20, 16) 12.9 -> 16.2,
# (5e4, 24, 16) 15.8 -> 16.5, (5e4, 32, 16) 31.6 -> 31.4 and (3e4, 48, 16)
# 48.5 -> 41.4 (medians of 6 to 8 pairs of fits).
_PAIRS_FUSED_D = 20  # fewest features the fused path takes
# The moment tile goes over this many blocks at once: its lane sums, in the
# level-2 cache, are loaded and stored once a group.  The moment tile alone,
# d = 64, one thread, ns a row: 8 blocks 748, 16 646, 32 616 (medians of 15;
# best 641, 555, 528).  A full fit at (5e4, 64, 8), with the tile's loop
# order below, one and two threads: 0.92 of the time of sub-blocks of 8.
_PAIRS_GROUP_BLOCKS = 32
# The same for the staged feature maps (``_soft_tiled_chunk``) whose sub-block
# of features is larger than _MOMENT_GROUP_BYTES: those were read from the
# level-2 cache anyway.  Two threads, group / sub-block, medians of 8-12
# pairs of fits: diagonal (5e4, 64, 8) 0.979 (one thread 0.964), spherical
# (5e4, 64, 8) 0.975, full (1e5, 16, 16) 0.915; but diagonal (1e5, 16, 16),
# whose 16 KB sub-block stays in the level-1 cache, 1.040.
_MOMENT_GROUP = 32
_MOMENT_GROUP_BYTES = 32768
# _soft_tiled's code for the pairs map with the products formed in the tiles,
# which runs a chunk kernel of its own (``_soft_pairs_chunk``)
_PAIRS_FUSED = 6


@inline_leaf
def _linear_stride(d):
    """Features a block of the fused pairs path holds: d rounded up to 8, and
    8 more where blocks would alias in the level-1 cache (``_ALIASED_BYTES``)."""
    fp = -(-d // 8) * 8
    if fp * _RB * 8 % _ALIASED_BYTES == 0:
        fp += 8
    return fp


@inline_leaf
def _pairs_lane_stride(d):
    """Entries a component has in the fused pairs path's lane sums: d, then
    row a of the products' lower triangle rounded up to 4 entries, for each a."""
    q = d
    for a in range(d):
        q += (a + 4) // 4 * 4
    return q


@leaf
def _pairs_score_tile(FT, fo, d, G, A, kp, ST, so, fstep, sstep, n_q):
    """Scores of the pairs map of n_q (1 to 4) blocks, block q's values x' at
    FT[fo + q fstep + a * R] (a < d, rows in lanes) and its scores to
    ST[so + q sstep + j R] (R = ``_RB``):

        score_j = A_j + sum_a x'_a (G[a, j] + sum_{b <= a} G[p(a, b), j] x'_b)

    with p(a, b) = d + a (a + 1) / 2 + b, G flat (mp, kp) as the tiles'.  The
    inner sums (a triangular product per component) run in registers, four
    blocks by four components with 32 vector registers; the outer sum is
    added to ST after each a.  Blocks past the first n_q are not read."""
    R = _RB
    for j0 in range(0, kp, 4):
        for q in range(n_q):
            o = so + q * sstep + j0 * R
            vstore(ST, o, bsplat(FT, A[j0]))
            vstore(ST, o + R, bsplat(FT, A[j0 + 1]))
            vstore(ST, o + 2 * R, bsplat(FT, A[j0 + 2]))
            vstore(ST, o + 3 * R, bsplat(FT, A[j0 + 3]))
        p = d
        for a in range(d):
            if _WIDE_TILES and n_q == 4:
                g = a * kp + j0
                t = _quad_sums(FT, fo, fstep, G, p, kp, j0, a + 1, bsplat(FT, sload(G, g)),
                               bsplat(FT, sload(G, g + 1)), bsplat(FT, sload(G, g + 2)),
                               bsplat(FT, sload(G, g + 3)))
                f = fo + a * R
                x0 = bload(FT, f)
                x1 = bload(FT, f + fstep)
                x2 = bload(FT, f + 2 * fstep)
                x3 = bload(FT, f + 3 * fstep)
                o = so + j0 * R
                _add_product(ST, o, x0, t[0])
                _add_product(ST, o + sstep, x1, t[1])
                _add_product(ST, o + 2 * sstep, x2, t[2])
                _add_product(ST, o + 3 * sstep, x3, t[3])
                o += R
                _add_product(ST, o, x0, t[4])
                _add_product(ST, o + sstep, x1, t[5])
                _add_product(ST, o + 2 * sstep, x2, t[6])
                _add_product(ST, o + 3 * sstep, x3, t[7])
                o += R
                _add_product(ST, o, x0, t[8])
                _add_product(ST, o + sstep, x1, t[9])
                _add_product(ST, o + 2 * sstep, x2, t[10])
                _add_product(ST, o + 3 * sstep, x3, t[11])
                o += R
                _add_product(ST, o, x0, t[12])
                _add_product(ST, o + sstep, x1, t[13])
                _add_product(ST, o + 2 * sstep, x2, t[14])
                _add_product(ST, o + 3 * sstep, x3, t[15])
            else:
                for q in range(n_q):
                    fq = fo + q * fstep
                    g = a * kp + j0
                    t0 = bsplat(FT, sload(G, g))
                    t1 = bsplat(FT, sload(G, g + 1))
                    t2 = bsplat(FT, sload(G, g + 2))
                    t3 = bsplat(FT, sload(G, g + 3))
                    for b in range(a + 1):
                        x = bload(FT, fq + b * R)
                        g = (p + b) * kp + j0
                        t0 = vfma(x, bsplat(FT, sload(G, g)), t0)
                        t1 = vfma(x, bsplat(FT, sload(G, g + 1)), t1)
                        t2 = vfma(x, bsplat(FT, sload(G, g + 2)), t2)
                        t3 = vfma(x, bsplat(FT, sload(G, g + 3)), t3)
                    x = bload(FT, fq + a * R)
                    o = so + q * sstep + j0 * R
                    _add_product(ST, o, x, t0)
                    _add_product(ST, o + R, x, t1)
                    _add_product(ST, o + 2 * R, x, t2)
                    _add_product(ST, o + 3 * R, x, t3)
            p += a + 1


@inline_leaf
def _add_product(ST, o, x, t):
    """ST[o : o + _RB] += x t (block vectors)."""
    vstore(ST, o, vfma(x, t, bload(ST, o)))


@leaf
def _stage_and_score_pairs(X, s0, rows, c, d, fp, G, A, kp, FT, ST):
    """``_stage_and_score`` for the fused pairs path: rows s0 .. s0 + rows - 1
    staged as x' alone (fp features a block), scored over the pairs map
    (``_pairs_score_tile``); return the number of blocks."""
    blocks = -(-rows // _RB)
    _stage_features(X, s0, rows, c, _LINEAR, fp, FT)
    for i in range(rows, blocks * _RB):
        fo = (i // _RB) * fp * _RB + i % _RB
        for a in range(d):
            FT[fo + a * _RB] = 0.0
    fstep = fp * _RB
    sstep = kp * _RB
    step = 4 if _WIDE_TILES else 1
    for b in range(0, blocks, step):
        _pairs_score_tile(FT, b * fstep, d, G, A, kp, ST, b * sstep, fstep, sstep,
                          min(step, blocks - b))
    return blocks


@leaf
def _pairs_moment_tile(FT, ST, n_blocks, d, kp, fp, mq, MV, UB):
    """The moments of the pairs map of ``n_blocks`` blocks (values x' as in
    ``_pairs_score_tile``, their responsibilities in ST) added to the lane
    sums MV, component j's at MV[j * mq * 4:] (``_pairs_lane_stride``):
    entry a < d sums r_j x'_a, entry d + o(a) + b sums r_j x'_a x'_b for b <= a
    (o(a) the rows before a, each rounded up to 4 entries; the b past a of
    the last group of 4 add into padding).

    For each a, u_j = r_j x'_a of every block and component goes to UB (n_blocks
    * kp block vectors, in the level-1 cache) as its sum goes to entry a; then
    tiles of four components by four b multiply-add u_j by x'_b over the
    blocks (``_lane_tile_4x4``; two ``_lane_tile_4x2`` with 16 vector
    registers).  The components are the inner loop, so that the values
    x'_b of the four b stay in the level-1 cache for all of them (the tile
    alone, d = 64: 0.91 of the time with 32 blocks, 0.94 with 8).  Lane sums
    as ``_add_block_lanes``."""
    R = _RB
    fstep = fp * R
    sstep = kp * R
    q = d
    for a in range(d):
        for j in range(kp):
            acc = bsplat(FT, 0.0)
            for b in range(n_blocks):
                u = vmul(bload(ST, b * sstep + j * R), bload(FT, b * fstep + a * R))
                vstore(UB, (b * kp + j) * R, u)
                acc = vadd(acc, u)
            _add_block_lanes(MV, j * mq + a, acc)
        for b0 in range(0, a + 1, 4):
            for j0 in range(0, kp, 4):
                o = j0 * mq + q + b0
                if _WIDE_TILES:
                    _lane_tile_4x4(UB, j0 * R, sstep, FT, b0 * R, fstep, n_blocks, MV, o,
                                   mq)
                else:
                    _lane_tile_4x2(UB, j0 * R, sstep, FT, b0 * R, fstep, n_blocks, MV, o,
                                   mq)
                    _lane_tile_4x2(UB, j0 * R, sstep, FT, (b0 + 2) * R, fstep, n_blocks,
                                   MV, o + 2, mq)
        q += (a + 4) // 4 * 4


@leaf
def _fold_pairs_lanes(MV, M, d, kp, mp, mq):
    """M[j * mp + f] += the sum of the four lane sums of the pairs map's
    feature f (``_pairs_moment_tile``'s layout), for every component j < kp."""
    for j in range(kp):
        for a in range(d):
            M[j * mp + a] += vhsum(vload(MV, (j * mq + a) * 4))
        p = d
        q = d
        for a in range(d):
            for b in range(a + 1):
                M[j * mp + p + b] += vhsum(vload(MV, (j * mq + q + b) * 4))
            p += a + 1
            q += (a + 4) // 4 * 4


@inline_leaf
def _softmax_blocks(X, ST, blocks, s0, stop, k, kp, sample_weight, labels, log_prob, want_lp,
                    lane, NKV, obj, moments):
    """``_softmax_lanes`` of each of the blocks of rows from s0 on (scores in
    ST), with the rows of the next sub-block prefetched as these are used."""
    prefetch = X.strides[1] == X.itemsize
    for b in range(blocks):
        i0 = s0 + b * _RB
        if prefetch:
            prefetch_rows(X, i0 + _SUB, min(_RB, stop - i0 - _SUB))
        _softmax_lanes(ST, b * kp * _RB, k, kp, i0, min(_RB, stop - i0), sample_weight,
                       labels, log_prob, want_lp, lane, NKV, obj, moments)


@inline_leaf
def _finish_soft_chunk(lane, obj, NKV, nk):
    """A chunk's last log of the totals into obj[0], and nk from NKV's lanes."""
    _flush_log_total(lane, obj)
    for j in range(nk.shape[0]):
        nk[j] = vhsum(vload(NKV, j * 4))


@serial
def _soft_tiled_chunk(ci, X, sample_weight, c, features, G, A, kp, mp, chunk_size, labels,
                      log_prob, nk_all, M_all, obj_all, S_all, moments):
    """Soft E-step of rows start .. stop - 1; M (kp * mp) receives the moments
    and, when S_all has rows, S (mp * mp) the lower triangle of the weighted
    scatter of the features, sum_i w_i f_i f_i^T (S[a * mp + b], b <= a).
    Without ``moments`` (statistics off) only the labels and log_prob are
    written: no exps, no moments, nothing in nk_all, M_all, obj_all or S_all.

    Features (zero-padded to mp): ``_LINEAR`` x - c; ``_QUADRATIC`` x - c
    and (x - c)^2; ``_OBSERVED`` o (x - c), o (x - c)^2 and o, with o = 0
    where x is NaN and 1 elsewhere; ``_SPHERICAL`` x - c and ||x - c||^2;
    ``_PAIRS`` x - c and the products of its values (``_stage_pairs``).
    Blocks of ``_RB`` rows are held feature-major with rows in vector lanes,
    so that the maximum, the exps and the normalisation of the softmax run
    on four rows at once.
    """
    start = ci * chunk_size
    stop = min(X.shape[0], start + chunk_size)
    k = nk_all.shape[1]
    d = X.shape[1]
    m = _feature_count(features, d)
    want_lp = log_prob.shape[0] == X.shape[0]
    n_blk = _SUB // _RB
    scatter = moments and S_all.shape[0] > 0
    # blocks whose moments one pass of the moment tile adds: a sub-block's
    # when its features fit in the level-1 cache, else ``_MOMENT_GROUP`` (the
    # scatter's weights are taken a sub-block at a time)
    n_grp = _MOMENT_GROUP if m * _SUB * 8 > _MOMENT_GROUP_BYTES and not scatter else n_blk
    FT = _zeros64(n_grp * mp * _RB)
    ST = _zeros64(n_grp * kp * _RB)
    NKV = np.zeros(kp * 4)
    lane = np.zeros(40)
    lane[16] = 1.0
    obj = obj_all[ci]
    if moments:
        nk, M = nk_all[ci], M_all[ci]
        M[:] = 0.0
        obj[:] = 0.0
    MV = np.zeros(kp * mp * 4 if moments else 0)  # the moment tiles' lane sums (``_fold_lanes``)
    if scatter:
        S = S_all[ci]
        S[:] = 0.0
        SV = np.zeros(S.shape[0] * 4)
        WFT = _zeros64(n_blk * mp * _RB)  # w f, the layout of FT
        WV = np.zeros(_RB)
    g = 0  # blocks of the group staged so far
    for s0 in range(start, stop, _SUB):
        rows = min(_SUB, stop - s0)
        FTg = FT[g * mp * _RB:]
        STg = ST[g * kp * _RB:]
        blocks = _stage_and_score(X, s0, rows, c, features, m, mp, m, G, A, kp, FTg, STg)
        _softmax_blocks(X, STg, blocks, s0, stop, k, kp, sample_weight, labels, log_prob,
                        want_lp, lane, NKV, obj, moments)
        g += blocks
        if not moments:
            g = 0
            continue
        if g + n_blk <= n_grp and s0 + _SUB < stop:
            continue
        _moment_tile_lanes(FT, ST, g, m, kp, mp, MV, False)
        g = 0
        if scatter:  # a sub-block a group: FT holds these rows alone
            for b in range(blocks):
                for r in range(_RB):
                    i = b * _RB + r
                    WV[r] = sample_weight[s0 + i] if i < rows else 0.0
                o = b * mp * _RB
                w0 = vload(WV, 0)
                w1 = vload(WV, 4)
                for a in range(m):
                    vstore(WFT, o + a * _RB, vmul(vload(FT, o + a * _RB), w0))
                    vstore(WFT, o + a * _RB + 4, vmul(vload(FT, o + a * _RB + 4), w1))
            _moment_tile_lanes(FT, WFT, blocks, m, mp, mp, SV, True)
    if not moments:
        return
    _fold_lanes(MV, M)
    if scatter:
        _fold_lanes(SV, S)
    _finish_soft_chunk(lane, obj, NKV, nk)


@serial
def _soft_pairs_chunk(ci, X, sample_weight, c, G, A, kp, mp, chunk_size, labels, log_prob,
                      nk_all, M_all, obj_all, moments):
    """``_soft_tiled_chunk`` for the pairs map with the products formed in the
    tiles (``_PAIRS_FUSED_D``): FT holds x - c alone, fp features a block;
    the moments go through lane sums of mq entries a component
    (``_pairs_moment_tile``) into M, whose layout is the pairs map's."""
    start = ci * chunk_size
    stop = min(X.shape[0], start + chunk_size)
    d = X.shape[1]
    want_lp = log_prob.shape[0] == X.shape[0]
    n_blk = _SUB // _RB
    n_grp = _PAIRS_GROUP_BLOCKS
    fp = _linear_stride(d)
    mq = _pairs_lane_stride(d)
    FT = _zeros64(n_grp * fp * _RB)
    ST = _zeros64(n_grp * kp * _RB)
    UB = _zeros64(n_grp * kp * _RB if moments else 0)  # the moment tile's r x'_a
    NKV = np.zeros(kp * 4)
    lane = np.zeros(40)
    lane[16] = 1.0
    obj = obj_all[ci]
    if moments:
        nk, M = nk_all[ci], M_all[ci]
        M[:] = 0.0
        obj[:] = 0.0
    MV = np.zeros(kp * mq * 4 if moments else 0)
    g = 0  # blocks of the group staged so far
    for s0 in range(start, stop, _SUB):
        rows = min(_SUB, stop - s0)
        FTg = FT[g * fp * _RB:]
        STg = ST[g * kp * _RB:]
        blocks = _stage_and_score_pairs(X, s0, rows, c, d, fp, G, A, kp, FTg, STg)
        _softmax_blocks(X, STg, blocks, s0, stop, nk_all.shape[1], kp, sample_weight, labels,
                        log_prob, want_lp, lane, NKV, obj, moments)
        g += blocks
        if not moments:
            g = 0
        elif g + n_blk > n_grp or s0 + _SUB >= stop:
            _pairs_moment_tile(FT, ST, g, d, kp, fp, mq, MV, UB)
            g = 0
    if moments:
        _fold_pairs_lanes(MV, M, d, kp, mp, mq)
        _finish_soft_chunk(lane, obj, NKV, nk)


def _padded(size, multiple):
    return -(-size // multiple) * multiple


# A block's features span mp * _RB float64s.  When that is a multiple of 4 KB
# (mp a multiple of 64), the moment tile's loads of one feature from each
# block of a sub-block fall into one set of the level-1 cache, which holds 8
# lines: mp then gets 8 more (zero) features, which no tile reads.  The
# diagonal E-step at (5e4, 64, 8) (m = 128), ns a row: one thread 163-169 ->
# 154-159, two threads 84-85 -> 80-81 (the same bits).
_ALIASED_BYTES = 4096


def _soft_tile_shape(k, m):
    """(kp, mp) of ``_soft_tile_operands``."""
    kp = _padded(k, 4)
    mp = _padded(m, 8)
    if mp * _RB * 8 % _ALIASED_BYTES == 0:
        mp += 8
    return kp, mp


def _soft_tile_operands(G, A):
    """G (m, k) and A (k,) padded for the soft tiles: (Gp flat (mp, kp), Ap, kp,
    mp), kp = k and mp = m rounded up to multiples of 4 and 8 (and 8 more
    where blocks would alias in the cache, see above); padding components
    have A = -inf and G = 0, padding features G = 0."""
    m, k = G.shape
    kp, mp = _soft_tile_shape(k, m)
    Gp = np.zeros((mp, kp))
    Gp[:m, :k] = G
    Ap = np.full(kp, -np.inf)
    Ap[:k] = A
    return Gp.ravel(), Ap, kp, mp


def _soft_tiled(X, sample_weight, c, features, G, A, chunk_size, labels, log_prob, nk, obj,
                scatter=False):
    """Run the tiled soft E-step; returns the moments, shape (n_chunks, k, m),
    and with ``scatter`` also the features' weighted scatter (n_chunks, m, m),
    its lower triangle only.  With statistics off (``nk`` with no rows) it
    writes the labels and log_prob only and returns None."""
    m, k = G.shape
    Gp, Ap, kp, mp = _soft_tile_operands(G, A)
    return _soft_tiled_padded(X, sample_weight, c, features, Gp, Ap, kp, mp, m, k, chunk_size,
                              labels, log_prob, nk, obj, scatter)


def _soft_tiled_padded(X, sample_weight, c, features, Gp, Ap, kp, mp, m, k, chunk_size,
                       labels, log_prob, nk, obj, scatter=False):
    """``_soft_tiled`` with the operands already padded (``_soft_tile_operands``)."""
    moments = statistics_wanted(nk)
    n_chunks = nk.shape[0] if moments else chunk_count(X.shape[0], chunk_size)
    M = np.empty((nk.shape[0], kp * mp))
    S = np.empty((nk.shape[0] if scatter else 0, mp * mp))
    # without moments the chunks read only nk's shape, and obj is scratch
    c = np.ascontiguousarray(c, dtype=np.float64)
    obj = obj if moments else np.zeros((n_chunks, 3))
    work = X.shape[0] * (2 if moments else 1) * kp * mp
    if features == _PAIRS_FUSED:
        run_chunks(_soft_pairs_chunk, n_chunks, X, sample_weight, c, Gp, Ap, kp, mp,
                   chunk_size, labels, log_prob, nk, M, obj, moments, work=work)
    else:
        run_chunks(_soft_tiled_chunk, n_chunks, X, sample_weight, c, Constant(features), Gp,
                   Ap, kp, mp, chunk_size, labels, log_prob, nk, M, obj, S, moments,
                   work=work)
    if not moments:
        return None
    M = M.reshape(-1, kp, mp)[:, :k, :m]
    if scatter:
        return M, S.reshape(-1, mp, mp)[:, :m, :m]
    return M


@strict
def _pairs_statistics_chunk(ci, M, shifted, nk_all, sx_all, sxx_all):
    """The full model's statistics of chunk ci from the moments of ``_soft``'s
    PAIRS map (see ``_soft.MODELS``); strict: IEEE arithmetic in the written
    order."""
    k, d = shifted.shape
    Mc, sx, sxx = M[ci], sx_all[ci], sxx_all[ci]
    for j in range(k):
        n = nk_all[ci, j]
        for a in range(d):
            sx[j, a] = Mc[j, a] - n * shifted[j, a]
        q = d
        for a in range(d):
            s1a = Mc[j, a]
            ma = shifted[j, a]
            for b in range(a + 1):
                mb = shifted[j, b]
                sxx[j, a, b] = Mc[j, q + b] - ma * Mc[j, b] - s1a * mb + n * (ma * mb)
            for b in range(a + 1, d):
                sxx[j, a, b] = 0.0
            q += a + 1


@strict
def _coordinate_statistics(M, shifted, nk, precision, spherical, nko, sx, sxx):
    """The statistics of the soft diagonal (``precision`` empty), spherical
    (``spherical``) and NaN-diagonal (``precision`` (k, d), M with the o
    features) E-steps from their moments (formulas at ``_soft.MODELS``).
    numpy's temporaries and slabs had cost 0.15 - 0.2 ms an E-step at
    (1e5, 16, 16) and (5e4, 64, 8), 3 - 5 % of a fit's iteration; this takes
    0.03 - 0.04.  Serial: a parallel launch would cost as much as the work.
    The operations of the numpy versions it replaced, in their order (the
    same bits), except the spherical sum over the features, in their order
    (numpy's einsum took its own: within an ulp)."""
    C, k, d = sx.shape
    observed = precision.shape[0] > 0
    for c in range(C):
        for j in range(k):
            n = nk[c, j]
            if spherical:
                cross = 0.0
                norm2 = 0.0
            for a in range(d):
                s1 = M[c, j, a]
                m = shifted[j, a]
                if observed:
                    so = M[c, j, 2 * d + a]
                    nko[c, j, a] = so
                    sx[c, j, a] = s1 - so * m
                    sxx[c, j, a] = ((M[c, j, d + a] - (2.0 * m) * s1 + so * (m * m))
                                    + (n - so) / precision[j, a])
                else:
                    sx[c, j, a] = s1 - n * m
                    if spherical:
                        cross += s1 * m
                        norm2 += m * m
                    else:
                        sxx[c, j, a] = M[c, j, d + a] - (2.0 * m) * s1 + n * (m * m)
            if spherical:
                sxx[c, j, 0] = M[c, j, d] - 2.0 * cross + n * norm2


_NO_PRECISION = np.zeros((0, 0))
_NO_NKO = np.zeros((0, 0, 0))


@strict
def _coordinate_operands(means, precision, log_norm, spherical, kp, mp):
    """``_soft.diag_operands`` (``precision`` (k, d)) or
    ``_soft.spherical_operands`` (``precision`` (k, 1), ``spherical``), with G
    and A padded for the tiles as ``_soft_tile_operands`` pads them: (c,
    shifted, Gp flat (mp, kp), Ap).  One compiled call in place of a dozen
    numpy ones between two E-steps, where the caches are cold: at
    (5e4, 64, 8), after a sweep of 32 MB, 146 -> 19 us; in fits (25
    alternating pairs, medians of the differences) 0.035-0.046 ms an
    iteration less on two threads (1 %), diagonal and spherical.  c and
    shifted are numpy's mean and difference, in its order (the same bits);
    A's sum over the features runs in their order (einsum's may differ in
    the last bit)."""
    k, d = means.shape
    c = _rows_mean(means)
    shifted = np.empty((k, d))
    Gp = np.zeros((mp, kp))
    Ap = np.full(kp, -np.inf)
    for j in range(k):
        q = 0.0
        for a in range(d):
            m = means[j, a] - c[a]
            shifted[j, a] = m
            p = precision[j, 0] if spherical else precision[j, a]
            Gp[a, j] = p * m
            q += (m * m if spherical else p * (m * m))
        if spherical:
            Gp[d, j] = -0.5 * precision[j, 0]
            Ap[j] = log_norm[j] - 0.5 * precision[j, 0] * q
        else:
            for a in range(d):
                Gp[d + a, j] = -0.5 * precision[j, a]
            Ap[j] = log_norm[j] - 0.5 * q
    return c, shifted, Gp.ravel(), Ap


@strict
def _full_operands(means, P, log_norm, kp, mp):
    """``_soft.full_operands`` from the precisions ``P`` (k, d, d), with G and A
    padded for the tiles as ``_soft_tile_operands`` pads them: (c, shifted,
    Gp flat (mp, kp), Ap), Gp's rows P_j mu'_j, then -P_j[a, b] (b <= a,
    a-major; halved on the diagonal).  Compiled for the reason of
    ``_coordinate_operands``: numpy's version and the padding took 0.1 ms an
    iteration at (1e5, 16, 16).  c and shifted as there; P_j mu'_j and A's sum
    run over the features in their order (numpy's einsum may differ in the
    last bit)."""
    k, d = means.shape
    c = _rows_mean(means)
    shifted = np.empty((k, d))
    for j in range(k):
        for a in range(d):
            shifted[j, a] = means[j, a] - c[a]
    Gp = np.zeros((mp, kp))
    Ap = np.full(kp, -np.inf)
    for j in range(k):
        q = 0.0
        for a in range(d):
            pm = 0.0
            for b in range(d):
                pm += P[j, a, b] * shifted[j, b]
            Gp[a, j] = pm
            q += pm * shifted[j, a]
        Ap[j] = log_norm[j] - 0.5 * q
        f = d
        for a in range(d):
            for b in range(a):
                Gp[f, j] = -P[j, a, b]
                f += 1
            Gp[f, j] = -P[j, a, a] * 0.5
            f += 1
    return c, shifted, Gp.ravel(), Ap


@strict
def _tied_operands(means, P, log_norm, center, kp, mp):
    """``_soft.tied_operands`` from the precision ``P`` (d, d), with G and A
    padded for the tiles as ``_soft_tile_operands`` pads them: (shifted, Gp
    flat (mp, kp), Ap, W).  Compiled for the reason of
    ``_coordinate_operands``: at (5e4, 64, 8) numpy's version and the padding
    took 0.13 ms an iteration, all of it on one thread.  P mu'_j and A's sum
    run over the features in their order (numpy's matmul and einsum may
    differ in the last bit)."""
    k, d = means.shape
    shifted = np.empty((k, d))
    Gp = np.zeros((mp, kp))
    Ap = np.full(kp, -np.inf)
    for j in range(k):
        for a in range(d):
            shifted[j, a] = means[j, a] - center[a]
    for j in range(k):
        q = 0.0
        for b in range(d):
            pm = 0.0
            for a in range(d):
                pm += shifted[j, a] * P[a, b]
            Gp[b, j] = pm
            q += pm * shifted[j, b]
        Ap[j] = log_norm[j] - 0.5 * q
    # the weights of the scatter's lower triangle in tr(P S)
    W = np.zeros((d, d))
    for a in range(d):
        for b in range(a):
            W[a, b] = 2.0 * P[a, b]
        W[a, a] = P[a, a]
    return shifted, Gp.ravel(), Ap, W


@strict
def _tied_statistics(M, S, shifted, W, nk, sx, sxx, obj):
    """``_soft.tied_statistics`` on the tiles' moments M (C, k, >= d) and
    scatter S (C, >= d, >= d), lower triangle: sx about the means, sxx the
    scatter's lower triangle, and -1/2 tr(P S) added to obj[:, 0] (its sum
    over a, then b, in that order).  Serial, as ``_coordinate_statistics``:
    numpy's temporaries and einsum took 0.6 ms an iteration at (5e4, 64, 8)."""
    C = sx.shape[0]
    k, d = shifted.shape
    for c in range(C):
        for j in range(k):
            n = nk[c, j]
            for a in range(d):
                sx[c, j, a] = M[c, j, a] - n * shifted[j, a]
        t = 0.0
        for a in range(d):
            for b in range(a + 1):
                s = S[c, a, b]
                sxx[c, a, b] = s
                t += s * W[a, b]
            for b in range(a + 1, d):
                sxx[c, a, b] = 0.0
        obj[c, 0] -= 0.5 * t
        obj[c, 1] = 0.0


def _estep_soft(model, X, sample_weight, means, precision, log_norm, chunk_size, labels,
                log_prob, nk, sx, sxx, obj):
    """Soft diagonal (``precision`` (k, d)), spherical (``precision`` (k,))
    or full (``precision`` the (k, d, d) Cholesky factors) E-step through
    ``_soft``'s feature map: the spherical one has d + 1 features (x' and
    ||x'||^2) against the 2 d of the diagonal one, the full one d + d (d + 1) / 2
    (x' and its products)."""
    features = _soft.MODELS[model][1]
    if features == _PAIRS:
        k, d = means.shape
        m = d + d * (d + 1) // 2
        kp, mp = _soft_tile_shape(k, m)
        c, shifted, Gp, Ap = _full_operands(means, precision @ np.swapaxes(precision, 1, 2),
                                            log_norm, kp, mp)
        fused = _PAIRS_FUSED if d >= max(_PAIRS_FUSED_D, 2 * _padded(k, 4)) else _PAIRS
        M = _soft_tiled_padded(X, sample_weight, c, fused, Gp, Ap, kp, mp, m, k, chunk_size,
                               labels, log_prob, nk, obj)
    else:
        k, d = means.shape
        m = d + 1 if features == _SPHERICAL else 2 * d
        kp, mp = _soft_tile_shape(k, m)
        c, shifted, Gp, Ap = _coordinate_operands(
            means, precision.reshape(k, -1), log_norm, features == _SPHERICAL, kp, mp)
        M = _soft_tiled_padded(X, sample_weight, c, features, Gp, Ap, kp, mp, m, k,
                               chunk_size, labels, log_prob, nk, obj)
    if M is None:  # statistics off
        return
    if features == _PAIRS:
        run_chunks(_pairs_statistics_chunk, nk.shape[0], M, shifted, nk, sx, sxx,
                   work=M.size)
    elif features == _SPHERICAL:
        _coordinate_statistics(M, shifted, nk, _NO_PRECISION, True, _NO_NKO, sx,
                               sxx.reshape(sxx.shape + (1,)))
    else:
        _coordinate_statistics(M, shifted, nk, _NO_PRECISION, False, _NO_NKO, sx, sxx)
    obj[:, 1] = 0.0


def estep_full(X, sample_weight, means, prec_chol, log_norm, center, hard,
               chunk_size, labels, log_prob, nk, sx, sxx, obj):
    check_labels(X, labels, hard)
    if not hard and means.shape[1] <= _soft.PAIRS_MAX_D:
        # the whitened differences below took 1.06 - 1.85x as long (see _soft), and
        # a kernel with rows in lanes for up to 6 features 1.5 - 1.7x
        _estep_soft("full", X, sample_weight, means, prec_chol, log_norm, chunk_size, labels,
                    log_prob, nk, sx, sxx, obj)
        return
    if not statistics_wanted(nk):
        nk, sx, sxx, obj = statistic_temporaries("estep_full", X, means.shape[0], chunk_size)
    # soft and hard are separate chunk kernels: a soft fit never compiles the hard one
    W, cw, depth = _full_tile_operands(means, prec_chol, center)
    run_chunks(_estep_full_hard_chunk if hard else _estep_full_soft_chunk, nk.shape[0], X,
               sample_weight, means, W, cw, depth, log_norm, center, chunk_size, labels,
               log_prob, nk, sx, sxx, obj, work=X.size * means.size)


def estep_tied(X, sample_weight, means, prec_chol, log_norm, center, hard,
               chunk_size, labels, log_prob, nk, sx, sxx, obj):
    check_labels(X, labels, hard)
    if not hard and log_prob.shape[0] != X.shape[0]:
        # a fit's E-step: the responsibilities and the objective from x . P mu_j and the
        # scatter (see _soft.tied_operands); predictions keep the whitened rows below.
        # One thread, ns a row: (1e5, 16, 16) 186 -> 74, (2e5, 2, 8) 43 -> 33 (against
        # a kernel with rows in lanes for up to 6 features)
        k, d = means.shape
        kp, mp = _soft_tile_shape(k, d)
        center = np.ascontiguousarray(center, dtype=np.float64)
        shifted, Gp, Ap, W = _tied_operands(means, prec_chol @ prec_chol.T, log_norm, center,
                                            kp, mp)
        MS = _soft_tiled_padded(X, sample_weight, center, _LINEAR, Gp, Ap, kp, mp, d, k,
                                chunk_size, labels, log_prob, nk, obj, scatter=True)
        if MS is not None:  # statistics on
            _tied_statistics(MS[0], MS[1], shifted, W, nk, sx, sxx, obj)
        return
    if not statistics_wanted(nk):
        nk, sx, sxx, obj = statistic_temporaries("estep_tied", X, means.shape[0], chunk_size)
    U, cwT, CT, A, P = _tied_tile_operands(means, prec_chol, log_norm, center)
    run_chunks(_estep_tied_chunk, nk.shape[0], X, sample_weight, means, U, cwT, CT, A, P,
               log_norm, center, hard, chunk_size, labels, log_prob, nk, sx, sxx, obj,
               work=X.size * (X.shape[1] + means.shape[0]))


# --------------------------------------------------------------- Bernoulli
@serial
def _estep_bernoulli_chunk(ci, X, sample_weight, logitT, log_norm, hard, chunk_size, labels,
                           log_prob, nk_all, sx_all, obj_all):
    start = ci * chunk_size
    stop = min(X.shape[0], start + chunk_size)
    nk, sx, obj = nk_all[ci], sx_all[ci], obj_all[ci]
    d, k = logitT.shape
    want_lp = log_prob.shape[0] == X.shape[0]
    xb = np.empty((_BLOCK, d))
    lp = np.empty((_BLOCK, k))
    no_maha = np.zeros((_BLOCK, k))
    wr = np.empty((_BLOCK, k))
    best_of = np.empty(_BLOCK, dtype=np.int64)
    nk[:] = 0.0
    sx[:] = 0.0
    obj[:] = 0.0
    for i0 in range(start, stop, _BLOCK):
        n_rows = min(_BLOCK, stop - i0)
        _load_block(X, i0, n_rows, xb)
        # log p(x | j) + log w_j = log_norm_j + x . logit_j
        for r in range(_BLOCK):
            for j in range(k):
                lp[r, j] = log_norm[j]
        for a in range(d):
            x0 = xb[0, a]
            x1 = xb[1, a]
            x2 = xb[2, a]
            x3 = xb[3, a]
            for j in range(k):
                g = logitT[a, j]
                lp[0, j] += x0 * g
                lp[1, j] += x1 * g
                lp[2, j] += x2 * g
                lp[3, j] += x3 * g
        _finish_block(i0, n_rows, lp, no_maha, hard, sample_weight, labels, log_prob,
                      want_lp, wr, best_of, obj)
        if hard:
            for r in range(n_rows):
                j = best_of[r]
                if j >= 0:
                    w = sample_weight[i0 + r]
                    nk[j] += w
                    for a in range(d):
                        sx[j, a] += w * xb[r, a]
            continue
        for j in range(k):
            r0 = wr[0, j]
            r1 = wr[1, j]
            r2 = wr[2, j]
            r3 = wr[3, j]
            if r0 == 0.0 and r1 == 0.0 and r2 == 0.0 and r3 == 0.0:
                continue
            nk[j] += r0 + r1 + r2 + r3
            for a in range(d):
                sx[j, a] += r0 * xb[0, a] + r1 * xb[1, a] + r2 * xb[2, a] + r3 * xb[3, a]


def estep_bernoulli(X, sample_weight, logit, log_norm, hard, chunk_size, labels,
                    log_prob, nk, sx, obj):
    check_labels(X, labels, hard)
    if not hard:
        # log(w_j p_j(x)) = log_norm_j + x . logit_j; the moments are sx itself
        M = _soft_tiled(X, sample_weight, np.zeros(X.shape[1]), _LINEAR, logit.T,
                        log_norm, chunk_size, labels, log_prob, nk, obj)
        if M is not None:  # statistics on
            sx[:] = M
        return
    if not statistics_wanted(nk):
        nk, sx, _, obj = statistic_temporaries("estep_bernoulli", X, logit.shape[0], chunk_size)
    run_chunks(_estep_bernoulli_chunk, nk.shape[0], X, sample_weight, _transpose(logit),
               log_norm, hard, chunk_size, labels, log_prob, nk, sx, obj,
               work=2 * X.size * logit.shape[0])


# --------------------------------------------------------------- distances
@serial
def _sqdist_chunk(ci, X, centersT, chunk_size, out):
    start = ci * chunk_size
    stop = min(X.shape[0], start + chunk_size)
    d, m = centersT.shape
    xb = np.empty((_BLOCK, d))
    acc = np.empty((_BLOCK, m))
    for i0 in range(start, stop, _BLOCK):
        n_rows = min(_BLOCK, stop - i0)
        _load_block(X, i0, n_rows, xb)
        _block_sqdist(xb, centersT, acc)
        for r in range(n_rows):
            for j in range(m):
                out[i0 + r, j] = acc[r, j]


def sqdist(X, centers, chunk_size, out):
    run_chunks(_sqdist_chunk, -(-X.shape[0] // chunk_size), X, _transpose(centers),
               chunk_size, out, work=X.size * centers.shape[0])


# =============================================================== missing values
# Row by row: each row has its own set m of missing coordinates.  See the
# numpy backend for the formulas (Schur complement of the precision).

@inline_leaf
def _dot_lanes(a, ao, b, bo, n):
    """sum_t a[ao + t] b[bo + t] for t < n, by vectors: four independent
    chains of multiply-adds in a fixed order (the callers are ``ordered``, so
    a scalar loop would be one chain of n dependent steps)."""
    L = lanes(a)
    acc = vzero(a)
    t = 0
    while t + L <= n:
        acc = vfma(vload(a, ao + t), vload(b, bo + t), acc)
        t += L
    total = vhsum(acc)
    while t < n:
        total += a[ao + t] * b[bo + t]
        t += 1
    return total


@inline_leaf
def _add_lanes(y, yo, src, so, n):
    """y[yo : yo + n] += src[so : so + n], by vectors."""
    L = lanes(y)
    t = 0
    while t + L <= n:
        vstore(y, yo + t, vadd(vload(y, yo + t), vload(src, so + t)))
        t += L
    while t < n:
        y[yo + t] += src[so + t]
        t += 1


@inline_leaf
def _sweep_blocks(prec_lanes, d, miss_idx, mo, q, B, bo, bs, det, piv, rp):
    """B = -Lambda_mm^-1 for every lane j of ``prec_lanes``, m = miss_idx[mo:mo + q];
    det[j] = det Lambda_mm and piv[p * kbp + j] its p-th pivot.

    ``prec_lanes`` holds the precisions of the components, component
    innermost: entry (a, b) of lane j is ``prec_lanes[(a * d + b) * kbp + j]``
    for kbp lanes, a whole number of vectors (padding lanes hold the
    identity).  The missing set is the row's, shared by the components, so
    the components are the vector lanes of the sweep operator, applied to
    each pivot in turn; B's entry (s, t) of lane j is B[bo + (s * bs + t) * kbp + j].
    A principal block of a positive definite matrix needs no pivoting.
    Every operation is a correctly rounded vector operation, in a fixed order.
    """
    kbp = prec_lanes.shape[0] // (d * d)
    L = rlanes(B)
    one = rsplat(B, 1.0)
    for s in range(q):
        for t in range(q):
            src = (miss_idx[mo + s] * d + miss_idx[mo + t]) * kbp
            dst = bo + (s * bs + t) * kbp
            for j in range(0, kbp, L):
                vstore(B, dst + j, rload(prec_lanes, src + j))
    for j in range(0, kbp, L):
        vstore(det, j, one)
    for p in range(q):
        pp = bo + (p * bs + p) * kbp
        for j in range(0, kbp, L):
            pv = rload(B, pp + j)
            vstore(piv, p * kbp + j, pv)
            vstore(det, j, vmul(rload(det, j), pv))
            vstore(rp, j, vdiv(one, pv))
        for s in range(q):
            if s == p:
                continue
            sp = bo + (s * bs + p) * kbp
            for t in range(q):
                if t == p:
                    continue
                st = bo + (s * bs + t) * kbp
                pt = bo + (p * bs + t) * kbp
                for j in range(0, kbp, L):
                    upd = vmul(vmul(rload(B, sp + j), rload(B, pt + j)), rload(rp, j))
                    vstore(B, st + j, vsub(rload(B, st + j), upd))
        for s in range(q):
            if s == p:
                continue
            sp = bo + (s * bs + p) * kbp
            ps = bo + (p * bs + s) * kbp
            for j in range(0, kbp, L):
                vstore(B, sp + j, vmul(rload(B, sp + j), rload(rp, j)))
                vstore(B, ps + j, vmul(rload(B, ps + j), rload(rp, j)))
        for j in range(0, kbp, L):
            vstore(B, pp + j, vsub(rsplat(B, 0.0), rload(rp, j)))


@ordered
def _estep_dense_missing_chunk(ci, X, sample_weight, means, factors, precisions, prec_lanes,
                               WP, ncw, depth, log_norm, center, tied, hard, chunk_size,
                               labels, log_prob, imputed, nk_all, nko_all, sx_all, sxx_all,
                               obj_all):
    """Full (tied=False) or tied (tied=True) covariances with NaN entries.

    The whitening of all components is the register tile of ``estep_full``
    over four rows at a time (``WP`` = [U_1 | ... | U_k] and ``ncw`` = -cw,
    padded to whole pairs of vectors) with the missing coordinates set to
    ``center``, corrected by the q rows of U_j that belong to the missing
    coordinates (a table of (mu_ja - c_a) U_j[a, :], every component in one
    row per coordinate a).
    Everything that depends on the missing set is computed once a row for
    all components, the components being the vector lanes (``prec_lanes``:
    the precisions, component innermost; tied: k copies of the one):
    Lambda_mm^-1 and det Lambda_mm (``_sweep_blocks``), g = (Lambda delta)_m,
    Lambda_mm^-1 g and g^T Lambda_mm^-1 g, and the sum of r Lambda_mm^-1.
    Second moments are staged, ``_MOMENT_ROWS`` rows a component, and added
    through the moment tile.
    """
    start = ci * chunk_size
    stop = min(X.shape[0], start + chunk_size)
    nk, nko, sx, sxx, obj = nk_all[ci], nko_all[ci], sx_all[ci], sxx_all[ci], obj_all[ci]
    k, d = means.shape
    kd = k * d
    want_lp = log_prob.shape[0] == X.shape[0]
    want_imp = imputed.shape[0] == X.shape[0]
    half_log_2pi = 0.5 * np.log(2.0 * np.pi)
    xi = np.empty(d)
    xz = np.empty(d)
    yall = np.empty(kd)
    ybase = np.empty(d)
    miss_idx = np.empty(d, dtype=np.int64)
    obs_idx = np.empty(d, dtype=np.int64)
    dp = -(-d // 8) * 8
    # per component, padded to dp: x^ - mu_j (missing: its conditional mean),
    # the tied scatter's shift mu_j - c, and the sums of r and r (x^ - mu_j)
    dhat = np.zeros(k * dp)
    shift = np.zeros(k * dp)
    if tied:
        for j in range(k):
            for a in range(d):
                shift[j * dp + a] = means[j, a] - center[a]
    # row a: (mu_ja - c_a) U_j[a, :] for every j, the whitening's correction
    # when coordinate a is missing (zero left of the diagonal)
    corr = np.zeros(d * kd)
    for a in range(d):
        for j in range(k):
            v = means[j, a] - center[a]
            for b in range(a, d):
                corr[a * kd + j * d + b] = v * factors[j, a, b]
    observed = np.zeros(dp)
    nko_p = np.zeros(k * dp)
    sx_p = np.zeros(k * dp)
    stage = np.zeros((k, _MOMENT_ROWS * dp))    # rows of (x^ - mu_j), or about c if tied
    stage_z = np.zeros((k, _MOMENT_ROWS * dp))  # the same times w r_j
    staged_w = np.zeros(k)                      # their weight, to skip empty components
    stage_len = _MOMENT_ROWS * dp
    stage_flat = stage.ravel()
    stage_z_flat = stage_z.ravel()
    SA = np.zeros((1 if tied else k, dp * dp))
    slot = 0
    kbp = prec_lanes.shape[0] // (d * d)  # lanes: components, padded to whole vectors
    L = lanes(prec_lanes)
    B = np.empty(d * d * kbp)               # -Lambda_mm^-1 per lane
    det = np.empty(kbp)
    piv = np.empty(d * kbp)
    rp = np.empty(kbp)
    half_log_det = np.empty(kbp)
    mean_lanes = np.zeros(d * kbp)          # mu_ja at a * kbp + j
    for j in range(k):
        for a in range(d):
            mean_lanes[a * kbp + j] = means[j, a]
    dev = np.zeros(d * kbp)                 # x_a - mu_ja, observed a
    G = np.zeros(d * kbp)                   # g = (Lambda_j delta_j)_m
    Z = np.zeros(d * kbp)                   # Lambda_mm^-1 g
    QC = np.zeros(kbp)                      # g^T Lambda_mm^-1 g
    rr = np.zeros(kbp)                      # the row's r_j
    cond_sum = np.zeros(d * d * kbp)        # sum of r Lambda_mm^-1 (lower triangle)
    # one missing coordinate m: Lambda_mm is a number, its half log per (j, m)
    half_log_lam = np.empty((k, d))
    for j in range(k):
        for a in range(d):
            half_log_lam[j, a] = 0.5 * np.log(precisions[j, a, a])
    lp = np.empty(k)
    maha = np.empty(k)
    kdp = ncw.shape[0]
    xc4 = np.zeros((_BLOCK, d))
    y4 = np.empty(_BLOCK * kdp)
    no_p = np.zeros(kdp)
    no_half = np.zeros(_BLOCK)
    nk[:] = 0.0
    nko[:] = 0.0
    sx[:] = 0.0
    sxx[:] = 0.0
    obj[:] = 0.0
    for i in range(start, stop):
        r4 = (i - start) % _BLOCK
        if r4 == 0 and not tied:
            # (x~ - c) U_j - (mu_j - c) U_j for the next four rows at once
            for r in range(_BLOCK):
                for a in range(d):
                    v = X[i + r, a] - center[a] if i + r < stop else 0.0
                    xc4[r, a] = 0.0 if np.isnan(v) else v
            _score_tile(xc4, WP, ncw, no_p, kdp, no_half, depth, y4)
        q = 0   # missing coordinates miss_idx[:q], ascending
        no = 0  # observed ones obs_idx[:no]
        for a in range(d):
            v = X[i, a]
            xi[a] = v
            if np.isnan(v):
                miss_idx[q] = a
                q += 1
                observed[a] = 0.0
                xz[a] = 0.0
            else:
                obs_idx[no] = a
                no += 1
                observed[a] = 1.0
                xz[a] = v
        # (x~ - mu_j) U_j for all j, with x~ = x and x~_m = center_m
        if tied:
            # one shared U: whiten once, then shift per component
            for b in range(d):
                ybase[b] = 0.0
            for t in range(no):
                a = obs_idx[t]
                xa = xz[a] - center[a]
                for b in range(a, d):
                    ybase[b] += xa * factors[0, a, b]
            for j in range(k):
                for b in range(d):
                    yall[j * d + b] = ybase[b] + ncw[j * d + b]
            ybuf = yall
            yo = 0
        else:
            ybuf = y4
            yo = r4 * kdp
        # delta_o^T Lambda_oo delta_o = |delta U_j|^2 with delta_m = 0:
        # add (mu_jm - c_m) U_j[m, :] for each missing m, all j at once
        for s in range(q):
            _add_lanes(ybuf, yo, corr, miss_idx[s] * kd, kd)
        # Sigma_oo^-1 = Lambda_oo - Lambda_om Lambda_mm^-1 Lambda_mo, so with
        # delta_m = 0 and g = (Lambda delta)_m the quadratic form is
        # |delta U_j|^2 - g^T Lambda_mm^-1 g, and E[x_m | x_o] - mu_m = -Lambda_mm^-1 g
        if q > 0:
            _sweep_blocks(prec_lanes, d, miss_idx, 0, q, B, 0, d, det, piv, rp)
            for j in range(k):
                if q == 1:
                    half_log_det[j] = half_log_lam[j, miss_idx[0]]
                elif det[j] > 1e-280 and det[j] < 1e280:
                    half_log_det[j] = 0.5 * np.log(det[j])
                else:  # out of range: the pivots' logs
                    acc = 0.0
                    for t in range(q):
                        acc += np.log(piv[t * kbp + j])
                    half_log_det[j] = 0.5 * acc
            for t in range(no):
                a = obs_idx[t]
                xv = vsplat(dev, xz[a])
                for jb in range(0, kbp, L):
                    vstore(dev, a * kbp + jb, vsub(xv, vload(mean_lanes, a * kbp + jb)))
            for s in range(q):
                ms = miss_idx[s]
                for jb in range(0, kbp, L):
                    acc4 = vzero(dev)
                    for t in range(no):
                        a = obs_idx[t]
                        acc4 = vfma(vload(prec_lanes, (ms * d + a) * kbp + jb),
                                    vload(dev, a * kbp + jb), acc4)
                    vstore(G, s * kbp + jb, acc4)
            for jb in range(0, kbp, L):
                qc = vzero(dev)
                for s in range(q):
                    bg = vzero(dev)  # (B g)_s = -(Lambda_mm^-1 g)_s
                    for t in range(q):
                        bg = vfma(vload(B, (s * d + t) * kbp + jb), vload(G, t * kbp + jb), bg)
                    z = vsub(vzero(dev), bg)
                    vstore(Z, s * kbp + jb, z)
                    qc = vfma(vload(G, s * kbp + jb), z, qc)
                vstore(QC, jb, qc)
        for j in range(k):
            quad = _dot_lanes(ybuf, yo + j * d, ybuf, yo + j * d, d)
            for a in range(d):
                sstore(dhat, j * dp + a, (xz[a] - means[j, a]) * observed[a])
            half_log_det_mm = 0.0
            if q > 0:
                quad -= QC[j]
                for s in range(q):
                    dhat[j * dp + miss_idx[s]] = -Z[s * kbp + j]
                half_log_det_mm = half_log_det[j]
            maha[j] = quad
            lp[j] = log_norm[j] + q * half_log_2pi - half_log_det_mm - 0.5 * quad
        if want_imp:
            for a in range(d):
                imputed[i, a] = xi[a]
        best, ll, changed = _assign(i, lp, hard, labels, log_prob, want_lp)
        if want_imp:
            for s in range(q):
                ms = miss_idx[s]
                if hard:
                    imputed[i, ms] = means[best, ms] + dhat[best * dp + ms]
                    continue
                acc = 0.0
                for j in range(k):
                    acc += lp[j] * (means[j, ms] + dhat[j * dp + ms])
                imputed[i, ms] = acc
        obj[2] += changed
        w = sample_weight[i]
        if w != 0.0:
            obj[0] += w * ll
            if hard:
                obj[1] += w * maha[best]
            o = slot * dp
            for j in range(k):
                r = w * lp[j] if not hard else (w if j == best else 0.0)
                rr[j] = r
                if r == 0.0:
                    for a in range(d):
                        stage_z[j, o + a] = 0.0
                    continue
                staged_w[j] += r
                nk[j] += r
                rv = vsplat(dhat, r)
                for a in range(0, dp, 4):
                    e = j * dp + a
                    dh = vload(dhat, e)
                    vstore(nko_p, e, vfma(rv, vload(observed, a), vload(nko_p, e)))
                    vstore(sx_p, e, vfma(rv, dh, vload(sx_p, e)))
                    # tied: the scatter is taken about the common center
                    v = vadd(dh, vload(shift, e))
                    vstore(stage_flat, j * stage_len + o + a, v)
                    vstore(stage_z_flat, j * stage_len + o + a, vmul(rv, v))
            if q > 0:
                # r_j Lambda_j,mm^-1 for every j
                for s in range(q):
                    for t in range(s + 1):  # the lower triangle: m is ascending
                        dst = (miss_idx[s] * d + miss_idx[t]) * kbp
                        src = (s * d + t) * kbp
                        for jb in range(0, kbp, L):
                            upd = vmul(vload(rr, jb), vload(B, src + jb))
                            vstore(cond_sum, dst + jb, vsub(vload(cond_sum, dst + jb), upd))
            slot += 1
        if slot == _MOMENT_ROWS or (i == stop - 1 and slot > 0):
            for j in range(k):
                if staged_w[j] != 0.0:
                    _lower_moment_tile(stage[j], stage_z[j], slot, dp, d,
                                       SA[0 if tied else j], 0)
                staged_w[j] = 0.0
            slot = 0
    for t in range(SA.shape[0]):
        for a in range(d):
            for b in range(a + 1):  # the lower triangle: the M-step reads no more
                if tied:  # one covariance: the lanes' sum
                    c = 0.0
                    for j in range(k):
                        c += cond_sum[(a * d + b) * kbp + j]
                else:
                    c = cond_sum[(a * d + b) * kbp + t]
                sxx[t, a, b] += SA[t, a * dp + b] + c
    for j in range(k):
        for a in range(d):
            nko[j, a] = nko_p[j * dp + a]
            sx[j, a] = sx_p[j * dp + a]


@serial
def _precisions_from_factors(factors):
    """U_j U_j^T for each upper-triangular factor U_j."""
    k, d = factors.shape[0], factors.shape[1]
    precisions = np.zeros((k, d, d))
    for j in range(k):
        for a in range(d):
            for b in range(d):
                s = 0.0
                for t in range(max(a, b), d):
                    s += factors[j, a, t] * factors[j, b, t]
                precisions[j, a, b] = s
    return precisions


def _estep_dense_missing(X, sample_weight, means, factors, log_norm, center, tied,
                         hard, chunk_size, labels, log_prob, imputed, nk, nko, sx,
                         sxx, obj):
    WP, ncw, depth = _full_tile_operands(means, factors, center)
    precisions = _precisions_from_factors(factors)
    # (d, d, kbp): component innermost, padded with identities to whole vectors
    kb = means.shape[0]
    L = ROW_BYTES // precisions.itemsize  # whole row vectors (``_sweep_blocks``)
    kbp = -(-kb // L) * L
    d = means.shape[1]
    prec_lanes = np.zeros((d, d, kbp))
    prec_lanes[:, :, :kb] = precisions.transpose(1, 2, 0)
    prec_lanes[np.arange(d), np.arange(d), kb:] = 1.0
    run_chunks(_estep_dense_missing_chunk, nk.shape[0], X, sample_weight, means, factors,
               precisions, prec_lanes.ravel(), WP, ncw, depth, log_norm, center, tied, hard,
               chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj,
               work=2 * X.size * means.size)


_HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)


@ordered_inline_leaf
def _pairs_missing_scores(FT, fo, d, k, kbp, PL, SL, H1, H2, ST, so, miss, mo, q, Hm, BS,
                          bo, US, uo, HU, det, piv, rp):
    """A row's corrections of the PAIRS_OBSERVED scores (see ``_soft``): adds
    q h2 - log det P_mm / 2 + h^T P_mm^-1 h / 2 to ST[so + j * _RB] for each
    component j, h = (P_j e_j)_m = (P_j x~)_m - (P_j mu'_j)_m (x~ at
    FT[fo + a * _RB], SL the lanes of P_j mu'_j), m = miss[mo:mo + q]
    (q > 0).  Leaves -P_mm^-1 at BS[bo:] (``_sweep_blocks``, stride q) and
    u = E[x_m | x_o] - c_m = -P_mm^-1 h at US[uo:] (s * kbp + j).  The
    components are the vector lanes."""
    L = rlanes(Hm)
    for s in range(q):
        ms = miss[mo + s]
        row = ms * d * kbp
        for jb in range(0, kbp, L):
            acc = vsub(rsplat(Hm, 0.0), rload(SL, ms * kbp + jb))
            for a in range(d):
                acc = vfma(rload(PL, row + a * kbp + jb), rsplat(Hm, FT[fo + a * _RB]), acc)
            vstore(Hm, s * kbp + jb, acc)
    _sweep_blocks(PL, d, miss, mo, q, BS, bo, q, det, piv, rp)
    for jb in range(0, kbp, L):
        hu = rsplat(Hm, 0.0)
        for s in range(q):
            acc = rsplat(Hm, 0.0)
            for t in range(q):
                acc = vfma(rload(BS, bo + (s * q + t) * kbp + jb), rload(Hm, t * kbp + jb), acc)
            vstore(US, uo + s * kbp + jb, acc)
            hu = vfma(rload(Hm, s * kbp + jb), acc, hu)
        vstore(HU, jb, hu)
    base = q * _HALF_LOG_2PI
    for j in range(k):
        if q == 1:
            hld = H1[miss[mo] * kbp + j]
        elif q == 2:
            hld = H2[(miss[mo + 1] * d + miss[mo]) * kbp + j]
        elif det[j] > 1e-280 and det[j] < 1e280:
            hld = 0.5 * np.log(det[j])
        else:  # out of range: the pivots' logs
            tot = 0.0
            for t in range(q):
                tot += np.log(piv[t * kbp + j])
            hld = 0.5 * tot
        # h^T P_mm^-1 h = -h . u
        ST[so + j * _RB] += base - hld - 0.5 * HU[j]


@ordered_inline_leaf
def _pairs_missing_moments(FT, fo, d, k, kbp, ST, so, miss, mo, q, BS, bo, US, uo, RR, RU, U1,
                           CC):
    """Row's corrections of the PAIRS_OBSERVED moments, its weighted
    responsibilities r_j at ST[so + j * _RB]: U1[m] += r u_m, and into CC
    (d, d, kbp), whose (a, b) and (b, a) add up to the lower triangle's
    (a, b): r u_m x~_a at (m, a) for every a (x~_a = 0 where missing) and
    r (u_m u_m' + (P_mm^-1)_mm') at (m, m'), m' <= m."""
    L = rlanes(RR)
    for j in range(k):
        RR[j] = ST[so + j * _RB]
    for s in range(q):
        ms = miss[mo + s]
        for jb in range(0, kbp, L):
            ru = vmul(rload(RR, jb), rload(US, uo + s * kbp + jb))
            vstore(RU, jb, ru)
            vstore(U1, ms * kbp + jb, vadd(rload(U1, ms * kbp + jb), ru))
        row = ms * d * kbp
        for a in range(d):
            xv = rsplat(RR, FT[fo + a * _RB])
            for jb in range(0, kbp, L):
                o = row + a * kbp + jb
                vstore(CC, o, vfma(rload(RU, jb), xv, rload(CC, o)))
        for t in range(s + 1):
            o = row + miss[mo + t] * kbp
            for jb in range(0, kbp, L):
                v = vfma(rload(RU, jb), rload(US, uo + t * kbp + jb), rload(CC, o + jb))
                v = vsub(v, vmul(rload(RR, jb), rload(BS, bo + (s * q + t) * kbp + jb)))
                vstore(CC, o + jb, v)


@ordered
def _soft_missing_pairs_chunk(ci, X, sample_weight, c, G, A, kp, mp, chunk_size, labels,
                              log_prob, nk_all, M_all, obj_all, PL, SL, H1, H2):
    """Soft E-step of the full model with NaN on ``_soft``'s PAIRS_OBSERVED
    map: ``_soft_tiled_chunk``'s feature tiles (scores over the x~ and
    product features, moments over all), with each row's corrections
    (``_pairs_missing_scores``) added to its scores before the softmax and
    to the moments after it (``_pairs_missing_moments``, folded into M at
    the end).  Rows without NaN take the tiles alone."""
    start = ci * chunk_size
    stop = min(X.shape[0], start + chunk_size)
    nk, M, obj = nk_all[ci], M_all[ci], obj_all[ci]
    k = nk.shape[0]
    d = X.shape[1]
    m = _feature_count(_PAIRS_OBSERVED, d)
    m_score = d + d * (d + 1) // 2  # the o features are summed, not scored
    kbp = SL.shape[0] // d
    want_lp = log_prob.shape[0] == X.shape[0]
    n_blk = _SUB // _RB
    FT = _zeros64(n_blk * mp * _RB)
    ST = _zeros64(n_blk * kp * _RB)
    NKV = np.zeros(kp * 4)
    lane = np.zeros(40)
    lane[16] = 1.0
    miss = np.empty(_RB * d, dtype=np.int64)  # row r's missing coordinates at r * d
    qs = np.zeros(_RB, dtype=np.int64)
    bos = np.zeros(_RB, dtype=np.int64)
    Hm = np.empty(d * kbp)
    BS = np.empty(_RB * d * d * kbp)  # the block's -P_mm^-1, q * q * kbp a row
    US = np.empty(_RB * d * kbp)
    HU = np.empty(kbp)
    det = np.empty(kbp)
    piv = np.empty(d * kbp)
    rp = np.empty(kbp)
    RR = np.zeros(kbp)
    RU = np.empty(kbp)
    U1 = np.zeros(d * kbp)
    CC = np.zeros(d * d * kbp)
    M[:] = 0.0
    MV = np.zeros(M.shape[0] * 4)  # the moment tiles' lane sums (``_fold_lanes``)
    obj[:] = 0.0
    prefetch = X.strides[1] == X.itemsize
    for s0 in range(start, stop, _SUB):
        rows = min(_SUB, stop - s0)
        blocks = _stage_and_score(X, s0, rows, c, _PAIRS_OBSERVED, m, mp, m_score, G, A, kp,
                                  FT, ST)
        for b in range(blocks):
            i0 = s0 + b * _RB
            n_rows = min(_RB, stop - i0)
            if prefetch:
                prefetch_rows(X, i0 + _SUB, min(_RB, stop - i0 - _SUB))
            so = b * kp * _RB
            fo = b * mp * _RB
            bo = 0
            for r in range(n_rows):
                q = 0
                for a in range(d):  # without branches: NaN's are where the data put them
                    miss[r * d + q] = a
                    q += np.isnan(X[i0 + r, a])
                qs[r] = q
                bos[r] = bo
                if q > 0:
                    _pairs_missing_scores(FT, fo + r, d, k, kbp, PL, SL, H1, H2, ST, so + r,
                                          miss, r * d, q, Hm, BS, bo, US, r * d * kbp, HU,
                                          det, piv, rp)
                    bo += q * q * kbp
            _softmax_lanes(ST, so, k, kp, i0, n_rows, sample_weight, labels, log_prob,
                           want_lp, lane, NKV, obj, True)
            for r in range(n_rows):
                if qs[r] > 0 and sample_weight[i0 + r] != 0.0:
                    _pairs_missing_moments(FT, fo + r, d, k, kbp, ST, so + r, miss, r * d,
                                           qs[r], BS, bos[r], US, r * d * kbp, RR, RU, U1, CC)
        _moment_tile_lanes(FT, ST, blocks, m, kp, mp, MV, False)
    _fold_lanes(MV, M)
    _flush_log_total(lane, obj)
    for j in range(k):
        nk[j] = vhsum(vload(NKV, j * 4))
        for a in range(d):
            M[j * mp + a] += U1[a * kbp + j]
        q = d
        for a in range(d):
            for b in range(a):
                M[j * mp + q + b] += CC[(a * d + b) * kbp + j] + CC[(b * d + a) * kbp + j]
            M[j * mp + q + a] += CC[(a * d + a) * kbp + j]
            q += a + 1


def _estep_full_missing_soft(X, sample_weight, means, prec_chol, log_norm, chunk_size,
                             labels, log_prob, nk, nko, sx, sxx, obj):
    """The soft E-step of a full model with NaN on products (see ``_soft``)."""
    d = means.shape[1]
    L = ROW_BYTES // 8  # the components in the lanes of row vectors (``rload``)
    c, shifted, G, A, PL, SL, H1, H2, kbp = _soft.pairs_missing_operands(
        means, prec_chol, log_norm, L)
    m, k = G.shape
    Gp, Ap, kp, mp = _soft_tile_operands(G, A)
    M = np.empty((nk.shape[0], kp * mp))
    run_chunks(_soft_missing_pairs_chunk, nk.shape[0], X, sample_weight, c, Gp, Ap, kp, mp,
               chunk_size, labels, log_prob, nk, M, obj, PL, SL, H1, H2,
               work=2 * X.shape[0] * kp * mp)
    M = M.reshape(-1, kp, mp)[:, :k, :m]
    run_chunks(_pairs_statistics_chunk, nk.shape[0], M, shifted, nk, sx, sxx, work=M.size)
    P = d + d * (d + 1) // 2
    nko[...] = M[:, :, P:P + d]
    obj[:, 1] = 0.0


def estep_full_missing(X, sample_weight, means, prec_chol, log_norm, center, hard,
                       chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj):
    check_labels(X, labels, hard)
    if not hard and imputed.shape[0] != X.shape[0] and means.shape[1] <= _soft.PAIRS_MAX_D:
        _estep_full_missing_soft(X, sample_weight, means, prec_chol, log_norm, chunk_size,
                                 labels, log_prob, nk, nko, sx, sxx, obj)
        return
    _estep_dense_missing(X, sample_weight, means, prec_chol, log_norm, center, False,
                         hard, chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx,
                         obj)


def estep_tied_missing(X, sample_weight, means, prec_chol, log_norm, center, hard,
                       chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj):
    check_labels(X, labels, hard)
    k = means.shape[0]
    factors = np.ascontiguousarray(np.broadcast_to(prec_chol, (k,) + prec_chol.shape))
    _estep_dense_missing(X, sample_weight, means, factors, log_norm, center, True,
                         hard, chunk_size, labels, log_prob, imputed, nk, nko, sx,
                         sxx.reshape((sxx.shape[0], 1) + sxx.shape[1:]), obj)


@serial
def _estep_coordinate_missing_chunk(ci, X, sample_weight, means, precision, log_prec, var,
                                    log_norm, hard, chunk_size, labels, log_prob, imputed,
                                    nk_all, nko_all, sx_all, sxx_all, obj_all):
    """Diagonal and spherical covariances with NaN entries.

    Branch-free over the features: with o_a = 1 for an observed entry and 0
    for a missing one, and x_a read as 0 when missing, every term is
    multiplied by o_a or 1 - o_a, so the loops over features vectorize.
    ``log_prec`` = log(precision), ``var`` = 1 / precision.
    """
    start = ci * chunk_size
    stop = min(X.shape[0], start + chunk_size)
    nk, nko, sx, sxx, obj = nk_all[ci], nko_all[ci], sx_all[ci], sxx_all[ci], obj_all[ci]
    k, d = means.shape
    want_lp = log_prob.shape[0] == X.shape[0]
    want_imp = imputed.shape[0] == X.shape[0]
    half_log_2pi = 0.5 * np.log(2.0 * np.pi)
    xz = np.empty(d)
    obs = np.empty(d)
    lp = np.empty(k)
    maha = np.empty(k)
    nk[:] = 0.0
    nko[:] = 0.0
    sx[:] = 0.0
    sxx[:] = 0.0
    obj[:] = 0.0
    for i in range(start, stop):
        q = 0
        for a in range(d):
            v = X[i, a]
            if np.isnan(v):
                xz[a] = 0.0
                obs[a] = 0.0
                q += 1
            else:
                xz[a] = v
                obs[a] = 1.0
        for j in range(k):
            m = 0.0
            corr = 0.0
            for a in range(d):
                t = (xz[a] - means[j, a]) * obs[a]
                m += t * t * precision[j, a]
                corr += (1.0 - obs[a]) * log_prec[j, a]
            maha[j] = m
            lp[j] = log_norm[j] + q * half_log_2pi - 0.5 * corr - 0.5 * m
        best, ll, changed = _assign(i, lp, hard, labels, log_prob, want_lp)
        if want_imp:
            # the conditional mean of a missing coordinate is the component mean
            for a in range(d):
                if obs[a] == 1.0:
                    imputed[i, a] = xz[a]
                elif hard:
                    imputed[i, a] = means[best, a]
                else:
                    acc = 0.0
                    for j in range(k):
                        acc += lp[j] * means[j, a]
                    imputed[i, a] = acc
        obj[2] += changed
        w = sample_weight[i]
        if w == 0.0:
            continue
        obj[0] += w * ll
        if hard:
            obj[1] += w * maha[best]
        for j in range(k):
            r = w * lp[j] if not hard else (w if j == best else 0.0)
            if r == 0.0:
                continue
            nk[j] += r
            for a in range(d):
                o = obs[a]
                t = (xz[a] - means[j, a]) * o
                nko[j, a] += r * o
                sx[j, a] += r * t
                # a missing coordinate adds its conditional variance
                sxx[j, a] += r * t * t + r * (1.0 - o) * var[j, a]


def _coordinate_missing(X, sample_weight, means, precision, log_norm, hard, chunk_size,
                        labels, log_prob, imputed, nk, nko, sx, sxx, obj):
    """Diagonal / spherical E-step with NaN; ``precision`` (k, d) is 1 / variance.

    The soft E-step without imputation is the tiled soft path with the
    features (o x', o x'^2, o) (``_soft``).
    """
    if hard or imputed.shape[0] == X.shape[0]:
        run_chunks(_estep_coordinate_missing_chunk, nk.shape[0], X, sample_weight, means,
                   precision, np.log(precision), 1.0 / precision, log_norm, hard, chunk_size,
                   labels, log_prob, imputed, nk, nko, sx, sxx, obj,
                   work=3 * X.size * means.shape[0])
        return
    c, shifted, G, A = _soft.observed_operands(means, precision, log_norm)
    M = _soft_tiled(X, sample_weight, c, _OBSERVED, G, A, chunk_size, labels, log_prob, nk,
                    obj)
    _coordinate_statistics(M, shifted, nk, precision, False, nko, sx, sxx)
    obj[:, 1] = 0.0


def estep_diag_missing(X, sample_weight, means, prec_chol, log_norm, center, hard,
                       chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj):
    check_labels(X, labels, hard)
    _coordinate_missing(X, sample_weight, means, prec_chol ** 2, log_norm, hard,
                        chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx, obj)


def estep_spherical_missing(X, sample_weight, means, prec_chol, log_norm, center, hard,
                            chunk_size, labels, log_prob, imputed, nk, nko, sx, sxx,
                            obj):
    check_labels(X, labels, hard)
    precision = np.repeat((prec_chol ** 2)[:, None], means.shape[1], axis=1)
    per_feature = np.empty(sx.shape)  # summed into the table's (C, k) statistic
    _coordinate_missing(X, sample_weight, means, precision, log_norm, hard, chunk_size,
                        labels, log_prob, imputed, nk, nko, sx, per_feature, obj)
    np.sum(per_feature, axis=2, out=sxx)


@serial
def _estep_bernoulli_missing_chunk(ci, X, sample_weight, logit, log_norm, log_q, hard,
                                   chunk_size, labels, log_prob, nk_all, nko_all, sx_all,
                                   obj_all):
    start = ci * chunk_size
    stop = min(X.shape[0], start + chunk_size)
    nk, nko, sx, obj = nk_all[ci], nko_all[ci], sx_all[ci], obj_all[ci]
    k, d = logit.shape
    want_lp = log_prob.shape[0] == X.shape[0]
    xi = np.empty(d)
    lp = np.empty(k)
    nk[:] = 0.0
    nko[:] = 0.0
    sx[:] = 0.0
    obj[:] = 0.0
    for i in range(start, stop):
        for a in range(d):
            xi[a] = X[i, a]
        for j in range(k):
            s = log_norm[j]
            for a in range(d):
                if np.isnan(xi[a]):
                    s -= log_q[j, a]
                else:
                    s += xi[a] * logit[j, a]
            lp[j] = s
        best, ll, changed = _assign(i, lp, hard, labels, log_prob, want_lp)
        obj[2] += changed
        w = sample_weight[i]
        if w == 0.0:
            continue
        obj[0] += w * ll
        for j in range(k):
            r = w * lp[j] if not hard else (w if j == best else 0.0)
            if r == 0.0:
                continue
            nk[j] += r
            for a in range(d):
                if not np.isnan(xi[a]):
                    nko[j, a] += r
                    sx[j, a] += r * xi[a]


def estep_bernoulli_missing(X, sample_weight, logit, log_norm, log_q, hard, chunk_size,
                            labels, log_prob, nk, nko, sx, obj):
    check_labels(X, labels, hard)
    run_chunks(_estep_bernoulli_missing_chunk, nk.shape[0], X, sample_weight, logit,
               log_norm, log_q, hard, chunk_size, labels, log_prob, nk, nko, sx, obj,
               work=2 * X.size * logit.shape[0])


@serial
def _sqdist_missing_chunk(ci, X, centers, chunk_size, out):
    start = ci * chunk_size
    stop = min(X.shape[0], start + chunk_size)
    m, d = centers.shape
    for i in range(start, stop):
        for j in range(m):
            s = 0.0
            for a in range(d):
                xa = np.float64(X[i, a])
                if not np.isnan(xa):
                    t = xa - centers[j, a]
                    s += t * t
            out[i, j] = s


def sqdist_missing(X, centers, chunk_size, out):
    run_chunks(_sqdist_missing_chunk, -(-X.shape[0] // chunk_size), X, centers, chunk_size,
               out, work=X.size * centers.shape[0])


# =============================================================== validation
@strict
def _count_nonfinite_chunk(ci, X, chunk_size, out):
    """Chunk ci's NaN and infinite entries, counted one by one (IEEE
    comparisons: strict, no fast-math flag that assumes finite values)."""
    start = ci * chunk_size
    stop = min(X.shape[0], start + chunk_size)
    nan = 0
    inf = 0
    for i in range(start, stop):
        for a in range(X.shape[1]):
            x = X[i, a]
            if np.isnan(x):
                nan += 1
            elif np.isinf(x):
                inf += 1
    out[ci, 0] = nan
    out[ci, 1] = inf


@serial
def _count_nonfinite_flat_chunk(ci, x, chunk_size, X, out):
    """``_count_nonfinite_chunk`` for a C-ordered X, seen flat as ``x``: the
    entries of chunk ci are first summed times 0 in vectors of X's dtype.
    x * 0 is 0 for a finite x and NaN otherwise, and the vector intrinsics
    carry no fast-math flag, so a sum of 0 clears the chunk (the common
    case) in one pass at memory speed; else it is counted entry by entry."""
    d = X.shape[1]
    lo = ci * chunk_size * d
    hi = min(x.shape[0], lo + chunk_size * d)
    L = lanes(x)
    zero = vzero(x)
    acc0 = zero
    acc1 = zero
    t = lo
    while t + 2 * L <= hi:
        acc0 = vadd(acc0, vmul(vload(x, t), zero))
        acc1 = vadd(acc1, vmul(vload(x, t + L), zero))
        t += 2 * L
    total = np.float64(vhsum(vadd(acc0, acc1)))
    while t < hi:
        total = sadd(total, np.float64(x[t]) * 0.0)
        t += 1
    if total == 0.0:
        out[ci, 0] = 0.0
        out[ci, 1] = 0.0
    else:
        _count_nonfinite_chunk(ci, X, chunk_size, out)


def count_nonfinite(X, chunk_size, out):
    if X.flags.c_contiguous:
        run_chunks(_count_nonfinite_flat_chunk, out.shape[0], X.reshape(-1), chunk_size, X,
                   out, work=X.size)
    else:
        run_chunks(_count_nonfinite_chunk, out.shape[0], X, chunk_size, out, work=X.size)


# --------------------------------------------------------------- M-step
@strict
def _prec_chol_stack(C, out):
    """``prec_chol`` of the (m, d, d) stack C: for each matrix its Cholesky
    factor L row by row, then V = L^-1 column by column by forward
    substitution, and out[j] = V^T.  Serial and strict (IEEE arithmetic in
    the written order).  numpy's LAPACK factor and stacked products took
    0.18-0.36 ms an iteration for the tied and full models at (1e5, 16, 16) on
    a machine whose caches the E-step had just swept."""
    m, d, _ = C.shape
    L = np.zeros((d, d))
    V = np.zeros((d, d))
    for j in range(m):
        for a in range(d):
            for b in range(a + 1):
                s = C[j, a, b]
                for t in range(b):
                    s -= L[a, t] * L[b, t]
                if a == b:
                    if not s > 0.0:  # also NaN
                        return j
                    L[a, a] = np.sqrt(s)
                else:
                    L[a, b] = s / L[b, b]
        for b in range(d):
            V[b, b] = 1.0 / L[b, b]
            for a in range(b + 1, d):
                s = 0.0
                for t in range(b, a):
                    s += L[a, t] * V[t, b]
                V[a, b] = -s / L[a, a]
        for a in range(d):
            for b in range(a):
                out[j, a, b] = 0.0
            for b in range(a, d):
                out[j, a, b] = V[b, a]
    return -1


def prec_chol(covariances, out):
    return _prec_chol_stack(np.ascontiguousarray(covariances, dtype=np.float64), out)
