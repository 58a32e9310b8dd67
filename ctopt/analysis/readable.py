"""Readable conditions: a conjunction of inequalities simplified under the hyperparameters'
domains, with bounded work (each atom is factored once; no ``simplify``).

* a factor that is positive under the domains is dropped (``h*lr*(1 - beta1) > 0`` with
  ``lr > 0`` and ``0 <= beta1 < 1`` becomes ``h > 0``);
* an atom implied by the domains is removed (``|beta2| < 1`` for ``beta2`` in ``[0, 1)``), and
  so is a tautology (``(beta1 >= beta3) | (beta3 >= beta1)``);
* of two atoms on the same expression the weaker is removed (``x >= 0`` next to ``x > 0``).

Example:
    >>> import sympy as sp
    >>> from ctopt.domains import POSITIVE, UNIT
    >>> b, lr, h = sp.symbols("beta1 lr h", real=True)
    >>> readable([h * lr > b * h * lr, sp.Abs(b) < 1], {b: UNIT, lr: POSITIVE})
    [h > 0]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sympy as sp

from ..domains import Domain

__all__ = ["implied", "readable"]

#: Atoms with more operations than this are kept as they are (bounded work).
MAX_OPS = 400


def _assumed(domains: Mapping[sp.Symbol, Domain]) -> tuple[dict, dict]:
    """Substitutions that carry each domain: a sign-assumed symbol, and for domains inside
    ``[0, 1)`` the form ``1/(1 + s)`` with ``s > 0`` (both ``beta > 0`` and ``1 - beta > 0``)."""
    signs, unit = {}, {}
    for sym, d in domains.items():
        kw = {"real": True}
        if d.lower is not None and (d.lower > 0 or (d.lower == 0 and not d.lower_closed)):
            kw["positive"] = True
        elif d.lower is not None and d.lower >= 0:
            kw["nonnegative"] = True
        signs[sym] = sp.Symbol(sym.name, **kw)
        if (d.lower is not None and d.lower >= 0 and d.upper is not None
                and (d.upper < 1 or (d.upper == 1 and not d.upper_closed))):
            unit[sym] = 1 / (1 + sp.Symbol(f"_s_{sym.name}", positive=True))
    return signs, unit


def _sign(expr: sp.Expr, domains) -> int | None:
    """+1 / -1 when ``expr`` is positive / negative under the domains, else None."""
    signs, unit = _assumed(domains)
    for trial in (expr.xreplace(signs), expr.xreplace(unit).xreplace(signs)):
        if trial.is_positive:
            return 1
        if trial.is_negative:
            return -1
        if unit and trial.free_symbols and sp.count_ops(trial) < MAX_OPS:
            t = sp.cancel(sp.together(trial))
            if t.is_positive:
                return 1
            if t.is_negative:
                return -1
    return None


def _nonneg(expr: sp.Expr, domains, strict: bool) -> bool:
    signs, unit = _assumed(domains)
    for trial in (expr.xreplace(signs), expr.xreplace(unit).xreplace(signs)):
        if (trial.is_positive if strict else trial.is_nonnegative):
            return True
        if unit and trial.free_symbols and sp.count_ops(trial) < MAX_OPS:
            t = sp.factor_terms(sp.cancel(sp.together(trial)))
            if (t.is_positive if strict else t.is_nonnegative):
                return True
    return False


def implied(atom: sp.Basic, domains: Mapping[sp.Symbol, Domain]) -> bool:
    """Whether ``atom`` (an inequality, ``|x| < y``, or an ``Or`` of them) holds for every value
    in the domains.

    Example:
        >>> from ctopt.domains import UNIT
        >>> b = sp.Symbol("beta2", real=True)
        >>> implied(sp.Abs(b) < 1, {b: UNIT}), implied(b > sp.Rational(1, 2), {b: UNIT})
        (True, False)
    """
    if atom is sp.true:
        return True
    if isinstance(atom, sp.Or):
        if _complementary(atom):
            return True
        return any(implied(a, domains) for a in atom.args)
    if isinstance(atom, sp.And):
        return all(implied(a, domains) for a in atom.args)
    if not isinstance(atom, sp.core.relational.Relational) or isinstance(
            atom, (sp.Equality, sp.Unequality)):
        return False
    from .inequalities import positive_form, split_abs

    form, strict = positive_form(atom)
    if sp.count_ops(form) > MAX_OPS:
        return False
    try:
        parts = split_abs(form)
    except Exception:  # noqa: BLE001 - several absolute values: not decided here
        return False
    return all(_nonneg(p, domains, strict) for p in parts)


def _complementary(atom: sp.Or) -> bool:
    """``(a >= b) | (b >= a)`` and its strict/non-strict variants: always true."""
    from .inequalities import positive_form

    forms = []
    for a in atom.args:
        try:
            forms.append(positive_form(a))
        except Exception:  # noqa: BLE001
            return False
    for i, (p, strict_p) in enumerate(forms):
        for q, strict_q in forms[i + 1:]:
            if sp.expand(p + q) == 0 and not (strict_p and strict_q):
                return True
    return False


def _drop_positive_factors(atom: sp.Basic, domains) -> sp.Basic:
    """``atom`` with the factors of its positive form that are positive under the domains
    divided out (and negative ones flipping the inequality)."""
    from .inequalities import natural_form, positive_form

    if not isinstance(atom, sp.core.relational.Relational) or atom.has(sp.Abs) or isinstance(
            atom, (sp.Equality, sp.Unequality)):
        return atom
    form, strict = positive_form(atom)
    if sp.count_ops(form) > MAX_OPS:
        return atom
    coeff, factors = sp.factor_list(sp.together(form))
    num, den = sp.fraction(sp.together(form))
    if den.free_symbols:
        return atom
    keep, sign = sp.Integer(1), 1 if coeff > 0 else -1
    changed = False
    for f, m in factors:
        s = _sign(f, domains)
        if s is None:
            keep *= f ** m
        else:
            changed = True
            if s < 0 and m % 2 == 1:
                sign = -sign
    if not changed:
        return atom
    new = sign * keep
    return natural_form(new > 0 if strict else new >= 0)


def readable(atoms: Iterable[sp.Basic], domains: Mapping[sp.Symbol, Domain]) -> list[sp.Basic]:
    """The binding atoms of a conjunction under the domains (see the module doc).

    Example:
        >>> from ctopt.domains import UNIT
        >>> b1, b3 = sp.symbols("beta1 beta3", real=True)
        >>> readable([(b1 >= b3) | (b3 >= b1), b1 > b3], {b1: UNIT, b3: UNIT})
        [beta1 > beta3]
    """
    out: list[sp.Basic] = []
    for atom in atoms:
        if implied(atom, domains):
            continue
        atom = _drop_positive_factors(atom, domains)
        if atom is sp.true or implied(atom, domains):
            continue
        if atom is sp.false:
            return [sp.false]
        out.append(atom)
    return _drop_weaker(list(dict.fromkeys(out)))


def _drop_weaker(atoms: list[sp.Basic]) -> list[sp.Basic]:
    from .inequalities import positive_form

    keyed = []
    for a in atoms:
        try:
            keyed.append((a, *positive_form(a)))
        except Exception:  # noqa: BLE001 - not an inequality: keep
            keyed.append((a, None, None))
    out = []
    for a, form, strict in keyed:
        if form is not None and not strict and any(
                f is not None and s and sp.expand(f - form) == 0 for _, f, s in keyed):
            continue
        out.append(a)
    return out
