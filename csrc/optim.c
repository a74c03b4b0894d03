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
    /* One loop per kind, its options hoisted out as loop-invariant flags: GCC then vectorises   \
     * each loop (with a run-time overlap check on the arrays), where one loop that switched on  \
     * the kind per element ran scalar at ~8 ns an element (a sixth of the update of a small     \
     * model's step). The operations and their order are unchanged: the same bits. */            \
    static void scale_##SFX(REAL *gr, ptrdiff_t n, REAL scale)                                    \
    {                                                                                             \
        for (ptrdiff_t i = 0; i < n; ++i) gr[i] *= scale;                                         \
    }                                                                                             \
    static void sgd_##SFX(REAL *p, const REAL *gr, REAL *s0, ptrdiff_t n, int coupled, REAL wd,   \
                          REAL lr, int momentum, REAL mom, int nesterov)                          \
    {                                                                                             \
        for (ptrdiff_t i = 0; i < n; ++i) {                                                       \
            REAL g = gr[i];                                                                       \
            if (coupled) g = g + wd * p[i];                                                       \
            if (momentum) {                                                                       \
                s0[i] = s0[i] * mom + g;                                                          \
                g = nesterov ? g + mom * s0[i] : s0[i];                                           \
            }                                                                                     \
            p[i] = p[i] - lr * g;                                                                 \
        }                                                                                         \
    }                                                                                             \
    static void adam_##SFX(REAL *p, const REAL *gr, REAL *s0, REAL *s1, ptrdiff_t n, int coupled, \
                           REAL wd, const fr_optim_args *a)                                       \
    {                                                                                             \
        const REAL b1 = (REAL)a->beta1, b2 = (REAL)a->beta2, eps = (REAL)a->eps;                  \
        const REAL omb1 = (REAL)(1.0 - a->beta1), omb2 = (REAL)(1.0 - a->beta2);                  \
        const REAL c1 = (REAL)(a->lr / a->bc1), c2 = (REAL)a->bc2;                                \
        const REAL lrwd = (REAL)(a->lr * a->weight_decay);                                        \
        const int decay = a->decoupled && a->weight_decay != 0;                                   \
        for (ptrdiff_t i = 0; i < n; ++i) {                                                       \
            REAL g = gr[i];                                                                       \
            if (coupled) g = g + wd * p[i];                                                       \
            const REAL m = s0[i] * b1 + omb1 * g, v = s1[i] * b2 + omb2 * (g * g);                \
            s0[i] = m;                                                                            \
            s1[i] = v;                                                                            \
            REAL pi = p[i];                                                                       \
            if (decay) pi = pi - lrwd * pi;                                                       \
            p[i] = pi - c1 * m / (SQRT(v / c2) + eps);                                            \
        }                                                                                         \
    }                                                                                             \
    static void rmsprop_##SFX(REAL *p, const REAL *gr, REAL *s0, REAL *s1, REAL *s2, ptrdiff_t n, \
                              int coupled, REAL wd, const fr_optim_args *a)                       \
    {                                                                                             \
        const REAL lr = (REAL)a->lr, mom = (REAL)a->momentum, eps = (REAL)a->eps;                 \
        const REAL rho = (REAL)a->rho, omrho = (REAL)(1.0 - a->rho);                              \
        const int centered = a->centered, momentum = a->momentum != 0;                            \
        for (ptrdiff_t i = 0; i < n; ++i) {                                                       \
            REAL g = gr[i];                                                                       \
            if (coupled) g = g + wd * p[i];                                                       \
            const REAL sq = s0[i] * rho + omrho * (g * g);                                        \
            s0[i] = sq;                                                                           \
            REAL denom = sq;                                                                      \
            if (centered) {                                                                       \
                const REAL mg = s2[i] * rho + omrho * g;                                          \
                s2[i] = mg;                                                                       \
                denom = sq - mg * mg;                                                             \
            }                                                                                     \
            REAL st = g / (SQRT(denom) + eps);                                                    \
            if (momentum) {                                                                       \
                st = s1[i] * mom + st;                                                            \
                s1[i] = st;                                                                       \
            }                                                                                     \
            p[i] = p[i] - lr * st;                                                                \
        }                                                                                         \
    }                                                                                             \
    static void step_##SFX(const fr_optim_args *a)                                                \
    {                                                                                             \
        const REAL scale = (REAL)a->grad_scale, lr = (REAL)a->lr, wd = (REAL)a->weight_decay;     \
        const int coupled = a->weight_decay != 0 && !a->decoupled;                                \
        for (int k = 0; k < a->ntensors; ++k) {                                                   \
            const fr_tensor *t = &a->t[k];                                                        \
            REAL *p = (REAL *)t->param, *gr = (REAL *)t->grad;                                    \
            REAL *s0 = (REAL *)t->s0, *s1 = (REAL *)t->s1, *s2 = (REAL *)t->s2;                   \
            if (a->grad_scale != 1.0) scale_##SFX(gr, t->n, scale);                               \
            switch (a->kind) {                                                                    \
            case FR_OPT_SGD:                                                                      \
                sgd_##SFX(p, gr, s0, t->n, coupled, wd, lr, a->momentum != 0, (REAL)a->momentum,  \
                          a->nesterov);                                                           \
                break;                                                                            \
            case FR_OPT_ADAM:                                                                     \
                adam_##SFX(p, gr, s0, s1, t->n, coupled, wd, a);                                  \
                break;                                                                            \
            case FR_OPT_RMSPROP:                                                                  \
                rmsprop_##SFX(p, gr, s0, s1, s2, t->n, coupled, wd, a);                           \
                break;                                                                            \
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
