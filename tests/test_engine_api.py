"""Behaviour of the engine layers and cells as a user sees it: agreement with the independent
NumPy reference in both dtypes, accumulate/assign rules, modes, lengths, and input validation."""
import os

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import reference as ref
from tolerances import tolerance


MODES = {"RNN_TANH": (fr.RNN, {"nonlinearity": "tanh"}), "RNN_RELU": (fr.RNN, {"nonlinearity": "relu"}),
         "LSTM": (fr.LSTM, {}), "GRU": (fr.GRU, {})}


def make(mode, D=4, H=5, dtype=np.float32, **kw):
    cls, extra = MODES[mode]
    return cls(D, H, dtype=dtype, seed=7, **extra, **kw)


def fwd(m, x, state=None, lengths=None):
    """(y, h_n, c_n) whatever the layer type."""
    y, st = m(x, state, lengths=lengths)
    return (y, *st) if isinstance(m, fr.LSTM) else (y, st, None)


def bwd(m, dy, dh=None, dc=None):
    if isinstance(m, fr.LSTM):
        dx, (dh0, dc0) = m.backward(dy, (dh, dc))
        return dx, dh0, dc0
    dx, dh0 = m.backward(dy, dh)
    return dx, dh0, None


def close(got, want, dtype, kind, what):
    tol = tolerance(dtype, kind)
    err = np.max(np.abs(got - want)) if got.size else 0.0
    assert np.allclose(got, want, **tol), f"{what}: max abs err {err:.3g} exceeds {tol}"


# ---- agreement with the NumPy reference ---------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("layers,bi,ragged", [(1, False, False), (2, True, True), (2, False, True), (1, True, False)])
def test_matches_numpy_reference(mode, dtype, layers, bi, ragged):
    T, B, D, H = 7, 4, 3, 5
    rng = np.random.default_rng(1)
    m = make(mode, D, H, dtype, num_layers=layers, bidirectional=bi)
    dirs = 2 if bi else 1
    S = (layers * dirs, B, H)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    h0 = (rng.standard_normal(S) * 0.5).astype(dtype)
    c0 = (rng.standard_normal(S) * 0.5).astype(dtype) if mode == "LSTM" else None
    lengths = np.array([7, 1, 4, 6]) if ragged else None
    dy = rng.standard_normal((T, B, dirs * H)).astype(dtype)
    dh = rng.standard_normal(S).astype(dtype)
    dc = rng.standard_normal(S).astype(dtype) if mode == "LSTM" else None

    y, h, c = fwd(m, x, (h0, c0) if mode == "LSTM" else h0, lengths)
    dx, dh0, dc0 = bwd(m, dy, dh, dc)
    ry, rh, rc, cache = ref.forward(mode, m.state_dict(), x, h0, c0, lengths, layers, bi)
    rdx, rdh0, rdc0, rgrads = ref.backward(cache, dy, dh, dc)

    for name, got, want in [("y", y, ry), ("h_n", h, rh)] + ([("c_n", c, rc)] if c is not None else []):
        close(got, want, dtype, "forward", name)
    for name, got, want in [("dx", dx, rdx), ("dh0", dh0, rdh0)] + ([("dc0", dc0, rdc0)] if dc0 is not None else []):
        close(got, want, dtype, "grad", name)
    assert set(m.grads) == set(rgrads)
    for k in rgrads:
        close(m.grads[k], rgrads[k], dtype, "grad", k)


# ---- accumulate vs assign ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", list(MODES))
def test_weight_grads_accumulate_and_input_grads_are_assigned(mode):
    m = make(mode, dtype=np.float64, num_layers=2, bidirectional=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 4))
    y, _, _ = fwd(m, x)
    dy = rng.standard_normal(y.shape)
    dx1 = bwd(m, dy)[0]
    once = {k: g.copy() for k, g in m.grads.items()}
    assert all(np.any(g != 0) for g in once.values())
    dx2 = bwd(m, dy)[0]  # the cache is kept, so a second loss can backpropagate too
    np.testing.assert_array_equal(dx1, dx2)
    for k, g in m.grads.items():
        np.testing.assert_allclose(g, 2 * once[k], rtol=1e-14, err_msg=k)
    m.zero_grad()
    assert all(not np.any(g) for g in m.grads.values())


def test_truncated_bptt_chunks_add_up_to_the_chunked_gradient():
    """Two chunks with the state carried over and the gradient cut at the edge: the accumulated
    weight gradient is the sum of the two chunks' gradients, each computed alone."""
    rng = np.random.default_rng(0)
    m = make("LSTM", dtype=np.float64)
    x = rng.standard_normal((8, 2, 4))
    y1, (h, c) = m(x[:4])
    m.backward(np.ones_like(y1))
    y2, _ = m(x[4:], (h, c))
    m.backward(np.ones_like(y2))
    total = {k: g.copy() for k, g in m.grads.items()}
    parts = {}
    for chunk, state in ((x[:4], None), (x[4:], (h, c))):
        m.zero_grad()
        y, _ = m(chunk, state)
        m.backward(np.ones_like(y))
        for k, g in m.grads.items():
            parts[k] = parts.get(k, 0) + g
    for k in total:
        np.testing.assert_allclose(total[k], parts[k], rtol=1e-13)


# ---- modes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", list(MODES))
def test_eval_and_no_grad_keep_no_cache_and_give_the_same_outputs(mode):
    m = make(mode, num_layers=2)
    x = np.random.default_rng(0).standard_normal((6, 2, 4)).astype(np.float32)
    y_train = fwd(m, x)[0]
    m.eval()
    y_eval = fwd(m, x)[0]
    assert m._cache is None
    with pytest.raises(RuntimeError, match="training mode"):
        bwd(m, np.ones_like(y_eval))
    m.train()
    with fr.no_grad():
        y_ng = fwd(m, x)[0]
    assert m._cache is None
    np.testing.assert_array_equal(y_train, y_eval)
    np.testing.assert_array_equal(y_train, y_ng)
    assert fr.is_grad_enabled()


def test_dropout_only_in_training_and_its_gradient_uses_the_same_mask():
    m = fr.GRU(3, 4, num_layers=3, dropout=0.5, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    y1 = m(x)[0]
    y2 = m(x)[0]
    assert not np.allclose(y1, y2), "a fresh dropout mask per training forward"
    m.eval()
    ya, yb = m(x)[0], m(x)[0]
    np.testing.assert_array_equal(ya, yb)
    nodrop = fr.GRU(3, 4, num_layers=3, dtype=np.float64)
    nodrop.load_state_dict(m.state_dict())
    nodrop.eval()
    np.testing.assert_array_equal(ya, nodrop(x)[0])

    # the gradient w.r.t. x under a fixed mask matches finite differences
    m.train()
    seed_state = m._rng.bit_generator.state

    def f(xv):
        m._rng.bit_generator.state = seed_state
        return np.sum(m(xv)[0])
    f(x)
    dx = m.backward(np.ones((5, 2, 4)))[0]
    eps, i = 1e-6, (2, 1, 0)
    xp, xm = x.copy(), x.copy()
    xp[i] += eps
    xm[i] -= eps
    assert abs(dx[i] - (f(xp) - f(xm)) / (2 * eps)) < 1e-6


def test_batch_first_is_a_transpose_of_time_major():
    rng = np.random.default_rng(0)
    a = fr.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=1)
    b = fr.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=2, batch_first=True)
    b.load_state_dict(a.state_dict())
    x = rng.standard_normal((6, 2, 3))
    lengths = [6, 3]
    ya, (ha, ca) = a(x, lengths=lengths)
    yb, (hb, cb) = b(x.transpose(1, 0, 2), lengths=lengths)
    np.testing.assert_array_equal(ya.transpose(1, 0, 2), yb)
    np.testing.assert_array_equal(ha, hb)  # states are never batch-first
    dy = rng.standard_normal(ya.shape)
    dxa = a.backward(dy)[0]
    dxb = b.backward(dy.transpose(1, 0, 2))[0]
    np.testing.assert_allclose(dxa.transpose(1, 0, 2), dxb, rtol=1e-14)


def test_float32_and_float64_agree():
    rng = np.random.default_rng(0)
    m64 = fr.LSTM(4, 8, num_layers=2, dtype=np.float64, seed=0)
    m32 = fr.LSTM(4, 8, num_layers=2, dtype=np.float32)
    m32.load_state_dict(m64.state_dict())
    x = rng.standard_normal((20, 3, 4))
    y64 = m64(x)[0]
    y32 = m32(x.astype(np.float32))[0]
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, atol=1e-5)


# ---- variable lengths -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", list(MODES))
def test_ragged_batch_equals_each_sequence_alone(mode):
    rng = np.random.default_rng(3)
    m = make(mode, dtype=np.float64, num_layers=2, bidirectional=True)
    lengths = np.array([2, 6, 1, 4])
    x = rng.standard_normal((6, 4, 4))
    x[np.arange(6)[:, None] >= lengths[None, :]] = np.nan  # padding is ignored, NaN included
    y, h, c = fwd(m, x, lengths=lengths)
    dy = rng.standard_normal(y.shape)
    dx = bwd(m, dy)[0]
    g_batch = {k: v.copy() for k, v in m.grads.items()}
    assert np.all(np.isfinite(dx)) and all(np.all(np.isfinite(v)) for v in g_batch.values())
    g_sum = {k: 0 for k in g_batch}
    for b, L in enumerate(lengths):
        m.zero_grad()
        yb, hb, cb = fwd(m, x[:L, b:b + 1])
        np.testing.assert_allclose(y[:L, b:b + 1], yb, rtol=1e-13, atol=1e-15)
        assert not np.any(y[L:, b])
        np.testing.assert_allclose(h[:, b:b + 1], hb, rtol=1e-13, atol=1e-15)
        if c is not None:
            np.testing.assert_allclose(c[:, b:b + 1], cb, rtol=1e-13, atol=1e-15)
        dxb = bwd(m, dy[:L, b:b + 1])[0]
        np.testing.assert_allclose(dx[:L, b:b + 1], dxb, rtol=1e-12, atol=1e-14)
        assert not np.any(dx[L:, b])
        for k in g_sum:
            g_sum[k] = g_sum[k] + m.grads[k]
    for k in g_batch:
        np.testing.assert_allclose(g_batch[k], g_sum[k], rtol=1e-12, atol=1e-14, err_msg=k)


def test_full_lengths_equal_no_lengths():
    m = make("GRU", dtype=np.float64, bidirectional=True)
    x = np.random.default_rng(0).standard_normal((5, 3, 4))
    y1, h1, _ = fwd(m, x)
    y2, h2, _ = fwd(m, x, lengths=[5, 5, 5])
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(h1, h2)


# ---- cells ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", list(MODES))
def test_cell_step_equals_one_step_of_the_layer(mode):
    cls = {"RNN_TANH": fr.RNNCell, "RNN_RELU": fr.RNNCell, "LSTM": fr.LSTMCell, "GRU": fr.GRUCell}[mode]
    kw = {"nonlinearity": "relu"} if mode == "RNN_RELU" else {}
    cell = cls(4, 5, dtype=np.float64, seed=0, **kw)
    layer = make(mode, dtype=np.float64)
    layer.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal((3, 4)), rng.standard_normal((3, 5))
    if mode == "LSTM":
        c = rng.standard_normal((3, 5))
        h1, c1 = cell(x, (h, c))
        _, (hl, cl) = layer(x[None], (h[None], c[None]))
        np.testing.assert_allclose(c1, cl[0], rtol=1e-14)
    else:
        h1 = cell(x, h)
        _, hl = layer(x[None], h[None])
    np.testing.assert_allclose(h1, hl[0], rtol=1e-14)


@pytest.fixture
def cell_split():
    """Yields a function choosing whether cell steps are split over two threads by units."""
    from fastrnn import _core
    before_threads = fr.get_num_threads()
    fr.set_num_threads(2)
    before = _core.set_cell_split_work(0)

    def choose(split):
        _core.set_cell_split_work(0 if split else 1 << 62)
    yield choose
    _core.set_cell_split_work(before)
    fr.set_num_threads(before_threads)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B,bias", [(1, True), (3, False)])
def test_cell_step_split_by_units_equals_one_thread(cell_split, mode, dtype, B, bias):
    """A cell step split over two threads by hidden units (fr_cell_units) against the one-call
    path: new state, and the saved activations seen through backward, in several steps."""
    cls = {"RNN_TANH": fr.RNNCell, "RNN_RELU": fr.RNNCell, "LSTM": fr.LSTMCell, "GRU": fr.GRUCell}[mode]
    kw = {"nonlinearity": "relu"} if mode == "RNN_RELU" else {}
    D, H, steps = 7, 19, 3
    rng = np.random.default_rng(4)
    xs = rng.standard_normal((steps, B, D)).astype(dtype)
    state0 = rng.standard_normal((B, H)).astype(dtype)
    dh = rng.standard_normal((B, H)).astype(dtype)
    got = {}
    for split in (False, True):
        cell_split(split)
        cell = cls(D, H, bias=bias, dtype=dtype, seed=1, **kw)
        s = (state0, state0 * 0.5) if mode == "LSTM" else state0
        outs = []
        for t in range(steps):
            s = cell(xs[t], s)
            outs += list(s) if mode == "LSTM" else [s]
        cell.eval()
        outs += list(np.atleast_1d(cell(xs[0], s)[0] if mode == "LSTM" else cell(xs[0], s)))
        grads = [cell.backward((dh, dh) if mode == "LSTM" else dh) for _ in range(steps)]
        outs += [a for g in grads for a in (g if isinstance(g, tuple) else (g,)) if a is not None]
        got[split] = outs + [cell.grads[k].copy() for k in sorted(cell.grads)]
    assert len(got[True]) == len(got[False])
    for a, b in zip(got[True], got[False]):
        close(np.asarray(a), np.asarray(b), dtype, "grad", "split vs one call")


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("D", [3, 8, 13, 40])
def test_batch_of_one_cell_step_products(cell_split, mode, D):
    """A float32 cell step at B=1 takes its products from a dot-product kernel (fr_gemv_rows:
    rows in groups of eight, then one at a time; the inner length in chunks of eight, then a
    masked tail). Checked against float64 NumPy on the same float32 values for inner lengths
    below, at and past a chunk; and, with that kernel, the split step (each gate block's rows
    cut at unit 8 or 16) must equal the unsplit one (all G*H rows in one run) bit for bit, which
    fails if a row's sum depends on whether it fell in a group of eight or in the leftovers."""
    from fastrnn import _core
    cls = {"RNN_TANH": fr.RNNCell, "RNN_RELU": fr.RNNCell, "LSTM": fr.LSTMCell, "GRU": fr.GRUCell}[mode]
    kw = {"nonlinearity": "relu"} if mode == "RNN_RELU" else {}
    H = 19
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, D)).astype(np.float32)
    h = rng.standard_normal((1, H)).astype(np.float32)
    c = rng.standard_normal((1, H)).astype(np.float32)
    got = {}
    for split in (False, True):
        cell_split(split)
        cell = cls(D, H, seed=2, **kw)
        cell.eval()
        out = cell(x, (h, c)) if mode == "LSTM" else (cell(x, h),)
        got[split] = [np.array(a) for a in out]
    p = {k: v.astype(np.float64) for k, v in cell.state_dict().items()}
    want = ref.cell_forward(mode, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"],
                            x.astype(np.float64), h.astype(np.float64),
                            c.astype(np.float64) if mode == "LSTM" else None)
    want = want[:2] if mode == "LSTM" else want[:1]
    for a, w in zip(got[False], want):
        close(a, np.asarray(w), np.float32, "forward", f"D={D} step vs float64")
    if _core.fused_pays(_core.MODES["LSTM"], np.float32, 100, 32, 32, 128):  # the AVX2+FMA kernels
        for a, b in zip(got[True], got[False]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode,leak", [(m, 1.0) for m in MODES] + [("RNN_TANH", 0.6), ("RNN_RELU", 0.6)])
@pytest.mark.parametrize("train", [False, True])
def test_hidden_units_are_computed_alike_wherever_they_sit(mode, leak, train):
    """Permuting the hidden units (the rows of every gate block) must permute the float32
    forward bit for bit: every unit gets the same arithmetic whether it falls in a full vector or
    in the masked tail of the gate kernels (H = 13: 8 + 5); a tail with its own arithmetic (as
    when auto-contracted multiply-adds made the scalar remainder differ) fails. W_hh is zero, so that no product sums over the permuted units (its
    order would change the rounding); the states still carry each unit through the steps."""
    rng = np.random.default_rng(9)
    T, B, D, H = 6, 5, 4, 13
    m = make(mode, D=D, H=H, dtype=np.float32)
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    perm = rng.permutation(H)
    rows = np.concatenate([g * H + perm for g in range(G)])
    p = m.state_dict()
    p["weight_hh_l0"] = np.zeros_like(p["weight_hh_l0"])
    m.load_state_dict(p)
    q = {"weight_ih_l0": p["weight_ih_l0"][rows], "weight_hh_l0": p["weight_hh_l0"][rows][:, perm],
         "bias_ih_l0": p["bias_ih_l0"][rows], "bias_hh_l0": p["bias_hh_l0"][rows]}
    mp = make(mode, D=D, H=H, dtype=np.float32)
    mp.load_state_dict({k: np.ascontiguousarray(v) for k, v in q.items()})
    for layer in (m, mp):
        layer.train(train)
        layer.leak = leak
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    h0 = rng.standard_normal((1, B, H)).astype(np.float32)
    c0 = rng.standard_normal((1, B, H)).astype(np.float32)
    state = (h0, c0) if mode == "LSTM" else h0
    pstate = (h0[..., perm], c0[..., perm]) if mode == "LSTM" else h0[..., perm]
    got = fwd(mp, x, tuple(np.ascontiguousarray(s) for s in pstate) if mode == "LSTM"
              else np.ascontiguousarray(pstate))
    want = fwd(m, x, state)
    for g, w in zip(got, want):
        if w is not None:
            np.testing.assert_array_equal(g, w[..., perm])


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_leaky_rnn_matches_a_plain_numpy_loop(nonlinearity, dtype):
    """Leaky-integrator units, h' = (1-a) h + a f(W x + b + U h), against the recurrence written
    out in float64 NumPy (the reference module has no leak). H = 13 puts units both in full
    vectors and in the masked tail of the float32 gate kernel. Gradients: float32 against the
    float64 layer, whose own gradients the finite-difference tests check."""
    rng = np.random.default_rng(11)
    T, B, D, H, a = 7, 3, 4, 13, 0.6
    m = fr.RNN(D, H, nonlinearity=nonlinearity, leak=a, dtype=dtype, seed=5)
    x = rng.standard_normal((T, B, D))
    h0 = rng.standard_normal((1, B, H))
    y, hn = m(x.astype(dtype), h0.astype(dtype))
    p = {k: v.astype(np.float64) for k, v in m.state_dict().items()}
    f = np.tanh if nonlinearity == "tanh" else (lambda v: np.maximum(v, 0))
    h, want = h0[0], []
    for t in range(T):
        v = x[t] @ p["weight_ih_l0"].T + p["bias_ih_l0"] + h @ p["weight_hh_l0"].T + p["bias_hh_l0"]
        h = (1 - a) * h + a * f(v)
        want.append(h)
    close(y, np.array(want), dtype, "forward", "leaky y")
    close(hn[0], h, dtype, "forward", "leaky h_n")
    if dtype == np.float32:
        m64 = fr.RNN(D, H, nonlinearity=nonlinearity, leak=a, dtype=np.float64, seed=5)
        m64.load_state_dict(p)
        dy = rng.standard_normal((T, B, H))
        got = m.backward(dy.astype(np.float32))
        m64(x, h0)
        ref64 = m64.backward(dy)
        for g, r in zip(got, ref64):
            close(g, r, np.float32, "grad", "leaky input/state gradient")
        for k in m.grads:
            close(m.grads[k], m64.grads[k], np.float32, "grad", f"leaky {k}")


def test_float32_tanh_units_are_accurate_and_odd():
    """y = tanh(x) through a layer (W_ih = 1, W_hh = 0, no bias) over 1e-6 <= |x| <= 12, against
    float64 np.tanh. The bounds are those of the FMA kernel's rational tanh measured over every
    float32 in that range (tools/fit_tanh.py): 2.9e-7 absolute, 3.3e-7 relative. The portable
    tanh-through-exp is within the absolute bound, but loses relative accuracy near 0 (1.5% at
    1e-6), so the relative bound applies where the FMA kernels run."""
    from fastrnn import _core
    rng = np.random.default_rng(4)
    mag = np.concatenate([np.logspace(-6, np.log10(12), 200_000), rng.uniform(0, 12, 100_000)])
    x = (mag * rng.choice([-1, 1], mag.size)).astype(np.float32)
    m = fr.RNN(1, 8, bias=False, seed=0)
    m.load_state_dict({"weight_ih_l0": np.ones((8, 1)), "weight_hh_l0": np.zeros((8, 8))})
    m.eval()
    y = m(x.reshape(4, -1, 1))[0].reshape(-1, 8)
    assert (y == y[:, :1]).all()  # every unit computes the same tanh
    y = y[:, 0].astype(np.float64)
    want = np.tanh(x.astype(np.float64))
    assert np.max(np.abs(y - want)) <= 3.0e-7
    neg = m(-x.reshape(4, -1, 1))[0].reshape(-1, 8)[:, 0]
    np.testing.assert_array_equal(neg, -y.astype(np.float32))
    if _core.fused_pays(_core.MODES["LSTM"], np.float32, 100, 32, 32, 128):  # FMA kernels in use
        assert np.max(np.abs(y - want) / np.abs(want)) <= 3.4e-7


def test_cell_tape_is_popped_and_guarded():
    cell = fr.GRUCell(2, 3, seed=0)
    x = np.ones((1, 2), np.float32)
    h = cell(x)
    cell(x, h)
    cell.backward(np.ones((1, 3), np.float32))
    cell.backward(np.ones((1, 3), np.float32))
    with pytest.raises(RuntimeError, match="more times"):
        cell.backward(np.ones((1, 3), np.float32))
    cell.eval()
    cell(x)
    with pytest.raises(RuntimeError):
        cell.backward(np.ones((1, 3), np.float32))


# ---- parameters -------------------------------------------------------------------------------

def test_state_dict_names_shapes_and_round_trip():
    m = fr.GRU(3, 4, num_layers=2, bidirectional=True, seed=0)
    sd = m.state_dict()
    assert sorted(sd) == sorted(f"{w}_l{k}{s}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                                for k in (0, 1) for s in ("", "_reverse"))
    assert sd["weight_ih_l0"].shape == (12, 3) and sd["weight_ih_l1_reverse"].shape == (12, 8)
    assert sd["weight_hh_l1"].shape == (12, 4) and sd["bias_hh_l0_reverse"].shape == (12,)
    assert np.all(np.abs(sd["weight_hh_l0"]) <= 0.5)  # U(-1/sqrt(H), 1/sqrt(H)), H = 4
    other = fr.GRU(3, 4, num_layers=2, bidirectional=True, seed=1)
    assert not np.array_equal(other.state_dict()["weight_ih_l0"], sd["weight_ih_l0"])
    other.load_state_dict(sd)
    x = np.ones((2, 1, 3), np.float32)
    np.testing.assert_array_equal(other(x)[0], m(x)[0])
    sd["weight_ih_l0"][...] = 0  # state_dict returns copies
    assert np.any(m.parameters()["weight_ih_l0"])
    again = fr.GRU(3, 4, num_layers=2, bidirectional=True, seed=0)
    np.testing.assert_array_equal(again.state_dict()["weight_hh_l1"], m.state_dict()["weight_hh_l1"])


def test_bad_state_dict_leaves_model_untouched():
    m = fr.LSTM(3, 4, seed=0)
    before = m.state_dict()
    bad = m.state_dict()
    bad["weight_ih_l0"] = np.zeros((16, 3))
    bad["weight_hh_l0"] = np.zeros((16, 5))
    with pytest.raises(ValueError, match="weight_hh_l0"):
        m.load_state_dict(bad)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(KeyError, match="missing"):
        m.load_state_dict({"weight_ih_l0": before["weight_ih_l0"]})


def test_no_bias_layer_has_no_bias_parameters():
    m = fr.LSTM(3, 4, bias=False)
    assert sorted(m.state_dict()) == ["weight_hh_l0", "weight_ih_l0"]


def test_thread_count_control():
    n = fr.get_num_threads()
    fr.set_num_threads(1)
    assert fr.get_num_threads() == 1
    fr.set_num_threads(n)
    with pytest.raises(ValueError):
        fr.set_num_threads(0)


# ---- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("call,exc,match", [
    (lambda m: m(np.zeros((5, 3), np.float32)), ValueError, r"x must be 3-D \(time, batch, features\)"),
    (lambda m: m(np.zeros((5, 3, 2), np.float32)), ValueError, "4 features"),
    (lambda m: m(np.zeros((5, 3, 4), np.float64)), TypeError, "dtype float32"),
    (lambda m: m(np.zeros((5, 3, 4), np.float32), (np.zeros((1, 2, 6), np.float32),) * 2), ValueError, r"h0 must have shape \(1, 3, 6\)"),
    (lambda m: m(np.zeros((5, 3, 4), np.float32), np.zeros((1, 3, 6), np.float32)), ValueError, r"tuple \(h, c\)"),
    (lambda m: m(np.zeros((5, 3, 4), np.float32), lengths=[5, 6, 1]), ValueError, r"lengths must lie in 1..5"),
    (lambda m: m(np.zeros((5, 3, 4), np.float32), lengths=[5, 0, 1]), ValueError, r"lengths must lie in 1..5"),
    (lambda m: m(np.zeros((5, 3, 4), np.float32), lengths=[5, 1]), ValueError, r"lengths must have shape"),
    (lambda m: m(np.zeros((5, 3, 4), np.float32), lengths=[5.0, 1.0, 2.0]), TypeError, "integer"),
    (lambda m: m(np.zeros((0, 3, 4), np.float32)), ValueError, "at least one"),
    (lambda m: m([[["a"]]]), TypeError, "numeric"),
])
def test_bad_input_raises_a_clear_error(call, exc, match):
    m = fr.LSTM(4, 6, seed=0)
    with pytest.raises(exc, match=match):
        call(m)


def test_bad_backward_input_raises():
    m = fr.GRU(4, 6, seed=0)
    y, _ = m(np.zeros((5, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"dy must have shape \(5, 3, 6\)"):
        m.backward(np.zeros((5, 3, 5), np.float32))
    with pytest.raises(ValueError, match=r"dh_n must have shape \(1, 3, 6\)"):
        m.backward(None, np.zeros((3, 6), np.float32))


@pytest.mark.parametrize("kwargs,match", [
    ({"input_size": 0}, "input_size"), ({"hidden_size": -1}, "hidden_size"),
    ({"num_layers": 0}, "num_layers"), ({"dropout": 1.0}, "dropout"), ({"dtype": np.int32}, "dtype"),
    ({"nonlinearity": "sigmoid"}, "nonlinearity"),
])
def test_bad_constructor_arguments(kwargs, match):
    args = {"input_size": 3, "hidden_size": 4, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        fr.RNN(**args)


def test_nan_input_propagates_without_crashing():
    m = fr.LSTM(2, 3, bidirectional=True)
    x = np.full((4, 2, 2), np.nan, np.float32)
    y, (h, c) = m(x)
    assert np.all(np.isnan(y)) and np.all(np.isnan(h))
    dx = m.backward(np.ones_like(y))[0]
    assert dx.shape == x.shape


def test_core_refuses_mismatched_buffers():
    """The Cython bridge is the last guard before C touches memory."""
    from fastrnn import _core
    x = np.zeros((3, 2, 4), np.float32)
    w_ih, w_hh = np.zeros((20, 4), np.float32), np.zeros((20, 5), np.float32)
    with pytest.raises(ValueError, match="w_ih must have shape"):
        _core.forward(_core.LSTM, x, np.zeros((2, 5), np.float32), np.zeros((2, 5), np.float32),
                      w_ih[:, :3].copy(), w_hh, None, None)
    with pytest.raises(TypeError, match="h0 must have dtype float32"):
        _core.forward(_core.LSTM, x, np.zeros((2, 5)), np.zeros((2, 5), np.float32), w_ih, w_hh, None, None)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.forward(_core.LSTM, x, np.zeros((5, 2), np.float32).T, np.zeros((2, 5), np.float32),
                      w_ih, w_hh, None, None)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
@pytest.mark.parametrize("threads,bi", [(3, False), (4, True), (2, True)])
def test_row_parallel_time_loop_equals_single_thread(plan_knobs, mode, threads, bi):
    """Row ranges and directions run on worker threads; the result must not depend on it."""
    import fastrnn.layers as layers
    plan_knobs(min_parallel_work=0)
    rng = np.random.default_rng(5)
    m = make(mode, dtype=np.float64, num_layers=2, bidirectional=bi)
    x = rng.standard_normal((6, 7, 4))
    lengths = np.array([6, 2, 5, 1, 6, 3, 4])
    dy = rng.standard_normal((6, 7, (2 if bi else 1) * 5))
    results = []
    before = fr.get_num_threads()
    try:
        for n in (1, threads):
            fr.set_num_threads(n)
            assert len(layers._row_ranges(m._cell, 6, 7, 5, 2 if bi else 1)) == (1 if n == 1 else max(1, n // (2 if bi else 1)))
            m.zero_grad()
            y, h, c = fwd(m, x, lengths=lengths)
            dx, dh0, dc0 = bwd(m, dy)
            results.append([y, h, dx, dh0] + [m.grads[k].copy() for k in sorted(m.grads)])
    finally:
        fr.set_num_threads(before)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_read_only_inputs_are_accepted():
    """Memory-mapped or otherwise read-only data must work as input."""
    m = fr.GRU(3, 4, seed=0)
    x = np.ones((5, 2, 3), np.float32)
    want = m(x)[0]
    x.flags.writeable = False
    np.testing.assert_array_equal(m(x, lengths=np.array([5, 3]))[0][:, 0], want[:, 0])
    np.testing.assert_array_equal(m(x)[0], want)


def test_internal_buffer_reuse_never_touches_returned_arrays():
    rng = np.random.default_rng(0)
    m = fr.GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    x1, x2 = rng.standard_normal((5, 2, 3)), rng.standard_normal((5, 2, 3))
    y1, h1 = m(x1)
    dx1, dh1 = m.backward(np.ones_like(y1))
    kept = [a.copy() for a in (y1, h1, dx1, dh1)]
    y2, _ = m(x2)
    dx2, _ = m.backward(np.ones_like(y2))
    for a, b in zip((y1, h1, dx1, dh1), kept):
        np.testing.assert_array_equal(a, b)
    fresh = fr.GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64)
    fresh.load_state_dict(m.state_dict())
    y, _ = fresh(x2)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(fresh.backward(np.ones_like(y))[0], dx2)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
@pytest.mark.parametrize("B,H", [(13, 37), (6, 16), (1, 40), (7, 3)])
def test_float32_per_step_kernel_tails_match_reference(mode, B, H):
    """The float32 per-step product works on 6-row x 16-column tiles; these sizes leave partial
    tiles in both directions (and B=1 takes the single-row path)."""
    rng = np.random.default_rng(B * H)
    T, D = 9, 5
    m = make(mode, D, H, np.float32, bidirectional=True)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    lengths = rng.integers(1, T + 1, B)
    y, h, _ = fwd(m, x, lengths=lengths)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dh0, _ = bwd(m, dy)
    ry, rh, _, cache = ref.forward(mode, m.state_dict(), x, lengths=lengths, bidirectional=True)
    rdx, rdh0, _, rgrads = ref.backward(cache, dy)
    close(y, ry, np.float32, "forward", "y")
    close(h, rh, np.float32, "forward", "h_n")
    close(dx, rdx, np.float32, "grad", "dx")
    close(dh0, rdh0, np.float32, "grad", "dh0")
    for k in rgrads:
        close(m.grads[k], rgrads[k], np.float32, "grad", k)


def test_pool_runs_more_jobs_than_threads_and_checks_arguments_before_running():
    """Deferred kernel calls are checked when made (nothing runs on bad input); the pool runs
    any number of jobs on any number of threads, each exactly once."""
    from fastrnn import _core
    before = fr.get_num_threads()
    rng = np.random.default_rng(5)
    T, B, D, H = 3, 10, 4, 5
    x = rng.standard_normal((T * B, D))
    w = rng.standard_normal((4 * H, D))
    want = x @ w.T
    try:
        for threads in (1, 2, 3):
            fr.set_num_threads(threads)
            act = np.full((T * B, 4 * H), np.nan)
            bounds = list(range(0, T * B + 1, 3))  # 10 jobs
            jobs = [_core.project(_core.LSTM, x[a:b][None], w, act[a:b][None], defer=True)
                    for a, b in zip(bounds[:-1], bounds[1:])]
            assert np.isnan(act).all()  # made, not run
            _core.run_jobs(jobs)
            np.testing.assert_allclose(act, want, rtol=1e-12, atol=1e-12)
        with pytest.raises(ValueError, match=r"w_ih must have shape \(20, 4\)"):
            _core.project(_core.LSTM, x[None], w[:, :3].copy(), act[None], defer=True)
        with pytest.raises(TypeError, match="run_jobs takes Jobs"):
            _core.run_jobs([lambda: None])
    finally:
        fr.set_num_threads(before)


def _forked_forward(queue):
    m = fr.LSTM(3, 8, seed=2)
    queue.put(m(np.ones((6, 5, 3), np.float32))[0])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_pool_works_in_a_forked_child(plan_knobs):
    """A fork copies the pool's state but not its threads: the child must start its own."""
    import multiprocessing
    plan_knobs(min_parallel_work=0)  # two row ranges even at this size
    fr.set_num_threads(2)
    m = fr.LSTM(3, 8, seed=2)
    want = m(np.ones((6, 5, 3), np.float32))[0]  # the parent's workers now exist
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_forked_forward, args=(queue,))
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bi,ragged", [(False, False), (True, True), (True, False)])
def test_fused_time_loop_equals_project_then_recur(plan_knobs, mode, dtype, bi, ragged):
    """The fused forward (input projection inside the time loop, chosen for cache-sized weights)
    against the whole-sequence projection followed by the loop: training and inference, both
    directions, ragged reverse rows (whose x rows are gathered per step), the packed-weight
    micro-kernel (float32, >= 4 rows) and BLAS (float64)."""
    import fastrnn.layers as layers
    rng = np.random.default_rng(11)
    T, B, D, H = 7, 9, 5, 6
    x = rng.standard_normal((T, B, D)).astype(dtype)
    lengths = np.array([7, 2, 5, 1, 7, 3, 4, 6, 7]) if ragged else None
    m = make(mode, D=D, H=H, dtype=dtype, num_layers=2, bidirectional=bi)
    dy = rng.standard_normal((T, B, (2 if bi else 1) * H)).astype(dtype)
    got = {}
    for fused in (False, True):
        plan_knobs(fused=fused)
        m.train()
        m.zero_grad()
        y, h, c = fwd(m, x, lengths=lengths)
        dx, dh0, _ = bwd(m, dy)
        m.eval()
        y_eval = fwd(m, x, lengths=lengths)[0]
        got[fused] = [y, h, y_eval, dx, dh0] + [m.grads[k].copy() for k in sorted(m.grads)]
    for a, b in zip(got[True], got[False]):
        close(a, b, dtype, "grad", "fused vs unfused")
    np.testing.assert_array_equal(got[True][0], got[True][2])  # eval == train forward


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_RELU"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ragged", [False, True])
def test_dx_in_the_reverse_loop_equals_the_whole_sequence_gemm(plan_knobs, mode, dtype, ragged):
    """dx computed step by step inside the reverse loop (one-direction layers) against the
    whole-sequence GEMM afterwards: two layers (the upper one's dx feeds the lower one's dy),
    ragged rows, the micro-kernel (float32, >= 4 rows per call) and BLAS (float64)."""
    import fastrnn.layers as layers
    rng = np.random.default_rng(12)
    T, B, D, H = 7, 9, 17, 6
    x = rng.standard_normal((T, B, D)).astype(dtype)
    lengths = np.array([7, 2, 5, 1, 7, 3, 4, 6, 7]) if ragged else None
    m = make(mode, D=D, H=H, dtype=dtype, num_layers=2)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    got = {}
    for in_loop in (False, True):
        plan_knobs(dx_in_loop=in_loop)
        m.zero_grad()
        fwd(m, x, lengths=lengths)
        dx, dh0, _ = bwd(m, dy)
        got[in_loop] = [dx, dh0] + [m.grads[k].copy() for k in sorted(m.grads)]
    if ragged:
        assert (got[True][0][np.arange(T)[:, None] >= lengths[None, :]] == 0).all()
    for a, b in zip(got[True], got[False]):
        close(a, b, dtype, "grad", "dx in loop vs after")


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_dx_in_the_reverse_loop_with_reverse_ragged_rows(mode):
    """The kernel API also takes dx in the reverse direction with lengths, where a step's rows
    sit at different time positions: each row's dx against dgx @ w_ih from the same call."""
    from fastrnn import _core
    rng = np.random.default_rng(13)
    T, B, D, H = 6, 5, 16, 4
    cell = _core.MODES[mode]
    G = _core.gates(cell)
    lengths = np.array([6, 2, 4, 1, 5], np.intc)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    x[np.arange(T)[:, None] >= lengths[None, :]] = 0
    w_ih, w_hh = (rng.standard_normal((G * H, n)).astype(np.float32) for n in (D, H))
    b_ih, b_hh = (rng.standard_normal(G * H).astype(np.float32) for _ in range(2))
    h0 = np.zeros((B, H), np.float32)
    _, _, _, saved = _core.forward(cell, x, h0, h0 if mode == "LSTM" else None, w_ih, w_hh, b_ih,
                                   b_hh, lengths=lengths, reverse=True)
    act, hprev, aux = saved
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    dgx = np.empty((T, B, G * H), np.float32)
    dgh = np.empty((T, B, H), np.float32) if mode == "GRU" else None
    dx = np.full((T, B, D), np.nan, np.float32)
    dh0 = np.empty((B, H), np.float32)
    dc0 = np.empty((B, H), np.float32) if mode == "LSTM" else None
    _core.recur_backward(cell, 0, B, True, lengths, w_hh, act, hprev, aux, dy, 0, None, None, dh0,
                         dc0, dgx, dgh, w_ih=w_ih, dx=dx)
    want = (dgx.reshape(T * B, G * H).astype(np.float64) @ w_ih).reshape(T, B, D)
    close(dx, want, np.float32, "grad", "dx")
    assert (dx[np.arange(T)[:, None] >= lengths[None, :]] == 0).all()


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_gradients_from_one_gemm_over_x_and_hprev(mode, dtype):
    """backward_params over the layer's [x | hprev] buffer with dwc scratch (one GEMM for both
    weight gradients) against separate contiguous x and hprev (two GEMMs), in gate-row blocks
    that cross GRU's split between dgx and dgh rows; gradients accumulate onto what was there."""
    from fastrnn import _core
    rng = np.random.default_rng(3)
    T, B, D, H = 5, 4, 3, 6
    cell = _core.MODES[mode]
    G = _core.gates(cell)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    hprev = rng.standard_normal((T, B, H)).astype(dtype)
    xh = np.concatenate([x, hprev], axis=2)
    w_ih = rng.standard_normal((G * H, D)).astype(dtype)
    dgx = rng.standard_normal((T, B, G * H)).astype(dtype)
    dgh = rng.standard_normal((T, B, H)).astype(dtype) if mode == "GRU" else None
    start = [rng.standard_normal((G * H, n)).astype(dtype) for n in (D, H)]
    out = {}
    for name, args in (("cat", (xh, xh, D, np.full((G * H, D + H), np.nan, dtype))),
                       ("sep", (x, hprev, 0, None))):
        xa, ha, h_col, dwc = args
        dw_ih, dw_hh = start[0].copy(), start[1].copy()
        dx = np.empty((T, B, D), dtype)
        cuts = sorted({0, min(5, G * H), min(2 * H + 1, G * H), G * H})
        for g0, g1 in zip(cuts[:-1], cuts[1:]):
            _core.backward_params(cell, g0, g1, 0, 0, xa, w_ih, ha, dgx, dgh, None, False,
                                      dw_ih, dw_hh, None, None, h_col=h_col, dwc=dwc)
        out[name] = (dw_ih, dw_hh)
    want_hh_src = dgx.reshape(T * B, -1).copy()
    if mode == "GRU":
        want_hh_src[:, 2 * H:] = dgh.reshape(T * B, H)
    want_ih = start[0] + dgx.reshape(T * B, -1).T @ x.reshape(T * B, D)
    want_hh = start[1] + want_hh_src.T @ hprev.reshape(T * B, H)
    for name in ("cat", "sep"):
        close(out[name][0], want_ih, dtype, "grad", f"{name} dw_ih")
        close(out[name][1], want_hh, dtype, "grad", f"{name} dw_hh")


def test_fused_mode_is_chosen_for_cache_sized_float32_weights():
    from fastrnn import _core
    lstm = _core.MODES["LSTM"]
    if not _core.fused_pays(lstm, np.float32, 100, 32, 32, 128):
        pytest.skip("no AVX2/FMA micro-kernel on this CPU (or FASTRNN_BLAS_STEPS=1)")
    assert not _core.fused_pays(lstm, np.float64, 100, 32, 32, 128)
    assert _core.fused_pays(lstm, np.float32, 100, 32, 256, 512)
    assert not _core.fused_pays(lstm, np.float32, 100, 32, 1024, 1024)  # weights beyond cache
    assert not _core.fused_pays(lstm, np.float32, 100, 4, 512, 64)  # little reuse of W_ih
    assert not _core.fused_pays(lstm, np.float32, 100, 1, 32, 128)  # too few rows to pack for


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("H,layers", [(24, 2), (5, 1)])
def test_batch_of_one_unit_split_equals_single_thread(plan_knobs, mode, dtype, H, layers):
    """A batch of one runs its time loops as two calls owning halves of the hidden units, which
    meet at a barrier every step; the result must equal the one-thread loop (state, outputs,
    all gradients, the per-step dL/dh_t), with packed weights (float32, T >= 4) and BLAS."""
    from fastrnn import _core
    rng = np.random.default_rng(3)
    T, D = 9, 3
    m = make(mode, D=D, H=H, dtype=dtype, num_layers=layers)
    if mode == "RNN_TANH":
        m.leak = 0.7
    x = rng.standard_normal((T, 1, D)).astype(dtype)
    dy = rng.standard_normal((T, 1, H)).astype(dtype)
    dh = rng.standard_normal((layers, 1, H)).astype(dtype)
    h0 = rng.standard_normal((layers, 1, H)).astype(dtype)
    state = (h0, h0 * 0.5) if mode == "LSTM" else h0
    before = fr.get_num_threads()
    got = {}
    try:
        fr.set_num_threads(2)
        for split in (False, True):
            plan_knobs(units=split)
            assert (_core.plan_units_mid(m._cell, T, 1, H, 1, False) is not None) == split
            m.train()
            m.zero_grad()
            y, hn, cn = fwd(m, x, state)
            if mode == "LSTM":
                dx, (dh0, dc0) = m.backward(dy, (dh, dh * 0.3), state_grads=True)
            else:
                dx, dh0 = m.backward(dy, dh, state_grads=True)
            m.eval()
            got[split] = ([y, hn, dx, dh0, fwd(m, x, state)[0]] + list(m.state_grads)
                          + [m.grads[k].copy() for k in sorted(m.grads)])
    finally:
        fr.set_num_threads(before)
    for a, b in zip(got[True], got[False]):
        close(a, b, dtype, "grad", "unit split vs rows")


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_unit_tasks_finish_without_the_second_thread(mode):
    """Part 0 of a batch-of-one split claims whatever part 1 has not: run alone (part 1 never
    starts, as when its thread is descheduled) it must still compute every step, forward and
    backward, identically to the two-thread run of the layer."""
    from fastrnn import _core
    import fastrnn.layers as L
    rng = np.random.default_rng(8)
    T, D, H = 12, 3, 16
    m = make(mode, D=D, H=H, dtype=np.float64)
    x = rng.standard_normal((T, 1, D))
    dy = rng.standard_normal((T, 1, H))
    y_ref, h_ref, c_ref = fwd(m, x)
    dx_ref, dh_ref, dc_ref = bwd(m, dy)
    cell, G, A = m._cell, m._kind.gates, m._kind.aux
    p = m.state_dict()
    w_ih, w_hh, b_ih, b_hh = p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"]
    act = np.empty((T, 1, G * H))
    _core.project(cell, x, w_ih, act)
    y, h_n, c_n = np.empty((T, 1, H)), np.empty((1, H)), np.empty((1, H))
    hprev, aux = np.empty((T, 1, H)), np.empty((T, 1, A * H))
    z = np.zeros((1, H))
    mid = 8
    _core.recur_units(cell, mid, 0, False, z, z, w_hh, b_ih, b_hh, y, 0, h_n, c_n if mode == "LSTM" else None,
                      act, hprev, aux, 1.0, np.zeros(4, np.intc),
                      np.empty(_core.units_shared_size(cell, np.float64, T, H, mid, False)))
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_n, h_ref[0], rtol=1e-12, atol=1e-14)
    dgx, dgh = np.empty((T, 1, G * H)), np.empty((T, 1, H))
    dh0, dc0 = np.empty((1, H)), np.empty((1, H))
    dbias = np.empty((2, G * H + (H if mode == "GRU" else 0)))
    _core.recur_backward_units(cell, mid, 0, False, w_hh, act, hprev, aux, dy, 0, None, None, dh0,
                               dc0 if mode == "LSTM" else None, dgx, dgh if mode == "GRU" else None, 1.0,
                               None, dbias, np.zeros(4, np.intc),
                               np.empty(_core.units_shared_size(cell, np.float64, T, H, mid, True)))
    np.testing.assert_allclose(dh0, dh_ref[0], rtol=1e-12, atol=1e-14)
    if mode == "LSTM":
        np.testing.assert_allclose(dc0, dc_ref[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dbias.sum(0)[:G * H], m.grads["bias_ih_l0"], rtol=1e-12, atol=1e-14)


def test_pool_survives_thread_count_changes_during_concurrent_calls(plan_knobs, cell_split):
    """Python threads running layers (row ranges on the pool) and split cell steps while another
    thread keeps changing the thread count, which joins and restarts the workers: nothing may
    hang, and every result must match the one computed alone."""
    import threading
    import time
    plan_knobs(min_parallel_work=0)
    cell_split(True)
    rng = np.random.default_rng(6)
    layers = [fr.LSTM(3, 16, seed=1), fr.GRU(3, 16, seed=2, bidirectional=True)]
    cells = [fr.LSTMCell(3, 16, seed=3), fr.GRUCell(3, 16, seed=4)]
    x = rng.standard_normal((12, 9, 3)).astype(np.float32)
    h0 = np.zeros((1, 16), np.float32)

    def run(i):
        if i < 2:
            y, _ = layers[i](x)
            return [y, layers[i].backward(np.ones_like(y))[0]]
        s = (h0, h0) if i == 2 else h0
        for t in range(x.shape[0]):
            s = cells[i - 2](x[t, :1], s)
        return list(s) if i == 2 else [s]
    want = [run(i) for i in range(4)]
    got, errors = [None] * 4, []

    def work(i):
        try:
            for _ in range(20):
                got[i] = run(i)
        except Exception as e:  # reported below: an exception in a thread is otherwise lost
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for k in range(30):
        fr.set_num_threads(1 + k % 3)
        time.sleep(0.002)
    fr.set_num_threads(2)
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a call never finished"
    assert not errors, errors
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            close(a, b, np.float32, "grad", "concurrent vs alone")


def test_unit_split_from_several_python_threads_at_once(plan_knobs):
    """Part 1 of a batch-of-one split waits in the shared pool behind other callers' work; part 0
    runs in the caller and can finish alone, so concurrent callers must neither deadlock nor
    disturb each other's results."""
    import threading
    plan_knobs(units=True)
    rng = np.random.default_rng(4)
    models = [fr.LSTM(3, 32, seed=i) for i in range(4)]
    xs = [rng.standard_normal((40, 1, 3)).astype(np.float32) for _ in models]
    before = fr.get_num_threads()
    try:
        fr.set_num_threads(2)
        want = []
        for m, x in zip(models, xs):
            y, _ = m(x)
            want.append((y, m.backward(np.ones_like(y))[0]))
        got = [None] * len(models)

        def work(i):
            for _ in range(5):
                y, _ = models[i](xs[i])
                got[i] = (y, models[i].backward(np.ones_like(y))[0])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(models))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "a unit-split call never finished"
    finally:
        fr.set_num_threads(before)
    for (y, dx), (wy, wdx) in zip(got, want):
        np.testing.assert_array_equal(y, wy)
        np.testing.assert_array_equal(dx, wdx)
