# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Thin bridge to the C kernels (csrc/fastrnn.h): validate, allocate with NumPy, run nogil.

Every array handed to C is checked here for dtype, C-contiguity and shape, because a wrong
shape reaching C is a buffer overrun, not an exception. Callers (fastrnn.layers) give users
friendlier messages first; these checks are the last line before memory is touched.
"""
import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef extern from "fastrnn.h":
    ctypedef enum fr_cell:
        FR_RNN_TANH
        FR_RNN_RELU
        FR_LSTM
        FR_GRU
    int fr_gates(fr_cell cell) nogil
    int fr_aux(fr_cell cell) nogil
    long fr_forward_ws_size(fr_cell cell, int T, int B, int D, int H, int fused) nogil
    int fr_fused_pays(fr_cell cell, int T, int B, int D, int H, int itemsize) nogil
    long fr_backward_ws_size(fr_cell cell, int T, int B, int D, int H) nogil
    int fr_dx_in_loop_pays(fr_cell cell, int T, int B, int D, int H, int itemsize) nogil
    long fr_units_shared_size_f32(fr_cell cell, int T, int H, int mid, int backward) nogil
    long fr_units_shared_size_f64(fr_cell cell, int T, int H, int mid, int backward) nogil
    void fr_recur_units_f32(fr_cell cell, int T, int H, int mid, int part, int reverse, double leak,
                        const float *h0, const float *c0, const float *w_hh, const float *b_ih, const float *b_hh,
                        float *y, int ldy, float *h_n, float *c_n, float *act, float *hprev, int ldh, float *aux, int *sync,
                        float *shared) nogil
    void fr_recur_backward_units_f32(fr_cell cell, int T, int H, int mid, int part, int reverse,
                                 double leak, const float *w_hh, const float *act, const float *hprev, int ldh,
                                 const float *aux, const float *dy, int ldy, const float *dh_n,
                                 const float *dc_n, float *dh0, float *dc0, float *dgx, float *dgh, float *dhs,
                                 float *dbias, int *sync, float *shared) nogil
    void fr_recur_units_f64(fr_cell cell, int T, int H, int mid, int part, int reverse, double leak,
                        const double *h0, const double *c0, const double *w_hh, const double *b_ih, const double *b_hh,
                        double *y, int ldy, double *h_n, double *c_n, double *act, double *hprev, int ldh, double *aux, int *sync,
                        double *shared) nogil
    void fr_recur_backward_units_f64(fr_cell cell, int T, int H, int mid, int part, int reverse,
                                 double leak, const double *w_hh, const double *act, const double *hprev, int ldh,
                                 const double *aux, const double *dy, int ldy, const double *dh_n,
                                 const double *dc_n, double *dh0, double *dc0, double *dgx, double *dgh, double *dhs,
                                 double *dbias, int *sync, double *shared) nogil
    void fr_project_f32(fr_cell cell, int T, int B, int D, int H, const float *x, const float *w_ih,
                        float *act) nogil
    void fr_project_f64(fr_cell cell, int T, int B, int D, int H, const double *x, const double *w_ih,
                        double *act) nogil
    void fr_recur_f32(fr_cell cell, int T, int B, int D, int H, int b0, int b1, int reverse,
                      double leak, const int *lengths, const float *x, const float *w_ih, const float *h0, const float *c0, const float *w_hh,
                      const float *b_ih, const float *b_hh, float *y, int ldy, float *h_n, float *c_n,
                      float *act, float *hprev, int ldh, float *aux, float *ws) nogil
    void fr_recur_f64(fr_cell cell, int T, int B, int D, int H, int b0, int b1, int reverse,
                      double leak, const int *lengths, const double *x, const double *w_ih, const double *h0, const double *c0, const double *w_hh,
                      const double *b_ih, const double *b_hh, double *y, int ldy, double *h_n, double *c_n,
                      double *act, double *hprev, int ldh, double *aux, double *ws) nogil
    void fr_recur_backward_f32(fr_cell cell, int T, int B, int H, int b0, int b1, int reverse,
                               double leak, const int *lengths, const float *w_hh, const float *act,
                               const float *hprev, int ldh, const float *aux, const float *dy, int ldy,
                               const float *dh_n, const float *dc_n, float *dh0, float *dc0,
                               float *dgx, float *dgh, float *dhs, float *dbias, int D,
                               const float *w_ih, float *dx, float *ws) nogil
    void fr_recur_backward_f64(fr_cell cell, int T, int B, int H, int b0, int b1, int reverse,
                               double leak, const int *lengths, const double *w_hh, const double *act,
                               const double *hprev, int ldh, const double *aux, const double *dy, int ldy,
                               const double *dh_n, const double *dc_n, double *dh0, double *dc0,
                               double *dgx, double *dgh, double *dhs, double *dbias, int D,
                               const double *w_ih, double *dx, double *ws) nogil
    void fr_backward_params_f32(fr_cell cell, int T, int B, int D, int H, int g0, int g1,
                                long r0, long r1, const float *x, int ldx,
                                const float *w_ih, const float *hprev, int ldh, const float *dgx,
                                const float *dgh, float *dx, int accumulate_dx, float *dw_ih,
                                float *dw_hh, float *db_ih, float *db_hh, float *ws) nogil
    void fr_backward_params_f64(fr_cell cell, int T, int B, int D, int H, int g0, int g1,
                                long r0, long r1, const double *x, int ldx,
                                const double *w_ih, const double *hprev, int ldh, const double *dgx,
                                const double *dgh, double *dx, int accumulate_dx, double *dw_ih,
                                double *dw_hh, double *db_ih, double *db_hh, double *ws) nogil
    long fr_cell_units_ws_size_f32(fr_cell cell, int B, int nu) nogil
    long fr_cell_units_ws_size_f64(fr_cell cell, int B, int nu) nogil
    void fr_cell_units_f32(fr_cell cell, int B, int D, int H, int u0, int nu, const float *x,
                           const float *h, const float *c, const float *w_ih, const float *w_hh,
                           const float *b_ih, const float *b_hh, float *h1, float *c1, float *act,
                           float *hprev, float *aux, float *ws) nogil
    void fr_cell_units_f64(fr_cell cell, int B, int D, int H, int u0, int nu, const double *x,
                           const double *h, const double *c, const double *w_ih, const double *w_hh,
                           const double *b_ih, const double *b_hh, double *h1, double *c1, double *act,
                           double *hprev, double *aux, double *ws) nogil
    void fr_set_num_threads(int n) nogil
    int fr_get_num_threads() nogil

cdef extern from "_pool.h":
    ctypedef void (*fr_job_fn)(void *arg) noexcept nogil
    ctypedef struct fr_pool:
        pass
    void fr_pool_prepare(fr_pool *p)
    void fr_pool_run(fr_pool *p, int nthreads, int njobs, fr_job_fn fn, void **args) nogil
    void fr_pool_shutdown(fr_pool *p) nogil

from cpython.mem cimport PyMem_Malloc, PyMem_Free

RNN_TANH = FR_RNN_TANH
RNN_RELU = FR_RNN_RELU
LSTM = FR_LSTM
GRU = FR_GRU
MODES = {"RNN_TANH": FR_RNN_TANH, "RNN_RELU": FR_RNN_RELU, "LSTM": FR_LSTM, "GRU": FR_GRU}


def gates(int cell):
    return fr_gates(<fr_cell>cell)


def set_num_threads(int n):
    """Number of BLAS threads used inside the kernels' GEMMs."""
    if n < 1:
        raise ValueError(f"num_threads must be >= 1, got {n}")
    fr_set_num_threads(n)


def get_num_threads():
    return fr_get_num_threads()


# ---- jobs: a validated kernel call, run now or handed to the pool -------------------------------
# Each kernel entry point below checks its arguments with the GIL held and fills a job; with
# defer=True it returns the job instead of running it, and run_jobs() runs a list of them
# concurrently on fastrnn's worker threads (_pool.h) without the GIL. A job keeps references to
# every array it points into, so nothing it writes can be freed while it runs.

cdef enum:
    J_PROJECT, J_RECUR, J_RECUR_BWD, J_PARAMS, J_UNITS, J_UNITS_BWD, J_CELL_UNITS

cdef struct job_t:
    int kind
    bint f64
    fr_cell c
    int T, B, D, H, b0, b1, reverse, ld, ldh, ldx, mid, part, g0, g1, flag  # J_CELL_UNITS: mid, part = u0, nu
    long r0, r1
    double leak
    const int *lengths
    int *sync
    void *p[16]


cdef void _run_job(void *arg) noexcept nogil:
    cdef job_t *j = <job_t*>arg
    cdef void **p = j.p
    if j.kind == J_PROJECT:
        if j.f64:
            fr_project_f64(j.c, j.T, j.B, j.D, j.H, <double*>p[0], <double*>p[1], <double*>p[2])
        else:
            fr_project_f32(j.c, j.T, j.B, j.D, j.H, <float*>p[0], <float*>p[1], <float*>p[2])
    elif j.kind == J_RECUR:
        if j.f64:
            fr_recur_f64(j.c, j.T, j.B, j.D, j.H, j.b0, j.b1, j.reverse, j.leak, j.lengths,
                         <double*>p[0], <double*>p[1], <double*>p[2], <double*>p[3], <double*>p[4],
                         <double*>p[5], <double*>p[6], <double*>p[7], j.ld, <double*>p[8],
                         <double*>p[9], <double*>p[10], <double*>p[11], j.ldh, <double*>p[12], <double*>p[13])
        else:
            fr_recur_f32(j.c, j.T, j.B, j.D, j.H, j.b0, j.b1, j.reverse, j.leak, j.lengths,
                         <float*>p[0], <float*>p[1], <float*>p[2], <float*>p[3], <float*>p[4],
                         <float*>p[5], <float*>p[6], <float*>p[7], j.ld, <float*>p[8],
                         <float*>p[9], <float*>p[10], <float*>p[11], j.ldh, <float*>p[12], <float*>p[13])
    elif j.kind == J_RECUR_BWD:
        if j.f64:
            fr_recur_backward_f64(j.c, j.T, j.B, j.H, j.b0, j.b1, j.reverse, j.leak, j.lengths,
                                  <double*>p[0], <double*>p[1], <double*>p[2], j.ldh, <double*>p[3],
                                  <double*>p[4], j.ld, <double*>p[5], <double*>p[6], <double*>p[7],
                                  <double*>p[8], <double*>p[9], <double*>p[10], <double*>p[11],
                                  <double*>p[12], j.D, <double*>p[14], <double*>p[15], <double*>p[13])
        else:
            fr_recur_backward_f32(j.c, j.T, j.B, j.H, j.b0, j.b1, j.reverse, j.leak, j.lengths,
                                  <float*>p[0], <float*>p[1], <float*>p[2], j.ldh, <float*>p[3],
                                  <float*>p[4], j.ld, <float*>p[5], <float*>p[6], <float*>p[7],
                                  <float*>p[8], <float*>p[9], <float*>p[10], <float*>p[11],
                                  <float*>p[12], j.D, <float*>p[14], <float*>p[15], <float*>p[13])
    elif j.kind == J_PARAMS:
        if j.f64:
            fr_backward_params_f64(j.c, j.T, j.B, j.D, j.H, j.g0, j.g1, j.r0, j.r1, <double*>p[0],
                                   j.ldx, <double*>p[1], <double*>p[2], j.ldh, <double*>p[3], <double*>p[4],
                                   <double*>p[5], j.flag, <double*>p[6], <double*>p[7],
                                   <double*>p[8], <double*>p[9], <double*>p[10])
        else:
            fr_backward_params_f32(j.c, j.T, j.B, j.D, j.H, j.g0, j.g1, j.r0, j.r1, <float*>p[0],
                                   j.ldx, <float*>p[1], <float*>p[2], j.ldh, <float*>p[3], <float*>p[4],
                                   <float*>p[5], j.flag, <float*>p[6], <float*>p[7],
                                   <float*>p[8], <float*>p[9], <float*>p[10])
    elif j.kind == J_UNITS:
        if j.f64:
            fr_recur_units_f64(j.c, j.T, j.H, j.mid, j.part, j.reverse, j.leak, <double*>p[0],
                               <double*>p[1], <double*>p[2], <double*>p[3], <double*>p[4],
                               <double*>p[5], j.ld, <double*>p[6], <double*>p[7], <double*>p[8],
                               <double*>p[9], j.ldh, <double*>p[10], j.sync, <double*>p[11])
        else:
            fr_recur_units_f32(j.c, j.T, j.H, j.mid, j.part, j.reverse, j.leak, <float*>p[0],
                               <float*>p[1], <float*>p[2], <float*>p[3], <float*>p[4],
                               <float*>p[5], j.ld, <float*>p[6], <float*>p[7], <float*>p[8],
                               <float*>p[9], j.ldh, <float*>p[10], j.sync, <float*>p[11])
    elif j.kind == J_UNITS_BWD:
        if j.f64:
            fr_recur_backward_units_f64(j.c, j.T, j.H, j.mid, j.part, j.reverse, j.leak,
                                        <double*>p[0], <double*>p[1], <double*>p[2], j.ldh, <double*>p[3],
                                        <double*>p[4], j.ld, <double*>p[5], <double*>p[6],
                                        <double*>p[7], <double*>p[8], <double*>p[9], <double*>p[10],
                                        <double*>p[11], <double*>p[12], j.sync, <double*>p[13])
        else:
            fr_recur_backward_units_f32(j.c, j.T, j.H, j.mid, j.part, j.reverse, j.leak,
                                        <float*>p[0], <float*>p[1], <float*>p[2], j.ldh, <float*>p[3],
                                        <float*>p[4], j.ld, <float*>p[5], <float*>p[6],
                                        <float*>p[7], <float*>p[8], <float*>p[9], <float*>p[10],
                                        <float*>p[11], <float*>p[12], j.sync, <float*>p[13])

    elif j.kind == J_CELL_UNITS:
        if j.f64:
            fr_cell_units_f64(j.c, j.B, j.D, j.H, j.mid, j.part, <double*>p[0], <double*>p[1],
                              <double*>p[2], <double*>p[3], <double*>p[4], <double*>p[5],
                              <double*>p[6], <double*>p[7], <double*>p[8], <double*>p[9],
                              <double*>p[10], <double*>p[11], <double*>p[12])
        else:
            fr_cell_units_f32(j.c, j.B, j.D, j.H, j.mid, j.part, <float*>p[0], <float*>p[1],
                              <float*>p[2], <float*>p[3], <float*>p[4], <float*>p[5],
                              <float*>p[6], <float*>p[7], <float*>p[8], <float*>p[9],
                              <float*>p[10], <float*>p[11], <float*>p[12])


cdef class Job:
    """A checked kernel call (project/recur/... with defer=True), for run_jobs()."""
    cdef job_t j
    cdef object refs


cdef object _finish(job_t *j, tuple refs, bint defer):
    """Run the job now (nogil), or return it as a Job when deferred."""
    cdef Job job
    if defer:
        job = Job.__new__(Job)
        job.j = j[0]
        job.refs = refs
        return job
    with nogil:
        _run_job(j)
    return None


cdef fr_pool _pool
cdef int _pool_threads = 1


def set_pool_threads(int n):
    """Threads run_jobs() may use, the caller included (workers are started on first use)."""
    global _pool_threads
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    _pool_threads = n
    fr_pool_prepare(&_pool)
    with nogil:
        fr_pool_shutdown(&_pool)


def run_jobs(list jobs):
    """Run Jobs concurrently on up to set_pool_threads() threads; returns when all are done.
    The caller runs the first job, so jobs that cooperate (the unit tasks) can rely on it."""
    cdef Py_ssize_t n = len(jobs), k
    if n == 0:
        return
    for k in range(n):
        if not isinstance(jobs[k], Job):
            raise TypeError(f"run_jobs takes Jobs (kernel calls with defer=True), got {type(jobs[k]).__name__}")
    cdef void **args = <void**>PyMem_Malloc(n * sizeof(void*))
    if args == NULL:
        raise MemoryError()
    for k in range(n):
        args[k] = <void*>&(<Job>jobs[k]).j
    fr_pool_prepare(&_pool)
    try:
        with nogil:
            fr_pool_run(&_pool, _pool_threads, <int>n, _run_job, args)
    finally:
        PyMem_Free(args)


cdef void* _ptr(object a, str name, tuple shape, object dtype, bint allow_none=False) except? NULL:
    """Data pointer of `a` after checking dtype, contiguity and shape; NULL for an allowed None.

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
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{name} must be C-contiguous")
    cdef int nd = len(shape), i
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(arr)
    if cnp.PyArray_NDIM(arr) != nd:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    for i in range(nd):
        if dims[i] != <cnp.npy_intp>shape[i]:
            raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    return cnp.PyArray_DATA(arr)


cdef int _check_lengths(object lengths, int T, int B) except -1:
    if lengths is None:
        return 0
    if not isinstance(lengths, np.ndarray) or lengths.dtype != np.intc or not lengths.flags.c_contiguous:
        raise TypeError("lengths must be a C-contiguous numpy array of dtype intc")
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},), got {lengths.shape}")
    if B > 0 and (lengths.min() < 1 or lengths.max() > T):
        raise ValueError(f"lengths must lie in 1..{T}")
    return 0


cdef void* _cols(object a, str name, int T, int B, int col, int width, object dtype, int *ld,
                 bint allow_none=False) except? NULL:
    """Pointer to columns col..col+width-1 of a C-contiguous (T, B, W) array, with *ld = W: a
    strided (T,B,width,W) operand (hprev inside the layer's [x | hprev] buffer)."""
    if a is None and allow_none:
        return NULL
    if not isinstance(a, np.ndarray) or a.ndim != 3 or a.shape[0] != T or a.shape[1] != B:
        raise ValueError(f"{name} must be a (T={T}, B={B}, W) numpy array")
    cdef int W = a.shape[2]
    if col < 0 or col + width > W:
        raise ValueError(f"{name} columns {col}..{col + width} out of range for width {W}")
    cdef char *p = <char*>_ptr(a, name, (T, B, W), dtype)
    ld[0] = W
    return p + col * <int>a.itemsize

def forward(int cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths=None, bint reverse=False,
            y=None, int y_col=0, bint train=True, double leak=1.0):
    """Run one layer in one direction over x (T,B,D): project() then recur() over all rows.

    y: optional (T,B,W) output shared with the other direction; this direction writes columns
    y_col..y_col+H. Returns (y, h_n, c_n, saved); saved = (act, hprev, aux) in training, None
    in inference; c_n is None unless LSTM.
    """
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        raise ValueError("x must be a 3-D numpy array (T, B, D)")
    if not isinstance(w_hh, np.ndarray) or w_hh.ndim != 2:
        raise ValueError("w_hh must be a 2-D numpy array (G*H, H)")
    dtype = _float_dtype(x, "x")
    cdef fr_cell c = <fr_cell>cell
    cdef int T = x.shape[0], B = x.shape[1], H = w_hh.shape[1]
    cdef int G = fr_gates(c), A = fr_aux(c)
    if T < 1 or B < 1 or x.shape[2] < 1 or H < 1:
        raise ValueError(f"all dimensions must be >= 1, got x {x.shape}, H={H}")
    lstm = c == FR_LSTM
    if y is None:
        y = np.empty((T, B, H), dtype=dtype)
    h_n = np.empty((B, H), dtype=dtype)
    c_n = np.empty((B, H), dtype=dtype) if lstm else None
    act = np.empty((T, B, G * H), dtype=dtype)
    hprev = np.empty((T, B, H), dtype=dtype) if train else None
    aux = np.empty((T, B, A * H), dtype=dtype) if (train and A) else None
    project(cell, x, w_ih, act)
    recur(cell, 0, B, reverse, lengths, h0, c0, w_hh, b_ih, b_hh, y, y_col, h_n, c_n, act, hprev, aux, leak)
    return y, h_n, c_n, ((act, hprev, aux) if train else None)


def backward(int cell, x, w_ih, w_hh, saved, lengths=None, bint reverse=False,
             dy=None, int dy_col=0, dh_n=None, dc_n=None, dx=None, bint accumulate_dx=False,
             dw_ih=None, dw_hh=None, db_ih=None, db_hh=None, double leak=1.0):
    """BPTT of one layer in one direction, from `saved` of a training forward(): recur_backward()
    then backward_params() over everything.

    dx (T,B,D) is written (assigned, or accumulated with accumulate_dx) if given; parameter
    gradients accumulate into dw_ih, dw_hh, db_ih, db_hh. Returns (dh0, dc0); dc0 None unless LSTM.
    """
    if saved is None:
        raise ValueError("saved is None: backward needs a training-mode forward")
    act, hprev, aux = saved
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        raise ValueError("x must be a 3-D numpy array (T, B, D)")
    dtype = _float_dtype(x, "x")
    cdef fr_cell c = <fr_cell>cell
    cdef int T = x.shape[0], B = x.shape[1], H = hprev.shape[2] if isinstance(hprev, np.ndarray) else 0
    cdef int GH = fr_gates(c) * H
    dh0 = np.empty((B, H), dtype=dtype)
    dc0 = np.empty((B, H), dtype=dtype) if c == FR_LSTM else None
    dgx = np.empty((T, B, GH), dtype=dtype)
    dgh = np.empty((T, B, H), dtype=dtype) if c == FR_GRU else None
    recur_backward(cell, 0, B, reverse, lengths, w_hh, act, hprev, aux, dy, dy_col, dh_n, dc_n,
                   dh0, dc0, dgx, dgh, leak)
    backward_params(cell, 0, GH, 0, T * B, x, w_ih, hprev, dgx, dgh, dx, accumulate_dx,
                    dw_ih, dw_hh, db_ih, db_hh)
    return dh0, dc0


cdef int _check_mid(int mid, int part, int H) except -1:
    if not (0 < mid < H and 0 <= part <= 1):
        raise ValueError(f"mid={mid} must split 0 < mid < H={H} and part must be 0 or 1, got {part}")
    return 0


cdef int* _sync_ptr(sync) except NULL:
    if not cnp.PyArray_Check(sync) or cnp.PyArray_TYPE(<cnp.ndarray>sync) != cnp.NPY_INT \
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>sync) or cnp.PyArray_SIZE(<cnp.ndarray>sync) != 4:
        raise ValueError("sync must be a C-contiguous intc array of 4 zeros")
    return <int*>cnp.PyArray_DATA(<cnp.ndarray>sync)


def units_shared_size(int cell, dtype, int T, int H, int mid, bint backward):
    """Elements of the `shared` buffer of recur_units / recur_backward_units."""
    if np.dtype(dtype) == np.float32:
        return fr_units_shared_size_f32(<fr_cell>cell, T, H, mid, backward)
    return fr_units_shared_size_f64(<fr_cell>cell, T, H, mid, backward)


def recur_units(int cell, int mid, int part, bint reverse, h0, c0, w_hh, b_ih, b_hh, y,
                int y_col, h_n, c_n, act, hprev, aux, double leak, sync, shared, int h_col=0,
                bint defer=False):
    """Forward time loop of a batch of one as two unit tasks per step, claimed by two concurrent
    calls (part 0 and 1; fastrnn.h, fr_recur_units); act holds project()'s output."""
    dtype = _float_dtype(act, "act")
    if act.ndim != 3 or act.shape[1] != 1 or not isinstance(w_hh, np.ndarray) or w_hh.ndim != 2:
        raise ValueError("act must be (T, 1, G*H) and w_hh 2-D")
    cdef fr_cell c = <fr_cell>cell
    cdef int T = act.shape[0], H = w_hh.shape[1], G = fr_gates(c), A = fr_aux(c)
    cdef bint lstm = c == FR_LSTM
    _check_mid(mid, part, H)
    if not isinstance(y, np.ndarray) or y.ndim != 3 or y.shape[:2] != (T, 1):
        raise ValueError(f"y must be a (T={T}, 1, W) numpy array")
    cdef int W = y.shape[2]
    if y_col < 0 or y_col + H > W:
        raise ValueError(f"y columns {y_col}..{y_col + H} out of range for width {W}")
    cdef void *ph0 = _ptr(h0, "h0", (1, H), dtype)
    cdef void *pc0 = _ptr(c0, "c0", (1, H), dtype) if lstm else NULL
    cdef void *pwh = _ptr(w_hh, "w_hh", (G * H, H), dtype)
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be given or both be None")
    cdef void *pbi = _ptr(b_ih, "b_ih", (G * H,), dtype, True)
    cdef void *pbh = _ptr(b_hh, "b_hh", (G * H,), dtype, True)
    cdef void *py = _ptr(y, "y", (T, 1, W), dtype)
    cdef void *phn = _ptr(h_n, "h_n", (1, H), dtype)
    cdef void *pcn = _ptr(c_n, "c_n", (1, H), dtype) if lstm else NULL
    cdef void *pact = _ptr(act, "act", (T, 1, G * H), dtype)
    cdef int ldh = H
    cdef void *php = _cols(hprev, "hprev", T, 1, h_col, H, dtype, &ldh, True)
    cdef void *paux = _ptr(aux, "aux", (T, 1, A * H), dtype) if (A and hprev is not None) else NULL
    cdef void *psh = _ptr(shared, "shared", (units_shared_size(cell, dtype, T, H, mid, False),), dtype)
    cdef int *psync = _sync_ptr(sync)
    cdef job_t j
    j.kind, j.f64, j.c, j.T, j.H, j.mid, j.part, j.reverse, j.leak = J_UNITS, _is_f64(dtype), c, T, H, mid, part, reverse, leak
    j.ld, j.ldh, j.sync = W, ldh, psync
    j.p[0], j.p[1], j.p[2], j.p[3], j.p[4] = ph0, pc0, pwh, pbi, pbh
    j.p[5] = <void*>((<char*>py) + y_col * <int>dtype.itemsize)
    j.p[6], j.p[7], j.p[8], j.p[9], j.p[10], j.p[11] = phn, pcn, pact, php, paux, psh
    return _finish(&j, (h0, c0, w_hh, b_ih, b_hh, y, h_n, c_n, act, hprev, aux, sync, shared), defer)


def recur_backward_units(int cell, int mid, int part, bint reverse, w_hh, act, hprev, aux, dy,
                         int dy_col, dh_n, dc_n, dh0, dc0, dgx, dgh, double leak, dhs, dbias,
                         sync, shared, int h_col=0, bint defer=False):
    """Reverse time loop of a batch of one as two unit tasks per step (fastrnn.h,
    fr_recur_backward_units); dbias (2, G*H [+H for GRU]) gets each task's share."""
    dtype = _float_dtype(act, "act")
    if act.ndim != 3 or act.shape[1] != 1 or not isinstance(w_hh, np.ndarray) or w_hh.ndim != 2:
        raise ValueError("act must be (T, 1, G*H) and w_hh 2-D")
    cdef fr_cell c = <fr_cell>cell
    cdef int T = act.shape[0], H = w_hh.shape[1], G = fr_gates(c), A = fr_aux(c)
    cdef int W = 0
    cdef bint lstm = c == FR_LSTM
    _check_mid(mid, part, H)
    if dy is not None:
        if not isinstance(dy, np.ndarray) or dy.ndim != 3 or dy.shape[:2] != (T, 1):
            raise ValueError(f"dy must be a (T={T}, 1, W) numpy array")
        W = dy.shape[2]
        if dy_col < 0 or dy_col + H > W:
            raise ValueError(f"dy columns {dy_col}..{dy_col + H} out of range for width {W}")
    cdef void *pwh = _ptr(w_hh, "w_hh", (G * H, H), dtype)
    cdef void *pact = _ptr(act, "act", (T, 1, G * H), dtype)
    cdef int ldh = H
    cdef void *php = _cols(hprev, "hprev", T, 1, h_col, H, dtype, &ldh)
    cdef void *paux = _ptr(aux, "aux", (T, 1, A * H), dtype) if A else NULL
    cdef void *pdy = _ptr(dy, "dy", (T, 1, W), dtype, True)
    cdef void *pdhn = _ptr(dh_n, "dh_n", (1, H), dtype, True)
    cdef void *pdcn = _ptr(dc_n, "dc_n", (1, H), dtype, True) if lstm else NULL
    cdef void *pdh0 = _ptr(dh0, "dh0", (1, H), dtype)
    cdef void *pdc0 = _ptr(dc0, "dc0", (1, H), dtype) if lstm else NULL
    cdef void *pdgx = _ptr(dgx, "dgx", (T, 1, G * H), dtype)
    cdef void *pdgh = _ptr(dgh, "dgh", (T, 1, H), dtype) if c == FR_GRU else NULL
    cdef void *pdhs = _ptr(dhs, "dhs", (T, 1, H), dtype, True)
    cdef void *pdb = _ptr(dbias, "dbias", (2, G * H + (H if c == FR_GRU else 0)), dtype, True)
    cdef void *psh = _ptr(shared, "shared", (units_shared_size(cell, dtype, T, H, mid, True),), dtype)
    cdef int *psync = _sync_ptr(sync)
    cdef int itemsize = dtype.itemsize
    if pdy != NULL:
        pdy = <void*>((<char*>pdy) + dy_col * itemsize)
    cdef job_t j
    j.kind, j.f64, j.c, j.T, j.H, j.mid, j.part, j.reverse, j.leak = J_UNITS_BWD, _is_f64(dtype), c, T, H, mid, part, reverse, leak
    j.ld, j.ldh, j.sync = W, ldh, psync
    j.p[0], j.p[1], j.p[2], j.p[3], j.p[4] = pwh, pact, php, paux, pdy
    j.p[5], j.p[6], j.p[7], j.p[8], j.p[9], j.p[10] = pdhn, pdcn, pdh0, pdc0, pdgx, pdgh
    j.p[11], j.p[12], j.p[13] = pdhs, pdb, psh
    return _finish(&j, (w_hh, act, hprev, aux, dy, dh_n, dc_n, dh0, dc0, dgx, dgh, dhs, dbias, sync,
                        shared), defer)


cdef inline object _empty(int nd, cnp.npy_intp d0, cnp.npy_intp d1, cnp.npy_intp d2, int typenum):
    cdef cnp.npy_intp dims[3]
    dims[0] = d0
    dims[1] = d1
    dims[2] = d2
    return cnp.PyArray_EMPTY(nd, dims, typenum, 0)


# A cell step of at least this many multiply-adds per row is split over two threads by hidden
# units (fr_cell_units); below it the hand-over costs more than half the step.
cdef long _CELL_SPLIT_WORK = 1 << 16


def set_cell_split_work(long work):
    """Multiply-adds per row from which a cell step is split over two threads (tests: 0 to
    always split where possible, a huge value to never split); returns the previous value."""
    global _CELL_SPLIT_WORK
    old = _CELL_SPLIT_WORK
    _CELL_SPLIT_WORK = work
    return old


cdef int _cell_split(int G, int B, int D, int H):
    """The unit where the two halves of a split cell step meet, or 0 for one thread."""
    if _pool_threads < 2 or H < 2 or <long>G * H * (D + H) < _CELL_SPLIT_WORK:
        return 0
    cdef int mid = ((H + 8) // 16) * 8  # 8-unit blocks keep the gate loops vectorised
    return max(1, min(H - 1, mid))


cdef int _cell_units(fr_cell cc, int typenum, int B, int D, int H, int mid, void *px, void *ph,
                     void *pc, void *pwi, void *pwh, void *pbi, void *pbh, void *ph1, void *pc1,
                     void *pact, void *php, void *paux) except -1:
    cdef job_t jobs[2]
    cdef void *args[2]
    cdef int q
    cdef long n0, n1
    if typenum == cnp.NPY_FLOAT:
        n0, n1 = fr_cell_units_ws_size_f32(cc, B, mid), fr_cell_units_ws_size_f32(cc, B, H - mid)
    else:
        n0, n1 = fr_cell_units_ws_size_f64(cc, B, mid), fr_cell_units_ws_size_f64(cc, B, H - mid)
    cdef double small[2048]  # 16 KB: a streaming step's scratch needs no allocation
    cdef int itemsize = 4 if typenum == cnp.NPY_FLOAT else 8
    cdef char *pws = <char*>small
    ws = None
    if (n0 + n1) * itemsize > <long>sizeof(small):
        ws = _empty(1, n0 + n1, 0, 0, typenum)
        pws = <char*>cnp.PyArray_DATA(<cnp.ndarray>ws)
    for q in range(2):
        jobs[q].kind, jobs[q].f64, jobs[q].c = J_CELL_UNITS, typenum != cnp.NPY_FLOAT, cc
        jobs[q].B, jobs[q].D, jobs[q].H = B, D, H
        jobs[q].mid = 0 if q == 0 else mid
        jobs[q].part = mid if q == 0 else H - mid
        jobs[q].p[0], jobs[q].p[1], jobs[q].p[2], jobs[q].p[3], jobs[q].p[4] = px, ph, pc, pwi, pwh
        jobs[q].p[5], jobs[q].p[6], jobs[q].p[7], jobs[q].p[8] = pbi, pbh, ph1, pc1
        jobs[q].p[9], jobs[q].p[10], jobs[q].p[11] = pact, php, paux
        jobs[q].p[12] = pws + (0 if q == 0 else n0 * itemsize)
        args[q] = &jobs[q]
    fr_pool_prepare(&_pool)
    with nogil:
        fr_pool_run(&_pool, _pool_threads, 2, _run_job, args)
    return 0


cdef inline void* _data_if(object a, int typenum, cnp.npy_intp d0, cnp.npy_intp d1):
    """Data of a C-contiguous ndarray of this type and shape (d0, d1), or (d0,) when d1 == 0;
    NULL for anything else."""
    if not cnp.PyArray_Check(a):
        return NULL
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int nd = 1 if d1 == 0 else 2
    if cnp.PyArray_TYPE(arr) != typenum or not cnp.PyArray_IS_C_CONTIGUOUS(arr) \
            or cnp.PyArray_NDIM(arr) != nd:
        return NULL
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(arr)
    if dims[0] != d0 or (nd == 2 and dims[1] != d1):
        return NULL
    return cnp.PyArray_DATA(arr)


def cell_step(int cell, x, h, c, w_ih, w_hh, b_ih, b_hh, bint train):
    """One step of a cell, x (B,D), h and c (B,H): fr_recur's fused mode with T=1.

    The per-call path of a streaming cell, so everything is checked through NumPy's C API and
    allocated with PyArray_EMPTY. Returns (h1, c1, saved): c1 None unless LSTM; saved =
    (x as (1,B,D), (act, hprev, aux)) in training, for backward(), else None.
    Inputs that are not exactly right (wrong dtype, not contiguous, not an ndarray) raise
    TypeError/ValueError; the cell classes convert and retry or report."""
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
    cdef int B = cnp.PyArray_DIMS(<cnp.ndarray>x)[0], D = cnp.PyArray_DIMS(<cnp.ndarray>w_ih)[1]
    cdef int H = cnp.PyArray_DIMS(<cnp.ndarray>w_hh)[1], G = fr_gates(cc), A = fr_aux(cc)
    cdef bint lstm = cc == FR_LSTM
    if B < 1 or D < 1 or H < 1:
        raise ValueError(f"all dimensions must be >= 1, got x {x.shape}, H={H}")
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be given or both be None")
    # every argument exactly right, checked without building a tuple or looking up a name; the
    # full check below runs only to report what is wrong
    cdef void *px = _data_if(x, typenum, B, D)
    cdef void *ph = _data_if(h, typenum, B, H)
    cdef void *pc = _data_if(c, typenum, B, H) if lstm else NULL
    cdef void *pwi = _data_if(w_ih, typenum, G * H, D)
    cdef void *pwh = _data_if(w_hh, typenum, G * H, H)
    cdef void *pbi = _data_if(b_ih, typenum, G * H, 0) if b_ih is not None else NULL
    cdef void *pbh = _data_if(b_hh, typenum, G * H, 0) if b_hh is not None else NULL
    if px == NULL or ph == NULL or (lstm and pc == NULL) or pwi == NULL or pwh == NULL \
            or (b_ih is not None and (pbi == NULL or pbh == NULL)):
        dtype = np.float32 if typenum == cnp.NPY_FLOAT else np.float64
        _ptr(x, "x", (B, D), dtype)
        _ptr(h, "h", (B, H), dtype)
        if lstm:
            _ptr(c, "c", (B, H), dtype)
        _ptr(w_ih, "w_ih", (G * H, D), dtype)
        _ptr(w_hh, "w_hh", (G * H, H), dtype)
        _ptr(b_ih, "b_ih", (G * H,), dtype, True)
        _ptr(b_hh, "b_hh", (G * H,), dtype, True)
        raise AssertionError("cell_step: an argument failed the fast check but passed the full one")
    h1 = _empty(2, B, H, 0, typenum)
    c1 = _empty(2, B, H, 0, typenum) if lstm else None
    act = _empty(3, 1, B, G * H, typenum) if train else None
    hprev = _empty(3, 1, B, H, typenum) if train else None
    aux = _empty(3, 1, B, A * H, typenum) if (train and A) else None
    cdef void *ph1 = cnp.PyArray_DATA(<cnp.ndarray>h1)
    cdef void *pc1 = cnp.PyArray_DATA(<cnp.ndarray>c1) if lstm else NULL
    cdef void *pact = cnp.PyArray_DATA(<cnp.ndarray>act) if train else NULL
    cdef void *php = cnp.PyArray_DATA(<cnp.ndarray>hprev) if train else NULL
    cdef void *paux = cnp.PyArray_DATA(<cnp.ndarray>aux) if (train and A) else NULL
    cdef int mid = _cell_split(G, B, D, H)
    if mid:
        _cell_units(cc, typenum, B, D, H, mid, px, ph, pc, pwi, pwh, pbi, pbh, ph1, pc1, pact, php, paux)
        if not train:
            return h1, c1, None
        return h1, c1, (x.reshape(1, B, D), (act, hprev, aux))
    y = _empty(3, 1, B, H, typenum)  # fr_recur's output copy of h1
    cdef void *py = cnp.PyArray_DATA(<cnp.ndarray>y)
    ws = _empty(1, fr_forward_ws_size(cc, 1, B, D, H, 1), 0, 0, typenum)
    cdef void *pws = cnp.PyArray_DATA(<cnp.ndarray>ws)
    if typenum == cnp.NPY_FLOAT:
        with nogil:
            fr_recur_f32(cc, 1, B, D, H, 0, B, 0, 1.0, NULL, <float*>px, <float*>pwi, <float*>ph,
                         <float*>pc, <float*>pwh, <float*>pbi, <float*>pbh, <float*>py, H,
                         <float*>ph1, <float*>pc1, <float*>pact, <float*>php, H, <float*>paux, <float*>pws)
    else:
        with nogil:
            fr_recur_f64(cc, 1, B, D, H, 0, B, 0, 1.0, NULL, <double*>px, <double*>pwi, <double*>ph,
                         <double*>pc, <double*>pwh, <double*>pbi, <double*>pbh, <double*>py, H,
                         <double*>ph1, <double*>pc1, <double*>pact, <double*>php, H, <double*>paux,
                         <double*>pws)
    if not train:
        return h1, c1, None
    return h1, c1, (x.reshape(1, B, D), (act, hprev, aux))


# ---- phases: the layer runs batch-row ranges of the time loop on several threads ------------

cdef inline bint _is_f64(object dtype):
    return (<cnp.dtype>dtype).type_num == cnp.NPY_DOUBLE  # dtype: from _float_dtype


cdef object _float_dtype(object a, str name):
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>a)
    if typenum != cnp.NPY_FLOAT and typenum != cnp.NPY_DOUBLE:
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
    return a.dtype


cdef int _check_rows(int b0, int b1, int B) except -1:
    if not 0 <= b0 < b1 <= B:
        raise ValueError(f"row range [{b0}, {b1}) must lie within [0, {B}) and be non-empty")
    return 0


def project(int cell, x, w_ih, act, bint defer=False):
    """act (T,B,G*H) = x (T,B,D) w_ih^T (recur() adds the biases)."""
    dtype = _float_dtype(x, "x")
    if x.ndim != 3 or act is None or act.ndim != 3:
        raise ValueError("x and act must be 3-D")
    cdef fr_cell c = <fr_cell>cell
    cdef int T = x.shape[0], B = x.shape[1], D = x.shape[2], G = fr_gates(c)
    cdef int H = act.shape[2] // G
    if H < 1 or act.shape[2] != G * H:
        raise ValueError(f"act must have a last dimension divisible by {G}, got {act.shape}")
    cdef void *px = _ptr(x, "x", (T, B, D), dtype)
    cdef void *pw = _ptr(w_ih, "w_ih", (G * H, D), dtype)
    cdef void *pa = _ptr(act, "act", (T, B, G * H), dtype)
    cdef job_t j
    j.kind, j.f64, j.c, j.T, j.B, j.D, j.H = J_PROJECT, _is_f64(dtype), c, T, B, D, H
    j.p[0], j.p[1], j.p[2] = px, pw, pa
    return _finish(&j, (x, w_ih, act), defer)


def dx_in_loop_pays(int cell, dtype, int T, int B, int D, int H):
    """Whether recur_backward should compute dx in its loop for B rows per call (one-direction
    layers), rather than backward_params' whole-sequence GEMM."""
    return bool(fr_dx_in_loop_pays(<fr_cell>cell, T, B, D, H, np.dtype(dtype).itemsize))


def fused_pays(int cell, dtype, int T, int B, int D, int H):
    """Whether recur's fused mode (x given: input projection inside the time loop) should beat
    project() + recur() for B rows per call."""
    return bool(fr_fused_pays(<fr_cell>cell, T, B, D, H, np.dtype(dtype).itemsize))


def recur(int cell, int b0, int b1, bint reverse, lengths, h0, c0, w_hh, b_ih, b_hh, y, int y_col,
          h_n, c_n, act, hprev, aux, double leak=1.0, x=None, w_ih=None, int h_col=0,
          bint defer=False):
    """Forward time loop for batch rows b0..b1-1; writes only those rows.

    Without x, act holds project()'s output. With x (T,B,D) and w_ih ("fused"), each step
    projects its own rows; act is then written in training and may be None in inference."""
    dtype = _float_dtype(y, "y")
    if not isinstance(y, np.ndarray) or y.ndim != 3:
        raise ValueError("y must be a 3-D (T, B, W) numpy array")
    if not isinstance(w_hh, np.ndarray) or w_hh.ndim != 2:
        raise ValueError("w_hh must be a 2-D numpy array")
    cdef fr_cell c = <fr_cell>cell
    cdef int T = y.shape[0], B = y.shape[1], H = w_hh.shape[1], G = fr_gates(c), A = fr_aux(c)
    cdef int D = 0
    cdef bint lstm = c == FR_LSTM
    cdef bint fused = x is not None
    _check_rows(b0, b1, B)
    _check_lengths(lengths, T, B)
    cdef int W = y.shape[2]
    if y_col < 0 or y_col + H > W:
        raise ValueError(f"y columns {y_col}..{y_col + H} out of range for width {W}")
    cdef void *px = NULL
    cdef void *pwi = NULL
    if fused:
        if not isinstance(x, np.ndarray) or x.ndim != 3:
            raise ValueError(f"x must be a (T={T}, B={B}, D) numpy array")
        D = x.shape[2]
        px = _ptr(x, "x", (T, B, D), dtype)
        pwi = _ptr(w_ih, "w_ih", (G * H, D), dtype)
    elif w_ih is not None:
        raise ValueError("w_ih is only used together with x (fused mode)")
    cdef void *ph0 = _ptr(h0, "h0", (B, H), dtype)
    cdef void *pc0 = _ptr(c0, "c0", (B, H), dtype) if lstm else NULL
    cdef void *pwh = _ptr(w_hh, "w_hh", (G * H, H), dtype)
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be given or both be None")
    cdef void *pbi = _ptr(b_ih, "b_ih", (G * H,), dtype, True)
    cdef void *pbh = _ptr(b_hh, "b_hh", (G * H,), dtype, True)
    cdef void *py = _ptr(y, "y", (T, B, W), dtype)
    cdef void *phn = _ptr(h_n, "h_n", (B, H), dtype)
    cdef void *pcn = _ptr(c_n, "c_n", (B, H), dtype) if lstm else NULL
    cdef void *pact = _ptr(act, "act", (T, B, G * H), dtype, fused and hprev is None)
    cdef int ldh = H
    cdef void *php = _cols(hprev, "hprev", T, B, h_col, H, dtype, &ldh, True)
    cdef void *paux = _ptr(aux, "aux", (T, B, A * H), dtype) if (A and hprev is not None) else NULL
    ws = _empty(1, fr_forward_ws_size(c, T, b1 - b0, D, H, fused), 0, 0, (<cnp.dtype>dtype).type_num)
    cdef void *pws = cnp.PyArray_DATA(<cnp.ndarray>ws)
    cdef const int *plen = <const int *>cnp.PyArray_DATA(<cnp.ndarray>lengths) if lengths is not None else NULL
    cdef job_t j
    j.kind, j.f64, j.c, j.T, j.B, j.D, j.H = J_RECUR, _is_f64(dtype), c, T, B, D, H
    j.b0, j.b1, j.reverse, j.leak, j.lengths, j.ld, j.ldh = b0, b1, reverse, leak, plen, W, ldh
    j.p[0], j.p[1], j.p[2], j.p[3], j.p[4], j.p[5], j.p[6] = px, pwi, ph0, pc0, pwh, pbi, pbh
    j.p[7] = <void*>((<char*>py) + y_col * <int>dtype.itemsize)
    j.p[8], j.p[9], j.p[10], j.p[11], j.p[12], j.p[13] = phn, pcn, pact, php, paux, pws
    return _finish(&j, (lengths, h0, c0, w_hh, b_ih, b_hh, y, h_n, c_n, act, hprev, aux, x, w_ih, ws),
                   defer)


def recur_backward(int cell, int b0, int b1, bint reverse, lengths, w_hh, act, hprev, aux,
                   dy, int dy_col, dh_n, dc_n, dh0, dc0, dgx, dgh, double leak=1.0, dhs=None,
                   dbias=None, int h_col=0, w_ih=None, dx=None, bint defer=False):
    """Reverse time loop for batch rows b0..b1-1; writes their rows of dgx/dgh, dh0, dc0, and
    with dbias (G*H, + H for GRU) these rows' share of the bias gradients (assigned).
    With dx (T,B,D) and w_ih, also these rows of dx (assigned; see dx_in_loop_pays): only for
    a layer with one direction, and backward_params must then be given dx=None."""
    dtype = _float_dtype(act, "act")
    if act.ndim != 3 or not isinstance(w_hh, np.ndarray) or w_hh.ndim != 2:
        raise ValueError("act must be 3-D and w_hh 2-D")
    cdef fr_cell c = <fr_cell>cell
    cdef int T = act.shape[0], B = act.shape[1], H = w_hh.shape[1], G = fr_gates(c), A = fr_aux(c)
    cdef int W = 0
    cdef bint lstm = c == FR_LSTM
    _check_rows(b0, b1, B)
    _check_lengths(lengths, T, B)
    if dy is not None:
        if not isinstance(dy, np.ndarray) or dy.ndim != 3 or dy.shape[:2] != (T, B):
            raise ValueError(f"dy must be a (T={T}, B={B}, W) numpy array")
        W = dy.shape[2]
        if dy_col < 0 or dy_col + H > W:
            raise ValueError(f"dy columns {dy_col}..{dy_col + H} out of range for width {W}")
    cdef void *pwh = _ptr(w_hh, "w_hh", (G * H, H), dtype)
    cdef void *pact = _ptr(act, "act", (T, B, G * H), dtype)
    cdef int ldh = H
    cdef void *php = _cols(hprev, "hprev", T, B, h_col, H, dtype, &ldh)
    cdef void *paux = _ptr(aux, "aux", (T, B, A * H), dtype) if A else NULL
    cdef void *pdy = _ptr(dy, "dy", (T, B, W), dtype, True)
    cdef void *pdhn = _ptr(dh_n, "dh_n", (B, H), dtype, True)
    cdef void *pdcn = _ptr(dc_n, "dc_n", (B, H), dtype, True) if lstm else NULL
    cdef void *pdh0 = _ptr(dh0, "dh0", (B, H), dtype)
    cdef void *pdc0 = _ptr(dc0, "dc0", (B, H), dtype) if lstm else NULL
    cdef void *pdgx = _ptr(dgx, "dgx", (T, B, G * H), dtype)
    cdef void *pdgh = _ptr(dgh, "dgh", (T, B, H), dtype) if c == FR_GRU else NULL
    cdef void *pdhs = _ptr(dhs, "dhs", (T, B, H), dtype, True)
    cdef void *pdb = _ptr(dbias, "dbias", (G * H + (H if c == FR_GRU else 0),), dtype, True)
    cdef int D = 0
    cdef void *pwi = NULL
    cdef void *pdx = NULL
    if dx is not None:
        if not isinstance(w_ih, np.ndarray) or w_ih.ndim != 2:
            raise ValueError("w_ih must be a 2-D numpy array (G*H, D) when dx is given")
        D = w_ih.shape[1]
        pwi = _ptr(w_ih, "w_ih", (G * H, D), dtype)
        pdx = _ptr(dx, "dx", (T, B, D), dtype)
    elif w_ih is not None:
        raise ValueError("w_ih is only used together with dx")
    ws = _empty(1, fr_backward_ws_size(c, T, b1 - b0, D, H), 0, 0, (<cnp.dtype>dtype).type_num)
    cdef void *pws = cnp.PyArray_DATA(<cnp.ndarray>ws)
    cdef const int *plen = <const int *>cnp.PyArray_DATA(<cnp.ndarray>lengths) if lengths is not None else NULL
    cdef int itemsize = dtype.itemsize
    if pdy != NULL:
        pdy = <void*>((<char*>pdy) + dy_col * itemsize)
    cdef job_t j
    j.kind, j.f64, j.c, j.T, j.B, j.D, j.H = J_RECUR_BWD, _is_f64(dtype), c, T, B, D, H
    j.b0, j.b1, j.reverse, j.leak, j.lengths, j.ld, j.ldh = b0, b1, reverse, leak, plen, W, ldh
    j.p[0], j.p[1], j.p[2], j.p[3], j.p[4] = pwh, pact, php, paux, pdy
    j.p[5], j.p[6], j.p[7], j.p[8], j.p[9], j.p[10] = pdhn, pdcn, pdh0, pdc0, pdgx, pdgh
    j.p[11], j.p[12], j.p[13], j.p[14], j.p[15] = pdhs, pdb, pws, pwi, pdx
    return _finish(&j, (lengths, w_hh, act, hprev, aux, dy, dh_n, dc_n, dh0, dc0, dgx, dgh, dhs,
                        dbias, ws, w_ih, dx), defer)


def backward_params(int cell, int g0, int g1, long r0, long r1, x, w_ih, hprev, dgx, dgh, dx,
                    bint accumulate_dx, dw_ih, dw_hh, db_ih, db_hh, int h_col=0, dwc=None,
                    bint defer=False):
    """Whole-sequence GEMMs after recur_backward(): rows g0..g1 of the parameter grads +=,
    rows r0..r1 (of T*B) of dx assigned/accumulated.

    x (T,B,W) holds the input in columns 0..D-1 (D = w_ih's columns) and hprev (T,B,W') the
    states in columns h_col..h_col+H-1. Passing the layer's [x | hprev] buffer as both, with
    h_col = D, and dwc (G*H, D+H) scratch lets one GEMM produce both weight gradients."""
    dtype = _float_dtype(x, "x")
    if x.ndim != 3 or not isinstance(w_ih, np.ndarray) or w_ih.ndim != 2 \
            or not isinstance(dw_hh, np.ndarray) or dw_hh.ndim != 2:
        raise ValueError("x must be 3-D, w_ih and dw_hh 2-D")
    cdef fr_cell c = <fr_cell>cell
    cdef int T = x.shape[0], B = x.shape[1], D = w_ih.shape[1], H = dw_hh.shape[1], G = fr_gates(c)
    cdef int ldx = D, ldh = H
    cdef void *px = _cols(x, "x", T, B, 0, D, dtype, &ldx)
    cdef void *pwi = _ptr(w_ih, "w_ih", (G * H, D), dtype)
    cdef void *php = _cols(hprev, "hprev", T, B, h_col, H, dtype, &ldh)
    cdef void *pdgx = _ptr(dgx, "dgx", (T, B, G * H), dtype)
    cdef void *pdgh = _ptr(dgh, "dgh", (T, B, H), dtype) if c == FR_GRU else NULL
    cdef void *pdx = _ptr(dx, "dx", (T, B, D), dtype, True)
    cdef void *pdwi = _ptr(dw_ih, "dw_ih", (G * H, D), dtype)
    cdef void *pdwh = _ptr(dw_hh, "dw_hh", (G * H, H), dtype)
    cdef void *pdbi = _ptr(db_ih, "db_ih", (G * H,), dtype, True)
    cdef void *pdbh = _ptr(db_hh, "db_hh", (G * H,), dtype, True)
    cdef void *pws = _ptr(dwc, "dwc", (G * H, D + H), dtype, True)
    if not (0 <= g0 <= g1 <= G * H and 0 <= r0 <= r1 <= <long>T * B):
        raise ValueError(f"ranges [{g0}, {g1}) and [{r0}, {r1}) must lie within [0, {G * H}) and [0, {T * B})")
    cdef job_t j
    j.kind, j.f64, j.c, j.T, j.B, j.D, j.H = J_PARAMS, _is_f64(dtype), c, T, B, D, H
    j.g0, j.g1, j.r0, j.r1, j.flag, j.ldx, j.ldh = g0, g1, r0, r1, accumulate_dx, ldx, ldh
    j.p[0], j.p[1], j.p[2], j.p[3], j.p[4], j.p[5] = px, pwi, php, pdgx, pdgh, pdx
    j.p[6], j.p[7], j.p[8], j.p[9], j.p[10] = pdwi, pdwh, pdbi, pdbh, pws
    return _finish(&j, (x, w_ih, hprev, dgx, dgh, dx, dw_ih, dw_hh, db_ih, db_hh, dwc), defer)
