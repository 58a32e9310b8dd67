"""Moment-filter validity (the exporter's guard): stable, unit DC gain, nonnegative impulse
response, with AdamSSM's valid region checked against brute-force impulse responses."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import ctopt
from ctopt.analysis.validity import adamssm_region, adamssm_slices, filter_validity
from ctopt.design import DesignBuilder, g, theta
from ctopt.errors import HyperparameterError
from ctopt.filters import realize, z


@pytest.mark.parametrize("name", ctopt.zoo.names())
def test_every_zoo_design_is_valid_at_its_defaults(name):
    result = filter_validity(ctopt.zoo.get(name))
    assert result.ok, result.failed
    assert result.failed == []
    assert str(result.proof).startswith("Proof:")


def test_which_recursions_are_found():
    kinds = {n: {c.name: c.kind for c in filter_validity(ctopt.zoo.get(n)).filters}
             for n in ("adam", "adagrad", "heavy_ball", "adamssm", "adan", "amsgrad")}
    assert kinds["adam"] == {"m": "moment", "v": "moment"}
    assert kinds["adagrad"] == {"s": "accumulator"}
    assert kinds["heavy_ball"] == {"buf": "momentum buffer"}
    assert kinds["adamssm"] == {"v": "moment", "m": "moment"}
    assert kinds["adan"] == {"m": "moment", "v": "moment", "n": "moment"}
    amsgrad = filter_validity(ctopt.zoo.get("amsgrad"))
    assert "vmax" in amsgrad.skipped


def test_adagrad_integrator_is_marginal_not_invalid():
    result = filter_validity(ctopt.zoo.get("adagrad"))
    check = result.filters[0]
    assert check.status["stable"] == "marginal"
    assert "unit DC gain" not in check.conditions
    assert result.ok


def test_unstable_ema_is_refused_with_a_named_condition():
    result = filter_validity(ctopt.zoo.get("adam"), beta2=1.2)
    assert not result.ok
    assert result.failed[0] == "v: stable: |beta2| < 1 violated for beta2=1.2"
    # and 1 - beta2 < 0 makes the impulse response negative too
    assert result.failed[1] == "v: nonnegative impulse response: beta2 <= 1 violated for beta2=1.2"


def test_negative_pole_makes_a_second_moment_invalid_but_not_a_first_moment():
    result = filter_validity(ctopt.zoo.get("adam"), beta1=-0.5, beta2=-0.5)
    assert len(result.failed) == 2
    assert result.failed[0].startswith("v: nonnegative impulse response: beta2 >= 0 violated")
    # the realised update takes the square root of that v: refused by name as well
    assert result.failed[1].startswith("theta: square root of v/(1 - beta2**k): violated")


def test_dc_gain_other_than_one_is_refused():
    b = sp.Symbol("beta2", real=True)
    flt = realize("v", 2 * (1 - b) * z / (z - b), g**2)
    result = filter_validity(flt, beta2=0.9)
    assert not result.ok
    assert any("unit DC gain" in f for f in result.failed)


def test_a_design_with_a_biased_ema_assignment_is_a_momentum_buffer():
    d = DesignBuilder("biased")
    lr = d.hyper("lr", 0.1, ctopt.design.POSITIVE)
    beta = d.hyper("beta", 0.5, ctopt.design.UNIT)
    s = d.state("s")
    d.assign(s, beta * s + g**2)
    d.update(theta - lr * g / sp.sqrt(s + 1))
    result = filter_validity(d.build())
    check = result.filters[0]
    assert check.kind == "momentum buffer" and result.ok
    assert sp.simplify(check.transfer - z / (z - beta)) == 0


def test_unknown_hyperparameter_is_an_error():
    with pytest.raises(HyperparameterError, match="valid names"):
        filter_validity(ctopt.zoo.get("adam"), gamma=1.0)


# ------------------------------------------------------------------ AdamSSM's region
def _impulse(beta2, pole, zero, steps=3000):
    """Brute-force impulse response of AdamSSM's v filter, by running its recursion."""
    c = (1 - beta2) * (1 - pole) / (1 - zero)
    a1, a2 = beta2 + pole, -beta2 * pole  # y_k = a1 y_{k-1} + a2 y_{k-2} + c (u_k - zero u_{k-1})
    y = np.zeros((steps,) + np.shape(beta2))
    prev, prev2 = 0.0, 0.0
    for kk in range(steps):
        u, u_prev = (1.0 if kk == 0 else 0.0), (1.0 if kk == 1 else 0.0)
        cur = a1 * prev + a2 * prev2 + c * (u - zero * u_prev)
        y[kk] = cur
        prev2, prev = prev, cur
    return y


def test_adamssm_region_matches_brute_force_impulse_responses():
    rng = np.random.default_rng(0)
    n = 4000
    beta2 = rng.uniform(0, 0.995, n)
    pole = rng.uniform(0, 0.995, n)
    zero = rng.uniform(-0.99, 0.99, n)
    region = adamssm_region(ctopt.zoo.get("adamssm"))
    inside = region.holds(beta2=beta2, pole=pole, zero=zero)
    y = _impulse(beta2, pole, zero)
    nonneg = np.all(y >= -1e-14, axis=0)
    # away from the boundary zero = max(beta2, pole), where the sign change happens late
    clear = np.abs(zero - np.maximum(beta2, pole)) > 1e-2
    assert np.count_nonzero(inside & clear) > 100 and np.count_nonzero(~inside & clear) > 100
    assert np.array_equal(inside[clear], nonneg[clear])


def test_adamssm_region_proof_and_plot():
    region = adamssm_region(ctopt.zoo.get("adamssm"))
    zero, beta2, pole = sp.symbols("zero beta2 pole", real=True)
    assert (zero <= sp.Max(beta2, pole)) in sp.And.make_args(region.expr)
    assert "dominant" in str(region.proof)
    import matplotlib

    matplotlib.use("Agg")
    from ctopt import plot

    drawn = plot.adamssm_region(ctopt.zoo.get("adamssm"), beta2_values=(0.9, 0.999),
                                      resolution=41)
    assert len(drawn.axes) == 2
    import matplotlib.pyplot as plt

    plt.close(drawn.figure)


def test_adamssm_slices_are_the_region_on_the_grid():
    design = ctopt.zoo.get("adamssm")
    region = adamssm_region(design)
    s = adamssm_slices(design, (0.5, 0.95), resolution=9)
    assert s.inside.shape == (2, 9, 9)
    for i, b2 in enumerate(s.beta2):
        for j, zero in enumerate(s.zero):
            for k, pole in enumerate(s.pole):
                assert s.inside[i, j, k] == bool(region.holds(beta2=b2, pole=pole, zero=zero))
                assert s.inside[i, j, k] == (zero <= max(b2, pole))  # the closed form, |.| < 1


def test_adamssm_with_zero_equal_pole_is_adam():
    result = filter_validity(ctopt.zoo.get("adamssm"), pole=0.9, zero=0.9)
    assert result.ok
    assert filter_validity(ctopt.zoo.get("adamssm"), zero=0.9999).failed[0].startswith(
        "v: nonnegative impulse response: zero <= Max(beta2, pole)")


def test_latex_rendering():
    result = filter_validity(ctopt.zoo.get("adamssm"))
    assert result._repr_latex_().startswith("$")
    assert result.proof._repr_latex_().startswith("$")
