"""Solver certificates are re-checked from their own matrices, independently of the solver, and
a rate is reported only where that check passes."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import ctopt
from ctopt.analysis import iqc
from ctopt.analysis.recheck import exact_definite, float_check

pytest.importorskip("cvxpy")

KAPPA = 10
BETA = (np.sqrt(KAPPA) - 1) / (np.sqrt(KAPPA) + 1)
NESTEROV = ([[1 + BETA, -BETA], [1.0, 0.0]], [[-1.0], [0.0]], [[1 + BETA, -BETA]])
BOTH = ("sector", "off_by_one")
CLARABEL_RATE = 0.751822  # Nesterov, kappa = 10, both IQCs (interior-point, re-checked)


# ------------------------------------------------------------------ the exact test itself
small_rationals = st.fractions(min_value=-4, max_value=4, max_denominator=12)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 4).flatmap(lambda n: st.lists(st.lists(small_rationals, min_size=n,
                                                             max_size=n), min_size=n, max_size=n)))
def test_exact_definiteness_agrees_with_sylvester(rows):
    """LDL^T pivots in fractions against sympy's leading principal minors of the same matrix."""
    n = len(rows)
    S = [[rows[i][j] + rows[j][i] for j in range(n)] for i in range(n)]  # symmetric
    M = sp.Matrix(n, n, lambda i, j: sp.Rational(S[i][j].numerator, S[i][j].denominator))
    sylvester = all(M[:k, :k].det() > 0 for k in range(1, n + 1))
    assert exact_definite(S) == sylvester
    assert exact_definite([[-x for x in row] for row in S], negative=True) == sylvester


def test_the_float_check_keeps_a_margin_and_the_exact_check_is_exact():
    singular = np.array([[1.0, 1.0], [1.0, 1.0]])  # eigenvalues 0 and 2
    assert not exact_definite(singular) and not float_check(singular).ok
    tiny = np.diag([1.0, 1e-300])
    assert exact_definite(tiny) and not float_check(tiny).ok  # within rounding: not trusted
    barely = [[Fraction(1), Fraction(1)], [Fraction(1), 1 + Fraction(1, 10**30)]]
    assert exact_definite(barely) and not exact_definite([[1, 1], [1, 1]])


# ------------------------------------------------------------------ IQC rates
def test_scs_no_longer_certifies_below_the_interior_point_rate():
    """SCS (a first-order method) used to report 0.751592 with a P, lambda that violate the LMI
    (largest eigenvalue +81). Every accepted answer is now re-checked; what is certified is at
    or above the best rate."""
    cert = iqc.iqc_rate(NESTEROV, m=1 / KAPPA, L=1.0, iqc=BOTH, solver="SCS", tol=1e-4)
    assert cert.certified and cert.rate >= CLARABEL_RATE - 1e-6
    text = str(cert.proof)
    assert "SCS, first-order" in text and "interior-point" not in text
    assert "exact rational LDL^T: P > 0 and LMI < 0" in text
    lam = [cert.multipliers[i] for i in BOTH]
    assert iqc.recheck(*NESTEROV, 1 / KAPPA, 1.0, cert.rate, BOTH, cert.P, lam)[0]


def test_clarabel_rate_is_reproduced_and_rechecked():
    cert = iqc.iqc_rate(NESTEROV, m=1 / KAPPA, L=1.0, iqc=BOTH, tol=1e-6)
    assert abs(cert.rate - CLARABEL_RATE) < 2e-6
    assert "CLARABEL, interior-point" in str(cert.proof) and "exact rational" in cert.check


def test_a_certificate_is_refused_below_its_rate_and_when_perturbed():
    cert = iqc.iqc_rate(NESTEROV, m=1 / KAPPA, L=1.0, iqc=BOTH, tol=1e-4)
    lam = [cert.multipliers[i] for i in BOTH]
    args = (*NESTEROV, 1 / KAPPA, 1.0)
    assert iqc.recheck(*args, cert.rate, BOTH, cert.P, lam)[0]
    assert not iqc.recheck(*args, cert.rate - 0.01, BOTH, cert.P, lam)[0]
    assert not iqc.recheck(*args, cert.rate, BOTH, cert.P, [10 * x for x in lam])[0]
    assert not iqc.recheck(*args, cert.rate, BOTH, -cert.P, lam)[0]
    assert not iqc.recheck(*args, cert.rate, BOTH, cert.P * np.nan, lam)[0]


def test_a_solver_that_lies_certifies_nothing(monkeypatch):
    """A solver claiming feasibility everywhere with a useless P: nothing is certified."""
    monkeypatch.setattr(iqc, "_lmi_feasible",
                        lambda cp, A, B, C, m, L, rho, iqcs, solver: (True, np.eye(1), [0.0]))
    cert = iqc.iqc_rate(([[1.0]], [[-0.1]], [[1.0]]), m=1, L=10, tol=1e-3)
    assert not cert.certified and "fails the re-check" in str(cert.proof)
    assert not iqc.recheck([[1.0]], [[-0.1]], [[1.0]], 1, 10, 0.95, ("sector",), np.eye(2), [0.01])[0]


@settings(max_examples=8, deadline=None)
@given(alpha=st.floats(0.05, 1.9), kappa=st.floats(1.5, 30))
def test_gradient_descent_rates_are_never_below_the_truth(alpha, kappa):
    """Gradient descent with step alpha/L: the exact worst-case rate over [m, L] is
    max|1 - alpha h|; no certified rate may lie below it (the sector IQC is tight here)."""
    L, m = 1.0, 1.0 / kappa
    truth = max(abs(1 - alpha * m), abs(1 - alpha * L))
    cert = iqc.iqc_rate(([[1.0]], [[-alpha]], [[1.0]]), m=m, L=L, tol=1e-4)
    if truth < 1:
        assert cert.certified and truth - 1e-9 <= cert.rate <= truth + 2e-4
    else:
        assert not cert.certified


@pytest.mark.parametrize("bad", [{"m": 0}, {"m": 2.0}, {"L": float("inf")}, {"tol": 0},
                                 {"m": float("nan")}])
def test_iqc_rate_checks_its_arguments(bad):
    args = {"m": 0.1, "L": 1.0, "tol": 1e-4, **bad}
    with pytest.raises(ctopt.errors.HyperparameterError):
        iqc.iqc_rate(NESTEROV, **args)


# ------------------------------------------------------------------ Lyapunov certificates
def test_lyapunov_certificates_verify_exactly_where_the_loop_is_stable():
    a, h, b = sp.symbols("alpha h beta", real=True)
    cert = ctopt.lyapunov(sp.Matrix([[1 + b - a * h, -b], [1, 0]]))
    rng = np.random.default_rng(3)
    from scipy.linalg import solve_discrete_lyapunov

    agree = 0
    for alpha, beta in rng.uniform([0.0, -1.2], [2.5, 1.2], size=(40, 2)):
        A = np.array([[1 + beta - alpha, -beta], [1.0, 0.0]])
        stable = max(abs(np.linalg.eigvals(A))) < 1 - 1e-9
        unstable = max(abs(np.linalg.eigvals(A))) > 1 + 1e-9
        verdict = cert.verify(alpha=alpha, h=1.0, beta=beta)
        if stable:
            assert verdict
            X = solve_discrete_lyapunov(A.T, np.eye(2))
            assert np.allclose(cert.P_at(alpha=alpha, h=1.0, beta=beta), X, rtol=1e-8)
            agree += 1
        elif unstable:
            assert not verdict
    assert agree >= 10


@pytest.mark.parametrize(("m", "L"), [(float("nan"), 1.0), (0.1, float("inf")), (1.0, 0.1),
                                      (-1.0, 1.0), ("0.1", 1.0)])
def test_rates_refuse_a_curvature_range_that_would_give_nan(m, L):
    design = ctopt.zoo.get("heavy_ball")
    with pytest.raises(ctopt.errors.HyperparameterError, match=r"\bm\b|\bL\b"):
        ctopt.worst_case_rate(design, m, L)
    from ctopt.analysis.lyapunov_check import known_lyapunov_function

    V, _ = known_lyapunov_function(design)
    with pytest.raises(ctopt.errors.HyperparameterError):
        ctopt.check_lyapunov(design, V, m=m, L=L)
