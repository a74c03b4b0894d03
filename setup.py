"""Builds the fastrnn._core extension against OpenBLAS from the scipy-openblas32 wheel.

The library is found at run time in two ways: fastrnn/__init__.py loads it through
scipy_openblas32 before importing the extension, and on Linux and macOS the extension carries an
rpath relative to itself ($ORIGIN, @loader_path) to the wheel's lib directory as a second guard
(MSVC has no rpath; on Windows importing scipy_openblas32 adds its DLL directory).

No -march flag: the build targets the compiler's baseline ISA (x86-64, aarch64), so a wheel runs
on any CPU of its architecture; the AVX2+FMA kernels are compiled per function (csrc/smallgemm.h,
gates_avx2.h) and chosen at run time.
"""
import os
import shlex
import sys

import numpy as np
import scipy_openblas32
from Cython.Build import cythonize
from setuptools import Extension, setup

# Extra compiler and linker flags from the environment, appended after the defaults (so they win):
# tools/sanitize.sh builds with FASTRNN_EXTRA_CFLAGS="-fsanitize=address,undefined -fno-wrapv ...".
EXTRA_CFLAGS = shlex.split(os.environ.get("FASTRNN_EXTRA_CFLAGS", ""))
EXTRA_LDFLAGS = shlex.split(os.environ.get("FASTRNN_EXTRA_LDFLAGS", ""))

if sys.platform == "darwin":
    RPATH, RPATH_LINK = [], ["-Wl,-rpath,@loader_path/../scipy_openblas32/lib"]
elif os.name == "nt":
    RPATH, RPATH_LINK = [], []
else:
    RPATH, RPATH_LINK = ["$ORIGIN/../scipy_openblas32/lib"], []

ext = Extension(
    "fastrnn._core",
    sources=["fastrnn/_core.pyx", "csrc/fastrnn.c", "csrc/plan.c", "csrc/pool.c", "csrc/optim.c"],
    depends=["fastrnn/_core.pxd", "csrc/fastrnn.h", "csrc/cells.h", "csrc/loops.h", "csrc/proj.h",
             "csrc/vmath.h", "csrc/smallgemm.h", "csrc/gates_avx2.h", "csrc/pool.h"],
    include_dirs=["csrc", np.get_include(), scipy_openblas32.get_include_dir()],
    library_dirs=[scipy_openblas32.get_lib_dir()],
    libraries=[scipy_openblas32.get_library()],
    runtime_library_dirs=RPATH,
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    # -O3 vectorises the pointwise gate loops; -fno-trapping-math lets GCC turn their clamps
    # into branch-free selects (we never rely on FP exceptions). -ffp-contract=off forbids FMA
    # contraction, so every CPU-specific clone of a loop rounds identically (GCC contracts by
    # default on aarch64: off there too). MSVC (Windows) takes its defaults.
    extra_compile_args=(["-O3", "-std=c99", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno"]
                        if os.name != "nt" else []) + EXTRA_CFLAGS,
    extra_link_args=RPATH_LINK + EXTRA_LDFLAGS,
)

setup(ext_modules=cythonize([ext], compiler_directives={"language_level": "3"}))
