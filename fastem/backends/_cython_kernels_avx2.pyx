# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
# _cython_kernels.pyx compiled a second time, for x86-64 CPUs with AVX2 and FMA
# (setup.py adds -mavx2 -mfma; cython_backend imports this build when the
# CPU has both).  The source is the same file, included.
include "_cython_kernels.pyx"
