"""One thread and many threads give the same bits, model by model.

``test_kernels.py`` checks the kernels themselves (and one GaussianMixture fit)
with 1 and 2 threads.  Here every model is fitted end to end, initialisation
included (k-means++, random draws, the K-means run inside GaussianMixture's
"kmeans" init, several ``n_init`` runs), on each compiled backend (numba and
cython), once with one thread and once with all of them, and every fitted
attribute and prediction must be equal with ``np.array_equal``: float32 and
float64, with and without NaN.

The data have many more chunks than there are threads (see
``fastem._config.chunk_layout``), so the threads really split the rows.
"""

import warnings

import numpy as np
import pytest

import fastem
from fastem import _config

from testing_utils import COMPILED_BACKENDS, backend_threads

N, D, K = 6000, 5, 4
COV_TYPES = ("full", "tied", "diag", "spherical")


@pytest.fixture(params=COMPILED_BACKENDS)
def compiled(request, monkeypatch):
    """(backend name, its thread count when fastem asks for every core).

    Every kernel call goes to the thread pool, however little its work
    (``fastem._config.SERIAL_WORK``): the threads must split the rows."""
    many = backend_threads(request.param)
    if many < 2:
        pytest.skip(f"{request.param} runs a single thread on this machine")
    monkeypatch.setattr(_config, "SERIAL_WORK", 0)
    return request.param, many


@pytest.fixture(scope="module")
def data():
    """Gaussian blobs and 0/1 data, complete and with 10 % NaN, in C order."""
    rng = np.random.default_rng(2024)
    centers = rng.normal(scale=3.0, size=(K, D))
    X = centers[rng.integers(K, size=N)] + rng.normal(size=(N, D))
    B = (rng.uniform(size=(N, 8)) < rng.uniform(0.1, 0.9, size=(K, 8))[
        rng.integers(K, size=N)]).astype(np.float64)
    out = {}
    for name, values in (("gauss", X), ("binary", B)):
        missing = values.copy()
        missing[rng.uniform(size=values.shape) < 0.1] = np.nan
        missing[17] = np.nan  # a row with nothing observed
        out[name, False] = values
        out[name, True] = missing
    return out


def _fitted(estimator):
    return {name: value for name, value in vars(estimator).items()
            if name.endswith("_") and not name.startswith("_")}


def _outputs(estimator, X, sample_weight):
    """Every fitted attribute and every prediction of a fresh fit of X."""
    estimator.fit(X, sample_weight=sample_weight)
    out = _fitted(estimator)
    out["predict"] = estimator.predict(X)
    if isinstance(estimator, fastem.KMeans):
        out["transform"] = estimator.transform(X)
        out["score"] = estimator.score(X)
    else:
        out["predict_proba"] = estimator.predict_proba(X)
        out["score_samples"] = estimator.score_samples(X)
        out["fit_predict"] = estimator.fit_predict(X, sample_weight=sample_weight)
    if isinstance(estimator, fastem.GaussianMixture):
        out["impute"] = estimator.impute(X)
    return out


def _assert_same_bits(one, other, between):
    """Every output of ``one`` and ``other`` the same bits; ``between`` names
    what differs between the two runs, for the message."""
    assert one.keys() == other.keys()
    for name in one:
        a, b = np.asarray(one[name]), np.asarray(other[name])
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), (
            f"{name} differs between {between}")


def _check(compiled, make, X, sample_weight=None):
    name, many = compiled
    assert _config.chunk_layout(X.shape[0])[1] >= 4 * many  # several chunks a thread
    results = {}
    with fastem.using_backend(name), warnings.catch_warnings():
        warnings.simplefilter("ignore", fastem.ConvergenceWarning)
        for threads in (1, many):
            fastem.set_num_threads(threads)
            results[threads] = _outputs(make(), X, sample_weight)
            if name == "numba":
                import numba

                assert numba.get_num_threads() == threads
    _assert_same_bits(results[1], results[many], f"1 and {many} threads")
    return results[1]


DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32])
NAN = pytest.mark.parametrize("nan", [False, True], ids=["complete", "nan"])


@DTYPES
@NAN
@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_kmeans(restore_config, compiled, data, dtype, nan, init):
    X = data["gauss", nan].astype(dtype)
    out = _check(compiled, lambda: fastem.KMeans(K, init=init, n_init=3, random_state=0), X)
    assert out["cluster_centers_"].dtype == np.float64


@DTYPES
@NAN
@pytest.mark.parametrize("init", ["kmeans", "random"])
@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_gaussian_mixture(restore_config, compiled, data, dtype, nan, init, cov_type):
    X = data["gauss", nan].astype(dtype)
    _check(compiled, lambda: fastem.GaussianMixture(
        K, covariance_type=cov_type, init_params=init, n_init=2, max_iter=40,
        random_state=0), X)


@DTYPES
@NAN
@pytest.mark.parametrize("init", ["kmeans", "random"])
def test_bernoulli_mixture(restore_config, compiled, data, dtype, nan, init):
    X = data["binary", nan].astype(dtype)
    _check(compiled, lambda: fastem.BernoulliMixture(
        K, init_params=init, n_init=2, max_iter=40, random_state=0), X)


@pytest.mark.parametrize("model", ["kmeans", "full", "tied", "bernoulli"])
def test_with_sample_weight_and_other_inits(restore_config, compiled, data, model):
    """Weighted fits and the seed-row initialisations, float64 with NaN."""
    w = np.random.default_rng(5).uniform(0.0, 3.0, size=N)
    if model == "kmeans":
        _check(compiled, lambda: fastem.KMeans(K, n_init=2, random_state=1),
               data["gauss", True], w)
    elif model == "bernoulli":
        _check(compiled, lambda: fastem.BernoulliMixture(K, init_params="k-means++", n_init=2,
                                                         random_state=1),
               data["binary", True], w)
    else:
        for init in ("k-means++", "random_from_data"):
            _check(compiled, lambda: fastem.GaussianMixture(
                K, covariance_type=model, init_params=init, max_iter=40, random_state=1),
                data["gauss", True], w)


def test_kmeans_plusplus(restore_config, compiled, data):
    name, many = compiled
    X = data["gauss", False]
    seeds = {}
    with fastem.using_backend(name):
        for threads in (1, many):
            fastem.set_num_threads(threads)
            seeds[threads] = fastem.kmeans_plusplus(X, 8, random_state=3)
    np.testing.assert_array_equal(seeds[1][0], seeds[many][0])
    np.testing.assert_array_equal(seeds[1][1], seeds[many][1])


@DTYPES
@pytest.mark.parametrize("cov_type, d", [("full", 11), ("tied", 11), ("full", 30)])
def test_dense_gaussian_mixture_with_more_features(restore_config, compiled, dtype, cov_type, d):
    """The data above have 5 features; numba's full and tied kernels take another
    path (register tiles and staged moments) above 6, checked here with 11, and
    its soft full E-step forms the products in its tiles from 20 on with few
    components (``_PAIRS_FUSED_D``), checked with 30."""
    rng = np.random.default_rng(11)
    centers = rng.normal(scale=3.0, size=(K + 1, d))
    X = (centers[rng.integers(K + 1, size=N)] + rng.normal(size=(N, d))).astype(dtype)
    _check(compiled, lambda: fastem.GaussianMixture(
        K + 1, covariance_type=cov_type, n_init=2, max_iter=40, random_state=0), X)


def _placed(X, offset):
    """A copy of C-ordered X whose first element lies ``offset`` bytes past a
    64-byte boundary (numpy's large arrays start 16 bytes past a page)."""
    buf = np.empty(X.nbytes + 128, dtype=np.uint8)
    start = (-buf.ctypes.data) % 64 + offset
    out = buf[start:start + X.nbytes].view(X.dtype).reshape(X.shape)
    out[...] = X
    assert out.ctypes.data % 64 == offset
    return out


@pytest.mark.parametrize("model", ["kmeans", "diag", "full"])
def test_results_do_not_depend_on_where_x_starts(backend, model):
    """The kernels read rows that need not start on a cache line (the prefetch
    hints cover every line a row spans, and vector loads are unaligned): the
    same fit of the same values placed at 0, 16, 32 and 48 bytes past a
    64-byte boundary gives the same bits.  K-means on 16 float32 features
    (rows of 64 bytes) takes the bounded kernel with kept sums."""
    rng = np.random.default_rng(5)
    if model == "kmeans":
        centers = rng.normal(scale=2.0, size=(8, 16))
        X = (centers[rng.integers(8, size=4000)] + rng.normal(size=(4000, 16))).astype(np.float32)

        def make():
            return fastem.KMeans(8, init=np.asarray(X[:8], dtype=np.float64), n_init=1,
                                 max_iter=20, tol=0.0)
    else:
        centers = rng.normal(scale=2.0, size=(4, 8))
        X = centers[rng.integers(4, size=4000)] + rng.normal(size=(4000, 8))

        def make():
            return fastem.GaussianMixture(4, covariance_type=model, max_iter=15, tol=0.0,
                                          random_state=0)
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastem.ConvergenceWarning)
        for offset in (0, 16, 32, 48):
            Xp = _placed(X, offset)
            results.append(_outputs(make(), Xp, None))
            np.testing.assert_array_equal(Xp, X)  # the input is not modified
    for offset, other in zip((16, 32, 48), results[1:]):
        _assert_same_bits(results[0], other, f"X on a line and X {offset} bytes past one")
