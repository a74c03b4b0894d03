/* Instantiates the kernels of rnn_impl.h for float32 and float64; see fastrnn.h. */
#define _POSIX_C_SOURCE 200809L /* sched_yield under -std=c99 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include "fastrnn.h"
#include "smallgemm.h"
#if defined(__unix__) || defined(__APPLE__)
#include <sched.h>
#define FR_YIELD() sched_yield()
#else
#define FR_YIELD() ((void)0)
#endif

#include <time.h>

/* Task scheduling of fr_recur_units / fr_recur_backward_units (rnn_impl.h). Each step has two
 * tasks; sync[0] counts completed tasks, sync[1 + q] the steps of task q claimed so far, and
 * sync[3] is the "solo" flag. A task of step s may be claimed once all tasks of step s-1 are
 * complete; a thread never holds a claim while it waits, so when the other thread is
 * descheduled this one claims both tasks and carries on alone. A thread that waits longer than
 * FR_SOLO_WAIT for the other's task to finish sets solo: the machine is oversubscribed, and
 * from then on part 0 runs every task (part 1 leaves after its current one). */
#define FR_SOLO_WAIT 2e-4 /* seconds; a task normally takes about a microsecond */

static double fr_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 1 with the claimed task (*q) and step index (*idx), or 0: for part 0 once every task of the
 * T steps is complete, for part 1 also once solo is set. */
static int fr_claim(int *sync, int T, int part, int *q, int *idx)
{
    double waiting_since = 0;
    for (int spins = 0;; ++spins) {
        const int step = __atomic_load_n(&sync[0], __ATOMIC_ACQUIRE) / 2;
        if (step >= T) return 0;
        if (part != 0 && __atomic_load_n(&sync[3], __ATOMIC_ACQUIRE)) return 0;
        for (int k = 0; k < 2; ++k) {
            const int t = k ^ (part & 1); /* its own task first: that task's W_hh rows are in
                                             this core's cache */
            int expect = step;
            if (__atomic_load_n(&sync[1 + t], __ATOMIC_RELAXED) == step
                && __atomic_compare_exchange_n(&sync[1 + t], &expect, step + 1, 0,
                                               __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
                *q = t;
                *idx = step;
                return 1;
            }
        }
        if (spins < 1000) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
            continue;
        }
        const double now = fr_now();
        if (waiting_since == 0) waiting_since = now;
        else if (now - waiting_since > FR_SOLO_WAIT) __atomic_store_n(&sync[3], 1, __ATOMIC_RELEASE);
        FR_YIELD();
    }
}

static void fr_task_done(int *sync) { __atomic_add_fetch(&sync[0], 1, __ATOMIC_RELEASE); }

/* The pointwise gate loops are compiled twice, for AVX2 and for the baseline ISA, and picked at
 * load time: a portable build still runs them 8 floats wide where the CPU allows. With
 * -ffp-contract=off both clones round identically, so results do not depend on the CPU. */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif
#define RS restrict

int fr_gates(fr_cell cell) { return cell == FR_LSTM ? 4 : cell == FR_GRU ? 3 : 1; }
int fr_aux(fr_cell cell) { return cell == FR_LSTM ? 2 : cell == FR_GRU ? 1 : 0; }

long fr_forward_ws_size(fr_cell cell, int T, int B, int D, int H, int fused)
{
    const int GH = fr_gates(cell) * H;
    const int pack = T >= FR_PACK_MIN_STEPS;
    return (long)B * GH + 2L * B * H + (long)fr_aux(cell) * H + GH + H
           + (pack ? fr_packed_size(GH, H) : 0)
           + (fused ? (long)B * GH + (long)B * D + (pack ? fr_packed_size(GH, D) : 0) : 0);
}

int fr_fused_pays(fr_cell cell, int T, int B, int D, int H, int itemsize)
{
    const long bytes = (fr_packed_size(fr_gates(cell) * H, H) + fr_packed_size(fr_gates(cell) * H, D)) * 4L;
    return itemsize == 4 && fr_smallgemm_ok() && T >= FR_PACK_MIN_STEPS && B >= FR_PACK_MIN_ROWS
           && FR_FUSED_ROWS(B, D, H) && bytes <= FR_FUSED_MAX_BYTES;
}

long fr_backward_ws_size(fr_cell cell, int T, int B, int D, int H)
{
    const int GH = fr_gates(cell) * H;
    return 3L * B * H + (long)B * GH
           + (T >= FR_PACK_MIN_STEPS ? fr_packed_size(H, GH) + fr_packed_size(D, GH) : 0);
}

int fr_dx_in_loop_pays(fr_cell cell, int T, int B, int D, int H, int itemsize)
{
    /* float32 with the micro-kernel only: through BLAS, T small products lose to one big one.
     * A narrow input wastes most of a 16-column panel (D = 1: 15/16), where the whole-sequence
     * product is a cheap GEMV. Each step streams the packed W_hh and W_ih: beyond a few MB
     * (LSTM and GRU at the large benchmark shape, 4.5-6 MB) measured 0-5% slower, while 1.5 MB
     * (RNN there) and less (the medium shape) gained 2-4%. */
    const int GH = fr_gates(cell) * H;
    const long bytes = (fr_packed_size(H, GH) + fr_packed_size(D, GH)) * 4L;
    return itemsize == 4 && fr_smallgemm_ok() && T >= FR_PACK_MIN_STEPS && FR_PACK_OK_ROWS(B)
           && D >= FR_NR && bytes <= FR_DX_LOOP_MAX_BYTES;
}

void fr_set_num_threads(int n) { scipy_openblas_set_num_threads(n); }
int fr_get_num_threads(void) { return scipy_openblas_get_num_threads(); }

/* float32 exp without libm calls, so the gate loops vectorise. Range reduction x = n ln2 + r,
 * |r| <= ln2/2, then a degree-7 Taylor polynomial (truncation < 6e-9 relative, below float32's
 * rounding) and 2^n assembled in the exponent bits. Rounding to n uses the 1.5*2^23 trick instead
 * of floorf, which SSE2/AVX2 would otherwise call out of line.
 * Latency, not throughput, limits the LSTM gate loop (five exps and five divisions chained in
 * each iteration), so the clamp is written as the min/max GCC maps to single instructions (NaN
 * still passes through: the comparison is false and x is kept) and the polynomial is evaluated
 * in Estrin's scheme, depth 4 instead of Horner's 7. */
static inline float fr_expf(float x)
{
    const float shift = 12582912.0f; /* 1.5 * 2^23 */
    x = 88.0f < x ? 88.0f : x;
    x = -87.0f > x ? -87.0f : x;
    float t = x * 1.44269504088896341f + shift;
    float n = t - shift;
    float r = x - n * 0.693359375f - n * -2.12194440e-4f;
    float r2 = r * r, r4 = r2 * r2;
    float p01 = 1.0f + r, p23 = 0.5f + r * (1.0f / 6), p45 = 1.0f / 24 + r * (1.0f / 120),
          p67 = 1.0f / 720 + r * (1.0f / 5040);
    float p = (p01 + r2 * p23) + r4 * (p45 + r2 * p67);
    int32_t ti, ni;
    memcpy(&ti, &t, 4);
    ni = (ti - 0x4B400000 + 127) << 23; /* bits of t minus bits of shift = n */
    float scale;
    memcpy(&scale, &ni, 4);
    return p * scale;
}

/* tanh through exp of -2|x|: the absolute error stays at float32 rounding for all x (relative
 * accuracy near 0 is lower, which no gate uses). */
static inline float fr_tanhf(float x)
{
    float e = fr_expf(-2.0f * fabsf(x));
    return copysignf((1.0f - e) / (1.0f + e), x);
}

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
#define GATES_LSTM_FAST fr_lstm_row8
#define GATES_GRU_FAST fr_gru_row8
#define GATES_RNN_TANH_FAST fr_rnn_tanh_row8
#define STEP_PACK_NN_UNITS fr_pack_nn_units
#define STEP_GEMV_NT fr_gemv_rows
#include "rnn_impl.h"

/* float64 versions of the same idea: |r| <= ln2/2 and a degree-12 Taylor polynomial (truncation
 * below 2e-16 relative), ln2 split in two parts for an exact reduction, 2^n built in the
 * exponent bits, rounding by the 1.5*2^52 trick. Within a few ulp of libm, and vectorisable. */
static inline double fr_exp(double x)
{
    const double shift = 6755399441055744.0; /* 1.5 * 2^52 */
    x = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
    double t = x * 1.4426950408889634074 + shift;
    double n = t - shift;
    double r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
    double p = 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    int64_t ti, ni;
    memcpy(&ti, &t, 8);
    ni = (ti - 0x4338000000000000LL + 1023) << 52; /* bits of t minus bits of shift = n */
    double scale;
    memcpy(&scale, &ni, 8);
    return p * scale;
}

static inline double fr_tanh(double x)
{
    double e = fr_exp(-2.0 * fabs(x));
    return copysign((1.0 - e) / (1.0 + e), x);
}

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
#define GATES_LSTM_FAST(...) ((void)0)
#define GATES_GRU_FAST(...) ((void)0)
#define GATES_RNN_TANH_FAST(...) ((void)0)
#define STEP_PACK_NN_UNITS(G, H, u0, nu, N, W, P) ((void)(P))
#define STEP_GEMV_NT(N, K, W, ldw, v, y) ((void)(y))
#include "rnn_impl.h"
