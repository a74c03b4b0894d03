/*
 * fastrnn C kernels: one layer, one direction of an RNN / LSTM / GRU, forward and BPTT.
 *
 * This header is the contract between the C kernels and their caller (fastrnn/_core.pyx).
 * The kernels never allocate, never touch Python, and may run without the GIL.
 *
 * ---------------------------------------------------------------------------------------------
 * Shape legend
 *   T  time steps             B  batch size            D  input features
 *   H  hidden size            G  gates per cell: 1 (RNN), 4 (LSTM), 3 (GRU)
 *   "(T,B,H)" means a C-contiguous row-major array of T*B*H elements; a trailing ",ld" means the
 *   last dimension is strided: element (t,b,j) lives at p[(t*B + b)*ld + j], j < H <= ld.
 *
 * Gate order (PyTorch's, so state dicts move without reordering)
 *   LSTM: i, f, g, o      c' = f*c + i*g,  h' = o*tanh(c')
 *   GRU : r, z, n         n  = tanh(W_in x + b_in + r*(W_hn h + b_hn)),  h' = (1-z)*n + z*h
 *   RNN : h' = tanh(...) or relu(...); with leak in (0,1): h' = (1-leak) h + leak f(...)
 *         (leaky integrator; `leak` is ignored by LSTM and GRU)
 *   Weights: w_ih (G*H, D), w_hh (G*H, H), biases (G*H); block k of rows is gate k.
 *
 * Direction and variable lengths
 *   Step s = 0..T-1 of the recurrence processes, for batch row b, the time position
 *     t_b(s) = s                     (forward)
 *     t_b(s) = len_b - 1 - s         (reverse)
 *   and row b is active while s < len_b (len_b = T when lengths == NULL). An inactive row keeps
 *   its state, so the final state of row b is the state after its last valid position; this is
 *   PyTorch's packed-sequence semantics, with no sorting by length needed.
 *   Outputs and saved activations are stored at time positions (t,b), so whole-sequence GEMMs
 *   can run over all T*B rows; positions t >= len_b are written as zero.
 *
 * Buffers of a training forward that backward needs (saved-for-backward, (T,B,.) time layout):
 *   act   (T,B,G*H)  post-activation gates: RNN h; LSTM i,f,g,o; GRU r,z,n
 *   hprev (T,B,H)    the state h entering the step that produced position (t,b); the phase
 *                    functions take it strided, (T,B,H,ldh), so a layer can keep it beside x
 *   aux   (T,B,A*H)  LSTM A=2: [c entering the step | tanh(c leaving it)];
 *                    GRU  A=1: [W_hn h + b_hn];  RNN A=0 (pass NULL)
 *   With hprev == NULL the forward is inference-only: nothing is saved, `act` is scratch and
 *   `aux` is ignored.
 *
 * Accumulate-vs-assign rules
 *   Parameter gradients (dw_ih, dw_hh, db_ih, db_hh) ACCUMULATE (+=): truncated BPTT and
 *   multiple losses add up without extra buffers. Input and state gradients (dx, dh0, dc0) are
 *   ASSIGNED, except that dx accumulates when accumulate_dx != 0 (the second direction of a
 *   bidirectional layer adds its share to the same dx).
 *
 * Aliasing
 *   No output buffer may alias any other buffer, with one exception: y may be a strided view into
 *   a wider (T,B,2H) output shared by the two directions (each writes its own H columns).
 *
 * Threads: the kernels are reentrant and use whatever threads BLAS is set to; fastrnn's Python
 * layer keeps BLAS single-threaded and runs row ranges on its own threads (see FR_PHASES), or,
 * for a batch of one, two unit tasks per step (see FR_UNITS), and splits a large cell step by
 * units (see FR_CELL_UNITS). The threads are the bridge's pool (fastrnn/_pool.h).
 * ---------------------------------------------------------------------------------------------
 */
#ifndef FASTRNN_H
#define FASTRNN_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { FR_RNN_TANH = 0, FR_RNN_RELU = 1, FR_LSTM = 2, FR_GRU = 3 } fr_cell;

/* Gates per cell (G) and aux columns per hidden unit (A). */
int fr_gates(fr_cell cell);
int fr_aux(fr_cell cell);

/* Scratch sizes in elements (of the kernel's dtype) for T steps of B rows: B*G*H + 2*B*H +
 * A*H + G*H + H (forward) or 3*B*H + B*G*H (backward), plus room for a packed W_hh when T is long
 * enough for packing to pay (see smallgemm.h); a fused forward (fr_recur with x) adds B*G*H +
 * B*D and a packed W_ih, and so does a backward with dx in its loop (D = 0 without). */
long fr_forward_ws_size(fr_cell cell, int T, int B, int D, int H, int fused);
long fr_backward_ws_size(fr_cell cell, int T, int B, int D, int H);

/* 1 when fr_recur_backward should compute dx inside its loop (given dx and w_ih) rather than
 * leave it to fr_backward_params' whole-sequence GEMM, for B rows per call and D inputs;
 * itemsize 4 (float32) or 8. Either way gives the same results to rounding. */
int fr_dx_in_loop_pays(fr_cell cell, int T, int B, int D, int H, int itemsize);

/* 1 when fr_recur's fused mode (input projection inside the time loop) is expected to beat
 * fr_project + fr_recur for B rows per call; itemsize 4 (float32) or 8. Either way gives the
 * same results to rounding. */
int fr_fused_pays(fr_cell cell, int T, int B, int D, int H, int itemsize);

/*
 * Forward over a whole sequence for one layer and one direction.
 *   x      (T,B,D)       input
 *   h0     (B,H)         initial state;            c0 (B,H) LSTM only, else NULL
 *   w_ih   (G*H,D)  w_hh (G*H,H)  b_ih, b_hh (G*H) or both NULL (no bias)
 *   y      (T,B,H,ldy)   out: outputs (0 past each length)
 *   h_n    (B,H)         out: final state;          c_n (B,H) LSTM only, else NULL
 *   act    (T,B,G*H)     out (saved) in training, scratch in inference
 *   hprev  (T,B,H)       out (saved), or NULL for inference
 *   aux    (T,B,A*H)     out (saved) in training; NULL for RNN or inference
 *   lengths (B)          int lengths in 1..T, or NULL for all T (validated by the caller)
 *   ws     (fr_forward_ws_size(cell, T, B, D, H, 0)) scratch
 */
void fr_forward_f32(fr_cell cell, int T, int B, int D, int H, int reverse, double leak,
                    const int *lengths,
                    const float *x, const float *h0, const float *c0,
                    const float *w_ih, const float *w_hh, const float *b_ih, const float *b_hh,
                    float *y, int ldy, float *h_n, float *c_n,
                    float *act, float *hprev, float *aux, float *ws);
void fr_forward_f64(fr_cell cell, int T, int B, int D, int H, int reverse, double leak,
                    const int *lengths,
                    const double *x, const double *h0, const double *c0,
                    const double *w_ih, const double *w_hh, const double *b_ih, const double *b_hh,
                    double *y, int ldy, double *h_n, double *c_n,
                    double *act, double *hprev, double *aux, double *ws);

/*
 * Backpropagation through time for one layer and one direction, from a training forward.
 *   x, w_ih, w_hh, lengths, act, hprev, aux: as given to / produced by the forward
 *   dy     (T,B,H,ldy)   gradient w.r.t. y, or NULL (zero)
 *   dh_n   (B,H)         gradient w.r.t. h_n, or NULL;   dc_n (B,H) LSTM only, or NULL
 *   dx     (T,B,D)       out: assigned (accumulated if accumulate_dx), or NULL to skip
 *   dh0    (B,H)         out: assigned;                  dc0 (B,H) LSTM only, else NULL
 *   dw_ih  (G*H,D)  dw_hh (G*H,H)  db_ih, db_hh (G*H) or NULL: accumulated (+=)
 *   dgx    (T,B,G*H)     scratch: gradient w.r.t. the input-side gate pre-activations
 *   dgh    (T,B,H)       scratch, GRU only: gradient w.r.t. W_hn h + b_hn (the n block of the
 *                        recurrent side, which differs from dgx's by the factor r); else NULL
 *   ws     (fr_backward_ws_size(cell, T, B, 0, H)) scratch
 */
void fr_backward_f32(fr_cell cell, int T, int B, int D, int H, int reverse, double leak,
                     const int *lengths,
                     const float *x, const float *w_ih, const float *w_hh,
                     const float *act, const float *hprev, const float *aux,
                     const float *dy, int ldy, const float *dh_n, const float *dc_n,
                     float *dx, int accumulate_dx, float *dh0, float *dc0,
                     float *dw_ih, float *dw_hh, float *db_ih, float *db_hh,
                     float *dgx, float *dgh, float *ws);
void fr_backward_f64(fr_cell cell, int T, int B, int D, int H, int reverse, double leak,
                     const int *lengths,
                     const double *x, const double *w_ih, const double *w_hh,
                     const double *act, const double *hprev, const double *aux,
                     const double *dy, int ldy, const double *dh_n, const double *dc_n,
                     double *dx, int accumulate_dx, double *dh0, double *dc0,
                     double *dw_ih, double *dw_hh, double *db_ih, double *db_hh,
                     double *dgx, double *dgh, double *ws);

/*
 * The same work in phases, so a caller can run the time loop of disjoint batch-row ranges
 * [b0, b1) concurrently: rows never interact inside a recurrence, so the threads need no
 * synchronisation per step, and each one's per-step GEMM stays single-threaded. fr_forward is
 * fr_project then fr_recur(0, B); fr_backward is fr_recur_backward(0, B) then
 * fr_backward_params. Row-range calls write only their rows of every (.,B,.) buffer.
 *
 * fr_project: act (T,B,G*H) = x (T,B,D) w_ih^T (no biases: fr_recur adds them in its gate
 *   loops, which saves a pass over act).
 * fr_recur: the forward time loop for rows b0..b1-1; arguments as in fr_forward, with
 *   ws (fr_forward_ws_size(cell, T, b1-b0, D, H, x != NULL)) private to the call, and hprev
 *   (T,B,H,ldh) strided (see fr_backward_params for why).
 *   x == NULL: act holds fr_project's output on entry. x (T,B,D) and w_ih given ("fused"):
 *   each step projects its own rows, fr_project is skipped, and act is written only in
 *   training (hprev != NULL); in inference act may be NULL. D is read only when fused.
 * fr_recur_backward: the reverse time loop for rows b0..b1-1; writes dgx, dgh rows (zero at
 *   padded positions), dh0/dc0 rows; ws (fr_backward_ws_size(cell, T, b1-b0, D, H)) private.
 *   dx (T,B,D) and w_ih (G*H,D), or dx NULL: out, assigned: these rows' input gradient,
 *   computed step by step (see fr_dx_in_loop_pays), which fr_backward_params then skips. Only
 *   for a layer with one direction: a second one would write the same dx rows concurrently.
 *   dhs (T,B,H) or NULL: out, dL/dh_t, the total gradient w.r.t. the state leaving each
 *   position (zero at padded positions), for gradient-flow diagnostics.
 *   dbias (G*H, plus H for GRU) or NULL: out, assigned: column sums of this call's dgx rows
 *   (then, GRU, of its dgh rows) over all steps, i.e. its rows' share of db_ih (= db_hh, except
 *   GRU's n block of db_hh, which is the dgh part). The caller adds the shares of all row
 *   ranges to the gradients and passes NULL biases to fr_backward_params.
 * fr_backward_params: whole-sequence GEMMs from dgx/dgh: rows g0..g1-1 of dw_ih, dw_hh, db_ih,
 *   db_hh += ...; rows r0..r1-1 (of T*B) of dx (T,B,D) assigned (accumulated if accumulate_dx),
 *   dx NULL to skip. Calls with disjoint ranges may run concurrently. x (T,B,D,ldx), hprev
 *   (T,B,H,ldh). When they sit side by side in one (T,B,D+H) buffer (hprev == x + D,
 *   ldx == ldh == D+H) and ws (G*H, D+H) is given, both weight gradients of a gate row come from
 *   one GEMM over [x | hprev] (ws rows g0..g1-1 are scratch); otherwise ws may be NULL.
 */
#define FR_PHASES(R, S)                                                                           \
void fr_project_##S(fr_cell cell, int T, int B, int D, int H, const R *x, const R *w_ih,         \
                    R *act);                                                                      \
void fr_recur_##S(fr_cell cell, int T, int B, int D, int H, int b0, int b1, int reverse,         \
                  double leak, const int *lengths, const R *x, const R *w_ih, const R *h0,       \
                  const R *c0, const R *w_hh, const R *b_ih, const R *b_hh,                      \
                  R *y, int ldy, R *h_n, R *c_n, R *act, R *hprev, int ldh, R *aux, R *ws);     \
void fr_recur_backward_##S(fr_cell cell, int T, int B, int H, int b0, int b1, int reverse,       \
                           double leak, const int *lengths, const R *w_hh, const R *act,         \
                           const R *hprev, int ldh, const R *aux, const R *dy, int ldy,          \
                           const R *dh_n,                                                         \
                           const R *dc_n, R *dh0, R *dc0, R *dgx, R *dgh, R *dhs, R *dbias,     \
                           int D, const R *w_ih, R *dx, R *ws);                                   \
void fr_backward_params_##S(fr_cell cell, int T, int B, int D, int H, int g0, int g1, long r0,   \
                            long r1, const R *x, int ldx, const R *w_ih, const R *hprev,         \
                            int ldh, const R *dgx, const R *dgh, R *dx, int accumulate_dx,       \
                            R *dw_ih, R *dw_hh, R *db_ih, R *db_hh, R *ws);
/*
 * A batch of one (B = 1, no lengths), split by hidden units instead of rows: each step is two
 * tasks, task 0 owning units [0, mid) of every gate block and task 1 units [mid, H), and two
 * concurrent calls (part 0 and part 1, one thread each, same arguments otherwise) claim them
 * step by step. Part 0 alone also finishes the work, so part 1 may start late or not at all;
 * part 0 writes h_n, c_n (forward) and dh0, dc0 (backward) once everything is done.
 *   Buffers as in fr_recur / fr_recur_backward with B = 1 (hprev (T,1,H,ldh)); act holds
 *   fr_project's output.
 *   sync (4) ints, zero before the calls. shared (fr_units_shared_size_*(cell, T, H, mid,
 *   backward)): every task's state and the step-to-step exchange.
 *   dbias (2, G*H [+H for GRU]) or NULL: out, row q assigned task q's share (other units zero).
 */
#define FR_UNITS(R, S)                                                                            \
long fr_units_shared_size_##S(fr_cell cell, int T, int H, int mid, int backward);               \
void fr_recur_units_##S(fr_cell cell, int T, int H, int mid, int part, int reverse, double leak, \
                        const R *h0, const R *c0, const R *w_hh, const R *b_ih, const R *b_hh,   \
                        R *y, int ldy, R *h_n, R *c_n, R *act, R *hprev, int ldh, R *aux,        \
                        int *sync, R *shared);                                                    \
void fr_recur_backward_units_##S(fr_cell cell, int T, int H, int mid, int part, int reverse,     \
                                 double leak, const R *w_hh, const R *act, const R *hprev,       \
                                 int ldh, const R *aux, const R *dy, int ldy, const R *dh_n,     \
                                 const R *dc_n, R *dh0, R *dc0, R *dgx, R *dgh, R *dhs,          \
                                 R *dbias, int *sync, R *shared);
/*
 * One cell step (T = 1, all rows active, forward, no leak) for the hidden units [u0, u0+nu) of
 * every gate block, so that concurrent calls over disjoint unit ranges each read only their rows
 * of the weights. x (B,D), h and c (B,H) the state entering the step (c LSTM only, else NULL);
 * h1, c1 (B,H): out, these units of the new state. act (1,B,G*H), hprev (1,B,H), aux
 * (1,B,A*H): out, these units' columns, as fr_recur writes them in training; all three NULL in
 * inference. ws (fr_cell_units_ws_size(cell, B, nu)) private to the call.
 */
#define FR_CELL_UNITS(R, S)                                                                       \
long fr_cell_units_ws_size_##S(fr_cell cell, int B, int nu);                                      \
void fr_cell_units_##S(fr_cell cell, int B, int D, int H, int u0, int nu, const R *x,            \
                       const R *h, const R *c, const R *w_ih, const R *w_hh, const R *b_ih,      \
                       const R *b_hh, R *h1, R *c1, R *act, R *hprev, R *aux, R *ws);
FR_CELL_UNITS(float, f32)
FR_CELL_UNITS(double, f64)
#undef FR_CELL_UNITS

FR_UNITS(float, f32)
FR_UNITS(double, f64)
#undef FR_UNITS

FR_PHASES(float, f32)
FR_PHASES(double, f64)
#undef FR_PHASES

/* BLAS thread control (OpenBLAS from the scipy-openblas32 wheel). */
void fr_set_num_threads(int n);
int fr_get_num_threads(void);

#ifdef __cplusplus
}
#endif
#endif
