"""The multi-layer wavefront's backward (layers._RNNBase._backward_wave) against the layer by
layer schedule: one training step (forward + backward) of a 2-layer one-direction stack at a
batch of one, where the plan runs the forward as a wavefront.

    python bench/wave_backward.py [--rounds 9] [--threads 2] [--cases lstm48-1000,...]

Three schedules of the same model on the same input, timed in alternating rounds (one step of
each, then the next round), each time column the median round, each ratio the median of the
rounds' ratios:
  layers   plan_knobs(wave=False): forward and backward layer by layer (a batch of one whose
           steps split by units takes that split, both passes);
  fwd      the plan's forward, the backward layer by layer (the schedule before the backward
           wavefront: the forward's choice dropped from the cache);
  wave     the plan's forward and backward (both wavefronts where the plan picks it).
With --force the plan's forward is forced to the wavefront (wave=True, units=False), to see
what it would give where the plan keeps layer by layer (H = 128 without variants: unit split);
`fwd`'s backward then runs without the unit split too, `layers` keeps it.
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
from fastrnn import _core  # noqa: E402

KINDS = {"lstm": fr.LSTM, "gru": fr.GRU}
VARIANTS = {"": {}, "zo": {"zoneout": 0.1}, "ln": {"layer_norm": True}}
DEFAULT = ("lstm48-1000,lstm48-4000,gru48-1000,gru48-4000,lstm128-1000,lstm128-4000,gru128-1000,gru128-4000,"
           "lstm128zo-1000,lstm128ln-1000,lstm48zo-4000")


def parse(case):
    """'lstm128zo-1000' -> (LSTM, 128, {'zoneout': 0.1}, 1000)"""
    name, T = case.split("-")
    kind = next(k for k in KINDS if name.startswith(k))
    rest = name[len(kind):]
    H = int("".join(ch for ch in rest if ch.isdigit()))
    var = rest[len(str(H)):]
    return KINDS[kind], H, VARIANTS[var], int(T)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", default=DEFAULT)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--D", type=int, default=16)
    p.add_argument("--force", action="store_true", help="force the forward wavefront (wave=True, units=False)")
    args = p.parse_args(argv)
    fr.set_num_threads(args.threads)
    plan = _core.plan_knobs()
    forced = ", forward forced to the wavefront" if args.force else ""
    print(f"# training step (forward + backward), {args.layers} layers, B=1, D={args.D}, float32, "
          f"{args.threads} threads, median of {args.rounds} rounds{forced}; CPU: {cpu_model()}")
    print("| case | chunks fwd/bwd | layers ms | fwd-wave ms | wave ms | speed-up vs fwd-wave | vs layers |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for case in args.cases.split(","):
        cls, H, kw, T = parse(case)
        m = cls(args.D, H, num_layers=args.layers, seed=0, **kw)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((T, 1, args.D)).astype(np.float32)
        dy = rng.standard_normal((T, 1, H)).astype(np.float32)
        wave_knobs = dict(plan, wave=True, units=False) if args.force else plan

        def layers():
            _core.plan_knobs(**dict(plan, wave=False))
            m(x)
            m.backward(dy)

        def fwd():
            _core.plan_knobs(**wave_knobs)
            m(x)
            m._cache = m._cache[:5] + (None,)  # the backward layer by layer
            m.backward(dy)

        def wave():
            _core.plan_knobs(**wave_knobs)
            m(x)
            m.backward(dy)

        runs = {"layers": layers, "fwd": fwd, "wave": wave}
        times = {k: [] for k in runs}
        try:
            for f in runs.values():  # warm-up: buffers allocated, pages faulted in
                f()
                f()
            for _ in range(args.rounds):
                for k, f in runs.items():
                    t0 = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t0)
            _core.plan_knobs(**wave_knobs)
            m(x)  # the wavefront's chunks, forward and backward, as the plan gives them
            chunks = "0"
            if m._cache[5]:
                nf, rows = m._cache[5]
                fill = m._wave_lags(m._cache[0], T, 1, rows)[1][0]
                chunks = f"{nf}/{_core.plan_wave_backward(m._cell, T, 1, args.D, H, args.layers, fill)}"
        finally:
            _core.plan_knobs(**plan)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        # the ratios of each round's pair, then their median: a slow stretch of the machine
        # moves a round's times together
        up_fwd = statistics.median(f / w for f, w in zip(times["fwd"], times["wave"]))
        up_layers = statistics.median(f / w for f, w in zip(times["layers"], times["wave"]))
        print(f"| {case} | {chunks} | {med['layers']:.2f} | {med['fwd']:.2f} | {med['wave']:.2f} | "
              f"{up_fwd:.2f}x | {up_layers:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
