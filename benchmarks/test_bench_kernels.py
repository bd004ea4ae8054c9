"""One pass of each kernel of the table, on each backend, as the EM driver calls it.

The arguments are built as fastem's families build them (``allocate`` for
the statistic buffers, ``log_norm`` / ``natural_params`` for the
normalisers, ``chunk_layout`` for the chunks) and passed in the order of
the kernel table, so a benchmark breaks when the table changes.  Only the
kernel call is timed.

extra_info: ``points_per_s`` (rows per second) and ``gflops`` (nominal flops
of ``cases.kernel_flops`` per second), plus the case description.
"""

import numpy as np
import pytest

from cases import KERNEL_CASES, kernel_flops, median_seconds, warm_up
from fastem import _config, get_num_threads, using_backend
from fastem._bernoulli import BernoulliFamily, BernoulliParams
from fastem._gaussian import GaussianFamily, GaussianParams
from fastem._linalg import prec_chol_from_covariances
from fastem.backends import get_kernels
from fastem.backends._table import KERNELS

TABLE = {spec.name: spec.params for spec in KERNELS}
REG_COVAR = 1e-6  # GaussianMixture's default


def _gaussian_params(case, problem):
    """Parameters as the M-step hands them to the E-step.

    ``prec_chol`` comes from ``prec_chol_from_covariances``, the M-step's own
    call; ``_gaussian_arguments`` then passes it in C order, as ``e_step`` does.
    """
    k = problem.means_init.shape[0]
    if case.hard:
        # KMeans' restricted mixture: weights 1/k, identity covariances
        return GaussianParams(np.full(k, 1.0 / k), problem.means_init, np.ones(k), np.ones(k))
    cov_type = _covariance_type(case)
    covariances = problem.covariances_init(cov_type)
    return GaussianParams(problem.weights_init, problem.means_init, covariances,
                          prec_chol_from_covariances(covariances, cov_type, REG_COVAR))


def _covariance_type(case):
    if case.name == "estep_kmeans":
        return "spherical"  # K-means' restricted family
    return case.name[len("estep_"):].replace("_missing", "")


def _gaussian_arguments(case, problem, chunk_size, n_chunks):
    missing = case.name.endswith("_missing")
    family = GaussianFamily(_covariance_type(case), reg_covar=REG_COVAR, missing=missing)
    params = _gaussian_params(case, problem)
    n, d = problem.X.shape
    k = params.means.shape[0]
    buffers = family.allocate(n_chunks, k, d)
    # the small parameter arrays in C order, as GaussianFamily.e_step passes them
    values = dict(
        X=problem.X, sample_weight=problem.sample_weight,
        means=np.ascontiguousarray(params.means, dtype=np.float64),
        prec_chol=np.ascontiguousarray(params.prec_chol, dtype=np.float64),
        log_norm=family.log_norm(params),
        center=np.ascontiguousarray(problem.center, dtype=np.float64),
        hard=case.hard, chunk_size=chunk_size, labels=_labels(case, n),
        log_prob=np.empty((0, k)), imputed=np.empty((0, d)), **buffers,
    )
    return values, buffers


def _kmeans_arguments(case, problem, chunk_size, n_chunks):
    """``estep_kmeans`` as a K-means fit calls it: the hard spherical arguments,
    bounds that nothing is known of, no kept sums, and no shift (the means stay
    put, so the bounds and sums the warm-up pass writes hold in the timed ones)."""
    values, buffers = _gaussian_arguments(case, problem, chunk_size, n_chunks)
    n, d = problem.X.shape
    k = problem.means_init.shape[0]
    bounds = np.empty((n, 2), dtype=np.float32)
    bounds[:, 0] = np.inf
    bounds[:, 1] = 0.0
    sums = np.full((n_chunks, k, d + 1), np.nan)
    values.update(bounds=bounds, shift=np.zeros(k), sums=sums, sxx=values["sxx"][:0])
    buffers["sxx"] = values["sxx"]  # second moments off, as in a fit's iterations
    return values, buffers


def _labels(case, n):
    """The labels argument of a fit's iterations: soft E-steps take none."""
    return np.full(n, -1, dtype=np.int64) if case.hard else np.empty(0, dtype=np.int64)


def _bernoulli_arguments(case, problem, chunk_size, n_chunks):
    family = BernoulliFamily(alpha=1e-10, missing=case.name.endswith("_missing"))
    params = BernoulliParams(problem.weights_init, problem.means_init)
    logit, log_norm, log_q = family.natural_params(params)
    n, d = problem.X.shape
    k = logit.shape[0]
    buffers = family.allocate(n_chunks, k, d)
    values = dict(
        X=problem.X, sample_weight=problem.sample_weight,
        logit=np.ascontiguousarray(logit), log_norm=log_norm,  # as BernoulliFamily.e_step
        log_q=np.ascontiguousarray(log_q),
        hard=case.hard, chunk_size=chunk_size, labels=_labels(case, n),
        log_prob=np.empty((0, k)), **buffers,
    )
    return values, buffers


def _sqdist_arguments(case, problem, chunk_size, n_chunks):
    # KMeans.transform: distances to the k centres
    n = problem.X.shape[0]
    k = problem.means_init.shape[0]
    values = dict(X=problem.X, centers=problem.means_init, chunk_size=chunk_size,
                  out=np.empty((n, k)))
    return values, None


def _count_arguments(case, problem, chunk_size, n_chunks):
    # the check of X in check_array
    values = dict(X=problem.X, chunk_size=chunk_size, out=np.empty((n_chunks, 2)))
    return values, None


def _prec_chol_arguments(case, problem, chunk_size, n_chunks):
    # the full M-step's call: the k components' covariances
    covariances = np.ascontiguousarray(problem.covariances_init("full"), dtype=np.float64)
    return dict(covariances=covariances, out=np.empty(covariances.shape)), None


def _check_prec_chol(case, problem, values, buffers):
    C, U = values["covariances"], values["out"]
    for j in range(C.shape[0]):
        np.testing.assert_allclose(U[j] @ U[j].T @ C[j], np.eye(C.shape[1]), atol=1e-8)


def _check_count(case, problem, values, buffers):
    X, out = values["X"], values["out"]
    assert out.sum(axis=0).tolist() == [np.isnan(X).sum(), np.isinf(X).sum()]


def _check_estep(case, problem, values, buffers):
    """The pass covered every row: responsibilities of each row sum to its weight."""
    np.testing.assert_allclose(buffers["nk"].sum(), problem.sample_weight.sum(), rtol=1e-9)
    assert np.isfinite(buffers["obj"]).all()
    if case.hard:
        assert values["labels"].min() >= 0
    else:
        assert values["labels"].shape == (0,)


def _check_sqdist(case, problem, values, buffers):
    X, centers, out = values["X"], values["centers"], values["out"]
    for i in (0, X.shape[0] - 1):
        # over the observed coordinates (all of them without NaN)
        expected = np.nansum((X[i].astype(np.float64) - centers) ** 2, axis=1)
        np.testing.assert_allclose(out[i], expected, rtol=1e-6 if X.dtype == np.float32 else 1e-12)


ARGUMENTS = {
    "estep_full": (_gaussian_arguments, _check_estep),
    "estep_tied": (_gaussian_arguments, _check_estep),
    "estep_diag": (_gaussian_arguments, _check_estep),
    "estep_spherical": (_gaussian_arguments, _check_estep),
    "estep_kmeans": (_kmeans_arguments, _check_estep),
    "estep_bernoulli": (_bernoulli_arguments, _check_estep),
    "sqdist": (_sqdist_arguments, _check_sqdist),
    "estep_full_missing": (_gaussian_arguments, _check_estep),
    "estep_tied_missing": (_gaussian_arguments, _check_estep),
    "estep_diag_missing": (_gaussian_arguments, _check_estep),
    "estep_spherical_missing": (_gaussian_arguments, _check_estep),
    "estep_bernoulli_missing": (_bernoulli_arguments, _check_estep),
    "sqdist_missing": (_sqdist_arguments, _check_sqdist),
    "count_nonfinite": (_count_arguments, _check_count),
    "prec_chol": (_prec_chol_arguments, _check_prec_chol),
}


def test_every_kernel_has_cases():
    """A kernel added to the table needs a benchmark: cases.KERNEL_TARGETS and ARGUMENTS."""
    missing = sorted(set(TABLE) - set(ARGUMENTS))
    assert not missing, f"kernels without an argument builder in ARGUMENTS: {missing}"
    missing = sorted(set(TABLE) - {case.name for case in KERNEL_CASES})
    assert not missing, f"kernels without cases in cases.KERNEL_TARGETS: {missing}"
    unknown = sorted(set(ARGUMENTS) - set(TABLE))
    assert not unknown, f"ARGUMENTS names kernels that are not in the table: {unknown}"


@pytest.mark.parametrize("case", [case.param() for case in KERNEL_CASES])
def test_kernel(benchmark, case, problem):
    with using_backend(case.runner):
        kernels = get_kernels()
    assert kernels.name == case.runner
    kernel = getattr(kernels, case.name)

    n, d = problem.X.shape
    k = problem.means_init.shape[0]
    chunk_size, n_chunks = _config.chunk_layout(n)
    build, check = ARGUMENTS[case.name]
    values, buffers = build(case, problem, chunk_size, n_chunks)
    args = [values[name] for name in TABLE[case.name]]

    benchmark.group = case.group
    flops = kernel_flops(case.name, n, d, k, case.hard)
    benchmark.extra_info.update(
        kernel=case.name, backend=case.runner, n=n, d=d, k=k, dtype=case.dtype,
        hard=case.hard, threads=get_num_threads(), chunk_size=chunk_size, flops=flops,
    )
    warm_up(benchmark, kernel, *args)
    benchmark(kernel, *args)
    check(case, problem, values, buffers)

    seconds = median_seconds(benchmark)
    if seconds is not None:
        if case.name == "prec_chol":  # factors a stack of k matrices, not rows
            benchmark.extra_info["matrices_per_s"] = k / seconds
        else:
            benchmark.extra_info["points_per_s"] = n / seconds
        benchmark.extra_info["gflops"] = flops / seconds / 1e9
