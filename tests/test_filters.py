"""Transfer-function-defined moments: realisation, closed-form responses, AdamSSM reduces to Adam."""

import numpy as np
import pytest
import sympy as sp

import ctopt
from ctopt.errors import DesignError
from ctopt.filters import inverse_z, realize, z
from ctopt.oracle import evaluate

b2, p, q = sp.symbols("beta2 pole zero", real=True)
u = sp.Symbol("u", real=True)
ADAMSSM_H = (1 - b2) * z / (z - b2) * (1 - p) / (1 - q) * (z - q) / (z - p)


def run_filter(flt, inputs):
    """Drive the realised states with the oracle's evaluator; returns the output sequence."""
    env = {sp.Symbol(n, real=True): 0.0 for n in flt.states}
    out = []
    for value in inputs:
        env[u] = value
        for a in flt.assignments:
            env[a.target] = evaluate(a.expr, env)
        out.append(env[sp.Symbol(flt.output, real=True)])
    return np.array(out, dtype=float)


VALUES = [
    {b2: 0.999, p: 0.9, q: 0.99},
    {b2: 0.9, p: 0.5, q: 0.2},
    {b2: 0.95, p: 0.99, q: -0.3},
]


@pytest.mark.parametrize("values", VALUES)
def test_step_and_impulse_response_match_realised_states(values):
    flt = realize("v", ADAMSSM_H, u)
    n = 60
    steps = np.arange(1, n + 1)
    s_closed = sp.lambdify(ctopt.k, flt.step_response().subs(values), "numpy")(steps)
    h_closed = sp.lambdify(ctopt.k, flt.impulse_response().subs(values), "numpy")(steps)
    realised = ADAMSSM_H.subs(values)
    flt_num = realize("v", realised, u)
    assert np.allclose(run_filter(flt_num, np.ones(n)), s_closed, rtol=1e-12, atol=1e-14)
    assert np.allclose(run_filter(flt_num, np.eye(n)[0]), h_closed, rtol=1e-12, atol=1e-14)


def test_ema_bias_correction_is_the_step_response():
    beta = sp.Symbol("beta1", real=True)
    flt = realize("m", (1 - beta) * z / (z - beta), u)
    assert sp.simplify(flt.step_response() - (1 - beta**ctopt.k)) == 0
    assert flt.dc_gain() == 1
    assert flt.poles() == [beta]
    assert flt.zeros() == [0]
    assert len(flt.states) == 1


def test_adamssm_filter_structure():
    flt = realize("v", ADAMSSM_H, u)
    assert len(flt.states) == 2
    assert sp.simplify(flt.dc_gain() - 1) == 0
    assert sorted(map(str, flt.poles())) == ["beta2", "pole"]
    assert sorted(map(str, flt.zeros())) == ["0", "zero"]


def test_shifted_convention_and_errors():
    flt = realize("v", (1 - b2) / (z - b2), u)  # one-step delayed input: two states
    assert len(flt.states) == 2
    with pytest.raises(DesignError, match="improper"):
        realize("v", z**2 / (z - b2), u)
    with pytest.raises(DesignError, match="no pole"):
        realize("v", sp.Integer(1), u)
    with pytest.raises(DesignError, match="not rational in z"):
        realize("v", sp.sin(z), u)
    j = sp.Symbol("j", integer=True, nonnegative=True)
    assert sp.simplify(inverse_z(z / (z - 1) ** 2, j) - j) == 0  # repeated pole: a ramp


def test_adamssm_with_zero_equal_pole_is_adam(problem):
    grad_fn, x0 = problem
    adam = ctopt.simulate(ctopt.zoo.get("adam"), grad_fn, x0, 100, lr=0.01, beta2=0.99)
    for pole in (0.5, 0.9):
        ssm = ctopt.simulate(
            ctopt.zoo.get("adamssm"), grad_fn, x0, 100, lr=0.01, beta2=0.99, pole=pole, zero=pole
        )
        assert np.max(np.abs(ssm - adam)) / np.max(np.abs(adam)) <= 1e-12


def test_adamssm_default_differs_from_adam(problem):
    grad_fn, x0 = problem
    adam = ctopt.simulate(ctopt.zoo.get("adam"), grad_fn, x0, 50, lr=0.01)
    ssm = ctopt.simulate(ctopt.zoo.get("adamssm"), grad_fn, x0, 50, lr=0.01)
    assert np.max(np.abs(ssm - adam)) > 1e-6
    d = ctopt.zoo.get("adamssm")
    assert d.filters[0].output == "v" and d.filters[0].states == ("v", "v_1")
    assert [s.key for s in d.states] == ["exp_avg", "exp_avg_sq", "v_1"]


def test_adamssm_repeated_pole_branch_is_continuous():
    """pole == beta2 takes the repeated-pole closed form: finite, and the limit of nearby poles."""
    d = ctopt.zoo.get("adamssm")
    at = ctopt.simulate(d, lambda x: x, np.ones(3), 30, beta2=0.99, pole=0.99, zero=0.9)
    near = ctopt.simulate(d, lambda x: x, np.ones(3), 30, beta2=0.99, pole=0.99 - 1e-8, zero=0.9)
    assert np.all(np.isfinite(at))
    assert np.max(np.abs(at - near)) < 1e-6
