/*
 * The cell table: everything that makes one cell kind what it is, and nothing else.
 * Included once per dtype by fastrnn.c (REAL, SFX, EXP, TANH, STEP_FAST and the GATES_*_FAST
 * kernels of gates_avx2.h defined), after vmath.h.
 *
 * A kind is one entry of SFX(cells): its sizes (fastrnn.h's G, A, S, state count) and two row
 * functions, one forward step and one backward step of one batch row over nu hidden units.
 * The time loops (loops.h) are generic: they lay out buffers from the sizes and call the rows.
 * Adding a kind: write its two rows here, name it in the enum below and give it its table
 * entry, describe it in fastrnn/_cells.py (same code), and give the NumPy reference its math.
 *
 * Row arguments (block k of a G-block operand starts at k * its stride):
 *   forward  fwd(nu, leak, g, gs, r, bias, peep, ps, h, c, y, aux, as)
 *     g     (G blocks, stride gs) in: input projection; out: post-activation gates
 *     r     (G blocks, stride nu) the recurrent projection W_hh h
 *     bias  (2G-S blocks, stride nu) as gate_bias lays them out (loops.h)
 *     peep  (3 blocks, stride ps) LSTM peephole weights p_i, p_f, p_o, or NULL (other kinds:
 *           always NULL)
 *     h     (nu) in: entering state; out: leaving state.  c (nu) the cell state (2 states)
 *     y     (nu) out: the output.  aux (A blocks, stride as) out: saved for backward
 *   backward bwd(nu, leak, a, gs, aux, as, peep, dpeep, ps, hp, dh, dc, d, e, es, dhp)
 *     a     (G blocks, stride gs) saved activations;  aux as saved;  hp (nu) entering state
 *     peep  as in forward; dpeep (3 blocks, stride ps) the peephole gradients, accumulated (+=),
 *           given whenever peep is
 *     dh    (nu) total gradient w.r.t. the leaving state;  dc (nu) cell-state gradient, updated
 *     d     (G blocks, stride gs) out: gradient w.r.t. the gate pre-activations
 *     e     (G blocks, stride es) out, only for kinds with S < G: the recurrent-side gradients
 *     dhp   (nu) out: the direct (non-W_hh) part of the gradient w.r.t. the entering state
 */

#ifndef FASTRNN_CELL_KINDS
#define FASTRNN_CELL_KINDS
/* The kinds, in table order; fastrnn/_cells.py gives each the same code. */
enum { FR_RNN_TANH, FR_RNN_RELU, FR_LSTM, FR_GRU, FR_NUM_CELLS };
#endif

static inline REAL SFX(sigm)(REAL v) { return (REAL)1 / ((REAL)1 + EXP(-v)); }


/* ---- pointwise cell steps: one active batch row ------------------------------------------ */
/* Each gate block gets its own restrict pointer: with one base pointer at offsets j, H+j, ...
 * GCC guards the vector loop with a run-time overlap check that sends it down a scalar path. */

/* LSTM. gi..go (H each, in: input projection, out: activations i,f,g,o); ri..ro (H each):
 * recurrent projection; bi..bo (H each): b_ih + b_hh per gate (one pointer per block: indexing
 * one bias array at H + j made GCC gather it element by element); h, c (H): running state,
 * updated; y (H):
 * output; cp, tc (H): saved c entering the step and tanh(c) leaving it. */
HOT static void SFX(lstm_row)(int H, REAL *RS gi, REAL *RS gf, REAL *RS gg, REAL *RS go,
                              const REAL *RS ri, const REAL *RS rf, const REAL *RS rg,
                              const REAL *RS ro, const REAL *RS bi, const REAL *RS bf,
                              const REAL *RS bg, const REAL *RS bo, REAL *RS h, REAL *RS c,
                              REAL *RS y, REAL *RS cp, REAL *RS tc)
{
    if (STEP_FAST()) { /* float32 with AVX2 + FMA (gates_avx2.h) */
        GATES_LSTM_FAST(H, gi, gf, gg, go, ri, rf, rg, ro, bi, bf, bg, bo, h, c, y, cp, tc);
        return;
    }
    /* Two passes: one iteration of a single loop chains exp, division, the cell update, exp
     * and division again, longer than the out-of-order window can overlap across iterations. */
    for (int j = 0; j < H; ++j) {
        REAL i = SFX(sigm)(gi[j] + ri[j] + bi[j]);
        REAL f = SFX(sigm)(gf[j] + rf[j] + bf[j]);
        REAL g = TANH(gg[j] + rg[j] + bg[j]);
        REAL o = SFX(sigm)(go[j] + ro[j] + bo[j]);
        cp[j] = c[j];
        gi[j] = i; gf[j] = f; gg[j] = g; go[j] = o;
        c[j] = f * c[j] + i * g;
    }
    for (int j = 0; j < H; ++j) {
        REAL t = TANH(c[j]);
        tc[j] = t;
        h[j] = go[j] * t;
        y[j] = go[j] * t;
    }
}

/* LSTM with peepholes, ONNX's semantics (Gers & Schmidhuber 2000): i and f also see the cell
 * state entering the step, o the new one: i = sig(. + pi*c), f = sig(. + pf*c),
 * o = sig(. + po*c'). pi, pf, po (H each); the rest as lstm_row. o must wait for c', so
 * pass 1 leaves o's pre-activation in go and pass 2 finishes it. */
HOT static void SFX(lstmp_row)(int H, REAL *RS gi, REAL *RS gf, REAL *RS gg, REAL *RS go,
                               const REAL *RS ri, const REAL *RS rf, const REAL *RS rg,
                               const REAL *RS ro, const REAL *RS bi, const REAL *RS bf,
                               const REAL *RS bg, const REAL *RS bo, const REAL *RS pi,
                               const REAL *RS pf, const REAL *RS po, REAL *RS h, REAL *RS c,
                               REAL *RS y, REAL *RS cp, REAL *RS tc)
{
    if (STEP_FAST()) { /* float32 with AVX2 + FMA (gates_avx2.h) */
        GATES_LSTMP_FAST(H, gi, gf, gg, go, ri, rf, rg, ro, bi, bf, bg, bo, pi, pf, po, h, c, y, cp, tc);
        return;
    }
    for (int j = 0; j < H; ++j) {
        REAL cj = c[j];
        REAL i = SFX(sigm)(gi[j] + ri[j] + bi[j] + pi[j] * cj);
        REAL f = SFX(sigm)(gf[j] + rf[j] + bf[j] + pf[j] * cj);
        REAL g = TANH(gg[j] + rg[j] + bg[j]);
        cp[j] = cj;
        gi[j] = i; gf[j] = f; gg[j] = g;
        go[j] = go[j] + ro[j] + bo[j];
        c[j] = f * cj + i * g;
    }
    for (int j = 0; j < H; ++j) {
        REAL o = SFX(sigm)(go[j] + po[j] * c[j]);
        REAL t = TANH(c[j]);
        go[j] = o;
        tc[j] = t;
        h[j] = o * t;
        y[j] = o * t;
    }
}

/* GRU. gr, gz, gn (H each, in: input projection, out: activations r,z,n); rr, rz, rn (H each):
 * recurrent projection; br, bz, bn, bhn (H each): b_ir+b_hr, b_iz+b_hz, b_in, b_hn, the last
 * applied inside r*(...) as PyTorch does; hn (H): saved W_hn h + b_hn. */
HOT static void SFX(gru_row)(int H, REAL *RS gr, REAL *RS gz, REAL *RS gn, const REAL *RS rr,
                             const REAL *RS rz, const REAL *RS rn, const REAL *RS br,
                             const REAL *RS bz, const REAL *RS bn, const REAL *RS bhn,
                             REAL *RS h, REAL *RS y, REAL *RS hn)
{
    if (STEP_FAST()) { /* float32 with AVX2 + FMA (gates_avx2.h) */
        GATES_GRU_FAST(H, gr, gz, gn, rr, rz, rn, br, bz, bn, bhn, h, y, hn);
        return;
    }
    /* two passes, as in lstm_row: n's exp and division wait on r's */
    for (int j = 0; j < H; ++j) {
        REAL r = SFX(sigm)(gr[j] + rr[j] + br[j]);
        REAL a = rn[j] + bhn[j];
        hn[j] = a;
        gr[j] = r;
        gn[j] = gn[j] + bn[j] + r * a;
    }
    for (int j = 0; j < H; ++j) {
        REAL z = SFX(sigm)(gz[j] + rz[j] + bz[j]);
        REAL n = TANH(gn[j]);
        REAL hj = ((REAL)1 - z) * n + z * h[j];
        gz[j] = z; gn[j] = n;
        h[j] = hj;
        y[j] = hj;
    }
}

/* Elman step; with leak < 1 a leaky integrator h' = (1-leak) h + leak f(.). gx keeps f(.).
 * One straight loop per variant: GCC does not unswitch the relu/tanh choice by itself, and a
 * select between the two leaves the loop scalar. */
#define FR_RNN_LOOP(F, NEXT)                                                                     \
    for (int j = 0; j < H; ++j) {                                                                \
        REAL v = gx[j] + gh[j] + bias[j];                                                        \
        v = F;                                                                                   \
        REAL hn = NEXT;                                                                          \
        gx[j] = v;                                                                               \
        h[j] = hn;                                                                               \
        y[j] = hn;                                                                               \
    }
HOT static void SFX(rnn_row)(int H, int relu, REAL leak, REAL *RS gx, const REAL *RS gh,
                             const REAL *RS bias, REAL *RS h, REAL *RS y)
{
    if (!relu && STEP_FAST()) { /* float32 with AVX2 + FMA (gates_avx2.h) */
        GATES_RNN_TANH_FAST(H, (float)leak, gx, gh, bias, h, y);
        return;
    }
    /* leak == 1 has its own loops: (1-leak)*h would turn an infinite h into NaN. relu keeps NaN
     * (max(v, 0) as NumPy and PyTorch compute it): v < 0 is false for NaN, v > 0 would be too */
    if (relu && leak == (REAL)1) { FR_RNN_LOOP(v < 0 ? (REAL)0 : v, v) }
    else if (relu) { FR_RNN_LOOP(v < 0 ? (REAL)0 : v, ((REAL)1 - leak) * h[j] + leak * v) }
    else if (leak == (REAL)1) { FR_RNN_LOOP(TANH(v), v) }
    else { FR_RNN_LOOP(TANH(v), ((REAL)1 - leak) * h[j] + leak * v) }
}
#undef FR_RNN_LOOP

/* Per-row gradient of one step. dht (H): total gradient w.r.t. the state leaving the step.
 * Writes the gate-pre-activation gradients (d*, and the recurrent-side e* for GRU) and the
 * direct (non-GEMM) part of the gradient w.r.t. the entering state into dhp. */
HOT static void SFX(lstm_row_bwd)(int H, const REAL *RS ai, const REAL *RS af, const REAL *RS ag,
                                  const REAL *RS ao, const REAL *RS cp, const REAL *RS tc,
                                  const REAL *RS dht, REAL *RS dc, REAL *RS di, REAL *RS df,
                                  REAL *RS dg, REAL *RS dout, REAL *RS dhp)
{
    for (int j = 0; j < H; ++j) {
        REAL i = ai[j], f = af[j], g = ag[j], o = ao[j], t = tc[j];
        REAL dct = dc[j] + dht[j] * o * ((REAL)1 - t * t);
        di[j] = dct * g * i * ((REAL)1 - i);
        df[j] = dct * cp[j] * f * ((REAL)1 - f);
        dg[j] = dct * i * ((REAL)1 - g * g);
        dout[j] = dht[j] * t * o * ((REAL)1 - o);
        dc[j] = dct * f;
        dhp[j] = 0;
    }
}

/* Peephole LSTM's step gradient. c' = f*c + i*g is recomputed from the saved gates (not
 * saved: a third aux block would cost every LSTM's forward a store). o's pre-activation
 * gradient also reaches c' through po; i's and f's reach c through pi and pf. dpi, dpf, dpo
 * (H each) accumulate the peephole gradients. */
HOT static void SFX(lstmp_row_bwd)(int H, const REAL *RS ai, const REAL *RS af, const REAL *RS ag,
                                   const REAL *RS ao, const REAL *RS cp, const REAL *RS tc,
                                   const REAL *RS pi, const REAL *RS pf, const REAL *RS po,
                                   REAL *RS dpi, REAL *RS dpf, REAL *RS dpo, const REAL *RS dht,
                                   REAL *RS dc, REAL *RS di, REAL *RS df, REAL *RS dg,
                                   REAL *RS dout, REAL *RS dhp)
{
    for (int j = 0; j < H; ++j) {
        REAL i = ai[j], f = af[j], g = ag[j], o = ao[j], t = tc[j], c0 = cp[j];
        REAL c1 = f * c0 + i * g;
        REAL dop = dht[j] * t * o * ((REAL)1 - o);
        REAL dct = dc[j] + dht[j] * o * ((REAL)1 - t * t) + dop * po[j];
        REAL dip = dct * g * i * ((REAL)1 - i);
        REAL dfp = dct * c0 * f * ((REAL)1 - f);
        di[j] = dip;
        df[j] = dfp;
        dg[j] = dct * i * ((REAL)1 - g * g);
        dout[j] = dop;
        dc[j] = dct * f + dip * pi[j] + dfp * pf[j];
        dpi[j] += dip * c0;
        dpf[j] += dfp * c0;
        dpo[j] += dop * c1;
        dhp[j] = 0;
    }
}

/* Layer-normalised LSTM's step gradient (layer_norm: h = o*tanh(LN_c(c'))): as lstm_row_bwd,
 * with tc = tanh(LN_c(c')) saved and dcn (H) the gradient that reaches c' through LN_c (the
 * loop computes it: it needs the whole row). */
HOT static void SFX(lstmln_row_bwd)(int H, const REAL *RS ai, const REAL *RS af, const REAL *RS ag,
                                    const REAL *RS ao, const REAL *RS cp, const REAL *RS tc,
                                    const REAL *RS dcn, const REAL *RS dht, REAL *RS dc,
                                    REAL *RS di, REAL *RS df, REAL *RS dg, REAL *RS dout,
                                    REAL *RS dhp)
{
    for (int j = 0; j < H; ++j) {
        REAL i = ai[j], f = af[j], g = ag[j], o = ao[j], t = tc[j];
        REAL dct = dc[j] + dcn[j];
        di[j] = dct * g * i * ((REAL)1 - i);
        df[j] = dct * cp[j] * f * ((REAL)1 - f);
        dg[j] = dct * i * ((REAL)1 - g * g);
        dout[j] = dht[j] * t * o * ((REAL)1 - o);
        dc[j] = dct * f;
        dhp[j] = 0;
    }
}

HOT static void SFX(gru_row_bwd)(int H, const REAL *RS ar, const REAL *RS az, const REAL *RS an,
                                 const REAL *RS hn, const REAL *RS hp, const REAL *RS dht,
                                 REAL *RS dr, REAL *RS dz, REAL *RS dn, REAL *RS er, REAL *RS ez,
                                 REAL *RS en, REAL *RS dhp)
{
    for (int j = 0; j < H; ++j) {
        REAL r = ar[j], z = az[j], n = an[j];
        REAL dnp = dht[j] * ((REAL)1 - z) * ((REAL)1 - n * n);
        REAL drp = dnp * hn[j] * r * ((REAL)1 - r);
        REAL dzp = dht[j] * (hp[j] - n) * z * ((REAL)1 - z);
        dr[j] = drp; dz[j] = dzp; dn[j] = dnp;
        er[j] = drp; ez[j] = dzp; en[j] = dnp * r;
        dhp[j] = dht[j] * z;
    }
}

/* The relu derivative multiplies (a > 0 as 1 or 0), a select would not: a NaN or infinite
 * gradient times 0 is NaN, as in IEEE arithmetic and the NumPy reference. Without a leak the
 * state has no direct path (dhp = 0, not 0 * dht, which is NaN for an infinite dht). */
HOT static void SFX(rnn_row_bwd)(int H, int relu, REAL leak, const REAL *RS a,
                                 const REAL *RS dht, REAL *RS dgx, REAL *RS dhp)
{
    if (relu)
        for (int j = 0; j < H; ++j) dgx[j] = leak * dht[j] * (a[j] > 0 ? (REAL)1 : (REAL)0);
    else
        for (int j = 0; j < H; ++j) {
            REAL v = a[j];
            dgx[j] = leak * dht[j] * ((REAL)1 - v * v);
        }
    if (leak == (REAL)1) memset(dhp, 0, sizeof(REAL) * (size_t)H);
    else
        for (int j = 0; j < H; ++j) dhp[j] = ((REAL)1 - leak) * dht[j];
}

/* ---- the uniform row signatures the loops call ---------------------------------------------- */

typedef void (*SFX(fr_fwd_row))(int nu, REAL leak, REAL *g, ptrdiff_t gs, const REAL *r, const REAL *bias,
                                const REAL *peep, ptrdiff_t ps, REAL *h, REAL *c, REAL *y, REAL *aux,
                                ptrdiff_t as);
typedef void (*SFX(fr_bwd_row))(int nu, REAL leak, const REAL *a, ptrdiff_t gs, const REAL *aux, ptrdiff_t as,
                                const REAL *peep, REAL *dpeep, ptrdiff_t ps, const REAL *hp, const REAL *dh,
                                REAL *dc, REAL *d, REAL *e, ptrdiff_t es, REAL *dhp);

static void SFX(lstm_fwd)(int nu, REAL leak, REAL *g, ptrdiff_t gs, const REAL *r, const REAL *b,
                          const REAL *peep, ptrdiff_t ps, REAL *h, REAL *c, REAL *y, REAL *aux, ptrdiff_t as)
{
    (void)leak;
    if (peep)
        SFX(lstmp_row)(nu, g, g + gs, g + 2 * gs, g + 3 * gs, r, r + nu, r + 2 * nu, r + 3 * nu, b, b + nu,
                       b + 2 * nu, b + 3 * nu, peep, peep + ps, peep + 2 * ps, h, c, y, aux, aux + as);
    else
        SFX(lstm_row)(nu, g, g + gs, g + 2 * gs, g + 3 * gs, r, r + nu, r + 2 * nu, r + 3 * nu, b, b + nu,
                      b + 2 * nu, b + 3 * nu, h, c, y, aux, aux + as);
}

static void SFX(lstm_bwd)(int nu, REAL leak, const REAL *a, ptrdiff_t gs, const REAL *aux, ptrdiff_t as,
                          const REAL *peep, REAL *dpeep, ptrdiff_t ps, const REAL *hp, const REAL *dh,
                          REAL *dc, REAL *d, REAL *e, ptrdiff_t es, REAL *dhp)
{
    (void)leak; (void)hp; (void)e; (void)es;
    if (peep)
        SFX(lstmp_row_bwd)(nu, a, a + gs, a + 2 * gs, a + 3 * gs, aux, aux + as, peep, peep + ps,
                           peep + 2 * ps, dpeep, dpeep + ps, dpeep + 2 * ps, dh, dc, d, d + gs,
                           d + 2 * gs, d + 3 * gs, dhp);
    else
        SFX(lstm_row_bwd)(nu, a, a + gs, a + 2 * gs, a + 3 * gs, aux, aux + as, dh, dc, d, d + gs,
                          d + 2 * gs, d + 3 * gs, dhp);
}

static void SFX(gru_fwd)(int nu, REAL leak, REAL *g, ptrdiff_t gs, const REAL *r, const REAL *b,
                         const REAL *peep, ptrdiff_t ps, REAL *h, REAL *c, REAL *y, REAL *aux, ptrdiff_t as)
{
    (void)leak; (void)c; (void)as; (void)peep; (void)ps;
    SFX(gru_row)(nu, g, g + gs, g + 2 * gs, r, r + nu, r + 2 * nu, b, b + nu, b + 2 * nu, b + 3 * nu,
                 h, y, aux);
}

static void SFX(gru_bwd)(int nu, REAL leak, const REAL *a, ptrdiff_t gs, const REAL *aux, ptrdiff_t as,
                         const REAL *peep, REAL *dpeep, ptrdiff_t ps, const REAL *hp, const REAL *dh,
                         REAL *dc, REAL *d, REAL *e, ptrdiff_t es, REAL *dhp)
{
    (void)leak; (void)as; (void)dc; (void)peep; (void)dpeep; (void)ps;
    SFX(gru_row_bwd)(nu, a, a + gs, a + 2 * gs, aux, hp, dh, d, d + gs, d + 2 * gs, e, e + es,
                     e + 2 * es, dhp);
}

static void SFX(rnn_tanh_fwd)(int nu, REAL leak, REAL *g, ptrdiff_t gs, const REAL *r, const REAL *b,
                              const REAL *peep, ptrdiff_t ps, REAL *h, REAL *c, REAL *y, REAL *aux, ptrdiff_t as)
{
    (void)gs; (void)c; (void)aux; (void)as; (void)peep; (void)ps;
    SFX(rnn_row)(nu, 0, leak, g, r, b, h, y);
}

static void SFX(rnn_relu_fwd)(int nu, REAL leak, REAL *g, ptrdiff_t gs, const REAL *r, const REAL *b,
                              const REAL *peep, ptrdiff_t ps, REAL *h, REAL *c, REAL *y, REAL *aux, ptrdiff_t as)
{
    (void)gs; (void)c; (void)aux; (void)as; (void)peep; (void)ps;
    SFX(rnn_row)(nu, 1, leak, g, r, b, h, y);
}

static void SFX(rnn_tanh_bwd)(int nu, REAL leak, const REAL *a, ptrdiff_t gs, const REAL *aux, ptrdiff_t as,
                              const REAL *peep, REAL *dpeep, ptrdiff_t ps, const REAL *hp, const REAL *dh,
                              REAL *dc, REAL *d, REAL *e, ptrdiff_t es, REAL *dhp)
{
    (void)gs; (void)aux; (void)as; (void)hp; (void)dc; (void)e; (void)es; (void)peep; (void)dpeep; (void)ps;
    SFX(rnn_row_bwd)(nu, 0, leak, a, dh, d, dhp);
}

static void SFX(rnn_relu_bwd)(int nu, REAL leak, const REAL *a, ptrdiff_t gs, const REAL *aux, ptrdiff_t as,
                              const REAL *peep, REAL *dpeep, ptrdiff_t ps, const REAL *hp, const REAL *dh,
                              REAL *dc, REAL *d, REAL *e, ptrdiff_t es, REAL *dhp)
{
    (void)gs; (void)aux; (void)as; (void)hp; (void)dc; (void)e; (void)es; (void)peep; (void)dpeep; (void)ps;
    SFX(rnn_row_bwd)(nu, 1, leak, a, dh, d, dhp);
}

/* ---- the table --------------------------------------------------------------------------------- */

typedef struct {
    fr_cell_sizes n;   /* G, A, states, S */
    SFX(fr_fwd_row) fwd;
    SFX(fr_bwd_row) bwd;
} SFX(fr_cell_kind);

static const SFX(fr_cell_kind) SFX(cells)[FR_NUM_CELLS] = {
    /*               G  A  states S */
    [FR_RNN_TANH] = {{1, 0, 1, 1}, SFX(rnn_tanh_fwd), SFX(rnn_tanh_bwd)},
    [FR_RNN_RELU] = {{1, 0, 1, 1}, SFX(rnn_relu_fwd), SFX(rnn_relu_bwd)},
    [FR_LSTM]     = {{4, 2, 2, 4}, SFX(lstm_fwd), SFX(lstm_bwd)},
    [FR_GRU]      = {{3, 1, 1, 2}, SFX(gru_fwd), SFX(gru_bwd)},
};
