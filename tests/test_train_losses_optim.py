"""Losses, optimizers, schedules and clipping."""
import math

import numpy as np
import pytest

import fastrnn as fr
from test_train_helpers import numeric_grad

RNG = np.random.default_rng(0)


def _pred_target(loss_name, shape):
    p = RNG.standard_normal(shape)
    if loss_name == "cross_entropy":
        return p, RNG.integers(0, shape[-1], shape[:-1])
    if loss_name == "binary_cross_entropy":
        return p, (RNG.random(shape) > 0.5).astype(np.float64)
    return p, RNG.standard_normal(shape)


@pytest.mark.parametrize("name", ["mse", "mae", "huber", "cross_entropy", "binary_cross_entropy", "pinball"])
def test_loss_gradient_matches_finite_differences_with_mask_and_weights(name):
    loss = fr.get_loss(name)
    p, t = _pred_target(name, (3, 4, 5))
    mask = (RNG.random((3, 4)) > 0.3).astype(np.float64)
    sw = RNG.random(3) + 0.5
    _, g = loss.value_and_grad(p, t, mask, sw)
    num = numeric_grad(lambda: loss(p, t, mask, sw), p)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-9)
    # Masked-out positions must not pull on the prediction at all.
    assert np.all(g[mask == 0] == 0)


def test_loss_values_match_their_formulas():
    p = np.array([[0.5, -2.0], [3.0, 0.0]])
    t = np.array([[0.0, 0.0], [1.0, 0.5]])
    d = p - t
    assert fr.get_loss("mse")(p, t) == pytest.approx((d ** 2).mean())
    assert fr.get_loss("mae")(p, t) == pytest.approx(np.abs(d).mean())
    hub = np.where(np.abs(d) <= 1, 0.5 * d ** 2, np.abs(d) - 0.5)
    assert fr.Huber(1.0)(p, t) == pytest.approx(hub.mean())
    labels = np.array([1, 0])
    logp = p - np.log(np.exp(p).sum(-1, keepdims=True))
    assert fr.get_loss("cross_entropy")(p, labels) == pytest.approx(-logp[[0, 1], labels].mean())
    bce = -(t * np.log(1 / (1 + np.exp(-p))) + (1 - t) * np.log(1 - 1 / (1 + np.exp(-p))))
    assert fr.get_loss("bce")(p, t) == pytest.approx(bce.mean())


def test_weighted_mean_over_positions():
    p = np.array([[1.0], [3.0]])
    t = np.zeros((2, 1))
    # Weight 3 on the second sample: (1*1 + 3*9) / 4.
    assert fr.get_loss("mse")(p, t, sample_weight=[1.0, 3.0]) == pytest.approx(7.0)


def test_cross_entropy_labels_equal_one_hot_and_extreme_logits_are_finite():
    p = RNG.standard_normal((6, 4)) * 50
    lab = RNG.integers(0, 4, 6)
    ce = fr.get_loss("cross_entropy")
    v1, g1 = ce.value_and_grad(p, lab)
    v2, g2 = ce.value_and_grad(p, np.eye(4)[lab])
    assert v1 == pytest.approx(v2)
    np.testing.assert_allclose(g1, g2, atol=1e-15)
    v, g = fr.get_loss("bce").value_and_grad(np.array([[1e4], [-1e4]]), np.array([[0.0], [1.0]]))
    assert math.isfinite(v) and v == pytest.approx(1e4) and np.isfinite(g).all()


def test_loss_rejects_mismatched_targets_and_unknown_names():
    with pytest.raises(ValueError, match="unknown loss 'msee'"):
        fr.get_loss("msee")
    with pytest.raises(ValueError, match="y_true has shape"):
        fr.get_loss("mse")(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="class labels must be in"):
        fr.get_loss("cross_entropy")(np.zeros((2, 3)), np.array([0, 3]))
    assert fr.get_loss(fr.Huber(2.5).get_config()).delta == 2.5
    # (N,) targets for (N, 1) outputs are accepted, not broadcast to (N, N).
    assert fr.get_loss("mse")(np.ones((4, 1)), np.zeros(4)) == 1.0


# ----------------------------------------------------------------------------- optimizers
def _quadratic_run(opt, steps=25):
    """Minimise sum(A*w^2)/2 + b.w from a fixed start; returns the trajectory."""
    A = np.array([[1.0, 4.0], [0.5, 2.0]])
    b = np.array([[0.3, -1.0], [2.0, 0.1]])
    w = {"w": np.array([[1.0, -2.0], [0.5, 3.0]])}
    traj = []
    for _ in range(steps):
        g = {"w": A * w["w"] + b}
        opt.step(w, g)
        traj.append(w["w"].copy())
    return np.array(traj)


TORCH_PAIRS = [
    (lambda: fr.SGD(0.05), lambda t, p: t.optim.SGD(p, lr=0.05)),
    (lambda: fr.SGD(0.05, momentum=0.9), lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.9)),
    (lambda: fr.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
     lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    (lambda: fr.Adam(0.1), lambda t, p: t.optim.Adam(p, lr=0.1)),
    (lambda: fr.Adam(0.1, weight_decay=0.05), lambda t, p: t.optim.Adam(p, lr=0.1, weight_decay=0.05)),
    (lambda: fr.AdamW(0.1, weight_decay=0.05), lambda t, p: t.optim.AdamW(p, lr=0.1, weight_decay=0.05)),
    (lambda: fr.RMSprop(0.01, rho=0.9), lambda t, p: t.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-8)),
    (lambda: fr.RMSprop(0.01, rho=0.9, momentum=0.5, centered=True),
     lambda t, p: t.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-8, momentum=0.5, centered=True)),
]


@pytest.mark.parametrize("ours,theirs", TORCH_PAIRS)
def test_optimizer_trajectory_matches_torch(ours, theirs):
    torch = pytest.importorskip("torch")
    mine = _quadratic_run(ours())
    A = torch.tensor([[1.0, 4.0], [0.5, 2.0]], dtype=torch.float64)
    b = torch.tensor([[0.3, -1.0], [2.0, 0.1]], dtype=torch.float64)
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64, requires_grad=True)
    opt = theirs(torch, [w])
    ref = []
    for _ in range(len(mine)):
        opt.zero_grad()
        (0.5 * (A * w * w).sum() + (b * w).sum()).backward()
        opt.step()
        ref.append(w.detach().numpy().copy())
    # Adam's epsilon placement (outside the bias-corrected sqrt) follows torch, so the
    # float64 trajectories agree to rounding.
    np.testing.assert_allclose(mine, np.array(ref), rtol=1e-10, atol=1e-12)


def test_optimizer_state_dict_round_trip_continues_identically():
    full = _quadratic_run(fr.Adam(0.1), steps=10)
    opt = fr.Adam(0.1)
    first = _quadratic_run(opt, steps=5)
    opt2 = fr.Adam(0.1)
    opt2.load_state_dict(opt.state_dict())
    A = np.array([[1.0, 4.0], [0.5, 2.0]])
    b = np.array([[0.3, -1.0], [2.0, 0.1]])
    w = {"w": first[-1].copy()}
    for k in range(5):
        opt2.step(w, {"w": A * w["w"] + b})
        np.testing.assert_array_equal(w["w"], full[5 + k])


def test_schedules_follow_their_formulas_and_drive_the_optimizer():
    e = fr.ExponentialDecay(0.1, 10, 0.5)
    assert e(0) == 0.1 and e(10) == pytest.approx(0.05) and e(5) == pytest.approx(0.1 * 0.5 ** 0.5)
    assert fr.ExponentialDecay(0.1, 10, 0.5, staircase=True)(19) == pytest.approx(0.05)
    s = fr.StepDecay(1.0, 3, 0.1)
    assert [s(i) for i in (0, 2, 3, 6)] == pytest.approx([1, 1, 0.1, 0.01])
    c = fr.CosineDecay(1.0, 10, alpha=0.1)
    assert c(0) == 1.0 and c(10) == pytest.approx(0.1) and c(5) == pytest.approx(0.55) and c(50) == pytest.approx(0.1)
    opt = fr.SGD(fr.StepDecay(1.0, 1, 0.5))
    w = {"w": np.zeros(1)}
    for _ in range(3):
        opt.step(w, {"w": np.ones(1)})
    assert w["w"][0] == pytest.approx(-(1 + 0.5 + 0.25))
    assert fr.get_schedule(c.get_config())(5) == c(5)


def test_clipping_by_global_norm_and_by_value():
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert fr.clip_grad_norm(g, 1.0) == pytest.approx(5.0)
    assert fr.global_norm(g) == pytest.approx(1.0)
    np.testing.assert_allclose(g["a"], [0.6, 0.0])
    g = {"a": np.array([3.0, -0.5, -7.0])}
    fr.clip_grad_value(g, 1.0)
    np.testing.assert_array_equal(g["a"], [1.0, -0.5, -1.0])
    # Via the optimizer: a huge gradient moves the weights by at most lr * clipnorm.
    w = {"w": np.zeros(3)}
    fr.SGD(0.1, clipnorm=1.0).step(w, {"w": np.array([1e6, 1e6, 0.0])})
    assert np.linalg.norm(w["w"]) == pytest.approx(0.1)


def test_optimizer_argument_errors():
    with pytest.raises(ValueError, match="learning_rate"):
        fr.Adam(-1)
    with pytest.raises(ValueError, match="nesterov"):
        fr.SGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match="unknown optimizer"):
        fr.get_optimizer("adamm")
    assert isinstance(fr.get_optimizer(fr.AdamW().get_config()), fr.AdamW)
