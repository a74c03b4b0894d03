"""AR(p) by Yule-Walker: recovers known coefficients, forecasts one and k steps."""
import numpy as np
import pytest

from fastrnn.lore import AR


def simulate(phi, n, seed=0, mean=3.0):
    rng = np.random.default_rng(seed)
    p = len(phi)
    x = np.zeros(n + 200)
    e = rng.standard_normal(n + 200)
    for t in range(p, n + 200):
        x[t] = np.dot(phi, x[t - p:t][::-1]) + e[t]
    return x[200:] + mean


def test_recovers_coefficients_mean_and_noise():
    phi = [0.6, -0.3, 0.2]
    ar = AR(3).fit(simulate(phi, 20000))
    np.testing.assert_allclose(ar.phi, phi, atol=0.03)
    assert abs(ar.mean - 3.0) < 0.1 and abs(ar.sigma2 - 1.0) < 0.05


def test_matches_direct_toeplitz_solution():
    # An independent statement of Yule-Walker: biased autocovariances, scipy-free solve.
    x = simulate([0.5, 0.2], 500, seed=1)
    ar = AR(2).fit(x)
    z = x - x.mean()
    r = [np.sum(z[:len(z) - k] * z[k:]) / len(z) for k in range(3)]
    R = np.array([[r[0], r[1]], [r[1], r[0]]])
    np.testing.assert_allclose(ar.phi, np.linalg.solve(R, r[1:]), rtol=1e-12)


def test_one_and_k_step_forecasts():
    ar = AR(2).fit(simulate([0.5, 0.2], 3000, seed=2))
    hist = np.array([3.0, 4.0, 5.0])
    one = ar.predict(hist)
    assert one == pytest.approx(ar.mean + ar.phi[0] * (5 - ar.mean) + ar.phi[1] * (4 - ar.mean))
    k = ar.forecast(hist, 4)
    assert k[0] == pytest.approx(one)
    assert k[1] == pytest.approx(ar.predict(np.r_[hist, one]))
    # long-horizon forecasts of a stationary AR decay to the mean
    assert abs(ar.forecast(hist, 200)[-1] - ar.mean) < 1e-6
    W = np.stack([hist, hist + 1])
    np.testing.assert_allclose(ar.predict(W), [ar.predict(hist), ar.predict(hist + 1)])
    assert ar.forecast(W, 3).shape == (2, 3)


def test_beats_mean_on_ar_data_out_of_sample():
    x = simulate([0.8], 4000, seed=3)
    ar = AR(1).fit(x[:3000])
    pred = np.array([ar.predict(x[t - 1:t]) for t in range(3001, 4000)])
    mse = np.mean((pred - x[3001:4000]) ** 2)
    assert mse < 0.5 * np.var(x[3000:])


def test_errors():
    with pytest.raises(ValueError):
        AR(0)
    with pytest.raises(ValueError, match="constant"):
        AR(1).fit(np.ones(50))
    with pytest.raises(ValueError, match="needs more"):
        AR(5).fit(np.arange(4.0))
    with pytest.raises(RuntimeError):
        AR(1).predict([1.0])
    with pytest.raises(ValueError, match="past values"):
        AR(3).fit(simulate([0.5], 100)).predict([1.0])
