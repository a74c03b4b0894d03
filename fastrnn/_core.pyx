# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Thin bridge to the C kernels (csrc/fastrnn.h): validate, allocate with NumPy, run nogil.

Every array handed to C is checked here for dtype, C-contiguity and shape, because a wrong
shape reaching C is a buffer overrun, not an exception. Callers (fastrnn.layers) give users
friendlier messages first; these checks are the last line before memory is touched.

Dimensions are read as Py_ssize_t and checked against the kernels' limit before anything is
allocated (_dim, MAX_DIM): the C structs carry them as int, the width BLAS takes.

Each kernel entry point fills one named C struct (fr_*_args, declared in _core.pxd) inside a
job; the C side dispatches on the job's kind and dtype, so one body here serves float32 and
float64. With defer=True an entry point returns the job instead of running it, and run_jobs()
runs a list of them concurrently on the C worker pool (csrc/pool.c) without the GIL. A job
keeps references to every array it points into, so nothing it writes can be freed while it runs.
"""
import operator
import os

import numpy as np
cimport numpy as cnp
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.limits cimport INT_MAX
from libc.stdint cimport INT64_MAX, uint64_t

cnp.import_array()

from ._cells import CELLS

MODES = {name: kind.code for name, kind in CELLS.items()}
RNN_TANH, RNN_RELU, LSTM, GRU = (MODES[k] for k in ("RNN_TANH", "RNN_RELU", "LSTM", "GRU"))


cdef fr_cell_sizes _sizes(int cell) except *:
    """The C table's sizes of a kind, after checking that the kind exists: every entry point
    indexes the table with it."""
    if not 0 <= cell < fr_num_cells():
        raise ValueError(f"cell must be one of {sorted(MODES.values())}, got {cell}")
    return fr_cell_info(cell)


# ---- integer widths ------------------------------------------------------------------------------
# The kernels take every dimension, leading dimension and row count as an int, because BLAS
# (scipy-openblas32, a 32-bit-integer interface) does; products of dimensions are ptrdiff_t in C
# (csrc/fastrnn.h, "Integer widths"). So each entry point reads shapes as Py_ssize_t and refuses,
# before allocating anything, any that a kernel would have to pass to BLAS beyond INT_MAX.

MAX_DIM = INT_MAX  # the largest dimension (and T*B where a call multiplies over all rows)


cdef int _dim(Py_ssize_t v, what) except -1:
    """v (a dimension, leading dimension or row count, >= 0) as a C int, or ValueError naming
    what it is and the limit."""
    if v > INT_MAX:
        raise ValueError(f"{what} is {v}, more than {INT_MAX} (2**31 - 1), the largest dimension "
                         f"fastrnn's 32-bit-integer BLAS (scipy-openblas32) takes")
    if v < 0:
        raise ValueError(f"{what} must be >= 0, got {v}")
    return <int>v


def check_dim(what, Py_ssize_t value):
    """The check every entry point applies to its dimensions: value as an int, or ValueError
    naming `what` and the limit MAX_DIM."""
    return _dim(value, what)


cdef inline Py_ssize_t _gh(int gates, Py_ssize_t H, what) except -1:
    """G*H, checked: the rows of the weights, a BLAS dimension and leading dimension."""
    _dim(H, what)
    if gates * H > INT_MAX:  # the message is built only here: cell_step calls this every step
        _dim(gates * H, f"{what} times {gates} gates (G*H)")
    return gates * H


def gates(int cell):
    return _sizes(cell).gates


def cell_info(int cell):
    """The C cell table's sizes of one kind: dict(gates, aux, states, shared)."""
    cdef fr_cell_sizes n = _sizes(cell)
    return {"gates": n.gates, "aux": n.aux, "states": n.states, "shared": n.shared}


MAX_THREADS = FR_MAX_THREADS  # csrc/pool.h: the most threads set_pool_threads accepts


cdef int _thread_count(object n, str what) except -1:
    """n as a thread count in 1..MAX_THREADS, or TypeError/ValueError (never OverflowError)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {type(n).__name__}")
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"{what} must be in 1..{MAX_THREADS}, got {n}")
    return <int>n


def set_num_threads(n):
    """Number of BLAS threads used inside the kernels' GEMMs (1..MAX_THREADS)."""
    fr_set_num_threads(_thread_count(n, "num_threads"))


def get_num_threads():
    return fr_get_num_threads()


# ---- the plan (csrc/plan.c): every "does this pay" decision -----------------------------------

cdef int _pool_threads = 1
# fastrnn's own pool splits the work, so BLAS runs single-threaded (its idle threads spin); the
# pool's default size follows OPENBLAS_NUM_THREADS, else the number of CPUs.
fr_set_num_threads(1)
_pool_threads = min(MAX_THREADS, max(1, int(os.environ.get("OPENBLAS_NUM_THREADS", 0) or os.cpu_count() or 1)))

cdef inline fr_dtype _dt(object dtype):
    return FR_F64 if np.dtype(dtype).itemsize == 8 else FR_F32


OPT_KINDS = {"sgd": FR_OPT_SGD, "adam": FR_OPT_ADAM, "rmsprop": FR_OPT_RMSPROP}


def optim_step(str kind, list params, list grads, list slots, *, double clipvalue=0,
               double clipnorm=0, double lr, double weight_decay=0, bint decoupled=False,
               double momentum=0, bint nesterov=False, double beta1=0.9, double beta2=0.999,
               double eps=1e-8, double bc1=1, double bc2=1, double rho=0.9, bint centered=False):
    """One optimizer update of every parameter in one C call (csrc/optim.c): params, grads
    (clamped to clipvalue and scaled for clipnorm in place) and slots[k] = (s0, s1, s2) with
    None for the slots ``kind`` does not use. All arrays: C-contiguous, writeable, one float
    dtype, each slot and gradient the size of its parameter. Returns the gradients' global norm
    before the clipnorm scaling (after clamping), or None without clipping."""
    if kind not in OPT_KINDS:
        raise ValueError(f"kind must be one of {sorted(OPT_KINDS)}, got {kind!r}")
    cdef Py_ssize_t n = len(params), k, j
    if len(grads) != n or len(slots) != n:
        raise ValueError(f"params, grads and slots must have one entry per parameter "
                         f"({n}, {len(grads)}, {len(slots)})")
    if n > INT_MAX:
        raise ValueError("too many parameters")
    if not (lr > 0 and clipvalue >= 0 and clipnorm >= 0 and bc1 > 0 and bc2 > 0):
        raise ValueError("lr, bc1, bc2 must be > 0 and clipvalue, clipnorm >= 0")
    if n == 0:
        return None
    dtype = np.asarray(params[0]).dtype
    if dtype != np.float32 and dtype != np.float64:
        raise TypeError(f"parameters must be float32 or float64, got {dtype}")
    buf = np.empty(max(1, n) * sizeof(fr_tensor), np.uint8)
    cdef fr_tensor *t = <fr_tensor *>cnp.PyArray_DATA(buf)
    keep = []                       # the arrays the pointers point into, alive until we return
    for k in range(n):
        p, g, sl = params[k], grads[k], slots[k]
        if len(sl) != 3:
            raise ValueError(f"slots[{int(k)}] must be (s0, s1, s2), got {len(sl)} entries")
        arrs = [p, g] + list(sl)
        for j in range(5):
            arr = arrs[j]
            if arr is None and j >= 2:
                continue
            # the C macros, not .flags, which makes a flags object per array: 16 -> 14 us per
            # call for a 6-tensor model
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype \
                    or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>arr) \
                    or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>arr) \
                    or cnp.PyArray_SIZE(<cnp.ndarray>arr) != cnp.PyArray_SIZE(<cnp.ndarray>arrs[0]):
                what = ("param", "grad", "s0", "s1", "s2")[int(j)]
                raise ValueError(f"{what} of parameter {int(k)} must be a writeable C-contiguous {dtype} "
                                 f"array of {np.asarray(p).size} elements")
        keep.append(arrs)
        t[k].param = cnp.PyArray_DATA(p)
        t[k].grad = cnp.PyArray_DATA(g)
        t[k].s0 = NULL if sl[0] is None else cnp.PyArray_DATA(sl[0])
        t[k].s1 = NULL if sl[1] is None else cnp.PyArray_DATA(sl[1])
        t[k].s2 = NULL if sl[2] is None else cnp.PyArray_DATA(sl[2])
        t[k].n = p.size
    needs = {"sgd": (momentum != 0, False, False), "adam": (True, True, False),
             "rmsprop": (True, momentum != 0, centered)}[kind]
    for k in range(n):
        for j in range(3):
            if needs[j] and slots[k][j] is None:
                raise ValueError(f"{kind} needs slot s{int(j)} of parameter {int(k)}")
    cdef fr_optim_args a
    a.dtype = _dt(dtype)
    a.kind = OPT_KINDS[kind]
    a.ntensors = <int>n
    a.t = t
    a.clipvalue, a.grad_scale, a.lr, a.weight_decay = clipvalue, 1.0, lr, weight_decay
    a.decoupled, a.momentum, a.nesterov = decoupled, momentum, nesterov
    a.beta1, a.beta2, a.eps, a.bc1, a.bc2, a.rho, a.centered = beta1, beta2, eps, bc1, bc2, rho, centered
    cdef double sumsq = 0
    norm = None
    if clipvalue > 0 or clipnorm > 0:
        with nogil:
            sumsq = fr_optim_sumsq(&a)
        if clipnorm > 0:
            norm = sumsq ** 0.5
            if norm > clipnorm:
                a.grad_scale = clipnorm / (norm + 1e-12)
    with nogil:
        fr_optim_step(&a)
    return norm


def flushes_subnormals():
    """Whether the kernels flush subnormal numbers to zero (and restore the caller's mode)."""
    return bool(fr_flushes_subnormals())


_THRESHOLD_KNOBS = ("min_parallel_work", "unit_min_work", "cell_split_work", "fused_max_bytes",
                    "dx_loop_max_bytes", "gemv_max_elems", "wave_round_work", "wave_chunk")
_FORCE_KNOBS = ("fused", "units", "dx_in_loop", "wave")  # test overrides: None, True or False


def plan_knobs(**changes):
    """The plan's thresholds and test overrides (fused, units, dx_in_loop, wave: None for the
    heuristic, True/False to force; the thread-split thresholds min_parallel_work, unit_min_work,
    cell_split_work, wave_round_work; the cache-size thresholds fused_max_bytes,
    dx_loop_max_bytes, gemv_max_elems; wave_chunk: steps per wavefront chunk, 0 to derive;
    tile_rows: rows per float32 micro-kernel tile, 4, 5 or 6, 0 for the default 6).
    With keyword arguments, sets those (all or nothing: every value is checked first) and
    returns the previous values of all, for restoring."""
    # the struct as a dict of its fields (Cython's conversion), and back: a new knob is one field
    raw = <dict>fr_plan_get_knobs()
    old = {name: (None if v < 0 else bool(v)) if name in _FORCE_KNOBS else v for name, v in raw.items()}
    unknown = set(changes) - set(old)
    if unknown:
        raise TypeError(f"unknown plan knobs {sorted(unknown)}; known: {sorted(old)}")
    for name in _THRESHOLD_KNOBS:
        if name in changes:
            v = changes[name]
            try:
                iv = None if isinstance(v, bool) else operator.index(v)
            except TypeError:
                iv = None
            if iv is None or not 0 <= iv <= INT64_MAX:
                raise ValueError(f"plan knob {name} must be an integer in [0, 2**63 - 1], got {v!r}")
            changes[name] = iv
    if "tile_rows" in changes:
        v = changes["tile_rows"]
        if isinstance(v, bool) or not isinstance(v, int) or v not in (0, 4, 5, 6):
            raise ValueError(f"plan knob tile_rows must be 4, 5 or 6 (0 for the default), got {v!r}")
    for name, v in changes.items():  # the overrides: -1 for the heuristic, 0 or 1 to force
        raw[name] = (-1 if v is None else int(bool(v))) if name in _FORCE_KNOBS else v
    cdef fr_plan_knobs k = raw
    fr_plan_set_knobs(&k)
    return old


cdef inline int64_t _work(object v):
    """A work estimate (a Python int of any size) for plan.c, saturated to 0..INT64_MAX."""
    return <int64_t>(0 if v <= 0 else min(v, INT64_MAX))


def plan_parts(work, limit):
    """How many ways to split `work` multiply-adds over the pool's threads, at most `limit`
    (Python ints of any size: the estimates saturate)."""
    return fr_plan_parts(_work(work), _work(limit), _pool_threads)


def plan_row_ranges(int cell, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, int dirs):
    """How many batch-row ranges each direction's time loop is split into."""
    cdef fr_cell_sizes n = _sizes(cell)
    _gh(n.gates, H, "the hidden size H")
    return fr_plan_row_ranges(<fr_cell>cell, _dim(T, "the time steps T"), _dim(B, "the batch size B"),
                              <int>H, dirs, _pool_threads)


def plan_units_mid(int cell, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, int dirs, bint has_lengths,
                   bint variants=False):
    """The unit where the two tasks of a batch-of-one step meet, or None for no split (always
    None with variants: recurrent dropout or zoneout, which only the row loops apply)."""
    cdef fr_cell_sizes n = _sizes(cell)
    _gh(n.gates, H, "the hidden size H")
    cdef int mid = fr_plan_units_mid(<fr_cell>cell, _dim(T, "the time steps T"), _dim(B, "the batch size B"),
                                     <int>H, dirs, has_lengths, variants, _pool_threads)
    return mid if mid else None


def plan_cell_mid(int cell, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H, bint variants=False):
    """The unit where the two halves of a split cell step meet, or None when the step runs on
    one thread (always None with variants: zoneout or layer norm)."""
    cdef fr_cell_sizes n = _sizes(cell)
    _gh(n.gates, H, "the hidden size H")
    cdef int mid = fr_plan_cell_mid(<fr_cell>cell, _dim(B, "the batch size B"), _dim(D, "the input size D"),
                                    <int>H, variants, _pool_threads)
    return mid if mid else None


def plan_wave(int cell, Py_ssize_t T, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H, Py_ssize_t layers,
              int dirs, bint has_lengths, bint variants=False):
    """(chunks, row_ranges) of the multi-layer wavefront: the number of time chunks (0: run
    layer by layer) and the row ranges of each layer's chunk; variants as plan_units_mid's
    (see fastrnn.h)."""
    cdef fr_cell_sizes n = _sizes(cell)
    _gh(n.gates, H, "the hidden size H")
    cdef int ranges = 1
    cdef int chunks = fr_plan_wave_chunks(<fr_cell>cell, _dim(T, "the time steps T"),
                                          _dim(B, "the batch size B"), _dim(D, "the input size D"),
                                          <int>H, _dim(layers, "the number of layers"), dirs,
                                          has_lengths, variants, _pool_threads, &ranges)
    return chunks, ranges


def plan_wave_backward(int cell, Py_ssize_t T, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H, Py_ssize_t layers,
                       Py_ssize_t fill):
    """The number of time chunks of a wavefront's backward (0: layer by layer); fill: the rounds
    before its first layer starts, the sum of the layers' lags (see fastrnn.h)."""
    cdef fr_cell_sizes n = _sizes(cell)
    _gh(n.gates, H, "the hidden size H")
    return fr_plan_wave_backward_chunks(<fr_cell>cell, _dim(T, "the time steps T"), _dim(B, "the batch size B"),
                                        _dim(D, "the input size D"), <int>H, _dim(layers, "the number of layers"),
                                        _dim(fill, "the pipeline's fill"))


def dx_in_loop_pays(int cell, dtype, Py_ssize_t T, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H):
    """Whether recur_backward should compute dx in its loop for B rows per call (one-direction
    layers), rather than backward_params' whole-sequence GEMM."""
    cdef fr_cell_sizes n = _sizes(cell)
    _gh(n.gates, H, "the hidden size H")
    return bool(fr_dx_in_loop_pays(<fr_cell>cell, _dim(T, "the time steps T"), _dim(B, "the batch size B"),
                                   _dim(D, "the input size D"), <int>H, _dt(dtype)))


def fused_pays(int cell, dtype, Py_ssize_t T, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H):
    """Whether recur's fused mode (x given: input projection inside the time loop) should beat
    project() + recur() for B rows per call."""
    cdef fr_cell_sizes n = _sizes(cell)
    _gh(n.gates, H, "the hidden size H")
    return bool(fr_fused_pays(<fr_cell>cell, _dim(T, "the time steps T"), _dim(B, "the batch size B"),
                              _dim(D, "the input size D"), <int>H, _dt(dtype)))


def set_cell_split_work(int64_t work):
    """Multiply-adds per row from which a cell step is split over two threads (tests: 0 to
    always split where possible, a huge value to never split); returns the previous value."""
    return plan_knobs(cell_split_work=work)["cell_split_work"]


# ---- jobs: a validated kernel call, run now or handed to the pool -------------------------------

cdef class Job:
    """A checked kernel call (project/recur/... with defer=True), for run_jobs()."""
    cdef fr_job j
    cdef object refs


cdef object _finish(fr_job *j, tuple refs, bint defer):
    """Run the job now (nogil), or return it as a Job when deferred."""
    cdef Job job
    if defer:
        job = Job.__new__(Job)
        job.j = j[0]
        job.refs = refs
        return job
    with nogil:
        fr_job_run(j)
    return None


def set_pool_threads(n):
    """Threads run_jobs() may use, the caller included, 1..MAX_THREADS (workers are started on
    first use). Safe while other threads run jobs: their dispatch finishes first."""
    global _pool_threads
    _pool_threads = _thread_count(n, "threads")
    fr_pool_prepare()
    with nogil:
        fr_pool_shutdown()


def get_pool_threads():
    return _pool_threads


cdef int _run_pool(int njobs, const fr_job **jobs) except -1:
    # the thread count is read with the GIL held: set_pool_threads may change it meanwhile
    cdef int nthreads = _pool_threads
    fr_pool_prepare()
    with nogil:
        fr_pool_run(nthreads, njobs, jobs)
    return 0


def run_jobs(list jobs):
    """Run Jobs concurrently on up to set_pool_threads() threads; returns when all are done.
    The caller runs the first job, so jobs that cooperate (the unit tasks) can rely on it."""
    cdef Py_ssize_t n = len(jobs), k
    if n == 0:
        return
    _dim(n, "the number of jobs")
    for k in range(n):
        if not isinstance(jobs[k], Job):
            raise TypeError(f"run_jobs takes Jobs (kernel calls with defer=True), got {type(jobs[k]).__name__}")
    cdef const fr_job **list_ = <const fr_job **>PyMem_Malloc(n * sizeof(fr_job *))
    if list_ == NULL:
        raise MemoryError()
    for k in range(n):
        list_[k] = &(<Job>jobs[k]).j
    try:
        _run_pool(<int>n, list_)
    finally:
        PyMem_Free(list_)


# ---- argument checks ----------------------------------------------------------------------------

cdef enum:  # readable positional flags for _ptr/_cols (allow_none, out)
    REQUIRED = 0
    NULLABLE = 1
    OUTPUT = 1


cdef void* _ptr(object a, str name, tuple shape, object dtype, bint allow_none=False,
               bint out=False) except? NULL:
    """Data pointer of `a` after checking dtype (native byte order), contiguity, alignment, shape,
    and for an output (out) that it is writeable; NULL for an allowed None.

    The checks use NumPy's C API (tens of nanoseconds) so that a streaming cell step, which
    passes a dozen buffers, stays cheap; the messages are only built on failure."""
    if a is None:
        if allow_none:
            return NULL
        raise ValueError(f"{name} is required")
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int typenum
    if isinstance(dtype, cnp.dtype):  # what _float_dtype returns: no dtype comparison (~0.1 us)
        typenum = (<cnp.dtype>dtype).type_num
    else:
        typenum = cnp.NPY_FLOAT if dtype == np.float32 else cnp.NPY_DOUBLE
    if cnp.PyArray_TYPE(arr) != typenum:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {a.dtype.name}")
    _layout(arr, name, out)
    cdef int nd = len(shape), i
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(arr)
    if cnp.PyArray_NDIM(arr) != nd:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    for i in range(nd):
        if dims[i] != <cnp.npy_intp>shape[i]:
            raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    return cnp.PyArray_DATA(arr)


cdef int _layout(cnp.ndarray arr, str name, bint out) except -1:
    """What the kernels assume of every buffer beyond dtype and shape: C order, native byte
    order (a byte-swapped float32 has the same type number: its bytes were read as garbage),
    alignment (vectorised loops peel to a 16-byte boundary assuming a 4- or 8-byte aligned start;
    an unaligned start never reaches one), and writeable memory for outputs."""
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{name} must be C-contiguous")
    if not cnp.PyArray_ISNOTSWAPPED(arr):
        raise TypeError(f"{name} must be in native byte order, got dtype {arr.dtype.str}")
    if not cnp.PyArray_ISALIGNED(arr):
        raise ValueError(f"{name} must be aligned to its itemsize (a view at an odd byte offset is not)")
    if out and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{name} is an output and must be writeable")
    return 0


cdef const int* _lengths(object lengths, int T, int B) except? NULL:
    """Data of a valid lengths array, or NULL for None."""
    if lengths is None:
        return NULL
    if not isinstance(lengths, np.ndarray) or lengths.dtype != np.intc:  # intc: native order
        raise TypeError("lengths must be a C-contiguous numpy array of dtype intc")
    _layout(<cnp.ndarray>lengths, "lengths", False)
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},), got {lengths.shape}")
    if B > 0 and (lengths.min() < 1 or lengths.max() > T):
        raise ValueError(f"lengths must lie in 1..{T}")
    return <const int *>cnp.PyArray_DATA(<cnp.ndarray>lengths)


cdef void* _cols(object a, str name, int T, int B, Py_ssize_t col, int width, object dtype, int *ld,
                 bint allow_none=False, bint out=False) except? NULL:
    """Pointer to columns col..col+width-1 of a C-contiguous (T, B, W) array, with *ld = W: a
    strided (T,B,width,W) operand (hprev inside the layer's [x | hprev] buffer, a direction's
    half of a bidirectional output)."""
    if a is None and allow_none:
        return NULL
    if not isinstance(a, np.ndarray) or a.ndim != 3 or a.shape[0] != T or a.shape[1] != B:
        raise ValueError(f"{name} must be a (T={T}, B={B}, W) numpy array")
    cdef Py_ssize_t w = a.shape[2]
    if w > INT_MAX:
        _dim(w, f"{name}'s last dimension (its leading dimension)")
    cdef int W = <int>w
    if col < 0 or col + width > W:
        raise ValueError(f"{name} columns {col}..{col + width} out of range for width {W}")
    cdef char *p = <char*>_ptr(a, name, (T, B, W), dtype, False, out)
    ld[0] = W
    return p + col * <Py_ssize_t>a.itemsize


cdef object _float_dtype(object a, str name):
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>a)
    if typenum != cnp.NPY_FLOAT and typenum != cnp.NPY_DOUBLE:
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
    if not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a):  # outputs are allocated in this dtype
        raise TypeError(f"{name} must be in native byte order, got dtype {a.dtype.str}")
    return a.dtype


cdef inline fr_dtype _dtype_of(object dtype):  # dtype: from _float_dtype
    return FR_F64 if (<cnp.dtype>dtype).type_num == cnp.NPY_DOUBLE else FR_F32


cdef int _check_rows(Py_ssize_t b0, Py_ssize_t b1, int B) except -1:
    if not 0 <= b0 < b1 <= B:
        raise ValueError(f"row range [{b0}, {b1}) must lie within [0, {B}) and be non-empty")
    return 0


cdef int _check_mid(int mid, int part, int H, int T) except -1:
    if not (0 < mid < H and 0 <= part <= 1):
        raise ValueError(f"mid={mid} must split 0 < mid < H={H} and part must be 0 or 1, got {part}")
    if T > FR_UNITS_MAX_STEPS:  # the unit tasks count 2*T completed tasks in an int
        raise ValueError(f"act's time steps T is {T}, more than {FR_UNITS_MAX_STEPS}, the longest "
                         f"sequence the unit-split loops (recur_units) take")
    return 0


cdef int* _sync_ptr(sync) except NULL:
    if not cnp.PyArray_Check(sync) or cnp.PyArray_TYPE(<cnp.ndarray>sync) != cnp.NPY_INT \
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>sync) or cnp.PyArray_SIZE(<cnp.ndarray>sync) != 4:
        raise ValueError("sync must be a C-contiguous intc array of 4 zeros")
    _layout(<cnp.ndarray>sync, "sync", True)  # atomics on it: aligned, native, writeable
    return <int*>cnp.PyArray_DATA(<cnp.ndarray>sync)


cdef inline object _empty(int nd, cnp.npy_intp d0, cnp.npy_intp d1, cnp.npy_intp d2, int typenum):
    cdef cnp.npy_intp dims[3]
    dims[0] = d0
    dims[1] = d1
    dims[2] = d2
    return cnp.PyArray_EMPTY(nd, dims, typenum, 0)


# ---- kernel entry points ------------------------------------------------------------------------

def project(int cell, x, w_ih, act, bint defer=False):
    """act (T,B,G*H) = x (T,B,D) w_ih^T (recur() adds the biases)."""
    dtype = _float_dtype(x, "x")
    if x.ndim != 3 or act is None or act.ndim != 3:
        raise ValueError("x and act must be 3-D")
    cdef fr_cell c = <fr_cell>cell
    cdef int G = _sizes(cell).gates
    # one GEMM over all T*B rows: T*B is its M
    cdef int T = _dim(x.shape[0], "x's time steps T"), B = _dim(x.shape[1], "x's batch size B")
    _dim(<Py_ssize_t>T * B, "x's rows T*B")
    cdef int D = _dim(x.shape[2], "x's features D")
    cdef int GH = _dim(act.shape[2], "act's last dimension G*H"), H = GH // G
    if H < 1 or GH != G * H:
        raise ValueError(f"act must have a last dimension divisible by {G}, got {act.shape}")
    cdef fr_job j
    j.kind = FR_JOB_PROJECT
    cdef fr_project_args *a = &j.u.project
    a.cell, a.dtype, a.T, a.B, a.D, a.H = c, _dtype_of(dtype), T, B, D, H
    a.x = _ptr(x, "x", (T, B, D), dtype)
    a.w_ih = _ptr(w_ih, "w_ih", (G * H, D), dtype)
    a.act = _ptr(act, "act", (T, B, G * H), dtype, REQUIRED, OUTPUT)
    return _finish(&j, (x, w_ih, act), defer)


def recur(int cell, Py_ssize_t b0, Py_ssize_t b1, bint reverse, lengths, h0, c0, w_hh, b_ih, b_hh, y,
          Py_ssize_t y_col, h_n, c_n, act, hprev, aux, double leak=1.0, x=None, w_ih=None,
          Py_ssize_t h_col=0, hmask=None, hdrop=None, Py_ssize_t d_col=0, zh=None, zc=None,
          peep=None, ln=None, lnsave=None, w_hr=None, hcell=None, bint defer=False):
    """Forward time loop for batch rows b0..b1-1; writes only those rows.

    Without x, act holds project()'s output. With x (T,B,D) and w_ih ("fused"), each step
    projects its own rows; act is then written in training and may be None in inference.
    hmask (B,H): recurrent dropout (W_hh reads h * hmask); in training hdrop (T,B,W) receives
    h * hmask in columns d_col..d_col+H. zh, zc (T,B,H): zoneout weights of the previous h and c
    (zc only for LSTM). peep (3H): LSTM peephole weights p_i, p_f, p_o. ln (4GH [+ 2H for
    LSTM]): layer norm gains and biases; in training (hprev given) lnsave (T,B,2GH+4) receives
    what its backward needs. w_hr (P,H): LSTM projection (proj_size): h0, hmask (B,P), w_hh
    (G*H,P), y and hprev P columns, h_n (B,P); in training hcell (T,B,H) receives o*tanh(c).
    See fastrnn.h."""
    dtype = _float_dtype(y, "y")
    if not isinstance(y, np.ndarray) or y.ndim != 3:
        raise ValueError("y must be a 3-D (T, B, W) numpy array")
    if not isinstance(w_hh, np.ndarray) or w_hh.ndim != 2:
        raise ValueError("w_hh must be a 2-D numpy array")
    cdef fr_cell c = <fr_cell>cell
    cdef fr_cell_sizes n = _sizes(cell)
    cdef int T = _dim(y.shape[0], "y's time steps T"), B = _dim(y.shape[1], "y's batch size B")
    cdef int H = _dim(w_hh.shape[1], "w_hh's columns H"), G = n.gates, A = n.aux
    cdef int P = _proj(w_hr, n, zh, peep, ln, "w_hr")
    if P:
        H = _dim(w_hr.shape[1], "w_hr's columns H")
    _gh(G, H, "w_hh's columns H")
    cdef bint two = n.states == 2
    cdef bint fused = x is not None
    _check_rows(b0, b1, B)
    cdef fr_job j
    j.kind = FR_JOB_RECUR
    cdef fr_recur_args *a = &j.u.recur
    a.cell, a.dtype, a.T, a.B, a.H = c, _dtype_of(dtype), T, B, H
    a.b0, a.b1, a.reverse, a.leak = b0, b1, reverse, leak
    a.lengths = _lengths(lengths, T, B)
    a.D, a.x, a.w_ih = 0, NULL, NULL
    if fused:
        if not isinstance(x, np.ndarray) or x.ndim != 3:
            raise ValueError(f"x must be a (T={T}, B={B}, D) numpy array")
        a.D = _dim(x.shape[2], "x's features D")
        a.x = _ptr(x, "x", (T, B, a.D), dtype)
        a.w_ih = _ptr(w_ih, "w_ih", (G * H, a.D), dtype)
    elif w_ih is not None:
        raise ValueError("w_ih is only used together with x (fused mode)")
    cdef int R = P if P else H  # the state h's size
    a.h0 = _ptr(h0, "h0", (B, R), dtype)
    a.c0 = _ptr(c0, "c0", (B, H), dtype) if two else NULL
    a.w_hh = _ptr(w_hh, "w_hh", (G * H, R), dtype)
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be given or both be None")
    a.b_ih = _ptr(b_ih, "b_ih", (G * H,), dtype, True)
    a.b_hh = _ptr(b_hh, "b_hh", (G * H,), dtype, True)
    a.y = _cols(y, "y", T, B, y_col, R, dtype, &a.ldy, REQUIRED, OUTPUT)
    a.h_n = _ptr(h_n, "h_n", (B, R), dtype, REQUIRED, OUTPUT)
    a.c_n = _ptr(c_n, "c_n", (B, H), dtype, REQUIRED, OUTPUT) if two else NULL
    a.act = _ptr(act, "act", (T, B, G * H), dtype, fused and hprev is None, OUTPUT)
    a.ldh = R
    a.hprev = _cols(hprev, "hprev", T, B, h_col, R, dtype, &a.ldh, NULLABLE, OUTPUT)
    a.aux = _ptr(aux, "aux", (T, B, A * H), dtype, REQUIRED, OUTPUT) if (A and hprev is not None) else NULL
    a.hmask = _ptr(hmask, "hmask", (B, R), dtype, NULLABLE)
    a.ldd = R
    a.hdrop = NULL
    if hmask is not None and hprev is not None:
        a.hdrop = _cols(hdrop, "hdrop", T, B, d_col, R, dtype, &a.ldd, REQUIRED, OUTPUT)
    elif hdrop is not None:
        raise ValueError("hdrop is only written in training (hprev given) with hmask")
    a.zh, a.zc = _zone(zh, zc, T, B, H, two, dtype)
    a.peep = _peep(peep, H, two, dtype)
    a.ln = _ln(ln, peep, G, H, two, dtype)
    a.lnsave = NULL
    if ln is not None and hprev is not None:
        a.lnsave = _ptr(lnsave, "lnsave", (T, B, 2 * G * H + 4), dtype, REQUIRED, OUTPUT)
    elif lnsave is not None:
        raise ValueError("lnsave is only written in training (hprev given) with ln")
    cdef Py_ssize_t wsn = fr_forward_ws_size(c, T, b1 - b0, a.D, H, fused)
    ws = _empty(1, wsn + (fr_proj_ws_size(b1 - b0, H, P) if P else 0), 0, 0, (<cnp.dtype>dtype).type_num)
    a.ws = cnp.PyArray_DATA(<cnp.ndarray>ws)
    a.P, a.w_hr, a.hcell, a.pws = P, NULL, NULL, NULL
    if P:
        a.w_hr = _ptr(w_hr, "w_hr", (P, H), dtype)
        a.pws = <char*>a.ws + wsn * <Py_ssize_t>(<cnp.dtype>dtype).itemsize
        if hprev is not None:
            a.hcell = _ptr(hcell, "hcell", (T, B, H), dtype, REQUIRED, OUTPUT)
    if hcell is not None and a.hcell == NULL:
        raise ValueError("hcell is only written in training (hprev given) with w_hr")
    return _finish(&j, (lengths, h0, c0, w_hh, b_ih, b_hh, y, h_n, c_n, act, hprev, aux, x, w_ih, ws,
                        hmask, hdrop, zh, zc, peep, ln, lnsave, w_hr, hcell), defer)


cdef int _proj(w_hr, fr_cell_sizes n, zh, peep, ln, str name) except -1:
    """P of an LSTM projection w_hr (P,H), 0 for None; refuses what the projected loops lack."""
    if w_hr is None:
        return 0
    if n.states != 2:
        raise ValueError(f"{name} (projection) is an LSTM option")
    if not isinstance(w_hr, np.ndarray) or w_hr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D numpy array (P, H)")
    if zh is not None or peep is not None or ln is not None:
        raise ValueError(f"{name} (projection) cannot be combined with zoneout, peepholes or layer norm")
    cdef int P = _dim(w_hr.shape[0], f"{name}'s rows P")
    if P < 1:
        raise ValueError(f"{name} must have at least one row")
    return P


cdef Py_ssize_t _ln_size(int G, int H, bint two):
    return 4 * <Py_ssize_t>G * H + (2 * <Py_ssize_t>H if two else 0)


cdef const void* _ln(ln, peep, int G, int H, bint two, dtype) except? NULL:
    """Layer norm gains and biases (4GH [+ 2H with a cell state]), or NULL for None."""
    if ln is not None and peep is not None:
        raise ValueError("ln (layer norm) and peep (peepholes) cannot be combined")
    return _ptr(ln, "ln", (_ln_size(G, H, two),), dtype, NULLABLE)


cdef const void* _peep(peep, int H, bint two, dtype) except? NULL:
    """LSTM peephole weights (3H), or NULL for None."""
    if peep is not None and not two:
        raise ValueError("peep (peephole weights) needs a cell with a cell state (LSTM)")
    return _ptr(peep, "peep", (3 * H,), dtype, NULLABLE)


cdef void* _dpeep(peep, dpeep, tuple shape, dtype) except? NULL:
    """The peephole gradient's output: required with peep, refused without."""
    if peep is None:
        if dpeep is not None:
            raise ValueError("dpeep is only written with peep")
        return NULL
    return _ptr(dpeep, "dpeep", shape, dtype, REQUIRED, OUTPUT)


cdef (const void*, const void*) _zone(zh, zc, int T, int B, int H, bint two, dtype) except *:
    """Zoneout weights: zh (T,B,H) or None; zc likewise, only for a cell with two states and
    only together with zh."""
    if zc is not None and (not two or zh is None):
        raise ValueError("zc (zoneout of the cell state) needs zh and a cell with two states (LSTM)")
    return _ptr(zh, "zh", (T, B, H), dtype, NULLABLE), _ptr(zc, "zc", (T, B, H), dtype, NULLABLE)


def recur_backward(int cell, Py_ssize_t b0, Py_ssize_t b1, bint reverse, lengths, w_hh, act, hprev,
                   aux, dy, Py_ssize_t dy_col, dh_n, dc_n, dh0, dc0, dgx, dgh, double leak=1.0,
                   dhs=None, dbias=None, Py_ssize_t h_col=0, w_ih=None, dx=None, hmask=None,
                   zh=None, zc=None, peep=None, dpeep=None, ln=None, lnsave=None, dln=None,
                   w_hr=None, bint defer=False):
    """Reverse time loop for batch rows b0..b1-1; writes their rows of dgx/dgh, dh0, dc0, and
    with dbias (G*H + (G-S)*H) these rows' share of the bias gradients (assigned).
    With dx (T,B,D) and w_ih, also these rows of dx (assigned; see dx_in_loop_pays): only for
    a layer with one direction, and backward_params must then be given dx=None.
    hmask, zh, zc, peep: as given to recur(); with peep, dpeep (3H) gets these rows' share of
    the peephole gradient (assigned). With ln (and the forward's lnsave), dln (as ln) gets these
    rows' share of its gradient (assigned) and dgh is (T,B,G*H). w_hr (P,H): the projection as
    given to recur(); dy, hprev, dhs (required) then have P columns, dh_n, dh0, hmask (B,P)."""
    dtype = _float_dtype(act, "act")
    if act.ndim != 3 or not isinstance(w_hh, np.ndarray) or w_hh.ndim != 2:
        raise ValueError("act must be 3-D and w_hh 2-D")
    cdef fr_cell c = <fr_cell>cell
    cdef fr_cell_sizes n = _sizes(cell)
    cdef int T = _dim(act.shape[0], "act's time steps T"), B = _dim(act.shape[1], "act's batch size B")
    cdef int H = _dim(w_hh.shape[1], "w_hh's columns H"), G = n.gates, A = n.aux
    cdef int P = _proj(w_hr, n, zh, peep, ln, "w_hr")
    if P:
        H = _dim(w_hr.shape[1], "w_hr's columns H")
    cdef int R = P if P else H  # the state h's size
    _gh(G, H, "w_hh's columns H")
    cdef int RH = (n.gates - n.shared) * H
    cdef int RD = G * H if ln is not None else RH  # dgh's columns
    cdef bint two = n.states == 2
    _check_rows(b0, b1, B)
    cdef fr_job j
    j.kind = FR_JOB_RECUR_BACKWARD
    cdef fr_recur_backward_args *a = &j.u.recur_backward
    a.cell, a.dtype, a.T, a.B, a.H = c, _dtype_of(dtype), T, B, H
    a.b0, a.b1, a.reverse, a.leak = b0, b1, reverse, leak
    a.lengths = _lengths(lengths, T, B)
    a.ldy = 0
    a.dy = _cols(dy, "dy", T, B, dy_col, R, dtype, &a.ldy, True)
    a.w_hh = _ptr(w_hh, "w_hh", (G * H, R), dtype)
    a.act = _ptr(act, "act", (T, B, G * H), dtype)
    a.ldh = R
    a.hprev = _cols(hprev, "hprev", T, B, h_col, R, dtype, &a.ldh)
    a.aux = _ptr(aux, "aux", (T, B, A * H), dtype) if A else NULL
    a.dh_n = _ptr(dh_n, "dh_n", (B, R), dtype, True)
    a.dc_n = _ptr(dc_n, "dc_n", (B, H), dtype, True) if two else NULL
    a.dh0 = _ptr(dh0, "dh0", (B, R), dtype, REQUIRED, OUTPUT)
    a.dc0 = _ptr(dc0, "dc0", (B, H), dtype, REQUIRED, OUTPUT) if two else NULL
    a.dgx = _ptr(dgx, "dgx", (T, B, G * H), dtype, REQUIRED, OUTPUT)
    a.dgh = _ptr(dgh, "dgh", (T, B, RD), dtype, REQUIRED, OUTPUT) if RD else NULL
    a.dhs = _ptr(dhs, "dhs", (T, B, R), dtype, not P, OUTPUT)
    a.dbias = _ptr(dbias, "dbias", (<Py_ssize_t>G * H + RH,), dtype, NULLABLE, OUTPUT)
    a.D, a.w_ih, a.dx = 0, NULL, NULL
    if dx is not None:
        if not isinstance(w_ih, np.ndarray) or w_ih.ndim != 2:
            raise ValueError("w_ih must be a 2-D numpy array (G*H, D) when dx is given")
        a.D = _dim(w_ih.shape[1], "w_ih's columns D")
        a.w_ih = _ptr(w_ih, "w_ih", (G * H, a.D), dtype)
        a.dx = _ptr(dx, "dx", (T, B, a.D), dtype, REQUIRED, OUTPUT)
    elif w_ih is not None:
        raise ValueError("w_ih is only used together with dx")
    a.hmask = _ptr(hmask, "hmask", (B, R), dtype, NULLABLE)
    a.zh, a.zc = _zone(zh, zc, T, B, H, two, dtype)
    a.peep = _peep(peep, H, two, dtype)
    a.dpeep = _dpeep(peep, dpeep, (3 * H,), dtype)
    a.ln = _ln(ln, peep, G, H, two, dtype)
    a.lnsave, a.dln = NULL, NULL
    if ln is not None:
        a.lnsave = _ptr(lnsave, "lnsave", (T, B, 2 * G * H + 4), dtype)
        a.dln = _ptr(dln, "dln", (_ln_size(G, H, two),), dtype, REQUIRED, OUTPUT)
    elif lnsave is not None or dln is not None:
        raise ValueError("lnsave and dln are only used with ln")
    cdef Py_ssize_t wsn = fr_backward_ws_size(c, T, b1 - b0, a.D, H)
    ws = _empty(1, wsn + (fr_proj_ws_size(b1 - b0, H, P) if P else 0), 0, 0, (<cnp.dtype>dtype).type_num)
    a.ws = cnp.PyArray_DATA(<cnp.ndarray>ws)
    a.P, a.w_hr, a.pws = P, NULL, NULL
    if P:
        a.w_hr = _ptr(w_hr, "w_hr", (P, H), dtype)
        a.pws = <char*>a.ws + wsn * <Py_ssize_t>(<cnp.dtype>dtype).itemsize
    return _finish(&j, (lengths, w_hh, act, hprev, aux, dy, dh_n, dc_n, dh0, dc0, dgx, dgh, dhs,
                        dbias, ws, w_ih, dx, hmask, zh, zc, peep, dpeep, ln, lnsave, dln, w_hr), defer)


def backward_params(int cell, Py_ssize_t g0, Py_ssize_t g1, Py_ssize_t r0, Py_ssize_t r1, x, w_ih,
                    hprev, dgx, dgh, dx, bint accumulate_dx, dw_ih, dw_hh, db_ih, db_hh,
                    Py_ssize_t h_col=0, dwc=None, lengths=None, bint ln=False, bint proj=False,
                    dhs=None, hcell=None, dw_hr=None, bint defer=False):
    """Whole-sequence GEMMs after recur_backward(): rows g0..g1 of the parameter grads +=,
    rows r0..r1 (of T*B) of dx assigned/accumulated.

    x (T,B,W) holds the input in columns 0..D-1 (D = w_ih's columns) and hprev (T,B,W') the
    states in columns h_col..h_col+H-1. Passing the layer's [x | hprev] buffer as both, with
    h_col = D, and dwc (G*H, D+H) scratch lets one GEMM produce both weight gradients.
    With lengths (as given to the forward), dx is zero at padded positions whatever W_ih holds.
    ln=True: a layer-normalised layer's dgh (T,B,G*H) from recur_backward(ln=...); the bias
    gradients then come from recur_backward's dbias only (db_ih, db_hh must be None).
    proj=True: an LSTM projection's layer: hprev and dw_hh (and dwc) have P = dw_hh's columns,
    the cell's H is dgx's columns / G; with dw_hr (P,H), dhs (T,B,P) from recur_backward and
    hcell (T,B,H) from recur, its rows g0*P/(G*H)..g1*P/(G*H) += dhs^T hcell."""
    dtype = _float_dtype(x, "x")
    if x.ndim != 3 or not isinstance(w_ih, np.ndarray) or w_ih.ndim != 2 \
            or not isinstance(dw_hh, np.ndarray) or dw_hh.ndim != 2:
        raise ValueError("x must be 3-D, w_ih and dw_hh 2-D")
    cdef fr_cell c = <fr_cell>cell
    cdef fr_cell_sizes n = _sizes(cell)
    # the weight-gradient GEMMs run over all T*B rows: T*B is their inner dimension
    cdef int T = _dim(x.shape[0], "x's time steps T"), B = _dim(x.shape[1], "x's batch size B")
    _dim(<Py_ssize_t>T * B, "x's rows T*B")
    cdef int D = _dim(w_ih.shape[1], "w_ih's columns D"), H = _dim(dw_hh.shape[1], "dw_hh's columns H")
    cdef int G = n.gates
    cdef int R = H  # hprev's and dw_hh's columns
    if proj:
        if n.states != 2 or ln or not isinstance(dgx, np.ndarray) or dgx.ndim != 3:
            raise ValueError("proj needs an LSTM's dgx (T,B,4H) and no ln")
        H = _dim(dgx.shape[2] // G, "dgx's columns / G")
    _gh(G, H, "dw_hh's columns H")
    cdef int RH = G * H if ln else (n.gates - n.shared) * H
    if ln and (db_ih is not None or db_hh is not None):
        raise ValueError("with ln the bias gradients come from recur_backward's dbias: db_ih and db_hh must be None")
    if not (0 <= g0 <= g1 <= G * H and 0 <= r0 <= r1 <= <Py_ssize_t>T * B):
        raise ValueError(f"ranges [{g0}, {g1}) and [{r0}, {r1}) must lie within [0, {G * H}) and [0, {T * B})")
    cdef fr_job j
    j.kind = FR_JOB_PARAMS
    cdef fr_params_args *a = &j.u.params
    a.cell, a.dtype, a.T, a.B, a.D, a.H = c, _dtype_of(dtype), T, B, D, H
    a.g0, a.g1, a.r0, a.r1, a.accumulate_dx = <int>g0, <int>g1, r0, r1, accumulate_dx
    a.lengths = _lengths(lengths, T, B)
    a.x = _cols(x, "x", T, B, 0, D, dtype, &a.ldx)
    a.w_ih = _ptr(w_ih, "w_ih", (G * H, D), dtype)
    a.hprev = _cols(hprev, "hprev", T, B, h_col, R, dtype, &a.ldh)
    a.dgx = _ptr(dgx, "dgx", (T, B, G * H), dtype)
    a.dgh = _ptr(dgh, "dgh", (T, B, RH), dtype) if RH else NULL
    a.dx = _ptr(dx, "dx", (T, B, D), dtype, NULLABLE, OUTPUT)
    a.dw_ih = _ptr(dw_ih, "dw_ih", (G * H, D), dtype, REQUIRED, OUTPUT)
    a.dw_hh = _ptr(dw_hh, "dw_hh", (G * H, R), dtype, REQUIRED, OUTPUT)
    a.db_ih = _ptr(db_ih, "db_ih", (G * H,), dtype, NULLABLE, OUTPUT)
    a.db_hh = _ptr(db_hh, "db_hh", (G * H,), dtype, NULLABLE, OUTPUT)
    a.ws = _ptr(dwc, "dwc", (G * H, <Py_ssize_t>D + R), dtype, NULLABLE, OUTPUT)
    a.ln = ln
    a.P = R if proj else 0
    a.dhs, a.hcell, a.dw_hr = NULL, NULL, NULL
    if proj and dw_hr is not None:
        a.dw_hr = _ptr(dw_hr, "dw_hr", (R, H), dtype, REQUIRED, OUTPUT)
        a.dhs = _ptr(dhs, "dhs", (T, B, R), dtype)
        a.hcell = _ptr(hcell, "hcell", (T, B, H), dtype)
    elif dw_hr is not None or dhs is not None or hcell is not None:
        raise ValueError("dw_hr, dhs and hcell are only used with proj")
    return _finish(&j, (x, w_ih, hprev, dgx, dgh, dx, dw_ih, dw_hh, db_ih, db_hh, dwc, lengths, dhs, hcell,
                        dw_hr), defer)


def forward(int cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths=None, bint reverse=False,
            y=None, int y_col=0, bint train=True, double leak=1.0):
    """Run one layer in one direction over x (T,B,D): project() then recur() over all rows.

    y: optional (T,B,W) output shared with the other direction; this direction writes columns
    y_col..y_col+H. Returns (y, h_n, c_n, saved); saved = (act, hprev, aux) in training, None
    in inference; c_n is None unless the cell has two states (LSTM).
    """
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        raise ValueError("x must be a 3-D numpy array (T, B, D)")
    if not isinstance(w_hh, np.ndarray) or w_hh.ndim != 2:
        raise ValueError("w_hh must be a 2-D numpy array (G*H, H)")
    dtype = _float_dtype(x, "x")
    cdef fr_cell_sizes n = _sizes(cell)
    # checked before anything is allocated: project() multiplies over all T*B rows
    cdef int T = _dim(x.shape[0], "x's time steps T"), B = _dim(x.shape[1], "x's batch size B")
    _dim(<Py_ssize_t>T * B, "x's rows T*B")
    _dim(x.shape[2], "x's features D")
    cdef int H = _dim(w_hh.shape[1], "w_hh's columns H")
    _gh(n.gates, H, "w_hh's columns H")
    if T < 1 or B < 1 or x.shape[2] < 1 or H < 1:
        raise ValueError(f"all dimensions must be >= 1, got x {x.shape}, H={H}")
    if y is None:
        y = np.empty((T, B, H), dtype=dtype)
    h_n = np.empty((B, H), dtype=dtype)
    c_n = np.empty((B, H), dtype=dtype) if n.states == 2 else None
    act = np.empty((T, B, n.gates * H), dtype=dtype)
    hprev = np.empty((T, B, H), dtype=dtype) if train else None
    aux = np.empty((T, B, n.aux * H), dtype=dtype) if (train and n.aux) else None
    project(cell, x, w_ih, act)
    recur(cell, 0, B, reverse, lengths, h0, c0, w_hh, b_ih, b_hh, y, y_col, h_n, c_n, act, hprev, aux, leak)
    return y, h_n, c_n, ((act, hprev, aux) if train else None)


def backward(int cell, x, w_ih, w_hh, saved, lengths=None, bint reverse=False,
             dy=None, int dy_col=0, dh_n=None, dc_n=None, dx=None, bint accumulate_dx=False,
             dw_ih=None, dw_hh=None, db_ih=None, db_hh=None, double leak=1.0, peep=None, dpeep=None,
             zh=None, zc=None, ln=None, lnsave=None, dln=None):
    """BPTT of one layer in one direction, from `saved` of a training forward(): recur_backward()
    then backward_params() over everything.

    dx (T,B,D) is written (assigned, or accumulated with accumulate_dx) if given; parameter
    gradients accumulate into dw_ih, dw_hh, db_ih, db_hh. Returns (dh0, dc0); dc0 None unless
    the cell has two states (LSTM). With peep (LSTM peepholes), dpeep (3H) is assigned their
    gradient. zh, zc (T,B,H): the zoneout weights the forward used, or None. With ln (the layer
    norm gains and biases) and the forward's lnsave, dln (as ln) is assigned their gradient.
    """
    if saved is None:
        raise ValueError("saved is None: backward needs a training-mode forward")
    act, hprev, aux = saved
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        raise ValueError("x must be a 3-D numpy array (T, B, D)")
    dtype = _float_dtype(x, "x")
    cdef fr_cell_sizes n = _sizes(cell)
    cdef int T = _dim(x.shape[0], "x's time steps T"), B = _dim(x.shape[1], "x's batch size B")
    _dim(<Py_ssize_t>T * B, "x's rows T*B")
    cdef int H = _dim(hprev.shape[2], "hprev's last dimension H") if isinstance(hprev, np.ndarray) else 0
    cdef int GH = _gh(n.gates, H, "hprev's last dimension H"), RH = (n.gates - n.shared) * H
    dh0 = np.empty((B, H), dtype=dtype)
    dc0 = np.empty((B, H), dtype=dtype) if n.states == 2 else None
    dgx = np.empty((T, B, GH), dtype=dtype)
    # with layer norm every block has its own recurrent-side gradient, and the bias gradients
    # come from the reverse loop (the biases sit after the normalisation)
    dgh = np.empty((T, B, GH if ln is not None else RH), dtype=dtype) if (RH or ln is not None) else None
    dbias = None
    if ln is not None and (db_ih is not None or db_hh is not None):
        _check_dbias(db_ih, db_hh, GH, dtype)
        dbias = np.empty(GH + RH, dtype=dtype)
    recur_backward(cell, 0, B, reverse, lengths, w_hh, act, hprev, aux, dy, dy_col, dh_n, dc_n,
                   dh0, dc0, dgx, dgh, leak, dbias=dbias, peep=peep, dpeep=dpeep, zh=zh, zc=zc,
                   ln=ln, lnsave=lnsave, dln=dln)
    backward_params(cell, 0, GH, 0, <Py_ssize_t>T * B, x, w_ih, hprev, dgx, dgh, dx, accumulate_dx,
                    dw_ih, dw_hh, None if ln is not None else db_ih, None if ln is not None else db_hh,
                    lengths=lengths, ln=ln is not None)
    if dbias is not None:
        add_dbias(dbias, db_ih, db_hh)
    return dh0, dc0


def add_dbias(dbias, db_ih, db_hh):
    """Adds the reverse loop's bias shares dbias (G*H + R: the dgx sums, then the dgh sums of
    the last R/H blocks, see fastrnn.h) to the bias gradients db_ih, db_hh (G*H each): b_ih
    takes the dgx sums, b_hh those of its first blocks too (where W_hh h adds to the same
    pre-activation) and the dgh sums in the others (GRU's n, inside r*(.))."""
    GH = db_ih.shape[0]
    SH = 2 * GH - dbias.shape[0]  # blocks whose b_hh gradient equals b_ih's
    db_ih += dbias[:GH]
    db_hh[:SH] += dbias[:SH]
    db_hh[SH:] += dbias[GH:]


cdef int _check_dbias(db_ih, db_hh, int GH, dtype) except -1:
    """The bias gradients a layer-normalised backward adds its dbias to: checked before any
    is changed."""
    _ptr(db_ih, "db_ih", (GH,), dtype, REQUIRED, OUTPUT)
    _ptr(db_hh, "db_hh", (GH,), dtype, REQUIRED, OUTPUT)
    return 0


def bernoulli(out, double p, double scale, uint64_t seed):
    """Fill out (float32 or float64, C-contiguous) with scale with probability p, else 0;
    element i is a hash of (seed, i), so a seed gives one mask whatever the threads."""
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"p must be in [0, 1], got {p}")
    dtype = _float_dtype(out, "out")
    cdef void *o = _ptr(out, "out", tuple(out.shape), dtype, REQUIRED, OUTPUT)
    cdef ptrdiff_t n = out.size
    cdef fr_dtype dt = _dtype_of(dtype)
    with nogil:
        fr_bernoulli(dt, o, n, seed, p, scale)
    return out


def units_shared_size(int cell, dtype, Py_ssize_t T, Py_ssize_t H, int mid, bint backward):
    """Elements of the `shared` buffer of recur_units / recur_backward_units."""
    cdef fr_cell_sizes n = _sizes(cell)
    _gh(n.gates, H, "the hidden size H")
    return fr_units_shared_size(<fr_cell>cell, _dt(dtype), _dim(T, "the time steps T"), <int>H, mid, backward)


def recur_units(int cell, int mid, int part, bint reverse, h0, c0, w_hh, b_ih, b_hh, y,
                Py_ssize_t y_col, h_n, c_n, act, hprev, aux, double leak, sync, shared, Py_ssize_t h_col=0,
                peep=None, bint defer=False):
    """Forward time loop of a batch of one as two unit tasks per step, claimed by two concurrent
    calls (part 0 and 1; fastrnn.h, fr_recur_units); act holds project()'s output."""
    dtype = _float_dtype(act, "act")
    if act.ndim != 3 or act.shape[1] != 1 or not isinstance(w_hh, np.ndarray) or w_hh.ndim != 2:
        raise ValueError("act must be (T, 1, G*H) and w_hh 2-D")
    cdef fr_cell c = <fr_cell>cell
    cdef fr_cell_sizes n = _sizes(cell)
    cdef int T = _dim(act.shape[0], "act's time steps T"), H = _dim(w_hh.shape[1], "w_hh's columns H")
    cdef int G = n.gates, A = n.aux
    _gh(G, H, "w_hh's columns H")
    cdef bint two = n.states == 2
    _check_mid(mid, part, H, T)
    cdef fr_job j
    j.kind = FR_JOB_UNITS
    cdef fr_units_args *a = &j.u.units
    a.cell, a.dtype, a.T, a.H, a.mid, a.part = c, _dtype_of(dtype), T, H, mid, part
    a.reverse, a.leak = reverse, leak
    a.y = _cols(y, "y", T, 1, y_col, H, dtype, &a.ldy, REQUIRED, OUTPUT)
    a.h0 = _ptr(h0, "h0", (1, H), dtype)
    a.c0 = _ptr(c0, "c0", (1, H), dtype) if two else NULL
    a.w_hh = _ptr(w_hh, "w_hh", (G * H, H), dtype)
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be given or both be None")
    a.b_ih = _ptr(b_ih, "b_ih", (G * H,), dtype, True)
    a.b_hh = _ptr(b_hh, "b_hh", (G * H,), dtype, True)
    a.h_n = _ptr(h_n, "h_n", (1, H), dtype, REQUIRED, OUTPUT)
    a.c_n = _ptr(c_n, "c_n", (1, H), dtype, REQUIRED, OUTPUT) if two else NULL
    a.act = _ptr(act, "act", (T, 1, G * H), dtype, REQUIRED, OUTPUT)
    a.ldh = H
    a.hprev = _cols(hprev, "hprev", T, 1, h_col, H, dtype, &a.ldh, NULLABLE, OUTPUT)
    a.aux = _ptr(aux, "aux", (T, 1, A * H), dtype, REQUIRED, OUTPUT) if (A and hprev is not None) else NULL
    a.peep = _peep(peep, H, two, dtype)
    a.shared = _ptr(shared, "shared", (units_shared_size(cell, dtype, T, H, mid, False),), dtype, REQUIRED, OUTPUT)
    a.sync = _sync_ptr(sync)
    return _finish(&j, (h0, c0, w_hh, b_ih, b_hh, y, h_n, c_n, act, hprev, aux, sync, shared, peep), defer)


def recur_backward_units(int cell, int mid, int part, bint reverse, w_hh, act, hprev, aux, dy,
                         Py_ssize_t dy_col, dh_n, dc_n, dh0, dc0, dgx, dgh, double leak, dhs, dbias,
                         sync, shared, Py_ssize_t h_col=0, peep=None, dpeep=None, bint defer=False):
    """Reverse time loop of a batch of one as two unit tasks per step (fastrnn.h,
    fr_recur_backward_units); dbias (2, G*H + (G-S)*H) and, with peep, dpeep (2, 3H) get each
    task's share."""
    dtype = _float_dtype(act, "act")
    if act.ndim != 3 or act.shape[1] != 1 or not isinstance(w_hh, np.ndarray) or w_hh.ndim != 2:
        raise ValueError("act must be (T, 1, G*H) and w_hh 2-D")
    cdef fr_cell c = <fr_cell>cell
    cdef fr_cell_sizes n = _sizes(cell)
    cdef int T = _dim(act.shape[0], "act's time steps T"), H = _dim(w_hh.shape[1], "w_hh's columns H")
    cdef int G = n.gates, A = n.aux
    _gh(G, H, "w_hh's columns H")
    cdef int RH = (n.gates - n.shared) * H
    cdef bint two = n.states == 2
    _check_mid(mid, part, H, T)
    cdef fr_job j
    j.kind = FR_JOB_UNITS_BACKWARD
    cdef fr_units_backward_args *a = &j.u.units_backward
    a.cell, a.dtype, a.T, a.H, a.mid, a.part = c, _dtype_of(dtype), T, H, mid, part
    a.reverse, a.leak = reverse, leak
    a.ldy = 0
    a.dy = _cols(dy, "dy", T, 1, dy_col, H, dtype, &a.ldy, True)
    a.w_hh = _ptr(w_hh, "w_hh", (G * H, H), dtype)
    a.act = _ptr(act, "act", (T, 1, G * H), dtype)
    a.ldh = H
    a.hprev = _cols(hprev, "hprev", T, 1, h_col, H, dtype, &a.ldh)
    a.aux = _ptr(aux, "aux", (T, 1, A * H), dtype) if A else NULL
    a.dh_n = _ptr(dh_n, "dh_n", (1, H), dtype, True)
    a.dc_n = _ptr(dc_n, "dc_n", (1, H), dtype, True) if two else NULL
    a.dh0 = _ptr(dh0, "dh0", (1, H), dtype, REQUIRED, OUTPUT)
    a.dc0 = _ptr(dc0, "dc0", (1, H), dtype, REQUIRED, OUTPUT) if two else NULL
    a.dgx = _ptr(dgx, "dgx", (T, 1, G * H), dtype, REQUIRED, OUTPUT)
    a.dgh = _ptr(dgh, "dgh", (T, 1, RH), dtype, REQUIRED, OUTPUT) if RH else NULL
    a.dhs = _ptr(dhs, "dhs", (T, 1, H), dtype, NULLABLE, OUTPUT)
    a.dbias = _ptr(dbias, "dbias", (2, <Py_ssize_t>G * H + RH), dtype, NULLABLE, OUTPUT)
    a.peep = _peep(peep, H, two, dtype)
    a.dpeep = _dpeep(peep, dpeep, (2, 3 * H), dtype)
    a.shared = _ptr(shared, "shared", (units_shared_size(cell, dtype, T, H, mid, True),), dtype, REQUIRED, OUTPUT)
    a.sync = _sync_ptr(sync)
    return _finish(&j, (w_hh, act, hprev, aux, dy, dh_n, dc_n, dh0, dc0, dgx, dgh, dhs, dbias, sync,
                        shared, peep, dpeep), defer)


# ---- one cell step: the per-call path of a streaming cell -----------------------------------------

cdef int _cell_units(fr_cell_units_args *base, int typenum, int mid) except -1:
    """A cell step as two unit halves [0, mid) and [mid, H) on two threads (fr_cell_units)."""
    cdef fr_job jobs[2]
    cdef const fr_job *order[2]
    cdef int q
    cdef int H = base.H
    cdef Py_ssize_t n0 = fr_cell_units_ws_size(base.cell, base.B, mid)
    cdef Py_ssize_t n1 = fr_cell_units_ws_size(base.cell, base.B, H - mid)
    cdef double small[2048]  # 16 KB: a streaming step's scratch needs no allocation
    cdef int itemsize = 4 if typenum == cnp.NPY_FLOAT else 8
    cdef char *pws = <char*>small
    ws = None
    if (n0 + n1) * itemsize > <Py_ssize_t>sizeof(small):
        ws = _empty(1, n0 + n1, 0, 0, typenum)
        pws = <char*>cnp.PyArray_DATA(<cnp.ndarray>ws)
    for q in range(2):
        jobs[q].kind = FR_JOB_CELL_UNITS
        jobs[q].u.cell_units = base[0]
        jobs[q].u.cell_units.u0 = 0 if q == 0 else mid
        jobs[q].u.cell_units.nu = mid if q == 0 else H - mid
        jobs[q].u.cell_units.ws = pws + (0 if q == 0 else n0 * itemsize)
        order[q] = &jobs[q]
    _run_pool(2, order)
    return 0


cdef inline void* _data_if(object a, int typenum, cnp.npy_intp d0, cnp.npy_intp d1):
    """Data of a C-contiguous ndarray of this type and shape (d0, d1), or (d0,) when d1 == 0;
    NULL for anything else."""
    if not cnp.PyArray_Check(a):
        return NULL
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int nd = 1 if d1 == 0 else 2
    if cnp.PyArray_TYPE(arr) != typenum or not cnp.PyArray_IS_C_CONTIGUOUS(arr) \
            or not cnp.PyArray_ISNOTSWAPPED(arr) or not cnp.PyArray_ISALIGNED(arr) \
            or cnp.PyArray_NDIM(arr) != nd:
        return NULL
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(arr)
    if dims[0] != d0 or (nd == 2 and dims[1] != d1):
        return NULL
    return cnp.PyArray_DATA(arr)


def cell_step(int cell, x, h, c, w_ih, w_hh, b_ih, b_hh, bint train, peep=None, zh=None, zc=None,
              ln=None):
    """One step of a cell, x (B,D), h and c (B,H): fr_recur's fused mode with T=1.

    The per-call path of a streaming cell, so everything is checked through NumPy's C API and
    allocated with PyArray_EMPTY. Returns (h1, c1, saved): c1 None unless the cell has two
    states (LSTM); saved = (x as (1,B,D), (act, hprev, aux), lnsave) in training, for
    backward() (lnsave (1,B,2GH+4) with ln, else None), else None. Inputs that are not exactly
    right (wrong dtype, not contiguous, not an ndarray) raise TypeError/ValueError; the cell
    classes convert and retry or report. peep (3H): LSTM peephole weights, or None. zh, zc
    (B,H): zoneout weights of the previous h and c (zc only with zh, LSTM), or None. ln (4GH,
    + 2H for LSTM): layer norm gains and biases as recur() takes them, or None. A step with
    zoneout or layer norm is never split (its row loop needs every unit of the row)."""
    cdef fr_cell cc = <fr_cell>cell
    if not cnp.PyArray_Check(x) or cnp.PyArray_NDIM(<cnp.ndarray>x) != 2:
        raise ValueError("x must be a 2-D numpy array (B, D)")
    if not cnp.PyArray_Check(w_hh) or cnp.PyArray_NDIM(<cnp.ndarray>w_hh) != 2:
        raise ValueError("w_hh must be a 2-D numpy array (G*H, H)")
    if not cnp.PyArray_Check(w_ih) or cnp.PyArray_NDIM(<cnp.ndarray>w_ih) != 2:
        raise ValueError("w_ih must be a 2-D numpy array (G*H, D)")
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>x)
    if typenum != cnp.NPY_FLOAT and typenum != cnp.NPY_DOUBLE:
        raise TypeError(f"x must be float32 or float64, got {x.dtype}")
    cdef fr_cell_sizes n = _sizes(cell)
    # read wide and checked first, whatever the arrays' layout: a batch of 2**31 rows (a
    # zero-stride view costs no memory) must not wrap around to a negative int
    cdef int B = _dim(cnp.PyArray_DIMS(<cnp.ndarray>x)[0], "x's batch size B")
    cdef int D = _dim(cnp.PyArray_DIMS(<cnp.ndarray>w_ih)[1], "w_ih's columns D")
    cdef int H = _dim(cnp.PyArray_DIMS(<cnp.ndarray>w_hh)[1], "w_hh's columns H")
    cdef int G = n.gates, A = n.aux
    _gh(G, H, "w_hh's columns H")
    cdef bint two = n.states == 2
    if B < 1 or D < 1 or H < 1:
        raise ValueError(f"all dimensions must be >= 1, got x {x.shape}, H={H}")
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be given or both be None")
    # every argument exactly right, checked without building a tuple or looking up a name; the
    # full check below runs only to report what is wrong
    cdef void *px = _data_if(x, typenum, B, D)
    cdef void *ph = _data_if(h, typenum, B, H)
    cdef void *pc = _data_if(c, typenum, B, H) if two else NULL
    cdef void *pwi = _data_if(w_ih, typenum, G * H, D)
    cdef void *pwh = _data_if(w_hh, typenum, G * H, H)
    cdef void *pbi = _data_if(b_ih, typenum, G * H, 0) if b_ih is not None else NULL
    cdef void *pbh = _data_if(b_hh, typenum, G * H, 0) if b_hh is not None else NULL
    cdef void *ppe = _data_if(peep, typenum, 3 * H, 0) if peep is not None and two else NULL
    cdef void *pzh = _data_if(zh, typenum, B, H) if zh is not None else NULL
    cdef void *pzc = _data_if(zc, typenum, B, H) if zc is not None and zh is not None and two else NULL
    cdef void *pln = _data_if(ln, typenum, _ln_size(G, H, two), 0) if ln is not None and peep is None else NULL
    if px == NULL or ph == NULL or (two and pc == NULL) or pwi == NULL or pwh == NULL \
            or (b_ih is not None and (pbi == NULL or pbh == NULL)) or (peep is not None and ppe == NULL) \
            or (zh is not None and pzh == NULL) or (zc is not None and pzc == NULL) \
            or (ln is not None and pln == NULL):
        dtype = np.float32 if typenum == cnp.NPY_FLOAT else np.float64
        _ptr(x, "x", (B, D), dtype)
        _ptr(h, "h", (B, H), dtype)
        if two:
            _ptr(c, "c", (B, H), dtype)
        _ptr(w_ih, "w_ih", (G * H, D), dtype)
        _ptr(w_hh, "w_hh", (G * H, H), dtype)
        _ptr(b_ih, "b_ih", (G * H,), dtype, True)
        _ptr(b_hh, "b_hh", (G * H,), dtype, True)
        _peep(peep, H, two, dtype)
        if zc is not None and (not two or zh is None):
            raise ValueError("zc (zoneout of the cell state) needs zh and a cell with two states (LSTM)")
        _ptr(zh, "zh", (B, H), dtype, NULLABLE)
        _ptr(zc, "zc", (B, H), dtype, NULLABLE)
        _ln(ln, peep, G, H, two, dtype)
        raise AssertionError("cell_step: an argument failed the fast check but passed the full one")
    cdef fr_dtype dt = FR_F64 if typenum == cnp.NPY_DOUBLE else FR_F32
    h1 = _empty(2, B, H, 0, typenum)
    c1 = _empty(2, B, H, 0, typenum) if two else None
    act = _empty(3, 1, B, G * H, typenum) if train else None
    hprev = _empty(3, 1, B, H, typenum) if train else None
    aux = _empty(3, 1, B, A * H, typenum) if (train and A) else None
    lnsave = _empty(3, 1, B, 2 * G * H + 4, typenum) if (train and pln != NULL) else None
    cdef void *ph1 = cnp.PyArray_DATA(<cnp.ndarray>h1)
    cdef void *pc1 = cnp.PyArray_DATA(<cnp.ndarray>c1) if two else NULL
    cdef void *pact = cnp.PyArray_DATA(<cnp.ndarray>act) if train else NULL
    cdef void *php = cnp.PyArray_DATA(<cnp.ndarray>hprev) if train else NULL
    cdef void *paux = cnp.PyArray_DATA(<cnp.ndarray>aux) if (train and A) else NULL
    cdef int mid = fr_plan_cell_mid(cc, B, D, H, pzh != NULL or pln != NULL, _pool_threads)
    cdef fr_cell_units_args u
    cdef fr_recur_args r
    if mid:
        u.cell, u.dtype, u.B, u.D, u.H = cc, dt, B, D, H
        u.x, u.h, u.c, u.w_ih, u.w_hh, u.b_ih, u.b_hh = px, ph, pc, pwi, pwh, pbi, pbh
        u.h1, u.c1, u.act, u.hprev, u.aux = ph1, pc1, pact, php, paux
        u.peep = ppe
        _cell_units(&u, typenum, mid)
    else:
        y = _empty(3, 1, B, H, typenum)  # fr_recur's output copy of h1
        ws = _empty(1, fr_forward_ws_size(cc, 1, B, D, H, 1), 0, 0, typenum)
        r.cell, r.dtype, r.T, r.B, r.D, r.H = cc, dt, 1, B, D, H
        r.b0, r.b1, r.reverse, r.leak, r.lengths = 0, B, 0, 1.0, NULL
        r.x, r.w_ih, r.h0, r.c0, r.w_hh, r.b_ih, r.b_hh = px, pwi, ph, pc, pwh, pbi, pbh
        r.y, r.ldy, r.h_n, r.c_n = cnp.PyArray_DATA(<cnp.ndarray>y), H, ph1, pc1
        r.act, r.hprev, r.ldh, r.aux = pact, php, H, paux
        r.hmask, r.hdrop, r.ldd, r.zh, r.zc, r.peep = NULL, NULL, H, pzh, pzc, ppe
        r.ln = pln
        r.lnsave = cnp.PyArray_DATA(<cnp.ndarray>lnsave) if lnsave is not None else NULL
        r.P, r.w_hr, r.hcell, r.pws = 0, NULL, NULL, NULL
        r.ws = cnp.PyArray_DATA(<cnp.ndarray>ws)
        with nogil:
            fr_recur(&r)
    if not train:
        return h1, c1, None
    return h1, c1, (x.reshape(1, B, D), (act, hprev, aux), lnsave)
