"""Shared machinery of the fuzz suite (tests/test_fuzz.py, tools/fuzz_long.py).

Every property in test_fuzz.py calls a public entry point of fastrnn with inputs that
Hypothesis draws, valid or not, and accepts exactly two kinds of outcome:

* a correct result (checked: shapes, dtypes, finiteness, agreement with the NumPy reference
  or with the same call on a contiguous copy, NaN propagation, ...), or
* an "allowed" error: ``ValueError``, ``TypeError``, ``MemoryError`` or ``fr.ModelFileError``
  whose message names the offending argument.  When every input of a call is valid, no error
  is allowed at all.

Anything else -- another exception type, an allowed type whose message names no argument,
a wrong result, a crash or a hang -- is a *finding*.

Profiles (environment variables):

FASTRNN_FUZZ_PROFILE   "ci" (default: few examples, derandomized, part of the normal pytest
                       run) or "long" (used by tools/fuzz_long.py; seed from pytest's
                       --hypothesis-seed)
FASTRNN_FUZZ_EXAMPLES  examples per property in the long profile (default: 10x CI's)
FASTRNN_FUZZ_RECORD    path of a JSON-lines file: each case appends its outcome (pass,
                       allowed, finding + kind) and findings do NOT fail the test, so
                       Hypothesis keeps generating instead of stopping at the first bug
FASTRNN_FUZZ_CURRENT   path of a file overwritten with the case about to run (so a crash or a
                       hang can be attributed to its case)
FASTRNN_FUZZ_CASE_TIMEOUT  seconds one case may take before faulthandler dumps the stacks and
                       exits the process (a hang is a finding; default 120)

Inputs are wrapped in ``Arg`` objects whose repr is a Python expression that rebuilds them
(``mk``/``lay`` below), so a falsifying example printed by Hypothesis is a reproduction.
"""
import faulthandler
import functools
import json
import math
import os
import re
import resource
import sys
import traceback
import warnings

import numpy as np
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

import fastrnn as fr

# ============================================================================ profiles
PROFILE = os.environ.get("FASTRNN_FUZZ_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    raise ValueError(f"FASTRNN_FUZZ_PROFILE must be 'ci' or 'long', got {PROFILE!r}")
EXAMPLES = int(os.environ.get("FASTRNN_FUZZ_EXAMPLES", "0") or 0)
RECORD = os.environ.get("FASTRNN_FUZZ_RECORD") or None
CURRENT = os.environ.get("FASTRNN_FUZZ_CURRENT") or None
CASE_TIMEOUT = float(os.environ.get("FASTRNN_FUZZ_CASE_TIMEOUT", "120"))

# No explain phase: it re-runs failing examples many times and writes .hypothesis/patches.
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
# CI reports the first finding of each property only (shrinking every distinct one of today's
# findings would take minutes); the long profile records them all (FASTRNN_FUZZ_RECORD).
settings.register_profile("fastrnn-fuzz-ci", deadline=None, derandomize=True, database=None,
                          print_blob=True, report_multiple_bugs=False, phases=_PHASES, suppress_health_check=list(HealthCheck))
# The long profile explores at random: the explicit regression examples (@example) run in CI.
settings.register_profile("fastrnn-fuzz-long", deadline=None, derandomize=False, database=None,
                          print_blob=True, phases=_PHASES[1:], suppress_health_check=list(HealthCheck))


def fuzz_settings(n_ci, n_long=None):
    """The settings of one property: ``n_ci`` examples in CI, more in the long profile."""
    base = settings.get_profile("fastrnn-fuzz-" + PROFILE)
    n = n_ci if PROFILE == "ci" else (EXAMPLES or n_long or 10 * n_ci)
    return settings(base, max_examples=n)


# ============================================================================ outcomes
ModelFileError = getattr(fr, "ModelFileError", ValueError)
ALLOWED = (ValueError, TypeError, MemoryError, ModelFileError)

# check_state_dict documents (and tests/test_engine_api.py relies on) KeyError for missing or
# unexpected state-dict names. Set to False to hold it to the strict rule as well.
STATE_DICT_KEYERROR_ALLOWED = True

_PKG = os.path.dirname(os.path.abspath(fr.__file__))
_HERE = os.path.dirname(os.path.abspath(__file__))


class MessageFinding(AssertionError):
    """An allowed exception type whose message names none of the arguments."""


class RejectedValid(AssertionError):
    """An error raised for inputs that are all valid."""


class WrongErrorType(AssertionError):
    """An allowed exception type, but not the one this call documents (e.g. a plain
    ValueError where a corrupt model file must give fr.ModelFileError)."""


class _Case:
    def __init__(self, test):
        self.test = test
        self.allowed = 0
        self.notes = []


_case = [None]


def _site(exc):
    """Where an exception came from: the deepest frame inside the fastrnn package, else the
    deepest frame (as 'fastrnn/file.py:function')."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    pick = None
    for f in frames:
        if os.path.abspath(f.filename).startswith(_PKG + os.sep):
            pick = f
    if pick is None and frames:
        pick = frames[-1]
    if pick is None:
        return "?"
    fn = os.path.abspath(pick.filename)
    for base in (os.path.dirname(_PKG), _HERE):
        if fn.startswith(base + os.sep):
            fn = os.path.relpath(fn, os.path.dirname(base) if base == _HERE else base)
            break
    else:
        fn = os.path.basename(fn)
    return f"{fn}:{pick.name}"


def _first_line(s, n=160):
    s = str(s).strip().splitlines()[0] if str(s).strip() else ""
    return s[:n]


def _generic(msg):
    """A message with its numbers, quoted values and shapes blanked, to group findings."""
    msg = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", msg)
    msg = re.sub(r"\([^()]*\)", "(…)", msg)
    return re.sub(r"-?\d+(\.\d+)?(e[-+]?\d+)?", "N", msg)


def _generic_error(e):
    if isinstance(e, MemoryError):
        return "Unable to allocate …"
    return _generic(_first_line(e, 80))


def finding_kind(test, exc):
    """One line that groups equivalent findings: the property, what went wrong, where."""
    what = {MessageFinding: "unnamed-message", RejectedValid: "valid-input-rejected",
            WrongErrorType: "wrong-error-type", MemoryBeforeValidation: "memory-before-validation"}
    if type(exc) in what:
        cause = exc.__cause__ or exc
        what = what[type(exc)]
        return f"{test}: {what} {type(cause).__name__} at {_site(cause)}: {_generic_error(cause)}"
    if isinstance(exc, AssertionError):
        tag = _first_line(exc).split(" | ")[0]
        return f"{test}: wrong-result: {tag}"
    return f"{test}: {type(exc).__name__} at {_site(exc)}"


class MemoryBeforeValidation(AssertionError):
    """MemoryError for an input that is invalid anyway (wrong shape or dtype): the library
    copied or allocated before it checked."""


def names_in(names, msg):
    """Whether ``msg`` names one of ``names``: case-insensitive, as a whole word (so "x" does
    not match "matrix")."""
    return any(re.search(r"(?<![A-Za-z0-9_])" + re.escape(n) + r"(?![A-Za-z0-9_])", msg, re.I)
               for n in names)


class allowed:
    """``with allowed("x", "hx", expect=...) as r: call(...)``: an error of an allowed type whose
    message names one of ``names`` (case-insensitively, as a whole word) is swallowed and left
    in ``r.error``.

    expect: True -- every input is valid: any error is a finding; False -- some input is
    invalid: the call must raise an allowed, named error (MemoryError is then a finding too:
    the input should have been refused before allocating); None -- either outcome (e.g. a
    valid but unallocatable size, NaN where the API may refuse it).
    extra: further exception types the API documents for this call (e.g. RuntimeError for a
    call out of order). types: if given, the only acceptable types (others: a finding)."""

    def __init__(self, *names, expect=None, extra=(), types=None, memory_ok=False):
        self.names = names
        self.memory_ok = memory_ok
        self.expect = expect
        self.extra = tuple(extra)
        self.types = types
        self.error = None

    def __enter__(self):
        return self

    def __exit__(self, et, e, tb):
        if e is None:
            return False
        if not isinstance(e, Exception) or isinstance(e, (HypothesisException, AssertionError)):
            return False
        if not isinstance(e, ALLOWED + self.extra):
            return False                                   # a finding: the wrapper files it
        if self.types is not None and not isinstance(e, tuple(self.types) + self.extra):
            raise WrongErrorType(f"{type(e).__name__} where {[t.__name__ for t in self.types]} is "
                                 f"documented: {_first_line(e)}") from e
        if self.expect is True and not isinstance(e, self.extra):
            raise RejectedValid(f"valid inputs raised {type(e).__name__}: {_first_line(e)}") from e
        if isinstance(e, MemoryError):                     # numpy's own; it cannot name anything
            if self.expect is False and not self.memory_ok:
                raise MemoryBeforeValidation(f"MemoryError for an invalid input: {_first_line(e)}") from e
        elif not names_in(self.names, str(e)):
            raise MessageFinding(f"{type(e).__name__} names none of {list(self.names)}: "
                                 f"{_first_line(e)}") from e
        self.error = e
        if _case[0] is not None:
            _case[0].allowed += 1
            _case[0].notes.append(f"{type(e).__name__}: {_first_line(e, 120)}")
        return True


def note(text):
    """Attach a remark to the current case's record (the long profile's statistics)."""
    if _case[0] is not None:
        _case[0].notes.append(str(text)[:200])


def check(cond, tag, detail=""):
    """A result check: ``tag`` (constant text) groups findings, ``detail`` shows the values."""
    if not cond:
        raise AssertionError(f"{tag} | {detail}" if detail else tag)


# ---------------------------------------------------------------------------- the case wrapper
_record_file = [None]


def _record(obj):
    if RECORD is None:
        return
    if _record_file[0] is None:
        _record_file[0] = open(RECORD, "a", buffering=1)
    _record_file[0].write(json.dumps(obj) + "\n")


def _short(v, n=1500):
    try:
        s = repr(v)
    except Exception as e:  # pragma: no cover - repr of a fuzz object failing is itself odd
        s = f"<repr failed: {type(e).__name__}>"
    return s if len(s) <= n else s[:n] + "..."


_MEM_HEADROOM = 1 << 30


def _vm_size():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# Where the per-case watchdog writes its stack dump: pytest's own copy of the real stderr
# (set by the fixture in test_fuzz.py), since the captured fd 2 is lost when the watchdog
# exits the process.
WATCHDOG_FD = [None]


def fuzz_case(fn):
    """Wrap a property body: warnings off, a memory ceiling (so a huge allocation is a
    MemoryError, not the OOM killer), a per-case watchdog, and outcome recording."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        case = _case[0] = _Case(fn.__name__)
        if CURRENT:
            with open(CURRENT, "w") as f:
                f.write(json.dumps({"test": fn.__name__, "example": _short(kwargs, 4000)}))
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        vm = _vm_size()
        if vm is not None:
            lim = vm + _MEM_HEADROOM
            if hard != resource.RLIM_INFINITY:
                lim = min(lim, hard)
            resource.setrlimit(resource.RLIMIT_AS, (lim, hard))
        if WATCHDOG_FD[0] is not None:
            faulthandler.dump_traceback_later(CASE_TIMEOUT, exit=True, file=WATCHDOG_FD[0])
        else:
            faulthandler.dump_traceback_later(CASE_TIMEOUT, exit=True)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                fn(*args, **kwargs)
        except Exception as e:
            if isinstance(e, HypothesisException):
                raise
            kind = finding_kind(fn.__name__, e)
            _record({"test": fn.__name__, "outcome": "finding", "kind": kind,
                     "error": f"{type(e).__name__}: {_first_line(e, 300)}",
                     "example": _short(kwargs)})
            if RECORD is None:
                raise
        else:
            rec = {"test": fn.__name__, "outcome": "allowed" if case.allowed else "pass"}
            if case.notes:
                rec["notes"] = case.notes
            _record(rec)
        finally:
            faulthandler.cancel_dump_traceback_later()
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
            _case[0] = None

    return wrapper


# ============================================================================ reproducible inputs
class Arg:
    """A drawn input: ``value`` (what the API gets), ``recipe`` (an expression rebuilding it,
    shown in falsifying examples), ``valid`` (True: structurally valid for the call; False:
    invalid; None: either outcome is acceptable) and ``finite`` (valid and no NaN/inf)."""

    def __init__(self, value, recipe, valid, finite=None, tag=""):
        self.value, self.recipe, self.valid, self.tag = value, recipe, valid, tag
        self.finite = bool(valid) if finite is None else finite

    def __repr__(self):
        return self.recipe


NONE = Arg(None, "None", True, True)


def A(recipe, valid=True, tag="valid:C"):
    """An Arg from its recipe (for explicit @example cases)."""
    value = eval(recipe, {"np": np, "mk": mk, "lay": lay})
    fin = valid is True and as_array(value) is not None and as_array(value).dtype.kind in "fiub" \
        and bool(np.isfinite(as_array(value).astype(np.float64)).all())
    return Arg(value, recipe, valid, finite=fin, tag=tag)

SPECIALS = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "big": 1e30, "-big": -1e30,
            "tiny": 1e-45, "-0": -0.0}


def mk(shape, dtype="float32", seed=0, scale=1.0, specials=()):
    """A deterministic array: N(0, scale) values from ``seed`` cast to ``dtype``, with
    ``specials`` [(flat index, name in SPECIALS)] written in (float dtypes only)."""
    shape = tuple(shape)
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) if shape else 1
    vals = np.random.default_rng(seed).standard_normal(n) * scale
    if specials and n and dt.kind == "f":
        vals = vals.astype(dt)
        for i, s in specials:
            vals[i % n] = SPECIALS[s]
        return vals.reshape(shape)
    if dt.kind == "f" or dt.kind == "c":
        return vals.astype(dt).reshape(shape)
    if dt.kind in "iu":
        lo, hi = (0, 5) if dt.kind == "u" else (-3, 4)
        return np.clip(np.round(vals), lo, hi).astype(dt).reshape(shape)
    if dt.kind == "b":
        return (vals > 0).reshape(shape)
    if dt.kind == "O":
        out = np.empty(n, dtype=object)
        out[:] = [float(v) for v in vals]
        return out.reshape(shape)
    if dt.kind in "US":
        return np.array([f"{v:.3f}" for v in vals], dtype=dt).reshape(shape)
    if dt.kind in "mM":
        return np.round(vals * 10).astype(np.int64).astype(dt).reshape(shape)
    return np.zeros(shape, dtype=dt)                        # void / structured


def lay(a, how):
    """``a`` (or its data) in another memory layout / container, same values."""
    a = np.asarray(a) if how not in ("list", "tuple") else a
    if how == "C":
        return a
    if how == "F":
        return np.asfortranarray(a)
    if how == "strided":                       # every other element along every axis
        big = np.zeros(tuple(2 * s for s in a.shape), a.dtype)
        big[tuple(slice(None, None, 2) for _ in a.shape)] = a
        return big[tuple(slice(None, None, 2) for _ in a.shape)]
    if how == "neg":                           # negative strides on every axis
        return np.ascontiguousarray(a[tuple(slice(None, None, -1) for _ in a.shape)])[
            tuple(slice(None, None, -1) for _ in a.shape)]
    if how == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    if how == "unaligned":
        buf = np.zeros(a.nbytes + 1, np.uint8)
        b = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
        b[...] = a
        return b
    if how == "swapped":                       # non-native byte order, same values
        return a.astype(a.dtype.newbyteorder())
    if how == "list":
        return np.asarray(a).tolist()
    if how == "tuple":
        return tuple(np.asarray(a).tolist())
    if how == "0stride":                       # the first axis broadcast from one slice
        if a.ndim == 0 or a.shape[0] == 0:
            return a
        return np.broadcast_to(a[:1], a.shape)
    raise ValueError(how)


LAYOUTS = ("C", "F", "strided", "neg", "readonly", "unaligned", "0stride", "list", "swapped")
OTHER_DTYPES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                "float16", "longdouble", "complex64", "complex128", "object", "U8", "S8",
                "datetime64[s]", "timedelta64[s]", "V8")
PY_JUNK = [("None", None), ("1.5", 1.5), ("3", 3), ("True", True), ("'abc'", "abc"),
           ("b'x'", b"x"), ("[]", []), ("[[1.0, 2.0], [3.0]]", [[1.0, 2.0], [3.0]]),
           ("{'a': 1}", {"a": 1}), ("1j", 1j), ("float('nan')", float("nan")),
           ("object()", object()), ("np.float32(0.5)", np.float32(0.5)),
           ("np.array(2.0)", np.array(2.0))]
HUGE = (2 ** 31, 2 ** 33, 2 ** 40)


@st.composite
def array_arg(draw, shape, dtype, *, invalid=True, specials=True, layouts=LAYOUTS,
              zero_ok=False, name="a"):
    """An array argument meant to have ``shape`` and ``dtype``: usually valid (in any layout,
    sometimes with NaN/inf/huge values), otherwise with another dtype, rank, size, a huge
    zero-stride shape, or not an array at all."""
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype).name
    # about one draw in four is invalid, so a call with three or four array arguments still
    # gets all-valid inputs often; Hypothesis shrinks toward branch 0 (valid)
    branch = draw(st.integers(0, 23)) if invalid else 0
    branch = 0 if branch < 18 else branch - 12
    if not invalid:
        layouts = tuple(h for h in layouts if h != "swapped")
    seed = draw(st.integers(0, 2 ** 16))
    if branch == 0:                                          # valid
        sp = []
        if specials and draw(st.integers(0, 3)) == 0:
            sp = draw(st.lists(st.tuples(st.integers(0, 10 ** 6), st.sampled_from(sorted(SPECIALS))),
                               min_size=1, max_size=3))
        scale = draw(st.sampled_from([1.0, 1.0, 1.0, 0.0, 1e-3, 10.0, 1e4])) if specials else 1.0
        how = draw(st.sampled_from(layouts)) if draw(st.booleans()) else "C"
        base = f"mk({shape}, {dtype!r}, seed={seed}" + (f", scale={scale}" if scale != 1.0 else "") + \
               (f", specials={sp}" if sp else "") + ")"
        value = lay(mk(shape, dtype, seed, scale, sp), how)
        recipe = base if how == "C" else f"lay({base}, {how!r})"
        nonfinite = any(SPECIALS[s] != SPECIALS[s] or abs(SPECIALS[s]) == np.inf for _, s in sp)
        valid = None if how == "swapped" else True             # byte-swapped: accept or refuse
        return Arg(value, recipe, valid, finite=bool(valid) and not nonfinite, tag="valid:" + how)
    if branch == 6:                                          # another dtype
        dt = draw(st.sampled_from(OTHER_DTYPES + (("float64",) if dtype == "float32" else ("float32",))))
        how = draw(st.sampled_from(("C", "F", "strided")))
        base = f"mk({shape}, {dt!r}, seed={seed})"
        value = lay(mk(shape, dt, seed), how)
        # a list/array of another float dtype or of ints converts exactly only where documented
        return Arg(value, base if how == "C" else f"lay({base}, {how!r})", False, tag="dtype:" + dt)
    if branch == 7:                                          # another rank
        rank = draw(st.integers(0, 4))
        shp = tuple(draw(st.lists(st.integers(0, 4), min_size=rank, max_size=rank)))
        if shp == shape:
            shp = shp + (1,)
        return Arg(mk(shp, dtype, seed), f"mk({shp}, {dtype!r}, seed={seed})", False, tag="rank")
    if branch == 8 and shape:                                # one axis wrong (0, +-1)
        ax = draw(st.integers(0, len(shape) - 1))
        new = draw(st.sampled_from([0, shape[ax] + 1, max(shape[ax] - 1, 0), 2 * shape[ax] + 3]))
        if new == shape[ax]:
            new = shape[ax] + 1
        shp = shape[:ax] + (new,) + shape[ax + 1:]
        return Arg(mk(shp, dtype, seed), f"mk({shp}, {dtype!r}, seed={seed})",
                   None if zero_ok and new == 0 else False, tag="axis")
    if branch == 9 and shape:                                # huge, as a zero-stride view
        ax = draw(st.integers(0, len(shape) - 1))
        big = draw(st.sampled_from(HUGE))
        shp = shape[:ax] + (big,) + shape[ax + 1:]
        return Arg(np.broadcast_to(np.zeros((), dtype), shp),
                   f"np.broadcast_to(np.zeros((), {dtype!r}), {shp})", False, tag="huge")
    rec, val = draw(st.sampled_from(PY_JUNK))                # not an array at all
    return Arg(val, rec, False, tag="junk")


@st.composite
def int_arg(draw, valid=(1, 6), huge_ok=True, valid_only=False, vmax=None):
    """An integer-like argument: mostly a small valid int drawn from ``valid`` (validity: an
    int >= valid[0], and <= vmax if given), else 0, negatives, huge ints, numpy ints, bools,
    floats, strings, None, arrays."""
    lo, hi = valid
    ok = lambda v: v >= lo and (vmax is None or v <= vmax)    # noqa: E731
    b = 0 if valid_only else draw(st.integers(0, 9))
    if b <= 4:
        v = draw(st.integers(lo, hi))
        return Arg(v, repr(v), True)
    if b == 5:
        v = draw(st.sampled_from([0, -1, -(2 ** 31), lo - 1]))
        return Arg(v, repr(v), ok(v))
    if b == 6 and huge_ok:
        v = draw(st.sampled_from([2 ** 31, 2 ** 63, 2 ** 64, 10 ** 30]))
        return Arg(v, repr(v), None if ok(v) else False)   # valid but unallocatable: MemoryError or a named error
    if b == 7:
        t, v = draw(st.sampled_from([("np.int8", 3), ("np.int64", 2), ("np.uint64", 4),
                                     ("np.int32", -2), ("np.uint8", 0)]))
        val = getattr(np, t[3:])(v)
        return Arg(val, f"{t}({v})", ok(v))
    rec, val = draw(st.sampled_from([("2.0", 2.0), ("1.5", 1.5), ("True", True), ("False", False),
                                     ("'3'", "3"), ("None", None), ("float('nan')", float("nan")),
                                     ("float('inf')", float("inf")), ("np.array(3)", np.array(3)),
                                     ("[3]", [3]), ("1j", 1j)]))
    return Arg(val, rec, False)


@st.composite
def float_arg(draw, lo=None, hi=None, lo_open=False, hi_open=False, valid_only=False):
    """A real-number argument with valid domain [lo, hi] (open ends as given): mostly inside,
    else boundaries, NaN, +-inf, huge, negative, non-numbers."""
    b = 0 if valid_only else draw(st.integers(0, 9))
    def ok(v):
        if not isinstance(v, (int, float, np.floating, np.integer)) or isinstance(v, bool):
            return False
        if v != v or v in (np.inf, -np.inf):
            return False
        if lo is not None and (v < lo or (lo_open and v == lo)):
            return False
        if hi is not None and (v > hi or (hi_open and v == hi)):
            return False
        return True
    if b <= 4:
        a = lo if lo is not None else -10.0
        c = hi if hi is not None else 10.0
        v = draw(st.floats(min_value=float(a), max_value=float(c), allow_nan=False,
                           exclude_min=lo_open, exclude_max=hi_open))
        return Arg(v, repr(v), True)
    v = draw(st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-300, -1e-300, 1e300, -1e300, float("nan"),
                              float("inf"), float("-inf")] + [x for x in (lo, hi) if x is not None]))
    if b <= 7:
        return Arg(v, f"float({repr(v)!r})" if v != v or abs(v) == np.inf else repr(v), ok(v))
    rec, val = draw(st.sampled_from([("None", None), ("'0.5'", "0.5"), ("1j", 1j), ("[0.5]", [0.5]),
                                     ("np.array([0.5, 0.5])", np.array([0.5, 0.5])),
                                     ("np.float32(0.5)", np.float32(0.5)), ("True", True)]))
    if rec == "np.float32(0.5)":
        return Arg(val, rec, ok(val))
    return Arg(val, rec, None if rec == "True" else False)


DTYPE_ARGS = [("np.float32", np.float32, True), ("np.float64", np.float64, True),
              ("'float32'", "float32", True), ("np.dtype('float64')", np.dtype("float64"), True),
              ("np.float16", np.float16, False), ("np.int32", np.int32, False),
              ("np.complex64", np.complex64, False), ("object", object, False),
              ("'garbage'", "garbage", False), ("None", None, None), ("float", float, True),
              ("np.longdouble", np.longdouble, False), ("'>f4'", ">f4", None), ("3", 3, False)]


@st.composite
def dtype_arg(draw, valid_only=False):
    choices = [d for d in DTYPE_ARGS if d[2] is True] if valid_only else DTYPE_ARGS
    rec, v, ok = draw(st.sampled_from(choices))
    return Arg(v, rec, ok)


def fuzz_some(draw, names, maximum=2):
    """Which of a call's arguments get fuzzed values (the others valid ones): up to
    ``maximum`` of ``names``, often none."""
    if not names:
        return set()
    return set(draw(st.lists(st.sampled_from(sorted(names)), max_size=maximum, unique=True)))


# ============================================================================ result checks
def max_rel_err(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.size == 0:
        return 0.0
    fin = np.isfinite(ref) & np.isfinite(got)
    if not fin.any():
        return 0.0
    scale = max(1.0, float(np.abs(ref[fin]).max()))
    return float(np.abs(got[fin] - ref[fin]).max()) / scale


def check_close(got, ref, tol, what, masks=True):
    """Same NaN and inf positions (with ``masks``), finite values within ``tol`` relative to
    max(1, max|ref|). Inputs holding +-inf make the NaN positions implementation-defined
    (sigmoid(-inf) exactly 0 or 1e-39 decides whether 0 * inf = NaN appears): pass
    masks=False for them."""
    got, ref = np.asarray(got), np.asarray(ref)
    check(got.shape == ref.shape, f"{what}: shape differs from the reference", f"{got.shape} vs {ref.shape}")
    if not masks:
        err = max_rel_err(got, ref)
        check(err <= tol, f"{what}: differs from the reference", f"max rel err {err:.3g} > {tol}")
        return
    gn, rn = np.isnan(got), np.isnan(ref)
    check(np.array_equal(gn, rn), f"{what}: NaN positions differ from the reference",
          f"{int(gn.sum())} NaN vs reference {int(rn.sum())}")
    gi, ri = np.isposinf(got) | np.isneginf(got), np.isposinf(ref) | np.isneginf(ref)
    check(np.array_equal(gi, ri), f"{what}: inf positions differ from the reference",
          f"{int(gi.sum())} inf vs reference {int(ri.sum())}")
    err = max_rel_err(got, ref)
    check(err <= tol, f"{what}: differs from the reference", f"max rel err {err:.3g} > {tol}")


def check_same(a, b, what):
    """Bit-for-bit equal (NaN == NaN): the same call on a contiguous copy."""
    a, b = np.asarray(a), np.asarray(b)
    check(a.shape == b.shape and a.dtype == b.dtype, f"{what}: shape/dtype differs from the contiguous-copy call",
          f"{a.shape} {a.dtype} vs {b.shape} {b.dtype}")
    check(np.array_equal(a, b, equal_nan=True), f"{what}: differs from the contiguous-copy call",
          f"max abs diff {np.nanmax(np.abs(a.astype(np.float64) - b)) if a.size else 0}")


def finite_all(a):
    """np.isfinite(a).all() for numeric arrays of sane size; None for huge or non-numeric."""
    a = as_array(a)
    if a is None or a.size >= 2 ** 24 or a.dtype.kind not in "fiub":
        return None
    return bool(np.isfinite(a.astype(np.float64)).all())


def moderate(*vals):
    """All numeric, finite and |v| <= 1e6 (and of sane size): then overflow cannot excuse a
    non-finite result (1e30 is finite in float32, its square is not)."""
    for v in vals:
        a = as_array(v)
        if a is None or a.dtype.kind not in "fiub" or a.size >= 2 ** 24:
            return False
        a = a.astype(np.float64)
        if not (np.isfinite(a).all() and (np.abs(a) <= 1e6).all()):
            return False
    return True


def tame(*vals):
    """Every value NaN or finite with |v| <= 1e6: no overflow, no inf arithmetic, so NaN and
    inf positions must agree exactly with the reference."""
    for v in vals:
        if v is None:
            continue
        a = as_array(v)
        if a is None or a.dtype.kind not in "fiub" or a.size >= 2 ** 24:
            return False
        a = a.astype(np.float64)
        a = a[~np.isnan(a)]
        if not (np.abs(a) <= 1e6).all():
            return False
    return True


def check_finite(a, what):
    a = np.asarray(a)
    check(np.isfinite(a).all(), f"{what}: non-finite output from finite inputs",
          f"{int((~np.isfinite(a)).sum())} of {a.size} non-finite")


def plain(arg, dtype=None):
    """The contiguous (native, C-order) array of an Arg's value, for reference calls."""
    if arg.value is None:
        return None
    a = np.array(arg.value, dtype=dtype, order="C")
    if a.dtype.byteorder not in ("=", "|"):
        a = a.astype(a.dtype.newbyteorder("="))
    return a


# ============================================================================ expected outcomes
class Case:
    """A drawn test case: named fields, shown as a constructor call in falsifying examples."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        return "Case(" + ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items()) + ")"


def as_array(value):
    """np.asarray(value), or None when even that fails (ragged lists, ...)."""
    try:
        return np.asarray(value)
    except Exception:
        return None


def arr_valid(value, shape, dtype=None, kinds="fiu", exact=True):
    """Whether the documented rules accept ``value`` as an array of ``shape`` (None entries:
    any size >= 1): True, False, or None (either outcome is acceptable).

    exact: an ndarray must already have ``dtype`` (the engine's "no silent casts" rule; lists
    and scalars are converted if their kind is in ``kinds``); otherwise any dtype of a kind in
    ``kinds`` is converted."""
    res = True
    if isinstance(value, np.ndarray):
        a = value
        if exact and a.dtype != np.dtype(dtype):
            if a.dtype.kind == "f" and a.dtype.newbyteorder("=") == np.dtype(dtype):
                res = None                                  # byte-swapped: accept or refuse
            else:
                return False
        elif not exact and a.dtype.kind not in kinds:
            return False
    else:
        a = as_array(value)
        if a is None or a.dtype.kind not in kinds:
            return False
    if a.ndim != len(shape):
        return False
    for s, want in zip(a.shape, shape):
        if (want is None and s < 1) or (want is not None and s != want):
            return False
    if a.size >= 2 ** 31:
        return None                                         # valid, but may not fit in memory
    return res


def combine(*vals):
    """Expected outcome of a call from its arguments' validity: False if any is invalid,
    None if any is ambiguous, else True."""
    if any(v is False for v in vals):
        return False
    if any(v is None for v in vals):
        return None
    return True


def lengths_valid(value, T, B):
    if value is None:
        return True
    a = as_array(value)
    if a is None or a.dtype.kind not in "iu" or a.shape != (B,):
        return False
    return bool(B == 0 or (a.min() >= 1 and a.max() <= T))


@st.composite
def lengths_arg(draw, T, B):
    """None, valid lengths (any int dtype or layout), or lengths out of range / of a float,
    bool, object dtype / of a wrong shape."""
    b = draw(st.integers(0, 19))
    if b <= 5:
        return NONE
    vals = draw(st.lists(st.integers(1, max(T, 1)), min_size=B, max_size=B))
    b = 0 if b <= 15 else b - 10
    if b <= 6:
        dt = draw(st.sampled_from(["int64", "int32", "int8", "uint8", "uint64", "int16"]))
        how = draw(st.sampled_from(["C", "C", "list", "strided", "neg", "readonly"]))
        v = lay(np.array(vals, dt), how)
        rec = f"np.array({vals}, {dt!r})"
        return Arg(v, rec if how == "C" else f"lay({rec}, {how!r})", None, tag="lengths")
    if b == 7:
        bad = draw(st.sampled_from([0, -1, T + 1, 2 ** 40, -(2 ** 62)]))
        i = draw(st.integers(0, max(B - 1, 0)))
        vals2 = list(vals)
        if vals2:
            vals2[i] = bad
        return Arg(np.array(vals2, np.int64), f"np.array({vals2}, 'int64')", None, tag="lengths")
    if b == 8:
        dt = draw(st.sampled_from(["float64", "float32", "bool", "object", "U4", "complex64"]))
        v = np.array(vals, dtype=np.float64).astype(dt) if dt != "object" else np.array(vals, dtype=object)
        if dt.startswith("float") and draw(st.booleans()) and B:
            v[0] = np.nan
        return Arg(v, f"np.array({v.tolist()!r}, {dt!r})", None, tag="lengths")
    rec, v = draw(st.sampled_from([("[]", []), ("None", None), (f"{T}", T), (f"[{T}] * {B + 1}", [T] * (B + 1)),
                                   (f"np.full(({B}, 1), {T})", np.full((B, 1), T)), ("'abc'", "abc"),
                                   (f"[{T}.5] * {B}", [T + 0.5] * B)]))
    return Arg(v, rec, None, tag="lengths")
