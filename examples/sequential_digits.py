"""Sequential digits: scikit-learn's 8x8 handwritten digits read pixel by pixel (T = 64),
IRNN vs LSTM -- the small cousin of the pixel-MNIST benchmark of Le et al. (2015).

Each image becomes a sequence of 64 grey values; the model sees one pixel per step and
classifies the digit from its final state, so it must carry information across up to 64
steps. IRNN: ReLU RNN with identity recurrent weights and zero biases (fastrnn.lore.init_);
LSTM: forget-gate bias 1. Metric: test accuracy on 20% held-out images.
Needs scikit-learn for the data (``pip install scikit-learn``).

    python examples/sequential_digits.py [--quick] [--out plot.png]
"""
import sys

import numpy as np

import fastrnn as fr
from fastrnn.datasets import load_digits
from fastrnn.lore import init_

from _common import Timer, parser, run, save_curves


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    quick = args.quick
    try:
        X, y = load_digits()
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(X))
    X, y = X[order], y[order]
    if quick:
        X, y = X[:300], y[:300]
    split = int(0.8 * len(X))
    H = 16 if quick else 64
    # The IRNN's updates are cheap but it learns slowly (as in Le et al.): more epochs.
    epochs_of = {"IRNN": 1 if quick else 100, "LSTM": 1 if quick else 40}
    res, hist = {}, {}
    for name in ("IRNN", "LSTM"):
        eng = fr.RNN(1, H, nonlinearity="relu") if name == "IRNN" else fr.LSTM(1, H)
        model = fr.Sequential([fr.Recurrent(eng, return_sequences=False), fr.Dense(10)], seed=args.seed)
        if name == "IRNN":
            init_(model, recurrent="identity", input="glorot", bias="zeros", seed=args.seed)
            opt = fr.Adam(1e-3, clipnorm=1.0)
        else:
            init_(model, forget_bias=1.0)
            opt = fr.Adam(5e-3, clipnorm=1.0)
        epochs = epochs_of[name]
        model.compile(loss="cross_entropy", optimizer=opt, metrics=["accuracy"])
        with Timer() as t:
            h = model.fit(X[:split], y[:split], epochs=epochs, batch_size=32, verbose=0,
                          validation_data=(X[split:], y[split:]))
        acc = model.evaluate(X[split:], y[split:])["accuracy"]
        res[name] = {"test_accuracy": float(acc), "train_s": t.seconds}
        hist[name] = h.history["val_accuracy"]
        print(f"{name:5s} ({H} units) test accuracy {acc:.3f}   ({t.seconds:.1f} s for {epochs} epochs)")

    save_curves(hist, "held-out accuracy",
                "8x8 digits read pixel by pixel (T = 64)",
                args.out, "sequential_digits.png")
    return res


if __name__ == "__main__":
    run(main)
