"""Shared fixtures: the backend under test, small real data sets, tolerances.

With ``FASTEM_TEST_BLOCK_NUMBA=1`` in the environment, ``import numba`` (and
of any ``numba.*`` module) raises ImportError for the whole session, installed
here before anything imports fastem: the suite then runs as it would on a
machine where numba is missing or broken (the Cython and NumPy backends).
Python subprocesses started by the tests inherit the block through
``PYTHONPATH`` (``tests/block_numba`` holds a ``numba`` that fails to import).
"""

import importlib.abc
import os
import sys


class _BlockNumba(importlib.abc.MetaPathFinder):
    """An import hook that makes numba unimportable."""

    def find_spec(self, name, path=None, target=None):
        if name == "numba" or name.startswith("numba."):
            raise ImportError(f"{name} is blocked (FASTEM_TEST_BLOCK_NUMBA=1)")
        return None


if os.environ.get("FASTEM_TEST_BLOCK_NUMBA", "").strip() == "1":
    if "numba" in sys.modules:
        raise RuntimeError("FASTEM_TEST_BLOCK_NUMBA=1 but numba was imported before "
                           "tests/conftest.py could block it")
    sys.meta_path.insert(0, _BlockNumba())
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [os.path.join(os.path.dirname(os.path.abspath(__file__)), "block_numba")]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

import numpy as np  # noqa: E402 - after the numba block
import pytest  # noqa: E402
import scipy.linalg  # noqa: F401 - load scipy's BLAS before limiting it
from sklearn.datasets import load_digits, load_iris, load_wine
from threadpoolctl import threadpool_limits

import fastem
from fastem import _config

# One BLAS thread: the suite's matrices are small, and on a two-core machine
# OpenBLAS threads spinning beside numba's OpenMP threads slowed some tests
# down tenfold.  fastem's own thread count is not affected.
_BLAS_LIMIT = threadpool_limits(1, user_api="blas")


@pytest.fixture(params=fastem.available_backends())
def backend(request):
    """Run the test once per importable backend, with that backend active."""
    with fastem.using_backend(request.param):
        yield request.param


@pytest.fixture
def restore_config():
    """Put the process-wide thread count and chunk size back after the test."""
    threads, chunk = _config.get_num_threads(), _config.get_chunk_size()
    yield
    fastem.set_num_threads(threads)
    fastem.set_chunk_size(chunk)


# The data sets are read once per session; tests must not modify them
# (test_gaussian_mixture checks that fastem does not).  scikit-learn hands
# iris and wine out as column slices (non-contiguous); C-contiguous copies keep
# the number of numba specialisations compiled by the suite down.  Strided
# input has its own tests (test_kernels, test_gaussian_mixture).
@pytest.fixture(scope="session")
def iris():
    return np.ascontiguousarray(load_iris().data)


@pytest.fixture(scope="session")
def wine():
    return np.ascontiguousarray(load_wine().data)


@pytest.fixture(scope="session")
def digits():
    return np.ascontiguousarray(load_digits().data)
