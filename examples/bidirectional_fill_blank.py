"""Bidirectional RNNs: fill in the blank when the answer depends on later context.

Strings of random digits with one blank; the answer is (digit before + digit after) mod 10.
A left-to-right GRU reaches the blank before it has seen the digit after it, so it can only
guess (~10%); a bidirectional GRU has read the string from both ends and can answer.
Both models predict a digit at every step; only the blank's prediction is scored
(``sample_weight`` masks the rest). Metric: accuracy at the blank on held-out strings.

    python examples/bidirectional_fill_blank.py [--quick] [--out plot.png]
"""
import numpy as np

import fastrnn as fr
from fastrnn.datasets import fill_in_blank

from _common import Timer, parser, run, save_curves


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    quick = args.quick
    n, T, H, epochs = (256, 8, 8, 1) if quick else (5000, 12, 48, 12)
    X, y, w, pos = fill_in_blank(n + 2000, T, seed=args.seed)
    tr, te = slice(0, n), slice(n, None)
    res, hist = {}, {}
    for name, bidir in (("unidirectional GRU", False), ("bidirectional GRU", True)):
        # A per-step ReLU layer combines the two directions' features: (a + b) mod 10 is not
        # a linear function of them.
        model = fr.Sequential([fr.Embedding(11, 16), fr.GRU(16, H, bidirectional=bidir),
                               fr.Dense(2 * H, activation="relu"), fr.Dense(10)], seed=args.seed)
        model.compile(loss="cross_entropy", optimizer=fr.Adam(0.005), metrics=["accuracy"])
        with Timer() as t:
            h = model.fit(X[tr], y[tr], sample_weight=w[tr], epochs=epochs, batch_size=64,
                          validation_data=None, verbose=0)
        acc = model.evaluate(X[te], y[te], sample_weight=w[te])["accuracy"]
        res[name] = {"blank_accuracy": float(acc), "train_s": t.seconds}
        hist[name] = h.history["accuracy"]
        print(f"{name:19s} accuracy at the blank {acc:.3f}   ({t.seconds:.1f} s)")

    save_curves(hist, "training accuracy at the blank",
                "Fill in the blank: (left + right) mod 10",
                args.out, "bidirectional_fill_blank.png", chance=0.1)
    return res


if __name__ == "__main__":
    run(main)
