"""Coefficients of the float32 tanh in csrc/smallgemm.h (fr_tanh8): tanh(x) ~ x P(x^2) / Q(x^2)
for |x| <= 9, with P and Q of degree 4 in x^2 and Q(0) = 1; beyond 9 the argument is clamped
(1 - tanh(9) = 3e-8, below half an ulp of 1).

    python tools/fit_tanh.py        # prints the C constants and the float32 error

1. A rational fit with the minimax error in *relative* terms (so that small |x| keeps full
   relative accuracy), by linearised least squares re-weighted towards the largest errors
   (Loeb's iteration for the denominator, Lawson's weights for the minimax).
2. The coefficients rounded to float32, then nudged by a few ulp each, greedily, to lower the
   largest absolute error of the float32 evaluation as the kernel does it (Estrin's scheme with
   fused multiply-adds, emulated here in float64 and rounded once per operation).
The kernel's own error over every float32 in [1e-6, 12] is measured in tests/test_engine_api.py
through a layer.
"""
import numpy as np

CLAMP = 9.0
NP = NQ = 4


def fit(iters=200):
    c = CLAMP
    x = np.unique(np.concatenate([np.cos(np.linspace(0, np.pi, 8000)) * c / 2 + c / 2,
                                  np.linspace(1e-4, c, 8000)]))
    x = x[x > 0]
    t = np.tanh(x)
    s = (x / c) ** 2  # scaled to [0, 1] for a well-conditioned least-squares system
    w = np.ones_like(x)
    qprev = np.ones_like(x)
    for _ in range(iters):
        ap = np.stack([x * s ** k for k in range(NP + 1)], 1)
        aq = np.stack([-t * s ** k for k in range(1, NQ + 1)], 1)
        scale = np.sqrt(w) / qprev / t
        coef = np.linalg.lstsq(np.concatenate([ap, aq], 1) * scale[:, None], t * scale, rcond=None)[0]
        p, q = coef[:NP + 1], np.concatenate([[1.0], coef[NP + 1:]])
        qprev = np.polyval(q[::-1], s)
        err = (x * np.polyval(p[::-1], s) / qprev - t) / t
        w = np.maximum(w * np.abs(err) / np.sum(w * np.abs(err)), 1e-15)
    return p / c ** (2 * np.arange(NP + 1)), q / c ** (2 * np.arange(NQ + 1))


def _fma(a, b, c):
    return (np.float64(a) * b + c).astype(np.float32)


def evaluate(p, q, x):
    """The kernel's arithmetic in float32 (x >= 0)."""
    a = np.minimum(x, np.float32(CLAMP))
    s = a * a
    s2 = s * s
    P = _fma(s2, _fma(s2, p[4], _fma(s, p[3], p[2])), _fma(s, p[1], p[0]))
    Q = _fma(s2, _fma(s2, q[4], _fma(s, q[3], q[2])), _fma(s, q[1], q[0]))
    return (a * P) / Q


def tune(p, q, x, rounds=6):
    t = np.tanh(x.astype(np.float64))
    c = np.concatenate([p, q]).astype(np.float32)
    score = lambda c: np.max(np.abs(evaluate(c[:NP + 1], c[NP + 1:], x) - t))  # noqa: E731
    best = score(c)
    for _ in range(rounds):
        improved = False
        for i in [k for k in range(len(c)) if k not in (0, NP + 1)]:  # P(0), Q(0) stay 1
            for step in (-8, -4, -2, -1, 1, 2, 4, 8):
                cc = c.copy()
                for _ in range(abs(step)):
                    cc[i] = np.nextafter(cc[i], np.float32(np.inf if step > 0 else -np.inf))
                sc = score(cc)
                if sc < best:
                    best, c, improved = sc, cc, True
        if not improved:
            break
    return c[:NP + 1], c[NP + 1:], best


def main():
    p, q = fit()
    rng = np.random.default_rng(1)
    x = np.unique(np.concatenate([np.linspace(0, CLAMP + 0.5, 150001),
                                  rng.uniform(3, CLAMP + 0.5, 100000)])).astype(np.float32)
    p32, q32, err = tune(p, q, x)
    assert p32[0] == 1 and q32[0] == 1
    print(f"/* max |error| of the float32 evaluation on the tuning grid: {err:.3g} */")
    for name, c in (("P", p32), ("Q", q32)):
        print(f"{name}: " + ", ".join(f"{v:.9e}f" for v in c))


if __name__ == "__main__":
    main()
