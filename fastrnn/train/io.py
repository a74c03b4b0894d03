"""One-file model persistence: config, weights, optimizer state and training counters.

The file is a zip archive: ``fastrnn.json`` (format name and version, model config, compile
config, epoch/step counters, random-generator states, history) plus one ``.npy`` entry per
weight (``weights/<name>.npy``) and optimizer slot (``optimizer/...``); any other entry is an
``extra`` stored by ``save(extra=...)`` (e.g. the command line's ``cli.json``).

Saving writes a temporary file next to the target -- named ``.<name>.<pid>.<random>.fastrnn-tmp``
-- flushes it to disk and only then renames it over the target (``os.replace``) and syncs the
directory, so a crash or a kill mid-save leaves the previous file intact. A kill leaves its
temporary file behind; the next save to the same target removes those whose writer is no longer
running. A re-saved file keeps its permission bits, and a symbolic link keeps pointing where it
did: the save goes to the file it resolves to.

Loading trusts nothing in the file. It refuses with ``ModelFileError`` (a ``ValueError``) a file
that is not a zip archive, that is damaged (bad CRC, broken compressed data, truncated), that
has duplicate or unexpected entries, a malformed ``fastrnn.json``, arrays of a non-numeric
dtype or of a shape the model does not have, or missing weights; it never unpickles. It reads
every array's ``.npy`` header first, checks the sizes the config asks for against what the
stored arrays hold before building the model, builds it, checks every entry's name and shape
against the model's own parameters and optimizer state, and only then reads the array data,
each entry capped at exactly the bytes its header declares. A file therefore cannot make the
loader allocate much more than the model it really holds, or run for long. The model is returned
only when everything has been checked and applied; a failure returns nothing half-loaded.

This module sits below the models: ``save`` takes any model object (``Model.save`` calls it),
and ``load`` finds the class named in the file through the registry the model classes fill
(``registry.register``), so nothing here imports a model class.
"""
import io as _io
import json
import math
import os
import re
import secrets
import stat
import threading
import zipfile
import zlib

import numpy as np

from .losses import get_loss
from .metrics import check_metrics
from .optim import get_optimizer
from .registry import get_class

__all__ = ["save", "load", "FORMAT_VERSION", "ModelFileError"]

FORMAT_NAME = "fastrnn-model"
FORMAT_VERSION = 1
_META = "fastrnn.json"
_WEIGHTS, _OPTIMIZER = "weights/", "optimizer/"


class ModelFileError(ValueError):
    """A file ``fr.load`` refuses: not a fastrnn model file, or a damaged or inconsistent one.
    The message names the file and what is wrong with it."""


# =============================================================================== save
_TMP_SUFFIX = ".fastrnn-tmp"
_writing = set()                 # temporary files this process is writing right now
_writing_lock = threading.Lock()


def _npy_bytes(a):
    buf = _io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(a), allow_pickle=False)
    return buf.getvalue()


def _engine_rngs(model):
    return [e for e in model._engines() if hasattr(e, "_rng")]


def _is_model(obj):
    """A fastrnn model (``train.model.Model``, which is above this module), by what save uses."""
    return all(callable(getattr(obj, a, None)) for a in ("get_config", "parameters", "_engines", "compile"))


def _tmp_pattern(base):
    return re.compile(r"\." + re.escape(base) + r"\.(\d+)\.[0-9a-f]{8}" + re.escape(_TMP_SUFFIX) + r"\Z")


def _pid_alive(pid):
    """Whether process ``pid`` may still be writing (when unsure: yes)."""
    if pid <= 0 or os.name != "posix":
        return True                  # os.kill(pid, 0) is no probe on Windows: it terminates
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:                  # PermissionError: alive, someone else's
        return True
    return True


def _remove_stale_temps(d, base):
    """Remove the temporary files of earlier saves to ``d/base`` whose writer has died (killed
    mid-save). Those of live processes -- a concurrent save -- are left alone."""
    pat = _tmp_pattern(base)
    try:
        names = os.listdir(d)
    except OSError:
        return
    me = os.getpid()
    for name in names:
        m = pat.match(name)
        if m is None:
            continue
        pid, full = int(m.group(1)), os.path.join(d, name)
        if pid == me:
            with _writing_lock:
                stale = full not in _writing
        else:
            stale = not _pid_alive(pid)
        if stale:
            try:
                os.unlink(full)
            except OSError:
                pass


def _fsync_dir(d):
    try:
        fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return                       # not possible here (e.g. Windows): the rename still is atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(model, path, extra=None):
    """Write ``model`` (with its optimizer state if compiled) to ``path`` atomically.

    extra: optional ``{entry name: bytes or str}`` stored in the same file, in the same atomic
    write (e.g. the command line's ``cli.json``); ``load`` ignores them, ``read_extra`` reads
    one back.

    A crash or kill at any point leaves ``path`` as it was or fully written. An existing file
    keeps its permission bits (a new one gets ``0o666 & ~umask``, as ``open`` gives); when
    ``path`` is a symbolic link the file it points to is replaced and the link stays."""
    if not _is_model(model):
        raise TypeError(f"save() takes a fastrnn model, got {type(model).__name__}")
    extra = dict(extra or {})
    for name in extra:
        if not isinstance(name, str) or not name:
            raise ValueError(f"extra entry names must be non-empty strings, got {name!r}")
        if name == _META or name.startswith((_WEIGHTS, _OPTIMIZER)):
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
    meta_text = json.dumps(meta, indent=1, default=_json_default)
    # Through a symbolic link to the file it names (as editors do), so the link survives.
    target = os.path.realpath(path)
    d, base = os.path.split(target)
    try:
        st = os.stat(target)
        mode = stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None
    except OSError:
        mode = None
    _remove_stale_temps(d, base)
    tmp = os.path.join(d, f".{base}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}")
    with _writing_lock:
        _writing.add(tmp)
    try:
        # 0o666 here: the kernel applies the umask, as open() does for a new file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_BINARY", 0), 0o666)
        try:
            if mode is not None:
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, mode)
                else:
                    os.chmod(tmp, mode)
            f = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise
        with f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
                z.writestr(_META, meta_text)
                for k, v in model.parameters().items():
                    z.writestr(f"{_WEIGHTS}{k}.npy", _npy_bytes(v))
                if model.optimizer is not None:
                    for k, v in model.optimizer.state_dict().items():
                        z.writestr(f"{_OPTIMIZER}{k}.npy", _npy_bytes(v))
                for name, data in extra.items():
                    z.writestr(name, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        with _writing_lock:
            _writing.discard(tmp)
    _fsync_dir(d)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"cannot store {type(o).__name__} in the model config")


# =============================================================================== reading entries
_MAX_META_BYTES = 16 << 20        # fastrnn.json: config, compile config, counters, history
_MAX_NPY_HEADER = 10000           # numpy's own default limit for a .npy header
_MAX_DEFLATE_RATIO = 1032         # deflate cannot expand more than ~1032:1
_CHUNK = 1 << 20
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError,
               NotImplementedError, RuntimeError, OverflowError, UnicodeDecodeError, KeyError,
               IndexError, TypeError, AttributeError, MemoryError)
# Sizes in a config: any must be a non-negative int; widths are bounded by the stored weights.
_WIDTH_KEYS = frozenset({"input_size", "hidden_size", "output_size", "units", "in_features",
                         "out_features", "vocab_size", "num_embeddings", "dim", "embedding_dim",
                         "proj_size"})
_LAYER_COUNT_KEYS = frozenset({"num_layers"})
_OTHER_SIZE_KEYS = frozenset({"n", "skip", "output_steps", "start_token"})
_SHAPE_KEYS = frozenset({"input_shape"})
_MAX_SIZE = 2**31 - 1             # absolute bound on any size or count in a config
_WIDTH_SLACK = 512                # see _check_sizes
_SHAPE_SLACK = 4096
_MAX_CONFIG_NODES = 50000
_NUMERIC_KINDS = "fiu"


class _Capped:
    """A read-only view of a stream that yields at most ``limit`` bytes and counts them."""

    def __init__(self, fp, limit):
        self.fp, self.limit, self.count = fp, limit, 0

    def read(self, n=-1):
        left = self.limit - self.count
        n = left if n is None or n < 0 else min(n, left)
        data = self.fp.read(n) if n > 0 else b""
        self.count += len(data)
        return data


class _Header:
    __slots__ = ("name", "info", "shape", "fortran", "dtype", "offset", "nbytes", "size")

    def __init__(self, name, info, shape, fortran, dtype, offset):
        self.name, self.info, self.shape, self.fortran, self.dtype = name, info, shape, fortran, dtype
        self.offset = offset
        self.size = math.prod(shape)
        self.nbytes = self.size * dtype.itemsize


class _Reader:
    """Checks and reads one open model archive; every problem is a ModelFileError."""

    def __init__(self, path, z):
        self.path, self.z = path, z

    def fail(self, what):
        return ModelFileError(f"{self.path} is a damaged or invalid fastrnn model file: {what}")

    # ---- archive structure
    def entries(self):
        infos = self.z.infolist()
        seen, dups = set(), set()
        for i in infos:
            (dups if i.filename in seen else seen).add(i.filename)
        if dups:
            raise self.fail(f"duplicate entries {sorted(dups)[:5]}")
        for i in infos:
            if i.flag_bits & 0x1:
                raise self.fail(f"entry {i.filename!r} is encrypted")
            if i.compress_type == zipfile.ZIP_STORED:
                ok = i.file_size == i.compress_size
            elif i.compress_type == zipfile.ZIP_DEFLATED:
                ok = i.file_size <= _MAX_DEFLATE_RATIO * i.compress_size
            else:
                raise self.fail(f"entry {i.filename!r} uses compression method {i.compress_type} "
                                "(only stored or deflated entries are read)")
            if not ok:
                raise self.fail(f"entry {i.filename!r} declares {i.file_size} bytes, impossible "
                                f"from its {i.compress_size} stored bytes")
        return {i.filename: i for i in infos}

    def _stream(self, info, limit, sink):
        """Read an entry, at most ``limit`` bytes, into ``sink`` (or drop them); its CRC is
        checked by zipfile at the end. Returns the byte count."""
        total = 0
        try:
            with self.z.open(info) as fp:
                while True:
                    chunk = fp.read(min(_CHUNK, limit - total + 1))
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > limit:
                        raise self.fail(f"entry {info.filename!r} holds more than the "
                                        f"{limit} bytes it should")
                    if sink is not None:
                        sink(chunk)
        except ModelFileError:
            raise
        except _ZIP_ERRORS as e:
            raise self.fail(f"entry {info.filename!r} cannot be read ({type(e).__name__}: {e})") from None
        return total

    def read_bytes(self, info, limit):
        if info.file_size > limit:
            raise self.fail(f"entry {info.filename!r} is {info.file_size} bytes (at most {limit} expected)")
        parts = []
        n = self._stream(info, info.file_size, parts.append)
        if n != info.file_size:
            raise self.fail(f"entry {info.filename!r} is truncated ({n} of {info.file_size} bytes)")
        return b"".join(parts)

    def verify(self, info):
        """Read an entry through (CRC checked) without keeping it."""
        n = self._stream(info, info.file_size, None)
        if n != info.file_size:
            raise self.fail(f"entry {info.filename!r} is truncated ({n} of {info.file_size} bytes)")

    # ---- .npy entries
    def npy_header(self, name, info):
        """Shape and dtype from the entry's .npy header alone; the entry's declared size must be
        exactly that header plus the data it describes."""
        try:
            with self.z.open(info) as fp:
                cf = _Capped(fp, min(info.file_size, _MAX_NPY_HEADER + 64))
                version = np.lib.format.read_magic(cf)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(cf, max_header_size=_MAX_NPY_HEADER)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(cf, max_header_size=_MAX_NPY_HEADER)
                else:
                    raise self.fail(f"entry {info.filename!r} has .npy format version {version}")
                offset = cf.count
        except ModelFileError:
            raise
        except (SyntaxError,) + _ZIP_ERRORS as e:
            raise self.fail(f"entry {info.filename!r} is not a valid .npy array "
                            f"({type(e).__name__}: {e})") from None
        if not (isinstance(shape, tuple) and len(shape) <= 32
                and all(type(s) is int and 0 <= s <= _MAX_SIZE for s in shape)):
            raise self.fail(f"entry {info.filename!r} has an invalid shape {shape!r}")
        dtype = np.dtype(dtype)
        if dtype.kind not in _NUMERIC_KINDS or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise self.fail(f"entry {info.filename!r} holds {dtype.str} values; model arrays hold "
                            "real numbers (float or integer)")
        h = _Header(name, info, shape, bool(fortran), dtype, offset)
        if info.file_size != h.offset + h.nbytes:
            raise self.fail(f"entry {info.filename!r} is {info.file_size} bytes but its header "
                            f"describes {h.offset + h.nbytes} ({dtype.str} {shape})")
        return h

    def npy_data(self, h):
        """The array of a checked header, reading exactly the bytes it declares."""
        buf = bytearray(h.nbytes)
        view = memoryview(buf)
        pos = [-h.offset]            # the header comes first; skip it

        def sink(chunk):
            p = pos[0]
            if p < 0:
                skip = min(-p, len(chunk))
                chunk, p = chunk[skip:], p + skip
            view[p:p + len(chunk)] = chunk
            pos[0] = p + len(chunk)

        n = self._stream(h.info, h.offset + h.nbytes, sink)
        if n != h.offset + h.nbytes:
            raise self.fail(f"entry {h.info.filename!r} is truncated ({n} of {h.offset + h.nbytes} bytes)")
        view.release()
        if h.size == 0:
            return np.zeros(h.shape, h.dtype)
        a = np.frombuffer(buf, dtype=h.dtype, count=h.size)
        return a.reshape(h.shape, order="F" if h.fortran else "C")


# =============================================================================== checking the meta
def _need(r, cond, what):
    if not cond:
        raise r.fail(what)


def _is_int(v):
    return type(v) is int


def _check_meta(r, meta):
    _need(r, isinstance(meta.get("config"), dict), "'config' must be a JSON object")
    _need(r, isinstance(meta["config"].get("class"), str), "'config' names no model class")
    c = meta.get("compile", "missing")
    _need(r, c is None or isinstance(c, dict), "'compile' must be null or a JSON object")
    if c is not None:
        for k in ("loss", "optimizer", "metrics"):
            _need(r, k in c, f"'compile' has no {k!r}")
        _need(r, isinstance(c["metrics"], list), "'compile.metrics' must be a list")
    st = meta.get("state")
    _need(r, isinstance(st, dict), "'state' must be a JSON object")
    for k in ("epoch", "step"):
        _need(r, _is_int(st.get(k)) and 0 <= st[k] <= 2**63 - 1, f"'state.{k}' must be a non-negative integer")
    _need(r, isinstance(st.get("rng"), dict), "'state.rng' must be a JSON object")
    _need(r, isinstance(st.get("engine_rngs"), list) and all(isinstance(s, dict) for s in st["engine_rngs"]),
          "'state.engine_rngs' must be a list of JSON objects")
    h = st.get("history")
    _need(r, isinstance(h, dict) and all(isinstance(v, list) for v in h.values()),
          "'state.history' must be a JSON object of lists")
    _need(r, isinstance(st.get("history_epochs"), list) and all(_is_int(e) for e in st["history_epochs"]),
          "'state.history_epochs' must be a list of integers")


def _config_sizes(r, cfg):
    """(widths, layer counts, input shapes) named anywhere in the config, type-checked."""
    widths, layer_counts, shapes = [], [], []
    todo, nodes = [("config", cfg)], 0
    while todo:
        where, node = todo.pop()
        nodes += 1
        _need(r, nodes <= _MAX_CONFIG_NODES, f"the config has more than {_MAX_CONFIG_NODES} values")
        if isinstance(node, list):
            todo.extend((f"{where}[{i}]", v) for i, v in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        for k, v in node.items():
            here = f"{where}.{k}"
            if k in _SHAPE_KEYS:
                _need(r, v is None or (isinstance(v, list) and len(v) <= 32 and all(
                    s is None or (_is_int(s) and 0 <= s <= _MAX_SIZE) for s in v)),
                    f"{here} must be a list of sizes (integers) or null, got {str(v)[:80]}")
                if v:
                    shapes.append((here, v))
            elif k in _WIDTH_KEYS or k in _LAYER_COUNT_KEYS or k in _OTHER_SIZE_KEYS:
                _need(r, v is None or (_is_int(v) and 0 <= v <= _MAX_SIZE),
                      f"{here} must be an integer in [0, {_MAX_SIZE}], got {str(v)[:80]}")
                if v is not None:
                    if k in _WIDTH_KEYS:
                        widths.append((here, v))
                    elif k in _LAYER_COUNT_KEYS:
                        layer_counts.append((here, v))
            else:
                todo.append((here, v))
    return widths, layer_counts, shapes


def _check_sizes(r, cfg, weights):
    """The sizes the config asks for must be possible with the stored weights, before anything
    is built from them (a 1 KB file must not make the loader allocate gigabytes or loop forever).

    E = number of stored weight elements, A = number of stored weight arrays. Each layer with
    weights stores, in arrays of its own, at least as many elements as half the sum of its
    widths (input, hidden, output, units, vocabulary, embedding sizes), so in a saved model the
    widths sum to at most 2 E; a never-built layer (e.g. a Dense whose input size is still
    unknown) stores nothing, hence a small slack. Every engine layer and decoder cell stores at
    least one array, so num_layers <= A. The last input_shape entry feeds the first layer's
    weights (bounded likewise, with a slack for weightless models); the other entries (time
    axes) and other counts only get the absolute bound."""
    E = sum(h.size for h in weights.values())
    A = len(weights)
    widths, layer_counts, shapes = _config_sizes(r, cfg)
    for where, v in layer_counts:
        _need(r, v <= A, f"{where} = {v} but the file stores only {A} weight arrays")
    total = sum(v for _, v in widths)
    if total > 2 * E + _WIDTH_SLACK:
        where, v = max(widths, key=lambda t: t[1])
        raise r.fail(f"the config's sizes (largest {where} = {v}, {total} in all) need more weights "
                     f"than the {E} values stored")
    for where, shape in shapes:
        last = shape[-1]
        _need(r, last is None or last <= max(E, _SHAPE_SLACK),
              f"{where} ends in {last} features but the file stores only {E} weight values")


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
    (or is not a readable zip file, or that entry is damaged)."""
    try:
        with open(path, "rb") as f, zipfile.ZipFile(f) as z:
            r = _Reader(os.fspath(path), z)
            infos = r.entries()
            if name not in infos:
                return None
            return r.read_bytes(infos[name], _MAX_DEFLATE_RATIO * max(infos[name].compress_size, 1))
    except (ModelFileError,) + _ZIP_ERRORS:
        return None


# =============================================================================== load
def load(path, compile=True):
    """Rebuild a model saved with ``save``/``model.save``: same predictions, and (when it was
    compiled) the same optimizer state and counters, so training resumes where it stopped.

    Raises ``ModelFileError`` (a ``ValueError``) naming the file and the problem when the file
    is not a fastrnn model file or is damaged or inconsistent in any way; nothing is loaded
    then. The optimizer entries are checked even with ``compile=False``."""
    path = os.fspath(path)
    with open(path, "rb") as f:            # a missing or unreadable file: OSError, as before
        try:
            z = zipfile.ZipFile(f)
        except _ZIP_ERRORS as e:
            raise ModelFileError(f"{path} is not a fastrnn model file (not a readable zip archive: "
                                 f"{e})") from None
        with z:
            return _load(_Reader(path, z), compile)


def _load(r, compile):
    path = r.path
    infos = r.entries()
    if _META not in infos:
        raise ModelFileError(f"{path} is not a fastrnn model file (no {_META})")
    raw = r.read_bytes(infos[_META], _MAX_META_BYTES)
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise r.fail(f"{_META} is not valid JSON ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path} is not a fastrnn model file ({_META} does not name the format)")
    version = meta.get("format_version", 0)
    _need(r, _is_int(version), "'format_version' must be an integer")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path} has format version {version}; this fastrnn reads up to "
                             f"{FORMAT_VERSION} -- upgrade fastrnn")
    _check_meta(r, meta)

    # Every entry: fastrnn.json, weights/<name>.npy, optimizer/<key>.npy or an extra.
    weights, opt_entries = {}, {}
    for name, info in infos.items():
        if name == _META:
            continue
        for prefix, table in ((_WEIGHTS, weights), (_OPTIMIZER, opt_entries)):
            if name.startswith(prefix):
                key = name[len(prefix):-4]
                _need(r, name.endswith(".npy") and key, f"unexpected entry {name!r}")
                table[key] = r.npy_header(name, info)
                break
        else:
            r.verify(info)                  # an extra entry: only its integrity is checked

    cfg, c = meta["config"], meta["compile"]
    _check_sizes(r, cfg, weights)
    try:
        cls = _model_class(cfg["class"])
        model = cls.from_config(cfg)
    except Exception as e:             # TypeError, KeyError, ValueError... of a bad config
        raise r.fail(f"its model config is invalid ({type(e).__name__}: {str(e)[:300]})") from None

    # Names and shapes against the model's own parameters, before any data is read.
    params = model.parameters()
    missing, unexpected = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
    _need(r, not missing, f"weights missing for {missing[:8]}")
    _need(r, not unexpected, f"unexpected weight entries {[_WEIGHTS + k + '.npy' for k in unexpected[:8]]}")
    for k, h in weights.items():
        _need(r, h.shape == params[k].shape,
              f"weight {k!r} has shape {h.shape}, the model's is {params[k].shape}")

    loss = optimizer = metrics = None
    if c is None:
        _need(r, not opt_entries, "optimizer entries in a file of an uncompiled model")
    else:
        try:
            loss, optimizer = get_loss(c["loss"]), get_optimizer(c["optimizer"])
            metrics = check_metrics(c["metrics"])
        except Exception as e:
            raise r.fail(f"its compile config is invalid ({type(e).__name__}: {str(e)[:300]})") from None
        _check_optimizer_entries(r, opt_entries, optimizer, params)

    # Data, each entry capped at the size its header declares.
    w_arrays = {k: r.npy_data(h) for k, h in weights.items()}
    o_arrays = {k: r.npy_data(h) for k, h in opt_entries.items()}
    if "iterations" in o_arrays:
        it = int(o_arrays["iterations"])
        _need(r, 0 <= it <= 2**63 - 1, f"optimizer iterations {it} is negative")
        o_arrays["iterations"] = np.asarray(it, np.int64)
        for k in o_arrays:
            if k != "iterations":   # slots: the parameter's dtype, as the optimizer makes them
                o_arrays[k] = o_arrays[k].astype(params[k.split("/", 1)[1]].dtype)

    st = meta["state"]
    engines = _engine_rngs(model)
    _need(r, len(st["engine_rngs"]) == len(engines),
          f"'state.engine_rngs' has {len(st['engine_rngs'])} states for {len(engines)} engine layers")
    try:
        model.load_state_dict(w_arrays)
        if compile and c is not None:
            model.compile(loss, optimizer, metrics)
            model.optimizer.load_state_dict(o_arrays)
        model.epoch, model.step = st["epoch"], st["step"]
        model.rng.bit_generator.state = st["rng"]
        for e, s in zip(engines, st["engine_rngs"]):
            e._rng.bit_generator.state = s
        model.history.history = {str(k): list(v) for k, v in st["history"].items()}
        model.history.epoch = list(st["history_epochs"])
    except ModelFileError:
        raise
    except Exception as e:
        raise r.fail(f"its saved state cannot be applied ({type(e).__name__}: {str(e)[:300]})") from None
    return model


def _check_optimizer_entries(r, entries, optimizer, params):
    """``iterations`` (an integer scalar) and, per slot of this optimizer, one array per
    parameter of the parameter's shape -- for every parameter or (not used yet) for none."""
    _need(r, "iterations" in entries, "optimizer entry 'iterations' is missing")
    h = entries["iterations"]
    _need(r, h.shape == () and h.dtype.kind in "iu", f"optimizer 'iterations' must be an integer "
          f"scalar, got {h.dtype.str} {h.shape}")
    slots = {}
    for k, h in entries.items():
        if k == "iterations":
            continue
        slot, sep, name = k.partition("/")
        _need(r, sep and slot in optimizer.slots,
              f"unexpected optimizer entry {_OPTIMIZER + k + '.npy'!r} ({type(optimizer).__name__} "
              f"keeps slots {sorted(optimizer.slots)})")
        _need(r, name in params, f"optimizer entry {_OPTIMIZER + k + '.npy'!r} is for no parameter of the model")
        _need(r, h.shape == params[name].shape,
              f"optimizer entry {k!r} has shape {h.shape}, the parameter's is {params[name].shape}")
        slots.setdefault(slot, set()).add(name)
    for slot, names in slots.items():
        missing = sorted(set(params) - names)
        _need(r, not missing, f"optimizer slot {slot!r} is missing for {missing[:8]}")
