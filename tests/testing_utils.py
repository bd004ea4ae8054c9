"""Helpers shared by the test modules (imported, unlike conftest fixtures)."""

import os

import numpy as np
import pytest

import fastem

# The folder holding the fastem under test: the source tree in a development
# install, site-packages after ``pip install .``.  Python subprocesses of the
# tests run there and have it first on PYTHONPATH, so that they import this
# fastem (with its compiled extension), not the source tree of the checkout.
FASTEM_HOME = os.path.dirname(os.path.dirname(os.path.abspath(fastem.__file__)))
# Their working directory (first on their sys.path): one holding neither
# fastem nor numba, so PYTHONPATH decides, and a numba block comes first.
SUBPROCESS_CWD = os.path.dirname(os.path.abspath(__file__))
_BLOCK_DIR = os.path.join(SUBPROCESS_CWD, "block_numba")


def subprocess_pythonpath(current=""):
    """PYTHONPATH for a Python subprocess of a test: [numba block,] FASTEM_HOME, current."""
    parts = [FASTEM_HOME] + [p for p in current.split(os.pathsep) if p and p != _BLOCK_DIR]
    if NUMBA_BLOCKED:
        parts.insert(0, _BLOCK_DIR)
    return os.pathsep.join(parts)

# FASTEM_TEST_BLOCK_NUMBA=1: conftest.py made numba unimportable for the session.
NUMBA_BLOCKED = os.environ.get("FASTEM_TEST_BLOCK_NUMBA", "").strip() == "1"
requires_numba = pytest.mark.skipif(
    NUMBA_BLOCKED, reason="numba is blocked in this run (FASTEM_TEST_BLOCK_NUMBA=1)")

# The Cython extension is optional in a plain install (no C compiler, say);
# CI builds with FASTEM_REQUIRE_CYTHON=1, and then it must be there.
REQUIRE_CYTHON = os.environ.get("FASTEM_REQUIRE_CYTHON", "").strip() not in ("", "0")
requires_cython = pytest.mark.skipif(
    "cython" not in fastem.available_backends() and not REQUIRE_CYTHON,
    reason="the Cython extension was not built (and FASTEM_REQUIRE_CYTHON is unset)")

# The compiled backends importable here (numba, cython), fastest first.
COMPILED_BACKENDS = [name for name in fastem.available_backends() if name != "numpy"]


def backend_threads(name):
    """Threads backend ``name`` runs with when fastem asks for all cores."""
    cores = fastem._config._cpu_count()
    if name == "numba":
        import numba

        return min(cores, numba.config.NUMBA_NUM_THREADS)
    if name == "cython":
        from fastem.backends import _cython_kernels

        return _cython_kernels.openmp_threads(cores)
    return 1


def rel_err(actual, expected):
    """Largest absolute difference relative to the largest entry of ``expected``.

    Norm-wise rather than element-wise, so entries that are sums cancelling to
    nearly zero are judged on the scale of the whole array.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if expected.size == 0:
        return 0.0
    scale = np.max(np.abs(expected))
    diff = np.max(np.abs(actual - expected))
    if scale == 0.0:
        return float(diff)
    return float(diff / scale)
