"""Cell variants fused in the C loops: recurrent (variational) dropout, zoneout, weight dropout.

Each option is checked three ways: float64 finite differences of every gradient of the engine
with the masks held fixed (the layer's generator re-seeded before each call, so every call
draws the same masks); the engine against fastrnn.reference given the masks the layer drew
(float64 and float32, on every engine path); and the layer's behaviour (eval mode deterministic
and equal to the expectation, masks from the seeded generator, errors, save/load).
"""
import numpy as np
import pytest

import fastrnn as fr
from fastrnn import _core, reference
from fd import assert_grads_match, numeric_grad
from tolerances import tolerance

CLASSES = {"RNN_TANH": (fr.RNN, {"nonlinearity": "tanh"}), "LSTM": (fr.LSTM, {}), "GRU": (fr.GRU, {})}
OPTIONS = ("recurrent_dropout", "zoneout", "weight_dropout")

# (T, B, D, H, num_layers, bidirectional, lengths, bias)
CONFIGS = [
    (1, 1, 1, 1, 1, False, None, True),
    (4, 3, 2, 3, 1, True, [4, 1, 3], True),
    (4, 3, 3, 2, 2, True, [2, 4, 3], True),
    (3, 2, 1, 2, 2, False, [3, 1], False),
]
CFG_IDS = dict(ids=lambda c: f"T{c[0]}B{c[1]}D{c[2]}H{c[3]}L{c[4]}{'bi' if c[5] else ''}"
               f"{'ragged' if c[6] else ''}{'' if c[7] else 'nobias'}")
EPS = 1e-6
MASK_SEED = 1234


def build(mode, D, H, L=1, bi=False, bias=True, dtype=np.float64, seed=0, **opts):
    cls, kw = CLASSES[mode]
    return cls(D, H, num_layers=L, bidirectional=bi, bias=bias, dtype=dtype, seed=seed, **kw, **opts)


def run(m, x, h0=None, c0=None, lengths=None):
    if isinstance(m, fr.LSTM):
        y, (h, c) = m(x, None if h0 is None else (h0, c0), lengths=lengths)
        return y, h, c
    y, h = m(x, h0, lengths=lengths)
    return y, h, None


def fixed(m):
    """Every call of m draws the same masks from here on (FD needs a fixed function)."""
    m._rng = np.random.default_rng(MASK_SEED)


def inputs(mode, cfg, dtype=np.float64, seed=42):
    T, B, D, H, L, bi, lengths, bias = cfg
    rng = np.random.default_rng(seed)
    S = (L * (2 if bi else 1), B, H)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    h0 = (rng.standard_normal(S) * 0.5).astype(dtype)
    c0 = (rng.standard_normal(S) * 0.5).astype(dtype) if mode == "LSTM" else None
    lengths = None if lengths is None else np.array(lengths)
    cot = [rng.standard_normal((T, B, S[0] // L * H)).astype(dtype), rng.standard_normal(S).astype(dtype),
           rng.standard_normal(S).astype(dtype)]
    if lengths is not None:
        cot[0][np.arange(T)[:, None] >= lengths[None, :]] = 1e3  # padding must not matter
    return x, h0, c0, lengths, cot


def backward(m, cot):
    if isinstance(m, fr.LSTM):
        dx, (dh0, dc0) = m.backward(cot[0], (cot[1], cot[2]))
        return dx, dh0, dc0
    dx, dh0 = m.backward(cot[0], cot[1])
    return dx, dh0, None


def opts_for(option, p=0.5):
    return {option: p}


# ---- finite differences ----------------------------------------------------------------------

@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("mode", list(CLASSES))
@pytest.mark.parametrize("cfg", CONFIGS, **CFG_IDS)
def test_gradients_match_finite_differences_with_fixed_masks(option, mode, cfg):
    T, B, D, H, L, bi, _, bias = cfg
    fd_check(build(mode, D, H, L, bi, bias, **opts_for(option)), mode, cfg, f"{option} {mode}")


def fd_check(m, mode, cfg, label):
    """Every gradient of layer m (x, the initial states, every parameter) against central
    differences of a random projection of its outputs, the masks held fixed (`fixed`)."""
    x, h0, c0, lengths, cot = inputs(mode, cfg)

    def loss():
        fixed(m)
        y, h, c = run(m, x, h0, c0, lengths)
        return np.sum(y * cot[0]) + np.sum(h * cot[1]) + (np.sum(c * cot[2]) if c is not None else 0.0)

    m.zero_grad()
    loss()
    dx, dh0, dc0 = backward(m, cot)
    checks = [("x", dx, x), ("h0", dh0, h0)] + ([("c0", dc0, c0)] if c0 is not None else [])
    checks += [(k, m.grads[k], v) for k, v in m.parameters().items()]
    return assert_grads_match(loss, checks, EPS, label)


# ---- engine vs the NumPy reference -------------------------------------------------------------

def reference_run(m, mode, x, h0, c0, lengths, masks, cot):
    L, bi = m.num_layers, m.bidirectional
    y, h, c, cache = reference.forward(mode, m.state_dict(), x, h0, c0, lengths, L, bi, masks=masks)
    dx, dh0, dc0, grads = reference.backward(cache, cot[0], cot[1], cot[2] if mode == "LSTM" else None)
    return (y, h, c), (dx, dh0, dc0), grads


def check_against_reference(m, mode, cfg, dtype):
    x, h0, c0, lengths, cot = inputs(mode, cfg, dtype)
    fixed(m)
    masks = m._draw_masks(x.shape[0], x.shape[1])
    fixed(m)
    m.zero_grad()
    out = run(m, x, h0, c0, lengths)
    dx = backward(m, cot)
    want_out, want_d, want_g = reference_run(m, mode, x, h0, c0, lengths, masks, cot)
    tf, tg = tolerance(dtype, "forward"), tolerance(dtype, "grad")
    for got, want, name in zip(out + dx, want_out + want_d, ("y", "h_n", "c_n", "dx", "dh0", "dc0")):
        if want is not None:
            np.testing.assert_allclose(got, want, err_msg=name, **(tf if name in ("y", "h_n", "c_n") else tg))
    for k, g in want_g.items():
        np.testing.assert_allclose(m.grads[k], g, err_msg=k, **tg)
    return masks


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("mode", list(CLASSES))
def test_engine_equals_reference_float64(option, mode):
    cfg = (5, 3, 2, 4, 2, True, [5, 2, 4], True)
    m = build(mode, 2, 4, 2, True, **opts_for(option, 0.3))
    masks = check_against_reference(m, mode, cfg, np.float64)
    # the masks are real masks: some units dropped or zoned out, some not
    key = {"recurrent_dropout": "hmask", "zoneout": "zh", "weight_dropout": "wmask"}[option]
    vals = np.concatenate([mk[key].ravel() for mk in masks])
    assert (vals == 0).any() and (vals != 0).any()


PATHS = {  # plan.c's choices, forced: every path the plain layer can take
    "fused": dict(fused=True, dx_in_loop=False),
    "unfused": dict(fused=False, dx_in_loop=False),
    "dx_in_loop": dict(fused=True, dx_in_loop=True),
    "row_split": dict(fused=True, min_parallel_work=1),
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("mode", list(CLASSES))
def test_engine_equals_reference_float32_on_every_path(plan_knobs, path, option, mode):
    """float32 at a shape where the packed micro-kernels run (B >= 4, T >= 4), one direction (dx
    in the loop needs it) and two (the reverse loop with ragged lengths)."""
    plan_knobs(**PATHS[path])
    threads = fr.get_num_threads()
    fr.set_num_threads(2)
    try:
        for bi, lengths in ((False, None), (True, [9, 3, 7, 9, 1, 5, 8, 2])):
            cfg = (9, 8, 16, 16, 1, bi, lengths, True)
            m = build(mode, 16, 16, 1, bi, dtype=np.float32, **opts_for(option, 0.3))
            check_against_reference(m, mode, cfg, np.float32)
    finally:
        fr.set_num_threads(threads)


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("mode", list(CLASSES))
def test_a_batch_of_one_leaves_the_unit_split_to_plain_layers(plan_knobs, option, mode):
    """plan.c refuses the unit-split path for recurrent dropout and zoneout; weight dropout
    runs there (it only changes W_hh)."""
    plan_knobs(units=True)
    threads = fr.get_num_threads()
    fr.set_num_threads(2)
    try:
        variants = option != "weight_dropout"
        m = build(mode, 3, 16, 1, False, dtype=np.float32, **opts_for(option, 0.3))
        assert _core.plan_units_mid(m._cell, 8, 1, 16, 1, False, False) is not None
        assert (_core.plan_units_mid(m._cell, 8, 1, 16, 1, False, variants) is None) == variants
        check_against_reference(m, mode, (8, 1, 3, 16, 1, False, None, True), np.float32)
    finally:
        fr.set_num_threads(threads)


# ---- layer behaviour ---------------------------------------------------------------------------

@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("mode", list(CLASSES))
def test_eval_mode_is_deterministic_and_the_expectation(option, mode):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 2))
    m = build(mode, 2, 5, 2, True, **opts_for(option, 0.4)).eval()
    plain = build(mode, 2, 5, 2, True).eval()
    plain.load_state_dict(m.state_dict())
    a, b = run(m, x), run(m, x)
    for u, v in zip(a, b):
        if u is not None:
            np.testing.assert_array_equal(u, v)
    if option == "zoneout":
        # eval keeps p of the previous state: h = p h_prev + (1-p) h_cell (Krueger et al.)
        T, B, H = 6, 3, 5
        z = np.full((T, B, H), 0.4)
        masks = [{"zh": z, "zc": z if mode == "LSTM" else None}] * 4
        want = reference.forward(mode, m.state_dict(), x, num_layers=2, bidirectional=True, masks=masks)
        np.testing.assert_allclose(a[0], want[0], **tolerance(np.float64, "forward"))
        assert not np.allclose(a[0], run(plain, x)[0])
    else:  # dropout's expectation is the plain layer (inverted dropout scales in training)
        for u, v in zip(a, run(plain, x)):
            if u is not None:
                np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("option", OPTIONS)
def test_training_masks_come_from_the_seeded_generator_once_per_call(option):
    x = np.random.default_rng(1).standard_normal((7, 4, 3)).astype(np.float32)
    m1, m2 = (build("LSTM", 3, 8, dtype=np.float32, seed=5, **opts_for(option, 0.3)) for _ in range(2))
    y1, y2 = run(m1, x)[0], run(m2, x)[0]
    np.testing.assert_array_equal(y1, y2)            # same seed, same masks
    assert not np.array_equal(run(m1, x)[0], y1)      # a new call draws new masks
    plain = build("LSTM", 3, 8, dtype=np.float32, seed=5)
    assert not np.allclose(y1, run(plain, x)[0])      # and they do something


def test_recurrent_dropout_mask_is_one_per_sequence():
    """A zero of the mask removes that unit of h from every step's W_hh product of that row:
    with all of a row's units dropped, the row runs as if W_hh were zero."""
    m = build("GRU", 2, 4, recurrent_dropout=0.5)
    x = np.random.default_rng(3).standard_normal((5, 2, 2))
    fixed(m)
    (mk,) = m._draw_masks(5, 2)
    fixed(m)
    y = run(m, x)[0]
    assert set(np.unique(mk["hmask"])) <= {0.0, 2.0}
    mk = {"hmask": np.array([[0.0] * 4, [2.0] * 4])}
    y, _, _, _ = reference.forward("GRU", m.state_dict(), x, masks=[mk])
    w0 = dict(m.state_dict(), weight_hh_l0=np.zeros((12, 4)))
    y0, _, _, _ = reference.forward("GRU", w0, x)
    np.testing.assert_allclose(y[:, 0], y0[:, 0], rtol=0, atol=1e-15)


@pytest.mark.parametrize("kw,match", [
    ({"recurrent_dropout": 1.0}, "recurrent_dropout"), ({"recurrent_dropout": -0.1}, "recurrent_dropout"),
    ({"zoneout": 1.0}, "zoneout"), ({"zoneout": float("nan")}, "zoneout"),
    ({"weight_dropout": 1.5}, "weight_dropout"), ({"weight_dropout": -1}, "weight_dropout"),
])
def test_nonsense_values_are_refused(kw, match):
    for mode in CLASSES:
        with pytest.raises(ValueError, match=match):
            build(mode, 2, 3, **kw)


def test_bridge_refuses_a_cell_state_zoneout_without_a_cell_state():
    T, B, H = 2, 1, 3
    z = np.zeros((T, B, H))
    args = dict(b0=0, b1=B, reverse=False, lengths=None, h0=np.zeros((B, H)), c0=None,
                w_hh=np.zeros((3 * H, H)), b_ih=None, b_hh=None, y=np.empty((T, B, H)), y_col=0,
                h_n=np.empty((B, H)), c_n=None, act=np.zeros((T, B, 3 * H)), hprev=None, aux=None)
    with pytest.raises(ValueError, match="zc"):
        _core.recur(fr.GRU(1, H)._cell, zh=z, zc=z, **args)
    with pytest.raises(ValueError, match="hdrop"):
        _core.recur(fr.GRU(1, H)._cell, hmask=np.ones((B, H)), hdrop=np.empty((T, B, H)), **args)


@pytest.mark.parametrize("option", OPTIONS)
def test_options_survive_save_and_load(tmp_path, option):
    m = fr.Sequential([fr.LSTM(2, 6, bidirectional=True, **opts_for(option, 0.25)), fr.LastStep(), fr.Dense(1)],
                      seed=0)
    m.compile("mse", fr.Adam(0.01))
    x = np.random.default_rng(0).standard_normal((8, 5, 2)).astype(np.float32)
    m.fit(x, x[:, -1, :1], epochs=1, verbose=0)
    m.save(tmp_path / "v.frnn")
    m2 = fr.load(tmp_path / "v.frnn")
    assert getattr(m2.layers[0].layer, option) == 0.25
    assert m2.get_config() == m.get_config()
    np.testing.assert_array_equal(m2.predict(x), m.predict(x))


# ---- learning: each option regularises an overfitting model ------------------------------------

def _overfit_data(n, seed, T=30):
    """A noisy sum over 30 steps of one input: with 40 training sequences a GRU of 64 units
    fits the noise, through W_hh (W_ih is 3*64 x 1)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, 1)).astype(np.float32)
    y = X[:, :, 0].sum(1, keepdims=True) / np.float32(np.sqrt(T)) + np.float32(0.5) * rng.standard_normal((n, 1))
    return X, y.astype(np.float32)


def _fit_and_score(**opts):
    Xtr, ytr = _overfit_data(40, 0)
    Xva, yva = _overfit_data(400, 1)
    train, val = [], []
    for seed in range(4):
        m = fr.Sequential([fr.GRU(1, 64, **opts), fr.LastStep(), fr.Dense(1)], seed=seed)
        m.compile("mse", fr.Adam(0.01))
        m.fit(Xtr, ytr, epochs=60, batch_size=10, verbose=0)
        train.append(m.evaluate(Xtr, ytr)["loss"])
        val.append(m.evaluate(Xva, yva)["loss"])
    return float(np.mean(train)), float(np.mean(val))


@pytest.fixture(scope="module")
def plain_overfit():
    return _fit_and_score()


@pytest.mark.parametrize("option,p", [("recurrent_dropout", 0.5), ("weight_dropout", 0.5), ("zoneout", 0.4)])
def test_option_reduces_the_validation_gap_of_an_overfitting_model(plain_overfit, option, p):
    """Measured (4 seeds): plain train 0.02 / val 0.50; recurrent dropout 0.16 / 0.38, weight
    dropout 0.17 / 0.45, zoneout 0.14 / 0.38. The option must cut the gap by a third and lower
    the validation loss itself (a model that merely fits worse would not)."""
    tr0, va0 = plain_overfit
    assert va0 - tr0 > 0.3  # the plain model does overfit
    tr, va = _fit_and_score(**{option: p})
    assert va - tr < (2 / 3) * (va0 - tr0), (tr, va, tr0, va0)
    assert va < 0.95 * va0, (va, va0)


def test_zoneout_layers_do_not_convert_and_dropout_variants_do():
    """Zoneout's inference differs from the plain layer's, so no PyTorch or ONNX layer equals
    it; the dropout variants are the plain layer at inference and convert."""
    z = fr.Sequential([fr.GRU(2, 3, zoneout=0.2), fr.LastStep(), fr.Dense(1)], seed=0)
    with pytest.raises(ValueError, match="zoneout"):
        fr.torch_state_dict(z)
    pytest.importorskip("onnx")
    with pytest.raises(ValueError, match="zoneout"):
        fr.to_onnx(z)
    d = fr.Sequential([fr.GRU(2, 3, recurrent_dropout=0.2, weight_dropout=0.2), fr.LastStep(), fr.Dense(1)],
                      seed=0)
    assert set(fr.torch_state_dict(d)) >= {"0.weight_hh_l0"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bernoulli_masks_have_their_rate_and_depend_only_on_the_seed(dtype):
    a, b, c = (np.empty((50, 40, 30), dtype) for _ in range(3))
    _core.bernoulli(a, 0.3, 2.0, 7)
    _core.bernoulli(b, 0.3, 2.0, 7)
    _core.bernoulli(c, 0.3, 2.0, 8)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0.0, 2.0}
    n = a.size  # 60000 draws: the rate within 5 standard deviations
    assert abs((a == 2).mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / n)
    # another seed, another mask, uncorrelated with the first (and with its own neighbours)
    assert abs(np.corrcoef(a.ravel(), c.ravel())[0, 1]) < 0.03
    assert abs(np.corrcoef(a.ravel()[:-1], a.ravel()[1:])[0, 1]) < 0.03
    with pytest.raises(ValueError, match="p must be"):
        _core.bernoulli(a, 1.5, 1.0, 0)


# ---- peepholes (LSTM) ---------------------------------------------------------------------------

def peephole_lstm(D, H, L=1, bi=False, bias=True, dtype=np.float64, seed=0, **opts):
    m = fr.LSTM(D, H, num_layers=L, bidirectional=bi, bias=bias, dtype=dtype, seed=seed, peepholes=True, **opts)
    rng = np.random.default_rng(seed + 100)
    for k, v in m.parameters().items():  # peepholes large enough to matter
        if k.startswith("weight_ch"):
            v[...] = rng.uniform(-1, 1, v.shape)
    return m


@pytest.mark.parametrize("cfg", CONFIGS, **CFG_IDS)
def test_peephole_gradients_match_finite_differences(cfg):
    T, B, D, H, L, bi, _, bias = cfg
    m = peephole_lstm(D, H, L, bi, bias)
    assert sum(k.startswith("weight_ch") for k in m.parameters()) == L * (2 if bi else 1)
    x, h0, c0, lengths, cot = inputs("LSTM", cfg)

    def loss():
        y, h, c = run(m, x, h0, c0, lengths)
        return np.sum(y * cot[0]) + np.sum(h * cot[1]) + np.sum(c * cot[2])

    m.zero_grad()
    loss()
    dx, dh0, dc0 = backward(m, cot)
    checks = [("x", dx, x), ("h0", dh0, h0), ("c0", dc0, c0)]
    checks += [(k, m.grads[k], v) for k, v in m.parameters().items()]
    assert_grads_match(loss, checks, EPS, "peepholes")


def test_peepholes_with_every_other_variant_match_finite_differences():
    cfg = (4, 3, 2, 3, 2, True, [4, 2, 3], True)
    m = peephole_lstm(2, 3, 2, True, recurrent_dropout=0.4, zoneout=0.3, weight_dropout=0.3)
    x, h0, c0, lengths, cot = inputs("LSTM", cfg)

    def loss():
        fixed(m)
        y, h, c = run(m, x, h0, c0, lengths)
        return np.sum(y * cot[0]) + np.sum(h * cot[1]) + np.sum(c * cot[2])

    m.zero_grad()
    loss()
    dx, dh0, dc0 = backward(m, cot)
    for name, analytic, arr in [("x", dx, x), ("h0", dh0, h0), ("c0", dc0, c0)] + \
            [(k, m.grads[k], v) for k, v in m.parameters().items()]:
        np.testing.assert_allclose(analytic, numeric_grad(loss, arr, EPS), rtol=1e-6, atol=1e-8, err_msg=name)
    check_against_reference(m, "LSTM", cfg, np.float64)


def test_peephole_engine_equals_reference_float64():
    cfg = (5, 3, 2, 4, 2, True, [5, 2, 4], True)
    check_against_reference(peephole_lstm(2, 4, 2, True), "LSTM", cfg, np.float64)
    # and the peepholes matter: zeroing them changes the outputs
    m = peephole_lstm(2, 4, 2, True)
    x = inputs("LSTM", cfg)[0]
    y = run(m, x)[0]
    for k, v in m.parameters().items():
        if k.startswith("weight_ch"):
            v[...] = 0
    assert not np.allclose(run(m, x)[0], y)


@pytest.mark.parametrize("path", list(PATHS) + ["units"])
def test_peephole_engine_equals_reference_float32_on_every_path(plan_knobs, path):
    plan_knobs(**(dict(units=True) if path == "units" else PATHS[path]))
    threads = fr.get_num_threads()
    fr.set_num_threads(2)
    try:
        if path == "units":  # a batch of one split by hidden units (plan.c allows peepholes there)
            m = peephole_lstm(3, 16, dtype=np.float32)
            assert _core.plan_units_mid(m._cell, 8, 1, 16, 1, False, False) is not None
            check_against_reference(m, "LSTM", (8, 1, 3, 16, 1, False, None, True), np.float32)
            return
        for bi, lengths in ((False, None), (True, [9, 3, 7, 9, 1, 5, 8, 2])):
            m = peephole_lstm(16, 19, 1, bi, dtype=np.float32)  # H % 8 != 0: the masked tail too
            check_against_reference(m, "LSTM", (9, 8, 16, 19, 1, bi, lengths, True), np.float32)
    finally:
        fr.set_num_threads(threads)


def test_peepholes_are_an_lstm_option_and_survive_save_load(tmp_path):
    with pytest.raises(ValueError, match="peepholes"):
        fr.GRU(2, 3, peepholes=True)
    with pytest.raises(TypeError, match="peepholes"):
        fr.LSTM(2, 3, peepholes="yes")
    m = fr.Sequential([fr.LSTM(2, 5, num_layers=2, peepholes=True), fr.LastStep(), fr.Dense(1)], seed=0)
    m.compile("mse", fr.Adam(0.01))
    x = np.random.default_rng(0).standard_normal((6, 4, 2)).astype(np.float32)
    m.fit(x, x[:, -1, :1], epochs=2, verbose=0)
    m.save(tmp_path / "p.frnn")
    m2 = fr.load(tmp_path / "p.frnn")
    assert m2.layers[0].layer.peepholes and "weight_ch_l1" in m2.layers[0].layer.parameters()
    np.testing.assert_array_equal(m2.predict(x), m.predict(x))
    with pytest.raises(ValueError, match="peephole"):
        fr.torch_state_dict(m)


def test_peepholes_equal_onnxruntimes_lstm_on_a_hand_built_graph():
    """ONNX's LSTM operator with P, built by hand (gate blocks i, o, f, c; P = p_i, p_o, p_f),
    against the engine layer with the same weights: ONNX's peephole semantics."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    T, B, D, H = 6, 3, 4, 5
    m = peephole_lstm(D, H, 1, True, dtype=np.float32)
    p = m.parameters()
    to_onnx_order = lambda a: np.concatenate([a[0:H], a[3 * H:4 * H], a[H:2 * H], a[2 * H:3 * H]])  # noqa: E731
    W, R, Bs, P = [], [], [], []
    for sfx in ("_l0", "_l0_reverse"):
        W.append(to_onnx_order(p["weight_ih" + sfx]))
        R.append(to_onnx_order(p["weight_hh" + sfx]))
        Bs.append(np.concatenate([to_onnx_order(p["bias_ih" + sfx]), to_onnx_order(p["bias_hh" + sfx])]))
        pc = p["weight_ch" + sfx]
        P.append(np.concatenate([pc[0:H], pc[2 * H:3 * H], pc[H:2 * H]]))
    inits = [numpy_helper.from_array(np.stack(a).astype(np.float32), n) for a, n in
             ((W, "W"), (R, "R"), (Bs, "B"), (P, "P"))]
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "", "", "P"], ["Y", "Y_h", "Y_c"],
                            hidden_size=H, direction="bidirectional")
    graph = helper.make_graph([node], "peep", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, D])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in
                               (("Y", [T, 2, B, H]), ("Y_h", [2, B, H]), ("Y_c", [2, B, H]))],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((T, B, D)).astype(np.float32)
    Y, Y_h, Y_c = sess.run(None, {"X": x})
    y, (h, c) = m.eval()(x)
    np.testing.assert_allclose(y, Y.transpose(0, 2, 1, 3).reshape(T, B, 2 * H), rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(h, Y_h, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(c, Y_c, rtol=1e-5, atol=2e-6)


def test_peephole_models_go_to_onnx_and_back():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    m = fr.Sequential([fr.LSTM(3, 4, num_layers=2, bidirectional=True, peepholes=True), fr.LastStep(),
                       fr.Dense(2)], seed=0)
    for k, v in m.layers[0].layer.parameters().items():
        if k.startswith("weight_ch"):
            v[...] = np.random.default_rng(1).uniform(-1, 1, v.shape)
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    proto = fr.to_onnx(m)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0], m.predict(x),
                               rtol=1e-5, atol=2e-6)
    back = fr.from_onnx(proto)
    assert back.layers[0].layer.peepholes
    np.testing.assert_allclose(back.predict(x), m.predict(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("split", [False, True])
def test_peephole_cell_steps_equal_the_layer_and_finite_differences(plan_knobs, split):
    """LSTMCell(peepholes=True) on both cell-step paths (fr_recur with T=1, and the unit halves
    of fr_cell_units when split): T steps equal the layer, and BPTT through the tape matches
    finite differences."""
    threads = fr.get_num_threads()
    fr.set_num_threads(2)
    plan_knobs(cell_split_work=1 if split else 1 << 62)
    try:
        T, B, D, H = 4, 2, 3, 5
        cell = fr.LSTMCell(D, H, dtype=np.float64, seed=1, peepholes=True)
        layer = fr.LSTM(D, H, dtype=np.float64, seed=1, peepholes=True)
        rng = np.random.default_rng(2)
        cell.parameters()["weight_ch"][...] = rng.uniform(-1, 1, 3 * H)
        layer.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
        x = rng.standard_normal((T, B, D))
        h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
        gh, gc = rng.standard_normal((B, H)), rng.standard_normal((B, H))

        def unroll():
            h, c = h0, c0
            for t in range(T):
                h, c = cell(x[t], (h, c))
            return h, c

        h, c = unroll()
        _, (hl, cl) = layer(x, (h0[None], c0[None]))
        np.testing.assert_allclose(h, hl[0], rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(c, cl[0], rtol=1e-13, atol=1e-14)
        cell.zero_grad()
        dh, dc = gh, gc
        for _ in range(T):
            _, (dh, dc) = cell.backward((dh, dc))
        cell.eval()

        def f():
            h, c = unroll()
            return np.sum(h * gh) + np.sum(c * gc)

        np.testing.assert_allclose(dh, numeric_grad(f, h0, EPS), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(dc, numeric_grad(f, c0, EPS), rtol=1e-6, atol=1e-8)
        for k, p in cell.parameters().items():
            np.testing.assert_allclose(cell.grads[k], numeric_grad(f, p, EPS), rtol=1e-6, atol=1e-8, err_msg=k)
    finally:
        fr.set_num_threads(threads)


def test_a_peephole_lstm_trains_and_its_peepholes_learn():
    """Greff et al. (2017) found peepholes rarely help, so this checks that they train: the loss
    of a next-step sine model falls tenfold and the optimizer moves weight_ch (its gradient
    reaches the model's update)."""
    rng = np.random.default_rng(0)
    phase = rng.uniform(0, 2 * np.pi, 64)
    s = np.sin(phase[:, None] + 0.3 * np.arange(21))[..., None].astype(np.float32)
    m = fr.Sequential([fr.LSTM(1, 8, peepholes=True), fr.Dense(1)], seed=0)
    m.compile("mse", fr.Adam(0.02))
    before = {k: v.copy() for k, v in m.layers[0].layer.parameters().items() if k.startswith("weight_ch")}
    h = m.fit(s[:, :-1], s[:, 1:], epochs=30, batch_size=16, verbose=0).history["loss"]
    assert h[-1] < h[0] / 10, h
    for k, v in before.items():
        assert np.abs(m.layers[0].layer.parameters()[k] - v).max() > 1e-2


def test_keras_configs_carry_recurrent_dropout():
    """Keras's recurrent_dropout is ours (one mask per sample on h_{t-1}); the exported config
    says so, and the weights are the plain layer's."""
    m = fr.Sequential([fr.GRU(2, 3, recurrent_dropout=0.25, bidirectional=True), fr.LastStep(), fr.Dense(1)],
                      seed=0)
    plain = fr.Sequential([fr.GRU(2, 3, bidirectional=True), fr.LastStep(), fr.Dense(1)], seed=0)
    weights, configs = fr.get_keras_weights(m, with_config=True)
    assert configs[0]["config"]["layer"]["config"]["recurrent_dropout"] == 0.25
    for a, b in zip(weights, fr.get_keras_weights(plain)):
        np.testing.assert_array_equal(a, b)


def test_backward_takes_the_forwards_path_whatever_changes_in_between(plan_knobs):
    """A batch of one with zoneout runs in the row loop (plan.c); switching zoneout off between
    forward and backward must not send backward to the unit split."""
    plan_knobs(units=True)
    threads = fr.get_num_threads()
    fr.set_num_threads(2)
    try:
        m = build("LSTM", 3, 16, dtype=np.float64, zoneout=0.3)
        x, h0, c0, lengths, cot = inputs("LSTM", (8, 1, 3, 16, 1, False, None, True))
        fixed(m)
        masks = m._draw_masks(8, 1)
        masks = [{k: (None if v is None else v.copy()) for k, v in mk.items()} for mk in masks]
        fixed(m)
        m.zero_grad()
        run(m, x, h0, c0)
        m.zoneout = 0.0
        dx = backward(m, cot)[0]
        want = reference_run(m, "LSTM", x, h0, c0, None, masks, cot)[1][0]
        np.testing.assert_allclose(dx, want, **tolerance(np.float64, "grad"))
    finally:
        fr.set_num_threads(threads)


CELL_CLASSES = {"RNN_TANH": fr.RNNCell, "LSTM": fr.LSTMCell, "GRU": fr.GRUCell}


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("mode", list(CELL_CLASSES))
def test_cell_zoneout_equals_the_reference_and_finite_differences(plan_knobs, mode, split):
    """Cells draw a zoneout mask per call (a step); fr_recur applies it, and plan.c keeps such a
    step off the unit halves (split=True would take them without zoneout)."""
    threads = fr.get_num_threads()
    fr.set_num_threads(2)
    plan_knobs(cell_split_work=1 if split else 1 << 62)
    try:
        T, B, D, H = 4, 3, 2, 5
        cell = CELL_CLASSES[mode](D, H, dtype=np.float64, seed=1, zoneout=0.5)
        lstm = mode == "LSTM"
        rng = np.random.default_rng(2)
        x = rng.standard_normal((T, B, D))
        h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H)) if lstm else None
        gh, gc = rng.standard_normal((B, H)), rng.standard_normal((B, H))

        def unroll():
            cell._rng = np.random.default_rng(MASK_SEED)
            h, c = h0, c0
            for t in range(T):
                h, c = cell(x[t], (h, c)) if lstm else (cell(x[t], h), None)
            return h, c

        h, c = unroll()
        zh = np.stack([zones[0] for *_, zones in cell._tape])
        zc = np.stack([zones[1] for *_, zones in cell._tape]) if lstm else None
        assert (zh == 0).any() and (zh == 1).any()
        sd = {k + "_l0": v for k, v in cell.state_dict().items()}
        want_y, want_h, want_c, _ = reference.forward(mode, sd, x, h0[None], None if c0 is None else c0[None],
                                                      masks=[{"zh": zh, "zc": zc}])
        np.testing.assert_allclose(h, want_h[0], rtol=1e-13, atol=1e-14)
        if lstm:
            np.testing.assert_allclose(c, want_c[0], rtol=1e-13, atol=1e-14)
        cell.zero_grad()
        dh, dc = gh, gc
        for _ in range(T):
            if lstm:
                _, (dh, dc) = cell.backward((dh, dc))
            else:
                _, dh = cell.backward(dh)

        def f():
            h, c = unroll()
            return np.sum(h * gh) + (np.sum(c * gc) if lstm else 0.0)

        cell._push = lambda saved: None  # the FD calls must not grow the tape
        np.testing.assert_allclose(dh, numeric_grad(f, h0, EPS), rtol=1e-6, atol=1e-8)
        for k, p in cell.parameters().items():
            np.testing.assert_allclose(cell.grads[k], numeric_grad(f, p, EPS), rtol=1e-6, atol=1e-8, err_msg=k)
        # eval mode: the expectation, deterministic
        cell.eval()
        a = cell(x[0], (h0, c0)) if lstm else cell(x[0], h0)
        z = np.full((1, B, H), 0.5)
        y, _, _, _ = reference.forward(mode, sd, x[:1], h0[None], None if c0 is None else c0[None],
                                       masks=[{"zh": z, "zc": z if lstm else None}])
        np.testing.assert_allclose(a[0] if lstm else a, y[0], rtol=1e-13, atol=1e-14)
    finally:
        fr.set_num_threads(threads)
    with pytest.raises(ValueError, match="zoneout"):
        CELL_CLASSES[mode](2, 3, zoneout=1.0)


def test_decoder_cells_take_zoneout_and_peepholes_through_save_load(tmp_path):
    rng = np.random.default_rng(0)
    phase = rng.uniform(0, 2 * np.pi, 32)
    s = np.sin(phase[:, None] + 0.4 * np.arange(12))[..., None].astype(np.float32)
    d = fr.Decoder("LSTM", 8, output_size=1, zoneout=0.2, peepholes=True, seed=0)
    assert all(c.zoneout == 0.2 and c.peepholes for c in d.cells)
    d.compile("mse", fr.Adam(0.02))
    h = d.fit(s[:, :6], s[:, 6:], epochs=8, batch_size=8, verbose=0).history["loss"]
    assert h[-1] < h[0]
    np.testing.assert_array_equal(d.predict(s[:, :6], steps=6), d.predict(s[:, :6], steps=6))  # eval
    d.save(tmp_path / "d.frnn")
    d2 = fr.load(tmp_path / "d.frnn")
    assert d2.get_config() == d.get_config() and d2.cells[0].zoneout == 0.2 and d2.cells[0].peepholes
    np.testing.assert_array_equal(d2.predict(s[:, :6], steps=6), d.predict(s[:, :6], steps=6))
    with pytest.raises(ValueError, match="no PyTorch equivalent"):  # neither option converts
        fr.torch_state_dict(d)
    with pytest.raises(ValueError, match="zoneout"):
        fr.torch_state_dict(fr.Decoder("GRU", 4, zoneout=0.1))
    with pytest.raises(ValueError, match="peepholes"):
        fr.Decoder("GRU", 4, peepholes=True)
    with pytest.raises(ValueError, match="zoneout"):
        fr.Decoder("GRU", 4, zoneout=1.0)
