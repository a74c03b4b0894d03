"""fastrnn.datasets: shapes, the physics/maths each generator promises, and errors."""
import numpy as np
import pytest

from fastrnn import datasets as ds


def test_windows():
    X, y = ds.windows(np.arange(10.0), 3, 2)
    assert X.shape == (6, 3, 1) and y.shape == (6, 2, 1)
    np.testing.assert_array_equal(X[2, :, 0], [2, 3, 4])
    np.testing.assert_array_equal(y[2, :, 0], [5, 6])
    with pytest.raises(ValueError, match="too short"):
        ds.windows(np.arange(4.0), 3, 2)


def test_sine_and_gbm():
    X, Y = ds.sine_windows(5, 10, seed=0)
    np.testing.assert_array_equal(X[:, 1:], Y[:, :-1])            # next-step targets
    p = ds.gbm_prices(20000, mu=0.1, sigma=0.3, seed=0)
    r = np.diff(np.log(p))
    assert abs(r.std() * np.sqrt(252) - 0.3) < 0.01                 # annualised volatility
    assert (p > 0).all()


def test_ising_low_and_high_temperature_magnetisation():
    spins, T = ds.ising_metropolis(8, [1.0, 5.0], 40, sweeps=100, seed=0)
    assert spins.shape == (80, 8, 8) and set(np.unique(spins)) <= {-1, 1}
    m = np.abs(spins.mean((1, 2)))
    assert m[T == 1.0].mean() > 0.95 and m[T == 5.0].mean() < 0.35
    # both signs appear (the global flip)
    assert (spins[T == 1.0].mean((1, 2)) < 0).any() and (spins[T == 1.0].mean((1, 2)) > 0).any()
    X, y, temps = ds.ising_configurations(5, L=6, n_temps=4, sweeps=20)
    np.testing.assert_array_equal(y, temps < ds.T_C)
    assert abs(ds.T_C - 2.269185) < 1e-6


def test_quench_labels_precede_onsets():
    X, y, onset = ds.quench_traces(30, T=150, lead=20, precursor=40, seed=1)
    assert X.shape == (30, 150, 1)
    for i, o in enumerate(onset):
        if o < 0:
            assert y[i].sum() == 0
        else:
            assert y[i, o - 20:o].all() and y[i].sum() == 20
            assert X[i, o + 3:, 0].mean() > X[i, :o - 40, 0].mean() + 1.0   # quench is a rise


def test_adding_problem_targets():
    X, y = ds.adding_problem(50, 30, seed=0)
    np.testing.assert_allclose(y[:, 0], (X[..., 0] * X[..., 1]).sum(1), rtol=1e-6)
    assert (X[..., 1].sum(1) == 2).all()
    assert (X[:, :15, 1].sum(1) == 1).all()                       # one marker per half


def test_reverse_digits_and_fill_in_blank():
    X, lengths, y, src = ds.reverse_digits(20, 3, 6, seed=0)
    for i, k in enumerate(lengths):
        np.testing.assert_array_equal(y[i, :k], src[i, :k][::-1])
        assert y[i, k] == 10 and X[i, :k].argmax(-1).tolist() == src[i, :k].tolist()
    X, y, w, p = ds.fill_in_blank(30, 8, seed=0)
    r = np.arange(30)
    assert (X[r, p] == 10).all() and w.sum() == 30
    assert ((X[r, p - 1] + X[r, p + 1]) % 10 == y[r, p]).all()


def test_mackey_glass_is_the_delay_equation():
    x = ds.mackey_glass(1500, seed=0)
    assert x.shape == (1500,) and 0.2 < x.min() < x.max() < 1.5
    # Finite-difference check of dx/dt = 0.2 x(t-17)/(1+x(t-17)^10) - 0.1 x(t) (unit samples).
    t = np.arange(100, 1400)
    dxdt = (x[t + 1] - x[t - 1]) / 2
    rhs = 0.2 * x[t - 17] / (1 + x[t - 17] ** 10) - 0.1 * x[t]
    assert np.abs(dxdt - rhs).max() < 0.02
    # chaotic, not periodic: no exact repeat
    assert np.abs(x[500:800] - x[800:1100]).max() > 0.1


def test_read_csv_column(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("Date,Open,Close\n2020-01-01,1,2.5\n2020-01-02,2,\"3,000.5\"\n2020-01-03,3,4\n")
    np.testing.assert_array_equal(ds.read_csv_column(f, "Close"), [2.5, 3000.5, 4])
    np.testing.assert_array_equal(ds.read_csv_column(f), [2.5, 3000.5, 4])
    with pytest.raises(ValueError, match="no column 'Volume'"):
        ds.read_csv_column(f, "Volume")
    with pytest.raises(ValueError, match="not a number"):
        ds.read_csv_column(f, "Date")
    with pytest.raises(OSError):
        ds.read_csv_column(tmp_path / "missing.csv")


def test_load_digits():
    pytest.importorskip("sklearn")
    X, y = ds.load_digits()
    assert X.shape == (1797, 64, 1) and X.max() <= 1 and set(y) == set(range(10))


def test_load_digits_without_sklearn_says_how_to_get_it(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_sklearn(name, *a, **k):
        if name.startswith("sklearn"):
            raise ImportError("no sklearn")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        ds.load_digits()
