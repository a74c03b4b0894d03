/*
 * fastrnn C kernels: one layer, one direction of an RNN / LSTM / GRU, forward and BPTT.
 *
 * This header is the contract between the C kernels and their caller (fastrnn/_core.pyx).
 * The kernels never allocate, never touch Python, and may run without the GIL. Every call takes
 * one struct of named fields (fr_*_args below); a job (fr_job) is one of them with its kind, so
 * a caller can hand a list of jobs to the worker pool (pool.h).
 *
 * ---------------------------------------------------------------------------------------------
 * Shape legend
 *   T  time steps             B  batch size            D  input features
 *   H  hidden size            G  gates per cell (cells.h: 1 RNN, 4 LSTM, 3 GRU)
 *   A  saved aux columns per hidden unit (cells.h: 0 RNN, 2 LSTM, 1 GRU)
 *   S  leading gate blocks whose recurrent-side gradient equals the input side's (G, except
 *      GRU: 2, since its n block of W_hh h sits inside r*(.)); the other G-S blocks get their
 *      own recurrent-side gradient buffer dgh (T,B,(G-S)*H)
 *   "(T,B,H)" means a C-contiguous row-major array of T*B*H elements; a trailing ",ld" means the
 *   last dimension is strided: element (t,b,j) lives at p[(t*B + b)*ld + j], j < H <= ld.
 *   Every pointer is of the dtype named by the struct's `dtype` (float or double), except
 *   lengths and sync (int).
 *
 * Integer widths
 *   Dimensions and leading dimensions are int: BLAS (scipy-openblas32) takes them as 32-bit
 *   ints. The caller guarantees that every dimension, leading dimension and G*H fits in an int,
 *   and so does T*B for the calls that multiply over all T*B rows (fr_project, and
 *   fr_backward_params, whose weight-gradient GEMMs have inner dimension T*B); the bridge
 *   refuses larger ones with a ValueError. Every product of dimensions (an element count, an
 *   offset into a buffer, a workspace size) is computed in ptrdiff_t, so buffers may hold more
 *   than INT_MAX elements (a (T,B,G*H) act of 2^31 floats is fine).
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
 *   hprev (T,B,H,ldh) the state h entering the step that produced position (t,b); strided, so
 *                    a layer can keep it beside x in one (T,B,D+H) buffer [x | hprev]
 *   aux   (T,B,A*H)  LSTM: [c entering the step | tanh(c leaving it)]; GRU: [W_hn h + b_hn];
 *                    RNN: none (NULL)
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
 * Recurrent dropout and zoneout (fr_recur / fr_recur_backward only; plan.c keeps layers that use
 * them off the unit-split path)
 *   hmask (B,H): the recurrent product of every step is W_hh (h * hmask) (one mask per sequence:
 *     variational dropout, Gal & Ghahramani 2016); the rows still see the unmasked h (GRU's z*h).
 *     hprev keeps the unmasked state (GRU's backward reads it) and hdrop the masked one, which
 *     the caller hands to fr_backward_params as its hprev for dW_hh.
 *   zh, zc (T,B,H): after the cell's row computes (h~, c~) at position (t,b),
 *     h = zh*h_prev + (1-zh)*h~ (y is this h) and c = zc*c_prev + (1-zc)*c~; h~ = o*tanh(c~)
 *     uses the un-zoned c~ (Krueger et al. 2016). Training passes 0/1 masks, inference p.
 *   Weight dropout needs nothing here: the caller passes W_hh * mask as w_hh.
 *
 * Peepholes (LSTM, every path): peep (3H) = p_i, p_f, p_o; i = sig(. + p_i*c_{t-1}),
 * f = sig(. + p_f*c_{t-1}), o = sig(. + p_o*c_t) (ONNX's LSTM; its P input orders them i, o, f).
 * Their gradient comes out of the reverse loops like the biases': a share per call (dpeep).
 *
 * Layer normalisation (fr_recur / fr_recur_backward row loops only; plan.c keeps it off the unit
 * paths, which see only part of a row's units; haste's LayerNormLSTM, eps = FR_LN_EPS):
 *   LN_k(v) = gamma_k * (v - mean(v)) / sqrt(var(v) + eps) + beta_k over the G*H pre-activations
 *   of one row (var: biased). Gates = LN_x(W_ih x) + LN_h(W_hh h) + (b_ih + b_hh) (GRU's n:
 *   LN_x(.)_n + b_in + r*(LN_h(.)_n + b_hn), the row unchanged); LSTM: h = o*tanh(LN_c(c')),
 *   gamma_c, beta_c (H), the state carried is the un-normalised c'.
 *   ln (4*G*H [+ 2*H with 2 states]): gamma_x, beta_x, gamma_h, beta_h [, gamma_c, beta_c].
 *   lnsave (T,B,FR_LN_SAVE(G*H)) training only: xhat_x (G*H), xhat_h (G*H), rstd_x, rstd_h,
 *   mean_c, rstd_c. dln (as ln) assigned: this call's share of the ln gradient.
 *   With ln the recurrent-side gradient differs from dgx in every block: dgh is (T,B,G*H) (S
 *   counts as 0 for dgh and fr_backward_params, given ln = 1 there); dbias keeps its layout
 *   (the biases sit after the normalisation: they take the un-normalised gate gradients).
 *
 * Projections (LSTM, PyTorch's proj_size; fr_recur / fr_recur_backward row loops only, plan.c
 * keeps them off the unit paths): with P > 0 the carried and output state is h = W_hr (o*tanh(c))
 * of P units (c keeps H): h0, h_n, dh0, dh_n, hmask (B,P); y, dy, hprev, hdrop, dhs (T,B,P,ld);
 * w_hh (G*H,P). Not with zoneout, peepholes or layer norm (the bridge refuses them). The
 * forward saves hcell = o*tanh(c) (T,B,H); the backward needs dhs, and the caller forms
 * dW_hr (P,H) += dhs^T hcell over all T*B rows (one GEMM).
 *
 * Threads: the kernels are reentrant and use whatever threads BLAS is set to (fastrnn keeps BLAS
 * single-threaded). Concurrency comes from jobs over disjoint batch-row ranges (fr_recur,
 * fr_recur_backward), unit tasks of a batch of one (fr_recur_units*), unit halves of a cell step
 * (fr_cell_units) and blocks of the whole-sequence GEMMs (fr_backward_params), run by the pool
 * (pool.h). Whether and how to split is decided in plan.c.
 * ---------------------------------------------------------------------------------------------
 */
#ifndef FASTRNN_H
#define FASTRNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A cell kind: its index in the cell table (cells.h, which names the kinds), the code that
 * fastrnn/_cells.py gives it. */
typedef int fr_cell;
/* Layer normalisation's epsilon, and its saved columns per position for G*H gate units. */
#define FR_LN_EPS 1e-5
#define FR_LN_SAVE(GH) (2 * (ptrdiff_t)(GH) + 4)
typedef enum { FR_F32 = 0, FR_F64 = 1 } fr_dtype;

/* The cell table's sizes for one kind (cells.h). */
typedef struct {
    int gates;  /* G */
    int aux;    /* A */
    int states; /* 1 (h), or 2 (h and c: LSTM) */
    int shared; /* S: see the shape legend */
} fr_cell_sizes;
int fr_num_cells(void);
fr_cell_sizes fr_cell_info(fr_cell cell); /* cell in [0, fr_num_cells()) */
int fr_gates(fr_cell cell);

/* act (T,B,G*H) = x (T,B,D) w_ih^T over all T*B rows (no biases: fr_recur adds them in its
 * gate loops, which saves a pass over act). */
typedef struct {
    fr_cell cell; fr_dtype dtype;
    int T, B, D, H;
    const void *x;    /* (T,B,D) */
    const void *w_ih; /* (G*H,D) */
    void *act;        /* (T,B,G*H) out */
} fr_project_args;

/* The forward time loop of batch rows [b0, b1): writes only those rows of every (.,B,.) buffer,
 * so calls over disjoint row ranges may run concurrently.
 *   x == NULL: act holds fr_project's output on entry. x and w_ih given ("fused"): each step
 *   projects its own rows while W_ih is in cache; act is then written only in training
 *   (hprev != NULL) and may be NULL in inference. D is read only when fused. */
typedef struct {
    fr_cell cell; fr_dtype dtype;
    int T, B, D, H;
    int b0, b1, reverse;
    double leak;
    const int *lengths;     /* (B) in 1..T, or NULL for all T (validated by the caller) */
    const void *x;          /* (T,B,D), or NULL (see above) */
    const void *w_ih;       /* (G*H,D), with x */
    const void *h0, *c0;    /* (B,H) initial state; c0 only for kinds with 2 states */
    const void *w_hh;       /* (G*H,H) */
    const void *b_ih, *b_hh; /* (G*H) each, or both NULL (no bias) */
    void *y; int ldy;       /* (T,B,H,ldy) out: outputs (0 past each length) */
    void *h_n, *c_n;        /* (B,H) out: final state */
    void *act;              /* (T,B,G*H) saved in training, scratch in inference */
    void *hprev; int ldh;   /* (T,B,H,ldh) saved, or NULL for inference */
    void *aux;              /* (T,B,A*H) saved in training; NULL when A = 0 or inference */
    /* Cell variants (NULL: off). See "Recurrent dropout and zoneout" above. */
    const void *hmask;      /* (B,H) recurrent dropout: W_hh multiplies h * hmask, not h */
    void *hdrop; int ldd;   /* (T,B,H,ldd) out in training with hmask: h * hmask entering each
                               position (fr_backward_params' dW_hh operand); else NULL */
    const void *zh, *zc;    /* (T,B,H) zoneout weights of the previous h and c (c: 2 states
                               only, may be NULL); zh NULL: no zoneout */
    const void *peep;       /* (3H) LSTM peephole weights p_i, p_f, p_o, or NULL */
    const void *ln;         /* layer norm gains and biases (see above), or NULL: off */
    void *lnsave;           /* (T,B,FR_LN_SAVE(G*H)) out in training with ln, else NULL */
    void *ws;               /* (fr_forward_ws_size(cell, T, b1-b0, D, H, x != NULL)) scratch */
    /* LSTM projection (PyTorch's proj_size; see "Projections" above), P = 0: off */
    int P;
    const void *w_hr;       /* (P,H) */
    void *hcell;            /* (T,B,H) out in training: o*tanh(c) of each position (0 past each
                               length), fr_backward_params' dW_hr operand; else NULL */
    void *pws;              /* (fr_proj_ws_size(b1-b0, H, P)) scratch with P */
} fr_recur_args;

/* The reverse time loop of batch rows [b0, b1), from a training forward: writes these rows of
 * dgx/dgh (zero at padded positions) and of dh0/dc0.
 *   dx and w_ih given: these rows' input gradient (assigned), computed step by step while each
 *   step's dgx rows are in cache (plan.c: fr_dx_in_loop_pays); fr_backward_params is then given
 *   dx = NULL. Only for a layer with one direction: a second one would write the same dx rows.
 *   dbias: this call's share of the bias gradients (assigned): column sums of its dgx rows, then
 *   of its dgh rows. The caller adds the shares of all row ranges (db_ih = the dgx part; db_hh =
 *   the dgx part of the first S blocks, then the dgh part) and passes NULL biases to
 *   fr_backward_params. */
typedef struct {
    fr_cell cell; fr_dtype dtype;
    int T, B, D, H;
    int b0, b1, reverse;
    double leak;
    const int *lengths;      /* (B) or NULL, as given to the forward */
    const void *w_hh;        /* (G*H,H) */
    const void *act;         /* (T,B,G*H) saved */
    const void *hprev; int ldh; /* (T,B,H,ldh) saved */
    const void *aux;         /* (T,B,A*H) saved, or NULL when A = 0 */
    const void *dy; int ldy; /* (T,B,H,ldy) gradient w.r.t. y, or NULL (zero) */
    const void *dh_n, *dc_n; /* (B,H) gradient w.r.t. the final state, or NULL (zero) */
    void *dh0, *dc0;         /* (B,H) out, assigned; dc0 only with 2 states */
    void *dgx;               /* (T,B,G*H) out: gradient w.r.t. the gate pre-activations */
    void *dgh;               /* (T,B,(G-S)*H) out: recurrent-side gradient of blocks S..G-1, or
                                NULL when S = G */
    void *dhs;               /* (T,B,H) out or NULL: dL/dh_t, the total gradient reaching the
                                state leaving each position (zero at padded positions) */
    void *dbias;             /* (G*H + (G-S)*H) out or NULL, see above */
    const void *w_ih;        /* (G*H,D), with dx */
    void *dx;                /* (T,B,D) out or NULL, see above */
    const void *hmask;       /* (B,H) as given to the forward, or NULL */
    const void *zh, *zc;     /* (T,B,H) as given to the forward, or NULL */
    const void *peep;        /* (3H) as given to the forward, or NULL */
    void *dpeep;             /* (3H) out with peep, assigned: these rows' share of its gradient */
    const void *ln;          /* as given to the forward, or NULL */
    const void *lnsave;      /* (T,B,FR_LN_SAVE(G*H)) saved by the forward, with ln */
    void *dln;               /* (as ln) out with ln, assigned: these rows' share of its gradient */
    void *ws;                /* (fr_backward_ws_size(cell, T, b1-b0, dx ? D : 0, H)) scratch */
    int P;                   /* projection: as given to the forward (0: off); dhs then required */
    const void *w_hr;        /* (P,H) */
    void *pws;               /* (fr_proj_ws_size(b1-b0, H, P)) scratch with P */
} fr_recur_backward_args;

/* Whole-sequence GEMMs after fr_recur_backward: rows g0..g1-1 of dw_ih, dw_hh, db_ih, db_hh
 * += ...; rows r0..r1-1 (of T*B) of dx assigned (accumulated if accumulate_dx), dx NULL to skip;
 * with lengths, dx rows at padded positions are zero (their dgx rows are, but 0 * W_ih is NaN
 * where W_ih holds an infinity).
 * Calls with disjoint ranges may run concurrently. When x and hprev sit side by side in one
 * (T,B,D+H) buffer (hprev == x + D, ldx == ldh == D+H) and ws is given, both weight gradients of
 * a gate row come from one GEMM over [x | hprev]. */
typedef struct {
    fr_cell cell; fr_dtype dtype;
    int T, B, D, H;
    int g0, g1; ptrdiff_t r0, r1;
    const int *lengths;         /* (B) or NULL, as given to the forward */
    const void *x; int ldx;     /* (T,B,D,ldx) */
    const void *w_ih;           /* (G*H,D) */
    const void *hprev; int ldh; /* (T,B,H,ldh) */
    const void *dgx, *dgh;      /* from fr_recur_backward */
    void *dx; int accumulate_dx; /* (T,B,D) or NULL */
    void *dw_ih, *dw_hh;        /* (G*H,D), (G*H,H) accumulated */
    void *db_ih, *db_hh;        /* (G*H) accumulated, or both NULL */
    void *ws;                   /* (G*H, D+H) scratch for the [x | hprev] GEMM, or NULL */
    int ln;                     /* 1: a layer-normalised layer's dgh (T,B,G*H), biases NULL */
    int P;                      /* projection: hprev, dw_hh (and ws) have P columns, not H */
    const void *dhs, *hcell;    /* with P: (T,B,P) from fr_recur_backward, (T,B,H) from fr_recur */
    void *dw_hr;                /* with P: (P,H) accumulated: its rows g0*P/(G*H) .. g1*P/(G*H) */
} fr_params_args;

/* A batch of one (B = 1, no lengths), split by hidden units instead of rows: each step is two
 * tasks, task 0 owning units [0, mid) of every gate block and task 1 units [mid, H), and two
 * concurrent calls (part 0 and part 1, one thread each, same arguments otherwise) claim them
 * step by step. Part 0 alone also finishes the work, so part 1 may start late or not at all;
 * part 0 writes h_n, c_n (forward) and dh0, dc0 (backward) once everything is done. Buffers as
 * in fr_recur_args / fr_recur_backward_args with B = 1; act holds fr_project's output. */
typedef struct {
    fr_cell cell; fr_dtype dtype;
    int T, H, mid, part, reverse;
    double leak;
    const void *h0, *c0, *w_hh, *b_ih, *b_hh;
    void *y; int ldy;
    void *h_n, *c_n, *act;
    void *hprev; int ldh;
    void *aux;
    const void *peep; /* (3H) LSTM peephole weights, or NULL */
    int *sync;     /* (4) zero before the calls */
    void *shared;  /* (fr_units_shared_size(cell, dtype, T, H, mid, 0)): every task's state
                      and the step-to-step exchange */
} fr_units_args;

typedef struct {
    fr_cell cell; fr_dtype dtype;
    int T, H, mid, part, reverse;
    double leak;
    const void *w_hh, *act;
    const void *hprev; int ldh;
    const void *aux;
    const void *dy; int ldy;
    const void *dh_n, *dc_n;
    void *dh0, *dc0, *dgx, *dgh, *dhs;
    void *dbias;   /* (2, G*H + (G-S)*H) or NULL: row q assigned task q's share (other units 0) */
    const void *peep; /* (3H) or NULL */
    void *dpeep;   /* (2, 3H) with peep: row q assigned task q's share (other units 0) */
    int *sync;     /* (4) zero before the calls */
    void *shared;  /* (fr_units_shared_size(cell, dtype, T, H, mid, 1)) */
} fr_units_backward_args;

/* One cell step (T = 1, all rows active, forward, no leak) for the hidden units [u0, u0+nu) of
 * every gate block, so that concurrent calls over disjoint unit ranges each read only their rows
 * of the weights. act, hprev, aux: these units' columns as fr_recur writes them in training; all
 * three NULL in inference. */
typedef struct {
    fr_cell cell; fr_dtype dtype;
    int B, D, H, u0, nu;
    const void *x;          /* (B,D) */
    const void *h, *c;      /* (B,H) the state entering the step; c only with 2 states */
    const void *w_ih, *w_hh, *b_ih, *b_hh;
    const void *peep;       /* (3H) LSTM peephole weights, or NULL */
    void *h1, *c1;          /* (B,H) out: these units of the new state */
    void *act, *hprev, *aux; /* (1,B,G*H), (1,B,H), (1,B,A*H) out, or NULL */
    void *ws;               /* (fr_cell_units_ws_size(cell, B, nu)) private to the call */
} fr_cell_units_args;

/* A job: one kernel call of any kind, for the pool (pool.h). */
typedef enum {
    FR_JOB_PROJECT, FR_JOB_RECUR, FR_JOB_RECUR_BACKWARD, FR_JOB_PARAMS, FR_JOB_UNITS,
    FR_JOB_UNITS_BACKWARD, FR_JOB_CELL_UNITS
} fr_job_kind;

typedef union {
    fr_project_args project;
    fr_recur_args recur;
    fr_recur_backward_args recur_backward;
    fr_params_args params;
    fr_units_args units;
    fr_units_backward_args units_backward;
    fr_cell_units_args cell_units;
} fr_job_args;

typedef struct {
    fr_job_kind kind;
    fr_job_args u; /* the member named by kind */
} fr_job;

void fr_project(const fr_project_args *a);
void fr_recur(const fr_recur_args *a);
void fr_recur_backward(const fr_recur_backward_args *a);
void fr_backward_params(const fr_params_args *a);
void fr_recur_units(const fr_units_args *a);
void fr_recur_backward_units(const fr_units_backward_args *a);
void fr_cell_units(const fr_cell_units_args *a);
void fr_job_run(const fr_job *job);
/* out (n) of dtype: scale with probability p, else 0, element i from a hash of (seed, i): the
 * variants' masks (a seed per mask drawn from the layer's generator). Any thread, no state. */
void fr_bernoulli(fr_dtype dtype, void *out, ptrdiff_t n, uint64_t seed, double p, double scale);
/* 1 when every kernel entry above runs with subnormals flushed to zero (x86 SSE2, aarch64) and
 * restores its thread's floating-point mode on return (fastrnn.c). */
int fr_flushes_subnormals(void);

/* ---- optim.c: one optimizer update over all of a model's parameters ----------------------- */

/* One parameter: its value, gradient and optimizer slots, all of n elements of the call's
 * dtype. The slots a kind does not use are NULL. */
typedef struct {
    void *param;              /* (n) in-out */
    void *grad;               /* (n) in-out: clamped (clipvalue) and scaled (grad_scale) in place */
    void *s0, *s1, *s2;       /* (n) in-out: SGD momentum | Adam m, v | RMSprop sq, mom, mg */
    ptrdiff_t n;
} fr_tensor;

typedef enum { FR_OPT_SGD, FR_OPT_ADAM, FR_OPT_RMSPROP } fr_opt_kind;

/* The update of fastrnn/train/optim.py, element for element in the same order of operations
 * and with the hyper-parameters rounded to the dtype as NumPy rounds a Python float: the same
 * bits as the NumPy path. */
typedef struct {
    fr_dtype dtype; fr_opt_kind kind;
    int ntensors;
    const fr_tensor *t;         /* (ntensors) */
    double clipvalue;           /* > 0: clamp every gradient entry to [-clipvalue, clipvalue] */
    double grad_scale;          /* global-norm clipping: gradients *= grad_scale, unless 1 */
    double lr, weight_decay;
    int decoupled;              /* AdamW: p -= lr*wd*p; else g + wd*p (the gradient itself kept) */
    double momentum; int nesterov; /* SGD; momentum also RMSprop's */
    double beta1, beta2, eps;   /* Adam (eps also RMSprop's) */
    double bc1, bc2;            /* Adam: 1 - beta1^t, 1 - beta2^t */
    double rho; int centered;   /* RMSprop */
} fr_optim_args;

/* Clamps the gradients in place when clipvalue > 0 and returns the sum of their squares
 * (accumulated in double): the caller's global norm. */
double fr_optim_sumsq(const fr_optim_args *a);
/* Scales the gradients by grad_scale (when not 1), then updates parameters and slots. */
void fr_optim_step(const fr_optim_args *a);

/* ---- plan.c: every "does this pay" decision, every threshold, every workspace size ------- */

/* Scratch sizes in elements (of the dtype) for T steps of B rows per call. */
ptrdiff_t fr_forward_ws_size(fr_cell cell, int T, int B, int D, int H, int fused);
ptrdiff_t fr_backward_ws_size(fr_cell cell, int T, int B, int D, int H);
ptrdiff_t fr_units_shared_size(fr_cell cell, fr_dtype dtype, int T, int H, int mid, int backward);
ptrdiff_t fr_cell_units_ws_size(fr_cell cell, int B, int nu);
/* fr_recur_args.pws / fr_recur_backward_args.pws of an LSTM projection, B rows per call */
ptrdiff_t fr_proj_ws_size(int B, int H, int P);

/* Thresholds and test overrides. fused, units, dx_in_loop: -1 for the heuristic, 0 or 1 to
 * force. Set from Python with the GIL held, read when a layer is planned. */
typedef struct {
    int fused, units, dx_in_loop;
    int64_t min_parallel_work; /* multiply-adds below which a split costs more than it saves */
    int64_t unit_min_work;     /* G*H*H from which a batch of one splits its steps by units */
    int64_t cell_split_work;   /* G*H*(D+H) per row from which a cell step splits by units */
    int64_t fused_max_bytes;   /* packed W_ih + W_hh up to which the projection fuses into the loop */
    int64_t dx_loop_max_bytes; /* packed W_hh^T + W_ih^T up to which dx is computed in the loop */
    int64_t gemv_max_elems;    /* N*K up to which a B=1 product uses fr_gemv_rows, not BLAS */
    int wave;                  /* the multi-layer wavefront: -1 heuristic, 0 or 1 to force */
    int64_t wave_round_work;   /* multiply-adds that one wavefront round's hand-off costs */
    int64_t wave_chunk;        /* test override: steps per wavefront chunk (0: derived) */
    int64_t tile_rows;         /* rows per float32 micro-kernel tile, 4..6 (0: 6); tune() measures it */
} fr_plan_knobs;
fr_plan_knobs fr_plan_get_knobs(void);
void fr_plan_set_knobs(const fr_plan_knobs *k);
/* tile_rows as the kernels use it (4..6): read on any thread while Python may set the knobs. */
int fr_plan_tile_rows(void);

/* How many ways to split `work` multiply-adds over nthreads threads, at most `limit`. Work
 * estimates saturate at INT64_MAX instead of overflowing. */
int fr_plan_parts(int64_t work, int64_t limit, int nthreads);
/* Row ranges per direction for a layer's time loops (directions first occupy the threads). */
int fr_plan_row_ranges(fr_cell cell, int T, int B, int H, int dirs, int nthreads);
/* The unit where the two tasks of a batch-of-one step meet, or 0 for no split (always 0 with
 * variants != 0: recurrent dropout, zoneout and layer norm run in the row loops only). The unit tasks
 * count 2*T completed tasks in an int (pool.h, fr_claim): T <= FR_UNITS_MAX_STEPS. */
#define FR_UNITS_MAX_STEPS (0x7fffffff / 2)
int fr_plan_units_mid(fr_cell cell, int T, int B, int H, int dirs, int has_lengths, int variants,
                      int nthreads);
/* The unit where the two halves of a split cell step meet, or 0 for one thread (always 0 with
 * variants != 0: a cell step with zoneout or layer norm). */
int fr_plan_cell_mid(fr_cell cell, int B, int D, int H, int variants, int nthreads);
/* The multi-layer wavefront (fastrnn/layers.py, _RNNBase._forward_wave): the time axis of a
 * stack of `layers` one-direction layers is cut into chunks, and round r runs layer l on chunk
 * r - (its lag) for every l at once, each layer a job of its own, so layer l+1 reads chunk c of
 * layer l's output while layer l computes chunk c+1. Returns the number of chunks (every chunk
 * then has at least FR_PACK_MIN_STEPS steps when T has, so each call packs its weights, and
 * rounds, as the whole loop does: the results equal the layer-by-layer schedule's with the same
 * row ranges and projection mode), or 0 for layer by layer. *row_ranges receives the row ranges
 * each layer's chunk is split into. D is layer 0's input size; variants as fr_plan_units_mid's.
 * Ragged batches (has_lengths) and bidirectional stacks (whose two directions already fill two
 * threads) run layer by layer, and so does a batch of one that splits its steps by units. */
int fr_plan_wave_chunks(fr_cell cell, int T, int B, int D, int H, int layers, int dirs,
                        int has_lengths, int variants, int nthreads, int *row_ranges);
/* The backward of a stack that ran forward as a wavefront (_RNNBase._backward_wave) runs as one
 * too, in reverse time, on the forward's row ranges: its number of chunks (at least
 * FR_PACK_MIN_STEPS steps each when T has), or 0 for layer by layer. `fill` is the rounds
 * before the first layer starts (the sum of the layers' lags: 1 a layer when its dx comes from
 * its loop, 2 when from a GEMM in the round between). */
int fr_plan_wave_backward_chunks(fr_cell cell, int T, int B, int D, int H, int layers, int fill);
/* 1 when fr_recur's fused mode (input projection inside the time loop) is expected to beat
 * fr_project + fr_recur for B rows per call. Either way gives the same results to rounding. */
int fr_fused_pays(fr_cell cell, int T, int B, int D, int H, fr_dtype dtype);
/* 1 when fr_recur_backward should compute dx inside its loop for B rows per call rather than
 * leave it to fr_backward_params' whole-sequence GEMM. */
int fr_dx_in_loop_pays(fr_cell cell, int T, int B, int D, int H, fr_dtype dtype);
/* Inside the loops: pack W once per sequence for the float32 micro-kernel (steps, rows per
 * call), and the unpacked B=1 product kernel for an N x K matrix. */
int fr_pack_pays(int steps, int rows);
int fr_gemv_rows_pays(int N, int K);
/* Seconds a pool worker polls for the next job, and a unit task waits for the other before it
 * declares the machine oversubscribed. */
extern const double fr_pool_spin_seconds, fr_solo_wait_seconds;

/* BLAS thread control (OpenBLAS from the scipy-openblas32 wheel). */
void fr_set_num_threads(int n);
int fr_get_num_threads(void);

#ifdef __cplusplus
}
#endif
#endif
