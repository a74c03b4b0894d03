/* The optimizers' update (fastrnn/train/optim.py) as one call over all parameters: the NumPy
 * path runs ~10 array operations per parameter per step, each a Python call and a temporary,
 * which for the small models RNNs often are costs as much as the update's arithmetic.
 * Written once for both dtypes (REAL). Every expression keeps NumPy's order of operations and
 * rounds each Python-float hyper-parameter to REAL first, as NumPy does for a float32 array
 * and a Python scalar; with -ffp-contract=off (no FMA contraction) the results are the NumPy
 * path's bits. */
#include <math.h>
#include <stddef.h>
#include "fastrnn.h"

#define OPTIM_BODY(REAL, SQRT, SFX)                                                               \
    static double sumsq_##SFX(const fr_optim_args *a)                                             \
    {                                                                                             \
        const REAL cv = (REAL)a->clipvalue;                                                       \
        double acc = 0.0;                                                                         \
        for (int k = 0; k < a->ntensors; ++k) {                                                   \
            REAL *g = (REAL *)a->t[k].grad;                                                       \
            const ptrdiff_t n = a->t[k].n;                                                        \
            for (ptrdiff_t i = 0; i < n; ++i) {                                                   \
                if (a->clipvalue > 0) g[i] = g[i] < -cv ? -cv : (g[i] > cv ? cv : g[i]);          \
                acc += (double)g[i] * (double)g[i];                                               \
            }                                                                                     \
        }                                                                                         \
        return acc;                                                                               \
    }                                                                                             \
    static void step_##SFX(const fr_optim_args *a)                                                \
    {                                                                                             \
        const REAL scale = (REAL)a->grad_scale, lr = (REAL)a->lr, wd = (REAL)a->weight_decay;     \
        const REAL lrwd = (REAL)(a->lr * a->weight_decay);                                        \
        const REAL mom = (REAL)a->momentum, eps = (REAL)a->eps;                                   \
        const REAL b1 = (REAL)a->beta1, b2 = (REAL)a->beta2;                                      \
        const REAL omb1 = (REAL)(1.0 - a->beta1), omb2 = (REAL)(1.0 - a->beta2);                  \
        const REAL c1 = (REAL)(a->lr / a->bc1), c2 = (REAL)a->bc2;                                \
        const REAL rho = (REAL)a->rho, omrho = (REAL)(1.0 - a->rho);                              \
        const int coupled = a->weight_decay != 0 && !a->decoupled;                                \
        for (int k = 0; k < a->ntensors; ++k) {                                                   \
            const fr_tensor *t = &a->t[k];                                                        \
            REAL *p = (REAL *)t->param, *gr = (REAL *)t->grad;                                    \
            REAL *s0 = (REAL *)t->s0, *s1 = (REAL *)t->s1, *s2 = (REAL *)t->s2;                   \
            for (ptrdiff_t i = 0; i < t->n; ++i) {                                                \
                if (a->grad_scale != 1.0) gr[i] *= scale;                                         \
                REAL g = gr[i];                                                                   \
                if (coupled) g = g + wd * p[i];                                                   \
                switch (a->kind) {                                                                \
                case FR_OPT_SGD:                                                                  \
                    if (a->momentum != 0) {                                                       \
                        s0[i] = s0[i] * mom + g;                                                  \
                        g = a->nesterov ? g + mom * s0[i] : s0[i];                                \
                    }                                                                             \
                    p[i] = p[i] - lr * g;                                                         \
                    break;                                                                        \
                case FR_OPT_ADAM:                                                                 \
                    s0[i] = s0[i] * b1 + omb1 * g;                                                \
                    s1[i] = s1[i] * b2 + omb2 * (g * g);                                          \
                    if (a->decoupled && a->weight_decay != 0) p[i] = p[i] - lrwd * p[i];          \
                    p[i] = p[i] - c1 * s0[i] / (SQRT(s1[i] / c2) + eps);                          \
                    break;                                                                        \
                case FR_OPT_RMSPROP: {                                                            \
                    s0[i] = s0[i] * rho + omrho * (g * g);                                        \
                    REAL denom = s0[i];                                                           \
                    if (a->centered) {                                                            \
                        s2[i] = s2[i] * rho + omrho * g;                                          \
                        denom = s0[i] - s2[i] * s2[i];                                            \
                    }                                                                             \
                    REAL st = g / (SQRT(denom) + eps);                                            \
                    if (a->momentum != 0) {                                                       \
                        s1[i] = s1[i] * mom + st;                                                 \
                        st = s1[i];                                                               \
                    }                                                                             \
                    p[i] = p[i] - lr * st;                                                        \
                    break;                                                                        \
                }                                                                                 \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }

OPTIM_BODY(float, sqrtf, f32)
OPTIM_BODY(double, sqrt, f64)

double fr_optim_sumsq(const fr_optim_args *a)
{
    return a->dtype == FR_F64 ? sumsq_f64(a) : sumsq_f32(a);
}

void fr_optim_step(const fr_optim_args *a)
{
    if (a->dtype == FR_F64) step_f64(a);
    else step_f32(a);
}
