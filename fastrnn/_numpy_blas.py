"""NumPy's own BLAS, held to one thread while fastrnn trains or predicts.

fastrnn's recurrences run on its own thread pool with its BLAS single-threaded, but Dense
layers and losses multiply with NumPy, whose bundled OpenBLAS keeps one spin-waiting thread
per core: between the training layer's many small products those threads burn the cores the
recurrence needs (an epoch of the fill-in-the-blank example ran 17x slower on a busy 2-core
machine). The previous thread count is restored afterwards, so NumPy elsewhere is untouched.
"""
import contextlib
import ctypes
import functools
import glob
import os
import threading

import numpy as np

_PAIRS = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
          ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
          ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
          ("openblas_get_num_threads", "openblas_set_num_threads"))
_found = []
_lock = threading.Lock()
_depth = {"n": 0, "saved": None}


def _controls():
    """(get, set) of the OpenBLAS bundled with NumPy, or None (another BLAS, or not found)."""
    if not _found:
        here = os.path.dirname(np.__file__)
        paths = []
        for d in ("../numpy.libs", ".dylibs", ".libs"):
            paths += glob.glob(os.path.join(here, d, "*openblas*"))
        pair = None
        for path in paths:
            try:
                lib = ctypes.CDLL(path)  # already loaded by NumPy: this returns its handle
            except OSError:
                continue
            for get, set_ in _PAIRS:
                if hasattr(lib, get) and hasattr(lib, set_):
                    pair = (getattr(lib, get), getattr(lib, set_))
                    break
            if pair:
                break
        _found.append(pair)
    return _found[0]


def get_threads():
    c = _controls()
    return None if c is None else int(c[0]())


@contextlib.contextmanager
def single_threaded():
    """NumPy's BLAS at one thread inside the block (nestable, thread-safe)."""
    c = _controls()
    if c is None:
        yield
        return
    with _lock:
        if _depth["n"] == 0:
            _depth["saved"] = int(c[0]())
            c[1](1)
        _depth["n"] += 1
    try:
        yield
    finally:
        with _lock:
            _depth["n"] -= 1
            if _depth["n"] == 0:
                c[1](_depth["saved"])


def numpy_blas_single_threaded(method):
    """Decorator form of single_threaded() for training and inference entry points."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with single_threaded():
            return method(*args, **kwargs)
    return wrapper
