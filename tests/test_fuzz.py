"""Hypothesis fuzzing of every public entry point of fastrnn.

Each property draws valid and invalid inputs (ranks 0-4, zero and huge sizes, every NumPy
dtype, strided / negative-stride / Fortran / read-only / unaligned / zero-stride arrays,
NaN/inf, lists, scalars, None, bad lengths and states) and accepts only a correct result or a
ValueError / TypeError / MemoryError / fr.ModelFileError naming the offending argument (see
tests/fuzz_strategies.py for the rules, the profiles and the recording used by
tools/fuzz_long.py).

    python -m pytest -q -p no:cacheprovider tests/test_fuzz.py      # the CI profile (derandomized)
    python tools/fuzz_long.py --cases 10000                         # the long profile, in batches
"""
import atexit
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fastrnn as fr  # noqa: E402
from fastrnn import reference as ref  # noqa: E402
from fuzz_strategies import (NONE, A, Arg, Case, ModelFileError, STATE_DICT_KEYERROR_ALLOWED,  # noqa: E402
                             allowed, arr_valid, array_arg, as_array, check, check_close,
                             check_finite, check_same, combine, dtype_arg, finite_all, float_arg, fuzz_case, fuzz_some, moderate, note,
                             tame, WATCHDOG_FD,
                             fuzz_settings, int_arg, lay, lengths_arg, lengths_valid, mk, plain)

KINDS = {"RNN_TANH": (fr.RNN, fr.RNNCell, {"nonlinearity": "tanh"}),
         "RNN_RELU": (fr.RNN, fr.RNNCell, {"nonlinearity": "relu"}),
         "LSTM": (fr.LSTM, fr.LSTMCell, {}),
         "GRU": (fr.GRU, fr.GRUCell, {})}
TOL = {"float32": 2e-4, "float64": 1e-9}

_TMP = tempfile.mkdtemp(prefix="fastrnn-fuzz-")
atexit.register(shutil.rmtree, _TMP, True)


def _tmp(name):
    return os.path.join(_TMP, name)


@pytest.fixture(autouse=True, scope="module")
def _watchdog_stderr(request):
    """Let a hung case's stack dump reach the real stderr (see fuzz_strategies.fuzz_case)."""
    try:
        from _pytest.faulthandler import fault_handler_stderr_fd_key
        WATCHDOG_FD[0] = request.config.stash.get(fault_handler_stderr_fd_key, None)
    except Exception:  # another pytest, or -p no:faulthandler
        WATCHDOG_FD[0] = None
    yield
    WATCHDOG_FD[0] = None


# ============================================================================ engine layers
@st.composite
def layer_case(draw, valid_inputs=False):
    mode = draw(st.sampled_from(sorted(KINDS)))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    if draw(st.integers(0, 5)) == 0:            # sizes where the plan splits rows / units / fuses
        D, H = draw(st.sampled_from([1, 16, 40])), draw(st.sampled_from([8, 13, 64, 130]))
        T, B = draw(st.integers(1, 4)), draw(st.sampled_from([1, 2, 33, 64]))
    else:
        D, H = draw(st.integers(1, 4)), draw(st.integers(1, 9))
        T, B = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    L = draw(st.integers(1, 2))
    bi, bf, bias = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    leak = draw(st.sampled_from([1.0, 1.0, 1.0, 0.3])) if mode.startswith("RNN") else 1.0
    dirs = 2 if bi else 1
    S = (L * dirs, B, H)
    xshape = (B, T, D) if bf else (T, B, D)
    x = draw(array_arg(xshape, dtype, invalid=not valid_inputs))
    if mode == "LSTM":
        b = draw(st.integers(0, 5))
        if b <= 1:
            hx = NONE
        elif b <= 4 or valid_inputs:
            h = draw(st.one_of(st.just(NONE), array_arg(S, dtype, invalid=not valid_inputs)))
            c = draw(st.one_of(st.just(NONE), array_arg(S, dtype, invalid=not valid_inputs)))
            lst = draw(st.booleans())
            hx = Arg([h.value, c.value] if lst else (h.value, c.value),
                     f"[{h!r}, {c!r}]" if lst else f"({h!r}, {c!r})", None)
        else:
            hx = draw(st.sampled_from([
                Arg(mk(S, dtype), f"mk({S}, {dtype!r})", False),
                Arg((mk(S, dtype),) * 3, f"(mk({S}, {dtype!r}),) * 3", False),
                Arg((mk(S, dtype),), f"(mk({S}, {dtype!r}),)", False),
                Arg("hc", "'hc'", False)]))
    else:
        hx = draw(st.one_of(st.just(NONE), array_arg(S, dtype, invalid=not valid_inputs)))
    lengths = NONE if valid_inputs and draw(st.booleans()) else draw(lengths_arg(T, B))
    if valid_inputs and not lengths_valid(lengths.value, T, B):
        lengths = NONE
    return Case(mode=mode, dtype=dtype, D=D, H=H, L=L, bi=bi, bf=bf, bias=bias, leak=leak,
                seed=draw(st.integers(0, 1000)), x=x, hx=hx, lengths=lengths)


def make_layer(c):
    cls, _, kw = KINDS[c.mode]
    kw = dict(kw)
    if c.leak != 1.0:
        kw["leak"] = c.leak
    return cls(c.D, c.H, num_layers=c.L, bias=c.bias, batch_first=c.bf, bidirectional=c.bi,
               dtype=c.dtype, seed=c.seed, **kw)


def state_valid(value, mode, S, dtype):
    """Whether a layer state (or state gradient) is valid: None, an array of shape S, or for
    an LSTM a pair of those (either may be None)."""
    if value is None:
        return True
    if mode != "LSTM":
        return arr_valid(value, S, dtype)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return combine(*[True if p is None else arr_valid(p, S, dtype) for p in value])
    return False


def _layer_expect(c):
    """Expected validity of (x, hx, lengths), and T, B as the layer would see them."""
    xv = arr_valid(c.x.value, (None, None, c.D), c.dtype)
    xa = as_array(c.x.value)
    T = B = None
    if xv is not False:
        T, B = (xa.shape[1], xa.shape[0]) if c.bf else (xa.shape[0], xa.shape[1])
        if T * B >= 2 ** 31:
            return None, T, B
    S = (c.L * (2 if c.bi else 1), B, c.H)
    sv = state_valid(c.hx.value, c.mode, S, c.dtype)
    lv = lengths_valid(c.lengths.value, T, B) if xv is not False else None
    return combine(xv, sv, lv), T, B


def _ref_params(layer):
    return {k: v.astype(np.float64) for k, v in layer.state_dict().items()}


def _layer_plain_inputs(c, layer):
    x = plain(c.x, c.dtype)
    xt = x.transpose(1, 0, 2) if c.bf else x
    if c.mode == "LSTM":
        h0, c0 = (None, None) if c.hx.value is None else c.hx.value
        h0 = None if h0 is None else np.array(h0, c.dtype)
        c0 = None if c0 is None else np.array(c0, c.dtype)
    else:
        h0, c0 = (None if c.hx.value is None else np.array(c.hx.value, c.dtype)), None
    lengths = None if c.lengths.value is None else np.array(c.lengths.value)
    return x, np.ascontiguousarray(xt), h0, c0, lengths


@fuzz_settings(200)
@given(c=layer_case())
# regression examples: the known findings, run first in CI whatever the search finds
@example(c=Case(mode="RNN_RELU", dtype="float32", D=1, H=8, L=1, bi=False, bf=False, bias=False, leak=1.0,
                seed=0, x=A("mk((1, 1, 1), 'float32', specials=[(0, 'nan')])"), hx=NONE, lengths=NONE))
@example(c=Case(mode="LSTM", dtype="float32", D=3, H=4, L=1, bi=False, bf=False, bias=True, leak=1.0,
                seed=0, x=A("np.broadcast_to(np.zeros((), 'float32'), (2, 2, 2 ** 31))", False, "huge"),
                hx=NONE, lengths=NONE))
@example(c=Case(mode="GRU", dtype="float64", D=2, H=9, L=2, bi=True, bf=True, bias=True, leak=1.0,
                seed=1, x=A("lay(mk((3, 4, 2), 'float64', seed=5), 'neg')"), hx=A("lay(mk((4, 3, 9), 'float64'), 'F')"),
                lengths=A("np.array([4, 1, 3], 'uint8')")))
@fuzz_case
def test_layer_forward(c):
    """fr.RNN/LSTM/GRU forward: shapes, dtype, agreement with the NumPy reference and with the
    same call on contiguous copies, NaN propagation, finite outputs from finite inputs."""
    layer = make_layer(c)
    expect, T, B = _layer_expect(c)
    with allowed("x", "hx", "h0", "c0", "state", "lengths", expect=expect) as r:
        y, state = layer(c.x.value, c.hx.value, lengths=c.lengths.value)
    if r.error:
        check(expect is not True, "valid inputs rejected")
        return
    check(expect is not False, "invalid input accepted", repr(c))
    dirs = 2 if c.bi else 1
    S = (c.L * dirs, B, c.H)
    h_n, c_n = state if c.mode == "LSTM" else (state, None)
    check(y.shape == ((B, T, dirs * c.H) if c.bf else (T, B, dirs * c.H)), "y has the wrong shape",
          f"{y.shape}")
    check(y.dtype == np.dtype(c.dtype) and h_n.dtype == np.dtype(c.dtype), "output dtype is not the layer's",
          f"{y.dtype} {h_n.dtype}")
    check(h_n.shape == S and (c_n is None or c_n.shape == S), "h_n/c_n have the wrong shape",
          f"{h_n.shape}")
    x, xt, h0, c0, lengths = _layer_plain_inputs(c, layer)
    yt = y.transpose(1, 0, 2) if c.bf else y
    # NaN anywhere in a valid step of x must reach that step's output (every unit, both
    # directions); NaN in padding must not.
    nan_at = np.argwhere(np.isnan(xt).any(-1))
    for t, b in nan_at:
        valid_step = lengths is None or t < lengths[b]
        if valid_step:
            check(np.isnan(yt[t, b]).all(), "NaN in a valid step of x did not reach y at that step",
                  f"x[t={t}, b={b}] has NaN, y there: {yt[t, b][:4]}")
    if moderate(xt, *[a for a in (h0, c0) if a is not None]):
        check_finite(y, "y")
        check_finite(h_n, "h_n")
    # the same call on contiguous, native copies gives the same bits
    y2, state2 = make_layer(c)(x, None if c.hx.value is None else ((h0, c0) if c.mode == "LSTM" else h0),
                              lengths=lengths)
    check_same(y, y2, "y")
    # the NumPy reference (no leaky units there)
    has_inf = not tame(xt, h0, c0)      # inf / overflow-sized values: NaN positions may differ
    if c.leak == 1.0:
        yr, hr, cr, _ = ref.forward(c.mode, _ref_params(layer), xt.astype(np.float64),
                                    None if h0 is None else h0.astype(np.float64),
                                    None if c0 is None else c0.astype(np.float64),
                                    lengths, c.L, c.bi)
        tol = TOL[c.dtype]
        check_close(yt, yr, tol, "y", masks=not has_inf)
        check_close(h_n, hr, tol, "h_n", masks=not has_inf)
        if c_n is not None:
            check_close(c_n, cr, tol, "c_n", masks=not has_inf)


@st.composite
def backward_case(draw):
    c = draw(layer_case(valid_inputs=True))
    c.run = draw(st.sampled_from(["train", "train", "train", "eval", "no_grad"]))
    xa = as_array(c.x.value)
    T, B = (xa.shape[1], xa.shape[0]) if c.bf else (xa.shape[0], xa.shape[1])
    dirs = 2 if c.bi else 1
    yshape = (B, T, dirs * c.H) if c.bf else (T, B, dirs * c.H)
    S = (c.L * dirs, B, c.H)
    c.dy = draw(st.one_of(st.just(NONE), array_arg(yshape, c.dtype)))
    if c.mode == "LSTM":
        b = draw(st.integers(0, 4))
        if b == 0:
            c.dstate = NONE
        elif b <= 3:
            h = draw(st.one_of(st.just(NONE), array_arg(S, c.dtype)))
            cc = draw(st.one_of(st.just(NONE), array_arg(S, c.dtype)))
            c.dstate = Arg((h.value, cc.value), f"({h!r}, {cc!r})", None)
        else:
            c.dstate = Arg(mk(S, c.dtype), f"mk({S}, {c.dtype!r})", False)
    else:
        c.dstate = draw(st.one_of(st.just(NONE), array_arg(S, c.dtype)))
    return c


@fuzz_settings(150)
@given(c=backward_case())
@fuzz_case
def test_layer_backward(c):
    """layer.backward(dy, dstate): shapes, the reference's gradients, accumulation (+=)."""
    layer = make_layer(c)
    if c.run == "eval":
        layer.eval()
    ctx = fr.no_grad() if c.run == "no_grad" else contextlib.nullcontext()
    with ctx:
        y, state = layer(c.x.value, c.hx.value, lengths=c.lengths.value)
    xa = as_array(c.x.value)
    T, B = (xa.shape[1], xa.shape[0]) if c.bf else (xa.shape[0], xa.shape[1])
    dirs = 2 if c.bi else 1
    S = (c.L * dirs, B, c.H)
    dv = True if c.dy.value is None else arr_valid(c.dy.value, y.shape, c.dtype)
    sv = state_valid(c.dstate.value, c.mode, S, c.dtype)
    expect = combine(dv, sv)
    if c.run != "train":
        with allowed("forward", "backward", extra=(RuntimeError,)) as r:
            layer.backward(c.dy.value, c.dstate.value)
        check(r.error is not None, "backward after an eval/no_grad forward did not raise")
        return
    with allowed("dy", "dstate", "dh_n", "dc_n", "state", expect=expect) as r:
        dx, dst = layer.backward(c.dy.value, c.dstate.value)
    if r.error:
        return
    check(expect is not False, "invalid input accepted", repr(c))
    dh0, dc0 = dst if c.mode == "LSTM" else (dst, None)
    check(dx.shape == xa.shape and dx.dtype == np.dtype(c.dtype), "dx has the wrong shape/dtype",
          f"{dx.shape} {dx.dtype}")
    check(dh0.shape == S and (dc0 is None or dc0.shape == S), "dh0/dc0 have the wrong shape")
    check(set(layer.grads) == set(layer.state_dict()), "grads keys differ from state_dict keys")
    x, xt, h0, c0, lengths = _layer_plain_inputs(c, layer)
    dy = None if c.dy.value is None else np.array(c.dy.value, np.float64)
    if dy is not None and c.bf:
        dy = dy.transpose(1, 0, 2)
    if c.mode == "LSTM":
        dhn, dcn = (None, None) if c.dstate.value is None else c.dstate.value
    else:
        dhn, dcn = c.dstate.value, None
    dhn = None if dhn is None else np.array(dhn, np.float64)
    dcn = None if dcn is None else np.array(dcn, np.float64)
    ins = [a for a in (xt, h0, c0, dy, dhn, dcn) if a is not None]
    finite = all(np.isfinite(a).all() for a in ins)
    has_inf = not tame(*ins)
    if moderate(*ins):
        for name, g in [("dx", dx), ("dh0", dh0)] + [(k, v) for k, v in layer.grads.items()]:
            check_finite(g, name)
    # with +-inf (or overflowing) inputs, inf - inf vs 0 * inf in another order of operations
    # makes NaN positions and values implementation-defined: no reference comparison then
    if c.leak == 1.0 and not has_inf:
        _, _, _, cache = ref.forward(c.mode, _ref_params(layer), xt.astype(np.float64),
                                     None if h0 is None else h0.astype(np.float64),
                                     None if c0 is None else c0.astype(np.float64), lengths, c.L, c.bi)
        rdx, rdh0, rdc0, rgrads = ref.backward(cache, dy, dhn, dcn)
        tol = TOL[c.dtype] * 10
        check_close(dx.transpose(1, 0, 2) if c.bf else dx, rdx, tol, "dx")
        check_close(dh0, rdh0, tol, "dh0")
        if dc0 is not None:
            check_close(dc0, rdc0, tol, "dc0")
        for k, g in rgrads.items():
            check_close(layer.grads[k], g, tol, f"grads[{k}]")
    # a second backward returns the same gradients and adds the same parameter gradients again
    g1 = {k: v.copy() for k, v in layer.grads.items()}
    dx2, _ = layer.backward(c.dy.value, c.dstate.value)
    check_same(dx2, dx, "dx of a repeated backward")
    if finite:
        for k in g1:
            check_close(layer.grads[k], 2 * g1[k], TOL[c.dtype] * 10, f"accumulated grads[{k}]")


# ============================================================================ engine cells
@st.composite
def cell_case(draw):
    mode = draw(st.sampled_from(sorted(KINDS)))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    if draw(st.integers(0, 5)) == 0:            # where a batch-of-one step splits by units
        D, H, B = draw(st.sampled_from([16, 128])), draw(st.sampled_from([64, 128, 130])), draw(st.sampled_from([1, 3]))
    else:
        D, H, B = draw(st.integers(1, 4)), draw(st.integers(1, 9)), draw(st.integers(1, 4))
    x = draw(array_arg((B, D), dtype))
    lstm = mode == "LSTM"
    if lstm:
        b = draw(st.integers(0, 5))
        if b <= 1:
            state = NONE
        elif b <= 4:
            h = draw(st.one_of(st.just(NONE), array_arg((B, H), dtype)))
            cc = draw(st.one_of(st.just(NONE), array_arg((B, H), dtype)))
            state = Arg((h.value, cc.value), f"({h!r}, {cc!r})", None)
        else:
            state = draw(st.sampled_from([Arg(mk((B, H), dtype), f"mk({(B, H)}, {dtype!r})", False),
                                          Arg(mk((2, B, H), dtype), f"mk({(2, B, H)}, {dtype!r})", False)]))
    else:
        state = draw(st.one_of(st.just(NONE), array_arg((B, H), dtype)))
    steps = draw(st.integers(1, 3))
    dh = draw(st.one_of(st.just(NONE), array_arg((B, H), dtype)))
    dc = draw(st.one_of(st.just(NONE), array_arg((B, H), dtype))) if lstm else NONE
    return Case(mode=mode, dtype=dtype, D=D, H=H, bias=draw(st.booleans()), seed=draw(st.integers(0, 99)),
                x=x, state=state, steps=steps, dh=dh, dc=dc, extra_backward=draw(st.booleans()),
                eval=draw(st.integers(0, 5)) == 0)


def make_cell(c):
    _, cls, kw = KINDS[c.mode]
    return cls(c.D, c.H, bias=c.bias, dtype=c.dtype, seed=c.seed, **kw)


@fuzz_settings(200)
@given(c=cell_case())
@example(c=Case(mode="LSTM", dtype="float32", D=2, H=3, bias=True, seed=0, x=A("mk((2, 2), 'float32')"),
                state=A("mk((2, 3), 'float32')", False), steps=1, dh=NONE, dc=NONE, extra_backward=False,
                eval=False))
@example(c=Case(mode="RNN_RELU", dtype="float64", D=2, H=3, bias=True, seed=0,
                x=A("mk((2, 2), 'float64', specials=[(0, 'nan')])"), state=NONE, steps=1, dh=NONE, dc=NONE,
                extra_backward=True, eval=False))
@example(c=Case(mode="GRU", dtype="float32", D=2, H=3, bias=True, seed=0, x=A("[[1.0, 2.0], [3.0]]", False, "junk"),
                state=NONE, steps=1, dh=NONE, dc=NONE, extra_backward=False, eval=False))
@fuzz_case
def test_cell_forward_backward(c):
    """fr.RNNCell/LSTMCell/GRUCell: steps then as many backward pops (one more must raise
    RuntimeError); results against the reference and against contiguous copies."""
    cell = make_cell(c)
    if c.eval:
        cell.eval()
    lstm = c.mode == "LSTM"
    xv = arr_valid(c.x.value, (None, c.D), c.dtype)
    xa = as_array(c.x.value)
    B = xa.shape[0] if xv is not False else None
    if lstm:
        sv = c.state.value
        if sv is None:
            s_ok = True
        elif isinstance(sv, (tuple, list)) and len(sv) == 2:
            s_ok = combine(*[True if p is None else arr_valid(p, (B, c.H), c.dtype) for p in sv])
        else:
            s_ok = False
    else:
        s_ok = True if c.state.value is None else arr_valid(c.state.value, (B, c.H), c.dtype)
    expect = combine(xv, s_ok)
    with allowed("x", "h", "c", "hx", "state", expect=expect) as r:
        out = cell(c.x.value, c.state.value)
    if r.error:
        return
    check(expect is not False, "invalid input accepted", repr(c))
    h1, c1 = out if lstm else (out, None)
    check(h1.shape == (B, c.H) and h1.dtype == np.dtype(c.dtype), "h1 has the wrong shape/dtype",
          f"{h1.shape} {h1.dtype}")
    x = plain(c.x, c.dtype)
    if lstm:
        h0, c0 = (None, None) if c.state.value is None else c.state.value
        h0 = np.zeros((B, c.H), c.dtype) if h0 is None else np.array(h0, c.dtype)
        c0 = np.zeros((B, c.H), c.dtype) if c0 is None else np.array(c0, c.dtype)
    else:
        h0 = np.zeros((B, c.H), c.dtype) if c.state.value is None else np.array(c.state.value, c.dtype)
        c0 = None
    p = {k: v.astype(np.float64) for k, v in cell.state_dict().items()}
    res = ref.cell_forward(c.mode, p["weight_ih"], p["weight_hh"], p.get("bias_ih"), p.get("bias_hh"),
                           x.astype(np.float64), h0.astype(np.float64),
                           None if c0 is None else c0.astype(np.float64))
    tol = TOL[c.dtype]
    has_inf = not tame(x, h0, c0)
    check_close(h1, res[0], tol, "h1", masks=not has_inf)
    if lstm:
        check_close(c1, res[1], tol, "c1", masks=not has_inf)
    if np.isnan(x).any(axis=1).any():
        rows = np.isnan(x).any(axis=1)
        check(np.isnan(h1[rows]).all(), "NaN in x did not reach h1 of its row")
    if moderate(x, h0, *([] if c0 is None else [c0])):
        check_finite(h1, "h1")
    # the same step on contiguous copies
    out2 = make_cell(c)(x, (h0, c0) if lstm else h0)
    check_same(out2[0] if lstm else out2, h1, "h1")
    # more steps, feeding the state back
    st_ = (h1, c1) if lstm else h1
    for _ in range(c.steps - 1):
        st_ = cell(c.x.value, st_)
    # backward: one pop per training-mode step
    dv = combine(True if c.dh.value is None else arr_valid(c.dh.value, (B, c.H), c.dtype),
                 True if c.dc.value is None else arr_valid(c.dc.value, (B, c.H), c.dtype))
    pops = 0 if c.eval else c.steps
    for i in range(pops):
        with allowed("dh", "dc", "dstate", "dh1", expect=dv) as r:
            if lstm:
                dx, (dhh, dcc) = cell.backward((c.dh.value, c.dc.value))
            else:
                dx, dhh = cell.backward(c.dh.value)
        if r.error:
            return
        check(dv is not False, "invalid input accepted", repr(c))
        check(dx.shape == (B, c.D) and dhh.shape == (B, c.H), "cell backward shapes are wrong",
              f"{dx.shape} {dhh.shape}")
        if i == 0 and c.steps == 1:
            cache = res[-1]
            dh1 = None if c.dh.value is None else np.array(c.dh.value, np.float64)
            dc1 = None if c.dc.value is None else np.array(c.dc.value, np.float64)
            if dh1 is None:
                dh1 = np.zeros((B, c.H))
            rb = ref.cell_backward(cache, dh1, dc1) if lstm else ref.cell_backward(cache, dh1)
            if not has_inf and tame(dh1, dc1):
                check_close(dx, rb[0], tol * 10, "cell dx")
                check_close(dhh, rb[1], tol * 10, "cell dh")
                for k, g in rb[-1].items():
                    check_close(cell.grads[k], g, tol * 10, f"cell grads[{k}]")
    if c.extra_backward or c.eval:
        with allowed("backward", "forward", extra=(RuntimeError,)) as r:
            cell.backward((None, None) if lstm else None)
        check(r.error is not None, "backward with an empty tape did not raise")


# ============================================================================ constructors
@st.composite
def ctor_case(draw):
    what = draw(st.sampled_from(["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]))
    bad = fuzz_some(draw, ["input_size", "hidden_size", "num_layers", "dropout", "nonlinearity", "leak",
                           "dtype", "seed", "bias"], 3)
    nl = [Arg("tanh", "'tanh'", True), Arg("relu", "'relu'", True)]
    nl_bad = [Arg("sigmoid", "'sigmoid'", False), Arg(None, "None", False), Arg("TANH", "'TANH'", None)]
    seeds = [NONE, Arg(0, "0", True), Arg(7, "7", True), Arg(2 ** 70, "2 ** 70", True)]
    seeds_bad = [Arg(-1, "-1", False), Arg(1.5, "1.5", False), Arg("s", "'s'", False)]
    biases = [Arg(True, "True", True), Arg(False, "False", True)]
    return Case(what=what,
                input_size=draw(int_arg((1, 5), valid_only="input_size" not in bad)),
                hidden_size=draw(int_arg((1, 5), valid_only="hidden_size" not in bad)),
                num_layers=draw(int_arg((1, 3), huge_ok=False, valid_only="num_layers" not in bad)),
                dropout=draw(float_arg(0.0, 1.0, hi_open=True, valid_only="dropout" not in bad)),
                nonlinearity=draw(st.sampled_from(nl + (nl_bad if "nonlinearity" in bad else []))),
                leak=draw(float_arg(0.0, 1.0, lo_open=True, valid_only="leak" not in bad)),
                dtype=draw(dtype_arg(valid_only="dtype" not in bad)),
                seed=draw(st.sampled_from(seeds + (seeds_bad if "seed" in bad else []))),
                bias=draw(st.sampled_from(biases + ([Arg("no", "'no'", None), Arg(None, "None", None)]
                                                    if "bias" in bad else []))))


@fuzz_settings(150)
@given(c=ctor_case())
@fuzz_case
def test_constructors(c):
    """Layer and cell constructors with every kind of argument; a built module runs a step."""
    names = ["input_size", "hidden_size", "dtype", "data type", "seed", "bias"]
    kw = dict(bias=c.bias.value, dtype=c.dtype.value, seed=c.seed.value)
    args = [c.input_size, c.hidden_size, c.dtype, c.seed, c.bias]
    layer = not c.what.endswith("Cell")
    if layer:
        kw.update(num_layers=c.num_layers.value, dropout=c.dropout.value)
        names += ["num_layers", "dropout"]
        args += [c.num_layers, c.dropout]
    if c.what.startswith("RNN"):
        kw["nonlinearity"] = c.nonlinearity.value
        names.append("nonlinearity")
        args.append(c.nonlinearity)
        if layer:
            kw["leak"] = c.leak.value
            names.append("leak")
            args.append(c.leak)
    expect = combine(*[a.valid for a in args])
    with allowed(*names, expect=expect) as r:
        m = getattr(fr, c.what)(c.input_size.value, c.hidden_size.value, **kw)
    if r.error:
        return
    argnames = [n for n in names if n != "data type"]
    check(expect is not False, "invalid constructor argument accepted",
          ", ".join(f"{n}={a!r}" for n, a in zip(argnames, args) if a.valid is False))
    check(m.input_size == int(c.input_size.value) and m.hidden_size == int(c.hidden_size.value),
          "sizes stored wrongly")
    check(np.dtype(m.dtype) in (np.float32, np.float64), "module dtype is not float32/float64", f"{m.dtype}")
    if layer:
        check(m.num_layers == int(c.num_layers.value), "num_layers stored wrongly")
        x = np.ones((2, 1, m.input_size), m.dtype)
        y, _ = m(x)
        check(y.shape == (2, 1, m.hidden_size * m.num_directions), "forward of a new layer has the wrong shape")
    else:
        h = m(np.ones((1, m.input_size), m.dtype))
        h = h[0] if isinstance(h, tuple) else h
        check(h.shape == (1, m.hidden_size), "a new cell's step has the wrong shape")
    check(all(np.isfinite(v).all() for v in m.state_dict().values()), "initial weights are not finite")


@fuzz_settings(30)
@given(n=st.one_of(int_arg((1, 4)), st.sampled_from([Arg(1024, "1024", True), Arg(1025, "1025", False),
                                                     Arg(2 ** 31, "2 ** 31", False), Arg(2 ** 64, "2 ** 64", False),
                                                     Arg(10 ** 6, "10 ** 6", False)])))
@example(n=Arg(2 ** 31, "2 ** 31", False))
@fuzz_case
def test_set_num_threads(n):
    """fr.set_num_threads: 1..1024 (the pool's documented maximum) works, else an error
    naming the argument; the engine still runs afterwards."""
    old = fr.get_num_threads()
    try:
        with allowed("num_threads", "threads", "n", expect=n.valid) as r:
            fr.set_num_threads(n.value)
        if not r.error:
            check(n.valid is not False, "invalid num_threads accepted", repr(n))
            check(fr.get_num_threads() >= 1, "get_num_threads() < 1 after set_num_threads")
        y, _ = fr.LSTM(2, 3, seed=0)(np.ones((3, 5, 2), np.float32))
        check_finite(y, "y after set_num_threads")
    finally:
        fr.set_num_threads(old)


# ============================================================================ load_state_dict
def _targets():
    return ["RNN", "LSTM", "GRU", "LSTMCell", "GRUCell", "Sequential", "Sequential-compiled"]


def _make_target(name):
    if name == "Sequential":
        return fr.Sequential([fr.GRU(2, 3), fr.Dense(2)], seed=0)
    if name == "Sequential-compiled":
        m = fr.Sequential([fr.LSTM(2, 3, bidirectional=True), fr.LastStep(), fr.Dense(1)], seed=0)
        return m.compile("mse", "adam")
    cls = getattr(fr, name)
    return cls(2, 3, seed=0) if name.endswith("Cell") else cls(2, 3, num_layers=2, seed=0)


_SD_MUTATIONS = ["none", "dtype", "shape", "value-None", "list", "drop", "add", "rename", "not-a-dict",
                 "object-None", "nan", "scalar", "0stride", "strided"]


@st.composite
def sd_case(draw):
    target = draw(st.sampled_from(_targets()))
    m = _make_target(target)
    keys = sorted(m.state_dict())
    muts = draw(st.lists(st.tuples(st.sampled_from(_SD_MUTATIONS), st.sampled_from(keys),
                                   st.sampled_from(["bool", "int64", "float16", "float64", "float32",
                                                    "complex64", "complex128", "object", "U8",
                                                    "datetime64[s]", "V4", "longdouble"])),
                         min_size=1, max_size=2))
    return Case(target=target, mutations=muts, seed=draw(st.integers(0, 99)))


def _mutate_sd(sd, muts, seed):
    """Returns (new state dict, validity True/False/None). Each mutation replaces an entry
    with a variant of the model's own array (a later one on the same name wins)."""
    orig = dict(sd)
    sd = dict(sd)
    structure = True            # names / container
    entry = {}                  # name -> validity of its last value
    for how, k, dt in muts:
        if not isinstance(sd, dict):
            break
        if k not in sd:
            continue                                 # dropped or renamed before
        v = orig[k]
        ok = True
        if how == "none":
            sd[k] = mk(v.shape, "float64", seed)
        elif how == "dtype":
            sd[k] = mk(v.shape, dt, seed)
            kind = np.dtype(dt).kind
            ok = True if kind in "fiu" else (None if kind == "b" else False)
        elif how == "shape":
            if seed % 3 == 0:
                shp = v.shape + (1,)
            elif v.ndim == 2 and v.shape[0] != v.shape[1]:
                shp = v.shape[::-1]
            else:
                shp = (v.shape[0] + 1,) + v.shape[1:]
            sd[k] = mk(shp, "float32", seed)
            ok = False
        elif how == "value-None":
            sd[k] = None
            ok = False
        elif how == "list":
            sd[k] = v.tolist()
        elif how == "drop":
            del sd[k]
            structure = False
            entry.pop(k, None)
            continue
        elif how == "add":
            sd[k + "_extra"] = v
            structure = False
        elif how == "rename":
            sd["x" + k] = sd.pop(k)
            structure = False
            entry.pop(k, None)
            continue
        elif how == "not-a-dict":
            sd = [(kk, vv) for kk, vv in sd.items()] if seed % 2 else None
            structure = False
            continue
        elif how == "object-None":
            o = np.empty(v.shape, object)
            o[...] = 0.5
            if o.size:
                o.flat[seed % o.size] = None
            sd[k] = o
            ok = False
        elif how == "nan":
            a = v.copy()
            if a.size:
                a.flat[seed % a.size] = np.nan
            sd[k] = a
        elif how == "scalar":
            sd[k] = 0.5
            ok = False if v.size != 1 or v.ndim else True
        elif how == "0stride":
            sd[k] = np.broadcast_to(v.reshape(-1)[:1].reshape((1,) * v.ndim), v.shape) if v.size else v
        elif how == "strided":
            sd[k] = lay(v, "strided")
        entry[k] = ok
    return sd, combine(structure, *entry.values())


@fuzz_settings(150)
@given(c=sd_case())
@example(c=Case(target="LSTM", mutations=[("dtype", "weight_ih_l0", "complex64")], seed=0))
@example(c=Case(target="Sequential-compiled", mutations=[("object-None", "2.weight", "float32")], seed=0))
@fuzz_case
def test_load_state_dict(c):
    """load_state_dict of layers, cells and models: numeric arrays of the right shapes are
    copied in (cast), anything else is refused naming the entry -- and a refused state dict
    leaves the model untouched."""
    m = _make_target(c.target)
    before = m.state_dict()
    sd, valid = _mutate_sd(m.state_dict(), c.mutations, c.seed)
    extra = (KeyError,) if STATE_DICT_KEYERROR_ALLOWED else ()
    names = ["state_dict"] + [k for _, k, _ in c.mutations]
    with allowed(*names, expect=valid, extra=extra) as r:
        m.load_state_dict(sd)
    after = m.state_dict()
    if r.error:
        for k in before:
            check(np.array_equal(before[k], after[k], equal_nan=True),
                  "a refused state dict modified the model", k)
        return
    check(valid is not False, "invalid state dict accepted", repr(c.mutations))
    for k, v in sd.items():
        want = np.asarray(v).astype(after[k].dtype) if np.asarray(v).dtype != object else None
        if want is not None:
            check(np.array_equal(np.broadcast_to(want, after[k].shape), after[k], equal_nan=True),
                  "loaded values differ from the state dict", k)


# ============================================================================ Sequential
def _tbptt(draw, T, bad):
    if not bad:
        return draw(st.one_of(st.just(NONE), int_arg((1, T), valid_only=True)))
    a = draw(int_arg((1, T)))
    return NONE if a.value is None else a           # None is tbptt's default: valid


@st.composite
def model_case(draw):
    kind = draw(st.sampled_from(["LSTM", "GRU", "RNN"]))
    H = draw(st.integers(1, 5))
    D = draw(st.integers(1, 3))
    bi = draw(st.booleans())
    seqs = draw(st.booleans())
    loss = draw(st.sampled_from(["mse", "mse", "cross_entropy"]))
    O = draw(st.integers(2, 3)) if loss == "cross_entropy" else draw(st.integers(1, 2))
    N, T = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    X = draw(array_arg((N, T, D), "float32"))
    if loss == "mse":
        yshape = (N, T, O) if seqs else (N, O)
        y = draw(array_arg(yshape, "float32"))
    else:
        yshape = (N, T) if seqs else (N,)
        labels = draw(st.lists(st.integers(0, O - 1), min_size=int(np.prod(yshape)), max_size=int(np.prod(yshape))))
        if draw(st.integers(0, 3)) == 0:
            y = draw(array_arg(yshape, "int64"))
        else:
            y = Arg(np.array(labels, np.int64).reshape(yshape), f"np.array({labels}).reshape({yshape})", True)
    lengths = draw(lengths_arg(T, N)) if draw(st.booleans()) else NONE
    sw = NONE
    if draw(st.integers(0, 3)) == 0:
        sw = draw(array_arg((N,), "float64"))
    method = draw(st.sampled_from(["fit", "fit", "predict", "evaluate", "train_on_batch", "generate"]))
    bad = fuzz_some(draw, ["epochs", "batch_size", "validation_split", "verbose", "tbptt", "steps"], 2)
    v = lambda k: k not in bad    # noqa: E731
    kw = {}
    if method == "fit":
        vs = draw(float_arg(0.0, 1.0, hi_open=True)) if not v("validation_split") else \
            draw(st.sampled_from([Arg(0.0, "0.0", True), Arg(0.0, "0.0", True), Arg(0.5, "0.5", True)]))
        kw = dict(epochs=draw(int_arg((0, 2), huge_ok=False, valid_only=v("epochs"))),
                  batch_size=draw(int_arg((1, 8), valid_only=v("batch_size"))),
                  validation_split=vs,
                  shuffle=draw(st.sampled_from([Arg(True, "True", True), Arg(False, "False", True)])),
                  verbose=draw(st.sampled_from([Arg(0, "0", True), Arg(2, "2", True)] +
                                               ([Arg(3, "3", False), Arg("1", "'1'", False), Arg(-1, "-1", False)]
                                                if "verbose" in bad else []))),
                  tbptt=_tbptt(draw, T, "tbptt" in bad))
    elif method == "train_on_batch":
        kw = dict(tbptt=_tbptt(draw, T, "tbptt" in bad))
    elif method in ("predict", "evaluate"):
        kw = dict(batch_size=draw(int_arg((1, 8), valid_only=v("batch_size"))))
    elif method == "generate":
        kw = dict(steps=draw(int_arg((1, 3), huge_ok=False, valid_only=v("steps"))))
    return Case(kind=kind, H=H, D=D, bi=bi, seqs=seqs, loss=loss, O=O, opt=draw(st.sampled_from(["adam", "sgd", "rmsprop"])),
                X=X, y=y, lengths=lengths, sample_weight=sw, method=method, kw=kw, seed=draw(st.integers(0, 99)))


def _which_invalid(c, xv, yv, lv, sv):
    bad = [n for n, v in (("X", xv), ("y", yv), ("lengths", lv), ("sample_weight", sv)) if v is False]
    bad += [f"{k}={a!r}" for k, a in c.kw.items() if a.valid is False]
    return ", ".join(bad) or "(a combination)"


def _huge(v):
    """A valid-looking array too big to allocate (the library may run out of memory on it
    before it finds another argument inconsistent)."""
    return isinstance(v, np.ndarray) and v.size >= 2 ** 31


def make_model(c):
    eng = getattr(fr, c.kind)(c.D, c.H, bidirectional=c.bi)
    m = fr.Sequential([fr.Recurrent(eng, return_sequences=c.seqs), fr.Dense(c.O)], seed=c.seed)
    return m.compile(loss=c.loss, optimizer=c.opt)


def _model_expect(c):
    """Validity of X, y, lengths, sample_weight for this model."""
    X = c.X.value
    xv = arr_valid(X, (None, None, c.D), kinds="fiub", exact=False)
    if xv is not False and c.X.tag.startswith("dtype:"):
        xv = None                                   # ints / bools / float16 convert, or not
    xa = as_array(X)
    if xv is not False and finite_all(xa) is not True:
        xv = None                                   # documented: "X contains NaN or inf"
    N = T = None
    if xv is not False:
        N, T = xa.shape[0], xa.shape[1]
    if c.loss == "mse":
        yshape = (N, T, c.O) if c.seqs else (N, c.O)
        yv = arr_valid(c.y.value, yshape, kinds="fiub", exact=False)
        if yv is False and c.O == 1:
            yv = arr_valid(c.y.value, yshape[:-1], kinds="fiub", exact=False)
        if yv is not False and finite_all(c.y.value) is not True:
            yv = None
    else:
        yshape = (N, T) if c.seqs else (N,)
        yv = arr_valid(c.y.value, yshape, kinds="iu", exact=False)
        ya = as_array(c.y.value)
        if yv is not False and ya.size >= 2 ** 24:
            yv = None                               # (min/max of a huge zero-stride view: too slow)
        elif yv is not False and (ya.min() < 0 or ya.max() >= c.O):
            yv = False
        if yv is False:
            yv = None if arr_valid(c.y.value, yshape + (c.O,), kinds="f", exact=False) else False
    if c.y.tag.startswith("dtype:"):
        yv = combine(yv, None)
    lv = lengths_valid(c.lengths.value, T, N) if xv is not False else None
    sv = True
    if c.sample_weight.value is not None:
        sv = arr_valid(c.sample_weight.value, (N,), kinds="fiub", exact=False)
        sa = as_array(c.sample_weight.value)
        if sv is not False and (finite_all(sa) is not True or (sa.astype(np.float64) < 0).any()):
            sv = False
        if c.sample_weight.tag.startswith("dtype:"):
            sv = combine(sv, None)
    return xv, yv, lv, sv, N, T


@fuzz_settings(120)
@given(c=model_case())
@example(c=Case(kind="LSTM", H=3, D=2, bi=False, seqs=True, loss="mse", O=1, opt="adam",
                X=A("mk((4, 5, 2), 'float32')"), y=A("mk((4, 5, 1), 'float32')"), lengths=NONE,
                sample_weight=NONE, method="train_on_batch", kw={"tbptt": Arg(-1, "-1", False)}, seed=0))
@example(c=Case(kind="GRU", H=3, D=2, bi=False, seqs=False, loss="mse", O=1, opt="adam",
                X=A("mk((4, 5, 2), 'float32')"), y=Arg(None, "None", False, tag="junk"), lengths=NONE,
                sample_weight=NONE, method="fit",
                kw={"epochs": Arg(1, "1", True), "batch_size": Arg(2, "2", True),
                    "validation_split": Arg(0.0, "0.0", True), "shuffle": Arg(True, "True", True),
                    "verbose": Arg(0, "0", True), "tbptt": NONE}, seed=0))
@fuzz_case
def test_sequential(c):
    """Sequential fit / predict / evaluate / train_on_batch / generate on fuzzed data and
    arguments: results of the right shape, finite, equal for strided and contiguous data."""
    m = make_model(c)
    xv, yv, lv, sv, N, T = _model_expect(c)
    kw = {k: v.value for k, v in c.kw.items()}
    names = ["X", "y", "lengths", "sample_weight"] + list(c.kw)
    if c.method == "predict":
        expect = combine(xv, lv, *[a.valid for a in c.kw.values()])
        with allowed(*names, expect=expect, memory_ok=_huge(c.X.value)) as r:
            out = m.predict(c.X.value, lengths=c.lengths.value, **kw)
        if r.error:
            return
        check(expect is not False, "invalid input accepted", _which_invalid(c, xv, yv, lv, sv))
        dirs = 2 if c.bi else 1
        check(out.shape == ((N, T, c.O) if c.seqs else (N, c.O)), "predict has the wrong shape", f"{out.shape}")
        check(out.dtype == np.float32, "predict dtype is not the model's", f"{out.dtype}")
        if moderate(c.X.value):
            check_finite(out, "predict")
        X2 = np.ascontiguousarray(np.asarray(c.X.value, np.float32))
        out2 = m.predict(X2, lengths=None if c.lengths.value is None else np.array(c.lengths.value), **kw)
        check_same(out, out2, "predict")
        del dirs
        return
    if c.method == "generate":
        expect = combine(xv, lv, *[a.valid for a in c.kw.values()])
        gen_ok = c.seqs and c.O == c.D
        with allowed(*names, "per-step", "feedback", "features", expect=expect if gen_ok else combine(expect, False),
                     memory_ok=_huge(c.X.value)) as r:
            out = m.generate(c.X.value, lengths=c.lengths.value, **kw)
        if r.error:
            return
        check(expect is not False and gen_ok, "invalid input accepted", repr(c))
        check(out.shape == (N, kw["steps"], c.O), "generate has the wrong shape", f"{out.shape}")
        if moderate(c.X.value):
            check_finite(out, "generate")
        return
    yy = c.y.value
    expect = combine(xv, yv, lv, sv, *[a.valid for a in c.kw.values()])
    if c.method == "evaluate":
        with allowed(*names, expect=expect, memory_ok=_huge(c.X.value)) as r:
            res = m.evaluate(c.X.value, yy, lengths=c.lengths.value, sample_weight=c.sample_weight.value, **kw)
        if r.error:
            return
        check(expect is not False, "invalid input accepted", _which_invalid(c, xv, yv, lv, sv))
        check(isinstance(res, dict) and "loss" in res, "evaluate did not return {'loss': ...}")
        if moderate(c.X.value, c.y.value):
            check(np.isfinite(res["loss"]), "evaluate loss is not finite", f"{res}")
        return
    if c.method == "train_on_batch":
        tb = c.kw["tbptt"]
        if tb.valid is not False and c.lengths.value is not None and isinstance(tb.value, int) and tb.value < (T or 0):
            expect = combine(expect, None)          # documented: no tbptt with ragged lengths
        with allowed(*names, expect=expect, memory_ok=_huge(c.X.value)) as r:
            loss = m.train_on_batch(c.X.value, yy, lengths=c.lengths.value,
                                    sample_weight=c.sample_weight.value, **kw)
        if r.error:
            return
        check(expect is not False, "invalid input accepted", _which_invalid(c, xv, yv, lv, sv))
        if moderate(c.X.value, c.y.value):
            check(np.isfinite(loss), "train_on_batch loss is not finite", f"{loss}")
        return
    # fit
    tb = c.kw["tbptt"]
    if tb.valid is not False and c.lengths.value is not None and tb.value is not None:
        expect = combine(expect, None)              # documented: no tbptt with ragged lengths
    vs = c.kw["validation_split"].value
    if c.kw["validation_split"].valid and N and vs and int(N * vs) in (0, N):
        expect = combine(expect, None)              # the split leaves nothing on one side
    with allowed(*names, "validation", expect=expect, memory_ok=_huge(c.X.value)) as r:
        hist = m.fit(c.X.value, yy, lengths=c.lengths.value, sample_weight=c.sample_weight.value, **kw)
    if r.error:
        return
    check(expect is not False, "invalid input accepted", _which_invalid(c, xv, yv, lv, sv))
    losses = hist.history.get("loss", [])
    if moderate(c.X.value, c.y.value):         # (a non-finite loss stops training early: documented)
        check(len(losses) == kw["epochs"], "fit history has the wrong number of epochs", f"{len(losses)}")
        check(all(np.isfinite(losses)), "fit loss is not finite", f"{losses}")
        out = m.predict(np.asarray(c.X.value, np.float32))
        check_finite(out, "predict after fit")


# ============================================================================ fr.load
_SAVED = {}


def _saved_model_bytes():
    """The bytes of a real saved model (compiled, one step trained), made once."""
    if "model" not in _SAVED:
        m = fr.Sequential([fr.LSTM(2, 3), fr.LastStep(), fr.Dense(1)], seed=0)
        m.compile("mse", fr.Adam(0.01))
        m.train_on_batch(mk((4, 3, 2), "float32", 1), mk((4, 1), "float32", 2))
        p = _tmp("real.frnn")
        m.save(p)
        with open(p, "rb") as f:
            _SAVED["model"] = f.read()
    return _SAVED["model"]


def _zip_entries(data):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def _rezip(entries):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for n, b in entries.items():
            z.writestr(n, b)
    return buf.getvalue()


_json = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) |
                     st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda children: st.lists(children, max_size=4) |
                     st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=12)


def _paths(obj, prefix=()):
    """Every path into a JSON tree."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _set_path(obj, path, value, delete=False):
    if not path:
        return value
    cur = obj
    for p in path[:-1]:
        cur = cur[p]
    if delete:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return obj


def _meta_variant(edit):
    """The real file with its fastrnn.json edited in place by ``edit(meta)`` (zip rebuilt)."""
    e = _zip_entries(_saved_model_bytes())
    meta = json.loads(e["fastrnn.json"])
    edit(meta)
    e["fastrnn.json"] = json.dumps(meta).encode()
    return _rezip(e)


@st.composite
def load_case(draw):
    data = _saved_model_bytes()
    how = draw(st.sampled_from(["intact", "truncate", "flip", "insert", "garbage", "empty", "json", "json",
                                "json-delete", "npy-dtype", "npy-shape", "npy-truncate", "npy-drop",
                                "npy-extra", "opt", "path"]))
    desc = how
    if how == "truncate":
        n = draw(st.integers(0, len(data) - 1))
        data, desc = data[:n], f"real[:{n}]"
    elif how == "flip":
        pos = draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=4))
        b = bytearray(data)
        for p in pos:
            b[p] ^= 0xFF
        data, desc = bytes(b), f"flip bytes {pos}"
    elif how == "insert":
        p = draw(st.integers(0, len(data)))
        junk = draw(st.binary(min_size=1, max_size=16))
        data, desc = data[:p] + junk + data[p:], f"insert {junk!r} at {p}"
    elif how == "garbage":
        data = draw(st.binary(min_size=1, max_size=200))
        if draw(st.booleans()):
            data = b"PK\x03\x04" + data
        desc = f"garbage {data[:40]!r}"
    elif how == "empty":
        data = b""
    elif how in ("json", "json-delete"):
        e = _zip_entries(data)
        meta = json.loads(e["fastrnn.json"])
        paths = list(_paths(meta))
        path = draw(st.sampled_from(paths[1:] if how == "json-delete" else paths))
        value = draw(_json)
        meta = _set_path(meta, path, value, delete=how == "json-delete")
        e["fastrnn.json"] = json.dumps(meta).encode()
        data, desc = _rezip(e), f"{how} {list(path)} = {value!r}"[:300]
    elif how.startswith("npy") or how == "opt":
        e = _zip_entries(data)
        wn = sorted(n for n in e if n.startswith("optimizer/" if how == "opt" else "weights/"))
        n = draw(st.sampled_from(wn))
        arr = np.lib.format.read_array(io.BytesIO(e[n]))
        if how == "npy-dtype" or how == "opt":
            dt = draw(st.sampled_from(["complex64", "bool", "int64", "float16", "U4", "object", "datetime64[s]"]))
            new = mk(arr.shape, dt, 3)
            buf = io.BytesIO()
            np.lib.format.write_array(buf, new, allow_pickle=True)
            e[n] = buf.getvalue()
            desc = f"{n} as {dt}"
        elif how == "npy-shape":
            buf = io.BytesIO()
            np.lib.format.write_array(buf, mk(arr.shape + (2,), "float32", 3))
            e[n] = buf.getvalue()
            desc = f"{n} with shape {arr.shape + (2,)}"
        elif how == "npy-truncate":
            k = draw(st.integers(0, len(e[n]) - 1))
            e[n] = e[n][:k]
            desc = f"{n}[:{k}]"
        elif how == "npy-drop":
            del e[n]
            desc = f"drop {n}"
        else:
            e[n.replace(".npy", "_extra.npy")] = e[n]
            desc = f"duplicate {n}"
        data = _rezip(e)
    path_kind = draw(st.sampled_from(["str", "str", "pathlib", "bytes"])) if how != "path" else \
        draw(st.sampled_from(["missing", "dir", "None", "int", "BytesIO", "list"]))
    return Case(how=desc, data=Arg(data, f"<{len(data)} bytes: {desc}>", None), path_kind=path_kind,
                compile=draw(st.booleans()))


_load_counter = [0]


@fuzz_settings(200)
@given(c=load_case())
@example(c=Case(how="intact", data=Arg(_saved_model_bytes(), "<the real file>", True), path_kind="str",
                compile=True))
@example(c=Case(how="real[:100]", data=Arg(_saved_model_bytes()[:100], "<real[:100]>", None), path_kind="str",
                compile=True))
@example(c=Case(how="json-delete ['config']", data=Arg(_meta_variant(lambda m: m.pop("config")), "<no config>", None),
                path_kind="str", compile=True))
@example(c=Case(how="json ['config', 'layers'] = 3", data=Arg(_meta_variant(lambda m: m["config"].update(layers=3)),
                "<layers: 3>", None), path_kind="str", compile=False))
@fuzz_case
def test_load(c):
    """fr.load on a real saved file, on mutated / truncated / garbage bytes, on random JSON
    configs and on bad paths: a model that predicts, or a ModelFileError (ValueError) naming the
    file -- never BadZipFile, KeyError, AttributeError, ..."""
    import pathlib
    _load_counter[0] += 1
    fname = f"model{_load_counter[0]}.frnn"
    p = _tmp(fname)
    with open(p, "wb") as f:
        f.write(c.data.value)
    pk = c.path_kind
    arg = {"str": p, "pathlib": pathlib.Path(p), "bytes": os.fsencode(p), "missing": _tmp("nope/missing.frnn"),
           "dir": _TMP, "None": None, "int": 12345, "BytesIO": io.BytesIO(c.data.value), "list": [p]}[pk]
    try:
        if pk in ("None", "int", "BytesIO", "list"):
            with allowed("path", "os.PathLike", "file") as r:
                fr.load(arg, compile=c.compile)
            return
        if pk in ("missing", "dir"):
            with allowed(os.path.basename(os.fspath(arg)), "nope", extra=(OSError,)) as r:
                fr.load(arg, compile=c.compile)
            check(r.error is not None, "loading a missing file / a directory did not raise")
            return
        intact = c.how == "intact"
        err_types = (ModelFileError, MemoryError)
        with allowed(fname, expect=True if intact else None, types=err_types) as r:
            m = fr.load(arg, compile=c.compile)
        if r.error:
            return
        # a model that loaded must run
        D = m.input_shape[-1] if m.input_shape and m.input_shape[-1] else 2
        with allowed("X", "lengths", "model", "input", "weight", "dtype", expect=True if intact else None) as r2:
            out = m.predict(np.zeros((2, 3, D), np.float32))
        if r2.error:
            raise AssertionError(f"a loaded model cannot predict | {type(r2.error).__name__}: {r2.error}")
        if intact:
            check(out.shape == (2, 1), "the reloaded real model predicts the wrong shape", f"{out.shape}")
            check_finite(out, "reloaded model's predict")
    finally:
        if os.path.exists(p):
            os.unlink(p)


# ============================================================================ lore.ESN
@st.composite
def esn_case(draw):
    D = draw(st.integers(1, 3))
    bad = fuzz_some(draw, ["input_size", "reservoir_size", "spectral_radius", "sparsity", "input_scaling",
                           "bias_scaling", "leak", "ridge", "washout", "seed", "dtype"], 2)
    v = lambda k: k not in bad    # noqa: E731
    kw = dict(
        input_size=Arg(D, repr(D), True) if v("input_size") else draw(int_arg((1, 3), huge_ok=False)),
        reservoir_size=draw(int_arg((1, 25), valid_only=v("reservoir_size"))),
        spectral_radius=draw(float_arg(0.0, None, lo_open=True, valid_only=v("spectral_radius"))),
        sparsity=draw(float_arg(0.0, 1.0, hi_open=True, valid_only=v("sparsity"))),
        input_scaling=draw(float_arg(0.0, None, valid_only=v("input_scaling"))),
        bias_scaling=draw(float_arg(0.0, None, valid_only=v("bias_scaling"))),
        leak=draw(float_arg(0.0, 1.0, lo_open=True, valid_only=v("leak"))),
        ridge=draw(float_arg(0.0, None, valid_only=v("ridge"))),
        washout=draw(int_arg((0, 3), huge_ok=False, valid_only=v("washout"))),
        seed=draw(st.sampled_from([NONE, Arg(0, "0", True), Arg(3, "3", True)] +
                                  ([Arg(-1, "-1", False), Arg(0.5, "0.5", False)] if "seed" in bad else []))),
        dtype=draw(dtype_arg(valid_only=v("dtype"))),
    )
    N, T = draw(st.integers(1, 3)), draw(st.integers(4, 12))
    single = draw(st.booleans())
    xshape = (T, D) if single else (N, T, D)
    X = draw(array_arg(xshape, "float64"))
    O = draw(st.integers(1, 2))
    Y = draw(array_arg(xshape[:-1] + (O,), "float64"))
    rv = kw["reservoir_size"]
    R = rv.value if rv.valid and isinstance(rv.value, int) else 8
    h0 = draw(st.one_of(st.just(NONE), array_arg((1 if single else N, R), "float64")))
    X2 = draw(array_arg(xshape, "float64"))
    h02 = draw(st.one_of(st.just(NONE), array_arg((1 if single else N, R), "float64")))
    return Case(kw=kw, X=X, Y=Y, h0=h0, X2=X2, h02=h02, single=single)


def _esn_h0_valid(h0, N, R):
    if h0.value is None:
        return True
    v = arr_valid(h0.value, (N, R), kinds="fiu", exact=False)
    if v is False and N == 1:
        v = arr_valid(h0.value, (R,), kinds="fiu", exact=False)
    if v is not False and finite_all(h0.value) is not True:
        v = None                                    # NaN state: NaN out, or an error naming h0
    return v


def _esn_x_valid(X, D):
    """(T, D) -- one sequence -- or (N, T, D), whatever shape fit() saw."""
    v = arr_valid(X.value, (None, None, D), kinds="fiu", exact=False)
    if v is False:
        v = arr_valid(X.value, (None, D), kinds="fiu", exact=False)
    if v is not False and X.tag.startswith("dtype:"):
        v = None
    if v is not False and finite_all(X.value) is not True:
        v = None                                    # documented: "X contains NaN or inf"
    return v


@fuzz_settings(120)
@given(c=esn_case())
@example(c=Case(kw={"input_size": Arg(1, "1", True), "reservoir_size": Arg(10, "10", True), "spectral_radius": Arg(float('inf'), "float('inf')", False), "sparsity": Arg(0.5, "0.5", True), "input_scaling": Arg(1.0, "1.0", True), "bias_scaling": Arg(0.0, "0.0", True), "leak": Arg(1.0, "1.0", True), "ridge": Arg(1e-06, "1e-06", True), "washout": Arg(2, "2", True), "seed": Arg(0, "0", True), "dtype": Arg(np.float64, "np.float64", True)},
                X=A("mk((2, 12, 1), 'float64')"), Y=A("mk((2, 12, 1), 'float64', seed=1)"), h0=NONE, X2=A("mk((2, 6, 1), 'float64', seed=2)"),
                h02=NONE, single=False))
@example(c=Case(kw={"input_size": Arg(1, "1", True), "reservoir_size": Arg(10, "10", True), "spectral_radius": Arg(0.9, "0.9", True), "sparsity": Arg(0.5, "0.5", True), "input_scaling": Arg(1.0, "1.0", True), "bias_scaling": Arg(0.0, "0.0", True), "leak": Arg(1.0, "1.0", True), "ridge": Arg(float('nan'), "float('nan')", False), "washout": Arg(2, "2", True), "seed": Arg(0, "0", True), "dtype": Arg(np.float64, "np.float64", True)},
                X=A("mk((2, 12, 1), 'float64')"), Y=A("mk((2, 12, 1), 'float64', seed=1)"), h0=NONE, X2=A("mk((2, 6, 1), 'float64', seed=2)"),
                h02=NONE, single=False))
@example(c=Case(kw={"input_size": Arg(1, "1", True), "reservoir_size": Arg(10, "10", True), "spectral_radius": Arg(0.9, "0.9", True), "sparsity": Arg(0.5, "0.5", True), "input_scaling": Arg(float('inf'), "float('inf')", False), "bias_scaling": Arg(0.0, "0.0", True), "leak": Arg(1.0, "1.0", True), "ridge": Arg(1e-06, "1e-06", True), "washout": Arg(2, "2", True), "seed": Arg(0, "0", True), "dtype": Arg(np.float64, "np.float64", True)},
                X=A("mk((2, 12, 1), 'float64')"), Y=A("mk((2, 12, 1), 'float64', seed=1)"), h0=NONE, X2=A("mk((2, 6, 1), 'float64', seed=2)"),
                h02=NONE, single=False))
@example(c=Case(kw={"input_size": Arg(1, "1", True), "reservoir_size": Arg(10, "10", True), "spectral_radius": Arg(0.9, "0.9", True), "sparsity": Arg(0.5, "0.5", True), "input_scaling": Arg(-1.0, "-1.0", False), "bias_scaling": Arg(0.0, "0.0", True), "leak": Arg(1.0, "1.0", True), "ridge": Arg(1e-06, "1e-06", True), "washout": Arg(2, "2", True), "seed": Arg(0, "0", True), "dtype": Arg(np.float64, "np.float64", True)},
                X=A("mk((2, 12, 1), 'float64')"), Y=A("mk((2, 12, 1), 'float64', seed=1)"), h0=NONE, X2=A("mk((2, 6, 1), 'float64', seed=2)"),
                h02=NONE, single=False))
@example(c=Case(kw={"input_size": Arg(1, "1", True), "reservoir_size": Arg(10, "10", True), "spectral_radius": Arg(0.9, "0.9", True), "sparsity": Arg(0.5, "0.5", True), "input_scaling": Arg(1.0, "1.0", True), "bias_scaling": Arg(0.0, "0.0", True), "leak": Arg(1.0, "1.0", True), "ridge": Arg(1e-06, "1e-06", True), "washout": Arg(2, "2", True), "seed": Arg(0, "0", True), "dtype": Arg(np.float64, "np.float64", True)},
                X=A("mk((2, 12, 1), 'float64')"), Y=A("mk((2, 12, 1), 'float64', seed=1)"), h0=NONE, X2=A("mk((2, 6, 1), 'float64', seed=2)"),
                h02=A("mk((3, 10), 'float64')", False), single=False))
@fuzz_case
def test_esn(c):
    """lore.ESN: constructor arguments, fit, predict (with h0): finite readout and predictions
    for finite data, the same predictions for strided and contiguous inputs."""
    kw = {k: a.value for k, a in c.kw.items()}
    cexp = combine(*[a.valid for a in c.kw.values()])
    sp = c.kw["sparsity"]
    if sp.valid and sp.value >= 0.9:
        cexp = combine(cexp, None)                  # documented: a nilpotent draw is refused
    with allowed(*kw, "data type", "seed", "reservoir", expect=cexp) as r:
        esn = fr.ESN(**kw)
    if r.error:
        return
    bad = [f"{k}={a!r}" for k, a in c.kw.items() if a.valid is False]
    check(cexp is not False, "ESN accepted an invalid argument", ", ".join(bad))
    D, R = esn.input_size, esn.reservoir_size
    xv = _esn_x_valid(c.X, D)
    xa = as_array(c.X.value)
    N = T = None
    single = False
    if xv is not False:
        single = xa.ndim == 2
        N, T = (1, xa.shape[0]) if single else xa.shape[:2]
    yv = None
    if xv is not False:
        yv = arr_valid(c.Y.value, (T, None) if single else (N, T, None), kinds="fiub", exact=False)
        if yv is False:
            yv = arr_valid(c.Y.value, (T,) if single else (N, T), kinds="fiub", exact=False)
        if yv is not False and finite_all(c.Y.value) is not True:
            yv = None
        if c.Y.tag.startswith("dtype:") and yv is not False:
            yv = None
    wv = True if T is None or esn.washout < T else False
    hv = _esn_h0_valid(c.h0, N, R) if N else None
    rv = None if esn.ridge < 1e-8 else True         # a (near-)zero ridge may leave the system singular
    if not moderate(c.X.value, c.Y.value, *([] if c.h0.value is None else [c.h0.value])):
        rv = None                                   # 1e30-sized features drown any ridge
    expect = combine(xv, yv, wv, hv, rv)
    with allowed("X", "Y", "washout", "h0", "ridge", expect=expect,
                 memory_ok=any(_huge(a.value) for a in (c.X, c.Y, c.h0))) as r:
        esn.fit(c.X.value, c.Y.value, h0=c.h0.value)
    if r.error:
        return
    check(expect is not False, "ESN.fit accepted invalid data", repr(c))
    mod_args = moderate(*[c.kw[k].value for k in ("spectral_radius", "input_scaling", "bias_scaling")])
    h0_ok = c.h0.value is None or moderate(c.h0.value)
    if mod_args and moderate(c.X.value, c.Y.value) and h0_ok and esn.ridge >= 1e-8:
        check(esn.W_out is not None and np.isfinite(esn.W_out).all(), "ESN readout is not finite after fit",
              f"{esn.W_out}")
    # predict with h0
    x2v = _esn_x_valid(c.X2, D)
    x2a = as_array(c.X2.value)
    N2 = None if x2v is False else (1 if x2a.ndim == 2 else x2a.shape[0])
    h2v = _esn_h0_valid(c.h02, N2, R) if N2 else None
    expect = combine(x2v, h2v)
    with allowed("X", "h0", expect=expect, memory_ok=any(_huge(a.value) for a in (c.X2, c.h02))) as r:
        out = esn.predict(c.X2.value, h0=c.h02.value)
    if r.error:
        return
    check(expect is not False, "ESN.predict accepted invalid data", repr(c))
    want = (x2a.shape[0], esn.output_size) if x2a.ndim == 2 else (x2a.shape[0], x2a.shape[1], esn.output_size)
    check(out.shape == want, "ESN.predict has the wrong shape", f"{out.shape} vs {want}")
    if np.isfinite(esn.W_out).all() and mod_args and moderate(c.X2.value) and \
            (c.h02.value is None or moderate(c.h02.value)):
        check_finite(out, "ESN.predict")
    h2a = as_array(c.h02.value)
    if c.h02.value is not None and h2a.dtype.kind == "f" and h2a.size < 2 ** 24 and np.isnan(h2a).any():
        check(np.isnan(out).any(), "NaN in h0 vanished from ESN.predict")
    X2 = np.ascontiguousarray(np.asarray(c.X2.value, np.float64))
    h2 = None if c.h02.value is None else np.ascontiguousarray(np.asarray(c.h02.value, np.float64))
    check_same(out, esn.predict(X2, h0=h2), "ESN.predict")


# ============================================================================ the CLI
def _cli_model():
    """A model file written by 'fastrnn train' (window 5, horizon 2), made once."""
    if "cli" not in _SAVED:
        from fastrnn import cli
        p = _tmp("cli.frnn")
        csvp = _tmp("cli-train.csv")
        with open(csvp, "w") as f:
            f.write("t,value\n" + "".join(f"{i},{np.sin(i / 3):.5f}\n" for i in range(80)))
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc = cli.main(["train", "--csv", csvp, "--window", "5", "--horizon", "2", "--hidden", "3",
                           "--epochs", "1", "-q", "--plot", "none", "-o", p])
        assert rc == 0, "could not make the CLI model"
        with open(p, "rb") as f:
            _SAVED["cli"] = f.read()
    return _SAVED["cli"]


_CELLS = ["1.5", "-2", "0", "nan", "inf", "-inf", "1e308", "1e400", "", " ", "abc", "1,234.5", "\"3\"",
          "0x10", "1_000", "２", "NaN", "+7", "1e-320"]


@st.composite
def csv_text(draw):
    """A CSV file: a header and rows of numbers, with odd cells, ragged rows, odd encodings."""
    ncol = draw(st.integers(1, 3))
    header = draw(st.lists(st.sampled_from(["value", "value", "value", "t", "Close", "", "a,b", "ü"]),
                           min_size=ncol, max_size=ncol))
    nrows = draw(st.sampled_from([60, 120, 120, 0, 1, 3, 8, 30]))
    seed = draw(st.integers(0, 999))
    rng = np.random.default_rng(seed)
    rows = []
    odd = draw(st.integers(0, 7))
    odd = 0 if odd > 3 else odd
    for i in range(nrows):
        row = [f"{v:.4f}" for v in np.sin(np.arange(ncol) + i / 4) + 0.1 * rng.standard_normal(ncol)]
        if odd and rng.random() < 0.1:
            row[rng.integers(ncol)] = _CELLS[rng.integers(len(_CELLS))]
        if odd == 3 and rng.random() < 0.05:
            row = row[:-1] if len(row) > 1 else row + ["9"]
        rows.append(",".join(row))
    text = ",".join(header) + "\n" + "\n".join(rows) + ("\n" if draw(st.booleans()) else "")
    enc = draw(st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "latin-1-junk", "nul"]))
    data = text.encode("utf-8-sig" if enc == "utf-8-sig" else "utf-8")
    if enc == "latin-1-junk":
        data = data.replace(b"value", b"valu\xe9")
    elif enc == "nul":
        data = data[: len(data) // 2] + b"\x00" + data[len(data) // 2:]
    return Arg(data, f"csv(header={header}, rows={nrows}, seed={seed}, odd={odd}, enc={enc!r})", None)


# option -> (valid values, invalid or extreme values); --epochs/--layers never get huge valid
# values (the run would just be long), --hidden gets an unallocatable one
_OPT_VALUES = {
    "--window": (["3", "5", "1"], ["0", "-1", "abc", "1.5", "2147483648", "99999999999999999999", ""]),
    "--horizon": (["1", "2"], ["0", "-3", "1000000", "x"]),
    "--hidden": (["2", "3"], ["0", "-1", "2147483648", "1e3"]),
    "--layers": (["1", "2"], ["0", "-1", "two"]),
    "--epochs": (["1", "2"], ["0", "-1", "1.0", "nan"]),
    "--batch-size": (["8", "64", "99999999999"], ["0", "-1"]),
    "--lr": (["0.01", "1e-3"], ["0", "-1", "nan", "inf", "1e308", "abc", "1e-320"]),
    "--test-fraction": (["0.2", "0.5"], ["0", "1", "nan", "-0.1", "1e-9", "0.999", "x"]),
    "--seed": (["0", "1"], ["-1", "18446744073709551616", "x"]),
    "--column": (["value"], ["t", "Close", "missing", "", "ü"]),
    "--model": (["lstm", "gru", "rnn"], ["transformer"]),
    "--data": (["sine", "gbm", "mackey-glass"], ["nope"]),
}


def _opt(draw, o, bad):
    good, worse = _OPT_VALUES[o]
    return draw(st.sampled_from(good + (worse if bad else [])))


@st.composite
def cli_case(draw):
    cmd = draw(st.sampled_from(["train"] * 4 + ["predict"] * 4 + ["demo", "junk"]))
    csv = draw(csv_text())
    opts = []
    if cmd == "train":
        src = draw(st.sampled_from(["csv", "csv", "csv", "data", "missing"]))
        if src == "csv":
            opts += ["--csv", "{CSV}"]
        elif src == "data":
            opts += ["--data", _opt(draw, "--data", draw(st.integers(0, 4)) == 0)]
        else:
            opts += ["--csv", "{MISSING}"]
        opts += ["--hidden", "2", "--epochs", "1", "--window", "4", "-q", "--plot", "none", "-o", "{OUT}"]
        chosen = draw(st.lists(st.sampled_from(["--window", "--horizon", "--hidden", "--layers", "--epochs",
                                                "--batch-size", "--lr", "--test-fraction", "--seed",
                                                "--column", "--model"]), max_size=3, unique=True))
        bad = fuzz_some(draw, chosen, 1)
        for o in chosen:
            opts += [o, _opt(draw, o, o in bad)]
        if draw(st.integers(0, 9)) == 7:
            opts += ["--plot", "{PNG}"]
    elif cmd == "predict":
        model = draw(st.sampled_from(["cli"] * 5 + ["real", "missing", "garbage", "truncated"]))
        opts += ["--model", "{" + model.upper() + "}", "--csv", "{CSV}"]
        chosen = draw(st.lists(st.sampled_from(["--window", "--column"]), max_size=2, unique=True))
        bad = fuzz_some(draw, chosen, 1)
        for o in chosen:
            opts += [o, _opt(draw, o, o in bad)]
        if draw(st.booleans()):
            opts += ["-o", "{OUT}"]
    elif cmd == "demo":
        opts += ["--epochs", draw(st.sampled_from(["1", "1", "0", "-1", "x"])), "--hidden",
                 draw(st.sampled_from(["2", "2", "0", "abc"]))]
    else:
        opts = [draw(st.sampled_from(["", "--help-me", "tran", "-x"]))]
    if draw(st.integers(0, 19)) == 7:          # (Hypothesis draws 0 far more often than 1 in 20)
        opts.insert(draw(st.integers(0, len(opts))), draw(st.sampled_from(["--bogus", "-q", "--", "--window"])))
    argv = ([] if cmd == "junk" else [cmd]) + opts
    return Case(argv=argv, csv=csv)


@fuzz_settings(60)
@given(c=cli_case())
@fuzz_case
def test_cli(c):
    """fastrnn train / predict / demo through cli.main(argv) in-process (FASTRNN_DEBUG=1, so
    an internal exception surfaces instead of the catch-all one-liner): exit 0 with a usable
    model / CSV, exit 1 with one line on stderr, argparse's exit 2, or an allowed exception
    naming an option or file."""
    from fastrnn import cli
    paths = {"CSV": _tmp("in.csv"), "MISSING": _tmp("missing/none.csv"), "OUT": _tmp("out.bin"),
             "PNG": _tmp("plot.png"), "CLI": _tmp("cli-model.frnn"), "REAL": _tmp("real-model.frnn"),
             "GARBAGE": _tmp("garbage.frnn"), "TRUNCATED": _tmp("trunc.frnn")}
    with open(paths["CSV"], "wb") as f:
        f.write(c.csv.value)
    with open(paths["CLI"], "wb") as f:
        f.write(_cli_model())
    with open(paths["REAL"], "wb") as f:
        f.write(_saved_model_bytes())
    with open(paths["GARBAGE"], "wb") as f:
        f.write(b"PK\x03\x04 definitely not a model")
    with open(paths["TRUNCATED"], "wb") as f:
        f.write(_cli_model()[:300])
    for k in ("OUT", "PNG"):
        if os.path.exists(paths[k]):
            os.unlink(paths[k])
    argv = [a.format(**paths) if "{" in a else a for a in c.argv]
    out, err = io.StringIO(), io.StringIO()
    old = os.environ.get("FASTRNN_DEBUG")
    os.environ["FASTRNN_DEBUG"] = "1"
    names = ["--" + o.lstrip("-") for o in argv if o.startswith("--")] + \
            [o.lstrip("-") for o in argv if o.startswith("--")] + list(paths.values()) + \
            [os.path.basename(p) for p in paths.values()] + ["column", "window", "csv", "model"]
    rc = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            with allowed(*names) as r:
                try:
                    rc = cli.main(argv)
                except SystemExit as e:
                    rc = e.code
    finally:
        if old is None:
            os.environ.pop("FASTRNN_DEBUG", None)
        else:
            os.environ["FASTRNN_DEBUG"] = old
    if r.error:
        return
    e = err.getvalue()
    note(f"rc={rc}: {e.strip().splitlines()[-1] if e.strip() else ''}")
    if rc == 2:
        check("error" in e or "usage" in e.lower() or not argv, "exit status 2 without a usage error",
              e[-300:])
        return
    if rc == 1:
        lines = [l for l in e.splitlines() if l.strip()]
        check(len(lines) >= 1 and lines[-1].startswith("fastrnn"), "exit status 1 without an error line",
              e[-300:])
        return
    check(rc == 0, "unexpected exit status", f"{rc!r}: {e[-300:]}")
    cmd = argv[0] if argv else ""
    if cmd == "train":
        m = fr.load(paths["OUT"])
        W = int(cli.read_cli_meta(paths["OUT"])["window"])
        pred = m.predict(np.zeros((1, W, 1), np.float32))
        check_finite(pred, "predict of a model trained by the CLI")
    elif cmd == "predict":
        text = open(paths["OUT"]).read() if "-o" in argv else out.getvalue()
        rows = [row for row in text.splitlines() if row]
        check(len(rows) >= 2 and rows[0].startswith("index,actual,pred_1"), "predict wrote no CSV forecasts",
              text[:200])
        for row in rows[1:]:
            vals = row.split(",")[2:]
            check(all(np.isfinite(float(v)) for v in vals), "predict wrote non-finite forecasts", row)
