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


def assert_grads_match(loss, checks, eps, label, rtol=1e-6, atol=1e-8):
    """Each analytic gradient of `checks` [(name, analytic, array)] against central differences
    of loss() w.r.t. that array; prints and returns the largest |error| (assertion messages name
    `label` and the array)."""
    worst = 0.0
    for name, analytic, arr in checks:
        numeric = numeric_grad(loss, arr, eps)
        worst = max(worst, float(np.max(np.abs(analytic - numeric))))
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol, err_msg=f"{label} d{name}")
    print(f"FD max |error| {label}: {worst:.2e}")
    return worst
