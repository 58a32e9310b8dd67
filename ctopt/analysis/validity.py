"""Moment-filter validity, the exporter's guard: every moment filter of a design must be
stable, unbiased in steady state (DC gain exactly 1) and, when it estimates a second moment,
have a nonnegative impulse response (so the moment can never turn negative).

Which recursions are checked, and how:

* **declared filters** (``design.filters``, a transfer function ``H(z)``): all three checks.
* **EMAs written as assignments** (``m <- beta1*m + (1-beta1)*grad``): a state whose update is
  affine in itself, ``s <- c*s + r``, with ``c`` depending on hyperparameters only, is the
  first-order filter ``H(z) = b z/(z - c)`` from ``u = r_signal/b``; it is derived, not assumed.
  If ``b = 1 - c`` it is a *moment* (unit DC gain, proven). Otherwise it is a *momentum buffer*
  (torch's ``buf <- mu*buf + grad`` has DC gain ``1/(1-mu)`` by design): it must be stable,
  its DC gain is reported but not required. A pole at exactly 1 (AdaGrad's sum) is an
  *accumulator*: marginally stable by design, reported as such, exempt from the DC-gain check.
* Terms of ``r`` without any signal (AdaBelief's ``+ eps``) are a constant input, reported.
* Nonlinear updates (AMSGrad's running max) and pure memories (``g_prev <- g``) are listed as
  not filters. Coefficients that depend on ``k`` through ``Piecewise((.., Eq(k, 1)), (c, True))``
  are analysed in their steady state ``k >= 2``.

Example:
    >>> import ctopt
    >>> r = filter_validity(ctopt.zoo.get("adamssm"))
    >>> r.ok
    True
    >>> filter_validity(ctopt.zoo.get("adamssm"), pole=1.2).failed
    ['v: stable: |pole| < 1 violated for pole=1.2']
    >>> print(filter_validity(ctopt.zoo.get("adamssm"), zero=0.9999).failed[0][:57])
    v: nonnegative impulse response: zero <= Max(beta2, pole)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache

import sympy as sp
from sympy.printing.str import StrPrinter

from ..design import Design, FilterInfo, k
from ..errors import CtoptError, HyperparameterError
from ..filters import Filter, z
from ..limits import timed
from .proof import Proof
from .stability import _readable

__all__ = ["FilterCheck", "FilterValidity", "adamssm_region", "filter_validity",
           "plot_adamssm_region"]

CHECKS = ("stable", "unit DC gain", "nonnegative impulse response")


@dataclass
class FilterCheck:
    """The checks of one moment filter. ``kind`` is ``"moment"``, ``"momentum buffer"`` or
    ``"accumulator"``; ``conditions`` maps a check name to its closed-form condition;
    ``required`` names the checks whose failure makes the design invalid; ``status`` maps each
    check to ``"holds"``, ``"violated"``, ``"marginal"`` or ``"not required"`` at the values."""

    name: str
    kind: str
    transfer: sp.Expr
    input: sp.Expr
    conditions: dict[str, sp.Basic]
    required: tuple[str, ...]
    proof: Proof
    status: dict[str, str] = field(default_factory=dict)
    constant_input: sp.Expr = sp.Integer(0)


@dataclass
class FilterValidity:
    """Validity of every moment filter of a design at given values.

    ``ok``: every required condition holds; ``failed``: readable violated conditions;
    ``conditions``: the required conditions as one sympy boolean; ``filters``: per-filter detail.
    """

    ok: bool
    failed: list[str]
    conditions: sp.Basic
    proof: Proof
    filters: list[FilterCheck]
    values: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        lines = [f"Filter validity: {'valid' if self.ok else 'INVALID'}"]
        for f in self.filters:
            lines.append(f"  {f.name} ({f.kind}, H(z) = {f.transfer}, input {f.input}):")
            for check, cond in f.conditions.items():
                lines.append(f"    {check}: {cond}  [{f.status.get(check, '?')}]")
        for name, why in self.skipped.items():
            lines.append(f"  {name}: not a linear filter ({why})")
        lines += [f"  FAILED {m}" for m in self.failed]
        return "\n".join(lines)

    def _repr_latex_(self) -> str:
        rows = [r"\textbf{Filter validity: " + ("valid" if self.ok else "INVALID") + "}"]
        for f in self.filters:
            rows.append(rf"{sp.latex(sp.Symbol(f.name))}:\ H(z) = {sp.latex(f.transfer)}")
            for check, cond in f.conditions.items():
                rows.append(rf"\quad \text{{{check}}}:\ {sp.latex(cond)}\ "
                            rf"[\text{{{f.status.get(check, '?')}}}]")
        return r"$\begin{array}{l}" + r" \\ ".join(rows) + r"\end{array}$"


# ------------------------------------------------------------------ entry point
@timed("filter validity")
def filter_validity(design_or_filter, **values: float) -> FilterValidity:
    """Check the moment filters of a design (or one :class:`~ctopt.filters.Filter` /
    ``FilterInfo``) at ``values`` (defaults: the design's defaults).

    Example:
        >>> import ctopt
        >>> r = filter_validity(ctopt.zoo.get("adagrad"))
        >>> r.ok, r.filters[0].kind, r.filters[0].status["stable"]
        (True, 'accumulator', 'marginal')
    """
    domains: list[sp.Basic] = []
    if isinstance(design_or_filter, Design):
        design = design_or_filter
        table = design.hyperparameters
        unknown = sorted(set(values) - set(table))
        if unknown:
            raise HyperparameterError(f"unknown hyperparameter(s) {unknown} for design "
                                      f"{design.name!r}; valid names: {list(table)}")
        env = {**design.defaults, **{n: float(v) for n, v in values.items()}}
        domains = [h.domain.condition(h.symbol) for h in design.hyper]
        checks, skipped = _design_filters(design, domains)
        title = f"moment filters of {design.name!r} are valid"
    elif isinstance(design_or_filter, (Filter, FilterInfo)):
        env = {n: float(v) for n, v in values.items()}
        f = design_or_filter
        name = f.name if isinstance(f, Filter) else f.output
        checks, skipped = [_fresh(_declared(name, f.transfer, f.input, ()))], {}
        title = f"filter {name!r} is valid"
    else:
        raise CtoptError("filter_validity takes a Design or a Filter, "
                         f"not {type(design_or_filter).__name__}")
    proof = Proof(title)
    failed: list[str] = []
    required = []
    for c in checks:
        _evaluate(c, env, failed)
        proof.extend(c.proof, prefix=c.name)
        required += [c.conditions[r] for r in c.required]
    for name, why in skipped.items():
        proof.step(f"{name}: not a linear filter ({why}); not checked")
    proof.step("conclusion: " + ("every required condition holds" if not failed
                                 else "violated: " + "; ".join(failed)))
    return FilterValidity(not failed, failed, sp.And(*required), proof, checks, env, skipped)


# ------------------------------------------------------------------ finding the filters
def _design_filters(design: Design, domains) -> tuple[list[FilterCheck], dict[str, str]]:
    lets = {a.target: a.expr for a in design.assignments if a.kind == "let"}
    hyper = {h.symbol for h in design.hyper}
    declared = {s for f in design.filters for s in f.states}
    domains = tuple(domains)
    checks = [_fresh(_declared(f.output, f.transfer, f.input, domains)) for f in design.filters]
    skipped: dict[str, str] = {}
    for a in design.assignments:
        if a.kind != "state" or a.target.name in declared:
            continue
        found = _first_order(a.target, _steady(a.expr), hyper, lets)
        if isinstance(found, str):
            skipped[a.target.name] = found
            continue
        c, b, u, const = found
        checks.append(_fresh(_first_order_check(a.target.name, c, b, u, const, domains)))
    return checks, skipped


def _fresh(check: FilterCheck) -> FilterCheck:
    """A copy of a cached check with its own proof and status."""
    return replace(check, proof=Proof(check.proof.title, list(check.proof.steps)), status={})


def _steady(expr: sp.Expr) -> sp.Expr:
    """Replace ``Piecewise((.., Eq(k, 1)), (c, True))`` by ``c``: the steady state k >= 2."""
    def pick(*args):
        if any(cond.has(k) for _, cond in args[:-1]) and args[-1][1] == sp.true:
            return args[-1][0]
        return sp.Piecewise(*args)
    return expr.replace(lambda e: isinstance(e, sp.Piecewise), lambda e: pick(*e.args))


def _first_order(s: sp.Symbol, expr: sp.Expr, hyper: set, lets: Mapping):
    if not expr.has(s):
        return "a memory of its input, not a recursion"
    if not expr.is_polynomial(s) or sp.degree(expr, s) != 1:
        return f"the update {s} <- {expr} is not affine in {s}"
    expanded = sp.expand(expr)
    c = sp.factor(expanded.coeff(s, 1))
    if not c.free_symbols <= hyper:
        return f"the coefficient {c} of {s} is not a constant of the design"
    r = sp.factor_terms(expr - c * s) if c != 0 else expr
    r = sp.simplify(r) if r.has(s) else r
    if r.has(s):
        return f"the update {s} <- {expr} is not affine in {s}"
    signal, const = sp.Integer(0), sp.Integer(0)
    for term in sp.Add.make_args(r):
        if term.free_symbols <= hyper:
            const += term
        else:
            signal += term
    signal = sp.factor_terms(signal)
    b, u = signal.as_independent(*(signal.free_symbols - hyper), as_Add=False)
    if sp.cancel(b / (1 - c)) == -1:
        b, u = -b, -u
    return c, b, u, const


# ------------------------------------------------------------------ first-order filters
@lru_cache(maxsize=256)
def _first_order_check(name, c, b, u, const, domains) -> FilterCheck:
    proof = Proof(f"{name}: first-order recursion {name} <- {c}*{name} + {b}*u")
    H = b * z / (z - c)
    proof.step("transfer function from u (current-input convention)", sp.Eq(sp.Symbol("H"), H))
    conds: dict[str, sp.Basic] = {}
    if c == 1:
        kind = "accumulator"
        conds["stable"] = sp.true
        proof.step("pole at z = 1: an integrator, marginally stable by design (bounded input "
                   "gives a sum growing at most linearly); reported, not a failure")
        proof.step("DC gain: infinite for an accumulator; exempt from the unit-DC-gain check")
        required = ("nonnegative impulse response",)
    else:
        dc = sp.cancel(b / (1 - c))
        kind = "moment" if dc == 1 else "momentum buffer"
        conds["stable"] = sp.Abs(c) < 1
        proof.step("single pole; stable iff |pole| < 1", conds["stable"])
        conds["unit DC gain"] = sp.true if dc == 1 else sp.Eq(dc, 1)
        proof.step("DC gain H(1)", sp.Eq(sp.Symbol("H(1)"), dc))
        if kind == "moment":
            proof.step("b = 1 - c: an EMA, unbiased in steady state (proven identically)")
            required = ("stable", "unit DC gain", "nonnegative impulse response")
        else:
            proof.step("DC gain differs from 1 by design (a momentum buffer, not an average); "
                       "reported, not required")
            required = ("stable",)
    conds["nonnegative impulse response"] = _first_order_nonneg(b, c, proof)
    if not sp.sympify(u).is_nonnegative:
        required = tuple(r for r in required if r != "nonnegative impulse response")
        proof.step(f"input {u} can be negative (a first moment): nonnegativity not required")
    if const != 0:
        proof.step("constant input (no signal) added at every step", const)
    return FilterCheck(name, kind, H, u, conds, required, proof, constant_input=const)


def _first_order_nonneg(b, c, proof: Proof) -> sp.Basic:
    proof.step("impulse response h[k] = b c^(k-1), k >= 1",
               sp.Symbol("b") * sp.Symbol("c") ** (k - 1))
    cond = sp.And(*[_readable(x >= 0) for x in (b, c)])
    proof.step("h[k] >= 0 for all k iff b >= 0 and c >= 0 (c < 0 alternates the sign at k = 2; "
               "b = 0 is also allowed)", cond)
    return cond


# ------------------------------------------------------------------ declared filters
@lru_cache(maxsize=256)
def _declared(name: str, transfer: sp.Expr, u: sp.Expr, domains) -> FilterCheck:
    proof = Proof(f"{name}: declared filter H(z) = {transfer}")
    num, den = sp.fraction(sp.cancel(sp.together(transfer)))
    poles = sp.roots(sp.Poly(den, z), multiple=True)
    conds: dict[str, sp.Basic] = {}
    if len(poles) == sp.degree(den, z):
        conds["stable"] = sp.And(*[sp.Abs(p) < 1 for p in _unique(poles)])
        proof.step("poles", *poles)
        proof.step("stable iff every pole has |pole| < 1", conds["stable"])
    else:
        from .stability import stability_conditions

        sc = stability_conditions(sp.Poly(den, z))
        conds["stable"] = sc.expr
        proof.extend(sc.proof, prefix="stability")
    dc = sp.cancel(transfer.subs(z, 1))
    conds["unit DC gain"] = sp.true if sp.cancel(dc - 1) == 0 else sp.Eq(dc, 1)
    proof.step("DC gain H(1) = 1" + (" identically" if dc == 1 else ""),
               sp.Eq(sp.Symbol("H(1)"), dc))
    conds["nonnegative impulse response"] = _impulse_nonneg(transfer, poles, domains, proof)
    required = ["stable", "unit DC gain"]
    if sp.sympify(u).is_nonnegative:
        required.append("nonnegative impulse response")
    else:
        proof.step(f"input {u} can be negative: nonnegativity reported, not required")
    return FilterCheck(name, "moment", transfer, u, conds, tuple(required), proof)


def _impulse_nonneg(H, poles, domains, proof: Proof) -> sp.Basic:
    order = sp.degree(sp.fraction(sp.cancel(H))[1], z)
    if sp.cancel(H.subs(z, 0)) != 0 or len(poles) != order or order > 2:
        proof.step("no closed form implemented for this filter's impulse-response sign; "
                   "checked numerically at the given values", numeric=True)
        return sp.Symbol("numeric_impulse_check")
    res = [sp.factor(sp.cancel(((z - p) * H / z).subs(z, p))) for p in poles] if len(
        set(poles)) == len(poles) else None
    if order == 1 or res is None:
        p = poles[0]
        b = sp.factor(sp.cancel(H * (z - p) / z))
        if order == 1:
            return _first_order_nonneg(b, p, proof)
        return sp.Symbol("numeric_impulse_check")
    (r1, r2), (R1, R2) = poles, res
    proof.step("impulse response h[k] = R1 r1^(k-1) + R2 r2^(k-1) with residues", sp.Eq(
        sp.Symbol("R1"), R1), sp.Eq(sp.Symbol("R2"), R2))
    proof.step("for real poles r1, r2 >= 0: h[k] >= 0 for all k iff h[1] = R1 + R2 >= 0 and the "
               "residue of the dominant pole is >= 0 (if it is, r_dom^(k-1) (R_dom + R_other "
               "(r_other/r_dom)^(k-1)) is nondecreasing in k; if not, h[k] < 0 for large k)")
    known = [sp.expand(positive_form_of(d)) for d in domains for d in sp.And.make_args(d)]
    known += [1 - r1, 1 + r1, 1 - r2, 1 + r2]
    first = _drop_positive(sp.factor(sp.cancel(R1 + R2)), known)
    dom1 = _drop_positive(sp.factor(sp.cancel(R1 * (r1 - r2))), known + [r1 - r2])
    dom2 = _drop_positive(sp.factor(sp.cancel(R2 * (r2 - r1))), known + [r2 - r1])
    proof.step("h[1] >= 0, after dropping factors positive under stability and the domains",
               first >= 0)
    cond_dom = _max_form(r1, r2, dom1, dom2)
    proof.step("dominant residue >= 0 (same inequality at r1 = r2 by continuity)", cond_dom)
    out = sp.And(first >= 0, cond_dom, r1 >= 0, r2 >= 0)
    proof.step("nonnegative impulse response iff", out)
    return out


def _max_form(r1, r2, dom1, dom2) -> sp.Basic:
    """``Or(r1 >= r2 & dom1 >= 0, r2 >= r1 & dom2 >= 0)``, written ``x <= Max(r1, r2)`` when both
    residue numerators are ``r_i - x`` (AdamSSM: ``zero <= Max(beta2, pole)``)."""
    x1, x2 = sp.expand(r1 - dom1), sp.expand(r2 - dom2)
    if x1 == x2 and not x1.has(r1 - 0) and sp.expand(dom1 - r1 + x1) == 0:
        return x1 <= sp.Max(r1, r2)
    return sp.Or(sp.And(r1 >= r2, dom1 >= 0), sp.And(r2 >= r1, dom2 >= 0))


def positive_form_of(rel: sp.Basic) -> sp.Expr:
    if isinstance(rel, (sp.StrictGreaterThan, sp.GreaterThan)):
        return rel.lhs - rel.rhs
    if isinstance(rel, (sp.StrictLessThan, sp.LessThan)):
        return rel.rhs - rel.lhs
    return sp.Integer(0)


def _drop_positive(expr: sp.Expr, known: list[sp.Expr]) -> sp.Expr:
    """Drop the factors of ``expr`` that are known positive (a positive constant, or a factor
    equal to a known-positive expression up to a positive constant); keep the sign."""
    keep, sign = sp.Integer(1), 1
    num, den = sp.fraction(sp.factor(expr))
    for part, power in [(num, 1), (den, -1)]:
        for f in sp.Mul.make_args(part):
            base, exp = f.as_base_exp()
            if base.is_number:
                sign *= 1 if base ** exp > 0 else -1
                continue
            s = _known_sign(base, known)
            if s is None:
                keep *= base ** (exp * power)
            elif s < 0 and exp % 2 == 1:
                sign = -sign
    return sign * keep


def _known_sign(f: sp.Expr, known: list[sp.Expr]) -> int | None:
    e = sp.expand(f)
    for p in known:
        if p == 0:
            continue
        ratio = sp.cancel(e / p)
        if ratio.is_number and ratio != 0:
            return 1 if ratio > 0 else -1
    return None


def _unique(items):
    out = []
    for i in items:
        if i not in out:
            out.append(i)
    return out


# ------------------------------------------------------------------ evaluation
def _evaluate(check: FilterCheck, env: Mapping[str, float], failed: list[str]) -> None:
    for name, cond in check.conditions.items():
        if cond == sp.Symbol("numeric_impulse_check"):
            ok = _numeric_impulse(check.transfer, env)
            check.proof.step(f"impulse response over 2000 steps at the given values: "
                             f"{'nonnegative' if ok else 'NEGATIVE somewhere'}", numeric=True)
        else:
            ok = _truth(cond, env)
        if check.kind == "accumulator" and name == "stable":
            status = "marginal"
        elif name not in check.required:
            status = "not required" + ("" if ok else " (does not hold)")
        else:
            status = "holds" if ok else "violated"
        check.status[name] = status
        if status == "violated":
            broken = [a for a in sp.And.make_args(cond) if not _truth(a, env)] or [cond]
            used = sorted({s.name for a in broken for s in a.free_symbols})
            shown = ", ".join(f"{n}={env[n]:g}" for n in used if n in env)
            text = " and ".join(_show(a) for a in broken)
            where = f"for {shown}" if shown else "whatever the hyperparameters"
            failed.append(f"{check.name}: {name}: {text} violated {where}")


def _truth(cond: sp.Basic, env: Mapping[str, float]) -> bool:
    subs = {s: env[s.name] for s in cond.free_symbols if s.name in env}
    missing = sorted(s.name for s in cond.free_symbols if s.name not in env)
    if missing:
        raise CtoptError(f"values needed for {missing} to evaluate {cond}")
    return bool(cond.subs({s: sp.Float(v) for s, v in subs.items()}))


def _numeric_impulse(H: sp.Expr, env: Mapping[str, float], steps: int = 2000) -> bool:
    import numpy as np
    from scipy.signal import dimpulse

    num, den = sp.fraction(sp.cancel(H))
    subs = {s: env[s.name] for s in H.free_symbols if s.name in env}
    b = [float(c) for c in sp.Poly(num.subs(subs), z).all_coeffs()]
    a = [float(c) for c in sp.Poly(den.subs(subs), z).all_coeffs()]
    _, (y,) = dimpulse((b, a, 1), n=steps)
    return bool(np.all(y.ravel() >= -1e-12 * max(1.0, float(np.max(np.abs(y))))))


class _Printer(StrPrinter):
    def _print_Abs(self, expr):
        return "|" + self._print(expr.args[0]) + "|"


def _show(cond: sp.Basic) -> str:
    """``Abs(pole) < 1`` printed as ``|pole| < 1``."""
    return _Printer().doprint(cond)


# ------------------------------------------------------------------ AdamSSM's valid region
@dataclass
class Region:
    """A region of hyperparameter space as a sympy boolean, with its proof and a vectorised
    membership test ``holds(**values)``."""

    expr: sp.Basic
    proof: Proof

    def holds(self, **values):
        """Vectorised membership (numpy arrays broadcast together)."""
        import numpy as np

        params = sorted(self.expr.free_symbols, key=lambda s: s.name)
        fn = sp.lambdify(params, self.expr, modules="numpy")
        args = np.broadcast_arrays(*[np.asarray(values[p.name], dtype=float) for p in params])
        return np.asarray(fn(*args), dtype=bool)


def adamssm_region() -> Region:
    """Where AdamSSM's second-moment filter is valid, in ``(beta2, pole, zero)``.

    Example:
        >>> r = adamssm_region()
        >>> inside = r.holds(beta2=0.999, pole=0.9, zero=0.99)
        >>> outside = r.holds(beta2=0.9, pole=0.5, zero=0.95)
        >>> bool(inside), bool(outside)
        (True, False)
    """
    from ..zoo import adamssm

    design = adamssm()
    check = next(c for c in filter_validity(design).filters if c.name == "v")
    zero = design.hyperparameters["zero"].symbol
    parts = [check.conditions[c] for c in CHECKS] + [zero < 1]
    proof = Proof("valid region of AdamSSM's second-moment filter in (beta2, pole, zero)")
    proof.extend(check.proof)
    proof.step("zero < 1 keeps the normalisation (1 - pole)/(1 - zero) finite and positive")
    expr = sp.And(*parts)
    proof.step("valid iff", expr)
    return Region(expr, proof)


def plot_adamssm_region(beta2_values=(0.9, 0.99, 0.999), resolution: int = 301):
    """Slices of :func:`adamssm_region` in the (pole, zero) plane for several ``beta2``;
    returns ``(fig, axes)`` (matplotlib, imported lazily).

    Example:
        >>> from ctopt.analysis.validity import plot_adamssm_region
        >>> fig, axes = plot_adamssm_region(beta2_values=(0.99,), resolution=21)
        >>> axes.shape
        (1, 1)
    """
    import matplotlib.pyplot as plt
    import numpy as np

    region = adamssm_region()
    pole, zero = np.meshgrid(np.linspace(0, 0.9999, resolution), np.linspace(-0.9999, 0.9999,
                                                                             resolution))
    fig, axes = plt.subplots(1, len(beta2_values), figsize=(4 * len(beta2_values), 3.6),
                             squeeze=False, sharey=True)
    for ax, b2 in zip(axes[0], beta2_values, strict=True):
        inside = region.holds(beta2=b2, pole=pole, zero=zero)
        ax.contourf(pole, zero, inside.astype(float), levels=[-0.5, 0.5, 1.5],
                    colors=["#f4c7c3", "#b7e1cd"])
        ax.plot([0, 1], [b2, b2], "k--", lw=0.8)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(f"beta2 = {b2:g}")
        ax.set_xlabel("pole")
    axes[0][0].set_ylabel("zero")
    fig.suptitle("AdamSSM second-moment filter: valid (green) iff zero <= max(beta2, pole)")
    fig.tight_layout()
    return fig, axes
