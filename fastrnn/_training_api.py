"""Training-layer exports (models, losses, optimizers, fit loop, I/O, interop)."""
__all__ = []
