"""fastrnn: fast CPU recurrent neural networks (RNN, LSTM, GRU) with NumPy in and NumPy out."""
import ctypes as _ctypes
import os as _os

import scipy_openblas32 as _openblas

# Load OpenBLAS from its wheel, globally, before the extension that links against it; the
# extension's $ORIGIN rpath is the second way it is found. fastrnn runs BLAS single-threaded
# (its own threads split the work, see layers.py), so the library is told at load time not to
# start a thread pool, whose idle workers would otherwise spin for a while on every core.
_saved_env = {k: _os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS",)}
_os.environ["OPENBLAS_NUM_THREADS"] = "1"
try:
    _ctypes.CDLL(_os.path.join(_openblas.get_lib_dir(), _openblas.get_library(fullname=True)),
                 mode=_ctypes.RTLD_GLOBAL)
finally:
    for _k, _v in _saved_env.items():
        if _v is None:
            _os.environ.pop(_k, None)
        else:
            _os.environ[_k] = _v

from .layers import get_num_threads, set_num_threads  # noqa: E402
from .layers import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, is_grad_enabled, no_grad  # noqa: E402
from ._training_api import *  # noqa: E402,F401,F403
from . import datasets, lore  # noqa: E402,F401  (importing lore registers SkipRecurrent for fr.load)
from .lore import *  # noqa: E402,F401,F403

__version__ = "0.1.0"
