"""Plots: the drawn data equals the analysis results (not merely 'no crash'), and every plot
returns one :class:`ctopt.plot.Plot`."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ctopt  # noqa: E402
import ctopt.plot as cplot  # noqa: E402
from ctopt.analysis.loops import closed_loop  # noqa: E402
from ctopt.analysis.transfer import transfer_function  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _line(ax, label):
    return next(line for line in ax.get_lines() if line.get_label() == label)


def test_bode_magnitude_and_phase_are_the_frequency_response():
    tf = transfer_function(ctopt.zoo.get("adamssm"), output="v", input="g**2")
    w = np.linspace(0.01, 3.0, 50)
    mag, phase = cplot.bode(tf, w=w, beta2=0.9).axes
    resp = tf.frequency_response(w, beta2=0.9)
    (line,) = mag.get_lines()
    assert np.allclose(line.get_xdata(), w)
    assert np.allclose(line.get_ydata(), 20 * np.log10(np.abs(resp)))
    assert np.allclose(phase.get_lines()[0].get_ydata(), np.degrees(np.unwrap(np.angle(resp))))


def test_bode_sweep_overlays_one_curve_per_value_on_a_given_axes():
    fig, ax = plt.subplots()
    d = ctopt.zoo.get("adam")
    w = np.array([0.1, 1.0])
    drawn = cplot.bode(d, output="v", input="g**2", w=w, sweep={"beta2": [0.9, 0.99, 0.999]},
                       ax=ax)
    assert drawn.axes == (ax,)
    tf = transfer_function(d, output="v", input="g**2")
    for b2, line in zip([0.9, 0.99, 0.999], ax.get_lines(), strict=True):
        assert line.get_label() == f"beta2={b2:g}"
        assert np.allclose(line.get_ydata(),
                           20 * np.log10(np.abs(tf.frequency_response(w, beta2=b2))))


def test_pole_zero_markers_sit_at_the_poles_and_zeros():
    ax = cplot.pole_zero(ctopt.zoo.get("adamssm"), output="v", beta2=0.95, pole=0.5, zero=0.8).ax
    poles = _line(ax, "poles")
    zeros = _line(ax, "zeros")
    assert sorted(poles.get_xdata()) == pytest.approx([0.5, 0.95])
    assert np.allclose(poles.get_ydata(), 0)
    assert sorted(zeros.get_xdata()) == pytest.approx([0.0, 0.8])
    circle = _line(ax, "unit circle")
    assert np.allclose(np.hypot(circle.get_xdata(), circle.get_ydata()), 1)


def test_pole_zero_of_a_closed_loop_shows_its_eigenvalues():
    loop = closed_loop(ctopt.zoo.get("heavy_ball"), dampening=0, weight_decay=0)
    values = dict(h=2.0, lr=0.3, momentum=0.6)
    ax = cplot.pole_zero(loop, **values).ax
    poles = _line(ax, "poles")
    got = np.sort_complex(poles.get_xdata() + 1j * poles.get_ydata())
    assert np.allclose(got, np.sort_complex(loop.eigenvalues(**values)))


@pytest.mark.parametrize("kind", ["impulse", "step_response"])
def test_time_responses_are_the_closed_forms(kind):
    d = ctopt.zoo.get("heavy_ball")
    tf = transfer_function(d, output="buf", input="g")
    values = dict(momentum=0.7, dampening=0.2)
    ax = getattr(cplot, kind)(d, output="buf", n=15, **values).ax
    (line,) = ax.get_lines()
    form = (tf.impulse_response if kind == "impulse" else tf.step_response)()
    expected = [float(form.subs({s: values[s.name] for s in form.free_symbols
                                 if s.name in values}).subs(ctopt.k, k)) for k in range(1, 16)]
    assert np.allclose(line.get_xdata(), np.arange(1, 16))
    assert np.allclose(line.get_ydata(), expected)


def test_step_sweep_draws_bias_corrections():
    ax = cplot.step_response(ctopt.zoo.get("adam"), output="v", n=5, sweep={"beta2": [0.5, 0.9]}).ax
    for b2, line in zip([0.5, 0.9], ax.get_lines(), strict=True):
        assert np.allclose(line.get_ydata(), 1 - b2 ** np.arange(1, 6))


def test_root_locus_points_are_closed_loop_poles_and_exit_is_marked():
    loop = closed_loop(ctopt.zoo.get("heavy_ball"), dampening=0, weight_decay=0)
    h = np.linspace(0.0, 20.0, 201)
    values = dict(lr=0.5, momentum=0.5)
    ax = cplot.root_locus(loop, h=h, **values).ax
    offsets = ax.collections[0].get_offsets()
    i = 37
    expected = np.sort_complex(loop.eigenvalues(h=h[i], **values))
    got = offsets[2 * i:2 * i + 2, 0] + 1j * offsets[2 * i:2 * i + 2, 1]
    assert np.allclose(np.sort_complex(got), expected)
    # heavy ball leaves the unit circle at lr*h = 2*(1 + momentum)
    exit_line = next(li for li in ax.get_lines() if li.get_label().startswith("leaves"))
    h_exit = float(exit_line.get_label().split("=")[1])
    assert h_exit == pytest.approx(2 * 1.5 / 0.5, rel=1e-3)
    assert np.hypot(exit_line.get_xdata()[0], exit_line.get_ydata()[0]) == pytest.approx(1, 1e-6)


def test_root_locus_accepts_a_design_and_an_axes():
    fig, ax = plt.subplots()
    out = cplot.root_locus(ctopt.zoo.get("adam"), h=np.linspace(0, 1, 11), ax=ax, r=0.1)
    assert out.axes == (ax,) and out.figure is fig
    assert len(ax.collections[0].get_offsets()) == 22


def test_region_shading_is_the_eigenvalue_grid_and_boundary_is_drawn():
    loop = closed_loop(ctopt.zoo.get("heavy_ball"), dampening=0, weight_decay=0)
    lrs = np.linspace(0.05, 5.0, 25)
    mus = np.linspace(0.0, 0.95, 20)
    ax = cplot.region(loop, ("lr", lrs), ("momentum", mus), h=1.0).ax
    shaded = np.asarray(ax.collections[0].get_array()).reshape(len(mus), len(lrs))
    expected = np.array([[loop.spectral_radius(h=1.0, lr=a, momentum=b) < 1 for a in lrs]
                         for b in mus])
    assert np.array_equal(shaded.astype(bool), expected)
    # Goh, "Why Momentum Really Works" (Distill, 2017): stable iff 0 < lr*h < 2*(1 + momentum)
    analytic = (lrs[None, :] < 2 * (1 + mus[:, None]))
    assert np.array_equal(expected, analytic)
    pytest.importorskip("ctopt.analysis.stability")
    assert len(ax.collections) >= 2, "analytic boundary contour missing"
    vertices = np.concatenate([p.vertices for p in ax.collections[1].get_paths()])
    inner = vertices[(vertices[:, 1] > mus[0]) & (vertices[:, 1] < mus[-1])]
    assert inner.size
    assert np.all(np.abs(inner[:, 0] - 2 * (1 + inner[:, 1])) <= lrs[1] - lrs[0] + 1e-9)


def test_trajectories_are_the_oracle():
    d = ctopt.zoo.get("heavy_ball")
    values = dict(lr=0.1, momentum=0.8)
    ax = cplot.trajectories(d, h=3.0, x0=2.0, steps=40, sweep={"momentum": [0.0, 0.8]},
                            lr=0.1).ax
    for mu, line in zip([0.0, 0.8], ax.get_lines(), strict=True):
        traj = ctopt.simulate(d, lambda x: 3.0 * x, np.array([2.0]), 40,
                              **(values | {"momentum": mu}))
        assert np.allclose(line.get_ydata(), np.abs(traj[:, 0]))
    assert ax.get_yscale() == "log"


def test_bad_system_is_refused():
    with pytest.raises(ctopt.DesignError):
        cplot.bode(42)
    with pytest.raises(ctopt.DesignError):
        cplot.root_locus("adam")
