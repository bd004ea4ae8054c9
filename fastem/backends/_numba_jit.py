"""The one place that decides how fastem's numba kernels are compiled.

* fast-math: a fixed flag set without ``nnan``/``ninf``, because the E-step
  works in log space where ``-inf`` is a real value.
* caching: on by default (``FASTEM_NUMBA_CACHE=0`` turns it off).  When no
  cache location is writable, numba refuses ``cache=True`` at decoration time;
  fastem then compiles without a cache and warns once.
* serial helpers and parallel drivers are always distinct Python functions,
  because two dispatchers built from one function share a cache entry.
* one parallel driver for every kernel (``run_chunks``): it calls a chunk
  kernel through its address, so that compiling the driver never compiles
  the chunk kernel's code again (see ``run_chunks``); calls with little work
  go through a serial driver built the same way, on the calling thread.
"""

import os
import warnings

import numba
import numba.core.cpu
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import _config

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


# ---------------------------------------------------------------- one driver
# numba compiles a call from one jitted function to another by linking the
# callee's LLVM module into the caller's and optimising the result again; a
# ``prange`` loop is itself compiled as a separate function that is linked
# into its caller.  A parallel driver that called a chunk kernel directly
# therefore optimised and generated the kernel's code twice more (11.5-12.7 s
# of a 31 s cold first fit, full covariances, d = 16: the driver of that one
# kernel).  Here the driver receives the kernel's address at run time and
# calls it through a pointer with numba's own calling convention: the driver
# is compiled once per argument-type list (about a second), knows nothing of
# the kernel, and so stays valid in numba's on-disk cache.


@intrinsic
def _call_chunk(typingctx, address, ci, args):
    """Call the compiled function at ``address`` as ``f(ci, *args)``, which
    returns nothing, with numba's native calling convention.  The arguments
    are passed as the driver's types; ``chunk_address`` compiled the callee
    for the same types but for layout 'A' in place of 'F', whose native
    representation is the same."""
    callee_args = (types.int64,) + tuple(args.types)

    def codegen(context, builder, signature, llargs):
        address_v, ci_v, args_v = llargs
        values = [context.cast(builder, ci_v, signature.args[1], types.int64)]
        values += [builder.extract_value(args_v, i) for i in range(len(args.types))]
        fn_type = context.call_conv.get_function_type(types.void, callee_args).as_pointer()
        fn = builder.inttoptr(address_v, fn_type)
        status, _ = context.call_conv.call_function(builder, fn, types.void, callee_args,
                                                    values)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()

    return types.void(address, ci, args), codegen


@intrinsic
def _take_chunk(typingctx, counter):
    """``counter[0] += 1``, atomically, returning the value before: the next
    chunk index for the thread that calls it (a 1-d int64 array)."""
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        one = ir.Constant(ir.IntType(64), 1)
        return builder.atomic_rmw("add", array.data, one, "monotonic")

    return types.int64(counter), codegen


@intrinsic
def _pool_threads(typingctx):
    """The threads numba's next parallel loop on this thread runs with
    (``numba.get_num_threads()``), through the threading layer's C function
    that numba's own parallel loops call, declared as they declare it (a
    ctypes call, as in ``numba.get_num_threads`` compiled, cannot be cached)."""
    def codegen(context, builder, signature, args):
        intp = context.get_value_type(types.intp)
        get = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(intp, []), "get_num_threads")
        return builder.call(get, [])

    return types.intp(), codegen


@parallel
def _run_chunks(address, n_chunks, counter, *args):
    # one loop iteration a thread, each taking claim after claim from the
    # shared counter until none is left (see run_chunks).  Claim i is chunk
    # (i % T) q + i // T of T runs of q chunks: threads that keep pace each
    # work through a run of their own, far from one another's chunks
    T = min(_pool_threads(), n_chunks)
    q = -(-n_chunks // T)
    for _ in prange(T):
        i = _take_chunk(counter)
        while i < T * q:
            ci = (i % T) * q + i // T
            if ci < n_chunks:
                _call_chunk(address, ci, args)
            i = _take_chunk(counter)


@serial
def _run_chunks_serial(address, n_chunks, *args):
    for ci in range(n_chunks):
        _call_chunk(address, ci, args)


class Constant:
    """An integer argument of ``run_chunks`` for which the chunk kernel is
    compiled as a constant (numba's literal type), one compiled chunk kernel
    per value: code that tests it is compiled for that value alone, and
    helpers that receive it are compiled for that value when first used.
    The driver passes it as an int64, the literal's native representation."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = int(value)


def _type_key(value):
    """What ``_chunk_type(value)`` depends on, cheaply."""
    if isinstance(value, Constant):
        return Constant, value.value
    if isinstance(value, np.ndarray):
        flags = value.flags
        return (value.dtype, value.ndim, flags.c_contiguous, flags.writeable, flags.aligned)
    if isinstance(value, int) and not isinstance(value, bool):
        return int, -2 ** 63 <= value < 2 ** 63
    return type(value)


def _chunk_type(value):
    """numba's type of ``value``, except that every array that is not
    C-contiguous is typed as of any layout ('A'): one compiled chunk kernel
    serves Fortran-ordered and strided inputs alike (the array's native
    representation is the same for every layout), and a ``Constant`` is typed
    as its literal."""
    if isinstance(value, Constant):
        return types.literal(value.value)
    t = numba.typeof(value)
    if isinstance(t, types.Array) and t.layout == "F":
        t = t.copy(layout="A")
    return t


_addresses = {}


def chunk_address(chunk, args):
    """Address of ``chunk`` compiled for ``(int64, *types of args)``, compiled
    (or loaded from the cache) on first use."""
    key = (chunk,) + tuple(_type_key(a) for a in args)
    address = _addresses.get(key)
    if address is None:
        signature = types.void(types.int64, *(_chunk_type(a) for a in args))
        compiled = chunk.get_compile_result(signature)
        address = compiled.library.get_pointer_to_function(compiled.fndesc.llvm_func_name)
        _addresses[key] = address
    return address


def run_chunks(chunk, n_chunks, *args, work=None):
    """``chunk(ci, *args)`` for ci in ``prange(n_chunks)``.

    ``chunk`` is a ``serial`` (or ``ordered``) kernel whose first argument is
    the chunk index; it writes only chunk ``ci``'s slots of its outputs.
    Chunks are handed to the threads one at a time as they become free
    (each thread takes the next claim from an atomic counter), not split in
    equal parts in advance: chunks differ in cost (rows with NaN, K-means
    rows that need exact scores), a thread of a shared machine may be held
    up, and a thread woken after a pause starts late.  numba's own
    ``prange`` splits its range in equal parts under the OpenMP and
    workqueue threading layers, whatever ``numba.set_parallel_chunksize``
    says.  Successive claims go to T runs of chunks in turn (T threads), so
    that threads keeping pace work far apart: the chunks' slots of small
    outputs (``obj``'s three floats) share cache lines with their
    neighbours', which many kernels update row by row.  Handing out the
    chunks in plain order, so that neighbours ran at once, made two-thread
    fits at (2e5, 2, 8) slower than equal parts: tied 3.9 -> 4.6 ms an
    iteration, spherical 3.7 -> 4.1.  Which thread runs a chunk does not
    change any result.  An argument given as a
    ``Constant`` is compiled into the chunk kernel as its value.

    ``work``: the caller's estimate of the multiply-adds of all chunks.  Below
    ``fastem._config.SERIAL_WORK``, and for a single chunk, the chunks run in
    order on the calling thread (no thread pool is woken), with the same
    results.
    """
    address = chunk_address(chunk, args)
    args = tuple(a.value if isinstance(a, Constant) else a for a in args)
    if n_chunks <= 1 or (work is not None and work < _config.SERIAL_WORK):
        _run_chunks_serial(address, n_chunks, *args)
        return
    _run_chunks(address, n_chunks, np.zeros(1, dtype=np.int64), *args)
