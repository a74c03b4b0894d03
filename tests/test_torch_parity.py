"""Parity of fastrnn (and of the NumPy reference, fastrnn.reference) with PyTorch.

The committed fixtures (tests/fixtures/torch/*.npz, made by
tests/fixtures/make_torch_fixtures.py with torch 2.13.0) let these tests run
without torch; the live tests additionally compare against whatever torch is
installed, on configurations the fixtures don't cover (batch_first, 3 layers,
odd sizes, hx omitted).

Run as a script to print the measured error summary per dtype:
    python tests/test_torch_parity.py
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

try:
    from tolerances import tolerance
except ImportError:  # tests/ imported as a package (rootdir-based import mode)
    from tests.tolerances import tolerance

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "torch"
FIXTURE_SCRIPT = Path(__file__).resolve().parent / "fixtures" / "make_torch_fixtures.py"
FIXTURES = sorted(FIXTURE_DIR.glob("*.npz"))

FORWARD_KEYS = ("y", "h_n", "c_n")


# --------------------------------------------------------------------------
# comparison helpers
# --------------------------------------------------------------------------

def compare(name, got, want, dtype, kind, strict_dtype=True):
    """Return None if `got` matches `want` within the tolerance table, else a
    message with max abs / max rel error and where they occur."""
    dtype = np.dtype(dtype)
    tol = tolerance(dtype, kind)
    if got is None:
        return "{}: got None, want array of shape {}".format(name, np.shape(want))
    got = np.asarray(got)
    want = np.asarray(want)
    if got.shape != want.shape:
        return "{}: shape {} != expected {}".format(name, got.shape, want.shape)
    if strict_dtype and got.dtype != dtype:
        # The API promises no silent casts; a float64 result for a float32
        # model would also hide float32 rounding from the comparison.
        return "{}: dtype {} != expected {}".format(name, got.dtype, dtype)
    if got.size == 0:
        return None
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    if not np.all(np.isfinite(g)):
        bad = np.argwhere(~np.isfinite(g))[0]
        return "{}: non-finite value {} at {}".format(name, g[tuple(bad)], tuple(bad))
    err = np.abs(g - w)
    limit = tol["atol"] + tol["rtol"] * np.abs(w)
    nbad = int(np.count_nonzero(err > limit))
    if nbad == 0:
        return None
    ia = np.unravel_index(np.argmax(err), err.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(w != 0, err / np.abs(w), np.where(err > 0, np.inf, 0.0))
    ir = np.unravel_index(np.argmax(rel), rel.shape)
    return ("{}: max abs err {:.3e} at {} (got {:.9g}, want {:.9g}); "
            "max rel err {:.3e} at {} (got {:.9g}, want {:.9g}); "
            "{}/{} elements outside atol={:g} + rtol={:g}*|want| [{} {}]").format(
        name, err[ia], tuple(int(i) for i in ia), g[ia], w[ia],
        rel[ir], tuple(int(i) for i in ir), g[ir], w[ir],
        nbad, err.size, tol["atol"], tol["rtol"], dtype.name, kind)


def assert_close(name, got, want, dtype, kind):
    msg = compare(name, got, want, dtype, kind)
    assert msg is None, msg


def error_stats(got, want):
    """(max abs err, max rel err over nonzero `want`) for the summary."""
    g = np.asarray(got, dtype=np.float64)
    w = np.asarray(want, dtype=np.float64)
    err = np.abs(g - w)
    nz = w != 0
    rel = float((err[nz] / np.abs(w[nz])).max()) if nz.any() else 0.0
    return float(err.max()) if err.size else 0.0, rel


def kind_of(key):
    return "forward" if key in FORWARD_KEYS else "grad"


def parity_failures(results, case, strict_dtype=True):
    """Compare every tensor of `results` (keys as in the fixture: y, h_n, c_n,
    dx, dh0, dc0, grad.<name>) against the fixture; list of messages."""
    dtype = case.dtype
    failures = []
    for key in case.expected_keys():
        msg = compare("{} [{}]".format(key, case.name), results.get(key), case[key],
                      dtype, kind_of(key), strict_dtype)
        if msg is not None:
            failures.append(msg)
    extra = sorted(k for k, v in results.items()
                   if k.startswith("grad.") and k not in case.arrays)
    if extra:
        failures.append("{}: unexpected parameter gradients {}".format(case.name, extra))
    return failures


def assert_parity(results, case, strict_dtype=True):
    failures = parity_failures(results, case, strict_dtype)
    assert not failures, "{} mismatching tensors:\n  ".format(len(failures)) + "\n  ".join(failures)


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------

class Case:
    def __init__(self, path):
        self.path = Path(path)
        self.name = self.path.stem
        with np.load(self.path, allow_pickle=False) as f:
            self.arrays = {k: f[k] for k in f.files}
        self.meta = json.loads(str(self.arrays.pop("meta")))
        self.dtype = np.dtype(self.meta["dtype"])
        self.is_lstm = self.meta["mode"] == "LSTM"

    def __getitem__(self, key):
        return self.arrays[key]

    def get(self, key):
        """A fresh copy (or None), so nothing under test can alter the fixture."""
        return self.arrays[key].copy() if key in self.arrays else None

    def params(self):
        return {k[len("param."):]: v.copy() for k, v in self.arrays.items()
                if k.startswith("param.")}

    def expected_keys(self):
        keys = ["y", "h_n", "dx", "dh0"]
        if self.is_lstm:
            keys += ["c_n", "dc0"]
        keys += sorted(k for k in self.arrays if k.startswith("grad."))
        return keys


def load_case(path):
    if path is None:
        pytest.fail("no fixtures in {}: run tests/fixtures/make_torch_fixtures.py "
                    "with torch==2.13.0".format(FIXTURE_DIR))
    return Case(path)


# An empty parameter list would make pytest skip silently; a missing fixture
# directory must fail instead.
FIXTURE_PARAMS = [pytest.param(p, id=p.stem) for p in FIXTURES] or [
    pytest.param(None, id="NO_FIXTURES")]


def _load_fixture_script():
    spec = importlib.util.spec_from_file_location("make_torch_fixtures", FIXTURE_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fixture_grid_complete():
    # Guards against a partially generated or stale fixture directory.
    expected = {name + ".npz" for name, _ in _load_fixture_script().case_grid()}
    present = {p.name for p in FIXTURES}
    assert expected, "fixture grid is empty"
    assert present == expected, "missing {} / unexpected {}".format(
        sorted(expected - present), sorted(present - expected))


def test_fixture_total_size_small():
    total = sum(p.stat().st_size for p in FIXTURES)
    assert 0 < total < 2 * 1024 * 1024, total


# --------------------------------------------------------------------------
# running fastrnn
# --------------------------------------------------------------------------

def _fastrnn():
    import fastrnn
    return fastrnn


def build_layer(meta, batch_first=False):
    fr = _fastrnn()
    kw = dict(num_layers=meta["num_layers"], bias=meta["bias"], batch_first=batch_first,
              bidirectional=meta["bidirectional"], dtype=np.dtype(meta["dtype"]).type)
    D, H, mode = meta["input_size"], meta["hidden_size"], meta["mode"]
    if mode == "RNN_TANH":
        return fr.RNN(D, H, nonlinearity="tanh", **kw)
    if mode == "RNN_RELU":
        return fr.RNN(D, H, nonlinearity="relu", **kw)
    if mode == "LSTM":
        return fr.LSTM(D, H, proj_size=meta.get("proj_size", 0), **kw)
    if mode == "GRU":
        return fr.GRU(D, H, **kw)
    raise ValueError(mode)


def run_layer(m, is_lstm, x, h0, c0, lengths, dy, dh_n, dc_n):
    """One forward + backward through the public API; results keyed like the
    fixtures. Parameter gradients are read from m.grads as they stand."""
    if is_lstm:
        y, (h_n, c_n) = m(x, (h0, c0) if h0 is not None else None, lengths=lengths)
        dx, (dh0, dc0) = m.backward(dy, (dh_n, dc_n))
    else:
        y, h_n = m(x, h0, lengths=lengths)
        c_n = dc0 = None
        dx, dh0 = m.backward(dy, dh_n)
    out = {"y": y, "h_n": h_n, "dx": dx, "dh0": dh0}
    if is_lstm:
        out.update(c_n=c_n, dc0=dc0)
    for k, v in m.grads.items():
        out["grad." + k] = np.array(v, copy=True)
    return out


def run_layer_on_case(m, case):
    return run_layer(m, case.is_lstm, case.get("x"), case.get("h0"), case.get("c0"),
                     case.get("lengths"), case.get("dy"), case.get("dh_n"), case.get("dc_n"))


def layer_for_case(case):
    m = build_layer(case.meta)
    m.train()
    m.load_state_dict(case.params())
    return m


def run_reference_on_case(case, params=None):
    from fastrnn import reference
    meta = case.meta
    y, h_n, c_n, cache = reference.forward(
        meta["mode"], case.params() if params is None else params, case.get("x"),
        h0=case.get("h0"), c0=case.get("c0"), lengths=case.get("lengths"),
        num_layers=meta["num_layers"], bidirectional=meta["bidirectional"])
    dx, dh0, dc0, grads = reference.backward(
        cache, dy=case.get("dy"), dh_n=case.get("dh_n"), dc_n=case.get("dc_n"))
    out = {"y": y, "h_n": h_n, "dx": dx, "dh0": dh0}
    if case.is_lstm:
        out.update(c_n=c_n, dc0=dc0)
    for k, v in grads.items():
        out["grad." + k] = v
    return out


# --------------------------------------------------------------------------
# 1. fastrnn layers vs the committed torch fixtures
# --------------------------------------------------------------------------

@pytest.mark.parametrize("path", FIXTURE_PARAMS)
def test_layer_matches_torch_fixture(path):
    case = load_case(path)
    m = layer_for_case(case)
    sd = m.state_dict()
    assert sorted(sd) == sorted(case.params()), "parameter names differ from PyTorch's"
    assert_parity(run_layer_on_case(m, case), case)


# --------------------------------------------------------------------------
# 2. the NumPy reference vs the same fixtures
# --------------------------------------------------------------------------

@pytest.mark.parametrize("path", FIXTURE_PARAMS)
def test_reference_matches_torch_fixture(path):
    case = load_case(path)
    # The reference may legitimately compute in float64 whatever its input;
    # only its values have to agree with torch.
    assert_parity(run_reference_on_case(case), case, strict_dtype=False)


# --------------------------------------------------------------------------
# 3. live comparison with torch on random configurations
# --------------------------------------------------------------------------

def live_config(seed):
    rng = np.random.default_rng(1000 + seed)
    lengths_ragged = bool(rng.integers(2))
    # One single-step case; the rest long enough for the recurrence to matter.
    T = 1 if seed == 9 else int(rng.integers(3, 13))
    B = int(rng.integers(1, 6))
    return dict(
        mode=["RNN_TANH", "RNN_RELU", "LSTM", "GRU"][seed % 4],
        num_layers=int(rng.integers(1, 4)),
        bidirectional=bool(rng.integers(2)),
        # Forced rather than drawn so that every run covers both settings.
        batch_first=seed % 2 == 0,
        bias=seed % 3 != 1,
        omit_hx=seed % 5 == 4,
        dtype=["float32", "float64"][(seed // 4) % 2],
        seq_len=T, batch=B,
        input_size=int(rng.integers(1, 13)), hidden_size=int(rng.integers(1, 17)),
        lengths=rng.integers(1, T + 1, size=B).tolist() if lengths_ragged else None,
    )


LIVE_SEEDS = list(range(12))


def _torch_live_run(torch, cfg, rng):
    """Build a torch module with its own default init, run it, and return the
    module plus a Case-like dict of inputs/expected results (time-major
    conventions converted to cfg's batch_first)."""
    T, B, D, H = cfg["seq_len"], cfg["batch"], cfg["input_size"], cfg["hidden_size"]
    L, dirs = cfg["num_layers"], 2 if cfg["bidirectional"] else 1
    tdtype = getattr(torch, cfg["dtype"])
    np_dtype = np.dtype(cfg["dtype"])
    kw = dict(num_layers=L, bias=cfg["bias"], bidirectional=cfg["bidirectional"],
              batch_first=cfg["batch_first"], dtype=tdtype)
    mode = cfg["mode"]
    if mode.startswith("RNN"):
        tm = torch.nn.RNN(D, H, nonlinearity="tanh" if mode == "RNN_TANH" else "relu", **kw)
    else:
        tm = getattr(torch.nn, mode)(D, H, **kw)
    is_lstm = mode == "LSTM"

    xshape = (B, T, D) if cfg["batch_first"] else (T, B, D)
    x = rng.standard_normal(xshape).astype(np_dtype)
    h0 = None if cfg["omit_hx"] else rng.standard_normal((L * dirs, B, H)).astype(np_dtype)
    c0 = None if (cfg["omit_hx"] or not is_lstm) else rng.standard_normal((L * dirs, B, H)).astype(np_dtype)
    yshape = xshape[:2] + (dirs * H,)
    dy = rng.standard_normal(yshape).astype(np_dtype)
    lengths = None if cfg["lengths"] is None else np.asarray(cfg["lengths"], dtype=np.int64)
    if lengths is not None:
        t_idx = np.arange(T)[None, :] if cfg["batch_first"] else np.arange(T)[:, None]
        l_idx = lengths[:, None] if cfg["batch_first"] else lengths[None, :]
        dy *= (t_idx < l_idx)[..., None].astype(np_dtype)
    dh_n = rng.standard_normal((L * dirs, B, H)).astype(np_dtype)
    dc_n = rng.standard_normal((L * dirs, B, H)).astype(np_dtype) if is_lstm else None

    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    th0 = None if h0 is None else torch.from_numpy(h0.copy()).requires_grad_(True)
    tc0 = None if c0 is None else torch.from_numpy(c0.copy()).requires_grad_(True)
    hx = None if th0 is None else ((th0, tc0) if is_lstm else th0)
    if lengths is None:
        ty, thx = tm(tx, hx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            tx, torch.from_numpy(lengths), batch_first=cfg["batch_first"], enforce_sorted=False)
        py, thx = tm(packed, hx)
        ty, _ = torch.nn.utils.rnn.pad_packed_sequence(
            py, batch_first=cfg["batch_first"], total_length=T)
    th_n, tc_n = thx if is_lstm else (thx, None)
    loss = (ty * torch.from_numpy(dy)).sum() + (th_n * torch.from_numpy(dh_n)).sum()
    if is_lstm:
        loss = loss + (tc_n * torch.from_numpy(dc_n)).sum()
    tm.zero_grad()
    loss.backward()

    expected = {"y": ty.detach().numpy(), "h_n": th_n.detach().numpy(), "dx": tx.grad.numpy()}
    if th0 is not None:
        expected["dh0"] = th0.grad.numpy()
    if is_lstm:
        expected["c_n"] = tc_n.detach().numpy()
        if tc0 is not None:
            expected["dc0"] = tc0.grad.numpy()
    for name, p in tm.named_parameters():
        expected["grad." + name] = p.grad.detach().numpy()
    inputs = dict(x=x, h0=h0, c0=c0, lengths=lengths, dy=dy, dh_n=dh_n, dc_n=dc_n)
    state = {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}
    return state, inputs, expected


def live_run(torch, seed):
    """(cfg, fastrnn results, torch results) for live configuration `seed`."""
    torch.manual_seed(seed)
    cfg = live_config(seed)
    state, inputs, expected = _torch_live_run(torch, cfg, np.random.default_rng(seed))

    meta = dict(mode=cfg["mode"], num_layers=cfg["num_layers"], bias=cfg["bias"],
                bidirectional=cfg["bidirectional"], input_size=cfg["input_size"],
                hidden_size=cfg["hidden_size"], dtype=cfg["dtype"])
    m = build_layer(meta, batch_first=cfg["batch_first"])
    m.train()
    own = m.state_dict()
    assert {k: v.shape for k, v in own.items()} == {k: v.shape for k, v in state.items()}, \
        "state_dict names/shapes differ from torch's for {}".format(cfg)
    m.load_state_dict(state)
    got = run_layer(m, cfg["mode"] == "LSTM", **inputs)
    if cfg["omit_hx"]:
        # torch returns no gradient for an hx it created itself; nothing to compare.
        got.pop("dh0", None)
        got.pop("dc0", None)
    return cfg, got, expected


@pytest.mark.parametrize("seed", LIVE_SEEDS)
def test_layer_matches_live_torch(seed):
    torch = pytest.importorskip("torch")
    cfg, got, expected = live_run(torch, seed)
    failures = []
    for key, want in expected.items():
        msg = compare("{} [live seed={} {}]".format(key, seed, cfg), got.get(key), want,
                      cfg["dtype"], kind_of(key))
        if msg:
            failures.append(msg)
    extra = sorted(set(got) - set(expected))
    if extra:
        failures.append("unexpected outputs {}".format(extra))
    assert not failures, "\n  ".join(failures)


def test_live_configs_cover_batch_first_and_no_bias():
    cfgs = [live_config(s) for s in LIVE_SEEDS]
    assert any(c["batch_first"] for c in cfgs) and any(not c["batch_first"] for c in cfgs)
    assert any(not c["bias"] for c in cfgs)
    assert any(c["omit_hx"] for c in cfgs)
    assert any(c["lengths"] is not None for c in cfgs)
    assert {c["dtype"] for c in cfgs} == {"float32", "float64"}


# --------------------------------------------------------------------------
# 4. the comparison can fail
# --------------------------------------------------------------------------

def test_compare_rejects_small_differences():
    # Independent of the engine: the helper itself must notice a 1e-3 change
    # and a wrong dtype, and accept an exact match.
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        want = rng.standard_normal((5, 3, 6)).astype(dt)
        assert compare("w", want.copy(), want, dt, "forward") is None
        bumped = want.copy()
        bumped[1, 2, 3] += dt(1e-3)
        msg = compare("w", bumped, want, dt, "forward")
        assert msg is not None and "max abs err" in msg and "at (1, 2, 3)" in msg, msg
        assert compare("w", want.astype(np.float64 if dt is np.float32 else np.float32),
                       want, dt, "grad") is not None
        assert compare("w", want[:4], want, dt, "grad") is not None
        nan = want.copy()
        nan[0, 0, 0] = np.nan
        assert compare("w", nan, want, dt, "grad") is not None


PERTURB_CASES = [p for p in FIXTURE_PARAMS
                 if p.values[0] is None or "_L2_bi_ragged_float" in p.values[0].name]


@pytest.mark.parametrize("path", PERTURB_CASES)
def test_parity_check_detects_perturbed_weight(path):
    case = load_case(path)
    m = layer_for_case(case)
    baseline = parity_failures(run_layer_on_case(m, case), case)
    assert not baseline, "unperturbed model already mismatches:\n  " + "\n  ".join(baseline)

    m = layer_for_case(case)
    m.parameters()["weight_ih_l0"][0, 0] += 1e-3
    m.zero_grad()
    failures = parity_failures(run_layer_on_case(m, case), case)
    assert failures, ("a 1e-3 change of weight_ih_l0[0,0] (made through m.parameters(), "
                      "which the API says is live) went unnoticed")
    assert any(f.startswith("y [") for f in failures), failures


# --------------------------------------------------------------------------
# 5. gradient accumulation semantics
# --------------------------------------------------------------------------

@pytest.mark.parametrize("path", PERTURB_CASES)
def test_grads_accumulate_and_zero_grad_resets(path):
    case = load_case(path)
    m = layer_for_case(case)
    run_layer_on_case(m, case)
    second = run_layer_on_case(m, case)

    failures = []
    # Input/state gradients are assigned fresh each backward, never summed.
    for key in ("dx", "dh0") + (("dc0",) if case.is_lstm else ()):
        msg = compare("{} after 2nd backward [{}]".format(key, case.name),
                      second[key], case[key], case.dtype, "grad")
        if msg:
            failures.append(msg)
    for key in case.expected_keys():
        if key.startswith("grad."):
            # Halving is exact in binary floating point, so the tolerance
            # applies to the per-backward contribution as usual.
            msg = compare("{}/2 after 2 backwards [{}]".format(key, case.name),
                          None if second.get(key) is None else second[key] / 2,
                          case[key], case.dtype, "grad")
            if msg:
                failures.append(msg)
    assert not failures, "\n  ".join(failures)

    m.zero_grad()
    for k, g in m.grads.items():
        assert g.shape == case["grad." + k].shape and g.dtype == case.dtype, k
        assert not np.any(g), "zero_grad left nonzero entries in grads[{!r}]".format(k)
    assert sorted(m.grads) == sorted(case.params())
    assert_parity(run_layer_on_case(m, case), case)


# --------------------------------------------------------------------------
# measured error summary (python tests/test_torch_parity.py)
# --------------------------------------------------------------------------

def error_summary():
    """Max abs / rel error and the worst fraction of the tolerance used, per
    implementation, dtype and kind, over all fixtures."""
    impls = {}
    try:
        _fastrnn().LSTM
        impls["layers"] = lambda c: run_layer_on_case(layer_for_case(c), c)
    except (ImportError, AttributeError) as e:
        print("fastrnn layers unavailable: {!r}".format(e))
    try:
        from fastrnn import reference  # noqa: F401
        impls["reference"] = run_reference_on_case
    except ImportError as e:
        print("fastrnn.reference unavailable: {!r}".format(e))
    table = {}

    def record(impl, dtype, label, got, expected):
        for key, want in expected.items():
            if got.get(key) is None or np.shape(got[key]) != want.shape:
                print("{} {}: {} missing or misshapen".format(impl, label, key))
                continue
            kind = kind_of(key)
            a, r = error_stats(got[key], want)
            tol = tolerance(dtype, kind)
            w = want.astype(np.float64)
            use = float((np.abs(np.asarray(got[key], np.float64) - w)
                         / (tol["atol"] + tol["rtol"] * np.abs(w))).max())
            s = table.setdefault((impl, np.dtype(dtype).name, kind),
                                 dict(abs=0.0, rel=0.0, tol_use=0.0, worst=""))
            if a > s["abs"]:
                s["abs"], s["worst"] = a, "{}:{}".format(label, key)
            s["rel"] = max(s["rel"], r)
            s["tol_use"] = max(s["tol_use"], use)

    for path in FIXTURES:
        case = Case(path)
        for impl, run in impls.items():
            try:
                got = run(case)
            except Exception as e:  # report and go on: this is a survey
                print("{} {}: {!r}".format(impl, case.name, e))
                continue
            record(impl, case.dtype, case.name,
                   got, {k: case[k] for k in case.expected_keys()})
    if "layers" in impls:
        try:
            import torch
        except ImportError:
            torch = None
        for seed in LIVE_SEEDS if torch is not None else ():
            try:
                cfg, got, expected = live_run(torch, seed)
            except Exception as e:
                print("live seed {}: {!r}".format(seed, e))
                continue
            record("live", cfg["dtype"], "seed{}".format(seed), got, expected)
    print("{:<10} {:<8} {:<8} {:>10} {:>10} {:>8}  worst abs".format(
        "impl", "dtype", "kind", "max abs", "max rel", "tol use"))
    for (impl, dt, kind), s in sorted(table.items()):
        print("{:<10} {:<8} {:<8} {:>10.2e} {:>10.2e} {:>8.3f}  {}".format(
            impl, dt, kind, s["abs"], s["rel"], s["tol_use"], s["worst"]))
    return table


if __name__ == "__main__":
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    error_summary()
