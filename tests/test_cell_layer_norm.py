"""layer_norm=True on the cells (LSTMCell, GRUCell, RNNCell) and in Decoder: T cell steps equal
the layer (which tests/test_layer_norm.py holds to the NumPy reference, finite differences and
PyTorch), the cell's own gradients match finite differences, and the option is saved, loaded
and refused where it makes no sense."""
import numpy as np
import pytest

import fastrnn as fr
from fastrnn import _core
from fastrnn.train.layers import reinit_engine

from fd import assert_grads_match

EPS = 1e-6
CELLS = {"LSTM": (fr.LSTMCell, fr.LSTM), "GRU": (fr.GRUCell, fr.GRU), "RNN": (fr.RNNCell, fr.RNN)}


def _pair(mode, dtype, seed=0, D=3, H=5):
    """A layer-normalised cell and one-layer layer with the same random parameters (LN gains and
    biases away from 1 and 0, so that a gain or bias used in the wrong place shows)."""
    cls, lcls = CELLS[mode]
    cell = cls(D, H, layer_norm=True, dtype=dtype, seed=seed)
    layer = lcls(D, H, layer_norm=True, dtype=dtype, seed=seed + 1)
    rng = np.random.default_rng(seed)
    for k, v in cell.parameters().items():
        v[...] = rng.uniform(-1, 1, v.shape) + (1.0 if k.endswith("norm_ih_weight") else 0.0)
    layer.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    return cell, layer, rng


def _run_cell(cell, x, h0, c0):
    lstm = isinstance(cell, fr.LSTMCell)
    h, c, hs = h0, c0, []
    for t in range(x.shape[0]):
        if lstm:
            h, c = cell(x[t], (h, c))
        else:
            h = cell(x[t], h)
        hs.append(h)
    return np.stack(hs), h, c


@pytest.mark.parametrize("mode", list(CELLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 3])
def test_cell_steps_equal_the_layer_forward_and_backward(mode, dtype, B):
    """T steps of the cell, then T backward calls, give the layer's outputs, input and
    initial-state gradients and every parameter gradient (the LN gains and biases included)."""
    T, D, H = 4, 3, 5
    cell, layer, rng = _pair(mode, dtype)
    lstm = mode == "LSTM"
    x = rng.standard_normal((T, B, D)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    c0 = rng.standard_normal((B, H)).astype(dtype) if lstm else None
    ys, h, c = _run_cell(cell, x, h0, c0)
    y, st = layer(x, (h0[None], c0[None]) if lstm else h0[None])
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(ys, y, **tol)
    if lstm:
        np.testing.assert_allclose(c, st[1][0], **tol)

    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dst = layer.backward(dy)
    dh = np.zeros((B, H), dtype)
    dc = np.zeros((B, H), dtype)
    dxs = []
    for t in reversed(range(T)):
        if lstm:
            dxt, (dh, dc) = cell.backward((dh + dy[t], dc))
        else:
            dxt, dh = cell.backward(dh + dy[t])
        dxs.append(dxt)
    np.testing.assert_allclose(np.stack(dxs[::-1]), dx, **tol)
    np.testing.assert_allclose(dh, (dst[0] if lstm else dst)[0], **tol)
    if lstm:
        np.testing.assert_allclose(dc, dst[1][0], **tol)
    names = [k for k in cell.grads if k.startswith("layer_norm_")]
    assert len(names) == (6 if lstm else 4)
    for k in cell.grads:
        scale = max(1.0, float(np.abs(layer.grads[k + "_l0"]).max()))
        np.testing.assert_allclose(cell.grads[k] / scale, layer.grads[k + "_l0"] / scale, err_msg=k, **tol)


@pytest.mark.parametrize("mode", list(CELLS))
def test_cell_gradients_match_finite_differences(mode):
    """float64 BPTT through the cell's tape against central differences of every parameter (the
    LN gains and biases included) and of the initial states, non-zero initial state."""
    T, B, D, H = 3, 2, 2, 3
    cell, _, rng = _pair(mode, np.float64, seed=3, D=D, H=H)
    lstm = mode == "LSTM"
    x = rng.standard_normal((T, B, D))
    h0 = rng.standard_normal((B, H))
    c0 = rng.standard_normal((B, H)) if lstm else None
    gy = rng.standard_normal((T, B, H))
    gc = rng.standard_normal((B, H))

    def loss():
        with fr.no_grad():
            ys, _, c = _run_cell(cell, x, h0, c0)
        return float(np.sum(ys * gy) + (np.sum(c * gc) if lstm else 0.0))

    cell.zero_grad()
    _run_cell(cell, x, h0, c0)
    dh = np.zeros((B, H))
    dc = gc.copy()
    for t in reversed(range(T)):
        if lstm:
            _, (dh, dc) = cell.backward((dh + gy[t], dc))
        else:
            _, dh = cell.backward(dh + gy[t])
    checks = [(k, cell.grads[k].copy(), p) for k, p in cell.parameters().items()]
    checks.append(("h0", dh, h0))
    if lstm:
        checks.append(("c0", dc, c0))
    assert_grads_match(loss, checks, EPS, f"{mode}Cell(layer_norm=True)")


def test_layer_norm_changes_the_cell_and_zoneout_combines():
    """The option is live (a cell without it gives other outputs from the same weights), and a
    layer-normalised cell with zoneout in eval mode mixes p*h + (1-p)*h_new as the layer does."""
    cell, layer, rng = _pair("GRU", np.float64)
    plain = fr.GRUCell(3, 5, dtype=np.float64)
    plain.load_state_dict({k: v for k, v in cell.state_dict().items() if not k.startswith("layer_norm_")})
    x = rng.standard_normal((2, 3))
    h = rng.standard_normal((2, 5))
    assert np.abs(cell(x, h) - plain(x, h)).max() > 1e-3

    zc = fr.GRUCell(3, 5, layer_norm=True, zoneout=0.3, dtype=np.float64).eval()
    zl = fr.GRU(3, 5, layer_norm=True, zoneout=0.3, dtype=np.float64).eval()
    zc.load_state_dict(cell.state_dict())
    zl.load_state_dict(layer.state_dict())
    xs = rng.standard_normal((4, 2, 3))
    ys, _, _ = _run_cell(zc, xs, h, None)
    np.testing.assert_allclose(ys, zl(xs, h[None])[0], rtol=1e-12, atol=1e-13)


def test_cell_layer_norm_is_named_initialised_and_refused_where_it_makes_no_sense():
    cell = fr.LSTMCell(3, 4, layer_norm=True)
    p = cell.parameters()
    assert p["layer_norm_ih_weight"].shape == (16,) and p["layer_norm_c_bias"].shape == (4,)
    assert np.all(p["layer_norm_hh_weight"] == 1) and np.all(p["layer_norm_hh_bias"] == 0)
    assert set(fr.RNNCell(3, 4, layer_norm=True).parameters()) >= {"layer_norm_ih_weight", "layer_norm_hh_bias"}
    assert "layer_norm=True" in repr(cell)
    with pytest.raises(TypeError, match="layer_norm"):
        fr.GRUCell(3, 4, layer_norm="yes")
    with pytest.raises(ValueError, match="layer_norm and peepholes"):
        fr.LSTMCell(3, 4, layer_norm=True, peepholes=True)
    with pytest.raises(ValueError, match="layer_norm|peepholes"):
        fr.Decoder("LSTM", hidden_size=4, layer_norm=True, peepholes=True)
    # the bridge names a wrong ln operand and leaves the outputs alone
    x, h = np.zeros((1, 3), np.float32), np.zeros((1, 4), np.float32)
    with pytest.raises(ValueError, match="ln"):
        _core.cell_step(_core.GRU, x, h, None, np.zeros((12, 3), np.float32), np.zeros((12, 4), np.float32),
                        None, None, True, None, None, None, np.ones(5, np.float32))
    w = np.zeros((16, 4), np.float32)
    with pytest.raises(ValueError, match="ln|peep"):
        _core.cell_step(_core.LSTM, x, h, h, np.zeros((16, 3), np.float32), w, None, None, True,
                        np.zeros(12, np.float32), None, None, np.ones(72, np.float32))
    # a backward given one bias gradient but not the other changes nothing
    h1, c1, saved = _core.cell_step(_core.GRU, x, h, None, np.ones((12, 3), np.float32),
                                    np.ones((12, 4), np.float32), None, None, True, None, None, None,
                                    np.ones(48, np.float32))
    dw_ih, dw_hh = np.zeros((12, 3), np.float32), np.zeros((12, 4), np.float32)
    with pytest.raises(ValueError, match="db_hh"):
        _core.backward(_core.GRU, saved[0], np.ones((12, 3), np.float32), np.ones((12, 4), np.float32),
                       saved[1], dh_n=np.ones((1, 4), np.float32), dw_ih=dw_ih, dw_hh=dw_hh,
                       db_ih=np.zeros(12, np.float32), ln=np.ones(48, np.float32), lnsave=saved[2],
                       dln=np.zeros(48, np.float32))
    assert not dw_ih.any() and not dw_hh.any()


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_a_layer_norm_decoder_trains_saves_and_loads(tmp_path, cell):
    """Decoder(layer_norm=True): its cells normalise, fit lowers the loss, and the model file
    gives the same predictions back (config and LN parameters)."""
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 6, (64, 1)) + 0.3 * np.arange(14)
    s = np.sin(t)[..., None].astype(np.float32)
    X, y = s[:, :8], s[:, 8:]
    m = fr.Decoder(cell, hidden_size=12, output_size=1, layer_norm=True, seed=0)
    assert all(c.layer_norm for c in m.cells)
    m.compile(loss="mse", optimizer=fr.Adam(learning_rate=0.02))
    first = m.evaluate(X, y)["loss"]
    m.fit(X, y, epochs=15, batch_size=16, verbose=0)
    assert m.evaluate(X, y)["loss"] < 0.5 * first
    # gains start at 1 and biases at 0 (the model-level seed re-draws only the weights)
    fresh = fr.Decoder(cell, hidden_size=12, output_size=1, layer_norm=True, seed=1)
    assert np.all(fresh.cells[0].parameters()["layer_norm_hh_weight"] == 1)
    path = tmp_path / "dec.frnn"
    m.save(path)
    back = fr.load(path)
    assert back.layer_norm and all(c.layer_norm for c in back.cells)
    np.testing.assert_array_equal(back.predict(X[:5], steps=6), m.predict(X[:5], steps=6))


def test_model_seeds_keep_layer_norm_gains_and_biases():
    """A model-level seed re-draws the weights of its engine layers; layer norm's gains and
    biases go back to 1 and 0 (they used to be drawn like weights, near 0)."""
    lstm = fr.LSTM(3, 8, num_layers=2, layer_norm=True)
    for p in lstm.parameters().values():
        p[...] = 0.5
    reinit_engine(lstm, np.random.default_rng(0))
    for k, p in lstm.parameters().items():
        if k.startswith("layer_norm_"):
            assert np.all(p == (1.0 if "_weight" in k else 0.0)), k
        else:
            assert np.all(np.abs(p) <= 1 / np.sqrt(8)) and p.std() > 0, k
    m = fr.Sequential([fr.LSTM(3, 8, layer_norm=True), fr.LastStep(), fr.Dense(1)], seed=0)
    x = np.zeros((2, 4, 3), np.float32)
    m.predict(x)
    p = m.layers[0].layer.parameters()
    assert np.all(p["layer_norm_ih_weight_l0"] == 1) and np.all(p["layer_norm_c_bias_l0"] == 0)
