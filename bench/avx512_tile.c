/*
 * Would an AVX-512 entry beside the AVX2+FMA micro-kernel of csrc/smallgemm.h pay? The packed
 * 16-column panels fit one zmm register, so the natural AVX-512 tile is 12 rows x 16 columns
 * (12 accumulators, one panel load and 12 embedded broadcasts per k). This times it against the
 * shipped fr_smallgemm on the shapes a time step multiplies (one thread, packed weights, best of
 * 7 rounds, results compared):
 *
 *     cc -O3 -o /tmp/avx512_tile bench/avx512_tile.c && /tmp/avx512_tile
 *
 * On an AMD EPYC family 25 model 17 (Zen 4: 512-bit operations run as two 256-bit halves, so
 * the FMA peak is AVX2's) it measured 0.74x-1.18x the AVX2 kernel (slower at K = 2048 and at
 * M = 1), so fastrnn ships no AVX-512 kernel; on a CPU with full-width 512-bit FMA units the
 * answer may differ, and this file is the way to ask. Not part of the build.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <stddef.h>
#include <time.h>
#include "../csrc/smallgemm.h"

#define MR5 12
__attribute__((target("avx512f"), always_inline)) static inline void
tile512(int mr, int nc, int K, const float *A, int lda, const float *P, int accumulate, float *C, int ldc)
{
    __m512 c[MR5];
#pragma GCC unroll 12
    for (int r = 0; r < MR5; ++r) c[r] = _mm512_setzero_ps();
    for (int k = 0; k < K; ++k) {
        __m512 b = _mm512_loadu_ps(P + (ptrdiff_t)k * 16);
#pragma GCC unroll 12
        for (int r = 0; r < MR5; ++r)
            if (r < mr) c[r] = _mm512_fmadd_ps(_mm512_set1_ps(A[(ptrdiff_t)r * lda + k]), b, c[r]);
    }
    __mmask16 m = nc == 16 ? 0xffff : (__mmask16)((1u << nc) - 1);
#pragma GCC unroll 12
    for (int r = 0; r < MR5; ++r) {
        if (r >= mr) break;
        float *cr = C + (ptrdiff_t)r * ldc;
        if (accumulate) c[r] = _mm512_add_ps(c[r], _mm512_maskz_loadu_ps(m, cr));
        _mm512_mask_storeu_ps(cr, m, c[r]);
    }
}
__attribute__((target("avx512f"))) static void
sg512(int M, int N, int K, const float *A, int lda, const float *P, int accumulate, float *C, int ldc)
{
    for (int p = 0; p < fr_panels(N); ++p) {
        const float *Pp = P + (ptrdiff_t)p * K * 16;
        const int n0 = p * 16, nc = N - n0 < 16 ? N - n0 : 16;
        int m = 0;
        for (; m + MR5 <= M; m += MR5) tile512(MR5, nc, K, A + (ptrdiff_t)m * lda, lda, Pp, accumulate, C + (ptrdiff_t)m * ldc + n0, ldc);
        switch (M - m) {
#define CASE(n) case n: tile512(n, nc, K, A + (ptrdiff_t)m * lda, lda, Pp, accumulate, C + (ptrdiff_t)m * ldc + n0, ldc); break;
        CASE(11) CASE(10) CASE(9) CASE(8) CASE(7) CASE(6) CASE(5) CASE(4) CASE(3) CASE(2) CASE(1)
        default: break;
        }
    }
}
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+1e-9*t.tv_nsec;}
int main(void) {
    (void)fr_gemv_rows; (void)fr_pack_nn; /* the header's other kernels, unused here */
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !fr_smallgemm_ok()) {
        printf("this CPU lacks AVX-512F (or AVX2+FMA): nothing to compare\n");
        return 0;
    }
    int shapes[][3] = {{32,2048,512},{32,512,2048},{64,512,128},{32,512,128},{1,512,128},{64,2048,512}};
    for (int s = 0; s < 6; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = malloc(sizeof(float)*M*K), *W = malloc(sizeof(float)*N*K), *P = aligned_alloc(64, sizeof(float)*fr_packed_size(N,K)+64);
        float *C1 = malloc(sizeof(float)*M*N), *C2 = malloc(sizeof(float)*M*N);
        for (int i=0;i<M*K;i++) A[i]=(float)rand()/RAND_MAX-0.5f;
        for (int i=0;i<N*K;i++) W[i]=(float)rand()/RAND_MAX-0.5f;
        fr_pack_nt(N,K,W,P);
        int reps = (int)(2e9 / (2.0*M*N*K)); if (reps<3) reps=3;
        double best1=1e9,best2=1e9;
        for (int r=0;r<7;r++){
            double t0=now(); for(int i=0;i<reps;i++) fr_smallgemm(M,N,K,A,K,P,0,C1,N); double t=(now()-t0)/reps; if(t<best1)best1=t;
            t0=now(); for(int i=0;i<reps;i++) sg512(M,N,K,A,K,P,0,C2,N); t=(now()-t0)/reps; if(t<best2)best2=t;
        }
        double md=0; for(int i=0;i<M*N;i++){double d=C1[i]-C2[i]; if(d<0)d=-d; if(d>md)md=d;}
        double fl=2.0*M*N*K;
        printf("M=%d N=%d K=%d  avx2 %.1f GF/s  avx512 %.1f GF/s  ratio %.2f  maxdiff %.1e\n",M,N,K,fl/best1/1e9,fl/best2/1e9,best1/best2,md);
    }
}
