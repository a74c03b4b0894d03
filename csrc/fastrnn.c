/* Instantiates the kernels of rnn_impl.h for float32 and float64; see fastrnn.h. */
#include <math.h>
#include <string.h>
#include <cblas.h>
#include "fastrnn.h"

int fr_gates(fr_cell cell) { return cell == FR_LSTM ? 4 : cell == FR_GRU ? 3 : 1; }
int fr_aux(fr_cell cell) { return cell == FR_LSTM ? 2 : cell == FR_GRU ? 1 : 0; }

long fr_forward_ws_size(fr_cell cell, int B, int H)
{
    return (long)B * fr_gates(cell) * H + 2L * B * H;
}

long fr_backward_ws_size(fr_cell cell, int B, int H)
{
    return 3L * B * H + (long)B * fr_gates(cell) * H;
}

void fr_set_num_threads(int n) { scipy_openblas_set_num_threads(n); }
int fr_get_num_threads(void) { return scipy_openblas_get_num_threads(); }

#define REAL float
#define SFX(name) name##_f32
#define GEMM scipy_cblas_sgemm
#define EXP expf
#define TANH tanhf
#include "rnn_impl.h"
#undef REAL
#undef SFX
#undef GEMM
#undef EXP
#undef TANH

#define REAL double
#define SFX(name) name##_f64
#define GEMM scipy_cblas_dgemm
#define EXP exp
#define TANH tanh
#include "rnn_impl.h"
#undef REAL
#undef SFX
#undef GEMM
#undef EXP
#undef TANH
