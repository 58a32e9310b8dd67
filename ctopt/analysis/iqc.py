"""IQC / LMI rate certificates (Lessard, Recht & Packard 2016) for designs that are linear in
feedback with the gradient: gradient descent, heavy ball, Nesterov, Adam with a frozen
preconditioner.

The algorithm is a Lur'e system ``xi_{k+1} = A xi_k + B u_k``, ``y_k = C xi_k``,
``u_k = grad f(y_k)``. For every ``m``-strongly convex, ``L``-smooth ``f`` the iterates converge
like ``rho**k`` if a small semidefinite program is feasible (their Theorem 4): there are
``P > 0`` and multipliers ``lambda_i >= 0`` with

    [A^T P A - rho^2 P, A^T P B; B^T P A, B^T P B] + sum_i lambda_i [C_i D_i]^T M_i [C_i D_i] <= 0

for the IQCs ``(Psi_i, M_i)`` the gradient satisfies, the plant augmented with their filters.
Two IQCs are available: the pointwise **sector** IQC (``M = [[-2mL, m+L], [m+L, -2]]``) and the
rho-hard **weighted off-by-one** IQC (``z1_k = (L y_k - u_k) - rho^2 (L y_{k-1} - u_{k-1})``,
``z2_k = u_k - m y_k``, ``M = [[0, 1], [1, 0]]``). :func:`iqc_rate` bisects on ``rho``.

cvxpy is an optional dependency (the ``[lmi]`` extra); it is imported only when needed.

Example:
    >>> cert = iqc_rate(([[1.0]], [[-0.1]], [[1.0]]), m=1, L=10)  # gradient descent, alpha = 0.1
    >>> abs(cert.rate - 0.9) < 1e-4
    True
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import HyperparameterError, MissingValuesError, UnsupportedError
from ..limits import timed
from .proof import Proof
from .recheck import exact_definite, float_check, rational_matrix, to_fraction

__all__ = ["IQCCertificate", "IQCRateCurves", "iqc_rate", "iqc_rate_curves", "lurie_system"]

IQCS = ("sector", "off_by_one")


@dataclass
class IQCCertificate:
    """The smallest certified rate ``rate`` (within ``tol``) with its ``P`` and multipliers;
    ``rate = 1.0`` and ``certified = False`` when no rate below 1 is feasible."""

    rate: float
    certified: bool
    P: np.ndarray | None
    multipliers: dict[str, float]
    iqcs: tuple[str, ...]
    proof: Proof
    #: what the solver-independent re-check found at ``rate`` (float64 and exact rational)
    check: str = ""
    #: solver answers the re-check rejected during the bisection
    rejected: int = 0

    def __str__(self) -> str:
        if not self.certified:
            return f"no rate below 1 certified with the {', '.join(self.iqcs)} IQC(s)"
        return (f"certified rate {self.rate:.6g} for every m-strongly convex L-smooth f "
                f"({', '.join(self.iqcs)} IQC)")

    def _repr_latex_(self) -> str:
        return rf"$\rho_{{\mathrm{{IQC}}}} = {self.rate:.6g}$"


def _cvxpy():
    try:
        import cvxpy
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UnsupportedError(
            "IQC/LMI certificates need cvxpy: install the extra with  pip install 'ctopt[lmi]'"
        ) from exc
    return cvxpy


def lurie_system(system, **values: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A, B, C)`` of the algorithm in feedback with the gradient, from ``(A, B, C)`` arrays,
    a closed loop (``A`` at ``h = 0``, its ``B`` and ``C``) or a design (its frozen closed loop).

    Example:
        >>> import ctopt
        >>> A, B, C = lurie_system(ctopt.zoo.get("heavy_ball"), lr=0.1, momentum=0.5)
        >>> A.tolist(), B.ravel().tolist(), C.ravel().tolist()
        ([[1.0, -0.05], [0.0, 0.5]], [-0.1, 1.0], [1.0, 0.0])
    """
    import sympy as sp

    from ..design import Design

    if isinstance(system, Design):
        from .loops import closed_loop

        defaults = {k: v for k, v in system.defaults.items() if k not in values}
        values = {**defaults, **values}
        system = closed_loop(system)
    if isinstance(system, tuple):
        A, B, C = (np.atleast_2d(np.asarray(x, dtype=float)) for x in system[:3])
        return A, B.reshape(-1, 1), C.reshape(1, -1)
    h = getattr(system, "curvature", sp.Symbol("h", real=True))
    A, B, C = sp.Matrix(system.A), sp.Matrix(system.B), sp.Matrix(system.C)
    subs = {s: values[s.name] for s in (A.free_symbols | B.free_symbols | C.free_symbols)
            if s.name in values}
    subs[h] = 0
    out = []
    for M in (A, B, C):
        M = M.subs(subs)
        if M.free_symbols:
            raise MissingValuesError(sorted(s.name for s in M.free_symbols))
        out.append(np.array(M.evalf(), dtype=float))
    return out[0], out[1].reshape(-1, 1), out[2].reshape(1, -1)


def _lmi_data(A, B, C, m, L, rho, iqcs, num=float):
    """The LMI's constant parts, with every number converted by ``num`` (``float`` for the
    solver and the float64 check, :func:`~ctopt.analysis.recheck.to_fraction` for the exact
    check): ``(AB, E, blocks)`` with the LMI ``AB^T P AB - rho^2 E^T P E + sum_i lambda_i
    CD_i^T M_i CD_i``."""
    def mat(rows):
        return np.array([[num(x) for x in row] for row in np.asarray(rows, dtype=object)],
                        dtype=object if num is not float else float)

    A, B, C = mat(A), mat(B), mat(C)
    m, L, rho = num(m), num(L), num(rho)
    zero, one = num(0), num(1)
    n = A.shape[0]
    blocks = []  # (CD, M)
    if "off_by_one" in iqcs:
        # augment with the filter state zeta_{k+1} = -L y_k + u_k
        Ah = np.block([[A, mat([[zero]] * n)], [-L * C, mat([[zero]])]])
        Bh = np.vstack([B, mat([[one]])])
        Cy = np.hstack([C, mat([[zero]])])
    else:
        Ah, Bh, Cy = A, B, C
    N = Ah.shape[0]
    zeros = mat([[zero] * N])
    if "sector" in iqcs:
        CD = np.hstack([np.vstack([Cy, zeros]), mat([[zero], [one]])])
        blocks.append((CD, mat([[-2 * m * L, m + L], [m + L, -2 * one]])))
    if "off_by_one" in iqcs:
        zeta = mat([[zero] * (N - 1) + [rho**2]])
        CD = np.hstack([np.vstack([L * Cy + zeta, -m * Cy]), mat([[-one], [one]])])
        blocks.append((CD, mat([[zero, one], [one, zero]])))
    AB = np.hstack([Ah, Bh])
    E = np.hstack([mat(np.eye(N, dtype=int)), mat([[zero]] * N)])
    return AB, E, blocks


def _lmi(P, lams, rho, AB, E, blocks):
    out = AB.T @ P @ AB - rho**2 * (E.T @ P @ E)
    for lam, (CD, M) in zip(lams, blocks, strict=True):
        out = out + lam * (CD.T @ M @ CD)
    return out


def _lmi_feasible(cp, A, B, C, m, L, rho, iqcs, solver):
    AB, E, blocks = _lmi_data(A, B, C, m, L, rho, iqcs)
    N = E.shape[0]
    P = cp.Variable((N, N), symmetric=True)
    lams = [cp.Variable(nonneg=True) for _ in blocks]
    lmi = _lmi(P, lams, rho, AB, E, blocks)
    sym = (lmi + lmi.T) / 2
    cons = [P >> np.eye(N), sym << -1e-9 * np.eye(N + 1)]
    prob = cp.Problem(cp.Minimize(0), cons)
    try:
        with warnings.catch_warnings():  # "solution may be inaccurate": counted as infeasible
            warnings.simplefilter("ignore", UserWarning)
            prob.solve(solver=solver)
    except cp.error.SolverError:
        return False, None, None
    ok = prob.status in ("optimal",) and P.value is not None
    return ok, (P.value if ok else None), ([float(x.value) for x in lams] if ok else None)


def recheck(A, B, C, m, L, rho, iqcs, P, lams) -> tuple[bool, str]:
    """Re-check a solver's ``P`` and multipliers from the matrices alone: ``P > 0`` and the LMI
    ``< 0``, first in float64 with a margin, then exactly in rationals (the returned floats,
    the problem data and ``rho`` are all exact rationals). Returns ``(passed, what was
    found)``; the exact check decides.

    Example:
        >>> A, B, C = [[1.0]], [[-0.1]], [[1.0]]  # gradient descent, alpha = 0.1, m = 1, L = 10
        >>> recheck(A, B, C, 1, 10, 0.95, ("sector",), [[1.0]], [0.01])[0]
        True
        >>> recheck(A, B, C, 1, 10, 0.85, ("sector",), [[1.0]], [0.01])[0]  # below the rate 0.9
        False
    """
    P = np.asarray(P, dtype=float)
    lams = [max(float(x), 0.0) for x in lams]  # multipliers must be >= 0: clipped, then checked
    if not (np.all(np.isfinite(P)) and np.all(np.isfinite(lams))):
        return False, "the solver returned non-finite values"
    AB, E, blocks = _lmi_data(A, B, C, m, L, rho, iqcs)
    N = E.shape[0]
    if P.shape != (N, N) or len(lams) != len(blocks):
        return False, f"the solver returned P of shape {P.shape} and {len(lams)} multiplier(s)"
    P = (P + P.T) / 2
    M = _lmi(P, lams, rho, AB, E, blocks)
    scale = (np.linalg.norm(AB) ** 2 * np.linalg.norm(P) * (1 + rho**2)
             + sum(lam * np.linalg.norm(CD) ** 2 * np.linalg.norm(Mi)
                   for lam, (CD, Mi) in zip(lams, blocks, strict=True)))
    fp, fl = float_check(P), float_check(M, negative=True, scale=scale)
    found = (f"float64: P smallest eigenvalue {fp.extreme:.3g}, LMI largest eigenvalue "
             f"{fl.extreme:.3g} (margin {fl.margin:.2g})")
    if not (fp.ok and fl.ok):
        return False, found + ": FAILS"
    ABq, Eq, blocks_q = _lmi_data(A, B, C, m, L, rho, iqcs, num=to_fraction)
    Pq = np.array(rational_matrix(P), dtype=object)
    Mq = _lmi(Pq, [to_fraction(x) for x in lams], to_fraction(rho), ABq, Eq, blocks_q)
    exact = exact_definite(Pq) and exact_definite(Mq, negative=True)
    return exact, found + ("; exact rational LDL^T: P > 0 and LMI < 0" if exact
                           else "; exact rational LDL^T: FAILS")


@timed("IQC rate certificate")
def iqc_rate(system, m: float, L: float, *, iqc=("sector",), tol: float = 1e-6,
             solver: str = "CLARABEL", **values: float) -> IQCCertificate:
    """The smallest ``rho`` for which the IQC LMI is feasible, by bisection on ``[0, 1]``.

    ``iqc``: ``"sector"`` (pointwise; enough for gradient descent), ``"off_by_one"`` (weighted
    off-by-one, rho-hard) or both, as in Lessard et al. for Nesterov's method.

    Example:
        >>> A = [[1.5, -0.5], [1.0, 0.0]]  # Nesterov, alpha = 1/L, beta = 0.5, L = 1
        >>> iqc_rate((A, [[-1.0], [0.0]], [[1.5, -0.5]]), m=0.1, L=1,
        ...          iqc=("sector", "off_by_one")).certified
        True
    """
    cp = _cvxpy()
    iqcs = (iqc,) if isinstance(iqc, str) else tuple(iqc)
    unknown = [i for i in iqcs if i not in IQCS]
    if unknown:
        raise UnsupportedError(f"unknown IQC(s) {unknown}; available: {IQCS}")
    for name, value in (("m", m), ("L", L), ("tol", tol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise HyperparameterError(f"{name} = {value!r} must be a finite number")
    if not 0 < m <= L:
        raise HyperparameterError(f"m = {m!r}, L = {L!r}: need 0 < m <= L")
    if not 0 < tol < 1:
        raise HyperparameterError(f"tol = {tol!r} is outside the allowed range (0, 1)")
    A, B, C = lurie_system(system, **values)
    proof = Proof(f"rate certificate for every {m:g}-strongly convex, {L:g}-smooth f "
                  f"({', '.join(iqcs)} IQC, Lessard-Recht-Packard Theorem 4)")
    method = _SOLVER_METHODS.get(str(solver).upper(), "conic solver")
    refused = []  # rho where the solver claimed feasibility but the re-check failed

    def feasible(rho):
        ok, P, lam = _lmi_feasible(cp, A, B, C, m, L, rho, iqcs, solver)
        if not ok:
            return None
        passed, found = recheck(A, B, C, m, L, rho, iqcs, P, lam)
        if not passed:
            refused.append((rho, found))
            return None
        return P, lam, found

    lo, hi = 0.0, 1.0
    result = feasible(hi)
    if result is None:
        why = (f"{solver} reported a solution that fails the re-check ({refused[-1][1]})"
               if refused else f"{solver} found the LMI infeasible")
        proof.step(f"at rho = 1: {why}; no rate certified", numeric=True)
        return IQCCertificate(1.0, False, None, {}, iqcs, proof)
    best = (hi, *result)
    while hi - lo > tol:
        mid = (lo + hi) / 2
        result = feasible(mid)
        if result is not None:
            hi, best = mid, (mid, *result)
        else:
            lo = mid
    rate, P, lam, found = best
    proof.step(f"bisection on rho with tolerance {tol:g}: certified at {rate:.8g}; not at "
               f"{lo:.8g} (solver {solver}, {method}, floating point)", numeric=True)
    if refused:
        proof.step(f"{len(refused)} solver answer(s) rejected by the re-check, e.g. at rho = "
                   f"{refused[0][0]:.8g}: {refused[0][1]}", numeric=True)
    proof.step(f"re-checked from the returned P and multipliers, independently of the solver, "
               f"at rho = {rate:.8g}: {found}")
    proof.step("so ||xi_k - xi*|| <= sqrt(cond(P)) rho^k ||xi_0 - xi*|| for every such f")
    return IQCCertificate(rate, True, P, dict(zip(iqcs, lam, strict=True)), iqcs, proof,
                          found, len(refused))


#: How each solver works: an interior-point method solves to high accuracy; a first-order
#: method (SCS: operator splitting) stops at a loose tolerance, so its answers need the re-check.
_SOLVER_METHODS = {"CLARABEL": "interior-point", "MOSEK": "interior-point",
                   "CVXOPT": "interior-point", "ECOS": "interior-point",
                   "SCS": "first-order (operator splitting)"}


@dataclass(frozen=True)
class IQCRateCurves:
    """Certified rates against the condition number ``kappa`` (``m = 1/kappa``, ``L = 1``) for
    gradient descent with ``alpha = 2/(L+m)`` and Nesterov's standard tuning, with the analytic
    references as properties."""

    kappa: np.ndarray
    gradient_descent: np.ndarray
    nesterov: np.ndarray

    @property
    def gradient_descent_exact(self) -> np.ndarray:
        """``(kappa - 1)/(kappa + 1)``, gradient descent's exact rate."""
        return (self.kappa - 1) / (self.kappa + 1)

    @property
    def nesterov_reference(self) -> np.ndarray:
        """``sqrt(1 - 1/sqrt(kappa))``, Nesterov's known worst-case bound."""
        return np.sqrt(1 - 1 / np.sqrt(self.kappa))

    @property
    def nesterov_quadratic(self) -> np.ndarray:
        """``1 - 1/sqrt(kappa)``, Nesterov's rate on quadratics."""
        return 1 - 1 / np.sqrt(self.kappa)


def iqc_rate_curves(kappas=(2, 5, 10, 20, 50, 100), *, iqc=("sector", "off_by_one"),
                    tol=1e-4) -> IQCRateCurves:
    """Certified rates (:func:`iqc_rate`) of gradient descent (``alpha = 2/(L+m)``, sector IQC)
    and of Nesterov's standard tuning (``iqc``) for each condition number in ``kappas``.

    Example:
        >>> from ctopt.analysis.iqc import iqc_rate_curves
        >>> c = iqc_rate_curves(kappas=(10,), tol=1e-3)
        >>> bool(abs(c.gradient_descent[0] - c.gradient_descent_exact[0]) < 2e-3)
        True
    """
    kappas = np.asarray(kappas, dtype=float)
    gd, nag = [], []
    for kappa in kappas:
        L, m = 1.0, 1.0 / kappa
        alpha = 2 / (L + m)
        gd.append(iqc_rate(([[1.0]], [[-alpha]], [[1.0]]), m, L, iqc="sector", tol=tol).rate)
        beta = (np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1)
        A = [[1 + beta, -beta], [1.0, 0.0]]
        nag.append(iqc_rate((A, [[-1.0 / L], [0.0]], [[1 + beta, -beta]]), m, L, iqc=iqc,
                            tol=tol).rate)
    return IQCRateCurves(kappas, np.asarray(gd, dtype=float), np.asarray(nag, dtype=float))
