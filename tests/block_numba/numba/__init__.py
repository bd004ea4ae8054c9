"""Stands in for numba in subprocesses of a FASTEM_TEST_BLOCK_NUMBA=1 test run.

``tests/conftest.py`` puts this folder first on ``PYTHONPATH`` in that run, so
Python processes started by the tests find this package instead of numba and
fail to import it, as on a machine without numba.
"""

raise ImportError("numba is blocked (FASTEM_TEST_BLOCK_NUMBA=1)")
