"""fastrnn vs PyTorch vs the pure-NumPy reference: training step, inference, cell latency, memory.

    python bench/run.py                 # full grid (~4 min on an idle 2-core machine), tables on stdout,
                                        # JSON + CSV in bench/results/
    python bench/run.py --quick         # smoke test: tiny shape only (< 1 min)
    python bench/run.py --contention    # training steps (medium) with and without a busy process

Each implementation runs in its own worker process (bench/_impls.py); the driver alternates them
round by round (A B C A B C ...) and reports the median round. See the README's Benchmarks section.
"""
import argparse
import csv
import datetime
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _impls import GATES, IMPLS, SHAPES, case_key, dims, flops  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
IMPLS_PY = os.path.join(HERE, "_impls.py")
CORE_SO = os.path.join(os.path.dirname(HERE), "fastrnn", "_core*.so")
MODES = ("train", "infer", "step")
# The check compares with the float64 reference: max|got - ref| / max(1, max|ref|). Measured on
# the whole grid: <= 1.2e-6 (float32) and <= 2e-15 (float64) for fastrnn and torch alike; a wrong
# gate, bias or dropped time step is off by > 1e-3.
TOL = {"float32": 1e-5, "float64": 1e-12}
NOISE = 0.1  # a round during which other processes used > 10% of the machine's CPU time is redone


class Worker:
    """One implementation's worker process, spoken to in JSON lines."""

    def __init__(self, name, threads):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, IMPLS_PY, "serve", name, str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=thread_env(threads))
        self.version = self.request("info")["version"]

    def request(self, op, **kw):
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} worker died (see its stderr above)")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.name} worker, {op}: {reply['error']}")
        return reply

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def thread_env(threads):
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


def start_workers(names, threads):
    workers = {}
    for name in names:
        try:
            workers[name] = Worker(name, threads)
        except RuntimeError as e:
            if name == "fastrnn":
                raise
            print(f"note: {name} unavailable, skipped ({e})", file=sys.stderr)
    return workers


def build_cases(cells, shapes, modes):
    cases = [dict(cell=c, shape=s, mode=m, dtype="float32")
             for c in cells for s in shapes for m in modes if m != "step"]
    if "lstm" in cells and "medium" in shapes:
        cases += [dict(cell="lstm", shape="medium", mode=m, dtype="float64") for m in modes if m != "step"]
    if "step" in modes:
        cases += [dict(cell=c, shape="cell", mode="step", dtype="float32") for c in cells if c != "rnn"]
    return cases


def prepare_case(case, workers, timed, tmp, args):
    """Write the case (fastrnn's weights, input, float64 reference outputs) and set it up in the
    workers that time it; returns (path, {impl: setup reply}), each reply with a check verdict."""
    path = os.path.join(tmp, case_key(case) + ".npz")
    workers["fastrnn"].request("make", case=case, path=path)
    workers["numpy"].request("reference", case=case, path=path)
    setups = {}
    for n in timed:
        try:
            s = workers[n].request("setup", case=case, path=path, round_time=args.round_time)
        except RuntimeError as e:
            print(f"!! {n} failed on {case_key(case)}: {e}", file=sys.stderr)
            continue
        s["ok"] = all(v <= TOL[case["dtype"]] for v in s["err"].values())
        if not s["ok"]:
            print(f"!! MISMATCH {n} {case_key(case)}: {s['err']}", file=sys.stderr)
        # Per-case time budget: a slow implementation is timed in fewer rounds (at least one).
        s["rounds"] = max(1, min(args.rounds, int(args.budget / (s["t_one"] * s["reps"]))))
        setups[n] = s
    return path, setups


def _busy_ticks(pid=None):
    """CPU time in clock ticks: of process `pid` (all threads), or of the whole machine (busy and
    stolen by the hypervisor, i.e. everything but idle and iowait)."""
    if pid:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v[0:3]) + sum(v[5:8])  # user nice system, irq softirq steal


def _wait_idle(timeout=0.3, window=0.05):
    """Wait (at most `timeout` s) for a `window` with the machine idle. Needed between workers:
    NumPy's OpenBLAS threads spin for ~0.1 s after their last call (measured), which would eat
    half the CPU of the next worker's round; it also lets short bursts of other work pass."""
    hz, ncpu, end = os.sysconf("SC_CLK_TCK"), os.cpu_count(), time.perf_counter() + timeout
    while time.perf_counter() < end:
        m0 = _busy_ticks()
        time.sleep(window)
        if _busy_ticks() - m0 <= NOISE * hz * ncpu * window:
            return


def timed_rounds(workers, setups, rounds, times, quiet=True, retries=2):
    """Alternate the workers round by round, appending each round's mean time per call. The
    machine is shared: a round during which other processes took more than NOISE of the CPU is
    redone (up to `retries` times; then kept and counted in setups[n]["noisy"]). quiet=False
    (the contention experiment's deliberately loaded rounds): no waiting for idle, no retries."""
    hz, ncpu = os.sysconf("SC_CLK_TCK"), os.cpu_count()
    for r in range(rounds):
        for n, s in setups.items():
            if r >= s["rounds"]:
                continue
            for _ in range(retries + 1 if quiet else 1):
                _wait_idle() if quiet else time.sleep(0.05)
                pid = workers[n].proc.pid
                m0, w0, t0 = _busy_ticks(), _busy_ticks(pid), time.perf_counter()
                t = workers[n].request("time")["t"]
                foreign = (_busy_ticks() - m0 - (_busy_ticks(pid) - w0)) / (hz * ncpu * (time.perf_counter() - t0))
                if foreign <= NOISE:
                    break
            s["noisy"] = s.get("noisy", 0) + (foreign > NOISE)
            times[n].append(t)


def measure_memory(name, case, path, threads):
    out = subprocess.run([sys.executable, IMPLS_PY, "memory", name, str(threads), json.dumps(case), path],
                         capture_output=True, text=True, env=thread_env(threads))
    if out.returncode:
        print(f"!! memory {name} {case_key(case)} failed:\n{out.stderr}", file=sys.stderr)
        return None
    return json.loads(out.stdout.splitlines()[-1])


def run_grid(args, workers, tmp):
    rows = []
    for case in build_cases(args.cells, args.shapes, args.modes):
        t0 = time.time()
        timed = [n for n in args.impls if n in workers and not (
            n == "numpy" and args.skip_numpy_large and case["shape"] in ("large", "stream"))]
        path, setups = prepare_case(case, workers, timed, tmp, args)
        times = {n: [] for n in setups}
        timed_rounds(workers, setups, args.rounds, times)
        T, B, D, H = dims(case)
        row = dict(case, key=case_key(case), T=T, B=B, D=D, H=H, gflop=flops(case) / 1e9,
                   loadavg=os.getloadavg()[0], impls={})
        for n, s in setups.items():
            row["impls"][n] = dict(s, times=times[n], median=statistics.median(times[n]))
        if case["mode"] == "train" and not args.no_memory:
            for n in setups:
                row["impls"][n]["memory"] = measure_memory(n, case, path, args.threads)
        os.remove(path)
        rows.append(row)
        print(f"  {case_key(case):28s} " + "  ".join(f"{n} {1e3 * i['median']:.3f}ms" for n, i in row["impls"].items())
              + f"  ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    return rows


def run_contention(args, workers, tmp):
    """Training step (medium) of fastrnn and torch, alternately timed with and without one busy
    Python process competing for a core."""
    rows = []
    for cell in args.cells:
        case = dict(cell=cell, shape="medium", mode="train", dtype="float32")
        _, setups = prepare_case(case, workers, [n for n in ("fastrnn", "torch") if n in workers], tmp, args)
        quiet, busy = {n: [] for n in setups}, {n: [] for n in setups}
        for _ in range(args.rounds):
            timed_rounds(workers, setups, 1, quiet)
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(0.3)  # interpreter start-up
            try:
                timed_rounds(workers, setups, 1, busy, quiet=False)
            finally:
                hog.kill()
                hog.wait()
        for n in setups:
            q, b = statistics.median(quiet[n]), statistics.median(busy[n])
            rows.append(dict(cell=cell, impl=n, quiet_ms=1e3 * q, busy_ms=1e3 * b, slowdown=b / q,
                             check_ok=setups[n]["ok"], quiet=quiet[n], busy=busy[n]))
    return rows


# ---- reporting ---------------------------------------------------------------------------------

def _ratio(row, other):
    i = row["impls"]
    return i[other]["median"] / i["fastrnn"]["median"] if other in i and "fastrnn" in i else None


def _fmt(v, spec, unit=""):
    return "-" if v is None else format(v, spec) + unit


def _check(row):
    bad = [f"{n} {max(s['err'], key=s['err'].get)} {max(s['err'].values()):.1e}"
           for n, s in row["impls"].items() if not s["ok"]]
    return "**MISMATCH: " + "; ".join(bad) + "**" if bad else "ok"


def _errs(row):
    return " / ".join(_fmt(max(row["impls"][n]["err"].values()) if n in row["impls"] else None, ".1e")
                      for n in ("fastrnn", "torch"))


def _notes(row):
    """Check verdict, plus rounds that stayed disturbed by other processes after retries."""
    noisy = sum(s.get("noisy", 0) for s in row["impls"].values())
    return _check(row) + (f" ({noisy} noisy rounds)" if noisy else "")


def _table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(map(str, line)) + " |" for line in lines])


def render(rows, names):
    """Markdown tables: sequence cases, cell latency, memory."""
    get = lambda row, n, k: row["impls"].get(n, {}).get(k)  # noqa: E731
    compare = ["fastrnn vs torch", "fastrnn vs numpy", "max err fastrnn / torch", "check"]
    compared = lambda r: [_fmt(_ratio(r, "torch"), ".2f", "x"), _fmt(_ratio(r, "numpy"), ".1f", "x"),  # noqa: E731
                          _errs(r), _notes(r)]
    seq = [r for r in rows if r["mode"] != "step"]
    step = [r for r in rows if r["mode"] == "step"]
    mem = [r for r in seq if any(i.get("memory") for i in r["impls"].values())]
    out = []
    if seq:
        out.append(_table(
            ["cell", "shape (T,B,D,H)", "mode", "dtype"] + [f"{n} ms" for n in names]
            + [f"{n} GFLOP/s" for n in names if n != "numpy"] + compare,
            [[r["cell"], f"{r['shape']} ({r['T']},{r['B']},{r['D']},{r['H']})", r["mode"], r["dtype"]]
             + [_fmt(get(r, n, "median") and 1e3 * get(r, n, "median"), ".2f") for n in names]
             + [_fmt(get(r, n, "median") and r["gflop"] / get(r, n, "median"), ".1f") for n in names if n != "numpy"]
             + compared(r) for r in seq]))
    if step:
        out.append(_table(
            ["cell (B=1, D=H=128)"] + [f"{n} us/step" for n in names] + compare,
            [[r["cell"]] + [_fmt(get(r, n, "median") and 1e6 * get(r, n, "median") / r["T"], ".2f") for n in names]
             + compared(r) for r in step]))
    if mem:
        mib = lambda r, n, k: (get(r, n, "memory") or {}).get(k) and get(r, n, "memory")[k] / 1024  # noqa: E731
        out.append(_table(
            ["training step", "shape", "dtype"] + [f"{n} peak MiB (RSS)" for n in names]
            + ["fastrnn / torch", "fastrnn traced MiB"],
            [[r["cell"], r["shape"], r["dtype"]] + [_fmt(mib(r, n, "rss_kib"), ".1f") for n in names]
             + [_fmt(mib(r, "fastrnn", "rss_kib") and mib(r, "torch", "rss_kib")
                     and mib(r, "fastrnn", "rss_kib") / mib(r, "torch", "rss_kib"), ".2f"),
                _fmt(mib(r, "fastrnn", "traced_kib"), ".1f")]
             for r in mem]))
    return "\n\n".join(out)


def render_contention(rows):
    return _table(["training step (medium)", "impl", "quiet ms", "with 1 busy process ms", "slowdown", "check"],
                  [[r["cell"], r["impl"], f"{r['quiet_ms']:.2f}", f"{r['busy_ms']:.2f}", f"{r['slowdown']:.2f}x",
                    "ok" if r["check_ok"] else "**MISMATCH**"] for r in rows])


def machine_info(args, workers):
    lscpu = dict(line.split(":", 1) for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                 .stdout.splitlines() if ":" in line)
    get = lambda k: lscpu.get(k, "?").strip()  # noqa: E731
    flags = get("Flags").split()
    return {"cpu": f"{get('Model name')} (family {get('CPU family')}, model {get('Model')})",
            "cpus": os.cpu_count(), "cores": get("Core(s) per socket"), "threads": args.threads,
            "simd": " ".join(f for f in ("avx512f", "avx2", "fma") if f in flags),
            "hypervisor": get("Hypervisor vendor"), "python": platform.python_version(),
            "versions": {n: w.version for n, w in workers.items()},
            "commit": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE, capture_output=True,
                                     text=True).stdout.strip(),
            "core_built": max((datetime.datetime.fromtimestamp(os.path.getmtime(f), datetime.timezone.utc)
                               .isoformat(timespec="seconds") for f in glob.glob(CORE_SO)), default="?"),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def write_results(tag, info, data, csv_rows, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(out_dir, f"{tag}-{stamp}")
    with open(base + ".json", "w") as f:
        json.dump(dict(info, **data), f, indent=1)
    csv_rows = [{k: v for k, v in r.items() if not isinstance(v, (list, dict))} for r in csv_rows]
    with open(base + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(csv_rows[0]))
        w.writeheader()
        w.writerows(csv_rows)
    return base


def grid_csv(rows):
    return [dict(key=r["key"], cell=r["cell"], shape=r["shape"], mode=r["mode"], dtype=r["dtype"],
                 T=r["T"], B=r["B"], D=r["D"], H=r["H"], gflop=r["gflop"], impl=n,
                 ms=1e3 * s["median"], gflops=r["gflop"] / s["median"], rounds=len(s["times"]),
                 reps=s["reps"], noisy_rounds=s.get("noisy", 0), max_err=max(s["err"].values()), check_ok=s["ok"],
                 peak_rss_mib=(s.get("memory") or {}).get("rss_kib", float("nan")) / 1024)
            for r in rows for n, s in r["impls"].items()]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads for every implementation (OPENBLAS/OMP_NUM_THREADS, torch.set_num_threads, "
                        "fr.set_num_threads); default: all CPUs (%(default)s)")
    p.add_argument("--cells", default="rnn,gru,lstm")
    p.add_argument("--shapes", default=None, help="comma list of tiny,medium,large,stream (default all)")
    p.add_argument("--modes", default="train,infer,step", help="train, infer, step (cell latency)")
    p.add_argument("--impls", default=",".join(IMPLS),
                   help="implementations to time (the numpy worker always runs: it computes the check)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds per case; the median is reported")
    p.add_argument("--round-time", type=float, default=0.25, help="seconds of calls per round (at least one call)")
    p.add_argument("--budget", type=float, default=8.0,
                   help="seconds of timed rounds per implementation and case; slower ones get fewer rounds")
    p.add_argument("--skip-numpy-large", action="store_true", help="don't time NumPy on large and stream")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--quick", action="store_true", help="tiny shape, 3 short rounds: a smoke test")
    p.add_argument("--contention", action="store_true", help="only the contention experiment")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.shapes = args.shapes or "tiny"
        args.rounds, args.round_time, args.budget = 3, 0.05, 1.0
    args.cells = [c for c in args.cells.split(",") if c in GATES]
    args.shapes = [s for s in (args.shapes or "tiny,medium,large,stream").split(",") if s in SHAPES and s != "cell"]
    args.modes = [m for m in args.modes.split(",") if m in MODES]
    args.impls = [n for n in IMPLS if n in args.impls.split(",")]

    workers = start_workers(["fastrnn", "numpy"] + [n for n in args.impls if n == "torch"], args.threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            info = machine_info(args, workers)
            if args.contention:
                rows = run_contention(args, workers, tmp)
                text = render_contention(rows)
                base = write_results("contention", info, {"rows": rows}, rows, args.out)
            else:
                rows = run_grid(args, workers, tmp)
                text = render(rows, [n for n in args.impls if n in workers])
                base = write_results("bench", info, {"args": vars(args), "rows": rows}, grid_csv(rows), args.out)
    finally:
        for w in workers.values():
            w.close()
    print(f"{info['cpu']}, {info['cpus']} CPUs ({info['cores']} cores, {info['simd']}, {info['hypervisor']} VM), "
          f"{args.threads} threads; "
          + ", ".join(f"{n} {v}" for n, v in info["versions"].items())
          + f"; fastrnn at {info['commit']}, extension built {info['core_built']}; run {info['date']}\n")
    print(text)
    bad = [r["key"] for r in rows if "impls" in r and _check(r) != "ok"]
    if bad:
        print(f"\n!! CHECK FAILED against the NumPy reference: {', '.join(bad)}")
    print(f"\nresults: {base}.json, {base}.csv")


if __name__ == "__main__":
    main()
