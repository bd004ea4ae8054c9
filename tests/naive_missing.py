"""Slow references for fitting with missing values (NaN), written for clarity.

Plain loops over points; no fastem code.  A Gaussian point's observed
coordinates ``o`` are handled with the covariance submatrix ``Sigma_oo``
directly (scipy.stats on the observed coordinates, ``np.linalg.solve`` for the
conditional moments), never with the precision and its Schur complement as
fastem does.  Each EM iteration records the lower bound (the weighted mean
observed-data log-likelihood) at the parameters *before* its M-step, as
fastem's ``lower_bounds_`` do.

Covariances are held in fastem's shapes: full (k, d, d), tied (d, d),
diag (k, d), spherical (k,).
"""

import numpy as np
from scipy.stats import multivariate_normal

EPS10 = 10 * np.finfo(np.float64).eps  # added to N_k by fastem and scikit-learn


def dense_covariance(cov_type, covariances, j, d):
    """Component j's covariance as a (d, d) matrix."""
    if cov_type == "full":
        return covariances[j]
    if cov_type == "tied":
        return covariances
    if cov_type == "diag":
        return np.diag(covariances[j])
    return covariances[j] * np.eye(d)


def covariances_from_precisions(cov_type, precisions):
    if cov_type == "full":
        return np.array([np.linalg.inv(p) for p in precisions])
    if cov_type == "tied":
        return np.linalg.inv(precisions)
    return 1.0 / precisions


def responsibilities(log_prob, hard):
    """(resp, ll) of one point from its (k,) log(w_k p_k(x_o))."""
    if hard:
        resp = np.zeros_like(log_prob)
        resp[np.argmax(log_prob)] = 1.0
        return resp, np.max(log_prob)
    top = np.max(log_prob)
    ll = top + np.log(np.sum(np.exp(log_prob - top)))
    return np.exp(log_prob - ll), ll


# ---------------------------------------------------------------- Gaussian mixture
def gaussian_estep(X, weights, means, covariances, cov_type, hard=False):
    """Per point and component: log-probability, conditional moments.

    Returns
    -------
    log_prob : (n, k) log w_k + log N(x_o; mu_ko, Sigma_k,oo)
    resp : (n, k) responsibilities (one-hot when ``hard``)
    ll : (n,) log sum_k (soft) or max_k (hard) of log_prob
    filled : (n, k, d) x with its missing coordinates replaced by
        E[x_m | x_o, k] = mu_m + Sigma_mo Sigma_oo^-1 (x_o - mu_o)
    cond_cov : (n, k, d, d) Cov[x | x_o, k]: Sigma_mm - Sigma_mo Sigma_oo^-1 Sigma_om
        on the missing block, zero elsewhere
    """
    n, d = X.shape
    k = len(weights)
    log_prob = np.empty((n, k))
    resp = np.empty((n, k))
    ll = np.empty(n)
    filled = np.empty((n, k, d))
    cond_cov = np.zeros((n, k, d, d))
    for i in range(n):
        x = X[i]
        o = ~np.isnan(x)
        m = ~o
        for j in range(k):
            mu = means[j]
            S = dense_covariance(cov_type, covariances, j, d)
            S_oo, S_mo, S_mm = S[np.ix_(o, o)], S[np.ix_(m, o)], S[np.ix_(m, m)]
            if o.any():
                log_density = multivariate_normal.logpdf(x[o], mu[o], S_oo)
                filled[i, j, m] = mu[m] + S_mo @ np.linalg.solve(S_oo, x[o] - mu[o])
                cond_cov[i, j][np.ix_(m, m)] = S_mm - S_mo @ np.linalg.solve(S_oo, S_mo.T)
            else:  # nothing observed: the density of the empty marginal is 1
                log_density = 0.0
                filled[i, j] = mu
                cond_cov[i, j] = S
            filled[i, j, o] = x[o]
            log_prob[i, j] = np.log(weights[j]) + log_density
        resp[i], ll[i] = responsibilities(log_prob[i], hard)
    return log_prob, resp, ll, filled, cond_cov


def gaussian_mstep(cov_type, sample_weight, resp, filled, cond_cov, reg_covar):
    """Maximise the expected complete-data log-likelihood (Ghahramani & Jordan, 1994)."""
    n, k, d = filled.shape
    wr = sample_weight[:, None] * resp
    nk = wr.sum(axis=0) + EPS10
    weights = nk / nk.sum()
    means = np.zeros((k, d))
    for j in range(k):
        for i in range(n):
            means[j] += wr[i, j] * filled[i, j]
        means[j] /= nk[j]
    # full-type expected scatter about the new means
    scatter = np.zeros((k, d, d))
    for j in range(k):
        for i in range(n):
            diff = filled[i, j] - means[j]
            scatter[j] += wr[i, j] * (np.outer(diff, diff) + cond_cov[i, j])
    if cov_type == "full":
        covariances = scatter / nk[:, None, None] + reg_covar * np.eye(d)
    elif cov_type == "tied":
        covariances = scatter.sum(axis=0) / nk.sum() + reg_covar * np.eye(d)
    elif cov_type == "diag":
        covariances = np.array([np.diag(s) for s in scatter]) / nk[:, None] + reg_covar
    else:
        covariances = np.array([np.diag(s).mean() for s in scatter]) / nk + reg_covar
    return weights, means, covariances


def gaussian_em(X, sample_weight, weights, means, covariances, cov_type, reg_covar,
                n_iter, hard=False):
    """``n_iter`` EM iterations; returns (weights, means, covariances, lower_bounds)."""
    lower_bounds = []
    for _ in range(n_iter):
        _, resp, ll, filled, cond_cov = gaussian_estep(X, weights, means, covariances,
                                                       cov_type, hard)
        lower_bounds.append(np.sum(sample_weight * ll) / np.sum(sample_weight))
        weights, means, covariances = gaussian_mstep(cov_type, sample_weight, resp,
                                                     filled, cond_cov, reg_covar)
    return weights, means, covariances, lower_bounds


def gaussian_impute(X, weights, means, covariances, cov_type):
    """Each NaN becomes sum_k r_ik E[x_m | x_o, k]."""
    _, resp, _, filled, _ = gaussian_estep(X, weights, means, covariances, cov_type)
    out = X.copy()
    for i in range(X.shape[0]):
        m = np.isnan(X[i])
        out[i, m] = resp[i] @ filled[i][:, m]
    return out


# ---------------------------------------------------------------- K-means
def kmeans_assign(X, centers):
    """Labels and squared distances over each point's observed coordinates."""
    n, k = X.shape[0], centers.shape[0]
    dist = np.empty((n, k))
    for i in range(n):
        o = ~np.isnan(X[i])
        for j in range(k):
            dist[i, j] = np.sum((X[i, o] - centers[j, o]) ** 2)
    return np.argmin(dist, axis=1), dist


def kmeans_update(X, sample_weight, labels, centers):
    """Each centre coordinate: weighted mean of the observed values among its points.

    A coordinate that no point of the cluster observes keeps its value.
    """
    k, d = centers.shape
    new = centers.copy()
    for j in range(k):
        for a in range(d):
            rows = (labels == j) & ~np.isnan(X[:, a])
            if sample_weight[rows].sum() > 0:
                new[j, a] = sample_weight[rows] @ X[rows, a] / sample_weight[rows].sum()
    return new


def kmeans_lloyd(X, sample_weight, centers, n_iter):
    """``n_iter`` Lloyd iterations; returns (labels, centers, inertia) at the end."""
    for _ in range(n_iter):
        labels, _ = kmeans_assign(X, centers)
        assert np.unique(labels).size == centers.shape[0], "empty cluster: pick another init"
        centers = kmeans_update(X, sample_weight, labels, centers)
    labels, dist = kmeans_assign(X, centers)
    inertia = np.sum(sample_weight * dist[np.arange(X.shape[0]), labels])
    return labels, centers, inertia


def kmeans_plusplus(X, n_clusters, sample_weight, random_state, n_local_trials):
    """Greedy k-means++ with scikit-learn's random draws, over observed coordinates.

    A chosen row becomes a centre with its missing coordinates replaced by the
    weighted column means of the observed values.  Returns (centers, indices).
    """
    n, d = X.shape
    w = sample_weight
    observed = ~np.isnan(X)
    fill = np.array([w[observed[:, a]] @ X[observed[:, a], a] / w[observed[:, a]].sum()
                     for a in range(d)])

    def as_center(i):
        return np.where(observed[i], X[i], fill)

    def sqdist_to(center):
        return np.array([np.sum((X[i, observed[i]] - center[observed[i]]) ** 2)
                         for i in range(n)])

    indices = [random_state.choice(n, p=w / w.sum())]
    closest = sqdist_to(as_center(indices[0]))
    potential = closest @ w
    for _ in range(1, n_clusters):
        # candidates drawn with probability proportional to w D(x)^2
        targets = random_state.uniform(size=n_local_trials) * potential
        candidates = np.minimum(np.searchsorted(np.cumsum(w * closest), targets), n - 1)
        best = None
        for candidate in candidates:
            trial = np.minimum(closest, sqdist_to(as_center(candidate)))
            if best is None or trial @ w < best[0]:
                best = (trial @ w, trial, candidate)
        potential, closest, chosen = best
        indices.append(chosen)
    return np.array([as_center(i) for i in indices]), np.array(indices)


# ---------------------------------------------------------------- Bernoulli mixture
def bernoulli_log_prob(X, weights, means):
    """(n, k) log w_k + sum over observed j of x log p_kj + (1 - x) log(1 - p_kj)."""
    n, k = X.shape[0], len(weights)
    log_prob = np.empty((n, k))
    for i in range(n):
        o = ~np.isnan(X[i])
        x = X[i, o]
        for j in range(k):
            p = means[j, o]
            log_prob[i, j] = np.log(weights[j]) + np.sum(x * np.log(p) + (1 - x) * np.log1p(-p))
    return log_prob


def bernoulli_em(X, sample_weight, weights, means, alpha, n_iter, hard=False):
    """``n_iter`` EM iterations; returns (weights, means, lower_bounds)."""
    n, d = X.shape
    k = len(weights)
    lower_bounds = []
    for _ in range(n_iter):
        log_prob = bernoulli_log_prob(X, weights, means)
        resp = np.empty((n, k))
        ll = np.empty(n)
        for i in range(n):
            resp[i], ll[i] = responsibilities(log_prob[i], hard)
        lower_bounds.append(np.sum(sample_weight * ll) / np.sum(sample_weight))
        wr = sample_weight[:, None] * resp
        weights = wr.sum(axis=0) / sample_weight.sum()
        means = np.empty((k, d))
        for j in range(k):
            for a in range(d):
                rows = ~np.isnan(X[:, a])
                means[j, a] = ((wr[rows, j] @ X[rows, a] + alpha)
                               / (wr[rows, j].sum() + 2 * alpha))
    return weights, means, lower_bounds
