"""The multi-layer wavefront (layers._RNNBase._forward_wave, planned by csrc/plan.c's
fr_plan_wave_chunks) against the layer-by-layer schedule: the same results, forced both ways
through the plan knobs, on every cell kind, dtype, variant and awkward chunking."""
import numpy as np
import pytest

import fastrnn as fr
from fastrnn import _core, layers
from fastrnn._cells import CELLS
from tolerances import tolerance

# Layer by layer and the wavefront on the same row split (one range: the wavefront gives a
# layer its share of the threads, the layer loop all of them) and without the unit split (the
# wavefront runs the row loops).
SAME_SPLIT = dict(units=False, min_parallel_work=1 << 62)


@pytest.fixture
def plan_knobs():
    saved = _core.plan_knobs()
    threads = _core.get_pool_threads()
    _core.set_pool_threads(2)  # the layers' loops really run at once, whatever the machine
    yield _core.plan_knobs
    _core.plan_knobs(**saved)
    _core.set_pool_threads(threads)


class _Calls(list):
    """The chunk counts of the forwards that ran as a wavefront; .backward: of the backwards."""

    def __init__(self):
        super().__init__()
        self.backward = []

    def clear(self):
        super().clear()
        self.backward.clear()


@pytest.fixture
def waves(monkeypatch):
    """Counts the forwards and backwards that ran as a wavefront, so a test knows which
    schedule it got."""
    calls = _Calls()
    fwd, bwd = layers._RNNBase._forward_wave, layers._RNNBase._backward_wave

    def spy_forward(self, *args):
        calls.append(args[-2])  # the number of chunks
        return fwd(self, *args)

    def spy_backward(self, *args):
        calls.backward.append(args[-2])
        return bwd(self, *args)

    monkeypatch.setattr(layers._RNNBase, "_forward_wave", spy_forward)
    monkeypatch.setattr(layers._RNNBase, "_backward_wave", spy_backward)
    return calls


def _run(mode, L, T, B, D, H, dtype, train, hx=True, lengths=None, **kw):
    """Outputs, final states and (in training) every gradient of one forward + backward."""
    m = getattr(fr, mode)(D, H, num_layers=L, dtype=dtype, seed=3, **kw).train(train)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    h = None
    if hx:
        R = kw.get("proj_size") or H
        h = rng.standard_normal((L, B, R)).astype(dtype)
        if mode == "LSTM":
            h = (h, rng.standard_normal((L, B, H)).astype(dtype))
    y, st = m(x, h, lengths=lengths)
    out = {"y": y}
    out.update({f"state{i}": s for i, s in enumerate(st if isinstance(st, tuple) else (st,))})
    if train:
        dy = np.cos(np.arange(y.size, dtype=dtype)).reshape(y.shape)
        dx, dst = m.backward(dy)
        out["dx"] = dx
        out.update({f"dstate{i}": s for i, s in enumerate(dst if isinstance(dst, tuple) else (dst,))})
        out.update({"d" + k: v.copy() for k, v in m.grads.items()})
    return out


def _both(plan_knobs, waves, knobs, chunk, *args, **kw):
    plan_knobs(wave=False, **knobs)
    want = _run(*args, **kw)
    assert not waves and not waves.backward
    plan_knobs(wave=True, wave_chunk=chunk, **knobs)
    got = _run(*args, **kw)
    assert waves, "the forced wavefront did not run"
    train = args[7]  # _run(mode, L, T, B, D, H, dtype, train)
    # backward takes the forward's schedule and chunks
    assert waves.backward == (waves if train else []), "the backward did not follow the forward's wavefront"
    return want, got


# What a chunked loop gives bit for bit: outputs, states and the gradients that flow through
# the loops (x's and the initial states'). The parameter gradients are sums over the time steps,
# which the wavefront adds chunk by chunk (the weight-gradient GEMMs over each chunk's steps, the
# loops' bias, peephole and layer-norm shares), another order of the same additions.
EXACT = ("y", "state0", "state1", "dx", "dstate0", "dstate1")


def _assert_same(want, got, exact, dtype):
    assert want.keys() == got.keys()
    for k in want:
        if exact and k in EXACT:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        else:
            np.testing.assert_allclose(got[k], want[k], err_msg=k,
                                       **tolerance(dtype, "forward" if k in ("y", "state0", "state1") else "grad"))


# T, B, chunk steps: T not a multiple of the chunk, T shorter than one chunk, a batch of one
SHAPES = [(37, 3, 7), (23, 1, 6), (5, 2, 8), (9, 1, 1)]


@pytest.mark.parametrize("mode", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("L", [2, 3])
@pytest.mark.parametrize("train", [False, True])
def test_fused_wavefront_equals_layer_by_layer_exactly(plan_knobs, waves, mode, dtype, L, train):
    # With the projection in the forward loop and dx in the reverse loop, a chunk is the whole
    # loop cut at a step: the same products and rows in the same order, so the same bits (EXACT;
    # the parameter gradients to rounding).
    for T, B, chunk in SHAPES:
        waves.clear()
        want, got = _both(plan_knobs, waves, dict(SAME_SPLIT, fused=True, dx_in_loop=True), chunk, mode, L, T, B, 4,
                          9, dtype, train)
        _assert_same(want, got, True, dtype)


@pytest.mark.parametrize("mode", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hoisted_wavefront_equals_layer_by_layer(plan_knobs, waves, mode, dtype):
    # The wavefront projects an upper layer's input a chunk at a time, one GEMM of the chunk's
    # rows instead of all T*B, and backward an upper layer's dx likewise (in the round between
    # its loop and the lower layer's): BLAS may sum a small product in another order (OpenBLAS's
    # small-matrix kernels), so equal to rounding, not to the bit.
    for T, B, chunk in SHAPES:
        waves.clear()
        want, got = _both(plan_knobs, waves, dict(SAME_SPLIT, fused=False, dx_in_loop=False), chunk, mode, 3, T, B,
                          5, 8, dtype, True)
        _assert_same(want, got, False, dtype)


VARIANTS = [
    ("LSTM", dict(recurrent_dropout=0.3)), ("GRU", dict(recurrent_dropout=0.3)),
    ("LSTM", dict(zoneout=0.2)), ("GRU", dict(zoneout=0.2)), ("RNN", dict(zoneout=0.2)),
    ("LSTM", dict(weight_dropout=0.3)), ("LSTM", dict(peepholes=True)),
    ("LSTM", dict(layer_norm=True)), ("GRU", dict(layer_norm=True)),
    ("LSTM", dict(proj_size=5, recurrent_dropout=0.2)), ("GRU", dict(dropout=0.4)),
    ("LSTM", dict(dropout=0.4, zoneout=0.1)),
]


@pytest.mark.parametrize("mode,kw", VARIANTS, ids=[f"{m}-{'-'.join(k)}" for m, k in VARIANTS])
@pytest.mark.parametrize("train", [False, True])
def test_variants_run_in_the_wavefront(plan_knobs, waves, mode, kw, train):
    # Masks are per layer and direction, (B,H) or (T,B,H) with time leading: a chunk takes its
    # slice. Inter-layer dropout multiplies each chunk of a layer's output before the next
    # layer reads it. Training draws every mask in the layer loop's order.
    for T, B, chunk in SHAPES[:3]:
        waves.clear()
        want, got = _both(plan_knobs, waves, dict(SAME_SPLIT, fused=True, dx_in_loop=True), chunk, mode, 2, T, B,
                          4, 9, np.float32, train, **kw)
        _assert_same(want, got, True, np.float32)


def test_chunks_keep_at_least_four_steps():
    # a chunk of fewer steps would skip packing its weights, and round differently
    saved = _core.plan_knobs()
    try:
        for T, chunk, want in [(37, 1, 9), (37, 7, 6), (5, 8, 1), (3, 1, 1), (8, 1, 2), (100, 30, 4),
                               (100, 2**63 - 1, 1)]:
            _core.plan_knobs(wave=True, wave_chunk=chunk)
            assert _core.plan_wave(CELLS["LSTM"].code, T, 1, 4, 8, 2, 1, False)[0] == want, (T, chunk)
    finally:
        _core.plan_knobs(**saved)


def test_the_plan_keeps_layer_by_layer_where_the_wavefront_does_not_pay(plan_knobs):
    lstm = CELLS["LSTM"].code
    wave = _core.plan_wave
    # a batch of one with variants, or too small for the unit split: each layer on one thread
    assert wave(lstm, 1000, 1, 16, 128, 2, 1, False, True)[0] >= 2
    assert wave(lstm, 4000, 1, 16, 32, 2, 1, False)[0] >= 2
    # the unit split already keeps both threads busy
    assert wave(lstm, 1000, 1, 16, 128, 2, 1, False)[0] == 0
    # one layer, two directions, ragged lengths, rows that fill the threads, one thread
    assert wave(lstm, 1000, 1, 16, 128, 1, 1, False, True)[0] == 0
    assert wave(lstm, 1000, 1, 16, 128, 2, 2, False, True)[0] == 0
    assert wave(lstm, 1000, 1, 16, 128, 2, 1, True, True)[0] == 0
    assert wave(lstm, 1000, 64, 16, 128, 2, 1, False, True)[0] == 0
    # too short to pay for a round's hand-off
    assert wave(lstm, 8, 1, 16, 128, 2, 1, False, True)[0] == 0
    _core.set_pool_threads(1)
    assert wave(lstm, 1000, 1, 16, 128, 2, 1, False, True)[0] == 0
    # forced off
    _core.set_pool_threads(2)
    plan_knobs(wave=False)
    assert wave(lstm, 1000, 1, 16, 128, 2, 1, False, True)[0] == 0


def test_the_layer_picks_the_wavefront_from_the_plan(plan_knobs, waves):
    m = fr.LSTM(16, 128, num_layers=2, zoneout=0.1).eval()
    x = np.random.default_rng(0).standard_normal((200, 1, 16)).astype(np.float32)
    m(x)
    assert waves and waves[0] >= 2
    waves.clear()
    fr.LSTM(16, 128, num_layers=2).eval()(x)  # the unit split instead
    assert not waves
    # training: the backward follows, in its own number of chunks
    m.train()
    y, _ = m(x)
    m.backward(np.ones_like(y))
    assert waves and waves.backward == [_core.plan_wave_backward(m._cell, 200, 1, 16, 128, 2, 1)]
    waves.clear()
    m = fr.LSTM(16, 128, num_layers=2)  # the unit split, both ways
    y, _ = m(x)
    m.backward(np.ones_like(y))
    assert not waves and not waves.backward


def test_the_backwards_chunks(plan_knobs):
    lstm, gru = CELLS["LSTM"].code, CELLS["GRU"].code
    back = _core.plan_wave_backward
    for cell, H, T in [(lstm, 128, 1000), (gru, 128, 4000), (lstm, 48, 4000)]:
        # a backward round does more beside its loops than a forward one (the chunk's
        # weight-gradient GEMM, two weights packed), and fills its pipeline in half the rounds:
        # fewer chunks, still enough for a wavefront
        fwd = _core.plan_wave(cell, T, 1, 16, H, 2, 1, False, True)[0]
        assert 2 <= back(cell, T, 1, 16, H, 2, 1) < fwd
        # a longer fill (more layers, dx by GEMM) pays for more chunks
        assert back(cell, T, 1, 16, H, 3, 4) > back(cell, T, 1, 16, H, 2, 1)
    # too short to pay for a round; one layer
    assert back(lstm, 8, 1, 16, 128, 2, 1) == 0
    assert back(lstm, 1000, 1, 16, 128, 1, 1) == 0
    # chunks of at least four steps, and the test override as the forward's
    assert back(lstm, 1 << 30, 1, 16, 1024, 2, 1) <= (1 << 30) // 4
    plan_knobs(wave=True, wave_chunk=7)
    assert back(lstm, 37, 1, 4, 8, 2, 1) == _core.plan_wave(lstm, 37, 1, 4, 8, 2, 1, False)[0] == 6
    with pytest.raises(ValueError, match="the time steps T"):
        back(lstm, 2**31, 1, 16, 128, 2, 1)


def test_ragged_batches_run_layer_by_layer(plan_knobs, waves):
    plan_knobs(wave=True, wave_chunk=4)
    lengths = np.array([9, 4, 7])
    got = _run("GRU", 2, 9, 3, 4, 6, np.float32, True, lengths=lengths)
    assert not waves
    plan_knobs(wave=False)
    want = _run("GRU", 2, 9, 3, 4, 6, np.float32, True, lengths=lengths)
    _assert_same(want, got, True, np.float32)


def test_a_unit_split_backward_reads_the_wavefronts_saved_buffers(plan_knobs, waves):
    # A batch of one trains backward by units where the plan splits it, whichever schedule ran
    # forward: the row loops and the unit tasks save act, [x | hprev] and aux alike.
    plan_knobs(units=True, unit_min_work=0, wave=True, wave_chunk=8)
    got = _run("LSTM", 2, 30, 1, 4, 32, np.float32, True)
    assert waves
    plan_knobs(units=False, wave=False)
    want = _run("LSTM", 2, 30, 1, 4, 32, np.float32, True)
    _assert_same(want, got, False, np.float32)


def _run_state_grads(mode, kw, with_dy):
    """dx, the initial states' gradients and state_grads of a 3-layer stack given the final
    states' gradients (and dy, or None)."""
    T, B, D, H, L = 17, 2, 4, 6, 3
    m = getattr(fr, mode)(D, H, num_layers=L, seed=3, **kw)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    y, _ = m(x)
    R = kw.get("proj_size") or H
    dstate = rng.standard_normal((L, B, R)).astype(np.float32)
    if mode == "LSTM":
        dstate = (dstate, rng.standard_normal((L, B, H)).astype(np.float32))
    dy = rng.standard_normal(y.shape).astype(np.float32) if with_dy else None
    dx, dst = m.backward(dy, dstate, state_grads=True)
    out = {"dx": dx}
    out.update({f"dstate{i}": s for i, s in enumerate(dst if isinstance(dst, tuple) else (dst,))})
    out.update({f"state_grads{k}": s for k, s in enumerate(m.state_grads)})
    out.update({"d" + k: v.copy() for k, v in m.grads.items()})
    return out


@pytest.mark.parametrize("in_loop", [True, False])
@pytest.mark.parametrize("mode,kw", [("LSTM", dict(dropout=0.3)), ("GRU", {}), ("LSTM", dict(proj_size=4))],
                         ids=["LSTM-dropout", "GRU", "LSTM-proj"])
def test_the_wavefront_backward_takes_state_gradients_and_gives_state_grads(plan_knobs, waves, in_loop, mode, kw):
    # dL/dh_t of every step (state_grads) comes out of each chunk's loop; the final states'
    # gradients enter each layer's last chunk, and dy may be None (a loss on the states only).
    # dx made in the loops (lag 1) or by a GEMM in the round between (lag 2).
    knobs = dict(SAME_SPLIT, fused=in_loop, dx_in_loop=in_loop)
    for with_dy in (True, False):
        waves.clear()
        plan_knobs(wave=False, **knobs)
        want = _run_state_grads(mode, kw, with_dy)
        plan_knobs(wave=True, wave_chunk=5, **knobs)
        got = _run_state_grads(mode, kw, with_dy)
        assert waves == [4] and waves.backward == [4]
        assert want.keys() == got.keys()
        for k in want:
            if in_loop and not k.startswith("dweight") and not k.startswith("dbias"):
                np.testing.assert_array_equal(got[k], want[k], err_msg=k)
            else:
                np.testing.assert_allclose(got[k], want[k], err_msg=k, **tolerance(np.float32, "grad"))


FD_CASES = [("LSTM", 2, {}), ("GRU", 3, {}), ("RNN_TANH", 2, {}), ("LSTM", 2, dict(zoneout=0.3, dropout=0.4)),
            ("GRU", 2, dict(recurrent_dropout=0.3, dropout=0.4)), ("LSTM", 2, dict(weight_dropout=0.3, peepholes=True)),
            ("LSTM", 2, dict(layer_norm=True)), ("GRU", 2, dict(layer_norm=True, zoneout=0.2))]


@pytest.mark.parametrize("in_loop", [True, False])
@pytest.mark.parametrize("mode,L,kw", FD_CASES, ids=[f"{m}-L{L}-{'-'.join(k)}" for m, L, k in FD_CASES])
def test_wavefront_gradients_match_finite_differences(plan_knobs, waves, in_loop, mode, L, kw):
    # float64, every gradient (x, h0, c0, every parameter) against central differences, the
    # masks held fixed; T = 13 in three chunks of 4-5 steps
    from test_variants import build, fd_check
    plan_knobs(**dict(SAME_SPLIT, wave=True, wave_chunk=4, fused=in_loop, dx_in_loop=in_loop))
    cfg = (13, 2, 3, 3, L, False, None, True)
    fd_check(build(mode, 3, 3, L, **kw), mode, cfg, f"wavefront {mode} {kw}")
    assert waves.backward and set(waves.backward) == {3}


def test_the_wavefront_backward_splits_each_chunk_by_rows(plan_knobs, waves):
    # four threads for two layers: each layer's chunks in two row ranges, each range's loop with
    # its share of the bias and layer-norm gradients (layer by layer splits in four: ranges of
    # another number of rows take another product kernel, equal to rounding)
    _core.set_pool_threads(4)
    knobs = dict(units=False, min_parallel_work=0, fused=True, dx_in_loop=True)
    plan_knobs(wave=True, **knobs)
    assert _core.plan_wave(CELLS["GRU"].code, 21, 5, 4, 9, 2, 1, False)[1] == 2
    for mode, kw in [("GRU", dict(layer_norm=True)), ("LSTM", dict(recurrent_dropout=0.2, dropout=0.3))]:
        waves.clear()
        want, got = _both(plan_knobs, waves, knobs, 5, mode, 2, 21, 5, 4, 9, np.float32, True, **kw)
        _assert_same(want, got, False, np.float32)
