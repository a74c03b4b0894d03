"""The training layer: Keras-style layers and models, losses, optimizers, callbacks, the fit
loop, saving and loading, weight converters for PyTorch and Keras, ONNX export and import.

Imports go downward only (tests/test_architecture.py checks it): registry, losses, optim,
callbacks, metrics -> layers -> interop, io, onnx -> model -> gradcheck, sequential, seq2seq.
Saved files name their classes; each class registers its name (registry.register) where it is
defined, so the loader (io.py) never imports a model.
"""
from . import callbacks as _callbacks
from . import gradcheck as _gradcheck
from . import interop as _interop
from . import io as _io
from . import layers as _layers
from . import losses as _losses
from . import model as _model
from . import onnx as _onnx
from . import optim as _optim
from . import seq2seq as _seq2seq
from . import sequential as _sequential
from .callbacks import *  # noqa: F401,F403
from .gradcheck import *  # noqa: F401,F403
from .interop import *  # noqa: F401,F403
from .io import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .model import *  # noqa: F401,F403
from .onnx import *  # noqa: F401,F403
from .optim import *  # noqa: F401,F403
from .seq2seq import *  # noqa: F401,F403
from .sequential import *  # noqa: F401,F403

__all__ = (_callbacks.__all__ + _interop.__all__ + _io.__all__ + _losses.__all__ + _layers.__all__
           + _sequential.__all__ + _optim.__all__ + _seq2seq.__all__ + _model.__all__
           + _gradcheck.__all__ + _onnx.__all__)
