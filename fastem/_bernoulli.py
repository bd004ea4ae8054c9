"""The Bernoulli mixture family: sufficient statistics and the M-step.

M-step with a symmetric Beta(1 + alpha, 1 + alpha) prior on each success
probability, which keeps every log-probability finite::

    weights_k = N_k / sum_i w_i
    means_kj  = (sum_i w_i r_ik x_ij + alpha) / (N_k + 2 alpha)
"""

from dataclasses import dataclass

import numpy as np

from .backends._table import OBJ_CHANGED, OBJ_LOGLIK


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

    def __add__(self, other):
        return BernoulliStats(self.nk + other.nk, self.sx + other.sx,
                              self.obj + other.obj, self.sum_weight + other.sum_weight)

    @property
    def lower_bound(self):
        return self.obj[OBJ_LOGLIK] / self.sum_weight

    @property
    def n_changed(self):
        return int(self.obj[OBJ_CHANGED])


class BernoulliFamily:
    def __init__(self, alpha, fixed=frozenset()):
        self.alpha = alpha
        self.fixed = fixed

    def allocate(self, n_chunks, n_components, n_features):
        return {
            "nk": np.empty((n_chunks, n_components)),
            "sx": np.empty((n_chunks, n_components, n_features)),
            "obj": np.empty((n_chunks, 3)),
        }

    @staticmethod
    def natural_params(params):
        """(logit (k, d), log_norm (k,)) with log p(x|k) = log_norm + x . logit."""
        p = params.means
        with np.errstate(divide="ignore"):
            log_p, log_q = np.log(p), np.log1p(-p)
            log_weights = np.log(params.weights)
        return log_p - log_q, log_weights + log_q.sum(axis=1)

    def e_step(self, kernels, X, sample_weight, params, *, center, hard, chunk_size,
               labels, buffers, log_prob=None):
        k = params.means.shape[0]
        if log_prob is None:
            log_prob = np.empty((0, k))
        logit, log_norm = self.natural_params(params)
        kernels.estep_bernoulli(X, sample_weight, np.ascontiguousarray(logit), log_norm,
                                hard, chunk_size, labels, log_prob, buffers["nk"],
                                buffers["sx"], buffers["obj"])
        return BernoulliStats(buffers["nk"].sum(axis=0), buffers["sx"].sum(axis=0),
                              buffers["obj"].sum(axis=0), float(sample_weight.sum()))

    def m_step(self, stats, params, shift=None, center=None, fixed=None):
        fixed = self.fixed if fixed is None else fixed
        weights = params.weights if "weights" in fixed else stats.nk / stats.sum_weight
        if "means" in fixed:
            means = params.means
        else:
            means = (stats.sx + self.alpha) / (stats.nk + 2.0 * self.alpha)[:, None]
        return BernoulliParams(weights, means)

    def from_resp(self, X, sample_weight, resp_chunks, center, n_components):
        n, d = X.shape
        nk = np.zeros(n_components)
        sx = np.zeros((n_components, d))
        for start in range(0, n, 8192):
            stop = min(n, start + 8192)
            wr = resp_chunks(start, stop) * sample_weight[start:stop, None]
            nk += wr.sum(axis=0)
            sx += wr.T @ X[start:stop].astype(np.float64)
        stats = BernoulliStats(nk, sx, np.zeros(3), float(sample_weight.sum()))
        params = self.m_step(stats, None, fixed=frozenset())
        # seed-row inits ("k-means++", "random_from_data") give most rows no
        # responsibility, so nk sums to less than sum_i w_i: renormalise
        params.weights = nk / nk.sum()
        return params
