"""Inequalities in normal form: each relation as ``p > 0`` (or ``>= 0``), written the way it
reads (``alpha*h < 2*(beta + 1)``), absolute values split, and conjunctions compared atom by atom.
The Jury test (:mod:`ctopt.analysis.stability`) and the readable, certificate and sharpness
analyses share these forms.

Example:
    >>> import sympy as sp
    >>> x = sp.Symbol("x", real=True)
    >>> positive_form(x < 2), same_region(sp.Abs(x) < 1, (x < 1) & (x > -1))
    ((2 - x, True), True)
"""

from __future__ import annotations

from collections.abc import Iterable

import sympy as sp

from ..errors import ExpressionError

__all__ = ["canonical_atoms", "natural_form", "positive_form", "same_region", "split_abs"]


# ------------------------------------------------------------------ readable inequalities
def natural_form(rel: sp.Basic) -> sp.Basic:
    """Write ``rel`` with the terms of positive sign on the side where they read naturally:
    ``2 + 2*beta - alpha*h > 0`` becomes ``alpha*h < 2*(beta + 1)``.

    Example:
        >>> a, h, b = sp.symbols("alpha h beta", real=True)
        >>> natural_form(2 + 2 * b - a * h > 0)
        alpha*h < 2*(beta + 1)
    """
    if rel in (sp.true, sp.false) or not isinstance(rel, sp.core.relational.Relational):
        return rel
    if rel.lhs.has(sp.Abs) or rel.rhs.has(sp.Abs):
        return rel
    form, strict = positive_form(rel)
    form = sp.expand(_drop_positive_factors(form))
    if form.is_number:
        return sp.true if (form > 0 if strict else form >= 0) else sp.false
    pos, neg = sp.Integer(0), sp.Integer(0)
    for term in sp.Add.make_args(form):
        coeff = term.as_coeff_Mul()[0]
        if coeff < 0:
            neg -= term
        else:
            pos += term
    pos, neg = sp.factor(pos), sp.factor(neg)
    if neg == 0:
        return pos > 0 if strict else pos >= 0
    if pos == 0:
        return neg < 0 if strict else neg <= 0
    # the side carrying symbols goes left; a pure number stays right
    if neg.is_number or (not pos.is_number and sp.count_ops(pos) < sp.count_ops(neg)):
        return pos > neg if strict else pos >= neg
    return neg < pos if strict else neg <= pos


def _drop_positive_factors(form: sp.Expr) -> sp.Expr:
    """Divide ``form`` by its factors that sympy knows are positive (a symbol declared
    positive, such as a frozen preconditioner ``r``), keeping its sign."""
    factored = sp.factor(form)
    coeff, parts = factored.as_coeff_mul()
    keep = [f for f in parts if f.is_positive is not True]
    if len(keep) == len(parts):
        return form
    return sp.sign(coeff) * sp.Mul(*keep)


def positive_form(rel: sp.Basic) -> tuple[sp.Expr, bool]:
    """``rel`` as ``(expr, strict)`` meaning ``expr > 0`` (strict) or ``expr >= 0``.

    Example:
        >>> x = sp.Symbol("x")
        >>> positive_form(x < 2)
        (2 - x, True)
    """
    if isinstance(rel, (sp.StrictGreaterThan, sp.GreaterThan)):
        return rel.lhs - rel.rhs, isinstance(rel, sp.StrictGreaterThan)
    if isinstance(rel, (sp.StrictLessThan, sp.LessThan)):
        return rel.rhs - rel.lhs, isinstance(rel, sp.StrictLessThan)
    if rel is sp.true:
        return sp.Integer(1), True
    if rel is sp.false:
        return sp.Integer(-1), True
    raise ExpressionError(f"{rel} is not an inequality")


# ------------------------------------------------------------------ symbolic equivalence
def canonical_atoms(boolean: sp.Basic, assumptions: Iterable[sp.Basic] = ()) -> frozenset:
    """A canonical set ``{(p, strict)}`` for a conjunction of inequalities, each atom written as
    ``p > 0`` (or ``>= 0``) with ``p`` an expanded polynomial with unit content; ``|x| < y``
    becomes ``y - x > 0`` and ``y + x > 0``; a denominator whose sign follows from
    ``assumptions`` (relations such as ``2*beta + 1 > 0``) is cleared.

    Example:
        >>> x = sp.Symbol("x", real=True)
        >>> canonical_atoms(sp.Abs(x) < 1) == canonical_atoms((x < 1) & (x > -1))
        True
    """
    positives = [sp.expand(positive_form(a)[0]) for a in assumptions]
    out = set()
    for atom in sp.And.make_args(boolean):
        if atom is sp.true:
            continue
        if isinstance(atom, sp.Unequality):
            out.add((_canonical_poly(atom.lhs - atom.rhs, positives), "nonzero"))
            continue
        form, strict = positive_form(atom)
        for part in split_abs(form):
            out.add((_canonical_poly(part, positives), strict))
    return frozenset(out)


def same_region(a: sp.Basic, b: sp.Basic, assumptions: Iterable[sp.Basic] = ()) -> bool:
    """Symbolic equivalence of two conjunctions of inequalities, atom by atom (after the
    normalisation of :func:`canonical_atoms`). A ``True`` answer is a proof; ``False`` only
    means the atoms differ.

    Example:
        >>> x = sp.Symbol("x", real=True)
        >>> same_region((0 < 2 * x) & (2 * x < 4), (x > 0) & (x < 2))
        True
    """
    assumed = tuple(assumptions)
    return canonical_atoms(a, assumed) == canonical_atoms(b, assumed)


def split_abs(form: sp.Expr) -> list[sp.Expr]:
    """``y - |x|`` -> ``[y - x, y + x]`` (both positive iff ``|x| < y``).

    Example:
        >>> x, y = sp.symbols("x y", real=True)
        >>> split_abs(y - sp.Abs(x))
        [-x + y, x + y]
    """
    form = sp.expand(form)
    absolute = [t for t in sp.Add.make_args(form) if t.has(sp.Abs)]
    if not absolute:
        return [form]
    if len(absolute) != 1:
        raise ExpressionError(f"cannot normalise {form} > 0 with several absolute values")
    term = absolute[0]
    rest = form - term
    coeff, inner = sp.Integer(1), sp.Integer(1)
    for f in sp.Mul.make_args(term):
        if isinstance(f, sp.Abs):
            inner *= f.args[0]
        elif f.is_number:
            coeff *= f
        else:
            raise ExpressionError(f"cannot normalise {form} > 0")
    if coeff >= 0:
        raise ExpressionError(f"{form} > 0 bounds |x| from below; not a stability condition")
    return [rest + coeff * inner, rest - coeff * inner]


def _canonical_poly(expr: sp.Expr, positives: list[sp.Expr]) -> sp.Expr:
    num, den = sp.fraction(sp.cancel(sp.together(expr)))
    sign = _sign(den, positives)
    if sign is None:
        num = sp.expand(num * den)
    elif sign < 0:
        num = -num
    num = sp.expand(num)
    if num.is_number:
        return sp.Integer(int(sp.sign(num)))
    content, primitive = num.as_content_primitive()
    return sp.expand(primitive)


def _sign(expr: sp.Expr, positives: list[sp.Expr]) -> int | None:
    if expr.is_positive:
        return 1
    if expr.is_negative:
        return -1
    if expr.is_Mul:
        total = 1
        for f in expr.args:
            s = _sign(f, positives)
            if s is None:
                return None
            total *= s
        return total
    if expr.is_Pow and expr.exp.is_integer and expr.exp.is_even:
        return 1 if _sign(expr.base, positives) else None
    if expr.is_Pow and expr.exp.is_integer:
        return _sign(expr.base, positives)
    e = sp.expand(expr)
    prim = e.as_content_primitive()
    for p in positives:
        pp = p.as_content_primitive()
        if sp.expand(prim[1] - pp[1]) == 0:
            return 1 if prim[0] > 0 else -1
        if sp.expand(prim[1] + pp[1]) == 0:
            return -1 if prim[0] > 0 else 1
    return None
