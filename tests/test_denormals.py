"""Subnormal numbers: the kernels flush them to zero (a decaying state would otherwise run into
x86's microcode assists, ~100x slower per operation) and leave the caller's FP mode as it was."""
import numpy as np
import pytest

import fastrnn as fr
from fastrnn import _core

TINY32 = np.finfo(np.float32).tiny

pytestmark = pytest.mark.skipif(not _core.flushes_subnormals(), reason="no flush-to-zero switch here")


def _decaying(cls, dtype, **kw):
    m = cls(16, 32, seed=0, dtype=dtype, **kw)
    for k, v in m.parameters().items():
        if k.startswith("bias"):
            v[...] = 0                      # nothing lifts the pre-activations off the tiny inputs
    x = (np.random.default_rng(0).standard_normal((200, 2, 16)) * 1e-37).astype(dtype)
    return m, x


def _subnormals(a):
    a = np.abs(np.asarray(a))
    return int(np.sum((a > 0) & (a < np.finfo(a.dtype).tiny)))


@pytest.mark.parametrize("cls", [fr.RNN, fr.GRU, fr.LSTM])
def test_float32_states_never_hold_subnormals(cls):
    m, x = _decaying(cls, np.float32)
    y, _ = m(x)
    dx, _ = m.backward(np.full_like(y, 1e-30))
    assert _subnormals(y) == 0 and _subnormals(dx) == 0
    assert np.isfinite(y).all() and np.abs(y).max() < 1e-30          # tiny, as it should be
    # the check can fail: the same recurrence in NumPy keeps thousands of subnormals
    p = {k: v.astype(np.float32) for k, v in m.parameters().items()}
    h = np.zeros((2, 32), np.float32)
    seen = 0
    for t in range(x.shape[0]):
        if cls is fr.RNN:
            h = np.tanh(x[t] @ p["weight_ih_l0"].T + h @ p["weight_hh_l0"].T)
            seen += _subnormals(h)
    if cls is fr.RNN:
        assert seen > 100


def test_the_callers_floating_point_mode_is_restored():
    m, x = _decaying(fr.LSTM, np.float32)
    m(x)
    a = np.float32(TINY32) / np.float32(16)          # a subnormal in IEEE arithmetic
    assert 0 < a < TINY32
    assert np.float32(a) * np.float32(2) > 0          # not flushed by the thread's mode
