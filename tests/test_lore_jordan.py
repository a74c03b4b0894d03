"""Jordan (output-to-hidden) recurrence trained with teacher forcing."""
import numpy as np
import pytest

import fastrnn as fr
from fastrnn.lore import JordanRNN


def test_teacher_forced_gradients_finite_differences():
    rng = np.random.default_rng(0)
    m = JordanRNN(2, 5, 3, dtype=np.float64, seed=0)
    X, Y = rng.standard_normal((4, 6, 2)), rng.standard_normal((4, 6, 3))
    assert fr.check_gradients(m, X, Y, "mse") < 1e-7


def test_free_run_matches_explicit_loop_and_teacher_mode():
    rng = np.random.default_rng(1)
    m = JordanRNN(2, 4, 1, dtype=np.float64, seed=1)
    X, Y = rng.standard_normal((3, 5, 2)), rng.standard_normal((3, 5, 1))
    p = m.parameters()
    Wh, bh, Wo, bo = p["hidden.weight"], p["hidden.bias"], p["out.weight"], p["out.bias"]

    def run(prev_of):
        y = np.zeros((3, 1))
        outs = []
        for t in range(5):
            h = np.tanh(np.concatenate([X[:, t], prev_of(t, y)], 1) @ Wh.T + bh)
            y = h @ Wo.T + bo
            outs.append(y)
        return np.stack(outs, 1)

    free = run(lambda t, y: y)                                   # own previous output
    forced = run(lambda t, y: Y[:, t - 1] if t else np.zeros((3, 1)))   # true previous output
    np.testing.assert_allclose(m.predict(X), free, atol=1e-12)
    np.testing.assert_allclose(m.predict(X, teacher=Y), forced, atol=1e-12)
    assert np.abs(free - forced).max() > 1e-3


def test_learns_an_output_recurrent_process():
    # y_t = 0.8 * y_{t-1} + x_t : the previous output is exactly what the model needs.
    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, (400, 20, 1))
    Y = np.zeros_like(X)
    for t in range(20):
        Y[:, t] = (0.8 * Y[:, t - 1] if t else 0) + X[:, t]
    m = JordanRNN(1, 16, 1, seed=0).compile("mse", fr.Adam(0.01))
    before = m.evaluate(X[300:], Y[300:])["loss"]
    m.fit(X[:300], Y[:300], epochs=30, batch_size=32, verbose=0)
    after = m.evaluate(X[300:], Y[300:])["loss"]          # evaluate runs free
    assert after < 0.05 * before and after < 0.02


def test_rejects_lengths_and_bad_shapes():
    m = JordanRNN(2, 3, 1).compile("mse", "adam")
    with pytest.raises(ValueError, match="lengths"):
        m.fit(np.zeros((2, 3, 2)), np.zeros((2, 3, 1)), lengths=np.array([3, 2]), verbose=0)
    with pytest.raises(ValueError):
        m.predict(np.zeros((2, 3, 5)))


def test_config_and_state_round_trip():
    rng = np.random.default_rng(3)
    m = JordanRNN(2, 4, 1, seed=0).compile("mse", "adam")
    X, Y = rng.standard_normal((5, 6, 2)), rng.standard_normal((5, 6, 1))
    m.fit(X, Y, epochs=2, verbose=0)
    m2 = JordanRNN.from_config(m.get_config())
    m2.load_state_dict(m.state_dict())
    np.testing.assert_array_equal(m2.predict(X), m.predict(X))


def test_save_and_load_rebuild_a_jordan_network(tmp_path):
    import fastrnn as fr
    rng = np.random.default_rng(0)
    m = fr.JordanRNN(2, 6, 1, dtype=np.float64, seed=3)
    m.compile(loss="mse", optimizer="adam")
    X, Y = rng.standard_normal((8, 7, 2)), rng.standard_normal((8, 7, 1))
    m.fit(X, Y, epochs=2, batch_size=4, verbose=0)
    m.save(tmp_path / "jordan.frnn")
    back = fr.load(tmp_path / "jordan.frnn")
    assert isinstance(back, fr.JordanRNN)
    np.testing.assert_array_equal(back.predict(X), m.predict(X))
