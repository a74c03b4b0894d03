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

__all__ = ["to_onnx", "from_onnx"]

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
    if getattr(e, "layer_norm", False):
        raise ValueError(f"layer {i}: a layer with layer_norm=True has no ONNX operator (ONNX's "
                         "LSTM/GRU/RNN have no layer normalisation); save it with fastrnn instead")
    if getattr(e, "proj_size", 0):
        raise ValueError(f"layer {i}: an LSTM with proj_size={e.proj_size} has no ONNX operator (ONNX's "
                         "LSTM has no projection W_hr); save it with fastrnn or move its weights to "
                         "PyTorch (torch_state_dict) instead")
    if getattr(e, "zoneout", 0.0):  # dropout variants are the plain layer at inference; zoneout is not
        raise ValueError(f"layer {i}: a layer with zoneout={e.zoneout} has no ONNX operator (its "
                         "inference mixes in the previous state)")
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
        if getattr(e, "peepholes", False):  # ONNX's P orders them i, o, f; ours i, f, o
            P = np.stack([_permute_blocks(e.parameters()[f"weight_ch_l{l}" + ("_reverse" if d else "")], (0, 2, 1))
                          for d in range(dirs)])
            ins += ["", "", g.const(f"P_{i}_l{l}", P)]
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


# ============================================================================ import
# from_onnx reads a graph by running it symbolically, node by node, on abstract values instead
# of arrays: constants (folded with onnx's reference evaluator), shape vectors computed from
# the input's dynamic sizes, constant-filled tensors of dynamic shape (the zero initial states
# PyTorch's exporter builds from Shape(x)), the lengths input, and the data: the tensor that
# depends on X, described by its axes and by the Sequential program (layer specs) that
# computes it. Each recognised node extends or reshapes the program; anything else on the
# data path is refused with the node's name and why. Nothing is pattern-matched on node
# names, so the same rules read fastrnn's exports and both PyTorch exporters' graphs.

class _Refuse(ValueError):
    pass


class _Const:
    def __init__(self, value):
        self.value = np.asarray(value)


class _Dims:
    """An int64 shape vector (or scalar) whose entries are ints or the symbols "B" (batch) and
    "T" (time) of the input."""

    def __init__(self, entries, scalar=False):
        self.entries, self.scalar = list(entries), scalar


class _Fill:
    """A tensor of one repeated value and a shape known only at run time (zeros(L, B, H))."""

    def __init__(self, value):
        self.value = float(value)


class _Lengths:
    """The lengths input, minus ``offset``, as (B,) or as (B, 1) (``column``)."""

    def __init__(self, offset=0, column=False):
        self.offset, self.column = offset, column


class _Stack:
    """Final states of several recurrent nodes concatenated on their direction axis
    (PyTorch's h_n of a stacked layer), each piece a _Data with a direction axis at ``axis``."""

    def __init__(self, pieces, axis):
        self.pieces, self.axis = pieces, axis


# Axes of the data: "B", "T", ("F", n) features, ("D", n) directions of the recurrent step
# that ends the program, ("1",) a unit axis.
def _F(n):
    return ("F", int(n))


_UNIT = ("1",)


class _Data:
    """The tensor computed from X. ``program``: tuple of layer specs (dicts, never mutated);
    ``lengths``: the time axis is the input's and the graph has a lengths input (recurrent
    nodes must then take it, as Sequential passes lengths to them); ``half``: one direction
    (0 or 1) of the final recurrent step, waiting to be joined with the other; ``cell``: an
    LSTM's cell state, which no fastrnn layer outputs."""

    def __init__(self, program, axes, lengths=False, half=None, cell=False, tokens=False):
        self.program, self.axes, self.lengths = tuple(program), tuple(axes), lengths
        self.half, self.cell, self.tokens = half, cell, tokens

    def but(self, **kw):
        d = dict(program=self.program, axes=self.axes, lengths=self.lengths, half=self.half,
                 cell=self.cell, tokens=self.tokens)
        d.update(kw)
        return _Data(**d)

    @property
    def last(self):
        return self.program[-1] if self.program else {}

    def dir_axis(self):
        return next((k for k, a in enumerate(self.axes) if a[0] == "D"), None)


def _with_last(data, **changes):
    """The program with its last spec replaced by a copy with ``changes``."""
    spec = dict(data.last)
    spec.update(changes)
    return data.program[:-1] + (spec,)


def _attrs(node, onnx):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _resolve_merge(data, mode, axes):
    """Drop the direction axis of the final recurrent step, which now has its merge mode."""
    return data.but(program=_with_last(data, merge=mode), axes=axes, half=None)


class _Interpreter:
    """Runs the graph on abstract values (see above); ``run`` returns the output's _Data."""

    def __init__(self, onnx, model):
        self.onnx, self.model = onnx, model
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), OPSET)
        self.vals = {}
        self.sizes = {}             # static sizes of "B" and "T" when the graph declares them

    # ---- helpers ------------------------------------------------------------------------
    def refuse(self, node, why):
        raise _Refuse(f"from_onnx: node {node.name or '?'} ({node.op_type}): {why}")

    def const(self, node, name, what):
        v = self.vals.get(name) if name else None
        if not isinstance(v, _Const):
            self.refuse(node, f"{what} must be a constant")
        return v.value

    def opt(self, node, k):
        """Name of optional input k, or None when it is absent."""
        return node.input[k] if len(node.input) > k and node.input[k] else None

    def opt_const(self, node, k, what):
        """Optional constant input k, or None when it is absent."""
        return None if self.opt(node, k) is None else self.const(node, node.input[k], what)

    def axes_arg(self, node, k, attrs):
        """Axes from input k (opset >= 13) or the "axes" attribute (older)."""
        name = self.opt(node, k)
        if name is not None:
            return [int(a) for a in np.atleast_1d(self.const(node, name, "axes"))]
        return [int(a) for a in attrs.get("axes", [])] or None

    def size(self, axis):
        if axis in ("B", "T"):
            return self.sizes.get(axis) or axis
        return 1 if axis == _UNIT else axis[1]

    # ---- entry --------------------------------------------------------------------------
    def run(self):
        g = self.model.graph
        inits = {t.name for t in g.initializer}
        for t in g.initializer:
            self.vals[t.name] = _Const(self.onnx.numpy_helper.to_array(t))
        inputs = [i for i in g.input if i.name not in inits]
        if len(g.output) != 1:
            raise _Refuse(f"from_onnx: the graph has {len(g.output)} outputs "
                          f"({', '.join(o.name for o in g.output)}); a Sequential model has one")
        self.input_info = self._inputs(inputs)
        needed = self._needed(g, g.output[0].name)
        for node in g.node:
            if any(o in needed for o in node.output):
                self._node(node)
        out = self.vals.get(g.output[0].name)
        return self._final(out)

    def _needed(self, g, out):
        """Names of the values the output depends on (dead branches are never interpreted)."""
        producer = {o: n for n in g.node for o in n.output if o}
        need, todo = set(), [out]
        while todo:
            v = todo.pop()
            if v in need:
                continue
            need.add(v)
            n = producer.get(v)
            if n is not None:
                todo += [i for i in n.input if i]
        return need

    def _inputs(self, inputs):
        TP = self.onnx.TensorProto
        data, lengths = [], []
        for i in inputs:
            t = i.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            integer = t.elem_type in (TP.INT32, TP.INT64, TP.INT16, TP.INT8, TP.UINT8)
            (lengths if integer and len(dims) == 1 else data).append((i.name, dims, integer))
        if len(data) != 1 or len(lengths) > 1:
            raise _Refuse("from_onnx: the graph must take one data input (and optionally an integer "
                          f"lengths input of shape (batch,)); it takes {[i.name for i in inputs]}")
        name, dims, tokens = data[0]
        has_len = bool(lengths)
        if tokens and len(dims) == 2:                          # (B, T) token ids
            axes, shape = ("B", "T"), (None,)
        elif not tokens and len(dims) == 3 and dims[2]:        # (B, T, F)
            axes, shape = ("B", "T", _F(dims[2])), (None, dims[2])
        elif not tokens and len(dims) == 2 and dims[1] and not has_len:   # (B, F)
            axes, shape = ("B", _F(dims[1])), (dims[1],)
        else:
            raise _Refuse(f"from_onnx: input {name!r} of shape {dims} is neither (batch, time, "
                          "features), (batch, features) nor (batch, time) token ids")
        self.sizes = {"B": dims[0], "T": dims[1] if len(axes) > 1 and axes[1] == "T" else None}
        self.vals[name] = _Data((), axes, lengths=has_len, tokens=tokens)
        if lengths:
            self.vals[lengths[0][0]] = _Lengths()
        return {"input_shape": shape, "lengths": has_len}

    def _final(self, out):
        if not isinstance(out, _Data) or not out.program:
            raise _Refuse("from_onnx: the graph's output does not depend on its input through "
                          "any layer fastrnn knows")
        if out.half is not None or out.dir_axis() is not None:
            raise _Refuse("from_onnx: the output keeps the directions of a bidirectional layer "
                          "apart; fastrnn merges them (concat, sum or mean)")
        if out.cell:
            raise _Refuse("from_onnx: the output is an LSTM's cell state, which no fastrnn layer outputs")
        axes = tuple(a for a in out.axes if a != _UNIT)
        if axes not in (("B", "T", axes[-1]), ("B", axes[-1])) or axes[-1][0] != "F" or \
                len(axes) != len(out.axes):
            raise _Refuse(f"from_onnx: the output's axes {self._fmt(out.axes)} are not "
                          "(batch, time, features) or (batch, features)")
        return out

    @staticmethod
    def _fmt(axes):
        return "(" + ", ".join({"B": "batch", "T": "time"}.get(a, f"{a[0]}{a[1] if len(a) > 1 else ''}")
                               for a in axes) + ")"

    # ---- one node -----------------------------------------------------------------------
    def _node(self, node):
        onnx = self.onnx
        op, attrs = node.op_type, _attrs(node, onnx)
        if node.domain not in ("", "ai.onnx"):
            self.refuse(node, f"operator domain {node.domain!r} is not ONNX's")
        ins = [self.vals.get(n) if n else None for n in node.input]
        for n, v in zip(node.input, ins):
            if n and v is None:
                self.refuse(node, f"input {n!r} comes from nothing fastrnn can read")
        if all(v is None or isinstance(v, _Const) for v in ins) and op not in ("LSTM", "GRU", "RNN"):
            from onnx.reference import ReferenceEvaluator
            outs = ReferenceEvaluator(node, opsets={"": self.opset}).run(
                None, {n: v.value for n, v in zip(node.input, ins) if v is not None})
            for name, v in zip(node.output, outs):
                if name:
                    self.vals[name] = _Const(v)
            return
        fn = getattr(self, "_op_" + op, None)
        if fn is None:
            self.refuse(node, "this operator on the data path has no fastrnn counterpart")
        res = fn(node, ins, attrs)
        res = res if isinstance(res, tuple) else (res,)
        for name, v in zip(node.output, res):
            if name:
                self.vals[name] = v

    def data(self, node, v, what="input"):
        if not isinstance(v, _Data):
            self.refuse(node, f"{what} must be the data (the tensor computed from X)")
        if v.cell:
            self.refuse(node, "reads an LSTM's cell state, which no fastrnn layer outputs")
        return v

    # ---- shapes, fills, lengths, pass-through ---------------------------------------------
    def _op_Identity(self, node, ins, attrs):
        return ins[0]

    _op_Dropout = _op_Identity                                 # inference: the identity

    def _op_Cast(self, node, ins, attrs):
        v, TP = ins[0], self.onnx.TensorProto
        to = attrs["to"]
        if isinstance(v, _Data) and not v.tokens and to not in (TP.FLOAT, TP.DOUBLE, TP.FLOAT16):
            self.refuse(node, "casts the data to a non-float type")
        if isinstance(v, _Dims) and to not in (TP.INT64, TP.INT32):
            self.refuse(node, "casts a shape to a non-integer type")
        return v

    def _op_Shape(self, node, ins, attrs):
        v = ins[0]
        if isinstance(v, _Data):
            sizes = [self.size(a) for a in v.axes]
        else:
            self.refuse(node, "the shape of this value is not known")
        return _Dims(sizes[attrs.get("start", 0):attrs.get("end", len(sizes))])

    def _dims(self, node, v):
        if isinstance(v, _Dims):
            return v.entries, v.scalar
        if isinstance(v, _Const) and v.value.dtype.kind in "iu" and v.value.ndim <= 1:
            return [int(x) for x in np.atleast_1d(v.value)], v.value.ndim == 0
        self.refuse(node, "expected a shape vector")

    def _op_Gather(self, node, ins, attrs):
        data, idx = ins
        axis = attrs.get("axis", 0)
        if isinstance(data, _Dims):
            i = self.const(node, node.input[1], "the index")
            picked = [data.entries[int(k)] for k in np.atleast_1d(i)]
            return _Dims(picked, scalar=i.ndim == 0)
        if isinstance(data, _Fill):
            return data
        if isinstance(data, _Const) and isinstance(idx, _Data):
            return self._embedding(node, data.value, idx, axis)
        if isinstance(data, _Stack):
            return self._pick_state(node, data, axis, self.const(node, node.input[1], "the index"))
        d = self.data(node, data)
        i = self.const(node, node.input[1], "the index")
        axis %= len(d.axes)
        a = d.axes[axis]
        if i.ndim != 0:
            self.refuse(node, "gathers several indices from the data")
        k = int(i)
        if a == "T":
            return self._last_step(node, d, axis, k)
        if a[0] == "D":
            return self._pick_direction(node, d, axis, k % a[1])
        self.refuse(node, f"gathers from the {self._fmt([a])} axis of the data")

    def _op_Unsqueeze(self, node, ins, attrs):
        v = ins[0]
        axes = self.axes_arg(node, 1, attrs)
        if isinstance(v, _Dims):
            if not v.scalar or axes not in ([0], [-1]):
                self.refuse(node, "unsqueezes a shape vector")
            return _Dims(v.entries)
        if isinstance(v, (_Fill,)):
            return v
        if isinstance(v, _Lengths):
            if v.column or axes not in ([1], [-1]):
                self.refuse(node, "unsqueezes lengths other than to a column (batch, 1)")
            return _Lengths(v.offset, True)
        d = self.data(node, v)
        axes_out = list(d.axes)
        n = len(axes_out) + len(axes)
        for a in sorted(x % n for x in axes):
            axes_out.insert(a, _UNIT)
        return d.but(axes=tuple(axes_out))

    def _op_Squeeze(self, node, ins, attrs):
        v = ins[0]
        axes = self.axes_arg(node, 1, attrs)
        if isinstance(v, _Dims):
            if len(v.entries) != 1:
                self.refuse(node, "squeezes a shape vector")
            return _Dims(v.entries, scalar=True)
        if isinstance(v, _Fill):
            return v
        d = self.data(node, v)
        if axes is None:
            axes = [k for k, a in enumerate(d.axes) if self.size(a) == 1 and a[0] != "F"]
        axes = {a % len(d.axes) for a in axes}
        out = []
        for k, a in enumerate(d.axes):
            if k not in axes:
                out.append(a)
            elif not (a == _UNIT or (a[0] == "D" and a[1] == 1)):
                self.refuse(node, f"squeezes the {self._fmt([a])} axis of the data")
        d = d.but(axes=tuple(out))
        if d.last.get("kind") == "rnn" and d.last.get("merge") is None and d.dir_axis() is None \
                and d.half is None:
            d = d.but(program=_with_last(d, merge="concat"))  # one direction: nothing to merge
        return d

    def _op_Concat(self, node, ins, attrs):
        axis = attrs["axis"]
        if all(isinstance(v, (_Dims, _Const)) for v in ins):
            out = []
            for v in ins:
                out += self._dims(node, v)[0]
            return _Dims(out)
        if all(isinstance(v, _Fill) for v in ins):
            return ins[0]
        datas = [self.data(node, v) for v in ins]
        if all(d.half is not None for d in datas) and len(datas) == 2:
            a, b = datas
            axis %= len(a.axes)
            if a.axes[axis][0] != "F" or axis != len(a.axes) - 1 or (a.half, b.half) != (0, 1) \
                    or a.program is not b.program:
                self.refuse(node, "joins directions of a bidirectional layer other than as "
                                  "[forward, backward] on the feature axis")
            H = a.axes[-1][1]
            return _resolve_merge(a, "concat", a.axes[:-1] + (_F(2 * H),))
        # Final states of stacked nodes, concatenated on their direction axis (PyTorch's h_n).
        axis %= len(datas[0].axes)
        if all(d.half is None and d.dir_axis() == axis for d in datas):
            return _Stack(datas, axis)
        self.refuse(node, "concatenates data in a way no fastrnn layer does")

    def _op_Slice(self, node, ins, attrs):
        v = ins[0]
        if len(node.input) > 1:
            starts = self.const(node, node.input[1], "starts")
            ends = self.const(node, node.input[2], "ends")
            axes, steps = self.opt_const(node, 3, "axes"), self.opt_const(node, 4, "steps")
        else:
            starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
        starts, ends = [int(s) for s in np.atleast_1d(starts)], [int(e) for e in np.atleast_1d(ends)]
        axes = list(range(len(starts))) if axes is None else [int(a) for a in np.atleast_1d(axes)]
        steps = [1] * len(starts) if steps is None else [int(s) for s in np.atleast_1d(steps)]
        if isinstance(v, _Fill):
            return v
        if isinstance(v, _Dims):
            if axes != [0]:
                self.refuse(node, "slices a shape vector oddly")
            return _Dims(v.entries[slice(starts[0], ends[0], steps[0])])
        d = self.data(node, v)
        for s, e, a, st in zip(starts, ends, axes, steps):
            ax = d.axes[a % len(d.axes)]
            size = self.size(ax)
            if st == 1 and s == 0 and (e >= 2**31 - 1 or (isinstance(size, int) and e >= size)):
                continue                                       # the whole axis
            if ax[0] == "D" and st == 1:
                k = s % ax[1]
                if e - s == 1 or (e >= ax[1] and k == ax[1] - 1):
                    d = self._pick_direction(node, d, a % len(d.axes), k, keep_axis=True)
                    continue
            self.refuse(node, f"slices the {self._fmt([ax])} axis of the data")
        return d

    def _op_Reshape(self, node, ins, attrs):
        v, shape = ins
        if isinstance(v, _Dims):
            target, _ = self._dims(node, shape)
            return _Dims(v.entries, scalar=target == [])
        if isinstance(v, _Fill):
            return v
        d = self.data(node, v)
        target, _ = self._dims(node, shape)
        if not attrs.get("allowzero", 0):
            target = [d.axes[k] if t == 0 and k < len(d.axes) else t for k, t in enumerate(target)]
        out = self._align(list(d.axes), target)
        if out is None:
            self.refuse(node, f"reshapes the data {self._fmt(d.axes)} to {target}, which no "
                              "fastrnn layer does")
        axes, merged = out
        if merged:
            return _resolve_merge(d, "concat", tuple(axes))
        d = d.but(axes=tuple(axes))
        if d.last.get("kind") == "rnn" and d.last.get("merge") is None and d.dir_axis() is None:
            d = d.but(program=_with_last(d, merge="concat"))
        return d

    def _align(self, ins, outs):
        """Output axes of a Reshape of axes ``ins`` to entries ``outs`` (ints, "B"/"T", -1, or
        an input axis copied by a 0), and whether it joined (D, F) into features (the concat
        merge of a bidirectional layer); None if it does something else."""
        def matches(a, t):
            return a == t or self.size(a) == t

        def go(i, j):
            if j == len(outs):
                return ([], False) if all(a == _UNIT or a[0] == "D" and a[1] == 1 for a in ins[i:]) else None
            t = outs[j]
            tries = []
            if i < len(ins) and (ins[i] == _UNIT or ins[i][0] == "D" and ins[i][1] == 1):
                tries.append(lambda: go(i + 1, j))
            if i + 1 < len(ins) and ins[i][0] == "D" and ins[i + 1][0] == "F" and \
                    t in (ins[i][1] * ins[i + 1][1], -1):
                tries.append(lambda: self._cons(_F(ins[i][1] * ins[i + 1][1]), go(i + 2, j + 1), True))
            if i < len(ins) and (t == -1 or matches(ins[i], t)) and ins[i][0] != "D":
                tries.append(lambda: self._cons(ins[i], go(i + 1, j + 1)))
            if t == 1:
                tries.append(lambda: self._cons(_UNIT, go(i, j + 1)))
            for f in tries:
                r = f()
                if r is not None:
                    return r
            return None
        return go(0, 0)

    @staticmethod
    def _cons(axis, rest, merged=False):
        if rest is None:
            return None
        return [axis] + rest[0], rest[1] or merged

    def _op_Transpose(self, node, ins, attrs):
        v = ins[0]
        if isinstance(v, _Fill):
            return v
        d = self.data(node, v)
        perm = attrs.get("perm", list(range(len(d.axes)))[::-1])
        return d.but(axes=tuple(d.axes[p] for p in perm))

    def _op_ConstantOfShape(self, node, ins, attrs):
        self._dims(node, ins[0])
        value = attrs.get("value")
        return _Fill(0.0 if value is None else self.onnx.numpy_helper.to_array(value).reshape(-1)[0])

    def _op_Expand(self, node, ins, attrs):
        v, shape = ins
        if isinstance(v, _Const):
            if v.value.size != 1 and not (v.value == v.value.reshape(-1)[0]).all():
                self.refuse(node, "expands a non-uniform constant to a dynamic shape")
            self._dims(node, shape)
            return _Fill(v.value.reshape(-1)[0])
        if isinstance(v, _Fill):
            return v
        d = self.data(node, v)
        target, _ = self._dims(node, shape)
        return self._repeat(node, d, target)

    def _op_Tile(self, node, ins, attrs):
        d = self.data(node, ins[0])
        reps = [int(r) for r in self.const(node, node.input[1], "repeats")]
        if len(reps) != len(d.axes) or any(r != 1 and a != _UNIT for r, a in zip(reps, d.axes)):
            self.refuse(node, "tiles the data other than along a new unit axis (RepeatVector)")
        return self._repeat(node, d, [r if a == _UNIT else self.size(a) for r, a in zip(reps, d.axes)])

    def _repeat(self, node, d, target):
        """Expand of a unit axis to n steps: RepeatVector(n) on (batch, features) data."""
        if len(target) != len(d.axes):
            self.refuse(node, "expands the data to another rank")
        units = [k for k, (a, t) in enumerate(zip(d.axes, target)) if a == _UNIT and t != 1]
        rest = [a for a in d.axes if a != _UNIT]
        if len(units) != 1 or any(t not in (1, self.size(a)) and a != _UNIT for a, t in zip(d.axes, target)) \
                or rest != ["B", rest[-1]] or rest[-1][0] != "F" or not isinstance(target[units[0]], int):
            self.refuse(node, "expands the data other than repeating a (batch, features) vector "
                              "over a new time axis (RepeatVector)")
        n = target[units[0]]
        axes = list(d.axes)
        axes[units[0]] = "T"
        return d.but(program=d.program + ({"kind": "repeat", "n": n},), axes=tuple(axes), lengths=False)

    def _op_Sub(self, node, ins, attrs):
        a, b = ins
        if isinstance(a, _Lengths) and isinstance(b, _Const) and b.value.size == 1:
            return _Lengths(a.offset - int(b.value.reshape(-1)[0]), a.column)
        return self._arith(node, ins, lambda x, y: x - y)

    def _op_Add(self, node, ins, attrs):
        a, b = ins
        if isinstance(b, _Data) and not isinstance(a, _Data):
            a, b = b, a
        if isinstance(a, _Data) and isinstance(b, _Const):
            return self._dense_bias(node, self.data(node, a), b.value)
        if isinstance(a, _Data) and isinstance(b, _Data):
            x, y = self.data(node, a), self.data(node, b)
            if {x.half, y.half} != {0, 1} or x.program is not y.program or x.axes != y.axes:
                self.refuse(node, "adds two data tensors other than the two directions of one layer")
            return _resolve_merge(x, "sum", x.axes)
        return self._arith(node, ins, lambda x, y: x + y)

    def _op_Mul(self, node, ins, attrs):
        a, b = ins
        if isinstance(b, _Data) and not isinstance(a, _Data):
            a, b = b, a
        if isinstance(a, _Data):
            return self._halve_sum(node, a, b, 0.5)
        return self._arith(node, ins, lambda x, y: x * y)

    def _op_Div(self, node, ins, attrs):
        if isinstance(ins[0], _Data):
            return self._halve_sum(node, ins[0], ins[1], 2.0)
        return self._arith(node, ins, lambda x, y: x // y)

    def _halve_sum(self, node, d, c, want):
        """sum merge * 0.5 (or / 2) is the mean merge."""
        d = self.data(node, d)
        if not (isinstance(c, _Const) and c.value.size == 1 and float(c.value.reshape(-1)[0]) == want
                and d.last.get("kind") == "rnn" and d.last.get("merge") == "sum"):
            self.refuse(node, "scales the data other than averaging two directions")
        return d.but(program=_with_last(d, merge="mean"))

    def _arith(self, node, ins, f):
        if not all(isinstance(v, (_Dims, _Const)) for v in ins):
            self.refuse(node, "arithmetic on the data that no fastrnn layer does")
        (a, sa), (b, sb) = self._dims(node, ins[0]), self._dims(node, ins[1])
        if len(a) != len(b):
            a, b = (a * len(b), b) if len(a) == 1 else (a, b * len(a))
        out = []
        for x, y in zip(a, b):
            if not (isinstance(x, int) and isinstance(y, int)):
                self.refuse(node, "arithmetic on the dynamic batch or time size")
            out.append(f(x, y))
        return _Dims(out, scalar=sa and sb)

    def _op_ReduceSum(self, node, ins, attrs):
        return self._reduce(node, ins, attrs, "sum")

    def _op_ReduceMean(self, node, ins, attrs):
        return self._reduce(node, ins, attrs, "mean")

    def _reduce(self, node, ins, attrs, mode):
        d = self.data(node, ins[0])
        axes = self.axes_arg(node, 1, attrs)
        k = d.dir_axis()
        if axes is None or len(axes) != 1 or k is None or axes[0] % len(d.axes) != k:
            self.refuse(node, f"reduces the data other than over the directions of a layer ({mode} merge)")
        axes_out = list(d.axes)
        axes_out[k] = _UNIT
        if not attrs.get("keepdims", 1):
            del axes_out[k]
        return _resolve_merge(d, mode, tuple(axes_out))

    # ---- layers -------------------------------------------------------------------------
    def _embedding(self, node, weight, idx, axis):
        if axis != 0 or weight.ndim != 2 or not idx.tokens or idx.program:
            self.refuse(node, "gathers rows of a constant other than an embedding of the token ids")
        return idx.but(program=({"kind": "embedding", "weight": weight},),
                       axes=idx.axes + (_F(weight.shape[1]),), tokens=False)

    def _last_step(self, node, d, axis, k):
        if k != -1 and not (self.sizes.get("T") and k == self.sizes["T"] - 1):
            self.refuse(node, f"takes step {k} of the sequence; fastrnn's LastStep takes the last")
        if d.lengths:
            self.refuse(node, "takes step T-1 while the graph has a lengths input: for shorter "
                              "sequences that is padding, not their last valid step")
        if d.dir_axis() is not None or d.half is not None:
            self.refuse(node, "takes the last step of directions not yet merged")
        return d.but(program=d.program + ({"kind": "last"},), axes=d.axes[:axis] + d.axes[axis + 1:])

    def _op_GatherND(self, node, ins, attrs):
        d, idx = ins
        d = self.data(node, d)
        if not (isinstance(idx, _Lengths) and idx.offset == -1 and idx.column and
                attrs.get("batch_dims", 0) == 1 and d.axes[:2] == ("B", "T") and len(d.axes) == 3):
            self.refuse(node, "gathers other than each sequence's step lengths-1 of (batch, time, "
                              "features) data")
        if not d.lengths:
            self.refuse(node, "gathers step lengths-1 of data whose recurrent layers did not read lengths")
        return d.but(program=d.program + ({"kind": "last"},), axes=("B", d.axes[2]), lengths=False)

    def _pick_direction(self, node, d, axis, k, keep_axis=False):
        a = d.axes[axis]
        axes = d.axes[:axis] + ((_UNIT,) if keep_axis else ()) + d.axes[axis + 1:]
        if a[1] == 1:
            return d.but(program=_with_last(d, merge="concat"), axes=axes)
        return d.but(axes=axes, half=k)

    def _pick_state(self, node, stack, axis, idx):
        if idx.ndim != 0 or axis % len(stack.pieces[0].axes) != stack.axis:
            self.refuse(node, "picks from stacked final states other than one (layer, direction)")
        entries = [(p, dr) for p in stack.pieces for dr in range(p.axes[stack.axis][1])]
        p, dr = entries[int(idx)]
        return self._pick_direction(node, p, stack.axis, dr)

    def _op_MatMul(self, node, ins, attrs):
        d = self.data(node, ins[0])
        W = self.const(node, node.input[1], "the weight")
        return self._dense(node, d, W.T, None)

    def _op_Gemm(self, node, ins, attrs):
        d = self.data(node, ins[0])
        if attrs.get("transA", 0) or len(d.axes) != 2:
            self.refuse(node, "Gemm on data other than (batch, features) with transA=0")
        W = self.const(node, node.input[1], "the weight") * attrs.get("alpha", 1.0)
        W = W if attrs.get("transB", 0) else W.T
        b = self.opt_const(node, 2, "the bias")
        return self._dense(node, d, W, None if b is None else b * attrs.get("beta", 1.0))

    def _dense(self, node, d, W, b):
        """weight (units, in) as Dense keeps it, from MatMul's (in, units) or Gemm's B."""
        if W.ndim != 2 or d.half is not None or d.dir_axis() is not None or not d.axes or \
                d.axes[-1] != _F(W.shape[1]):
            self.refuse(node, f"a product of the data {self._fmt(d.axes)} with a {W.shape} weight "
                              "is not a Dense layer on its features")
        spec = {"kind": "dense", "weight": W, "bias": None, "activation": None}
        out = d.but(program=d.program + (spec,), axes=d.axes[:-1] + (_F(W.shape[0]),))
        return out if b is None else self._dense_bias(node, out, b)

    def _dense_bias(self, node, d, b):
        last = d.last
        units = d.axes[-1][1] if d.axes and d.axes[-1][0] == "F" else None
        if last.get("kind") != "dense" or last["bias"] is not None or last["activation"] \
                or b.size != units or b.shape[-1:] != (units,):
            self.refuse(node, "adds a constant to the data other than a Dense layer's bias")
        return d.but(program=_with_last(d, bias=b.reshape(-1)))

    def _activation(self, node, ins, name):
        d = self.data(node, ins[0])
        if d.last.get("kind") != "dense" or d.last["activation"]:
            self.refuse(node, f"{node.op_type} is exported only as a Dense layer's activation")
        return d.but(program=_with_last(d, activation=name))

    def _op_Relu(self, node, ins, attrs):
        return self._activation(node, ins, "relu")

    def _op_Tanh(self, node, ins, attrs):
        return self._activation(node, ins, "tanh")

    def _op_Sigmoid(self, node, ins, attrs):
        return self._activation(node, ins, "sigmoid")

    def _op_LSTM(self, node, ins, attrs):
        return self._recurrent(node, ins, attrs, "LSTM")

    def _op_GRU(self, node, ins, attrs):
        return self._recurrent(node, ins, attrs, "GRU")

    def _op_RNN(self, node, ins, attrs):
        return self._recurrent(node, ins, attrs, "RNN")

    _DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}

    def _recurrent(self, node, ins, attrs, kind):
        """One ONNX recurrent node -> one stacked layer of an engine (joined to the previous
        node's engine when it reads that node's whole concatenated output)."""
        x = self.data(node, ins[0])
        direction = attrs.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        if direction not in ("forward", "bidirectional"):
            self.refuse(node, f"direction={direction!r}: fastrnn layers run forward or both ways")
        dirs = 2 if direction == "bidirectional" else 1
        H = int(attrs["hidden_size"])
        acts = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
        nonlin = "tanh"
        if kind == "RNN":
            acts = acts or ["Tanh"] * dirs
            if len(set(acts)) != 1 or acts[0] not in ("Tanh", "Relu"):
                self.refuse(node, f"activations {acts}: fastrnn's RNN is tanh or relu")
            nonlin = acts[0].lower()
        elif acts and acts != self._DEFAULT_ACTS[kind] * dirs:
            self.refuse(node, f"activations {acts} differ from the standard {kind}")
        for a in ("clip", "activation_alpha", "activation_beta"):
            if a in attrs:
                self.refuse(node, f"attribute {a} has no fastrnn counterpart")
        if attrs.get("input_forget", 0):
            self.refuse(node, "input_forget=1 (coupled input and forget gates) is not fastrnn's LSTM")
        if kind == "GRU" and not attrs.get("linear_before_reset", 0):
            self.refuse(node, "linear_before_reset=0 applies the reset gate before the recurrent "
                              "product, which fastrnn's (PyTorch's) GRU cannot represent")
        layout = attrs.get("layout", 0)
        want = ("T", "B") if layout == 0 else ("B", "T")
        if x.half is not None or len(x.axes) != 3 or x.axes[:2] != want or x.axes[2][0] != "F":
            self.refuse(node, f"its input X has axes {self._fmt(x.axes)}; layout={layout} reads "
                              f"{self._fmt(want + ('F',))}")
        W = self.const(node, node.input[1], "W")
        R = self.const(node, node.input[2], "R")
        B = self.opt_const(node, 3, "B")
        G = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
        D = x.axes[2][1]
        if W.shape != (dirs, G * H, D) or R.shape != (dirs, G * H, H) or \
                (B is not None and B.shape != (dirs, 2 * G * H)):
            self.refuse(node, f"weights W {W.shape}, R {R.shape}"
                              f"{'' if B is None else f', B {B.shape}'} do not fit {dirs} "
                              f"direction(s) of {G} gates x {H} units reading {D} features")
        seq = self.opt(node, 4)
        if seq is not None:
            v = self.vals[seq]
            if not (isinstance(v, _Lengths) and v.offset == 0 and not v.column):
                self.refuse(node, "sequence_lens is not the graph's lengths input")
            if not x.lengths:
                self.refuse(node, "reads sequence_lens after the time axis was replaced: "
                                  "fastrnn passes lengths only to the layers before the first "
                                  "that drops the time axis")
        elif x.lengths:
            self.refuse(node, "ignores the graph's lengths input while earlier layers keep the "
                              "time axis: fastrnn passes lengths to every such recurrent layer")
        for k, what in ((5, "initial_h"), (6, "initial_c")):
            v = self.vals.get(self.opt(node, k)) if self.opt(node, k) else None
            zero = v is None or (isinstance(v, _Fill) and v.value == 0) or \
                (isinstance(v, _Const) and not v.value.any())
            if not zero:
                self.refuse(node, f"{what} is not zero: fastrnn models start from zero states")
        Pp = self.opt_const(node, 7, "P") if kind == "LSTM" else None
        if Pp is not None and Pp.shape != (dirs, 3 * H):
            self.refuse(node, f"peephole weights P {Pp.shape} do not fit {dirs} direction(s) of 3 x {H}")
        params = {"W": W, "R": R, "B": B, "P": Pp}
        spec = {"kind": "rnn", "cell": kind, "nonlinearity": nonlin, "hidden_size": H,
                "dirs": dirs, "bias": B is not None, "layers": (params,), "input_size": D,
                "seq": True, "merge": None, "lengths": x.lengths, "peepholes": Pp is not None}
        prev = x.last
        program = x.program
        if prev.get("kind") == "rnn" and prev["seq"] and prev["merge"] in ("concat",) and \
                all(prev.get(k) == spec[k] for k in ("cell", "nonlinearity", "hidden_size", "dirs",
                                                      "bias", "lengths", "peepholes")) and layout == 0:
            spec.update(layers=prev["layers"] + (params,), input_size=prev["input_size"])
            program = program[:-1]
        Dax = ("D", dirs)
        if layout == 0:
            y_axes, h_axes = ("T", Dax, "B", _F(H)), (Dax, "B", _F(H))
        else:
            y_axes, h_axes = ("B", "T", Dax, _F(H)), ("B", Dax, _F(H))
        y = x.but(program=program + (spec,), axes=y_axes)
        final = dict(spec, seq=False)
        h = x.but(program=program + (final,), axes=h_axes, lengths=False)
        return y, h, h.but(cell=True)


def _build(program, info, dtype):
    """The Sequential of an interpreted program, with its weights."""
    layers, weights = [], []
    for spec in program:
        k = spec["kind"]
        if k == "embedding":
            l = Embedding(*spec["weight"].shape)
            weights.append((l, {"weight": spec["weight"]}))
        elif k == "dense":
            W, b = spec["weight"], spec["bias"]
            l = Dense(W.shape[0], activation=spec["activation"], use_bias=b is not None)
            weights.append((l, {"weight": W} if b is None else {"weight": W, "bias": b}))
        elif k == "last":
            l = LastStep()
        elif k == "repeat":
            l = RepeatVector(spec["n"])
        else:
            l, sd = _build_recurrent(spec, dtype)
            weights.append((l, sd))
        layers.append(l)
    model = get_class("Sequential")(layers, input_shape=info["input_shape"], dtype=dtype)
    for l, sd in weights:
        if isinstance(l, Recurrent):
            l.layer.load_state_dict(sd)
        else:
            _checks.copy_state_dict(l.params, sd)
    return model


def _build_recurrent(spec, dtype):
    kind, H, dirs = spec["cell"], spec["hidden_size"], spec["dirs"]
    args = dict(num_layers=len(spec["layers"]), bias=spec["bias"], bidirectional=dirs == 2,
                dtype=dtype)
    if kind == "RNN":
        engine = RNN(spec["input_size"], H, nonlinearity=spec["nonlinearity"], **args)
    else:
        if spec.get("peepholes"):
            args["peepholes"] = True
        engine = {"LSTM": LSTM, "GRU": GRU}[kind](spec["input_size"], H, **args)
    order, GH = GATE_FROM_ONNX[kind], engine.kind.gates * H
    sd = {}
    for l, p in enumerate(spec["layers"]):
        for d in range(dirs):
            sfx = f"_l{l}" + ("_reverse" if d else "")
            sd["weight_ih" + sfx] = _permute_blocks(p["W"][d], order)
            sd["weight_hh" + sfx] = _permute_blocks(p["R"][d], order)
            if spec["bias"]:
                sd["bias_ih" + sfx] = _permute_blocks(p["B"][d][:GH], order)
                sd["bias_hh" + sfx] = _permute_blocks(p["B"][d][GH:], order)
            if spec.get("peepholes"):
                sd["weight_ch" + sfx] = _permute_blocks(p["P"][d], (0, 2, 1))  # i, o, f -> i, f, o
    return Recurrent(engine, return_sequences=spec["seq"], merge_mode=spec["merge"] or "concat"), sd


def from_onnx(model, dtype=np.float32):
    """A Sequential model from an ONNX file (a path, bytes, or an onnx.ModelProto).

    Reads graphs made of ONNX LSTM/GRU/RNN nodes (forward or bidirectional, zero initial
    states, standard activations, GRU with linear_before_reset=1; stacked nodes become one
    multi-layer engine), Gather of an embedding table, MatMul/Gemm (+ Add bias, + Relu/Tanh/
    Sigmoid) as Dense, the last step (Gather of index -1 on the time axis, or each sequence's
    step lengths-1), the final states Y_h (PyTorch's ``h_n[-1]``, ``cat(h_n[-2], h_n[-1])``),
    merges of two directions (concat, sum, mean), RepeatVector, and the Shape/Slice/Concat/
    Transpose/Reshape/Squeeze plumbing around them that PyTorch's exporters (TorchScript and
    dynamo) and ``to_onnx`` write. Inputs: X (batch, time, features), (batch, features) or
    (batch, time) token ids, and an optional integer lengths input (batch,).

    The result predicts what the graph computes (Dropout is gone: ONNX graphs are inference
    graphs); ``dtype`` chooses float32 or float64 weights. Anything else on the data path
    raises ValueError naming the node and what fastrnn cannot represent.
    """
    onnx = _require_onnx()
    dtype = np.dtype(dtype)
    if isinstance(model, (bytes, bytearray)):
        proto = onnx.load_from_string(bytes(model))
    elif isinstance(model, onnx.ModelProto):
        proto = model
    else:
        proto = onnx.load(str(model))
    interp = _Interpreter(onnx, proto)
    out = interp.run()
    return _build(out.program, interp.input_info, dtype)
