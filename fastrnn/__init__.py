"""fastrnn: fast CPU recurrent neural networks (RNN, LSTM, GRU) with NumPy in and NumPy out."""
import ctypes as _ctypes
import os as _os

import scipy_openblas32 as _openblas

# Load OpenBLAS from its wheel, globally, before the extension that links against it; the
# extension's $ORIGIN rpath is the second way it is found.
_ctypes.CDLL(_os.path.join(_openblas.get_lib_dir(), _openblas.get_library(fullname=True)),
             mode=_ctypes.RTLD_GLOBAL)

from .layers import get_num_threads, set_num_threads  # noqa: E402
from .layers import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, is_grad_enabled, no_grad  # noqa: E402
from ._training_api import *  # noqa: E402,F401,F403

__version__ = "0.1.0"
