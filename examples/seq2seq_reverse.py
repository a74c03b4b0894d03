"""Seq2seq on a toy translation task -- reverse a digit string -- trained with teacher forcing
vs scheduled sampling.

A GRU encoder reads the one-hot digits (3 to 8 of them, ragged ``lengths``); its final state
seeds a GRU decoder that emits the reversed string and an end token. Two identical models
train for the same epochs: one always fed the ground-truth previous token (teacher forcing),
one fed its own prediction with a probability that grows over training (scheduled sampling,
Bengio et al. 2015, inverse-sigmoid schedule). Metric: sequence accuracy of greedy decoding
(every token up to the end token right) on held-out strings, and per-token accuracy.

    python examples/seq2seq_reverse.py [--quick] [--out plot.png]
"""
import numpy as np

import fastrnn as fr
from fastrnn.datasets import reverse_digits

from _common import Timer, parser, run, save_curves


def seq_accuracy(pred, tgt, lengths):
    ok = [np.array_equal(pred[i, :k + 1], tgt[i, :k + 1]) for i, k in enumerate(lengths)]
    tok = [np.mean(pred[i, :k + 1] == tgt[i, :k + 1]) for i, k in enumerate(lengths)]
    return float(np.mean(ok)), float(np.mean(tok))


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    quick = args.quick
    n, H, epochs = (200, 16, 1) if quick else (6000, 96, 25)
    X, lengths, y, _ = reverse_digits(n + 1000, 3, 8, seed=args.seed)
    tr, te = slice(0, n), slice(n, None)
    schedules = {"teacher forcing": 1.0,
                 "scheduled sampling": fr.TeacherForcing("inverse_sigmoid", k=max(1, epochs // 5))}
    res, curves = {}, {}
    for name, tf in schedules.items():
        dec = fr.Decoder("GRU", hidden_size=H, vocab_size=12, embedding_dim=16, teacher_forcing=tf,
                         seed=args.seed)
        model = fr.Seq2Seq(fr.GRU(11, H), dec, start_token=11, seed=args.seed)
        model.compile(loss="cross_entropy", optimizer=fr.Adam(0.005, clipnorm=1.0))
        curves[name] = []
        with Timer() as t:
            for _ in range(epochs):
                model.fit(X[tr], y[tr], lengths=lengths[tr], epochs=1, batch_size=64, verbose=0)
                if not quick:
                    pred = model.generate(X[te][:300], steps=y.shape[1], lengths=lengths[te][:300])
                    curves[name].append(seq_accuracy(pred, y[te][:300], lengths[te][:300])[0])
        pred = model.generate(X[te], steps=y.shape[1], lengths=lengths[te])
        acc, tok = seq_accuracy(pred, y[te], lengths[te])
        res[name] = {"sequence_accuracy": acc, "token_accuracy": tok, "train_s": t.seconds}
        print(f"{name:19s} sequence accuracy {acc:.3f}   token accuracy {tok:.3f}   ({t.seconds:.1f} s)")
    ex = X[te][0].argmax(-1)[:lengths[te][0]]
    print(f"example: {''.join(map(str, ex))} -> {''.join(str(d) for d in pred[0] if d < 10)}")

    save_curves(curves, "held-out sequence accuracy (greedy)",
                "Reverse a digit string: teacher forcing vs scheduled sampling",
                args.out, "seq2seq_reverse.png")
    return res


if __name__ == "__main__":
    run(main)
