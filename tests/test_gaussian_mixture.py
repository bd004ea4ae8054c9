"""fastem.GaussianMixture against scikit-learn, scipy and hand computations."""

import warnings

import numpy as np
import pytest
from scipy.linalg import solve_triangular
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.base import clone
from sklearn.cluster import KMeans as SkKMeans
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fastem import BernoulliMixture, ConvergenceWarning, GaussianMixture
from fastem import _linalg

from testing_utils import rel_err

COV_TYPES = ("full", "tied", "diag", "spherical")
PARAM_TOL = 1e-8     # fitted parameters vs scikit-learn (observed: ~1e-13)
BOUND_TOL = 1e-10    # lower bounds vs scikit-learn (observed: ~1e-14)

# n_components and reg_covar per data set.  digits has pixels that are 0 in
# every image: a visible reg_covar keeps its covariances well conditioned, so
# that the comparison measures arithmetic, not the conditioning of the problem.
SETTINGS = {"iris": (3, 1e-6), "wine": (3, 1e-6), "digits": (6, 1e-1)}
FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_")


@pytest.fixture(params=sorted(SETTINGS))
def dataset(request, iris, wine, digits):
    X = {"iris": iris, "wine": wine, "digits": digits}[request.param]
    return request.param, X


def class_parameters(X, labels, k, cov_type, reg_covar):
    """Weights, means, covariances and precisions of a hard partition, by hand."""
    n, d = X.shape
    weights = np.array([np.mean(labels == j) for j in range(k)])
    means = np.array([X[labels == j].mean(axis=0) for j in range(k)])
    scatter = [(X[labels == j] - means[j]).T @ (X[labels == j] - means[j]) for j in range(k)]
    counts = np.array([np.sum(labels == j) for j in range(k)])
    if cov_type == "full":
        cov = np.array([s / c + reg_covar * np.eye(d) for s, c in zip(scatter, counts)])
        prec = np.linalg.inv(cov)
    elif cov_type == "tied":
        cov = sum(scatter) / n + reg_covar * np.eye(d)
        prec = np.linalg.inv(cov)
    elif cov_type == "diag":
        cov = np.array([np.diag(s) / c + reg_covar for s, c in zip(scatter, counts)])
        prec = 1.0 / cov
    else:
        cov = np.array([np.diag(s).mean() / c + reg_covar for s, c in zip(scatter, counts)])
        prec = 1.0 / cov
    return weights, means, cov, prec


def dense_covariances(cov_type, covariances, k, d):
    if cov_type == "full":
        return covariances
    if cov_type == "tied":
        return np.repeat(covariances[None], k, axis=0)
    if cov_type == "diag":
        return np.stack([np.diag(c) for c in covariances])
    return np.stack([c * np.eye(d) for c in covariances])


def scipy_log_prob(X, weights, means, covariances, cov_type):
    """(n, k) log(w_k N(x_i; mu_k, Sigma_k)) from scipy.stats."""
    k, d = means.shape
    covs = dense_covariances(cov_type, covariances, k, d)
    return np.stack([np.log(weights[j]) + multivariate_normal(means[j], covs[j]).logpdf(X)
                     for j in range(k)], axis=1)


_INITS = {}


def same_init(name, X, cov_type):
    """Initial parameters shared by both libraries: a K-means partition, equal weights."""
    key = (name, cov_type)
    if key not in _INITS:
        k, reg = SETTINGS[name]
        labels = SkKMeans(k, n_init=1, random_state=0).fit(X).labels_
        _, means, _, prec = class_parameters(X, labels, k, cov_type, reg)
        _INITS[key] = dict(weights_init=np.full(k, 1.0 / k), means_init=means,
                           precisions_init=prec)
    return _INITS[key]


_SKLEARN = {}


def sklearn_fit(name, X, cov_type, tag, **params):
    """scikit-learn's fit, computed once per (name, cov_type, tag), shared by both backends."""
    key = (name, cov_type, tag)
    if key not in _SKLEARN:
        k, reg = SETTINGS[name]
        model = SkGaussianMixture(k, covariance_type=cov_type, reg_covar=reg, max_iter=200,
                                  **params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            _SKLEARN[key] = model.fit(X)
    return _SKLEARN[key]


def assert_same_fit(ours, theirs, param_tol=PARAM_TOL):
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.converged_ == theirs.converged_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert rel_err(getattr(ours, name), getattr(theirs, name)) < param_tol, name
    np.testing.assert_allclose(ours.lower_bounds_, theirs.lower_bounds_, rtol=BOUND_TOL)
    assert ours.lower_bound_ == pytest.approx(theirs.lower_bound_, rel=BOUND_TOL)


# ---------------------------------------------------------------- scikit-learn oracle
@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_matches_sklearn_at_the_same_init(backend, dataset, cov_type):
    name, X = dataset
    inits = same_init(name, X, cov_type)
    # init_params is irrelevant when all three *_init are given; "random_from_data"
    # is just the cheapest for scikit-learn, which computes it anyway
    theirs = sklearn_fit(name, X, cov_type, "same init", init_params="random_from_data",
                         random_state=0, **inits)
    k, reg = SETTINGS[name]
    ours = GaussianMixture(k, covariance_type=cov_type, reg_covar=reg, max_iter=200,
                           **inits).fit(X)
    assert theirs.n_iter_ > 2  # the comparison covers several EM iterations
    assert_same_fit(ours, theirs)
    assert rel_err(ours.precisions_, theirs.precisions_) < PARAM_TOL


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_matches_sklearn_with_default_init_and_random_state(backend, dataset, cov_type):
    """fastem's K-means initialisation consumes the RNG exactly as scikit-learn's."""
    name, X = dataset
    k, reg = SETTINGS[name]
    theirs = sklearn_fit(name, X, cov_type, "default init", random_state=1)
    ours = GaussianMixture(k, covariance_type=cov_type, reg_covar=reg, max_iter=200,
                           random_state=1).fit(X)
    assert_same_fit(ours, theirs)


@pytest.mark.parametrize("init_params", ["random", "k-means++", "random_from_data"])
@pytest.mark.parametrize("cov_type", ["full", "diag"])
def test_matches_sklearn_with_other_init_params(backend, wine, cov_type, init_params):
    # These inits start from covariances equal to reg_covar (one point per
    # component), a badly conditioned first E-step for tiny reg_covar; 0.1
    # keeps the comparison about arithmetic.
    kwargs = dict(covariance_type=cov_type, init_params=init_params, reg_covar=0.1,
                  random_state=3, n_init=2, max_iter=300)
    theirs = SkGaussianMixture(3, **kwargs).fit(wine)
    ours = GaussianMixture(3, **kwargs).fit(wine)
    assert ours.n_iter_ == theirs.n_iter_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert rel_err(getattr(ours, name), getattr(theirs, name)) < PARAM_TOL, name
    np.testing.assert_allclose(ours.lower_bounds_[1:], theirs.lower_bounds_[1:],
                               rtol=BOUND_TOL)
    if init_params == "random":
        assert ours.lower_bounds_[0] == pytest.approx(theirs.lower_bounds_[0], rel=BOUND_TOL)
    else:
        # scikit-learn leaves the initial weights of these two inits at
        # n_k / n_samples = 1 / n_samples (they sum to k / n, not 1); fastem
        # normalises them to 1/k, so its first lower bound is higher by log(n / k).
        # That bound is about -8e4 here (one-point components of variance
        # reg_covar), and scikit-learn's diag variance E[x^2] - 2 mu E[x] + mu^2
        # of a one-point component keeps only ~1e-8 of its digits: compare to 1e-7.
        n = wine.shape[0]
        assert ours.lower_bounds_[0] - np.log(n / 3) == pytest.approx(
            theirs.lower_bounds_[0], rel=1e-7)
        assert abs(ours.lower_bounds_[0] - theirs.lower_bounds_[0] - np.log(n / 3)) < 0.1


def test_inference_matches_sklearn(backend, iris):
    for cov_type in COV_TYPES:
        inits = same_init("iris", iris, cov_type)
        theirs = sklearn_fit("iris", iris, cov_type, "same init",
                             init_params="random_from_data", random_state=0, **inits)
        ours = GaussianMixture(3, covariance_type=cov_type, max_iter=200, random_state=0,
                               **inits).fit(iris)
        X_new = iris[::7] + 0.05
        np.testing.assert_array_equal(ours.predict(X_new), theirs.predict(X_new))
        proba = ours.predict_proba(X_new)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-14)
        np.testing.assert_allclose(proba, theirs.predict_proba(X_new), rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(ours.score_samples(X_new), theirs.score_samples(X_new),
                                   rtol=1e-10)
        assert ours.score(X_new) == pytest.approx(theirs.score(X_new), rel=1e-10)
        assert ours.bic(iris) == pytest.approx(theirs.bic(iris), rel=1e-10)
        assert ours.aic(iris) == pytest.approx(theirs.aic(iris), rel=1e-10)
        # sampling draws from the RNG in the same order as scikit-learn
        X_s, y_s = ours.sample(50)
        X_t, y_t = theirs.sample(50)
        np.testing.assert_array_equal(y_s, y_t)
        np.testing.assert_allclose(X_s, X_t, rtol=1e-8)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_score_samples_is_the_scipy_mixture_density(backend, wine, cov_type):
    model = GaussianMixture(3, covariance_type=cov_type, random_state=0).fit(wine)
    lp = scipy_log_prob(wine, model.weights_, model.means_, model.covariances_, cov_type)
    np.testing.assert_allclose(model.score_samples(wine), logsumexp(lp, axis=1), rtol=1e-10)
    np.testing.assert_allclose(model.predict_proba(wine),
                               np.exp(lp - logsumexp(lp, axis=1)[:, None]), atol=1e-10)
    np.testing.assert_array_equal(model.predict(wine), np.argmax(lp, axis=1))
    # the reported precisions are the inverses of the covariances
    k, d = model.means_.shape
    covs = dense_covariances(cov_type, model.covariances_, k, d)
    precs = dense_covariances(cov_type, model.precisions_, k, d)
    eye = np.broadcast_to(np.eye(d), covs.shape)
    np.testing.assert_allclose(covs @ precs, eye, atol=1e-8)
    if cov_type == "full":
        U = model.precisions_cholesky_
        np.testing.assert_array_equal(U, np.triu(U))
        np.testing.assert_allclose(U @ np.swapaxes(U, 1, 2), model.precisions_, rtol=1e-12)


# ---------------------------------------------------------------- EM behaviour
@pytest.mark.parametrize("cov_type", COV_TYPES)
@pytest.mark.parametrize("assignment", ["soft", "hard"])
def test_lower_bound_never_decreases(backend, iris, wine, cov_type, assignment):
    # reg_covar=0: with reg_covar > 0 the M-step is not the exact maximiser and
    # EM's monotonicity only holds up to O(reg_covar) (seen: -4e-12 on iris tied)
    for X in (iris, wine):
        with pytest.warns(ConvergenceWarning):
            model = GaussianMixture(3, covariance_type=cov_type, reg_covar=0.0, tol=0,
                                    max_iter=40, random_state=0,
                                    assignment=assignment).fit(X)
        steps = np.diff(model.lower_bounds_)
        # 1e-12: round-off of a mean of ~n log-densities near convergence,
        # where the true increase is 0 (seen: up to 9e-14)
        assert steps.min() > -1e-12, steps.min()
        assert model.lower_bounds_[-1] - model.lower_bounds_[0] > 1e-3


@pytest.mark.parametrize("max_iter", [1, 7])
def test_tol_zero_runs_exactly_max_iter(backend, iris, max_iter):
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        model = GaussianMixture(2, tol=0, max_iter=max_iter, random_state=0).fit(iris)
    assert model.n_iter_ == max_iter
    assert len(model.lower_bounds_) == max_iter
    assert model.converged_ is False
    assert model.lower_bound_ == model.lower_bounds_[-1]


def test_converges_when_the_change_is_below_tol(backend, iris):
    model = GaussianMixture(3, tol=1e-3, random_state=0).fit(iris)
    lb = model.lower_bounds_
    assert model.converged_
    assert abs(lb[-1] - lb[-2]) < 1e-3
    assert all(abs(b - a) >= 1e-3 for a, b in zip(lb[:-2], lb[1:-1]))


def test_lower_bound_of_first_iteration_by_hand(backend, iris):
    """lower_bounds_[0] is the mean log-likelihood (soft) or mean max (hard) at the init."""
    for cov_type in COV_TYPES:
        inits = same_init("iris", iris, cov_type)
        lp = scipy_log_prob(iris, inits["weights_init"], inits["means_init"],
                            _covariances_from_precisions(inits["precisions_init"], cov_type),
                            cov_type)
        for assignment, expected in (("soft", logsumexp(lp, axis=1).mean()),
                                     ("hard", lp.max(axis=1).mean())):
            with pytest.warns(ConvergenceWarning):
                model = GaussianMixture(3, covariance_type=cov_type, max_iter=1,
                                        assignment=assignment, **inits).fit(iris)
            assert model.lower_bounds_[0] == pytest.approx(expected, rel=1e-12)


def _covariances_from_precisions(precisions, cov_type):
    if cov_type in ("full", "tied"):
        return np.linalg.inv(precisions)
    return 1.0 / precisions


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_one_hard_iteration_by_hand(backend, wine, cov_type):
    """Classification EM: labels = argmax of the scipy densities, then class statistics."""
    reg = 1e-6
    rng = np.random.default_rng(0)
    labels0 = SkKMeans(3, n_init=1, random_state=0).fit(wine).labels_
    _, means, _, prec = class_parameters(wine, labels0, 3, cov_type, reg)
    weights = np.array([0.5, 0.3, 0.2])
    means = means + rng.normal(scale=0.05, size=means.shape) * wine.std(axis=0)
    lp = scipy_log_prob(wine, weights, means, _covariances_from_precisions(prec, cov_type),
                        cov_type)
    labels = np.argmax(lp, axis=1)
    assert np.any(labels != labels0)
    exp_w, exp_m, exp_c, _ = class_parameters(wine, labels, 3, cov_type, reg)
    with pytest.warns(ConvergenceWarning):
        model = GaussianMixture(3, covariance_type=cov_type, reg_covar=reg, max_iter=1,
                                assignment="hard", weights_init=weights, means_init=means,
                                precisions_init=prec).fit(wine)
    assert rel_err(model.weights_, exp_w) < 1e-12
    assert rel_err(model.means_, exp_m) < 1e-12
    assert rel_err(model.covariances_, exp_c) < 1e-10


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_hard_assignment_fixed_point_is_a_partition(backend, iris, cov_type):
    """At convergence of classification EM the parameters are the class statistics."""
    model = GaussianMixture(3, covariance_type=cov_type, assignment="hard", tol=0,
                            max_iter=100, random_state=0)
    with pytest.warns(ConvergenceWarning):
        labels = model.fit_predict(iris)
    np.testing.assert_array_equal(labels, model.predict(iris))
    exp_w, exp_m, exp_c, _ = class_parameters(iris, labels, 3, cov_type, model.reg_covar)
    assert rel_err(model.weights_, exp_w) < 1e-12
    assert rel_err(model.means_, exp_m) < 1e-12
    assert rel_err(model.covariances_, exp_c) < 1e-10
    # hard bound <= soft log-likelihood at the same parameters (max <= logsumexp)
    assert model.lower_bound_ <= model.score(iris) + 1e-12


@pytest.mark.parametrize("cov_type", COV_TYPES)
@pytest.mark.parametrize("max_iter", [2, 100])
@pytest.mark.parametrize("assignment", ["soft", "hard"])
def test_fit_predict_equals_fit_then_predict(backend, wine, max_iter, assignment, cov_type):
    kwargs = dict(covariance_type=cov_type, random_state=2, max_iter=max_iter,
                  assignment=assignment)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = GaussianMixture(3, **kwargs).fit_predict(wine)
        model = GaussianMixture(3, **kwargs).fit(wine)
    np.testing.assert_array_equal(labels, model.predict(wine))
    # the final E-step and predict write labels without statistics; the most
    # probable component from the log-densities, computed here, agrees
    log_prob = scipy_log_prob(wine, model.weights_, model.means_, model.covariances_,
                              cov_type)
    np.testing.assert_array_equal(labels, np.argmax(log_prob, axis=1))



class _CountingKernels:
    """A kernel table that records the name of every E-step kernel called."""

    def __init__(self, kernels, calls):
        self._kernels = kernels
        self._calls = calls

    def __getattr__(self, name):
        kernel = getattr(self._kernels, name)
        if not name.startswith("estep_"):
            return kernel

        def run(*args):
            self._calls.append(name)
            return kernel(*args)
        return run


@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize("assignment", ["soft", "hard"])
@pytest.mark.parametrize("model", ["gaussian", "bernoulli"])
def test_fit_runs_no_final_e_step_for_labels_it_discards(monkeypatch, backend, wine, model,
                                                        assignment, missing):
    """``fit`` returns no labels, so it runs max_iter E-steps and
    ``fit_predict`` one more, the final one for the labels.  With NaN,
    BernoulliMixture's ``fit`` runs it too (its check of coordinates that no
    row of a component observes reads the final statistics); GaussianMixture
    has no such check, and its ``fit`` runs no final E-step with NaN either.
    The fitted attributes are the same bits either way."""
    import fastem._mixture_base as mixture_base

    calls = []
    get_kernels = mixture_base.get_kernels
    monkeypatch.setattr(mixture_base, "get_kernels",
                        lambda: _CountingKernels(get_kernels(), calls))
    kwargs = dict(max_iter=4, tol=0.0, random_state=0, init_params="random",
                  assignment=assignment)
    if model == "gaussian":
        X = wine.copy()
        cls = GaussianMixture
        kwargs["covariance_type"] = "diag"
        attributes = ("weights_", "means_", "covariances_", "precisions_cholesky_")
        kernel = "estep_diag"
    else:
        X = (wine > np.median(wine, axis=0)).astype(np.float64)
        cls = BernoulliMixture
        attributes = ("weights_", "means_")
        kernel = "estep_bernoulli"
    if missing:
        X[::7, 1] = np.nan
        kernel += "_missing"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = cls(3, **kwargs).fit(X)
        fit_calls = len(calls)
        calls.clear()
        other = cls(3, **kwargs)
        labels = other.fit_predict(X)
        fit_predict_calls = len(calls)
    assert set(calls) == {kernel}
    assert fit_predict_calls == 5
    assert fit_calls == (5 if missing and model == "bernoulli" else 4)
    for name in attributes + ("lower_bound_", "lower_bounds_", "n_iter_", "converged_"):
        np.testing.assert_array_equal(getattr(fitted, name), getattr(other, name))
    np.testing.assert_array_equal(fitted.predict(X), labels)


def test_sample_shapes_and_labels(backend, wine):
    for cov_type in COV_TYPES:
        model = GaussianMixture(3, covariance_type=cov_type, random_state=0).fit(wine)
        X, y = model.sample(400)
        assert X.shape == (400, wine.shape[1]) and y.shape == (400,)
        assert set(np.unique(y)) <= {0, 1, 2}
        assert np.all(np.diff(y) >= 0)  # grouped by component, like scikit-learn
        # samples of a component lie near its mean (within 6 standard deviations)
        k, d = model.means_.shape
        covs = dense_covariances(cov_type, model.covariances_, k, d)
        for j in np.unique(y):
            z = (X[y == j] - model.means_[j]) / np.sqrt(np.diag(covs[j]))
            assert np.abs(z).max() < 6
    with pytest.raises(ValueError, match="n_samples"):
        model.sample(0)


def test_warm_start_continues_where_it_stopped(backend, iris):
    inits = same_init("iris", iris, "full")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        once = GaussianMixture(3, tol=0, max_iter=10, **inits).fit(iris)
        warm = GaussianMixture(3, tol=0, max_iter=4, warm_start=True, **inits)
        warm.fit(iris)
        first = list(warm.lower_bounds_)
        warm.set_params(max_iter=6).fit(iris)
    assert warm.n_iter_ == 6
    np.testing.assert_allclose(first + warm.lower_bounds_, once.lower_bounds_, rtol=1e-13)
    for name in FITTED:
        assert rel_err(getattr(warm, name), getattr(once, name)) < 1e-12, name
    # without warm_start a second fit starts again from the init
    cold = GaussianMixture(3, tol=0, max_iter=4, **inits)
    with pytest.warns(ConvergenceWarning):
        cold.fit(iris)
        cold.fit(iris)
    np.testing.assert_array_equal(cold.lower_bounds_, first)


def test_n_init_keeps_the_best_run(backend, wine):
    kwargs = dict(covariance_type="full", init_params="random", reg_covar=1e-3)
    shared = np.random.RandomState(5)
    runs = [GaussianMixture(3, random_state=shared, **kwargs).fit(wine) for _ in range(4)]
    bounds = [run.lower_bound_ for run in runs]
    assert max(bounds) - min(bounds) > 1e-3  # the runs really differ
    best = runs[int(np.argmax(bounds))]
    model = GaussianMixture(3, n_init=4, random_state=5, **kwargs).fit(wine)
    assert model.lower_bound_ == max(bounds)
    np.testing.assert_array_equal(model.means_, best.means_)
    assert model.lower_bounds_ == best.lower_bounds_
    assert model.n_iter_ == best.n_iter_
    theirs = SkGaussianMixture(3, n_init=4, random_state=5, **kwargs).fit(wine)
    assert model.lower_bound_ == pytest.approx(theirs.lower_bound_, rel=BOUND_TOL)
    assert rel_err(model.means_, theirs.means_) < PARAM_TOL


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_fixed_parameters_keep_their_init(backend, wine, cov_type):
    inits = same_init("wine", wine, cov_type)
    weights = np.array([0.2, 0.3, 0.5])
    n, d = wine.shape
    n_free = 3 * d + 2 + _n_cov_params(cov_type, 3, d)  # means, weights, covariances
    for fixed in [("means",), ("weights",), ("covariances",), ("weights", "covariances"),
                  "means"]:
        model = GaussianMixture(3, covariance_type=cov_type, weights_init=weights,
                                means_init=inits["means_init"],
                                precisions_init=inits["precisions_init"], fixed=fixed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(wine)
        names = {fixed} if isinstance(fixed, str) else set(fixed)
        if "means" in names:
            np.testing.assert_array_equal(model.means_, inits["means_init"])
        else:
            assert rel_err(model.means_, inits["means_init"]) > 1e-3
        if "weights" in names:
            np.testing.assert_array_equal(model.weights_, weights)
        else:
            assert rel_err(model.weights_, weights) > 1e-3
        if "covariances" in names:
            assert rel_err(model.precisions_, inits["precisions_init"]) < 1e-10
        else:
            assert rel_err(model.precisions_, inits["precisions_init"]) > 1e-3
        # a partial M-step still never lowers the bound (reg_covar's O(1e-6) aside)
        assert np.diff(model.lower_bounds_).min() > -1e-9
        # fixed parameters are not counted as free parameters in the criteria
        n_fixed = (("means" in names) * 3 * d + ("weights" in names) * 2
                   + ("covariances" in names) * _n_cov_params(cov_type, 3, d))
        log_lik = model.score(wine) * n
        assert model.bic(wine) == pytest.approx(-2 * log_lik + (n_free - n_fixed) * np.log(n),
                                                rel=1e-12)
        assert model.aic(wine) == pytest.approx(-2 * log_lik + 2 * (n_free - n_fixed),
                                                rel=1e-12)


def _n_cov_params(cov_type, k, d):
    return {"full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": k * d,
            "spherical": k}[cov_type]


def test_fixed_means_m_step_by_hand(backend, iris):
    """With means fixed, the covariance M-step is taken about the fixed means."""
    inits = same_init("iris", iris, "full")
    means = inits["means_init"] + 0.2
    with pytest.warns(ConvergenceWarning):
        model = GaussianMixture(3, max_iter=1, means_init=means, fixed=("means",),
                                weights_init=inits["weights_init"],
                                precisions_init=inits["precisions_init"]).fit(iris)
    lp = scipy_log_prob(iris, inits["weights_init"], means,
                        np.linalg.inv(inits["precisions_init"]), "full")
    resp = np.exp(lp - logsumexp(lp, axis=1)[:, None])
    nk = resp.sum(axis=0)
    for j in range(3):
        diff = iris - means[j]
        cov = (resp[:, j, None] * diff).T @ diff / nk[j] + 1e-6 * np.eye(4)
        assert rel_err(model.covariances_[j], cov) < 1e-10
    assert rel_err(model.weights_, nk / nk.sum()) < 1e-12


# ---------------------------------------------------------------- sample_weight
@pytest.mark.parametrize("cov_type", COV_TYPES)
@pytest.mark.parametrize("assignment", ["soft", "hard"])
def test_integer_weights_equal_repeated_rows(backend, wine, cov_type, assignment):
    rng = np.random.default_rng(4)
    counts = rng.integers(0, 4, size=len(wine))  # zeros drop rows
    inits = same_init("wine", wine, cov_type)
    kwargs = dict(covariance_type=cov_type, assignment=assignment, max_iter=300, **inits)
    weighted = GaussianMixture(3, **kwargs).fit(wine, sample_weight=counts)
    repeated = GaussianMixture(3, **kwargs).fit(np.repeat(wine, counts, axis=0))
    assert weighted.n_iter_ == repeated.n_iter_
    for name in FITTED:
        assert rel_err(getattr(weighted, name), getattr(repeated, name)) < 1e-10, name
    np.testing.assert_allclose(weighted.lower_bounds_, repeated.lower_bounds_, rtol=1e-10)


def test_uniform_weights_change_nothing(backend, iris):
    base = GaussianMixture(3, random_state=0).fit(iris)
    scaled = GaussianMixture(3, random_state=0).fit(iris, sample_weight=np.full(150, 2.5))
    assert base.n_iter_ == scaled.n_iter_
    for name in FITTED:
        assert rel_err(getattr(scaled, name), getattr(base, name)) < 1e-12, name


# ---------------------------------------------------------------- invariances
@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_float32_input(backend, wine, cov_type):
    inits = same_init("wine", wine, cov_type)
    X32 = wine.astype(np.float32)
    X32_copy = X32.copy()
    kwargs = dict(covariance_type=cov_type, max_iter=300, **inits)
    ours32 = GaussianMixture(3, **kwargs).fit(X32)
    assert X32.dtype == np.float32
    np.testing.assert_array_equal(X32, X32_copy)
    assert ours32.means_.dtype == np.float64
    # float32 data are read exactly and every sum is in float64: the fit equals
    # the float64 fit of the same (rounded) values, to rounding
    ours64 = GaussianMixture(3, **kwargs).fit(X32.astype(np.float64))
    assert ours32.n_iter_ == ours64.n_iter_
    for name in FITTED:
        assert rel_err(getattr(ours32, name), getattr(ours64, name)) < 1e-12, name
    # against the unrounded data: rounding X to float32 moves it by up to
    # 6e-8 relative, which the fit carries at most a few times amplified
    full = GaussianMixture(3, **kwargs).fit(wine)
    for name in ("weights_", "means_", "covariances_"):
        assert rel_err(getattr(ours32, name), getattr(full, name)) < 1e-5, name
    np.testing.assert_allclose(ours32.predict_proba(X32), full.predict_proba(wine),
                               atol=1e-5)


def test_c_and_fortran_order_give_the_same_fit(backend, wine):
    F = np.asfortranarray(wine)
    for cov_type in COV_TYPES:
        c = GaussianMixture(3, covariance_type=cov_type, random_state=0).fit(wine)
        f = GaussianMixture(3, covariance_type=cov_type, random_state=0).fit(F)
        assert c.n_iter_ == f.n_iter_
        # The kernels read the same values either way (test_kernels checks their
        # outputs are bit-identical), but NumPy's own reductions in the
        # initialisation (column means, resp^T @ X) order their additions by
        # memory layout: differences of a few ulps, carried through the fit.
        for name in FITTED:
            assert rel_err(getattr(f, name), getattr(c, name)) < 1e-12, name
        np.testing.assert_allclose(f.score_samples(F), c.score_samples(wine), rtol=1e-12)
        # the same fitted model predicts identically on either layout
        np.testing.assert_array_equal(c.score_samples(wine), c.score_samples(F))
        np.testing.assert_array_equal(c.predict_proba(wine), c.predict_proba(F))


def test_strided_input(backend, wine):
    """A column slice, as scikit-learn's load_wine().data itself is."""
    wide = np.zeros((len(wine), 2 * wine.shape[1]))
    wide[:, 1::2] = wine
    strided = wide[:, 1::2]
    assert not strided.flags.c_contiguous and not strided.flags.f_contiguous
    for cov_type in ("diag", "spherical"):  # one numba specialisation serves both
        c = GaussianMixture(3, covariance_type=cov_type, random_state=0).fit(wine)
        s = GaussianMixture(3, covariance_type=cov_type, random_state=0).fit(strided)
        assert s.n_iter_ == c.n_iter_
        for name in FITTED:  # NumPy reductions may add in another order: see above
            assert rel_err(getattr(s, name), getattr(c, name)) < 1e-12, name
        np.testing.assert_array_equal(c.predict_proba(strided), c.predict_proba(wine))


def test_inputs_are_never_modified(backend, iris):
    for cov_type in COV_TYPES:
        inits = {k: v.copy() for k, v in same_init("iris", iris, cov_type).items()}
        X = iris[::-1].copy()  # not the session's array
        X32 = X.astype(np.float32)
        w = np.linspace(0.0, 2.0, len(X))
        before = [a.copy() for a in (X, X32, w, *inits.values())]
        model = GaussianMixture(3, covariance_type=cov_type, **inits)
        model.fit(X, sample_weight=w)
        model.fit_predict(X32, sample_weight=w)
        model.predict(X)
        model.predict_proba(X32)
        model.score_samples(X)
        model.bic(X)
        for a, b in zip((X, X32, w, *inits.values()), before):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype
        # the fitted means are not the caller's means_init array
        assert not np.shares_memory(model.means_, inits["means_init"])


def test_list_and_integer_input(backend):
    X = [[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]]
    model = GaussianMixture(2, random_state=0).fit(X)
    assert model.means_.dtype == np.float64
    assert sorted(np.round(model.means_[:, 0], 6)) == pytest.approx([1 / 3, 31 / 3])
    np.testing.assert_array_equal(model.predict(X), model.predict(np.array(X, float)))


# ---------------------------------------------------------------- scikit-learn API
def test_get_params_set_params_and_clone(backend):
    model = GaussianMixture(4, covariance_type="diag", reg_covar=1e-3, fixed=("weights",),
                            weights_init=np.full(4, 0.25))
    params = model.get_params()
    assert params["n_components"] == 4 and params["covariance_type"] == "diag"
    assert set(params) == {
        "n_components", "covariance_type", "tol", "reg_covar", "max_iter", "n_init",
        "init_params", "weights_init", "means_init", "precisions_init", "random_state",
        "warm_start", "verbose", "assignment", "fixed"}
    twin = clone(model)
    assert twin is not model and type(twin) is GaussianMixture
    assert twin.get_params()["reg_covar"] == 1e-3
    assert twin.fixed == ("weights",)
    assert model.set_params(tol=0.5, n_init=2) is model
    assert model.tol == 0.5 and model.n_init == 2
    with pytest.raises(ValueError, match="invalid parameter 'n_clusters'"):
        model.set_params(n_clusters=3)
    assert "covariance_type='diag'" in repr(model)
    fitted = GaussianMixture(2, random_state=0).fit(np.arange(20.0).reshape(10, 2))
    assert not hasattr(clone(fitted), "means_")


def test_in_a_pipeline(backend, wine):
    pipe = Pipeline([("scale", StandardScaler()),
                     ("gmm", GaussianMixture(3, covariance_type="full", random_state=0))])
    labels = pipe.fit(wine).predict(wine)
    scaled = StandardScaler().fit_transform(wine)
    direct = GaussianMixture(3, covariance_type="full", random_state=0).fit(scaled)
    np.testing.assert_array_equal(labels, direct.predict(scaled))
    np.testing.assert_array_equal(pipe.named_steps["gmm"].means_, direct.means_)
    assert pipe.score(wine) == pytest.approx(direct.score(scaled), rel=1e-14)
    # the standardised wine data separate the three cultivars well
    from sklearn.datasets import load_wine
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(load_wine().target, labels) > 0.8


def test_verbose_output(backend, iris, capsys):
    GaussianMixture(2, verbose=2, random_state=0).fit(iris)
    out = capsys.readouterr().out
    assert "Initialization 0" in out and "Iteration 1" in out and "converged" in out


@pytest.mark.parametrize("shape", [(1,), (2,), (3,), (5,), (8,), (17,), (64,), (4, 33), (8, 64)],
                         ids=str)
def test_invert_lower_matches_scipy(shape):
    # lower Cholesky factors of covariances, every other one with eigenvalues
    # down to 1e-3; d = 1, powers of two and others (padded to a power of two)
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    d = shape[-1]
    stack = []
    for j in range(int(np.prod(shape[:-1]))):
        A = rng.standard_normal((d, d))
        stack.append(np.linalg.cholesky(A @ A.T / d + np.eye(d) * (1e-3 if j % 2 else 1.0)))
    L = np.array(stack).reshape(shape[:-1] + (d, d))
    before = L.copy()
    inv = _linalg._invert_lower(L)
    np.testing.assert_array_equal(L, before)
    assert inv.shape == L.shape
    flat = inv.reshape(-1, d, d)
    for got, factor in zip(flat, L.reshape(-1, d, d)):
        expected = solve_triangular(factor, np.eye(d), lower=True)
        assert np.all(np.triu(got, 1) == 0.0)
        # relative to each row's largest entry: the inverse's entries span
        # many magnitudes, and rounding is relative to the sums they come from
        scale = np.abs(expected).max(axis=1, keepdims=True)
        assert np.max(np.abs(got - expected) / scale) < 1e-12


@pytest.mark.parametrize("d", [1, 2, 5])
def test_symmetric_from_lower_and_stacked_cholesky(d):
    """The symmetric matrices from their lower triangles (whatever lies above
    the diagonal), and the stack's Cholesky factors taken in one call: the
    same bits as numpy's triangles and as one factorisation a matrix."""
    rng = np.random.default_rng(d)
    A = rng.standard_normal((4, d, d))
    full = A @ np.swapaxes(A, 1, 2) + np.eye(d)
    junk_above = np.tril(full) + np.triu(rng.standard_normal((4, d, d)), 1)
    sym = _linalg.symmetric_from_lower(junk_above)
    np.testing.assert_array_equal(sym, np.tril(full) + np.swapaxes(np.tril(full, -1), 1, 2))
    np.testing.assert_array_equal(sym, np.swapaxes(sym, 1, 2))
    factors = _linalg._cholesky(sym, str, 1e-6)
    for got, matrix in zip(factors, sym):
        np.testing.assert_array_equal(got, np.linalg.cholesky(matrix))
    bad = sym.copy()
    bad[2] = -np.eye(d)
    with pytest.raises(ValueError, match="component 2 is not"):
        _linalg._cholesky(bad, lambda j: f"component {j}", 1e-6)
