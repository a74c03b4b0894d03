"""fastrnn vs PyTorch vs the pure-NumPy reference: training step, inference, cell latency, memory.

    python bench/run.py                 # full grid (~4 min on an idle 2-core machine), tables on stdout,
                                        # JSON + CSV in bench/results/
    python bench/run.py --quick         # smoke test: tiny shape only (< 1 min)
    python bench/run.py --shapes fit    # only the README examples' time per fit epoch vs PyTorch
    python bench/run.py --contention    # training steps (medium) with and without a busy process
    python bench/run.py --baseline DIR  # also time fastrnn@base: the fastrnn of checkout DIR
                                        # (built in place), e.g. a git worktree of an older commit

Each implementation runs in its own worker process (bench/_impls.py); the driver alternates them
round by round (A B C A B C ...) and reports the median round. See the README's Benchmarks section.

With --baseline DIR, a worker `fastrnn@base` runs the same fastrnn benchmark code with fastrnn
imported from DIR (it refuses to run if fastrnn or its extension came from anywhere else), on the
same weights and inputs (written once per case by this checkout's fastrnn; the base worker loads
them with load_state_dict) and is checked against the same NumPy reference. It is timed in the
same alternating rounds as the others, with fastrnn and fastrnn@base swapping places every round
(fastrnn, fastrnn@base, ... then fastrnn@base, fastrnn, ...), and an extra table gives time
base / time new per case (1.00 = same speed; > 1: this checkout is faster) with the range of the
per-round ratios (round r of one against round r of the other), to tell a change from noise.
Every mode supports it: train, infer, step (cell latency), the memory columns, --contention.
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
from _impls import BASE, BASELINE_ENV, GATES, IMPLS, SHAPES, TOPOLOGY, case_key, dims, flops  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
IMPLS_PY = os.path.join(HERE, "_impls.py")
CORE_SO = os.path.join(ROOT, "fastrnn", "_core*.so")
ALL_IMPLS = ("fastrnn", BASE, "torch", "numpy")  # column and round order
MODES = ("train", "infer", "step")
# The check compares with the float64 reference: max|got - ref| / max(1, max|ref|). Measured on
# the whole grid: <= 1.2e-6 (float32) and <= 2e-15 (float64) for fastrnn and torch alike; a wrong
# gate, bias or dropped time step is off by > 1e-3.
TOL = {"float32": 1e-5, "float64": 1e-12}
NOISE = 0.1  # a round during which other processes used > 10% of the machine's CPU time is redone


class Worker:
    """One implementation's worker process, spoken to in JSON lines."""

    def __init__(self, name, threads, baseline=None):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, IMPLS_PY, "serve", name, str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=impl_env(name, threads, baseline))
        self.info = self.request("info")
        self.version = self.info["version"]
        # The worker already refuses a fastrnn from elsewhere; check again what it reports.
        root = {"fastrnn": ROOT, BASE: baseline}.get(name)
        if root and not self.info["module"].startswith(os.path.join(os.path.realpath(root), "fastrnn") + os.sep):
            self.close()
            raise RuntimeError(f"{name} worker imported fastrnn from {self.info['module']}, not from {root}")

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


def impl_env(name, threads, baseline=None):
    """A worker's environment: the thread counts; for fastrnn@base also the baseline checkout."""
    env = thread_env(threads)
    env.pop(BASELINE_ENV, None)
    if name == BASE:
        env[BASELINE_ENV] = baseline
    return env


def start_workers(names, threads, baseline=None):
    workers = {}
    for name in names:
        try:
            workers[name] = Worker(name, threads, baseline)
        except RuntimeError as e:
            if name in ("fastrnn", BASE):
                for w in workers.values():
                    w.close()
                raise
            print(f"note: {name} unavailable, skipped ({e})", file=sys.stderr)
    return workers


def build_cases(cells, shapes, modes):
    # the multi-layer rows are the models users run most: LSTM and GRU (RNN stacks are rare)
    cases = [dict(cell=c, shape=s, mode=m, dtype="float32")
             for c in cells for s in shapes for m in modes
             if m != "step" and not (s in TOPOLOGY and c == "rnn")]
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


def round_order(names, r):
    """The workers' order in round r: as given, except that fastrnn and fastrnn@base swap places
    in odd rounds, so that neither always runs right after the same other worker."""
    order = list(names)
    if "fastrnn" in order and BASE in order and r % 2:
        i, j = order.index("fastrnn"), order.index(BASE)
        order[i], order[j] = order[j], order[i]
    return order


def timed_rounds(workers, setups, rounds, times, quiet=True, retries=2, first=0):
    """Alternate the workers round by round, appending each round's mean time per call. The
    machine is shared: a round during which other processes took more than NOISE of the CPU is
    redone (up to `retries` times; then kept and counted in setups[n]["noisy"]). quiet=False
    (the contention experiment's deliberately loaded rounds): no waiting for idle, no retries.
    `first`: the number of the first round (for round_order, when called one round at a time)."""
    hz, ncpu = os.sysconf("SC_CLK_TCK"), os.cpu_count()
    for r in range(rounds):
        for n in round_order(setups, first + r):
            s = setups[n]
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


def measure_memory(name, case, path, threads, baseline=None):
    out = subprocess.run([sys.executable, IMPLS_PY, "memory", name, str(threads), json.dumps(case), path],
                         capture_output=True, text=True, env=impl_env(name, threads, baseline))
    if out.returncode:
        print(f"!! memory {name} {case_key(case)} failed:\n{out.stderr}", file=sys.stderr)
        return None
    return json.loads(out.stdout.splitlines()[-1])


def run_grid(args, workers, tmp):
    rows = []
    for case in build_cases(args.cells, args.shapes, args.modes):
        t0 = time.time()
        timed = [n for n in args.impls if n in workers and not (
            n == "numpy" and args.skip_numpy_large and case["shape"] not in ("tiny", "medium"))]
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
                row["impls"][n]["memory"] = measure_memory(n, case, path, args.threads, args.baseline)
        os.remove(path)
        rows.append(row)
        print(f"  {case_key(case):28s} " + "  ".join(f"{n} {1e3 * i['median']:.3f}ms" for n, i in row["impls"].items())
              + f"  ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    return rows


def run_contention(args, workers, tmp):
    """Training step (medium) of fastrnn (and fastrnn@base) and torch, alternately timed with and
    without one busy Python process competing for a core."""
    rows = []
    for cell in args.cells:
        case = dict(cell=cell, shape="medium", mode="train", dtype="float32")
        _, setups = prepare_case(case, workers, [n for n in ("fastrnn", BASE, "torch") if n in workers], tmp, args)
        quiet, busy = {n: [] for n in setups}, {n: [] for n in setups}
        for r in range(args.rounds):
            timed_rounds(workers, setups, 1, quiet, first=r)
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(0.3)  # interpreter start-up
            try:
                timed_rounds(workers, setups, 1, busy, quiet=False, first=r)
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


def _base_ratio(row):
    """time of fastrnn@base / time of fastrnn (medians), and the min and max of the per-round
    ratios (round r of one against round r of the other: adjacent in time)."""
    i = row["impls"]
    if BASE not in i or "fastrnn" not in i:
        return None, None, None
    per_round = [b / a for a, b in zip(i["fastrnn"]["times"], i[BASE]["times"])]
    return i[BASE]["median"] / i["fastrnn"]["median"], min(per_round), max(per_round)


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
    """Markdown tables: sequence cases, cell latency, memory; with fastrnn@base, fastrnn vs it."""
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
            + [f"{n} GFLOP/s" for n in names if n not in ("numpy", BASE)] + compare,
            [[r["cell"], f"{r['shape']} ({r['T']},{r['B']},{r['D']},{r['H']})", r["mode"], r["dtype"]]
             + [_fmt(get(r, n, "median") and 1e3 * get(r, n, "median"), ".2f") for n in names]
             + [_fmt(get(r, n, "median") and r["gflop"] / get(r, n, "median"), ".1f")
                for n in names if n not in ("numpy", BASE)]
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
    if BASE in names:
        out.append(render_baseline(rows, mem))
    return "\n\n".join(out)


def render_baseline(rows, mem):
    """fastrnn vs fastrnn@base: time base / time new per case, with the per-round range."""
    get = lambda row, n, k: row["impls"].get(n, {}).get(k)  # noqa: E731
    rss = lambda r, n: (get(r, n, "memory") or {}).get("rss_kib")  # noqa: E731
    pair = ("fastrnn", BASE)
    lines, ratios = [], []
    for r in rows:
        ratio, lo, hi = _base_ratio(r)
        if ratio is not None:
            ratios.append(ratio)
        bad = [f"{n} {max(get(r, n, 'err').values()):.1e}" for n in pair if n in r["impls"] and not get(r, n, "ok")]
        noisy = sum(get(r, n, "noisy") or 0 for n in pair if n in r["impls"])
        shape = "cell" if r["mode"] == "step" else r["shape"]
        lines.append(
            [r["cell"], f"{shape} ({r['T']},{r['B']},{r['D']},{r['H']})", r["mode"], r["dtype"]]
            + [_fmt(get(r, n, "median") and 1e3 * get(r, n, "median"), ".2f") for n in pair]
            + [_fmt(ratio, ".2f"), "-" if lo is None else f"{lo:.2f}-{hi:.2f}"]
            + ([_fmt(rss(r, "fastrnn") and rss(r, BASE) and rss(r, BASE) / rss(r, "fastrnn"), ".2f")] if mem else [])
            + [" / ".join(_fmt(get(r, n, "err") and max(get(r, n, "err").values()), ".1e") for n in pair),
               ("**MISMATCH: " + "; ".join(bad) + "**" if bad else "ok")
               + (f" ({noisy} noisy rounds)" if noisy else "")])
    table = _table(["cell", "shape (T,B,D,H)", "mode", "dtype", "fastrnn ms", f"{BASE} ms", "base / new",
                    "per round"] + (["peak RSS base / new"] if mem else []) + ["max err new / base", "check"],
                   lines)
    summary = ""
    if ratios:
        geo = statistics.geometric_mean(ratios)
        summary = (f"\n\ngeometric mean of base / new over {len(ratios)} cases: {geo:.3f} "
                   f"(cases {min(ratios):.2f}-{max(ratios):.2f})")
    return (f"fastrnn vs {BASE}: time of {BASE} / time of fastrnn (1.00 = same speed, > 1: this checkout "
            "is faster); ms per call (step rows: one call is T cell steps); per round: the range of "
            "the ratio between the two's rounds of the same number, timed next to each other:\n\n"
            + table + summary)


def render_contention(rows):
    text = _table(["training step (medium)", "impl", "quiet ms", "with 1 busy process ms", "slowdown", "check"],
                  [[r["cell"], r["impl"], f"{r['quiet_ms']:.2f}", f"{r['busy_ms']:.2f}", f"{r['slowdown']:.2f}x",
                    "ok" if r["check_ok"] else "**MISMATCH**"] for r in rows])
    by = {(r["cell"], r["impl"]): r for r in rows}
    pairs = [(by[c, "fastrnn"], by[c, BASE]) for c in dict.fromkeys(r["cell"] for r in rows)
             if (c, "fastrnn") in by and (c, BASE) in by]
    if pairs:
        text += (f"\n\nfastrnn vs {BASE} (time of {BASE} / time of fastrnn; 1.00 = same speed):\n\n"
                 + _table(["training step (medium)", "quiet base / new", "with 1 busy process base / new"],
                          [[a["cell"], f"{b['quiet_ms'] / a['quiet_ms']:.2f}", f"{b['busy_ms'] / a['busy_ms']:.2f}"]
                           for a, b in pairs]))
    return text


def git_info(path):
    """{"rev": git rev-parse HEAD, "describe": git describe --always --dirty} of checkout `path`
    (None where it is not a git checkout)."""
    def git(*a):
        try:
            r = subprocess.run(["git", *a], cwd=path, capture_output=True, text=True)
        except OSError:
            return None
        return r.stdout.strip() if r.returncode == 0 else None
    return {"rev": git("rev-parse", "HEAD"), "describe": git("describe", "--always", "--dirty")}


def _mtime(files):
    return max((datetime.datetime.fromtimestamp(os.path.getmtime(f), datetime.timezone.utc)
                .isoformat(timespec="seconds") for f in files), default="?")


def machine_info(args, workers):
    lscpu = dict(line.split(":", 1) for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                 .stdout.splitlines() if ":" in line)
    get = lambda k: lscpu.get(k, "?").strip()  # noqa: E731
    flags = get("Flags").split()
    return {"cpu": f"{get('Model name')} (family {get('CPU family')}, model {get('Model')})",
            "cpus": os.cpu_count(), "cores": get("Core(s) per socket"), "threads": args.threads,
            "simd": " ".join(f for f in ("avx512f", "avx2", "fma") if f in flags),
            "caches": ", ".join(f"{n} {get(n + ' cache')}" for n in ("L1d", "L2", "L3")
                                if get(n + " cache") != "?"),
            "plan": {n: w.info.get("plan") for n, w in workers.items() if w.info.get("plan")},
            "plan_source": {n: w.info.get("plan_source") for n, w in workers.items() if w.info.get("plan")},
            "hypervisor": get("Hypervisor vendor"), "python": platform.python_version(),
            "versions": {n: w.version for n, w in workers.items()},
            "commit": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE, capture_output=True,
                                     text=True).stdout.strip(),
            "rev": git_info(ROOT)["rev"],
            "core_built": _mtime(glob.glob(CORE_SO)),
            "fastrnn_from": {n: w.info["module"] for n, w in workers.items() if "module" in w.info},
            "baseline": args.baseline and dict(git_info(args.baseline), dir=args.baseline,
                                               core_built=_mtime(workers[BASE].info["core"]) if BASE in workers
                                               else "?"),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def write_results(tag, info, data, csv_rows, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(out_dir, f"{tag}-{stamp}")
    with open(base + ".json", "w") as f:
        json.dump(dict(info, **data), f, indent=1)
    csv_rows = [{k: v for k, v in r.items() if not isinstance(v, (list, dict))} for r in csv_rows]
    with open(base + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in csv_rows for k in r)))
        w.writeheader()
        w.writerows(csv_rows)
    return base


def baseline_columns(info):
    """CSV columns naming the baseline checkout, on every row (none without --baseline)."""
    b = info.get("baseline")
    return {"baseline_dir": b["dir"], "baseline_rev": b["rev"] or ""} if b else {}


def grid_csv(rows, info):
    return [dict(key=r["key"], cell=r["cell"], shape=r["shape"], mode=r["mode"], dtype=r["dtype"],
                 T=r["T"], B=r["B"], D=r["D"], H=r["H"], gflop=r["gflop"], impl=n,
                 ms=1e3 * s["median"], gflops=r["gflop"] / s["median"], rounds=len(s["times"]),
                 reps=s["reps"], noisy_rounds=s.get("noisy", 0), max_err=max(s["err"].values()), check_ok=s["ok"],
                 peak_rss_mib=(s.get("memory") or {}).get("rss_kib", float("nan")) / 1024,
                 base_over_new=_base_ratio(r)[0] if n == BASE else "", **baseline_columns(info))
            for r in rows for n, s in r["impls"].items()]


def run_fit(args):
    """The README examples' time per fit epoch, fastrnn against a plain PyTorch loop, each in
    its own pair of processes, epochs alternating (bench/epoch_vs_torch.py)."""
    if "torch" not in args.impls:
        return []
    import epoch_vs_torch as ev
    rows = []
    for ex in sorted(ev.EXAMPLES):
        times, losses, _ = ev.compare(ex, args.fit_rounds, args.threads)
        f, t = statistics.median(times["fastrnn"]), statistics.median(times["torch"])
        rows.append(dict(example=ex, what=ev.EXAMPLES[ex], rounds=args.fit_rounds, fastrnn_s=f, torch_s=t,
                         times=times, losses=losses))
    return rows


def render_fit(fit, args):
    if not args.fit:
        return ""
    if not fit:
        return "\nfit epochs: not timed (PyTorch is not among --impls)\n"
    out = [f"\nTime per fit epoch (the README examples; median of {args.fit_rounds} alternating epochs "
           "after a warm-up, float32):\n",
           "| example | fastrnn ms | PyTorch ms (plain loop) | speed-up | final loss fastrnn / torch |",
           "|---|---|---|---|---|"]
    for r in fit:
        out.append(f"| {r['example']}: {r['what'].split(':')[0]} | {1e3 * r['fastrnn_s']:.1f} | "
                   f"{1e3 * r['torch_s']:.1f} | {r['torch_s'] / r['fastrnn_s']:.2f}x | "
                   f"{r['losses']['fastrnn']:.4f} / {r['losses']['torch']:.4f} |")
    return "\n".join(out) + "\n"


def fit_csv(fit, info):
    return [dict(key=f"fit-{r['example']}", cell="", shape="fit", mode=r["example"], dtype="float32", impl=n,
                 ms=1e3 * r[f"{n}_s"], rounds=r["rounds"], **baseline_columns(info))
            for r in fit for n in ("fastrnn", "torch")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads for every implementation (OPENBLAS/OMP_NUM_THREADS, torch.set_num_threads, "
                        "fr.set_num_threads); default: all CPUs (%(default)s)")
    p.add_argument("--cells", default="rnn,gru,lstm")
    p.add_argument("--shapes", default=None,
                   help="comma list of tiny,medium,large,stream,medium2bi (2-layer bidirectional),"
                        "stream2 (2 layers),stream2narrow (2 layers, T=4000, H=48: the wavefront),decay (stream on 1e-37 inputs: subnormal states),"
                        "ragged (medium, lengths 1..T; PyTorch: packed sequences), fit (the README "
                        "examples' time per fit epoch against a plain PyTorch loop: bench/epoch_vs_torch.py) "
                        "(default all)")
    p.add_argument("--fit-rounds", type=int, default=9, help="epochs per framework of each fit row (median)")
    p.add_argument("--modes", default="train,infer,step", help="train, infer, step (cell latency)")
    p.add_argument("--impls", default=None,
                   help=f"implementations to time, from {','.join(ALL_IMPLS)} (default: {','.join(IMPLS)}, "
                        f"plus {BASE} with --baseline; the numpy worker always runs: it computes the check)")
    p.add_argument("--baseline", metavar="DIR", default=None,
                   help=f"another fastrnn checkout, built in place (python setup.py build_ext --inplace), e.g. "
                        f"a git worktree of an older commit: adds the implementation {BASE}, the same fastrnn "
                        "benchmark code with fastrnn imported from DIR in its own worker, on the same weights "
                        "and inputs, checked against the same reference, timed in the same alternating rounds, "
                        f"plus a table fastrnn vs {BASE} (time base / time new per case). Supported in every "
                        "mode: train, infer, step, memory, --contention. DIR's fastrnn must accept this "
                        "checkout's state_dict (load_state_dict) and API; the reference is this checkout's. "
                        "The results record DIR and its git rev-parse HEAD")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds per case; the median is reported")
    p.add_argument("--round-time", type=float, default=0.25, help="seconds of calls per round (at least one call)")
    p.add_argument("--budget", type=float, default=8.0,
                   help="seconds of timed rounds per implementation and case; slower ones get fewer rounds")
    p.add_argument("--skip-numpy-large", action="store_true", help="don't time NumPy on large and stream")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--quick", action="store_true", help="tiny shape, 3 short rounds: a smoke test")
    p.add_argument("--contention", action="store_true",
                   help=f"only the contention experiment (fastrnn, {BASE} with --baseline, torch)")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.shapes = args.shapes or "tiny"
        args.rounds, args.round_time, args.budget = 3, 0.05, 1.0
    args.cells = [c for c in args.cells.split(",") if c in GATES]
    shapes = (args.shapes or ",".join([k for k in SHAPES if k != "cell"] + ["fit"])).split(",")
    args.fit = "fit" in shapes
    args.shapes = [s for s in shapes if s in SHAPES and s != "cell"]
    args.modes = [m for m in args.modes.split(",") if m in MODES]
    if args.baseline:
        args.baseline = os.path.realpath(args.baseline)
        if not os.path.isfile(os.path.join(args.baseline, "fastrnn", "__init__.py")):
            p.error(f"--baseline {args.baseline}: no fastrnn/__init__.py there (not a fastrnn checkout)")
        if args.baseline == os.path.realpath(ROOT):
            p.error(f"--baseline {args.baseline} is this checkout; give another one (e.g. a git worktree)")
    requested = (args.impls or ",".join(IMPLS + ((BASE,) if args.baseline else ()))).split(",")
    if BASE in requested and not args.baseline:
        p.error(f"--impls {BASE} needs --baseline DIR")
    args.impls = [n for n in ALL_IMPLS if n in requested]

    workers = start_workers(["fastrnn", "numpy"] + [n for n in args.impls if n in ("torch", BASE)],
                            args.threads, args.baseline)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            info = machine_info(args, workers)
            if args.contention:
                rows = run_contention(args, workers, tmp)
                text = render_contention(rows)
                base = write_results("contention", info, {"rows": rows},
                                     [dict(r, **baseline_columns(info)) for r in rows], args.out)
            else:
                rows = run_grid(args, workers, tmp) if args.shapes else []
                text = render(rows, [n for n in args.impls if n in workers]) if rows else ""
                fit = run_fit(args) if args.fit else []
                text += render_fit(fit, args)
                base = write_results("bench", info, {"args": vars(args), "rows": rows, "fit": fit},
                                     grid_csv(rows, info) + fit_csv(fit, info), args.out)
    finally:
        for w in workers.values():
            w.close()
    b = info["baseline"]
    from_base = "" if not b else (f"; {BASE} from {b['dir']} at {b['describe'] or '(not a git checkout)'}"
                                  + (f" ({b['rev'][:12]})" if b["rev"] else "")
                                  + f", extension built {b['core_built']}")
    plan = info["plan"].get("fastrnn")
    plan_text = "" if not plan else (
        "; plan: " + ", ".join(f"{k} {v}" for k, v in plan.items() if v is not None)
        + f" ({info['plan_source']['fastrnn']})")
    print(f"{info['cpu']}, {info['cpus']} CPUs ({info['cores']} cores, {info['simd']}, {info['caches']}, "
          f"{info['hypervisor']} VM), "
          f"{args.threads} threads; "
          + ", ".join(f"{n} {v}" for n, v in info["versions"].items())
          + f"; fastrnn at {info['commit']}, extension built {info['core_built']}{from_base}; run {info['date']}"
          + plan_text + "\n")
    print(text)
    bad = [r["key"] for r in rows if "impls" in r and _check(r) != "ok"]
    if bad:
        print(f"\n!! CHECK FAILED against the NumPy reference: {', '.join(bad)}")
    print(f"\nresults: {base}.json, {base}.csv")


if __name__ == "__main__":
    main()
