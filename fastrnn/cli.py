"""The ``fastrnn`` command line.

    fastrnn train     train a forecaster on a built-in series or a CSV column; saves the model
                      (fastrnn format) and a loss/forecast plot
    fastrnn backtest  rolling-origin backtest of the same training against the baselines
    fastrnn predict   load a saved model and write its forecasts for a CSV column as CSV
    fastrnn bench     the benchmark suite (bench/run.py of a source checkout)
    fastrnn demo      the original demo: an LSTM learns to continue a sine wave

Bad arguments and unreadable files give one line on stderr and a non-zero exit status
(set FASTRNN_DEBUG=1 to see the traceback instead).
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time
import zipfile

import numpy as np

from . import _checks

CLI_META = "cli.json"          # extra entry the CLI adds to the model file (fr.load ignores it)
DATASETS = ("sine", "gbm", "mackey-glass")


class CLIError(Exception):
    """A user error: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(name, kind=int):
    """argparse type: a positive int (>= 1), or with kind=float a positive finite number."""
    what = "integer" if kind is int else "number"

    def conv(v):
        try:
            n = kind(v)
            if kind is int:
                return _checks.count(n, name)
            if np.isfinite(n):
                return _checks.positive(n, name)
        except ValueError:
            pass
        raise argparse.ArgumentTypeError(f"{name} must be a positive {what}, got {v!r}")
    return conv


def _fraction(v):
    try:
        f = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--test-fraction must be a number, got {v!r}") from None
    if not 0 < f < 1:
        raise argparse.ArgumentTypeError(f"--test-fraction must be in (0, 1), got {v!r}")
    return f


# ============================================================================ data
def builtin_series(name, seed=0):
    from . import datasets as ds
    if name == "sine":
        # Two incommensurate tones and a little noise: learnable, not trivially periodic.
        return ds.sine_series(3000, step=0.1, noise=0.05, seed=seed,
                              components=((1.0, 1.0), (0.5, 2.7)))
    if name == "gbm":
        return ds.gbm_prices(2500, seed=seed)
    if name == "mackey-glass":
        return ds.mackey_glass(3000, seed=seed)
    raise CLIError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _warn(msg):
    print(f"fastrnn: warning: {msg}", file=sys.stderr)


def read_series(path, column, delimiter=None, no_header=False, missing="interpolate", out=None):
    """Read a CSV column for train/backtest/predict and apply the --missing policy, saying on
    ``out`` which column is used and warning (stderr) about what was filled or dropped.
    Returns (CSVSeries, series, positions): series[i] is the value of data row positions[i]."""
    from .datasets import fill_missing, read_csv_series
    try:
        s = read_csv_series(path, column, delimiter=delimiter, header=False if no_header else None)
    except OSError as e:
        raise CLIError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError, csv.Error) as e:
        raise CLIError(str(e) if isinstance(e, ValueError) else f"{path}: not a readable CSV file ({e})") from None
    for note in s.notes:
        print(f"{path}: {note}", file=out)
    miss = np.isnan(s.values)
    k = int(miss.sum())
    idx = f"; index column {s.index_name!r}" if s.index_name is not None else ""
    print(f"using column {s.column!r} of {path} ({len(s)} rows, {k} missing{idx})", file=out)
    try:
        series, pos = fill_missing(s.values, missing)
    except ValueError as e:
        raise CLIError(f"column {s.column!r}: {e}; use --missing interpolate or drop") from None
    if k:
        first = np.flatnonzero(~miss)[0]
        last = np.flatnonzero(~miss)[-1]
        lead, trail = int(first), int(len(miss) - 1 - last)
        inner = k - lead - trail
        where = f"the first at line {s.rows[np.flatnonzero(miss)[0]]}"
        if missing == "drop":
            _warn(f"{k} missing values in column {s.column!r} ({where}) dropped: the values on both "
                  f"sides of each gap are now adjacent (--missing drop)")
        else:
            parts = []
            if inner:
                parts.append(f"{inner} inside the series filled by linear interpolation")
            if lead or trail:
                parts.append(f"{lead} leading and {trail} trailing rows left out")
            _warn(f"{k} missing values in column {s.column!r} ({where}): {'; '.join(parts)} "
                  f"(--missing interpolate)")
    return s, series, pos


# ============================================================================ train
CELLS = ("rnn", "lstm", "gru")


def _build_model(kind, hidden, layers, horizon, seed):
    from .forecasting import build_model
    return build_model(kind, hidden, layers, horizon, seed)


def fold_normalisation(model, mean, std, out_mean=None, out_std=None):
    """See ``fastrnn.forecasting.fold_normalisation``."""
    from .forecasting import fold_normalisation as fold
    fold(model, mean, std, out_mean, out_std)


def _save_with_meta(model, path, meta):
    from .train.io import save
    save(model, path, extra={CLI_META: json.dumps(meta, indent=1)})


def read_cli_meta(path):
    from .train.io import read_extra
    data = read_extra(path, CLI_META)
    try:
        return {} if data is None else json.loads(data)
    except ValueError:
        return {}


def _plot_train(path, history, t_axis, truth, pred, free, title, band=None):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    f, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [1, 2]})
    ep = np.arange(1, len(history["loss"]) + 1)
    a1.semilogy(ep, history["loss"], "o-", ms=3, label="train")
    if "val_loss" in history:
        a1.semilogy(ep, history["val_loss"], "o-", ms=3, label="test")
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss (normalised scale)")
    a1.set_title("loss")
    a1.legend()
    n = min(len(truth), 400)
    a2.plot(t_axis[:n], truth[:n], "k", lw=1, label="series")
    if band is not None:
        a2.fill_between(t_axis[:n], band[0][:n], band[1][:n], color="tab:red", alpha=0.2,
                        label="quantile band")
    a2.plot(t_axis[:n], pred[:n], "tab:red", lw=1, label="one-step forecast")
    a2.plot(t_axis[:len(free)], free, "tab:blue", lw=1, ls="--", label="closed-loop forecast")
    a2.set_xlabel("index")
    a2.set_title(title)
    a2.legend()
    f.tight_layout()
    f.savefig(path, dpi=100)
    plt.close(f)
    return True


def _epoch_lines(epochs, what, member=0, members=1):
    """A Callback printing one line per epoch on stderr (no progress bar: stderr is no TTY)."""
    from .train.callbacks import Callback
    who = f"network {member + 1}/{members}, " if members > 1 else ""

    class EpochLines(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            vals = ", ".join(f"{k} {v:.4g}" for k, v in (logs or {}).items())
            print(f"{who}epoch {epoch + 1}/{epochs}: {vals} ({what}; "
                  f"{time.perf_counter() - self.t0:.2f} s)", file=sys.stderr, flush=True)
    return EpochLines()


def _cell(args):
    """--cell, or the deprecated 'train --model' alias."""
    alias = getattr(args, "model_alias", None)
    if alias is not None:
        if args.cell is not None and args.cell != alias:
            raise CLIError(f"--cell {args.cell} and --model {alias} disagree; --model is the old "
                           "name of --cell")
        _warn("'--model' in train/backtest is deprecated: it is now '--cell' "
              "(in 'fastrnn predict', --model is the model file)")
        return alias
    return args.cell or "lstm"


def _load_training_series(args, out):
    """(series, source, stem, CSVSeries or None) for train/backtest."""
    if args.csv:
        s, series, _ = read_series(args.csv, args.column, args.delimiter, args.no_header,
                                   args.missing, out)
        return series, f"{args.csv} column {s.column!r}", s
    if args.column is not None:
        raise CLIError("--column needs --csv")
    return np.asarray(builtin_series(args.data, args.seed), np.float64), \
        f"built-in '{args.data}' series", None


def _split(n, fraction):
    n_test = int(round(n * fraction))
    return n - n_test, n_test


def _fit_kw(args, cell):
    return dict(cell=cell, hidden=args.hidden, layers=args.layers, window=args.window,
                horizon=args.horizon, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                seed=args.seed, transform=args.transform, quantiles=args.quantiles,
                ensemble=args.ensemble, combine=args.combine)


def _default_output(args, cell, s):
    """Next to the CSV for --csv (the model belongs to that data, whatever the current
    directory); in the current directory for built-in data."""
    if s is None:
        return f"fastrnn-{args.data}-{cell}.frnn"
    stem = os.path.splitext(os.path.basename(args.csv))[0]
    col = "".join(c if c.isalnum() or c in "-_." else "_" for c in s.column) or "column"
    return os.path.join(os.path.dirname(os.path.abspath(args.csv)), f"{stem}-{col}-{cell}.frnn")


def _transform_line(r):
    if not r.transform_scores:
        return f"transform: {r.transform} ({r.transform_reason})"
    scores = ", ".join(f"{k} {v:.4g}" for k, v in r.transform_scores.items())
    return (f"transform: {r.transform} (auto, from the training part only: MSE of AR forecasts of "
            f"its last 25% under each: {scores})")


def _networks(r, cell):
    return cell.upper() + (f" (mean of {r.ensemble} seeds)" if r.ensemble > 1 else "")


def _errors_line(r, cell, unit):
    ar = f"{r.ar!r}{'' if r.transform == 'none' else ' of the ' + r.transform}"
    head = (f"test MSE ({unit}; {len(r.origins)} forecasts of {r.truth.shape[1]} step"
            f"{'s' if r.truth.shape[1] > 1 else ''}): ")
    base = f"repeat-last-value {r.last_mse:.5g}, {ar} {r.ar_mse:.5g}"
    if r.combine == "none":
        return head + f"{_networks(r, cell)} {r.mse:.5g}, " + base
    return (head + f"forecast {r.mse:.5g}, " + base + f", {_networks(r, cell)} alone "
            f"{r.net_mse:.5g}; the forecast is the mean of the {cell.upper()} and the {r.ar!r} "
            "forecasts (--combine none: the network alone)")


def cmd_train(args, out=None):
    out = out or sys.stdout
    from .forecasting import TrainingDiverged, closed_loop, fit_forecaster
    cell = _cell(args)
    series, source, s = _load_training_series(args, out)
    n_train, n_test = _split(len(series), args.test_fraction)
    W, Hz = args.window, args.horizon
    tty = sys.stderr.isatty()
    loss_name = "pinball loss" if args.quantiles else "MSE"
    print(f"fastrnn train: {cell.upper()}(hidden {args.hidden}, layers {args.layers}) on {source}: "
          f"{len(series)} values, window {W}, horizon {Hz}; the last {n_test} values are the test "
          "part", file=out)
    if not args.quiet:
        print(f"progress: loss = training {loss_name}, val_loss = {loss_name} on the test part, both "
              "on the normalised scale (the transformed series over its training std)", file=out)
    cbs = None if (args.quiet or tty) else \
        (lambda k: [_epoch_lines(args.epochs, "normalised scale", k, args.ensemble)])
    out.flush()
    try:
        r = fit_forecaster(series, n_train, verbose=0 if args.quiet or not tty else 1, callbacks=cbs,
                           **_fit_kw(args, cell))
    except TrainingDiverged as e:
        raise CLIError(f"{e}; lower --lr (now {args.lr:g}) and try again") from None
    except ValueError as e:
        raise CLIError(str(e)) from None
    print(_transform_line(r), file=out)
    unit = "raw scale" + (f", squared units of {s.column!r}" if s is not None else "")
    times = f"{args.ensemble} networks x " if args.ensemble > 1 else ""
    print(f"trained {times}{args.epochs} epochs in {r.seconds:.1f} s; " + _errors_line(r, cell, unit),
          file=out)
    if r.quant is not None:
        cov = ", ".join(f"q{q:g} {c:.0%}" for q, c in r.coverage.items())
        lo, hi, inside = r.interval
        print(f"quantiles: share of test values at or below each forecast quantile: {cov}; "
              f"the [q{lo:g}, q{hi:g}] band holds {inside:.0%} (nominal {hi - lo:.0%}); "
              f"pinball loss {r.pinball:.5g}", file=out)
    output = args.output or _default_output(args, cell, s)
    meta = dict(r.meta, column=None if s is None else s.column, source=source, model=cell,
                cell=cell, hidden=args.hidden, layers=args.layers, missing=args.missing,
                delimiter=None if s is None else s.delimiter, test_mse=r.mse,
                last_value_mse=r.last_mse, ar_mse=r.ar_mse, ar_p=r.ar.p, network_mse=r.net_mse)
    model = r.model
    try:
        _save_with_meta(model, output, meta)
    except OSError as e:
        raise CLIError(f"cannot write {output}: {e.strerror or e}; choose another place with -o") from None
    print(f"model saved to {os.path.abspath(output)}", file=out)
    plot = args.plot if args.plot is not None else os.path.splitext(output)[0] + ".png"
    if plot.lower() != "none":
        idx = r.origins + 1
        free = closed_loop(model, r.meta, series[:n_train], min(len(r.truth), 100))
        band = None if r.quant is None else (r.quant[:, 0, 0], r.quant[:, 0, -1])
        try:
            ok = _plot_train(plot, r.history, idx, r.truth[:, 0], r.pred[:, 0], free,
                             f"test part of {source}", band)
        except OSError as e:
            raise CLIError(f"cannot write {plot}: {e.strerror or e}") from None
        if ok:
            print(f"plot saved to {os.path.abspath(plot)}", file=out)
        else:
            print("no plot: matplotlib is not installed (pip install 'fastrnn[plot]')", file=out)
    return {"test_mse": r.mse, "naive_mse": r.last_mse, "ar_mse": r.ar_mse,
            "network_mse": r.net_mse, "model": output,
            "seconds": r.seconds, "transform": r.transform, "result": r}


# ============================================================================ backtest
def cmd_backtest(args, out=None):
    out = out or sys.stdout
    from .forecasting import TrainingDiverged, backtest
    cell = _cell(args)
    series, source, s = _load_training_series(args, out)
    n_test = int(round(len(series) * args.test_fraction))
    K = args.folds
    print(f"fastrnn backtest: {cell.upper()}(hidden {args.hidden}, layers {args.layers}) on {source}: "
          f"{len(series)} values; the last {n_test} are cut into {K} blocks, and each block is "
          "forecast by a model trained anew on everything before it", file=out)
    unit = "raw scale" + (f", squared units of {s.column!r}" if s is not None else "")

    def on_fold(i, r):
        a, b = r.fold
        print(f"fold {i + 1}/{K}: origin {a}, test values {a}..{b - 1}, transform {r.transform}, "
              f"{r.seconds:.1f} s: " + _errors_line(r, cell, unit).split(": ", 1)[1], file=out, flush=True)
    try:
        res = backtest(series, K, args.test_fraction, on_fold=on_fold, **_fit_kw(args, cell))
    except TrainingDiverged as e:
        raise CLIError(f"{e}; lower --lr (now {args.lr:g}) and try again") from None
    except ValueError as e:
        raise CLIError(str(e)) from None
    first = cell.upper() if args.combine == "none" else "forecast"
    table = {first: [r.mse for r in res], "repeat-last-value": [r.last_mse for r in res],
             "AR": [r.ar_mse for r in res]}
    if args.combine != "none":
        table[f"{cell.upper()} alone"] = [r.net_mse for r in res]
    summary = ", ".join(f"{k} {np.mean(v):.5g} ± {np.std(v):.2g}" for k, v in table.items())
    wins = sum(r.mse < min(r.last_mse, r.ar_mse) for r in res)
    print(f"test MSE over {K} folds ({unit}), mean ± std: {summary}; the {first} beats both "
          f"baselines in {wins} of {K} folds", file=out)
    return {k: float(np.mean(v)) for k, v in table.items()} | {"folds": res}


# ============================================================================ predict
def _label_after(labels):
    """The label one step after the last of ``labels`` when they are evenly spaced numbers or
    ISO dates, else ''."""
    try:
        v = np.array([float(x) for x in labels[-3:]])
        d = np.diff(v)
        if len(d) and np.all(d == d[0]):
            nxt = v[-1] + d[0]
            return str(int(nxt)) if all(x.strip().lstrip("+-").isdigit() for x in labels[-3:]) else repr(nxt)
    except ValueError:
        pass
    try:
        v = np.array(labels[-3:], dtype="datetime64")
        d = np.diff(v)
        if len(d) and np.all(d == d[0]):
            return str(v[-1] + d[0])
    except (ValueError, TypeError):
        pass
    return ""


def cmd_predict(args, out=None):
    out = out or sys.stdout
    import fastrnn as fr
    from .forecasting import predict
    path = args.model
    if not os.path.exists(path):
        raise CLIError(f"model file {path} does not exist")
    try:
        model = fr.load(path, compile=False)
    except fr.ModelFileError as e:  # its message names the file already
        raise CLIError(f"cannot load the model: {e}") from None
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as e:
        raise CLIError(f"cannot load {path}: {e}") from None
    meta = dict(read_cli_meta(path))
    if args.window:
        meta["window"] = args.window
    if not meta.get("window"):
        raise CLIError(f"{path} was not saved by 'fastrnn train'; give --window")
    name = meta.get("transform") or "none"
    if name not in ("none", "diff", "log-diff"):
        raise CLIError(f"{path}: unknown transform {name!r} in its cli.json")
    meta["transform"] = name
    if meta.get("combine", "none") not in ("ar", "none"):
        raise CLIError(f"{path}: unknown combine {meta['combine']!r} in its cli.json")
    if meta.get("combine") == "ar":
        from .forecasting import ARBaseline
        try:
            ARBaseline.from_dict(meta.get("combine_ar") or {})
        except ValueError as e:
            raise CLIError(f"{path}: its cli.json's AR model is unusable: {e}") from None
    window = int(meta["window"])
    context = window + (0 if name == "none" else 1)
    column = args.column if args.column is not None else meta.get("column")
    missing = args.missing or meta.get("missing") or "interpolate"
    s, series, pos = read_series(args.csv, column, args.delimiter, args.no_header, missing,
                                 out=sys.stderr)
    if len(series) < context:
        raise CLIError(f"{args.csv} has {len(series)} values; the model reads windows of {window}"
                       + (f" {name} values ({context} values)" if context > window else ""))
    origins = np.arange(context - 1, len(series))
    try:
        point, quant = predict(model, meta, series, origins)
    except (ValueError, TypeError) as e:
        raise CLIError(f"the model cannot read this data: {e}") from None
    h = point.shape[1]
    qs = meta.get("quantiles") or []
    labels = s.index
    header = ["index", "actual"] + \
        [f"pred_{k + 1}" for k in range(h)] + [f"q{q:g}_{k + 1}" for k in range(h) for q in qs]
    present = np.isfinite(s.values)
    f = open(args.output, "w", newline="") if args.output else out
    try:
        w = csv.writer(f)
        w.writerow(header)
        nxt = None
        for i, t in enumerate(origins):
            p = t + 1                               # the first value this row forecasts
            row = int(pos[p]) if p < len(series) else int(pos[-1]) + 1
            if labels is None:
                lab = row
            elif row < len(labels):
                lab = labels[row]
            else:
                nxt = _label_after(labels) if nxt is None else nxt
                lab = nxt
            actual = repr(float(s.values[row])) if row < len(s.values) and present[row] else ""
            w.writerow([lab, actual] + [f"{v:.7g}" for v in point[i]]
                       + ([] if quant is None else [f"{v:.7g}" for v in quant[i].ravel()]))
    except BrokenPipeError:
        raise                                    # e.g. `fastrnn predict ... | head`
    except OSError as e:
        raise CLIError(f"cannot write {args.output}: {e.strerror or e}") from None
    finally:
        if f is not out:
            f.close()
    if args.output:
        print(f"{len(origins)} forecasts ({h} step{'s' if h > 1 else ''} each) written to "
              f"{os.path.abspath(args.output)}", file=sys.stderr)
    return point


# ============================================================================ tune
def cmd_tune(args, out=None):
    out = out or sys.stdout
    import warnings

    import fastrnn as fr
    from . import machine, tuning
    if args.threads:
        fr.set_num_threads(args.threads)
    f = machine.facts()
    caches = ", ".join(f"{k.upper()} {f[k] >> 10} KiB" for k in ("l1d", "l2", "l3") if f.get(k))
    print(f"fastrnn tune: {f['model']} ({f['machine']}, {' '.join(f['flags']) or 'no SIMD flags read'}"
          f"{', ' + caches if caches else ''}), {fr.get_num_threads()} threads, about "
          f"{args.seconds:g} s", file=out, flush=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = tuning.tune(seconds=args.seconds, save=not args.no_save, verbose=False)
    if r["threads"] < 2:
        print("one thread: nothing is split; only the cache-size thresholds are measured", file=out)
    what = {"min_parallel_work": "split / one thread, by multiply-adds",
            "unit_min_work": "split / one thread, by G*H*H",
            "cell_split_work": "split / one thread, by multiply-adds per row",
            "fused_max_bytes": "fused / hoisted projection, by packed weight bytes",
            "dx_loop_max_bytes": "dx in the loop / after it, by packed weight bytes",
            "wave_round_work": "wavefront / layer by layer, by the round cost it assumes",
            "tile_rows": "time / time at the current tile, by micro-kernel tile rows"}
    for name, pts in r["measured"].items():
        ladder = ", ".join(f"{w:.3g}: {ratio:.2f}" for w, ratio in pts)
        v = r["knobs"][name]
        chosen = "never split" if v >= tuning.NEVER else f"{v:,}"
        print(f"{name}: {chosen} (before: {r['previous'][name]:,}); {what[name]}: {ladder}", file=out)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if r["path"]:
        print(f"saved to {r['path']}; 'import fastrnn' on this CPU kind applies it "
              "(FASTRNN_NO_TUNE_CACHE=1 to ignore it)", file=out)
    elif not args.no_save:
        raise CLIError("nothing saved: the machine was busy while measuring")
    return r


# ============================================================================ bench / demo
def _bench_script():
    here = os.path.dirname(os.path.abspath(__file__))
    for base in (os.path.dirname(here), os.getcwd()):
        p = os.path.join(base, "bench", "run.py")
        if os.path.isfile(p):
            return p
    return None


def cmd_bench(args, out=None):
    out = out or sys.stdout
    script = _bench_script()
    if script is None:
        raise CLIError("the benchmark suite (bench/run.py) is part of the source checkout; run "
                       "'fastrnn bench' from the repository directory")
    rest = list(args.bench_args)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    return subprocess.call([sys.executable, script] + rest)


def sine_windows_demo(n, window, rng):
    """n windows of a noisy sine with random phase and frequency; target is the next value."""
    t = np.arange(window + 1)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    freq = rng.uniform(0.05, 0.15, (n, 1))
    wave = np.sin(freq * t + phase) + 0.02 * rng.standard_normal((n, window + 1))
    return wave[:, :window, None].astype(np.float32), wave[:, window:].astype(np.float32)


def demo(epochs=15, hidden=32, window=40, samples=2048, batch=64, seed=0, out=None):
    """The engine API end to end: fr.LSTM with backward, a linear read-out and Adam."""
    out = out or sys.stdout
    import fastrnn as fr
    from .train.optim import Adam

    rng = np.random.default_rng(seed)
    X, y = sine_windows_demo(samples, window, rng)
    lstm = fr.LSTM(1, hidden, batch_first=True, seed=seed)
    head = {"w": (rng.standard_normal((hidden, 1)) / np.sqrt(hidden)).astype(np.float32),
            "b": np.zeros(1, np.float32)}
    opt = Adam(learning_rate=1e-2)
    params = {**lstm.parameters(), **{"head." + k: v for k, v in head.items()}}
    print(f"fastrnn demo: LSTM(1, {hidden}) predicts the next value of a sine wave "
          f"({samples} windows of {window} steps, batch {batch})", file=out)
    losses = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(samples)
        total = 0.0
        for i in range(0, samples, batch):
            idx = order[i:i + batch]
            xb, yb = X[idx], y[idx]
            seq, _ = lstm(xb)
            last = seq[:, -1]                       # many-to-one: the last step's state
            pred = last @ head["w"] + head["b"]
            err = pred - yb
            total += float(np.sum(err ** 2))
            dpred = 2 * err / len(idx)              # d(mean squared error)/d(pred)
            dseq = np.zeros_like(seq)
            dseq[:, -1] = dpred @ head["w"].T
            lstm.zero_grad()
            lstm.backward(dseq)
            grads = {**lstm.grads, "head.w": last.T @ dpred, "head.b": dpred.sum(0)}
            opt.step(params, grads)
        losses.append(total / samples)
        print(f"epoch {epoch:3d}  loss {losses[-1]:.5f}  {1e3 * (time.perf_counter() - t0):7.1f} ms/epoch",
              file=out)
    return losses


def cmd_demo(args, out=None):
    out = out or sys.stdout
    losses = demo(epochs=args.epochs, hidden=args.hidden, seed=args.seed, out=out)
    print(f"loss fell from {losses[0]:.4f} to {losses[-1]:.4f} ({losses[0] / losses[-1]:.0f}x)", file=out)
    return losses


# ============================================================================ main
class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default (except None/False: 'not given' needs no saying)."""

    def _get_help_string(self, action):
        h = action.help or ""
        if "%(default)" in h or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return h
        return h + " (default: %(default)s)"


def _quantiles(v):
    try:
        qs = [float(x) for x in v.split(",") if x.strip()]
    except ValueError:
        qs = []
    if not qs or not all(0 < q < 1 for q in qs):
        raise argparse.ArgumentTypeError(f"--quantiles must be numbers in (0, 1) separated by "
                                         f"commas, e.g. 0.1,0.5,0.9; got {v!r}")
    return sorted(set(qs))


def _data_options(p, predict=False):
    p.add_argument("--column", help="CSV column: a header name or a 1-based number "
                   + ("(default: the one the model was trained on)" if predict else
                      "(default: the last column whose non-missing values are numbers; "
                      "missing values never make it pick another)"))
    p.add_argument("--delimiter", metavar="CHAR",
                   help="field separator: one character, or tab/semicolon/comma/pipe (default: "
                        "detected: ';', tab, '|' or ','; with ';' or tab, numbers like 316,1 "
                        "are read with a decimal comma)")
    p.add_argument("--no-header", action="store_true",
                   help="the file has no header row (default: detected; a first row with numbers "
                        "where the rows below have numbers is data, and the columns are numbered)")
    p.add_argument("--missing", choices=("interpolate", "drop", "error"),
                   default=None if predict else "interpolate",
                   help="missing cells (empty, NA, NaN, null, ., -, ?) of the column: interpolate "
                        "fills interior gaps linearly and leaves out leading/trailing ones; drop "
                        "removes them (the values around a gap become neighbours); error refuses; "
                        "a warning counts them" + (" (default: as in training)" if predict else ""))


def _model_options(t):
    src = t.add_mutually_exclusive_group()
    src.add_argument("--data", choices=DATASETS, default="sine", help="built-in series")
    src.add_argument("--csv", metavar="FILE", help="CSV file (instead of --data)")
    _data_options(t)
    t.add_argument("--cell", choices=CELLS, default=None,
                   help="recurrent cell (default: lstm)")
    t.add_argument("--model", dest="model_alias", choices=CELLS, help=argparse.SUPPRESS)
    t.add_argument("--hidden", type=_positive("--hidden"), default=64, help="units per layer")
    t.add_argument("--layers", type=_positive("--layers"), default=1, help="stacked layers")
    t.add_argument("--epochs", type=_positive("--epochs"), default=30, help="training epochs")
    t.add_argument("--window", type=_positive("--window"), default=40,
                   help="past values the model reads (after the transform)")
    t.add_argument("--horizon", type=_positive("--horizon"), default=1, help="steps predicted")
    t.add_argument("--transform", choices=("auto", "none", "diff", "log-diff"), default="auto",
                   help="what the network sees: the values, their differences, or differences of "
                        "their logs; auto picks the one whose AR forecasts of the last 25%% of the "
                        "training part are best (the test part is never used)")
    t.add_argument("--quantiles", type=_quantiles, metavar="Q,Q,...",
                   help="also forecast these quantiles (e.g. 0.1,0.5,0.9; pinball loss; 0.5 is "
                        "added and is the point forecast); reports their coverage on the test part")
    t.add_argument("--ensemble", type=_positive("--ensemble"), default=3,
                   help="networks trained from seeds --seed, --seed+1, ...; their forecasts are "
                        "averaged (saved as one model)")
    t.add_argument("--combine", choices=("ar", "none"), default="ar",
                   help="ar: the forecast is the mean of the networks' and the AR baseline's "
                        "(robust on short and noisy series); none: the networks alone")
    t.add_argument("--batch-size", type=_positive("--batch-size"), default=64, help="windows per update")
    t.add_argument("--lr", type=_positive("--lr", float), default=0.005, help="Adam learning rate")
    t.add_argument("--test-fraction", type=_fraction, default=0.2,
                   help="the last part of the series held out for testing")
    t.add_argument("--seed", type=int, default=0, help="random seed")


def build_parser():
    p = _Parser(prog="fastrnn", description="Fast CPU RNN/LSTM/GRU: train, predict, benchmark.",
                epilog="Start with 'fastrnn train': three LSTMs on the built-in sine data, ~15 s on 2 cores.")
    sub = p.add_subparsers(dest="command", metavar="{train,backtest,predict,tune,bench,demo}")

    t = sub.add_parser("train", help="train a forecaster; save the model and a plot", formatter_class=_Help,
                       description="Train a many-to-one forecaster: the past --window values "
                                   "(transformed, see --transform) predict the next --horizon "
                                   "ones. The forecast is the mean of --ensemble networks and of "
                                   "an AR(p) model (p <= --window by AIC, on the same transform; "
                                   "--combine none: the networks alone). The last --test-fraction "
                                   "of the series is the test part: its MSE is printed beside "
                                   "repeat-the-last-value, the AR model and the networks alone. "
                                   "Progress: loss/val_loss (training/test part) are on the "
                                   "normalised scale; a progress bar on a terminal, else one line "
                                   "per epoch on stderr. The final errors are raw-scale MSE, in the "
                                   "column's units squared.")
    _model_options(t)
    t.add_argument("--output", "-o", metavar="FILE",
                   help="model file (default: <csv name>-<column>-<cell>.frnn next to the CSV, "
                        "or fastrnn-<data>-<cell>.frnn in the current directory for --data)")
    t.add_argument("--plot", metavar="PNG", help="plot file (default: next to the model; 'none' to skip)")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress output")

    bt = sub.add_parser("backtest", help="rolling-origin backtest: mean/std test errors vs baselines",
                        formatter_class=_Help,
                        description="Cut the last --test-fraction of the series into --folds "
                                    "blocks; forecast each with a model trained anew on everything "
                                    "before it (transform chosen anew), beside repeat-the-last-"
                                    "value and AR(p) refitted on the same data; print each fold "
                                    "and the mean and std of the raw-scale test MSEs. Saves nothing.")
    _model_options(bt)
    bt.add_argument("--folds", type=_positive("--folds"), default=5, help="rolling origins")

    pr = sub.add_parser("predict", help="forecasts of a saved model for a CSV column, as CSV",
                        formatter_class=_Help,
                        description="Run a model saved by 'fastrnn train' over every window of "
                                    "a CSV column. Writes one row per forecast: the file's own "
                                    "label of the first forecast row (its first column when that "
                                    "holds dates, labels or increasing numbers, else 'index', the "
                                    "0-based data row), the actual value there (empty if missing), "
                                    "pred_1..pred_H, and with quantiles q<Q>_<k>. The last row "
                                    "forecasts past the end of the data.")
    pr.add_argument("--model", "-m", required=True, metavar="FILE", help="model file of 'fastrnn train'")
    pr.add_argument("--csv", required=True, metavar="FILE", help="CSV file")
    _data_options(pr, predict=True)
    pr.add_argument("--window", type=_positive("--window"), help="input steps (default: from the model file)")
    pr.add_argument("--output", "-o", metavar="FILE", help="CSV to write (default: stdout)")

    tu = sub.add_parser("tune", help="measure this machine's plan thresholds and cache them",
                        formatter_class=_Help,
                        description="Measure where splitting work over the threads starts to pay "
                                    "on this CPU (a layer's batch rows, a batch of one's hidden "
                                    "units, a single cell step) and up to which weight sizes the "
                                    "input projection runs inside the time loop and dx inside the "
                                    "reverse loop; save the thresholds to the user cache "
                                    "directory; every later 'import fastrnn' on this CPU kind "
                                    "uses them. Run it on an otherwise idle machine: if other "
                                    "processes use more than 10%% of it meanwhile, nothing is saved.")
    tu.add_argument("--seconds", type=_positive("--seconds", float), default=30.0,
                    help="measuring time, about")
    tu.add_argument("--no-save", action="store_true", help="print the thresholds, do not cache them")
    tu.add_argument("--threads", type=_positive("--threads"), default=None,
                    help="threads to tune for (default: the pool's, i.e. OPENBLAS_NUM_THREADS or all CPUs)")

    b = sub.add_parser("bench", help="run the benchmark suite (bench/run.py; try --quick)",
                       description="Runs bench/run.py from the source checkout with the given "
                                   "arguments, e.g. 'fastrnn bench --quick'.", add_help=False)
    b.add_argument("bench_args", nargs=argparse.REMAINDER)

    d = sub.add_parser("demo", help="an LSTM learns to continue a sine wave (engine API demo)",
                       formatter_class=_Help)
    d.add_argument("--epochs", type=_positive("--epochs"), default=15, help="epochs")
    d.add_argument("--hidden", type=_positive("--hidden"), default=32, help="units")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    return p


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        # Everything after 'bench' belongs to bench/run.py (argparse would claim --help etc.).
        args = argparse.Namespace(command="bench", bench_args=argv[1:])
    else:
        args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = {"train": cmd_train, "backtest": cmd_backtest, "predict": cmd_predict,
               "tune": cmd_tune, "bench": cmd_bench, "demo": cmd_demo}
    try:
        res = handler[args.command](args)
    except KeyboardInterrupt:
        print("fastrnn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`| head`): stop quietly, as SIGPIPE would.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except CLIError as e:
        print(f"fastrnn {args.command}: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:               # never a traceback for users; FASTRNN_DEBUG=1 shows it
        if os.environ.get("FASTRNN_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"fastrnn {args.command}: error: {msg}", file=sys.stderr)
        return 1
    if args.command == "bench":
        return int(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
