"""Shared helpers for the tests/test_train_*.py files (this module holds no tests)."""
import numpy as np
from fd import numeric_grad  # noqa: F401  (re-exported for the test_train_* files)


def sine_windows(n, T, dtype=np.float32, seed=0, step=0.3):
    """n windows of a sine with random phase: inputs (n, T, 1) and next-step targets (n, T, 1)."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, n)
    s = np.sin(phase[:, None] + step * np.arange(T + 1))[..., None].astype(dtype)
    return s[:, :-1], s[:, 1:]


def sign_of_sum_task(n, T, D=2, dtype=np.float32, seed=0):
    """Many-to-one classification: label 1 when the first feature sums to > 0 over time."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, D)).astype(dtype)
    return X, (X[:, :, 0].sum(1) > 0).astype(np.int64)


def first_loss_and_last(history):
    loss = history.history["loss"]
    return loss[0], loss[-1]
