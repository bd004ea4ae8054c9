"""fastem.BernoulliMixture against hand computations, scipy.stats and a NumPy EM."""

import warnings

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp
from scipy.stats import bernoulli

from fastem import BernoulliMixture, ConvergenceWarning

from testing_utils import rel_err


@pytest.fixture(scope="module")
def generated():
    """3000 rows of 24 binary features from 3 well separated components."""
    rng = np.random.default_rng(0)
    weights = np.array([0.5, 0.3, 0.2])
    means = rng.choice([0.1, 0.3, 0.7, 0.9], size=(3, 24))
    y = rng.choice(3, size=3000, p=weights)
    X = (rng.uniform(size=(3000, 24)) < means[y]).astype(np.float64)
    return X, y, weights, means


def log_joint(X, weights, means):
    """(n, k) log(w_k prod_j p_kj^x_j (1 - p_kj)^(1 - x_j)), via scipy.stats.bernoulli."""
    return np.stack([np.log(weights[j]) + bernoulli(means[j]).logpmf(X).sum(axis=1)
                     for j in range(len(weights))], axis=1)


def numpy_em(X, sample_weight, weights, means, alpha, n_iter, hard=False):
    """The EM of the class docstring, written out in NumPy."""
    bounds = []
    for _ in range(n_iter):
        lp = log_joint(X, weights, means)
        if hard:
            resp = np.eye(len(weights))[np.argmax(lp, axis=1)]
            ll = lp.max(axis=1)
        else:
            ll = logsumexp(lp, axis=1)
            resp = np.exp(lp - ll[:, None])
        bounds.append(np.sum(sample_weight * ll) / sample_weight.sum())
        wr = sample_weight[:, None] * resp
        nk = wr.sum(axis=0)
        weights = nk / sample_weight.sum()
        means = (wr.T @ X + alpha) / (nk + 2 * alpha)[:, None]
    return weights, means, bounds


# ---------------------------------------------------------------- hand and oracle checks
def test_one_iteration_by_hand(backend):
    X = np.array([[1, 0, 1], [1, 1, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=float)
    w = np.array([1.0, 2.0, 0.5, 0.0, 3.0])
    weights = np.array([0.6, 0.4])
    means = np.array([[0.8, 0.3, 0.6], [0.2, 0.5, 0.4]])
    alpha = 0.25
    # E-step, term by term
    lik = np.array([[np.prod(means[k] ** x * (1 - means[k]) ** (1 - x)) for k in range(2)]
                    for x in X])
    joint = weights * lik
    resp = joint / joint.sum(axis=1)[:, None]
    # M-step of the docstring
    wr = w[:, None] * resp
    exp_weights = wr.sum(axis=0) / w.sum()
    exp_means = (wr.T @ X + alpha) / (wr.sum(axis=0) + 2 * alpha)[:, None]
    exp_bound = np.sum(w * np.log(joint.sum(axis=1))) / w.sum()
    with pytest.warns(ConvergenceWarning):
        model = BernoulliMixture(2, weights_init=weights, means_init=means, alpha=alpha,
                                 max_iter=1).fit(X, sample_weight=w)
    np.testing.assert_allclose(model.weights_, exp_weights, rtol=1e-13)
    np.testing.assert_allclose(model.means_, exp_means, rtol=1e-13)
    assert model.lower_bounds_ == pytest.approx([exp_bound], rel=1e-13)
    assert model.n_iter_ == 1


@pytest.mark.parametrize("assignment", ["soft", "hard"])
def test_matches_a_numpy_em(backend, generated, assignment):
    X, _, _, true_means = generated
    rng = np.random.default_rng(1)
    w = rng.uniform(0, 2, size=len(X))
    w[::10] = 0.0
    weights0 = np.array([0.2, 0.3, 0.5])
    means0 = np.clip(true_means + rng.normal(scale=0.15, size=true_means.shape), 0.05, 0.95)
    exp_w, exp_m, exp_b = numpy_em(X, w, weights0, means0, 1e-3, 15,
                                   hard=assignment == "hard")
    with pytest.warns(ConvergenceWarning):
        model = BernoulliMixture(3, weights_init=weights0, means_init=means0, alpha=1e-3,
                                 tol=0, max_iter=15, assignment=assignment).fit(
                                     X, sample_weight=w)
    assert rel_err(model.weights_, exp_w) < 1e-11
    assert rel_err(model.means_, exp_m) < 1e-11
    np.testing.assert_allclose(model.lower_bounds_, exp_b, rtol=1e-12)


def test_log_prob_matches_scipy_bernoulli(backend, generated):
    X, _, _, _ = generated
    model = BernoulliMixture(3, random_state=0).fit(X)
    lp = log_joint(X[:200], model.weights_, model.means_)
    np.testing.assert_allclose(model.score_samples(X[:200]), logsumexp(lp, axis=1),
                               rtol=1e-12)
    np.testing.assert_allclose(model.predict_proba(X[:200]),
                               np.exp(lp - logsumexp(lp, axis=1)[:, None]), atol=1e-12)
    np.testing.assert_array_equal(model.predict(X[:200]), np.argmax(lp, axis=1))
    assert model.score(X[:200]) == pytest.approx(logsumexp(lp, axis=1).mean(), rel=1e-12)
    n = 200
    n_params = 3 * 24 + 2
    assert model.bic(X[:n]) == pytest.approx(
        -2 * logsumexp(lp, axis=1).sum() + n_params * np.log(n), rel=1e-12)
    assert model.aic(X[:n]) == pytest.approx(
        -2 * logsumexp(lp, axis=1).sum() + 2 * n_params, rel=1e-12)


@pytest.mark.parametrize("assignment", ["soft", "hard"])
@pytest.mark.parametrize("init_params", ["kmeans", "random", "random_from_data"])
def test_lower_bound_never_decreases(backend, generated, assignment, init_params):
    X, _, _, _ = generated
    with pytest.warns(ConvergenceWarning):
        model = BernoulliMixture(4, tol=0, max_iter=30, random_state=0, init_params=init_params,
                                 assignment=assignment).fit(X)
    # 1e-12 slack: round-off of a mean of 3000 log-probabilities near convergence.
    # (alpha=1e-10 makes the M-step a MAP step; its effect on the likelihood is
    # ~1e-10 / n per iteration, far below the slack.)
    assert np.diff(model.lower_bounds_).min() > -1e-12
    assert model.lower_bounds_[-1] > model.lower_bounds_[0]


def test_recovers_known_parameters(backend, generated):
    X, y, weights, means = generated
    model = BernoulliMixture(3, n_init=2, random_state=0).fit(X)
    # match fitted to true components
    cost = np.abs(model.means_[:, None, :] - means[None]).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    order = rows[np.argsort(cols)]  # fitted component matched to each true one
    # sampling error of a frequency from ~600-1500 rows is <= 0.5 / sqrt(600) = 0.02;
    # 0.08 is four of those, for the largest of 72 entries
    assert np.abs(model.means_[order] - means).max() < 0.08
    # weights: sd sqrt(w (1 - w) / n) <= 0.01
    assert np.abs(model.weights_[order] - weights).max() < 0.04
    # the fitted classifier is as good as the Bayes classifier of the true model
    bayes = np.argmax(log_joint(X, weights, means), axis=1)
    fitted = cols[model.predict(X)]  # the true component matched to each fitted one
    assert np.mean(fitted == bayes) > 0.99
    assert np.mean(fitted == y) > np.mean(bayes == y) - 0.01
    # and EM beats the true parameters in likelihood (it is the MLE, up to alpha)
    true_ll = logsumexp(log_joint(X, weights, means), axis=1).mean()
    assert model.score(X) >= true_ll - 1e-12


def test_default_init_weights_form_a_distribution(backend, generated):
    X, _, _, _ = generated
    for init_params in ("kmeans", "k-means++", "random", "random_from_data"):
        model = BernoulliMixture(3, init_params=init_params, max_iter=0, random_state=0)
        model.fit(X)
        assert model.weights_.sum() == pytest.approx(1.0, rel=1e-14), init_params
        assert np.all((model.means_ > 0) & (model.means_ < 1))


def test_random_from_data_init_by_hand(backend, generated):
    """One seed row per component: means = (x_seed + alpha) / (1 + 2 alpha)."""
    X, _, _, _ = generated
    alpha = 0.01
    model = BernoulliMixture(3, init_params="random_from_data", alpha=alpha, max_iter=0,
                             random_state=4).fit(X)
    seeds = np.random.RandomState(4).choice(len(X), size=3, replace=False)
    np.testing.assert_allclose(model.means_, (X[seeds] + alpha) / (1 + 2 * alpha), rtol=1e-14)
    np.testing.assert_allclose(model.weights_, 1 / 3, rtol=1e-14)


def test_integer_weights_equal_repeated_rows(backend, generated):
    X, _, _, true_means = generated
    X = X[:600]
    counts = np.random.default_rng(2).integers(0, 4, size=len(X))
    kwargs = dict(weights_init=np.full(3, 1 / 3), means_init=np.clip(true_means, 0.2, 0.8),
                  alpha=1e-4)
    weighted = BernoulliMixture(3, **kwargs).fit(X, sample_weight=counts)
    repeated = BernoulliMixture(3, **kwargs).fit(np.repeat(X, counts, axis=0))
    assert weighted.n_iter_ == repeated.n_iter_
    assert rel_err(weighted.means_, repeated.means_) < 1e-10
    assert rel_err(weighted.weights_, repeated.weights_) < 1e-10
    np.testing.assert_allclose(weighted.lower_bounds_, repeated.lower_bounds_, rtol=1e-10)


def test_fixed_parameters(backend, generated):
    X, _, _, true_means = generated
    means0 = np.clip(true_means, 0.2, 0.8)
    weights0 = np.array([0.1, 0.45, 0.45])
    model = BernoulliMixture(3, weights_init=weights0, means_init=means0,
                             fixed=("weights",)).fit(X)
    np.testing.assert_array_equal(model.weights_, weights0)
    assert rel_err(model.means_, means0) > 0.01
    model = BernoulliMixture(3, weights_init=weights0, means_init=means0, fixed="means")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    np.testing.assert_array_equal(model.means_, means0)
    # only the two free weights count in the criteria
    n = len(X)
    assert model.bic(X) == pytest.approx(-2 * model.score(X) * n + 2 * np.log(n), rel=1e-12)


# ---------------------------------------------------------------- input handling
def test_bool_and_integer_input(backend, generated):
    X, _, _, _ = generated
    X = X[:500]
    kwargs = dict(n_components=3, random_state=0)
    ref = BernoulliMixture(**kwargs).fit(X)
    # (float32 and memory layouts are covered kernel by kernel in test_kernels)
    for other in (X.astype(bool), X.astype(np.int8), X.astype(np.uint64), X.tolist()):
        model = BernoulliMixture(**kwargs).fit(other)
        np.testing.assert_array_equal(model.means_, ref.means_)
        np.testing.assert_array_equal(model.predict(other), ref.predict(X))
        np.testing.assert_array_equal(model.score_samples(other), ref.score_samples(X))
    Xb = X.astype(bool)
    before = Xb.copy()
    BernoulliMixture(**kwargs).fit(Xb).score_samples(Xb)
    np.testing.assert_array_equal(Xb, before)
    assert Xb.dtype == bool


@pytest.mark.parametrize("value", [0.5, 2.0, -1.0, 1.0000001])
def test_non_binary_values_are_rejected(backend, value):
    X = np.zeros((6, 3))
    X[4, 2] = value
    pattern = rf"only 0 and 1 .* got {value!r} at row 4, column 2"
    with pytest.raises(ValueError, match=pattern):
        BernoulliMixture(2).fit(X)
    model = BernoulliMixture(2, random_state=0).fit(np.eye(3)[[0, 1, 2, 0, 1, 2]])
    for method in (model.predict, model.predict_proba, model.score_samples, model.score):
        with pytest.raises(ValueError, match=pattern):
            method(X)


def test_non_binary_value_far_down_is_reported_at_its_row():
    # the check runs a block of rows at a time: the row number must be global
    X = np.tile(np.eye(3), (30000, 1))
    X[:, 0][5::7] = np.nan
    X[70001, 1] = 0.25
    with pytest.raises(ValueError, match=r"got 0.25 at row 70001, column 1"):
        BernoulliMixture(2).fit(X)


def test_infinity_is_rejected_and_nan_is_missing(backend):
    X = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    X[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"X contains infinity \(first at row 3, column 1\)"):
        BernoulliMixture(2).fit(X)
    X[3, 1] = np.nan
    assert np.isfinite(BernoulliMixture(2, random_state=0).fit(X).means_).all()


def test_sample_returns_binary_rows(backend, generated):
    X, _, _, _ = generated
    model = BernoulliMixture(3, random_state=0).fit(X)
    S, y = model.sample(4000)
    assert S.shape == (4000, 24) and y.shape == (4000,)
    assert set(np.unique(S)) <= {0.0, 1.0}
    assert set(np.unique(y)) <= {0, 1, 2}
    # per-component frequencies: sd <= 0.5 / sqrt(n_j); allow 5 sd
    for j in range(3):
        n_j = np.sum(y == j)
        assert abs(n_j / 4000 - model.weights_[j]) < 5 * 0.5 / np.sqrt(4000)
        assert np.abs(S[y == j].mean(axis=0) - model.means_[j]).max() < 5 * 0.5 / np.sqrt(n_j)
    # the sample is reproducible from random_state
    np.testing.assert_array_equal(model.sample(10)[0], model.sample(10)[0])


@pytest.mark.parametrize("assignment", ["soft", "hard"])
def test_fit_predict_equals_fit_then_predict(backend, generated, assignment):
    # the final E-step and predict write labels without statistics
    X = generated[0]
    kwargs = dict(n_components=3, random_state=1, max_iter=5, assignment=assignment)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = BernoulliMixture(**kwargs).fit_predict(X)
        model = BernoulliMixture(**kwargs).fit(X)
    np.testing.assert_array_equal(labels, model.predict(X))
    lp = log_joint(X, model.weights_, model.means_)
    np.testing.assert_array_equal(labels, np.argmax(lp, axis=1))
