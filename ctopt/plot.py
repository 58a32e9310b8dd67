"""Plots of a design's dynamics: Bode, pole-zero, impulse/step responses, root locus over the
curvature, stability regions, trajectories, AdamSSM's valid region and certified IQC rates.

This module only draws. The numbers come from the analysis data functions
(:mod:`ctopt.analysis.responses`, :mod:`ctopt.analysis.maps`, :func:`ctopt.analysis.iqc.
iqc_rate_curves`, :func:`ctopt.analysis.validity.adamssm_slices`, the oracle), and every plot
returns one :class:`Plot`: the figure, its axes, the artists drawn and the data they show.

Every function accepts ``ax=`` (a matplotlib ``Axes``; a new figure otherwise) and takes numeric
hyperparameters as keyword ``values`` (the design's defaults elsewhere). matplotlib and
python-control are imported only when a plot is drawn; the backend is left to matplotlib (Agg
when headless, inline in Jupyter).

Example:
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import ctopt, ctopt.plot
    >>> p = ctopt.plot.bode(ctopt.zoo.get("adam"), output="v", input="g**2")
    >>> len(p.axes), len(p.lines), p.data[0].output
    (2, 2, 'v')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

from .design import Design

__all__ = ["Plot", "adamssm_region", "bode", "impulse", "iqc_rates", "pole_zero", "region",
           "root_locus", "step_response", "trajectories"]


@dataclass(repr=False)
class Plot:
    """What a plot function drew: its ``figure``, its ``axes`` (a tuple, the main one first),
    the ``lines`` it added (Line2D, and the collections of maps and scatters) in drawing order,
    and the ``data`` they show (the analysis result; a tuple of them, one per curve, for a
    sweep).

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import ctopt, ctopt.plot
        >>> p = ctopt.plot.impulse(ctopt.zoo.get("adam"), output="v", n=3, beta2=0.5)
        >>> p
        Plot(1 axes, 1 lines, data: 1 x TimeResponse)
        >>> p.ax is p.axes[0], p.data[0].y.tolist()
        (True, [0.5, 0.25, 0.125])
    """

    figure: object
    axes: tuple
    lines: tuple
    data: object

    @property
    def ax(self):
        """The main axes."""
        return self.axes[0]

    def __repr__(self) -> str:
        data = self.data
        shown = (f"{len(data)} x {type(data[0]).__name__}" if isinstance(data, tuple) and data
                 else type(data).__name__)
        return f"Plot({len(self.axes)} axes, {len(self.lines)} lines, data: {shown})"

    def savefig(self, path, **kwargs) -> None:
        """Save the figure (``matplotlib.figure.Figure.savefig``)."""
        self.figure.savefig(path, **kwargs)


# ---------------------------------------------------------------------------------- helpers
def _axes(ax=None):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots()[1]


def _sweeps(sweep: Mapping[str, Sequence[float]] | None, values: Mapping[str, float]):
    """``(label, values)`` for every combination in ``sweep`` (one run without a sweep)."""
    if not sweep:
        return [("", dict(values))]
    names = list(sweep)
    out = []
    for combo in product(*(sweep[n] for n in names)):
        label = ", ".join(f"{n}={v:g}" for n, v in zip(names, combo, strict=True))
        out.append((label, {**values, **dict(zip(names, combo, strict=True))}))
    return out


def _unit_circle(ax) -> list:
    t = np.linspace(0, 2 * np.pi, 361)
    ax.set_aspect("equal", adjustable="datalim")
    return ax.plot(np.cos(t), np.sin(t), linestyle="--", color="0.6", linewidth=0.8,
                   label="unit circle")


# -------------------------------------------------------------------------------- frequency
def bode(system, *, output: str | None = None, input=None, w=None, sweep=None, ax=None,
         **values: float) -> Plot:
    """Magnitude (dB) and phase (degrees) of ``H(e^{jw})`` over ``w`` in ``(0, pi]``
    (:func:`ctopt.analysis.responses.frequency_response`).

    ``system`` is a TransferFunction, a ClosedLoop or a design (with ``output``/``input``).
    ``sweep={"beta2": [0.9, 0.99]}`` overlays one curve per value. ``ax`` is an Axes (magnitude
    only: ``axes`` has one entry) or a pair of Axes (magnitude, phase).

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import ctopt, ctopt.plot
        >>> p = ctopt.plot.bode(ctopt.zoo.get("adam"), output="v", sweep={"beta2": [0.9, 0.99]})
        >>> [line.get_label() for line in p.ax.get_lines()]
        ['beta2=0.9', 'beta2=0.99']
    """
    from .analysis.responses import as_transfer, frequency_response

    tf = as_transfer(system, output, input)
    if ax is None:
        import matplotlib.pyplot as plt

        _, (mag_ax, phase_ax) = plt.subplots(2, 1, sharex=True)
    elif isinstance(ax, (Sequence, np.ndarray)):
        mag_ax, phase_ax = ax
    else:
        mag_ax, phase_ax = ax, None
    lines, data = [], []
    for label, vals in _sweeps(sweep, values):
        resp = frequency_response(tf, w, **vals)
        data.append(resp)
        lines += mag_ax.semilogx(resp.w, resp.magnitude_db, label=label or None)
        if phase_ax is not None:
            lines += phase_ax.semilogx(resp.w, resp.phase_deg, label=label or None)
    mag_ax.set_ylabel("|H| (dB)")
    mag_ax.set_title(f"{tf.output} from {tf.input}")
    (phase_ax or mag_ax).set_xlabel("w (rad/step)")
    if phase_ax is not None:
        phase_ax.set_ylabel("phase (deg)")
    if sweep:
        mag_ax.legend()
    axes = (mag_ax,) if phase_ax is None else (mag_ax, phase_ax)
    return Plot(mag_ax.figure, axes, tuple(lines), tuple(data))


def pole_zero(system, *, output: str | None = None, input=None, ax=None,
              **values: float) -> Plot:
    """Poles (x) and zeros (o) in the z-plane with the unit circle
    (:func:`ctopt.analysis.responses.poles_zeros`). A ClosedLoop shows its eigenvalues; a
    TransferFunction (or a design with ``output``) its poles and zeros.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import ctopt, ctopt.plot
        >>> p = ctopt.plot.pole_zero(ctopt.zoo.get("adamssm"), output="v")
        >>> sorted(line.get_label() for line in p.lines)
        ['poles', 'unit circle', 'zeros']
    """
    from .analysis.responses import poles_zeros

    pz = poles_zeros(system, output=output, input=input, **values)
    ax = _axes(ax)
    lines = _unit_circle(ax)
    lines += ax.plot(pz.poles.real, pz.poles.imag, "x", markersize=9, color="C3", label="poles")
    if pz.zeros.size:
        lines += ax.plot(pz.zeros.real, pz.zeros.imag, "o", markersize=8,
                         markerfacecolor="none", color="C0", label="zeros")
    ax.set_xlabel("Re z")
    ax.set_ylabel("Im z")
    ax.legend(loc="best")
    return Plot(ax.figure, (ax,), tuple(lines), pz)


# ---------------------------------------------------------------------------------- time
def _time_response(kind: str, system, output, input, n: int, sweep, ax, values) -> Plot:
    from .analysis.responses import as_transfer, time_response

    tf = as_transfer(system, output, input)
    ax = _axes(ax)
    lines, data = [], []
    for label, vals in _sweeps(sweep, values):
        resp = time_response(tf, kind, n=n, **vals)
        data.append(resp)
        lines += ax.plot(resp.k, resp.y, marker="o", markersize=3, label=label or None)
    ax.set_xlabel("k")
    ax.set_ylabel(f"{tf.output}[k]")
    ax.set_title(f"{kind} response of {tf.output} to {tf.input}")
    if sweep:
        ax.legend()
    return Plot(ax.figure, (ax,), tuple(lines), tuple(data))


def impulse(system, *, output: str | None = None, input=None, n: int = 30, sweep=None, ax=None,
            **values: float) -> Plot:
    """Response ``y[k]``, ``k = 1..n``, to a unit impulse at ``k = 1`` (zero initial state).

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import ctopt, ctopt.plot
        >>> p = ctopt.plot.impulse(ctopt.zoo.get("adam"), output="v", n=3, beta2=0.5)
        >>> p.lines[0].get_ydata().tolist()
        [0.5, 0.25, 0.125]
    """
    return _time_response("impulse", system, output, input, n, sweep, ax, values)


def step_response(system, *, output: str | None = None, input=None, n: int = 30, sweep=None,
                  ax=None, **values: float) -> Plot:
    """Response ``s[k]`` to a unit step: for a moment filter, its bias correction.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import ctopt, ctopt.plot
        >>> p = ctopt.plot.step_response(ctopt.zoo.get("adam"), output="v", n=2, beta2=0.5)
        >>> p.lines[0].get_ydata().tolist()
        [0.5, 0.75]
    """
    return _time_response("step", system, output, input, n, sweep, ax, values)


# ------------------------------------------------------------------------ closed-loop maps
def root_locus(system, *, h=None, curvature: str = "h", ax=None, **values: float) -> Plot:
    """Closed-loop poles as the curvature grows over the grid ``h`` (colour: h), the
    unit circle, and a marker where the poles first leave it, labelled with that curvature
    (:func:`ctopt.analysis.maps.root_locus`).

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import numpy as np, ctopt, ctopt.plot
        >>> p = ctopt.plot.root_locus(ctopt.zoo.get("sgd"), h=np.linspace(0, 30, 301), lr=0.1)
        >>> p.lines[-1].get_label(), round(p.data.exit, 6)
        ('leaves at h=20', 20.0)
    """
    from .analysis.maps import root_locus as locus_of

    locus = locus_of(system, h, curvature=curvature, **values)
    ax = _axes(ax)
    lines = _unit_circle(ax)
    n_poles = locus.poles.shape[1]
    points = ax.scatter(locus.poles.real.ravel(), locus.poles.imag.ravel(),
                        c=np.repeat(locus.curvatures, n_poles), s=6, cmap="viridis",
                        label="poles")
    lines.append(points)
    if locus.exit is not None:
        lines += ax.plot([locus.exit_pole.real], [locus.exit_pole.imag], "D", color="C3",
                         markersize=8, label=f"leaves at {locus.name}={locus.exit:.4g}")
    ax.set_xlabel("Re z")
    ax.set_ylabel("Im z")
    ax.set_title(f"closed-loop poles of {locus.title}")
    ax.figure.colorbar(points, ax=ax, label=locus.name)
    ax.legend(loc="best")
    return Plot(ax.figure, (ax,), tuple(lines), locus)


def region(system, x: tuple[str, Sequence[float]], y: tuple[str, Sequence[float]], *,
           curvature: str = "h", analytic: bool = True, point: tuple[float, float] | None = None,
           ax=None, **values: float) -> Plot:
    """The stability region (spectral radius < 1) in the plane of two parameters, shaded from a
    numeric eigenvalue grid; where :func:`ctopt.analysis.stability_conditions` succeeds its
    analytic boundary is drawn over it (black contour). The data is
    :func:`ctopt.analysis.maps.stability_map`.

    ``x``/``y`` are ``(name, grid values)``; every other parameter comes from ``values`` (the
    design's defaults for hyperparameters; the curvature ``h`` and frozen factors must be given).
    ``point=(x, y)`` marks one point (a red star labelled "these values").

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import numpy as np, ctopt, ctopt.plot
        >>> hb = ctopt.closed_loop(ctopt.zoo.get("heavy_ball"), dampening=0, weight_decay=0)
        >>> p = ctopt.plot.region(hb, ("lr", np.linspace(0.01, 5, 40)),
        ...                       ("momentum", np.linspace(0, 0.99, 30)), h=1.0)
        >>> p.lines[0].get_array().shape, p.data.stable.shape
        ((30, 40), (30, 40))
    """
    from .analysis.maps import stability_map

    grid = stability_map(system, x, y, curvature=curvature, analytic=analytic, **values)
    X, Y = grid.mesh
    ax = _axes(ax)
    lines = [ax.pcolormesh(X, Y, grid.stable.astype(float), shading="auto", cmap="Greens",
                           vmin=0, vmax=1.6)]
    holds = grid.analytic
    if holds is not None and holds.any() and not holds.all():
        lines.append(ax.contour(X, Y, holds.astype(float), levels=[0.5], colors="k",
                                linewidths=1.2))
    if point is not None:
        lines += ax.plot([point[0]], [point[1]], "r*", ms=12, label="these values")
    ax.set_xlabel(grid.x_name)
    ax.set_ylabel(grid.y_name)
    ax.set_title("stable (shaded): spectral radius < 1")
    return Plot(ax.figure, (ax,), tuple(lines), grid)


def trajectories(design: Design, *, h: float = 1.0, grad_fn: Callable | None = None,
                 x0: float | Sequence[float] = 1.0, steps: int = 100, sweep=None,
                 log: bool = True, ax=None, **values: float) -> Plot:
    """``|theta_k|`` from the float64 oracle on ``f = h*theta**2/2`` (or ``grad_fn``),
    one curve per ``sweep`` combination (the first coordinate when ``x0`` is a vector); the data
    is the oracle's trajectories, one ``(steps + 1, dim)`` array per curve.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import ctopt, ctopt.plot
        >>> p = ctopt.plot.trajectories(ctopt.zoo.get("sgd"), steps=2, lr=0.5, log=False)
        >>> p.lines[0].get_ydata().tolist()
        [1.0, 0.5, 0.25]
    """
    from .oracle import simulate

    grad = grad_fn if grad_fn is not None else (lambda x: h * x)
    ax = _axes(ax)
    lines, data = [], []
    for label, vals in _sweeps(sweep, values):
        traj = simulate(design, grad, np.atleast_1d(np.asarray(x0, dtype=float)), steps, **vals)
        data.append(traj)
        lines += ax.plot(np.arange(steps + 1), np.abs(traj[:, 0]), label=label or None)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("|theta_k|")
    ax.set_title(f"{design.name} on f = {h:g}*theta**2/2" if grad_fn is None else design.name)
    if sweep:
        ax.legend()
    return Plot(ax.figure, (ax,), tuple(lines), tuple(data))


def sharpness(monitor, *, ax=None) -> Plot:
    """A :class:`ctopt.SharpnessMonitor`'s measured preconditioned sharpness against step, with
    the predicted critical sharpness as a dashed line; the data is the monitor's history.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import torch, ctopt, ctopt.plot
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> mon = ctopt.SharpnessMonitor(torch.optim.SGD([w], lr=0.1), lambda: (w**2).sum(),
        ...                              progress=False)
        >>> _ = mon.measure()
        >>> p = ctopt.plot.sharpness(mon)
        >>> len(p.lines), p.lines[1].get_ydata().tolist()
        (2, [20.0])
    """
    ax = _axes(ax)
    history = tuple(monitor.history)
    steps = [m.step for m in history]
    lines = ax.plot(steps, [m.sharpness for m in history], marker=".",
                    label=r"$\lambda_{\max}(D^{-1}H)$")
    lines += ax.plot(steps, [m.critical for m in history], linestyle="--", color="k",
                     label=f"critical sharpness ({monitor.threshold.kind})")
    ax.set_xlabel("step")
    ax.set_ylabel("preconditioned sharpness")
    ax.set_title(f"{monitor.design.name}: edge of stability")
    ax.legend()
    return Plot(ax.figure, (ax,), tuple(lines), history)


# ------------------------------------------------------------------------ special figures
def adamssm_region(design: Design, beta2_values=(0.9, 0.99, 0.999),
                   resolution: int = 301) -> Plot:
    """Slices of AdamSSM's valid region in the (pole, zero) plane, one panel per ``beta2``
    (:func:`ctopt.analysis.validity.adamssm_slices`).

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import ctopt, ctopt.plot
        >>> p = ctopt.plot.adamssm_region(ctopt.zoo.get("adamssm"), (0.99,), resolution=21)
        >>> len(p.axes), p.data.inside.shape
        (1, (1, 21, 21))
    """
    import matplotlib.pyplot as plt

    from .analysis.validity import adamssm_slices

    slices = adamssm_slices(design, beta2_values, resolution)
    pole, zero = np.meshgrid(slices.pole, slices.zero)
    fig, axes = plt.subplots(1, len(slices.beta2), figsize=(4 * len(slices.beta2), 3.6),
                             squeeze=False, sharey=True)
    lines = []
    for ax, b2, inside in zip(axes[0], slices.beta2, slices.inside, strict=True):
        lines.append(ax.contourf(pole, zero, inside.astype(float), levels=[-0.5, 0.5, 1.5],
                                 colors=["#f4c7c3", "#b7e1cd"]))
        lines += ax.plot([0, 1], [b2, b2], "k--", lw=0.8)
        lines += ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(f"beta2 = {b2:g}")
        ax.set_xlabel("pole")
    axes[0][0].set_ylabel("zero")
    fig.suptitle("AdamSSM second-moment filter: valid (green) iff zero <= max(beta2, pole)")
    fig.tight_layout()
    return Plot(fig, tuple(axes[0]), tuple(lines), slices)


def iqc_rates(kappas=(2, 5, 10, 20, 50, 100), *, iqc=("sector", "off_by_one"), tol=1e-4,
              ax=None) -> Plot:
    """Certified rate against the condition number for gradient descent (``alpha = 2/(L+m)``)
    and Nesterov's standard tuning, with the analytic references
    (:func:`ctopt.analysis.iqc.iqc_rate_curves`).

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import ctopt.plot
        >>> p = ctopt.plot.iqc_rates(kappas=(10,), tol=1e-2)
        >>> len(p.lines)
        5
    """
    from .analysis.iqc import iqc_rate_curves

    curves = iqc_rate_curves(kappas, iqc=iqc, tol=tol)
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.subplots(figsize=(5.5, 3.8))[1]
    k = curves.kappa
    lines = ax.semilogx(k, curves.gradient_descent, "o-", label="GD, alpha = 2/(L+m): IQC")
    lines += ax.semilogx(k, curves.gradient_descent_exact, "k:", label="(kappa-1)/(kappa+1)")
    lines += ax.semilogx(k, curves.nesterov, "s-", label="Nesterov standard: IQC")
    lines += ax.semilogx(k, curves.nesterov_reference, "k--", label="sqrt(1 - 1/sqrt(kappa))")
    lines += ax.semilogx(k, curves.nesterov_quadratic, "k-.",
                         label="1 - 1/sqrt(kappa) (quadratics)")
    ax.set_xlabel("condition number kappa")
    ax.set_ylabel("certified rate rho")
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return Plot(ax.figure, (ax,), tuple(lines), curves)


# ----------------------------------------------------------- panels of the live explorer
def _magnitudes(ax, curves: Mapping[str, tuple]) -> list:
    """Bode magnitudes ``name -> (w, |H| in dB)`` on one axes (:mod:`ctopt.explore`)."""
    lines = []
    for name, (w, mag) in curves.items():
        lines += ax.semilogx(w, mag, label=f"H_{name}")
    ax.set(xlabel="frequency (rad/step)", ylabel="|H| (dB)", title="Bode magnitude")
    if curves:
        ax.legend(fontsize=8)
    return lines


def _poles_and_zeros(ax, poles: Mapping[str, np.ndarray], zeros: Mapping[str, np.ndarray],
                     loop_poles=None) -> list:
    """Poles (x) and zeros (o) of several filters, and a closed loop's poles (+)."""
    t = np.linspace(0, 2 * np.pi, 200)
    lines = ax.plot(np.cos(t), np.sin(t), "k:", lw=0.8)
    for i, name in enumerate(poles):
        p, zr = poles[name], zeros[name]
        lines += ax.plot(p.real, p.imag, "x", color=f"C{i}", ms=9, label=f"poles of H_{name}")
        lines += ax.plot(zr.real, zr.imag, "o", mfc="none", color=f"C{i}", ms=8)
    if loop_poles is not None:
        lp = np.asarray(loop_poles)
        lines += ax.plot(lp.real, lp.imag, "+", color="k", ms=11, label="closed loop")
    ax.set(aspect="equal", title="poles (x), zeros (o)", xlabel="Re", ylabel="Im")
    ax.legend(fontsize=7, loc="lower left")
    return lines


def _mask(ax, grid, point, labels, title: str) -> list:
    """A boolean region ``(X, Y, mask)`` shaded green, with the current point as a star."""
    X, Y, mask = grid
    lines = [ax.contourf(X, Y, mask.astype(float), levels=[-0.5, 0.5, 1.5],
                         colors=["#f4c7c3", "#b7e1cd"])]
    lines += ax.plot(*point, "k*", ms=12)
    ax.set(xlabel=labels[0], ylabel=labels[1], title=f"{title} (green)")
    return lines


def _note(ax, text: str) -> None:
    """A panel with nothing to draw but a sentence."""
    ax.text(0.5, 0.5, text, ha="center", transform=ax.transAxes)

