"""Cell variants vs the plain layer: one training step (forward + backward of the layer, as
bench/run.py's train mode times it) at the medium shape, each option alone.

    python bench/variants.py [--rounds 15] [--cells rnn,gru,lstm] [--threads N]

The layers of one cell kind are timed in alternating rounds (plain, option 1, option 2, ...,
then the next round), and each column is the median round; the ratio is option / plain (the
issue's target: <= 1.15; layer_norm <= 1.35). Weights are the same for every layer of a kind.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _impls import cpu_model  # noqa: E402  (lscpu's model name for the table headers)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fastrnn as fr  # noqa: E402

SHAPE = (100, 64, 32, 128)  # T, B, D, H: bench/_impls.py's "medium"
CLASSES = {"rnn": fr.RNN, "gru": fr.GRU, "lstm": fr.LSTM}
OPTIONS = {"plain": {}, "recurrent_dropout=0.25": {"recurrent_dropout": 0.25},
           "zoneout=0.1": {"zoneout": 0.1}, "weight_dropout=0.3": {"weight_dropout": 0.3},
           "peepholes": {"peepholes": True}, "layer_norm": {"layer_norm": True},
           "proj_size=64": {"proj_size": 64}}
ONLY = {"peepholes": ("lstm",), "proj_size=64": ("lstm",)}  # options of one kind only


def step(m, x, dy):
    m(x)
    m.backward(dy)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--cells", default="rnn,gru,lstm")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    fr.set_num_threads(args.threads)
    T, B, D, H = SHAPE
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    print(f"# training step (forward + backward), T={T} B={B} D={D} H={H}, float32, "
          f"{args.threads} threads, median of {args.rounds} rounds; CPU: {cpu_model()}")
    print(f"| cell | option | ms / step | vs plain |")
    print(f"|---|---|---:|---:|")
    for cell in args.cells.split(","):
        layers = {name: CLASSES[cell](D, H, seed=0, **kw) for name, kw in OPTIONS.items()
                  if cell in ONLY.get(name, (cell,))}
        # y has proj_size features per step with a projection
        dys = {name: np.ones((T, B, getattr(m, "proj_size", 0) or H), np.float32) for name, m in layers.items()}
        for name, m in layers.items():
            for _ in range(3):  # warm-up: buffers allocated, pages faulted in
                step(m, x, dys[name])
        times = {name: [] for name in layers}
        for _ in range(args.rounds):
            for name, m in layers.items():
                t0 = time.perf_counter()
                step(m, x, dys[name])
                times[name].append(time.perf_counter() - t0)
        base = statistics.median(times["plain"])
        for name in layers:
            med = statistics.median(times[name])
            print(f"| {cell.upper()} | {name} | {med * 1e3:.2f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
