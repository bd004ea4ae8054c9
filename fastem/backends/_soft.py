"""The soft diagonal and spherical E-steps as products of row features,
shared by the numba and Cython backends.

With x' = x - c (c the mean of the means), mu' = mu - c and p the
precisions (1 / variance), the log-density of component j is A_j plus a
product of a row's features with ``G`` (m, k):

* diagonal, features (x', x'^2) (m = 2 d):
  G = [p_j mu'_j; -p_j / 2], A_j = log_norm_j - sum_a p_ja mu'_ja^2 / 2;
* spherical, features (x', ||x'||^2) (m = d + 1):
  G = [p_j mu'_j; -p_j / 2], A_j = log_norm_j - p_j ||mu'_j||^2 / 2;
* full, features (x', x'_a x'_b for b <= a) (m = d + d (d + 1) / 2, the
  products a-major: a (a + 1) / 2 + b), P_j = U_j U_j^T the precision:
  G = [P_j mu'_j; -P_j,aa / 2 on the squares, -P_j,ab on the other products],
  A_j = log_norm_j - mu'_j^T P_j mu'_j / 2;
* tied, features x' (m = d) about the tied scatter's center c, P = U U^T:
  G = P mu'_j, A_j = log_norm_j - mu'_j^T P mu'_j / 2.  The log-density is
  A_j + x' G_j - x'^T P x' / 2, whose last term is common to the components:
  the responsibilities do without it, and the rows' sum of it, weighted, is
  tr(P S) / 2 for the scatter S = sum_i w_i x'_i x'_i^T the E-step returns
  anyway (``tied_statistics`` takes it off the objective);
* full with NaN, features (x~, x~_a x~_b for b <= a, o) (m = 2 d + d (d + 1) / 2),
  x~ = o x' (0 where x is missing): the products give log_norm_j - e^T P e / 2
  for e = x~ - mu'_j, e_m = -mu'_jm at a missing m; with h = (P e)_m the
  marginal log-density of the observed coordinates is that plus
      q h2 - 1/2 log det P_mm + 1/2 h^T P_mm^-1 h      (h2 = log(2 pi) / 2),
  q the number of missing coordinates, and E[x_m | x_o] - c_m = -P_mm^-1 h
  (the Schur complement of P_mm: e^T P e - h^T P_mm^-1 h is the quadratic
  form of the observed part, whatever e_m).  The kernels add these
  corrections, O(q d) a row and component, to the scores of the rows with
  NaN, and the imputed values' cross terms and P_mm^-1 to their moments;
* diagonal or spherical with NaN, features (o x', o x'^2, o) (m = 3 d),
  o the observed-entry indicator and h = log(2 pi) / 2: the log-density of
  the observed coordinates is
      log_norm_j + d h - 1/2 sum_a log p_ja
      + sum_a [o x']_a p_ja mu'_ja - 1/2 [o x'^2]_a p_ja
              + o_a (log p_ja / 2 - p_ja mu'_ja^2 / 2 - h).

The moments of the same features under the weighted responsibilities,
about c, give sx and sxx about each mean (and nko with NaN, where a missing
coordinate adds its variance 1 / p_ja to sxx).  The moments about c become
moments about mu_j with a relative rounding error of about
u (1 + |mu_j - c|^2 / var_j).

The full map expands the quadratic form about c, whose terms can be larger
than the log-density they sum to: against the differences (x - mu_j) U_j,
log-densities and statistics agreed to 1e-15 - 1e-13 relative in most of 72
random cases (d = 7 to 64, correlated precisions), and to 2.6e-11 in the
worst; the differences themselves agree with the reference to 3e-14.  Like
the moments about c, the error grows with |mu_j - c|^2 / var_j: full and tied
fits of 4 clusters 1e2 / 1e3 / 1e4 standard deviations apart (d = 8) gave
lower bounds 3e-12 / 1e-10 / 4e-9 (full) and 2e-12 / 5e-11 / 8e-10 (tied)
relative from the reference backend's, covariances up to 1e-12 / 8e-11 /
1e-8.  In exchange the full E-step is one product of staged features, like the
diagonal one (one thread, ns a row: (1e5, 16, 16) 496 -> 292, (5e4, 64, 8)
3490 -> 2410, (1e5, 8, 8) 134 -> 73, (5e4, 32, 8) 661 -> 623).

``*_operands`` return (c, shifted = mu', G, A); ``tied_statistics`` fills the
kernel table's OUT arrays from the moments M (C, k, >= m) and nk (C, k); the
other models' statistics are compiled in each backend (see ``MODELS``).
"""

import functools

import numpy as np

QUADRATIC, OBSERVED, SPHERICAL, PAIRS, PAIRS_OBSERVED = 1, 2, 3, 4, 5  # feature maps
# (the kernels' codes)
PAIRS_MAX_D = 64  # soft full E-steps of up to this many features take the PAIRS map

# Elements of a temporary the statistics below may make at once.  A larger
# one (the (C, k, d) arrays of 64 chunks held 256 KB at d = 64, k = 8) is
# allocated by the C library with mmap and page-faulted in anew each time:
# 330 us against 18 us for the same work in four slabs of chunks.
_SLAB_ELEMENTS = 8192


def _slabs(n_chunks, per_chunk):
    """Slices of chunks whose temporaries of ``per_chunk`` elements a chunk
    stay under ``_SLAB_ELEMENTS``; every element is computed as without them."""
    step = max(1, _SLAB_ELEMENTS // max(1, per_chunk))
    return [slice(lo, lo + step) for lo in range(0, n_chunks, step)]


def diag_operands(means, precision, log_norm):
    """``precision`` (k, d)."""
    c = means.mean(axis=0)
    shifted = means - c
    G = np.concatenate([(precision * shifted).T, -0.5 * precision.T])
    A = log_norm - 0.5 * np.einsum("ka,ka->k", precision, shifted ** 2)
    return c, shifted, G, A


def spherical_operands(means, precision, log_norm):
    """``precision`` (k,)."""
    c = means.mean(axis=0)
    shifted = means - c
    G = np.concatenate([(precision[:, None] * shifted).T, -0.5 * precision[None, :]])
    A = log_norm - 0.5 * precision * np.einsum("ka,ka->k", shifted, shifted)
    return c, shifted, G, A


def tied_operands(means, prec_chol, log_norm, center):
    """``prec_chol`` (d, d), upper triangular; also W, the weights of the lower
    triangle of the scatter in tr(P S): P_ab, doubled off the diagonal."""
    d = means.shape[1]
    c = np.asarray(center, dtype=np.float64)
    shifted = means - c
    P = prec_chol @ prec_chol.T
    Pm = shifted @ P  # P is symmetric: row j is P mu'_j
    A = log_norm - 0.5 * np.einsum("ka,ka->k", Pm, shifted)
    W = P * (2.0 * np.tri(d, k=-1) + np.eye(d))
    return c, shifted, Pm.T, A, W


def tied_statistics(M, S, shifted, W, nk, sx, sxx, obj):
    """``S`` (C, d, d): the scatter about c, exact on and below the diagonal."""
    d = shifted.shape[1]
    for c in _slabs(M.shape[0], shifted.size):
        sx[c] = M[c, :, :d] - nk[c, :, None] * shifted
    lower = np.tri(d)
    for c in _slabs(M.shape[0], d * d):
        np.multiply(S[c], lower, out=sxx[c])
    obj[:, 0] -= 0.5 * np.einsum("cab,ab->c", sxx, W)
    obj[:, 1] = 0.0


@functools.lru_cache(maxsize=64)
def _pair_indices(d):
    """(rows, cols, diagonal) of the products x_a x_b, b <= a, a-major (the
    kernels' order); ``diagonal`` marks a == b.  Made once per d (read-only)."""
    rows, cols = np.tril_indices(d)
    diagonal = rows == cols
    for a in (rows, cols, diagonal):
        a.flags.writeable = False
    return rows, cols, diagonal


def full_operands(means, prec_chol, log_norm):
    """``prec_chol`` (k, d, d), upper triangular: P_j = U_j U_j^T."""
    k, d = means.shape
    c = means.mean(axis=0)
    shifted = means - c
    P = prec_chol @ np.swapaxes(prec_chol, 1, 2)
    Pm = np.einsum("kab,kb->ka", P, shifted)
    rows, cols, diagonal = _pair_indices(d)
    Q = -P[:, rows, cols]
    Q[:, diagonal] *= 0.5
    G = np.concatenate([Pm.T, Q.T])
    A = log_norm - 0.5 * np.einsum("ka,ka->k", Pm, shifted)
    return c, shifted, G, A


def observed_operands(means, precision, log_norm):
    """``precision`` (k, d)."""
    d = means.shape[1]
    c = means.mean(axis=0)
    shifted = means - c
    log_p = np.log(precision)
    h = 0.5 * np.log(2.0 * np.pi)
    G = np.concatenate([(precision * shifted).T, -0.5 * precision.T,
                        (0.5 * log_p - 0.5 * precision * shifted ** 2 - h).T])
    A = log_norm + d * h - 0.5 * log_p.sum(axis=1)
    return c, shifted, G, A


# the complete-data soft E-steps: (operands, feature map) per model.  Both
# backends compile the statistics from the moments (numba's
# _coordinate_statistics and _pairs_statistics_chunk, Cython's
# coordinate_statistics and pairs_statistics; numpy's temporaries took 0.15 -
# 0.2 ms an E-step for the diagonal and spherical models and 25-32 ms for the
# full one at (5e4, 64, 8)).  With s1, s2 the moments of x' and of its squares
# or products, nk the weights and mu'_j the shifted means:
#   every model: sx_j = s1 - nk mu'_j;
#   diag: sxx_j = s2 - 2 mu'_j s1 + nk mu'_j^2;
#   spherical (s2 the moment of ||x'||^2): sxx_j = s2 - 2 s1 . mu'_j + nk ||mu'_j||^2;
#   full, for b <= a (zero above):
#     sxx_j,ab = s2_ab - mu'_ja s1_b - s1_a mu'_jb + nk mu'_ja mu'_jb;
#   diag or spherical with NaN (so the moment of o, which is nko):
#     sx_j = s1 - so mu'_j, sxx_j = s2 - 2 mu'_j s1 + so mu'_j^2 + (nk - so) / p_j.
MODELS = {
    "diag": (diag_operands, QUADRATIC),
    "spherical": (spherical_operands, SPHERICAL),
    "full": (full_operands, PAIRS),
}


def pairs_missing_operands(means, prec_chol, log_norm, lanes):
    """The full model with NaN (PAIRS_OBSERVED): (c, shifted, G, A) of
    ``full_operands`` (G zero on the o features) and, for the per-row
    corrections, the components as the vector lanes of arrays (component
    innermost, padded to kbp, a multiple of ``lanes``, by identities):

    PL (d, d, kbp) the precisions P_j; SL (d, kbp) P_j mu'_j; H1 (d, kbp)
    log(P_j,aa) / 2, the half log determinant when a alone is missing; H2
    (d, d, kbp) at (b, a), a < b, that of the pair {a, b}, from the pivots
    P_aa and P_bb - P_ba P_ab / P_aa (as the sweep takes them).
    """
    k, d = means.shape
    c, shifted, G, A = full_operands(means, prec_chol, log_norm)
    G = np.concatenate([G, np.zeros((d, k))])
    kbp = -(-k // lanes) * lanes
    P = prec_chol @ np.swapaxes(prec_chol, 1, 2)
    PL = np.zeros((d, d, kbp))
    PL[:, :, :k] = P.transpose(1, 2, 0)
    PL[np.arange(d), np.arange(d), k:] = 1.0
    SL = np.zeros((d, kbp))
    SL[:, :k] = G[:d]  # the rows P_j mu'_j of full_operands
    diag = np.einsum("kaa->ak", P)
    H1 = np.zeros((d, kbp))
    H1[:, :k] = 0.5 * np.log(diag)
    H2 = np.zeros((d, d, kbp))
    # second[b, a] = P_bb - P_ba P_ab / P_aa (lane j); only b > a is used
    second = diag[:, None, :] - P.transpose(1, 2, 0) * (P.transpose(2, 1, 0) / diag[None, :, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        H2[:, :, :k] = 0.5 * (np.log(diag)[None, :, :] + np.log(np.maximum(second, 0.0)))
    H2[np.triu_indices(d)] = 0.0
    return c, shifted, G, A, PL.ravel(), SL.ravel(), H1.ravel(), H2.ravel(), kbp
