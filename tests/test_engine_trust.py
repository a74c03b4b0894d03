"""The engine under pressure: dimensions past the 32-bit BLAS interface, NaN and Inf in every
code path, and the worker pool under threads and fork (the issue "trustworthy under threads, bad
input and faults").

Huge shapes cost no memory here: zero-stride views (np.broadcast_to) for the checks that come
before any data is read, and C-contiguous arrays over MAP_NORESERVE anonymous mappings (only the
pages a kernel touches are ever backed) where a kernel must really run on them.
"""
import mmap
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import _core
from fastrnn import reference as ref
from tolerances import tolerance

INT_MAX = 2**31 - 1
KINDS = {"RNN_TANH": _core.RNN_TANH, "RNN_RELU": _core.RNN_RELU, "LSTM": _core.LSTM, "GRU": _core.GRU}
GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


@pytest.fixture
def plan_knobs():
    """Sets csrc/plan.c's overrides and thresholds for one test, restoring them afterwards."""
    saved = _core.plan_knobs()
    yield _core.plan_knobs
    _core.plan_knobs(**saved)


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
    """Layers and cells of every kind with work enough to be split (min_parallel_work=0)."""
    return [fr.LSTM(3, 16, seed=1), fr.GRU(3, 16, seed=2, bidirectional=True),
            fr.RNN(3, 16, seed=3, nonlinearity="relu", num_layers=2), fr.LSTM(3, 32, seed=4),
            fr.LSTMCell(3, 48, seed=5), fr.GRUCell(3, 48, seed=6)]


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
    xb = x1 if m.hidden_size == 32 else x  # the 32-unit LSTM runs a batch of one (unit split)
    y, _ = m(xb)
    return [y, m.backward(np.ones_like(y))[0]] + [g.copy() for g in m.grads.values()]


def test_concurrent_callers_with_changing_thread_counts_get_their_results(plan_knobs, threads):
    """Python threads run layers (row ranges, directions, a batch of one split by units) and cells
    (split steps) on the one pool while another thread keeps changing the thread count (joining
    and restarting the workers): no call may hang, fail, or give a result that differs in any
    way from the one computed alone (to rounding: how rows are split depends on the thread count,
    and the packed micro-kernel serves only some row counts). A caller that finds the pool busy
    runs its jobs itself, and any set of jobs (unit tasks included) completes on one thread."""
    plan_knobs(min_parallel_work=0, cell_split_work=0, units=True)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((12, 9, 3)).astype(np.float32)
    x1 = rng.standard_normal((30, 1, 3)).astype(np.float32)
    threads(1)
    want = []
    for m in _models():
        m.zero_grad() if hasattr(m, "zero_grad") else None
        want.append(_run_model(m, x, x1))
    threads(2)
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
