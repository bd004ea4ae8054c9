"""Both builds of the Cython extension give the NumPy reference's results.

On x86-64 the extension is compiled twice, for the generic target and with
AVX2 and FMA (``*_avx2``); the Cython backend takes the second on CPUs with
both (``cython_backend.SIMD``), so the rest of the suite tests only that one
here.  These tests run every kernel of the table on each build that this
machine can run, by swapping the backend's modules, against the numpy
backend, with and without NaN.
"""

import contextlib
import importlib
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from fastem import backends

from test_kernels import (COV_TYPES, KERNEL_TOL, make_bernoulli_case, make_gaussian_case,
                          run_bernoulli_kernel, run_gaussian_kernel)
from test_missing import missing_kernel_case, run_missing_kernel
from testing_utils import (SUBPROCESS_CWD, rel_err, requires_cython,
                           subprocess_pythonpath)

pytestmark = requires_cython


def _builds():
    """Names of the builds importable and runnable here."""
    try:
        cb = importlib.import_module("fastem.backends.cython_backend")
    except ImportError:  # not built: the tests skip (requires_cython)
        return []
    names = ["generic"]
    if cb._cpu_has_avx2_fma():
        try:
            importlib.import_module("fastem.backends._cython_kernels_avx2")
            importlib.import_module("fastem.backends._cython_missing_avx2")
            names.append("avx2")
        except ImportError:
            pass
    return names


@contextlib.contextmanager
def cython_build(name):
    """The Cython backend module, running on build ``name`` inside the block."""
    cb = importlib.import_module("fastem.backends.cython_backend")
    suffix = "" if name == "generic" else "_" + name
    saved = cb._ck, cb._cm
    cb._ck = importlib.import_module(f"fastem.backends._cython_kernels{suffix}")
    cb._cm = importlib.import_module(f"fastem.backends._cython_missing{suffix}")
    try:
        yield cb
    finally:
        cb._ck, cb._cm = saved


def _assert_outputs_agree(got, ref, what):
    assert set(got) == set(ref), what
    for name, r in ref.items():
        g = got[name]
        assert not np.isnan(g).any(), (what, name, "left unwritten")
        if name == "labels":
            np.testing.assert_array_equal(g, r, err_msg=str((what, name)))
        else:
            assert rel_err(g, r) < KERNEL_TOL, (what, name)


def test_the_avx2_build_serves_cpus_that_have_it():
    """Where no AVX2 build exists (Windows, other CPUs) the choice is generic."""
    cb = importlib.import_module("fastem.backends.cython_backend")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        assert cb.SIMD == "generic"
    elif os.environ.get("FASTEM_CYTHON_SIMD", "auto") == "auto":
        assert cb.SIMD == ("avx2" if "avx2" in _builds() else "generic")


@pytest.mark.parametrize("value, expected", [("generic", "generic"), ("bogus", None)])
def test_fastem_cython_simd_chooses_or_is_a_clear_error(value, expected):
    code = ("from fastem.backends import cython_backend as cb; print(cb.SIMD)")
    env = dict(os.environ, FASTEM_CYTHON_SIMD=value,
               PYTHONPATH=subprocess_pythonpath())
    run = subprocess.run([sys.executable, "-c", code], cwd=SUBPROCESS_CWD, env=env,
                         capture_output=True, text=True, timeout=120)
    if expected is None:
        assert run.returncode != 0
        assert "FASTEM_CYTHON_SIMD='bogus'" in run.stderr, run.stderr
    else:
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == expected


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("build", _builds())
def test_each_build_matches_numpy_on_complete_data(build, dtype):
    ref = backends._load("numpy")
    rng = np.random.default_rng(5)
    with cython_build(build) as cb:
        # d = 2: the full E-step's path for fewer features than a vector;
        # K-means screens its scores from 5 features on
        for d in (2, 5, 8):
            for cov_type in COV_TYPES:
                case = make_gaussian_case(cov_type, n=257, d=d, k=3, dtype=dtype, rng=rng)
                for hard in (False, True):
                    what = (build, cov_type, d, hard)
                    got = run_gaussian_kernel(getattr(cb, "estep_" + cov_type), case,
                                              cov_type, hard, 64, True)
                    exp = run_gaussian_kernel(getattr(ref, "estep_" + cov_type), case,
                                              cov_type, hard, 64, True)
                    _assert_outputs_agree(got, exp, what)
        bcase = make_bernoulli_case(n=257, d=6, k=3, dtype=dtype, rng=rng)
        for hard in (False, True):
            _assert_outputs_agree(run_bernoulli_kernel(cb.estep_bernoulli, bcase, hard, 64, True),
                                  run_bernoulli_kernel(ref.estep_bernoulli, bcase, hard, 64, True),
                                  (build, "bernoulli", hard))
        for d in (6, 11):  # sqdist's two paths (sums in registers from 8 features)
            X = rng.standard_normal((257, d)).astype(dtype)
            centers = rng.standard_normal((4, d))
            got, exp = np.full((257, 4), np.nan), np.full((257, 4), np.nan)
            cb.sqdist(X, centers, 64, got)
            ref.sqdist(X, centers, 64, exp)
            assert rel_err(got, exp) < KERNEL_TOL, (build, "sqdist", d)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("build", _builds())
def test_each_build_matches_numpy_with_nan(build, dtype):
    ref = backends._load("numpy")
    with cython_build(build) as cb:
        for kind in COV_TYPES + ("bernoulli",):
            for d, k in ((5, 3), (9, 6)):  # (9, 6): blocks of four and leftovers
                case = missing_kernel_case(kind, dtype, np.random.default_rng(60 + len(kind)),
                                           d=d, k=k)
                for hard in (False, True):
                    _assert_outputs_agree(run_missing_kernel(cb, kind, case, hard, 64, True),
                                          run_missing_kernel(ref, kind, case, hard, 64, True),
                                          (build, kind, d, k, hard))
