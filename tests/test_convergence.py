"""Worst-case rates over h in [m, L] and tuning: Lessard, Recht & Packard's tuned rates on
quadratics (SIAM J. Optim. 26(1), 2016) at kappa = 10, 100, 1000."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import ctopt
from ctopt.analysis.convergence import tune, worst_case_rate
from ctopt.errors import CtoptError
from ctopt.filters import z

alpha, h, beta = sp.symbols("alpha h beta", real=True)
ah = alpha * h
GD = z - (1 - ah)
HB = z**2 - (1 + beta - ah) * z + beta
NESTEROV = z**2 - (1 + beta) * (1 - ah) * z + beta * (1 - ah)
KAPPAS = (10, 100, 1000)


def _lrp(kappa):
    """(system, exact parameters, exact rate) from Lessard, Recht & Packard's table, m = 1."""
    k = sp.Integer(kappa)
    L, m, sk, s3 = k, sp.Integer(1), sp.sqrt(k), sp.sqrt(3 * k + 1)
    return {
        "gd_popular": (GD, {"alpha": 1 / L}, 1 - 1 / k),
        "gd_optimal": (GD, {"alpha": 2 / (L + m)}, (k - 1) / (k + 1)),
        "nesterov_standard": (NESTEROV, {"alpha": 1 / L, "beta": (sk - 1) / (sk + 1)}, 1 - 1 / sk),
        "nesterov_optimal": (NESTEROV, {"alpha": 4 / (3 * L + m), "beta": (s3 - 2) / (s3 + 2)},
                             1 - 2 / s3),
        "heavy_ball_optimal": (HB, {"alpha": 4 / (sp.sqrt(L) + 1) ** 2,
                                    "beta": ((sk - 1) / (sk + 1)) ** 2}, (sk - 1) / (sk + 1)),
    }


@pytest.mark.parametrize("kappa", KAPPAS)
@pytest.mark.parametrize("method", ["gd_popular", "gd_optimal", "nesterov_standard",
                                    "nesterov_optimal", "heavy_ball_optimal"])
def test_lessard_recht_packard_rates_at_their_parameters(kappa, method):
    system, params, rate = _lrp(kappa)[method]
    result = worst_case_rate(system, 1, kappa, **params)
    assert abs(result.rate - float(rate)) < 1e-9
    # and the rate is a maximum over the interval: a dense independent check
    hs = np.linspace(1, kappa, 20001)
    f = sp.lambdify([h], sp.Poly(system.subs({alpha: params["alpha"],
                                              beta: params.get("beta", 0)}), z).all_coeffs())
    coeffs = np.array([np.broadcast_to(np.asarray(c, dtype=float), hs.shape) for c in f(hs)]).T
    dense = max(np.max(np.abs(np.roots(c))) for c in coeffs[::50])
    assert dense <= result.rate + 1e-7


@pytest.mark.parametrize("kappa", KAPPAS)
def test_tune_finds_the_optimal_rates(kappa):
    table = _lrp(kappa)
    for name, system in (("gd_optimal", GD), ("heavy_ball_optimal", HB),
                         ("nesterov_optimal", NESTEROV)):
        optimal = float(table[name][2])
        found = tune(system, 1, kappa)
        # the optimum sits on a square-root cusp (merging roots): float64 parameters resolve it
        # to ~1e-8; it can never beat the optimum by more than rounding
        assert found.rate >= optimal - 1e-12
        assert found.rate - optimal < 3e-8, (name, found)
        for key, exact in table[name][1].items():
            assert abs(found.values[key] - float(exact)) < 1e-4 * max(1.0, float(exact))


def test_gd_closed_form():
    r = worst_case_rate(GD, 2, 5, alpha=sp.Rational(1, 5))
    assert r.expr is not None and "closed form" in r.method
    assert r.rate == pytest.approx(max(abs(1 - 2 / 5), abs(1 - 1)))


def test_interior_maximum_is_found_and_labelled_numeric():
    # a loop whose spectral radius peaks inside [m, L]: rho(h) = |1 - (h - 2)**2/4 ... |
    poly = z - (sp.Rational(1, 2) + (h - 2) ** 2 / 8)
    r = worst_case_rate(poly, 1, 3)
    assert r.worst_curvature == pytest.approx(1.0) or r.worst_curvature == pytest.approx(3.0)
    poly2 = z - (1 - (h - 2) ** 2 / 8)
    r2 = worst_case_rate(poly2, 1, 3)
    assert r2.worst_curvature == pytest.approx(2.0, abs=1e-6)
    assert r2.rate == pytest.approx(1.0, abs=1e-12) and "numeric" in r2.method


def test_designs_via_closed_loop():
    hb = ctopt.zoo.get("heavy_ball")
    r = worst_case_rate(hb, 1, 100, lr=0.01, momentum=0.5)
    r_poly = worst_case_rate(HB, 1, 100, alpha=0.01, beta=0.5)
    assert r.rate == pytest.approx(r_poly.rate, abs=1e-12)
    t = tune(ctopt.zoo.get("sgd"), 1, 100)
    assert set(t.values) == {"lr"} and t.rate == pytest.approx(99 / 101, abs=1e-9)


def test_errors_and_rendering():
    with pytest.raises(CtoptError, match="values needed"):
        worst_case_rate(HB, 1, 10, alpha=0.1)
    with pytest.raises(CtoptError, match="m <= L"):
        worst_case_rate(GD, 2, 1, alpha=0.1)
    r = worst_case_rate(GD, 1, 10, alpha=0.1)
    assert str(r).startswith("worst-case rate") and r._repr_latex_().startswith("$")
    assert "tuned" in str(tune(GD, 1, 10))


@pytest.mark.parametrize("system", [HB, NESTEROV], ids=["heavy_ball", "nesterov"])
def test_degree_two_endpoint_closed_form_evaluates_to_the_rate(system):
    rng = np.random.default_rng(5)
    for _ in range(5):
        values = {"alpha": float(rng.uniform(0.001, 0.02)), "beta": float(rng.uniform(0, 0.95))}
        r = worst_case_rate(system, 1, 100, **values)
        if r.expr is None:
            continue
        closed = complex(r.expr.subs({alpha: values["alpha"], beta: values["beta"]}).evalf())
        assert abs(closed.real - r.rate) < 1e-9 and abs(closed.imag) < 1e-12
