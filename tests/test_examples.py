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
}


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
