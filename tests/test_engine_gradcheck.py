"""Finite-difference checks of every gradient the C engine produces (float64).

The loss is L = <y, gy> + <h_n, gh> (+ <c_n, gc>) with random cotangents, so one backward call
with (gy, gh, gc) must equal the central difference of L for every element of x, h0, c0 and
of every parameter.
"""
import numpy as np
import pytest

import fastrnn as fr
from fd import numeric_grad

CLASSES = {"RNN_TANH": (fr.RNN, {"nonlinearity": "tanh"}), "RNN_RELU": (fr.RNN, {"nonlinearity": "relu"}),
           "LSTM": (fr.LSTM, {}), "GRU": (fr.GRU, {})}

# (T, B, D, H, num_layers, bidirectional, lengths, bias)
CONFIGS = [
    (1, 1, 1, 1, 1, False, None, True),
    (3, 2, 2, 3, 1, False, None, True),
    (4, 3, 2, 3, 1, True, [4, 1, 3], True),
    (4, 3, 3, 2, 2, True, [2, 4, 3], True),
    (3, 2, 1, 2, 2, False, [3, 1], False),
    (2, 1, 2, 1, 1, True, None, True),
]
EPS = 1e-6


def build(mode, D, H, L, bi, bias, seed=0, **extra):
    cls, kw = CLASSES[mode]
    return cls(D, H, num_layers=L, bidirectional=bi, bias=bias, dtype=np.float64, seed=seed, **kw, **extra)


def run(m, x, h0, c0, lengths):
    if isinstance(m, fr.LSTM):
        y, (h, c) = m(x, (h0, c0), lengths=lengths)
        return y, h, c
    y, h = m(x, h0, lengths=lengths)
    return y, h, None


def loss(m, x, h0, c0, lengths, cot):
    y, h, c = run(m, x, h0, c0, lengths)
    total = np.sum(y * cot[0]) + np.sum(h * cot[1])
    return total + (np.sum(c * cot[2]) if c is not None else 0.0)


def relu_safe_inputs(rng, shape):
    # Keep ReLU pre-activations away from the kink by using inputs of one sign and magnitude
    # larger than EPS effects; a kink within EPS would make the central difference meaningless.
    return rng.uniform(0.2, 1.0, size=shape)


CFG_IDS = dict(ids=lambda c: f"T{c[0]}B{c[1]}D{c[2]}H{c[3]}L{c[4]}{'bi' if c[5] else ''}"
               f"{'ragged' if c[6] else ''}{'' if c[7] else 'nobias'}")


@pytest.mark.parametrize("mode", list(CLASSES))
@pytest.mark.parametrize("cfg", CONFIGS, **CFG_IDS)
def test_gradients_match_finite_differences(mode, cfg):
    check_layer_gradients(mode, cfg)


@pytest.mark.parametrize("mode", ["RNN_TANH", "RNN_RELU"])
@pytest.mark.parametrize("cfg", CONFIGS[1:5], **CFG_IDS)
def test_leaky_rnn_gradients_match_finite_differences(mode, cfg):
    check_layer_gradients(mode, cfg, leak=0.6)


def check_layer_gradients(mode, cfg, **extra):
    T, B, D, H, L, bi, lengths, bias = cfg
    rng = np.random.default_rng(42)
    m = build(mode, D, H, L, bi, bias, **extra)
    dirs = 2 if bi else 1
    S = (L * dirs, B, H)
    x = relu_safe_inputs(rng, (T, B, D)) if mode == "RNN_RELU" else rng.standard_normal((T, B, D))
    h0 = rng.uniform(0.1, 0.5, S) if mode == "RNN_RELU" else rng.standard_normal(S) * 0.5
    c0 = rng.standard_normal(S) * 0.5 if mode == "LSTM" else None
    lengths = None if lengths is None else np.array(lengths)
    cot = (rng.standard_normal((T, B, dirs * H)), rng.standard_normal(S), rng.standard_normal(S))
    if lengths is not None:
        # cotangents on padding must not matter: make them large so a leak would show
        cot[0][np.arange(T)[:, None] >= lengths[None, :]] = 1e3

    m.zero_grad()
    run(m, x, h0, c0, lengths)
    if mode == "LSTM":
        dx, (dh0, dc0) = m.backward(cot[0], (cot[1], cot[2]))
    else:
        dx, dh0 = m.backward(cot[0], cot[1])

    f = lambda: loss(m, x, h0, c0, lengths, cot)  # noqa: E731
    checks = [("x", dx, x), ("h0", dh0, h0)]
    if mode == "LSTM":
        checks.append(("c0", dc0, c0))
    params = m.parameters()
    checks += [(k, m.grads[k], params[k]) for k in params]
    for name, analytic, arr in checks:
        numeric = numeric_grad(f, arr, EPS)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=f"{mode} d{name}")


@pytest.mark.parametrize("mode", list(CLASSES))
def test_cell_gradients_match_finite_differences(mode):
    cls = {"RNN_TANH": fr.RNNCell, "RNN_RELU": fr.RNNCell, "LSTM": fr.LSTMCell, "GRU": fr.GRUCell}[mode]
    kw = {"nonlinearity": "relu"} if mode == "RNN_RELU" else {}
    cell = cls(3, 4, dtype=np.float64, seed=3, **kw)
    rng = np.random.default_rng(0)
    x = [relu_safe_inputs(rng, (2, 3)) if mode == "RNN_RELU" else rng.standard_normal((2, 3)) for _ in range(3)]
    h0 = rng.uniform(0.1, 0.5, (2, 4))
    c0 = rng.standard_normal((2, 4)) if mode == "LSTM" else None
    gh, gc = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))

    def unroll():
        h, c = h0, c0
        for xt in x:  # three steps through the Python-level loop: BPTT via the cell tape
            if mode == "LSTM":
                h, c = cell(xt, (h, c))
            else:
                h = cell(xt, h)
        return h, c

    def f():
        h, c = unroll()
        return np.sum(h * gh) + (np.sum(c * gc) if c is not None else 0.0)

    cell.zero_grad()
    unroll()
    dh, dc = gh, gc
    dxs = []
    for _ in x:
        if mode == "LSTM":
            dxt, (dh, dc) = cell.backward((dh, dc))
        else:
            dxt, dh = cell.backward(dh)
        dxs.append(dxt)
    dxs.reverse()
    cell.eval()  # numeric evaluations must not grow the tape
    for t, xt in enumerate(x):
        np.testing.assert_allclose(dxs[t], numeric_grad(f, xt, EPS), rtol=1e-6, atol=1e-8, err_msg=f"dx[{t}]")
    np.testing.assert_allclose(dh, numeric_grad(f, h0, EPS), rtol=1e-6, atol=1e-8, err_msg="dh0")
    if mode == "LSTM":
        np.testing.assert_allclose(dc, numeric_grad(f, c0, EPS), rtol=1e-6, atol=1e-8, err_msg="dc0")
    for k, p in cell.parameters().items():
        np.testing.assert_allclose(cell.grads[k], numeric_grad(f, p, EPS), rtol=1e-6, atol=1e-8, err_msg=k)


@pytest.mark.parametrize("mode,extra", [("LSTM", {}), ("GRU", {}), ("RNN_TANH", {"leak": 0.5})])
def test_state_grads_equal_the_initial_state_gradient_of_the_remaining_sequence(mode, extra):
    """dL/dh_t from state_grads=True must equal dy_t plus dh0 of a run that starts at h_t and
    reads x[t+1:] (dh0 itself is finite-difference checked above)."""
    rng = np.random.default_rng(1)
    T, B, D, H = 6, 2, 3, 4
    m = build(mode, D, H, 1, False, True, **extra)
    x, dy, dh_n = rng.standard_normal((T, B, D)), rng.standard_normal((T, B, H)), rng.standard_normal((1, B, H))
    dc_n = rng.standard_normal((1, B, H))
    lstm = mode == "LSTM"
    states = []  # (h_t, c_t) after each step, from T runs of growing length
    for t in range(1, T):
        _, st = m(x[:t])
        states.append(st)
    m(x)
    m.backward(dy, (dh_n, dc_n) if lstm else dh_n, state_grads=True)
    (dhs,) = m.state_grads
    np.testing.assert_allclose(dhs[T - 1], dy[T - 1] + dh_n[0], rtol=1e-13)
    for t in range(T - 1):
        m(x[t + 1:], states[t])
        _, dstate0 = m.backward(dy[t + 1:], (dh_n, dc_n) if lstm else dh_n)
        dh0 = dstate0[0] if lstm else dstate0
        np.testing.assert_allclose(dhs[t], dy[t] + dh0[0], rtol=1e-12, atol=1e-14, err_msg=f"t={t}")
