"""Keras-style layers of the models: Dense, Dropout, Embedding, LastStep, RepeatVector and
Recurrent (an engine RNN/LSTM/GRU on (samples, time, features) arrays).

High-level arrays are (samples, time, features), as in Keras.  Every layer here has
``forward(x, training, lengths)`` / ``backward(dy)``; training-mode forwards push their
cache on a stack and each backward pops the most recent one, so a layer can be used
once per sequence (Sequential) or once per step in a hand-written loop (decoders).
Every layer class registers its name for saved files (``registry.register``).
"""
import numpy as np

from .. import _checks
from ..layers import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, no_grad
from .registry import get_class, init_args, register

__all__ = ["Layer", "Dense", "Dropout", "Embedding", "LastStep", "RepeatVector", "Recurrent"]

ENGINE_LAYERS = (RNN, LSTM, GRU)
ENGINE_CELLS = (RNNCell, LSTMCell, GRUCell)


def engine_kind(module):
    """"RNN", "LSTM" or "GRU" for an engine layer or cell."""
    if isinstance(module, (LSTM, LSTMCell)):
        return "LSTM"
    if isinstance(module, (GRU, GRUCell)):
        return "GRU"
    if isinstance(module, (RNN, RNNCell)):
        return "RNN"
    raise TypeError(f"expected an engine layer or cell, got {type(module).__name__}")


def fmt_shape(shape):
    return "(" + ", ".join(["batch"] + ["time" if s is None else str(s) for s in shape]) + ")"


# ----------------------------------------------------------------------------- engine configs
def engine_config(layer):
    """Constructor arguments of an engine RNN/LSTM/GRU (JSON-serialisable)."""
    cfg = {"class": type(layer).__name__, "input_size": layer.input_size,
           "hidden_size": layer.hidden_size, "num_layers": layer.num_layers, "bias": layer.bias,
           "batch_first": layer.batch_first, "dropout": layer.dropout,
           "bidirectional": layer.bidirectional, "dtype": np.dtype(layer.dtype).name}
    if isinstance(layer, RNN):
        cfg["nonlinearity"] = layer.nonlinearity
        if getattr(layer, "leak", 1.0) != 1.0:      # leaky-integrator units
            cfg["leak"] = layer.leak
    for name in ("recurrent_dropout", "zoneout", "weight_dropout", "peepholes", "layer_norm",
                 "proj_size"):  # variants, when on
        if getattr(layer, name, 0.0):
            cfg[name] = getattr(layer, name)
    return cfg


_ENGINE_CLASSES = {c.__name__: c for c in ENGINE_LAYERS + ENGINE_CELLS}


def make_engine(cfg, seed=None):
    """The engine layer or cell of an ``engine_config``."""
    cfg = dict(cfg)
    cls = _checks.lookup(_ENGINE_CLASSES, cfg.pop("class"), "engine class")
    cfg["dtype"] = np.dtype(cfg["dtype"])
    return cls(seed=seed, **cfg)


def reinit_engine(module, rng):
    """Re-draw an engine module's weights U(-1/sqrt(H), 1/sqrt(H)) from ``rng`` and reseed its
    dropout stream, so a model-level seed makes the whole model reproducible. Layer norm's gains
    and biases go back to 1 and 0, as the engine module made them (a random gain near 0 would
    switch the normalised projections off)."""
    k = 1.0 / np.sqrt(module.hidden_size)
    for name, p in module.parameters().items():
        if name.startswith("layer_norm_"):
            p[...] = 1.0 if "_weight" in name else 0.0
        else:
            p[...] = rng.uniform(-k, k, p.shape)
    if hasattr(module, "_rng"):
        module._rng = np.random.default_rng(rng.integers(2**63))


# ----------------------------------------------------------------------------- layers
class Layer:
    """Base class of the model layers (not the engine)."""

    def __init__(self):
        self.params, self.grads = {}, {}
        self.dtype = None
        self.rng = None
        self.built = False
        self._stack = []

    # in_shape / out_shape are per-sample shapes; None marks the time axis.
    def build(self, in_shape, dtype, init_rng, rng):
        self.dtype, self.rng, self.built = np.dtype(dtype), rng, True
        return self._build(tuple(in_shape), init_rng)

    def _build(self, in_shape, init_rng):
        return in_shape

    def parameters(self):
        return self.params

    def zero_grad(self):
        for g in self.grads.values():
            g.fill(0)

    def state_dict(self):
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, sd):
        """Copy weights in; all names and shapes are checked before anything is written."""
        _checks.copy_state_dict(self.params, sd)

    def clear_cache(self):
        self._stack.clear()

    def reset_states(self):
        pass

    def _add(self, name, value):
        self.params[name] = np.ascontiguousarray(value, dtype=self.dtype)
        self.grads[name] = np.zeros_like(self.params[name])

    def get_config(self):
        return {"class": type(self).__name__}

    @classmethod
    def from_config(cls, cfg):
        return cls(**init_args(cfg))

    def __repr__(self):
        cfg = {k: v for k, v in self.get_config().items() if k != "class"}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in cfg.items())})"

    def __call__(self, x, training=False, lengths=None):
        return self.forward(x, training=training, lengths=lengths)


_ACTIVATIONS = (None, "linear", "relu", "tanh", "sigmoid")


def _time_major(x):
    """The C-contiguous (T, N, F) array that a 3-D (N, T, F) x is a transposed view of, else
    None: the layout a Recurrent's sequence output has (its engine runs time-major)."""
    if x.ndim != 3:
        return None
    xt = x.transpose(1, 0, 2)
    return xt if xt.flags.c_contiguous and not x.flags.c_contiguous else None


@register
class Dense(Layer):
    """Affine map ``act(x @ W.T + b)`` on the last axis, so on sequences it applies per step.
    ``weight`` (units, in_features) and ``bias`` (units,) as in ``torch.nn.Linear``."""

    def __init__(self, units, activation=None, in_features=None, use_bias=True):
        super().__init__()
        self.units = _checks.count(units, "units")
        self.activation = _checks.one_of(activation, "activation", _ACTIVATIONS)
        self.in_features, self.use_bias = in_features, bool(use_bias)

    def _build(self, in_shape, init_rng):
        if not in_shape or in_shape[-1] is None:
            raise ValueError(f"Dense needs a known feature axis, got input shape {fmt_shape(in_shape)}")
        D = in_shape[-1]
        if self.in_features is not None and self.in_features != D:
            raise ValueError(f"Dense(in_features={self.in_features}) receives {D} features")
        self.in_features = D
        k = 1.0 / np.sqrt(D)
        self._add("weight", init_rng.uniform(-k, k, (self.units, D)))
        if self.use_bias:
            self._add("bias", init_rng.uniform(-k, k, self.units))
        return in_shape[:-1] + (self.units,)

    def forward(self, x, training=False, lengths=None):
        # A sequence that is a (N, T, F) view of time-major (T, N, F) memory (a Recurrent's
        # output) is worked on in that order: a reshape of the view would copy it.
        xt = _time_major(x)
        z = self._affine(x if xt is None else xt)
        if xt is not None:
            z = z.transpose(1, 0, 2)  # time-major memory again, seen as (N, T, units)
        if training:
            self._stack.append((x, xt, z))
        return z

    def _affine(self, x):
        # One 2-D GEMM over all steps (a stacked 3-D matmul would loop over samples).
        z = (x.reshape(-1, x.shape[-1]) @ self.params["weight"].T).reshape(x.shape[:-1] + (self.units,))
        if self.use_bias:
            z += self.params["bias"]
        a = self.activation
        if a == "relu":
            z = np.maximum(z, 0)
        elif a == "tanh":
            z = np.tanh(z)
        elif a == "sigmoid":
            z = 1 / (1 + np.exp(-z))
        return z

    def backward(self, dy):
        x, xt, out = self._stack.pop()
        a = self.activation
        if a == "relu":
            dy = dy * (out > 0)
        elif a == "tanh":
            dy = dy * (1 - out * out)
        elif a == "sigmoid":
            dy = dy * out * (1 - out)
        W = self.params["weight"]
        if xt is not None:
            # The forward's time-major rows: dy (units wide, usually far narrower than x) is
            # brought to their order, and dx goes back time-major as an (N, T, F) view, which a
            # Recurrent below hands its engine without a transposing copy.
            T, N, F = xt.shape
            d2 = np.ascontiguousarray(dy.transpose(1, 0, 2)).reshape(-1, self.units)
            self._param_grads(d2, xt.reshape(-1, F))
            return self._dx(d2, W).reshape(T, N, F).transpose(1, 0, 2)
        d2 = dy.reshape(-1, self.units)
        self._param_grads(d2, x.reshape(-1, x.shape[-1]))
        return self._dx(d2, W).reshape(x.shape)

    def _param_grads(self, d2, x2):
        self.grads["weight"] += d2.T @ x2
        if self.use_bias:
            self.grads["bias"] += d2.sum(0)

    def _dx(self, d2, W):
        # One unit: dx is the outer product dy w, each entry the one product d*w (the same
        # bits in any order). np.dot's GEMM, not np.matmul, which runs an inner dimension of 1
        # without BLAS, ~8x slower (the README forecaster's Dense(1): a tenth of its epoch).
        return np.dot(d2, W) if self.units == 1 else d2 @ W

    def get_config(self):
        return {"class": "Dense", "units": self.units, "activation": self.activation,
                "in_features": self.in_features, "use_bias": self.use_bias}

    def __repr__(self):
        extra = ("" if self.activation in (None, "linear") else f", activation={self.activation!r}") + \
                ("" if self.use_bias else ", use_bias=False")
        return f"Dense({self.units}{extra})"


@register
class Dropout(Layer):
    """Inverted dropout (training only); masks come from the model's random generator."""

    def __init__(self, rate):
        super().__init__()
        self.rate = _checks.in_range(rate, "rate", 0, 1)

    def forward(self, x, training=False, lengths=None):
        if not training or self.rate == 0:
            if training:
                self._stack.append(None)
            return x
        mask = (self.rng.random(x.shape) >= self.rate).astype(x.dtype) / x.dtype.type(1 - self.rate)
        self._stack.append(mask)
        return x * mask

    def backward(self, dy):
        mask = self._stack.pop()
        return dy if mask is None else dy * mask

    def get_config(self):
        return {"class": "Dropout", "rate": self.rate}


@register
class Embedding(Layer):
    """Token ids -> vectors; ``weight`` (vocab_size, dim) as in ``torch.nn.Embedding``."""

    def __init__(self, vocab_size, dim):
        super().__init__()
        self.vocab_size, self.dim = _checks.count(vocab_size, "vocab_size"), _checks.count(dim, "dim")

    def _build(self, in_shape, init_rng):
        self._add("weight", init_rng.standard_normal((self.vocab_size, self.dim)))
        return in_shape + (self.dim,)

    def check_tokens(self, x, name="X"):
        x = np.asarray(x)
        if x.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integer token ids for Embedding, got dtype {x.dtype}")
        if x.size and (x.min() < 0 or x.max() >= self.vocab_size):
            raise ValueError(f"{name} token ids must be in [0, {self.vocab_size}), got "
                             f"[{x.min()}, {x.max()}]")
        return x

    def forward(self, x, training=False, lengths=None):
        x = self.check_tokens(x)
        if training:
            self._stack.append(x)
        return self.params["weight"][x]

    def backward(self, dy):
        x = self._stack.pop()
        np.add.at(self.grads["weight"], x.reshape(-1), dy.reshape(-1, self.dim))
        return None

    def get_config(self):
        return {"class": "Embedding", "vocab_size": self.vocab_size, "dim": self.dim}


@register
class LastStep(Layer):
    """(N, T, F) -> (N, F): each sequence's last valid step (``lengths``) or step T-1.

    For a bidirectional layer prefer ``Recurrent(..., return_sequences=False)``: at the last
    step the backward direction has read only that one step."""

    def _build(self, in_shape, init_rng):
        if len(in_shape) != 2:
            raise ValueError(f"LastStep needs (batch, time, features) input, got {fmt_shape(in_shape)}")
        return in_shape[1:]

    def forward(self, x, training=False, lengths=None):
        N, T = x.shape[:2]
        idx = np.full(N, T - 1) if lengths is None else np.asarray(lengths) - 1
        if training:
            self._stack.append((x.shape, idx))
        return x[np.arange(N), idx]

    def backward(self, dy):
        shape, idx = self._stack.pop()
        dx = np.zeros(shape, dy.dtype)
        dx[np.arange(shape[0]), idx] = dy
        return dx


@register
class RepeatVector(Layer):
    """(N, F) -> (N, n, F): feeds one vector to every step (one-to-many models)."""

    def __init__(self, n):
        super().__init__()
        self.n = _checks.count(n, "n")

    def _build(self, in_shape, init_rng):
        if len(in_shape) != 1:
            raise ValueError(f"RepeatVector needs (batch, features) input, got {fmt_shape(in_shape)}")
        return (self.n,) + in_shape

    def forward(self, x, training=False, lengths=None):
        return np.repeat(x[:, None], self.n, axis=1)

    def backward(self, dy):
        return dy.sum(1)

    def get_config(self):
        return {"class": "RepeatVector", "n": self.n}


_MERGE = ("concat", "sum", "mean")


@register
class Recurrent(Layer):
    """An engine RNN/LSTM/GRU on (samples, time, features) arrays.

    return_sequences: all steps (N, T, F) or only the final state of the last layer (N, F),
        which respects ``lengths`` (for the reverse direction: after reading the whole valid part).
    return_state: forward returns ``(out, state)`` (standalone use; not inside Sequential).
    merge_mode: how a bidirectional layer joins its directions: "concat", "sum" or "mean".
    stateful: the final state of each call is the initial state of the next (same batch size)
        until ``reset_states()``; used for streaming and truncated BPTT.
    """

    def __init__(self, layer, return_sequences=True, return_state=False, merge_mode="concat",
                 stateful=False):
        super().__init__()
        if not isinstance(layer, ENGINE_LAYERS):
            raise TypeError(f"Recurrent wraps fastrnn.RNN/LSTM/GRU, got {type(layer).__name__}")
        _checks.one_of(merge_mode, "merge_mode", _MERGE)
        self.layer = layer
        self.return_sequences, self.return_state = bool(return_sequences), bool(return_state)
        self.merge_mode, self.stateful = merge_mode, bool(stateful)
        self.dtype = layer.dtype
        self.params, self.grads = layer.parameters(), layer.grads
        self.carry = False          # set by truncated BPTT and generation
        self.state = None
        self.last_state = None
        self.dstate0 = None
        self._meta = None
        # Set to a dict to record what reaches the engine: "forward" -> (x, hx, lengths) as
        # passed to it, "backward" -> (dy, dstate) (lore.gradient_flow reads them).
        self.engine_io = None

    @property
    def lstm(self):
        return isinstance(self.layer, LSTM)

    @property
    def dirs(self):
        return 2 if self.layer.bidirectional else 1

    @property
    def out_size(self):
        """The size of h per direction: hidden_size, or an LSTM's proj_size."""
        return getattr(self.layer, "proj_size", 0) or self.layer.hidden_size

    @property
    def features(self):
        H = self.out_size
        return H * self.dirs if self.merge_mode == "concat" else H

    def build(self, in_shape, dtype, init_rng, rng):
        self.rng, self.built = rng, True
        in_shape = tuple(in_shape)
        if len(in_shape) != 2 or in_shape[-1] != self.layer.input_size:
            raise ValueError(f"{type(self.layer).__name__}(input_size={self.layer.input_size}) receives "
                             f"input of shape {fmt_shape(in_shape)}; expected (batch, time, "
                             f"{self.layer.input_size})")
        if init_rng is not None:
            reinit_engine(self.layer, init_rng)
        return (in_shape[0], self.features) if self.return_sequences else (self.features,)

    def parameters(self):
        return self.layer.parameters()

    def zero_grad(self):
        self.layer.zero_grad()

    def state_dict(self):
        return self.layer.state_dict()

    def load_state_dict(self, sd):
        self.layer.load_state_dict(sd)

    def reset_states(self):
        self.state = None

    def clear_cache(self):
        self._meta = None

    def _merge(self, a, b):
        return a + b if self.merge_mode == "sum" else 0.5 * (a + b)

    def _unmerge(self, d):
        return d if self.merge_mode == "sum" else 0.5 * d

    def forward(self, x, training=False, lengths=None, initial_state=None):
        out, st = self.forward_state(x, training, lengths, initial_state)
        return (out, st) if self.return_state else out

    def forward_state(self, x, training=False, lengths=None, initial_state=None):
        """(output, final state) of one call: callers that need the state read it here, not
        from ``last_state``, which another thread's call may have replaced meanwhile."""
        eng = self.layer
        if eng.training != training:
            eng.train(training)
        N = x.shape[0]
        hx = initial_state
        if hx is None and (self.stateful or self.carry) and self.state is not None:
            h = self.state[0] if self.lstm else self.state
            if h.shape[1] != N:
                raise ValueError(f"stateful layer holds state for batch size {h.shape[1]} but got "
                                 f"{N} samples; call reset_states() or keep the batch size fixed")
            hx = self.state
        xe = x if eng.batch_first else np.ascontiguousarray(x.transpose(1, 0, 2))
        if self.engine_io is not None:
            self.engine_io["forward"] = (xe, hx, lengths)
        if training:
            y, st = eng(xe, hx, lengths)
        else:
            with no_grad():
                y, st = eng(xe, hx, lengths)
        if not eng.batch_first:
            # (N, T, F) as a view of the engine's time-major output, not a copy: Dense and a
            # Recurrent above work in that order (Dense.forward), and whatever else reads it
            # (losses, Dropout, LastStep) is elementwise or indexes it.
            y = y.transpose(1, 0, 2)
        self.last_state = st
        if self.stateful or self.carry:
            self.state = st
        if training:
            self._meta = (N, x.shape[1])
        H, dirs = self.out_size, self.dirs
        if self.return_sequences:
            out = y if dirs == 1 or self.merge_mode == "concat" else self._merge(y[..., :H], y[..., H:])
        else:
            h = st[0] if self.lstm else st
            if dirs == 1:
                out = h[-1]
            elif self.merge_mode == "concat":
                out = np.concatenate([h[-2], h[-1]], axis=-1)
            else:
                out = self._merge(h[-2], h[-1])
        return out, st

    def backward(self, dy, dstate=None):
        """Gradient w.r.t. the input; the initial-state gradient is left in ``dstate0``
        (dropped by truncated BPTT, used by Seq2Seq to reach the encoder)."""
        if self._meta is None:
            raise RuntimeError("backward() needs a preceding training-mode forward()")
        N, T = self._meta
        eng, H, dirs = self.layer, self.out_size, self.dirs
        S = (eng.num_layers * dirs, N, H)
        dseq, dh = None, None
        if dy is not None and self.return_sequences:
            dseq = dy if dirs == 1 or self.merge_mode == "concat" else np.concatenate([self._unmerge(dy)] * 2, -1)
            if not eng.batch_first:
                dseq = np.ascontiguousarray(dseq.transpose(1, 0, 2))
        elif dy is not None:
            dh = np.zeros(S, eng.dtype)
            if dirs == 1:
                dh[-1] = dy
            elif self.merge_mode == "concat":
                dh[-2], dh[-1] = dy[:, :H], dy[:, H:]
            else:
                dh[-2] = dh[-1] = self._unmerge(dy)
        if dstate is not None:
            dsh, dsc = dstate if self.lstm else (dstate, None)
            dh = dsh if dh is None else dh + dsh
        else:
            dsc = None
        dst = (dh, dsc) if self.lstm else dh
        if self.engine_io is not None:
            self.engine_io["backward"] = (None if dseq is None else np.array(dseq), dst)
        dx, d0 = eng.backward(dseq, dst)
        if not eng.batch_first:
            dx = dx.transpose(1, 0, 2)  # a view, as the forward's output (a Recurrent below takes it as is)
        self.dstate0 = d0
        return dx

    def get_config(self):
        return {"class": "Recurrent", "layer": engine_config(self.layer),
                "return_sequences": self.return_sequences, "return_state": self.return_state,
                "merge_mode": self.merge_mode, "stateful": self.stateful}

    @classmethod
    def from_config(cls, cfg):
        args = init_args(cfg)
        return cls(make_engine(args.pop("layer")), **args)

    def __repr__(self):
        return (f"Recurrent({self.layer!r}, return_sequences={self.return_sequences}, "
                f"merge_mode={self.merge_mode!r}, stateful={self.stateful})")


def layer_from_config(cfg):
    """The layer of a ``get_config()`` dict, by its registered class name."""
    cls = get_class(cfg["class"], "layer class")
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise ValueError(f"{cfg['class']!r} in a saved config is not a layer class")
    return cls.from_config(cfg)
