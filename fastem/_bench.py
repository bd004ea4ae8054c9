"""``fastem bench``: fastem's time per EM iteration beside scikit-learn's, in one process.

Every comparison runs both libraries on the same generated data from the
same initial parameters, with ``tol=0`` and a fixed ``max_iter``; the time
per iteration is the fit time divided by ``n_iter_``, best of ``repeats``
fits, the fits of the two sides of a comparison alternating (a slow spell
of a shared machine then slows both).  With ``--marginal`` it is instead
the difference between the best fit times at ``max_iter`` and at
``marginal_iterations(max_iter)`` iterations over the difference of their
``n_iter_``: the cost of one more iteration, without the fixed costs of a fit
(validation, set-up, scikit-learn's initial M-step, a final E-step).
fastem is first fitted on a small slice of the data (same dtype, same
model), twice: once with every kernel call sent to the thread pool, which the
whole data's calls take, and once as usual (``warm_up``); so numba
compilation or cache loading is not timed.  scikit-learn is warmed up the
same way, to keep its one-off import costs out too.

What is compared
----------------
* ``KMeans`` against ``sklearn.cluster.KMeans(algorithm="lloyd")``, both
  started from the same ``init`` array; in float32 also against
  ``faiss.Kmeans`` (same initial centroids, ``niter`` iterations, no
  subsampling) when faiss is installed.
* ``GaussianMixture`` (every covariance type) against
  ``sklearn.mixture.GaussianMixture`` with the same ``weights_init``,
  ``means_init`` and ``precisions_init``.  scikit-learn still computes an
  initial M-step from responsibilities; ``init_params="random_from_data"``
  makes it the cheapest, but it is part of scikit-learn's fit time.  So is
  scikit-learn's final E-step, whose labels its ``fit`` discards and which
  fastem's ``fit`` leaves out.
* ``BernoulliMixture``, which scikit-learn lacks, against one dense matrix
  product ``X @ logit.T`` (numpy, X the 0/1 data in its dtype, ``logit`` of
  shape (k, d) in the same dtype, output preallocated): the floor of an
  E-step that reads X once.  Target: iteration / multiply <= 2.
* Missing values: ``GaussianMixture`` with 10 % of the entries NaN
  (completely at random) against the same fit on the complete data.
  Target: NaN / complete <= 3.
* Threads (group ``threads``, not run by default): fastem's own fits with
  one thread against the same fits with all of its threads, on the KMeans,
  GaussianMixture and BernoulliMixture shapes, the two alternating fit by
  fit.  Target: one thread / two threads >= 1.8.  Beside each row, the same
  ratio for a float64 matrix multiply (BLAS, ``CONTROL_SIZE`` square),
  timed between those fits: the machine's own speed-up at that moment.  On
  a shared virtual machine two vCPUs can for a while share one physical
  core; the multiply then gains little from its second thread, and neither
  can fastem.
* Sizes (group ``sizes``, not run by default): ``KMeans`` and
  ``GaussianMixture`` diag and full at (d, k) = ``SIZE_DK`` and n in
  ``SIZE_NS`` (1e5, 1e6, 1e7), float32, each n the first n rows of one
  generated data set, started from its own ``GaussianStart``.  Beside each
  row its time per iteration and row over the same at the smallest n:
  1 when the time per iteration is linear in n.

Threads: fastem uses ``fastem.get_num_threads()`` (``--threads``), and
scikit-learn's BLAS and OpenMP pools, numpy's BLAS (the dense multiply) and
faiss are limited to the same count, through threadpoolctl when it is
installed (it is a scikit-learn dependency).

Flop model (``model_flops``)
----------------------------
Nominal flops of one iteration, counting a multiply-add as 2 and not
counting exp/log, only the work proportional to n (the M-step on the k x d
statistics is left out).  A missing-value fit is counted as the complete
one.

==========================  ===============================================
KMeans                      2 n k d      the cross terms x . c_k of the
                                         squared distances, as in a matrix
                                         product (the usual K-means count)
GaussianMixture full        2 n k (d^2 + 3 d)   log-densities through the
                                         triangular precision factor, then
                                         the first and second moments
GaussianMixture tied        2 n d^2 + 6 n k d   whitening once per row,
                                         distances, first moments, scatter
GaussianMixture diag        8 n k d      distances and the first and
                                         second moments per coordinate
GaussianMixture spherical   4 n k d      x . mu_k and the first moments
                                         (||x||^2 once per row serves the
                                         log-densities and the variances)
BernoulliMixture            4 n k d      x . logit_k and the first moments
==========================  ===============================================

Against the machine's peak: every run times numpy's dense multiply of two
square matrices in float64 and float32 (``multiply_peak``, the BLAS at the
run's thread count) before its first case and after its last; the table's
"% peak" is fastem's GFLOP/s over the peak of its dtype at the start.  On a
shared machine the peak itself moves from run to run, which is why each run
measures its own.  "% peak for target" turns a target ratio over scikit-learn
(``TARGET_RATIOS``: KMeans 1.5, GaussianMixture 10) into the rate it asks of
fastem: target x nominal flops / scikit-learn's time per iteration, over the
same peak.  It shows in one run how far a target lies from the machine: where
it nears 100, the whole iteration (exps, reading the data, the M-step
included) would have to run at the dense multiply's rate.
"""

import contextlib
import json
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

import fastem
from fastem import _config

# ---------------------------------------------------------------- reference cases
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
MISSING_COVARIANCE_TYPES = ("full", "diag")
MISSING_FRACTION = 0.1

# (n, d, k)
KMEANS_SHAPES = ((1_000_000, 16, 16), (1_000_000, 32, 128), (200_000, 2, 8))
GMM_SHAPES = ((100_000, 16, 16), (200_000, 2, 8), (50_000, 64, 8))
BERNOULLI_SHAPES = ((1_000_000, 64, 32),)
MISSING_SHAPES = ((100_000, 16, 8),)
# the sizes group: each model's time per iteration at these n, (d, k) fixed
SIZE_NS = (100_000, 1_000_000, 10_000_000)
SIZE_DK = (16, 16)
SIZE_CASES = (("KMeans", None), ("GaussianMixture", "diag"), ("GaussianMixture", "full"))

GROUPS = ("kmeans", "gmm", "bernoulli", "missing", "threads", "sizes")
DEFAULT_GROUPS = ("kmeans", "gmm", "bernoulli", "missing")
GROUP_ALIASES = {
    "kmeans": "kmeans", "k-means": "kmeans",
    "gmm": "gmm", "gaussianmixture": "gmm", "gaussian": "gmm",
    "bernoulli": "bernoulli", "bernoullimixture": "bernoulli",
    "missing": "missing", "nan": "missing",
    "threads": "threads", "scaling": "threads",
    "sizes": "sizes", "size": "sizes", "n": "sizes",
}
# dtypes of each group under --dtype reference (the default)
REFERENCE_DTYPES = {
    "kmeans": ("float32", "float64"),
    "gmm": ("float64",),
    "bernoulli": ("float64",),
    "missing": ("float64",),
    "threads": ("float64",),
    "sizes": ("float32",),
}
DTYPE_CHOICES = ("reference", "float64", "float32", "both")
# The ratio over scikit-learn that fastem aims for, by model: the "% peak for
# target" column is the share of the multiply peak that ratio asks for.
TARGET_RATIOS = {"KMeans": 1.5, "GaussianMixture": 10.0}

MAX_ITER, REPEATS = 10, 3
QUICK_SCALE, QUICK_MAX_ITER, QUICK_REPEATS = 0.1, 5, 1
MULTIPLY_REPEATS = 5     # the dense multiply is short: always best of at least this many
WARM_UP_ROWS = 2048
CONTROL_SIZE = 768       # the threads control multiply: 0.9 GFLOP, 10-20 ms on one core
# The dense-multiply peak, measured at the start and at the end of every run:
# the best of PEAK_REPEATS products of two PEAK_SIZE x PEAK_SIZE matrices
# (17 GFLOP, 0.2-0.4 s in float64 on two cores here), smaller under --scale
# (``peak_size``) so that --quick and the tests stay quick.
PEAK_SIZE, PEAK_MIN_SIZE, PEAK_REPEATS = 2048, 256, 3
PEAK_DTYPES = ("float64", "float32")
_ROWS = 65_536           # rows generated at a time


def model_flops(model, covariance_type, n, d, k):
    """Nominal flops of one EM iteration; see the module docstring."""
    if model == "KMeans":
        return 2 * n * k * d
    if model == "BernoulliMixture":
        return 4 * n * k * d
    if model == "GaussianMixture":
        if covariance_type == "full":
            return 2 * n * k * (d * d + 3 * d)
        if covariance_type == "tied":
            return 2 * n * d * d + 6 * n * k * d
        if covariance_type == "diag":
            return 8 * n * k * d
        if covariance_type == "spherical":
            return 4 * n * k * d
    raise ValueError(f"no flop model for {model} {covariance_type!r}")


def scaled_n(n, d, k, scale):
    """``n * scale`` rows, but never fewer than a fit of (d, k) sensibly needs."""
    return max(int(round(n * scale)), 512, k * (d + 2))


def short_number(n):
    """1000000 -> '1e6', 200000 -> '2e5', 1500 -> '1500'."""
    digits = str(int(n))
    mantissa, zeros = digits.rstrip("0"), len(digits) - len(digits.rstrip("0"))
    if zeros >= 3 and len(mantissa) == 1:
        return f"{mantissa}e{zeros}"
    return digits


def shape_label(n, d, k):
    return f"({short_number(n)},{d},{k})"


# ---------------------------------------------------------------- data
def gaussian_blobs(n, d, k, seed=0, dtype=np.float64):
    """n rows around k centres drawn from N(0, 4 I), unit Gaussian noise.

    The clusters overlap, so Lloyd and EM keep moving for the first ten or
    so iterations from a random-rows start.  Deterministic in its arguments;
    ``dtype`` float32 gives the float64 data rounded, a block of rows at a
    time (no float64 copy of the whole).
    """
    rng = np.random.default_rng((seed, 11, n, d, k))
    centres = 2.0 * rng.standard_normal((k, d))
    X = np.empty((n, d), dtype=dtype)
    for start in range(0, n, _ROWS):
        stop = min(n, start + _ROWS)
        which = rng.integers(0, k, size=stop - start)
        X[start:stop] = rng.standard_normal((stop - start, d)) + centres[which]
    return X


def binary_data(n, d, k, dtype, seed=0):
    """n rows of 0/1 from k product-Bernoulli prototypes with p ~ U(0.05, 0.95)."""
    rng = np.random.default_rng((seed, 13, n, d, k))
    prototypes = rng.uniform(0.05, 0.95, size=(k, d))
    X = np.empty((n, d), dtype=dtype)
    for start in range(0, n, _ROWS):
        stop = min(n, start + _ROWS)
        which = rng.integers(0, k, size=stop - start)
        X[start:stop] = rng.random((stop - start, d)) < prototypes[which]
    return X


def with_missing(X, fraction=MISSING_FRACTION, seed=0):
    """A copy of X with ``fraction`` of the entries NaN, completely at random."""
    rng = np.random.default_rng((seed, 17, *X.shape))
    X = X.copy()
    for start in range(0, X.shape[0], _ROWS):
        block = X[start:start + _ROWS]
        block[rng.random(block.shape) < fraction] = np.nan
    return X


@dataclass
class GaussianStart:
    """Initial parameters shared by every library: k distinct data rows as means,
    uniform weights, and the data's covariance for every component."""

    weights: np.ndarray
    means: np.ndarray
    covariance: np.ndarray

    @classmethod
    def from_data(cls, X, k, seed=0):
        n = X.shape[0]
        rng = np.random.default_rng((seed, 19, *X.shape, k))
        rows = np.sort(rng.choice(n, size=k, replace=False))
        means = np.asarray(X[rows], dtype=np.float64)
        centre = X.mean(axis=0, dtype=np.float64)
        covariance = np.zeros((X.shape[1], X.shape[1]))
        for start in range(0, n, _ROWS):
            diff = np.asarray(X[start:start + _ROWS], dtype=np.float64) - centre
            covariance += diff.T @ diff
        return cls(np.full(k, 1.0 / k), means, covariance / n)

    def precisions(self, covariance_type):
        """``precisions_init`` of this start for ``covariance_type``."""
        k = self.means.shape[0]
        if covariance_type in ("full", "tied"):
            precision = np.linalg.inv(self.covariance)
            precision = 0.5 * (precision + precision.T)
            return precision if covariance_type == "tied" else np.tile(precision, (k, 1, 1))
        variances = np.diag(self.covariance)
        if covariance_type == "diag":
            return np.tile(1.0 / variances, (k, 1))
        return np.full(k, 1.0 / variances.mean())


# ---------------------------------------------------------------- results
@dataclass
class Row:
    """One line of the report.

    section : "sklearn" (fastem vs scikit-learn), "multiply" (BernoulliMixture
        vs X @ logit.T), "missing" (NaN vs complete data, both fastem) or
        "threads" (fastem with all its threads vs fastem with one) or
        "sizes" (the same fit at several n)
    fastem_s : fastem's seconds per iteration
    peer_s : the peer's seconds per iteration (per multiply for "multiply",
        with one thread for "threads"), None when the peer is not installed
    ratio : sklearn/fastem, iteration/multiply, NaN/complete or
        one thread/all threads
    control_ratio : threads only: one thread/all threads of a float64
        matrix multiply timed between the fits (``blas_seconds``), None
        without threadpoolctl
    gflops : fastem's nominal GFLOP/s (``model_flops``)
    peak_percent : ``gflops`` as a percentage of the dense-multiply peak of
        ``dtype`` measured at the start of the run (``multiply_peak``)
    target_peak_percent : "sklearn" only: the percentage of that peak that
        fastem's nominal rate would need for the ratio ``TARGET_RATIOS``
        names for the model, the peer's time as measured (100: the target
        asks for the whole iteration at the multiply's rate)

    For "sizes" (the same model at several n), peer_s and peer_iters are the
    smallest n's, and ratio is the time per iteration and row over the same
    at the smallest n.
    """

    section: str
    model: str
    covariance_type: Optional[str]
    n: int
    d: int
    k: int
    dtype: str
    fastem_s: float
    fastem_iters: int
    peer: Optional[str] = None
    peer_s: Optional[float] = None
    peer_iters: Optional[int] = None
    ratio: Optional[float] = None
    gflops: Optional[float] = None
    faiss_s: Optional[float] = None
    faiss_ratio: Optional[float] = None
    control_ratio: Optional[float] = None
    peak_percent: Optional[float] = None
    target_peak_percent: Optional[float] = None


def _ms(seconds):
    return "-" if seconds is None else f"{1e3 * seconds:.3f}"


def _percent(value):
    return "-" if value is None else f"{value:.0f}"


def _num(value):
    """A ratio: two decimals, or two significant digits below 0.1 (never 0.00)."""
    if value is None:
        return "-"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def _sig(value):
    return "-" if value is None else f"{value:.3g}"


# ---------------------------------------------------------------- optional peers
def _import_sklearn():
    try:
        import sklearn
        import sklearn.cluster
        import sklearn.mixture
    except ImportError:
        return None
    return sklearn


def _import_faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


@contextlib.contextmanager
def _thread_limits(threads):
    """Limit the BLAS and OpenMP pools to ``threads``; yields whether it could."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield False
        return
    with threadpool_limits(limits=threads):
        yield True


# ---------------------------------------------------------------- machine
def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def effective_threads():
    """Threads fastem's kernels actually get (numba caps at NUMBA_NUM_THREADS)."""
    threads = fastem.get_num_threads()
    if fastem.get_backend() == "numba":
        import numba
        threads = min(threads, numba.config.NUMBA_NUM_THREADS)
    return threads


def _load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):  # not available on this platform
        return None


def machine_info(sklearn, faiss, limited):
    info = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "fastem": fastem.__version__,
        "backend": fastem.get_backend(),
        "threads": effective_threads(),
        "threads_requested": fastem.get_num_threads(),
        "numpy": np.__version__,
        "sklearn": None if sklearn is None else sklearn.__version__,
        "faiss": None if faiss is None else getattr(faiss, "__version__", "?"),
        "threadpoolctl_limits": limited,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "load_average": _load_average(),
    }
    if fastem.get_backend() == "numba":
        import numba
        info["numba"] = numba.__version__
    if fastem.get_backend() == "cython":
        from .backends import cython_backend
        info["cython_build"] = cython_backend.SIMD
    try:
        from threadpoolctl import threadpool_info
        blas = [f"{lib['internal_api']} {lib.get('version') or ''}".strip()
                for lib in threadpool_info() if lib.get("user_api") == "blas"]
        info["blas"] = sorted(set(blas))
    except ImportError:
        info["blas"] = None
    return info


def describe_machine(info):
    lines = [
        f"machine: {info['cpu']}, {info['usable_cores']} usable of {info['cpu_count']} "
        f"logical CPUs; Python {info['python']}, {info['platform']}",
        f"fastem {info['fastem']}: backend {info['backend']!r}"
        + (f" (numba {info['numba']})" if info.get("numba") else "")
        + (f" ({info['cython_build']} build)" if info.get("cython_build") else "")
        + f", {info['threads']} thread(s)"
        + (f" (requested {info['threads_requested']})"
           if info["threads"] != info["threads_requested"] else ""),
        f"numpy {info['numpy']}"
        + (f" (BLAS: {', '.join(info['blas'])})" if info.get("blas") else "")
        + f", scikit-learn {info['sklearn'] or 'not installed'}"
        + f", faiss {info['faiss'] or 'not installed'}",
    ]
    if info["threadpoolctl_limits"]:
        lines.append(f"BLAS/OpenMP thread pools limited to {info['threads']} via threadpoolctl")
    else:
        lines.append("threadpoolctl not installed: BLAS/OpenMP pools keep their own "
                     "thread counts")
    if info["load_average"] is not None:
        lines.append(f"load average at start (1, 5, 15 min): "
                     + ", ".join(f"{x:.2f}" for x in info["load_average"]))
    return lines


# ---------------------------------------------------------------- timing
# Before every timed run on more than SETTLE_MIN_BYTES of data, a pause of
# SETTLE_S: the worker threads of the previous library (OpenBLAS spins for up
# to about 0.1 s after a call) go idle, so that no run pays for the one before
# it, whichever library that was.  Runs on less data are too short to time
# meaningfully, and pausing them would only slow the tests.
SETTLE_S = 0.3
SETTLE_MIN_BYTES = 1 << 20


def settle(X):
    if X.nbytes >= SETTLE_MIN_BYTES:
        time.sleep(SETTLE_S)


def per_iteration(make, X, repeats, marginal=False):
    """Best seconds per iteration over ``repeats`` fits of ``make()``, and n_iter_."""
    return alternating([(make, X)], repeats, marginal)[0]


def marginal_iterations(max_iter):
    """The iterations of the shorter fits of ``--marginal``."""
    return max(1, max_iter // 3)


_clock = time.perf_counter  # the fits' clock (tests replace it)


def _timed_fit(model, X):
    """(seconds, n_iter_) of ``model.fit(X)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0 never converges: by design
        settle(X)
        start = _clock()
        model.fit(X)
        elapsed = _clock() - start
    return elapsed, max(1, int(model.n_iter_))


def alternating(cases, repeats, marginal=False):
    """Best (seconds per iteration, n_iter_) of each ``(make, X)`` in ``cases``
    over ``repeats`` rounds, a round fitting each case once in turn.

    Fits of the cases compared alternate, so a slow spell of a shared machine
    reaches all of them alike instead of one case's run of fits.

    With ``marginal``, a round fits each case twice, at ``make()``'s
    ``max_iter`` and at ``marginal_iterations`` of it, and the time per
    iteration is (best long fit - best short fit) / (their n_iter_
    difference); the fit time over n_iter_ where that is not positive (fits
    too short, or the difference lost in the timer's noise).
    """
    long_fits = [(math.inf, 1)] * len(cases)   # (seconds, n_iter_) of the fastest fit
    short_fits = [(math.inf, 1)] * len(cases)  # the same at fewer iterations (marginal)
    for _ in range(repeats):
        for c, (make, X) in enumerate(cases):
            if marginal:
                model = make()
                model.set_params(max_iter=marginal_iterations(model.max_iter))
                elapsed, n_iter = _timed_fit(model, X)
                if elapsed < short_fits[c][0]:
                    short_fits[c] = (elapsed, n_iter)
            elapsed, n_iter = _timed_fit(make(), X)
            if elapsed / n_iter < long_fits[c][0] / long_fits[c][1]:
                long_fits[c] = (elapsed, n_iter)
    if marginal:
        return [_marginal(*fit, *short) for fit, short in zip(long_fits, short_fits)]
    return [(seconds / n_iter, n_iter) for seconds, n_iter in long_fits]


def _marginal(seconds, n_iter, short_seconds, short_iter):
    """(seconds per iteration, n_iter) from the best fit of ``n_iter``
    iterations and the best of ``short_iter`` (see ``alternating``)."""
    extra = seconds - short_seconds
    if n_iter > short_iter and extra > 0:
        return extra / (n_iter - short_iter), n_iter
    return seconds / n_iter, n_iter


@contextlib.contextmanager
def every_call_pooled():
    """Send every kernel call of more than one chunk to the thread pool for the
    block (``fastem._config.SERIAL_WORK`` set to 0, then restored)."""
    previous = _config.SERIAL_WORK
    _config.SERIAL_WORK = 0
    try:
        yield
    finally:
        _config.SERIAL_WORK = previous


def warm_up(make, X):
    """Short fits outside the timing, on the first ``WARM_UP_ROWS`` rows: numba
    compiles (or loads from its cache) each kernel once for each dtype and
    argument types, and each of the two drivers that run a kernel's chunks.
    A kernel call below ``fastem._config.SERIAL_WORK`` runs on the calling
    thread, and on a slice of X most calls are below it where the same calls
    on the whole of X are not; so one fit sends every call to the thread pool
    (``every_call_pooled``) and one takes the usual path.  (With the usual fit
    alone, the first timed fit of a small shape compiled the pooled driver:
    0.7 s in a five-iteration K-means fit at (2e4, 2, 8) under ``--quick``,
    which times one fit.)"""
    rows = X[:min(len(X), WARM_UP_ROWS)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for pooled in (True, False):
            model = make()
            model.set_params(max_iter=2)
            with every_call_pooled() if pooled else contextlib.nullcontext():
                model.fit(rows)


def multiply_seconds(X, logit, repeats):
    """Best time of ``X @ logit.T`` into a preallocated output."""
    out = np.empty((X.shape[0], logit.shape[0]), dtype=np.result_type(X, logit))
    logit_t = logit.T
    np.matmul(X[:WARM_UP_ROWS], logit_t)
    best = math.inf
    for _ in range(max(repeats, MULTIPLY_REPEATS)):
        settle(X)
        start = time.perf_counter()
        np.matmul(X, logit_t, out=out)
        best = min(best, time.perf_counter() - start)
    return best


def blas_seconds(A, threads):
    """Best of two timings of ``A @ A`` with the BLAS pools limited to
    ``threads``; None when threadpoolctl is not installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    best = math.inf
    with threadpool_limits(limits=threads):
        for _ in range(2):
            start = time.perf_counter()
            A @ A
            best = min(best, time.perf_counter() - start)
    return best


def peak_size(scale):
    """The peak multiply's matrix size: PEAK_SIZE, times the cube root of
    ``scale`` below 1 (its flops scale like the cases' rows), a multiple of 64
    and at least PEAK_MIN_SIZE."""
    size = PEAK_SIZE * min(1.0, scale) ** (1.0 / 3.0)
    return max(PEAK_MIN_SIZE, int(size) // 64 * 64)


def multiply_peak(size, repeats=PEAK_REPEATS):
    """GFLOP/s of numpy's dense multiply (the BLAS, at its current thread
    limit) of two ``size`` x ``size`` matrices, best of ``repeats``, for each
    of PEAK_DTYPES."""
    rng = np.random.default_rng(31)
    peak = {}
    for dtype in PEAK_DTYPES:
        A = rng.standard_normal((size, size)).astype(dtype)
        B = rng.standard_normal((size, size)).astype(dtype)
        out = np.empty((size, size), dtype=dtype)
        np.matmul(A, B, out=out)  # the BLAS's threads started, its buffers made
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            np.matmul(A, B, out=out)
            best = min(best, time.perf_counter() - start)
        peak[dtype] = 2.0 * size ** 3 / best / 1e9
    return peak


def describe_peak(peak, size, when):
    return (f"dense multiply peak {when} (numpy's BLAS, {size} x {size}, best of "
            f"{PEAK_REPEATS}): " + ", ".join(f"{dtype} {peak[dtype]:.1f} GFLOP/s"
                                             for dtype in PEAK_DTYPES))


def faiss_per_iteration(faiss, X, init, max_iter, repeats, threads, marginal=False):
    """Best seconds per iteration of ``faiss.Kmeans`` from the centroids ``init``
    (with ``marginal``, as ``alternating`` measures it).

    Every point is used (``max_points_per_centroid`` at n: no subsampling)
    and faiss runs exactly ``niter`` iterations.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    init = np.ascontiguousarray(init, dtype=np.float32)
    n, d = X.shape
    k = init.shape[0]
    if hasattr(faiss, "omp_set_num_threads"):
        faiss.omp_set_num_threads(threads)

    def make(niter, rows):
        return faiss.Kmeans(d, k, niter=niter, nredo=1, verbose=False, spherical=False,
                            min_points_per_centroid=1, max_points_per_centroid=rows, seed=0)

    rows = min(n, max(WARM_UP_ROWS, k))  # untimed: first-call costs
    make(1, rows).train(X[:rows], init_centroids=init)

    class Fit:
        """``faiss.Kmeans`` with the ``max_iter``/``fit``/``n_iter_`` of the
        fits ``alternating`` times."""

        def __init__(self):
            self.max_iter = max_iter

        def set_params(self, max_iter):
            self.max_iter = max_iter

        def fit(self, X):
            km = make(self.max_iter, n)
            km.train(X, init_centroids=init)
            obj = getattr(km, "obj", None)
            self.n_iter_ = len(obj) if obj is not None and len(obj) else self.max_iter

    return alternating([(Fit, X)], repeats, marginal)[0][0]


# ---------------------------------------------------------------- the run
@dataclass
class Settings:
    groups: tuple = DEFAULT_GROUPS
    dtype: str = "reference"
    scale: float = 1.0
    max_iter: int = MAX_ITER
    repeats: int = REPEATS
    marginal: bool = False


class Bench:
    """Runs the cases of ``settings`` and prints each row as soon as it is measured."""

    def __init__(self, settings, sklearn, faiss, out=None):
        self.settings = settings
        self.sklearn = sklearn
        self.faiss = faiss
        self.out = sys.stdout if out is None else out
        self.rows = []
        self.warm_up_s = 0.0
        self._header_printed = set()
        self._control = None  # the threads control's matrix, made on first use
        self.peak = {}  # GFLOP/s of the dense multiply by dtype (``multiply_peak``)

    # ---------------- helpers
    def say(self, line=""):
        print(line, file=self.out, flush=True)

    def dtypes(self, group):
        choice = self.settings.dtype
        if choice == "reference":
            return REFERENCE_DTYPES[group]
        return ("float32", "float64") if choice == "both" else (choice,)

    def shape(self, n, d, k):
        return scaled_n(n, d, k, self.settings.scale), d, k

    def time_fastem(self, make, X):
        start = time.perf_counter()
        warm_up(make, X)
        self.warm_up_s += time.perf_counter() - start
        return per_iteration(make, X, self.settings.repeats, self.settings.marginal)

    def time_pair(self, make, make_peer, X, X_peer=None):
        """(fastem's, the peer's) best time per iteration and n_iter_, their
        fits alternating; ``make_peer`` may also be another fastem model."""
        start = time.perf_counter()
        warm_up(make, X)
        self.warm_up_s += time.perf_counter() - start
        X_peer = X if X_peer is None else X_peer
        warm_up(make_peer, X_peer)
        return alternating([(make, X), (make_peer, X_peer)], self.settings.repeats,
                           self.settings.marginal)

    def header(self, section):
        if section in self._header_printed:
            return
        self._header_printed.add(section)
        first = {"missing": "NaN ms/it", "threads": f"{effective_threads()}t ms/it"}.get(
            section, "fastem ms/it")
        if section == "sizes":
            self.say("\nsizes: time per iteration against n, (d, k) fixed; 'per row vs "
                     "smallest n': ms/it / n over the same at the smallest n (1: linear in n)")
            lead = f"{'model':<18}{'cov':<11}{'(n,d,k)':<18}{'dtype':<9}{first:>13}"
            self.say(lead + f"{'ns/row/it':>11}{'per row vs smallest n':>23}{'GFLOP/s':>9}"
                     f"{'iters':>7}")
            return
        lead = f"{'model':<18}{'cov':<11}{'(n,d,k)':<16}{'dtype':<9}{first:>13}"
        if section == "sklearn":
            self.say("\nfastem vs scikit-learn: time per iteration (ratio > 1: fastem faster)")
            line = (lead + f"{'sklearn ms/it':>15}{'sklearn/fastem':>16}{'GFLOP/s':>9}"
                    f"{'% peak':>8}{'% peak for target':>19}{'iters':>9}")
            if self.faiss is not None:
                line += f"{'faiss ms/it':>13}{'faiss/fastem':>14}"
        elif section == "multiply":
            self.say("\nBernoulliMixture vs one dense multiply X @ logit.T "
                     "(target: iteration/multiply <= 2)")
            line = lead + f"{'multiply ms':>13}{'iter/multiply':>15}{'GFLOP/s':>9}{'iters':>7}"
        elif section == "threads":
            self.say(f"\nthreads: fastem with {effective_threads()} threads vs fastem with one, "
                     f"fits alternating (target: 1t/2t >= 1.8); matmul speed-up: the same "
                     f"ratio for a {CONTROL_SIZE} x {CONTROL_SIZE} float64 multiply timed "
                     f"between the fits, what the machine gave a second thread meanwhile")
            line = (lead + f"{'1t ms/it':>16}{'speed-up':>14}{'GFLOP/s':>9}{'iters':>7}"
                    f"{'matmul speed-up':>17}")
        else:
            self.say(f"\nmissing values: {MISSING_FRACTION:.0%} NaN completely at random vs "
                     f"the complete data, both fastem (target: NaN/complete <= 3)")
            line = lead + f"{'complete ms/it':>16}{'NaN/complete':>14}{'GFLOP/s':>9}{'iters':>7}"
        self.say(line)

    def emit(self, row):
        self.rows.append(row)
        self.header(row.section)
        line = (f"{row.model:<18}{row.covariance_type or '-':<11}"
                f"{shape_label(row.n, row.d, row.k):<16}{row.dtype:<9}{_ms(row.fastem_s):>13}")
        if row.section == "sklearn":
            iters = f"{row.fastem_iters}/{row.peer_iters if row.peer_iters else '-'}"
            line += (f"{_ms(row.peer_s):>15}{_num(row.ratio):>16}{_sig(row.gflops):>9}"
                     f"{_percent(row.peak_percent):>8}"
                     f"{_percent(row.target_peak_percent):>19}{iters:>9}")
            if self.faiss is not None:
                line += f"{_ms(row.faiss_s):>13}{_num(row.faiss_ratio):>14}"
        elif row.section == "sizes":
            line = (f"{row.model:<18}{row.covariance_type or '-':<11}"
                    f"{shape_label(row.n, row.d, row.k):<18}{row.dtype:<9}{_ms(row.fastem_s):>13}"
                    f"{row.fastem_s / row.n * 1e9:>11.1f}{_num(row.ratio):>23}"
                    f"{_sig(row.gflops):>9}{row.fastem_iters:>7}")
        elif row.section == "multiply":
            line += (f"{_ms(row.peer_s):>13}{_num(row.ratio):>15}{_sig(row.gflops):>9}"
                     f"{row.fastem_iters:>7}")
        else:
            line += (f"{_ms(row.peer_s):>16}{_num(row.ratio):>14}{_sig(row.gflops):>9}"
                     f"{row.fastem_iters:>7}")
            if row.section == "threads":
                line += f"{_num(row.control_ratio):>17}"
        self.say(line)

    def row(self, section, model, cov, X, k, dtype, fastem_result, peer=None, peer_result=None,
            ratio=None, **extra):
        n, d = X.shape
        fastem_s, fastem_iters = fastem_result
        peer_s, peer_iters = peer_result if peer_result is not None else (None, None)
        if ratio is None and peer_s is not None:
            ratio = peer_s / fastem_s
        flops = model_flops(model, cov, n, d, k)
        gflops = flops / fastem_s / 1e9
        peak = self.peak.get(dtype)
        target = TARGET_RATIOS.get(model) if section == "sklearn" else None
        needed = None
        if peak is not None and target is not None and peer_s is not None:
            needed = 100.0 * target * flops / peer_s / 1e9 / peak
        self.emit(Row(section, model, cov, n, d, k, dtype, fastem_s, fastem_iters, peer,
                      peer_s, peer_iters, ratio, gflops, **extra,
                      peak_percent=None if peak is None else 100.0 * gflops / peak,
                      target_peak_percent=needed))

    # ---------------- the groups
    def run(self):
        for group in GROUPS:
            if group in self.settings.groups:
                getattr(self, f"run_{group}")()
        return self.rows

    def run_kmeans(self):
        s = self.settings
        for shape in KMEANS_SHAPES:
            n, d, k = self.shape(*shape)
            X64 = gaussian_blobs(n, d, k)
            start = GaussianStart.from_data(X64, k)
            for dtype in self.dtypes("kmeans"):
                X = X64 if dtype == "float64" else X64.astype(dtype)

                def make_fastem():
                    return fastem.KMeans(n_clusters=k, init=start.means, n_init=1,
                                         max_iter=s.max_iter, tol=0.0)
                peer_result = None
                if self.sklearn is not None:
                    def make_sklearn():
                        return self.sklearn.cluster.KMeans(
                            n_clusters=k, init=start.means, n_init=1, max_iter=s.max_iter,
                            tol=0.0, algorithm="lloyd", random_state=0)
                    result, peer_result = self.time_pair(make_fastem, make_sklearn, X)
                else:
                    result = self.time_fastem(make_fastem, X)
                extra = {}
                if self.faiss is not None and dtype == "float32":
                    faiss_s = faiss_per_iteration(self.faiss, X, start.means, s.max_iter,
                                                  s.repeats, effective_threads(), s.marginal)
                    extra = {"faiss_s": faiss_s, "faiss_ratio": faiss_s / result[0]}
                self.row("sklearn", "KMeans", None, X, k, dtype, result,
                         "sklearn" if peer_result else None, peer_result, **extra)
                del X

    def _gaussian_fastem(self, start, cov):
        k = start.means.shape[0]
        return fastem.GaussianMixture(
            n_components=k, covariance_type=cov, tol=0.0, max_iter=self.settings.max_iter,
            weights_init=start.weights, means_init=start.means,
            precisions_init=start.precisions(cov))

    def run_gmm(self):
        s = self.settings
        for shape in GMM_SHAPES:
            n, d, k = self.shape(*shape)
            X64 = gaussian_blobs(n, d, k)
            start = GaussianStart.from_data(X64, k)
            for dtype in self.dtypes("gmm"):
                X = X64 if dtype == "float64" else X64.astype(dtype)
                for cov in COVARIANCE_TYPES:
                    def make_fastem():
                        return self._gaussian_fastem(start, cov)
                    peer_result = None
                    if self.sklearn is not None:
                        def make_sklearn():
                            return self.sklearn.mixture.GaussianMixture(
                                n_components=k, covariance_type=cov, tol=0.0,
                                max_iter=s.max_iter, weights_init=start.weights,
                                means_init=start.means, precisions_init=start.precisions(cov),
                                init_params="random_from_data", random_state=0)
                        result, peer_result = self.time_pair(make_fastem, make_sklearn, X)
                    else:
                        result = self.time_fastem(make_fastem, X)
                    self.row("sklearn", "GaussianMixture", cov, X, k, dtype, result,
                             "sklearn" if peer_result else None, peer_result)

    def run_bernoulli(self):
        s = self.settings
        for shape in BERNOULLI_SHAPES:
            n, d, k = self.shape(*shape)
            rng = np.random.default_rng((0, 23, n, d, k))
            weights, means = np.full(k, 1.0 / k), rng.uniform(0.25, 0.75, size=(k, d))
            for dtype in self.dtypes("bernoulli"):
                X = binary_data(n, d, k, dtype)

                def make_fastem():
                    return fastem.BernoulliMixture(
                        n_components=k, tol=0.0, max_iter=s.max_iter,
                        weights_init=weights, means_init=means)
                result = self.time_fastem(make_fastem, X)
                logit = (np.log(means) - np.log1p(-means)).astype(dtype)
                multiply = multiply_seconds(X, logit, s.repeats)
                self.row("multiply", "BernoulliMixture", None, X, k, dtype, result,
                         "X @ logit.T", (multiply, 1), ratio=result[0] / multiply)
                del X

    def run_missing(self):
        for shape in MISSING_SHAPES:
            n, d, k = self.shape(*shape)
            X64 = gaussian_blobs(n, d, k)
            start = GaussianStart.from_data(X64, k)
            for dtype in self.dtypes("missing"):
                X = X64 if dtype == "float64" else X64.astype(dtype)
                X_nan = with_missing(X)
                for cov in MISSING_COVARIANCE_TYPES:
                    def make():
                        return self._gaussian_fastem(start, cov)
                    nan, complete = self.time_pair(make, make, X_nan, X)
                    self.row("missing", "GaussianMixture", cov, X_nan, k, dtype, nan,
                             "complete data", complete, ratio=nan[0] / complete[0])

    def run_threads(self):
        threads = effective_threads()
        if threads < 2:
            self.say(f"\nthreads: skipped, fastem has {threads} thread (--threads, "
                     f"FASTEM_NUM_THREADS, NUMBA_NUM_THREADS)")
            return
        s = self.settings
        cases = []
        for shape in KMEANS_SHAPES:
            cases.append(("KMeans", None, shape))
        for shape in GMM_SHAPES:
            cases.extend(("GaussianMixture", cov, shape) for cov in COVARIANCE_TYPES)
        for shape in BERNOULLI_SHAPES:
            cases.append(("BernoulliMixture", None, shape))
        for model, cov, shape in cases:
            n, d, k = self.shape(*shape)
            for dtype in self.dtypes("threads"):
                if model == "BernoulliMixture":
                    X = binary_data(n, d, k, dtype)
                    rng = np.random.default_rng((0, 23, n, d, k))
                    weights, means = np.full(k, 1.0 / k), rng.uniform(0.25, 0.75, size=(k, d))

                    def make():
                        return fastem.BernoulliMixture(
                            n_components=k, tol=0.0, max_iter=s.max_iter,
                            weights_init=weights, means_init=means)
                else:
                    X64 = gaussian_blobs(n, d, k)
                    start = GaussianStart.from_data(X64, k)
                    X = X64 if dtype == "float64" else X64.astype(dtype)
                    del X64
                    if model == "KMeans":
                        def make():
                            return fastem.KMeans(n_clusters=k, init=start.means, n_init=1,
                                                 max_iter=s.max_iter, tol=0.0)
                    else:
                        def make(cov=cov):
                            return self._gaussian_fastem(start, cov)
                one, many, control = self.time_threads(make, X, threads)
                self.row("threads", model, cov, X, k, dtype, many, "1 thread", one,
                         ratio=one[0] / many[0], control_ratio=control)
                del X

    def run_sizes(self):
        s = self.settings
        d, k = SIZE_DK
        sizes = sorted({self.shape(n, d, k)[0] for n in SIZE_NS})
        # the first n rows of one data set for every n: the rows are drawn
        # independently, so each prefix is a sample of the same distribution
        for dtype in self.dtypes("sizes"):
            X_all = gaussian_blobs(sizes[-1], d, k, dtype=dtype)
            for model, cov in SIZE_CASES:
                smallest = None
                for n in sizes:
                    X = X_all[:n]
                    start = GaussianStart.from_data(X, k)
                    if model == "KMeans":
                        def make():
                            return fastem.KMeans(n_clusters=k, init=start.means, n_init=1,
                                                 max_iter=s.max_iter, tol=0.0)
                    else:
                        def make():
                            return self._gaussian_fastem(start, cov)
                    result = self.time_fastem(make, X)
                    per_row = result[0] / n
                    if smallest is None:
                        smallest = result
                    self.row("sizes", model, cov, X, k, dtype, result,
                             f"n={short_number(sizes[0])}", smallest,
                             ratio=per_row / (smallest[0] / sizes[0]))
            del X_all

    def time_threads(self, make, X, threads):
        """Best seconds per iteration with one thread and with ``threads``,
        the two alternating fit by fit, and the control: one thread/``threads``
        of the best times of a float64 multiply timed after each fit (None
        without threadpoolctl)."""
        start = time.perf_counter()
        warm_up(make, X)
        self.warm_up_s += time.perf_counter() - start
        if self._control is None:
            self._control = np.random.default_rng(29).standard_normal(
                (CONTROL_SIZE, CONTROL_SIZE))
        best, control = {}, {}
        previous = fastem.get_num_threads()
        try:
            for _ in range(self.settings.repeats):
                for count in (1, threads):
                    fastem.set_num_threads(count)
                    seconds, iters = per_iteration(make, X, 1, self.settings.marginal)
                    if seconds < best.get(count, (math.inf, 0))[0]:
                        best[count] = (seconds, iters)
                    seconds = blas_seconds(self._control, count)
                    if seconds is not None:
                        control[count] = min(control.get(count, math.inf), seconds)
        finally:
            fastem.set_num_threads(previous)
        ratio = control[1] / control[threads] if control else None
        return best[1], best[threads], ratio


def run(settings, out=None, json_path=None):
    """Run the benchmark, print the report to ``out``; return (machine info, rows)."""
    sklearn = _import_sklearn()
    faiss = _import_faiss()
    threads = effective_threads()
    with _thread_limits(threads) as limited:
        info = machine_info(sklearn, faiss, limited)
        bench = Bench(settings, sklearn, faiss, out=out)
        if settings.marginal:
            measure = (f"(fit time at max_iter - fit time at "
                       f"{marginal_iterations(settings.max_iter)} iterations) / the difference "
                       f"of their n_iter_ (--marginal), each the best of {settings.repeats}")
        else:
            measure = f"fit time / n_iter_, best of {settings.repeats}"
        bench.say(f"fastem bench: time per EM iteration = {measure}; tol=0, "
                  f"max_iter={settings.max_iter}; same data and "
                  f"same initial parameters for every library"
                  + (f"; n scaled by {settings.scale:g}" if settings.scale != 1 else ""))
        for line in describe_machine(info):
            bench.say(line)
        size = peak_size(settings.scale)
        bench.peak = info["multiply_peak"] = multiply_peak(size)
        info["multiply_peak_size"] = size
        bench.say(describe_peak(bench.peak, size, "at the start"))
        started = time.perf_counter()
        bench.run()
        total = time.perf_counter() - started
        info["multiply_peak_end"] = multiply_peak(size)
    bench.say()
    bench.say(f"GFLOP/s: fastem's nominal flops per iteration (KMeans 2nkd; see "
              f"fastem/_bench.py for the other models) over its time per iteration. "
              f"KMeans where it keeps distance bounds (the numba backend, from 4 "
              f"features) skips rows whose centre cannot change, which count as "
              f"computed: its rate can exceed the multiply peak (the kernel scoring "
              f"every row: benchmarks/, estep_spherical hard). % peak: that rate over "
              f"the dense multiply peak of its dtype measured at the start. % peak for "
              f"target: the rate fastem would need for the target ratio over "
              f"scikit-learn (KMeans {TARGET_RATIOS['KMeans']:g}x, GaussianMixture "
              f"{TARGET_RATIOS['GaussianMixture']:g}x), over the same peak; near 100 or "
              f"above, the target asks for the whole iteration at the multiply's rate.")
    bench.say(describe_peak(info["multiply_peak_end"], info["multiply_peak_size"],
                            "at the end"))
    if sklearn is not None and any(r.section == "sklearn" for r in bench.rows):
        bench.say("scikit-learn's GaussianMixture time includes its initial M-step "
                  "(init_params='random_from_data') and a final E-step for labels its "
                  "fit discards (fastem's fit leaves that E-step out), spread over its "
                  "iterations.")
    if sklearn is None:
        bench.say("scikit-learn is not installed: fastem times only.")
    bench.say(f"warm-up (numba compilation or cache load, not timed): {bench.warm_up_s:.1f} s; "
              f"total {total:.1f} s")
    load = _load_average()
    if load is not None:
        info["load_average_end"] = load
        bench.say(f"load average at the end (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load)}"
                  f" on {info['usable_cores']} usable cores (above the thread count, other "
                  f"processes competed and the times are distorted)")
    if json_path is not None:
        with open(json_path, "w") as f:
            json.dump({"machine": info, "settings": asdict(settings),
                       "rows": [asdict(row) for row in bench.rows]}, f, indent=2)
        bench.say(f"results written to {json_path}")
    return info, bench.rows
