"""`python -m fastrnn` / `fastrnn`: a small built-in demo, an LSTM learning to continue a sine wave.

It uses only the engine layer (fr.LSTM with backward) plus a linear read-out and Adam, so it
shows the NumPy-in/NumPy-out API end to end: windows of the wave in, next value out.
"""
import argparse
import sys
import time

import numpy as np


def sine_windows(n, window, rng):
    """n windows of a noisy sine with random phase and frequency; target is the next value."""
    t = np.arange(window + 1)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    freq = rng.uniform(0.05, 0.15, (n, 1))
    wave = np.sin(freq * t + phase) + 0.02 * rng.standard_normal((n, window + 1))
    return wave[:, :window, None].astype(np.float32), wave[:, window:].astype(np.float32)


def demo(epochs=15, hidden=32, window=40, samples=2048, batch=64, seed=0, out=sys.stdout):
    import fastrnn as fr
    from fastrnn.optim import Adam

    rng = np.random.default_rng(seed)
    X, y = sine_windows(samples, window, rng)
    lstm = fr.LSTM(1, hidden, batch_first=True, seed=seed)
    head = {"w": (rng.standard_normal((hidden, 1)) / np.sqrt(hidden)).astype(np.float32),
            "b": np.zeros(1, np.float32)}
    opt = Adam(learning_rate=1e-2)
    params = {**lstm.parameters(), **{"head." + k: v for k, v in head.items()}}
    print(f"fastrnn demo: LSTM(1, {hidden}) predicts the next value of a sine wave "
          f"({samples} windows of {window} steps, batch {batch})", file=out)
    losses = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(samples)
        total = 0.0
        for i in range(0, samples, batch):
            idx = order[i:i + batch]
            xb, yb = X[idx], y[idx]
            seq, _ = lstm(xb)
            last = seq[:, -1]                       # many-to-one: the last step's state
            pred = last @ head["w"] + head["b"]
            err = pred - yb
            total += float(np.sum(err ** 2))
            dpred = 2 * err / len(idx)              # d(mean squared error)/d(pred)
            dseq = np.zeros_like(seq)
            dseq[:, -1] = dpred @ head["w"].T
            lstm.zero_grad()
            lstm.backward(dseq)
            grads = {**lstm.grads, "head.w": last.T @ dpred, "head.b": dpred.sum(0)}
            opt.step(params, grads)
        losses.append(total / samples)
        print(f"epoch {epoch:3d}  loss {losses[-1]:.5f}  {1e3 * (time.perf_counter() - t0):7.1f} ms/epoch",
              file=out)
    return losses


def main(argv=None):
    p = argparse.ArgumentParser(prog="fastrnn", description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.epochs < 1 or args.hidden < 1:
        p.error("--epochs and --hidden must be >= 1")
    losses = demo(epochs=args.epochs, hidden=args.hidden, seed=args.seed)
    print(f"loss fell from {losses[0]:.4f} to {losses[-1]:.4f} ({losses[0] / losses[-1]:.0f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
