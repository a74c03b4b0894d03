/*
 * Per-step recurrent products for float32 with the weight matrix packed once per sequence.
 *
 * Each time step multiplies the (rows x H) state by the same W_hh. A general GEMM re-packs W_hh
 * on every call and is tuned for large M; here W_hh is packed once into panels of 16 output
 * columns and an AVX2/FMA micro-kernel computes 6 rows x 16 columns at a time straight from the
 * panels. Used only when the CPU has AVX2 and FMA (checked at run time); otherwise the caller
 * falls back to BLAS.
 *
 * Kernels only: when they pay is decided in plan.c. Included by fastrnn.c and plan.c (not a
 * public header).
 */
#define FR_NR 16 /* output columns per panel */
#define FR_MR 6  /* rows per micro-tile: 12 accumulators + 2 panel registers + 1 broadcast */
/* Panels of 16 columns for N columns (N + 15 computed wide: N may be near INT_MAX), and the
 * elements of a packed matrix with N output columns and K inner length. */
static inline int fr_panels(int N) { return (int)(((ptrdiff_t)N + FR_NR - 1) / FR_NR); }
static inline ptrdiff_t fr_packed_size(int N, int K) { return (ptrdiff_t)fr_panels(N) * FR_NR * K; }

/* Packings of W's rows that one unit range [u0, u0+nu) owns in each of G gate blocks of H rows
 * (packed row q is W's row (q/nu)*H + u0 + q%nu; fr_recur_units). G = 1, u0 = 0, nu = H is the
 * whole matrix (fr_pack_nt, fr_pack_nn). The row map is computed outside the element loops. */
static inline ptrdiff_t fr_unit_row(int q, int nu, int H, int u0) { return (ptrdiff_t)(q / nu) * H + u0 + q % nu; }

/* For C = A W_own^T with W_own (G*nu, K) the owned rows of W (G*H, K):
 * P[p][k][j] = W_own[p*16+j][k] (zero past G*nu). */
static void fr_pack_nt_units(int G, int H, int u0, int nu, int K, const float *W /* (G*H,K) */,
                             float *P /* fr_packed_size(G*nu, K) */)
{
    const int N = G * nu;
    for (int p = 0; p < fr_panels(N); ++p) {
        const float *rows[FR_NR];
        for (int j = 0; j < FR_NR; ++j) {
            const ptrdiff_t q = (ptrdiff_t)p * FR_NR + j;
            rows[j] = q < N ? W + fr_unit_row((int)q, nu, H, u0) * K : NULL;
        }
        for (int k = 0; k < K; ++k)
            for (int j = 0; j < FR_NR; ++j)
                P[((ptrdiff_t)p * K + k) * FR_NR + j] = rows[j] ? rows[j][k] : 0.0f;
    }
}

/* For C = A W_own with W_own (G*nu, N) the owned rows of W (G*H, N), K = G*nu:
 * P[p][k][j] = W_own[k][p*16+j] (zero past N). */
static void fr_pack_nn_units(int G, int H, int u0, int nu, int N, const float *W /* (G*H,N) */,
                             float *P /* fr_packed_size(N, G*nu) */)
{
    const int K = G * nu;
    for (int p = 0; p < fr_panels(N); ++p)
        for (int k = 0; k < K; ++k) {
            const float *row = W + fr_unit_row(k, nu, H, u0) * N;
            for (int j = 0; j < FR_NR; ++j) {
                const ptrdiff_t n = (ptrdiff_t)p * FR_NR + j;
                P[((ptrdiff_t)p * K + k) * FR_NR + j] = n < N ? row[n] : 0.0f;
            }
        }
}

/* C = A W^T with W (N,K) row-major, and C = A W with W (K,N) row-major. */
static void fr_pack_nt(int N, int K, const float *W, float *P) { fr_pack_nt_units(1, N, 0, N, K, W, P); }
static void fr_pack_nn(int N, int K, const float *W, float *P) { fr_pack_nn_units(1, K, 0, K, N, W, P); }

/* The AVX2+FMA kernels below exist on x86-64 with GCC or clang only (they use its target
 * attribute, one function at a time, so the rest of the build needs no -mavx2). Everywhere else
 * (aarch64, 32-bit x86, MSVC) fr_smallgemm_ok() is 0 and the portable loops of cells.h and BLAS
 * run. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <cpuid.h>

/* AVX2 and FMA in the CPU, and YMM state saved by the OS, read with cpuid and xgetbv directly
 * (the header cpuid.h of GCC and clang; xgetbv as bytes for old assemblers):
 * __builtin_cpu_supports needs __cpu_model from the compiler's runtime library (libgcc or
 * compiler-rt), which not every toolchain links into a shared object. */
static int fr_cpu_avx2_fma(void)
{
    unsigned a, b, c, d;
    const unsigned need = (1u << 12) /* FMA */ | (1u << 27) /* OSXSAVE */ | (1u << 28) /* AVX */;
    if (!__get_cpuid(1, &a, &b, &c, &d) || (c & need) != need) return 0;
    unsigned xlo, xhi;
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(xlo), "=d"(xhi) : "c"(0)); /* xgetbv(0) */
    (void)xhi;
    if ((xlo & 6u) != 6u) return 0; /* XMM and YMM registers enabled */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b >> 5) & 1u; /* AVX2 */
}

/* FASTRNN_BLAS_STEPS=1 in the environment forces the BLAS path (for A/B timing and debugging). */
static int fr_smallgemm_ok(void)
{
    static int ok = -1; /* every thread computes the same value: relaxed atomics suffice */
    int v = __atomic_load_n(&ok, __ATOMIC_RELAXED);
    if (v < 0) {
        const char *off = getenv("FASTRNN_BLAS_STEPS");
        v = fr_cpu_avx2_fma() && !(off && off[0] == '1');
        __atomic_store_n(&ok, v, __ATOMIC_RELAXED);
    }
    return v;
}

/* C (mr rows, 16 columns, ldc; only the first nc columns are stored) = or += A (mr,K,lda) P. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
fr_tile(int mr, int nc, int K, const float *A, int lda, const float *P, int accumulate,
        float *C, int ldc)
{
    __m256 c0[FR_MR], c1[FR_MR];
#pragma GCC unroll 6
    for (int r = 0; r < FR_MR; ++r) { c0[r] = _mm256_setzero_ps(); c1[r] = _mm256_setzero_ps(); }
    for (int k = 0; k < K; ++k) {
        __m256 b0 = _mm256_loadu_ps(P + (ptrdiff_t)k * FR_NR), b1 = _mm256_loadu_ps(P + (ptrdiff_t)k * FR_NR + 8);
#pragma GCC unroll 6
        for (int r = 0; r < FR_MR; ++r) {
            if (r < mr) {
                __m256 a = _mm256_broadcast_ss(A + (ptrdiff_t)r * lda + k);
                c0[r] = _mm256_fmadd_ps(a, b0, c0[r]);
                c1[r] = _mm256_fmadd_ps(a, b1, c1[r]);
            }
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < FR_MR; ++r) {
        if (r >= mr) break;
        float *cr = C + (ptrdiff_t)r * ldc;
        if (nc == FR_NR) {
            if (accumulate) {
                c0[r] = _mm256_add_ps(c0[r], _mm256_loadu_ps(cr));
                c1[r] = _mm256_add_ps(c1[r], _mm256_loadu_ps(cr + 8));
            }
            _mm256_storeu_ps(cr, c0[r]);
            _mm256_storeu_ps(cr + 8, c1[r]);
        } else {
            float tmp[FR_NR];
            _mm256_storeu_ps(tmp, c0[r]);
            _mm256_storeu_ps(tmp + 8, c1[r]);
            for (int j = 0; j < nc; ++j) cr[j] = accumulate ? cr[j] + tmp[j] : tmp[j];
        }
    }
}

/* One row, four full panels: c (64) = or += a (K) P[p..p+3]. A vector-matrix product streams the
 * matrix from L2 once per step; eight accumulators over four panel streams keep two FMAs and
 * two loads in flight per cycle, where one panel at a time waits on the FMA latency. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
fr_row4(int K, const float *a, const float *P, int accumulate, float *c)
{
    __m256 acc[8];
#pragma GCC unroll 8
    for (int q = 0; q < 8; ++q) acc[q] = _mm256_setzero_ps();
    const ptrdiff_t stride = (ptrdiff_t)K * FR_NR;
    for (int k = 0; k < K; ++k) {
        __m256 v = _mm256_broadcast_ss(a + k);
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q) {
            const float *pk = P + q * stride + (ptrdiff_t)k * FR_NR;
            acc[2 * q] = _mm256_fmadd_ps(v, _mm256_loadu_ps(pk), acc[2 * q]);
            acc[2 * q + 1] = _mm256_fmadd_ps(v, _mm256_loadu_ps(pk + 8), acc[2 * q + 1]);
        }
    }
#pragma GCC unroll 8
    for (int q = 0; q < 8; ++q) {
        if (accumulate) acc[q] = _mm256_add_ps(acc[q], _mm256_loadu_ps(c + 8 * q));
        _mm256_storeu_ps(c + 8 * q, acc[q]);
    }
}

/* y (n) = W v for W (n,K,ldw) row-major, unpacked: the products of a streaming cell step, where
 * packing would cost as much as the step. Each row is a dot product, so eight rows are read
 * side by side against one load of v, and their eight sums come out of one hadd tree as a
 * vector: ~29 bytes of W per cycle from L2 (of 32) against ~22 for OpenBLAS's sgemv on these
 * shapes, which also pays its call overhead once per gate block. Leftover rows take the same lane sums
 * and the same reduction tree, so a row's result never depends on which group it fell in (a
 * split cell step equals the unsplit one). */
__attribute__((target("avx2,fma"))) static void
fr_gemv_rows(int n, int K, const float *W, int ldw, const float *v, float *y)
{
    const int K8 = K & ~7, kt = K - K8;
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(kt), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        const float *w = W + (ptrdiff_t)j * ldw;
        __m256 a[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; ++r) a[r] = _mm256_setzero_ps();
        for (int k = 0; k < K8; k += 8) {
            const __m256 x = _mm256_loadu_ps(v + k);
#pragma GCC unroll 8
            for (int r = 0; r < 8; ++r) a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(w + (ptrdiff_t)r * ldw + k), x, a[r]);
        }
        if (kt) {
            const __m256 x = _mm256_maskload_ps(v + K8, m);
#pragma GCC unroll 8
            for (int r = 0; r < 8; ++r)
                a[r] = _mm256_fmadd_ps(_mm256_maskload_ps(w + (ptrdiff_t)r * ldw + K8, m), x, a[r]);
        }
        /* u0 = the low and high half-sums of rows 0-3 in its low and high lanes, u1 of 4-7 */
        const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
        const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
        _mm256_storeu_ps(y + j, _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                                              _mm256_permute2f128_ps(u0, u1, 0x31)));
    }
    for (; j < n; ++j) {
        const float *w = W + (ptrdiff_t)j * ldw;
        __m256 a = _mm256_setzero_ps();
        for (int k = 0; k < K8; k += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(v + k), a);
        if (kt) a = _mm256_fmadd_ps(_mm256_maskload_ps(w + K8, m), _mm256_maskload_ps(v + K8, m), a);
        a = _mm256_hadd_ps(a, a);
        a = _mm256_hadd_ps(a, a);
        y[j] = _mm_cvtss_f32(_mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1)));
    }
}

/* C (M,N,ldc) = or += A (M,K,lda) times the packed matrix P (from fr_pack_nt/fr_pack_nn). */
__attribute__((target("avx2,fma"))) static void
fr_smallgemm(int M, int N, int K, const float *A, int lda, const float *P, int accumulate,
             float *C, int ldc)
{
    int p0 = 0;
    if (M == 1)
        for (; p0 + 4 <= N / FR_NR; p0 += 4)
            fr_row4(K, A, P + (ptrdiff_t)p0 * K * FR_NR, accumulate, C + p0 * FR_NR);
    for (int p = p0; p < fr_panels(N); ++p) {
        const float *Pp = P + (ptrdiff_t)p * K * FR_NR;
        const int n0 = p * FR_NR, nc = N - n0 < FR_NR ? N - n0 : FR_NR;
        /* A tile of fewer than 4 rows has fewer than 8 independent accumulators, too few to
         * cover the FMA latency on two pipes: a remainder of 1..3 rows borrows one full tile
         * of 5 or 6 and runs as 4 + 2..5 rows (32 rows in tiles of 6: 4x6 + 2x4 instead of
         * 5x6 + 2). Full tiles have mr rows (plan.c, tile_rows), a constant in each call of
         * fr_tile so that each size compiles to its own code. */
        const int mr = fr_plan_tile_rows();
        int full = M / mr, rest = M % mr, m = 0;
        if (mr > 4 && rest && rest < 4 && full) { full -= 1; rest += mr; }
        for (int t = 0; t < full; ++t, m += mr) {
            const float *At = A + (ptrdiff_t)m * lda;
            float *Ct = C + (ptrdiff_t)m * ldc + n0;
            if (mr == 6) fr_tile(6, nc, K, At, lda, Pp, accumulate, Ct, ldc);
            else if (mr == 5) fr_tile(5, nc, K, At, lda, Pp, accumulate, Ct, ldc);
            else fr_tile(4, nc, K, At, lda, Pp, accumulate, Ct, ldc);
        }
        if (rest > mr) {
            fr_tile(4, nc, K, A + (ptrdiff_t)m * lda, lda, Pp, accumulate, C + (ptrdiff_t)m * ldc + n0, ldc);
            m += 4;
        }
        switch (M - m) { /* constant mr per call, so each remainder tile compiles to its own code */
        case 5: fr_tile(5, nc, K, A + (ptrdiff_t)m * lda, lda, Pp, accumulate, C + (ptrdiff_t)m * ldc + n0, ldc); break;
        case 4: fr_tile(4, nc, K, A + (ptrdiff_t)m * lda, lda, Pp, accumulate, C + (ptrdiff_t)m * ldc + n0, ldc); break;
        case 3: fr_tile(3, nc, K, A + (ptrdiff_t)m * lda, lda, Pp, accumulate, C + (ptrdiff_t)m * ldc + n0, ldc); break;
        case 2: fr_tile(2, nc, K, A + (ptrdiff_t)m * lda, lda, Pp, accumulate, C + (ptrdiff_t)m * ldc + n0, ldc); break;
        case 1: fr_tile(1, nc, K, A + (ptrdiff_t)m * lda, lda, Pp, accumulate, C + (ptrdiff_t)m * ldc + n0, ldc); break;
        default: break;
        }
    }
}
#else
static int fr_smallgemm_ok(void) { return 0; }
static void fr_gemv_rows(int n, int K, const float *W, int ldw, const float *v, float *y)
{
    (void)n; (void)K; (void)W; (void)ldw; (void)v; (void)y;
}
static void fr_smallgemm(int M, int N, int K, const float *A, int lda, const float *P,
                         int accumulate, float *C, int ldc)
{
    (void)M; (void)N; (void)K; (void)A; (void)lda; (void)P; (void)accumulate; (void)C; (void)ldc;
}
#endif
