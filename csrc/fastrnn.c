/* Instantiates the cell table (cells.h) and the time loops (loops.h) for float32 and float64,
 * and dispatches each call of fastrnn.h to its dtype's instance. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include "fastrnn.h"
#include "pool.h"
#include "smallgemm.h"
#include "gates_avx2.h"
#include "vmath.h"

/* The pointwise gate loops are compiled twice, for AVX2 and for the baseline ISA, and picked at
 * load time: a portable build still runs them 8 floats wide where the CPU allows. With
 * -ffp-contract=off both clones round identically, so results do not depend on the CPU. */
/* target_clones is resolved by an ifunc, which only glibc's loader runs (musl, macOS and Windows
 * have none): elsewhere the loops are compiled once, for the baseline ISA. */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && defined(__GLIBC__)
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif
#if defined(_MSC_VER) && !defined(__clang__)
#define RS __restrict /* MSVC knows C99's restrict only under /std:c11 */
#else
#define RS restrict
#endif

#define REAL float
#define SFX(name) name##_f32
#define GEMM scipy_cblas_sgemm
#define GEMV scipy_cblas_sgemv
#define EXP fr_expf
#define TANH fr_tanhf
#define STEP_FAST() fr_smallgemm_ok()
#define STEP_PACK_NT fr_pack_nt
#define STEP_PACK_NN fr_pack_nn
#define STEP_MM fr_smallgemm
#define STEP_PACK_NT_UNITS fr_pack_nt_units
#define STEP_PACK_NN_UNITS fr_pack_nn_units
#define STEP_GEMV_NT fr_gemv_rows
#define GATES_LSTM_FAST fr_lstm_row8
#define GATES_LSTMP_FAST fr_lstmp_row8
#define GATES_GRU_FAST fr_gru_row8
#define GATES_RNN_TANH_FAST fr_rnn_tanh_row8
#define LN_SUM_FAST fr_ln_sum8
#define LN_SQDEV_FAST fr_ln_sqdev8
#define LN_DOT_FAST fr_ln_dot8
#define LN_BWD_FAST fr_ln_bwd8
#define LN_BWD2_FAST fr_ln_bwd2_8
#define LN_SUM2_FAST fr_ln_sum2_8
#define LN_SQDEV2_FAST fr_ln_sqdev2_8
#include "cells.h"
#include "loops.h"

#define REAL double
#define SFX(name) name##_f64
#define GEMM scipy_cblas_dgemm
#define GEMV scipy_cblas_dgemv
#define EXP fr_exp
#define TANH fr_tanh
#define STEP_FAST() 0
#define STEP_PACK_NT(N, K, W, P) ((void)(P))
#define STEP_PACK_NN(N, K, W, P) ((void)(P))
#define STEP_MM(M, N, K, A, lda, P, acc, C, ldc) ((void)(N), (void)(C))
#define STEP_PACK_NT_UNITS(G, H, u0, nu, K, W, P) ((void)(P))
#define STEP_PACK_NN_UNITS(G, H, u0, nu, N, W, P) ((void)(P))
#define STEP_GEMV_NT(N, K, W, ldw, v, y) ((void)(y))
#define GATES_LSTM_FAST(...) ((void)0)
#define GATES_LSTMP_FAST(...) ((void)0)
#define GATES_GRU_FAST(...) ((void)0)
#define GATES_RNN_TANH_FAST(...) ((void)0)
#define LN_SUM_FAST(n, v) ((void)(n), (void)(v), 0.0)
#define LN_SQDEV_FAST(n, v, m) ((void)(n), (void)(v), (void)(m), 0.0)
#define LN_DOT_FAST(n, u, v) ((void)(n), (void)(u), (void)(v), 0.0)
#define LN_BWD_FAST(n, gin, gout, xh, r, gam, dgam, dbet) ((void)(gout))
#define LN_BWD2_FAST(n, g, gh, xx, xh, rx, rh, gamx, gamh, dgx, dgh, dbet) ((void)(g))
#define LN_SUM2_FAST(n, u, v, s) ((void)(s))
#define LN_SQDEV2_FAST(n, u, mu, v, mv, s) ((void)(s))
#include "cells.h"
#include "loops.h"

/* Both instances of the table share their sizes: they come from one source line per kind. */
int fr_num_cells(void) { return FR_NUM_CELLS; }
fr_cell_sizes fr_cell_info(fr_cell cell) { return cells_f32[cell].n; }
int fr_gates(fr_cell cell) { return cells_f32[cell].n.gates; }

/* Subnormal numbers (below 1.2e-38 in float32) take a microcode assist on many x86 cores, up to
 * 100x the time of a normal operation (oneDNN#561), and a decaying state walks right into them.
 * Every kernel entry runs with flush-to-zero and denormals-are-zero on its thread (the caller's
 * or a pool worker's; BLAS runs single-threaded on the same thread) and puts the thread's mode
 * back on return, so Python and NumPy around the call keep IEEE subnormals. Flushing changes a
 * value by less than 1.2e-38 (2.3e-308 in float64), far below any tolerance promised here. */
#if defined(__SSE2__) || defined(_M_X64)
#include <xmmintrin.h>
typedef unsigned int fr_fpmode;
#define FR_FTZ_DAZ 0x8040u /* MXCSR bit 15 flush-to-zero, bit 6 denormals-are-zero */
static inline fr_fpmode fr_ftz_enter(void)
{
    const fr_fpmode old = _mm_getcsr();
    _mm_setcsr(old | FR_FTZ_DAZ);
    return old;
}
static inline void fr_ftz_leave(fr_fpmode old) { _mm_setcsr(old); }
#elif defined(__aarch64__) && defined(__GNUC__)
typedef uint64_t fr_fpmode;
static inline fr_fpmode fr_ftz_enter(void)
{
    uint64_t old;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(old));
    __asm__ __volatile__("msr fpcr, %0" : : "r"(old | ((uint64_t)1 << 24))); /* FPCR.FZ */
    return old;
}
static inline void fr_ftz_leave(fr_fpmode old) { __asm__ __volatile__("msr fpcr, %0" : : "r"(old)); }
#else
typedef int fr_fpmode; /* no known switch: IEEE subnormals, correct but possibly slow */
static inline fr_fpmode fr_ftz_enter(void) { return 0; }
static inline void fr_ftz_leave(fr_fpmode old) { (void)old; }
#endif

int fr_flushes_subnormals(void)
{
#if defined(__SSE2__) || defined(_M_X64) || (defined(__aarch64__) && defined(__GNUC__))
    return 1;
#else
    return 0;
#endif
}

#define FR_DISPATCH(NAME, ARGS)                                                                   \
    void NAME(const ARGS *a)                                                                      \
    {                                                                                             \
        const fr_fpmode mode = fr_ftz_enter();                                                    \
        if (a->dtype == FR_F64) NAME##_f64(a);                                                    \
        else NAME##_f32(a);                                                                       \
        fr_ftz_leave(mode);                                                                       \
    }
FR_DISPATCH(fr_project, fr_project_args)
FR_DISPATCH(fr_recur, fr_recur_args)
FR_DISPATCH(fr_recur_backward, fr_recur_backward_args)
FR_DISPATCH(fr_backward_params, fr_params_args)
FR_DISPATCH(fr_recur_units, fr_units_args)
FR_DISPATCH(fr_recur_backward_units, fr_units_backward_args)
FR_DISPATCH(fr_cell_units, fr_cell_units_args)
#undef FR_DISPATCH

ptrdiff_t fr_units_shared_size(fr_cell cell, fr_dtype dtype, int T, int H, int mid, int backward)
{
    return dtype == FR_F64 ? units_shared_size_f64(cell, T, H, mid, backward)
                           : units_shared_size_f32(cell, T, H, mid, backward);
}

void fr_bernoulli(fr_dtype dtype, void *out, ptrdiff_t n, uint64_t seed, double p, double scale)
{
    if (dtype == FR_F64) fr_bernoulli_f64(out, n, seed, p, scale);
    else fr_bernoulli_f32(out, n, seed, p, scale);
}

void fr_job_run(const fr_job *j)
{
    switch (j->kind) {
    case FR_JOB_PROJECT: fr_project(&j->u.project); break;
    case FR_JOB_RECUR: fr_recur(&j->u.recur); break;
    case FR_JOB_RECUR_BACKWARD: fr_recur_backward(&j->u.recur_backward); break;
    case FR_JOB_PARAMS: fr_backward_params(&j->u.params); break;
    case FR_JOB_UNITS: fr_recur_units(&j->u.units); break;
    case FR_JOB_UNITS_BACKWARD: fr_recur_backward_units(&j->u.units_backward); break;
    case FR_JOB_CELL_UNITS: fr_cell_units(&j->u.cell_units); break;
    }
}

void fr_set_num_threads(int n) { scipy_openblas_set_num_threads(n); }
int fr_get_num_threads(void) { return scipy_openblas_get_num_threads(); }
