"""Layers around the recurrent engine and the ``Sequential`` model.

High-level arrays are (samples, time, features), as in Keras.  Every layer here has
``forward(x, training, lengths)`` / ``backward(dy)``; training-mode forwards push their
cache on a stack and each backward pops the most recent one, so a layer can be used
once per sequence (Sequential) or once per step in a hand-written loop (decoders).
"""
import numpy as np

from .layers import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, no_grad
from .training import Model

__all__ = ["Layer", "Dense", "Dropout", "Embedding", "LastStep", "RepeatVector", "Recurrent",
           "Sequential"]

ENGINE_LAYERS = (RNN, LSTM, GRU)
ENGINE_CELLS = (RNNCell, LSTMCell, GRUCell)


def _int(v):
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


def _fmt_shape(shape):
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
    return cfg


def make_engine(cfg, seed=None):
    cfg = dict(cfg)
    cls = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU, "RNNCell": RNNCell, "LSTMCell": LSTMCell,
           "GRUCell": GRUCell}[cfg.pop("class")]
    cfg["dtype"] = np.dtype(cfg["dtype"])
    return cls(seed=seed, **cfg)


def _reinit_engine(module, rng):
    """Re-draw an engine module's weights U(-1/sqrt(H), 1/sqrt(H)) from ``rng`` and reseed its
    dropout stream, so a model-level seed makes the whole model reproducible."""
    k = 1.0 / np.sqrt(module.hidden_size)
    for p in module.parameters().values():
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
        for k, p in self.params.items():
            p[...] = sd[k]

    def clear_cache(self):
        self._stack.clear()

    def reset_states(self):
        pass

    def _add(self, name, value):
        self.params[name] = np.ascontiguousarray(value, dtype=self.dtype)
        self.grads[name] = np.zeros_like(self.params[name])

    def get_config(self):
        return {"class": type(self).__name__}

    def __repr__(self):
        cfg = {k: v for k, v in self.get_config().items() if k != "class"}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in cfg.items())})"

    def __call__(self, x, training=False, lengths=None):
        return self.forward(x, training=training, lengths=lengths)


_ACTIVATIONS = (None, "linear", "relu", "tanh", "sigmoid")


class Dense(Layer):
    """Affine map ``act(x @ W.T + b)`` on the last axis, so on sequences it applies per step.
    ``weight`` (units, in_features) and ``bias`` (units,) as in ``torch.nn.Linear``."""

    def __init__(self, units, activation=None, in_features=None, use_bias=True):
        super().__init__()
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        self.units, self.activation = int(units), activation
        self.in_features, self.use_bias = in_features, bool(use_bias)

    def _build(self, in_shape, init_rng):
        if not in_shape or in_shape[-1] is None:
            raise ValueError(f"Dense needs a known feature axis, got input shape {_fmt_shape(in_shape)}")
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
        if training:
            self._stack.append((x, z))
        return z

    def backward(self, dy):
        x, out = self._stack.pop()
        a = self.activation
        if a == "relu":
            dy = dy * (out > 0)
        elif a == "tanh":
            dy = dy * (1 - out * out)
        elif a == "sigmoid":
            dy = dy * out * (1 - out)
        d2, x2 = dy.reshape(-1, self.units), x.reshape(-1, x.shape[-1])
        self.grads["weight"] += d2.T @ x2
        if self.use_bias:
            self.grads["bias"] += d2.sum(0)
        return (d2 @ self.params["weight"]).reshape(x.shape)

    def get_config(self):
        return {"class": "Dense", "units": self.units, "activation": self.activation,
                "in_features": self.in_features, "use_bias": self.use_bias}

    def __repr__(self):
        extra = ("" if self.activation in (None, "linear") else f", activation={self.activation!r}") + \
                ("" if self.use_bias else ", use_bias=False")
        return f"Dense({self.units}{extra})"


class Dropout(Layer):
    """Inverted dropout (training only); masks come from the model's random generator."""

    def __init__(self, rate):
        super().__init__()
        if not 0 <= rate < 1:
            raise ValueError(f"rate must be in [0, 1), got {rate}")
        self.rate = float(rate)

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


class Embedding(Layer):
    """Token ids -> vectors; ``weight`` (vocab_size, dim) as in ``torch.nn.Embedding``."""

    def __init__(self, vocab_size, dim):
        super().__init__()
        for n, v in (("vocab_size", vocab_size), ("dim", dim)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{n} must be a positive integer, got {v!r}")
        self.vocab_size, self.dim = int(vocab_size), int(dim)

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


class LastStep(Layer):
    """(N, T, F) -> (N, F): each sequence's last valid step (``lengths``) or step T-1.

    For a bidirectional layer prefer ``Recurrent(..., return_sequences=False)``: at the last
    step the backward direction has read only that one step."""

    def _build(self, in_shape, init_rng):
        if len(in_shape) != 2:
            raise ValueError(f"LastStep needs (batch, time, features) input, got {_fmt_shape(in_shape)}")
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


class RepeatVector(Layer):
    """(N, F) -> (N, n, F): feeds one vector to every step (one-to-many models)."""

    def __init__(self, n):
        super().__init__()
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        self.n = int(n)

    def _build(self, in_shape, init_rng):
        if len(in_shape) != 1:
            raise ValueError(f"RepeatVector needs (batch, features) input, got {_fmt_shape(in_shape)}")
        return (self.n,) + in_shape

    def forward(self, x, training=False, lengths=None):
        return np.repeat(x[:, None], self.n, axis=1)

    def backward(self, dy):
        return dy.sum(1)

    def get_config(self):
        return {"class": "RepeatVector", "n": self.n}


_MERGE = ("concat", "sum", "mean")


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
        if merge_mode not in _MERGE:
            raise ValueError(f"merge_mode must be one of {_MERGE}, got {merge_mode!r}")
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

    @property
    def lstm(self):
        return isinstance(self.layer, LSTM)

    @property
    def dirs(self):
        return 2 if self.layer.bidirectional else 1

    @property
    def features(self):
        H = self.layer.hidden_size
        return H * self.dirs if self.merge_mode == "concat" else H

    def build(self, in_shape, dtype, init_rng, rng):
        self.rng, self.built = rng, True
        in_shape = tuple(in_shape)
        if len(in_shape) != 2 or in_shape[-1] != self.layer.input_size:
            raise ValueError(f"{type(self.layer).__name__}(input_size={self.layer.input_size}) receives "
                             f"input of shape {_fmt_shape(in_shape)}; expected (batch, time, "
                             f"{self.layer.input_size})")
        if init_rng is not None:
            _reinit_engine(self.layer, init_rng)
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
        if training:
            y, st = eng(xe, hx, lengths)
        else:
            with no_grad():
                y, st = eng(xe, hx, lengths)
        if not eng.batch_first:
            y = np.ascontiguousarray(y.transpose(1, 0, 2))
        self.last_state = st
        if self.stateful or self.carry:
            self.state = st
        if training:
            self._meta = (N, x.shape[1])
        H, dirs = eng.hidden_size, self.dirs
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
        return (out, st) if self.return_state else out

    def backward(self, dy, dstate=None):
        """Gradient w.r.t. the input; the initial-state gradient is left in ``dstate0``
        (dropped by truncated BPTT, used by Seq2Seq to reach the encoder)."""
        if self._meta is None:
            raise RuntimeError("backward() needs a preceding training-mode forward()")
        N, T = self._meta
        eng, H, dirs = self.layer, self.layer.hidden_size, self.dirs
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
        dx, d0 = eng.backward(dseq, (dh, dsc) if self.lstm else dh)
        if not eng.batch_first:
            dx = np.ascontiguousarray(dx.transpose(1, 0, 2))
        self.dstate0 = d0
        return dx

    def get_config(self):
        return {"class": "Recurrent", "layer": engine_config(self.layer),
                "return_sequences": self.return_sequences, "return_state": self.return_state,
                "merge_mode": self.merge_mode, "stateful": self.stateful}

    def __repr__(self):
        return (f"Recurrent({self.layer!r}, return_sequences={self.return_sequences}, "
                f"merge_mode={self.merge_mode!r}, stateful={self.stateful})")


def _short(l):
    if isinstance(l, Recurrent):
        e = l.layer
        extra = [f"num_layers={e.num_layers}"] if e.num_layers > 1 else []
        if e.bidirectional:
            extra.append(f"bidirectional, merge={l.merge_mode}")
        if not l.return_sequences:
            extra.append("last state")
        if l.stateful:
            extra.append("stateful")
        if getattr(e, "leak", 1.0) != 1.0:
            extra.append(f"leak={e.leak}")
        return f"{type(e).__name__}({e.input_size}->{e.hidden_size}{''.join(', ' + x for x in extra)})"
    return repr(l)


_LAYER_CLASSES = {c.__name__: c for c in (Dense, Dropout, Embedding, LastStep, RepeatVector)}


def layer_from_config(cfg):
    cfg = dict(cfg)
    name = cfg.pop("class")
    if name == "Recurrent":
        return Recurrent(make_engine(cfg.pop("layer")), **cfg)
    if name not in _LAYER_CLASSES:
        raise ValueError(f"unknown layer class {name!r} in saved config")
    return _LAYER_CLASSES[name](**cfg)


# ----------------------------------------------------------------------------- Sequential
class Sequential(Model):
    """A stack of layers, Keras style, on (samples, time, features) arrays.

    Engine layers (``fr.LSTM(...)`` etc.) may be given directly: they are wrapped in
    ``Recurrent(layer)`` and return all steps; follow them with ``LastStep()`` (or wrap them
    with ``return_sequences=False``) for many-to-one models.

    seed: reproducible initialisation of every layer -- recurrent layers' own initial weights
        are redrawn from it -- and of shuffling, dropout and sampling during training.
    input_shape: per-sample input shape, e.g. ``(None, 3)``; only needed when the first layer
        does not determine it (a recurrent layer or an Embedding does).
    """

    supports_tbptt = True

    def __init__(self, layers, seed=None, input_shape=None, dtype=None):
        super().__init__(seed)
        if isinstance(layers, (Layer,) + ENGINE_LAYERS):
            layers = [layers]
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        wrapped = []
        for i, l in enumerate(layers):
            if isinstance(l, ENGINE_LAYERS):
                l = Recurrent(l)
            if isinstance(l, ENGINE_CELLS):
                raise TypeError(f"layer {i} is a cell ({type(l).__name__}); cells step through a "
                                "sequence by hand -- use fr.Decoder for step-wise models")
            if not isinstance(l, Layer):
                raise TypeError(f"layer {i} must be a fastrnn layer, got {type(l).__name__}")
            if isinstance(l, Recurrent) and l.return_state:
                raise ValueError(f"layer {i}: return_state=True is for standalone use; inside "
                                 "Sequential use return_sequences to choose the output")
            wrapped.append(l)
        self.layers = wrapped
        dts = {np.dtype(l.layer.dtype) for l in wrapped if isinstance(l, Recurrent)}
        if len(dts) > 1:
            raise ValueError(f"recurrent layers mix dtypes {sorted(d.name for d in dts)}")
        if dtype is not None and dts and np.dtype(dtype) not in dts:
            raise ValueError(f"dtype={np.dtype(dtype).name} but the recurrent layers use {dts.pop().name}")
        self.dtype = dts.pop() if dts else np.dtype(dtype or np.float32)
        first = wrapped[0]
        if input_shape is None:
            if isinstance(first, Recurrent):
                input_shape = (None, first.layer.input_size)
            elif isinstance(first, Embedding):
                input_shape = (None,)
        self.input_shape = None
        if input_shape is not None:
            self._build(tuple(None if s is None else int(s) for s in input_shape))

    def _build(self, input_shape):
        self.input_shape = input_shape
        shape = input_shape
        init = self._init_rng()
        self.shapes = []
        for i, l in enumerate(self.layers):
            # Without a model seed, recurrent layers keep their own (engine-seeded) weights.
            li = None if self.seed is None and isinstance(l, Recurrent) else init
            try:
                shape = l.build(shape, self.dtype, li, self.rng)
            except ValueError as e:
                raise ValueError(f"layer {i} ({type(l).__name__}): {e}") from None
            self.shapes.append(shape)
        self.output_shape = shape
        self.built = True

    @property
    def output_has_time(self):
        return self.output_shape[0] is None or len(self.output_shape) >= 2

    @property
    def token_input(self):
        return isinstance(self.layers[0], Embedding)

    def _modules(self):
        return [(str(i), l) for i, l in enumerate(self.layers)]

    def _check_X(self, X, name="X"):
        if not self.built:
            X = np.asarray(X)
            if X.ndim < 2:
                raise ValueError(f"{name} must have a samples axis and feature axes, got shape {X.shape}")
            # A 3-D X is (samples, time, features); the time axis stays free.
            self._build((None,) + X.shape[2:] if X.ndim == 3 else X.shape[1:])
        if self.token_input:
            X = self.layers[0].check_tokens(X, name)
            want = len(self.input_shape) + 1
        else:
            X = np.asarray(X)
            if X.dtype.kind not in "fiub":
                raise TypeError(f"{name} must be numeric, got dtype {X.dtype}")
            X = np.ascontiguousarray(X, dtype=self.dtype)
            want = len(self.input_shape) + 1
        if X.ndim != want:
            raise ValueError(f"{name} must be {want}-D {_fmt_shape(self.input_shape)}, got shape {X.shape}")
        for ax, (s, e) in enumerate(zip(X.shape[1:], self.input_shape), 1):
            if e is not None and s != e:
                raise ValueError(f"{name} has shape {X.shape}; the model expects "
                                 f"{_fmt_shape(self.input_shape)}")
        return X

    def _forward(self, X, lengths=None, training=False, y=None):
        out = X
        for l in self.layers:
            out = l.forward(out, training=training, lengths=lengths)
            if isinstance(l, LastStep) or (isinstance(l, Recurrent) and not l.return_sequences):
                lengths = None
        return out

    def _backward(self, dout):
        d = dout
        for l in reversed(self.layers):
            d = l.backward(d)
            if d is None:
                break

    def _clear_caches(self):
        for l in self.layers:
            l.clear_cache()

    def reset_states(self):
        for l in self.layers:
            l.reset_states()

    def _recurrents(self):
        return [l for l in self.layers if isinstance(l, Recurrent)]

    def generate(self, X, steps, lengths=None, feedback=None, sample=False, temperature=1.0):
        """Autoregressive forecast: read the context X, then feed each prediction back as the
        next input for ``steps`` predictions in all (the first comes from the context).

        Real-valued models need output features == input features, or ``feedback`` mapping an
        output (N, F_out) to the next input (N, F_in); returns (N, steps, F_out).
        Token models (Embedding first, logits out) feed back the argmax, or a draw from
        softmax(logits / temperature) with ``sample=True``; returns token ids (N, steps).
        With ``lengths`` each context's own last valid step is where its forecast starts.
        """
        if not (_int(steps) and steps > 0):
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        X, _, lengths, _ = self._prepare(X, None, lengths)
        if not self.output_has_time or any(not r.return_sequences for r in self._recurrents()):
            raise ValueError("generate() needs a per-step model (every recurrent layer returning "
                             "sequences, no LastStep): each step's output predicts the next input")
        tokens = self.token_input
        if not tokens and feedback is None and self.output_shape[-1] != self.input_shape[-1]:
            raise ValueError(f"the model outputs {self.output_shape[-1]} features per step but reads "
                             f"{self.input_shape[-1]}; pass feedback= to map outputs to inputs")
        N = len(X)
        recs = self._recurrents()
        for r in recs:
            r.carry = True
        self.reset_states()
        try:
            out = self._forward(X, lengths, False)
            last = np.full(N, X.shape[1] - 1) if lengths is None else lengths - 1
            cur = out[np.arange(N), last]
            preds = []
            for s in range(steps):
                if tokens:
                    if sample:
                        z = cur / temperature
                        p = np.exp(z - z.max(-1, keepdims=True))
                        p /= p.sum(-1, keepdims=True)
                        u = self.rng.random((N, 1))
                        nxt = np.minimum((p.cumsum(-1) < u).sum(-1), p.shape[-1] - 1)
                    else:
                        nxt = cur.argmax(-1)
                    preds.append(nxt)
                    inp = nxt[:, None]
                else:
                    preds.append(cur)
                    nxt = cur if feedback is None else np.asarray(feedback(cur), dtype=self.dtype)
                    inp = nxt[:, None]
                if s < steps - 1:
                    cur = self._forward(inp, None, False)[:, 0]
        finally:
            for r in recs:
                r.carry = False
            self.reset_states()
        return np.stack(preds, 1)

    def _engines(self):
        return [l.layer for l in self._recurrents()]

    def get_config(self):
        return {"class": "Sequential", "layers": [l.get_config() for l in self.layers],
                "input_shape": None if self.input_shape is None else list(self.input_shape),
                "dtype": self.dtype.name, "seed": self.seed}

    @classmethod
    def from_config(cls, cfg):
        shape = cfg.get("input_shape")
        # Weights are loaded afterwards, so construct without redrawing anything.
        m = cls([layer_from_config(c) for c in cfg["layers"]], seed=None,
                input_shape=None if shape is None else tuple(shape), dtype=cfg["dtype"])
        m.seed = cfg.get("seed")
        return m

    def __repr__(self):
        return "Sequential([" + ", ".join(_short(l) for l in self.layers) + "])"

    def summary(self, print_fn=print):
        """Layers, output shapes and parameter counts; printed and returned."""
        if not self.built:
            raise ValueError("model is not built yet: give input_shape= or call it on data first")
        rows = [("#", "Layer", "Output shape", "Params")]
        total = 0
        for i, (l, s) in enumerate(zip(self.layers, self.shapes)):
            n = sum(p.size for p in l.parameters().values())
            total += n
            name = _short(l)
            rows.append((str(i), name, _fmt_shape(s), f"{n:,}"))
        w = [max(len(r[j]) for r in rows) for j in range(4)]
        line = "-" * (sum(w) + 6)
        out = [f"Sequential (input {_fmt_shape(self.input_shape)}, dtype {self.dtype.name})", line]
        for k, r in enumerate(rows):
            out.append("  ".join(c.ljust(w[j]) if j < 3 else c.rjust(w[j]) for j, c in enumerate(r)))
            if k == 0:
                out.append(line)
        out += [line, f"Total params: {total:,}"]
        text = "\n".join(out)
        if print_fn is not None:
            print_fn(text)
        return text
