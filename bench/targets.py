"""The speed targets of the "fast on every CPU" issue, checked against a bench/run.py result.

    python bench/targets.py [RESULTS.json] [--peak]

RESULTS.json: a file bench/run.py wrote (default: the newest in bench/results/). Every target
row is printed with its measured ratio (fastrnn vs PyTorch, time torch / time fastrnn, from the
same alternating run) and met / MISSED / not measured. --peak also measures this machine's
float32 SGEMM peak (NumPy's BLAS, 2048^3, threads as in the run) for the large rows' "fraction of
peak" target, in this process, so run it on the machine and under the conditions of the run.

Targets (the issue's):
  training step >= 1.5x on every tiny, medium and stream row, every cell;
  large training rows >= 1.15x and >= 90% of the machine's SGEMM peak;
  2-layer bidirectional LSTM and GRU (medium2bi) >= 1.5x, train and inference; 2-layer stream
  inference (stream2) >= 1.5x.
  README forecaster and classifier: time per fit epoch >= 2.5x PyTorch's plain loop (the run's
  fit rows, bench/run.py --shapes fit).
The cell-step target (bench/cell_floor.py) has its own script.
"""
import argparse
import glob
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

ALL, TWO = ("rnn", "gru", "lstm"), ("gru", "lstm")
TARGETS = [  # (shape, modes, cells, ratio, fraction of SGEMM peak or None)
    ("tiny", ("train",), ALL, 1.5, None),
    ("medium", ("train",), ALL, 1.5, None),
    ("stream", ("train",), ALL, 1.5, None),
    ("large", ("train",), ALL, 1.15, 0.9),
    ("medium2bi", ("train", "infer"), TWO, 1.5, None),  # the issue names LSTM and GRU
    ("stream2", ("infer",), TWO, 1.5, None),
]
FIT_TARGET = 2.5  # time per fit epoch of the README's forecaster and classifier


def sgemm_peak(threads):
    """GFLOP/s of a 2048^3 float32 matrix product, best of 5."""
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    import numpy as np
    n = 2048
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = a.copy()
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    return 2 * n ** 3 / best / 1e9


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="?")
    p.add_argument("--peak", action="store_true")
    a = p.parse_args(argv)
    path = a.results or max(glob.glob(os.path.join(HERE, "results", "bench-*.json")), key=os.path.getmtime)
    with open(path) as f:
        run = json.load(f)
    peak = sgemm_peak(run["threads"]) if a.peak else None
    print(f"{os.path.basename(path)}: {run['cpu']}, {run['threads']} threads, {run['date']}, commit {run['commit']}")
    if peak:
        print(f"SGEMM peak, measured now: {peak:.0f} GFLOP/s (NumPy, 2048^3 float32)")
    print("\n| cell | shape | mode | target | fastrnn ms | torch ms | ratio | fastrnn GFLOP/s | of peak | verdict |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = {(r["cell"], r["shape"], r["mode"], r["dtype"]): r for r in run["rows"]}
    met = missed = 0
    unchecked = 0
    for shape, modes, cells, want, frac in TARGETS:
        for mode in modes:
            for cell in cells:
                r = rows.get((cell, shape, mode, "float32"))
                target = f">= {want}x" + (f", >= {frac:.0%} peak" if frac else "")
                if r is None or "torch" not in r["impls"] or "fastrnn" not in r["impls"]:
                    print(f"| {cell} | {shape} | {mode} | {target} | | | | | | not measured |")
                    continue
                tf, tt = r["impls"]["fastrnn"]["median"], r["impls"]["torch"]["median"]
                ratio, gf = tt / tf, r["gflop"] / tf
                ok = ratio >= want
                of_peak, verdict = "", None
                if frac and peak:
                    of_peak = f"{gf / peak:.0%}"
                    ok = ok and gf / peak >= frac
                elif frac and ok:  # the ratio holds; the peak part needs --peak
                    of_peak, verdict = "(--peak)", "ratio met, peak not checked"
                    unchecked += 1
                if verdict is None:
                    met += ok
                    missed += not ok
                    verdict = "met" if ok else "MISSED"
                print(f"| {cell} | {shape} | {mode} | {target} | {tf * 1e3:.2f} | {tt * 1e3:.2f} | {ratio:.2f}x | "
                      f"{gf:.1f} | {of_peak} | {verdict} |")
    for r in run.get("fit", []):
        ratio = r["torch_s"] / r["fastrnn_s"]
        ok = ratio >= FIT_TARGET
        met += ok
        missed += not ok
        print(f"| | fit epoch: {r['example']} | fit | >= {FIT_TARGET}x | {r['fastrnn_s'] * 1e3:.1f} | "
              f"{r['torch_s'] * 1e3:.1f} | {ratio:.2f}x | | | {'met' if ok else 'MISSED'} |")
    print(f"\n{met} met, {missed} missed" + (f", {unchecked} without the peak check" if unchecked else ""))


if __name__ == "__main__":
    sys.exit(main())
