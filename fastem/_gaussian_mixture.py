"""GaussianMixture: a drop-in for ``sklearn.mixture.GaussianMixture``."""

import numpy as np

from . import _linalg
from ._gaussian import COVARIANCE_TYPES, GaussianFamily, GaussianParams
from ._mixture_base import BaseMixture
from ._validation import check_array, check_float, check_option, check_param_array


class GaussianMixture(BaseMixture):
    """Gaussian mixture fitted by EM on multicore CPUs.

    Parameters, attributes and results follow scikit-learn's
    ``GaussianMixture``; with the same initial parameters the fitted
    parameters, ``n_iter_`` and ``lower_bounds_`` agree with it to about
    1e-10 relative in float64.

    Parameters
    ----------
    n_components : int, default=1
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    tol : float, default=1e-3
        EM stops when the per-sample lower bound changes by less than ``tol``;
        ``tol=0`` runs ``max_iter`` iterations.
    reg_covar : float, default=1e-6
        Added to the diagonal of every covariance.
    max_iter : int, default=100
    n_init : int, default=1
        Number of initialisations; the one with the highest lower bound is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
    weights_init : array-like of shape (n_components,), default=None
    means_init : array-like of shape (n_components, n_features), default=None
    precisions_init : array-like, default=None
        Shape (n_components,) for spherical, (n_features, n_features) for
        tied, (n_components, n_features) for diag and
        (n_components, n_features, n_features) for full.
    random_state : int, RandomState or None, default=None
    warm_start : bool, default=False
        Start the next ``fit`` from the fitted parameters (``n_init`` is then 1).
    verbose : int, default=0
    assignment : {"soft", "hard"}, default="soft"
        ``"hard"`` is classification EM: each E-step replaces the
        responsibilities by the delta at the most probable component, and the
        lower bound is the mean of ``max_k log(w_k p_k(x))``.
    fixed : tuple of {"weights", "means", "covariances"}, default=()
        Parameters kept at their ``*_init`` values through the fit.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_, precisions_, precisions_cholesky_ : ndarray
        Shapes as for ``precisions_init``.  ``precisions_cholesky_`` holds
        upper-triangular U with ``precision = U @ U.T``.
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean log-likelihood (weighted by ``sample_weight``) at the start of
        the last iteration of the best run.
    lower_bounds_ : list of float
        The lower bound of every iteration of the best run.
    n_features_in_ : int

    Notes
    -----
    Parameters are computed and stored in float64 whatever the input dtype;
    float32 data are read as float32 and never copied.
    """

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3,
                 reg_covar=1e-6, max_iter=100, n_init=1, init_params="kmeans",
                 weights_init=None, means_init=None, precisions_init=None,
                 random_state=None, warm_start=False, verbose=0,
                 assignment="soft", fixed=()):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.assignment = assignment
        self.fixed = fixed

    # ------------------------------------------------------------ model hooks
    def _check_parameters(self, X):
        fixed = self._check_common_parameters()
        check_option("covariance_type", self.covariance_type, COVARIANCE_TYPES)
        check_float("reg_covar", self.reg_covar, low=0.0)
        k, d = self.n_components, X.shape[1]
        inits = {"weights": self._check_weights_init(), "means": None, "prec_chol": None}
        if self.means_init is not None:
            inits["means"] = check_param_array("means_init", self.means_init, (k, d))
        if self.precisions_init is not None:
            shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d),
                     "spherical": (k,)}[self.covariance_type]
            precisions = check_param_array("precisions_init", self.precisions_init, shape)
            if self.covariance_type in ("full", "tied"):
                stack = precisions if self.covariance_type == "full" else precisions[None]
                for j, p in enumerate(stack):
                    if not np.allclose(p, p.T, rtol=1e-10, atol=1e-12 * np.abs(p).max()):
                        where = f"[{j}]" if self.covariance_type == "full" else ""
                        raise ValueError(f"precisions_init{where} is not symmetric")
            inits["prec_chol"] = _linalg.prec_chol_from_precisions(
                precisions, self.covariance_type)
        return fixed, inits

    def _make_family(self, fixed):
        return GaussianFamily(self.covariance_type, self.reg_covar, fixed)

    def _uses_center(self):
        # the tied scatter is taken about it, and the full model's whitened
        # kernels (hard E-steps, more than 64 features) shift by it; the
        # diagonal and spherical models never read it
        return self.covariance_type in ("full", "tied")

    @staticmethod
    def _init_needs_resp(inits):
        return any(value is None for value in inits.values())

    def _apply_inits(self, params, inits):
        weights = inits["weights"] if inits["weights"] is not None else params.weights
        means = inits["means"] if inits["means"] is not None else params.means
        if inits["prec_chol"] is not None:
            prec_chol = inits["prec_chol"]
            covariances = _linalg.covariances_from_prec_chol(prec_chol, self.covariance_type)
        else:
            prec_chol, covariances = params.prec_chol, params.covariances
        return GaussianParams(weights, means, covariances, prec_chol)

    def _get_params(self):
        return GaussianParams(self.weights_, self.means_, self.covariances_,
                              self.precisions_cholesky_)

    def _set_params(self, params):
        self.weights_ = params.weights
        self.means_ = params.means
        self.covariances_ = params.covariances
        self.precisions_cholesky_ = params.prec_chol
        self.precisions_ = _linalg.precisions_from_prec_chol(params.prec_chol,
                                                             self.covariance_type)

    def _n_parameters(self):
        k, d = self.means_.shape
        fixed = frozenset(self.fixed) if not isinstance(self.fixed, str) else {self.fixed}
        cov = {"full": k * d * (d + 1) / 2, "tied": d * (d + 1) / 2, "diag": k * d,
               "spherical": k}[self.covariance_type]
        count = 0
        if "covariances" not in fixed:
            count += cov
        if "means" not in fixed:
            count += k * d
        if "weights" not in fixed:
            count += k - 1
        return int(count)

    # ------------------------------------------------------------ extras
    def impute(self, X):
        """Fill missing values with their conditional expectation.

        Each NaN of row i becomes ``sum_k r_ik E[x_m | x_o, k]``, where the
        ``E[x_m | x_o, k] = mu_m + Sigma_mo Sigma_oo^-1 (x_o - mu_o)`` are the
        component-wise conditional means given the row's observed entries and
        ``r_ik`` its posterior probabilities.  Observed entries are returned
        untouched.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), NaN marking missing values

        Returns
        -------
        X_imputed : ndarray of shape (n_samples, n_features), a new array of
            the dtype of X (float32 or float64)
        """
        imputed = self._e_step_outputs(X, want_log_prob=False, want_imputed=True)[2]
        X = check_array(X, allow_nan=True)
        out = np.array(X, copy=True)
        if imputed is not None:
            missing = np.isnan(out)
            out[missing] = imputed[missing]
        return out

    def sample(self, n_samples=1):
        """Draw samples from the fitted mixture.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,), the component of each sample
        """
        rng, counts, y = self._sample_counts(n_samples)
        d = self.means_.shape[1]
        parts = []
        for j, count in enumerate(counts):
            if self.covariance_type in ("full", "tied"):
                cov = self.covariances_[j] if self.covariance_type == "full" else self.covariances_
                parts.append(rng.multivariate_normal(self.means_[j], cov, int(count)))
            else:
                scale = np.sqrt(self.covariances_[j])
                parts.append(self.means_[j] + rng.standard_normal(size=(count, d)) * scale)
        return np.vstack(parts), y
