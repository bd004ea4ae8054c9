"""The command line: ``python -m fastem demo`` and ``python -m fastem bench``."""

import io
import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

try:
    import threadpoolctl
except ImportError:  # the bench's matmul control is then not measured
    threadpoolctl = None

import fastem
from testing_utils import (SUBPROCESS_CWD, requires_cython, requires_numba,
                           subprocess_pythonpath)

REPO = SUBPROCESS_CWD  # where subprocesses run (see testing_utils)
MODELS = ["KMeans", "GaussianMixture[full]", "GaussianMixture[tied]", "GaussianMixture[diag]",
          "GaussianMixture[spherical]", "BernoulliMixture"]


def run_fastem(*args, **env):
    environ = dict(os.environ, **env)
    environ["PYTHONPATH"] = subprocess_pythonpath(os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "fastem", *args], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("backend_name", [pytest.param("numba", marks=requires_numba),
                                          pytest.param("cython", marks=requires_cython),
                                          "numpy"])
def test_demo_runs_every_model(backend_name):
    proc = run_fastem("demo", "--n-samples", "3000", FASTEM_BACKEND=backend_name)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"backend {backend_name!r}" in out
    assert "3000 x 8 Gaussian blobs" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()}
    for name in MODELS:
        assert name in rows, f"{name} missing from:\n{out}"
        # name, seconds, iterations, then the model's quality measure
        assert re.match(rf"{re.escape(name)}\s+\d+\.\d+\s+\d+\s+(inertia|lower bound) -?\d",
                        rows[name]), rows[name]
    assert "Traceback" not in proc.stderr


def test_help_and_bad_command():
    proc = run_fastem("--help")
    assert proc.returncode == 0 and "demo" in proc.stdout
    proc = run_fastem("fly")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = run_fastem()
    assert proc.returncode == 2


# ---------------------------------------------------------------- fastem bench
BENCH_MODELS = {"KMeans", "GaussianMixture", "BernoulliMixture"}
# tiny: every n at its floor, two iterations, one fit per case
TINY = ("--scale", "1e-6", "--max-iter", "2", "--repeats", "1")


def bench_rows(out):
    """Table rows of ``fastem bench`` output, by section, split into columns."""
    sections, current = {}, None
    for line in out.splitlines():
        if line.startswith("fastem vs scikit-learn"):
            current = "sklearn"
        elif line.startswith("BernoulliMixture vs one dense multiply"):
            current = "multiply"
        elif line.startswith("missing values:"):
            current = "missing"
        elif line.startswith("threads:"):
            current = "threads"
        elif line.startswith("sizes:"):
            current = "sizes"
        elif line.split() and line.split()[0] in BENCH_MODELS:
            sections.setdefault(current, []).append(line.split())
    return sections


def positive_finite(text):
    value = float(text)
    return value > 0 and value != float("inf")


@requires_cython
def test_bench_times_the_backend_it_is_given():
    proc = run_fastem("bench", *TINY, "--models", "kmeans", "--backend", "cython")
    assert proc.returncode == 0, proc.stderr
    assert "backend 'cython'" in proc.stdout
    proc = run_fastem("bench", *TINY, "--backend", "fortran")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_bench_runs_every_group(tmp_path):
    json_path = tmp_path / "bench.json"
    proc = run_fastem("bench", *TINY, "--json", str(json_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Traceback" not in proc.stderr
    assert "machine:" in out and "thread(s)" in out and "numpy" in out
    sections = bench_rows(out)

    sklearn_rows = sections["sklearn"]
    kmeans = [row for row in sklearn_rows if row[0] == "KMeans"]
    assert [(row[2], row[3]) for row in kmeans] == [
        (shape, dtype) for shape in ("(512,16,16)", "(4352,32,128)", "(512,2,8)")
        for dtype in ("float32", "float64")]
    gmm = [row for row in sklearn_rows if row[0] == "GaussianMixture"]
    assert [(row[1], row[2]) for row in gmm] == [
        (cov, shape) for shape in ("(512,16,16)", "(512,2,8)", "(528,64,8)")
        for cov in ("full", "tied", "diag", "spherical")]
    for row in sklearn_rows:
        # model cov (n,d,k) dtype fastem-ms sklearn-ms sklearn/fastem GFLOP/s % peak
        # %-peak-for-target iters, then faiss-ms faiss/fastem when faiss is installed
        # (float32 K-means)
        assert len(row) in (11, 13), row
        assert all(positive_finite(value) for value in row[4:8]), row
        assert re.fullmatch(r"\d+", row[8]), row  # a whole percentage, 0 for tiny fits
        assert re.fullmatch(r"\d+", row[9]), row
        assert re.fullmatch(r"[12]/[12]", row[10]), row
        if len(row) == 13:
            if row[0] == "KMeans" and row[3] == "float32":
                assert all(positive_finite(value) for value in row[11:]), row
            else:
                assert row[11:] == ["-", "-"], row

    (bernoulli,) = sections["multiply"]
    assert bernoulli[:4] == ["BernoulliMixture", "-", "(2112,64,32)", "float64"]
    assert all(positive_finite(value) for value in bernoulli[4:8]), bernoulli

    missing = sections["missing"]
    assert [row[1] for row in missing] == ["full", "diag"]
    for row in missing:
        assert row[2:4] == ["(512,16,8)", "float64"]
        assert all(positive_finite(value) for value in row[4:8]), row

    report = json.loads(json_path.read_text())
    machine = report["machine"]
    assert machine["threads"] >= 1 and machine["cpu"]
    # the measured multiply peak, at the start (the rows' % peak) and at the end
    assert machine["multiply_peak_size"] == 256  # --scale 1e-6: the smallest multiply
    for peak in (machine["multiply_peak"], machine["multiply_peak_end"]):
        assert sorted(peak) == ["float32", "float64"]
        assert all(positive_finite(value) for value in peak.values())
    assert "dense multiply peak at the start (numpy's BLAS, 256 x 256" in out
    assert "dense multiply peak at the end" in out
    assert len(report["rows"]) == len(sklearn_rows) + 1 + len(missing)
    for row in report["rows"]:
        assert row["fastem_s"] > 0 and row["ratio"] > 0 and row["gflops"] > 0
        assert row["peak_percent"] == pytest.approx(
            100 * row["gflops"] / machine["multiply_peak"][row["dtype"]])
    for row, line in zip(report["rows"], sklearn_rows):
        assert line[8] == f"{row['peak_percent']:.0f}"
        # the target's rate: 1.5 (KMeans) or 10 (GaussianMixture) times the nominal
        # flops over scikit-learn's time, against the same peak
        target = {"KMeans": 1.5, "GaussianMixture": 10.0}[row["model"]]
        flops = row["gflops"] * row["fastem_s"]
        assert row["target_peak_percent"] == pytest.approx(
            100 * target * flops / row["peer_s"] / machine["multiply_peak"][row["dtype"]])
        assert line[9] == f"{row['target_peak_percent']:.0f}"
    for row in report["rows"][len(sklearn_rows):]:
        assert row["target_peak_percent"] is None


@requires_numba
def test_bench_warm_up_leaves_nothing_to_compile(monkeypatch):
    """After ``warm_up`` on a slice of X, a fit of the whole of X calls no
    chunk driver with a chunk kernel or argument types that the warm-up did
    not, so nothing is compiled in the timed fits.  On (2e4, 2, 8) the slice's
    calls are below ``SERIAL_WORK`` (the calling thread's driver) and the
    whole data's are not (the thread pool's)."""
    from fastem import _bench
    from fastem.backends import _numba_jit

    seen = []

    def recording(name, driver):
        def run(address, n_chunks, *args):
            seen.append((name, address, tuple(_numba_jit._type_key(a) for a in args)))
            return driver(address, n_chunks, *args)
        return run

    monkeypatch.setattr(_numba_jit, "_run_chunks", recording("pool", _numba_jit._run_chunks))
    monkeypatch.setattr(_numba_jit, "_run_chunks_serial",
                        recording("serial", _numba_jit._run_chunks_serial))
    X = _bench.gaussian_blobs(20_000, 2, 8)
    start = _bench.GaussianStart.from_data(X, 8)
    cases = {
        "KMeans float32": (lambda: fastem.KMeans(n_clusters=8, init=start.means, n_init=1,
                                                 max_iter=3, tol=0.0), X.astype(np.float32)),
        "GaussianMixture diag": (lambda: fastem.GaussianMixture(
            n_components=8, covariance_type="diag", weights_init=start.weights,
            means_init=start.means, precisions_init=start.precisions("diag"), max_iter=3,
            tol=0.0), X),
    }
    for name, (make, data) in cases.items():
        seen.clear()
        _bench.warm_up(make, data)
        warmed = set(seen)
        seen.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastem.exceptions.ConvergenceWarning)  # 3 iterations
            make().fit(data)
        timed = set(seen)
        assert any(driver == "pool" for driver, *_ in timed), name
        assert timed <= warmed, (name, timed - warmed)


def test_bench_threads_group(tmp_path):
    """``--models threads``: each KMeans, GaussianMixture and BernoulliMixture
    shape with one thread and with two, and a skip with one thread only."""
    json_path = tmp_path / "bench.json"
    proc = run_fastem("bench", *TINY, "--models", "threads", "--threads", "2",
                      "--json", str(json_path))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(json_path.read_text())
    if report["machine"]["threads"] < 2:  # numba started with one thread
        assert "threads: skipped" in proc.stdout
    else:
        rows = bench_rows(proc.stdout)["threads"]
        assert [(row[0], row[1], row[2]) for row in rows] == (
            [("KMeans", "-", shape) for shape in ("(512,16,16)", "(4352,32,128)", "(512,2,8)")]
            + [("GaussianMixture", cov, shape)
               for shape in ("(512,16,16)", "(512,2,8)", "(528,64,8)")
               for cov in ("full", "tied", "diag", "spherical")]
            + [("BernoulliMixture", "-", "(2112,64,32)")])
        for row in rows:
            # model cov (n,d,k) dtype 2t-ms 1t-ms speed-up GFLOP/s iters, then the
            # matmul control's speed-up ("-" without threadpoolctl)
            assert row[3] == "float64" and len(row) == 10, row
            assert all(positive_finite(value) for value in row[4:8]), row
            assert row[9] == "-" if threadpoolctl is None else positive_finite(row[9]), row
        assert [row["section"] for row in report["rows"]] == ["threads"] * len(rows)
        assert all(row["peer"] == "1 thread" and row["ratio"] > 0 for row in report["rows"])
        for row in report["rows"]:
            if threadpoolctl is None:
                assert row["control_ratio"] is None
            else:
                assert row["control_ratio"] > 0
    proc = run_fastem("bench", *TINY, "--models", "threads", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "threads: skipped, fastem has 1 thread" in proc.stdout


def test_bench_sizes_group(tmp_path):
    """``--models sizes``: KMeans and GaussianMixture diag and full at three n
    (here 1e5, 1e6 and 1e7 scaled by 1e-3, n=100 raised to its floor of 512),
    float32, each row's time per iteration and row against the smallest n's."""
    json_path = tmp_path / "bench.json"
    proc = run_fastem("bench", "--scale", "1e-3", "--max-iter", "2", "--repeats", "1",
                      "--models", "n", "--json", str(json_path))
    assert proc.returncode == 0, proc.stderr
    rows = bench_rows(proc.stdout)["sizes"]
    shapes = ("(512,16,16)", "(1e3,16,16)", "(1e4,16,16)")
    assert [(row[0], row[1], row[2], row[3]) for row in rows] == [
        (model, cov, shape, "float32")
        for model, cov in (("KMeans", "-"), ("GaussianMixture", "diag"),
                           ("GaussianMixture", "full"))
        for shape in shapes]
    report = json.loads(json_path.read_text())["rows"]
    assert [row["section"] for row in report] == ["sizes"] * len(rows)
    for row, line in zip(report, rows):
        # model cov (n,d,k) dtype ms/it ns/row/it per-row-ratio GFLOP/s iters
        assert len(line) == 9 and all(positive_finite(value) for value in line[4:8]), line
        assert line[8] == "2"
        # the printout rounds ms to 3 decimals and ns to 1: these tolerances are its
        # rounding, not the precision of a measurement
        assert float(line[4]) == pytest.approx(row["fastem_s"] * 1e3, rel=1e-3, abs=1e-3)
        assert float(line[5]) == pytest.approx(row["fastem_s"] / row["n"] * 1e9, rel=1e-3,
                                               abs=0.1)
    for first in range(0, len(report), 3):
        smallest = report[first]
        assert smallest["ratio"] == 1.0 and smallest["peer"] == "n=512"
        for row in report[first:first + 3]:
            assert row["peer_s"] == smallest["fastem_s"]
            assert row["peer_iters"] == smallest["fastem_iters"]
            assert row["ratio"] == pytest.approx(
                row["fastem_s"] / row["n"] / (smallest["fastem_s"] / smallest["n"]))


def test_bench_help_and_bad_input():
    proc = run_fastem("--help")
    assert proc.returncode == 0 and "bench" in proc.stdout
    proc = run_fastem("bench", "--help")
    assert proc.returncode == 0
    for option in ("--quick", "--models", "--dtype", "--repeats", "--max-iter", "--threads"):
        assert option in proc.stdout
    for bad, message in [(("--models", "kmeans,svm"), "unknown model group 'svm'"),
                         (("--threads", "0"), "--threads: expected a positive integer"),
                         (("--max-iter", "ten"), "--max-iter: expected a positive integer"),
                         (("--scale", "nan"), "--scale: expected a positive number"),
                         (("--dtype", "float16"), "invalid choice")]:
        proc = run_fastem("bench", *bad)
        assert proc.returncode == 2, bad
        assert message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def _bench_in_process(**settings):
    from fastem import _bench

    out = io.StringIO()
    settings = _bench.Settings(**dict(dict(scale=1e-6, max_iter=2, repeats=1), **settings))
    info, rows = _bench.run(settings, out=out)
    return info, rows, out.getvalue()


def test_bench_without_sklearn(monkeypatch):
    for name in ("sklearn", "sklearn.cluster", "sklearn.mixture"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    info, rows, out = _bench_in_process(groups=("kmeans",), dtype="float64")
    assert info["sklearn"] is None
    assert "scikit-learn is not installed: fastem times only" in out
    assert len(rows) == 3
    for row in rows:
        assert row.fastem_s > 0 and row.peer_s is None and row.ratio is None
    table = bench_rows(out)["sklearn"]
    assert [row[5:7] for row in table] == [["-", "-"]] * 3


class FakeFaiss:
    """Records how ``fastem bench`` drives ``faiss.Kmeans``."""

    __version__ = "fake"

    def __init__(self):
        self.calls = []
        self.threads = None
        fake = self

        class Kmeans:
            def __init__(self, d, k, **params):
                self.d, self.k, self.params = d, k, params

            def train(self, x, weights=None, init_centroids=None):
                assert x.dtype == np.float32 and x.flags.c_contiguous
                assert init_centroids.dtype == np.float32
                assert init_centroids.shape == (self.k, self.d)
                fake.calls.append((x.shape, self.params, init_centroids.copy()))
                self.obj = np.zeros(self.params["niter"])
                return 0.0

        self.Kmeans = Kmeans

    def omp_set_num_threads(self, n):
        self.threads = n


def test_bench_faiss_path(monkeypatch):
    fake = FakeFaiss()
    monkeypatch.setitem(sys.modules, "faiss", fake)
    info, rows, out = _bench_in_process(groups=("kmeans",))
    assert info["faiss"] == "fake"
    # float32 only, every point used, the fit's iterations and initial centroids;
    # each timed run follows a one-iteration warm-up on a slice
    assert [params["niter"] for _, params, _ in fake.calls] == [1, 2] * 3
    assert fake.threads == info["threads"]
    timed = fake.calls[1::2]
    for (shape, params, init), row in zip(timed, [r for r in rows if r.dtype == "float32"]):
        assert shape == (row.n, row.d)
        assert params["niter"] == 2 and params["max_points_per_centroid"] >= row.n
        assert init.shape == (row.k, row.d)
    for row in rows:
        assert (row.faiss_s is not None) == (row.dtype == "float32")
    header = next(line for line in out.splitlines() if line.startswith("model"))
    assert "faiss ms/it" in header and "faiss/fastem" in header


def test_bench_peak_size_and_rate(monkeypatch):
    """The peak multiply shrinks with --scale like the cases' flops, and its
    rate is 2 size^3 flops over the best of its timings."""
    from fastem import _bench
    assert _bench.peak_size(1.0) == _bench.peak_size(10.0) == 2048
    assert _bench.peak_size(0.1) == 896          # 2048 * 0.1^(1/3) = 950.6, to a multiple of 64
    assert _bench.peak_size(1e-6) == 256         # the floor
    ticks = iter([0.0, 0.5, 1.0, 1.25, 2.0, 3.0] * 2)  # per dtype: 0.5, 0.25 and 1.0 s
    monkeypatch.setattr(_bench.time, "perf_counter", lambda: next(ticks))
    peak = _bench.multiply_peak(64)
    assert peak == {dtype: pytest.approx(2 * 64 ** 3 / 0.25 / 1e9)
                    for dtype in ("float64", "float32")}


def test_bench_flop_model_and_labels():
    from fastem import _bench

    assert _bench.model_flops("KMeans", None, 1000, 16, 8) == 2 * 1000 * 8 * 16
    assert _bench.model_flops("BernoulliMixture", None, 10, 4, 2) == 4 * 10 * 2 * 4
    for cov in ("full", "tied", "diag", "spherical"):
        assert _bench.model_flops("GaussianMixture", cov, 100, 8, 4) > 0
    with pytest.raises(ValueError):
        _bench.model_flops("GaussianMixture", "banded", 100, 8, 4)
    assert _bench.shape_label(1_000_000, 32, 128) == "(1e6,32,128)"
    assert _bench.shape_label(200_000, 2, 8) == "(2e5,2,8)"
    assert _bench.shape_label(4352, 32, 128) == "(4352,32,128)"
    # the data are deterministic
    np.testing.assert_array_equal(_bench.gaussian_blobs(300, 3, 2),
                                  _bench.gaussian_blobs(300, 3, 2))
    X = _bench.with_missing(_bench.gaussian_blobs(2000, 5, 2))
    assert 0.08 < np.isnan(X).mean() < 0.12


class _ClockedFit:
    """A model whose fit advances a fake clock by ``fixed`` + ``per_iteration``
    seconds an iteration, so that the bench's arithmetic can be checked exactly."""

    def __init__(self, clock, fixed, per_iteration, max_iter=12):
        self.clock, self.fixed, self.per_iteration = clock, fixed, per_iteration
        self.max_iter = max_iter

    def set_params(self, max_iter):
        self.max_iter = max_iter
        return self

    def fit(self, X):
        self.clock[0] += self.fixed + self.per_iteration * self.max_iter
        self.n_iter_ = self.max_iter
        return self


def test_bench_marginal_time_per_iteration_leaves_out_fixed_costs(monkeypatch):
    from fastem import _bench

    clock = [0.0]
    monkeypatch.setattr(_bench, "_clock", lambda: clock[0])
    X = np.zeros((4, 2))
    cases = [(lambda: _ClockedFit(clock, 0.5, 0.01), X),
             (lambda: _ClockedFit(clock, 0.0, 0.02), X)]
    # fit time / n_iter_ carries the fixed cost; the marginal time does not
    (a, n_a), (b, n_b) = _bench.alternating(cases, 2)
    assert (n_a, n_b) == (12, 12)
    assert a == pytest.approx(0.5 / 12 + 0.01) and b == pytest.approx(0.02)
    (a, n_a), (b, n_b) = _bench.alternating(cases, 2, marginal=True)
    assert (n_a, n_b) == (12, 12)
    assert a == pytest.approx(0.01) and b == pytest.approx(0.02)
    assert _bench.marginal_iterations(12) == 4 and _bench.marginal_iterations(2) == 1
    # fits whose times do not grow with the iterations: fit time / n_iter_
    flat = [(lambda: _ClockedFit(clock, 0.6, 0.0), X)]
    assert _bench.alternating(flat, 1, marginal=True) == [(pytest.approx(0.05), 12)]
    # one iteration: no shorter fit to subtract
    one = [(lambda: _ClockedFit(clock, 0.5, 0.01, max_iter=1), X)]
    assert _bench.alternating(one, 1, marginal=True) == [(pytest.approx(0.51), 1)]


def test_bench_marginal_option(tmp_path):
    json_path = tmp_path / "bench.json"
    proc = run_fastem("bench", *TINY, "--models", "gmm,missing", "--marginal",
                      "--json", str(json_path))
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert "(fit time at max_iter - fit time at 1 iterations)" in first
    assert "--marginal" in first
    sections = bench_rows(proc.stdout)
    assert len(sections["sklearn"]) == 12 and len(sections["missing"]) == 2
    for row in sections["sklearn"] + sections["missing"]:
        assert all(positive_finite(value) for value in row[4:8]), row
    report = json.loads(json_path.read_text())
    assert report["settings"]["marginal"] is True
