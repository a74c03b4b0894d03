"""Crack propagation in a fibre-bundle model: an LSTM tracks hidden damage and stress and
forecasts the remaining steps to failure from the early loading history.

Each specimen is a fibre bundle (Peirce / Daniels), the standard statistical model of damage
in heterogeneous quasi-brittle materials (composites, concrete, rock): N = 5000 parallel
elastic fibres with equal load sharing (ELS), and its own disorder --

  strength       fibre thresholds Weibull(m, lam), m in [1.5, 4], lam in [0.8, 1.2];
  fatigue        the intact fibres' strength degrades as threshold * (1 - c(t)), with
                 dc/dt = a * sigma_f^2 (Basquin/Paris-type damage accumulation) and a
                 log-uniform in [0.005, 0.1];
  loading        a step-stress test: the applied stress sigma(t) = s0 + ds * floor(t / 20),
                 s0 in [0.1, 0.2], ds in [0.02, 0.04] per 20-step hold.

Every step: the damage c grows, then the avalanche runs -- the load on each intact fibre
sigma_f = sigma * N / N_intact breaks every fibre whose degraded threshold is below it, the
load is shared again, and so on until it is stable. The specimen fails when the last fibre
breaks (a final catastrophic avalanche); lifetimes range from ~50 to ~350 steps.

The rig records, per step: the applied stress (load cell), the strain sigma_f / E plus
extensometer noise (std 0.005; E in [0.9, 1.1] unknown), acoustic-emission hits
Poisson(eta * fibres broken) + Poisson(0.2) background (sensor coupling eta in [0.3, 0.8]
unknown) and the elapsed time. Hidden: the damage D (fraction of fibres broken), the fibre
stress sigma_f = sigma / (1 - D) and the steps left to failure.

One LSTM reads the records step by step and outputs, at every step, log(steps to failure),
D and sigma_f (MSE, each specimen's history up to its failure via ``lengths``). It is causal,
so its output at step t uses only the first t steps. Metrics on held-out specimens:
  remaining-life MAE (steps) and median relative error, read at 30%, 40% and 50% of each
     specimen's life; baselines: the life table (the mean remaining life of the training
     specimens that lasted as long -- what the elapsed time alone says) and a linear
     extrapolation of the TRUE damage history to the training median damage at failure;
  damage tracking R^2 / MAE and fibre-stress R^2 over all steps; baseline for the damage:
     1 - sigma / strain with the nominal E = 1 (strain alone).

    python examples/crack_propagation.py [--quick] [--out plot.png]
"""
import numpy as np

import fastrnn as fr
from fastrnn.lore import init_

from _common import Timer, parser, run, save_figure

HOLD = 20                       # steps per load level of the step-stress test
T_MAX = 400                     # steps simulated; specimens still intact then are dropped
FRACTIONS = (0.3, 0.4, 0.5)     # where in each test specimen's life the forecast is read


def simulate_bundles(n, n_fibres=5000, seed=0, chunk=500, fatigue=True):
    """n fibre bundles under step-stress fatigue loading (equal load sharing).

    Returns a dict of per-specimen parameters and (n, T_MAX) histories: applied stress
    "sigma", fibre stress "sigma_f", damage "D", fibres broken per step "broken", and the
    failure step "t_fail" (T_MAX for a specimen still intact at the end). "strength" is each
    bundle's static (fatigue-free) strength, Daniels' max_k thr_(k) * (N - k + 1) / N over
    its sorted thresholds; fatigue=False switches the strength degradation off."""
    rng = np.random.default_rng(seed)
    m = rng.uniform(1.5, 4.0, n)
    lam = rng.uniform(0.8, 1.2, n)
    a = np.exp(rng.uniform(np.log(0.005), np.log(0.1), n)) * float(fatigue)
    s0 = rng.uniform(0.1, 0.2, n)
    ds = rng.uniform(0.02, 0.04, n)
    out = {k: np.zeros((n, T_MAX)) for k in ("sigma", "sigma_f", "D", "broken")}
    t_fail = np.full(n, T_MAX)
    strength = np.zeros(n)
    N = n_fibres
    for lo in range(0, n, chunk):           # chunks bound the (chunk, N) threshold array
        idx = np.arange(lo, min(n, lo + chunk))
        k = len(idx)
        thr = np.sort(lam[idx, None] * rng.weibull(m[idx, None], (k, N)), axis=1)
        strength[idx] = (thr * (N - np.arange(N)) / N).max(1)
        # Thresholds of all specimens in one sorted array (specimen j's shifted by 4j, above
        # any threshold of specimen j - 1): one searchsorted counts every specimen's broken
        # fibres at once.
        span = 4.0 * np.ceil(thr.max() / 4.0 + 1)
        flat = (thr + span * np.arange(k)[:, None]).ravel()

        def n_broken(u):
            u = np.minimum(u, span * 0.999)
            return np.searchsorted(flat, u + span * np.arange(k), side="right") - N * np.arange(k)

        c = np.zeros(k)                    # fatigue damage of the intact fibres
        u_max = np.zeros(k)                # largest effective load sigma_f / (1 - c) so far
        intact = np.full(k, N)
        alive = np.ones(k, bool)
        for t in range(T_MAX):
            sigma = s0[idx] + ds[idx] * (t // HOLD)
            c = np.minimum(c + a[idx] * (sigma * N / np.maximum(intact, 1)) ** 2, 1.0)
            before = intact
            while True:                    # the avalanche: break, share the load, repeat
                sigma_f = sigma * N / np.maximum(intact, 1)
                u_max = np.maximum(u_max, sigma_f / np.maximum(1.0 - c, 1e-12))
                now = N - n_broken(u_max)
                if np.array_equal(now, intact):
                    break
                intact = now
            failed = alive & (intact == 0)
            t_fail[idx[failed]] = t
            alive &= ~failed
            out["sigma"][idx, t] = sigma
            out["sigma_f"][idx, t] = sigma * N / np.maximum(intact, 1)
            out["D"][idx, t] = 1.0 - intact / N
            out["broken"][idx, t] = before - intact
    out.update(m=m, lam=lam, a=a, s0=s0, ds=ds, t_fail=t_fail, strength=strength)
    return out


def measure(sim, seed=0):
    """What the rig records: (n, T, 4) features and the raw strain / AE hits."""
    rng = np.random.default_rng(seed + 1)
    n, T = sim["sigma"].shape
    E = rng.uniform(0.9, 1.1, n)
    eta = rng.uniform(0.3, 0.8, n)
    strain = sim["sigma_f"] / E[:, None] + 0.005 * rng.standard_normal((n, T))
    hits = rng.poisson(eta[:, None] * sim["broken"]) + rng.poisson(0.2, (n, T))
    t = np.broadcast_to(np.arange(T) / 100.0, (n, T))
    X = np.stack([5 * sim["sigma"], 10 * (strain - sim["sigma"]), np.log1p(hits), t], -1)
    return X, strain, hits


def r2(pred, true):
    return float(1 - np.sum((pred - true) ** 2) / np.sum((true - true.mean()) ** 2))


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    quick = args.quick
    n, n_fibres, H, epochs = (700, 2000, 32, 6) if quick else (3000, 5000, 64, 25)
    with Timer() as tg:
        sim = simulate_bundles(n, n_fibres=n_fibres, seed=args.seed)
    keep = sim["t_fail"] < T_MAX
    t_fail = sim["t_fail"][keep]
    n = int(keep.sum())
    T = int(t_fail.max())                   # steps 0 .. t_fail - 1: the specimen still stands
    X, strain, hits = measure(sim, seed=args.seed)
    X, strain, hits = X[keep, :T], strain[keep, :T], hits[keep, :T]
    sigma, sigma_f, D = (sim[k][keep, :T] for k in ("sigma", "sigma_f", "D"))
    steps = np.arange(T)
    valid = steps[None, :] < t_fail[:, None]
    remaining = t_fail[:, None] - steps[None, :]
    log_rem = np.log(np.maximum(remaining, 1))
    mu, sd = log_rem[valid].mean(), log_rem[valid].std()
    Y = np.stack([(log_rem - mu) / sd, 3 * D, 10 * (sigma_f - sigma)], -1)
    X = np.where(valid[..., None], X, 0).astype(np.float32)
    Y = np.where(valid[..., None], Y, 0).astype(np.float32)

    split = int(0.8 * n)
    tr, te = slice(0, split), slice(split, None)
    model = fr.Sequential([fr.LSTM(4, H), fr.Dense(3)], seed=args.seed)
    init_(model, forget_bias=1.0)
    model.compile(loss="mse", optimizer=fr.Adam(0.005, clipnorm=1.0))
    with Timer() as t:
        model.fit(X[tr], Y[tr], lengths=t_fail[tr], epochs=epochs, batch_size=32, verbose=0)
    P = model.predict(X[te], lengths=t_fail[te])
    rem_pred = np.exp(P[..., 0] * sd + mu)
    D_pred, sf_pred = P[..., 1] / 3, P[..., 2] / 10 + sigma[te]

    # Remaining life read at 30/40/50% of each test specimen's life.
    tf_tr, tf_te = t_fail[tr], t_fail[te]
    life_table = np.array([np.mean(tf_tr[tf_tr > s] - s) if (tf_tr > s).any() else 1.0
                           for s in range(T)])
    D_fail = np.median(D[tr][np.arange(split), tf_tr - 1])    # training damage just before failure
    rows = np.arange(len(tf_te))
    err, err_table, err_extrap, rel = [], [], [], []
    per_fraction = {}
    for f in FRACTIONS:
        s = (f * tf_te).astype(int)
        true = tf_te - s
        # Linear extrapolation of the true damage (a least-squares line through D(0..s)) to
        # the training median damage at failure.
        slope = np.array([np.polyfit(np.arange(si + 1), D[te][i, :si + 1], 1)[0]
                          for i, si in zip(rows, s)])
        to_go = np.where(slope > 0, (D_fail - D[te][rows, s]) / np.maximum(slope, 1e-12), T_MAX)
        extrap = np.clip(to_go, 1, tf_tr.max() - s)       # at most the longest training life
        e, eb, ex = (np.abs(p - true) for p in (rem_pred[rows, s], life_table[s], extrap))
        err.append(e), err_table.append(eb), err_extrap.append(ex)
        rel.append(e / true)
        per_fraction[f] = {"lstm": float(e.mean()), "life_table": float(eb.mean()),
                           "extrapolation": float(ex.mean())}
    # The same over the whole life, for the plot.
    curve_f = np.linspace(0.05, 0.95, 19)
    curve = {"LSTM": [], "life table": []}
    for f in curve_f:
        s = (f * tf_te).astype(int)
        curve["LSTM"].append(np.mean(np.abs(rem_pred[rows, s] - (tf_te - s))))
        curve["life table"].append(np.mean(np.abs(life_table[s] - (tf_te - s))))

    vt = valid[te]
    D_strain = 1 - sigma[te] / strain[te]
    res = {"remaining_mae": float(np.mean(err)),
           "baseline_remaining_mae": float(np.mean(err_table)),
           "extrapolation_remaining_mae": float(np.mean(err_extrap)),
           "remaining_rel_error": float(np.median(rel)),
           "damage_r2": r2(D_pred[vt], D[te][vt]),
           "damage_mae": float(np.abs(D_pred - D[te])[vt].mean()),
           "strain_damage_r2": r2(D_strain[vt], D[te][vt]),
           "stress_r2": r2(sf_pred[vt], sigma_f[te][vt]),
           "train_s": t.seconds}
    print(f"{len(keep)} fibre bundles of {n_fibres} fibres simulated in {tg.seconds:.1f} s "
          f"({len(keep) - n} still intact after {T_MAX} steps, dropped); lifetimes "
          f"{t_fail.min()}-{t_fail.max()} steps, median {np.median(t_fail):.0f}")
    print(f"LSTM({H}) trained on {split} specimens in {t.seconds:.1f} s; "
          f"{len(tf_te)} test specimens")
    print("remaining steps to failure, MAE   LSTM   life table   damage extrapolation")
    for f, d in per_fraction.items():
        print(f"  read at {f:.0%} of life          {d['lstm']:6.1f}   {d['life_table']:6.1f}"
              f"       {d['extrapolation']:6.1f}")
    print(f"  mean                          {res['remaining_mae']:6.1f}   "
          f"{res['baseline_remaining_mae']:6.1f}       {res['extrapolation_remaining_mae']:6.1f}"
          f"   (LSTM median relative error {res['remaining_rel_error']:.2f})")
    print(f"damage tracking: R^2 {res['damage_r2']:.3f}, MAE {res['damage_mae']:.4f} "
          f"(strain alone, 1 - sigma/strain: R^2 {res['strain_damage_r2']:.3f}); "
          f"fibre stress R^2 {res['stress_r2']:.4f}")

    def fig(plt):
        f, axs = plt.subplots(2, 2, figsize=(12, 8))
        i = int(np.argsort(tf_te)[len(tf_te) // 2])          # a median-life test specimen
        L = tf_te[i]
        ax = axs[0, 0]
        ax.plot(steps[:L], sigma[te][i, :L], "k", label="applied stress")
        ax.plot(steps[:L], sigma_f[te][i, :L], "tab:blue", label="fibre stress (true)")
        ax.plot(steps[:L], sf_pred[i, :L], "tab:blue", ls="--", label="fibre stress (LSTM)")
        ax.plot(steps[:L], D[te][i, :L], "tab:red", label="damage D (true)")
        ax.plot(steps[:L], D_pred[i, :L], "tab:red", ls="--", label="damage D (LSTM)")
        ax.set_xlabel("step")
        ax.set_title("a test specimen: hidden state tracked")
        ax2 = ax.twinx()
        ax2.bar(steps[:L], hits[te][i, :L], color="0.6", alpha=0.6, width=1.0)
        ax2.set_ylabel("AE hits per step (grey)")
        ax.legend(fontsize=7, loc="upper left")
        ax = axs[0, 1]
        for j in np.argsort(tf_te)[[len(tf_te) // 6, len(tf_te) // 2, 5 * len(tf_te) // 6]]:
            Lj = tf_te[j]
            line, = ax.plot(steps[:Lj], rem_pred[j, :Lj], label=f"LSTM, life {Lj}")
            ax.plot(steps[:Lj], Lj - steps[:Lj], color=line.get_color(), ls=":")
        ax.set_xlabel("step")
        ax.set_ylabel("steps to failure")
        ax.set_title("forecast as the test runs (dotted: truth)")
        ax.legend(fontsize=7)
        ax = axs[1, 0]
        s = (0.4 * tf_te).astype(int)
        ax.scatter(tf_te - s, rem_pred[rows, s], s=8, alpha=0.6, label="LSTM")
        ax.scatter(tf_te - s, life_table[s], s=8, alpha=0.6, label="life table")
        lim = [0, max(tf_te - s) * 1.05]
        ax.plot(lim, lim, "k:")
        ax.set_xlabel("true steps to failure")
        ax.set_ylabel("predicted")
        ax.set_title("forecast read at 40% of life")
        ax.legend(fontsize=7)
        ax = axs[1, 1]
        for name, v in curve.items():
            ax.plot(curve_f, v, "o-", ms=3, label=name)
        ax.set_xlabel("fraction of life read")
        ax.set_ylabel("MAE of steps to failure")
        ax.set_title("forecast error along the life")
        ax.legend(fontsize=7)
        f.suptitle("Fibre-bundle fatigue under step-stress loading: LSTM damage tracking and "
                   "remaining life")
        return f

    save_figure(fig, args.out, "crack_propagation.png")
    return res


if __name__ == "__main__":
    run(main)
