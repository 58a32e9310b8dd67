"""The critical sharpness of a design: the largest preconditioned curvature ``lambda = h/D`` at
which its frozen loop on ``f = h*theta**2/2`` is stable.

Full-batch training drives the largest eigenvalue of the preconditioned Hessian ``D**-1 H`` up to
this value and holds it there (the adaptive edge of stability, Cohen et al. 2022); for gradient
descent it is the classical ``2/lr``. :func:`critical_sharpness` derives it from ctopt's own
machinery: the frozen closed loop (:func:`~ctopt.closed_loop`) with ``h = lambda*r`` (``r`` the
frozen preconditioner, the ``k -> oo`` limit of :func:`~ctopt.preconditioner`'s ``D``), then the
Jury conditions (:func:`~ctopt.stability_conditions`) read as bounds on ``lambda``.

Three kinds of answer, each saying how it was reached (``.kind``):

``"proven"``
    every condition is linear in ``lambda`` and every sign needed (the coefficient of ``lambda``,
    which upper bound is smallest, that ``(0, lambda*)`` is not cut from below) is decided for all
    hyperparameters in the interior of their domains, by writing each one as a positive
    parameter and reading the signs of polynomial coefficients.
``"closed form, checked"``
    ``lambda*`` solves ``P(-1) = 0`` or ``P(1) = 0`` (proven: a pole sits on the unit circle
    there), and it is the *first* crossing at every one of a set of random admissible
    hyperparameters (numeric, by bisection), not for all of them.
``"numeric"``
    no closed form: ``.value(**values)`` bisects on the spectral radius of the frozen loop.

Example:
    >>> import ctopt
    >>> cs = ctopt.critical_sharpness(ctopt.zoo.get("adam"))
    >>> cs.expr, cs.kind
    ((2*beta1 + 2)/(lr*(1 - beta1)), 'proven')
    >>> round(cs.value(lr=0.01, beta1=0.9), 6)
    3800.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import sympy as sp

from ..design import Design, k
from ..errors import CtoptError, DesignError, NotPreconditionedError
from ..filters import z
from .inequalities import positive_form, split_abs
from .loops import ClosedLoop, closed_loop
from .preconditioners import Preconditioner, preconditioner
from .proof import Proof
from .stability import stability_conditions

__all__ = ["CriticalSharpness", "critical_sharpness"]

#: The preconditioned curvature.
lam = sp.Symbol("lambda", positive=True)

#: Random admissible points at which a closed form that is not proven is checked.
CHECK_POINTS = 12


@dataclass
class CriticalSharpness:
    """``sup {lambda : the frozen loop is stable on (0, lambda]}`` with its proof.

    Example:
        >>> import ctopt
        >>> cs = ctopt.critical_sharpness(ctopt.zoo.get("heavy_ball"))
        >>> cs.expr
        (2*momentum + 2)/lr
    """

    design: Design
    expr: sp.Expr | None
    kind: str
    proof: Proof
    loop: ClosedLoop = field(repr=False)
    preconditioner: Preconditioner = field(repr=False)
    fixed: dict[str, float] = field(default_factory=dict)
    _fn: object = field(default=None, repr=False, compare=False)

    def _values(self, values) -> dict[str, float]:
        return self.design.check_values(**{**values, **self.fixed})

    def value(self, **values: float) -> float:
        """``lambda*`` at numeric hyperparameters (defaults for those not given).

        Example:
            >>> import ctopt
            >>> ctopt.critical_sharpness(ctopt.zoo.get("rmsprop")).value(lr=0.5)
            4.0
        """
        if self.expr is None:
            return self.numeric_value(**values)
        full = self._values(values)
        # exact decimal rationals: 38/lr at lr = 0.01 is 3800.0, not 3800.000000000001
        exact = {s: sp.Rational(repr(float(full[s.name]))) for s in self.expr.free_symbols}
        return float(self.expr.xreplace(exact))

    def numeric_value(self, **values: float) -> float:
        """``lambda*`` by bisection on the spectral radius of the frozen loop (independent of
        the closed form; ``inf`` when stable up to ``1e15``)."""
        full = self._values(values)
        if self._fn is None:
            self._fn = _matrix_fn(self.loop)
        return _bisect(self._fn, full)

    def __str__(self) -> str:
        what = "lambda_max(D^-1 H)"
        head = f"critical sharpness of {self.design.name} ({self.kind}): {what} < "
        body = "(numeric: bisection on the frozen loop's spectral radius)" if self.expr is None \
            else str(self.expr)
        pre = self.preconditioner
        d = (f"  D = {pre.D}" if not pre.D.has(k) else
             f"  D -> {pre.D_limit} as k -> oo (the bias-corrected D: .preconditioner.D)")
        lines = [head + body, d]
        if self.fixed:
            lines.append("  with " + ", ".join(f"{n} = {v:g}" for n, v in self.fixed.items()))
        return "\n".join(lines)

    def _repr_latex_(self) -> str:
        rhs = sp.latex(self.expr) if self.expr is not None else r"\text{(numeric)}"
        return (rf"$\lambda_{{\max}}(D^{{-1}}H) < {rhs}\quad \text{{({self.kind})}},\quad "
                rf"D = {sp.latex(self.preconditioner.D)}$")


# ------------------------------------------------------------------------- sign decisions
def _positive_parameter(sym: sp.Symbol, design: Design, t: sp.Symbol) -> sp.Expr:
    """``sym`` written through a positive ``t`` over the interior of its domain."""
    if sym == lam:
        return t
    hyper = design.hyperparameters.get(sym.name)
    if hyper is None:
        return t if sym.is_positive else sym
    lo, hi = hyper.domain.lower, hyper.domain.upper
    lo = sp.nsimplify(lo) if lo is not None else None
    hi = sp.nsimplify(hi) if hi is not None else None
    if lo is not None and hi is not None:
        return lo + (hi - lo) * t / (1 + t)
    if lo is not None:
        return lo + t
    if hi is not None:
        return hi - t
    return sym


def _sign(expr: sp.Expr, design: Design) -> int | None:
    """+1 / -1 when ``expr`` has that sign for every interior hyperparameter and ``lambda > 0``
    (0 when it is identically 0), ``None`` when undecided."""
    syms = sorted(expr.free_symbols, key=lambda s: s.name)
    ts = [sp.Symbol(f"t{i}", positive=True) for i in range(len(syms))]
    e = sp.together(expr.xreplace({s: _positive_parameter(s, design, t)
                                   for s, t in zip(syms, ts, strict=True)}))
    if e == 0:
        return 0
    try:
        num, den = sp.fraction(sp.factor(e))
    except (TypeError, ValueError, sp.PolynomialError):  # sympy cannot factor it: undecided
        return None
    total = 1
    for part in (num, den):
        for f in sp.Mul.make_args(part):
            s = _poly_sign(f, ts)
            if s is None:
                return None
            total *= s
    return total


def _poly_sign(f: sp.Expr, ts: list[sp.Symbol]) -> int | None:
    if f.is_number:
        return 1 if f > 0 else -1 if f < 0 else None
    if f.is_Pow and f.exp.is_integer and f.exp.is_even:
        return 1
    if f.is_Pow and f.exp.is_integer:
        return _poly_sign(f.base, ts)
    try:
        coeffs = sp.Poly(f, *ts).coeffs()
    except sp.PolynomialError:
        return None
    if all(c.is_number and c > 0 for c in coeffs):
        return 1
    if all(c.is_number and c < 0 for c in coeffs):
        return -1
    return None


# ------------------------------------------------------------------------ the derivation
def _forms(atoms) -> list[sp.Expr]:
    out = []
    for atom in atoms:
        if isinstance(atom, sp.Unequality):
            continue
        form, _ = positive_form(atom)
        out += split_abs(form) if form.has(sp.Abs) else [form]
    return out


def _linear_bound(forms, design: Design, proof: Proof) -> sp.Expr | None:
    """The supremum when every condition is linear in ``lambda`` with decided signs."""
    uppers = []
    for form in forms:
        num, den = sp.fraction(sp.together(form))
        s_den = _sign(den, design)
        if s_den not in (1, -1) or den.has(lam):
            return None
        num = sp.expand(num * s_den)
        poly = sp.Poly(num, lam)
        if poly.degree() > 1:
            return None
        if poly.degree() < 1:
            if _sign(num, design) != 1:
                return None
            proof.step("a condition free of lambda holds on the whole domain", num > 0)
            continue
        a, b = poly.all_coeffs()
        s_a = _sign(a, design)
        bound = sp.factor(-b / a)
        if s_a == 1:
            if _sign(-bound, design) not in (0, 1):
                return None
            proof.step("a lower bound that does not cut (0, lambda*)", lam > bound)
        elif s_a == -1:
            if _sign(bound, design) != 1:
                return None
            uppers.append(bound)
        else:
            return None
    if not uppers:
        return sp.oo
    for u in uppers:
        if all(_sign(v - u, design) in (0, 1) for v in uppers):
            proof.step("upper bounds on lambda", *[lam < v for v in uppers])
            if len(uppers) > 1:
                proof.step("the smallest of them (the others minus it are >= 0 on the domain)",
                           lam < u)
            return u
    return None


def _tidy(expr: sp.Expr) -> sp.Expr:
    """Signs moved into the factors that carry them: ``2*(beta1 + 1)/(lr*(1 - beta1))``."""
    if expr is sp.oo:
        return expr
    num, den = sp.fraction(sp.factor(expr))
    coeff = sp.Integer(1)
    parts = []
    for part in (num, den):
        c, rest = part.as_coeff_Mul()
        coeff = coeff * c if part is num else coeff / c
        factors = []
        for f in sp.Mul.make_args(rest):
            if f.is_Add and f.as_coeff_Add()[0] < 0:
                f, coeff = -f, -coeff
            factors.append(f)
        parts.append(sp.Mul(*factors))
    n, d = parts
    if coeff < 0 and any(f.is_Add for f in sp.Mul.make_args(n)):
        f = next(f for f in sp.Mul.make_args(n) if f.is_Add)
        n, coeff = n / f * sp.expand(-f), -coeff
    return sp.Mul(coeff, *sp.Mul.make_args(n), 1 / d)


def _crossings(poly: sp.Expr) -> list[sp.Expr]:
    out = []
    for point in (-1, 1):
        p1 = sp.expand(poly.subs(z, point))
        if p1.has(lam) and sp.Poly(p1, lam).degree() <= 2:
            out += [sp.factor(r) for r in sp.solve(p1, lam)]
    return out


def _samples(design: Design, params, n: int, seed: int = 0) -> list[dict[str, float]]:
    """Random interior points: bounded domains uniformly (1 % away from the ends), positive
    unbounded ones log-uniformly in [1e-4, 1], others around their defaults."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        point = {}
        for s in params:
            hyper = design.hyperparameters[s.name]
            lo, hi = hyper.domain.lower, hyper.domain.upper
            if lo is not None and hi is not None:
                pad = 0.01 * (hi - lo)
                point[s.name] = float(rng.uniform(lo + pad, hi - pad))
            elif lo == 0:
                point[s.name] = float(np.exp(rng.uniform(np.log(1e-4), 0.0)))
            else:
                point[s.name] = float(hyper.default * rng.uniform(0.5, 2.0))
        out.append(point)
    return out


def _matrix_fn(loop: ClosedLoop):
    a = loop.A.xreplace({loop.curvature: lam * _r(loop)}).xreplace({_r(loop): 1})
    params = sorted(a.free_symbols - {lam}, key=lambda s: s.name)
    fn = sp.lambdify([lam, *params], a.tolist(), "numpy")
    return fn, [p.name for p in params]


def _r(loop: ClosedLoop) -> sp.Expr:
    return next(iter(loop.frozen)) if loop.frozen else sp.Integer(1)


def _rho(fn_names, x: float, values) -> float:
    fn, names = fn_names
    m = np.array(fn(x, *(values[n] for n in names)), dtype=float)
    return float(np.max(np.abs(np.linalg.eigvals(m))))


def _bisect(fn_names, values, iterations: int = 80) -> float:
    grid = 1e-8 * 2.0 ** np.arange(0, 77)
    stable_seen, last = False, None
    for x in grid:
        rho = _rho(fn_names, x, values)
        if rho < 1:
            stable_seen, last = True, x
        elif stable_seen:
            lo, hi = last, x
            for _ in range(iterations):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if _rho(fn_names, mid, values) < 1 else (lo, mid)
            return 0.5 * (lo + hi)
    return float("inf") if stable_seen else 0.0


@lru_cache(maxsize=128)
def _cached(design: Design, fixed: tuple) -> CriticalSharpness:
    pre = preconditioner(design, **dict(fixed))
    loop = closed_loop(design, **pre.fixed)
    proof = Proof(f"critical sharpness of {design.name}")
    proof.step("the update as theta - lr*u/D", sp.Eq(sp.Symbol("D"), pre.D))
    h = loop.curvature
    if loop.frozen:
        if len(loop.frozen) != 1 or sp.simplify(next(iter(loop.frozen.values()))
                                                 - pre.D_limit) != 0:
            raise NotPreconditionedError(
                f"the frozen loop of {design.name!r} freezes {dict(loop.frozen)}, not only the "
                f"preconditioner D = {pre.D_limit}; fix the hyperparameters that add factors"
            )
        r = next(iter(loop.frozen))
        proof.step("frozen loop: D held at its k -> oo value r; lambda = h/r", sp.Eq(r, pre.D_limit))
    else:
        r = sp.Integer(1)
        proof.step("no preconditioner (D = 1): lambda = h")
    poly = sp.expand(loop.charpoly().xreplace({h: lam * r}))
    poly = sp.expand(sp.cancel(poly))
    if r != 1 and poly.has(r):
        raise NotPreconditionedError(f"the frozen loop of {design.name!r} does not depend on h/r "
                                     f"alone: {poly}")
    proof.step("characteristic polynomial in lambda", sp.Eq(sp.Symbol("P"), poly))
    kind, expr = "numeric", None
    try:
        cond = stability_conditions(poly, var=z)
    except (CtoptError, TypeError) as exc:  # too large, or sympy fails on float coefficients
        cond = None
        proof.step(f"no symbolic Jury conditions ({type(exc).__name__}: {exc})")
    else:
        proof.extend(cond.proof, "Jury")
    scratch = Proof("linear bounds")
    try:
        expr = _linear_bound(_forms(cond.atoms), design, scratch) if cond else None
    except CtoptError:
        expr = None
    if expr is not None:
        kind, expr = "proven", _tidy(expr)
        proof.extend(scratch)
        proof.step("hence the frozen loop is stable iff 0 < lambda < lambda*",
                   sp.Eq(sp.Symbol("lambda*"), expr))
    else:
        expr = _checked_crossing(design, loop, poly, proof)
        if expr is not None:
            kind, expr = "closed form, checked", _tidy(expr)
    out = CriticalSharpness(design, expr, kind, proof, loop, pre, dict(pre.fixed))
    if expr is not None and expr is not sp.oo:
        at = {n: v for n, v in design.defaults.items() if n not in pre.fixed}
        closed, numeric = out.value(**at), out.numeric_value(**at)
        proof.step(f"cross-check at the defaults: closed form {closed:.10g}, bisection on the "
                   f"spectral radius {numeric:.10g}", numeric=True)
    elif expr is None:
        proof.step("no closed form: bisection on the frozen loop's spectral radius at given "
                   "values", numeric=True)
    return out


def _checked_crossing(design, loop, poly, proof) -> sp.Expr | None:
    candidates = [c for c in _crossings(poly) if c.free_symbols]
    if not candidates:
        return None
    params = sorted(set().union(*(c.free_symbols for c in candidates)), key=lambda s: s.name)
    if any(p.name not in design.hyperparameters for p in params):
        return None
    fn = _matrix_fn(loop)
    defaults = design.defaults
    points = _samples(design, params, CHECK_POINTS)
    for c in candidates:
        f = sp.lambdify(params, c, "numpy")
        ok = True
        for point in points:
            full = {**defaults, **point}
            want = _bisect(fn, full)
            got = float(f(*(point[p.name] for p in params)))
            if not (np.isfinite(want) and abs(got - want) <= 1e-6 * abs(want)):
                ok = False
                break
        if ok:
            proof.step("a pole reaches the unit circle (z = +-1) at", sp.Eq(sp.Symbol("lambda*"),
                                                                         c))
            proof.step(f"it is the first crossing at {len(points)} random admissible points "
                       "(bisection on the spectral radius; not proven for all values)",
                       numeric=True)
            return c
    return None


def critical_sharpness(design: Design, **fixed: float) -> CriticalSharpness:
    """The supremum of the preconditioned curvature ``h/D`` for which the frozen loop of
    ``design`` is stable (see the module doc). ``fixed`` substitutes hyperparameters first;
    those whose default is 0 (weight decay, dampening, clipping) are taken at 0 unless given.

    Example:
        >>> import ctopt
        >>> ctopt.critical_sharpness(ctopt.zoo.get("nesterov")).expr
        (2*momentum + 2)/(lr*(2*momentum + 1))
    """
    if not isinstance(design, Design):
        raise DesignError(f"critical_sharpness expects a Design, not {type(design).__name__}")
    design.check_values(**fixed)
    return _cached(design, tuple(sorted(fixed.items())))
