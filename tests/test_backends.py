"""The backends agree on whole models, and fastem works without numba.

* Every model (KMeans, GaussianMixture with each covariance type,
  BernoulliMixture), float32 and float64, with and without NaN, fitted from
  the same ``random_state`` on every available backend: the fitted
  parameters agree with the NumPy reference backend's to 1e-9 relative and
  the labels are equal.  The backends differ only in the order of float64
  additions (about 1e-16 relative per E-step); the data are well separated
  blobs and the fits short (``max_iter=15``), so the differences carried
  through the iterations stay near 1e-13.
* With numba unimportable (an import hook in a subprocess, as
  ``FASTEM_TEST_BLOCK_NUMBA=1`` installs for the whole suite), fastem
  imports, lists ``["cython", "numpy"]``, chooses cython, and fits every model.
"""

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import fastem

from testing_utils import (NUMBA_BLOCKED, SUBPROCESS_CWD, rel_err, requires_cython,
                           subprocess_pythonpath)

REPO = SUBPROCESS_CWD  # where subprocesses run (see testing_utils)
AGREE = 1e-9
N, D, K = 3000, 4, 3
MODELS = ("kmeans", "full", "tied", "diag", "spherical", "bernoulli")


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(77)
    centers = rng.normal(scale=5.0, size=(K, D))
    X = centers[rng.integers(K, size=N)] + rng.normal(size=(N, D))
    probs = np.array([[0.9, 0.1, 0.8, 0.2, 0.7, 0.1],
                      [0.1, 0.9, 0.2, 0.8, 0.1, 0.7],
                      [0.5, 0.5, 0.9, 0.9, 0.1, 0.1]])
    B = (rng.uniform(size=(N, 6)) < probs[rng.integers(K, size=N)]).astype(np.float64)
    out = {}
    for name, values in (("gauss", X), ("binary", B)):
        missing = values.copy()
        missing[rng.uniform(size=values.shape) < 0.1] = np.nan
        out[name, False] = values
        out[name, True] = missing
    return out


def _make(model):
    if model == "kmeans":
        return fastem.KMeans(K, n_init=1, max_iter=15, random_state=0)
    if model == "bernoulli":
        return fastem.BernoulliMixture(K, n_init=1, max_iter=15, random_state=0)
    return fastem.GaussianMixture(K, covariance_type=model, n_init=1, max_iter=15,
                                  random_state=0)


def _fit(backend, model, X):
    with fastem.using_backend(backend), warnings.catch_warnings():
        warnings.simplefilter("ignore", fastem.ConvergenceWarning)
        est = _make(model).fit(X)
        labels = est.predict(X)
    fitted = {name: np.asarray(value) for name, value in vars(est).items()
              if name.endswith("_") and not name.startswith("_")
              and np.asarray(value).dtype.kind == "f"}
    return fitted, labels


@pytest.mark.parametrize("nan", [False, True], ids=["complete", "nan"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("model", MODELS)
def test_models_agree_across_backends(blobs, model, dtype, nan):
    X = blobs["binary" if model == "bernoulli" else "gauss", nan].astype(dtype)
    names = fastem.available_backends()
    assert len(names) >= 2 or NUMBA_BLOCKED, names
    ref, ref_labels = _fit("numpy", model, X)
    assert ref, "no fitted float attributes to compare"
    for backend in names[:-1]:
        got, labels = _fit(backend, model, X)
        assert got.keys() == ref.keys()
        for name in ref:
            assert rel_err(got[name], ref[name]) < AGREE, (backend, name)
        np.testing.assert_array_equal(labels, ref_labels, err_msg=backend)
        if "cython" in names and backend == "numba":
            cy, _ = _fit("cython", model, X)
            for name in ref:
                assert rel_err(cy[name], got[name]) < AGREE, ("cython vs numba", name)


# A subprocess in which numba cannot be imported, as on a machine without it.
WITHOUT_NUMBA = textwrap.dedent("""
    import importlib.abc, sys, warnings

    class BlockNumba(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "numba" or name.startswith("numba."):
                raise ImportError("numba blocked")
            return None

    sys.meta_path.insert(0, BlockNumba())
    import numpy as np
    import fastem

    try:
        import numba  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the block failed: numba imported")
    print(fastem.available_backends())
    print(fastem.get_backend())
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(loc=c, size=(300, 3)) for c in (-4.0, 0.0, 4.0)])
    B = (rng.uniform(size=(900, 5)) < 0.5).astype(np.float64)
    Xn = X.copy()
    Xn[rng.uniform(size=X.shape) < 0.1] = np.nan
    models = [fastem.KMeans(3, random_state=0)]
    models += [fastem.GaussianMixture(3, covariance_type=c, random_state=0)
               for c in ("full", "tied", "diag", "spherical")]
    warnings.simplefilter("ignore", fastem.ConvergenceWarning)
    for data in (X, Xn):
        for est in models:
            assert len(set(est.fit(data).predict(data))) == 3, est
    for data in (B, np.where(rng.uniform(size=B.shape) < 0.1, np.nan, B)):
        fastem.BernoulliMixture(2, random_state=0).fit(data).predict(data)
    print(sorted(m for m in sys.modules if m == "numba" or m.startswith("numba.")))
""")


@requires_cython
def test_fastem_works_without_numba():
    env = {k: v for k, v in os.environ.items() if k != "FASTEM_BACKEND"}
    env["PYTHONPATH"] = subprocess_pythonpath(env.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", WITHOUT_NUMBA], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "['cython', 'numpy']"
    assert lines[1] == "cython"
    assert lines[2] == "[]"  # no numba module was loaded
