"""fastrnn.forecasting (transforms, baselines, pinball loss, backtest) and the goal of the CLI
on real series: its default run beats repeat-the-last-value and is within 10% of the AR
baseline's test MSE, or better (tests/fixtures/csv: public-domain series, see
make_csv_fixtures.py)."""
import os
import re

import numpy as np
import pytest

from fastrnn import cli
from fastrnn import forecasting as F
from fastrnn.train.losses import get_loss

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "csv")


# ============================================================================ transforms
@pytest.mark.parametrize("name", F.TRANSFORMS)
def test_targets_invert_to_the_future_values_for_every_step(name):
    rng = np.random.default_rng(0)
    x = 50 + np.cumsum(rng.standard_normal(60))
    origins = np.arange(10, 55)
    Y = F.target_windows(x, name, 4, origins)
    levels = F.invert(name, x[origins], Y)
    np.testing.assert_allclose(levels, x[origins[:, None] + np.arange(1, 5)], rtol=1e-12)
    # quantile-shaped (N, H, Q) targets invert the same way, per quantile
    np.testing.assert_allclose(F.invert(name, x[origins], np.stack([Y, Y], -1))[..., 1], levels)


@pytest.mark.parametrize("name", F.TRANSFORMS)
def test_input_windows_end_at_the_origin(name):
    x = np.exp(np.linspace(0, 1, 30))
    X = F.input_windows(x, name, 5, [10, 20])
    z = {"none": x, "diff": np.diff(x), "log-diff": np.diff(np.log(x))}[name]
    off = F.offset(name)
    np.testing.assert_allclose(X[1], z[20 - off - 4:20 - off + 1])


def test_log_diff_refuses_non_positive_values():
    with pytest.raises(ValueError, match="positive"):
        F.check_series([1.0, 0.0, 2.0], "log-diff")


# ============================================================================ baselines
def test_ar_baseline_finds_the_order_and_forecasts_like_lore_ar():
    rng = np.random.default_rng(1)
    x = np.zeros(3000)
    for t in range(2, len(x)):
        x[t] = 0.6 * x[t - 1] - 0.3 * x[t - 2] + rng.standard_normal()
    ar = F.ARBaseline("none", 10).fit(x[:2500])
    assert ar.p in (2, 3)
    np.testing.assert_allclose(ar.ar.phi[:2], [0.6, -0.3], atol=0.06)
    origins = np.arange(2500, 2990)
    np.testing.assert_allclose(ar.forecast(x, origins, 1)[:, 0],
                               ar.ar.predict(F.input_windows(x, "none", ar.p, origins)))


def test_ar_baseline_on_a_straight_line_is_the_drift():
    x = 3.0 + 0.5 * np.arange(100)                 # diffs are constant: no AR, the mean diff
    ar = F.ARBaseline("diff", 8).fit(x[:80])
    assert ar.p == 0
    np.testing.assert_allclose(ar.forecast(x, [79, 90], 3), x[[[80, 81, 82], [91, 92, 93]]])


def test_choose_transform_from_the_training_part():
    rng = np.random.default_rng(2)
    walk = 100 + np.cumsum(0.3 + rng.standard_normal(800))           # trend + unit root
    noise = np.zeros(800)
    for t in range(1, 800):
        noise[t] = 0.5 * noise[t - 1] + rng.standard_normal()          # stationary
    assert F.choose_transform(walk, 20)[0] in ("diff", "log-diff")
    assert F.choose_transform(noise, 20)[0] == "none"
    name, scores, reason = F.choose_transform(walk[:10], 5)
    assert name == "none" and scores == {} and "too short" in reason


# ============================================================================ pinball loss
def test_pinball_loss_gradient_and_registration():
    qs = [0.1, 0.5, 0.9]
    loss = get_loss({"name": "pinball", "quantiles": qs})
    assert isinstance(loss, F.PinballLoss) and loss.get_config() == {"name": "pinball", "quantiles": qs}
    rng = np.random.default_rng(3)
    p = rng.standard_normal((7, 6))
    t = np.repeat(rng.standard_normal((7, 2)), 3, axis=1)
    _, g = loss.value_and_grad(p, t)
    eps = 1e-6
    num = np.zeros_like(p)
    for i in np.ndindex(p.shape):
        d = np.zeros_like(p)
        d[i] = eps
        num[i] = (loss(p + d, t) - loss(p - d, t)) / (2 * eps)
    np.testing.assert_allclose(g, num, atol=1e-6)


def test_pinball_loss_is_least_at_the_quantile():
    rng = np.random.default_rng(4)
    y = rng.standard_normal(2001)
    loss = F.PinballLoss([0.9])
    q = np.quantile(y, 0.9)
    at = lambda c: loss(np.full((len(y), 1), c), y[:, None])
    assert at(q) < at(q - 0.05) and at(q) < at(q + 0.05)


# ============================================================================ the network
def test_fold_normalisation_per_output_is_exact():
    rng = np.random.default_rng(5)
    m = F.build_model("gru", 5, 1, 3, seed=0)
    x = rng.standard_normal((4, 7, 1)) * 2 + 1
    om, os_ = np.array([1.0, -2.0, 3.0]), np.array([0.5, 2.0, 4.0])
    before = m.predict(((x - 1) / 2).astype(np.float32)) * os_ + om
    F.fold_normalisation(m, 1.0, 2.0, om, os_)
    np.testing.assert_allclose(m.predict(x.astype(np.float32)), before, rtol=1e-4, atol=1e-4)


def test_fit_forecaster_quantiles_predict_and_closed_loop():
    t = np.arange(400)
    x = 10 + 0.02 * t + np.sin(t / 5) + 0.05 * np.random.default_rng(6).standard_normal(400)
    r = F.fit_forecaster(x, 320, hidden=8, window=10, horizon=2, epochs=3, quantiles=[0.9, 0.1])
    assert r.meta["quantiles"] == [0.1, 0.5, 0.9] and r.quant.shape == (len(r.origins), 2, 3)
    assert (np.diff(r.quant, axis=-1) >= 0).all()                       # never crossing
    np.testing.assert_array_equal(r.pred, r.quant[..., 1])
    assert set(r.coverage) == {0.1, 0.5, 0.9} and 0 <= r.interval[2] <= 1
    assert r.truth.shape == r.pred.shape and r.origins[0] == 319 and r.origins[-1] == 397
    free = F.closed_loop(r.model, r.meta, x[:320], 5)
    assert free.shape == (5,) and np.isfinite(free).all()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_merge_members_computes_the_mean_of_the_members(cell, layers):
    rng = np.random.default_rng(7)
    ms = [F.build_model(cell, 5, layers, 3, seed=s) for s in range(3)]
    for m in ms:                          # distinct, non-trivial weights (biases included)
        for w in m.parameters().values():
            w += (0.3 * rng.standard_normal(w.shape)).astype(w.dtype)
    x = rng.standard_normal((4, 7, 1)).astype(np.float32)
    want = np.mean([m.predict(x) for m in ms], axis=0)
    wide = F.merge_members(ms)
    assert wide.layers[0].layer.hidden_size == 15
    np.testing.assert_allclose(wide.predict(x), want, rtol=1e-5, atol=1e-6)
    # a member's forecast alone is not the mean (the check sees which units are mixed)
    assert np.abs(ms[0].predict(x) - want).max() > 1e-3


def test_forecast_is_the_mean_of_the_seeded_networks_and_the_ar_model():
    t = np.arange(300)
    x = 10 + 0.02 * t + np.sin(t / 5) + 0.05 * np.random.default_rng(8).standard_normal(300)
    kw = dict(hidden=6, window=10, horizon=2, epochs=2, transform="diff", validate=False)
    singles = [F.fit_forecaster(x, 240, seed=s, ensemble=1, combine="none", **kw) for s in (4, 5)]
    nets = np.mean([r.pred for r in singles], axis=0)
    both = F.fit_forecaster(x, 240, seed=4, ensemble=2, combine="none", **kw)
    np.testing.assert_allclose(both.pred, nets, rtol=1e-5)
    ar = singles[0].ar.forecast(x, singles[0].origins, 2)
    r = F.fit_forecaster(x, 240, seed=4, ensemble=2, **kw)
    assert r.meta["combine"] == "ar" and r.meta["ensemble"] == 2
    np.testing.assert_allclose(r.pred, 0.5 * (nets + ar), rtol=1e-5)
    np.testing.assert_allclose(r.net_mse, np.mean((nets - r.truth) ** 2), rtol=1e-4)
    assert r.mse == pytest.approx(np.mean((r.pred - r.truth) ** 2))
    # quantiles move with the combined median: the band keeps the networks' width
    q = F.fit_forecaster(x, 240, seed=4, ensemble=2, quantiles=[0.1, 0.9], **kw)
    alone = F.predict(q.model, dict(q.meta, combine="none"), x, q.origins)[1]
    np.testing.assert_allclose(q.quant[..., 2] - q.quant[..., 0], alone[..., 2] - alone[..., 0],
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(q.pred, q.quant[..., 1])
    with pytest.raises(ValueError, match="combine must be"):
        F.fit_forecaster(x, 240, combine="mean", **kw)
    with pytest.raises(ValueError, match="ensemble must be"):
        F.fit_forecaster(x, 240, ensemble=0, **kw)


def test_ar_baseline_description_round_trips_and_bad_ones_are_refused():
    x = 100 + np.cumsum(np.random.default_rng(9).standard_normal(200))
    ar = F.ARBaseline("diff", 8).fit(x[:150])
    back = F.ARBaseline.from_dict(ar.to_dict())
    origins = np.arange(150, 190)
    np.testing.assert_array_equal(back.forecast(x, origins, 3), ar.forecast(x, origins, 3))
    assert F.ARBaseline.from_dict(F.ARBaseline("none", 4).to_dict()).ar is None   # mean only
    good = ar.to_dict()
    for bad in ({}, dict(good, transform="log"), dict(good, phi=[float("nan")]),
                dict(good, phi=[]), {k: v for k, v in good.items() if k != "ar_mean"}):
        with pytest.raises(ValueError):
            F.ARBaseline.from_dict(bad)


def test_backtest_blocks_cover_the_test_part():
    x = np.sin(np.arange(300) / 4) + 5
    res = F.backtest(x, 3, 0.3, hidden=4, window=6, epochs=1, transform="none")
    assert [r.fold for r in res] == [(210, 240), (240, 270), (270, 300)]
    assert all(len(r.origins) == 30 for r in res)
    with pytest.raises(ValueError, match="cannot be cut"):
        F.backtest(x, 100, 0.1, window=6)


# ============================================================================ the goal
def _train(argv, capsys, tmp_path):
    rc = cli.main(["train", "-q", "--plot", "none", "-o", str(tmp_path / "m.frnn")] + argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    m = re.search(r"test MSE \(.*\): (\w+) ([\d.e+-]+), repeat-last-value ([\d.e+-]+), "
                  r"AR\((\d+)\)[a-z -]* ([\d.e+-]+)", out)
    assert m, out
    return float(m.group(2)), float(m.group(3)), float(m.group(5)), out


def _meets_goal(model, last, ar):
    return model < last and model <= 1.10 * ar


def test_goal_co2_weekly_reduced(capsys, tmp_path):
    # The default run (30 epochs, 64 units) is measured outside the suite; here 15 epochs of 32
    # units, which still beat both baselines on the weekly CO2 record with its 59 gaps.
    co2 = os.path.join(FIXTURES, "co2_weekly.csv")
    model, last, ar, out = _train(["--csv", co2, "--epochs", "15", "--hidden", "32"], capsys, tmp_path)
    assert "transform: diff (auto" in out
    assert _meets_goal(model, last, ar), (model, last, ar)
    # ... and the check can fail: the same network on the raw levels (the run) loses
    model, last, ar, _ = _train(["--csv", co2, "--epochs", "15", "--hidden", "32", "--transform", "none"],
                                capsys, tmp_path)
    assert not _meets_goal(model, last, ar), (model, last, ar)


@pytest.mark.parametrize("csv_name,column", [("macro_quarterly.csv", "cpi"),
                                             ("macro_quarterly.csv", "realgdp"),
                                             ("sunspots_yearly.csv", None)])
def test_goal_default_run_on_real_series(csv_name, column, capsys, tmp_path):
    # Full default settings: these series are short (203 quarters, 309 years).
    argv = ["--csv", os.path.join(FIXTURES, csv_name)] + (["--column", column] if column else [])
    model, last, ar, _ = _train(argv, capsys, tmp_path)
    assert _meets_goal(model, last, ar), (model, last, ar)


def test_goal_on_gdp_needs_the_ensemble_and_the_combination(capsys, tmp_path):
    # Quarterly real GDP growth is close to noise: one network alone fits part of it and misses
    # the goal; the default (3 networks averaged with the AR model) meets it (test above).
    argv = ["--csv", os.path.join(FIXTURES, "macro_quarterly.csv"), "--column", "realgdp"]
    model, last, ar, out = _train(argv + ["--ensemble", "1", "--combine", "none"], capsys, tmp_path)
    assert "LSTM " in out and "forecast " not in out
    assert not _meets_goal(model, last, ar), (model, last, ar)
