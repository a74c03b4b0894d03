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
    # ... nor loaded from Keras: a SimpleRNN's weights would silently give another model.
    old = _snapshot(m)
    with pytest.raises(ValueError, match="no Keras equivalent"):
        m.set_keras_weights(_keras_weights("SimpleRNN", 2, 3) + [np.zeros((3, 1)), np.zeros(1)])
    _assert_unchanged(m, old)


# ----------------------------------------------------------------------------- Keras configs
# An independent NumPy reading of Keras layer configs + get_weights(), from Keras 3's
# keras/src/layers/rnn/{simple_rnn,lstm,gru,bidirectional}.py: both GRU formulations
# (reset_after=False applies r before the recurrent matmul), use_bias, activations,
# go_backwards (outputs stay in reading order) and return_sequences.
_ACTS = {"tanh": np.tanh, "sigmoid": _sig, "relu": lambda z: np.maximum(z, 0), "linear": lambda z: z}


def keras_rnn_layer(cls, cfg, w, x):
    kernel, rec = w[0], w[1]
    bias = w[2] if cfg.get("use_bias", True) else None
    U = rec.shape[0]
    act, ract = _ACTS[cfg.get("activation", "tanh")], _ACTS[cfg.get("recurrent_activation", "sigmoid")]
    xs = x[:, ::-1] if cfg.get("go_backwards", False) else x
    h = np.zeros((x.shape[0], U))
    c, out = np.zeros_like(h), []
    for t in range(xs.shape[1]):
        xt = xs[:, t]
        if cls == "SimpleRNN":
            h = act(xt @ kernel + h @ rec + (0 if bias is None else bias))
        elif cls == "LSTM":
            z = xt @ kernel + h @ rec + (0 if bias is None else bias)
            i, f, g, o = ract(z[:, :U]), ract(z[:, U:2 * U]), act(z[:, 2 * U:3 * U]), ract(z[:, 3 * U:])
            c = f * c + i * g
            h = o * act(c)
        elif cfg["reset_after"]:
            xz = xt @ kernel + (0 if bias is None else bias[0])
            hz = h @ rec + (0 if bias is None else bias[1])
            z, r = ract(xz[:, :U] + hz[:, :U]), ract(xz[:, U:2 * U] + hz[:, U:2 * U])
            hh = act(xz[:, 2 * U:] + r * hz[:, 2 * U:])
            h = z * h + (1 - z) * hh
        else:
            xz = xt @ kernel + (0 if bias is None else bias)
            z, r = ract(xz[:, :U] + h @ rec[:, :U]), ract(xz[:, U:2 * U] + h @ rec[:, U:2 * U])
            hh = act(xz[:, 2 * U:] + (r * h) @ rec[:, 2 * U:])
            h = z * h + (1 - z) * hh
        out.append(h)
    return np.stack(out, 1) if cfg.get("return_sequences", False) else h


def keras_forward(configs, weights, x):
    """A Keras model's output from its layer entries ({"class_name", "config"}) and weights."""
    w = list(weights)
    for e in configs:
        cls, cfg = e["class_name"], e["config"]
        if cls in ("InputLayer", "Dropout"):
            continue
        if cls == "Embedding":
            x = w.pop(0)[x]
        elif cls == "Dense":
            k = w.pop(0)
            b = w.pop(0) if cfg.get("use_bias", True) else 0
            x = _ACTS[cfg.get("activation") or "linear"](x @ k + b)
        elif cls == "Bidirectional":
            icls, icfg = cfg["layer"]["class_name"], cfg["layer"]["config"]
            n = 2 + bool(icfg.get("use_bias", True))
            y = keras_rnn_layer(icls, icfg, w[:n], x)
            yr = keras_rnn_layer(icls, dict(icfg, go_backwards=True), w[n:2 * n], x)
            del w[:2 * n]
            if icfg.get("return_sequences", False):
                yr = yr[:, ::-1]
            mm = cfg.get("merge_mode", "concat")
            x = np.concatenate([y, yr], -1) if mm == "concat" else y + yr if mm == "sum" else (y + yr) / 2
        else:
            n = 2 + bool(cfg.get("use_bias", True))
            x = keras_rnn_layer(cls, cfg, w[:n], x)
            del w[:n]
    assert not w, f"{len(w)} weight arrays left over"
    return x


def _init(name):
    return {"module": "keras.initializers", "class_name": name, "config": {"seed": None}, "registered_name": None}


def keras3_config(cls, **kw):
    """What Keras 3's ``layer.get_config()`` returns (all keys, Keras's defaults), updated by kw."""
    cfg = {"name": cls.lower(), "trainable": True,
           "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
                     "registered_name": None}}
    if cls in ("SimpleRNN", "LSTM", "GRU"):
        cfg.update(return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                   unroll=False, zero_output_for_mask=False, activation="tanh", use_bias=True,
                   kernel_initializer=_init("GlorotUniform"), recurrent_initializer=_init("Orthogonal"),
                   bias_initializer=_init("Zeros"), kernel_regularizer=None, recurrent_regularizer=None,
                   bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                   recurrent_constraint=None, bias_constraint=None, dropout=0.0, recurrent_dropout=0.0,
                   seed=None)
        if cls != "SimpleRNN":
            cfg["recurrent_activation"] = "sigmoid"
        if cls == "GRU":
            cfg["reset_after"] = True
        if cls == "LSTM":
            cfg["unit_forget_bias"] = True
    elif cls == "Dense":
        cfg.update(activation="linear", use_bias=True, kernel_initializer=_init("GlorotUniform"),
                   bias_initializer=_init("Zeros"), kernel_regularizer=None, bias_regularizer=None,
                   kernel_constraint=None, bias_constraint=None)
    elif cls == "Embedding":
        cfg.update(embeddings_initializer=_init("RandomUniform"), embeddings_regularizer=None,
                   activity_regularizer=None, embeddings_constraint=None, mask_zero=False)
    cfg.update(kw)
    return cfg


def _entry(cls, **kw):
    return {"module": "keras.layers", "class_name": cls, "config": keras3_config(cls, **kw), "registered_name": None}


def _gru_weights(rng, d, u, bias):
    """Keras GRU weights; bias None, "after" ((2, 3u), reset_after=True) or "before" ((3u,))."""
    w = [rng.standard_normal((d, 3 * u)) * 0.5, rng.standard_normal((u, 3 * u)) * 0.5]
    if bias:
        w.append(rng.standard_normal((2, 3 * u) if bias == "after" else 3 * u) * 0.5)
    return w


def _snapshot(m):
    return {k: np.array(v) for k, v in m.parameters().items()}


def _assert_unchanged(m, before):
    after = m.parameters()
    assert set(after) == set(before)
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)


def test_keras_gru_reset_after_true_with_configs_matches_the_keras_formula():
    rng = np.random.default_rng(1)
    w = _gru_weights(rng, 3, 5, "after") + _gru_weights(rng, 5, 5, "after") + [rng.standard_normal((5, 2)),
                                                                              rng.standard_normal(2)]
    # Bare layer.get_config() dicts: the class is told by the keys only it writes.
    cfgs = [keras3_config("GRU", units=5, return_sequences=True), keras3_config("GRU", units=5, return_sequences=True),
            keras3_config("Dense", units=2)]
    m = fr.Sequential([fr.GRU(3, 5, num_layers=2, dtype=np.float64), fr.Dense(2)])
    m.set_keras_weights(w, configs=cfgs)
    x = rng.standard_normal((4, 6, 3))
    ref = keras_forward([{"class_name": c, "config": k} for c, k in zip(("GRU", "GRU", "Dense"), cfgs)], w, x)
    np.testing.assert_allclose(m.predict(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [None, "before"])
@pytest.mark.parametrize("with_configs", [False, True])
def test_keras_gru_reset_after_false_is_refused_not_loaded(bias, with_configs):
    rng = np.random.default_rng(2)
    w = _gru_weights(rng, 3, 4, bias)
    x = rng.standard_normal((4, 6, 3))
    # The two formulations really differ on these weights (the 0.30 case is bias=None):
    # loading them as reset_after=True weights would give another model.
    cfg = keras3_config("GRU", units=4, return_sequences=True, use_bias=bias is not None, reset_after=False)
    before_ = keras_rnn_layer("GRU", cfg, w, x)
    after_ = keras_rnn_layer("GRU", dict(cfg, reset_after=True),
                             w[:2] + ([np.stack([w[2], np.zeros_like(w[2])])] if bias else []), x)
    assert np.abs(before_ - after_).max() > 0.05
    m = fr.Sequential([fr.GRU(3, 4, bias=bias is not None, dtype=np.float64)], seed=0)
    old = _snapshot(m)
    with pytest.raises(ValueError, match="reset_after") as e:
        m.set_keras_weights(w, configs=[cfg] if with_configs else None)
    if bias or with_configs:
        assert "formulations differ" in str(e.value)
    _assert_unchanged(m, old)
    # Saying reset_after=True does not override what the weights or the configs show.
    if bias or with_configs:
        with pytest.raises(ValueError, match="reset_after=False"):
            m.set_keras_weights(w, reset_after=True, configs=[cfg] if with_configs else None)
        _assert_unchanged(m, old)
    with pytest.raises(ValueError, match="reset_after"):
        m.set_keras_weights(w, reset_after=False)
    _assert_unchanged(m, old)


@pytest.mark.parametrize("our_bias", [True, False])
def test_keras_gru_without_bias_loads_with_configs_saying_reset_after_true(our_bias):
    rng = np.random.default_rng(3)
    w = _gru_weights(rng, 3, 4, None) + [rng.standard_normal((4, 1)), rng.standard_normal(1)]
    entries = [_entry("GRU", units=4, use_bias=False, return_sequences=True), _entry("Dense", units=1)]
    x = rng.standard_normal((2, 5, 3))
    ref = keras_forward(entries, w, x)
    m = fr.Sequential([fr.GRU(3, 4, bias=our_bias, dtype=np.float64), fr.Dense(1)], seed=0)
    m.set_keras_weights(w, configs=entries)
    np.testing.assert_allclose(m.predict(x), ref, rtol=1e-12, atol=1e-12)
    if our_bias:                                     # Keras use_bias=False: zero biases
        assert not m.parameters()["0.bias_ih_l0"].any() and not m.parameters()["0.bias_hh_l0"].any()
    else:
        # Without configs the bias-less GRU is ambiguous: refused unless reset_after=True is said.
        m2 = fr.Sequential([fr.GRU(3, 4, bias=False, dtype=np.float64), fr.Dense(1)], seed=1)
        old = _snapshot(m2)
        with pytest.raises(ValueError, match="reset_after=True or False"):
            m2.set_keras_weights(w)
        _assert_unchanged(m2, old)
        m2.set_keras_weights(w, reset_after=True)
        np.testing.assert_allclose(m2.predict(x), ref, rtol=1e-12, atol=1e-12)
        with pytest.raises(ValueError, match="reset_after=True or False"):
            fr.keras_to_torch("GRU", w[:2])
        fr.keras_to_torch("GRU", w[:2], reset_after=True)


_GOOD = dict(units=4, return_sequences=True)


@pytest.mark.parametrize("change,match", [
    (dict(activation="relu"), r"activation='relu'.*computes tanh"),
    (dict(recurrent_activation="hard_sigmoid"), r"recurrent_activation='hard_sigmoid'.*piecewise-linear"),
    (dict(units=6), r"units=6.*hidden_size=4"),
    (dict(reset_after=False), r"reset_after=False.*formulations differ"),
    (dict(go_backwards=True), r"go_backwards=True"),
    (dict(return_sequences=False), r"return_sequences=False.*returns all steps"),
    (dict(time_major=True), r"time_major=True"),
    (dict(activation={"module": "my.acts", "class_name": "function", "config": "tanh"}), r"activation="),
    (dict(dtype="int8_from_float32"), r"dtype='int8_from_float32'.*quantized"),
])
def test_keras_configs_that_disagree_are_refused_naming_the_key(change, match):
    rng = np.random.default_rng(4)
    w = _gru_weights(rng, 3, 4, "after") + [rng.standard_normal((4, 2)), rng.standard_normal(2)]
    m = fr.Sequential([fr.GRU(3, 4), fr.Dense(2)], seed=0)
    old = _snapshot(m)
    cfgs = [keras3_config("GRU", **dict(_GOOD, **change)), keras3_config("Dense", units=2)]
    with pytest.raises(ValueError, match=r"configs\[0\] \(GRU, 'gru'\) for model layer 0 \(GRU\): " + match):
        m.set_keras_weights(w, configs=cfgs)
    _assert_unchanged(m, old)


@pytest.mark.parametrize("cfgs,match", [
    ([_entry("GRU", **_GOOD), _entry("Dense", units=2, activation="softmax")], r"activation='softmax'"),
    ([_entry("GRU", **_GOOD), _entry("Dense", units=3)], r"units=3"),
    ([_entry("LSTM", **_GOOD), _entry("Dense", units=2)], r"class='LSTM'.*is a GRU"),
    ([_entry("Bidirectional", layer=_entry("GRU", **_GOOD)), _entry("Dense", units=2)], r"unidirectional"),
    ([{"class_name": "GRU", "config": {"units": 4, "recurrent_activation": "sigmoid"}}, _entry("Dense", units=2)],
     r"has no 'reset_after'"),                      # early Keras 2 GRUs wrote none (and computed reset_after=False)
    ([_entry("GRU", **_GOOD)], r"configs describe 1 Keras layers with weights"),
    ([_entry("GRU", **_GOOD), _entry("Conv1D"), _entry("Dense", units=2)], r"configs\[1\]: a Keras Conv1D"),
    ([_entry("GRU", **_GOOD), {"units": 2, "recurrent_activation": "sigmoid"}], r"cannot tell the Keras layer class"),
])
def test_keras_configs_of_other_layers_are_refused(cfgs, match):
    rng = np.random.default_rng(5)
    w = _gru_weights(rng, 3, 4, "after") + [rng.standard_normal((4, 2)), rng.standard_normal(2)]
    m = fr.Sequential([fr.GRU(3, 4), fr.Dense(2)], seed=0)
    old = _snapshot(m)
    with pytest.raises(ValueError, match=match):
        m.set_keras_weights(w, configs=cfgs)
    _assert_unchanged(m, old)


def test_keras_use_bias_and_mask_zero():
    rng = np.random.default_rng(6)
    w = _gru_weights(rng, 3, 4, "after")
    # A Keras Dense without bias loads as a zero bias; without configs it is misread and refused.
    d = fr.Sequential([fr.GRU(3, 4, dtype=np.float64), fr.Dense(2)], seed=0)
    kd = [rng.standard_normal((4, 2))]
    old = _snapshot(d)
    with pytest.raises(ValueError, match=r"too short: 4 arrays.*\(if a Keras layer has use_bias=False"):
        d.set_keras_weights(w + kd)
    _assert_unchanged(d, old)
    entries = [_entry("GRU", **_GOOD), _entry("Dense", units=2, use_bias=False)]
    d.set_keras_weights(w + kd, configs=entries)
    assert not d.parameters()["1.bias"].any()
    x = rng.standard_normal((2, 5, 3))
    np.testing.assert_allclose(d.predict(x), keras_forward(entries, w + kd, x), rtol=1e-12, atol=1e-12)
    g = fr.Sequential([fr.GRU(3, 4, dtype=np.float64)], seed=0)
    with pytest.raises(ValueError, match=r"bias must have shape \(2, 12\), got \(4, 2\) \(if a Keras layer has use_bias=False"):
        g.set_keras_weights(w[:2] + kd)
    # Keras biases cannot go into a fastrnn layer without them; mask_zero is refused.
    m = fr.Sequential([fr.GRU(3, 4, bias=False)], seed=0)
    old = _snapshot(m)
    with pytest.raises(ValueError, match=r"use_bias=True.*bias=False"):
        m.set_keras_weights(w, configs=[_entry("GRU", **_GOOD)])
    _assert_unchanged(m, old)
    e = fr.Sequential([fr.Embedding(10, 3), fr.RNN(3, 4)], seed=0)
    old = _snapshot(e)
    with pytest.raises(ValueError, match=r"mask_zero=True"):
        e.set_keras_weights([rng.standard_normal((10, 3))] + _keras_weights("SimpleRNN", 3, 4),
                            configs=[_entry("Embedding", input_dim=10, output_dim=3, mask_zero=True),
                                     _entry("SimpleRNN", **_GOOD)])
    _assert_unchanged(e, old)


def test_keras_model_config_forms_bidirectional_and_last_step():
    """keras_model.get_config() (InputLayer and Dropout entries skipped), a Keras 3
    Bidirectional with its backward_layer, and Keras return_sequences=False against LastStep."""
    rng = np.random.default_rng(7)
    w = _keras_weights("LSTM", 3, 4) + _keras_weights("LSTM", 3, 4) + _keras_weights("SimpleRNN", 8, 5) \
        + [rng.standard_normal((5, 2)), rng.standard_normal(2)]
    inner = _entry("LSTM", units=4, return_sequences=True)
    back = _entry("LSTM", units=4, return_sequences=True, go_backwards=True)
    layers = [{"module": "keras.layers", "class_name": "InputLayer",
               "config": {"batch_shape": [None, None, 3], "dtype": "float32", "sparse": False, "name": "input"}},
              _entry("Bidirectional", layer=inner, backward_layer=back, merge_mode="concat"),
              _entry("Dropout", rate=0.2, seed=None, noise_shape=None),
              _entry("SimpleRNN", units=5, activation="relu", return_sequences=False),
              _entry("Dense", units=2)]
    model_config = {"name": "sequential", "trainable": True, "layers": layers, "build_input_shape": [None, None, 3]}
    f8 = dict(dtype=np.float64)
    m = fr.Sequential([fr.LSTM(3, 4, bidirectional=True, **f8), fr.Dropout(0.2),
                       fr.RNN(8, 5, nonlinearity="relu", **f8), fr.LastStep(), fr.Dense(2)])
    old = _snapshot(m)
    with pytest.raises(ValueError, match="relu RNN"):            # the activation is not in the weights
        m.set_keras_weights(w)
    _assert_unchanged(m, old)
    m.set_keras_weights(w, configs=model_config)
    x = rng.standard_normal((3, 5, 3))
    np.testing.assert_allclose(m.predict(x), keras_forward(layers, w, x), rtol=1e-12, atol=1e-12)
    # The same as json.loads(keras_model.to_json()).
    m.set_keras_weights(w, configs={"class_name": "Sequential", "config": model_config})
    # A bidirectional LastStep is not Keras's return_sequences=False (the backward direction).
    b = fr.Sequential([fr.LSTM(3, 4, bidirectional=True), fr.LastStep()], seed=0)
    old = _snapshot(b)
    with pytest.raises(ValueError, match=r"\['layer'\]: return_sequences=False.*returns all steps"):
        b.set_keras_weights(w[:6], configs=[_entry("Bidirectional", layer=_entry("LSTM", units=4))])
    with pytest.raises(ValueError, match=r"merge_mode='sum'.*'concat'"):
        b.set_keras_weights(w[:6], configs=[_entry("Bidirectional", layer=inner, merge_mode="sum")])
    with pytest.raises(ValueError, match=r"backward_layer'\]: go_backwards=False"):
        b.set_keras_weights(w[:6], configs=[_entry("Bidirectional", layer=inner, backward_layer=inner)])
    _assert_unchanged(b, old)


def _mixed_model(seed):
    f8 = dict(dtype=np.float64)
    return fr.Sequential([fr.Embedding(10, 3),
                          fr.Recurrent(fr.GRU(3, 4, num_layers=2, bidirectional=True, **f8), merge_mode="mean"),
                          fr.RNN(4, 5, nonlinearity="relu", bias=False, **f8),
                          fr.Recurrent(fr.LSTM(5, 3, **f8), return_sequences=False),
                          fr.Dense(2, activation="tanh")], seed=seed)


def test_keras_round_trip_with_configs():
    import json
    m = _mixed_model(0)
    with pytest.raises(ValueError, match="relu RNN.*with_config=True"):
        m.get_keras_weights()
    w, cfgs = m.get_keras_weights(with_config=True)
    json.dumps(cfgs)                                  # plain JSON, as Keras writes it
    assert [c["class_name"] for c in cfgs] == ["Embedding", "Bidirectional", "Bidirectional", "SimpleRNN",
                                               "LSTM", "Dense"]
    assert cfgs[1]["config"]["layer"]["config"]["reset_after"] is True
    assert cfgs[2]["config"]["merge_mode"] == "ave" and cfgs[1]["config"]["merge_mode"] == "concat"
    # The Keras reading of these configs and weights is the fastrnn model.
    tok = np.random.default_rng(8).integers(0, 10, (3, 6))
    np.testing.assert_allclose(keras_forward(cfgs, w, tok), m.predict(tok), rtol=1e-12, atol=1e-12)
    other = _mixed_model(1)
    other.set_keras_weights(w, configs=cfgs)
    # Exact on the Keras side (PyTorch's two LSTM biases come back as their sum plus zeros).
    w2, cfgs2 = other.get_keras_weights(with_config=True)
    assert cfgs2 == cfgs and len(w2) == len(w)
    for a, b in zip(w2, w):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(other.predict(tok), m.predict(tok), rtol=1e-12, atol=1e-12)
    # Engine layers on their own, too.
    g = fr.GRU(2, 3, bias=False, dtype=np.float64, seed=2)
    gw, gc = fr.get_keras_weights(g, with_config=True)
    g2 = fr.GRU(2, 3, bias=False, dtype=np.float64, seed=3)
    fr.set_keras_weights(g2, gw, configs=gc)
    np.testing.assert_array_equal(g2.parameters()["weight_hh_l0"], g.parameters()["weight_hh_l0"])


def test_set_keras_weights_keeps_its_old_signature():
    rng = np.random.default_rng(9)
    w = _gru_weights(rng, 3, 4, "after")
    m = fr.Sequential([fr.GRU(3, 4)], seed=0)
    m.set_keras_weights(w, True)                      # reset_after, positionally, as before
    fr.set_keras_weights(m, w, True)
    with pytest.raises(TypeError, match="configs="):
        m.set_keras_weights(w, [keras3_config("GRU", **_GOOD)])
