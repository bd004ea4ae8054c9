"""Command line: ``fastem demo`` and ``fastem bench`` (also ``python -m fastem ...``)."""

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
    what = ("numba compilation or cache load" if fastem.get_backend() == "numba"
            else "first calls")
    print(f"kernel warm-up ({what}): {time.perf_counter() - start:.2f} s\n")

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


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _model_groups(text):
    from . import _bench

    groups = []
    for word in text.split(","):
        key = word.strip().lower()
        if key == "all":
            groups.extend(_bench.GROUPS)
        elif key in _bench.GROUP_ALIASES:
            groups.append(_bench.GROUP_ALIASES[key])
        else:
            raise argparse.ArgumentTypeError(
                f"unknown model group {word.strip()!r}; choose from "
                f"{', '.join(_bench.GROUPS)} or all (comma-separated)")
    return tuple(group for group in _bench.GROUPS if group in groups)


BENCH_DESCRIPTION = """Time fastem against scikit-learn (and faiss for float32 K-means, when
installed) in one process on the reference shapes: KMeans (1e6,16,16),
(1e6,32,128), (2e5,2,8) in float32 and float64; GaussianMixture full, tied,
diag and spherical at (1e5,16,16), (2e5,2,8), (5e4,64,8); BernoulliMixture at
(1e6,64,32) against one dense multiply X @ logit.T; GaussianMixture full and
diag at (1e5,16,8) with 10 % NaN against the complete data; not by default,
fastem with one thread against all (threads) and KMeans, GaussianMixture diag
and full at n = 1e5, 1e6, 1e7, (d,k) = (16,16), float32 (sizes). Same data, same
initial parameters, tol=0, a fixed number of iterations; time per iteration
is the fit time over n_iter_, best of --repeats fits, after untimed
warm-up fits (numba compilation), each after a 0.3 s pause in which the other
library's idle threads stop spinning. scikit-learn's BLAS/OpenMP threads are
limited to fastem's thread count with threadpoolctl. The full run takes a
few minutes; --quick about one minute."""


def bench(args):
    import fastem

    from . import _bench

    if args.threads is not None:
        fastem.set_num_threads(args.threads)
    if args.backend is not None:
        fastem.set_backend(args.backend)
    quick = args.quick
    settings = _bench.Settings(
        groups=args.models,
        dtype=args.dtype,
        scale=args.scale if args.scale is not None else (_bench.QUICK_SCALE if quick else 1.0),
        max_iter=args.max_iter or (_bench.QUICK_MAX_ITER if quick else _bench.MAX_ITER),
        repeats=args.repeats or (_bench.QUICK_REPEATS if quick else _bench.REPEATS),
        marginal=args.marginal,
    )
    _bench.run(settings, json_path=args.json)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastem", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="fit every model on built-in generated data")
    p_demo.add_argument("--n-samples", type=int, default=200_000)
    p_demo.add_argument("--repeats", type=int, default=1)

    p_bench = sub.add_parser(
        "bench", help="time fastem against scikit-learn on the reference shapes",
        description=BENCH_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_bench.add_argument("--quick", action="store_true",
                         help="n / 10, 5 iterations, 1 repeat: about one minute")
    p_bench.add_argument("--models", type=_model_groups, default=("kmeans", "gmm",
                         "bernoulli", "missing"), metavar="LIST",
                         help="comma-separated groups among kmeans, gmm, bernoulli, "
                              "missing, threads (one thread against all) and sizes (time "
                              "per iteration against n), or all (default: all but threads "
                              "and sizes)")
    p_bench.add_argument("--dtype", choices=("reference", "float64", "float32", "both"),
                         default="reference",
                         help="reference (default): KMeans in float32 and float64, the "
                              "others in float64; or every model in the given dtype(s)")
    p_bench.add_argument("--repeats", type=_positive_int, default=None,
                         help="fits per case, the best is kept (default 3, --quick 1)")
    p_bench.add_argument("--max-iter", type=_positive_int, default=None,
                         help="EM iterations per fit (default 10, --quick 5)")
    p_bench.add_argument("--marginal", action="store_true",
                         help="time per iteration as (fit time at max-iter - fit time at "
                              "a third of it) / the difference in iterations: one more "
                              "iteration's cost, without a fit's fixed costs (twice the "
                              "fits)")
    p_bench.add_argument("--threads", type=_positive_int, default=None,
                         help="threads for fastem, and for scikit-learn's BLAS/OpenMP "
                              "(default: fastem.get_num_threads(), all cores)")
    p_bench.add_argument("--scale", type=_positive_float, default=None,
                         help="multiply every n by this factor (default 1, --quick 0.1); "
                              "n never drops below what the shape needs")
    p_bench.add_argument("--backend", choices=("numba", "cython", "numpy"), default=None,
                         help="fastem backend to time (default: the automatic choice, "
                              "or FASTEM_BACKEND)")
    p_bench.add_argument("--json", metavar="PATH", default=None,
                         help="also write the machine description and every row as JSON")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args)
    if args.command == "bench":
        return bench(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
