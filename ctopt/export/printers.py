"""Printers: a :class:`~ctopt.export.codegen.Program` as Python source.

Two printers, one per kind of code, and the two renderings the in-place printer of the eager
paths (:mod:`ctopt.export.inplace`) writes operations in (:class:`ForeachRendering`,
:class:`TensorRendering`):

- :func:`scalar_code` — the per-step scalar part, plain Python floats (float64) or 0-d tensors
  (a capturable step, :mod:`ctopt.export.capture`); ``Piecewise`` becomes ``_choose(c, a, b)``,
  which computes both sides (the IEEE helpers raise nothing) and picks one.
- :func:`tensor_code` — the elementwise part with torch operators; it runs on tensors with Python
  floats (the for-loop path) or 0-d tensors (the compiled path) as coefficients.

Both read the expression language of :mod:`ctopt.ops`: each function's source template, and the
rules float parity rests on (products as the numerator product, then one division; the form of
each power), so float64 results agree with the oracle to rounding.

Example:
    >>> import sympy as sp
    >>> x, c = sp.symbols("x c", real=True)
    >>> tensor_code(c * x / sp.sqrt(x + 1))
    '((c * x) / torch.sqrt((1.0 + x)))'
    >>> scalar_code(sp.Piecewise((0, sp.Eq(c, 1)), (1 / c, True)))
    '_choose((c == 1.0), 0.0, _div(1.0, c))'
"""

from __future__ import annotations

import keyword
import math
from collections.abc import Callable

import sympy as sp

from .. import ops
from ..errors import UnsupportedError

__all__ = ["ForeachRendering", "TensorRendering", "python_name", "scalar_code", "tensor_code"]


def python_name(name: str) -> str:
    """``name`` itself, checked: a program's names are Python identifiers by construction (see
    :mod:`ctopt.export.codegen`), so a name that is not one is a bug of the generator.

    Example:
        >>> python_name("h_lambda")
        'h_lambda'
    """
    if not name.isidentifier() or keyword.iskeyword(name):
        raise AssertionError(f"the code generator produced the name {name!r}")
    return name


def _number(expr: sp.Basic) -> str:
    if expr is sp.true or expr is sp.false:
        return str(bool(expr))
    value = float(expr)
    return repr(value) if math.isfinite(value) else f"float({str(value)!r})"


def _exponent(e: sp.Expr, code: Callable[[sp.Expr], str]) -> str:
    if e.is_Integer:
        return str(int(e))
    return code(e)


class _Printer:
    """The recursive printer both targets share; a target names its own operations."""

    div = "({top} / {bottom})"
    sqrt = "torch.sqrt({x})"
    recip = "(1.0 / {x})"
    square = "torch.square({x})"
    pow = "torch.pow({base}, {exp})"
    choose = "_choose({c}, {a}, {b})"
    #: which source of :mod:`ctopt.ops` this printer uses ("scalar" or "tensor")
    target = "tensor"
    what = "tensor code"

    def name(self, symbol: sp.Symbol) -> str:
        return python_name(symbol.name)

    def p(self, e: sp.Basic) -> str:
        p = self.p
        if e.is_Symbol:
            return self.name(e)
        if e.is_Number or e in (sp.true, sp.false):
            return _number(e)
        if e.is_Add:
            return "(" + " + ".join(p(a) for a in e.args) + ")"
        if e.is_Mul:
            num, den = ops.split_product(e)
            top = " * ".join(p(a) for a in num) if num else "1.0"
            top = f"({top})" if len(num) > 1 else top
            if not den:
                return top
            bottom = " * ".join(p(a) for a in den)
            return self.div.format(top=top, bottom=bottom if len(den) == 1 else f"({bottom})")
        if e.is_Pow:
            form = ops.power_form(e.exp)
            if form == "sqrt":
                return self.sqrt.format(x=p(e.base))
            if form == "rsqrt":
                return self.recip.format(x=self.sqrt.format(x=p(e.base)))
            if form == "recip":
                return self.recip.format(x=p(e.base))
            if form == "square" and self.square:
                return self.square.format(x=p(e.base))
            return self.pow.format(base=p(e.base), exp=_exponent(e.exp, p))
        if type(e) in ops.MINMAX:
            return self.max_min(e)
        if isinstance(e, sp.Piecewise):
            like = self.like(e)
            out = "float('nan')" if like is None else f"torch.full_like({like}, float('nan'))"
            for i, (value, cond) in enumerate(reversed(e.args)):
                if cond is sp.true:
                    out = p(value) if like is None or i else f"_full_like({like}, {p(value)})"
                else:
                    out = self.choice(p(cond), p(value), out)
            return out
        if isinstance(e, sp.ITE):  # sympy's form of a comparison of an inlined Piecewise
            c, a, b = (p(arg) for arg in e.args)
            return self.choice(c, a, b)
        if type(e) in ops.RELATIONS:
            return f"({p(e.lhs)} {ops.RELATIONS[type(e)].text} {p(e.rhs)})"
        if type(e) in ops.LOGIC:
            text = getattr(ops.LOGIC[type(e)], self.target)
            if isinstance(e, sp.Not):
                return text.format(x=p(e.args[0]))
            return "(" + text.join(p(a) for a in e.args) + ")"
        function = ops.function_of(e)
        if function is not None:
            return getattr(function, self.target).format(x=p(e.args[0]))
        raise UnsupportedError(
            f"cannot print {type(e).__name__} in {self.what}: {e} (sympy rewrote an inlined "
            "expression into a form the generated code has no operation for)")

    def choice(self, c: str, a: str, b: str) -> str:
        return self.choose.format(c=c, a=a, b=b)

    def like(self, e: sp.Piecewise) -> str | None:
        """A tensor a ``Piecewise`` with elementwise conditions and number values takes its
        dtype from (``torch.where`` of two numbers would be float32); None elsewhere."""
        return None

    def max_min(self, e: sp.Basic) -> str:
        return f"{ops.MINMAX[type(e)].scalar}(" + ", ".join(self.p(a) for a in e.args) + ")"


class _ScalarPrinter(_Printer):
    """Plain Python floats; the runtime's ``_div``, ``_sqrt``... guard division by zero."""

    div = "_div({top}, {bottom})"
    sqrt = "_sqrt({x})"
    recip = "_div(1.0, {x})"
    square = ""
    pow = "_pow({base}, {exp})"
    # both sides are computed (IEEE helpers: nothing raises), so that the same scalar part runs
    # on 0-d tensors, where a choice is torch.where (see .export.capture)
    choose = "_choose({c}, {a}, {b})"
    target = "scalar"
    what = "scalar code"

    def __init__(self, names: dict[str, str]):
        self.names = names

    def choice(self, c: str, a: str, b: str) -> str:
        if "red(" in a or "red(" in b:  # a group reduction is a pass over the gradients: only
            return f"({a} if {c} else {b})"  # when chosen (such parts never run on the device)
        return self.choose.format(c=c, a=a, b=b)

    def name(self, symbol: sp.Symbol) -> str:
        return self.names.get(symbol.name, python_name(symbol.name))


class _TensorPrinter(_Printer):
    """torch operators on tensors; Max/Min with scalar arguments become ``torch.clamp``."""

    def __init__(self, elementwise: set[str] | frozenset[str]):
        self.elementwise = elementwise

    def is_elem(self, e: sp.Basic) -> bool:
        if not self.elementwise:
            return bool(e.free_symbols)
        return any(python_name(s.name) in self.elementwise for s in e.free_symbols)

    def like(self, e: sp.Piecewise) -> str | None:
        if any(self.is_elem(value) for value, _ in e.args):
            return None
        tensors = sorted(s.name for s in e.free_symbols if self.is_elem(s))
        return python_name(tensors[0]) if tensors else None

    def max_min(self, e: sp.Basic) -> str:
        fn, bound = f"torch.{ops.MINMAX[type(e)].torch}", ops.MINMAX[type(e)].clamp
        elem = [a for a in e.args if self.is_elem(a)]
        out = self.p(elem[0])
        for a in elem[1:]:
            out = f"{fn}({out}, {self.p(a)})"
        for a in (a for a in e.args if a not in elem):
            out = f"torch.clamp({out}, {bound}={self.p(a)})"
        return out


def scalar_code(expr: sp.Basic, names: dict[str, str] | None = None) -> str:
    """Python source for a scalar expression (helpers ``_div``, ``_sqrt``, ``_pow``, ``_max``,
    ``_min``, ``_sign``, ``_exp``, ``_log`` come from the runtime).

    Example:
        >>> import sympy as sp
        >>> b, k = sp.Symbol("beta1"), sp.Symbol("k", integer=True)
        >>> scalar_code(1 / (1 - b**k))
        '_div(1.0, (1.0 + (-1.0 * _pow(beta1, k))))'
    """
    return _ScalarPrinter(names or {}).p(expr)


def tensor_code(expr: sp.Basic, elementwise: set[str] | frozenset[str] = frozenset()) -> str:
    """Python/torch source for an elementwise expression (operators on tensors; coefficients may
    be Python floats or 0-d tensors). Scalar ``Piecewise`` choices go through ``_choose``.

    Example:
        >>> import sympy as sp
        >>> x, c = sp.symbols("x c", real=True)
        >>> tensor_code(sp.Max(x, c, evaluate=False), {"x"})
        'torch.clamp(x, min=c)'
    """
    return _TensorPrinter(elementwise).p(expr)


class ForeachRendering:
    """How the in-place printer (:mod:`ctopt.export.inplace`) writes an operation on the foreach
    path: ``torch._foreach_*`` calls over lists of tensors (``extra`` starts with ``", "``)."""

    @staticmethod
    def call(op: str, ref: str, extra: str, inplace: bool) -> str:
        return f"torch._foreach_{op}{'_' if inplace else ''}({ref}{extra})"

    @staticmethod
    def full(value: str, like: str) -> str:
        return f"_fe_full({value}, {like})"

    @staticmethod
    def copy(target: str, source: str) -> str:
        return f"torch._foreach_copy_({target}, {source})"

    @staticmethod
    def clone(source: str) -> str:
        return f"torch._foreach_clone({source})"

    @staticmethod
    def each(code: str, lists: list[str]) -> str:
        """Out-of-place tensor ``code`` over the elements of ``lists``."""
        loop = ", ".join(lists)
        return f"[{code} for {loop}{',' if len(lists) == 1 else ''} in zip({loop})]"


class TensorRendering:
    """How the in-place printer writes an operation on the for-loop path: in-place methods on
    one tensor (which also works on tensor subclasses such as DTensor)."""

    @staticmethod
    def call(op: str, ref: str, extra: str, inplace: bool) -> str:
        if not inplace:
            return f"torch.{op}({ref}{extra})"
        if op in ("maximum", "minimum"):  # no in-place method
            return f"torch.{op}({ref}{extra}, out={ref})"
        return f"{ref}.{op}_({extra[2:]})"

    @staticmethod
    def full(value: str, like: str) -> str:
        return f"torch.full_like({like}, {value})"

    @staticmethod
    def copy(target: str, source: str) -> str:
        return f"{target}.copy_({source})"

    @staticmethod
    def clone(source: str) -> str:
        return f"{source}.clone()"

    @staticmethod
    def each(code: str, lists: list[str]) -> str:
        return code
