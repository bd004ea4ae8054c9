"""The kernel table: every kernel a backend must provide, in one place.

Each backend module (``numpy``, ``numba``, later ``cython``) exports exactly
these names with exactly these parameters; ``tests/test_kernels.py``
enforces it.  Kernels never validate, warn or allocate the arrays they fill:
the EM driver allocates every OUT array once per fit and the kernel overwrites
it.

Layout
------
Rows are processed in fixed-size chunks: chunk ``c`` holds rows
``[c * chunk_size, min(n, (c + 1) * chunk_size))``.  Every additive statistic
has a leading chunk axis of length ``n_chunks``; a kernel writes slot ``c``
from chunk ``c`` alone, and the driver sums the slots in chunk order.  The
result is therefore the same, bit for bit, for any number of threads.

Shapes: ``n`` samples, ``d`` features, ``k`` components, ``C`` chunks.
``X`` is float32 or float64 (C or Fortran order); everything else is float64
except ``labels`` (int64).  Arithmetic and accumulation are in float64.

Gaussian E-step kernels (``estep_full``, ``estep_tied``, ``estep_diag``,
``estep_spherical``) share one signature::

    X            IN  (n, d)        data
    sample_weight IN (n,)          weight of each row (>= 0)
    means        IN  (k, d)        current means; also the shift of the moments
    prec_chol    IN  full (k, d, d) upper-triangular Cholesky factors of the
                     precisions; tied (d, d); diag (k, d); spherical (k,)
    log_norm     IN  (k,)          log w_k + log det(prec_chol_k) - d/2 log(2 pi)
    center       IN  (d,)          shift of the tied scatter (unused otherwise)
    hard         IN  bool          classification E-step: resp = delta at argmax
    chunk_size   IN  int           rows per chunk
    labels       IN/OUT (n,) or (0,)  argmax_k of the log-probabilities,
                     written (and changed labels counted) only when its first
                     dimension is n; (0,) in the iterations of a soft fit,
                     whose labels nothing reads.  A hard E-step needs (n,)
                     (``check_labels``).
    log_prob     OUT (n, k) or (0, k)  log(w_k p_k(x_i)), written only when its
                     first dimension is n (prediction); (0, k) during fits
    nk           OUT (C, k)        sum_i w_i r_ik
    sx           OUT (C, k, d)     sum_i w_i r_ik (x_i - means_k)
    sxx          OUT full (C, k, d, d): sum_i w_i r_ik (x_i - m_k)(x_i - m_k)^T;
                     tied (C, d, d): sum_i w_i (x_i - center)(x_i - center)^T
                     (the M-step reads only their lower triangles);
                     diag (C, k, d): sum_i w_i r_ik (x_i - m_k)^2;
                     spherical (C, k): sum_i w_i r_ik ||x_i - m_k||^2 (all the
                     spherical M-step needs, so a kernel may score and
                     accumulate ||x_i||^2 as one feature)
    obj          OUT (C, 3)        [sum_i w_i ll_i, sum_i w_i maha_i, n_changed]
                     ll_i is log sum_k w_k p_k(x_i) (soft) or max_k of it
                     (hard); maha_i is the squared Mahalanobis distance to the
                     assigned component (hard only, else 0); n_changed counts
                     rows whose label changed (0 when ``labels`` is (0,)).

Statistics off: ``nk``, ``sx``, ``sxx`` and ``obj`` may all be passed with
no chunk rows ((0, k), (0, k, d), (0,) + sxx's other axes, (0, 3)) when
only ``labels`` and ``log_prob`` are wanted (prediction, and a soft fit's
final E-step).  The kernel then writes those two and nothing else; a soft
kernel may skip the exps, the normalisation and the moments, and the
labels and log_prob are the same, bit for bit, as with statistics.  A
kernel without a path of its own for this computes its statistics into
temporaries (``statistics_optional``).  The missing-value kernels below
always take their statistics.

Second moments off (``estep_spherical`` only): ``sxx`` with no chunk rows
while ``nk`` has them, for a caller that reads neither sxx nor the first two
columns of obj (K-means' iterations, whose M-step moves only the means).
The kernel writes labels, log_prob, nk, sx and obj[:, 2] as ever, and 0 in
obj[:, 0] and obj[:, 1]; its hard path without log_prob leaves the second
moments out, the other paths compute them into a temporary.

``estep_kmeans`` is the hard ``estep_spherical`` of K-means' restricted
family (every component with the same precision and the same log_norm, so
that the label is the nearest mean; ``hard`` is implied and there is no
``log_prob``), with per-row bounds that let a kernel skip rows whose label
cannot change::

    X, sample_weight, means, prec_chol, log_norm, center, chunk_size, labels
                     as above (``labels`` (n,), as the E-step before left them)
    bounds       IN/OUT (n, 2) float32, C order: row i's
                     [u, l], u >= ||x_i - means_{labels_i}|| and
                     l <= min_{j != labels_i} ||x_i - means_j|| at the means of
                     the call before, or [inf, 0] (nothing known); on return,
                     the same at ``means``
    shift        IN  (k,) float64   an upper bound on ||means_j - old_j||,
                     the distance mean j moved since the bounds were written
    sums         IN/OUT (C, k, d + 1) float64, C order, or (0, k, d + 1): kept
                     sums, chunk c's [sum w_i, sum w_i (x_i - center)] over its
                     rows labelled j, as the call before left them, or NaN
                     (not kept); on return, the same for the new labels, or NaN
    nk, sx, sxx, obj  OUT as ``estep_spherical`` (statistics always on;
                     second moments may be off)

Its labels and ``obj`` are those of the hard ``estep_spherical`` at the same
arguments, bit for bit on the same backend: bounds only spare work.  So are
its statistics with second moments, or with no chunk rows in ``sums``.  With
kept sums and second moments off, a kernel may instead take nk and sx from
the kept sums, moving only the rows that change label (so the rows whose
bounds hold are not read at all): they then agree with the row-order sums to
rounding.  The caller must pass the same ``sample_weight`` and ``center``,
and leave ``labels`` as the kernel wrote them, from one call to the next;
else it sets ``sums`` to NaN.  A backend that keeps no bounds
(``kmeans_without_bounds``) runs ``estep_spherical`` and writes [inf, 0] and
NaN.

``estep_bernoulli`` has the same roles for a product of Bernoulli variables::

    X IN (n, d) 0/1 values; sample_weight IN (n,); logit IN (k, d)
    log(p_kj / (1 - p_kj)); log_norm IN (k,) log w_k + sum_j log(1 - p_kj);
    hard, chunk_size, labels, log_prob as above;
    nk OUT (C, k); sx OUT (C, k, d) sum_i w_i r_ik x_i; obj OUT (C, 3)
    (column 1 is 0).

Missing values (NaN entries of X, missing at random) have kernels of their
own, so that data without NaN never pay for them and give exactly the
complete-data results.  ``estep_<type>_missing`` take the Gaussian arguments
above plus::

    imputed      OUT (n, d) or (0, d)  E[x_i | observed part of x_i] under the
                     mixture (observed entries copied), written only when its
                     first dimension is n
    nko          OUT (C, k, d)     sum_i w_i r_ik [x_ia observed]

and their ``log_prob``/``obj`` use the marginal density of each row's observed
coordinates; ``sx`` and ``sxx`` hold the *expected* moments (Ghahramani &
Jordan, 1994): missing coordinates are filled with their conditional mean given
the observed ones, and the conditional covariance is added to ``sxx``.
``maha`` is the Mahalanobis distance over the observed coordinates.

``estep_bernoulli_missing`` adds ``log_q`` IN (k, d) log(1 - p_kj), to remove
the terms of the missing coordinates, and ``nko`` OUT (C, k, d); its ``sx``
sums over observed entries only.  ``sqdist_missing`` is ``sqdist`` over the
observed coordinates of each row.

``sqdist(X, centers, chunk_size, out)`` writes ``out[i, j] = ||x_i - c_j||^2``
(IN X (n, d), IN centers (m, d) float64, OUT out (n, m) float64); it serves
k-means++ seeding.

``count_nonfinite(X, chunk_size, out)`` counts the entries of each chunk of X
that are not finite (IN X (n, d); OUT out (C, 2) float64: chunk c's number
of NaN entries and of infinite ones); it serves the validation of X (NaN
marks a missing value, infinity is an error).

``prec_chol(covariances, out)`` factors the precisions of a stack of
covariance matrices (IN covariances (m, d, d) float64, of which only the lower
triangles are read; OUT out (m, d, d) float64): out[j] is the upper-triangular
U with U U^T = covariances[j]^-1, that is L^-T for the lower Cholesky factor
L of covariances[j] (no matrix is inverted whole).  It returns -1, or the
index of the first matrix that is not positive definite (a pivot not above
0, or NaN), leaving ``out`` undefined; it serves the M-step of the full
(m = k) and tied (m = 1) models, between E-steps on one thread.
"""

import functools
from collections import namedtuple

import numpy as np

KernelSpec = namedtuple("KernelSpec", ["name", "params"])

_GAUSSIAN_PARAMS = (
    "X", "sample_weight", "means", "prec_chol", "log_norm", "center", "hard",
    "chunk_size", "labels", "log_prob", "nk", "sx", "sxx", "obj",
)

_KMEANS_PARAMS = (
    "X", "sample_weight", "means", "prec_chol", "log_norm", "center", "chunk_size",
    "labels", "bounds", "shift", "sums", "nk", "sx", "sxx", "obj",
)

_GAUSSIAN_MISSING_PARAMS = (
    "X", "sample_weight", "means", "prec_chol", "log_norm", "center", "hard",
    "chunk_size", "labels", "log_prob", "imputed", "nk", "nko", "sx", "sxx", "obj",
)

KERNELS = (
    KernelSpec("estep_full", _GAUSSIAN_PARAMS),
    KernelSpec("estep_tied", _GAUSSIAN_PARAMS),
    KernelSpec("estep_diag", _GAUSSIAN_PARAMS),
    KernelSpec("estep_spherical", _GAUSSIAN_PARAMS),
    KernelSpec("estep_kmeans", _KMEANS_PARAMS),
    KernelSpec(
        "estep_bernoulli",
        ("X", "sample_weight", "logit", "log_norm", "hard", "chunk_size",
         "labels", "log_prob", "nk", "sx", "obj"),
    ),
    KernelSpec("sqdist", ("X", "centers", "chunk_size", "out")),
    KernelSpec("estep_full_missing", _GAUSSIAN_MISSING_PARAMS),
    KernelSpec("estep_tied_missing", _GAUSSIAN_MISSING_PARAMS),
    KernelSpec("estep_diag_missing", _GAUSSIAN_MISSING_PARAMS),
    KernelSpec("estep_spherical_missing", _GAUSSIAN_MISSING_PARAMS),
    KernelSpec(
        "estep_bernoulli_missing",
        ("X", "sample_weight", "logit", "log_norm", "log_q", "hard", "chunk_size",
         "labels", "log_prob", "nk", "nko", "sx", "obj"),
    ),
    KernelSpec("sqdist_missing", ("X", "centers", "chunk_size", "out")),
    KernelSpec("count_nonfinite", ("X", "chunk_size", "out")),
    KernelSpec("prec_chol", ("covariances", "out")),
)

KERNEL_NAMES = tuple(spec.name for spec in KERNELS)

# Column meaning of the ``obj`` statistic.
OBJ_LOGLIK, OBJ_MAHA, OBJ_CHANGED = 0, 1, 2


def check_labels(X, labels, hard):
    """Raise ValueError unless ``labels`` is a valid labels argument: (n,), or
    (0,) for a soft E-step (see the table above); the compiled kernels write
    it without bounds checks."""
    n = X.shape[0]
    if labels.ndim != 1 or labels.shape[0] not in ((n,) if hard else (n, 0)):
        allowed = f"({n},)" if hard else f"({n},) or (0,)"
        raise ValueError(f"labels must have shape {allowed} for a "
                         f"{'hard' if hard else 'soft'} E-step, got {labels.shape}")


def statistics_wanted(nk):
    """False when a complete-data E-step is called with statistics off (``nk``
    with no chunk rows; see above)."""
    return nk.shape[0] > 0


def second_moments_wanted(nk, sxx):
    """False when ``estep_spherical`` is called with second moments off (see
    above); True with statistics off altogether."""
    return sxx.shape[0] > 0 or nk.shape[0] == 0


def chunk_count(n, chunk_size):
    """The number of chunks of ``chunk_size`` rows that hold ``n`` rows."""
    return max(1, -(-n // chunk_size))


def e_step_buffers(family, buffers, n_samples, chunk_size, n_components, n_features):
    """The statistic buffers a model family's E-step hands its kernel:
    ``buffers`` itself, or for None (statistics off) the family's arrays with
    no chunk rows; with NaN, whose kernels always take statistics, arrays for
    every chunk, to be dropped."""
    if buffers is not None:
        return buffers
    n_chunks = chunk_count(n_samples, chunk_size) if family.missing else 0
    return family.allocate(n_chunks, n_components, n_features)


def sxx_shape(covariance_type, n_components, n_features):
    """The second-moment statistic's shape for one chunk (see above)."""
    k, d = n_components, n_features
    return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[
        covariance_type]


_SPHERICAL_AT = {p: i for i, p in enumerate(_GAUSSIAN_PARAMS)}


def second_moments_into_temporary(kernel, *args):
    """Run ``estep_spherical`` (``kernel``, the table's arguments by position)
    called with second moments off, for a path without its own: its second
    moments go to a temporary, and obj[:, 0] and obj[:, 1] are set to 0."""
    args = list(args)
    nk, sxx, obj = (args[_SPHERICAL_AT[p]] for p in ("nk", "sxx", "obj"))
    args[_SPHERICAL_AT["sxx"]] = np.empty((nk.shape[0],) + np.shape(sxx)[1:])
    kernel(*args)
    obj[:, :2] = 0.0


_STATISTIC_KERNELS = ("estep_full", "estep_tied", "estep_diag", "estep_spherical",
                      "estep_bernoulli")


def statistic_temporaries(name, X, n_components, chunk_size):
    """Statistic arrays (nk, sx, sxx, obj) of kernel ``name`` for X's chunks,
    to be dropped: for a call with statistics off taking a path that
    computes them (``sxx`` is None for ``estep_bernoulli``)."""
    n, d = X.shape
    k = n_components
    n_chunks = chunk_count(n, chunk_size)
    sxx = None
    if name != "estep_bernoulli":
        sxx = np.empty((n_chunks,) + sxx_shape(name[len("estep_"):], k, d))
    return (np.empty((n_chunks, k)), np.empty((n_chunks, k, d)), sxx,
            np.empty((n_chunks, 3)))


def check_bounds(X, means, chunk_size, bounds, shift, sums):
    """Raise ValueError unless ``bounds``, ``shift`` and ``sums`` are valid
    arguments of ``estep_kmeans`` (see above): compiled kernels read and write
    the bounds and sums in place, without bounds checks."""
    n, k = np.shape(X)[0], np.shape(means)[0]
    d = np.shape(X)[1]
    chunks = chunk_count(n, chunk_size)
    if not (isinstance(sums, np.ndarray) and sums.dtype == np.float64
            and sums.shape in ((chunks, k, d + 1), (0, k, d + 1))
            and sums.flags.c_contiguous and sums.flags.writeable):
        raise ValueError(f"sums must be a writeable C-ordered float64 array of shape "
                         f"({chunks}, {k}, {d + 1}) or (0, {k}, {d + 1}), got "
                         f"{getattr(sums, 'dtype', type(sums))} {getattr(sums, 'shape', '')}")
    if not (isinstance(bounds, np.ndarray) and bounds.dtype == np.float32
            and bounds.shape == (n, 2) and bounds.flags.c_contiguous
            and bounds.flags.writeable):
        raise ValueError(f"bounds must be a writeable C-ordered float32 array of shape "
                         f"({n}, 2), got {getattr(bounds, 'dtype', type(bounds))} "
                         f"{getattr(bounds, 'shape', '')}")
    if np.shape(shift) != (k,):
        raise ValueError(f"shift must have shape ({k},), got {np.shape(shift)}")


def kmeans_without_bounds(estep_spherical):
    """``estep_kmeans`` for a backend that keeps no bounds: its hard
    ``estep_spherical``, every row's bounds set to [inf, 0] and no sums kept."""

    def estep_kmeans(X, sample_weight, means, prec_chol, log_norm, center, chunk_size,
                     labels, bounds, shift, sums, nk, sx, sxx, obj):
        check_bounds(X, means, chunk_size, bounds, shift, sums)
        estep_spherical(X, sample_weight, means, prec_chol, log_norm, center, True,
                        chunk_size, labels, np.empty((0, np.shape(means)[0])), nk, sx, sxx,
                        obj)
        bounds[:, 0] = np.inf
        bounds[:, 1] = 0.0
        sums[...] = np.nan

    return estep_kmeans


def statistics_optional(kernel):
    """Let a complete-data E-step ``kernel`` of the table be called with
    statistics off: it then runs with ``statistic_temporaries``.  For a
    backend's kernels that have no cheaper path for it."""
    name = kernel.__name__
    if name not in _STATISTIC_KERNELS:
        raise ValueError(f"statistics_optional serves {_STATISTIC_KERNELS}, got {name!r}")
    params = next(spec.params for spec in KERNELS if spec.name == name)
    at = {p: params.index(p) for p in params}
    of_k = at["logit" if name == "estep_bernoulli" else "means"]

    @functools.wraps(kernel)
    def run(*args):
        if len(args) != len(params):  # keyword arguments or a wrong count
            raise TypeError(f"{name} takes its {len(params)} arguments by position, "
                            f"got {len(args)}")
        if statistics_wanted(args[at["nk"]]):
            if "sxx" not in at or second_moments_wanted(args[at["nk"]], args[at["sxx"]]):
                return kernel(*args)
            if name != "estep_spherical":
                raise ValueError(f"{name} takes no sxx without chunk rows: second moments "
                                 "off is for estep_spherical")
            return second_moments_into_temporary(kernel, *args)
        args = list(args)
        nk, sx, sxx, obj = statistic_temporaries(name, args[at["X"]], args[of_k].shape[0],
                                                 args[at["chunk_size"]])
        args[at["nk"]], args[at["sx"]], args[at["obj"]] = nk, sx, obj
        if sxx is not None:
            args[at["sxx"]] = sxx
        return kernel(*args)

    return run
