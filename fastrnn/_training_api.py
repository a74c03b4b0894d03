"""Training-layer exports (models, losses, optimizers, fit loop, I/O, interop)."""
from . import callbacks as _callbacks
from . import interop as _interop
from . import io as _io
from . import losses as _losses
from . import models as _models
from . import optim as _optim
from . import sampling as _sampling
from . import training as _training
from .callbacks import *  # noqa: F401,F403
from .interop import *  # noqa: F401,F403
from .io import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .models import *  # noqa: F401,F403
from .optim import *  # noqa: F401,F403
from .sampling import *  # noqa: F401,F403
from .training import *  # noqa: F401,F403

__all__ = (_callbacks.__all__ + _interop.__all__ + _io.__all__ + _losses.__all__ + _models.__all__
           + _optim.__all__ + _sampling.__all__ + _training.__all__)
