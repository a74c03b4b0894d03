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
        if out.shape[-1] == 1:
            hit = (out[..., 0] > 0) == (np.reshape(y, out.shape[:-1]) > 0.5)
        elif y.shape == out.shape[:-1]:
            hit = out.argmax(-1) == y
        else:
            hit = out.argmax(-1) == y.argmax(-1)
        v = hit.astype(np.float64)
    else:
        yt = y.reshape(out.shape) if y.size == out.size else y
        d = out - yt
        v = (np.abs(d) if name == "mae" else d * d).mean(-1)
    if w is None:
        return float(v.sum()), float(v.size)
    return float((v * w).sum()), float(w.sum())
