"""Model fits, fastem next to scikit-learn in one benchmark group.

Every fit starts from the same fixed parameters (``cases.Problem``) and runs
exactly ``MAX_ITER`` iterations (``tol=0``), so the time per iteration of
fastem and scikit-learn can be compared within one run; the end-of-run table
(``conftest.py``) prints the ratios.  KMeans may stop earlier when no label
changes, by the same rule in both libraries: ``n_iter`` is recorded.

scikit-learn's GaussianMixture computes initial parameters from
responsibilities even when ``weights_init``, ``means_init`` and
``precisions_init`` are all given; ``init_params="random_from_data"`` makes
that step cheapest, but it still costs about one M-step and is included in
its time.  fastem skips it when every parameter is given.

Under ``--benchmark-disable`` (the CI smoke run) each fit runs once with
``SMOKE_MAX_ITER`` iterations: enough to pass through every code path of the
loop (the first iteration and the later ones) at a third of the cost.

BernoulliMixture has no scikit-learn peer; its groups hold one dense
multiply ``X @ logit.T`` instead (``test_dense_multiply``, numpy's BLAS with
its default threads, output preallocated), and the end-of-run table prints
fastem's time per iteration over the multiply's.

extra_info: ``n_iter``, ``inertia`` (KMeans) or ``lower_bound``,
``points_iter_per_s`` = n * n_iter / median, ``s_per_iter``, ``flops_per_iter``
and ``gflops`` = flops_per_iter * n_iter / median (nominal flops of
``fastem._bench.model_flops``, the same for every runner), and the fastem
backend.  The multiply records ``points_per_s`` and ``gflops`` (2 n k d flops).
"""

import contextlib
from functools import partial

import numpy as np
import pytest
import sklearn.cluster
import sklearn.mixture

import fastem
from cases import MODEL_CASES, MULTIPLY_CASES, median_seconds, warm_up
from fastem._bench import every_call_pooled, model_flops

MAX_ITER = 10
SMOKE_MAX_ITER = 3
WARM_UP_ROWS = 1024

pytestmark = pytest.mark.filterwarnings(
    "ignore::fastem.ConvergenceWarning",
    "ignore::sklearn.exceptions.ConvergenceWarning",
)


def _kmeans(module, problem, variant, max_iter, **options):
    k = problem.means_init.shape[0]
    return module.KMeans(n_clusters=k, init=problem.means_init, n_init=1,
                         max_iter=max_iter, tol=0.0, **options)


def _gaussian_mixture(module, problem, covariance_type, max_iter, **options):
    k = problem.means_init.shape[0]
    return module.GaussianMixture(
        n_components=k, covariance_type=covariance_type, tol=0.0, max_iter=max_iter,
        weights_init=problem.weights_init, means_init=problem.means_init,
        precisions_init=problem.precisions_init(covariance_type), **options)


def _bernoulli_mixture(module, problem, variant, max_iter):
    k = problem.means_init.shape[0]
    return module.BernoulliMixture(n_components=k, tol=0.0, max_iter=max_iter,
                                   weights_init=problem.weights_init,
                                   means_init=problem.means_init)


# (model name, runner) -> builder(problem, variant, max_iter) -> unfitted estimator
BUILDERS = {
    ("KMeans", "fastem"): partial(_kmeans, fastem),
    ("KMeans", "sklearn"): partial(_kmeans, sklearn.cluster, algorithm="lloyd"),
    ("GaussianMixture", "fastem"): partial(_gaussian_mixture, fastem),
    ("GaussianMixture", "sklearn"): partial(
        _gaussian_mixture, sklearn.mixture, init_params="random_from_data", random_state=0),
    ("BernoulliMixture", "fastem"): partial(_bernoulli_mixture, fastem),
}


def test_every_model_case_has_a_builder():
    assert {(case.name, case.runner) for case in MODEL_CASES} <= set(BUILDERS)


@pytest.mark.parametrize("case", [case.param() for case in MODEL_CASES])
def test_fit(benchmark, case, problem, record_model_timing):
    max_iter = MAX_ITER if benchmark.enabled else SMOKE_MAX_ITER

    def build():
        return BUILDERS[case.name, case.runner](problem, case.variant, max_iter)

    model = build()
    # the benchmark runs what it names: this library's class of this name
    assert type(model).__name__ == case.name
    assert type(model).__module__.split(".")[0] == case.runner

    X = problem.X
    n, d = X.shape
    benchmark.group = case.group
    benchmark.extra_info.update(model=case.label, runner=case.runner, n=n, d=d,
                                k=problem.means_init.shape[0], dtype=case.dtype,
                                max_iter=max_iter)
    context = (fastem.using_backend(case.backend) if case.backend is not None
               else contextlib.nullcontext())
    with context:
        if case.runner == "fastem":
            assert fastem.get_backend() == case.backend
            benchmark.extra_info.update(backend=fastem.get_backend(),
                                        threads=fastem.get_num_threads())
        warm_up(benchmark, build().fit, X[:WARM_UP_ROWS])
        if case.runner == "fastem":
            # the thread pool's driver, which calls on the whole of X take where
            # the slice's ran on the calling thread (see fastem._bench.warm_up)
            with every_call_pooled():
                warm_up(benchmark, build().fit, X[:WARM_UP_ROWS])
        fitted = benchmark(model.fit, X)

    n_iter = int(fitted.n_iter_)
    benchmark.extra_info["n_iter"] = n_iter
    if case.name == "KMeans":
        benchmark.extra_info["inertia"] = float(fitted.inertia_)
    else:
        benchmark.extra_info["lower_bound"] = float(fitted.lower_bound_)

    k = problem.means_init.shape[0]
    flops = model_flops(case.name, case.variant, n, d, k)
    benchmark.extra_info["flops_per_iter"] = flops
    seconds = median_seconds(benchmark)
    if seconds is not None:
        benchmark.extra_info["points_iter_per_s"] = n * n_iter / seconds
        benchmark.extra_info["s_per_iter"] = seconds / n_iter
        benchmark.extra_info["gflops"] = flops * n_iter / seconds / 1e9
        record_model_timing(case, seconds / n_iter)


@pytest.mark.parametrize("case", [case.param() for case in MULTIPLY_CASES])
def test_dense_multiply(benchmark, case, problem, record_model_timing):
    """``X @ logit.T`` for the BernoulliMixture of the same group: its E-step's floor."""
    X = problem.X
    n, d = X.shape
    probs = problem.means_init
    logit = (np.log(probs) - np.log1p(-probs)).astype(X.dtype)
    k = logit.shape[0]
    out = np.empty((n, k), dtype=X.dtype)

    benchmark.group = case.group
    flops = 2 * n * k * d
    benchmark.extra_info.update(model="X @ logit.T", runner=case.runner, n=n, d=d, k=k,
                                dtype=case.dtype, flops=flops)
    warm_up(benchmark, np.matmul, X[:WARM_UP_ROWS], logit.T)
    benchmark(np.matmul, X, logit.T, out=out)
    rows = [0, n - 1]
    tolerance = 1e-4 if X.dtype == np.float32 else 1e-10
    np.testing.assert_allclose(out[rows], X[rows].astype(np.float64) @ logit.T.astype(np.float64),
                               rtol=tolerance, atol=tolerance)

    seconds = median_seconds(benchmark)
    if seconds is not None:
        benchmark.extra_info["points_per_s"] = n / seconds
        benchmark.extra_info["gflops"] = flops / seconds / 1e9
        record_model_timing(case, seconds)
