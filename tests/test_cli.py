"""The `fastrnn` command: train / predict / bench / demo, and its error handling (one line on
stderr, non-zero exit, never a traceback)."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import cli
from fastrnn.datasets import sine_series

PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fr.__file__)))
HAS_MPL = __import__("importlib").util.find_spec("matplotlib") is not None


def run(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def series_csv(tmp_path):
    s = sine_series(400, step=0.15, noise=0.02, seed=1)
    f = tmp_path / "series.csv"
    f.write_text("Date,Volume,Close\n" + "".join(f"d{i},{1000 + i},{float(v)!r}\n" for i, v in enumerate(s)))
    return f, s


def test_train_builtin_saves_model_and_plot(tmp_path, capsys):
    model = tmp_path / "m.frnn"
    rc, out, err = run(["train", "--epochs", "2", "--hidden", "8", "--window", "12", "--quiet",
                        "-o", str(model)], capsys)
    assert rc == 0, err
    assert f"model saved to {model}" in out
    assert ("plot saved to" in out) == HAS_MPL and (tmp_path / "m.png").exists() == HAS_MPL
    m = fr.load(model)
    assert isinstance(m, fr.Sequential) and cli.read_cli_meta(model)["window"] == 12


def test_train_shows_a_progress_bar(tmp_path, capsys):
    rc, out, err = run(["train", "--epochs", "1", "--hidden", "4", "--window", "8", "--plot", "none",
                        "-o", str(tmp_path / "m.frnn")], capsys)
    assert rc == 0 and "Epoch 1" in err and "step" in err        # tqdm writes to stderr


def test_train_csv_then_predict_csv(tmp_path, capsys, series_csv):
    f, s = series_csv
    model = tmp_path / "c.frnn"
    rc, out, err = run(["train", "--csv", str(f), "--column", "Close", "--model", "gru",
                        "--hidden", "16", "--epochs", "8", "--window", "20", "--horizon", "3",
                        "--quiet", "--plot", "none", "-o", str(model)], capsys)
    assert rc == 0, err
    pred_csv = tmp_path / "pred.csv"
    rc, out, err = run(["predict", "--model", str(model), "--csv", str(f), "-o", str(pred_csv)], capsys)
    assert rc == 0, err
    rows = list(csv.DictReader(open(pred_csv)))
    assert list(rows[0]) == ["index", "actual", "pred_1", "pred_2", "pred_3"]
    assert len(rows) == len(s) - 20 + 1                     # every window, incl. past the end
    assert rows[0]["index"] == "20" and float(rows[0]["actual"]) == float(s[20])
    assert rows[-1]["actual"] == ""                          # forecast beyond the data
    # Predictions come out in the data's units (normalisation is folded into the weights) and
    # beat "repeat the last value" on this smooth series.
    a = np.array([float(r["actual"]) for r in rows[:-1]])
    p1 = np.array([float(r["pred_1"]) for r in rows[:-1]])
    assert np.mean((p1 - a) ** 2) < np.mean((s[19:-1] - a) ** 2)
    # to stdout as well
    rc, out, _ = run(["predict", "-m", str(model), "--csv", str(f)], capsys)
    assert rc == 0 and out.splitlines()[0] == "index,actual,pred_1,pred_2,pred_3"


def test_fold_normalisation_is_exact():
    rng = np.random.default_rng(0)
    m = cli._build_model("lstm", 6, 2, 2, seed=0)
    x = rng.standard_normal((5, 9, 1)) * 3 + 10
    mean, std = 10.0, 3.0
    before = m.predict(((x - mean) / std).astype(np.float32)) * std + mean
    cli.fold_normalisation(m, mean, std)
    np.testing.assert_allclose(m.predict(x.astype(np.float32)), before, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("argv,needle", [
    (["train", "--csv", "{d}/missing.csv"], "cannot read"),
    (["train", "--csv", "{csv}", "--column", "Nope"], "no column 'Nope'"),
    (["train", "--csv", "{csv}", "--column", "Date"], "not a number"),
    (["train", "--csv", "{bin}"], "error"),
    (["train", "--epochs", "0"], "--epochs must be a positive integer"),
    (["train", "--hidden", "abc"], "--hidden must be a positive integer"),
    (["train", "--model", "transformer"], "invalid choice"),
    (["train", "--csv", "{csv}", "--window", "300"], "too few"),
    (["train", "--frobnicate"], "unrecognized arguments"),
    (["predict", "--model", "{csv}", "--csv", "{csv}"], "not a fastrnn model file"),
    (["predict", "--model", "{d}/none.frnn", "--csv", "{csv}"], "does not exist"),
    (["predict", "--csv", "{csv}"], "required"),
    (["train", "-o", "{d}/no/such/dir/m.frnn", "--epochs", "1", "--window", "5", "--quiet"], "cannot write"),
])
def test_errors_are_one_line_and_nonzero(argv, needle, tmp_path, capsys, series_csv):
    f, _ = series_csv
    b = tmp_path / "bin.csv"
    b.write_bytes(b"\xff\xfe\x00\x01garbage\x00")
    argv = [a.format(d=tmp_path, csv=f, bin=b) for a in argv]
    with pytest.raises(SystemExit) if needle in ("invalid choice", "unrecognized arguments", "required",
                                                 "--epochs must be a positive integer",
                                                 "--hidden must be a positive integer") \
            else _nullctx() as exc:
        rc = cli.main(argv)
    out, err = capsys.readouterr()
    code = exc.value.code if exc is not None and hasattr(exc, "value") else rc
    assert code != 0
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err


class _nullctx:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def test_console_entry_point_never_prints_a_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=PKG_PARENT)
    for argv in (["train", "--csv", str(tmp_path / "x.csv")], ["predict", "--model", "m", "--csv", "c"],
                 ["--bogus"]):
        p = subprocess.run([sys.executable, "-m", "fastrnn"] + argv, capture_output=True, text=True,
                           env=env, cwd=tmp_path, timeout=60)
        assert p.returncode != 0 and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_no_command_prints_help(capsys):
    rc, out, _ = run([], capsys)
    assert rc == 2 and "train" in out and "predict" in out and "bench" in out


def test_demo_is_still_reachable(capsys):
    rc, out, _ = run(["demo", "--epochs", "2", "--hidden", "8"], capsys)
    assert rc == 0 and "epoch   2" in out and "loss fell from" in out


def test_bench_delegates_to_bench_run(capfd):
    if cli._bench_script() is None:
        pytest.skip("bench/run.py is only in a source checkout")
    rc = cli.main(["bench", "--help"])
    out = capfd.readouterr().out
    assert rc == 0 and "run.py" in out and "--quick" in out

