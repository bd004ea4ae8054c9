"""The one place that decides how fastem's numba kernels are compiled.

* fast-math: a fixed flag set without ``nnan``/``ninf``, because the E-step
  works in log space where ``-inf`` is a real value.
* caching: on by default (``FASTEM_NUMBA_CACHE=0`` turns it off).  When no
  cache location is writable, numba refuses ``cache=True`` at decoration time;
  fastem then compiles without a cache and warns once.
* serial helpers and parallel drivers are always distinct Python functions,
  because two dispatchers built from one function share a cache entry.
"""

import os
import warnings

import numba
import numba.core.cpu

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

_cache_enabled = os.environ.get("FASTEM_NUMBA_CACHE", "1").strip() not in ("0", "false", "False")
_warned = []


def _decorate(func, **options):
    options.setdefault("fastmath", set(FASTMATH))
    options.setdefault("nogil", True)
    if _cache_enabled:
        try:
            return numba.njit(cache=True, **options)(func)
        except RuntimeError as exc:  # no writable cache locator (numba #4908)
            if not _warned:
                warnings.warn(
                    f"fastem: numba cannot cache compiled kernels ({exc}); kernels "
                    "are compiled in every new process. Set NUMBA_CACHE_DIR to a "
                    "writable directory to enable the cache.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                _warned.append(True)
    return numba.njit(**options)(func)


def serial(func):
    """Compile a helper that runs inside one chunk."""
    return _decorate(func)


# numba's compiler option that turns reference counting off (no public spelling)
_NO_NRT = {"_nrt": False} if hasattr(getattr(numba.core.cpu, "CPUTargetOptions", None),
                                     "_nrt") else {}


def leaf(func):
    """Compile a helper that allocates nothing, without reference counting.

    numba increments and decrements the reference count of every array
    argument on entry to and exit from a function: two atomic operations
    per array per call.  For helpers called once per row with several arrays
    that cost several times the helper's arithmetic (an ablation of the hard
    K-means row update, d = 2: 108 ns per row with counting, 41 without).
    A leaf must not allocate an array or return one; views of its arguments
    used within the call are fine (they are not counted either).  ``_nrt`` is
    a numba compiler option without a public spelling: if a numba release
    drops it, ``leaf`` falls back to ``serial`` (same results, slower).
    """
    return _decorate(func, **_NO_NRT)


def inline_leaf(func):
    """``leaf``, and inlined into its callers by numba (for the smallest helpers)."""
    return _decorate(func, inline="always", **_NO_NRT)


def ordered(func):
    """Compile a helper with fast-math but without reassociation.

    For long float64 reductions whose order must not depend on how LLVM
    optimised the caller: with ``reassoc`` the missing-value kernel of the
    full and tied models gave different last bits in the process that
    compiled it and in processes that loaded it from the cache.
    """
    return _decorate(func, fastmath=set(FASTMATH) - {"reassoc"})


def ordered_parallel(func):
    """``parallel`` with the flags of ``ordered``."""
    return _decorate(func, parallel=True, fastmath=set(FASTMATH) - {"reassoc"})


def ordered_inline_leaf(func):
    """``ordered`` and ``leaf`` at once, inlined into its callers (which must be
    ``ordered`` too: inlined code takes its caller's flags)."""
    return _decorate(func, inline="always", fastmath=set(FASTMATH) - {"reassoc"}, **_NO_NRT)


def strict(func):
    """Compile a helper without fast-math: IEEE arithmetic in the written order.

    For code whose accuracy rests on the order of its operations (the
    range reduction of ``exp``); the flags stay on its instructions when it
    is inlined into a fast-math caller.
    """
    return _decorate(func, fastmath=False)


def parallel(func):
    """Compile a kernel that spreads chunks over threads with ``prange``."""
    return _decorate(func, parallel=True)
