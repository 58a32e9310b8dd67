"""Closed loops: literature characteristic polynomials, parameter mappings, frozen and
linearised preconditioners checked against the float64 oracle."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import ctopt
from ctopt.analysis.loops import ClosedLoop, closed_loop
from ctopt.errors import DesignError, UnsupportedError
from ctopt.filters import z

alpha, beta, lam = sp.symbols("alpha beta lambda", real=True)


def _same(p: sp.Expr, q: sp.Expr) -> bool:
    return sp.simplify(sp.expand(p - q)) == 0


def _sym(loop: ClosedLoop, name: str) -> sp.Symbol:
    return {s.name: s for s in loop.parameters}[name]


# ---------------------------------------- literature (Lessard, Recht & Packard, SIAM J. Optim. 2016)
def test_gd_polynomial():
    loop = closed_loop(ctopt.zoo.get("sgd"), weight_decay=0)
    lr, h = _sym(loop, "lr"), _sym(loop, "h")
    gd = z - (1 - alpha * lam)
    assert loop.state_names == ["theta"]
    assert _same(loop.charpoly(), gd.subs({alpha: lr, lam: h}))


def test_heavy_ball_polynomial_with_torch_mapping():
    # torch: buf <- mu*buf + (1 - dampening)*grad, theta <- theta - lr*buf
    # maps to Polyak's heavy ball with alpha = lr*(1 - dampening), beta = mu
    loop = closed_loop(ctopt.zoo.get("heavy_ball"), weight_decay=0)
    lr, h, mu, d = (_sym(loop, n) for n in ("lr", "h", "momentum", "dampening"))
    hb = z**2 - (1 + beta - alpha * lam) * z + beta
    assert loop.state_names == ["theta", "buf"]
    assert _same(loop.charpoly(), hb.subs({alpha: lr * (1 - d), beta: mu, lam: h}))
    # the mapping is not the identity once dampening is on
    assert not _same(loop.charpoly(), hb.subs({alpha: lr, beta: mu, lam: h}))


def test_nesterov_polynomial():
    # torch's Nesterov needs dampening = 0; then alpha = lr, beta = mu
    loop = closed_loop(ctopt.zoo.get("nesterov"), weight_decay=0, dampening=0)
    lr, h, mu = (_sym(loop, n) for n in ("lr", "h", "momentum"))
    nag = z**2 - (1 + beta) * (1 - alpha * lam) * z + beta * (1 - alpha * lam)
    assert _same(loop.charpoly(), nag.subs({alpha: lr, beta: mu, lam: h}))


def test_weight_decay_shifts_the_curvature():
    loop = closed_loop(ctopt.zoo.get("heavy_ball"), dampening=0)
    lr, h, mu, wd = (_sym(loop, n) for n in ("lr", "h", "momentum", "weight_decay"))
    hb = z**2 - (1 + beta - alpha * lam) * z + beta
    assert _same(loop.charpoly(), hb.subs({alpha: lr, beta: mu, lam: h + wd}))


def test_charpoly_is_monic_and_matches_eigenvalues():
    rng = np.random.default_rng(0)
    for name in ("heavy_ball", "nesterov", "adam", "adan"):
        loop = closed_loop(ctopt.zoo.get(name))
        poly = sp.Poly(loop.charpoly(), z)
        assert poly.LC() == 1 and poly.degree() == len(loop.state_names)
        values = {p.name: float(rng.uniform(0.1, 0.9)) for p in loop.parameters}
        numeric = [complex(c.subs({_sym(loop, n): v for n, v in values.items()}))
                   for c in poly.all_coeffs()]
        assert np.allclose(np.poly(loop.eigenvalues(**values)), numeric, atol=1e-10)


# ----------------------------------------------------------------------- frozen preconditioner
def test_adam_frozen_is_heavy_ball_with_effective_step():
    loop = closed_loop(ctopt.zoo.get("adam"), weight_decay=0)
    r = next(iter(loop.frozen))
    assert r.name == "r"
    v, eps = sp.Symbol("v", real=True), sp.Symbol("eps", real=True)
    assert sp.simplify(loop.frozen[r] - (sp.sqrt(v) + eps)) == 0
    assert loop.state_names == ["theta", "m"]
    lr, h, b1 = (_sym(loop, n) for n in ("lr", "h", "beta1"))
    hb = z**2 - (1 + beta - alpha * lam) * z + beta
    assert _same(loop.charpoly(), hb.subs({alpha: lr * (1 - b1) / r, beta: b1, lam: h}))


@pytest.mark.parametrize("name", ["rmsprop", "adagrad", "amsgrad", "adabelief", "adamssm",
                                  "adamw", "adan", "signgd", "dgclip"])
def test_frozen_loops_exist_and_theta_comes_first(name):
    loop = closed_loop(ctopt.zoo.get(name))
    assert loop.state_names[0] == "theta"
    assert loop.parameters == sorted(loop.parameters, key=lambda s: s.name)
    assert set(loop.frozen) <= set(loop.parameters)


def test_frozen_loop_matches_oracle_with_frozen_denominator():
    # with v pinned (beta2 = 0 would make v = g**2; instead compare one step at large k with the
    # denominator evaluated from the oracle's own v)
    d = ctopt.zoo.get("adam")
    values = dict(lr=0.05, beta1=0.8, beta2=0.9, eps=1e-3, weight_decay=0.0)
    h, theta0, m0, v0, step = 2.0, 0.7, -0.3, 0.4, 10_000
    x, s = ctopt.oracle.step(d, np.array([theta0]), np.array([h * theta0]),
                             {"m": np.array([m0]), "v": np.array([v0])}, step, **values)
    r = np.sqrt(s["v"][0]) + values["eps"]
    loop = closed_loop(d, weight_decay=0)
    A = loop.numeric_A(h=h, r=r, **{k: v for k, v in values.items() if k != "weight_decay"})
    assert np.allclose(A @ [theta0, m0], [x[0], s["m"][0]], rtol=1e-12)


# ------------------------------------------------------------------- linearised preconditioner
def _finite_difference_jacobian(d, point, h, step, values, delta=1e-6):
    names = ["theta", *d.state_names]

    def F(vec):
        state = {n: np.array([vec[i + 1]]) for i, n in enumerate(d.state_names)}
        x, s = ctopt.oracle.step(d, np.array([vec[0]]), np.array([h * vec[0]]), state, step,
                                 **values)
        return np.array([x[0], *(s[n][0] for n in d.state_names)])

    base = np.array([point[n] for n in names], dtype=float)
    J = np.empty((len(names), len(names)))
    for j in range(len(names)):
        e = np.zeros(len(names))
        e[j] = delta
        J[:, j] = (F(base + e) - F(base - e)) / (2 * delta)
    return J


@pytest.mark.parametrize("name,point,step", [
    ("adam", {"theta": 0.3, "m": 0.1, "v": 0.05}, 7),
    ("adam", {"theta": -0.2, "m": 0.05, "v": 0.2}, None),
    ("adabelief", {"theta": 0.4, "m": -0.1, "s": 0.3}, 5),
    ("rmsprop", {"theta": 0.5, "sq": 0.2, "buf": 0.1}, None),
    ("adamssm", {"theta": 0.2, "m": 0.1, "v": 0.3, "v_1": -0.05}, 12),
])
def test_linearized_matches_oracle_finite_differences(name, point, step):
    d = ctopt.zoo.get(name)
    rng = np.random.default_rng(1)
    values = {"lr": float(rng.uniform(0.01, 0.2)), "eps": 1e-3}
    h = 1.7
    at = dict(point) | ({"k": step} if step else {})
    loop = closed_loop(d, preconditioner="linearized", at=at)
    A = loop.numeric_A(h=h, **values)
    J = _finite_difference_jacobian(d, point, h, step or 100_000, values)
    assert loop.state_names == ["theta", *d.state_names]
    assert np.allclose(A, J, rtol=1e-5, atol=1e-7)


def test_linearized_adam_near_equilibrium_is_frozen_loop_plus_v_pole():
    lin = closed_loop(ctopt.zoo.get("adam"), preconditioner="linearized",
                      at={"theta": 0, "m": 0}, weight_decay=0)
    frozen = closed_loop(ctopt.zoo.get("adam"), weight_decay=0)
    b2, vs, eps = (_sym(lin, n) for n in ("beta2", "v_star", "eps"))
    r = next(iter(frozen.frozen))
    block = frozen.A.subs(r, sp.sqrt(b2 * vs) + eps)
    assert sp.simplify(lin.A[:2, :2] - block) == sp.zeros(2, 2)
    assert lin.A[2, :2] == sp.zeros(1, 2) and sp.simplify(lin.A[2, 2] - b2) == 0


# ------------------------------------------------------------------------------ numeric views
def test_to_control_matches_matrices():
    control = pytest.importorskip("control")
    loop = closed_loop(ctopt.zoo.get("heavy_ball"), weight_decay=0)
    values = dict(h=1.3, lr=0.2, momentum=0.7, dampening=0.1)
    sys = loop.to_control(**values)
    assert sys.dt == 1
    A = loop.numeric_A(**values)
    assert np.allclose(sys.A, A)
    assert np.allclose(np.poly(control.poles(sys)), np.poly(np.linalg.eigvals(A)))


def test_subs_and_latex():
    loop = closed_loop(ctopt.zoo.get("heavy_ball"), weight_decay=0)
    sub = loop.subs(dampening=0, momentum=sp.Rational(1, 2))
    assert {p.name for p in sub.parameters} == {"h", "lr"}
    assert "\\det" in loop._repr_latex_()
    with pytest.raises(DesignError):
        loop.subs(nonexistent=1)


def test_errors():
    d = ctopt.zoo.get("adam")
    with pytest.raises(DesignError, match="preconditioner"):
        closed_loop(d, preconditioner="magic")
    with pytest.raises(DesignError, match="at="):
        closed_loop(d, at={"theta": 0})
    with pytest.raises(DesignError, match="curvature"):
        closed_loop(d, curvature="lr")
    with pytest.raises(ctopt.HyperparameterError):
        closed_loop(d, beta1=2.0)


def test_nonlinear_frozen_loop_is_refused():
    # a design whose update stays nonlinear after freezing: theta <- theta - lr*g**3
    from ctopt.design import POSITIVE, DesignBuilder, g, theta

    b = DesignBuilder("cubic")
    lr = b.hyper("lr", 0.1, POSITIVE)
    b.update(theta - lr * g**3)
    with pytest.raises(UnsupportedError, match="not linear"):
        closed_loop(b.build())


def test_linearized_default_point_is_symbolic_and_matches_oracle():
    d = ctopt.zoo.get("adam")
    loop = closed_loop(d, preconditioner="linearized")
    names = {p.name for p in loop.parameters}
    assert {"theta_star", "m_star", "v_star"} <= names
    point = {"theta": 0.25, "m": -0.05, "v": 0.1}
    values = {"lr": 0.07, "eps": 1e-3}
    A = loop.numeric_A(h=0.9, theta_star=0.25, m_star=-0.05, v_star=0.1, **values)
    J = _finite_difference_jacobian(d, point, 0.9, 100_000, values)
    assert np.allclose(A, J, rtol=1e-5, atol=1e-7)


def test_schedule_without_a_limit_uses_the_default_and_says_so():
    loop = closed_loop(ctopt.zoo.get("adagrad"), weight_decay=0)
    (rec,) = loop.time_varying
    assert "lr_decay" in rec.note and rec.limit == 1
    decayed = closed_loop(ctopt.zoo.get("adagrad"), weight_decay=0, lr_decay=0.1)
    assert decayed.A.tolist() == [[1]]  # the step size decays to zero: theta stops moving


def test_closed_loop_transfer_function_matches_python_control():
    control = pytest.importorskip("control")
    loop = closed_loop(ctopt.zoo.get("adam"), weight_decay=0)
    values = dict(h=2.0, r=0.05, lr=0.01, beta1=0.85)
    ours = loop.transfer_function().to_control(**values)
    theirs = control.ss2tf(loop.to_control(**values))
    ez = np.exp(1j * np.linspace(0.05, 3.0, 9))
    assert np.allclose(ours(ez), theirs(ez), rtol=1e-9)
