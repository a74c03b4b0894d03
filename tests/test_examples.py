"""Every example in examples/ runs end to end in its --quick (tiny) form, prints its metric and
saves its plot, so none of them rots. The full-size runs are documented in the README."""
import importlib
import math
import os
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")

# example module -> metric keys main() must return (per model where there are several)
CASES = {
    "sine_prediction": ("RNN", "LSTM", "GRU"),
    "price_forecast": ("lstm_rmse", "ar_rmse", "naive_rmse"),
    "ising_phases": ("accuracy",),
    "quench_warning": ("precision", "recall", "events_warned", "false_alarm_traces"),
    "adding_problem": ("tanh RNN", "IRNN", "LSTM", "GRU"),
    "seq2seq_reverse": ("teacher forcing", "scheduled sampling"),
    "bidirectional_fill_blank": ("unidirectional GRU", "bidirectional GRU"),
    "esn_mackey_glass": ("train_nrmse", "nrmse_84"),
    "sequential_digits": ("IRNN", "LSTM"),
    "cosmic_ray_radio": ("roc_auc", "baseline_auc", "snr_gain_db", "baseline_snr_gain_db"),
    "crack_propagation": ("remaining_mae", "baseline_remaining_mae", "damage_r2"),
}


def _check_cosmic_ray_radio(res):
    # seed 0, --quick: RNN AUC 0.78 vs 0.70 (peak after band-pass) and 0.75 (+ RFI notch);
    # denoising gain 11.7 dB vs 2.7 dB for band-pass + notch
    assert 0.6 < res["baseline_auc"] < 0.8    # the simulated pulses: neither trivial nor hidden
    assert res["roc_auc"] > 0.72 and res["roc_auc"] > res["baseline_auc"] + 0.04
    assert res["roc_auc"] > res["notch_baseline_auc"]
    # notching the RFI lines helps beyond the band-pass alone (quick: 2.7 vs 0.2 dB)
    assert res["baseline_snr_gain_db"] > res["bandpass_snr_gain_db"] + 1.0
    assert res["snr_gain_db"] > res["baseline_snr_gain_db"] + 4.0


def _check_crack_propagation(res):
    # seed 0, --quick: remaining-life MAE 27.7 steps vs 39.8 for the life table; damage R^2
    # 0.82 vs 0.30 from the strain alone; fibre stress R^2 0.98
    assert res["remaining_mae"] < 0.85 * res["baseline_remaining_mae"]
    assert res["remaining_mae"] < res["extrapolation_remaining_mae"]
    assert res["damage_r2"] > 0.65 and res["damage_r2"] > res["strain_damage_r2"] + 0.3
    assert res["stress_r2"] > 0.9


# example -> the quick run's results must show the effect the example is about
CHECKS = {"cosmic_ray_radio": _check_cosmic_ray_radio,
          "crack_propagation": _check_crack_propagation}


def load(name):
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    return importlib.import_module(name)


def test_every_example_file_is_covered():
    files = {f[:-3] for f in os.listdir(EXAMPLES) if f.endswith(".py") and not f.startswith("_")}
    assert files == set(CASES)


def _numbers(d):
    for v in d.values():
        if isinstance(v, dict):
            yield from _numbers(v)
        else:
            yield v


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_quick(name, tmp_path, capsys):
    if name == "sequential_digits":
        pytest.importorskip("sklearn")
    has_mpl = importlib.util.find_spec("matplotlib") is not None
    png = tmp_path / f"{name}.png"
    res = load(name).main(["--quick", "--out", str(png)])
    out = capsys.readouterr().out
    assert isinstance(res, dict) and set(CASES[name]) <= set(res)
    assert all(isinstance(v, (int, float)) and not math.isnan(v) for v in _numbers(res)), res
    assert out.strip()                                  # it printed its metric
    assert png.exists() == has_mpl
    if has_mpl:
        assert f"plot saved to {png}" in out
    if name in CHECKS:
        CHECKS[name](res)


@pytest.mark.parametrize("name", sorted(CASES))
def test_examples_print_metrics_without_matplotlib(name, tmp_path, capsys, monkeypatch):
    if name == "sequential_digits":
        pytest.importorskip("sklearn")
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)    # `import matplotlib` now fails
    res = load(name).main(["--quick", "--out", str(tmp_path / "x.png")])
    out = capsys.readouterr().out
    assert "matplotlib not installed" in out and isinstance(res, dict) and res
    assert not (tmp_path / "x.png").exists()


def test_price_forecast_reads_a_csv(tmp_path, capsys):
    import numpy as np
    from fastrnn.datasets import gbm_prices
    f = tmp_path / "prices.csv"
    p = gbm_prices(400, seed=5)
    f.write_text("Date,Close\n" + "".join(f"d{i},{v}\n" for i, v in enumerate(p)))
    res = load("price_forecast").main(["--quick", "--csv", str(f), "--column", "Close", "--out", "none"])
    assert "prices.csv:Close" in capsys.readouterr().out
    # naive = yesterday's close: recompute it independently from the file's last 20% windows
    assert res["naive_rmse"] == pytest.approx(
        float(np.sqrt(np.mean(np.diff(p)[-res["test_days"]:] ** 2))), rel=1e-9)
    with pytest.raises(SystemExit):
        load("price_forecast").main(["--quick", "--csv", str(f), "--column", "Open"])


def test_cosmic_ray_radio_helpers():
    import numpy as np
    crr = load("cosmic_ray_radio")
    rng = np.random.default_rng(0)
    # ROC AUC = the fraction of (positive, negative) pairs ranked right, ties counting half
    score = rng.integers(0, 5, 60).astype(float)
    label = rng.random(60) < 0.4
    pairs = score[label][:, None] - score[~label][None, :]
    assert crr.roc_auc(score, label) == pytest.approx(np.mean((pairs > 0) + 0.5 * (pairs == 0)))
    x, pulse, has = crr.simulate_traces(400, seed=1)
    assert x.shape == pulse.shape == (400, crr.T) and 0.4 < has.mean() < 0.6
    assert not pulse[~has].any() and np.all(np.abs(pulse[has]).max(1) >= 0.7 - 1e-9)
    # the pulse lives in the 30-80 MHz band; a raw trace's SNR uses the exact split x = s + n
    f = np.fft.rfftfreq(2 * crr.T, 1 / crr.FS)
    power = np.abs(np.fft.rfft(pulse[has], 2 * crr.T)) ** 2
    assert power[:, (f > 30) & (f < 80)].sum() > 0.8 * power.sum()     # 0.87: filter skirts
    assert power[:, (f > 20) & (f < 95)].sum() > 0.98 * power.sum()
    s = pulse[has][:5]
    assert np.allclose(crr.snr(s + 0.5, s, raw=True), np.abs(s).max(1) ** 2 / 0.25)
    # an output 3 s + n with n orthogonal to s: signal 3 s, noise n
    e = rng.standard_normal(s.shape)
    n = e - ((e * s).sum(1) / (s * s).sum(1))[:, None] * s
    assert np.allclose(crr.snr(3 * s + n, s), 9 * np.abs(s).max(1) ** 2 / (n ** 2).mean(1))
    assert np.all(crr.snr(np.zeros_like(s) + n, s) < 1e-20)      # erasing the pulse: no signal


def test_crack_propagation_simulator():
    import numpy as np
    cp = load("crack_propagation")
    sim = cp.simulate_bundles(40, n_fibres=500, seed=3, chunk=16)
    D, tf = sim["D"], sim["t_fail"]
    assert np.all(np.diff(D, axis=1) >= 0)                  # fibres never heal
    assert np.all(tf < cp.T_MAX)
    rows = np.arange(40)
    assert np.all(D[rows, tf] == 1) and np.all(D[rows, tf - 1] < 1)
    before = np.arange(cp.T_MAX)[None, :] < tf[:, None]
    # equal load sharing: the intact fibres carry the applied stress between them
    assert np.allclose((sim["sigma_f"] * (1 - D))[before], sim["sigma"][before])
    assert np.allclose(np.cumsum(sim["broken"], 1) / 500, D)
    # Without fatigue a bundle breaks at the first load level above its static (Daniels)
    # strength; fatigue breaks it earlier, never later.
    static = cp.simulate_bundles(40, n_fibres=500, seed=3, chunk=16, fatigue=False)
    over = static["sigma"] > static["strength"][:, None]
    first_over = np.where(over.any(1), over.argmax(1), cp.T_MAX)
    assert np.array_equal(static["t_fail"], first_over)
    assert np.array_equal(static["strength"], sim["strength"])      # the same specimens
    assert np.all(tf <= static["t_fail"]) and np.mean(tf < static["t_fail"]) > 0.5
