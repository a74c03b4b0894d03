"""The optimizers' one-call C update (csrc/optim.c via _core.optim_step) against their NumPy
path (optim.FUSED = False): the same bits, step after step, for every optimizer and option."""
import numpy as np
import pytest

import fastrnn as fr
from fastrnn import _core
from fastrnn.train import optim as O

CONFIGS = {
    "sgd": lambda: O.SGD(0.1),
    "sgd-momentum": lambda: O.SGD(0.1, momentum=0.9),
    "sgd-nesterov-wd": lambda: O.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda: O.Adam(0.01),
    "adam-wd-clipvalue": lambda: O.Adam(0.01, weight_decay=0.1, clipvalue=0.5),
    "adamw": lambda: O.AdamW(0.01),
    "rmsprop": lambda: O.RMSprop(0.01),
    "rmsprop-centered": lambda: O.RMSprop(0.01, centered=True),
    "rmsprop-momentum-centered": lambda: O.RMSprop(0.01, momentum=0.5, centered=True),
    "adam-schedule": lambda: O.Adam(O.ExponentialDecay(0.01, 2, 0.5)),
}


def _run(make, dtype, fused, steps=6, clipnorm=None):
    O.FUSED = fused
    try:
        opt = make()
        if clipnorm:
            opt.clipnorm = clipnorm
        params = {"w": (np.arange(35).reshape(5, 7) / 10 - 1.5).astype(dtype),
                  "b": np.linspace(-1, 1, 9).astype(dtype), "one": np.ones(1, dtype)}
        rng = np.random.default_rng(1)
        seen = []
        for _ in range(steps):
            grads = {k: (3 * rng.standard_normal(v.shape)).astype(dtype) for k, v in params.items()}
            opt.step(params, grads)
            seen.append({k: g.copy() for k, g in grads.items()})     # clipped in place, as before
        return params, seen, opt
    finally:
        O.FUSED = True


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_fused_update_is_the_numpy_update_bit_for_bit(name, dtype):
    p1, g1, o1 = _run(CONFIGS[name], dtype, True)
    p0, g0, o0 = _run(CONFIGS[name], dtype, False)
    for k in p0:
        np.testing.assert_array_equal(p1[k], p0[k])
    for a, b in zip(g1, g0):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert o1.iterations == o0.iterations == 6
    sd1, sd0 = o1.state_dict(), o0.state_dict()
    assert sorted(sd1) == sorted(sd0)
    for k in sd0:
        np.testing.assert_array_equal(sd1[k], sd0[k])
    # the check can fail: one step more is another result
    p2, _, _ = _run(CONFIGS[name], dtype, True, steps=7)
    assert any(not np.array_equal(p2[k], p0[k]) for k in p0)


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-6), (np.float64, 1e-14)])
def test_clipnorm_matches_up_to_the_norm_summed_in_double(dtype, rtol):
    # C sums the squares in double; NumPy's vdot sums float32 in float32: the scale may differ
    # in the last bits, nothing more
    p1, g1, _ = _run(CONFIGS["adam"], dtype, True, clipnorm=1.0)
    p0, g0, _ = _run(CONFIGS["adam"], dtype, False, clipnorm=1.0)
    for k in p0:
        np.testing.assert_allclose(p1[k], p0[k], rtol=rtol, atol=rtol)
    norm = np.sqrt(sum(float(np.vdot(g, g)) for g in g1[0].values()))
    assert norm == pytest.approx(1.0, rel=1e-5)                  # clipped to the max norm


def test_fit_takes_one_c_call_per_update(monkeypatch):
    calls = []
    real = _core.optim_step
    monkeypatch.setattr(_core, "optim_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    m = fr.Sequential([fr.LSTM(2, 8), fr.Dense(1)], seed=0)
    m.compile(loss="mse", optimizer=fr.Adam(0.01, clipnorm=1.0))
    x = np.random.default_rng(0).standard_normal((40, 5, 2)).astype(np.float32)
    m.fit(x, x[..., :1], epochs=2, batch_size=10, verbose=0)
    assert len(calls) == 8


def test_a_subclass_with_its_own_update_and_odd_arrays_keep_the_numpy_path(monkeypatch):
    monkeypatch.setattr(_core, "optim_step", lambda *a, **k: pytest.fail("the C update was used"))

    class Halved(O.SGD):
        def _update(self, name, p, g, lr):
            p -= 0.5 * lr * g
    params = {"w": np.ones(4)}
    Halved(0.1).step(params, {"w": np.ones(4)})
    np.testing.assert_array_equal(params["w"], np.full(4, 0.95))
    # a strided view, and mixed dtypes: the NumPy path, same results as ever
    base = np.ones((4, 2))
    params = {"w": base[:, 0], "b": np.ones(3, np.float32)}
    O.SGD(0.1).step(params, {"w": np.ones(4), "b": np.ones(3, np.float32)})
    assert np.allclose(base[:, 0], 0.9) and np.allclose(params["b"], 0.9)


def test_the_bridge_refuses_what_it_cannot_update():
    p = np.zeros(4, np.float32)
    g = np.ones(4, np.float32)
    m, v = np.zeros(4, np.float32), np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="kind"):
        _core.optim_step("adagrad", [p], [g], [(m, v, None)], lr=0.1)
    with pytest.raises(ValueError, match="grad of parameter 0"):
        _core.optim_step("adam", [p], [np.ones(4)], [(m, v, None)], lr=0.1)          # float64 grad
    with pytest.raises(ValueError, match="grad of parameter 0"):
        _core.optim_step("adam", [p], [np.ones(5, np.float32)], [(m, v, None)], lr=0.1)
    with pytest.raises(ValueError, match="needs slot s1"):
        _core.optim_step("adam", [p], [g], [(m, None, None)], lr=0.1)
    with pytest.raises(ValueError, match="one entry per parameter"):
        _core.optim_step("sgd", [p], [], [], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        _core.optim_step("sgd", [p], [g], [(None, None, None)], lr=0.0)
    ro = np.zeros(4, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="param of parameter 0"):
        _core.optim_step("sgd", [ro], [g], [(None, None, None)], lr=0.1)
    assert not p.any()                                   # nothing was half-applied
