"""The data behind the plots (analysis.maps, analysis.responses, the IQC rate curves) against
brute force and closed forms, and the one result type every plot returns."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import ctopt  # noqa: E402
import ctopt.plot as cplot  # noqa: E402
from ctopt.analysis.maps import (  # noqa: E402
    boundary,
    radius_curve,
    root_locus,
    stability_map,
)
from ctopt.analysis.responses import frequency_response, poles_zeros, time_response  # noqa: E402

HB = ctopt.closed_loop(ctopt.zoo.get("heavy_ball"), dampening=0, weight_decay=0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@settings(max_examples=25, deadline=None)
@given(lr=st.floats(0.05, 2.0), momentum=st.floats(0.0, 0.95))
def test_bisected_exit_is_the_first_unstable_point_of_a_brute_force_radius_grid(lr, momentum):
    grid = np.linspace(0.0, 3 * 2 * (1 + momentum) / lr, 601)
    brute = np.array([HB.spectral_radius(h=float(x), lr=lr, momentum=momentum) for x in grid])
    first_out = grid[np.argmax(brute > 1)]
    locus = root_locus(HB, grid, lr=lr, momentum=momentum)
    step = grid[1] - grid[0]
    # the exit lies in the grid interval where the brute-force radius first exceeds 1 (up to
    # rounding: the boundary can fall on a grid point, where the radius is 1 to machine precision)
    assert first_out - step - 1e-12 <= locus.exit <= first_out + 1e-12
    # heavy ball leaves the unit circle at lr*h = 2*(1 + momentum) (Goh, Distill 2017)
    assert locus.exit == pytest.approx(2 * (1 + momentum) / lr, rel=1e-9)
    assert abs(locus.exit_pole) == pytest.approx(1, abs=1e-6)
    assert np.allclose(locus.radius, brute, atol=1e-12)


def test_root_locus_poles_are_the_eigenvalues_and_a_stable_loop_has_no_exit():
    grid = np.linspace(0.0, 2.0, 21)
    locus = root_locus(HB, grid, lr=0.5, momentum=0.5)
    for x, poles in zip(grid, locus.poles, strict=True):
        expected = np.sort_complex(HB.eigenvalues(h=float(x), lr=0.5, momentum=0.5))
        assert np.allclose(np.sort_complex(poles), expected)
    assert locus.exit is None and locus.exit_pole is None


def test_boundary_and_radius_curve_agree_with_the_closed_form():
    lr, momentum = 0.3, 0.4
    exact = 2 * (1 + momentum) / lr
    assert boundary(HB, "h", 0.0, 2 * exact, lr=lr, momentum=momentum) == pytest.approx(exact,
                                                                                      rel=1e-12)
    grid = np.linspace(0.0, 1.9 * exact, 400)
    curve = radius_curve(HB, "h", grid, lr=lr, momentum=momentum)
    assert np.array_equal(curve.stable, (grid > 0) & (grid < exact))  # h = 0: radius 1, marginal
    assert curve.largest_stable == grid[grid < exact].max()
    assert radius_curve(HB, "h", [1e3, 1e4], lr=lr, momentum=momentum).largest_stable is None


def test_stability_map_is_the_radius_grid_and_the_jury_region():
    lrs = np.linspace(0.05, 5.0, 21)
    mus = np.linspace(0.0, 0.95, 17)
    m = stability_map(HB, ("lr", lrs), ("momentum", mus), h=1.0)
    assert m.radius.shape == (17, 21)
    brute = np.array([[HB.spectral_radius(h=1.0, lr=a, momentum=b) for a in lrs] for b in mus])
    assert np.allclose(m.radius, brute, atol=1e-12)
    # away from the boundary lr = 2(1 + momentum) the Jury region is the numeric one
    clear = np.abs(lrs[None, :] - 2 * (1 + mus[:, None])) > 1e-6
    assert np.array_equal(m.analytic[clear], m.stable[clear])
    assert stability_map(HB, ("lr", lrs), ("momentum", mus), h=1.0, analytic=False).analytic is None


def test_responses_are_the_transfer_function():
    adam = ctopt.zoo.get("adam")
    tf = ctopt.transfer_function(adam, output="v")
    w = np.linspace(0.01, 3.0, 30)
    resp = frequency_response(adam, w, output="v", beta2=0.8)
    assert np.allclose(resp.response, tf.frequency_response(w, beta2=0.8))
    assert np.allclose(10 ** (resp.magnitude_db / 20), np.abs(resp.response))
    step = time_response(adam, "step", output="v", n=6, beta2=0.8)
    assert np.allclose(step.y, 1 - 0.8 ** np.arange(1, 7))
    impulse = time_response(adam, "impulse", output="v", n=6, beta2=0.8)
    assert np.allclose(impulse.y, 0.2 * 0.8 ** np.arange(6))
    pz = poles_zeros(adam, output="v", beta2=0.8)
    assert np.allclose(pz.poles, [0.8]) and np.allclose(pz.zeros, [0.0])
    with pytest.raises(ctopt.errors.OptionError, match="impulse, step"):
        time_response(adam, "ramp", output="v")


def test_iqc_rate_curves_match_the_known_rates():
    pytest.importorskip("cvxpy")
    from ctopt.analysis.iqc import iqc_rate_curves

    c = iqc_rate_curves(kappas=(4, 25), tol=1e-4)
    assert np.allclose(c.gradient_descent, c.gradient_descent_exact, atol=2e-4)
    # no certificate beats the exact rate on quadratics, which are in every IQC's class
    assert np.all(c.nesterov >= c.nesterov_quadratic - 2e-4)
    assert np.all(c.nesterov < 1)


def _plots():
    adam, sgd = ctopt.zoo.get("adam"), ctopt.zoo.get("sgd")
    return {
        "bode": lambda: cplot.bode(adam, output="v"),
        "pole_zero": lambda: cplot.pole_zero(adam, output="v"),
        "impulse": lambda: cplot.impulse(adam, output="v", n=4),
        "step_response": lambda: cplot.step_response(adam, output="v", n=4),
        "root_locus": lambda: cplot.root_locus(sgd, h=np.linspace(0, 30, 31), lr=0.1),
        "region": lambda: cplot.region(HB, ("lr", [0.5, 3.5]), ("momentum", [0.2, 0.5]), h=1.0),
        "trajectories": lambda: cplot.trajectories(sgd, steps=3),
        "adamssm_region": lambda: cplot.adamssm_region(ctopt.zoo.get("adamssm"), (0.9,), 11),
    }


@pytest.mark.parametrize("name", sorted(_plots()))
def test_every_plot_returns_a_plot_of_what_it_drew(name):
    drawn = _plots()[name]()
    assert type(drawn) is cplot.Plot
    assert drawn.ax is drawn.axes[0] and all(ax.figure is drawn.figure for ax in drawn.axes)
    assert drawn.lines and drawn.data is not None
    owners = {id(a) for a in drawn.axes}
    assert all(id(artist.axes) in owners for artist in drawn.lines if hasattr(artist, "axes")
               and artist.axes is not None)


def test_the_plot_functions_are_exactly_those_listed():
    public = {n for n in cplot.__all__ if n != "Plot"}
    assert public == set(_plots()) | {"iqc_rates"}
