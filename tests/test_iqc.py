"""IQC/LMI rate certificates: Lessard-Recht-Packard's gradient-descent result, Nesterov's
standard tuning certified between the quadratic rate and the analytic bound, the IQC itself
checked on random functions, and the clear error without cvxpy."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import ctopt
from ctopt.analysis.iqc import iqc_rate, lurie_system
from ctopt.errors import UnsupportedError

pytest.importorskip("cvxpy")


@pytest.mark.parametrize("kappa,alpha_L", [(10, 1.0), (10, 2 / 1.1), (50, 0.5)])
def test_gradient_descent_rate_is_reproduced(kappa, alpha_L):
    L, m = 1.0, 1.0 / kappa
    alpha = alpha_L / L
    cert = iqc_rate(([[1.0]], [[-alpha]], [[1.0]]), m, L, tol=1e-6)
    expected = max(abs(1 - alpha * m), abs(1 - alpha * L))
    assert cert.certified
    assert expected - 1e-6 <= cert.rate <= expected + 1e-4


@pytest.mark.parametrize("kappa", [10, 100])
def test_nesterov_standard_tuning_is_certified_between_known_bounds(kappa):
    L, m = 1.0, 1.0 / kappa
    beta = (np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1)
    system = ([[1 + beta, -beta], [1.0, 0.0]], [[-1.0 / L], [0.0]], [[1 + beta, -beta]])
    cert = iqc_rate(system, m, L, iqc=("sector", "off_by_one"), tol=1e-5)
    assert cert.certified
    # quadratics belong to the class: no certificate can beat their worst case
    assert cert.rate >= 1 - 1 / np.sqrt(kappa) - 1e-6
    # and it is at least as good as Nesterov's analytic guarantee sqrt(1 - 1/sqrt(kappa))
    assert cert.rate <= np.sqrt(1 - 1 / np.sqrt(kappa)) + 1e-6
    assert cert.proof.numeric


def test_weighted_off_by_one_iqc_holds_on_random_functions():
    """The IQC the LMI relies on: sum_k rho^(-2k) z1_k z2_k >= 0 for gradients of functions with
    curvature in [m, L] (here f' = m y + c*tanh(s*y)/s, 0 <= c <= L - m), from the optimum."""
    rng = np.random.default_rng(3)
    m, L = 0.1, 1.0
    for _ in range(3000):
        T, rho = rng.integers(1, 8), rng.uniform(0.3, 1.0)
        c, s = rng.uniform(0, L - m), rng.uniform(0.2, 5)
        y = rng.normal(0, 3, T)
        u = m * y + c * np.tanh(s * y) / s
        yp, up = np.r_[0.0, y[:-1]], np.r_[0.0, u[:-1]]
        z1, z2 = (L * y - u) - rho**2 * (L * yp - up), u - m * y
        assert np.sum(rho ** (-2.0 * np.arange(T)) * z1 * z2) >= -1e-12


def test_designs_and_closed_loops_give_the_lurie_form():
    A, B, C = lurie_system(ctopt.zoo.get("sgd"), lr=0.1)
    assert A.tolist() == [[1.0]] and B.ravel().tolist() == [-0.1] and C.ravel().tolist() == [1.0]
    cert = iqc_rate(ctopt.zoo.get("sgd"), 0.1, 1.0, lr=1.0, tol=1e-5)
    assert abs(cert.rate - 0.9) < 1e-4


def test_unstable_method_is_not_certified():
    cert = iqc_rate(([[1.0]], [[-2.5]], [[1.0]]), 0.1, 1.0)
    assert not cert.certified and cert.rate == 1.0 and "no rate" in str(cert)


def test_missing_cvxpy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cvxpy", None)
    with pytest.raises(UnsupportedError, match=r"ctopt\[lmi\]"):
        iqc_rate(([[1.0]], [[-0.1]], [[1.0]]), 0.1, 1.0)


def test_plot_certified_rate_against_kappa():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import ctopt.plot

    drawn = ctopt.plot.iqc_rates(kappas=(4, 16), tol=1e-3)
    fig, ax = drawn.figure, drawn.ax
    lines = ax.get_lines()
    assert len(lines) == 5
    gd = lines[0].get_ydata()
    assert np.allclose(gd, [(4 - 1) / (4 + 1), (16 - 1) / (16 + 1)], atol=2e-3)
    plt.close(fig)


def test_adam_with_frozen_preconditioner_is_certified_above_its_quadratic_rate():
    from ctopt.analysis.convergence import worst_case_rate

    adam = ctopt.zoo.get("adam")
    values = dict(lr=0.5, r=1.0, beta1=0.5)
    cert = iqc_rate(adam, 0.1, 1.0, iqc=("sector", "off_by_one"), tol=1e-5, **values)
    quadratic = worst_case_rate(adam, 0.1, 1.0, **values).rate
    assert cert.certified
    assert quadratic - 1e-6 <= cert.rate <= quadratic + 0.05
