"""Gradient-flow diagnostics: per-step state gradients, vanishing/exploding-gradient curves,
eigenvalues and spectral radii of the recurrent weights, and their plot."""
import numpy as np

from ..layers import LSTM, no_grad
from ..train.layers import ENGINE_CELLS, ENGINE_LAYERS, Recurrent
from ..train.losses import get_loss
from .skip import SkipRecurrent

__all__ = ["spectral_radius", "recurrent_eigenvalues", "state_gradients", "gradient_flow",
           "plot_gradient_flow", "engine_has_leak", "engine_has_state_grads"]


def engine_has_leak():
    """Always True: every fastrnn build's ``fr.RNN`` takes ``leak=`` (leaky-integrator units).
    Kept for code written when that was optional."""
    return True


def engine_has_state_grads():
    """Always True: every fastrnn build's engine ``backward`` can return per-step state gradients
    (``state_grads=True``). Kept for code written when that was optional."""
    return True


def spectral_radius(W):
    """Largest |eigenvalue| of a square matrix."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"spectral_radius needs a square matrix, got shape {W.shape}")
    return float(np.abs(np.linalg.eigvals(W)).max())




def recurrent_eigenvalues(layer, num_layer=0, direction=0):
    """Eigenvalues of ``weight_hh`` of one layer/direction: a dict gate -> eigenvalues of that
    gate's H x H block ({"h": ...} for an Elman RNN; i,f,g,o for LSTM; r,z,n for GRU)."""
    if isinstance(layer, Recurrent):
        layer = layer.layer
    if isinstance(layer, ENGINE_CELLS):
        W = layer.parameters()["weight_hh"]
    elif isinstance(layer, ENGINE_LAYERS):
        W = layer.parameters()[layer._names(num_layer, direction)[1]]
    else:
        raise TypeError(f"expected an engine layer or cell, got {type(layer).__name__}")
    H = layer.hidden_size
    return {g: np.linalg.eigvals(W[i * H:(i + 1) * H].astype(np.float64))
            for i, g in enumerate(layer.kind.gate_names)}


def _step_state_grads(eng, x, hx, dy, dstate):
    """dL/dh_t by stepping the engine one step at a time (unidirectional layers): the state
    gradient arriving at step t's state is exactly what step t+1's backward returns as dh0."""
    T = x.shape[0]
    lstm = isinstance(eng, LSTM)
    states = [hx]
    st = hx
    with no_grad():
        for t in range(T):
            _, st = eng(x[t:t + 1], st)
            states.append(st)
    L, B, H = eng.num_layers, x.shape[1], eng.hidden_size
    out = np.zeros((T, L, B, H), eng.dtype)
    carry = dstate
    for t in range(T - 1, -1, -1):
        g = np.zeros((L, B, H), eng.dtype)
        if carry is not None:
            ch = carry[0] if lstm else carry
            if ch is not None:
                g += ch
        if dy is not None:
            g[-1] += dy[t]
        out[t] = g
        eng(x[t:t + 1], states[t])
        _, carry = eng.backward(None if dy is None else dy[t:t + 1], carry)
    return [np.ascontiguousarray(out[:, l]) for l in range(L)]


def state_gradients(layer, x, hx=None, dy=None, dstate=None, lengths=None, method="auto"):
    """Per-step state gradients of an engine layer: a list (one per layer*direction, PyTorch
    h_n order) of (T, B, H) arrays holding dL/dh_t, the gradient w.r.t. the state leaving step
    t (time-major), for a loss whose gradient w.r.t. the layer's output is ``dy`` and w.r.t. its
    final state is ``dstate``. Parameter gradients are left untouched.

    method: "engine" (the C backward's ``state_grads=True``), "steps" (step the engine one
    step at a time -- one unidirectional layer, no lengths; an independent check of the
    engine) or "auto" (the engine).
    """
    if isinstance(layer, Recurrent):
        layer = layer.layer
    if not isinstance(layer, ENGINE_LAYERS):
        raise TypeError(f"state_gradients takes fr.RNN/LSTM/GRU, got {type(layer).__name__}")
    if method not in ("auto", "engine", "steps"):
        raise ValueError(f"method must be 'auto', 'engine' or 'steps', got {method!r}")
    saved = {k: g.copy() for k, g in layer.grads.items()}
    was_training = layer.training
    bf = layer.batch_first
    try:
        layer.train(True)
        if bf:
            layer.batch_first = False
            x = np.ascontiguousarray(np.swapaxes(x, 0, 1))
            if dy is not None:
                dy = np.ascontiguousarray(np.swapaxes(dy, 0, 1))
        if method != "steps":
            layer(x, hx, lengths)
            layer.backward(dy, dstate, state_grads=True)
            res = [np.array(g) for g in layer.state_grads]
        else:
            if layer.bidirectional or layer.num_layers > 1 or lengths is not None:
                raise ValueError("method='steps' handles one unidirectional layer without lengths; "
                                 "the engine's state_grads handles the rest")
            res = _step_state_grads(layer, x, hx, dy, dstate)
    finally:
        layer.batch_first = bf
        layer.train(was_training)
        for k, g in layer.grads.items():
            g[...] = saved[k]
        layer._cache = None
    return res


def gradient_flow(model, X, y, loss=None, layer=0, lengths=None, method="auto"):
    """Vanishing/exploding-gradient diagnostics of one recurrent layer of a model on a batch.

    Runs the model forward and backward on (X, y) with its loss (or ``loss``), captures the
    gradient reaching recurrent layer ``layer`` (index among the model's recurrent layers) and
    returns a dict:
      norms: (T,) mean over samples of ||dL/dh_t|| for the layer's last layer/direction (the
             quantity the lectures plot against t), per_layer: the same for every
             layer*direction, state_grads: the raw (T, B, H) arrays,
      eigenvalues: recurrent_eigenvalues of that layer, spectral_radius: per gate block.
    The model's parameters and gradients are left as they were.
    """
    recs = model._recurrents()
    if not recs:
        raise ValueError("the model has no recurrent layer")
    if not 0 <= layer < len(recs):
        raise ValueError(f"layer must index one of the model's {len(recs)} recurrent layers")
    rec = recs[layer]
    if isinstance(rec, SkipRecurrent):
        raise ValueError("gradient_flow does not handle SkipRecurrent layers")
    eng = rec.layer
    lossf = get_loss(loss if loss is not None else (model.loss or "mse"))
    X, y, lengths, _ = model._prepare(X, y, lengths)
    # The Recurrent layer records what it passes to its engine on the way forward and back.
    captured = rec.engine_io = {}
    saved = {k: g.copy() for k, g in model.grads.items()}
    try:
        model._clear_caches()
        out = model._forward(X, lengths, True, y=y)
        _, g = lossf.value_and_grad(out, y, model._loss_mask(out, lengths))
        model._backward(g.astype(out.dtype, copy=False))
    finally:
        rec.engine_io = None
        model._clear_caches()
        for k, a in model.grads.items():
            a[...] = saved[k]
    if "backward" not in captured:
        raise RuntimeError("no gradient reached the recurrent layer")
    x, hx, lens = captured["forward"]
    dy, dstate = captured["backward"]
    sg = state_gradients(eng, x, hx, dy, dstate, lens, method)
    per_layer = [np.linalg.norm(a.astype(np.float64), axis=2).mean(1) for a in sg]
    eig = recurrent_eigenvalues(eng, eng.num_layers - 1, 0)
    return {"norms": per_layer[-1 if eng.num_directions == 1 else -2], "per_layer": per_layer,
            "state_grads": sg, "eigenvalues": eig,
            "spectral_radius": {k: float(np.abs(v).max()) for k, v in eig.items()}}


def plot_gradient_flow(flows, path, title=None):
    """Plot ||dL/dh_t|| against t (log scale) and the eigenvalues of W_hh in the complex plane
    with the unit circle, for one ``gradient_flow`` result or a dict label -> result. Saves a
    PNG at ``path`` and returns it. Needs matplotlib (``pip install fastrnn[plot]``)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plot_gradient_flow needs matplotlib: pip install 'fastrnn[plot]'") from None
    if isinstance(flows, dict) and "norms" in flows:
        flows = {"": flows}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    th = np.linspace(0, 2 * np.pi, 200)
    a2.plot(np.cos(th), np.sin(th), "k--", lw=0.8, label="unit circle")
    for label, f in flows.items():
        n = np.asarray(f["norms"])
        line, = a1.semilogy(np.arange(len(n)), np.maximum(n, 1e-30), label=label or None)
        ev = np.concatenate(list(f["eigenvalues"].values()))
        rho = max(f["spectral_radius"].values())
        a2.scatter(ev.real, ev.imag, s=8, color=line.get_color(), alpha=0.7,
                   label=f"{label} (rho={rho:.2f})".strip())
    a1.set_xlabel("time step t")
    a1.set_ylabel(r"mean $\|\partial L/\partial h_t\|$")
    a1.set_title("gradient flow through time")
    a2.set_xlabel("Re")
    a2.set_ylabel("Im")
    a2.set_aspect("equal", adjustable="datalim")
    a2.set_title(r"eigenvalues of $W_{hh}$")
    for a in (a1, a2):
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
