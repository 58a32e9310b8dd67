"""The oracle equals independent transcriptions of the official Adan code, delta-GClip and signGD."""

import numpy as np
import pytest

import ctopt
from tests.test_oracle_vs_torch import RTOL, STEPS, relative_error


def adan_reference(grad_fn, x0, steps, lr, betas, eps, weight_decay, max_grad_norm, no_prox):
    """sail-sg/Adan, written in the *paper's* convention b_i = 1 - beta_i (its README)."""
    b1, b2, b3 = (1 - b for b in betas)
    x = np.array(x0, dtype=float)
    m = v = n = np.zeros_like(x)
    g_prev = None
    out = [x.copy()]
    for t in range(1, steps + 1):
        g = grad_fn(x.copy())
        if max_grad_norm > 0:
            g = g * min(max_grad_norm / (np.linalg.norm(g) + eps), 1.0)
        if g_prev is None:
            g_prev = g
        d = g - g_prev
        m = (1 - b1) * m + b1 * g
        v = (1 - b2) * v + b2 * d
        n = (1 - b3) * n + b3 * (g + (1 - b2) * d) ** 2
        denom = np.sqrt(n) / np.sqrt(1 - (1 - b3) ** t) + eps
        step = (
            lr / (1 - (1 - b1) ** t) * m / denom + lr * (1 - b2) / (1 - (1 - b2) ** t) * v / denom
        )
        if no_prox:
            x = x * (1 - lr * weight_decay) - step
        else:
            x = (x - step) / (1 + lr * weight_decay)
        g_prev = g
        out.append(x.copy())
    return np.array(out)


@pytest.mark.parametrize(
    "values, no_prox",
    [
        (dict(), False),
        (dict(lr=0.01, beta1=0.9, beta2=0.85, beta3=0.95, weight_decay=0.02), False),
        (dict(lr=0.01, weight_decay=0.05), True),
        (dict(lr=0.02, max_grad_norm=0.05, weight_decay=0.01), False),
    ],
)
def test_adan_equals_official_convention(values, no_prox, problem):
    grad_fn, x0 = problem
    d = ctopt.zoo.get("adan", no_prox=no_prox)
    full = d.check_values(**values)
    ref = adan_reference(
        grad_fn,
        x0,
        STEPS,
        full["lr"],
        (full["beta1"], full["beta2"], full["beta3"]),
        full["eps"],
        full["weight_decay"],
        full["max_grad_norm"],
        no_prox,
    )
    ours = ctopt.simulate(d, grad_fn, x0, STEPS, **values)
    assert relative_error(ours, ref) <= RTOL
    if values.get("max_grad_norm"):
        unclipped = ctopt.simulate(d, grad_fn, x0, STEPS, **{**values, "max_grad_norm": 0.0})
        assert relative_error(unclipped, ref) > 1e-6, "clipping must matter in this case"


def dgclip_reference(grad_fn, x0, steps, lr, gamma, delta, weight_decay):
    x = np.array(x0, dtype=float)
    out = [x.copy()]
    for _ in range(steps):
        g = grad_fn(x.copy())
        norm = np.linalg.norm(g)
        h = 0.0 if norm == 0 else lr * min(1.0, max(delta, gamma / norm))
        x = x - h * (g + weight_decay * x)
        out.append(x.copy())
    return np.array(out)


@pytest.mark.parametrize(
    "values",
    [dict(), dict(lr=0.5, gamma=0.5, delta=0.05, weight_decay=0.01), dict(lr=0.2, gamma=10.0)],
)
def test_dgclip_equals_stated_rule(values, problem):
    grad_fn, x0 = problem
    d = ctopt.zoo.get("dgclip")
    full = d.check_values(**values)
    ref = dgclip_reference(
        grad_fn, x0, STEPS, full["lr"], full["gamma"], full["delta"], full["weight_decay"]
    )
    assert relative_error(ctopt.simulate(d, grad_fn, x0, STEPS, **values), ref) <= RTOL


def test_dgclip_zero_norm_gives_no_step():
    d = ctopt.zoo.get("dgclip")
    traj = ctopt.simulate(d, lambda x: np.zeros_like(x), np.ones(3), 3, weight_decay=0.5)
    assert np.array_equal(traj[-1], np.ones(3))


def test_signgd_equals_stated_rule(problem):
    grad_fn, x0 = problem
    x, ref = np.array(x0, dtype=float), [np.array(x0, dtype=float)]
    for _ in range(STEPS):
        x = x - 0.01 * np.sign(grad_fn(x.copy()))
        ref.append(x.copy())
    ours = ctopt.simulate(ctopt.zoo.get("signgd"), grad_fn, x0, STEPS, lr=0.01)
    assert relative_error(ours, np.array(ref)) <= RTOL
