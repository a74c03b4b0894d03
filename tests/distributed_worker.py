"""One training case, run alone (``python distributed_worker.py CASE OUT``) or on N ranks
(``mpiexec -n N python distributed_worker.py CASE OUT``) by tests/test_distributed.py, which
compares the results. Rank 0 writes OUT (an .npz of the final weights and the history);
every rank writes OUT.rank<r>.npy, a digest of its weights, to show that the ranks agree.
"""
import os
import sys

import numpy as np

import fastrnn as fr


def data(n=47, t=9, d=3, dtype="float64", seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, t, d)).astype(dtype)
    return rng, X


def seq_ragged(dtype, out):
    """Sequential LSTM classifier, ragged lengths, validation split, callbacks."""
    rng, X = data(dtype=dtype)
    lengths = rng.integers(1, X.shape[1] + 1, len(X))
    y = rng.integers(0, 3, len(X))
    m = fr.Sequential([fr.LSTM(3, 8, num_layers=2, dtype=dtype), fr.LastStep(), fr.Dense(3)],
                      seed=0, dtype=dtype)
    m.compile("cross_entropy", fr.Adam(1e-2, clipnorm=1.0), metrics=["accuracy"])
    d = os.path.dirname(out)
    cbs = [fr.EarlyStopping(patience=10),
           fr.ModelCheckpoint(os.path.join(d, "ckpt-{epoch}.frnn")),
           fr.CSVLogger(os.path.join(d, "log.csv"))]
    h = m.fit(X, y, epochs=4, batch_size=10, lengths=lengths, validation_split=0.2, verbose=0,
              callbacks=cbs)
    return m, h


def seq_tbptt(dtype, out):
    """Per-step GRU regression with truncated BPTT (chunks of 4 steps), weighted samples."""
    rng, X = data(n=23, t=10, dtype=dtype)
    y = np.cumsum(X[..., :1], axis=1) * 0.1
    sw = rng.uniform(0.5, 2.0, len(X))
    m = fr.Sequential([fr.GRU(3, 6, dtype=dtype), fr.Dense(1)], seed=0, dtype=dtype)
    m.compile("mse", fr.SGD(0.05, momentum=0.9))
    h = m.fit(X, y, epochs=3, batch_size=5, tbptt=4, sample_weight=sw, verbose=0)
    return m, h


def seq2seq(dtype, out):
    """GRU encoder-decoder with teacher forcing, ragged sources, validation data."""
    rng, X = data(n=31, t=7, d=2, dtype=dtype)
    lengths = rng.integers(2, 8, len(X))
    y = X[:, :5, :1][:, ::-1].copy()
    m = fr.Seq2Seq(fr.GRU(2, 8, dtype=dtype), fr.Decoder("GRU", 8, output_size=1, dtype=dtype),
                   seed=0)
    m.compile("mse", fr.RMSprop(1e-2))
    h = m.fit(X[:25], y[:25], epochs=3, batch_size=8, lengths=lengths[:25], verbose=0,
              validation_data=(X[25:], y[25:], lengths[25:]))
    return m, h


def stateful(dtype, out):
    """A stateful LSTM streams consecutive chunks: each rank keeps the rows it always gets."""
    rng, X = data(n=24, t=6, dtype=dtype)
    y = np.cumsum(X[..., :1], axis=1) * 0.2
    m = fr.Sequential([fr.Recurrent(fr.LSTM(3, 5, dtype=dtype), stateful=True), fr.Dense(1)],
                      seed=0, dtype=dtype)
    m.compile("mse", fr.Adam(1e-2))
    h = m.fit(X, y, epochs=3, batch_size=6, shuffle=False, verbose=0)
    return m, h


def per_rank(dtype, out):
    """Horovod semantics: batch_size per rank; equals one process with batch_size * ranks."""
    rng, X = data(dtype=dtype)
    y = X.sum((1, 2))[:, None] * 0.1
    m = fr.Sequential([fr.RNN(3, 5, dtype=dtype), fr.LastStep(), fr.Dense(1)], seed=0, dtype=dtype)
    m.compile("mse", fr.Adam(1e-2))
    bs = 4 if fr.distributed.size() > 1 else 4 * int(os.environ["FR_TEST_GROUP"])
    h = m.fit(X, y, epochs=3, batch_size=bs, verbose=0)
    return m, h


def sharded(dtype, out):
    """Each rank passes its own part of the data; dropout draws per-rank masks."""
    rng, X = data(n=40, dtype=dtype)
    y = X.sum((1, 2))[:, None] * 0.1
    r, n = fr.distributed.rank(), fr.distributed.size()
    part = slice(len(X) * r // n, len(X) * (r + 1) // n)
    m = fr.Sequential([fr.LSTM(3, 6, dtype=dtype), fr.LastStep(), fr.Dropout(0.2), fr.Dense(1)],
                      seed=None, dtype=dtype)     # unseeded: rank 0's weights must win
    m.compile("mse", fr.Adam(1e-2))
    kw = {"sharded": True} if n > 1 else {}
    h = m.fit(X[part], y[part], epochs=6, batch_size=8, validation_split=0.25, verbose=0, **kw)
    return m, h


def resume(dtype, out):
    """Continue from a checkpoint written by another run (on any number of ranks)."""
    m = fr.load(os.environ["FR_TEST_CKPT"])
    rng, X = data(dtype=dtype)
    lengths = rng.integers(1, X.shape[1] + 1, len(X))
    y = rng.integers(0, 3, len(X))
    h = m.fit(X, y, epochs=2, batch_size=10, lengths=lengths, validation_split=0.2, verbose=0)
    return m, h


def esn(dtype, out):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((5, 60, 2))
    Y = np.roll(X, 1, axis=1) + 0.3 * np.roll(X, 2, axis=1)[..., ::-1]
    m = fr.ESN(2, 40, washout=10, ridge=1e-4, seed=5, dtype=dtype)
    if os.environ.get("FR_TEST_SHARDED") and fr.distributed.size() > 1:
        r, n = fr.distributed.rank(), fr.distributed.size()
        part = slice(len(X) * r // n, len(X) * (r + 1) // n)
        m.fit(X[part], Y[part], sharded=True)
    else:
        m.fit(X, Y)
    res = {"W_out": m.W_out, "nrmse": np.array(m.train_nrmse),
           "reservoir": m.reservoir.parameters()["weight_hh_l0"]}
    if not os.environ.get("FR_TEST_SHARDED"):
        res["last_state"], res["last_output"] = m.last_state, m.last_output
        res["generated"] = m.generate(5)
    return res, None


def fault(dtype, out):
    """One rank (FR_TEST_BAD_RANK, or every rank for -1) raises in the middle of fit."""
    bad = int(os.environ["FR_TEST_BAD_RANK"])
    rng, X = data(dtype=dtype)
    y = X.sum((1, 2))[:, None]

    class Boom(fr.Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 2 and bad in (-1, fr.distributed.rank()):
                raise RuntimeError(f"boom on rank {fr.distributed.rank()}")

    m = fr.Sequential([fr.RNN(3, 4, dtype=dtype), fr.LastStep(), fr.Dense(1)], seed=0, dtype=dtype)
    m.compile("mse", "adam")
    m.fit(X, y, epochs=50, batch_size=4, verbose=0, callbacks=[Boom()])
    return m, None


def killed(dtype, out):
    """Rank 1 dies by SIGKILL in the middle of fit (no Python left to abort anything)."""
    import signal
    rng, X = data(dtype=dtype)

    class Die(fr.Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 3 and fr.distributed.rank() == 1:
                os.kill(os.getpid(), signal.SIGKILL)

    m = fr.Sequential([fr.RNN(3, 4, dtype=dtype), fr.LastStep(), fr.Dense(1)], seed=0, dtype=dtype)
    m.compile("mse", "adam")
    m.fit(X, X[:, 0, :1], epochs=200, batch_size=4, verbose=0, callbacks=[Die()])
    return m, None


def disagree(dtype, out):
    """Ranks pass different amounts of data without sharded=True: refused on every rank."""
    rng, X = data(n=20 + fr.distributed.rank(), dtype=dtype)
    m = fr.Sequential([fr.RNN(3, 4, dtype=dtype), fr.LastStep(), fr.Dense(1)], seed=0, dtype=dtype)
    m.compile("mse", "adam")
    m.fit(X, X[:, 0, :1], epochs=1, verbose=0)
    return m, None


def threads(dtype, out):
    return {"threads": np.array(fr.get_num_threads()),
            "cpus": np.array(len(os.sched_getaffinity(0)))}, None


def main():
    case, dtype, out = sys.argv[1], sys.argv[2], sys.argv[3]
    kw = {"threads": 1} if case != "threads" else {}
    fr.distributed.init(batch=os.environ.get("FR_TEST_BATCH", "global"), **kw)
    model, h = globals()[case](dtype, out)
    if isinstance(model, dict):
        arrays = model
    else:
        arrays = dict(model.state_dict())
        arrays.update({"h_" + k: np.array(v) for k, v in h.history.items()})
        arrays["epoch"], arrays["step"] = np.array(model.epoch), np.array(model.step)
        if hasattr(model, "save") and fr.distributed.is_main():
            model.save(out + ".frnn")
    digest = np.concatenate([np.ravel(a).astype(np.float64) for _, a in sorted(arrays.items())])
    np.save(f"{out}.rank{fr.distributed.rank()}.npy", digest)
    if fr.distributed.is_main():
        np.savez(out, **arrays)


if __name__ == "__main__":
    main()
