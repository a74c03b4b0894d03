/*
 * Kernel bodies, written once and compiled per dtype: fastrnn.c includes this file twice with
 *   REAL  float | double          SFX(name)  name##_f32 | name##_f64
 *   GEMM  scipy_cblas_sgemm | scipy_cblas_dgemm
 *   EXP, TANH  vectorisable fr_expf/fr_tanhf | fr_exp/fr_tanh
 *   STEP_FAST, STEP_PACK_NT, STEP_PACK_NN, STEP_MM  the per-step product with W_hh packed once
 *              (smallgemm.h, float32 on AVX2+FMA CPUs); STEP_FAST() is 0 where BLAS is used
 *   STEP_PACK_NT_UNITS, STEP_PACK_NN_UNITS  the same packing for one unit range's rows
 *   STEP_GEMV_NT  y = W v with W row-major and unpacked (fr_gemv_rows), used when STEP_FAST()
 *   GATES_LSTM_FAST, GATES_GRU_FAST, GATES_RNN_TANH_FAST  the FMA gate kernels, used when
 *              STEP_FAST()
 * The contract (shapes, saved buffers, accumulate rules) is in fastrnn.h. The file #undefs
 * these macros at its end.
 */

static inline REAL SFX(sigm)(REAL v) { return (REAL)1 / ((REAL)1 + EXP(-v)); }

/* Row-major C (M,N) = alpha * op(A) op(B) + beta * C, with op chosen by the ta/tb flags.
 * A single row (batch of one, streaming) or a single column (one input feature: the weight and
 * input gradients of W_ih) goes to GEMV: OpenBLAS's GEMM costs several times more there. */
static inline void SFX(gemm)(int ta, int tb, int M, int N, int K, const REAL *A, int lda,
                             const REAL *Bm, int ldb, REAL beta, REAL *C, int ldc)
{
    if (N == 1) {
        GEMV(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, ta ? K : M, ta ? M : K, (REAL)1, A, lda,
             Bm, tb ? 1 : ldb, beta, C, ldc);
        return;
    }
    if (M == 1 && !ta && tb && beta == (REAL)0 && STEP_FAST() && (long)N * K <= FR_GEMV_MAX_ELEMS) {
        STEP_GEMV_NT(N, K, Bm, ldb, A, C);
        return;
    }
    if (M == 1 && !ta) {
        GEMV(CblasRowMajor, tb ? CblasNoTrans : CblasTrans, tb ? N : K, tb ? K : N, (REAL)1,
             Bm, ldb, A, 1, beta, C, 1);
        return;
    }
    GEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
         M, N, K, (REAL)1, A, lda, Bm, ldb, beta, C, ldc);
}

/* Time position of batch row b at step s (see "Direction and variable lengths"). */
static inline int SFX(pos)(int s, int b, int T, int reverse, const int *lengths)
{
    if (!reverse) return s;
    return (lengths ? lengths[b] : T) - 1 - s;
}

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
    if (STEP_FAST()) { /* float32 with AVX2 + FMA (smallgemm.h) */
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

/* GRU. gr, gz, gn (H each, in: input projection, out: activations r,z,n); rr, rz, rn (H each):
 * recurrent projection; br, bz, bn, bhn (H each): b_ir+b_hr, b_iz+b_hz, b_in, b_hn, the last
 * applied inside r*(...) as PyTorch does; hn (H): saved W_hn h + b_hn. */
HOT static void SFX(gru_row)(int H, REAL *RS gr, REAL *RS gz, REAL *RS gn, const REAL *RS rr,
                             const REAL *RS rz, const REAL *RS rn, const REAL *RS br,
                             const REAL *RS bz, const REAL *RS bn, const REAL *RS bhn,
                             REAL *RS h, REAL *RS y, REAL *RS hn)
{
    if (STEP_FAST()) { /* float32 with AVX2 + FMA (smallgemm.h) */
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
    if (!relu && STEP_FAST()) { /* float32 with AVX2 + FMA (smallgemm.h) */
        GATES_RNN_TANH_FAST(H, (float)leak, gx, gh, bias, h, y);
        return;
    }
    /* leak == 1 has its own loops: (1-leak)*h would turn an infinite h into NaN */
    if (relu && leak == (REAL)1) { FR_RNN_LOOP(v > 0 ? v : (REAL)0, v) }
    else if (relu) { FR_RNN_LOOP(v > 0 ? v : (REAL)0, ((REAL)1 - leak) * h[j] + leak * v) }
    else if (leak == (REAL)1) { FR_RNN_LOOP(TANH(v), v) }
    else { FR_RNN_LOOP(TANH(v), ((REAL)1 - leak) * h[j] + leak * v) }
}
#undef FR_RNN_LOOP

/* ---- forward ---------------------------------------------------------------------------- */

/* bias (G*nu + nu): the biases of units [u0, u0+nu) of every gate block as the gate loops add
 * them (u0 = 0, nu = H: all units). b_ih and b_hh are summed wherever they enter additively;
 * GRU keeps b_hn apart, inside r*(.): its blocks are b_ir+b_hr, b_iz+b_hz, b_in, b_hn. */
static void SFX(gate_bias)(fr_cell cell, int H, int u0, int nu, const REAL *b_ih, const REAL *b_hh,
                           REAL *bias)
{
    const int G = fr_gates(cell);
    for (int k = 0; k < G * nu + nu; ++k) bias[k] = 0;
    if (!b_ih) return;
    for (int g = 0; g < G; ++g)
        for (int j = 0; j < nu; ++j) bias[g * nu + j] = b_ih[g * H + u0 + j] + b_hh[g * H + u0 + j];
    if (cell == FR_GRU)
        for (int j = 0; j < nu; ++j) {
            bias[2 * nu + j] = b_ih[2 * H + u0 + j];
            bias[3 * nu + j] = b_hh[2 * H + u0 + j];
        }
}

static int SFX(max_length)(int T, int b0, int b1, const int *lengths)
{
    if (!lengths) return T;
    int m = 0;
    for (int b = b0; b < b1; ++b) if (lengths[b] > m) m = lengths[b];
    return m;
}

void SFX(fr_project)(fr_cell cell, int T, int B, int D, int H, const REAL *x, const REAL *w_ih,
                     REAL *act)
{
    SFX(gemm)(0, 1, T * B, fr_gates(cell) * H, D, x, D, w_ih, D, (REAL)0, act, fr_gates(cell) * H);
}

void SFX(fr_recur)(fr_cell cell, int T, int B, int D, int H, int b0, int b1, int reverse,
                   double leak, const int *lengths, const REAL *x, const REAL *w_ih,
                   const REAL *h0, const REAL *c0, const REAL *w_hh,
                   const REAL *b_ih, const REAL *b_hh, REAL *y, int ldy, REAL *h_n, REAL *c_n,
                   REAL *act, REAL *hprev, int ldh, REAL *aux, REAL *ws)
{
    const int G = fr_gates(cell), GH = G * H, A = fr_aux(cell), nb = b1 - b0;
    const int fused = x != NULL;
    REAL *gh = ws;                        /* (nb,GH) recurrent projection of the current step */
    REAL *h = ws + (long)nb * GH;         /* (nb,H) running state */
    REAL *c = h + (long)nb * H;           /* (nb,H) running cell state, LSTM */
    REAL *aux_scratch = c + (long)nb * H; /* (A*H) where inference writes the aux it won't keep,
                                             so the gate loops have no branch and vectorise */
    REAL *bias = aux_scratch + (long)A * H; /* (GH+H) the biases as the gate loops add them */
    REAL *gx = bias + GH + H;             /* fused: (nb,GH) input projection of the current step */
    REAL *xs = gx + (fused ? (long)nb * GH : 0); /* fused: (nb,D) x rows gathered when their
                                                    positions differ (reverse with lengths) */
    REAL *packed = xs + (fused ? (long)nb * D : 0); /* (fr_packed_size(GH, H)) W_hh for STEP_MM */
    REAL *packed_ih = packed + fr_packed_size(GH, H); /* fused: (fr_packed_size(GH, D)) W_ih */
    const int maxlen = SFX(max_length)(T, b0, b1, lengths);
    const int fast = maxlen >= FR_PACK_MIN_STEPS && FR_PACK_OK_ROWS(nb) && STEP_FAST();

    if (lengths) {
        /* Padded positions are never visited: give them defined values (outputs zero, and
         * hprev zero so backward's whole-sequence GEMMs multiply zeros by zeros there). */
        for (int t = 0; t < T; ++t)
            for (int b = b0; b < b1; ++b)
                if (t >= lengths[b]) {
                    memset(y + ((long)t * B + b) * ldy, 0, sizeof(REAL) * H);
                    if (hprev) memset(hprev + ((long)t * B + b) * ldh, 0, sizeof(REAL) * H);
                }
    }
    /* b_ih and b_hh are added in the gate loops, not by the input GEMM: filling all T*B rows
     * of act with them first cost a full extra pass over the largest buffer. Both biases are
     * summed wherever they enter additively; GRU keeps b_hn apart, inside r*(.). */
    SFX(gate_bias)(cell, H, 0, H, b_ih, b_hh, bias);
    if (fast) STEP_PACK_NT(GH, H, w_hh, packed);
    if (fast && fused) STEP_PACK_NT(GH, D, w_ih, packed_ih);
    memcpy(h, h0 + (long)b0 * H, sizeof(REAL) * nb * H);
    if (cell == FR_LSTM) memcpy(c, c0 + (long)b0 * H, sizeof(REAL) * nb * H);

    /* A training forward keeps the activations in act: the projection then goes straight
     * into act's rows, which sit together unless lengths differ in the reverse direction. */
    const int direct = fused && hprev && !(reverse && lengths);
    for (int s = 0; s < maxlen; ++s) {
        REAL *gxs = direct ? act + ((long)(reverse ? T - 1 - s : s) * B + b0) * GH : gx;
        if (fused) {
            /* The input projection of this step's rows, while W_ih is still in cache: no
             * (T,B,G*H) pass through memory. Rows share one time position unless lengths
             * differ in the reverse direction. */
            const REAL *xa = x + ((long)(reverse ? T - 1 - s : s) * B + b0) * D;
            if (reverse && lengths) {
                for (int i = 0; i < nb; ++i) {
                    const int b = b0 + i;
                    REAL *xr = xs + (long)i * D;
                    if (s < lengths[b])
                        memcpy(xr, x + ((long)(lengths[b] - 1 - s) * B + b) * D, sizeof(REAL) * D);
                    else memset(xr, 0, sizeof(REAL) * D);
                }
                xa = xs;
            }
            if (fast) STEP_MM(nb, GH, D, xa, D, packed_ih, 0, gxs, GH);
            else SFX(gemm)(0, 1, nb, GH, D, xa, D, w_ih, D, (REAL)0, gxs, GH);
        }
        if (fast) STEP_MM(nb, GH, H, h, H, packed, 0, gh, GH);
        else SFX(gemm)(0, 1, nb, GH, H, h, H, w_hh, H, (REAL)0, gh, GH);
        for (int i = 0; i < nb; ++i) {
            const int b = b0 + i;
            if (lengths && s >= lengths[b]) continue;
            const long row = (long)SFX(pos)(s, b, T, reverse, lengths) * B + b;
            REAL *hb = h + (long)i * H;
            REAL *gxr = fused && !direct ? gx + (long)i * GH : act + row * GH, *yr = y + row * ldy;
            const REAL *ghr = gh + (long)i * GH;
            REAL *auxr = hprev ? aux + row * A * H : aux_scratch;
            if (hprev) memcpy(hprev + row * ldh, hb, sizeof(REAL) * H);
            switch (cell) {
            case FR_LSTM:
                SFX(lstm_row)(H, gxr, gxr + H, gxr + 2 * H, gxr + 3 * H, ghr, ghr + H, ghr + 2 * H,
                              ghr + 3 * H, bias, bias + H, bias + 2 * H, bias + 3 * H, hb,
                              c + (long)i * H, yr, auxr, auxr + H);
                break;
            case FR_GRU:
                SFX(gru_row)(H, gxr, gxr + H, gxr + 2 * H, ghr, ghr + H, ghr + 2 * H, bias, bias + H,
                             bias + 2 * H, bias + 3 * H, hb, yr, auxr);
                break;
            default:
                SFX(rnn_row)(H, cell == FR_RNN_RELU, (REAL)leak, gxr, ghr, bias, hb, yr);
                break;
            }
            if (fused && hprev && !direct) memcpy(act + row * GH, gxr, sizeof(REAL) * GH);
        }
    }
    memcpy(h_n + (long)b0 * H, h, sizeof(REAL) * nb * H);
    if (cell == FR_LSTM) memcpy(c_n + (long)b0 * H, c, sizeof(REAL) * nb * H);
}

void SFX(fr_forward)(fr_cell cell, int T, int B, int D, int H, int reverse, double leak,
                     const int *lengths,
                     const REAL *x, const REAL *h0, const REAL *c0,
                     const REAL *w_ih, const REAL *w_hh, const REAL *b_ih, const REAL *b_hh,
                     REAL *y, int ldy, REAL *h_n, REAL *c_n,
                     REAL *act, REAL *hprev, REAL *aux, REAL *ws)
{
    SFX(fr_project)(cell, T, B, D, H, x, w_ih, act);
    SFX(fr_recur)(cell, T, B, D, H, 0, B, reverse, leak, lengths, NULL, NULL, h0, c0, w_hh, b_ih, b_hh,
                  y, ldy, h_n, c_n, act, hprev, H, aux, ws);
}

/* ---- backward ------------------------------------------------------------------------- */

/* acc (n) += v (n) */
HOT static void SFX(add_to)(int n, REAL *RS acc, const REAL *RS v)
{
    for (int j = 0; j < n; ++j) acc[j] += v[j];
}

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

HOT static void SFX(rnn_row_bwd)(int H, int relu, REAL leak, const REAL *RS a,
                                 const REAL *RS dht, REAL *RS dgx, REAL *RS dhp)
{
    if (relu)
        for (int j = 0; j < H; ++j) {
            REAL d = leak * dht[j];
            dgx[j] = a[j] > 0 ? d : (REAL)0;
            dhp[j] = ((REAL)1 - leak) * dht[j];
        }
    else
        for (int j = 0; j < H; ++j) {
            REAL v = a[j];
            dgx[j] = leak * dht[j] * ((REAL)1 - v * v);
            dhp[j] = ((REAL)1 - leak) * dht[j];
        }
}

void SFX(fr_recur_backward)(fr_cell cell, int T, int B, int H, int b0, int b1, int reverse,
                            double leak, const int *lengths, const REAL *w_hh, const REAL *act,
                            const REAL *hprev, int ldh, const REAL *aux, const REAL *dy, int ldy,
                            const REAL *dh_n, const REAL *dc_n, REAL *dh0, REAL *dc0,
                            REAL *dgx, REAL *dgh, REAL *dhs, REAL *dbias, int D,
                            const REAL *w_ih, REAL *dx, REAL *ws)
{
    const int GH = fr_gates(cell) * H, nb = b1 - b0;
    if (dbias) memset(dbias, 0, sizeof(REAL) * (GH + (cell == FR_GRU ? H : 0)));
    REAL *dh = ws;                      /* (nb,H) gradient w.r.t. the state leaving step s */
    REAL *dhp = ws + (long)nb * H;      /* (nb,H) same for the state entering step s */
    REAL *dc = ws + 2L * nb * H;        /* (nb,H) LSTM cell-state gradient, updated in place */
    REAL *step = ws + 3L * nb * H;      /* (nb,GH) this step's recurrent-side gate gradients,
                                           gathered when rows sit at different time positions */
    REAL *packed = step + (long)nb * GH; /* (fr_packed_size(H, GH)) W_hh for STEP_MM */
    REAL *packed_ih = packed + fr_packed_size(H, GH); /* (fr_packed_size(D, GH)) W_ih, with dx */
    /* Each step's recurrent-side gate gradients feed one product with W_hh. They are read
     * straight from dgx's rows, unless those rows sit at different time positions (reverse with
     * lengths) or differ from dgx (GRU's n block, scaled by r): then they are gathered in step. */
    const int gathered = (reverse && lengths != NULL) || cell == FR_GRU;
    const int maxlen = SFX(max_length)(T, b0, b1, lengths);
    const int fast = maxlen >= FR_PACK_MIN_STEPS && FR_PACK_OK_ROWS(nb) && STEP_FAST();

    if (lengths) {
        /* Padded positions must contribute nothing to the whole-sequence GEMMs. */
        for (int t = 0; t < T; ++t) {
            memset(dgx + ((long)t * B + b0) * GH, 0, sizeof(REAL) * nb * GH);
            if (dgh) memset(dgh + ((long)t * B + b0) * H, 0, sizeof(REAL) * nb * H);
            if (dhs) memset(dhs + ((long)t * B + b0) * H, 0, sizeof(REAL) * nb * H);
        }
    }
    if (fast) STEP_PACK_NN(H, GH, w_hh, packed);
    /* dx in the loop: each step's dgx rows are still in cache, where a whole-sequence GEMM
     * afterwards reads (and packs) all of dgx again. The rows of a step sit together in dgx and
     * dx unless lengths differ in the reverse direction; then each row goes on its own, and
     * the padded positions, which no step visits, are zeroed here. */
    const int dx_rows = dx && !(reverse && lengths);
    if (dx && fast) STEP_PACK_NN(D, GH, w_ih, packed_ih);
    if (dx && !dx_rows)
        for (int t = 0; t < T; ++t)
            for (int b = b0; b < b1; ++b)
                if (t >= lengths[b]) memset(dx + ((long)t * B + b) * D, 0, sizeof(REAL) * D);
    if (dh_n) memcpy(dh, dh_n + (long)b0 * H, sizeof(REAL) * nb * H);
    else memset(dh, 0, sizeof(REAL) * nb * H);
    if (cell == FR_LSTM) {
        if (dc_n) memcpy(dc, dc_n + (long)b0 * H, sizeof(REAL) * nb * H);
        else memset(dc, 0, sizeof(REAL) * nb * H);
    }

    for (int s = maxlen - 1; s >= 0; --s) {
        for (int i = 0; i < nb; ++i) {
            const int b = b0 + i;
            REAL *dhb = dh + (long)i * H, *dhpb = dhp + (long)i * H;
            if (lengths && s >= lengths[b]) {
                /* inactive: the state passes through unchanged, and so does its gradient */
                memcpy(dhpb, dhb, sizeof(REAL) * H);
                if (gathered) memset(step + (long)i * GH, 0, sizeof(REAL) * GH);
                continue;
            }
            const long row = (long)SFX(pos)(s, b, T, reverse, lengths) * B + b;
            const REAL *a = act + row * GH;
            REAL *d = dgx + row * GH;
            if (dy) {
                const REAL *dyr = dy + row * ldy;
                for (int j = 0; j < H; ++j) dhb[j] += dyr[j];
            }
            if (dhs) memcpy(dhs + row * H, dhb, sizeof(REAL) * H);
            switch (cell) {
            case FR_LSTM:
                SFX(lstm_row_bwd)(H, a, a + H, a + 2 * H, a + 3 * H, aux + row * 2L * H,
                                  aux + row * 2L * H + H, dhb, dc + (long)i * H,
                                  d, d + H, d + 2 * H, d + 3 * H, dhpb);
                break;
            case FR_GRU: {
                REAL *e = step + (long)i * GH;
                SFX(gru_row_bwd)(H, a, a + H, a + 2 * H, aux + row * H, hprev + row * ldh, dhb,
                                 d, d + H, d + 2 * H, e, e + H, e + 2 * H, dhpb);
                memcpy(dgh + row * H, e + 2 * H, sizeof(REAL) * H);
                break;
            }
            default:
                SFX(rnn_row_bwd)(H, cell == FR_RNN_RELU, (REAL)leak, a, dhb, d, dhpb);
                break;
            }
            if (gathered && cell != FR_GRU) memcpy(step + (long)i * GH, d, sizeof(REAL) * GH);
            if (dbias) {
                /* bias gradients while the row is in L1: a separate pass over dgx after the
                 * loop re-read the whole (T,B,G*H) buffer from memory */
                SFX(add_to)(GH, dbias, d);
                if (cell == FR_GRU) SFX(add_to)(H, dbias + GH, dgh + row * H);
            }
        }
        const REAL *dstep = gathered
            ? step : dgx + ((long)SFX(pos)(s, 0, T, reverse, NULL) * B + b0) * GH;
        if (fast) STEP_MM(nb, H, GH, dstep, GH, packed, 1, dhp, H);
        else SFX(gemm)(0, 0, nb, H, GH, dstep, GH, w_hh, H, (REAL)1, dhp, H);
        if (dx_rows) {
            const long r = (long)SFX(pos)(s, 0, T, reverse, NULL) * B + b0;
            if (fast) STEP_MM(nb, D, GH, dgx + r * GH, GH, packed_ih, 0, dx + r * D, D);
            else SFX(gemm)(0, 0, nb, D, GH, dgx + r * GH, GH, w_ih, D, (REAL)0, dx + r * D, D);
        } else if (dx)
            for (int i = 0; i < nb; ++i) {
                const int b = b0 + i;
                if (s >= lengths[b]) continue;
                const long row = (long)SFX(pos)(s, b, T, reverse, lengths) * B + b;
                SFX(gemm)(0, 0, 1, D, GH, dgx + row * GH, GH, w_ih, D, (REAL)0, dx + row * D, D);
            }
        REAL *tmp = dh; dh = dhp; dhp = tmp;
    }
    memcpy(dh0 + (long)b0 * H, dh, sizeof(REAL) * nb * H);
    if (cell == FR_LSTM) memcpy(dc0 + (long)b0 * H, dc, sizeof(REAL) * nb * H);
}

void SFX(fr_backward_params)(fr_cell cell, int T, int B, int D, int H, int g0, int g1,
                             long r0, long r1, const REAL *x, int ldx, const REAL *w_ih,
                             const REAL *hprev, int ldh, const REAL *dgx, const REAL *dgh, REAL *dx,
                             int accumulate_dx, REAL *dw_ih, REAL *dw_hh, REAL *db_ih, REAL *db_hh,
                             REAL *ws)
{
    const int GH = fr_gates(cell) * H;
    const long TB = (long)T * B;
    /* Whole-sequence GEMMs: one pass over all T*B rows instead of T small ones. Weight-gradient
     * rows g0..g1 read a column block of dgx (leading dimension GH); dx rows r0..r1 read a row
     * block. Disjoint ranges write disjoint memory, so calls can run concurrently. The
     * recurrent side equals dgx, except GRU's n rows, which come from dgh (leading dimension H). */
    if (g1 > g0) {
        const int split = cell == FR_GRU ? 2 * H : GH; /* rows below read dgx, rows above dgh */
        const int a1 = g1 < split ? g1 : split, n0 = g0 > split ? g0 : split;
        /* x and hprev side by side in one buffer: rows below split take both weight gradients
         * from one GEMM, so dgx's column block is packed once instead of once per weight (the
         * packing costs as much as the arithmetic when D is small) */
        const int cat = ws && a1 > g0 && hprev == x + D && ldx == D + H && ldh == D + H;
        if (cat) {
            SFX(gemm)(1, 0, a1 - g0, D + H, (int)TB, dgx + g0, GH, x, ldx, (REAL)0,
                      ws + (long)g0 * (D + H), D + H);
            for (int k = g0; k < a1; ++k) {
                const REAL *w = ws + (long)k * (D + H);
                SFX(add_to)(D, dw_ih + (long)k * D, w);
                SFX(add_to)(H, dw_hh + (long)k * H, w + D);
            }
        }
        const int i0 = cat ? a1 : g0; /* dw_ih rows still to do */
        if (g1 > i0)
            SFX(gemm)(1, 0, g1 - i0, D, (int)TB, dgx + i0, GH, x, ldx, (REAL)1, dw_ih + (long)i0 * D, D);
        if (a1 > g0 && !cat)
            SFX(gemm)(1, 0, a1 - g0, H, (int)TB, dgx + g0, GH, hprev, ldh, (REAL)1, dw_hh + (long)g0 * H, H);
        if (g1 > n0)
            SFX(gemm)(1, 0, g1 - n0, H, (int)TB, dgh + (n0 - split), H, hprev, ldh, (REAL)1,
                      dw_hh + (long)n0 * H, H);
        /* db_ih and db_hh are both given or both NULL (a layer has biases or not); one pass
         * feeds both sums where the two biases enter additively */
        if (db_ih) {
            for (long m = 0; m < TB; ++m)
                for (int k = g0; k < a1; ++k) {
                    const REAL v = dgx[m * GH + k];
                    db_ih[k] += v;
                    db_hh[k] += v;
                }
            for (long m = 0; m < TB; ++m)
                for (int k = n0; k < g1; ++k) {
                    db_ih[k] += dgx[m * GH + k];
                    db_hh[k] += dgh[m * H + k - split];
                }
        }
    }
    if (dx && r1 > r0)
        SFX(gemm)(0, 0, (int)(r1 - r0), D, GH, dgx + r0 * GH, GH, w_ih, D,
                  accumulate_dx ? (REAL)1 : (REAL)0, dx + r0 * D, D);
}

void SFX(fr_backward)(fr_cell cell, int T, int B, int D, int H, int reverse, double leak,
                      const int *lengths,
                      const REAL *x, const REAL *w_ih, const REAL *w_hh,
                      const REAL *act, const REAL *hprev, const REAL *aux,
                      const REAL *dy, int ldy, const REAL *dh_n, const REAL *dc_n,
                      REAL *dx, int accumulate_dx, REAL *dh0, REAL *dc0,
                      REAL *dw_ih, REAL *dw_hh, REAL *db_ih, REAL *db_hh,
                      REAL *dgx, REAL *dgh, REAL *ws)
{
    SFX(fr_recur_backward)(cell, T, B, H, 0, B, reverse, leak, lengths, w_hh, act, hprev, H, aux,
                           dy, ldy, dh_n, dc_n, dh0, dc0, dgx, dgh, NULL, NULL, D, w_ih, NULL, ws);
    SFX(fr_backward_params)(cell, T, B, D, H, 0, fr_gates(cell) * H, 0, (long)T * B, x, D, w_ih,
                            hprev, H, dgx, dgh, dx, accumulate_dx, dw_ih, dw_hh, db_ih, db_hh, NULL);
}

/* ---- one cell step for a range of hidden units -------------------------------------------- */
/* A streaming cell step reads all of W_ih and W_hh (an L2's worth at H = 128) for one row, so
 * its time is the weight read. Two calls on two cores, each owning units [u0, u0+nu) of every
 * gate block, each read half the weights, which then stay in their own core's L2 from step to
 * step. The calls are independent: each reads all of x and h and writes only its units. */

long SFX(fr_cell_units_ws_size)(fr_cell cell, int B, int nu)
{
    const int G = fr_gates(cell);
    return 2L * B * G * nu + (long)(G + 1) * nu + nu + (long)fr_aux(cell) * nu;
}

void SFX(fr_cell_units)(fr_cell cell, int B, int D, int H, int u0, int nu, const REAL *x,
                        const REAL *h, const REAL *c, const REAL *w_ih, const REAL *w_hh,
                        const REAL *b_ih, const REAL *b_hh, REAL *h1, REAL *c1, REAL *act,
                        REAL *hprev, REAL *aux, REAL *ws)
{
    const int G = fr_gates(cell), GH = G * H, A = fr_aux(cell), GU = G * nu;
    REAL *gx = ws;                         /* (B,GU) input projection, where act is not kept */
    REAL *gh = gx + (long)B * GU;          /* (B,GU) recurrent projection */
    REAL *bias = gh + (long)B * GU;        /* (GU+nu) the biases as the gate loops add them */
    REAL *y = bias + GU + nu;              /* (nu) the output copy the gate loops write */
    REAL *aux_scratch = y + nu;            /* (A*nu) inference's unkept aux */
    SFX(gate_bias)(cell, H, u0, nu, b_ih, b_hh, bias);
    /* In training the projections of gate block g land in act's columns g*H+u0.. directly. */
    REAL *gxb = act ? act + u0 : gx;
    const int ldg = act ? GH : GU, gstride = act ? H : nu;
    for (int g = 0; g < G; ++g) {
        SFX(gemm)(0, 1, B, nu, D, x, D, w_ih + ((long)g * H + u0) * D, D, (REAL)0, gxb + g * gstride, ldg);
        SFX(gemm)(0, 1, B, nu, H, h, H, w_hh + ((long)g * H + u0) * H, H, (REAL)0, gh + g * nu, GU);
    }
    for (int b = 0; b < B; ++b) {
        REAL *gr = gxb + (long)b * ldg;
        const REAL *ghr = gh + (long)b * GU;
        REAL *hb = h1 + (long)b * H + u0;
        memcpy(hb, h + (long)b * H + u0, sizeof(REAL) * nu); /* GRU and leaky units read it */
        if (hprev) memcpy(hprev + (long)b * H + u0, h + (long)b * H + u0, sizeof(REAL) * nu);
        REAL *auxr = aux ? aux + (long)b * A * H + u0 : aux_scratch;
        const int auxs = aux ? H : nu;
        switch (cell) {
        case FR_LSTM: {
            REAL *cb = c1 + (long)b * H + u0;
            memcpy(cb, c + (long)b * H + u0, sizeof(REAL) * nu);
            SFX(lstm_row)(nu, gr, gr + gstride, gr + 2 * gstride, gr + 3 * gstride, ghr, ghr + nu,
                          ghr + 2 * nu, ghr + 3 * nu, bias, bias + nu, bias + 2 * nu, bias + 3 * nu,
                          hb, cb, y, auxr, auxr + auxs);
            break;
        }
        case FR_GRU:
            SFX(gru_row)(nu, gr, gr + gstride, gr + 2 * gstride, ghr, ghr + nu, ghr + 2 * nu, bias,
                         bias + nu, bias + 2 * nu, bias + 3 * nu, hb, y, auxr);
            break;
        default:
            SFX(rnn_row)(nu, cell == FR_RNN_RELU, (REAL)1, gr, ghr, bias, hb, y);
            break;
        }
    }
}

/* ---- batch of one, hidden units split in two tasks ---------------------------------------- */
/* A single sequence has no batch rows to share out, so each step is cut into two tasks, task q
 * owning the hidden units [u_q, u_q+1) of every gate block (u = 0, mid, H) and streaming only its
 * rows of W_hh. Two threads claim the tasks of each step as soon as the previous step is
 * complete (fr_claim); every task's state lives in `shared`, so one thread alone can run both,
 * which is what happens when the other is descheduled on a busy machine. */

/* Per-task part of `shared`, in elements, for nmax = the larger task's units. */
static long SFX(units_task_size)(fr_cell cell, int T, int H, int nmax, int backward)
{
    const int GN = fr_gates(cell) * nmax, pack = T >= FR_PACK_MIN_STEPS && STEP_FAST();
    if (backward) return 3L * nmax + GN + (pack ? fr_packed_size(H, GN) : 0);
    return 2L * GN + 2L * nmax + (long)fr_aux(cell) * nmax + (pack ? fr_packed_size(GN, H) : 0);
}

long SFX(fr_units_shared_size)(fr_cell cell, int T, int H, int mid, int backward)
{
    const int nmax = mid > H - mid ? mid : H - mid;
    return (backward ? 4L * H : 2L * H) + 2 * SFX(units_task_size)(cell, T, H, nmax, backward);
}

void SFX(fr_recur_units)(fr_cell cell, int T, int H, int mid, int part, int reverse, double leak,
                         const REAL *h0, const REAL *c0, const REAL *w_hh, const REAL *b_ih,
                         const REAL *b_hh, REAL *y, int ldy, REAL *h_n, REAL *c_n, REAL *act,
                         REAL *hprev, int ldh, REAL *aux, int *sync, REAL *shared)
{
    const int G = fr_gates(cell), GH = G * H, A = fr_aux(cell);
    const int nmax = mid > H - mid ? mid : H - mid, GN = G * nmax;
    const int fast = T >= FR_PACK_MIN_STEPS && STEP_FAST();
    const long TS = SFX(units_task_size)(cell, T, H, nmax, 0);
    REAL *hb[2] = {shared, shared + H}; /* (H) each: the state leaving odd / even steps */
    int q, idx;

    while (fr_claim(sync, T, part, &q, &idx)) {
        const int u0 = q ? mid : 0, nu = q ? H - mid : mid, GU = G * nu;
        REAL *gh = shared + 2L * H + q * TS; /* (GU) this step's recurrent projection */
        REAL *c = gh + GN;                   /* (nu) the task's cell state, LSTM */
        REAL *bias = c + nmax;               /* (GU+nu) its biases as the gate loops add them */
        REAL *aux_scratch = bias + GN + nmax; /* (A*nu) inference's unkept aux */
        REAL *packed = aux_scratch + (long)A * nmax; /* (fr_packed_size(GU, H)) its W_hh rows */
        if (idx == 0) {
            SFX(gate_bias)(cell, H, u0, nu, b_ih, b_hh, bias);
            if (fast) STEP_PACK_NT_UNITS(G, H, u0, nu, H, w_hh, packed);
            if (cell == FR_LSTM) memcpy(c, c0 + u0, sizeof(REAL) * nu);
        }
        const REAL *cur = idx ? hb[idx & 1] : h0;
        REAL *nxt = hb[(idx + 1) & 1] + u0;
        if (fast) STEP_MM(1, GU, H, cur, H, packed, 0, gh, GU);
        else
            for (int g = 0; g < G; ++g)
                SFX(gemm)(0, 1, 1, nu, H, cur, H, w_hh + ((long)g * H + u0) * H, H, (REAL)0, gh + g * nu, nu);
        const long row = reverse ? T - 1 - idx : idx;
        REAL *gx = act + row * GH, *yr = y + row * ldy + u0;
        REAL *auxr = hprev ? aux + row * A * H : NULL;
        if (hprev) memcpy(hprev + row * ldh + u0, cur + u0, sizeof(REAL) * nu);
        memcpy(nxt, cur + u0, sizeof(REAL) * nu); /* GRU and leaky units read the old state */
        switch (cell) {
        case FR_LSTM:
            SFX(lstm_row)(nu, gx + u0, gx + H + u0, gx + 2 * H + u0, gx + 3 * H + u0, gh, gh + nu,
                          gh + 2 * nu, gh + 3 * nu, bias, bias + nu, bias + 2 * nu, bias + 3 * nu,
                          nxt, c, yr, auxr ? auxr + u0 : aux_scratch,
                          auxr ? auxr + H + u0 : aux_scratch + nu);
            break;
        case FR_GRU:
            SFX(gru_row)(nu, gx + u0, gx + H + u0, gx + 2 * H + u0, gh, gh + nu, gh + 2 * nu, bias,
                         bias + nu, bias + 2 * nu, bias + 3 * nu, nxt, yr,
                         auxr ? auxr + u0 : aux_scratch);
            break;
        default:
            SFX(rnn_row)(nu, cell == FR_RNN_RELU, (REAL)leak, gx + u0, gh, bias, nxt, yr);
            break;
        }
        fr_task_done(sync);
    }
    if (part == 0) { /* fr_claim returned 0: every task of every step is complete */
        memcpy(h_n, hb[T & 1], sizeof(REAL) * H);
        if (cell == FR_LSTM)
            for (int t = 0; t < 2; ++t)
                memcpy(c_n + (t ? mid : 0), shared + 2L * H + t * TS + GN, sizeof(REAL) * (t ? H - mid : mid));
    }
}

void SFX(fr_recur_backward_units)(fr_cell cell, int T, int H, int mid, int part, int reverse,
                                  double leak, const REAL *w_hh, const REAL *act,
                                  const REAL *hprev, int ldh, const REAL *aux, const REAL *dy, int ldy,
                                  const REAL *dh_n, const REAL *dc_n, REAL *dh0, REAL *dc0,
                                  REAL *dgx, REAL *dgh, REAL *dhs, REAL *dbias, int *sync,
                                  REAL *shared)
{
    const int G = fr_gates(cell), GH = G * H, A = fr_aux(cell);
    const int nmax = mid > H - mid ? mid : H - mid, GN = G * nmax;
    const int fast = T >= FR_PACK_MIN_STEPS && STEP_FAST();
    const long TS = SFX(units_task_size)(cell, T, H, nmax, 1);
    const int DB = GH + (cell == FR_GRU ? H : 0); /* dbias row per task */
    /* shared: (2 parities, 2 tasks, H) each task's product e W_own over all H units, then the
     * tasks' states */
    int q, idx;

    while (fr_claim(sync, T, part, &q, &idx)) {
        const int u0 = q ? mid : 0, nu = q ? H - mid : mid;
        REAL *dh = shared + 4L * H + q * TS; /* (nu) gradient w.r.t. the task's units leaving s */
        REAL *dhp = dh + nmax;  /* (nu) its direct (non-W_hh) part for the state entering s */
        REAL *dc = dhp + nmax;  /* (nu) the task's cell-state gradient, LSTM */
        REAL *e = dc + nmax;    /* (GU) the task's recurrent-side gate gradients */
        REAL *packed = e + GN;  /* (fr_packed_size(H, GU)) its rows of W_hh, for e W_own */
        REAL *db = dbias ? dbias + (long)q * DB : NULL;
        const int s = T - 1 - idx;
        if (idx == 0) {
            if (db) memset(db, 0, sizeof(REAL) * DB);
            if (fast) STEP_PACK_NN_UNITS(G, H, u0, nu, H, w_hh, packed);
            if (dh_n) memcpy(dh, dh_n + u0, sizeof(REAL) * nu);
            else memset(dh, 0, sizeof(REAL) * nu);
            if (cell == FR_LSTM) {
                if (dc_n) memcpy(dc, dc_n + u0, sizeof(REAL) * nu);
                else memset(dc, 0, sizeof(REAL) * nu);
            }
        } else {
            const REAL *p0 = shared + ((long)((idx - 1) & 1) * 2) * H + u0, *p1 = p0 + H;
            for (int j = 0; j < nu; ++j) dh[j] = dhp[j] + p0[j] + p1[j];
        }
        const long row = reverse ? T - 1 - s : s;
        const REAL *a = act + row * GH;
        REAL *d = dgx + row * GH;
        if (dy) SFX(add_to)(nu, dh, dy + row * ldy + u0);
        if (dhs) memcpy(dhs + row * H + u0, dh, sizeof(REAL) * nu);
        switch (cell) {
        case FR_LSTM: {
            const REAL *ar = aux + row * A * H;
            SFX(lstm_row_bwd)(nu, a + u0, a + H + u0, a + 2 * H + u0, a + 3 * H + u0, ar + u0,
                              ar + H + u0, dh, dc, d + u0, d + H + u0, d + 2 * H + u0,
                              d + 3 * H + u0, dhp);
            break;
        }
        case FR_GRU:
            SFX(gru_row_bwd)(nu, a + u0, a + H + u0, a + 2 * H + u0, aux + row * H + u0,
                             hprev + row * ldh + u0, dh, d + u0, d + H + u0, d + 2 * H + u0, e,
                             e + nu, e + 2 * nu, dhp);
            memcpy(dgh + row * H + u0, e + 2 * nu, sizeof(REAL) * nu);
            break;
        default:
            SFX(rnn_row_bwd)(nu, cell == FR_RNN_RELU, (REAL)leak, a + u0, dh, d + u0, dhp);
            break;
        }
        if (cell != FR_GRU)
            for (int g = 0; g < G; ++g) memcpy(e + g * nu, d + g * H + u0, sizeof(REAL) * nu);
        if (db) {
            for (int g = 0; g < G; ++g) SFX(add_to)(nu, db + g * H + u0, d + g * H + u0);
            if (cell == FR_GRU) SFX(add_to)(nu, db + GH + u0, e + 2 * nu);
        }
        REAL *mine = shared + ((long)(idx & 1) * 2 + q) * H;
        if (fast) STEP_MM(1, H, G * nu, e, G * nu, packed, 0, mine, H);
        else {
            memset(mine, 0, sizeof(REAL) * H);
            for (int g = 0; g < G; ++g)
                SFX(gemm)(0, 0, 1, H, nu, e + g * nu, nu, w_hh + ((long)g * H + u0) * H, H, (REAL)1, mine, H);
        }
        fr_task_done(sync);
    }
    if (part == 0) {
        const REAL *p0 = shared + ((long)((T - 1) & 1) * 2) * H, *p1 = p0 + H;
        for (int t = 0; t < 2; ++t) {
            const int u0 = t ? mid : 0, nu = t ? H - mid : mid;
            const REAL *dhp = shared + 4L * H + t * TS + nmax;
            for (int j = 0; j < nu; ++j) dh0[u0 + j] = dhp[j] + p0[u0 + j] + p1[u0 + j];
            if (cell == FR_LSTM) memcpy(dc0 + u0, dhp + nmax, sizeof(REAL) * nu);
        }
    }
}

/* The next inclusion defines these again for the other dtype. */
#undef REAL
#undef SFX
#undef GEMM
#undef GEMV
#undef EXP
#undef TANH
#undef STEP_FAST
#undef STEP_PACK_NT
#undef STEP_PACK_NN
#undef STEP_MM
#undef STEP_PACK_NT_UNITS
#undef STEP_PACK_NN_UNITS
#undef GATES_LSTM_FAST
#undef GATES_GRU_FAST
#undef GATES_RNN_TANH_FAST
#undef STEP_GEMV_NT
