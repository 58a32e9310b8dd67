"""Convergence rates on quadratics: the worst-case spectral radius over curvatures
``h in [m, L]``, and the hyperparameters that minimise it.

On ``f(theta) = h*theta**2/2`` a linear closed loop contracts like ``rho(h)**k``, ``rho`` the
spectral radius of its state matrix. :func:`worst_case_rate` maximises ``rho`` over ``[m, L]``
(every eigen-direction of a quadratic with spectrum in ``[m, L]``); :func:`tune` minimises that
worst case over chosen hyperparameters — for gradient descent, heavy ball and Nesterov this
reproduces the tuned rates of Lessard, Recht & Packard (2016).

``rho(h)`` is evaluated exactly at the endpoints and on a dense grid, then refined by a bounded
scalar search around the largest grid value; the result says whether the maximum sits at an
endpoint (then ``.expr`` gives the closed form ``Max(rho(m), rho(L))``) or in the interior
(numeric). When the characteristic polynomial has degree 1 and is affine in ``h`` the closed
form is exact: ``rho = Max(|root(m)|, |root(L)|)`` (``|root|`` is convex in ``h``).

Example:
    >>> import sympy as sp
    >>> from ctopt.filters import z
    >>> a, h = sp.symbols("alpha h", real=True)
    >>> r = worst_case_rate(z - (1 - a * h), m=1, L=10, alpha=2 / 11)
    >>> round(r.rate, 12), r.expr
    (0.818181818182, Max(Abs(alpha - 1), Abs(10*alpha - 1)))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from ..design import Design
from ..errors import ExpressionError, HyperparameterError, MissingValuesError, OptionError
from ..limits import timed
from .proof import Proof
from .stability import characteristic_polynomial

__all__ = ["RateResult", "TuneResult", "tune", "worst_case_rate"]

GRID = 513
#: Relative tolerance within which the maximum is taken to sit at an endpoint (see above).
ENDPOINT_TOL = 1e-7


@dataclass
class RateResult:
    """Worst-case rate ``rate = max_{h in [m, L]} rho(h)`` at ``worst_curvature``."""

    rate: float
    worst_curvature: float
    m: float
    L: float
    method: str
    proof: Proof
    expr: sp.Expr | None = None
    values: dict[str, float] = field(default_factory=dict)

    def __float__(self) -> float:
        return self.rate

    def __str__(self) -> str:
        return (f"worst-case rate {self.rate:.12g} over h in [{self.m:g}, {self.L:g}] "
                f"(attained at h = {self.worst_curvature:.6g}; {self.method})")

    def _repr_latex_(self) -> str:
        closed = rf"\ = {sp.latex(self.expr)}" if self.expr is not None else ""
        return (rf"$\max_{{h \in [{self.m:g}, {self.L:g}]}} \rho(h){closed} = {self.rate:.10g}"
                rf"\ \text{{({self.method})}}$")


@dataclass
class TuneResult:
    """Hyperparameters minimising the worst-case rate, and that rate."""

    values: dict[str, float]
    rate: float
    proof: Proof

    def __str__(self) -> str:
        shown = ", ".join(f"{k}={v:.10g}" for k, v in self.values.items())
        return f"tuned: {shown}; worst-case rate {self.rate:.12g}"

    def _repr_latex_(self) -> str:
        shown = r",\ ".join(f"{sp.latex(sp.Symbol(k))} = {v:.8g}" for k, v in self.values.items())
        return rf"$\text{{tuned: }} {shown};\quad \rho^\star = {self.rate:.10g}$"


# ------------------------------------------------------------------ the closed loop
def _loop(system, curvature, values: Mapping[str, float]):
    """(coefficient polynomial, curvature symbol, defaults) for a design or a linear system."""
    defaults: dict[str, float] = {}
    tunable = None
    if isinstance(system, Design):
        from .loops import closed_loop

        defaults = dict(system.defaults)
        tunable = {hp.name for hp in system.hyper if hp.role in ("lr", "ema")}
        system = closed_loop(system)
    poly, var = characteristic_polynomial(system)
    free = {s.name: s for s in poly.free_symbols - {var}}
    name = curvature if isinstance(curvature, str) else getattr(curvature, "name", "h")
    if name not in free:
        raise ExpressionError(f"the characteristic polynomial {poly.as_expr()} does not depend on the "
                         f"curvature {name!r}; pass curvature=")
    unknown = sorted(set(values) - set(free) - set(defaults))
    if unknown:
        raise OptionError(
            f"unknown parameter(s) {unknown}; this loop's parameters are {sorted(set(free) - {name})}"
            + (f" and the design's hyperparameters {sorted(defaults)}" if defaults else "")
        )
    tunable = set(free) - {name} if tunable is None else tunable & set(free)
    return poly, var, free[name], {k: v for k, v in defaults.items() if k in free}, tunable


def _rho_function(poly: sp.Poly, var, h, params: list[sp.Symbol]):
    """Vectorised spectral radius ``rho(h, *params)`` from the polynomial's coefficients."""
    coeffs = poly.all_coeffs()
    fn = sp.lambdify([h, *params], coeffs, modules="numpy")
    n = len(coeffs) - 1

    def rho(hs, *args):
        c = np.broadcast_arrays(*[np.asarray(x, dtype=float) for x in fn(hs, *args)])
        lead = c[0]
        if n == 1:
            return np.abs(c[1] / lead)
        if n == 2:
            # complex pair: |root|**2 = c0 exactly; real pair: (|b| + sqrt(disc))/2
            b, c0 = c[1] / lead, c[2] / lead
            disc = b * b - 4 * c0
            real = (np.abs(b) + np.sqrt(np.maximum(disc, 0.0))) / 2
            return np.where(disc < 0, np.sqrt(np.abs(c0)), real)
        comp = np.zeros(c[0].shape + (n, n))
        comp[..., 0, :] = -np.stack(c[1:], axis=-1) / lead[..., None]
        comp[..., np.arange(1, n), np.arange(n - 1)] = 1.0
        return np.max(np.abs(np.linalg.eigvals(comp)), axis=-1)

    return rho


def _grid(m: float, L: float, size: int = GRID) -> np.ndarray:
    return np.linspace(m, L, size)


# ------------------------------------------------------------------ worst case
@timed("worst-case rate")
def worst_case_rate(system, m: float, L: float, *, curvature="h", **values: float) -> RateResult:
    """The worst-case spectral radius over curvatures ``h in [m, L]``.

    ``system``: a design (its frozen closed loop, :func:`ctopt.closed_loop`), a closed loop, a
    state matrix or a characteristic polynomial in ``z``. ``values`` fix every other parameter
    (a design's defaults fill the gaps); sympy numbers stay exact in the endpoint evaluation.
    Where two roots merge (critical damping, typical of tuned methods) ``rho`` has a
    square-root cusp: a float parameter rounded by 1e-16 moves the true rate by ~1e-8.

    Example:
        >>> import sympy as sp
        >>> from ctopt.filters import z
        >>> a, h, b = sp.symbols("alpha h beta", real=True)
        >>> hb = z**2 - (1 + b - a * h) * z + b
        >>> # Lessard-Recht-Packard's tuning at kappa = 100, as exact numbers
        >>> r = worst_case_rate(hb, 1, 100, alpha=sp.Rational(4, 121), beta=sp.Rational(81, 121))
        >>> round(r.rate, 15)
        0.818181818181818
    """
    check_curvatures(m, L)
    poly, var, h, defaults, _ = _loop(system, curvature, values)
    exact = {**defaults, **{k: sp.sympify(v) for k, v in values.items()}}
    env = {k: float(v) for k, v in exact.items()}
    params = sorted(poly.free_symbols - {var, h}, key=lambda s: s.name)
    missing = [p.name for p in params if p.name not in env]
    if missing:
        raise MissingValuesError(missing, "to compute a rate")
    args = [env[p.name] for p in params]
    rho = _rho_function(poly, var, h, params)
    proof = Proof(f"worst-case rate over h in [{m:g}, {L:g}]")
    proof.step("characteristic polynomial", poly.as_expr())
    proof.step("parameters", *[sp.Eq(p, sp.Float(v)) for p, v in zip(params, args, strict=True)])
    hs = _grid(m, L)
    r = rho(hs, *args)
    i = int(np.argmax(r))
    worst, best_h = float(r[i]), float(hs[i])
    if 0 < i < len(hs) - 1:
        from scipy.optimize import minimize_scalar

        res = minimize_scalar(lambda x: -float(rho(np.array([x]), *args)[0]),
                              bounds=(hs[i - 1], hs[i + 1]), method="bounded",
                              options={"xatol": 1e-13 * max(1.0, L)})
        if -res.fun > worst:
            worst, best_h = float(-res.fun), float(res.x)
    at_end = max(float(r[0]), float(r[-1]))
    # float64 loses half its digits where two roots merge (a square-root cusp of rho), so an
    # interior grid value within ENDPOINT_TOL of the endpoints still counts as the endpoint
    endpoint = worst <= at_end * (1 + ENDPOINT_TOL)
    expr = _closed_form(poly, var, h, m, L, env, params) if endpoint else None
    if endpoint:
        ends = [_exact_radius(poly, var, h, x, exact, params) for x in (m, L)]
        worst = float(max(ends))
        best_h = float(m if ends[0] >= ends[1] else L)
        proof.step("maximum at an endpoint; rho(m), rho(L) from the roots in 40-digit arithmetic",
                   *[sp.Float(e, 15) for e in ends])
        method = ("closed form (degree 1, |root| convex in h)" if poly.degree() == 1 else
                  "maximum at an endpoint (interior checked on a grid)")
    else:
        method = "numeric (interior maximum: grid + bounded refinement)"
    proof.step(f"rho(h) on {len(hs)} grid points including both endpoints; largest "
               f"{float(r.max()):.12g}", numeric=poly.degree() > 1 or not endpoint)
    if expr is not None:
        proof.step("closed form" + (" (endpoint formula; the interior was checked at these "
                                    "values)" if poly.degree() == 2 else ""),
                   sp.Eq(sp.Symbol("rho_max"), expr, evaluate=False))
    proof.step(f"worst case {worst:.12g} at h = {best_h:.6g}", numeric=expr is None)
    return RateResult(worst, best_h, float(m), float(L), method, proof, expr, env)


def _exact_radius(poly, var, h, at, exact, params):
    """Largest root modulus at ``h = at`` with the parameters as given (exact sympy numbers
    stay exact), computed with mpmath at 40 digits."""
    import mpmath

    subs = {h: sp.nsimplify(at)} | {p: exact[p.name] for p in params}
    coeffs = [sp.N(c.subs(subs), 50) for c in poly.all_coeffs()]
    with mpmath.workdps(40):
        roots = mpmath.polyroots([mpmath.mpf(str(c)) for c in coeffs], maxsteps=200, extraprec=80)
        return max(abs(x) for x in roots)


def _closed_form(poly, var, h, m, L, env, params):
    if poly.degree() == 2:
        # Max(rho(m), rho(L)) with rho of a real quadratic; valid where the maximum over
        # [m, L] sits at an endpoint, which the grid checked at the given values
        a2, a1, a0 = poly.all_coeffs()

        def rho(x):
            b, c = sp.cancel((a1 / a2).subs(h, x)), sp.cancel((a0 / a2).subs(h, x))
            disc = sp.expand(b**2 - 4 * c)
            return sp.Piecewise((sp.sqrt(c), disc < 0), ((sp.Abs(b) + sp.sqrt(disc)) / 2, True))

        return sp.Max(rho(sp.nsimplify(m)), rho(sp.nsimplify(L)), evaluate=False)
    if poly.degree() != 1:
        return None
    root = sp.cancel(-poly.nth(0) / poly.nth(1))
    if sp.degree(sp.numer(root), h) > 1 or sp.denom(root).has(h):
        return None
    fixed = {p: env[p.name] for p in params if not p.name.startswith(("alpha", "lr"))}
    expr = sp.Max(sp.Abs(root.subs(h, m)), sp.Abs(root.subs(h, L)))
    return expr.subs({p: sp.nsimplify(v) for p, v in fixed.items()}) if fixed else expr


def check_curvatures(m: object, L: object) -> None:
    """``[m, L]`` must be a range of finite curvatures with ``0 <= m <= L``; otherwise
    :class:`HyperparameterError` names the bad end (a nan or inf range would give a nan rate).

    Example:
        >>> check_curvatures(0.1, 1.0)
        >>> check_curvatures(0.1, float("inf"))
        Traceback (most recent call last):
        ...
        ctopt.errors.HyperparameterError: L = inf must be a finite number
    """
    for name, value in (("m", m), ("L", L)):
        real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, bool)
        if not real or not np.isfinite(value):
            raise HyperparameterError(f"{name} = {value!r} must be a finite number")
    if not 0 <= m <= L:
        raise HyperparameterError(f"need 0 <= m <= L, got m={m}, L={L}")


# ------------------------------------------------------------------ tuning
@timed("tuning")
def tune(system, m: float, L: float, *, params=None, bounds: Mapping | None = None,
         curvature="h", **fixed: float) -> TuneResult:
    """The values of ``params`` minimising :func:`worst_case_rate` over ``[m, L]``.

    By default the tuned parameters are every parameter of the loop not given in ``fixed``; a
    learning rate (``lr``/``alpha``) is searched in ``(0, 4/L)``, a coefficient with a ``[0, 1)``
    domain (``momentum``, ``beta``...) in ``(0, 1)``; pass ``bounds`` for others. The search is
    a coarse grid followed by nested bounded scalar minimisation (one parameter inside the other),
    which converges to the nonsmooth minimax optimum.

    Example:
        >>> import sympy as sp
        >>> from ctopt.filters import z
        >>> a, h = sp.symbols("alpha h", real=True)
        >>> t = tune(z - (1 - a * h), 1, 10)
        >>> round(t.values["alpha"], 9), round(t.rate, 9)
        (0.181818182, 0.818181818)
    """
    poly, var, h, defaults, tunable = _loop(system, curvature, fixed)
    env = {**defaults, **{k: float(v) for k, v in fixed.items()}}
    free = sorted(poly.free_symbols - {var, h}, key=lambda s: s.name)
    names = list(params) if params is not None else [
        p.name for p in free if p.name not in fixed and p.name in tunable]
    for n in names:
        env.pop(n, None)
    missing = [p.name for p in free if p.name not in env and p.name not in names]
    if missing:
        raise MissingValuesError(missing, "(or list them in params=)")
    if not 1 <= len(names) <= 2:
        raise OptionError(f"tune searches one or two parameters, got {names}")
    check_curvatures(m, L)
    box = [_bounds(n, L, bounds or {}) for n in names]
    order = [p for p in free if p.name not in names] + [next(p for p in free if p.name == n)
                                                        for n in names]
    rho = _rho_function(poly, var, h, order)
    hs = _grid(m, L, 129)
    base = [env[p.name] for p in order[:len(order) - len(names)]]

    def worst(*x):
        return float(np.max(rho(hs, *base, *x)))

    from scipy.optimize import minimize_scalar

    opts = {"xatol": 1e-14}
    if len(names) == 1:
        res = minimize_scalar(lambda x: worst(x), bounds=box[0], method="bounded", options=opts)
        best = [float(res.x)]
    else:
        def inner(y):
            r = minimize_scalar(lambda x: worst(x, y), bounds=box[0], method="bounded",
                                options=opts)
            return float(r.fun), float(r.x)

        res = minimize_scalar(lambda y: inner(y)[0], bounds=box[1], method="bounded",
                              options=opts)
        best = [inner(float(res.x))[1], float(res.x)]
    values = dict(zip(names, best, strict=True))
    final = worst_case_rate(system, m, L, curvature=curvature, **{**env, **values})
    proof = Proof(f"tuned {names} for the worst case over h in [{m:g}, {L:g}]")
    proof.step("minimised max_h rho(h) by nested bounded scalar searches from a coarse grid",
               *[sp.Eq(sp.Symbol(k), sp.Float(v)) for k, v in values.items()], numeric=True)
    proof.extend(final.proof)
    return TuneResult(values, final.rate, proof)


def _bounds(name: str, L: float, given: Mapping) -> tuple[float, float]:
    if name in given:
        return tuple(float(b) for b in given[name])
    if name.startswith(("lr", "alpha", "p")):
        return (1e-12, 4.0 / L)
    if name.startswith(("beta", "momentum", "mu")):
        return (0.0, 1.0 - 1e-12)
    raise OptionError(f"no default search interval for {name!r}; pass bounds={{'{name}': (lo, hi)}}")
