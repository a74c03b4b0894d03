"""Leaky-integrator units (engine option fr.RNN(..., leak=)) checked from the outside, and
skip connections through time (fastrnn.lore.SkipRecurrent): forward against a NumPy loop,
gradients against finite differences."""
import numpy as np
import pytest

from fd import numeric_grad, numeric_grad_at

import fastrnn as fr
from fastrnn.lore import SkipRecurrent, engine_has_leak

needs_leak = pytest.mark.skipif(not engine_has_leak(), reason="engine built without leak=")


def np_leaky_rnn(x, sd, leak, act=np.tanh, h0=None):
    """Independent reference: h_t = (1-a) h_{t-1} + a act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."""
    T, B, _ = x.shape
    H = sd["weight_hh_l0"].shape[0]
    h = np.zeros((B, H)) if h0 is None else h0
    ys = []
    for t in range(T):
        pre = x[t] @ sd["weight_ih_l0"].T + sd["bias_ih_l0"] + h @ sd["weight_hh_l0"].T + sd["bias_hh_l0"]
        h = (1 - leak) * h + leak * act(pre)
        ys.append(h)
    return np.stack(ys), h


@needs_leak
@pytest.mark.parametrize("nonlin", ["tanh", "relu"])
def test_leaky_forward_matches_numpy(nonlin):
    rng = np.random.default_rng(0)
    rnn = fr.RNN(3, 5, nonlinearity=nonlin, leak=0.3, dtype=np.float64, seed=1)
    x = rng.standard_normal((7, 2, 3))
    h0 = rng.standard_normal((1, 2, 5))
    y, h = rnn(x, h0)
    act = np.tanh if nonlin == "tanh" else (lambda z: np.maximum(z, 0))
    ry, rh = np_leaky_rnn(x, rnn.state_dict(), 0.3, act, h0[0])
    np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h[0], rh, rtol=1e-12, atol=1e-12)
    # leak=0.3 must actually change the result (a silently ignored option would pass above
    # only if the reference were wrong too; this guards the reference's use of leak).
    y1, _ = fr.RNN(3, 5, nonlinearity=nonlin, dtype=np.float64, seed=1)(x, h0)
    assert np.abs(y1 - y).max() > 1e-3


def _fd_check(layer, x, h0, lengths=None, eps=1e-6):
    """Every parameter, input and initial-state gradient of L = <dy, y> + <dh, h_n> against
    central differences (float64)."""
    rng = np.random.default_rng(5)
    y, h = layer(x, h0, lengths)
    dy, dh = rng.standard_normal(y.shape), rng.standard_normal(h.shape)

    def loss():
        yy, hh = layer(x, h0, lengths)
        return float((dy * yy).sum() + (dh * hh).sum())

    layer.zero_grad()
    layer(x, h0, lengths)
    dx, dh0 = layer.backward(dy, dh)
    worst = 0.0
    for arr, ana in [(p, layer.grads[k]) for k, p in layer.parameters().items()] + [(x, dx), (h0, dh0)]:
        num = numeric_grad(loss, arr, eps)
        worst = max(worst, float(np.max(np.abs(num - ana) / np.maximum(1.0, np.abs(ana)))))
    return worst


@needs_leak
@pytest.mark.parametrize("cfg", [dict(), dict(nonlinearity="relu"), dict(num_layers=2),
                                 dict(bidirectional=True), dict(lengths=True)])
def test_leaky_gradients_finite_differences(cfg):
    cfg = dict(cfg)
    use_len = cfg.pop("lengths", False)
    rng = np.random.default_rng(1)
    rnn = fr.RNN(2, 3, leak=0.4, dtype=np.float64, seed=2, **cfg)
    x = rng.standard_normal((5, 2, 2))
    h0 = rng.standard_normal((rnn.num_layers * rnn.num_directions, 2, 3))
    lengths = np.array([5, 3]) if use_len else None
    assert _fd_check(rnn, x, h0, lengths) < 1e-7


# ----------------------------------------------------------------------------- skip connections
def np_skip_rnn(x, sd, k, leak=1.0):
    """h_t = (1-a) h_{t-1} + a tanh(W_x x_t + W_s h_{t-k} + W_hh h_{t-1} + b), h_{<0} = 0."""
    N, T, D = x.shape
    W = sd["weight_ih_l0"]
    H = W.shape[0]
    hs = [np.zeros((N, H))]
    for t in range(T):
        skip = hs[t + 1 - k] if t - k >= 0 else np.zeros((N, H))
        pre = x[:, t] @ W[:, :D].T + skip @ W[:, D:].T + hs[-1] @ sd["weight_hh_l0"].T \
            + sd["bias_ih_l0"] + sd["bias_hh_l0"]
        hs.append((1 - leak) * hs[-1] + leak * np.tanh(pre))
    return np.stack(hs[1:], 1)


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_skip_forward_matches_numpy_loop(k):
    rng = np.random.default_rng(k)
    layer = SkipRecurrent(2, 4, skip=k, dtype=np.float64, seed=0)
    m = fr.Sequential([layer], seed=0)
    x = rng.standard_normal((3, 10, 2))
    got = m.predict(x)
    want = np_skip_rnn(x, layer.layer.state_dict(), k)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # The skip weights matter: zeroing them changes the output once t >= k.
    sd = layer.layer.state_dict()
    sd["weight_ih_l0"][:, 2:] = 0
    layer.layer.load_state_dict(sd)
    if k < 10:
        assert np.abs(m.predict(x) - got)[:, k:].max() > 1e-6


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("k", [1, 3, 4])
def test_skip_gradients_finite_differences(cell, k):
    # T=10 with k=3 leaves a short last block, k=4 a block boundary mid-sequence.
    rng = np.random.default_rng(0)
    m = fr.Sequential([SkipRecurrent(2, 4, skip=k, cell=cell, dtype=np.float64), fr.Dense(1)], seed=0)
    X, y = rng.standard_normal((3, 10, 2)), rng.standard_normal((3, 10, 1))
    assert fr.check_gradients(m, X, y, "mse", num_checks=30) < 1e-6


def test_skip_input_gradient_and_last_state_output():
    # return_sequences=False + the gradient w.r.t. the input (what a layer below receives).
    rng = np.random.default_rng(3)
    layer = SkipRecurrent(2, 3, skip=2, dtype=np.float64, return_sequences=False)
    m = fr.Sequential([layer, fr.Dense(1)], seed=1)
    X, y = rng.standard_normal((2, 7, 2)), rng.standard_normal((2, 1))
    assert fr.check_gradients(m, X, y, "mse") < 1e-6
    lossf = fr.get_loss("mse")

    def L():
        return float(lossf(m._forward(X, None, True), y))

    m._clear_caches()
    out = m._forward(X, None, True)
    _, g = lossf.value_and_grad(out, y)
    d = m.layers[1].backward(g)
    dx = layer.backward(d)
    eps = 1e-6
    for idx in [(0, 0, 0), (1, 3, 1), (0, 6, 1)]:
        assert abs(numeric_grad_at(L, X, idx, eps) - dx[idx]) < 1e-7


@pytest.mark.skipif(not engine_has_leak(), reason="engine built without leak=")
def test_skip_with_leak_matches_numpy_and_gradients():
    rng = np.random.default_rng(4)
    layer = SkipRecurrent(2, 4, skip=3, leak=0.5, dtype=np.float64)
    m = fr.Sequential([layer, fr.Dense(1)], seed=0)
    X, y = rng.standard_normal((2, 9, 2)), rng.standard_normal((2, 9, 1))
    h = fr.Sequential([layer], seed=None).predict(X)
    np.testing.assert_allclose(h, np_skip_rnn(X, layer.layer.state_dict(), 3, 0.5), atol=1e-12)
    assert fr.check_gradients(m, X, y, "mse") < 1e-6


def test_skip_trains_save_load_generate_and_tbptt(tmp_path):
    from test_train_helpers import sine_windows
    X, Y = sine_windows(64, 24)
    m = fr.Sequential([SkipRecurrent(1, 16, skip=4, cell="GRU"), fr.Dense(1)], seed=0)
    m.compile("mse", fr.Adam(0.01))
    h = m.fit(X, Y, epochs=6, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < 0.5 * h.history["loss"][0]     # it learns
    path = tmp_path / "skip.frnn"
    m.save(path)
    m2 = fr.load(path)
    assert isinstance(m2.layers[0], SkipRecurrent)
    np.testing.assert_array_equal(m2.predict(X[:4]), m.predict(X[:4]))
    # generate carries the state *and* the last k outputs: feeding the model's own forecasts
    # one at a time must equal running the extended sequence at once.
    g = m.generate(X[:3], steps=5)
    ext = X[:3].copy()
    for s in range(4):
        ext = np.concatenate([ext, g[:, s:s + 1]], 1)
    np.testing.assert_allclose(m.predict(ext)[:, -1], g[:, -1], rtol=1e-5, atol=1e-6)
    # truncated BPTT with chunks of k >= T is full BPTT
    m3 = fr.Sequential([SkipRecurrent(1, 8, skip=4), fr.Dense(1)], seed=0)
    m4 = fr.Sequential([SkipRecurrent(1, 8, skip=4), fr.Dense(1)], seed=0)
    for mm in (m3, m4):
        mm.compile("mse", fr.SGD(0.1))
    m3.fit(X[:16], Y[:16], epochs=1, batch_size=16, verbose=0, shuffle=False)
    m4.fit(X[:16], Y[:16], epochs=1, batch_size=16, verbose=0, shuffle=False, tbptt=24)
    for k, v in m3.parameters().items():
        np.testing.assert_array_equal(v, m4.parameters()[k])


def test_skip_rejects_bad_arguments():
    with pytest.raises(ValueError, match="skip"):
        SkipRecurrent(1, 4, skip=0)
    with pytest.raises(ValueError, match="cell"):
        SkipRecurrent(1, 4, skip=2, cell="MLP")
    m = fr.Sequential([SkipRecurrent(1, 4, skip=2), fr.Dense(1)], seed=0)
    with pytest.raises(ValueError, match="ragged"):
        m.predict(np.zeros((2, 5, 1)), lengths=np.array([5, 3]))


@needs_leak
def test_leaky_rnn_in_sequential_survives_save_load(tmp_path):
    m = fr.Sequential([fr.RNN(1, 4, leak=0.3), fr.Dense(1)], seed=0)
    m.save(tmp_path / "leaky.frnn")
    m2 = fr.load(tmp_path / "leaky.frnn")
    x = np.ones((2, 5, 1), np.float32)
    assert m2.layers[0].layer.leak == 0.3
    np.testing.assert_array_equal(m2.predict(x), m.predict(x))
