"""Process-wide settings: thread count and chunk size.

Both are read once from the environment (``FASTEM_NUM_THREADS``,
``FASTEM_CHUNK_SIZE``) and can be changed at run time.  Results never depend
on the thread count; they depend on the chunk size only through the order of
floating-point additions (differences of order 1e-15 relative).
"""

import os

__all__ = ["get_num_threads", "set_num_threads", "get_chunk_size", "set_chunk_size"]

# Per-chunk statistic buffers are (n_chunks, ...), and a chunk has a fixed cost
# (its scratch buffers, the fold of its sums): about 7 us in numba's soft
# kernels, 10 % of a chunk of 782 rows at (5e4, 64, 8).  32 chunks rather
# than 64 took 3-5 % off the soft E-steps there (two threads: spherical and
# diagonal at (5e4, 64, 8), full at (5e4, 64, 8) and (1e5, 16, 16)) and still
# give 8 threads four chunks each.
_MAX_CHUNKS = 32
_MIN_CHUNK_ROWS = 256

# A kernel call whose work, as its caller estimates it in multiply-adds, is
# below this runs on the calling thread alone (``threads_for``): some 50-100 us
# of one thread's time at small d and k (the soft E-step at (1e3, 2, 3),
# 64 000, takes 70 us).  Handing chunks to the thread pool costs little while
# its threads are awake (numba: 8 us a launch against 2 us on the calling
# thread, for a trivial kernel), but after the process has been idle the other
# threads must be woken, and on a shared virtual machine a woken vCPU can take
# milliseconds to run: of six one-iteration fits of (1e3, 2, 3) data 50 ms
# apart, one spent 5.4 and 4.0 ms in its two launches, where such a fit takes
# 1.6-1.9 ms.  With this little work a second thread saves less than the
# launch risks.  Which thread runs a chunk never changes a result.
SERIAL_WORK = 1 << 16


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _positive_int_from_env(name):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None
    if value < 1:
        raise ValueError(f"environment variable {name}={raw!r} must be a positive integer")
    return value


_state = {
    "num_threads": _positive_int_from_env("FASTEM_NUM_THREADS") or _cpu_count(),
    "chunk_size": _positive_int_from_env("FASTEM_CHUNK_SIZE"),
}


def _check_positive_int(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int,)) and not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def get_num_threads():
    """Number of threads the compiled backends use (default: all cores)."""
    return _state["num_threads"]


def threads_for(work):
    """Threads for a kernel call of about ``work`` multiply-adds: one below
    ``SERIAL_WORK``, else ``get_num_threads()``."""
    return 1 if work < SERIAL_WORK else _state["num_threads"]


def set_num_threads(n):
    """Set the number of threads used by the compiled backends.

    Parameters
    ----------
    n : int >= 1
        Values above the number of cores numba was started with are capped.
    """
    _state["num_threads"] = _check_positive_int("n", n)


def get_chunk_size():
    """Rows per chunk, or None for automatic (the default)."""
    return _state["chunk_size"]


def set_chunk_size(rows):
    """Fix the number of rows per chunk (None restores the automatic choice).

    Each chunk owns one slot of the statistic buffers, and slots are summed in
    chunk order, so the chunk size (not the thread count) fixes the order of
    the floating-point additions.
    """
    _state["chunk_size"] = _check_positive_int("rows", rows, allow_none=True)


def chunk_layout(n_samples):
    """Return (chunk_size, n_chunks) for ``n_samples`` rows.

    Automatic: at least 256 rows a chunk and at most 32 chunks, so statistic
    buffers stay small while two or more threads still get balanced work.
    The layout depends on ``n_samples`` only, never on the thread count.
    """
    rows = _state["chunk_size"]
    if rows is None:
        rows = max(_MIN_CHUNK_ROWS, -(-n_samples // _MAX_CHUNKS))
    n_chunks = max(1, -(-n_samples // rows))
    return rows, n_chunks
