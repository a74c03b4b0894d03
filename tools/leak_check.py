"""Memory must stay flat over many calls: 20,000 forward+backward calls of each layer kind and
20,000 cell steps (forward+backward), RSS sampled as it goes.

    python tools/leak_check.py [--calls 20000]

Prints RSS after a warm-up and at the end for each case, and exits non-zero when any case grew
by more than --tolerance MiB (default 8) after its warm-up (the first 10% of the calls).
"""
import argparse
import sys

import numpy as np

import fastrnn as fr


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def layer_case(cls, calls):
    layer = cls(8, 32, num_layers=2, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 4, 8)).astype(np.float32)
    lengths = np.array([20, 7, 13, 1])
    dy = np.ones((20, 4, 32), np.float32)
    for i in range(calls):
        layer.zero_grad()
        y, _ = layer(x, lengths=lengths if i % 2 else None)
        layer.backward(dy)
        if i % 3 == 0:
            with fr.no_grad():
                layer(x)
        yield i


def cell_case(cls, calls):
    cell = cls(8, 32, seed=0)
    x = np.ones((2, 8), np.float32)
    lstm = cls is fr.LSTMCell
    h = (np.zeros((2, 32), np.float32),) * 2 if lstm else np.zeros((2, 32), np.float32)
    for i in range(calls):
        h1 = cell(x, h)
        cell.backward((np.ones((2, 32), np.float32), None) if lstm else np.ones((2, 32), np.float32))
        h = h1
        yield i


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--tolerance", type=float, default=8.0, help="allowed growth in MiB")
    args = ap.parse_args(argv)
    warm = max(1, args.calls // 10)
    bad = 0
    cases = [(c.__name__, layer_case, c) for c in (fr.RNN, fr.GRU, fr.LSTM)]
    cases += [(c.__name__, cell_case, c) for c in (fr.RNNCell, fr.GRUCell, fr.LSTMCell)]
    for name, case, cls in cases:
        start = None
        for i in case(cls, args.calls):
            if i == warm:
                start = rss_mib()
        end = rss_mib()
        grew = end - start
        ok = grew <= args.tolerance
        bad += not ok
        print(f"{name:9s} {args.calls} calls: RSS {start:.1f} MiB after {warm} -> {end:.1f} MiB "
              f"(+{grew:.2f}) {'ok' if ok else 'GREW'}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
