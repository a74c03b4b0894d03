"""Echo state networks (Jaeger 2001): a fixed random reservoir run by the C engine, washout,
ridge-regression readout in closed form, teacher-forced prediction and closed-loop generation."""
import numpy as np

from .. import _checks, distributed
from ..layers import RNN, no_grad

__all__ = ["ESN", "nrmse"]


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
        self.input_size = _checks.count(input_size, "input_size")
        self.reservoir_size = _checks.count(reservoir_size, "reservoir_size")
        self.spectral_radius = _checks.positive(spectral_radius, "spectral_radius")
        self.sparsity = _checks.in_range(sparsity, "sparsity (fraction of zero recurrent weights)", 0, 1)
        self.leak = _checks.in_range(leak, "leak", 0, 1, "(]")
        self.ridge = _checks.non_negative(ridge, "ridge")
        self.washout = _checks.positive_int(washout, "washout", 0)
        self.input_scaling = _checks.non_negative(input_scaling, "input_scaling") + 0.0  # -0.0 -> 0.0
        self.bias_scaling = _checks.non_negative(bias_scaling, "bias_scaling") + 0.0
        self.include_input = bool(include_input)
        self.dtype = _checks.check_dtype(dtype)
        kw = {"leak": self.leak} if self.leak != 1.0 else {}
        seed = _checks.seed(seed)
        rng = np.random.default_rng(seed)
        N, D = self.reservoir_size, self.input_size
        self.reservoir = RNN(D, N, nonlinearity="tanh", dtype=self.dtype, seed=seed, **kw)
        # a 1x1 or 2x2 matrix is all zeros with probability ~sparsity**(N*N): more draws there
        for _ in range(20 if N > 8 else 2000):
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
        X = _checks.numeric_array(X, name, "fiu")
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
        hx = None
        if h0 is not None:
            hx = np.asarray(self._check_h0(h0, N), self.dtype)[None]
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
    def fit(self, X, Y, washout=None, h0=None, sharded=False):
        """Fit the readout by ridge regression: minimise ||Y - F W_out^T||^2 + ridge ||W_out||^2
        over all steps after ``washout`` (default: the constructor's) of each sequence.
        Returns self; ``self.train_nrmse`` is the fit's normalised RMSE.

        On N MPI ranks (``fr.distributed.init()``) the reservoir is rank 0's, each rank runs
        it over its part of the sequences -- a 1/N slice of X when every rank passes the same
        data, or its own X with ``sharded=True`` -- and one Allreduce sums the normal
        equations, so the readout is the one fitted on all the data at once."""
        X, single = self._seqs(X)
        Y = _checks.numeric_array(Y, "Y", "fiu").astype(np.float64)
        if single:
            Y = Y[None]
        if Y.ndim == 2 and Y.shape == X.shape[:2]:
            Y = Y[..., None]
        if Y.ndim != 3 or Y.shape[:2] != X.shape[:2] or Y.shape[2] < 1:
            raise ValueError(f"Y must have the same samples and steps as X {X.shape[:2]} and a "
                             f"feature axis, got shape {Y.shape}")
        if not np.isfinite(Y).all():
            raise ValueError("Y contains NaN or inf")
        w = self.washout if washout is None else _checks.positive_int(washout, "washout", 0)
        if not 0 <= w < X.shape[1]:
            raise ValueError(f"washout must be in [0, {X.shape[1]}) (the number of steps), got {w}")
        if h0 is not None:
            h0 = self._check_h0(h0, X.shape[0])
        comm = distributed.comm()
        if comm is None and sharded:
            raise ValueError("sharded=True means each MPI rank passes its own part of the data; "
                             "this process runs alone (call fr.distributed.init() under mpiexec)")
        rows = slice(None)
        if comm is not None:
            distributed.agree((self.input_size, self.reservoir_size, self.include_input, Y.shape[2],
                               self.ridge, bool(sharded)) + (() if sharded else (X.shape, w)),
                              "the ESN and its data (sizes, ridge, outputs, sharded, X's shape)")
            for a in self.reservoir.parameters().values():
                comm.Bcast(a, root=0)
            if not sharded:
                n = X.shape[0]
                rows = slice(n * comm.Get_rank() // comm.Get_size(), n * (comm.Get_rank() + 1) // comm.Get_size())
        Xr, Yr = X[rows], Y[rows]
        nF, O = self._n_features(), Y.shape[-1]
        if len(Xr):
            S = self._states(Xr, None if h0 is None else h0[rows])
            F = self._features(Xr, S)[:, w:].reshape(-1, nF).astype(np.float64)
        else:
            F = np.zeros((0, nF))
        T = Yr[:, w:].reshape(-1, O)
        # the normal equations, summed over the ranks in one buffer (F'F, then F'Y)
        AB = np.empty(nF * nF + nF * O)
        A, FtT = AB[:nF * nF].reshape(nF, nF), AB[nF * nF:].reshape(nF, O)
        np.matmul(F.T, F, out=A)
        np.matmul(F.T, T, out=FtT)
        distributed.allreduce(AB)
        A[np.diag_indices_from(A)] += self.ridge
        try:
            self.W_out = np.linalg.solve(A, FtT).T      # (O, F)
        except np.linalg.LinAlgError:
            raise ValueError(f"the readout's normal equations are singular (ridge={self.ridge}): use "
                             "ridge > 0, more steps after the washout, or less extreme data") from None
        if not np.isfinite(self.W_out).all():
            raise ValueError(f"the readout came out non-finite (ridge={self.ridge}): the data are too "
                             "extreme for the solve; rescale X and Y or raise ridge")
        self.output_size = O
        pred = F @ self.W_out.T
        last = pred.reshape(len(Xr), -1, O)[:, -1] if len(Xr) else np.zeros((0, O))
        if comm is None:
            self.train_nrmse = nrmse(T, pred)
            self.last_output = last
            return self
        # the fit's NRMSE from global sums, and (for replicated data) every sequence's final
        # state and output on every rank, rows filled by their owners: one more Allreduce
        n, H = X.shape[0], self.reservoir_size
        own = not sharded
        buf = np.zeros(4 + ((n * H + n * O) if own else 0))
        buf[:4] = T.size, T.sum(), (T * T).sum(), ((T - pred) ** 2).sum()
        if own and len(Xr):
            buf[4:4 + n * H].reshape(n, H)[rows] = self.last_state
            buf[4 + n * H:].reshape(n, O)[rows] = last
        distributed.allreduce(buf)
        cnt, s1, s2, se = buf[:4]
        var = s2 / cnt - (s1 / cnt) ** 2
        self.train_nrmse = float(np.sqrt(se / cnt) / np.sqrt(max(var, 0.0)))
        if own:
            self.last_state = buf[4:4 + n * H].reshape(n, H).astype(self.dtype)
            self.last_output = buf[4 + n * H:].reshape(n, O)
        else:
            self.last_output = last
        return self

    def _check_h0(self, h0, N):
        h0 = _checks.numeric_array(h0, "h0", "fiu")
        want = ((N, self.reservoir_size), (self.reservoir_size,)) if N == 1 else ((N, self.reservoir_size),)
        if h0.shape not in want:
            raise ValueError(f"h0 must have shape ({N}, {self.reservoir_size}) (sequences, "
                             f"reservoir_size), got {h0.shape}")
        return h0.reshape(N, self.reservoir_size)

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
        _checks.count(steps, "steps")
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
