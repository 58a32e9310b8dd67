"""The design IR: an optimizer as an ordered algorithm box over sympy scalars.

A :class:`Design` describes one coordinate of an optimizer: its hyperparameters (with domains),
the signals it reads (``g``, ``theta``, ``k`` and declared group reductions), its states (with
initial values and torch state-dict names) and an ordered list of assignments. A state on a
right-hand side means its *latest* value: new if it was assigned above, old otherwise.

Every analysis and every code path consumes this one description.

Example:
    >>> import ctopt
    >>> d = ctopt.zoo.get("adam")
    >>> d.state_names
    ('m', 'v')
    >>> d.defaults["beta2"]
    0.999
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import sympy as sp

from . import ops
from .domains import NONNEGATIVE, OPEN_UNIT, POSITIVE, REAL, UNIT, Domain
from .errors import HyperparameterError
from .filters import Filter, FilterHandle, realize
from .ops import SIGNALS, g, k, theta

__all__ = [
    "NONNEGATIVE",
    "OPEN_UNIT",
    "POSITIVE",
    "REAL",
    "UNIT",
    "Assignment",
    "Design",
    "DesignBuilder",
    "Domain",
    "Filter",
    "FilterHandle",
    "Hyperparameter",
    "Reduction",
    "State",
    "g",
    "k",
    "theta",
]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_RESERVED = frozenset({"g", "theta", "k", "z", "lambda", "pi", "E", "I", "S", "N", "O", "Q"})
#: Hyperparameter names an exported optimizer cannot take: its constructor's own options and
#: the param-group keys torch's ``Optimizer`` reads (a hyperparameter is both a keyword argument
#: and a param-group key).
RESERVED_HYPERPARAMETERS = frozenset({
    "params", "param_names", "betas", "maximize", "backend", "nonfinite", "reduction_group",
    "master_weights", "differentiable", "foreach", "fused", "capturable",
})
#: The state-dict key the exported optimizer keeps the step counter under.
STEP_KEY = "step"
#: The state-dict key of a parameter's float32 master copy (``master_weights=True``).
MASTER_KEY = "master_param"

#: Functions an expression may use (from :mod:`ctopt.ops`, which every consumer reads).
ALLOWED_FUNCTIONS = ops.allowed_functions()
#: Kinds of group reduction (:data:`ctopt.ops.REDUCTIONS`).
REDUCTION_KINDS = tuple(ops.REDUCTIONS)


@dataclass(frozen=True)
class Hyperparameter:
    """A named, validated hyperparameter.

    ``role`` tells the scaling rules how it transforms with the batch size: ``"lr"``, ``"ema"``
    (an EMA coefficient beta, whose ``1 - beta`` scales), ``"eps"``, or ``None``.

    Example:
        >>> h = Hyperparameter("beta2", 0.999, UNIT, "second-moment EMA coefficient", "ema")
        >>> h.symbol
        beta2
    """

    name: str
    default: float
    domain: Domain
    doc: str = ""
    role: str | None = None

    @property
    def symbol(self) -> sp.Symbol:
        return sp.Symbol(self.name, real=True)

    def check(self, value: float) -> float:
        """Return ``float(value)`` or raise :class:`HyperparameterError` naming the domain."""
        if isinstance(value, bool) or not self.domain.contains(value):
            raise HyperparameterError(
                f"hyperparameter {self.name!r} = {value!r} is outside its domain {self.domain}"
                + (f" ({self.doc})" if self.doc else "")
            )
        return float(value)


@dataclass(frozen=True)
class State:
    """A per-coordinate state with its initial value and optional torch state-dict name.

    Example:
        >>> State("m", torch_name="exp_avg").symbol
        m
    """

    name: str
    init: sp.Expr = sp.Integer(0)
    torch_name: str | None = None
    doc: str = ""

    @property
    def symbol(self) -> sp.Symbol:
        return sp.Symbol(self.name, real=True)

    @property
    def key(self) -> str:
        """The name used in a torch state dict."""
        return self.torch_name or self.name


@dataclass(frozen=True)
class Reduction:
    """A scalar computed over the whole parameter group, e.g. the global gradient L2 norm.

    Example:
        >>> Reduction("grad_norm", "l2_norm", g).symbol
        grad_norm
    """

    name: str
    kind: str
    of: sp.Expr

    @property
    def symbol(self) -> sp.Symbol:
        return sp.Symbol(self.name, nonnegative=True)


@dataclass(frozen=True)
class Assignment:
    """``target <- expr``; ``kind`` is ``"let"`` (temporary), ``"state"`` or ``"update"``."""

    target: sp.Symbol
    expr: sp.Expr
    kind: str

    def equation(self) -> sp.Eq:
        return sp.Eq(self.target, self.expr, evaluate=False)


@dataclass(frozen=True, eq=False)
class Design:
    """One coordinate of an optimizer as an ordered algorithm box. Build it with
    :class:`DesignBuilder`; it is validated on construction and immutable afterwards.

    Example:
        >>> import ctopt
        >>> d = ctopt.zoo.get("sgd")
        >>> d.equations()
        [Eq(grad, g + theta*weight_decay), Eq(theta, -grad*lr + theta)]
    """

    name: str
    hyper: tuple[Hyperparameter, ...]
    states: tuple[State, ...]
    assignments: tuple[Assignment, ...]
    reductions: tuple[Reduction, ...] = ()
    filters: tuple[Filter, ...] = ()
    doc: str = ""
    options: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ._validation import validate

        validate(self)

    # ----------------------------------------------------------------- views
    @property
    def hyperparameters(self) -> Mapping[str, Hyperparameter]:
        """Ordered mapping name -> :class:`Hyperparameter`."""
        return MappingProxyType({h.name: h for h in self.hyper})

    @property
    def defaults(self) -> dict[str, float]:
        """Name -> default value."""
        return {h.name: h.default for h in self.hyper}

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.states)

    @property
    def symbols(self) -> dict[str, sp.Symbol]:
        """Every name the design knows -> its sympy symbol."""
        table: dict[str, sp.Symbol] = dict(SIGNALS)
        table.update({h.name: h.symbol for h in self.hyper})
        table.update({r.name: r.symbol for r in self.reductions})
        table.update({s.name: s.symbol for s in self.states})
        table.update({a.target.name: a.target for a in self.assignments if a.kind == "let"})
        return table

    def equations(self) -> list[sp.Eq]:
        """The algorithm box as a list of ``sympy.Eq(target, expression)``."""
        return [a.equation() for a in self.assignments]

    def check_values(self, **values: float) -> dict[str, float]:
        """Validate user values against the domains; return the full value map.

        Example:
            >>> import ctopt
            >>> ctopt.zoo.get("adam").check_values(lr=0.01)["lr"]
            0.01
        """
        table = self.hyperparameters
        unknown = sorted(set(values) - set(table))
        if unknown:
            raise HyperparameterError(
                f"unknown hyperparameter(s) {unknown} for design {self.name!r}; "
                f"valid names: {list(table)}"
            )
        out = self.defaults
        for name, value in values.items():
            out[name] = table[name].check(value)
        return out

    def with_defaults(self, **values: float) -> Design:
        """A copy of the design whose defaults are replaced by ``values`` (validated).

        Example:
            >>> import ctopt
            >>> ctopt.zoo.get("adam").with_defaults(lr=0.1).defaults["lr"]
            0.1
        """
        checked = self.check_values(**values)
        hyper = tuple(replace(h, default=checked[h.name]) for h in self.hyper)
        return replace(self, hyper=hyper)

    def state_init(self, name: str, values: Mapping[str, float]) -> float:
        """The numeric initial value of state ``name`` under hyperparameter ``values``."""
        state = next(s for s in self.states if s.name == name)
        subs = {self.hyperparameters[n].symbol: v for n, v in values.items()}
        return float(sp.sympify(state.init).subs(subs))

    # ----------------------------------------------------------- rendering
    def __str__(self) -> str:
        lines = [f"Design {self.name!r}"]
        if self.doc:
            lines.append("  " + self.doc.strip().splitlines()[0])
        lines.append("  hyperparameters:")
        for h in self.hyper:
            lines.append(
                f"    {h.name} = {h.default:g} in {h.domain}" + (f"  # {h.doc}" if h.doc else "")
            )
        lines.append(
            "  states: "
            + ", ".join(
                f"{s.name}={s.init}" + (f" ({s.torch_name})" if s.torch_name else "")
                for s in self.states
            )
        )
        if self.reductions:
            lines.append(
                "  reductions: "
                + ", ".join(f"{r.name} = {r.kind}({r.of})" for r in self.reductions)
            )
        lines.append("  for k = 1, 2, ...:")
        for a in self.assignments:
            lines.append(f"    {a.target} <- {a.expr}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"Design({self.name!r}, hyperparameters={list(self.hyperparameters)}, "
            f"states={list(self.state_names)})"
        )

    def _repr_latex_(self) -> str:
        rows = [rf"\textbf{{{_latex_text(self.name)}}}\ \text{{for }} k = 1, 2, \dots"]
        for a in self.assignments:
            rows.append(rf"\quad {sp.latex(a.target)} \leftarrow {sp.latex(a.expr)}")
        given = ", ".join(f"{sp.latex(h.symbol)}={h.default:g}" for h in self.hyper)
        rows.append(rf"\text{{defaults: }} {given}")
        return r"$\begin{array}{l}" + r" \\ ".join(rows) + r"\end{array}$"


def _latex_text(text: str) -> str:
    return text.replace("_", r"\_")


_LOGIC = (sp.And, sp.Or, sp.Not)


def _other_logic(node: sp.Basic) -> bool:
    """A boolean function other than And/Or/Not (sympy makes ``ITE`` from a comparison of a
    ``Piecewise``)."""
    return isinstance(node, sp.logic.boolalg.BooleanFunction) and not isinstance(node, _LOGIC)


# --------------------------------------------------------------------- builder
def _plain(expr: sp.Expr) -> sp.Expr:
    """``expr`` with filter handles replaced by plain symbols, and conditions such as the
    ``ITE`` sympy makes from a comparison of a ``Piecewise`` written with And/Or/Not."""
    expr = sp.sympify(expr)
    handles = {s: s.symbol for s in expr.atoms(FilterHandle)}
    expr = expr.xreplace(handles) if handles else expr
    if any(_other_logic(node) for node in sp.preorder_traversal(expr)):
        expr = expr.replace(_other_logic, lambda node: node.to_nnf())
    return expr


class DesignBuilder:
    """Write an algorithm box line by line, then :meth:`build` a validated :class:`Design`.

    Example:
        >>> from ctopt.design import DesignBuilder, POSITIVE, g, theta
        >>> b = DesignBuilder("gd")
        >>> lr = b.hyper("lr", 0.1, POSITIVE, "learning rate", role="lr")
        >>> b.update(theta - lr * g)
        >>> b.build().equations()
        [Eq(theta, -g*lr + theta)]
    """

    def __init__(self, name: str, doc: str = "", **options: object):
        self.name = name
        self.doc = doc
        self.options = dict(options)
        self._hyper: list[Hyperparameter] = []
        self._states: list[State] = []
        self._reductions: list[Reduction] = []
        self._assignments: list[Assignment] = []
        self._filters: list[Filter] = []

    def hyper(
        self, name: str, default: float, domain: Domain, doc: str = "", role: str | None = None
    ) -> sp.Symbol:
        """Declare a hyperparameter; returns its symbol."""
        h = Hyperparameter(name, float(default), domain, doc, role)
        self._hyper.append(h)
        return h.symbol

    def state(
        self, name: str, init: float | sp.Expr = 0, torch_name: str | None = None, doc: str = ""
    ) -> sp.Symbol:
        """Declare a state (initial value, optional torch state-dict name); returns its symbol."""
        s = State(name, _plain(init), torch_name, doc)
        self._states.append(s)
        return s.symbol

    def reduction(self, name: str, kind: str = "l2_norm", of: sp.Expr = g) -> sp.Symbol:
        """Declare a group reduction (e.g. the group gradient's L2 norm); returns its symbol."""
        r = Reduction(name, kind, _plain(of))
        self._reductions.append(r)
        return r.symbol

    def let(self, name: str, expr: sp.Expr) -> sp.Symbol:
        """A temporary ``name <- expr``; returns its symbol."""
        symbol = sp.Symbol(name, real=True)
        self._assignments.append(Assignment(symbol, _plain(expr), "let"))
        return symbol

    def assign(self, state: sp.Symbol, expr: sp.Expr) -> None:
        """Update a declared state: ``state <- expr``."""
        self._assignments.append(Assignment(_plain(state), _plain(expr), "state"))

    def update(self, expr: sp.Expr) -> None:
        """The parameter update ``theta <- expr``."""
        self._assignments.append(Assignment(theta, _plain(expr), "update"))

    def filter(self, name: str, transfer: sp.Expr, input: sp.Expr, torch_name: str | None = None):
        """A moment defined by its transfer function in ``z`` from ``input``; see
        :func:`ctopt.filters.realize`. Returns a :class:`FilterHandle`: the output as a symbol
        that also answers the filter's questions (``v / v.step_response(k)``)."""
        input = _plain(input)
        flt = realize(name, transfer, input)
        for i, state_name in enumerate(flt.states):
            self.state(state_name, 0, torch_name if i == 0 else None)
        self._assignments.extend(Assignment(*line) for line in flt.assignments)
        self._filters.append(flt)
        return FilterHandle(flt)

    def build(self) -> Design:
        return Design(
            self.name,
            tuple(self._hyper),
            tuple(self._states),
            tuple(self._assignments),
            tuple(self._reductions),
            tuple(self._filters),
            self.doc,
            dict(self.options),
        )


def free_names(exprs: Iterable[sp.Basic]) -> set[str]:
    """Names of the free symbols of several expressions."""
    return {s.name for e in exprs for s in e.free_symbols}
