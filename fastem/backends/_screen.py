"""The constants of the screened hard spherical E-step (K-means), shared by
the numba and Cython backends.

With x' = x - c, c the mean of the means rounded to X's dtype (so that
x - c is formed exactly as the kernels form it), the score of component j
is A_j + x' . CT[:, j] - P_j ||x'||^2 / 2 with CT[:, j] = p_j (mu_j - c),
A_j = log_norm_j - p_j ||mu_j - c||^2 / 2 and P_j = p_j.  The numba backend
(``numba_backend``, the comments above ``_SMALL_D``) derives the bound on
the error of these scores computed in float32 from ``a_max``, ``pn_max`` and
``p_max``.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class ScreenConstants:
    c: np.ndarray        # (d,) in X's dtype
    shifted: np.ndarray  # (k, d) mu_j - c, float64
    A: np.ndarray        # (k,) float64, -inf for components of weight 0
    a_max: float         # max |A_j| over the finite A_j (0 if none)
    pn_max: float        # max p_j ||mu_j - c||
    p_max: float         # max p_j

    @property
    def largest(self):
        """The largest constant, against which the float32 range is checked."""
        return max(self.a_max, self.pn_max, self.p_max)

    def CT(self, precision):
        """p_j (mu_j - c), transposed to (d, k), float64."""
        return (precision[:, None] * self.shifted).T


def screen_constants(X, means, precision, log_norm):
    """``ScreenConstants`` of ``means`` (k, d), ``precision`` (k,) and
    ``log_norm`` (k,) for the data ``X`` (only its dtype is read)."""
    c = means.mean(axis=0).astype(np.asarray(X).dtype)
    shifted = means - c.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", shifted, shifted))
    A = log_norm - 0.5 * precision * norms ** 2
    finite = np.isfinite(A)
    return ScreenConstants(
        c=c, shifted=shifted, A=A,
        a_max=float(np.max(np.abs(A[finite]))) if finite.any() else 0.0,
        pn_max=float(np.max(precision * norms)),
        p_max=float(np.max(precision)))
