"""fastem.KMeans against scikit-learn's lloyd K-means, and K-means as hard EM."""

import warnings

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.base import clone
from sklearn.cluster import KMeans as SkKMeans
from sklearn.cluster import kmeans_plusplus as sk_kmeans_plusplus
from sklearn.datasets import make_blobs
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import fastem
from fastem import ConvergenceWarning, GaussianMixture, KMeans

from testing_utils import rel_err

TOL = 1e-10  # centres and inertia vs scikit-learn (observed: ~1e-15)


@pytest.fixture(scope="module")
def blobs():
    return make_blobs(3000, 5, centers=6, cluster_std=1.5, random_state=0)[0]


@pytest.fixture(params=["iris", "wine", "digits", "blobs"])
def dataset(request, iris, wine, digits, blobs):
    X, k = {"iris": (iris, 3), "wine": (wine, 3), "digits": (digits, 10),
            "blobs": (blobs, 6)}[request.param]
    return request.param, X, k


def noisy_rows(X, k, seed):
    """Initial centres: random rows moved off the data grid.

    iris and digits lie on a grid, so centres that are data rows give exactly
    tied distances, which each library breaks its own way; a small shift
    removes the ties without changing the problem.
    """
    rng = np.random.default_rng(seed)
    rows = rng.choice(X.shape[0], size=k, replace=False)
    return X[rows] + 1e-3 * X.std(axis=0) * rng.standard_normal((k, X.shape[1]))


def sk_lloyd(k, **kwargs):
    return SkKMeans(k, algorithm="lloyd", **kwargs)


def assert_same_kmeans(ours, theirs):
    np.testing.assert_array_equal(ours.labels_, theirs.labels_)
    assert rel_err(ours.cluster_centers_, theirs.cluster_centers_) < TOL
    assert ours.inertia_ == pytest.approx(theirs.inertia_, rel=TOL)
    assert ours.n_iter_ == theirs.n_iter_


# ---------------------------------------------------------------- scikit-learn oracle
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_sklearn_at_the_same_init(backend, dataset, seed):
    _, X, k = dataset
    init = noisy_rows(X, k, seed)
    theirs = sk_lloyd(k, init=init, n_init=1).fit(X)
    ours = KMeans(k, init=init, n_init=1).fit(X)
    assert theirs.n_iter_ > 2
    assert_same_kmeans(ours, theirs)
    assert ours.cluster_centers_.dtype == np.float64
    np.testing.assert_array_equal(ours.fit_predict(X), ours.labels_)


@pytest.mark.parametrize("init", ["k-means++", "random"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_with_the_same_random_state(backend, iris, wine, blobs, init, seed):
    """Seeding draws from the RNG as scikit-learn does: the same runs, the same best."""
    for X, k in ((iris, 3), (wine, 3), (blobs, 6)):
        theirs = sk_lloyd(k, init=init, n_init=3, random_state=seed).fit(X)
        ours = KMeans(k, init=init, n_init=3, random_state=seed).fit(X)
        assert_same_kmeans(ours, theirs)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_sklearn_kmeans_plusplus_on_digits(backend, digits, seed):
    theirs = sk_lloyd(10, random_state=seed).fit(digits)
    ours = KMeans(10, random_state=seed).fit(digits)
    assert_same_kmeans(ours, theirs)


@pytest.mark.parametrize("weighted", [False, True])
def test_kmeans_plusplus_matches_sklearn(backend, wine, blobs, weighted):
    for X, k in ((wine, 3), (blobs, 6)):
        w = np.random.default_rng(0).integers(1, 4, len(X)).astype(float) if weighted else None
        for seed in range(3):
            c_ours, i_ours = fastem.kmeans_plusplus(X, k, sample_weight=w, random_state=seed)
            c_theirs, i_theirs = sk_kmeans_plusplus(X, k, sample_weight=w, random_state=seed)
            np.testing.assert_array_equal(i_ours, i_theirs)
            np.testing.assert_array_equal(c_ours, c_theirs)
            np.testing.assert_array_equal(c_ours, X[i_ours])


def _far_init(X, k, seed):
    init = noisy_rows(X, k, seed)
    init[-1] = X.max(axis=0) + 100 * X.std(axis=0)  # nearest to no point at all
    return init


@pytest.mark.parametrize("weighted", [False, True])
def test_empty_cluster_is_relocated_like_sklearn(backend, iris, blobs, weighted):
    for X, k in ((iris, 3), (blobs, 6)):
        init = _far_init(X, k, 0)
        d2 = cdist(X, init, "sqeuclidean")
        assert not np.any(np.argmin(d2, axis=1) == k - 1)  # really empty at iteration 1
        w = np.random.default_rng(1).integers(1, 5, len(X)).astype(float) if weighted else None
        theirs = sk_lloyd(k, init=init, n_init=1).fit(X, sample_weight=w)
        ours = KMeans(k, init=init, n_init=1).fit(X, sample_weight=w)
        assert_same_kmeans(ours, theirs)
        assert np.unique(ours.labels_).size == k


def test_relocation_takes_the_farthest_point(backend, iris):
    """One iteration by hand: the empty centre jumps to the farthest point."""
    init = _far_init(iris, 3, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = KMeans(3, init=init, n_init=1, max_iter=1).fit(iris)
    labels = np.argmin(cdist(iris, init[:2], "sqeuclidean"), axis=1)
    dist = np.sum((iris - init[labels]) ** 2, axis=1)
    far = np.argmax(dist)
    expected = np.empty((3, 4))
    for j in range(2):
        members = (labels == j) & (np.arange(len(iris)) != far)
        expected[j] = iris[members].mean(axis=0)
    expected[2] = iris[far]
    assert rel_err(ours.cluster_centers_, expected) < 1e-13


def test_sample_weight_equals_repeated_rows(backend, wine, blobs):
    for X, k in ((wine, 3), (blobs, 6)):
        counts = np.random.default_rng(2).integers(0, 4, len(X))
        init = noisy_rows(X, k, 3)
        weighted = KMeans(k, init=init, n_init=1).fit(X, sample_weight=counts)
        repeated = KMeans(k, init=init, n_init=1).fit(np.repeat(X, counts, axis=0))
        assert rel_err(weighted.cluster_centers_, repeated.cluster_centers_) < 1e-10
        assert weighted.inertia_ == pytest.approx(repeated.inertia_, rel=1e-10)
        assert weighted.n_iter_ == repeated.n_iter_
        np.testing.assert_array_equal(np.repeat(weighted.labels_, counts), repeated.labels_)
        theirs = sk_lloyd(k, init=init, n_init=1).fit(X, sample_weight=counts)
        assert_same_kmeans(weighted, theirs)


def test_inference_matches_sklearn(backend, wine):
    init = noisy_rows(wine, 3, 4)
    ours = KMeans(3, init=init, n_init=1).fit(wine)
    theirs = sk_lloyd(3, init=init, n_init=1).fit(wine)
    X_new = wine[::3] * 1.01
    np.testing.assert_array_equal(ours.predict(X_new), theirs.predict(X_new))
    # scikit-learn's transform uses |x|^2 - 2 x.c + |c|^2 and loses digits to
    # cancellation; scipy's cdist forms the differences, as fastem does
    exact = cdist(X_new, ours.cluster_centers_)
    np.testing.assert_allclose(ours.transform(X_new), exact, rtol=1e-13)
    np.testing.assert_allclose(ours.transform(X_new), theirs.transform(X_new), rtol=1e-6)
    np.testing.assert_allclose(KMeans(3, init=init, n_init=1).fit_transform(wine),
                               cdist(wine, ours.cluster_centers_), rtol=1e-13)
    w = np.linspace(0.0, 3.0, len(X_new))
    assert ours.score(X_new) == pytest.approx(theirs.score(X_new), rel=1e-10)
    assert ours.score(X_new, sample_weight=w) == pytest.approx(
        theirs.score(X_new, sample_weight=w), rel=1e-10)
    assert ours.score(wine) == pytest.approx(-ours.inertia_, rel=1e-12)
    assert ours.score(X_new) == pytest.approx(-np.sum(exact.min(axis=1) ** 2), rel=1e-12)


def hand_lloyd(X, C, max_iter=300):
    """Lloyd's algorithm with the strict stopping rule, written out (no empty clusters)."""
    previous = np.full(len(X), -1)
    for n_iter in range(1, max_iter + 1):
        labels = np.argmin(cdist(X, C, "sqeuclidean"), axis=1)
        C = np.array([X[labels == j].mean(axis=0) for j in range(len(C))])
        if np.array_equal(labels, previous):
            break
        previous = labels
    return labels, C, n_iter


def test_stops_when_labels_stop_changing(backend, blobs, wine):
    for X, k in ((blobs, 6), (wine, 3)):
        init = noisy_rows(X, k, 5)
        labels, centers, n_iter = hand_lloyd(X, init)
        ours = KMeans(k, init=init, n_init=1, tol=0).fit(X)
        assert ours.n_iter_ == n_iter
        np.testing.assert_array_equal(ours.labels_, labels)
        assert rel_err(ours.cluster_centers_, centers) < 1e-13
        # restarted from its own result: one pass to assign, one to see nothing moved
        again = KMeans(k, init=ours.cluster_centers_, n_init=1, tol=0).fit(X)
        assert again.n_iter_ == 2
        np.testing.assert_array_equal(again.labels_, ours.labels_)
        assert rel_err(again.cluster_centers_, ours.cluster_centers_) < 1e-14


def test_tol_stops_on_small_centre_shift(backend, blobs):
    init = noisy_rows(blobs, 6, 5)
    strict = KMeans(6, init=init, n_init=1, tol=0).fit(blobs)
    loose = KMeans(6, init=init, n_init=1, tol=1e-2).fit(blobs)
    theirs = sk_lloyd(6, init=init, n_init=1, tol=1e-2).fit(blobs)
    assert loose.n_iter_ < strict.n_iter_
    assert_same_kmeans(loose, theirs)


def test_duplicate_points_warn_about_fewer_clusters(backend):
    X = np.repeat([[0.0, 0.0], [5.0, 5.0]], 10, axis=0)
    with pytest.warns(ConvergenceWarning, match=r"Number of distinct clusters \(2\)"):
        KMeans(3, random_state=0, n_init=1).fit(X)


def test_explicit_init_with_n_init_warns_and_runs_once(backend, iris):
    init = noisy_rows(iris, 3, 0)
    with pytest.warns(RuntimeWarning, match="performing only one init"):
        model = KMeans(3, init=init, n_init=5).fit(iris)
    single = KMeans(3, init=init, n_init=1).fit(iris)
    np.testing.assert_array_equal(model.cluster_centers_, single.cluster_centers_)


def test_explicit_init_with_default_n_init_runs_once(backend, iris):
    """n_init="auto" means one run for an array init, as in scikit-learn."""
    init = noisy_rows(iris, 3, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "performing only one init" warning either
        model = KMeans(3, init=init).fit(iris)
    single = KMeans(3, init=init, n_init=1).fit(iris)
    np.testing.assert_array_equal(model.cluster_centers_, single.cluster_centers_)


# ---------------------------------------------------------------- K-means as hard EM
def _restricted_gmm(k, C0, max_iter):
    return GaussianMixture(
        k, covariance_type="spherical", assignment="hard",
        fixed=("weights", "covariances"), weights_init=np.full(k, 1.0 / k),
        means_init=C0, precisions_init=np.ones(k), max_iter=max_iter, tol=0)


@pytest.mark.parametrize("max_iter", [1, 3, 50])
def test_kmeans_is_hard_em_on_a_restricted_gaussian_mixture(backend, wine, blobs, max_iter):
    """Seed (a): identity covariances, weights 1/k, classification E-step."""
    for X, k in ((wine, 3), (blobs, 6)):
        n, d = X.shape
        C0 = noisy_rows(X, k, 6)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            km = KMeans(k, init=C0, n_init=1, max_iter=max_iter, tol=0).fit(X)
            gmm = _restricted_gmm(k, C0, max_iter).fit(X)
        # K-means stops at strict convergence, where more iterations change nothing
        assert rel_err(gmm.means_, km.cluster_centers_) < 1e-12
        np.testing.assert_array_equal(gmm.predict(X), km.labels_)
        # lower bound of iteration t+1 (at the centres after t iterations):
        # mean of max_k log(1/k N(x; c_k, I)) = log(1/k) - d/2 log(2 pi) - inertia_t / (2n)
        inertias = []
        centers = C0
        for t in range(len(gmm.lower_bounds_)):
            d2 = cdist(X, centers, "sqeuclidean")
            inertias.append(d2.min(axis=1).sum())
            labels = d2.argmin(axis=1)
            centers = np.array([X[labels == j].mean(axis=0) for j in range(k)])
        if max_iter <= 3:  # and the inertia after t iterations is scikit-learn's
            for t in range(1, max_iter):
                assert inertias[t] == pytest.approx(
                    sk_lloyd(k, init=C0, n_init=1, max_iter=t, tol=0).fit(X).inertia_, rel=1e-12)
        expected = np.log(1.0 / k) - 0.5 * d * np.log(2 * np.pi) - np.array(inertias) / (2 * n)
        np.testing.assert_allclose(gmm.lower_bounds_, expected, rtol=1e-12)
        # and the inertia of the final centres is that of the K-means fit
        if km.n_iter_ < max_iter:
            assert gmm.lower_bound_ == pytest.approx(
                np.log(1.0 / k) - 0.5 * d * np.log(2 * np.pi) - km.inertia_ / (2 * n),
                rel=1e-12)


def _equal_weight_spherical(k, means, variance, **kwargs):
    return GaussianMixture(k, covariance_type="spherical", fixed=("weights", "covariances"),
                           weights_init=np.full(k, 1.0 / k), means_init=means,
                           precisions_init=np.full(k, 1.0 / variance), **kwargs)


def test_posterior_tends_to_the_kmeans_assignment_as_the_variance_vanishes(backend, wine):
    """Seed (b), E-step: r_ik = softmax_k(-|x_i - c_k|^2 / (2 s^2)) -> one-hot."""
    X = StandardScaler().fit_transform(wine)
    km = KMeans(3, init=noisy_rows(X, 3, 7), n_init=1, tol=0).fit(X)
    onehot = np.eye(3)[km.labels_]
    d2 = cdist(X, km.cluster_centers_, "sqeuclidean")
    gaps = []
    for variance in (10.0, 1.0, 0.1, 0.01, 1e-3):
        # max_iter=0: the model keeps its initial parameters (the K-means centres)
        model = _equal_weight_spherical(3, km.cluster_centers_, variance, max_iter=0).fit(X)
        proba = model.predict_proba(X)
        logits = -d2 / (2 * variance)
        expected = np.exp(logits - logits.max(axis=1)[:, None])
        expected /= expected.sum(axis=1)[:, None]
        np.testing.assert_allclose(proba, expected, rtol=1e-9, atol=1e-300)
        np.testing.assert_array_equal(model.predict(X), km.labels_)
        gaps.append(np.abs(proba - onehot).max())
    assert all(later < earlier for earlier, later in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 1e-12


@pytest.mark.parametrize("variance", [1e-2, 1e-4])
def test_soft_em_converges_to_kmeans_as_the_variance_vanishes(backend, wine, variance):
    """Seed (b), EM: from the same start, soft EM with tiny s^2 ends at the K-means centres."""
    X = StandardScaler().fit_transform(wine)
    C0 = noisy_rows(X, 3, 7)
    km = KMeans(3, init=C0, n_init=1, tol=0).fit(X)
    model = _equal_weight_spherical(3, C0, variance, max_iter=500, tol=1e-12).fit(X)
    assert model.converged_
    np.testing.assert_allclose(model.covariances_, variance, rtol=1e-15)
    np.testing.assert_array_equal(model.predict(X), km.labels_)
    # responsibilities differ from one-hot by exp(-gap / (2 s^2)), which for
    # s^2 = 1e-2 on this data is at most ~1e-12 and moves the means that much
    assert rel_err(model.means_, km.cluster_centers_) < 1e-10
    np.testing.assert_allclose(model.predict_proba(X), np.eye(3)[km.labels_], atol=1e-11)


# ---------------------------------------------------------------- invariances and API
def test_float32_input(backend, blobs):
    X32 = blobs.astype(np.float32)
    copy = X32.copy()
    init = noisy_rows(blobs, 6, 8)
    ours32 = KMeans(6, init=init, n_init=1).fit(X32)
    np.testing.assert_array_equal(X32, copy)
    assert X32.dtype == np.float32 and ours32.cluster_centers_.dtype == np.float64
    # float32 values are read exactly and summed in float64: the fit equals the
    # float64 fit of the same rounded values
    ours64 = KMeans(6, init=init, n_init=1).fit(X32.astype(np.float64))
    np.testing.assert_array_equal(ours32.labels_, ours64.labels_)
    assert rel_err(ours32.cluster_centers_, ours64.cluster_centers_) < 1e-13
    assert ours32.inertia_ == pytest.approx(ours64.inertia_, rel=1e-13)


def test_c_and_fortran_order(backend, wine):
    init = noisy_rows(wine, 3, 9)
    c = KMeans(3, init=init, n_init=1).fit(wine)
    f = KMeans(3, init=init, n_init=1).fit(np.asfortranarray(wine))
    np.testing.assert_array_equal(c.labels_, f.labels_)
    np.testing.assert_array_equal(c.cluster_centers_, f.cluster_centers_)
    assert c.inertia_ == f.inertia_
    np.testing.assert_array_equal(c.transform(wine), c.transform(np.asfortranarray(wine)))
    # with k-means++ seeding
    c = KMeans(3, random_state=0).fit(wine)
    f = KMeans(3, random_state=0).fit(np.asfortranarray(wine))
    np.testing.assert_array_equal(c.labels_, f.labels_)
    assert rel_err(f.cluster_centers_, c.cluster_centers_) < 1e-14


def test_inputs_are_never_modified(backend, wine):
    X = wine.copy()
    init = noisy_rows(wine, 3, 10)
    w = np.linspace(0.0, 1.0, len(X))
    saved = (X.copy(), init.copy(), w.copy())
    model = KMeans(3, init=init, n_init=1).fit(X, sample_weight=w)
    model.predict(X)
    model.transform(X)
    model.score(X, sample_weight=w)
    KMeans(3, init="random", n_init=2, random_state=0).fit_transform(X, sample_weight=w)
    fastem.kmeans_plusplus(X, 3, sample_weight=w, random_state=0)
    for a, b in zip((X, init, w), saved):
        np.testing.assert_array_equal(a, b)
    assert not np.shares_memory(model.cluster_centers_, init)


def test_random_state_instance_and_reproducibility(backend, blobs):
    a = KMeans(6, random_state=3, n_init=2).fit(blobs)
    b = KMeans(6, random_state=np.random.RandomState(3), n_init=2).fit(blobs)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert KMeans(6, init="random", random_state=0).fit(blobs).n_iter_ >= 1


def test_clone_params_and_pipeline(backend, wine):
    model = KMeans(4, init="random", n_init=3, tol=1e-5, random_state=2)
    twin = clone(model)
    assert twin.get_params() == model.get_params()
    assert set(model.get_params()) == {"n_clusters", "init", "n_init", "max_iter", "tol",
                                       "random_state", "verbose"}
    model.set_params(n_clusters=3)
    assert model.n_clusters == 3
    with pytest.raises(ValueError, match="invalid parameter 'n_components'"):
        model.set_params(n_components=3)
    pipe = Pipeline([("scale", StandardScaler()), ("km", KMeans(3, random_state=0))])
    labels = pipe.fit(wine).predict(wine)
    scaled = StandardScaler().fit_transform(wine)
    direct = KMeans(3, random_state=0).fit(scaled)
    np.testing.assert_array_equal(labels, direct.labels_)
    np.testing.assert_allclose(pipe.transform(wine), direct.transform(scaled), rtol=1e-14)
    assert pipe.score(wine) == pytest.approx(-direct.inertia_, rel=1e-12)


def test_verbose_reports_inertia(backend, iris, capsys):
    KMeans(3, random_state=0, verbose=2).fit(iris)
    assert "inertia" in capsys.readouterr().out
