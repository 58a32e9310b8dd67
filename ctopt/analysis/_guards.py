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

from .. import ops
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
    """``state -> (nonnegative?, how)`` for every state (None: not known). Recursions are
    decided from their impulse response once the states in their input are known; nonlinear
    updates by induction; both are repeated until nothing changes."""
    facts: dict[str, tuple[bool | None, str]] = {}
    inits = {s.name: s.init for s in design.states}
    subs = {h.symbol: env[h.name] for h in design.hyper if h.name in env}
    lines = _box_lines(design)
    for _ in range(len(design.states) + 1):
        before = dict(facts)
        for c in checks:
            if c.block is not None and facts.get(c.name, (None,))[0] is None:
                facts[c.name] = _block_fact(c, design, facts, inits, subs, env)
        # nonlinear updates: induction (greatest fixpoint) over the states not yet known
        assume = {s for s in skipped if s in inits and facts.get(s, (None,))[0] is None}
        changed = True
        while changed:
            changed = False
            known = _known(facts) | {_state_symbol(n): sp.Symbol(n, nonnegative=True)
                                     for n in assume}
            for st in list(assume):
                if not (_sign_at(lines[st], design, known, subs)
                        and _sign_at(sp.sympify(inits[st]), design, {}, subs)):
                    assume.discard(st)
                    changed = True
        exact = all(how.startswith("proven") for ok, how in facts.values() if ok) and all(
            _nonnegative(lines[st], design, known) for st in assume)
        for st in assume:
            facts[st] = (True, ("proven" if exact else "at these values") + " by induction "
                         "(nonnegative start, update nonnegative when the states it reads are)")
        if facts == before:
            break
    return facts


def _known(facts) -> dict:
    return {_state_symbol(n): sp.Symbol(n, nonnegative=True) for n, (ok, _) in facts.items() if ok}


def _sign_at(expr: sp.Expr, design: Design, known: dict, subs) -> str | None:
    """``"proven"`` (domains) or ``"at these values"`` when ``expr >= 0``, else None."""
    if _nonnegative(expr, design, known):
        return "proven"
    numeric = sp.sympify(expr).xreplace({s: sp.Float(v) for s, v in subs.items()})
    if numeric.xreplace(known).is_nonnegative:
        return "at these values"
    return None


def _block_fact(c, design, facts, inits, subs, env) -> tuple[bool | None, str]:
    status = c.status.get("nonnegative impulse response", "")
    how = c.how.get("nonnegative impulse response", "")
    init_ok = all(_at(sp.sympify(inits[m]), subs) >= 0 for m in c.block.names)
    offset_ok = all(_at(o, subs) >= 0 for o in c.block.offset) if \
        c.block.offset.free_symbols <= set(subs) else False
    known = _known(facts)
    u_sign = _sign_at(c.input, design, known, subs)
    if status in ("holds", "not required") and u_sign and init_ok and offset_ok:
        used = {s.name for s in c.input.free_symbols} & {n for n, (ok, _) in facts.items() if ok}
        proven = how.startswith("proven") and u_sign == "proven" \
            and all(facts[n][1].startswith("proven") for n in used) \
            and _nonnegative(sp.Add(*c.block.offset), design) \
            and all(_nonnegative(sp.sympify(inits[m]), design) for m in c.block.names)
        return True, "proven" if proven else "at these values"
    if not (init_ok and offset_ok):
        witness = _zero_input_witness(c, inits, subs)
        if witness is not None:
            return False, witness
    if status in ("violated", "not required (does not hold)") and u_sign:
        return False, (f"its impulse response from the nonnegative input {c.input} is negative "
                       f"({how})")
    if not u_sign and _can_be_negative(c.input, design, env) and c.transfer != 0:
        return False, f"its input {c.input} takes negative values"
    return None, "its sign is not decided"


def _zero_input_witness(c, inits, subs, steps: int = 100_000) -> str | None:
    """With every input at zero (an admissible gradient), the recursion runs on its initial
    values and constant input alone: the first step where its output is negative, if any."""
    block = c.block
    try:
        A = np.array(block.A.xreplace({s: sp.Float(v) for s, v in subs.items()}), dtype=float)
        off = np.array(block.offset.xreplace({s: sp.Float(v) for s, v in subs.items()}),
                       dtype=float).reshape(-1)
        x = np.array([_at(sp.sympify(inits[m]), subs) for m in block.names], dtype=float)
    except (TypeError, ValueError):
        return None
    for t in range(1, steps + 1):
        x = A @ x + off
        if x[0] < 0:
            return (f"with zero gradient from the start, {c.name} = {x[0]:.3g} < 0 at step {t} "
                    "(its initial value and constant input alone, computed step by step)")
        if not np.all(np.isfinite(x)):
            return None
    return None


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
        point = {g: gv, theta: 0.0} | {s.symbol: 0.0 for s in design.states}
        point |= {r.symbol: ops.REDUCTIONS[r.kind].symbolic(r.of.xreplace(subs).xreplace(point))
                  for r in design.reductions}
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
    out, verified = [], {}
    listed = guards(design)
    order = [x for x in listed if x.kind != "divisor"] + [x for x in listed if x.kind == "divisor"]
    for gd in order:
        if gd.kind == "divisor":
            gd = Guard(gd.kind, _known_parts(gd.arg, verified, design), gd.where), gd.arg
        else:
            gd = gd, gd.arg
        try:
            verdict = _judge(design, gd[0], facts, nonneg, used_how, env)
        except (TypeError, ValueError, ArithmeticError, NotImplementedError, AttributeError,
                RecursionError, sp.PolynomialError) as exc:
            verdict = GuardVerdict(gd[0].kind, gd[1], gd[0].where, "undecided",
                                   f"not analysed ({type(exc).__name__}: {exc})")
        verdict.arg = gd[1]
        inherited = [how for arg, how in verified.items() if gd[1].has(arg)]
        if verdict.status == "holds" and any(not h.startswith("proven") for h in inherited):
            verdict.how = "at these values (the square roots it contains are nonnegative at " \
                "these values; the rest under the domains)"
        out.append(verdict)
        if verdict.status == "holds" and gd[0].kind in ("square root", "fractional power"):
            verified[gd[1]] = verdict.how
    return sorted(out, key=lambda v: [(x.kind, x.arg) for x in listed].index((v.kind, v.arg)))


def _known_parts(expr: sp.Expr, verified: set, design: Design) -> sp.Expr:
    """``expr`` with roots of verified arguments, and per-step scalars proven positive,
    replaced by nonnegative / positive symbols."""
    dynamic = {g, theta} | {s.symbol for s in design.states} | \
        {r.symbol for r in design.reductions}

    def walk(e):
        if not isinstance(e, sp.Expr):
            return e
        if e.is_Pow and not e.exp.is_integer and e.base in verified:
            return sp.Dummy("root", nonnegative=True)
        if e.is_Pow and e.exp.is_number and e.exp < 0 and not e.exp.is_integer \
                and e.base in verified:
            return 1 / sp.Dummy("root", positive=True)
        if not (e.free_symbols & dynamic) and e.has(k) and positive_scalar(e, design):
            return sp.Dummy("scalar", positive=True)
        if e.is_Atom:
            return e
        return e.func(*[walk(a) for a in e.args])

    return walk(expr)


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
        scalar_how = (f"at these values (per-step factor {f} positive: the first steps one by "
                      "one, then a geometric bound on its decaying terms)")
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
    if rest.is_Symbol and rest.name in facts and facts[rest.name][0] is False:
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
    """Whether a per-step scalar is positive for every ``k >= 1`` at the values: numerator and
    denominator are sums ``a_0 + sum_i a_i k^m_i prod b^(e(k))`` with ``|b| < 1``; beyond the step
    ``K`` where the bound ``sum_i |a_i| k^m_i prod |b|^(e(k))`` is below ``|a_0|`` and decreasing,
    the sign is that of ``a_0``; steps ``1..K`` are checked one by one (a certificate)."""
    subs = {h.symbol: sp.nsimplify(env[h.name]) for h in design.hyper if h.name in env}
    e = sp.piecewise_fold(f.xreplace(subs))
    if isinstance(e, sp.Piecewise):
        e = next((v for v, c in e.args if c == sp.true), None)
        if e is None:
            return None
    if not e.has(k):
        try:
            return bool(sp.sympify(e).is_positive)
        except (TypeError, ValueError):
            return None
    num, den = sp.fraction(sp.together(e))
    horizon = 1
    signs = []
    for part in (num, den):
        found = _tail(sp.expand(part))
        if found is None:
            return None
        sign, steps = found
        signs.append(sign)
        horizon = max(horizon, steps)
    if signs[0] * signs[1] < 0 or horizon > SCALAR_STEPS:
        return None if horizon > SCALAR_STEPS else False
    fn = sp.lambdify(k, e, modules="numpy")
    ks = np.arange(1, horizon + 1, dtype=float)
    with np.errstate(all="ignore"):
        vals = np.broadcast_to(np.asarray(fn(ks), dtype=float), ks.shape)
    return bool(np.all(np.isfinite(vals)) and np.all(vals > 0))


def _tail(expr: sp.Expr) -> tuple[int, int] | None:
    """``(sign of the constant term, K)`` for ``expr = a_0 + sum_i a_i k^m_i prod b^(e(k))``
    (see :func:`_scalar_positive_at`), or None when it is not of that form."""
    a0, terms = sp.Integer(0), []
    for t in sp.Add.make_args(expr):
        if not t.has(k):
            a0 += t
            continue
        coeff, m, rate = sp.Integer(1), 0, 0.0
        for f in sp.Mul.make_args(t):
            base, ex = f.as_base_exp()
            if not f.has(k):
                coeff *= f
            elif base == k and ex.is_Integer and ex > 0:
                m += int(ex)
            elif base.is_number and ex.is_polynomial(k) and sp.degree(ex, k) == 1:
                slope = sp.Poly(ex, k).all_coeffs()[0]
                b = abs(complex(base))
                if not 0 < b < 1 or not slope > 0:
                    return None
                rate += float(slope) * math.log(b)  # |f| = C * exp(rate * k)
                coeff *= abs(base) ** (ex - slope * k)
            else:
                return None
        if rate >= 0:
            return None
        terms.append((abs(float(coeff)), m, rate))
    if a0 == 0:
        return None
    # each term is decreasing once k > m / |rate|; the sum then stays below |a0| past K
    start = max([1] + [math.ceil(m / -rate) + 1 for _, m, rate in terms])
    for K in range(start, SCALAR_STEPS + 2):
        bound = sum(c * K ** m * math.exp(rate * K) for c, m, rate in terms)
        if bound < abs(float(a0)):
            return (1 if a0 > 0 else -1), K
    return (1 if a0 > 0 else -1), SCALAR_STEPS + 1
