"""Callbacks for ``Model.fit`` (Keras-style hooks)."""
import csv
import math
import os
import warnings

from .. import distributed
from .._checks import non_negative

__all__ = ["Callback", "History", "EarlyStopping", "ModelCheckpoint", "LearningRateScheduler",
           "CSVLogger", "TerminateOnNaN"]


class Callback:
    """Override any of the hooks; ``self.model`` is set by ``fit``. ``epoch`` is 0-based and
    counts across repeated ``fit`` calls; ``logs`` maps metric names to floats."""

    model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass


class History(Callback):
    """``history[name]`` is the list of per-epoch values; ``epoch`` the epoch indices."""

    def __init__(self):
        self.history, self.epoch = {}, []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"


def _better(mode, monitor):
    if mode == "auto":
        mode = "max" if ("acc" in monitor) else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    return mode


def _monitored(logs, monitor, who):
    if monitor not in logs:
        raise KeyError(f"{who} monitors {monitor!r}, which is not among the logged values "
                       f"{sorted(logs)}; pass validation data or monitor='loss'")
    return logs[monitor]


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs;
    with ``restore_best_weights`` the best epoch's weights are put back at the end."""

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto",
                 restore_best_weights=False):
        non_negative(patience, "patience")
        self.monitor, self.patience, self.min_delta = monitor, int(patience), abs(float(min_delta))
        self.mode = _better(mode, monitor)
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, logs=None):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait, self.best_epoch, self.best_weights, self.stopped_epoch = 0, None, None, None

    def on_epoch_end(self, epoch, logs=None):
        v = _monitored(logs or {}, self.monitor, "EarlyStopping")
        improved = (v < self.best - self.min_delta) if self.mode == "min" else (v > self.best + self.min_delta)
        if improved:
            self.best, self.best_epoch, self.wait = v, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()
        else:
            self.wait += 1
            if self.wait > self.patience:
                self.stopped_epoch = epoch
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the whole model (``fr.save``) after each epoch. ``filepath`` may contain
    ``{epoch}`` (1-based) and logged names, e.g. ``"ckpt-{epoch:03d}-{val_loss:.4f}.frnn"``.
    On N MPI ranks only rank 0 writes (the ranks hold the same model)."""

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto"):
        self.filepath, self.monitor, self.save_best_only = os.fspath(filepath), monitor, save_best_only
        self.mode = _better(mode, monitor)
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            v = _monitored(logs, self.monitor, "ModelCheckpoint")
            if not (v < self.best if self.mode == "min" else v > self.best):
                return
            self.best = v
        if distributed.is_main():
            self.model.save(self.filepath.format(epoch=epoch + 1, **logs))


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at each epoch start to ``schedule(epoch, lr)``."""

    def __init__(self, schedule, verbose=0):
        if not callable(schedule):
            raise TypeError("schedule must be callable as schedule(epoch, lr) -> lr")
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        lr = float(self.schedule(epoch, opt.lr))
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"LearningRateScheduler returned {lr} for epoch {epoch}")
        opt.learning_rate = lr
        if self.verbose:
            print(f"Epoch {epoch + 1}: learning rate {lr:.6g}")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = self.model.optimizer.lr


class CSVLogger(Callback):
    """One CSV row per epoch (epoch + logged values); ``append`` keeps an existing file.
    The file is opened for each row, so nothing stays open if training is interrupted.
    On N MPI ranks only rank 0 writes (the logs are reduced over the ranks)."""

    def __init__(self, filename, separator=",", append=False):
        self.filename, self.sep, self.append = os.fspath(filename), separator, append
        self.keys = None

    def on_train_begin(self, logs=None):
        self.keys = None
        if not self.append and distributed.is_main():
            open(self.filename, "w").close()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
        if not distributed.is_main():
            return
        with open(self.filename, "a", newline="") as f:
            writer = csv.DictWriter(f, ["epoch"] + self.keys, delimiter=self.sep, extrasaction="ignore")
            if f.tell() == 0:
                writer.writeheader()
            writer.writerow({"epoch": epoch, **{k: logs.get(k, "") for k in self.keys}})


class TerminateOnNaN(Callback):
    """Stop training at the first non-finite batch loss, with a message saying where and why.
    ``raise_error=True`` raises FloatingPointError instead of stopping quietly."""

    def __init__(self, raise_error=False):
        self.raise_error = raise_error

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            msg = (f"loss became {loss} at batch {batch} of epoch {self.model.epoch + 1}; training "
                   "stopped. Usual remedies: a lower learning rate, gradient clipping "
                   "(optimizer clipnorm=...), or checking the data for extreme values.")
            self.model.stop_training = True
            self.model.stop_reason = msg
            if self.raise_error:
                raise FloatingPointError(msg)
            if distributed.is_main():       # the loss is the global one: every rank stops
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
