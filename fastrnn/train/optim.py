"""Optimizers, learning-rate schedules and gradient clipping.

Optimizers update a dict ``name -> array`` of live parameters in place from a dict of
gradients with the same keys, so they work on any model's ``parameters()``/``grads``.
"""
import math

import numpy as np

from .. import _core
from .._checks import in_range, lookup, non_negative, positive

# One C call per update over every parameter (csrc/optim.c) where the arrays allow it; False
# forces the NumPy path (tests compare the two).
FUSED = True

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "get_optimizer",
           "Schedule", "ExponentialDecay", "StepDecay", "CosineDecay", "get_schedule",
           "clip_grad_norm", "clip_grad_value", "global_norm"]


# ----------------------------------------------------------------------------- clipping
def global_norm(grads):
    """L2 norm of all gradients taken together (float64 accumulation)."""
    return math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place so their global norm is at most ``max_norm``.
    Returns the norm before clipping."""
    positive(max_norm, "max_norm")
    norm = global_norm(grads)
    if norm > max_norm:
        scale = max_norm / (norm + 1e-12)
        for g in grads.values():
            g *= scale
    return norm


def clip_grad_value(grads, clip_value):
    """Clamp every gradient entry in place to [-clip_value, clip_value]."""
    positive(clip_value, "clip_value")
    for g in grads.values():
        np.clip(g, -clip_value, clip_value, out=g)


# ----------------------------------------------------------------------------- schedules
class Schedule:
    """Learning rate as a function of the optimizer step count (0-based)."""

    def __call__(self, step):
        raise NotImplementedError

    def get_config(self):
        cfg = {k: v for k, v in vars(self).items()}
        cfg["name"] = type(self).__name__
        return cfg


class ExponentialDecay(Schedule):
    """lr = initial_learning_rate * decay_rate ** (step / decay_steps)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        positive(decay_steps, "decay_steps")
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps, self.decay_rate, self.staircase = int(decay_steps), float(decay_rate), bool(staircase)

    def __call__(self, step):
        e = step / self.decay_steps
        return self.initial_learning_rate * self.decay_rate ** (math.floor(e) if self.staircase else e)


class StepDecay(Schedule):
    """lr = initial_learning_rate * gamma ** (step // step_size)."""

    def __init__(self, initial_learning_rate, step_size, gamma=0.1):
        positive(step_size, "step_size")
        self.initial_learning_rate, self.step_size, self.gamma = float(initial_learning_rate), int(step_size), float(gamma)

    def __call__(self, step):
        return self.initial_learning_rate * self.gamma ** (step // self.step_size)


class CosineDecay(Schedule):
    """Cosine from initial_learning_rate down to alpha * initial over decay_steps, then flat."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0):
        positive(decay_steps, "decay_steps")
        self.initial_learning_rate, self.decay_steps, self.alpha = float(initial_learning_rate), int(decay_steps), float(alpha)

    def __call__(self, step):
        frac = min(step, self.decay_steps) / self.decay_steps
        cos = 0.5 * (1 + math.cos(math.pi * frac))
        return self.initial_learning_rate * ((1 - self.alpha) * cos + self.alpha)


_SCHEDULES = {c.__name__: c for c in (ExponentialDecay, StepDecay, CosineDecay)}


def get_schedule(cfg):
    cfg = dict(cfg)
    return lookup(_SCHEDULES, cfg.pop("name"), "schedule")(**cfg)


# ----------------------------------------------------------------------------- optimizers
class Optimizer:
    """Base optimizer.

    learning_rate: float or Schedule (evaluated at ``iterations``).
    clipnorm: clip the global norm of all gradients (Keras ``global_clipnorm``).
    clipvalue: clamp each gradient entry.
    weight_decay: L2 penalty added to the gradient (decoupled in AdamW).
    """

    _slot_names = ()

    def __init__(self, learning_rate=0.01, clipnorm=None, clipvalue=None, weight_decay=0.0):
        if not isinstance(learning_rate, Schedule) and (
                isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float, np.floating))
                or not learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number or a Schedule, got {learning_rate!r}")
        for n, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue)):
            if v is not None and not v > 0:
                raise ValueError(f"{n} must be > 0 or None, got {v}")
        non_negative(weight_decay, "weight_decay")
        self.learning_rate = learning_rate
        self.clipnorm, self.clipvalue, self.weight_decay = clipnorm, clipvalue, float(weight_decay)
        self.iterations = 0
        self.slots = {s: {} for s in self._slot_names}

    @property
    def lr(self):
        """Learning rate used by the next step."""
        lr = self.learning_rate
        return float(lr(self.iterations)) if isinstance(lr, Schedule) else float(lr)

    def _slot(self, slot, name, like):
        d = self.slots[slot]
        if name not in d:
            d[name] = np.zeros_like(like)
        return d[name]

    def step(self, params, grads):
        """One update of ``params`` (in place) from ``grads``; grads are clipped in place."""
        if self._step_fused(params, grads):
            return
        if self.clipvalue is not None:
            clip_grad_value(grads, self.clipvalue)
        if self.clipnorm is not None:
            clip_grad_norm(grads, self.clipnorm)
        lr = self.lr
        self.iterations += 1
        for name, p in params.items():
            g = grads[name]
            if self.weight_decay and not self._decoupled:
                g = g + self.weight_decay * p
            self._update(name, p, g, lr)

    _decoupled = False
    _fused_kind = None      # "sgd", "adam", "rmsprop": the C update equals this class's _update

    def _fused_hyper(self):
        return {}

    def _step_fused(self, params, grads):
        """The whole update in one C call (same results as the loop below, the global norm of
        clipnorm aside, which C sums in double); False where it does not apply: a subclass with
        its own _update, arrays that are not C-contiguous float32/float64 of one dtype."""
        kind = self._fused_kind
        if not FUSED or kind is None or type(self)._update is not _FUSED_UPDATES.get(kind):
            return False
        names = list(params)
        ps = [params[n] for n in names]
        try:
            gs = [grads[n] for n in names]
        except KeyError:
            return False
        if not ps:
            return False
        dt = ps[0].dtype if isinstance(ps[0], np.ndarray) else None
        if dt not in (np.float32, np.float64):
            return False
        for a in ps + gs:
            if not isinstance(a, np.ndarray) or a.dtype != dt or not a.flags.c_contiguous \
                    or not a.flags.writeable:
                return False
        if any(g.shape != p.shape for p, g in zip(ps, gs)):
            return False
        hyper = self._fused_hyper()
        used = hyper.pop("_slots")
        slots = []
        for n, p in zip(names, ps):
            row = [None, None, None]          # slot j of _slot_names is the C update's s<j>
            for j, s in enumerate(self._slot_names):
                if s in used:
                    a = self._slot(s, n, p)
                    if a.dtype != dt or not a.flags.c_contiguous or a.shape != p.shape:
                        return False
                    row[j] = a
            slots.append(tuple(row))
        lr = self.lr
        t = self.iterations + 1
        _core.optim_step(kind, ps, gs, slots, clipvalue=self.clipvalue or 0.0,
                         clipnorm=self.clipnorm or 0.0, lr=lr, weight_decay=self.weight_decay,
                         decoupled=self._decoupled, bc1=1 - getattr(self, "beta_1", 0.0) ** t,
                         bc2=1 - getattr(self, "beta_2", 0.0) ** t, **hyper)
        self.iterations = t
        return True

    def _update(self, name, p, g, lr):
        raise NotImplementedError

    def get_config(self):
        lr = self.learning_rate
        cfg = {"name": type(self).__name__,
               "learning_rate": lr.get_config() if isinstance(lr, Schedule) else float(lr),
               "clipnorm": self.clipnorm, "clipvalue": self.clipvalue,
               "weight_decay": self.weight_decay}
        cfg.update(self._extra_config())
        return cfg

    def _extra_config(self):
        return {}

    def state_dict(self):
        """Step count and per-parameter slot arrays (copies)."""
        sd = {"iterations": np.asarray(self.iterations, np.int64)}
        for s, d in self.slots.items():
            for n, a in d.items():
                sd[f"{s}/{n}"] = a.copy()
        return sd

    def load_state_dict(self, sd):
        self.iterations = int(sd["iterations"])
        self.slots = {s: {} for s in self._slot_names}
        for k, a in sd.items():
            if k == "iterations":
                continue
            s, n = k.split("/", 1)
            if s not in self.slots:
                raise ValueError(f"optimizer state has unknown slot {s!r} for {type(self).__name__}")
            self.slots[s][n] = np.array(a)


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum, PyTorch convention: v = m*v + g."""

    _slot_names = ("momentum",)

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kw):
        super().__init__(learning_rate, **kw)
        in_range(momentum, "momentum", 0, 1)
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    _fused_kind = "sgd"

    def _fused_hyper(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov,
                "_slots": ("momentum",) if self.momentum else ()}

    def _update(self, name, p, g, lr):
        if self.momentum:
            v = self._slot("momentum", name, p)
            v *= self.momentum
            v += g
            g = g + self.momentum * v if self.nesterov else v
        p -= lr * g

    def _extra_config(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    _slot_names = ("m", "v")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8, **kw):
        super().__init__(learning_rate, **kw)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    _fused_kind = "adam"

    def _fused_hyper(self):
        return {"beta1": self.beta_1, "beta2": self.beta_2, "eps": self.epsilon, "_slots": ("m", "v")}

    def _update(self, name, p, g, lr):
        m, v = self._slot("m", name, p), self._slot("v", name, p)
        b1, b2, t = self.beta_1, self.beta_2, self.iterations
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        if self._decoupled and self.weight_decay:
            p -= lr * self.weight_decay * p
        p -= (lr / (1 - b1 ** t)) * m / (np.sqrt(v / (1 - b2 ** t)) + self.epsilon)

    def _extra_config(self):
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter)."""

    _decoupled = True

    def __init__(self, learning_rate=0.001, weight_decay=0.01, **kw):
        super().__init__(learning_rate, weight_decay=weight_decay, **kw)


class RMSprop(Optimizer):
    _slot_names = ("sq", "mom", "mg")

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-8, centered=False, **kw):
        super().__init__(learning_rate, **kw)
        in_range(rho, "rho", 0, 1)
        self.rho, self.momentum, self.epsilon, self.centered = float(rho), float(momentum), float(epsilon), bool(centered)

    _fused_kind = "rmsprop"

    def _fused_hyper(self):
        used = ("sq",) + (("mom",) if self.momentum else ()) + (("mg",) if self.centered else ())
        return {"rho": self.rho, "momentum": self.momentum, "eps": self.epsilon,
                "centered": self.centered, "_slots": used}

    def _update(self, name, p, g, lr):
        sq = self._slot("sq", name, p)
        sq *= self.rho
        sq += (1 - self.rho) * (g * g)
        denom = sq
        if self.centered:
            mg = self._slot("mg", name, p)
            mg *= self.rho
            mg += (1 - self.rho) * g
            denom = sq - mg * mg
        step = g / (np.sqrt(denom) + self.epsilon)
        if self.momentum:
            b = self._slot("mom", name, p)
            b *= self.momentum
            b += step
            step = b
        p -= lr * step

    def _extra_config(self):
        return {"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered}


_OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}
# the _update each C kind reproduces: a subclass that overrides _update keeps its own
_FUSED_UPDATES = {"sgd": SGD._update, "adam": Adam._update, "rmsprop": RMSprop._update}


def get_optimizer(opt):
    """An Optimizer from an instance, a name ("adam", "sgd", ...) or a config dict."""
    if isinstance(opt, Optimizer):
        return opt
    if isinstance(opt, str):
        return lookup(_OPTIMIZERS, opt, "optimizer", lower=True)()
    if isinstance(opt, dict):
        cfg = dict(opt)
        cls = lookup(_OPTIMIZERS, str(cfg.pop("name")), "optimizer", lower=True)
        if isinstance(cfg.get("learning_rate"), dict):
            cfg["learning_rate"] = get_schedule(cfg["learning_rate"])
        return cls(**cfg)
    raise TypeError(f"optimizer must be a name or a fastrnn Optimizer, got {type(opt).__name__}")
