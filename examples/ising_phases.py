"""2D Ising model phases: an RNN reading a 10x10 spin configuration row by row classifies it
as ordered (T < T_c ~ 2.269) or disordered.

A vectorised checkerboard Metropolis sampler (fastrnn.datasets.ising_metropolis) generates
configurations at temperatures from 1.0 to 3.6; a GRU reads the 10 rows as 10 steps of 10
spins and a Dense layer gives the two logits. Metric: accuracy on held-out configurations
(errors concentrate near T_c, where a finite 10x10 lattice is genuinely ambiguous: its
magnetisation fades gradually, over roughly 2.0 < T < 2.8).

    python examples/ising_phases.py [--quick] [--out plot.png]
"""
import numpy as np

import fastrnn as fr
from fastrnn.datasets import T_C, ising_configurations

from _common import Timer, parser, run, save_figure


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    quick = args.quick
    with Timer() as tg:
        X, y, temps = ising_configurations(n_per_temp=12 if quick else 250, L=10,
                                           sweeps=60 if quick else 400, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(X))
    X, y, temps = X[order], y[order], temps[order]
    split = int(0.75 * len(X))
    model = fr.Sequential([fr.Recurrent(fr.GRU(10, 8 if quick else 32), return_sequences=False),
                           fr.Dense(2)], seed=args.seed)
    model.compile(loss="cross_entropy", optimizer=fr.Adam(0.003), metrics=["accuracy"])
    with Timer() as t:
        model.fit(X[:split], y[:split], epochs=2 if quick else 10, batch_size=32, verbose=0)
    acc = model.evaluate(X[split:], y[split:])["accuracy"]
    pred = model.predict(X[split:]).argmax(-1)
    Tt = temps[split:]
    per_T = {float(T): float((pred[Tt == T] == y[split:][Tt == T]).mean()) for T in np.unique(Tt)}
    far = np.abs(Tt - T_C) > 0.5
    acc_far = float((pred[far] == y[split:][far]).mean()) if far.any() else float("nan")
    print(f"{len(X)} configurations sampled in {tg.seconds:.1f} s; GRU trained in {t.seconds:.1f} s")
    print(f"test accuracy {acc:.3f}  (|T - T_c| > 0.5: {acc_far:.3f})")
    for T, a in per_T.items():
        print(f"  T = {T:.2f}  accuracy {a:.2f}")

    def fig(plt):
        f, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        Ts = np.array(list(per_T))
        a1.plot(Ts, list(per_T.values()), "o-")
        a1.axvline(T_C, color="r", ls="--", label="T_c")
        a1.set_xlabel("temperature")
        a1.set_ylabel("test accuracy")
        a1.legend()
        p_ord = fr.softmax(model.predict(X[split:]))[:, 1]
        a2.scatter(Tt, p_ord, s=5, alpha=0.5)
        a2.axvline(T_C, color="r", ls="--")
        a2.set_xlabel("temperature")
        a2.set_ylabel("P(ordered)")
        f.suptitle("Ising 10x10: ordered vs disordered, GRU over rows")
        return f

    save_figure(fig, args.out, "ising_phases.png")
    return {"accuracy": float(acc), "accuracy_far_from_Tc": acc_far, "train_s": t.seconds}


if __name__ == "__main__":
    run(main)
