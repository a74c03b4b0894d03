"""LSTM(proj_size=P): PyTorch's projections, h = W_hr (o * tanh(c)), fused in the C row loops.

Checked as the other variants are (tests/test_variants.py, tests/test_layer_norm.py): float64
finite differences of every gradient (weight_hr included) on awkward shapes with non-zero h0 (P)
and c0 (H); the engine against fastrnn.reference (float64, and float32 on every path the planner
can take, threads included); recurrent and weight dropout on the P-sized state; the unit split
refused; refusals; save/load; the PyTorch state dict both ways (the parity with torch itself is
in tests/test_torch_parity.py, on committed fixtures); the ONNX and Keras refusals.
"""
from pathlib import Path

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import _core, reference
from fd import assert_grads_match, numeric_grad
from test_variants import PATHS  # plan.c's choices, forced: every path the row loops take

EPS = 1e-6
MASK_SEED = 1234
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "torch"

# (T, B, D, H, P, num_layers, bidirectional, lengths, bias)
CONFIGS = [
    (1, 1, 1, 2, 1, 1, False, None, True),
    (4, 3, 2, 5, 2, 1, True, [4, 1, 3], True),
    (4, 3, 3, 4, 3, 2, True, [2, 4, 3], True),
    (3, 2, 1, 3, 1, 2, False, [3, 1], False),
    (5, 2, 2, 3, 2, 2, True, None, True),
]
CFG_IDS = dict(ids=lambda c: f"T{c[0]}B{c[1]}D{c[2]}H{c[3]}P{c[4]}L{c[5]}{'bi' if c[6] else ''}"
               f"{'ragged' if c[7] else ''}{'' if c[8] else 'nobias'}")
OPTIONS = (None, "recurrent_dropout", "weight_dropout")


def build(cfg, dtype=np.float64, seed=0, **opts):
    T, B, D, H, P, L, bi, lengths, bias = cfg
    return fr.LSTM(D, H, num_layers=L, bidirectional=bi, bias=bias, dtype=dtype, seed=seed, proj_size=P,
                   **opts)


def inputs(cfg, dtype=np.float64, seed=42):
    T, B, D, H, P, L, bi, lengths, bias = cfg
    rng = np.random.default_rng(seed)
    dirs = 2 if bi else 1
    x = rng.standard_normal((T, B, D)).astype(dtype)
    h0 = (rng.standard_normal((L * dirs, B, P)) * 0.5).astype(dtype)
    c0 = (rng.standard_normal((L * dirs, B, H)) * 0.5).astype(dtype)
    lengths = None if lengths is None else np.array(lengths)
    cot = [rng.standard_normal((T, B, dirs * P)).astype(dtype),
           rng.standard_normal((L * dirs, B, P)).astype(dtype),
           rng.standard_normal((L * dirs, B, H)).astype(dtype)]
    if lengths is not None:
        cot[0][np.arange(T)[:, None] >= lengths[None, :]] = 1e3  # padding must not matter
    return x, h0, c0, lengths, cot


def fixed(m):
    m._rng = np.random.default_rng(MASK_SEED)


def opts(option, p=0.4):
    return {option: p} if option else {}


# ---- finite differences ----------------------------------------------------------------------

@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("cfg", CONFIGS, **CFG_IDS)
def test_gradients_match_finite_differences(option, cfg):
    m = build(cfg, **opts(option))
    x, h0, c0, lengths, cot = inputs(cfg)

    def loss():
        fixed(m)
        y, (h, c) = m(x, (h0, c0), lengths=lengths)
        return np.sum(y * cot[0]) + np.sum(h * cot[1]) + np.sum(c * cot[2])

    m.zero_grad()
    loss()
    dx, (dh0, dc0) = m.backward(cot[0], (cot[1], cot[2]))
    assert dh0.shape == h0.shape and dc0.shape == c0.shape
    checks = [("x", dx, x), ("h0", dh0, h0), ("c0", dc0, c0)]
    checks += [(k, m.grads[k], v) for k, v in m.parameters().items()]
    assert any(k.startswith("weight_hr") for k, _, _ in checks)
    assert_grads_match(loss, checks, EPS, f"proj_size {option}")


def test_reference_gradients_match_finite_differences():
    """The reference's own backward (the engine's ground truth) against differences of its forward."""
    cfg = (4, 3, 3, 4, 3, 2, True, [2, 4, 3], True)
    T, B, D, H, P, L, bi, lengths, bias = cfg
    params = reference.init_params("LSTM", D, H, L, bi, rng=3, proj_size=P)
    assert params["weight_hr_l1_reverse"].shape == (P, H) and params["weight_ih_l1"].shape == (4 * H, 2 * P)
    x, h0, c0, lengths, cot = inputs(cfg)
    cot[0][np.arange(T)[:, None] >= lengths[None, :]] = 0

    def loss():
        y, h, c, _ = reference.forward("LSTM", params, x, h0, c0, lengths, L, bi)
        return np.sum(y * cot[0]) + np.sum(h * cot[1]) + np.sum(c * cot[2])

    y, h, c, cache = reference.forward("LSTM", params, x, h0, c0, lengths, L, bi)
    dx, dh0, dc0, grads = reference.backward(cache, *cot)
    for name, analytic, arr in [("x", dx, x), ("h0", dh0, h0), ("c0", dc0, c0)] + \
            [(k, grads[k], params[k]) for k in params]:
        np.testing.assert_allclose(analytic, numeric_grad(loss, arr, EPS), rtol=1e-6, atol=1e-8, err_msg=name)


# ---- engine vs the NumPy reference -------------------------------------------------------------

def check_against_reference(m, cfg, dtype, rtol_scale=None):
    """The engine against the float64 reference on the same values and masks. float64: 1e-10
    relative to each array's largest magnitude; float32: 2e-5 (FMA and vmath.h's exp/tanh)."""
    x, h0, c0, lengths, cot = inputs(cfg, dtype)
    T, B = x.shape[:2]
    fixed(m)
    masks = m._draw_masks(T, B)
    masks = None if masks is None else [{k: None if v is None else np.array(v, np.float64)
                                         for k, v in mk.items()} for mk in masks]
    fixed(m)
    m.zero_grad()
    y, (h, c) = m(x, (h0, c0), lengths=lengths)
    dx, (dh0, dc0) = m.backward(cot[0], (cot[1], cot[2]))
    c64 = lambda a: None if a is None else np.asarray(a, np.float64)  # noqa: E731
    L, bi = m.num_layers, m.bidirectional
    ry, rh, rc, cache = reference.forward("LSTM", {k: c64(v) for k, v in m.state_dict().items()}, c64(x),
                                          c64(h0), c64(c0), lengths, L, bi, masks=masks)
    rdx, rdh0, rdc0, grads = reference.backward(cache, c64(cot[0]), c64(cot[1]), c64(cot[2]))
    limit = rtol_scale or (1e-10 if dtype == np.float64 else 2e-5)
    worst = 0.0
    pairs = list(zip((y, h, c, dx, dh0, dc0), (ry, rh, rc, rdx, rdh0, rdc0), ("y", "h_n", "c_n", "dx", "dh0", "dc0")))
    pairs += [(m.grads[k], g, k) for k, g in grads.items()]
    assert sorted(grads) == sorted(m.grads)
    for got, want, name in pairs:
        assert got.dtype == dtype and got.shape == want.shape, name
        scale = max(1.0, float(np.abs(want).max()))
        err = float(np.abs(got - want).max()) / scale
        worst = max(worst, err)
        assert err < limit, (name, err, scale)
    return worst, masks


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("cfg", CONFIGS, **CFG_IDS)
def test_engine_equals_reference_float64(option, cfg):
    worst, masks = check_against_reference(build(cfg, **opts(option, 0.3)), cfg, np.float64)
    if option:
        key = {"recurrent_dropout": "hmask", "weight_dropout": "wmask"}[option]
        vals = np.concatenate([mk[key].ravel() for mk in masks])
        if vals.size >= 40:  # real masks: some units dropped, some not
            assert (vals == 0).any() and (vals != 0).any()
        P = cfg[4]
        assert all(mk[key].shape[-1] == P for mk in masks)  # masks of the P-sized state


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("option", OPTIONS)
def test_engine_equals_reference_float32_on_every_path(plan_knobs, path, option):
    """float32 where the packed micro-kernels run (B >= 4, T >= 4), one direction (dx in the loop
    needs it) and two (the reverse loop with ragged lengths), 2 layers, 2 threads."""
    plan_knobs(**PATHS[path])
    threads = fr.get_num_threads()
    fr.set_num_threads(2)
    try:
        for bi, lengths in ((False, None), (True, [9, 3, 7, 9, 1, 5, 8, 2])):
            cfg = (9, 8, 16, 24, 8, 2, bi, lengths, True)
            worst, _ = check_against_reference(build(cfg, np.float32, **opts(option, 0.3)), cfg, np.float32)
            print(f"float32 proj {path} {option} bi={bi}: max |err|/scale {worst:.2e}")
    finally:
        fr.set_num_threads(threads)


def test_a_batch_of_one_runs_in_the_row_loop(plan_knobs):
    plan_knobs(units=True)
    threads = fr.get_num_threads()
    fr.set_num_threads(2)
    try:
        m = build((8, 1, 3, 32, 16, 1, False, None, True), np.float32)
        assert _core.plan_units_mid(m._cell, 8, 1, 32, 1, False, False) is not None
        assert _core.plan_units_mid(m._cell, 8, 1, 32, 1, False, True) is None
        check_against_reference(m, (8, 1, 3, 32, 16, 1, False, None, True), np.float32)
    finally:
        fr.set_num_threads(threads)


def test_inference_equals_training_and_eval_drops_the_dropout():
    cfg = (6, 4, 3, 7, 3, 2, True, [6, 2, 5, 1], True)
    x, h0, c0, lengths, _ = inputs(cfg)
    m = build(cfg)
    y, (h, c) = m(x, (h0, c0), lengths=lengths)
    assert y.shape == (6, 4, 6) and h.shape == (4, 4, 3) and c.shape == (4, 4, 7)
    assert not y[np.arange(6)[:, None] >= lengths[None, :]].any()
    with fr.no_grad():
        y2, (h2, c2) = m(x, (h0, c0), lengths=lengths)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(h2, h)
    d = build(cfg, recurrent_dropout=0.5, weight_dropout=0.5)
    d.load_state_dict(m.state_dict())
    d.eval()
    np.testing.assert_array_equal(d(x, (h0, c0), lengths=lengths)[0], y)


# ---- the layer ------------------------------------------------------------------------------------

def test_parameters_are_pytorchs():
    m = fr.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2)
    shapes = {k: v.shape for k, v in m.parameters().items()}
    for s in ("_l0", "_l0_reverse", "_l1", "_l1_reverse"):
        assert shapes["weight_hh" + s] == (24, 2) and shapes["weight_hr" + s] == (2, 6)
    assert shapes["weight_ih_l0"] == (24, 3) and shapes["weight_ih_l1"] == (24, 4)
    assert list(m.parameters())[:5] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                                        "weight_hr_l0"]  # PyTorch's registration order
    assert "proj_size=2" in repr(m)
    assert m.proj_size == 2 and fr.LSTM(3, 6).proj_size == 0


@pytest.mark.parametrize("make, match", [
    (lambda: fr.GRU(2, 4, proj_size=2), "LSTM option"),
    (lambda: fr.RNN(2, 4, proj_size=2), "LSTM option"),
    (lambda: fr.LSTMCell(2, 4, proj_size=2), "not of LSTMCell"),
    (lambda: fr.LSTM(2, 4, proj_size=4), "1..hidden_size-1"),
    (lambda: fr.LSTM(2, 4, proj_size=-1), "1..hidden_size-1"),
    (lambda: fr.LSTM(2, 4, proj_size=2, peepholes=True), "peepholes"),
    (lambda: fr.LSTM(2, 4, proj_size=2, layer_norm=True), "layer_norm"),
    (lambda: fr.LSTM(2, 4, proj_size=2, zoneout=0.1), "zoneout"),
])
def test_nonsense_and_unsupported_combinations_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bridge_refuses_what_the_projected_loops_lack():
    with pytest.raises(TypeError, match="proj_size"):
        fr.LSTM(2, 4, proj_size=1.5)
    H, P, T, B = 4, 2, 2, 1
    z = lambda *s: np.zeros(s)  # noqa: E731
    args = dict(b0=0, b1=B, reverse=False, lengths=None, h0=z(B, P), c0=z(B, H), w_hh=z(4 * H, P), b_ih=None,
                b_hh=None, y=z(T, B, P), y_col=0, h_n=z(B, P), c_n=z(B, H), act=z(T, B, 4 * H), hprev=z(T, B, P),
                aux=z(T, B, 2 * H), w_hr=z(P, H))
    _core.recur(_core.LSTM, hcell=z(T, B, H), **args)  # accepted
    with pytest.raises(ValueError, match="hcell"):
        _core.recur(_core.LSTM, **args)  # training needs hcell
    with pytest.raises(ValueError, match="zoneout, peepholes or layer norm"):
        _core.recur(_core.LSTM, hcell=z(T, B, H), zh=z(T, B, H), **args)
    with pytest.raises(ValueError, match="zoneout, peepholes or layer norm"):
        _core.recur(_core.LSTM, hcell=z(T, B, H), peep=z(3 * H), **args)
    with pytest.raises(ValueError, match="LSTM option"):
        _core.recur(_core.GRU, **dict(args, w_hh=z(3 * H, P), act=z(T, B, 3 * H), aux=z(T, B, H)))
    with pytest.raises(ValueError, match="w_hh"):
        _core.recur(_core.LSTM, hcell=z(T, B, H), **dict(args, w_hh=z(4 * H, H)))


def test_training_with_projections_survives_save_and_load(tmp_path):
    m = fr.Sequential([fr.LSTM(2, 12, num_layers=2, bidirectional=True, proj_size=5, recurrent_dropout=0.2,
                               weight_dropout=0.1),
                       fr.LastStep(), fr.Dense(1)], seed=0)
    m.compile("mse", fr.Adam(0.01))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 7, 2)).astype(np.float32)
    hist = m.fit(x, x[:, -3:, :1].sum(1), epochs=8, batch_size=8, verbose=0).history["loss"]
    assert hist[-1] < hist[0]
    assert m.predict(x).shape == (32, 1)
    m.save(tmp_path / "p.frnn")
    m2 = fr.load(tmp_path / "p.frnn")
    assert m2.layers[0].layer.proj_size == 5
    assert m2.get_config() == m.get_config()
    np.testing.assert_array_equal(m2.predict(x), m.predict(x))


def test_recurrent_layer_states_and_merge_modes_use_the_projected_size():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    for merge in ("concat", "sum"):
        layer = fr.Recurrent(fr.LSTM(3, 8, bidirectional=True, proj_size=3), return_sequences=True,
                             merge_mode=merge)
        m = fr.Sequential([layer, fr.Dense(2)], seed=0)
        m.compile("mse", fr.SGD(0.01))
        m.fit(x, rng.standard_normal((4, 6, 2)).astype(np.float32), epochs=1, verbose=0)
        assert layer.features == (6 if merge == "concat" else 3)


# ---- converters ---------------------------------------------------------------------------------

def _fixture(name):
    with np.load(FIXTURES / f"{name}.npz") as f:
        return {k: f[k] for k in f.files}


def test_torch_state_dicts_go_both_ways_without_torch():
    """A torch state dict (the committed fixture's) loads into LSTM(proj_size) and gives torch's
    outputs; torch_state_dict gives it back under the same names and shapes."""
    f = _fixture("LSTM_proj3_L2_bi_ragged_float64")
    sd = {k[len("param."):]: v for k, v in f.items() if k.startswith("param.")}
    m = fr.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3, dtype=np.float64)
    fr.load_torch_state_dict(m, sd)
    y, (h, c) = m(f["x"], (f["h0"], f["c0"]), lengths=f["lengths"])
    np.testing.assert_allclose(y, f["y"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h, f["h_n"], rtol=1e-10, atol=1e-12)
    back = fr.torch_state_dict(m)
    assert sorted(back) == sorted(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])
    with pytest.raises(ValueError, match="proj_size"):  # a plain LSTM cannot take them
        fr.load_torch_state_dict(fr.LSTM(4, 6, num_layers=2, bidirectional=True), sd)


def test_torch_state_dicts_go_both_ways_with_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tm = torch.nn.LSTM(5, 9, num_layers=2, bidirectional=True, proj_size=4, dtype=torch.float64)
    m = fr.LSTM(5, 9, num_layers=2, bidirectional=True, proj_size=4, dtype=np.float64, seed=3)
    x = np.random.default_rng(0).standard_normal((7, 3, 5))
    fr.load_torch_state_dict(m, tm.state_dict())
    with torch.no_grad():
        ty, (th, tc) = tm(torch.from_numpy(x))
    y, (h, c) = m(x)
    np.testing.assert_allclose(y, ty.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c, tc.numpy(), rtol=1e-10, atol=1e-12)
    # and back: fastrnn's (re-drawn) weights into a fresh torch module
    m2 = fr.LSTM(5, 9, num_layers=2, bidirectional=True, proj_size=4, dtype=np.float64, seed=11)
    tm2 = torch.nn.LSTM(5, 9, num_layers=2, bidirectional=True, proj_size=4, dtype=torch.float64)
    tm2.load_state_dict(fr.torch_state_dict(m2, tensors=True))
    with torch.no_grad():
        ty2, (th2, _) = tm2(torch.from_numpy(x))
    y2, (h2, _) = m2(x)
    np.testing.assert_allclose(y2, ty2.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h2, th2.numpy(), rtol=1e-10, atol=1e-12)


def test_keras_and_onnx_refuse_projections():
    m = fr.Sequential([fr.LSTM(2, 6, proj_size=3), fr.LastStep(), fr.Dense(1)], seed=0)
    with pytest.raises(ValueError, match="proj_size=3 .* no Keras equivalent"):
        fr.get_keras_weights(m)
    with pytest.raises(ValueError, match="proj_size=3 .* no Keras equivalent"):
        fr.set_keras_weights(m, [])
    pytest.importorskip("onnx")
    with pytest.raises(ValueError, match="proj_size=3 has no ONNX operator"):
        fr.to_onnx(m)


def test_state_grads_have_the_projected_size():
    cfg = (5, 2, 3, 6, 2, 2, True, [5, 3], True)
    x, h0, c0, lengths, cot = inputs(cfg)
    m = build(cfg)
    m.zero_grad()
    m(x, (h0, c0), lengths=lengths)
    m.backward(cot[0], (cot[1], cot[2]), state_grads=True)
    g = {k: v.copy() for k, v in m.grads.items()}
    assert [s.shape for s in m.state_grads] == [(5, 2, 2)] * 4
    m.zero_grad()  # the weight_hr gradient does not depend on where dL/dh_t is kept
    m(x, (h0, c0), lengths=lengths)
    m.backward(cot[0], (cot[1], cot[2]))
    for k in g:
        np.testing.assert_array_equal(m.grads[k], g[k], err_msg=k)


def test_backward_params_refuses_projection_operands_without_proj():
    T, B, D, H = 2, 1, 3, 4
    z = lambda *s: np.zeros(s)  # noqa: E731
    with pytest.raises(ValueError, match="only used with proj"):
        _core.backward_params(_core.LSTM, 0, 4 * H, 0, T * B, z(T, B, D + H), z(4 * H, D), z(T, B, D + H),
                              z(T, B, 4 * H), None, None, False, z(4 * H, D), z(4 * H, H), None, None, h_col=D,
                              dw_hr=z(2, H))
