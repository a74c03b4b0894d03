"""Central finite differences, shared by the gradient tests (pure NumPy: the reference's tests
use it without importing fastrnn)."""
import numpy as np


def numeric_grad(f, a, eps=1e-6):
    """d f() / d a by central differences, one entry at a time; `a` is perturbed in place and
    restored. Results are float64 whatever a's dtype."""
    g = np.zeros(a.shape, dtype=np.float64)
    flat, gf = a.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gf[i] = (up - down) / (2 * eps)
    return g
