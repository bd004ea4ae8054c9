"""Input and parameter checks shared by every estimator.

Every message names the parameter and the offending value.  Nothing here
modifies its input: arrays are converted (to float32/float64) only when their
dtype requires it, otherwise they are used as they are.
"""

import numbers

import numpy as np

from . import _config
from ._utils import column_mean
from .backends import get_kernels
from .exceptions import NotFittedError

# rows per block when scanning X for NaN or infinity (masks of 128 KB for 16 features)
_ROWS = 8192


def check_array(X, name="X", *, allow_nan=False, with_missing=False):
    """Return ``X`` as a 2-D float32 or float64 ndarray of finite values.

    float32 and float64 are kept as they are; other numeric and boolean inputs,
    and object arrays of numbers, become float64.  Strings (even numeric ones)
    and complex numbers are rejected.  With ``allow_nan``, NaN entries (missing
    values) pass; infinities never do.  With ``with_missing``, return
    ``(X, has_nan)``: the same pass over the data tells whether it holds NaN.
    """
    if hasattr(X, "__array__") or isinstance(X, (list, tuple)):
        arr = np.asarray(X)
    else:
        raise TypeError(f"{name} must be array-like, got {type(X).__name__}")
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} must be real-valued, got complex dtype {arr.dtype}")
    if arr.dtype.kind in "US" or (arr.dtype.kind == "O" and any(
            isinstance(v, (str, bytes)) for v in arr.flat)):
        raise TypeError(
            f"{name} must contain numbers, got strings (dtype {arr.dtype}); convert "
            f"them to numbers explicitly"
        )
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"{name} must contain numbers, got dtype {arr.dtype}"
            ) from None
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features), got "
            f"an array with {arr.ndim} dimension(s)"
            + ("; reshape 1-D data with X.reshape(-1, 1)" if arr.ndim == 1 else "")
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must have at least one sample and one feature, got shape {arr.shape}")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    missing = _check_finite(arr, name, allow_nan)
    return (arr, missing) if with_missing else arr


def _check_finite(arr, name, allow_nan=False):
    """Raise unless every entry is finite (or NaN, with ``allow_nan``);
    return True if some entry is NaN."""
    # The active backend counts the NaN and infinite entries chunk by chunk,
    # on its threads (the compiled ones at memory speed: a numpy sum of X
    # took 1.1-1.4 ms at 5e4 x 64 float64 and 7.2 ms at 1e6 x 16, the numba
    # kernel on two threads 0.57 and 3.4)
    chunk_size, n_chunks = _config.chunk_layout(arr.shape[0])
    counts = np.zeros((n_chunks, 2))
    get_kernels().count_nonfinite(arr, chunk_size, counts)
    nan, inf = counts.sum(axis=0)
    if inf == 0 and (nan == 0 or allow_nan):
        return bool(nan)
    # the first bad entry, a block of rows at a time: a boolean mask of the
    # whole array would take an eighth of the memory of float64 X
    for start in range(0, arr.shape[0], _ROWS):
        part = arr[start:start + _ROWS]
        bad = np.isinf(part) if allow_nan else ~np.isfinite(part)
        if bad.any():
            break
    row, col = np.argwhere(bad)[0]
    row += start
    value = arr[row, col]
    kind = "NaN" if np.isnan(value) else "infinity"
    allowed = "NaN marks a missing value; infinity is not allowed" if allow_nan \
        else f"fastem requires finite values in {name}"
    raise ValueError(
        f"{name} contains {kind} (first at row {row}, column {col}); {allowed}"
    )


def observed_column_mean(X, sample_weight):
    """The weighted means of X's columns over their observed (non-NaN) entries,
    in float64.  A column with no observed, positive-weight entry cannot be
    fitted: an error.  (One pass over X for both: the check alone had taken a
    quarter of the time before a first E-step with NaN.)"""
    mean, observed = column_mean(X, sample_weight, missing=True, return_weight=True)
    empty = np.flatnonzero(observed == 0)
    if empty.size:
        raise ValueError(
            f"X has no observed value in column {empty[0]} (every entry is NaN or "
            "has zero sample_weight); drop that column"
        )
    return mean


def check_sample_weight(sample_weight, n_samples):
    """Return float64 weights of shape (n_samples,), all >= 0 and not all 0."""
    if sample_weight is None:
        return np.ones(n_samples, dtype=np.float64)
    if isinstance(sample_weight, numbers.Number) and not isinstance(sample_weight, bool):
        w = np.full(n_samples, float(sample_weight))
    else:
        w = np.asarray(sample_weight)
        if w.dtype.kind not in "biuf":
            raise TypeError(f"sample_weight must be numeric, got dtype {w.dtype}")
        w = w.astype(np.float64)  # always a copy: the caller's array is never touched
    if w.shape != (n_samples,):
        raise ValueError(
            f"sample_weight must have shape ({n_samples},), got shape {w.shape}"
        )
    if not np.all(np.isfinite(w)):
        i = int(np.flatnonzero(~np.isfinite(w))[0])
        raise ValueError(f"sample_weight contains a non-finite value {w[i]} at index {i}")
    if np.any(w < 0):
        i = int(np.flatnonzero(w < 0)[0])
        raise ValueError(f"sample_weight must be >= 0, got {w[i]} at index {i}")
    if not np.any(w > 0):
        raise ValueError("sample_weight must have at least one positive entry, got all zeros")
    return w


def check_int(name, value, *, low, high=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")
    return int(value)


def check_float(name, value, *, low, include_low=True):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < low or (value == low and not include_low):
        op = ">=" if include_low else ">"
        raise ValueError(f"{name} must be a finite number {op} {low}, got {value!r}")
    return value


def check_option(name, value, options):
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {sorted(options)}, got {value!r}")
    return value


def check_fixed(fixed, allowed):
    if isinstance(fixed, str):
        fixed = (fixed,)
    try:
        items = tuple(fixed)
    except TypeError:
        raise TypeError(f"fixed must be a tuple of names from {sorted(allowed)}, got {fixed!r}") from None
    for item in items:
        if item not in allowed:
            raise ValueError(f"fixed may contain only {sorted(allowed)}, got {item!r}")
    return frozenset(items)


def check_random_state(seed):
    """None -> NumPy's global RandomState, int -> new RandomState, or as given."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.RandomState(seed)
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(
        f"random_state must be None, an int or a numpy.random.RandomState, got {seed!r}"
    )


def check_param_array(name, value, shape):
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values")
    return arr


def check_is_fitted(estimator, attribute):
    if not hasattr(estimator, attribute):
        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet; call "
            f"'fit' with appropriate arguments before using this method"
        )


def check_n_features(estimator, X):
    expected = estimator.n_features_in_
    if X.shape[1] != expected:
        raise ValueError(
            f"X has {X.shape[1]} features, but {type(estimator).__name__} is "
            f"expecting {expected} features as input"
        )
