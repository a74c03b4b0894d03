"""fit / evaluate / predict, callbacks, progress output and input validation."""
import csv

import numpy as np
import pytest

import fastrnn as fr
from test_train_helpers import sign_of_sum_task, sine_windows


def _classifier(seed=0, **compile_kw):
    m = fr.Sequential([fr.LSTM(2, 8), fr.LastStep(), fr.Dense(2)], seed=seed)
    return m.compile(compile_kw.get("loss", "cross_entropy"), compile_kw.get("optimizer", fr.Adam(0.02)),
                     metrics=["accuracy"])


def test_fit_returns_history_and_evaluate_matches_manual_loss():
    X, y = sign_of_sum_task(96, 6)
    m = _classifier()
    h = m.fit(X, y, epochs=3, batch_size=32, validation_split=0.25, verbose=0)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert h.epoch == [0, 1, 2] and all(len(v) == 3 for v in h.history.values())
    # validation_split takes the last quarter, before shuffling (Keras semantics).
    res = m.evaluate(X[72:], y[72:])
    assert res["loss"] == pytest.approx(h.history["val_loss"][-1], rel=1e-6)
    logits = m.predict(X[72:])
    manual = fr.get_loss("cross_entropy")(logits, y[72:])
    assert res["loss"] == pytest.approx(float(manual), rel=1e-5)
    assert res["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y[72:]))
    # A second fit continues the epoch count.
    h2 = m.fit(X, y, epochs=1, verbose=0)
    assert h2.epoch == [3] and len(m.history.history["loss"]) == 4


def test_same_seed_same_training_run():
    X, y = sign_of_sum_task(64, 5)
    runs = [_classifier(seed=3).fit(X, y, epochs=2, batch_size=16, verbose=0).history["loss"] for _ in range(2)]
    assert runs[0] == runs[1]
    other = _classifier(seed=4).fit(X, y, epochs=2, batch_size=16, verbose=0).history["loss"]
    assert other != runs[0]


def test_sample_weight_zero_removes_samples():
    X, y = sign_of_sum_task(40, 5)
    sw = np.r_[np.ones(20), np.zeros(20)]
    a = _classifier(seed=1)
    a.fit(X, y, epochs=2, batch_size=40, shuffle=False, sample_weight=sw, verbose=0)
    b = _classifier(seed=1)
    # Same optimizer steps as a full-batch run that only ever saw the first 20 samples.
    b.fit(X[:20], y[:20], epochs=2, batch_size=20, shuffle=False, verbose=0)
    for k, v in a.state_dict().items():
        np.testing.assert_allclose(v, b.state_dict()[k], rtol=1e-5, atol=1e-6)


def test_progress_bar_shows_loss_and_rate(capsys):
    X, y = sign_of_sum_task(32, 4)
    _classifier().fit(X, y, epochs=1, batch_size=8, verbose=1)
    err = capsys.readouterr().err
    assert "Epoch 1" in err and "loss=" in err and "accuracy=" in err and "4/4" in err
    assert "step/s" in err or "s/step" in err


def test_verbose_2_prints_one_line_per_epoch(capsys):
    X, y = sign_of_sum_task(32, 4)
    _classifier().fit(X, y, epochs=2, batch_size=8, verbose=2)
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("Epoch")]
    assert len(lines) == 2 and "steps/s" in lines[0]


def test_early_stopping_restores_best_weights():
    X, y = sign_of_sum_task(64, 5)

    class Recorder(fr.Callback):
        def on_train_begin(self, logs=None):
            self.weights = []

        def on_epoch_end(self, epoch, logs=None):
            self.weights.append((logs["val_loss"], self.model.state_dict()))

    rec = Recorder()
    # A huge learning rate makes validation loss wander so patience runs out.
    m = _classifier(optimizer=fr.SGD(5.0))
    es = fr.EarlyStopping(patience=1, restore_best_weights=True)
    h = m.fit(X, y, epochs=30, batch_size=16, validation_split=0.25, callbacks=[rec, es], verbose=0)
    assert len(h.epoch) < 30 and es.stopped_epoch == h.epoch[-1]
    best_val, best_w = min(rec.weights, key=lambda t: t[0])
    assert es.best == best_val
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, best_w[k])


def test_checkpoint_csv_logger_and_lr_scheduler(tmp_path):
    X, y = sign_of_sum_task(48, 4)
    m = _classifier(optimizer=fr.SGD(0.1))
    lrs = []

    class LR(fr.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            lrs.append(self.model.optimizer.lr)

    cbs = [fr.LearningRateScheduler(lambda epoch, lr: 0.1 * 0.5 ** epoch), LR(),
           fr.ModelCheckpoint(tmp_path / "m-{epoch:02d}.frnn", monitor="loss"),
           fr.ModelCheckpoint(tmp_path / "best.frnn", monitor="val_loss", save_best_only=True),
           fr.CSVLogger(tmp_path / "log.csv")]
    h = m.fit(X, y, epochs=3, batch_size=16, validation_split=0.25, callbacks=cbs, verbose=0)
    assert lrs == pytest.approx([0.1, 0.05, 0.025])
    assert sorted(p.name for p in tmp_path.glob("m-*.frnn")) == ["m-01.frnn", "m-02.frnn", "m-03.frnn"]
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert float(rows[2]["val_loss"]) == pytest.approx(h.history["val_loss"][2])
    assert float(rows[1]["lr"]) == pytest.approx(0.05)
    best = int(np.argmin(h.history["val_loss"]))
    restored = fr.load(tmp_path / "best.frnn")
    assert restored.epoch == best + 1


def test_terminate_on_nan_stops_with_a_clear_message():
    X, y = sine_windows(32, 5)
    m = fr.Sequential([fr.RNN(1, 4, nonlinearity="relu"), fr.Dense(1)], seed=0)
    m.compile("mse", fr.SGD(1e6))
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="loss became (nan|inf).*learning rate"):
        h = m.fit(X, y * 1e3, epochs=5, batch_size=8, callbacks=[fr.TerminateOnNaN()], verbose=0)
    assert m.stop_training and len(h.epoch) == 1
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="clipnorm"):
        m.fit(X, y * 1e3, epochs=1, batch_size=8, callbacks=[fr.TerminateOnNaN(raise_error=True)], verbose=0)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"y": np.zeros(10, np.int64)}, ValueError, "X has 20 samples but y has 10"),
    ({"X": np.zeros((0, 5, 2), np.float32), "y": np.zeros(0, np.int64)}, ValueError, "X is empty"),
    ({"batch_size": 0}, ValueError, "batch_size must be a positive integer"),
    ({"batch_size": 2.5}, ValueError, "batch_size"),
    ({"epochs": -1}, ValueError, "epochs"),
    ({"X": np.full((20, 5, 2), np.nan, np.float32)}, ValueError, "X contains NaN"),
    ({"y": np.full((20, 2), np.nan)}, ValueError, "y contains NaN"),
    ({"X": np.zeros((20, 5, 3), np.float32)}, ValueError, r"expects \(batch, time, 2\)"),
    ({"X": np.zeros((20, 2), np.float32)}, ValueError, "X must be 3-D"),
    ({"y": np.zeros((20, 3))}, ValueError, "y does not fit the model output"),
    ({"validation_split": 1.0}, ValueError, "validation_split"),
    ({"lengths": np.full(20, 9)}, ValueError, "lengths must lie in 1..5"),
    ({"validation_data": (np.zeros((4, 5, 2)),)}, ValueError, "validation_data"),
    ({"callbacks": [object()]}, TypeError, "Callback"),
    ({"tbptt": 0}, ValueError, "tbptt"),
])
def test_bad_input_is_rejected_before_training(kwargs, exc, match):
    X, y = sign_of_sum_task(20, 5)
    m = _classifier()
    before = m.state_dict()
    args = dict(X=X, y=y, epochs=1, batch_size=4, verbose=0)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        m.fit(**args)
    assert all(np.array_equal(v, m.state_dict()[k]) for k, v in before.items())


def test_unknown_loss_or_metric_and_uncompiled_model():
    m = fr.Sequential([fr.LSTM(2, 3), fr.Dense(1)])
    with pytest.raises(ValueError, match="unknown loss 'mean_square'"):
        m.compile("mean_square")
    with pytest.raises(ValueError, match="unknown metric"):
        m.compile("mse", metrics=["f1"])
    with pytest.raises(RuntimeError, match="compile"):
        fr.Sequential([fr.LSTM(2, 3)]).fit(np.zeros((2, 3, 2)), np.zeros((2, 3, 3)))


def test_stateful_fit_requires_ordered_fixed_batches():
    X, y = sine_windows(16, 4)
    m = fr.Sequential([fr.Recurrent(fr.GRU(1, 4), stateful=True), fr.Dense(1)]).compile("mse", "sgd")
    with pytest.raises(ValueError, match="shuffle=False"):
        m.fit(X, y, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="batch_size dividing"):
        m.fit(X, y, batch_size=5, shuffle=False, verbose=0)


def test_per_step_sample_weight_mask_equals_lengths_for_a_causal_model():
    X, Y = sine_windows(16, 8, dtype=np.float64)
    lengths = np.random.default_rng(0).integers(1, 9, 16)
    mask = (np.arange(8)[None, :] < lengths[:, None]).astype(float)

    def run(**kw):
        m = fr.Sequential([fr.GRU(1, 4, dtype=np.float64), fr.Dense(1)], seed=0).compile("mse", fr.SGD(0.5))
        m.fit(X, Y, epochs=2, batch_size=4, shuffle=False, verbose=0, **kw)
        return m.state_dict()

    # A unidirectional layer's valid outputs do not depend on the padding, and masked steps
    # send back zero gradient, so masking by weight and by lengths give the same training.
    a, b = run(lengths=lengths), run(sample_weight=mask)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-10, atol=1e-12)
    c = run()
    assert not np.allclose(a["0.weight_hh_l0"], c["0.weight_hh_l0"])


def test_csv_logger_appends_across_fits(tmp_path):
    X, y = sign_of_sum_task(32, 4)
    m = _classifier()
    for _ in range(2):
        m.fit(X, y, epochs=2, batch_size=16, verbose=0, callbacks=[fr.CSVLogger(tmp_path / "log.csv", append=True)])
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert [float(r["loss"]) for r in rows] == pytest.approx(m.history.history["loss"])
