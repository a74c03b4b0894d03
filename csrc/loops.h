/*
 * The time loops, written once for every cell kind and compiled per dtype: fastrnn.c includes
 * this file twice, after cells.h, with
 *   REAL  float | double          SFX(name)  name##_f32 | name##_f64
 *   GEMM, GEMV  scipy_cblas_[sd]gemm, scipy_cblas_[sd]gemv
 *   STEP_FAST()  1 where the float32 micro-kernels run (smallgemm.h, AVX2+FMA), else 0
 *   STEP_PACK_NT, STEP_PACK_NN, STEP_MM  the per-step product with the weights packed once
 *   STEP_PACK_NT_UNITS, STEP_PACK_NN_UNITS  the same packing for one unit range's rows
 *   STEP_GEMV_NT  y = W v with W row-major and unpacked (fr_gemv_rows)
 * A loop knows a cell kind only through its table entry (cells.h): the sizes lay out the
 * buffers, the two row functions do the arithmetic. The contract (shapes, saved buffers,
 * accumulate rules) is in fastrnn.h; the decisions (pack or not, thresholds) are in plan.c.
 * The file #undefs its macros at its end.
 */

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
    if (M == 1 && !ta && tb && beta == (REAL)0 && STEP_FAST() && fr_gemv_rows_pays(N, K)) {
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

/* A step's product of contiguous rows, C (M,N) = or += A (M,K) op(W): W (N,K) row-major with
 * tw (A W^T), else W (K,N) (A W); from W's packed copy (smallgemm.h) when fast, else BLAS. */
static inline void SFX(step_mm)(int fast, int tw, int M, int N, int K, const REAL *A /* (M,K) */,
                                const REAL *packed /* fr_packed_size(N,K), with fast */,
                                const REAL *W /* (N,K) or (K,N) */, int accumulate, REAL *C /* (M,N) */)
{
    (void)packed; /* float64 has no packed kernel */
    if (fast) STEP_MM(M, N, K, A, K, packed, accumulate, C, N);
    else SFX(gemm)(0, tw, M, N, K, A, K, W, tw ? K : N, (REAL)accumulate, C, N);
}

/* Time position of batch row b at step s (see "Direction and variable lengths"). */
static inline int SFX(pos)(int s, int b, int T, int reverse, const int *lengths)
{
    if (!reverse) return s;
    return (lengths ? lengths[b] : T) - 1 - s;
}

/* acc (n) += v (n) */
HOT static void SFX(add_to)(int n, REAL *RS acc, const REAL *RS v)
{
    for (int j = 0; j < n; ++j) acc[j] += v[j];
}

/* bias (2G-S blocks of nu): the biases of units [u0, u0+nu) of every gate block as the rows add
 * them (u0 = 0, nu = H: all units). b_ih and b_hh are summed in the S blocks where they enter
 * additively; blocks S..G-1 get b_ih, then blocks G.. their b_hh, which the row applies inside
 * the gate (GRU: b_in, then b_hn inside r*(.)). */
static void SFX(gate_bias)(fr_cell_sizes n, int H, int u0, int nu, const REAL *b_ih,
                           const REAL *b_hh, REAL *bias)
{
    const int G = n.gates, S = n.shared;
    for (ptrdiff_t k = 0; k < (ptrdiff_t)(2 * G - S) * nu; ++k) bias[k] = 0;
    if (!b_ih) return;
    for (int g = 0; g < G; ++g) {
        const REAL *bi = b_ih + (ptrdiff_t)g * H + u0, *bh = b_hh + (ptrdiff_t)g * H + u0;
        REAL *o = bias + (ptrdiff_t)g * nu;
        for (int j = 0; j < nu; ++j) o[j] = g < S ? bi[j] + bh[j] : bi[j];
    }
    for (int g = S; g < G; ++g) {
        const REAL *bh = b_hh + (ptrdiff_t)g * H + u0;
        REAL *o = bias + (ptrdiff_t)(G + g - S) * nu;
        for (int j = 0; j < nu; ++j) o[j] = bh[j];
    }
}

/* Zoneout of one row: cur (n) = z * prev + (1 - z) * cur, copied to y (n) unless y is NULL.
 * z, prev, cur, y (n). */
HOT static void SFX(zone)(int n, const REAL *RS z, const REAL *RS prev, REAL *RS cur, REAL *RS y)
{
    for (int j = 0; j < n; ++j) cur[j] = z[j] * prev[j] + ((REAL)1 - z[j]) * cur[j];
    if (y) memcpy(y, cur, sizeof(REAL) * (size_t)n);
}

static int SFX(max_length)(int T, int b0, int b1, const int *lengths)
{
    if (!lengths) return T;
    int m = 0;
    for (int b = b0; b < b1; ++b) if (lengths[b] > m) m = lengths[b];
    return m;
}

/* ---- layer normalisation (fastrnn.h, "Layer normalisation") ------------------------------- */
/* Sums in 8 partial accumulators: the loops vectorise without reassociation flags. */
HOT static REAL SFX(sum8)(int n, const REAL *RS v)
{
    if (STEP_FAST()) return (REAL)LN_SUM_FAST(n, v); /* float32, AVX2 (gates_avx2.h) */
    REAL p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; ++l) p[l] += v[j + l];
    REAL s = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
    for (; j < n; ++j) s += v[j];
    return s;
}

/* sum of (v - m)^2 (n) */
HOT static REAL SFX(sqdev8)(int n, const REAL *RS v, REAL m)
{
    if (STEP_FAST()) return (REAL)LN_SQDEV_FAST(n, v, m); /* float32, AVX2 (gates_avx2.h) */
    REAL p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; ++l) { REAL d = v[j + l] - m; p[l] += d * d; }
    REAL s = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
    for (; j < n; ++j) { REAL d = v[j] - m; s += d * d; }
    return s;
}

/* sum of u * v (n) */
HOT static REAL SFX(dot8)(int n, const REAL *RS u, const REAL *RS v)
{
    if (STEP_FAST()) return (REAL)LN_DOT_FAST(n, u, v); /* float32, AVX2 (gates_avx2.h) */
    REAL p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; ++l) p[l] += u[j + l] * v[j + l];
    REAL s = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
    for (; j < n; ++j) s += u[j] * v[j];
    return s;
}

/* mean and 1/sqrt(var + eps) of v (n), var biased */
static inline void SFX(ln_stats)(int n, const REAL *v, REAL *mean, REAL *rstd)
{
    const REAL m = SFX(sum8)(n, v) / (REAL)n;
    const REAL var = SFX(sqdev8)(n, v, m) / (REAL)n;
    *mean = m;
    *rstd = (REAL)(1.0 / sqrt((double)var + FR_LN_EPS));
}

/* ln_stats of two rows u, v (n) at once: means mu, mv, rstds ru, rv (see fr_ln_sum2_8) */
static inline void SFX(ln_stats2)(int n, const REAL *u, const REAL *v, REAL *mu, REAL *ru, REAL *mv, REAL *rv)
{
    if (!STEP_FAST()) {
        SFX(ln_stats)(n, u, mu, ru);
        SFX(ln_stats)(n, v, mv, rv);
        return;
    }
    float s[2], q[2];
    LN_SUM2_FAST(n, (const float *)u, (const float *)v, s);
    const REAL m0 = (REAL)s[0] / (REAL)n, m1 = (REAL)s[1] / (REAL)n;
    LN_SQDEV2_FAST(n, (const float *)u, (float)m0, (const float *)v, (float)m1, q);
    *mu = m0; *mv = m1;
    *ru = (REAL)(1.0 / sqrt((double)((REAL)q[0] / (REAL)n) + FR_LN_EPS));
    *rv = (REAL)(1.0 / sqrt((double)((REAL)q[1] / (REAL)n) + FR_LN_EPS));
}

/* v (n) = gam * (v - m) * r + bet in place; xh (n) gets (v - m) * r when given (training) */
HOT static void SFX(ln_apply)(int n, REAL *RS v, const REAL *RS gam, const REAL *RS bet, REAL m, REAL r,
                              REAL *RS xh)
{
    if (xh)
        for (int j = 0; j < n; ++j) { REAL u = (v[j] - m) * r; xh[j] = u; v[j] = gam[j] * u + bet[j]; }
    else
        for (int j = 0; j < n; ++j) v[j] = gam[j] * ((v[j] - m) * r) + bet[j];
}

/* Both projections of a row normalised, vx with ln's x side (gamma, beta at lx), vh (n each)
 * with its h side (at lh), in place; sv (FR_LN_SAVE(n)) gets xhat_x, xhat_h, rstd_x, rstd_h
 * in training, else NULL. */
static void SFX(ln_fwd2)(int n, REAL *vx, REAL *vh, const REAL *lx, const REAL *lh, REAL *sv)
{
    REAL mx, rx, mh, rh;
    SFX(ln_stats2)(n, vx, vh, &mx, &rx, &mh, &rh);
    SFX(ln_apply)(n, vx, lx, lx + n, mx, rx, sv);
    SFX(ln_apply)(n, vh, lh, lh + n, mh, rh, sv ? sv + n : NULL);
    if (sv) { sv[2 * (ptrdiff_t)n] = rx; sv[2 * (ptrdiff_t)n + 1] = rh; }
}

/* gout (n) = the gradient w.r.t. LN's input from gin (n), the gradient w.r.t. its output
 * (gout may be gin: in place; no other overlap); dgam, dbet (n) += */
static void SFX(ln_bwd)(int n, const REAL *gin, REAL *gout, const REAL *RS xh, REAL r, const REAL *RS gam,
                        REAL *RS dgam, REAL *RS dbet)
{
    if (STEP_FAST()) { /* float32, AVX2: two passes (gates_avx2.h) */
        LN_BWD_FAST(n, (const float *)gin, (float *)gout, (const float *)xh, (float)r, (const float *)gam,
                    (float *)dgam, (float *)dbet);
        return;
    }
    for (int j = 0; j < n; ++j) { REAL g = gin[j]; dgam[j] += g * xh[j]; dbet[j] += g; gout[j] = g * gam[j]; }
    const REAL m1 = SFX(sum8)(n, gout) / (REAL)n, m2 = SFX(dot8)(n, gout, xh) / (REAL)n;
    for (int j = 0; j < n; ++j) gout[j] = r * (gout[j] - m1 - xh[j] * m2);
}

/* Both LNs of a row whose two sides take the same gradient g (n) (LSTM, RNN: gates = LN_x(.) +
 * LN_h(.) + b), in one pair of passes where the CPU allows: g becomes the x side's input
 * gradient (in place), gh (n) the h side's; xx, xh (n) the saved xhat of each side, rx, rh their
 * rstd; dgx, dgh (n) += g * xhat; dbet (n) += g once, the x side's (the h side's beta gradient
 * and the biases' are the same sum, which the caller copies after its loop). */
static void SFX(ln_bwd2)(int n, REAL *RS g, REAL *RS gh, const REAL *RS xx, const REAL *RS xh, REAL rx,
                         REAL rh, const REAL *RS gamx, const REAL *RS gamh, REAL *RS dgx, REAL *RS dgh,
                         REAL *RS dbet)
{
    if (STEP_FAST()) { /* float32, AVX2 (gates_avx2.h) */
        LN_BWD2_FAST(n, (float *)g, (float *)gh, (const float *)xx, (const float *)xh, (float)rx, (float)rh,
                     (const float *)gamx, (const float *)gamh, (float *)dgx, (float *)dgh, (float *)dbet);
        return;
    }
    SFX(ln_bwd)(n, g, gh, xh, rh, gamh, dgh, dbet); /* first: it reads g before the x side overwrites it */
    for (int j = 0; j < n; ++j) { REAL v = g[j]; dgx[j] += v * xx[j]; g[j] = v * gamx[j]; }
    const REAL m1 = SFX(sum8)(n, g) / (REAL)n, m2 = SFX(dot8)(n, g, xx) / (REAL)n;
    for (int j = 0; j < n; ++j) g[j] = rx * (g[j] - m1 - xx[j] * m2);
}

/* LSTM's output through LN_c, after its row: tc (H) = tanh(LN_c(c)), h = y = o * tc; sv (2)
 * gets c's mean and rstd in training. */
HOT static void SFX(ln_cell)(int H, const REAL *RS c, const REAL *RS o, const REAL *RS gam,
                             const REAL *RS bet, REAL *RS tc, REAL *RS h, REAL *RS y, REAL *sv)
{
    REAL m, r;
    SFX(ln_stats)(H, c, &m, &r);
    for (int j = 0; j < H; ++j) tc[j] = TANH(gam[j] * ((c[j] - m) * r) + bet[j]);
    for (int j = 0; j < H; ++j) { REAL v = o[j] * tc[j]; h[j] = v; y[j] = v; }
    if (sv) { sv[0] = m; sv[1] = r; }
}

/* The gradient reaching c' = f*cp + i*g through h = o*tanh(LN_c(c')): dcn (H) out; a (4 blocks
 * of H: i, f, g, o), cp, tc (H) saved; m, r c''s saved mean and rstd; dh (H); ch (H) scratch:
 * c' normalised, recomputed; then LN's backward with the gradient w.r.t. LN_c's output. */
HOT static void SFX(ln_cell_bwd)(int H, const REAL *RS a, const REAL *RS cp, const REAL *RS tc,
                                 REAL m, REAL r, const REAL *RS dh, const REAL *RS gam,
                                 REAL *RS dgam, REAL *RS dbet, REAL *RS ch, REAL *RS dcn)
{
    const REAL *ai = a, *af = a + H, *ag = a + 2 * H, *ao = a + 3 * H;
    for (int j = 0; j < H; ++j) {
        ch[j] = (af[j] * cp[j] + ai[j] * ag[j] - m) * r;
        dcn[j] = dh[j] * ao[j] * ((REAL)1 - tc[j] * tc[j]);
    }
    SFX(ln_bwd)(H, dcn, dcn, ch, r, gam, dgam, dbet);
}

/* gxs (nb,GH) = the input projection of rows b0..b0+nb-1 at step s of fr_recur's fused mode,
 * while W_ih is still in cache: no (T,B,G*H) pass through memory. Rows share one time position
 * unless lengths differ in the reverse direction; then each row's x is gathered into xs (nb,D)
 * first. x (T,B,D); packed_ih: W_ih packed for STEP_MM when fast, else w_ih (GH,D) is used. */
static void SFX(step_project)(int s, int T, int B, int b0, int nb, int D, int GH, int reverse,
                              const int *lengths, const REAL *x, REAL *xs, int fast,
                              const REAL *packed_ih, const REAL *w_ih, REAL *gxs)
{
    (void)packed_ih; /* float64 has no micro-kernel: STEP_MM is empty there */
    const REAL *xa = x + ((ptrdiff_t)(reverse ? T - 1 - s : s) * B + b0) * D;
    if (reverse && lengths) {
        for (int i = 0; i < nb; ++i) {
            const int b = b0 + i;
            REAL *xr = xs + (ptrdiff_t)i * D;
            if (s < lengths[b])
                memcpy(xr, x + ((ptrdiff_t)(lengths[b] - 1 - s) * B + b) * D, sizeof(REAL) * D);
            else memset(xr, 0, sizeof(REAL) * D);
        }
        xa = xs;
    }
    SFX(step_mm)(fast, 1, nb, GH, D, xa, packed_ih, w_ih, 0, gxs);
}

#include "proj.h" /* LSTM projections: fr_recur_proj, fr_recur_backward_proj */

/* ---- forward ---------------------------------------------------------------------------- */

static void SFX(fr_project)(const fr_project_args *a)
{
    /* T*B <= INT_MAX: the bridge refuses larger products (a BLAS dimension is an int) */
    const int GH = SFX(cells)[a->cell].n.gates * a->H, TB = (int)((ptrdiff_t)a->T * a->B);
    SFX(gemm)(0, 1, TB, GH, a->D, (const REAL *)a->x, a->D, (const REAL *)a->w_ih, a->D,
              (REAL)0, (REAL *)a->act, GH);
}

static void SFX(fr_recur)(const fr_recur_args *a)
{
    if (a->P) { SFX(fr_recur_proj)(a); return; }
    const SFX(fr_cell_kind) *k = &SFX(cells)[a->cell];
    const int G = k->n.gates, A = k->n.aux, H = a->H, D = a->D, T = a->T, B = a->B;
    const int GH = G * H, b0 = a->b0, b1 = a->b1, nb = b1 - b0, reverse = a->reverse;
    const int ldy = a->ldy, ldh = a->ldh;
    const int *lengths = a->lengths;
    const REAL *x = (const REAL *)a->x, *w_ih = (const REAL *)a->w_ih, *w_hh = (const REAL *)a->w_hh;
    REAL *y = (REAL *)a->y, *act = (REAL *)a->act, *hprev = (REAL *)a->hprev, *aux = (REAL *)a->aux;
    const int fused = x != NULL;
    REAL *ws = (REAL *)a->ws;
    REAL *gh = ws;                        /* (nb,GH) recurrent projection of the current step */
    REAL *h = ws + (ptrdiff_t)nb * GH;         /* (nb,H) running state */
    REAL *c = h + (ptrdiff_t)nb * H;           /* (nb,H) running cell state (2 states) */
    REAL *aux_scratch = c + (ptrdiff_t)nb * H; /* (A*H) where inference writes the aux it won't keep,
                                             so the rows have no branch and vectorise */
    REAL *bias = aux_scratch + (ptrdiff_t)A * H; /* ((2G-S)*H) the biases as the rows add them */
    REAL *gx = bias + (ptrdiff_t)(2 * G - k->n.shared) * H; /* fused: (nb,GH) input projection of the
                                                           current step */
    REAL *xs = gx + (fused ? (ptrdiff_t)nb * GH : 0); /* fused: (nb,D) x rows gathered when their
                                                    positions differ (reverse with lengths) */
    REAL *hm = xs + (fused ? (ptrdiff_t)nb * D : 0); /* (nb,H) h * hmask, recurrent dropout */
    REAL *hold = hm + (ptrdiff_t)nb * H;      /* (H) a row's h before its step, for zoneout */
    REAL *cold = hold + H;                    /* (H) the same for c */
    REAL *packed = cold + H;                  /* (fr_packed_size(GH, H)) W_hh for STEP_MM */
    REAL *packed_ih = packed + fr_packed_size(GH, H); /* fused: (fr_packed_size(GH, D)) W_ih */
    const REAL *hmask = (const REAL *)a->hmask, *zh = (const REAL *)a->zh, *zc = (const REAL *)a->zc;
    REAL *hdrop = hprev ? (REAL *)a->hdrop : NULL;
    const int ldd = a->ldd;
    const REAL *ln = (const REAL *)a->ln;
    REAL *lnsave = hprev && ln ? (REAL *)a->lnsave : NULL;
    const ptrdiff_t LS = FR_LN_SAVE(GH);
    /* the state the recurrent product reads: h itself, or its masked copy */
    const REAL *hin = hmask ? hm : h;
    const int maxlen = SFX(max_length)(T, b0, b1, lengths);
    const int fast = STEP_FAST() && fr_pack_pays(maxlen, nb);

    if (lengths) {
        /* Padded positions are never visited: give them defined values (outputs zero, and
         * hprev zero so backward's whole-sequence GEMMs multiply zeros by zeros there). */
        for (int t = 0; t < T; ++t)
            for (int b = b0; b < b1; ++b)
                if (t >= lengths[b]) {
                    memset(y + ((ptrdiff_t)t * B + b) * ldy, 0, sizeof(REAL) * H);
                    if (hprev) memset(hprev + ((ptrdiff_t)t * B + b) * ldh, 0, sizeof(REAL) * H);
                    if (hdrop) memset(hdrop + ((ptrdiff_t)t * B + b) * ldd, 0, sizeof(REAL) * H);
                }
    }
    /* b_ih and b_hh are added in the rows, not by the input GEMM: filling all T*B rows of act
     * with them first cost a full extra pass over the largest buffer. */
    SFX(gate_bias)(k->n, H, 0, H, (const REAL *)a->b_ih, (const REAL *)a->b_hh, bias);
    if (fast) STEP_PACK_NT(GH, H, w_hh, packed);
    if (fast && fused) STEP_PACK_NT(GH, D, w_ih, packed_ih);
    memcpy(h, (const REAL *)a->h0 + (ptrdiff_t)b0 * H, sizeof(REAL) * nb * H);
    if (k->n.states == 2) memcpy(c, (const REAL *)a->c0 + (ptrdiff_t)b0 * H, sizeof(REAL) * nb * H);

    /* A training forward keeps the activations in act: the projection then goes straight
     * into act's rows, which sit together unless lengths differ in the reverse direction. */
    const int direct = fused && hprev && !(reverse && lengths);
    for (int s = 0; s < maxlen; ++s) {
        REAL *gxs = direct ? act + ((ptrdiff_t)(reverse ? T - 1 - s : s) * B + b0) * GH : gx;
        if (fused) SFX(step_project)(s, T, B, b0, nb, D, GH, reverse, lengths, x, xs, fast, packed_ih, w_ih, gxs);
        if (hmask)
            for (ptrdiff_t m = 0; m < (ptrdiff_t)nb * H; ++m) hm[m] = h[m] * hmask[(ptrdiff_t)b0 * H + m];
        SFX(step_mm)(fast, 1, nb, GH, H, hin, packed, w_hh, 0, gh);
        for (int i = 0; i < nb; ++i) {
            const int b = b0 + i;
            if (lengths && s >= lengths[b]) continue;
            const ptrdiff_t row = (ptrdiff_t)SFX(pos)(s, b, T, reverse, lengths) * B + b;
            REAL *hb = h + (ptrdiff_t)i * H, *cb = c + (ptrdiff_t)i * H;
            REAL *gxr = fused && !direct ? gx + (ptrdiff_t)i * GH : act + row * GH;
            REAL *auxr = hprev ? aux + row * A * H : aux_scratch;
            if (hprev) memcpy(hprev + row * ldh, hb, sizeof(REAL) * H);
            if (hdrop) memcpy(hdrop + row * ldd, hm + (ptrdiff_t)i * H, sizeof(REAL) * H);
            if (zh) {
                memcpy(hold, hb, sizeof(REAL) * H);
                if (zc) memcpy(cold, cb, sizeof(REAL) * H);
            }
            REAL *sv = lnsave ? lnsave + row * LS : NULL;
            if (ln) { /* both projections normalised over the row's G*H units, then the row */
                SFX(ln_fwd2)(GH, gxr, gh + (ptrdiff_t)i * GH, ln, ln + 2 * GH, sv);
            }
            k->fwd(H, (REAL)a->leak, gxr, H, gh + (ptrdiff_t)i * GH, bias, (const REAL *)a->peep, H, hb, cb,
                   y + row * ldy, auxr, H);
            if (ln && k->n.states == 2) /* h = o * tanh(LN_c(c)): the row's h, tanh(c) replaced */
                SFX(ln_cell)(H, cb, gxr + 3 * (ptrdiff_t)H, ln + 4 * GH, ln + 4 * GH + H, auxr + H, hb,
                             y + row * ldy, sv ? sv + 2 * GH + 2 : NULL);
            if (zh) {
                SFX(zone)(H, zh + row * H, hold, hb, y + row * ldy);
                if (zc) SFX(zone)(H, zc + row * H, cold, cb, NULL);
            }
            if (fused && hprev && !direct) memcpy(act + row * GH, gxr, sizeof(REAL) * GH);
        }
    }
    memcpy((REAL *)a->h_n + (ptrdiff_t)b0 * H, h, sizeof(REAL) * nb * H);
    if (k->n.states == 2) memcpy((REAL *)a->c_n + (ptrdiff_t)b0 * H, c, sizeof(REAL) * nb * H);
}

/* ---- backward ------------------------------------------------------------------------- */

static void SFX(fr_recur_backward)(const fr_recur_backward_args *a)
{
    if (a->P) { SFX(fr_recur_backward_proj)(a); return; }
    const SFX(fr_cell_kind) *k = &SFX(cells)[a->cell];
    const int G = k->n.gates, A = k->n.aux, S = k->n.shared, H = a->H, D = a->D, T = a->T;
    const int B = a->B, GH = G * H, RH = (G - S) * H, b0 = a->b0, b1 = a->b1, nb = b1 - b0;
    const int reverse = a->reverse, ldh = a->ldh, ldy = a->ldy;
    const int *lengths = a->lengths;
    const REAL *w_hh = (const REAL *)a->w_hh, *w_ih = (const REAL *)a->w_ih;
    const REAL *act = (const REAL *)a->act, *hprev = (const REAL *)a->hprev;
    const REAL *aux = (const REAL *)a->aux, *dy = (const REAL *)a->dy;
    REAL *dgx = (REAL *)a->dgx, *dgh = (REAL *)a->dgh, *dhs = (REAL *)a->dhs;
    REAL *dbias = (REAL *)a->dbias, *dx = (REAL *)a->dx;
    if (dbias) memset(dbias, 0, sizeof(REAL) * ((size_t)GH + (size_t)RH));
    const REAL *peep = (const REAL *)a->peep;
    REAL *dpeep = peep ? (REAL *)a->dpeep : NULL;
    if (dpeep) memset(dpeep, 0, sizeof(REAL) * 3 * (size_t)H);
    const REAL *ln = (const REAL *)a->ln, *lnsave = (const REAL *)a->lnsave;
    REAL *dln = ln ? (REAL *)a->dln : NULL;
    const ptrdiff_t LS = FR_LN_SAVE(GH);
    if (dln) memset(dln, 0, sizeof(REAL) * (4 * (size_t)GH + (k->n.states == 2 ? 2 * (size_t)H : 0)));
    /* dgh's columns: blocks S..G-1, or all G with layer norm (its recurrent side is its own) */
    const int RD = ln ? GH : RH;
    REAL *ws = (REAL *)a->ws;
    REAL *dh = ws;                      /* (nb,H) gradient w.r.t. the state leaving step s */
    REAL *dhp = ws + (ptrdiff_t)nb * H;      /* (nb,H) same for the state entering step s */
    REAL *dc = ws + (ptrdiff_t)2 * nb * H;        /* (nb,H) cell-state gradient (2 states), in place */
    REAL *step = ws + (ptrdiff_t)3 * nb * H;      /* (nb,GH) this step's recurrent-side gate gradients,
                                           gathered when rows sit at different time positions */
    REAL *prod = step + (ptrdiff_t)nb * GH; /* (nb,H) the step's product with W_hh before hmask */
    REAL *zdh = prod + (ptrdiff_t)nb * H;  /* (H) the part of a row's dh that zoneout passes to h_prev */
    REAL *zdc = zdh + H;                   /* (H) the same for dc */
    REAL *lch = zdc + H;                   /* (H) layer norm: LSTM's normalised c' */
    REAL *ldc = lch + H;                   /* (H) layer norm: the gradient reaching c' through LN_c */
    REAL *packed = ldc + H;                /* (fr_packed_size(H, GH)) W_hh for STEP_MM */
    REAL *packed_ih = packed + fr_packed_size(H, GH); /* (fr_packed_size(D, GH)) W_ih, with dx */
    const REAL *hmask = (const REAL *)a->hmask, *zh = (const REAL *)a->zh, *zc = (const REAL *)a->zc;
    /* Each step's recurrent-side gate gradients feed one product with W_hh. They are read
     * straight from dgx's rows, unless those rows sit at different time positions (reverse with
     * lengths) or differ from dgx (blocks past S, e.g. GRU's n block, scaled by r): then they
     * are gathered in step. */
    const int own_e = S < G;
    const int gathered = (reverse && lengths != NULL) || (own_e && !ln);
    const int maxlen = SFX(max_length)(T, b0, b1, lengths);
    const int fast = STEP_FAST() && fr_pack_pays(maxlen, nb);

    if (lengths) {
        /* Padded positions must contribute nothing to the whole-sequence GEMMs. */
        for (int t = 0; t < T; ++t) {
            memset(dgx + ((ptrdiff_t)t * B + b0) * GH, 0, sizeof(REAL) * nb * GH);
            if (dgh) memset(dgh + ((ptrdiff_t)t * B + b0) * RD, 0, sizeof(REAL) * nb * RD);
            if (dhs) memset(dhs + ((ptrdiff_t)t * B + b0) * H, 0, sizeof(REAL) * nb * H);
        }
    }
    if (fast) STEP_PACK_NN(H, GH, w_hh, packed);
    /* dx in the loop: each step's dgx rows are still in cache, where a whole-sequence GEMM
     * afterwards reads (and packs) all of dgx again. The rows of a step sit together in dgx and
     * dx unless lengths differ in the reverse direction; then each row goes on its own. The
     * padded positions are zeroed here: no step visits those at t >= the rows' longest length
     * (they were left as they were, garbage from np.empty), and the others are zeroed again
     * after each step's product, which gives them 0 * W_ih (NaN where W_ih is infinite). */
    const int dx_rows = dx && !(reverse && lengths);
    if (dx && fast) STEP_PACK_NN(D, GH, w_ih, packed_ih);
    if (dx && lengths)
        for (int t = 0; t < T; ++t)
            for (int b = b0; b < b1; ++b)
                if (t >= lengths[b]) memset(dx + ((ptrdiff_t)t * B + b) * D, 0, sizeof(REAL) * D);
    if (a->dh_n) memcpy(dh, (const REAL *)a->dh_n + (ptrdiff_t)b0 * H, sizeof(REAL) * nb * H);
    else memset(dh, 0, sizeof(REAL) * nb * H);
    if (k->n.states == 2) {
        if (a->dc_n) memcpy(dc, (const REAL *)a->dc_n + (ptrdiff_t)b0 * H, sizeof(REAL) * nb * H);
        else memset(dc, 0, sizeof(REAL) * nb * H);
    }

    for (int s = maxlen - 1; s >= 0; --s) {
        for (int i = 0; i < nb; ++i) {
            const int b = b0 + i;
            REAL *dhb = dh + (ptrdiff_t)i * H, *dhpb = dhp + (ptrdiff_t)i * H;
            if (lengths && s >= lengths[b]) {
                /* inactive: the state passes through unchanged, and so does its gradient (set
                 * again after the product below, which adds 0 * W_hh to it: NaN where W_hh is
                 * infinite) */
                memcpy(dhpb, dhb, sizeof(REAL) * H);
                if (gathered) memset(step + (ptrdiff_t)i * GH, 0, sizeof(REAL) * GH);
                continue;
            }
            const ptrdiff_t row = (ptrdiff_t)SFX(pos)(s, b, T, reverse, lengths) * B + b;
            REAL *d = dgx + row * GH, *e = step + (ptrdiff_t)i * GH;
            if (dy) {
                const REAL *dyr = dy + row * ldy;
                for (int j = 0; j < H; ++j) dhb[j] += dyr[j];
            }
            if (dhs) memcpy(dhs + row * H, dhb, sizeof(REAL) * H);
            REAL *dcb = dc + (ptrdiff_t)i * H;
            if (zh) {
                /* h = z h_prev + (1-z) h~: the cell's row sees (1-z) dh, h_prev gets z dh */
                const REAL *z = zh + row * H;
                for (int j = 0; j < H; ++j) { zdh[j] = z[j] * dhb[j]; dhb[j] *= (REAL)1 - z[j]; }
                if (zc) {
                    const REAL *zr = zc + row * H;
                    for (int j = 0; j < H; ++j) { zdc[j] = zr[j] * dcb[j]; dcb[j] *= (REAL)1 - zr[j]; }
                }
            }
            const REAL *sv = ln ? lnsave + row * LS : NULL;
            if (ln && k->n.states == 2) {
                /* h = o * tanh(LN_c(c')): the gradient reaching c' through LN_c needs the row */
                const REAL *ar = act + row * GH, *auxr = aux + row * A * H;
                SFX(ln_cell_bwd)(H, ar, auxr, auxr + H, sv[2 * GH + 2], sv[2 * GH + 3], dhb, ln + 4 * GH,
                                 dln + 4 * GH, dln + 4 * GH + H, lch, ldc);
                SFX(lstmln_row_bwd)(H, ar, ar + H, ar + 2 * H, ar + 3 * H, auxr, auxr + H, ldc, dhb, dcb,
                                    d, d + H, d + 2 * H, d + 3 * H, dhpb);
            } else
                k->bwd(H, (REAL)a->leak, act + row * GH, H, A ? aux + row * A * H : NULL, H, peep, dpeep, H,
                       hprev + row * ldh, dhb, dcb, d, e, H, dhpb);
            if (zh) {
                SFX(add_to)(H, dhpb, zdh);
                if (zc) SFX(add_to)(H, dcb, zdc);
            }
            if (ln) {
                /* the biases sit after both normalisations: they take the gate gradients; then
                 * each side goes back through its LN, the recurrent side (d's blocks, or e's
                 * where the row wrote its own: GRU, all blocks) into dgh */
                REAL *ghr = dgh + row * GH;
                if (own_e) {
                    if (dbias) {
                        SFX(add_to)(GH, dbias, d);
                        SFX(add_to)(RH, dbias + GH, e + (ptrdiff_t)S * H);
                    }
                    SFX(ln_bwd)(GH, e, ghr, sv + GH, sv[2 * GH + 1], ln + 2 * GH, dln + 2 * GH, dln + 3 * GH);
                    SFX(ln_bwd)(GH, d, d, sv, sv[2 * GH], ln, dln, dln + GH);
                } else /* one gradient for both sides: one pair of passes, the biases' sum after the loop */
                    SFX(ln_bwd2)(GH, d, ghr, sv, sv + GH, sv[2 * GH], sv[2 * GH + 1], ln, ln + 2 * GH, dln,
                                 dln + 2 * GH, dln + GH);
                if (gathered) memcpy(e, ghr, sizeof(REAL) * GH);
            } else {
                if (own_e) memcpy(dgh + row * RH, e + (ptrdiff_t)S * H, sizeof(REAL) * RH);
                else if (gathered) memcpy(e, d, sizeof(REAL) * GH);
                if (dbias) {
                    /* bias gradients while the row is in L1: a separate pass over dgx after the
                     * loop re-read the whole (T,B,G*H) buffer from memory */
                    SFX(add_to)(GH, dbias, d);
                    if (own_e) SFX(add_to)(RH, dbias + GH, dgh + row * RH);
                }
            }
        }
        /* not gathered: the step's rows sit together in dgx, or with layer norm in dgh */
        const REAL *dstep = gathered
            ? step : (ln ? dgh : dgx) + ((ptrdiff_t)SFX(pos)(s, 0, T, reverse, NULL) * B + b0) * GH;
        if (hmask) {
            /* W_hh read h * hmask: its gradient reaches h through the mask */
            SFX(step_mm)(fast, 0, nb, H, GH, dstep, packed, w_hh, 0, prod);
            for (ptrdiff_t m = 0; m < (ptrdiff_t)nb * H; ++m) dhp[m] += prod[m] * hmask[(ptrdiff_t)b0 * H + m];
        } else SFX(step_mm)(fast, 0, nb, H, GH, dstep, packed, w_hh, 1, dhp);
        if (lengths)
            for (int i = 0; i < nb; ++i)
                if (s >= lengths[b0 + i])
                    memcpy(dhp + (ptrdiff_t)i * H, dh + (ptrdiff_t)i * H, sizeof(REAL) * H);
        if (dx_rows) {
            const ptrdiff_t r = (ptrdiff_t)SFX(pos)(s, 0, T, reverse, NULL) * B + b0;
            SFX(step_mm)(fast, 0, nb, D, GH, dgx + r * GH, packed_ih, w_ih, 0, dx + r * D);
            if (lengths) /* forward direction here: an inactive row's position t = s is padding */
                for (int i = 0; i < nb; ++i)
                    if (s >= lengths[b0 + i]) memset(dx + (r + i) * D, 0, sizeof(REAL) * D);
        } else if (dx)
            for (int i = 0; i < nb; ++i) {
                const int b = b0 + i;
                if (s >= lengths[b]) continue;
                const ptrdiff_t row = (ptrdiff_t)SFX(pos)(s, b, T, reverse, lengths) * B + b;
                SFX(gemm)(0, 0, 1, D, GH, dgx + row * GH, GH, w_ih, D, (REAL)0, dx + row * D, D);
            }
        REAL *tmp = dh; dh = dhp; dhp = tmp;
    }
    if (ln && !own_e) { /* ln_bwd2 summed the gate gradients once: beta_x's, beta_h's and the biases' */
        memcpy(dln + 3 * GH, dln + GH, sizeof(REAL) * GH);
        if (dbias) memcpy(dbias, dln + GH, sizeof(REAL) * GH);
    }
    memcpy((REAL *)a->dh0 + (ptrdiff_t)b0 * H, dh, sizeof(REAL) * nb * H);
    if (k->n.states == 2) memcpy((REAL *)a->dc0 + (ptrdiff_t)b0 * H, dc, sizeof(REAL) * nb * H);
}

static void SFX(fr_backward_params)(const fr_params_args *a)
{
    const fr_cell_sizes n = SFX(cells)[a->cell].n;
    /* layer norm: dgh holds every block's recurrent side (S counts as 0) */
    const int D = a->D, GH = n.gates * a->H, RH = a->ln ? GH : (n.gates - n.shared) * a->H;
    const int H = a->P ? a->P : a->H; /* hprev's and dw_hh's columns (projection: P) */
    const int g0 = a->g0, g1 = a->g1, ldx = a->ldx, ldh = a->ldh;
    const ptrdiff_t TB = (ptrdiff_t)a->T * a->B, r0 = a->r0, r1 = a->r1, DH = (ptrdiff_t)D + H;
    const REAL *x = (const REAL *)a->x, *w_ih = (const REAL *)a->w_ih;
    const REAL *hprev = (const REAL *)a->hprev, *dgx = (const REAL *)a->dgx;
    const REAL *dgh = (const REAL *)a->dgh;
    REAL *dw_ih = (REAL *)a->dw_ih, *dw_hh = (REAL *)a->dw_hh, *db_ih = (REAL *)a->db_ih;
    REAL *db_hh = (REAL *)a->db_hh, *ws = (REAL *)a->ws, *dx = (REAL *)a->dx;
    /* Whole-sequence GEMMs: one pass over all T*B rows instead of T small ones. Weight-gradient
     * rows g0..g1 read a column block of dgx (leading dimension GH); dx rows r0..r1 read a row
     * block. Disjoint ranges write disjoint memory, so calls can run concurrently. The
     * recurrent side equals dgx in the first S blocks; the rows past them come from dgh
     * (leading dimension (G-S)*H). */
    if (g1 > g0) {
        const int split = a->ln ? 0 : n.shared * a->H; /* rows below read dgx, rows above dgh */
        const int a1 = g1 < split ? g1 : split, n0 = g0 > split ? g0 : split;
        /* x and hprev side by side in one buffer: rows below split take both weight gradients
         * from one GEMM, so dgx's column block is packed once instead of once per weight (the
         * packing costs as much as the arithmetic when D is small)
         * (T*B <= INT_MAX, checked by the bridge, is the GEMMs' inner dimension; D + H equals
         * the int ldx here) */
        const int cat = ws && a1 > g0 && hprev == x + D && ldx == DH && ldh == DH;
        if (cat) {
            SFX(gemm)(1, 0, a1 - g0, ldx, (int)TB, dgx + g0, GH, x, ldx, (REAL)0,
                      ws + (ptrdiff_t)g0 * DH, ldx);
            for (int k = g0; k < a1; ++k) {
                const REAL *w = ws + (ptrdiff_t)k * DH;
                SFX(add_to)(D, dw_ih + (ptrdiff_t)k * D, w);
                SFX(add_to)(H, dw_hh + (ptrdiff_t)k * H, w + D);
            }
        }
        const int i0 = cat ? a1 : g0; /* dw_ih rows still to do */
        if (g1 > i0)
            SFX(gemm)(1, 0, g1 - i0, D, (int)TB, dgx + i0, GH, x, ldx, (REAL)1, dw_ih + (ptrdiff_t)i0 * D, D);
        if (a1 > g0 && !cat)
            SFX(gemm)(1, 0, a1 - g0, H, (int)TB, dgx + g0, GH, hprev, ldh, (REAL)1, dw_hh + (ptrdiff_t)g0 * H, H);
        if (g1 > n0)
            SFX(gemm)(1, 0, g1 - n0, H, (int)TB, dgh + (n0 - split), RH, hprev, ldh, (REAL)1,
                      dw_hh + (ptrdiff_t)n0 * H, H);
        /* db_ih and db_hh are both given or both NULL (a layer has biases or not); one pass
         * feeds both sums where the two biases enter additively */
        if (db_ih) {
            for (ptrdiff_t m = 0; m < TB; ++m)
                for (int k = g0; k < a1; ++k) {
                    const REAL v = dgx[m * GH + k];
                    db_ih[k] += v;
                    db_hh[k] += v;
                }
            for (ptrdiff_t m = 0; m < TB; ++m)
                for (int k = n0; k < g1; ++k) {
                    db_ih[k] += dgx[m * GH + k];
                    db_hh[k] += dgh[m * RH + k - split];
                }
        }
    }
    if (a->P && a->dw_hr && g1 > g0) { /* projection: dW_hr += dhs^T hcell, this call's rows */
        const int P = a->P, p0 = (int)((int64_t)g0 * P / GH), p1 = (int)((int64_t)g1 * P / GH);
        if (p1 > p0)
            SFX(gemm)(1, 0, p1 - p0, a->H, (int)TB, (const REAL *)a->dhs + p0, P, (const REAL *)a->hcell, a->H,
                      (REAL)1, (REAL *)a->dw_hr + (ptrdiff_t)p0 * a->H, a->H);
    }
    if (dx && r1 > r0) {
        SFX(gemm)(0, 0, (int)(r1 - r0), D, GH, dgx + r0 * GH, GH, w_ih, D,
                  a->accumulate_dx ? (REAL)1 : (REAL)0, dx + r0 * D, D);
        if (a->lengths)
            for (ptrdiff_t m = r0; m < r1; ++m)
                if (m / a->B >= a->lengths[m % a->B]) memset(dx + m * D, 0, sizeof(REAL) * D);
    }
}

/* ---- one cell step for a range of hidden units -------------------------------------------- */
/* A streaming cell step reads all of W_ih and W_hh (an L2's worth at H = 128) for one row, so
 * its time is the weight read. Two calls on two cores, each owning units [u0, u0+nu) of every
 * gate block, each read half the weights, which then stay in their own core's L2 from step to
 * step. The calls are independent: each reads all of x and h and writes only its units. */

static void SFX(fr_cell_units)(const fr_cell_units_args *a)
{
    const SFX(fr_cell_kind) *k = &SFX(cells)[a->cell];
    const int G = k->n.gates, A = k->n.aux, B = a->B, D = a->D, H = a->H, u0 = a->u0, nu = a->nu;
    const int GH = G * H, GU = G * nu;
    const REAL *x = (const REAL *)a->x, *h = (const REAL *)a->h, *c = (const REAL *)a->c;
    const REAL *w_ih = (const REAL *)a->w_ih, *w_hh = (const REAL *)a->w_hh;
    REAL *act = (REAL *)a->act, *hprev = (REAL *)a->hprev, *aux = (REAL *)a->aux;
    REAL *gx = (REAL *)a->ws;              /* (B,GU) input projection, where act is not kept */
    REAL *gh = gx + (ptrdiff_t)B * GU;          /* (B,GU) recurrent projection */
    REAL *bias = gh + (ptrdiff_t)B * GU;        /* ((2G-S)*nu) the biases as the rows add them */
    REAL *y = bias + (ptrdiff_t)(2 * G - k->n.shared) * nu; /* (nu) the output copy rows write */
    REAL *aux_scratch = y + nu;            /* (A*nu) inference's unkept aux */
    SFX(gate_bias)(k->n, H, u0, nu, (const REAL *)a->b_ih, (const REAL *)a->b_hh, bias);
    /* In training the projections of gate block g land in act's columns g*H+u0.. directly. */
    REAL *gxb = act ? act + u0 : gx;
    const int ldg = act ? GH : GU, gstride = act ? H : nu;
    for (int g = 0; g < G; ++g) {
        SFX(gemm)(0, 1, B, nu, D, x, D, w_ih + ((ptrdiff_t)g * H + u0) * D, D, (REAL)0, gxb + g * gstride, ldg);
        SFX(gemm)(0, 1, B, nu, H, h, H, w_hh + ((ptrdiff_t)g * H + u0) * H, H, (REAL)0, gh + g * nu, GU);
    }
    for (int b = 0; b < B; ++b) {
        REAL *hb = (REAL *)a->h1 + (ptrdiff_t)b * H + u0, *cb = NULL;
        memcpy(hb, h + (ptrdiff_t)b * H + u0, sizeof(REAL) * nu); /* GRU and leaky units read it */
        if (hprev) memcpy(hprev + (ptrdiff_t)b * H + u0, h + (ptrdiff_t)b * H + u0, sizeof(REAL) * nu);
        if (k->n.states == 2) {
            cb = (REAL *)a->c1 + (ptrdiff_t)b * H + u0;
            memcpy(cb, c + (ptrdiff_t)b * H + u0, sizeof(REAL) * nu);
        }
        k->fwd(nu, (REAL)1, gxb + (ptrdiff_t)b * ldg, gstride, gh + (ptrdiff_t)b * GU, bias,
               a->peep ? (const REAL *)a->peep + u0 : NULL, H, hb, cb, y,
               aux ? aux + (ptrdiff_t)b * A * H + u0 : aux_scratch, aux ? H : nu);
    }
}

/* ---- batch of one, hidden units split in two tasks ---------------------------------------- */
/* A single sequence has no batch rows to share out, so each step is cut into two tasks, task q
 * owning the hidden units [u_q, u_q+1) of every gate block (u = 0, mid, H) and streaming only its
 * rows of W_hh. Two threads claim the tasks of each step as soon as the previous step is
 * complete (fr_claim, pool.h); every task's state lives in `shared`, so one thread alone can
 * run both, which is what happens when the other is descheduled on a busy machine. */

/* Per-task part of `shared`, in elements, for nmax = the larger task's units. */
static ptrdiff_t SFX(units_task_size)(fr_cell cell, int T, int H, int nmax, int backward)
{
    const fr_cell_sizes n = SFX(cells)[cell].n;
    const int GN = n.gates * nmax, pack = STEP_FAST() && fr_pack_pays(T, 1);
    if (backward) return (ptrdiff_t)3 * nmax + GN + (pack ? fr_packed_size(H, GN) : 0);
    return GN + (ptrdiff_t)(2 * n.gates - n.shared) * nmax + nmax + (ptrdiff_t)n.aux * nmax
           + (pack ? fr_packed_size(GN, H) : 0);
}

static ptrdiff_t SFX(units_shared_size)(fr_cell cell, int T, int H, int mid, int backward)
{
    const int nmax = mid > H - mid ? mid : H - mid;
    return (backward ? (ptrdiff_t)4 * H : (ptrdiff_t)2 * H) + 2 * SFX(units_task_size)(cell, T, H, nmax, backward);
}

static void SFX(fr_recur_units)(const fr_units_args *a)
{
    const SFX(fr_cell_kind) *k = &SFX(cells)[a->cell];
    const int G = k->n.gates, A = k->n.aux, T = a->T, H = a->H, mid = a->mid, GH = G * H;
    const int nmax = mid > H - mid ? mid : H - mid, GN = G * nmax;
    const int fast = STEP_FAST() && fr_pack_pays(T, 1);
    const ptrdiff_t TS = SFX(units_task_size)(a->cell, T, H, nmax, 0);
    const REAL *w_hh = (const REAL *)a->w_hh;
    REAL *shared = (REAL *)a->shared, *act = (REAL *)a->act, *hprev = (REAL *)a->hprev;
    REAL *aux = (REAL *)a->aux;
    REAL *hb[2] = {shared, shared + H}; /* (H) each: the state leaving odd / even steps */
    int q, idx;

    while (fr_claim(a->sync, T, a->part, &q, &idx)) {
        const int u0 = q ? mid : 0, nu = q ? H - mid : mid, GU = G * nu;
        REAL *gh = shared + (ptrdiff_t)2 * H + q * TS; /* (GU) this step's recurrent projection */
        REAL *c = gh + GN;                   /* (nu) the task's cell state (2 states) */
        REAL *bias = c + nmax;               /* ((2G-S)*nu) its biases as the rows add them */
        REAL *aux_scratch = bias + (ptrdiff_t)(2 * G - k->n.shared) * nmax; /* (A*nu) unkept aux */
        REAL *packed = aux_scratch + (ptrdiff_t)A * nmax; /* (fr_packed_size(GU, H)) its W_hh rows */
        if (idx == 0) {
            SFX(gate_bias)(k->n, H, u0, nu, (const REAL *)a->b_ih, (const REAL *)a->b_hh, bias);
            if (fast) STEP_PACK_NT_UNITS(G, H, u0, nu, H, w_hh, packed);
            if (k->n.states == 2) memcpy(c, (const REAL *)a->c0 + u0, sizeof(REAL) * nu);
        }
        const REAL *cur = idx ? hb[idx & 1] : (const REAL *)a->h0;
        REAL *nxt = hb[(idx + 1) & 1] + u0;
        if (fast) STEP_MM(1, GU, H, cur, H, packed, 0, gh, GU);
        else
            for (int g = 0; g < G; ++g)
                SFX(gemm)(0, 1, 1, nu, H, cur, H, w_hh + ((ptrdiff_t)g * H + u0) * H, H, (REAL)0, gh + g * nu, nu);
        const ptrdiff_t row = a->reverse ? T - 1 - idx : idx;
        REAL *auxr = hprev ? aux + row * A * H : NULL;
        if (hprev) memcpy(hprev + row * a->ldh + u0, cur + u0, sizeof(REAL) * nu);
        memcpy(nxt, cur + u0, sizeof(REAL) * nu); /* GRU and leaky units read the old state */
        k->fwd(nu, (REAL)a->leak, act + row * GH + u0, H, gh, bias,
               a->peep ? (const REAL *)a->peep + u0 : NULL, H, nxt, c,
               (REAL *)a->y + row * a->ldy + u0, auxr ? auxr + u0 : aux_scratch, auxr ? H : nu);
        fr_task_done(a->sync);
    }
    if (a->part == 0) { /* fr_claim returned 0: every task of every step is complete */
        memcpy(a->h_n, hb[T & 1], sizeof(REAL) * H);
        if (k->n.states == 2)
            for (int t = 0; t < 2; ++t)
                memcpy((REAL *)a->c_n + (t ? mid : 0), shared + (ptrdiff_t)2 * H + t * TS + GN,
                       sizeof(REAL) * (t ? H - mid : mid));
    }
}

static void SFX(fr_recur_backward_units)(const fr_units_backward_args *a)
{
    const SFX(fr_cell_kind) *k = &SFX(cells)[a->cell];
    const int G = k->n.gates, A = k->n.aux, S = k->n.shared, T = a->T, H = a->H, mid = a->mid;
    const int GH = G * H, RH = (G - S) * H, own_e = S < G;
    const int nmax = mid > H - mid ? mid : H - mid, GN = G * nmax;
    const int fast = STEP_FAST() && fr_pack_pays(T, 1);
    const ptrdiff_t TS = SFX(units_task_size)(a->cell, T, H, nmax, 1);
    const ptrdiff_t DB = (ptrdiff_t)GH + RH; /* dbias row per task */
    const REAL *w_hh = (const REAL *)a->w_hh, *act = (const REAL *)a->act;
    const REAL *hprev = (const REAL *)a->hprev, *aux = (const REAL *)a->aux;
    const REAL *dy = (const REAL *)a->dy;
    REAL *dgx = (REAL *)a->dgx, *dgh = (REAL *)a->dgh, *dhs = (REAL *)a->dhs;
    REAL *dbias = (REAL *)a->dbias, *shared = (REAL *)a->shared;
    /* shared: (2 parities, 2 tasks, H) each task's product e W_own over all H units, then the
     * tasks' states */
    int q, idx;

    while (fr_claim(a->sync, T, a->part, &q, &idx)) {
        const int u0 = q ? mid : 0, nu = q ? H - mid : mid;
        REAL *dh = shared + (ptrdiff_t)4 * H + q * TS; /* (nu) gradient w.r.t. the task's units leaving s */
        REAL *dhp = dh + nmax;  /* (nu) its direct (non-W_hh) part for the state entering s */
        REAL *dc = dhp + nmax;  /* (nu) the task's cell-state gradient (2 states) */
        REAL *e = dc + nmax;    /* (GU) the task's recurrent-side gate gradients */
        REAL *packed = e + GN;  /* (fr_packed_size(H, GU)) its rows of W_hh, for e W_own */
        REAL *db = dbias ? dbias + (ptrdiff_t)q * DB : NULL;
        const REAL *peep = a->peep ? (const REAL *)a->peep + u0 : NULL;
        REAL *dp = a->peep ? (REAL *)a->dpeep + (ptrdiff_t)q * 3 * H : NULL; /* the task's row */
        const int s = T - 1 - idx;
        if (idx == 0) {
            if (db) memset(db, 0, sizeof(REAL) * DB);
            if (dp) memset(dp, 0, sizeof(REAL) * 3 * (size_t)H);
            if (fast) STEP_PACK_NN_UNITS(G, H, u0, nu, H, w_hh, packed);
            if (a->dh_n) memcpy(dh, (const REAL *)a->dh_n + u0, sizeof(REAL) * nu);
            else memset(dh, 0, sizeof(REAL) * nu);
            if (k->n.states == 2) {
                if (a->dc_n) memcpy(dc, (const REAL *)a->dc_n + u0, sizeof(REAL) * nu);
                else memset(dc, 0, sizeof(REAL) * nu);
            }
        } else {
            const REAL *p0 = shared + ((ptrdiff_t)((idx - 1) & 1) * 2) * H + u0, *p1 = p0 + H;
            for (int j = 0; j < nu; ++j) dh[j] = dhp[j] + p0[j] + p1[j];
        }
        const ptrdiff_t row = a->reverse ? T - 1 - s : s;
        REAL *d = dgx + row * GH;
        if (dy) SFX(add_to)(nu, dh, dy + row * a->ldy + u0);
        if (dhs) memcpy(dhs + row * H + u0, dh, sizeof(REAL) * nu);
        k->bwd(nu, (REAL)a->leak, act + row * GH + u0, H, A ? aux + row * A * H + u0 : NULL, H,
               peep, dp ? dp + u0 : NULL, H, hprev + row * a->ldh + u0, dh, dc, d + u0, e, nu, dhp);
        if (own_e)
            for (int g = S; g < G; ++g)
                memcpy(dgh + row * RH + (ptrdiff_t)(g - S) * H + u0, e + g * nu, sizeof(REAL) * nu);
        else
            for (int g = 0; g < G; ++g) memcpy(e + g * nu, d + g * H + u0, sizeof(REAL) * nu);
        if (db) {
            for (int g = 0; g < G; ++g) SFX(add_to)(nu, db + g * H + u0, d + g * H + u0);
            for (int g = S; g < G; ++g) SFX(add_to)(nu, db + GH + (ptrdiff_t)(g - S) * H + u0, e + g * nu);
        }
        REAL *mine = shared + ((ptrdiff_t)(idx & 1) * 2 + q) * H;
        if (fast) STEP_MM(1, H, G * nu, e, G * nu, packed, 0, mine, H);
        else {
            memset(mine, 0, sizeof(REAL) * H);
            for (int g = 0; g < G; ++g)
                SFX(gemm)(0, 0, 1, H, nu, e + g * nu, nu, w_hh + ((ptrdiff_t)g * H + u0) * H, H, (REAL)1, mine, H);
        }
        fr_task_done(a->sync);
    }
    if (a->part == 0) {
        const REAL *p0 = shared + ((ptrdiff_t)((T - 1) & 1) * 2) * H, *p1 = p0 + H;
        for (int t = 0; t < 2; ++t) {
            const int u0 = t ? mid : 0, nu = t ? H - mid : mid;
            const REAL *dhp = shared + (ptrdiff_t)4 * H + t * TS + nmax;
            for (int j = 0; j < nu; ++j) ((REAL *)a->dh0)[u0 + j] = dhp[j] + p0[u0 + j] + p1[u0 + j];
            if (k->n.states == 2) memcpy((REAL *)a->dc0 + u0, dhp + nmax, sizeof(REAL) * nu);
        }
    }
}

/* ---- random masks --------------------------------------------------------------------- */
/* out (n) = scale where u_i < p * 2^32, else 0, with u_i a counter-based hash of (seed, i):
 * the same mask whatever the threads or the order, and 32-bit arithmetic that vectorises
 * (a T*B*H zoneout mask from the generator's own draws cost about as much as a plain RNN's
 * training step; this is a few percent of it). */
static inline uint32_t SFX(mix32)(uint32_t x)
{
    /* "lowbias32" (C. Wellons' hash prospector): full avalanche in two multiplies */
    x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
    return x;
}

/* out (n): one block of fr_bernoulli, keyed by (k0, k1); 32-bit counters so the loop vectorises */
HOT static void SFX(bernoulli_block)(uint32_t n, uint32_t k0, uint32_t k1, uint32_t thr, REAL scale,
                                     REAL *RS out)
{
    for (uint32_t j = 0; j < n; ++j) {
        const uint32_t u = SFX(mix32)(SFX(mix32)(j ^ k0) + k1);
        out[j] = u < thr ? scale : (REAL)0;
    }
}

static void SFX(fr_bernoulli)(void *out, ptrdiff_t n, uint64_t seed, double p, double scale)
{
    const double t = p * 4294967296.0;
    const uint32_t thr = t >= 4294967295.0 ? 0xffffffffU : t <= 0 ? 0U : (uint32_t)(t + 0.5);
    const ptrdiff_t block = (ptrdiff_t)1 << 30; /* indices of a block fit the 32-bit counter */
    for (ptrdiff_t b0 = 0; b0 < n; b0 += block) {
        /* each block gets its own key from the seed and its number */
        const uint64_t key = seed + 0x9E3779B97F4A7C15ULL * (uint64_t)(b0 / block);
        const ptrdiff_t m = n - b0 < block ? n - b0 : block;
        SFX(bernoulli_block)((uint32_t)m, SFX(mix32)((uint32_t)key), SFX(mix32)((uint32_t)(key >> 32) ^ 0x85ebca6bU),
                             thr, (REAL)scale, (REAL *)out + b0);
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
#undef GATES_LSTMP_FAST
#undef GATES_GRU_FAST
#undef GATES_RNN_TANH_FAST
#undef LN_SUM_FAST
#undef LN_SQDEV_FAST
#undef LN_DOT_FAST
#undef LN_BWD_FAST
#undef LN_BWD2_FAST
#undef LN_SUM2_FAST
#undef LN_SQDEV2_FAST
#undef STEP_GEMV_NT
