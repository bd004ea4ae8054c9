"""The one registry of benchmark cases, and the data each case runs on.

A case is a target (a kernel of ``fastem/backends/_table.py`` or a model)
x a shape (n samples, d features, k components) x a dtype x a runner (a
fastem backend for kernels; ``fastem`` or ``sklearn`` for models).  Every
benchmark in this folder is parametrized from the lists built here
(``KERNEL_CASES``, ``MODEL_CASES``), so a shape or dtype is added in one
place.  The data of each case (``make_problem``) and two small timing
helpers live here too.

Shapes come in three tiers: ``small`` and ``medium`` run in CI (``-m "not
large"``), ``large`` carries ``pytest.mark.large``.  Each model family has its
own shapes (the large tier holds n = 1e6 and the reference shapes), and each
kernel is benchmarked at the shapes of the model that calls it.  The medium
Gaussian-mixture shape is the reference shape (1e5, 16, 16) itself.

A "peer" is a runner timed in a fastem model's benchmark group so that the
end-of-run table (``conftest.py``) prints their ratio: scikit-learn for
KMeans and GaussianMixture (``MODEL_CASES``), and for BernoulliMixture,
which scikit-learn lacks, one dense multiply ``X @ logit.T``
(``MULTIPLY_CASES``, runner ``"matmul"``): the floor of an E-step that reads
X once (target: one fastem iteration <= 2 multiplies).

Model fits record nominal GFLOP/s with ``fastem._bench.model_flops``, the
flop model that ``fastem bench`` prints (KMeans 2 n k d per iteration; the
Gaussian and Bernoulli counts are the E-step kernel's below).

Flop model (``kernel_flops``)
-----------------------------
Nominal arithmetic of one pass, counting a multiply-add as 2 flops and not
counting exp/log; ``k'`` is the number of components that receive
statistics for a row: ``k`` for a soft E-step, 1 for a hard one.

=================  =====================================================
sqdist             3 n m d              (subtract, square, add; m = k centres)
count_nonfinite    2 n d                (x * 0 and its sum, finite data)
estep_spherical    2 n k d              x . mu_k (||x||^2 once per row)
                   + 2 n k' d           sx moments (and sum r ||x||^2)
estep_kmeans       as estep_spherical   (hard; rows its bounds skip counted too)
estep_diag         4 n k d              distances (per-coordinate precision)
                   + 4 n k' d           sx and sxx moments
estep_tied         n d^2                x U (triangular), once per row
                   + 3 n k d            ||x U - mu_k U||^2
                   + n d^2              scatter about the centre (lower triangle)
                   + 3 n k' d           sx
estep_full         n k (d^2 + 3 d)      (x - mu_k) U_k (triangular) and its norm
                   + n k' (d^2 + 3 d)   second moments (lower triangle) and sx
estep_bernoulli    2 n k d              x . logit_k
                   + 2 n k' d           sx
prec_chol          2 k d^3 / 3          the full M-step's k Cholesky factors and
                                        their triangular inverses (X not read)
=================  =====================================================
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest

import fastem

SMALL, MEDIUM, LARGE = "small", "medium", "large"
DTYPES = ("float64", "float32")

# Backends too slow for the large tier; they still run at small and medium shapes.
SLOW_BACKENDS = frozenset({"numpy"})


def _short(n):
    """20000 -> '2e4', 1000000 -> '1e6', 1500 -> '1500'."""
    exponent = len(str(n)) - 1
    mantissa, rest = divmod(n, 10 ** exponent)
    return f"{mantissa}e{exponent}" if rest == 0 and exponent >= 3 else str(n)


@dataclass(frozen=True)
class Shape:
    n: int
    d: int
    k: int
    tier: str

    @property
    def label(self):
        return f"n{_short(self.n)}_d{self.d}_k{self.k}"


KMEANS_SHAPES = (
    Shape(20_000, 16, 16, SMALL),
    Shape(100_000, 16, 16, MEDIUM),
    Shape(1_000_000, 16, 16, LARGE),   # reference
    Shape(1_000_000, 32, 128, LARGE),  # reference
    Shape(200_000, 2, 8, LARGE),       # reference
)
GMM_SHAPES = (
    Shape(20_000, 16, 16, SMALL),
    Shape(100_000, 16, 16, MEDIUM),    # reference
    Shape(1_000_000, 16, 16, LARGE),
    Shape(200_000, 2, 8, LARGE),       # reference
    Shape(50_000, 64, 8, LARGE),       # reference
)
# missing values: 10 % of the entries NaN, completely at random (issue target
# shape (1e5, 16, 8)); the complete data of the same shape run beside them
MISSING_SHAPES = (
    Shape(20_000, 16, 8, SMALL),
    Shape(100_000, 16, 8, MEDIUM),     # reference
)
MISSING_FRACTION = 0.1
NAN_SUFFIX = "+nan10"
BERNOULLI_SHAPES = (
    Shape(20_000, 64, 32, SMALL),
    Shape(100_000, 64, 32, MEDIUM),
    Shape(1_000_000, 64, 32, LARGE),   # reference
)


@dataclass(frozen=True)
class Case:
    """One benchmark: ``name[variant]`` at ``shape`` in ``dtype``, run by ``runner``.

    name : kernel name (``"estep_full"``) or model class name (``"KMeans"``)
    variant : model covariance type, ``"hard"`` for a hard E-step kernel, or None
    data : ``"blobs"`` (Gaussian clusters) or ``"binary"`` (0/1 mixture)
    runner : backend name for kernels, ``"fastem"`` or ``"sklearn"`` for models,
        ``"matmul"`` for the dense multiply beside BernoulliMixture
    backend : for ``runner="fastem"``, the fastem backend the fit runs on
    """

    name: str
    variant: Optional[str]
    data: str
    shape: Shape
    dtype: str
    runner: str
    backend: Optional[str] = None

    @property
    def runner_label(self):
        """``"fastem[numba]"``, ``"fastem[cython]"``, ``"sklearn"``, ..."""
        return self.runner if self.backend is None else f"{self.runner}[{self.backend}]"

    @property
    def label(self):
        label = self.name if self.variant is None else f"{self.name}[{self.variant}]"
        return label + NAN_SUFFIX if self.data.endswith("_nan10") else label

    @property
    def group(self):
        return f"{self.label}|{self.shape.label}"

    @property
    def id(self):
        return (f"{self.label}-{self.shape.tier}-{self.shape.label}-{self.dtype}-"
                f"{self.runner_label}")

    @property
    def hard(self):
        return self.variant == "hard"

    def param(self):
        marks = [pytest.mark.large] if self.shape.tier == LARGE else []
        return pytest.param(self, id=self.id, marks=marks)


# ---------------------------------------------------------------- kernels
# (kernel, variant, data, shapes): each kernel at the shapes of its model.
KERNEL_TARGETS = (
    ("sqdist", None, "blobs", KMEANS_SHAPES),             # k-means++ seeding, transform
    ("estep_spherical", "hard", "blobs", KMEANS_SHAPES),  # the K-means E-step
    # the same with K-means' bounds, at fixed means: the rows whose bounds hold
    # (after the warm-up pass, nearly all) are not scored; a converged fit's E-step
    ("estep_kmeans", "hard", "blobs", KMEANS_SHAPES),
    ("estep_full", None, "blobs", GMM_SHAPES),
    ("estep_tied", None, "blobs", GMM_SHAPES),
    ("estep_diag", None, "blobs", GMM_SHAPES),
    ("estep_spherical", None, "blobs", GMM_SHAPES),
    ("estep_bernoulli", None, "binary", BERNOULLI_SHAPES),
    # the missing-value kernels, and their complete-data twins at the same shapes
    ("estep_full", None, "blobs", MISSING_SHAPES),
    ("estep_diag", None, "blobs", MISSING_SHAPES),
    ("estep_full_missing", None, "blobs_nan10", MISSING_SHAPES),
    ("estep_tied_missing", None, "blobs_nan10", MISSING_SHAPES[:1]),
    ("estep_diag_missing", None, "blobs_nan10", MISSING_SHAPES),
    ("estep_spherical_missing", None, "blobs_nan10", MISSING_SHAPES[:1]),
    ("estep_spherical_missing", "hard", "blobs_nan10", MISSING_SHAPES[:1]),
    ("estep_bernoulli_missing", None, "binary_nan10", BERNOULLI_SHAPES[:1]),
    ("sqdist_missing", None, "blobs_nan10", MISSING_SHAPES[:1]),
    # the check of X before every fit: finite data, and data with NaN (counted)
    ("count_nonfinite", None, "blobs", KMEANS_SHAPES),
    ("count_nonfinite", None, "blobs_nan10", MISSING_SHAPES[:1]),
    # the full M-step's factorisations, between E-steps on one thread (n not read)
    ("prec_chol", "full", "blobs", GMM_SHAPES),
)


def kernel_flops(name, n, d, k, hard=False):
    """Nominal flops of one kernel pass; see the module docstring."""
    kk = 1 if hard else k
    # a missing-value kernel's nominal count is its complete-data twin's
    name = name[:-len("_missing")] if name.endswith("_missing") else name
    if name == "sqdist":
        return 3 * n * k * d
    if name == "count_nonfinite":
        return 2 * n * d
    if name in ("estep_spherical", "estep_kmeans"):
        return 2 * n * k * d + 2 * n * kk * d
    if name == "estep_diag":
        return 4 * n * k * d + 4 * n * kk * d
    if name == "estep_tied":
        return 2 * n * d * d + 3 * n * k * d + 3 * n * kk * d
    if name == "estep_full":
        return n * (k + kk) * (d * d + 3 * d)
    if name == "estep_bernoulli":
        return 2 * n * k * d + 2 * n * kk * d
    if name == "prec_chol":
        return 2 * k * d ** 3 // 3
    raise ValueError(f"no flop model for kernel {name!r}")


def _kernel_cases():
    backends = fastem.available_backends()
    cases = []
    for name, variant, data, shapes in KERNEL_TARGETS:
        for shape in shapes:
            for dtype in DTYPES:
                for backend in backends:
                    if backend in SLOW_BACKENDS and (
                            shape.tier == LARGE
                            # the reference missing-value kernels loop over patterns
                            or (name.endswith("_missing") and shape.tier != SMALL)):
                        continue
                    cases.append(Case(name, variant, data, shape, dtype, backend))
    return cases


# ---------------------------------------------------------------- models
# (model, variant, data, shapes, runners)
MODEL_TARGETS = (
    ("KMeans", None, "blobs", KMEANS_SHAPES, ("fastem", "sklearn")),
    ("GaussianMixture", "full", "blobs", GMM_SHAPES, ("fastem", "sklearn")),
    ("GaussianMixture", "tied", "blobs", GMM_SHAPES, ("fastem", "sklearn")),
    ("GaussianMixture", "diag", "blobs", GMM_SHAPES, ("fastem", "sklearn")),
    ("GaussianMixture", "spherical", "blobs", GMM_SHAPES, ("fastem", "sklearn")),
    ("BernoulliMixture", None, "binary", BERNOULLI_SHAPES, ("fastem",)),  # no sklearn peer
    # missing values (no scikit-learn peer): 10 % NaN next to the complete data
    ("GaussianMixture", "full", "blobs", MISSING_SHAPES, ("fastem", "sklearn")),
    ("GaussianMixture", "diag", "blobs", MISSING_SHAPES, ("fastem", "sklearn")),
    ("GaussianMixture", "full", "blobs_nan10", MISSING_SHAPES, ("fastem",)),
    ("GaussianMixture", "diag", "blobs_nan10", MISSING_SHAPES, ("fastem",)),
    ("GaussianMixture", "tied", "blobs_nan10", MISSING_SHAPES[:1], ("fastem",)),
    ("GaussianMixture", "spherical", "blobs_nan10", MISSING_SHAPES[:1], ("fastem",)),
    ("KMeans", None, "blobs_nan10", MISSING_SHAPES[:1], ("fastem",)),
    ("BernoulliMixture", None, "binary_nan10", BERNOULLI_SHAPES[:1], ("fastem",)),
)


def _model_cases():
    # fastem fits run once per compiled backend (numba and cython, side by side)
    fastem_backends = [b for b in fastem.available_backends() if b not in SLOW_BACKENDS]
    cases = []
    for name, variant, data, shapes, runners in MODEL_TARGETS:
        for shape in shapes:
            for dtype in DTYPES:
                for runner in runners:
                    if runner != "fastem":
                        cases.append(Case(name, variant, data, shape, dtype, runner))
                        continue
                    cases.extend(Case(name, variant, data, shape, dtype, runner, backend)
                                 for backend in fastem_backends)
    return cases


KERNEL_CASES = _kernel_cases()
MODEL_CASES = _model_cases()
# one dense multiply X @ logit.T, in the BernoulliMixture groups (no sklearn peer there)
MULTIPLY_CASES = [Case("BernoulliMixture", None, "binary", shape, dtype, "matmul")
                  for shape in BERNOULLI_SHAPES for dtype in DTYPES]


# ---------------------------------------------------------------- timing helpers
def warm_up(benchmark, func, *args):
    """Call ``func(*args)`` once outside the timing (numba compiles on first use).

    Skipped under ``--benchmark-disable``, where the single call is the test.
    """
    if benchmark.enabled:
        func(*args)


def median_seconds(benchmark):
    """Median time of one call in seconds, or None under ``--benchmark-disable``."""
    if benchmark.stats is None:
        return None
    return benchmark.stats.stats.median


# ---------------------------------------------------------------- data
_ROWS = 65_536  # rows generated at a time: no (n, d) float64 temporary for float32 data


@dataclass
class Problem:
    """Data of one (data, shape, dtype) and the initial parameters every runner shares.

    X : ndarray of shape (n, d), C order, ``dtype``
    sample_weight : ndarray of shape (n,), ones
    center : ndarray of shape (d,), column means in float64
    weights_init : ndarray of shape (k,), uniform
    means_init : ndarray of shape (k, d), float64: k distinct rows of X for
        blobs, success probabilities in [0.25, 0.75] for binary data
    covariance : ndarray of shape (d, d), the data's covariance (blobs only)
    """

    X: np.ndarray
    sample_weight: np.ndarray
    center: np.ndarray
    weights_init: np.ndarray
    means_init: np.ndarray
    covariance: Optional[np.ndarray] = None

    def covariances_init(self, covariance_type):
        """Every component starts with the data's covariance, in that type's shape."""
        k = self.means_init.shape[0]
        variances = np.diag(self.covariance)
        return {
            "full": np.tile(self.covariance, (k, 1, 1)),
            "tied": self.covariance,
            "diag": np.tile(variances, (k, 1)),
            "spherical": np.full(k, variances.mean()),
        }[covariance_type]

    def precisions_init(self, covariance_type):
        """The inverses of :meth:`covariances_init`, for ``precisions_init``."""
        covariances = self.covariances_init(covariance_type)
        if covariance_type in ("full", "tied"):
            precisions = np.linalg.inv(covariances)
            return 0.5 * (precisions + np.swapaxes(precisions, -1, -2))
        return 1.0 / covariances


def make_blobs(n, d, k, dtype, seed=0):
    """k Gaussian clusters: centres ~ N(0, 2^2 I), unit noise, uniform labels.

    The clusters overlap enough that Lloyd and EM keep moving for the first
    ten iterations from a random-rows start.
    """
    rng = np.random.default_rng([seed, n, d, k])
    centres = rng.normal(scale=2.0, size=(k, d))
    X = np.empty((n, d), dtype=dtype)
    for start in range(0, n, _ROWS):
        stop = min(n, start + _ROWS)
        labels = rng.integers(k, size=stop - start)
        X[start:stop] = centres[labels] + rng.normal(size=(stop - start, d))
    return X


def make_binary(n, d, k, dtype, seed=0):
    """0/1 rows from a mixture of k product-Bernoulli prototypes p_k ~ U(0.05, 0.95)^d."""
    rng = np.random.default_rng([seed, n, d, k, 1])
    prototypes = rng.uniform(0.05, 0.95, size=(k, d))
    X = np.empty((n, d), dtype=dtype)
    for start in range(0, n, _ROWS):
        stop = min(n, start + _ROWS)
        labels = rng.integers(k, size=stop - start)
        X[start:stop] = rng.random((stop - start, d)) < prototypes[labels]
    return X


def _hide(X, seed):
    """Set MISSING_FRACTION of the entries of X to NaN, completely at random, in place."""
    rng = np.random.default_rng([seed, *X.shape, 3])
    for start in range(0, X.shape[0], _ROWS):
        part = X[start:start + _ROWS]
        part[rng.random(part.shape) < MISSING_FRACTION] = np.nan


def make_problem(data, n, d, k, dtype, seed=0):
    """The :class:`Problem` of one case; deterministic in its arguments.

    ``*_nan10`` data are the same data with 10 % of the entries NaN; the
    initial parameters are those of the complete data.
    """
    if data.endswith("_nan10"):
        problem = make_problem(data[:-len("_nan10")], n, d, k, dtype, seed)
        X = problem.X.copy()
        _hide(X, seed)
        problem.X = X
        return problem
    make = {"blobs": make_blobs, "binary": make_binary}[data]
    X = make(n, d, k, dtype, seed)
    rng = np.random.default_rng([seed, n, d, k, 2])
    center = X.mean(axis=0, dtype=np.float64)
    if data == "binary":
        means_init = rng.uniform(0.25, 0.75, size=(k, d))
        covariance = None
    else:
        means_init = X[np.sort(rng.choice(n, size=k, replace=False))].astype(np.float64)
        covariance = np.zeros((d, d))
        for start in range(0, n, _ROWS):
            diff = X[start:start + _ROWS].astype(np.float64) - center
            covariance += diff.T @ diff
        covariance /= n
    return Problem(X, np.ones(n), center, np.full(k, 1.0 / k), means_init, covariance)
