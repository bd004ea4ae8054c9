"""The kernel table, each backend's kernels, and the backend dispatcher.

Oracles: the pure-NumPy reference backend (chunk by chunk), a dense
computation written here from the formulas in ``backends/_table.py`` (no
chunks, no fastem code), and ``scipy.stats.multivariate_normal``.
"""

import inspect
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import fastem
from fastem import backends
from fastem._bernoulli import BernoulliFamily, BernoulliParams
from fastem._gaussian import GaussianFamily, GaussianParams
from fastem.backends import _table
from fastem.backends import numpy_backend

from testing_utils import (COMPILED_BACKENDS, NUMBA_BLOCKED, REQUIRE_CYTHON, SUBPROCESS_CWD,
                           backend_threads, rel_err, requires_cython, requires_numba,
                           subprocess_pythonpath)

COV_TYPES = ("full", "tied", "diag", "spherical")
KERNEL_TOL = 1e-12  # same float64 sums in another order: rounding only
REPO = SUBPROCESS_CWD  # where subprocesses run (see testing_utils)


# ---------------------------------------------------------------- inputs
def random_prec_chol(cov_type, k, d, rng):
    """Upper-triangular precision factors, well conditioned.

    Laid out as the M-step hands them to the kernels (transposed views of
    C-contiguous lower factors), so that kernel and model tests share numba
    specialisations; C-contiguous factors (from precisions_init) reach the
    kernels in the model tests.
    """
    if cov_type == "full":
        U = np.triu(0.3 * rng.standard_normal((k, d, d)), 1)
        U[:, np.arange(d), np.arange(d)] = rng.uniform(0.5, 1.5, size=(k, d))
        return np.swapaxes(np.ascontiguousarray(np.swapaxes(U, 1, 2)), 1, 2)
    if cov_type == "tied":
        U = np.triu(0.3 * rng.standard_normal((d, d)), 1)
        U[np.arange(d), np.arange(d)] = rng.uniform(0.5, 1.5, size=d)
        return np.asfortranarray(U)
    if cov_type == "diag":
        return rng.uniform(0.5, 1.5, size=(k, d))
    return rng.uniform(0.5, 1.5, size=k)


def precision_matrices(cov_type, prec_chol, k, d):
    """Dense (k, d, d) precision matrices P_k = U_k U_k^T."""
    if cov_type == "full":
        return prec_chol @ np.swapaxes(prec_chol, 1, 2)
    if cov_type == "tied":
        return np.repeat((prec_chol @ prec_chol.T)[None], k, axis=0)
    if cov_type == "diag":
        return np.stack([np.diag(u ** 2) for u in prec_chol])
    return np.stack([u ** 2 * np.eye(d) for u in prec_chol])


def hand_log_norm(cov_type, weights, prec_chol, k, d):
    """log w_k + log det(U_k) - d/2 log(2 pi), written out per type."""
    if cov_type == "full":
        logdet = np.array([np.sum(np.log(np.diag(u))) for u in prec_chol])
    elif cov_type == "tied":
        logdet = np.full(k, np.sum(np.log(np.diag(prec_chol))))
    elif cov_type == "diag":
        logdet = np.log(prec_chol).sum(axis=1)
    else:
        logdet = d * np.log(prec_chol)
    return np.log(weights) + logdet - 0.5 * d * np.log(2 * np.pi)


def make_gaussian_case(cov_type, n, d, k, dtype, rng):
    X = (rng.standard_normal((n, d)) * 2.0 + 1.0).astype(dtype)
    sample_weight = rng.uniform(0.2, 3.0, size=n)
    sample_weight[rng.uniform(size=n) < 0.15] = 0.0  # zeros must contribute nothing
    means = rng.standard_normal((k, d)) * 2.0 + 1.0
    prec_chol = random_prec_chol(cov_type, k, d, rng)
    weights = rng.dirichlet(np.ones(k))
    return dict(
        X=X, sample_weight=sample_weight, means=means, prec_chol=prec_chol,
        weights=weights, log_norm=hand_log_norm(cov_type, weights, prec_chol, k, d),
        center=X.astype(np.float64).mean(axis=0) + 0.1,
        labels=rng.integers(0, k, size=n).astype(np.int64),
    )


def make_bernoulli_case(n, d, k, dtype, rng):
    X = (rng.uniform(size=(n, d)) < rng.uniform(0.2, 0.8, size=d)).astype(dtype)
    sample_weight = rng.uniform(0.2, 3.0, size=n)
    sample_weight[rng.uniform(size=n) < 0.15] = 0.0
    p = rng.uniform(0.05, 0.95, size=(k, d))
    weights = rng.dirichlet(np.ones(k))
    return dict(
        X=X, sample_weight=sample_weight, p=p, weights=weights,
        logit=np.log(p) - np.log1p(-p),
        log_norm=np.log(weights) + np.log1p(-p).sum(axis=1),
        labels=rng.integers(0, k, size=n).astype(np.int64),
    )


def sxx_shape(cov_type, k, d):
    return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[cov_type]


def run_gaussian_kernel(kernel, case, cov_type, hard, chunk_size, want_log_prob,
                        statistics=True):
    """Call one E-step kernel on fresh NaN-filled buffers; return every output.
    Without ``statistics``, the statistic buffers have no chunk rows (the
    table's statistics off)."""
    X = case["X"]
    n, d = X.shape
    k = case["means"].shape[0]
    n_chunks = -(-n // chunk_size) if statistics else 0
    out = dict(
        labels=case["labels"].copy(),
        log_prob=np.full((n if want_log_prob else 0, k), np.nan),
        nk=np.full((n_chunks, k), np.nan),
        sx=np.full((n_chunks, k, d), np.nan),
        sxx=np.full((n_chunks,) + sxx_shape(cov_type, k, d), np.nan),
        obj=np.full((n_chunks, 3), np.nan),
    )
    kernel(X, case["sample_weight"], case["means"], case["prec_chol"], case["log_norm"],
           case["center"], hard, chunk_size, out["labels"], out["log_prob"], out["nk"],
           out["sx"], out["sxx"], out["obj"])
    if cov_type in ("full", "tied"):
        out["sxx"] = np.tril(out["sxx"])  # only the lower triangle is specified
    return out


def run_bernoulli_kernel(kernel, case, hard, chunk_size, want_log_prob, statistics=True):
    X = case["X"]
    n, d = X.shape
    k = case["logit"].shape[0]
    n_chunks = -(-n // chunk_size) if statistics else 0
    out = dict(
        labels=case["labels"].copy(),
        log_prob=np.full((n if want_log_prob else 0, k), np.nan),
        nk=np.full((n_chunks, k), np.nan),
        sx=np.full((n_chunks, k, d), np.nan),
        obj=np.full((n_chunks, 3), np.nan),
    )
    kernel(X, case["sample_weight"], case["logit"], case["log_norm"], hard, chunk_size,
           out["labels"], out["log_prob"], out["nk"], out["sx"], out["obj"])
    return out


def responsibilities(lp, hard):
    labels = np.argmax(lp, axis=1)
    if hard:
        resp = np.zeros_like(lp)
        resp[np.arange(lp.shape[0]), labels] = 1.0
        return resp, lp.max(axis=1), labels
    ll = logsumexp(lp, axis=1)
    return np.exp(lp - ll[:, None]), ll, labels


def dense_gaussian_oracle(case, cov_type, hard):
    """The kernel's totals over all chunks, straight from the table's formulas."""
    x = case["X"].astype(np.float64)
    w = case["sample_weight"]
    means = case["means"]
    k, d = means.shape
    P = precision_matrices(cov_type, case["prec_chol"], k, d)
    diff = x[:, None, :] - means[None]                      # (n, k, d)
    maha = np.einsum("nka,kab,nkb->nk", diff, P, diff)
    lp = case["log_norm"] - 0.5 * maha
    resp, ll, labels = responsibilities(lp, hard)
    wr = w[:, None] * resp
    if cov_type == "full":
        sxx = np.tril(np.einsum("nk,nka,nkb->kab", wr, diff, diff))
    elif cov_type == "tied":
        dc = x - case["center"]
        sxx = np.tril((w[:, None] * dc).T @ dc)
    elif cov_type == "diag":
        sxx = np.einsum("nk,nka->ka", wr, diff ** 2)
    else:
        sxx = np.einsum("nk,nka->k", wr, diff ** 2)
    n = x.shape[0]
    obj = np.array([
        np.sum(w * ll),
        np.sum(w * maha[np.arange(n), labels]) if hard else 0.0,
        np.count_nonzero(labels != case["labels"]),
    ])
    return dict(labels=labels, log_prob=lp, nk=wr.sum(axis=0),
                sx=np.einsum("nk,nka->ka", wr, diff), sxx=sxx, obj=obj)


def dense_bernoulli_oracle(case, hard):
    x = case["X"].astype(np.float64)
    w = case["sample_weight"]
    p = case["p"]
    # log p(x | k) = sum_j x_j log p_kj + (1 - x_j) log(1 - p_kj)
    lp = np.log(case["weights"]) + x @ np.log(p).T + (1 - x) @ np.log1p(-p).T
    resp, ll, labels = responsibilities(lp, hard)
    wr = w[:, None] * resp
    obj = np.array([np.sum(w * ll), 0.0, np.count_nonzero(labels != case["labels"])])
    return dict(labels=labels, log_prob=lp, nk=wr.sum(axis=0), sx=wr.T @ x, obj=obj)


def assert_totals_match(out, oracle, want_log_prob):
    np.testing.assert_array_equal(out["labels"], oracle["labels"])
    for name in ("nk", "sx", "sxx"):
        if name in oracle:
            assert rel_err(out[name].sum(axis=0), oracle[name]) < KERNEL_TOL, name
    obj = out["obj"].sum(axis=0)
    assert rel_err(obj[0], oracle["obj"][0]) < KERNEL_TOL
    assert rel_err(obj[1], oracle["obj"][1]) < KERNEL_TOL
    assert obj[2] == oracle["obj"][2]
    if want_log_prob:
        assert rel_err(out["log_prob"], oracle["log_prob"]) < KERNEL_TOL


def assert_outputs_match(out, ref):
    """Chunk by chunk, against the NumPy reference backend."""
    assert set(out) == set(ref)
    for name in out:
        assert out[name].shape == ref[name].shape, name
        assert not np.isnan(out[name]).any(), f"{name} left partly unwritten"
        if name == "labels":
            np.testing.assert_array_equal(out[name], ref[name])
        else:
            assert rel_err(out[name], ref[name]) < KERNEL_TOL, name


# ---------------------------------------------------------------- the table
@pytest.mark.parametrize("name", ["numpy", pytest.param("numba", marks=requires_numba),
                                  pytest.param("cython", marks=requires_cython)])
def test_backend_exports_exactly_the_kernel_table(name):
    module = backends._load(name)
    assert module is not None, backends._import_errors.get(name)
    assert sorted(module.__all__) == sorted(_table.KERNEL_NAMES)
    for spec in _table.KERNELS:
        func = getattr(module, spec.name)
        assert callable(func)
        func = getattr(func, "py_func", func)  # numba dispatcher -> its Python function
        params = tuple(inspect.signature(func).parameters)
        assert params == spec.params, (name, spec.name)


def test_kernel_table_is_consistent():
    assert len(set(_table.KERNEL_NAMES)) == len(_table.KERNEL_NAMES)
    for suffix in ("", "_missing"):
        gaussian = [s for s in _table.KERNELS if s.name.startswith("estep_")
                    and s.name.endswith(suffix) and "bernoulli" not in s.name
                    and s.name != "estep_kmeans"
                    and (suffix or not s.name.endswith("_missing"))]
        assert sorted(s.name for s in gaussian) == sorted(
            "estep_" + c + suffix for c in COV_TYPES)
        assert len({s.params for s in gaussian}) == 1
    assert {_table.OBJ_LOGLIK, _table.OBJ_MAHA, _table.OBJ_CHANGED} == {0, 1, 2}


# ---------------------------------------------------------------- kernels vs oracles
@pytest.mark.parametrize("want_log_prob", [False, True], ids=["fit", "predict"])
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cov_type", COV_TYPES)
@pytest.mark.parametrize("d", [5, 11])  # features past a multiple of 4 (and of 8 in Cython)
def test_gaussian_estep_matches_reference(backend, cov_type, d, dtype, hard, want_log_prob):
    rng = np.random.default_rng(10 * COV_TYPES.index(cov_type) + hard + d)
    # k = 5 is not a multiple of a vector: padding components are exercised
    case = make_gaussian_case(cov_type, n=701, d=d, k=5, dtype=dtype, rng=rng)
    kernel = getattr(backends.get_kernels(), "estep_" + cov_type)
    out = run_gaussian_kernel(kernel, case, cov_type, hard, 128, want_log_prob)
    ref = run_gaussian_kernel(getattr(numpy_backend, "estep_" + cov_type), case,
                              cov_type, hard, 128, want_log_prob)
    assert_outputs_match(out, ref)
    assert_totals_match(out, dense_gaussian_oracle(case, cov_type, hard), want_log_prob)
    if hard:
        # every weighted row goes wholly to one component
        assert out["nk"].sum() == pytest.approx(case["sample_weight"].sum(), rel=1e-14)


@pytest.mark.parametrize("want_log_prob", [False, True], ids=["fit", "predict"])
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bernoulli_estep_matches_reference(backend, dtype, hard, want_log_prob):
    rng = np.random.default_rng(7 + hard)
    case = make_bernoulli_case(n=653, d=9, k=3, dtype=dtype, rng=rng)
    kernel = backends.get_kernels().estep_bernoulli
    out = run_bernoulli_kernel(kernel, case, hard, 100, want_log_prob)
    ref = run_bernoulli_kernel(numpy_backend.estep_bernoulli, case, hard, 100, want_log_prob)
    assert_outputs_match(out, ref)
    assert_totals_match(out, dense_bernoulli_oracle(case, hard), want_log_prob)
    assert np.all(out["obj"][:, 1] == 0.0)


@pytest.mark.parametrize("want_log_prob", [False, True], ids=["fit", "predict"])
@pytest.mark.parametrize("d", [5, 64])  # the numba soft path stages 4 rows at a time to d = 64
@pytest.mark.parametrize("model", COV_TYPES + ("bernoulli",))
def test_soft_estep_without_labels(backend, model, d, want_log_prob):
    # labels of shape (0,): the soft iterations of a fit, which read no
    # labels.  Every statistic must be the same bits as with labels, and no
    # label counted as changed; a hard E-step needs its labels.
    rng = np.random.default_rng(40 + d)
    empty = np.empty(0, dtype=np.int64)
    kernels = backends.get_kernels()
    if model == "bernoulli":
        case = make_bernoulli_case(n=301, d=d, k=6, dtype=np.float64, rng=rng)

        def run(case, hard):
            return run_bernoulli_kernel(kernels.estep_bernoulli, case, hard, 128, want_log_prob)
    else:
        case = make_gaussian_case(model, n=301, d=d, k=6, dtype=np.float64, rng=rng)

        def run(case, hard):
            return run_gaussian_kernel(getattr(kernels, "estep_" + model), case, model, hard,
                                       128, want_log_prob)
    with_labels = run(case, False)
    without = run(dict(case, labels=empty), False)
    assert without["labels"].shape == (0,)
    assert np.all(without["obj"][:, 2] == 0)
    assert np.any(with_labels["obj"][:, 2] > 0)  # the case's random labels do change
    for name, value in without.items():
        if name == "obj":
            value, expected = value[:, :2], with_labels["obj"][:, :2]
        elif name == "labels":
            continue
        else:
            expected = with_labels[name]
        np.testing.assert_array_equal(value, expected, err_msg=name)
    with pytest.raises(ValueError, match=r"labels must have shape \(301,\) for a hard"):
        run(dict(case, labels=empty), True)
    with pytest.raises(ValueError, match=r"labels must have shape \(301,\) or \(0,\)"):
        run(dict(case, labels=case["labels"][:300]), False)


@pytest.mark.parametrize("want_log_prob", [False, True], ids=["labels", "log_prob"])
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("d", [5, 64, 67])  # numba's soft full E-step: products to d = 64
@pytest.mark.parametrize("model", COV_TYPES + ("bernoulli",))
def test_estep_with_statistics_off(backend, model, d, hard, want_log_prob):
    # Statistic buffers with no chunk rows (prediction, a soft fit's final
    # E-step): the labels and log_prob must be the same bits as with statistics,
    # whichever path the kernel takes (numba's and Cython's soft paths skip
    # the exps and the moments; other paths compute into temporaries).
    rng = np.random.default_rng(50 + d + hard)
    kernels = backends.get_kernels()
    if model == "bernoulli":
        case = make_bernoulli_case(n=301, d=d, k=6, dtype=np.float64, rng=rng)

        def run(statistics):
            return run_bernoulli_kernel(kernels.estep_bernoulli, case, hard, 128,
                                        want_log_prob, statistics)
    else:
        case = make_gaussian_case(model, n=301, d=d, k=6, dtype=np.float64, rng=rng)

        def run(statistics):
            return run_gaussian_kernel(getattr(kernels, "estep_" + model), case, model,
                                       hard, 128, want_log_prob, statistics)
    on, off = run(True), run(False)
    assert not np.array_equal(case["labels"], on["labels"])  # the labels were written
    np.testing.assert_array_equal(off["labels"], on["labels"])
    np.testing.assert_array_equal(off["log_prob"], on["log_prob"])
    assert off["log_prob"].shape == ((301, 6) if want_log_prob else (0, 6))
    for name in ("nk", "sx", "sxx", "obj"):
        if name in off:
            assert off[name].shape[0] == 0, name


@pytest.mark.parametrize("want_log_prob", [False, True], ids=["fit", "predict"])
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("d", [2, 5, 16])  # numba's hard paths: d <= 4 and the screen
def test_spherical_estep_with_second_moments_off(backend, d, dtype, hard, want_log_prob):
    # sxx with no chunk rows (K-means' iterations): labels, log_prob, nk, sx and
    # the changed-label counts are the same bits as with second moments, and
    # obj's first two columns are 0
    rng = np.random.default_rng(60 + d + hard)
    case = make_gaussian_case("spherical", n=533, d=d, k=6, dtype=dtype, rng=rng)
    kernel = backends.get_kernels().estep_spherical
    on = run_gaussian_kernel(kernel, case, "spherical", hard, 128, want_log_prob)
    off = dict(labels=case["labels"].copy(), log_prob=np.full(on["log_prob"].shape, np.nan),
               nk=np.full(on["nk"].shape, np.nan), sx=np.full(on["sx"].shape, np.nan),
               sxx=np.empty((0, 6)), obj=np.full(on["obj"].shape, np.nan))
    kernel(case["X"], case["sample_weight"], case["means"], case["prec_chol"],
           case["log_norm"], case["center"], hard, 128, off["labels"], off["log_prob"],
           off["nk"], off["sx"], off["sxx"], off["obj"])
    for name in ("labels", "log_prob", "nk", "sx"):
        np.testing.assert_array_equal(off[name], on[name], err_msg=name)
    np.testing.assert_array_equal(off["obj"][:, 2], on["obj"][:, 2])
    assert np.all(off["obj"][:, :2] == 0.0)
    assert np.all(on["obj"][:, 0] != 0.0)


def test_second_moments_off_is_for_the_spherical_estep_only():
    rng = np.random.default_rng(3)
    case = make_gaussian_case("diag", n=50, d=3, k=2, dtype=np.float64, rng=rng)
    with pytest.raises(ValueError, match="estep_diag takes no sxx without chunk rows"):
        numpy_backend.estep_diag(case["X"], case["sample_weight"], case["means"],
                                 case["prec_chol"], case["log_norm"], case["center"], True,
                                 64, case["labels"].copy(), np.empty((0, 2)),
                                 np.empty((1, 2)), np.empty((1, 2, 3)), np.empty((0, 2, 3)),
                                 np.empty((1, 3)))


def test_statistics_optional_wraps_only_complete_data_estep_kernels():
    def estep_full_missing(*args):
        raise AssertionError("not called")

    with pytest.raises(ValueError, match="statistics_optional serves .*'estep_full_missing'"):
        _table.statistics_optional(estep_full_missing)
    kernel = _table.statistics_optional(numpy_backend.estep_diag.__wrapped__)
    with pytest.raises(TypeError, match="estep_diag takes its 14 arguments by position"):
        kernel(np.zeros((3, 2)))


@pytest.mark.parametrize("model", COV_TYPES + ("bernoulli",))
def test_soft_loglik_of_rows_of_unit_weight(backend, model):
    # Mostly unit weights, as in most fits, and 40 equal components, so that
    # every row's total sum_j exp(lp_j - max_j lp_j) is 40: a kernel that takes
    # the log of a product of such totals must flush the product long before
    # it overflows (40^n) and still sum the exact log-likelihood.
    rng = np.random.default_rng(3)
    n, d, k = 1500, 7, 40
    if model == "bernoulli":
        case = make_bernoulli_case(n=n, d=d, k=1, dtype=np.float64, rng=rng)
        case["p"] = np.repeat(case["p"], k, axis=0)
        case["weights"] = np.full(k, 1.0 / k)
        case["logit"] = np.repeat(case["logit"], k, axis=0)
        case["log_norm"] = np.log(case["weights"]) + np.log1p(-case["p"]).sum(axis=1)
        case["labels"] = rng.integers(0, k, size=n).astype(np.int64)
    else:
        case = make_gaussian_case(model, n=n, d=d, k=1, dtype=np.float64, rng=rng)
        case["means"] = np.repeat(case["means"], k, axis=0)
        if model != "tied":
            case["prec_chol"] = np.repeat(case["prec_chol"], k, axis=0)
        case["weights"] = np.full(k, 1.0 / k)
        case["log_norm"] = hand_log_norm(model, case["weights"], case["prec_chol"], k, d)
        case["labels"] = rng.integers(0, k, size=n).astype(np.int64)
    w = np.ones(n)
    w[::17] = 0.0
    w[::29] = 2.5
    case["sample_weight"] = w
    if model == "bernoulli":
        out = run_bernoulli_kernel(backends.get_kernels().estep_bernoulli, case, False, 700,
                                   False)
        oracle = dense_bernoulli_oracle(case, False)
    else:
        out = run_gaussian_kernel(getattr(backends.get_kernels(), "estep_" + model), case,
                                  model, False, 700, False)
        oracle = dense_gaussian_oracle(case, model, False)
    assert rel_err(out["obj"][:, 0].sum(), oracle["obj"][0]) < KERNEL_TOL


@pytest.mark.parametrize("d", [6, 11])  # the Cython kernel's two paths (sums in registers from 8)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sqdist_matches_reference(backend, dtype, d):
    rng = np.random.default_rng(3)
    X = (rng.standard_normal((517, d)) * 3).astype(dtype)
    centers = rng.standard_normal((5, d)) * 3
    out = np.full((517, 5), np.nan)
    backends.get_kernels().sqdist(X, centers, 64, out)
    ref = np.full((517, 5), np.nan)
    numpy_backend.sqdist(X, centers, 64, ref)
    dense = ((X.astype(np.float64)[:, None, :] - centers[None]) ** 2).sum(axis=2)
    assert rel_err(out, ref) < KERNEL_TOL
    assert rel_err(out, dense) < KERNEL_TOL


def _covariance_stack(m, d, rng, low=1e-3):
    """m covariances with eigenvalues from ``low`` to about 10 (condition
    numbers up to about 2e4), random eigenvectors."""
    out = np.empty((m, d, d))
    for j in range(m):
        Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        ev = np.geomspace(low, 10.0, d) * rng.uniform(0.5, 2.0, d)
        out[j] = (Q * ev) @ Q.T
    return out


@pytest.mark.parametrize("m, d", [(1, 1), (1, 64), (16, 16), (8, 2), (3, 37)])
def test_prec_chol_matches_scipy(backend, m, d):
    """U with U U^T = C^-1, upper triangular, against scipy's Cholesky factor and
    triangular solve; only C's lower triangle is read, and C is left as it was."""
    from scipy.linalg import cholesky, solve_triangular

    rng = np.random.default_rng(m * 100 + d)
    C = _covariance_stack(m, d, rng)
    ref = np.array([solve_triangular(cholesky(c, lower=True), np.eye(d), lower=True).T
                    for c in C])
    garbled = C.copy()
    garbled[:, np.triu_indices(d, 1)[0], np.triu_indices(d, 1)[1]] = np.nan
    before = garbled.copy()
    out = np.full((m, d, d), np.nan)
    assert backends.get_kernels().prec_chol(garbled, out) == -1
    np.testing.assert_array_equal(garbled, before)
    np.testing.assert_array_equal(np.tril(out, -1), 0.0)
    # two triangular factorisations in another order of operations; the error
    # grows with the condition number (up to about 2e4 here) times 2^-53
    assert rel_err(out, ref) < 1e-11
    for j in range(m):
        np.testing.assert_allclose(out[j] @ out[j].T @ C[j], np.eye(d), atol=1e-9)


def test_prec_chol_names_the_first_matrix_not_positive_definite(backend):
    """The index of the first failing matrix: a negative pivot, a zero one
    (singular), a NaN."""
    rng = np.random.default_rng(5)
    C = _covariance_stack(6, 4, rng)
    out = np.empty_like(C)
    singular = C.copy()
    singular[2] = np.outer(np.arange(1.0, 5.0), np.arange(1.0, 5.0))  # rank one
    singular[4] = -np.eye(4)
    assert backends.get_kernels().prec_chol(singular, out) == 2
    negative = C.copy()
    negative[3, 2, 2] = -1.0
    assert backends.get_kernels().prec_chol(negative, out) == 3
    nan = C.copy()
    nan[1, 0, 0] = np.nan
    assert backends.get_kernels().prec_chol(nan, out) == 1
    nan[4] = -np.eye(4)  # a later failure of another kind: the NaN still comes first
    assert backends.get_kernels().prec_chol(nan, out) == 1


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_count_nonfinite_counts_each_chunk(backend, dtype, layout):
    """Each chunk's NaN and infinite entries, against isnan / isinf of the
    chunk; bad entries at chunk edges, a chunk of huge finite values whose
    sum overflows (not counted), and X left as it was."""
    rng = np.random.default_rng(11)
    n, d, chunk_size = 1003, 7, 64
    X = rng.standard_normal((2 * n if layout == "strided" else n, d)).astype(dtype)
    if layout == "F":
        X = np.asfortranarray(X)
    elif layout == "strided":
        X = X[::2]
    big = np.finfo(dtype).max / 2
    X[130:140] = big  # chunk 2: finite, its sum overflows
    for i, a, v in ((0, 0, np.nan), (63, 6, np.inf), (64, 0, -np.inf), (64, 1, np.nan),
                    (500, 3, np.nan), (500, 4, np.nan), (n - 1, d - 1, -np.inf)):
        X[i, a] = v
    before = X.copy()
    n_chunks = -(-n // chunk_size)
    out = np.full((n_chunks, 2), -1.0)
    backends.get_kernels().count_nonfinite(X, chunk_size, out)
    expected = np.array([[np.isnan(X[s:s + chunk_size]).sum(), np.isinf(X[s:s + chunk_size]).sum()]
                         for s in range(0, n, chunk_size)], dtype=np.float64)
    np.testing.assert_array_equal(out, expected)
    assert out.sum(axis=0).tolist() == [4.0, 3.0]
    np.testing.assert_array_equal(X, before)
    X = rng.standard_normal((n, d)).astype(dtype)
    backends.get_kernels().count_nonfinite(X, chunk_size, out)
    assert not out.any()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 300), d=st.integers(1, 6), k=st.integers(1, 5),
       chunk_size=st.integers(1, 320), cov_type=st.sampled_from(COV_TYPES),
       hard=st.booleans(), seed=st.integers(0, 2**31))
def test_compiled_kernels_on_generated_shapes(n, d, k, chunk_size, cov_type, hard, seed):
    """Edge shapes (one row, one feature, one component, one row per chunk)."""
    rng = np.random.default_rng(seed)
    case = make_gaussian_case(cov_type, n, d, k, np.float64, rng)
    ref = run_gaussian_kernel(getattr(numpy_backend, "estep_" + cov_type), case, cov_type,
                              hard, chunk_size, True)
    assert COMPILED_BACKENDS, "no compiled backend to test"
    for name in COMPILED_BACKENDS:
        with fastem.using_backend(name):
            kernel = getattr(backends.get_kernels(), "estep_" + cov_type)
            out = run_gaussian_kernel(kernel, case, cov_type, hard, chunk_size, True)
        assert_outputs_match(out, ref)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_log_prob_is_weighted_scipy_density(backend, cov_type):
    """log_prob[i, k] = log w_k + log N(x_i; mu_k, (U_k U_k^T)^-1)."""
    rng = np.random.default_rng(11)
    k, d = 3, 4
    case = make_gaussian_case(cov_type, n=6, d=d, k=k, dtype=np.float64, rng=rng)
    P = precision_matrices(cov_type, case["prec_chol"], k, d)
    params = GaussianParams(case["weights"], case["means"], None, case["prec_chol"])
    case["log_norm"] = GaussianFamily(cov_type, 0.0).log_norm(params)
    kernel = getattr(backends.get_kernels(), "estep_" + cov_type)
    out = run_gaussian_kernel(kernel, case, cov_type, False, 4, True)
    for j in range(k):
        expected = np.log(case["weights"][j]) + multivariate_normal(
            case["means"][j], np.linalg.inv(P[j])).logpdf(case["X"])
        np.testing.assert_allclose(out["log_prob"][:, j], expected, rtol=1e-12)


def test_hard_estep_on_hand_case(backend):
    """Two 1-D unit-variance components at 0 and 10, equal weights."""
    X = np.array([[-1.0], [2.0], [4.0], [6.0], [11.0]])
    w = np.array([1.0, 2.0, 0.0, 1.0, 3.0])
    case = dict(X=X, sample_weight=w, means=np.array([[0.0], [10.0]]),
                prec_chol=np.ones((2, 1, 1)), center=np.zeros(1),
                log_norm=np.full(2, np.log(0.5) - 0.5 * np.log(2 * np.pi)),
                labels=np.array([0, 0, 0, 0, 0]))
    out = run_gaussian_kernel(backends.get_kernels().estep_full, case, "full", True, 2, True)
    np.testing.assert_array_equal(out["labels"], [0, 0, 0, 1, 1])
    np.testing.assert_allclose(out["nk"].sum(axis=0), [3.0, 4.0], rtol=1e-15)
    # sx_k = sum w (x - mu_k): comp 0: -1 + 2*2 = 3; comp 1: (6-10) + 3*(11-10) = -1
    np.testing.assert_allclose(out["sx"].sum(axis=0)[:, 0], [3.0, -1.0], rtol=1e-15)
    np.testing.assert_allclose(out["sxx"].sum(axis=0)[:, 0, 0], [1 + 8, 16 + 3], rtol=1e-15)
    obj = out["obj"].sum(axis=0)
    inertia = 1 * 1 + 2 * 4 + 1 * 16 + 3 * 1  # the zero-weight row counts for nothing
    assert obj[1] == pytest.approx(inertia, rel=1e-15)
    assert obj[0] == pytest.approx(w.sum() * case["log_norm"][0] - 0.5 * inertia, rel=1e-14)
    assert obj[2] == 2  # rows 3 and 4 moved from the initial label 0


def test_estep_with_zero_weight_component(backend):
    """A component of weight 0 has log_prob -inf and gets no responsibility."""
    rng = np.random.default_rng(5)
    case = make_gaussian_case("diag", n=50, d=2, k=3, dtype=np.float64, rng=rng)
    case["weights"] = np.array([0.5, 0.0, 0.5])
    with np.errstate(divide="ignore"):
        case["log_norm"] = hand_log_norm("diag", case["weights"], case["prec_chol"], 3, 2)
    out = run_gaussian_kernel(backends.get_kernels().estep_diag, case, "diag", False, 16, True)
    assert np.all(out["log_prob"][:, 1] == -np.inf)
    assert np.all(out["nk"][:, 1] == 0.0)
    assert np.all(out["labels"] != 1)
    assert np.isfinite(out["obj"]).all()


@pytest.mark.parametrize("layout", ["fortran", "strided"])
def test_memory_layout_gives_identical_bits(backend, layout):
    """The kernels see the same values in any layout and must add them alike.

    (float64 only: each dtype and layout is one more numba compilation.)
    """
    rng = np.random.default_rng(9)
    kernels = backends.get_kernels()

    def relayout(X):
        if layout == "fortran":
            return np.asfortranarray(X)
        wide = np.zeros((X.shape[0], 2 * X.shape[1]), dtype=X.dtype)
        wide[:, ::2] = X
        strided = wide[:, ::2]  # every other column: neither C nor F contiguous
        assert not strided.flags.c_contiguous and not strided.flags.f_contiguous
        return strided

    for cov_type in COV_TYPES:
        case = make_gaussian_case(cov_type, n=300, d=4, k=3, dtype=np.float64, rng=rng)
        fortran = dict(case, X=relayout(case["X"]))
        kernel = getattr(kernels, "estep_" + cov_type)
        for hard in (False, True):
            c = run_gaussian_kernel(kernel, case, cov_type, hard, 64, True)
            f = run_gaussian_kernel(kernel, fortran, cov_type, hard, 64, True)
            for name in c:
                np.testing.assert_array_equal(c[name], f[name], err_msg=(cov_type, name))
    bcase = make_bernoulli_case(n=300, d=6, k=3, dtype=np.float64, rng=rng)
    c = run_bernoulli_kernel(kernels.estep_bernoulli, bcase, False, 64, True)
    f = run_bernoulli_kernel(kernels.estep_bernoulli, dict(bcase, X=relayout(bcase["X"])),
                             False, 64, True)
    for name in c:
        np.testing.assert_array_equal(c[name], f[name], err_msg=name)
    centers = rng.standard_normal((4, 4))
    X = case["X"]
    out_c, out_f = np.empty((300, 4)), np.empty((300, 4))
    kernels.sqdist(X, centers, 64, out_c)
    kernels.sqdist(relayout(X), centers, 64, out_f)
    np.testing.assert_array_equal(out_c, out_f)


def _strided(X):
    """X's values in a layout that is neither C- nor Fortran-contiguous."""
    wide = np.zeros((X.shape[0], 2 * X.shape[1]), dtype=X.dtype)
    wide[:, ::2] = X
    return wide[:, ::2]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("d", [5, 11, 19])
def test_row_staging_gives_identical_bits_in_every_layout(backend, d, dtype):
    """Rows are staged four at a time from C-ordered data (4 x 4 tiles
    transposed, the features past a multiple of four one by one; with
    AVX-512, the diagonal and tied maps, and the spherical one when d % 8 < 4,
    8 rows by 8 features, the features past a multiple of 8 one by one; the
    full map's from ``_PAIRS_FUSED_D`` features too, not reached here), from
    Fortran-ordered data (one load per
    column) and one value at a time from strided data (and for the rows past
    a multiple of four): every path must give the same bits.  d = 5, 11 and
    19 leave features past a multiple of four and of 8; n = 203 leaves rows
    past a multiple of 8 in the last chunk.  Covers
    the soft diagonal, spherical, full and tied kernels, K-means (hard
    spherical without log-probabilities) and Bernoulli."""
    rng = np.random.default_rng(31 + d)
    kernels = backends.get_kernels()
    for cov_type, hard in (("diag", False), ("spherical", False), ("spherical", True),
                           ("full", False), ("tied", False)):
        case = make_gaussian_case(cov_type, n=203, d=d, k=5, dtype=dtype, rng=rng)
        kernel = getattr(kernels, "estep_" + cov_type)
        ref = run_gaussian_kernel(kernel, case, cov_type, hard, 64, False)
        for X in (np.asfortranarray(case["X"]), _strided(case["X"])):
            out = run_gaussian_kernel(kernel, dict(case, X=X), cov_type, hard, 64, False)
            for name in ref:
                np.testing.assert_array_equal(out[name], ref[name], err_msg=(cov_type, name))
    bcase = make_bernoulli_case(n=203, d=d, k=5, dtype=dtype, rng=rng)
    ref = run_bernoulli_kernel(kernels.estep_bernoulli, bcase, False, 64, False)
    for X in (np.asfortranarray(bcase["X"]), _strided(bcase["X"])):
        out = run_bernoulli_kernel(kernels.estep_bernoulli, dict(bcase, X=X), False, 64, False)
        for name in ref:
            np.testing.assert_array_equal(out[name], ref[name], err_msg=("bernoulli", name))


@pytest.mark.parametrize("want_log_prob", [False, True], ids=["fit", "predict"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("d", [8, 24, 64])
def test_soft_full_estep_on_products_matches_reference(backend, d, dtype, want_log_prob):
    """The compiled soft full E-steps score and accumulate the products
    x'_a x'_b as features (``_soft.PAIRS``) up to ``_soft.PAIRS_MAX_D``
    features, the quadratic form expanded about c = the mean of the means:
    against the reference's differences (x - mu_j) U_j, at the largest d of
    that map, at one for which the numba backend forms the products in its
    tiles (``_PAIRS_FUSED_D``) and at one below, with correlated precisions."""
    rng = np.random.default_rng(700 + d)
    case = make_gaussian_case("full", n=997, d=d, k=5, dtype=dtype, rng=rng)
    kernel = backends.get_kernels().estep_full
    out = run_gaussian_kernel(kernel, case, "full", False, 128, want_log_prob)
    ref = run_gaussian_kernel(numpy_backend.estep_full, case, "full", False, 128,
                              want_log_prob)
    assert_outputs_match(out, ref)  # 2e-15 (d = 24) and 8e-14 (d = 64) at most here
    assert_totals_match(out, dense_gaussian_oracle(case, "full", False), want_log_prob)


@requires_numba
@pytest.mark.parametrize("want_log_prob", [False, True], ids=["fit", "predict"])
@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("n, d, k, dtype", [(997, 24, 5, np.float64), (301, 37, 3, np.float32),
                                            (130, 64, 8, np.float64), (64, 29, 9, np.float64)])
def test_fused_and_staged_products_agree(monkeypatch, n, d, k, dtype, layout, want_log_prob):
    """From ``_PAIRS_FUSED_D`` features on (and twice the components padded to
    a multiple of 4), the numba soft full E-step forms
    the products x'_a x'_b inside its score and moment tiles
    (``_soft_pairs_chunk``) instead of staging them: the same sums in another
    order.  Both paths on one case, the threshold moved to force each; the
    cases have partial blocks, a last group of fewer than four blocks,
    padding components (k not a multiple of 4) and an odd number of
    features."""
    from fastem.backends import numba_backend

    rng = np.random.default_rng(900 + d)
    case = make_gaussian_case("full", n=n, d=d, k=k, dtype=dtype, rng=rng)
    if layout == "F":
        case = dict(case, X=np.asfortranarray(case["X"]))
    chunks = []
    real_run_chunks = numba_backend.run_chunks

    def recording(chunk, *args, **kwargs):
        chunks.append(chunk)
        return real_run_chunks(chunk, *args, **kwargs)

    monkeypatch.setattr(numba_backend, "run_chunks", recording)
    outs = {}
    for fused, threshold in ((True, d), (False, d + 1)):
        monkeypatch.setattr(numba_backend, "_PAIRS_FUSED_D", threshold)
        chunks.clear()
        outs[fused] = run_gaussian_kernel(numba_backend.estep_full, case, "full", False, 128,
                                          want_log_prob)
        assert (numba_backend._soft_pairs_chunk in chunks) == fused
    assert_outputs_match(outs[True], outs[False])


@pytest.mark.filterwarnings("ignore::fastem.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("cov_type", ["full", "tied"])
def test_product_paths_with_clusters_far_apart(backend, cov_type):
    """The soft full and tied E-steps expand the quadratic form about a common
    shift (``_soft``), so their rounding grows with |mu_j - c|^2 / var_j:
    clusters 1e3 standard deviations apart, 5 iterations, against the
    reference backend's fit. Measured here: lower bounds 1.6e-10 - 6.1e-10
    relative apart, covariances 1.4e-10 - 2.7e-10 of their largest entry
    (numba and Cython); the tolerances, 1e-8, leave a factor of 16 or more."""
    rng = np.random.default_rng(17)
    k, d = 4, 8
    centers = rng.normal(size=(k, d)) * 1e3
    X = centers[rng.integers(0, k, 4000)] + rng.normal(size=(4000, d)) @ (
        np.eye(d) + 0.3 * rng.normal(size=(d, d)))
    kw = dict(n_components=k, covariance_type=cov_type, max_iter=5, tol=0,
              means_init=centers, random_state=0)
    fit = fastem.GaussianMixture(**kw).fit(X)
    with fastem.using_backend("numpy"):
        ref = fastem.GaussianMixture(**kw).fit(X)
    assert fit.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-8)
    np.testing.assert_allclose(fit.means_, ref.means_, rtol=1e-12)
    scale = np.abs(ref.covariances_).max()
    np.testing.assert_allclose(fit.covariances_, ref.covariances_, rtol=0, atol=1e-8 * scale)


# ---------------------------------------------------------------- additivity
def _split_e_step(family, params, X, w, center, hard, cut):
    kernels = backends.get_kernels()
    k, d = params.means.shape

    def e_step(rows):
        Xp = np.ascontiguousarray(X[rows])
        labels = np.full(Xp.shape[0], -1, dtype=np.int64)
        chunk = 37
        n_chunks = -(-Xp.shape[0] // chunk)
        return family.e_step(kernels, Xp, w[rows], params, center=center, hard=hard,
                             chunk_size=chunk, labels=labels,
                             buffers=family.allocate(n_chunks, k, d))

    whole = e_step(slice(None))
    return whole, e_step(slice(None, cut)) + e_step(slice(cut, None))


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_gaussian_stats_of_halves_add_up(backend, cov_type, hard):
    rng = np.random.default_rng(21)
    case = make_gaussian_case(cov_type, n=400, d=3, k=4, dtype=np.float64, rng=rng)
    family = GaussianFamily(cov_type, reg_covar=1e-6)
    params = GaussianParams(case["weights"], case["means"], None, case["prec_chol"])
    whole, added = _split_e_step(family, params, case["X"], case["sample_weight"],
                                 case["center"], hard, cut=155)
    for name in ("nk", "sx", "sxx", "obj"):
        assert rel_err(getattr(added, name), getattr(whole, name)) < KERNEL_TOL, name
    assert added.sum_weight == pytest.approx(whole.sum_weight, rel=1e-15)
    assert added.lower_bound == pytest.approx(whole.lower_bound, rel=KERNEL_TOL)
    assert added.n_changed == whole.n_changed == 400
    # the M-step reads only the statistics, so it agrees as well
    new_whole = family.m_step(whole, params, params.means, case["center"])
    new_added = family.m_step(added, params, params.means, case["center"])
    for name in ("weights", "means", "covariances", "prec_chol"):
        assert rel_err(getattr(new_added, name), getattr(new_whole, name)) < 1e-11, name


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_bernoulli_stats_of_halves_add_up(backend, hard):
    rng = np.random.default_rng(22)
    case = make_bernoulli_case(n=300, d=7, k=3, dtype=np.float64, rng=rng)
    family = BernoulliFamily(alpha=1e-3)
    params = BernoulliParams(case["weights"], case["p"])
    whole, added = _split_e_step(family, params, case["X"], case["sample_weight"],
                                 None, hard, cut=101)
    for name in ("nk", "sx", "obj"):
        assert rel_err(getattr(added, name), getattr(whole, name)) < KERNEL_TOL, name
    assert added.sum_weight == pytest.approx(whole.sum_weight, rel=1e-15)
    new_whole = family.m_step(whole, params)
    new_added = family.m_step(added, params)
    assert rel_err(new_added.means, new_whole.means) < 1e-12
    assert rel_err(new_added.weights, new_whole.weights) < 1e-12


# ---------------------------------------------------------------- threads and chunks
def _all_kernel_outputs(case, bcase, chunk_size):
    kernels = backends.get_kernels()
    outs = {}
    for cov_type in COV_TYPES:
        for hard in (False, True):
            outs[cov_type, hard] = run_gaussian_kernel(
                getattr(kernels, "estep_" + cov_type), case[cov_type], cov_type, hard,
                chunk_size, True)
    outs["bernoulli"] = run_bernoulli_kernel(kernels.estep_bernoulli, bcase, False,
                                             chunk_size, True)
    return outs


@pytest.fixture(scope="module")
def many_chunk_cases():
    rng = np.random.default_rng(31)
    case = {c: make_gaussian_case(c, n=6000, d=4, k=5, dtype=np.float64, rng=rng)
            for c in COV_TYPES}
    return case, make_bernoulli_case(n=6000, d=8, k=4, dtype=np.float64, rng=rng)


@pytest.mark.parametrize("name", COMPILED_BACKENDS)
def test_one_and_two_threads_give_identical_bits(monkeypatch, restore_config, many_chunk_cases,
                                                 name):
    if backend_threads(name) < 2:
        pytest.skip(f"{name} runs a single thread on this machine")
    monkeypatch.setattr(fastem._config, "SERIAL_WORK", 0)  # every call to the thread pool
    case, bcase = many_chunk_cases
    results = {}
    with fastem.using_backend(name):
        for threads in (1, 2):
            fastem.set_num_threads(threads)
            results[threads] = _all_kernel_outputs(case, bcase, chunk_size=97)
            if name == "numba":
                import numba

                assert numba.get_num_threads() == threads
            fastem.set_chunk_size(97)  # 62 chunks for the model fit below
            with pytest.warns(fastem.ConvergenceWarning):  # tol=0: by design
                results[threads, "model"] = fastem.GaussianMixture(
                    5, covariance_type="full", random_state=0, tol=0, max_iter=5
                ).fit(case["full"]["X"])
            fastem.set_chunk_size(None)
    for key, out in results[1].items():
        for name in out:
            np.testing.assert_array_equal(out[name], results[2][key][name], err_msg=str(key))
    m1, m2 = results[1, "model"], results[2, "model"]
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(m1, name), getattr(m2, name))
    assert m1.lower_bounds_ == m2.lower_bounds_


def test_chunk_size_changes_only_rounding(backend, many_chunk_cases):
    case, bcase = many_chunk_cases
    reference = _all_kernel_outputs(case, bcase, chunk_size=6000)  # a single chunk
    for chunk_size in (5, 97, 1000):
        outs = _all_kernel_outputs(case, bcase, chunk_size)
        for key, out in outs.items():
            np.testing.assert_array_equal(out["labels"], reference[key]["labels"])
            assert rel_err(out["log_prob"], reference[key]["log_prob"]) < KERNEL_TOL
            for name in ("nk", "sx", "sxx", "obj"):
                if name in out:
                    assert rel_err(out[name].sum(axis=0),
                                   reference[key][name].sum(axis=0)) < KERNEL_TOL, (key, name)


def test_model_fit_is_chunk_size_invariant(backend, restore_config, wine):
    fits = []
    for rows in (None, 1, 7, 64):
        fastem.set_chunk_size(rows)
        with pytest.warns(fastem.ConvergenceWarning):  # tol=0: by design
            fits.append(fastem.GaussianMixture(3, covariance_type="full", random_state=0,
                                               tol=0, max_iter=20).fit(wine))
    for other in fits[1:]:
        # 20 EM iterations carry the 1e-16 reordering differences forward;
        # on this well separated problem they stay far below 1e-10
        assert rel_err(other.means_, fits[0].means_) < 1e-10
        assert rel_err(other.covariances_, fits[0].covariances_) < 1e-10
        np.testing.assert_allclose(other.lower_bounds_, fits[0].lower_bounds_, rtol=1e-12)


def test_chunk_layout():
    from fastem._config import chunk_layout

    fastem.set_chunk_size(None)
    assert chunk_layout(10) == (256, 1)
    assert chunk_layout(256 * 32) == (256, 32)
    assert chunk_layout(256 * 32 + 1) == (257, 32)
    rows, n_chunks = chunk_layout(10**6)
    assert n_chunks == 32 and rows * 32 >= 10**6 > (rows - 1) * 32
    try:
        fastem.set_chunk_size(100)
        assert fastem.get_chunk_size() == 100
        assert chunk_layout(1001) == (100, 11)
    finally:
        fastem.set_chunk_size(None)
    assert fastem.get_chunk_size() is None


# ---------------------------------------------------------------- dispatcher
def test_available_backends():
    names = fastem.available_backends()
    assert names[-1] == "numpy"  # the reference backend always imports
    assert names == [n for n in ("numba", "cython", "numpy") if n in names]  # fastest first
    # numba is a declared dependency; only the blocked run goes without it
    assert ("numba" in names) is not NUMBA_BLOCKED
    if REQUIRE_CYTHON:
        assert "cython" in names, backends._import_errors.get("cython")


def test_default_backend_is_the_fastest_available():
    # only meaningful when neither set_backend nor FASTEM_BACKEND chose one
    code = "import fastem; print(fastem.get_backend())"
    env = {k: v for k, v in os.environ.items() if k != "FASTEM_BACKEND"}
    out = _run_python(code, env)
    assert out.strip() == fastem.available_backends()[0]


@pytest.mark.skipif(not COMPILED_BACKENDS, reason="only the numpy backend is available")
def test_set_backend_and_using_backend_restore():
    before = fastem.get_backend()
    fast = COMPILED_BACKENDS[0]
    try:
        fastem.set_backend("numpy")
        assert fastem.get_backend() == "numpy"
        with fastem.using_backend(fast) as name:
            assert name == fast
            assert fastem.get_backend() == fast
            assert backends.get_kernels().name == fast
            with fastem.using_backend("numpy"):
                assert fastem.get_backend() == "numpy"
            assert fastem.get_backend() == fast
        assert fastem.get_backend() == "numpy"
        with pytest.raises(RuntimeError):
            with fastem.using_backend(fast):
                raise RuntimeError("boom")
        assert fastem.get_backend() == "numpy"
        assert backends.get_kernels().estep_full is numpy_backend.estep_full
    finally:
        fastem.set_backend(before)
    assert fastem.get_backend() == before


def test_using_backend_is_per_thread():
    seen = {}

    def worker():
        seen["other"] = fastem.get_backend()

    global_name = fastem.get_backend()
    other = "numpy" if global_name != "numpy" else fastem.available_backends()[0]
    with fastem.using_backend(other):
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert fastem.get_backend() == other
    assert seen["other"] == global_name


@pytest.mark.parametrize("bad", ["cupy", "NUMPY", "", None, 3])
def test_unknown_backend_names_the_available_ones(bad):
    available = str(fastem.available_backends())
    before = fastem.get_backend()
    with pytest.raises(ValueError, match=r"unknown backend .*available backends: "
                       + available.replace("[", r"\[").replace("]", r"\]")):
        fastem.set_backend(bad)
    with pytest.raises(ValueError, match="unknown backend"):
        with fastem.using_backend(bad):
            pass  # pragma: no cover - must not be reached
    assert fastem.get_backend() == before


def _run_python(code, env, check=True):
    env = dict(env)
    env["PYTHONPATH"] = subprocess_pythonpath(env.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    if check:
        assert proc.returncode == 0, proc.stderr
        return proc.stdout
    return proc


def test_fastem_backend_environment_variable():
    code = textwrap.dedent("""
        import numpy as np, fastem
        print(fastem.get_backend())
        fastem.KMeans(2, n_init=1, random_state=0).fit(np.arange(20.0).reshape(10, 2))
        from fastem.backends import _modules
        print(sorted(_modules))
    """)
    out = _run_python(code, dict(os.environ, FASTEM_BACKEND="numpy")).split("\n")
    assert out[0] == "numpy"
    assert out[1] == "['numpy']"  # numba was never imported
    proc = _run_python("import fastem; fastem.get_backend()",
                       dict(os.environ, FASTEM_BACKEND="fortran"), check=False)
    assert proc.returncode != 0
    assert "FASTEM_BACKEND" in proc.stderr and "'fortran'" in proc.stderr
    assert "available backends" in proc.stderr


def test_fastem_num_threads_environment_variable():
    code = "import fastem; print(fastem.get_num_threads())"
    assert _run_python(code, dict(os.environ, FASTEM_NUM_THREADS="1")).strip() == "1"
    proc = _run_python(code, dict(os.environ, FASTEM_NUM_THREADS="two"), check=False)
    assert proc.returncode != 0 and "FASTEM_NUM_THREADS" in proc.stderr


@pytest.mark.parametrize("bad, error", [
    (0, ValueError), (-2, ValueError), (1.5, TypeError), ("2", TypeError),
    (None, TypeError), (True, TypeError),
])
def test_set_num_threads_rejects_bad_values(restore_config, bad, error):
    before = fastem.get_num_threads()
    with pytest.raises(error, match=r"n must be a positive integer, got"):
        fastem.set_num_threads(bad)
    assert fastem.get_num_threads() == before


def test_set_num_threads_accepts_integers(restore_config):
    fastem.set_num_threads(1)
    assert fastem.get_num_threads() == 1
    fastem.set_num_threads(np.int64(2))
    assert fastem.get_num_threads() == 2


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1, ValueError),
                                        (2.0, TypeError), ("64", TypeError)])
def test_set_chunk_size_rejects_bad_values(restore_config, bad, error):
    with pytest.raises(error, match="rows must be a positive integer"):
        fastem.set_chunk_size(bad)


@requires_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_eight_by_eight_transpose_of_rows(dtype):
    """``bload8_f64`` (8 values of a row, widened to float64) and
    ``vtranspose8``, the staging of 8 rows by 8 features: against numpy's
    transpose, from an offset row and column of an array whose rows are
    not a multiple of 8 long."""
    from numba import njit

    from fastem.backends._simd import bload8_f64, vstore, vtranspose8

    @njit
    def transposed(X, i, a, out):
        t = vtranspose8(bload8_f64(X, i, a), bload8_f64(X, i + 1, a), bload8_f64(X, i + 2, a),
                        bload8_f64(X, i + 3, a), bload8_f64(X, i + 4, a),
                        bload8_f64(X, i + 5, a), bload8_f64(X, i + 6, a),
                        bload8_f64(X, i + 7, a))
        vstore(out, 0, t[0])
        vstore(out, 8, t[1])
        vstore(out, 16, t[2])
        vstore(out, 24, t[3])
        vstore(out, 32, t[4])
        vstore(out, 40, t[5])
        vstore(out, 48, t[6])
        vstore(out, 56, t[7])

    X = np.random.default_rng(5).standard_normal((11, 13)).astype(dtype)
    out = np.zeros(64)
    transposed(X, 2, 3, out)
    np.testing.assert_array_equal(out.reshape(8, 8), X[2:10, 3:11].T.astype(np.float64))


@requires_numba
@pytest.mark.parametrize("m, kp, blocks", [(7, 4, 8), (33, 8, 5), (130, 12, 3), (16, 8, 11),
                                         (20, 16, 6)])
def test_wide_and_narrow_register_tiles(m, kp, blocks):
    """numba's soft kernels take score and moment tiles of 16 accumulators of
    64-byte block vectors on CPUs with 32 vector registers, and of 8
    accumulators elsewhere (``_WIDE_TILES``).  Both are compiled and compared
    here, whichever this CPU uses.

    Scores: each sum runs in the same order in both, so they must give the
    same bits; a block count that is not a multiple of four leaves blocks to
    the narrow tile.  Moments: both keep each entry's sums in 4 lanes, rows r
    and r + 4 of every block in lane r; the narrow tile adds them row after
    row, the wide one sums each row over the blocks and then adds the two
    (``_add_block_lanes``).  Each lane must hold its rows' products, and the
    lanes must add up to the whole product."""
    from fastem.backends import numba_backend as nb
    rng = np.random.default_rng(m)
    R = nb._RB
    mp = -(-m // 8) * 8
    FT = np.zeros((blocks, mp, R))
    FT[:, :m] = rng.standard_normal((blocks, m, R))  # padding features stay 0
    FT = FT.ravel()
    G = rng.standard_normal(mp * kp)
    A = rng.standard_normal(kp)
    narrow, wide = np.full(blocks * kp * R, np.nan), np.full(blocks * kp * R, np.nan)
    for b in range(blocks):
        nb._score_tile_lanes(FT, b * mp * R, m, G, A, kp, narrow, b * kp * R)
    for b in range(0, blocks - 3, 4):
        nb._score_tile_quad(FT, b * mp * R, m, G, A, kp, wide, b * kp * R, mp * R, kp * R)
    for b in range(blocks - blocks % 4, blocks):
        nb._score_tile_lanes(FT, b * mp * R, m, G, A, kp, wide, b * kp * R)
    np.testing.assert_array_equal(wide, narrow)
    expected_scores = A[:, None] + np.einsum("bar,aj->bjr", FT.reshape(blocks, mp, R)[:, :m],
                                             G.reshape(mp, kp)[:m])
    np.testing.assert_allclose(wide.reshape(blocks, kp, R), expected_scores,
                               rtol=1e-13, atol=1e-12)
    # moments of the features under weights (responsibilities), and a
    # scatter's lower triangle (kp = mp)
    for weights, cols, lower in ((rng.random(blocks * kp * R), kp, False),
                                 (rng.random(blocks * mp * R), mp, True)):
        keep = np.tril(np.ones((cols, mp), dtype=bool)) if lower else np.ones((cols, mp), bool)
        keep[:, m:] = False
        per_row = np.einsum("bjr,bar->jar", weights.reshape(blocks, cols, R),
                            FT.reshape(blocks, mp, R))
        M_narrow, M_wide = np.zeros(cols * mp * 4), np.zeros(cols * mp * 4)
        nb._moment_tile_narrow(FT, weights, blocks, m, cols, mp, M_narrow, lower)
        nb._moment_tile_wide(FT, weights, blocks, m, cols, mp, M_wide, lower)
        assert np.abs(M_narrow).sum() > 0
        expected_lanes = per_row[:, :, :4] + per_row[:, :, 4:]
        for got in (M_narrow.reshape(cols, mp, 4), M_wide.reshape(cols, mp, 4)):
            # float64 sums of at most 22 products in another order: within 1e-13
            np.testing.assert_allclose(got[keep], expected_lanes[keep], rtol=1e-13, atol=1e-13)
            got = got.sum(axis=2)
            np.testing.assert_allclose(got[keep], per_row.sum(axis=2)[keep],
                                       rtol=1e-13, atol=1e-13)


@requires_numba
@pytest.mark.parametrize("cov_type, d", [("diag", 32), ("diag", 64), ("tied", 64),
                                         ("spherical", 63)])
def test_cache_padding_of_the_soft_tiles_gives_the_same_bits(monkeypatch, cov_type, d):
    """Where a block of the soft tiles' features would span a multiple of 4 KB
    (mp a multiple of 64: the diagonal model at d = 32 and 64, the tied
    scatter's 64 features, spherical at d = 63), ``_soft_tile_operands`` adds
    8 zero features that no tile reads: every statistic must keep its bits."""
    from fastem.backends import numba_backend as nb
    case = make_gaussian_case(cov_type, 700, d, 3, np.float64, np.random.default_rng(d))
    kernel = getattr(nb, f"estep_{cov_type}")
    padded = run_gaussian_kernel(kernel, case, cov_type, False, 256, True)
    m = {"diag": 2 * d, "tied": d, "spherical": d + 1}[cov_type]
    assert nb._soft_tile_operands(np.zeros((m, 3)), np.zeros(3))[3] == m + 8
    monkeypatch.setattr(nb, "_ALIASED_BYTES", 1 << 62)  # no padding
    assert nb._soft_tile_operands(np.zeros((m, 3)), np.zeros(3))[3] == m
    plain = run_gaussian_kernel(kernel, case, cov_type, False, 256, True)
    assert np.isfinite(padded["sxx"]).all() and np.isfinite(padded["log_prob"]).all()
    for name in ("log_prob", "nk", "sx", "sxx", "obj"):
        np.testing.assert_array_equal(padded[name], plain[name], err_msg=name)


@requires_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 8, 16, 33])
def test_kmeans_screen_top_two_matches_numpy(dtype, k):
    """The K-means screen's pass over a block's scores (rows in lanes): each
    row's maximum, the least component reaching it, and the largest score of
    the other components (the maximum again on a tie), with ties and -inf
    scores (components of weight 0) among them."""
    from fastem.backends import numba_backend as nb
    rng = np.random.default_rng(k)
    R = 2 * (32 // np.dtype(dtype).itemsize)
    for trial in range(20):
        sc = rng.integers(-3, 4, size=(k, R)).astype(dtype)  # small integers: many ties
        if trial % 2:
            sc += rng.standard_normal((k, R)).astype(dtype)
        sc[rng.random((k, R)) < 0.2] = -np.inf
        if trial == 0:
            sc[:] = -np.inf
        top, second, first = (np.full(R, np.nan, dtype=dtype) for _ in range(3))
        nb._top_two_lanes(sc.ravel(), k, top, second, first)
        np.testing.assert_array_equal(top, sc.max(axis=0))
        np.testing.assert_array_equal(first, np.argmax(sc, axis=0).astype(dtype))
        others = sc.copy()
        others[np.argmax(sc, axis=0), np.arange(R)] = -np.inf
        np.testing.assert_array_equal(second, others.max(axis=0) if k > 1 else -np.inf)


@requires_numba
def test_numba_kernels_in_a_process_pool(tmp_path):
    """Cached parallel kernels must load and run in spawned worker processes."""
    code = textwrap.dedent("""
        import multiprocessing as mp
        import numpy as np
        import fastem

        def fit(seed):
            X = np.random.default_rng(seed).standard_normal((500, 3))
            with fastem.using_backend("numba"):
                return fastem.GaussianMixture(2, random_state=0).fit(X).means_

        if __name__ == "__main__":
            with mp.get_context("spawn").Pool(2) as pool:
                results = pool.map(fit, [0, 1, 2])
            for seed, means in enumerate(results):
                assert np.array_equal(means, fit(seed)), seed
            print("ok")
    """)
    script = tmp_path / "pool_check.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=subprocess_pythonpath(os.environ.get("PYTHONPATH", "")))
    proc = subprocess.run([sys.executable, script], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@requires_numba
def test_numba_chunk_kernels_are_called_through_one_driver():
    """numba's kernels run their chunk kernels through ``run_chunks``: the
    chunk kernel is compiled once per argument types, Fortran-ordered and
    strided data share one compiled chunk kernel, and each layout gives the
    squared distances."""
    from fastem.backends import _numba_jit, numba_backend

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 3))
    centers = rng.standard_normal((4, 3))
    expected = ((X[:, None, :] - centers[None]) ** 2).sum(axis=2)
    chunk = numba_backend._sqdist_chunk
    addresses = {}
    for layout, data in (("C", X), ("F", np.asfortranarray(X)),
                         ("strided", np.repeat(X, 2, axis=0)[::2])):
        out = np.full((300, 4), np.nan)
        numba_backend.sqdist(data, centers, 64, out)
        np.testing.assert_allclose(out, expected, rtol=1e-12)
        addresses[layout] = _numba_jit.chunk_address(
            chunk, (data, numba_backend._transpose(centers), 64, out))
    assert addresses["F"] == addresses["strided"] != addresses["C"]
    assert {sig[1].layout for sig in chunk.signatures} <= {"A", "C"}


@requires_numba
def test_soft_staging_is_compiled_for_each_feature_map_alone(tmp_path):
    """The soft tiled E-step passes its feature map to its chunk kernel as a
    ``Constant``: the chunk kernel and the staging of rows are compiled for
    that map as a literal, and a fit compiles the staging of its own map
    alone (a map chosen at run time compiled every map's staging, tens of
    seconds, in a first fit).  A new process with an empty cache, so that
    the staging is compiled there and not loaded within its caller."""
    script = textwrap.dedent("""
        import numpy as np
        from numba.core import types
        import fastem
        from fastem.backends import numba_backend as nb, using_backend

        X = np.random.default_rng(0).standard_normal((400, 5))
        with using_backend("numba"):
            fastem.GaussianMixture(2, covariance_type="diag", max_iter=2, tol=0,
                                   init_params="random", random_state=0).fit(X)
        chunk = [sig[4] for sig in nb._soft_tiled_chunk.signatures]
        staged = [sig[4] for sig in nb._stage_features.signatures]
        literal = all(isinstance(t, types.IntegerLiteral) for t in chunk + staged)
        print(literal, sorted({t.literal_value for t in chunk + staged}) if literal else "",
              nb._QUADRATIC)
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path),
               PYTHONPATH=subprocess_pythonpath(os.environ.get("PYTHONPATH", "")))
    env.pop("FASTEM_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    literal, maps, quadratic = proc.stdout.strip().splitlines()[-1].split(" ", 2)
    assert literal == "True"
    assert maps == f"[{quadratic}]"


@requires_numba
def test_chunks_are_handed_out_one_at_a_time(restore_config):
    """The parallel driver hands chunks to the threads one at a time: while
    one thread is held up in a slow chunk, the other takes every remaining
    chunk.  numba's prange under the OpenMP layer splits its range in equal
    parts, chunk size or not: the slow chunk's thread then ran 16 of 32."""
    import numba
    from fastem.backends import _numba_jit

    if backend_threads("numba") < 2:
        pytest.skip("numba runs a single thread on this machine")

    @numba.njit
    def chunk(ci, spin, owner, out):
        owner[ci] = numba.get_thread_id()
        x = 0.0
        for _ in range(spin if ci == 0 else 0):  # chunk 0 alone is slow
            x = x * 0.999999 + 1.0
        out[ci] = x

    n_chunks = 32
    owner = np.full(n_chunks, -1, dtype=np.int64)
    out = np.zeros(n_chunks)
    numba.set_num_threads(2)
    _numba_jit.run_chunks(chunk, n_chunks, 30_000_000, owner, out)
    assert (owner >= 0).all() and out[0] > 0
    assert len(set(owner.tolist())) == 2, owner
    # one chunk in the slow chunk's thread; a quarter leaves room for a
    # thread of this shared machine that started late
    assert np.count_nonzero(owner == owner[0]) <= n_chunks // 4, owner


@requires_numba
@pytest.mark.parametrize("threads", [1, 2])
def test_the_parallel_driver_runs_every_chunk_once(restore_config, threads):
    """Every chunk index, for chunk counts that the threads' runs divide and
    that they do not, is run exactly once."""
    import numba
    from fastem.backends import _numba_jit

    if backend_threads("numba") < threads:
        pytest.skip(f"numba runs fewer than {threads} threads on this machine")

    @numba.njit
    def chunk(ci, runs):
        runs[ci] += 1

    numba.set_num_threads(threads)
    for n_chunks in list(range(2, 12)) + [31, 32, 33, 64, 101]:
        runs = np.zeros(n_chunks + 3, dtype=np.int64)  # 3 past the end: never touched
        _numba_jit.run_chunks(chunk, n_chunks, runs)
        assert runs[:n_chunks].tolist() == [1] * n_chunks, (n_chunks, runs)
        assert not runs[n_chunks:].any()


@requires_numba
def test_constant_arguments_are_typed_as_literals():
    """``run_chunks`` compiles a chunk kernel once per value of a ``Constant``."""
    from numba.core import types
    from fastem.backends import _numba_jit

    key, Constant = _numba_jit._type_key, _numba_jit.Constant
    assert key(Constant(1)) != key(Constant(2))
    assert key(Constant(2)) != key(2)
    assert _numba_jit._chunk_type(Constant(3)) == types.literal(3)
    assert _numba_jit._chunk_type(3) == types.int64


def _small_fits():
    """One fit of every model on data small enough that every kernel call of
    the fit is below ``SERIAL_WORK``, with and without NaN."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 3))
    B = (rng.uniform(size=(300, 6)) < 0.4).astype(np.float64)
    with_nan = X.copy()
    with_nan[rng.uniform(size=X.shape) < 0.1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastem.ConvergenceWarning)
        for data in (X, with_nan):
            fastem.KMeans(3, n_init=2, random_state=0).fit(data)
            for cov_type in COV_TYPES:
                fastem.GaussianMixture(3, covariance_type=cov_type, max_iter=5,
                                       random_state=0).fit(data)
        fastem.BernoulliMixture(3, max_iter=5, random_state=0).fit(B)


@requires_numba
def test_little_work_never_wakes_the_thread_pool(monkeypatch, restore_config):
    """Kernel calls whose estimated work is below ``SERIAL_WORK`` run their
    chunks on the calling thread (``_run_chunks_serial``): whole fits of small
    data never reach the parallel driver, and a call with more work does."""
    from fastem.backends import _numba_jit, numba_backend

    def pool(*args):
        raise AssertionError("the thread pool was used")

    fastem.set_num_threads(2)
    monkeypatch.setattr(_numba_jit, "_run_chunks", pool)
    with fastem.using_backend("numba"):
        _small_fits()
        X = np.random.default_rng(6).standard_normal((20_000, 4))
        centers = X[:4].copy()
        assert X.size * 4 >= fastem._config.SERIAL_WORK
        with pytest.raises(AssertionError, match="thread pool"):
            numba_backend.sqdist(X, centers, 1000, np.empty((20_000, 4)))


@pytest.mark.parametrize("name", COMPILED_BACKENDS)
def test_serial_and_pooled_calls_give_identical_bits(monkeypatch, restore_config,
                                                     many_chunk_cases, name):
    """The same kernel calls run on the calling thread (``SERIAL_WORK`` above
    every call's work) and spread over two threads (``SERIAL_WORK`` 0): the
    same bits in every output."""
    if backend_threads(name) < 2:
        pytest.skip(f"{name} runs a single thread on this machine")
    case, bcase = many_chunk_cases
    fastem.set_num_threads(2)
    results = {}
    with fastem.using_backend(name):
        for serial_work in (0, 1 << 62):
            monkeypatch.setattr(fastem._config, "SERIAL_WORK", serial_work)
            results[serial_work] = _all_kernel_outputs(case, bcase, chunk_size=97)
    for key, out in results[0].items():
        for field in out:
            np.testing.assert_array_equal(out[field], results[1 << 62][key][field],
                                          err_msg=str(key))


def test_threads_for_little_work_is_one(restore_config):
    fastem.set_num_threads(2)
    small = fastem._config.SERIAL_WORK - 1
    assert fastem._config.threads_for(small) == 1
    assert fastem._config.threads_for(small + 1) == 2
    fastem.set_num_threads(1)
    assert fastem._config.threads_for(small + 1) == 1


# ------------------------------------------------ the screened hard spherical path
def _exact_hard_labels(X, means, precision, log_norm):
    """argmax_j log_norm_j - p_j / 2 ||x - mu_j||^2 from float64 differences."""
    diff = X.astype(np.float64)[:, None, :] - means[None, :, :]
    score = log_norm[None, :] - 0.5 * precision[None, :] * np.einsum("nkd,nkd->nk", diff, diff)
    return np.argmax(score, axis=1)


def _hard_spherical_labels(X, means, precision, log_norm, chunk_size=64):
    n, d = X.shape
    k = means.shape[0]
    n_chunks = -(-n // chunk_size)
    labels = np.full(n, -1, dtype=np.int64)
    fastem.backends.get_kernels().estep_spherical(
        X, np.ones(n), means, np.sqrt(precision), log_norm, np.zeros(d), True, chunk_size,
        labels, np.empty((0, k)), np.zeros((n_chunks, k)), np.zeros((n_chunks, k, d)),
        np.zeros((n_chunks, k)), np.zeros((n_chunks, 3)))
    return labels


# numba: (2, 6) takes the exact path of few scores, the others the screened one
# (the Cython kernel screens all three)
@pytest.mark.parametrize("d, k", [(2, 6), (3, 13), (7, 13)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0.0, 1e4], ids=["centred", "far-from-origin"])
def test_hard_spherical_labels_are_exact_distance_argmin(backend, dtype, offset, d, k):
    # Points close to the bisector of two centres: the K-means kernels that
    # expand ||x - mu||^2 must still label them by exact distances, also in
    # float32 with data far from the origin where the expansion cancels.
    rng = np.random.default_rng(7)
    n = 3000
    means = offset + rng.normal(size=(k, d))
    means[5] = means[4] + 1e-3                         # two nearly equal centres
    X = means[rng.integers(0, k, n)] + 0.6 * rng.normal(size=(n, d))
    mid = 0.5 * (means[4] + means[5])
    X[:400] = mid + 1e-4 * rng.normal(size=(400, d))   # near the bisector
    X = X.astype(dtype)
    means = means.astype(dtype).astype(np.float64)     # centres exact in dtype
    precision = np.ones(k)
    log_norm = np.full(k, -np.log(k))
    expected = _exact_hard_labels(X, means, precision, log_norm)
    np.testing.assert_array_equal(_hard_spherical_labels(X, means, precision, log_norm), expected)


@pytest.mark.parametrize("scale, precision_scale", [
    (1e-21, 1.0),    # squared norms are float32 subnormals
    (1e-30, 1e60),   # the scores are O(1), their float32 parts are subnormal
    (1e30, 1.0),     # squared norms overflow float32
    (1.0, 1e45),     # precisions beyond float32's range: the screen runs in float64
], ids=["tiny", "tiny-precise", "huge", "huge-precision"])
def test_hard_spherical_labels_are_exact_at_extreme_scales(backend, scale, precision_scale):
    # The screen of the K-means kernel runs in float32 for float64 data; its
    # error bound must hold where float32 underflows or overflows.
    rng = np.random.default_rng(11)
    n, k, d = 1500, 9, 12
    means = rng.normal(size=(k, d)) * scale
    X = means[rng.integers(0, k, n)] + 0.8 * scale * rng.normal(size=(n, d))
    precision = rng.uniform(0.5, 2.0, size=k) * precision_scale
    log_norm = np.zeros(k)  # equal weights; a constant would swamp scores of 1e-42
    expected = _exact_hard_labels(X, means, precision, log_norm)
    assert len(np.unique(expected)) == k                # a real clustering, not a tie
    np.testing.assert_array_equal(_hard_spherical_labels(X, means, precision, log_norm), expected)


@pytest.mark.parametrize("d", [2, 8])  # numba: exact differences at 2, the screen at 8
def test_hard_spherical_ties_go_to_the_lowest_index(backend, d):
    # duplicated centres: every point is equally close to 1 and 3; label 1
    means = np.array([[10.0, 10.0], [0.0, 0.0], [5.0, -5.0], [0.0, 0.0]])
    X = np.array([[0.5, 0.25], [-1.0, 2.0], [0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    means = np.pad(means, ((0, 0), (0, d - 2)))
    X = np.pad(X, ((0, 0), (0, d - 2)))
    labels = _hard_spherical_labels(X, means, np.ones(4), np.full(4, -np.log(4)))
    np.testing.assert_array_equal(labels, [1, 1, 1, 1, 1])


@pytest.mark.parametrize("cov_type", COV_TYPES + ("bernoulli",))
def test_log_likelihood_of_many_unit_weight_rows_in_one_chunk(backend, cov_type):
    # A compiled kernel may defer the log of a weight-1 row's softmax total
    # (in [1, k]) by multiplying the totals and logging the product before it
    # overflows; with 40 components of near-equal means or log-odds the
    # totals are large, and the product of 4000 of them, in one chunk, passes
    # float64's range many times over.  The chunk's log-likelihood must still
    # be sum_i logsumexp_j log(w_j p_j(x_i)).
    rng = np.random.default_rng(3)
    n, d, k = 4000, 3, 40
    if cov_type == "bernoulli":
        case = make_bernoulli_case(n, d, k, np.float64, rng)
        case["logit"] = 0.01 * rng.standard_normal((k, d))
        case["sample_weight"] = np.ones(n)
        out = run_bernoulli_kernel(backends.get_kernels().estep_bernoulli, case, False, n, True)
    else:
        case = make_gaussian_case(cov_type, n, d, k, np.float64, rng)
        case["means"] = 1.0 + 0.01 * rng.standard_normal((k, d))
        case["sample_weight"] = np.ones(n)
        kernel = getattr(backends.get_kernels(), f"estep_{cov_type}")
        out = run_gaussian_kernel(kernel, case, cov_type, False, n, True)
    totals = np.exp(logsumexp(out["log_prob"], axis=1) - out["log_prob"].max(axis=1))
    assert np.log(totals).sum() > 5 * np.log(np.finfo(np.float64).max)
    expected = logsumexp(out["log_prob"], axis=1).sum()
    assert rel_err(out["obj"][0, 0], expected) < KERNEL_TOL


@pytest.mark.parametrize("kernel", ["estep_diag", "estep_spherical", "estep_bernoulli"])
def test_soft_labels_of_tied_scores_go_to_the_lowest_index(backend, kernel):
    # components 1, 3 and 6 are copies: every row closest to them gets label 1;
    # 9 components, so that the ties span two vectors and a padded one
    rng = np.random.default_rng(5)
    n, d, k = 300, 3, 9
    means = rng.normal(scale=4.0, size=(k, d))
    means[3] = means[1]
    means[6] = means[1]
    X = means[rng.integers(0, k, n)] + 0.3 * rng.normal(size=(n, d))
    if kernel == "estep_bernoulli":
        X = (X > 0).astype(np.float64)
        params = (np.clip(means, -3, 3), np.zeros(k))           # logit, log_norm
    elif kernel == "estep_diag":
        params = (np.ones((k, d)), np.zeros(k), np.zeros(d))     # prec_chol, log_norm, center
    else:
        params = (np.ones(k), np.zeros(k), np.zeros(d))
    chunk_size = 64
    n_chunks = -(-n // chunk_size)
    labels = np.full(n, -1, dtype=np.int64)
    log_prob = np.empty((n, k))
    args = [X, np.ones(n), *(() if kernel == "estep_bernoulli" else (means,)), *params, False,
            chunk_size, labels, log_prob, np.zeros((n_chunks, k)), np.zeros((n_chunks, k, d))]
    if kernel != "estep_bernoulli":
        args.append(np.zeros((n_chunks, k, d) if kernel == "estep_diag" else (n_chunks, k)))
    getattr(fastem.backends.get_kernels(), kernel)(*args, np.zeros((n_chunks, 3)))
    expected = np.argmax(log_prob, axis=1)  # numpy's argmax: the first maximum
    assert np.any(log_prob[:, 1] == log_prob.max(axis=1))
    assert not np.any(np.isin(labels, [3, 6]))
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("d", [2, 5])
def test_hard_spherical_with_unequal_precisions_and_weights(backend, d):
    # the hard spherical GMM: per-component variances and weights, one of them 0
    rng = np.random.default_rng(3)
    n, k = 2000, 6
    means = rng.normal(scale=3.0, size=(k, d))
    precision = rng.uniform(0.2, 5.0, size=k)
    weights = np.array([0.3, 0.2, 0.0, 0.1, 0.25, 0.15])
    with np.errstate(divide="ignore"):
        log_norm = np.log(weights) + 0.5 * d * np.log(precision) - 0.5 * d * np.log(2 * np.pi)
    X = rng.normal(scale=4.0, size=(n, d))
    expected = _exact_hard_labels(X, means, precision, log_norm)
    np.testing.assert_array_equal(_hard_spherical_labels(X, means, precision, log_norm), expected)


@requires_numba
def test_numba_exp_is_within_one_ulp_of_numpy():
    from numba import njit

    from fastem.backends import numba_backend

    @njit
    def exp_all(x, out):
        for i in range(x.shape[0]):
            out[i] = numba_backend._exp_nonpositive(x[i])

    rng = np.random.default_rng(0)
    x = -np.concatenate([rng.uniform(0, 700, 200_000), rng.uniform(0, 1, 200_000),
                         [0.0, 5e-324, 1e-300, 1e-17, np.log(2), 707.9]])
    out = np.empty_like(x)
    exp_all(x, out)
    expected = np.exp(x)
    ulps = np.abs(out - expected) / np.spacing(expected)
    assert ulps.max() <= 1.0
    # below -708 the result is flushed to zero (exp(-708) = 3.3e-308)
    exp_all(np.array([-708.5, -745.2, -1e4, -np.inf]), out[:4])
    np.testing.assert_array_equal(out[:4], 0.0)


@requires_numba
@pytest.mark.parametrize("fast_math", [False, True], ids=["ieee", "kernel-flags"])
def test_numba_vector_exp_is_within_one_ulp_of_numpy(fast_math):
    """Also compiled with the kernels' fast-math flags, which must not
    reassociate its reduction (a subtraction of 1.5 * 2**52 written as such
    was folded away under them)."""
    from numba import njit

    from fastem.backends._numba_jit import FASTMATH
    from fastem.backends._simd import vexp_nonpositive, vload, vstore

    @njit(fastmath=set(FASTMATH) if fast_math else False)
    def vexp_all(x, out):
        for i in range(0, x.shape[0], 4):
            vstore(out, i, vexp_nonpositive(vload(x, i)))

    rng = np.random.default_rng(1)
    # also x log2 e at and near half-integers, where the rounding to n is decided
    halves = (np.arange(1, 2000, 2) / 2) / np.log2(np.e)
    x = -np.concatenate([rng.uniform(0, 700, 200_000), rng.uniform(0, 1, 200_000),
                         halves, np.nextafter(halves, 0), np.nextafter(halves, np.inf),
                         [0.0, 5e-324, 1e-300, 1e-17, np.log(2), 707.9, 708.0,
                          0.5 * np.log(2), 1.5 * np.log(2)]])
    assert x.min() >= -708.0  # the flushed range is checked below
    x = np.concatenate([x, np.zeros(-len(x) % 4)])  # whole vectors
    out = np.empty_like(x)
    vexp_all(x, out)
    expected = np.exp(x)
    ulps = np.abs(out - expected) / np.spacing(expected)
    assert ulps.max() <= 1.0
    # below -708 (computed to garbage, then selected away) the result is 0
    flushed = np.array([-708.0000000001, -708.5, -745.2, -1e4, -1e300,
                        -np.finfo(np.float64).max, -np.inf, -709.0])
    vexp_all(flushed, out[:8])
    np.testing.assert_array_equal(out[:8], 0.0)
    assert not np.signbit(out[:8]).any()
