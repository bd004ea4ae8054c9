"""What GaussianMixture and BernoulliMixture share: fit, predict and scores.

A mixture model supplies its family (statistics and M-step), its parameter
checks, its initial parameters and its fitted attributes; everything else,
the EM loop included, is common.
"""

import warnings

import numpy as np

from . import _config
from ._base import BaseEstimator
from ._em import ConvergenceMonitor, fit_em
from ._utils import column_mean, logsumexp_rows
from ._validation import (check_array, check_fixed, check_float, check_int,
                          check_is_fitted, check_n_features, check_option,
                          check_param_array, check_random_state, check_sample_weight,
                          observed_column_mean)
from .backends import get_kernels
from .exceptions import ConvergenceWarning

INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")
FIXABLE = ("weights", "means", "covariances")


def one_hot_chunks(labels, n_components):
    """Responsibilities 1 for each row's label, 0 elsewhere, a block of rows at a time.

    Blocks are boolean: multiplied by the float64 weights they give exactly
    the float64 one-hot products, from an eighth of the memory.
    """
    def chunk(start, stop):
        part = labels[start:stop]
        resp = np.zeros((part.shape[0], n_components), dtype=bool)
        resp[np.arange(part.shape[0]), part] = True
        return resp
    return chunk


class BaseMixture(BaseEstimator):
    """EM-fitted mixture; subclasses define the component family."""

    _fixable = FIXABLE
    # whether ``_check_unobserved`` reads the final E-step's statistics (data
    # with NaN): without it, ``fit`` runs no final E-step
    _checks_unobserved = False

    # ------------------------------------------------------------ checks
    def _check_common_parameters(self):
        check_int("n_components", self.n_components, low=1)
        check_float("tol", self.tol, low=0.0)
        check_int("max_iter", self.max_iter, low=0)
        check_int("n_init", self.n_init, low=1)
        check_option("init_params", self.init_params, INIT_PARAMS)
        check_option("assignment", self.assignment, ("soft", "hard"))
        check_int("verbose", self.verbose, low=0)
        if not isinstance(self.warm_start, (bool, np.bool_)):
            raise TypeError(f"warm_start must be a bool, got {self.warm_start!r}")
        fixed = check_fixed(self.fixed, self._fixable)
        for name in fixed:
            init_name = {"weights": "weights_init", "means": "means_init",
                         "covariances": "precisions_init"}[name]
            if getattr(self, init_name) is None:
                raise ValueError(
                    f"fixed contains {name!r} but {init_name} is None; a fixed "
                    f"parameter keeps the value given in {init_name}"
                )
        check_random_state(self.random_state)
        return fixed

    def _check_weights_init(self):
        if self.weights_init is None:
            return None
        w = check_param_array("weights_init", self.weights_init, (self.n_components,))
        if np.any(w < 0) or np.any(w > 1):
            raise ValueError(
                f"weights_init must lie in [0, 1], got min {float(w.min())!r}, "
                f"max {float(w.max())!r}"
            )
        if abs(1.0 - w.sum()) > 1e-8:
            raise ValueError(f"weights_init must sum to 1, got sum {float(w.sum())!r}")
        return w

    def _validate_X(self, X, reset):
        """(X checked, whether it holds NaN)."""
        X, missing = check_array(X, allow_nan=True, with_missing=True)
        if not reset:
            check_n_features(self, X)
        return X, missing

    # ------------------------------------------------------------ fitting
    def fit(self, X, y=None, sample_weight=None):
        """Estimate the parameters with EM.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None
            Each point's contribution to every sufficient statistic is
            multiplied by its weight; integer weights give the fit on
            repeated rows.

        Returns
        -------
        self

        Notes
        -----
        The fitted parameters and attributes are those of ``fit_predict``;
        only the labels at the fitted parameters, which ``fit`` would
        discard, are not computed (scikit-learn's ``fit`` computes them in a
        final E-step): data without NaN skip that E-step.
        """
        self._fit(X, sample_weight, labels=False)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the most probable component of each sample.

        A final E-step at the fitted parameters makes this equal to
        ``fit(X).predict(X)``.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self._fit(X, sample_weight, labels=True)

    def _fit(self, X, sample_weight, labels):
        """Fit; return the labels at the fitted parameters when ``labels``
        (a final E-step), else None."""
        X, missing = self._validate_X(X, reset=True)
        fixed, inits = self._check_parameters(X)
        if X.shape[0] < self.n_components:
            raise ValueError(
                f"n_samples={X.shape[0]} should be >= n_components={self.n_components}"
            )
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        if missing:  # also checks that every column has an observed value
            center = observed_column_mean(X, sample_weight)
        elif self._uses_center():
            center = column_mean(X, sample_weight)
        else:  # a pass over X saved: 1.2 ms a fit at (5e4, 64, 8)
            center = np.zeros(X.shape[1])
        family = self._make_family(fixed)
        family.missing = missing
        kernels = get_kernels()
        random_state = check_random_state(self.random_state)
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        warm = None if do_init else (self._get_params(), self.lower_bound_)
        run = fit_em(
            family, kernels, X, sample_weight,
            n_components=self.n_components,
            initialize=lambda: self._initial_params(X, sample_weight, random_state,
                                                    family, center, inits),
            n_init=self.n_init if do_init else 1,
            max_iter=self.max_iter,
            hard=self.assignment == "hard",
            make_monitor=lambda lb: ConvergenceMonitor(self.tol, lb),
            center=center,
            warm=warm,
            # only the checks of data with NaN read the final statistics; a
            # family without them runs no final E-step in ``fit`` (one E-step
            # more than the iterations: a tenth of a 10-iteration fit)
            final_statistics=missing and self._checks_unobserved,
            final_labels=labels,
            verbose=self.verbose,
        )
        if not run.converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different "
                "init parameters, or increase max_iter, tol, or check for "
                "degenerate data.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._check_unobserved(run.final_stats)
        self.n_features_in_ = X.shape[1]
        self._set_params(run.params)
        self.converged_ = run.converged
        self.n_iter_ = run.n_iter
        self.lower_bound_ = run.lower_bound
        self.lower_bounds_ = list(run.lower_bounds)
        return run.labels

    def _uses_center(self):
        """Whether the family's kernels, M-step or initial M-step read ``center``
        (the weighted column means) on complete data."""
        return True

    def _check_unobserved(self, stats):
        """Hook: warn about parameters that no observed value informs (``stats``
        is the final E-step's, None for data without NaN or when
        ``_checks_unobserved`` is False)."""

    def _initial_params(self, X, sample_weight, random_state, family, center, inits):
        """Initial parameters: responsibilities by ``init_params``, then the *_init."""
        n_samples = X.shape[0]
        k = self.n_components
        if self._init_needs_resp(inits):
            if self.init_params == "kmeans":
                from ._kmeans import KMeans

                # X and sample_weight are validated: fit without copying them again
                labels = KMeans(n_clusters=k, n_init=1, random_state=random_state)._fit(
                    X, sample_weight, None, 1, random_state, family.missing).labels_
                # the smallest integer type while the responsibilities are read
                labels = labels.astype(np.min_scalar_type(-k))
                resp = one_hot_chunks(labels, k)
            elif self.init_params == "k-means++":
                from ._kmeans import _kmeans_plusplus

                _, indices = _kmeans_plusplus(X, k, sample_weight, random_state,
                                              2 + int(np.log(k)), family.missing)
                resp = _indices_chunks(indices, k)
            elif self.init_params == "random":
                resp = _uniform_chunks(random_state, n_samples, k)
            else:  # random_from_data
                indices = random_state.choice(n_samples, size=k, replace=False)
                resp = _indices_chunks(indices, k)
            params = family.from_resp(X, sample_weight, resp, center, k)
        else:
            params = None
        return self._apply_inits(params, inits)

    # ------------------------------------------------------------ inference
    def _e_step_outputs(self, X, want_log_prob, want_imputed=False):
        """Soft E-step at the fitted parameters: (labels, log_prob, imputed).

        NaN entries are marginalized out.  ``imputed`` is None when X has none.
        """
        check_is_fitted(self, "weights_")
        X, missing = self._validate_X(X, reset=False)
        n, d = X.shape
        chunk_size, _ = _config.chunk_layout(n)
        family = self._make_family(frozenset())
        family.missing = missing
        labels = np.full(n, -1, dtype=np.int64)
        log_prob = np.empty((n, self.n_components)) if want_log_prob else None
        imputed = np.empty((n, d)) if want_imputed and family.missing else None
        family.e_step(get_kernels(), X, np.ones(n), self._get_params(),
                      center=self.weights_ @ self.means_, hard=False,
                      chunk_size=chunk_size,
                      labels=labels,
                      buffers=None,  # no statistics: labels, log_prob, imputed only
                      log_prob=log_prob, imputed=imputed)
        return labels, log_prob, imputed

    def predict(self, X):
        """Most probable component of each sample, ndarray of shape (n_samples,)."""
        return self._e_step_outputs(X, want_log_prob=False)[0]

    def predict_proba(self, X):
        """Posterior probability of each component, ndarray of shape (n_samples, n_components)."""
        log_prob = self._e_step_outputs(X, want_log_prob=True)[1]
        with np.errstate(under="ignore"):
            return np.exp(log_prob - logsumexp_rows(log_prob)[:, None])

    def score_samples(self, X):
        """Log-likelihood of each sample, ndarray of shape (n_samples,)."""
        return logsumexp_rows(self._e_step_outputs(X, want_log_prob=True)[1])

    def score(self, X, y=None):
        """Mean log-likelihood of the samples."""
        return float(self.score_samples(X).mean())

    def bic(self, X):
        """Bayesian information criterion (lower is better); fixed parameters are not counted."""
        n = check_array(X, allow_nan=True).shape[0]
        return -2 * self.score(X) * n + self._n_parameters() * np.log(n)

    def aic(self, X):
        """Akaike information criterion (lower is better); fixed parameters are not counted."""
        n = check_array(X, allow_nan=True).shape[0]
        return -2 * self.score(X) * n + 2 * self._n_parameters()

    def _sample_counts(self, n_samples):
        check_is_fitted(self, "weights_")
        check_int("n_samples", n_samples, low=1)
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_ / self.weights_.sum())
        y = np.repeat(np.arange(self.n_components), counts)
        return rng, counts, y


def _indices_chunks(indices, n_components):
    """Responsibilities that put row indices[j] in component j, every other row nowhere.

    A row listed twice goes to the last component that lists it.
    """
    order = np.argsort(indices, kind="stable")
    rows = indices[order]
    last = np.append(rows[1:] != rows[:-1], True)  # the last j of each row
    order, rows = order[last], rows[last]

    def chunk(start, stop):
        resp = np.zeros((stop - start, n_components), dtype=bool)  # as in one_hot_chunks
        lo, hi = np.searchsorted(rows, [start, stop])
        resp[rows[lo:hi] - start, order[lo:hi]] = True
        return resp
    return chunk


def _uniform_chunks(random_state, n_samples, n_components):
    """Row-normalised uniform responsibilities, drawn a block of rows at a time.

    The values are those of ``u = random_state.uniform(size=(n_samples, k));
    u / u.sum(axis=1)[:, None]``, and ``random_state`` ends where that draw
    leaves it, but no (n_samples, k) array is ever held: the rows are drawn
    in order from a copy of the generator, and drawn again from the start if
    asked for rows it has passed.
    """
    start_state = random_state.get_state()
    source = np.random.RandomState(0)  # its state is set before the first draw
    position = [n_samples]  # the next row ``source`` would draw: restart first

    def chunk(start, stop):
        if start != position[0]:
            source.set_state(start_state)
            position[0] = 0
        if start > position[0]:  # skip rows, one block at a time
            for skip in range(position[0], start, 8192):
                source.uniform(size=(min(start, skip + 8192) - skip, n_components))
        resp = source.uniform(size=(stop - start, n_components))
        resp /= resp.sum(axis=1)[:, None]
        position[0] = stop
        return resp

    # advance the caller's generator past the n_samples * k values, as one draw would
    for start in range(0, n_samples, 8192):
        random_state.uniform(size=(min(n_samples, start + 8192) - start, n_components))
    return chunk
