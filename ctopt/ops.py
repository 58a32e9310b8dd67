"""The expression language of the IR, defined once: signals, functions, relations, logic,
products, powers and group reductions.

Every consumer of a design reads this module instead of keeping its own table: the design's
validation (which functions are allowed), the float64 oracle (numpy evaluation), the printers of
generated code (scalar, tensor and in-place torch source), the design-file format (node tags)
and the analyses (which arguments need a guard, which functions are not rational). Adding a
function is one :class:`Function` entry in :data:`FUNCTIONS` (plus tests).

Two rules that float parity rests on live here too: a product is computed as *the numerator
product, then one division by the denominator product* (:func:`split_product`), and a power's
exponent picks one of a few forms (:func:`power_form`: square root, reciprocal square root,
reciprocal, square, general power). The oracle evaluates and the printers print by them.

Example:
    >>> import sympy as sp
    >>> from ctopt import ops
    >>> ops.function_of(sp.tanh(sp.Symbol("x"))).tensor
    'torch.tanh({x})'
    >>> x, y = sp.symbols("x y", real=True)
    >>> ops.split_product(x / (y * sp.sqrt(y + 1)))
    ([x], [y, sqrt(y + 1)])
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import sympy as sp

__all__ = [
    "FUNCTIONS", "LOGIC", "MINMAX", "REDUCTIONS", "RELATIONS", "SIGNALS", "Function", "Logic",
    "MinMax", "ReductionKind", "Relation", "allowed_functions", "function_of", "g", "k",
    "power_form", "split_product", "theta",
]

# ----------------------------------------------------------------------------------- signals
#: The gradient of the current coordinate.
g = sp.Symbol("g", real=True)
#: The parameter before the step.
theta = sp.Symbol("theta", real=True)
#: The step number, starting at 1.
k = sp.Symbol("k", integer=True, positive=True)

#: The signals a design reads, by name.
SIGNALS: Mapping[str, sp.Symbol] = MappingProxyType({"g": g, "theta": theta, "k": k})


# --------------------------------------------------------------------------------- functions
@dataclass(frozen=True)
class Function:
    """One function of one argument that an expression may use.

    ``tag``: its node type in design files; ``sympy``: its sympy class; ``numpy``: its float64
    evaluation; ``scalar``/``tensor``: source templates (over ``{x}``) for Python floats in the
    per-step scalar part and for torch tensors; ``inplace``: the name of torch's in-place op
    (``x.<op>_()``, ``torch._foreach_<op>_``), or None to print it out of place; ``guard``: the
    kind of guard its argument needs (``"log"``: positive), or None for every real argument.
    """

    tag: str
    sympy: type
    numpy: Callable
    scalar: str
    tensor: str
    inplace: str | None
    guard: str | None = None


#: The functions of one argument. ``sign`` has no in-place form: torch's sign turns NaN into 0,
#: so it is printed as the runtime's ``_nan_sign``. Scalar helpers (``_exp``, ``_log``,
#: ``_sign``, ``_tanh``) come from the runtime and return IEEE values instead of raising; they
#: take 0-d tensors too (the capturable step runs the scalar part on the device).
FUNCTIONS: tuple[Function, ...] = (
    Function("Abs", sp.Abs, np.abs, "abs({x})", "torch.abs({x})", "abs"),
    Function("sign", sp.sign, np.sign, "_sign({x})", "_nan_sign({x})", None),
    Function("exp", sp.exp, np.exp, "_exp({x})", "torch.exp({x})", "exp"),
    Function("log", sp.log, np.log, "_log({x})", "torch.log({x})", "log", guard="log"),
    Function("tanh", sp.tanh, np.tanh, "_tanh({x})", "torch.tanh({x})", "tanh"),
)

_BY_CLASS: dict[type, Function] = {f.sympy: f for f in FUNCTIONS}


def function_of(expr: sp.Basic) -> Function | None:
    """The :class:`Function` entry of ``expr``'s head, or None when it is not one.

    Example:
        >>> function_of(sp.exp(sp.Symbol("x"))).numpy is np.exp
        True
    """
    return _BY_CLASS.get(type(expr))


@dataclass(frozen=True)
class MinMax:
    """``Max`` or ``Min`` of several arguments: numpy's elementwise op, the scalar runtime helper,
    torch's elementwise op and the ``clamp`` bound a scalar argument becomes."""

    tag: str
    sympy: type
    numpy: Callable
    scalar: str
    torch: str
    clamp: str


MINMAX: Mapping[type, MinMax] = MappingProxyType({
    sp.Max: MinMax("Max", sp.Max, np.maximum, "_max", "maximum", "min"),
    sp.Min: MinMax("Min", sp.Min, np.minimum, "_min", "minimum", "max"),
})


def allowed_functions() -> tuple[type, ...]:
    """The sympy function classes a design may use (``Piecewise`` included).

    Example:
        >>> sp.tanh in allowed_functions() and sp.sin not in allowed_functions()
        True
    """
    return (*MINMAX, *(f.sympy for f in FUNCTIONS), sp.Piecewise)


# ------------------------------------------------------------------------ relations and logic
@dataclass(frozen=True)
class Relation:
    """A comparison: its file tag, sympy class, numpy op and Python operator."""

    tag: str
    sympy: type
    numpy: Callable
    text: str


RELATIONS: Mapping[type, Relation] = MappingProxyType({r.sympy: r for r in (
    Relation("Eq", sp.Equality, operator.eq, "=="),
    Relation("Ne", sp.Unequality, operator.ne, "!="),
    Relation("Lt", sp.StrictLessThan, operator.lt, "<"),
    Relation("Le", sp.LessThan, operator.le, "<="),
    Relation("Gt", sp.StrictGreaterThan, operator.gt, ">"),
    Relation("Ge", sp.GreaterThan, operator.ge, ">="),
)})


@dataclass(frozen=True)
class Logic:
    """And/Or (joined by ``scalar``/``tensor``) or Not (a template over ``{x}``)."""

    tag: str
    sympy: type
    numpy: Callable
    scalar: str
    tensor: str


LOGIC: Mapping[type, Logic] = MappingProxyType({op.sympy: op for op in (
    Logic("And", sp.And, np.logical_and, " and ", " & "),
    Logic("Or", sp.Or, np.logical_or, " or ", " | "),
    Logic("Not", sp.Not, np.logical_not, "(not {x})", "(~{x})"),
)})


# ------------------------------------------------------------------------- products, powers
def split_product(expr: sp.Mul | list) -> tuple[list[sp.Expr], list[sp.Expr]]:
    """A product (or its list of factors) as (numerator factors, denominator factors): every
    factor with a negative numeric exponent goes below the line with the exponent's sign flipped.
    The oracle computes, and the printers print, ``prod(numerator) / prod(denominator)`` -- one
    division, factors multiplied left to right -- so float64 results agree to rounding.

    A square among other factors is multiplied in as its base twice, last: ``c*x**2`` is
    ``(c*x)*x``, as torch's ``addcmul_(x, x, value=c)`` computes it (``x*x`` alone would
    overflow first at the edge of the float range).

    Example:
        >>> x, y, c = sp.symbols("x y c", real=True)
        >>> split_product(2 * x / y**2)
        ([2, x], [y**2])
        >>> split_product(c * x**2)
        ([c, x, x], [])
    """
    num, den, squares = [], [], []
    factors = expr if isinstance(expr, list) else list(expr.args)
    for a in factors:
        if a.is_Pow and a.exp.is_Number and a.exp < 0:
            den.append(a.base if a.exp == -1 else sp.Pow(a.base, -a.exp, evaluate=False))
        elif a.is_Pow and a.exp == 2 and len(factors) > 1:
            squares += [a.base, a.base]
        else:
            num.append(a)
    return num + squares, den


def power_form(exponent: sp.Expr) -> str:
    """How a power with this exponent is computed: ``"sqrt"``, ``"rsqrt"`` (``1/sqrt``),
    ``"recip"`` (``1/x``), ``"square"`` or ``"pow"``.

    Example:
        >>> power_form(sp.Rational(-1, 2)), power_form(sp.Integer(3))
        ('rsqrt', 'pow')
    """
    if exponent == sp.S.Half:
        return "sqrt"
    if exponent == -sp.S.Half:
        return "rsqrt"
    if exponent == -1:
        return "recip"
    if exponent == 2:
        return "square"
    return "pow"


# ------------------------------------------------------------------------------- reductions
@dataclass(frozen=True)
class ReductionKind:
    """A group reduction: ``numpy(values)`` reduces float64 values over their last axis (the
    coordinates of a group; leading axes are a batch); ``symbolic(x)`` is its value on a single
    coordinate ``x`` (what the one-coordinate analyses use)."""

    name: str
    numpy: Callable
    symbolic: Callable


def _l2_norm(values: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(values * values, axis=-1))


#: Reductions by kind (:attr:`ctopt.design.Reduction.kind`).
REDUCTIONS: Mapping[str, ReductionKind] = MappingProxyType({
    "l2_norm": ReductionKind("l2_norm", _l2_norm, sp.Abs),
})
