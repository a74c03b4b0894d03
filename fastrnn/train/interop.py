"""Weights from and to PyTorch state dicts and Keras layers.

PyTorch is fastrnn's native layout (same names and shapes), so state dicts move by renaming
only.  Keras stores (in, out) kernels, one LSTM/SimpleRNN bias, and GRU gates in the order
z, r, h; the converters below transpose, reorder gates and split/merge biases.  A Keras GRU
with ``reset_after=False`` applies the reset gate before the recurrent matmul, which
PyTorch's GRU (and fastrnn) cannot represent: converting one raises ValueError.

This module sits below the models (``Model``'s ``torch_state_dict`` etc. are shortcuts to it):
it knows the layers of train/layers.py, and takes a model by what it has (``parameters()``,
a ``layers`` list for the Keras order), not by its class.
"""
import numpy as np

from .._cells import CELLS
from ..layers import GRU, LSTM, RNN
from .layers import Dense, Embedding, Recurrent, engine_kind

__all__ = ["to_numpy", "torch_state_dict", "load_torch_state_dict", "keras_to_torch",
           "torch_to_keras", "get_keras_weights", "set_keras_weights"]


def to_numpy(a):
    """A NumPy array from an array or a torch tensor (detached, on the CPU)."""
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


# ----------------------------------------------------------------------------- PyTorch
def _groups(names):
    """Ordered module prefixes of dotted parameter names, each with its set of leaf names."""
    out = {}
    for n in names:
        prefix, _, leaf = n.rpartition(".")
        out.setdefault(prefix, set()).add(leaf)
    return out


def _model_params(obj):
    """Parameter dict of a fastrnn model or engine layer/cell."""
    if hasattr(obj, "_modules") and hasattr(obj, "fit"):
        return obj.parameters()
    if hasattr(obj, "parameters") and hasattr(obj, "grads"):
        return obj.parameters()
    raise TypeError(f"expected a fastrnn model, layer or cell, got {type(obj).__name__}")


def _refuse_leaky(model, target):
    """Leaky-integrator RNNs (engine ``leak != 1``) compute something neither PyTorch nor
    Keras layers can: their weights alone would silently give another model."""
    layers = [model] if isinstance(model, RNN) else [
        getattr(l, "layer", l) for l in getattr(model, "layers", []) if isinstance(l, Recurrent)]
    for l in layers:
        if isinstance(l, RNN) and getattr(l, "leak", 1.0) != 1.0:
            raise ValueError(f"an RNN with leak={l.leak} (leaky-integrator units) has no {target} "
                             "equivalent; only leak=1 layers can be exported")


def torch_state_dict(model, mapping=None, tensors=False):
    """The model's weights under PyTorch names. ``mapping`` renames module prefixes
    (e.g. ``{"0": "lstm", "2": "fc"}`` for a torch module with ``self.lstm``/``self.fc``);
    ``tensors=True`` returns torch tensors (needs torch)."""
    params = _model_params(model)
    _refuse_leaky(model, "PyTorch")
    out = {}
    for k, v in params.items():
        prefix, dot, leaf = k.rpartition(".")
        if mapping and prefix in mapping:
            k = (mapping[prefix] + "." if mapping[prefix] else "") + leaf
        out[k] = v.copy()
    if tensors:
        import torch
        out = {k: torch.from_numpy(v) for k, v in out.items()}
    return out


def load_torch_state_dict(model, state_dict, mapping=None):
    """Load a PyTorch state dict (tensors or arrays) into a fastrnn model, engine layer or cell.

    Names are matched exactly, after renaming torch prefixes with ``mapping``
    (torch prefix -> fastrnn prefix).  Without a mapping, if the names differ, torch modules are
    matched to fastrnn modules in order when they hold the same parameter names (e.g. a torch
    ``self.lstm`` then ``self.fc`` against ``Sequential([LSTM, LastStep, Dense])``).
    Values are cast to the model's dtype; shapes must match exactly.
    """
    params = _model_params(model)
    sd = {k: to_numpy(v) for k, v in state_dict.items()}
    if any(k.rpartition(".")[2].startswith("weight_hr") for k in sd):
        raise ValueError("LSTM projections (proj_size > 0, weight_hr_l*) cannot be represented in fastrnn")
    if mapping:
        ren = {}
        for k, v in sd.items():
            prefix, _, leaf = k.rpartition(".")
            if prefix in mapping:
                k = (mapping[prefix] + "." if mapping[prefix] else "") + leaf
            ren[k] = v
        sd = ren
    if set(sd) != set(params):
        mine, theirs = _groups(params), _groups(sd)
        if len(mine) == len(theirs) and all(a == b for a, b in zip(mine.values(), theirs.values())):
            rename = dict(zip(theirs, mine))
            sd = {(rename[p] + "." if rename[p] else "") + leaf: v
                  for k, v in sd.items() for p, _, leaf in [k.rpartition(".")]}
        else:
            raise KeyError("cannot match the state dict to the model: model modules "
                           f"{ {p: sorted(s) for p, s in mine.items()} } vs state dict modules "
                           f"{ {p: sorted(s) for p, s in theirs.items()} }; pass mapping=")
    for k, p in params.items():
        if sd[k].shape != p.shape:
            raise ValueError(f"{k}: shape {sd[k].shape} in the state dict, {p.shape} in the model "
                             "(check hidden_size, input_size, bias and bidirectional)")
    for k, p in params.items():
        p[...] = sd[k]
    return model


# ----------------------------------------------------------------------------- Keras
_KIND_GATES = {"SimpleRNN": CELLS["RNN_TANH"].gates, "LSTM": CELLS["LSTM"].gates, "GRU": CELLS["GRU"].gates}
# Keras GRU blocks (z, r, h) <-> PyTorch (r, z, n): swapping the first two blocks maps either
# way, so the permutation is its own inverse.
_GRU_PERM = (1, 0, 2)


def _blocks(a, G, axis, perm):
    parts = np.split(a, G, axis=axis)
    return np.concatenate([parts[i] for i in perm], axis=axis)


def keras_to_torch(kind, weights, reset_after=True):
    """Keras ``layer.get_weights()`` of a SimpleRNN/LSTM/GRU/Dense/Embedding -> PyTorch-named
    dict (un-suffixed: weight_ih, weight_hh, bias_ih, bias_hh; or weight, bias)."""
    w = [np.asarray(a) for a in weights]
    if kind == "Dense":
        if len(w) not in (1, 2):
            raise ValueError("Keras Dense weights are [kernel] or [kernel, bias]")
        out = {"weight": w[0].T.copy()}
        if len(w) == 2:
            out["bias"] = w[1].copy()
        return out
    if kind == "Embedding":
        return {"weight": w[0].copy()}
    if kind not in _KIND_GATES:
        raise ValueError(f"kind must be SimpleRNN, LSTM, GRU, Dense or Embedding, got {kind!r}")
    G = _KIND_GATES[kind]
    if len(w) not in (2, 3):
        raise ValueError(f"Keras {kind} weights are [kernel, recurrent_kernel(, bias)], got {len(w)} arrays")
    kernel, rec = w[0], w[1]
    U = rec.shape[0]
    if kernel.ndim != 2 or kernel.shape[1] != G * U or rec.shape != (U, G * U):
        raise ValueError(f"Keras {kind} kernel {kernel.shape} / recurrent_kernel {rec.shape} do not "
                         f"fit {G} gates of {U} units")
    perm = _GRU_PERM if kind == "GRU" else tuple(range(G))
    out = {"weight_ih": _blocks(kernel, G, 1, perm).T.copy(),
           "weight_hh": _blocks(rec, G, 1, perm).T.copy()}
    if len(w) == 3:
        b = w[2]
        if kind == "GRU":
            if b.shape == (G * U,) or not reset_after:
                raise ValueError("a Keras GRU with reset_after=False computes (r*h) @ U_h, which "
                                 "PyTorch's GRU layout (r * (h @ W_hn + b_hn)) cannot represent")
            if b.shape != (2, G * U):
                raise ValueError(f"Keras GRU(reset_after=True) bias must have shape (2, {G * U}), got {b.shape}")
            out["bias_ih"] = _blocks(b[0], G, 0, perm).copy()
            out["bias_hh"] = _blocks(b[1], G, 0, perm).copy()
        else:
            if b.shape != (G * U,):
                raise ValueError(f"Keras {kind} bias must have shape ({G * U},), got {b.shape}")
            out["bias_ih"] = b.copy()
            out["bias_hh"] = np.zeros_like(b)
    return out


def torch_to_keras(kind, params):
    """PyTorch-named (un-suffixed) weights -> Keras ``set_weights`` list. LSTM/SimpleRNN biases
    are summed into Keras's single bias; GRUs use Keras's reset_after=True layout."""
    p = {k: np.asarray(v) for k, v in params.items()}
    if kind == "Dense":
        return [p["weight"].T.copy()] + ([p["bias"].copy()] if "bias" in p else [])
    if kind == "Embedding":
        return [p["weight"].copy()]
    if kind not in _KIND_GATES:
        raise ValueError(f"kind must be SimpleRNN, LSTM, GRU, Dense or Embedding, got {kind!r}")
    G = _KIND_GATES[kind]
    perm = _GRU_PERM if kind == "GRU" else tuple(range(G))
    out = [_blocks(p["weight_ih"].T, G, 1, perm).copy(), _blocks(p["weight_hh"].T, G, 1, perm).copy()]
    if "bias_ih" in p:
        if kind == "GRU":
            out.append(np.stack([_blocks(p["bias_ih"], G, 0, perm), _blocks(p["bias_hh"], G, 0, perm)]))
        else:
            out.append(p["bias_ih"] + p["bias_hh"])
    return out


def _engine_kind(layer):
    try:
        kind = engine_kind(layer)
    except TypeError:
        raise TypeError(f"no Keras counterpart for {type(layer).__name__}") from None
    if kind != "RNN":
        return kind
    if getattr(layer, "nonlinearity", "tanh") != "tanh":
        raise ValueError("a relu RNN corresponds to Keras SimpleRNN(activation='relu'); "
                         "convert with kind='SimpleRNN' and set the activation yourself")
    return "SimpleRNN"


def _engine_groups(layer):
    """(suffix, Keras kind) per Keras layer an engine layer corresponds to: one per stacked
    layer, forward then backward direction (Keras Bidirectional order)."""
    kind = _engine_kind(layer)
    dirs = 2 if layer.bidirectional else 1
    return [(f"_l{l}" + ("_reverse" if d else ""), kind) for l in range(layer.num_layers) for d in range(dirs)]


def _keras_units(model):
    """(params dict, suffix, kind) per group of arrays in Keras get_weights() order."""
    if isinstance(model, (RNN, LSTM, GRU)):
        return [(model.parameters(), s, k) for s, k in _engine_groups(model)]
    if not isinstance(getattr(model, "layers", None), list):     # a Sequential: its list of layers
        raise TypeError("Keras weights map to a Sequential model or an engine RNN/LSTM/GRU layer")
    units = []
    for i, l in enumerate(model.layers):
        if isinstance(l, Recurrent):
            units += [(l.parameters(), s, k) for s, k in _engine_groups(l.layer)]
        elif isinstance(l, Dense):
            units.append((l.parameters(), "", "Dense"))
        elif isinstance(l, Embedding):
            units.append((l.parameters(), "", "Embedding"))
        elif l.parameters():
            raise ValueError(f"layer {i} ({type(l).__name__}) has no Keras counterpart")
    return units


def get_keras_weights(model):
    """Weights as the flat list Keras ``model.get_weights()`` would give for the equivalent
    Keras model (stacked layers for num_layers > 1, Bidirectional for bidirectional layers)."""
    _refuse_leaky(model, "Keras")
    out = []
    for params, sfx, kind in _keras_units(model):
        names = ("weight", "bias") if kind in ("Dense", "Embedding") else ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        sub = {n: params[n + sfx] for n in names if n + sfx in params}
        out += torch_to_keras(kind, sub)
    return out


def set_keras_weights(model, weights, reset_after=True):
    """Load a flat Keras ``model.get_weights()`` list (see ``get_keras_weights`` for the
    correspondence). Everything is converted and checked before anything is written."""
    weights = list(weights)
    staged, pos = [], 0
    for params, sfx, kind in _keras_units(model):
        if kind in ("Dense", "Embedding"):
            n = 1 if kind == "Embedding" else (2 if "bias" in params else 1)
        else:
            n = 3 if ("bias_ih" + sfx) in params else 2
        if pos + n > len(weights):
            raise ValueError(f"Keras weight list too short: {len(weights)} arrays, the model needs more")
        conv = keras_to_torch(kind, weights[pos:pos + n], reset_after)
        pos += n
        for name, v in conv.items():
            if name.startswith("bias_hh") and name + sfx not in params:
                continue
            key = name + sfx
            if key not in params:
                raise ValueError(f"Keras weights provide {key}, which the model does not have")
            if params[key].shape != v.shape:
                raise ValueError(f"{key}: Keras weights give shape {v.shape}, the model has {params[key].shape}")
            staged.append((params[key], v))
    if pos != len(weights):
        raise ValueError(f"Keras weight list has {len(weights)} arrays; the model uses {pos}")
    for p, v in staged:
        p[...] = v
    return model
