"""KMeans: hard EM on a restricted Gaussian mixture, on the shared EM engine.

K-means is EM for a Gaussian mixture whose covariances are all the identity
and whose weights are all 1/k, with the E-step restricted to delta functions
(each point goes wholly to its nearest centre).  fastem fits it exactly so:
``GaussianFamily("spherical")`` with ``weights`` and ``covariances`` fixed,
a hard E-step, and the driver of every other model.  Only two things are
K-means' own: scikit-learn's stopping rule (labels unchanged, or the squared
centre shift below a tolerance scaled by the data's variance) and the
relocation of empty clusters to the points farthest from their centres.
"""

import numbers
import warnings

import numpy as np

from . import _config
from ._base import BaseEstimator
from ._em import fit_em
from ._gaussian import GaussianFamily, GaussianParams
from ._utils import column_mean, column_variance, row_blocks, value_blocks, weighted_sum
from ._validation import (check_array, check_float, check_int, check_is_fitted,
                          check_n_features, check_param_array, check_random_state,
                          check_sample_weight, observed_column_mean)
from .backends import get_kernels
from .exceptions import ConvergenceWarning


_ORIGIN_ROWS = 1024


def _sums_origin(X):
    """The mean of X's first rows (at most _ORIGIN_ROWS), in float64, summed
    in the same order whatever X's memory layout (numpy's mean of a Fortran-
    ordered block adds in another order than of a C-ordered one)."""
    return np.ascontiguousarray(X[:_ORIGIN_ROWS], dtype=np.float64).mean(axis=0)


def kmeans_plusplus(X, n_clusters, *, sample_weight=None, random_state=None,
                    n_local_trials=None):
    """Greedy k-means++ seeding (Arthur & Vassilvitskii, 2007).

    Each new centre is the best of ``n_local_trials`` candidates drawn with
    probability proportional to ``sample_weight * D(x)^2``, where D(x) is the
    distance to the nearest centre chosen so far; "best" means the smallest
    resulting potential.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    n_clusters : int
    sample_weight : array-like of shape (n_samples,), default=None
    random_state : int, RandomState or None
    n_local_trials : int, default=2 + int(log(n_clusters))

    Returns
    -------
    centers : ndarray of shape (n_clusters, n_features), float64
    indices : ndarray of shape (n_clusters,), the rows chosen as centres

    Notes
    -----
    NaN entries are missing values: distances run over each row's observed
    coordinates, and a chosen row's missing coordinates take the column means.

    Rows are processed in blocks, so that the extra memory is one float64 per
    sample (the current D(x)^2) plus a few small blocks, whatever
    ``n_local_trials`` is.
    """
    X, missing = check_array(X, allow_nan=True, with_missing=True)
    n_samples = X.shape[0]
    check_int("n_clusters", n_clusters, low=1, high=n_samples)
    w = check_sample_weight(sample_weight, n_samples)
    rs = check_random_state(random_state)
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    check_int("n_local_trials", n_local_trials, low=1)
    return _kmeans_plusplus(X, n_clusters, w, rs, n_local_trials, missing)


def _cumsum_blocks(values, blocks):
    """Yield (start, block of the running sum) of the array whose rows
    ``start:stop`` are the new array ``values(start, stop)``.

    The blocks equal, bit for bit, the slices of one ``np.cumsum`` over the
    whole array: the running total is carried into the first element of each
    block, which is the addition cumsum itself performs there.
    """
    carry = 0.0
    for start, stop in blocks:
        part = values(start, stop)
        part[0] += carry
        np.cumsum(part, out=part)
        carry = part[-1]
        yield start, part


def _weighted_choice(rs, w, blocks):
    """``rs.choice(len(w), p=w / w.sum())``: the same draw from the same stream,
    without the (n_samples,) probability and cumulative arrays."""
    total = w.sum()
    if not np.isfinite(total):  # let numpy report the overflow as before
        return int(rs.choice(w.shape[0], p=w / total))

    def p(start, stop):
        return w[start:stop] / total

    last = 0.0
    for _, part in _cumsum_blocks(p, blocks):
        last = part[-1]
    u = rs.random_sample()
    for start, part in _cumsum_blocks(p, blocks):
        part /= last
        if part[-1] > u:
            return start + int(np.searchsorted(part, u, side="right"))
    return w.shape[0] - 1  # not reached: the last cdf value is 1 > u


def _weighted_sample(rs, w, size, blocks):
    """``rs.choice(len(w), size, replace=False, p=w / w.sum())``: the same rows
    from the same stream, without (n_samples,) temporaries.

    numpy draws ``size - found`` uniforms at a time, maps them through the
    cumulative distribution of the rows not yet found, keeps the new distinct
    rows in the order drawn and repeats; so does this, a block of rows at a time.
    """
    total = w.sum()
    if not np.isfinite(total) or sum(np.count_nonzero(w[start:stop] / total)
                                     for start, stop in blocks) < size:
        # let numpy raise as before (overflow, fewer positive probabilities than rows)
        return rs.choice(w.shape[0], size=size, replace=False, p=w / total)
    found = np.empty(0, dtype=np.int64)

    def p(start, stop):
        part = w[start:stop] / total
        lo, hi = np.searchsorted(chosen, [start, stop])
        part[chosen[lo:hi] - start] = 0.0  # rows already drawn
        return part

    while found.size < size:
        x = rs.random_sample(size - found.size)
        chosen = np.sort(found)
        last = 0.0
        for _, part in _cumsum_blocks(p, blocks):
            last = part[-1]
        new = np.full(x.size, w.shape[0], dtype=np.int64)  # cdf.searchsorted(x, "right")
        pending = np.ones(x.size, dtype=bool)
        for start, part in _cumsum_blocks(p, blocks):
            part /= last
            here = pending & (x < part[-1])
            if here.any():
                new[here] = start + np.searchsorted(part, x[here], side="right")
                pending &= ~here
                if not pending.any():
                    break
        _, first = np.unique(new, return_index=True)
        found = np.concatenate([found, new[np.sort(first)]])
    return found


def _kmeans_plusplus(X, n_clusters, w, rs, n_local_trials, missing):
    """k-means++ on validated input (X checked, w float64 of shape (n,), rs a
    RandomState; ``missing``: whether X holds NaN, from ``check_array``)."""
    kernels = get_kernels()
    n_samples, n_features = X.shape
    blocks = value_blocks(n_samples, n_features)  # small temporaries (see value_blocks)
    fill = column_mean(X, w, missing=True) if missing else None
    distance = kernels.sqdist_missing if missing else kernels.sqdist

    def rows_as_centers(rows):
        centers = X[rows].astype(np.float64)
        if missing:  # a centre's missing coordinates take the column means
            centers = np.where(np.isnan(centers), fill, centers)
        return centers

    def sqdist_blocks(centers):
        """Yield (start, stop, squared distances of the block's rows to ``centers``)."""
        out = np.empty((blocks[0][1] - blocks[0][0], centers.shape[0]))
        for start, stop in blocks:
            # C order: one compiled kernel serves every layout of X
            x = np.ascontiguousarray(X[start:stop])
            dist = out[:stop - start]
            distance(x, centers, _config.chunk_layout(stop - start)[0], dist)
            del x  # a copy when X is not C-contiguous: one at a time
            yield start, stop, dist

    indices = np.empty(n_clusters, dtype=np.int64)
    indices[0] = _weighted_choice(rs, w, blocks)
    closest = np.empty(n_samples)  # D(x)^2 to the nearest centre so far
    potential = 0.0
    for start, stop, dist in sqdist_blocks(rows_as_centers(indices[:1])):
        closest[start:stop] = dist[:, 0]
        potential += weighted_sum(w[start:stop], closest[start:stop])
    for c in range(1, n_clusters):
        targets = rs.uniform(size=n_local_trials) * potential
        # np.searchsorted(np.cumsum(w * closest), targets), clipped to the last row
        candidates = np.full(n_local_trials, n_samples - 1, dtype=np.int64)
        pending = np.ones(n_local_trials, dtype=bool)
        for start, part in _cumsum_blocks(lambda a, b: w[a:b] * closest[a:b], blocks):
            here = pending & (targets <= part[-1])
            if here.any():
                candidates[here] = start + np.searchsorted(part, targets[here])
                pending &= ~here
                if not pending.any():
                    break
        centers = rows_as_centers(candidates)
        potentials = np.zeros(n_local_trials)
        for start, stop, dist in sqdist_blocks(centers):
            np.minimum(closest[start:stop, None], dist, out=dist)
            potentials += weighted_sum(w[start:stop], dist)
        best = int(np.argmin(potentials))
        potential = potentials[best]
        indices[c] = candidates[best]
        if c + 1 < n_clusters:  # D(x)^2 with the new centre, for the next draw
            for start, stop, dist in sqdist_blocks(centers[best:best + 1]):
                np.minimum(closest[start:stop], dist[:, 0], out=closest[start:stop])
    return rows_as_centers(indices), indices


class _KMeansMonitor:
    """scikit-learn's lloyd stopping rule."""

    def __init__(self, tol):
        self.tol = tol

    def update(self, stats, old_params, new_params):
        if stats.n_changed == 0:  # strict convergence: no label moved
            return True
        return float(np.sum((new_params.means - old_params.means) ** 2)) <= self.tol

    def describe(self, stats):
        return f"inertia {stats.maha:.10g}"


def _same_clustering(labels1, labels2, n_clusters):
    """True if two labelings differ only by a permutation of the labels.

    That is, every label of ``labels1`` meets a single label of ``labels2``;
    the pairs are collected a block of rows at a time.
    """
    seen = np.zeros((n_clusters, n_clusters), dtype=bool)
    for start in range(0, labels1.shape[0], 65536):
        seen[labels1[start:start + 65536], labels2[start:start + 65536]] = True
    return bool(np.all(seen.sum(axis=1) <= 1))


class KMeans(BaseEstimator):
    """K-means clustering (Lloyd's algorithm) as hard EM, on every core.

    At the same initial centres it returns scikit-learn's ``lloyd`` result:
    the same labels, and centres and inertia equal to about 1e-10 relative.

    Parameters
    ----------
    n_clusters : int, default=8
    init : {"k-means++", "random"} or array-like of shape (n_clusters, n_features)
    n_init : "auto" or int, default="auto"
        "auto" runs 1 initialisation for "k-means++" or an array, 10 for "random".
    max_iter : int, default=300
    tol : float, default=1e-4
        Relative tolerance: the run stops when the squared centre shift is at
        most ``tol`` times the mean variance of the features.
    random_state : int, RandomState or None
    verbose : int, default=0

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features), float64
    labels_ : ndarray of shape (n_samples,)
    inertia_ : float
        Sum of (weighted) squared distances of the samples to their centre.
    n_iter_ : int
    n_features_in_ : int
    """

    def __init__(self, n_clusters=8, *, init="k-means++", n_init="auto", max_iter=300,
                 tol=1e-4, random_state=None, verbose=0):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------ checks
    def _check_parameters(self, X):
        k = check_int("n_clusters", self.n_clusters, low=1)
        if X.shape[0] < k:
            raise ValueError(f"n_samples={X.shape[0]} should be >= n_clusters={k}")
        check_int("max_iter", self.max_iter, low=1)
        check_float("tol", self.tol, low=0.0)
        check_int("verbose", self.verbose, low=0)
        check_random_state(self.random_state)
        init = self.init
        if isinstance(init, str):
            if init not in ("k-means++", "random"):
                raise ValueError(
                    f"init must be 'k-means++', 'random' or an array of shape "
                    f"(n_clusters, n_features), got {init!r}"
                )
            init_centers = None
        else:
            init_centers = check_param_array("init", init, (k, X.shape[1]))
        if isinstance(self.n_init, str):
            if self.n_init != "auto":
                raise ValueError(f"n_init must be 'auto' or an integer >= 1, got {self.n_init!r}")
            n_init = 10 if isinstance(init, str) and init == "random" else 1
        elif isinstance(self.n_init, numbers.Integral) and not isinstance(self.n_init, bool):
            n_init = check_int("n_init", self.n_init, low=1)
        else:
            raise TypeError(f"n_init must be 'auto' or an integer >= 1, got {self.n_init!r}")
        if init_centers is not None and n_init != 1:
            warnings.warn(
                f"Explicit initial center position passed: performing only one init "
                f"in KMeans instead of n_init={n_init}.", RuntimeWarning, stacklevel=3)
            n_init = 1
        return init_centers, n_init

    # ------------------------------------------------------------ engine pieces
    def _restricted_params(self, centers):
        """The restricted Gaussian mixture: identity covariances, weights 1/k."""
        k = centers.shape[0]
        return GaussianParams(np.full(k, 1.0 / k), np.array(centers, dtype=np.float64),
                              np.ones(k), np.ones(k))

    @staticmethod
    def _family(missing=False):
        # with NaN, a centre coordinate is the mean of the observed values
        return GaussianFamily("spherical", reg_covar=0.0,
                              fixed=frozenset({"weights", "covariances"}),
                              missing=missing, observed_means=True)

    def _relocate_empty_clusters(self, X, sample_weight, fill):
        """Move each empty cluster to one of the points farthest from their centre.

        With missing values (``fill`` holds the column means) distances run over
        observed coordinates and the moved centre takes the column mean where
        its point has none.
        """

        def hook(stats, params, labels):
            empty = np.flatnonzero(stats.nk == 0)
            if empty.size == 0:
                return stats
            centers = params.means
            dist = np.empty(X.shape[0])
            for start in range(0, X.shape[0], 8192):  # 1 MB temporaries for d = 16
                sq = np.subtract(X[start:start + 8192], centers[labels[start:start + 8192]],
                                 dtype=np.float64)
                sq **= 2
                dist[start:start + 8192] = np.sum(sq, axis=1) if fill is None \
                    else np.nansum(sq, axis=1)
            far = np.argpartition(dist, -empty.size)[:-empty.size - 1:-1]
            for new_id, idx in zip(empty, far):
                w = sample_weight[idx]
                x = X[idx].astype(np.float64)
                old_id = labels[idx]
                if fill is None:
                    stats.sx[old_id] -= w * (x - centers[old_id])
                    stats.nk[old_id] -= w
                    stats.sx[new_id] = w * (x - centers[new_id])
                    stats.nk[new_id] = w
                    continue
                observed = ~np.isnan(x)
                stats.sx[old_id] -= np.where(observed, w * (x - centers[old_id]), 0.0)
                stats.nko[old_id] -= w * observed
                stats.nk[old_id] -= w
                stats.sx[new_id] = w * (np.where(observed, x, fill) - centers[new_id])
                stats.nko[new_id] = w
                stats.nk[new_id] = w
            return stats
        return hook

    # ------------------------------------------------------------ public API
    def fit(self, X, y=None, sample_weight=None):
        """Compute k-means clustering.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self
        """
        X, missing = check_array(X, allow_nan=True, with_missing=True)
        init_centers, n_init = self._check_parameters(X)
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        return self._fit(X, sample_weight, init_centers, n_init,
                         check_random_state(self.random_state), missing)

    def _fit(self, X, sample_weight, init_centers, n_init, random_state, missing):
        """Fit on validated input: X from ``check_array``, float64 ``sample_weight``;
        ``missing``: whether X holds NaN, from ``check_array``.

        GaussianMixture's "kmeans" initialisation calls this directly, so that
        its own validated arrays are not copied again.
        """
        k = self.n_clusters
        fill = None
        if missing:
            fill = observed_column_mean(X, sample_weight)
        tol = float(np.mean(column_variance(X, missing))) * self.tol if self.tol > 0 else 0.0

        def initialize():
            if init_centers is not None:
                centers = init_centers
            elif self.init == "k-means++":
                centers, _ = _kmeans_plusplus(X, k, sample_weight, random_state,
                                              2 + int(np.log(k)), missing)
            else:
                seeds = _weighted_sample(random_state, sample_weight, k,
                                         row_blocks(X.shape[0]))
                centers = X[seeds].astype(np.float64)
                if missing:
                    centers = np.where(np.isnan(centers), fill, centers)
            return self._restricted_params(centers)

        def is_better(run, best):
            return (run.final_stats.maha < best.final_stats.maha
                    and not _same_clustering(run.labels, best.labels, k))

        kernels = get_kernels()
        bounded = not missing and kernels.kmeans_bounds_pay(X.shape[1], k)
        run = fit_em(
            self._family(missing), kernels, X, sample_weight,
            n_components=k, initialize=initialize, n_init=n_init,
            max_iter=self.max_iter, hard=True,
            make_monitor=lambda _: _KMeansMonitor(tol), is_better=is_better,
            stats_hook=self._relocate_empty_clusters(X, sample_weight, fill),
            # the iterations' M-step moves only the centres, and the stopping rule
            # reads the labels and the centres: the inertia of each iteration is
            # wanted only to print it
            iteration_second_moments=bool(self.verbose),
            # complete data: rows whose nearest centre provably did not change
            # are not scored again (the same labels; see estep_kmeans), where
            # the backend finds that this pays; their kept sums are taken about
            # a point among the data (the mean of the first rows), so that a
            # centre's sum stays small beside its points' distances from it
            bounded=bounded,
            center=_sums_origin(X) if bounded else None,
            verbose=self.verbose,
        )
        # a centre with a positive weight has points: then all k are distinct
        # without a pass over the labels (0.27 ms at n = 2e5, after the E-step)
        distinct = k if np.all(run.final_stats.nk > 0) else np.count_nonzero(
            np.bincount(run.labels, minlength=k))
        if distinct < k:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than "
                f"n_clusters ({k}). Possibly due to duplicate points in X.",
                ConvergenceWarning, stacklevel=3)
        if run.final_stats.nko is not None and np.any(run.final_stats.nko == 0):
            j, a = np.argwhere(run.final_stats.nko == 0)[0]
            warnings.warn(
                f"feature {a} is missing in every point of cluster {j}; that centre "
                "coordinate keeps its previous value (from the initialisation or an "
                "earlier iteration)", UserWarning, stacklevel=3)
        self.cluster_centers_ = run.params.means
        self.labels_ = run.labels
        self.inertia_ = float(run.final_stats.maha)
        self.n_iter_ = run.n_iter
        self.n_features_in_ = X.shape[1]
        return self

    def _assign(self, X, sample_weight=None):
        """Hard E-step at the fitted centres: (labels, inertia)."""
        check_is_fitted(self, "cluster_centers_")
        X, missing = check_array(X, allow_nan=True, with_missing=True)
        check_n_features(self, X)
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        n, d = X.shape
        chunk_size, n_chunks = _config.chunk_layout(n)
        family = self._family(missing)
        labels = np.full(n, -1, dtype=np.int64)
        stats = family.e_step(get_kernels(), X, sample_weight,
                              self._restricted_params(self.cluster_centers_),
                              center=np.zeros(d), hard=True, chunk_size=chunk_size,
                              labels=labels,
                              buffers=family.allocate(n_chunks, self.n_clusters, d))
        return labels, float(stats.maha)

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit and return ``labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def predict(self, X):
        """Index of the nearest centre for each sample, ndarray of shape (n_samples,)."""
        return self._assign(X)[0]

    def transform(self, X):
        """Euclidean distance of each sample to each centre, shape (n_samples, n_clusters)."""
        check_is_fitted(self, "cluster_centers_")
        X, missing = check_array(X, allow_nan=True, with_missing=True)
        check_n_features(self, X)
        chunk_size, _ = _config.chunk_layout(X.shape[0])
        out = np.empty((X.shape[0], self.n_clusters))
        kernels = get_kernels()
        # with NaN: the distance over each row's observed coordinates
        distance = kernels.sqdist_missing if missing else kernels.sqdist
        distance(X, self.cluster_centers_, chunk_size, out)
        return np.sqrt(out, out=out)

    def fit_transform(self, X, y=None, sample_weight=None):
        """Fit, then return ``transform(X)``."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the (weighted) inertia of X at the fitted centres."""
        return -self._assign(X, sample_weight)[1]
