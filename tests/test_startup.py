"""Start-up: the first fit in a new process, with numba's on-disk cache.

* Warm cache: the first fit of each model in a fresh process, which loads the
  compiled kernels instead of compiling them, takes at most 3 s.  The cache
  used is this session's (``NUMBA_CACHE_DIR`` or numba's default location),
  which the rest of the suite has filled; a first, untimed run compiles
  whatever is still missing.
* A process pool started with an empty cache directory: the workers compile
  the same kernels at the same time and write them to the same files, without
  errors or warnings, and their results equal those of a serial fit in the
  parent, which then loads every kernel from the cache the workers wrote.

A cold start (empty cache) of every model is measured by hand, not here: it
compiles every kernel, minutes of CPU time.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from testing_utils import SUBPROCESS_CWD, subprocess_pythonpath, requires_numba

pytestmark = requires_numba  # numba's cache and compile times

REPO = SUBPROCESS_CWD  # where subprocesses run (see testing_utils)
MODELS = ("kmeans", "full", "tied", "diag", "spherical", "bernoulli")
WARM_LIMIT = 3.0  # seconds for a first fit, kernels in the cache

# Fit MODELS (argv[1], comma-separated) for each dtype (argv[2]) and with and
# without NaN; print the time of each first fit and of the import, as JSON.
FIRST_FITS = textwrap.dedent("""
    import time
    started = time.perf_counter()
    import json, sys, warnings
    import numpy as np
    import fastem
    imported = time.perf_counter()

    models, dtypes = sys.argv[1].split(","), sys.argv[2].split(",")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 4)) + np.repeat(np.eye(4)[:2] * 6, 1000, axis=0)
    B = (rng.uniform(size=(2000, 6)) < np.repeat([[0.2] * 6, [0.8] * 6], 1000, axis=0))
    data = {}
    for name, values in (("gauss", X), ("binary", B.astype(np.float64))):
        data[name, "complete"] = values
        data[name, "nan"] = values.copy()
        data[name, "nan"][rng.uniform(size=values.shape) < 0.1] = np.nan

    def make(model):
        if model == "kmeans":
            return fastem.KMeans(3, random_state=0)
        if model == "bernoulli":
            return fastem.BernoulliMixture(3, random_state=0)
        return fastem.GaussianMixture(3, covariance_type=model, random_state=0)

    warnings.simplefilter("ignore")
    fits = {}
    for model in models:
        for dtype in dtypes:
            for missing in ("complete", "nan"):
                values = data["binary" if model == "bernoulli" else "gauss", missing]
                values = values.astype(dtype)
                start = time.perf_counter()
                make(model).fit(values)
                fits[f"{model}/{dtype}/{missing}"] = time.perf_counter() - start
    print(json.dumps({"import": imported - started, "fits": fits,
                      "total": time.perf_counter() - started}))
""")


def run_first_fits(models, dtypes, env=None):
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = subprocess_pythonpath(env.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", FIRST_FITS, ",".join(models), ",".join(dtypes)],
        env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def warm_cache():
    """Compile into this session's cache whatever the first fits need (untimed)."""
    run_first_fits(MODELS, ("float64", "float32"))


@pytest.mark.parametrize("model", MODELS)
def test_first_fit_with_a_warm_cache(warm_cache, model):
    """A new process: its first fit of ``model`` (float64, then float32 and
    NaN, each a first fit of its own kernels) loads the kernels fast."""
    result = run_first_fits([model], ("float64", "float32"))
    slow = {name: round(seconds, 2) for name, seconds in result["fits"].items()
            if seconds > WARM_LIMIT}
    assert not slow, f"first fits over {WARM_LIMIT} s with a warm cache: {slow}"


POOL = textwrap.dedent("""
    import concurrent.futures
    import json
    import multiprocessing
    import warnings

    import numpy as np

    def fit(task):
        import fastem
        cov_type, seed, missing = task
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(3000, 4)) + np.repeat(np.eye(4)[:3] * 5, 1000, axis=0)
        if missing:
            X[rng.uniform(size=X.shape) < 0.1] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastem.ConvergenceWarning)
            model = fastem.GaussianMixture(3, covariance_type=cov_type,
                                           init_params="random", random_state=seed).fit(X)
        return {"means": model.means_.tolist(), "covariances": model.covariances_.tolist(),
                "weights": model.weights_.tolist(), "lower_bounds": model.lower_bounds_,
                "labels": model.predict(X).tolist()}

    def cache_counts():
        from numba.core.dispatcher import Dispatcher
        from fastem.backends import numba_backend
        hits = misses = 0
        for value in vars(numba_backend).values():
            if isinstance(value, Dispatcher):
                hits += sum(value.stats.cache_hits.values())
                misses += sum(value.stats.cache_misses.values())
        return hits, misses

    if __name__ == "__main__":
        # the two workers start on the same kernels at once (two seeds of one
        # model): they compile them concurrently and write the same cache
        # files.  One complete-data model, and the full model with NaN, whose
        # kernel once gave other last bits when compiled in the process than
        # when loaded from the cache.  Each model added here compiles its
        # kernels again, in both workers, from an empty cache.
        tasks = [("spherical", seed, False) for seed in (0, 1)]
        tasks += [("full", seed, True) for seed in (0, 1)]
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
            pooled = list(pool.map(fit, tasks))
        serial = [fit(task) for task in tasks]  # here, from the cache the workers wrote
        print(json.dumps({"tasks": tasks, "pooled": pooled, "serial": serial,
                          "cache": cache_counts()}))
""")


def test_process_pool_with_an_empty_cache(tmp_path):
    cache = tmp_path / "numba_cache"
    cache.mkdir()
    script = tmp_path / "pool_fits.py"
    script.write_text(POOL)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache),
               PYTHONPATH=subprocess_pythonpath(os.environ.get("PYTHONPATH", "")))
    env.pop("FASTEM_NUMBA_CACHE", None)
    env.pop("FASTEM_BACKEND", None)
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for task, pooled, serial in zip(result["tasks"], result["pooled"], result["serial"]):
        assert pooled == serial, task  # the same floats, bit for bit
    hits, misses = result["cache"]
    assert hits > 0 and misses == 0, (hits, misses)
    assert any(cache.rglob("*.nbi")) and any(cache.rglob("*.nbc"))
