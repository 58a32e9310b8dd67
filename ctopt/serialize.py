"""Design files: a design saved as versioned JSON data, loaded back without running any code.

Every expression is stored as a tree of a few allowed node types (``Symbol`` by name, exact
numbers, ``Add``, ``Mul``, ``Pow``, ``Max``, ``Min``, ``Abs``, ``sign``, ``exp``, ``log``,
``Piecewise``, relationals, ``And``/``Or``/``Not``). The loader builds each sympy object directly
from its node: no ``eval``, no ``sympify`` of strings, no pickle. Symbols may only be names the
design itself declares. Unknown node types or names, wrong versions, oversized or deeply nested
input all raise :class:`ctopt.errors.DesignFileError` with a message saying what is wrong and
where.

Example:
    >>> import ctopt
    >>> from ctopt.serialize import design_from_json, design_to_json
    >>> text = design_to_json(ctopt.zoo.get("adam"))
    >>> design_from_json(text).equations() == ctopt.zoo.get("adam").equations()
    True
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from types import MappingProxyType

import mpmath.libmp as mlib
import sympy as sp

from .design import (
    SIGNALS,
    Assignment,
    Design,
    Domain,
    FilterInfo,
    Hyperparameter,
    Reduction,
    State,
    theta,
)
from .errors import DesignError, DesignFileError
from .filters import z

__all__ = [
    "FORMAT", "VERSION", "design_from_dict", "design_from_json", "design_to_dict",
    "design_to_json", "expr_from_tree", "expr_to_tree", "load_design", "save_design",
]

#: The ``format`` tag of a design file, and the version this ctopt writes and reads.
FORMAT = "ctopt.design"
VERSION = 1

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
MAX_EXPONENT = 1000
MAX_FLOAT_PRECISION = 1024

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_INTEGER = re.compile(rf"^-?[0-9]{{1,{MAX_INTEGER_DIGITS}}}$")
_DECIMAL = re.compile(r"^(-?)([0-9]{1,400})(?:\.([0-9]{0,400}))?(?:e([+-]?[0-9]{1,5}))?$")

_NARY: dict[str, Callable] = {"Add": sp.Add, "Mul": sp.Mul, "Max": sp.Max, "Min": sp.Min,
                              "And": sp.And, "Or": sp.Or}
_UNARY: dict[str, Callable] = {"Abs": sp.Abs, "sign": sp.sign, "exp": sp.exp, "log": sp.log,
                               "Not": sp.Not}
_BINARY: dict[str, Callable] = {"Pow": sp.Pow, "Eq": sp.Eq, "Ne": sp.Ne, "Lt": sp.Lt,
                                "Le": sp.Le, "Gt": sp.Gt, "Ge": sp.Ge}
_CLASS_TO_OP: dict[type, str] = {
    sp.Add: "Add", sp.Mul: "Mul", sp.Max: "Max", sp.Min: "Min", sp.And: "And", sp.Or: "Or",
    sp.Abs: "Abs", sp.sign: "sign", sp.exp: "exp", sp.log: "log", sp.Not: "Not", sp.Pow: "Pow",
    sp.Equality: "Eq", sp.Unequality: "Ne", sp.StrictLessThan: "Lt", sp.LessThan: "Le",
    sp.StrictGreaterThan: "Gt", sp.GreaterThan: "Ge",
}
NODE_TYPES = ("Symbol", "Integer", "Rational", "Float", "True", "False", "Piecewise",
              *_NARY, *_UNARY, *_BINARY)


def _fail(message: str) -> DesignFileError:
    return DesignFileError(message)


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
            raise _fail(f"cannot store the non-finite number {expr}")
        digits = mlib.prec_to_dps(expr._prec) + 3  # enough for an exact round trip
        return {"op": "Float", "value": mlib.to_str(expr._mpf_, digits), "precision": expr._prec}
    if expr is sp.true or expr is sp.false:
        return {"op": "True" if expr is sp.true else "False"}
    if isinstance(expr, sp.Piecewise):
        return {"op": "Piecewise", "pieces": [
            {"value": expr_to_tree(v), "cond": expr_to_tree(c)} for v, c in expr.args]}
    op = _CLASS_TO_OP.get(type(expr))
    if op is None:
        raise _fail(
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
    return _Builder().build(tree, symbols, "expression")


class _Builder:
    """Builds sympy objects from trees, counting nodes across a whole file."""

    def __init__(self) -> None:
        self.nodes = 0

    def build(self, tree: object, symbols: Mapping[str, sp.Symbol], where: str) -> sp.Basic:
        expr = _typed(self._node(tree, symbols, where, 0), False, "the expression", where)
        try:
            expr_to_tree(expr)  # what sympy evaluated must itself be an allowed tree
        except DesignFileError as exc:
            raise _fail(f"{where}: the expression evaluates to something unsupported: {exc}") \
                from None
        return expr

    def _node(self, tree: object, symbols: Mapping[str, sp.Symbol], where: str, depth: int):
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _fail(f"{where}: the file has more than {MAX_NODES} expression nodes")
        if depth > MAX_EXPR_DEPTH:
            raise _fail(f"{where}: expression nested deeper than {MAX_EXPR_DEPTH} levels")
        if not isinstance(tree, dict):
            raise _fail(f"{where}: an expression node must be an object, not {_kind(tree)}")
        op = tree.get("op")
        if not isinstance(op, str):
            raise _fail(f"{where}: an expression node needs a string field 'op'")
        if op not in NODE_TYPES:
            raise _fail(
                f"{where}: unknown node type {_short(op)}; allowed: {', '.join(NODE_TYPES)}"
            )
        if op == "Symbol":
            _keys(tree, {"op", "name"}, where)
            name = tree["name"]
            if not isinstance(name, str) or name not in symbols:
                known = ", ".join(sorted(symbols))
                raise _fail(f"{where}: unknown name {_short(name)}; this design declares: {known}")
            return symbols[name]
        if op in ("Integer", "Rational", "Float"):
            return _number(op, tree, where)
        if op in ("True", "False"):
            _keys(tree, {"op"}, where)
            return sp.true if op == "True" else sp.false
        if op == "Piecewise":
            _keys(tree, {"op", "pieces"}, where)
            pieces = _list(tree["pieces"], f"{where}: Piecewise 'pieces'", 1, MAX_ARGS)
            pairs = []
            for piece in pieces:
                if not isinstance(piece, dict):
                    raise _fail(f"{where}: a Piecewise piece must be an object with 'value' "
                                "and 'cond'")
                _keys(piece, {"value", "cond"}, where)
                value = self._node(piece["value"], symbols, where, depth + 1)
                cond = self._node(piece["cond"], symbols, where, depth + 1)
                pairs.append((_typed(value, False, "Piecewise", where),
                              _typed(cond, True, "Piecewise", where)))
            return _checked(sp.Piecewise(*pairs), where)
        _keys(tree, {"op", "args"}, where)
        arity = (1, 1) if op in _UNARY else (2, 2) if op in _BINARY else (1, MAX_ARGS)
        args = [self._node(a, symbols, where, depth + 1)
                for a in _list(tree["args"], f"{where}: {op} 'args'", *arity)]
        for arg in args:
            _typed(arg, op in ("And", "Or", "Not"), op, where)
        if op == "Pow":
            _check_exponent(args[1], where)
        if op in _UNARY:
            return _checked(_UNARY[op](args[0]), where)
        if op in _BINARY:
            return _checked(_BINARY[op](*args), where)
        return _checked(_NARY[op](*args), where)


_CONDITIONS = (sp.core.relational.Relational, sp.logic.boolalg.BooleanFunction,
               sp.logic.boolalg.BooleanAtom)


def _typed(expr: sp.Basic, condition: bool, op: str, where: str) -> sp.Basic:
    """Numbers where numbers belong, conditions (comparisons and their And/Or/Not) elsewhere."""
    if condition and not isinstance(expr, _CONDITIONS):
        raise _fail(f"{where}: {op} needs a condition (a comparison, or And/Or/Not of "
                    f"comparisons), got {_short(str(expr))}")
    if not condition and (not isinstance(expr, sp.Expr) or isinstance(expr, _CONDITIONS)):
        raise _fail(f"{where}: {op} needs a number, got the condition {_short(str(expr))}")
    return expr


def _number(op: str, tree: dict, where: str) -> sp.Number:
    if op == "Integer":
        _keys(tree, {"op", "value"}, where)
        return sp.Integer(_parse_int(tree["value"], where))
    if op == "Rational":
        _keys(tree, {"op", "p", "q"}, where)
        p, q = _parse_int(tree["p"], where), _parse_int(tree["q"], where)
        if q <= 0:
            raise _fail(f"{where}: a Rational needs a positive denominator, got {q}")
        return _checked(sp.Rational(p, q), where)
    _keys(tree, {"op", "value", "precision"}, where)
    prec = tree["precision"]
    if type(prec) is not int or not 2 <= prec <= MAX_FLOAT_PRECISION:
        raise _fail(f"{where}: a Float's precision must be an integer in "
                    f"[2, {MAX_FLOAT_PRECISION}] bits")
    value = tree["value"]
    match = _DECIMAL.match(value) if isinstance(value, str) else None
    if match is None:
        raise _fail(f"{where}: {_short(value)} is not a decimal number (digits, '.', 'e' only)")
    sign, whole, frac, exponent = match.groups()
    frac = frac or ""
    power = int(exponent or 0) - len(frac)
    mantissa = int(whole + frac) * (-1 if sign else 1)
    if mantissa == 0:
        return sp.Float(0, precision=prec)
    if abs(power + len(str(abs(mantissa)))) > 330:
        raise _fail(f"{where}: the Float {_short(value)} is outside the supported range")
    exact = sp.Rational(mantissa * 10**max(power, 0), 10**max(-power, 0))
    return sp.Float(exact, precision=prec)


def _parse_int(text: object, where: str) -> int:
    if not isinstance(text, str) or not _INTEGER.match(text):
        raise _fail(f"{where}: {_short(text)} is not an integer string of at most "
                    f"{MAX_INTEGER_DIGITS} digits")
    return int(text)


def _check_exponent(exponent: sp.Basic, where: str) -> None:
    if exponent.is_Number:
        bound = exponent.q if exponent.is_Rational else 1
        if abs(exponent) > MAX_EXPONENT or bound > MAX_EXPONENT:
            raise _fail(f"{where}: the exponent {str(exponent)[:40]} exceeds the limit "
                        f"{MAX_EXPONENT}")


def _checked(expr: sp.Basic, where: str) -> sp.Basic:
    """Reject numbers that grew too large while sympy evaluated a node."""
    for item in (expr, *expr.args):
        if isinstance(item, sp.Rational):
            bits = max(abs(item.p).bit_length(), item.q.bit_length())
        elif isinstance(item, sp.Float) and item.is_finite and item != 0:
            bits = abs(item._mpf_[2] + item._mpf_[3])
        else:
            continue
        if bits > MAX_NUMBER_BITS:
            raise _fail(f"{where}: a number grows beyond {MAX_NUMBER_BITS} bits")
    return expr


# ------------------------------------------------------------------------ helpers
def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _short(value: object) -> str:
    if isinstance(value, int) and abs(value).bit_length() > 256:
        return f"<an integer of {abs(value).bit_length()} bits>"
    if isinstance(value, (list, dict)) and len(value) > 8:
        return f"<{_kind(value)} of {len(value)} entries>"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"<{_kind(value)}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _keys(obj: dict, allowed: set[str], where: str, required: set[str] | None = None) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise _fail(f"{where}: unknown field(s) {_short(extra)}; expected {sorted(allowed)}")
    missing = sorted((allowed if required is None else required) - set(obj))
    if missing:
        raise _fail(f"{where}: missing field(s) {missing}")


def _list(value: object, where: str, low: int = 0, high: int = MAX_ITEMS) -> list:
    if not isinstance(value, list):
        raise _fail(f"{where} must be a list, not {_kind(value)}")
    if not low <= len(value) <= high:
        raise _fail(f"{where} must have between {low} and {high} entries, not {len(value)}")
    return value


def _text(value: object, where: str, *, optional: bool = False, limit: int = MAX_TEXT):
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _fail(f"{where} must be a string, not {_kind(value)}")
    if len(value) > limit:
        raise _fail(f"{where} is longer than {limit} characters")
    return value


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise _fail(f"{where}: {_short(value)} is not a valid name (a letter, then letters, digits "
                    "or '_'; at most 64 characters)")
    return value


def _real(value: object, where: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(f"{where} must be a number, not {_kind(value)}")
    if isinstance(value, int) and abs(value).bit_length() > 1000 or not math.isfinite(value):
        raise _fail(f"{where} must be finite")
    return value


def _flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(f"{where} must be true or false, not {_kind(value)}")
    return value


# ------------------------------------------------------------------- design -> data
def design_to_dict(design: Design) -> dict:
    """The whole design as JSON-ready data (see the module docstring for the format).

    Example:
        >>> import ctopt
        >>> data = design_to_dict(ctopt.zoo.get("sgd"))
        >>> data["format"], data["version"], data["design"]["name"]
        ('ctopt.design', 1, 'sgd')
    """
    options = {}
    for key, value in design.options.items():
        scalar = value is None or isinstance(value, (bool, int, float, str))
        if not isinstance(key, str) or not scalar:
            raise _fail(f"option {key!r} = {value!r} cannot be stored: options must map names to "
                        "booleans, numbers, strings or null")
        options[key] = value
    return {
        "format": FORMAT,
        "version": VERSION,
        "design": {
            "name": design.name,
            "doc": design.doc,
            "options": options,
            "hyperparameters": [
                {"name": h.name, "default": h.default, "doc": h.doc, "role": h.role,
                 "domain": {"lower": h.domain.lower, "upper": h.domain.upper,
                            "lower_closed": h.domain.lower_closed,
                            "upper_closed": h.domain.upper_closed}}
                for h in design.hyper
            ],
            "reductions": [
                {"name": r.name, "kind": r.kind, "of": expr_to_tree(r.of)}
                for r in design.reductions
            ],
            "states": [
                {"name": s.name, "init": expr_to_tree(sp.sympify(s.init)),
                 "torch_name": s.torch_name, "doc": s.doc}
                for s in design.states
            ],
            "assignments": [
                {"target": a.target.name, "kind": a.kind, "expr": expr_to_tree(a.expr)}
                for a in design.assignments
            ],
            "filters": [
                {"output": f.output, "transfer": expr_to_tree(f.transfer),
                 "input": expr_to_tree(f.input), "states": list(f.states)}
                for f in design.filters
            ],
        },
    }


def design_to_json(design: Design) -> str:
    """The design file's text (UTF-8 JSON).

    Example:
        >>> import ctopt
        >>> json.loads(design_to_json(ctopt.zoo.get("sgd")))["format"]
        'ctopt.design'
    """
    return json.dumps(design_to_dict(design), indent=1, allow_nan=False, ensure_ascii=False) + "\n"


def save_design(design: Design, path: str | os.PathLike) -> None:
    """Write ``design`` to ``path`` as a versioned JSON design file (atomically: a crash leaves
    either the old file or the new one, never half of it).

    Example:
        >>> import ctopt, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "adam.json")
        >>> save_design(ctopt.zoo.get("adam"), path)
        >>> load_design(path).name
        'adam'
    """
    text = design_to_json(design)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".design-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


# ------------------------------------------------------------------- data -> design
def load_design(path: str | os.PathLike) -> Design:
    """Read a design file written by :func:`save_design`. The file is data: nothing in it is
    executed. A malformed, unsafe or oversized file raises :class:`DesignFileError`.

    Example:
        >>> import ctopt, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "d.json")
        >>> save_design(ctopt.zoo.get("rmsprop", centered=True), path)
        >>> dict(load_design(path).options)
        {'centered': True}
    """
    with open(path, "rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    return design_from_json(data)


def design_from_json(text: str | bytes) -> Design:
    """Parse a design file's text; see :func:`load_design`.

    Example:
        >>> design_from_json('{"format": "ctopt.design", "version": 99, "design": {}}')
        Traceback (most recent call last):
        ...
        ctopt.errors.DesignFileError: unsupported design-file version 99; this ctopt reads version 1
    """
    if isinstance(text, (bytes, bytearray)):
        if len(text) > MAX_FILE_BYTES:
            raise _fail(f"the design file is larger than {MAX_FILE_BYTES} bytes")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _fail(f"the design file is not UTF-8 text ({exc.reason} at byte "
                        f"{exc.start})") from None
    if not isinstance(text, str):
        raise _fail(f"a design file's text must be str or bytes, not {type(text).__name__}")
    if len(text) > MAX_FILE_BYTES:
        raise _fail(f"the design file is larger than {MAX_FILE_BYTES} characters")
    _check_json_depth(text)
    try:
        data = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except DesignFileError:
        raise
    except (ValueError, RecursionError) as exc:
        raise _fail(f"the design file is not valid JSON: {exc}") from None
    return design_from_dict(data)


def _check_json_depth(text: str) -> None:
    """Reject deep nesting before the JSON parser recurses into it."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise _fail(f"the design file is nested deeper than {MAX_JSON_DEPTH} levels")
        elif char in "]}":
            depth -= 1


def _no_constant(name: str) -> None:
    raise _fail(f"the design file contains {name}: only finite numbers are allowed")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _fail(f"the design file repeats the key {_short(key)} in one object")
        out[key] = value
    return out


def design_from_dict(data: object) -> Design:
    """Build a validated :class:`Design` from design-file data (the inverse of
    :func:`design_to_dict`). Anything malformed raises :class:`DesignFileError`.

    Example:
        >>> import ctopt
        >>> d = design_from_dict(design_to_dict(ctopt.zoo.get("adagrad")))
        >>> d.state_names, d.defaults["eps"]
        (('s',), 1e-10)
    """
    if not isinstance(data, dict):
        raise _fail(f"a design file must hold a JSON object, not {_kind(data)}")
    if data.get("format") != FORMAT:
        raise _fail(f"not a ctopt design file: 'format' must be {FORMAT!r}, "
                    f"got {_short(data.get('format'))}")
    version = data.get("version")
    if type(version) is not int or version != VERSION:
        raise _fail(f"unsupported design-file version {_short(version)}; this ctopt reads version "
                    f"{VERSION}")
    _keys(data, {"format", "version", "design"}, "the file")
    try:
        return _design(data["design"])
    except DesignFileError:
        raise
    except DesignError as exc:
        raise _fail(f"the file describes an invalid design: {exc}") from exc
    except Exception as exc:  # a last net: any other failure of untrusted data is a file error
        raise _fail(f"the file could not be read as a design ({type(exc).__name__}: "
                    f"{_short(str(exc))})") from exc


_DESIGN_KEYS = {"name", "doc", "options", "hyperparameters", "reductions", "states",
                "assignments", "filters"}


def _design(data: object) -> Design:
    if not isinstance(data, dict):
        raise _fail(f"'design' must be an object, not {_kind(data)}")
    _keys(data, _DESIGN_KEYS, "design")
    name = _name(data["name"], "design name")
    doc = _text(data["doc"], "design doc")
    hyper = tuple(_hyperparameter(h, i) for i, h in enumerate(_list(data["hyperparameters"],
                                                                   "'hyperparameters'")))
    reductions_raw = _list(data["reductions"], "'reductions'")
    states_raw = _list(data["states"], "'states'")
    assignments_raw = _list(data["assignments"], "'assignments'")
    for i, item in enumerate([*reductions_raw, *states_raw, *assignments_raw]):
        if not isinstance(item, dict):
            raise _fail(f"entry {i} of the reductions, states or assignments is not an object")
    symbols: dict[str, sp.Symbol] = dict(SIGNALS)
    symbols.update({h.name: h.symbol for h in hyper})
    for i, r in enumerate(reductions_raw):
        declared = _name(r.get("name"), f"reduction {i}")
        symbols[declared] = sp.Symbol(declared, nonnegative=True)
    for i, s in enumerate(states_raw):
        declared = _name(s.get("name"), f"state {i}")
        symbols[declared] = sp.Symbol(declared, real=True)
    for i, a in enumerate(assignments_raw):
        if a.get("kind") == "let":
            declared = _name(a.get("target"), f"assignment {i}")
            symbols[declared] = sp.Symbol(declared, real=True)
    builder = _Builder()
    reductions = tuple(_reduction(r, builder, symbols) for r in reductions_raw)
    states = tuple(_state(s, builder, symbols) for s in states_raw)
    assignments = tuple(_assignment(a, i, builder, symbols) for i, a in enumerate(assignments_raw))
    state_names = [s.name for s in states]
    filters = tuple(_filter(f, i, builder, symbols, state_names)
                    for i, f in enumerate(_list(data["filters"], "'filters'")))
    return Design(name, hyper, states, assignments, reductions, filters, doc,
                  MappingProxyType(_options(data["options"])))


def _hyperparameter(data: object, index: int) -> Hyperparameter:
    where = f"hyperparameter {index}"
    if not isinstance(data, dict):
        raise _fail(f"{where} must be an object, not {_kind(data)}")
    _keys(data, {"name", "default", "doc", "role", "domain"}, where)
    name = _name(data["name"], where)
    where = f"hyperparameter {name!r}"
    domain = data["domain"]
    if not isinstance(domain, dict):
        raise _fail(f"{where}: 'domain' must be an object, not {_kind(domain)}")
    _keys(domain, {"lower", "upper", "lower_closed", "upper_closed"}, f"{where} domain")
    role = _text(data["role"], f"{where} role", optional=True, limit=16)
    return Hyperparameter(
        name,
        float(_real(data["default"], f"{where} default")),
        Domain(_real(domain["lower"], f"{where} domain lower bound", optional=True),
               _real(domain["upper"], f"{where} domain upper bound", optional=True),
               _flag(domain["lower_closed"], f"{where} domain lower_closed"),
               _flag(domain["upper_closed"], f"{where} domain upper_closed")),
        _text(data["doc"], f"{where} doc"),
        role,
    )


def _reduction(data: dict, builder: _Builder, symbols: dict) -> Reduction:
    where = f"reduction {data['name']!r}"
    _keys(data, {"name", "kind", "of"}, where)
    kind = _text(data["kind"], f"{where} kind", limit=32)
    return Reduction(data["name"], kind, builder.build(data["of"], symbols, where))


def _state(data: dict, builder: _Builder, symbols: dict) -> State:
    where = f"state {data['name']!r}"
    _keys(data, {"name", "init", "torch_name", "doc"}, where)
    torch_name = _text(data["torch_name"], f"{where} torch_name", optional=True, limit=64)
    if torch_name is not None:
        _name(torch_name, f"{where} torch_name")
    init = builder.build(data["init"], symbols, f"{where} initial value")
    return State(data["name"], init, torch_name, _text(data["doc"], f"{where} doc"))


def _assignment(data: dict, index: int, builder: _Builder, symbols: dict) -> Assignment:
    where = f"assignment {index}"
    _keys(data, {"target", "kind", "expr"}, where)
    kind, target = data["kind"], _name(data["target"], where)
    if kind not in ("let", "state", "update"):
        raise _fail(f"{where}: kind must be 'let', 'state' or 'update', not {_short(kind)}")
    if kind == "update" and target != "theta":
        raise _fail(f"{where}: an 'update' assigns theta, not {target!r}")
    if kind == "state" and (target not in symbols or target in SIGNALS):
        raise _fail(f"{where}: {target!r} is not a declared state")
    where = f"{where} ({target} <- ...)"
    expr = builder.build(data["expr"], symbols, where)
    return Assignment(theta if kind == "update" else symbols[target], expr, kind)


def _filter(data: object, index: int, builder: _Builder, symbols: dict, states: list) -> FilterInfo:
    where = f"filter {index}"
    if not isinstance(data, dict):
        raise _fail(f"{where} must be an object, not {_kind(data)}")
    _keys(data, {"output", "transfer", "input", "states"}, where)
    names = [_name(s, f"{where} states") for s in _list(data["states"], f"{where} 'states'", 1)]
    output = _name(data["output"], f"{where} output")
    if output != names[0] or any(s not in states for s in names) or len(set(names)) != len(names):
        raise _fail(f"{where}: 'states' must be distinct declared states, the first being the "
                    f"output {output!r}")
    transfer = builder.build(data["transfer"], {**symbols, "z": z}, f"{where} transfer function")
    return FilterInfo(output, transfer, builder.build(data["input"], symbols, f"{where} input"),
                      tuple(names))


def _options(data: object) -> dict:
    if not isinstance(data, dict):
        raise _fail(f"'options' must be an object, not {_kind(data)}")
    if len(data) > MAX_ITEMS:
        raise _fail(f"'options' has more than {MAX_ITEMS} entries")
    for key, value in data.items():
        _name(key, "option name")
        if isinstance(value, str):
            _text(value, f"option {key!r}", limit=256)
        elif value is not None and not isinstance(value, bool):
            _real(value, f"option {key!r}")
    return dict(data)
