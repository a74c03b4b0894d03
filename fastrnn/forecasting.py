"""Forecasting one real series: transforms, baselines, the quantile (pinball) loss, backtests.

This is what ``fastrnn train`` / ``predict`` / ``backtest`` run; it works on NumPy arrays and
knows nothing of files or the command line.

Transforms. A network sees the series through one of
    none       the values themselves
    diff       x_t - x_{t-1}
    log-diff   log x_t - log x_{t-1} (positive series only)
Its inputs are the last ``window`` transformed values up to the forecast origin t; its k-th
target (k = 1..horizon) is the change from the origin, x_{t+k} (none), x_{t+k} - x_t (diff) or
log(x_{t+k} / x_t) (log-diff). Every target is thus a monotone function of one future value,
so forecasts -- quantiles included -- invert exactly for every step of the horizon.
``choose_transform`` (``transform="auto"``) picks the one under which an AR model fitted on the
first 75% of the *training* part forecasts the rest of the training part best (raw-scale MSE
over the horizon): a cheap, out-of-sample stand-in for "is there a trend / a unit root, and is
its scale multiplicative". The test part is never looked at.

Baselines, on the same test origins and horizon as the network: repeat-the-last-value, and an
AR(p) model fitted by Yule-Walker (``lore.AR``) on the transformed training part, p <= window
chosen by AIC -- the linear model with the network's own view of the past.

The forecast. By default (``ensemble=3, combine="ar"``) it is the equal-weight mean of an
ensemble of networks (the same architecture from different seeds) and of that AR model. One
network trained on a short or noisy series fits part of its noise, and which part depends on
the seed: on 160 quarters of US real GDP single networks range from 0.96x to 1.6x the AR error.
Averaging seeds removes most of that variance, and averaging with the AR model removes most of
the rest -- forecast combination with equal weights, which beats estimated weights more often
than not (Stock & Watson 2004; Smith & Wallis 2009). ``combine="none"`` gives the networks
alone. The ensemble is saved as one ordinary model: its members are folded into one wider layer
whose weights are block-diagonal (``merge_members``), so ``fr.load`` and ``predict`` need
nothing else; the AR coefficients go into ``meta``.
"""
import time

import numpy as np

from .lore.ar import AR
from .train import losses as _losses

__all__ = ["TRANSFORMS", "apply_transform", "input_windows", "target_windows", "invert",
           "choose_transform", "ARBaseline", "last_value", "PinballLoss", "build_model",
           "fold_normalisation", "merge_members", "fit_forecaster", "predict", "closed_loop",
           "backtest", "TrainingDiverged", "COMBINE"]

TRANSFORMS = ("none", "diff", "log-diff")
COMBINE = ("ar", "none")


class TrainingDiverged(RuntimeError):
    """Training ended with non-finite weights (the message says why, if the fit loop knew)."""


# ============================================================================ transforms
def offset(name):
    """How many raw values a transform consumes before its first output (diff: 1)."""
    if name not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {name!r}")
    return 0 if name == "none" else 1


def check_series(x, name):
    x = np.asarray(x, np.float64)
    if not np.isfinite(x).all():
        raise ValueError("the series has missing or non-finite values")
    if name == "log-diff" and not (x > 0).all():
        raise ValueError("transform log-diff needs positive values; this series has values <= 0 "
                         "(use --transform diff)")
    return x


def apply_transform(x, name):
    """The transformed series: element i stands for x[i + offset(name)]."""
    x = np.asarray(x, np.float64)
    offset(name)
    if name == "none":
        return x.copy()
    return np.diff(np.log(x) if name == "log-diff" else x)


def input_windows(x, name, window, origins):
    """(N, window): the ``window`` transformed values ending at each origin t (the index of the
    last observed raw value); needs t >= window - 1 + offset(name)."""
    z = apply_transform(x, name)
    o = np.asarray(origins) - offset(name)
    idx = (o - window + 1)[:, None] + np.arange(window)[None, :]
    return z[idx]


def target_windows(x, name, horizon, origins):
    """(N, horizon): the k-step targets (k = 1..horizon) of each origin (see the module doc)."""
    x = np.asarray(x, np.float64)
    t = np.asarray(origins)
    fut = x[t[:, None] + np.arange(1, horizon + 1)[None, :]]
    if name == "none":
        return fut
    if name == "diff":
        return fut - x[t][:, None]
    return np.log(fut) - np.log(x[t])[:, None]


def invert(name, last, y):
    """Levels from targets ``y`` (N, horizon[, Q]) and the origins' last values (N,)."""
    y = np.asarray(y, np.float64)
    last = np.asarray(last, np.float64).reshape((-1,) + (1,) * (y.ndim - 1))
    if name == "none":
        return y
    if name == "diff":
        return last + y
    return last * np.exp(y)


def _cumulative(name, steps):
    """One-step transformed forecasts (N, H) -> the targets of the module doc."""
    return steps if name == "none" else np.cumsum(steps, axis=1)


# ============================================================================ baselines
def last_value(x, origins, horizon):
    """Repeat-the-last-value forecasts (N, horizon)."""
    x = np.asarray(x, np.float64)
    return np.repeat(x[np.asarray(origins)][:, None], horizon, axis=1)


class ARBaseline:
    """AR(p) on a transformed series, p in 1..max_p by AIC (Yule-Walker fits, residuals on a
    common sample); forecasts levels. A training part too short or constant for an AR model
    gives p = 0: the training mean of the transformed series (e.g. the drift of a diff)."""

    def __init__(self, transform_name, max_p):
        self.transform = transform_name
        self.max_p = max(1, int(max_p))
        self.p, self.ar, self.mean = 0, None, 0.0

    def fit(self, train):
        z = apply_transform(train, self.transform)
        self.mean = float(z.mean()) if len(z) else 0.0
        max_p = min(self.max_p, (len(z) - 2) // 4)
        if max_p < 1 or not z.std() > 0:
            return self
        common = z[max_p:]
        best = None
        for p in range(1, max_p + 1):
            try:
                ar = AR(p).fit(z)
            except (ValueError, np.linalg.LinAlgError):
                break
            lags = np.lib.stride_tricks.sliding_window_view(z[max_p - p:-1], p)
            resid = common - ar.predict(lags)
            s2 = float(np.mean(resid ** 2))
            if not np.isfinite(s2):
                continue
            aic = len(common) * np.log(max(s2, 1e-300)) + 2 * p
            if best is None or aic < best[0]:
                best = (aic, p, ar)
        if best is not None:
            _, self.p, self.ar = best
        return self

    def forecast(self, x, origins, horizon):
        """Level forecasts (N, horizon) from each origin of the raw series ``x``."""
        origins = np.asarray(origins)
        if self.ar is None:
            steps = np.full((len(origins), horizon), self.mean)
        else:
            ctx = input_windows(x, self.transform, self.p, origins)
            steps = self.ar.forecast(ctx, horizon)
        return invert(self.transform, np.asarray(x, np.float64)[origins],
                      _cumulative(self.transform, steps))

    def to_dict(self):
        """JSON-serialisable state (what ``from_dict`` reads back)."""
        d = {"transform": self.transform, "max_p": self.max_p, "p": self.p, "mean": self.mean}
        if self.ar is not None:
            d.update(ar_mean=self.ar.mean, phi=[float(v) for v in self.ar.phi])
        return d

    @classmethod
    def from_dict(cls, d):
        """The model ``to_dict`` described; d comes from a model file, so it is checked."""
        try:
            self = cls(str(d["transform"]), int(d["max_p"]))
            offset(self.transform)
            self.mean = float(d["mean"])
            if d.get("phi") is not None:
                phi = np.asarray(d["phi"], np.float64).reshape(-1)
                if phi.size < 1 or not np.isfinite(phi).all():
                    raise ValueError("AR coefficients must be finite numbers")
                self.ar = AR(phi.size)
                self.ar.phi, self.ar.mean, self.p = phi, float(d["ar_mean"]), phi.size
        except (KeyError, TypeError) as e:
            raise ValueError(f"not an AR model description: {e!r}") from None
        return self

    def __repr__(self):
        return f"AR({self.p})"


def choose_transform(train, window, horizon=1):
    """The transform ("none", "diff" or "log-diff") under which an AR model (p <= window, by
    AIC) fitted on the first 75% of ``train`` best forecasts the remaining 25% (MSE of the
    levels over the horizon). Returns (name, {name: MSE}, reason)."""
    x = np.asarray(train, np.float64)
    n = len(x)
    n_fit = int(n * 0.75)
    origins = np.arange(max(n_fit - 1, 1), n - horizon)
    cands = ["none", "diff"] + (["log-diff"] if (x > 0).all() else [])
    if n_fit < 12 or len(origins) < 5:
        return "none", {}, f"the training part ({n} values) is too short to choose"
    truth = target_windows(x, "none", horizon, origins)
    scores = {}
    for name in cands:
        ar = ARBaseline(name, window).fit(x[:n_fit])
        pred = ar.forecast(x, origins, horizon)
        scores[name] = float(np.mean((pred - truth) ** 2))
    ok = {k: v for k, v in scores.items() if np.isfinite(v)}
    best = min(ok, key=ok.get) if ok else "none"
    return best, scores, "AR forecasts of the last 25% of the training part"


# ============================================================================ quantile loss
# PinballLoss lives with the other losses (train/losses.py), so fr.load reads files naming it
# in any process; it is re-exported here for the CLI.
PinballLoss = _losses.PinballLoss


def pinball(truth, q_pred, quantiles):
    """Mean pinball loss of quantile forecasts (..., Q) for targets (...)."""
    q = np.asarray(quantiles, np.float64)
    e = np.asarray(truth, np.float64)[..., None] - q_pred
    return float(np.mean(np.maximum(q * e, (q - 1) * e)))


# ============================================================================ the network
def build_model(cell, hidden, layers, outputs, seed=0):
    """Many-to-one: a ``cell`` (rnn, lstm, gru) stack reading (N, T, 1) and a Dense(outputs)."""
    from .layers import GRU, LSTM, RNN
    from .train import Dense, Recurrent, Sequential
    eng = {"rnn": RNN, "lstm": LSTM, "gru": GRU}[cell](1, hidden, num_layers=layers)
    return Sequential([Recurrent(eng, return_sequences=False), Dense(outputs)], seed=seed)


def fold_normalisation(model, mean, std, out_mean=None, out_std=None):
    """Make a model trained on (x - mean) / std inputs and (y - out_mean) / out_std targets work
    on raw values: W_ih x_n + b = (W_ih / std) x + (b - W_ih mean / std), y = out_std y_n +
    out_mean (per output; default: the input's mean and std)."""
    p = model.parameters()
    w, b = p["0.weight_ih_l0"], p["0.bias_ih_l0"]
    b -= (w.sum(1) * (mean / std)).astype(b.dtype)
    w /= w.dtype.type(std)
    om = np.broadcast_to(np.asarray(mean if out_mean is None else out_mean, np.float64), p["1.bias"].shape)
    os_ = np.broadcast_to(np.asarray(std if out_std is None else out_std, np.float64), p["1.bias"].shape)
    p["1.weight"] *= os_[:, None].astype(p["1.weight"].dtype)
    p["1.bias"][...] = p["1.bias"] * os_ + om


def merge_members(models):
    """One model computing the mean of ``models`` (networks of ``build_model`` with one
    architecture): its recurrent layers are the members' side by side -- gate block g of the
    wide layer holds every member's block g, and the recurrent and layer-to-layer weights are
    block-diagonal, so no member sees another's units -- and its Dense averages their outputs.
    Exact: the wide model's outputs are the mean of the members' outputs."""
    if len(models) == 1:
        return models[0]
    eng = models[0].layers[0].layer
    cell = {"RNN": "rnn", "LSTM": "lstm", "GRU": "gru"}[type(eng).__name__]
    M, H, L = len(models), eng.hidden_size, eng.num_layers
    ps = [m.parameters() for m in models]
    wide = build_model(cell, M * H, L, ps[0]["1.bias"].size)
    pw = wide.parameters()
    G = pw["0.weight_hh_l0"].shape[0] // (M * H)
    for name, w in pw.items():
        if name.startswith("1."):
            continue
        w[...] = 0
        for m, pm in enumerate(ps):
            src = pm[name]
            for g in range(G):
                rows = slice(g * M * H + m * H, g * M * H + (m + 1) * H)
                part = src[g * H:(g + 1) * H]
                if w.ndim == 1 or name == "0.weight_ih_l0":
                    w[rows] = part                       # every member reads the same input
                else:
                    w[rows, m * H:(m + 1) * H] = part    # a member sees only its own units
    pw["1.weight"][...] = np.concatenate([pm["1.weight"] for pm in ps], axis=1) / M
    pw["1.bias"][...] = np.mean([pm["1.bias"] for pm in ps], axis=0)
    return wide


def _representable(*values):
    a = np.abs(np.concatenate([np.ravel(v) for v in values]))
    return bool(np.isfinite(a).all() and a.max() < 1e30)


class ForecastResult:
    """What ``fit_forecaster`` returns: the model (raw transformed values in, raw targets out),
    ``meta`` (what ``predict`` needs; JSON-serialisable) and the test part's numbers:
    origins, truth/pred (N, horizon) levels, quant (N, horizon, Q) or None, mse, last_mse,
    ar_mse, ar (the ARBaseline), coverage {q: share of truths <= forecast}, interval (the
    outermost quantiles' coverage), pinball, history, seconds, transform, transform_scores."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def fit_forecaster(series, n_train, cell="lstm", hidden=64, layers=1, window=40, horizon=1,
                   epochs=30, batch_size=64, lr=0.005, seed=0, transform="auto", quantiles=None,
                   ensemble=3, combine="ar", verbose=0, callbacks=None, validate=True):
    """Train a forecaster on ``series[:n_train]`` and test it on the rest (every origin whose
    horizon lies in the test part). ``transform``: "auto" or one of TRANSFORMS. ``quantiles``:
    None (MSE loss, point forecasts) or levels in (0, 1) (pinball loss; 0.5 is added if absent
    and is the point forecast). ``ensemble``: networks trained from seeds seed, seed+1, ...;
    ``combine``: "ar" (the forecast is the mean of the ensemble and the AR baseline; quantiles
    move with it) or "none" (the ensemble alone). ``callbacks``: a list, or a function of the
    member index returning one. Raises ValueError for unusable data or settings and
    TrainingDiverged."""
    from .train import Adam
    if combine not in COMBINE:
        raise ValueError(f"combine must be one of {', '.join(COMBINE)}, got {combine!r}")
    if isinstance(ensemble, bool) or not isinstance(ensemble, (int, np.integer)) or ensemble < 1:
        raise ValueError(f"ensemble must be a positive integer, got {ensemble!r}")
    x = np.asarray(series, np.float64)
    n = len(x)
    if transform == "auto":
        name, scores, reason = choose_transform(x[:n_train], window, horizon)
    else:
        offset(transform)
        name, scores, reason = transform, {}, "given"
    x = check_series(x, name)
    off = offset(name)
    train_origins = np.arange(window - 1 + off, n_train - horizon)
    test_origins = np.arange(n_train - 1, n - horizon)
    if len(train_origins) < 2 or len(test_origins) < 1:
        need_train = window + off + horizon + 1
        raise ValueError(f"{n} values are too few for window {window} and horizon {horizon}"
                         f"{' with transform ' + name if off else ''}: the training part "
                         f"({n_train} values) needs at least {need_train} and the test part "
                         f"({n - n_train}) at least {horizon}")
    z = apply_transform(x[:n_train], name)
    in_mean, in_std = float(z.mean()), float(z.std())
    if not in_std > 0:
        raise ValueError("the training part of the series is constant"
                         + (" after the transform" if off else "") + "; nothing to learn")
    Xtr = input_windows(x, name, window, train_origins)
    Ytr = target_windows(x, name, horizon, train_origins)
    if name == "none":
        out_mean, out_std = np.full(horizon, in_mean), np.full(horizon, in_std)
    else:
        out_mean, out_std = Ytr.mean(0), Ytr.std(0)
        out_std = np.where(out_std > 0, out_std, in_std)
    # The model works on raw values through float32 weights (fold_normalisation): a scale
    # float32 cannot hold would turn them into inf/NaN and save a model that predicts NaN.
    if not (_representable(in_mean, in_std, out_mean, out_std) and in_std > 1e-30):
        raise ValueError(f"the series' scale (mean {in_mean:.3g}, std {in_std:.3g}) is beyond what "
                         "a float32 model can represent; rescale the data")
    qs = None
    if quantiles is not None:
        qs = sorted(set(float(q) for q in quantiles) | {0.5})
        PinballLoss(qs)                                   # checks them
    Q = len(qs) if qs else 1
    Xte = input_windows(x, name, window, test_origins)
    Yte = target_windows(x, name, horizon, test_origins)

    def norm(X, Y):
        Yn = (Y - out_mean) / out_std
        return (((X - in_mean) / in_std)[..., None].astype(np.float32),
                np.repeat(Yn, Q, axis=1).astype(np.float32))

    members, histories = [], []
    t0 = time.perf_counter()
    for k in range(int(ensemble)):
        model = build_model(cell, hidden, layers, horizon * Q, seed + k)
        model.compile(loss=PinballLoss(qs) if qs else "mse", optimizer=Adam(lr, clipnorm=1.0))
        hist = model.fit(*norm(Xtr, Ytr), epochs=epochs, batch_size=batch_size,
                         validation_data=norm(Xte, Yte) if validate else None, verbose=verbose,
                         callbacks=callbacks(k) if callable(callbacks) else callbacks)
        if not all(np.isfinite(w).all() for w in model.parameters().values()):
            # A step with a finite loss but a huge learning rate can still overflow the
            # weights; such a model predicts NaN.
            raise TrainingDiverged("training diverged: the weights are no longer finite"
                                   + (f" ({model.stop_reason.split(';')[0]})" if model.stop_reason else ""))
        members.append(model)
        histories.append(hist.history)
    seconds = time.perf_counter() - t0
    model = merge_members(members)
    fold_normalisation(model, in_mean, in_std, np.repeat(out_mean, Q), np.repeat(out_std, Q))
    ar = ARBaseline(name, window).fit(x[:n_train])
    meta = {"transform": name, "window": int(window), "horizon": int(horizon),
            "context": int(window + off), "quantiles": qs, "ensemble": int(ensemble),
            "member_hidden": int(hidden), "combine": combine,
            "combine_ar": ar.to_dict() if combine == "ar" else None,
            "transform_scores": scores, "transform_reason": reason,
            "train_mean": in_mean, "train_std": in_std,
            "target_mean": [float(v) for v in out_mean], "target_std": [float(v) for v in out_std]}
    net, net_quant = _network_forecast(model, meta, x, test_origins)
    pred, quant = _combine(meta, x, test_origins, net, net_quant)
    truth = target_windows(x, "none", horizon, test_origins)
    # every key of the members' histories, averaged over the members epoch by epoch
    history = {k: list(np.mean([h[k] for h in histories], axis=0)) for k in histories[0]}
    res = ForecastResult(model=model, meta=meta, origins=test_origins, truth=truth, pred=pred,
                         quant=quant, history=history, histories=histories, seconds=seconds,
                         transform=name, transform_scores=scores, transform_reason=reason, ar=ar,
                         ensemble=int(ensemble), combine=combine,
                         mse=float(np.mean((pred - truth) ** 2)),
                         net_mse=float(np.mean((net - truth) ** 2)),
                         last_mse=float(np.mean((last_value(x, test_origins, horizon) - truth) ** 2)),
                         ar_mse=float(np.mean((ar.forecast(x, test_origins, horizon) - truth) ** 2)),
                         coverage=None, interval=None, pinball=None)
    if qs:
        res.coverage = {q: float(np.mean(truth <= quant[..., j])) for j, q in enumerate(qs)}
        res.interval = (qs[0], qs[-1], float(np.mean((truth >= quant[..., 0]) & (truth <= quant[..., -1]))))
        res.pinball = pinball(truth, quant, qs)
    return res


def predict(model, meta, x, origins):
    """Level forecasts of a model made by ``fit_forecaster`` (``meta`` as it returned, or as a
    model file of ``fastrnn train`` stores it; older files: transform "none") from each origin
    of the raw series ``x``: (point (N, horizon), quantiles (N, horizon, Q) or None). Quantile
    forecasts are sorted, so they never cross. With ``meta["combine"] == "ar"`` the point
    forecast is the mean of the network's and the AR model's, and the quantiles move with it."""
    x = check_series(x, meta.get("transform") or "none")
    return _combine(meta, x, origins, *_network_forecast(model, meta, x, origins))


def _network_forecast(model, meta, x, origins):
    """The network's own (point, quantiles or None) level forecasts; x already checked."""
    name = meta.get("transform") or "none"
    window = int(meta["window"])
    origins = np.asarray(origins)
    X = input_windows(x, name, window, origins)[..., None].astype(getattr(model, "dtype", np.float32))
    out = np.asarray(model.predict(X), np.float64).reshape(len(origins), -1)
    qs = meta.get("quantiles")
    last = x[origins]
    if not qs:
        return invert(name, last, out), None
    quant = invert(name, last, np.sort(out.reshape(len(origins), -1, len(qs)), axis=-1))
    return quant[..., qs.index(0.5)], quant


def _combine(meta, x, origins, point, quant):
    """meta's combination of the network's forecasts: with combine "ar", the mean of the point
    forecast and the AR model's, the quantiles shifted with it; else unchanged."""
    if meta.get("combine", "none") != "ar":
        return point, quant
    ar = ARBaseline.from_dict(meta.get("combine_ar") or {})
    shift = 0.5 * (ar.forecast(x, np.asarray(origins), point.shape[1]) - point)
    return point + shift, (None if quant is None else quant + shift[..., None])


def closed_loop(model, meta, context, steps):
    """Forecast ``steps`` values after ``context`` (raw levels) by feeding the model's point
    forecasts back in."""
    buf = list(np.asarray(context, np.float64))
    out = []
    while len(out) < steps:
        nxt = predict(model, meta, np.array(buf), [len(buf) - 1])[0][0]
        out.extend(nxt)
        buf.extend(nxt)
    return np.array(out[:steps])


# ============================================================================ backtest
def backtest(series, folds, test_fraction=0.2, on_fold=None, **kw):
    """Rolling-origin evaluation: the last ``test_fraction`` of the series is cut into ``folds``
    consecutive blocks; for each block a new model (transform chosen anew when "auto") is
    trained on everything before it and tested on it, beside the baselines refitted on the
    same data. ``kw`` go to ``fit_forecaster``; ``on_fold(i, result)`` is called after each.
    Returns the list of ForecastResults."""
    x = np.asarray(series, np.float64)
    n = len(x)
    horizon = kw.get("horizon", 1)
    n_test = int(round(n * test_fraction))
    block = n_test // folds if folds else 0
    if folds < 1 or block < horizon:
        raise ValueError(f"a test part of {n_test} values cannot be cut into {folds} blocks of at "
                         f"least {horizon} (the horizon); use fewer --folds or a larger --test-fraction")
    out = []
    for i in range(folds):
        start = n - n_test + i * block
        end = n if i == folds - 1 else start + block
        r = fit_forecaster(x[:end], start, validate=False, **kw)
        r.fold = (start, end)
        out.append(r)
        if on_fold is not None:
            on_fold(i, r)
    return out
