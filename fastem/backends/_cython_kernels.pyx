# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Complete-data kernels of the table, compiled: Gaussian and Bernoulli E-steps, sqdist.

Called through ``fastem.backends.cython_backend``, which prepares the small
derived parameter arrays (transposes, whitening matrices) and hands every
array but ``X`` over as a flat C-contiguous float64 buffer.  ``X`` is read
in its own dtype through its element strides ``s0``, ``s1``, so any memory
layout gives the same bits.

Each kernel runs ``prange`` over the chunks of the table's layout; chunk c
writes only slot c of the statistic buffers, so the result does not depend
on the number of threads.  A chunk allocates its own scratch (``malloc`` in
the chunk function) and returns -1 if that fails.  Rows are taken four at a
time (``BLOCK``) so that each parameter loaded from memory feeds four
multiply-adds in the inner loops, which the C compiler vectorizes; all
arithmetic is in float64.  Distances are formed from differences (never
from ``|x|^2 - 2 x.mu + |mu|^2``), so K-means labels are those of the exact
distances.
"""

from cython.parallel cimport prange
from libc.stdlib cimport malloc, free
from libc.stdint cimport int64_t
from libc.math cimport isfinite, isnan

import numpy as np

from fastem.backends._cython_common cimport (
    BLOCK, SUB, add_staged, chunk_stop, fastem_block_scores, fastem_lower_moments,
    fastem_moments, fastem_sq_distances, fastem_upper_product, finish_block, floating,
    flush_log_product, load_block, row_top, stage_weights, zero)


cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fastem_openmp_threads(int n) {
        int used = 1;
        #pragma omp parallel num_threads(n)
        {
            #pragma omp single
            used = omp_get_num_threads();
        }
        return used;
    }
    #else
    static int fastem_openmp_threads(int n) { (void) n; return 1; }
    #endif
    """
    int fastem_openmp_threads(int n) nogil


cdef extern from *:
    """
    /* a hint to bring the 64-byte lines of bytes [p, p + n) into the level-2
       cache (prefetcht1); nothing where the compiler has no such builtin */
    static inline void fastem_prefetch_bytes(const char* p, Py_ssize_t n) {
    #if defined(__GNUC__) || defined(__clang__)
        for (Py_ssize_t q = 0; q < n; q += 64)
            __builtin_prefetch(p + q, 0, 2);
    #else
        (void) p; (void) n;
    #endif
    }
    """
    void fastem_prefetch_bytes(const char* p, Py_ssize_t n) nogil


cdef extern from *:
    """
    /* a * b + c rounded once where the CPU has fused multiply-adds, twice
       where it has not: the same in the scalar and the vectorised versions of
       a loop, which the compiler's own contraction of a * b + c is not */
    #ifdef __FMA__
    #define fastem_fma(a, b, c) __builtin_fma((a), (b), (c))
    #else
    #define fastem_fma(a, b, c) ((a) * (b) + (c))
    #endif
    """
    double fastem_fma(double a, double b, double c) nogil


cdef extern from *:
    """
    #include <string.h>
    /* maha[r * k + j] = sum_a (x_ra - mu_ja)^2 p_ja for the BLOCK = 4 rows of
       xb (4, d), with meansT and precT (d, k) transposed (precT NULL: p = 1).
       Four components at a time, their sums for the four rows in four
       vector registers (GCC/Clang vector extensions); summed in feature
       order, as the scalar loop of other compilers. */
    static void fastem_coordinate_scores(const double* xb, const double* meansT,
                                         const double* precT, long k, long d,
                                         double* maha) {
        long j0 = 0, j, a, r;
    #if defined(__GNUC__)
        typedef double v4 __attribute__((vector_size(32)));
        for (; j0 + 4 <= k; j0 += 4) {
            v4 s0 = {0.0, 0.0, 0.0, 0.0}, s1 = s0, s2 = s0, s3 = s0, m, p, t;
            for (a = 0; a < d; a++) {
                memcpy(&m, meansT + a * k + j0, sizeof m);
                if (precT != NULL) {
                    memcpy(&p, precT + a * k + j0, sizeof p);
                } else {
                    p = (v4){1.0, 1.0, 1.0, 1.0};
                }
                t = xb[a] - m;
                s0 += t * t * p;
                t = xb[d + a] - m;
                s1 += t * t * p;
                t = xb[2 * d + a] - m;
                s2 += t * t * p;
                t = xb[3 * d + a] - m;
                s3 += t * t * p;
            }
            memcpy(maha + j0, &s0, sizeof s0);
            memcpy(maha + k + j0, &s1, sizeof s1);
            memcpy(maha + 2 * k + j0, &s2, sizeof s2);
            memcpy(maha + 3 * k + j0, &s3, sizeof s3);
        }
    #endif
        for (r = 0; r < 4; r++) {
            for (j = j0; j < k; j++) {
                maha[r * k + j] = 0.0;
            }
        }
        for (a = 0; a < d; a++) {
            for (j = j0; j < k; j++) {
                double m1 = meansT[a * k + j];
                double p1 = precT != NULL ? precT[a * k + j] : 1.0;
                for (r = 0; r < 4; r++) {
                    double t1 = xb[r * d + a] - m1;
                    maha[r * k + j] += t1 * t1 * p1;
                }
            }
        }
    }
    """
    void fastem_coordinate_scores(const double* xb, const double* meansT,
                                  const double* precT, long k, long d,
                                  double* maha) nogil


cdef extern from *:
    """
    #include <string.h>
    /* maha[r * k + j] = ||(x_r - c) W_j - cw_j||^2 for the 4 rows of xc
       (4, d), xc = x - c, W (d, k d) = [U_1 | ... | U_k] with every U_j upper
       triangular (row a is zero before column a, so column block [q, q + 4)
       reads rows a < q + 4 only) and cw (k d,).  Four columns of U_j at a
       time, the four rows' whitened values in vector registers, their
       squares summed in vectors and added up once a component. */
    static void fastem_full_maha(const double* xc, const double* W, const double* cw,
                                 long k, long d, double* sq, double* maha) {
        long kd = k * d, j, q, a, r, e;
        if (d < 4) {
            /* fewer features than a vector: four of the k d columns at a
               time, across components, their squares in sq (4, k d) */
            e = 0;
    #if defined(__GNUC__)
            typedef double v4f __attribute__((vector_size(32)));
            for (; e + 4 <= kd; e += 4) {
                v4f y0, y1, y2, y3, u;
                memcpy(&y0, cw + e, sizeof y0);
                y0 = -y0;
                y1 = y0;
                y2 = y0;
                y3 = y0;
                for (a = 0; a < d; a++) {
                    memcpy(&u, W + a * kd + e, sizeof u);
                    y0 += xc[a] * u;
                    y1 += xc[d + a] * u;
                    y2 += xc[2 * d + a] * u;
                    y3 += xc[3 * d + a] * u;
                }
                y0 *= y0;
                y1 *= y1;
                y2 *= y2;
                y3 *= y3;
                memcpy(sq + e, &y0, sizeof y0);
                memcpy(sq + kd + e, &y1, sizeof y1);
                memcpy(sq + 2 * kd + e, &y2, sizeof y2);
                memcpy(sq + 3 * kd + e, &y3, sizeof y3);
            }
    #endif
            for (; e < kd; e++) {
                for (r = 0; r < 4; r++) {
                    double y = -cw[e];
                    for (a = 0; a < d; a++) {
                        y += xc[r * d + a] * W[a * kd + e];
                    }
                    sq[r * kd + e] = y * y;
                }
            }
            for (r = 0; r < 4; r++) {
                for (j = 0; j < k; j++) {
                    double m = 0.0;
                    for (q = 0; q < d; q++) {
                        m += sq[r * kd + j * d + q];
                    }
                    maha[r * k + j] = m;
                }
            }
            return;
        }
        for (j = 0; j < k; j++) {
            double s[4] = {0.0, 0.0, 0.0, 0.0};
            q = 0;
    #if defined(__GNUC__)
            typedef double v4 __attribute__((vector_size(32)));
            v4 q0 = {0.0, 0.0, 0.0, 0.0}, q1 = q0, q2 = q0, q3 = q0;
            for (; q + 4 <= d; q += 4) {
                v4 y0, y1, y2, y3, u;
                long top = q + 4;
                e = j * d + q;
                memcpy(&y0, cw + e, sizeof y0);
                y0 = -y0;
                y1 = y0;
                y2 = y0;
                y3 = y0;
                for (a = 0; a < top; a++) {
                    memcpy(&u, W + a * kd + e, sizeof u);
                    y0 += xc[a] * u;
                    y1 += xc[d + a] * u;
                    y2 += xc[2 * d + a] * u;
                    y3 += xc[3 * d + a] * u;
                }
                q0 += y0 * y0;
                q1 += y1 * y1;
                q2 += y2 * y2;
                q3 += y3 * y3;
            }
            s[0] = (q0[0] + q0[1]) + (q0[2] + q0[3]);
            s[1] = (q1[0] + q1[1]) + (q1[2] + q1[3]);
            s[2] = (q2[0] + q2[1]) + (q2[2] + q2[3]);
            s[3] = (q3[0] + q3[1]) + (q3[2] + q3[3]);
    #endif
            for (; q < d; q++) {  /* columns left over (all, without vector extensions) */
                e = j * d + q;
                for (r = 0; r < 4; r++) {
                    double y = -cw[e];
                    for (a = 0; a <= q; a++) {
                        y += xc[r * d + a] * W[a * kd + e];
                    }
                    s[r] += y * y;
                }
            }
            for (r = 0; r < 4; r++) {
                maha[r * k + j] = s[r];
            }
        }
    }
    """
    void fastem_full_maha(const double* xc, const double* W, const double* cw, long k, long d,
                          double* sq, double* maha) nogil


cdef extern from *:
    """
    #include <string.h>
    /* K-means' float32 screen, SR rows a block in the lanes of two vectors
       (SR = 16 with AVX, 8 without: eight lanes would take two SSE registers
       each, too many for the tile).  Rows in lanes, one row's maximum, cut
       and candidates are a few vector operations per component for all the
       block's rows; with components in lanes, one row at a time, they had
       cost more than the scores. */
    #if defined(__AVX__)
    #define FASTEM_SL 8
    #else
    #define FASTEM_SL 4
    #endif
    enum { FASTEM_SR = 2 * FASTEM_SL };

    /* sc[j * SR + l] = A_j + sum_{a < m} xT[a * SR + l] CT[a * kp + j] for
       every j < kp (kp a multiple of 4), summed in feature order; xT holds
       the block's features transposed (row l in lane l).  Four components
       by two vectors of rows in registers. */
    static void fastem_screen_tile(const float* xT, long m, const float* CT, const float* A,
                                   long kp, float* sc) {
        long j0, a;
        for (j0 = 0; j0 < kp; j0 += 4) {
    #if defined(__GNUC__)
            typedef float vf __attribute__((vector_size(4 * FASTEM_SL)));
            vf z = {0.0f}, s00 = z + A[j0], s01 = s00, s10 = z + A[j0 + 1], s11 = s10;
            vf s20 = z + A[j0 + 2], s21 = s20, s30 = z + A[j0 + 3], s31 = s30, x0, x1;
            for (a = 0; a < m; a++) {
                const float* g = CT + a * kp + j0;
                memcpy(&x0, xT + a * FASTEM_SR, sizeof x0);
                memcpy(&x1, xT + a * FASTEM_SR + FASTEM_SL, sizeof x1);
                s00 += x0 * g[0];
                s01 += x1 * g[0];
                s10 += x0 * g[1];
                s11 += x1 * g[1];
                s20 += x0 * g[2];
                s21 += x1 * g[2];
                s30 += x0 * g[3];
                s31 += x1 * g[3];
            }
            float* o = sc + j0 * FASTEM_SR;
            memcpy(o, &s00, sizeof s00);
            memcpy(o + FASTEM_SL, &s01, sizeof s01);
            memcpy(o + FASTEM_SR, &s10, sizeof s10);
            memcpy(o + FASTEM_SR + FASTEM_SL, &s11, sizeof s11);
            memcpy(o + 2 * FASTEM_SR, &s20, sizeof s20);
            memcpy(o + 2 * FASTEM_SR + FASTEM_SL, &s21, sizeof s21);
            memcpy(o + 3 * FASTEM_SR, &s30, sizeof s30);
            memcpy(o + 3 * FASTEM_SR + FASTEM_SL, &s31, sizeof s31);
    #else
            long l, q;
            for (q = 0; q < 4; q++) {
                for (l = 0; l < FASTEM_SR; l++) {
                    float t = A[j0 + q];
                    for (a = 0; a < m; a++) {
                        t += xT[a * FASTEM_SR + l] * CT[a * kp + j0 + q];
                    }
                    sc[(j0 + q) * FASTEM_SR + l] = t;
                }
            }
    #endif
        }
    }

    /* top[l] = max_{j < k} sc[j * SR + l]; vector selects (GCC left the
       plain loops over the lanes scalar, a compare and branch a score) */
    static void fastem_screen_top(const float* sc, long k, float* top) {
        long j;
    #if defined(__GNUC__)
        typedef float vf __attribute__((vector_size(4 * FASTEM_SL)));
        typedef int vi __attribute__((vector_size(4 * FASTEM_SL)));
        vf t0, t1, v;
        vi m;
        memcpy(&t0, sc, sizeof t0);
        memcpy(&t1, sc + FASTEM_SL, sizeof t1);
        for (j = 1; j < k; j++) {
            memcpy(&v, sc + j * FASTEM_SR, sizeof v);
            m = v > t0;
            t0 = (vf) (((vi) v & m) | ((vi) t0 & ~m));
            memcpy(&v, sc + j * FASTEM_SR + FASTEM_SL, sizeof v);
            m = v > t1;
            t1 = (vf) (((vi) v & m) | ((vi) t1 & ~m));
        }
        memcpy(top, &t0, sizeof t0);
        memcpy(top + FASTEM_SL, &t1, sizeof t1);
    #else
        long l;
        for (l = 0; l < FASTEM_SR; l++) {
            top[l] = sc[l];
        }
        for (j = 1; j < k; j++) {
            for (l = 0; l < FASTEM_SR; l++) {
                float v = sc[j * FASTEM_SR + l];
                top[l] = v > top[l] ? v : top[l];
            }
        }
    #endif
    }

    /* count[l] = the number of j < k with sc[j * SR + l] >= cut[l] and
       first[l] the least such j (0 if none) */
    static void fastem_screen_count(const float* sc, long k, const float* cut, int* count,
                                    int* first) {
        long j;
    #if defined(__GNUC__)
        typedef float vf __attribute__((vector_size(4 * FASTEM_SL)));
        typedef int vi __attribute__((vector_size(4 * FASTEM_SL)));
        vf c0, c1, v;
        vi n0 = {0}, n1 = {0}, f0 = {0}, f1 = {0}, m, jv;
        memcpy(&c0, cut, sizeof c0);
        memcpy(&c1, cut + FASTEM_SL, sizeof c1);
        for (j = k - 1; j >= 0; j--) {
            jv = n0 * 0 + (int) j;
            memcpy(&v, sc + j * FASTEM_SR, sizeof v);
            m = v >= c0;  /* -1 where true */
            n0 -= m;
            f0 = (jv & m) | (f0 & ~m);
            memcpy(&v, sc + j * FASTEM_SR + FASTEM_SL, sizeof v);
            m = v >= c1;
            n1 -= m;
            f1 = (jv & m) | (f1 & ~m);
        }
        memcpy(count, &n0, sizeof n0);
        memcpy(count + FASTEM_SL, &n1, sizeof n1);
        memcpy(first, &f0, sizeof f0);
        memcpy(first + FASTEM_SL, &f1, sizeof f1);
    #else
        long l;
        for (l = 0; l < FASTEM_SR; l++) {
            count[l] = 0;
            first[l] = 0;
        }
        for (j = k - 1; j >= 0; j--) {
            for (l = 0; l < FASTEM_SR; l++) {
                int above = sc[j * FASTEM_SR + l] >= cut[l];
                count[l] += above;
                first[l] = above ? (int) j : first[l];
            }
        }
    #endif
    }
    """
    enum: FASTEM_SR
    void fastem_screen_tile(const float* xT, long m, const float* CT, const float* A, long kp,
                            float* sc) nogil
    void fastem_screen_top(const float* sc, long k, float* top) nogil
    void fastem_screen_count(const float* sc, long k, const float* cut, int* count,
                             int* first) nogil


def openmp_threads(int num_threads):
    """Threads a parallel region asking for ``num_threads`` gets (1 without OpenMP)."""
    return fastem_openmp_threads(num_threads)


def _check(int[::1] status):
    """Raise MemoryError if a chunk could not allocate its scratch space."""
    cdef Py_ssize_t c
    for c in range(status.shape[0]):
        if status[c] != 0:
            raise MemoryError("fastem's Cython kernels could not allocate chunk scratch space")


# ------------------------------------------------------------------ full
cdef void _full_moments(const double* XS, const double* WRS, Py_ssize_t rows, Py_ssize_t k,
                        Py_ssize_t dp, Py_ssize_t d, const double* MP, double* D, double* Z,
                        double* nk, double* SX, double* SA) noexcept nogil:
    """Moments about each mean mu_j (``MP``, rows of dp) of ``rows`` staged rows
    ``XS`` weighted by WRS[:, j]: nk[j], SX[j] (first, rows of dp) and, through
    ``fastem_lower_moments``, SA[j] (second, dp x dp)."""
    cdef Py_ssize_t i, j, a
    cdef double total, rw, v
    for j in range(k):
        total = 0.0
        for i in range(rows):
            total += WRS[i * k + j]
        if total == 0.0:  # no weight here (the weights are never negative)
            continue
        nk[j] += total
        for i in range(rows):
            rw = WRS[i * k + j]
            for a in range(dp):  # padding: 0 - 0
                v = XS[i * dp + a] - MP[j * dp + a]
                D[i * dp + a] = v
                Z[i * dp + a] = rw * v
                SX[j * dp + a] += rw * v
        fastem_lower_moments(D, Z, rows, dp, d, SA + j * dp * dp)


cdef enum:
    TILE_MIN_D = 8  # features from which _full_chunk stages rows for the moment tile


cdef inline void _full_block_moments(const double* xb, const double* wr, const double* means,
                                     Py_ssize_t k, Py_ssize_t d, double* diff, double* nk,
                                     double* sx, double* sxx) noexcept nogil:
    """Add the moments about each mean of the BLOCK = 4 rows ``xb`` weighted by
    ``wr`` (4, k) to nk, sx and the lower triangle of sxx, each row of which
    is rounded up to whole vectors of 4 (the M-step reads the lower triangle
    only), so the loops have no scalar remainder; ``diff`` is scratch (4, d)."""
    cdef Py_ssize_t a, b, j
    cdef double r0, r1, r2, r3, m, u0, u1, u2, u3
    cdef double* d0 = diff
    cdef double* d1 = diff + d
    cdef double* d2 = diff + 2 * d
    cdef double* d3 = diff + 3 * d
    cdef double* row
    for j in range(k):
        r0 = wr[j]
        r1 = wr[k + j]
        r2 = wr[2 * k + j]
        r3 = wr[3 * k + j]
        if r0 == 0.0 and r1 == 0.0 and r2 == 0.0 and r3 == 0.0:
            continue
        nk[j] += r0 + r1 + r2 + r3
        for a in range(d):
            m = means[j * d + a]
            d0[a] = xb[a] - m
            d1[a] = xb[d + a] - m
            d2[a] = xb[2 * d + a] - m
            d3[a] = xb[3 * d + a] - m
            sx[j * d + a] += r0 * d0[a] + r1 * d1[a] + r2 * d2[a] + r3 * d3[a]
        for a in range(d):
            u0 = r0 * d0[a]
            u1 = r1 * d1[a]
            u2 = r2 * d2[a]
            u3 = r3 * d3[a]
            row = sxx + (j * d + a) * d
            for b in range(min(d, (a // 4 + 1) * 4)):
                row[b] += u0 * d0[b] + u1 * d1[b] + u2 * d2[b] + u3 * d3[b]


cdef int _full_chunk(const floating* X, Py_ssize_t s0, Py_ssize_t s1,
                     const double* sample_weight, const double* means, const double* W,
                     const double* cw, const double* log_norm, const double* center,
                     bint hard, Py_ssize_t start, Py_ssize_t stop, Py_ssize_t k,
                     Py_ssize_t d, int64_t* labels, double* log_prob, double* nk,
                     double* sx, double* sxx, double* obj) noexcept nogil:
    """Full covariances.  ``W`` (d, k d) = [U_1 | ... | U_k], ``cw`` (k d,) the
    rows (mu_j - center) U_j, so that (x - mu_j) U_j = (x - center) W_j - cw_j.

    Soft statistics: ``SUB`` rows and their weighted responsibilities are
    staged, then their moments about each mean are added by ``_full_moments``
    (a register tile for the second moments).  A rank-4 update of the sums
    in memory every 4 rows (``_full_block_moments``) took 61.8 ms a call at
    (1e5, 16, 16), two threads, where this takes 36.1; it is kept for fewer
    than ``TILE_MIN_D`` features, where the tile's blocks of 8 features would
    be mostly padding ((2e5, 2, 8): 16 ms a call with it, 21 with the tile).
    """
    cdef double prod = 1.0  # deferred logs of row totals (assign_one)
    cdef Py_ssize_t kd = k * d
    cdef Py_ssize_t dp = (d + 7) // 8 * 8
    cdef Py_ssize_t ib, i0, n_rows, r, a, b, j, staged = 0
    cdef Py_ssize_t best_of[BLOCK]
    cdef double u, w
    cdef double* d0
    cdef double* row
    cdef bint tiled = not hard and d >= TILE_MIN_D
    cdef Py_ssize_t soft_size = (3 * SUB * dp + SUB * k + 2 * k * dp + k * dp * dp
                                 if tiled else 0)
    cdef double* buf = <double*> malloc(
        (3 * BLOCK * d + BLOCK * kd + 3 * BLOCK * k + 1 + soft_size) * sizeof(double))
    if buf == NULL:
        return -1
    cdef double* xb = buf
    cdef double* xc = xb + BLOCK * d
    cdef double* sq = xc + BLOCK * d
    cdef double* diff = sq + BLOCK * kd
    cdef double* lp = diff + BLOCK * d
    cdef double* maha = lp + BLOCK * k
    cdef double* wr = maha + BLOCK * k
    cdef double* XS = wr + BLOCK * k + 1
    cdef double* D = XS + SUB * dp
    cdef double* Z = D + SUB * dp
    cdef double* WRS = Z + SUB * dp
    cdef double* MP = WRS + SUB * k
    cdef double* SX = MP + k * dp
    cdef double* SA = SX + k * dp
    d0 = diff
    zero(nk, k)
    zero(sx, kd)
    zero(sxx, kd * d)
    zero(obj, 3)
    if tiled:
        zero(XS, soft_size)  # padding features stay 0
        for j in range(k):
            for a in range(d):
                MP[j * dp + a] = means[j * d + a]
    for ib in range((stop - start + BLOCK - 1) // BLOCK):
        i0 = start + ib * BLOCK
        n_rows = stop - i0 if stop - i0 < BLOCK else BLOCK
        load_block(X, s0, s1, i0, n_rows, d, xb)
        for r in range(BLOCK):
            for a in range(d):
                xc[r * d + a] = xb[r * d + a] - center[a]
        # whitened rows in vector registers (was: read-modify-write loops over
        # a (4, k d) array, about 20 % of this E-step)
        fastem_full_maha(xc, W, cw, k, d, sq, maha)
        for r in range(BLOCK):
            for j in range(k):
                lp[r * k + j] = log_norm[j] - 0.5 * maha[r * k + j]
        finish_block(i0, n_rows, k, lp, maha, hard, sample_weight, labels, log_prob,
                     wr, best_of, &prod, obj)
        if hard:
            for r in range(n_rows):
                j = best_of[r]
                if j < 0:
                    continue
                w = sample_weight[i0 + r]
                nk[j] += w
                for a in range(d):
                    d0[a] = xb[r * d + a] - means[j * d + a]
                    sx[j * d + a] += w * d0[a]
                for a in range(d):
                    u = w * d0[a]
                    row = sxx + (j * d + a) * d
                    for b in range(a + 1):
                        row[b] += u * d0[b]
            continue
        if not tiled:
            _full_block_moments(xb, wr, means, k, d, diff, nk, sx, sxx)
            continue
        for r in range(BLOCK):  # rows past the end: zeros (load_block), weight 0
            for a in range(d):
                XS[(staged + r) * dp + a] = xb[r * d + a]
            for j in range(k):
                WRS[(staged + r) * k + j] = wr[r * k + j]
        staged += BLOCK
        if staged == SUB:
            _full_moments(XS, WRS, staged, k, dp, d, MP, D, Z, nk, SX, SA)
            staged = 0
    if tiled:
        if staged > 0:
            _full_moments(XS, WRS, staged, k, dp, d, MP, D, Z, nk, SX, SA)
        for j in range(k):
            for a in range(d):
                sx[j * d + a] = SX[j * dp + a]
                for b in range(a + 1):  # the lower triangle: the M-step reads no more
                    sxx[(j * d + a) * d + b] = SA[(j * dp + a) * dp + b]
    flush_log_product(&prod, obj)
    free(buf)
    return 0


def estep_full(const floating[:, :] X, const double[::1] sample_weight,
               const double[::1] means, const double[::1] W, const double[::1] cw,
               const double[::1] log_norm, const double[::1] center, bint hard,
               Py_ssize_t chunk_size, int64_t[::1] labels, double[::1] log_prob,
               double[::1] nk, double[::1] sx, double[::1] sxx, double[::1] obj,
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
            status[c] = _full_chunk(xp, s0, s1, &sample_weight[0], &means[0], &W[0],
                                    &cw[0], &log_norm[0], &center[0], hard, start,
                                    chunk_stop(c, chunk_size, n), k, d, lbp, lpp,
                                    &nk[c * k], &sx[c * k * d], &sxx[c * k * d * d],
                                    &obj[c * 3])
    _check(status)


# ------------------------------------------------------------------ tied
cdef inline void _block_sq_distances(const double* xb, Py_ssize_t d, const double* cT,
                                     Py_ssize_t m, double* acc) noexcept nogil:
    """acc[r * m + j] = sum_a (xb[r * d + a] - cT[a * m + j])^2 for the BLOCK
    rows of xb, cT (d, m) transposed; in memory, summed in feature order
    (the few-feature path of sqdist and of the tied E-step)."""
    cdef Py_ssize_t a, j
    cdef double x0, x1, x2, x3, cv
    cdef const double* c
    zero(acc, BLOCK * m)
    for a in range(d):
        x0 = xb[a]
        x1 = xb[d + a]
        x2 = xb[2 * d + a]
        x3 = xb[3 * d + a]
        c = cT + a * m
        for j in range(m):
            cv = c[j]
            acc[j] += (x0 - cv) * (x0 - cv)
            acc[m + j] += (x1 - cv) * (x1 - cv)
            acc[2 * m + j] += (x2 - cv) * (x2 - cv)
            acc[3 * m + j] += (x3 - cv) * (x3 - cv)


cdef int _tied_chunk(const floating* X, Py_ssize_t s0, Py_ssize_t s1,
                     const double* sample_weight, const double* means, const double* U,
                     const double* cwT, const double* log_norm, const double* center,
                     bint hard, Py_ssize_t start, Py_ssize_t stop, Py_ssize_t k,
                     Py_ssize_t d, int64_t* labels, double* log_prob, double* nk,
                     double* sx, double* sxx, double* obj) noexcept nogil:
    """Tied covariance, below ``TILE_MIN_D`` features.  ``U`` (d, d) upper
    factor, ``cwT`` (d, k) the columns (mu_j - center) U; the scatter is taken
    about ``center``."""
    cdef double prod = 1.0  # deferred logs of row totals (assign_one)
    cdef Py_ssize_t ib, i0, n_rows, r, a, b, j
    cdef Py_ssize_t best_of[BLOCK]
    cdef double x0, x1, x2, x3, u, u0, u1, u2, u3, r0, r1, r2, r3, w, m, t0, t1, t2, t3
    cdef double* row
    cdef double wrow[BLOCK]
    cdef double* buf = <double*> malloc((3 * BLOCK * d + 3 * BLOCK * k + 1) * sizeof(double))
    if buf == NULL:
        return -1
    cdef double* xb = buf
    cdef double* xc = xb + BLOCK * d
    cdef double* y = xc + BLOCK * d
    cdef double* lp = y + BLOCK * d
    cdef double* maha = lp + BLOCK * k
    cdef double* wr = maha + BLOCK * k
    cdef double* c0 = xc
    cdef double* c1 = xc + d
    cdef double* c2 = xc + 2 * d
    cdef double* c3 = xc + 3 * d
    zero(nk, k)
    zero(sx, k * d)
    zero(sxx, d * d)
    zero(obj, 3)
    for ib in range((stop - start + BLOCK - 1) // BLOCK):
        i0 = start + ib * BLOCK
        n_rows = stop - i0 if stop - i0 < BLOCK else BLOCK
        load_block(X, s0, s1, i0, n_rows, d, xb)
        for r in range(BLOCK):
            for a in range(d):
                xc[r * d + a] = xb[r * d + a] - center[a]
                y[r * d + a] = 0.0
        for a in range(d):
            x0 = c0[a]
            x1 = c1[a]
            x2 = c2[a]
            x3 = c3[a]
            for b in range(a, d):
                u = U[a * d + b]
                y[b] += x0 * u
                y[d + b] += x1 * u
                y[2 * d + b] += x2 * u
                y[3 * d + b] += x3 * u
        # (x - mu_j) U = (x - center) U - (mu_j - center) U
        _block_sq_distances(y, d, cwT, k, maha)
        for r in range(BLOCK):  # not r * k + j with j = that % k: see _coordinate_chunk
            for j in range(k):
                lp[r * k + j] = log_norm[j] - 0.5 * maha[r * k + j]
        finish_block(i0, n_rows, k, lp, maha, hard, sample_weight, labels, log_prob,
                     wr, best_of, &prod, obj)
        for r in range(BLOCK):
            wrow[r] = sample_weight[i0 + r] if r < n_rows else 0.0
        if hard:
            for r in range(n_rows):
                j = best_of[r]
                if j >= 0:
                    nk[j] += wrow[r]
                    for a in range(d):
                        sx[j * d + a] += wrow[r] * (xb[r * d + a] - means[j * d + a])
        else:
            for j in range(k):
                r0 = wr[j]
                r1 = wr[k + j]
                r2 = wr[2 * k + j]
                r3 = wr[3 * k + j]
                if r0 == 0.0 and r1 == 0.0 and r2 == 0.0 and r3 == 0.0:
                    continue
                nk[j] += r0 + r1 + r2 + r3
                for a in range(d):
                    m = means[j * d + a]
                    t0 = xb[a] - m
                    t1 = xb[d + a] - m
                    t2 = xb[2 * d + a] - m
                    t3 = xb[3 * d + a] - m
                    sx[j * d + a] += r0 * t0 + r1 * t1 + r2 * t2 + r3 * t3
        # the tied scatter about the fixed center needs no responsibilities
        for a in range(d):
            u0 = wrow[0] * c0[a]
            u1 = wrow[1] * c1[a]
            u2 = wrow[2] * c2[a]
            u3 = wrow[3] * c3[a]
            row = sxx + a * d
            for b in range(a + 1):
                row[b] += u0 * c0[b] + u1 * c1[b] + u2 * c2[b] + u3 * c3[b]
    flush_log_product(&prod, obj)
    free(buf)
    return 0


cdef enum:
    TIED_SUB = 32  # rows staged at a time by _tied_staged_chunk


cdef int _tied_staged_chunk(const floating* X, Py_ssize_t s0, Py_ssize_t s1,
                            const double* sample_weight, const double* means,
                            const double* U, const double* cwT, const double* log_norm,
                            const double* center, bint hard, Py_ssize_t start,
                            Py_ssize_t stop, Py_ssize_t k, Py_ssize_t d, int64_t* labels,
                            double* log_prob, double* nk, double* sx, double* sxx,
                            double* obj) noexcept nogil:
    """Tied covariance from ``TILE_MIN_D`` features, ``TIED_SUB`` rows at a time.

    The staged rows' x - center (``D``, rows of dp, and transposed in ``XT``)
    are whitened by one product with U in register tiles
    (``fastem_upper_product``); the distances to the whitened means come
    from differences (``fastem_sq_distances``); the scatter about the center
    and the soft moments about it are added by the moment tiles.  Row by row,
    the whitening and the scatter had updated d values in memory per
    feature, two thirds of the E-step at (5e4, 64, 8).
    """
    cdef double prod = 1.0  # deferred logs of row totals (assign_one)
    cdef Py_ssize_t dp = (d + 7) // 8 * 8
    cdef Py_ssize_t ib, i0, n_rows, r, a, b, j, ig, g, rows_g
    cdef double w, t
    cdef Py_ssize_t best_of[TIED_SUB]
    cdef double* buf = <double*> malloc((5 * TIED_SUB * dp + d * dp + 2 * k * dp + dp * dp
                                         + 3 * TIED_SUB * k + 1) * sizeof(double))
    if buf == NULL:
        return -1
    cdef double* D = buf                  # x - center, rows of dp
    cdef double* Z = D + TIED_SUB * dp    # w (x - center)
    cdef double* XT = Z + TIED_SUB * dp   # x - center transposed (dp, TIED_SUB)
    cdef double* Y = XT + TIED_SUB * dp   # (x - center) U
    cdef double* UP = Y + TIED_SUB * dp   # U, rows of dp
    cdef double* CW = UP + d * dp         # (mu_j - center) U, rows of dp
    cdef double* M = CW + k * dp          # soft: sum r w (x - center) per component
    cdef double* SA = M + k * dp          # sum w (x - center)(x - center)^T, lower blocks
    cdef double* lp = SA + dp * dp
    cdef double* maha = lp + TIED_SUB * k
    cdef double* wr = maha + TIED_SUB * k
    zero(buf, 5 * TIED_SUB * dp + d * dp + 2 * k * dp + dp * dp)  # padding stays 0
    zero(nk, k)
    zero(sx, k * d)
    zero(sxx, d * d)
    zero(obj, 3)
    for a in range(d):
        for b in range(a, d):
            UP[a * dp + b] = U[a * d + b]
        for j in range(k):
            CW[j * dp + a] = cwT[a * k + j]
    for ib in range((stop - start + TIED_SUB - 1) // TIED_SUB):
        i0 = start + ib * TIED_SUB
        n_rows = stop - i0 if stop - i0 < TIED_SUB else TIED_SUB
        for r in range(TIED_SUB):
            w = sample_weight[i0 + r] if r < n_rows else 0.0
            for a in range(d):
                # rows past the end (weight 0) keep finite values: 0
                t = (<double> X[(i0 + r) * s0 + a * s1] - center[a]) if r < n_rows else 0.0
                D[r * dp + a] = t
                XT[a * TIED_SUB + r] = t
                Z[r * dp + a] = w * t
        zero(Y, TIED_SUB * dp)
        fastem_upper_product(XT, TIED_SUB, UP, dp, d, Y)
        fastem_sq_distances(Y, TIED_SUB, dp, CW, k, maha)
        for r in range(TIED_SUB):
            for j in range(k):
                lp[r * k + j] = log_norm[j] - 0.5 * maha[r * k + j]
        for ig in range(TIED_SUB // BLOCK):
            g = ig * BLOCK
            rows_g = n_rows - g if n_rows - g < BLOCK else BLOCK
            finish_block(i0 + g, rows_g if rows_g > 0 else 0, k, lp + g * k, maha + g * k,
                         hard, sample_weight, labels, log_prob, wr + g * k, best_of + g,
                         &prod, obj)
        if hard:
            for r in range(n_rows):
                j = best_of[r]
                if j < 0:
                    continue
                w = sample_weight[i0 + r]
                nk[j] += w
                for a in range(d):
                    sx[j * d + a] += w * (D[r * dp + a] - (means[j * d + a] - center[a]))
        else:
            for r in range(TIED_SUB):
                for j in range(k):
                    nk[j] += wr[r * k + j]
            fastem_moments(D, wr, TIED_SUB, dp, k, M)
        # the tied scatter about the fixed center needs no responsibilities
        fastem_lower_moments(D, Z, TIED_SUB, dp, d, SA)
    if not hard:
        for j in range(k):
            for a in range(d):
                sx[j * d + a] = M[j * dp + a] - nk[j] * (means[j * d + a] - center[a])
    for a in range(d):
        for b in range(a + 1):  # the lower triangle: the M-step reads no more
            sxx[a * d + b] = SA[a * dp + b]
    flush_log_product(&prod, obj)
    free(buf)
    return 0


def estep_tied(const floating[:, :] X, const double[::1] sample_weight,
               const double[::1] means, const double[::1] U, const double[::1] cwT,
               const double[::1] log_norm, const double[::1] center, bint hard,
               Py_ssize_t chunk_size, int64_t[::1] labels, double[::1] log_prob,
               double[::1] nk, double[::1] sx, double[::1] sxx, double[::1] obj,
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
            if d >= TILE_MIN_D:
                status[c] = _tied_staged_chunk(xp, s0, s1, &sample_weight[0], &means[0],
                                               &U[0], &cwT[0], &log_norm[0], &center[0],
                                               hard, start, chunk_stop(c, chunk_size, n), k,
                                               d, lbp, lpp, &nk[c * k],
                                               &sx[c * k * d], &sxx[c * d * d], &obj[c * 3])
            else:
                status[c] = _tied_chunk(xp, s0, s1, &sample_weight[0], &means[0], &U[0],
                                        &cwT[0], &log_norm[0], &center[0], hard, start,
                                        chunk_stop(c, chunk_size, n), k, d, lbp, lpp,
                                        &nk[c * k], &sx[c * k * d], &sxx[c * d * d],
                                        &obj[c * 3])
    _check(status)


# ------------------------------------------------------------------ diag, spherical
cdef int _coordinate_chunk(const floating* X, Py_ssize_t s0, Py_ssize_t s1,
                           const double* sample_weight, const double* means,
                           const double* meansT, const double* precT,
                           const double* spherical, const double* log_norm,
                           Py_ssize_t start, Py_ssize_t stop, Py_ssize_t k, Py_ssize_t d,
                           int64_t* labels, double* log_prob, double* nk, double* sx,
                           double* sxx, double* obj) noexcept nogil:
    """Hard E-step of diagonal covariances, ``precT`` (d, k) = 1 / variance
    transposed; or, when ``spherical`` (k,) is not NULL, one precision per
    component and maha_j = p_j ||x - mu_j||^2 (the K-means scores).  Scores
    from differences.  ``sxx`` is (k, d) for the diagonal model and (k,),
    the sums over the features, for the spherical one.  (The soft E-step
    is ``_soft_features_chunk``.)
    """
    cdef double prod = 1.0  # deferred logs of row totals (assign_one)
    cdef Py_ssize_t ib, i0, n_rows, r, a, j
    cdef bint sph = spherical != NULL
    cdef double w, t, ss
    cdef Py_ssize_t best_of[BLOCK]
    cdef double* buf = <double*> malloc((BLOCK * d + 2 * BLOCK * k) * sizeof(double))
    if buf == NULL:
        return -1
    cdef double* xb = buf
    cdef double* lp = xb + BLOCK * d
    cdef double* maha = lp + BLOCK * k
    zero(nk, k)
    zero(sx, k * d)
    zero(sxx, k if sph else k * d)
    zero(obj, 3)
    for ib in range((stop - start + BLOCK - 1) // BLOCK):
        i0 = start + ib * BLOCK
        n_rows = stop - i0 if stop - i0 < BLOCK else BLOCK
        load_block(X, s0, s1, i0, n_rows, d, xb)
        # per feature, the four rows' sums of four components in registers:
        # as loops over arrays here, every term was a load and a store
        fastem_coordinate_scores(xb, meansT, precT if spherical == NULL else NULL, k, d,
                                 maha)
        # (r, j) loops, not one loop over r * k + j with j = that % k: an
        # integer division per score cost more than the score
        for r in range(BLOCK):
            for j in range(k):
                if spherical != NULL:
                    maha[r * k + j] = spherical[j] * maha[r * k + j]
                lp[r * k + j] = log_norm[j] - 0.5 * maha[r * k + j]
        finish_block(i0, n_rows, k, lp, maha, True, sample_weight, labels, log_prob,
                     NULL, best_of, &prod, obj)
        for r in range(n_rows):
            j = best_of[r]
            if j < 0:
                continue
            w = sample_weight[i0 + r]
            nk[j] += w
            if sph:
                ss = 0.0
                for a in range(d):
                    t = xb[r * d + a] - means[j * d + a]
                    sx[j * d + a] += w * t
                    ss += t * t
                sxx[j] += w * ss
                continue
            for a in range(d):
                t = xb[r * d + a] - means[j * d + a]
                sx[j * d + a] += w * t
                sxx[j * d + a] += w * t * t
    flush_log_product(&prod, obj)
    free(buf)
    return 0


def estep_coordinate_hard(const floating[:, :] X, const double[::1] sample_weight,
                          const double[::1] means, const double[::1] meansT,
                          const double[::1] precT, const double[::1] spherical,
                          const double[::1] log_norm, Py_ssize_t chunk_size,
                          int64_t[::1] labels, double[::1] log_prob, double[::1] nk,
                          double[::1] sx, double[::1] sxx, double[::1] obj, Py_ssize_t k,
                          int num_threads):
    """Hard diagonal (``spherical`` empty; sxx (C, k, d)) or spherical
    (``spherical`` (k,); sxx (C, k)) E-step."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1]
    cdef Py_ssize_t n_chunks = obj.shape[0] // 3, c, start
    cdef Py_ssize_t s0 = X.strides[0] // sizeof(floating), s1 = X.strides[1] // sizeof(floating)
    cdef const floating* xp = &X[0, 0]
    cdef double* lpp = &log_prob[0] if log_prob.shape[0] == n * k and n > 0 else NULL
    cdef int64_t* lbp = &labels[0] if labels.shape[0] == n and n > 0 else NULL
    cdef const double* sph = &spherical[0] if spherical.shape[0] > 0 else NULL
    cdef int[::1] status = np.zeros(max(n_chunks, 1), dtype=np.intc)
    with nogil:
        for c in prange(n_chunks, schedule="static", num_threads=num_threads):
            start = c * chunk_size
            status[c] = _coordinate_chunk(xp, s0, s1, &sample_weight[0], &means[0],
                                          &meansT[0], &precT[0], sph, &log_norm[0],
                                          start, chunk_stop(c, chunk_size, n), k, d,
                                          lbp, lpp, &nk[c * k], &sx[c * k * d],
                                          &sxx[c * k * (1 if sph != NULL else d)],
                                          &obj[c * 3])
    _check(status)


# ------------------------------------------------------------------ hard spherical (K-means)
cdef inline double _exact_score(const floating* X, Py_ssize_t s0, Py_ssize_t s1, Py_ssize_t i,
                                const double* means, Py_ssize_t j, Py_ssize_t d,
                                const double* precision, const double* log_norm) noexcept nogil:
    """log_norm_j - p_j / 2 * ||x_i - mu_j||^2 from differences, in float64."""
    cdef Py_ssize_t a
    cdef double t, ss = 0.0
    for a in range(d):
        t = <double> X[i * s0 + a * s1] - means[j * d + a]
        ss += t * t
    return log_norm[j] - 0.5 * precision[j] * ss


cdef int _screened_chunk(const floating* X, Py_ssize_t s0, Py_ssize_t s1,
                         const double* sample_weight, const double* means,
                         const double* precision, const double* log_norm, const double* c,
                         const float* CT, const float* A, Py_ssize_t kp, double e0,
                         double e1, double h_max, Py_ssize_t start, Py_ssize_t stop,
                         Py_ssize_t k, Py_ssize_t d, int64_t* labels, double* nk, double* sx,
                         double* sxx, double* obj) noexcept nogil:
    """Hard spherical E-step (K-means) of rows start .. stop - 1, scores screened in float32.

    ``FASTEM_SR`` rows at a time, in vector lanes: x' = x - c in float32
    (``xT``, transposed, with a last feature -||x'||^2 / 2) and, for every
    component, the expanded score A_j + x' . CT[:d, j] + P_j (-||x'||^2 / 2)
    (CT's last row holds P), one multiply and one add per (row, component,
    feature).  A row whose best screened score beats every other by more than
    4 e(x) (e = e0 + e1 ||x'||^2 / 2, the bound on the screening error, see
    ``cython_backend``) takes that component; otherwise its label is the first
    maximum of the exact scores, formed from differences in float64, of every
    component within 4 e(x) of the best.  The statistics of the assigned
    component are formed from differences, as in ``_coordinate_chunk``, and
    the objective from them once a chunk.
    """
    cdef Py_ssize_t ib, i0, n_rows, r, a, j, i, best, changed = 0
    cdef double v, v0, v1, v2, v3, q0, q1, q2, q3, cut, w, maha, v_best
    cdef bint screened
    cdef double half[FASTEM_SR]
    cdef float cut_f[FASTEM_SR]
    cdef bint screened_of[FASTEM_SR]
    cdef float top[FASTEM_SR]
    cdef int count[FASTEM_SR]
    cdef int first[FASTEM_SR]
    cdef float* buf = <float*> malloc(((d + 1) * FASTEM_SR + kp * FASTEM_SR) * sizeof(float))
    if buf == NULL:
        return -1
    cdef float* xT = buf
    cdef float* sc = xT + (d + 1) * FASTEM_SR
    zero(nk, k)
    zero(sx, k * d)
    zero(sxx, k * d)
    zero(obj, 3)
    for r in range((d + 1) * FASTEM_SR):
        xT[r] = 0.0  # lanes past a short last block: 0, their scores not read
    for ib in range((stop - start + FASTEM_SR - 1) // FASTEM_SR):
        i0 = start + ib * FASTEM_SR
        n_rows = stop - i0 if stop - i0 < FASTEM_SR else FASTEM_SR
        for r in range(n_rows):
            # x - c in X's dtype, like the numba kernel (c is exact in it);
            # ||x - c||^2 from four partial sums
            q0 = 0.0
            q1 = 0.0
            q2 = 0.0
            q3 = 0.0
            a = 0
            while a + 4 <= d:
                v0 = <double> (X[(i0 + r) * s0 + a * s1] - <floating> c[a])
                v1 = <double> (X[(i0 + r) * s0 + (a + 1) * s1] - <floating> c[a + 1])
                v2 = <double> (X[(i0 + r) * s0 + (a + 2) * s1] - <floating> c[a + 2])
                v3 = <double> (X[(i0 + r) * s0 + (a + 3) * s1] - <floating> c[a + 3])
                xT[a * FASTEM_SR + r] = <float> v0
                xT[(a + 1) * FASTEM_SR + r] = <float> v1
                xT[(a + 2) * FASTEM_SR + r] = <float> v2
                xT[(a + 3) * FASTEM_SR + r] = <float> v3
                q0 += v0 * v0
                q1 += v1 * v1
                q2 += v2 * v2
                q3 += v3 * v3
                a += 4
            while a < d:
                v0 = <double> (X[(i0 + r) * s0 + a * s1] - <floating> c[a])
                xT[a * FASTEM_SR + r] = <float> v0
                q0 += v0 * v0
                a += 1
            half[r] = 0.5 * ((q0 + q1) + (q2 + q3))
            xT[d * FASTEM_SR + r] = <float> (-half[r])
        fastem_screen_tile(xT, d + 1, CT, A, kp, sc)
        fastem_screen_top(sc, k, top)
        for r in range(FASTEM_SR):
            cut = top[r] - 4.0 * (e0 + e1 * half[r]) if r < n_rows else 0.0
            cut_f[r] = <float> cut
            screened_of[r] = r < n_rows and half[r] < h_max and isfinite(cut)
        fastem_screen_count(sc, k, cut_f, count, first)
        for r in range(n_rows):
            i = i0 + r
            screened = screened_of[r]
            if count[r] == 1 and screened:
                best = first[r]
            else:
                # a close call, or scores out of float32's range: exact scores decide
                best = 0
                v_best = _exact_score(X, s0, s1, i, means, 0, d, precision, log_norm)
                for j in range(1, k):
                    if not screened or sc[j * FASTEM_SR + r] >= cut_f[r]:
                        v = _exact_score(X, s0, s1, i, means, j, d, precision, log_norm)
                        if v > v_best:
                            v_best = v
                            best = j
            if labels[i] != best:
                changed += 1
                labels[i] = best
            w = sample_weight[i]
            if w == 0.0:
                continue
            nk[best] += w
            a = 0
            while a + 4 <= d:
                v0 = <double> X[i * s0 + a * s1] - means[best * d + a]
                v1 = <double> X[i * s0 + (a + 1) * s1] - means[best * d + a + 1]
                v2 = <double> X[i * s0 + (a + 2) * s1] - means[best * d + a + 2]
                v3 = <double> X[i * s0 + (a + 3) * s1] - means[best * d + a + 3]
                sx[best * d + a] += w * v0
                sx[best * d + a + 1] += w * v1
                sx[best * d + a + 2] += w * v2
                sx[best * d + a + 3] += w * v3
                sxx[best * d + a] += w * v0 * v0
                sxx[best * d + a + 1] += w * v1 * v1
                sxx[best * d + a + 2] += w * v2 * v2
                sxx[best * d + a + 3] += w * v3 * v3
                a += 4
            while a < d:
                v0 = <double> X[i * s0 + a * s1] - means[best * d + a]
                sx[best * d + a] += w * v0
                sxx[best * d + a] += w * v0 * v0
                a += 1
    # the objective from the sums (a row's own distance and the running
    # totals in obj, a chain through memory from row to row, had cost
    # about a third of the E-step at (2e5, 2, 8))
    for j in range(k):
        if nk[j] == 0.0:  # no row: adds nothing (log_norm_j may be -inf)
            continue
        q0 = 0.0
        for a in range(d):
            q0 += sxx[j * d + a]
        maha = precision[j] * q0
        obj[0] += nk[j] * log_norm[j] - 0.5 * maha
        obj[1] += maha
    obj[2] = changed
    free(buf)
    return 0


def estep_spherical_screened(const floating[:, :] X, const double[::1] sample_weight,
                             const double[::1] means, const double[::1] precision,
                             const double[::1] log_norm, const double[::1] c,
                             const float[::1] CT, const float[::1] A, double e0, double e1,
                             double h_max, Py_ssize_t chunk_size, int64_t[::1] labels,
                             double[::1] nk, double[::1] sx, double[::1] sxx,
                             double[::1] obj, Py_ssize_t k, int num_threads):
    """Hard spherical E-step with float32 screening (see ``_screened_chunk``);
    ``CT`` (d + 1, kp) and ``A`` (kp,) padded to kp, a multiple of 4 (padding
    components: A = -inf, CT = 0)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], kp = A.shape[0]
    cdef Py_ssize_t n_chunks = obj.shape[0] // 3, ch, start
    cdef Py_ssize_t s0 = X.strides[0] // sizeof(floating), s1 = X.strides[1] // sizeof(floating)
    cdef const floating* xp = &X[0, 0]
    cdef int[::1] status = np.zeros(max(n_chunks, 1), dtype=np.intc)
    if kp % 4 != 0 or kp < k or CT.shape[0] != (d + 1) * kp:
        raise ValueError(f"screen constants of shape {CT.shape[0]}, {kp} do not fit d={d}, k={k}")
    with nogil:
        for ch in prange(n_chunks, schedule="static", num_threads=num_threads):
            start = ch * chunk_size
            status[ch] = _screened_chunk(xp, s0, s1, &sample_weight[0], &means[0],
                                         &precision[0], &log_norm[0], &c[0], &CT[0], &A[0],
                                         kp, e0, e1, h_max, start,
                                         chunk_stop(ch, chunk_size, n), k, d, &labels[0],
                                         &nk[ch * k], &sx[ch * k * d], &sxx[ch * k * d],
                                         &obj[ch * 3])
    _check(status)


# ------------------------------------------------------------------ soft diag, spherical
# feature maps of the soft path (numba_backend._soft_tiled_chunk):
# x' = x - c; o = 1 for an observed entry, 0 for NaN
cdef enum:
    LINEAR = 0      # x' (d)
    QUADRATIC = 1   # x', x'^2 (2 d)
    OBSERVED = 2    # o x', o x'^2, o (3 d)
    SPHERICAL = 3   # x', ||x'||^2 (d + 1)
    PAIRS = 4       # x', x'_a x'_b for b <= a, a-major (d + d (d + 1) / 2)


cdef inline void label_block(Py_ssize_t i0, Py_ssize_t n_rows, Py_ssize_t k, const double* lp,
                             int64_t* labels, double* log_prob) noexcept nogil:
    """The labels and log_prob (each unless NULL) of a block's rows from their
    ``lp`` (BLOCK, k), as ``finish_block`` writes them."""
    cdef Py_ssize_t r, j, best
    for r in range(n_rows):
        if log_prob != NULL:
            for j in range(k):
                log_prob[(i0 + r) * k + j] = lp[r * k + j]
        if labels != NULL:
            row_top(lp + r * k, k, &best)
            labels[i0 + r] = best


cdef int _soft_features_chunk(const floating* X, Py_ssize_t s0, Py_ssize_t s1,
                              const double* sample_weight, const double* c,
                              const double* GT, const double* A, int features,
                              Py_ssize_t start, Py_ssize_t stop, Py_ssize_t k, Py_ssize_t d,
                              Py_ssize_t mp, int64_t* labels, double* log_prob, double* nk,
                              double* mom, double* obj, double* scat) noexcept nogil:
    """Soft E-step whose log-densities are A + F GT for the rows' features F.

    Four rows at a time: their features (``features``) are staged in F
    (rows of mp floats, zero past the m features), their scores are
    A + F GT (``fastem_block_scores``, GT (mp, k) zero past m), the block
    softmax gives their weighted responsibilities, and ``fastem_moments``
    adds the features' moments to ``mom`` (k, mp) once ``SUB`` rows are
    staged.  The caller turns the moments about c into the statistics
    (``backends._soft``), as for the numba backend.  Unless ``scat`` is NULL
    it receives the weighted scatter of the features, sum_i w_i f_i f_i^T
    (mp, mp; exact on and below the diagonal; mp a multiple of 8).  With ``mom``
    NULL (statistics off) only the labels and log_prob are written: no exps,
    no moments, and nk, obj and scat are not touched.  Before, the scores
    were distances from differences, one row at a time with NaN (diagonal
    with NaN, (1e5, 16, 8), 2 threads: 7.0-7.3 -> 3.9 ms a call), and the
    spherical moments took the diagonal's 2 d features (cython/numba at the
    four reference shapes: 1.37-1.73 -> 1.08-1.35).
    """
    cdef double prod = 1.0  # deferred logs of row totals (finish_block)
    cdef Py_ssize_t ib, i0, n_rows, r, a, b, q, j, sub = 0
    cdef Py_ssize_t m = 3 * d if features == OBSERVED else (
        d + 1 if features == SPHERICAL else (
            d + d * (d + 1) // 2 if features == PAIRS else (d if features == LINEAR else 2 * d)))
    cdef double x, t, ss, ss0, ss1, ss2, ss3
    cdef const floating* xr
    cdef double* row
    cdef Py_ssize_t best_of[BLOCK]
    cdef Py_ssize_t zs = SUB * mp if scat != NULL else 0
    cdef double* buf = <double*> malloc((2 * BLOCK * k + SUB * mp + SUB * k + zs)
                                        * sizeof(double))
    if buf == NULL:
        return -1
    cdef double* lp = buf
    cdef double* wr = lp + BLOCK * k
    cdef double* F = wr + BLOCK * k
    cdef double* WRS = F + SUB * mp
    cdef double* Z = WRS + SUB * k  # w f (scatter only)
    cdef Py_ssize_t row_bytes = d * <Py_ssize_t> sizeof(floating)
    cdef bint prefetch = s1 == 1 and row_bytes >= 64
    zero(F, SUB * mp)  # the padding features stay 0
    if scat != NULL:
        zero(Z, zs)
        zero(scat, mp * mp)
    if mom != NULL:
        zero(mom, k * mp)
        zero(nk, k)
        zero(obj, 3)
    for ib in range((stop - start + BLOCK - 1) // BLOCK):
        i0 = start + ib * BLOCK
        n_rows = stop - i0 if stop - i0 < BLOCK else BLOCK
        for r in range(BLOCK):
            row = F + (sub + r) * mp
            if r >= n_rows:  # rows past the end (weight 0) keep finite features: 0
                for a in range(m):
                    row[a] = 0.0
                continue
            xr = X + (i0 + r) * s0
            if prefetch and i0 + r + SUB < stop:
                # the row SUB rows on, into the cache while these are used (its
                # loads had waited on memory: the most of the staging's time at
                # d = 64); rows shorter than a cache line are left to the
                # hardware's own prefetch of a stream
                fastem_prefetch_bytes(<const char*> (X + (i0 + r + SUB) * s0), row_bytes)
            if features == SPHERICAL:
                # four partial sums of the squares, so that the additions do
                # not wait on one another
                ss0 = ss1 = ss2 = ss3 = 0.0
                for a in range(0, d - d % 4, 4):
                    t = xr[a * s1] - c[a]
                    row[a] = t
                    ss0 = fastem_fma(t, t, ss0)
                    t = xr[(a + 1) * s1] - c[a + 1]
                    row[a + 1] = t
                    ss1 = fastem_fma(t, t, ss1)
                    t = xr[(a + 2) * s1] - c[a + 2]
                    row[a + 2] = t
                    ss2 = fastem_fma(t, t, ss2)
                    t = xr[(a + 3) * s1] - c[a + 3]
                    row[a + 3] = t
                    ss3 = fastem_fma(t, t, ss3)
                ss = (ss0 + ss1) + (ss2 + ss3)
                for a in range(d - d % 4, d):
                    t = xr[a * s1] - c[a]
                    row[a] = t
                    ss = fastem_fma(t, t, ss)
                row[d] = ss
            elif features == PAIRS:
                for a in range(d):
                    row[a] = xr[a * s1] - c[a]
                q = d
                for a in range(d):
                    for b in range(a + 1):
                        row[q + b] = row[a] * row[b]
                    q += a + 1
            elif features == LINEAR:
                for a in range(d):
                    row[a] = xr[a * s1] - c[a]
            elif features == QUADRATIC:
                for a in range(d):
                    t = xr[a * s1] - c[a]
                    row[a] = t
                    row[d + a] = t * t
            else:
                for a in range(d):
                    x = xr[a * s1]
                    if isnan(x):
                        row[a] = 0.0
                        row[d + a] = 0.0
                        row[2 * d + a] = 0.0
                    else:
                        t = x - c[a]
                        row[a] = t
                        row[d + a] = t * t
                        row[2 * d + a] = 1.0
        fastem_block_scores(F + sub * mp, GT, A, k, mp, lp)
        if mom == NULL:  # statistics off (sub stays 0)
            label_block(i0, n_rows, k, lp, labels, log_prob)
            continue
        finish_block(i0, n_rows, k, lp, NULL, False, sample_weight, labels, log_prob, wr,
                     best_of, &prod, obj)
        stage_weights(wr, sub, k, WRS, nk)
        if scat != NULL:
            for r in range(BLOCK):
                t = sample_weight[i0 + r] if r < n_rows else 0.0
                for a in range(m):
                    Z[(sub + r) * mp + a] = t * F[(sub + r) * mp + a]
            if sub + BLOCK == SUB:
                fastem_lower_moments(F, Z, SUB, mp, m, scat)
        sub = add_staged(F, WRS, sub + BLOCK, mp, k, mom)
    if sub > 0:
        fastem_moments(F, WRS, sub, mp, k, mom)
        if scat != NULL:
            fastem_lower_moments(F, Z, sub, mp, m, scat)
    if mom != NULL:
        flush_log_product(&prod, obj)
    free(buf)
    return 0


def estep_soft_features(const floating[:, :] X, const double[::1] sample_weight,
                        const double[::1] c, const double[::1] GT, const double[::1] A,
                        int features, Py_ssize_t chunk_size, int64_t[::1] labels,
                        double[::1] log_prob, double[::1] nk, double[::1] mom,
                        double[::1] obj, double[::1] scat, Py_ssize_t k, Py_ssize_t mp,
                        int num_threads):
    """Soft E-step on the feature map ``features`` (0 linear, 1 quadratic,
    2 observed, 3 spherical, 4 pairs); ``mom`` receives the moments (C, k, mp)
    about c and ``scat``, unless empty, the features' scatters (C, mp, mp).
    With ``mom`` empty (statistics off), only the labels and log_prob of the
    ``n_chunks`` chunks are written."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1]
    cdef bint moments = mom.shape[0] > 0
    cdef Py_ssize_t n_chunks = obj.shape[0] // 3 if moments else (n + chunk_size - 1) // chunk_size
    cdef Py_ssize_t ch, start
    cdef Py_ssize_t s0 = X.strides[0] // sizeof(floating), s1 = X.strides[1] // sizeof(floating)
    cdef const floating* xp = &X[0, 0]
    cdef double* lpp = &log_prob[0] if log_prob.shape[0] == n * k and n > 0 else NULL
    cdef int64_t* lbp = &labels[0] if labels.shape[0] == n and n > 0 else NULL
    cdef int[::1] status = np.zeros(max(n_chunks, 1), dtype=np.intc)
    if features not in (LINEAR, QUADRATIC, OBSERVED, SPHERICAL, PAIRS):
        raise ValueError(f"features must be 0, 1, 2, 3 or 4, got {features}")
    if scat.shape[0] > 0 and (scat.shape[0] != n_chunks * mp * mp or mp % 8):
        raise ValueError("scat must hold one (mp, mp) scatter a chunk, mp a multiple of 8")
    with nogil:
        for ch in prange(n_chunks, schedule="static", num_threads=num_threads):
            start = ch * chunk_size
            status[ch] = _soft_features_chunk(xp, s0, s1, &sample_weight[0], &c[0], &GT[0],
                                              &A[0], features, start,
                                              chunk_stop(ch, chunk_size, n), k, d, mp,
                                              lbp, lpp, &nk[ch * k] if moments else NULL,
                                              &mom[ch * k * mp] if moments else NULL,
                                              &obj[ch * 3] if moments else NULL,
                                              &scat[ch * mp * mp] if scat.shape[0] > 0
                                              else NULL)
    _check(status)


def pairs_statistics(const double[:, :, :] M, const double[:, ::1] shifted,
                     const double[:, ::1] nk, double[:, :, ::1] sx, double[:, :, :, ::1] sxx,
                     int num_threads):
    """The full model's statistics from the moments of ``_soft``'s PAIRS map
    (see ``_soft.MODELS``), chunk by chunk in parallel."""
    cdef Py_ssize_t n_chunks = M.shape[0], k = shifted.shape[0], d = shifted.shape[1]
    cdef Py_ssize_t ch, j, a, b, q
    cdef double n, s1a, ma, mb
    with nogil:
        for ch in prange(n_chunks, schedule="static", num_threads=num_threads):
            for j in range(k):
                n = nk[ch, j]
                for a in range(d):
                    sx[ch, j, a] = M[ch, j, a] - n * shifted[j, a]
                q = d
                for a in range(d):
                    s1a = M[ch, j, a]
                    ma = shifted[j, a]
                    for b in range(a + 1):
                        mb = shifted[j, b]
                        sxx[ch, j, a, b] = (M[ch, j, q + b] - ma * M[ch, j, b] - s1a * mb
                                           + n * (ma * mb))
                    for b in range(a + 1, d):
                        sxx[ch, j, a, b] = 0.0
                    q = q + a + 1


def coordinate_statistics(const double[:, :, :] M, const double[:, ::1] shifted,
                          const double[:, ::1] nk, const double[:, ::1] precision,
                          bint spherical, double[:, :, ::1] nko, double[:, :, ::1] sx,
                          double[:, :, ::1] sxx):
    """The statistics of the soft diagonal (``precision`` empty), spherical
    (``spherical``, sxx (C, k, 1)) and NaN-diagonal (``precision`` (k, d), M
    with the o features) E-steps from their moments (formulas at
    ``_soft.MODELS``), as numba's ``_coordinate_statistics``; serial."""
    cdef Py_ssize_t C = sx.shape[0], k = sx.shape[1], d = sx.shape[2], c, j, a
    cdef bint observed = precision.shape[0] > 0
    cdef double n, s1, m, so, cross, norm2
    with nogil:
        for c in range(C):
            for j in range(k):
                n = nk[c, j]
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
                            cross = cross + s1 * m
                            norm2 = norm2 + m * m
                        else:
                            sxx[c, j, a] = M[c, j, d + a] - (2.0 * m) * s1 + n * (m * m)
                if spherical:
                    sxx[c, j, 0] = M[c, j, d] - 2.0 * cross + n * norm2


# ------------------------------------------------------------------ Bernoulli
cdef int _bernoulli_chunk(const floating* X, Py_ssize_t s0, Py_ssize_t s1,
                          const double* sample_weight, const double* logitT,
                          const double* log_norm, bint hard, Py_ssize_t start,
                          Py_ssize_t stop, Py_ssize_t k, Py_ssize_t d, int64_t* labels,
                          double* log_prob, double* nk, double* sx,
                          double* obj) noexcept nogil:
    """log(w_j p_j(x)) = log_norm_j + x . logit_j; ``logitT`` (d, k).

    Soft statistics: the moments of ``SUB`` rows at a time, in a register
    tile (``fastem_moments``), as in ``_coordinate_chunk``.
    """
    cdef double prod = 1.0  # deferred logs of row totals (assign_one)
    cdef Py_ssize_t ib, i0, n_rows, r, a, j, sub = 0
    cdef Py_ssize_t mp = (d + 3) // 4 * 4
    cdef Py_ssize_t best_of[BLOCK]
    cdef double w
    cdef double* buf = <double*> malloc((BLOCK * d + 2 * BLOCK * k + 1 + SUB * mp + SUB * k
                                         + k * mp) * sizeof(double))
    if buf == NULL:
        return -1
    cdef double* xb = buf
    cdef double* lp = xb + BLOCK * d
    cdef double* wr = lp + BLOCK * k
    cdef double* F = wr + BLOCK * k + 1
    cdef double* WRS = F + SUB * mp
    cdef double* mom = WRS + SUB * k
    cdef double* row
    zero(nk, k)
    zero(sx, k * d)
    zero(obj, 3)
    if not hard:
        zero(F, SUB * mp)  # the padding features stay 0
        zero(mom, k * mp)
    for ib in range((stop - start + BLOCK - 1) // BLOCK):
        i0 = start + ib * BLOCK
        n_rows = stop - i0 if stop - i0 < BLOCK else BLOCK
        load_block(X, s0, s1, i0, n_rows, d, xb)
        fastem_block_scores(xb, logitT, log_norm, k, d, lp)
        finish_block(i0, n_rows, k, lp, NULL, hard, sample_weight, labels, log_prob,
                     wr, best_of, &prod, obj)
        if hard:
            for r in range(n_rows):
                j = best_of[r]
                if j >= 0:
                    w = sample_weight[i0 + r]
                    nk[j] += w
                    for a in range(d):
                        sx[j * d + a] += w * xb[r * d + a]
            continue
        stage_weights(wr, sub, k, WRS, nk)
        for r in range(BLOCK):  # rows past the end: zeros (load_block)
            row = F + (sub + r) * mp
            for a in range(d):
                row[a] = xb[r * d + a]
        sub = add_staged(F, WRS, sub + BLOCK, mp, k, mom)
    if not hard:
        if sub > 0:
            fastem_moments(F, WRS, sub, mp, k, mom)
        for j in range(k):
            for a in range(d):
                sx[j * d + a] = mom[j * mp + a]
    flush_log_product(&prod, obj)
    free(buf)
    return 0


def estep_bernoulli(const floating[:, :] X, const double[::1] sample_weight,
                    const double[::1] logitT, const double[::1] log_norm, bint hard,
                    Py_ssize_t chunk_size, int64_t[::1] labels, double[::1] log_prob,
                    double[::1] nk, double[::1] sx, double[::1] obj, Py_ssize_t k,
                    int num_threads):
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
            status[c] = _bernoulli_chunk(xp, s0, s1, &sample_weight[0], &logitT[0],
                                         &log_norm[0], hard, start,
                                         chunk_stop(c, chunk_size, n), k, d, lbp,
                                         lpp, &nk[c * k], &sx[c * k * d], &obj[c * 3])
    _check(status)


# ------------------------------------------------------------------ distances
cdef int _sqdist_chunk(const floating* X, Py_ssize_t s0, Py_ssize_t s1,
                       const double* centersT, Py_ssize_t start, Py_ssize_t stop,
                       Py_ssize_t m, Py_ssize_t d, double* out) noexcept nogil:
    """out[i, j] = ||x_i - c_j||^2; ``centersT`` (d, m).

    From ``TILE_MIN_D`` features, four rows' squared differences are summed
    in vector registers (``fastem_sq_distances``): summed in memory, a load
    and a store per term had cost about a third more at (1e6, 32, 128).
    """
    cdef Py_ssize_t ib, i0, n_rows, r, a, j
    cdef Py_ssize_t dp = (d + 3) // 4 * 4
    cdef double* buf = <double*> malloc((BLOCK * dp + BLOCK * m + m * dp + 1) * sizeof(double))
    if buf == NULL:
        return -1
    cdef double* xb = buf
    cdef double* acc = xb + BLOCK * dp
    cdef double* CP = acc + BLOCK * m  # the centers, rows of dp (zero past d)
    cdef bint tiled = d >= TILE_MIN_D
    if tiled:
        zero(xb, BLOCK * dp)
        zero(CP, m * dp)
        for a in range(d):
            for j in range(m):
                CP[j * dp + a] = centersT[a * m + j]
    for ib in range((stop - start + BLOCK - 1) // BLOCK):
        i0 = start + ib * BLOCK
        n_rows = stop - i0 if stop - i0 < BLOCK else BLOCK
        if tiled:
            for r in range(n_rows):  # rows past the end: stale, not written out
                for a in range(d):
                    xb[r * dp + a] = X[(i0 + r) * s0 + a * s1]
            if n_rows == BLOCK:
                fastem_sq_distances(xb, BLOCK, dp, CP, m, out + i0 * m)
                continue
            fastem_sq_distances(xb, BLOCK, dp, CP, m, acc)
        else:
            load_block(X, s0, s1, i0, n_rows, d, xb)
            _block_sq_distances(xb, d, centersT, m, acc)
        for r in range(n_rows):
            for j in range(m):
                out[(i0 + r) * m + j] = acc[r * m + j]
    free(buf)
    return 0


def sqdist(const floating[:, :] X, const double[::1] centersT, Py_ssize_t chunk_size,
           double[::1] out, Py_ssize_t m, int num_threads):
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1]
    cdef Py_ssize_t n_chunks = (n + chunk_size - 1) // chunk_size, c, start
    cdef Py_ssize_t s0 = X.strides[0] // sizeof(floating), s1 = X.strides[1] // sizeof(floating)
    cdef const floating* xp = &X[0, 0]
    cdef int[::1] status = np.zeros(max(n_chunks, 1), dtype=np.intc)
    with nogil:
        for c in prange(n_chunks, schedule="static", num_threads=num_threads):
            start = c * chunk_size
            status[c] = _sqdist_chunk(xp, s0, s1, &centersT[0], start,
                                      chunk_stop(c, chunk_size, n), m, d, &out[0])
    _check(status)


# ------------------------------------------------------------------ validation
cdef void _count_nonfinite_chunk(const floating* X, Py_ssize_t s0, Py_ssize_t s1,
                                 Py_ssize_t start, Py_ssize_t stop, Py_ssize_t d,
                                 double* out) noexcept nogil:
    # x * 0 is 0 for a finite x and NaN otherwise: one sum clears a chunk of
    # finite values (built without -ffast-math, so it is not folded away).
    # Rows in C order are one run of entries, summed in four chains
    cdef Py_ssize_t i, a, t, m
    cdef double total = 0.0, t1 = 0.0, t2 = 0.0, t3 = 0.0, nan = 0.0, inf = 0.0
    cdef floating x
    cdef const floating* run
    if s1 == 1 and s0 == d:
        run = X + start * d
        m = (stop - start) * d
        t = 0
        while t + 4 <= m:
            total += run[t] * 0.0
            t1 += run[t + 1] * 0.0
            t2 += run[t + 2] * 0.0
            t3 += run[t + 3] * 0.0
            t += 4
        while t < m:
            total += run[t] * 0.0
            t += 1
        total += t1 + t2 + t3
    else:
        for i in range(start, stop):
            for a in range(d):
                total += X[i * s0 + a * s1] * 0.0
    if total == 0.0:
        out[0] = 0.0
        out[1] = 0.0
        return
    for i in range(start, stop):
        for a in range(d):
            x = X[i * s0 + a * s1]
            if isnan(x):
                nan += 1.0
            elif not isfinite(x):
                inf += 1.0
    out[0] = nan
    out[1] = inf


def count_nonfinite(const floating[:, :] X, Py_ssize_t chunk_size, double[::1] out,
                    int num_threads):
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1]
    cdef Py_ssize_t n_chunks = out.shape[0] // 2, c
    cdef Py_ssize_t s0 = X.strides[0] // sizeof(floating), s1 = X.strides[1] // sizeof(floating)
    cdef const floating* xp = &X[0, 0]
    with nogil:
        for c in prange(n_chunks, schedule="static", num_threads=num_threads):
            _count_nonfinite_chunk(xp, s0, s1, c * chunk_size, chunk_stop(c, chunk_size, n),
                                   d, &out[2 * c])
