"""Pure-NumPy reference implementation of RNN / LSTM / GRU (forward and BPTT).

This module is the ground truth the tests compare the C engine against and the
NumPy baseline the benchmarks time.  It deliberately imports nothing from the
rest of fastrnn, so a bug shared by the engine and its glue code cannot hide
here as well.

Conventions are PyTorch's (see the README's engine API section):

* x is time-major (T, B, D); h0/c0/h_n/c_n are (num_layers * dirs, B, H) with
  index = layer * dirs + direction; y is (T, B, dirs * H), forward half first.
* Parameter names weight_ih_l{k}[_reverse], weight_hh_l{k}[_reverse],
  bias_ih_l{k}[_reverse], bias_hh_l{k}[_reverse]; gate rows stacked as
  RNN: (act), LSTM: (i, f, g, o), GRU: (r, z, n).
* GRU: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)).
* lengths (B,) in 1..T, any order.  Outputs at positions >= L_b are 0.  The
  forward direction's h_n is its state after position L_b - 1; the reverse
  direction reads positions L_b - 1 .. 0 and its h_n is the state after
  position 0.

All arithmetic runs in x's dtype (float32 or float64); parameters and initial
states are converted to it.
"""

import numpy as np

__all__ = ["forward", "backward", "cell_forward", "cell_backward", "init_params",
           "num_gates", "MODES"]

MODES = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")
_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def num_gates(mode):
    _check_mode(mode)
    return _GATES[mode]


def _check_mode(mode):
    if mode not in _GATES:
        raise ValueError("mode must be one of %s, got %r" % (MODES, mode))


def _sigmoid(a):
    # tanh form: never overflows (1/(1+exp(-a)) warns for a < -88 in float32)
    # and is exact to rounding on both tails in absolute terms.
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _suffix(layer, direction):
    return "_l%d%s" % (layer, "_reverse" if direction == 1 else "")


# ---------------------------------------------------------------------------
# One time step, with the input projection gi = x W_ih^T + b_ih already done.
# Splitting it out lets a whole sequence do its input projection as one GEMM.
# ---------------------------------------------------------------------------

def _step_forward(mode, gi, w_hh, b_hh, h, c, hm=None, peep=None):
    # hm: recurrent dropout's (B, H) mask; W_hh sees h * hm, the gates' own h stays unmasked
    hw = h if hm is None else h * hm
    gh = hw @ w_hh.T
    if b_hh is not None:
        gh = gh + b_hh
    H = gi.shape[1] // _GATES[mode]  # the cell's units (h has fewer with a projection)
    if mode in ("RNN_TANH", "RNN_RELU"):
        a = gi + gh
        h1 = np.tanh(a) if mode == "RNN_TANH" else np.maximum(a, 0)
        return h1, None, {"h": h, "hw": hw, "pre": a, "h1": h1}
    if mode == "LSTM":
        a = gi + gh
        # peep: (p_i, p_f, p_o); i and f look at the old cell state, o at the new one (added
        # only when given: 0 * an infinite c would be NaN)
        ai, af, ao = a[:, 0:H], a[:, H:2 * H], a[:, 3 * H:4 * H]
        if peep is not None:
            ai, af = ai + peep[0:H] * c, af + peep[H:2 * H] * c
        i = _sigmoid(ai)
        f = _sigmoid(af)
        g = np.tanh(a[:, 2 * H:3 * H])
        c1 = f * c + i * g
        o = _sigmoid(ao if peep is None else ao + peep[2 * H:3 * H] * c1)
        tc = np.tanh(c1)
        h1 = o * tc
        return h1, c1, {"h": h, "hw": hw, "c": c, "c1": c1, "i": i, "f": f, "g": g, "o": o, "tc": tc,
                        "peep": peep}
    # GRU
    r = _sigmoid(gi[:, 0:H] + gh[:, 0:H])
    z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    ghn = gh[:, 2 * H:3 * H]
    n = np.tanh(gi[:, 2 * H:3 * H] + r * ghn)
    h1 = (1 - z) * n + z * h
    return h1, None, {"h": h, "hw": hw, "r": r, "z": z, "n": n, "ghn": ghn}


def _step_backward(mode, sc, w_hh, dh1, dc1, hm=None):
    """Returns (dgi, dgh, dh, dc): dgi/dgh are the gradients w.r.t. the input
    and hidden projections (pre-bias sums), dh excludes nothing (complete).
    hm: the recurrent-dropout mask the forward step used (or None)."""
    back = (lambda v: v @ w_hh) if hm is None else (lambda v: (v @ w_hh) * hm)
    if mode in ("RNN_TANH", "RNN_RELU"):
        if mode == "RNN_TANH":
            da = dh1 * (1 - sc["h1"] * sc["h1"])
        else:
            # subgradient 0 at a == 0, as PyTorch's threshold_backward
            da = dh1 * (sc["pre"] > 0)
        dgi = da
        dgh = da
        dh = back(dgh)
        return dgi, dgh, dh, None
    if mode == "LSTM":
        i, f, g, o, tc = sc["i"], sc["f"], sc["g"], sc["o"], sc["tc"]
        peep = sc["peep"]
        H = i.shape[1]
        dao = dh1 * tc * o * (1 - o)
        dct = dh1 * o * (1 - tc * tc)
        if dc1 is not None:
            dct = dct + dc1
        if peep is not None:  # o saw the new cell state
            dct = dct + dao * peep[2 * H:3 * H]
        dai = dct * g * i * (1 - i)
        daf = dct * sc["c"] * f * (1 - f)
        dag = dct * i * (1 - g * g)
        dc = dct * f
        if peep is not None:  # i and f saw the old one
            dc = dc + dai * peep[0:H] + daf * peep[H:2 * H]
            sc["dpeep"] = np.concatenate([(dai * sc["c"]).sum(0), (daf * sc["c"]).sum(0),
                                          (dao * sc["c1"]).sum(0)])
        da = np.concatenate([dai, daf, dag, dao], axis=1)
        dh = back(da)
        return da, da, dh, dc
    # GRU
    r, z, n, h = sc["r"], sc["z"], sc["n"], sc["h"]
    dn = dh1 * (1 - z)
    dz = dh1 * (h - n)
    dan = dn * (1 - n * n)
    dar = dan * sc["ghn"] * r * (1 - r)
    daz = dz * z * (1 - z)
    dgi = np.concatenate([dar, daz, dan], axis=1)
    dgh = np.concatenate([dar, daz, dan * r], axis=1)
    dh = dh1 * z + back(dgh)
    return dgi, dgh, dh, None


# ---------------------------------------------------------------------------
# Layer normalisation (haste's LayerNormLSTM; layer_norm=True)
#   gates = LN_ih(x W_ih^T) + LN_hh(h W_hh^T) + b_ih + b_hh, each LN over the G*H
#   pre-activations of one row with its own gain and bias; GRU's n gate:
#   n = tanh(LN_ih(.)_n + b_in + r * (LN_hh(.)_n + b_hn)); LSTM: h = o * tanh(LN_c(c')),
#   the carried state is c'. eps = LN_EPS, biased variance.
# ---------------------------------------------------------------------------

LN_EPS = 1e-5
LN_PARTS = ("ih", "hh", "c")


def ln_names(layer, direction, mode):
    """The layer-norm parameter names of one layer and direction, in the order
    (ih weight, ih bias, hh weight, hh bias[, c weight, c bias])."""
    s = _suffix(layer, direction)
    parts = LN_PARTS if mode == "LSTM" else LN_PARTS[:2]
    return [f"layer_norm_{p}_{kind}{s}" for p in parts for kind in ("weight", "bias")]


def _layer_norm(v, gain, shift):
    """Row-wise LN of v (B, n); returns (out, (normalised v, std))."""
    centred = v - v.mean(axis=1, keepdims=True)
    std = np.sqrt((centred * centred).mean(axis=1, keepdims=True) + LN_EPS)
    vhat = centred / std
    return vhat * gain + shift, (vhat, std)


def _layer_norm_backward(dout, gain, saved):
    """Gradient of _layer_norm: (dv, dgain, dshift) for dout (B, n)."""
    vhat, std = saved
    n = vhat.shape[1]
    dvhat = dout * gain
    dv = (dvhat - dvhat.mean(axis=1, keepdims=True)
          - vhat * (dvhat * vhat).mean(axis=1, keepdims=True)) / std
    return dv, (dout * vhat).sum(axis=0), dout.sum(axis=0)


def _ln_step_forward(mode, gi, w_hh, b_ih, b_hh, h, c, hm, ln):
    """One layer-normalised step; gi = x W_ih^T without bias; ln: dict part -> (gain, bias)."""
    hw = h if hm is None else h * hm
    H = h.shape[1]
    xi, st_i = _layer_norm(gi, *ln["ih"])
    xh, st_h = _layer_norm(hw @ w_hh.T, *ln["hh"])
    if b_ih is not None:
        xi = xi + b_ih
        xh = xh + b_hh
    sc = {"h": h, "hw": hw, "st_i": st_i, "st_h": st_h, "ln": ln}
    if mode in ("RNN_TANH", "RNN_RELU"):
        pre = xi + xh
        h1 = np.tanh(pre) if mode == "RNN_TANH" else np.maximum(pre, 0)
        sc.update(pre=pre, h1=h1)
        return h1, None, sc
    if mode == "LSTM":
        pre = xi + xh
        i = _sigmoid(pre[:, :H])
        f = _sigmoid(pre[:, H:2 * H])
        g = np.tanh(pre[:, 2 * H:3 * H])
        o = _sigmoid(pre[:, 3 * H:])
        c1 = f * c + i * g
        cl, st_c = _layer_norm(c1, *ln["c"])
        tc = np.tanh(cl)
        sc.update(c=c, i=i, f=f, g=g, o=o, tc=tc, st_c=st_c)
        return o * tc, c1, sc
    r = _sigmoid(xi[:, :H] + xh[:, :H])
    z = _sigmoid(xi[:, H:2 * H] + xh[:, H:2 * H])
    hn = xh[:, 2 * H:]  # LN_hh(.)_n + b_hn, inside r*(.)
    n = np.tanh(xi[:, 2 * H:] + r * hn)
    sc.update(r=r, z=z, n=n, hn=hn)
    return (1 - z) * n + z * h, None, sc


def _ln_step_backward(mode, sc, w_hh, dh1, dc1, hm=None):
    """Returns (dgi, dgh, dh, dc) w.r.t. the raw projections x W_ih^T and h W_hh^T; the bias
    and layer-norm gradients of the step go to sc["dln"] = (db_ih, db_hh, {name: grad})."""
    ln = sc["ln"]
    extra = {}
    direct = 0
    if mode in ("RNN_TANH", "RNN_RELU"):
        if mode == "RNN_TANH":
            dpre = dh1 * (1 - sc["h1"] ** 2)
        else:
            dpre = dh1 * (sc["pre"] > 0)
        d_i = d_h = dpre
    elif mode == "LSTM":
        i, f, g, o, tc = sc["i"], sc["f"], sc["g"], sc["o"], sc["tc"]
        dcl = dh1 * o * (1 - tc * tc)
        dc_ln, extra["c_weight"], extra["c_bias"] = _layer_norm_backward(dcl, ln["c"][0], sc["st_c"])
        dct = dc_ln if dc1 is None else dc_ln + dc1
        d_i = d_h = np.concatenate([dct * g * i * (1 - i), dct * sc["c"] * f * (1 - f),
                                    dct * i * (1 - g * g), dh1 * tc * o * (1 - o)], axis=1)
        dc = dct * f
    else:
        r, z, n = sc["r"], sc["z"], sc["n"]
        dpn = dh1 * (1 - z) * (1 - n * n)
        dpr = dpn * sc["hn"] * r * (1 - r)
        dpz = dh1 * (sc["h"] - n) * z * (1 - z)
        d_i = np.concatenate([dpr, dpz, dpn], axis=1)
        d_h = np.concatenate([dpr, dpz, dpn * r], axis=1)
        direct = dh1 * z
    dgi, extra["ih_weight"], extra["ih_bias"] = _layer_norm_backward(d_i, ln["ih"][0], sc["st_i"])
    dgh, extra["hh_weight"], extra["hh_bias"] = _layer_norm_backward(d_h, ln["hh"][0], sc["st_h"])
    back = dgh @ w_hh
    if hm is not None:
        back = back * hm
    sc["dln"] = (d_i.sum(axis=0), d_h.sum(axis=0), extra)
    return dgi, dgh, direct + back, (dc if mode == "LSTM" else None)


# ---------------------------------------------------------------------------
# Single cell (one step, full input projection included)
# ---------------------------------------------------------------------------

def cell_forward(mode, w_ih, w_hh, b_ih, b_hh, x, h, c=None):
    """One step.  x (B, D), h (B, H), c (B, H) for LSTM (None -> zeros).
    Returns (h1, cache), or (h1, c1, cache) for LSTM."""
    _check_mode(mode)
    x = np.asarray(x)
    dt = x.dtype
    w_ih = np.asarray(w_ih, dtype=dt)
    w_hh = np.asarray(w_hh, dtype=dt)
    b_ih = None if b_ih is None else np.asarray(b_ih, dtype=dt)
    b_hh = None if b_hh is None else np.asarray(b_hh, dtype=dt)
    h = np.asarray(h, dtype=dt)
    H = w_hh.shape[1]
    if mode == "LSTM":
        c = np.zeros((x.shape[0], H), dt) if c is None else np.asarray(c, dtype=dt)
    else:
        c = None
    gi = x @ w_ih.T
    if b_ih is not None:
        gi = gi + b_ih
    h1, c1, sc = _step_forward(mode, gi, w_hh, b_hh, h, c)
    cache = {"mode": mode, "x": x, "w_ih": w_ih, "w_hh": w_hh,
             "has_bias": b_ih is not None, "step": sc}
    if mode == "LSTM":
        return h1, c1, cache
    return h1, cache


def cell_backward(cache, dh1, dc1=None):
    """Returns (dx, dh, grads), or (dx, dh, dc, grads) for LSTM.  grads has keys
    weight_ih, weight_hh and, when the cell has biases, bias_ih, bias_hh
    (fastrnn's cell parameter names).  None cotangents mean zeros."""
    mode = cache["mode"]
    x, w_ih, w_hh, sc = cache["x"], cache["w_ih"], cache["w_hh"], cache["step"]
    if dh1 is None:
        dh1 = np.zeros_like(sc["h"])
    dh1 = np.asarray(dh1, dtype=x.dtype)
    if dc1 is not None:
        dc1 = np.asarray(dc1, dtype=x.dtype)
    dgi, dgh, dh, dc = _step_backward(mode, sc, w_hh, dh1, dc1)
    grads = {"weight_ih": dgi.T @ x, "weight_hh": dgh.T @ sc["h"]}
    if cache["has_bias"]:
        grads["bias_ih"] = dgi.sum(axis=0)
        grads["bias_hh"] = dgh.sum(axis=0)
    dx = dgi @ w_ih
    if mode == "LSTM":
        return dx, dh, dc, grads
    return dx, dh, grads


# ---------------------------------------------------------------------------
# One direction of one layer over a (sub)sequence with no padding in it
# ---------------------------------------------------------------------------

def _run_dir(mode, w, inp, h0, c0, reverse, m=None, peep=None, ln=None, hr=None):
    """inp (T, B, Din) all valid.  Returns (out (T, B, H), hT, cT, cache).
    m: this run's variant masks (see forward) sliced to its rows, or None.
    hr: LSTM projection weight_hr (P, H): the state and output become o*tanh(c) @ hr.T."""
    m = m or {}
    hm, zh, zc = m.get("hmask"), m.get("zh"), m.get("zc")
    w_ih, w_hh, b_ih, b_hh = w
    T, B, Din = inp.shape
    H = w_hh.shape[1]
    # one GEMM for the input projection of every (t, b) row
    gi_all = (inp.reshape(T * B, Din) @ w_ih.T).reshape(T, B, -1)
    if b_ih is not None and ln is None:  # layer norm adds the biases after normalising
        gi_all = gi_all + b_ih
    out = np.empty((T, B, H), dtype=inp.dtype)
    order = range(T - 1, -1, -1) if reverse else range(T)
    h, c = h0, c0
    steps = [None] * T
    for t in order:
        if ln is None:
            hn, cn, steps[t] = _step_forward(mode, gi_all[t], w_hh, b_hh, h, c, hm, peep)
        else:
            hn, cn, steps[t] = _ln_step_forward(mode, gi_all[t], w_hh, b_ih, b_hh, h, c, hm, ln)
        if hr is not None:  # projection (LSTMP): h = W_hr (o * tanh(c))
            steps[t]["hc"] = hn
            hn = hn @ hr.T
        if zh is not None:
            # zoneout: each unit keeps its previous value with weight zh (c: zc)
            hn = zh[t] * h + (1 - zh[t]) * hn
            if cn is not None:
                cn = zc[t] * c + (1 - zc[t]) * cn
        h, c = hn, cn
        out[t] = h
    cache = {"inp": inp, "steps": steps, "reverse": reverse, "hm": hm, "zh": zh, "zc": zc,
             "ln": ln is not None, "hr": hr}
    return out, h, c, cache


def _run_dir_backward(mode, w, cache, dout, dhT, dcT):
    """dout (T, B, H) or None; dhT/dcT (B, H) or None.
    Returns (dinp, dh0, dc0, (dw_ih, dw_hh, db_ih, db_hh))."""
    w_ih, w_hh, b_ih, b_hh = w
    inp, steps = cache["inp"], cache["steps"]
    T, B, Din = inp.shape
    H = w_hh.shape[1]
    dt = inp.dtype
    GH = w_ih.shape[0]
    hr = cache.get("hr")
    dh = np.zeros((B, H), dt) if dhT is None else dhT
    dc = None
    if mode == "LSTM":
        dc = np.zeros((B, GH // 4), dt) if dcT is None else dcT
    dhr = None if hr is None else np.zeros(hr.shape, dt)
    dgi_all = np.zeros((T, B, GH), dt)
    dgh_all = np.zeros((T, B, GH), dt)
    hprev_all = np.empty((T, B, H), dt)
    order = range(T) if cache["reverse"] else range(T - 1, -1, -1)
    zh, zc = cache["zh"], cache["zc"]
    dpeep = None
    dln = None  # layer norm: (db_ih, db_hh, {name: grad}) summed over the steps
    step_backward = _ln_step_backward if cache["ln"] else _step_backward
    for t in order:
        dh1 = dh if dout is None else dh + dout[t]
        sc = steps[t]
        if hr is not None:  # h = hc @ hr.T
            dhr += dh1.T @ sc["hc"]
            dh1 = dh1 @ hr
        if zh is not None:
            keep_h, dh1 = zh[t] * dh1, (1 - zh[t]) * dh1
            if dc is not None:
                keep_c, dc = zc[t] * dc, (1 - zc[t]) * dc
        dgi_all[t], dgh_all[t], dh, dc = step_backward(mode, sc, w_hh, dh1, dc, cache["hm"])
        if "dln" in sc:
            bi, bh, ex = sc.pop("dln")
            dln = (bi, bh, ex) if dln is None else (dln[0] + bi, dln[1] + bh,
                                                     {q: dln[2][q] + ex[q] for q in ex})
        if "dpeep" in sc:
            dpeep = sc.pop("dpeep") if dpeep is None else dpeep + sc.pop("dpeep")
        if zh is not None:
            dh = dh + keep_h
            if dc is not None:
                dc = dc + keep_c
        hprev_all[t] = sc["hw"]
    # weight gradients summed over all (t, b) rows in one GEMM each
    flat = dgi_all.reshape(T * B, GH)
    flat_h = dgh_all.reshape(T * B, GH)
    dinp = (flat @ w_ih).reshape(T, B, Din)
    dw_ih = flat.T @ inp.reshape(T * B, Din)
    dw_hh = flat_h.T @ hprev_all.reshape(T * B, H)
    db_ih = None if b_ih is None else flat.sum(axis=0)
    db_hh = None if b_hh is None else flat_h.sum(axis=0)
    extra = dpeep
    if cache["ln"]:  # the biases sit after the normalisations: their own sums
        db_ih = None if b_ih is None else dln[0]
        db_hh = None if b_hh is None else dln[1]
        extra = dln[2]
    return dinp, dh, dc, (dw_ih, dw_hh, db_ih, db_hh, extra, dhr)


# ---------------------------------------------------------------------------
# Full multi-layer, optionally bidirectional, optionally ragged network
# ---------------------------------------------------------------------------

def forward(mode, params, x, h0=None, c0=None, lengths=None, num_layers=1,
            bidirectional=False, masks=None):
    """Returns (y, h_n, c_n, cache); c_n is None unless mode == 'LSTM'.

    masks: None, or per layer and direction (index layer*dirs+dir) a dict of the
    cell variants' fixed masks, any of them None or absent:
      hmask (B, H)    recurrent dropout: W_hh multiplies h * hmask
      zh, zc (T,B,H)  zoneout: h = zh*h_prev + (1-zh)*h_cell at position (t, b),
                      c likewise with zc (LSTM; h_cell = o*tanh(c_cell))
      wmask (G*H, H)  weight dropout: W_hh * wmask replaces W_hh
    LSTM peepholes: params weight_ch_l{k}[_reverse] (3H,) = p_i, p_f, p_o give
    i = sig(. + p_i c_{t-1}), f = sig(. + p_f c_{t-1}), o = sig(. + p_o c_t).
    Layer norm (see _ln_step_forward): params layer_norm_{ih,hh}_{weight,bias}_l{k}[_reverse]
    (G*H,) and, LSTM, layer_norm_c_{weight,bias}_l{k}[_reverse] (H,) (names: ln_names).

    params: dict with PyTorch names; without bias_ih_l0 the network has no bias.
    x (T, B, D); h0/c0 (num_layers*dirs, B, H) or None (zeros);
    lengths (B,) ints in 1..T or None (all T).
    Batched over B when lengths is None; otherwise each sequence is run alone
    on its valid slice (simple and obviously correct, not fast).
    """
    _check_mode(mode)
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError("x must be (T, B, D), got shape %s" % (x.shape,))
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError("x must be a floating array, got %s" % x.dtype)
    dt = x.dtype
    T, B, _ = x.shape
    L = int(num_layers)
    dirs = 2 if bidirectional else 1
    has_bias = "bias_ih_l0" in params
    w = {}
    for k in range(L):
        for d in range(dirs):
            s = _suffix(k, d)
            w[(k, d)] = (
                np.asarray(params["weight_ih" + s], dtype=dt),
                np.asarray(params["weight_hh" + s], dtype=dt),
                np.asarray(params["bias_ih" + s], dtype=dt) if has_bias else None,
                np.asarray(params["bias_hh" + s], dtype=dt) if has_bias else None,
            )
    H = w[(0, 0)][1].shape[1]  # the size of h: the cell's units, or P with a projection
    G = _GATES[mode]
    Hc = w[(0, 0)][0].shape[0] // G  # the cell's units (c's size)
    hrs = {}
    if mode == "LSTM" and "weight_hr_l0" in params:  # PyTorch's proj_size
        hrs = {(k, d): np.asarray(params["weight_hr" + _suffix(k, d)], dtype=dt)
               for k in range(L) for d in range(dirs)}
    peeps = {}
    if mode == "LSTM" and "weight_ch_l0" in params:
        peeps = {(k, d): np.asarray(params["weight_ch" + _suffix(k, d)], dtype=dt)
                 for k in range(L) for d in range(dirs)}
    if hrs and (peeps or "layer_norm_ih_weight_l0" in params):
        raise ValueError("projections combine with neither peepholes nor layer norm here")
    lns = {}
    if "layer_norm_ih_weight_l0" in params:
        if peeps:
            raise ValueError("layer norm and peepholes cannot be combined")
        for k in range(L):
            for d in range(dirs):
                names = ln_names(k, d, mode)
                arrs = [np.asarray(params[nm], dtype=dt) for nm in names]
                lns[(k, d)] = {p: (arrs[2 * j], arrs[2 * j + 1])
                               for j, p in enumerate(LN_PARTS[:len(arrs) // 2])}
    if w[(0, 0)][0].shape != (G * Hc, x.shape[2]) or (not hrs and Hc != H):
        raise ValueError("weight_ih_l0 shape %s does not match mode %s, H=%d, D=%d"
                         % (w[(0, 0)][0].shape, mode, H, x.shape[2]))
    if h0 is None:
        h0 = np.zeros((L * dirs, B, H), dt)
    h0 = np.asarray(h0, dtype=dt)
    if h0.shape != (L * dirs, B, H):
        raise ValueError("h0 must be %s, got %s" % ((L * dirs, B, H), h0.shape))
    if mode == "LSTM":
        if c0 is None:
            c0 = np.zeros((L * dirs, B, Hc), dt)
        c0 = np.asarray(c0, dtype=dt)
        if c0.shape != (L * dirs, B, Hc):
            raise ValueError("c0 must be %s, got %s" % ((L * dirs, B, Hc), c0.shape))
    else:
        c0 = None
    if lengths is not None:
        lengths = np.asarray(lengths)
        if lengths.shape != (B,) or not np.issubdtype(lengths.dtype, np.integer):
            raise ValueError("lengths must be an int array of shape (%d,)" % B)
        if lengths.min() < 1 or lengths.max() > T:
            raise ValueError("lengths must lie in 1..%d" % T)
        lengths = lengths.astype(np.int64)

    masks = [dict(mk or {}) for mk in masks] if masks is not None else [{}] * (L * dirs)
    if len(masks) != L * dirs:
        raise ValueError("masks must have one entry per layer and direction (%d)" % (L * dirs))
    wmasks = {}
    for k in range(L):
        for d in range(dirs):
            wm = masks[k * dirs + d].get("wmask")
            if wm is not None:
                wmasks[(k, d)] = np.asarray(wm, dtype=dt)
                w_ih_, w_hh_, b_ih_, b_hh_ = w[(k, d)]
                w[(k, d)] = (w_ih_, w_hh_ * wmasks[(k, d)], b_ih_, b_hh_)

    def rows(mk, b, n):
        """The masks of sequence b's valid part."""
        out = {}
        if mk.get("hmask") is not None:
            out["hmask"] = np.asarray(mk["hmask"], dtype=dt)[b:b + 1]
        for z in ("zh", "zc"):
            if mk.get(z) is not None:
                out[z] = np.asarray(mk[z], dtype=dt)[:n, b:b + 1]
        return out

    h_n = np.zeros((L * dirs, B, H), dt)
    c_n = np.zeros((L * dirs, B, Hc), dt) if mode == "LSTM" else None
    runs = {}
    inp = x
    for k in range(L):
        out = np.zeros((T, B, dirs * H), dt)
        for d in range(dirs):
            idx = k * dirs + d
            rev = d == 1
            cc = None if c0 is None else c0[idx]
            if lengths is None:
                whole = {z: np.asarray(masks[idx][z], dtype=dt)
                         for z in ("hmask", "zh", "zc") if masks[idx].get(z) is not None}
                o, hT, cT, rc = _run_dir(mode, w[(k, d)], inp, h0[idx], cc, rev, whole, peeps.get((k, d)),
                                         lns.get((k, d)), hrs.get((k, d)))
                out[:, :, d * H:(d + 1) * H] = o
                h_n[idx] = hT
                if c_n is not None:
                    c_n[idx] = cT
                runs[(k, d)] = rc
            else:
                per_seq = []
                for b in range(B):
                    n = lengths[b]
                    o, hT, cT, rc = _run_dir(
                        mode, w[(k, d)], inp[:n, b:b + 1], h0[idx, b:b + 1],
                        None if cc is None else cc[b:b + 1], rev, rows(masks[idx], b, n), peeps.get((k, d)),
                        lns.get((k, d)), hrs.get((k, d)))
                    out[:n, b:b + 1, d * H:(d + 1) * H] = o
                    h_n[idx, b:b + 1] = hT
                    if c_n is not None:
                        c_n[idx, b:b + 1] = cT
                    per_seq.append(rc)
                runs[(k, d)] = per_seq
        inp = out
    y = inp
    cache = {"mode": mode, "num_layers": L, "dirs": dirs, "H": H, "T": T, "B": B,
             "D": x.shape[2], "dtype": dt, "lengths": lengths, "w": w,
             "has_bias": has_bias, "runs": runs, "wmasks": wmasks, "peepholes": bool(peeps),
             "layer_norm": bool(lns), "Hc": Hc, "proj": bool(hrs)}
    return y, h_n, c_n, cache


def backward(cache, dy=None, dh_n=None, dc_n=None):
    """Returns (dx, dh0, dc0, grads); dc0 is None unless LSTM.  grads has the
    same keys as the params given to forward.  None cotangents mean zeros.
    dy at padded positions (t >= L_b) is ignored: those outputs are constants."""
    mode, L, dirs, H = cache["mode"], cache["num_layers"], cache["dirs"], cache["H"]
    T, B, D, dt = cache["T"], cache["B"], cache["D"], cache["dtype"]
    lengths, w, runs = cache["lengths"], cache["w"], cache["runs"]
    lstm = mode == "LSTM"
    Hc = cache.get("Hc", H)
    dy = np.zeros((T, B, dirs * H), dt) if dy is None else np.asarray(dy, dtype=dt)
    dh_n = np.zeros((L * dirs, B, H), dt) if dh_n is None else np.asarray(dh_n, dtype=dt)
    if lstm:
        dc_n = np.zeros((L * dirs, B, Hc), dt) if dc_n is None else np.asarray(dc_n, dtype=dt)
    if dy.shape != (T, B, dirs * H):
        raise ValueError("dy must be %s, got %s" % ((T, B, dirs * H), dy.shape))
    if dh_n.shape != (L * dirs, B, H):
        raise ValueError("dh_n must be %s, got %s" % ((L * dirs, B, H), dh_n.shape))

    dh0 = np.zeros((L * dirs, B, H), dt)
    dc0 = np.zeros((L * dirs, B, Hc), dt) if lstm else None
    grads = {}
    dout_all = dy
    for k in range(L - 1, -1, -1):
        din_dim = D if k == 0 else dirs * H
        dinp_all = np.zeros((T, B, din_dim), dt)
        for d in range(dirs):
            idx = k * dirs + d
            sl = slice(d * H, (d + 1) * H)
            if lengths is None:
                dinp, dh, dc, gw = _run_dir_backward(
                    mode, w[(k, d)], runs[(k, d)], dout_all[:, :, sl], dh_n[idx],
                    dc_n[idx] if lstm else None)
                dinp_all += dinp
                dh0[idx] = dh
                if lstm:
                    dc0[idx] = dc
            else:
                gw = None
                for b in range(B):
                    n = lengths[b]
                    dinp, dh, dc, gwb = _run_dir_backward(
                        mode, w[(k, d)], runs[(k, d)][b], dout_all[:n, b:b + 1, sl],
                        dh_n[idx, b:b + 1], dc_n[idx, b:b + 1] if lstm else None)
                    dinp_all[:n, b:b + 1] += dinp
                    dh0[idx, b:b + 1] = dh
                    if lstm:
                        dc0[idx, b:b + 1] = dc
                    gw = gwb if gw is None else tuple(
                        None if a is None else {q: a[q] + bb[q] for q in a} if isinstance(a, dict)
                        else a + bb for a, bb in zip(gw, gwb))
            s = _suffix(k, d)
            grads["weight_ih" + s] = gw[0]
            # weight dropout: the gradient of W_hh reaches it through its mask
            wm = cache["wmasks"].get((k, d))
            grads["weight_hh" + s] = gw[1] if wm is None else gw[1] * wm
            if cache["has_bias"]:
                grads["bias_ih" + s] = gw[2]
                grads["bias_hh" + s] = gw[3]
            if cache["peepholes"]:
                grads["weight_ch" + s] = gw[4]
            if cache["layer_norm"]:
                for q, v in gw[4].items():  # q: "ih_weight", ...
                    grads[f"layer_norm_{q}" + s] = v
            if cache.get("proj"):
                grads["weight_hr" + s] = gw[5]
        dout_all = dinp_all
    return dout_all, dh0, dc0, grads


def init_params(mode, input_size, hidden_size, num_layers=1, bidirectional=False,
                bias=True, dtype=np.float64, rng=None, proj_size=0):
    """PyTorch-named parameters, each U(-1/sqrt(H), 1/sqrt(H)).
    rng: np.random.Generator, an int seed, or None (fresh entropy).
    Drawn in PyTorch's registration order (per layer, per direction:
    weight_ih, weight_hh, bias_ih, bias_hh)."""
    _check_mode(mode)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    G, H = _GATES[mode], int(hidden_size)
    dirs = 2 if bidirectional else 1
    bound = 1.0 / np.sqrt(H)
    params = {}
    R = int(proj_size) or H  # proj_size (LSTM): h has P units, weight_hr_l{k} (P, H)
    for k in range(int(num_layers)):
        din = int(input_size) if k == 0 else dirs * R
        for d in range(dirs):
            s = _suffix(k, d)
            shapes = [("weight_ih" + s, (G * H, din)), ("weight_hh" + s, (G * H, R))]
            if bias:
                shapes += [("bias_ih" + s, (G * H,)), ("bias_hh" + s, (G * H,))]
            if proj_size:
                shapes += [("weight_hr" + s, (R, H))]
            for name, shape in shapes:
                params[name] = rng.uniform(-bound, bound, size=shape).astype(dtype)
    return params
