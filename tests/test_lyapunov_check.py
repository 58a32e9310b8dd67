"""Lyapunov-candidate checks along a design's own dynamics: heavy ball with its known quadratic
Lyapunov function (proven), wrong candidates (counterexamples), and what the search finds for
Adam and AdamSSM with their adaptive second moment."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import ctopt
from ctopt.analysis.lyapunov_check import (
    H,
    check_lyapunov,
    known_lyapunov_function,
    one_step_change,
)
from ctopt.errors import CtoptError
from ctopt.oracle import step

theta = sp.Symbol("theta", real=True)
lr = sp.Symbol("lr", real=True)


def test_heavy_ball_known_lyapunov_function_is_proven():
    hb = ctopt.zoo.get("heavy_ball")
    V, conditions = known_lyapunov_function(hb)
    result = check_lyapunov(hb, V, m=1, L=10, conditions=conditions, samples=4000,
                            lr=0.1, momentum=0.5)
    assert result.proven
    assert result.counterexample is None and result.worst_increase <= 1e-12
    # the proof is the identity dV = -(theta^2 + buf^2) (Q = I), so every minor is 1
    buf = sp.Symbol("buf", real=True)
    dv = sp.cancel(result.delta + theta**2 + buf**2)
    assert dv == 0


def test_gradient_descent_needs_the_step_size_condition():
    sgd = ctopt.zoo.get("sgd")
    with_region = check_lyapunov(sgd, theta**2, conditions=[lr * H > 0, lr * H < 2],
                                 samples=2000, lr=0.05)
    assert with_region.proven
    without = check_lyapunov(sgd, theta**2, samples=2000, lr=0.05)
    assert not without.proven and without.counterexample is None
    too_big = check_lyapunov(sgd, theta**2, m=1, L=10, samples=2000, lr=0.5)
    assert too_big.counterexample is not None and too_big.counterexample["h"] > 4


def test_wrong_candidate_for_heavy_ball_has_a_counterexample():
    hb = ctopt.zoo.get("heavy_ball")
    result = check_lyapunov(hb, theta**2, m=1, L=10, samples=4000, lr=0.05, momentum=0.9)
    assert not result.proven and result.counterexample is not None
    assert result.worst_increase > 0


@pytest.mark.parametrize("name", ["adam", "adamssm"])
def test_adaptive_designs_loss_is_not_a_lyapunov_function(name):
    """Honest finding: with an adaptive second moment the loss h*theta^2/2 is not monotone;
    the search finds increases on trajectories started from zero states."""
    design = ctopt.zoo.get(name)
    V = H * theta**2 / 2
    result = check_lyapunov(design, V, m=1, L=10, samples=4000, lr=0.01)
    assert not result.proven
    point = result.reachable_counterexample
    assert point is not None and result.reachable_increase > 0
    # replay the reported point through the oracle: V really increases
    x = np.array([point["theta"]])
    state = {s: np.array([point[s]]) for s in design.state_names}
    x1, _ = step(design, x, point["h"] * x, state, point["k"], lr=0.01)
    assert point["h"] * x1[0] ** 2 / 2 > point["h"] * x[0] ** 2 / 2
    assert "no symbolic proof attempted" in str(result.proof)


def test_one_step_change_and_errors():
    sgd = ctopt.zoo.get("sgd")
    dv = one_step_change(sgd, theta**2).subs(sp.Symbol("weight_decay", real=True), 0)
    assert sp.expand(dv - ((theta - lr * H * theta) ** 2 - theta**2)) == 0
    with pytest.raises(CtoptError, match="only theta"):
        check_lyapunov(sgd, sp.Symbol("q") ** 2)
    with pytest.raises(CtoptError, match="problem class"):
        check_lyapunov(sgd, theta**2, problem="logistic")
    assert check_lyapunov(sgd, theta**2, samples=1000, lr=0.01)._repr_latex_().startswith("$")
