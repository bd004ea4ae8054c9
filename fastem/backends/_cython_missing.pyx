# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Missing-value kernels of the table, compiled (NaN entries of X).

Row by row: each row has its own set m of missing coordinates.  With the
precision Lambda_j of component j (see ``numpy_backend`` for the formulas),
the marginal density of the observed coordinates o uses the Schur complement
of Lambda_mm, the conditional mean E[x_m | x_o] = mu_m - Lambda_mm^-1
Lambda_mo (x_o - mu_o) fills the missing coordinates of the moments, and the
conditional covariance Lambda_mm^-1 is added to the second moment.  The
layout, chunking and calling conventions are those of ``_cython_kernels``.
"""

from cython.parallel cimport prange
from libc.math cimport isnan, log
from libc.stdlib cimport malloc, free
from libc.stdint cimport int64_t

import numpy as np

from fastem.backends._cython_common cimport (
    BLOCK, SUB, add_staged, assign_one, chunk_stop, fastem_block_scores, fastem_lower_moments,
    fastem_moments, finish_block, floating, flush_log_product, load_row, mean_of_means,
    stage_weights, zero)
from fastem.backends._cython_kernels import _check

cdef double HALF_LOG_2PI = 0.5 * log(2.0 * 3.141592653589793)



cdef extern from *:
    """
    #include <string.h>
    /* For one row with NaN (xz: 0 for a missing value, obs / miss: its 1/0
       indicators) and every component j:
         maha[j] = sum_a ((xz_a - mu_ja) obs_a)^2 p_ja,
         corr[j] = sum_a miss_a log p_ja,
       with meansT, precT and log_pT (d, k) transposed.  Four components at a
       time in vector registers (GCC/Clang vector extensions), summed in
       feature order, as the scalar loop for the components left over. */
    static void fastem_missing_coordinate_scores(const double* xz, const double* obs,
                                                 const double* miss, const double* meansT,
                                                 const double* precT, const double* log_pT,
                                                 long k, long d, double* maha,
                                                 double* corr) {
        long j0 = 0, j, a;
    #if defined(__GNUC__)
        typedef double v4 __attribute__((vector_size(32)));
        for (; j0 + 4 <= k; j0 += 4) {
            v4 m = {0.0, 0.0, 0.0, 0.0}, c = m, mu, p, lg, t;
            for (a = 0; a < d; a++) {
                memcpy(&mu, meansT + a * k + j0, sizeof mu);
                memcpy(&p, precT + a * k + j0, sizeof p);
                memcpy(&lg, log_pT + a * k + j0, sizeof lg);
                t = (xz[a] - mu) * obs[a];
                m += t * t * p;
                c += miss[a] * lg;
            }
            memcpy(maha + j0, &m, sizeof m);
            memcpy(corr + j0, &c, sizeof c);
        }
    #endif
        for (j = j0; j < k; j++) {
            double m1 = 0.0, c1 = 0.0, t1;
            for (a = 0; a < d; a++) {
                t1 = (xz[a] - meansT[a * k + j]) * obs[a];
                m1 += t1 * t1 * precT[a * k + j];
                c1 += miss[a] * log_pT[a * k + j];
            }
            maha[j] = m1;
            corr[j] = c1;
        }
    }
    """
    void fastem_missing_coordinate_scores(const double* xz, const double* obs,
                                          const double* miss, const double* meansT,
                                          const double* precT, const double* log_pT, long k,
                                          long d, double* maha, double* corr) nogil


cdef extern from *:
    """
    #include <string.h>
    /* y[j d + c] = -cw[j d + c] + sum_{a <= c} xcz_a W[a, j d + c]: one row
       (xcz = x - center, 0 where x is missing) whitened by every upper
       triangular U_j of W (d, k d) = [U_1 | ... | U_k].  Four columns of
       four components at a time in vector registers (one component at a
       time, the sum was one chain of dependent multiply-adds: about a fifth
       of the E-step at (1e5, 16, 8)), rows a < c + 4 only (the zeros of U_j
       skipped), summed in feature order. */
    static void fastem_whiten_row(const double* xcz, const double* W, const double* cw,
                                  long k, long d, double* y) {
        long kd = k * d, j = 0, q, a, e, q0 = 0;
    #if defined(__GNUC__)
        typedef double v4 __attribute__((vector_size(32)));
        q0 = d / 4 * 4;
        for (; j + 4 <= k; j += 4) {
            for (q = 0; q < q0; q += 4) {
                v4 s0, s1, s2, s3, u;
                e = j * d + q;
                memcpy(&s0, cw + e, sizeof s0);
                memcpy(&s1, cw + e + d, sizeof s1);
                memcpy(&s2, cw + e + 2 * d, sizeof s2);
                memcpy(&s3, cw + e + 3 * d, sizeof s3);
                s0 = -s0;
                s1 = -s1;
                s2 = -s2;
                s3 = -s3;
                for (a = 0; a < q + 4; a++) {
                    const double* w = W + a * kd + e;
                    double x = xcz[a];
                    memcpy(&u, w, sizeof u);
                    s0 += x * u;
                    memcpy(&u, w + d, sizeof u);
                    s1 += x * u;
                    memcpy(&u, w + 2 * d, sizeof u);
                    s2 += x * u;
                    memcpy(&u, w + 3 * d, sizeof u);
                    s3 += x * u;
                }
                memcpy(y + e, &s0, sizeof s0);
                memcpy(y + e + d, &s1, sizeof s1);
                memcpy(y + e + 2 * d, &s2, sizeof s2);
                memcpy(y + e + 3 * d, &s3, sizeof s3);
            }
        }
        for (; j < k; j++) {
            for (q = 0; q < q0; q += 4) {
                v4 acc, u;
                e = j * d + q;
                memcpy(&acc, cw + e, sizeof acc);
                acc = -acc;
                for (a = 0; a < q + 4; a++) {
                    memcpy(&u, W + a * kd + e, sizeof u);
                    acc += xcz[a] * u;
                }
                memcpy(y + e, &acc, sizeof acc);
            }
        }
    #endif
        for (j = 0; j < k; j++) {
            for (q = q0; q < d; q++) {
                double t = -cw[j * d + q];
                for (a = 0; a <= q; a++) {
                    t += xcz[a] * W[a * kd + j * d + q];
                }
                y[j * d + q] = t;
            }
        }
    }

    /* The terms of a row with q missing coordinates miss[:q] (observed
       obs[:no]), for every component j (arrays with j innermost, stride k):
         G[s, j] = sum_t PL[miss_s, obs_t, j] dev[obs_t, j]   (g = (Lambda delta)_m),
         Z[s, j] = -sum_t B[s, t, j] G[t, j]                  (Lambda_mm^-1 g),
         QC[j] = sum_s G[s, j] Z[s, j]                        (g^T Lambda_mm^-1 g),
       PL (d, d, k) and B (d, d, k) (rows s, t < q used).  Four components at
       a time, the sums in vector registers (kept in memory, every term had
       been a load and a store), in the order of t and s. */
    static void fastem_schur_terms(const double* PL, const double* dev, const double* B,
                                   const Py_ssize_t* miss, long q, const Py_ssize_t* obs,
                                   long no, long d, long k, double* G, double* Z,
                                   double* QC) {
        long j0 = 0, j, s, t;
    #if defined(__GNUC__)
        typedef double v4 __attribute__((vector_size(32)));
        for (; j0 + 4 <= k; j0 += 4) {
            v4 acc, u, v, qc = {0.0, 0.0, 0.0, 0.0};
            for (s = 0; s < q; s++) {
                const double* pl = PL + miss[s] * d * k + j0;
                acc = qc * 0.0;
                for (t = 0; t < no; t++) {
                    memcpy(&u, pl + obs[t] * k, sizeof u);
                    memcpy(&v, dev + obs[t] * k + j0, sizeof v);
                    acc += u * v;
                }
                memcpy(G + s * k + j0, &acc, sizeof acc);
            }
            for (s = 0; s < q; s++) {
                acc = qc * 0.0;
                for (t = 0; t < q; t++) {
                    memcpy(&u, B + (s * d + t) * k + j0, sizeof u);
                    memcpy(&v, G + t * k + j0, sizeof v);
                    acc -= u * v;
                }
                memcpy(Z + s * k + j0, &acc, sizeof acc);
                memcpy(&v, G + s * k + j0, sizeof v);
                qc += v * acc;
            }
            memcpy(QC + j0, &qc, sizeof qc);
        }
    #endif
        for (j = j0; j < k; j++) {
            double acc, qc = 0.0;
            for (s = 0; s < q; s++) {
                acc = 0.0;
                for (t = 0; t < no; t++) {
                    acc += PL[(miss[s] * d + obs[t]) * k + j] * dev[obs[t] * k + j];
                }
                G[s * k + j] = acc;
            }
            for (s = 0; s < q; s++) {
                acc = 0.0;
                for (t = 0; t < q; t++) {
                    acc -= B[(s * d + t) * k + j] * G[t * k + j];
                }
                Z[s * k + j] = acc;
                qc += G[s * k + j] * acc;
            }
            QC[j] = qc;
        }
    }
    """
    void fastem_whiten_row(const double* xcz, const double* W, const double* cw, long k,
                           long d, double* y) nogil
    void fastem_schur_terms(const double* PL, const double* dev, const double* B,
                            const Py_ssize_t* miss, long q, const Py_ssize_t* obs, long no,
                            long d, long k, double* G, double* Z, double* QC) nogil


# ------------------------------------------------------------------ full, tied
cdef void _sweep_blocks(const double* PL, Py_ssize_t d, Py_ssize_t k,
                        const Py_ssize_t* miss_idx, Py_ssize_t q, double* B, Py_ssize_t bs,
                        double* det, double* piv, double* rp) noexcept nogil:
    """B = -Lambda_mm^-1 for every component j, m = miss_idx[:q]; det[j] =
    det Lambda_mm and piv[p * k + j] its p-th pivot.

    ``PL`` holds the precisions with the component innermost: entry (a, b)
    of component j is PL[(a * d + b) * k + j].  The missing set is the row's,
    shared by the components, so the sweep operator is applied to each pivot
    in turn for all components at once (loops over j innermost); entry (s, t)
    of component j is B[(s * bs + t) * k + j].  A principal block of a
    positive definite matrix needs no pivoting.
    """
    cdef Py_ssize_t s, t, p, j, src, dst, pp, sp, pt, st, ps
    for s in range(q):
        for t in range(q):
            src = (miss_idx[s] * d + miss_idx[t]) * k
            dst = (s * bs + t) * k
            for j in range(k):
                B[dst + j] = PL[src + j]
    for j in range(k):
        det[j] = 1.0
    for p in range(q):
        pp = (p * bs + p) * k
        for j in range(k):
            piv[p * k + j] = B[pp + j]
            det[j] *= B[pp + j]
            rp[j] = 1.0 / B[pp + j]
        for s in range(q):
            if s == p:
                continue
            sp = (s * bs + p) * k
            for t in range(q):
                if t == p:
                    continue
                st = (s * bs + t) * k
                pt = (p * bs + t) * k
                for j in range(k):
                    B[st + j] = B[st + j] - B[sp + j] * B[pt + j] * rp[j]
        for s in range(q):
            if s == p:
                continue
            sp = (s * bs + p) * k
            ps = (p * bs + s) * k
            for j in range(k):
                B[sp + j] = B[sp + j] * rp[j]
                B[ps + j] = B[ps + j] * rp[j]
        for j in range(k):
            B[pp + j] = -rp[j]


cdef enum:
    # rows whose soft second moments _dense_chunk stages for the moment tile:
    # their k stat vectors stay near the core
    DENSE_SUB = 32


cdef void _dense_moments(const double* DS, const double* RS, Py_ssize_t rows, Py_ssize_t k,
                         Py_ssize_t dp, Py_ssize_t d, bint tied, double* ZS,
                         double* SA) noexcept nogil:
    """SA[j] (tied: SA[0]) += sum_i RS[i, j] DS[j, i] DS[j, i]^T, lower triangle,
    over the ``rows`` staged rows, through ``fastem_lower_moments``."""
    cdef Py_ssize_t i, j, a
    cdef double r
    cdef const double* D
    for j in range(k):
        D = DS + j * DENSE_SUB * dp
        r = 0.0
        for i in range(rows):
            r += RS[i * k + j]
        if r == 0.0:  # no weight here (the weights are never negative)
            continue
        for i in range(rows):
            r = RS[i * k + j]
            for a in range(dp):
                ZS[i * dp + a] = r * D[i * dp + a]
        fastem_lower_moments(D, ZS, rows, dp, d, SA + (0 if tied else j) * dp * dp)


cdef int _dense_chunk(const floating* X, Py_ssize_t s0, Py_ssize_t s1,
                      const double* sample_weight, const double* means,
                      const double* factors, const double* precisions, const double* W,
                      const double* cw, const double* log_norm, const double* center,
                      bint tied, bint hard, Py_ssize_t start, Py_ssize_t stop,
                      Py_ssize_t k, Py_ssize_t d, int64_t* labels, double* log_prob,
                      double* imputed, double* nk, double* nko, double* sx, double* sxx,
                      double* obj) noexcept nogil:
    """Full (``tied`` false) or tied covariances with NaN entries.

    ``factors`` (k, d, d) upper precision factors U_j (tied: k copies of U),
    ``precisions`` (k, d, d) = U_j U_j^T, ``W``, ``cw`` as in ``estep_full``.
    The whitened rows (x~ - mu_j) U_j of all components are one row-times-W
    product with the missing coordinates set to ``center``, corrected by the
    q rows of U_j that belong to the missing coordinates (a table of
    (mu_ja - c_a) U_j[a, :], every component in one row per coordinate a).
    With delta_m = 0 and g = (Lambda_j delta)_m, Sigma_oo^-1 = Lambda_oo -
    Lambda_om Lambda_mm^-1 Lambda_mo gives the quadratic form
    |delta U_j|^2 - g^T Lambda_mm^-1 g, and E[x_m | x_o] - mu_m =
    -Lambda_mm^-1 g.  Everything that depends on the missing set is computed
    once a row for all components, component innermost: Lambda_mm^-1 and its
    determinant (``_sweep_blocks``), g, Lambda_mm^-1 g, g^T Lambda_mm^-1 g and
    the sum of r Lambda_mm^-1.  Tied: ``sxx`` is one (d, d) scatter about
    ``center``.
    """
    cdef double prod = 1.0  # deferred logs of row totals (assign_one)
    cdef Py_ssize_t kd = k * d, dd = d * d, ddk = d * d * k
    cdef Py_ssize_t i, a, b, e, j, s, t, q, no, ms, best, target, o1, o2
    cdef Py_ssize_t dp = (d + 7) // 8 * 8, staged = 0, n_sa = 1 if tied else k
    cdef double xa, v, quad, acc, w, r, u
    cdef double* row
    cdef Py_ssize_t stage_size = (0 if hard else
                                  k * DENSE_SUB * dp + DENSE_SUB * dp + DENSE_SUB * k
                                  + n_sa * dp * dp)
    cdef double* buf = <double*> malloc(
        (5 * d + 2 * kd + 2 * k + d * kd + 3 * ddk + k * d + 8 * k + 5 * d * k + 1
         + stage_size) * sizeof(double))
    cdef Py_ssize_t* idx = <Py_ssize_t*> malloc((2 * d + 1) * sizeof(Py_ssize_t))
    if buf == NULL or idx == NULL:
        free(buf)
        free(idx)
        return -1
    cdef Py_ssize_t* miss_idx = idx
    cdef Py_ssize_t* obs_idx = idx + d
    cdef double* xi = buf
    cdef double* xz = xi + d             # x with zeros where missing
    cdef double* observed = xz + d       # 1 where observed, else 0
    cdef double* ybase = observed + d
    cdef double* stat = ybase + d
    cdef double* yall = stat + d
    cdef double* dhat = yall + kd
    cdef double* lp = dhat + kd
    cdef double* maha = lp + k
    cdef double* corr = maha + k         # (d, kd): the whitening's correction
    cdef double* PL = corr + d * kd      # precisions, component innermost
    cdef double* B = PL + ddk            # -Lambda_mm^-1 per component
    cdef double* cond_sum = B + ddk      # sum of r Lambda_mm^-1 (lower triangle)
    cdef double* half_log_lam = cond_sum + ddk  # (k, d): half log Lambda_j,aa
    cdef double* det = half_log_lam + k * d
    cdef double* rp = det + k
    cdef double* half_log_det = rp + k
    cdef double* QC = half_log_det + k   # g^T Lambda_mm^-1 g
    cdef double* rr = QC + k             # the row's r_j
    cdef double* piv = rr + k            # (d, k) from here on
    cdef double* mean_lanes = piv + d * k
    cdef double* dev = mean_lanes + d * k  # x_a - mu_ja, observed a
    cdef double* G = dev + d * k         # g = (Lambda_j delta_j)_m
    cdef double* Z = G + d * k           # Lambda_mm^-1 g
    # soft: staged rows' stat vectors (k, DENSE_SUB, dp), scratch, their r
    # (DENSE_SUB, k), and the second moments (tied: 1, else k) x (dp, dp)
    cdef double* DS = Z + d * k
    cdef double* ZS = DS + k * DENSE_SUB * dp
    cdef double* RS = ZS + DENSE_SUB * dp
    cdef double* SA = RS + DENSE_SUB * k
    if not hard:
        zero(DS, stage_size)  # the padding features stay 0
    zero(nk, k)
    zero(nko, kd)
    zero(sx, kd)
    zero(sxx, dd if tied else k * dd)
    zero(obj, 3)
    zero(cond_sum, ddk)
    zero(corr, d * kd)
    for a in range(d):
        for j in range(k):
            v = means[j * d + a] - center[a]
            for b in range(a, d):
                corr[a * kd + j * d + b] = v * factors[j * dd + a * d + b]
            mean_lanes[a * k + j] = means[j * d + a]
            half_log_lam[j * d + a] = 0.5 * log(precisions[j * dd + a * d + a])
        for b in range(d):
            for j in range(k):
                PL[(a * d + b) * k + j] = precisions[j * dd + a * d + b]
    for i in range(start, stop):
        load_row(X, s0, s1, i, d, xi)
        q = 0   # missing coordinates miss_idx[:q], ascending
        no = 0  # observed ones obs_idx[:no]
        for a in range(d):
            if isnan(xi[a]):
                miss_idx[q] = a
                q += 1
                observed[a] = 0.0
                xz[a] = 0.0
            else:
                obs_idx[no] = a
                no += 1
                observed[a] = 1.0
                xz[a] = xi[a]
        # (x~ - mu_j) U_j for all j, with x~ = x and x~_m = center_m
        if tied:
            for b in range(d):
                ybase[b] = 0.0
            for t in range(no):
                a = obs_idx[t]
                xa = xi[a] - center[a]
                for b in range(a, d):
                    ybase[b] += xa * factors[a * d + b]
            for j in range(k):
                for b in range(d):
                    yall[j * d + b] = ybase[b] - cw[j * d + b]
        else:
            # in vector registers, skipping the triangular factors' zeros (was:
            # read-modify-write loops over yall, a third of this E-step)
            for a in range(d):
                ybase[a] = xi[a] - center[a] if observed[a] != 0.0 else 0.0
            fastem_whiten_row(ybase, W, cw, k, d, yall)
        # add (mu_jm - c_m) U_j[m, :] for each missing m, all j at once
        for s in range(q):
            row = corr + miss_idx[s] * kd
            for e in range(kd):
                yall[e] += row[e]
        if q > 0:
            _sweep_blocks(PL, d, k, miss_idx, q, B, d, det, piv, rp)
            for j in range(k):
                if q == 1:
                    half_log_det[j] = half_log_lam[j * d + miss_idx[0]]
                elif det[j] > 1e-280 and det[j] < 1e280:
                    half_log_det[j] = 0.5 * log(det[j])
                else:  # out of range: the pivots' logs
                    acc = 0.0
                    for t in range(q):
                        acc += log(piv[t * k + j])
                    half_log_det[j] = 0.5 * acc
            for t in range(no):
                a = obs_idx[t]
                for j in range(k):
                    dev[a * k + j] = xz[a] - mean_lanes[a * k + j]
            fastem_schur_terms(PL, dev, B, miss_idx, q, obs_idx, no, d, k, G, Z, QC)
        for j in range(k):
            quad = 0.0
            for b in range(j * d, (j + 1) * d):
                quad += yall[b] * yall[b]
            for a in range(d):
                dhat[j * d + a] = (xz[a] - means[j * d + a]) * observed[a]
            lp[j] = log_norm[j]
            if q > 0:
                quad -= QC[j]
                for s in range(q):
                    dhat[j * d + miss_idx[s]] = -Z[s * k + j]
                lp[j] += q * HALF_LOG_2PI - half_log_det[j]
            maha[j] = quad
            lp[j] -= 0.5 * quad
        w = assign_one(i, lp, k, hard, sample_weight, labels, log_prob, &best, &prod, obj)
        if imputed != NULL:
            for a in range(d):
                imputed[i * d + a] = xi[a]
            for s in range(q):
                ms = miss_idx[s]
                if hard:
                    imputed[i * d + ms] = means[best * d + ms] + dhat[best * d + ms]
                else:
                    acc = 0.0
                    for j in range(k):
                        acc += lp[j] * (means[j * d + ms] + dhat[j * d + ms])
                    imputed[i * d + ms] = acc
        if w == 0.0:
            continue
        if hard:
            obj[1] += w * maha[best]
        for j in range(k):
            if hard:
                r = w if j == best else 0.0
            else:
                r = w * lp[j]
            rr[j] = r
            if r == 0.0:
                continue
            nk[j] += r
            for a in range(d):
                nko[j * d + a] += r * observed[a]
                sx[j * d + a] += r * dhat[j * d + a]
                # tied: the scatter is taken about the common center
                stat[a] = dhat[j * d + a] + (means[j * d + a] - center[a] if tied else 0.0)
            if not hard:
                # staged: the moment tile adds DENSE_SUB rows at once
                row = DS + (j * DENSE_SUB + staged) * dp
                for a in range(d):
                    row[a] = stat[a]
                continue
            target = 0 if tied else j
            # the lower triangle, rows rounded up to whole vectors of 4 (the
            # M-step reads the lower triangle only): no scalar remainders
            for a in range(d):
                u = r * stat[a]
                row = sxx + target * dd + a * d
                for b in range(min(d, (a // 4 + 1) * 4)):
                    row[b] += u * stat[b]
        if not hard:
            for j in range(k):
                RS[staged * k + j] = rr[j]
            staged += 1
            if staged == DENSE_SUB:
                _dense_moments(DS, RS, staged, k, dp, d, tied, ZS, SA)
                staged = 0
        # r_j Lambda_j,mm^-1 for every j, lower triangle (m is ascending)
        for s in range(q):
            for t in range(s + 1):
                o1 = (miss_idx[s] * d + miss_idx[t]) * k
                o2 = (s * d + t) * k
                for j in range(k):
                    cond_sum[o1 + j] -= rr[j] * B[o2 + j]
    if not hard:
        if staged > 0:
            _dense_moments(DS, RS, staged, k, dp, d, tied, ZS, SA)
        for t in range(n_sa):
            for a in range(d):
                for b in range(a + 1):
                    sxx[t * dd + a * d + b] = SA[(t * dp + a) * dp + b]
    for a in range(d):
        for b in range(a + 1):
            if tied:  # one covariance: the components' sum
                acc = 0.0
                for j in range(k):
                    acc += cond_sum[(a * d + b) * k + j]
                sxx[a * d + b] += acc
            else:
                for j in range(k):
                    sxx[j * dd + a * d + b] += cond_sum[(a * d + b) * k + j]
    flush_log_product(&prod, obj)
    free(buf)
    free(idx)
    return 0


def estep_dense_missing(const floating[:, :] X, const double[::1] sample_weight,
                        const double[::1] means, const double[::1] factors,
                        const double[::1] precisions, const double[::1] W,
                        const double[::1] cw, const double[::1] log_norm,
                        const double[::1] center, bint tied, bint hard,
                        Py_ssize_t chunk_size, int64_t[::1] labels, double[::1] log_prob,
                        double[::1] imputed, double[::1] nk, double[::1] nko,
                        double[::1] sx, double[::1] sxx, double[::1] obj, Py_ssize_t k,
                        int num_threads):
    """Full or tied E-step with NaN; ``sxx`` is (C, k, d, d) or, tied, (C, d, d)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1]
    cdef Py_ssize_t n_chunks = obj.shape[0] // 3, c, start
    cdef Py_ssize_t s0 = X.strides[0] // sizeof(floating), s1 = X.strides[1] // sizeof(floating)
    cdef Py_ssize_t sxx_slot = d * d if tied else k * d * d
    cdef const floating* xp = &X[0, 0]
    cdef double* lpp = &log_prob[0] if log_prob.shape[0] == n * k and n > 0 else NULL
    cdef int64_t* lbp = &labels[0] if labels.shape[0] == n and n > 0 else NULL
    cdef double* imp = &imputed[0] if imputed.shape[0] == n * d and n > 0 else NULL
    cdef int[::1] status = np.zeros(max(n_chunks, 1), dtype=np.intc)
    with nogil:
        for c in prange(n_chunks, schedule="static", num_threads=num_threads):
            start = c * chunk_size
            status[c] = _dense_chunk(xp, s0, s1, &sample_weight[0], &means[0],
                                     &factors[0], &precisions[0], &W[0], &cw[0],
                                     &log_norm[0], &center[0], tied, hard, start,
                                     chunk_stop(c, chunk_size, n), k, d, lbp, lpp,
                                     imp, &nk[c * k], &nko[c * k * d], &sx[c * k * d],
                                     &sxx[c * sxx_slot], &obj[c * 3])
    _check(status)


# ------------------------------------------------------------------ full, soft, on products
cdef extern from *:
    """
    #include <string.h>
    /* The per-row terms of the soft full E-step with NaN on products (see
       numba_backend._pairs_missing_scores and _moments), the components the
       lanes of arrays with the component innermost (kbp lanes, a multiple
       of 4): for the row's features x~ (d, 0 where missing) and its q
       missing coordinates miss[:q], with B = -P_mm^-1 (stride q) and SL the
       lanes of P_j mu'_j:
         H[s, j] = sum_a PL[miss_s, a, j] x~_a - SL[miss_s, j]  (h = (P e)_m),
         U[s, j] = sum_t B[s, t, j] H[t, j]  (E[x_m | x_o] - c_m),
         HU[j] = sum_s H[s, j] U[s, j]       (-h^T P_mm^-1 h). */
    static void fastem_pairs_missing_terms(const double* xr, long d, long kbp,
                                           const double* PL, const double* SL,
                                           const Py_ssize_t* miss, long q, const double* B,
                                           double* H, double* U, double* HU) {
        typedef double v4 __attribute__((vector_size(32)));
        long a, s, t, jb;
        v4 acc, u, v, hu;
        for (s = 0; s < q; s++) {
            const double* pl = PL + miss[s] * d * kbp;
            for (jb = 0; jb < kbp; jb += 4) {
                memcpy(&u, SL + miss[s] * kbp + jb, sizeof u);
                acc = -u;
                for (a = 0; a < d; a++) {
                    memcpy(&u, pl + a * kbp + jb, sizeof u);
                    acc += u * xr[a];
                }
                memcpy(H + s * kbp + jb, &acc, sizeof acc);
            }
        }
        for (jb = 0; jb < kbp; jb += 4) {
            hu = (v4){0.0, 0.0, 0.0, 0.0};
            for (s = 0; s < q; s++) {
                acc = (v4){0.0, 0.0, 0.0, 0.0};
                for (t = 0; t < q; t++) {
                    memcpy(&u, B + (s * q + t) * kbp + jb, sizeof u);
                    memcpy(&v, H + t * kbp + jb, sizeof v);
                    acc += u * v;
                }
                memcpy(U + s * kbp + jb, &acc, sizeof acc);
                memcpy(&v, H + s * kbp + jb, sizeof v);
                hu += v * acc;
            }
            memcpy(HU + jb, &hu, sizeof hu);
        }
    }

    /* The row's corrections of the moments, RR[j] its w r_j: U1[m, j] +=
       r u_m and, into CC (d, d, kbp), r u_m x~_a at (m, a) for every a
       (x~_a = 0 where missing) and r (u_m u_m' - B_mm') at (m, m'), m' <= m;
       CC's (a, b) and (b, a) add up to the lower triangle's (a, b). */
    static void fastem_pairs_missing_moments(const double* xr, long d, long kbp,
                                             const double* RR, const Py_ssize_t* miss, long q,
                                             const double* B, const double* U, double* U1,
                                             double* CC) {
        typedef double v4 __attribute__((vector_size(32)));
        long a, s, t, jb;
        v4 r, ru, u, c;
        for (s = 0; s < q; s++) {
            double* row = CC + miss[s] * d * kbp;
            for (jb = 0; jb < kbp; jb += 4) {
                memcpy(&r, RR + jb, sizeof r);
                memcpy(&u, U + s * kbp + jb, sizeof u);
                ru = r * u;
                memcpy(&c, U1 + miss[s] * kbp + jb, sizeof c);
                c += ru;
                memcpy(U1 + miss[s] * kbp + jb, &c, sizeof c);
                for (a = 0; a < d; a++) {
                    memcpy(&c, row + a * kbp + jb, sizeof c);
                    c += ru * xr[a];
                    memcpy(row + a * kbp + jb, &c, sizeof c);
                }
                for (t = 0; t <= s; t++) {
                    double* o = row + miss[t] * kbp + jb;
                    memcpy(&c, o, sizeof c);
                    memcpy(&u, U + t * kbp + jb, sizeof u);
                    c += ru * u;
                    memcpy(&u, B + (s * q + t) * kbp + jb, sizeof u);
                    c -= r * u;
                    memcpy(o, &c, sizeof c);
                }
            }
        }
    }
    """
    void fastem_pairs_missing_terms(const double* xr, long d, long kbp, const double* PL,
                                    const double* SL, const Py_ssize_t* miss, long q,
                                    const double* B, double* H, double* U, double* HU) nogil
    void fastem_pairs_missing_moments(const double* xr, long d, long kbp, const double* RR,
                                      const Py_ssize_t* miss, long q, const double* B,
                                      const double* U, double* U1, double* CC) nogil


cdef int _pairs_chunk(const floating* X, Py_ssize_t s0, Py_ssize_t s1,
                      const double* sample_weight, const double* c, const double* GT,
                      const double* A, const double* PL, const double* SL, const double* H1,
                      const double* H2, Py_ssize_t kbp, Py_ssize_t start, Py_ssize_t stop,
                      Py_ssize_t k, Py_ssize_t d, Py_ssize_t mp, int64_t* labels,
                      double* log_prob, double* nk, double* mom, double* obj) noexcept nogil:
    """Soft full E-step with NaN on ``_soft``'s PAIRS_OBSERVED features, as
    numba's ``_soft_missing_pairs_chunk``: four rows at a time, their features
    x~, x~_a x~_b (b <= a) and o staged, their scores A + F GT
    (``fastem_block_scores``, GT zero on the o features), each row with NaN's
    corrections added to its scores before the softmax and to the moments
    after it (``fastem_pairs_missing_terms`` and ``_moments``); the features'
    moments through ``fastem_moments`` once ``SUB`` rows are staged."""
    cdef double prod = 1.0  # deferred logs of row totals (finish_block)
    cdef Py_ssize_t P = d * (d + 1) // 2
    cdef Py_ssize_t m = 2 * d + P
    cdef Py_ssize_t ib, i0, n_rows, r, a, b, q, j, t, bo, sub = 0
    cdef double x, hld, tot, base
    cdef const floating* xr
    cdef double* row
    cdef Py_ssize_t best_of[BLOCK]
    cdef Py_ssize_t qs[BLOCK]
    cdef Py_ssize_t bos[BLOCK]
    cdef Py_ssize_t* miss = <Py_ssize_t*> malloc(BLOCK * d * sizeof(Py_ssize_t))
    cdef Py_ssize_t dk = d * kbp
    cdef double* buf = <double*> malloc(
        (2 * BLOCK * k + SUB * mp + SUB * k + 3 * dk + BLOCK * d * dk + BLOCK * dk
         + 4 * kbp + d * dk) * sizeof(double))
    if buf == NULL or miss == NULL:
        free(buf)
        free(miss)
        return -1
    cdef double* lp = buf
    cdef double* wr = lp + BLOCK * k
    cdef double* F = wr + BLOCK * k
    cdef double* WRS = F + SUB * mp
    cdef double* H = WRS + SUB * k
    cdef double* piv = H + dk
    cdef double* U1 = piv + dk         # sum of r u (d, kbp)
    cdef double* BS = U1 + dk          # the block's -P_mm^-1, q * q * kbp a row
    cdef double* US = BS + BLOCK * d * dk
    cdef double* HU = US + BLOCK * dk
    cdef double* det = HU + kbp
    cdef double* rp = det + kbp
    cdef double* RR = rp + kbp
    cdef double* CC = RR + kbp         # (d, d, kbp), see fastem_pairs_missing_moments
    zero(F, SUB * mp)  # the padding features stay 0
    zero(RR, kbp)
    zero(U1, dk)
    zero(CC, d * dk)
    zero(mom, k * mp)
    zero(nk, k)
    zero(obj, 3)
    base = 0.5 * log(2.0 * 3.141592653589793)
    for ib in range((stop - start + BLOCK - 1) // BLOCK):
        i0 = start + ib * BLOCK
        n_rows = stop - i0 if stop - i0 < BLOCK else BLOCK
        for r in range(BLOCK):
            row = F + (sub + r) * mp
            qs[r] = 0
            if r >= n_rows:  # rows past the end (weight 0) keep finite features: 0
                for a in range(m):
                    row[a] = 0.0
                continue
            xr = X + (i0 + r) * s0
            q = 0
            for a in range(d):
                x = xr[a * s1]
                miss[r * d + q] = a
                if isnan(x):
                    q += 1
                    row[a] = 0.0
                    row[d + P + a] = 0.0
                else:
                    row[a] = x - c[a]
                    row[d + P + a] = 1.0
            qs[r] = q
            t = d
            for a in range(d):
                for b in range(a + 1):
                    row[t + b] = row[a] * row[b]
                t += a + 1
        fastem_block_scores(F + sub * mp, GT, A, k, mp, lp)
        bo = 0
        for r in range(n_rows):
            q = qs[r]
            bos[r] = bo
            if q == 0:
                continue
            _sweep_blocks(PL, d, kbp, miss + r * d, q, BS + bo, q, det, piv, rp)
            fastem_pairs_missing_terms(F + (sub + r) * mp, d, kbp, PL, SL, miss + r * d, q,
                                       BS + bo, H, US + r * dk, HU)
            for j in range(k):
                if q == 1:
                    hld = H1[miss[r * d] * kbp + j]
                elif q == 2:
                    hld = H2[(miss[r * d + 1] * d + miss[r * d]) * kbp + j]
                elif det[j] > 1e-280 and det[j] < 1e280:
                    hld = 0.5 * log(det[j])
                else:  # out of range: the pivots' logs
                    tot = 0.0
                    for t in range(q):
                        tot = tot + log(piv[t * kbp + j])
                    hld = 0.5 * tot
                # h^T P_mm^-1 h = -HU
                lp[r * k + j] += q * base - hld - 0.5 * HU[j]
            bo += q * q * kbp
        finish_block(i0, n_rows, k, lp, NULL, False, sample_weight, labels, log_prob, wr,
                     best_of, &prod, obj)
        for r in range(n_rows):
            if qs[r] == 0 or best_of[r] < 0:
                continue
            for j in range(k):
                RR[j] = wr[r * k + j]
            fastem_pairs_missing_moments(F + (sub + r) * mp, d, kbp, RR, miss + r * d, qs[r],
                                         BS + bos[r], US + r * dk, U1, CC)
        stage_weights(wr, sub, k, WRS, nk)
        sub = add_staged(F, WRS, sub + BLOCK, mp, k, mom)
    if sub > 0:
        fastem_moments(F, WRS, sub, mp, k, mom)
    flush_log_product(&prod, obj)
    for j in range(k):
        for a in range(d):
            mom[j * mp + a] += U1[a * kbp + j]
        t = d
        for a in range(d):
            for b in range(a):
                mom[j * mp + t + b] += CC[(a * d + b) * kbp + j] + CC[(b * d + a) * kbp + j]
            mom[j * mp + t + a] += CC[(a * d + a) * kbp + j]
            t += a + 1
    free(buf)
    free(miss)
    return 0


def estep_pairs_missing(const floating[:, :] X, const double[::1] sample_weight,
                        const double[::1] c, const double[::1] GT, const double[::1] A,
                        const double[::1] PL, const double[::1] SL, const double[::1] H1,
                        const double[::1] H2, Py_ssize_t kbp, Py_ssize_t chunk_size,
                        int64_t[::1] labels, double[::1] log_prob, double[::1] nk,
                        double[::1] mom, double[::1] obj, Py_ssize_t k, Py_ssize_t mp,
                        int num_threads):
    """Soft full E-step with NaN on products (``_soft.pairs_missing_operands``);
    ``mom`` receives the corrected moments (C, k, mp) about c."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1]
    cdef Py_ssize_t n_chunks = obj.shape[0] // 3, ch, start
    cdef Py_ssize_t s0 = X.strides[0] // sizeof(floating), s1 = X.strides[1] // sizeof(floating)
    cdef const floating* xp = &X[0, 0]
    cdef double* lpp = &log_prob[0] if log_prob.shape[0] == n * k and n > 0 else NULL
    cdef int64_t* lbp = &labels[0] if labels.shape[0] == n and n > 0 else NULL
    cdef int[::1] status = np.zeros(max(n_chunks, 1), dtype=np.intc)
    if kbp % 4 or kbp < k or mp < 2 * d + d * (d + 1) // 2:
        raise ValueError("kbp must be a multiple of 4 and at least k, mp at least the features")
    with nogil:
        for ch in prange(n_chunks, schedule="static", num_threads=num_threads):
            start = ch * chunk_size
            status[ch] = _pairs_chunk(xp, s0, s1, &sample_weight[0], &c[0], &GT[0], &A[0],
                                      &PL[0], &SL[0], &H1[0], &H2[0], kbp, start,
                                      chunk_stop(ch, chunk_size, n), k, d, mp, lbp,
                                      lpp, &nk[ch * k], &mom[ch * k * mp], &obj[ch * 3])
    _check(status)


# ------------------------------------------------------------------ diag, spherical
cdef int _coordinate_chunk(const floating* X, Py_ssize_t s0, Py_ssize_t s1,
                           const double* sample_weight, const double* means,
                           const double* precision, const double* log_norm, bint hard,
                           Py_ssize_t start, Py_ssize_t stop, Py_ssize_t k, Py_ssize_t d,
                           int64_t* labels, double* log_prob, double* imputed,
                           double* nk, double* nko, double* sx, double* sxx,
                           double* obj) noexcept nogil:
    """Per-coordinate precisions ``precision`` (k, d) = 1 / variance, with NaN.

    A row is held as ``xz`` (x with 0 for NaN) and the indicators ``obs`` and
    ``miss`` (1 or 0), so that the loops over the coordinates have no
    branches: a missing coordinate adds exact zeros to the observed sums.
    log p and 1 / p are computed once per chunk.

    Statistics: the features o (x - c), o (x - c)^2 and o (o the indicator
    of an observed entry, c the mean of the means) of ``SUB`` rows and their
    weighted responsibilities (one-hot when ``hard``) are gathered, and
    ``fastem_moments`` adds their moments in a register tile; once a chunk
    they become the observed counts and sums about each mean, and a missing
    coordinate adds its conditional variance 1 / p_ja times its weight
    nk_j - nko_ja.  (Updating the sums in memory for every (row, component)
    took 18.3 ms a call at (1e5, 16, 8), diag, two threads; this takes 11.4.)
    """
    cdef double prod = 1.0  # deferred logs of row totals (assign_one)
    cdef Py_ssize_t i, a, j, q, best, sub = 0
    cdef Py_ssize_t mp = (3 * d + 3) // 4 * 4
    cdef double t, w, acc, m, s1m, no
    cdef double* buf = <double*> malloc((4 * d + 3 * k + 4 * k * d + 1 + SUB * mp + SUB * k
                                         + k * mp + d) * sizeof(double))
    if buf == NULL:
        return -1
    cdef double* xi = buf
    cdef double* xz = xi + d
    cdef double* obs = xz + d
    cdef double* miss = obs + d
    cdef double* lp = miss + d
    cdef double* maha = lp + k
    cdef double* corr = maha + k
    cdef double* var = corr + k
    cdef double* meansT = var + k * d
    cdef double* precT = meansT + k * d
    cdef double* log_pT = precT + k * d
    cdef double* F = log_pT + k * d + 1
    cdef double* WRS = F + SUB * mp
    cdef double* mom = WRS + SUB * k
    cdef double* cen = mom + k * mp
    cdef double* row
    for j in range(k):
        for a in range(d):
            var[j * d + a] = 1.0 / precision[j * d + a]
            meansT[a * k + j] = means[j * d + a]
            precT[a * k + j] = precision[j * d + a]
            log_pT[a * k + j] = log(precision[j * d + a])
    mean_of_means(means, k, d, cen)
    zero(F, SUB * mp)  # the padding features stay 0
    zero(mom, k * mp)
    zero(nk, k)
    zero(nko, k * d)
    zero(sx, k * d)
    zero(sxx, k * d)
    zero(obj, 3)
    for i in range(start, stop):
        load_row(X, s0, s1, i, d, xi)
        q = 0
        for a in range(d):
            if isnan(xi[a]):
                xz[a] = 0.0
                obs[a] = 0.0
                miss[a] = 1.0
                q += 1
            else:
                xz[a] = xi[a]
                obs[a] = 1.0
                miss[a] = 0.0
        # every component's sums in vector registers (was: one scalar chain
        # of dependent additions per component)
        fastem_missing_coordinate_scores(xz, obs, miss, meansT, precT, log_pT, k, d, maha,
                                         corr)
        for j in range(k):
            lp[j] = log_norm[j] + q * HALF_LOG_2PI - 0.5 * corr[j] - 0.5 * maha[j]
        w = assign_one(i, lp, k, hard, sample_weight, labels, log_prob, &best, &prod, obj)
        if imputed != NULL:
            # the conditional mean of a missing coordinate is the component mean
            for a in range(d):
                if not isnan(xi[a]):
                    imputed[i * d + a] = xi[a]
                elif hard:
                    imputed[i * d + a] = means[best * d + a]
                else:
                    acc = 0.0
                    for j in range(k):
                        acc += lp[j] * means[j * d + a]
                    imputed[i * d + a] = acc
        if w == 0.0:
            continue
        if hard:
            obj[1] += w * maha[best]
            nk[best] += w
            for j in range(k):
                WRS[sub * k + j] = 0.0
            WRS[sub * k + best] = w
        else:
            for j in range(k):
                WRS[sub * k + j] = w * lp[j]
                nk[j] += w * lp[j]
        row = F + sub * mp
        for a in range(d):
            t = (xz[a] - cen[a]) * obs[a]
            row[a] = t
            row[d + a] = t * t
            row[2 * d + a] = obs[a]
        sub = add_staged(F, WRS, sub + 1, mp, k, mom)
    if sub > 0:
        fastem_moments(F, WRS, sub, mp, k, mom)
    for j in range(k):
        for a in range(d):
            m = means[j * d + a] - cen[a]
            s1m = mom[j * mp + a]
            no = mom[j * mp + 2 * d + a]
            nko[j * d + a] = no
            sx[j * d + a] = s1m - no * m
            sxx[j * d + a] = (mom[j * mp + d + a] - 2.0 * m * s1m + no * m * m
                              + (nk[j] - no) * var[j * d + a])
    flush_log_product(&prod, obj)
    free(buf)
    return 0


def estep_coordinate_missing(const floating[:, :] X, const double[::1] sample_weight,
                             const double[::1] means, const double[::1] precision,
                             const double[::1] log_norm, bint hard, Py_ssize_t chunk_size,
                             int64_t[::1] labels, double[::1] log_prob,
                             double[::1] imputed, double[::1] nk, double[::1] nko,
                             double[::1] sx, double[::1] sxx, double[::1] obj,
                             Py_ssize_t k, int num_threads):
    """Diagonal or spherical E-step with NaN; ``precision`` (k, d)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1]
    cdef Py_ssize_t n_chunks = obj.shape[0] // 3, c, start
    cdef Py_ssize_t s0 = X.strides[0] // sizeof(floating), s1 = X.strides[1] // sizeof(floating)
    cdef const floating* xp = &X[0, 0]
    cdef double* lpp = &log_prob[0] if log_prob.shape[0] == n * k and n > 0 else NULL
    cdef int64_t* lbp = &labels[0] if labels.shape[0] == n and n > 0 else NULL
    cdef double* imp = &imputed[0] if imputed.shape[0] == n * d and n > 0 else NULL
    cdef int[::1] status = np.zeros(max(n_chunks, 1), dtype=np.intc)
    with nogil:
        for c in prange(n_chunks, schedule="static", num_threads=num_threads):
            start = c * chunk_size
            status[c] = _coordinate_chunk(xp, s0, s1, &sample_weight[0], &means[0],
                                          &precision[0], &log_norm[0], hard, start,
                                          chunk_stop(c, chunk_size, n), k, d, lbp,
                                          lpp, imp, &nk[c * k], &nko[c * k * d],
                                          &sx[c * k * d], &sxx[c * k * d], &obj[c * 3])
    _check(status)


# ------------------------------------------------------------------ Bernoulli
cdef int _bernoulli_chunk(const floating* X, Py_ssize_t s0, Py_ssize_t s1,
                          const double* sample_weight, const double* logit,
                          const double* log_norm, const double* log_q, bint hard,
                          Py_ssize_t start, Py_ssize_t stop, Py_ssize_t k, Py_ssize_t d,
                          int64_t* labels, double* log_prob, double* nk, double* nko,
                          double* sx, double* obj) noexcept nogil:
    """Bernoulli with NaN: a missing coordinate's log(1 - p) term is removed."""
    cdef double prod = 1.0  # deferred logs of row totals (assign_one)
    cdef Py_ssize_t i, a, j, best
    cdef double s, w, r
    cdef double* buf = <double*> malloc((d + k + 1) * sizeof(double))
    if buf == NULL:
        return -1
    cdef double* xi = buf
    cdef double* lp = xi + d
    zero(nk, k)
    zero(nko, k * d)
    zero(sx, k * d)
    zero(obj, 3)
    for i in range(start, stop):
        load_row(X, s0, s1, i, d, xi)
        for j in range(k):
            s = log_norm[j]
            for a in range(d):
                if isnan(xi[a]):
                    s -= log_q[j * d + a]
                else:
                    s += xi[a] * logit[j * d + a]
            lp[j] = s
        w = assign_one(i, lp, k, hard, sample_weight, labels, log_prob, &best, &prod, obj)
        if w == 0.0:
            continue
        for j in range(k):
            if hard:
                r = w if j == best else 0.0
            else:
                r = w * lp[j]
            if r == 0.0:
                continue
            nk[j] += r
            for a in range(d):
                if not isnan(xi[a]):
                    nko[j * d + a] += r
                    sx[j * d + a] += r * xi[a]
    flush_log_product(&prod, obj)
    free(buf)
    return 0


def estep_bernoulli_missing(const floating[:, :] X, const double[::1] sample_weight,
                            const double[::1] logit, const double[::1] log_norm,
                            const double[::1] log_q, bint hard, Py_ssize_t chunk_size,
                            int64_t[::1] labels, double[::1] log_prob, double[::1] nk,
                            double[::1] nko, double[::1] sx, double[::1] obj,
                            Py_ssize_t k, int num_threads):
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1]
    cdef Py_ssize_t n_chunks = obj.shape[0] // 3, c, start
    cdef Py_ssize_t s0 = X.strides[0] // sizeof(floating), s1 = X.strides[1] // sizeof(floating)
    cdef const floating* xp = &X[0, 0]
    cdef double* lpp = &log_prob[0] if log_prob.shape[0] == n * k and n > 0 else NULL
    cdef int64_t* lbp = &labels[0] if labels.shape[0] == n and n > 0 else NULL
    cdef int[::1] status = np.zeros(max(n_chunks, 1), dtype=np.intc)
    with nogil:
        for c in prange(n_chunks, schedule="static", num_threads=num_threads):
            start = c * chunk_size
            status[c] = _bernoulli_chunk(xp, s0, s1, &sample_weight[0], &logit[0],
                                         &log_norm[0], &log_q[0], hard, start,
                                         chunk_stop(c, chunk_size, n), k, d, lbp,
                                         lpp, &nk[c * k], &nko[c * k * d], &sx[c * k * d],
                                         &obj[c * 3])
    _check(status)


# ------------------------------------------------------------------ distances
cdef int _sqdist_chunk(const floating* X, Py_ssize_t s0, Py_ssize_t s1,
                       const double* centers, Py_ssize_t start, Py_ssize_t stop,
                       Py_ssize_t m, Py_ssize_t d, double* out) noexcept nogil:
    """out[i, j] = sum over the observed a of (x_ia - c_ja)^2."""
    cdef Py_ssize_t i, j, a
    cdef double s, t
    cdef double* xi = <double*> malloc((d + 1) * sizeof(double))
    if xi == NULL:
        return -1
    for i in range(start, stop):
        load_row(X, s0, s1, i, d, xi)
        for j in range(m):
            s = 0.0
            for a in range(d):
                if not isnan(xi[a]):
                    t = xi[a] - centers[j * d + a]
                    s += t * t
            out[i * m + j] = s
    free(xi)
    return 0


def sqdist_missing(const floating[:, :] X, const double[::1] centers, Py_ssize_t chunk_size,
                   double[::1] out, Py_ssize_t m, int num_threads):
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1]
    cdef Py_ssize_t n_chunks = (n + chunk_size - 1) // chunk_size, c, start
    cdef Py_ssize_t s0 = X.strides[0] // sizeof(floating), s1 = X.strides[1] // sizeof(floating)
    cdef const floating* xp = &X[0, 0]
    cdef int[::1] status = np.zeros(max(n_chunks, 1), dtype=np.intc)
    with nogil:
        for c in prange(n_chunks, schedule="static", num_threads=num_threads):
            start = c * chunk_size
            status[c] = _sqdist_chunk(xp, s0, s1, &centers[0], start,
                                      chunk_stop(c, chunk_size, n), m, d, &out[0])
    _check(status)
