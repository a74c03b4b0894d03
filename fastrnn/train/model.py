"""The ``Model`` base class: compile / fit / evaluate / predict and truncated BPTT.

Saving and the PyTorch/Keras weight converters live below this module (``io``, ``interop``)
and take the model as an argument; the methods here are shortcuts to them.
"""
import contextlib
import math
import time

import numpy as np

from .. import _checks
from .. import distributed
from .._numpy_blas import numpy_blas_single_threaded
from . import interop, io
from .callbacks import Callback, History, TerminateOnNaN
from .losses import _position_weights as position_weights, get_loss
from .metrics import check_metrics, metric_sum
from .optim import get_optimizer

__all__ = ["Model"]


def _rows(a, idx):
    """a[idx] for an index array: take() copies the same rows in a third of the time."""
    return a.take(idx, axis=0)


def _getitem(a, idx):
    return a[idx]


class Model:
    """Shared training machinery; subclasses define the forward/backward passes."""

    supports_tbptt = False
    _dist = None            # a distributed.DataParallel while fit/train_on_batch run on N ranks

    def __init__(self, seed=None):
        self.seed = _checks.seed(seed)
        # Separate streams for initialisation and for run-time randomness (shuffling,
        # dropout, scheduled sampling), so changing one does not shift the other.
        self.rng = np.random.default_rng(None if seed is None else [self.seed, 2])
        self.loss = self.optimizer = None
        self.metrics = []
        self.epoch = 0          # completed epochs, across fit() calls
        self.step = 0           # completed training batches
        self.stop_training = False
        self.stop_reason = None
        self.built = False
        self.history = History()

    def _init_rng(self):
        return np.random.default_rng(None if self.seed is None else [self.seed, 1])

    # ---- parameters -------------------------------------------------------------------
    def _modules(self):
        raise NotImplementedError

    def parameters(self):
        """Live parameter arrays, named "<module>.<param>" (e.g. "0.weight_ih_l0")."""
        return {f"{p}.{n}": a for p, m in self._modules() for n, a in m.parameters().items()}

    @property
    def grads(self):
        return {f"{p}.{n}": a for p, m in self._modules() for n, a in m.grads.items()}

    def zero_grad(self):
        for _, m in self._modules():
            m.zero_grad()

    def state_dict(self):
        return {k: v.copy() for k, v in self.parameters().items()}

    def load_state_dict(self, sd):
        """Copy weights in; all names and shapes are checked before anything is written."""
        _checks.copy_state_dict(self.parameters(), sd)

    def _check_unshared(self):
        """Refuse a model that holds one layer (one parameter array) in two places: each use's
        forward would overwrite the other's cache, and backward would compute wrong gradients
        without an error. Weight sharing is not supported; build separate layers."""
        seen = {}
        for name, a in self.parameters().items():
            other = seen.setdefault(id(a), name)
            if other != name:
                raise ValueError(f"the model uses one layer object twice ({other.split('.')[0]!r} and "
                                 f"{name.split('.')[0]!r} share the parameter {a.shape}); weight sharing "
                                 "is not supported: create a separate layer for each position")

    def count_params(self):
        return int(sum(p.size for p in self.parameters().values()))

    # ---- hooks for subclasses ----------------------------------------------------------
    def _clear_caches(self):
        pass

    def reset_states(self):
        pass

    def _recurrents(self):
        return []

    def _engines(self):
        return []

    @contextlib.contextmanager
    def _carrying_state(self):
        """Inside the block the recurrent layers carry their state from one forward to the
        next (truncated BPTT, generation); it starts from zeros and is dropped afterwards."""
        recs = self._recurrents()
        for r in recs:
            r.carry = True
        self.reset_states()
        try:
            yield
        finally:
            for r in recs:
                r.carry = False
            self.reset_states()

    def _loss_mask(self, out, lengths):
        if lengths is None or out.ndim < 3:
            return None
        return (np.arange(out.shape[1])[None, :] < np.asarray(lengths)[:, None]).astype(out.dtype)

    def _output_shape(self, X, y):
        """Shape of the model output for inputs X (and targets y) without running it."""
        return (len(X),) + tuple(X.shape[1] if s is None else s for s in self.output_shape)

    # ---- compile -----------------------------------------------------------------------
    def compile(self, loss="mse", optimizer="adam", metrics=None):
        """Choose the loss (name or Loss), optimizer (name or Optimizer) and metrics
        ("accuracy", "mae", "mse")."""
        self.loss = get_loss(loss)
        self.optimizer = get_optimizer(optimizer)
        self.metrics = check_metrics(metrics)
        return self

    def _require_compiled(self):
        if self.loss is None:
            raise RuntimeError("call model.compile(loss=..., optimizer=...) before fit/evaluate")

    # ---- data checks -------------------------------------------------------------------
    @staticmethod
    def _need_y(y, yname="y"):
        if y is None:
            raise ValueError(f"{yname} is None: training and evaluation need targets")

    def _prepare(self, X, y=None, lengths=None, sample_weight=None, name="X", yname="y"):
        if X is None:
            raise ValueError(f"{name} is None")
        X = _checks.as_array(X, name)
        if y is not None:
            y = _checks.as_array(y, yname)
        if np.size(X) == 0:
            raise ValueError(f"{name} is empty (shape {np.shape(X)}); need at least one sample and one step")
        X = self._check_X(X, name)
        N = len(X)
        if X.dtype.kind == "f" and not np.isfinite(X).all():
            bad = np.argwhere(~np.isfinite(X.reshape(N, -1)).all(1))[:, 0]
            raise ValueError(f"{name} contains NaN or inf (samples {bad[:5].tolist()}"
                             f"{'...' if len(bad) > 5 else ''})")
        if lengths is not None:
            lengths = np.asarray(lengths)
            if lengths.dtype.kind not in "iu" or lengths.shape != (N,):
                raise ValueError(f"lengths must be an integer array of shape ({N},), got "
                                 f"{lengths.dtype} {lengths.shape}")
            if X.ndim < 2 or lengths.min() < 1 or lengths.max() > X.shape[1]:
                raise ValueError(f"lengths must lie in 1..{X.shape[1] if X.ndim > 1 else 1} (the number of steps)")
        if y is not None:
            y = _checks.numeric_array(y, yname)
            if y.ndim == 0 or len(y) != N:
                raise ValueError(f"{name} has {N} samples but {yname} has "
                                 f"{len(y) if y.ndim else 'no sample axis'} (shape {y.shape})")
            if self.loss is not None:
                out_shape = self._output_shape(X, y)
                dummy = np.broadcast_to(np.zeros((), self._out_dtype()), out_shape)
                try:
                    self.loss._prepare_target(dummy, y)
                except ValueError as e:
                    raise ValueError(f"{yname} does not fit the model output for loss "
                                     f"{self.loss.name!r}: {e}") from None
                # Each metric once on the first sample, so that a metric that cannot read these
                # targets fails here, before fit has changed any weight.
                for m in self.metrics:
                    try:
                        metric_sum(m, np.zeros((1,) + out_shape[1:], self._out_dtype()), y[:1], None)
                    except (ValueError, TypeError, IndexError) as e:
                        raise ValueError(f"metric {m!r} cannot compare the model output "
                                         f"{out_shape} with {yname} of shape {y.shape} "
                                         f"(loss {self.loss.name!r}): {e}") from None
        if y is not None and y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError(f"{yname} contains NaN or inf")
        if sample_weight is not None:
            sample_weight = _checks.numeric_array(sample_weight, "sample_weight", "fiu")
            if sample_weight.ndim not in (1, 2) or len(sample_weight) != N:
                raise ValueError(f"sample_weight must have shape ({N},) or ({N}, steps), got {sample_weight.shape}")
            sample_weight = sample_weight.astype(np.float64)
            if not np.isfinite(sample_weight).all() or (sample_weight < 0).any():
                raise ValueError("sample_weight must be finite and >= 0")
        return X, y, lengths, sample_weight

    def _out_dtype(self):
        return self.dtype

    # ---- one training step ---------------------------------------------------------------
    def _loss_and_backward(self, out, y, lengths, sw):
        mask = self._loss_mask(out, lengths)
        value, g = self.loss.value_and_grad(out, y, mask, sw)
        self._backward(g.astype(out.dtype, copy=False))
        if self._dist is not None:
            # the loss is a weighted mean; ranks combine their means by these totals
            self._loss_weight = self._position_weight(out, mask, sw).sum()
        return float(value)

    @staticmethod
    def _position_weight(out, mask, sw):
        """Loss weight of every position (sample, or sample and step) of ``out``: the losses'
        own weighting (mask times sample weight), in float64 for the sums."""
        return position_weights(out.shape[:-1], mask, sw, np.float64)

    def train_on_batch(self, X, y, lengths=None, sample_weight=None, tbptt=None):
        """One optimizer update (several with truncated BPTT); returns the batch loss.

        On N ranks (``fr.distributed.init()``) each rank passes its own part of the batch and
        the update uses the gradient of all the parts together (one Allreduce); the returned
        loss is the whole batch's. The ranks must hold equal models (``fit`` makes them so;
        before a hand-written loop call ``fr.distributed.broadcast(model)``)."""
        self._require_compiled()
        self._check_tbptt(tbptt)
        self._need_y(y)
        X, y, lengths, sample_weight = self._prepare(X, y, lengths, sample_weight)
        self._check_tbptt_lengths(tbptt, X, lengths)
        self._check_unshared()
        with self._data_parallel():
            return self._train_batch(X, y, lengths, sample_weight, tbptt)[0]

    @contextlib.contextmanager
    def _data_parallel(self):
        self._dist = distributed.data_parallel(self)
        try:
            yield self._dist
        finally:
            self._dist = None

    def _train_batch(self, X, y, lengths, sw, tbptt):
        """One batch (one update, or one per tbptt chunk). Returns (the loss to report: the
        whole batch's over all ranks, this rank's loss, this rank's output or None)."""
        if self._dist is not None and len(X) == 0:
            return self._train_nothing(X, tbptt)
        if tbptt is not None:
            return self._train_tbptt(X, y, lengths, sw, tbptt)
        self._clear_caches()
        self.zero_grad()
        out = self._forward(X, lengths, True, y=y)
        value = self._loss_and_backward(out, y, lengths, sw)
        report = self._step_if_finite(value)[1]
        return report, value, out

    def _train_nothing(self, X, tbptt):
        """A rank without samples in this batch (the last batch of an epoch can be smaller
        than the number of ranks) still joins every update, with weight 0."""
        T = X.shape[1] if X.ndim > 1 else 1
        updates = 1 if (tbptt is None or not self.output_has_time) else -(-T // tbptt)
        report = 0.0
        for _ in range(updates):
            self.zero_grad()
            self._loss_weight = 0.0
            stepped, report = self._step_if_finite(0.0)
            if not stepped:
                break
        return report, 0.0, None

    def _step_if_finite(self, value):
        """The optimizer update, unless the loss is NaN or inf: such a step would write
        non-finite values into every weight, so the model keeps its last finite weights
        (fit's default TerminateOnNaN then stops, saying where). On N ranks the gradients
        are first averaged over the ranks, and the decision is taken on the global loss, so
        every rank takes the same one. Returns (stepped, the loss that decided)."""
        if self._dist is not None:
            value = self._dist.average_grads(value, self._loss_weight)
        if not math.isfinite(value):
            return False, value
        self.optimizer.step(self.parameters(), self.grads)
        return True, value

    def _train_tbptt(self, X, y, lengths, sw, k):
        """Chunks of k steps; the state is carried across chunks but its gradient is not
        (each chunk's backward stops at the chunk's initial state), one update per chunk.
        Targets without a time axis only give a loss on the final chunk. With k >= T there is
        one chunk, from a zero state: the same operations as full BPTT."""
        T = X.shape[1]
        if lengths is not None and k < T:
            raise ValueError("tbptt with ragged lengths is not supported")
        per_step = self.output_has_time
        total, weight, outs, rtotal = 0.0, 0.0, [], 0.0
        with self._carrying_state():
            try:
                for s in range(0, T, k):
                    e = min(s + k, T)
                    self._clear_caches()
                    self.zero_grad()
                    out = self._forward(X[:, s:e], lengths, True)
                    if not per_step and e < T:
                        continue
                    yc = y[:, s:e] if per_step else y
                    swc = sw[:, s:e] if (per_step and sw is not None and sw.ndim == 2) else sw
                    v = self._loss_and_backward(out, yc, lengths, swc)
                    stepped, rv = self._step_if_finite(v)
                    if not stepped:
                        total, weight, rtotal = v, 1, rv
                        outs.append(out)
                        break
                    w = (e - s) if per_step else 1
                    total, weight, rtotal = total + v * w, weight + w, rtotal + rv * w
                    outs.append(out)
            finally:
                self._clear_caches()
        return rtotal / weight, total / weight, (np.concatenate(outs, 1) if per_step else outs[-1])

    # ---- fit ---------------------------------------------------------------------------
    def _check_fit_args(self, epochs, batch_size, validation_split, tbptt, verbose):
        _checks.positive_int(epochs, "epochs", 0)
        _checks.count(batch_size, "batch_size")
        _checks.in_range(validation_split, "validation_split", 0, 1)
        self._check_tbptt(tbptt)
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")

    def _check_tbptt(self, tbptt):
        if tbptt is not None:
            _checks.count(tbptt, "tbptt (steps per chunk)")
            if not (self.supports_tbptt and self._recurrents()):
                raise ValueError("tbptt needs a Sequential model with recurrent layers")

    @staticmethod
    def _check_tbptt_lengths(tbptt, X, lengths):
        if tbptt is not None and lengths is not None and X.ndim > 1 and tbptt < X.shape[1]:
            raise ValueError("tbptt with ragged lengths is not supported: chunks would restart "
                             "finished sequences; pad the data and mask the loss with sample_weight")

    @numpy_blas_single_threaded
    def fit(self, X, y, epochs=1, batch_size=32, validation_split=0.0, validation_data=None,
            shuffle=True, callbacks=None, verbose=1, lengths=None, sample_weight=None, tbptt=None,
            sharded=False):
        """Train for ``epochs`` more epochs; returns the History (also ``model.history``).

        validation_split takes the *last* fraction of the samples, before shuffling (Keras).
        validation_data: (X_val, y_val) or (X_val, y_val, lengths_val).
        lengths: valid steps per sample (ragged sequences padded at the end); the loss of
            per-step outputs is masked past each length.
        sample_weight: (samples,) or (samples, steps) weights; 0 masks a position out.
        tbptt: truncated BPTT with chunks of this many steps (see ``_train_tbptt``).
        sharded: only on N ranks (``fr.distributed.init()``): the data (and validation data)
            are this rank's own part, not the whole set passed on every rank.

        On N ranks ``batch_size`` is the global batch and the result is the single process's,
        to rounding (see ``fastrnn.distributed``).
        """
        self._require_compiled()
        self._check_fit_args(epochs, batch_size, validation_split, tbptt, verbose)
        self._need_y(y)
        X, y, lengths, sample_weight = self._prepare(X, y, lengths, sample_weight)
        self._check_tbptt_lengths(tbptt, X, lengths)
        self._check_unshared()
        N = len(X)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be (X_val, y_val) or (X_val, y_val, lengths_val)")
            vx, vy = validation_data[0], validation_data[1]
            vl = validation_data[2] if len(validation_data) == 3 else None
            self._need_y(vy, "validation_data y")
            val = self._prepare(vx, vy, vl, None, "validation_data X", "validation_data y")[:3]
        elif validation_split:
            nv = int(N * validation_split)
            if nv == 0 or nv == N:
                raise ValueError(f"validation_split={validation_split} of {N} samples leaves "
                                 f"{nv} for validation and {N - nv} for training")
            sl = lambda a: None if a is None else a[N - nv:]
            val = (X[N - nv:], y[N - nv:], sl(lengths))
            X, y = X[:N - nv], y[:N - nv]
            lengths = None if lengths is None else lengths[:N - nv]
            sample_weight = None if sample_weight is None else sample_weight[:N - nv]
            N -= nv
        stateful = any(r.stateful for r in self._recurrents())
        if stateful and (shuffle or N % batch_size):
            raise ValueError("stateful layers carry state from batch to batch: use shuffle=False "
                             f"and a batch_size dividing the {N} training samples")
        cbs = list(callbacks or [])
        for c in cbs:
            if not isinstance(c, Callback):
                raise TypeError(f"callbacks must be fastrnn Callback instances, got {type(c).__name__}")
        if not any(isinstance(c, TerminateOnNaN) for c in cbs):
            cbs.append(TerminateOnNaN())  # a NaN loss stops training, saying where (Keras' opt-in)
        with self._data_parallel() as dist:
            if dist is None:
                if sharded:
                    raise ValueError("sharded=True means each MPI rank passes its own part of the "
                                     "data; this process runs alone (call fr.distributed.init() "
                                     "under mpiexec/srun)")
                steps, B = math.ceil(N / batch_size), batch_size
            else:
                self._agree_fit(X, epochs, batch_size, shuffle, tbptt, sharded, val is not None)
                distributed.broadcast(self)
                steps, B = dist.plan(N, batch_size, sharded)
                if stateful and not sharded and B != batch_size:
                    raise ValueError("stateful layers with batch='per_rank' need sharded=True")
                if not distributed.is_main():
                    verbose = 0
            return self._fit_loop(X, y, lengths, sample_weight, val, epochs, steps, B, shuffle,
                                  cbs, verbose, tbptt, stateful, sharded, batch_size)

    def _agree_fit(self, X, epochs, batch_size, shuffle, tbptt, sharded, has_val):
        """On N ranks every rank must run the same loop: the same number of epochs and updates,
        on data of one kind; checked before anything runs so that all ranks raise alike."""
        distributed.agree((type(self).__name__, self.count_params(),
                           self.optimizer.get_config(), self.loss.name),
                          "the model (class, parameter count, optimizer, loss)")
        distributed.agree((epochs, batch_size, bool(shuffle), tbptt, bool(sharded), has_val),
                          "fit's arguments (epochs, batch_size, shuffle, tbptt, sharded, validation)")
        feat = X.shape[1:] if (tbptt is not None or not sharded) else X.shape[2:]
        distributed.agree((str(X.dtype), feat), "the data's dtype and per-sample shape")

    def _fit_loop(self, X, y, lengths, sample_weight, val, epochs, steps, B, shuffle, cbs,
                  verbose, tbptt, stateful, sharded, batch_size):
        dist = self._dist
        N = len(X)
        history = History()
        cbs = [history] + cbs
        for c in cbs:
            c.set_model(self)
        self.stop_training, self.stop_reason = False, None
        for c in cbs:
            c.on_train_begin()
        gens = distributed._generators(self)
        try:
            for _ in range(epochs):
                ep = self.epoch
                for c in cbs:
                    c.on_epoch_begin(ep)
                if stateful:
                    self.reset_states()
                # The shuffle stream (the model's generator as saved in files) gives one seed per
                # epoch and the permutation; dropout and sampling draw from streams derived from
                # that seed (and the rank), so they never shift the shuffle: N ranks shuffle
                # exactly as one process does, and a checkpoint resumes the same epoch.
                epoch_seed = int(self.rng.integers(2**63))
                order = self.rng.permutation(N) if shuffle else np.arange(N)
                saved = [g.bit_generator.state for g in gens]
                rank = 0 if dist is None else dist.rank
                for i, g in enumerate(gens):
                    g.bit_generator.state = np.random.PCG64(
                        np.random.SeedSequence([epoch_seed, rank, i])).state
                try:
                    sums = {k: [0.0, 0.0] for k in ["loss"] + list(self.metrics)}
                    bar = self._progress(steps, ep, verbose)
                    t0 = time.perf_counter()
                    for b in range(steps):
                        if dist is None:
                            idx = order[b * B:(b + 1) * B] if shuffle else slice(b * B, (b + 1) * B)
                        else:
                            idx = dist.part(order, b, steps, B, sharded)
                        rows = _rows if isinstance(idx, np.ndarray) else _getitem
                        lb = None if lengths is None else rows(lengths, idx)
                        swb = None if sample_weight is None else rows(sample_weight, idx)
                        yb = rows(y, idx)
                        report, value, out = self._train_batch(rows(X, idx), yb, lb, swb, tbptt)
                        self.step += 1
                        if out is not None:
                            self._accumulate(sums, value, out, yb, lb, swb)
                        for c in cbs:
                            c.on_batch_end(b, {"loss": report})
                        if bar is not None:
                            bar.set_postfix({k: f"{v:.4g}" for k, v in self._averages(sums).items()}, refresh=False)
                            bar.update(1)
                        if self.stop_training:
                            break
                finally:
                    for g, st in zip(gens, saved):
                        g.bit_generator.state = st
                if dist is not None:
                    sums = dist.reduce_sums(sums)
                logs = self._averages(sums)
                if val is not None and not self.stop_training:
                    if stateful:
                        self.reset_states()
                    vlogs = self._evaluate_parts(*val, batch_size, sharded)
                    logs.update({"val_" + k: v for k, v in vlogs.items()})
                    if stateful:
                        self.reset_states()
                dt = time.perf_counter() - t0
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()})
                    bar.close()
                elif verbose == 2:
                    print(f"Epoch {ep + 1}: " + " - ".join(f"{k}: {v:.4g}" for k, v in logs.items())
                          + f" - {dt:.2f}s ({steps / dt:.1f} steps/s)")
                self.epoch += 1
                for c in cbs:
                    c.on_epoch_end(ep, logs)
                if dist is not None:
                    # a user callback that stopped one rank stops them all
                    self.stop_training = distributed.any_rank(self.stop_training)
                if self.stop_training:
                    break
        finally:
            self._clear_caches()
            for r in self._engines():
                r.eval()
        for c in cbs:
            c.on_train_end()
        for k, v in history.history.items():
            self.history.history.setdefault(k, []).extend(v)
        self.history.epoch.extend(history.epoch)
        return history

    def _progress(self, steps, ep, verbose):
        if verbose != 1:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=steps, desc=f"Epoch {ep + 1}", unit="step", dynamic_ncols=True)

    def _accumulate(self, sums, value, out, y, lengths, sw):
        mask = self._loss_mask(out, lengths)
        w = None if (mask is None and sw is None) else self._position_weight(out, mask, sw)
        W = float(math.prod(out.shape[:-1])) if w is None else float(w.sum())
        s = sums.setdefault("loss", [0.0, 0.0])
        s[0] += value * W
        s[1] += W
        for m in self.metrics:
            a, b = metric_sum(m, out, np.asarray(y), w)
            s = sums.setdefault(m, [0.0, 0.0])
            s[0] += a
            s[1] += b

    @staticmethod
    def _averages(sums):
        return {k: (a / b if b else 0.0) for k, (a, b) in sums.items()}

    # ---- evaluate / predict ----------------------------------------------------------------
    @numpy_blas_single_threaded
    def evaluate(self, X, y, batch_size=256, lengths=None, sample_weight=None, verbose=0):
        """Loss and metrics over the data (eval mode) as a dict. (On N ranks each rank
        evaluates what it is given; ``fit``'s validation is reduced over the ranks.)"""
        self._require_compiled()
        _checks.count(batch_size, "batch_size")
        self._need_y(y)
        X, y, lengths, sample_weight = self._prepare(X, y, lengths, sample_weight)
        res = self._averages(self._evaluate_sums(X, y, lengths, sample_weight, batch_size))
        if verbose:
            print(" - ".join(f"{k}: {v:.4g}" for k, v in res.items()))
        return res

    def _evaluate_sums(self, X, y, lengths, sample_weight, batch_size):
        sums = {k: [0.0, 0.0] for k in ["loss"] + list(self.metrics)}
        for s in range(0, len(X), batch_size):
            sl = slice(s, s + batch_size)
            lb = None if lengths is None else lengths[sl]
            swb = None if sample_weight is None else sample_weight[sl]
            out = self._forward(X[sl], lb, False, y=y[sl])
            value = float(self.loss(out, y[sl], self._loss_mask(out, lb), swb))
            self._accumulate(sums, value, out, y[sl], lb, swb)
        return sums

    def _evaluate_parts(self, X, y, lengths, batch_size, sharded):
        """fit's validation: alone, the whole set; on N ranks each rank's part (its slice of
        the replicated set, or its own shard), the sums reduced over the ranks."""
        dist = self._dist
        if dist is None:
            return self._averages(self._evaluate_sums(X, y, lengths, None, batch_size))
        if not sharded:
            sl = dist.split(len(X))
            X, y, lengths = X[sl], y[sl], None if lengths is None else lengths[sl]
        sums = self._evaluate_sums(X, y, lengths, None, batch_size)
        return self._averages(dist.reduce_sums(sums))

    @numpy_blas_single_threaded
    def predict(self, X, batch_size=256, lengths=None):
        """Model outputs in eval mode (logits for classification losses)."""
        _checks.count(batch_size, "batch_size")
        X, _, lengths, _ = self._prepare(X, None, lengths)
        outs = []
        for s in range(0, len(X), batch_size):
            sl = slice(s, s + batch_size)
            outs.append(self._forward(X[sl], None if lengths is None else lengths[sl], False))
        return np.concatenate(outs, 0)

    def __call__(self, X, lengths=None):
        return self.predict(X, lengths=lengths)

    # ---- shortcuts to the converters and the file format below (interop.py, io.py) ----------
    def load_torch_state_dict(self, state_dict, mapping=None):
        return interop.load_torch_state_dict(self, state_dict, mapping)

    def torch_state_dict(self, mapping=None, tensors=False):
        return interop.torch_state_dict(self, mapping, tensors)

    def get_keras_weights(self, with_config=False):
        """The weights as Keras ``model.get_weights()`` lists them; ``with_config=True`` gives
        ``(weights, configs)`` with the Keras layer configs (see ``fr.get_keras_weights``)."""
        return interop.get_keras_weights(self, with_config)

    def set_keras_weights(self, weights, reset_after=None, *, configs=None):
        """Load Keras ``model.get_weights()``; ``configs`` (the Keras layers' ``get_config()``)
        are checked against the model, and what cannot be verified -- e.g. a GRU without bias
        and without configs or ``reset_after=True`` -- is refused (see ``fr.set_keras_weights``)."""
        return interop.set_keras_weights(self, weights, reset_after, configs=configs)

    def save(self, path):
        """Config, weights, optimizer state and training counters in one file (atomic)."""
        io.save(self, path)
