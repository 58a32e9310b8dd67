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
import os
import tempfile
from types import MappingProxyType

import sympy as sp

from ._exprtree import (
    MAX_FILE_BYTES,
    MAX_ITEMS,
    MAX_JSON_DEPTH,
    NODE_TYPES,
    DesignBudgetError,  # noqa: F401  (the error of a file over budget, importable from here)
    TreeBuilder,
    budget_error,
    check_keys,
    checked_flag,
    checked_list,
    checked_name,
    checked_real,
    checked_text,
    expr_from_tree,
    expr_to_tree,
    file_error,
    kind_of,
    short,
)
from .design import (
    SIGNALS,
    Assignment,
    Design,
    Domain,
    Hyperparameter,
    Reduction,
    State,
    theta,
)
from .errors import DesignError, DesignFileError
from .filters import Filter, z

__all__ = [
    "FORMAT", "NODE_TYPES", "VERSION", "design_from_dict", "design_from_json", "design_to_dict",
    "design_to_json", "expr_from_tree", "expr_to_tree", "load_design", "save_design",
]

#: The ``format`` tag of a design file, and the version this ctopt writes and reads.
FORMAT = "ctopt.design"
VERSION = 1


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
            raise file_error(f"option {key!r} = {value!r} cannot be stored: options must map names to "
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
            raise budget_error(f"the design file is larger than {MAX_FILE_BYTES} bytes",
                               "MAX_FILE_BYTES")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise file_error(f"the design file is not UTF-8 text ({exc.reason} at byte "
                        f"{exc.start})") from None
    if not isinstance(text, str):
        raise file_error(f"a design file's text must be str or bytes, not {type(text).__name__}")
    if len(text) > MAX_FILE_BYTES:
        raise budget_error(f"the design file is larger than {MAX_FILE_BYTES} characters",
                           "MAX_FILE_BYTES")
    _check_json_depth(text)
    try:
        data = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except DesignFileError:
        raise
    except (ValueError, RecursionError) as exc:
        raise file_error(f"the design file is not valid JSON: {exc}") from None
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
                raise budget_error(f"the design file is nested deeper than {MAX_JSON_DEPTH} levels",
                                   "MAX_JSON_DEPTH")
        elif char in "]}":
            depth -= 1


def _no_constant(name: str) -> None:
    raise file_error(f"the design file contains {name}: only finite numbers are allowed")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise file_error(f"the design file repeats the key {short(key)} in one object")
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
        raise file_error(f"a design file must hold a JSON object, not {kind_of(data)}")
    if data.get("format") != FORMAT:
        raise file_error(f"not a ctopt design file: 'format' must be {FORMAT!r}, "
                    f"got {short(data.get('format'))}")
    version = data.get("version")
    if type(version) is not int or version != VERSION:
        raise file_error(f"unsupported design-file version {short(version)}; this ctopt reads version "
                    f"{VERSION}")
    check_keys(data, {"format", "version", "design"}, "the file")
    try:
        return _design(data["design"])
    except DesignFileError:
        raise
    except DesignError as exc:
        raise file_error(f"the file describes an invalid design: {exc}") from exc
    except Exception as exc:  # a last net: any other failure of untrusted data is a file error
        raise file_error(f"the file could not be read as a design ({type(exc).__name__}: "
                    f"{short(str(exc))})") from exc


_DESIGN_KEYS = {"name", "doc", "options", "hyperparameters", "reductions", "states",
                "assignments", "filters"}


def _design(data: object) -> Design:
    if not isinstance(data, dict):
        raise file_error(f"'design' must be an object, not {kind_of(data)}")
    check_keys(data, _DESIGN_KEYS, "design")
    name = checked_name(data["name"], "design name")
    doc = _checked_doc(data["doc"], "design doc")
    hyper = tuple(_hyperparameter(h, i) for i, h in enumerate(checked_list(data["hyperparameters"],
                                                                   "'hyperparameters'")))
    reductions_raw = checked_list(data["reductions"], "'reductions'")
    states_raw = checked_list(data["states"], "'states'")
    assignments_raw = checked_list(data["assignments"], "'assignments'")
    for i, item in enumerate([*reductions_raw, *states_raw, *assignments_raw]):
        if not isinstance(item, dict):
            raise file_error(f"entry {i} of the reductions, states or assignments is not an object")
    symbols: dict[str, sp.Symbol] = dict(SIGNALS)
    symbols.update({h.name: h.symbol for h in hyper})
    for i, r in enumerate(reductions_raw):
        declared = checked_name(r.get("name"), f"reduction {i}")
        symbols[declared] = sp.Symbol(declared, nonnegative=True)
    for i, s in enumerate(states_raw):
        declared = checked_name(s.get("name"), f"state {i}")
        symbols[declared] = sp.Symbol(declared, real=True)
    for i, a in enumerate(assignments_raw):
        if a.get("kind") == "let":
            declared = checked_name(a.get("target"), f"assignment {i}")
            symbols[declared] = sp.Symbol(declared, real=True)
    builder = TreeBuilder()
    reductions = tuple(_reduction(r, builder, symbols) for r in reductions_raw)
    states = tuple(_state(s, builder, symbols) for s in states_raw)
    assignments = tuple(_assignment(a, i, builder, symbols) for i, a in enumerate(assignments_raw))
    state_names = [s.name for s in states]
    filters = tuple(_filter(f, i, builder, symbols, state_names)
                    for i, f in enumerate(checked_list(data["filters"], "'filters'")))
    return Design(name, hyper, states, assignments, reductions, filters, doc,
                  MappingProxyType(_options(data["options"])))


def _checked_doc(value: object, where: str) -> str:
    """A doc string: empty, or holding some text (a blank one has no first line to show)."""
    text = checked_text(value, where)
    if text and not text.strip():
        raise file_error(f"{where} is blank (only whitespace); give text or an empty string")
    return text


def _hyperparameter(data: object, index: int) -> Hyperparameter:
    where = f"hyperparameter {index}"
    if not isinstance(data, dict):
        raise file_error(f"{where} must be an object, not {kind_of(data)}")
    check_keys(data, {"name", "default", "doc", "role", "domain"}, where)
    name = checked_name(data["name"], where)
    where = f"hyperparameter {name!r}"
    domain = data["domain"]
    if not isinstance(domain, dict):
        raise file_error(f"{where}: 'domain' must be an object, not {kind_of(domain)}")
    check_keys(domain, {"lower", "upper", "lower_closed", "upper_closed"}, f"{where} domain")
    role = checked_text(data["role"], f"{where} role", optional=True, limit=16)
    return Hyperparameter(
        name,
        float(checked_real(data["default"], f"{where} default")),
        Domain(checked_real(domain["lower"], f"{where} domain lower bound", optional=True),
               checked_real(domain["upper"], f"{where} domain upper bound", optional=True),
               checked_flag(domain["lower_closed"], f"{where} domain lower_closed"),
               checked_flag(domain["upper_closed"], f"{where} domain upper_closed")),
        _checked_doc(data["doc"], f"{where} doc"),
        role,
    )


def _reduction(data: dict, builder: TreeBuilder, symbols: dict) -> Reduction:
    where = f"reduction {data['name']!r}"
    check_keys(data, {"name", "kind", "of"}, where)
    kind = checked_text(data["kind"], f"{where} kind", limit=32)
    return Reduction(data["name"], kind, builder.build(data["of"], symbols, where))


def _state(data: dict, builder: TreeBuilder, symbols: dict) -> State:
    where = f"state {data['name']!r}"
    check_keys(data, {"name", "init", "torch_name", "doc"}, where)
    torch_name = checked_text(data["torch_name"], f"{where} torch_name", optional=True, limit=64)
    if torch_name is not None:
        checked_name(torch_name, f"{where} torch_name")
    init = builder.build(data["init"], symbols, f"{where} initial value")
    return State(data["name"], init, torch_name, _checked_doc(data["doc"], f"{where} doc"))


def _assignment(data: dict, index: int, builder: TreeBuilder, symbols: dict) -> Assignment:
    where = f"assignment {index}"
    check_keys(data, {"target", "kind", "expr"}, where)
    kind, target = data["kind"], checked_name(data["target"], where)
    if kind not in ("let", "state", "update"):
        raise file_error(f"{where}: kind must be 'let', 'state' or 'update', not {short(kind)}")
    if kind == "update" and target != "theta":
        raise file_error(f"{where}: an 'update' assigns theta, not {target!r}")
    if kind == "state" and (target not in symbols or target in SIGNALS):
        raise file_error(f"{where}: {target!r} is not a declared state")
    where = f"{where} ({target} <- ...)"
    expr = builder.build(data["expr"], symbols, where)
    return Assignment(theta if kind == "update" else symbols[target], expr, kind)


def _filter(data: object, index: int, builder: TreeBuilder, symbols: dict, states: list) -> Filter:
    where = f"filter {index}"
    if not isinstance(data, dict):
        raise file_error(f"{where} must be an object, not {kind_of(data)}")
    check_keys(data, {"output", "transfer", "input", "states"}, where)
    names = [checked_name(s, f"{where} states") for s in checked_list(data["states"], f"{where} 'states'", 1)]
    output = checked_name(data["output"], f"{where} output")
    if output != names[0] or any(s not in states for s in names) or len(set(names)) != len(names):
        raise file_error(f"{where}: 'states' must be distinct declared states, the first being the "
                    f"output {output!r}")
    transfer = builder.build(data["transfer"], {**symbols, "z": z}, f"{where} transfer function")
    return Filter(output, transfer, builder.build(data["input"], symbols, f"{where} input"),
                  tuple(names))


def _options(data: object) -> dict:
    if not isinstance(data, dict):
        raise file_error(f"'options' must be an object, not {kind_of(data)}")
    if len(data) > MAX_ITEMS:
        raise file_error(f"'options' has more than {MAX_ITEMS} entries")
    for key, value in data.items():
        checked_name(key, "option name")
        if isinstance(value, str):
            checked_text(value, f"option {key!r}", limit=256)
        elif value is not None and not isinstance(value, bool):
            checked_real(value, f"option {key!r}")
    return dict(data)
