"""Judging the guarded quantities of the realised map (square roots, logs, divisors): each is
nonnegative *proven*, nonnegative *at these values*, *violated* (with a witness) or
*undecided* (with the reason).

Nonnegativity of a state comes from its recursion (a linear block: nonnegative impulse response
from a nonnegative input, nonnegative initial value and constant input; decided by
:mod:`ctopt.analysis.validity`), or, for a nonlinear update such as AMSGrad's running max, by
induction: a nonnegative initial value and an update that is nonnegative whenever the states it
reads are.

Example:
    >>> import ctopt
    >>> from ctopt.analysis.validity import filter_validity
    >>> [(gd.kind, gd.status) for gd in filter_validity(ctopt.zoo.get("rmsprop")).guards]
    [('divisor', 'holds'), ('square root', 'holds')]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..design import Design, g, k, theta
from ._realised import Guard, _nonnegative, guards, positive_scalar

__all__ = ["GuardVerdict", "judge_guards", "state_facts"]

#: Steps checked one by one when a per-step scalar (a bias correction) is judged at values.
SCALAR_STEPS = 5000


@dataclass
class GuardVerdict:
    """A guarded quantity with its verdict: ``status`` ``"holds"``, ``"violated"`` or
    ``"undecided"``; ``how`` says how it was reached."""

    kind: str
    arg: sp.Expr
    where: str
    status: str
    how: str

    def __str__(self) -> str:
        return f"{self.where}: {self.kind} of {self.arg}: {self.status} ({self.how})"


def _state_symbol(name: str) -> sp.Symbol:
    return sp.Symbol(name, real=True)


def state_facts(design: Design, checks, skipped: Mapping[str, str], env: Mapping[str, float]
                ) -> dict[str, tuple[bool | None, str]]:
    """``state -> (nonnegative?, how)`` for every state (None: not known)."""
    facts: dict[str, tuple[bool | None, str]] = {}
    inits = {s.name: s.init for s in design.states}
    subs = {h.symbol: env[h.name] for h in design.hyper if h.name in env}
    for c in checks:
        if c.block is None:
            continue
        name = c.name
        status = c.status.get("nonnegative impulse response", "")
        how = c.how.get("nonnegative impulse response", "")
        init_ok = all(_at(sp.sympify(inits[m]), subs) >= 0 for m in c.block.names)
        offset_ok = all(_at(o, subs) >= 0 for o in c.block.offset) if \
            c.block.offset.free_symbols <= set(subs) else False
        u_ok = _nonnegative(c.input, design)
        if status == "holds" and u_ok and init_ok and offset_ok:
            proven = how == "proven" and _nonnegative(sp.Add(*c.block.offset), design) \
                and all(_nonnegative(sp.sympify(inits[m]), design) for m in c.block.names)
            facts[name] = (True, "proven" if proven else "at these values")
        elif status in ("violated", "not required (does not hold)") and u_ok:
            facts[name] = (False, f"its impulse response from the nonnegative input {c.input} "
                           f"is negative ({how})")
        elif not u_ok and _can_be_negative(c.input, design, env) and c.transfer != 0:
            facts[name] = (False, f"its input {c.input} takes negative values")
        else:
            facts[name] = (None, "its sign is not decided")
    # nonlinear updates: induction over the states not yet known
    candidates = [s for s in skipped if s in inits]
    lines = _box_lines(design)
    changed = True
    assume = set(candidates)
    while changed:
        changed = False
        known = {_state_symbol(n): sp.Symbol(n, nonnegative=True)
                 for n, (ok, _) in facts.items() if ok} | \
                {_state_symbol(n): sp.Symbol(n, nonnegative=True) for n in assume}
        for s in list(assume):
            if not (_nonnegative(lines[s], design, known)
                    and _nonnegative(sp.sympify(inits[s]), design)):
                assume.discard(s)
                changed = True
    for s in assume:
        facts[s] = (True, "proven by induction (nonnegative start, update nonnegative when the "
                    "states it reads are)")
    return facts


def _box_lines(design: Design) -> dict[str, sp.Expr]:
    from ._box import build_box

    box = build_box(design)
    back = {v: sp.Symbol(n, real=True) for n, v in box.new.items()}
    return {n: e.xreplace(back) for n, e in box.exprs.items()}


def _at(expr: sp.Expr, subs) -> float:
    return float(sp.sympify(expr).xreplace({s: sp.Float(v) for s, v in subs.items()}))


def _can_be_negative(u: sp.Expr, design: Design, env) -> bool:
    """A witness: the input is negative at some gradient (theta, states and reductions at 0 or
    the gradient's magnitude)."""
    subs = {h.symbol: env[h.name] for h in design.hyper if h.name in env}
    for gv in (-1.0, 1.0, -1e-3, 1e-3):
        point = {g: gv, theta: 0.0} | {r.symbol: abs(gv) for r in design.reductions}
        point |= {s.symbol: 0.0 for s in design.states}
        try:
            val = complex(sp.sympify(u).xreplace(subs).xreplace(point))
        except (TypeError, ValueError):
            continue
        if abs(val.imag) < 1e-300 and val.real < 0:
            return True
    return False


def judge_guards(design: Design, checks, skipped, env: Mapping[str, float]
                 ) -> list[GuardVerdict]:
    """A verdict for every guarded quantity of ``design`` at ``env``."""
    facts = state_facts(design, checks, skipped, env)
    nonneg = {_state_symbol(n): sp.Symbol(n, nonnegative=True)
              for n, (ok, _) in facts.items() if ok}
    used_how = {n: how for n, (ok, how) in facts.items() if ok}
    out = []
    for gd in guards(design):
        out.append(_judge(design, gd, facts, nonneg, used_how, env))
    return out


def _judge(design: Design, gd: Guard, facts, nonneg, used_how, env) -> GuardVerdict:
    scalars, rest = _scalar_split(gd.arg, design)
    scalar_how = "proven"
    for f in scalars:
        if positive_scalar(f, design):
            continue
        ok = _scalar_positive_at(f, design, env)
        if ok is None:
            return GuardVerdict(gd.kind, gd.arg, gd.where, "undecided",
                                f"the sign of the per-step factor {f} is not decided")
        if not ok:
            return GuardVerdict(gd.kind, gd.arg, gd.where, "undecided",
                                f"the per-step factor {f} is not positive at every step")
        scalar_how = f"at these values (per-step factor {f} positive: steps 1..{SCALAR_STEPS} " \
            "one by one, then every power below 1e-12 of its limit)"
    if _nonnegative(rest, design, nonneg):
        states = sorted(s.name for s in rest.free_symbols if s.name in used_how)
        hows = {used_how[s] for s in states}
        if scalar_how == "proven" and all(h.startswith("proven") for h in hows):
            how = "proven" + (f" ({', '.join(states)} nonnegative for every admissible value)"
                              if states else " (nonnegative under the domains)")
        else:
            how = "at these values" + (f" ({', '.join(states)} nonnegative)" if states else "")
            if scalar_how != "proven":
                how += "; " + scalar_how
        return GuardVerdict(gd.kind, gd.arg, gd.where, "holds", how)
    if rest.is_Symbol and rest.name in facts and facts[rest.name][0] is False and \
            gd.kind != "divisor":
        return GuardVerdict(gd.kind, gd.arg, gd.where, "violated",
                            f"{rest.name} can be negative: {facts[rest.name][1]}")
    return GuardVerdict(gd.kind, gd.arg, gd.where, "undecided",
                        f"{rest} >= 0 does not follow from the domains and the states' "
                        "nonnegativity")


def _scalar_split(arg: sp.Expr, design: Design) -> tuple[list[sp.Expr], sp.Expr]:
    """``arg = (product of per-step scalars) * rest``; scalars depend on hyperparameters and
    ``k`` only."""
    dynamic = {g, theta} | {s.symbol for s in design.states} | \
        {r.symbol for r in design.reductions}
    scalars, rest = [], sp.Integer(1)
    for f in sp.Mul.make_args(arg):
        if f.free_symbols & dynamic:
            rest *= f
        elif not (f.is_number and f > 0):
            scalars.append(f)
    return scalars, rest


def _scalar_positive_at(f: sp.Expr, design: Design, env) -> bool | None:
    subs = {h.symbol: sp.Float(env[h.name]) for h in design.hyper if h.name in env}
    e = f.xreplace(subs)
    if not e.has(k):
        try:
            return bool(complex(e).real > 0 and abs(complex(e).imag) == 0)
        except (TypeError, ValueError):
            return None
    bases = [p.base for p in e.atoms(sp.Pow) if p.exp.has(k)]
    if any(not b.is_number or abs(complex(b)) >= 1 for b in bases):
        return None
    fn = sp.lambdify(k, e, modules="numpy")
    steps = np.arange(1, SCALAR_STEPS + 1, dtype=float)
    with np.errstate(all="ignore"):
        vals = np.broadcast_to(np.asarray(fn(steps), dtype=float), steps.shape)
    if not np.all(np.isfinite(vals)) or not np.all(vals > 0):
        return False
    rho = max((abs(complex(b)) for b in bases), default=0.0)
    # beyond SCALAR_STEPS every power is below 1e-12: the factor is within rounding of its limit
    if rho > 0 and SCALAR_STEPS * math.log(rho) > math.log(1e-12):
        return None
    return True

