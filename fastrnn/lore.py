"""RNN lore from the lecture material, as library features.

- Initialisers (:func:`init_`, :func:`irnn`): identity-initialised ReLU RNN (IRNN, Le et al.
  2015), orthogonal recurrent weights, forget-gate bias 1, Glorot and PyTorch-uniform, per layer.
- Echo state networks (:class:`ESN`): a fixed random reservoir run by the C engine, washout,
  ridge-regression readout in closed form, teacher-forced prediction and closed-loop generation.
- Skip connections through time (:class:`SkipRecurrent`): h_t also fed from h_{t-k}, exact BPTT.
- Output-to-hidden recurrence (:class:`JordanRNN`): the previous output feeds the next step;
  trained with teacher forcing (all steps in parallel), run free at prediction time.
- Gradient-flow diagnostics (:func:`state_gradients`, :func:`gradient_flow`,
  :func:`recurrent_eigenvalues`, :func:`spectral_radius`, :func:`plot_gradient_flow`).
- The classical baseline (:class:`AR`): an AR(p) model fitted by Yule-Walker.

Leaky-integrator units are an engine option: ``fr.RNN(..., leak=alpha)``.
"""
import inspect

import numpy as np

from . import models as _models
from .layers import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, no_grad
from .models import Dense, Recurrent, _reinit_engine
from .training import Model

__all__ = ["init_", "irnn", "orthogonal", "ESN", "AR", "SkipRecurrent", "JordanRNN",
           "spectral_radius", "recurrent_eigenvalues", "state_gradients", "gradient_flow",
           "plot_gradient_flow", "engine_has_leak", "engine_has_state_grads"]

_GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}
_ENGINES = (RNN, LSTM, GRU)
_CELLS = (RNNCell, LSTMCell, GRUCell)


def engine_has_leak():
    """True when this build's ``fr.RNN`` takes ``leak=`` (leaky-integrator units)."""
    return "leak" in inspect.signature(RNN.__init__).parameters


def engine_has_state_grads():
    """True when engine ``backward`` can return per-step state gradients (``state_grads=True``)."""
    return "state_grads" in inspect.signature(RNN.backward).parameters


def _kind(m):
    if isinstance(m, (LSTM, LSTMCell)):
        return "LSTM"
    if isinstance(m, (GRU, GRUCell)):
        return "GRU"
    return "RNN"


# ============================================================================ initialisers
def orthogonal(n, rng, gain=1.0):
    """An n x n random orthogonal matrix (QR of a Gaussian, signs fixed so it is Haar-uniform)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return gain * q * np.sign(np.diag(r))


def _block(kind, shape, rng, gain, std, fan_out):
    """One (rows, cols) block drawn by the named scheme."""
    rows, cols = shape
    if kind == "identity":
        if rows != cols:
            raise ValueError("identity initialisation needs a square block")
        return gain * np.eye(rows)
    if kind == "orthogonal":
        if rows != cols:
            raise ValueError("orthogonal initialisation needs a square block")
        return orthogonal(rows, rng, gain)
    if kind == "glorot":
        a = gain * np.sqrt(6.0 / (cols + rows))
        return rng.uniform(-a, a, shape)
    if kind == "pytorch":
        a = 1.0 / np.sqrt(fan_out)
        return rng.uniform(-a, a, shape)
    if kind == "normal":
        return rng.normal(0.0, std, shape)
    if kind == "zeros":
        return np.zeros(shape)
    raise ValueError(f"unknown initialisation {kind!r}; choose identity, orthogonal, glorot, "
                     "pytorch, normal or zeros")


def _engines_of(target):
    """(module, [(w_ih, w_hh, b_ih, b_hh) names]) pairs of every engine layer/cell in target."""
    if isinstance(target, (list, tuple)):
        return [p for t in target for p in _engines_of(t)]
    if isinstance(target, Model):
        if not target.built:
            raise ValueError("the model is not built yet: its recurrent weights would be redrawn "
                             "when it is; pass input_shape= to Sequential, or call init_ after fit")
        mods = [m for _, m in target._modules() if isinstance(m, (Recurrent,) + _ENGINES + _CELLS)]
        return [p for m in mods for p in _engines_of(m)]
    if isinstance(target, SkipRecurrent):
        return _engines_of(target._eng)
    if isinstance(target, Recurrent):
        return _engines_of(target.layer)
    if isinstance(target, _ENGINES):
        names = []
        for l in range(target.num_layers):
            for d in range(target.num_directions):
                names.append(target._names(l, d))
        return [(target, names)]
    if isinstance(target, _CELLS):
        return [(target, [("weight_ih", "weight_hh", "bias_ih", "bias_hh")])]
    raise TypeError(f"init_ takes an engine layer or cell, a Recurrent, a model or a list of them, "
                    f"got {type(target).__name__}")


def init_(target, recurrent=None, input=None, bias=None, forget_bias=None, gain=1.0, std=0.001,
          seed=None):
    """Re-initialise the weights of RNN/LSTM/GRU layers in place; returns ``target``.

    target: ``fr.RNN/LSTM/GRU``, a cell, a ``Recurrent``, a built model (all its recurrent
        layers and cells, e.g. a Seq2Seq's encoder and decoder) or a list of these. ``Sequential(seed=...)`` redraws recurrent weights when it
        is built, so initialise after building (a Sequential whose first layer is recurrent is
        built on construction).
    recurrent: scheme for ``weight_hh`` -- ``"identity"`` (IRNN), ``"orthogonal"``,
        ``"glorot"``, ``"pytorch"`` (U(+-1/sqrt(H))), ``"normal"`` (N(0, std)) or ``None``
        (keep). Gated layers get it per gate block (H x H each).
    input: scheme for ``weight_ih`` (``"glorot"``, ``"pytorch"``, ``"normal"``, ``"zeros"``,
        ``"orthogonal"`` for square blocks) or None; per gate block as well.
    bias: ``"zeros"``, ``"pytorch"`` or None (keep).
    forget_bias: LSTM only. Sets the forget-gate bias (rows H..2H, gate order i,f,g,o) of
        ``bias_ih`` to this value and of ``bias_hh`` to 0, so the effective bias is exactly it.
    gain: multiplies identity/orthogonal/glorot blocks. std: for ``"normal"``.
    """
    rng = np.random.default_rng(seed)
    pairs = _engines_of(target)
    if forget_bias is not None:
        for m, _ in pairs:
            if _kind(m) != "LSTM":
                raise ValueError(f"forget_bias applies to LSTM layers, not {type(m).__name__}")
            if not m.bias:
                raise ValueError("forget_bias needs an LSTM with bias=True")
    for m, names in pairs:
        p = m.parameters()
        H, G = m.hidden_size, _GATES[_kind(m)]
        for w_ih, w_hh, b_ih, b_hh in names:
            for name, scheme in ((w_hh, recurrent), (w_ih, input)):
                if scheme is None:
                    continue
                W = p[name]
                W[...] = np.concatenate([_block(scheme, (H, W.shape[1]), rng, gain, std, H)
                                         for _ in range(G)], 0)
            if m.bias and bias is not None:
                for name in (b_ih, b_hh):
                    if bias == "zeros":
                        p[name][...] = 0
                    elif bias == "pytorch":
                        p[name][...] = rng.uniform(-1 / np.sqrt(H), 1 / np.sqrt(H), p[name].shape)
                    else:
                        raise ValueError(f"bias must be 'zeros', 'pytorch' or None, got {bias!r}")
            if forget_bias is not None:
                p[b_ih][H:2 * H] = forget_bias
                p[b_hh][H:2 * H] = 0
    return target


def irnn(input_size, hidden_size, num_layers=1, scale=1.0, std=0.001, seed=None, **kwargs):
    """An identity-initialised ReLU RNN (Le, Jaitly & Hinton 2015): ``weight_hh = scale * I``,
    zero biases, input weights N(0, std). Extra keyword arguments go to ``fr.RNN``.
    (Inside ``Sequential(seed=...)`` apply ``init_(model, recurrent="identity", ...)`` after
    building instead: the model redraws recurrent weights from its seed.)"""
    m = RNN(input_size, hidden_size, num_layers, nonlinearity="relu", seed=seed, **kwargs)
    return init_(m, recurrent="identity", input="normal", bias="zeros", gain=scale, std=std,
                 seed=seed)


# ============================================================================ spectra
def spectral_radius(W):
    """Largest |eigenvalue| of a square matrix."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"spectral_radius needs a square matrix, got shape {W.shape}")
    return float(np.abs(np.linalg.eigvals(W)).max())


_GATE_NAMES = {"RNN": ("h",), "LSTM": ("i", "f", "g", "o"), "GRU": ("r", "z", "n")}


def recurrent_eigenvalues(layer, num_layer=0, direction=0):
    """Eigenvalues of ``weight_hh`` of one layer/direction: a dict gate -> eigenvalues of that
    gate's H x H block ({"h": ...} for an Elman RNN; i,f,g,o for LSTM; r,z,n for GRU)."""
    if isinstance(layer, Recurrent):
        layer = layer.layer
    if isinstance(layer, _CELLS):
        W = layer.parameters()["weight_hh"]
    elif isinstance(layer, _ENGINES):
        W = layer.parameters()[layer._names(num_layer, direction)[1]]
    else:
        raise TypeError(f"expected an engine layer or cell, got {type(layer).__name__}")
    H = layer.hidden_size
    return {g: np.linalg.eigvals(W[i * H:(i + 1) * H].astype(np.float64))
            for i, g in enumerate(_GATE_NAMES[_kind(layer)])}


# ============================================================================ echo state network
class ESN:
    """Echo state network (Jaeger 2001): a fixed random tanh reservoir with a linear readout
    trained in closed form.

    The reservoir is an ``fr.RNN`` whose weights are set once: input weights U(-s, s) with
    s = ``input_scaling``, biases U(-b, b) with b = ``bias_scaling``, and a recurrent matrix
    with a fraction ``sparsity`` of zeros scaled to ``spectral_radius``. With ``leak`` < 1 its
    units are leaky integrators, h_t = (1-leak) h_{t-1} + leak tanh(...). The reservoir runs as
    one call into the C engine per sequence (no Python loop over time).

    The readout is y_t = W_out [1, x_t, h_t] (``include_input``) fitted by ridge regression on
    all steps after the first ``washout`` of each sequence.

    Arrays are (T, D) for one sequence or (N, T, D) for several.
    """

    def __init__(self, input_size, reservoir_size=500, spectral_radius=0.9, sparsity=0.9,
                 input_scaling=1.0, bias_scaling=0.0, leak=1.0, ridge=1e-6, washout=100,
                 include_input=True, seed=None, dtype=np.float64):
        for n, v in (("input_size", input_size), ("reservoir_size", reservoir_size)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{n} must be a positive integer, got {v!r}")
        if not spectral_radius > 0:
            raise ValueError(f"spectral_radius must be > 0, got {spectral_radius}")
        if not 0 <= sparsity < 1:
            raise ValueError(f"sparsity (fraction of zero recurrent weights) must be in [0, 1), got {sparsity}")
        if not 0 < leak <= 1:
            raise ValueError(f"leak must be in (0, 1], got {leak}")
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        if isinstance(washout, bool) or not isinstance(washout, (int, np.integer)) or washout < 0:
            raise ValueError(f"washout must be an integer >= 0, got {washout!r}")
        self.input_size, self.reservoir_size = int(input_size), int(reservoir_size)
        self.spectral_radius, self.sparsity = float(spectral_radius), float(sparsity)
        self.input_scaling, self.bias_scaling = float(input_scaling), float(bias_scaling)
        self.leak, self.ridge, self.washout = float(leak), float(ridge), int(washout)
        self.include_input = bool(include_input)
        self.dtype = np.dtype(dtype)
        kw = {}
        if self.leak != 1.0:
            if not engine_has_leak():
                raise RuntimeError("this fastrnn build has no leaky units (fr.RNN(..., leak=)); "
                                   "use leak=1.0 or rebuild the engine")
            kw["leak"] = self.leak
        rng = np.random.default_rng(seed)
        N, D = self.reservoir_size, self.input_size
        self.reservoir = RNN(D, N, nonlinearity="tanh", dtype=self.dtype, seed=seed, **kw)
        for _ in range(20):
            # A very sparse small matrix can be nilpotent (all eigenvalues 0): draw again.
            W = rng.uniform(-1, 1, (N, N)) * (rng.random((N, N)) >= self.sparsity)
            rho = np.abs(np.linalg.eigvals(W)).max()
            if rho > 1e-8:
                break
        else:
            raise ValueError("the random reservoir matrix keeps coming out nilpotent (too sparse "
                             "for its size); lower sparsity or enlarge the reservoir")
        W *= self.spectral_radius / rho
        self.reservoir.load_state_dict({
            "weight_ih_l0": rng.uniform(-self.input_scaling, self.input_scaling, (N, D)),
            "weight_hh_l0": W,
            "bias_ih_l0": rng.uniform(-1, 1, N) * self.bias_scaling,
            "bias_hh_l0": np.zeros(N)})
        self.reservoir.eval()
        self.W_out = None
        self.output_size = None
        self.last_state = None      # reservoir state after the last sequence fitted / predicted
        self.last_output = None

    # ---- shapes --------------------------------------------------------------------------
    def _seqs(self, X, name="X"):
        X = np.asarray(X)
        if X.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be numeric, got dtype {X.dtype}")
        single = X.ndim == 2
        if single:
            X = X[None]
        if X.ndim != 3 or X.shape[2] != self.input_size:
            raise ValueError(f"{name} must be (T, {self.input_size}) or (N, T, {self.input_size}), "
                             f"got shape {np.shape(X) if not single else X.shape[1:]}")
        if X.shape[1] < 1:
            raise ValueError(f"{name} has no time steps")
        if not np.isfinite(X).all():
            raise ValueError(f"{name} contains NaN or inf")
        return np.ascontiguousarray(X, dtype=self.dtype), single

    def states(self, X, h0=None):
        """Reservoir states (N, T, reservoir_size) -- or (T, reservoir_size) -- for inputs X,
        starting from h0 (N, reservoir_size) or zeros; one engine call, no gradients kept."""
        X, single = self._seqs(X)
        S = self._states(X, h0)
        return S[0] if single else S

    def _states(self, X, h0=None):
        N = X.shape[0]
        hx = None if h0 is None else np.asarray(h0, self.dtype).reshape(1, N, self.reservoir_size)
        with no_grad():
            y, h_n = self.reservoir(np.ascontiguousarray(X.transpose(1, 0, 2)), hx)
        self.last_state = h_n[0]
        return y.transpose(1, 0, 2)

    def _features(self, X, S):
        parts = [np.ones(S.shape[:-1] + (1,), self.dtype)]
        if self.include_input:
            parts.append(X)
        parts.append(S)
        return np.concatenate(parts, -1)

    # ---- training ------------------------------------------------------------------------
    def fit(self, X, Y, washout=None, h0=None):
        """Fit the readout by ridge regression: minimise ||Y - F W_out^T||^2 + ridge ||W_out||^2
        over all steps after ``washout`` (default: the constructor's) of each sequence.
        Returns self; ``self.train_nrmse`` is the fit's normalised RMSE."""
        X, single = self._seqs(X)
        Y = np.asarray(Y, dtype=np.float64)
        if single:
            Y = Y[None]
        if Y.ndim == 2 and Y.shape == X.shape[:2]:
            Y = Y[..., None]
        if Y.ndim != 3 or Y.shape[:2] != X.shape[:2]:
            raise ValueError(f"Y must have the same samples and steps as X {X.shape[:2]} and a "
                             f"feature axis, got shape {Y.shape}")
        if not np.isfinite(Y).all():
            raise ValueError("Y contains NaN or inf")
        w = self.washout if washout is None else int(washout)
        if not 0 <= w < X.shape[1]:
            raise ValueError(f"washout must be in [0, {X.shape[1]}) (the number of steps), got {w}")
        S = self._states(X, h0)
        F = self._features(X, S)[:, w:].reshape(-1, self._n_features()).astype(np.float64)
        T = Y[:, w:].reshape(-1, Y.shape[-1])
        A = F.T @ F
        A[np.diag_indices_from(A)] += self.ridge
        self.W_out = np.linalg.solve(A, F.T @ T).T          # (O, F)
        self.output_size = Y.shape[-1]
        pred = F @ self.W_out.T
        self.train_nrmse = nrmse(T, pred)
        self.last_output = (pred.reshape(Y.shape[0], -1, self.output_size))[:, -1]
        return self

    def _n_features(self):
        return 1 + (self.input_size if self.include_input else 0) + self.reservoir_size

    def _readout(self, X, S):
        return self._features(X, S) @ self.W_out.T.astype(self.dtype)

    def _require_fit(self):
        if self.W_out is None:
            raise RuntimeError("call fit() before predict() or generate()")

    def predict(self, X, h0=None):
        """Teacher-forced outputs: the readout at every step of X, (N, T, O) or (T, O)."""
        self._require_fit()
        X, single = self._seqs(X)
        out = self._readout(X, self._states(X, h0))
        self.last_output = out[:, -1]
        return out[0] if single else out

    def generate(self, steps, X=None, h0=None):
        """Closed-loop generation of ``steps`` outputs: each output is fed back as the next
        input (needs output_size == input_size).

        With a context X the reservoir first reads it (from h0 or zeros) and the first
        generated value is the readout at its last step (the prediction of the step after
        it); without one, generation continues after the last ``fit``/``predict`` sequence,
        whose final prediction is the first value fed back. Returns (N, steps, O), or
        (steps, O) for a single context / continuation of a single sequence."""
        self._require_fit()
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if self.output_size != self.input_size:
            raise ValueError(f"closed-loop generation feeds outputs back as inputs: output_size "
                             f"{self.output_size} != input_size {self.input_size}")
        if X is not None:
            X, single = self._seqs(X)
            out = self._readout(X[:, -1:], self._states(X, h0)[:, -1:])[:, 0]
            res, todo = [out], steps - 1
        else:
            if self.last_state is None or self.last_output is None:
                raise RuntimeError("no state to continue from: pass a context X")
            out = np.asarray(self.last_output, self.dtype)
            single = out.shape[0] == 1
            res, todo = [], steps
        h = self.last_state
        for _ in range(todo):
            x = out[:, None]                                 # (N, 1, D): one step, state carried
            s = self._states(x, h)
            h = self.last_state
            out = self._readout(x, s)[:, 0]
            res.append(out)
        self.last_output = out
        res = np.stack(res, 1)
        return res[0] if single else res


def nrmse(y_true, y_pred):
    """Root-mean-square error divided by the standard deviation of y_true."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)) / np.std(y_true))


__all__.append("nrmse")


# ============================================================================ AR(p)
class AR:
    """Autoregressive model x_t - m = sum_i phi_i (x_{t-i} - m) + e_t, fitted by Yule-Walker:
    the sample autocovariances r_0..r_p give the Toeplitz system R phi = (r_1..r_p)."""

    def __init__(self, p):
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
            raise ValueError(f"p must be a positive integer, got {p!r}")
        self.p = int(p)
        self.phi = None

    def fit(self, series):
        x = np.asarray(series, dtype=np.float64).reshape(-1)
        if x.size <= self.p + 1:
            raise ValueError(f"AR({self.p}) needs more than {self.p + 1} observations, got {x.size}")
        if not np.isfinite(x).all():
            raise ValueError("series contains NaN or inf")
        self.mean = float(x.mean())
        z = x - self.mean
        n = z.size
        r = np.array([z[:n - k] @ z[k:] / n for k in range(self.p + 1)])
        if r[0] == 0:
            raise ValueError("series is constant; AR coefficients are undefined")
        idx = np.abs(np.arange(self.p)[:, None] - np.arange(self.p)[None, :])
        self.phi = np.linalg.solve(r[idx], r[1:])
        self.sigma2 = float(r[0] - self.phi @ r[1:])
        return self

    def _require_fit(self):
        if self.phi is None:
            raise RuntimeError("call fit() first")

    def predict(self, history):
        """One-step forecast: from a 1-D history -> a float; from (N, >=p) windows -> (N,)."""
        self._require_fit()
        h = np.asarray(history, dtype=np.float64)
        if h.shape[-1] < self.p:
            raise ValueError(f"AR({self.p}) needs at least {self.p} past values, got {h.shape[-1]}")
        lags = h[..., ::-1][..., :self.p] - self.mean       # x_{t-1}, x_{t-2}, ...
        out = self.mean + lags @ self.phi
        return float(out) if np.ndim(out) == 0 else out

    def forecast(self, history, steps):
        """k-step forecast, feeding forecasts back: (steps,) for a 1-D history, else (N, steps)."""
        self._require_fit()
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        h = np.array(history, dtype=np.float64)
        single = h.ndim == 1
        h = np.atleast_2d(h)
        out = []
        for _ in range(steps):
            nxt = np.atleast_1d(self.predict(h))
            out.append(nxt)
            h = np.concatenate([h, nxt[:, None]], 1)
        out = np.stack(out, 1)
        return out[0] if single else out


# ============================================================================ skip connections
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
        if isinstance(skip, bool) or not isinstance(skip, (int, np.integer)) or skip < 1:
            raise ValueError(f"skip must be a positive integer (steps back), got {skip!r}")
        if cell not in ("RNN", "LSTM", "GRU"):
            raise ValueError(f"cell must be 'RNN', 'LSTM' or 'GRU', got {cell!r}")
        self.input_size, self.hidden_size, self.skip = int(input_size), int(hidden_size), int(skip)
        self.cell, self.nonlinearity, self.leak = cell, nonlinearity, float(leak)
        if cell == "RNN":
            kw = {"nonlinearity": nonlinearity}
            if self.leak != 1.0:
                if not engine_has_leak():
                    raise RuntimeError("this fastrnn build has no leaky units (fr.RNN(..., leak=))")
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
                             f"(batch, {', '.join('time' if s is None else str(s) for s in in_shape)})")
        if init_rng is not None:
            _reinit_engine(self._eng, init_rng)
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

    def get_config(self):
        return {"class": "SkipRecurrent", "input_size": self.input_size,
                "hidden_size": self.hidden_size, "skip": self.skip, "cell": self.cell,
                "nonlinearity": self.nonlinearity, "leak": self.leak,
                "return_sequences": self.return_sequences, "stateful": self.stateful,
                "dtype": np.dtype(self._eng.dtype).name}

    def __repr__(self):
        return (f"SkipRecurrent({self.input_size}, {self.hidden_size}, skip={self.skip}, "
                f"cell={self.cell!r}, return_sequences={self.return_sequences})")


# Let Sequential.from_config (fr.load) rebuild SkipRecurrent layers.
_models._LAYER_CLASSES.setdefault("SkipRecurrent", SkipRecurrent)


# ============================================================================ Jordan network
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
        for n, v, lo in (("input_size", input_size, 1), ("hidden_size", hidden_size, 1),
                         ("output_size", output_size, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{n} must be an integer >= {lo}, got {v!r}")
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.output_size = int(output_size)
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
        X = np.asarray(X)
        if X.dtype.kind not in "fiub":
            raise TypeError(f"{name} must be numeric, got dtype {X.dtype}")
        if X.ndim != 3 or X.shape[2] != self.input_size:
            raise ValueError(f"{name} must be (samples, steps, {self.input_size}), got shape {X.shape}")
        return np.ascontiguousarray(X, dtype=self.dtype)

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
        cfg = dict(cfg)
        cfg.pop("class", None)
        return cls(**cfg)


# ============================================================================ gradient flow
def _step_state_grads(eng, x, hx, dy, dstate):
    """dL/dh_t by stepping the engine one step at a time (unidirectional layers): the state
    gradient arriving at step t's state is exactly what step t+1's backward returns as dh0."""
    T = x.shape[0]
    lstm = isinstance(eng, LSTM)
    states = [hx]
    st = hx
    with no_grad():
        for t in range(T):
            _, st = eng(x[t:t + 1], st)
            states.append(st)
    L, B, H = eng.num_layers, x.shape[1], eng.hidden_size
    out = np.zeros((T, L, B, H), eng.dtype)
    carry = dstate
    for t in range(T - 1, -1, -1):
        g = np.zeros((L, B, H), eng.dtype)
        if carry is not None:
            ch = carry[0] if lstm else carry
            if ch is not None:
                g += ch
        if dy is not None:
            g[-1] += dy[t]
        out[t] = g
        eng(x[t:t + 1], states[t])
        _, carry = eng.backward(None if dy is None else dy[t:t + 1], carry)
    return [np.ascontiguousarray(out[:, l]) for l in range(L)]


def state_gradients(layer, x, hx=None, dy=None, dstate=None, lengths=None, method="auto"):
    """Per-step state gradients of an engine layer: a list (one per layer*direction, PyTorch
    h_n order) of (T, B, H) arrays holding dL/dh_t, the gradient w.r.t. the state leaving step
    t (time-major), for a loss whose gradient w.r.t. the layer's output is ``dy`` and w.r.t. its
    final state is ``dstate``. Parameter gradients are left untouched.

    method: "engine" (the C backward's ``state_grads=True``), "steps" (step the engine one
    step at a time -- one unidirectional layer, no lengths) or "auto" (engine when available).
    """
    if isinstance(layer, Recurrent):
        layer = layer.layer
    if not isinstance(layer, _ENGINES):
        raise TypeError(f"state_gradients takes fr.RNN/LSTM/GRU, got {type(layer).__name__}")
    if method == "auto":
        method = "engine" if engine_has_state_grads() else "steps"
    if method not in ("engine", "steps"):
        raise ValueError(f"method must be 'auto', 'engine' or 'steps', got {method!r}")
    saved = {k: g.copy() for k, g in layer.grads.items()}
    was_training = layer.training
    bf = layer.batch_first
    try:
        layer.train(True)
        if bf:
            layer.batch_first = False
            x = np.ascontiguousarray(np.swapaxes(x, 0, 1))
            if dy is not None:
                dy = np.ascontiguousarray(np.swapaxes(dy, 0, 1))
        if method == "engine":
            if not engine_has_state_grads():
                raise RuntimeError("this fastrnn build's backward has no state_grads option")
            layer(x, hx, lengths)
            layer.backward(dy, dstate, state_grads=True)
            res = [np.array(g) for g in layer.state_grads]
        else:
            if layer.bidirectional or layer.num_layers > 1 or lengths is not None:
                raise ValueError("method='steps' handles one unidirectional layer without lengths; "
                                 "the engine's state_grads handles the rest")
            res = _step_state_grads(layer, x, hx, dy, dstate)
    finally:
        layer.batch_first = bf
        layer.train(was_training)
        for k, g in layer.grads.items():
            g[...] = saved[k]
        layer._cache = None
    return res


def gradient_flow(model, X, y, loss=None, layer=0, lengths=None, method="auto"):
    """Vanishing/exploding-gradient diagnostics of one recurrent layer of a model on a batch.

    Runs the model forward and backward on (X, y) with its loss (or ``loss``), captures the
    gradient reaching recurrent layer ``layer`` (index among the model's recurrent layers) and
    returns a dict:
      norms: (T,) mean over samples of ||dL/dh_t|| for the layer's last layer/direction (the
             quantity the lectures plot against t), per_layer: the same for every
             layer*direction, state_grads: the raw (T, B, H) arrays,
      eigenvalues: recurrent_eigenvalues of that layer, spectral_radius: per gate block.
    The model's parameters and gradients are left as they were.
    """
    from .losses import get_loss
    recs = model._recurrents()
    if not recs:
        raise ValueError("the model has no recurrent layer")
    if not 0 <= layer < len(recs):
        raise ValueError(f"layer must index one of the model's {len(recs)} recurrent layers")
    rec = recs[layer]
    if isinstance(rec, SkipRecurrent):
        raise ValueError("gradient_flow does not handle SkipRecurrent layers")
    eng = rec.layer
    lossf = get_loss(loss if loss is not None else (model.loss or "mse"))
    X, y, lengths, _ = model._prepare(X, y, lengths)
    captured = {}
    orig_fwd, orig_bwd = eng.forward, eng.backward

    def fwd(x, hx=None, lengths=None):
        captured["fwd"] = (x, hx, lengths)
        return orig_fwd(x, hx, lengths)

    def bwd(dy=None, dstate=None, **kw):
        captured["bwd"] = (None if dy is None else np.array(dy),
                           None if dstate is None else dstate)
        return orig_bwd(dy, dstate, **kw)

    saved = {k: g.copy() for k, g in model.grads.items()}
    eng.forward, eng.backward = fwd, bwd
    try:
        model._clear_caches()
        out = model._forward(X, lengths, True, y=y)
        _, g = lossf.value_and_grad(out, y, model._loss_mask(out, lengths))
        model._backward(g.astype(out.dtype, copy=False))
    finally:
        del eng.forward, eng.backward
        model._clear_caches()
        for k, a in model.grads.items():
            a[...] = saved[k]
    if "bwd" not in captured:
        raise RuntimeError("no gradient reached the recurrent layer")
    x, hx, lens = captured["fwd"]
    dy, dstate = captured["bwd"]
    sg = state_gradients(eng, x, hx, dy, dstate, lens, method)
    per_layer = [np.linalg.norm(a.astype(np.float64), axis=2).mean(1) for a in sg]
    eig = recurrent_eigenvalues(eng, eng.num_layers - 1, 0)
    return {"norms": per_layer[-1 if eng.num_directions == 1 else -2], "per_layer": per_layer,
            "state_grads": sg, "eigenvalues": eig,
            "spectral_radius": {k: float(np.abs(v).max()) for k, v in eig.items()}}


def plot_gradient_flow(flows, path, title=None):
    """Plot ||dL/dh_t|| against t (log scale) and the eigenvalues of W_hh in the complex plane
    with the unit circle, for one ``gradient_flow`` result or a dict label -> result. Saves a
    PNG at ``path`` and returns it. Needs matplotlib (``pip install fastrnn[plot]``)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plot_gradient_flow needs matplotlib: pip install 'fastrnn[plot]'") from None
    if isinstance(flows, dict) and "norms" in flows:
        flows = {"": flows}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    th = np.linspace(0, 2 * np.pi, 200)
    a2.plot(np.cos(th), np.sin(th), "k--", lw=0.8, label="unit circle")
    for label, f in flows.items():
        n = np.asarray(f["norms"])
        line, = a1.semilogy(np.arange(len(n)), np.maximum(n, 1e-30), label=label or None)
        ev = np.concatenate(list(f["eigenvalues"].values()))
        rho = max(f["spectral_radius"].values())
        a2.scatter(ev.real, ev.imag, s=8, color=line.get_color(), alpha=0.7,
                   label=f"{label} (rho={rho:.2f})".strip())
    a1.set_xlabel("time step t")
    a1.set_ylabel(r"mean $\|\partial L/\partial h_t\|$")
    a1.set_title("gradient flow through time")
    a2.set_xlabel("Re")
    a2.set_ylabel("Im")
    a2.set_aspect("equal", adjustable="datalim")
    a2.set_title(r"eigenvalues of $W_{hh}$")
    for a in (a1, a2):
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
