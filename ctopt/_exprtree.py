"""Expression trees: sympy expressions as JSON-ready data and back, built node by node.

The data side of design files (:mod:`ctopt.serialize`). A tree uses a few node types only
(:data:`NODE_TYPES`); building one back creates each sympy object directly from its node -- no
``eval``, no ``sympify`` of a string -- and checks names, sizes, nesting and the kinds of its
arguments (numbers where numbers belong, conditions where conditions belong). Every failure is a
:class:`ctopt.errors.DesignFileError`.

Example:
    >>> import sympy as sp
    >>> from ctopt._exprtree import expr_from_tree, expr_to_tree
    >>> x = sp.Symbol("x", real=True)
    >>> expr_from_tree(expr_to_tree(sp.sqrt(x) / 3), {"x": x})
    sqrt(x)/3
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Mapping

import mpmath.libmp as mlib
import sympy as sp

from . import ops
from .errors import DesignFileError

__all__ = ["NODE_TYPES", "DesignBudgetError", "expr_from_tree", "expr_to_tree"]


# Limits on untrusted input (generous for real designs, small enough to stay instant).
MAX_FILE_BYTES = 1_000_000
MAX_JSON_DEPTH = 128
MAX_EXPR_DEPTH = 48
MAX_NODES = 20_000
MAX_ARGS = 64
MAX_ITEMS = 256
MAX_TEXT = 10_000
MAX_INTEGER_DIGITS = 310
MAX_NUMBER_BITS = 1100
MAX_FLOAT_PRECISION = 1024
# The budget of symbolic work: what sympy does with a node (evaluating it when it is built, and
# every later analysis: factoring, gcds, Jury tables) stays cheap within these bounds.
#: bits of an exact number's numerator and denominator (sympy factors and takes gcds of them)
MAX_EXACT_BITS = 128
#: size of a numeric exponent and of its denominator (x**64 expands to degree 64)
MAX_EXPONENT = 64
#: arguments of one Max/Min, and of all Max/Min nodes of a file together (sympy compares the
#: arguments pairwise, at every level of nesting: 64 arguments take 25 s)
MAX_MINMAX_ARGS = 8
MAX_MINMAX_TOTAL = 32
#: Max/Min nested in Max/Min (sympy flattens and compares again at every level)
MAX_MINMAX_DEPTH = 4
#: a Float must be a float64: zero, or of magnitude in [4.9e-324, 1.8e308] (subnormals included)
FLOAT64_MIN, FLOAT64_MAX = math.ulp(0.0), sys.float_info.max

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_INTEGER = re.compile(rf"^-?[0-9]{{1,{MAX_INTEGER_DIGITS}}}$")
_DECIMAL = re.compile(r"^(-?)([0-9]{1,400})(?:\.([0-9]{0,400}))?(?:e([+-]?[0-9]{1,5}))?$")

# Node tags: arithmetic here, functions, relations and logic from the language table (ctopt.ops).
_NARY: dict[str, Callable] = {"Add": sp.Add, "Mul": sp.Mul,
                              **{m.tag: m.sympy for m in ops.MINMAX.values()},
                              **{op.tag: op.sympy for op in ops.LOGIC.values() if op.tag != "Not"}}
_UNARY: dict[str, Callable] = {**{f.tag: f.sympy for f in ops.FUNCTIONS}, "Not": sp.Not}
_BINARY: dict[str, Callable] = {"Pow": sp.Pow, **{r.tag: r.sympy for r in ops.RELATIONS.values()}}
_CLASS_TO_OP: dict[type, str] = {cls: tag for table in (_NARY, _UNARY, _BINARY)
                                 for tag, cls in table.items()}
NODE_TYPES = ("Symbol", "Integer", "Rational", "Float", "True", "False", "Piecewise",
              *_NARY, *_UNARY, *_BINARY)


class DesignBudgetError(DesignFileError):
    """A design file over the budget of size or symbolic work; ``budget`` names the limit
    (``"MAX_EXACT_BITS"``, ``"MAX_NODES"``, ...)."""

    def __init__(self, message: str, budget: str) -> None:
        super().__init__(message)
        self.budget = budget


def file_error(message: str) -> DesignFileError:
    return DesignFileError(message)


def budget_error(message: str, budget: str) -> DesignBudgetError:
    return DesignBudgetError(f"{message} (design-file budget {budget})", budget)


# ----------------------------------------------------------------- expressions -> trees
def expr_to_tree(expr: sp.Basic) -> dict:
    """A sympy expression as a JSON-ready tree of allowed nodes.

    Example:
        >>> import sympy as sp
        >>> expr_to_tree(sp.Symbol("lr") ** 2)
        {'op': 'Pow', 'args': [{'op': 'Symbol', 'name': 'lr'}, {'op': 'Integer', 'value': '2'}]}
    """
    if isinstance(expr, sp.Symbol):
        return {"op": "Symbol", "name": expr.name}
    if isinstance(expr, sp.Integer):
        return {"op": "Integer", "value": str(int(expr))}
    if isinstance(expr, sp.Rational):
        return {"op": "Rational", "p": str(expr.p), "q": str(expr.q)}
    if isinstance(expr, sp.Float):
        if not expr.is_finite:
            raise file_error(f"cannot store the non-finite number {expr}")
        digits = mlib.prec_to_dps(expr._prec) + 3  # enough for an exact round trip
        return {"op": "Float", "value": mlib.to_str(expr._mpf_, digits), "precision": expr._prec}
    if expr is sp.true or expr is sp.false:
        return {"op": "True" if expr is sp.true else "False"}
    if isinstance(expr, sp.Piecewise):
        return {"op": "Piecewise", "pieces": [
            {"value": expr_to_tree(v), "cond": expr_to_tree(c)} for v, c in expr.args]}
    op = _CLASS_TO_OP.get(type(expr))
    if op is None:
        raise file_error(
            f"{type(expr).__name__} ({expr}) is not a node type of the design-file format; "
            f"allowed: {', '.join(NODE_TYPES)}"
        )
    return {"op": op, "args": [expr_to_tree(a) for a in expr.args]}


# ----------------------------------------------------------------- trees -> expressions
def expr_from_tree(tree: object, symbols: Mapping[str, sp.Symbol]) -> sp.Basic:
    """Build a sympy expression from a tree; names must be keys of ``symbols``.

    Example:
        >>> import sympy as sp
        >>> lr = sp.Symbol("lr", real=True)
        >>> expr_from_tree(expr_to_tree(lr**2 / 3), {"lr": lr})
        lr**2/3
    """
    return TreeBuilder().build(tree, symbols, "expression")


class TreeBuilder:
    """Builds sympy objects from trees, counting nodes across a whole file."""

    def __init__(self) -> None:
        self.nodes = 0
        self.minmax_args = 0
        self.minmax_depth = 0

    def build(self, tree: object, symbols: Mapping[str, sp.Symbol], where: str) -> sp.Basic:
        expr = _typed(self._node(tree, symbols, where, 0), False, "the expression", where)
        try:
            expr_to_tree(expr)  # what sympy evaluated must itself be an allowed tree
        except DesignFileError as exc:
            raise file_error(f"{where}: the expression evaluates to something unsupported: {exc}") \
                from None
        return expr

    def _node(self, tree: object, symbols: Mapping[str, sp.Symbol], where: str, depth: int):
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise budget_error(f"{where}: the file has more than {MAX_NODES} expression nodes",
                               "MAX_NODES")
        if depth > MAX_EXPR_DEPTH:
            raise budget_error(f"{where}: expression nested deeper than {MAX_EXPR_DEPTH} levels",
                               "MAX_EXPR_DEPTH")
        if not isinstance(tree, dict):
            raise file_error(f"{where}: an expression node must be an object, not {kind_of(tree)}")
        op = tree.get("op")
        if not isinstance(op, str):
            raise file_error(f"{where}: an expression node needs a string field 'op'")
        if op not in NODE_TYPES:
            raise file_error(
                f"{where}: unknown node type {short(op)}; allowed: {', '.join(NODE_TYPES)}"
            )
        if op == "Symbol":
            check_keys(tree, {"op", "name"}, where)
            name = tree["name"]
            if not isinstance(name, str) or name not in symbols:
                known = ", ".join(sorted(symbols))
                raise file_error(f"{where}: unknown name {short(name)}; this design declares: {known}")
            return symbols[name]
        if op in ("Integer", "Rational", "Float"):
            return _number(op, tree, where)
        if op in ("True", "False"):
            check_keys(tree, {"op"}, where)
            return sp.true if op == "True" else sp.false
        if op == "Piecewise":
            check_keys(tree, {"op", "pieces"}, where)
            pieces = checked_list(tree["pieces"], f"{where}: Piecewise 'pieces'", 1, MAX_ARGS)
            pairs = []
            for piece in pieces:
                if not isinstance(piece, dict):
                    raise file_error(f"{where}: a Piecewise piece must be an object with 'value' "
                                "and 'cond'")
                check_keys(piece, {"value", "cond"}, where)
                value = self._node(piece["value"], symbols, where, depth + 1)
                cond = self._node(piece["cond"], symbols, where, depth + 1)
                pairs.append((_typed(value, False, "Piecewise", where),
                              _typed(cond, True, "Piecewise", where)))
            return _checked(sp.Piecewise(*pairs), where)
        check_keys(tree, {"op", "args"}, where)
        arity = (1, 1) if op in _UNARY else (2, 2) if op in _BINARY else (1, MAX_ARGS)
        raw = checked_list(tree["args"], f"{where}: {op} 'args'", *arity)
        minmax = op in ("Max", "Min")
        if minmax:
            self._minmax(len(raw), op, where)
        self.minmax_depth += minmax
        try:
            args = [self._node(a, symbols, where, depth + 1) for a in raw]
        finally:
            self.minmax_depth -= minmax
        for arg in args:
            _typed(arg, op in ("And", "Or", "Not"), op, where)
        if op == "Pow":
            _check_exponent(args[1], where)
        if op in _UNARY:
            return _checked(_UNARY[op](args[0]), where)
        if op in _BINARY:
            return _checked(_BINARY[op](*args), where)
        return _checked(_NARY[op](*args), where)


    def _minmax(self, count: int, op: str, where: str) -> None:
        if count > MAX_MINMAX_ARGS:
            raise budget_error(f"{where}: {op} of {count} arguments; at most {MAX_MINMAX_ARGS} "
                               "are allowed", "MAX_MINMAX_ARGS")
        if self.minmax_depth >= MAX_MINMAX_DEPTH:
            raise budget_error(f"{where}: Max/Min nested more than {MAX_MINMAX_DEPTH} levels "
                               "deep in one another", "MAX_MINMAX_DEPTH")
        self.minmax_args += count
        if self.minmax_args > MAX_MINMAX_TOTAL:
            raise budget_error(f"{where}: the file's Max/Min nodes have more than "
                               f"{MAX_MINMAX_TOTAL} arguments in all", "MAX_MINMAX_TOTAL")


_CONDITIONS = (sp.core.relational.Relational, sp.logic.boolalg.BooleanFunction,
               sp.logic.boolalg.BooleanAtom)


def _typed(expr: sp.Basic, condition: bool, op: str, where: str) -> sp.Basic:
    """Numbers where numbers belong, conditions (comparisons and their And/Or/Not) elsewhere."""
    if condition and not isinstance(expr, _CONDITIONS):
        raise file_error(f"{where}: {op} needs a condition (a comparison, or And/Or/Not of "
                    f"comparisons), got {short(str(expr))}")
    if not condition and (not isinstance(expr, sp.Expr) or isinstance(expr, _CONDITIONS)):
        raise file_error(f"{where}: {op} needs a number, got the condition {short(str(expr))}")
    return expr


def _number(op: str, tree: dict, where: str) -> sp.Number:
    if op == "Integer":
        check_keys(tree, {"op", "value"}, where)
        return sp.Integer(_parse_int(tree["value"], where))
    if op == "Rational":
        check_keys(tree, {"op", "p", "q"}, where)
        p, q = _parse_int(tree["p"], where), _parse_int(tree["q"], where)
        if q <= 0:
            raise file_error(f"{where}: a Rational needs a positive denominator, got {q}")
        return _checked(sp.Rational(p, q), where)
    check_keys(tree, {"op", "value", "precision"}, where)
    prec = tree["precision"]
    if type(prec) is not int or not 2 <= prec <= MAX_FLOAT_PRECISION:
        raise file_error(f"{where}: a Float's precision must be an integer in "
                    f"[2, {MAX_FLOAT_PRECISION}] bits")
    value = tree["value"]
    match = _DECIMAL.match(value) if isinstance(value, str) else None
    if match is None:
        raise file_error(f"{where}: {short(value)} is not a decimal number (digits, '.', 'e' only)")
    sign, whole, frac, exponent = match.groups()
    frac = frac or ""
    power = int(exponent or 0) - len(frac)
    mantissa = int(whole + frac) * (-1 if sign else 1)
    if mantissa == 0:
        return sp.Float(0, precision=prec)
    if abs(power + len(str(abs(mantissa)))) > 330:
        raise file_error(f"{where}: the Float {short(value)} is outside the supported range")
    exact = sp.Rational(mantissa * 10**max(power, 0), 10**max(-power, 0))
    return _float64(sp.Float(exact, precision=prec), where)


def _float64(number: sp.Float, where: str) -> sp.Float:
    """A nonzero Float must lie in float64's range: beyond it the exported optimizer
    would compute with inf (a Python NameError in generated code) or a silent 0."""
    size = abs(number)
    if size > FLOAT64_MAX or 0 < size < FLOAT64_MIN:
        raise file_error(f"{where}: the Float {str(number)[:30]} is outside the supported range "
                         f"of float64 ([{FLOAT64_MIN:.3g}, {FLOAT64_MAX:.3g}] in magnitude)")
    return number


def _parse_int(text: object, where: str) -> int:
    if not isinstance(text, str) or not _INTEGER.match(text):
        raise file_error(f"{where}: {short(text)} is not an integer string of at most "
                    f"{MAX_INTEGER_DIGITS} digits")
    value = int(text)
    if value.bit_length() > MAX_EXACT_BITS:
        raise budget_error(f"{where}: an exact number of {value.bit_length()} bits; at most "
                           f"{MAX_EXACT_BITS} are allowed (write a Float for a large value)",
                           "MAX_EXACT_BITS")
    return value


def _check_exponent(exponent: sp.Basic, where: str) -> None:
    if exponent.is_Number:
        bound = exponent.q if exponent.is_Rational else 1
        if abs(exponent) > MAX_EXPONENT or bound > MAX_EXPONENT:
            raise budget_error(f"{where}: the exponent {str(exponent)[:40]} exceeds the limit "
                               f"{MAX_EXPONENT}", "MAX_EXPONENT")


def _checked(expr: sp.Basic, where: str) -> sp.Basic:
    """Reject numbers that grew too large while sympy evaluated a node."""
    for item in (expr, *expr.args):
        if isinstance(item, sp.Rational):
            bits = max(abs(item.p).bit_length(), item.q.bit_length())
            if bits > MAX_EXACT_BITS:
                raise budget_error(f"{where}: an exact number grows to {bits} bits; at most "
                                   f"{MAX_EXACT_BITS} are allowed", "MAX_EXACT_BITS")
        elif isinstance(item, sp.Float) and item.is_finite and item != 0:
            _float64(item, where)
    if isinstance(expr, sp.Expr) and not expr.is_Number and not expr.free_symbols:
        _constant(expr, where)
    return expr


def _constant(expr: sp.Expr, where: str) -> None:
    """A constant subexpression (``exp(1000)``, ``log(3)/7``) must be a finite real float64:
    the exported optimizer computes it in float64."""
    value = sp.N(expr, 17)
    if not isinstance(value, sp.Float) or not value.is_finite:
        return  # complex or infinite values are refused as unsupported node types
    size = abs(value)
    if size > FLOAT64_MAX or 0 < size < FLOAT64_MIN:
        raise file_error(f"{where}: the constant {short(str(expr))} = {str(value)[:24]} is "
                         "outside the range of float64")


# ------------------------------------------------------------------------ helpers
def kind_of(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def short(value: object) -> str:
    if isinstance(value, int) and abs(value).bit_length() > 256:
        return f"<an integer of {abs(value).bit_length()} bits>"
    if isinstance(value, (list, dict)) and len(value) > 8:
        return f"<{kind_of(value)} of {len(value)} entries>"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"<{kind_of(value)}>"
    return text if len(text) <= 80 else text[:77] + "..."


def check_keys(obj: dict, allowed: set[str], where: str, required: set[str] | None = None) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise file_error(f"{where}: unknown field(s) {short(extra)}; expected {sorted(allowed)}")
    missing = sorted((allowed if required is None else required) - set(obj))
    if missing:
        raise file_error(f"{where}: missing field(s) {missing}")


def checked_list(value: object, where: str, low: int = 0, high: int = MAX_ITEMS) -> list:
    if not isinstance(value, list):
        raise file_error(f"{where} must be a list, not {kind_of(value)}")
    if not low <= len(value) <= high:
        raise file_error(f"{where} must have between {low} and {high} entries, not {len(value)}")
    return value


def checked_text(value: object, where: str, *, optional: bool = False, limit: int = MAX_TEXT):
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise file_error(f"{where} must be a string, not {kind_of(value)}")
    if len(value) > limit:
        raise file_error(f"{where} is longer than {limit} characters")
    return value


def checked_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise file_error(f"{where}: {short(value)} is not a valid name (a letter, then letters, digits "
                    "or '_'; at most 64 characters)")
    return value


def checked_real(value: object, where: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise file_error(f"{where} must be a number, not {kind_of(value)}")
    if isinstance(value, int) and abs(value).bit_length() > 1000 or not math.isfinite(value):
        raise file_error(f"{where} must be finite")
    return value


def checked_flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise file_error(f"{where} must be true or false, not {kind_of(value)}")
    return value
