"""Fixtures shared by the kernel and model benchmarks.

* ``problem``: the data and initial parameters of the current ``case``
  (see ``cases.py``), built once and kept for later cases of the same shape.
* ``record_model_timing``: collects model (and peer) timings for the ratio tables.
* At the end of a timed run, for every model group that has fastem and a
  peer (``PEER_TABLES``), a table of their time ratios: fastem/scikit-learn
  per EM iteration, and fastem's BernoulliMixture iteration over one dense
  multiply ``X @ logit.T``; then NaN/complete for the missing-value fits.
* Saved runs (``--benchmark-autosave``, ``--benchmark-json``) record fastem's
  backend and thread count and OMP_WAIT_POLICY in ``machine_info``, and the
  load average at the end of the run in ``fastem_load_average``: on a shared
  2-core machine, other processes' load distorts the timings (scikit-learn's
  BLAS threads most of all).  The load average stays out of ``machine_info``
  because ``--benchmark-compare`` warns whenever ``machine_info`` differs
  from the baseline's, which should mean a different setup, not a busier
  minute.  For the same reason the machine's dense-multiply peak, measured
  at the end of a timed run (``fastem._bench.multiply_peak``, the BLAS
  limited to fastem's thread count), is printed in the summary and saved as
  ``fastem_multiply_peak`` (GFLOP/s by dtype): the cases' ``gflops`` are
  read against it.
"""

import functools
import os

import pytest

import fastem
from fastem import _bench

from cases import NAN_SUFFIX, make_problem

# Large arrays are a few hundred MB: keep only the most recent few.
_load_problem = functools.lru_cache(maxsize=3)(make_problem)

_model_timings = pytest.StashKey[list]()


@pytest.fixture
def problem(case):
    """The :class:`cases.Problem` of ``case`` (cached across the session)."""
    shape = case.shape
    return _load_problem(case.data, shape.n, shape.d, shape.k, case.dtype)


@pytest.fixture
def record_model_timing(request):
    """Remember (case, seconds per iteration) for the end-of-run ratio table."""
    timings = request.config.stash[_model_timings]

    def record(case, seconds_per_iter):
        timings.append((case, seconds_per_iter))
    return record


def pytest_configure(config):
    config.stash[_model_timings] = []


def _load_average():
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover - not available
        return None


@functools.lru_cache(maxsize=None)
def _multiply_peak():
    """GFLOP/s of the dense multiply by dtype, measured once, at first use."""
    with _bench._thread_limits(fastem.get_num_threads()):
        return _bench.multiply_peak(_bench.PEAK_SIZE)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["fastem"] = {
        "backend": fastem.get_backend(),
        "num_threads": fastem.get_num_threads(),
        "available_backends": fastem.available_backends(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["fastem_load_average"] = _load_average()
    output_json["fastem_multiply_peak"] = _multiply_peak()


# Runners timed in a fastem model's group, each with its own ratio table:
# (runner, section title, peer column, ratio column).
PEER_TABLES = (
    ("sklearn", "fastem vs scikit-learn: median time per EM iteration",
     "sklearn ms", "fastem/sklearn"),
    ("matmul", "BernoulliMixture iteration vs one dense multiply X @ logit.T (target <= 2)",
     "multiply ms", "fastem/multiply"),
)


def _write_peer_table(tr, by_key, peer, title, peer_column, ratio_column):
    rows = [(group, dtype, runner, fastem_s, by_key[group, dtype, peer])
            for (group, dtype, runner), fastem_s in sorted(by_key.items())
            if runner.startswith("fastem") and (group, dtype, peer) in by_key]
    if not rows:
        return
    tr.section(title)
    tr.write_line(f"{'group':<40} {'dtype':<8} {'runner':<15} {'fastem ms':>10} "
                  f"{peer_column:>11} {ratio_column:>15}")
    for group, dtype, runner, fastem_s, peer_s in rows:
        tr.write_line(f"{group:<40} {dtype:<8} {runner:<15} {1e3 * fastem_s:>10.2f} "
                      f"{1e3 * peer_s:>11.2f} {fastem_s / peer_s:>15.3f}")


def _write_backend_table(tr, by_key):
    """cython / numba per model group: the target is at most 1.5."""
    rows = [(group, dtype, cython_s, by_key[group, dtype, "fastem[numba]"])
            for (group, dtype, runner), cython_s in sorted(by_key.items())
            if runner == "fastem[cython]" and (group, dtype, "fastem[numba]") in by_key]
    if not rows:
        return
    tr.section("fastem backends: cython vs numba, median time per EM iteration (target <= 1.5)")
    tr.write_line(f"{'group':<40} {'dtype':<8} {'cython ms':>10} {'numba ms':>10} "
                  f"{'cython/numba':>13}")
    for group, dtype, cython_s, numba_s in rows:
        tr.write_line(f"{group:<40} {dtype:<8} {1e3 * cython_s:>10.2f} "
                      f"{1e3 * numba_s:>10.2f} {cython_s / numba_s:>13.2f}")


def pytest_terminal_summary(terminalreporter, config):
    timings = config.stash.get(_model_timings, [])
    by_key = {}
    for case, seconds in timings:
        by_key[(case.group, case.dtype, case.runner_label)] = seconds
    if not timings:
        return
    tr = terminalreporter
    for peer, title, peer_column, ratio_column in PEER_TABLES:
        _write_peer_table(tr, by_key, peer, title, peer_column, ratio_column)
    _write_backend_table(tr, by_key)
    missing_rows = []
    for (group, dtype, runner), nan_s in sorted(by_key.items()):
        label, _, shape = group.partition("|")
        if runner.startswith("fastem") and label.endswith(NAN_SUFFIX):
            complete_s = by_key.get((f"{label[:-len(NAN_SUFFIX)]}|{shape}", dtype, runner))
            if complete_s is not None:
                missing_rows.append((group, dtype, runner, nan_s, complete_s))
    if missing_rows:
        tr.section("fastem with 10 % NaN vs complete data: median time per EM iteration")
        tr.write_line(f"{'group':<40} {'dtype':<8} {'runner':<15} {'NaN ms':>10} "
                      f"{'complete ms':>12} {'NaN/complete':>13}")
        for group, dtype, runner, nan_s, complete_s in missing_rows:
            tr.write_line(f"{group:<40} {dtype:<8} {runner:<15} {1e3 * nan_s:>10.2f} "
                          f"{1e3 * complete_s:>12.2f} {nan_s / complete_s:>13.2f}")
    peak = _multiply_peak()
    tr.write_line(_bench.describe_peak(peak, _bench.PEAK_SIZE, "at the end"))
    load = _load_average()
    if load is not None:
        tr.write_line(f"load average at the end (1, 5, 15 min): "
                      f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} on {os.cpu_count()} CPUs "
                      f"(this run counts for up to {fastem.get_num_threads()}; more means other "
                      f"processes competed and the ratios are distorted)")
