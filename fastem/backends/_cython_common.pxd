# cython: language_level=3
"""Helpers shared by the Cython kernels: row blocks, the row-wise softmax and
the moment tiles (``fastem_moments``, ``fastem_lower_moments``) through which
the soft kernels add the statistics of ``SUB`` staged rows at once.

Every helper runs without the GIL on raw pointers into C-contiguous float64
buffers, except ``X``, which is read through its element strides in its own
dtype (float32 or float64) and converted to float64 on load.  Rows are taken
``BLOCK`` at a time; a short last block is padded with zero rows.
"""

from libc.math cimport log, INFINITY
from libc.stdint cimport int64_t
from libc.string cimport memset

ctypedef fused floating:
    float
    double

cdef enum:
    BLOCK = 4

# rows whose soft moments are added at once (``fastem_moments``), a multiple
# of BLOCK: their features and weights, SUB (2 d + 3) + SUB k floats, stay
# near the core
cdef enum:
    SUB = 64


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* exp(x) for x <= 0, within about 1 ulp; 0 below -708: the algorithm of
       numba_backend._exp_nonpositive (Cody-Waite reduction x = n ln 2 + r,
       |r| <= ln 2 / 2, Taylor polynomial of degree 13, 2^n from the bits of
       the rounded n).  Only arithmetic and selects, so that a loop over it
       vectorizes: libm's exp is one call per value. */
    static inline double fastem_exp_nonpositive(double x) {
        const double round = 6755399441055744.0;      /* 1.5 * 2^52 */
        const double ln2_hi = 6.93147180369123816490e-01;
        const double ln2_lo = 1.90821492927058770002e-10;
        double xc = x > -708.0 ? x : -708.0;
        double t = xc * 1.4426950408889634 + round;
        double n = t - round;
        double r = (xc - n * ln2_hi) - n * ln2_lo;
        double p = 1.0 / 6227020800.0;
        int64_t bits;
        double scale;
        p = p * r + 1.0 / 479001600.0;
        p = p * r + 1.0 / 39916800.0;
        p = p * r + 1.0 / 3628800.0;
        p = p * r + 1.0 / 362880.0;
        p = p * r + 1.0 / 40320.0;
        p = p * r + 1.0 / 5040.0;
        p = p * r + 1.0 / 720.0;
        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        p = p * r + 1.0;
        p = p * r + 1.0;
        /* the low bits of t hold n: 2^n has the biased exponent n + 1023 */
        memcpy(&bits, &t, sizeof bits);
        bits = (bits - 0x4338000000000000LL + 1023) << 52;
        memcpy(&scale, &bits, sizeof scale);
        return x >= -708.0 ? p * scale : 0.0;
    }
    """
    double fastem_exp_nonpositive(double x) nogil


cdef extern from *:
    """
    #include <string.h>
    /* The moment tiles: O[p * os + q] += sum_{i < n} A[i * as + p] B[i * bs + q]
       for a block of 4 p by 8 q (``fastem_tile_4x8``, 32-byte vectors, with
       AVX) or 4 p by 4 q (``fastem_tile_4x4``, 16-byte vectors: without AVX,
       GCC keeps split 32-byte vectors on the stack, and 4 x 8 sums would not
       fit in the 16 registers).  The block's sums stay in vector registers
       while the n rows stream past, summed in row order, and O is read and
       written once: a sum kept in memory costs a load and a store a term. */
    #if defined(__GNUC__)
    typedef double fastem_v4 __attribute__((vector_size(32)));
    typedef double fastem_v2 __attribute__((vector_size(16)));
    static inline void fastem_add_v4(double* o, fastem_v4 s) {
        fastem_v4 t;
        memcpy(&t, o, sizeof t);
        t += s;
        memcpy(o, &t, sizeof t);
    }
    static inline void fastem_add_v2(double* o, fastem_v2 s) {
        fastem_v2 t;
        memcpy(&t, o, sizeof t);
        t += s;
        memcpy(o, &t, sizeof t);
    }
    /* One body for both widths (V: the vector type, W: its lanes, ADD: its
       read-add-write): 4 p by 2 W q, the 8 sums in registers. */
    #define FASTEM_TILE(NAME, V, W, ADD)                                           \
    static inline void NAME(const double* A, long as, const double* B, long bs,   \
                            long n, double* O, long os) {                          \
        V s00 = {0.0}, s01 = s00, s10 = s00, s11 = s00;                            \
        V s20 = s00, s21 = s00, s30 = s00, s31 = s00, b0, b1;                      \
        long i;                                                                    \
        for (i = 0; i < n; i++) {                                                  \
            const double* a = A + i * as;                                          \
            memcpy(&b0, B + i * bs, sizeof b0);                                    \
            memcpy(&b1, B + i * bs + W, sizeof b1);                                \
            s00 += a[0] * b0;                                                      \
            s01 += a[0] * b1;                                                      \
            s10 += a[1] * b0;                                                      \
            s11 += a[1] * b1;                                                      \
            s20 += a[2] * b0;                                                      \
            s21 += a[2] * b1;                                                      \
            s30 += a[3] * b0;                                                      \
            s31 += a[3] * b1;                                                      \
        }                                                                          \
        ADD(O, s00);                                                               \
        ADD(O + W, s01);                                                           \
        ADD(O + os, s10);                                                          \
        ADD(O + os + W, s11);                                                      \
        ADD(O + 2 * os, s20);                                                      \
        ADD(O + 2 * os + W, s21);                                                  \
        ADD(O + 3 * os, s30);                                                      \
        ADD(O + 3 * os + W, s31);                                                  \
    }
    FASTEM_TILE(fastem_tile_4x8, fastem_v4, 4, fastem_add_v4)
    FASTEM_TILE(fastem_tile_4x4, fastem_v2, 2, fastem_add_v2)
    #undef FASTEM_TILE
    #endif
    /* The same sums for any block, in plain C (other compilers, leftovers). */
    static void fastem_tile_plain(const double* A, long as, const double* B, long bs,
                                  long n, double* O, long os, long np, long nq) {
        long p, q, i;
        for (p = 0; p < np; p++) {
            for (q = 0; q < nq; q++) {
                double s = 0.0;
                for (i = 0; i < n; i++) {
                    s += A[i * as + p] * B[i * bs + q];
                }
                O[p * os + q] += s;
            }
        }
    }

    /* M[j * mp + a] += sum_{r < n} WR[r * k + j] F[r * mp + a] for j < k and
       a < mp (mp a multiple of 4): the moments of n rows' features F (n, mp)
       under their weights WR (n, k), row-major; tiles of 4 components. */
    static void fastem_moments(const double* F, const double* WR, long n, long mp,
                               long k, double* M) {
        long j0 = 0, a0;
    #if defined(__GNUC__)
        for (; j0 + 4 <= k; j0 += 4) {
            a0 = 0;
    #if defined(__AVX__)
            for (; a0 + 8 <= mp; a0 += 8) {
                fastem_tile_4x8(WR + j0, k, F + a0, mp, n, M + j0 * mp + a0, mp);
            }
    #endif
            for (; a0 < mp; a0 += 4) {
                fastem_tile_4x4(WR + j0, k, F + a0, mp, n, M + j0 * mp + a0, mp);
            }
        }
    #endif
        fastem_tile_plain(WR + j0, k, F, mp, n, M + j0 * mp, mp, k - j0, mp);
    }

    /* S[a * dp + b] += sum_{i < rows} D[i * dp + a] Z[i * dp + b] over the
       blocks of 4 a by 8 b (4 b without AVX) that meet the lower triangle
       b <= a < d; D and Z hold rows of dp floats (a multiple of 8, zero past
       d) (numba_backend._lower_moment_tile). */
    static void fastem_lower_moments(const double* D, const double* Z, long rows,
                                     long dp, long d, double* S) {
        long a0, b0;
        for (a0 = 0; a0 < d; a0 += 4) {
    #if defined(__GNUC__) && defined(__AVX__)
            for (b0 = 0; b0 < a0 + 4; b0 += 8) {
                fastem_tile_4x8(D + a0, dp, Z + b0, dp, rows, S + a0 * dp + b0, dp);
            }
    #elif defined(__GNUC__)
            for (b0 = 0; b0 < a0 + 4; b0 += 4) {
                fastem_tile_4x4(D + a0, dp, Z + b0, dp, rows, S + a0 * dp + b0, dp);
            }
    #else
            fastem_tile_plain(D + a0, dp, Z, dp, rows, S + a0 * dp, dp, 4, a0 + 4);
    #endif
        }
    }

    /* Y[r * dp + b] += sum_{a <= b, a < d} XT[a * rows + r] U[a * dp + b] for
       r < rows (a multiple of 4) and b < dp (a multiple of 8): the rows of
       XT (d, rows, transposed) times the upper triangular U (d, dp, zero
       past column d), in blocks of 4 rows by 8 columns (4 without AVX) that
       read only the rows a of U that meet their columns. */
    static inline void fastem_upper_product(const double* XT, long rows, const double* U,
                                            long dp, long d, double* Y) {
        long r0, b0, n;
    #if defined(__GNUC__) && defined(__AVX__)
        enum { STEP = 8 };
    #else
        enum { STEP = 4 };
    #endif
        for (b0 = 0; b0 < dp; b0 += STEP) {
            n = b0 + STEP < d ? b0 + STEP : d;
            for (r0 = 0; r0 < rows; r0 += 4) {
    #if defined(__GNUC__) && defined(__AVX__)
                fastem_tile_4x8(XT + r0, rows, U + b0, dp, n, Y + r0 * dp + b0, dp);
    #elif defined(__GNUC__)
                fastem_tile_4x4(XT + r0, rows, U + b0, dp, n, Y + r0 * dp + b0, dp);
    #else
                fastem_tile_plain(XT + r0, rows, U + b0, dp, n, Y + r0 * dp + b0, dp, 4,
                                  STEP);
    #endif
            }
        }
    }

    /* maha[r * k + j] = sum_{b < dp} (Y[r * dp + b] - CW[j * dp + b])^2 for
       r < rows (a multiple of 4), j < k, dp a multiple of 4 (padding 0 - 0):
       four rows' squares summed in vectors, added up once a component. */
    static inline void fastem_sq_distances(const double* Y, long rows, long dp,
                                           const double* CW, long k, double* maha) {
        long r0, j, b;
        for (r0 = 0; r0 < rows; r0 += 4) {
            const double* y = Y + r0 * dp;
            for (j = 0; j < k; j++) {
                const double* c = CW + j * dp;
    #if defined(__GNUC__)
                fastem_v4 s0 = {0.0, 0.0, 0.0, 0.0}, s1 = s0, s2 = s0, s3 = s0, cv, t;
                for (b = 0; b < dp; b += 4) {
                    memcpy(&cv, c + b, sizeof cv);
                    memcpy(&t, y + b, sizeof t);
                    t -= cv;
                    s0 += t * t;
                    memcpy(&t, y + dp + b, sizeof t);
                    t -= cv;
                    s1 += t * t;
                    memcpy(&t, y + 2 * dp + b, sizeof t);
                    t -= cv;
                    s2 += t * t;
                    memcpy(&t, y + 3 * dp + b, sizeof t);
                    t -= cv;
                    s3 += t * t;
                }
                maha[r0 * k + j] = (s0[0] + s0[1]) + (s0[2] + s0[3]);
                maha[(r0 + 1) * k + j] = (s1[0] + s1[1]) + (s1[2] + s1[3]);
                maha[(r0 + 2) * k + j] = (s2[0] + s2[1]) + (s2[2] + s2[3]);
                maha[(r0 + 3) * k + j] = (s3[0] + s3[1]) + (s3[2] + s3[3]);
    #else
                long r;
                for (r = 0; r < 4; r++) {
                    double s = 0.0;
                    for (b = 0; b < dp; b++) {
                        double t = y[r * dp + b] - c[b];
                        s += t * t;
                    }
                    maha[(r0 + r) * k + j] = s;
                }
    #endif
            }
        }
    }
    """
    void fastem_moments(const double* F, const double* WR, long n, long mp, long k,
                        double* M) nogil
    void fastem_lower_moments(const double* D, const double* Z, long rows, long dp, long d,
                              double* S) nogil
    void fastem_upper_product(const double* XT, long rows, const double* U, long dp, long d,
                              double* Y) nogil
    void fastem_sq_distances(const double* Y, long rows, long dp, const double* CW, long k,
                             double* maha) nogil


cdef extern from *:
    """
    #include <string.h>
    /* lp[r * k + j] = base_j + sum_a xb[r, a] GT[a, j] for the 4 rows of xb
       (4, d), GT (d, k): eight components at a time (then four), the four
       rows' sums in vector registers, summed in feature order.  Eight sums a
       feature reuse each row's value twice: four at a time, the loads had
       outnumbered the multiply-adds (one thread, ns a row: full (5e4, 64, 8)
       2472 -> 1873, (1e5, 16, 16) 349 -> 277; Bernoulli (2e5, 64, 32)
       358 -> 316; the same bits). */
    static void fastem_block_scores(const double* xb, const double* GT, const double* base,
                                    long k, long d, double* lp) {
        long j0 = 0, j, a, r;
    #if defined(__GNUC__)
        typedef double v4 __attribute__((vector_size(32)));
        for (; j0 + 8 <= k; j0 += 8) {
            v4 s0, s1, s2, s3, t0, t1, t2, t3, u, v;
            memcpy(&s0, base + j0, sizeof s0);
            memcpy(&t0, base + j0 + 4, sizeof t0);
            s1 = s0;
            s2 = s0;
            s3 = s0;
            t1 = t0;
            t2 = t0;
            t3 = t0;
            for (a = 0; a < d; a++) {
                double x0 = xb[a], x1 = xb[d + a], x2 = xb[2 * d + a], x3 = xb[3 * d + a];
                memcpy(&u, GT + a * k + j0, sizeof u);
                memcpy(&v, GT + a * k + j0 + 4, sizeof v);
                s0 += x0 * u;
                t0 += x0 * v;
                s1 += x1 * u;
                t1 += x1 * v;
                s2 += x2 * u;
                t2 += x2 * v;
                s3 += x3 * u;
                t3 += x3 * v;
            }
            memcpy(lp + j0, &s0, sizeof s0);
            memcpy(lp + j0 + 4, &t0, sizeof t0);
            memcpy(lp + k + j0, &s1, sizeof s1);
            memcpy(lp + k + j0 + 4, &t1, sizeof t1);
            memcpy(lp + 2 * k + j0, &s2, sizeof s2);
            memcpy(lp + 2 * k + j0 + 4, &t2, sizeof t2);
            memcpy(lp + 3 * k + j0, &s3, sizeof s3);
            memcpy(lp + 3 * k + j0 + 4, &t3, sizeof t3);
        }
        for (; j0 + 4 <= k; j0 += 4) {
            v4 s0, s1, s2, s3, u;
            memcpy(&s0, base + j0, sizeof s0);
            s1 = s0;
            s2 = s0;
            s3 = s0;
            for (a = 0; a < d; a++) {
                memcpy(&u, GT + a * k + j0, sizeof u);
                s0 += xb[a] * u;
                s1 += xb[d + a] * u;
                s2 += xb[2 * d + a] * u;
                s3 += xb[3 * d + a] * u;
            }
            memcpy(lp + j0, &s0, sizeof s0);
            memcpy(lp + k + j0, &s1, sizeof s1);
            memcpy(lp + 2 * k + j0, &s2, sizeof s2);
            memcpy(lp + 3 * k + j0, &s3, sizeof s3);
        }
    #endif
        for (r = 0; r < 4; r++) {
            for (j = j0; j < k; j++) {
                double t = base[j];
                for (a = 0; a < d; a++) {
                    t += xb[r * d + a] * GT[a * k + j];
                }
                lp[r * k + j] = t;
            }
        }
    }
    """
    void fastem_block_scores(const double* xb, const double* GT, const double* base, long k,
                             long d, double* lp) nogil

cdef inline void stage_weights(const double* wr, Py_ssize_t sub, Py_ssize_t k, double* WRS,
                               double* nk) noexcept nogil:
    """A block's weighted responsibilities ``wr`` (BLOCK, k) into rows sub ..
    sub + BLOCK - 1 of WRS (for ``add_staged``), their sums over the rows
    added to nk."""
    cdef Py_ssize_t r, j
    for r in range(BLOCK):
        for j in range(k):
            WRS[(sub + r) * k + j] = wr[r * k + j]
    for j in range(k):
        nk[j] += wr[j] + wr[k + j] + wr[2 * k + j] + wr[3 * k + j]


cdef inline Py_ssize_t add_staged(const double* F, const double* WR, Py_ssize_t staged,
                                  Py_ssize_t mp, Py_ssize_t k, double* M) noexcept nogil:
    """``staged`` rows of features F and weights WR are staged; once they are
    ``SUB``, add their moments to M (``fastem_moments``) and return 0, else
    return ``staged``."""
    if staged == SUB:
        fastem_moments(F, WR, staged, mp, k, M)
        return 0
    return staged


cdef inline void mean_of_means(const double* means, Py_ssize_t k, Py_ssize_t d,
                               double* c) noexcept nogil:
    """c = the mean of the k rows of ``means`` (k, d): the shift of the soft
    kernels' moments about c, which keeps them well conditioned."""
    cdef Py_ssize_t a, j
    cdef double t
    for a in range(d):
        t = 0.0
        for j in range(k):
            t += means[j * d + a]
        c[a] = t / k


cdef inline void zero(double* a, Py_ssize_t size) noexcept nogil:
    memset(a, 0, size * sizeof(double))


cdef inline Py_ssize_t chunk_stop(Py_ssize_t c, Py_ssize_t chunk_size,
                                  Py_ssize_t n) noexcept nogil:
    """End of chunk c's rows: min(n, (c + 1) * chunk_size)."""
    cdef Py_ssize_t stop = (c + 1) * chunk_size
    return stop if stop < n else n


cdef inline void load_block(const floating* X, Py_ssize_t s0, Py_ssize_t s1,
                            Py_ssize_t i0, Py_ssize_t n_rows, Py_ssize_t d,
                            double* xb) noexcept nogil:
    """xb[r, :] = X[i0 + r, :] as float64 for r < n_rows, zeros after."""
    cdef Py_ssize_t r, a
    cdef const floating* row
    for r in range(BLOCK):
        if r < n_rows:
            row = X + (i0 + r) * s0
            if s1 == 1:
                for a in range(d):
                    xb[r * d + a] = row[a]
            else:
                for a in range(d):
                    xb[r * d + a] = row[a * s1]
        else:
            for a in range(d):
                xb[r * d + a] = 0.0


cdef inline void load_row(const floating* X, Py_ssize_t s0, Py_ssize_t s1,
                          Py_ssize_t i, Py_ssize_t d, double* xi) noexcept nogil:
    cdef Py_ssize_t a
    cdef const floating* row = X + i * s0
    for a in range(d):
        xi[a] = row[a * s1]


cdef inline double row_top(const double* lp, Py_ssize_t k, Py_ssize_t* best) noexcept nogil:
    """max_j lp[j]; ``best`` receives its first index."""
    cdef Py_ssize_t j
    cdef double top = lp[0]
    best[0] = 0
    for j in range(1, k):
        if lp[j] > top:
            top = lp[j]
            best[0] = j
    return top


cdef inline double row_max(const double* lp, Py_ssize_t k) noexcept nogil:
    """max_j lp[j] (``row_top`` without the index: a soft iteration's rows,
    whose labels nothing reads)."""
    cdef Py_ssize_t j
    cdef double top = lp[0]
    for j in range(1, k):
        top = lp[j] if lp[j] > top else top
    return top


cdef inline double row_total(const double* e, Py_ssize_t k) noexcept nogil:
    """sum_j e[j] from four partial sums (one chain of k dependent additions
    had been slower)."""
    cdef Py_ssize_t j = 0
    cdef double t0 = 0.0, t1 = 0.0, t2 = 0.0, t3 = 0.0
    while j + 4 <= k:
        t0 += e[j]
        t1 += e[j + 1]
        t2 += e[j + 2]
        t3 += e[j + 3]
        j += 4
    while j < k:
        t0 += e[j]
        j += 1
    return (t0 + t1) + (t2 + t3)


cdef inline void add_log_likelihood(double w, double top, double total, double* prod,
                                    double* obj) noexcept nogil:
    """obj[0] += w (top + log(total)) for a row of weight w != 0.

    For w = 1 the log of the total (in [1, k]) is deferred: the total
    multiplies ``prod[0]`` (1 at the start of a chunk), whose log goes to
    obj[0] before it can overflow and at the end of the chunk
    (``flush_log_product``): a libm ``log`` per row had been 8 % of the
    diagonal E-step at (2e5, 2, 8).
    """
    cdef double p
    obj[0] += w * top
    if total != 1.0:
        if w == 1.0:
            p = prod[0] * total
            if p > 1e270:  # logged long before it could overflow
                obj[0] += log(p)
                p = 1.0
            prod[0] = p
        else:
            obj[0] += w * log(total)


cdef inline void flush_log_product(double* prod, double* obj) noexcept nogil:
    """obj[0] += log(prod[0]), the deferred logs of ``add_log_likelihood``; prod[0] = 1."""
    obj[0] += log(prod[0])
    prod[0] = 1.0


cdef inline Py_ssize_t assign_row(double* lp, Py_ssize_t k, bint hard, double* top_out,
                                  double* total_out) noexcept nogil:
    """Label of a row from its weighted log-probabilities ``lp`` (k,).

    The label is the first index of the maximum, ``top``.  The row's
    log-likelihood is top + log(total): ``total`` is 1 when ``hard``, else the
    sum of exp(lp_j - top) (in [1, k]), and ``lp`` is overwritten with the
    responsibilities (all 0 for a row whose entries are all -inf, total 1).
    """
    cdef Py_ssize_t j, best
    cdef double top = row_top(lp, k, &best), total, inv
    top_out[0] = top
    total_out[0] = 1.0
    if hard:
        return best
    if top == -INFINITY:
        for j in range(k):
            lp[j] = 0.0
        return best
    # the exps in a loop of their own, which the compiler vectorizes
    for j in range(k):
        lp[j] = fastem_exp_nonpositive(lp[j] - top)
    total = row_total(lp, k)
    inv = 1.0 / total
    for j in range(k):
        lp[j] *= inv
    total_out[0] = total
    return best


cdef inline double assign_one(Py_ssize_t i, double* lp, Py_ssize_t k, bint hard,
                              const double* sample_weight, int64_t* labels,
                              double* log_prob, Py_ssize_t* best, double* prod,
                              double* obj) noexcept nogil:
    """Label row i from ``lp`` (see ``assign_row``); update ``obj``.

    Copies ``lp`` to ``log_prob`` (unless NULL) first, writes the label to
    ``labels`` (unless NULL) and counts a change in obj[2], adds w_i ll_i to
    obj[0] when w_i != 0 (``add_log_likelihood``), and returns w_i.
    """
    cdef Py_ssize_t j
    cdef double top = 0.0, total = 1.0, w
    if log_prob != NULL:
        for j in range(k):
            log_prob[i * k + j] = lp[j]
    best[0] = assign_row(lp, k, hard, &top, &total)
    if labels != NULL:  # NULL: a soft iteration, which needs no labels
        if labels[i] != best[0]:
            obj[2] += 1.0
        labels[i] = best[0]
    w = sample_weight[i]
    if w != 0.0:
        add_log_likelihood(w, top, total, prod, obj)
    return w


cdef inline void finish_block(Py_ssize_t i0, Py_ssize_t n_rows, Py_ssize_t k,
                              double* lp, const double* maha, bint hard,
                              const double* sample_weight, int64_t* labels,
                              double* log_prob, double* wr, Py_ssize_t* best_of,
                              double* prod, double* obj) noexcept nogil:
    """Labels, objective and responsibilities of a block from its ``lp`` (BLOCK, k).

    ``best_of[r]`` is -1 when the row adds nothing (padding or zero weight),
    else row r's label; 0 when ``labels`` is NULL (a soft iteration, which
    takes each row's maximum only, not its index).  Soft: ``wr[r, j] =
    w_i r_ij`` (0 for rows that add nothing), and ``lp`` is overwritten; the
    exps of the block's rows are taken in one loop, whose independent
    polynomial chains overlap (one row's exps at a time, their latency had
    been exposed).  Hard: ``wr`` is
    left alone and, unless ``maha`` is NULL, w_i maha[r, label] is added to
    obj[1].
    """
    cdef Py_ssize_t r, j, best, i
    cdef double w, total, scale
    cdef double top[BLOCK]
    cdef double shift[BLOCK]
    if hard:
        for r in range(BLOCK):
            best_of[r] = -1
            if r >= n_rows:
                continue
            w = assign_one(i0 + r, lp + r * k, k, hard, sample_weight, labels, log_prob,
                           &best, prod, obj)
            if w != 0.0:
                best_of[r] = best
                if maha != NULL:
                    obj[1] += w * maha[r * k + best]
        return
    for r in range(BLOCK):
        best_of[r] = -1
        shift[r] = 0.0
        if r >= n_rows:
            shift[r] = INFINITY  # a padding row's exps: exp(-inf) = 0, never read
            continue
        i = i0 + r
        if log_prob != NULL:
            for j in range(k):
                log_prob[i * k + j] = lp[r * k + j]
        if labels != NULL:
            top[r] = row_top(lp + r * k, k, &best)
            if labels[i] != best:
                obj[2] += 1.0
            labels[i] = best
            best_of[r] = best
        else:
            top[r] = row_max(lp + r * k, k)
            best_of[r] = 0  # any component: the row adds something
        # a row whose entries are all -inf is shifted by 0: its exps are 0
        if top[r] != -INFINITY:
            shift[r] = top[r]
    for r in range(BLOCK):
        for j in range(k):
            lp[r * k + j] = fastem_exp_nonpositive(lp[r * k + j] - shift[r])
    for r in range(BLOCK):
        w = sample_weight[i0 + r] if r < n_rows else 0.0
        if w == 0.0:
            best_of[r] = -1
            for j in range(k):
                wr[r * k + j] = 0.0
            continue
        total = row_total(lp + r * k, k) if top[r] != -INFINITY else 1.0
        add_log_likelihood(w, top[r], total, prod, obj)
        scale = w / total
        for j in range(k):
            wr[r * k + j] = scale * lp[r * k + j]
