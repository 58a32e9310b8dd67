"""Moments defined by transfer functions: realisation as states, closed-form responses.

A moment estimate such as Adam's ``v`` is a linear time-invariant filter of an input signal
(``g**2`` for Adam). :func:`realize` turns a proper transfer function ``H(z)`` into states and
assignments in observable canonical form, whose first state *is* the filter output, so that the
output can carry a torch state-dict name (``exp_avg_sq``).

Convention (torch's indexing): the input at step ``k`` enters the state at step ``k``,
``x_k = A x_{k-1} + B u_k``, so an EMA ``v_k = beta v_{k-1} + (1 - beta) u_k`` has
``H(z) = (1 - beta) z / (z - beta)``. Starting from zero state, the response to a unit step is
``s[k] = 1 - beta**k``: the bias correction is the filter's own step response.

Example:
    >>> import sympy as sp
    >>> from ctopt.filters import realize, z
    >>> b = sp.Symbol("beta2", real=True)
    >>> f = realize("v", (1 - b) * z / (z - b), sp.Symbol("u"))
    >>> f.step_response()
    1 - beta2**k

A design keeps the :class:`Filter` of every moment it declares (``design.filters``); the builder
returns a :class:`FilterHandle`, the filter's output as a symbol that answers the filter's
questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import sympy as sp

from .errors import DesignError
from .ops import k

__all__ = ["Filter", "FilterHandle", "Line", "realize", "z", "inverse_z", "normalized"]

#: The z-transform variable.
z = sp.Symbol("z")


def _rational_in_z(transfer: sp.Expr) -> tuple[sp.Poly, sp.Poly]:
    num, den = sp.fraction(sp.cancel(sp.together(sp.sympify(transfer))))
    try:
        pn, pd = sp.Poly(num, z), sp.Poly(den, z)
    except sp.PolynomialError as exc:
        raise DesignError(f"transfer function {transfer} is not rational in z") from exc
    if pd.degree() < 1:
        raise DesignError(
            f"transfer function {transfer} has no pole: a filter needs at least one state"
        )
    if pn.degree() > pd.degree():
        raise DesignError(
            f"transfer function {transfer} is improper (numerator degree {pn.degree()} > "
            f"denominator degree {pd.degree()}): it would need future inputs"
        )
    return pn, pd


def inverse_z(expr: sp.Expr, j: sp.Expr) -> sp.Expr:
    """Closed-form inverse one-sided z-transform ``y[j]`` (``j >= 0``) of a proper rational
    ``Y(z)``, from the residues of ``Y(z)/z`` at its poles.

    Example:
        >>> import sympy as sp
        >>> j = sp.Symbol("j", integer=True, nonnegative=True)
        >>> inverse_z(z / (z - sp.Rational(1, 2)), j)
        (1/2)**j
    """
    pn, pd = _rational_in_z(expr)
    # Y(z)/z = N/D, strictly proper; its residues at each pole p of multiplicity m give
    # y[j] = sum_i c_i binomial(j, i-1) p**(j-i+1)  (i = 1..m), from the terms c_i/(z-p)**i
    num, den = pn.as_expr(), (pd * sp.Poly(z, z)).as_expr()
    roots = sp.roots(sp.Poly(den, z))
    if sum(roots.values()) != sp.degree(den, z):
        raise DesignError(
            f"no closed-form inverse z-transform: the poles of {expr} are not explicit"
        )
    out = sp.Integer(0)
    for pole, m in roots.items():
        if m == 1:
            coeffs = {1: num.subs(z, pole) / sp.diff(den, z).subs(z, pole)}
        else:
            near = sp.cancel(num * (z - pole) ** m / den)
            coeffs = {
                i: sp.diff(near, z, m - i).subs(z, pole) / sp.factorial(m - i)
                for i in range(1, m + 1)
            }
        for i, c in coeffs.items():
            c = sp.factor(c)
            if c == 0:
                continue
            if pole == 0:
                out += c * sp.KroneckerDelta(j, i - 1)
            elif i == 1:
                out += c * pole**j
            else:
                out += c * sp.binomial(j, i - 1) * pole ** (j - i + 1)
    return out


class Line(NamedTuple):
    """One line of a filter's realisation: ``target <- expr``, ``kind`` ``"let"`` or
    ``"state"`` (what :class:`ctopt.design.Assignment` holds)."""

    target: sp.Symbol
    expr: sp.Expr
    kind: str


@dataclass(frozen=True)
class Filter:
    """A moment declared by its transfer function: output (its first state) ``output``,
    ``transfer`` ``H(z)`` from ``input``, and the names of its realised states (``states``;
    empty for a filter that is only asked questions). ``assignments`` is its realisation.

    Example:
        >>> import sympy as sp
        >>> b = sp.Symbol("beta", real=True)
        >>> f = Filter("m", (1 - b) * z / (z - b), sp.Symbol("g", real=True), ("m",))
        >>> f.dc_gain(), f.poles()
        (1, [beta])
    """

    output: str
    transfer: sp.Expr
    input: sp.Expr
    states: tuple[str, ...]

    @cached_property
    def assignments(self) -> tuple[Line, ...]:
        """The realisation's lines in observable canonical form (see :func:`realize`)."""
        return _realisation(self.output, self.transfer, self.input)[1]

    def poles(self) -> list[sp.Expr]:
        """Poles of ``H(z)`` with multiplicity."""
        return _roots(_rational_in_z(self.transfer)[1])

    def zeros(self) -> list[sp.Expr]:
        """Finite zeros of ``H(z)`` with multiplicity."""
        return _roots(_rational_in_z(self.transfer)[0])

    def dc_gain(self) -> sp.Expr:
        """``H(1)``: the steady-state gain; 1 means unbiased in steady state."""
        return sp.simplify(self.transfer.subs(z, 1))

    def impulse_response(self, step: sp.Expr = k) -> sp.Expr:
        """Closed-form response ``h[k]`` to a unit impulse at ``k = 1`` (zero initial state)."""
        return self._response(self.transfer, step)

    def step_response(self, step: sp.Expr = k) -> sp.Expr:
        """Closed-form response ``s[k]`` to a unit step from zero state: the generalised bias
        correction (``1 - beta**k`` for an EMA)."""
        return self._response(self.transfer * z / (z - 1), step)

    def _response(self, Y: sp.Expr, step: sp.Expr) -> sp.Expr:
        """Inverse z-transform of ``Y`` at ``step``; where two symbolic poles may coincide (e.g.
        ``pole == beta2``), the repeated-pole form is a separate Piecewise branch, so the closed
        form stays finite there."""
        j = sp.Symbol("j", integer=True, nonnegative=True)

        def closed(expr):
            return _by_term(sp.powsimp, inverse_z(expr, j).subs(j, step - 1))

        branches = []
        poles = [p for p in dict.fromkeys(self.poles()) if p.free_symbols]
        for i, a in enumerate(poles):
            for b in poles[i + 1 :]:
                if isinstance(b, sp.Symbol) and sp.cancel(a - b) != 0:
                    branches.append((closed(sp.cancel(Y.subs(b, a))), sp.Eq(b, a)))
        generic = closed(Y)
        return sp.Piecewise(*branches, (generic, True)) if branches else generic


def _by_term(fn, expr: sp.Expr) -> sp.Expr:
    return sp.Add(*[fn(t) for t in sp.Add.make_args(expr)])


def _roots(poly: sp.Poly) -> list[sp.Expr]:
    if poly.degree() < 1:
        return []
    found = sp.roots(poly, multiple=True)
    if len(found) != poly.degree():
        raise DesignError(f"could not find the roots of {poly.as_expr()} in closed form")
    return found


def normalized(transfer: sp.Expr) -> sp.Expr:
    """``H(z)/H(1)``: the same filter with unit DC gain exactly, e.g. for float coefficients
    from ``scipy.signal`` whose DC gain is ``0.9999999`` rather than 1.

    Example:
        >>> h = normalized(0.3000001 * z**2 / (z**2 - 0.9 * z + 0.2))
        >>> abs(float(h.subs(z, 1)) - 1) < 1e-15
        True
    """
    transfer = sp.sympify(transfer)
    _rational_in_z(transfer)
    dc = sp.cancel(transfer.subs(z, 1))
    if dc == 0 or dc.has(sp.zoo, sp.oo, sp.nan):
        raise DesignError(f"transfer function {transfer} has DC gain {dc}: it cannot be "
                          "normalised to 1")
    return sp.cancel(transfer / dc)


def realize(name: str, transfer: sp.Expr, input: sp.Expr) -> Filter:
    """Realise ``H(z)`` (proper, rational in ``z``) as states in observable canonical form.

    The first state is named ``name`` and equals the filter output; further states are
    ``name_1, name_2, ...``. For order >= 2 a temporary ``name_prev`` keeps the old output.

    Example:
        >>> import sympy as sp
        >>> b = sp.Symbol("beta1", real=True)
        >>> f = realize("m", (1 - b) * z / (z - b), sp.Symbol("g", real=True))
        >>> [(a.target, a.expr, a.kind) for a in f.assignments]
        [(m, beta1*m + g*(1 - beta1), 'state')]
    """
    transfer = sp.sympify(transfer)
    names, _ = _realisation(name, transfer, input)
    return Filter(name, transfer, sp.sympify(input), names)


def _realisation(name: str, transfer: sp.Expr, input: sp.Expr
                 ) -> tuple[tuple[str, ...], tuple[Line, ...]]:
    transfer = sp.sympify(transfer)
    _rational_in_z(transfer)
    # H(z) = z * G(z) with G strictly proper: x_k = A x_{k-1} + B u_k, y_k = x_k[0]
    gn, gd = _rational_in_z(sp.cancel(transfer / z))
    lead = gd.LC()
    den = [c / lead for c in gd.all_coeffs()]  # 1, a1, ..., an
    n = len(den) - 1
    num = [c / lead for c in gn.all_coeffs()]
    num = [sp.Integer(0)] * (n - len(num)) + num  # c1..cn
    names = (name,) + tuple(f"{name}_{i}" for i in range(1, n))
    syms = [sp.Symbol(s, real=True) for s in names]
    u = sp.sympify(input)
    out: list[Line] = []
    prev = syms[0]
    if n >= 2:
        prev = sp.Symbol(f"{name}_prev", real=True)
        out.append(Line(prev, syms[0], "let"))
        if len(u.free_symbols) > 1 or not u.is_Symbol:
            u_sym = sp.Symbol(f"{name}_in", real=True)
            out.append(Line(u_sym, u, "let"))
            u = u_sym
    for i in range(n):
        nxt = syms[i + 1] if i + 1 < n else 0
        rhs = -sp.factor(den[i + 1]) * prev + nxt + sp.factor(num[i]) * u
        out.append(Line(syms[i], rhs, "state"))
    return names, tuple(out)


class FilterHandle(sp.Symbol):
    """What :meth:`DesignBuilder.filter` returns: the filter's output (its first state) as a
    real sympy symbol, usable in ``let``, ``assign`` and ``update``, that also answers the
    filter's questions (``step_response``, ``impulse_response``, ``poles``, ``zeros``,
    ``dc_gain``; ``.filter`` is the :class:`ctopt.filters.Filter`).

    The builder stores plain symbols (:attr:`symbol`), so a design never holds a handle.

    Example:
        >>> import sympy as sp
        >>> from ctopt.design import DesignBuilder, UNIT, g, k
        >>> b = DesignBuilder("ema")
        >>> beta = b.hyper("beta", 0.9, UNIT)
        >>> v = b.filter("v", (1 - beta) * z / (z - beta), input=g)
        >>> v / v.step_response(k)
        v/(1 - beta**k)
        >>> b.let("v_hat", v / v.step_response(k)).name, v.symbol == sp.Symbol("v", real=True)
        ('v_hat', True)
        >>> v.dc_gain(), v.poles()
        (1, [beta])
    """

    def __new__(cls, flt):
        obj = sp.Symbol.__xnew__(cls, flt.output, real=True)  # uncached: each handle its own
        obj.filter = flt
        return obj

    def __getnewargs_ex__(self):
        return (self.filter,), {}

    @property
    def symbol(self) -> sp.Symbol:
        """The plain symbol of the filter's output."""
        return sp.Symbol(self.name, real=True)

    def _ask(self, question, *args):
        """``question(*args)``; sympy's numeric root finder failing (repeated poles given by
        float coefficients) is a :class:`DesignError` naming the filter."""
        from mpmath.libmp import NoConvergence

        try:
            return question(*args)
        except NoConvergence as exc:
            raise DesignError(
                f"filter {self.name!r}: the roots of {self.filter.transfer} could not be found "
                f"numerically ({exc}); give repeated poles exactly (e.g. as Rational)") from None

    def step_response(self, step: sp.Expr = k) -> sp.Expr:
        """The filter's response to a unit step from zero state (its bias correction)."""
        return self._ask(self.filter.step_response, step)

    def impulse_response(self, step: sp.Expr = k) -> sp.Expr:
        """The filter's response to a unit impulse at ``k = 1``."""
        return self._ask(self.filter.impulse_response, step)

    def poles(self) -> list[sp.Expr]:
        """The filter's poles with multiplicity."""
        return self._ask(self.filter.poles)

    def zeros(self) -> list[sp.Expr]:
        """The filter's finite zeros with multiplicity."""
        return self._ask(self.filter.zeros)

    def dc_gain(self) -> sp.Expr:
        """``H(1)``."""
        return self.filter.dc_gain()

    @property
    def transfer(self) -> sp.Expr:
        return self.filter.transfer

    @property
    def states(self) -> tuple[str, ...]:
        return self.filter.states
