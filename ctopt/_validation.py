"""Validation of a design on construction: names, kinds, constants, functions and the
structure of its algorithm box. Every violation is a :class:`ctopt.errors.DesignError` naming
what is wrong (:class:`ctopt.design.Design` calls :func:`validate` when it is made, so a design
built in code and one loaded from a file pass the same checks).
"""

from __future__ import annotations

import keyword
import math

import sympy as sp

from .design import (
    _NAME,
    _RESERVED,
    ALLOWED_FUNCTIONS,
    MASTER_KEY,
    REDUCTION_KINDS,
    RESERVED_HYPERPARAMETERS,
    SIGNALS,
    STEP_KEY,
    Design,
    State,
    _other_logic,
    g,
    theta,
)
from .errors import DesignError


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DesignError(
            f"{what} name {name!r} is not a valid identifier (letters, digits, '_'; "
            "starting with a letter; at most 64 characters)"
        )
    if name in _RESERVED:
        raise DesignError(f"{what} name {name!r} is reserved")


def _check_hyper_name(name: str) -> None:
    """A hyperparameter is a keyword argument of the exported optimizer and a param-group key."""
    if keyword.iskeyword(name):
        raise DesignError(f"hyperparameter name {name!r} is a Python keyword, so it cannot be a "
                          "keyword argument of the exported optimizer")
    if name in RESERVED_HYPERPARAMETERS:
        raise DesignError(
            f"hyperparameter name {name!r} is reserved: the exported optimizer's options and "
            f"torch's param-group keys {sorted(RESERVED_HYPERPARAMETERS)} cannot be hyperparameters")


def _check_state_keys(states: tuple[State, ...]) -> None:
    """Torch state-dict names: valid names, not ``step`` or ``master_param``, one state each."""
    owner: dict[str, str] = {}
    for s in states:
        if s.torch_name is not None and not (isinstance(s.torch_name, str)
                                             and _NAME.fullmatch(s.torch_name)):
            raise DesignError(f"state {s.name!r} has the torch name {s.torch_name!r}, which is "
                              "not a valid name (letters, digits, '_'; starting with a letter; "
                              "at most 64 characters)")
        if s.key == STEP_KEY:
            raise DesignError(
                f"state {s.name!r} would be stored under the state-dict name {STEP_KEY!r}, which "
                "holds the step counter; give it another torch_name")
        if s.key == MASTER_KEY:
            raise DesignError(
                f"state {s.name!r} would be stored under the state-dict name {MASTER_KEY!r}, "
                "which holds the float32 master copy of master_weights=True; give it another "
                "torch_name")
        if s.key in owner:
            raise DesignError(
                f"states {owner[s.key]!r} and {s.name!r} share the state-dict name {s.key!r}; "
                "each state needs its own")
        owner[s.key] = s.name


def _check_constants(expr: sp.Basic, where: str) -> None:
    """Constants must be finite real numbers (the generated code and the oracle use floats)."""
    for node in sp.preorder_traversal(expr):
        if node is sp.I:
            raise DesignError(f"{where} uses the imaginary unit I: a design computes with "
                              "real numbers")
        if isinstance(node, sp.NumberSymbol):
            raise DesignError(f"{where} uses the constant {node}: write it as a number, "
                              f"e.g. sp.Float({float(node)!r})")
        if node.is_Atom and node.is_number:  # numbers, oo, zoo, nan
            try:
                finite = node.is_finite is not False and math.isfinite(float(node))
            except (TypeError, OverflowError):
                finite = False
            if not finite:
                raise DesignError(f"{where} uses the constant {node}, which is not a finite "
                                  "float64 number")


def _check_functions(expr: sp.Basic, where: str) -> None:
    for node in sp.preorder_traversal(expr):
        if _other_logic(node):
            raise DesignError(f"{where} uses the condition {type(node).__name__}: write "
                              "conditions with comparisons and And/Or/Not")
        if isinstance(node, sp.Function) and not isinstance(node, ALLOWED_FUNCTIONS):
            raise DesignError(
                f"{where} uses the function {type(node).__name__!r}, which is not supported; "
                f"allowed: {sorted(f.__name__ for f in ALLOWED_FUNCTIONS)} and powers/sqrt"
            )
        if isinstance(node, sp.Symbol) and node.name == "z":
            raise DesignError(
                f"{where} uses 'z': a transfer function belongs in DesignBuilder.filter"
            )


def validate(d: Design) -> None:
    """Raise :class:`DesignError` naming the first problem of ``d``."""
    _check_name(d.name, "design")
    seen: dict[str, str] = {}
    for what, names in (
        ("hyperparameter", [h.name for h in d.hyper]),
        ("state", [s.name for s in d.states]),
        ("reduction", [r.name for r in d.reductions]),
        ("temporary", [a.target.name for a in d.assignments if a.kind == "let"]),
    ):
        for name in names:
            _check_name(name, what)
            if what == "hyperparameter":
                _check_hyper_name(name)
            if name in seen:
                kinds = f"as a {what}" if seen[name] == what else \
                    f"as a {seen[name]} and as a {what}"
                raise DesignError(f"the name {name!r} is declared twice, {kinds}")
            seen[name] = what
    for h in d.hyper:
        if not math.isfinite(h.default):
            raise DesignError(f"hyperparameter {h.name!r} has a non-finite default {h.default!r}")
        if not h.domain.contains(h.default):
            raise DesignError(
                f"hyperparameter {h.name!r} has default {h.default!r} outside its domain {h.domain}"
            )
        if h.role not in (None, "lr", "ema", "eps"):
            raise DesignError(f"hyperparameter {h.name!r} has unknown role {h.role!r}")
    hyper = {h.symbol for h in d.hyper}
    signals = set(SIGNALS.values())
    reductions = {r.symbol for r in d.reductions}
    reduction_names = {r.name for r in d.reductions}
    states = {s.name: s for s in d.states}
    for r in d.reductions:
        if r.kind not in REDUCTION_KINDS:
            raise DesignError(
                f"reduction {r.name!r} has unknown kind {r.kind!r}; known: {REDUCTION_KINDS}"
            )
        bad = {s.name for s in r.of.free_symbols} - {s.name for s in hyper | {g, theta}}
        if bad:
            raise DesignError(
                f"reduction {r.name!r} may depend only on g, theta and hyperparameters, not {sorted(bad)}"
            )
    _check_state_keys(d.states)
    for r in d.reductions:
        _check_functions(r.of, f"reduction {r.name!r}")
        _check_constants(r.of, f"reduction {r.name!r}")
    for s in d.states:
        _check_functions(sp.sympify(s.init), f"the initial value of state {s.name!r}")
        _check_constants(sp.sympify(s.init), f"the initial value of state {s.name!r}")
        bad = {x.name for x in sp.sympify(s.init).free_symbols} - {h.name for h in d.hyper}
        if bad:
            raise DesignError(
                f"initial value of state {s.name!r} uses {sorted(bad)}: only hyperparameters allowed"
            )
    known = {x.name for x in hyper | signals | reductions} | set(states)
    assigned_states: set[str] = set()
    updates = 0
    for a in d.assignments:
        target = a.target.name
        where = f"the assignment to {target!r}"
        _check_functions(a.expr, where)
        _check_constants(a.expr, where)
        if updates and a.kind != "update" and "theta" in {x.name for x in a.expr.free_symbols}:
            raise DesignError(
                f"{where} comes after the parameter update and reads theta, which would be "
                "ambiguous (the old or the new parameter?): move it above the update, or keep "
                "the old value in a temporary above it")
        unknown = sorted({x.name for x in a.expr.free_symbols} - known)
        if unknown:
            raise DesignError(
                f"{where} uses {unknown}: neither a hyperparameter, a signal, a state nor an "
                "earlier temporary"
            )
        if target in reduction_names:
            raise DesignError(
                f"{where}: {target!r} is a group reduction and cannot be assigned or used as a state"
            )
        if a.kind == "update":
            if a.target != theta:
                raise DesignError(f"{where}: a parameter update must assign theta")
            updates += 1
        elif target in SIGNALS:
            raise DesignError(f"{where}: {target!r} is a signal and cannot be assigned")
        elif a.kind == "state":
            if target not in states:
                raise DesignError(f"{where}: {target!r} is not a declared state")
            if target in assigned_states:
                raise DesignError(f"{where}: state {target!r} is assigned twice")
            assigned_states.add(target)
        elif a.kind == "let":
            known.add(target)
        else:
            raise DesignError(f"{where}: unknown assignment kind {a.kind!r}")
    never = [s for s in states if s not in assigned_states]
    if never:
        raise DesignError(f"state(s) {never} are never updated")
    if updates != 1:
        raise DesignError(
            f"design {d.name!r} must update theta exactly once (found {updates} updates)"
        )
