# The C contract (csrc/fastrnn.h, csrc/pool.h) as Cython sees it: one struct of named fields per
# kernel call, a job as a tagged union of them. Shapes and rules are documented in fastrnn.h.
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport int64_t, uint64_t

cdef extern from "fastrnn.h" nogil:
    ctypedef int fr_cell
    ctypedef enum fr_dtype:
        FR_F32
        FR_F64
    ctypedef struct fr_cell_sizes:
        int gates, aux, states, shared
    int fr_num_cells()
    fr_cell_sizes fr_cell_info(fr_cell cell)

    ctypedef struct fr_project_args:
        fr_cell cell
        fr_dtype dtype
        int T, B, D, H
        const void *x
        const void *w_ih
        void *act
    ctypedef struct fr_recur_args:
        fr_cell cell
        fr_dtype dtype
        int T, B, D, H, b0, b1, reverse
        double leak
        const int *lengths
        const void *x
        const void *w_ih
        const void *h0
        const void *c0
        const void *w_hh
        const void *b_ih
        const void *b_hh
        void *y
        int ldy
        void *h_n
        void *c_n
        void *act
        void *hprev
        int ldh
        void *aux
        const void *hmask
        void *hdrop
        int ldd
        const void *zh
        const void *zc
        const void *peep
        const void *ln
        void *lnsave
        void *ws
        int P
        const void *w_hr
        void *hcell
        void *pws
    ctypedef struct fr_recur_backward_args:
        fr_cell cell
        fr_dtype dtype
        int T, B, D, H, b0, b1, reverse
        double leak
        const int *lengths
        const void *w_hh
        const void *act
        const void *hprev
        int ldh
        const void *aux
        const void *dy
        int ldy
        const void *dh_n
        const void *dc_n
        void *dh0
        void *dc0
        void *dgx
        void *dgh
        void *dhs
        void *dbias
        const void *w_ih
        void *dx
        const void *hmask
        const void *zh
        const void *zc
        const void *peep
        void *dpeep
        const void *ln
        const void *lnsave
        void *dln
        void *ws
        int P
        const void *w_hr
        void *pws
    ctypedef struct fr_params_args:
        fr_cell cell
        fr_dtype dtype
        int T, B, D, H, g0, g1
        ptrdiff_t r0, r1
        const int *lengths
        const void *x
        int ldx
        const void *w_ih
        const void *hprev
        int ldh
        const void *dgx
        const void *dgh
        void *dx
        int accumulate_dx
        void *dw_ih
        void *dw_hh
        void *db_ih
        void *db_hh
        void *ws
        int ln
        int P
        const void *dhs
        const void *hcell
        void *dw_hr
    ctypedef struct fr_units_args:
        fr_cell cell
        fr_dtype dtype
        int T, H, mid, part, reverse
        double leak
        const void *h0
        const void *c0
        const void *w_hh
        const void *b_ih
        const void *b_hh
        void *y
        int ldy
        void *h_n
        void *c_n
        void *act
        void *hprev
        int ldh
        void *aux
        const void *peep
        int *sync
        void *shared
    ctypedef struct fr_units_backward_args:
        fr_cell cell
        fr_dtype dtype
        int T, H, mid, part, reverse
        double leak
        const void *w_hh
        const void *act
        const void *hprev
        int ldh
        const void *aux
        const void *dy
        int ldy
        const void *dh_n
        const void *dc_n
        void *dh0
        void *dc0
        void *dgx
        void *dgh
        void *dhs
        void *dbias
        const void *peep
        void *dpeep
        int *sync
        void *shared
    ctypedef struct fr_cell_units_args:
        fr_cell cell
        fr_dtype dtype
        int B, D, H, u0, nu
        const void *x
        const void *h
        const void *c
        const void *w_ih
        const void *w_hh
        const void *b_ih
        const void *b_hh
        const void *peep
        void *h1
        void *c1
        void *act
        void *hprev
        void *aux
        void *ws

    ctypedef enum fr_job_kind:
        FR_JOB_PROJECT
        FR_JOB_RECUR
        FR_JOB_RECUR_BACKWARD
        FR_JOB_PARAMS
        FR_JOB_UNITS
        FR_JOB_UNITS_BACKWARD
        FR_JOB_CELL_UNITS
    ctypedef union fr_job_args:
        fr_project_args project
        fr_recur_args recur
        fr_recur_backward_args recur_backward
        fr_params_args params
        fr_units_args units
        fr_units_backward_args units_backward
        fr_cell_units_args cell_units
    ctypedef struct fr_job:
        fr_job_kind kind
        fr_job_args u

    void fr_recur(const fr_recur_args *a)
    void fr_job_run(const fr_job *job)

    ptrdiff_t fr_forward_ws_size(fr_cell cell, int T, int B, int D, int H, int fused)
    ptrdiff_t fr_backward_ws_size(fr_cell cell, int T, int B, int D, int H)
    ptrdiff_t fr_units_shared_size(fr_cell cell, fr_dtype dtype, int T, int H, int mid, int backward)
    ptrdiff_t fr_cell_units_ws_size(fr_cell cell, int B, int nu)
    ptrdiff_t fr_proj_ws_size(int B, int H, int P)

    ctypedef struct fr_plan_knobs:
        int fused, units, dx_in_loop
        int64_t min_parallel_work, unit_min_work, cell_split_work
        int64_t fused_max_bytes, dx_loop_max_bytes, gemv_max_elems
        int wave
        int64_t wave_round_work, wave_chunk, tile_rows
    fr_plan_knobs fr_plan_get_knobs()
    void fr_plan_set_knobs(const fr_plan_knobs *k)
    int fr_plan_parts(int64_t work, int64_t limit, int nthreads)
    int fr_plan_row_ranges(fr_cell cell, int T, int B, int H, int dirs, int nthreads)
    enum: FR_UNITS_MAX_STEPS
    int fr_plan_units_mid(fr_cell cell, int T, int B, int H, int dirs, int has_lengths, int variants,
                          int nthreads)
    int fr_plan_wave_chunks(fr_cell cell, int T, int B, int D, int H, int layers, int dirs,
                            int has_lengths, int variants, int nthreads, int *row_ranges)
    int fr_plan_wave_backward_chunks(fr_cell cell, int T, int B, int D, int H, int layers, int fill)
    int fr_plan_cell_mid(fr_cell cell, int B, int D, int H, int variants, int nthreads)
    int fr_fused_pays(fr_cell cell, int T, int B, int D, int H, fr_dtype dtype)
    int fr_dx_in_loop_pays(fr_cell cell, int T, int B, int D, int H, fr_dtype dtype)

    void fr_bernoulli(fr_dtype dtype, void *out, ptrdiff_t n, uint64_t seed, double p, double scale) nogil
    int fr_flushes_subnormals() nogil

    ctypedef struct fr_tensor:
        void *param
        void *grad
        void *s0
        void *s1
        void *s2
        ptrdiff_t n
    ctypedef enum fr_opt_kind:
        FR_OPT_SGD, FR_OPT_ADAM, FR_OPT_RMSPROP
    ctypedef struct fr_optim_args:
        fr_dtype dtype
        fr_opt_kind kind
        int ntensors
        const fr_tensor *t
        double clipvalue, grad_scale, lr, weight_decay
        int decoupled
        double momentum
        int nesterov
        double beta1, beta2, eps, bc1, bc2, rho
        int centered
    double fr_optim_sumsq(const fr_optim_args *a) nogil
    void fr_optim_step(const fr_optim_args *a) nogil
    void fr_set_num_threads(int n)
    int fr_get_num_threads()

cdef extern from "pool.h" nogil:
    enum: FR_MAX_THREADS
    void fr_pool_prepare()
    void fr_pool_run(int nthreads, int njobs, const fr_job *const *jobs)
    void fr_pool_shutdown()
