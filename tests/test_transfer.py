"""Transfer functions: known answers, and cross-checks against python-control and the float64
oracle for random parameter values."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import ctopt
from ctopt.analysis.transfer import (
    StateSpace,
    TransferFunction,
    state_space,
    transfer_function,
    transfer_functions,
)
from ctopt.design import g
from ctopt.errors import DesignError, UnsupportedError
from ctopt.filters import z

control = pytest.importorskip("control")


def _sym(tf: TransferFunction, name: str) -> sp.Symbol:
    return {s.name: s for s in tf.expr.free_symbols}[name]


def _equal(a: sp.Expr, b: sp.Expr) -> bool:
    return sp.simplify(a - b) == 0


def _random_values(design: ctopt.Design, rng: np.random.Generator) -> dict[str, float]:
    out = {}
    for h in design.hyper:
        lo = -1.0 if h.domain.lower is None else h.domain.lower
        hi = lo + 1.0 if h.domain.upper is None else min(h.domain.upper, lo + 1.0)
        out[h.name] = float(rng.uniform(lo + 0.1 * (hi - lo), lo + 0.9 * (hi - lo)))
    return out


# --------------------------------------------------------------------------------- known answers
def test_adam_moments_are_emas():
    d = ctopt.zoo.get("adam")
    v = transfer_function(d, output="v", input="g**2")
    m = transfer_function(d, output="m", input="g")
    b1, b2 = _sym(m, "beta1"), _sym(v, "beta2")
    assert _equal(v.expr, (1 - b2) * z / (z - b2))
    assert _equal(m.expr, (1 - b1) * z / (z - b1))
    assert v.poles() == [b2] and v.zeros() == [0] and v.dc_gain() == 1
    assert _equal(v.step_response(ctopt.k), 1 - b2**ctopt.k)  # the bias correction
    assert _equal(v.impulse_response(ctopt.k), (1 - b2) * b2 ** (ctopt.k - 1))


def test_adam_bias_correction_is_exposed_as_time_varying_gain():
    v = transfer_function(ctopt.zoo.get("adam"), output="v", input="g**2")
    (rec,) = v.time_varying
    b2 = _sym(v, "beta2")
    assert rec.where == "v_hat" and rec.limit == 1
    assert _equal(rec.expr, 1 / (1 - b2**ctopt.k))


def test_adagrad_accumulator_is_an_integrator():
    s = transfer_function(ctopt.zoo.get("adagrad"), output="s", input="g**2")
    assert _equal(s.expr, z / (z - 1))
    assert s.poles() == [1] and s.dc_gain() is sp.zoo
    assert _equal(s.step_response(ctopt.k), ctopt.k)


def test_adamssm_adds_one_pole_and_one_zero_with_unit_dc_gain():
    adam = transfer_function(ctopt.zoo.get("adam"), output="v", input="g**2")
    ssm = transfer_function(ctopt.zoo.get("adamssm"), output="v", input="g**2")
    assert len(ssm.poles()) == len(adam.poles()) + 1
    assert len(ssm.zeros()) == len(adam.zeros()) + 1
    assert _equal(ssm.dc_gain(), 1)
    pole, zero = _sym(ssm, "pole"), _sym(ssm, "zero")
    assert set(ssm.poles()) - set(adam.poles()) == {pole}
    assert set(ssm.zeros()) - set(adam.zeros()) == {zero}
    # zero == pole gives back Adam
    assert _equal(ssm.expr.subs(zero, pole), adam.expr)


def test_adabelief_is_a_cascade():
    d = ctopt.zoo.get("adabelief")
    m = transfer_function(d, output="m", input="g")
    s = transfer_function(d, output="s", input="(g - m)**2")
    b1, b2 = _sym(m, "beta1"), _sym(s, "beta2")
    assert _equal(m.expr, (1 - b1) * z / (z - b1))
    assert _equal(s.expr, (1 - b2) * z / (z - b2))
    assert s.offset == sp.Symbol("eps", real=True)  # eps accumulates inside the recursion
    assert transfer_function(d, output="s").input == s.input  # detected signal
    with pytest.raises(UnsupportedError, match="not linear"):
        transfer_function(d, output="s", input="g")


def test_gradient_difference_filter_of_adan():
    v = transfer_function(ctopt.zoo.get("adan"), output="v", input="g", max_grad_norm=0)
    b2 = _sym(v, "beta2")
    assert _equal(v.expr, (1 - b2) * (z - 1) / (z - b2))
    assert v.dc_gain() == 0
    assert any("finitely many k" in r.note for r in v.time_varying)


def test_momentum_buffer_with_first_step_branch():
    buf = transfer_function(ctopt.zoo.get("heavy_ball"), output="buf", input="g")
    mu, d = _sym(buf, "momentum"), _sym(buf, "dampening")
    assert _equal(buf.expr, (1 - d) * z / (z - mu))
    (rec,) = buf.time_varying
    assert rec.expr.has(sp.Piecewise) and _equal(rec.limit, 1 - d)


def test_theta_output_of_gradient_descent_is_an_integrator():
    tf = transfer_function(ctopt.zoo.get("sgd"), output="theta", input="g", weight_decay=0)
    lr = _sym(tf, "lr")
    assert _equal(tf.expr, -lr * z / (z - 1))


def test_transfer_functions_cover_every_zoo_filter():
    expected = {
        "sgd": {"theta"}, "heavy_ball": {"buf", "theta"}, "nesterov": {"buf", "theta"},
        "adagrad": {"s"}, "rmsprop": {"sq", "buf"}, "adam": {"m", "v"}, "adamw": {"m", "v"},
        "amsgrad": {"m", "v"}, "adabelief": {"m", "s"}, "adamssm": {"m", "v", "v_1"},
        "adan": {"m", "v", "g_prev", "n"}, "signgd": set(), "dgclip": {"theta"},
    }
    for name in ctopt.zoo.names():
        got = set(transfer_functions(ctopt.zoo.get(name)))
        assert got == expected[name], name


def test_subs_to_sympy_and_latex():
    v = transfer_function(ctopt.zoo.get("adam"), output="v", input="g**2")
    half = v.subs(beta2=sp.Rational(1, 2))
    assert _equal(half.expr, z / (2 * z - 1))
    sym = v.to_sympy()
    assert _equal(sym.num / sym.den, v.expr) and sym.var == z
    assert "H_{v}" in v._repr_latex_()
    with pytest.raises(ctopt.HyperparameterError):
        v.subs(beta2=1.5)
    with pytest.raises(ctopt.HyperparameterError):
        v.subs(beta1=0.5)  # not in this transfer function


def test_errors_name_the_problem():
    d = ctopt.zoo.get("adam")
    with pytest.raises(DesignError, match="unknown output"):
        transfer_function(d, output="q")
    with pytest.raises(DesignError, match="signal fed to it is g\\*\\*2"):
        transfer_function(d, output="v", input="g**3")
    with pytest.raises(DesignError, match="cannot read"):
        transfer_function(d, output="v", input="g**")
    with pytest.raises(DesignError):
        transfer_function(d, output="v", input="__import__('os')")


def test_state_space_is_mimo_in_the_states_it_reaches():
    ss = state_space(ctopt.zoo.get("adamssm"), input="g**2")
    assert isinstance(ss, StateSpace) and ss.state_names == ["v", "v_1"]
    assert ss.transfer_function("v").expr == transfer_function(
        ctopt.zoo.get("adamssm"), output="v", input="g**2").expr


# ---------------------------------------------------------------------- python-control checks
def _cases():
    for name in ctopt.zoo.names():
        for output in transfer_functions(ctopt.zoo.get(name)):
            yield name, output


@pytest.mark.parametrize("name,output", list(_cases()))
def test_cross_check_with_python_control(name, output):
    rng = np.random.default_rng(abs(hash((name, output))) % 2**32)
    d = ctopt.zoo.get(name)
    tf = transfer_function(d, output=output)
    values = _random_values(d, rng)
    extra = {s.name: float(rng.uniform(0.5, 2.0)) for s in tf.expr.free_symbols
             if s != z and s.name not in values}  # reductions such as grad_norm
    values |= extra
    ss = state_space(d, input=tf.input, outputs=[output])
    i = ss.state_names.index(output)
    numeric = ss.to_control(**values)
    sys_ss = control.ss(numeric.A, numeric.B, numeric.C[i:i + 1, :], numeric.D[i:i + 1, :], dt=1)
    ours = tf.to_control(**values)
    assert ours.dt == 1
    # to_control equals ss2tf of the numeric (A, B, C, D)
    theirs = control.ss2tf(sys_ss)
    w = np.linspace(0.05, 3.0, 7)
    ez = np.exp(1j * w)
    assert np.allclose(ours(ez), theirs(ez), rtol=1e-8, atol=1e-10)
    # poles are the eigenvalues of A (after pole-zero cancellation in ours)
    eig = np.linalg.eigvals(numeric.A)
    poles = np.array([complex(p.subs({s: values[s.name] for s in p.free_symbols}))
                      for p in tf.poles()])
    assert all(np.min(np.abs(eig - p)) < 1e-8 for p in poles)
    # frequency responses
    resp = control.frequency_response(theirs, w)
    ours_fr = tf.frequency_response(w, **values)
    assert np.allclose(np.abs(ours_fr), resp.magnitude.ravel(), rtol=1e-8)
    # impulse responses: python-control (y[0] is ctopt's h[1]) and the closed form
    n = 12
    resp = control.impulse_response(sys_ss, T=np.arange(n))
    j = sp.Symbol("j", integer=True, positive=True)
    closed = tf.impulse_response(j)
    table = {s: values[s.name] for s in closed.free_symbols if s.name in values}
    h_closed = [complex(closed.subs(table).subs(j, i)) for i in range(1, n + 1)]
    assert np.allclose(np.imag(h_closed), 0, atol=1e-9)
    h_closed = np.real(h_closed)
    assert np.allclose(resp.outputs.ravel(), h_closed, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name,output", [
    c for c in _cases() if c[0] not in ("dgclip",)
])
def test_impulse_response_matches_the_oracle(name, output):
    d = ctopt.zoo.get(name)
    fixed = {"max_grad_norm": 0.0} if name == "adan" else {}  # clipping off: input is g
    tf = transfer_function(d, output=output, **fixed)
    if tf.input not in (g, g**2) or tf.offset != 0:
        pytest.skip(f"input {tf.input} is not an impulse of g")
    rng = np.random.default_rng(3)
    values = _random_values(d, rng) | ({"max_grad_norm": 0.0} if name == "adan" else {})
    if "weight_decay" in values and output != "theta":
        values["weight_decay"] = 0.0  # theta is held at zero in the open loop
    for st in d.states:  # zero initial state (AdaGrad's initial_accumulator_value)
        values |= {sym.name: 0.0 for sym in sp.sympify(st.init).free_symbols}
    n, start = 10, 3  # the impulse arrives at step 3, after the first-step branches
    state = ctopt.oracle.init_state(d, 1, **values)
    x = np.zeros(1)
    got = []
    for step in range(1, start + n):
        grad = np.array([1.0 if step == start else 0.0])
        x, state = ctopt.oracle.step(d, x, grad, state, step, **values)
        if step >= start:
            got.append(float(x[0] if output == "theta" else state[output][0]))
    impulse = control.impulse_response(tf.to_control(**values), T=np.arange(n))
    assert np.allclose(got, impulse.outputs.ravel(), rtol=1e-9, atol=1e-12)
