"""The Bernoulli mixture family: sufficient statistics and the M-step.

M-step with a symmetric Beta(1 + alpha, 1 + alpha) prior on each success
probability, which keeps every log-probability finite::

    weights_k = N_k / sum_i w_i
    means_kj  = (sum_i w_i r_ik x_ij + alpha) / (N_k + 2 alpha)
"""

from dataclasses import dataclass

import numpy as np

from .backends._table import OBJ_CHANGED, OBJ_LOGLIK, e_step_buffers


@dataclass
class BernoulliParams:
    weights: np.ndarray  # (k,)
    means: np.ndarray    # (k, d) success probabilities


@dataclass
class BernoulliStats:
    nk: np.ndarray
    sx: np.ndarray
    obj: np.ndarray
    sum_weight: float
    nko: np.ndarray = None  # (k, d) observed weight per coordinate; None without NaN

    def __add__(self, other):
        nko = None if self.nko is None else self.nko + other.nko
        return BernoulliStats(self.nk + other.nk, self.sx + other.sx,
                              self.obj + other.obj, self.sum_weight + other.sum_weight,
                              nko)

    @property
    def lower_bound(self):
        return self.obj[OBJ_LOGLIK] / self.sum_weight

    @property
    def n_changed(self):
        return int(self.obj[OBJ_CHANGED])


class BernoulliFamily:
    """E-step driver and M-step of a Bernoulli mixture.

    With ``missing=True`` (NaN entries) the missing coordinates are left out of
    both steps: the likelihood is that of the observed coordinates, and each
    success probability is estimated from the rows that observe it::

        means_kj = (sum_{i: x_ij observed} w_i r_ik x_ij + alpha)
                   / (sum_{i: x_ij observed} w_i r_ik + 2 alpha)
    """

    def __init__(self, alpha, fixed=frozenset(), missing=False):
        self.alpha = alpha
        self.fixed = fixed
        self.missing = missing

    def allocate(self, n_chunks, n_components, n_features):
        buffers = {
            "nk": np.empty((n_chunks, n_components)),
            "sx": np.empty((n_chunks, n_components, n_features)),
            "obj": np.empty((n_chunks, 3)),
        }
        if self.missing:
            buffers["nko"] = np.empty((n_chunks, n_components, n_features))
        return buffers

    @staticmethod
    def natural_params(params):
        """(logit (k, d), log_norm (k,), log_q (k, d)).

        log p(x | k) + log w_k = log_norm_k + x . logit_k, and log_q = log(1 - p).
        """
        p = params.means
        with np.errstate(divide="ignore"):
            log_p, log_q = np.log(p), np.log1p(-p)
            log_weights = np.log(params.weights)
        return log_p - log_q, log_weights + log_q.sum(axis=1), log_q

    def e_step(self, kernels, X, sample_weight, params, *, center, hard, chunk_size,
               labels, buffers, log_prob=None, imputed=None, total_weight=None,
               second_moments=True):
        """Run the E-step kernel; return its :class:`BernoulliStats`, or None
        when ``buffers`` is None (see ``GaussianFamily.e_step``; this family has
        no second moments: ``second_moments`` is ignored)."""
        k, d = params.means.shape
        wanted = buffers is not None
        buffers = e_step_buffers(self, buffers, X.shape[0], chunk_size, k, d)
        # the fit's driver passes sum(sample_weight), an O(n) sum, once a fit
        if total_weight is None and wanted:
            total_weight = float(sample_weight.sum())
        if log_prob is None:
            log_prob = np.empty((0, k))
        logit, log_norm, log_q = self.natural_params(params)
        nko = None
        if self.missing:
            kernels.estep_bernoulli_missing(
                X, sample_weight, np.ascontiguousarray(logit), log_norm,
                np.ascontiguousarray(log_q), hard, chunk_size, labels, log_prob,
                buffers["nk"], buffers["nko"], buffers["sx"], buffers["obj"])
            nko = buffers["nko"].sum(axis=0)
        else:
            kernels.estep_bernoulli(X, sample_weight, np.ascontiguousarray(logit),
                                    log_norm, hard, chunk_size, labels, log_prob,
                                    buffers["nk"], buffers["sx"], buffers["obj"])
        if not wanted:
            return None
        return BernoulliStats(buffers["nk"].sum(axis=0), buffers["sx"].sum(axis=0),
                              buffers["obj"].sum(axis=0), total_weight, nko)

    def m_step(self, stats, params, shift=None, center=None, fixed=None):
        fixed = self.fixed if fixed is None else fixed
        weights = params.weights if "weights" in fixed else stats.nk / stats.sum_weight
        if "means" in fixed:
            means = params.means
        else:
            counts = stats.nk[:, None] if stats.nko is None else stats.nko
            means = (stats.sx + self.alpha) / (counts + 2.0 * self.alpha)
        return BernoulliParams(weights, means)

    def from_resp(self, X, sample_weight, resp_chunks, center, n_components):
        n, d = X.shape
        nk = np.zeros(n_components)
        nko = np.zeros((n_components, d)) if self.missing else None
        sx = np.zeros((n_components, d))
        for start in range(0, n, 8192):
            stop = min(n, start + 8192)
            wr = resp_chunks(start, stop) * sample_weight[start:stop, None]
            x = X[start:stop].astype(np.float64)
            nk += wr.sum(axis=0)
            if self.missing:
                observed = ~np.isnan(x)
                nko += wr.T @ observed
                x = np.where(observed, x, 0.0)
            sx += wr.T @ x
        stats = BernoulliStats(nk, sx, np.zeros(3), float(sample_weight.sum()), nko)
        params = self.m_step(stats, None, fixed=frozenset())
        # seed-row inits ("k-means++", "random_from_data") give most rows no
        # responsibility, so nk sums to less than sum_i w_i: renormalise
        params.weights = nk / nk.sum()
        return params
