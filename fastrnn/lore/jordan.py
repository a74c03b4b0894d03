"""Output-to-hidden recurrence (:class:`JordanRNN`): the previous output feeds the next step;
trained with teacher forcing (all steps in parallel), run free at prediction time."""
import numpy as np

from .. import _checks
from ..train.layers import Dense
from ..train.model import Model
from ..train.registry import init_args, register

__all__ = ["JordanRNN"]


@register
class JordanRNN(Model):
    """Output-to-hidden recurrence (Jordan 1986): the previous *output*, not the hidden state,
    feeds the next step:

        h_t = act(W_x x_t + W_y y_{t-1} + b),   y_t = V h_t + c,   y_{-1} = 0.

    Trained with teacher forcing: ``fit(X, Y)`` feeds the true y_{t-1}, which removes the
    recurrence from the graph, so all steps train in parallel with exact gradients (the
    lectures' argument for this architecture). ``predict``/``evaluate`` run free: each step
    feeds back the model's own previous output. ``predict(X, teacher=Y)`` gives
    teacher-forced one-step predictions. X (N, T, input_size), Y (N, T, output_size).
    ``get_config()``/``from_config()`` and ``state_dict()``/``load_state_dict()`` persist it.
    """

    def __init__(self, input_size, hidden_size, output_size, activation="tanh",
                 dtype=np.float32, seed=None):
        super().__init__(seed)
        self.input_size = _checks.positive_int(input_size, "input_size")
        self.hidden_size = _checks.positive_int(hidden_size, "hidden_size")
        self.output_size = _checks.positive_int(output_size, "output_size")
        self.activation, self.dtype = activation, np.dtype(dtype)
        init = self._init_rng()
        self.hidden = Dense(self.hidden_size, activation=activation)
        self.hidden.build((None, self.input_size + self.output_size), self.dtype, init, self.rng)
        self.out = Dense(self.output_size)
        self.out.build((None, self.hidden_size), self.dtype, init, self.rng)
        self.output_shape = (None, self.output_size)
        self.built = True

    output_has_time = True

    def _modules(self):
        return [("hidden", self.hidden), ("out", self.out)]

    def _clear_caches(self):
        self.hidden.clear_cache()
        self.out.clear_cache()

    def _check_X(self, X, name="X"):
        return _checks.check_sequences(X, name, self.input_size, self.dtype)

    def _prepare(self, X, y=None, lengths=None, sample_weight=None, name="X", yname="y"):
        if lengths is not None:
            raise ValueError("JordanRNN does not support ragged lengths")
        return super()._prepare(X, y, lengths, sample_weight, name, yname)

    def _output_shape(self, X, y):
        return (len(X), X.shape[1], self.output_size)

    def _teacher(self, Y, shape):
        Y = np.asarray(Y, self.dtype).reshape(shape)
        prev = np.zeros_like(Y)
        prev[:, 1:] = Y[:, :-1]
        return prev

    def _forward(self, X, lengths=None, training=False, y=None):
        N, T = X.shape[:2]
        if training:
            if y is None:
                raise ValueError("training a JordanRNN needs targets (teacher forcing)")
            prev = self._teacher(y, (N, T, self.output_size))
            return self.out.forward(self.hidden.forward(np.concatenate([X, prev], -1), True), True)
        return self._free_run(X)

    def _backward(self, dout):
        self.hidden.backward(self.out.backward(dout))

    def _free_run(self, X):
        N, T = X.shape[:2]
        y = np.zeros((N, self.output_size), self.dtype)
        outs = np.empty((N, T, self.output_size), self.dtype)
        for t in range(T):
            y = self.out.forward(self.hidden.forward(np.concatenate([X[:, t], y], -1)))
            outs[:, t] = y
        return outs

    def predict(self, X, batch_size=256, lengths=None, teacher=None):
        """Free-running outputs (N, T, O); with ``teacher=Y`` the teacher-forced ones."""
        if teacher is None:
            return super().predict(X, batch_size, lengths)
        X, Y, _, _ = self._prepare(X, teacher, None, None, yname="teacher")
        prev = self._teacher(Y, X.shape[:2] + (self.output_size,))
        return self.out.forward(self.hidden.forward(np.concatenate([X, prev], -1)))

    def get_config(self):
        return {"class": "JordanRNN", "input_size": self.input_size, "hidden_size": self.hidden_size,
                "output_size": self.output_size, "activation": self.activation,
                "dtype": self.dtype.name, "seed": self.seed}

    @classmethod
    def from_config(cls, cfg):
        return cls(**init_args(cfg))
