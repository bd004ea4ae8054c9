"""The one EM driver behind every fastem model.

It owns initialisation, the E/M iteration, convergence, the best of
``n_init`` runs and the final E-step.  A model family supplies only
``allocate`` (statistic buffers), ``e_step`` (a backend kernel that adds into
those buffers) and ``m_step`` (parameters from statistics).  K-means is this
same loop with a hard E-step on a restricted Gaussian family; it brings its own
convergence monitor and an empty-cluster hook.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from . import _config


# the kernels' empty ``labels`` (see backends._table): labels not wanted
_NO_LABELS = np.empty(0, dtype=np.int64)


class ConvergenceMonitor:
    """Converged when the lower bound moves by less than ``tol`` (``tol=0``: never)."""

    def __init__(self, tol, initial_lower_bound=-np.inf):
        self.tol = tol
        self.previous = initial_lower_bound

    def update(self, stats, old_params, new_params):
        change = stats.lower_bound - self.previous
        self.previous = stats.lower_bound
        return bool(abs(change) < self.tol)  # a Python bool, as scikit-learn's converged_

    def describe(self, stats):
        return f"lower bound {stats.lower_bound:.10g}"


class RowBounds:
    """Per-row distance bounds of a K-means run (``estep_kmeans``): the
    (n, 2) float32 array the kernel reads and writes, the means at which it
    last wrote them, and the chunks' kept sums (C, k, d + 1) beside them."""

    def __init__(self, n_samples, n_chunks, n_components, n_features):
        self.array = np.empty((n_samples, 2), dtype=np.float32)
        self.sums = np.empty((n_chunks, n_components, n_features + 1))
        self.means = None

    def reset(self):
        """Nothing known: every row is scored at the next E-step, and the
        sums are taken afresh."""
        self.array[:, 0] = np.inf
        self.array[:, 1] = 0.0
        self.sums[...] = np.nan
        self.means = None

    def shift(self, means):
        """An upper bound on how far each mean moved since the last E-step
        (zeros for the first: its bounds say nothing), and ``means`` noted as
        that of the next."""
        if self.means is None:
            moved = np.zeros(means.shape[0])
        else:
            d = means.shape[1]
            # the float64 norm of a difference: relative error below (d + 3) 2^-53
            moved = np.sqrt(np.sum((means - self.means) ** 2, axis=1))
            moved *= 1.0 + (d + 8) * 2.0 ** -50
        self.means = np.array(means, dtype=np.float64)
        return moved


@dataclass
class EMRun:
    params: object
    n_iter: int
    lower_bound: float
    lower_bounds: list
    converged: bool
    labels: np.ndarray
    final_stats: object = field(repr=False)


def lower_bound_is_better(run, best):
    """scikit-learn's rule: a higher final lower bound wins (ties keep the first)."""
    return run.lower_bound > best.lower_bound or best.lower_bound == -np.inf


def fit_em(family, kernels, X, sample_weight, *, n_components, initialize, n_init,
           max_iter, hard, make_monitor, is_better=lower_bound_is_better,
           center=None, warm=None, stats_hook=None, final_statistics=True,
           final_labels=True, iteration_second_moments=True, bounded=False, verbose=0):
    """Run EM ``n_init`` times and return the best :class:`EMRun`.

    Parameters
    ----------
    family : GaussianFamily or BernoulliFamily
    kernels : backends.Kernels
    X : ndarray of shape (n_samples, n_features), float32 or float64
    sample_weight : ndarray of shape (n_samples,), float64
    initialize : callable () -> params, called once per run (not when ``warm``)
    make_monitor : callable (initial_lower_bound) -> monitor with ``update``
    is_better : callable (run, best) -> bool
    center : ndarray of shape (n_features,), shift of the tied scatter
    warm : (params, lower_bound) to continue from, or None
    stats_hook : callable (stats, params, labels) -> stats, applied before
        each M-step (K-means relocates empty clusters there); ``labels`` are
        the E-step's only when ``hard``: soft iterations skip them
    final_statistics : bool
        whether the caller reads the final E-step's statistics
        (``EMRun.final_stats``, else None): without them that E-step writes
        the labels only (a soft one then skips its exps and moments)
    final_labels : bool
        whether the caller reads the labels at the returned parameters
        (``EMRun.labels``, else None).  Without them and without
        ``final_statistics`` there is no final E-step at all, and a soft fit
        holds no labels array (``fit``, which discards them, against
        ``fit_predict``, which returns them)
    iteration_second_moments : bool
        whether the iterations' M-steps and monitor read the second moments and
        the objective (K-means' read neither: see ``GaussianFamily.e_step``)
    bounded : bool
        K-means on complete data: every E-step of a run (the final one
        included) goes through ``estep_kmeans``, with per-row bounds (8 bytes
        a sample) that spare rows whose label cannot change, and kept sums
        about ``center`` (``RowBounds``); the same labels, and statistics equal
        to rounding
    """
    n_samples, n_features = X.shape
    chunk_size, n_chunks = _config.chunk_layout(n_samples)
    # The statistic buffers and the labels are made after the first
    # initialisation, which may need memory of its own (GaussianMixture's runs
    # a K-means): its peak and theirs do not add up.  One labels vector per
    # live run: the best run keeps its own, and the next run writes into
    # another one (the previous best's, once it is beaten), so a fit never
    # holds more than two (n_samples,) label arrays, and n_init=1 holds one.
    buffers = None
    labels = None
    if center is None:
        center = np.zeros(n_features)
    total_weight = float(sample_weight.sum())

    bounds = None

    def e_step(params, labels, statistics=True, second_moments=True):
        with_bounds = {}
        if bounds is not None:  # K-means' family alone takes them
            with_bounds["bounds"] = bounds if statistics else None
        stats = family.e_step(kernels, X, sample_weight, params, center=center, hard=hard,
                              chunk_size=chunk_size, labels=labels,
                              buffers=buffers if statistics else None,
                              total_weight=total_weight, second_moments=second_moments,
                              **with_bounds)
        if bounds is not None and not statistics:
            bounds.reset()  # labels written without them: they no longer match
        return stats

    best = None
    for init in range(n_init):
        started = time.perf_counter()
        if warm is not None:
            params, initial_lower_bound = warm
        else:
            params, initial_lower_bound = initialize(), -np.inf
        if verbose:
            print(f"Initialization {init}")
        monitor = make_monitor(initial_lower_bound)
        if buffers is None:
            buffers = family.allocate(n_chunks, n_components, n_features)
            if bounded:
                bounds = RowBounds(n_samples, n_chunks, n_components, n_features)
        if labels is None and (hard or final_labels):
            labels = np.empty(n_samples, dtype=np.int64)
        if labels is not None:
            labels.fill(-1)
        if bounds is not None:
            bounds.reset()
        lower_bounds = []
        converged = False
        n_iter = 0
        for n_iter in range(1, max_iter + 1):
            # a soft iteration reads no labels: its E-step skips them
            stats = e_step(params, labels if hard else _NO_LABELS,
                           second_moments=iteration_second_moments)
            if stats_hook is not None:
                stats = stats_hook(stats, params, labels)
            new_params = family.m_step(stats, params, params.means, center)
            lower_bounds.append(stats.lower_bound)
            converged = monitor.update(stats, params, new_params)
            params = new_params
            if verbose >= 2 or (verbose and n_iter % 10 == 0):
                print(f"  Iteration {n_iter}\t {time.perf_counter() - started:.3f} s\t"
                      f"{monitor.describe(stats)}")
            if converged:
                break
        # final E-step: labels (and K-means' inertia) at the returned parameters
        # (a hard E-step writes labels whether or not they are read)
        final_stats = None
        if final_labels or final_statistics:
            final_stats = e_step(params, labels if final_labels or hard else _NO_LABELS,
                                 final_statistics)
        lower_bound = lower_bounds[-1] if lower_bounds else initial_lower_bound
        run = EMRun(params, n_iter, lower_bound, lower_bounds, converged,
                    labels if final_labels else None, final_stats)
        if verbose:
            described = (monitor.describe(final_stats) if final_stats is not None
                         else f"lower bound {lower_bound:.10g}")
            print(f"Initialization {'converged' if converged else 'did not converge'}: "
                  f"{described}, {n_iter} iterations, "
                  f"{time.perf_counter() - started:.3f} s")
        if best is None or is_better(run, best):
            beaten, best = best, run
            if final_labels:
                # the run's labels now belong to ``best``; the next run needs others
                labels = beaten.labels if beaten is not None else None
    return best
