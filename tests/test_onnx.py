"""ONNX export (to_onnx) against onnxruntime, and import (from_onnx) of fastrnn's own exports
and of PyTorch's (committed fixtures made by tests/fixtures/make_onnx_fixtures.py).

Parity tolerance: the graph is float32 and onnxruntime's kernels sum in another order than
fastrnn's, so outputs (all O(1) here: tanh/sigmoid heads, small weights) agree to
ATOL = RTOL = 1e-5; the measured worst case over the grid is 2.4e-7 (a
bidirectional tanh RNN). from_onnx of a
fastrnn export gives back the same weights, so its predictions are bit-identical.
"""
import glob
import os
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import fastrnn as fr  # noqa: E402
from fastrnn.train import onnx as fr_onnx  # noqa: E402

ATOL = RTOL = 1e-5
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "onnx")
N, T, D = 5, 7, 3
RAGGED = np.array([7, 3, 1, 5, 6])               # unsorted, a length-1 sequence, one full


def run_ort(proto, X, lengths=None):
    """onnxruntime's output for X (and lengths), checking the file first."""
    onnx.checker.check_model(proto, full_check=True)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"X": X if X.dtype.kind in "iu" else X.astype(np.float32)}
    if lengths is not None:
        feeds["lengths"] = np.asarray(lengths, np.int32)
    return sess.run(None, feeds)[0]


def data(seed=0, n=N, t=T):
    return np.random.default_rng(seed).standard_normal((n, t, D)).astype(np.float32)


def engine(cell, num_layers, bidirectional, dtype=np.float32):
    if cell.startswith("RNN"):
        return fr.RNN(D, 4, num_layers=num_layers, bidirectional=bidirectional, dtype=dtype,
                      nonlinearity="relu" if cell == "RNN_relu" else "tanh")
    return getattr(fr, cell)(D, 4, num_layers=num_layers, bidirectional=bidirectional, dtype=dtype)


def grid_model(cell, num_layers, direction, head, dtype=np.float32):
    """direction: "uni" or "bi-<merge>"; head: per-step Dense ("steps"), LastStep then Dense
    ("last_step"), or the final state (return_sequences=False) then Dense ("final_state").
    Every model has a Dropout, which the export drops (inference)."""
    bi = direction != "uni"
    merge = direction[3:] if bi else "concat"
    rec = fr.Recurrent(engine(cell, num_layers, bi, dtype), merge_mode=merge,
                       return_sequences=head != "final_state")
    layers = [rec, fr.Dropout(0.3)]
    if head == "last_step":
        layers.append(fr.LastStep())
    layers.append(fr.Dense(2, activation="tanh"))
    return fr.Sequential(layers, seed=7)


CELLS = ["LSTM", "GRU", "RNN", "RNN_relu"]
DIRECTIONS = ["uni", "bi-concat", "bi-sum", "bi-mean"]
HEADS = ["steps", "last_step", "final_state"]


# ============================================================================ export parity
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_export_matches_predict(cell, num_layers, direction, head, ragged):
    model = grid_model(cell, num_layers, direction, head)
    X, lengths = data(), RAGGED if ragged else None
    proto = model.to_onnx(lengths=ragged)
    want = model.predict(X, lengths=lengths)
    got = run_ort(proto, X, lengths)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL)
    # one ONNX recurrent node per stacked layer, with ONNX's own operator
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count(cell.split("_")[0]) == num_layers


def test_export_uses_onnx_gate_orders_and_attributes():
    """The node attributes the runtime relies on: GRU linear_before_reset=1, RNN activations,
    bidirectional in one node, layout 0 (the default), biases [Wb; Rb] in ONNX gate order."""
    gru = fr.Sequential([fr.GRU(D, 4, bidirectional=True)], seed=0)
    node = next(n for n in gru.to_onnx().graph.node if n.op_type == "GRU")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["linear_before_reset"] == 1 and attrs["direction"] == b"bidirectional"
    assert attrs.get("layout", 0) == 0
    rnn = fr.Sequential([fr.RNN(D, 4, nonlinearity="relu", bidirectional=True)], seed=0)
    node = next(n for n in rnn.to_onnx().graph.node if n.op_type == "RNN")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["activations"] == [b"Relu", b"Relu"]
    lstm = fr.Sequential([fr.LSTM(D, 4)], seed=0)
    proto = lstm.to_onnx()
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    node = next(n for n in proto.graph.node if n.op_type == "LSTM")
    W, B = inits[node.input[1]][0], inits[node.input[3]][0]
    p = lstm.layers[0].layer.parameters()
    i, f, g, o = np.split(p["weight_ih_l0"], 4)
    np.testing.assert_array_equal(W, np.concatenate([i, o, f, g]))          # ONNX i, o, f, c
    bi, bf, bg, bo = np.split(p["bias_hh_l0"], 4)
    np.testing.assert_array_equal(B[16:], np.concatenate([bi, bo, bf, bg]))  # Rb after Wb
    assert fr_onnx.GATE_ORDER["GRU"] == (1, 0, 2)


def test_float64_model_exports_as_float32():
    """onnxruntime has no float64 LSTM/GRU/RNN kernel on the CPU: the graph is float32 and a
    float64 model's weights are rounded, so outputs agree to float32 precision."""
    model = fr.Sequential([fr.LSTM(D, 6, dtype=np.float64, num_layers=2), fr.LastStep(),
                           fr.Dense(3, activation="sigmoid")], seed=3)
    X = data(1)
    proto = model.to_onnx(lengths=True)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    np.testing.assert_allclose(run_ort(proto, X, RAGGED), model.predict(X, lengths=RAGGED),
                               atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("ragged", [False, True])
def test_embedding_gru_classifier(ragged):
    model = fr.Sequential([fr.Embedding(30, 8), fr.GRU(8, 16, bidirectional=True),
                           fr.LastStep(), fr.Dropout(0.5), fr.Dense(16, activation="relu"),
                           fr.Dense(4)], seed=1)
    tokens = np.random.default_rng(2).integers(0, 30, (N, T))
    lengths = RAGGED if ragged else None
    proto = model.to_onnx(lengths=ragged)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    np.testing.assert_allclose(run_ort(proto, tokens, lengths), model.predict(tokens, lengths=lengths),
                               atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("layers,input_shape", [
    # Dense before the recurrent layer; two engines in a row; a bias-free engine.
    (lambda: [fr.Dense(5, activation="sigmoid"), fr.LSTM(5, 4, bias=False), fr.GRU(4, 3)], (None, D)),
    # one-to-many: final state, repeated, decoded per step.
    (lambda: [fr.Recurrent(fr.GRU(D, 4, bidirectional=True), return_sequences=False,
                           merge_mode="sum"), fr.RepeatVector(6), fr.RNN(4, 3), fr.Dense(1)], None),
    # no time axis at all: (batch, features) through Dense layers.
    (lambda: [fr.Dense(4, activation="relu"), fr.Dense(2, use_bias=False)], (D,)),
])
def test_other_layer_stacks(layers, input_shape):
    model = fr.Sequential(layers(), seed=5, input_shape=input_shape)
    X = data(3) if input_shape != (D,) else data(3)[:, 0]
    np.testing.assert_allclose(run_ort(model.to_onnx(), X), model.predict(X), atol=ATOL, rtol=RTOL)


def test_dynamic_batch_and_time(tmp_path):
    """One file, run on two batch sizes and two sequence lengths, with and without padding."""
    model = fr.Sequential([fr.LSTM(D, 5, bidirectional=True), fr.LastStep(), fr.Dense(2)], seed=0)
    path = tmp_path / "m.onnx"
    proto = model.to_onnx(str(path), lengths=True)
    assert path.exists() and onnx.load(str(path)) == proto
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "time", D]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, t, seed in ((2, 5, 0), (9, 13, 1)):
        X = data(seed, n, t)
        lengths = np.random.default_rng(seed).integers(1, t + 1, n)
        for L in (lengths, np.full(n, t)):
            got = sess.run(None, {"X": X, "lengths": L.astype(np.int32)})[0]
            np.testing.assert_allclose(got, model.predict(X, lengths=L), atol=ATOL, rtol=RTOL)


def test_opset_and_ir_version():
    proto = fr.Sequential([fr.GRU(D, 3)], seed=0).to_onnx()
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", fr_onnx.OPSET)] == [("", 17)]
    assert proto.ir_version == fr_onnx.IR_VERSION == 8


# ============================================================================ export refusals
def test_refuses_what_has_no_onnx_counterpart():
    from fastrnn.lore import SkipRecurrent
    with pytest.raises(ValueError, match=r"layer 0 \(SkipRecurrent\)"):
        fr.Sequential([SkipRecurrent(D, 4, skip=2, cell="LSTM")], seed=0).to_onnx()
    with pytest.raises(ValueError, match=r"layer 0 \(Recurrent, stateful=True\)"):
        fr.Sequential([fr.Recurrent(fr.GRU(D, 4), stateful=True)], seed=0).to_onnx()
    with pytest.raises(ValueError, match=r"layer 0: an RNN with leak=0.5"):
        fr.Sequential([fr.RNN(D, 4, leak=0.5)], seed=0).to_onnx()
    with pytest.raises(ValueError, match="exports Sequential models; Seq2Seq"):
        fr.to_onnx(fr.Seq2Seq(fr.GRU(1, 4), fr.Decoder("GRU", hidden_size=4, output_size=1), seed=0))
    with pytest.raises(ValueError, match="not built yet"):
        fr.Sequential([fr.Dense(2)]).to_onnx()
    with pytest.raises(ValueError, match="lengths=True needs a model whose input has a time axis"):
        fr.Sequential([fr.Dense(2)], input_shape=(3,)).to_onnx(lengths=True)


def test_missing_onnx_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)          # import onnx -> ImportError
    model = fr.Sequential([fr.GRU(D, 3)], seed=0)
    with pytest.raises(ImportError, match=r'pip install "fastrnn\[onnx\]"'):
        model.to_onnx()
    with pytest.raises(ImportError, match=r'pip install "fastrnn\[onnx\]"'):
        fr.from_onnx(b"")


# ============================================================================ import
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("cell", CELLS)
def test_round_trip_is_exact(cell, direction, head, ragged):
    """to_onnx -> from_onnx gives the same layers (Dropout aside: an inference graph has
    none) and bit-identical predictions."""
    model = grid_model(cell, 2, direction, head)
    back = fr.from_onnx(model.to_onnx(lengths=ragged))
    kinds = [type(l).__name__ for l in model.layers if not isinstance(l, fr.Dropout)]
    assert [type(l).__name__ for l in back.layers] == kinds
    rec, rec2 = model.layers[0], back.layers[0]
    assert fr.train.layers.engine_config(rec2.layer) == fr.train.layers.engine_config(rec.layer)
    assert (rec2.return_sequences, rec2.merge_mode) == (rec.return_sequences, rec.merge_mode)
    X, lengths = data(4), RAGGED if ragged else None
    np.testing.assert_array_equal(back.predict(X, lengths=lengths), model.predict(X, lengths=lengths))


def test_round_trip_other_stacks_and_sources(tmp_path):
    model = fr.Sequential([fr.Embedding(12, 4), fr.LSTM(4, 5, bias=False), fr.LastStep(),
                           fr.RepeatVector(3), fr.GRU(5, 2, bidirectional=True),
                           fr.Dense(3, activation="sigmoid")], seed=2)
    path = tmp_path / "m.onnx"
    model.to_onnx(path, lengths=True)
    tokens = np.random.default_rng(0).integers(0, 12, (N, T))
    want = model.predict(tokens, lengths=RAGGED)
    for source in (path, str(path), path.read_bytes(), onnx.load(str(path))):
        back = fr.from_onnx(source)
        np.testing.assert_array_equal(back.predict(tokens, lengths=RAGGED), want)
    back64 = fr.from_onnx(path, dtype=np.float64)
    assert back64.dtype == np.float64
    np.testing.assert_allclose(back64.predict(tokens, lengths=RAGGED), want, atol=ATOL, rtol=RTOL)


FIXTURE_FILES = sorted(glob.glob(os.path.join(FIXTURES, "*.onnx")))


def test_fixtures_exist():
    assert len(FIXTURE_FILES) >= 10


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: os.path.basename(p)[:-5])
def test_from_onnx_reads_pytorch_exports(path):
    """Graphs written by PyTorch 2.13's TorchScript and dynamo exporters for nn.LSTM/GRU/RNN
    (batch_first) -> last step / final state -> nn.Linear models: same outputs as torch."""
    saved = np.load(path[:-5] + ".npz")
    model = fr.from_onnx(path)
    np.testing.assert_allclose(model.predict(saved["X"]), saved["y"], atol=ATOL, rtol=RTOL)
    # the imported model is an ordinary one: it exports again, and the runtime agrees
    np.testing.assert_allclose(run_ort(model.to_onnx(), saved["X"]), saved["y"], atol=ATOL, rtol=RTOL)


def _edit(proto, op, **attrs):
    """A copy of ``proto`` with attributes of its first ``op`` node replaced."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    node = next(n for n in proto.graph.node if n.op_type == op)
    for k, v in attrs.items():
        for a in list(node.attribute):
            if a.name == k:
                node.attribute.remove(a)
        node.attribute.append(onnx.helper.make_attribute(k, v))
    return proto


def test_from_onnx_refuses_what_fastrnn_cannot_compute():
    gru = fr.Sequential([fr.GRU(D, 4)], seed=0).to_onnx()
    with pytest.raises(ValueError, match="linear_before_reset=0"):
        fr.from_onnx(_edit(gru, "GRU", linear_before_reset=0))
    with pytest.raises(ValueError, match="direction='reverse'"):
        fr.from_onnx(_edit(gru, "GRU", direction="reverse"))
    with pytest.raises(ValueError, match="clip"):
        fr.from_onnx(_edit(gru, "GRU", clip=5.0))
    lstm = fr.Sequential([fr.LSTM(D, 4)], seed=0).to_onnx()
    with pytest.raises(ValueError, match="input_forget"):
        fr.from_onnx(_edit(lstm, "LSTM", input_forget=1))
    # a non-zero initial state
    p = onnx.ModelProto.FromString(lstm.SerializeToString())
    node = next(n for n in p.graph.node if n.op_type == "LSTM")
    p.graph.initializer.append(onnx.numpy_helper.from_array(np.ones((1, 1, 4), np.float32), "h0"))
    while len(node.input) < 6:
        node.input.append("")
    node.input[5] = "h0"
    with pytest.raises(ValueError, match="initial_h is not zero"):
        fr.from_onnx(p)
    # a per-step model's output taken at step 0 is not LastStep
    last = fr.Sequential([fr.GRU(D, 4), fr.LastStep()], seed=0).to_onnx()
    p = onnx.ModelProto.FromString(last.SerializeToString())
    idx = next(t for t in p.graph.initializer if t.name.startswith("last"))
    idx.CopyFrom(onnx.numpy_helper.from_array(np.array(0, np.int64), idx.name))
    with pytest.raises(ValueError, match=r"node .*\(Gather\): takes step 0"):
        fr.from_onnx(p)
    # two outputs
    p = onnx.ModelProto.FromString(gru.SerializeToString())
    p.graph.output.append(onnx.helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, None))
    with pytest.raises(ValueError, match="2 outputs"):
        fr.from_onnx(p)
