"""The argument validators of the whole package, written once.

Every layer of fastrnn (the engine layers, the training layer, lore, the datasets, the command
line) checks its arguments with these, so one kind of mistake gets one kind of message. This
module imports only NumPy and nothing of fastrnn: anything may import it.

Each check returns the value in the form the caller stores (``int``, ``float``, ``np.dtype``,
an array) or raises ``ValueError`` (``TypeError`` for a wrong kind of object) naming the
argument.
"""
import numpy as np

__all__ = ["int_like", "positive_int", "count", "seed", "check_dtype", "real", "in_range", "positive",
           "non_negative", "one_of", "lookup", "as_array", "numeric_array", "check_sequences",
           "check_state_dict", "copy_state_dict"]


# ----------------------------------------------------------------------------- integers
def int_like(value):
    """True for Python and NumPy integers, False for bool (a bool is not a size or a count)."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


# Sizes and counts feed 32-bit BLAS dimensions and C ints; nothing larger is meaningful.
INT_MAX = 2 ** 31 - 1


def _int_at_least(value, name, minimum, phrase):
    if not int_like(value) or value < minimum:
        raise ValueError(f"{name} must be {phrase}, got {value!r}")
    if value > INT_MAX:
        raise ValueError(f"{name} must be at most {INT_MAX} (2**31 - 1), got {value!r}")
    return int(value)


def positive_int(value, name, minimum=1):
    """``value`` as an int if it is an integer >= ``minimum``:
    ``ValueError("{name} must be an integer >= {minimum}, got {value!r}")`` otherwise."""
    return _int_at_least(value, name, minimum, f"an integer >= {minimum}")


def count(value, name):
    """``value`` as an int if it is an integer >= 1:
    ``ValueError("{name} must be a positive integer, got {value!r}")`` otherwise."""
    return _int_at_least(value, name, 1, "a positive integer")


def seed(value, name="seed"):
    """``value`` as an int if it is a non-negative integer, or None:
    ``ValueError("{name} must be a non-negative integer or None, got ...")`` otherwise."""
    if value is None:
        return None
    if not (int_like(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative integer or None, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- floats
_BRACKETS = {"[": (lambda lo, v: lo <= v), "(": (lambda lo, v: lo < v),
             "]": (lambda v, hi: v <= hi), ")": (lambda v, hi: v < hi)}


def real(value, name):
    """``float(value)`` for a real number (Python or NumPy int or float, not a bool or a
    string): ``TypeError("{name} must be a real number, got ...")`` otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int beyond float's range
        return float("inf") if value > 0 else float("-inf")


def in_range(value, name, lo, hi, interval="[)"):
    """``float(value)`` if it lies in the interval, e.g. ``interval="[)"`` for lo <= value < hi
    (NaN never does): ``ValueError("{name} must be in [lo, hi), got {value}")`` otherwise."""
    v = real(value, name)
    left, right = interval
    if not (_BRACKETS[left](lo, v) and _BRACKETS[right](v, hi)):
        raise ValueError(f"{name} must be in {left}{lo}, {hi}{right}, got {value}")
    return v


def positive(value, name, allow_inf=False):
    """``float(value)`` if value > 0 (and finite, unless ``allow_inf``):
    ``ValueError("{name} must be a finite number > 0, got {value}")`` otherwise."""
    v = real(value, name)
    if not v > 0 or (v == np.inf and not allow_inf):
        raise ValueError(f"{name} must be a {'' if allow_inf else 'finite '}number > 0, got {value}")
    return v


def non_negative(value, name, allow_inf=False):
    """``float(value)`` if value >= 0 (and finite, unless ``allow_inf``):
    ``ValueError("{name} must be a finite number >= 0, got {value}")`` otherwise."""
    v = real(value, name)
    if not v >= 0 or (v == np.inf and not allow_inf):
        raise ValueError(f"{name} must be a {'' if allow_inf else 'finite '}number >= 0, got {value}")
    return v


# ----------------------------------------------------------------------------- choices
def one_of(value, name, choices):
    """``value`` if it is one of ``choices``:
    ``ValueError("{name} must be one of {choices}, got {value!r}")`` otherwise."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def lookup(table, key, what, lower=False):
    """``table[key]`` (``key.lower()`` with ``lower``), the one name -> object look-up:
    ``ValueError("unknown {what} {key!r}; choose one of [...]")`` for an unknown name."""
    k = key.lower() if lower and isinstance(key, str) else key
    if not isinstance(k, str) or k not in table:
        raise ValueError(f"unknown {what} {key!r}; choose one of {sorted(table)}")
    return table[k]


# ----------------------------------------------------------------------------- dtypes and arrays
def check_dtype(dtype):
    """``np.dtype(dtype)`` if it is float32 or float64:
    ``TypeError("dtype must be float32 or float64, got {dt}")`` otherwise."""
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def as_array(a, name):
    """``np.asarray(a)``, with NumPy's errors for ragged or odd objects turned into a
    ``TypeError`` naming the argument."""
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.asarray(a)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{name} must be an array or a rectangular nested list of numbers, got "
                        f"{type(a).__name__} ({e})") from None


def numeric_array(a, name, kinds="fiub"):
    """``np.asarray(a)`` if its dtype kind is one of ``kinds`` (float, int, uint, bool by
    default): ``TypeError("{name} must be numeric, got dtype ...")`` otherwise."""
    a = as_array(a, name)
    if a.dtype.kind not in kinds:
        raise TypeError(f"{name} must be numeric, got dtype {a.dtype}")
    return a


def check_sequences(X, name, features, dtype):
    """A numeric (samples, steps, ``features``) array as a C-contiguous array of ``dtype``."""
    X = numeric_array(X, name)
    if X.ndim != 3 or X.shape[2] != features:
        raise ValueError(f"{name} must be (samples, steps, {features}), got shape {X.shape}")
    return np.ascontiguousarray(X, dtype=dtype)


# ----------------------------------------------------------------------------- state dicts
def check_state_dict(params, state_dict):
    """Check ``state_dict`` against the live ``params`` (name -> array) without writing anything:
    KeyError when names are missing or unexpected, TypeError when a value is not a real numeric
    array (strings, complex, objects, bools would be cast with a warning, to NaN, or not at
    all), ValueError when a shape differs. Returns the values to copy in, as arrays, in the
    order of ``params``."""
    if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
        raise TypeError(f"state_dict must be a mapping of parameter name -> array, got "
                        f"{type(state_dict).__name__}")
    missing = sorted(set(params) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(params))
    if missing or unexpected:
        raise KeyError(f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
    staged = {}
    for k, p in params.items():
        v = state_dict[k]
        try:
            v = np.asarray(v)
        except Exception as e:  # ragged lists and the like
            raise TypeError(f"state_dict[{k!r}] must be a numeric array, got {type(v).__name__} ({e})") from None
        if v.dtype.kind not in "fiu":
            raise TypeError(f"state_dict[{k!r}] must be a real numeric array (float or int), got dtype {v.dtype}")
        if v.shape != p.shape:
            raise ValueError(f"state_dict[{k!r}] must have shape {p.shape}, got {v.shape}")
        staged[k] = v
    return staged


def copy_state_dict(params, state_dict):
    """Copy ``state_dict`` into ``params`` in place (cast to each array's dtype), everything
    checked first (``check_state_dict``), so a bad state dict leaves ``params`` untouched."""
    for k, v in check_state_dict(params, state_dict).items():
        params[k][...] = v
