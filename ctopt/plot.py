"""Plots of a design's dynamics: Bode, pole-zero, impulse/step, root locus over the curvature,
stability regions and trajectories.

Every function accepts ``ax=`` (a matplotlib ``Axes``; a new figure otherwise), takes numeric
hyperparameters as keyword ``values`` (the design's defaults elsewhere) and returns the axes it
drew on, so that a notebook cell shows the figure and a test can read the plotted data.
matplotlib and python-control are imported only when a plot is drawn; the backend is left to
matplotlib (Agg when headless, inline in Jupyter).

Example:
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import ctopt, ctopt.plot
    >>> mag, phase = ctopt.plot.bode(ctopt.zoo.get("adam"), output="v", input="g**2")
    >>> len(mag.get_lines())
    1
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import product

import numpy as np

from .design import Design
from .errors import DesignError

__all__ = ["bode", "impulse", "pole_zero", "region", "root_locus", "step", "trajectories"]


# ---------------------------------------------------------------------------------- helpers
def _axes(ax=None):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots()[1]


def _transfer(system, output: str | None, input) -> object:
    from .analysis.loops import ClosedLoop
    from .analysis.transfer import TransferFunction, transfer_function

    if isinstance(system, TransferFunction):
        return system
    if isinstance(system, ClosedLoop):
        return system.transfer_function()
    if isinstance(system, Design):
        return transfer_function(system, output=output, input=input)
    raise DesignError(f"expected a design, a TransferFunction or a ClosedLoop, not {system!r}")


def _loop(system, curvature: str = "h"):
    from .analysis.loops import ClosedLoop, closed_loop

    if isinstance(system, ClosedLoop):
        return system
    if isinstance(system, Design):
        return closed_loop(system, curvature=curvature)
    raise DesignError(f"expected a design or a ClosedLoop, not {system!r}")


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


def _unit_circle(ax) -> None:
    t = np.linspace(0, 2 * np.pi, 361)
    ax.plot(np.cos(t), np.sin(t), linestyle="--", color="0.6", linewidth=0.8, label="unit circle")
    ax.set_aspect("equal", adjustable="datalim")


# -------------------------------------------------------------------------------- frequency
def bode(system, *, output: str | None = None, input=None, w=None, sweep=None, ax=None,
         **values: float):
    """Magnitude (dB) and phase (degrees) of ``H(e^{jw})`` over ``w`` in ``(0, pi]``.

    ``system`` is a TransferFunction, a ClosedLoop or a design (with ``output``/``input``).
    ``sweep={"beta2": [0.9, 0.99]}`` overlays one curve per value. ``ax`` is an Axes (magnitude
    only) or a pair of Axes. Returns ``(magnitude_axes, phase_axes_or_None)``.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import ctopt, ctopt.plot
        >>> mag, _ = ctopt.plot.bode(ctopt.zoo.get("adam"), output="v", sweep={"beta2": [0.9, 0.99]})
        >>> [line.get_label() for line in mag.get_lines()]
        ['beta2=0.9', 'beta2=0.99']
    """
    tf = _transfer(system, output, input)
    w = np.logspace(-3, np.log10(np.pi), 400) if w is None else np.asarray(w, dtype=float)
    if ax is None:
        import matplotlib.pyplot as plt

        _, (mag_ax, phase_ax) = plt.subplots(2, 1, sharex=True)
    elif isinstance(ax, (Sequence, np.ndarray)):
        mag_ax, phase_ax = ax
    else:
        mag_ax, phase_ax = ax, None
    for label, vals in _sweeps(sweep, values):
        resp = tf.frequency_response(w, **vals)
        mag_ax.semilogx(w, 20 * np.log10(np.abs(resp)), label=label or None)
        if phase_ax is not None:
            phase_ax.semilogx(w, np.degrees(np.unwrap(np.angle(resp))), label=label or None)
    mag_ax.set_ylabel("|H| (dB)")
    mag_ax.set_title(f"{tf.output} from {tf.input}")
    (phase_ax or mag_ax).set_xlabel("w (rad/step)")
    if phase_ax is not None:
        phase_ax.set_ylabel("phase (deg)")
    if sweep:
        mag_ax.legend()
    return mag_ax, phase_ax


def pole_zero(system, *, output: str | None = None, input=None, ax=None, **values: float):
    """Poles (x) and zeros (o) in the z-plane with the unit circle. A ClosedLoop shows its
    eigenvalues; a TransferFunction (or a design with ``output``) its poles and zeros.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import ctopt, ctopt.plot
        >>> ax = ctopt.plot.pole_zero(ctopt.zoo.get("adamssm"), output="v")
        >>> sorted(line.get_label() for line in ax.get_lines())
        ['poles', 'unit circle', 'zeros']
    """
    from .analysis.loops import ClosedLoop

    ax = _axes(ax)
    _unit_circle(ax)
    if isinstance(system, ClosedLoop):
        poles, zeros = system.eigenvalues(**values), np.array([])
    else:
        tf = _transfer(system, output, input)
        num, den = tf.numeric(**values)
        poles, zeros = np.roots(den), np.roots(num)
    ax.plot(poles.real, poles.imag, "x", markersize=9, color="C3", label="poles")
    if zeros.size:
        ax.plot(zeros.real, zeros.imag, "o", markersize=8, markerfacecolor="none", color="C0",
                label="zeros")
    ax.set_xlabel("Re z")
    ax.set_ylabel("Im z")
    ax.legend(loc="best")
    return ax


# ---------------------------------------------------------------------------------- time
def _time_response(kind: str, system, output, input, n: int, sweep, ax, values):
    import control

    tf = _transfer(system, output, input)
    ax = _axes(ax)
    steps = np.arange(1, n + 1)
    for label, vals in _sweeps(sweep, values):
        sys = tf.to_control(**vals)
        fn = control.impulse_response if kind == "impulse" else control.step_response
        y = np.asarray(fn(sys, T=np.arange(n)).outputs, dtype=float).ravel()
        ax.plot(steps, y, marker="o", markersize=3, label=label or None)
    ax.set_xlabel("k")
    ax.set_ylabel(f"{tf.output}[k]")
    ax.set_title(f"{kind} response of {tf.output} to {tf.input}")
    if sweep:
        ax.legend()
    return ax


def impulse(system, *, output: str | None = None, input=None, n: int = 30, sweep=None, ax=None,
            **values: float):
    """Response ``h[k]``, ``k = 1..n``, to a unit impulse at ``k = 1`` (zero initial state).

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import ctopt, ctopt.plot
        >>> ax = ctopt.plot.impulse(ctopt.zoo.get("adam"), output="v", n=3, beta2=0.5)
        >>> ax.get_lines()[0].get_ydata().tolist()
        [0.5, 0.25, 0.125]
    """
    return _time_response("impulse", system, output, input, n, sweep, ax, values)


def step(system, *, output: str | None = None, input=None, n: int = 30, sweep=None, ax=None,
         **values: float):
    """Response ``s[k]`` to a unit step: for a moment filter, its bias correction.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import ctopt, ctopt.plot
        >>> ax = ctopt.plot.step(ctopt.zoo.get("adam"), output="v", n=2, beta2=0.5)
        >>> ax.get_lines()[0].get_ydata().tolist()
        [0.5, 0.75]
    """
    return _time_response("step", system, output, input, n, sweep, ax, values)


# ------------------------------------------------------------------------ closed-loop maps
def root_locus(system, *, h=None, curvature: str = "h", ax=None, **values: float):
    """Closed-loop poles as the curvature ``h`` grows (colour: h), the unit circle, and a marker
    where the poles first leave it (labelled with that h).

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import numpy as np, ctopt, ctopt.plot
        >>> ax = ctopt.plot.root_locus(ctopt.zoo.get("sgd"), h=np.linspace(0, 30, 301), lr=0.1)
        >>> [line.get_label() for line in ax.get_lines()][-1]
        'leaves at h=20'
    """
    loop = _loop(system, curvature)
    h = np.linspace(0.0, 10.0, 501) if h is None else np.asarray(h, dtype=float)
    matrices = loop.lambdify(loop.curvature.name)
    eig = np.linalg.eigvals(matrices(h, **values))  # (len(h), n)
    ax = _axes(ax)
    _unit_circle(ax)
    hh = np.repeat(h, eig.shape[1])
    points = ax.scatter(eig.real.ravel(), eig.imag.ravel(), c=hh, s=6, cmap="viridis",
                        label="poles")
    radius = np.abs(eig).max(axis=1)
    inside = radius <= 1
    crossings = np.flatnonzero(inside[:-1] & ~inside[1:])
    if crossings.size:
        h_exit = _bisect_exit(matrices, h[crossings[0]], h[crossings[0] + 1], values)
        at_exit = np.linalg.eigvals(matrices(np.array([h_exit]), **values)[0])
        j = np.argmax(np.abs(at_exit))
        ax.plot([at_exit[j].real], [at_exit[j].imag], "D", color="C3", markersize=8,
                label=f"leaves at h={h_exit:.4g}")
    ax.set_xlabel("Re z")
    ax.set_ylabel("Im z")
    ax.set_title(f"closed-loop poles of {loop.design.name if loop.design else 'the loop'}")
    ax.figure.colorbar(points, ax=ax, label=loop.curvature.name)
    ax.legend(loc="best")
    return ax


def _bisect_exit(matrices, lo: float, hi: float, values, iterations: int = 60) -> float:
    """The curvature in ``[lo, hi]`` where the spectral radius crosses 1."""
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        radius = np.abs(np.linalg.eigvals(matrices(np.array([mid]), **values)[0])).max()
        lo, hi = (mid, hi) if radius <= 1 else (lo, mid)
    return 0.5 * (lo + hi)


def region(system, x: tuple[str, Sequence[float]], y: tuple[str, Sequence[float]], *,
           curvature: str = "h", analytic: bool = True, ax=None, **values: float):
    """The stability region (spectral radius < 1) in the plane of two parameters, shaded from a
    numeric eigenvalue grid; where :func:`ctopt.analysis.stability_conditions` succeeds its
    analytic boundary is drawn over it (black contour).

    ``x``/``y`` are ``(name, grid values)``; every other parameter comes from ``values`` (the
    design's defaults for hyperparameters; the curvature ``h`` and frozen factors must be given).

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import numpy as np, ctopt, ctopt.plot
        >>> hb = ctopt.closed_loop(ctopt.zoo.get("heavy_ball"), dampening=0, weight_decay=0)
        >>> ax = ctopt.plot.region(hb, ("lr", np.linspace(0.01, 5, 40)),
        ...                        ("momentum", np.linspace(0, 0.99, 30)), h=1.0)
        >>> ax.collections[0].get_array().shape
        (30, 40)
    """
    loop = _loop(system, curvature)
    (xname, xs), (yname, ys) = x, y
    X, Y = np.meshgrid(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float))
    mats = loop.lambdify(xname, yname)(X, Y, **values)
    radius = np.abs(np.linalg.eigvals(mats)).max(axis=-1)
    stable = radius < 1
    ax = _axes(ax)
    ax.pcolormesh(X, Y, stable.astype(float), shading="auto", cmap="Greens", vmin=0, vmax=1.6)
    if analytic:
        holds = _analytic_region(loop, xname, yname, X, Y, values)
        if holds is not None and holds.any() and not holds.all():
            ax.contour(X, Y, holds.astype(float), levels=[0.5], colors="k", linewidths=1.2)
    ax.set_xlabel(xname)
    ax.set_ylabel(yname)
    ax.set_title("stable (shaded): spectral radius < 1")
    return ax


def _analytic_region(loop, xname: str, yname: str, X, Y, values) -> np.ndarray | None:
    """The analytic stability conditions evaluated on the grid (None when unavailable)."""
    try:
        from .analysis.stability import stability_conditions
    except ImportError:
        return None
    names = {s.name for s in loop.parameters}
    fixed = {n: v for n, v in values.items() if n in names and n not in (xname, yname)}
    if loop.design is not None:
        fixed |= {n: v for n, v in loop.design.defaults.items()
                  if n in names and n not in fixed and n not in (xname, yname)}
    try:
        import sympy as sp

        exact = {n: sp.nsimplify(v, rational=True) for n, v in fixed.items()}
        cond = stability_conditions(loop.subs(**exact))
        return np.broadcast_to(np.asarray(cond.holds(**{xname: X, yname: Y}), dtype=bool),
                               X.shape)
    except Exception:  # noqa: BLE001 - the numeric shading stands on its own
        return None


def trajectories(design: Design, *, h: float = 1.0, grad_fn: Callable | None = None,
                 x0: float | Sequence[float] = 1.0, steps: int = 100, sweep=None,
                 log: bool = True, ax=None, **values: float):
    """``|theta_k|`` from the float64 oracle on ``f = h*theta**2/2`` (or ``grad_fn``), one curve
    per ``sweep`` combination (the first coordinate when ``x0`` is a vector).

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import ctopt, ctopt.plot
        >>> ax = ctopt.plot.trajectories(ctopt.zoo.get("sgd"), steps=2, lr=0.5, log=False)
        >>> ax.get_lines()[0].get_ydata().tolist()
        [1.0, 0.5, 0.25]
    """
    from .oracle import simulate

    grad = grad_fn if grad_fn is not None else (lambda x: h * x)
    ax = _axes(ax)
    for label, vals in _sweeps(sweep, values):
        traj = simulate(design, grad, np.atleast_1d(np.asarray(x0, dtype=float)), steps, **vals)
        ax.plot(np.arange(steps + 1), np.abs(traj[:, 0]), label=label or None)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("|theta_k|")
    ax.set_title(f"{design.name} on f = {h:g}*theta**2/2" if grad_fn is None else design.name)
    if sweep:
        ax.legend()
    return ax
