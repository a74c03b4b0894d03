"""Tests of the pure-NumPy reference (fastrnn/reference.py).

The reference is the ground truth for the engine's tests, so it is checked here
against things that do not share its assumptions: central finite differences
of every gradient element, scalar hand-written formulas (gate order, GRU's
r * (W_hn h + b_hn)), structural identities (ragged vs. one-at-a-time, reverse
vs. flipped forward, stacked vs. composed layers) and, when installed, PyTorch.
"""

import importlib.util
import math
import pathlib

import numpy as np
import pytest

from fd import numeric_grad

# Loaded by path: fastrnn/__init__.py may import the compiled engine, which
# must be neither required nor exercised by the reference's own tests.
_REF_PATH = pathlib.Path(__file__).resolve().parents[1] / "fastrnn" / "reference.py"
_spec = importlib.util.spec_from_file_location("_fastrnn_reference_under_test", _REF_PATH)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

MODES = ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]
EPS = 1e-6
RTOL, ATOL = 1e-5, 1e-7


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _collect(obj, key, out):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                out.append(np.asarray(v))
            else:
                _collect(v, key, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _collect(v, key, out)
    return out


def _assert_relu_kink_free(cache, margin=1e-4):
    # An FD step of 1e-6 moves a pre-activation by ~1e-6 * |coefficient|; with a
    # margin of 1e-4 no perturbed evaluation can cross ReLU's kink.
    pres = _collect(cache, "pre", [])
    assert pres, "cache layout changed: no ReLU pre-activations found"
    smallest = min(np.abs(p).min() for p in pres)
    assert smallest > margin, "seed puts a ReLU pre-activation at %g; pick another" % smallest


def _assert_close(name, analytic, numeric):
    assert analytic.shape == numeric.shape, name
    ok = np.allclose(analytic, numeric, rtol=RTOL, atol=ATOL)
    assert ok, "%s: max abs err %g\nanalytic\n%s\nnumeric\n%s" % (
        name, np.abs(analytic - numeric).max(), analytic, numeric)


def _make_problem(mode, D, H, T, B, L, bidir, bias, seed):
    rng = np.random.default_rng(seed)
    dirs = 2 if bidir else 1
    params = ref.init_params(mode, D, H, L, bidir, bias=bias, rng=rng)
    # Parameters well beyond PyTorch's init scale so every nonlinearity is
    # exercised away from its linear region.
    params = {k: v * 2.0 for k, v in params.items()}
    x = rng.standard_normal((T, B, D))
    h0 = rng.standard_normal((L * dirs, B, H)) * 0.5
    c0 = rng.standard_normal((L * dirs, B, H)) if mode == "LSTM" else None
    gy = rng.standard_normal((T, B, dirs * H))
    gh = rng.standard_normal((L * dirs, B, H))
    gc = rng.standard_normal((L * dirs, B, H)) if mode == "LSTM" else None
    return params, x, h0, c0, gy, gh, gc


# (name, D, H, T, B, num_layers, bidirectional, lengths, bias, h0 given, seed)
FD_CONFIGS = [
    ("scalar_T1B1H1D1", 1, 1, 1, 1, 1, False, None, True, True, 1),
    ("T1_2layer_bidir", 2, 2, 1, 2, 2, True, None, True, True, 2),
    ("2layer_bidir", 2, 2, 3, 2, 2, True, None, True, True, 3),
    ("ragged_2layer_bidir", 2, 2, 4, 3, 2, True, [3, 1, 4], True, True, 4),
    ("ragged_uni_H3", 3, 3, 4, 3, 1, False, [2, 4, 1], True, True, 5),
    ("nobias_ragged_2layer_bidir", 2, 2, 3, 2, 2, True, [3, 2], False, True, 6),
    ("h0_none", 2, 2, 3, 2, 1, False, None, True, False, 7),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cfg", FD_CONFIGS, ids=[c[0] for c in FD_CONFIGS])
def test_finite_difference_all_gradients(mode, cfg):
    _, D, H, T, B, L, bidir, lengths, bias, h0_given, seed = cfg
    params, x, h0, c0, gy, gh, gc = _make_problem(mode, D, H, T, B, L, bidir, bias, seed)
    lstm = mode == "LSTM"

    # analytic, with h0=None when the config tests default (zero) initial states
    y, hn, cn, cache = ref.forward(mode, params, x, h0 if h0_given else None,
                                   c0 if h0_given else None, lengths, L, bidir)
    if mode == "RNN_RELU":
        _assert_relu_kink_free(cache)
    dx, dh0, dc0, grads = ref.backward(cache, gy, gh, gc)
    assert set(grads) == set(params)
    assert (dc0 is not None) == lstm and (cn is not None) == lstm
    if not h0_given:
        h0 = np.zeros_like(h0)
        c0 = None if c0 is None else np.zeros_like(c0)

    def loss():
        yy, hh, cc, _ = ref.forward(mode, params, x, h0, c0, lengths, L, bidir)
        val = np.sum(yy * gy) + np.sum(hh * gh)
        if lstm:
            val += np.sum(cc * gc)
        return val

    _assert_close("dx", dx, numeric_grad(loss, x, EPS))
    _assert_close("dh0", dh0, numeric_grad(loss, h0, EPS))
    if lstm:
        _assert_close("dc0", dc0, numeric_grad(loss, c0, EPS))
    for name in sorted(params):
        _assert_close(name, grads[name], numeric_grad(loss, params[name], EPS))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias", [True, False])
def test_cell_finite_difference(mode, bias):
    rng = np.random.default_rng(11 if bias else 12)
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    B, D, H = 2, 3, 2
    w_ih = rng.standard_normal((G * H, D))
    w_hh = rng.standard_normal((G * H, H))
    b_ih = rng.standard_normal(G * H) if bias else None
    b_hh = rng.standard_normal(G * H) if bias else None
    x = rng.standard_normal((B, D))
    h = rng.standard_normal((B, H))
    c = rng.standard_normal((B, H))
    gh1 = rng.standard_normal((B, H))
    gc1 = rng.standard_normal((B, H))
    lstm = mode == "LSTM"

    if lstm:
        h1, c1, cache = ref.cell_forward(mode, w_ih, w_hh, b_ih, b_hh, x, h, c)
        dx, dh, dc, g = ref.cell_backward(cache, gh1, gc1)
    else:
        h1, cache = ref.cell_forward(mode, w_ih, w_hh, b_ih, b_hh, x, h)
        dx, dh, g = ref.cell_backward(cache, gh1)
    if mode == "RNN_RELU":
        _assert_relu_kink_free(cache)
    expected_keys = {"weight_ih", "weight_hh"} | ({"bias_ih", "bias_hh"} if bias else set())
    assert set(g) == expected_keys

    def loss():
        if lstm:
            a, b_, _ = ref.cell_forward(mode, w_ih, w_hh, b_ih, b_hh, x, h, c)
            return np.sum(a * gh1) + np.sum(b_ * gc1)
        a, _ = ref.cell_forward(mode, w_ih, w_hh, b_ih, b_hh, x, h)
        return np.sum(a * gh1)

    _assert_close("dx", dx, numeric_grad(loss, x, EPS))
    _assert_close("dh", dh, numeric_grad(loss, h, EPS))
    if lstm:
        _assert_close("dc", dc, numeric_grad(loss, c, EPS))
    _assert_close("weight_ih", g["weight_ih"], numeric_grad(loss, w_ih, EPS))
    _assert_close("weight_hh", g["weight_hh"], numeric_grad(loss, w_hh, EPS))
    if bias:
        _assert_close("bias_ih", g["bias_ih"], numeric_grad(loss, b_ih, EPS))
        _assert_close("bias_hh", g["bias_hh"], numeric_grad(loss, b_hh, EPS))


# ---------------------------------------------------------------------------
# Hand-written scalar formulas: FD cannot detect a wrong gate order or a bias
# added in the wrong place, because the wrong model is still differentiable.
# ---------------------------------------------------------------------------

def _sig(a):
    return 1.0 / (1.0 + math.exp(-a))


def _scalar_step(mode, wi, wh, bi, bh, x, h, c):
    """H = D = 1; wi/wh/bi/bh are lists of the G stacked gate rows."""
    if mode == "RNN_TANH":
        return math.tanh(wi[0] * x + bi[0] + wh[0] * h + bh[0]), None
    if mode == "RNN_RELU":
        return max(0.0, wi[0] * x + bi[0] + wh[0] * h + bh[0]), None
    if mode == "LSTM":
        pre = [wi[k] * x + bi[k] + wh[k] * h + bh[k] for k in range(4)]
        i, f, g, o = _sig(pre[0]), _sig(pre[1]), math.tanh(pre[2]), _sig(pre[3])
        c1 = f * c + i * g
        return o * math.tanh(c1), c1
    r = _sig(wi[0] * x + bi[0] + wh[0] * h + bh[0])
    z = _sig(wi[1] * x + bi[1] + wh[1] * h + bh[1])
    n = math.tanh(wi[2] * x + bi[2] + r * (wh[2] * h + bh[2]))
    return (1 - z) * n + z * h, None


@pytest.mark.parametrize("mode", MODES)
def test_scalar_formulas_bidirectional(mode):
    T = 3
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    rng = np.random.default_rng(21)
    # distinct, clearly nonzero gate parameters so any swap changes the result
    params = {}
    for s in ("_l0", "_l0_reverse"):
        params["weight_ih" + s] = rng.uniform(0.3, 1.5, (G, 1)) * rng.choice([-1, 1], (G, 1))
        params["weight_hh" + s] = rng.uniform(0.3, 1.5, (G, 1)) * rng.choice([-1, 1], (G, 1))
        params["bias_ih" + s] = rng.uniform(-1, 1, G)
        params["bias_hh" + s] = rng.uniform(0.5, 1, G)
    x = np.array([0.7, -1.2, 0.4]).reshape(T, 1, 1)
    h0 = np.array([0.3, -0.6]).reshape(2, 1, 1)
    c0 = np.array([-0.5, 0.8]).reshape(2, 1, 1) if mode == "LSTM" else None
    y, hn, cn, _ = ref.forward(mode, params, x, h0, c0, bidirectional=True)

    for d, s, order in ((0, "_l0", range(T)), (1, "_l0_reverse", range(T - 1, -1, -1))):
        wi = params["weight_ih" + s][:, 0].tolist()
        wh = params["weight_hh" + s][:, 0].tolist()
        bi = params["bias_ih" + s].tolist()
        bh = params["bias_hh" + s].tolist()
        h = float(h0[d, 0, 0])
        c = None if c0 is None else float(c0[d, 0, 0])
        for t in order:
            h, c = _scalar_step(mode, wi, wh, bi, bh, float(x[t, 0, 0]), h, c)
            assert y[t, 0, d] == pytest.approx(h, abs=1e-14)
        assert hn[d, 0, 0] == pytest.approx(h, abs=1e-14)
        if mode == "LSTM":
            assert cn[d, 0, 0] == pytest.approx(c, abs=1e-14)


# ---------------------------------------------------------------------------
# Lengths / direction / stacking semantics
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_padded_outputs_are_exact_zero_and_inert(mode):
    T, B, D, H, L = 5, 4, 3, 2, 2
    lengths = np.array([5, 1, 3, 2])
    params, x, h0, c0, gy, gh, gc = _make_problem(mode, D, H, T, B, L, True, True, 31)
    y, hn, cn, cache = ref.forward(mode, params, x, h0, c0, lengths, L, True)
    pad = np.arange(T)[:, None] >= lengths[None, :]          # (T, B)
    assert np.all(y[pad] == 0.0)
    # guards against a trivially all-zero y; ReLU legitimately emits some zeros
    nonzero = np.abs(y[~pad]) > 0
    assert nonzero.mean() > 0.5 if mode == "RNN_RELU" else nonzero.all()
    dx, dh0, dc0, grads = ref.backward(cache, gy, gh, gc)
    assert np.all(dx[pad] == 0.0)
    # cotangents on padding must not leak into any gradient
    gy2 = gy.copy()
    gy2[pad] = 1e3
    dx2, dh02, dc02, grads2 = ref.backward(cache, gy2, gh, gc)
    np.testing.assert_array_equal(dx2, dx)
    np.testing.assert_array_equal(dh02, dh0)
    for k in grads:
        np.testing.assert_array_equal(grads2[k], grads[k])


@pytest.mark.parametrize("mode", MODES)
def test_ragged_equals_each_sequence_alone(mode):
    T, B, D, H, L = 4, 3, 2, 3, 2
    lengths = [3, 1, 4]
    params, x, h0, c0, gy, gh, gc = _make_problem(mode, D, H, T, B, L, True, True, 41)
    lstm = mode == "LSTM"
    y, hn, cn, cache = ref.forward(mode, params, x, h0, c0, lengths, L, True)
    dx, dh0, dc0, grads = ref.backward(cache, gy, gh, gc)
    gsum = {k: np.zeros_like(v) for k, v in params.items()}
    for b, n in enumerate(lengths):
        sb = slice(b, b + 1)
        yb, hb, cb, cache_b = ref.forward(mode, params, x[:n, sb], h0[:, sb],
                                          c0[:, sb] if lstm else None, None, L, True)
        np.testing.assert_allclose(y[:n, sb], yb, rtol=0, atol=1e-14)
        np.testing.assert_allclose(hn[:, sb], hb, rtol=0, atol=1e-14)
        if lstm:
            np.testing.assert_allclose(cn[:, sb], cb, rtol=0, atol=1e-14)
        dxb, dh0b, dc0b, gb = ref.backward(cache_b, gy[:n, sb], gh[:, sb],
                                           gc[:, sb] if lstm else None)
        np.testing.assert_allclose(dx[:n, sb], dxb, rtol=0, atol=1e-13)
        np.testing.assert_allclose(dh0[:, sb], dh0b, rtol=0, atol=1e-13)
        if lstm:
            np.testing.assert_allclose(dc0[:, sb], dc0b, rtol=0, atol=1e-13)
        for k in gsum:
            gsum[k] += gb[k]
    for k in gsum:
        np.testing.assert_allclose(grads[k], gsum[k], rtol=0, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("mode", MODES)
def test_full_lengths_equal_no_lengths(mode):
    T, B, D, H, L = 4, 3, 2, 2, 2
    params, x, h0, c0, gy, gh, gc = _make_problem(mode, D, H, T, B, L, True, True, 51)
    a = ref.forward(mode, params, x, h0, c0, np.full(B, T), L, True)
    b = ref.forward(mode, params, x, h0, c0, None, L, True)
    for u, v in zip(a[:3], b[:3]):
        if u is None:
            assert v is None
        else:
            np.testing.assert_allclose(u, v, rtol=0, atol=1e-14)
    ga = ref.backward(a[3], gy, gh, gc)
    gb = ref.backward(b[3], gy, gh, gc)
    for u, v in zip(ga[:3], gb[:3]):
        if u is None:
            assert v is None
        else:
            np.testing.assert_allclose(u, v, rtol=0, atol=1e-13)
    assert set(ga[3]) == set(gb[3])
    for k in ga[3]:
        np.testing.assert_allclose(ga[3][k], gb[3][k], rtol=0, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("mode", MODES)
def test_reverse_direction_is_forward_on_flipped_valid_part(mode):
    T, B, D, H = 5, 3, 2, 3
    lengths = [2, 5, 4]
    params, x, h0, c0, _, _, _ = _make_problem(mode, D, H, T, B, 1, True, True, 61)
    lstm = mode == "LSTM"
    y, hn, cn, _ = ref.forward(mode, params, x, h0, c0, lengths, 1, True)
    fwd_params = {k.replace("_reverse", ""): v for k, v in params.items() if k.endswith("_reverse")}
    for b, n in enumerate(lengths):
        xb = x[:n, b:b + 1][::-1].copy()
        yr, hr, cr, _ = ref.forward(mode, fwd_params, xb, h0[1:2, b:b + 1],
                                    c0[1:2, b:b + 1] if lstm else None)
        np.testing.assert_allclose(y[:n, b:b + 1, H:], yr[::-1], rtol=0, atol=1e-14)
        np.testing.assert_allclose(hn[1, b], hr[0, 0], rtol=0, atol=1e-14)
        if lstm:
            np.testing.assert_allclose(cn[1, b], cr[0, 0], rtol=0, atol=1e-14)
        # forward direction's h_n is its output at the last valid position
        np.testing.assert_array_equal(hn[0, b], y[n - 1, b, :H])


@pytest.mark.parametrize("mode", MODES)
def test_two_layers_equal_composed_single_layers(mode):
    T, B, D, H = 4, 2, 3, 2
    lengths = [4, 2]
    params, x, h0, c0, _, _, _ = _make_problem(mode, D, H, T, B, 2, True, True, 71)
    lstm = mode == "LSTM"
    y, hn, cn, _ = ref.forward(mode, params, x, h0, c0, lengths, 2, True)
    p0 = {k: v for k, v in params.items() if "_l0" in k}
    p1 = {k.replace("_l1", "_l0"): v for k, v in params.items() if "_l1" in k}
    y0, hn0, cn0, _ = ref.forward(mode, p0, x, h0[:2], c0[:2] if lstm else None,
                                  lengths, 1, True)
    y1, hn1, cn1, _ = ref.forward(mode, p1, y0, h0[2:], c0[2:] if lstm else None,
                                  lengths, 1, True)
    np.testing.assert_array_equal(y, y1)
    np.testing.assert_array_equal(hn, np.concatenate([hn0, hn1]))
    if lstm:
        np.testing.assert_array_equal(cn, np.concatenate([cn0, cn1]))


@pytest.mark.parametrize("mode", MODES)
def test_cell_matches_one_step_layer(mode):
    D, H, B = 3, 2, 2
    params, x, h0, c0, gy, gh, gc = _make_problem(mode, D, H, 1, B, 1, False, True, 81)
    lstm = mode == "LSTM"
    y, hn, cn, cache = ref.forward(mode, params, x, h0, c0)
    dx, dh0, dc0, grads = ref.backward(cache, gy, gh, gc)
    w = [params[k] for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
    if lstm:
        h1, c1, cc = ref.cell_forward(mode, *w, x[0], h0[0], c0[0])
        cdx, cdh, cdc, cg = ref.cell_backward(cc, gy[0] + gh[0], gc[0])
        np.testing.assert_allclose(c1, cn[0], rtol=0, atol=1e-15)
        np.testing.assert_allclose(cdc, dc0[0], rtol=0, atol=1e-14)
    else:
        h1, cc = ref.cell_forward(mode, *w, x[0], h0[0])
        cdx, cdh, cg = ref.cell_backward(cc, gy[0] + gh[0])
    np.testing.assert_allclose(h1, y[0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(cdx, dx[0], rtol=0, atol=1e-14)
    np.testing.assert_allclose(cdh, dh0[0], rtol=0, atol=1e-14)
    for k in cg:
        np.testing.assert_allclose(cg[k], grads[k + "_l0"], rtol=0, atol=1e-14)


# ---------------------------------------------------------------------------
# API details
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_none_cotangents_mean_zeros(mode):
    T, B, D, H, L = 3, 2, 2, 2, 2
    params, x, h0, c0, gy, gh, gc = _make_problem(mode, D, H, T, B, L, True, True, 91)
    lstm = mode == "LSTM"
    *_, cache = ref.forward(mode, params, x, h0, c0, [3, 2], L, True)
    zc = np.zeros_like(gh) if lstm else None
    cases = [((gy, None, None), (gy, np.zeros_like(gh), zc)),
             ((None, gh, None), (np.zeros_like(gy), gh, zc))]
    if lstm:
        cases.append(((None, None, gc), (np.zeros_like(gy), np.zeros_like(gh), gc)))
    for with_none, explicit in cases:
        a = ref.backward(cache, *with_none)
        b = ref.backward(cache, *explicit)
        assert np.any(a[0] != 0)       # each cotangent alone reaches x
        for u, v in zip(a[:3], b[:3]):
            if u is None:
                assert v is None
            else:
                np.testing.assert_array_equal(u, v)
        for k in a[3]:
            np.testing.assert_array_equal(a[3][k], b[3][k])
    dx, dh0, dc0, g = ref.backward(cache)
    assert not np.any(dx) and not np.any(dh0) and not any(np.any(v) for v in g.values())


@pytest.mark.parametrize("mode", MODES)
def test_no_mutation_and_repeatable_backward(mode):
    params, x, h0, c0, gy, gh, gc = _make_problem(mode, 2, 2, 3, 2, 2, True, True, 101)
    snap = [a.copy() for a in (x, h0, gy, gh)] + [v.copy() for v in params.values()]
    *_, cache = ref.forward(mode, params, x, h0, c0, [1, 3], 2, True)
    r1 = ref.backward(cache, gy, gh, gc)
    r2 = ref.backward(cache, gy, gh, gc)
    np.testing.assert_array_equal(r1[0], r2[0])
    for k in r1[3]:
        np.testing.assert_array_equal(r1[3][k], r2[3][k])
    after = [x, h0, gy, gh] + list(params.values())
    for s, a in zip(snap, after):
        np.testing.assert_array_equal(s, a)


@pytest.mark.parametrize("mode", MODES)
def test_float32_stays_float32_and_agrees(mode):
    params, x, h0, c0, gy, gh, gc = _make_problem(mode, 3, 4, 5, 3, 2, True, True, 111)
    lengths = [5, 2, 4]
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    f32 = lambda a: None if a is None else a.astype(np.float32)
    y, hn, cn, cache = ref.forward(mode, p32, f32(x), f32(h0), f32(c0), lengths, 2, True)
    dx, dh0, dc0, g = ref.backward(cache, f32(gy), f32(gh), f32(gc))
    y64, hn64, cn64, cache64 = ref.forward(mode, params, x, h0, c0, lengths, 2, True)
    dx64, dh064, dc064, g64 = ref.backward(cache64, gy, gh, gc)
    pairs = [(y, y64), (hn, hn64), (dx, dx64), (dh0, dh064)] + [(g[k], g64[k]) for k in g64]
    if mode == "LSTM":
        pairs += [(cn, cn64), (dc0, dc064)]
    for a32, a64 in pairs:
        assert a32.dtype == np.float32
        np.testing.assert_allclose(a32, a64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_init_params_names_shapes_bounds(mode):
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    D, H = 5, 7
    p = ref.init_params(mode, D, H, num_layers=2, bidirectional=True, rng=3)
    expect = {}
    for k, din in ((0, D), (1, 2 * H)):
        for s in ("_l%d" % k, "_l%d_reverse" % k):
            expect["weight_ih" + s] = (G * H, din)
            expect["weight_hh" + s] = (G * H, H)
            expect["bias_ih" + s] = (G * H,)
            expect["bias_hh" + s] = (G * H,)
    assert {k: v.shape for k, v in p.items()} == expect
    bound = 1 / math.sqrt(H)
    allv = np.concatenate([v.ravel() for v in p.values()])
    assert allv.dtype == np.float64
    assert np.all(np.abs(allv) <= bound)
    assert allv.max() > 0.9 * bound and allv.min() < -0.9 * bound   # uses the full range
    p_again = ref.init_params(mode, D, H, num_layers=2, bidirectional=True, rng=3)
    assert all(np.array_equal(p[k], p_again[k]) for k in p)
    p_other = ref.init_params(mode, D, H, num_layers=2, bidirectional=True, rng=4)
    assert not np.array_equal(p["weight_ih_l0"], p_other["weight_ih_l0"])
    nb = ref.init_params(mode, D, H, bias=False, dtype=np.float32, rng=3)
    assert set(nb) == {"weight_ih_l0", "weight_hh_l0"}
    assert all(v.dtype == np.float32 for v in nb.values())


def test_invalid_lengths_rejected():
    p = ref.init_params("GRU", 2, 2, rng=0)
    x = np.zeros((3, 2, 2))
    for bad in ([0, 3], [4, 1], [3]):
        with pytest.raises(ValueError):
            ref.forward("GRU", p, x, lengths=bad)
    with pytest.raises(ValueError):
        ref.forward("LSTMX", p, x)


# ---------------------------------------------------------------------------
# PyTorch cross-check (skipped when torch is not installed)
# ---------------------------------------------------------------------------

TORCH_CONFIGS = [
    # (name, D, H, T, B, L, bidir, lengths, bias)
    ("uni_1layer", 3, 4, 5, 2, 1, False, None, True),
    ("bidir_2layer", 3, 4, 5, 3, 2, True, None, True),
    ("ragged_bidir_2layer", 3, 4, 5, 4, 2, True, [5, 1, 3, 2], True),
    ("ragged_nobias_bidir", 2, 3, 4, 3, 2, True, [3, 1, 4], False),
]


def _torch_module(torch, mode, D, H, L, bidir, bias):
    if mode == "LSTM":
        return torch.nn.LSTM(D, H, L, bias=bias, bidirectional=bidir)
    if mode == "GRU":
        return torch.nn.GRU(D, H, L, bias=bias, bidirectional=bidir)
    return torch.nn.RNN(D, H, L, nonlinearity="tanh" if mode == "RNN_TANH" else "relu",
                        bias=bias, bidirectional=bidir)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cfg", TORCH_CONFIGS, ids=[c[0] for c in TORCH_CONFIGS])
def test_matches_torch(mode, cfg):
    torch = pytest.importorskip("torch")
    _, D, H, T, B, L, bidir, lengths, bias = cfg
    params, x, h0, c0, gy, gh, gc = _make_problem(mode, D, H, T, B, L, bidir, bias, 121)
    lstm = mode == "LSTM"
    m = _torch_module(torch, mode, D, H, L, bidir, bias).double()
    m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()})

    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True) if lstm else None
    inp = xt
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.tensor(lengths), enforce_sorted=False)
    out, hx = m(inp, (h0t, c0t) if lstm else h0t)
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    hnt, cnt = hx if lstm else (hx, None)
    loss = (out * torch.from_numpy(gy)).sum() + (hnt * torch.from_numpy(gh)).sum()
    if lstm:
        loss = loss + (cnt * torch.from_numpy(gc)).sum()
    loss.backward()

    y, hn, cn, cache = ref.forward(mode, params, x, h0, c0, lengths, L, bidir)
    dx, dh0, dc0, grads = ref.backward(cache, gy, gh, gc)
    tol = dict(rtol=0, atol=1e-10)
    np.testing.assert_allclose(y, out.detach().numpy(), **tol)
    np.testing.assert_allclose(hn, hnt.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol)
    np.testing.assert_allclose(dh0, h0t.grad.numpy(), **tol)
    if lstm:
        np.testing.assert_allclose(cn, cnt.detach().numpy(), **tol)
        np.testing.assert_allclose(dc0, c0t.grad.numpy(), **tol)
    tnames = {name for name, _ in m.named_parameters()}
    assert tnames == set(grads)
    for name, p in m.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), err_msg=name, **tol)


@pytest.mark.parametrize("mode", MODES)
def test_cell_matches_torch(mode):
    torch = pytest.importorskip("torch")
    B, D, H = 3, 4, 5
    lstm = mode == "LSTM"
    rng = np.random.default_rng(131)
    if mode == "LSTM":
        cell = torch.nn.LSTMCell(D, H)
    elif mode == "GRU":
        cell = torch.nn.GRUCell(D, H)
    else:
        cell = torch.nn.RNNCell(D, H, nonlinearity="tanh" if mode == "RNN_TANH" else "relu")
    cell = cell.double()
    w = {n: p.detach().numpy().copy() for n, p in cell.named_parameters()}
    x, h, c, gh1, gc1 = (rng.standard_normal(s) for s in
                         [(B, D), (B, H), (B, H), (B, H), (B, H)])
    xt = torch.tensor(x, requires_grad=True)
    ht = torch.tensor(h, requires_grad=True)
    ct = torch.tensor(c, requires_grad=True)
    args = (w["weight_ih"], w["weight_hh"], w["bias_ih"], w["bias_hh"], x, h)
    if lstm:
        h1t, c1t = cell(xt, (ht, ct))
        ((h1t * torch.from_numpy(gh1)).sum() + (c1t * torch.from_numpy(gc1)).sum()).backward()
        h1, c1, cache = ref.cell_forward(mode, *args, c)
        dx, dh, dc, g = ref.cell_backward(cache, gh1, gc1)
        np.testing.assert_allclose(c1, c1t.detach().numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(dc, ct.grad.numpy(), rtol=0, atol=1e-12)
    else:
        h1t = cell(xt, ht)
        (h1t * torch.from_numpy(gh1)).sum().backward()
        h1, cache = ref.cell_forward(mode, *args)
        dx, dh, g = ref.cell_backward(cache, gh1)
    np.testing.assert_allclose(h1, h1t.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dh, ht.grad.numpy(), rtol=0, atol=1e-12)
    for n, p in cell.named_parameters():
        np.testing.assert_allclose(g[n], p.grad.numpy(), rtol=0, atol=1e-12, err_msg=n)
