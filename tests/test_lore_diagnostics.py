"""Gradient-flow diagnostics: per-step state gradients dL/dh_t (engine state_grads and the
step-by-step method) against finite differences, spectra of W_hh, and the plot."""
import numpy as np
import pytest

import fastrnn as fr
from fastrnn.lore import (engine_has_state_grads, gradient_flow, init_, plot_gradient_flow,
                          recurrent_eigenvalues, spectral_radius, state_gradients)

METHODS = ["steps", pytest.param("engine", marks=pytest.mark.skipif(
    not engine_has_state_grads(), reason="engine built without state_grads"))]


def fd_state_grads(layer, x, dy, t, eps=1e-6):
    """dL/dh_t for L = <dy, y> by finite differences: run steps 0..t, perturb h_t (which is
    also the output y_t), run the rest of the sequence from it."""
    lstm = isinstance(layer, fr.LSTM)
    with fr.no_grad():
        y1, st = layer(x[:t + 1])
    h = st[0] if lstm else st
    B, H = h.shape[1:]
    g = np.zeros((B, H))

    def L(hp):
        val = (dy[:t] * y1[:t]).sum() + (dy[t] * hp[0]).sum()
        if t + 1 < len(x):
            with fr.no_grad():
                y2, _ = layer(x[t + 1:], (hp, st[1]) if lstm else hp)
            val += (dy[t + 1:] * y2).sum()
        return val

    for b in range(B):
        for j in range(H):
            hp, hm = h.copy(), h.copy()
            hp[0, b, j] += eps
            hm[0, b, j] -= eps
            g[b, j] = (L(hp) - L(hm)) / (2 * eps)
    return g


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("cls", [fr.RNN, fr.LSTM, fr.GRU])
def test_state_gradients_match_finite_differences(cls, method):
    rng = np.random.default_rng(0)
    layer = cls(2, 3, dtype=np.float64, seed=1)
    x = rng.standard_normal((6, 2, 2))
    dy = rng.standard_normal((6, 2, 3))
    sg = state_gradients(layer, x, dy=dy, method=method)
    assert len(sg) == 1 and sg[0].shape == (6, 2, 3)
    for t in (0, 2, 5):
        np.testing.assert_allclose(sg[0][t], fd_state_grads(layer, x, dy, t), atol=1e-7)
    assert not any(np.any(g) for g in layer.grads.values())     # parameters' grads untouched


@pytest.mark.skipif(not engine_has_state_grads(), reason="engine built without state_grads")
def test_engine_and_step_methods_agree_including_leak_and_final_state_gradient():
    rng = np.random.default_rng(1)
    kw = {"leak": 0.4} if "leak" in fr.RNN.__init__.__code__.co_varnames else {}
    for layer in (fr.RNN(3, 4, dtype=np.float64, seed=0, **kw), fr.LSTM(3, 4, dtype=np.float64, seed=0)):
        x = rng.standard_normal((8, 2, 3))
        dy = rng.standard_normal((8, 2, 4))
        dh = rng.standard_normal((1, 2, 4))
        dstate = (dh, None) if isinstance(layer, fr.LSTM) else dh
        a = state_gradients(layer, x, dy=dy, dstate=dstate, method="engine")
        b = state_gradients(layer, x, dy=dy, dstate=dstate, method="steps")
        np.testing.assert_allclose(a[0], b[0], atol=1e-12)


def test_spectra():
    rnn = fr.RNN(2, 8, dtype=np.float64)
    init_(rnn, recurrent="orthogonal", gain=0.5, seed=0)
    ev = recurrent_eigenvalues(rnn)
    assert list(ev) == ["h"]
    np.testing.assert_allclose(np.abs(ev["h"]), 0.5, atol=1e-10)     # 0.5 * orthogonal
    assert spectral_radius(rnn.parameters()["weight_hh_l0"]) == pytest.approx(0.5)
    assert list(recurrent_eigenvalues(fr.LSTM(2, 3))) == ["i", "f", "g", "o"]
    assert list(recurrent_eigenvalues(fr.GRU(2, 3))) == ["r", "z", "n"]
    with pytest.raises(ValueError):
        spectral_radius(np.ones((2, 3)))


def test_gradient_flow_shows_vanishing_vs_identity():
    # The lectures' picture: a contractive tanh RNN loses the gradient going back in time,
    # an identity-initialised ReLU RNN keeps it.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 40, 2)).astype(np.float32)
    y = rng.standard_normal((16, 1)).astype(np.float32)

    def model(nonlin, recurrent, gain):
        m = fr.Sequential([fr.Recurrent(fr.RNN(2, 16, nonlinearity=nonlin), return_sequences=False),
                           fr.Dense(1)], seed=0)
        init_(m, recurrent=recurrent, gain=gain, bias="zeros", input="normal", std=0.01, seed=0)
        return m.compile("mse", "sgd")

    tanh = gradient_flow(model("tanh", "orthogonal", 0.5), X, y)
    ident = gradient_flow(model("relu", "identity", 1.0), X, y)
    assert tanh["norms"].shape == (40,)
    assert tanh["norms"][0] < 1e-6 * tanh["norms"][-1]
    # (ReLU units that are off pass no gradient, so the IRNN's norm dips too, but by orders of
    # magnitude less.)
    assert 0.05 < ident["norms"][0] / ident["norms"][-1] < 20
    assert ident["spectral_radius"]["h"] == pytest.approx(1.0)


def test_gradient_flow_leaves_model_untouched_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(2)
    m = fr.Sequential([fr.LSTM(2, 5), fr.Dense(1)], seed=0).compile("mse", "adam")
    X, Y = rng.standard_normal((4, 12, 2)), rng.standard_normal((4, 12, 1))
    before = m.state_dict()
    m.zero_grad()
    f = gradient_flow(m, X, Y)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    assert all(not np.any(g) for g in m.grads.values())
    assert f["norms"].shape == (12,) and np.all(f["norms"] > 0)
    path = plot_gradient_flow({"LSTM": f, "again": f}, tmp_path / "flow.png", title="t")
    assert (tmp_path / "flow.png").stat().st_size > 5000 and path == tmp_path / "flow.png"
