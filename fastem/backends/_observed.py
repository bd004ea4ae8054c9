"""The soft diagonal and spherical E-step with NaN as one product, shared by
the numba and Cython backends.

With o the observed-entry indicator of a row, x' = x - c (c the mean of
the means), mu' = mu - c and h = log(2 pi) / 2, the log-density of the
observed coordinates under component j is

    log_norm_j + d h - 1/2 sum_a log p_ja
    + sum_a [o x']_a p_ja mu'_ja - 1/2 [o x'^2]_a p_ja
            + o_a (log p_ja / 2 - p_ja mu'_ja^2 / 2 - h),

a product of the 3 d features (o x', o x'^2, o) with ``G`` (3 d, k) plus
``A`` (k,).  The moments of the same features under the weighted
responsibilities, about c, give nko, sx and sxx about each mean; a missing
coordinate adds its variance 1 / p_ja to sxx.  The moments about c become
moments about mu_j with a relative rounding error of about
u (1 + |mu_j - c|^2 / var_j), as for complete data.
"""

import numpy as np


def observed_operands(means, precision, log_norm):
    """(c, shifted, G, A) for ``precision`` (k, d) = 1 / variance."""
    d = means.shape[1]
    c = means.mean(axis=0)
    shifted = means - c
    log_p = np.log(precision)
    h = 0.5 * np.log(2.0 * np.pi)
    G = np.concatenate([(precision * shifted).T, -0.5 * precision.T,
                        (0.5 * log_p - 0.5 * precision * shifted ** 2 - h).T])
    A = log_norm + d * h - 0.5 * log_p.sum(axis=1)
    return c, shifted, G, A


def observed_statistics(M, shifted, precision, nk, nko, sx, sxx, obj):
    """nko, sx and sxx (C, k, d) from the moments M (C, k, >= 3 d) about c."""
    d = shifted.shape[1]
    s1 = M[:, :, :d]
    s2 = M[:, :, d:2 * d]
    so = M[:, :, 2 * d:3 * d]
    nko[:] = so
    sx[:] = s1 - so * shifted
    sxx[:] = (s2 - 2.0 * shifted * s1 + so * shifted ** 2
              + (nk[:, :, None] - so) / precision)
    obj[:, 1] = 0.0
