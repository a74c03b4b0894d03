"""Finite-difference check of a model's backprop gradients."""
import numpy as np

from .losses import get_loss

__all__ = ["check_gradients"]


def check_gradients(model, X, y, loss="mse", lengths=None, sample_weight=None, eps=1e-5,
                    num_checks=20, seed=0):
    """Compare backprop gradients of ``loss(model(X), y)`` with central finite differences
    at ``num_checks`` random entries of every parameter array; returns the largest relative
    error |num - ana| / max|ana|, the maximum taken over the parameter array, so that entries
    whose gradient is near zero are judged on the array's scale rather than on their own (where
    rounding in the differences dominates). Use float64 models: in float32 the differences
    themselves are noise at ~1e-3. The default eps ~ cbrt(machine epsilon) balances the
    O(eps^2) truncation error of central differences against O(1e-16 / eps) rounding.
    Run-time randomness (dropout, scheduled sampling) is replayed identically for every
    evaluation by restoring the model's generator state."""
    lossf = get_loss(loss)
    X, y, lengths, sample_weight = model._prepare(X, y, lengths, sample_weight)
    rng_state = model.rng.bit_generator.state
    eng_states = [e._rng.bit_generator.state for e in model._engines() if hasattr(e, "_rng")]

    def run(train):
        model.rng.bit_generator.state = rng_state
        for e, s in zip([e for e in model._engines() if hasattr(e, "_rng")], eng_states):
            e._rng.bit_generator.state = s
        model._clear_caches()
        out = model._forward(X, lengths, True, y=y)
        v, g = lossf.value_and_grad(out, y, model._loss_mask(out, lengths), sample_weight)
        if train:
            model.zero_grad()
            model._backward(g)
        return float(v)

    if np.dtype(model.dtype) != np.float64:
        raise TypeError("check_gradients needs a float64 model")
    run(True)
    analytic = {k: g.copy() for k, g in model.grads.items()}
    pick = np.random.default_rng(seed)
    worst = 0.0
    for name, p in model.parameters().items():
        flat = p.reshape(-1)
        scale = max(float(np.abs(analytic[name]).max()), 1e-12)
        for i in pick.choice(flat.size, min(num_checks, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            up = run(False)
            flat[i] = old - eps
            down = run(False)
            flat[i] = old
            num = (up - down) / (2 * eps)
            ana = analytic[name].reshape(-1)[i]
            err = abs(num - ana) / scale
            worst = max(worst, err)
    model._clear_caches()
    return worst
