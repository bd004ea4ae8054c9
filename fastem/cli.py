"""Command line: ``fastem demo`` (also ``python -m fastem demo``)."""

import argparse
import sys
import time
import warnings

import numpy as np


def _blobs(n_samples, n_features, n_centers, rng, dtype=np.float64):
    centers = rng.uniform(-10, 10, size=(n_centers, n_features))
    labels = rng.integers(0, n_centers, size=n_samples)
    X = centers[labels] + rng.standard_normal((n_samples, n_features))
    return X.astype(dtype)


def _binary(n_samples, n_features, n_components, rng):
    probs = rng.uniform(0.05, 0.95, size=(n_components, n_features))
    labels = rng.integers(0, n_components, size=n_samples)
    return (rng.uniform(size=(n_samples, n_features)) < probs[labels]).astype(np.float64)


def _timed(make, X, repeats=1):
    best, model = np.inf, None
    for _ in range(repeats):
        model = make()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            model.fit(X)
            best = min(best, time.perf_counter() - start)
    return best, model


def demo(args):
    import fastem

    rng = np.random.default_rng(0)
    n = args.n_samples
    X = _blobs(n, 8, 6, rng)
    B = _binary(n, 32, 6, rng)
    try:
        import sklearn.cluster
        import sklearn.mixture
        have_sklearn = True
    except ImportError:
        have_sklearn = False

    print(f"fastem {fastem.__version__} demo: backend {fastem.get_backend()!r}, "
          f"{fastem.get_num_threads()} thread(s)")
    print(f"data: {n} x 8 Gaussian blobs (6 centres), {n} x 32 binary (6 components)")

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two iterations do not converge, by design
        for cov in ("full", "tied", "diag", "spherical"):
            fastem.GaussianMixture(3, covariance_type=cov, max_iter=2,
                                   random_state=0).fit(X[:512])
        fastem.BernoulliMixture(3, max_iter=2, random_state=0).fit(B[:512])
    print(f"kernel warm-up (numba compilation or cache load): "
          f"{time.perf_counter() - start:.2f} s\n")

    init = X[rng.choice(n, size=6, replace=False)]
    cases = [
        ("KMeans", X,
         lambda: fastem.KMeans(6, init=init, n_init=1, random_state=0),
         (lambda: sklearn.cluster.KMeans(6, init=init, n_init=1, random_state=0))
         if have_sklearn else None,
         lambda m: f"inertia {m.inertia_:.6g}"),
    ]
    for cov in ("full", "tied", "diag", "spherical"):
        cases.append((
            f"GaussianMixture[{cov}]", X,
            lambda cov=cov: fastem.GaussianMixture(6, covariance_type=cov, means_init=init,
                                                   random_state=0),
            (lambda cov=cov: sklearn.mixture.GaussianMixture(
                6, covariance_type=cov, means_init=init, random_state=0))
            if have_sklearn else None,
            lambda m: f"lower bound {m.lower_bound_:.6g}"))
    cases.append(("BernoulliMixture", B,
                  lambda: fastem.BernoulliMixture(6, random_state=0), None,
                  lambda m: f"lower bound {m.lower_bound_:.6g}"))

    header = f"{'model':<26}{'fastem s':>10}{'iters':>7}  {'result':<28}"
    if have_sklearn:
        header += f"{'sklearn s':>10}{'iters':>7}{'speed-up':>10}"
    print(header)
    for name, data, make, make_peer, describe in cases:
        t, model = _timed(make, data, repeats=args.repeats)
        line = f"{name:<26}{t:>10.3f}{model.n_iter_:>7}  {describe(model):<28}"
        if have_sklearn and make_peer is not None:
            tp, peer = _timed(make_peer, data, repeats=args.repeats)
            ratio = (tp / peer.n_iter_) / (t / model.n_iter_)
            line += f"{tp:>10.3f}{peer.n_iter_:>7}{ratio:>9.1f}x"
        elif have_sklearn:
            line += f"{'(no scikit-learn equivalent)':>27}"
        print(line)
    if have_sklearn:
        print("\nspeed-up: scikit-learn's time per iteration over fastem's, same data, "
              "same initial means, measured in this run")
    else:
        print("\n(install scikit-learn to see its timings beside fastem's)")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastem", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="fit every model on built-in generated data")
    p_demo.add_argument("--n-samples", type=int, default=200_000)
    p_demo.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
