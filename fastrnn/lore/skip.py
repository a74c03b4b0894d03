"""Skip connections through time (:class:`SkipRecurrent`): h_t also fed from h_{t-k}, exact BPTT."""
import numpy as np

from .. import _checks
from ..layers import GRU, LSTM, RNN, no_grad
from ..train.layers import Recurrent, fmt_shape, reinit_engine
from ..train.registry import init_args, register

__all__ = ["SkipRecurrent"]


class _EngineView:
    """The engine of a SkipRecurrent as the model sees it: input_size is the layer's D."""

    def __init__(self, eng, input_size):
        self.__dict__["_eng"] = eng
        self.__dict__["input_size"] = input_size

    def __getattr__(self, name):
        return getattr(self._eng, name)

    def __setattr__(self, name, value):
        setattr(self._eng, name, value)

    def __repr__(self):
        return repr(self._eng)


@register
class SkipRecurrent(Recurrent):
    """A recurrent layer with a skip connection through time: step t also reads h_{t-k},

        h_t = f(W_ih x_t + W_skip h_{t-k} + W_hh h_{t-1} + b)      (RNN; LSTM/GRU: in every gate)

    with h_{t-k} = 0 for t < k. The engine runs blocks of k steps: within a block every
    h_{t-k} is already known, so it enters as extra input columns ([x_t, h_{t-k}] with
    ``weight_ih_l0 = [W_ih | W_skip]``, shape (G*H, D+H)), and the time loop of each block is
    in C. Backward goes block by block in reverse, re-running each block's forward (cheap) and
    passing the gradient of h_{t-k} back to the earlier block: exact BPTT through both paths.

    cell: "RNN", "LSTM" or "GRU"; nonlinearity and leak (engine option) as for ``fr.RNN``.
    Single layer, unidirectional, no ragged ``lengths``. Use inside ``Sequential``.
    """

    def __init__(self, input_size, hidden_size, skip, cell="RNN", nonlinearity="tanh", leak=1.0,
                 return_sequences=True, stateful=False, dtype=np.float32, seed=None):
        skip = _checks.count(skip, "skip (steps back)")
        _checks.one_of(cell, "cell", ("RNN", "LSTM", "GRU"))
        self.input_size, self.hidden_size, self.skip = int(input_size), int(hidden_size), skip
        self.cell, self.nonlinearity, self.leak = cell, nonlinearity, float(leak)
        if cell == "RNN":
            kw = {"nonlinearity": nonlinearity}
            if self.leak != 1.0:
                kw["leak"] = self.leak
            eng = RNN(self.input_size + self.hidden_size, self.hidden_size, dtype=dtype, seed=seed, **kw)
        else:
            if self.leak != 1.0:
                raise ValueError("leak is an option of Elman (cell='RNN') units")
            eng = (LSTM if cell == "LSTM" else GRU)(self.input_size + self.hidden_size,
                                                     self.hidden_size, dtype=dtype, seed=seed)
        super().__init__(eng, return_sequences=return_sequences, stateful=stateful)
        self._eng = eng
        # Sequential and friends read ``layer.input_size`` as the layer's input width; the
        # engine itself reads [x_t, h_{t-k}], so they see it through a view that says D.
        self.layer = _EngineView(eng, self.input_size)
        self._blocks = None

    @property
    def lstm(self):
        return isinstance(self._eng, LSTM)

    def build(self, in_shape, dtype, init_rng, rng):
        self.rng, self.built = rng, True
        in_shape = tuple(in_shape)
        if len(in_shape) != 2 or in_shape[-1] != self.input_size:
            raise ValueError(f"SkipRecurrent(input_size={self.input_size}) receives input of shape "
                             f"{fmt_shape(in_shape)}")
        if init_rng is not None:
            reinit_engine(self._eng, init_rng)
        H = self.hidden_size
        return (in_shape[0], H) if self.return_sequences else (H,)

    @property
    def features(self):
        return self.hidden_size

    def _zero_state(self, N):
        z = np.zeros((1, N, self.hidden_size), self.layer.dtype)
        return (z, z.copy()) if self.lstm else z

    def forward(self, x, training=False, lengths=None, initial_state=None):
        if lengths is not None and np.min(lengths) < x.shape[1]:
            raise ValueError("SkipRecurrent does not support ragged lengths")
        eng, k, H = self._eng, self.skip, self.hidden_size
        if eng.training != training:
            eng.train(training)
        N, T = x.shape[0], x.shape[1]
        xt = np.ascontiguousarray(x.transpose(1, 0, 2))        # (T, N, D)
        hist = None
        st = initial_state
        if st is None and (self.stateful or self.carry) and self.state is not None:
            st, hist = self.state
            h = st[0] if self.lstm else st
            if h.shape[1] != N:
                raise ValueError(f"stateful layer holds state for batch size {h.shape[1]} but got "
                                 f"{N} samples; call reset_states() or keep the batch size fixed")
        if st is None:
            st = self._zero_state(N)
        if hist is None:
            hist = np.zeros((k, N, H), eng.dtype)               # h_{-k} .. h_{-1}
        # full[j] holds h_{j-k}: the history, then this call's outputs as they are computed,
        # so the skip input of step t is full[t] (already known for a whole block of k steps).
        full = np.concatenate([hist, np.empty((T, N, H), eng.dtype)], 0)
        blocks = []
        for s in range(0, T, k):
            e = min(s + k, T)
            xb = np.ascontiguousarray(np.concatenate([xt[s:e], full[s:e]], -1))
            blocks.append((xb, st))
            with no_grad():
                yb, st = eng(xb, st)
            full[k + s:k + e] = yb
        y = full[k:]
        if training:
            self._meta = (N, T)
            self._blocks = blocks
        self.last_state = st
        if self.stateful or self.carry:
            self.state = (st, full[-k:].copy())
        out = np.ascontiguousarray(y.transpose(1, 0, 2)) if self.return_sequences else y[-1].copy()
        return (out, st) if self.return_state else out

    def backward(self, dy, dstate=None):
        if self._blocks is None:
            raise RuntimeError("backward() needs a preceding training-mode forward()")
        eng, k, H, D = self._eng, self.skip, self.hidden_size, self.input_size
        N, T = self._meta
        dY = np.zeros((T, N, H), eng.dtype)
        if dy is not None:
            if self.return_sequences:
                dY += dy.transpose(1, 0, 2)
            else:
                dY[-1] += dy
        dx = np.empty((T, N, D), eng.dtype)
        dcarry = dstate
        for bi in range(len(self._blocks) - 1, -1, -1):
            s = bi * k
            e = min(s + k, T)
            xb, st = self._blocks[bi]
            eng(xb, st)                                   # re-run the block to cache it
            dxb, dcarry = eng.backward(np.ascontiguousarray(dY[s:e]), dcarry)
            dx[s:e] = dxb[..., :D]
            if s >= k:                                    # h_{t-k} of this block: outputs s-k..e-k
                dY[s - k:e - k] += dxb[..., D:]
        self.dstate0 = dcarry
        self._blocks = None
        return np.ascontiguousarray(dx.transpose(1, 0, 2))

    def clear_cache(self):
        self._blocks = None
        self._meta = None

    @classmethod
    def from_config(cls, cfg):
        return cls(**init_args(cfg))

    def get_config(self):
        return {"class": "SkipRecurrent", "input_size": self.input_size,
                "hidden_size": self.hidden_size, "skip": self.skip, "cell": self.cell,
                "nonlinearity": self.nonlinearity, "leak": self.leak,
                "return_sequences": self.return_sequences, "stateful": self.stateful,
                "dtype": np.dtype(self._eng.dtype).name}

    def __repr__(self):
        return (f"SkipRecurrent({self.input_size}, {self.hidden_size}, skip={self.skip}, "
                f"cell={self.cell!r}, return_sequences={self.return_sequences})")
