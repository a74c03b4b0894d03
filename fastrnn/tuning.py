"""Per-machine tuning of the plan (csrc/plan.c): ``fr.tune()`` / ``fastrnn tune``.

The plan's thresholds decide when splitting work over the pool's threads pays -- a layer's
batch rows (``min_parallel_work``), a batch of one's hidden units (``unit_min_work``), a single
cell step's units (``cell_split_work``) -- and up to which weight sizes the input projection
runs inside the time loop (``fused_max_bytes``) and the input gradient inside the reverse loop
(``dx_loop_max_bytes``), and when a batch of one's product skips BLAS (``gemv_max_elems``);
what one round of the multi-layer wavefront costs beyond its work (``wave_round_work``),
from which its chunk count follows; and the micro-kernel's blocking, the rows of its tile
(``tile_rows``, 4 to 6; the 16 columns are one pair of AVX2 registers).

Without tuning, importing fastrnn derives the cache-size thresholds from this CPU's caches
(``derived_knobs``; on the Zen 3 machine plan.c's constants were measured on they are those
constants) and keeps the measured split thresholds. ``tune()`` measures the crossovers on the
CPU it runs on -- both sides of every threshold, on a ladder of layer sizes, alternating -- and
keeps the result in the user's cache directory, one file per CPU kind (``machine.cpu_key``),
which every later import applies (unless ``FASTRNN_NO_TUNE_CACHE`` is set;
``FASTRNN_DEFAULT_PLAN`` keeps plan.c's built-in constants, derived and cached ones alike).

A cache file is untrusted input: a file that does not parse, names unknown knobs or holds values
out of range is ignored with a warning, never half-applied. Files are written atomically.
"""
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
import warnings

import numpy as np

from . import _core
from .machine import cpu_key, facts

__all__ = ["tune", "cache_path", "cached_plan", "apply_cached", "derived_knobs", "apply_derived",
           "THRESHOLDS"]

FORMAT = 1
# the knobs tune() sets: the thread-split thresholds (multiply-adds) and the cache-size ones
# (bytes of packed weights; elements of a matrix)
SPLITS = ("min_parallel_work", "unit_min_work", "cell_split_work")
# and the wavefront's per-round overhead (multiply-adds), from which plan.c sizes its chunks
# and the rows of the float32 micro-kernel's tile (csrc/smallgemm.h)
THRESHOLDS = SPLITS + ("fused_max_bytes", "dx_loop_max_bytes", "gemv_max_elems", "wave_round_work", "tile_rows")
NEVER = 1 << 62        # a threshold no work estimate reaches: never split
_MAX = 1 << 62


def cache_dir():
    """$FASTRNN_CACHE_DIR, else the platform's user cache directory + /fastrnn."""
    d = os.environ.get("FASTRNN_CACHE_DIR")
    if d:
        return d
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~")
    elif platform.system() == "Darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "fastrnn")


def cache_path(key=None):
    """The plan file of a CPU kind (default: this machine's)."""
    return os.path.join(cache_dir(), f"plan-{key or cpu_key()}.json")


def derived_knobs(f=None):
    """The cache-size thresholds from this CPU's caches ({} where sizes are unknown):
    fused_max_bytes    a quarter of L3: the packed W_ih and W_hh that each step of the fused
                       loop reuses stay in cache beside the activations and the other core's;
    dx_loop_max_bytes  four times L2: the reverse loop streams packed W_hh^T and W_ih^T every
                       step, from L2 and the nearest part of L3;
    gemv_max_elems     half of L2's bytes in elements: a B=1 product whose float32 matrix fits
                       in half of L2 is compute-bound, and fr_gemv_rows' four panels at once
                       beat BLAS's GEMV.
    plan.c's constants were measured on a Zen 3 EPYC (512 KiB L2, 32 MiB L3), for which these
    rules give exactly those constants."""
    f = f or facts()
    out = {}
    if f.get("l3"):
        out["fused_max_bytes"] = int(f["l3"]) // 4
    if f.get("l2"):
        out["dx_loop_max_bytes"] = 4 * int(f["l2"])
        out["gemv_max_elems"] = int(f["l2"]) // 2
    return out


def apply_derived():
    """Set the cache-size thresholds from this CPU's caches (import does this before applying
    a tuning cache, unless FASTRNN_DEFAULT_PLAN is set); returns what was set."""
    if os.environ.get("FASTRNN_DEFAULT_PLAN"):
        return {}
    knobs = derived_knobs()
    if knobs:
        _core.plan_knobs(**knobs)
    return knobs


def _check_plan(data, path):
    """The knobs of a parsed plan file, or raises ValueError saying what is wrong."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fastrnn plan file of format {FORMAT}")
    knobs = data.get("knobs")
    if not isinstance(knobs, dict) or not knobs:
        raise ValueError(f"{path}: 'knobs' must be a non-empty object")
    unknown = set(knobs) - set(THRESHOLDS)
    if unknown:
        raise ValueError(f"{path}: unknown knobs {sorted(unknown)}; known: {list(THRESHOLDS)}")
    for k, v in knobs.items():
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= _MAX:
            raise ValueError(f"{path}: knob {k} must be an integer in [0, 2**62], got {v!r}")
        if k == "tile_rows" and v not in (0, 4, 5, 6):
            raise ValueError(f"{path}: knob tile_rows must be 4, 5 or 6 (0: the default), got {v!r}")
    return dict(knobs)


def cached_plan(path=None):
    """The knobs stored for this CPU kind, or None when there is no file. Raises ValueError for
    a file that exists but is not a valid plan."""
    path = path or cache_path()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1 << 20)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path}: not JSON: {e}") from None
    return _check_plan(data, path)


def apply_cached(path=None):
    """Apply this CPU kind's cached plan; returns the knobs applied, or None (no file, or
    FASTRNN_NO_TUNE_CACHE or FASTRNN_DEFAULT_PLAN set). A broken file is ignored with a warning."""
    if os.environ.get("FASTRNN_NO_TUNE_CACHE") or os.environ.get("FASTRNN_DEFAULT_PLAN"):
        return None
    try:
        knobs = cached_plan(path)
    except ValueError as e:
        warnings.warn(f"fastrnn: ignoring the tuning cache: {e}", RuntimeWarning, stacklevel=2)
        return None
    if knobs:
        _core.plan_knobs(**knobs)
    return knobs


def _save(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".plan-", suffix=".tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


# ---------------------------------------------------------------------------- measuring
def _median_pair(run_a, run_b, seconds):
    """Median times of run_a and run_b, called alternately (a b b a a b ...) after a warm-up,
    for about ``seconds`` (at least 5 and at most 41 calls each)."""
    run_a(), run_b()
    ta, tb = [], []
    end = time.perf_counter() + seconds
    for r in range(41):
        for f, t in ((run_a, ta), (run_b, tb)) if r % 2 == 0 else ((run_b, tb), (run_a, ta)):
            t0 = time.perf_counter()
            f()
            t.append(time.perf_counter() - t0)
        if r >= 4 and time.perf_counter() > end:
            break
    return statistics.median(ta), statistics.median(tb)


def _busy_ticks(path):
    """Clock ticks of CPU time: a process (/proc/PID/stat: utime + stime) or the machine
    (/proc/stat: everything but idle and iowait), or None where /proc is not there."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    if path.endswith("/stat") and path != "/proc/stat":
        fields = text.rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    v = [int(x) for x in text.splitlines()[0].split()[1:9]]
    return sum(v[0:3]) + sum(v[5:8])


class _OtherLoad:
    """The share of the machine's CPU time that other processes used between start and stop
    (None where it cannot be known): splits measured on a busy machine measure the other load."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.m0, self.p0 = _busy_ticks("/proc/stat"), _busy_ticks("/proc/self/stat")
        return self

    def __exit__(self, *exc):
        m1, p1 = _busy_ticks("/proc/stat"), _busy_ticks("/proc/self/stat")
        if None in (self.m0, self.p0, m1, p1):
            self.share = None
            return
        cap = (time.perf_counter() - self.t0) * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)
        self.share = max(0.0, (m1 - self.m0) - (p1 - self.p0)) / max(cap, 1e-9)


def _with_knobs(knobs, fn):
    def run():
        old = _core.plan_knobs(**knobs)
        try:
            fn()
        finally:
            _core.plan_knobs(**old)
    return run


def _choose(points, current, above):
    """The threshold that minimises the summed relative time over a measured ladder.

    points: (size, option_time / plain_time) in increasing size. above=True: the option (a
    split) is used for sizes >= the threshold; above=False: for sizes <= it (fusing). Candidates
    sit between neighbouring sizes (geometric mean), below all and above all; the current
    threshold is kept unless a candidate saves more than 2% of one point's time per point
    (ratios within noise of 1 move nothing). Above all sizes is NEVER for a split."""
    sizes = [w for w, _ in points]
    ratios = [r for _, r in points]
    n = len(points)
    cands = [max(1, sizes[0] // 2)] + [int(round(np.sqrt(sizes[k - 1] * sizes[k]))) for k in range(1, n)] \
        + [NEVER if above else 2 * sizes[-1]]

    def cost(t):
        use = [(w >= t) if above else (w <= t) for w in sizes]
        return sum(r if u else 1.0 for r, u in zip(ratios, use))

    best = min(cands, key=cost)
    return best if cost(best) < cost(current) - 0.02 * n else current


def _train_step(cls, T, B, D, H, rng):
    m = cls(D, H, seed=0, dtype=np.float32)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    y = m(x)[0]
    dy = np.ones_like(y)

    def step():
        m(x)
        m.backward(dy)
    return step


def _inference(cls, T, B, D, H, rng, num_layers=1):
    m = cls(D, H, num_layers=num_layers, seed=0, dtype=np.float32)
    m.eval()
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    return lambda: m(x)


def _cell_steps(H, rng):
    from .layers import LSTMCell
    cell = LSTMCell(H, H, seed=0, dtype=np.float32)
    cell.eval()
    x = rng.standard_normal((1, H)).astype(np.float32)
    s0 = (np.zeros((1, H), np.float32), np.zeros((1, H), np.float32))

    def steps():
        st = s0
        for _ in range(50):
            st = cell(x, st)
    return steps


def _packed_bytes(rows, cols):
    """Bytes of a (rows, cols) float32 matrix packed for the micro-kernel (panels of 16 rows)."""
    return 4 * (-(-rows // 16) * 16) * cols


def _ladders():
    """knob -> (the option's knobs, the plain knobs, above, [(size, label, make(rng))]):
    above=True: the option (a split) pays from a size up; False: up to a size (fusing)."""
    from .layers import LSTM
    G = 4
    return {
        "min_parallel_work": ({"min_parallel_work": 0}, {"min_parallel_work": NEVER}, True, [
            (16 * B * G * H * H, f"LSTM training T=16 B={B} D=16 H={H}",
             lambda rng, B=B, H=H: _train_step(LSTM, 16, B, 16, H, rng))
            for H, B in ((32, 4), (32, 8), (32, 16), (32, 32), (64, 16), (64, 32), (64, 64), (128, 32))]),
        "unit_min_work": ({"units": True, "unit_min_work": 0}, {"units": False}, True, [
            (G * H * H, f"LSTM training B=1 T=100 D=16 H={H}",
             lambda rng, H=H: _train_step(LSTM, 100, 1, 16, H, rng))
            for H in (16, 32, 48, 64, 96, 128, 192)]),
        "cell_split_work": ({"cell_split_work": 0}, {"cell_split_work": NEVER}, True, [
            (G * H * 2 * H, f"LSTMCell B=1 D=H={H}, 50 steps", lambda rng, H=H: _cell_steps(H, rng))
            for H in (32, 64, 96, 128, 192, 256)]),
        "fused_max_bytes": ({"fused": True}, {"fused": False}, False, [
            (2 * _packed_bytes(G * H, H), f"LSTM inference T=32 B=16 D=H={H}",
             lambda rng, H=H: _inference(LSTM, 32, 16, H, H, rng))
            for H in (128, 192, 256, 384, 512, 640)]),
        "dx_loop_max_bytes": ({"dx_in_loop": True}, {"dx_in_loop": False}, False, [
            (_packed_bytes(H, G * H) + _packed_bytes(H // 2, G * H), f"LSTM training T=24 B=16 D={H // 2} H={H}",
             lambda rng, H=H: _train_step(LSTM, 24, 16, H // 2, H, rng))
            for H in (128, 192, 256, 384, 512)]),
    }


def _measure(knob, ladder, per_point, log):
    """(threshold, [(size, option time / plain time)]) of one knob's ladder (_ladders)."""
    option, plain, above, cases = ladder
    rng = np.random.default_rng(0)
    pts = []
    for size, label, make in cases:
        run = make(rng)
        t_opt, t_plain = _median_pair(_with_knobs(option, run), _with_knobs(plain, run), per_point)
        pts.append((size, t_opt / t_plain))
        log(f"  {knob}: {label} (size {size:.3g}): with / without {t_opt / t_plain:.2f}")
    return _choose(pts, _core.plan_knobs()[knob], above), pts


def _measure_round_work(per_point, log):
    """(wave_round_work, [(value, wavefront time / layer-by-layer time)]): the wavefront's
    per-round overhead o sets its chunk count, n = sqrt(2(L-1) T s / o) (plan.c), and o itself
    (Python making the round's jobs, the hand-off, the wait for the slowest job) is this
    machine's. Each candidate, a power-of-two multiple of the current value, times a 2-layer
    LSTM at B = 1 (where the wavefront is chosen) forced through it; the current one is kept
    unless another saves more than 2%."""
    current = _core.plan_knobs()["wave_round_work"]
    from .layers import LSTM
    run = _inference(LSTM, 1000, 1, 16, 48, np.random.default_rng(0), num_layers=2)
    plain = _with_knobs({"wave": False}, run)
    pts = []
    for f in (0.25, 0.5, 1, 2, 4):
        o = max(1, int(current * f))
        t_opt, t_plain = _median_pair(_with_knobs({"wave": True, "wave_round_work": o}, run), plain, per_point)
        pts.append((o, t_opt / t_plain))
        log(f"  wave_round_work: 2-layer LSTM inference B=1 T=1000 D=16 H=48, round cost {o:.3g}: "
            f"wavefront / layer by layer {t_opt / t_plain:.2f}")
    best = min(pts, key=lambda p: p[1])
    now = dict(pts)[current]
    return (best[0] if best[1] < now - 0.02 * now else current), pts


def _measure_tile_rows(per_point, log):
    """(tile_rows, [(rows, time / time at the current rows)]): the micro-kernel's tile height
    (csrc/smallgemm.h) times each candidate on a training step and an inference of a medium
    LSTM (B = 64: every tile full) and an inference at B = 16 (8 rows a thread: remainders);
    the tile changes speed only, never results. Kept unless another saves more than 2%."""
    from .layers import LSTM
    current = _core.plan_knobs()["tile_rows"] or 6  # 0 also means the default, 6
    rng = np.random.default_rng(0)
    cases = [("LSTM training T=50 B=64 D=32 H=128", _train_step(LSTM, 50, 64, 32, 128, rng)),
             ("LSTM inference T=50 B=16 D=H=128", _inference(LSTM, 50, 16, 128, 128, rng))]
    pts, cost = [], {}
    for rows in (4, 5, 6):
        for label, run in cases:
            if rows == current:
                r = 1.0
            else:
                t_opt, t_cur = _median_pair(_with_knobs({"tile_rows": rows}, run),
                                            _with_knobs({"tile_rows": current}, run), per_point)
                r = t_opt / t_cur
            pts.append((rows, r))
            cost[rows] = cost.get(rows, 0.0) + r
            log(f"  tile_rows: {label}, {rows} rows: {r:.2f} of {current} rows' time")
    best = min(cost, key=cost.get)
    return (best if cost[best] < cost[current] - 0.02 * len(cases) else current), pts


# the knobs measured without a size ladder: knob -> (measure(per_point, log), timed pairs)
_OWN = {"wave_round_work": (_measure_round_work, 5), "tile_rows": (_measure_tile_rows, 4)}


def tune(seconds=30.0, save=True, apply=True, verbose=False):
    """Measure this machine's thread-split crossovers (about ``seconds`` in all; run it on an
    otherwise idle machine) and return {"knobs", "previous", "measured", "other_load", "path",
    "seconds"}. With ``apply`` the knobs take effect now; with ``save`` they are written to the
    cache, and every later ``import fastrnn`` on this CPU kind applies them. Nothing is applied
    or saved when other processes used more than 10% of the machine meanwhile (a warning says
    so; "other_load" is that share). With one thread in the pool only the cache-size
    thresholds are measured (nothing is split). Not thread-safe: it changes the process-wide plan while it measures; run it alone."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < 3600:
        raise ValueError(f"seconds must be a positive number of seconds below 3600, got {seconds!r}")
    log = print if verbose else (lambda *a: None)
    previous = _core.plan_knobs()
    threads = _core.get_pool_threads()
    out = {"knobs": {}, "previous": previous, "measured": {}, "other_load": None, "path": None,
           "seconds": 0.0, "threads": threads}
    names = ["fused_max_bytes", "dx_loop_max_bytes", "tile_rows"]
    if threads >= 2:
        names = list(SPLITS) + names + ["wave_round_work"]
    else:
        log("one thread in the pool: no split to tune")
    ladders = _ladders()
    t0 = time.perf_counter()
    per_point = float(seconds) / sum(len(ladders[n][3]) if n in ladders else _OWN[n][1] for n in names)
    knobs, measured = {}, {}
    try:
        with _OtherLoad() as load:
            for name in names:
                if name in _OWN:
                    knobs[name], pts = _OWN[name][0](per_point, log)
                else:
                    knobs[name], pts = _measure(name, ladders[name], per_point, log)
                measured[name] = [[int(w), round(float(r), 4)] for w, r in pts]
                log(f"{name}: {knobs[name]} (was {previous[name]})")
    finally:
        _core.plan_knobs(**previous)           # whatever a measurement left behind
    elapsed = time.perf_counter() - t0
    out.update(knobs=knobs, measured=measured, other_load=load.share, seconds=elapsed)
    if load.share is not None and load.share > 0.1:
        warnings.warn(f"fastrnn.tune: other processes used {load.share:.0%} of the machine while it "
                      "measured; nothing applied or saved (run it on an idle machine)",
                      RuntimeWarning, stacklevel=2)
        return out
    if apply:
        _core.plan_knobs(**knobs)
    path = None
    if save:
        path = cache_path()
        f = facts()
        _save(path, {"format": FORMAT, "cpu": {k: f[k] for k in ("model", "family", "model_number",
                                                                  "machine", "flags", "l1d", "l2", "l3")},
                     "threads": threads, "seconds": round(elapsed, 2), "knobs": knobs,
                     "defaults": {k: previous[k] for k in knobs}, "measured": measured,
                     "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    out["path"] = path
    return out
