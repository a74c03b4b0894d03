"""A cell step at B = 1 against the L2-bandwidth floor of this machine.

    python bench/cell_floor.py [--D 128] [--H 128] [--cells lstm,gru,rnn] [--rounds 15]

At B = 1 a cell step is a matrix-vector product over [W_ih | W_hh] (G*H rows of D+H float32)
plus O(G*H) gate work: it must read every weight once, and the weights (LSTM 512 KiB at
D = H = 128) stay in the L2 caches between steps. So no step can beat

    floor = weight bytes / L2 read bandwidth of the cores that share the rows

The read bandwidth is measured with a plain C read loop (XOR of 64-bit words, 16 independent
lanes, `cc -O3 -march=native`, compiled into a temporary directory and called through ctypes,
which releases the GIL): one core over a buffer the size of the weights, and two cores at once,
each over half (fastrnn splits a cell step by hidden units over two threads when plan.c's
fr_plan_cell_mid says it pays). Without a C compiler it falls back to NumPy's max() (slower
than the hardware, so its floor is too kind; the header says which was used).

The fastrnn time per cell (float32, eval mode, state fed back) is that of `cell(x, state)`
called from Python: what a user's streaming loop pays per step, argument checks and the new
state's allocation included; the table also gives the bare `_core.cell_step` call (the bridge
and the kernel, without the cell class's Python), to show where the time above the floor goes.
The issue's target: the cell step within 1.5x of the floor.
"""
import argparse
import functools
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _impls import cpu_model  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fastrnn as fr  # noqa: E402

CELLS = {"lstm": (fr.LSTMCell, fr.LSTM, 4), "gru": (fr.GRUCell, fr.GRU, 3), "rnn": (fr.RNNCell, fr.RNN, 1)}


def best_time(fn, reps, rounds):
    """Seconds per call: the median over rounds of the mean of reps calls."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - t0) / reps)
    return statistics.median(times)


_READ_C = r"""
#include <stdint.h>
#include <stddef.h>
uint64_t read_xor(const uint64_t *p, ptrdiff_t n, int reps) {  /* n: a multiple of 16 */
    uint64_t acc[16] = {0};
    for (int r = 0; r < reps; r++)
        for (ptrdiff_t i = 0; i < n; i += 16)
            for (int k = 0; k < 16; k++) acc[k] ^= p[i + k];
    uint64_t s = 0;
    for (int k = 0; k < 16; k++) s ^= acc[k];
    return s;
}
"""


@functools.lru_cache(maxsize=None)
def _read_kernel():
    """read_xor from a fresh build (once per process; the build directory is removed once the
    library is loaded), or None without a working C compiler."""
    import ctypes
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory(prefix="fastrnn-l2-", ignore_cleanup_errors=True) as d:
        src, lib = os.path.join(d, "read.c"), os.path.join(d, "read.so")
        with open(src, "w") as f:
            f.write(_READ_C)
        try:
            subprocess.run([os.environ.get("CC", "cc"), "-O3", "-march=native", "-shared", "-fPIC", "-o", lib,
                            src], check=True, capture_output=True)
            fn = ctypes.CDLL(lib).read_xor
        except (OSError, subprocess.CalledProcessError):
            return None
    fn.restype = ctypes.c_uint64
    fn.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int]
    return fn


def read_bandwidth(nbytes, cores, rounds):
    """Bytes per second that `cores` cores read together, each from its own nbytes/cores buffer
    kept in its cache, and the method's name."""
    import threading
    fn = _read_kernel()
    words = max(16, nbytes // cores // 8 // 16 * 16)
    bufs = [np.ones(words, np.uint64) for _ in range(cores)]
    if fn is None:  # NumPy fallback, one core
        a = bufs[0].view(np.float32)
        return a.nbytes / best_time(a.max, 200, rounds), "NumPy max() (no C compiler)"
    reps = max(1, int(2e8 // (words * 8)))
    times = []
    for _ in range(rounds):
        ts = [threading.Thread(target=fn, args=(b.ctypes.data, b.size, reps)) for b in bufs]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        times.append(time.perf_counter() - t0)
    return cores * words * 8 * reps / statistics.median(times), "C read loop"


def cell_call_time(cls, D, H, rounds):
    cell = cls(D, H, seed=0).eval()
    x = np.random.default_rng(1).standard_normal((1, D)).astype(np.float32)
    lstm = cls is fr.LSTMCell
    state = [(np.zeros((1, H), np.float32), np.zeros((1, H), np.float32)) if lstm else np.zeros((1, H), np.float32)]

    def step():
        state[0] = cell(x, state[0])

    for _ in range(200):
        step()
    return best_time(step, 2000, rounds)


def bare_step_time(cls, D, H, rounds):
    cell = cls(D, H, seed=0).eval()
    p = cell.parameters()
    x = np.random.default_rng(1).standard_normal((1, D)).astype(np.float32)
    h = np.zeros((1, H), np.float32)
    c = h if cls is fr.LSTMCell else None
    args = (cell._cell, x, h, c, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"], False)
    step = fr._core.cell_step
    return best_time(lambda: step(*args), 2000, rounds)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--D", type=int, default=128)
    p.add_argument("--H", type=int, default=128)
    p.add_argument("--cells", default="lstm,gru,rnn")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    fr.set_num_threads(a.threads)
    print(f"CPU: {cpu_model()}; fastrnn threads {a.threads}; float32, eval mode\n")
    print(f"| cell (B=1, D={a.D}, H={a.H}) | weights KiB | cores | L2 read GB/s | floor us | "
          "cell call us | vs floor | bare cell_step us | vs floor |")
    print("|---|---|---|---|---|---|---|---|---|")
    method = None
    for name in a.cells.split(","):
        cls, lcls, G = CELLS[name]
        nbytes = G * a.H * (a.D + a.H) * 4
        cores = 2 if a.threads >= 2 and fr._core.plan_cell_mid(lcls(1, 1)._cell, 1, a.D, a.H) else 1
        bw, method = read_bandwidth(nbytes, cores, a.rounds)
        floor = nbytes / bw * 1e6
        call = cell_call_time(cls, a.D, a.H, a.rounds) * 1e6
        bare = bare_step_time(cls, a.D, a.H, a.rounds) * 1e6
        print(f"| {name} | {nbytes / 1024:.0f} | {cores} | {bw / 1e9:.0f} | {floor:.2f} | {call:.2f} | "
              f"{call / floor:.2f}x | {bare:.2f} | {bare / floor:.2f}x |")
    print(f"\nL2 read bandwidth measured with: {method}")


if __name__ == "__main__":
    main()
