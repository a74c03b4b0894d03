"""Shared objects under threads, changes that apply all or nothing, NaN handling in fit, and
errors that name the argument (issue: trustworthy under threads, bad input and faults)."""
import threading
import warnings

import numpy as np
import pytest

import fastrnn as fr


def _hammer(f, inputs, threads=4):
    """Call f on every input from `threads` threads at once; the results must equal the
    single-threaded ones bit for bit. Returns the number of differing results and errors."""
    expected = [f(x) for x in inputs]
    wrong, errors = [0], []
    start = threading.Barrier(threads)

    def work(i):
        try:
            start.wait()
            for j in range(i, len(inputs), threads):
                got = f(inputs[j])
                if not np.array_equal(got, expected[j], equal_nan=True):
                    wrong[0] += 1
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not any(t.is_alive() for t in ts), "a thread hung"
    return wrong[0], errors


# Shapes that take each inference path: batch 1 (units split or not), small batches (hoisted
# input projection, which uses a per-call buffer) and a larger one (fused).
@pytest.mark.parametrize("cls", [fr.RNN, fr.GRU, fr.LSTM])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B,H", [(1, 64), (2, 32), (8, 32)])
def test_shared_layer_inference_from_threads_is_exact(cls, dtype, B, H):
    layer = cls(8, H, num_layers=2, dtype=dtype, seed=0).eval()
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((12, B, 8)).astype(dtype) for _ in range(48)]
    wrong, errors = _hammer(lambda x: layer(x)[0], xs)
    assert not errors and wrong == 0


@pytest.mark.parametrize("mode", ["eval", "no_grad"])
def test_shared_layer_inference_under_no_grad_from_threads(mode):
    layer = fr.GRU(4, 16, dtype=np.float64, seed=0)
    if mode == "eval":
        layer.eval()

    def f(x):
        with fr.no_grad():
            return layer(x)[0]

    xs = [np.random.default_rng(i).standard_normal((9, 3, 4)) for i in range(32)]
    wrong, errors = _hammer(f, xs)
    assert not errors and wrong == 0


@pytest.mark.parametrize("cls", [fr.RNNCell, fr.GRUCell, fr.LSTMCell])
def test_shared_cell_steps_from_threads_are_exact(cls):
    cell = cls(6, 24, dtype=np.float64, seed=0).eval()
    lstm = cls is fr.LSTMCell

    def run(x):
        h = (np.zeros((2, 24)), np.zeros((2, 24))) if lstm else np.zeros((2, 24))
        for t in range(x.shape[0]):
            h = cell(x[t], h)
        return h[0] if lstm else h

    xs = [np.random.default_rng(i).standard_normal((10, 2, 6)) for i in range(24)]
    wrong, errors = _hammer(run, xs)
    assert not errors and wrong == 0


def test_shared_sequential_predict_from_threads_is_exact():
    for dtype in (np.float32, np.float64):
        m = fr.Sequential([fr.LSTM(3, 16, num_layers=2, dtype=dtype), fr.GRU(16, 8, dtype=dtype),
                           fr.LastStep(), fr.Dense(2)], seed=0)
        xs = [np.random.default_rng(i).standard_normal((1 + i % 3, 7, 3)).astype(dtype) for i in range(40)]
        wrong, errors = _hammer(m.predict, xs)
        assert not errors and wrong == 0


def test_shared_esn_predict_from_threads_is_exact():
    rng = np.random.default_rng(0)
    esn = fr.ESN(2, 50, washout=5, seed=0).fit(rng.standard_normal((3, 40, 2)), rng.standard_normal((3, 40, 1)))
    xs = [rng.standard_normal((2, 30, 2)) for _ in range(24)]
    wrong, errors = _hammer(esn.predict, xs)
    assert not errors and wrong == 0


def test_two_models_training_in_two_threads_match_sequential_runs():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 10, 3)), rng.standard_normal((64, 1))

    def train(seed):
        m = fr.Sequential([fr.LSTM(3, 16, dtype=np.float64), fr.LastStep(), fr.Dense(1)], seed=seed)
        m.compile("mse", fr.Adam(1e-2))
        m.fit(X, y, epochs=3, batch_size=8, verbose=0)
        return m.state_dict()

    alone = [train(s) for s in (1, 2)]
    results = {}
    ts = [threading.Thread(target=lambda s=s: results.__setitem__(s, train(s))) for s in (1, 2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    for s, ref in zip((1, 2), alone):
        for k in ref:
            assert np.array_equal(results[s][k], ref[k]), k


def test_training_one_layer_from_two_threads_at_once_is_refused_not_wrong():
    layer = fr.LSTM(16, 64, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((200, 8, 16))
    errors, done = [], []

    def work():
        try:
            for _ in range(20):
                layer(x)
                layer.backward(np.ones((200, 8, 64)))
            done.append(1)
        except RuntimeError as e:
            errors.append(str(e))

    ts = [threading.Thread(target=work) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    # Overlapping training calls either happened (and were refused, naming the cause) or the
    # threads never overlapped; a refusal must explain itself.
    assert len(errors) + len(done) == 2
    for e in errors:
        assert "training mode" in e and "thread" in e


def test_pickled_layer_works_and_keeps_weights():
    import pickle
    layer = fr.GRU(3, 5, seed=0)
    layer(np.ones((4, 2, 3), np.float32))
    clone = pickle.loads(pickle.dumps(layer))
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    assert np.array_equal(clone.eval()(x)[0], layer.eval()(x)[0])


# ---- all or nothing ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.array(["a", "b", "c"]), np.ones(3, complex),
                                 np.array([None] * 3, dtype=object), np.ones(3, bool), "abc"])
def test_load_state_dict_with_one_bad_entry_changes_nothing(bad):
    m = fr.Sequential([fr.GRU(2, 1), fr.Dense(3)], seed=0)
    m.predict(np.zeros((1, 2, 2)))
    before = m.state_dict()
    sd = {k: v + 1 for k, v in before.items()}
    bad_key = sorted(sd)[-1]
    sd[bad_key] = bad if not isinstance(bad, np.ndarray) else bad.reshape(before[bad_key].shape) \
        if bad.size == before[bad_key].size else bad
    with pytest.raises(TypeError, match=bad_key.split(".")[-1]):
        m.load_state_dict(sd)
    after = m.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_engine_load_state_dict_refuses_complex_without_writing():
    lstm = fr.LSTM(2, 3, seed=0)
    before = lstm.state_dict()
    sd = {k: np.ones_like(v) for k, v in before.items()}
    sd["weight_hh_l0"] = sd["weight_hh_l0"].astype(complex)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match="weight_hh_l0"):
            lstm.load_state_dict(sd)
    assert all(np.array_equal(before[k], lstm.state_dict()[k]) for k in before)
    with pytest.raises(TypeError, match="mapping"):
        lstm.load_state_dict([("weight_hh_l0", 1)])


def test_fit_with_a_metric_that_cannot_read_the_targets_fails_before_any_update():
    m = fr.Sequential([fr.LSTM(2, 4), fr.LastStep(), fr.Dense(3)], seed=0)
    m.compile("cross_entropy", metrics=["mae"])
    before = None
    for N in (8, 3):  # (3, 3) outputs against (3,) labels would broadcast without the check
        X = np.random.default_rng(N).random((N, 5, 2))
        y = np.arange(N) % 3
        m.predict(X)
        before = m.state_dict()
        with pytest.raises(ValueError, match="metric 'mae'"):
            m.fit(X, y, verbose=0)
        assert all(np.array_equal(before[k], m.state_dict()[k]) for k in before)
        assert m.step == 0


def test_same_layer_twice_is_refused():
    lstm, dense = fr.LSTM(4, 4), fr.Dense(4)
    with pytest.raises(ValueError, match="same LSTM object"):
        fr.Sequential([lstm, lstm])
    with pytest.raises(ValueError, match="same Dense object"):
        fr.Sequential([fr.LSTM(4, 4), dense, dense])
    rec = fr.Recurrent(fr.GRU(4, 4))
    with pytest.raises(ValueError, match="same"):
        fr.Sequential([rec, fr.Recurrent(rec.layer)])


# ---- NaN in training ---------------------------------------------------------------------
def test_fit_stops_on_a_nan_loss_naming_epoch_and_batch_and_keeps_finite_weights():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 5, 2)), rng.standard_normal((64, 1)) * 1e3
    m = fr.Sequential([fr.RNN(2, 8, nonlinearity="relu", dtype=np.float32), fr.LastStep(), fr.Dense(1)], seed=0)
    m.compile("mse", fr.SGD(1e6))
    with pytest.warns(RuntimeWarning, match=r"at batch \d+ of epoch \d+"):
        m.fit(X, y, epochs=5, batch_size=8, verbose=0)
    assert m.stop_training and "epoch" in m.stop_reason
    assert all(np.isfinite(v).all() for v in m.state_dict().values())
    assert m.epoch < 5


def test_train_on_batch_with_a_non_finite_loss_leaves_the_weights_alone():
    m = fr.Sequential([fr.GRU(2, 4, dtype=np.float64), fr.LastStep(), fr.Dense(1)], seed=0)
    m.compile("mse", "sgd")
    X = np.ones((4, 3, 2))
    m.predict(X)
    before = m.state_dict()
    with np.errstate(all="ignore"):
        loss = m.train_on_batch(X, np.full((4, 1), 1e200))  # the squared error overflows
    assert loss == np.inf
    after = m.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


# ---- errors that name the argument -------------------------------------------------------
def _model():
    m = fr.Sequential([fr.LSTM(2, 4), fr.LastStep(), fr.Dense(1)], seed=0)
    m.compile("mse")
    return m


@pytest.mark.parametrize("call,exc,pattern", [
    (lambda m: m.train_on_batch(np.ones((2, 4, 2)), np.ones((2, 1)), tbptt=-1), ValueError, "tbptt"),
    (lambda m: m.train_on_batch(np.ones((2, 4, 2)), np.ones((2, 1)), tbptt=0), ValueError, "tbptt"),
    (lambda m: m.train_on_batch(np.ones((2, 4, 2)), np.ones((2, 1)), tbptt=1.5), ValueError, "tbptt"),
    (lambda m: m.train_on_batch(np.ones((2, 4, 2)), None), ValueError, "y is None"),
    (lambda m: m.fit(np.ones((2, 4, 2)), None, verbose=0), ValueError, "y is None"),
    (lambda m: m.evaluate(np.ones((2, 4, 2)), None), ValueError, "y is None"),
    (lambda m: m.fit(np.ones((2, 4, 2)), np.ones((2, 1)), validation_data=(np.ones((2, 4, 2)), None),
                     verbose=0), ValueError, "validation_data y"),
])
def test_training_arguments_are_named(call, exc, pattern):
    m = _model()
    with pytest.raises(exc, match=pattern):
        call(m)


@pytest.mark.parametrize("hx", [np.zeros((1, 4), np.float32), (np.zeros((1, 4), np.float32),), 3])
def test_lstm_cell_state_must_be_a_pair(hx):
    cell = fr.LSTMCell(2, 4)
    with pytest.raises(TypeError, match="hx"):
        cell(np.zeros((1, 2), np.float32), hx)
    cell(np.zeros((1, 2), np.float32))
    with pytest.raises(TypeError, match="dstate"):
        cell.backward(hx)


@pytest.mark.parametrize("kw,pattern", [
    (dict(spectral_radius=float("inf")), "spectral_radius"), (dict(spectral_radius=-1), "spectral_radius"),
    (dict(ridge=float("nan")), "ridge"), (dict(ridge=float("inf")), "ridge"),
    (dict(input_scaling=float("inf")), "input_scaling"), (dict(input_scaling=-1), "input_scaling"),
    (dict(bias_scaling=float("nan")), "bias_scaling"), (dict(bias_scaling="1"), "bias_scaling"),
    (dict(sparsity=float("nan")), "sparsity"), (dict(dtype=np.int64), "dtype"),
])
def test_esn_arguments_are_named(kw, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        fr.ESN(2, 20, **kw)


def test_esn_h0_shape_is_named():
    rng = np.random.default_rng(0)
    esn = fr.ESN(1, 10, washout=2, seed=0).fit(rng.random((20, 1)), rng.random((20, 1)))
    for h0 in (np.zeros(7), np.zeros((2, 10)), np.zeros((1, 1, 10))):
        with pytest.raises(ValueError, match="h0"):
            esn.predict(rng.random((20, 1)), h0=h0)
    with pytest.raises(TypeError, match="h0"):
        esn.predict(rng.random((20, 1)), h0=np.array(["x"] * 10))
    a = esn.predict(rng.random((20, 1)), h0=np.zeros(10))
    assert a.shape == (20, 1)
    with pytest.raises(ValueError, match="washout"):
        esn.fit(rng.random((20, 1)), rng.random((20, 1)), washout=1.5)


def test_training_cell_warns_when_its_tape_grows_without_backward():
    cell = fr.GRUCell(2, 3)
    x, h = np.zeros((1, 2), np.float32), None
    with pytest.warns(RuntimeWarning, match="eval"):
        for _ in range(cell._TAPE_WARN):
            h = cell(x, h)
    cell.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(cell._TAPE_WARN):
            h = cell(x, h)
    assert len(cell._tape) == cell._TAPE_WARN


# ---- determinism ----------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [fr.LSTM, fr.GRU])
def test_same_seed_and_threads_train_bit_identically(cls):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((96, 12, 4)).astype(np.float32), rng.standard_normal((96, 1)).astype(np.float32)

    def train():
        m = fr.Sequential([cls(4, 48, num_layers=2, dropout=0.2, bidirectional=True), fr.Dropout(0.1),
                           fr.LastStep(), fr.Dense(1)], seed=3)
        m.compile("mse", fr.Adam(1e-3))
        m.fit(X, y, epochs=2, batch_size=16, validation_split=0.25, verbose=0)
        return m.state_dict(), m.history.history

    (a, ha), (b, hb) = train(), train()
    assert ha == hb
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_shared_seq2seq_predict_from_threads_is_exact():
    rng = np.random.default_rng(0)
    model = fr.Seq2Seq(fr.LSTM(1, 16), fr.Decoder("LSTM", hidden_size=16, output_size=1),
                       start="last_input", seed=0)
    model.compile("mse")
    model.fit(rng.random((32, 10, 1)), rng.random((32, 5, 1)), epochs=1, verbose=0)
    xs = [rng.random((1 + i % 3, 10, 1)) for i in range(40)]
    wrong, errors = _hammer(lambda x: model.predict(x, steps=6), xs)
    assert not errors and wrong == 0
    assert model.output_steps == 5  # predict's steps= never leaks into the shared model


@pytest.mark.parametrize("make,pattern", [
    (lambda: fr.LSTM(2, 3, seed=-1), "seed"), (lambda: fr.GRUCell(2, 3, seed=1.5), "seed"),
    (lambda: fr.ESN(1, 5, seed=-1), "seed"), (lambda: fr.LSTM(2, 3, dropout=None), "dropout"),
    (lambda: fr.LSTM(2, 3, dropout="0.5"), "dropout"), (lambda: fr.RNN(2, 3, leak=[0.5]), "leak"),
    (lambda: fr.LSTMCell(2 ** 63, 3), "input_size"), (lambda: fr.RNN(1, 10 ** 30), "hidden_size"),
    (lambda: fr.ESN(1, 10 ** 30), "reservoir_size"),
    (lambda: fr.RNN(2, 3)([[1.0, 2.0], [3.0]]), "x"),
    (lambda: fr.LSTM(3, 4)(np.broadcast_to(np.float32(0), (2, 2, 2 ** 31))), "features"),
    (lambda: fr.GRUCell(4, 5)(np.broadcast_to(np.float32(0), (3, 2 ** 40))), "x"),
    (lambda: fr.Sequential([fr.GRU(3, 5), fr.Dense(1)]).compile().predict([[1.0, 2.0], [3.0]]), "X"),
    (lambda: _model().fit(np.ones((3, 2, 2)), np.ones((3, 1)), sample_weight=np.array(["1", "2", "3"]),
                          verbose=0), "sample_weight"),
    (lambda: fr.ESN(1, 5, washout=0, seed=0).fit(np.ones((4, 1)), "abc"), "Y"),
    (lambda: fr.ESN(1, 5, washout=0, seed=0).fit(np.ones((4, 1)), np.ones((4, 0))), "Y"),
    (lambda: fr.ESN(1, 10, ridge=0.0, washout=0, seed=0).fit(np.ones((4, 1)), np.ones((4, 1))), "ridge"),
])
def test_more_arguments_are_named_before_any_allocation(make, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        make()


def test_minus_zero_input_scaling_is_zero():
    esn = fr.ESN(1, 5, input_scaling=-0.0, seed=0)
    assert not esn.reservoir.state_dict()["weight_ih_l0"].any()


def test_byte_swapped_inputs_give_the_native_result():
    cell = fr.GRUCell(2, 2, seed=0)
    x, h = np.ones((1, 2), np.float32), np.full((1, 2), 0.5, np.float32)
    assert np.array_equal(cell(x.astype(">f4"), h.astype(">f4")), cell(x, h))
    layer = fr.LSTM(2, 3, seed=0).eval()
    xs = np.random.default_rng(0).standard_normal((4, 2, 2)).astype(np.float32)
    assert np.array_equal(layer(xs.astype(">f4"))[0], layer(xs)[0])


def test_tiny_sparse_reservoirs_are_drawn_until_usable():
    for seed in range(40):  # 1x1 at sparsity 0.9 is zero one draw in ten
        esn = fr.ESN(2, 1, sparsity=0.9, seed=seed)
        assert esn.reservoir.state_dict()["weight_hh_l0"].any()


def test_cell_batch_beyond_int_max_is_refused_before_copying():
    with pytest.raises(ValueError, match="2\\*\\*31"):
        fr.GRUCell(4, 5, dtype=np.float64)(np.broadcast_to(np.zeros(()), (2 ** 40, 4)))


def test_cli_refuses_to_save_a_diverged_model(tmp_path, capsys):
    from fastrnn import cli
    csv = tmp_path / "s.csv"
    csv.write_text("value\n" + "\n".join(f"{np.sin(i / 4):.4f}" for i in range(60)) + "\n")
    out = tmp_path / "m.frnn"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            rc = cli.main(["train", "--csv", str(csv), "--hidden", "2", "--epochs", "1", "--window", "1", "-q",
                           "--plot", "none", "-o", str(out), "--lr", "1e308", "--batch-size", "8"])
    assert rc != 0 and not out.exists()
    assert "diverged" in capsys.readouterr().err
