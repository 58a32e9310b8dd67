"""Printers: a :class:`~ctopt.export.codegen.Program` as Python source.

Two printers, one per kind of code (the in-place printer of the eager paths is
:mod:`ctopt.export.inplace`):

- :func:`scalar_code` — the per-step scalar part, plain Python floats (float64); ``Piecewise``
  becomes ``a if c else b`` so an untaken branch is never evaluated.
- :func:`tensor_code` — the elementwise part with torch operators; it runs on tensors with Python
  floats (the for-loop path) or 0-d tensors (the compiled path) as coefficients.

Products are printed like the oracle evaluates them (numerator product, then one division), so
float64 results agree with it to rounding.

Example:
    >>> import sympy as sp
    >>> x, c = sp.symbols("x c", real=True)
    >>> tensor_code(c * x / sp.sqrt(x + 1))
    '((c * x) / torch.sqrt((1.0 + x)))'
    >>> scalar_code(sp.Piecewise((0, sp.Eq(c, 1)), (1 / c, True)))
    '(0.0 if (c == 1.0) else _div(1.0, c))'
"""

from __future__ import annotations

import keyword
from collections.abc import Callable

import sympy as sp

__all__ = ["python_name", "scalar_code", "tensor_code"]

_RELATION_OPS = {
    sp.Equality: "==", sp.Unequality: "!=", sp.StrictLessThan: "<", sp.LessThan: "<=",
    sp.StrictGreaterThan: ">", sp.GreaterThan: ">=",
}
_RESERVED = {"torch", "math", "h", "red", "coef", "self", "cls"}


def python_name(name: str) -> str:
    """A design name as a safe Python identifier (keywords and builtins get a ``v_`` prefix).

    Example:
        >>> python_name("lambda"), python_name("lr")
        ('v_lambda', 'lr')
    """
    if keyword.iskeyword(name) or name in dir(__builtins__) or name in _RESERVED:
        return f"v_{name}"
    return name


def _number(expr: sp.Basic) -> str:
    if expr is sp.true or expr is sp.false:
        return str(bool(expr))
    return repr(float(expr))


def _split_mul(expr: sp.Mul | list) -> tuple[list[sp.Expr], list[sp.Expr]]:
    num, den = [], []
    for a in (expr if isinstance(expr, list) else expr.args):
        if a.is_Pow and a.exp.is_Number and a.exp < 0:
            den.append(a.base if a.exp == -1 else sp.Pow(a.base, -a.exp, evaluate=False))
        else:
            num.append(a)
    return num, den


def _exponent(e: sp.Expr, code: Callable[[sp.Expr], str]) -> str:
    if e.is_Integer:
        return str(int(e))
    return code(e)


def scalar_code(expr: sp.Basic, names: dict[str, str] | None = None) -> str:
    """Python source for a scalar expression (helpers ``_div``, ``_sqrt``, ``_pow``, ``_max``,
    ``_min``, ``_sign``, ``_exp``, ``_log`` come from the runtime).

    Example:
        >>> import sympy as sp
        >>> b, k = sp.Symbol("beta1"), sp.Symbol("k", integer=True)
        >>> scalar_code(1 / (1 - b**k))
        '_div(1.0, (1.0 + (-1.0 * _pow(beta1, k))))'
    """
    names = names or {}

    def p(e: sp.Basic) -> str:
        if e.is_Symbol:
            return names.get(e.name, python_name(e.name))
        if e.is_Number or e in (sp.true, sp.false):
            return _number(e)
        if e.is_Add:
            return "(" + " + ".join(p(a) for a in e.args) + ")"
        if e.is_Mul:
            num, den = _split_mul(e)
            top = " * ".join(p(a) for a in num) if num else "1.0"
            top = f"({top})" if len(num) > 1 else top
            if not den:
                return top
            bottom = " * ".join(p(a) for a in den)
            return f"_div({top}, {bottom if len(den) == 1 else '(' + bottom + ')'})"
        if e.is_Pow:
            if e.exp == sp.S.Half:
                return f"_sqrt({p(e.base)})"
            if e.exp == -sp.S.Half:
                return f"_div(1.0, _sqrt({p(e.base)}))"
            if e.exp == -1:
                return f"_div(1.0, {p(e.base)})"
            return f"_pow({p(e.base)}, {_exponent(e.exp, p)})"
        if isinstance(e, (sp.Max, sp.Min)):
            fn = "_max" if isinstance(e, sp.Max) else "_min"
            return f"{fn}(" + ", ".join(p(a) for a in e.args) + ")"
        if isinstance(e, sp.Piecewise):
            return _piecewise(e, p, lambda c, a, b: f"({a} if {c} else {b})", "float('nan')")
        if type(e) in _RELATION_OPS:
            return f"({p(e.lhs)} {_RELATION_OPS[type(e)]} {p(e.rhs)})"
        if isinstance(e, (sp.And, sp.Or)):
            op = " and " if isinstance(e, sp.And) else " or "
            return "(" + op.join(p(a) for a in e.args) + ")"
        if isinstance(e, sp.Not):
            return f"(not {p(e.args[0])})"
        unary = {sp.Abs: "abs", sp.sign: "_sign", sp.exp: "_exp", sp.log: "_log"}
        if type(e) in unary:
            return f"{unary[type(e)]}({p(e.args[0])})"
        raise NotImplementedError(f"cannot print {type(e).__name__} in scalar code: {e}")

    return p(expr)


def _piecewise(e: sp.Piecewise, p, choose, missing: str) -> str:
    out = missing
    for value, cond in reversed(e.args):
        out = p(value) if cond is sp.true else choose(p(cond), p(value), out)
    return out


def tensor_code(expr: sp.Basic, elementwise: set[str] | frozenset[str] = frozenset()) -> str:
    """Python/torch source for an elementwise expression (operators on tensors; coefficients may
    be Python floats or 0-d tensors). Scalar ``Piecewise`` choices go through ``_choose``.

    Example:
        >>> import sympy as sp
        >>> x, c = sp.symbols("x c", real=True)
        >>> tensor_code(sp.Max(x, c, evaluate=False), {"x"})
        'torch.clamp(x, min=c)'
    """

    def is_elem(e: sp.Basic) -> bool:
        if not elementwise:
            return bool(e.free_symbols)
        return any(python_name(s.name) in elementwise for s in e.free_symbols)

    def p(e: sp.Basic) -> str:
        if e.is_Symbol:
            return python_name(e.name)
        if e.is_Number or e in (sp.true, sp.false):
            return _number(e)
        if e.is_Add:
            return "(" + " + ".join(p(a) for a in e.args) + ")"
        if e.is_Mul:
            num, den = _split_mul(e)
            top = " * ".join(p(a) for a in num) if num else "1.0"
            top = f"({top})" if len(num) > 1 else top
            if not den:
                return top
            bottom = " * ".join(p(a) for a in den)
            return f"({top} / {bottom if len(den) == 1 else '(' + bottom + ')'})"
        if e.is_Pow:
            if e.exp == sp.S.Half:
                return f"torch.sqrt({p(e.base)})"
            if e.exp == -sp.S.Half:
                return f"(1.0 / torch.sqrt({p(e.base)}))"
            if e.exp == -1:
                return f"(1.0 / {p(e.base)})"
            if e.exp == 2:
                return f"torch.square({p(e.base)})"
            return f"torch.pow({p(e.base)}, {_exponent(e.exp, p)})"
        if isinstance(e, (sp.Max, sp.Min)):
            fn, bound = ("torch.maximum", "min") if isinstance(e, sp.Max) else ("torch.minimum", "max")
            elem = [a for a in e.args if is_elem(a)]
            scal = [a for a in e.args if a not in elem]
            out = p(elem[0])
            for a in elem[1:]:
                out = f"{fn}({out}, {p(a)})"
            for a in scal:
                out = f"torch.clamp({out}, {bound}={p(a)})"
            return out
        if isinstance(e, sp.Piecewise):
            return _piecewise(e, p, lambda c, a, b: f"_choose({c}, {a}, {b})", "float('nan')")
        if type(e) in _RELATION_OPS:
            return f"({p(e.lhs)} {_RELATION_OPS[type(e)]} {p(e.rhs)})"
        if isinstance(e, (sp.And, sp.Or)):
            op = " & " if isinstance(e, sp.And) else " | "
            return "(" + op.join(p(a) for a in e.args) + ")"
        if isinstance(e, sp.Not):
            return f"(~{p(e.args[0])})"
        unary = {sp.Abs: "torch.abs", sp.sign: "torch.sign", sp.exp: "torch.exp", sp.log: "torch.log"}
        if type(e) in unary:
            return f"{unary[type(e)]}({p(e.args[0])})"
        raise NotImplementedError(f"cannot print {type(e).__name__} in tensor code: {e}")

    return p(expr)
