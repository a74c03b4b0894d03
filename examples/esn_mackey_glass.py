"""Echo state network on the Mackey-Glass series: NRMSE of free-running prediction.

The Mackey-Glass delay equation (tau = 17, sampled every time unit) is the classic chaotic
benchmark of reservoir computing (Jaeger & Haas 2004). A 500-unit leaky tanh reservoir
(spectral radius 0.95, 90% sparse, leak 0.3) runs in the C engine; only the linear readout is
trained, in closed form by ridge regression, to predict the next value. Then the ESN runs
free -- its own output fed back as its input -- from the end of the training data.
Metric: NRMSE (RMSE / std of the series) of the free run over the first 84 steps (the
classic horizon) and over 500 steps, with the fit's one-step NRMSE.

    python examples/esn_mackey_glass.py [--quick] [--out plot.png]
"""
import numpy as np

from fastrnn.datasets import mackey_glass
from fastrnn.lore import ESN, nrmse

from _common import Timer, parser, run, save_figure


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    quick = args.quick
    N, train, free = (100, 500, 100) if quick else (500, 2000, 500)
    s = mackey_glass(train + free, seed=args.seed)
    s = (s - s.mean()) / s.std()
    u = s[:, None]
    esn = ESN(1, N, spectral_radius=0.95, sparsity=0.9, input_scaling=0.5, bias_scaling=0.2,
              leak=0.3, ridge=1e-8, washout=100 if quick else 200, seed=args.seed)
    with Timer() as t:
        esn.fit(u[:train - 1], u[1:train])          # one-step-ahead readout
        gen = esn.generate(free, X=u[:train])[:, 0]   # free run after the training data
    truth = s[train:train + free]
    h = min(84, free)
    res = {"train_nrmse": esn.train_nrmse, "nrmse_84": nrmse(truth[:h], gen[:h]),
           f"nrmse_{free}": nrmse(truth, gen), "seconds": t.seconds}
    print(f"ESN({N} units, rho 0.95, leak 0.3) fitted on {train} steps and run free for {free} "
          f"in {t.seconds:.2f} s")
    print(f"one-step training NRMSE {res['train_nrmse']:.2e}   free-running NRMSE: first {h} steps "
          f"{res['nrmse_84']:.2e}, {free} steps {res[f'nrmse_{free}']:.2e}")

    def fig(plt):
        f, (a1, a2) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
        x = np.arange(train, train + free)
        a1.plot(np.arange(train - 200, train), s[train - 200:train], "k", lw=0.8, label="training data")
        a1.plot(x, truth, "k--", lw=0.8, label="truth")
        a1.plot(x, gen, "tab:red", lw=1, label="ESN free run")
        a1.legend(fontsize=8)
        a1.set_title("Mackey-Glass (tau = 17): echo state network running free")
        a2.semilogy(x, np.abs(gen - truth) + 1e-12)
        a2.set_ylabel("|error|")
        a2.set_xlabel("time")
        return f

    save_figure(fig, args.out, "esn_mackey_glass.png")
    return res


if __name__ == "__main__":
    run(main)
