"""Jury / Schur-Cohn stability conditions: exact regions for GD, heavy ball and Nesterov, the
zoo's moment filters, and agreement with numeric spectral radii on random samples."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import ctopt
from ctopt.analysis.stability import (
    canonical_atoms,
    jury_table,
    same_region,
    stability_conditions,
)
from ctopt.analysis.validity import filter_validity
from ctopt.errors import CtoptError, UnsupportedError
from ctopt.filters import z

alpha, h, beta = sp.symbols("alpha h beta", real=True)
ah = alpha * h

#: Samples whose numeric spectral radius is within this distance of 1 are on the boundary,
#: where floating-point eigenvalues cannot decide; they are excluded from the comparison.
BOUNDARY_TOL = 1e-6
SAMPLES = 10_000


# ------------------------------------------------------------------ the three classic systems
def gd_matrix():
    return sp.Matrix([[1 - ah]])


def heavy_ball_matrix():
    # Lessard, Recht & Packard (2.7): xi = [x_k; x_{k-1}], A + B h C
    return sp.Matrix([[1 + beta, -beta], [1, 0]]) + sp.Matrix([-alpha, 0]) * h * sp.Matrix(
        [[1, 0]])


def nesterov_matrix():
    # Lessard, Recht & Packard (2.5): C = [1 + beta, -beta]
    return sp.Matrix([[1 + beta, -beta], [1, 0]]) + sp.Matrix([-alpha, 0]) * h * sp.Matrix(
        [[1 + beta, -beta]])


def adam_frozen_matrix():
    """Adam near a minimum of h*theta**2/2 with its preconditioner frozen at p = lr/(sqrt(v)+eps)
    and bias correction settled: m <- b1*m + (1-b1)*h*theta; theta <- theta - p*m."""
    p, b1 = sp.symbols("p beta1", real=True)
    return sp.Matrix([[1 - p * (1 - b1) * h, -p * b1], [(1 - b1) * h, b1]])


def test_gradient_descent_region_is_exact():
    cond = stability_conditions(gd_matrix())
    assert same_region(cond.expr, (ah > 0) & (ah < 2))
    assert not same_region(cond.expr, (ah > 0) & (ah < 1))


def test_heavy_ball_region_is_exact():
    cond = stability_conditions(heavy_ball_matrix())
    expected = (sp.Abs(beta) < 1) & (ah > 0) & (ah < 2 * (1 + beta))
    assert same_region(cond.expr, expected)
    assert not same_region(cond.expr, (sp.Abs(beta) < 1) & (ah > 0) & (ah < 2))


def test_nesterov_region_is_exact_and_the_stated_form_needs_beta_above_minus_half():
    cond = stability_conditions(nesterov_matrix())
    # what Jury gives, for every real beta
    jury = (sp.Abs(beta * (1 - ah)) < 1) & (ah > 0) & (2 + 2 * beta - ah * (1 + 2 * beta) > 0)
    assert same_region(cond.expr, jury)
    # the closed form 0 < ah < (2+2b)/(1+2b): equivalent exactly when 1 + 2*beta > 0
    stated = (sp.Abs(beta * (1 - ah)) < 1) & (ah > 0) & (ah < (2 + 2 * beta) / (1 + 2 * beta))
    assert cond.equivalent(stated, [2 * beta + 1 > 0])
    assert not same_region(cond.expr, stated)
    # and for beta < -1/2 it is wrong: beta = -3/4, alpha*h = 1 gives P(z) = z**2 (stable)
    assert cond.holds(alpha=1.0, h=1.0, beta=-0.75)
    assert not bool(stated.subs({alpha: 1, h: 1, beta: sp.Rational(-3, 4)}))


def test_nesterov_region_matches_papers_jury_terms():
    poly = z**2 - (1 + beta) * (1 - ah) * z + beta * (1 - ah)
    cond = stability_conditions(poly)
    assert cond.equivalent(stability_conditions(nesterov_matrix()).expr)
    assert sp.expand(poly - nesterov_matrix().charpoly(z).as_expr()) == 0


def test_accepts_poly_tf_and_charpoly_objects():
    class TF:
        den = z**2 - (1 + beta - ah) * z + beta

    class Loop:
        def charpoly(self):
            return sp.Poly(TF.den, z)

    a = stability_conditions(TF())
    b = stability_conditions(Loop())
    c = stability_conditions(heavy_ball_matrix())
    assert same_region(a.expr, b.expr) and same_region(a.expr, c.expr)


def test_proof_shows_jury_table_and_renders():
    cond = stability_conditions(z**3 + alpha * z**2 + beta * z + h)
    text = str(cond.proof)
    assert "Jury table row 2" in text and "conclusion" in text
    assert cond.proof._repr_latex_().startswith("$") and "Jury" in cond.proof._repr_latex_()
    assert cond._repr_latex_().startswith("$")
    assert jury_table([1, 2, 3, 4])[1] == [1 * 1 - 4 * 4, 1 * 2 - 4 * 3, 1 * 3 - 4 * 2]


def test_numeric_polynomials_and_size_limits():
    ok = stability_conditions(z**8 - sp.Rational(1, 2))
    assert ok.numeric and ok.holds() and ok.proof.numeric
    bad = stability_conditions(sp.expand((z - 2) * (z + sp.Rational(1, 3))))
    assert bad.numeric and not bad.holds()
    with pytest.raises(UnsupportedError, match="degree 7"):
        stability_conditions(z**7 + alpha)
    with pytest.raises(CtoptError, match="values needed"):
        stability_conditions(gd_matrix()).holds(alpha=1.0)


def test_symbolic_leading_coefficient():
    cond = stability_conditions(alpha * z - beta)
    assert cond.holds(alpha=2.0, beta=1.0) and not cond.holds(alpha=0.5, beta=1.0)
    assert cond.holds(alpha=-2.0, beta=1.0)  # root 1/2


# ------------------------------------------------------------------ the zoo's moment filters
@pytest.mark.parametrize("name", ctopt.zoo.names())
def test_zoo_moment_filter_poles(name):
    design = ctopt.zoo.get(name)
    for check in filter_validity(design).filters:
        num, den = sp.fraction(sp.cancel(check.transfer))
        poles = sp.roots(sp.Poly(den, z), multiple=True)
        if check.kind == "accumulator":
            assert poles == [1]
            assert not stability_conditions(sp.Poly(den, z).monic()).holds()
            assert check.status["stable"] == "marginal"
            continue
        cond = stability_conditions(sp.Poly(den, z).monic())
        expected = sp.And(*[sp.Abs(p) < 1 for p in poles])
        assert same_region(cond.expr, expected), (name, check.name, cond.expr)


def test_ema_pole_condition_reads_abs_beta_below_one():
    b2 = sp.Symbol("beta2", real=True)
    cond = stability_conditions(z - b2)
    assert same_region(cond.expr, sp.Abs(b2) < 1)


# ------------------------------------------------------------------ property tests
def _spectral_radius(A: sp.Matrix, params, samples) -> np.ndarray:
    fn = sp.lambdify(params, A, modules="numpy")
    n = A.shape[0]
    mats = np.empty((len(samples[0]), n, n))
    for i in range(n):
        for j in range(n):
            entry = sp.lambdify(params, A[i, j], modules="numpy")
            mats[:, i, j] = np.broadcast_to(entry(*samples), mats.shape[:1])
    del fn
    return np.max(np.abs(np.linalg.eigvals(mats)), axis=1)


def _agreement(A: sp.Matrix, ranges: dict[sp.Symbol, tuple[float, float]], seed: int):
    cond = stability_conditions(A)
    rng = np.random.default_rng(seed)
    params = list(ranges)
    samples = [rng.uniform(lo, hi, SAMPLES) for lo, hi in ranges.values()]
    rho = _spectral_radius(A, params, samples)
    held = cond.holds(**{p.name: s for p, s in zip(params, samples, strict=True)})
    clear = np.abs(rho - 1) > BOUNDARY_TOL
    disagreements = np.count_nonzero((held != (rho < 1)) & clear)
    return disagreements, np.count_nonzero(clear), np.count_nonzero(held & clear)


SYSTEMS = {
    "gd": (gd_matrix, {alpha: (-0.5, 3.0), h: (-0.5, 2.0)}),
    "heavy_ball": (heavy_ball_matrix, {alpha: (-0.5, 3.0), h: (-0.5, 2.0), beta: (-1.5, 1.5)}),
    "nesterov": (nesterov_matrix, {alpha: (-0.5, 3.0), h: (-0.5, 2.0), beta: (-1.5, 1.5)}),
    "adam_frozen": (adam_frozen_matrix, {sp.Symbol("p", real=True): (-0.5, 3.0), h: (-0.5, 2.0),
                                         sp.Symbol("beta1", real=True): (-1.2, 1.2)}),
}


def _design_loop(name, **fixed):
    def build():
        return ctopt.closed_loop(ctopt.zoo.get(name), **fixed).A
    return build


_R = sp.Symbol("r", positive=True)
_LR, _B1 = sp.Symbol("lr", real=True), sp.Symbol("beta1", real=True)
SYSTEMS |= {
    # the Adam-type closed loops as derived by ctopt.closed_loop (frozen preconditioner r)
    "closed_loop_adam": (_design_loop("adam", weight_decay=0, eps=1e-8),
                         {_LR: (-0.5, 3.0), h: (-0.5, 2.0), _B1: (-1.2, 1.2), _R: (0.2, 2.0)}),
    "closed_loop_adabelief": (_design_loop("adabelief", weight_decay=0, eps=1e-16),
                              {_LR: (-0.5, 3.0), h: (-0.5, 2.0), _B1: (-1.2, 1.2),
                               _R: (0.2, 2.0)}),
    "closed_loop_nesterov": (_design_loop("nesterov", weight_decay=0, dampening=0),
                             {_LR: (-0.5, 3.0), h: (-0.5, 2.0),
                              sp.Symbol("momentum", real=True): (-1.5, 1.5)}),
}


@pytest.mark.parametrize("name", sorted(SYSTEMS))
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_holds_agrees_with_spectral_radius(name, seed):
    build, ranges = SYSTEMS[name]
    bad, clear, stable = _agreement(build(), ranges, seed)
    assert clear > 0.99 * SAMPLES
    assert 0 < stable < clear  # both sides of the boundary are sampled
    assert bad == 0


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), degree=st.sampled_from([3, 4]))
def test_generic_degree_3_and_4_agree_with_roots(seed, degree):
    coeffs = sp.symbols(f"c0:{degree}", real=True)
    A = sp.zeros(degree, degree)  # companion matrix of z**n + c_{n-1} z**(n-1) + ... + c_0
    for i in range(1, degree):
        A[i, i - 1] = 1
    for i in range(degree):
        A[i, degree - 1] = -coeffs[i]
    bad, clear, stable = _agreement(A, {c: (-1.6, 1.6) for c in coeffs}, seed)
    assert clear > 0.99 * SAMPLES and stable > 0 and bad == 0


def test_canonical_atoms_detect_a_changed_bound():
    assert canonical_atoms(ah < 2) != canonical_atoms(ah < 3)
    assert canonical_atoms(2 * ah < 4) == canonical_atoms(ah < 2)
