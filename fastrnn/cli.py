"""The ``fastrnn`` command line.

    fastrnn train     train a forecaster on a built-in series or a CSV column; saves the model
                      (fastrnn format) and a loss/forecast plot
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


# ============================================================================ threads
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


def _read_csv(path, column):
    from .datasets import read_csv_column
    try:
        return read_csv_column(path, column)
    except OSError as e:
        raise CLIError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError, csv.Error) as e:
        raise CLIError(str(e) if isinstance(e, ValueError) else f"{path}: not a readable CSV file ({e})") from None


# ============================================================================ train
def _build_model(kind, hidden, layers, horizon, seed):
    import fastrnn as fr
    eng = {"rnn": fr.RNN, "lstm": fr.LSTM, "gru": fr.GRU}[kind](1, hidden, num_layers=layers)
    return fr.Sequential([fr.Recurrent(eng, return_sequences=False), fr.Dense(horizon)], seed=seed)


def fold_normalisation(model, mean, std):
    """Make a model trained on (x - mean) / std inputs and targets work on raw values:
    W_ih x_n + b = (W_ih / std) x + (b - W_ih mean / std), and y = std * y_n + mean."""
    p = model.parameters()
    w, b = p["0.weight_ih_l0"], p["0.bias_ih_l0"]
    b -= (w.sum(1) * (mean / std)).astype(b.dtype)
    w /= w.dtype.type(std)
    p["1.weight"] *= p["1.weight"].dtype.type(std)
    p["1.bias"][...] = p["1.bias"] * std + mean


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


def closed_loop(model, context, steps, horizon):
    """Forecast ``steps`` values after ``context`` by feeding the model's forecasts back in."""
    buf = list(np.asarray(context, np.float64))
    W = len(context)
    out = []
    while len(out) < steps:
        x = np.asarray(buf[-W:], np.float32)[None, :, None]
        nxt = model.predict(x)[0, :horizon].astype(np.float64)
        out.extend(nxt)
        buf.extend(nxt)
    return np.array(out[:steps])


def _plot_train(path, history, t_axis, truth, pred, free, title):
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
    a1.set_ylabel("MSE (normalised)")
    a1.set_title("loss")
    a1.legend()
    n = min(len(truth), 400)
    a2.plot(t_axis[:n], truth[:n], "k", lw=1, label="series")
    a2.plot(t_axis[:n], pred[:n], "tab:red", lw=1, label="one-step forecast")
    a2.plot(t_axis[:len(free)], free, "tab:blue", lw=1, ls="--", label="closed-loop forecast")
    a2.set_xlabel("index")
    a2.set_title(title)
    a2.legend()
    f.tight_layout()
    f.savefig(path, dpi=100)
    plt.close(f)
    return True


def cmd_train(args, out=None):
    out = out or sys.stdout
    import fastrnn as fr
    from .datasets import windows
    if args.csv:
        series = _read_csv(args.csv, args.column)
        source = f"{args.csv} ({args.column or 'last numeric column'})"
        stem = os.path.splitext(os.path.basename(args.csv))[0]
    else:
        series = builtin_series(args.data, args.seed)
        source = f"built-in '{args.data}' series"
        stem = args.data
    series = np.asarray(series, dtype=np.float64)
    if not np.isfinite(series).all():
        bad = np.flatnonzero(~np.isfinite(series))
        raise CLIError(f"the series has {len(bad)} missing or non-finite values (first at position "
                       f"{bad[0]}); clean the data or choose another --column")
    W, Hz = args.window, args.horizon
    n_test = int(round(len(series) * args.test_fraction))
    n_train = len(series) - n_test
    if n_train < W + Hz + 1 or n_test < W + Hz:
        raise CLIError(f"{len(series)} values are too few for --window {W} and --horizon {Hz} "
                       f"with a {args.test_fraction:.0%} test split; need at least "
                       f"{int(max(np.ceil((W + Hz) / args.test_fraction), np.ceil((W + Hz + 1) / (1 - args.test_fraction)))) + 1}")
    mean, std = float(series[:n_train].mean()), float(series[:n_train].std())
    if not std > 0:
        raise CLIError("the training part of the series is constant; nothing to learn")
    # The model works on raw values through float32 weights (fold_normalisation): a scale
    # float32 cannot hold would turn them into inf/NaN and save a model that predicts NaN.
    if not (np.isfinite(std) and abs(mean) + std < 1e30 and std > 1e-30):
        raise CLIError(f"the series' scale (mean {mean:.3g}, std {std:.3g}) is beyond what a float32 "
                       "model can represent; rescale the data")
    z = ((series - mean) / std).astype(np.float32)
    Xtr, Ytr = windows(z[:n_train], W, Hz)
    Xte, Yte = windows(z[n_train - W:], W, Hz)       # test windows predict the last n_test values
    ytr, yte = Ytr[..., 0], Yte[..., 0]
    model = _build_model(args.model, args.hidden, args.layers, Hz, args.seed)
    model.compile(loss="mse", optimizer=fr.Adam(args.lr, clipnorm=1.0))
    print(f"fastrnn train: {args.model.upper()}(hidden {args.hidden}, layers {args.layers}) on {source}: "
          f"{len(series)} values, window {W}, horizon {Hz}; {len(Xtr)} training windows, "
          f"{len(Xte)} test windows", file=out)
    t0 = time.perf_counter()
    hist = model.fit(Xtr, ytr, epochs=args.epochs, batch_size=args.batch_size,
                     validation_data=(Xte, yte), verbose=0 if args.quiet else 1)
    seconds = time.perf_counter() - t0
    if not all(np.isfinite(w).all() for w in model.parameters().values()):
        # A step with a finite loss but a huge learning rate can still overflow the weights;
        # such a model predicts NaN and is not saved.
        raise CLIError("training diverged: the weights are no longer finite"
                       + (f" ({model.stop_reason.split(';')[0]})" if model.stop_reason else "")
                       + f"; lower --lr (now {args.lr:g}) and try again")
    fold_normalisation(model, mean, std)
    Xraw = windows(series[n_train - W:], W, Hz)[0].astype(np.float32)
    pred = model.predict(Xraw)                        # raw units now
    truth = windows(series[n_train - W:], W, Hz)[1][..., 0]
    mse = float(np.mean((pred - truth) ** 2))
    naive = float(np.mean((Xraw[:, -1, :] - truth) ** 2))
    output = args.output or f"fastrnn-{stem}-{args.model}.frnn"
    meta = {"window": W, "horizon": Hz, "column": args.column, "source": source,
            "model": args.model, "hidden": args.hidden, "layers": args.layers,
            "train_mean": mean, "train_std": std, "test_mse": mse}
    try:
        _save_with_meta(model, output, meta)
    except OSError as e:
        raise CLIError(f"cannot write {output}: {e.strerror or e}") from None
    print(f"trained {args.epochs} epochs in {seconds:.1f} s; test MSE {mse:.5g} "
          f"(repeat-last-value baseline {naive:.5g})", file=out)
    print(f"model saved to {os.path.abspath(output)}", file=out)
    plot = args.plot if args.plot is not None else os.path.splitext(output)[0] + ".png"
    if plot.lower() != "none":
        idx = np.arange(n_train, n_train + len(truth))
        free = closed_loop(model, series[n_train - W:n_train], min(len(truth), 100), Hz)
        try:
            ok = _plot_train(plot, hist.history, idx, truth[:, 0], pred[:, 0], free,
                             f"test part of {source}")
        except OSError as e:
            raise CLIError(f"cannot write {plot}: {e.strerror or e}") from None
        if ok:
            print(f"plot saved to {os.path.abspath(plot)}", file=out)
        else:
            print("no plot: matplotlib is not installed (pip install 'fastrnn[plot]')", file=out)
    return {"test_mse": mse, "naive_mse": naive, "model": output, "seconds": seconds}


# ============================================================================ predict
def cmd_predict(args, out=None):
    out = out or sys.stdout
    import fastrnn as fr
    path = args.model
    if not os.path.exists(path):
        raise CLIError(f"model file {path} does not exist")
    try:
        model = fr.load(path, compile=False)
    except fr.ModelFileError as e:  # its message names the file already
        raise CLIError(f"cannot load the model: {e}") from None
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as e:
        raise CLIError(f"cannot load {path}: {e}") from None
    meta = read_cli_meta(path)
    window = args.window or meta.get("window")
    if not window:
        raise CLIError(f"{path} was not saved by 'fastrnn train'; give --window")
    column = args.column
    if column is None and meta.get("column"):
        column = meta["column"]
    series = _read_csv(args.csv, column)
    if len(series) < window:
        raise CLIError(f"{args.csv} has {len(series)} values; the model reads windows of {window}")
    from .datasets import windows
    X = windows(np.concatenate([series, [0.0]]), window, 1)[0]       # every window, incl. the last
    try:
        pred = model.predict(X.astype(model.dtype))
    except (ValueError, TypeError) as e:
        raise CLIError(f"the model cannot read this data: {e}") from None
    pred = pred.reshape(len(X), -1)
    h = pred.shape[1]
    f = open(args.output, "w", newline="") if args.output else out
    try:
        w = csv.writer(f)
        w.writerow(["index", "actual"] + [f"pred_{k + 1}" for k in range(h)])
        for i in range(len(X)):
            t = i + window                       # index of the first value this window predicts
            w.writerow([t, repr(float(series[t])) if t < len(series) else ""]
                       + [f"{v:.7g}" for v in pred[i]])
    except BrokenPipeError:
        raise                                    # e.g. `fastrnn predict ... | head`
    except OSError as e:
        raise CLIError(f"cannot write {args.output}: {e.strerror or e}") from None
    finally:
        if f is not out:
            f.close()
    if args.output:
        print(f"{len(X)} forecasts ({h} step{'s' if h > 1 else ''} each) written to "
              f"{os.path.abspath(args.output)}", file=sys.stderr)
    return pred


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
def build_parser():
    p = _Parser(prog="fastrnn", description="Fast CPU RNN/LSTM/GRU: train, predict, benchmark.",
                epilog="Start with 'fastrnn train': an LSTM on the built-in sine data, ~10 s on 2 cores.")
    sub = p.add_subparsers(dest="command", metavar="{train,predict,bench,demo}")

    t = sub.add_parser("train", help="train a forecaster; save the model and a plot",
                       description="Train a many-to-one forecaster: the past --window values "
                                   "predict the next --horizon ones. The last --test-fraction of "
                                   "the series is held out for the test loss and the plot.")
    src = t.add_mutually_exclusive_group()
    src.add_argument("--data", choices=DATASETS, default="sine",
                     help="built-in series (default: sine)")
    src.add_argument("--csv", metavar="FILE", help="CSV file with a header row")
    t.add_argument("--column", help="CSV column to model (default: the last numeric column)")
    t.add_argument("--model", choices=("rnn", "lstm", "gru"), default="lstm")
    t.add_argument("--hidden", type=_positive("--hidden"), default=64, help="units (default 64)")
    t.add_argument("--layers", type=_positive("--layers"), default=1, help="stacked layers (default 1)")
    t.add_argument("--epochs", type=_positive("--epochs"), default=30, help="default 30")
    t.add_argument("--window", type=_positive("--window"), default=40, help="input steps (default 40)")
    t.add_argument("--horizon", type=_positive("--horizon"), default=1, help="steps predicted (default 1)")
    t.add_argument("--batch-size", type=_positive("--batch-size"), default=64)
    t.add_argument("--lr", type=_positive("--lr", float), default=0.005, help="Adam learning rate")
    t.add_argument("--test-fraction", type=_fraction, default=0.2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--output", "-o", metavar="FILE",
                   help="model file (default: fastrnn-<data>-<model>.frnn in the current directory)")
    t.add_argument("--plot", metavar="PNG", help="plot file (default: next to the model; 'none' to skip)")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    pr = sub.add_parser("predict", help="forecasts of a saved model for a CSV column, as CSV",
                        description="Run a model saved by 'fastrnn train' over every window of "
                                    "a CSV column; writes index, actual value and the forecasts.")
    pr.add_argument("--model", "-m", required=True, metavar="FILE")
    pr.add_argument("--csv", required=True, metavar="FILE")
    pr.add_argument("--column", help="column (default: the one the model was trained on, else the "
                                     "last numeric column)")
    pr.add_argument("--window", type=_positive("--window"), help="input steps (default: from the model file)")
    pr.add_argument("--output", "-o", metavar="FILE", help="CSV to write (default: stdout)")

    b = sub.add_parser("bench", help="run the benchmark suite (bench/run.py; try --quick)",
                       description="Runs bench/run.py from the source checkout with the given "
                                   "arguments, e.g. 'fastrnn bench --quick'.", add_help=False)
    b.add_argument("bench_args", nargs=argparse.REMAINDER)

    d = sub.add_parser("demo", help="an LSTM learns to continue a sine wave (engine API demo)")
    d.add_argument("--epochs", type=_positive("--epochs"), default=15)
    d.add_argument("--hidden", type=_positive("--hidden"), default=32)
    d.add_argument("--seed", type=int, default=0)
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
    handler = {"train": cmd_train, "predict": cmd_predict, "bench": cmd_bench, "demo": cmd_demo}
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
