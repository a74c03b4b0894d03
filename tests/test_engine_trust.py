"""The engine under pressure: dimensions past the 32-bit BLAS interface, NaN and Inf in every
code path, and the worker pool under threads and fork (the issue "trustworthy under threads, bad
input and faults").

Huge shapes cost no memory here: zero-stride views (np.broadcast_to) for the checks that come
before any data is read, and C-contiguous arrays over MAP_NORESERVE anonymous mappings (only the
pages a kernel touches are ever backed) where a kernel must really run on them.
"""
import mmap
import os
import re
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import _core, layers
from fastrnn import reference as ref
from tolerances import tolerance

INT_MAX = 2**31 - 1
KINDS = {"RNN_TANH": _core.RNN_TANH, "RNN_RELU": _core.RNN_RELU, "LSTM": _core.LSTM, "GRU": _core.GRU}
GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


@pytest.fixture
def threads():
    """Sets the pool's thread count for one test, restoring it afterwards."""
    before = fr.get_num_threads()
    yield fr.set_num_threads
    fr.set_num_threads(before)


# ---- integer widths: dimensions beyond INT_MAX ----------------------------------------------------

def virtual(shape, dtype=np.float32):
    """A zero-filled C-contiguous array of any size backed by an anonymous MAP_NORESERVE mapping:
    no memory is committed until a page is written, so 16 GB arrays cost what a kernel touches."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0x4000)
    try:
        buf = mmap.mmap(-1, n, flags=flags)
    except (OSError, ValueError, OverflowError) as e:
        pytest.skip(f"cannot map {n} bytes of address space: {e}")
    a = np.frombuffer(buf, dtype=dtype).reshape(shape)
    assert a.flags.c_contiguous and a.flags.writeable
    return a


def limit(what):
    return rf"{what} is \d+, more than {INT_MAX} \(2\*\*31 - 1\), the largest dimension"


def test_check_dim_names_the_argument_and_the_limit():
    assert _core.MAX_DIM == INT_MAX
    assert _core.check_dim("w_ih's columns D", INT_MAX) == INT_MAX
    with pytest.raises(ValueError, match=limit("w_ih's columns D") + ".*scipy-openblas32"):
        _core.check_dim("w_ih's columns D", INT_MAX + 1)


@pytest.mark.parametrize("mode", list(KINDS))
@pytest.mark.parametrize("train", [False, True])
def test_cell_step_refuses_a_batch_beyond_int_max(mode, train):
    """A batch of 2**31 rows (a zero-stride view) used to wrap around to a negative int and report
    "all dimensions must be >= 1"; it must name x's batch size and the limit instead."""
    D, H, G = 3, 4, GATES[mode]
    x = np.broadcast_to(np.zeros((1, D), np.float32), (2**31, D))
    h = np.broadcast_to(np.zeros((1, H), np.float32), (2**31, H))
    w_ih, w_hh = np.zeros((G * H, D), np.float32), np.zeros((G * H, H), np.float32)
    with pytest.raises(ValueError, match=limit("x's batch size B")):
        _core.cell_step(KINDS[mode], x, h, h if mode == "LSTM" else None, w_ih, w_hh, None, None, train)
    # the dimensions of the weights too: D and G*H are BLAS dimensions of the step's products
    x1 = np.zeros((1, 1), np.float32)  # D is read from w_ih and checked before x's shape
    wide = np.broadcast_to(np.zeros((1, 1), np.float32), (G * H, 2**31))
    with pytest.raises(ValueError, match=limit("w_ih's columns D")):
        _core.cell_step(KINDS[mode], x1, h[:1], h[:1] if mode == "LSTM" else None, wide, w_hh, None, None, train)


def test_projection_refuses_more_than_int_max_rows():
    """project() is one GEMM over all T*B rows: T*B = 2**31 was passed to BLAS as a negative M
    (OpenBLAS printed an error and left act unwritten, no exception)."""
    T, B = 2**16, 2**15
    x = virtual((T, B, 1))
    act = virtual((T, B, 2))
    w = np.ones((2, 1), np.float32)
    with pytest.raises(ValueError, match=limit("x's rows T\\*B")):
        _core.project(_core.RNN_TANH, x, w, act)
    with pytest.raises(ValueError, match=limit("x's rows T\\*B")):  # the layer's one-call form
        _core.forward(_core.RNN_TANH, x, np.zeros((B, 2), np.float32), None, w,
                      np.zeros((2, 2), np.float32), None, None, train=False)
    # one row less is accepted by the check (and would run: its GEMM dimensions fit an int)
    assert _core.check_dim("x's rows T*B", T * B - 1) == T * B - 1


def test_weight_gradients_refuse_more_than_int_max_rows():
    """backward_params' weight-gradient GEMMs have inner dimension T*B, which was cast to int."""
    T, B, H = 2**16, 2**15, 1
    x, dgx = virtual((T, B, 1)), virtual((T, B, H))
    hprev = virtual((T, B, H))
    dw_ih, dw_hh = np.zeros((H, 1), np.float32), np.zeros((H, H), np.float32)
    with pytest.raises(ValueError, match=limit("x's rows T\\*B")):
        _core.backward_params(_core.RNN_TANH, 0, H, 0, 0, x, np.ones((H, 1), np.float32), hprev, dgx,
                              None, None, False, dw_ih, dw_hh, None, None)
    assert not dw_ih.any() and not dw_hh.any()


def test_entry_points_refuse_wide_dimensions_with_value_errors():
    """Arguments that used to overflow a C int on conversion (OverflowError) or in a product."""
    big = np.broadcast_to(np.zeros((1, 1, 1), np.float32), (1, 1, 2**31))
    with pytest.raises(ValueError, match=limit(r"y's last dimension \(its leading dimension\)")):
        _core.recur(_core.RNN_TANH, 0, 1, False, None, np.zeros((1, 1), np.float32), None,
                    np.zeros((1, 1), np.float32), None, None, big, 0, np.zeros((1, 1), np.float32),
                    None, np.zeros((1, 1, 1), np.float32), None, None)
    with pytest.raises(ValueError, match=limit("the batch size B")):
        _core.plan_row_ranges(_core.LSTM, 1, 2**31, 8, 1)
    with pytest.raises(ValueError, match=limit(r"the hidden size H times 4 gates \(G\*H\)")):
        _core.fused_pays(_core.LSTM, np.float32, 1, 1, 1, 2**29)
    # work estimates are Python ints of any size (layers multiply four dimensions)
    assert _core.plan_parts(2**80, 2**70) >= 1


def test_unit_split_refuses_sequences_whose_task_count_overflows(plan_knobs, threads):
    """A batch of one split by units counts 2*T completed tasks in an int: the plan never splits
    a longer sequence, and recur_units refuses one."""
    plan_knobs(units=True)
    threads(2)
    T = 2**30 + 1
    assert _core.plan_units_mid(_core.LSTM, 2**30 - 1, 1, 64, 1, False) is not None
    assert _core.plan_units_mid(_core.LSTM, T, 1, 64, 1, False) is None
    H = 16
    act = np.broadcast_to(np.zeros((1, 1, 4 * H), np.float32), (T, 1, 4 * H))
    z = np.zeros((1, H), np.float32)
    with pytest.raises(ValueError, match=r"act's time steps T is 1073741825, more than 1073741823"):
        _core.recur_units(_core.LSTM, 8, 0, False, z, z, np.zeros((4 * H, H), np.float32), None, None,
                          act[..., :H], 0, z, z, act, None, None, 1.0, np.zeros(4, np.intc),
                          np.zeros(1, np.float32))


def test_time_loops_address_rows_beyond_2_to_the_31_elements():
    """Offsets into (T,B,.) buffers are products of dimensions: with T*B*G*H > 2**32 the last rows
    of a batch sit past every 32-bit offset. The forward and backward loops over those rows must
    equal the same rows computed alone."""
    T, B, D, H = 2, 2**27, 3, 4   # LSTM: act is (2, 2**27, 16), 2**32 elements
    G = 4
    b0, b1 = B - 3, B
    rng = np.random.default_rng(0)
    w_ih = rng.standard_normal((G * H, D)).astype(np.float32)
    w_hh = rng.standard_normal((G * H, H)).astype(np.float32)
    b_ih, b_hh = (rng.standard_normal(G * H).astype(np.float32) for _ in range(2))
    rows = {k: rng.standard_normal(s).astype(np.float32)
            for k, s in (("x", (T, 3, D)), ("h0", (3, H)), ("c0", (3, H)), ("dy", (T, 3, H)))}
    x, y, act = virtual((T, B, D)), virtual((T, B, H)), virtual((T, B, G * H))
    hprev, aux = virtual((T, B, H)), virtual((T, B, 2 * H))
    h0, c0, h_n, c_n = (virtual((B, H)) for _ in range(4))
    x[:, b0:b1], h0[b0:b1], c0[b0:b1] = rows["x"], rows["h0"], rows["c0"]
    for fused in (False, True):
        if not fused:
            act[:, b0:b1] = np.einsum("tbd,gd->tbg", rows["x"], w_ih)
        _core.recur(_core.LSTM, b0, b1, False, None, h0, c0, w_hh, b_ih, b_hh, y, 0, h_n, c_n, act,
                    hprev, aux, x=x if fused else None, w_ih=w_ih if fused else None)
        want_y, want_h, want_c, saved = _core.forward(_core.LSTM, rows["x"], rows["h0"], rows["c0"],
                                                      w_ih, w_hh, b_ih, b_hh)
        close(y[:, b0:b1], want_y, np.float32, "forward", "y")
        close(h_n[b0:b1], want_h, np.float32, "forward", "h_n")
        close(c_n[b0:b1], want_c, np.float32, "forward", "c_n")
    dy, dgx = virtual((T, B, H)), virtual((T, B, G * H))
    dh0, dc0 = virtual((B, H)), virtual((B, H))
    dy[:, b0:b1] = rows["dy"]
    _core.recur_backward(_core.LSTM, b0, b1, False, None, w_hh, act, hprev, aux, dy, 0, None, None,
                         dh0, dc0, dgx, None)
    want_dgx = np.empty((T, 3, G * H), np.float32)
    want_dh0, want_dc0 = np.empty((3, H), np.float32), np.empty((3, H), np.float32)
    _core.recur_backward(_core.LSTM, 0, 3, False, None, w_hh, *saved, rows["dy"], 0, None, None,
                         want_dh0, want_dc0, want_dgx, None)
    close(dgx[:, b0:b1], want_dgx, np.float32, "grad", "dgx")
    close(dh0[b0:b1], want_dh0, np.float32, "grad", "dh0")
    close(dc0[b0:b1], want_dc0, np.float32, "grad", "dc0")


def close(got, want, dtype, kind, what):
    tol = tolerance(dtype, kind)
    err = np.max(np.abs(got - want)) if got.size else 0.0
    assert np.allclose(got, want, **tol), f"{what}: max abs err {err:.3g} exceeds {tol}"


# ---- the worker pool: thread counts, concurrent callers, fork ---------------------------------------

def test_thread_count_is_range_checked_with_value_errors(threads):
    """set_num_threads(2**31) raised OverflowError from the int conversion; the limit is
    _core.MAX_THREADS (csrc/pool.h FR_MAX_THREADS = 1024, the caller included)."""
    before = fr.get_num_threads()
    assert _core.MAX_THREADS == 1024
    for bad in (2**31, 2**64, _core.MAX_THREADS + 1):
        with pytest.raises(ValueError, match=r"must be in 1\.\.1024"):
            _core.set_pool_threads(bad)
        with pytest.raises(ValueError):
            fr.set_num_threads(bad)
        with pytest.raises(ValueError, match=r"num_threads must be in 1\.\.1024"):
            _core.set_num_threads(bad)  # BLAS's thread count
    with pytest.raises(TypeError):
        _core.set_pool_threads(2.0)
    assert fr.get_num_threads() == before
    threads(_core.MAX_THREADS)
    assert fr.get_num_threads() == _core.MAX_THREADS


def _models():
    """Layers and cells of every kind with work enough to be split (min_parallel_work=0); the
    2-layer projected LSTM at a batch of one (a variant: no unit split) runs forward and
    backward as a wavefront (in chunks of 5 steps) whenever the pool has two threads or more."""
    return [fr.LSTM(3, 16, seed=1), fr.GRU(3, 16, seed=2, bidirectional=True),
            fr.RNN(3, 16, seed=3, nonlinearity="relu", num_layers=2), fr.LSTM(3, 32, seed=4),
            fr.LSTMCell(3, 48, seed=5), fr.GRUCell(3, 48, seed=6),
            fr.LSTM(3, 32, seed=7, num_layers=2, proj_size=16)]


def _run_model(m, x, x1):
    """Forward and backward of a layer (x) or 12 cell steps and their BPTT (x1: a batch of one)."""
    if isinstance(m, (fr.LSTMCell, fr.GRUCell)):
        h = np.zeros((1, m.hidden_size), np.float32)
        s = (h, h) if isinstance(m, fr.LSTMCell) else h
        out = []
        for t in range(x.shape[0]):
            s = m(x[t, :1], s)
            out.append(s[0] if isinstance(m, fr.LSTMCell) else s)
        one = np.ones_like(out[-1])
        grads = [m.backward((one, None) if isinstance(m, fr.LSTMCell) else one)[0] for _ in out]
        return out + grads + [g.copy() for g in m.grads.values()]
    xb = x1 if m.hidden_size == 32 else x  # the 32-unit LSTMs run a batch of one (unit split, wavefront)
    y, _ = m(xb)
    return [y, m.backward(np.ones_like(y))[0]] + [g.copy() for g in m.grads.values()]


def test_concurrent_callers_with_changing_thread_counts_get_their_results(plan_knobs, threads, monkeypatch):
    """Python threads run layers (row ranges, directions, a batch of one split by units) and cells
    (split steps) on the one pool while another thread keeps changing the thread count (joining
    and restarting the workers): no call may hang, fail, or give a result that differs in any
    way from the one computed alone (to rounding: how rows are split depends on the thread count,
    and the packed micro-kernel serves only some row counts). A caller that finds the pool busy
    runs its jobs itself, and any set of jobs (unit tasks included) completes on one thread."""
    plan_knobs(min_parallel_work=0, cell_split_work=0, units=True, wave_chunk=5)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((12, 9, 3)).astype(np.float32)
    x1 = rng.standard_normal((30, 1, 3)).astype(np.float32)
    threads(1)
    want = []
    for m in _models():
        m.zero_grad() if hasattr(m, "zero_grad") else None
        want.append(_run_model(m, x, x1))
    threads(2)
    waves = []  # the backward wavefronts that ran (list.append is atomic under the GIL)
    orig = layers._RNNBase._backward_wave

    def spy(self, *args):
        waves.append(1)
        return orig(self, *args)

    monkeypatch.setattr(layers._RNNBase, "_backward_wave", spy)
    models = [_models() for _ in range(2)]  # two callers per model kind
    errors, got = [], {}
    stop = threading.Event()

    def work(i, j):
        try:
            m = models[i][j]
            for _ in range(8):
                if hasattr(m, "zero_grad"):
                    m.zero_grad()
                got[i, j] = _run_model(m, x, x1)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((i, j, repr(e)))

    def churn():
        k = 0
        while not stop.is_set():
            fr.set_num_threads(1 + k % 4)
            k += 1

    workers = [threading.Thread(target=work, args=(i, j)) for i in range(2) for j in range(len(want))]
    changer = threading.Thread(target=churn)
    changer.start()
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    stop.set()
    changer.join(timeout=60)
    assert not any(t.is_alive() for t in workers + [changer]), "a call never finished"
    assert not errors, errors
    assert waves, "no wavefront ran while the threads competed"
    for (i, j), res in got.items():
        assert len(res) == len(want[j])
        for a, b in zip(res, want[j]):
            close(a, b, np.float32, "grad", f"caller {i}, model {j}")


FORK_SCRIPT = textwrap.dedent("""
    import os, sys, threading
    import numpy as np
    import fastrnn as fr
    from fastrnn import _core

    _core.plan_knobs(min_parallel_work=0, cell_split_work=0, units=True)
    fr.set_num_threads(2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 8, 3)).astype(np.float32)
    x1 = rng.standard_normal((20, 1, 3)).astype(np.float32)
    layers = [fr.LSTM(3, 16, seed=1, bidirectional=True), fr.GRU(3, 32, seed=2)]

    def run(m, xb):
        y, _ = m(xb)
        return y, m.backward(np.ones_like(y))[0]

    want = [run(layers[0], x), run(layers[1], x1)]

    def check(tag, exact=True):
        # with the same thread count the same jobs run: bit for bit the same results
        same = np.array_equal if exact else (lambda a, b: np.allclose(a, b, rtol=1e-5, atol=1e-5))
        for (wy, wdx), m, xb in zip(want, layers, (x, x1)):
            y, dx = run(m, xb)
            assert same(y, wy) and same(dx, wdx), tag

    # Python threads keep the pool busy (dispatching, workers mid-job) while the main thread
    # forks: the child inherits locks in whatever state they were and none of the workers.
    stop = threading.Event()
    def busy(i):
        m = [fr.LSTM(3, 16, seed=1, bidirectional=True), fr.GRU(3, 32, seed=2)][i]
        while not stop.is_set():
            run(m, (x, x1)[i])
    hammer = [threading.Thread(target=busy, args=(i,), daemon=True) for i in range(2)]
    for t in hammer:
        t.start()
    children = []
    for k in range(int(sys.argv[1])):
        pid = os.fork()
        if pid == 0:  # child: only this thread exists; the pool must start afresh
            try:
                check("child")
                fr.set_num_threads(3)
                check("child, 3 threads", exact=False)
                os._exit(0)
            except BaseException as e:
                print("child failed:", repr(e), flush=True)
                os._exit(1)
        children.append(pid)
        check("parent after fork")
    stop.set()
    for t in hammer:
        t.join()
    bad = [pid for pid in children if os.waitpid(pid, 0)[1] != 0]
    check("parent at the end")
    print("ok", len(children), "children", len(bad), "failed", flush=True)
    sys.exit(1 if bad else 0)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_while_the_pool_is_busy_leaves_parent_and_children_working(tmp_path):
    """The parent has used the pool and other threads are inside it when it forks, repeatedly:
    every child must run fastrnn (one thread or several), and so must the parent. Run in a
    subprocess with a timeout, so a deadlock fails the test instead of hanging the suite."""
    script = tmp_path / "fork_pool.py"
    script.write_text(FORK_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(fr.__file__))]
                                                       + sys.path))
    try:
        proc = subprocess.run([sys.executable, str(script), "20"], capture_output=True, text=True,
                              timeout=240, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"fork test deadlocked (no exit in 240 s); output: {e.stdout!r} {e.stderr!r}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok 20 children 0 failed" in proc.stdout


# ---- NaN and Inf propagate as IEEE arithmetic does -------------------------------------------------
# The special values of each gate function, exactly as NumPy gives them; then whole layers and
# cells against the independent NumPy reference with one NaN or Inf placed in x, a state, a
# weight, a bias or an incoming gradient: the NaN (and infinity) positions must be the same and
# the finite values equal to the usual tolerance, on every code path (forced by the plan's knobs
# and shapes). The portable float32 loops (vmath.h; the AVX2 kernels replace them on this CPU)
# run in a subprocess with FASTRNN_BLAS_STEPS=1.

SPECIAL = [np.nan, np.inf, -np.inf, 0.0, 0.5, -1.5, 8.5, -9.5, 20.0, -20.0, 100.0, -100.0, 1e30,
           -1e30, 3.0]  # 15 values: H = 15 puts some in the AVX2 kernels' masked tail


def _np_sigmoid(v):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-v))


def _gate_values(mode, act, v):
    """The gate activations fastrnn saved in act (one row) and what NumPy gives for them."""
    H = v.size
    with np.errstate(invalid="ignore"):
        if mode == "RNN_TANH":
            return [("tanh", act[:H], np.tanh(v))]
        if mode == "RNN_RELU":
            return [("relu", act[:H], np.maximum(v, 0))]
        if mode == "LSTM":
            return [("sigmoid i", act[:H], _np_sigmoid(v)), ("sigmoid f", act[H:2 * H], _np_sigmoid(v[::-1])),
                    ("tanh g", act[2 * H:3 * H], np.tanh(v)), ("sigmoid o", act[3 * H:], _np_sigmoid(v))]
        r = _np_sigmoid(v)
        return [("sigmoid r", act[:H], r), ("sigmoid z", act[H:2 * H], _np_sigmoid(v[::-1])),
                ("tanh n", act[2 * H:], np.tanh(v + r * 0))]  # r * (W_hn h + b_hn) with h = 0, no bias


def _check_special(name, got, want, dtype):
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{name}: NaN at {np.isnan(got)} want {np.isnan(want)}"
    special = np.isinf(want) | np.isinf(SPECIAL)  # exact where NumPy saturates to +-1, 0, 1, inf
    fin = ~np.isnan(want)
    exact = special & fin
    assert np.array_equal(got[exact], want[exact]), f"{name}: at +-inf inputs {got[exact]} want {want[exact]}"
    assert np.allclose(got[fin], want[fin], **tolerance(dtype, "forward")), f"{name}: {got} want {want}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", list(KINDS))
@pytest.mark.parametrize("path", ["layer", "fused", "cell", "split cell"])
def test_gate_functions_of_nan_and_inf_are_numpys(plan_knobs, threads, mode, dtype, path):
    """Pre-activations NaN, +-inf, huge and moderate straight into the gates (they are b_ih:
    zero input, weights and state, so no product mixes them): sigmoid(-inf) = 0, sigmoid(+inf)
    = 1, tanh(+-inf) = +-1, relu(NaN) = NaN, as NumPy. (relu(NaN) gave 0, sigmoid(-inf) 6e-39.)"""
    v = np.array(SPECIAL, dtype)
    H, G = v.size, GATES[mode]
    b_ih = np.concatenate([v, v[::-1], v, v][:G]).astype(dtype)
    b_hh = np.zeros(G * H, dtype)
    x = np.zeros((1, 1, 1), dtype)
    w_ih, w_hh = np.zeros((G * H, 1), dtype), np.zeros((G * H, H), dtype)
    h0 = np.zeros((1, H), dtype)
    c0 = h0 if mode == "LSTM" else None
    plan_knobs(fused=path == "fused", cell_split_work=0 if path == "split cell" else 2**62)
    threads(2)
    if path in ("layer", "fused"):
        if path == "fused":  # the projection inside the time loop (fr_recur with x)
            y, act = np.empty((1, 1, H), dtype), np.empty((1, 1, G * H), dtype)
            _core.recur(KINDS[mode], 0, 1, False, None, h0, c0, w_hh, b_ih, b_hh, y, 0, np.empty((1, H), dtype),
                        np.empty((1, H), dtype) if c0 is not None else None, act, np.empty((1, 1, H), dtype),
                        np.empty((1, 1, 2 * H), dtype) if mode == "LSTM" else
                        np.empty((1, 1, H), dtype) if mode == "GRU" else None, x=x, w_ih=w_ih)
        else:
            act = _core.forward(KINDS[mode], x, h0, c0, w_ih, w_hh, b_ih, b_hh)[3][0]
    else:
        act = _core.cell_step(KINDS[mode], x[0], h0, c0, w_ih, w_hh, b_ih, b_hh, True)[2][1][0]
    for name, got, want in _gate_values(mode, act[0, 0], v):
        _check_special(f"{mode} {name}", got, want, dtype)


NAN_INF_SCRIPT = textwrap.dedent("""
    import sys, pytest
    import numpy as np
    from fastrnn import _core
    # the packed products and AVX2 gate kernels are off: fused mode never pays without them
    assert not _core.fused_pays(_core.LSTM, np.float32, 100, 32, 32, 32), "FASTRNN_BLAS_STEPS=1 ignored"
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-x", sys.argv[1], "-k", sys.argv[2]]))
""")


def test_portable_float32_loops_propagate_nan_and_inf(tmp_path):
    """The portable gate loops (vmath.h's fr_expf/fr_tanhf, no AVX2 kernels or packed products)
    run only on CPUs without AVX2+FMA, or with FASTRNN_BLAS_STEPS=1, read once per process: the
    gate and layer checks of this file again, float32, in a subprocess with it set."""
    script = tmp_path / "portable.py"
    script.write_text(NAN_INF_SCRIPT)
    env = dict(os.environ, FASTRNN_BLAS_STEPS="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(fr.__file__))] + sys.path))
    proc = subprocess.run([sys.executable, str(script), __file__,
                           "(gate_functions or layers_and_cells_match) and float32"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=os.path.dirname(__file__))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"\b[1-9]\d* passed", proc.stdout) and not re.search(r"\d+ failed", proc.stdout)


LAYER_CLASSES = {"RNN_TANH": (fr.RNN, {"nonlinearity": "tanh"}), "RNN_RELU": (fr.RNN, {"nonlinearity": "relu"}),
                 "LSTM": (fr.LSTM, {}), "GRU": (fr.GRU, {})}
# where the one bad value goes: (what, index, value); indices into (T,B,.) / (L*dirs,B,H) / params
PLACES = {
    "x nan": ("x", (2, 1, 0), np.nan), "x +inf": ("x", (1, 0, 1), np.inf), "x -inf": ("x", (3, 1, 2), -np.inf),
    "h0 nan": ("h0", (0, 1, 2), np.nan), "h0 +inf": ("h0", (0, 0, 1), np.inf),
    "c0 +inf": ("c0", (0, 1, 0), np.inf), "c0 nan": ("c0", (0, 0, 3), np.nan),
    "w_ih +inf": ("weight_ih_l0", (1, 2), np.inf), "w_hh nan": ("weight_hh_l0", (2, 1), np.nan),
    "w_hh -inf": ("weight_hh_l0", (0, 3), -np.inf), "b_hh nan": ("bias_hh_l0", (3,), np.nan),
    "dy nan": ("dy", (3, 1, 1), np.nan), "dy +inf": ("dy", (4, 0, 2), np.inf),
    "dh_n -inf": ("dh_n", (0, 1, 3), -np.inf),
}
# code paths: (description, layer options, batch, plan knobs, threads)
PATHS = {
    "rows": ({}, 3, {"fused": False, "dx_in_loop": False}, 1),
    "fused, dx in loop": ({}, 4, {"fused": True, "dx_in_loop": True}, 1),
    "row ranges, 2 layers, bidirectional": ({"num_layers": 2, "bidirectional": True}, 5,
                                            {"min_parallel_work": 0}, 3),
    "ragged, bidirectional": ({"bidirectional": True, "lengths": [6, 2, 4]}, 3, {}, 2),
    "ragged, dx in loop": ({"lengths": [5, 2, 3, 1]}, 4, {"dx_in_loop": True, "fused": True}, 1),
    "batch of one, unit split": ({}, 1, {"units": True, "fused": False}, 2),
}
NAN_INF_CASES = [(path, place) for path in PATHS for place in PLACES
                 if path == "rows" or place in ("x nan", "x +inf", "h0 +inf", "c0 +inf", "w_hh -inf", "dy nan",
                                                "dy +inf")]
NAN_INF_CASES += [("ragged, dx in loop", "w_ih +inf"),
                  ("ragged, bidirectional", "w_ih +inf")]


def _same_special(got, want, what, dtype):
    """NaN where the reference has NaN, the same infinities, finite values to the tolerance."""
    assert got.shape == want.shape, what
    bad = np.argwhere(np.isnan(got) != np.isnan(want))
    assert not bad.size, (f"{what}: NaN positions differ at {bad[:5].tolist()}: got "
                          f"{got[tuple(bad[0])]} want {want[tuple(bad[0])]}")
    assert np.array_equal(np.isposinf(got), np.isposinf(want)), f"{what}: +inf positions differ"
    assert np.array_equal(np.isneginf(got), np.isneginf(want)), f"{what}: -inf positions differ"
    fin = np.isfinite(want)
    close(got[fin], want[fin], dtype, "grad", what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", list(KINDS))
@pytest.mark.parametrize("path,place", NAN_INF_CASES)
def test_nan_inf_layers_and_cells_match_the_reference(plan_knobs, threads, mode, dtype, path, place):
    """One NaN or Inf in x, h0, c0, a weight, a bias, dy or dh_n: forward and backward of a layer
    give NaN exactly where the NumPy reference does, the same infinities, and the same finite
    values (relu(NaN) was 0, relu's backward turned 0 * NaN into 0, the non-leaky RNN's direct
    state path turned 0 * inf into NaN, sigmoid(-inf) was 6e-39 instead of 0)."""
    what, idx, val = PLACES[place]
    if what == "c0" and mode != "LSTM":
        pytest.skip("only LSTM has c")
    opts, B, knobs, nthreads = PATHS[path]
    opts = dict(opts)
    lengths = opts.pop("lengths", None)
    T, D, H = 6, 3, 17  # H = 17: AVX2 gate kernels run full vectors and a masked tail
    L, dirs = opts.get("num_layers", 1), 2 if opts.get("bidirectional") else 1
    cls, extra = LAYER_CLASSES[mode]
    m = cls(D, H, dtype=dtype, seed=11, **extra, **opts)
    rng = np.random.default_rng(12)
    arrays = {"x": rng.standard_normal((T, B, D)), "h0": rng.standard_normal((L * dirs, B, H)) * 0.5,
              "c0": rng.standard_normal((L * dirs, B, H)) * 0.5, "dy": rng.standard_normal((T, B, dirs * H)),
              "dh_n": rng.standard_normal((L * dirs, B, H))}
    arrays = {k: v.astype(dtype) for k, v in arrays.items()}
    params = m.state_dict()
    target = arrays.get(what, params.get(what))
    target[tuple(min(i, s - 1) for i, s in zip(idx, target.shape))] = val  # batch of one: row 0
    m.load_state_dict(params)
    plan_knobs(**knobs)
    threads(nthreads)
    lstm = mode == "LSTM"
    x, h0, c0, dy, dh_n = (arrays[k] for k in ("x", "h0", "c0", "dy", "dh_n"))
    with np.errstate(all="ignore"):
        ry, rh, rc, cache = ref.forward(mode, params, x, h0, c0 if lstm else None, lengths, L, dirs == 2)
        rdx, rdh0, rdc0, rgrads = ref.backward(cache, dy, dh_n, np.zeros_like(dh_n) if lstm else None)
    y, st = m(x, (h0, c0) if lstm else h0, lengths=None if lengths is None else np.array(lengths))
    dx, dst = m.backward(dy, (dh_n, None) if lstm else dh_n)
    pairs = [("y", y, ry), ("dx", dx, rdx)]
    pairs += [("h_n", st[0], rh), ("c_n", st[1], rc), ("dh0", dst[0], rdh0), ("dc0", dst[1], rdc0)] if lstm else \
             [("h_n", st, rh), ("dh0", dst, rdh0)]
    pairs += [(k, m.grads[k], rgrads[k]) for k in sorted(rgrads)]
    for name, got, want in pairs:
        _same_special(got, want, f"{mode} {path} {place}: {name}", dtype)


CELL_CLASSES = {"RNN_TANH": (fr.RNNCell, {"nonlinearity": "tanh"}), "RNN_RELU": (fr.RNNCell, {"nonlinearity": "relu"}),
                "LSTM": (fr.LSTMCell, {}), "GRU": (fr.GRUCell, {})}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", list(KINDS))
@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("place", ["x nan", "x +inf", "h +inf", "h nan", "c +inf", "w_ih +inf", "w_hh -inf",
                                   "dh nan", "dh +inf"])
def test_nan_inf_layers_and_cells_match_the_reference_cell_step(plan_knobs, threads, mode, dtype, split, place):
    """The same for one cell step and its backward (the streaming path, split over two threads
    by hidden units or not), against reference.cell_forward / cell_backward."""
    if place.startswith("c ") and mode != "LSTM":
        pytest.skip("only LSTM has c")
    B, D, H = 3, 5, 20
    cls, extra = CELL_CLASSES[mode]
    cell = cls(D, H, dtype=dtype, seed=3, **extra)
    rng = np.random.default_rng(4)
    x, h, c, dh = (rng.standard_normal(s).astype(dtype) for s in ((B, D), (B, H), (B, H), (B, H)))
    p = cell.state_dict()
    what, val = place.split()
    val = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}[val]
    {"x": x, "h": h, "c": c, "dh": dh, "w_ih": p["weight_ih"], "w_hh": p["weight_hh"]}[what][1, 2] = val
    cell.load_state_dict(p)
    plan_knobs(cell_split_work=0 if split else 2**62)
    threads(2)
    lstm = mode == "LSTM"
    with np.errstate(all="ignore"):
        out = ref.cell_forward(mode, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"], x, h, c if lstm else None)
        back = ref.cell_backward(out[-1], dh, np.zeros_like(dh) if lstm else None)
    if lstm:
        h1, c1 = cell(x, (h, c))
        dx, (dh0, dc0) = cell.backward((dh, None))
        pairs = [("h1", h1, out[0]), ("c1", c1, out[1]), ("dx", dx, back[0]), ("dh", dh0, back[1]), ("dc", dc0, back[2])]
    else:
        h1 = cell(x, h)
        dx, dh0 = cell.backward(dh)
        pairs = [("h1", h1, out[0]), ("dx", dx, back[0]), ("dh", dh0, back[1])]
    pairs += [(k, cell.grads[k], back[-1][k]) for k in sorted(back[-1])]
    for name, got, want in pairs:
        _same_special(got, want, f"{mode} cell split={split} {place}: {name}", dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("in_loop", [False, True])
def test_input_gradient_is_zero_at_padded_positions(plan_knobs, dtype, in_loop):
    """dx at padded positions is 0 whatever the buffer held and whatever W_ih holds. In the loop
    (recur_backward with dx), positions past the rows' longest length were never written, so
    np.empty's garbage (NaN after a NaN-heavy computation) reached the user; padded rows the
    loop did visit, and the whole-sequence product (backward_params with lengths), gave
    0 * W_ih, NaN for an infinite weight."""
    T, B, D, H, G = 6, 4, 3, 5, 4
    lengths = np.array([4, 2, 3, 1], np.intc)  # all < T: position 5 is padding in every row
    rng = np.random.default_rng(9)
    m = fr.LSTM(D, H, dtype=dtype, seed=1)
    p = m.state_dict()
    w_ih = p["weight_ih_l0"]
    w_ih[3, 1] = np.inf
    x = rng.standard_normal((T, B, D)).astype(dtype)
    x[np.arange(T)[:, None] >= lengths[None, :]] = 0
    h0 = np.zeros((B, H), dtype)
    _, _, _, saved = _core.forward(_core.LSTM, x, h0, h0, w_ih, p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"],
                                   lengths=lengths)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dgx = np.empty((T, B, G * H), dtype)
    dx = np.full((T, B, D), np.nan, dtype)  # what a reused buffer may hold
    dw_ih, dw_hh = np.zeros_like(w_ih), np.zeros((G * H, H), dtype)
    args = (_core.LSTM, 0, B, False, lengths, p["weight_hh_l0"], *saved, dy, 0, None, None,
            np.empty((B, H), dtype), np.empty((B, H), dtype), dgx, None)
    if in_loop:
        _core.recur_backward(*args, w_ih=w_ih, dx=dx)
    else:
        _core.recur_backward(*args)
        _core.backward_params(_core.LSTM, 0, G * H, 0, T * B, x, w_ih, saved[1], dgx, None, dx, False,
                              dw_ih, dw_hh, None, None, lengths=lengths)
    pad = np.arange(T)[:, None] >= lengths[None, :]
    assert np.all(dx[pad] == 0), dx[pad]
    # and the valid positions: column 1 of W_ih is infinite in gate row 3, so every dx there is
    # +-inf or NaN exactly as NumPy's product of the same dgx gives
    with np.errstate(invalid="ignore"):
        want = dgx @ w_ih
    _same_special(dx[~pad], want[~pad], "dx at valid positions", dtype)


# ---- buffers the kernels cannot use as they are: byte order, alignment, read-only outputs ----------

def _swapped(a):
    return a.astype(a.dtype.newbyteorder())  # same values, non-native bytes


def _unaligned(a):
    buf = np.zeros(a.nbytes + 1, np.uint8)
    b = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    b[...] = a
    assert b.flags.c_contiguous and not b.flags.aligned
    return b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout,exc,match", [(_swapped, TypeError, "native byte order"),
                                              (_unaligned, ValueError, "aligned")])
@pytest.mark.parametrize("which", ["x", "h", "c", "w_hh"])
def test_bridge_refuses_byte_swapped_and_unaligned_buffers(dtype, layout, exc, match, which):
    """A byte-swapped float32 array has float32's type number, so cell_step's fast check passed it
    and the kernels read its bytes as native floats (h1 off by 100%, found by the fuzz suite on
    main); an unaligned one breaks the vectorised loops' alignment peeling. Both are refused by
    name now, in cell_step and in the layer entry points."""
    rng = np.random.default_rng(0)
    B, D, H, G = 2, 16, 64, 4
    args = {"x": rng.standard_normal((B, D)), "h": rng.standard_normal((B, H)),
            "c": rng.standard_normal((B, H)), "w_ih": rng.standard_normal((G * H, D)) * 0.1,
            "w_hh": rng.standard_normal((G * H, H)) * 0.1}
    args = {k: v.astype(dtype) for k, v in args.items()}
    args[which] = layout(args[which])
    with pytest.raises(exc, match=f"{which} must .*{match}"):
        _core.cell_step(_core.LSTM, args["x"], args["h"], args["c"], args["w_ih"], args["w_hh"], None, None, False)
    x3 = args["x"][None]
    if which in ("x", "w_hh"):  # the layer's one-call form, through project() and recur()
        with pytest.raises(exc, match=match):
            _core.forward(_core.LSTM, x3, np.zeros((B, H), dtype), np.zeros((B, H), dtype),
                          np.ascontiguousarray(args["w_ih"]), args["w_hh"], None, None)


@pytest.mark.parametrize("layout", [_swapped, _unaligned])
def test_cells_never_compute_with_misread_states(layout):
    """Through the public cell: a state in another byte order or unaligned is either converted
    or refused, never read as garbage (LSTMCell(16, 64) with a byte-swapped c was off by 109%)."""
    rng = np.random.default_rng(1)
    cell = fr.LSTMCell(16, 64, seed=0)
    x = rng.standard_normal((1, 16)).astype(np.float32)
    h, c = (rng.standard_normal((1, 64)).astype(np.float32) for _ in range(2))
    want = cell(x, (h, c))
    try:
        got = cell(x, (h, layout(c)))
    except (TypeError, ValueError):
        return
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-7)


def test_bridge_refuses_read_only_outputs():
    """Kernels write their outputs: a read-only buffer (a frombuffer of bytes, a read-only
    memory map) was written through; inputs may be read-only."""
    T, B, D, H = 3, 2, 4, 5
    x = np.ones((T, B, D), np.float32)
    x.flags.writeable = False  # read-only input: fine
    w = np.ones((H, D), np.float32)
    act = np.zeros((T, B, H), np.float32)
    _core.project(_core.RNN_TANH, x, w, act)
    np.testing.assert_array_equal(act, 4)
    act.flags.writeable = False
    with pytest.raises(ValueError, match="act is an output and must be writeable"):
        _core.project(_core.RNN_TANH, x, w, act)
    y = np.frombuffer(bytes(T * B * H * 4), np.float32).reshape(T, B, H)
    with pytest.raises(ValueError, match="y is an output and must be writeable"):
        _core.recur(_core.RNN_TANH, 0, B, False, None, np.zeros((B, H), np.float32), None,
                    np.zeros((H, H), np.float32), None, None, y, 0, np.zeros((B, H), np.float32), None,
                    np.zeros((T, B, H), np.float32), None, None)
