"""``Sequential``: a stack of layers (train/layers.py), Keras style."""
import numpy as np

from .. import _checks
from . import onnx as _onnx
from .layers import ENGINE_CELLS, ENGINE_LAYERS, Embedding, LastStep, Layer, Recurrent, fmt_shape, layer_from_config
from .model import Model
from .registry import register

__all__ = ["Sequential"]


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


@register
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
        seen = {}
        for i, l in enumerate(wrapped):
            for obj in (l, getattr(l, "layer", None)) if isinstance(l, Recurrent) else (l,):
                j = seen.setdefault(id(obj), i)
                if j != i:
                    raise ValueError(f"layers {j} and {i} are the same {type(obj).__name__} object; "
                                     "weight sharing is not supported (backward would give wrong "
                                     "gradients): create a separate layer for each position")
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
            X = np.ascontiguousarray(_checks.numeric_array(X, name), dtype=self.dtype)
            want = len(self.input_shape) + 1
        if X.ndim != want:
            raise ValueError(f"{name} must be {want}-D {fmt_shape(self.input_shape)}, got shape {X.shape}")
        for ax, (s, e) in enumerate(zip(X.shape[1:], self.input_shape), 1):
            if e is not None and s != e:
                raise ValueError(f"{name} has shape {X.shape}; the model expects "
                                 f"{fmt_shape(self.input_shape)}")
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
        _checks.count(steps, "steps")
        _checks.positive(temperature, "temperature")
        X, _, lengths, _ = self._prepare(X, None, lengths)
        if not self.output_has_time or any(not r.return_sequences for r in self._recurrents()):
            raise ValueError("generate() needs a per-step model (every recurrent layer returning "
                             "sequences, no LastStep): each step's output predicts the next input")
        tokens = self.token_input
        if not tokens and feedback is None and self.output_shape[-1] != self.input_shape[-1]:
            raise ValueError(f"the model outputs {self.output_shape[-1]} features per step but reads "
                             f"{self.input_shape[-1]}; pass feedback= to map outputs to inputs")
        N = len(X)
        with self._carrying_state():
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

    def to_onnx(self, path=None, lengths=False):
        """Write the model as an ONNX file and return the ModelProto; ``lengths=True`` adds an
        int32 ``lengths`` input. Needs ``pip install "fastrnn[onnx]"``; see
        ``fastrnn.train.onnx.to_onnx`` for the inputs, outputs and exported layers."""
        return _onnx.to_onnx(self, path, lengths)

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
            rows.append((str(i), name, fmt_shape(s), f"{n:,}"))
        w = [max(len(r[j]) for r in rows) for j in range(4)]
        line = "-" * (sum(w) + 6)
        out = [f"Sequential (input {fmt_shape(self.input_shape)}, dtype {self.dtype.name})", line]
        for k, r in enumerate(rows):
            out.append("  ".join(c.ljust(w[j]) if j < 3 else c.rjust(w[j]) for j, c in enumerate(r)))
            if k == 0:
                out.append(line)
        out += [line, f"Total params: {total:,}"]
        text = "\n".join(out)
        if print_fn is not None:
            print_fn(text)
        return text
