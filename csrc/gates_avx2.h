/*
 * The float32 gate kernels for AVX2+FMA CPUs: LSTM, GRU and tanh-RNN rows, 8 units at a time,
 * with their own 8-wide exp, sigmoid and rational tanh. Each is the vector form of a row in
 * cells.h (same arguments, same two passes), used there when STEP_FAST(). Included by
 * fastrnn.c after smallgemm.h (which decides fr_smallgemm_ok).
 */
#ifndef FASTRNN_GATES_AVX2_H
#define FASTRNN_GATES_AVX2_H
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <math.h>

/* ---- LSTM, GRU and tanh RNN gates, 8 units at a time with FMA -------------------------------- */
/* The same exp as fr_expf (range reduction, degree-7 polynomial, 2^n in the exponent bits) with
 * fused multiply-adds, which halve the polynomial's cost. The last H % 8 units go through the
 * same vector code with masked loads and stores, so every unit is computed identically whatever
 * H, the batch row or the buffers' alignment (auto-contracted FMAs had made results depend on
 * which units fell into a scalar remainder loop). min/max take x as the second operand, which
 * they return when it is NaN, so NaN propagates as in the portable loop; and as there (vmath.h),
 * exp is +inf past log(FLT_MAX) and 0 below log(FLT_MIN), so sigmoid(-inf) = 0 exactly. */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 fr_exp8(__m256 v)
{
    const __m256 shift = _mm256_set1_ps(12582912.0f);
    __m256 x = _mm256_min_ps(_mm256_set1_ps(88.0f), v);
    x = _mm256_max_ps(_mm256_set1_ps(-87.0f), x);
    __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), shift);
    __m256 n = _mm256_sub_ps(t, shift);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 r2 = _mm256_mul_ps(r, r), r4 = _mm256_mul_ps(r2, r2);
    __m256 p01 = _mm256_add_ps(_mm256_set1_ps(1.0f), r);
    __m256 p23 = _mm256_fmadd_ps(r, _mm256_set1_ps(1.0f / 6), _mm256_set1_ps(0.5f));
    __m256 p45 = _mm256_fmadd_ps(r, _mm256_set1_ps(1.0f / 120), _mm256_set1_ps(1.0f / 24));
    __m256 p67 = _mm256_fmadd_ps(r, _mm256_set1_ps(1.0f / 5040), _mm256_set1_ps(1.0f / 720));
    __m256 p = _mm256_fmadd_ps(r4, _mm256_fmadd_ps(r2, p67, p45), _mm256_fmadd_ps(r2, p23, p01));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_castps_si256(t),
                                                   _mm256_set1_epi32(127 - 0x4B400000)), 23);
    const __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    /* ordered comparisons: false for NaN, which keeps y (NaN) */
    const __m256 over = _mm256_cmp_ps(v, _mm256_set1_ps(88.72283905f), _CMP_GT_OQ);
    const __m256 under = _mm256_cmp_ps(v, _mm256_set1_ps(-87.33654475f), _CMP_LT_OQ);
    return _mm256_andnot_ps(under, _mm256_blendv_ps(y, _mm256_set1_ps(HUGE_VALF), over));
}

__attribute__((target("avx2,fma"), always_inline)) static inline __m256 fr_sigm8(__m256 v)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, fr_exp8(_mm256_sub_ps(_mm256_setzero_ps(), v))));
}

/* tanh(x) = x P(x^2) / Q(x^2), |x| clamped to 9 (where 1 - tanh is below half an ulp of 1), P
 * and Q of degree 4 in x^2, coefficients from tools/fit_tanh.py. It needs 12 operations to
 * tanh-through-exp's 24: 40% faster, which shows in the Elman rows and in LSTM's two tanh. Over
 * every float32 in [1e-6, 12]: at most 5.0 ulp (2.9e-7) off, 0.46 ulp on average, and full
 * relative accuracy near 0, where 1 - exp(-2|x|) lost it. min takes |x| as the second operand,
 * which it returns when it is NaN. */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 fr_tanh8(__m256 x)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 a = _mm256_min_ps(_mm256_set1_ps(9.0f), _mm256_andnot_ps(sign, x));
    const __m256 s = _mm256_mul_ps(a, a), s2 = _mm256_mul_ps(s, s);
#define FR_C(v) _mm256_set1_ps(v)
    __m256 p = _mm256_fmadd_ps(s2, _mm256_fmadd_ps(s2, FR_C(1.335474487e-08f),
                                                   _mm256_fmadd_ps(s, FR_C(2.060916268e-05f), FR_C(3.495594021e-03f))),
                               _mm256_fmadd_ps(s, FR_C(1.338103116e-01f), FR_C(1.0f)));
    __m256 q = _mm256_fmadd_ps(s2, _mm256_fmadd_ps(s2, FR_C(7.776596931e-07f),
                                                   _mm256_fmadd_ps(s, FR_C(3.285643761e-04f), FR_C(2.587700635e-02f))),
                               _mm256_fmadd_ps(s, FR_C(4.671434760e-01f), FR_C(1.0f)));
#undef FR_C
    return _mm256_or_ps(_mm256_div_ps(_mm256_mul_ps(a, p), q), _mm256_and_ps(sign, x));
}

/* One LSTM row, as lstm_row in cells.h (same arguments, shapes (H) each), in the same two
 * passes. Masked moves only for the last H % 8 units: on AMD cores a masked store is
 * microcoded and costs more than the arithmetic. */
#define FR_LSTM_PASS1(LD, ST)                                                                     \
    do {                                                                                          \
        __m256 i = fr_sigm8(_mm256_add_ps(_mm256_add_ps(LD(gi), LD(ri)), LD(bi)));               \
        __m256 f = fr_sigm8(_mm256_add_ps(_mm256_add_ps(LD(gf), LD(rf)), LD(bf)));               \
        __m256 g = fr_tanh8(_mm256_add_ps(_mm256_add_ps(LD(gg), LD(rg)), LD(bg)));               \
        __m256 o = fr_sigm8(_mm256_add_ps(_mm256_add_ps(LD(go), LD(ro)), LD(bo)));               \
        __m256 cj = LD(c);                                                                        \
        ST(cp, cj);                                                                               \
        ST(gi, i); ST(gf, f); ST(gg, g); ST(go, o);                                               \
        ST(c, _mm256_fmadd_ps(f, cj, _mm256_mul_ps(i, g)));                                       \
    } while (0)
#define FR_LSTM_PASS2(LD, ST)                                                                     \
    do {                                                                                          \
        __m256 t = fr_tanh8(LD(c));                                                               \
        __m256 hj = _mm256_mul_ps(LD(go), t);                                                     \
        ST(tc, t); ST(h, hj); ST(y, hj);                                                          \
    } while (0)
#define FR_LD(p) _mm256_loadu_ps((p) + j)
#define FR_ST(p, v) _mm256_storeu_ps((p) + j, (v))
#define FR_LDM(p) _mm256_maskload_ps((p) + j, m)
#define FR_STM(p, v) _mm256_maskstore_ps((p) + j, m, (v))
/* Both passes over H units: full vectors, then the last H % 8 units through masked moves. */
#define FR_ROW8(PASS1, PASS2)                                                                     \
    do {                                                                                          \
        const int full = H & ~7;                                                                  \
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(H - full),                         \
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));          \
        int j;                                                                                    \
        for (j = 0; j < full; j += 8) PASS1(FR_LD, FR_ST);                                        \
        if (j < H) PASS1(FR_LDM, FR_STM);                                                         \
        for (j = 0; j < full; j += 8) PASS2(FR_LD, FR_ST);                                        \
        if (j < H) PASS2(FR_LDM, FR_STM);                                                         \
    } while (0)
__attribute__((target("avx2,fma"))) static void
fr_lstm_row8(int H, float *gi, float *gf, float *gg, float *go, const float *ri, const float *rf,
             const float *rg, const float *ro, const float *bi, const float *bf, const float *bg,
             const float *bo, float *h, float *c, float *y, float *cp, float *tc)
{
    FR_ROW8(FR_LSTM_PASS1, FR_LSTM_PASS2);
}

/* One peephole LSTM row, as lstmp_row in cells.h (same arguments, same two passes). */
#define FR_LSTMP_PASS1(LD, ST)                                                                    \
    do {                                                                                          \
        __m256 cj = LD(c);                                                                        \
        __m256 i = fr_sigm8(_mm256_fmadd_ps(LD(pi), cj, _mm256_add_ps(_mm256_add_ps(LD(gi), LD(ri)), LD(bi)))); \
        __m256 f = fr_sigm8(_mm256_fmadd_ps(LD(pf), cj, _mm256_add_ps(_mm256_add_ps(LD(gf), LD(rf)), LD(bf)))); \
        __m256 g = fr_tanh8(_mm256_add_ps(_mm256_add_ps(LD(gg), LD(rg)), LD(bg)));               \
        ST(go, _mm256_add_ps(_mm256_add_ps(LD(go), LD(ro)), LD(bo)));                             \
        ST(cp, cj);                                                                               \
        ST(gi, i); ST(gf, f); ST(gg, g);                                                          \
        ST(c, _mm256_fmadd_ps(f, cj, _mm256_mul_ps(i, g)));                                       \
    } while (0)
#define FR_LSTMP_PASS2(LD, ST)                                                                    \
    do {                                                                                          \
        __m256 cn = LD(c);                                                                        \
        __m256 o = fr_sigm8(_mm256_fmadd_ps(LD(po), cn, LD(go)));                                 \
        __m256 t = fr_tanh8(cn);                                                                  \
        __m256 hj = _mm256_mul_ps(o, t);                                                          \
        ST(go, o); ST(tc, t); ST(h, hj); ST(y, hj);                                               \
    } while (0)
__attribute__((target("avx2,fma"))) static void
fr_lstmp_row8(int H, float *gi, float *gf, float *gg, float *go, const float *ri, const float *rf,
              const float *rg, const float *ro, const float *bi, const float *bf, const float *bg,
              const float *bo, const float *pi, const float *pf, const float *po, float *h, float *c,
              float *y, float *cp, float *tc)
{
    FR_ROW8(FR_LSTMP_PASS1, FR_LSTMP_PASS2);
}
#undef FR_LSTMP_PASS1
#undef FR_LSTMP_PASS2

/* One GRU row, as gru_row in cells.h (same arguments), in the same two passes; the new state
 * is n + z*(h - n), one fused multiply-add. */
#define FR_GRU_PASS1(LD, ST)                                                                      \
    do {                                                                                          \
        __m256 r = fr_sigm8(_mm256_add_ps(_mm256_add_ps(LD(gr), LD(rr)), LD(br)));               \
        __m256 a = _mm256_add_ps(LD(rn), LD(bhn));                                                \
        ST(hn, a); ST(gr, r);                                                                     \
        ST(gn, _mm256_fmadd_ps(r, a, _mm256_add_ps(LD(gn), LD(bn))));                             \
    } while (0)
#define FR_GRU_PASS2(LD, ST)                                                                      \
    do {                                                                                          \
        __m256 z = fr_sigm8(_mm256_add_ps(_mm256_add_ps(LD(gz), LD(rz)), LD(bz)));               \
        __m256 n = fr_tanh8(LD(gn));                                                              \
        __m256 hj = _mm256_fmadd_ps(z, _mm256_sub_ps(LD(h), n), n);                               \
        ST(gz, z); ST(gn, n); ST(h, hj); ST(y, hj);                                               \
    } while (0)
__attribute__((target("avx2,fma"))) static void
fr_gru_row8(int H, float *gr, float *gz, float *gn, const float *rr, const float *rz,
            const float *rn, const float *br, const float *bz, const float *bn, const float *bhn,
            float *h, float *y, float *hn)
{
    FR_ROW8(FR_GRU_PASS1, FR_GRU_PASS2);
}

/* One tanh Elman row, as rnn_row in cells.h (same arguments); the portable loop's exp and
 * division, vectorised by GCC without FMA, took 36% of a small layer's inference. leak == 1 has
 * its own pass so that (1 - leak) * h never turns an infinite h into NaN. */
#define FR_RNN_PASS(LD, ST)                                                                       \
    do {                                                                                          \
        __m256 v = fr_tanh8(_mm256_add_ps(_mm256_add_ps(LD(gx), LD(gh)), LD(bias)));             \
        ST(gx, v); ST(h, v); ST(y, v);                                                            \
    } while (0)
#define FR_RNN_LEAK_PASS(LD, ST)                                                                  \
    do {                                                                                          \
        __m256 v = fr_tanh8(_mm256_add_ps(_mm256_add_ps(LD(gx), LD(gh)), LD(bias)));             \
        __m256 hj = _mm256_fmadd_ps(lk, v, _mm256_mul_ps(keep, LD(h)));                           \
        ST(gx, v); ST(h, hj); ST(y, hj);                                                          \
    } while (0)
#define FR_NO_PASS(LD, ST) ((void)0)
__attribute__((target("avx2,fma"))) static void
fr_rnn_tanh_row8(int H, float leak, float *gx, const float *gh, const float *bias, float *h,
                 float *y)
{
    if (leak == 1.0f) {
        FR_ROW8(FR_RNN_PASS, FR_NO_PASS);
    } else {
        const __m256 lk = _mm256_set1_ps(leak), keep = _mm256_set1_ps(1.0f - leak);
        FR_ROW8(FR_RNN_LEAK_PASS, FR_NO_PASS);
    }
}
#undef FR_RNN_PASS
#undef FR_RNN_LEAK_PASS
/* ---- layer norm's row reductions (loops.h), 8 lanes, a scalar tail --------------------------- */
/* GCC leaves loops.h's portable 8-accumulator sums scalar and shuffled; these are them in
 * vector form (same association: lane l sums elements l, l+8, ...; then the lanes pairwise). */
__attribute__((target("avx2,fma"), always_inline)) static inline float fr_hsum8(__m256 a)
{
    float p[8];
    _mm256_storeu_ps(p, a);
    return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
}

__attribute__((target("avx2,fma"))) static float fr_ln_sum8(int n, const float *v)
{
    __m256 a = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) a = _mm256_add_ps(a, _mm256_loadu_ps(v + j));
    float s = fr_hsum8(a);
    for (; j < n; ++j) s += v[j];
    return s;
}

__attribute__((target("avx2,fma"))) static float fr_ln_sqdev8(int n, const float *v, float m)
{
    __m256 a = _mm256_setzero_ps(), mv = _mm256_set1_ps(m);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(v + j), mv);
        a = _mm256_add_ps(a, _mm256_mul_ps(d, d));
    }
    float s = fr_hsum8(a);
    for (; j < n; ++j) { float d = v[j] - m; s += d * d; }
    return s;
}

__attribute__((target("avx2,fma"))) static float fr_ln_dot8(int n, const float *u, const float *v)
{
    __m256 a = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_loadu_ps(u + j), _mm256_loadu_ps(v + j)));
    float s = fr_hsum8(a);
    for (; j < n; ++j) s += u[j] * v[j];
    return s;
}

/* fr_ln_sum8 and fr_ln_sqdev8 of two rows u, v (n) at once (s[0] u's, s[1] v's; mu, mv the
 * means for sqdev): each sum is one chain of dependent adds, so one row alone waits on the add
 * latency; two chains interleaved take the same time as one. Same association, same bits. */
__attribute__((target("avx2,fma"))) static void fr_ln_sum2_8(int n, const float *u, const float *v, float *s)
{
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(u + j));
        b = _mm256_add_ps(b, _mm256_loadu_ps(v + j));
    }
    float su = fr_hsum8(a), sv = fr_hsum8(b);
    for (int k = j; k < n; ++k) su += u[k];
    for (; j < n; ++j) sv += v[j];
    s[0] = su; s[1] = sv;
}

__attribute__((target("avx2,fma"))) static void fr_ln_sqdev2_8(int n, const float *u, float mu, const float *v,
                                                               float mv, float *s)
{
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    const __m256 vmu = _mm256_set1_ps(mu), vmv = _mm256_set1_ps(mv);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(u + j), vmu), e = _mm256_sub_ps(_mm256_loadu_ps(v + j), vmv);
        a = _mm256_add_ps(a, _mm256_mul_ps(d, d));
        b = _mm256_add_ps(b, _mm256_mul_ps(e, e));
    }
    float su = fr_hsum8(a), sv = fr_hsum8(b);
    for (int k = j; k < n; ++k) { float d = u[k] - mu; su += d * d; }
    for (; j < n; ++j) { float d = v[j] - mv; sv += d * d; }
    s[0] = su; s[1] = sv;
}

/* loops.h's ln_bwd in two passes: gout (n) = r * (gg - mean(gg) - xh * mean(gg * xh)) with
 * gg = gin * gam; dgam += gin * xh, dbet += gin. gout may be gin (in place), no other overlap. */
__attribute__((target("avx2,fma"))) static void fr_ln_bwd8(int n, const float *gin, float *gout, const float *xh,
                                                           float r, const float *gam, float *dgam, float *dbet)
{
    __m256 a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 g = _mm256_loadu_ps(gin + j), x = _mm256_loadu_ps(xh + j);
        _mm256_storeu_ps(dgam + j, _mm256_add_ps(_mm256_loadu_ps(dgam + j), _mm256_mul_ps(g, x)));
        _mm256_storeu_ps(dbet + j, _mm256_add_ps(_mm256_loadu_ps(dbet + j), g));
        __m256 gg = _mm256_mul_ps(g, _mm256_loadu_ps(gam + j));
        a1 = _mm256_add_ps(a1, gg);
        a2 = _mm256_add_ps(a2, _mm256_mul_ps(gg, x));
        _mm256_storeu_ps(gout + j, gg);
    }
    float s1 = fr_hsum8(a1), s2 = fr_hsum8(a2);
    for (int k = j; k < n; ++k) {
        float g = gin[k], gg = g * gam[k];
        dgam[k] += g * xh[k];
        dbet[k] += g;
        s1 += gg;
        s2 += gg * xh[k];
        gout[k] = gg;
    }
    const float m1 = s1 / (float)n, m2 = s2 / (float)n;
    const __m256 vm1 = _mm256_set1_ps(m1), vm2 = _mm256_set1_ps(m2), vr = _mm256_set1_ps(r);
    for (j = 0; j + 8 <= n; j += 8) {
        __m256 t = _mm256_sub_ps(_mm256_loadu_ps(gout + j), vm1);
        t = _mm256_sub_ps(t, _mm256_mul_ps(_mm256_loadu_ps(xh + j), vm2));
        _mm256_storeu_ps(gout + j, _mm256_mul_ps(vr, t));
    }
    for (; j < n; ++j) gout[j] = r * (gout[j] - m1 - xh[j] * m2);
}

/* Both sides of a layer-normalised row whose two LNs take the same gradient g (LSTM, RNN:
 * gates = LN_x(.) + LN_h(.) + b): fr_ln_bwd8 twice in one pair of passes, so g, the gains and
 * the saved xhat rows are read once per pass. g (n) becomes the x side's input gradient (in
 * place), gh (n) the h side's; xx, xh (n) each side's saved xhat; dgx, dgh (n) += g * xhat; dbet (n) += g once (the two
 * sides' beta gradients, and the biases', are the same sum: the caller copies it). Same
 * association as fr_ln_bwd8, so the same bits. */
__attribute__((target("avx2,fma"))) static void fr_ln_bwd2_8(int n, float *g, float *gh, const float *xx,
                                                             const float *xh, float rx, float rh,
                                                             const float *gamx, const float *gamh,
                                                             float *dgx, float *dgh, float *dbet)
{
    __m256 a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps();
    __m256 b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_loadu_ps(g + j), x = _mm256_loadu_ps(xx + j), h = _mm256_loadu_ps(xh + j);
        _mm256_storeu_ps(dgx + j, _mm256_add_ps(_mm256_loadu_ps(dgx + j), _mm256_mul_ps(v, x)));
        _mm256_storeu_ps(dgh + j, _mm256_add_ps(_mm256_loadu_ps(dgh + j), _mm256_mul_ps(v, h)));
        _mm256_storeu_ps(dbet + j, _mm256_add_ps(_mm256_loadu_ps(dbet + j), v));
        __m256 ux = _mm256_mul_ps(v, _mm256_loadu_ps(gamx + j)), uh = _mm256_mul_ps(v, _mm256_loadu_ps(gamh + j));
        a1 = _mm256_add_ps(a1, ux);
        a2 = _mm256_add_ps(a2, _mm256_mul_ps(ux, x));
        b1 = _mm256_add_ps(b1, uh);
        b2 = _mm256_add_ps(b2, _mm256_mul_ps(uh, h));
    }
    float s1 = fr_hsum8(a1), s2 = fr_hsum8(a2), t1 = fr_hsum8(b1), t2 = fr_hsum8(b2);
    for (int k = j; k < n; ++k) {
        float v = g[k], ux = v * gamx[k], uh = v * gamh[k];
        dgx[k] += v * xx[k];
        dgh[k] += v * xh[k];
        dbet[k] += v;
        s1 += ux;
        s2 += ux * xx[k];
        t1 += uh;
        t2 += uh * xh[k];
    }
    const float mx1 = s1 / (float)n, mx2 = s2 / (float)n, mh1 = t1 / (float)n, mh2 = t2 / (float)n;
    const __m256 vx1 = _mm256_set1_ps(mx1), vx2 = _mm256_set1_ps(mx2), vrx = _mm256_set1_ps(rx);
    const __m256 vh1 = _mm256_set1_ps(mh1), vh2 = _mm256_set1_ps(mh2), vrh = _mm256_set1_ps(rh);
    for (j = 0; j + 8 <= n; j += 8) {
        __m256 v = _mm256_loadu_ps(g + j);
        __m256 t = _mm256_sub_ps(_mm256_mul_ps(v, _mm256_loadu_ps(gamh + j)), vh1);
        t = _mm256_sub_ps(t, _mm256_mul_ps(_mm256_loadu_ps(xh + j), vh2));
        _mm256_storeu_ps(gh + j, _mm256_mul_ps(vrh, t));
        t = _mm256_sub_ps(_mm256_mul_ps(v, _mm256_loadu_ps(gamx + j)), vx1);
        t = _mm256_sub_ps(t, _mm256_mul_ps(_mm256_loadu_ps(xx + j), vx2));
        _mm256_storeu_ps(g + j, _mm256_mul_ps(vrx, t));
    }
    for (; j < n; ++j) {
        float v = g[j];
        gh[j] = rh * (v * gamh[j] - mh1 - xh[j] * mh2);
        g[j] = rx * (v * gamx[j] - mx1 - xx[j] * mx2);
    }
}

#undef FR_NO_PASS
#undef FR_GRU_PASS1
#undef FR_GRU_PASS2
#undef FR_LSTM_PASS1
#undef FR_LSTM_PASS2
#undef FR_ROW8
#undef FR_LD
#undef FR_ST
#undef FR_LDM
#undef FR_STM

#else
static float fr_ln_sum8(int n, const float *v) { (void)n; (void)v; return 0; }
static float fr_ln_sqdev8(int n, const float *v, float m) { (void)n; (void)v; (void)m; return 0; }
static float fr_ln_dot8(int n, const float *u, const float *v) { (void)n; (void)u; (void)v; return 0; }
static void fr_ln_sum2_8(int n, const float *u, const float *v, float *s) { (void)n; (void)u; (void)v; (void)s; }
static void fr_ln_sqdev2_8(int n, const float *u, float mu, const float *v, float mv, float *s)
{
    (void)n; (void)u; (void)mu; (void)v; (void)mv; (void)s;
}
static void fr_ln_bwd2_8(int n, float *g, float *gh, const float *xx, const float *xh, float rx, float rh,
                         const float *gamx, const float *gamh, float *dgx, float *dgh, float *dbet)
{
    (void)n; (void)g; (void)gh; (void)xx; (void)xh; (void)rx; (void)rh; (void)gamx; (void)gamh;
    (void)dgx; (void)dgh; (void)dbet;
}
static void fr_ln_bwd8(int n, const float *gin, float *gout, const float *xh, float r, const float *gam,
                       float *dgam, float *dbet)
{
    (void)n; (void)gin; (void)gout; (void)xh; (void)r; (void)gam; (void)dgam; (void)dbet;
}
static void fr_gru_row8(int H, float *gr, float *gz, float *gn, const float *rr, const float *rz,
                        const float *rn, const float *br, const float *bz, const float *bn,
                        const float *bhn, float *h, float *y, float *hn)
{
    (void)H; (void)gr; (void)gz; (void)gn; (void)rr; (void)rz; (void)rn; (void)br; (void)bz;
    (void)bn; (void)bhn; (void)h; (void)y; (void)hn;
}
static void fr_rnn_tanh_row8(int H, float leak, float *gx, const float *gh, const float *bias,
                             float *h, float *y)
{
    (void)H; (void)leak; (void)gx; (void)gh; (void)bias; (void)h; (void)y;
}
static void fr_lstm_row8(int H, float *gi, float *gf, float *gg, float *go, const float *ri,
                         const float *rf, const float *rg, const float *ro, const float *bi,
                         const float *bf, const float *bg, const float *bo, float *h, float *c,
                         float *y, float *cp, float *tc)
{
    (void)H; (void)gi; (void)gf; (void)gg; (void)go; (void)ri; (void)rf; (void)rg; (void)ro;
    (void)bi; (void)bf; (void)bg; (void)bo; (void)h; (void)c; (void)y; (void)cp; (void)tc;
}
static void fr_lstmp_row8(int H, float *gi, float *gf, float *gg, float *go, const float *ri,
                          const float *rf, const float *rg, const float *ro, const float *bi,
                          const float *bf, const float *bg, const float *bo, const float *pi,
                          const float *pf, const float *po, float *h, float *c, float *y, float *cp,
                          float *tc)
{
    (void)H; (void)gi; (void)gf; (void)gg; (void)go; (void)ri; (void)rf; (void)rg; (void)ro;
    (void)bi; (void)bf; (void)bg; (void)bo; (void)pi; (void)pf; (void)po; (void)h; (void)c;
    (void)y; (void)cp; (void)tc;
}
#endif
#endif
