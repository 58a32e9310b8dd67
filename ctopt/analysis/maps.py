"""Numeric maps of a closed loop over its parameters: the spectral radius along one parameter, the
root locus over the curvature (with the bisected point where the poles leave the unit circle),
and the stability map over two parameters (numeric radius grid, with the analytic Jury region).

These are the data that :mod:`ctopt.plot` draws; each is a small dataclass of numpy arrays.

Example:
    >>> import numpy as np, ctopt
    >>> from ctopt.analysis.maps import root_locus
    >>> locus = root_locus(ctopt.zoo.get("sgd"), np.linspace(0, 30, 301), lr=0.1)
    >>> round(locus.exit, 6)
    20.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..design import Design
from ..errors import DesignError

__all__ = ["RadiusCurve", "RootLocus", "StabilityMap", "as_loop", "boundary", "radius_curve",
           "root_locus", "stability_map"]


def as_loop(system, curvature: str = "h"):
    """``system`` as a :class:`~ctopt.analysis.loops.ClosedLoop` (a design is closed on
    ``curvature*theta**2/2``).

    Example:
        >>> import ctopt
        >>> as_loop(ctopt.zoo.get("sgd")).curvature.name
        'h'
    """
    from .loops import ClosedLoop, closed_loop

    if isinstance(system, ClosedLoop):
        return system
    if isinstance(system, Design):
        return closed_loop(system, curvature=curvature)
    raise DesignError(f"expected a design or a ClosedLoop, not {system!r}")


def _radius(matrices) -> np.ndarray:
    return np.abs(np.linalg.eigvals(matrices)).max(axis=-1)


# ------------------------------------------------------------------------- one parameter
@dataclass(frozen=True)
class RadiusCurve:
    """The spectral radius ``radius[i]`` of the loop at ``name = grid[i]``."""

    name: str
    grid: np.ndarray
    radius: np.ndarray

    @property
    def stable(self) -> np.ndarray:
        """``radius < 1`` point by point."""
        return self.radius < 1

    @property
    def largest_stable(self) -> float | None:
        """The largest grid value where the loop is stable (None when it is stable nowhere)."""
        return float(self.grid[self.stable].max()) if self.stable.any() else None


def radius_curve(system, name: str, grid: Sequence[float], *, curvature: str = "h",
                 **values: float) -> RadiusCurve:
    """The spectral radius of the closed loop along ``name`` over ``grid`` (every other
    parameter from ``values``, hyperparameters at the design's defaults).

    Example:
        >>> import numpy as np, ctopt
        >>> c = radius_curve(ctopt.zoo.get("sgd"), "h", [1.0, 10.0, 30.0], lr=0.1)
        >>> c.radius.round(6).tolist(), c.largest_stable
        ([0.9, 0.0, 2.0], 10.0)
    """
    loop = as_loop(system, curvature)
    grid = np.asarray(grid, dtype=float)
    return RadiusCurve(name, grid, _radius(loop.lambdify(name)(grid, **values)))


def boundary(system, name: str, lo: float, hi: float, *, curvature: str = "h",
             iterations: int = 60, **values: float) -> float:
    """The value of ``name`` in ``[lo, hi]`` where the spectral radius crosses 1 (bisection;
    stable at ``lo``, unstable at ``hi``).

    Example:
        >>> import ctopt
        >>> round(boundary(ctopt.zoo.get("sgd"), "h", 10.0, 30.0, lr=0.1), 9)
        20.0
    """
    matrices = as_loop(system, curvature).lambdify(name)
    return _bisect(matrices, lo, hi, values, iterations)


def _bisect(matrices, lo: float, hi: float, values, iterations: int = 60) -> float:
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        radius = _radius(matrices(np.array([mid]), **values))[0]
        lo, hi = (mid, hi) if radius <= 1 else (lo, mid)
    return float(0.5 * (lo + hi))


# ------------------------------------------------------------------------------ root locus
@dataclass(frozen=True)
class RootLocus:
    """Closed-loop poles ``poles[i]`` at curvature ``curvatures[i]``; ``exit`` is the curvature
    where they first leave the unit circle (None when they stay inside on the grid) and
    ``exit_pole`` the largest pole there."""

    name: str
    curvatures: np.ndarray
    poles: np.ndarray
    exit: float | None
    exit_pole: complex | None
    title: str

    @property
    def radius(self) -> np.ndarray:
        """The spectral radius at each curvature."""
        return np.abs(self.poles).max(axis=1)


def root_locus(system, curvatures: Sequence[float] | None = None, *, curvature: str = "h",
               **values: float) -> RootLocus:
    """The closed-loop poles as the curvature grows over ``curvatures`` (default
    ``linspace(0, 10, 501)``), and the bisected curvature where they first leave the unit circle.

    Example:
        >>> import numpy as np, ctopt
        >>> hb = ctopt.closed_loop(ctopt.zoo.get("heavy_ball"), dampening=0, weight_decay=0)
        >>> locus = root_locus(hb, np.linspace(0, 20, 201), lr=0.5, momentum=0.5)
        >>> locus.poles.shape, round(locus.exit, 6)
        ((201, 2), 6.0)
    """
    loop = as_loop(system, curvature)
    grid = (np.linspace(0.0, 10.0, 501) if curvatures is None
            else np.asarray(curvatures, dtype=float))
    matrices = loop.lambdify(loop.curvature.name)
    poles = np.linalg.eigvals(matrices(grid, **values))
    inside = np.abs(poles).max(axis=1) <= 1
    crossings = np.flatnonzero(inside[:-1] & ~inside[1:])
    exit_at = exit_pole = None
    if crossings.size:
        exit_at = _bisect(matrices, grid[crossings[0]], grid[crossings[0] + 1], values)
        at_exit = np.linalg.eigvals(matrices(np.array([exit_at]), **values)[0])
        exit_pole = complex(at_exit[np.argmax(np.abs(at_exit))])
    title = loop.design.name if loop.design else "the loop"
    return RootLocus(loop.curvature.name, grid, poles, exit_at, exit_pole, title)


# --------------------------------------------------------------------------- two parameters
@dataclass(frozen=True)
class StabilityMap:
    """The spectral radius ``radius[j, i]`` at ``(x[i], y[j])``; ``analytic`` is the analytic
    stability region (Jury conditions) on the same grid, or None where it is unavailable."""

    x_name: str
    y_name: str
    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray
    analytic: np.ndarray | None

    @property
    def stable(self) -> np.ndarray:
        """``radius < 1`` on the grid, shape ``(len(y), len(x))``."""
        return self.radius < 1

    @property
    def mesh(self) -> tuple[np.ndarray, np.ndarray]:
        """``np.meshgrid(x, y)``."""
        return np.meshgrid(self.x, self.y)


def stability_map(system, x: tuple[str, Sequence[float]], y: tuple[str, Sequence[float]], *,
                  curvature: str = "h", analytic: bool = True, **values: float) -> StabilityMap:
    """The spectral radius over the plane of two parameters ``x = (name, grid)`` and
    ``y = (name, grid)``; with ``analytic`` also the region where
    :func:`~ctopt.analysis.stability_conditions` holds (None when those cannot be derived).

    Example:
        >>> import numpy as np, ctopt
        >>> hb = ctopt.closed_loop(ctopt.zoo.get("heavy_ball"), dampening=0, weight_decay=0)
        >>> m = stability_map(hb, ("lr", [1.0, 3.5]), ("momentum", [0.5]), h=1.0)
        >>> m.stable.tolist(), m.analytic.tolist()
        ([[True, False]], [[True, False]])
    """
    loop = as_loop(system, curvature)
    (x_name, xs), (y_name, ys) = x, y
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    X, Y = np.meshgrid(xs, ys)
    radius = _radius(loop.lambdify(x_name, y_name)(X, Y, **values))
    holds = _analytic_region(loop, x_name, y_name, X, Y, values) if analytic else None
    return StabilityMap(x_name, y_name, xs, ys, radius, holds)


def _analytic_region(loop, x_name: str, y_name: str, X, Y, values) -> np.ndarray | None:
    """The analytic stability conditions evaluated on the grid (None when unavailable)."""
    import sympy as sp

    from .stability import stability_conditions

    names = {s.name for s in loop.parameters}
    fixed = {n: v for n, v in values.items() if n in names and n not in (x_name, y_name)}
    if loop.design is not None:
        fixed |= {n: v for n, v in loop.design.defaults.items()
                  if n in names and n not in fixed and n not in (x_name, y_name)}
    try:
        exact = {n: sp.nsimplify(v, rational=True) for n, v in fixed.items()}
        cond = stability_conditions(loop.subs(**exact))
        return np.broadcast_to(np.asarray(cond.holds(**{x_name: X, y_name: Y}), dtype=bool),
                               X.shape)
    except Exception:  # noqa: BLE001 - the numeric radius grid stands on its own
        return None
