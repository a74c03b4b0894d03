"""PyTorch state dicts and Keras weights, both ways."""
import numpy as np
import pytest

import fastrnn as fr

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- PyTorch
def _torch_net(torch, kind, bidirectional):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = getattr(torch.nn, kind)(3, 5, num_layers=2, batch_first=True, bidirectional=bidirectional)
            self.fc = torch.nn.Linear(5 * (2 if bidirectional else 1), 2)

        def forward(self, x):
            return self.fc(self.rnn(x)[0])
    return Net()


@pytest.mark.parametrize("kind,bidirectional", [("LSTM", False), ("GRU", True), ("RNN", False)])
def test_torch_state_dict_import_and_export_match_torch_outputs(kind, bidirectional):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = _torch_net(torch, kind, bidirectional)
    X = RNG.standard_normal((4, 6, 3)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(X)).numpy()
    m = fr.Sequential([getattr(fr, kind)(3, 5, num_layers=2, bidirectional=bidirectional), fr.Dense(2)])
    # Tensors straight from torch; torch's "rnn"/"fc" modules are matched to layers 0 and 1.
    m.load_torch_state_dict(net.state_dict())
    np.testing.assert_allclose(m.predict(X), ref, rtol=1e-4, atol=1e-5)
    # Export: perturb our weights, push them into torch, outputs follow.
    for p in m.parameters().values():
        p += 0.01
    net.load_state_dict(m.torch_state_dict(mapping={"0": "rnn", "1": "fc"}, tensors=True), strict=True)
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(X)).numpy(), m.predict(X), rtol=1e-4, atol=1e-5)


def test_torch_cells_load_into_a_decoder():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    cell, head = torch.nn.GRUCell(2, 4), torch.nn.Linear(4, 2)
    dec = fr.Decoder("GRU", 4, output_size=2)
    fr.load_torch_state_dict(dec, {**{"cell0." + k: v for k, v in cell.state_dict().items()},
                                   **{"head." + k: v for k, v in head.state_dict().items()}})
    X = RNG.standard_normal((3, 1, 2)).astype(np.float32)
    h, outs, x = torch.zeros(3, 4), [], torch.from_numpy(X[:, 0])
    with torch.no_grad():
        for _ in range(5):                               # greedy real-valued decoding by hand
            h = cell(x, h)
            x = head(h)
            outs.append(x.numpy())
    np.testing.assert_allclose(dec.predict(X, steps=5), np.stack(outs, 1), rtol=1e-4, atol=1e-5)


def test_torch_round_trip_is_exact_and_errors_are_clear():
    m = fr.Sequential([fr.LSTM(3, 4, bidirectional=True), fr.LastStep(), fr.Dense(2)], seed=0)
    sd = m.torch_state_dict()
    other = fr.Sequential([fr.LSTM(3, 4, bidirectional=True), fr.LastStep(), fr.Dense(2)], seed=1)
    other.load_torch_state_dict(sd)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k], v)
    with pytest.raises(ValueError, match="proj_size"):
        m.load_torch_state_dict(dict(sd, **{"0.weight_hr_l0": np.zeros((4, 4))}))
    with pytest.raises(KeyError, match="cannot match"):
        m.load_torch_state_dict({k: v for k, v in sd.items() if "reverse" not in k})
    bad = dict(sd)
    bad["2.weight"] = np.zeros((3, 8))
    with pytest.raises(ValueError, match=r"2.weight: shape \(3, 8\)"):
        m.load_torch_state_dict(bad)


# ----------------------------------------------------------------------------- Keras
# The Keras equations, written out from Keras 3's cell definitions (weights (in, out),
# LSTM gates i f c o, GRU gates z r h with reset_after, h' = z*h + (1-z)*h~).
def _sig(z):
    return 1 / (1 + np.exp(-z))


def keras_simple_rnn(x, kernel, rec, bias=0.0):
    h, out = np.zeros((x.shape[0], rec.shape[0])), []
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ kernel + h @ rec + bias)
        out.append(h)
    return np.stack(out, 1)


def keras_lstm(x, kernel, rec, bias):
    U = rec.shape[0]
    h = c = np.zeros((x.shape[0], U))
    out = []
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ rec + bias
        i, f, g, o = _sig(z[:, :U]), _sig(z[:, U:2 * U]), np.tanh(z[:, 2 * U:3 * U]), _sig(z[:, 3 * U:])
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out, 1)


def keras_gru(x, kernel, rec, bias):
    U = rec.shape[0]
    h, out = np.zeros((x.shape[0], U)), []
    for t in range(x.shape[1]):
        xz = x[:, t] @ kernel + bias[0]
        hz = h @ rec + bias[1]
        z = _sig(xz[:, :U] + hz[:, :U])
        r = _sig(xz[:, U:2 * U] + hz[:, U:2 * U])
        hh = np.tanh(xz[:, 2 * U:] + r * hz[:, 2 * U:])
        h = z * h + (1 - z) * hh
        out.append(h)
    return np.stack(out, 1)


def keras_bidirectional(cell_fn, x, fwd, bwd):
    """Keras Bidirectional, merge_mode="concat": backward layer reads the reversed input and
    its outputs are reversed back to align with time."""
    return np.concatenate([cell_fn(x, *fwd), cell_fn(x[:, ::-1], *bwd)[:, ::-1]], -1)


def _keras_weights(kind, d, u, bias=True):
    G = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[kind]
    w = [RNG.standard_normal((d, G * u)) * 0.5, RNG.standard_normal((u, G * u)) * 0.5]
    if bias:
        w.append(RNG.standard_normal((2, G * u) if kind == "GRU" else G * u) * 0.5)
    return w


def test_keras_stacked_gru_and_dense_match_the_keras_equations():
    layers = [_keras_weights("GRU", 3, 5), _keras_weights("GRU", 5, 5), [RNG.standard_normal((5, 2)), RNG.standard_normal(2)]]
    m = fr.Sequential([fr.GRU(3, 5, num_layers=2, dtype=np.float64), fr.Dense(2)])
    m.set_keras_weights([a for l in layers for a in l])
    x = RNG.standard_normal((4, 6, 3))
    ref = keras_gru(keras_gru(x, *layers[0]), *layers[1]) @ layers[2][0] + layers[2][1]
    np.testing.assert_allclose(m.predict(x), ref, rtol=1e-12, atol=1e-12)
    # Round trip: exactly the Keras arrays come back out.
    for a, b in zip(m.get_keras_weights(), [a for l in layers for a in l]):
        np.testing.assert_array_equal(a, b)


def test_keras_bidirectional_lstm_last_state_matches_the_keras_equations():
    fwd, bwd = _keras_weights("LSTM", 3, 4), _keras_weights("LSTM", 3, 4)
    dense = [RNG.standard_normal((8, 1)), RNG.standard_normal(1)]
    m = fr.Sequential([fr.Recurrent(fr.LSTM(3, 4, bidirectional=True, dtype=np.float64), return_sequences=False),
                       fr.Dense(1)])
    m.set_keras_weights(fwd + bwd + dense)
    x = RNG.standard_normal((3, 5, 3))
    seq = keras_bidirectional(keras_lstm, x, fwd, bwd)
    # Keras Bidirectional(return_sequences=False): forward at the last step, backward after
    # reading everything (its last step in reversed time, i.e. position 0 once re-aligned).
    last = np.concatenate([seq[:, -1, :4], seq[:, 0, 4:]], -1)
    np.testing.assert_allclose(m.predict(x), last @ dense[0] + dense[1], rtol=1e-12, atol=1e-12)
    for a, b in zip(m.get_keras_weights(), fwd + bwd + dense):
        np.testing.assert_array_equal(a, b)


def test_keras_simple_rnn_with_embedding_and_no_bias():
    emb = RNG.standard_normal((10, 3))
    rnn = _keras_weights("SimpleRNN", 3, 4, bias=False)
    m = fr.Sequential([fr.Embedding(10, 3), fr.RNN(3, 4, bias=False), fr.Dense(2)], dtype=np.float32)
    dense = [RNG.standard_normal((4, 2)), RNG.standard_normal(2)]
    m.set_keras_weights([emb] + rnn + dense)
    tok = RNG.integers(0, 10, (2, 5))
    ref = keras_simple_rnn(emb[tok], *rnn) @ dense[0] + dense[1]
    np.testing.assert_allclose(m.predict(tok), ref, rtol=1e-4, atol=1e-5)


def test_torch_to_keras_lstm_sums_biases_and_keeps_the_function():
    lstm = fr.LSTM(2, 3, dtype=np.float64, seed=0)
    k = fr.get_keras_weights(lstm)
    np.testing.assert_array_equal(k[2], lstm.parameters()["bias_ih_l0"] + lstm.parameters()["bias_hh_l0"])
    x = RNG.standard_normal((2, 4, 2))
    ours = lstm(x.transpose(1, 0, 2))[0].transpose(1, 0, 2)
    np.testing.assert_allclose(keras_lstm(x, *k), ours, rtol=1e-12, atol=1e-13)
    back = fr.keras_to_torch("LSTM", k)
    np.testing.assert_array_equal(back["weight_hh"], lstm.parameters()["weight_hh_l0"])
    gru = fr.GRU(2, 3, dtype=np.float64, seed=1)
    g = fr.get_keras_weights(gru)
    np.testing.assert_allclose(keras_gru(x, *g), gru(x.transpose(1, 0, 2))[0].transpose(1, 0, 2),
                               rtol=1e-12, atol=1e-13)


def test_unrepresentable_keras_layouts_raise():
    w = _keras_weights("GRU", 3, 4)
    with pytest.raises(ValueError, match="reset_after=False"):
        fr.keras_to_torch("GRU", [w[0], w[1], np.zeros(12)])
    with pytest.raises(ValueError, match="reset_after=False"):
        fr.keras_to_torch("GRU", w, reset_after=False)
    m = fr.Sequential([fr.GRU(3, 4), fr.Dense(1)])
    with pytest.raises(ValueError, match="has 7 arrays; the model uses 5"):
        m.set_keras_weights(w + [np.zeros((4, 1)), np.zeros(1), np.zeros(1), np.zeros(1)])
    with pytest.raises(ValueError, match="kernel"):
        m.set_keras_weights([w[0][:, :8], w[1], w[2], np.zeros((4, 1)), np.zeros(1)])
    with pytest.raises(ValueError, match="relu RNN"):
        fr.get_keras_weights(fr.RNN(2, 3, nonlinearity="relu"))


def test_leaky_rnn_cannot_be_exported():
    m = fr.Sequential([fr.RNN(2, 3, leak=0.5), fr.Dense(1)])
    with pytest.raises(ValueError, match="leak=0.5"):
        m.torch_state_dict()
    with pytest.raises(ValueError, match="no Keras equivalent"):
        m.get_keras_weights()
