/*
 * Scalar exp and tanh for the gate loops, written so that GCC vectorises them (no libm calls,
 * no branches): float32 fr_expf/fr_tanhf and float64 fr_exp/fr_tanh. Included by fastrnn.c.
 * (The AVX2 float32 gate kernels have their own 8-wide versions in gates_avx2.h.)
 *
 * Special values as IEEE (and NumPy) give them, which the gates inherit: exp(NaN) = NaN,
 * exp(+inf) = +inf (and +inf wherever exp overflows), exp(-inf) = 0 (and 0 below the smallest
 * normal number: the 2^n assembly has no subnormals); so tanh(+-inf) = +-1, sigmoid(+inf) = 1,
 * sigmoid(-inf) = 0 exactly, and NaN stays NaN. The comparisons that select the special results
 * are false for NaN, so NaN passes through them. The exponent bits are assembled in unsigned
 * arithmetic: for NaN or the clamped range the shifted value may not fit a signed int.
 */
#ifndef FASTRNN_VMATH_H
#define FASTRNN_VMATH_H
#include <math.h>
#include <stdint.h>
#include <string.h>

/* float32 exp without libm calls, so the gate loops vectorise. Range reduction x = n ln2 + r,
 * |r| <= ln2/2, then a degree-7 Taylor polynomial (truncation < 6e-9 relative, below float32's
 * rounding) and 2^n assembled in the exponent bits. Rounding to n uses the 1.5*2^23 trick instead
 * of floorf, which SSE2/AVX2 would otherwise call out of line.
 * Latency, not throughput, limits the LSTM gate loop (five exps and five divisions chained in
 * each iteration), so the clamp is written as the min/max GCC maps to single instructions (NaN
 * still passes through: the comparison is false and x is kept) and the polynomial is evaluated
 * in Estrin's scheme, depth 4 instead of Horner's 7. */
static inline float fr_expf(float v)
{
    const float shift = 12582912.0f; /* 1.5 * 2^23 */
    float x = 88.0f < v ? 88.0f : v;
    x = -87.0f > x ? -87.0f : x;
    float t = x * 1.44269504088896341f + shift;
    float n = t - shift;
    float r = x - n * 0.693359375f - n * -2.12194440e-4f;
    float r2 = r * r, r4 = r2 * r2;
    float p01 = 1.0f + r, p23 = 0.5f + r * (1.0f / 6), p45 = 1.0f / 24 + r * (1.0f / 120),
          p67 = 1.0f / 720 + r * (1.0f / 5040);
    float p = (p01 + r2 * p23) + r4 * (p45 + r2 * p67);
    uint32_t ti, ni;
    memcpy(&ti, &t, 4);
    ni = (ti - 0x4B400000u + 127u) << 23; /* bits of t minus bits of shift = n */
    float scale;
    memcpy(&scale, &ni, 4);
    float e = p * scale;
    e = v > 88.72283905f ? HUGE_VALF : e;  /* beyond log(FLT_MAX): overflow, +inf for +inf */
    return v < -87.33654475f ? 0.0f : e;   /* below log(FLT_MIN): 0, and 0 for -inf */
}

/* tanh through exp of -2|x|: the absolute error stays at float32 rounding for all x (relative
 * accuracy near 0 is lower, which no gate uses). */
static inline float fr_tanhf(float x)
{
    float e = fr_expf(-2.0f * fabsf(x));
    return copysignf((1.0f - e) / (1.0f + e), x);
}

/* float64 versions of the same idea: |r| <= ln2/2 and a degree-12 Taylor polynomial (truncation
 * below 2e-16 relative), ln2 split in two parts for an exact reduction, 2^n built in the
 * exponent bits, rounding by the 1.5*2^52 trick. Within a few ulp of libm, and vectorisable. */
static inline double fr_exp(double v)
{
    const double shift = 6755399441055744.0; /* 1.5 * 2^52 */
    double x = v < -708.0 ? -708.0 : (v > 709.0 ? 709.0 : v);
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
    uint64_t ti, ni;
    memcpy(&ti, &t, 8);
    ni = (ti - 0x4338000000000000ULL + 1023u) << 52; /* bits of t minus bits of shift = n */
    double scale;
    memcpy(&scale, &ni, 8);
    double e = p * scale;
    e = v > 709.782712893384 ? HUGE_VAL : e;  /* beyond log(DBL_MAX): overflow, +inf for +inf */
    return v < -708.3964185322641 ? 0.0 : e;  /* below log(DBL_MIN): 0, and 0 for -inf */
}

static inline double fr_tanh(double x)
{
    double e = fr_exp(-2.0 * fabs(x));
    return copysign((1.0 - e) / (1.0 + e), x);
}

#endif
