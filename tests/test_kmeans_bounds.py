"""K-means' distance bounds (``estep_kmeans``): the same results, less work.

A row whose bounds prove its nearest mean unchanged is not scored, so every
test here compares against the unbounded hard E-step (``estep_spherical``):
the same labels, bit for bit; the same statistics bit for bit with second
moments, and to rounding from the kept sums without them (checked in turn
against sums of the rows by label).  It checks that the bounds the kernel
writes are true bounds, and shows (by white-box perturbations) that rows are
in fact skipped, and not even read for the sums.
"""

import numpy as np
import pytest

import fastem
from fastem import _config, _em
from fastem import _kmeans as kmeans_module
from fastem.backends import get_kernels
from testing_utils import requires_numba

pytestmark = pytest.mark.filterwarnings("ignore::fastem.exceptions.ConvergenceWarning")


def _blobs(n, d, k, dtype, seed, order="C", scale=1.0, offset=0.0):
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.standard_normal((k, d))
    X = centres[rng.integers(0, k, n)] + rng.standard_normal((n, d))
    X = (X * scale + offset).astype(dtype)
    return np.asfortranarray(X) if order == "F" else np.ascontiguousarray(X)


class _Lloyd:
    """Hard E-steps of K-means' restricted family, as ``GaussianFamily.e_step``
    passes them, with and without bounds, from the same labels."""

    def __init__(self, X, k, sample_weight=None, center=None):
        self.X = X
        n, d = X.shape
        self.k = k
        self.w = np.ones(n) if sample_weight is None else sample_weight
        self.center = np.zeros(d) if center is None else center
        self.chunk, self.n_chunks = _config.chunk_layout(n)
        self.log_norm = np.full(k, np.log(1.0 / k) - 0.5 * d * np.log(2 * np.pi))
        self.prec_chol = np.ones(k)

    def buffers(self, second_moments):
        C, k, d = self.n_chunks, self.k, self.X.shape[1]
        return (np.zeros((C, k)), np.zeros((C, k, d)),
                np.zeros((C if second_moments else 0, k)), np.zeros((C, 3)))

    def unbounded(self, means, labels, second_moments):
        nk, sx, sxx, obj = out = self.buffers(second_moments)
        get_kernels().estep_spherical(self.X, self.w, means, self.prec_chol, self.log_norm,
                                      np.zeros(means.shape[1]), True, self.chunk, labels,
                                      np.empty((0, self.k)), nk, sx, sxx, obj)
        return out

    def rows(self):
        """Fresh ``RowBounds`` for this problem (nothing known)."""
        rows = _em.RowBounds(self.X.shape[0], self.n_chunks, self.k, self.X.shape[1])
        rows.reset()
        return rows

    def bounded(self, means, labels, rows, shift, second_moments):
        nk, sx, sxx, obj = out = self.buffers(second_moments)
        get_kernels().estep_kmeans(self.X, self.w, means, self.prec_chol, self.log_norm,
                                   self.center, self.chunk, labels, rows.array, shift,
                                   rows.sums, nk, sx, sxx, obj)
        return out

    def sums_scale(self):
        """sum_i w_i max_a |x_ia - center_a|: no kept sum, nor any partial
        sum of its moves, exceeds it."""
        x = self.X.astype(np.float64) - self.center
        return float(np.sum(self.w * np.max(np.abs(x), axis=1)))

    def check_kept_sums(self, labels, sums, moves):
        """The kept sums against the rows' sums by label, chunk by chunk (in
        long double).  Each of at most ``moves`` moves of a row rounds a sum
        once or twice, by at most 2^-52 of the sums' scale: that, four times
        over, is the tolerance."""
        x = self.X.astype(np.longdouble) - self.center.astype(np.longdouble)
        w = self.w.astype(np.longdouble)
        tol = 4.0 * moves * 2.0 ** -52 * self.sums_scale()
        for c in range(self.n_chunks):
            rows = slice(c * self.chunk, min(self.X.shape[0], (c + 1) * self.chunk))
            for j in range(self.k):
                mine = labels[rows] == j
                expect = np.concatenate([[w[rows][mine].sum()],
                                         (w[rows][mine, None] * x[rows][mine]).sum(axis=0)])
                assert np.all(np.abs(sums[c, j] - expect) <= tol), (c, j)


def _check_true_bounds(X, means, labels, bounds):
    """u >= ||x - mu_label|| and l <= min over the other means, in long double."""
    x = X.astype(np.longdouble)
    dist = np.sqrt(((x[:, None, :] - means.astype(np.longdouble)[None]) ** 2).sum(axis=2))
    n = X.shape[0]
    own = dist[np.arange(n), labels]
    dist[np.arange(n), labels] = np.inf
    other = dist.min(axis=1)
    u = bounds[:, 0].astype(np.longdouble)
    low = bounds[:, 1].astype(np.longdouble)
    assert np.all(u >= own), np.flatnonzero(u < own)[:5]
    assert np.all(low <= other), np.flatnonzero(low > other)[:5]


def _run_both(X, k, iterations, sample_weight=None, second_moments=False, seed=0,
              min_held=None, center=None):
    """Lloyd iterations with and without bounds from the same start; asserts at
    every step the same labels and changed counts, the same statistics (bit for
    bit with second moments, to rounding from kept sums), true bounds and
    (numba) true kept sums, and (numba, which keeps bounds) that rows could be
    skipped; returns how many could."""
    rng = np.random.default_rng(seed)
    n, d = X.shape
    lloyd = _Lloyd(X, k, sample_weight, center)
    means = X[rng.choice(n, k, replace=False)].astype(np.float64)
    labels_a = np.full(n, -1, dtype=np.int64)
    labels_b = labels_a.copy()
    rows = lloyd.rows()
    held = 0
    for it in range(iterations):
        shift = rows.shift(means)
        # rows whose bounds, moved by the shifts, leave their label first (the
        # kernel's test without its rounding margins): the rows it may skip
        others = np.array([np.max(np.delete(shift, j), initial=0.0) for j in range(k)])
        a = np.maximum(labels_b, 0)
        held += int(np.sum((labels_b >= 0) & (rows.array[:, 1] - others[a]
                                               > rows.array[:, 0] + shift[a] + 1e-6)))
        plain = lloyd.unbounded(means, labels_a, second_moments)
        fast = lloyd.bounded(means, labels_b, rows, shift, second_moments)
        # numba keeps sums except on its exact path for few features (NaN: none)
        kept = not np.any(np.isnan(rows.sums))
        if get_kernels().name == "numba" and d >= 8:
            assert kept
        np.testing.assert_array_equal(labels_b, labels_a, err_msg=f"iteration {it}")
        for name, a, b in zip(("nk", "sx", "sxx", "obj"), plain, fast):
            if second_moments or not kept or name in ("sxx", "obj"):
                assert np.array_equal(a, b), f"iteration {it}: {name} differs"
            else:
                # from the kept sums: both within check_kept_sums' tolerance of
                # the exact sums (the row-order sums round far less)
                tol = 8.0 * n * (it + 1) * 2.0 ** -52 * lloyd.sums_scale()
                assert np.all(np.abs(a - b) <= tol), f"iteration {it}: {name} differs"
        if kept:
            lloyd.check_kept_sums(labels_b, rows.sums, n * (it + 1))
        else:
            assert np.all(np.isnan(rows.sums)), "kept in part"
        _check_true_bounds(X, means, labels_b, rows.array)
        nk = plain[0].sum(axis=0)
        sx = plain[1].sum(axis=0)
        filled = nk > 0
        means = means.copy()
        means[filled] += sx[filled] / nk[filled, None]
    if get_kernels().name == "numba":
        # over the iterations, at least one iteration's rows (default) could be skipped
        assert held >= (n if min_held is None else min_held), held
    return held


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("d, k", [(3, 7), (5, 9), (8, 16), (16, 40)])
def test_bounded_e_step_gives_the_unbounded_bits(backend, dtype, order, d, k):
    X = _blobs(1500, d, k, dtype, seed=d * k, order=order)
    _run_both(X, k, iterations=8)


@pytest.mark.parametrize("second_moments", [False, True])
def test_bounded_e_step_with_weights_and_second_moments(backend, second_moments):
    X = _blobs(1200, 12, 10, np.float32, seed=3)
    w = np.random.default_rng(4).uniform(0.0, 3.0, X.shape[0])
    w[::7] = 0.0  # rows of weight 0 are still labelled
    _run_both(X, 10, iterations=6, sample_weight=w, second_moments=second_moments)


def test_bounded_e_step_one_cluster_and_duplicate_means(backend):
    X = _blobs(600, 6, 3, np.float64, seed=5)
    _run_both(X, 1, iterations=3)
    # two identical means: every row is a tie between them, never skipped wrongly
    lloyd = _Lloyd(X, 3)
    means = np.array([X[0], X[0], X[1]], dtype=np.float64)
    rows = lloyd.rows()
    labels_a = np.full(X.shape[0], -1, dtype=np.int64)
    labels_b = labels_a.copy()
    for _ in range(3):
        shift = rows.shift(means)
        lloyd.unbounded(means, labels_a, False)
        lloyd.bounded(means, labels_b, rows, shift, False)
        np.testing.assert_array_equal(labels_b, labels_a)
        _check_true_bounds(X, means, labels_b, rows.array)


def test_bounded_e_step_far_from_the_origin(backend):
    # constants beyond float32's screen: the kernel screens in float64 or exactly
    # (fewer rows are screened, so fewer bounds are known)
    X = _blobs(800, 6, 5, np.float64, seed=6, offset=1e16)
    _run_both(X, 5, iterations=4, min_held=1)
    X = _blobs(800, 6, 5, np.float32, seed=7, scale=1e3, offset=1e6)
    _run_both(X, 5, iterations=4, min_held=1)
    # kept sums about a point among the data, as KMeans takes them
    X = _blobs(1500, 8, 6, np.float64, seed=17, offset=1e6)
    _run_both(X, 6, iterations=6, center=X[:1024].mean(axis=0))


def test_rows_whose_bounds_hold_are_not_scored():
    """White box: with the means unchanged (shift 0), a row whose bounds hold
    keeps its label even when its data changed behind the kernel's back; the
    unbounded E-step relabels it.  Its data are not even read for the
    statistics, which come from the kept sums: the same bits as the call
    before.  (Backends without bounds score every row.)"""
    with fastem.using_backend("numba" if "numba" in fastem.available_backends()
                              else fastem.available_backends()[0]) as name:
        X = _blobs(2000, 8, 4, np.float64, seed=8)
        lloyd = _Lloyd(X, 4)
        means = np.array([X[lloyd_row] for lloyd_row in (0, 1, 2, 3)], dtype=np.float64)
        labels = np.full(X.shape[0], -1, dtype=np.int64)
        rows = lloyd.rows()
        first = lloyd.bounded(means, labels, rows, rows.shift(means), False)
        u, low = rows.array[:, 0].astype(float), rows.array[:, 1].astype(float)
        holding = np.flatnonzero(low > 1.01 * u + 1e-9)  # bounds that hold at shift 0
        if name == "numba":
            assert holding.size > X.shape[0] // 2
            i = holding[0]
        else:
            assert holding.size == 0  # [inf, 0] everywhere
            i = 10
        moved_to = (labels[i] + 1) % 4
        X[i] = means[moved_to]  # now nearest to another mean
        before = labels.copy()
        second = lloyd.bounded(means, labels, rows, rows.shift(means), False)
        if name == "numba":
            assert labels[i] == before[i]  # skipped: its bounds still held
            # and not read: no label changed, so the kept sums and nk, sx did not
            for a, b in zip(first[:2], second[:2]):
                assert np.array_equal(a, b)
        else:
            assert labels[i] == moved_to  # no bounds kept: scored again
        np.testing.assert_array_equal(np.delete(labels, i), np.delete(before, i))
        if name != "numba":
            assert np.all(rows.array[:, 0] == np.inf) and np.all(rows.array[:, 1] == 0)


@pytest.mark.parametrize("k", [4, 8])
def test_separations_hold_rows_when_a_mean_moves_far(k):
    """White box, as above: one mean moves far away, so that the rows' lower
    bounds, moved by that shift, prove nothing; the means' separations
    (``_separations``) still prove the labels of the rows around the other
    means, which are then not scored.  The rows of mean 2 hold by the triangle
    inequality about their own mean.  Those of mean 0 lie 0.3 from it and 0.5
    from mean 1, which is 0.4 away: that inequality proves nothing for them,
    and only the bound on the mover (k >= 8: one mean in eight may be one)
    holds them."""
    with fastem.using_backend("numba" if "numba" in fastem.available_backends()
                              else fastem.available_backends()[0]) as name:
        rng = np.random.default_rng(21)
        d = 8
        means = 20.0 * rng.standard_normal((k, d))
        means[1] = means[0]
        means[1, 0] += 0.4
        own = np.arange(1600) % k
        X = means[own] + 0.01 * rng.standard_normal((1600, d))
        zero = own == 0
        X[zero, 1] += 0.3 * np.where(np.arange(zero.sum()) % 2 == 0, 1.0, -1.0)
        lloyd = _Lloyd(X, k)
        labels = np.full(X.shape[0], -1, dtype=np.int64)
        rows = lloyd.rows()
        lloyd.bounded(means, labels, rows, rows.shift(means), False)
        np.testing.assert_array_equal(labels, own)
        moved = means.copy()
        moved[k - 1] += 1000.0  # far from every row: a mover for k >= 8
        shift = rows.shift(moved)
        zeros = np.flatnonzero(own == 0)[:20]
        twos = np.flatnonzero(own == 2)[:20]
        chosen = np.concatenate([zeros, twos])
        # their bounds, moved by the largest shift, prove nothing
        u = rows.array[chosen, 0].astype(float) + shift[own[chosen]]
        assert np.all(rows.array[chosen, 1] - shift.max() < u)
        X[chosen] = moved[3]  # now nearest to mean 3, behind the kernel's back
        lloyd.bounded(moved, labels, rows, shift, False)
        plain = own.copy()
        lloyd.unbounded(moved, plain, False)
        assert np.all(plain[chosen] == 3)
        if name != "numba":
            assert np.all(labels[chosen] == 3)  # no bounds kept: scored again
            return
        assert np.all(labels[twos] == 2)  # held, not scored
        assert np.all(labels[zeros] == (0 if k >= 8 else 3))
        others = np.setdiff1d(np.arange(X.shape[0]), chosen)
        np.testing.assert_array_equal(labels[others], plain[others])


@requires_numba
def test_separations_are_lower_bounds():
    from fastem.backends import numba_backend
    rng = np.random.default_rng(22)
    for k, d, movers in [(1, 3, []), (2, 5, [1]), (9, 4, [3]), (40, 16, [0, 7, 39])]:
        means = rng.standard_normal((k, d)) * 10.0 ** rng.integers(-3, 4)
        movers = np.array(movers, dtype=np.int64)
        sep, msep = numba_backend._separations(means, movers, True)
        alone, msep_alone = numba_backend._separations(means, movers, False)
        assert np.all(alone == 0.0) and np.array_equal(msep_alone, msep)
        exact = np.sqrt((((means[:, None].astype(np.longdouble) - means[None]) ** 2)
                         ).sum(axis=2))
        np.fill_diagonal(exact, np.inf)
        if k == 1:
            assert sep[0] == 0.0 and msep[0] == np.inf  # no other mean: no bound
            continue
        want = exact.min(axis=1)
        # scaled down by 2^-20 (see _separations)
        assert np.all(sep <= want) and np.all(sep >= want * (1 - 2.0 ** -19))
        for a in range(k):
            others = [j for j in movers if j != a]
            if not others:
                assert msep[a] == np.inf
            else:
                m = exact[a, others].min()
                assert msep[a] <= m and msep[a] >= m * (1 - 2.0 ** -19)


def test_fit_with_bounds_equals_fit_without(monkeypatch, restore_config):
    """The whole fit, bounds on and off, with several initialisations, an empty
    cluster relocated, weights, 1 and 2 threads: the same labels and n_iter_,
    centres and inertia equal to rounding (the kept sums'), and the same bits
    for 1 and 2 threads."""
    X = _blobs(3000, 16, 40, np.float32, seed=9)
    w = np.random.default_rng(10).uniform(0.5, 2.0, X.shape[0])
    init = X[:40].astype(np.float64)
    init[5] = 1e3  # far from every point: empty after the first E-step, relocated
    results = {}
    for bounded in (False, True):
        for threads in (1, 2):
            fastem.set_num_threads(threads)
            real = kmeans_module.get_kernels

            def kernels(real=real, bounded=bounded):
                table = real()
                table.kmeans_bounds_pay = lambda d, k: bounded
                return table
            monkeypatch.setattr(kmeans_module, "get_kernels", kernels)
            used = []
            fit_em = kmeans_module.fit_em

            def spy(*args, fit_em=fit_em, used=used, **kwargs):
                used.append(kwargs["bounded"])
                return fit_em(*args, **kwargs)
            monkeypatch.setattr(kmeans_module, "fit_em", spy)
            fixed = fastem.KMeans(40, init=init, n_init=1, max_iter=12, tol=0).fit(
                X, sample_weight=w)
            several = fastem.KMeans(40, init="k-means++", n_init=3, max_iter=8,
                                    random_state=0).fit(X)
            assert used == [bounded, bounded]
            results[bounded, threads] = (fixed, several)
            monkeypatch.undo()
    for bounded in (False, True):
        for model, ref in zip(results[bounded, 2], results[bounded, 1]):
            np.testing.assert_array_equal(model.labels_, ref.labels_)
            assert np.array_equal(model.cluster_centers_, ref.cluster_centers_), bounded
            assert model.inertia_ == ref.inertia_ and model.n_iter_ == ref.n_iter_, bounded
    weights = (w, np.ones(X.shape[0]))
    for model, ref, weight in zip(results[True, 1], results[False, 1], weights):
        np.testing.assert_array_equal(model.labels_, ref.labels_)
        assert model.n_iter_ == ref.n_iter_
        # a kept sum rounds at each of at most n * n_iter moves, by 2^-52 of the
        # sums' scale (see _Lloyd.check_kept_sums); a centre is a sum over its weight
        center = X[:1024].astype(np.float64).mean(axis=0)
        scale = np.sum(weight * np.max(np.abs(X - center), axis=1))
        nk = np.bincount(model.labels_, weights=weight, minlength=40)
        tol = 4.0 * X.shape[0] * model.n_iter_ * 2.0 ** -52 * scale / nk[nk > 0].min()
        assert np.all(np.abs(model.cluster_centers_ - ref.cluster_centers_) <= tol)
        # the final E-step adds the distances in row order at those centres: the
        # inertia moves by about 2 sum w |x - mu| tol, far below 1e-9 of itself here
        np.testing.assert_allclose(model.inertia_, ref.inertia_, rtol=1e-9)


def test_bounds_are_used_where_they_pay():
    kernels = get_kernels()
    if kernels.name != "numba":
        assert not kernels.kmeans_bounds_pay(32, 128)  # no bounds kept: never
        return
    assert kernels.kmeans_bounds_pay(32, 128)
    assert not kernels.kmeans_bounds_pay(2, 8)


def test_row_bounds_shift_is_an_upper_bound():
    rows = _em.RowBounds(4, 1, 6, 9)
    rows.reset()
    assert np.all(rows.array[:, 0] == np.inf) and np.all(rows.array[:, 1] == 0)
    assert rows.sums.shape == (1, 6, 10) and np.all(np.isnan(rows.sums))
    rng = np.random.default_rng(11)
    a = rng.standard_normal((6, 9)) * 1e3
    assert np.all(rows.shift(a) == 0.0)  # the first E-step: nothing moved yet
    b = a + rng.standard_normal((6, 9)) * 1e-3
    moved = rows.shift(b)
    exact = np.sqrt((((b.astype(np.longdouble) - a.astype(np.longdouble)) ** 2)).sum(axis=1))
    assert np.all(moved.astype(np.longdouble) >= exact)
    assert np.all(moved <= exact * (1 + 1e-12))


@pytest.mark.parametrize("bad", ["float64", "shape", "fortran", "readonly", "shift",
                                 "sums_dtype", "sums_shape", "sums_readonly"])
def test_bad_bounds_are_refused(backend, bad):
    X = _blobs(50, 4, 3, np.float64, seed=12)
    lloyd = _Lloyd(X, 3)
    means = X[:3].copy()
    labels = np.full(50, -1, dtype=np.int64)
    rows = lloyd.rows()
    bounds = np.zeros((50, 2), dtype=np.float32)
    shift = np.zeros(3)
    if bad == "sums_dtype":
        rows.sums = rows.sums.astype(np.float32)
    elif bad == "sums_shape":
        rows.sums = np.zeros((lloyd.n_chunks + 1, 3, 5))
    elif bad == "sums_readonly":
        rows.sums.flags.writeable = False
    elif bad == "float64":
        bounds = bounds.astype(np.float64)
    elif bad == "shape":
        bounds = np.zeros((49, 2), dtype=np.float32)
    elif bad == "fortran":
        bounds = np.asfortranarray(bounds)
    elif bad == "readonly":
        bounds.flags.writeable = False
    else:
        shift = np.zeros(2)
    rows.array = bounds
    with pytest.raises(ValueError, match="sums" if bad.startswith("sums") else "bounds|shift"):
        lloyd.bounded(means, labels, rows, shift, False)
