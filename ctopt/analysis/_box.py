"""The algorithm box as a state map: flattening, k -> oo asymptotics and linear parts.

A design's assignments give ``x_k = F(x_{k-1}, inputs_k, k)`` once they are substituted in order.
Because a state on a right-hand side means its *latest* value, :func:`build_box` first writes
every line with "new-value" placeholders (:class:`Box`), so that a signal such as AdaBelief's
``(g - m)**2`` (with the new ``m``) can be found in the box's own terms before the placeholders
are resolved. :func:`asymptotic` replaces time-varying scalar factors (bias corrections,
``Piecewise`` branches on ``k``) by their ``k -> oo`` limits and records them
(:class:`TimeVarying`); :func:`linear_part` reads ``A``, ``B`` and the constant offset of the
states on a path from an input signal to an output. Transfer functions and closed loops are
built on these.

Example:
    >>> import ctopt
    >>> box = build_box(ctopt.zoo.get("adam"))
    >>> box.order
    ['m', 'v', 'theta']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import sympy as sp

from .. import ops
from ..design import Design, g, k, theta
from ..errors import DesignError, HyperparameterError, MissingValuesError, UnsupportedError

#: The input symbol that stands for the chosen signal.
u = sp.Symbol("u", real=True)

#: sympy names in scope when a signal is read from a string: numbers, symbols, sqrt and the
#: functions of the expression language
_PARSE_NAMES = ("Integer", "Float", "Rational", "Symbol", "sqrt",
                *(m.tag for m in ops.MINMAX.values()), *(f.tag for f in ops.FUNCTIONS))


# ---------------------------------------------------------------------------- the box, flattened
@dataclass
class Box:
    """A design's assignments with lets expanded and state versions made explicit.

    ``exprs[name]`` is the right-hand side of state ``name`` (or ``"theta"`` for the update) in
    terms of old states, placeholders ``new[s]`` for states assigned above, signals and
    hyperparameters. ``envs[name]`` maps every let and state symbol to its version at that line.
    """

    design: Design
    exprs: dict[str, sp.Expr]
    envs: dict[str, dict[sp.Symbol, sp.Expr]]
    new: dict[str, sp.Symbol]
    order: list[str]
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def old(self) -> dict[str, sp.Symbol]:
        return {s.name: s.symbol for s in self.design.states}

    def flatten(self, exprs: Mapping[str, sp.Expr]) -> dict[str, sp.Expr]:
        """Resolve placeholders in assignment order: every expression in old values only."""
        resolved: dict[sp.Symbol, sp.Expr] = {}
        out = {}
        for name in self.order:
            if name not in exprs:
                continue
            value = exprs[name].xreplace(resolved)
            out[name] = value
            if name in self.new:
                resolved[self.new[name]] = value
        return out

    def versioned(self, expr: sp.Expr, at: str) -> sp.Expr:
        """``expr`` (in box terms: lets, latest states) as seen by the assignment to ``at``."""
        return expr.xreplace(self.envs[at])


def build_box(design: Design) -> Box:
    """Expand a design's lets and version its states (see :class:`Box`)."""
    new = {s.name: sp.Dummy(f"{s.name}_new", real=True) for s in design.states}
    env: dict[sp.Symbol, sp.Expr] = {s.symbol: s.symbol for s in design.states}
    exprs, envs, order = {}, {}, []
    for a in design.assignments:
        value = a.expr.xreplace(env)
        if a.kind == "let":
            env[a.target] = value
            continue
        name = a.target.name
        exprs[name], envs[name] = value, dict(env)
        order.append(name)
        if a.kind == "state":
            env[a.target] = new[name]
    return Box(design, exprs, envs, new, order)


# ------------------------------------------------------------------- k -> infinity asymptotics
@dataclass(frozen=True)
class TimeVarying:
    """A factor of the box that depends on the step ``k``, and its ``k -> oo`` limit."""

    expr: sp.Expr
    limit: sp.Expr
    where: str
    note: str = ""

    def __str__(self) -> str:
        extra = f" ({self.note})" if self.note else ""
        return f"{self.where}: {self.expr} -> {self.limit} as k -> oo{extra}"


def _dynamic_symbols(design: Design) -> set[sp.Symbol]:
    return {g, theta} | {s.symbol for s in design.states} | {r.symbol for r in design.reductions}


def _inside_unit_disc(base: sp.Expr, design: Design) -> bool:
    if base.is_Number:
        return bool(abs(base) < 1)
    h = design.hyperparameters.get(getattr(base, "name", ""))
    if h is None:
        return False
    d = h.domain
    low_ok = d.lower is not None and (d.lower > -1 or (d.lower == -1 and not d.lower_closed))
    high_ok = d.upper is not None and (d.upper < 1 or (d.upper == 1 and not d.upper_closed))
    return low_ok and high_ok


def _eventual_branch(pw: sp.Piecewise) -> sp.Expr:
    for value, cond in pw.args:
        held = cond.subs(k, sp.oo) if cond not in (sp.true, sp.false) else cond
        if held is sp.true:
            return value
        if held is not sp.false:
            raise UnsupportedError(f"cannot decide the branch of {pw} as k -> oo")
    raise UnsupportedError(f"no branch of {pw} holds as k -> oo")


def _scalar_limit(expr: sp.Expr, design: Design) -> tuple[sp.Expr, str]:
    """The ``k -> oo`` limit of a per-step scalar (no dynamic symbols)."""

    def rule(e: sp.Expr) -> sp.Expr:
        if not e.has(k):
            return e
        if isinstance(e, sp.Piecewise) and any(c.has(k) for _, c in e.args):
            return rule(_eventual_branch(e))
        if (e.is_Pow and e.exp.has(k) and not e.base.has(k)
                and _inside_unit_disc(e.base, design) and e.exp.subs(k, sp.oo) is sp.oo):
            return sp.Integer(0)
        return e.func(*[rule(a) for a in e.args]) if e.args else e

    value = rule(expr)
    if not value.has(k):
        return value, ""
    for h in design.hyper:  # e.g. lr/(1 + (k-1)*lr_decay): its default lr_decay = 0 removes k
        if value.has(h.symbol):
            trial = value.subs(h.symbol, sp.nsimplify(h.default))
            if not trial.has(k):
                return sp.simplify(trial), f"{h.name} = {h.default:g} (its default) assumed"
    try:
        value = sp.limit(value, k, sp.oo)
    except (NotImplementedError, ValueError):  # e.g. "depends on the sign of log(beta)"
        value = sp.nan
    if value.has(k) or not value.is_finite:
        raise UnsupportedError(f"the time-varying factor {expr} has no finite limit as k -> oo")
    return value, ""


def asymptotic(expr: sp.Expr, design: Design, where: str, records: list[TimeVarying]) -> sp.Expr:
    """Replace the time-varying factors of ``expr`` by their ``k -> oo`` limits; append a
    :class:`TimeVarying` record for each maximal one."""
    dynamic = _dynamic_symbols(design)

    def walk(e: sp.Expr) -> sp.Expr:
        if not e.has(k):
            return e
        if not (e.free_symbols & dynamic):
            limit, note = _scalar_limit(e, design)
            if not note and any(c.has(k) for p in e.atoms(sp.Piecewise) for _, c in p.args):
                note = "differs from its limit at finitely many k"
            if limit != e:
                _record(records, TimeVarying(e, limit, where, note))
            return limit
        if isinstance(e, sp.Piecewise) and any(c.has(k) for _, c in e.args):
            branch = walk(_eventual_branch(e))
            note = "differs from its limit at finitely many k"
            _record(records, TimeVarying(e, branch, where, note))
            return branch
        return e.func(*[walk(a) for a in e.args])

    return walk(expr)


def _record(records: list[TimeVarying], rec: TimeVarying) -> None:
    if all((r.expr, r.where) != (rec.expr, rec.where) for r in records):
        records.append(rec)


# ---------------------------------------------------------------------------- inputs and parsing
def parse_signal(design: Design, signal: str | sp.Expr) -> sp.Expr:
    """An input signal, given as a sympy expression or a string over the design's names
    (``"g**2"``, ``"(g - m)**2"``). Strings are parsed with only the design's names and a few
    sympy constructors in scope.

    Example:
        >>> import ctopt
        >>> parse_signal(ctopt.zoo.get("adabelief"), "(g - m)**2")
        (g - m)**2
    """
    if isinstance(signal, sp.Basic):
        return signal
    if not isinstance(signal, str):
        raise DesignError(f"an input signal must be a string or a sympy expression, not {signal!r}")
    from sympy.parsing.sympy_parser import parse_expr

    scope = {"__builtins__": {}} | {n: getattr(sp, n) for n in _PARSE_NAMES}
    try:
        return parse_expr(signal, local_dict=dict(design.symbols), global_dict=scope)
    except Exception as exc:  # noqa: BLE001 - any parse failure becomes a clear DesignError
        raise DesignError(
            f"cannot read the input signal {signal!r} for design {design.name!r}: {exc}; "
            f"known names: {sorted(design.symbols)}"
        ) from None


def detect_signal(box: Box, name: str) -> sp.Expr | None:
    """The signal the box filters into state ``name``, in box terms (``None`` if it reads none).

    Example:
        >>> import ctopt
        >>> detect_signal(build_box(ctopt.zoo.get("adam")), "v")
        g**2
    """
    design = box.design
    expr = _asymptotic_box(box)[0][name].xreplace({theta: sp.S.Zero})
    states = set(box.old.values()) | set(box.new.values())
    signals = []
    dynamic = (g, *states, *(r.symbol for r in design.reductions))
    for term in sp.Add.make_args(expr):
        if not term.has(g):
            continue
        rest = term.as_independent(*dynamic)[1]
        parts = sp.Add.make_args(sp.expand(rest, power_base=False, multinomial=False)) \
            if rest.is_Add else (rest,)
        signals += [p.as_independent(*dynamic)[1] for p in parts if p.has(g)]
    unique = list(dict.fromkeys(signals))
    if not unique:
        return None
    if len(unique) > 1 and not all(sp.Poly(s, g).is_linear for s in unique if s.is_polynomial(g)):
        return None
    # back to box terms: placeholders are the latest values of the states
    back = {v: sp.Symbol(n, real=True) for n, v in box.new.items()}
    return unique[0].xreplace(back)


# ------------------------------------------------------------------------------ linear systems
@dataclass
class LinearPart:
    """``x_k = A x_{k-1} + B u_k + offset`` on the named states (current-input convention)."""

    names: list[str]
    A: sp.Matrix
    B: sp.Matrix
    offset: sp.Matrix
    time_varying: list[TimeVarying]


def _asymptotic_box(box: Box) -> tuple[dict[str, sp.Expr], list[TimeVarying]]:
    """Every line of the box at its ``k -> oo`` limit (computed once per box)."""
    if "asymptotic" not in box.cache:
        records: list[TimeVarying] = []
        exprs = {n: asymptotic(box.exprs[n], box.design, n, records) for n in box.order}
        box.cache["asymptotic"] = (exprs, records)
    return box.cache["asymptotic"]


def _substituted(box: Box, signal: sp.Expr | None, keep_theta: bool) -> dict[str, sp.Expr]:
    """Every line with the input replaced by ``u`` and the other inputs at zero, flattened."""
    key = ("flat", signal, keep_theta)
    if key in box.cache:
        return box.cache[key]
    design = box.design
    exprs, _ = _asymptotic_box(box)
    lines, patterns = {}, {}
    for name in box.order:
        lines[name] = exprs[name] if keep_theta else exprs[name].xreplace({theta: sp.S.Zero})
        if signal is not None:
            pattern = asymptotic(box.versioned(signal, name), design, name, [])
            patterns[name] = pattern if keep_theta else pattern.xreplace({theta: sp.S.Zero})
    raw = {n: e.xreplace({patterns[n]: u}) if patterns else e for n, e in lines.items()}
    for n, e in lines.items():  # a product or sum may sit inside a larger one: match algebraically
        if patterns and not raw[n].has(u) and (patterns[n].is_Mul or patterns[n].is_Add) \
                and e.has(*patterns[n].free_symbols):
            raw[n] = e.subs(patterns[n], u)
    if patterns and not any(e.has(u) for e in raw.values()):
        # no match at all: try sympy's algebraic one everywhere (e.g. g**2 inside g**4)
        raw = {n: e.subs(patterns[n], u) for n, e in lines.items()}
    raw = {n: e.xreplace({g: sp.S.Zero}) for n, e in raw.items()}
    box.cache[key] = box.flatten(raw)
    return box.cache[key]


def linear_part(box: Box, signal: sp.Expr | None, names: list[str],
                keep_theta: bool = False) -> LinearPart:
    """Substitute the input and read ``A``, ``B`` and the offset on ``names`` (which must be
    closed under dependence). Raises :class:`UnsupportedError` where the map is not affine."""
    records = _asymptotic_box(box)[1]
    flat = _substituted(box, signal, keep_theta)
    syms = [theta if n == "theta" else sp.Symbol(n, real=True) for n in names]
    zero = {s: sp.S.Zero for s in syms} | {u: sp.S.Zero}
    rows_a, rows_b, rows_c = [], [], []
    for n in names:
        f = flat[n]
        row = [sp.diff(f, s) for s in syms]
        b = sp.diff(f, u)
        for d in [*row, b]:
            if d.free_symbols & (set(syms) | {u}) or d.has(sp.Heaviside, sp.DiracDelta, sp.sign):
                raise UnsupportedError(
                    f"state {n!r} of design {box.design.name!r} is not linear in the states and "
                    f"the input ({f}); choose a nonlinear sub-expression as the input signal, or "
                    "use closed_loop(..., preconditioner='linearized')"
                )
        rows_a.append(row)
        rows_b.append(b)
        rows_c.append(f.xreplace(zero))
    return LinearPart(list(names), sp.Matrix(rows_a), sp.Matrix(rows_b), sp.Matrix(rows_c), records)


def _relevant(box: Box, output: str, keep_theta: bool, signal: sp.Expr | None) -> list[str]:
    """States on a path from the input to the output (backward closure from the output,
    intersected with the forward closure from the input)."""
    names = [n for n in box.order if n != "theta" or keep_theta]
    flat = _substituted(box, signal, keep_theta)
    sym = {n: theta if n == "theta" else sp.Symbol(n, real=True) for n in names}
    reads = {n: {m for m in names if flat[n].has(sym[m])} for n in names}
    back, todo = set(), [output]
    while todo:
        n = todo.pop()
        if n not in back:
            back.add(n)
            todo.extend(reads[n])
    fwd = {n for n in names if flat[n].has(u)}
    grew = True
    while grew:
        more = {n for n in names if reads[n] & fwd} - fwd
        fwd |= more
        grew = bool(more)
    if output not in fwd:
        raise DesignError(
            f"the input {signal} does not reach {output!r} in design {box.design.name!r}"
        )
    return [n for n in names if n in back and n in fwd]


def _numeric_values(expr_symbols: set[sp.Symbol], design: Design | None,
                    values: Mapping[str, float]) -> dict[sp.Symbol, float]:
    """Numbers for every free symbol: ``values`` by name, else the design's defaults."""
    by_name = {s.name: s for s in expr_symbols}
    unknown = sorted(set(values) - set(by_name))
    hyper = design.hyperparameters if design is not None else {}
    unknown = [n for n in unknown if n not in hyper]
    if unknown:
        raise HyperparameterError(
            f"unknown name(s) {unknown}; this expression uses {sorted(by_name)}"
        )
    out = {}
    for name, sym in by_name.items():
        if name in values:
            out[sym] = hyper[name].check(values[name]) if name in hyper else float(values[name])
        elif name in hyper:
            out[sym] = float(hyper[name].default)
        else:
            raise MissingValuesError([name], "(no default)")
    return out


def _fix(design: Design, fixed: Mapping[str, float]) -> Design:
    """A copy of ``design`` with hyperparameters replaced by numbers in every expression."""
    checked = design.check_values(**fixed)
    subs = {design.hyperparameters[n].symbol: sp.nsimplify(checked[n]) for n in fixed}
    assignments = tuple(replace(a, expr=a.expr.subs(subs)) for a in design.assignments)
    hyper = tuple(replace(h, default=checked[h.name]) for h in design.hyper)
    return replace(design, assignments=assignments, hyper=hyper)
