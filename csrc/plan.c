/*
 * Every "does this pay" decision of fastrnn, with its threshold and the measurement behind it,
 * and every workspace size: the loops (loops.h) and the bridge (_core.pyx) ask here, so a
 * threshold exists once. The numbers were measured on the 2-core AMD machines this project runs
 * on (Zen 1-class and Zen 3); per-machine tuning changes only this file.
 */
#include <stdlib.h>
#include <math.h>
#include "fastrnn.h"
/* plan.c reads only the packing layout (fr_packed_size, FR_NR) and the CPU check from here, not
 * the kernels, which are static to each file that includes them */
#pragma GCC diagnostic ignored "-Wunused-function"
#include "smallgemm.h"

/* Packing W once per sequence costs about one step's product: shorter sequences (a streaming
 * cell's single step) go to BLAS, which packs only what one call needs. */
#define FR_PACK_MIN_STEPS 4
/* Two or three rows have too few independent accumulators to hide the FMA latency and go to
 * BLAS. One row (a batch of one: streaming) has its own kernel, which reads four panels at once. */
#define FR_PACK_MIN_ROWS 4
/* The input projection moves into the time loop (fr_recur's fused mode) while the packed W_ih
 * and W_hh fit in a share of L3: each step reuses them from cache, and the (T,B,G*H) projection
 * never makes a round trip through memory (measured 5-20% faster from tiny to large shapes).
 * With few rows and a wide input, a step reuses its slice of W_ih too little to beat one big
 * GEMM (4 rows, D = 8H: 4% slower), so that case keeps the whole-sequence projection. */
#define FR_FUSED_MAX_BYTES ((int64_t)8 << 20) /* the default; the knob fused_max_bytes */
/* dx in the reverse loop: each step streams the packed W_hh and W_ih; beyond a few MB (LSTM and
 * GRU at the large benchmark shape, 4.5-6 MB) measured 0-5% slower, while 1.5 MB (RNN there)
 * and less (the medium shape) gained 2-4%. */
#define FR_DX_LOOP_MAX_BYTES ((int64_t)2 << 20) /* the default; the knob dx_loop_max_bytes */
/* Beyond 1 MB of W a B=1 product is memory-bound: BLAS may thread it, fr_gemv_rows does not. */
#define FR_GEMV_MAX_ELEMS ((int64_t)1 << 18) /* the default; the knob gemv_max_elems */

/* A worker polls for the next dispatch, and the caller for completion, this long before
 * sleeping: about the Python time between the hand-offs of a forward and backward pass. */
const double fr_pool_spin_seconds = 5e-5;
/* A unit task normally takes about a microsecond; waiting this long for the other one means the
 * machine is oversubscribed (pool.c, fr_claim). */
const double fr_solo_wait_seconds = 2e-4;

static fr_plan_knobs knobs = {
    -1, -1, -1,
    /* Below this many multiply-adds a split costs more in hand-offs than it saves (measured with
     * the C pool: 0.25M-0.75M slower split by 6-15%, 0.8M-1.3M faster by 9-16%). */
    (int64_t)1 << 20,
    /* A batch-of-one step splits by units from G*H*H = 16K multiply-adds (LSTM at H = 64). */
    (int64_t)1 << 14,
    /* A cell step of at least this many multiply-adds per row is split over two threads by
     * hidden units; below it the hand-over costs more than half the step. */
    (int64_t)1 << 16,
    /* The cache-size thresholds above, until fastrnn/tuning.py derives them from this CPU's
     * caches (at import) or a tuning cache sets them. */
    FR_FUSED_MAX_BYTES, FR_DX_LOOP_MAX_BYTES, FR_GEMV_MAX_ELEMS,
    -1,
    /* What one wavefront round costs beyond its work, in multiply-adds: making its jobs in
     * Python, packing each loop's weights again, the hand-off to the pool and the wait for its
     * slowest job: 40-100 us measured, at the 25-40 G multiply-adds/s of a batch-of-one step
     * with its projection (H = 48-128, AVX-512 Zen 3). The time is flat around the optimum
     * (2-layer LSTM and GRU at B = 1: 1.14-1.38x from 5 to 12 chunks). */
    (int64_t)1 << 21,
    0,
    /* Rows per micro-kernel tile: 6 keeps 12 accumulators, two panel registers and a broadcast
     * in AVX2's 16 (6 x 16 columns: 0.67 loads per FMA, 4 rows: 0.75). Each element is the
     * same sum in the same order whatever the tile, so the choice changes speed, not results;
     * tune() times 4, 5 and 6 on this CPU. */
    FR_MR,
};
/* tile_rows for the kernels, which run on the pool's threads while Python may set the knobs:
 * its own word, read and written atomically (the knobs struct is read under the GIL only) */
static int tile_rows_now = FR_MR;

/* a * b for non-negative a, b, saturating at INT64_MAX: work estimates multiply several
 * dimensions, whose product can exceed 64 bits for shapes no one would run but the bridge
 * accepts (each factor fits in an int) */
static int64_t mul_sat(int64_t a, int64_t b)
{
    if (a <= 0 || b <= 0) return 0;
    return a > INT64_MAX / b ? INT64_MAX : a * b;
}

fr_plan_knobs fr_plan_get_knobs(void) { return knobs; }
void fr_plan_set_knobs(const fr_plan_knobs *k)
{
    knobs = *k;
    const int rows = k->tile_rows >= 4 && k->tile_rows <= FR_MR ? (int)k->tile_rows : FR_MR;
#if defined(__GNUC__)
    __atomic_store_n(&tile_rows_now, rows, __ATOMIC_RELAXED);
#else
    tile_rows_now = rows; /* MSVC: an aligned int is written whole; the kernels are GCC/clang only */
#endif
}

int fr_plan_tile_rows(void)
{
#if defined(__GNUC__)
    return __atomic_load_n(&tile_rows_now, __ATOMIC_RELAXED);
#else
    return tile_rows_now;
#endif
}

int fr_pack_pays(int steps, int rows)
{
    return steps >= FR_PACK_MIN_STEPS && (rows == 1 || rows >= FR_PACK_MIN_ROWS);
}

int fr_gemv_rows_pays(int N, int K) { return (int64_t)N * K <= knobs.gemv_max_elems; }

int fr_plan_parts(int64_t work, int64_t limit, int nthreads)
{
    if (nthreads <= 1 || limit <= 1 || work < knobs.min_parallel_work) return 1;
    return (int64_t)nthreads < limit ? nthreads : (int)limit;
}

int fr_plan_row_ranges(fr_cell cell, int T, int B, int H, int dirs, int nthreads)
{
    const int64_t work = mul_sat(mul_sat((int64_t)T * B, (int64_t)fr_gates(cell) * H), H);
    const int n = fr_plan_parts(work, (int64_t)B * dirs, nthreads) / dirs;
    return n > 1 ? n : 1;
}

/* Where two unit ranges meet: the multiple of 8 nearest H/2 (8-unit blocks keep the gate loops
 * vectorised), half-way cases to an even number of blocks. A batch of one's backward sums the
 * two tasks' products at this point, so moving it changes the rounding of dh. */
static int unit_mid(int H)
{
    int q = H / 16;
    const int r = H % 16;
    if (r > 8 || (r == 8 && (q & 1))) q += 1;
    const int mid = q * 8;
    return mid < 1 ? 1 : mid > H - 1 ? H - 1 : mid;
}

int fr_plan_units_mid(fr_cell cell, int T, int B, int H, int dirs, int has_lengths, int variants,
                      int nthreads)
{
    /* T <= FR_UNITS_MAX_STEPS: the unit tasks count 2*T completed tasks in an int (pool.c).
     * Recurrent dropout and zoneout live in the row loops only: a batch of one with them runs
     * there as one row range (the split gains only on batches of one, which such training
     * rarely uses). Layer norm too: it normalises over a whole row's G*H units, which no unit
     * task sees. `variants` is non-zero when any of them is on. */
    int ok = B == 1 && dirs == 1 && !has_lengths && !variants && H >= 2 && nthreads >= 2
             && T <= FR_UNITS_MAX_STEPS;
    if (knobs.units >= 0) ok = ok && knobs.units;
    else ok = ok && T >= 4 && mul_sat((int64_t)fr_gates(cell) * H, H) >= knobs.unit_min_work;
    return ok ? unit_mid(H) : 0;
}

/* The wavefront's chunks for a round overhead o (multiply-adds) and E rounds of pipeline fill:
 * n chunks take n + E rounds of T/n steps of `step` multiply-adds plus o each, and
 * (n + E)(T step / n + o) is least at n = sqrt(E T step / o); within 1..maxn (4-step chunks). */
static int wave_n(int T, int64_t step, int64_t fill, double o, int maxn)
{
    int64_t n;
    if (knobs.wave_chunk > 0) { /* the test override: forward and backward alike */
        n = T / knobs.wave_chunk + (T % knobs.wave_chunk != 0); /* no overflow for any knob */
    } else {
        const double best = sqrt((double)fill * (double)T * (double)step / (o > 1.0 ? o : 1.0));
        n = best >= (double)maxn ? maxn : (int64_t)(best + 0.5);
    }
    return n > maxn ? maxn : (n < 1 ? 1 : (int)n);
}

/* one step of the heaviest layer: layers above the first read H (or P <= H) inputs */
static int64_t wave_step(fr_cell cell, int B, int D, int H)
{
    return mul_sat(mul_sat((int64_t)fr_gates(cell) * H, (int64_t)H + (D > H ? D : H)), B);
}

static int wave_maxn(int T) { return T / FR_PACK_MIN_STEPS > 1 ? T / FR_PACK_MIN_STEPS : 1; }

int fr_plan_wave_chunks(fr_cell cell, int T, int B, int D, int H, int layers, int dirs,
                        int has_lengths, int variants, int nthreads, int *row_ranges)
{
    /* each layer's share of the threads splits its chunk by rows, as a layer of its own would */
    const int per_layer = nthreads / layers > 1 ? nthreads / layers : 1;
    *row_ranges = fr_plan_row_ranges(cell, T, B, H, 1, per_layer);
    if (layers < 2 || dirs != 1 || has_lengths || knobs.wave == 0) return 0;
    /* chunks of at least FR_PACK_MIN_STEPS steps: each call then packs (or not) as the whole
     * loop would, so the chunked loop rounds exactly as the whole one */
    const int maxn = wave_maxn(T);
    const int64_t step = wave_step(cell, B, D, H);
    if (knobs.wave < 0) {
        /* Layer by layer already keeps every thread busy when the rows fill them (row ranges
         * never wait for each other), and a batch of one whose steps split by units keeps two:
         * there the wavefront measured 0.78-0.97x (2-layer LSTM and GRU, T = 1000, H = 128; the
         * unit split runs at 1.66x of one thread, the wavefront adds its pipeline's fill and a
         * hand-off per round). It pays where each layer would run on one thread (B = 1,
         * inference): 1.16-1.26x with zoneout at H = 128 (T = 1000; T = 200: 1.05x), 1.16-1.28x
         * for 3 layers with layer norm, 1.28-1.35x at H = 48 (T = 4000), 1.09-1.16x at H = 32
         * (T = 1000). Too little work pays for no split at all. The backward follows the
         * forward's choice (fr_plan_wave_backward_chunks): a training step of the same stacks,
         * both passes as wavefronts, measured 1.2-1.5x of layer by layer at B = 1 (2-layer LSTM
         * and GRU, H = 48, T = 1000 and 4000; LSTM, H = 128 with zoneout or layer norm;
         * bench/wave_backward.py), 1.17-1.37x of the forward wavefront alone. */
        if (nthreads < 2 || fr_plan_row_ranges(cell, T, B, H, 1, nthreads) >= nthreads
            || fr_plan_units_mid(cell, T, B, H, dirs, has_lengths, variants, nthreads)
            || mul_sat(step, T) < knobs.min_parallel_work)
            return 0;
    }
    /* E = 2(L - 1) when the layers above the first project their input a round before their
     * loop (a batch of one, where the wavefront is chosen; fused: L - 1) */
    const int n = wave_n(T, step, 2 * (int64_t)(layers - 1),
                         knobs.wave_round_work > 0 ? (double)knobs.wave_round_work : 1.0, maxn);
    /* one chunk is layer by layer with extra hand-offs: only a test forces it */
    if (knobs.wave < 0 && n < 2) return 0;
    return n;
}

int fr_plan_wave_backward_chunks(fr_cell cell, int T, int B, int D, int H, int layers, int fill)
{
    /* A backward round costs more than a forward one beyond its loops' steps: per layer, the
     * loop packs W_hh^T and W_ih^T (dx in the loop), and the chunk's weight-gradient GEMM
     * writes its (G*H, D+H) product and adds it to dW_ih and dW_hh (fr_backward_params):
     * about six passes over a step's weights, which come from L3 rather than L2 at about half
     * the speed of a batch-of-one step's own pass, so o + 12 L steps. Measured a round at 63 us
     * (H = 48) and 152 us (H = 128), the forward's at 32 and 87 us (2-layer LSTM with
     * zoneout, T = 400 in 100 chunks): the 89 us between H = 48 and 128 are 12 L times the
     * steps' difference at 30 G multiply-adds/s. With E = the layers' lags (L - 1 with dx in
     * the loops, the forward's 2(L - 1)), a backward takes about half the forward's chunks
     * where the steps are large: 2-layer LSTM and GRU at B = 1, H = 128 with zoneout or layer
     * norm, 5 chunks for the forward's 10-11 (T = 1000) and 10 for 22 (T = 4000) measured
     * 1.02-1.14x faster backwards; within 0.97-1.04x of the forward's at H = 48 (2 and 3
     * layers, T = 1000 and 4000), where the optimum is flat. */
    if (layers < 2) return 0;
    const int maxn = wave_maxn(T);
    const int64_t step = wave_step(cell, B, D, H);
    const double o = (knobs.wave_round_work > 0 ? (double)knobs.wave_round_work : 1.0)
                     + 12.0 * layers * (double)step;
    const int n = wave_n(T, step, fill > 0 ? fill : 1, o, maxn);
    if (knobs.wave < 0 && n < 2) return 0;
    return n;
}

int fr_plan_cell_mid(fr_cell cell, int B, int D, int H, int variants, int nthreads)
{
    (void)B;
    /* zoneout lives in fr_recur's rows only: such a step runs there, whole */
    if (variants || nthreads < 2 || H < 2 || mul_sat((int64_t)fr_gates(cell) * H, (int64_t)D + H) < knobs.cell_split_work)
        return 0;
    return unit_mid(H);
}

int fr_fused_pays(fr_cell cell, int T, int B, int D, int H, fr_dtype dtype)
{
    if (knobs.fused >= 0) return knobs.fused;
    const int GH = fr_gates(cell) * H;
    const int64_t bytes = mul_sat(fr_packed_size(GH, H) + fr_packed_size(GH, D), 4);
    return dtype == FR_F32 && fr_smallgemm_ok() && T >= FR_PACK_MIN_STEPS && B >= FR_PACK_MIN_ROWS
           && (B >= 8 || D <= H) && bytes <= knobs.fused_max_bytes;
}

int fr_dx_in_loop_pays(fr_cell cell, int T, int B, int D, int H, fr_dtype dtype)
{
    if (knobs.dx_in_loop >= 0) return knobs.dx_in_loop;
    /* float32 with the micro-kernel only: through BLAS, T small products lose to one big one.
     * A narrow input wastes most of a 16-column panel (D = 1: 15/16), where the whole-sequence
     * product is a cheap GEMV. */
    const int GH = fr_gates(cell) * H;
    const int64_t bytes = mul_sat(fr_packed_size(H, GH) + fr_packed_size(D, GH), 4);
    return dtype == FR_F32 && fr_smallgemm_ok() && fr_pack_pays(T, B) && D >= FR_NR
           && bytes <= knobs.dx_loop_max_bytes;
}

/* ---- workspace sizes (elements): each mirrors the layout at the top of its loop ------------ */

/* Each is a sum of a few products of two dimensions: the products are the sizes of buffers that
 * exist (weights, rows of act), so neither they nor their sum come near PTRDIFF_MAX. */
ptrdiff_t fr_forward_ws_size(fr_cell cell, int T, int B, int D, int H, int fused)
{
    const fr_cell_sizes n = fr_cell_info(cell);
    const int GH = n.gates * H;
    const int pack = T >= FR_PACK_MIN_STEPS;
    return (ptrdiff_t)B * GH + (ptrdiff_t)3 * B * H + (ptrdiff_t)(n.aux + 2) * H
           + (ptrdiff_t)(2 * n.gates - n.shared) * H + (pack ? fr_packed_size(GH, H) : 0)
           + (fused ? (ptrdiff_t)B * GH + (ptrdiff_t)B * D + (pack ? fr_packed_size(GH, D) : 0) : 0);
}

ptrdiff_t fr_backward_ws_size(fr_cell cell, int T, int B, int D, int H)
{
    const int GH = fr_gates(cell) * H;
    /* 4H: zoneout's two rows, then layer norm's two (LSTM's c) */
    return (ptrdiff_t)4 * B * H + (ptrdiff_t)4 * H + (ptrdiff_t)B * GH
           + (T >= FR_PACK_MIN_STEPS ? fr_packed_size(H, GH) + fr_packed_size(D, GH) : 0);
}

ptrdiff_t fr_proj_ws_size(int B, int H, int P)
{
    /* the step's rows of o*tanh(c) (B,H) and their projections (B,P), a row's unused output
     * copy (H), W_hr packed for the step's product in either orientation */
    const ptrdiff_t nt = fr_packed_size(P, H), nn = fr_packed_size(H, P);
    return (ptrdiff_t)B * H + (ptrdiff_t)B * P + H + (nt > nn ? nt : nn);
}

ptrdiff_t fr_cell_units_ws_size(fr_cell cell, int B, int nu)
{
    const fr_cell_sizes n = fr_cell_info(cell);
    return (ptrdiff_t)2 * B * n.gates * nu + (ptrdiff_t)(2 * n.gates - n.shared) * nu + nu
           + (ptrdiff_t)n.aux * nu;
}
