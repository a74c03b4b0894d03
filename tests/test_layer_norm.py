"""layer_norm=True (haste's LayerNormLSTM) on RNN, GRU and LSTM, fused in the C row loops.

Checked as the other variants are (tests/test_variants.py): float64 finite differences of every
gradient, the layer-norm gains and biases included, on the awkward shapes; the engine against
fastrnn.reference (float64, and float32 on every engine path the planner can take); the
combinations with the other variants; the unit split refused; save/load; the converters'
refusals; and a learning test.
"""
import numpy as np
import pytest

import fastrnn as fr
from fastrnn import _core, reference
from test_variants import CFG_IDS, CLASSES, CONFIGS, PATHS, backward, build, check_against_reference, fd_check, \
    inputs, run

EPS = 1e-6
COMBOS = ("recurrent_dropout", "zoneout", "weight_dropout")


def ln_layer(mode, D, H, L=1, bi=False, bias=True, dtype=np.float64, seed=0, **opts):
    """A layer-normalised layer whose gains and biases are random (not 1 and 0: every term of
    their gradients then matters)."""
    m = build(mode, D, H, L, bi, bias, dtype=dtype, seed=seed, layer_norm=True, **opts)
    rng = np.random.default_rng(seed + 7)
    for k, v in m.parameters().items():
        if k.startswith("layer_norm_"):
            v[...] = rng.uniform(0.5, 1.5, v.shape) if "_weight" in k else rng.uniform(-0.5, 0.5, v.shape)
    return m




# ---- finite differences ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", list(CLASSES))
@pytest.mark.parametrize("cfg", CONFIGS, **CFG_IDS)
def test_gradients_match_finite_differences(mode, cfg):
    """T=B=D=H=1 included: LN over G*H = 4 (LSTM) or 3 (GRU) units is a real normalisation; an
    RNN's single unit normalises to 0, so its output is the LN biases' (tested below too)."""
    T, B, D, H, L, bi, _, bias = cfg
    fd_check(ln_layer(mode, D, H, L, bi, bias), mode, cfg, f"layer_norm {mode}")


@pytest.mark.parametrize("option", COMBOS)
@pytest.mark.parametrize("mode", list(CLASSES))
def test_with_every_other_variant_gradients_match_finite_differences(option, mode):
    cfg = (4, 3, 2, 3, 2, True, [4, 1, 3], True)
    fd_check(ln_layer(mode, 2, 3, 2, True, **{option: 0.3}), mode, cfg, f"layer_norm {mode}+{option}")


def test_an_rnn_of_one_unit_outputs_its_layer_norm_biases():
    """H = 1: both projections normalise to exactly 0 whatever the input, so h = tanh(beta_ih +
    beta_hh + b_ih + b_hh) at every step, and no gradient reaches x, h0, the weights or gains."""
    m = ln_layer("RNN_TANH", 3, 1, dtype=np.float64)
    p = m.parameters()
    x = np.random.default_rng(0).standard_normal((5, 2, 3)) * 10
    y, h = m(x, np.full((1, 2, 1), 0.7))
    want = np.tanh(p["layer_norm_ih_bias_l0"] + p["layer_norm_hh_bias_l0"] + p["bias_ih_l0"] + p["bias_hh_l0"])
    np.testing.assert_allclose(y, np.broadcast_to(want, y.shape), rtol=1e-15, atol=0)
    m.zero_grad()
    dx, dh0 = m.backward(np.ones_like(y))
    assert not dx.any() and not dh0.any()
    for k in ("weight_ih_l0", "weight_hh_l0", "layer_norm_ih_weight_l0", "layer_norm_hh_weight_l0"):
        assert not m.grads[k].any(), k
    assert m.grads["layer_norm_ih_bias_l0"][0] == pytest.approx(float(np.sum(1 - y * y)))


# ---- engine vs the NumPy reference -------------------------------------------------------------

@pytest.mark.parametrize("mode", list(CLASSES))
@pytest.mark.parametrize("option", (None,) + COMBOS)
def test_engine_equals_reference_float64(mode, option):
    cfg = (5, 3, 2, 4, 2, True, [5, 2, 4], True)
    m = ln_layer(mode, 2, 4, 2, True, **({option: 0.3} if option else {}))
    check_against_reference(m, mode, cfg, np.float64)


def check_float32(m, mode, cfg):
    """The float32 engine against the float64 reference on the same (float32) values. LN
    divides by each row's standard deviation, so gradients reach |8| here and their float32
    rounding grows with them (the float32 rows also use FMA and vmath.h's exp/tanh): each
    array passes within 2e-5 of its own largest magnitude (measured worst: 3.5e-6, LSTM's dc0,
    where the float32 reference itself lands 2.1e-6 from the float64 one; plain LSTM: 3e-7);
    a wrong term is off by far more."""
    x, h0, c0, lengths, cot = inputs(mode, cfg, np.float32)
    m.zero_grad()
    out = run(m, x, h0, c0, lengths)
    d = backward(m, cot)
    c64 = lambda a: None if a is None else np.asarray(a, np.float64)  # noqa: E731
    L, bi = m.num_layers, m.bidirectional
    y, h, c, cache = reference.forward(mode, {k: c64(v) for k, v in m.state_dict().items()}, c64(x), c64(h0),
                                       c64(c0), lengths, L, bi)
    dx, dh0, dc0, grads = reference.backward(cache, c64(cot[0]), c64(cot[1]), c64(cot[2]) if mode == "LSTM" else None)
    worst = 0.0
    pairs = list(zip(out + d, (y, h, c, dx, dh0, dc0), ("y", "h_n", "c_n", "dx", "dh0", "dc0")))
    pairs += [(m.grads[k], g, k) for k, g in grads.items()]
    for got, want, name in pairs:
        if want is None:
            continue
        scale = max(1.0, float(np.abs(want).max()))
        err = float(np.abs(got - want).max()) / scale
        worst = max(worst, err)
        assert err < 2e-5, (name, err, scale)
    return worst


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("mode", list(CLASSES))
def test_engine_equals_reference_float32_on_every_path(plan_knobs, path, mode):
    plan_knobs(**PATHS[path])
    threads = fr.get_num_threads()
    fr.set_num_threads(2)
    try:
        for bi, lengths in ((False, None), (True, [9, 3, 7, 9, 1, 5, 8, 2])):
            cfg = (9, 8, 16, 16, 1, bi, lengths, True)
            m = ln_layer(mode, 16, 16, 1, bi, dtype=np.float32)
            print(f"float32 {mode} {path} bi={bi}: max |err|/scale {check_float32(m, mode, cfg):.2e}")
    finally:
        fr.set_num_threads(threads)


@pytest.mark.parametrize("mode", list(CLASSES))
def test_a_batch_of_one_runs_in_the_row_loop(plan_knobs, mode):
    """LN needs a row's G*H units at once, which no unit task has: plan.c refuses the unit split
    even when forced, and the layer asks with its variants flag."""
    plan_knobs(units=True)
    threads = fr.get_num_threads()
    fr.set_num_threads(2)
    try:
        m = ln_layer(mode, 3, 16, dtype=np.float32)
        assert _core.plan_units_mid(m._cell, 8, 1, 16, 1, False, False) is not None
        assert _core.plan_units_mid(m._cell, 8, 1, 16, 1, False, True) is None
        check_float32(m, mode, (8, 1, 3, 16, 1, False, None, True))
    finally:
        fr.set_num_threads(threads)


@pytest.mark.parametrize("mode", list(CLASSES))
def test_no_bias_and_eval_mode(mode):
    """Without b_ih/b_hh the LN biases remain; eval mode equals training mode (LN alone has
    nothing stochastic) and inference keeps nothing."""
    m = ln_layer(mode, 3, 5, 2, False, bias=False)
    check_against_reference(m, mode, (6, 4, 3, 5, 2, False, [6, 1, 3, 5], False), np.float64)
    x = np.random.default_rng(1).standard_normal((6, 4, 3))
    y_train = run(m, x)[0]
    m.eval()
    np.testing.assert_array_equal(run(m, x)[0], y_train)
    with fr.no_grad():
        np.testing.assert_array_equal(run(m, x)[0], y_train)


# ---- the layer --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", list(CLASSES))
def test_parameters_are_named_shaped_and_initialised(mode):
    m = build(mode, 3, 5, 2, True, layer_norm=True)
    G, H = m.kind.gates, 5
    for layer in range(2):
        for sfx in ("", "_reverse"):
            s = f"_l{layer}{sfx}"
            p = m.parameters()
            for side in ("ih", "hh"):
                np.testing.assert_array_equal(p[f"layer_norm_{side}_weight{s}"], np.ones(G * H))
                np.testing.assert_array_equal(p[f"layer_norm_{side}_bias{s}"], np.zeros(G * H))
            if mode == "LSTM":
                np.testing.assert_array_equal(p[f"layer_norm_c_weight{s}"], np.ones(H))
                np.testing.assert_array_equal(p[f"layer_norm_c_bias{s}"], np.zeros(H))
            else:
                assert f"layer_norm_c_weight{s}" not in p
            assert sorted(reference.ln_names(layer, 1 if sfx else 0, mode)) == sorted(
                k for k in p if k.startswith("layer_norm_") and k.endswith(s))
    assert "layer_norm=True" in repr(m)
    assert not any(k.startswith("layer_norm") for k in build(mode, 3, 5).parameters())


def test_nonsense_and_unsupported_combinations_are_refused():
    with pytest.raises(TypeError, match="layer_norm"):
        fr.LSTM(2, 3, layer_norm="yes")
    with pytest.raises(ValueError, match="layer_norm and peepholes"):
        fr.LSTM(2, 3, layer_norm=True, peepholes=True)
    with pytest.raises(ValueError, match="layer_norm and peepholes"):  # the cells too
        fr.LSTMCell(2, 3, layer_norm=True, peepholes=True)
    with pytest.raises(ValueError, match="peep"):
        reference.forward("LSTM", dict(build("LSTM", 2, 3, layer_norm=True).state_dict(),
                                       weight_ch_l0=np.zeros(9)), np.zeros((2, 1, 2)))
    H, T, B = 3, 2, 1
    cell = fr.LSTM(1, H)._cell
    z = lambda *s: np.zeros(s)  # noqa: E731
    args = dict(b0=0, b1=B, reverse=False, lengths=None, h0=z(B, H), c0=z(B, H), w_hh=z(4 * H, H), b_ih=None,
                b_hh=None, y=z(T, B, H), y_col=0, h_n=z(B, H), c_n=z(B, H), act=z(T, B, 4 * H), hprev=z(T, B, H),
                aux=z(T, B, 2 * H))
    with pytest.raises(ValueError, match="ln"):
        _core.recur(cell, ln=z(4 * 4 * H + 2 * H), peep=z(3 * H), **args)
    with pytest.raises(ValueError, match="ln"):
        _core.recur(cell, ln=z(4 * 4 * H), lnsave=z(T, B, 8 * H + 4), **args)  # wrong size
    with pytest.raises(ValueError, match="lnsave"):
        _core.recur(cell, ln=z(4 * 4 * H + 2 * H), **args)  # training needs lnsave


def test_layer_norm_survives_save_and_load(tmp_path):
    m = fr.Sequential([fr.GRU(2, 6, bidirectional=True, layer_norm=True, recurrent_dropout=0.2),
                       fr.LSTM(12, 4, layer_norm=True), fr.LastStep(), fr.Dense(1)], seed=0)
    m.compile("mse", fr.Adam(0.01))
    x = np.random.default_rng(0).standard_normal((8, 5, 2)).astype(np.float32)
    m.fit(x, x[:, -1, :1], epochs=2, verbose=0)
    g = m.layers[0].layer.parameters()["layer_norm_hh_weight_l0_reverse"]
    assert np.abs(g - 1).max() > 1e-4  # the gains trained
    m.save(tmp_path / "ln.frnn")
    m2 = fr.load(tmp_path / "ln.frnn")
    assert m2.layers[0].layer.layer_norm and m2.layers[1].layer.layer_norm
    assert m2.get_config() == m.get_config()
    np.testing.assert_array_equal(m2.predict(x), m.predict(x))


def test_converters_refuse_layer_norm_layers():
    m = fr.Sequential([fr.LSTM(2, 3, layer_norm=True), fr.LastStep(), fr.Dense(1)], seed=0)
    with pytest.raises(ValueError, match="layer_norm=True has no PyTorch equivalent"):
        fr.torch_state_dict(m)
    with pytest.raises(ValueError, match="layer_norm=True has no PyTorch equivalent"):
        fr.load_torch_state_dict(m, {})
    with pytest.raises(ValueError, match="layer_norm=True has no Keras equivalent"):
        fr.get_keras_weights(m)
    with pytest.raises(ValueError, match="layer_norm=True has no Keras equivalent"):
        fr.set_keras_weights(m, [])
    pytest.importorskip("onnx")
    with pytest.raises(ValueError, match="layer_norm=True has no ONNX operator"):
        fr.to_onnx(m)


# ---- learning --------------------------------------------------------------------------------

def _sum_fit(layer_norm, seed):
    """A 2-layer GRU sums one of 8 input features over 30 steps (regression)."""
    rng = np.random.default_rng(100 + seed)
    X = rng.standard_normal((256, 30, 8)).astype(np.float32)
    y = (X[:, :, 0].sum(1, keepdims=True) / np.sqrt(30)).astype(np.float32)
    m = fr.Sequential([fr.GRU(8, 32, num_layers=2, layer_norm=layer_norm), fr.LastStep(), fr.Dense(1)],
                      seed=seed)
    m.compile("mse", fr.Adam(0.01))
    return m.fit(X, y, epochs=20, batch_size=32, verbose=0).history["loss"]


def test_a_layer_norm_gru_trains_comparably():
    """Honest, not a win. Measured (3 seeds, final / first epoch's loss): plain GRU 0.005 from
    0.87-0.96; layer_norm GRU 0.018-0.032 from 0.96-1.07. On every small task tried (sign of the
    first input over 30-60 steps, sums over 30-50 steps, 2-4 layers, inputs scaled x1 or x30)
    plain trained as fast or faster; a layer-normalised Elman RNN cannot learn a sum at all
    (LN_hh(W_hh h) drops the scale of h, its only memory), and with D = 1 LN_ih(W_ih x) keeps
    only the sign of x. So this checks that LN trains (every seed's loss falls twentyfold) and
    ends near the plain model, not that it helps."""
    ln = [_sum_fit(True, s) for s in range(3)]
    plain = [_sum_fit(False, s) for s in range(3)]
    ln_end = float(np.mean([h[-1] for h in ln]))
    plain_end = float(np.mean([h[-1] for h in plain]))
    print(f"2-layer GRU sum task, final loss: layer_norm {ln_end:.4f}, plain {plain_end:.4f}")
    for h in ln:
        assert h[-1] < h[0] / 20, h
    assert ln_end < plain_end + 0.06, (ln_end, plain_end)


# ---- PyTorch's layer_norm and autograd, where torch is installed ------------------------------

def _torch_ln_layer(torch, mode, p, x, h0, c0):
    """The same recurrence written with torch.nn.functional.layer_norm (eps 1e-5, biased
    variance) and left to autograd: an implementation that shares nothing with ours."""
    F = torch.nn.functional
    GH = p["weight_ih_l0"].shape[0]
    H = GH // {"LSTM": 4, "GRU": 3, "RNN_TANH": 1}[mode]
    xw = F.layer_norm(x @ p["weight_ih_l0"].T, (GH,), p["layer_norm_ih_weight_l0"], p["layer_norm_ih_bias_l0"],
                      1e-5) + p["bias_ih_l0"]
    h, c, out = h0, c0, []
    for t in range(x.shape[0]):
        hw = F.layer_norm(h @ p["weight_hh_l0"].T, (GH,), p["layer_norm_hh_weight_l0"],
                          p["layer_norm_hh_bias_l0"], 1e-5) + p["bias_hh_l0"]
        if mode == "LSTM":
            i, f, g, o = (xw[t] + hw).split(H, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(F.layer_norm(c, (H,), p["layer_norm_c_weight_l0"],
                                                           p["layer_norm_c_bias_l0"], 1e-5))
        elif mode == "GRU":
            xr, xz, xn = xw[t].split(H, 1)
            hr, hz, hn = hw.split(H, 1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            h = (1 - z) * torch.tanh(xn + r * hn) + z * h
        else:
            h = torch.tanh(xw[t] + hw)
        out.append(h)
    return torch.stack(out), h, c


@pytest.mark.parametrize("mode", list(CLASSES))
def test_equals_pytorch_layer_norm_and_autograd(mode):
    torch = pytest.importorskip("torch")
    T, B, D, H = 6, 3, 4, 5
    m = ln_layer(mode, D, H)
    x, h0, c0, _, cot = inputs(mode, (T, B, D, H, 1, False, None, True))
    y, h, c = run(m, x, h0, c0)
    m.zero_grad()
    dx, dh0, dc0 = backward(m, cot)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in m.parameters().items()}
    tx, th0 = torch.tensor(x, requires_grad=True), torch.tensor(h0[0], requires_grad=True)
    tc0 = torch.tensor(c0[0], requires_grad=True) if c0 is not None else None
    ty, tyh, tyc = _torch_ln_layer(torch, mode, tp, tx, th0, tc0)
    loss = (ty * torch.tensor(cot[0])).sum() + (tyh * torch.tensor(cot[1][0])).sum()
    if tyc is not None:
        loss = loss + (tyc * torch.tensor(cot[2][0])).sum()
    loss.backward()
    worst = max(float(np.abs(y - ty.detach().numpy()).max()), float(np.abs(h[0] - tyh.detach().numpy()).max()))
    pairs = [(dx, tx.grad), (dh0[0], th0.grad)] + ([(dc0[0], tc0.grad)] if tc0 is not None else [])
    pairs += [(m.grads[k], tp[k].grad) for k in tp]
    for got, want in pairs:
        worst = max(worst, float(np.abs(got - want.numpy()).max()))
    print(f"layer_norm {mode} vs PyTorch float64: max |diff| {worst:.2e}")
    assert worst < 1e-12
