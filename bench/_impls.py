"""Benchmark cases, the implementations under test, and the worker process that times them.

Every implementation lives in its own process (`python bench/_impls.py serve IMPL`), driven by
bench/run.py over JSON lines on stdin/stdout, so OpenBLAS, NumPy's OpenBLAS and PyTorch's OpenMP
runtime never share a process. `python bench/_impls.py memory IMPL ...` measures one training
step's peak memory in a fresh process.

`fastrnn@base` is the fastrnn benchmark code (class FastRNN) run on the fastrnn package of another
checkout, built in place: the directory in the environment variable FASTRNN_BENCH_BASELINE
(bench/run.py --baseline DIR sets it for that worker only). The worker imports fastrnn from there
and refuses to run if the package or its extension came from anywhere else.
"""
import gc
import importlib.machinery
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import traceback
import tracemalloc

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (T, B, D, H).  "cell" is the per-step latency case: T Python-level calls of a cell at B=1.
SHAPES = {
    "tiny": (60, 32, 1, 64),
    "medium": (100, 64, 32, 128),
    "large": (100, 64, 256, 512),
    "stream": (1000, 1, 16, 128),
    "medium2bi": (100, 64, 32, 128),
    "stream2": (1000, 1, 16, 128),
    "stream2narrow": (4000, 1, 16, 48),
    "decay": (1000, 1, 16, 128),
    "ragged": (100, 64, 32, 128),
    "cell": (1000, 1, 128, 128),
}
# "ragged": the medium shape with lengths uniform in 1..T (case_lengths); PyTorch runs it as a
# packed sequence (pack_padded_sequence, enforce_sorted=False), the way its users do.
RAGGED = ("ragged",)
# name: (num_layers, bidirectional) where not (1, False)
TOPOLOGY = {"medium2bi": (2, True), "stream2": (2, False), "stream2narrow": (2, False)}
# "stream2narrow": a step too small for the unit split (G*H*H below unit_min_work), so layer by
# layer runs each layer on one thread, and the plan runs the stack as a wavefront instead.
# "decay": the stream shape on inputs of 1e-37 (float32 needs 1.2e-38 for a normal number) and
# zero biases, so the state is tiny and, in float32, decays into the subnormal range: on x86 every FP operation
# on a subnormal takes a microcode assist, ~100x the time of a normal one. Compare with "stream".
INPUT_SCALE = {"decay": 1e-37}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
REF_MODE = {"rnn": "RNN_TANH", "gru": "GRU", "lstm": "LSTM"}
IMPLS = ("fastrnn", "torch", "numpy")
BASE = "fastrnn@base"  # fastrnn imported from the checkout in $FASTRNN_BENCH_BASELINE
BASELINE_ENV = "FASTRNN_BENCH_BASELINE"


def cpu_model():
    """lscpu's model name (platform.processor() where there is no lscpu), for table headers."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def dims(case):
    return SHAPES["cell" if case["mode"] == "step" else case["shape"]]


def topology(case):
    return (1, False) if case["mode"] == "step" else TOPOLOGY.get(case["shape"], (1, False))


def case_lengths(case):
    """The sequence lengths (B,) of a ragged case, else None (every sequence has T steps)."""
    if case["mode"] == "step" or case["shape"] not in RAGGED:
        return None
    T, B, _, _ = dims(case)
    return np.random.default_rng(2).integers(1, T + 1, B)


def flops(case):
    """2*T*B*G*H*(D+H) for a forward pass (the two GEMMs; pointwise work is not counted);
    a training step counts 3x that: backward does two GEMMs per forward one (dgates @ W for the
    input/state gradient, dgates^T @ [x, h] for the weight gradient)."""
    T, B, D, H = dims(case)
    L, bi = topology(case)
    dirs = 2 if bi else 1
    # per direction: layer 0 reads D features, later layers the dirs * H of the layer below
    fwd = 2.0 * T * B * GATES[case["cell"]] * H * dirs * ((D + H) + (L - 1) * (dirs * H + H))
    return 3 * fwd if case["mode"] == "train" else fwd


def case_key(case):
    return f"{case['cell']}-{case['shape']}-{case['mode']}-{case['dtype']}"


def parse_key(key):
    return dict(zip(("cell", "shape", "mode", "dtype"), key.split("-")))


def _load_reference():
    """fastrnn/reference.py loaded by path: importing the fastrnn package would also load the
    engine's OpenBLAS into the NumPy process."""
    spec = importlib.util.spec_from_file_location("fr_reference", os.path.join(ROOT, "fastrnn", "reference.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fastrnn(root=ROOT):
    """The in-place build in checkout `root` (default: this one), never an installed copy
    elsewhere on sys.path nor another checkout's: raises if fastrnn or any of its submodules
    loaded so far (its compiled extension among them) came from anywhere but root/fastrnn/ (a
    process holds one fastrnn, so asking for a second root in the same process raises too)."""
    root = os.path.realpath(root)
    if sys.path[0] != root:
        sys.path.insert(0, root)
    pkg = os.path.join(root, "fastrnn")
    try:
        import fastrnn
    except ImportError as e:
        raise ImportError(f"importing fastrnn from {pkg}/ failed (is {root} built in place: "
                          f"python setup.py build_ext --inplace?): {e}") from e
    for name, f in _fastrnn_files():
        if not os.path.realpath(f).startswith(pkg + os.sep):
            raise ImportError(f"fastrnn was to be imported from {pkg}/, but {name} came from {f}"
                              " (imported earlier in this process, or shadowed by another copy)")
    if not _fastrnn_files(ext=True):
        raise ImportError(f"no compiled extension of fastrnn loaded from {pkg}/ (not built in place?)")
    return fastrnn


def _fastrnn_files(ext=False):
    """(module name, file) of fastrnn and its loaded submodules; ext=True: only compiled ones."""
    return sorted((n, m.__file__) for n, m in list(sys.modules.items())
                  if (n == "fastrnn" or n.startswith("fastrnn.")) and getattr(m, "__file__", None)
                  and (not ext or m.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))))


def baseline_root():
    root = os.environ.get(BASELINE_ENV)
    if not root:
        raise RuntimeError(f"{BASE} needs the baseline checkout in ${BASELINE_ENV} (bench/run.py --baseline DIR)")
    return root


def _step_loop(cell, x, state):
    """Feed x (T, B, D) through a cell one Python call at a time; returns the final h (LSTM
    states are (h, c) tuples, which the LSTM cells of both libraries return and accept)."""
    for t in range(x.shape[0]):
        state = cell(x[t], state)
    return state[0] if isinstance(state, tuple) else state


# ---- implementations: prepare(case, params, x) -> call(); call() runs once, returns its outputs --

class FastRNN:
    root = ROOT

    def __init__(self, threads):
        self.fr = _fastrnn(self.root)
        self.fr.set_num_threads(threads)
        self.version = self.fr.__version__
        self.module = os.path.realpath(self.fr.__file__)
        self.core = [os.path.realpath(f) for _, f in _fastrnn_files(ext=True)]

    def prepare(self, case, params, x):
        cell, dt = case["cell"], np.dtype(case["dtype"])
        T, B, D, H = dims(case)
        if case["mode"] == "step":
            m = {"lstm": self.fr.LSTMCell, "gru": self.fr.GRUCell}[cell](D, H, dtype=dt)
            m.load_state_dict(params)
            m.eval()
            h0 = np.zeros((B, H), dt)
            s0 = (h0, h0) if cell == "lstm" else h0
            return lambda: {"h": _step_loop(m, x, s0)}
        L, bi = topology(case)
        m = {"rnn": self.fr.RNN, "gru": self.fr.GRU, "lstm": self.fr.LSTM}[cell](
            D, H, num_layers=L, bidirectional=bi, dtype=dt)
        m.load_state_dict(params)
        lengths = case_lengths(case)
        if case["mode"] == "infer":
            m.eval()
            return lambda: {"y": m(x, lengths=lengths)[0]}
        dy = np.ones((x.shape[0], B, H * (2 if bi else 1)), dt)  # loss = sum of outputs

        def train():
            y = m(x, lengths=lengths)[0]
            return {"y": y, "dx": m.backward(dy)[0]}
        return train


class FastRNNBase(FastRNN):
    """The same benchmark code on the baseline checkout's fastrnn."""

    def __init__(self, threads):
        self.root = baseline_root()
        super().__init__(threads)


class Torch:
    def __init__(self, threads):
        import torch
        self.torch = torch
        torch.set_num_threads(threads)
        self.version = torch.__version__

    def prepare(self, case, params, x):
        torch, cell = self.torch, case["cell"]
        T, B, D, H = dims(case)
        dt = getattr(torch, case["dtype"])
        kind = "Cell" if case["mode"] == "step" else ""
        cls = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}[cell] + kind
        L, bi = topology(case)
        m = (getattr(torch.nn, cls)(D, H) if kind else
             getattr(torch.nn, cls)(D, H, num_layers=L, bidirectional=bi)).to(dt)
        m.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
        xt = torch.from_numpy(x)
        lengths = case_lengths(case)
        if lengths is not None:
            from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
            lt = torch.from_numpy(lengths)
            inner = m

            def m_packed(inp):
                packed = pack_padded_sequence(inp, lt, enforce_sorted=False)
                out, hn = inner(packed)
                return pad_packed_sequence(out, total_length=T)[0], hn
        if case["mode"] != "train":
            m.eval()
            if case["mode"] == "infer":
                fn = lambda: {"y": (m_packed if lengths is not None else m)(xt)[0]}  # noqa: E731
            else:
                h0 = torch.zeros(B, H, dtype=dt)
                s0 = (h0, h0) if cell == "lstm" else h0
                fn = lambda: {"h": _step_loop(m, xt, s0)}  # noqa: E731

            def infer():
                with torch.no_grad():
                    return fn()
            return infer
        m.train()
        xt.requires_grad_(True)
        for p in m.parameters():  # preallocated and accumulated into, as fastrnn's grads
            p.grad = torch.zeros_like(p)

        def train():
            xt.grad = None  # fastrnn returns a fresh dx; don't time an accumulation it doesn't do
            y = (m_packed if lengths is not None else m)(xt)[0]
            y.sum().backward()
            return {"y": y, "dx": xt.grad}
        return train


class NumPyRef:
    def __init__(self, threads):
        self.ref = _load_reference()
        self.version = np.__version__

    def prepare(self, case, params, x):
        ref, mode = self.ref, REF_MODE[case["cell"]]
        if case["mode"] == "step":
            w = [params[k] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            H = w[1].shape[1]
            lstm = mode == "LSTM"

            def step():
                h = c = np.zeros((x.shape[1], H), x.dtype)
                for t in range(x.shape[0]):
                    out = ref.cell_forward(mode, *w, x[t], h, c)
                    h, c = out[0], (out[1] if lstm else None)
                return {"h": h}
            return step
        L, bi = topology(case)
        lengths = case_lengths(case)
        if case["mode"] == "infer":
            return lambda: {"y": ref.forward(mode, params, x, num_layers=L, bidirectional=bi, lengths=lengths)[0]}

        def train():
            y, _, _, cache = ref.forward(mode, params, x, num_layers=L, bidirectional=bi, lengths=lengths)
            return {"y": y, "dx": ref.backward(cache, dy=np.ones_like(y))[0]}
        return train


CLASSES = {"fastrnn": FastRNN, BASE: FastRNNBase, "torch": Torch, "numpy": NumPyRef}


def _numpy(v):
    return v.detach().numpy() if hasattr(v, "detach") else np.asarray(v)


def load_case(path):
    """(params, x, ref) from the case file: params are fastrnn's state_dict, ref the float64
    reference outputs (absent until the reference has been computed)."""
    with np.load(path) as z:
        params = {k[2:]: z[k] for k in z.files if k.startswith("p_")}
        ref = {k[4:]: z[k] for k in z.files if k.startswith("ref_")}
        return params, z["x"], ref


def new_case(case, fr=None):
    """(params, x): fastrnn (this checkout's, or the module `fr`) builds the weights (seeded), so
    every implementation uses fastrnn's state_dict; x ~ N(0, 1). bench/run.py writes each case
    once, from the fastrnn worker, and every worker (fastrnn@base too) loads that same file."""
    fr = fr or _fastrnn()
    T, B, D, H = dims(case)
    dt = np.dtype(case["dtype"])
    if case["mode"] == "step":
        m = {"lstm": fr.LSTMCell, "gru": fr.GRUCell}[case["cell"]](D, H, dtype=dt, seed=0)
    else:
        L, bi = topology(case)
        m = {"rnn": fr.RNN, "gru": fr.GRU, "lstm": fr.LSTM}[case["cell"]](
            D, H, num_layers=L, bidirectional=bi, dtype=dt, seed=0)
    params = m.state_dict()
    x = np.random.default_rng(1).standard_normal((T, B, D))
    if case["shape"] in INPUT_SCALE:
        x *= INPUT_SCALE[case["shape"]]
        for k in params:            # no bias to lift the pre-activations out of the tiny range
            if k.startswith("bias"):
                params[k] = np.zeros_like(params[k])
    return params, x.astype(dt)


def save_case(path, params, x, ref=None):
    np.savez(path, x=x, **{"p_" + k: v for k, v in params.items()},
             **{"ref_" + k: v for k, v in (ref or {}).items()})


def reference_outputs(case, path):
    """The check's ground truth: the NumPy reference in float64 on the same (exactly
    representable) weights and inputs, appended to the case file."""
    params, x, _ = load_case(path)
    up = {k: v.astype(np.float64) for k, v in params.items()}
    save_case(path, params, x, NumPyRef(0).prepare(case, up, x.astype(np.float64))())


def errors(out, ref):
    """max |got - ref| / max(1, max |ref|) per output: absolute for O(1) values, relative for
    the large input gradients of long sequences."""
    return {k: float(np.max(np.abs(_numpy(out[k]) - ref[k])) / max(1.0, float(np.max(np.abs(ref[k])))))
            for k in ref}


class Worker:
    """State of a serving worker: the implementation and the prepared call of the current case."""

    def __init__(self, name, threads):
        self.impl = CLASSES[name](threads)
        self.call, self.reps = None, 1

    def info(self):
        out = {"version": self.impl.version, "pid": os.getpid(),
               **{k: getattr(self.impl, k) for k in ("module", "core") if hasattr(self.impl, k)}}
        if hasattr(self.impl, "fr"):
            # the plan this fastrnn runs with: its defaults, or what `fastrnn tune` cached
            knobs = getattr(self.impl.fr._core, "plan_knobs", None)
            out["plan"] = knobs() if knobs else None
            tuning = getattr(self.impl.fr, "_tuning", None)
            if tuning is None or os.environ.get("FASTRNN_DEFAULT_PLAN"):
                out["plan_source"] = "built-in constants"
            elif not os.environ.get("FASTRNN_NO_TUNE_CACHE") and os.path.exists(tuning.cache_path()):
                out["plan_source"] = f"tuned: {tuning.cache_path()}"
            else:
                out["plan_source"] = "derived from this CPU's caches"
        return out

    def make(self, case, path):
        save_case(path, *new_case(case))

    def reference(self, case, path):
        reference_outputs(case, path)

    def setup(self, case, path, round_time):
        self.call = None  # free the previous case before building this one
        gc.collect()
        params, x, ref = load_case(path)
        self.call = self.impl.prepare(case, params, x)
        err = errors(self.call(), ref)
        # warm-up: at least two more calls and ~round_time seconds; then size a round to round_time
        t0, n = time.perf_counter(), 0
        while n < 2 or (time.perf_counter() - t0 < round_time and n < 50):
            self.call()
            n += 1
        t_one = (time.perf_counter() - t0) / n
        self.reps, self.round_time = max(1, round(round_time / t_one)), round_time
        return {"err": err, "t_one": t_one, "reps": self.reps}

    def time(self):
        """Mean time per call over `reps` calls, cut short after 4x the planned round time: under
        contention PyTorch's calls can get 100x slower, and a round must not take minutes."""
        t0 = time.perf_counter()
        for n in range(1, self.reps + 1):
            self.call()
            if time.perf_counter() - t0 > 4 * self.round_time:
                break
        return {"t": (time.perf_counter() - t0) / n}


def serve(name, threads):
    """Worker loop: one JSON request {"op": method, **kwargs} per stdin line, one JSON reply per
    stdout line ({"error": traceback} if the method raised)."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    worker = Worker(name, threads)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            reply = getattr(worker, req.pop("op"))(**req) or {}
        except Exception:
            reply = {"error": traceback.format_exc()}
        proto.write(json.dumps(reply) + "\n")


def _rss_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def memory(name, threads, case, path):
    """Peak memory of a training step in KiB, measured the same way for every implementation in
    a fresh process: RSS is read after the model and inputs exist; one step runs (lazy library
    buffers, caches or buffers kept for the next step); the peak-RSS mark is reset
    (/proc/self/clear_refs, which also resets getrusage's ru_maxrss); a second step runs;
    reported: its peak RSS minus the RSS before the first step. So weights, inputs and
    preallocated gradients are not counted; outputs, saved activations, workspaces and
    temporaries are. NumPy-based implementations also report tracemalloc's peak over the first
    step (NumPy registers its data buffers with tracemalloc), a cross-check of the RSS figure
    that misses only what C code mallocs itself."""
    impl = CLASSES[name](threads)
    params, x, _ = load_case(path)
    call = impl.prepare(case, params, x)
    gc.collect()
    base = _rss_kib("VmRSS")
    if name != "torch":  # fastrnn, fastrnn@base, numpy
        tracemalloc.start()
    call()
    res = {}
    if tracemalloc.is_tracing():
        res["traced_kib"] = tracemalloc.get_traced_memory()[1] // 1024
        tracemalloc.stop()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    call()
    res["rss_kib"] = _rss_kib("VmHWM") - base
    return res


def loop(name, key, seconds, threads):
    """Call one case repeatedly for `seconds`, for a profiler to watch."""
    impl = CLASSES[name](threads)
    call = impl.prepare(parse_key(key), *new_case(parse_key(key), getattr(impl, "fr", None)))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        call()
        n += 1
    print(f"{name} {key}: {n} calls, {1e3 * (time.perf_counter() - t0) / n:.3f} ms/call")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "serve":  # serve IMPL THREADS
        serve(args[0], int(args[1]))
    elif cmd == "memory":  # memory IMPL THREADS CASE_JSON PATH
        print(json.dumps(memory(args[0], int(args[1]), json.loads(args[2]), args[3])))
    elif cmd == "loop":  # loop IMPL CASE_KEY [SECONDS [THREADS]], e.g. loop fastrnn lstm-tiny-train-float32
        # (IMPL fastrnn@base: FASTRNN_BENCH_BASELINE=DIR python bench/_impls.py loop fastrnn@base ...)
        loop(args[0], args[1], float(args[2]) if len(args) > 2 else 5.0,
             int(args[3]) if len(args) > 3 else os.cpu_count())
