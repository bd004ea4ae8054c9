"""Backend dispatcher: which implementation of the kernel table runs.

Backends are registered by name and imported lazily, on first use:

* ``numba``: JIT-compiled kernels (compiled on first use, then cached);
* ``cython``: the same kernels compiled ahead of time by ``pip install``
  into an OpenMP extension (absent when the install had no C compiler);
* ``numpy``: the plain reference implementation, always available.

The active backend is chosen, in order, by :func:`set_backend` /
:func:`using_backend`, the ``FASTEM_BACKEND`` environment variable, or the
automatic choice: the first importable backend of ``numba``, ``cython``,
``numpy`` (fastest first).  A missing or broken numba therefore means
cython, and a missing extension as well means numpy.  Both compiled backends
honour ``fastem.set_num_threads`` / ``FASTEM_NUM_THREADS``.
"""

import contextlib
import importlib
import os
import threading

from .. import _config
from ._table import KERNEL_NAMES

__all__ = ["available_backends", "get_backend", "set_backend", "using_backend",
           "get_kernels"]

# name -> module path, fastest first; the automatic choice is the first that imports.
_REGISTRY = {
    "numba": "fastem.backends.numba_backend",
    "cython": "fastem.backends.cython_backend",
    "numpy": "fastem.backends.numpy_backend",
}
_modules = {}
_import_errors = {}
_local = threading.local()
_global = {"name": None}


def _load(name):
    if name in _modules:
        return _modules[name]
    if name in _import_errors:
        return None
    try:
        module = importlib.import_module(_REGISTRY[name])
    except Exception as exc:  # a missing or broken compiler stack
        _import_errors[name] = exc
        return None
    _modules[name] = module
    return module


def available_backends():
    """Names of the backends that import on this machine, fastest first."""
    return [name for name in _REGISTRY if _load(name) is not None]


def _check_name(name):
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"unknown backend {name!r}; available backends: {available_backends()}"
        )
    if _load(name) is None:
        raise ValueError(
            f"backend {name!r} cannot be used here ({_import_errors[name]!r}); "
            f"available backends: {available_backends()}"
        )
    return name


def _default_name():
    env = os.environ.get("FASTEM_BACKEND", "").strip()
    if env:
        try:
            return _check_name(env)
        except ValueError as exc:
            raise ValueError(f"environment variable FASTEM_BACKEND: {exc}") from None
    return available_backends()[0]


def get_backend():
    """Name of the backend the current thread uses."""
    name = getattr(_local, "name", None) or _global["name"]
    if name is None:
        name = _global["name"] = _default_name()
    return name


def set_backend(name):
    """Select the backend for every later fit (``"numba"``, ``"cython"`` or ``"numpy"``)."""
    _global["name"] = _check_name(name)


@contextlib.contextmanager
def using_backend(name):
    """Context manager: use backend ``name`` inside the block, in this thread."""
    _check_name(name)
    previous = getattr(_local, "name", None)
    _local.name = name
    try:
        yield name
    finally:
        _local.name = previous


class Kernels:
    """The kernel table of one backend, ready to call in this thread."""

    def __init__(self, name, module):
        self.name = name
        for kernel in KERNEL_NAMES:
            setattr(self, kernel, getattr(module, kernel))
        # whether estep_kmeans keeps bounds that pay at (n_features, n_clusters):
        # a backend without bounds of its own never does
        self.kmeans_bounds_pay = getattr(module, "kmeans_bounds_pay", _never)


def _never(n_features, n_clusters):
    return False


def get_kernels():
    """Return the active backend's kernels, with its thread count applied."""
    name = get_backend()
    module = _load(name)
    if name == "numba":
        import numba

        # numba's thread count is per calling thread (numba #10491): set it here.
        numba.set_num_threads(min(_config.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    return Kernels(name, module)
