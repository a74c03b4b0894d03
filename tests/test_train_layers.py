"""Model layers and whole-model gradients (float64 finite differences)."""
import numpy as np
import pytest

import fastrnn as fr
from test_train_helpers import numeric_grad

F64 = np.float64
RNG = np.random.default_rng(1)


def _layer_loss(model, X, y, lengths, lossf):
    out = model._forward(X, lengths, True)
    model._clear_caches()
    return float(lossf(out, y, model._loss_mask(out, lengths)))


def _input_grad(model, X, y, lengths, lossf):
    """Backprop gradient of the loss w.r.t. the model input (first layer's dx)."""
    model._clear_caches()
    out = model._forward(X, lengths, True)
    _, g = lossf.value_and_grad(out, y, model._loss_mask(out, lengths))
    d = g
    for l in reversed(model.layers):
        d = l.backward(d)
    return d


@pytest.mark.parametrize("engine", [fr.RNN, fr.LSTM, fr.GRU])
def test_whole_model_gradients_many_to_many_with_ragged_lengths(engine):
    m = fr.Sequential([engine(3, 5, num_layers=2, dtype=F64), fr.Dense(4, activation="tanh"),
                       fr.Dense(2)], seed=0)
    X = RNG.standard_normal((4, 6, 3))
    y = RNG.standard_normal((4, 6, 2))
    lengths = np.array([6, 2, 4, 1])
    assert fr.check_gradients(m, X, y, "mse", lengths=lengths) < 1e-6
    # And the input gradient, which a preceding layer would receive.
    lossf = fr.get_loss("mse")
    d = _input_grad(m, X.copy(), y, lengths, lossf)
    Xc = X.copy()
    num = numeric_grad(lambda: _layer_loss(m, Xc, y, lengths, lossf), Xc)
    np.testing.assert_allclose(d, num, rtol=1e-5, atol=1e-9)
    # Padding is ignored: no gradient reaches steps past a sequence's length.
    assert np.all(d[1, 2:] == 0)


@pytest.mark.parametrize("merge", ["concat", "sum", "mean"])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_merge_modes_gradients(merge, return_sequences):
    layers = [fr.Recurrent(fr.GRU(2, 3, bidirectional=True, dtype=F64), return_sequences=return_sequences,
                           merge_mode=merge), fr.Dense(3)]
    m = fr.Sequential(layers, seed=2)
    X = RNG.standard_normal((3, 5, 2))
    lengths = np.array([5, 3, 1])
    y = RNG.integers(0, 3, (3, 5) if return_sequences else 3)
    assert fr.check_gradients(m, X, y, "cross_entropy", lengths=lengths) < 1e-6


def test_merge_modes_combine_the_two_directions():
    eng = fr.LSTM(2, 4, bidirectional=True, dtype=F64, seed=3)
    X = RNG.standard_normal((2, 5, 2))
    lengths = np.array([5, 3])
    y, (h, _) = eng(X.transpose(1, 0, 2), lengths=lengths)
    y = y.transpose(1, 0, 2)
    for merge, f in (("concat", lambda a, b: np.concatenate([a, b], -1)), ("sum", np.add),
                     ("mean", lambda a, b: (a + b) / 2)):
        seq = fr.Recurrent(eng, merge_mode=merge).forward(X, lengths=lengths)
        np.testing.assert_allclose(seq, f(y[..., :4], y[..., 4:]), rtol=1e-12)
        last = fr.Recurrent(eng, return_sequences=False, merge_mode=merge).forward(X, lengths=lengths)
        # Final state: forward direction at each sequence's last valid step, reverse
        # direction after reading the valid part backwards (its output at step 0).
        np.testing.assert_allclose(last, f(h[0], h[1]), rtol=1e-12)
        np.testing.assert_allclose(last, f(y[np.arange(2), lengths - 1, :4], y[:, 0, 4:]), rtol=1e-12)


def test_laststep_embedding_dropout_repeatvector_gradients():
    m = fr.Sequential([fr.Embedding(7, 3), fr.LSTM(3, 4, dtype=F64), fr.LastStep(), fr.Dropout(0.3),
                       fr.RepeatVector(2), fr.Dense(5, activation="relu"), fr.Dense(2, activation="sigmoid")],
                      seed=4, dtype=F64)
    X = RNG.integers(0, 7, (3, 4))
    y = RNG.standard_normal((3, 2, 2))
    # Dropout masks are replayed for every evaluation, so the check is exact despite dropout.
    assert fr.check_gradients(m, X, y, "huber", lengths=np.array([4, 2, 3])) < 1e-6


def test_laststep_picks_last_valid_step():
    x = np.arange(2 * 4 * 1, dtype=F64).reshape(2, 4, 1)
    np.testing.assert_array_equal(fr.LastStep().forward(x, lengths=np.array([2, 4])), [[1.0], [7.0]])
    np.testing.assert_array_equal(fr.LastStep().forward(x), [[3.0], [7.0]])


def test_dropout_is_inverted_and_training_only():
    m = fr.Sequential([fr.Dropout(0.5)], input_shape=(1000,), seed=0)
    x = np.ones((4, 1000), np.float32)
    assert np.array_equal(m._forward(x, None, False), x)
    out = m._forward(x, None, True)
    assert set(np.unique(out)) == {0.0, 2.0}
    assert abs(out.mean() - 1) < 0.05


def test_model_seed_makes_initialisation_reproducible():
    def build(seed):
        return fr.Sequential([fr.LSTM(2, 3), fr.Dense(1)], seed=seed)
    a, b, c = build(5).state_dict(), build(5).state_dict(), build(6).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["0.weight_ih_l0"], c["0.weight_ih_l0"])
    s2s = [fr.Seq2Seq(fr.LSTM(2, 3), fr.Decoder("LSTM", 3, vocab_size=4), seed=7).state_dict() for _ in range(2)]
    assert all(np.array_equal(s2s[0][k], s2s[1][k]) for k in s2s[0])
    # Without a model seed the engine layer keeps the weights it was built with.
    eng = fr.GRU(2, 3, seed=9)
    before = eng.state_dict()
    m = fr.Sequential([eng, fr.Dense(1)])
    np.testing.assert_array_equal(m.state_dict()["0.weight_hh_l0"], before["weight_hh_l0"])


def test_parameters_grads_state_dict_and_summary():
    m = fr.Sequential([fr.LSTM(3, 8, bidirectional=True), fr.LastStep(), fr.Dense(2)], seed=0)
    names = list(m.parameters())
    assert names[:4] == ["0.weight_ih_l0", "0.weight_hh_l0", "0.bias_ih_l0", "0.bias_hh_l0"]
    assert names[-2:] == ["2.weight", "2.bias"] and set(m.grads) == set(names)
    assert m.count_params() == 2 * (4 * 8 * (3 + 8) + 2 * 4 * 8) + 2 * 16 + 2
    text = m.summary(print_fn=None)
    assert "(batch, time, 16)" in text and f"Total params: {m.count_params():,}" in text
    sd = m.state_dict()
    sd["2.bias"] = sd["2.bias"] + 1
    m.load_state_dict(sd)
    np.testing.assert_array_equal(m.parameters()["2.bias"], sd["2.bias"])
    with pytest.raises(KeyError, match="missing"):
        m.load_state_dict({k: v for k, v in sd.items() if k != "2.bias"})
    with pytest.raises(ValueError, match="shape"):
        m.load_state_dict(dict(sd, **{"2.bias": np.zeros(3)}))


def test_construction_errors_name_the_problem():
    with pytest.raises(ValueError, match="layer 1 .*input_size=4"):
        fr.Sequential([fr.LSTM(3, 5), fr.GRU(4, 2)])
    with pytest.raises(ValueError, match="mix dtypes"):
        fr.Sequential([fr.LSTM(3, 5), fr.GRU(5, 2, dtype=F64)])
    with pytest.raises(TypeError, match="cell"):
        fr.Sequential([fr.LSTMCell(3, 5)])
    with pytest.raises(ValueError, match="merge_mode"):
        fr.Recurrent(fr.LSTM(3, 5, bidirectional=True), merge_mode="max")
    with pytest.raises(ValueError, match="units"):
        fr.Dense(0)


def test_gradient_check_detects_a_wrong_gradient(monkeypatch):
    m = fr.Sequential([fr.GRU(2, 3, dtype=F64), fr.Dense(1)], seed=0)
    X, y = RNG.standard_normal((2, 4, 2)), RNG.standard_normal((2, 4, 1))
    orig = fr.Dense.backward

    def off_by_one_percent(self, dy):
        return orig(self, dy * 1.01)

    monkeypatch.setattr(fr.Dense, "backward", off_by_one_percent)
    assert fr.check_gradients(m, X, y) > 1e-3


def test_engine_dropout_is_replayed_by_the_gradient_check():
    m = fr.Sequential([fr.LSTM(2, 4, num_layers=2, dropout=0.4, dtype=F64), fr.Dense(1)], seed=0)
    X, y = RNG.standard_normal((3, 5, 2)), RNG.standard_normal((3, 5, 1))
    assert fr.check_gradients(m, X, y) < 1e-6


def test_recurrent_return_state_standalone():
    eng = fr.GRU(2, 3, num_layers=2, dtype=F64, seed=0)
    X = RNG.standard_normal((4, 5, 2))
    out, h = fr.Recurrent(eng, return_sequences=False, return_state=True).forward(X)
    y, h_ref = eng(X.transpose(1, 0, 2))
    np.testing.assert_array_equal(h, h_ref)
    np.testing.assert_array_equal(out, y[-1])
    with pytest.raises(ValueError, match="return_state"):
        fr.Sequential([fr.Recurrent(eng, return_state=True)])


def test_dense_first_model_is_built_from_the_data():
    m = fr.Sequential([fr.Dense(4, activation="relu"), fr.GRU(4, 3), fr.Dense(1)], seed=0)
    assert not m.built
    out = m.predict(RNG.standard_normal((2, 7, 5)))
    assert out.shape == (2, 7, 1) and m.input_shape == (None, 5)
    assert m.predict(RNG.standard_normal((3, 2, 5))).shape == (3, 2, 1)   # any length
    with pytest.raises(ValueError, match=r"expects \(batch, time, 5\)"):
        m.predict(RNG.standard_normal((3, 2, 4)))


def test_engine_batch_first_switch_is_transparent():
    a = fr.Sequential([fr.GRU(2, 3, dtype=F64), fr.Dense(1)], seed=0)
    b = fr.Sequential([fr.GRU(2, 3, batch_first=True, dtype=F64), fr.Dense(1)], seed=0)
    X, y = RNG.standard_normal((4, 5, 2)), RNG.standard_normal((4, 5, 1))
    lengths = np.array([5, 2, 3, 1])
    np.testing.assert_array_equal(a.predict(X, lengths=lengths), b.predict(X, lengths=lengths))
    assert fr.check_gradients(b, X, y, lengths=lengths) < 1e-6


@pytest.mark.parametrize("units", [1, 3])
@pytest.mark.parametrize("activation", [None, "relu", "tanh", "sigmoid"])
def test_dense_on_a_time_major_view_equals_dense_on_a_copy(units, activation):
    """A Recurrent hands on its (N, T, F) output as a view of the engine's (T, N, F) memory;
    Dense then works in that order. Its outputs, dx and gradients must equal the ordinary path."""
    from tolerances import tolerance
    xt = RNG.standard_normal((5, 4, 3))  # (T, N, F) memory
    view = xt.transpose(1, 0, 2)
    dy = RNG.standard_normal((4, 5, units))
    res = []
    for x in (view, np.ascontiguousarray(view)):
        m = fr.Sequential([fr.Dense(units, activation=activation)], seed=4, dtype=F64)
        m._build((None, 3))
        d = m.layers[0]
        z = d.forward(x, training=True)
        dx = d.backward(dy)
        res.append((z, dx, d.grads["weight"].copy(), d.grads["bias"].copy()))
    (z, dx, gw, gb), (z0, dx0, gw0, gb0) = res
    # the view path keeps the time-major memory on both sides
    assert z.transpose(1, 0, 2).flags.c_contiguous and dx.transpose(1, 0, 2).flags.c_contiguous
    np.testing.assert_allclose(z, z0, **tolerance(F64, "forward"))
    for a, b in ((dx, dx0), (gw, gw0), (gb, gb0)):
        np.testing.assert_allclose(a, b, **tolerance(F64, "grad"))


def test_stacked_sequence_layers_hand_on_views_not_copies():
    """Recurrent -> Recurrent -> Dense: each output and each dx is a view of time-major memory
    (no (N, T, F) <-> (T, N, F) copy between them), and the whole model's gradients still check."""
    m = fr.Sequential([fr.Recurrent(fr.GRU(3, 4, dtype=F64)), fr.Recurrent(fr.LSTM(4, 5, dtype=F64)),
                       fr.Dense(2)], seed=1)
    X = RNG.standard_normal((3, 6, 3))
    outs = []
    h = X
    for l in m.layers:
        h = l.forward(h, training=True)
        outs.append(h)
    for o in outs:
        assert not o.flags.c_contiguous and o.transpose(1, 0, 2).flags.c_contiguous
    d = RNG.standard_normal(outs[-1].shape)
    ds = []
    for l in reversed(m.layers):
        d = l.backward(d)
        ds.append(d)
    for dd in ds[:-1]:  # what Dense and the upper Recurrent hand down
        assert dd.transpose(1, 0, 2).flags.c_contiguous
    assert fr.check_gradients(m, X, RNG.standard_normal((3, 6, 2)), "mse") < 1e-6
