"""Initialisers of fastrnn.lore: IRNN, orthogonal, forget-gate bias, Glorot, PyTorch-uniform."""
import numpy as np
import pytest

import fastrnn as fr
from fastrnn.lore import init_, irnn, orthogonal


def test_orthogonal_matrix_is_orthogonal_and_random():
    rng = np.random.default_rng(0)
    q = orthogonal(16, rng)
    np.testing.assert_allclose(q @ q.T, np.eye(16), atol=1e-12)
    assert not np.allclose(q, orthogonal(16, rng))


@pytest.mark.parametrize("cls,G", [(fr.RNN, 1), (fr.LSTM, 4), (fr.GRU, 3)])
def test_orthogonal_per_gate_block(cls, G):
    layer = cls(3, 6, num_layers=2, bidirectional=True, dtype=np.float64)
    init_(layer, recurrent="orthogonal", seed=0)
    for name, W in layer.parameters().items():
        if name.startswith("weight_hh"):
            for g in range(G):
                B = W[g * 6:(g + 1) * 6]
                np.testing.assert_allclose(B @ B.T, np.eye(6), atol=1e-12)


def test_forget_bias_makes_effective_forget_bias_one():
    H = 5
    lstm = fr.LSTM(2, H, num_layers=2)
    init_(lstm, forget_bias=1.0)
    p = lstm.parameters()
    for l in range(2):
        total = p[f"bias_ih_l{l}"] + p[f"bias_hh_l{l}"]
        np.testing.assert_array_equal(total[H:2 * H], 1.0)
        # the other gates keep their values (i, g, o untouched)
        assert np.abs(total[:H]).max() > 0
    # Behaviour: with zero weights and zero input, f = sigmoid(1) exactly.
    for k, v in p.items():
        if k.startswith("weight"):
            v[...] = 0
    for l in range(2):
        p[f"bias_ih_l{l}"][:H] = 0; p[f"bias_hh_l{l}"][:H] = 0
        p[f"bias_ih_l{l}"][2 * H:] = 0; p[f"bias_hh_l{l}"][2 * H:] = 0
    c0 = np.ones((2, 1, H), np.float32)
    _, (_, c1) = lstm(np.zeros((1, 1, 2), np.float32), (np.zeros_like(c0), c0))
    # c1 = f * c0 + i * g with g = tanh(0) = 0
    np.testing.assert_allclose(c1, 1 / (1 + np.exp(-1.0)), rtol=1e-6)


def test_forget_bias_rejects_non_lstm():
    with pytest.raises(ValueError, match="LSTM"):
        init_(fr.GRU(2, 3), forget_bias=1.0)


def test_irnn_is_identity_relu_and_keeps_state():
    m = irnn(2, 4, seed=0)
    p = m.parameters()
    np.testing.assert_array_equal(p["weight_hh_l0"], np.eye(4))
    np.testing.assert_array_equal(p["bias_ih_l0"], 0)
    np.testing.assert_array_equal(p["bias_hh_l0"], 0)
    assert m.nonlinearity == "relu" and np.abs(p["weight_ih_l0"]).max() < 0.01
    # With zero input an IRNN carries a positive state unchanged for any number of steps.
    h0 = np.abs(np.random.default_rng(0).standard_normal((1, 3, 4))).astype(np.float32)
    _, h = m(np.zeros((50, 3, 2), np.float32), h0)
    np.testing.assert_allclose(h, h0, rtol=1e-6)


def test_glorot_and_pytorch_bounds():
    lstm = fr.LSTM(10, 20, dtype=np.float64)
    init_(lstm, recurrent="glorot", input="glorot", bias="pytorch", seed=1)
    p = lstm.parameters()
    a_ih, a_hh = np.sqrt(6 / (10 + 20)), np.sqrt(6 / (20 + 20))
    assert np.abs(p["weight_ih_l0"]).max() <= a_ih and np.abs(p["weight_ih_l0"]).max() > 0.8 * a_ih
    assert np.abs(p["weight_hh_l0"]).max() <= a_hh and np.abs(p["weight_hh_l0"]).max() > 0.8 * a_hh
    assert np.abs(p["bias_ih_l0"]).max() <= 1 / np.sqrt(20)
    init_(lstm, input="pytorch", seed=2)
    assert np.abs(p["weight_ih_l0"]).max() <= 1 / np.sqrt(20)


def test_per_layer_selection_in_a_model_and_seeded():
    m = fr.Sequential([fr.LSTM(2, 4), fr.GRU(4, 4), fr.Dense(1)], seed=0)
    init_(m.layers[0], recurrent="orthogonal", forget_bias=1.0, seed=3)
    init_(m.layers[1], recurrent="identity")
    p = m.parameters()
    np.testing.assert_array_equal(p["1.weight_hh_l0"], np.vstack([np.eye(4)] * 3))
    B = p["0.weight_hh_l0"][:4]
    np.testing.assert_allclose(B @ B.T, np.eye(4), atol=1e-6)
    # same seed -> same weights; the model trains afterwards
    m2 = fr.Sequential([fr.LSTM(2, 4), fr.GRU(4, 4), fr.Dense(1)], seed=0)
    init_(m2.layers[0], recurrent="orthogonal", forget_bias=1.0, seed=3)
    np.testing.assert_array_equal(m2.parameters()["0.weight_hh_l0"], p["0.weight_hh_l0"])
    m.compile("mse", "adam").fit(np.zeros((4, 3, 2)), np.zeros((4, 3, 1)), verbose=0)


def test_unbuilt_model_and_bad_scheme_are_refused():
    with pytest.raises(ValueError, match="not built"):
        init_(fr.Sequential([fr.Dense(2), fr.Dense(1)]), recurrent="orthogonal")
    with pytest.raises(ValueError, match="unknown initialisation"):
        init_(fr.RNN(2, 3), recurrent="magic")
    with pytest.raises(TypeError):
        init_("not a layer")


def test_model_level_init_reaches_decoder_cells_and_skip_layers():
    from fastrnn.lore import SkipRecurrent
    dec = fr.Decoder("LSTM", hidden_size=4, output_size=1)
    s2s = fr.Seq2Seq(fr.LSTM(1, 4), dec)
    init_(s2s, forget_bias=1.0)
    p = s2s.parameters()
    for enc_or_cell in ("encoder.bias_ih_l0", "decoder.cell0.bias_ih"):
        np.testing.assert_array_equal(p[enc_or_cell][4:8], 1.0)
    m = fr.Sequential([SkipRecurrent(1, 3, skip=2), fr.Dense(1)], seed=0)
    init_(m, recurrent="identity")
    np.testing.assert_array_equal(m.parameters()["0.weight_hh_l0"], np.eye(3))
