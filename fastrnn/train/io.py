"""One-file model persistence: config, weights, optimizer state and training counters.

The file is a zip archive: ``fastrnn.json`` (format name and version, model config, compile
config, epoch/step counters, random-generator states, history) plus one ``.npy`` entry per
weight and optimizer slot.  Writes go to a temporary file in the target directory that
replaces the old file only once complete (``os.replace``), so a crash mid-save leaves the
previous file intact.

This module sits below the models: ``save`` takes any model object (``Model.save`` calls it),
and ``load`` finds the class named in the file through the registry the model classes fill
(``registry.register``), so nothing here imports a model class.
"""
import io as _io
import json
import os
import tempfile
import zipfile

import numpy as np

from .registry import get_class

__all__ = ["save", "load", "FORMAT_VERSION"]

FORMAT_NAME = "fastrnn-model"
FORMAT_VERSION = 1
_META = "fastrnn.json"


def _npy_bytes(a):
    buf = _io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(a), allow_pickle=False)
    return buf.getvalue()


def _engine_rngs(model):
    return [e for e in model._engines() if hasattr(e, "_rng")]


def _is_model(obj):
    """A fastrnn model (``train.model.Model``, which is above this module), by what save uses."""
    return all(callable(getattr(obj, a, None)) for a in ("get_config", "parameters", "_engines", "compile"))


def save(model, path, extra=None):
    """Write ``model`` (with its optimizer state if compiled) to ``path`` atomically.

    extra: optional ``{entry name: bytes or str}`` stored in the same file, in the same atomic
    write (e.g. the command line's ``cli.json``); ``load`` ignores them, ``read_extra`` reads
    one back."""
    if not _is_model(model):
        raise TypeError(f"save() takes a fastrnn model, got {type(model).__name__}")
    extra = dict(extra or {})
    for name in extra:
        if name == _META or name.startswith(("weights/", "optimizer/")):
            raise ValueError(f"extra entry {name!r} would overwrite the model's own entries")
    path = os.fspath(path)
    meta = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "config": model.get_config(),
        "compile": None if model.loss is None else {
            "loss": model.loss.get_config(), "optimizer": model.optimizer.get_config(),
            "metrics": list(model.metrics)},
        "state": {"epoch": model.epoch, "step": model.step,
                  "rng": model.rng.bit_generator.state,
                  "engine_rngs": [e._rng.bit_generator.state for e in _engine_rngs(model)],
                  "history": model.history.history, "history_epochs": model.history.epoch},
    }
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
                z.writestr(_META, json.dumps(meta, indent=1, default=_json_default))
                for k, v in model.parameters().items():
                    z.writestr(f"weights/{k}.npy", _npy_bytes(v))
                if model.optimizer is not None:
                    for k, v in model.optimizer.state_dict().items():
                        z.writestr(f"optimizer/{k}.npy", _npy_bytes(v))
                for name, data in extra.items():
                    z.writestr(name, data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the permissions open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"cannot store {type(o).__name__} in the model config")


def _model_class(name):
    """The registered model class of that name (layers are registered too: not them)."""
    try:
        cls = get_class(name)
    except ValueError:
        cls = None
    if cls is None or not callable(getattr(cls, "compile", None)):
        raise ValueError(f"unknown model class {name!r} in file")
    return cls


def read_extra(path, name):
    """The bytes of an ``extra`` entry saved with the model, or None if the file has none
    (or is not a readable zip file)."""
    try:
        with zipfile.ZipFile(path) as z:
            if name in z.namelist():
                return z.read(name)
    except (zipfile.BadZipFile, OSError):
        pass
    return None


def load(path, compile=True):
    """Rebuild a model saved with ``save``/``model.save``: same predictions, and (when it was
    compiled) the same optimizer state and counters, so training resumes where it stopped."""
    path = os.fspath(path)
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not a fastrnn model file") from None
    with z:
        names = set(z.namelist())
        if _META not in names:
            raise ValueError(f"{path} is not a fastrnn model file (no {_META})")
        meta = json.loads(z.read(_META))
        if meta.get("format") != FORMAT_NAME:
            raise ValueError(f"{path} is not a fastrnn model file")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{path} has format version {meta['format_version']}; this fastrnn "
                             f"reads up to {FORMAT_VERSION} -- upgrade fastrnn")

        def arrays(prefix):
            return {n[len(prefix):-4]: np.lib.format.read_array(_io.BytesIO(z.read(n)), allow_pickle=False)
                    for n in sorted(names) if n.startswith(prefix) and n.endswith(".npy")}

        weights, opt_state = arrays("weights/"), arrays("optimizer/")
    cfg = meta["config"]
    model = _model_class(cfg["class"]).from_config(cfg)
    if weights:
        model.load_state_dict(weights)
    st = meta["state"]
    if compile and meta["compile"] is not None:
        c = meta["compile"]
        model.compile(c["loss"], c["optimizer"], c["metrics"])
        if opt_state:
            model.optimizer.load_state_dict(opt_state)
    model.epoch, model.step = st["epoch"], st["step"]
    model.rng.bit_generator.state = st["rng"]
    for e, s in zip(_engine_rngs(model), st["engine_rngs"]):
        e._rng.bit_generator.state = s
    model.history.history = {k: list(v) for k, v in st["history"].items()}
    model.history.epoch = list(st["history_epochs"])
    return model
