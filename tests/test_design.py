"""Design IR: views, rendering, and every validation error by message."""

import math

import pytest
import sympy as sp

import ctopt
from ctopt.design import NONNEGATIVE, POSITIVE, UNIT, DesignBuilder, Domain, g, k, theta
from ctopt.errors import DesignError, HyperparameterError


def test_views_and_names_follow_torch():
    d = ctopt.zoo.get("adam")
    assert list(d.hyperparameters) == ["lr", "beta1", "beta2", "eps", "weight_decay"]
    assert d.defaults == {
        "lr": 1e-3,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.0,
    }
    assert d.state_names == ("m", "v")
    assert [s.key for s in d.states] == ["exp_avg", "exp_avg_sq"]
    eqs = d.equations()
    assert all(isinstance(e, sp.Eq) for e in eqs)
    assert eqs[-1].lhs == theta
    assert ctopt.zoo.get("adan").defaults["beta3"] == 0.99
    assert ctopt.zoo.get("adagrad").defaults["eps"] == 1e-10


def test_rendering():
    d = ctopt.zoo.get("adabelief")
    latex = d._repr_latex_()
    assert latex.startswith("$") and r"\leftarrow" in latex and r"\beta_{2}" in latex
    text = str(d)
    assert "exp_avg_var" in text and "s <- " in text
    assert "adabelief" in repr(d) and "hyperparameters" in repr(d)


def test_with_defaults_and_check_values():
    d = ctopt.zoo.get("adam").with_defaults(lr=0.5, beta2=0.9)
    assert d.defaults["lr"] == 0.5 and d.defaults["beta2"] == 0.9
    with pytest.raises(HyperparameterError, match=r"'beta2' = 1\.0 is outside its domain \[0, 1\)"):
        d.check_values(beta2=1.0)
    with pytest.raises(HyperparameterError, match=r"'eps' = 0 is outside its domain \(0, inf\)"):
        d.check_values(eps=0)
    with pytest.raises(HyperparameterError, match=r"'lr' = nan"):
        d.check_values(lr=math.nan)
    with pytest.raises(HyperparameterError, match=r"unknown hyperparameter\(s\) \['momentum'\]"):
        d.check_values(momentum=0.9)


def test_unknown_zoo_name_lists_valid_names():
    with pytest.raises(DesignError, match=r"unknown design 'adamm'\. Did you mean 'adam'\?.*sgd"):
        ctopt.zoo.get("adamm")


def _builder():
    b = DesignBuilder("toy")
    lr = b.hyper("lr", 0.1, POSITIVE, "learning rate", role="lr")
    return b, lr


def test_unknown_symbol():
    b, lr = _builder()
    b.update(theta - lr * sp.Symbol("mystery", real=True) * g)
    with pytest.raises(
        DesignError,
        match=r"uses \['mystery'\]: neither a hyperparameter, a signal, a state nor an earlier temporary",
    ):
        b.build()


def test_temporary_used_before_assignment():
    b, lr = _builder()
    tmp = sp.Symbol("tmp", real=True)
    b.update(theta - lr * tmp)
    b.let("tmp", g)
    with pytest.raises(DesignError, match=r"uses \['tmp'\]"):
        b.build()


def test_state_never_updated():
    b, lr = _builder()
    b.state("m")
    b.update(theta - lr * g)
    with pytest.raises(DesignError, match=r"state\(s\) \['m'\] are never updated"):
        b.build()


def test_assignment_to_signal():
    b, lr = _builder()
    b.assign(g, 2 * g)
    b.update(theta - lr * g)
    with pytest.raises(DesignError, match=r"'g' is a signal and cannot be assigned"):
        b.build()


def test_default_outside_domain_and_non_finite():
    b = DesignBuilder("toy")
    b.hyper("beta", 1.5, UNIT, "coefficient")
    b.update(theta - g)
    with pytest.raises(DesignError, match=r"'beta' has default 1\.5 outside its domain \[0, 1\)"):
        b.build()
    b = DesignBuilder("toy")
    b.hyper("lr", math.inf, NONNEGATIVE)
    b.update(theta - g)
    with pytest.raises(DesignError, match=r"'lr' has a non-finite default inf"):
        b.build()


def test_reduction_used_as_state():
    b, lr = _builder()
    norm = b.reduction("grad_norm", "l2_norm", g)
    b.assign(norm, norm + 1)
    b.update(theta - lr * g)
    with pytest.raises(
        DesignError,
        match=r"'grad_norm' is a group reduction and cannot be assigned or used as a state",
    ):
        b.build()


def test_reduction_of_state_rejected():
    b, lr = _builder()
    m = b.state("m")
    b.reduction("norm_m", "l2_norm", m)
    b.assign(m, g)
    b.update(theta - lr * m)
    with pytest.raises(
        DesignError, match=r"reduction 'norm_m' may depend only on g, theta and hyperparameters"
    ):
        b.build()


def test_update_count_and_duplicates_and_functions():
    b, lr = _builder()
    b.let("x", g)
    with pytest.raises(DesignError, match=r"must update theta exactly once \(found 0 updates\)"):
        b.build()
    b, lr = _builder()
    b.hyper("lr2", 0.1, POSITIVE)
    b.state("lr2")
    with pytest.raises(DesignError, match=r"'lr2' .* declared twice"):
        b.build()
    b, lr = _builder()
    b.update(theta - lr * sp.sin(g))
    with pytest.raises(DesignError, match=r"function 'sin', which is not supported"):
        b.build()
    b, lr = _builder()
    b.update(theta - lr * g)
    b.name = "bad name!"
    with pytest.raises(DesignError, match=r"design name 'bad name!' is not a valid identifier"):
        b.build()


def test_state_assigned_twice_and_init_uses_hyperparameters_only():
    b, lr = _builder()
    m = b.state("m")
    b.assign(m, g)
    b.assign(m, 2 * m)
    b.update(theta - lr * m)
    with pytest.raises(DesignError, match=r"state 'm' is assigned twice"):
        b.build()
    b, lr = _builder()
    m = b.state("m", init=g)
    b.assign(m, g)
    b.update(theta - lr * m)
    with pytest.raises(DesignError, match=r"initial value of state 'm' uses \['g'\]"):
        b.build()


def test_domain_text_and_condition():
    dom = Domain(0, 1, upper_closed=False)
    assert str(dom) == "[0, 1)"
    x = sp.Symbol("x", real=True)
    assert dom.condition(x) == sp.And(x >= 0, x < 1)
    assert not dom.contains(float("nan")) and not dom.contains("abc") and dom.contains(0.0)


def test_latest_value_rule():
    """AdaBelief's s uses the *new* m: the oracle must see the m assigned above."""
    import numpy as np

    d = ctopt.zoo.get("adabelief")
    state = ctopt.oracle.init_state(d, 1)
    _, new = ctopt.oracle.step(d, np.array([0.0]), np.array([1.0]), state, 1, eps=1e-16)
    m = 0.1  # (1 - beta1) * g
    assert new["m"][0] == pytest.approx(m)
    assert new["s"][0] == pytest.approx(0.001 * (1 - m) ** 2 + 1e-16, rel=1e-15)
    assert isinstance(k, sp.Symbol) and k.is_integer


def test_designs_pickle_for_worker_processes():
    import pickle

    d = ctopt.zoo.get("rmsprop", centered=True)
    back = pickle.loads(pickle.dumps(d))
    assert back.equations() == d.equations() and back.options == {"centered": True}
