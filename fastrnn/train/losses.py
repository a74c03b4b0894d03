"""Loss functions with masks and sample weights.

Every loss reduces the last axis of ``y_pred`` into one value per *position*
(a sample, or a (sample, step) pair for sequence outputs), then returns the
weighted mean over positions: ``sum(w * l) / sum(w)``.  ``w`` is the product of
the optional per-position ``mask`` (e.g. 0 past a sequence's length) and the
optional ``sample_weight`` (per sample or per position).  Positions with weight
0 contribute neither loss nor gradient.
"""
import numpy as np

from .._checks import lookup, positive

__all__ = ["Loss", "MeanSquaredError", "MeanAbsoluteError", "Huber",
           "SoftmaxCrossEntropy", "BinaryCrossEntropy", "PinballLoss", "get_loss", "softmax", "sigmoid"]


def softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(z):
    # Split by sign so exp never overflows.
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _position_weights(pos_shape, mask, sample_weight, dtype):
    w = np.ones(pos_shape, dtype)
    for name, a in (("mask", mask), ("sample_weight", sample_weight)):
        if a is None:
            continue
        a = np.asarray(a, dtype=dtype)
        if a.shape != pos_shape[:a.ndim]:
            raise ValueError(f"{name} has shape {a.shape}; expected a prefix of the per-position "
                             f"shape {pos_shape} (samples[, steps])")
        w = w * a.reshape(a.shape + (1,) * (len(pos_shape) - a.ndim))
    return w


class Loss:
    """Base class: subclasses implement ``_elementwise(y_pred, y_true) -> (loss, grad)``
    where ``loss`` has the per-position shape and ``grad`` is d loss / d y_pred."""

    name = None

    def _prepare_target(self, y_pred, y_true):
        y_true = np.asarray(y_true)
        # A (N,) target for an (N, 1) prediction is the common regression case; anything else
        # must match exactly, because silent broadcasting of (N,) against (N, 1) gives (N, N).
        if y_true.shape != y_pred.shape and y_true.shape == y_pred.shape[:-1] and y_pred.shape[-1] == 1:
            y_true = y_true[..., None]
        if y_true.shape != y_pred.shape:
            raise ValueError(f"y_true has shape {y_true.shape} but the model output has shape "
                             f"{y_pred.shape}")
        return y_true.astype(y_pred.dtype, copy=False)

    def value_and_grad(self, y_pred, y_true, mask=None, sample_weight=None):
        y_pred = np.asarray(y_pred)
        if not np.issubdtype(y_pred.dtype, np.floating):
            raise TypeError("y_pred must be a floating-point array")
        y_true = self._prepare_target(y_pred, y_true)
        loss, grad = self._elementwise(y_pred, y_true)
        if mask is None and sample_weight is None and 0 < loss.size < 2**24:
            # Unit weights (fit's common case) without building them: w * loss is loss and the
            # sum of `size` ones is `size` exactly below 2**24, so these are the general
            # path's operations on the same values, a fifth of its time.
            total = y_pred.dtype.type(loss.size)
            return (np.ascontiguousarray(loss).sum() / total,
                    grad * (y_pred.dtype.type(1) / total))
        w = _position_weights(loss.shape, mask, sample_weight, y_pred.dtype)
        total = w.sum()
        if total == 0:
            return y_pred.dtype.type(0), np.zeros_like(y_pred)
        value = (w * loss).sum() / total
        return value, grad * (w / total)[..., None]

    def __call__(self, y_pred, y_true, mask=None, sample_weight=None):
        return self.value_and_grad(y_pred, y_true, mask, sample_weight)[0]

    def get_config(self):
        return {"name": self.name}


class MeanSquaredError(Loss):
    name = "mse"

    def _elementwise(self, p, t):
        d = p - t
        n = p.shape[-1]
        sq = d * d
        # the mean of one value is that value: skip the reduction (per-step forecasts)
        return sq[..., 0] if n == 1 else sq.mean(-1), (2.0 / n) * d


class MeanAbsoluteError(Loss):
    name = "mae"

    def _elementwise(self, p, t):
        d = p - t
        return np.abs(d).mean(-1), np.sign(d) / p.shape[-1]


class Huber(Loss):
    name = "huber"

    def __init__(self, delta=1.0):
        self.delta = positive(delta, "delta")

    def _elementwise(self, p, t):
        d = p - t
        a, dl = np.abs(d), self.delta
        quad = a <= dl
        l = np.where(quad, 0.5 * d * d, dl * (a - 0.5 * dl))
        g = np.where(quad, d, dl * np.sign(d))
        n = p.shape[-1]
        return l.mean(-1), g / n

    def get_config(self):
        return {"name": self.name, "delta": self.delta}


class SoftmaxCrossEntropy(Loss):
    """Cross-entropy from logits. Targets are integer class indices (shape of the logits
    without the class axis) or probability vectors / one-hot (same shape as the logits)."""

    name = "cross_entropy"

    def _prepare_target(self, y_pred, y_true):
        y_true = np.asarray(y_true)
        if y_true.shape == y_pred.shape[:-1]:
            if not (np.issubdtype(y_true.dtype, np.integer) or
                    (y_true.size and np.all(y_true == np.round(y_true)))):
                raise ValueError("integer class labels expected for cross-entropy targets")
            lab = y_true.astype(np.int64)
            C = y_pred.shape[-1]
            if lab.size and (lab.min() < 0 or lab.max() >= C):
                raise ValueError(f"class labels must be in [0, {C}); got range "
                                 f"[{lab.min()}, {lab.max()}]")
            return lab
        if y_true.shape == y_pred.shape:
            return y_true.astype(y_pred.dtype, copy=False)
        raise ValueError(f"y_true has shape {y_true.shape}; cross-entropy with logits of shape "
                         f"{y_pred.shape} needs labels of shape {y_pred.shape[:-1]} or "
                         f"one-hot targets of shape {y_pred.shape}")

    def _elementwise(self, p, t):
        z = p - p.max(-1, keepdims=True)
        logsum = np.log(np.exp(z).sum(-1, keepdims=True))
        logp = z - logsum
        prob = np.exp(logp)
        if np.issubdtype(t.dtype, np.integer):
            l = -np.take_along_axis(logp, t[..., None], -1)[..., 0]
            g = prob
            np.put_along_axis(g, t[..., None], np.take_along_axis(g, t[..., None], -1) - 1, -1)
            return l, g
        l = -(t * logp).sum(-1)
        return l, prob * t.sum(-1, keepdims=True) - t


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy from logits, averaged over the last axis (independent labels)."""

    name = "binary_cross_entropy"

    def _elementwise(self, p, t):
        # log(1 + exp(-|p|)) form is exact and overflow-free for any logit.
        l = np.maximum(p, 0) - p * t + np.log1p(np.exp(-np.abs(p)))
        g = sigmoid(p) - t
        n = p.shape[-1]
        return l.mean(-1), g / n


class PinballLoss(Loss):
    """The pinball (quantile) loss: for quantile q and error e = y - pred, max(q e, (q - 1) e).
    The outputs are read as (..., steps * Q) with the Q quantiles of each step adjacent; the
    target repeats each step's value Q times (``np.repeat(y, Q, axis=-1)``)."""

    name = "pinball"

    def __init__(self, quantiles=(0.5,)):
        q = np.asarray(quantiles, np.float64).reshape(-1)
        if not len(q) or not ((q > 0) & (q < 1)).all():
            raise ValueError(f"quantiles must lie in (0, 1), got {list(quantiles)}")
        self.quantiles = [float(v) for v in q]

    def _elementwise(self, p, t):
        n = p.shape[-1]
        Q = len(self.quantiles)
        if n % Q:
            raise ValueError(f"the model has {n} outputs, not a multiple of {Q} quantiles")
        q = np.tile(np.asarray(self.quantiles, p.dtype), n // Q)
        e = t - p
        loss = np.maximum(q * e, (q - 1) * e)
        return loss.mean(-1), np.where(e > 0, -q, 1 - q).astype(p.dtype) / n

    def get_config(self):
        return {"name": self.name, "quantiles": list(self.quantiles)}


_LOSSES = {
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber,
    "cross_entropy": SoftmaxCrossEntropy, "crossentropy": SoftmaxCrossEntropy,
    "sparse_categorical_crossentropy": SoftmaxCrossEntropy,
    "categorical_crossentropy": SoftmaxCrossEntropy,
    "binary_cross_entropy": BinaryCrossEntropy, "binary_crossentropy": BinaryCrossEntropy,
    "bce": BinaryCrossEntropy,
    "pinball": PinballLoss, "quantile": PinballLoss,
}


def get_loss(loss):
    """A Loss from an instance, a name (e.g. "mse", "cross_entropy") or a config dict."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, dict):
        cfg = dict(loss)
        name = get_loss(cfg.pop("name")).name
        return _LOSSES[name](**cfg)
    if isinstance(loss, str):
        return lookup(_LOSSES, loss, "loss", lower=True)()
    raise TypeError(f"loss must be a name or a fastrnn Loss, got {type(loss).__name__}")
