"""fastrnn: fast CPU recurrent neural networks (RNN, LSTM, GRU) with NumPy in and NumPy out."""
import ctypes as _ctypes
import os as _os

# fastrnn runs BLAS single-threaded (its own threads split the work, see layers.py), so the
# OpenBLAS it links is told at load time not to start a thread pool, whose idle workers would
# otherwise spin on every core. Importing scipy_openblas32 already loads the library, hence
# the variable is set before that import, and put back right after.
_saved = _os.environ.get("OPENBLAS_NUM_THREADS")
_os.environ["OPENBLAS_NUM_THREADS"] = "1"
try:
    import scipy_openblas32 as _openblas

    if _os.name == "nt":
        # Windows: get_library(fullname=True) names the import library (.lib), which cannot be
        # loaded; the extension finds the DLL through the DLL search path instead.
        for _d in {_openblas.get_lib_dir(), _os.path.join(_os.path.dirname(_openblas.__file__), "bin")}:
            if _os.path.isdir(_d):
                _os.add_dll_directory(_d)
    else:
        # Load OpenBLAS from its wheel, globally, before the extension that links against it;
        # the extension's $ORIGIN/@loader_path rpath is the second way it is found.
        _ctypes.CDLL(_os.path.join(_openblas.get_lib_dir(), _openblas.get_library(fullname=True)),
                     mode=_ctypes.RTLD_GLOBAL)
finally:
    if _saved is None:
        _os.environ.pop("OPENBLAS_NUM_THREADS", None)
    else:
        _os.environ["OPENBLAS_NUM_THREADS"] = _saved

from .layers import get_num_threads, set_num_threads  # noqa: E402
from .layers import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, is_grad_enabled, no_grad  # noqa: E402
from .train import *  # noqa: E402,F401,F403
from . import datasets, lore  # noqa: E402,F401  (importing lore registers SkipRecurrent, JordanRNN for fr.load)
from . import distributed  # noqa: E402,F401  (fr.distributed.init(): data-parallel fit on MPI)
from .lore import *  # noqa: E402,F401,F403
from . import machine  # noqa: E402,F401  (fr.machine.facts(): the CPU, its features and caches)
from .tuning import tune  # noqa: E402,F401  (fr.tune(): measure this machine's plan, cache it)
from . import tuning as _tuning  # noqa: E402

_tuning.apply_derived()  # cache-size thresholds from this CPU's caches
_tuning.apply_cached()   # this CPU kind's tuned plan, if fr.tune() / fastrnn tune saved one

__version__ = "0.1.0"
