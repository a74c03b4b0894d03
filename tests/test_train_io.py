"""Save / load: identical predictions, exact resumption, atomic writes, versioning."""
import json
import os
import zipfile

import numpy as np
import pytest

import fastrnn as fr
import fastrnn.train.io as frio
from test_train_helpers import sign_of_sum_task, sine_windows


def _models():
    rng = np.random.default_rng(0)
    yield (fr.Sequential([fr.Embedding(9, 4), fr.Recurrent(fr.GRU(4, 6, bidirectional=True), merge_mode="sum"),
                          fr.Dropout(0.2), fr.LastStep(), fr.Dense(3, activation="tanh")], seed=0),
           rng.integers(0, 9, (5, 7)), {})
    yield (fr.Sequential([fr.RNN(2, 5, nonlinearity="relu", num_layers=2, dtype=np.float64), fr.Dense(2)], seed=1),
           rng.standard_normal((4, 6, 2)), {"lengths": np.array([6, 1, 3, 5])})
    yield (fr.Decoder("LSTM", 5, output_size=2, teacher_forcing=fr.TeacherForcing("linear", c=0.2), seed=2),
           rng.standard_normal((3, 2, 2)), {"steps": 4})
    yield (fr.Seq2Seq(fr.GRU(3, 5), fr.Decoder("GRU", 5, vocab_size=7), seed=3),
           rng.standard_normal((3, 4, 3)), {"steps": 3})


@pytest.mark.parametrize("model,X,kw", list(_models()), ids=["sequential-tokens", "sequential-f64", "decoder", "seq2seq"])
def test_load_restores_identical_predictions(tmp_path, model, X, kw):
    model.compile("mse", fr.RMSprop(0.01, clipnorm=1.0))
    path = tmp_path / "model.frnn"
    model.save(path)
    loaded = fr.load(path)
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded.predict(X, **kw), model.predict(X, **kw))
    assert isinstance(loaded.optimizer, fr.RMSprop) and loaded.optimizer.clipnorm == 1.0
    assert fr.load(path, compile=False).optimizer is None


def _resumable(seed=0):
    m = fr.Sequential([fr.LSTM(2, 8, num_layers=2, dropout=0.3), fr.Dropout(0.2), fr.LastStep(), fr.Dense(2)],
                      seed=seed)
    return m.compile("cross_entropy", fr.Adam(fr.ExponentialDecay(0.02, 5, 0.5)), metrics=["accuracy"])


def _resumable_seq2seq(seed=0):
    dec = fr.Decoder("GRU", 6, output_size=1, teacher_forcing=fr.TeacherForcing("linear", c=0.3))
    return fr.Seq2Seq(fr.GRU(1, 6), dec, seed=seed).compile("mse", fr.SGD(0.05, momentum=0.9))


@pytest.mark.parametrize("build", [_resumable, _resumable_seq2seq], ids=["sequential", "seq2seq"])
def test_resumed_training_continues_the_same_loss_trajectory(tmp_path, build):
    if build is _resumable:
        X, y = sign_of_sum_task(96, 6)
    else:
        X, y = (a[:, :6] for a in sine_windows(96, 6))
    kw = dict(batch_size=16, validation_split=0.25, verbose=0)
    straight = build().fit(X, y, epochs=4, **kw).history
    first = build()
    first.fit(X, y, epochs=2, **kw)
    first.save(tmp_path / "ckpt.frnn")
    resumed = fr.load(tmp_path / "ckpt.frnn")
    second = resumed.fit(X, y, epochs=2, **kw).history
    # Shuffling, both dropout streams, Adam's moments and the LR schedule all continue from
    # where they were, so the run is bit-identical to the uninterrupted one.
    for k in straight:
        assert straight[k][2:] == second[k], k
    assert resumed.epoch == 4 and resumed.history.history["loss"] == straight["loss"]


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    X, y = sine_windows(8, 5)
    m = fr.Sequential([fr.GRU(1, 4), fr.Dense(1)], seed=0).compile("mse", "adam")
    path = tmp_path / "m.frnn"
    m.save(path)
    before = path.read_bytes()
    m.fit(X, y, epochs=1, verbose=0)
    calls = []

    def crash_midway(a):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return orig(a)

    orig = frio._npy_bytes
    monkeypatch.setattr(frio, "_npy_bytes", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        m.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.frnn"]           # no temporary file left behind
    monkeypatch.undo()
    m.save(path)
    np.testing.assert_array_equal(fr.load(path).predict(X), m.predict(X))


def test_file_format_is_versioned_and_checked(tmp_path):
    m = fr.Sequential([fr.GRU(1, 3), fr.Dense(1)])
    path = tmp_path / "m.frnn"
    m.save(path)
    with zipfile.ZipFile(path) as z:
        meta = json.loads(z.read("fastrnn.json"))
        names = z.namelist()
    assert meta["format"] == "fastrnn-model" and meta["format_version"] == frio.FORMAT_VERSION
    assert "weights/0.weight_ih_l0.npy" in names
    meta["format_version"] = frio.FORMAT_VERSION + 1
    future = tmp_path / "future.frnn"
    with zipfile.ZipFile(future, "w") as z:
        z.writestr("fastrnn.json", json.dumps(meta))
    with pytest.raises(ValueError, match="upgrade fastrnn"):
        fr.load(future)
    (tmp_path / "junk.frnn").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a fastrnn model file"):
        fr.load(tmp_path / "junk.frnn")


def test_leaky_rnn_configuration_survives_save_load(tmp_path):
    m = fr.Sequential([fr.RNN(1, 4, leak=0.3), fr.Dense(1)], seed=0)
    m.save(tmp_path / "leaky.frnn")
    m2 = fr.load(tmp_path / "leaky.frnn")
    assert m2.layers[0].layer.leak == 0.3
    x = np.ones((2, 5, 1), np.float32)
    np.testing.assert_array_equal(m2.predict(x), m.predict(x))
