"""Lyapunov certificates for linear closed loops: solve ``A^T P A - P = -Q`` symbolically and
show ``P`` positive definite on the stability region.

For ``x_k = A x_{k-1}`` and ``V(x) = x^T P x`` the one-step change is
``V(A x) - V(x) = -x^T Q x < 0``; with ``P`` positive definite, ``V`` is a Lyapunov function and
the loop is stable. :func:`lyapunov` solves the (linear) Stein equation for the entries of a
symmetric ``P`` as rational functions of the parameters (up to 3 states), then applies
Sylvester's criterion: each leading principal minor is factored, and every factor is matched,
up to a positive constant, with a condition of the Jury region (``alpha*h > 0``,
``1 - beta > 0``, ...) or recognised as positive (an even power, a positive symbol). Where a
minor's factors cannot all be matched, ``P > 0`` is proven by Lyapunov's theorem with the Jury
conditions as premise (they are necessary and sufficient for Schur stability, and a Schur-stable
``A`` gives the unique ``P = sum_k (A^T)^k Q A^k > 0``); the minors are then also evaluated at
random points of the region, a step labelled *numeric* (evidence, not the proof). Every certificate is cross-checked against
:func:`scipy.linalg.solve_discrete_lyapunov`.

Example:
    >>> import sympy as sp
    >>> a, h = sp.symbols("alpha h", real=True)
    >>> cert = lyapunov(sp.Matrix([[1 - a * h]]))
    >>> sp.factor(cert.P[0, 0])
    -1/(alpha*h*(alpha*h - 2))
    >>> cert.proven
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

import numpy as np
import sympy as sp
from sympy.polys.matrices import DomainMatrix
from sympy.polys.matrices.exceptions import DMNonInvertibleMatrixError

from ..errors import (
    CtoptError,
    ExpressionError,
    InternalError,
    MissingValuesError,
    UnsupportedError,
)
from ..limits import check_size, time_limit, timed
from .inequalities import positive_form, split_abs
from .proof import Proof
from .stability import StabilityConditions, stability_conditions

__all__ = ["LyapunovCertificate", "lyapunov", "MAX_SYMBOLIC_STATES"]

#: Largest state count solved symbolically.
MAX_SYMBOLIC_STATES = 3
#: Seconds allowed to the symbolic solve and the minors.
TIME_LIMIT = 60.0


@dataclass
class LyapunovCertificate:
    """``P`` with ``A^T P A - P = -Q``, its leading minors, and the proof that ``P`` is positive
    definite wherever ``conditions`` (the Jury region of ``A``) hold."""

    A: sp.Matrix
    Q: sp.Matrix
    P: sp.Matrix
    minors: list[sp.Expr]
    stability: StabilityConditions
    proof: Proof
    proven: bool
    numeric_min_minor: float | None = None
    cross_check_error: float | None = None
    method: str = ""
    _fn: dict = field(default_factory=dict, repr=False)

    @property
    def conditions(self) -> sp.Basic:
        """The region on which the certificate holds, as a sympy boolean."""
        return self.stability.expr

    def P_at(self, **values: float) -> np.ndarray:
        """``P`` evaluated at numeric parameter values."""
        params = sorted(self.P.free_symbols, key=lambda s: s.name)
        if "P" not in self._fn:
            self._fn["P"] = sp.lambdify(params, self.P, modules="numpy")
        missing = [p.name for p in params if p.name not in values]
        if missing:
            raise MissingValuesError(missing)
        return np.asarray(self._fn["P"](*[float(values[p.name]) for p in params]), dtype=float)

    def cross_check(self, **values: float) -> float:
        """Largest absolute difference between ``P`` and scipy's solution at ``values``.

        Example:
            >>> import sympy as sp
            >>> b = sp.Symbol("beta", real=True)
            >>> lyapunov(sp.Matrix([[b]])).cross_check(beta=0.5) < 1e-12
            True
        """
        from scipy.linalg import solve_discrete_lyapunov

        params = sorted(self.A.free_symbols | self.Q.free_symbols, key=lambda s: s.name)
        if "AQ" not in self._fn:
            self._fn["AQ"] = sp.lambdify(params, (self.A, self.Q), modules="numpy")
        A, Q = (np.asarray(m, dtype=float)
                for m in self._fn["AQ"](*[float(values[p.name]) for p in params]))
        reference = solve_discrete_lyapunov(A.T, Q)  # A^T X A - X + Q = 0
        return float(np.max(np.abs(self.P_at(**values) - reference)))

    def verify(self, **values: float) -> bool:
        """Re-check the certificate at numeric ``values`` from its matrices alone, exactly: every
        value is the rational it stands for, ``A^T P A - P + Q = 0`` must hold in rational
        arithmetic and ``P`` must pass an exact LDL^T test (all pivots positive).

        Example:
            >>> import sympy as sp
            >>> b = sp.Symbol("beta", real=True)
            >>> cert = lyapunov(sp.Matrix([[b]]))
            >>> cert.verify(beta=0.5), cert.verify(beta=1.5)
            (True, False)
        """
        from .recheck import exact_definite

        params = self.A.free_symbols | self.Q.free_symbols | self.P.free_symbols
        missing = sorted(p.name for p in params if p.name not in values)
        if missing:
            raise MissingValuesError(missing)
        subs = {p: sp.Rational(*float(values[p.name]).as_integer_ratio()) for p in params}
        try:
            A, Q, P = (M.subs(subs) for M in (self.A, self.Q, self.P))
        except ZeroDivisionError:
            return False
        if any(not e.is_Rational for M in (A, Q, P) for e in M):
            return False  # P is not finite there (outside the region's closure)
        if not (A.T * P * A - P + Q).is_zero_matrix:
            return False
        return exact_definite([[Fraction(int(e.p), int(e.q)) for e in row]
                               for row in P.tolist()])

    def __str__(self) -> str:
        status = (f"proven: {self.method}" if self.proven else
                  "P > 0 only checked numerically")
        return (f"Lyapunov certificate V(x) = x^T P x ({status})\n  P = {self.P.tolist()}\n"
                f"  valid where: {self.conditions}")

    def _repr_latex_(self) -> str:
        status = r"\text{proven}" if self.proven else r"\textbf{[numeric]}\ \text{P > 0 sampled}"
        return (r"$\begin{array}{l} P = " + sp.latex(self.P) + r" \\ " + status
                + r"\ \text{on}\ " + sp.latex(self.conditions) + r"\end{array}$")


@timed("Lyapunov certificate")
def lyapunov(system, Q=None, *, ranges: Mapping[str, tuple[float, float]] | None = None,
             samples: int = 4000, seed: int = 0) -> LyapunovCertificate:
    """Solve ``A^T P A - P = -Q`` (``Q`` defaults to the identity) and prove ``P > 0`` on the
    stability region of ``A``.

    ``system``: a square sympy matrix or an object with ``.A`` (a closed loop). ``ranges`` bound
    the random parameter samples used for numeric evidence and the cross-check (default
    ``(-3, 3)``, or ``(0, 3)`` for a symbol declared positive).

    Example:
        >>> import sympy as sp
        >>> a, h, b = sp.symbols("alpha h beta", real=True)
        >>> A = sp.Matrix([[1 + b - a * h, -b], [1, 0]])
        >>> cert = lyapunov(A)
        >>> cert.proven, cert.cross_check(alpha=0.5, h=1.0, beta=0.5) < 1e-10
        (True, True)
    """
    A = sp.Matrix(system.A if hasattr(system, "A") and not isinstance(system, sp.MatrixBase)
                  else system)
    if not A.is_square:
        raise ExpressionError(f"A must be square, got shape {A.shape}")
    n = A.shape[0]
    check_size("Lyapunov certificate", states=n)
    if n > MAX_SYMBOLIC_STATES:
        raise UnsupportedError(
            f"Lyapunov certificate: {n} states exceed the symbolic limit {MAX_SYMBOLIC_STATES}; "
            "substitute numbers and use scipy.linalg.solve_discrete_lyapunov(A.T, Q)")
    Q = sp.eye(n) if Q is None else sp.Matrix(Q)
    proof = Proof("V(x) = x^T P x is a Lyapunov function on the stability region")
    with time_limit(TIME_LIMIT, "Lyapunov certificate"):
        P = _solve_stein(A, Q)
        proof.step("Stein equation A^T P A - P = -Q with Q", Q)
        proof.step("solved for the symmetric P (linear in its entries)", P)
        if not _solves(A, P, Q):
            raise InternalError("the symbolic P does not satisfy the Stein equation (a bug in ctopt)")
        proof.step("substituted back: A^T P A - P + Q = 0 identically")
        # the loop's own characteristic polynomial when it has one (shares the cached result)
        stab = stability_conditions(system if hasattr(system, "charpoly") else A)
        proof.step("stability region of A (Jury)", stab.expr)
        proof.step("Sylvester: P > 0 iff every leading principal minor is positive")
        minors = _minors(P)
        try:
            known = _known_positive(stab)
        except CtoptError:  # a condition with several absolute values: no factor matching
            known = []
        unproven = []
        for i, minor in enumerate(minors, 1):
            reason = _positive_by_factors(minor, known)
            if reason is None:
                unproven.append(i)
                proof.step(f"minor {i}: sign not matched with the region's conditions", minor)
            else:
                proof.step(f"minor {i} > 0: {reason}", minor)
        by_theorem = bool(unproven) and not stab.numeric and stab.expr is not sp.false
        if by_theorem:
            proof.step("Lyapunov's theorem (discrete time), with the Jury conditions as premise: "
                       "they are necessary and sufficient for A to be Schur stable, and for a "
                       "Schur-stable A the Stein equation with Q > 0 has the unique solution "
                       "P = sum_k (A^T)^k Q A^k >= Q > 0; the P above is that solution (it "
                       "satisfies the equation identically), so P > 0 on the whole region")
    proven = not unproven or by_theorem
    cert = LyapunovCertificate(A, Q, P, minors, stab, proof, proven)
    cert.method = ("Sylvester's criterion, minors matched with the Jury conditions" if not unproven
                   else "Lyapunov's theorem with the Jury conditions as premise" if by_theorem
                   else "undecided")
    _numeric_evidence(cert, unproven, ranges or {}, samples, seed)
    if proven:
        proof.step("conclusion: P > 0 on the whole region (symbolic); V decreases by x^T Q x")
    return cert


def _solve_stein(A: sp.Matrix, Q: sp.Matrix) -> sp.Matrix:
    n = A.shape[0]
    pairs = [(i, j) for i in range(n) for j in range(i, n)]
    unknowns = sp.symbols(f"p0:{len(pairs)}")
    P = sp.zeros(n, n)
    for s, (i, j) in zip(unknowns, pairs, strict=True):
        P[i, j] = P[j, i] = s
    residual = A.T * P * A - P + Q
    equations = [sp.expand(residual[i, j]) for i, j in pairs]
    M, b = sp.linear_eq_to_matrix(equations, unknowns)
    # fraction-field arithmetic (DomainMatrix) is orders of magnitude faster than Matrix.LUsolve
    dM = DomainMatrix.from_Matrix(M).to_field()
    try:
        sol = dM.lu_solve(DomainMatrix.from_Matrix(b).convert_to(dM.domain)).to_Matrix()
    except DMNonInvertibleMatrixError:
        raise ExpressionError(
            "the Stein equation A^T P A - P = -Q has no unique solution: two eigenvalues of A "
            "multiply to 1 (e.g. an eigenvalue 1, a learning rate of 0), so A is not Schur "
            "stable and no quadratic Lyapunov certificate exists") from None
    values = dict(zip(unknowns, sol, strict=True))
    return P.subs(values)


def _minors(P: sp.Matrix) -> list[sp.Expr]:
    """Leading principal minors of ``P``, factored. ``P = N/D`` with ``D`` the least common
    denominator, so each minor is ``det(N_k)/D^k``: polynomial arithmetic, no rational gcds."""
    n = P.shape[0]
    dens = [sp.fraction(sp.cancel(e))[1] for e in P]
    D = sp.factor(sp.lcm_list(dens)) if len(dens) > 1 else dens[0]
    N = P.applyfunc(lambda e: sp.cancel(e * D))
    gens = sorted(N.free_symbols | D.free_symbols, key=lambda s: s.name)
    out = []
    for i in range(1, n + 1):
        if gens:
            dN = DomainMatrix.from_Matrix(N[:i, :i]).convert_to(sp.QQ[tuple(gens)])
            det = dN.domain.to_sympy(dN.det())
        else:
            det = N[:i, :i].det()
        out.append(sp.factor(det) / D**i)
    return out


def _known_positive(stab: StabilityConditions) -> list[sp.Expr]:
    """Expressions positive on the region: each condition as ``expr > 0``, absolute values
    split (``|x| < y`` gives ``y - x > 0`` and ``y + x > 0``)."""

    out = []
    for atom in stab.atoms:
        if isinstance(atom, sp.Unequality) or atom in (sp.true, sp.false):
            continue
        form, _ = positive_form(atom)
        out += [sp.expand(p) for p in split_abs(form)]
    return out


def _positive_by_factors(expr: sp.Expr, known: list[sp.Expr]) -> str | None:
    """A reason why ``expr > 0`` on the region, or None. Numerator and denominator are split
    into irreducible factors; every region condition (``alpha*h > 0``, ``2 - alpha*h > 0``, ...)
    whose factors all occur is removed (it is positive); what is left must be a positive
    constant, even powers (nonzero where P is finite) or symbols declared positive."""
    num, den = sp.fraction(sp.factor(expr))
    sign, reasons = 1, []
    for part in (num, den):
        coeff, factors = sp.factor_list(part)
        sign *= 1 if coeff > 0 else -1
        left = dict(factors)
        for p in known:
            pc, pf = _factors(p)
            while pf and all(left.get(f, 0) >= m for f, m in pf):
                for f, m in pf:
                    left[f] -= m
                sign *= 1 if pc > 0 else -1
                reasons.append(f"{p} > 0")
        for f, m in left.items():
            if m == 0:
                continue
            if m % 2 == 0:
                reasons.append(f"({f})^{m} is an even power, nonzero where P is finite")
            elif f.is_positive or _constant_plus_squares(f):
                reasons.append(f"{f} > 0")
            else:
                return None
    if sign < 0:
        return None
    return "; ".join(dict.fromkeys(reasons)) or "a positive constant"


@lru_cache(maxsize=1024)
def _factors(p: sp.Expr) -> tuple[sp.Expr, tuple]:
    coeff, factors = sp.factor_list(p)
    return coeff, tuple(factors)


def _constant_plus_squares(f: sp.Expr) -> bool:
    """``f = c + (product of even powers)`` with ``c > 0`` (e.g. ``beta**2*(alpha*h - 1)**2 + 1``)."""
    const, rest = sp.expand(f).as_coeff_Add()
    if not const > 0 or rest == 0:
        return False
    coeff, factors = sp.factor_list(rest)
    return coeff > 0 and all(m % 2 == 0 for _, m in factors)


def _solves(A: sp.Matrix, P: sp.Matrix, Q: sp.Matrix) -> bool:
    """Exact check of ``A^T P A - P + Q = 0`` in the fraction field of the parameters."""
    n = A.shape[0]
    M = DomainMatrix.from_Matrix(sp.Matrix.hstack(A, P, Q)).to_field()
    dA, dP, dQ = (M.extract(list(range(n)), list(range(i * n, (i + 1) * n))) for i in range(3))
    return (dA.transpose() * dP * dA - dP + dQ).is_zero_matrix


def _kron_check(cert: LyapunovCertificate, points: Mapping[str, np.ndarray]) -> float:
    """Largest relative difference between the symbolic P and
    ``vec(P) = (I - A^T kron A^T)^-1 vec(Q)`` solved in float64, batched over the points."""
    n = cert.A.shape[0]
    params = sorted(cert.A.free_symbols | cert.Q.free_symbols | cert.P.free_symbols,
                    key=lambda s: s.name)
    fn = sp.lambdify(params, (cert.A, cert.Q, cert.P), modules="numpy")
    worst = 0.0
    count = len(next(iter(points.values())))
    for j in range(count):
        A, Q, P = (np.asarray(m, dtype=float) for m in fn(*[points[p.name][j] for p in params]))
        X = np.linalg.solve(np.eye(n * n) - np.kron(A.T, A.T), Q.reshape(-1)).reshape(n, n)
        worst = max(worst, float(np.max(np.abs(P - X)) / max(1.0, np.max(np.abs(X)))))
    return worst


def _sample_region(stab: StabilityConditions, ranges, samples: int, seed: int):
    rng = np.random.default_rng(seed)
    params = stab.parameters
    draws = {}
    for p in params:
        lo, hi = ranges.get(p.name, (0.0, 3.0) if p.is_positive else (-3.0, 3.0))
        draws[p.name] = rng.uniform(lo, hi, samples)
    inside = stab.holds(**draws) if params else np.ones(samples, bool)
    return {k: v[inside] for k, v in draws.items()}


def _numeric_evidence(cert: LyapunovCertificate, unproven: list[int], ranges, samples, seed):
    points = _sample_region(cert.stability, ranges, samples, seed)
    count = len(next(iter(points.values()))) if points else 0
    if unproven and count:
        params = sorted(set().union(*(cert.minors[i - 1].free_symbols for i in unproven)),
                        key=lambda s: s.name)
        worst = np.inf
        for i in unproven:
            fn = sp.lambdify(params, cert.minors[i - 1], modules="numpy")
            vals = np.broadcast_to(fn(*[points[p.name] for p in params]), (count,))
            worst = min(worst, float(np.min(vals)))
        cert.numeric_min_minor = worst
        cert.proof.step(f"minors {unproven} evaluated at {count} random points of the region: "
                        f"smallest value {worst:.3g} ({'positive' if worst > 0 else 'NOT positive'})",
                        numeric=True)
    elif unproven:
        cert.proof.step("no random point of the sampled box lies in the region; P > 0 unchecked",
                        numeric=True)
    if unproven and count:
        used = min(count, 20)
        passed = sum(cert.verify(**{k: float(v[j]) for k, v in points.items()})
                     for j in range(used))
        cert.proof.step(f"re-checked exactly (rational arithmetic: A^T P A - P + Q = 0 and an "
                        f"LDL^T test of P) at {used} of those points: holds at {passed}",
                        numeric=True)
    if count:
        used = min(count, 20)
        cert.cross_check_error = _kron_check(cert, {k: v[:used] for k, v in points.items()})
        cert.proof.step(f"cross-check against an independent float64 solve of the Stein "
                        f"equation (Kronecker form) at {used} points of the region: relative "
                        f"error {cert.cross_check_error:.2g} (scipy: .cross_check(**values))",
                        numeric=True)
