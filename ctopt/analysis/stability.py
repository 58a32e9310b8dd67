"""Closed-form stability conditions: the Jury (Schur–Cohn) test for all roots of a polynomial
in ``z`` strictly inside the unit circle.

:func:`stability_conditions` accepts a polynomial in :data:`ctopt.filters.z` with symbolic
parameters, a transfer function (anything with ``.den``), a closed loop (anything with
``.charpoly()``) or a sympy state matrix, and returns a :class:`StabilityConditions`: the
conditions as a sympy boolean (``.expr``), a vectorised check ``.holds(**values)`` and the
``.proof`` (the Jury table and every simplification step).

Symbolic degrees up to :data:`ctopt.limits.MAX_DEGREE` are handled; larger symbolic degrees
raise :class:`~ctopt.errors.UnsupportedError`. A polynomial with numeric coefficients only, of any
degree, gets a *numeric* answer (its roots), labelled as such in ``.numeric`` and in the proof.

Example:
    >>> import sympy as sp
    >>> from ctopt.filters import z
    >>> a, h = sp.symbols("alpha h", real=True)
    >>> cond = stability_conditions(z - (1 - a * h))
    >>> cond.expr
    (alpha*h > 0) & (alpha*h < 2)
    >>> cond.holds(alpha=0.5, h=3.0), cond.holds(alpha=0.5, h=5.0)
    (True, False)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache

import numpy as np
import sympy as sp

from ..errors import CtoptError, ExpressionError, MissingValuesError
from ..filters import z
from ..limits import check_size, time_limit, timed
from .inequalities import canonical_atoms, natural_form, positive_form, same_region, split_abs
from .proof import Proof

# the normal forms moved to ctopt.analysis.inequalities; the old private names still resolve here
_readable, _split_abs = natural_form, split_abs

__all__ = [
    "StabilityConditions",
    "canonical_atoms",
    "characteristic_polynomial",
    "jury_table",
    "positive_form",
    "same_region",
    "stability_conditions",
]

#: Seconds allowed to the symbolic Jury test before it gives up with a clear error.
TIME_LIMIT = 30.0


@dataclass
class StabilityConditions:
    """All roots strictly inside the unit circle, as a conjunction of readable inequalities.

    ``atoms`` lists the conditions one by one; ``expr`` is their conjunction. ``numeric`` is true
    when the answer comes from floating-point roots rather than the symbolic Jury test.
    """

    polynomial: sp.Expr
    var: sp.Symbol
    atoms: tuple[sp.Basic, ...]
    proof: Proof
    numeric: bool = False
    assumptions: tuple[sp.Basic, ...] = ()
    _fn_cache: dict = field(default_factory=dict, repr=False)
    domains: dict = field(default_factory=dict, repr=False)

    @property
    def expr(self) -> sp.Basic:
        """The conditions as one sympy boolean."""
        return sp.And(*self.atoms)

    @cached_property
    def parameters(self) -> tuple[sp.Symbol, ...]:
        """The free symbols the conditions depend on, sorted by name."""
        free = set().union(*(a.free_symbols for a in self.atoms)) if self.atoms else set()
        return tuple(sorted(free, key=lambda s: s.name))

    def holds(self, **values) -> bool | np.ndarray:
        """Whether the conditions hold at ``values`` (by parameter name). Values may be numpy
        arrays (broadcast together); extra names are ignored.

        Example:
            >>> import sympy as sp
            >>> b = sp.Symbol("beta", real=True)
            >>> stability_conditions(z - b).holds(beta=np.array([0.5, 1.5])).tolist()
            [True, False]
        """
        args = _arguments(self.parameters, values)
        out = _lambdified(self, "holds", lambda: sp.And(*self.atoms))(*args)
        return _as_result(out, args)

    def margin(self, **values) -> float | np.ndarray:
        """The smallest slack ``lhs - rhs`` over the conditions written as ``expr > 0``: positive
        inside the region, negative outside, near zero on its boundary (used to stay a documented
        tolerance away from the boundary when comparing with floating-point eigenvalues)."""
        args = _arguments(self.parameters, values)
        forms = [positive_form(a)[0] for a in self.atoms if not isinstance(a, sp.Unequality)]
        forms = forms or [sp.Integer(1)]
        fn = _lambdified(self, "margin", lambda: sp.Min(*forms) if len(forms) > 1 else forms[0])
        out = fn(*args)
        return _as_result(out, args, boolean=False)

    def equivalent(self, other: sp.Basic, assumptions: Iterable[sp.Basic] = ()) -> bool:
        """Whether ``other`` states the same conditions (see :func:`same_region`)."""
        return same_region(self.expr, other, tuple(self.assumptions) + tuple(assumptions))

    @cached_property
    def readable(self) -> tuple[sp.Basic, ...]:
        """The binding conditions under the hyperparameters' domains (``domains``): positive
        factors dropped, implied conditions and tautologies removed (see
        :mod:`ctopt.analysis.readable`). Without domains, the atoms themselves.

        Example:
            >>> import ctopt
            >>> loop = ctopt.closed_loop(ctopt.zoo.get("heavy_ball"), dampening=0, weight_decay=0)
            >>> ctopt.stability_conditions(loop).readable
            (h*lr > 0, h*lr < 2*(momentum + 1))
        """
        if not self.domains or self.numeric:
            return self.atoms
        from .readable import readable

        try:
            with time_limit(10, "readable conditions"):
                return tuple(readable(self.atoms, self.domains))
        except CtoptError:
            return self.atoms

    def __str__(self) -> str:
        kind = "numeric (floating-point roots)" if self.numeric else "Jury / Schur-Cohn"
        lines = [f"Stability of {self.polynomial} = 0 ({kind}): all roots |{self.var}| < 1 iff"]
        shown = self.readable
        lines += [f"  {a}" for a in shown]
        if shown != self.atoms:
            names = ", ".join(sorted(s.name for s in self.domains))
            lines.append(f"  (binding conditions under the domains of {names}; "
                         f"{len(self.atoms)} Jury conditions in .atoms)")
        return "\n".join(lines)

    def _repr_latex_(self) -> str:
        body = r" \\ ".join(sp.latex(a) for a in self.atoms)
        head = r"\text{all roots of } " + sp.latex(self.polynomial) + r" = 0 \text{ satisfy } |"
        head += sp.latex(self.var) + r"| < 1 \iff"
        if self.numeric:
            head = r"\textbf{[numeric]}\ " + head
        return r"$\begin{array}{l}" + head + r" \\ " + body + r"\end{array}$"


# ------------------------------------------------------------------ public entry point
@timed("stability conditions")
def stability_conditions(system, var: sp.Symbol | None = None, assumptions=None
                         ) -> StabilityConditions:
    """Jury / Schur–Cohn conditions for every root of ``system``'s characteristic polynomial to
    lie strictly inside the unit circle.

    ``system``: a sympy expression or ``Poly`` in ``var`` (default :data:`ctopt.filters.z`), a
    transfer function (``.den``), a closed loop (``.charpoly()``) or a square sympy matrix.
    ``assumptions``: sympy relations (e.g. ``beta > 0``) recorded with the result and used by
    :meth:`StabilityConditions.equivalent`.

    Example:
        >>> import sympy as sp
        >>> a, h, b = sp.symbols("alpha h beta", real=True)
        >>> hb = z**2 - (1 + b - a * h) * z + b
        >>> for atom in stability_conditions(hb).atoms: print(atom)
        alpha*h > 0
        alpha*h < 2*(beta + 1)
        Abs(beta) < 1
    """
    poly, var = characteristic_polynomial(system, var)
    assumed = _assumption_list(assumptions)
    n = poly.degree()
    if n < 1:
        raise ExpressionError(f"stability_conditions needs a polynomial of degree >= 1 in {var}, "
                         f"got {poly.as_expr()}")
    result = _cached(poly.as_expr(), var, assumed)
    design = getattr(system, "design", None)
    if design is not None and hasattr(design, "hyper"):
        domains = {hyper.symbol: hyper.domain for hyper in design.hyper}
        result = replace(result, domains=domains)
    return result


@lru_cache(maxsize=512)
def _cached(expr: sp.Expr, var: sp.Symbol, assumed: tuple) -> StabilityConditions:
    poly = sp.Poly(expr, var)
    if not poly.free_symbols - {var}:
        return _numeric(poly, var, assumed)
    check_size("Jury test", degree=poly.degree())
    with time_limit(TIME_LIMIT, "Jury test"):
        return _jury(poly, var, assumed)


def characteristic_polynomial(system, var: sp.Symbol | None = None) -> tuple[sp.Poly, sp.Symbol]:
    """The polynomial whose roots decide stability, as ``(Poly, variable)``.

    Example:
        >>> characteristic_polynomial(sp.Matrix([[0, 1], [-sp.Rational(1, 4), 1]]))[0]
        Poly(z**2 - z + 1/4, z, domain='QQ')
    """
    if hasattr(system, "charpoly") and not isinstance(system, sp.MatrixBase):
        system = system.charpoly()
    elif hasattr(system, "den") and not isinstance(system, sp.Basic):
        system = system.den
    elif hasattr(system, "A") and not isinstance(system, sp.Basic):
        system = sp.Matrix(system.A)
    if isinstance(system, sp.MatrixBase):
        if not system.is_square:
            raise ExpressionError(f"a state matrix must be square, got shape {system.shape}")
        if system.free_symbols:
            check_size("characteristic polynomial of a symbolic matrix", states=system.shape[0])
        var = var or z
        return sp.Poly(system.charpoly(var).as_expr(), var), var
    if isinstance(system, sp.Poly):
        var = var or system.gens[0]
        return sp.Poly(system.as_expr(), var), var
    expr = sp.sympify(system)
    if var is None:
        if expr.has(z):
            var = z
        else:
            raise ExpressionError(f"{expr} has no variable z; pass var= to name the polynomial variable")
    num, den = sp.fraction(sp.cancel(sp.together(expr)))
    if den.has(var):
        raise ExpressionError(f"{expr} is not a polynomial in {var}; pass a denominator")
    try:
        return sp.Poly(num, var), var
    except sp.PolynomialError as exc:
        raise ExpressionError(f"{expr} is not a polynomial in {var}") from exc


# ------------------------------------------------------------------ the Jury test
def jury_table(coeffs: list[sp.Expr]) -> list[list[sp.Expr]]:
    """Rows of the Jury table of ``a_0 + a_1 z + ... + a_n z^n`` given as ``[a_0, ..., a_n]``:
    the first row, then each reduced row ``r'_k = r_0 r_k - r_last r_{last-k}`` down to three
    elements.

    Example:
        >>> jury_table([1, 2, 3, 4])
        [[1, 2, 3, 4], [-15, -10, -5]]
    """
    rows = [[sp.sympify(c) for c in coeffs]]
    while len(rows[-1]) > 3:
        r = rows[-1]
        last = len(r) - 1
        rows.append([sp.expand(r[0] * r[j] - r[last] * r[last - j]) for j in range(last)])
    return rows


def _jury(poly: sp.Poly, var: sp.Symbol, assumed: tuple[sp.Basic, ...]) -> StabilityConditions:
    proof = Proof("all roots strictly inside the unit circle (Jury / Schur-Cohn)")
    expr = poly.as_expr()
    proof.step("characteristic polynomial", sp.Eq(sp.Function("P")(var), expr))
    content, factors = sp.factor_list(expr, var)
    factors = [sp.Poly(f, var) for f, _ in factors if sp.Poly(f, var).degree() >= 1]
    atoms: list[sp.Basic] = []
    if len(factors) > 1:
        proof.step("P factors; its roots are inside the unit circle iff each factor's are",
                   *[f.as_expr() for f in factors])
    for f in factors:
        atoms += _jury_factor(f, var, proof)
    atoms = _dedupe([a for a in atoms if a is not sp.true])
    if any(a is sp.false for a in atoms):
        atoms = [sp.false]
    proof.step("conclusion: stable iff all of", sp.And(*atoms))
    for a in assumed:
        proof.step("assumed", a)
    return StabilityConditions(expr, var, tuple(atoms), proof, False, assumed)


def _jury_factor(poly: sp.Poly, var: sp.Symbol, proof: Proof) -> list[sp.Basic]:
    atoms: list[sp.Basic] = []
    lead = poly.LC()
    if poly.degree() == 1:
        root = sp.factor(-poly.nth(0) / lead)
        if root.is_Symbol or (-root).is_Symbol:
            cond = sp.Abs(root) < 1
            proof.step(f"root {var} = {root}: inside iff", cond)
            return [cond]
    if lead.is_number:
        if lead < 0:
            poly = -poly
            proof.step("multiply by -1 so that the leading coefficient is positive")
    elif lead.is_positive:
        poly = sp.Poly(sp.expand(poly.as_expr() / lead), var)
        proof.step("divide by the positive leading coefficient", lead > 0)
    else:
        atoms.append(sp.Ne(lead, 0))
        poly = sp.Poly(sp.expand(lead * poly.as_expr()), var)
        proof.step("multiply by the leading coefficient (same roots, positive leading "
                   "coefficient when it is nonzero)", sp.Ne(lead, 0))
    n = poly.degree()
    coeffs = list(reversed(poly.all_coeffs()))  # a_0 .. a_n
    at_one = sp.factor(poly.eval(1))
    at_minus = sp.factor((-1) ** n * poly.eval(-1))
    proof.step("necessary condition P(1) > 0", natural_form(at_one > 0))
    proof.step(f"necessary condition (-1)^{n} P(-1) > 0", natural_form(at_minus > 0))
    atoms += [natural_form(at_one > 0), natural_form(at_minus > 0)]
    if n == 1:
        proof.step("for degree 1 these two conditions are equivalent to |a_0| < a_1")
        return atoms
    a0, an = coeffs[0], coeffs[-1]
    first = natural_form(sp.Abs(sp.factor(a0)) < sp.factor(an))
    proof.step("|a_0| < a_n", first)
    atoms.append(first)
    rows = jury_table(coeffs)
    for i, row in enumerate(rows):
        proof.step(f"Jury table row {i + 1}", sp.Matrix([row]))
    for i, row in enumerate(rows[1:], 2):
        head, tail = sp.factor(row[0]), sp.factor(row[-1])
        # row 2 starts with a_0^2 - a_n^2 < 0 (by |a_0| < a_n); later rows start positive
        size = -head if i == 2 else head
        cond = natural_form(sp.Abs(tail) < sp.factor(size))
        proof.step(f"|first| > |last| in row {i} (the first element is "
                   f"{'negative' if i == 2 else 'positive'} by the previous condition)", cond)
        atoms.append(cond)
    return atoms


def _numeric(poly: sp.Poly, var: sp.Symbol, assumed) -> StabilityConditions:
    coeffs = [complex(c) for c in poly.all_coeffs()]
    roots = np.roots(coeffs)
    radius = float(np.max(np.abs(roots))) if len(roots) else 0.0
    proof = Proof("all roots strictly inside the unit circle (numeric)")
    proof.step("characteristic polynomial with numeric coefficients", poly.as_expr())
    proof.step("floating-point roots (numpy.roots)", *[sp.Float(r.real) + sp.I * sp.Float(r.imag)
                                                      for r in roots], numeric=True)
    proof.step("largest modulus", sp.Float(radius), numeric=True)
    verdict = sp.true if radius < 1 else sp.false
    proof.step("conclusion (numeric)", sp.StrictLessThan(sp.Float(radius), 1), numeric=True)
    return StabilityConditions(poly.as_expr(), var, (verdict,), proof, True, assumed)


# ------------------------------------------------------------------ assumptions
def _dedupe(atoms: list[sp.Basic]) -> list[sp.Basic]:
    seen, out = set(), []
    for a in atoms:
        if a not in seen:
            seen.add(a)
            out.append(a)
    return out


def _assumption_list(assumptions) -> tuple[sp.Basic, ...]:
    if assumptions is None:
        return ()
    if isinstance(assumptions, sp.Basic):
        return tuple(sp.And.make_args(assumptions))
    if isinstance(assumptions, Mapping):
        raise ExpressionError("assumptions must be sympy relations, e.g. beta > 0")
    return tuple(a for item in assumptions for a in sp.And.make_args(sp.sympify(item)))


# ------------------------------------------------------------------ evaluation helpers
def _arguments(params: tuple[sp.Symbol, ...], values: Mapping[str, object]) -> list:
    missing = [p.name for p in params if p.name not in values]
    if missing:
        raise MissingValuesError(missing, f"(the conditions depend on {[p.name for p in params]})")
    return list(np.broadcast_arrays(*[np.asarray(values[p.name], dtype=float) for p in params]))


def _lambdified(result: StabilityConditions, key: str, build):
    if key not in result._fn_cache:
        result._fn_cache[key] = sp.lambdify(result.parameters, build(), modules="numpy")
    return result._fn_cache[key]


def _as_result(out, args, boolean: bool = True):
    shape = np.broadcast_shapes(*(np.shape(a) for a in args)) if args else ()
    arr = np.broadcast_to(np.asarray(out, dtype=bool if boolean else float), shape)
    if arr.ndim == 0:
        return bool(arr) if boolean else float(arr)
    return arr.copy()
