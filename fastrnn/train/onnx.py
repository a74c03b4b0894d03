"""ONNX export and import of Sequential models: ``to_onnx(model, path)``, ``from_onnx(path)``.

Why ONNX's own recurrent operators. A model exported as ONNX ``LSTM``/``GRU``/``RNN`` nodes
(one node per stacked layer, both directions in one node) stays a handful of nodes that every
runtime runs with its fused kernels, and that other tools (PyTorch's exporter, converters)
read and write the same way; unrolling the time loop into MatMuls would fix the sequence
length and make a graph the size of the sequence.

What the export must respect:
- Gate order. fastrnn keeps PyTorch's blocks (LSTM i,f,g,o; GRU r,z,n); ONNX wants LSTM
  i,o,f,c and GRU z,r,h. ``GATE_ORDER`` below is the one table of permutations; the import
  applies its inverse.
- Biases. ONNX takes one ``B = [Wb; Rb]`` per direction, which is exactly fastrnn's
  ``[bias_ih; bias_hh]`` after the permutation. fastrnn's GRU is PyTorch's, with ``b_hn``
  inside ``r * (W_hn h + b_hn)``: ONNX calls that ``linear_before_reset=1``.
- Layout 0 (time-major). onnxruntime's CPU kernels refuse ``layout=1``, so the graph
  transposes the (batch, time, features) input once and keeps time-major tensors up to the
  output (Dense, Dropout and the merges are per step, so they do not care).
- float32. onnxruntime (1.32) has no float64 kernel for LSTM, GRU or RNN on the CPU, so the
  graph is float32 whatever the model's dtype: a float64 model's weights are rounded to
  float32 (its predictions then agree to float32 precision, not bit for bit).
- ``lengths``. With ``to_onnx(path, lengths=True)`` the graph takes an int32 ``lengths``
  input, passed as ``sequence_lens`` to every recurrent node up to the first layer that
  drops the time axis, as ``Sequential.predict`` passes it. ONNX's ``Y_h`` is then what
  fastrnn's final state is (forward: at each sequence's last valid step; reverse: after
  reading the valid part backwards), and ``LastStep`` gathers each sequence's step
  ``lengths - 1`` of the merged output, as ``LastStep.forward`` does.

Opset ``OPSET`` (17) with IR version ``IR_VERSION`` (8): the oldest opset that has every
operator used here with its current semantics (ReduceSum with axes as an input, GatherND with
batch_dims, negative Gather indices), so the files load in older runtimes too (onnxruntime
>= 1.12); onnxruntime 1.32 runs them.

The import (``from_onnx``) reads a graph by interpreting it symbolically (see "Import" below),
which covers both fastrnn's own exports and the graphs PyTorch's exporters write for
``nn.LSTM/GRU/RNN(batch_first=True) -> last step or final state -> nn.Linear`` models.

This module sits beside interop.py and io.py, below the models: it knows the layers of
train/layers.py and finds the Sequential class through the registry, so that
``Sequential.to_onnx`` can be a shortcut to it. The ``onnx`` package is an optional extra,
imported only inside the two entry points.
"""
import numpy as np

from .. import _checks
from ..layers import GRU, LSTM, RNN
from .layers import Dense, Dropout, Embedding, LastStep, Recurrent, RepeatVector, engine_kind
from .registry import get_class

__all__ = ["to_onnx"]

OPSET = 17
IR_VERSION = 8

# ONNX gate block k is PyTorch (= fastrnn) gate block GATE_ORDER[kind][k].
GATE_ORDER = {
    "LSTM": (0, 3, 1, 2),   # ONNX i, o, f, c  <-  PyTorch i, f, g, o
    "GRU": (1, 0, 2),       # ONNX z, r, h     <-  PyTorch r, z, n
    "RNN": (0,),            # one block
}
# ... and PyTorch block j is ONNX block GATE_FROM_ONNX[kind][j] (the inverse permutation).
GATE_FROM_ONNX = {k: tuple(int(i) for i in np.argsort(p)) for k, p in GATE_ORDER.items()}

_ONNX_ACT = {"tanh": "Tanh", "relu": "Relu"}
_DENSE_ACT = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}


def _require_onnx():
    """The onnx package, or an ImportError that says how to get it."""
    try:
        import onnx
    except ImportError as e:
        raise ImportError('ONNX export and import need the onnx package: pip install "fastrnn[onnx]" '
                          '(or pip install onnx; onnxruntime to run the files)') from e
    return onnx


def _permute_blocks(a, order):
    """Reorder the gate blocks (equal slices of the first axis) of a weight or bias."""
    parts = np.split(np.asarray(a), len(order), axis=0)
    return np.concatenate([parts[i] for i in order], axis=0)


# ============================================================================ export
class _GraphBuilder:
    """Nodes and initializers of the graph under construction, with unique names."""

    def __init__(self, onnx):
        self.onnx, self.h = onnx, onnx.helper
        self.nodes, self.inits, self._n = [], [], 0

    def name(self, base):
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, base, value):
        value = np.asarray(value)
        if value.dtype.kind == "f":
            value = value.astype(np.float32)
        name = self.name(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def ints(self, base, values):
        return self.const(base, np.asarray(values, np.int64))

    def node(self, op, inputs, n_out=1, base=None, **attrs):
        outs = [self.name(base or op) for _ in range(n_out)]
        self.nodes.append(self.h.make_node(op, list(inputs), outs, name=self.name(op + "_node"), **attrs))
        return outs[0] if n_out == 1 else outs


class _Stream:
    """The tensor between layers: its name and whether it still has the time axis (then it is
    time-major, (T, B, F)) or not ((B, F)). ``lengths`` is the name of the sequence-lengths
    input while the time axis is the input's own (None once a layer dropped it)."""

    def __init__(self, name, has_time, lengths):
        self.name, self.has_time, self.lengths = name, has_time, lengths


def _engine_weights(engine, layer, kind):
    """W, R, B (or None) of one stacked layer of an engine, both directions stacked on a new
    first axis, gate blocks in ONNX's order."""
    p, order = engine.parameters(), GATE_ORDER[kind]
    W, R, B = [], [], []
    for d in range(2 if engine.bidirectional else 1):
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        W.append(_permute_blocks(p["weight_ih" + sfx], order))
        R.append(_permute_blocks(p["weight_hh" + sfx], order))
        if engine.bias:
            B.append(np.concatenate([_permute_blocks(p["bias_ih" + sfx], order),
                                     _permute_blocks(p["bias_hh" + sfx], order)]))
    return np.stack(W), np.stack(R), (np.stack(B) if B else None)


def _export_recurrent(g, i, layer, s):
    """One ONNX LSTM/GRU/RNN node per stacked layer, (T, dirs, B, H) -> (T, B, dirs*H) between
    them, then the merge of the last layer's per-step output (Y) or final state (Y_h)."""
    if type(layer) is not Recurrent:
        raise ValueError(f"layer {i} ({type(layer).__name__}) has no ONNX export: only plain "
                         "Recurrent layers map to ONNX's LSTM/GRU/RNN operators")
    if layer.stateful:
        raise ValueError(f"layer {i} (Recurrent, stateful=True) carries its state from one call to "
                         "the next, which a stateless ONNX graph cannot; export a stateful=False copy")
    if not s.has_time:
        raise ValueError(f"layer {i} (Recurrent) receives no time axis")
    e = layer.layer
    kind = engine_kind(e)
    if kind == "RNN" and getattr(e, "leak", 1.0) != 1.0:
        raise ValueError(f"layer {i}: an RNN with leak={e.leak} (leaky-integrator units) has no "
                         "ONNX operator")
    H, dirs = e.hidden_size, 2 if e.bidirectional else 1
    attrs = {"hidden_size": H, "direction": "bidirectional" if dirs == 2 else "forward"}
    if kind == "GRU":
        attrs["linear_before_reset"] = 1
    if kind == "RNN":
        attrs["activations"] = [_ONNX_ACT[e.nonlinearity]] * dirs
    x = s.name
    for l in range(e.num_layers):
        W, R, B = _engine_weights(e, l, kind)
        ins = [x, g.const(f"W_{i}_l{l}", W), g.const(f"R_{i}_l{l}", R),
               g.const(f"B_{i}_l{l}", B) if B is not None else "", s.lengths or ""]
        last = l == e.num_layers - 1
        Y, Y_h = g.node(kind, ins, n_out=2, base=f"{kind}_{i}_l{l}", **attrs)
        if not last or layer.return_sequences:
            out, dir_axis = Y, 1                               # (T, dirs, B, H)
        else:
            out, dir_axis = Y_h, 0                             # (dirs, B, H)
        if not last or layer.merge_mode == "concat" or dirs == 1:
            if dirs == 1:
                x = g.node("Squeeze", [out, g.ints("axes", [dir_axis])])
            elif dir_axis == 1:                                # (T, B, dirs, H) -> (T, B, dirs*H)
                x = g.node("Reshape", [g.node("Transpose", [out], perm=[0, 2, 1, 3]),
                                       g.ints("shape", [0, 0, -1])])
            else:                                              # (B, dirs, H) -> (B, dirs*H)
                x = g.node("Reshape", [g.node("Transpose", [out], perm=[1, 0, 2]),
                                       g.ints("shape", [0, -1])])
        else:
            op = "ReduceSum" if layer.merge_mode == "sum" else "ReduceMean"
            if op == "ReduceSum":
                x = g.node(op, [out, g.ints("axes", [dir_axis])], keepdims=0)
            else:                                              # ReduceMean: axes an attribute until opset 18
                x = g.node(op, [out], axes=[dir_axis], keepdims=0)
    if layer.return_sequences:
        return _Stream(x, True, s.lengths)
    return _Stream(x, False, None)


def _prune_unused_outputs(g):
    """Blank the outputs of recurrent nodes that no node reads (ONNX outputs are optional),
    so a runtime does not compute them."""
    used = {n for node in g.nodes for n in node.input}
    for node in g.nodes:
        if node.op_type in ("LSTM", "GRU", "RNN"):
            for k, out in enumerate(node.output):
                if out and out not in used:
                    node.output[k] = ""
            while node.output and node.output[-1] == "":
                node.output.pop()


def _export_dense(g, i, layer, s):
    """MatMul by W^T (+ bias) on the last axis, then the activation: per step on sequences."""
    if type(layer) is not Dense:
        raise ValueError(f"layer {i} ({type(layer).__name__}) has no ONNX export")
    x = g.node("MatMul", [s.name, g.const(f"dense_{i}_weight_T", layer.params["weight"].T)])
    if layer.use_bias:
        x = g.node("Add", [x, g.const(f"dense_{i}_bias", layer.params["bias"])])
    if layer.activation in _DENSE_ACT:
        x = g.node(_DENSE_ACT[layer.activation], [x])
    return _Stream(x, s.has_time, s.lengths)


def _export_dropout(g, i, layer, s):
    """Dropout is the identity at inference: no node."""
    return s


def _export_embedding(g, i, layer, s):
    """Gather of the embedding rows by token id."""
    x = g.node("Gather", [g.const(f"embedding_{i}_weight", layer.params["weight"]), s.name], axis=0)
    return _Stream(x, s.has_time, s.lengths)


def _export_last_step(g, i, layer, s):
    """(T, B, F) -> (B, F): step T-1, or with lengths each sequence's step lengths-1."""
    if not s.has_time:
        raise ValueError(f"layer {i} (LastStep) receives no time axis")
    if s.lengths is None:
        x = g.node("Gather", [s.name, g.ints("last", -1)], axis=0)
    else:
        bt = g.node("Transpose", [s.name], perm=[1, 0, 2])                       # (B, T, F)
        idx = g.node("Sub", [s.lengths, g.const("one", np.array(1, np.int32))])
        idx = g.node("Unsqueeze", [g.node("Cast", [idx], to=g.onnx.TensorProto.INT64),
                                   g.ints("axes", [1])])                          # (B, 1)
        x = g.node("GatherND", [bt, idx], batch_dims=1)
    return _Stream(x, False, None)


def _export_repeat_vector(g, i, layer, s):
    """(B, F) -> (n, B, F): the same vector at every step (time-major)."""
    if s.has_time:
        raise ValueError(f"layer {i} (RepeatVector) needs (batch, features) input")
    x = g.node("Unsqueeze", [s.name, g.ints("axes", [0])])
    x = g.node("Expand", [x, g.ints("shape", [layer.n, 1, 1])])
    return _Stream(x, True, None)


# One function per layer class (exact classes: a subclass such as lore's SkipRecurrent
# computes something else and is refused).
_EXPORTERS = {Recurrent: _export_recurrent, Dense: _export_dense, Dropout: _export_dropout,
              Embedding: _export_embedding, LastStep: _export_last_step,
              RepeatVector: _export_repeat_vector}


def to_onnx(model, path=None, lengths=False):
    """Write a Sequential model as an ONNX file (opset ``OPSET``) and return the ModelProto.

    Inputs: ``X`` like ``model.predict``'s -- (batch, time, features) float32, or (batch, time)
    int64 token ids for a model that starts with an Embedding -- with dynamic batch and time
    axes; with ``lengths=True`` also ``lengths`` (batch,) int32, the valid steps of each
    sequence. Output ``Y``: what ``model.predict(X, lengths=lengths)`` returns, in float32.

    Exported: Recurrent (RNN tanh/relu, LSTM, GRU; stacked, bidirectional, return_sequences,
    merge modes), Dense (linear/relu/tanh/sigmoid), Embedding, LastStep, Dropout (dropped:
    inference only), RepeatVector. Refused with a ValueError naming the layer: stateful
    layers, leaky RNNs, lore's layers (e.g. SkipRecurrent) and other models (Seq2Seq, Decoder).
    """
    onnx = _require_onnx()
    if not isinstance(model, get_class("Sequential")):
        raise ValueError(f"to_onnx exports Sequential models; {type(model).__name__} has no ONNX export")
    layers = model.layers
    if not model.built:
        raise ValueError("the model is not built yet: give input_shape= or call it on data first")
    shape = tuple(model.input_shape)
    tokens = isinstance(layers[0], Embedding)
    has_time = len(shape) == (1 if tokens else 2)
    if lengths and not has_time:
        raise ValueError(f"lengths=True needs a model whose input has a time axis; its input is "
                         f"(batch, {', '.join(map(str, shape))})")
    if not tokens and len(shape) not in (1, 2):
        raise ValueError(f"the model's input shape {shape} has no ONNX export (expected "
                         "(time, features) or (features,))")
    h, TP = onnx.helper, onnx.TensorProto
    g = _GraphBuilder(onnx)
    dims = ["batch"] + ["time" if d is None else int(d) for d in shape]
    inputs = [h.make_tensor_value_info("X", TP.INT64 if tokens else TP.FLOAT, dims)]
    if lengths:
        inputs.append(h.make_tensor_value_info("lengths", TP.INT32, ["batch"]))
    x = "X"
    if has_time:
        x = g.node("Transpose", [x], perm=[1, 0] if tokens else [1, 0, 2])
    s = _Stream(x, has_time, "lengths" if lengths else None)
    for i, layer in enumerate(layers):
        fn = _EXPORTERS.get(type(layer))
        if fn is None:
            raise ValueError(f"layer {i} ({type(layer).__name__}) has no ONNX export; exported "
                             f"layers: {', '.join(c.__name__ for c in _EXPORTERS)}")
        s = fn(g, i, layer, s)
    out = s.name
    if s.has_time:
        out = g.node("Transpose", [out], perm=[1, 0, 2])
    g.nodes.append(h.make_node("Identity", [out], ["Y"], name="output"))
    _prune_unused_outputs(g)
    out_dims = ["batch"] + ["time" if d is None else int(d) for d in model.output_shape]
    graph = h.make_graph(g.nodes, "fastrnn_sequential", inputs,
                         [h.make_tensor_value_info("Y", TP.FLOAT, out_dims)], g.inits)
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)],
                         producer_name="fastrnn", ir_version=IR_VERSION,
                         doc_string=repr(model))
    if path is not None:
        onnx.save(proto, str(path))
    return proto
