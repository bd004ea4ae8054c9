"""fastem: fast, trustworthy EM clustering on multicore CPUs.

Models: :class:`KMeans`, :class:`GaussianMixture`, :class:`BernoulliMixture`.
Backends: :func:`available_backends`, :func:`get_backend`, :func:`set_backend`,
:func:`using_backend` (also ``FASTEM_BACKEND``).  Threads:
:func:`set_num_threads` (also ``FASTEM_NUM_THREADS``).
"""

from ._bernoulli_mixture import BernoulliMixture
from ._config import get_chunk_size, get_num_threads, set_chunk_size, set_num_threads
from ._gaussian_mixture import GaussianMixture
from ._kmeans import KMeans, kmeans_plusplus
from .backends import available_backends, get_backend, set_backend, using_backend
from .exceptions import ConvergenceWarning, NotFittedError

__version__ = "0.1.0"

__all__ = [
    "KMeans", "GaussianMixture", "BernoulliMixture", "kmeans_plusplus",
    "available_backends", "get_backend", "set_backend", "using_backend",
    "get_num_threads", "set_num_threads", "get_chunk_size", "set_chunk_size",
    "ConvergenceWarning", "NotFittedError", "__version__",
]
