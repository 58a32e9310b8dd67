"""Generative tests of the analysis verdicts against brute force, over random filters and
random hand-written recursions (not only the zoo):

* every impulse-response verdict of the certificate agrees with the impulse response computed
  independently (scipy's ``dimpulse`` of the transfer function) to a horizon where it has
  decayed below rounding;
* every "stable" verdict of the guard agrees with the eigenvalues of the Jacobian of the float64
  oracle's state map; every square-root verdict agrees with a simulation of the oracle;
* every closed-loop stability verdict agrees with the eigenvalues of the oracle's map in
  feedback with ``g = h*theta``.

The default run draws a few hundred examples; ``-m slow`` draws more than ten thousand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.signal import dimpulse

import ctopt
from ctopt.analysis.impulse import nonnegative_impulse
from ctopt.analysis.validity import filter_validity
from ctopt.design import POSITIVE, REAL, DesignBuilder, g, theta
from ctopt.oracle import init_state, step

FAST = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=10_000, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
FAST_DESIGNS = settings(max_examples=100, deadline=None, derandomize=True,
                        suppress_health_check=[HealthCheck.too_slow])
SLOW_DESIGNS = settings(max_examples=2_000, deadline=None, derandomize=True,
                        suppress_health_check=[HealthCheck.too_slow])

TALLY: dict[str, int] = {}


# ------------------------------------------------------------------ random filters
radius = st.floats(0.05, 0.97)
pole_spec = st.one_of(
    st.tuples(st.just("real"), st.floats(-0.97, 0.97)),
    st.tuples(st.just("pair"), radius, st.floats(0.05, 3.0)),
    st.tuples(st.just("double"), st.floats(-0.97, 0.97)),
)


@st.composite
def filters(draw):
    specs = draw(st.lists(pole_spec, min_size=1, max_size=3))
    poles = []
    for s in specs:
        if s[0] == "real":
            poles.append(s[1])
        elif s[0] == "double":
            poles += [s[1], s[1]]
        else:
            poles += [s[1] * np.exp(1j * s[2]), s[1] * np.exp(-1j * s[2])]
    den = np.real(np.poly(poles))
    n = len(den) - 1
    low = draw(st.sampled_from([-1.0, 0.0]))  # half of the numerators nonnegative
    num = np.array(draw(st.lists(st.floats(low, 1), min_size=n, max_size=n)))
    assume(np.max(np.abs(num)) > 1e-3)
    return den, num


def _realisation(den, num):
    """Observable canonical form (as ``realize``): x_t = A x_(t-1) + b u_t, y = x[0]."""
    n = len(den) - 1
    A = np.zeros((n, n))
    A[:, 0] = -den[1:]
    A[: n - 1, 1:] = np.eye(n - 1)
    c = np.zeros(n)
    c[0] = 1.0
    return A, num.astype(float), c


def _brute(den, num, steps):
    """h[t] from the transfer function H(z) = z (num) / den, by scipy (independent code)."""
    tf_num = np.concatenate([num, [0.0]])  # z * (c1 z^(n-1) + ... + cn)
    _, (y,) = dimpulse((tf_num, den, 1), n=steps)
    return y.ravel()


def _check_filter(spec):
    den, num = spec
    A, b, c = _realisation(den, num)
    cert = nonnegative_impulse(A, b, c)
    rho = float(np.max(np.abs(np.roots(den))))
    steps = int(min(60_000, max(200, math.log(1e-200) / math.log(rho)))) if rho > 0 else 200
    y = _brute(den, num, steps)
    scale = np.max(np.abs(y))
    TALLY[str(cert.holds)] = TALLY.get(str(cert.holds), 0) + 1
    if cert.holds is True:
        assert np.min(y) >= -1e-9 * scale, (den, num, cert.reason, np.argmin(y), np.min(y))
    elif cert.holds is False:
        assert cert.witness is not None
        if cert.witness < steps:
            assert y[cert.witness] < 1e-12 * scale, (den, num, cert.reason)
        else:  # beyond the brute-force horizon: the negative tail must already show
            assert np.min(y) < 1e-12 * scale or y[-1] <= 0


@FAST
@given(filters())
def test_impulse_certificate_agrees_with_brute_force(spec):
    _check_filter(spec)


@pytest.mark.slow
@SLOW
@given(filters())
def test_impulse_certificate_agrees_with_brute_force_many(spec):
    _check_filter(spec)


def test_the_certificate_decides_most_random_filters():
    TALLY.clear()
    rng = np.random.default_rng(0)
    for _ in range(100):
        poles = rng.uniform(0.0, 0.95, size=rng.integers(1, 4))
        den = np.real(np.poly(poles))
        num = rng.uniform(-1, 1, size=len(den) - 1)
        _check_filter((den, num))
    assert TALLY.get("None", 0) <= 10, TALLY  # real distinct poles: almost always decided


# ------------------------------------------------------------------ random recursions
names = ("a11", "a12", "a21", "a22", "b1", "b2")


@st.composite
def recursions(draw):
    """Two states written by hand, x1 <- a11 x1 + a12 x2 + b1 g**2 and x2 <- a21 x1 + a22 x2 +
    b2 g**2, in either order (so one reads the other's new value); the update divides by
    sqrt(x1) + eps."""
    new = draw(st.booleans())
    present = draw(st.tuples(*[st.booleans()] * 4))
    coeff = st.integers(-115, 115).map(lambda i: i / 100)
    values = {n: draw(coeff) for n in names}
    if draw(st.booleans()):  # an EMA-like half: nonnegative coefficients inside the unit disc
        values = {n: abs(v) * 0.8 for n, v in values.items()}
    for n, keep in zip(names[:4], present, strict=True):
        if not keep:
            values[n] = 0.0
    return new, present, values


_DESIGNS: dict = {}


def _design(new: bool, present: tuple):
    key = (new, present)
    if key not in _DESIGNS:
        b = DesignBuilder("hand_written")
        lr = b.hyper("lr", 0.01, POSITIVE, role="lr")
        eps = b.hyper("eps", 1e-3, POSITIVE, role="eps")
        a = {n: b.hyper(n, 0.0, REAL) for n in names}
        x1, x2 = b.state("x1"), b.state("x2")
        on = {n: int(p) for n, p in zip(names[:4], present, strict=True)}
        line1 = on["a11"] * a["a11"] * x1 + on["a12"] * a["a12"] * x2 + a["b1"] * g**2
        line2 = on["a21"] * a["a21"] * x1 + on["a22"] * a["a22"] * x2 + a["b2"] * g**2
        if new:  # x2 reads the new x1
            b.assign(x1, line1)
            b.assign(x2, line2)
        else:  # x1 reads the new x2
            b.assign(x2, line2)
            b.assign(x1, line1)
        b.update(theta - lr * g / (sp.sqrt(x1) + eps))
        _DESIGNS[key] = b.build()
    return _DESIGNS[key]


def _oracle_jacobian(design, values):
    """d x_k / d x_(k-1) of the oracle's map at g = 0 (finite differences; exact for an affine
    map up to rounding)."""
    names_ = design.state_names
    base = {n: np.zeros(1) for n in names_}
    _, f0 = step(design, np.zeros(1), np.zeros(1), base, 5, **values)
    J = np.zeros((len(names_), len(names_)))
    for j, n in enumerate(names_):
        s = dict(base)
        s[n] = np.ones(1)
        _, f1 = step(design, np.zeros(1), np.zeros(1), s, 5, **values)
        J[:, j] = [f1[m][0] - f0[m][0] for m in names_]
    return J


def _check_recursion(spec):
    new, present, values = spec
    design = _design(new, present)
    result = filter_validity(design, **values)
    J = _oracle_jacobian(design, values)
    eig = np.linalg.eigvals(J)
    rho = float(np.max(np.abs(eig))) if len(eig) else 0.0
    assume(abs(rho - 1) > 1e-9)
    for check in result.filters:
        idx = [design.state_names.index(n) for n in check.block.names]
        sub = float(np.max(np.abs(np.linalg.eigvals(J[np.ix_(idx, idx)]))))
        status = check.status["stable"]
        if status in ("holds", "violated"):
            assert (status == "holds") == (sub < 1), (values, new, present, check.how)
    # the square root of x1: a violation is reproduced by the oracle, a proof is never broken
    guard = next(gd for gd in result.guards if gd.kind == "square root")
    state = init_state(design, 1, **values)
    lowest = np.inf
    rng = np.random.default_rng(0)
    for k in range(1, 300):
        grad = np.array([1.0 if k == 1 else (rng.normal() if guard.status == "holds" else 0.0)])
        _, state = step(design, np.zeros(1), grad, state, k, **values)
        lowest = min(lowest, float(state["x1"][0]))
        if not np.isfinite(lowest) or abs(lowest) > 1e12:
            break
    TALLY["guard " + guard.status] = TALLY.get("guard " + guard.status, 0) + 1
    if guard.status == "holds":
        assert lowest >= -1e-12, (values, new, present, guard.how)
    elif guard.status == "violated" and "takes negative values" not in guard.how:
        witness = result.filters[0].how["nonnegative impulse response"]
        if "h[" in witness:
            t = int(witness.split("h[")[1].split("]")[0])
            if t < 299:
                assert lowest < 0, (values, new, present, guard.how)


@FAST_DESIGNS
@given(recursions())
def test_recursion_verdicts_agree_with_the_oracle(spec):
    _check_recursion(spec)


@pytest.mark.slow
@SLOW_DESIGNS
@given(recursions())
def test_recursion_verdicts_agree_with_the_oracle_many(spec):
    _check_recursion(spec)


# ------------------------------------------------------------------ closed loops
@st.composite
def loops(draw):
    name = draw(st.sampled_from(["sgd", "heavy_ball", "nesterov", "adam", "adabelief"]))
    design = ctopt.zoo.get(name)
    values = {}
    for h in design.hyper:
        if h.name in ("weight_decay", "dampening"):
            values[h.name] = 0.0
        elif h.name == "lr":
            values[h.name] = draw(st.floats(1e-3, 2.0))
        elif h.domain.upper == 1:
            values[h.name] = draw(st.floats(0.0, 0.999))
    return name, values, draw(st.floats(1e-3, 50.0))


def _oracle_loop_jacobian(design, values, h):
    """The oracle's map of (theta, states) with g = h*theta, linearised at 0 with the states
    frozen in the preconditioner: for SGD-like designs exactly linear."""
    names_ = ["theta", *design.state_names]

    def f(vec):
        s = {n: np.array([vec[i + 1]]) for i, n in enumerate(design.state_names)}
        x, s = step(design, np.array([vec[0]]), np.array([h * vec[0]]), s, 10_000, **values)
        return np.array([x[0]] + [s[n][0] for n in design.state_names])

    f0 = f(np.zeros(len(names_)))
    J = np.zeros((len(names_), len(names_)))
    for j in range(len(names_)):
        e = np.zeros(len(names_))
        e[j] = 1.0
        J[:, j] = f(e) - f0
    return J


_LOOPS: dict = {}


def _check_loop(spec):
    name, values, h = spec
    design = ctopt.zoo.get(name)
    if name not in _LOOPS:
        loop = ctopt.closed_loop(design, weight_decay=0, **({"dampening": 0} if "dampening" in
                                                             design.hyperparameters else {}))
        _LOOPS[name] = loop, ctopt.stability_conditions(loop)
    loop, cond = _LOOPS[name]
    point = {p.name: values.get(p.name, design.defaults.get(p.name)) for p in cond.parameters}
    point["h"] = h
    if "r" in point or any(p.name == "r" for p in cond.parameters):
        point["r"] = 1.0
    verdict = bool(cond.holds(**point))
    if name in ("sgd", "heavy_ball", "nesterov"):
        J = _oracle_loop_jacobian(design, values, h)
        J = J[:len(loop.state_names), :len(loop.state_names)]
    else:  # frozen preconditioner r = 1: the Jury verdict against numpy's eigenvalues of A
        J = np.array(loop.numeric_A(**point), dtype=float)
    rho = float(np.max(np.abs(np.linalg.eigvals(J))))
    assume(abs(rho - 1) > 1e-7)
    assert verdict == (rho < 1), (name, values, h, rho, cond.readable)
    # the readable conditions (simplified under the domains) say the same at in-domain values
    subs = {p: sp.Float(point[p.name]) for p in cond.parameters}
    assert bool(sp.And(*cond.readable).xreplace(subs)) == verdict, (name, values, h)


@settings(FAST, max_examples=150)
@given(loops())
def test_closed_loop_verdicts_agree_with_eigenvalues(spec):
    _check_loop(spec)


@pytest.mark.slow
@SLOW
@given(loops())
def test_closed_loop_verdicts_agree_with_eigenvalues_many(spec):
    _check_loop(spec)
