"""The command line: ``python -m fastem demo``."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ["KMeans", "GaussianMixture[full]", "GaussianMixture[tied]", "GaussianMixture[diag]",
          "GaussianMixture[spherical]", "BernoulliMixture"]


def run_fastem(*args, **env):
    environ = dict(os.environ, PYTHONPATH=REPO, **env)
    return subprocess.run([sys.executable, "-m", "fastem", *args], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("backend_name", ["numba", "numpy"])
def test_demo_runs_every_model(backend_name):
    proc = run_fastem("demo", "--n-samples", "3000", FASTEM_BACKEND=backend_name)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"backend {backend_name!r}" in out
    assert "3000 x 8 Gaussian blobs" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()}
    for name in MODELS:
        assert name in rows, f"{name} missing from:\n{out}"
        # name, seconds, iterations, then the model's quality measure
        assert re.match(rf"{re.escape(name)}\s+\d+\.\d+\s+\d+\s+(inertia|lower bound) -?\d",
                        rows[name]), rows[name]
    assert "Traceback" not in proc.stderr


def test_help_and_bad_command():
    proc = run_fastem("--help")
    assert proc.returncode == 0 and "demo" in proc.stdout
    proc = run_fastem("fly")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = run_fastem()
    assert proc.returncode == 2
