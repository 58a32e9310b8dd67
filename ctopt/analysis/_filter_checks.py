"""Closed-form conditions for one linear recursion of the realised map (a
:class:`~ctopt.analysis._realised.Block`): stable, unit DC gain, nonnegative impulse response.

A condition that has no closed form here is the sentinel :data:`NUMERIC`: it is decided at the
user's values by :func:`ctopt.analysis.impulse.nonnegative_impulse` (a certificate) or by the
eigenvalues, and labelled so.

Example:
    >>> import ctopt
    >>> from ctopt.analysis._realised import linear_blocks
    >>> blocks, _ = linear_blocks(ctopt.zoo.get("adam"))
    >>> check = block_check(blocks[1], ctopt.zoo.get("adam"), None)
    >>> check.kind, check.conditions["unit DC gain"]
    ('moment', True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..design import Design, k
from ..errors import CtoptError
from ..filters import Filter, z
from ._realised import Block, _nonnegative
from .inequalities import natural_form
from .proof import Proof

__all__ = ["DC_TOLERANCE", "NUMERIC", "FilterCheck", "block_check"]

#: Relative tolerance of the unit-DC-gain check for float coefficients (``|H(1) - 1| <= tol``).
DC_TOLERANCE = 1e-6
#: A condition decided numerically at the given values (certificate or eigenvalues).
NUMERIC = sp.Symbol("numeric_certificate")


@dataclass
class FilterCheck:
    """The checks of one recursion of the realised map. ``kind`` is ``"moment"``, ``"momentum
    buffer"`` or ``"accumulator"``; ``conditions`` maps a check name to its closed-form condition
    (or :data:`NUMERIC`); ``required`` names the checks whose failure makes the design invalid;
    ``status`` maps each check to ``"holds"``, ``"violated"``, ``"undecided"``, ``"marginal"`` or
    ``"not required"`` at the values, and ``how`` says how that verdict was reached."""

    name: str
    kind: str
    transfer: sp.Expr
    input: sp.Expr
    conditions: dict[str, sp.Basic]
    required: tuple[str, ...]
    proof: Proof
    status: dict[str, str] = field(default_factory=dict)
    constant_input: sp.Expr = sp.Integer(0)
    how: dict[str, str] = field(default_factory=dict)
    block: Block | None = field(default=None, repr=False)
    declared: bool = False


def block_check(block: Block, design: Design | None, declared: Filter | None) -> FilterCheck:
    """The conditions of ``block``; ``declared`` is the filter the design declared for it."""
    name = block.names[0]
    title = (f"{name}: declared filter, judged on its realised states {list(block.names)}"
             if declared else f"{name}: recursion of the realised map over {list(block.names)}")
    proof = Proof(title)
    proof.step("realised state map x_k = A x_(k-1) + B u_k + offset, with A", block.A)
    if block.B is None:
        return _multi_input(block, proof, declared)
    H = block.transfer(z)
    H = sp.factor(H) if H.free_symbols - {z} else H
    proof.step(f"transfer function from u = {block.u} to {name} (current-input convention)",
               sp.Eq(sp.Symbol("H"), H))
    if declared is not None:
        same = sp.cancel(sp.together(H - declared.transfer)) == 0
        proof.step("the realised map " + ("equals the declared H(z)" if same else
                   f"DIFFERS from the declared H(z) = {declared.transfer}; the realised one is "
                   "judged"))
    if len(block.names) == 1:
        check = _first_order(block, H, proof, design, declared is not None)
    else:
        check = _higher_order(block, H, proof, design, declared is not None)
    check.block, check.declared = block, declared is not None
    if block.offset.is_zero_matrix is False:
        check.constant_input = block.offset[0]
        proof.step("constant input (no signal) added at every step", *block.offset)
    return check


def _u_nonnegative(u: sp.Expr, design: Design | None) -> bool:
    if design is None:
        return bool(sp.sympify(u).is_nonnegative)
    return _nonnegative(u, design)


def _first_order(block: Block, H, proof: Proof, design, declared: bool = False
                 ) -> FilterCheck:
    name = block.names[0]
    c, b, u = block.A[0, 0], block.B[0], block.u
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
        kind = "moment" if declared or _unit(dc) else "momentum buffer"
        conds["stable"] = sp.Abs(c) < 1
        proof.step("single pole; stable iff |pole| < 1", conds["stable"])
        conds["unit DC gain"] = _dc_condition(dc)
        proof.step("DC gain H(1)", sp.Eq(sp.Symbol("H(1)"), dc))
        if kind == "moment":
            proof.step("declared as a moment: unit DC gain required" if declared and not
                       _unit(dc) else "b = 1 - c: an EMA, unbiased in steady state")
            required = ("stable", "unit DC gain", "nonnegative impulse response")
        else:
            proof.step("DC gain differs from 1 (a momentum buffer, not an average); reported, "
                       "not required")
            required = ("stable",)
    proof.step("impulse response h[k] = b c^(k-1), k >= 1",
               sp.Symbol("b") * sp.Symbol("c") ** (k - 1))
    cond = sp.And(*[natural_form(x >= 0) for x in (b, c)])
    proof.step("h[k] >= 0 for all k iff b >= 0 and c >= 0 (c < 0 alternates the sign at k = 2; "
               "b = 0 is also allowed)", cond)
    conds["nonnegative impulse response"] = cond
    if not _u_nonnegative(u, design):
        required = tuple(r for r in required if r != "nonnegative impulse response")
        proof.step(f"input {u} can be negative (a first moment): nonnegativity not required")
    return FilterCheck(name, kind, H, u, conds, required, proof)


def _unit(dc: sp.Expr) -> bool:
    if sp.cancel(dc - 1) == 0:
        return True
    return bool(dc.is_number and abs(complex(dc) - 1) <= DC_TOLERANCE)


def _dc_condition(dc: sp.Expr) -> sp.Basic:
    if sp.cancel(dc - 1) == 0:
        return sp.true
    if dc.is_number:
        return sp.true if abs(complex(dc) - 1) <= DC_TOLERANCE else sp.false
    return sp.Eq(dc, 1)


def _higher_order(block: Block, H, proof: Proof, design, declared: bool) -> FilterCheck:
    from .stability import stability_conditions

    name, u = block.names[0], block.u
    conds: dict[str, sp.Basic] = {}
    charpoly = sp.Poly(block.A.charpoly(z).as_expr(), z)
    try:
        sc = stability_conditions(charpoly)
        conds["stable"] = sc.expr
        proof.extend(sc.proof, prefix="stability of every mode (charpoly of A)")
    except CtoptError as exc:
        conds["stable"] = NUMERIC
        proof.step(f"no closed-form stability condition ({exc}); decided by the eigenvalues "
                   "of A at the given values", numeric=True)
    dc = sp.cancel(H.subs(z, 1))
    kind = "moment" if declared or _unit(dc) else "momentum buffer"
    conds["unit DC gain"] = _dc_condition(dc)
    tol = f" (float coefficients: within relative tolerance {DC_TOLERANCE:g})" \
        if dc.is_number and dc != 1 else ""
    proof.step("DC gain H(1)" + tol, sp.Eq(sp.Symbol("H(1)"), dc))
    conds["nonnegative impulse response"] = _impulse_nonneg(H, design, proof)
    required = ["stable"]
    if kind == "moment":
        required.append("unit DC gain")
        if _u_nonnegative(u, design):
            required.append("nonnegative impulse response")
        else:
            proof.step(f"input {u} can be negative: nonnegativity reported, not required")
    return FilterCheck(name, kind, H, u, conds, tuple(required), proof)


def _multi_input(block: Block, proof: Proof, declared) -> FilterCheck:
    name = block.names[0]
    proof.step("several inputs enter the recursion in different proportions",
               *block.inputs)
    conds = {"stable": NUMERIC, "unit DC gain": NUMERIC, "nonnegative impulse response": NUMERIC}
    proof.step("stability from the eigenvalues of A at the given values; DC gain and sign "
               "undecided (no single input)", numeric=True)
    check = FilterCheck(name, "momentum buffer", sp.nan, block.u, conds, ("stable",), proof)
    check.block, check.declared = block, declared is not None
    return check


# ------------------------------------------------------------------ impulse-response sign
def _impulse_nonneg(H, design, proof: Proof) -> sp.Basic:
    num, den = sp.fraction(sp.cancel(H))
    poles = sp.roots(sp.Poly(den, z), multiple=True)
    order = sp.degree(den, z)
    closed = _closed_form_terms(H, design, proof) if H.free_symbols - {z} else None
    if closed is not None:
        return closed
    simple = (len(poles) == order == 2 and len(set(poles)) == 2
              and all(p.free_symbols and p.is_rational_function() for p in poles)
              and sp.cancel(H.subs(z, 0)) == 0)
    if not simple:
        proof.step("no closed form for the sign of this impulse response; decided at the given "
                   "values by the impulse response to a horizon plus a geometric tail bound "
                   "from the dominant pole", numeric=True)
        return NUMERIC
    return _two_poles(H, poles, design, proof)


def _closed_form_terms(H, design, proof: Proof) -> sp.Basic | None:
    """Sufficient: every term ``c_i binomial(j, i) p^(j-i)`` of the closed-form impulse
    response has ``c_i >= 0`` and ``p >= 0`` under the domains (proven for all values)."""
    if design is None:
        return None
    from ..filters import inverse_z

    j = sp.Symbol("j", integer=True, nonnegative=True)
    try:
        impulse = inverse_z(H, j)
    except CtoptError:
        return None
    terms = sp.Add.make_args(impulse)
    for t in terms:
        if t.has(sp.KroneckerDelta):
            coeff = t.replace(lambda e: isinstance(e, sp.KroneckerDelta), lambda *a: sp.S.One)
            if not _nonnegative(coeff, design):
                return None
            continue
        if not _nonnegative(t.subs(j, sp.Symbol("jj", integer=True, positive=True)), design):
            return None
    proof.step("closed-form impulse response, every term nonnegative under the domains "
               "(nonnegative coefficients and poles)", sp.Eq(sp.Symbol("h[j]"), impulse))
    return sp.true


def _two_poles(H, poles, design, proof: Proof) -> sp.Basic:
    (r1, r2) = poles
    R1, R2 = (sp.factor(sp.cancel((z - p) * H / z).subs(z, p)) for p in poles)
    proof.step("impulse response h[k] = R1 r1^(k-1) + R2 r2^(k-1) with residues", sp.Eq(
        sp.Symbol("R1"), R1), sp.Eq(sp.Symbol("R2"), R2))
    proof.step("for real poles r1, r2 >= 0: h[k] >= 0 for all k iff h[1] = R1 + R2 >= 0 and the "
               "residue of the dominant pole is >= 0 (if it is, r_dom^(k-1) (R_dom + R_other "
               "(r_other/r_dom)^(k-1)) is nondecreasing in k; if not, h[k] < 0 for large k)")
    domains = [h.domain.condition(h.symbol) for h in design.hyper] if design else []
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
    if x1 == x2 and sp.expand(dom1 - r1 + x1) == 0:
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

