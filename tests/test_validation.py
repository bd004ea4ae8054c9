"""Every validation error of every public entry point names what to change."""

import re

import numpy as np
import pytest

import fastem
from fastem import BernoulliMixture, GaussianMixture, KMeans, NotFittedError
from fastem._validation import check_array

rng = np.random.default_rng(0)
X_GOOD = rng.standard_normal((40, 3))
X_BINARY = (rng.uniform(size=(40, 3)) < 0.5).astype(float)

MODELS = {
    "gmm": (lambda **kw: GaussianMixture(2, random_state=0, **kw), X_GOOD),
    "bmm": (lambda **kw: BernoulliMixture(2, random_state=0, **kw), X_BINARY),
    "kmeans": (lambda **kw: KMeans(2, random_state=0, n_init=1, **kw), X_GOOD),
}
FIT_METHODS = {"gmm": ("fit", "fit_predict"), "bmm": ("fit", "fit_predict"),
               "kmeans": ("fit", "fit_predict", "fit_transform")}
INFERENCE = {"gmm": ("predict", "predict_proba", "score_samples", "score", "bic", "aic"),
             "bmm": ("predict", "predict_proba", "score_samples", "score", "bic", "aic"),
             "kmeans": ("predict", "transform", "score")}
ENTRIES = ([(m, f, False) for m in MODELS for f in FIT_METHODS[m]]
           + [(m, f, True) for m in MODELS for f in INFERENCE[m]])
ENTRY_IDS = [f"{m}.{f}" for m, f, _ in ENTRIES]
INFERENCE_ENTRIES = [e for e in ENTRIES if e[2]]
INFERENCE_IDS = [f"{m}.{f}" for m, f, _ in INFERENCE_ENTRIES]


@pytest.fixture(scope="module")
def fitted():
    return {name: make().fit(X) for name, (make, X) in MODELS.items()}


def call(fitted, model, method, X):
    """Call ``method`` of a fresh model (fitting) or of the fitted one (inference)."""
    make, _ = MODELS[model]
    return getattr(fitted[model] if method in INFERENCE[model] else make(), method)(X)


def with_value(X, row, col, value):
    X = np.array(X, dtype=float)
    X[row, col] = value
    return X


# ---------------------------------------------------------------- X
@pytest.mark.parametrize("model, method, _", ENTRIES, ids=ENTRY_IDS)
def test_bad_X_everywhere(fitted, model, method, _):
    X = MODELS[model][1]
    cases = [
        (X[:, 0], ValueError, r"X must be a 2-D array .* 1 dimension\(s\); reshape 1-D data"),
        (X[None], ValueError, r"X must be a 2-D array .* 3 dimension\(s\)"),
        (X[:0], ValueError, r"at least one sample and one feature, got shape \(0, 3\)"),
        (with_value(with_value(X, 7, 2, np.nan), 5, 1, np.inf), ValueError,
         r"X contains infinity \(first at row 5, column 1\); NaN marks a missing "
         r"value; infinity is not allowed"),
        (with_value(X, 0, 0, -np.inf), ValueError,
         r"X contains infinity \(first at row 0, column 0\)"),
        (X + 1j, TypeError, r"X must be real-valued, got complex dtype complex128"),
        (X.astype(str), TypeError, r"X must contain numbers, got strings"),
        ([["a", "b", "c"]] * 40, TypeError, r"X must contain numbers, got strings"),
        (np.array(X, dtype=object).astype(str).astype(object), TypeError, "got strings"),
        (None, TypeError, r"X must be array-like, got NoneType"),
        (3.0, TypeError, r"X must be array-like, got float"),
    ]
    for bad, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            call(fitted, model, method, bad)


def test_nan_reported_before_a_later_infinity():
    X = with_value(with_value(X_GOOD, 9, 0, np.inf), 3, 2, np.nan)
    with pytest.raises(ValueError, match=r"NaN \(first at row 3, column 2\)"):
        check_array(X)


@pytest.mark.parametrize("model", ["gmm", "bmm", "kmeans"])
def test_a_column_without_observed_values_is_rejected(model):
    X = np.array(MODELS[model][1], dtype=float)
    X[:, 1] = np.nan
    with pytest.raises(ValueError, match=r"X has no observed value in column 1"):
        MODELS[model][0]().fit(X)


def test_finite_values_whose_sum_overflows_are_accepted():
    X = np.full((4, 2), 1e308)
    assert check_array(X) is X  # float64 input is used as it is, not copied
    X32 = np.full((4, 2), 3e38, dtype=np.float32)
    assert check_array(X32) is X32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1.0, 1e38], ids=["small", "sum-overflows"])
@pytest.mark.parametrize("nan_row", [None, 0, 9999], ids=["no-nan", "first-row", "last-row"])
def test_check_array_reports_nan_with_its_one_pass(dtype, scale, nan_row):
    # the NaN report comes from the finiteness check's sum, or from its scan of
    # blocks of rows when the sum of finite values overflows
    X = np.full((10000, 3), scale, dtype=dtype)
    if nan_row is not None:
        X[nan_row, 2] = np.nan
    checked, missing = check_array(X, allow_nan=True, with_missing=True)
    assert checked is X
    assert missing is (nan_row is not None)
    if nan_row is not None:
        with pytest.raises(ValueError, match=f"X contains NaN \\(first at row {nan_row}, column 2\\)"):
            check_array(X)
    X[-1, 0] = np.inf
    with pytest.raises(ValueError, match="X contains infinity"):
        check_array(X, allow_nan=True, with_missing=True)


@pytest.mark.parametrize("model, method, _", INFERENCE_ENTRIES, ids=INFERENCE_IDS)
def test_wrong_number_of_features(fitted, model, method, _):
    X = MODELS[model][1][:, :2]
    name = type(fitted[model]).__name__
    with pytest.raises(ValueError, match=f"X has 2 features, but {name} is expecting 3"):
        getattr(fitted[model], method)(X)


@pytest.mark.parametrize("model, method, _", INFERENCE_ENTRIES, ids=INFERENCE_IDS)
def test_use_before_fit(model, method, _):
    make, X = MODELS[model]
    with pytest.raises(NotFittedError, match=r"not fitted yet; call 'fit'"):
        getattr(make(), method)(X)


def test_not_fitted_error_is_a_value_and_attribute_error():
    assert issubclass(NotFittedError, ValueError)
    assert issubclass(NotFittedError, AttributeError)
    for make in (GaussianMixture, BernoulliMixture):
        with pytest.raises(NotFittedError):
            make(2).sample(3)


def test_sample_size_must_be_positive(fitted):
    for name in ("gmm", "bmm"):
        with pytest.raises(ValueError, match=r"n_samples must be >= 1, got 0"):
            fitted[name].sample(0)
        with pytest.raises(TypeError, match=r"n_samples must be an integer, got 2.5"):
            fitted[name].sample(2.5)


def test_bernoulli_rejects_non_binary_X_at_fit_and_predict(fitted):
    X = with_value(X_BINARY, 6, 1, 3.0)
    with pytest.raises(ValueError, match=r"only 0 and 1 values .*got 3.0 at row 6, column 1"):
        BernoulliMixture(2).fit(X)
    with pytest.raises(ValueError, match=r"got 3.0 at row 6, column 1"):
        fitted["bmm"].predict_proba(X)


# ---------------------------------------------------------------- n_samples
@pytest.mark.parametrize("model", MODELS)
def test_fewer_samples_than_components(model):
    make, X = MODELS[model]
    word = "n_clusters" if model == "kmeans" else "n_components"
    with pytest.raises(ValueError, match=rf"n_samples=1 should be >= {word}=2"):
        make().fit(X[:1])


# ---------------------------------------------------------------- sample_weight
@pytest.mark.parametrize("model", MODELS)
def test_bad_sample_weight(model):
    make, X = MODELS[model]
    n = len(X)
    ones = np.ones(n)
    cases = [
        (np.ones(n - 1), ValueError,
         rf"sample_weight must have shape \({n},\), got shape \({n - 1},\)"),
        (np.ones((n, 1)), ValueError, r"sample_weight must have shape"),
        (with_value(ones[None], 0, 3, -1.0)[0], ValueError,
         r"sample_weight must be >= 0, got -1.0 at index 3"),
        (np.zeros(n), ValueError, r"at least one positive entry, got all zeros"),
        (with_value(ones[None], 0, 2, np.nan)[0], ValueError,
         r"sample_weight contains a non-finite value nan at index 2"),
        (with_value(ones[None], 0, 5, np.inf)[0], ValueError,
         r"non-finite value inf at index 5"),
        (np.array(["1"] * n), TypeError, r"sample_weight must be numeric, got dtype <U1"),
        (-2.0, ValueError, r"sample_weight must be >= 0, got -2.0 at index 0"),
    ]
    for weight, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            make().fit(X, sample_weight=weight)
    w = ones.copy()
    w[:3] = 0.0
    make().fit(X, sample_weight=w)  # zeros are fine while some weight is positive
    make().fit(X, sample_weight=2)  # a scalar weights every row alike


def test_kmeans_score_checks_sample_weight(fitted):
    with pytest.raises(ValueError, match=r"sample_weight must be >= 0"):
        fitted["kmeans"].score(X_GOOD, sample_weight=-np.ones(40))


# ---------------------------------------------------------------- mixture parameters
MIXTURE_PARAMS = [
    ("n_components", 0, ValueError, r"n_components must be >= 1, got 0"),
    ("n_components", 1.5, TypeError, r"n_components must be an integer, got 1.5"),
    ("n_components", True, TypeError, r"n_components must be an integer, got True"),
    ("n_components", "2", TypeError, r"n_components must be an integer, got '2'"),
    ("tol", -1e-3, ValueError, r"tol must be a finite number >= 0.0, got -0.001"),
    ("tol", np.nan, ValueError, r"tol must be a finite number >= 0.0, got nan"),
    ("tol", np.inf, ValueError, r"tol must be a finite number >= 0.0, got inf"),
    ("tol", "small", TypeError, r"tol must be a real number, got 'small'"),
    ("max_iter", -1, ValueError, r"max_iter must be >= 0, got -1"),
    ("max_iter", 10.0, TypeError, r"max_iter must be an integer, got 10.0"),
    ("n_init", 0, ValueError, r"n_init must be >= 1, got 0"),
    ("init_params", "kmeans++", ValueError,
     r"init_params must be one of \['k-means\+\+', 'kmeans', 'random', 'random_from_data'\], "
     r"got 'kmeans\+\+'"),
    ("assignment", "fuzzy", ValueError,
     r"assignment must be one of \['hard', 'soft'\], got 'fuzzy'"),
    ("verbose", -1, ValueError, r"verbose must be >= 0, got -1"),
    ("warm_start", "yes", TypeError, r"warm_start must be a bool, got 'yes'"),
    ("random_state", "seed", ValueError,
     r"random_state must be None, an int or a numpy.random.RandomState, got 'seed'"),
    ("random_state", np.random.default_rng(0), ValueError, r"random_state must be None"),
    ("fixed", ("weights", "shapes"), ValueError, r"fixed may contain only .*got 'shapes'"),
    ("fixed", 3, TypeError, r"fixed must be a tuple of names"),
    ("fixed", ("means",), ValueError,
     r"fixed contains 'means' but means_init is None"),
    ("fixed", "weights", ValueError,
     r"fixed contains 'weights' but weights_init is None"),
    ("weights_init", [0.5, 0.3, 0.2], ValueError,
     r"weights_init must have shape \(2,\), got shape \(3,\)"),
    ("weights_init", [1.2, -0.2], ValueError,
     r"weights_init must lie in \[0, 1\], got min -0.2, max 1.2"),
    ("weights_init", [0.5, 0.4], ValueError, r"weights_init must sum to 1, got sum 0.9"),
    ("weights_init", [np.nan, 0.5], ValueError, r"weights_init must contain only finite"),
    ("weights_init", ["a", "b"], TypeError, r"weights_init must be numeric"),
    ("means_init", np.zeros((2, 2)), ValueError,
     r"means_init must have shape \(2, 3\), got shape \(2, 2\)"),
    ("means_init", np.zeros((3, 3)), ValueError, r"means_init must have shape \(2, 3\)"),
    ("means_init", [[np.inf, 0, 0], [0, 0, 0]], ValueError,
     r"means_init must contain only finite"),
]


@pytest.mark.parametrize("model", ["gmm", "bmm"])
@pytest.mark.parametrize("param, value, error, pattern", MIXTURE_PARAMS,
                         ids=[f"{p}={v!r}" for p, v, _, _ in MIXTURE_PARAMS])
def test_mixture_parameter_checks(model, param, value, error, pattern):
    make, X = MODELS[model]
    estimator = make()
    estimator.set_params(**{param: value})
    with pytest.raises(error, match=pattern):
        estimator.fit(X)
    # nothing is fitted by a failed call
    assert not hasattr(estimator, "weights_")


def test_fixed_covariances_need_precisions_init():
    with pytest.raises(ValueError,
                       match=r"fixed contains 'covariances' but precisions_init is None"):
        GaussianMixture(2, fixed=("covariances",)).fit(X_GOOD)
    with pytest.raises(ValueError, match=r"fixed may contain only \['means', 'weights'\], "
                       r"got 'covariances'"):
        BernoulliMixture(2, fixed=("covariances",)).fit(X_BINARY)


@pytest.mark.parametrize("value, error, pattern", [
    ("banana", ValueError,
     r"covariance_type must be one of \['diag', 'full', 'spherical', 'tied'\], got 'banana'"),
    (None, ValueError, r"covariance_type must be one of"),
])
def test_covariance_type(value, error, pattern):
    with pytest.raises(error, match=pattern):
        GaussianMixture(2, covariance_type=value).fit(X_GOOD)


@pytest.mark.parametrize("value, error, pattern", [
    (-1e-6, ValueError, r"reg_covar must be a finite number >= 0.0, got -1e-06"),
    (np.inf, ValueError, r"reg_covar must be a finite number >= 0.0, got inf"),
    ("1e-6", TypeError, r"reg_covar must be a real number, got '1e-6'"),
])
def test_reg_covar(value, error, pattern):
    with pytest.raises(error, match=pattern):
        GaussianMixture(2, reg_covar=value).fit(X_GOOD)


def _spd(d, seed):
    A = np.random.default_rng(seed).standard_normal((d, d))
    return A @ A.T + d * np.eye(d)


@pytest.mark.parametrize("cov_type, precisions, pattern", [
    ("full", np.stack([np.eye(3)] * 3),
     r"precisions_init must have shape \(2, 3, 3\), got shape \(3, 3, 3\)"),
    ("full", np.eye(3), r"precisions_init must have shape \(2, 3, 3\), got shape \(3, 3\)"),
    ("tied", np.stack([np.eye(3)] * 2), r"precisions_init must have shape \(3, 3\)"),
    ("diag", np.ones(2), r"precisions_init must have shape \(2, 3\), got shape \(2,\)"),
    ("spherical", np.ones((2, 3)), r"precisions_init must have shape \(2,\), got shape \(2, 3\)"),
    ("full", np.stack([np.eye(3), np.diag([1.0, -1.0, 1.0])]),
     r"precisions_init\[1\] is not positive definite"),
    ("full", np.stack([_spd(3, 0), _spd(3, 1) + np.triu(np.ones((3, 3)), 1)]),
     r"precisions_init\[1\] is not symmetric"),
    ("tied", np.diag([1.0, 0.0, 1.0]), r"precisions_init is not positive definite"),
    ("tied", _spd(3, 2) + np.triu(np.ones((3, 3)), 1), r"precisions_init is not symmetric"),
    ("diag", np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]]), r"precisions_init must be positive"),
    ("spherical", np.array([1.0, -2.0]), r"precisions_init must be positive"),
    ("diag", np.full((2, 3), np.nan), r"precisions_init must contain only finite values"),
])
def test_precisions_init(cov_type, precisions, pattern):
    with pytest.raises(ValueError, match=pattern):
        GaussianMixture(2, covariance_type=cov_type, precisions_init=precisions).fit(X_GOOD)


def test_valid_precisions_init_is_accepted():
    for cov_type, precisions in (("full", np.stack([_spd(3, 0), _spd(3, 1)])),
                                 ("tied", _spd(3, 2)), ("diag", np.ones((2, 3))),
                                 ("spherical", np.ones(2))):
        model = GaussianMixture(2, covariance_type=cov_type, precisions_init=precisions,
                                max_iter=0).fit(X_GOOD)
        np.testing.assert_allclose(model.precisions_, precisions, rtol=1e-12)


@pytest.mark.parametrize("value, error, pattern", [
    (0.0, ValueError, r"alpha must be a finite number > 0.0, got 0.0"),
    (-1.0, ValueError, r"alpha must be a finite number > 0.0, got -1.0"),
    (np.nan, ValueError, r"alpha must be a finite number > 0.0, got nan"),
    ("tiny", TypeError, r"alpha must be a real number, got 'tiny'"),
])
def test_bernoulli_alpha(value, error, pattern):
    with pytest.raises(error, match=pattern):
        BernoulliMixture(2, alpha=value).fit(X_BINARY)


@pytest.mark.parametrize("means, pattern", [
    (np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.5]]),
     r"means_init must lie strictly between 0 and 1, got min 0.0, max 0.5"),
    (np.array([[0.5, 1.0, 0.5], [0.5, 0.5, 0.5]]),
     r"strictly between 0 and 1, got min 0.5, max 1.0"),
    (np.full((2, 2), 0.5), r"means_init must have shape \(2, 3\)"),
])
def test_bernoulli_means_init(means, pattern):
    with pytest.raises(ValueError, match=pattern):
        BernoulliMixture(2, means_init=means).fit(X_BINARY)


# ---------------------------------------------------------------- singular covariances
def _two_groups(flat):
    """Group 0 is a 2-D cloud at the origin; group 1, far away, has a constant
    second coordinate (or is one repeated point when ``flat == 'point'``)."""
    g = np.random.default_rng(3)
    a = g.standard_normal((30, 2))
    if flat == "point":
        b = np.tile([1000.0, 5.0], (30, 1))
    else:
        b = np.column_stack([1000.0 + g.standard_normal(30), np.full(30, 5.0)])
    return np.vstack([a, b]), np.array([[0.0, 0.0], [1000.0, 5.0]])


@pytest.mark.parametrize("cov_type, flat, pattern", [
    ("full", "line", r"the covariance of component 1 is not positive definite; "
                     r"increase reg_covar \(now 0.0\)"),
    ("diag", "line", r"the variance of component 1 is not positive; increase reg_covar "
                     r"\(now 0.0\)"),
    ("spherical", "point", r"the variance of component 1 is not positive; increase reg_covar"),
])
@pytest.mark.parametrize("assignment", ["soft", "hard"])
def test_singular_covariance_names_component_and_reg_covar(backend, cov_type, flat, pattern,
                                                           assignment):
    X, means = _two_groups(flat)
    # every *_init given, so the first M-step (not a K-means start) meets the
    # singular group, as component 1
    precisions = {"full": np.stack([np.eye(2)] * 2), "diag": np.ones((2, 2)),
                  "spherical": np.ones(2)}[cov_type]
    model = GaussianMixture(2, covariance_type=cov_type, reg_covar=0.0, means_init=means,
                            weights_init=[0.5, 0.5], precisions_init=precisions,
                            assignment=assignment)
    with pytest.raises(ValueError, match=pattern):
        model.fit(X)
    # the suggested remedy works
    model.set_params(reg_covar=1e-6).fit(X)
    assert np.all(np.isfinite(model.precisions_cholesky_))


def test_singular_tied_covariance(backend):
    X = np.column_stack([np.arange(20.0), np.full(20, 2.0)])  # constant second feature
    with pytest.raises(ValueError, match=r"the tied covariance is not positive definite; "
                       r"increase reg_covar \(now 0.0\), reduce n_components or scale"):
        GaussianMixture(2, covariance_type="tied", reg_covar=0.0, random_state=0).fit(X)


# ---------------------------------------------------------------- KMeans
KMEANS_PARAMS = [
    ("n_clusters", 0, ValueError, r"n_clusters must be >= 1, got 0"),
    ("n_clusters", 2.5, TypeError, r"n_clusters must be an integer, got 2.5"),
    ("init", "kmeans++", ValueError,
     r"init must be 'k-means\+\+', 'random' or an array of shape \(n_clusters, n_features\), "
     r"got 'kmeans\+\+'"),
    ("init", np.zeros((3, 3)), ValueError, r"init must have shape \(2, 3\), got shape \(3, 3\)"),
    ("init", np.zeros((2, 4)), ValueError, r"init must have shape \(2, 3\), got shape \(2, 4\)"),
    ("init", [[0.0, np.nan, 0.0], [1.0, 1.0, 1.0]], ValueError, r"init must contain only finite"),
    ("n_init", 0, ValueError, r"n_init must be >= 1, got 0"),
    ("n_init", "many", ValueError, r"n_init must be 'auto' or an integer >= 1, got 'many'"),
    ("n_init", 1.5, TypeError, r"n_init must be 'auto' or an integer >= 1, got 1.5"),
    ("n_init", True, TypeError, r"n_init must be 'auto' or an integer"),
    ("max_iter", 0, ValueError, r"max_iter must be >= 1, got 0"),
    ("tol", -1.0, ValueError, r"tol must be a finite number >= 0.0, got -1.0"),
    ("verbose", -2, ValueError, r"verbose must be >= 0, got -2"),
    ("random_state", 1.5, ValueError, r"random_state must be None, an int"),
]


@pytest.mark.parametrize("param, value, error, pattern", KMEANS_PARAMS,
                         ids=[f"{p}={v!r}" for p, v, _, _ in KMEANS_PARAMS])
def test_kmeans_parameter_checks(param, value, error, pattern):
    model = KMeans(2).set_params(**{param: value})
    for method in ("fit", "fit_predict", "fit_transform"):
        with pytest.raises(error, match=pattern):
            getattr(model, method)(X_GOOD)
    assert not hasattr(model, "cluster_centers_")


def test_kmeans_plusplus_checks():
    with pytest.raises(ValueError, match=r"n_clusters must be in \[1, 40\], got 41"):
        fastem.kmeans_plusplus(X_GOOD, 41)
    with pytest.raises(ValueError, match=r"n_local_trials must be >= 1, got 0"):
        fastem.kmeans_plusplus(X_GOOD, 2, n_local_trials=0)
    with pytest.raises(ValueError, match=r"X contains infinity \(first at row 1, column 1\)"):
        fastem.kmeans_plusplus(with_value(X_GOOD, 1, 1, np.inf), 2)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(40,\)"):
        fastem.kmeans_plusplus(X_GOOD, 2, sample_weight=np.ones(3))


def test_set_params_rejects_unknown_names():
    for model in (GaussianMixture(), BernoulliMixture(), KMeans()):
        with pytest.raises(ValueError, match=re.escape("invalid parameter 'colour'")):
            model.set_params(colour="red")


def test_weighted_sum_is_the_weighted_column_sum_of_a_block():
    # fastem._utils.weighted_sum replaces `w @ x` in the row reductions (column
    # means, observed counts, k-means++ potentials) so that they do not wake
    # BLAS threads; it must compute the same sums and leave its inputs alone.
    from fastem._utils import column_mean, weighted_sum
    rng = np.random.default_rng(4)
    w = rng.uniform(0.0, 2.0, size=5000)
    x = rng.normal(size=(5000, 7))
    w0, x0 = w.copy(), x.copy()
    np.testing.assert_allclose(weighted_sum(w, x), w @ x, rtol=1e-12)
    np.testing.assert_allclose(weighted_sum(w, x[:, 3]), w @ x[:, 3], rtol=1e-12)
    np.testing.assert_allclose(weighted_sum(w, np.asfortranarray(x)), w @ x, rtol=1e-12)
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(x, x0)
    X = np.tile(x, (30, 1))  # more than one block of column_mean
    W = np.tile(w, 30)
    np.testing.assert_allclose(column_mean(X, W), np.average(X, axis=0, weights=W),
                               rtol=1e-12, atol=1e-15)
    X[::3, 2] = np.nan
    expected = np.array([np.average(X[~np.isnan(X[:, a]), a], weights=W[~np.isnan(X[:, a])])
                         for a in range(7)])
    np.testing.assert_allclose(column_mean(X, W, missing=True), expected, rtol=1e-12,
                               atol=1e-15)
