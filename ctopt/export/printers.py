"""Printers: a :class:`~ctopt.export.codegen.Program` as Python source.

Three printers, one per kind of code:

- :func:`scalar_code` — the per-step scalar part, plain Python floats (float64); ``Piecewise``
  becomes ``a if c else b`` so an untaken branch is never evaluated.
- :func:`tensor_code` — the elementwise part with torch operators; it runs on tensors with Python
  floats (the for-loop path) or 0-d tensors (the compiled path) as coefficients.
- :class:`ForeachPrinter` — the elementwise part as ``torch._foreach_*`` calls over lists,
  updating states and parameters in place where the old value is dead.

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

__all__ = ["ForeachPrinter", "python_name", "scalar_code", "tensor_code"]

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


class ForeachPrinter:
    """Print elementwise lines as ``torch._foreach_*`` calls over lists of tensors.

    ``elementwise`` names the list-valued symbols (inputs and earlier lines); ``inplace`` maps a
    line's target to an input list that may be overwritten to hold it (a dead old state or theta).
    Each subexpression allocates at most one fresh list; later operations on it are in place.

    Example:
        >>> import sympy as sp
        >>> m, g, c = sp.symbols("s_m g c", real=True)
        >>> fp = ForeachPrinter({"s_m", "g"})
        >>> fp.line("m_new", c * m + (1 - c) * g, inplace="s_m")
        >>> print("\\n".join(fp.lines))
        torch._foreach_mul_(s_m, c)
        torch._foreach_add_(s_m, g, alpha=(1.0 + (-1.0 * c)))
        m_new = s_m
    """

    def __init__(self, elementwise: set[str]):
        self.elementwise = set(elementwise)
        self.lines: list[str] = []
        self._n = 0

    def _tmp(self) -> str:
        self._n += 1
        return f"_t{self._n}"

    def is_elem(self, e: sp.Basic) -> bool:
        return any(python_name(s.name) in self.elementwise for s in e.free_symbols)

    def scalar(self, e: sp.Basic) -> str:
        return scalar_code(e)

    def line(self, target: str, expr: sp.Expr, inplace: str | None = None) -> None:
        """Emit the code computing ``target`` (a list) from ``expr``."""
        ref, _ = self.emit(expr, inplace)
        self.lines.append(f"{target} = {ref}")
        self.elementwise.add(target)

    # ------------------------------------------------------------------ emitters
    def _fresh(self, call: str) -> tuple[str, bool]:
        name = self._tmp()
        self.lines.append(f"{name} = {call}")
        return name, True

    def _apply(self, op: str, acc: tuple[str, bool], extra: str = "") -> tuple[str, bool]:
        ref, fresh = acc
        sep = ", " if extra else ""
        if fresh:
            self.lines.append(f"torch._foreach_{op}_({ref}{sep}{extra})")
            return ref, True
        return self._fresh(f"torch._foreach_{op}({ref}{sep}{extra})")

    def emit(self, e: sp.Expr, into: str | None = None) -> tuple[str, bool]:
        """Emit ``e``; return (list variable, whether it is a fresh list we may overwrite)."""
        if not self.is_elem(e):
            raise AssertionError(f"scalar expression reached the foreach printer: {e}")
        if e.is_Symbol:
            return python_name(e.name), False
        if e.is_Add:
            return self._add(e, into)
        if e.is_Mul:
            return self._mul(e, into)
        if e.is_Pow:
            return self._pow(e)
        if isinstance(e, (sp.Max, sp.Min)):
            elem = [a for a in e.args if self.is_elem(a)]
            scal = [a for a in e.args if not self.is_elem(a)]
            acc = self.emit(elem[0])
            name = "maximum" if isinstance(e, sp.Max) else "minimum"
            for a in elem[1:]:
                acc = self._apply(name, acc, self.emit(a)[0])
            clamp = "clamp_min" if isinstance(e, sp.Max) else "clamp_max"
            for a in scal:
                acc = self._apply(clamp, acc, self.scalar(a))
            return acc
        unary = {sp.Abs: "abs", sp.sign: "sign", sp.exp: "exp", sp.log: "log"}
        if type(e) in unary:
            return self._apply(unary[type(e)], self.emit(e.args[0]))
        if isinstance(e, sp.Piecewise) and not any(self.is_elem(c) for _, c in e.args):
            return self._scalar_choice(e)
        # Piecewise with elementwise conditions, relations, logic: per-tensor torch code
        return self._fresh(self._per_tensor(e))

    def _scalar_choice(self, e: sp.Piecewise) -> tuple[str, bool]:
        like = python_name(sorted(s.name for s in e.free_symbols if self.is_elem(s))[0])
        refs = []
        for value, cond in e.args:
            ref = self.emit(value)[0] if self.is_elem(value) else \
                self._fresh(f"_fe_full({self.scalar(value)}, {like})")[0]
            refs.append((ref, cond))
        out = "_fe_full(float('nan'), " + like + ")"
        for ref, cond in reversed(refs):
            out = ref if cond is sp.true else f"({ref} if {self.scalar(cond)} else {out})"
        return self._fresh(out)

    def _per_tensor(self, e: sp.Expr) -> str:
        lists = sorted(python_name(s.name) for s in e.free_symbols if self.is_elem(s))
        loop = ", ".join(f"{n}" for n in lists)
        return f"[{tensor_code(e, self.elementwise)} for {loop}{',' if len(lists) == 1 else ''} in zip({loop})]"

    def _seed(self, terms: list[sp.Expr], into: str | None) -> tuple[int, tuple[str, bool]] | None:
        """Use a term equal to ``into`` (or scalar*``into``) as an in-place accumulator."""
        if into is None:
            return None
        for i, t in enumerate(terms):
            others = [u for j, u in enumerate(terms) if j != i]
            if any(into in {python_name(s.name) for s in u.free_symbols} for u in others):
                continue
            if t.is_Symbol and python_name(t.name) == into:
                return i, (into, True)
            if t.is_Mul:
                elem = [a for a in t.args if self.is_elem(a)]
                if len(elem) == 1 and elem[0].is_Symbol and python_name(elem[0].name) == into:
                    scal = sp.Mul(*[a for a in t.args if a is not elem[0]])
                    self.lines.append(f"torch._foreach_mul_({into}, {self.scalar(scal)})")
                    return i, (into, True)
        return None

    def _add(self, e: sp.Add, into: str | None) -> tuple[str, bool]:
        terms = list(e.args)
        scal = [t for t in terms if not self.is_elem(t)]
        terms = [t for t in terms if self.is_elem(t)]
        seeded = self._seed(terms, into)
        if seeded is not None:
            i, acc = seeded
            terms.pop(i)
        else:
            acc = self.emit(terms.pop(0))
        for t in terms:
            acc = self._accumulate(acc, t)
        for t in scal:
            acc = self._apply("add", acc, self.scalar(t))
        return acc

    def _accumulate(self, acc: tuple[str, bool], t: sp.Expr) -> tuple[str, bool]:
        if t.is_Mul:
            coef = [a for a in t.args if not self.is_elem(a)]
            num, den = _split_mul([a for a in t.args if self.is_elem(a)])
            value = self.scalar(sp.Mul(*coef)) if coef else "1.0"
            if len(num) == 1 and not den and num[0].is_Pow and num[0].exp == 2:
                x = self.emit(num[0].base)[0]
                return self._apply("addcmul", acc, f"{x}, {x}, value={value}")
            if len(num) == 1 and not den:
                return self._apply("add", acc, f"{self.emit(num[0])[0]}, alpha={value}")
            if len(num) == 2 and not den:
                x, y = self.emit(num[0])[0], self.emit(num[1])[0]
                return self._apply("addcmul", acc, f"{x}, {y}, value={value}")
            if len(num) == 1 and len(den) == 1:
                x, y = self.emit(num[0])[0], self.emit(den[0])[0]
                return self._apply("addcdiv", acc, f"{x}, {y}, value={value}")
        if t.is_Pow and t.exp == 2:
            x = self.emit(t.base)[0]
            return self._apply("addcmul", acc, f"{x}, {x}")
        return self._apply("add", acc, self.emit(t)[0])

    def _mul(self, e: sp.Mul, into: str | None) -> tuple[str, bool]:
        coef = [a for a in e.args if not self.is_elem(a)]
        num, den = _split_mul([a for a in e.args if self.is_elem(a)])
        if num:
            seeded = None
            if into is not None and len(num) + len(den) == 1 and num[0].is_Symbol and \
                    python_name(num[0].name) == into:
                seeded = (into, True)
            acc = seeded or self.emit(num[0])
            for a in num[1:]:
                acc = self._apply("mul", acc, self.emit(a)[0])
        else:
            acc = self._apply("reciprocal", self.emit(den.pop(0)))
        for a in den:
            acc = self._apply("div", acc, self.emit(a)[0])
        if coef:
            acc = self._apply("mul", acc, self.scalar(sp.Mul(*coef)))
        return acc

    def _pow(self, e: sp.Pow) -> tuple[str, bool]:
        if not self.is_elem(e.base):  # scalar ** elementwise
            return self._fresh(self._per_tensor(e))
        base = self.emit(e.base)
        if e.exp == sp.S.Half:
            return self._apply("sqrt", base)
        if e.exp == -sp.S.Half:
            return self._apply("reciprocal", self._apply("sqrt", base))
        if e.exp == -1:
            return self._apply("reciprocal", base)
        if e.exp == 2:
            return self._apply("mul", base, base[0])
        if self.is_elem(e.exp):
            return self._fresh(self._per_tensor(e))
        return self._apply("pow", base, self.scalar(e.exp))
