"""BernoulliMixture: a mixture of independent Bernoulli variables for 0/1 data."""

import warnings

import numpy as np

from ._bernoulli import BernoulliFamily, BernoulliParams
from ._mixture_base import BaseMixture
from ._utils import _ROWS
from ._validation import check_array, check_float, check_n_features, check_param_array


def check_binary(X):
    """Raise unless every entry of X is 0, 1 or NaN (bool input is accepted).

    Blocks of ``_ROWS`` rows: the boolean temporaries stay small, and the NaN
    test runs only on a block that holds something other than 0 and 1.
    """
    for start in range(0, X.shape[0], _ROWS):
        block = X[start:start + _ROWS]
        bad = block != 0
        bad &= block != 1
        if not bad.any():
            continue
        bad &= ~np.isnan(block)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"X must contain only 0 and 1 values for BernoulliMixture, got "
                f"{float(block[row, col])!r} at row {start + row}, column {col}"
            )


class BernoulliMixture(BaseMixture):
    """Mixture of multivariate Bernoulli distributions fitted by EM.

    Each component k has a weight ``weights_[k]`` and success probabilities
    ``means_[k]``.  The M-step puts a symmetric Beta prior on each probability::

        weights_k = sum_i w_i r_ik / sum_i w_i
        means_kj  = (sum_i w_i r_ik x_ij + alpha) / (sum_i w_i r_ik + 2 alpha)

    so that every logarithm stays finite.  NaN entries of X are missing values:
    they are left out of both steps (the likelihood of a row is that of its
    observed coordinates, and the sums for ``means_kj`` run over the rows that
    observe feature j).

    Parameters
    ----------
    n_components : int, default=1
    tol : float, default=1e-3
    max_iter : int, default=100
    n_init : int, default=1
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
    weights_init : array-like of shape (n_components,), default=None
    means_init : array-like of shape (n_components, n_features), default=None
        Success probabilities, strictly between 0 and 1.
    alpha : float > 0, default=1e-10
    random_state, warm_start, verbose, assignment : as in GaussianMixture
    fixed : tuple of {"weights", "means"}, default=()

    Attributes
    ----------
    weights_, means_, converged_, n_iter_, lower_bound_, lower_bounds_,
    n_features_in_ : as in GaussianMixture
    """

    _fixable = ("weights", "means")

    def __init__(self, n_components=1, *, tol=1e-3, max_iter=100, n_init=1,
                 init_params="kmeans", weights_init=None, means_init=None,
                 alpha=1e-10, random_state=None, warm_start=False, verbose=0,
                 assignment="soft", fixed=()):
        self.n_components = n_components
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.alpha = alpha
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.assignment = assignment
        self.fixed = fixed

    def _validate_X(self, X, reset):
        X, missing = check_array(X, allow_nan=True, with_missing=True)
        if not reset:
            check_n_features(self, X)
        check_binary(X)
        return X, missing

    def _check_parameters(self, X):
        fixed = self._check_common_parameters()
        check_float("alpha", self.alpha, low=0.0, include_low=False)
        inits = {"weights": self._check_weights_init(), "means": None}
        if self.means_init is not None:
            means = check_param_array("means_init", self.means_init,
                                      (self.n_components, X.shape[1]))
            if np.any(means <= 0) or np.any(means >= 1):
                raise ValueError(
                    "means_init must lie strictly between 0 and 1, got min "
                    f"{float(means.min())!r}, max {float(means.max())!r}"
                )
            inits["means"] = means
        return fixed, inits

    _checks_unobserved = True

    def _check_unobserved(self, stats):
        if stats is None or stats.nko is None:
            return
        empty = np.argwhere(stats.nko == 0)
        if empty.size:
            k, j = empty[0]
            warnings.warn(
                f"feature {j} is missing in every row that component {k} takes "
                f"({len(empty)} such component/feature pairs); their means_ are "
                "the prior value 0.5", UserWarning, stacklevel=3)

    def _make_family(self, fixed):
        return BernoulliFamily(self.alpha, fixed)

    def _uses_center(self):
        return False  # no Bernoulli kernel or M-step reads it

    @staticmethod
    def _init_needs_resp(inits):
        return inits["weights"] is None or inits["means"] is None

    def _apply_inits(self, params, inits):
        weights = inits["weights"] if inits["weights"] is not None else params.weights
        means = inits["means"] if inits["means"] is not None else params.means
        return BernoulliParams(weights, means)

    def _get_params(self):
        return BernoulliParams(self.weights_, self.means_)

    def _set_params(self, params):
        self.weights_ = params.weights
        self.means_ = params.means

    def _n_parameters(self):
        k, d = self.means_.shape
        fixed = frozenset(self.fixed) if not isinstance(self.fixed, str) else {self.fixed}
        return (0 if "means" in fixed else k * d) + (0 if "weights" in fixed else k - 1)

    def sample(self, n_samples=1):
        """Draw 0/1 samples; returns (X of shape (n_samples, n_features), y)."""
        rng, counts, y = self._sample_counts(n_samples)
        d = self.means_.shape[1]
        parts = [(rng.uniform(size=(count, d)) < self.means_[j]).astype(np.float64)
                 for j, count in enumerate(counts)]
        return np.vstack(parts), y
