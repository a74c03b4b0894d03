"""The one tolerance table for numerical comparisons in the test suite.

An element passes when  |got - want| <= atol + rtol * |want|  (numpy.allclose
semantics). "forward" covers outputs and states (y, h_n, c_n); "grad" covers
input/state gradients and parameter gradients.

Why these numbers. Two correct implementations of the same recurrence differ
only by rounding: different GEMM blocking, fused vs. separate gate sums, the
order in which parameter gradients are summed over time and batch, and the
exp/tanh implementation. Measured on the committed fixtures (T=5, B<=3, D=4,
H=6, up to 2 bidirectional layers), a second, cell-by-cell implementation
computed in the same dtype landed this far from torch 2.13's fused kernels:

    float32  forward max |diff| 1.8e-7  (|values| <= 2.2)
    float32  grad    max |diff| 1.4e-6  (|values| <= 14)
    float64  forward max |diff| 2.2e-16
    float64  grad    max |diff| 5.3e-15 (|values| <= 15)

(and an independent float64 NumPy forward plus central finite differences
confirmed the fixtures themselves to 4e-16 forward / 4e-9 gradient, the
latter being the finite-difference truncation limit).

float32: eps is 1.2e-7, so values of O(1) differ by a few ulps after the
recurrence; gradients are sums over T*B products and over several layers, so
they carry roughly 10x the forward's absolute error. atol is set about 5-7x
above the measured worst case so that other summation orders (and the longer
sequences later tests use) pass, while a real bug — a wrong gate order, a
dropped bias, a 1e-3 weight perturbation — is off by >= 1e-4 and fails.
The rtol term only matters for large gradients; element-wise relative error
alone is useless here because cancellation makes small entries (|x| ~ 1e-3)
differ by up to 1e-4 relative in float32.

float64: rounding differences are ~1e-15; 1e-12 (1e-11 for gradients, which
accumulate more terms) leaves three orders of margin for reordering and longer
sequences while still catching anything that is not rounding.
"""

import numpy as np

TOLERANCES = {
    np.dtype(np.float32): {
        "forward": {"rtol": 1e-5, "atol": 1e-6},
        "grad": {"rtol": 1e-5, "atol": 1e-5},
    },
    np.dtype(np.float64): {
        "forward": {"rtol": 1e-12, "atol": 1e-12},
        "grad": {"rtol": 1e-12, "atol": 1e-11},
    },
}


def tolerance(dtype, kind):
    """Return {"rtol": ..., "atol": ...} for dtype ("float32"/np.float32/...)
    and kind ("forward" or "grad"). Unknown dtypes/kinds raise KeyError."""
    return TOLERANCES[np.dtype(dtype)][kind]
