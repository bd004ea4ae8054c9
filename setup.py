"""Build of fastem's optional compiled extension (the Cython backend).

The project metadata lives in pyproject.toml.  The extension modules in
``fastem/backends/_cython_*.pyx`` are compiled with ``-O3 -fno-trapping-math``
for the generic target of the compiler; on x86-64 (not Windows) they are
compiled a second time with ``-mavx2 -mfma`` as ``*_avx2`` modules, which the
Cython backend imports on CPUs that have both.  OpenMP is detected by compiling and linking
a small test program with the compiler's OpenMP flag, and without it the
kernels are built serial (a message says so).

The extension is optional: if Cython is missing or the compilation fails
(no C compiler, say), ``pip install .`` still succeeds and fastem runs on its
other backends (numba, numpy).  Set ``FASTEM_REQUIRE_CYTHON=1`` to make any
such failure fatal (CI does, so that a broken build cannot pass unnoticed).
"""

import os
import platform
import shutil
import sys
import tempfile
import textwrap

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

REQUIRE = os.environ.get("FASTEM_REQUIRE_CYTHON", "").strip() not in ("", "0")
MODULES = ("_cython_kernels", "_cython_missing")
SIMD_FLAGS = ["-mavx2", "-mfma"]  # the *_avx2 builds of MODULES, x86-64 only
OPENMP_PROBE = textwrap.dedent("""\
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n > 0 && omp_get_max_threads() > 0 ? 0 : 1;
    }
    """)


def say(message):
    print(f"fastem setup: {message}", file=sys.stderr, flush=True)


def give_up(message):
    """A build problem: fatal under FASTEM_REQUIRE_CYTHON=1, else a message."""
    if REQUIRE:
        raise SystemExit(f"fastem setup: {message} (FASTEM_REQUIRE_CYTHON=1: failing the build)")
    say(f"{message}; installing without the Cython backend "
        "(fastem will use numba or numpy)")


def openmp_flags(compiler):
    """(compile flags, link flags) enabling OpenMP, or None if the probe fails."""
    if compiler.compiler_type == "msvc":
        flags = (["/openmp"], [])
    else:
        flags = (["-fopenmp"], ["-fopenmp"])
    tmp = tempfile.mkdtemp(prefix="fastem_openmp_")
    try:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write(OPENMP_PROBE)
        objects = compiler.compile([source], output_dir=tmp, extra_postargs=flags[0])
        compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=flags[1])
    except Exception as exc:  # CompileError, LinkError, a missing compiler
        say(f"OpenMP probe failed ({exc.__class__.__name__})")
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return flags


class OptionalBuildExt(build_ext):
    """build_ext that probes OpenMP and lets the extension fail unless REQUIRE."""

    def build_extensions(self):
        flags = openmp_flags(self.compiler)
        if flags is None:
            say("OpenMP not available: building the Cython kernels serial "
                "(one thread; results are the same)")
        else:
            say(f"OpenMP enabled with {flags[0]}")
            for ext in self.extensions:
                ext.extra_compile_args = list(ext.extra_compile_args) + flags[0]
                ext.extra_link_args = list(ext.extra_link_args) + flags[1]
        super().build_extensions()

    def run(self):
        try:
            super().run()
        except Exception as exc:
            give_up(f"building the Cython extension failed ({exc})")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            give_up(f"compiling {ext.name} failed ({exc})")


def extensions():
    try:
        import numpy  # noqa: F401 - a build requirement; checked for a clear message
        from Cython.Build import cythonize
    except ImportError as exc:
        give_up(f"Cython or numpy is not importable ({exc})")
        return []
    # -fno-trapping-math: floating-point operations are assumed not to trap
    # (they never do here: no FP exceptions are unmasked), so the compiler may
    # turn the selects of fastem_exp_nonpositive into vector blends and
    # vectorize the softmax's exps.  It changes no value and, unlike
    # -ffast-math, sets no flush-to-zero mode.
    compile_args = [] if sys.platform == "win32" else ["-O3", "-fno-trapping-math"]
    variants = [("", compile_args)]
    if sys.platform != "win32" and platform.machine().lower() in ("x86_64", "amd64"):
        variants.append(("_avx2", compile_args + SIMD_FLAGS))
    modules = [
        Extension(f"fastem.backends.{name}{suffix}", [f"fastem/backends/{name}{suffix}.pyx"],
                  extra_compile_args=args,
                  define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")])
        for suffix, args in variants for name in MODULES
    ]
    try:
        built = cythonize(modules, compiler_directives={"language_level": "3"}, quiet=True)
    except Exception as exc:
        give_up(f"cythonizing failed ({exc})")
        return []
    for ext in built:  # cythonize() drops Extension(optional=True)
        ext.optional = not REQUIRE
    return built


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
