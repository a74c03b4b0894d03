"""Autoregressive decoders with teacher forcing / scheduled sampling, and seq2seq.

Scheduled sampling (Bengio et al., 2015): while training, the input of decoder step t is
the ground truth y[t-1] with probability p and the model's own previous output otherwise,
drawn independently per sample and step; p decays over training following a schedule.
For real-valued outputs the fed-back prediction stays differentiable, so gradients flow
through it (the exact gradient of the loss as computed); fed-back tokens (argmax or a
sample) are piecewise constant and pass no gradient.
"""
import math
import threading

import numpy as np

from .. import _checks
from .._numpy_blas import numpy_blas_single_threaded
from ..layers import LSTM, GRUCell, LSTMCell, RNNCell
from .layers import ENGINE_LAYERS, Dense, Embedding, Recurrent, engine_config, make_engine, reinit_engine
from .model import Model
from .registry import init_args, register

__all__ = ["TeacherForcing", "Decoder", "Seq2Seq"]


class TeacherForcing:
    """Probability of feeding the ground truth, as a function of the epoch (``unit="epoch"``)
    or of the training batch count (``unit="step"``):

    constant:         p
    linear:           max(min_p, p - c * i)
    exponential:      max(min_p, p * k ** i)          (0 < k < 1)
    inverse_sigmoid:  k / (k + exp(i / k))            (k >= 1)
    """

    SCHEDULES = ("constant", "linear", "exponential", "inverse_sigmoid")

    def __init__(self, schedule="constant", p=1.0, k=None, c=None, min_p=0.0, unit="epoch"):
        _checks.one_of(schedule, "schedule", self.SCHEDULES)
        _checks.one_of(unit, "unit", ("epoch", "step"))
        if not 0 <= p <= 1 or not 0 <= min_p <= 1:
            raise ValueError("p and min_p must be probabilities in [0, 1]")
        if schedule == "linear" and not (c is not None and c > 0):
            raise ValueError("the linear schedule needs a decrement c > 0")
        if schedule == "exponential" and not (k is not None and 0 < k < 1):
            raise ValueError("the exponential schedule needs 0 < k < 1")
        if schedule == "inverse_sigmoid" and not (k is not None and k >= 1):
            raise ValueError("the inverse_sigmoid schedule needs k >= 1")
        self.schedule, self.p, self.k, self.c, self.min_p, self.unit = schedule, float(p), k, c, float(min_p), unit

    def __call__(self, i):
        s = self.schedule
        if s == "constant":
            return self.p
        if s == "linear":
            return max(self.min_p, self.p - self.c * i)
        if s == "exponential":
            return max(self.min_p, self.p * self.k ** i)
        return self.k / (self.k + math.exp(min(i / self.k, 700.0)))

    def get_config(self):
        return {"schedule": self.schedule, "p": self.p, "k": self.k, "c": self.c,
                "min_p": self.min_p, "unit": self.unit}

    def __repr__(self):
        return "TeacherForcing(" + ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()) + ")"


def _as_teacher_forcing(tf):
    if isinstance(tf, TeacherForcing):
        return tf
    if isinstance(tf, dict):
        return TeacherForcing(**tf)
    if isinstance(tf, (int, float)) and not isinstance(tf, bool):
        return TeacherForcing("constant", p=float(tf))
    raise TypeError(f"teacher_forcing must be a probability or a TeacherForcing, got {tf!r}")


_CELLS = {"RNN": RNNCell, "LSTM": LSTMCell, "GRU": GRUCell}


@register
class Decoder(Model):
    """An autoregressive decoder: stacked cells and a Dense head, one step at a time.

    Real-valued mode (``vocab_size=None``): inputs and outputs have ``output_size`` features
        and each output is fed back as the next input.
    Token mode (``vocab_size=V``): inputs are token ids (embedded to ``embedding_dim``), the
        head gives V logits, and the fed-back token is the argmax (``sampling="greedy"``) or
        a draw from the softmax (``sampling="sample"``).

    As a standalone model, ``fit(X, y)`` takes a primer X (N, P, output_size) -- or (N, P)
    tokens -- that is read with ground truth, and targets y (N, T_out, ...) for the T_out
    steps after it; the first prediction is made at the primer's last step.  Between target
    steps the input is chosen by ``teacher_forcing`` (a probability or a TeacherForcing
    schedule).  ``predict(X, steps)`` generates greedily (or by sampling).
    """

    def __init__(self, cell="LSTM", hidden_size=32, output_size=1, num_layers=1, vocab_size=None,
                 embedding_dim=16, teacher_forcing=1.0, sampling="greedy", nonlinearity="tanh",
                 dtype=np.float32, seed=None, zoneout=0.0, peepholes=False, layer_norm=False):
        super().__init__(seed)
        cell_class = _checks.lookup(_CELLS, cell, "cell")
        if peepholes and cell != "LSTM":
            raise ValueError(f"peepholes need a cell state: an LSTM option, not {cell}'s")
        hidden_size, output_size = _checks.count(hidden_size, "hidden_size"), _checks.count(output_size, "output_size")
        num_layers = _checks.count(num_layers, "num_layers")
        _checks.one_of(sampling, "sampling", ("greedy", "sample"))
        self.cell_type, self.hidden_size, self.num_layers = cell, hidden_size, num_layers
        self.vocab_size = None if vocab_size is None else int(vocab_size)
        self.output_size = self.vocab_size if self.vocab_size else int(output_size)
        self.embedding_dim = int(embedding_dim) if self.vocab_size else None
        self.teacher_forcing = _as_teacher_forcing(teacher_forcing)
        self.sampling, self.nonlinearity, self.dtype = sampling, nonlinearity, np.dtype(dtype)
        self.embedding = Embedding(self.vocab_size, self.embedding_dim) if self.vocab_size else None
        d_in = self.embedding_dim if self.vocab_size else self.output_size
        kw = {"nonlinearity": nonlinearity} if cell == "RNN" else {}
        if peepholes:
            kw["peepholes"] = True
        # the cells check zoneout, peepholes and layer_norm (ValueError / TypeError)
        self.cells = [cell_class(d_in if l == 0 else self.hidden_size, self.hidden_size,
                                   dtype=self.dtype, zoneout=zoneout, layer_norm=layer_norm, **kw)
                      for l in range(self.num_layers)]
        self.zoneout, self.peepholes = self.cells[0].zoneout, self.cells[0].peepholes
        self.layer_norm = self.cells[0].layer_norm
        self.head = Dense(self.output_size)
        self._init_params(self._init_rng())
        self.output_steps = None
        self._record_tokens = None
        self.built = True

    def _init_params(self, init):
        """(Re)draw every weight from the generator ``init``."""
        if self.embedding:
            self.embedding.build((), self.dtype, init, self.rng)
        for c in self.cells:
            reinit_engine(c, init)
        self.head.build((self.hidden_size,), self.dtype, init, self.rng)

    @property
    def lstm(self):
        return self.cell_type == "LSTM"

    @property
    def tokens(self):
        return self.vocab_size is not None

    output_has_time = True

    def _modules(self):
        mods = [("embedding", self.embedding)] if self.embedding else []
        mods += [(f"cell{l}", c) for l, c in enumerate(self.cells)]
        return mods + [("head", self.head)]

    def _clear_caches(self):
        for c in self.cells:
            c.reset_tape()
        self.head.clear_cache()
        if self.embedding:
            self.embedding.clear_cache()

    def _check_X(self, X, name="X"):
        if self.tokens:
            X = self.embedding.check_tokens(X, name)
            if X.ndim != 2:
                raise ValueError(f"{name} must be (samples, steps) token ids, got shape {X.shape}")
            return X
        return _checks.check_sequences(X, name, self.output_size, self.dtype)

    def _output_shape(self, X, y):
        T = np.shape(y)[1] if y is not None and np.ndim(y) > 1 else self._steps()
        if T is None:
            raise ValueError("number of output steps unknown: pass y or steps")
        return (len(X), T, self.output_size)

    def _check_targets(self, y, yname):
        if y is None:
            return
        y = np.asarray(y)
        want = 2 if self.tokens else 3
        if y.ndim != want:
            raise ValueError(f"{yname} must be {'(samples, steps) token ids' if self.tokens else '(samples, steps, features)'}, got shape {y.shape}")
        if self.tokens:
            self.embedding.check_tokens(y, yname)

    def _prepare(self, X, y=None, lengths=None, sample_weight=None, name="X", yname="y"):
        if lengths is not None:
            raise ValueError("lengths is not supported for Decoder primers; use equal-length primers "
                             "(Seq2Seq takes lengths for its sources)")
        self._check_targets(y, yname)
        return super()._prepare(X, y, lengths, sample_weight, name, yname)

    def _p_truth(self):
        tf = self.teacher_forcing
        return tf(self.epoch if tf.unit == "epoch" else self.step)

    def _steps(self):
        """Output steps of this thread's predict (``steps=``), else those seen in training."""
        return getattr(_PREDICT_STEPS, "steps", {}).get(id(self), self.output_steps)

    def _forward(self, X, lengths=None, training=False, y=None):
        if lengths is not None:
            raise ValueError("Decoder primers have no lengths; use equal-length primers")
        T = y.shape[1] if y is not None else self._steps()
        if training:
            self.output_steps = T
        return self._run(X, None, T, y if training else None,
                         self._p_truth() if training else 0.0, training, self.rng)

    def _feed(self, out, rng):
        """The next input made from an output: itself, or a token id."""
        if not self.tokens:
            return out
        if self.sampling == "greedy":
            return out.argmax(-1)
        z = out - out.max(-1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(-1, keepdims=True)
        u = rng.random((len(p), 1))
        return np.minimum((p.cumsum(-1) < u).sum(-1), self.vocab_size - 1)

    def _run(self, primer, init_state, T_out, targets, p_truth, training, rng):
        """Primer steps (ground truth), then T_out - 1 further steps whose inputs mix targets
        and fed-back predictions; returns outputs (N, T_out, output_size)."""
        _checks.count(T_out, "steps")
        N, P = primer.shape[0], primer.shape[1]
        for c in self.cells:
            if c.training != training:
                c.train(training)
        states = list(init_state) if init_state is not None else [None] * self.num_layers
        use_truth = None
        if targets is not None and not self.tokens:
            targets = np.asarray(targets, dtype=self.dtype)     # fed as inputs to the cells
        if targets is not None and T_out > 1:
            use_truth = rng.random((N, T_out - 1)) < p_truth
        outs, fed = [], None
        for step in range(P + T_out - 1):
            if step < P:
                inp = primer[:, step]
            else:
                j = step - P          # index of the previous output feeding this step
                inp = fed
                if use_truth is not None:
                    m = use_truth[:, j]
                    inp = np.where(m if self.tokens else m[:, None], targets[:, j], fed)
            if self.tokens:
                inp = self.embedding.forward(inp, training)
            for l, cell in enumerate(self.cells):
                states[l] = cell(inp, states[l])
                inp = states[l][0] if self.lstm else states[l]
            if step >= P - 1:
                out = self.head.forward(inp, training)
                outs.append(out)
                fed = self._feed(out, rng)
                if self._record_tokens is not None and self.tokens:
                    self._record_tokens.append(fed)
        if training:
            self._tape = (N, P, T_out, use_truth)
        self.final_state = states
        return np.stack(outs, 1)

    def _backward(self, dout):
        self._backward_state(dout)

    def _backward_state(self, dout):
        """Backprop through the last training run; returns per-layer initial-state gradients."""
        N, P, T_out, use_truth = self._tape
        dstate = [(None, None) if self.lstm else None for _ in self.cells]
        dfeed = np.zeros_like(dout)
        for step in range(P + T_out - 2, -1, -1):
            d = None
            if step >= P - 1:
                j = step - P + 1
                d = self.head.backward(dout[:, j] + dfeed[:, j])
            for l in range(self.num_layers - 1, -1, -1):
                cell = self.cells[l]
                if self.lstm:
                    dh, dc = dstate[l]
                    if d is not None:
                        dh = d if dh is None else dh + d
                    d, dstate[l] = cell.backward((dh, dc))
                else:
                    dh = dstate[l]
                    if d is not None:
                        dh = d if dh is None else dh + d
                    d, dstate[l] = cell.backward(dh)
            if self.tokens:
                self.embedding.backward(d)
            elif step >= P:
                j = step - P
                dfeed[:, j] += d if use_truth is None else d * (~use_truth[:, j])[:, None]
        return dstate

    @numpy_blas_single_threaded
    def predict(self, X, steps=None, batch_size=256, lengths=None):
        """Outputs for ``steps`` generated steps (default: as many as in training), in eval
        mode without teacher forcing; logits in token mode."""
        return _predict_steps(self, self, X, steps, batch_size, lengths)

    @numpy_blas_single_threaded
    def generate(self, X, steps, lengths=None):
        """The generated sequence: values, or the fed-back token ids in token mode."""
        return _generate(self, self, X, steps, lengths)

    def get_config(self):
        return {"class": "Decoder", "cell": self.cell_type, "hidden_size": self.hidden_size,
                "output_size": self.output_size, "num_layers": self.num_layers,
                "vocab_size": self.vocab_size, "embedding_dim": self.embedding_dim or 16,
                "teacher_forcing": self.teacher_forcing.get_config(), "sampling": self.sampling,
                "nonlinearity": self.nonlinearity, "dtype": self.dtype.name, "seed": self.seed,
                "output_steps": self.output_steps,
                **({"zoneout": self.zoneout} if self.zoneout else {}),
                **({"peepholes": True} if self.peepholes else {}),
                **({"layer_norm": True} if self.layer_norm else {})}

    @classmethod
    def from_config(cls, cfg):
        args = init_args(cfg)
        steps = args.pop("output_steps", None)
        m = cls(**args)
        m.output_steps = steps
        return m

    def summary(self, print_fn=print):
        lines = [f"Decoder({self.cell_type}, hidden {self.hidden_size} x {self.num_layers} layers, "
                 f"{'vocab ' + str(self.vocab_size) if self.tokens else str(self.output_size) + ' features'}, "
                 f"{self.teacher_forcing!r})"]
        shapes = {"embedding": f"(batch, {self.embedding_dim})", "head": f"(batch, {self.output_size})"}
        for p, m in self._modules():
            shape = shapes.get(p, f"(batch, {self.hidden_size})")
            lines.append(f"  {p:<10} {shape:<16} {sum(a.size for a in m.parameters().values()):>10,} params")
        lines.append(f"  output     (batch, steps, {self.output_size}), one step at a time")
        lines.append(f"Total params: {self.count_params():,}")
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text


_PREDICT_STEPS = threading.local()  # .steps: id(decoder) -> steps of this thread's predict


def _predict_steps(model, dec, X, steps, batch_size, lengths):
    if steps is not None:
        _checks.count(steps, "steps")
    if steps is None and dec.output_steps is None:
        raise ValueError("steps must be given before the model has been trained")
    # Per thread, not written into the decoder: a shared model predicts from many threads.
    mine = _PREDICT_STEPS.__dict__.setdefault("steps", {})
    outer = mine.get(id(dec))
    mine[id(dec)] = int(steps or dec.output_steps)
    try:
        return Model.predict(model, X, batch_size=batch_size, lengths=lengths)
    finally:
        if outer is None:
            del mine[id(dec)]
        else:
            mine[id(dec)] = outer


def _generate(model, dec, X, steps, lengths):
    dec._record_tokens = []
    try:
        out = _predict_steps(model, dec, X, steps, max(1, len(X)), lengths)
        toks = dec._record_tokens
    finally:
        dec._record_tokens = None
    return np.stack(toks, 1) if dec.tokens else out


@register
class Seq2Seq(Model):
    """Encoder-decoder: the encoder's final state (every layer) seeds the decoder.

    encoder: fr.RNN/LSTM/GRU (unidirectional, same num_layers and hidden_size as the decoder;
        LSTM with an LSTM decoder, RNN/GRU with an RNN/GRU decoder).
    decoder: fr.Decoder; its teacher_forcing schedule is used during fit.
    start: first decoder input in real-valued mode: "zeros" or "last_input" (each source
        sequence's last valid step, which needs encoder input_size == decoder output_size);
        in token mode the first input is ``start_token``.
    ``fit(X, y)``: X (N, T_in, D) sources (``lengths`` allowed), y (N, T_out, ...) targets.
    ``predict(X, steps)``: greedy (or sampled) decoding.
    """

    def __init__(self, encoder, decoder, start="zeros", start_token=0, seed=None):
        super().__init__(seed if seed is not None else decoder.seed)
        if isinstance(encoder, Recurrent):
            encoder = encoder.layer
        if not isinstance(encoder, ENGINE_LAYERS):
            raise TypeError(f"encoder must be fr.RNN/LSTM/GRU, got {type(encoder).__name__}")
        if not isinstance(decoder, Decoder):
            raise TypeError(f"decoder must be fr.Decoder, got {type(decoder).__name__}")
        if encoder.bidirectional:
            raise ValueError("a bidirectional encoder's state cannot seed a unidirectional decoder")
        if encoder.num_layers != decoder.num_layers or encoder.hidden_size != decoder.hidden_size:
            raise ValueError(f"encoder (num_layers={encoder.num_layers}, hidden_size={encoder.hidden_size}) "
                             f"and decoder (num_layers={decoder.num_layers}, hidden_size="
                             f"{decoder.hidden_size}) must match")
        if isinstance(encoder, LSTM) != decoder.lstm:
            raise ValueError("an LSTM encoder needs an LSTM decoder (and vice versa): the cell state "
                             "must carry over")
        if np.dtype(encoder.dtype) != decoder.dtype:
            raise ValueError("encoder and decoder dtypes differ")
        _checks.one_of(start, "start", ("zeros", "last_input"))
        if start == "last_input" and (decoder.tokens or encoder.input_size != decoder.output_size):
            raise ValueError("start='last_input' needs a real-valued decoder whose output_size equals "
                             "the encoder's input_size")
        if decoder.tokens and not (0 <= start_token < decoder.vocab_size):
            raise ValueError(f"start_token must be in [0, {decoder.vocab_size})")
        self.encoder = Recurrent(encoder, return_sequences=True)
        self.decoder = decoder
        decoder.rng = self.rng
        self.start, self.start_token = start, int(start_token)
        self.dtype = decoder.dtype
        if seed is not None:
            # The seed fixes the whole model, whatever the parts were built with.
            self.encoder.build((None, encoder.input_size), self.dtype,
                               np.random.default_rng([seed, 3]), self.rng)
            decoder._init_params(self._init_rng())
        self.built = True

    output_has_time = True

    @property
    def teacher_forcing(self):
        return self.decoder.teacher_forcing

    @property
    def output_steps(self):
        return self.decoder.output_steps

    def _steps(self):
        return self.decoder._steps()

    def _modules(self):
        return [("encoder", self.encoder)] + [("decoder." + p, m) for p, m in self.decoder._modules()]

    def _recurrents(self):
        return [self.encoder]

    def _engines(self):
        return [self.encoder.layer]

    def _clear_caches(self):
        self.encoder.clear_cache()
        self.decoder._clear_caches()

    def _check_X(self, X, name="X"):
        return _checks.check_sequences(X, name, self.encoder.layer.input_size, self.dtype)

    _output_shape = Decoder._output_shape

    @property
    def output_size(self):
        return self.decoder.output_size

    def _prepare(self, X, y=None, lengths=None, sample_weight=None, name="X", yname="y"):
        self.decoder._check_targets(y, yname)
        return super()._prepare(X, y, lengths, sample_weight, name, yname)

    def _loss_mask(self, out, lengths):
        return None    # lengths describe the sources, not the targets

    def _forward(self, X, lengths=None, training=False, y=None):
        dec = self.decoder
        T = y.shape[1] if y is not None else dec._steps()
        if training:
            dec.output_steps = T
        st = self.encoder.forward_state(X, training, lengths)[1]
        L = dec.num_layers
        init = [(st[0][l], st[1][l]) for l in range(L)] if dec.lstm else [st[l] for l in range(L)]
        N = len(X)
        if dec.tokens:
            primer = np.full((N, 1), self.start_token)
        elif self.start == "zeros":
            primer = np.zeros((N, 1, dec.output_size), self.dtype)
        else:
            last = np.full(N, X.shape[1] - 1) if lengths is None else np.asarray(lengths) - 1
            primer = X[np.arange(N), last][:, None]
        tf = dec.teacher_forcing
        p = tf(self.epoch if tf.unit == "epoch" else self.step) if training else 0.0
        return dec._run(primer, init, T, y if training else None, p, training, self.rng)

    def _backward(self, dout):
        ds = self.decoder._backward_state(dout)
        if self.decoder.lstm:
            z = np.zeros_like(self.encoder.last_state[0])
            dh, dc = z.copy(), z.copy()
            for l, (a, b) in enumerate(ds):
                if a is not None:
                    dh[l] = a
                if b is not None:
                    dc[l] = b
            self.encoder.backward(None, (dh, dc))
        else:
            dh = np.zeros_like(self.encoder.last_state)
            for l, a in enumerate(ds):
                if a is not None:
                    dh[l] = a
            self.encoder.backward(None, dh)

    @numpy_blas_single_threaded
    def predict(self, X, steps=None, batch_size=256, lengths=None):
        """Greedy (or sampled) decoding of ``steps`` outputs (default: as in training);
        logits in token mode."""
        return _predict_steps(self, self.decoder, X, steps, batch_size, lengths)

    @numpy_blas_single_threaded
    def generate(self, X, steps, lengths=None):
        """The decoded sequence: values, or the fed-back token ids in token mode."""
        return _generate(self, self.decoder, X, steps, lengths)

    def get_config(self):
        return {"class": "Seq2Seq", "encoder": engine_config(self.encoder.layer),
                "decoder": self.decoder.get_config(), "start": self.start,
                "start_token": self.start_token, "seed": self.seed}

    @classmethod
    def from_config(cls, cfg):
        m = cls(make_engine(cfg["encoder"]), Decoder.from_config(cfg["decoder"]),
                start=cfg["start"], start_token=cfg["start_token"])
        m.seed = cfg.get("seed")
        return m

    def summary(self, print_fn=print):
        n_enc = sum(a.size for a in self.encoder.parameters().values())
        e = self.encoder.layer
        text = (f"Seq2Seq(start={self.start!r})\n  encoder {e!r}\n    input (batch, time, {e.input_size}) -> "
                f"final state ({e.num_layers}, batch, {e.hidden_size}): {n_enc:,} params\n"
                + self.decoder.summary(print_fn=None).replace("\n", "\n  ")
                + f"\nTotal params: {self.count_params():,}")
        if print_fn is not None:
            print_fn(text)
        return text
