"""The engine under pressure: dimensions past the 32-bit BLAS interface, NaN and Inf in every
code path, and the worker pool under threads and fork (the issue "trustworthy under threads, bad
input and faults").

Huge shapes cost no memory here: zero-stride views (np.broadcast_to) for the checks that come
before any data is read, and C-contiguous arrays over MAP_NORESERVE anonymous mappings (only the
pages a kernel touches are ever backed) where a kernel must really run on them.
"""
import mmap
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import _core
from fastrnn import reference as ref
from tolerances import tolerance

INT_MAX = 2**31 - 1
KINDS = {"RNN_TANH": _core.RNN_TANH, "RNN_RELU": _core.RNN_RELU, "LSTM": _core.LSTM, "GRU": _core.GRU}
GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


@pytest.fixture
def plan_knobs():
    """Sets csrc/plan.c's overrides and thresholds for one test, restoring them afterwards."""
    saved = _core.plan_knobs()
    yield _core.plan_knobs
    _core.plan_knobs(**saved)


@pytest.fixture
def threads():
    """Sets the pool's thread count for one test, restoring it afterwards."""
    before = fr.get_num_threads()
    yield fr.set_num_threads
    fr.set_num_threads(before)


# ---- integer widths: dimensions beyond INT_MAX ----------------------------------------------------

def virtual(shape, dtype=np.float32):
    """A zero-filled C-contiguous array of any size backed by an anonymous MAP_NORESERVE mapping:
    no memory is committed until a page is written, so 16 GB arrays cost what a kernel touches."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0x4000)
    try:
        buf = mmap.mmap(-1, n, flags=flags)
    except (OSError, ValueError, OverflowError) as e:
        pytest.skip(f"cannot map {n} bytes of address space: {e}")
    a = np.frombuffer(buf, dtype=dtype).reshape(shape)
    assert a.flags.c_contiguous and a.flags.writeable
    return a


def limit(what):
    return rf"{what} is \d+, more than {INT_MAX} \(2\*\*31 - 1\), the largest dimension"


def test_check_dim_names_the_argument_and_the_limit():
    assert _core.MAX_DIM == INT_MAX
    assert _core.check_dim("w_ih's columns D", INT_MAX) == INT_MAX
    with pytest.raises(ValueError, match=limit("w_ih's columns D") + ".*scipy-openblas32"):
        _core.check_dim("w_ih's columns D", INT_MAX + 1)


@pytest.mark.parametrize("mode", list(KINDS))
@pytest.mark.parametrize("train", [False, True])
def test_cell_step_refuses_a_batch_beyond_int_max(mode, train):
    """A batch of 2**31 rows (a zero-stride view) used to wrap around to a negative int and report
    "all dimensions must be >= 1"; it must name x's batch size and the limit instead."""
    D, H, G = 3, 4, GATES[mode]
    x = np.broadcast_to(np.zeros((1, D), np.float32), (2**31, D))
    h = np.broadcast_to(np.zeros((1, H), np.float32), (2**31, H))
    w_ih, w_hh = np.zeros((G * H, D), np.float32), np.zeros((G * H, H), np.float32)
    with pytest.raises(ValueError, match=limit("x's batch size B")):
        _core.cell_step(KINDS[mode], x, h, h if mode == "LSTM" else None, w_ih, w_hh, None, None, train)
    # the dimensions of the weights too: D and G*H are BLAS dimensions of the step's products
    x1 = np.zeros((1, 1), np.float32)  # D is read from w_ih and checked before x's shape
    wide = np.broadcast_to(np.zeros((1, 1), np.float32), (G * H, 2**31))
    with pytest.raises(ValueError, match=limit("w_ih's columns D")):
        _core.cell_step(KINDS[mode], x1, h[:1], h[:1] if mode == "LSTM" else None, wide, w_hh, None, None, train)


def test_projection_refuses_more_than_int_max_rows():
    """project() is one GEMM over all T*B rows: T*B = 2**31 was passed to BLAS as a negative M
    (OpenBLAS printed an error and left act unwritten, no exception)."""
    T, B = 2**16, 2**15
    x = virtual((T, B, 1))
    act = virtual((T, B, 2))
    w = np.ones((2, 1), np.float32)
    with pytest.raises(ValueError, match=limit("x's rows T\\*B")):
        _core.project(_core.RNN_TANH, x, w, act)
    with pytest.raises(ValueError, match=limit("x's rows T\\*B")):  # the layer's one-call form
        _core.forward(_core.RNN_TANH, x, np.zeros((B, 2), np.float32), None, w,
                      np.zeros((2, 2), np.float32), None, None, train=False)
    # one row less is accepted by the check (and would run: its GEMM dimensions fit an int)
    assert _core.check_dim("x's rows T*B", T * B - 1) == T * B - 1


def test_weight_gradients_refuse_more_than_int_max_rows():
    """backward_params' weight-gradient GEMMs have inner dimension T*B, which was cast to int."""
    T, B, H = 2**16, 2**15, 1
    x, dgx = virtual((T, B, 1)), virtual((T, B, H))
    hprev = virtual((T, B, H))
    dw_ih, dw_hh = np.zeros((H, 1), np.float32), np.zeros((H, H), np.float32)
    with pytest.raises(ValueError, match=limit("x's rows T\\*B")):
        _core.backward_params(_core.RNN_TANH, 0, H, 0, 0, x, np.ones((H, 1), np.float32), hprev, dgx,
                              None, None, False, dw_ih, dw_hh, None, None)
    assert not dw_ih.any() and not dw_hh.any()


def test_entry_points_refuse_wide_dimensions_with_value_errors():
    """Arguments that used to overflow a C int on conversion (OverflowError) or in a product."""
    big = np.broadcast_to(np.zeros((1, 1, 1), np.float32), (1, 1, 2**31))
    with pytest.raises(ValueError, match=limit(r"y's last dimension \(its leading dimension\)")):
        _core.recur(_core.RNN_TANH, 0, 1, False, None, np.zeros((1, 1), np.float32), None,
                    np.zeros((1, 1), np.float32), None, None, big, 0, np.zeros((1, 1), np.float32),
                    None, np.zeros((1, 1, 1), np.float32), None, None)
    with pytest.raises(ValueError, match=limit("the batch size B")):
        _core.plan_row_ranges(_core.LSTM, 1, 2**31, 8, 1)
    with pytest.raises(ValueError, match=limit(r"the hidden size H times 4 gates \(G\*H\)")):
        _core.fused_pays(_core.LSTM, np.float32, 1, 1, 1, 2**29)
    # work estimates are Python ints of any size (layers multiply four dimensions)
    assert _core.plan_parts(2**80, 2**70) >= 1


def test_time_loops_address_rows_beyond_2_to_the_31_elements():
    """Offsets into (T,B,.) buffers are products of dimensions: with T*B*G*H > 2**32 the last rows
    of a batch sit past every 32-bit offset. The forward and backward loops over those rows must
    equal the same rows computed alone."""
    T, B, D, H = 2, 2**27, 3, 4   # LSTM: act is (2, 2**27, 16), 2**32 elements
    G = 4
    b0, b1 = B - 3, B
    rng = np.random.default_rng(0)
    w_ih = rng.standard_normal((G * H, D)).astype(np.float32)
    w_hh = rng.standard_normal((G * H, H)).astype(np.float32)
    b_ih, b_hh = (rng.standard_normal(G * H).astype(np.float32) for _ in range(2))
    rows = {k: rng.standard_normal(s).astype(np.float32)
            for k, s in (("x", (T, 3, D)), ("h0", (3, H)), ("c0", (3, H)), ("dy", (T, 3, H)))}
    x, y, act = virtual((T, B, D)), virtual((T, B, H)), virtual((T, B, G * H))
    hprev, aux = virtual((T, B, H)), virtual((T, B, 2 * H))
    h0, c0, h_n, c_n = (virtual((B, H)) for _ in range(4))
    x[:, b0:b1], h0[b0:b1], c0[b0:b1] = rows["x"], rows["h0"], rows["c0"]
    for fused in (False, True):
        if not fused:
            act[:, b0:b1] = np.einsum("tbd,gd->tbg", rows["x"], w_ih)
        _core.recur(_core.LSTM, b0, b1, False, None, h0, c0, w_hh, b_ih, b_hh, y, 0, h_n, c_n, act,
                    hprev, aux, x=x if fused else None, w_ih=w_ih if fused else None)
        want_y, want_h, want_c, saved = _core.forward(_core.LSTM, rows["x"], rows["h0"], rows["c0"],
                                                      w_ih, w_hh, b_ih, b_hh)
        close(y[:, b0:b1], want_y, np.float32, "forward", "y")
        close(h_n[b0:b1], want_h, np.float32, "forward", "h_n")
        close(c_n[b0:b1], want_c, np.float32, "forward", "c_n")
    dy, dgx = virtual((T, B, H)), virtual((T, B, G * H))
    dh0, dc0 = virtual((B, H)), virtual((B, H))
    dy[:, b0:b1] = rows["dy"]
    _core.recur_backward(_core.LSTM, b0, b1, False, None, w_hh, act, hprev, aux, dy, 0, None, None,
                         dh0, dc0, dgx, None)
    want_dgx = np.empty((T, 3, G * H), np.float32)
    want_dh0, want_dc0 = np.empty((3, H), np.float32), np.empty((3, H), np.float32)
    _core.recur_backward(_core.LSTM, 0, 3, False, None, w_hh, *saved, rows["dy"], 0, None, None,
                         want_dh0, want_dc0, want_dgx, None)
    close(dgx[:, b0:b1], want_dgx, np.float32, "grad", "dgx")
    close(dh0[b0:b1], want_dh0, np.float32, "grad", "dh0")
    close(dc0[b0:b1], want_dc0, np.float32, "grad", "dc0")


def close(got, want, dtype, kind, what):
    tol = tolerance(dtype, kind)
    err = np.max(np.abs(got - want)) if got.size else 0.0
    assert np.allclose(got, want, **tol), f"{what}: max abs err {err:.3g} exceeds {tol}"
