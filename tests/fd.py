"""Central finite differences, shared by the gradient tests (pure NumPy: the reference's tests
use it without importing fastrnn)."""
import numpy as np


def numeric_grad_at(f, a, index, eps=1e-6):
    """d f() / d a[index] by a central difference; `a` is perturbed in place and restored."""
    old = a[index]
    a[index] = old + eps
    up = f()
    a[index] = old - eps
    down = f()
    a[index] = old
    return (up - down) / (2 * eps)


def numeric_grad(f, a, eps=1e-6):
    """d f() / d a for every entry of a. Results are float64 whatever a's dtype."""
    g = np.zeros(a.shape, dtype=np.float64)
    for index in np.ndindex(a.shape):
        g[index] = numeric_grad_at(f, a, index, eps)
    return g
