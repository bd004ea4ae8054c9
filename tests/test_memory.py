"""Peak memory of a fit: at most a quarter of the size of X on top of X.

Each model is fitted in a fresh Python process (see ``MEASURE``): X is built
in small pieces, the kernels are compiled (or loaded from numba's cache) by a
fit of a small slice, and then the resident set size is read before the fit
and its high-water mark after it.  The difference is what the fit needed: its
arrays, numpy's and numba's allocations alike (tracemalloc would miss numba's),
plus whatever the allocator kept from freed blocks.

The reference shape is 1e6 x 16 (128 MB, at most 32 MB more); CI measures
3e5 x 16 (38 MB, at most 9.6 MB more), which is stricter: fastem's own blocks
of work are sized from n, but a few fixed costs are not (GaussianFamily's
initial M-step reads 8192 rows at a time, about 4 MB of temporaries for
16 features and 16 components), and they weigh more beside a smaller X.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from testing_utils import SUBPROCESS_CWD, subprocess_pythonpath

REPO = SUBPROCESS_CWD  # where subprocesses run (see testing_utils)
N, D, K = 300_000, 16, 16

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/self/status (Linux)")

MEASURE = textwrap.dedent("""
    import gc, json, sys, warnings
    import numpy as np
    import fastem

    def status_bytes(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(key)

    def reset_peak():
        # writing 5 resets VmHWM to the current RSS (Linux >= 4.0); where that is
        # not allowed, VmHWM is the peak since the start, which the small pieces
        # of X and the small warm-up fit keep below the fit's
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    n, d, k, model = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=4.0, size=(k, d))
    X = np.empty((n, d))
    for start in range(0, n, 4096):  # small temporaries: the peak so far stays low
        rows = min(n, start + 4096) - start
        X[start:start + rows] = centers[rng.integers(k, size=rows)]
        X[start:start + rows] += rng.normal(size=(rows, d))

    def make():
        if model == "kmeans":
            return fastem.KMeans(k, random_state=0, max_iter=5)
        return fastem.GaussianMixture(k, covariance_type=model, random_state=0,
                                      max_iter=3, tol=0)

    warnings.simplefilter("ignore")
    make().fit(X[:3000])  # compile, or load the compiled kernels
    gc.collect()
    reset_peak()
    before = status_bytes("VmRSS")
    make().fit(X)
    extra = status_bytes("VmHWM") - before
    print(json.dumps({"input": X.nbytes, "extra": extra}))
""")


def measure(model, n=N, d=D, k=K):
    """(bytes of X, extra peak bytes of fitting ``model``) in a fresh process."""
    env = dict(os.environ, PYTHONPATH=subprocess_pythonpath(os.environ.get("PYTHONPATH", "")))
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(n), str(d), str(k), model],
                          env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["input"], result["extra"]


@pytest.mark.parametrize("model", ["kmeans", "full", "tied", "diag", "spherical"])
def test_fit_needs_at_most_a_quarter_of_the_input(model):
    size, extra = measure(model)
    assert extra <= size / 4, (
        f"{model}: fitting {N} x {D} float64 ({size / 2**20:.1f} MiB) took "
        f"{extra / 2**20:.1f} MiB more at its peak")
