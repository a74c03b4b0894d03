"""Names of the classes a saved model file may mention, filled by the classes themselves.

``fr.load`` reads a class name from the file and must find the class, which is defined above
the loader (a Sequential in train/sequential.py, a JordanRNN in lore/). Instead of the loader
importing them, every serialisable class registers itself where it is defined, as Keras's
``register_keras_serializable`` does::

    @register
    class Sequential(Model): ...

and the loader asks ``get_class(name)``. The names are part of the file format: a class keeps
its registered name when it moves between modules.
"""
from .._checks import lookup

__all__ = ["register", "get_class", "registered", "init_args"]

_CLASSES = {}


def register(cls=None, *, name=None):
    """Class decorator: make ``cls`` findable by ``get_class(name or cls.__name__)``. A name
    already taken by another class is refused (one name means one thing in every file)."""
    def deco(c):
        key = name or c.__name__
        old = _CLASSES.get(key)
        if old is not None and old is not c:
            raise ValueError(f"class name {key!r} is already registered for "
                             f"{old.__module__}.{old.__qualname__}")
        _CLASSES[key] = c
        return c
    return deco if cls is None else deco(cls)


def get_class(name, what="class"):
    """The class registered under ``name``; ValueError ("unknown {what} ...") if there is none."""
    return lookup(_CLASSES, name, what)


def init_args(cfg):
    """The constructor arguments in a ``get_config()`` dict: everything but its "class"."""
    return {k: v for k, v in cfg.items() if k != "class"}


def registered():
    """A copy of the registry: name -> class."""
    return dict(_CLASSES)
