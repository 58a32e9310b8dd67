"""Validity of the realised map, the exporter's guard: every recursion of the state map the
generated code runs must be stable, every moment that claims to be an average must have unit
DC gain, and every quantity the update takes a square root or a log of (or divides by) must
stay nonnegative.

What is judged is the *realised* map (:mod:`ctopt.analysis._realised`): the assignments as the
code generator prints them, lets expanded and states' new values substituted. A moment declared
with ``DesignBuilder.filter`` and the same recursion written by hand are read the same way; a
hidden loop between states (``m <- ... + q; q <- m``) is one recursion of order two.

* **recursions** (linear blocks ``x_k = A x_(k-1) + B u_k + offset``, ``A`` constants of the
  design): stable (every eigenvalue of ``A``, Jury conditions in closed form or eigenvalues at
  the values), DC gain ``H(1)`` (exactly 1, or within :data:`DC_TOLERANCE` for float
  coefficients) and the sign of the impulse response. A first-order ``s <- c*s + b*u`` is an EMA
  (*moment*) when ``b = 1 - c``, a *momentum buffer* otherwise (torch's ``buf <- mu*buf + g``),
  an *accumulator* when ``c = 1`` (AdaGrad's sum: marginal by design, not a failure).
* **guarded quantities**: the argument of every square root and log, and every divisor, must be
  nonnegative; a state under a square root whose recursion can turn negative is refused.

Every verdict says how it was reached (``FilterCheck.how``, ``GuardVerdict.how``): **proven**
(symbolic, for every admissible value), **at these values** (a closed-form condition evaluated,
or a numeric certificate: the impulse response to a horizon plus a geometric tail bound from the
dominant pole), or **undecided** (with the reason). Undecided verdicts are reported, not refused.

Example:
    >>> import ctopt
    >>> r = filter_validity(ctopt.zoo.get("adamssm"))
    >>> r.ok
    True
    >>> print(filter_validity(ctopt.zoo.get("adamssm"), pole=1.2).failed[0])
    v: stable: |pole| < 1 violated for pole=1.2 (the recursion over ['v', 'v_1'] has spectral radius 1.2)
    >>> print(filter_validity(ctopt.zoo.get("adamssm"), zero=0.9999).failed[0][:57])
    v: nonnegative impulse response: zero <= Max(beta2, pole)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import sympy as sp
from sympy.printing.str import StrPrinter

from ..design import Design
from ..errors import CtoptError, HyperparameterError, MissingValuesError, OptionError
from ..filters import Filter, z
from ..limits import timed
from ._filter_checks import DC_TOLERANCE, NUMERIC, FilterCheck, block_check
from ._guards import GuardVerdict, judge_guards
from ._realised import Block, linear_blocks
from .impulse import nonnegative_impulse
from .proof import Proof

__all__ = ["DC_TOLERANCE", "FilterCheck", "FilterValidity", "GuardVerdict", "Region",
           "RegionSlices", "adamssm_region", "adamssm_slices", "filter_validity"]

CHECKS = ("stable", "unit DC gain", "nonnegative impulse response")
#: Failures of the symbolic machinery on an unusual design: reported as undecided, not raised.
ANALYSIS_ERRORS = (CtoptError, TypeError, ValueError, ArithmeticError, NotImplementedError,
                   AttributeError, RecursionError, sp.PolynomialError)


@dataclass
class FilterValidity:
    """Validity of the realised map at given values.

    ``ok``: every required condition holds and no guarded quantity is violated; ``failed``:
    readable violated conditions; ``undecided``: verdicts that could not be reached (reported,
    not refused); ``conditions``: the required closed-form conditions as one sympy boolean;
    ``filters``: per-recursion detail; ``guards``: per square root / log / divisor.
    """

    ok: bool
    failed: list[str]
    conditions: sp.Basic
    proof: Proof
    filters: list[FilterCheck]
    values: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)
    guards: list[GuardVerdict] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        lines = [f"Validity of the realised map: {'valid' if self.ok else 'INVALID'}"]
        for f in self.filters:
            lines.append(f"  {f.name} ({f.kind}, H(z) = {f.transfer}, input {f.input}):")
            for check, cond in f.conditions.items():
                lines.append(f"    {check}: {_show(cond)}  [{f.status.get(check, '?')}: "
                             f"{f.how.get(check, '')}]")
        for gd in self.guards:
            lines.append(f"  {gd}")
        for name, why in self.skipped.items():
            lines.append(f"  {name}: not a linear recursion ({why})")
        lines += [f"  FAILED {m}" for m in self.failed]
        lines += [f"  UNDECIDED {m}" for m in self.undecided]
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
    """Check the realised map of a design (or one :class:`~ctopt.filters.Filter`, e.g. an
    entry of ``design.filters``) at ``values`` (defaults: the design's defaults).

    Example:
        >>> import ctopt
        >>> r = filter_validity(ctopt.zoo.get("adagrad"))
        >>> r.ok, r.filters[0].kind, r.filters[0].status["stable"]
        (True, 'accumulator', 'marginal')
        >>> r.filters[0].how["nonnegative impulse response"]
        'proven'
        >>> filter_validity(ctopt.zoo.get("adam"), beta2=0.99).filters[1].how["stable"]
        'proven (implied by the domains)'
        >>> filter_validity(ctopt.zoo.get("adamssm")).filters[1].how["nonnegative impulse response"]
        'at these values (closed-form condition evaluated)'
    """
    design, domains = None, {}
    if isinstance(design_or_filter, Design):
        design = design_or_filter
        table = design.hyperparameters
        unknown = sorted(set(values) - set(table))
        if unknown:
            raise HyperparameterError(f"unknown hyperparameter(s) {unknown} for design "
                                      f"{design.name!r}; valid names: {list(table)}")
        env = {**design.defaults, **{n: float(v) for n, v in values.items()}}
        checks, skipped = _design_checks(design)
        domains = {hyper.symbol: hyper.domain for hyper in design.hyper}
        title = f"the realised map of {design.name!r} is valid"
    elif isinstance(design_or_filter, Filter):
        env = {n: float(v) for n, v in values.items()}
        f = design_or_filter
        name = f.output
        info = Filter(name, f.transfer, f.input, ())
        checks = [_fresh(_filter_check(name, sp.sympify(f.transfer), sp.sympify(f.input), info))]
        skipped = {}
        title = f"filter {name!r} is valid"
    else:
        raise OptionError("filter_validity takes a Design or a Filter, "
                         f"not {type(design_or_filter).__name__}")
    proof = Proof(title)
    failed: list[str] = []
    undecided: list[str] = []
    required = []
    for c in checks:
        _evaluate(c, env, failed, undecided, domains)
        proof.extend(c.proof, prefix=c.name)
        required += [c.conditions[r] for r in c.required if c.conditions[r] is not NUMERIC]
    for name, why in skipped.items():
        proof.step(f"{name}: not a linear recursion ({why}); checked through the guards only")
    try:
        verdicts = judge_guards(design, checks, skipped, env) if design is not None else []
    except ANALYSIS_ERRORS as exc:
        verdicts = []
        undecided.append(f"guarded quantities not analysed ({type(exc).__name__}: {exc})")
    for gd in verdicts:
        proof.step(f"{gd.where}: {gd.kind} of {gd.arg}: {gd.status} ({gd.how})")
        if gd.status == "violated":
            failed.append(f"{gd.where}: {gd.kind} of {gd.arg}: violated: {gd.how}")
        elif gd.status == "undecided":
            undecided.append(f"{gd.where}: {gd.kind} of {gd.arg}: undecided: {gd.how}")
    proof.step("conclusion: " + ("every required condition holds" if not failed
                                 else "violated: " + "; ".join(failed)))
    return FilterValidity(not failed, failed, sp.And(*required), proof, checks, env, skipped,
                          verdicts, undecided)


# ------------------------------------------------------------------ the recursions
@lru_cache(maxsize=128)
def _checks_of(design: Design) -> tuple[tuple[FilterCheck, ...], tuple]:
    try:
        blocks, skipped = linear_blocks(design)
    except ANALYSIS_ERRORS as exc:  # never a crash, never a wrong answer: say so
        return (), tuple((s.name, f"not analysed ({type(exc).__name__}: {exc})")
                         for s in design.states)
    declared = {f.output: f for f in design.filters}
    checks = []
    for b in blocks:
        try:
            checks.append(block_check(b, design, declared.get(b.names[0])))
        except ANALYSIS_ERRORS as exc:
            skipped.update({n: f"not analysed ({type(exc).__name__}: {exc})" for n in b.names})
    return tuple(checks), tuple(skipped.items())


def _design_checks(design: Design) -> tuple[list[FilterCheck], dict[str, str]]:
    checks, skipped = _checks_of(design)
    return [_fresh(c) for c in checks], dict(skipped)


@lru_cache(maxsize=128)
def _filter_check(name: str, transfer: sp.Expr, u: sp.Expr, info: Filter) -> FilterCheck:
    """A standalone filter, realised in observable canonical form as ``realize`` does."""
    from ..filters import _rational_in_z

    gn, gd = _rational_in_z(sp.cancel(transfer / z))
    lead = gd.LC()
    den = [c / lead for c in gd.all_coeffs()]
    n = len(den) - 1
    num = [c / lead for c in gn.all_coeffs()]
    num = [sp.Integer(0)] * (n - len(num)) + num
    A = sp.zeros(n, n)
    for i in range(n):
        A[i, 0] = -den[i + 1]
        if i + 1 < n:
            A[i, i + 1] = 1
    names = (name,) + tuple(f"{name}_{i}" for i in range(1, n))
    block = Block(names, A, sp.Matrix(num), u, sp.zeros(n, 1), (sp.Integer(0),) * n)
    return block_check(block, None, info)


def _fresh(check: FilterCheck) -> FilterCheck:
    """A copy of a cached check with its own proof, status and labels."""
    return replace(check, proof=Proof(check.proof.title, list(check.proof.steps)), status={},
                   how={})


# ------------------------------------------------------------------ evaluation
def _evaluate(check: FilterCheck, env: Mapping[str, float], failed: list[str],
              undecided: list[str], domains: Mapping | None = None) -> None:
    for name, cond in check.conditions.items():
        if cond is NUMERIC:
            ok, how = _numeric(check, name, env)
            check.proof.step(f"{name} at the given values: {how}", numeric=True)
        elif cond in (sp.true, sp.false):
            ok, how = bool(cond), "proven" + ("" if cond else " (fails for every value)")
        else:
            ok, how = _truth(cond, env), "at these values (closed-form condition evaluated)"
            if ok and domains and _implied(cond, domains):
                how = "proven (implied by the domains)"
        check.how[name] = how if ok is not None else f"undecided ({how})"
        if check.kind == "accumulator" and name == "stable":
            status = "marginal"
        elif name not in check.required:
            status = "not required" + ("" if ok else " (undecided)" if ok is None
                                       else " (does not hold)")
        elif ok is None:
            status = "undecided"
            undecided.append(f"{check.name}: {name}: undecided: {how}")
        else:
            status = "holds" if ok else "violated"
        check.status[name] = status
        if status == "violated":
            if cond is NUMERIC or cond is sp.false:
                failed.append(f"{check.name}: {name}: violated: {how}")
                continue
            broken = [a for a in sp.And.make_args(cond) if not _truth(a, env)] or [cond]
            used = sorted({s.name for a in broken for s in a.free_symbols})
            shown = ", ".join(f"{n}={env[n]:g}" for n in used if n in env)
            text = " and ".join(_show(a) for a in broken)
            where = f"for {shown}" if shown else "whatever the hyperparameters"
            if name == "stable" and check.block is not None and len(check.block.names) > 1:
                A, _ = _numeric_block(check, env)
                rho = float(np.max(np.abs(np.linalg.eigvals(A))))
                where += (f" (the recursion over {list(check.block.names)} has spectral radius "
                          f"{rho:.6g})")
            failed.append(f"{check.name}: {name}: {text} violated {where}")


@lru_cache(maxsize=512)
def _implied_cached(cond: sp.Basic, domains: tuple) -> bool:
    from .readable import implied

    return implied(cond, dict(domains))


def _implied(cond, domains: Mapping) -> bool:
    used = tuple(sorted(((s, d) for s, d in domains.items() if s in cond.free_symbols),
                        key=lambda x: x[0].name))
    return _implied_cached(cond, used)


def _numeric_block(check: FilterCheck, env: Mapping[str, float]):
    block = check.block
    subs = {s: sp.Float(env[s.name]) for s in block.A.free_symbols | (
        block.B.free_symbols if block.B is not None else set()) if s.name in env}
    missing = sorted(s.name for s in block.A.free_symbols if s not in subs)
    if missing:
        raise MissingValuesError(missing, f"to evaluate {check.name}'s recursion")
    A = np.array(block.A.xreplace(subs), dtype=float)
    B = None if block.B is None else np.array(block.B.xreplace(subs), dtype=float).reshape(-1)
    return A, B


def _numeric(check: FilterCheck, name: str, env) -> tuple[bool | None, str]:
    if check.block is None:
        return None, "no realisation to evaluate"
    A, B = _numeric_block(check, env)
    if name == "stable":
        rho = float(np.max(np.abs(np.linalg.eigvals(A))))
        return rho < 1, f"at these values (spectral radius {rho:.6g} of A, numpy eigenvalues)"
    if B is None:
        return None, "several inputs enter the recursion in different proportions"
    c = np.zeros(A.shape[0])
    c[0] = 1.0
    cert = nonnegative_impulse(A, B, c)
    label = {"certificate": "at these values (certificate)", "witness": "at these values "
             "(witness)", "identically zero": "proven"}.get(cert.method, "undecided")
    return cert.holds, f"{label}: {cert.reason}"


def _truth(cond: sp.Basic, env: Mapping[str, float]) -> bool:
    subs = {s: env[s.name] for s in cond.free_symbols if s.name in env}
    missing = sorted(s.name for s in cond.free_symbols if s.name not in env)
    if missing:
        raise MissingValuesError(missing, f"to evaluate {cond}")
    return bool(cond.subs({s: sp.Float(v) for s, v in subs.items()}))


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


def adamssm_region(design: Design) -> Region:
    """Where AdamSSM's second-moment filter ``v`` is valid, in ``(beta2, pole, zero)``
    (``design`` is AdamSSM, or a design with the same ``v`` filter and ``zero`` hyperparameter).

    Example:
        >>> import ctopt
        >>> r = adamssm_region(ctopt.zoo.get("adamssm"))
        >>> inside = r.holds(beta2=0.999, pole=0.9, zero=0.99)
        >>> outside = r.holds(beta2=0.9, pole=0.5, zero=0.95)
        >>> bool(inside), bool(outside)
        (True, False)
    """
    check = next((c for c in filter_validity(design).filters if c.name == "v"), None)
    if check is None or "zero" not in design.hyperparameters:
        raise OptionError(f"adamssm_region needs a design with a filter on 'v' and a hyperparameter "
                          f"'zero' (AdamSSM); {design.name!r} has neither or only one")
    zero = design.hyperparameters["zero"].symbol
    parts = [check.conditions[c] for c in CHECKS] + [zero < 1]
    proof = Proof("valid region of AdamSSM's second-moment filter in (beta2, pole, zero)")
    proof.extend(check.proof)
    proof.step("zero < 1 keeps the normalisation (1 - pole)/(1 - zero) finite and positive")
    expr = sp.And(*parts)
    proof.step("valid iff", expr)
    return Region(expr, proof)


@dataclass(frozen=True)
class RegionSlices:
    """``inside[i]`` is :func:`adamssm_region` at ``beta2[i]`` on the grid ``(pole, zero)``
    (``np.meshgrid(pole, zero)``: rows follow ``zero``)."""

    beta2: np.ndarray
    pole: np.ndarray
    zero: np.ndarray
    inside: np.ndarray


def adamssm_slices(design: Design, beta2_values=(0.9, 0.99, 0.999),
                   resolution: int = 301) -> RegionSlices:
    """Slices of :func:`adamssm_region` in the (pole, zero) plane, one per ``beta2``.

    Example:
        >>> import ctopt
        >>> s = adamssm_slices(ctopt.zoo.get("adamssm"), (0.99,), resolution=3)
        >>> s.inside.shape, s.inside[0].tolist()
        ((1, 3, 3), [[True, True, True], [True, True, True], [False, False, True]])
    """
    region = adamssm_region(design)
    pole = np.linspace(0, 0.9999, resolution)
    zero = np.linspace(-0.9999, 0.9999, resolution)
    P, Z = np.meshgrid(pole, zero)
    beta2 = np.asarray(beta2_values, dtype=float)
    inside = np.stack([region.holds(beta2=b2, pole=P, zero=Z) for b2 in beta2])
    return RegionSlices(beta2, pole, zero, inside)
