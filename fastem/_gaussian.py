"""The Gaussian mixture family: sufficient statistics and the M-step.

The E-step (a backend kernel) *adds* each chunk's contribution into additive
statistics; :meth:`GaussianFamily.m_step` only reads them.  Moments are taken
about a shift (the current means, and a fixed ``center`` for the tied
scatter), which keeps the second moments free of cancellation; statistics
computed with the same shift add up over any split of the rows.
"""

from dataclasses import dataclass

import numpy as np

from . import _linalg
from .backends._table import OBJ_CHANGED, OBJ_LOGLIK, OBJ_MAHA, e_step_buffers, sxx_shape

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
_EPS10 = 10 * np.finfo(np.float64).eps  # keeps empty components finite, as scikit-learn


@dataclass
class GaussianParams:
    weights: np.ndarray       # (k,)
    means: np.ndarray         # (k, d)
    covariances: np.ndarray   # full (k, d, d), tied (d, d), diag (k, d), spherical (k,)
    prec_chol: np.ndarray     # same shape as covariances


@dataclass
class GaussianStats:
    """Additive statistics of one E-step; see ``backends/_table.py``."""

    nk: np.ndarray
    sx: np.ndarray
    sxx: np.ndarray
    obj: np.ndarray  # [sum w ll, sum w maha, n_changed]
    sum_weight: float
    nko: np.ndarray = None  # (k, d) observed weight per coordinate; None without NaN

    def __add__(self, other):
        nko = None if self.nko is None else self.nko + other.nko
        return GaussianStats(self.nk + other.nk, self.sx + other.sx,
                             self.sxx + other.sxx, self.obj + other.obj,
                             self.sum_weight + other.sum_weight, nko)

    @property
    def lower_bound(self):
        return self.obj[OBJ_LOGLIK] / self.sum_weight

    @property
    def maha(self):
        return self.obj[OBJ_MAHA]

    @property
    def n_changed(self):
        return int(self.obj[OBJ_CHANGED])




class GaussianFamily:
    """E-step driver and M-step of a Gaussian mixture of one covariance type.

    ``missing=True`` selects the kernels for data with NaN entries.
    ``observed_means=True`` makes each mean coordinate the weighted mean of
    the *observed* values of that coordinate (K-means with missing values);
    without NaN it changes nothing.
    """

    def __init__(self, covariance_type, reg_covar, fixed=frozenset(), missing=False,
                 observed_means=False):
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.fixed = fixed
        self.missing = missing
        self.observed_means = observed_means

    # ------------------------------------------------------------ E-step
    def allocate(self, n_chunks, n_components, n_features):
        buffers = {
            "nk": np.empty((n_chunks, n_components)),
            "sx": np.empty((n_chunks, n_components, n_features)),
            "sxx": np.empty((n_chunks,) + sxx_shape(self.covariance_type, n_components, n_features)),
            "obj": np.empty((n_chunks, 3)),
        }
        if self.missing:
            buffers["nko"] = np.empty((n_chunks, n_components, n_features))
        return buffers

    def log_norm(self, params):
        k, d = params.means.shape
        log_det = _linalg.log_det_prec_chol(params.prec_chol, self.covariance_type, k, d)
        with np.errstate(divide="ignore"):
            log_weights = np.log(params.weights)
        return log_weights + log_det - 0.5 * d * np.log(2 * np.pi)

    def e_step(self, kernels, X, sample_weight, params, *, center, hard, chunk_size,
               labels, buffers, log_prob=None, imputed=None, total_weight=None,
               second_moments=True, bounds=None):
        """Run the E-step kernel; return its :class:`GaussianStats`, or None when
        ``buffers`` is None: labels and log_prob only (the kernels' statistics
        off; with NaN, whose kernels always take statistics, into temporaries).

        ``second_moments=False`` (spherical, complete data; ignored otherwise):
        the kernel leaves out sxx and the objective (the kernel table's second
        moments off), and the returned sxx, lower bound and distance are 0.

        ``bounds`` (a :class:`~fastem._em.RowBounds`; K-means' hard spherical
        family on complete data, with statistics): the E-step runs through
        ``estep_kmeans``, which skips the rows whose label the bounds prove.
        """
        k, d = params.means.shape
        wanted = buffers is not None
        buffers = e_step_buffers(self, buffers, X.shape[0], chunk_size, k, d)
        # the fit's driver passes sum(sample_weight), an O(n) sum, once a fit
        if total_weight is None and wanted:
            total_weight = float(sample_weight.sum())
        if log_prob is None:
            log_prob = np.empty((0, k))
        # small parameter arrays go in C order so that one compiled kernel serves all fits
        args = (X, sample_weight, np.ascontiguousarray(params.means, dtype=np.float64),
                np.ascontiguousarray(params.prec_chol, dtype=np.float64),
                self.log_norm(params), np.ascontiguousarray(center, dtype=np.float64),
                hard, chunk_size, labels, log_prob)
        nko = None
        sxx = buffers["sxx"]
        if self.missing:
            if imputed is None:
                imputed = np.empty((0, d))
            getattr(kernels, f"estep_{self.covariance_type}_missing")(
                *args, imputed, buffers["nk"], buffers["nko"], buffers["sx"],
                buffers["sxx"], buffers["obj"])
            nko = buffers["nko"].sum(axis=0)
        else:
            second_moments = (second_moments or not wanted
                              or self.covariance_type != "spherical")
            if bounds is not None:
                if not (hard and wanted and self.covariance_type == "spherical"):
                    raise ValueError("bounds serve a hard spherical E-step with statistics")
                kernels.estep_kmeans(
                    *args[:6], chunk_size, labels, bounds.array, bounds.shift(args[2]),
                    bounds.sums, buffers["nk"], buffers["sx"],
                    sxx if second_moments else sxx[:0], buffers["obj"])
            else:
                getattr(kernels, f"estep_{self.covariance_type}")(
                    *args, buffers["nk"], buffers["sx"], sxx if second_moments else sxx[:0],
                    buffers["obj"])
            if not second_moments:
                sxx = np.zeros_like(sxx[:1])
        if not wanted:
            return None
        # chunk slots are summed in chunk order: the same bits for any thread count
        return GaussianStats(buffers["nk"].sum(axis=0), buffers["sx"].sum(axis=0),
                             sxx.sum(axis=0), buffers["obj"].sum(axis=0),
                             total_weight, nko)

    # ------------------------------------------------------------ M-step
    def m_step(self, stats, params, shift, center, fixed=None):
        """New parameters from statistics taken about ``shift`` (k, d) and ``center``.

        Parameters named in ``fixed`` (default: the family's) are copied from
        ``params`` unchanged.
        """
        fixed = self.fixed if fixed is None else fixed
        nk_raw = stats.nk
        nk = nk_raw + _EPS10
        weights = params.weights if "weights" in fixed else nk / nk.sum()
        if "means" in fixed:
            means = params.means
        elif self.observed_means and stats.nko is not None:
            # mean of the observed values; a coordinate never observed keeps its value
            observed = stats.nko > 0
            step = np.divide(stats.sx, stats.nko, out=np.zeros_like(stats.sx),
                             where=observed)
            means = shift + step
        else:
            means = shift + stats.sx / nk[:, None]
        if "covariances" in fixed:
            return GaussianParams(weights, means, params.covariances, params.prec_chol)
        covariances = self._covariances(stats, nk_raw, nk, means, shift, center)
        prec_chol = _linalg.prec_chol_from_covariances(
            covariances, self.covariance_type, self.reg_covar
        )
        return GaussianParams(weights, means, covariances, prec_chol)

    def _covariances(self, stats, nk_raw, nk, means, shift, center):
        """sum_i w r_ik (x - mu_k)(x - mu_k)^T / nk from moments about ``shift``.

        With delta = mu - shift: S2 - sx delta^T - delta sx^T + nk delta delta^T.
        """
        cov_type = self.covariance_type
        reg = self.reg_covar
        sx = stats.sx
        if cov_type == "full":
            delta = means - shift
            s2 = _linalg.symmetric_from_lower(stats.sxx)
            cross = sx[:, :, None] * delta[:, None, :]
            cov = (s2 - cross - np.swapaxes(cross, 1, 2)
                   + nk_raw[:, None, None] * delta[:, :, None] * delta[:, None, :])
            cov /= nk[:, None, None]
            cov[:, np.arange(cov.shape[1]), np.arange(cov.shape[1])] += reg
            return cov
        if cov_type == "tied":
            # moments about the common center: s_k = sum_i w r_ik (x_i - center)
            s = sx + nk_raw[:, None] * (shift - center)
            e = means - center
            cross = s.T @ e
            cov = (_linalg.symmetric_from_lower(stats.sxx) - cross - cross.T
                   + (nk_raw[:, None] * e).T @ e)
            cov /= nk.sum()
            cov[np.diag_indices_from(cov)] += reg
            return cov
        delta = means - shift
        if cov_type == "diag":
            var = (stats.sxx - 2.0 * sx * delta + nk_raw[:, None] * delta ** 2) / nk[:, None]
            return var + reg
        # spherical: sxx holds the sum over the features
        total = (stats.sxx - 2.0 * np.einsum("ka,ka->k", sx, delta)
                 + nk_raw * np.einsum("ka,ka->k", delta, delta))
        return total / (nk * sx.shape[1]) + reg

    # ------------------------------------------------------------ initialisation
    def from_resp(self, X, sample_weight, resp_chunks, center, n_components):
        """Parameters from given responsibilities (the initial M-step).

        ``resp_chunks(start, stop)`` returns the (stop - start, k) responsibilities
        of those rows.  Two passes: the means first, then the moments about them.
        With missing values, means are taken over observed entries (``center``
        where a component observes nothing) and missing entries add nothing to
        the scatter: a rough but positive definite start for EM.
        """
        n, d = X.shape
        rows = 8192
        nk = np.zeros(n_components)
        nko = np.zeros((n_components, d))
        sums = np.zeros((n_components, d))
        for start in range(0, n, rows):
            wr = resp_chunks(start, min(n, start + rows)) * sample_weight[start:start + rows, None]
            x = X[start:start + rows].astype(np.float64)
            nk += wr.sum(axis=0)
            if self.missing:
                observed = ~np.isnan(x)
                nko += wr.T @ observed
                x = np.where(observed, x, 0.0)
            sums += wr.T @ x
        if self.missing:
            shift = np.where(nko > 0, sums / np.where(nko > 0, nko, 1.0), center)
        else:
            shift = sums / (nk + _EPS10)[:, None]
        sx = np.zeros((n_components, d))
        sxx = np.zeros(sxx_shape(self.covariance_type, n_components, d))

        def deviation(x, origin):
            diff = x - origin
            return np.where(np.isnan(diff), 0.0, diff) if self.missing else diff

        for start in range(0, n, rows):
            stop = min(n, start + rows)
            x = X[start:stop].astype(np.float64)
            w = sample_weight[start:stop]
            wr = resp_chunks(start, stop) * w[:, None]
            if self.covariance_type == "tied" and not self.missing:
                diff = x - center
                sxx += (w[:, None] * diff).T @ diff
            for j in range(n_components):
                diff = deviation(x, shift[j])
                sx[j] += wr[:, j] @ diff
                if self.covariance_type == "tied" and self.missing:
                    # missing entries filled with component j's mean, as in sx
                    centred = diff + (shift[j] - center)
                    sxx += (wr[:, j, None] * centred).T @ centred
                if self.covariance_type == "full":
                    sxx[j] += (wr[:, j, None] * diff).T @ diff
                elif self.covariance_type == "diag":
                    sxx[j] += wr[:, j] @ diff ** 2
                elif self.covariance_type == "spherical":
                    sxx[j] += wr[:, j] @ np.einsum("ia,ia->i", diff, diff)
        stats = GaussianStats(nk, sx, sxx, np.zeros(3), float(sample_weight.sum()))
        return self.m_step(stats, None, shift, center, fixed=frozenset())
