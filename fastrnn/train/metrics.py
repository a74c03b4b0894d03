"""The metrics ``Model.compile(metrics=[...])`` accepts and how ``fit``/``evaluate`` sum them."""
import numpy as np

from .._checks import lookup

METRICS = ("accuracy", "mae", "mse")
_NAMES = dict({m: m for m in METRICS}, acc="accuracy")


def check_metrics(metrics):
    """The metric names, checked, with aliases ("acc") resolved."""
    return [lookup(_NAMES, m, "metric") for m in list(metrics or [])]


def metric_sum(name, out, y, w):
    """Weighted per-position metric -> (sum, weight)."""
    if name == "accuracy":
        if out.shape[-1] == 1 and y.size == out.size:
            hit = (out[..., 0] > 0) == (np.reshape(y, out.shape[:-1]) > 0.5)
        elif y.shape == out.shape[:-1]:
            hit = out.argmax(-1) == y
        elif y.shape == out.shape:
            hit = out.argmax(-1) == y.argmax(-1)
        else:
            raise ValueError(f"metric 'accuracy' needs class labels of shape {out.shape[:-1]} or "
                             f"one-hot targets of shape {out.shape}, got {y.shape}")
        v = hit.astype(np.float64)
    else:
        # Targets must match the outputs element for element: broadcasting (N,) labels against
        # (N, C) outputs would average nonsense without an error.
        if y.size != out.size:
            raise ValueError(f"metric {name!r} needs targets with the output's shape {out.shape}, "
                             f"got {y.shape}")
        d = out - y.reshape(out.shape)
        v = (np.abs(d) if name == "mae" else d * d).mean(-1)
    if w is None:
        return float(v.sum()), float(v.size)
    return float((v * w).sum()), float(w.sum())
