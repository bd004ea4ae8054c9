"""Missing values (NaN entries, missing at random) in every model and kernel.

Oracles: the slow references of ``naive_missing.py`` (loops over points,
covariance submatrices and scipy.stats, no fastem code), scipy.stats.norm for
rows with one observed coordinate, the known parameters of generated data, and
fastem's own complete-data path where the data have no NaN.
"""

import warnings

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, norm
from sklearn.cluster import KMeans as SkKMeans

from fastem import BernoulliMixture, ConvergenceWarning, GaussianMixture, KMeans
from fastem import backends, kmeans_plusplus
from fastem.backends import _table

import naive_missing as naive
from testing_utils import COMPILED_BACKENDS, rel_err

COV_TYPES = ("full", "tied", "diag", "spherical")
REF_TOL = 1e-8      # fastem vs the naive references (observed: ~1e-14)
KERNEL_TOL = 1e-12  # compiled vs numpy kernels: the same float64 sums in another order
N_ITER = 8          # EM iterations compared with the references
REG_COVAR = 1e-4    # visible in the covariances (~0.1), so a misplaced one shows
FITTED = ("weights_", "means_", "covariances_")


# ---------------------------------------------------------------- data
def hide(X, fraction, rng):
    """A float64 copy of X with each entry NaN with probability ``fraction`` (MCAR)."""
    X = np.array(X, dtype=np.float64)
    X[rng.uniform(size=X.shape) < fraction] = np.nan
    return X


@pytest.fixture(scope="module")
def iris_missing(iris):
    """iris with 20 % MCAR entries, two rows with nothing observed and three
    rows with exactly one observed coordinate; positive sample weights."""
    rng = np.random.default_rng(0)
    X = hide(iris, 0.2, rng)
    X[[3, 70]] = np.nan
    for row, col in ((5, 1), (60, 2), (120, 3)):
        X[row] = np.nan
        X[row, col] = iris[row, col]
    assert not np.isnan(X).all(axis=0).any()
    w = rng.uniform(0.5, 2.0, size=len(X))
    labels = SkKMeans(3, n_init=1, random_state=0).fit(iris).labels_
    return dict(X=X, w=w, complete=iris, labels=labels)


def class_inits(X, labels, k, cov_type):
    """weights_init, means_init, precisions_init of a partition of complete data."""
    d = X.shape[1]
    means = np.array([X[labels == j].mean(axis=0) for j in range(k)])
    covs = np.array([np.cov(X[labels == j].T, bias=True) + 1e-3 * np.eye(d)
                     for j in range(k)])
    if cov_type == "full":
        precisions = np.array([np.linalg.inv(c) for c in covs])
    elif cov_type == "tied":
        precisions = np.linalg.inv(covs.mean(axis=0))
    elif cov_type == "diag":
        precisions = 1.0 / np.array([np.diag(c) for c in covs])
    else:
        precisions = 1.0 / np.array([np.diag(c).mean() for c in covs])
    # unequal weights: with equal ones, a hard E-step would send the rows with
    # nothing observed to a component chosen by rounding (their log-probabilities
    # are log w_k, exactly tied)
    weights = np.array([np.mean(labels == j) for j in range(k)])
    assert np.unique(weights).size == k
    return dict(weights_init=weights, means_init=means, precisions_init=precisions)


def gmm(cov_type, inits, **kwargs):
    kwargs = {"reg_covar": REG_COVAR, "tol": 0, "max_iter": N_ITER, **kwargs}
    return GaussianMixture(len(inits["weights_init"]), covariance_type=cov_type,
                           **inits, **kwargs)


def fit_quietly(model, X, **kwargs):
    """Fit, silencing the ConvergenceWarning of tol=0 runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, **kwargs)


@pytest.fixture(scope="module")
def synthetic():
    """Three well separated full-covariance Gaussians in d=5, 25 % MCAR.

    Returns the training set with NaN, its hidden complete values, and a
    complete test set of the same size.
    """
    rng = np.random.default_rng(42)
    d, n = 5, 3000
    means = np.array([[0.0] * 5, [6.0, 6.0, 0.0, 0.0, 6.0], [-6.0, 3.0, 6.0, -6.0, 0.0]])
    covs = []
    for _ in range(3):
        A = rng.standard_normal((d, d))
        covs.append(A @ A.T / d + 0.3 * np.eye(d))
    weights = np.array([0.5, 0.3, 0.2])

    def draw(size):
        y = rng.choice(3, size=size, p=weights)
        return np.array([rng.multivariate_normal(means[j], covs[j]) for j in y])

    complete, test = draw(n), draw(n)
    return dict(X=hide(complete, 0.25, rng), complete=complete, test=test,
                weights=weights, means=means, covariances=np.array(covs))


@pytest.fixture(scope="module")
def binary_missing():
    """300 rows of 16 binary features from 3 components, 20 % MCAR, two empty rows."""
    rng = np.random.default_rng(1)
    means = rng.choice([0.1, 0.3, 0.7, 0.9], size=(3, 16))
    y = rng.choice(3, size=300, p=[0.5, 0.3, 0.2])
    complete = (rng.uniform(size=(300, 16)) < means[y]).astype(np.float64)
    X = hide(complete, 0.2, rng)
    X[[10, 200]] = np.nan
    # unequal weights: see class_inits
    inits = dict(weights_init=np.array([0.45, 0.33, 0.22]),
                 means_init=np.clip(means + 0.1 * rng.standard_normal(means.shape), 0.05, 0.95))
    return dict(X=X, w=rng.uniform(0.5, 2.0, size=300), inits=inits)


# ---------------------------------------------------------------- 1. naive references
_REFERENCE = {}


def reference_gaussian_fit(data, cov_type, assignment):
    """The naive EM from the same init, computed once and shared by the backends."""
    key = (cov_type, assignment)
    if key not in _REFERENCE:
        inits = class_inits(data["complete"], data["labels"], 3, cov_type)
        _REFERENCE[key] = naive.gaussian_em(
            data["X"], data["w"], inits["weights_init"], inits["means_init"],
            naive.covariances_from_precisions(cov_type, inits["precisions_init"]),
            cov_type, REG_COVAR, N_ITER, hard=assignment == "hard")
    return _REFERENCE[key]


@pytest.mark.parametrize("assignment", ["soft", "hard"])
@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_gaussian_mixture_matches_the_naive_em(backend, iris_missing, cov_type, assignment):
    data = iris_missing
    inits = class_inits(data["complete"], data["labels"], 3, cov_type)
    model = fit_quietly(gmm(cov_type, inits, assignment=assignment), data["X"],
                        sample_weight=data["w"])
    weights, means, covariances, lower_bounds = reference_gaussian_fit(
        data, cov_type, assignment)
    assert model.n_iter_ == N_ITER
    assert rel_err(model.weights_, weights) < REF_TOL
    assert rel_err(model.means_, means) < REF_TOL
    assert rel_err(model.covariances_, covariances) < REF_TOL
    np.testing.assert_allclose(model.lower_bounds_, lower_bounds, rtol=REF_TOL)
    # and EM moved: the comparison is not of the initial parameters
    assert rel_err(means, inits["means_init"]) > 1e-3


_REFERENCE_ESTEP = {}


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_gaussian_inference_with_nan_matches_the_naive_estep(backend, iris_missing,
                                                             cov_type):
    """predict, predict_proba, score_samples, score and impute accept NaN."""
    data = iris_missing
    X = data["X"]
    inits = class_inits(data["complete"], data["labels"], 3, cov_type)
    model = gmm(cov_type, inits, max_iter=0).fit(X)  # fitted parameters = the inits
    if cov_type not in _REFERENCE_ESTEP:
        covariances = naive.covariances_from_precisions(cov_type, inits["precisions_init"])
        args = (X, inits["weights_init"], inits["means_init"], covariances, cov_type)
        _REFERENCE_ESTEP[cov_type] = (naive.gaussian_estep(*args)[:2],
                                      naive.gaussian_impute(*args))
    (log_prob, resp), imputed = _REFERENCE_ESTEP[cov_type]
    expected = logsumexp(log_prob, axis=1)
    assert rel_err(model.score_samples(X), expected) < 1e-10
    assert model.score(X) == pytest.approx(expected.mean(), rel=1e-10)
    assert rel_err(model.predict_proba(X), resp) < 1e-10
    np.testing.assert_array_equal(model.predict(X), np.argmax(log_prob, axis=1))
    assert rel_err(model.impute(X), imputed) < 1e-10


def kmeans_init(data):
    """Initial centres: the complete-data cluster means, moved by a fixed offset."""
    X, labels = data["complete"], data["labels"]
    centers = np.array([X[labels == j].mean(axis=0) for j in range(3)])
    return centers + 0.3 * np.array([[1, -1, 1, -1], [-1, 1, 1, 1], [1, 1, -1, -1]])


@pytest.mark.parametrize("max_iter", [1, 3, 50])
def test_kmeans_matches_the_naive_lloyd(backend, iris_missing, max_iter):
    data = iris_missing
    C0 = kmeans_init(data)
    km = fit_quietly(KMeans(3, init=C0, n_init=1, max_iter=max_iter, tol=0), data["X"],
                     sample_weight=data["w"])
    labels, centers, inertia = naive.kmeans_lloyd(data["X"], data["w"], C0, max_iter)
    np.testing.assert_array_equal(km.labels_, labels)
    assert rel_err(km.cluster_centers_, centers) < 1e-10
    assert km.inertia_ == pytest.approx(inertia, rel=1e-10)
    if max_iter == 1:  # one Lloyd step from C0 does move the centres
        assert rel_err(centers, C0) > 1e-2


def test_kmeans_inference_with_nan_matches_the_naive_distances(backend, iris_missing):
    """predict, transform and score accept NaN: distances over observed coordinates."""
    X = iris_missing["X"]
    km = KMeans(3, init=kmeans_init(iris_missing), n_init=1).fit(X)
    labels, dist = naive.kmeans_assign(X, km.cluster_centers_)
    np.testing.assert_array_equal(km.predict(X), labels)
    assert rel_err(km.transform(X), np.sqrt(dist)) < 1e-12
    assert km.score(X) == pytest.approx(-dist[np.arange(len(X)), labels].sum(), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_plusplus_matches_the_naive_seeding(backend, iris_missing, seed):
    X, w = iris_missing["X"], iris_missing["w"]
    centers, indices = kmeans_plusplus(X, 5, sample_weight=w, random_state=seed)
    expected_centers, expected_indices = naive.kmeans_plusplus(
        X, 5, w, np.random.RandomState(seed), n_local_trials=2 + int(np.log(5)))
    np.testing.assert_array_equal(indices, expected_indices)
    assert rel_err(centers, expected_centers) < 1e-12
    assert np.isnan(X[indices]).any()  # some chosen row had a missing coordinate


@pytest.mark.parametrize("assignment", ["soft", "hard"])
def test_bernoulli_mixture_matches_the_naive_em(backend, binary_missing, assignment):
    data = binary_missing
    alpha = 0.01  # large enough that its place in the M-step shows
    model = fit_quietly(
        BernoulliMixture(3, alpha=alpha, tol=0, max_iter=N_ITER, assignment=assignment,
                         **data["inits"]),
        data["X"], sample_weight=data["w"])
    weights, means, lower_bounds = naive.bernoulli_em(
        data["X"], data["w"], data["inits"]["weights_init"], data["inits"]["means_init"],
        alpha, N_ITER, hard=assignment == "hard")
    assert rel_err(model.weights_, weights) < REF_TOL
    assert rel_err(model.means_, means) < REF_TOL
    np.testing.assert_allclose(model.lower_bounds_, lower_bounds, rtol=REF_TOL)
    # inference at the fitted parameters
    log_prob = naive.bernoulli_log_prob(data["X"], model.weights_, model.means_)
    assert rel_err(model.score_samples(data["X"]), logsumexp(log_prob, axis=1)) < 1e-10
    assert rel_err(model.predict_proba(data["X"]),
                   np.exp(log_prob - logsumexp(log_prob, axis=1)[:, None])) < 1e-10
    np.testing.assert_array_equal(model.predict(data["X"]), np.argmax(log_prob, axis=1))
    assert model.score(data["X"]) == pytest.approx(
        logsumexp(log_prob, axis=1).mean(), rel=1e-10)


# ---------------------------------------------------------------- 2. invariants
def test_data_without_nan_never_reach_the_missing_kernels(backend, iris, monkeypatch):
    """Without NaN every model runs the complete-data kernels, so its results are
    those of the complete-data fit, bit for bit (the first pass runs with the
    ``*_missing`` kernels made to raise, the second with them in place)."""
    X = iris
    B = (iris > np.median(iris, axis=0)).astype(np.float64)

    def run():
        g = GaussianMixture(3, covariance_type="full", random_state=0).fit(X)
        b = BernoulliMixture(2, random_state=0).fit(B)
        k = KMeans(3, random_state=0).fit(X)
        return [g.means_, g.covariances_, g.lower_bounds_, g.predict_proba(X),
                g.score_samples(X), g.impute(X), b.means_, b.score_samples(B),
                k.cluster_centers_, k.labels_, k.transform(X), k.predict(X),
                kmeans_plusplus(X, 3, random_state=0)[0]]

    expected = run()

    def forbidden(*args):
        raise AssertionError("a *_missing kernel ran on data without NaN")

    module = backends._load(backend)
    for name in _table.KERNEL_NAMES:
        if name.endswith("_missing"):
            monkeypatch.setattr(module, name, forbidden)
    got = run()
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got[5], X)  # impute without NaN changes nothing


@pytest.mark.parametrize("assignment", ["soft", "hard"])
@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_lower_bound_never_decreases_with_nan(backend, synthetic, cov_type, assignment):
    # reg_covar=0: with reg_covar > 0 the M-step is not the exact maximizer of
    # the expected log-likelihood, and small decreases are legitimate.
    X = synthetic["X"][:600]
    model = fit_quietly(GaussianMixture(3, covariance_type=cov_type, reg_covar=0.0,
                                        init_params="random", random_state=0, tol=0,
                                        max_iter=40, assignment=assignment), X)
    bounds = np.array(model.lower_bounds_)
    assert np.all(np.diff(bounds) >= -1e-12 * np.abs(bounds[1:])), np.diff(bounds).min()
    assert bounds[-1] > bounds[0] + 0.1  # the run climbed: the check is not vacuous


def test_kmeans_inertia_never_increases_with_nan(backend, synthetic):
    X = synthetic["X"][:600]
    rng = np.random.default_rng(3)
    C0 = synthetic["complete"][rng.choice(600, size=6, replace=False)]
    inertias = []
    for max_iter in range(1, 12):
        km = fit_quietly(KMeans(6, init=C0, n_init=1, max_iter=max_iter, tol=0), X)
        inertias.append(km.inertia_)
    inertias = np.array(inertias)
    assert np.all(np.diff(inertias) <= 1e-12 * inertias[1:]), np.diff(inertias).max()
    assert np.count_nonzero(np.diff(inertias) < 0) >= 5  # the check is not vacuous


# ---------------------------------------------------------------- 3. known parameters
def test_fitting_with_nan_beats_mean_imputation(backend, synthetic):
    X, complete, test = synthetic["X"], synthetic["complete"], synthetic["test"]
    with_nan = GaussianMixture(3, random_state=0).fit(X)
    filled = np.where(np.isnan(X), np.nanmean(X, axis=0), X)
    on_filled = GaussianMixture(3, random_state=0).fit(filled)
    # the known parameters are recovered ...
    order = [int(np.argmin(np.sum((with_nan.means_ - mu) ** 2, axis=1)))
             for mu in synthetic["means"]]
    assert sorted(order) == [0, 1, 2]
    assert np.abs(with_nan.means_[order] - synthetic["means"]).max() < 0.2
    assert np.abs(with_nan.weights_[order] - synthetic["weights"]).max() < 0.03
    assert rel_err(with_nan.covariances_[order], synthetic["covariances"]) < 0.15
    # ... and the held-out log-likelihood of complete test points is nearly
    # that of the true mixture (observed: 0.011 below), far above the fit on
    # mean-imputed data (observed: 1.6 below)
    true_log_prob = np.stack([
        np.log(w) + multivariate_normal(mu, cov).logpdf(test) for w, mu, cov in
        zip(synthetic["weights"], synthetic["means"], synthetic["covariances"])], axis=1)
    true_score = logsumexp(true_log_prob, axis=1).mean()
    assert with_nan.score(test) > true_score - 0.05
    assert with_nan.score(test) > on_filled.score(test) + 0.5
    # imputation of the hidden values (observed RMSE: 1.06 vs 3.09)
    hidden = np.isnan(X)
    rmse_model = np.sqrt(np.mean((with_nan.impute(X)[hidden] - complete[hidden]) ** 2))
    rmse_mean = np.sqrt(np.mean((filled[hidden] - complete[hidden]) ** 2))
    assert rmse_model < 0.5 * rmse_mean


# ---------------------------------------------------------------- 4. edge cases
@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_rows_with_nothing_observed(backend, iris_missing, cov_type):
    """They carry no information: posterior = weights_, and the fit is unchanged.

    reg_covar=0: an all-NaN row adds w_k Sigma_k to the expected scatter and
    w_k to N_k, which keeps the fixed point Sigma_k = scatter_k / N_k but not
    scatter_k / N_k + reg_covar.
    """
    data = iris_missing
    X = np.delete(data["X"], [3, 70], axis=0)  # drop the fixture's empty rows
    inits = class_inits(data["complete"], data["labels"], 3, cov_type)
    kwargs = dict(reg_covar=0.0, tol=1e-13, max_iter=2000)
    base = gmm(cov_type, inits, **kwargs).fit(X)
    padded = np.vstack([X[:40], np.full((10, 4), np.nan), X[40:]])
    more = gmm(cov_type, inits, **kwargs).fit(padded)
    assert base.converged_ and more.converged_
    for name in FITTED:  # observed: up to 7e-8 at tol=1e-13
        assert rel_err(getattr(more, name), getattr(base, name)) < 1e-6, name
    # each adds log 1 = 0 to the summed log-likelihood, and 1 to the count
    assert more.lower_bound_ * len(padded) == pytest.approx(base.lower_bound_ * len(X),
                                                             rel=1e-8)
    empty = np.full((3, 4), np.nan)
    np.testing.assert_allclose(more.predict_proba(empty), np.tile(more.weights_, (3, 1)),
                               rtol=1e-12)
    np.testing.assert_allclose(more.score_samples(empty), 0.0, atol=1e-12)
    np.testing.assert_allclose(more.impute(empty), np.tile(more.weights_ @ more.means_, (3, 1)),
                               rtol=1e-12)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_rows_with_one_observed_coordinate(backend, iris_missing, cov_type):
    """The marginal of coordinate a: sum_k w_k N(x_a; mu_ka, Sigma_k,aa), by scipy."""
    data = iris_missing
    inits = class_inits(data["complete"], data["labels"], 3, cov_type)
    model = fit_quietly(gmm(cov_type, inits), data["X"])
    k, d = model.means_.shape
    covs = np.array([naive.dense_covariance(cov_type, model.covariances_, j, d)
                     for j in range(k)])
    rng = np.random.default_rng(5)
    X = np.full((12, d), np.nan)
    cols = np.arange(12) % d
    X[np.arange(12), cols] = data["complete"][rng.choice(150, 12), cols]
    for i, a in enumerate(cols):
        x = X[i, a]
        log_joint = np.log(model.weights_) + norm(model.means_[:, a],
                                                  np.sqrt(covs[:, a, a])).logpdf(x)
        resp = np.exp(log_joint - logsumexp(log_joint))
        # E[x_b | x_a, k] = mu_kb + Sigma_k,ba / Sigma_k,aa (x_a - mu_ka)
        cond = model.means_ + covs[:, :, a] / covs[:, a, a][:, None] * (
            x - model.means_[:, a])[:, None]
        expected = resp @ cond
        expected[a] = x
        row = X[i:i + 1]
        assert model.score_samples(row)[0] == pytest.approx(logsumexp(log_joint), rel=1e-12)
        assert rel_err(model.predict_proba(row)[0], resp) < 1e-10
        assert rel_err(model.impute(row)[0], expected) < 1e-12


def test_float32_input_with_nan(backend, iris_missing):
    """float32 values are widened exactly and every sum is in float64, so the
    fit equals the float64 fit of the same (rounded) values up to the order of
    additions (observed: bit-identical).  Against the unrounded float64 data,
    rounding X to float32 moves it by up to 6e-8 relative, which 8 EM iterations
    carry a few times amplified (observed: up to 2.4e-7)."""
    data = iris_missing
    X32 = data["X"].astype(np.float32)
    X32_copy = X32.copy()
    for cov_type in COV_TYPES:
        inits = class_inits(data["complete"], data["labels"], 3, cov_type)
        m32 = fit_quietly(gmm(cov_type, inits), X32)
        m64 = fit_quietly(gmm(cov_type, inits), X32.astype(np.float64))
        full = fit_quietly(gmm(cov_type, inits), data["X"])
        for name in FITTED:
            assert getattr(m32, name).dtype == np.float64
            assert rel_err(getattr(m32, name), getattr(m64, name)) < 1e-12, name
            assert rel_err(getattr(m32, name), getattr(full, name)) < 2e-6, name
        np.testing.assert_allclose(m32.lower_bounds_, m64.lower_bounds_, rtol=1e-12)
        imputed = m32.impute(X32)
        assert imputed.dtype == np.float32
        assert rel_err(imputed, full.impute(data["X"])) < 1e-6
    C0 = kmeans_init(data)
    k32 = fit_quietly(KMeans(3, init=C0, n_init=1, max_iter=20), X32)
    k64 = fit_quietly(KMeans(3, init=C0, n_init=1, max_iter=20), X32.astype(np.float64))
    np.testing.assert_array_equal(k32.labels_, k64.labels_)
    assert rel_err(k32.cluster_centers_, k64.cluster_centers_) < 1e-12
    np.testing.assert_array_equal(X32, X32_copy)


def test_integer_weights_equal_repeated_rows_with_nan(backend, iris_missing, binary_missing):
    rng = np.random.default_rng(4)
    X = iris_missing["X"]
    counts = rng.integers(0, 4, size=len(X))  # zeros drop rows
    repeated = np.repeat(X, counts, axis=0)
    for cov_type in COV_TYPES:
        inits = class_inits(iris_missing["complete"], iris_missing["labels"], 3, cov_type)
        weighted = fit_quietly(gmm(cov_type, inits), X, sample_weight=counts)
        expanded = fit_quietly(gmm(cov_type, inits), repeated)
        for name in FITTED:
            assert rel_err(getattr(weighted, name), getattr(expanded, name)) < 1e-10, name
        np.testing.assert_allclose(weighted.lower_bounds_, expanded.lower_bounds_, rtol=1e-10)
    C0 = kmeans_init(iris_missing)
    weighted = KMeans(3, init=C0, n_init=1).fit(X, sample_weight=counts)
    expanded = KMeans(3, init=C0, n_init=1).fit(repeated)
    np.testing.assert_array_equal(np.repeat(weighted.labels_, counts), expanded.labels_)
    assert rel_err(weighted.cluster_centers_, expanded.cluster_centers_) < 1e-10
    assert weighted.inertia_ == pytest.approx(expanded.inertia_, rel=1e-10)
    B = binary_missing["X"]
    counts = rng.integers(0, 4, size=len(B))
    kwargs = dict(alpha=0.01, tol=0, max_iter=N_ITER, **binary_missing["inits"])
    weighted = fit_quietly(BernoulliMixture(3, **kwargs), B, sample_weight=counts)
    expanded = fit_quietly(BernoulliMixture(3, **kwargs), np.repeat(B, counts, axis=0))
    assert rel_err(weighted.weights_, expanded.weights_) < 1e-10
    assert rel_err(weighted.means_, expanded.means_) < 1e-10
    np.testing.assert_allclose(weighted.lower_bounds_, expanded.lower_bounds_, rtol=1e-10)


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinity_beside_nan_is_an_error_naming_its_position(backend, iris_missing, value):
    """NaN is a missing value; infinity stays an error, wherever X enters."""
    X = iris_missing["X"].copy()
    X[9, 2] = value
    assert np.isnan(X[:9]).any()  # NaN come first: the message still names the infinity
    pattern = r"X contains infinity \(first at row 9, column 2\)"
    model = GaussianMixture(3, random_state=0).fit(iris_missing["X"])
    km = KMeans(3, random_state=0).fit(iris_missing["X"])
    for call in (lambda: GaussianMixture(3).fit(X), lambda: model.predict(X),
                 lambda: model.predict_proba(X), lambda: model.score_samples(X),
                 lambda: model.impute(X), lambda: KMeans(3).fit(X),
                 lambda: km.transform(X), lambda: kmeans_plusplus(X, 3)):
        with pytest.raises(ValueError, match=pattern):
            call()
    B = np.array([[0, 1, np.nan], [1, np.nan, 0], [1, value, 1], [0, 0, 1]])
    with pytest.raises(ValueError, match=r"X contains infinity \(first at row 2, column 1\)"):
        BernoulliMixture(2).fit(B)


# explicit initial parameters, so that no K-means initialisation checks X first
COLUMN_MODELS = {
    "gmm": lambda **kw: GaussianMixture(2, weights_init=[0.5, 0.5], means_init=np.zeros((2, 3)),
                                        precisions_init=np.stack([np.eye(3)] * 2), **kw),
    "kmeans": lambda **kw: KMeans(2, init=np.zeros((2, 3)) + [[0.2], [0.8]], **kw),
    "bmm": lambda **kw: BernoulliMixture(2, weights_init=[0.5, 0.5],
                                         means_init=np.full((2, 3), 0.5) + [[-0.2], [0.2]], **kw),
}


@pytest.mark.parametrize("model", sorted(COLUMN_MODELS))
def test_a_column_without_observed_values_is_an_error(backend, model):
    make = COLUMN_MODELS[model]
    rng = np.random.default_rng(6)
    X = (rng.uniform(size=(30, 3)) < 0.5).astype(np.float64)
    X[rng.uniform(size=X.shape) < 0.1] = np.nan
    w = np.ones(30)
    X[5:, 2] = np.nan  # column 2 is observed only in rows 0-4 ...
    with warnings.catch_warnings():  # short fit of a tiny data set: not the point
        warnings.simplefilter("ignore")
        make(max_iter=5).fit(X, sample_weight=w)
    w[:5] = 0.0  # ... which now weigh nothing
    with pytest.raises(ValueError, match=r"X has no observed value in column 2"):
        make().fit(X, sample_weight=w)
    X[:, 2] = np.nan
    with pytest.raises(ValueError, match=r"X has no observed value in column 2"):
        make().fit(X)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_impute_returns_a_new_array_and_leaves_x_alone(backend, iris_missing, dtype):
    X = iris_missing["X"].astype(dtype)
    before = X.copy()
    model = GaussianMixture(3, random_state=0).fit(X)
    out = model.impute(X)
    assert out.dtype == dtype and out.shape == X.shape
    assert not np.shares_memory(out, X)
    np.testing.assert_array_equal(X, before)  # NaN compare equal here
    observed = ~np.isnan(X)
    np.testing.assert_array_equal(out[observed], X[observed])  # untouched, bit for bit
    assert np.all(np.isfinite(out))
    # without NaN: a copy of X
    complete = np.ascontiguousarray(iris_missing["complete"], dtype=dtype)
    out = model.impute(complete)
    assert not np.shares_memory(out, complete)
    np.testing.assert_array_equal(out, complete)


def test_kmeans_coordinate_never_observed_in_a_cluster(backend):
    rng = np.random.default_rng(7)
    X = np.vstack([rng.normal(0.0, 1.0, size=(40, 3)), rng.normal(10.0, 1.0, size=(40, 3))])
    X[rng.uniform(size=X.shape) < 0.1] = np.nan
    X[40:, 1] = np.nan  # the second cluster never observes feature 1
    C0 = np.array([[0.5, 0.5, 0.5], [9.0, 7.0, 9.0]])
    with pytest.warns(UserWarning, match="feature 1 is missing in every point of cluster 1"):
        km = KMeans(2, init=C0, n_init=1).fit(X)
    assert np.all(np.isfinite(km.cluster_centers_))
    np.testing.assert_array_equal(km.labels_, np.repeat([0, 1], 40))
    assert km.cluster_centers_[1, 1] == C0[1, 1]  # keeps its initial value
    assert np.all(np.isfinite(km.transform(X)))


def test_bernoulli_feature_never_observed_in_a_component(backend):
    rng = np.random.default_rng(8)
    p = np.array([[0.02] * 40, [0.98] * 40])
    X = (rng.uniform(size=(80, 40)) < np.repeat(p, 40, axis=0)).astype(np.float64)
    X[rng.uniform(size=X.shape) < 0.1] = np.nan
    X[40:, 3] = np.nan  # the second component's rows never observe feature 3
    inits = dict(weights_init=[0.5, 0.5], means_init=np.clip(p, 0.2, 0.8))
    # hard assignment: component 1 takes exactly rows 40-79 (soft responsibilities
    # are never exactly 0, so soft EM sees feature 3 through a weight of ~1e-60)
    with pytest.warns(UserWarning, match="feature 3 is missing in every row that component 1"):
        model = BernoulliMixture(2, assignment="hard", **inits).fit(X)
    np.testing.assert_array_equal(model.predict(X), np.repeat([0, 1], 40))
    assert np.all(np.isfinite(model.means_))
    assert model.means_[1, 3] == 0.5  # the prior's value: alpha / (2 alpha)
    soft = BernoulliMixture(2, **inits).fit(X)
    assert np.all(np.isfinite(soft.means_))
    assert soft.means_[1, 3] == pytest.approx(0.5, abs=1e-6)


# ---------------------------------------------------------------- 5. compiled vs numpy kernels
def missing_kernel_case(kind, dtype, rng, n=301, d=5, k=3):
    """Random inputs of a ``*_missing`` kernel: 25 % NaN, empty and one-value rows."""
    X = rng.standard_normal((n, d)) * 2.0 + 1.0
    if kind == "bernoulli":
        X = (X > 1.0).astype(np.float64)
    X[rng.uniform(size=X.shape) < 0.25] = np.nan
    X[::37] = np.nan
    X[5::41] = np.nan
    X[5::41, 2] = 1.0
    w = rng.uniform(0.2, 3.0, size=n)
    w[rng.uniform(size=n) < 0.15] = 0.0
    case = dict(X=X.astype(dtype), sample_weight=w,
                labels=rng.integers(0, k, size=n).astype(np.int64))
    weights = rng.dirichlet(np.ones(k))
    if kind == "bernoulli":
        p = rng.uniform(0.05, 0.95, size=(k, d))
        case.update(logit=np.log(p) - np.log1p(-p), log_q=np.log1p(-p),
                    log_norm=np.log(weights) + np.log1p(-p).sum(axis=1))
        return case
    if kind in ("full", "tied"):
        U = np.triu(0.3 * rng.standard_normal((k, d, d)), 1)
        U[:, np.arange(d), np.arange(d)] = rng.uniform(0.5, 1.5, size=(k, d))
        prec_chol = U if kind == "full" else np.ascontiguousarray(U[0])
        log_det = np.log(np.diagonal(U, axis1=1, axis2=2)).sum(axis=1)
        if kind == "tied":
            log_det = np.full(k, log_det[0])
    elif kind == "diag":
        prec_chol = rng.uniform(0.5, 1.5, size=(k, d))
        log_det = np.log(prec_chol).sum(axis=1)
    else:
        prec_chol = rng.uniform(0.5, 1.5, size=k)
        log_det = d * np.log(prec_chol)
    case.update(means=rng.standard_normal((k, d)) * 2.0 + 1.0, prec_chol=prec_chol,
                log_norm=np.log(weights) + log_det - 0.5 * d * np.log(2 * np.pi),
                center=np.nanmean(X, axis=0))
    return case


def run_missing_kernel(module, kind, case, hard, chunk_size, want_outputs):
    """Call one ``*_missing`` kernel on fresh NaN-filled buffers; return every output."""
    X = case["X"]
    n, d = X.shape
    k = case["log_norm"].shape[0]
    n_chunks = -(-n // chunk_size)
    out = dict(labels=case["labels"].copy(),
               log_prob=np.full((n if want_outputs else 0, k), np.nan),
               nk=np.full((n_chunks, k), np.nan), nko=np.full((n_chunks, k, d), np.nan),
               sx=np.full((n_chunks, k, d), np.nan), obj=np.full((n_chunks, 3), np.nan))
    if kind == "bernoulli":
        module.estep_bernoulli_missing(
            X, case["sample_weight"], case["logit"], case["log_norm"], case["log_q"], hard,
            chunk_size, out["labels"], out["log_prob"], out["nk"], out["nko"], out["sx"],
            out["obj"])
        return out
    sxx = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[kind]
    out["sxx"] = np.full((n_chunks,) + sxx, np.nan)
    out["imputed"] = np.full((n if want_outputs else 0, d), np.nan)
    getattr(module, f"estep_{kind}_missing")(
        X, case["sample_weight"], case["means"], case["prec_chol"], case["log_norm"],
        case["center"], hard, chunk_size, out["labels"], out["log_prob"], out["imputed"],
        out["nk"], out["nko"], out["sx"], out["sxx"], out["obj"])
    if kind in ("full", "tied"):
        out["sxx"] = np.tril(out["sxx"])  # only the lower triangle is specified
    return out


# (d, k) = (9, 6): the Cython whitening's blocks of four components and
# four features, and their leftovers
@pytest.mark.parametrize("d, k", [(5, 3), (9, 6)])
@pytest.mark.parametrize("want_outputs", [False, True], ids=["fit", "predict"])
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", COV_TYPES + ("bernoulli",))
@pytest.mark.parametrize("compiled", COMPILED_BACKENDS)
def test_compiled_and_numpy_missing_kernels_agree(compiled, kind, dtype, hard, want_outputs,
                                                  d, k):
    rng = np.random.default_rng(20 + len(kind) + 2 * hard)
    case = missing_kernel_case(kind, dtype, rng, d=d, k=k)
    outs = {name: run_missing_kernel(backends._load(name), kind, case, hard, 64,
                                     want_outputs)
            for name in ("numpy", compiled)}
    compiled_out, numpy_out = outs[compiled], outs["numpy"]
    assert set(compiled_out) == set(numpy_out)
    for name, ref in numpy_out.items():
        got = compiled_out[name]
        assert got.shape == ref.shape, name
        assert not np.isnan(got).any() and not np.isnan(ref).any(), f"{name} left unwritten"
        if name == "labels":
            np.testing.assert_array_equal(got, ref)
        else:
            assert rel_err(got, ref) < KERNEL_TOL, name
    if want_outputs and kind != "bernoulli":
        observed = ~np.isnan(case["X"])
        np.testing.assert_array_equal(compiled_out["imputed"][observed],
                                      case["X"][observed].astype(np.float64))


@pytest.mark.parametrize("d", [5, 33])
@pytest.mark.parametrize("want_outputs", [False, True], ids=["fit", "predict"])
@pytest.mark.parametrize("kind", COV_TYPES + ("bernoulli",))
@pytest.mark.parametrize("name", ["numpy"] + COMPILED_BACKENDS)
def test_soft_missing_kernel_without_labels(name, kind, want_outputs, d):
    # labels of shape (0,), as in a fit's soft iterations: the same bits in
    # every output, no label counted as changed; a hard E-step needs labels
    rng = np.random.default_rng(60 + d)
    case = missing_kernel_case(kind, np.float64, rng, d=d, k=4)
    module = backends._load(name)
    with_labels = run_missing_kernel(module, kind, case, False, 64, want_outputs)
    empty = dict(case, labels=np.empty(0, dtype=np.int64))
    without = run_missing_kernel(module, kind, empty, False, 64, want_outputs)
    assert without["labels"].shape == (0,)
    assert np.all(without["obj"][:, 2] == 0) and np.any(with_labels["obj"][:, 2] > 0)
    for key, value in without.items():
        if key != "labels":
            expected = with_labels[key]
            if key == "obj":
                value, expected = value[:, :2], expected[:, :2]
            np.testing.assert_array_equal(value, expected, err_msg=key)
    with pytest.raises(ValueError, match="labels must have shape"):
        run_missing_kernel(module, kind, empty, True, 64, want_outputs)


# float32 holds neither 1e75 nor 1e-75 times the data
@pytest.mark.parametrize("dtype, scale", [(np.float64, 1.0), (np.float32, 1.0),
                                          (np.float64, 1e-75), (np.float64, 1e75)])
@pytest.mark.parametrize("d", [5, 16, 33])
@pytest.mark.parametrize("want_log_prob", [False, True], ids=["fit", "score"])
@pytest.mark.parametrize("compiled", COMPILED_BACKENDS)
def test_soft_full_missing_kernel_on_products_matches_numpy(compiled, dtype, want_log_prob, d,
                                                            scale):
    """The soft full E-step with NaN of a fit or of scoring (no imputed values
    asked for) runs on ``_soft``'s PAIRS_OBSERVED features with per-row
    corrections for the missing coordinates: against the NumPy reference at
    up to 33 features, with rows of 0, 1, 2 (the tabled determinants) and
    more missing coordinates, empty rows, zero weights, correlated
    precisions, and data scaled by 1e-75 and 1e75 (determinants of Lambda_mm
    out of range, taken from the pivots' logs)."""
    rng = np.random.default_rng(90 + d)
    case = missing_kernel_case("full", dtype, rng, n=517, d=d, k=6)
    X = rng.standard_normal((517, d)) * 2.0 + 1.0
    for i, q in enumerate(np.resize([0, 1, 2, 3, d // 2, d - 1, d], 517)):
        X[i, rng.permutation(d)[:q]] = np.nan
    case["X"] = X.astype(dtype)
    case["center"] = np.nanmean(X, axis=0)
    for name in ("X", "means", "center"):
        case[name] = (case[name] * scale).astype(case[name].dtype)
    case["prec_chol"] = case["prec_chol"] / scale
    case["log_norm"] = case["log_norm"] - d * np.log(scale)
    n, k = X.shape[0], case["means"].shape[0]
    outs = {}
    for name in ("numpy", compiled):
        n_chunks = -(-n // 64)
        out = dict(labels=case["labels"].copy(),
                   log_prob=np.full((n if want_log_prob else 0, k), np.nan),
                   nk=np.full((n_chunks, k), np.nan), nko=np.full((n_chunks, k, d), np.nan),
                   sx=np.full((n_chunks, k, d), np.nan),
                   sxx=np.full((n_chunks, k, d, d), np.nan),
                   obj=np.full((n_chunks, 3), np.nan))
        backends._load(name).estep_full_missing(
            case["X"], case["sample_weight"], case["means"], case["prec_chol"],
            case["log_norm"], case["center"], False, 64, out["labels"], out["log_prob"],
            np.empty((0, d)), out["nk"], out["nko"], out["sx"], out["sxx"], out["obj"])
        out["sxx"] = np.tril(out["sxx"])
        outs[name] = out
    for name, ref in outs["numpy"].items():
        got = outs[compiled][name]
        assert not np.isnan(got).any(), f"{name} left unwritten"
        if name == "labels":
            np.testing.assert_array_equal(got, ref)
        else:
            assert rel_err(got, ref) < KERNEL_TOL, name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("compiled", COMPILED_BACKENDS)
def test_soft_missing_kernels_give_identical_bits_in_every_layout(compiled, dtype):
    """The soft diagonal, spherical and full kernels with NaN stage their rows
    four at a time, NaN tests as vector selects, from C- and Fortran-ordered
    data, and one value at a time from strided data: every path must give the
    same bits.  d = 11 leaves features past a multiple of four, n = 301 rows
    past a multiple of four."""
    module = backends._load(compiled)
    for kind in ("diag", "spherical", "full"):
        case = missing_kernel_case(kind, dtype, np.random.default_rng(41), d=11, k=3)
        ref = run_missing_kernel(module, kind, case, False, 64, False)
        wide = np.full((case["X"].shape[0], 22), np.nan, dtype=dtype)
        wide[:, ::2] = case["X"]
        for X in (np.asfortranarray(case["X"]), wide[:, ::2]):
            out = run_missing_kernel(module, kind, dict(case, X=X), False, 64, False)
            for name in ref:
                np.testing.assert_array_equal(out[name], ref[name], err_msg=(kind, name))


@pytest.mark.parametrize("kind", COV_TYPES + ("bernoulli",))
@pytest.mark.parametrize("compiled", COMPILED_BACKENDS)
def test_missing_kernels_log_likelihood_of_many_unit_weight_rows(compiled, kind):
    # The compiled kernels defer the log of a weight-1 row's softmax total,
    # multiplying the totals and logging the product before it overflows;
    # 4000 rows of 40 components in one chunk pass float64's range several
    # times.  The chunk's log-likelihood is sum_i logsumexp_j lp_ij of the
    # rows' marginal log-probabilities.
    rng = np.random.default_rng(9)
    n = 4000
    case = missing_kernel_case(kind, np.float64, rng, n=n, k=40)
    case["sample_weight"] = np.ones(n)
    out = run_missing_kernel(backends._load(compiled), kind, case, False, n, True)
    lse = logsumexp(out["log_prob"], axis=1)
    assert (lse - out["log_prob"].max(axis=1)).sum() > 3 * np.log(np.finfo(np.float64).max)
    assert rel_err(out["obj"][0, 0], lse.sum()) < KERNEL_TOL


@pytest.mark.parametrize("scale", [1e-75, 1e75])
@pytest.mark.parametrize("kind", ["full", "tied"])
@pytest.mark.parametrize("compiled", COMPILED_BACKENDS)
def test_dense_missing_kernels_at_extreme_scales(compiled, kind, scale):
    """Data scaled by 1e-75 (precisions near 1e150) or 1e75 (near 1e-150).

    The determinant of a block Lambda_mm of two or more missing coordinates
    is then out of [1e-280, 1e280] (or overflows), so the compiled kernels
    must take its log from the logs of the pivots rather than from their
    product; the results are the unscaled ones, scaled.
    """
    rng = np.random.default_rng(44 + len(kind))
    case = missing_kernel_case(kind, np.float64, rng)
    d = case["X"].shape[1]
    for name in ("X", "means", "center"):
        case[name] = case[name] * scale
    case["prec_chol"] = case["prec_chol"] / scale
    case["log_norm"] = case["log_norm"] - d * np.log(scale)
    outs = {name: run_missing_kernel(backends._load(name), kind, case, False, 64, True)
            for name in ("numpy", compiled)}
    assert np.isfinite(outs["numpy"]["log_prob"]).all()
    for name, ref in outs["numpy"].items():
        assert not np.isnan(outs[compiled][name]).any(), f"{name} left unwritten"
        if name == "labels":
            np.testing.assert_array_equal(outs[compiled][name], ref)
        else:
            assert rel_err(outs[compiled][name], ref) < KERNEL_TOL, name


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("kind", COV_TYPES + ("bernoulli",))
def test_missing_kernels_without_nan_equal_the_complete_data_kernels(backend, kind, hard):
    """On data without NaN the expected statistics are the plain ones."""
    rng = np.random.default_rng(30 + len(kind) + 2 * hard)
    case = missing_kernel_case(kind, np.float64, rng)
    case["X"] = np.nan_to_num(case["X"], nan=0.5)
    module = backends._load(backend)
    missing = run_missing_kernel(module, kind, case, hard, 64, True)
    d = case["X"].shape[1]
    plain = {name: np.full_like(missing[name], np.nan)
             for name in ("log_prob", "nk", "sx", "sxx", "obj") if name in missing}
    plain["labels"] = case["labels"].copy()
    if kind == "bernoulli":
        module.estep_bernoulli(case["X"], case["sample_weight"], case["logit"],
                               case["log_norm"], hard, 64, plain["labels"],
                               plain["log_prob"], plain["nk"], plain["sx"], plain["obj"])
    else:
        getattr(module, f"estep_{kind}")(
            case["X"], case["sample_weight"], case["means"], case["prec_chol"],
            case["log_norm"], case["center"], hard, 64, plain["labels"], plain["log_prob"],
            plain["nk"], plain["sx"], plain["sxx"], plain["obj"])
        if kind in ("full", "tied"):
            plain["sxx"] = np.tril(plain["sxx"])
        np.testing.assert_array_equal(missing["imputed"], case["X"])
    for name, ref in plain.items():
        if name == "labels":
            np.testing.assert_array_equal(missing[name], ref)
        else:
            assert rel_err(missing[name], ref) < KERNEL_TOL, name
    # every coordinate observed: nko is nk for each feature
    assert rel_err(missing["nko"], np.repeat(missing["nk"][:, :, None], d, axis=2)) < 1e-15


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("compiled", COMPILED_BACKENDS)
def test_compiled_and_numpy_sqdist_missing_agree(compiled, dtype):
    rng = np.random.default_rng(9)
    X = hide(rng.standard_normal((301, 6)) * 3, 0.25, rng).astype(dtype)
    X[::50] = np.nan
    centers = rng.standard_normal((4, 6)) * 3
    outs = {}
    for name in ("numpy", compiled):
        outs[name] = np.full((301, 4), np.nan)
        backends._load(name).sqdist_missing(X, centers, 64, outs[name])
    assert rel_err(outs[compiled], outs["numpy"]) < KERNEL_TOL
    _, dist = naive.kmeans_assign(X.astype(np.float64), centers)
    assert rel_err(outs["numpy"], dist) < KERNEL_TOL
