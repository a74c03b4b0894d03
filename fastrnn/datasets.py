"""Synthetic and small real data sets for the examples, the tests and ``fastrnn train``.

Every generator takes a ``seed`` (or a NumPy Generator) and returns NumPy arrays; sequence
arrays are (samples, time, features), as ``Sequential.fit`` expects.
"""
import re

import numpy as np

from ._checks import positive_int

__all__ = ["windows", "sine_series", "sine_windows", "gbm_prices", "ising_configurations",
           "ising_metropolis", "quench_traces", "adding_problem", "reverse_digits",
           "fill_in_blank", "mackey_glass", "load_digits", "read_csv_column", "read_csv_series",
           "fill_missing", "T_C"]

# Onsager's critical temperature of the 2D square-lattice Ising model (J = k_B = 1).
T_C = 2.0 / np.log(1.0 + np.sqrt(2.0))


def _rng(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def windows(series, window, horizon=1, stride=1):
    """Sliding windows over a 1-D (T,) or multivariate (T, F) series.

    Returns X (N, window, F) -- the past ``window`` values -- and y (N, horizon, F), the next
    ``horizon`` values after each window (N = (T - window - horizon) // stride + 1)."""
    s = np.asarray(series)
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2:
        raise ValueError(f"series must be 1-D or (T, features), got shape {np.shape(series)}")
    window, horizon = positive_int(window, "window"), positive_int(horizon, "horizon")
    stride = positive_int(stride, "stride")
    T = len(s)
    if T < window + horizon:
        raise ValueError(f"a series of {T} values is too short for window {window} + horizon {horizon}")
    starts = np.arange(0, T - window - horizon + 1, stride)
    idx = starts[:, None] + np.arange(window + horizon)[None, :]
    W = s[idx]
    return W[:, :window], W[:, window:]


# ----------------------------------------------------------------------------- sine
def sine_series(n, step=0.1, noise=0.0, seed=0, components=((1.0, 1.0),)):
    """One long series: sum of amp*sin(freq*step*t + random phase) + Gaussian noise."""
    rng = _rng(seed)
    t = np.arange(positive_int(n, "n")) * step
    s = sum(a * np.sin(f * t + rng.uniform(0, 2 * np.pi)) for a, f in components)
    return s + noise * rng.standard_normal(n)


def sine_windows(n, T, noise=0.0, freq=(0.05, 0.3), seed=0, dtype=np.float32):
    """n windows of a sine with random phase and frequency: inputs (n, T, 1) and the
    next-step targets (n, T, 1) (target[t] = input[t+1])."""
    rng = _rng(seed)
    n, T = positive_int(n, "n"), positive_int(T, "T")
    t = np.arange(T + 1)
    w = np.sin(rng.uniform(*freq, (n, 1)) * t + rng.uniform(0, 2 * np.pi, (n, 1)))
    w = w + noise * rng.standard_normal(w.shape)
    w = w[..., None].astype(dtype)
    return w[:, :-1], w[:, 1:]


# ----------------------------------------------------------------------------- prices
def gbm_prices(n_days, s0=100.0, mu=0.05, sigma=0.2, seed=0):
    """Daily closing prices of a geometric Brownian motion (annual drift mu and volatility
    sigma, 252 trading days a year): S_{t+1} = S_t exp((mu - sigma^2/2) dt + sigma sqrt(dt) Z)."""
    rng = _rng(seed)
    n = positive_int(n_days, "n_days", 2)
    dt = 1.0 / 252
    steps = (mu - 0.5 * sigma ** 2) * dt + sigma * np.sqrt(dt) * rng.standard_normal(n - 1)
    return s0 * np.exp(np.concatenate([[0.0], np.cumsum(steps)]))


# ----------------------------------------------------------------------------- CSV files
# Cells that mean "no value here" (compared stripped and lower-cased): empty, R/pandas' NA,
# spreadsheet errors, FRED's ".".
MISSING_MARKERS = frozenset(["", "na", "n/a", "nan", "null", "none", "-", ".", "?", "#n/a", "#na"])
DELIMITERS = (";", "\t", "|", ",")          # detection order: a ';' file may have decimal commas
MISSING_POLICIES = ("interpolate", "drop", "error")

_DECIMAL_COMMA = re.compile(r"[+-]?\d[\d.]*,\d+([eE][+-]?\d+)?")
_THOUSANDS_POINT = re.compile(r"[+-]?\d{1,3}(\.\d{3})+")
_ENGLISH_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")


class CSVSeries:
    """One column of a CSV file, as ``read_csv_series`` found it.

    values     float64, one per data row of the file (NaN where the cell is missing)
    column     the column's name (its 1-based number as a string when the file has no header)
    rows       1-based line number in the file of each data row
    index      the file's own label of each data row (the first column when it holds dates or
               labels, or numbers that strictly increase, e.g. years), else None
    index_name that column's name
    header     whether the first row was read as a header
    delimiter, decimal   what the file uses ("." or ",")
    notes      one-line remarks on what was detected (no header, decimal commas, ...)"""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    @property
    def missing(self):
        return int(np.isnan(self.values).sum())

    def __len__(self):
        return len(self.values)


def _is_missing(cell):
    return cell.strip().lower() in MISSING_MARKERS


def _number(cell, decimal_comma):
    """float of a cell (ValueError if it is none); thousands separators are dropped."""
    t = cell.strip().replace("\u00a0", "").replace(" ", "")
    if decimal_comma:
        if "," in t:
            t = t.replace(".", "").replace(",", ".")
        elif _THOUSANDS_POINT.fullmatch(t):
            t = t.replace(".", "")
    else:
        t = t.replace(",", "")                      # "1,234.5" -> 1234.5
    return float(t)


def _sniff_delimiter(lines):
    """The delimiter that splits every sampled line into the same number (> 1) of fields; in
    DELIMITERS order (';' before ',', whose cells may hold decimal commas); ',' if none does."""
    import csv
    best, best_lines = ",", 0
    for d in DELIMITERS:
        counts = [len(r) for r in csv.reader(lines, delimiter=d)]
        counts = [c for c in counts if c]
        if counts and min(counts) > 1 and len(set(counts)) == 1:
            return d
        multi = sum(c > 1 for c in counts)
        if multi > best_lines:
            best, best_lines = d, multi
    return best


def _parse_delimiter(delimiter):
    names = {"tab": "\t", "\\t": "\t", "semicolon": ";", "comma": ",", "pipe": "|", "space": " "}
    d = names.get(delimiter, delimiter)
    if not isinstance(d, str) or len(d) != 1 or d in "\"\r\n" or d.isalnum():
        raise ValueError(f"delimiter must be one character (or tab, semicolon, comma, pipe, space), "
                         f"got {delimiter!r}")
    return d


def read_csv_series(path, column=None, delimiter=None, header=None, decimal=None):
    """Read one numeric column of a CSV file, keeping every data row (missing cells are NaN).

    delimiter: one character, or None to detect it from the first lines (';', tab, '|', ',').
    header: True/False, or None to detect it: the first row is data, not a header, when every
        cell of it is a number.
    decimal: "." or ",", or None: "," when the delimiter is not a comma and the file's numbers
        are written like "316,1" (then "1.234,5" is 1234.5); else "." ("1,234.5" is 1234.5).
    column: a name of the header, or a 1-based column number; None: the last column whose
        non-missing cells look numeric (missing cells -- empty, NA, NaN, null, ., -, ? -- never
        decide it).
    Returns a CSVSeries. Raises ValueError (or OSError / UnicodeDecodeError) with one line."""
    import csv
    if decimal not in (None, ".", ","):
        raise ValueError(f"decimal must be '.' or ',', got {decimal!r}")
    with open(path, newline="", encoding="utf-8-sig") as f:      # utf-8-sig: a BOM is dropped
        text = f.read()
    lines = text.splitlines(keepends=True)
    notes = []
    if delimiter is None:
        sample = [ln for ln in lines[:50] if ln.strip()]
        delimiter = _sniff_delimiter(sample) if sample else ","
        if delimiter != ",":
            notes.append(f"delimiter {'tab' if delimiter == chr(9) else repr(delimiter)} detected")
    else:
        delimiter = _parse_delimiter(delimiter)
    numbered = list(enumerate(csv.reader(lines, delimiter=delimiter), 1))
    filled = [k for k, (_, r) in enumerate(numbered) if any(c.strip() for c in r)]
    if not filled:
        raise ValueError(f"{path}: the file is empty")
    numbered = numbered[filled[0]:filled[-1] + 1]          # blank lines around the data go
    width = max(len(r) for _, r in numbered)
    # Inside the data a row of empty cells (",,") is a row of missing values; so is an empty
    # line of a one-column file. An empty line between rows of several columns is no row.
    numbered = [(i, r) for i, r in numbered if r or width == 1]
    if decimal is None:
        decimal = "."
        if delimiter != ",":
            cells = [c.strip() for _, r in numbered[:2000] for c in r]
            if any(_DECIMAL_COMMA.fullmatch(c) for c in cells) and \
                    not any(_ENGLISH_THOUSANDS.fullmatch(c) and "." in c for c in cells):
                decimal = ","
                notes.append("decimal commas detected (316,1 is read as 316.1)")
    comma = decimal == ","

    def numeric(cell):
        try:
            _number(cell, comma)
            return True
        except ValueError:
            return False

    first = numbered[0][1]
    if header is None:
        # A header row has a non-number where the rows below it hold numbers.
        rest = [r for _, r in numbered[1:200]]
        header = False
        numeric_cols = 0
        for j in range(width):
            below = [r[j] for r in rest if j < len(r) and not _is_missing(r[j])]
            if not below or 2 * sum(numeric(c) for c in below) < len(below):
                continue
            numeric_cols += 1
            c = first[j] if j < len(first) else ""
            if not _is_missing(c) and not numeric(c):
                header = True
        header = header or numeric_cols == 0
        if not header:
            notes.append(f"no header row (the first row has numbers where the rows below do): "
                         f"the columns are numbered 1..{width}")
    if header:
        names = [h.strip() for h in first] + [str(j + 1) for j in range(len(first), width)]
        data = numbered[1:]
    else:
        names = [str(j + 1) for j in range(width)]
        data = numbered
    if not data:
        raise ValueError(f"{path}: needs a header row and at least one data row")

    def cells(j):
        return [r[j] if j < len(r) else "" for _, r in data]

    def looks_numeric(j):
        present = [c for c in cells(j) if not _is_missing(c)]
        return bool(present) and 2 * sum(numeric(c) for c in present) >= len(present)

    if column is None:
        j = next((j for j in range(width - 1, -1, -1) if looks_numeric(j)), None)
        if j is None:
            raise ValueError(f"{path}: no numeric column found")
    else:
        col = str(column)
        if col in names:
            j = names.index(col)
        elif col.strip().isdigit() and 1 <= int(col) <= width:
            j = int(col) - 1
        else:
            raise ValueError(f"{path}: no column {col!r}; columns are {', '.join(names)}")
    name = names[j]
    values = np.empty(len(data))
    for k, ((line, _), c) in enumerate(zip(data, cells(j))):
        if _is_missing(c):
            values[k] = np.nan
            continue
        try:
            v = _number(c, comma)
        except ValueError:
            raise ValueError(f"{path}: line {line}, column {name!r}: {c!r} is not a number") from None
        if not np.isfinite(v):
            raise ValueError(f"{path}: line {line}, column {name!r}: {c!r} is not a finite number")
        values[k] = v
    if np.isnan(values).all():
        raise ValueError(f"{path}: column {name!r} is empty")
    index = index_name = None
    if j != 0 and width > 1:
        labels = [c.strip() for c in cells(0)]
        nums = [numeric(c) for c in labels if c]
        if labels and not any(nums):
            index, index_name = labels, names[0]              # dates or labels
        elif labels and all(c for c in labels) and all(nums):
            v = np.array([_number(c, comma) for c in labels])
            if len(v) > 1 and (np.diff(v) > 0).all():
                index, index_name = labels, names[0]          # e.g. years
    return CSVSeries(values=values, column=name, rows=np.array([ln for ln, _ in data]),
                     index=index, index_name=index_name, header=bool(header), delimiter=delimiter,
                     decimal=decimal, notes=notes, path=str(path))


def fill_missing(values, policy="interpolate"):
    """Handle the NaNs of a series read by ``read_csv_series``.

    interpolate: interior gaps are filled linearly between their neighbours; leading and
        trailing gaps (no neighbour on one side) are cut off.
    drop: every missing value is removed (the values on both sides of a gap become adjacent).
    error: any missing value raises ValueError.
    Returns (series, positions): ``series[i]`` stands for ``values[positions[i]]``."""
    if policy not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {', '.join(MISSING_POLICIES)}, got {policy!r}")
    v = np.asarray(values, np.float64)
    ok = np.isfinite(v)
    pos = np.flatnonzero(ok)
    if not len(pos):
        raise ValueError("the series has no values")
    if policy == "error" and not ok.all():
        raise ValueError(f"{int((~ok).sum())} missing values (the first at data row "
                         f"{int(np.flatnonzero(~ok)[0]) + 1})")
    if policy == "drop" or ok.all():
        return v[pos].copy(), pos
    span = np.arange(pos[0], pos[-1] + 1)
    return np.interp(span, pos, v[pos]), span


def read_csv_column(path, column=None, missing="drop", delimiter=None, header=None):
    """Floats of one column of a CSV file (``column`` by name or 1-based number; default: the
    last column whose non-missing values are numeric). Missing cells are dropped (``missing=
    "drop"``), interpolated (``"interpolate"``) or refused (``"error"``), see ``fill_missing``;
    the delimiter, a header row and decimal commas are detected (see ``read_csv_series``).
    Raises ValueError (or OSError) with a one-line message on any problem."""
    s = read_csv_series(path, column, delimiter=delimiter, header=header)
    try:
        return fill_missing(s.values, missing)[0]
    except ValueError as e:
        raise ValueError(f"{path}: column {s.column!r}: {e}") from None


# ----------------------------------------------------------------------------- Ising
def ising_metropolis(L, temperatures, n_per_temp, sweeps=400, thin=10, seed=0, chains=None):
    """Equilibrium configurations of the 2D Ising model (J = 1, periodic L x L lattice) by
    checkerboard Metropolis, vectorised over many chains at once.

    For each temperature ``chains`` independent chains (default: n_per_temp) start ordered,
    run ``sweeps`` burn-in sweeps, then every ``thin`` sweeps contribute one configuration
    each until ``n_per_temp`` are collected. Each configuration's overall sign is then flipped
    at random (the Z2 symmetry the ordered phase breaks).
    Returns spins (n, L, L) int8 in {-1, +1} and their temperatures (n,)."""
    rng = _rng(seed)
    L, n_per_temp = positive_int(L, "L", 2), positive_int(n_per_temp, "n_per_temp")
    temps = np.asarray(temperatures, dtype=np.float64).reshape(-1)
    if not (temps > 0).all():
        raise ValueError("temperatures must be > 0")
    C = positive_int(chains or n_per_temp, "chains")
    K = len(temps)
    beta = (1.0 / temps).repeat(C)[:, None, None]
    s = np.ones((K * C, L, L), np.int8)
    ii, jj = np.indices((L, L))
    masks = [((ii + jj) % 2 == p) for p in (0, 1)]

    def sweep():
        for m in masks:
            nb = (np.roll(s, 1, 1) + np.roll(s, -1, 1) + np.roll(s, 1, 2) + np.roll(s, -1, 2))
            dE = 2.0 * s * nb                               # energy change of flipping each spin
            flip = (rng.random(s.shape) < np.exp(-beta * np.maximum(dE, 0))) & m
            s[flip] *= -1

    for _ in range(positive_int(sweeps, "sweeps", 0)):
        sweep()
    per_chain = -(-n_per_temp // C)
    out = []
    for r in range(per_chain):
        for _ in range(positive_int(thin, "thin")):
            sweep()
        out.append(s.reshape(K, C, L, L).copy())
    spins = np.concatenate(out, 1)[:, :n_per_temp]          # (K, n_per_temp, L, L)
    spins = spins.reshape(-1, L, L)
    spins *= rng.choice(np.array([-1, 1], np.int8), len(spins))[:, None, None]
    return spins, temps.repeat(n_per_temp)


def ising_configurations(n_per_temp=100, L=10, t_min=1.0, t_max=3.6, n_temps=14, sweeps=400,
                         seed=0):
    """Classification data: configurations across temperatures and labels 1 = ordered
    (T < T_c = 2.269) / 0 = disordered. Returns X (n, L, L) float32 spins (an RNN reads one
    row per step), y (n,) int64 and temperatures (n,)."""
    temps = np.linspace(t_min, t_max, positive_int(n_temps, "n_temps"))
    spins, T = ising_metropolis(L, temps, n_per_temp, sweeps=sweeps, seed=seed)
    return spins.astype(np.float32), (T < T_C).astype(np.int64), T


# ----------------------------------------------------------------------------- quench
def quench_traces(n, T=300, lead=30, precursor=60, p_event=0.7, noise=0.3, seed=0):
    """Synthetic superconducting-magnet voltage traces with quench precursors.

    Each trace is AR(1) noise around zero; with probability ``p_event`` a quench starts at a
    random step: the voltage then rises steeply and stays high. During the ``precursor``
    steps before it an oscillation grows out of the noise (amplitude up to 4 x noise) on a
    slow upward drift -- the warning signs.
    Labels are per step: 1 during the ``lead`` steps before a quench starts (raise the alarm
    now), else 0. Returns X (n, T, 1) float32, y (n, T) int64 and the onsets (n,) (-1 = none).
    """
    rng = _rng(seed)
    n, T = positive_int(n, "n"), positive_int(T, "T", 4)
    if not precursor >= lead >= 1:
        raise ValueError("need precursor >= lead >= 1")
    X = np.zeros((n, T), np.float64)
    e = rng.standard_normal((n, T)) * noise
    for t in range(1, T):                                  # AR(1) noise, phi = 0.6
        X[:, t] = 0.6 * X[:, t - 1] + e[:, t]
    y = np.zeros((n, T), np.int64)
    onset = np.full(n, -1)
    has = rng.random(n) < p_event
    lo = precursor + 5
    onset[has] = rng.integers(lo, T - 5, has.sum())
    t = np.arange(T)
    for i in np.flatnonzero(has):
        o = onset[i]
        ramp = np.clip((t - (o - precursor)) / precursor, 0, 1) * (t < o)
        X[i] += noise * ramp * (4.0 * np.sin(1.3 * t + rng.uniform(0, 2 * np.pi)) + 1.5 * ramp)
        X[i] += (t >= o) * (3.0 * (1 - np.exp(-(t - o) / 3.0)))
        y[i, max(0, o - lead):o] = 1
    return X[..., None].astype(np.float32), y, onset


# ----------------------------------------------------------------------------- long-term memory
def adding_problem(n, T, seed=0, dtype=np.float32):
    """The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015): each step has a
    value U(0, 1) and a marker; exactly two markers are 1, one in each half of the sequence;
    the target is the sum of the two marked values. Predicting 1 gives MSE ~0.167.
    Returns X (n, T, 2) and y (n, 1)."""
    rng = _rng(seed)
    n, T = positive_int(n, "n"), positive_int(T, "T", 2)
    X = np.zeros((n, T, 2), dtype)
    X[:, :, 0] = rng.random((n, T))
    a = rng.integers(0, T // 2, n)
    b = rng.integers(T // 2, T, n)
    X[np.arange(n), a, 1] = 1
    X[np.arange(n), b, 1] = 1
    y = (X[np.arange(n), a, 0] + X[np.arange(n), b, 0])[:, None]
    return X, y.astype(dtype)


# ----------------------------------------------------------------------------- seq2seq / tokens
def reverse_digits(n, min_len=3, max_len=8, seed=0):
    """Translation-like toy task: reverse a string of digits.

    Sources are one-hot (n, max_len, 11): digits 0-9 and a padding symbol 10 after the
    string; ``lengths`` (n,) give the valid steps. Targets (n, max_len + 1) are token ids:
    the reversed digits, then end-of-sequence 10, then padding 10. The decoder's start token
    is 11 (vocabulary 12). Returns X, lengths, y, and the digit strings as int arrays."""
    rng = _rng(seed)
    n = positive_int(n, "n")
    if not 1 <= min_len <= max_len:
        raise ValueError("need 1 <= min_len <= max_len")
    lengths = rng.integers(min_len, max_len + 1, n)
    digits = rng.integers(0, 10, (n, max_len))
    src = np.full((n, max_len), 10)
    tgt = np.full((n, max_len + 1), 10)
    for i, k in enumerate(lengths):
        src[i, :k] = digits[i, :k]
        tgt[i, :k] = digits[i, :k][::-1]
    X = np.eye(11, dtype=np.float32)[src]
    return X, lengths, tgt, src


def fill_in_blank(n, T=12, seed=0):
    """Fill-in-the-blank: random digit tokens 0-9 with one blank (token 10) at a random
    position p in 1..T-2; the answer is (x[p-1] + x[p+1]) mod 10, which needs the token
    *after* the blank -- a left-to-right RNN cannot know it when it reaches the blank, a
    bidirectional one can. Returns tokens X (n, T) int64, per-step labels y (n, T) (the
    answer at the blank, 0 elsewhere), a weight mask w (n, T) (1 at the blank) and p."""
    rng = _rng(seed)
    n, T = positive_int(n, "n"), positive_int(T, "T", 3)
    X = rng.integers(0, 10, (n, T))
    p = rng.integers(1, T - 1, n)
    r = np.arange(n)
    ans = (X[r, p - 1] + X[r, p + 1]) % 10
    X[r, p] = 10
    y = np.zeros((n, T), np.int64)
    y[r, p] = ans
    w = np.zeros((n, T), np.float32)
    w[r, p] = 1
    return X, y, w, p


# ----------------------------------------------------------------------------- chaos
def mackey_glass(n, tau=17, beta=0.2, gamma=0.1, power=10, dt=0.1, sample=1.0, x0=1.2,
                 discard=500, seed=0):
    """The Mackey-Glass delay differential equation dx/dt = beta x(t-tau)/(1 + x(t-tau)^power)
    - gamma x(t), integrated with 4th-order Runge-Kutta at step ``dt`` (delayed values
    interpolated linearly), sampled every ``sample`` time units; the first ``discard``
    samples (transient) are dropped. tau=17 gives the classic mildly chaotic series.
    The initial history is x0 plus tiny noise from ``seed``. Returns (n,) float64."""
    rng = _rng(seed)
    n = positive_int(n, "n")
    per = int(round(sample / dt))
    if per < 1 or abs(per * dt - sample) > 1e-9:
        raise ValueError("sample must be a positive multiple of dt")
    lag = int(round(tau / dt))
    total = (n + discard) * per
    x = np.empty(lag + total + 1)
    x[:lag + 1] = x0 + 0.01 * rng.standard_normal(lag + 1)

    def f(xt, xd):
        return beta * xd / (1 + xd ** power) - gamma * xt

    for i in range(lag, lag + total):
        xd0, xd1 = x[i - lag], x[i - lag + 1]
        xdm = 0.5 * (xd0 + xd1)
        xi = x[i]
        k1 = f(xi, xd0)
        k2 = f(xi + 0.5 * dt * k1, xdm)
        k3 = f(xi + 0.5 * dt * k2, xdm)
        k4 = f(xi + dt * k3, xd1)
        x[i + 1] = xi + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x[lag::per][discard:discard + n].copy()


# ----------------------------------------------------------------------------- digits
def load_digits(sequence=True):
    """scikit-learn's 8x8 handwritten digits (1797 images), pixels scaled to [0, 1].
    sequence=True gives X (1797, 64, 1) -- read pixel by pixel, T = 64 -- else (1797, 8, 8);
    y (1797,) int64. Needs scikit-learn (``pip install scikit-learn``)."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError:
        raise ImportError("the digits data set comes with scikit-learn: pip install scikit-learn") from None
    d = _load()
    X = (d.images / 16.0).astype(np.float32)
    X = X.reshape(len(X), 64, 1) if sequence else X
    return X, d.target.astype(np.int64)
