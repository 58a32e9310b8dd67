"""From a design to a :class:`Program`: its per-step scalar part and its elementwise part.

The code generator is one compiler pass over the algorithm box:

1. **SSA.** Every state assignment gets a fresh name (``m`` -> ``n_m``), so a later line that
   reads ``m`` reads the new value, exactly as the IR's "latest value" rule says. Temporaries used
   once are inlined; temporaries used more than once stay named.
2. **Scalar hoisting.** Every maximal subexpression that depends only on hyperparameters, the step
   number ``k`` and group reductions (bias corrections, step sizes, clip factors, scalar
   ``Piecewise`` choices) is computed *once per step*, in float64, by the scalar part. The
   elementwise part receives these as coefficients ``c0, c1, ...``.
3. **Maximize.** The gradient enters as ``gsign*g`` with ``gsign = -1`` when maximizing, so the
   sign folds into the scalar coefficients for free.

**Names.** Every name a design declares reaches the generated code with a prefix naming its
kind (:data:`PREFIXES`): hyperparameter ``lr`` is ``h_lr``, reduction ``norm`` is ``r_norm``,
the old and new values of state ``m`` are ``s_m`` and ``n_m``, temporary ``x`` is ``t_x``. A
design name starts with a letter and is unique in its design, so the prefixed names differ from
each other and from every name the generator itself uses (``theta``, ``g``, ``k``, ``gsign``,
``h``, ``red``, ``coef``, coefficients ``c0, c1, ...``, ``theta_new``, runtime helpers and
temporaries starting with ``_``, ``torch``, ``math`` and Python's builtins and keywords, none
of which is a letter followed by ``_``). No name needs escaping, whatever the design calls it.

The printers in :mod:`ctopt.export.printers` turn a program into Python/torch source.

Example:
    >>> import ctopt
    >>> from ctopt.export.codegen import build_program
    >>> p = build_program(ctopt.zoo.get("adam"))
    >>> [name for name, _ in p.elementwise][-1]
    'theta_new'
    >>> len(p.scalars) > 0
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .. import ops
from ..design import Design, g, k, theta

__all__ = ["GSIGN", "PREFIXES", "Program", "build_program", "code_name", "state_symbol"]

#: The sign of the gradient (-1 when maximizing); folded into the scalar part.
GSIGN = sp.Symbol("gsign", real=True, nonzero=True)

#: The prefix of each kind of design name in generated code ("state" is a state's old value,
#: "new" its value after the step).
PREFIXES = {"hyper": "h_", "reduction": "r_", "state": "s_", "new": "n_", "let": "t_"}


def code_name(kind: str, name: str) -> str:
    """The name of a design name of ``kind`` (a key of :data:`PREFIXES`) in generated code.

    Example:
        >>> code_name("hyper", "s_m"), code_name("state", "m"), code_name("new", "m")
        ('h_s_m', 's_m', 'n_m')
    """
    return PREFIXES[kind] + name


@dataclass(frozen=True)
class Program:
    """A design compiled into straight-line code.

    ``scalars``: ordered ``(name, expr)`` over hyperparameters, ``k``, ``gsign``, reductions and
    earlier scalar names (computed once per step, float64). ``elementwise``: ordered
    ``(name, expr)`` over ``theta``, ``g``, old states (``s_<name>``), earlier elementwise names
    and scalar names. ``outputs``: the elementwise names holding the new theta and new states.
    ``inputs``: the scalar names the elementwise part reads, in argument order.
    """

    design: Design
    scalars: tuple[tuple[str, sp.Expr], ...]
    elementwise: tuple[tuple[str, sp.Expr], ...]
    theta_out: str
    state_out: tuple[str, ...]
    coefficients: tuple[str, ...]
    reductions: tuple[tuple[str, sp.Expr], ...]


def state_symbol(name: str) -> sp.Symbol:
    """The symbol of a state's *old* value in generated code.

    Example:
        >>> state_symbol("m")
        s_m
    """
    return sp.Symbol(code_name("state", name), real=True)


def hyper_symbol(name: str) -> sp.Symbol:
    """The symbol of a hyperparameter in generated code."""
    return sp.Symbol(code_name("hyper", name), real=True)


def reduction_symbol(name: str) -> sp.Symbol:
    """The symbol of a group reduction in generated code."""
    return sp.Symbol(code_name("reduction", name), nonnegative=True)


def code_symbols(design: Design) -> dict[str, sp.Expr]:
    """Design name -> its symbol in generated code, for names that do not change during a step
    (signals, hyperparameters, reductions); states and temporaries are bound as they are
    assigned."""
    table: dict[str, sp.Expr] = {"g": g, "theta": theta, "k": k}
    table.update({h.name: hyper_symbol(h.name) for h in design.hyper})
    table.update({r.name: reduction_symbol(r.name) for r in design.reductions})
    return table


def rename(expr: sp.Basic, table: dict[str, sp.Expr]) -> sp.Expr:
    """``expr`` with every free symbol replaced, by name, by its entry in ``table``."""
    expr = sp.sympify(expr)
    return expr.xreplace({s: table[s.name] for s in expr.free_symbols})


class _Builder:
    def __init__(self, design: Design):
        self.design = design
        self.scalar_names: set[sp.Symbol] = {hyper_symbol(h.name) for h in design.hyper}
        self.scalar_names |= {reduction_symbol(r.name) for r in design.reductions} | {k, GSIGN}
        self.scalars: list[tuple[str, sp.Expr]] = []
        self._hoisted: dict[sp.Expr, sp.Symbol] = {}
        self.hoisted_names: set[sp.Symbol] = set()
        self.elementwise: list[tuple[str, sp.Expr]] = []
        self.used_names: set[str] = {s.name for s in self.scalar_names}
        self.used_names |= {"theta", "g"} | {state_symbol(s.name).name for s in design.states}

    # ------------------------------------------------------------ naming
    def fresh(self, name: str) -> str:
        """Claim ``name``; the naming scheme (module docstring) makes every claim distinct."""
        if name in self.used_names:
            raise AssertionError(f"the code generator named two values {name!r}")
        self.used_names.add(name)
        return name

    def is_scalar(self, expr: sp.Basic) -> bool:
        return expr.free_symbols <= self.scalar_names

    def add_scalar(self, name: str, expr: sp.Expr) -> sp.Symbol:
        symbol = sp.Symbol(self.fresh(name), real=True)
        self.scalars.append((symbol.name, expr))
        self.scalar_names.add(symbol)
        self.hoisted_names.add(symbol)
        self._hoisted.setdefault(expr, symbol)
        return symbol

    def coefficient(self, expr: sp.Expr) -> sp.Expr:
        """A scalar expression as a literal number or a named scalar."""
        if expr.is_Number or expr in (sp.true, sp.false):
            return expr
        if expr in self.hoisted_names:
            return expr
        if expr in self._hoisted:
            return self._hoisted[expr]
        return self.add_scalar(f"c{len(self.scalars)}", expr)

    # ------------------------------------------------------------ hoisting
    def hoist(self, expr: sp.Expr) -> sp.Expr:
        """Replace every maximal scalar subexpression by a named coefficient."""
        if self.is_scalar(expr):
            return self.coefficient(expr)
        if expr.is_Add or expr.is_Mul or type(expr) in ops.MINMAX:
            scalar = [a for a in expr.args if self.is_scalar(a)]
            rest = [self.hoist(a) for a in expr.args if not self.is_scalar(a)]
            if len(scalar) > 0:
                rest.append(self.coefficient(expr.func(*scalar)))
            return expr.func(*rest, evaluate=False)
        if isinstance(expr, sp.Piecewise):
            pairs = [(self.hoist(v), self.hoist(c) if c is not sp.true else c) for v, c in expr.args]
            return sp.Piecewise(*pairs, evaluate=False)
        if not expr.args:
            return expr
        return expr.func(*(self.hoist(a) for a in expr.args), evaluate=False)


def _uses(assignments, index: int, name: str) -> int:
    return sum(1 for a in assignments[index + 1:]
               if name in {s.name for s in sp.sympify(a.expr).free_symbols})


def _distributed(assignments, index: int, name: str, expr: sp.Expr, table: dict) -> bool:
    """Whether inlining the temporary ``name`` = ``expr`` into a later power of it would let
    sympy rewrite that power (``(a*b/c)**2`` becomes ``a**2*b**2/c**2``): a different
    computation from the oracle's, which can overflow where the oracle's does not."""
    for a in assignments[index + 1:]:
        for power in sp.sympify(a.expr).atoms(sp.Pow):
            if isinstance(power.base, sp.Symbol) and power.base.name == name:
                raised = sp.Pow(expr, rename(power.exp, table))
                if not (raised.is_Pow and raised.base == expr):
                    return True
    return False


def _norm_argument(of: sp.Expr) -> sp.Expr:
    """An L2 norm ignores a global sign: drop ``gsign`` when ``of`` is odd in it."""
    plus, minus = of.xreplace({GSIGN: 1}), of.xreplace({GSIGN: -1})
    return plus if sp.expand(plus + minus) == 0 else of


def build_program(design: Design) -> Program:
    """Compile ``design`` into a :class:`Program` (see the module docstring).

    Example:
        >>> import ctopt
        >>> p = build_program(ctopt.zoo.get("sgd"))
        >>> p.elementwise
        (('theta_new', c2*(c0*g + c1*theta) + theta),)
        >>> p.scalars
        (('c0', gsign), ('c1', h_weight_decay), ('c2', -h_lr))
    """
    b = _Builder(design)
    current = code_symbols(design)
    current["g"] = GSIGN * g
    current.update({s.name: state_symbol(s.name) for s in design.states})
    assignments = design.assignments
    theta_out, state_out = "", {}
    for i, a in enumerate(assignments):
        expr = rename(a.expr, current)
        if a.kind == "let":
            name = code_name("let", a.target.name)
            if b.is_scalar(expr):
                current[a.target.name] = b.add_scalar(name, expr)
            elif expr.is_Symbol or _uses(assignments, i, a.target.name) <= 1 and not \
                    _distributed(assignments, i, a.target.name, expr, current):
                current[a.target.name] = expr
            else:
                b.elementwise.append((b.fresh(name), b.hoist(expr)))
                current[a.target.name] = sp.Symbol(name, real=True)
            continue
        if b.is_scalar(expr):  # a state or theta set to a per-step scalar: broadcast it
            body = sp.Add(b.coefficient(expr), sp.Mul(0, theta, evaluate=False), evaluate=False)
        else:
            body = b.hoist(expr)
        if a.kind == "update":
            theta_out = b.fresh("theta_new")
            b.elementwise.append((theta_out, body))
        else:
            name = b.fresh(code_name("new", a.target.name))
            b.elementwise.append((name, body))
            state_out[a.target.name] = name
            current[a.target.name] = sp.Symbol(name, real=True)
    used = set().union(*(e.free_symbols for _, e in b.elementwise))
    coefficients = tuple(n for n, _ in b.scalars if sp.Symbol(n, real=True) in used)
    elementwise = tuple(b.elementwise)
    fixed = code_symbols(design)
    fixed["g"] = GSIGN * g
    reductions = tuple((r.name, _norm_argument(rename(r.of, fixed))) for r in design.reductions)
    return Program(
        design=design,
        scalars=tuple(b.scalars),
        elementwise=elementwise,
        theta_out=theta_out,
        state_out=tuple(state_out[s.name] for s in design.states),
        coefficients=coefficients,
        reductions=reductions,
    )
