"""Initialisers of recurrent weights: identity (IRNN, Le et al. 2015), orthogonal, forget-gate
bias, Glorot, PyTorch-uniform, per layer and per gate block (:func:`init_`, :func:`irnn`)."""
import numpy as np

from ..layers import RNN
from ..train.layers import ENGINE_CELLS, ENGINE_LAYERS, Recurrent, engine_kind
from ..train.model import Model
from .skip import SkipRecurrent

__all__ = ["init_", "irnn", "orthogonal"]



def orthogonal(n, rng, gain=1.0):
    """An n x n random orthogonal matrix (QR of a Gaussian, signs fixed so it is Haar-uniform)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return gain * q * np.sign(np.diag(r))


def _block(kind, shape, rng, gain, std, fan_out):
    """One (rows, cols) block drawn by the named scheme."""
    rows, cols = shape
    if kind == "identity":
        if rows != cols:
            raise ValueError("identity initialisation needs a square block")
        return gain * np.eye(rows)
    if kind == "orthogonal":
        if rows != cols:
            raise ValueError("orthogonal initialisation needs a square block")
        return orthogonal(rows, rng, gain)
    if kind == "glorot":
        a = gain * np.sqrt(6.0 / (cols + rows))
        return rng.uniform(-a, a, shape)
    if kind == "pytorch":
        a = 1.0 / np.sqrt(fan_out)
        return rng.uniform(-a, a, shape)
    if kind == "normal":
        return rng.normal(0.0, std, shape)
    if kind == "zeros":
        return np.zeros(shape)
    raise ValueError(f"unknown initialisation {kind!r}; choose identity, orthogonal, glorot, "
                     "pytorch, normal or zeros")


def _engines_of(target):
    """(module, [(w_ih, w_hh, b_ih, b_hh) names]) pairs of every engine layer/cell in target."""
    if isinstance(target, (list, tuple)):
        return [p for t in target for p in _engines_of(t)]
    if isinstance(target, Model):
        if not target.built:
            raise ValueError("the model is not built yet: its recurrent weights would be redrawn "
                             "when it is; pass input_shape= to Sequential, or call init_ after fit")
        mods = [m for _, m in target._modules() if isinstance(m, (Recurrent,) + ENGINE_LAYERS + ENGINE_CELLS)]
        return [p for m in mods for p in _engines_of(m)]
    if isinstance(target, SkipRecurrent):
        return _engines_of(target._eng)
    if isinstance(target, Recurrent):
        return _engines_of(target.layer)
    if isinstance(target, ENGINE_LAYERS):
        names = []
        for l in range(target.num_layers):
            for d in range(target.num_directions):
                names.append(target._names(l, d))
        return [(target, names)]
    if isinstance(target, ENGINE_CELLS):
        return [(target, [("weight_ih", "weight_hh", "bias_ih", "bias_hh")])]
    raise TypeError(f"init_ takes an engine layer or cell, a Recurrent, a model or a list of them, "
                    f"got {type(target).__name__}")


def init_(target, recurrent=None, input=None, bias=None, forget_bias=None, gain=1.0, std=0.001,
          seed=None):
    """Re-initialise the weights of RNN/LSTM/GRU layers in place; returns ``target``.

    target: ``fr.RNN/LSTM/GRU``, a cell, a ``Recurrent``, a built model (all its recurrent
        layers and cells, e.g. a Seq2Seq's encoder and decoder) or a list of these. ``Sequential(seed=...)`` redraws recurrent weights when it
        is built, so initialise after building (a Sequential whose first layer is recurrent is
        built on construction).
    recurrent: scheme for ``weight_hh`` -- ``"identity"`` (IRNN), ``"orthogonal"``,
        ``"glorot"``, ``"pytorch"`` (U(+-1/sqrt(H))), ``"normal"`` (N(0, std)) or ``None``
        (keep). Gated layers get it per gate block (H x H each).
    input: scheme for ``weight_ih`` (``"glorot"``, ``"pytorch"``, ``"normal"``, ``"zeros"``,
        ``"orthogonal"`` for square blocks) or None; per gate block as well.
    bias: ``"zeros"``, ``"pytorch"`` or None (keep).
    forget_bias: LSTM only. Sets the forget-gate bias (rows H..2H, gate order i,f,g,o) of
        ``bias_ih`` to this value and of ``bias_hh`` to 0, so the effective bias is exactly it.
    gain: multiplies identity/orthogonal/glorot blocks. std: for ``"normal"``.
    """
    rng = np.random.default_rng(seed)
    pairs = _engines_of(target)
    if forget_bias is not None:
        for m, _ in pairs:
            if engine_kind(m) != "LSTM":
                raise ValueError(f"forget_bias applies to LSTM layers, not {type(m).__name__}")
            if not m.bias:
                raise ValueError("forget_bias needs an LSTM with bias=True")
    for m, names in pairs:
        p = m.parameters()
        H, G = m.hidden_size, m.kind.gates
        for w_ih, w_hh, b_ih, b_hh in names:
            for name, scheme in ((w_hh, recurrent), (w_ih, input)):
                if scheme is None:
                    continue
                W = p[name]
                W[...] = np.concatenate([_block(scheme, (H, W.shape[1]), rng, gain, std, H)
                                         for _ in range(G)], 0)
            if m.bias and bias is not None:
                for name in (b_ih, b_hh):
                    if bias == "zeros":
                        p[name][...] = 0
                    elif bias == "pytorch":
                        p[name][...] = rng.uniform(-1 / np.sqrt(H), 1 / np.sqrt(H), p[name].shape)
                    else:
                        raise ValueError(f"bias must be 'zeros', 'pytorch' or None, got {bias!r}")
            if forget_bias is not None:
                p[b_ih][H:2 * H] = forget_bias
                p[b_hh][H:2 * H] = 0
    return target


def irnn(input_size, hidden_size, num_layers=1, scale=1.0, std=0.001, seed=None, **kwargs):
    """An identity-initialised ReLU RNN (Le, Jaitly & Hinton 2015): ``weight_hh = scale * I``,
    zero biases, input weights N(0, std). Extra keyword arguments go to ``fr.RNN``.
    (Inside ``Sequential(seed=...)`` apply ``init_(model, recurrent="identity", ...)`` after
    building instead: the model redraws recurrent weights from its seed.)"""
    m = RNN(input_size, hidden_size, num_layers, nonlinearity="relu", seed=seed, **kwargs)
    return init_(m, recurrent="identity", input="normal", bias="zeros", gain=scale, std=std,
                 seed=seed)
