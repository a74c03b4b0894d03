"""Recurrent layers and cells with PyTorch's parameter layout, NumPy in and NumPy out.

The recurrence itself runs in C (fastrnn._core); this module validates user input, owns the
parameters and gradients, and chains layers and directions.
"""
import contextlib
import functools
import threading
import warnings

import numpy as np

from . import _core
from ._cells import CELLS
from ._checks import INT_MAX, as_array, check_dtype, copy_state_dict, in_range, positive_int
from ._checks import seed as check_seed

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "no_grad", "is_grad_enabled",
           "set_num_threads", "get_num_threads"]

# ---- threads and the plan ----------------------------------------------------------------------
# Batch rows never interact inside a recurrence, so the time loop of a layer is split into row
# ranges (and directions) that run concurrently on the C worker pool (csrc/pool.c); the
# whole-sequence GEMMs are split into row blocks the same way. BLAS itself stays single-threaded:
# its worker threads spin-wait between calls, which on a shared machine turns every per-step GEMM
# into a stall, while our workers poll for only 50 us before they sleep, and never synchronise
# inside the time loop. Whether and how to split is decided in csrc/plan.c; this module only
# turns its counts into row ranges.


def set_num_threads(n):
    """Threads fastrnn uses for its time loops and GEMMs (default: OPENBLAS_NUM_THREADS, else
    the number of CPUs)."""
    _core.set_pool_threads(positive_int(n, "num_threads"))


def get_num_threads():
    return _core.get_pool_threads()


@functools.lru_cache(maxsize=256)
def _chunks(total, parts):
    n = max(1, min(parts, total))
    bounds = [total * i // n for i in range(n + 1)]
    return tuple(zip(bounds[:-1], bounds[1:]))


def _row_ranges(cell, T, B, H, dirs):
    """Row ranges per direction for the time loops (directions first occupy the threads)."""
    return _chunks(B, _core.plan_row_ranges(cell, T, B, H, dirs))


def _run(jobs):
    """Run kernel calls made with defer=True concurrently (fastrnn/_pool.h); the caller runs the
    first. Arguments were checked when each job was made, so running cannot fail."""
    _core.run_jobs(jobs)


def _project_pieces(x, w_ih, act):
    """(x, w_ih, act) of each block of the T*B rows that act = x w_ih^T splits into."""
    T, B, D = x.shape
    GH = act.shape[2]
    parts = _core.plan_parts(T * B * GH * D, T * B)
    if parts == 1:  # the common small case: no reshaping and slicing (~3 us a call)
        return [(x, w_ih, act)]
    x2, a2 = x.reshape(T * B, D), act.reshape(T * B, GH)
    return [(x2[r0:r1][None], w_ih, a2[r0:r1][None]) for r0, r1 in _chunks(T * B, parts)]


def _project(cell, x, w_ih, act):
    """act = x w_ih^T, split over blocks of the T*B rows."""
    _run([_core.project(cell, xs, w, acts, defer=True) for xs, w, acts in _project_pieces(x, w_ih, act)])


# A batch of one has no rows to share: each step of its time loop is cut into two tasks by
# hidden units, which two threads claim step by step (fr_recur_units), when a step has enough
# work to pay for the hand-over (csrc/plan.c). Part 0 (run by the caller) can finish everything
# alone, so a busy pool or a descheduled worker only costs the speed-up, never progress.


def _min_rows(chunks):
    return min(b1 - b0 for b0, b1 in chunks)


def _params_jobs(cell, xh, w_ih, dgx, dgh, dx, accumulate, grads, dwc, lengths=None, ln=False, proj=None):
    """The jobs of _params_grads (dW +=: a wavefront chunk's jobs add its steps' share)."""
    T, B, W = xh.shape
    D = w_ih.shape[1]
    GH = dgx.shape[2]
    parts = _core.plan_parts(T * B * GH * W, GH)
    dw_ih, dw_hh = grads
    return [_core.backward_params(cell, g0=g0, g1=g1, r0=r0, r1=r1, x=xh,
                                  w_ih=w_ih, hprev=xh, h_col=D, dgx=dgx, dgh=dgh, dx=dx, accumulate_dx=accumulate,
                                  dw_ih=dw_ih, dw_hh=dw_hh, db_ih=None, db_hh=None, dwc=dwc, lengths=lengths, ln=ln,
                                  proj=proj is not None, dhs=proj and proj[0], hcell=proj and proj[1],
                                  dw_hr=proj and proj[2], defer=True)
            for (g0, g1), (r0, r1) in zip(_chunks(GH, parts), _chunks(T * B, parts))]


def _params_grads(cell, xh, w_ih, dgx, dgh, dx, accumulate, grads, dwc, lengths=None, ln=False, proj=None):
    """Whole-sequence weight and input gradients (grads: dw_ih, dw_hh), split over weight rows
    and input rows (the bias gradients are summed inside the reverse loops).
    xh (T,B,D+H) is the forward's [x | hprev] buffer; dwc (G*H, D+H) scratch.
    proj: an LSTM projection's (dhs, hcell, dw_hr), dW_hr's rows split with the gate rows."""
    _run(_params_jobs(cell, xh, w_ih, dgx, dgh, dx, accumulate, grads, dwc, lengths, ln, proj))


class _GradState(threading.local):
    # a class attribute, so a thread that never entered no_grad() finds the default without
    # getattr's missing-attribute path (~0.4 us, a tenth of a B=1 cell step)
    enabled = True


_grad_state = _GradState()


def is_grad_enabled():
    """False inside a `no_grad()` block: forwards then keep no cache for backward."""
    return _grad_state.enabled


@contextlib.contextmanager
def no_grad():
    """Inference without saving activations, whatever the layers' train/eval mode."""
    prev = is_grad_enabled()
    _grad_state.enabled = False
    try:
        yield
    finally:
        _grad_state.enabled = prev




def _as_array(a, name, dtype, shape=None, ndim=None, layout="", features=None):
    """`a` as a C-contiguous, aligned, native-byte-order array of `dtype`; arrays of another
    dtype are refused, not cast (the same dtype in the other byte order is converted).
    Shapes are checked before anything is copied (a zero-stride view can be huge)."""
    if isinstance(a, np.ndarray):
        if a.dtype != dtype and a.dtype != dtype.newbyteorder():
            raise TypeError(f"{name} must have dtype {dtype.name} (the layer's dtype), got {a.dtype.str}")
    else:
        a = as_array(a, name)
        if a.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {a.shape}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if features is not None and a.shape[-1] != features:
        raise ValueError(f"{name} must have {features} features (input_size) in its last axis, got shape {a.shape}")
    if a.ndim and max(a.shape) > INT_MAX:
        raise ValueError(f"{name} has a dimension beyond {INT_MAX} (2**31 - 1, the 32-bit BLAS limit): "
                         f"shape {a.shape}")
    if a.dtype != dtype:
        a = a.astype(dtype)
    flags = a.flags
    if flags.c_contiguous and flags.aligned:    # what np.require returns, without its ~2 us
        return a
    return np.require(a, requirements=("C_CONTIGUOUS", "ALIGNED"))


def _as_lengths(lengths, T, B):
    lengths = np.asarray(lengths)
    if lengths.dtype.kind not in "iu":
        raise TypeError(f"lengths must be an integer array, got dtype {lengths.dtype}")
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape (batch,) = ({B},), got {lengths.shape}")
    if B and (lengths.min() < 1 or lengths.max() > T):
        raise ValueError(f"lengths must lie in 1..{T} (the sequence length), got min {lengths.min()}, max {lengths.max()}")
    return np.ascontiguousarray(lengths, dtype=np.intc)


class _Exclusive:
    """Holds a module's training guard (``_Module._busy``) for a ``with`` block. A class, not a
    generator context manager: entered twice per training step, where contextlib's machinery
    cost a few microseconds a time, a measurable share of a small model's step."""

    __slots__ = ("module", "what")

    def __init__(self, module, what):
        self.module, self.what = module, what

    def __enter__(self):
        if not self.module._busy.acquire(blocking=False):
            raise RuntimeError(
                f"{type(self.module).__name__}.{self.what} in training mode overlapped another "
                "training-mode call from another thread: one layer keeps one training cache. Share "
                "a layer between threads for inference only (eval() or no_grad()), and train one "
                "model per thread.")

    def __exit__(self, *exc):
        self.module._busy.release()


class _Module:
    """Parameters, gradients and train/eval state shared by layers and cells."""

    def __init__(self, dtype, seed):
        seed = check_seed(seed)
        self.dtype = check_dtype(dtype)
        self._rng = np.random.default_rng(seed)
        self._params = {}
        self.grads = {}
        self.training = True
        self._init_transient()

    def _init_transient(self):
        """What is per process and per thread, never saved or copied: the training cache's
        guard and the per-thread inference buffers."""
        # Held while a training-mode forward or backward runs: a second thread that overlaps
        # it would overwrite the one cache and buffers that backward reads, so it is refused.
        self._busy = threading.Lock()
        self._local = threading.local()

    def __getstate__(self):
        state = self.__dict__.copy()
        for k in ("_busy", "_local", "_bufs", "_cache", "_tape"):
            state.pop(k, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_transient()
        if hasattr(type(self), "_buffer"):
            self._bufs, self._cache = {}, None
        else:
            self._tape = []

    def _exclusive(self, what):
        return _Exclusive(self, what)

    def _bernoulli(self, out, p, scale=1.0):
        """Fill `out` (of the layer's dtype) with `scale` with probability p and 0 otherwise:
        one seed from the layer's generator, the elements from a counter-based hash in C
        (fr_bernoulli). Drawing a T*B*H zoneout mask element by element from the generator
        cost as much as a plain RNN's whole training step."""
        return _core.bernoulli(out, p, scale, int(self._rng.bit_generator.random_raw()))

    def _add_param(self, name, shape, bound):
        self._params[name] = self._rng.uniform(-bound, bound, size=shape).astype(self.dtype)
        self.grads[name] = np.zeros(shape, dtype=self.dtype)

    def parameters(self):
        """Live parameter arrays by name; optimizers update them in place."""
        return self._params

    def state_dict(self):
        return {k: v.copy() for k, v in self._params.items()}

    def load_state_dict(self, state_dict):
        """Copy values in (cast to the layer's dtype); everything is checked before anything
        is written, so a bad state dict leaves the model untouched."""
        copy_state_dict(self._params, state_dict)

    def zero_grad(self):
        for g in self.grads.values():
            g.fill(0)

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    @property
    def kind(self):
        """The cell kind (fastrnn._cells.CellKind): its name, gate count and gate names, aux
        and state counts, as the C cell table has them."""
        return self._kind

    def _recording(self):
        return self.training and is_grad_enabled()

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)


class _RNNBase(_Module):
    mode = None
    leak = 1.0

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None,
                 recurrent_dropout=0.0, zoneout=0.0, weight_dropout=0.0, peepholes=False,
                 layer_norm=False, proj_size=0):
        super().__init__(dtype, seed)
        if not isinstance(peepholes, (bool, np.bool_)):
            raise TypeError(f"peepholes must be True or False, got {peepholes!r}")
        self.peepholes = bool(peepholes)
        if not isinstance(layer_norm, (bool, np.bool_)):
            raise TypeError(f"layer_norm must be True or False, got {layer_norm!r}")
        self.layer_norm = bool(layer_norm)
        if self.layer_norm and self.peepholes:
            raise ValueError("layer_norm and peepholes cannot be combined (haste's LayerNormLSTM has no "
                             "peepholes; LN_c would change what the output gate peeks at)")
        if self.peepholes and self.mode != "LSTM":
            raise ValueError(f"peepholes need a cell state: an LSTM option, not {type(self).__name__}'s")
        # each a probability p < 1: p = 1 would drop every recurrent input or weight, or freeze
        # the state for ever
        self.recurrent_dropout = in_range(recurrent_dropout, "recurrent_dropout", 0, 1)
        self.zoneout = in_range(zoneout, "zoneout", 0, 1)
        self.weight_dropout = in_range(weight_dropout, "weight_dropout", 0, 1)
        self.input_size = positive_int(input_size, "input_size")
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        self.proj_size = self._check_proj(proj_size)
        self._R = self.proj_size or self.hidden_size  # the size of h (and of y per direction)
        self.num_layers = positive_int(num_layers, "num_layers")
        dropout = in_range(dropout, "dropout", 0, 1)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self._kind = CELLS[self.mode]  # the cell kind's sizes (see the `kind` property)
        self._cell = self._kind.code
        H, G, R = self.hidden_size, self._kind.gates, self._R
        bound = 1.0 / np.sqrt(H)
        for layer in range(self.num_layers):
            d_in = self.input_size if layer == 0 else R * self.num_directions
            for direction in range(self.num_directions):
                sfx = f"_l{layer}" + ("_reverse" if direction else "")
                self._add_param("weight_ih" + sfx, (G * H, d_in), bound)
                self._add_param("weight_hh" + sfx, (G * H, R), bound)
                if self.bias:
                    self._add_param("bias_ih" + sfx, (G * H,), bound)
                    self._add_param("bias_hh" + sfx, (G * H,), bound)
                if self.proj_size:  # PyTorch's name, shape and place (after the biases)
                    self._add_param("weight_hr" + sfx, (self.proj_size, H), bound)
                if self.peepholes:  # p_i, p_f, p_o: ONNX's P, but in our gate order
                    self._add_param("weight_ch" + sfx, (3 * H,), bound)
                if self.layer_norm:  # gains 1, biases 0 (haste's LayerNormLSTM)
                    for name in self._ln_names(layer, direction):
                        n = G * H if "_ih_" in name or "_hh_" in name else H
                        self._params[name] = (np.ones if "_weight" in name else np.zeros)(n, self.dtype)
                        self.grads[name] = np.zeros(n, self.dtype)
        self._cache = None
        self._bufs = {}

    def _check_proj(self, proj_size):
        """proj_size: 0 (off) or PyTorch's 0 < P < hidden_size, an LSTM option; refused with
        the variants the projected loops do not have."""
        if isinstance(proj_size, (bool, np.bool_)) or not isinstance(proj_size, (int, np.integer)):
            raise TypeError(f"proj_size must be an int, got {proj_size!r}")
        P = int(proj_size)
        if P == 0:
            return 0
        if P < 0 or P >= self.hidden_size:
            raise ValueError(f"proj_size must be 0 (off) or in 1..hidden_size-1 = {self.hidden_size - 1}, "
                             f"got {P} (PyTorch's rule)")
        if self.mode != "LSTM":
            raise ValueError(f"proj_size is an LSTM option (h = W_hr (o * tanh(c))), not {type(self).__name__}'s")
        for name in ("peepholes", "layer_norm", "zoneout"):
            if getattr(self, name):
                raise ValueError(f"proj_size cannot be combined with {name} (the projected LSTM loops "
                                 "have recurrent_dropout and weight_dropout only)")
        return P

    @staticmethod
    def _hr_name(layer, direction):
        return f"weight_hr_l{layer}" + ("_reverse" if direction else "")

    def __repr__(self):
        extra = f", nonlinearity={self.nonlinearity!r}" if self.mode.startswith("RNN") else ""
        extra += f", leak={self.leak}" if self.leak != 1.0 else ""
        for name in ("recurrent_dropout", "zoneout", "weight_dropout", "peepholes", "layer_norm", "proj_size"):
            extra += f", {name}={getattr(self, name)}" if getattr(self, name) else ""
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}, dropout={self.dropout}, "
                f"bidirectional={self.bidirectional}{extra}, dtype={self.dtype.name})")

    def _buffer(self, key, shape, shared=True):
        """An internal array kept between calls: fresh allocations of this size come from new
        pages, and faulting them in cost ~8% of a training step. Never handed to the user.
        shared=False: a buffer of the calling thread's own (inference, which threads may run
        on one layer at once); shared=True: the training cache's (one per layer)."""
        if shared:
            bufs = self._bufs
        else:
            bufs = getattr(self._local, "bufs", None)
            if bufs is None:
                bufs = self._local.bufs = {}
        buf = bufs.get(key)
        if buf is None or buf.shape != shape:
            buf = bufs[key] = np.empty(shape, self.dtype)
        return buf

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def _names(layer, direction):
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        return tuple(n + sfx for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def _draw_masks(self, T, B, shared=False):
        """Per layer and direction (index layer*dirs+dir) the variants' masks for one call, or
        None when no variant is on: hmask (B,H) recurrent dropout (scaled by 1/keep), zh and zc
        (T,B,H) zoneout weights of the previous h and c, wmask (G*H,H) weight dropout (scaled).
        Training draws them from the layer's generator, in this order, before anything else of
        the call; eval mode is deterministic: no dropout masks, zoneout's expectation p.
        The masks live in the layer's buffers (shared: the training cache's, else the calling
        thread's), valid until its next call."""
        rd, zo, wd = self.recurrent_dropout, self.zoneout, self.weight_dropout
        if not (rd or zo or wd):
            return None
        H, G, lstm, R = self.hidden_size, self._kind.gates, self._kind.states == 2, self._R
        out = []
        if zo and not self.training:
            z_eval = self._buffer(("z_eval",), (T, B, H), shared)
            z_eval.fill(zo)
        for k in range(self.num_layers * self.num_directions):
            m = {"hmask": None, "zh": None, "zc": None, "wmask": None}
            buf = functools.partial(self._buffer, shared=shared)
            if self.training:
                if rd:
                    m["hmask"] = self._bernoulli(buf(("hmask", k), (B, R)), 1.0 - rd, 1.0 / (1.0 - rd))
                if zo:
                    m["zh"] = self._bernoulli(buf(("zh", k), (T, B, H)), zo)
                    m["zc"] = self._bernoulli(buf(("zc", k), (T, B, H)), zo) if lstm else None
                if wd:
                    m["wmask"] = self._bernoulli(buf(("wmask", k), (G * H, R)), 1.0 - wd, 1.0 / (1.0 - wd))
            elif zo:
                m["zh"], m["zc"] = z_eval, z_eval if lstm else None
            out.append(m)
        return out

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def _peep_name(layer, direction):
        return f"weight_ch_l{layer}" + ("_reverse" if direction else "")

    def _ln_names(self, layer, direction):
        """Layer norm's parameters of one layer and direction, in the engine's packing order:
        layer_norm_ih_weight/bias (G*H,), layer_norm_hh_weight/bias (G*H,), LSTM also
        layer_norm_c_weight/bias (H,); suffix _l{layer}[_reverse] as PyTorch's names."""
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        parts = ("ih", "hh", "c") if self._kind.states == 2 else ("ih", "hh")
        return tuple(f"layer_norm_{p}_{k}{sfx}" for p in parts for k in ("weight", "bias"))

    def _ln_packed(self, layer, direction):
        """The engine's ln operand: the layer-norm parameters in one array (per call)."""
        return np.concatenate([self._params[n] for n in self._ln_names(layer, direction)])

    def _state_shape(self, B):
        return (self.num_layers * self.num_directions, B, self._R)

    def _cell_state_shape(self, B):
        return (self.num_layers * self.num_directions, B, self.hidden_size)

    def _split_hx(self, hx):
        """(h0, c0) from the user's hx; non-LSTM layers have no c."""
        return hx, None

    def _join_state(self, h, c):
        return h

    def forward(self, x, hx=None, lengths=None):
        """Run the layer over a sequence; see the class docstring for shapes."""
        if self._recording():
            with self._exclusive("forward"):
                return self._forward(x, hx, lengths)
        return self._forward(x, hx, lengths)

    def _forward(self, x, hx, lengths):
        x = _as_array(x, "x", self.dtype, ndim=3, features=self.input_size,
                      layout="(batch, time, features)" if self.batch_first else "(time, batch, features)")
        if self.batch_first:
            x = np.ascontiguousarray(x.transpose(1, 0, 2))
        T, B, D = x.shape
        if D != self.input_size:
            raise ValueError(f"x must have {self.input_size} features (input_size) in its last axis, got shape "
                             f"{x.shape if not self.batch_first else (B, T, D)}")
        if T < 1 or B < 1:
            raise ValueError(f"x must have at least one time step and one batch element, got shape {x.shape}")
        S = self._state_shape(B)
        h0, c0 = self._split_hx(hx)
        h0 = np.zeros(S, self.dtype) if h0 is None else _as_array(h0, "h0", self.dtype, shape=S)
        Sc = self._cell_state_shape(B)
        if self._kind.states == 2:
            c0 = np.zeros(Sc, self.dtype) if c0 is None else _as_array(c0, "c0", self.dtype, shape=Sc)
        if lengths is not None:
            lengths = _as_lengths(lengths, T, B)
            if lengths.min() < T:
                # Padding is ignored, as in PyTorch's packed sequences; zeroing it keeps NaN or
                # garbage in the padding out of the whole-sequence weight-gradient GEMM.
                x = x.copy()
                x[np.arange(T)[:, None] >= lengths[None, :]] = 0
        record = self._recording()
        # A training cache is dropped by any later forward (its buffers are about to be reused
        # by a training one; after an inference one, backward would not match the last call).
        self._cache = None
        H, dirs = self.hidden_size, self.num_directions
        h_n = np.empty(S, self.dtype)
        c_n = np.empty(Sc, self.dtype) if self._kind.states == 2 else None
        masks = self._draw_masks(T, B, record)
        chunks = _row_ranges(self._cell, T, B, H, dirs)
        # a batch of one: where its steps split by hidden units, or None
        variants = bool(self.recurrent_dropout or self.zoneout or self.layer_norm or self.proj_size)
        mid = _core.plan_units_mid(self._cell, T, B, H, dirs, lengths is not None, variants)
        # a one-direction stack whose layers would each run on one thread: the wavefront
        wave, wave_rows = _core.plan_wave(self._cell, T, B, D, H, self.num_layers, dirs, lengths is not None,
                                          variants)
        if wave:
            layers, inp = self._forward_wave(x, h0, c0, h_n, c_n, masks, record, wave, wave_rows)
        else:
            layers, inp = self._forward_layers(x, h0, c0, h_n, c_n, masks, record, lengths, chunks, mid)
        if record:
            # the forward's plan goes with its cache: backward must take the same path (a unit
            # split is refused to the variants, and the thread count may change in between).
            # The wavefront runs the row loops, whose saved buffers the unit split's backward
            # reads alike.
            self._cache = (layers, lengths, T, B, mid, (wave, wave_rows) if wave else None)
        out = np.ascontiguousarray(inp.transpose(1, 0, 2)) if self.batch_first else inp
        return out, self._join_state(h_n, c_n)

    def _layer_spec(self, layer, d, inp, record, masks, rows):
        """One layer and direction's operands for its time loop: weights (W_hh already masked
        under weight dropout), the variants' masks, the projection mode for `rows` rows per call
        (None: a unit split, never fused) and the buffers the loop writes (the training cache's
        or, in inference, the calling thread's)."""
        T, B, D = inp.shape
        H, G, R = self.hidden_size, self._kind.gates, self._R
        k = layer * self.num_directions + d
        s = {"k": k, "D": D}
        s["w_ih"], w_hh, s["b_ih"], s["b_hh"] = map(self._params.get, self._names(layer, d))
        s["peep"] = self._params.get(self._peep_name(layer, d))
        s["ln"] = self._ln_packed(layer, d) if self.layer_norm else None
        s["w_hr"] = self._params[self._hr_name(layer, d)] if self.proj_size else None
        mk = masks[k] if masks is not None else {}
        s["hmask"], s["zh"], s["zc"], wmask = mk.get("hmask"), mk.get("zh"), mk.get("zc"), mk.get("wmask")
        if wmask is not None:
            # DropConnect: the loops run with W_hh * mask, drawn once for the call
            w_hh = mk["w_hh"] = w_hh * wmask
        s["w_hh"] = w_hh
        s["fused"] = fused = rows is not None and _core.fused_pays(self._cell, self.dtype, T, rows, D, H)
        s["act"] = self._buffer(("act", k), (T, B, G * H), record) if record or not fused else None
        # The input beside the states entering each step, [x | hprev]: backward takes
        # both weight gradients from one GEMM over it (fr_backward_params).
        s["xh"] = self._buffer(("xh", k), (T, B, D + R)) if record else None
        s["aux"] = self._buffer(("aux", k), (T, B, self._kind.aux * H)) if record else None
        # Recurrent dropout: [x | h * mask] is what the weights saw (both weight gradients
        # still come from one GEMM); the rows' unmasked h is kept beside it.
        s["hp"] = self._buffer(("hp", k), (T, B, R)) if record and s["hmask"] is not None else None
        # projection: o*tanh(c) of each position, dW_hr's operand
        s["hcell"] = self._buffer(("hcell", k), (T, B, H)) if record and s["w_hr"] is not None else None
        # layer norm: each position's normalised projections and statistics
        s["lnsave"] = (self._buffer(("lnsave", k), (T, B, 2 * G * H + 4))
                       if record and s["ln"] is not None else None)
        if s["ln"] is not None:
            mk = dict(mk, ln=s["ln"], lnsave=s["lnsave"])
        if s["w_hr"] is not None:
            mk = dict(mk, w_hr=s["w_hr"], hcell=s["hcell"])
        s["mk"] = mk
        return s

    @staticmethod
    def _saved(s):
        """What backward reads of one layer and direction."""
        return s["act"], s["xh"], s["aux"], s["hp"], s["mk"]

    def _recur_job(self, s, inp, y, d, t, b0, b1, lengths, h0, c0, h_n, c_n):
        """The row loop of rows b0..b1-1 over time steps t (a slice, None for all) of one layer
        and direction (its _layer_spec s); every (T,B,.) operand is cut to those steps, a view,
        since time is their leading axis."""
        xh, hp, act, aux, zh, zc, lnsave, hcell = (s["xh"], s["hp"], s["act"], s["aux"], s["zh"], s["zc"],
                                                   s["lnsave"], s["hcell"])
        if t is not None:
            xh, hp, act, aux, zh, zc, lnsave, hcell, inp, y = (
                None if a is None else a[t] for a in (xh, hp, act, aux, zh, zc, lnsave, hcell, inp, y))
        return _core.recur(self._cell, b0=b0, b1=b1, reverse=bool(d), lengths=lengths, h0=h0, c0=c0,
                           w_hh=s["w_hh"], b_ih=s["b_ih"], b_hh=s["b_hh"], y=y, y_col=d * self._R,
                           h_n=h_n, c_n=c_n, act=act, hprev=xh if hp is None else hp,
                           h_col=s["D"] if hp is None else 0, aux=aux, leak=self.leak,
                           x=inp if s["fused"] else None, w_ih=s["w_ih"] if s["fused"] else None,
                           hmask=s["hmask"], hdrop=xh if hp is not None else None, d_col=s["D"], zh=zh,
                           zc=zc, peep=s["peep"], ln=s["ln"], lnsave=lnsave, w_hr=s["w_hr"], hcell=hcell,
                           defer=True)

    def _dropout_mask(self, shape):
        """Inter-layer dropout's mask on one layer's output, scaled by 1/keep."""
        keep = 1.0 - self.dropout
        return (self._rng.random(shape) < keep).astype(self.dtype) / self.dtype.type(keep)

    def _forward_layers(self, x, h0, c0, h_n, c_n, masks, record, lengths, chunks, mid):
        """Layer by layer: each layer's directions and row ranges (or a batch of one's unit
        tasks) run at once, the next layer after. Returns the cache's per-layer entries
        (input, saved buffers, output dropout mask) and the last layer's output."""
        T, B, _ = x.shape
        H, dirs, R = self.hidden_size, self.num_directions, self._R
        layers = []
        inp = x
        for layer in range(self.num_layers):
            y = np.empty((T, B, dirs * R), self.dtype)
            saved, tasks = [], []
            for d in range(dirs):
                s = self._layer_spec(layer, d, inp, record, masks, None if mid is not None else _min_rows(chunks))
                k, D, xh, act = s["k"], s["D"], s["xh"], s["act"]
                c0k = None if c0 is None else c0[k]
                c_nk = None if c_n is None else c_n[k]
                if record:
                    xh[..., :D] = inp
                if not s["fused"]:
                    _project(self._cell, inp, s["w_ih"], act)
                if mid is not None:
                    sync = np.zeros(4, np.intc)
                    shared = np.empty(_core.units_shared_size(self._cell, self.dtype, T, H, mid, False),
                                      self.dtype)
                    tasks += [_core.recur_units(self._cell, mid=mid, part=part, reverse=bool(d), h0=h0[k],
                                                c0=c0k, w_hh=s["w_hh"], b_ih=s["b_ih"], b_hh=s["b_hh"], y=y,
                                                y_col=d * H, h_n=h_n[k], c_n=c_nk, act=act, hprev=xh,
                                                h_col=D, aux=s["aux"], leak=self.leak, sync=sync,
                                                shared=shared, peep=s["peep"], defer=True)
                              for part in (0, 1)]
                else:
                    tasks += [self._recur_job(s, inp, y, d, None, b0, b1, lengths, h0[k], c0k, h_n[k], c_nk)
                              for b0, b1 in chunks]
                saved.append(self._saved(s))
            _run(tasks)
            mask = None
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                mask = self._dropout_mask(y.shape)
            layers.append((inp, saved if record else None, mask))
            inp = y * mask if mask is not None else y
        return layers, inp

    def _forward_wave(self, x, h0, c0, h_n, c_n, masks, record, nchunks, nrows):
        """The wavefront of a one-direction stack (plan.c, fr_plan_wave_chunks): the time axis
        in `nchunks` chunks, and round r runs every layer l on its chunk r - lag(l) at once, so
        layer l+1 reads chunk c of layer l's output while layer l computes chunk c+1. Each chunk
        is the row loop over a time slice of the layer's buffers, started from the state the
        previous chunk ended in: the results equal _forward_layers' with the same row ranges
        and projection mode. A layer whose input projection is not fused into its loop projects
        a chunk one round before it runs it (lag 2 from the layer below, else 1), beside the
        other layers' loops. Returns what _forward_layers returns."""
        T, B, _ = x.shape
        L, R, H = self.num_layers, self._R, self.hidden_size
        times = _chunks(T, nchunks)
        rows = _chunks(B, nrows)
        # inter-layer dropout: the masks drawn in the order the layer loop draws them
        dmask = [self._dropout_mask((T, B, R)) if self.training and self.dropout > 0 and l < L - 1 else None
                 for l in range(L)]
        ys = [np.empty((T, B, R), self.dtype) for _ in range(L)]
        inps = [x] + [ys[l - 1] if dmask[l - 1] is None else np.empty((T, B, R), self.dtype)
                      for l in range(1, L)]
        specs = [self._layer_spec(l, 0, inps[l], record, masks, _min_rows(rows)) for l in range(L)]
        # the states between chunks: hst[l, c] ends chunk c of layer l
        hst = np.empty((L, max(nchunks - 1, 1), B, R), self.dtype)
        cst = np.empty((L, max(nchunks - 1, 1), B, H), self.dtype) if c0 is not None else None
        lag = [0] * L
        for l in range(1, L):
            lag[l] = lag[l - 1] + (1 if specs[l]["fused"] else 2)
        nrounds = nchunks + lag[-1]
        loops, projs, ready = ([[] for _ in range(nrounds)] for _ in range(3))
        for l, s in enumerate(specs):
            for c, (t0, t1) in enumerate(times):
                t = slice(t0, t1)
                first, last = c == 0, c == nchunks - 1
                hin, hout = h0[l] if first else hst[l, c - 1], h_n[l] if last else hst[l, c]
                cin = cout = None
                if c0 is not None:
                    cin, cout = c0[l] if first else cst[l, c - 1], c_n[l] if last else cst[l, c]
                r = c + lag[l]
                loops[r] += [(s, inps[l], ys[l], t, b0, b1, hin, cin, hout, cout) for b0, b1 in rows]
                if l and not s["fused"]:
                    projs[r - 1] += _project_pieces(inps[l][t], s["w_ih"], s["act"][t])
                if l and dmask[l - 1] is not None:  # before the round that first reads it
                    ready[r - (0 if s["fused"] else 1)].append((l, t))
        if not specs[0]["fused"]:
            _project(self._cell, x, specs[0]["w_ih"], specs[0]["act"])
        for r in range(nrounds):
            for l, t in ready[r]:
                np.multiply(ys[l - 1][t], dmask[l - 1][t], out=inps[l][t])
            # Each round's jobs are made just before it runs: a job holds its loop's scratch
            # (with its packed weights), which a later round's job then reuses from the
            # allocator instead of faulting in fresh pages.
            _run([self._recur_job(s, xin, y, 0, t, b0, b1, None, hin, cin, hout, cout)
                  for s, xin, y, t, b0, b1, hin, cin, hout, cout in loops[r]]
                 + [_core.project(self._cell, xin, w_ih, act, defer=True) for xin, w_ih, act in projs[r]])
        layers = []
        for l, s in enumerate(specs):
            if record:
                s["xh"][..., :s["D"]] = inps[l]
            layers.append((inps[l], [self._saved(s)] if record else None, dmask[l]))
        return layers, ys[-1]

    def backward(self, dy=None, dstate=None, state_grads=False):
        """BPTT through the most recent training-mode forward.

        Returns the gradient w.r.t. x and the initial state(s), freshly assigned; parameter
        gradients accumulate (+=) into `self.grads`. The cache is kept, so backward may be called
        again (e.g. for a second loss) until the next forward.
        With state_grads=True, `self.state_grads` becomes a list (one per layer and direction,
        in h_n order) of (T, B, H) arrays dL/dh_t: the total gradient reaching the state at each
        time step, the quantity whose decay or growth shows vanishing or exploding gradients.
        """
        with self._exclusive("backward"):
            return self._backward(dy, dstate, state_grads)

    def _backward(self, dy, dstate, state_grads):
        if self._cache is None:
            raise RuntimeError("backward() needs a preceding forward() in training mode "
                               "(eval mode and no_grad() keep no cache)")
        layers, lengths, T, B, mid, wave = self._cache
        H, dirs, R = self.hidden_size, self.num_directions, self._R
        S, Sc = self._state_shape(B), self._cell_state_shape(B)
        if dy is not None:
            want = (B, T, dirs * R) if self.batch_first else (T, B, dirs * R)
            dy = _as_array(dy, "dy", self.dtype, shape=want)
            if self.batch_first:
                dy = np.ascontiguousarray(dy.transpose(1, 0, 2))
        dh_n, dc_n = self._split_hx(dstate)
        if dh_n is not None:
            dh_n = _as_array(dh_n, "dh_n", self.dtype, shape=S)
        if dc_n is not None:
            dc_n = _as_array(dc_n, "dc_n", self.dtype, shape=Sc)
        dh0 = np.empty(S, self.dtype)
        dc0 = np.empty(Sc, self.dtype) if self._kind.states == 2 else None
        dhs_all = [np.empty((T, B, R), self.dtype) for _ in range(S[0])] if state_grads else [None] * S[0]
        if self.proj_size and not state_grads:  # dW_hr's operand: dL/dh_t of every position
            # (layer by layer, one per direction serves every layer; the wavefront's run at once)
            dhs_all = [self._buffer(("dhs", k if wave else k % dirs), (T, B, R)) for k in range(S[0])]
        # a stack that ran forward as a wavefront runs backward as one, on the same row ranges
        # (the unit split, which a test may force on a wavefront, has its own backward)
        nchunks = 0
        if wave is not None and mid is None:
            lags = self._wave_lags(layers, T, B, wave[1])
            nchunks = _core.plan_wave_backward(self._cell, T, B, layers[0][0].shape[2], H, self.num_layers,
                                               lags[1][0])
        if nchunks:
            dy = self._backward_wave(layers, dy, dh_n, dc_n, dh0, dc0, dhs_all, T, B, lags, nchunks, wave[1])
        else:
            dy = self._backward_layers(layers, lengths, T, B, mid, dy, dh_n, dc_n, dh0, dc0, dhs_all)
        if state_grads:
            self.state_grads = dhs_all
        dx = np.ascontiguousarray(dy.transpose(1, 0, 2)) if self.batch_first else dy
        return dx, self._join_state(dh0, dc0)

    def _grad_shares(self, layer, d, mk, parts):
        """Scratch for the reverse loops' shares of one layer and direction's gradients, one row
        per loop call (a row range, a unit task, a wavefront chunk's row range): the bias
        (G*H + (G-S)*H), peephole (3H) and layer-norm gradients, each [None] * parts when the
        layer has none. Summed by _end_grads."""
        G, H = self._kind.gates, self.hidden_size
        RH = (G - self._kind.shared) * H  # recurrent-side bias columns of the other blocks (GRU: n)
        dbias = np.empty((parts, G * H + RH), self.dtype) if self.bias else [None] * parts
        peep = self._params.get(self._peep_name(layer, d))
        dpeep = np.empty((parts, 3 * H), self.dtype) if peep is not None else [None] * parts
        ln = mk.get("ln")
        dln = np.empty((parts, ln.size), self.dtype) if ln is not None else [None] * parts
        return dbias, dpeep, dln

    def _dw_hh_out(self, layer, d, mk):
        """Where a layer's dW_hh accumulates: the gradient itself, or under weight dropout a
        zeroed scratch that _end_grads takes back through the mask (the loops' W_hh was
        W_hh * mask; accumulated in a scratch first, as the engine adds)."""
        w_hh = self._names(layer, d)[1]
        if mk.get("wmask") is None:
            return self.grads[w_hh]
        dw = self._buffer(("dwm", layer, d), (self._kind.gates * self.hidden_size, self._R))
        dw.fill(0)
        return dw

    def _weight_jobs(self, layer, d, saved_d, dw_hh, dgx, dgh, dx, accumulate, lengths, dhs, t=None):
        """The whole-sequence GEMM jobs (_params_jobs) of one layer and direction, over the time
        steps t (a slice of every (T,B,.) operand, None for all)."""
        w_ih, _, _, _ = self._names(layer, d)
        mk, xh = saved_d[4], saved_d[1]
        hcell = mk.get("hcell")
        if t is not None:
            xh, dgx, dgh, dx, dhs, hcell = (None if a is None else a[t] for a in (xh, dgx, dgh, dx, dhs, hcell))
        p, g = self._params, self.grads
        W = xh.shape[2]
        return _params_jobs(self._cell, xh, p[w_ih], dgx, dgh, dx, accumulate, (g[w_ih], dw_hh),
                            self._buffer(("dwc", layer, d), (dgx.shape[2], W)), lengths, self.layer_norm,
                            # dW_hr (P,H) += dhs^T hcell over the rows, in the same jobs
                            (dhs, hcell, g[self._hr_name(layer, d)]) if self.proj_size else None)

    def _end_grads(self, layer, d, mk, dw_hh, dbias, dpeep, dln):
        """Adds the loops' summed shares (the bias, peephole and layer-norm gradients) and, under
        weight dropout, dW_hh through the mask to the layer's gradients."""
        g = self.grads
        if self.peepholes:
            g[self._peep_name(layer, d)] += dpeep.sum(axis=0)
        if self.layer_norm:
            dl, o = dln.sum(axis=0), 0
            for name in self._ln_names(layer, d):
                n = g[name].size
                g[name] += dl[o:o + n]
                o += n
        wmask = mk.get("wmask")
        _, w_hh, b_ih, b_hh = self._names(layer, d)
        if wmask is not None:
            g[w_hh] += dw_hh * wmask
        if self.bias:
            _core.add_dbias(dbias.sum(axis=0) if len(dbias) > 1 else dbias[0], g[b_ih], g[b_hh])

    def _backward_layers(self, layers, lengths, T, B, mid, dy, dh_n, dc_n, dh0, dc0, dhs_all):
        """Layer by layer, last layer first: each layer's directions and row ranges (or a batch
        of one's unit tasks) run at once, then its whole-sequence GEMMs. Returns dx."""
        H, dirs, R = self.hidden_size, self.num_directions, self._R
        G = self._kind.gates
        RD = G * H if self.layer_norm else (G - self._kind.shared) * H  # dgh's columns
        chunks = _row_ranges(self._cell, T, B, H, dirs)
        p = self._params
        for layer in reversed(range(self.num_layers)):
            inp, saved, mask = layers[layer]
            if mask is not None and dy is not None:
                dy = dy * mask
            grads, tasks = [], []
            dx = np.empty(inp.shape, self.dtype)
            loop_dx = None
            for d in range(dirs):
                k = layer * dirs + d
                dh_nk = None if dh_n is None else dh_n[k]
                dc_nk = None if dc_n is None else dc_n[k]
                dc0k = None if dc0 is None else dc0[k]
                w_ih, w_hh, b_ih, b_hh = self._names(layer, d)
                act, xh, aux, hp, mk = saved[d]
                w_hh_used = mk.get("w_hh", p[w_hh])  # W_hh * mask under weight dropout
                D = inp.shape[2]
                # scratch shared by all layers: every layer's gate gradients have one shape
                dgx = self._buffer(("dgx", d), (T, B, G * H))
                dgh = self._buffer(("dgh", d), (T, B, RD)) if RD else None
                # each row range's (or unit task's) share of the bias, peephole and layer-norm
                # gradients, summed after the loop
                parts = 2 if mid is not None else len(chunks)
                dbias, dpeep, dln = self._grad_shares(layer, d, mk, parts)
                peep = p.get(self._peep_name(layer, d))
                grads.append((dgx, dgh, dbias, dpeep, dln))
                if mid is not None:
                    sync = np.zeros(4, np.intc)
                    shared = np.empty(_core.units_shared_size(self._cell, self.dtype, T, H, mid, True),
                                      self.dtype)
                    tasks += [_core.recur_backward_units(
                                  self._cell, mid=mid, part=part, reverse=bool(d), w_hh=w_hh_used,
                                  act=act, hprev=xh, h_col=D, aux=aux, dy=dy, dy_col=d * H,
                                  dh_n=dh_nk, dc_n=dc_nk, dh0=dh0[k], dc0=dc0k, dgx=dgx, dgh=dgh,
                                  leak=self.leak, dhs=dhs_all[k], dbias=dbias if self.bias else None,
                                  sync=sync, shared=shared, peep=peep,
                                  dpeep=dpeep if peep is not None else None, defer=True)
                              for part in (0, 1)]
                    continue
                # one direction: dx in the reverse loop while each step's dgx rows are in cache
                loop_dx = dx if dirs == 1 and _core.dx_in_loop_pays(self._cell, self.dtype, T, _min_rows(chunks),
                                                                      D, H) else None
                tasks += [_core.recur_backward(
                              self._cell, b0=b0, b1=b1, reverse=bool(d), lengths=lengths,
                              w_hh=w_hh_used, act=act, hprev=xh if hp is None else hp,
                              h_col=D if hp is None else 0, aux=aux, dy=dy, dy_col=d * R,
                              dh_n=dh_nk, dc_n=dc_nk, dh0=dh0[k], dc0=dc0k, dgx=dgx, dgh=dgh,
                              leak=self.leak, dhs=dhs_all[k], dbias=dbias[i],
                              w_ih=None if loop_dx is None else p[w_ih], dx=loop_dx,
                              hmask=mk.get("hmask"), zh=mk.get("zh"), zc=mk.get("zc"), peep=peep,
                              dpeep=dpeep[i], ln=mk.get("ln"), lnsave=mk.get("lnsave"), dln=dln[i],
                              w_hr=mk.get("w_hr"), defer=True)
                          for i, (b0, b1) in enumerate(chunks)]
            _run(tasks)
            for d in range(dirs):
                dgx, dgh, dbias, dpeep, dln = grads[d]
                mk = saved[d][4]
                dw_hh = self._dw_hh_out(layer, d, mk)
                _run(self._weight_jobs(layer, d, saved[d], dw_hh, dgx, dgh, dx if loop_dx is None else None,
                                       d > 0, lengths, dhs_all[layer * dirs + d]))
                self._end_grads(layer, d, mk, dw_hh, dbias, dpeep, dln)
            dy = dx
        return dy

    def _backward_wave(self, layers, dy, dh_n, dc_n, dh0, dc0, dhs_all, T, B, lags, nchunks, nrows):
        """The wavefront's backward, on the forward's chunks and row ranges: in reverse time,
        round r runs layer l's reverse loop over its chunk n-1-(r - lag(l)) (each a
        recur_backward over a time slice, started from the dh (and dc) its later chunk carried
        back), so layer l reads chunk c of layer l+1's dx while layer l+1 computes chunk c-1.
        A chunk's weight gradients (and its dx, where the loop does not make it:
        dx_in_loop_pays, as layer by layer) come from the whole-sequence GEMMs over its steps in
        the round after its loop, beside the loops (the layer below then lags 2 rounds, else 1).
        They add up over the chunks (dW +=) in another order than one GEMM over all steps,
        equal to rounding; measured 3-18% faster per training step (2-layer LSTM and GRU at
        B = 1, H = 48-128) than one GEMM per layer after its last chunk, which the last layer
        runs alone. The
        loops' bias, peephole and layer-norm shares are summed over chunks and row ranges.
        Returns dx."""
        L, R, H, G = self.num_layers, self._R, self.hidden_size, self._kind.gates
        RD = G * H if self.layer_norm else (G - self._kind.shared) * H  # dgh's columns
        times = _chunks(T, nchunks)
        rows = _chunks(B, nrows)
        nt, nr = len(times), len(rows)
        p = self._params
        ops = []  # per layer: its operands, outputs and scratch
        for l in range(L):
            inp, saved, mask = layers[l]
            mk = saved[0][4]
            s = {"saved": saved[0], "mk": mk, "D": inp.shape[2], "mask": mask}
            s["w_hh"] = mk.get("w_hh", p[self._names(l, 0)[1]])  # W_hh * mask under weight dropout
            # each layer its own gate gradients: the layers' loops run at once
            s["dgx"] = self._buffer(("dgx", l), (T, B, G * H))
            s["dgh"] = self._buffer(("dgh", l), (T, B, RD)) if RD else None
            s["dx"] = np.empty(inp.shape, self.dtype)
            s["shares"] = self._grad_shares(l, 0, mk, nt * nr)
            s["dw_hh"] = self._dw_hh_out(l, 0, mk)
            ops.append(s)
        # what each layer's loop reads as dy: the user's, or the layer above's dx (times the
        # inter-layer dropout mask, into a buffer of its own, chunk by chunk before the round
        # that reads it)
        for l in range(L):
            above = dy if l == L - 1 else ops[l + 1]["dx"]
            mask = ops[l]["mask"]
            ops[l]["dy"] = np.empty_like(above) if mask is not None and above is not None else above
        # the gradients between chunks: dhst[l, c] (and dcst) is dL/dh where layer l's chunk c
        # ends, which chunk c + 1 gives back and chunk c starts from
        dhst = np.empty((L, max(nt - 1, 1), B, R), self.dtype)
        dcst = np.empty((L, max(nt - 1, 1), B, H), self.dtype) if dc0 is not None else None
        loop_dx, lag = lags  # _wave_lags, as the plan of the chunks took them
        for s, in_loop in zip(ops, loop_dx):
            s["loop_dx"] = in_loop
        nrounds = nt + lag[0] + 1
        loops, jobs, ready = ([[] for _ in range(nrounds)] for _ in range(3))
        for l, s in enumerate(ops):
            for q, c in enumerate(reversed(range(nt))):
                t = slice(*times[c])
                first, last = c == 0, c == nt - 1
                dhin = (None if dh_n is None else dh_n[l]) if last else dhst[l, c]
                dhout = dh0[l] if first else dhst[l, c - 1]
                dcin = dcout = None
                if dc0 is not None:
                    dcin = (None if dc_n is None else dc_n[l]) if last else dcst[l, c]
                    dcout = dc0[l] if first else dcst[l, c - 1]
                r = q + lag[l]
                loops[r] += [(s, l, t, c * nr + i, b0, b1, dhin, dcin, dhout, dcout)
                             for i, (b0, b1) in enumerate(rows)]
                # the chunk's weight gradients (+=), and its dx where the loop did not make it
                jobs[r + 1] += self._weight_jobs(l, 0, s["saved"], s["dw_hh"], s["dgx"], s["dgh"],
                                                 None if s["loop_dx"] else s["dx"], False, None, dhs_all[l], t)
                if l < L - 1 and s["mask"] is not None and s["dy"] is not None:
                    ready[r].append((l, t))
        for r in range(nrounds):
            for l, t in ready[r]:
                np.multiply(ops[l + 1]["dx"][t], ops[l]["mask"][t], out=ops[l]["dy"][t])
            _run([self._recur_backward_job(s, l, t, dhs_all[l], i, b0, b1, dhin, dcin, dhout, dcout)
                  for s, l, t, i, b0, b1, dhin, dcin, dhout, dcout in loops[r]] + jobs[r])
        for l, s in enumerate(ops):
            self._end_grads(l, 0, s["mk"], s["dw_hh"], *s["shares"])
        return ops[0]["dx"]

    def _wave_lags(self, layers, T, B, nrows):
        """Per layer of the wavefront's backward: whether its loop makes its dx (as layer by
        layer: dx_in_loop_pays), and its lag in rounds behind the last layer (1 a layer whose
        dx comes from its loop, else 2: that GEMM runs in the round between)."""
        rows = _min_rows(_chunks(B, nrows))
        loop_dx = [_core.dx_in_loop_pays(self._cell, self.dtype, T, rows, inp.shape[2], self.hidden_size)
                   for inp, _, _ in layers]
        lag = [0] * len(layers)
        for l in reversed(range(len(layers) - 1)):
            lag[l] = lag[l + 1] + (1 if loop_dx[l + 1] else 2)
        return loop_dx, lag

    def _recur_backward_job(self, s, l, t, dhs, i, b0, b1, dh_n, dc_n, dh0, dc0):
        """The reverse row loop of rows b0..b1-1 over the time steps t (a slice) of one layer of
        the wavefront's backward (its operands s), writing share i of the loop's gradients."""
        act, xh, aux, hp, mk = s["saved"]
        dbias, dpeep, dln = s["shares"]
        act, xh, aux, hp, dy, dgx, dgh, dx, zh, zc, lnsave, dhs = (
            None if a is None else a[t]
            for a in (act, xh, aux, hp, s["dy"], s["dgx"], s["dgh"], s["dx"], mk.get("zh"), mk.get("zc"),
                      mk.get("lnsave"), dhs))
        loop_dx = s["loop_dx"]
        return _core.recur_backward(
            self._cell, b0=b0, b1=b1, reverse=False, lengths=None, w_hh=s["w_hh"], act=act,
            hprev=xh if hp is None else hp, h_col=s["D"] if hp is None else 0, aux=aux, dy=dy, dy_col=0,
            dh_n=dh_n, dc_n=dc_n, dh0=dh0, dc0=dc0, dgx=dgx, dgh=dgh, leak=self.leak, dhs=dhs,
            dbias=dbias[i], w_ih=self._params[self._names(l, 0)[0]] if loop_dx else None,
            dx=dx if loop_dx else None, hmask=mk.get("hmask"), zh=zh, zc=zc,
            peep=self._params.get(self._peep_name(l, 0)), dpeep=dpeep[i], ln=mk.get("ln"), lnsave=lnsave,
            dln=dln[i], w_hr=mk.get("w_hr"), defer=True)


_SHAPES_DOC = """
    Shapes (T steps, B batch, D = input_size, H = hidden_size, L = num_layers, dirs = 1 or 2):
      x (T, B, D), or (B, T, D) with batch_first=True; y likewise with dirs*H features
      (forward direction first). States (L*dirs, B, H), never batch-first, index layer*dirs+dir.
      lengths: optional ints (B,), each in 1..T, any order; outputs past a length are zero and the
      final state is the one at the sequence's last valid step (reverse direction: after reading
      the valid part backwards), as with PyTorch's packed sequences.
    Parameters use PyTorch's names and layout (weight_ih_l0, weight_hh_l0, bias_ih_l0,
    bias_hh_l0, ..._reverse), initialised U(-1/sqrt(H), 1/sqrt(H)) from `seed`.
    backward() returns input and initial-state gradients (assigned) and accumulates parameter
    gradients into `grads` (same keys as state_dict()); call zero_grad() between steps.

    Variants (each p in [0, 1); masks drawn once per training call from the layer's generator,
    eval mode deterministic):
      recurrent_dropout=p  one mask per sequence, layer and direction on h_{t-1} where it
                           enters W_hh, scaled by 1/(1-p) (Gal & Ghahramani); eval: none
      zoneout=p            each unit keeps its previous h (LSTM: and c, own mask) with
                           probability p per step (Krueger et al.); eval: p*h_prev + (1-p)*h_new
      weight_dropout=p     one DropConnect mask on each W_hh per call, scaled (AWD-LSTM); eval: none
      layer_norm=True      layer normalisation (haste's LayerNormLSTM, eps 1e-5, biased variance):
                           gates = LN_ih(W_ih x) + LN_hh(W_hh h) + b_ih + b_hh, each LN over the
                           G*H pre-activations of a row with its own gain and bias; GRU:
                           n = tanh(LN_ih(.)_n + b_in + r*(LN_hh(.)_n + b_hn)); LSTM also
                           h = o*tanh(LN_c(c)) (the carried state is the un-normalised c).
                           Parameters layer_norm_{ih,hh}_{weight,bias}_l{k}[_reverse] (G*H,),
                           LSTM layer_norm_c_{weight,bias}_l{k}[_reverse] (H,); gains start at
                           1, biases at 0. Not with peepholes; the PyTorch, Keras and ONNX
                           converters refuse it (none of them has it).
"""


class RNN(_RNNBase):
    __doc__ = """Elman RNN: h' = tanh|relu(W_ih x + b_ih + W_hh h + b_hh).

    leak in (0, 1] makes leaky-integrator units, h' = (1 - leak) h + leak * tanh|relu(...)
    (leak=1, the default, is PyTorch's RNN; other values have no PyTorch equivalent).

    y, h_n = rnn(x, h0=None, lengths=None);  dx, dh0 = rnn.backward(dy, dh_n=None)
    """ + _SHAPES_DOC

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, dtype=np.float32, seed=None,
                 leak=1.0, recurrent_dropout=0.0, zoneout=0.0, weight_dropout=0.0, layer_norm=False,
                 proj_size=0):  # proj_size: accepted to be refused with the base's error
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.leak = in_range(leak, "leak", 0, 1, "(]")
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed, recurrent_dropout, zoneout, weight_dropout,
                         layer_norm=layer_norm, proj_size=proj_size)


class GRU(_RNNBase):
    __doc__ = """GRU with PyTorch's gate order r, z, n and n = tanh(W_in x + b_in + r*(W_hn h + b_hn)).

    y, h_n = gru(x, h0=None, lengths=None);  dx, dh0 = gru.backward(dy, dh_n=None)
    """ + _SHAPES_DOC
    mode = "GRU"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None,
                 recurrent_dropout=0.0, zoneout=0.0, weight_dropout=0.0, layer_norm=False,
                 peepholes=False, proj_size=0):  # peepholes, proj_size: refused by the base
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed, recurrent_dropout, zoneout, weight_dropout,
                         peepholes, layer_norm, proj_size)


class LSTM(_RNNBase):
    __doc__ = """LSTM with PyTorch's gate order i, f, g, o.

    y, (h_n, c_n) = lstm(x, (h0, c0)=None, lengths=None)
    dx, (dh0, dc0) = lstm.backward(dy, (dh_n, dc_n)=None)   # either state gradient may be None

    peepholes=True adds weight_ch_l{k}[_reverse] (3*H,): p_i, p_f, p_o (in this order, our gate
    order; ONNX's P orders them i, o, f) with ONNX's semantics: i = sig(... + p_i * c_{t-1}),
    f = sig(... + p_f * c_{t-1}), o = sig(... + p_o * c_t) (Gers & Schmidhuber 2000).

    proj_size=P (0 < P < H, PyTorch's) projects the output: h_t = W_hr (o_t * tanh(c_t)) with
    weight_hr_l{k}[_reverse] (P, H); h0, h_n and each direction's y have P units, c keeps H,
    weight_hh is (4H, P) and layers after the first read P * dirs inputs. Not with zoneout,
    peepholes or layer_norm.
    """ + _SHAPES_DOC
    mode = "LSTM"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None,
                 recurrent_dropout=0.0, zoneout=0.0, weight_dropout=0.0, peepholes=False,
                 layer_norm=False, proj_size=0):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed, recurrent_dropout, zoneout, weight_dropout,
                         peepholes, layer_norm, proj_size)

    def _split_hx(self, hx):
        if hx is None:
            return None, None
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise ValueError("LSTM state must be a tuple (h, c) of arrays of shape (num_layers*num_directions, B, H)")
        return hx[0], hx[1]

    def _join_state(self, h, c):
        return h, c


# ---- cells ------------------------------------------------------------------------------------

class _CellBase(_Module):
    mode = None
    peepholes = False

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None, zoneout=0.0,
                 layer_norm=False):
        super().__init__(dtype, seed)
        self.zoneout = in_range(zoneout, "zoneout", 0, 1)
        if not isinstance(layer_norm, (bool, np.bool_)):
            raise TypeError(f"layer_norm must be True or False, got {layer_norm!r}")
        self.layer_norm = bool(layer_norm)
        self.input_size = positive_int(input_size, "input_size")
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        self.bias = bool(bias)
        self._kind = CELLS[self.mode]  # the cell kind's sizes (see the `kind` property)
        self._cell = self._kind.code
        H, G = self.hidden_size, self._kind.gates
        bound = 1.0 / np.sqrt(H)
        self._add_param("weight_ih", (G * H, self.input_size), bound)
        self._add_param("weight_hh", (G * H, H), bound)
        if self.bias:
            self._add_param("bias_ih", (G * H,), bound)
            self._add_param("bias_hh", (G * H,), bound)
        if self.layer_norm:  # gains 1, biases 0, as the layers' (haste's LayerNormLSTM)
            for name in self._ln_names():
                n = H if "_c_" in name else G * H
                self._params[name] = (np.ones if name.endswith("_weight") else np.zeros)(n, self.dtype)
                self.grads[name] = np.zeros(n, self.dtype)
        self._tape = []

    def __repr__(self):
        zo = f", zoneout={self.zoneout}" if self.zoneout else ""
        zo += ", layer_norm=True" if self.layer_norm else ""
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, bias={self.bias}{zo}, "
                f"dtype={self.dtype.name})")

    def _ln_names(self):
        """Layer norm's parameters in the engine's packing order: layer_norm_ih_weight/bias,
        layer_norm_hh_weight/bias (G*H,), LSTM also layer_norm_c_weight/bias (H,): the layers'
        names without their _l{k} suffix."""
        parts = ("ih", "hh", "c") if self._kind.states == 2 else ("ih", "hh")
        return tuple(f"layer_norm_{p}_{k}" for p in parts for k in ("weight", "bias"))

    def _ln_packed(self):
        """The engine's ln operand (one array, built per call: the optimizers update the
        parameters in place, so a packed copy kept between calls would go stale)."""
        if not self.layer_norm:
            return None
        return np.concatenate([self._params[n] for n in self._ln_names()])

    def _zone_masks(self, B):
        """This step's zoneout weights (zh, zc) of shape (B,H), or (None, None): 0/1 masks
        drawn from the cell's generator in training, p in eval mode."""
        if not self.zoneout:
            return None, None
        H, two = self.hidden_size, self._kind.states == 2
        if not self.training:
            z = np.full((B, H), self.zoneout, self.dtype)
            return z, (z if two else None)
        zh = self._bernoulli(np.empty((B, H), self.dtype), self.zoneout)
        return zh, (self._bernoulli(np.empty((B, H), self.dtype), self.zoneout) if two else None)

    def _state(self, h, name, B):
        if h is None:
            return np.zeros((B, self.hidden_size), self.dtype)
        return _as_array(h, name, self.dtype, shape=(B, self.hidden_size))

    def _step(self, x, h, c):
        if h is not None and (c is not None or self._kind.states == 1) and not self.zoneout:
            # The per-step path: arrays already of the right dtype, shape and layout go straight
            # to C (every check is repeated there); anything else is converted below, and errors
            # are reported with the cell's names and shapes.
            p = self._params
            ln = self._ln_packed() if self.layer_norm else None
            try:
                h1, c1, saved = _core.cell_step(self._cell, x, h, c, p["weight_ih"], p["weight_hh"],
                                                p.get("bias_ih"), p.get("bias_hh"), self._recording(),
                                                p.get("weight_ch"), None, None, ln)
            except (TypeError, ValueError):
                pass
            else:
                if saved is not None:
                    self._push(saved + ((None, None, ln),))
                return h1, c1
        x = _as_array(x, "x", self.dtype, ndim=2, layout="(batch, features)", features=self.input_size)
        B = x.shape[0]
        if B < 1:
            raise ValueError("x must have at least one row")
        h = self._state(h, "h", B)
        c = self._state(c, "c", B) if self._kind.states == 2 else None
        p = self._params
        zh, zc = self._zone_masks(B)
        ln = self._ln_packed()
        h1, c1, saved = _core.cell_step(self._cell, x, h, c, p["weight_ih"], p["weight_hh"],
                                        p.get("bias_ih"), p.get("bias_hh"), self._recording(),
                                        p.get("weight_ch"), zh, zc, ln)
        if saved is not None:
            # the step's layer-norm operand goes with it: its backward must use the same gains
            self._push(saved + ((zh, zc, ln),))
        return h1, c1

    _TAPE_WARN = 4096  # steps kept for backward before the first warning (then at each doubling)

    def _push(self, saved):
        tape = self._tape
        tape.append(saved)
        n = len(tape)
        if n >= self._TAPE_WARN and n & (n - 1) == 0:
            x3, arrays = saved[:2]
            mib = n * (x3.nbytes + sum(a.nbytes for a in arrays if a is not None)) / 2 ** 20
            warnings.warn(
                f"{type(self).__name__} in training mode has kept {n} steps (~{mib:.0f} MiB) for "
                "backward() and keeps growing: for inference call cell.eval() or run it inside "
                "fastrnn.no_grad(); after truncated BPTT call reset_tape()", RuntimeWarning,
                stacklevel=4)

    def _unstep(self, dh1, dc1):
        if not self._tape:
            raise RuntimeError("backward() called more times than training-mode forward()")
        x3, saved, lnsave, (zh, zc, ln) = self._tape[-1]
        B, H = x3.shape[1], self.hidden_size
        dh1 = None if dh1 is None else _as_array(dh1, "dh", self.dtype, shape=(B, H))
        dc1 = None if dc1 is None else _as_array(dc1, "dc", self.dtype, shape=(B, H))
        self._tape.pop()
        p, g = self._params, self.grads
        dx = np.empty(x3.shape, self.dtype)
        peep = p.get("weight_ch")
        dpeep = np.empty(peep.shape, self.dtype) if peep is not None else None
        dln = np.empty(ln.shape, self.dtype) if ln is not None else None
        dh, dc = _core.backward(self._cell, x3, p["weight_ih"], p["weight_hh"], saved, dh_n=dh1,
                                dc_n=dc1, dx=dx, dw_ih=g["weight_ih"], dw_hh=g["weight_hh"],
                                db_ih=g.get("bias_ih"), db_hh=g.get("bias_hh"), peep=peep, dpeep=dpeep,
                                zh=None if zh is None else zh[None], zc=None if zc is None else zc[None],
                                ln=ln, lnsave=lnsave, dln=dln)
        if peep is not None:
            g["weight_ch"] += dpeep
        if ln is not None:
            o = 0
            for name in self._ln_names():
                n = g[name].size
                g[name] += dln[o:o + n]
                o += n
        return dx[0], dh, dc

    def reset_tape(self):
        """Drop cached steps that will not be backpropagated (e.g. after truncating BPTT)."""
        self._tape.clear()


_CELL_DOC = """
    x (B, D), states (B, H). Each training-mode call pushes its cache on a tape and each
    backward() pops the most recent one, so T calls followed by T backward calls in reverse
    order is BPTT through a hand-written loop. The tape grows with every training-mode call
    until backward() pops it: for streaming inference use cell.eval() or fastrnn.no_grad(),
    and call reset_tape() after truncated BPTT (a warning is given at 4096 kept steps).
    Parameters weight_ih, weight_hh, bias_ih, bias_hh
    (PyTorch layout); gradients accumulate into `grads`.
    zoneout=p: each call keeps every unit's previous h (LSTM: and, with its own mask, c) with
    probability p in training (masks from the cell's generator); eval mode uses the expectation
    p*h + (1-p)*h_new (Krueger et al. 2016), as the layers' zoneout.
    layer_norm=True: the layers' layer normalisation on this step's rows (gates =
    LN_ih(W_ih x) + LN_hh(W_hh h) + b_ih + b_hh; LSTM also h1 = o*tanh(LN_c(c1))), with
    parameters layer_norm_{ih,hh}_{weight,bias} (G*H,), LSTM layer_norm_c_{weight,bias} (H,)
    (the layers' names without _l{k}); a cell step equals one step of the layer.
"""


class RNNCell(_CellBase):
    __doc__ = """One Elman step: h1 = cell(x, h); dx, dh = cell.backward(dh1).""" + _CELL_DOC

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", dtype=np.float32, seed=None,
                 zoneout=0.0, layer_norm=False):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(input_size, hidden_size, bias, dtype, seed, zoneout, layer_norm)

    def forward(self, x, h=None):
        return self._step(x, h, None)[0]

    def __call__(self, x, h=None):  # named arguments: *args/**kwargs cost 0.3 us of a step
        return self.forward(x, h)

    def backward(self, dh1):
        dx, dh, _ = self._unstep(dh1, None)
        return dx, dh


class GRUCell(RNNCell):
    __doc__ = """One GRU step: h1 = cell(x, h); dx, dh = cell.backward(dh1).""" + _CELL_DOC

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None, zoneout=0.0,
                 layer_norm=False):
        self.mode = "GRU"
        _CellBase.__init__(self, input_size, hidden_size, bias, dtype, seed, zoneout, layer_norm)


def _pair(state, name, what):
    """An LSTM's two states from a tuple or list of two, or (None, None)."""
    if state is None:
        return None, None
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise TypeError(f"{name} must be a tuple {what} of arrays of shape (batch, hidden_size) or None, "
                        f"got {type(state).__name__}"
                        + (f" of shape {state.shape}" if isinstance(state, np.ndarray) else ""))
    return state[0], state[1]


class LSTMCell(_CellBase):
    __doc__ = """One LSTM step: (h1, c1) = cell(x, (h, c)); dx, (dh, dc) = cell.backward((dh1, dc1)).

    peepholes=True adds weight_ch (3*H,) = p_i, p_f, p_o, as LSTM(peepholes=True).""" + _CELL_DOC
    mode = "LSTM"

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None, peepholes=False,
                 zoneout=0.0, proj_size=0, layer_norm=False):
        if proj_size:  # PyTorch's LSTMCell has none either
            raise ValueError("proj_size is an option of the LSTM layer, not of LSTMCell (use "
                             "LSTM(..., proj_size=P) on a sequence)")
        if not isinstance(peepholes, (bool, np.bool_)):
            raise TypeError(f"peepholes must be True or False, got {peepholes!r}")
        super().__init__(input_size, hidden_size, bias, dtype, seed, zoneout, layer_norm)
        if peepholes and self.layer_norm:
            raise ValueError("layer_norm and peepholes cannot be combined (haste's LayerNormLSTM has no "
                             "peepholes; LN_c would change what the output gate peeks at)")
        self.peepholes = bool(peepholes)
        if self.peepholes:
            self._add_param("weight_ch", (3 * self.hidden_size,), 1.0 / np.sqrt(self.hidden_size))

    def __repr__(self):
        return super().__repr__()[:-1] + (", peepholes=True)" if self.peepholes else ")")

    def forward(self, x, hx=None):
        h, c = _pair(hx, "hx", "(h, c)")
        return self._step(x, h, c)

    def __call__(self, x, hx=None):
        return self.forward(x, hx)

    def backward(self, dstate):
        dh1, dc1 = _pair(dstate, "dstate", "(dh1, dc1) (either may be None)")
        dx, dh, dc = self._unstep(dh1, dc1)
        return dx, (dh, dc)
