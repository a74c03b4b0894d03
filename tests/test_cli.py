"""The `fastrnn` command: train / predict / bench / demo, and its error handling (one line on
stderr, non-zero exit, never a traceback)."""
import csv
import os
import re
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


def test_train_progress_is_one_line_per_epoch_when_stderr_is_no_terminal(tmp_path, capsys):
    # capsys is no TTY: no tqdm bar (carriage returns in logs), one line per epoch instead, and
    # both the progress and the final line say which scale their numbers are on.
    rc, out, err = run(["train", "--epochs", "2", "--hidden", "4", "--window", "8", "--plot", "none",
                        "-o", str(tmp_path / "m.frnn")], capsys)
    assert rc == 0 and "\r" not in err and "\r" not in out
    lines = [l for l in err.splitlines() if "epoch " in l]
    assert [l.split(":")[0] for l in lines] == [f"network {k}/3, epoch {e}/2" for k in (1, 2, 3)
                                                for e in (1, 2)]
    assert all("val_loss" in l and "normalised scale" in l for l in lines)
    assert "normalised scale" in out and "test MSE (raw scale" in out
    # one network: no "network k/K" prefix
    rc, out, err = run(["train", "--epochs", "2", "--hidden", "4", "--window", "8", "--plot", "none",
                        "--ensemble", "1", "-o", str(tmp_path / "m.frnn")], capsys)
    lines = [l for l in err.splitlines() if "epoch " in l]
    assert rc == 0 and [l.split(":")[0] for l in lines] == ["epoch 1/2", "epoch 2/2"]


def test_train_csv_then_predict_csv(tmp_path, capsys, series_csv):
    f, s = series_csv
    model = tmp_path / "c.frnn"
    rc, out, err = run(["train", "--csv", str(f), "--column", "Close", "--cell", "gru", "--transform", "none",
                        "--hidden", "16", "--epochs", "8", "--window", "20", "--horizon", "3",
                        "--quiet", "--plot", "none", "-o", str(model)], capsys)
    assert rc == 0, err
    pred_csv = tmp_path / "pred.csv"
    rc, out, err = run(["predict", "--model", str(model), "--csv", str(f), "-o", str(pred_csv)], capsys)
    assert rc == 0, err
    rows = list(csv.DictReader(open(pred_csv)))
    # index: the file's own label (its Date column: not numbers) of each forecast's first row
    assert list(rows[0]) == ["index", "actual", "pred_1", "pred_2", "pred_3"]
    assert len(rows) == len(s) - 20 + 1                     # every window, incl. past the end
    assert rows[0]["index"] == "d20" and float(rows[0]["actual"]) == float(s[20])
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
    (["train", "--cell", "transformer"], "invalid choice"),
    (["train", "--quantiles", "0.1,1.5"], "--quantiles must be numbers in (0, 1)"),
    (["train", "--transform", "log-diff", "--data", "sine", "--epochs", "1", "-q"], "needs positive values"),
    (["train", "--csv", "{csv}", "--delimiter", "ab"], "delimiter must be one character"),
    (["train", "--csv", "{gaps}", "--missing", "error"], "2 missing values"),
    (["train", "--data", "sine", "--column", "x"], "--column needs --csv"),
    (["backtest", "--csv", "{csv}", "--folds", "400"], "cannot be cut into 400 blocks"),
    (["train", "--csv", "{csv}", "--window", "330"], "too few"),
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
    g = tmp_path / "gaps.csv"
    g.write_text("t,v\n" + "".join(f"{i},{'' if i in (5, 9) else i % 7}\n" for i in range(60)))
    argv = [a.format(d=tmp_path, csv=f, bin=b, gaps=g) for a in argv]
    with pytest.raises(SystemExit) if needle in ("invalid choice", "unrecognized arguments", "required",
                                                 "--quantiles must be numbers in (0, 1)",
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



# ============================================================================ real files
# Real series (tests/fixtures/csv, written by make_csv_fixtures.py from public-domain data) and
# the variants the issue met: NA markers beside a year column, a BOM, ';' with decimal commas,
# no header row.
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "csv")
CO2 = os.path.join(FIXTURES, "co2_weekly.csv")


def co2_lines():
    with open(CO2, encoding="utf-8") as f:
        return f.read().splitlines()


def variant(tmp_path, kind):
    lines = co2_lines()
    f = tmp_path / f"co2-{kind}.csv"
    if kind == "na-year":                   # YEAR first, NA in the target: the YEAR switch
        f.write_text("YEAR,co2\n" + "".join(f"{l[:4]},{l.split(',')[1] or 'NA'}\n" for l in lines[1:]))
    elif kind == "bom":
        f.write_bytes(("\n".join(lines) + "\n").encode("utf-8-sig"))
    elif kind == "semicolon":
        f.write_text("\n".join(l.replace(",", ";").replace(".", ",") for l in lines) + "\n")
    elif kind == "no-header":
        f.write_text("\n".join(lines[1:]) + "\n")
    return f


QUICK = ["--epochs", "1", "--hidden", "4", "--window", "8", "-q", "--plot", "none"]


def test_co2_fixture_is_the_real_record():
    lines = co2_lines()
    assert lines[0] == "date,co2" and len(lines) == 2285
    assert lines[1] == "1958-03-29,316.1" and lines[-1] == "2001-12-29,371.5"
    assert sum(l.endswith(",") for l in lines) == 59                  # the record's own gaps


@pytest.mark.parametrize("kind", ["na-year", "bom", "semicolon", "no-header"])
def test_variants_read_the_same_series_and_say_which_column(kind, tmp_path, capsys):
    f = variant(tmp_path, kind)
    m = tmp_path / "m.frnn"
    rc, out, err = run(["train", "--csv", str(f), "-o", str(m)] + QUICK, capsys)
    assert rc == 0, err
    col = "2" if kind == "no-header" else "co2"
    assert f"using column '{col}' of {f} (2284 rows, 59 missing" in out
    assert "59 missing values" in err and "59 inside the series filled by linear interpolation" in err
    if kind == "semicolon":
        assert "delimiter ';' detected" in out and "decimal commas detected" in out
    if kind == "no-header":
        assert "no header row" in out and "numbered 1..2" in out
    # every variant gives the same test errors as the original file: the same numbers were read
    rc, out0, _ = run(["train", "--csv", CO2, "-o", str(tmp_path / "o.frnn")] + QUICK, capsys)
    err_line = lambda o: re.search(r"repeat-last-value [\d.]+, AR\(\d+\)[^\d]*[\d.]+", o).group(0)
    assert err_line(out) == err_line(out0)


def test_bom_header_names_the_column(tmp_path, capsys):
    f = variant(tmp_path, "bom")
    f.write_bytes(b"\xef\xbb\xbfYEAR" + f.read_bytes()[3 + len("date"):])   # BOM before the first name
    rc, out, err = run(["train", "--csv", str(f), "--column", "YEAR", "-o", str(tmp_path / "m.frnn")] + QUICK,
                       capsys)
    assert rc == 0 or "not a number" in err           # found (the dates are no numbers), not "no column"
    assert "no column" not in err


def test_no_header_option_and_delimiter_option(tmp_path, capsys):
    f = tmp_path / "n.csv"
    f.write_text("".join(f"{i}|{np.sin(i / 5):.4f}\n" for i in range(120)))
    rc, out, err = run(["train", "--csv", str(f), "--no-header", "--delimiter", "pipe", "--column", "2",
                        "-o", str(tmp_path / "m.frnn")] + QUICK, capsys)
    assert rc == 0, err
    assert f"using column '2' of {f} (120 rows, 0 missing; index column '1')" in out


def test_missing_policies_and_predict_keeps_the_file_rows(tmp_path, capsys):
    # A gap of 3 rows, 2 leading and 1 trailing missing rows; the first column is a plain row
    # number that increases, so it becomes the index.
    vals = [np.sin(i / 4) + 2 for i in range(100)]
    cells = ["" if i in (0, 1, 50, 51, 52, 99) else f"{v:.5f}" for i, v in enumerate(vals)]
    f = tmp_path / "g.csv"
    f.write_text("row,value\n" + "".join(f"{100 + i},{c}\n" for i, c in enumerate(cells)))
    m = tmp_path / "m.frnn"
    base = ["train", "--csv", str(f), "--transform", "none", "--window", "5", "--epochs", "1", "--hidden", "4",
            "-q", "--plot", "none", "-o", str(m)]
    rc, out, err = run(base, capsys)
    assert rc == 0, err
    assert "6 missing values" in err and "3 inside the series filled by linear interpolation" in err
    assert "2 leading and 1 trailing rows left out" in err
    assert "97 values" in out                             # 100 rows - 2 leading - 1 trailing
    rc, out, err = run(["predict", "-m", str(m), "--csv", str(f)], capsys)
    rows = list(csv.reader(out.splitlines()))
    assert rows[0][:2] == ["index", "actual"]              # holding the file's 'row' column
    by_row = {r[0]: r for r in rows[1:]}
    # the first forecast: data rows 2..6 are read, row 7 (label 107) is forecast
    assert rows[1][0] == "107" and float(rows[1][1]) == float(cells[7])
    assert by_row["150"][1] == "" and by_row["153"][1] == cells[53]     # an interpolated row has no actual
    assert rows[-1][0] == "199" and rows[-1][1] == ""                    # forecast of the trailing gap
    # drop: the labels jump over the gap instead of counting positions of a shortened series
    rc, out, err = run(["predict", "-m", str(m), "--csv", str(f), "--missing", "drop"], capsys)
    assert rc == 0 and "6 missing values" in err and "dropped" in err
    labels = [r[0] for r in csv.reader(out.splitlines())][1:]
    assert "150" not in labels and "153" in labels and labels[labels.index("153") - 1] == "149"
    # error: refused, naming the count and the line
    rc, out, err = run(base + ["--missing", "error"], capsys)
    assert rc == 1 and "6 missing values" in err and "--missing" in err


def test_predict_without_an_index_column_writes_file_row_numbers(tmp_path, capsys):
    f = tmp_path / "v.csv"
    cells = ["" if i == 30 else f"{np.sin(i / 3):.4f}" for i in range(80)]
    f.write_text("value\n" + "\n".join(cells) + "\n")
    m = tmp_path / "m.frnn"
    rc, out, err = run(["train", "--csv", str(f), "--transform", "none", "--window", "4", "-o", str(m)] + QUICK[:4]
                       + ["-q", "--plot", "none"], capsys)
    assert rc == 0, err
    for policy, n_rows in (("interpolate", 80 - 4 + 1), ("drop", 79 - 4 + 1)):
        rc, out, err = run(["predict", "-m", str(m), "--csv", str(f), "--missing", policy], capsys)
        rows = list(csv.DictReader(out.splitlines()))
        assert len(rows) == n_rows and rows[0]["index"] == "4"
        idx = [int(r["index"]) for r in rows]
        assert idx[-1] == 80 and (30 in idx) == (policy == "interpolate")   # 0-based data rows of the file


def test_train_model_is_a_deprecated_alias_of_cell(tmp_path, capsys):
    rc, out, err = run(["train", "--model", "gru", "-o", str(tmp_path / "m.frnn")] + QUICK, capsys)
    assert rc == 0 and "deprecated" in err and "--cell" in err and out.count("GRU(") == 1
    assert cli.read_cli_meta(tmp_path / "m.frnn")["cell"] == "gru"
    rc, out, err = run(["train", "--model", "gru", "--cell", "rnn"] + QUICK, capsys)
    assert rc == 1 and "disagree" in err


def test_help_shows_the_defaults(capsys):
    for cmd, needles in (("train", ["(default: 30)", "(default: auto)", "(default: interpolate)",
                                    "(default: 0.005)", "(default: lstm)", "normalised scale"]),
                         ("backtest", ["(default: 5)"]), ("predict", ["(default: stdout)"])):
        with pytest.raises(SystemExit):
            cli.main([cmd, "--help"])
        out = capsys.readouterr().out
        for n in needles:
            assert n in " ".join(out.split()), (cmd, n)


def test_default_model_file_goes_next_to_the_csv(tmp_path, capsys, monkeypatch, series_csv):
    f, _ = series_csv
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rc, out, err = run(["train", "--csv", str(f), "--column", "Close", "--epochs", "1", "--hidden", "4",
                        "--window", "8", "-q"], capsys)
    assert rc == 0, err
    model = f.parent / "series-Close-lstm.frnn"
    assert f"model saved to {model}" in out and model.exists() and not os.listdir(elsewhere)


def test_train_quantiles_then_predict_writes_them(tmp_path, capsys, series_csv):
    f, s = series_csv
    m = tmp_path / "q.frnn"
    rc, out, err = run(["train", "--csv", str(f), "--column", "Close", "--quantiles", "0.1,0.9",
                        "--horizon", "2", "--epochs", "6", "--hidden", "8", "--window", "12", "-q", "--plot", "none",
                        "-o", str(m)], capsys)
    assert rc == 0, err
    cov = re.search(r"the \[q0.1, q0.9\] band holds (\d+)% \(nominal 80%\); pinball loss [\d.e-]+", out)
    assert cov and 20 <= int(cov.group(1)) <= 100
    assert fr.load(m) is not None                    # loads without fastrnn.forecasting's loss
    rc, out, err = run(["predict", "-m", str(m), "--csv", str(f)], capsys)
    rows = list(csv.DictReader(out.splitlines()))
    assert list(rows[0])[2:] == ["pred_1", "pred_2", "q0.1_1", "q0.5_1", "q0.9_1", "q0.1_2", "q0.5_2", "q0.9_2"]
    for r in rows:
        for k in (1, 2):
            lo, med, hi = (float(r[f"q{q}_{k}"]) for q in ("0.1", "0.5", "0.9"))
            assert lo <= med <= hi and med == float(r[f"pred_{k}"])


def test_backtest_reports_folds_and_mean_std(tmp_path, capsys):
    rc, out, err = run(["backtest", "--csv", os.path.join(FIXTURES, "sunspots_yearly.csv"), "--folds", "3",
                        "--epochs", "3", "--hidden", "8", "--window", "10"], capsys)
    assert rc == 0, err
    assert len(re.findall(r"^fold \d/3: origin \d+", out, re.M)) == 3
    assert re.search(r"test MSE over 3 folds .*mean ± std: forecast [\d.]+ ± [\d.e+-]+, repeat-last-value "
                     r"[\d.]+ ± [\d.e+-]+, AR [\d.]+ ± [\d.e+-]+, LSTM alone [\d.]+ ± [\d.e+-]+; the "
                     r"forecast beats", out)
    assert not any(p.suffix == ".frnn" for p in tmp_path.iterdir())


def test_predict_reproduces_the_combined_forecast_and_refuses_a_bad_ar_description(tmp_path, capsys):
    import io
    import json
    import zipfile
    src = os.path.join(FIXTURES, "sunspots_yearly.csv")
    m = tmp_path / "m.frnn"
    args = cli.build_parser().parse_args(
        ["train", "-q", "--csv", src, "--epochs", "2", "--hidden", "4", "--window", "10",
         "--ensemble", "2", "--plot", "none", "-o", str(m)])
    r = cli.cmd_train(args, out=io.StringIO())["result"]
    assert r.combine == "ar" and r.ensemble == 2
    rc, out, err = run(["predict", "-m", str(m), "--csv", src], capsys)
    assert rc == 0, err
    rows = list(csv.DictReader(out.splitlines()))
    context = r.meta["context"]
    got = np.array([float(rows[o - (context - 1)]["pred_1"]) for o in r.origins])
    np.testing.assert_allclose(got, r.pred[:, 0], rtol=2e-6)
    # the AR half comes from the file's cli.json, which is untrusted: a broken one is refused
    with zipfile.ZipFile(m) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    meta = json.loads(entries[cli.CLI_META])
    meta["combine_ar"]["phi"] = ["x"]
    entries[cli.CLI_META] = json.dumps(meta).encode()
    bad = tmp_path / "bad.frnn"
    with zipfile.ZipFile(bad, "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)
    rc, out, err = run(["predict", "-m", str(bad), "--csv", src], capsys)
    assert rc != 0 and "AR model is unusable" in err and "Traceback" not in err
