"""Lyapunov certificates: symbolic P, Sylvester's criterion on the Jury region, scipy and
python-control cross-checks, and honest numeric labelling where the proof does not finish."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from ctopt.analysis.certificates import lyapunov
from ctopt.errors import UnsupportedError

alpha, h, beta = sp.symbols("alpha h beta", real=True)
ah = alpha * h
GD = sp.Matrix([[1 - ah]])
HEAVY_BALL = sp.Matrix([[1 + beta - ah, -beta], [1, 0]])
NESTEROV = sp.Matrix([[(1 + beta) * (1 - ah), -beta * (1 - ah)], [1, 0]])


@pytest.mark.parametrize("A", [GD, HEAVY_BALL, NESTEROV], ids=["gd", "heavy_ball", "nesterov"])
def test_classic_methods_are_proven_symbolically(A):
    cert = lyapunov(A)
    assert cert.proven
    assert not [s for s in cert.proof if s.numeric and "minor" in s.text]
    n = A.shape[0]
    assert (A.T * cert.P * A - cert.P + sp.eye(n)).applyfunc(sp.cancel) == sp.zeros(n, n)
    assert cert.cross_check_error < 1e-9


def test_positive_definite_exactly_on_the_region():
    cert = lyapunov(HEAVY_BALL)
    rng = np.random.default_rng(1)
    for _ in range(200):
        v = dict(alpha=rng.uniform(-1, 3), h=rng.uniform(-1, 3), beta=rng.uniform(-1.5, 1.5))
        stable = cert.stability.holds(**v)
        if not stable:
            continue
        P = cert.P_at(**v)
        assert np.all(np.linalg.eigvalsh((P + P.T) / 2) > 0)


def test_matches_python_control_dlyap():
    import control

    cert = lyapunov(NESTEROV)
    v = dict(alpha=0.3, h=1.7, beta=0.6)
    A = np.array(NESTEROV.subs({alpha: 0.3, h: 1.7, beta: 0.6}), dtype=float)
    # control.dlyap(A, Q) solves A X A^T - X + Q = 0; pass A^T for A^T X A - X + Q = 0
    X = control.dlyap(A.T, np.eye(2))
    assert np.allclose(cert.P_at(**v), X, atol=1e-10)
    assert cert.cross_check(**v) < 1e-10


def test_hb_certificate_minor_factors_are_region_conditions():
    cert = lyapunov(HEAVY_BALL)
    text = str(cert.proof)
    assert "alpha*h > 0" in text and "1 - beta > 0" in text
    assert not cert.proof.numeric or "cross-check" in text


def test_unproven_minors_get_labelled_numeric_evidence():
    p, b1 = sp.symbols("p beta1", real=True)
    adam_frozen = sp.Matrix([[1 - p * (1 - b1) * h, -p * b1], [(1 - b1) * h, b1]])
    cert = lyapunov(adam_frozen)
    steps = [s for s in cert.proof if s.numeric and "random points" in s.text]
    if not cert.proven:
        assert steps and cert.numeric_min_minor > 0
    assert "P > 0 only checked numerically" in str(cert) or cert.proven


def test_three_states_and_custom_q():
    c0, c1, c2 = sp.symbols("c0:3", real=True)
    A = sp.Matrix([[0, 0, -c0], [1, 0, -c1], [0, 1, -c2]])
    cert = lyapunov(A, Q=sp.diag(1, 2, 3))
    assert cert.P.shape == (3, 3)
    assert cert.cross_check(c0=0.1, c1=-0.2, c2=0.3) < 1e-10
    assert cert.numeric_min_minor is None or cert.numeric_min_minor > 0


def test_size_limit_and_latex():
    with pytest.raises(UnsupportedError, match="symbolic limit"):
        lyapunov(sp.eye(4) * alpha)
    cert = lyapunov(GD)
    assert cert._repr_latex_().startswith("$") and "P" in str(cert)
    assert cert.conditions == cert.stability.expr
