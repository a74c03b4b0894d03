"""The classical baseline: an AR(p) model fitted by Yule-Walker."""
import numpy as np

from .. import _checks

__all__ = ["AR"]


class AR:
    """Autoregressive model x_t - m = sum_i phi_i (x_{t-i} - m) + e_t, fitted by Yule-Walker:
    the sample autocovariances r_0..r_p give the Toeplitz system R phi = (r_1..r_p)."""

    def __init__(self, p):
        self.p = _checks.count(p, "p")
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
        _checks.count(steps, "steps")
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
