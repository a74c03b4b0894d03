"""Echo state network: reservoir construction, the C reservoir against a NumPy loop, the
closed-form ridge readout, and closed-loop generation."""
import numpy as np
import pytest

from fastrnn.lore import ESN, engine_has_leak, nrmse, spectral_radius


def test_reservoir_has_requested_spectral_radius_sparsity_and_scaling():
    e = ESN(2, 200, spectral_radius=0.7, sparsity=0.8, input_scaling=0.3, bias_scaling=0.1, seed=0)
    p = e.reservoir.parameters()
    assert spectral_radius(p["weight_hh_l0"]) == pytest.approx(0.7, rel=1e-9)
    assert abs(np.mean(p["weight_hh_l0"] == 0) - 0.8) < 0.02
    assert np.abs(p["weight_ih_l0"]).max() <= 0.3 and np.abs(p["weight_ih_l0"]).max() > 0.25
    assert np.abs(p["bias_ih_l0"]).max() <= 0.1 and np.all(p["bias_hh_l0"] == 0)
    # seeded: same reservoir twice, another seed differs
    np.testing.assert_array_equal(ESN(2, 200, seed=0).reservoir.parameters()["weight_hh_l0"],
                                  ESN(2, 200, seed=0).reservoir.parameters()["weight_hh_l0"])
    assert not np.array_equal(ESN(2, 50, seed=1).reservoir.parameters()["weight_hh_l0"],
                              ESN(2, 50, seed=2).reservoir.parameters()["weight_hh_l0"])


@pytest.mark.parametrize("leak", [1.0, pytest.param(0.3, marks=pytest.mark.skipif(
    not engine_has_leak(), reason="engine built without leak="))])
def test_states_match_numpy_leaky_reservoir(leak):
    e = ESN(2, 30, leak=leak, bias_scaling=0.5, seed=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 40, 2))
    S = e.states(x)
    p = e.reservoir.parameters()
    h = np.zeros((3, 30))
    for t in range(40):
        h = (1 - leak) * h + leak * np.tanh(x[:, t] @ p["weight_ih_l0"].T + p["bias_ih_l0"]
                                            + h @ p["weight_hh_l0"].T)
        np.testing.assert_allclose(S[:, t], h, atol=1e-12)
    assert e.states(x[0]).shape == (40, 30)      # a single (T, D) sequence


def test_readout_is_the_ridge_solution_after_washout():
    rng = np.random.default_rng(2)
    e = ESN(1, 40, ridge=1e-3, washout=10, seed=0)
    x = rng.standard_normal((60, 1))
    y = np.cumsum(x, 0) * 0.1
    e.fit(x, y)
    F = np.concatenate([np.ones((60, 1)), x, e.states(x)], 1)[10:]
    W = np.linalg.solve(F.T @ F + 1e-3 * np.eye(F.shape[1]), F.T @ y[10:])
    np.testing.assert_allclose(e.W_out, W.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(e.predict(x)[10:], F @ W, atol=1e-10)


def test_learns_one_step_and_generates_closed_loop_sine():
    u = np.sin(0.2 * np.arange(1200))[:, None]
    e = ESN(1, 200, spectral_radius=0.9, ridge=1e-8, seed=0).fit(u[:999], u[1:1000])
    assert e.train_nrmse < 1e-3
    g = e.generate(100, X=u[:1000])                  # predictions of u[1000..1099]
    assert g.shape == (100, 1)
    assert nrmse(u[1000:1100], g) < 0.05
    # continuation without a context: after fit on inputs u[:999], the first generated value
    # is fed the last prediction (of u[999]) and predicts u[1000]
    e.fit(u[:999], u[1:1000])
    c = e.generate(20)
    np.testing.assert_allclose(c, g[:20], atol=1e-3)
    # a random reservoir without training cannot do this (the test can fail)
    e2 = ESN(1, 200, seed=0)
    e2.W_out = np.zeros((1, e2._n_features()))
    e2.output_size = 1
    assert nrmse(u[1000:1100], e2.generate(100, X=u[:1000])) > 0.5


def test_batch_of_sequences_and_errors():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((4, 50, 2))
    Y = X[..., :1] * 2
    e = ESN(2, 20, washout=5, seed=0).fit(X, Y)
    assert e.predict(X).shape == (4, 50, 1)
    with pytest.raises(ValueError, match="output_size"):
        e.generate(3, X=X)
    with pytest.raises(ValueError):
        ESN(2, 20).fit(X, Y[:, :10])
    with pytest.raises(ValueError, match="washout"):
        ESN(2, 20, washout=60).fit(X, Y)
    with pytest.raises(RuntimeError):
        ESN(2, 20).predict(X)
    for bad in (dict(spectral_radius=0), dict(sparsity=1.0), dict(leak=0), dict(leak=1.5)):
        with pytest.raises(ValueError):
            ESN(2, 20, **bad)
    with pytest.raises(ValueError, match="NaN"):
        e.predict(np.full((5, 2), np.nan))


def test_small_sparse_reservoirs_are_never_nilpotent():
    # 90% zeros in a 10x10 matrix is often nilpotent; the constructor must redraw, not fail.
    for seed in range(30):
        e = ESN(1, 10, sparsity=0.9, spectral_radius=0.8, seed=seed)
        assert spectral_radius(e.reservoir.parameters()["weight_hh_l0"]) == pytest.approx(0.8)
