"""Weights from and to PyTorch state dicts and Keras layers.

PyTorch is fastrnn's native layout (same names and shapes), so state dicts move by renaming
only.  Keras stores (in, out) kernels, one LSTM/SimpleRNN bias, and GRU gates in the order
z, r, h; the converters below transpose, reorder gates and split/merge biases.  A Keras GRU
with ``reset_after=False`` applies the reset gate before the recurrent matmul, which
PyTorch's GRU (and fastrnn) cannot represent: converting one raises ValueError.  Keras
weights alone do not show everything (a GRU without bias hides reset_after; no weights show
an activation), so ``set_keras_weights`` takes the Keras layer configs to check against the
model and refuses what it cannot verify.

This module sits below the models (``Model``'s ``torch_state_dict`` etc. are shortcuts to it):
it knows the layers of train/layers.py, and takes a model by what it has (``parameters()``,
a ``layers`` list for the Keras order), not by its class.
"""
import numpy as np

from .._cells import CELLS
from ..layers import GRU, LSTM, RNN
from .layers import Dense, Embedding, LastStep, Recurrent, engine_kind

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
    layers += list(getattr(model, "cells", None) or [])  # a Decoder's cells (zoneout, peepholes)
    for l in layers:
        if isinstance(l, RNN) and getattr(l, "leak", 1.0) != 1.0:
            raise ValueError(f"an RNN with leak={l.leak} (leaky-integrator units) has no {target} "
                             "equivalent; only leak=1 layers convert")
        # zoneout changes the eval-mode recurrence (h = p h_prev + (1-p) h_cell); recurrent and
        # weight dropout do not (their eval mode is the plain layer), so those convert
        if getattr(l, "peepholes", False):
            raise ValueError(f"a peephole LSTM has no {target} equivalent; export it to ONNX (its LSTM "
                             "has peepholes) or use peepholes=False")
        if getattr(l, "layer_norm", False):
            raise ValueError(f"a layer with layer_norm=True has no {target} equivalent ({target}'s "
                             "recurrent layers have no layer normalisation); its weights alone would "
                             "give another model. Save it with fastrnn (Model.save) instead")
        if getattr(l, "zoneout", 0.0):
            raise ValueError(f"a layer with zoneout={l.zoneout} has no {target} equivalent (its "
                             "inference mixes in the previous state); only zoneout=0 layers convert")
        if getattr(l, "proj_size", 0) and target != "PyTorch":
            raise ValueError(f"an LSTM with proj_size={l.proj_size} (projections, weight_hr) has no "
                             f"{target} equivalent; its weights convert to and from PyTorch only")


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
    if any(k.rpartition(".")[2].startswith("layer_norm_") for k in params):
        raise ValueError("a layer with layer_norm=True has no PyTorch equivalent (PyTorch's RNN/LSTM/GRU "
                         "have no layer normalisation): a PyTorch state dict cannot fill it")
    sd = {k: to_numpy(v) for k, v in state_dict.items()}
    if any(k.rpartition(".")[2].startswith("weight_hr") for k in sd) and \
            not any(k.rpartition(".")[2].startswith("weight_hr") for k in params):
        raise ValueError("the state dict has LSTM projections (weight_hr_l*: torch's proj_size > 0); "
                         "load it into an LSTM(..., proj_size=P) with the same P")
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
_RESET_BEFORE = ("a Keras GRU with reset_after=False computes (r*h) @ U_h, which PyTorch's GRU "
                 "layout (r * (h @ W_hn + b_hn)) cannot represent: the formulations differ and "
                 "no weights make them agree")


def _blocks(a, G, axis, perm):
    parts = np.split(a, G, axis=axis)
    return np.concatenate([parts[i] for i in perm], axis=axis)


def _check_reset_after(reset_after):
    if reset_after is not None and not isinstance(reset_after, (bool, np.bool_)):
        raise TypeError(f"reset_after must be None, True or False, got {type(reset_after).__name__}"
                        " (pass Keras layer configs as configs=...)")


def keras_to_torch(kind, weights, reset_after=None):
    """Keras ``layer.get_weights()`` of a SimpleRNN/LSTM/GRU/Dense/Embedding -> PyTorch-named
    dict (un-suffixed: weight_ih, weight_hh, bias_ih, bias_hh; or weight, bias).

    GRUs: only Keras's ``reset_after=True`` is PyTorch's (and fastrnn's) GRU.  With a bias the
    layout tells (``(2, 3U)`` vs ``(3U,)``); a GRU without bias (``use_bias=False``) does not,
    so it is refused unless ``reset_after=True`` is given.  ``reset_after=False`` always raises.
    """
    _check_reset_after(reset_after)
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
    if kind == "GRU":
        if reset_after is False or (len(w) == 3 and w[2].shape == (G * U,)):
            raise ValueError(_RESET_BEFORE)
        if len(w) == 2 and reset_after is not True:
            raise ValueError("a Keras GRU without bias (use_bias=False) does not show whether it had "
                             "reset_after=True or False, and the two compute different functions; "
                             "pass the layer's config (configs=[layer.get_config()]) or, if you know "
                             "it had reset_after=True, reset_after=True")
    perm = _GRU_PERM if kind == "GRU" else tuple(range(G))
    out = {"weight_ih": _blocks(kernel, G, 1, perm).T.copy(),
           "weight_hh": _blocks(rec, G, 1, perm).T.copy()}
    if len(w) == 3:
        b = w[2]
        if kind == "GRU":
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


# ---- the Keras layers a fastrnn model corresponds to
class _Slot:
    """One Keras layer that holds weights: a Dense, an Embedding, or one stacked layer ``l`` of
    an engine RNN/LSTM/GRU (a Keras Bidirectional when the engine layer is bidirectional).
    ``wrapper`` is the Recurrent holding the engine layer (None for a bare engine layer),
    ``after`` the model layer that follows it (None if none)."""

    def __init__(self, kind, layer, where, wrapper=None, l=0, after=None):
        self.kind, self.layer, self.where = kind, layer, where
        self.wrapper, self.l, self.after = wrapper, l, after

    @property
    def recurrent(self):
        return self.kind in _KIND_GATES

    @property
    def last(self):
        return not self.recurrent or self.l == self.layer.num_layers - 1

    def groups(self):
        """(params, suffix) per Keras weight group, forward then backward (Keras Bidirectional
        order)."""
        if not self.recurrent:
            return [(self.layer.parameters(), "")]
        dirs = 2 if self.layer.bidirectional else 1
        return [(self.layer.parameters(), f"_l{self.l}" + ("_reverse" if d else "")) for d in range(dirs)]

    def in_dim(self):
        if self.kind == "Dense":
            return self.layer.in_features
        if self.kind == "Embedding":
            return None
        e = self.layer
        return e.input_size if self.l == 0 else e.hidden_size * (2 if e.bidirectional else 1)

    def returns_sequences(self):
        """What the equivalent Keras layer's return_sequences must be (None: either)."""
        if not self.last:
            return True                       # feeds the next stacked layer
        return None if self.wrapper is None else self.wrapper.return_sequences

    def merge_mode(self):
        if not self.last or self.wrapper is None:
            return "concat"                   # the engine concatenates its directions
        return {"concat": "concat", "sum": "sum", "mean": "ave"}[self.wrapper.merge_mode]


def _recurrent_slots(eng, where, wrapper=None, after=None):
    try:
        kind = engine_kind(eng)
    except TypeError:
        raise TypeError(f"no Keras counterpart for {type(eng).__name__}") from None
    kind = "SimpleRNN" if kind == "RNN" else kind
    L = eng.num_layers
    return [_Slot(kind, eng, where + (f", stacked layer {l} of {L}" if L > 1 else "") + f" ({kind})",
                  wrapper, l, after) for l in range(L)]


def _keras_slots(model):
    """The Keras layers with weights, in Keras ``get_weights()`` order."""
    if isinstance(model, (RNN, LSTM, GRU)):
        return _recurrent_slots(model, "engine layer")
    if not isinstance(getattr(model, "layers", None), list):     # a Sequential: its list of layers
        raise TypeError("Keras weights map to a Sequential model or an engine RNN/LSTM/GRU layer")
    slots, layers = [], model.layers
    for i, l in enumerate(layers):
        after = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(l, Recurrent):
            slots += _recurrent_slots(l.layer, f"model layer {i}", l, after)
        elif isinstance(l, (Dense, Embedding)):
            kind = type(l).__name__
            slots.append(_Slot(kind, l, f"model layer {i} ({kind})"))
        elif l.parameters():
            raise ValueError(f"layer {i} ({type(l).__name__}) has no Keras counterpart")
    return slots


def _refuse_relu(slots, action):
    for s in slots:
        if s.kind == "SimpleRNN" and s.layer.nonlinearity != "tanh":
            raise ValueError(f"{s.where}: a relu RNN corresponds to Keras SimpleRNN(activation='relu'), "
                             f"which the weights alone do not show; {action}")


# ---- Keras layer configs: what they are and what they must say
# Keras layers without weights, skipped when pairing configs with the model's layers: the
# identity at inference (input, dropout, noise, regularization) or RepeatVector.  Only layers
# with weights are checked; how the weightless ones are arranged is the model's builder's affair.
_KERAS_WEIGHTLESS = ("InputLayer", "Dropout", "SpatialDropout1D", "GaussianDropout", "GaussianNoise",
                     "AlphaDropout", "ActivityRegularization", "RepeatVector")
_KERAS_WEIGHTED = ("SimpleRNN", "LSTM", "GRU", "Dense", "Embedding", "Bidirectional")


def _guess_class(c):
    """The Keras class of a bare ``layer.get_config()`` dict, from the keys only that class
    writes (None if they do not tell)."""
    if "layer" in c and "merge_mode" in c:
        return "Bidirectional"
    if "input_dim" in c and "output_dim" in c:
        return "Embedding"
    if "units" in c:
        if "reset_after" in c:
            return "GRU"
        if "unit_forget_bias" in c:
            return "LSTM"
        if "recurrent_initializer" in c and "recurrent_activation" not in c:
            return "SimpleRNN"
        if not any(k.startswith("recurrent_") or k in ("return_sequences", "go_backwards") for k in c):
            return "Dense"
        return None
    if "rate" in c:
        return "Dropout"
    if "stddev" in c:
        return "GaussianNoise"
    if "batch_shape" in c or "batch_input_shape" in c:
        return "InputLayer"
    if set(c) - {"name", "trainable", "dtype"} == {"n"}:
        return "RepeatVector"
    return None


def _class_and_config(c, where):
    if not isinstance(c, dict):
        raise TypeError(f"{where}: a Keras layer config is a dict (layer.get_config(), or "
                        f"{{'class_name': ..., 'config': ...}}), got {type(c).__name__}")
    if "class_name" in c:
        cfg = c.get("config", {})
        if not isinstance(cfg, dict):
            raise TypeError(f"{where}: 'config' must be a dict, got {type(cfg).__name__}")
        return c["class_name"], cfg
    cls = _guess_class(c)
    if cls is None:
        raise ValueError(f"{where}: cannot tell the Keras layer class from the config's keys "
                         f"{sorted(c)}; pass {{'class_name': ..., 'config': layer.get_config()}}")
    return cls, c


def _config_entries(configs):
    """(where, class name, config) per Keras layer with weights."""
    if isinstance(configs, dict):
        if configs.get("class_name") in ("Sequential", "Functional", "Model") and isinstance(configs.get("config"), dict):
            configs = configs["config"]                    # json.loads(model.to_json())
        configs = configs["layers"] if isinstance(configs.get("layers"), list) else [configs]
    if isinstance(configs, (str, bytes)) or not hasattr(configs, "__iter__"):
        raise TypeError("configs must be a list of Keras layer configs or a Keras model config, "
                        f"got {type(configs).__name__}")
    out = []
    for j, c in enumerate(configs):
        where = f"configs[{j}]"
        cls, cfg = _class_and_config(c, where)
        if cls in _KERAS_WEIGHTLESS:
            continue
        if cls not in _KERAS_WEIGHTED:
            raise ValueError(f"{where}: a Keras {cls} layer, which fastrnn cannot check; configs may "
                             f"hold {', '.join(_KERAS_WEIGHTED)} layers (and {', '.join(_KERAS_WEIGHTLESS)}, "
                             "which are skipped)")
        out.append((f"{where} ({cls}{', ' + repr(cfg['name']) if isinstance(cfg.get('name'), str) else ''})", cls, cfg))
    return out


def _activation_name(v):
    """Keras activation as a name: strings as they are, None as "linear", Keras 3's serialized
    built-in functions by name; anything else is returned unchanged (and matches nothing)."""
    if v is None:
        return "linear"
    if isinstance(v, dict) and isinstance(v.get("config"), str) and str(v.get("module", "")).startswith("keras"):
        return v["config"]
    return v


def _dtype_name(d):
    if isinstance(d, dict):
        return f"{d.get('class_name', '')} {(d.get('config') or {}).get('name', '')}"
    return str(d)


def _want(cond, where, key, value, why):
    if not cond:
        raise ValueError(f"{where}: {key}={value!r}: {why}")


def _check_common(where, cfg):
    name = _dtype_name(cfg.get("dtype", "")).lower()
    _want(not any(q in name for q in ("int8", "int4", "float8", "quantized")), where, "dtype",
          cfg.get("dtype"), "quantized Keras layers store integer weights and scales, not the weights")
    _want(not cfg.get("lora_rank"), where, "lora_rank", cfg.get("lora_rank"),
          "a LoRA-enabled Keras layer has extra lora_kernel arrays; merge them into the kernel first")


def _check_recurrent(where, cls, cfg, slot, backward):
    """Checks one Keras SimpleRNN/LSTM/GRU config against the engine layer; returns its use_bias."""
    kind, eng = slot.kind, slot.layer
    _want(cls == kind, where, "class", cls, f"the fastrnn layer is a {kind}")
    _check_common(where, cfg)
    for key in ("units",) + (("recurrent_activation",) if kind != "SimpleRNN" else ()) + \
               (("reset_after",) if kind == "GRU" else ()):
        if key not in cfg:
            raise ValueError(f"{where}: the config has no {key!r}, so the layer cannot be verified")
    _want(cfg["units"] == eng.hidden_size, where, "units", cfg["units"],
          f"the fastrnn layer has hidden_size={eng.hidden_size}")
    act, want = _activation_name(cfg.get("activation", "tanh")), "tanh"
    if kind == "SimpleRNN":
        want = eng.nonlinearity
    _want(act == want, where, "activation", act,
          f"the fastrnn {type(eng).__name__} computes {want}" +
          (" (fr.RNN(nonlinearity='relu') matches activation='relu')" if kind == "SimpleRNN" else ""))
    if kind != "SimpleRNN":
        ra = _activation_name(cfg["recurrent_activation"])
        _want(ra == "sigmoid", where, "recurrent_activation", ra,
              "fastrnn's gates use the logistic sigmoid" + (
                  " (Keras's hard_sigmoid is a piecewise-linear approximation, another function)"
                  if ra == "hard_sigmoid" else ""))
    if kind == "GRU":
        _want(type(cfg["reset_after"]) in (bool, np.bool_) and cfg["reset_after"], where, "reset_after", cfg["reset_after"],
              _RESET_BEFORE if cfg["reset_after"] is False else "must be True")
    use_bias = cfg.get("use_bias", True)
    _want(isinstance(use_bias, (bool, np.bool_)), where, "use_bias", use_bias, "must be True or False")
    _want(not use_bias or eng.bias, where, "use_bias", use_bias,
          "the Keras layer has biases, the fastrnn layer has bias=False")
    gb = cfg.get("go_backwards", False)
    _want(bool(gb) == backward, where, "go_backwards", gb,
          "the backward layer of a Bidirectional must read backwards" if backward else
          "fastrnn reads sequences forwards (a Keras layer reading backwards, alone or as the "
          "forward layer of a Bidirectional, has no fastrnn counterpart)")
    _want(not cfg.get("time_major", False), where, "time_major", cfg.get("time_major"),
          "fastrnn's model layers take (samples, time, features)")
    return bool(use_bias)


def _check_slot(where, cls, cfg, slot):
    """Checks one Keras config against a slot; returns use_bias per weight group."""
    if slot.kind == "Dense":
        d = slot.layer
        _want(cls == "Dense", where, "class", cls, "the fastrnn layer is a Dense")
        _check_common(where, cfg)
        if "units" not in cfg:
            raise ValueError(f"{where}: the config has no 'units', so the layer cannot be verified")
        _want(cfg["units"] == d.units, where, "units", cfg["units"], f"the fastrnn Dense has units={d.units}")
        act, want = _activation_name(cfg.get("activation")), d.activation or "linear"
        _want(act == want, where, "activation", act, f"the fastrnn Dense has activation={d.activation!r}")
        use_bias = cfg.get("use_bias", True)
        _want(not use_bias or d.use_bias, where, "use_bias", use_bias,
              "the Keras layer has a bias, the fastrnn Dense has use_bias=False")
        return [bool(use_bias)]
    if slot.kind == "Embedding":
        e = slot.layer
        _want(cls == "Embedding", where, "class", cls, "the fastrnn layer is an Embedding")
        _check_common(where, cfg)
        _want(cfg.get("input_dim") == e.vocab_size, where, "input_dim", cfg.get("input_dim"),
              f"the fastrnn Embedding has vocab_size={e.vocab_size}")
        _want(cfg.get("output_dim") == e.dim, where, "output_dim", cfg.get("output_dim"),
              f"the fastrnn Embedding has dim={e.dim}")
        _want(not cfg.get("mask_zero", False), where, "mask_zero", cfg.get("mask_zero"),
              "Keras then skips the steps of token 0 in the layers after it, fastrnn does not mask "
              "by token (it takes lengths=); set mask_zero to False in the config if you pass the "
              "padded sequences' lengths yourself")
        return [True]
    eng = slot.layer
    if eng.bidirectional:
        _want(cls == "Bidirectional", where, "class", cls,
              f"the fastrnn {slot.kind} is bidirectional (a Keras Bidirectional({slot.kind}))")
        _check_common(where, cfg)
        mm = cfg.get("merge_mode", "concat")
        _want(mm == slot.merge_mode(), where, "merge_mode", mm, f"the fastrnn layer needs {slot.merge_mode()!r}"
              + ("" if slot.last else " (stacked layers feed both directions, concatenated, to the next)"))
        if "layer" not in cfg:
            raise ValueError(f"{where}: the config has no 'layer', so the layer cannot be verified")
        fcls, fcfg = _class_and_config(cfg["layer"], where + "['layer']")
        fwd = _check_recurrent(where + "['layer']", fcls, fcfg, slot, backward=False)
        bwd, rcfg = fwd, fcfg
        if cfg.get("backward_layer") is not None:
            bcls, bcfg = _class_and_config(cfg["backward_layer"], where + "['backward_layer']")
            bwd = _check_recurrent(where + "['backward_layer']", bcls, bcfg, slot, backward=True)
            _want(bool(bcfg.get("return_sequences", False)) == bool(fcfg.get("return_sequences", False)),
                  where + "['backward_layer']", "return_sequences", bcfg.get("return_sequences", False),
                  "differs from the forward layer's")
        uses, where = [fwd, bwd], where + "['layer']"
    else:
        _want(cls != "Bidirectional", where, "class", cls, f"the fastrnn {slot.kind} is unidirectional")
        rcfg = cfg
        uses = [_check_recurrent(where, cls, cfg, slot, backward=False)]
    rs, want = bool(rcfg.get("return_sequences", False)), slot.returns_sequences()
    if want is not None and rs != want:
        if not slot.last:
            why = "a stacked layer feeds all its steps to the next"
        elif not want:
            why = "the fastrnn layer returns its final state (Recurrent(return_sequences=False))"
        elif not eng.bidirectional and isinstance(slot.after, LastStep):
            why = None                        # Keras's last output == fastrnn's LastStep
        else:
            why = ("the fastrnn layer returns all steps (a LastStep after a unidirectional layer "
                   "would match)")
        _want(why is None, where, "return_sequences", rs, why)
    return uses


def _configs_for(configs, slots):
    """use_bias per weight group per slot, from configs checked against the slots."""
    entries = _config_entries(configs)
    if len(entries) != len(slots):
        raise ValueError(f"configs describe {len(entries)} Keras layers with weights "
                         f"({', '.join(c for _, c, _ in entries) or 'none'}); the model corresponds to "
                         f"{len(slots)} ({', '.join(s.where for s in slots) or 'none'})")
    return [_check_slot(f"{where} for {s.where}", cls, cfg, s) for (where, cls, cfg), s in zip(entries, slots)]


def _entry(cls, config, input_shape=None):
    """A layer as Keras 3 serializes it (``keras.layers.deserialize`` takes it)."""
    e = {"module": "keras.layers", "class_name": cls, "config": config, "registered_name": None}
    if input_shape is not None:
        e["build_config"] = {"input_shape": list(input_shape)}
    return e


def _slot_config(slot):
    if slot.kind == "Dense":
        d = slot.layer
        return _entry("Dense", {"units": d.units, "activation": d.activation or "linear",
                                "use_bias": d.use_bias}, [None, d.in_features])
    if slot.kind == "Embedding":
        e = slot.layer
        return _entry("Embedding", {"input_dim": e.vocab_size, "output_dim": e.dim, "mask_zero": False},
                      [None, None])
    eng, kind = slot.layer, slot.kind
    rs = slot.returns_sequences()
    cfg = {"units": eng.hidden_size, "activation": eng.nonlinearity if kind == "SimpleRNN" else "tanh"}
    if kind != "SimpleRNN":
        cfg["recurrent_activation"] = "sigmoid"
    cfg["use_bias"] = eng.bias
    if kind == "GRU":
        cfg["reset_after"] = True
    if getattr(eng, "recurrent_dropout", 0.0):  # Keras's: one mask per sample on h_{t-1}, as ours
        cfg["recurrent_dropout"] = eng.recurrent_dropout
    cfg.update(return_sequences=True if rs is None else rs, go_backwards=False)
    shape = [None, None, slot.in_dim()]
    if not eng.bidirectional:
        return _entry(kind, cfg, shape)
    return _entry("Bidirectional", {"layer": _entry(kind, cfg), "merge_mode": slot.merge_mode()}, shape)


def get_keras_weights(model, with_config=False):
    """Weights as the flat list Keras ``model.get_weights()`` would give for the equivalent
    Keras model (stacked layers for num_layers > 1, Bidirectional for bidirectional layers;
    GRUs as Keras's reset_after=True).

    with_config=True returns ``(weights, configs)``: one Keras layer config per Keras layer with
    weights, as Keras 3 serializes layers (``{"module", "class_name", "config",
    "registered_name", "build_config"}``; ``keras.layers.deserialize`` builds the layer), which
    ``set_keras_weights(weights, configs=configs)`` checks.  Layers without weights (Dropout,
    LastStep ...) are not in them.  A relu RNN needs them (its activation is not in the weights).
    """
    _refuse_leaky(model, "Keras")
    slots = _keras_slots(model)
    if not with_config:
        _refuse_relu(slots, "use get_keras_weights(with_config=True) to get the configs with the weights")
    out = []
    for s in slots:
        kind = s.kind
        names = ("weight", "bias") if kind in ("Dense", "Embedding") else ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        for params, sfx in s.groups():
            out += torch_to_keras(kind, {n: params[n + sfx] for n in names if n + sfx in params})
    if with_config:
        return out, [_slot_config(s) for s in slots]
    return out


def set_keras_weights(model, weights, reset_after=None, *, configs=None):
    """Load a flat Keras ``model.get_weights()`` list (see ``get_keras_weights`` for the
    correspondence).  Whatever cannot be verified is refused with a ValueError, and everything
    is converted and checked before anything is written.

    configs: the Keras layer configs, checked against the model -- a list of
        ``layer.get_config()`` dicts or ``{"class_name": ..., "config": ...}`` entries (as in
        ``keras_model.get_config()["layers"]``), or that model config itself.  One per Keras
        layer with weights, in order; InputLayer, Dropout, GaussianNoise, RepeatVector and like
        entries are skipped, other classes refused.  Checked: the class, units (input_dim and
        output_dim), activation, recurrent_activation ("sigmoid"), GRU reset_after (True only),
        use_bias, go_backwards, Bidirectional merge_mode, return_sequences where the model shows
        it, Embedding mask_zero (False only).  Keys absent from a config take Keras's default,
        except units, recurrent_activation and reset_after, whose absence is refused.  A Keras
        layer with ``use_bias=False`` loads into a fastrnn layer with biases as zero biases.
    reset_after: without configs, a GRU's bias layout tells reset_after, but a GRU without bias
        does not: such weights are refused unless ``reset_after=True`` (you know the Keras GRU
        had it) or configs are given.  ``False`` refuses every GRU.  Without configs the Keras
        layers are assumed to have Keras's default activations (tanh, sigmoid gates), and a relu
        RNN is refused.
    """
    _check_reset_after(reset_after)
    weights = list(weights)
    _refuse_leaky(model, "Keras")
    slots = _keras_slots(model)
    if configs is None:
        _refuse_relu(slots, "pass the layer configs (configs=) to load it")
        uses = [None] * len(slots)
    else:
        uses = _configs_for(configs, slots)
    hint = "" if configs is not None else " (if a Keras layer has use_bias=False, pass configs=)"
    staged, pos = [], 0
    for s, use in zip(slots, uses):
        for g, (params, sfx) in enumerate(s.groups()):
            if s.kind == "Embedding":
                n, ours = 1, False
            elif s.kind == "Dense":
                ours = "bias" in params
                n = 1 + (ours if use is None else use[g])
            else:
                ours = ("bias_ih" + sfx) in params
                n = 2 + (ours if use is None else use[g])
            if pos + n > len(weights):
                raise ValueError(f"Keras weight list too short: {len(weights)} arrays, the model needs more "
                                 f"(at {s.where}){hint}")
            try:
                conv = keras_to_torch(s.kind, weights[pos:pos + n], True if use is not None else reset_after)
            except ValueError as e:
                more = hint if ours and "bias must have shape" in str(e) else ""
                raise ValueError(f"{s.where}: {e}{more}") from None
            pos += n
            if ours and not (use is None or use[g]):       # Keras use_bias=False: zero biases
                names = ("bias",) if s.kind == "Dense" else ("bias_ih", "bias_hh")
                conv.update({b: np.zeros_like(params[b + sfx]) for b in names})
            for name, v in conv.items():
                if name.startswith("bias_hh") and name + sfx not in params:
                    continue
                key = name + sfx
                if key not in params:
                    raise ValueError(f"{s.where}: Keras weights provide {key}, which the model does not have")
                if params[key].shape != v.shape:
                    raise ValueError(f"{s.where}: {key}: Keras weights give shape {v.shape}, the model has "
                                     f"{params[key].shape}")
                staged.append((params[key], v))
    if pos != len(weights):
        raise ValueError(f"Keras weight list has {len(weights)} arrays; the model uses {pos}{hint}")
    for p, v in staged:
        p[...] = v
    return model
