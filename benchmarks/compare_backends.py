"""Time each kernel of the table on numba and on cython, side by side, at the reference shapes.

Usage (from the repository root; a few minutes on 2 cores)::

    OMP_WAIT_POLICY=passive python benchmarks/compare_backends.py [--dtype float64] [--calls 5]

Each kernel case of ``cases.KERNEL_CASES`` at a reference shape (tier
``large``, plus the medium missing-value and Gaussian-mixture reference
shapes) is called with the arguments the benchmark suite builds
(``test_bench_kernels.ARGUMENTS``), once untimed (numba compiles or loads
its cache) and then ``--calls`` times per backend, alternating the backends
call by call so that a change in the machine's load hits both alike.  The
table gives the median time per call and the ratio cython / numba (target:
at most 1.5).
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cases import KERNEL_CASES, make_problem  # noqa: E402
from fastem import _config, available_backends, using_backend  # noqa: E402
from fastem.backends import get_kernels  # noqa: E402
from test_bench_kernels import ARGUMENTS, TABLE  # noqa: E402

REFERENCE = {(100_000, 16, 16), (200_000, 2, 8), (50_000, 64, 8), (1_000_000, 16, 16),
             (1_000_000, 32, 128), (1_000_000, 64, 32), (100_000, 16, 8)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("-k", default="", help="only kernels whose name contains this")
    args = parser.parse_args()
    names = [b for b in ("numba", "cython") if b in available_backends()]
    if names != ["numba", "cython"]:
        raise SystemExit(f"need numba and cython, have {available_backends()}")
    seen = set()
    cases = []
    for case in KERNEL_CASES:
        s = case.shape
        key = (case.name, case.variant, case.data, s.n, s.d, s.k)
        if (case.dtype != args.dtype or case.runner != "numba" or key in seen
                or (s.n, s.d, s.k) not in REFERENCE or args.k not in case.name):
            continue
        seen.add(key)
        cases.append(case)
    print(f"{'kernel':<26} {'shape':<18} {'numba ms':>9} {'cython ms':>9} {'cy/nb':>6}  "
          f"({args.dtype}, {_config.get_num_threads()} threads, median of {args.calls})")
    for case in cases:
        problem = make_problem(case.data, case.shape.n, case.shape.d, case.shape.k, case.dtype)
        chunk_size, n_chunks = _config.chunk_layout(case.shape.n)
        build, _ = ARGUMENTS[case.name]
        calls = {}
        for name in names:
            values, _ = build(case, problem, chunk_size, n_chunks)
            with using_backend(name):
                kernel = getattr(get_kernels(), case.name)
            argv = [values[p] for p in TABLE[case.name]]
            with using_backend(name):
                get_kernels()  # numba: apply the thread count
                kernel(*argv)  # untimed: compilation or cache load
            calls[name] = (kernel, argv)
        times = {name: [] for name in names}
        for _ in range(args.calls):
            for name in names:
                kernel, argv = calls[name]
                with using_backend(name):
                    get_kernels()
                    start = time.perf_counter()
                    kernel(*argv)
                    times[name].append(time.perf_counter() - start)
        nb, cy = (1e3 * float(np.median(times[name])) for name in names)
        label = case.name + ("[hard]" if case.hard else "")
        print(f"{label:<26} {case.shape.label:<18} {nb:>9.2f} {cy:>9.2f} {cy / nb:>6.2f}",
              flush=True)
        del problem, calls


if __name__ == "__main__":
    main()
