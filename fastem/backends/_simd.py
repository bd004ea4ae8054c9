"""Explicit SIMD vectors inside numba kernels.

LLVM keeps loop-carried scalars in registers but does not turn a tile of
them into vectors, and it cannot keep accumulators that live in an array in
registers (it cannot prove the array does not alias the inputs).  A small
dense product such as ``X_block @ centers.T`` therefore runs far below the
machine's multiply-add throughput when written as plain loops.  The
intrinsics below give numba kernels a vector value type, ``Vec``, of 32 bytes
(8 float32 or 4 float64 lanes, one AVX register), and the four operations a
register-tiled product needs:

* ``vzero(like)``          a vector of zeros of ``like``'s dtype
* ``vload(arr, i)``        ``arr[i : i + lanes]`` of a C-contiguous 1-d array
* ``sload(arr, i)``        the scalar ``arr[i]``, without numba's wraparound test
* ``sstore(arr, i, x)``    ``arr[i] = x``, likewise
* ``vsplat(like, x)``      every lane ``x``, converted to ``like``'s dtype
* ``vfma(a, b, c)``        ``a * b + c`` lane by lane, one rounding (``llvm.fma``)
* ``vstore(arr, i, v)``    ``arr[i : i + lanes] = v`` (any ``Vec``, block vectors too)
* ``bload(arr, i)``, ``bsplat(like, x)``  block vectors: 64 bytes, twice the
                           lanes of a ``Vec`` (one AVX-512 register, or two AVX
                           registers); ``vfma``, ``vadd``, ``vmul``, ``vhsum``
                           and ``vstore`` take them as they take a ``Vec``
* ``bfold(v)``             a block vector's halves added: a ``Vec``
* ``rload(arr, i)``, ``rsplat(like, x)``, ``rlanes(like)``  row vectors: block
                           vectors where the CPU has AVX-512, ``Vec`` elsewhere
* ``vmax(a, b)``           lane-wise maximum (inputs must not be NaN)
* ``vselect_ge(a, b, x, y)`` lane-wise ``x if a >= b else y``
* ``vexp_nonpositive(v)``  exp of every lane of a float64 vector whose lanes
                           are <= 0 (or -inf), as ``numba_backend._exp_nonpositive``
* ``vadd(a, b)``, ``vsub(a, b)``, ``vmul(a, b)``, ``vdiv(a, b)``  lane-wise sum,
                           difference, product, quotient (correctly rounded)
* ``vhsum(v)``             the sum of the lanes, as a scalar
* ``sfma(a, b, c)``, ``sadd(a, b)``  float64 scalar a * b + c (rounded once) and
                           a + b, which the caller's fast-math flags cannot reorder
* ``vload4_f64(X, i, a)``  4 elements of a 2-d array, contiguous in memory from
                           ``X[i, a]``, widened to a float64 vector
* ``vtranspose4(a, b, c, d)`` the 4 x 4 transpose of four float64 vectors
* ``vselect_nan(v, x, y)`` lane-wise ``x if v is NaN else y``
* ``prefetch_rows(X, i, n)`` a cache hint for rows i .. i + n - 1 of X
* ``prefetch_rows_near(X, i, n)`` the same hint, into the level-1 cache
* ``stage_rows4(...)``     the K-means screen's staging of 4 rows by 4 features
* ``exp2_of_rounded(t)``   2.0 ** n for ``t = n + 1.5 * 2**52`` (the rounding
                           trick of ``exp``), built from the bits of ``t``

``lanes(like)`` is the number of lanes for ``like``'s dtype.  Loads and
stores are unaligned and unchecked: the caller keeps ``i + lanes`` within the
array.  Every lane is computed with correctly rounded fused multiply-adds in
a fixed order, so results do not depend on fast-math flags or on threads.

Caching: numba keys a cached kernel on the source file that defines it, not
on the intrinsics it inlines from here.  An installed fastem rewrites every
file on upgrade, so its caches follow; when editing this module in a
checkout, clear the numba cache (``__pycache__/*.nbi``, ``*.nbc``).
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

VECTOR_BYTES = 32


def _vector_registers():
    """How many vector registers numba's code may use: 32 on a CPU with
    AVX-512 (its 256-bit instructions reach registers 16-31 too), else 16;
    16 whenever numba is told to compile for another CPU (NUMBA_CPU_NAME)."""
    try:
        import numba
        from llvmlite import binding
        if numba.config.CPU_NAME or numba.config.CPU_FEATURES:
            return 16
        return 32 if binding.get_host_cpu_features().get("avx512vl", False) else 16
    except Exception:  # an llvmlite without the query: the safe answer
        return 16


VECTOR_REGISTERS = _vector_registers()


class Vec(types.Type):
    """A SIMD vector of float32 or float64: 32 bytes (one AVX register), or
    with ``lanes`` given, that many lanes (``bload``'s block vectors of 64
    bytes, one AVX-512 register or two AVX registers)."""

    def __init__(self, dtype, lanes=None):
        self.dtype = dtype
        self.lanes = lanes or VECTOR_BYTES // (dtype.bitwidth // 8)
        super().__init__(name=f"Vec({dtype}x{self.lanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _check_float_array(arr, name):
    if not isinstance(arr, types.Array) or arr.dtype not in (types.float32, types.float64):
        raise TypeError(f"{name}: expected a float32 or float64 array, got {arr}")


def _check_numeric_array(arr, name):
    if not isinstance(arr, types.Array) or not isinstance(arr.dtype, (types.Float, types.Integer)):
        raise TypeError(f"{name}: expected a float or integer array, got {arr}")


def _element_pointer(context, builder, arrty, arr, offset):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.gep(data, [offset])


@intrinsic
def lanes(typingctx, like):
    _check_float_array(like, "lanes")
    count = Vec(like.dtype).lanes

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, count)
    return types.intp(like), codegen


@intrinsic
def vzero(typingctx, like):
    _check_float_array(like, "vzero")
    vt = Vec(like.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vt), None)
    return vt(like), codegen


def _load_of(vec_of, name, doc):
    """An intrinsic ``name(arr, i)``: the vector ``vec_of(dtype)`` at arr[i]."""
    @intrinsic
    def load(typingctx, arr, offset):
        _check_float_array(arr, name)
        vt = vec_of(arr.dtype)

        def codegen(context, builder, sig, args):
            ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
            ptr = builder.bitcast(ptr, context.get_value_type(vt).as_pointer())
            return builder.load(ptr, align=arr.dtype.bitwidth // 8)
        return vt(arr, offset), codegen
    load.__doc__ = doc
    return load


def _splat_of(vec_of, name, doc):
    """An intrinsic ``name(like, x)``: the vector ``vec_of(like.dtype)`` of x."""
    @intrinsic
    def splat(typingctx, like, x):
        _check_float_array(like, name)
        vt = vec_of(like.dtype)

        def codegen(context, builder, sig, args):
            value = context.cast(builder, args[1], sig.args[1], like.dtype)
            vty = context.get_value_type(vt)
            undef = ir.Constant(vty, ir.Undefined)
            first = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
            zeros = ir.Constant(ir.VectorType(ir.IntType(32), vt.lanes), [0] * vt.lanes)
            return builder.shuffle_vector(first, undef, zeros)
        return vt(like, x), codegen
    splat.__doc__ = doc
    return splat


def _block_vec(dtype):
    """The block vector of ``dtype``: two ``Vec`` lanes' worth, 64 bytes."""
    return Vec(dtype, 2 * Vec(dtype).lanes)


# Row vectors: the widest vector the CPU holds in one register, 64 bytes with
# AVX-512 (32 vector registers), else 32 (``rload``, ``rsplat``).
ROW_BYTES = 64 if VECTOR_REGISTERS >= 32 else VECTOR_BYTES


def _row_vec(dtype):
    return Vec(dtype, ROW_BYTES // (dtype.bitwidth // 8))


vload = _load_of(Vec, "vload", "``arr[i : i + lanes]`` as a ``Vec``.")
vsplat = _splat_of(Vec, "vsplat", "A ``Vec`` with every lane ``x``.")
bload = _load_of(_block_vec, "bload", """``arr[i : i + 2 * lanes]`` as one block vector
    (64 bytes): an AVX-512 register, or two AVX registers, which LLVM splits it
    into where 512-bit registers are missing.  Lane for lane the same
    arithmetic as two ``vload`` halves, so the same bits.""")
bsplat = _splat_of(_block_vec, "bsplat", "A block vector with every lane ``x``.")
rload = _load_of(_row_vec, "rload", """``arr[i : i + rlanes]`` as a row vector: a
    block vector (``bload``) on CPUs with AVX-512, a ``Vec`` elsewhere.""")
rsplat = _splat_of(_row_vec, "rsplat", "A row vector with every lane ``x``.")


@intrinsic
def rlanes(typingctx, like):
    """The lanes of a row vector of ``like``'s dtype (``rload``)."""
    _check_float_array(like, "rlanes")
    count = _row_vec(like.dtype).lanes

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, count)
    return types.intp(like), codegen


@intrinsic
def bfold(typingctx, v):
    """A block vector's two halves added lane by lane, as one ``Vec``:
    lane l is v[l] + v[l + lanes].  A ``Vec`` is returned as it is (a row
    vector of a CPU without AVX-512)."""
    if isinstance(v, Vec) and v.lanes == Vec(v.dtype).lanes:
        return v(v), lambda context, builder, sig, args: args[0]
    if not (isinstance(v, Vec) and v.lanes == 2 * Vec(v.dtype).lanes):
        raise TypeError(f"bfold: expected a block vector, got {v}")
    half = Vec(v.dtype)

    def codegen(context, builder, sig, args):
        def part(first):
            mask = ir.Constant(ir.VectorType(ir.IntType(32), half.lanes),
                               list(range(first, first + half.lanes)))
            return builder.shuffle_vector(args[0], args[0], mask)
        return builder.fadd(part(0), part(half.lanes))
    return half(v), codegen


@intrinsic
def sload(typingctx, arr, offset):
    """arr[offset] of a 1-d array, unchecked: no wraparound of a negative
    offset, whose test and select numba emits for an offset it cannot prove
    non-negative (four integer instructions beside each load of a tile)."""
    _check_numeric_array(arr, "sload")

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.load(ptr, align=arr.dtype.bitwidth // 8)
    return arr.dtype(arr, offset), codegen


@intrinsic
def sstore(typingctx, arr, offset, value):
    """arr[offset] = value for a 1-d array, unchecked (as ``sload``)."""
    _check_numeric_array(arr, "sstore")

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        value = context.cast(builder, args[2], sig.args[2], arr.dtype)
        builder.store(value, ptr, align=arr.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.none(arr, offset, value), codegen


@intrinsic
def vstore(typingctx, arr, offset, value):
    _check_float_array(arr, "vstore")
    if not isinstance(value, Vec) or value.dtype != arr.dtype:
        raise TypeError(f"vstore: expected a Vec of {arr.dtype}, got {value}")

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        ptr = builder.bitcast(ptr, args[2].type.as_pointer())
        builder.store(args[2], ptr, align=arr.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.none(arr, offset, value), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    if not (isinstance(a, Vec) and a == b == c):
        raise TypeError(f"vfma: expected three Vec of one dtype, got {a}, {b}, {c}")

    def codegen(context, builder, sig, args):
        vty = args[0].type
        suffix = "f32" if a.dtype == types.float32 else "f64"
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.v{a.lanes}{suffix}")
        return builder.call(fn, args)
    return a(a, b, c), codegen


@intrinsic
def sfma(typingctx, a, b, c):
    """a * b + c for float64 scalars, rounded once (``llvm.fma``): the lane
    arithmetic of ``vfma`` for one value, which the caller's fast-math flags
    cannot split or reorder (a scalar ``s += v * v`` in a loop may be
    vectorised and reassociated differently in each compiled version)."""
    if not (a == b == c == types.float64):
        raise TypeError(f"sfma: expected three float64, got {a}, {b}, {c}")

    def codegen(context, builder, sig, args):
        dbl = ir.DoubleType()
        fn = cgutils.get_or_insert_function(builder.module,
                                            ir.FunctionType(dbl, [dbl] * 3), "llvm.fma.f64")
        return builder.call(fn, args)
    return types.float64(a, b, c), codegen


@intrinsic
def sadd(typingctx, a, b):
    """a + b for float64 scalars, an addition without fast-math flags: the
    lane arithmetic of ``vadd`` for one value, which the caller's flags
    cannot reorder with the additions around it (as ``sfma``)."""
    if not (a == b == types.float64):
        raise TypeError(f"sadd: expected two float64, got {a}, {b}")

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return types.float64(a, b), codegen


@intrinsic
def vmax(typingctx, a, b):
    if not (isinstance(a, Vec) and a == b):
        raise TypeError(f"vmax: expected two Vec of one dtype, got {a}, {b}")

    def codegen(context, builder, sig, args):
        greater = builder.fcmp_ordered(">", args[0], args[1])
        return builder.select(greater, args[0], args[1])
    return a(a, b), codegen


@intrinsic
def vselect_ge(typingctx, a, b, x, y):
    if not (isinstance(a, Vec) and a == b == x == y):
        raise TypeError(f"vselect_ge: expected four Vec of one dtype, got {a}, {b}, {x}, {y}")

    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">=", args[0], args[1]), args[2], args[3])
    return a(a, b, x, y), codegen


@intrinsic
def exp2_of_rounded(typingctx, t):
    """2.0 ** n from t = n + 1.5 * 2**52 (float64), for -1022 <= n <= 1023.

    The low bits of t's representation hold n; (n + 1023) << 52 is the
    representation of 2.0 ** n.  Plain integer operations, so loops calling
    it vectorize.
    """
    if t != types.float64:
        raise TypeError(f"exp2_of_rounded: expected float64, got {t}")

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        bits = builder.bitcast(args[0], i64)
        biased = builder.add(bits, ir.Constant(i64, 1023))
        return builder.bitcast(builder.shl(biased, ir.Constant(i64, 52)), ir.DoubleType())
    return types.float64(t), codegen


def _load_f64_of(count, name):
    """An intrinsic ``name(arr, i, a)``: ``count`` elements of a 2-d array
    as a vector of float64 (see ``vload4_f64``)."""
    vt = Vec(types.float64, count)

    @intrinsic
    def load(typingctx, arr, i, a):
        if not (isinstance(arr, types.Array) and arr.ndim == 2
                and arr.dtype in (types.float32, types.float64)):
            raise TypeError(f"{name}: expected a 2-d float32 or float64 array, got {arr}")

        def codegen(context, builder, sig, args):
            aryty = sig.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            index = [context.cast(builder, v, t, types.intp)
                     for v, t in zip(args[1:], sig.args[1:])]
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, index,
                                           wraparound=False)
            element = context.get_value_type(aryty.dtype)
            ptr = builder.bitcast(ptr, ir.VectorType(element, count).as_pointer())
            value = builder.load(ptr, align=aryty.dtype.bitwidth // 8)
            if aryty.dtype == types.float32:
                value = builder.fpext(value, context.get_value_type(vt))
            return value
        return vt(arr, i, a), codegen
    return load


vload4_f64 = _load_f64_of(4, "vload4_f64")
vload4_f64.__doc__ = """The 4 elements of a 2-d float32 or float64 array that lie next to one
    another in memory from ``arr[i, a]`` on, as a Vec of float64 (4 lanes).

    They are ``arr[i, a : a + 4]`` when rows are contiguous (C order) and
    ``arr[i : i + 4, a]`` when columns are (Fortran order); the caller picks
    the one its strides allow and keeps the 4 elements within the array.
    float32 values are widened exactly.  Unchecked, as ``vload``.
    """
bload8_f64 = _load_f64_of(8, "bload8_f64")
bload8_f64.__doc__ = """``vload4_f64`` for 8 elements, as a block vector of float64
    (``bload``): ``arr[i, a : a + 8]`` of a C-ordered array."""


def _prefetch_rows_codegen(locality):
    """The code of ``prefetch_rows`` (locality 2) and ``prefetch_rows_near`` (3)."""
    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        intp = context.get_value_type(types.intp)
        row = context.cast(builder, args[1], sig.args[1], types.intp)
        count = context.cast(builder, args[2], sig.args[2], types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary,
                                       [row, ir.Constant(intp, 0)], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        base = builder.bitcast(ptr, i8p)
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0")
        shape = cgutils.unpack_tuple(builder, ary.shape, 2)
        row_bytes = builder.mul(shape[1], ir.Constant(intp, aryty.dtype.bitwidth // 8))
        length = builder.mul(row_bytes, count)
        # from the start of the line that holds the first byte: rows need not
        # start on a line (numpy's large arrays start 16 bytes past a page),
        # and a 64-byte row then spans two lines, whose second had gone
        # without a prefetch (K-means' rows scored again, (1e6, 16, 16)
        # float32, one thread: see ``numba_backend._estep_kmeans_chunk``)
        skew = builder.and_(builder.ptrtoint(base, intp), ir.Constant(intp, 63))
        with cgutils.for_range_slice(builder, builder.neg(skew), length,
                                     ir.Constant(intp, 64)) as (offset, _):
            builder.call(fn, [builder.gep(base, [offset]), ir.Constant(i32, 0),
                              ir.Constant(i32, locality), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return codegen


@intrinsic
def prefetch_rows(typingctx, arr, i, n):
    """Ask for rows i .. i + n - 1 of a C-ordered 2-d array to be brought
    into the cache (``llvm.prefetch`` of each 64-byte line they span, for
    reading, locality 2: the level-2 cache on x86, ``prefetcht1``); a hint
    only: no fault, no result; nothing when n <= 0.  Unchecked, as
    ``vload``.  Into the level-1 cache (locality 3) the next rows evicted
    the operands of the tiles in use (one thread, ns a row: Bernoulli
    (2e5, 64, 32) 314 -> 278, diagonal (5e4, 64, 8) 203 -> 167 with
    locality 2)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2):
        raise TypeError(f"prefetch_rows: expected a 2-d array, got {arr}")
    return types.none(arr, i, n), _prefetch_rows_codegen(2)


@intrinsic
def prefetch_rows_near(typingctx, arr, i, n):
    """``prefetch_rows`` into the level-1 cache (locality 3, ``prefetcht0``):
    for the few rows needed next, already on their way to the level-2 cache."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2):
        raise TypeError(f"prefetch_rows_near: expected a 2-d array, got {arr}")
    return types.none(arr, i, n), _prefetch_rows_codegen(3)


@intrinsic
def stage_rows4(typingctx, X, rows, q0, a, c, xT, xo, R, xr, g0, rs, hn, ho):
    """The K-means screen's staging of 4 rows by 4 features, in vectors.

    For the rows i_q = rows[q0 + q] (q < 4; any rows of a C-ordered 2-d X,
    float32 or float64) and features a .. a + 3, with c (1-d, X's dtype):
    X[i_q, a + b] into xr[(i_q - g0) * rs + a + b] (float64); v = X[i_q, a + b]
    - c[a + b], formed in X's dtype, into xT[xo + (a + b) * R + q] (xT's
    dtype); and hn[ho + q] += v^2 (float64, one feature after the other,
    products and sums rounded apart).  The values are those of the
    element-by-element staging (``numba_backend._prepare_value``).
    Unchecked, as ``vload``.
    """
    for arr, ndim in ((X, 2), (c, 1), (xT, 1), (xr, 1), (hn, 1)):
        if not (isinstance(arr, types.Array) and arr.ndim == ndim
                and arr.dtype in (types.float32, types.float64)):
            raise TypeError(f"stage_rows4: expected a {ndim}-d float array, got {arr}")
    if not (isinstance(rows, types.Array) and rows.ndim == 1
            and isinstance(rows.dtype, types.Integer)):
        raise TypeError(f"stage_rows4: rows must be a 1-d integer array, got {rows}")
    if c.dtype != X.dtype or xr.dtype != types.float64 or hn.dtype != types.float64:
        raise TypeError("stage_rows4: c must have X's dtype, xr and hn float64")

    def codegen(context, builder, sig, args):
        Xt, rowst, _, _, ct, xTt, _, _, xrt, _, _, hnt, _ = sig.args
        Xv, rowsv, q0v, av, cv_, xTv, xov, Rv, xrv, g0v, rsv, hnv, hov = args
        intp = context.get_value_type(types.intp)

        def ix(value, index):
            return context.cast(builder, value, sig.args[index], types.intp)
        q0, a0, xo, R, g0, rs, ho = (ix(v, n) for v, n in
                                     ((q0v, 2), (av, 3), (xov, 6), (Rv, 7), (g0v, 9),
                                      (rsv, 10), (hov, 12)))
        T = context.get_value_type(Xt.dtype)
        VT = ir.VectorType(T, 4)
        f64 = ir.DoubleType()
        V64 = ir.VectorType(f64, 4)
        UT = context.get_value_type(xTt.dtype)
        VU = ir.VectorType(UT, 4)
        ary = context.make_array(Xt)(context, builder, Xv)

        def row_index(q):
            at = _element_pointer(context, builder, rowst, rowsv,
                                  builder.add(q0, ir.Constant(intp, q)))
            return context.cast(builder, builder.load(at), rowst.dtype, types.intp)

        def load_row(i):
            ptr = cgutils.get_item_pointer(context, builder, Xt, ary, [i, a0],
                                           wraparound=False)
            return builder.load(builder.bitcast(ptr, VT.as_pointer()),
                                align=Xt.dtype.bitwidth // 8)

        def ptr1(arrty, value, offset, vty):
            p = _element_pointer(context, builder, arrty, value, offset)
            return builder.bitcast(p, vty.as_pointer())

        def narrow(v, dst_vty):
            if T == dst_vty.element:
                return v
            if isinstance(T, ir.DoubleType):
                return builder.fptrunc(v, dst_vty)
            return builder.fpext(v, dst_vty)

        cvec = builder.load(ptr1(ct, cv_, a0, VT), align=ct.dtype.bitwidth // 8)
        diffs = []
        for q in range(4):
            i = row_index(q)
            row = load_row(i)
            wide = row if isinstance(T, ir.DoubleType) else builder.fpext(row, V64)
            off = builder.add(builder.mul(builder.sub(i, g0), rs), a0)
            builder.store(wide, ptr1(xrt, xrv, off, V64), align=8)
            diffs.append(builder.fsub(row, cvec))

        def shuffle(x, y, mask):
            return builder.shuffle_vector(
                x, y, ir.Constant(ir.VectorType(ir.IntType(32), 4), mask))
        e01 = shuffle(diffs[0], diffs[1], [0, 4, 2, 6])
        o01 = shuffle(diffs[0], diffs[1], [1, 5, 3, 7])
        e23 = shuffle(diffs[2], diffs[3], [0, 4, 2, 6])
        o23 = shuffle(diffs[2], diffs[3], [1, 5, 3, 7])
        cols = [shuffle(e01, e23, [0, 1, 4, 5]), shuffle(o01, o23, [0, 1, 4, 5]),
                shuffle(e01, e23, [2, 3, 6, 7]), shuffle(o01, o23, [2, 3, 6, 7])]
        hptr = ptr1(hnt, hnv, ho, V64)
        acc = builder.load(hptr, align=8)
        for b, col in enumerate(cols):
            off = builder.add(xo, builder.mul(builder.add(a0, ir.Constant(intp, b)), R))
            builder.store(narrow(col, VU), ptr1(xTt, xTv, off, VU),
                          align=xTt.dtype.bitwidth // 8)
            w = col if isinstance(T, ir.DoubleType) else builder.fpext(col, V64)
            acc = builder.fadd(acc, builder.fmul(w, w))
        builder.store(acc, hptr, align=8)
        return context.get_dummy_value()
    sig = types.none(X, rows, q0, a, c, xT, xo, R, xr, g0, rs, hn, ho)
    return sig, codegen


@intrinsic
def vtranspose4(typingctx, a, b, c, d):
    """The 4 x 4 transpose of four float64 vectors (a, b, c, d as rows): a tuple
    of four vectors whose lane t holds lane 0, 1, 2, 3 of the t-th input."""
    if not (isinstance(a, Vec) and a == b == c == d and a.lanes == 4):
        raise TypeError(f"vtranspose4: expected four Vec of 4 lanes, got {a}, {b}, {c}, {d}")
    result = types.UniTuple(a, 4)

    def codegen(context, builder, sig, args):
        def shuffle(x, y, mask):
            return builder.shuffle_vector(
                x, y, ir.Constant(ir.VectorType(ir.IntType(32), 4), mask))
        va, vb, vc, vd = args
        ab_even = shuffle(va, vb, [0, 4, 2, 6])   # a0 b0 a2 b2
        ab_odd = shuffle(va, vb, [1, 5, 3, 7])    # a1 b1 a3 b3
        cd_even = shuffle(vc, vd, [0, 4, 2, 6])
        cd_odd = shuffle(vc, vd, [1, 5, 3, 7])
        rows = [shuffle(ab_even, cd_even, [0, 1, 4, 5]),   # a0 b0 c0 d0
                shuffle(ab_odd, cd_odd, [0, 1, 4, 5]),     # a1 b1 c1 d1
                shuffle(ab_even, cd_even, [2, 3, 6, 7]),   # a2 b2 c2 d2
                shuffle(ab_odd, cd_odd, [2, 3, 6, 7])]     # a3 b3 c3 d3
        return context.make_tuple(builder, result, rows)
    return result(a, b, c, d), codegen


@intrinsic
def vtranspose8(typingctx, r0, r1, r2, r3, r4, r5, r6, r7):
    """The 8 x 8 transpose of eight float64 block vectors (the rows): a tuple of
    eight block vectors whose lane t holds lane 0, 1, ..., 7 of the t-th
    input.  Three rounds of two-source shuffles: pairs of lanes, then of
    pairs, then of halves (24 shuffles, against 32 for the four 4 x 4
    transposes of ``vtranspose4`` that cover the same 64 values)."""
    rows = (r0, r1, r2, r3, r4, r5, r6, r7)
    if not all(isinstance(r, Vec) and r == r0 for r in rows) or \
            r0.dtype != types.float64 or r0.lanes != 8:
        raise TypeError(f"vtranspose8: expected eight block vectors of float64, got {rows}")
    result = types.UniTuple(r0, 8)

    def codegen(context, builder, sig, args):
        def shuffle(x, y, mask):
            return builder.shuffle_vector(
                x, y, ir.Constant(ir.VectorType(ir.IntType(32), 8), mask))

        def round_(vs, lo, hi):
            out = []
            for m in range(0, 8, 2):
                out += [shuffle(vs[m], vs[m + 1], lo), shuffle(vs[m], vs[m + 1], hi)]
            return out
        # lane pairs: (r0 r1) -> r0_0 r1_0 r0_2 r1_2 ... and r0_1 r1_1 r0_3 r1_3 ...
        v = round_(list(args), [0, 8, 2, 10, 4, 12, 6, 14], [1, 9, 3, 11, 5, 13, 7, 15])
        # v[0]: the even columns of rows 0 and 1, v[1] their odd ones, v[2] and
        # v[3] those of rows 2 and 3, ...; then pairs of pairs, columns e and
        # e + 4 of rows 0-3 in w[e], e + 2 and e + 6 in w[e + 2] (e = 0, 1)
        w = [None] * 8
        for g in (0, 4):
            for e in (0, 1):
                a, b = v[g + e], v[g + 2 + e]
                w[g + e] = shuffle(a, b, [0, 1, 8, 9, 4, 5, 12, 13])
                w[g + 2 + e] = shuffle(a, b, [2, 3, 10, 11, 6, 7, 14, 15])
        # w[c] (c < 4): column c of rows 0-3, then column c + 4 of rows 0-3;
        # w[4 + c]: the same of rows 4-7
        out = [None] * 8
        for c in range(4):
            out[c] = shuffle(w[c], w[4 + c], [0, 1, 2, 3, 8, 9, 10, 11])
            out[c + 4] = shuffle(w[c], w[4 + c], [4, 5, 6, 7, 12, 13, 14, 15])
        return context.make_tuple(builder, result, out)
    return result(*rows), codegen


@intrinsic
def vselect_nan(typingctx, v, x, y):
    """Lane-wise ``x if v is NaN else y``."""
    if not (isinstance(v, Vec) and v == x == y):
        raise TypeError(f"vselect_nan: expected three Vec of one dtype, got {v}, {x}, {y}")

    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_unordered("uno", args[0], args[0]), args[1], args[2])
    return v(v, x, y), codegen


def _lanewise(name, emit):
    @intrinsic
    def op(typingctx, a, b):
        if not (isinstance(a, Vec) and a == b):
            raise TypeError(f"{name}: expected two Vec of one dtype, got {a}, {b}")

        def codegen(context, builder, sig, args):
            return emit(builder, args[0], args[1])
        return a(a, b), codegen
    return op


vadd = _lanewise("vadd", lambda builder, a, b: builder.fadd(a, b))
vsub = _lanewise("vsub", lambda builder, a, b: builder.fsub(a, b))
vmul = _lanewise("vmul", lambda builder, a, b: builder.fmul(a, b))
vdiv = _lanewise("vdiv", lambda builder, a, b: builder.fdiv(a, b))


def _horizontal(name, combine):
    """An intrinsic folding the lanes of a vector, lane 0 first, into a scalar."""
    @intrinsic
    def op(typingctx, v):
        if not isinstance(v, Vec):
            raise TypeError(f"{name}: expected a Vec, got {v}")

        def codegen(context, builder, sig, args):
            result = builder.extract_element(args[0], ir.Constant(ir.IntType(32), 0))
            for lane in range(1, v.lanes):
                value = builder.extract_element(args[0], ir.Constant(ir.IntType(32), lane))
                result = combine(builder, result, value)
            return result
        return v.dtype(v), codegen
    return op


vhsum = _horizontal("vhsum", lambda builder, total, value: builder.fadd(total, value))


# exp(x) for x <= 0: the constants and steps of numba_backend._exp_nonpositive
_EXP_MIN = -708.0
_LOG2E = 1.4426950408889634
_ROUND = 6755399441055744.0
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_EXP_TAYLOR = [1.0 / f for f in (6227020800.0, 479001600.0, 39916800.0, 3628800.0, 362880.0,
                                 40320.0, 5040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0)]


@intrinsic
def vexp_nonpositive(typingctx, v):
    """Lane-wise exp for float64 lanes <= 0 (or -inf); 0 below -708.

    t = x log2 e + 1.5 * 2**52 in one fused multiply-add rounds x log2 e to
    the nearest integer n, which t's low bits hold; then r = x - n ln 2 in
    two fused steps (Cody-Waite), the Taylor polynomial of degree 13 in r by
    fused multiply-adds (terms of degree 3 and up by Estrin's scheme, the
    last three in Horner's order), times 2^n built from t's bits.  Within
    1 ulp of numpy's exp (tested, also under fastem's fast-math flags).
    Every step is an intrinsic call (fma) rather than an arithmetic
    instruction, so the caller's fast-math flags cannot reassociate the
    reduction (t - 1.5 * 2**52 written as a subtraction was folded away).

    Lanes below -708 (and -inf) are computed on regardless, to garbage, inf
    or NaN, and set to 0 by the last select: cheaper than clamping them
    first.  With the rounding inside t and no clamp an exp takes 23
    arithmetic instructions, where rint, a float-to-int conversion and a
    clamp made 26: 3.64 -> 3.12 ns a vector of four in a loop of exps, one
    thread; the same bits in every fit compared.
    """
    if not (isinstance(v, Vec) and v.dtype == types.float64):
        raise TypeError(f"vexp_nonpositive: expected a Vec of float64, got {v}")

    def codegen(context, builder, sig, args):
        vty = args[0].type
        lanes_ = v.lanes
        i64v = ir.VectorType(ir.IntType(64), lanes_)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.v{lanes_}f64")

        def const(value):
            return ir.Constant(vty, [float(value)] * lanes_)
        x = args[0]
        in_range = builder.fcmp_ordered(">=", x, const(_EXP_MIN))
        t = builder.call(fma, [x, const(_LOG2E), const(_ROUND)])   # n + 1.5 * 2**52
        minus_n = builder.call(fma, [t, const(-1.0), const(_ROUND)])  # exact
        r = builder.call(fma, [minus_n, const(_LN2_HI), x])
        r = builder.call(fma, [minus_n, const(_LN2_LO), r])
        # 1 + r (1 + r (1/2 + r h(r))) with h, of degree 10, by Estrin's scheme:
        # seven levels of multiply-adds instead of a chain of 13, so that the
        # exps of several vectors overlap; the last three steps, which carry
        # the result's precision, stay in Horner's order.
        c = _EXP_TAYLOR[::-1]                            # c[i] = 1 / i!
        r2 = builder.fmul(r, r)
        r4 = builder.fmul(r2, r2)
        q = [builder.call(fma, [const(c[i + 1]), r, const(c[i])]) for i in range(3, 13, 2)]
        q.append(const(c[13]))                           # h: q0 + q1 r2 + ... + q5 r10
        s0 = builder.call(fma, [q[1], r2, q[0]])
        s1 = builder.call(fma, [q[3], r2, q[2]])
        s2 = builder.call(fma, [q[5], r2, q[4]])
        h = builder.call(fma, [builder.call(fma, [s2, r4, s1]), r4, s0])
        p = builder.call(fma, [h, r, const(c[2])])
        p = builder.call(fma, [p, r, const(c[1])])
        p = builder.call(fma, [p, r, const(c[0])])
        # t's low bits hold n (as in exp2_of_rounded): 2^n has exponent n + 1023
        biased = builder.add(builder.bitcast(t, i64v), ir.Constant(i64v, [1023] * lanes_))
        scale = builder.bitcast(builder.shl(biased, ir.Constant(i64v, [52] * lanes_)), vty)
        return builder.select(in_range, builder.fmul(p, scale), const(0.0))
    return v(v), codegen
