"""Re-checking a solver's certificate from its own matrices, independently of the solver.

A semidefinite solver returns numbers that satisfy its constraints *to its tolerance*; a
first-order method such as SCS may return a point that violates them badly. A certificate is
only as good as a check that does not trust the solver:

- :func:`float_check`: the eigenvalues of the symmetric matrix in float64, with a stated margin
  that covers the rounding of forming the matrix and of the eigenvalue solver (Weyl's bound:
  the computed eigenvalues are within ``c * n * eps * ||M||_F`` of the exact ones);
- :func:`exact_definite`: the matrix in exact rational arithmetic (every float is a rational),
  positive definite iff every pivot of its LDL^T factorisation (Gaussian elimination without
  pivoting) is positive -- equivalently, Sylvester's leading principal minors.

Example:
    >>> import numpy as np
    >>> from ctopt.analysis.recheck import exact_definite, float_check
    >>> S = np.array([[2.0, -1.0], [-1.0, 2.0]])
    >>> exact_definite(S), exact_definite(-S, negative=True), exact_definite(S - 3 * np.eye(2))
    (True, True, False)
    >>> float_check(S).ok
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..errors import ExpressionError

__all__ = ["FloatCheck", "exact_definite", "float_check", "rational_matrix", "to_fraction"]

#: Safety factor on the float64 rounding bound ``n * eps * ||M||_F``.
MARGIN_FACTOR = 100.0


@dataclass(frozen=True)
class FloatCheck:
    """Extreme eigenvalue of ``M`` and the margin it must clear (``ok``: it does)."""

    extreme: float
    margin: float
    ok: bool

    def __str__(self) -> str:
        return f"extreme eigenvalue {self.extreme:.3g}, margin {self.margin:.2g}"


def float_check(M: np.ndarray, *, negative: bool = False, scale: float | None = None
                ) -> FloatCheck:
    """Is the symmetric part of ``M`` positive (``negative=True``: negative) definite in
    float64 by more than ``MARGIN_FACTOR * n * eps * scale`` (``scale`` default ``||M||_F``;
    pass the sum of the norms of the terms that formed ``M`` to cover their rounding too)?

    Example:
        >>> float_check(np.eye(3)).ok, float_check(np.eye(3) * 1e-20, scale=1.0).ok
        (True, False)
    """
    S = np.asarray(M, dtype=float)
    S = (S + S.T) / 2
    if not np.all(np.isfinite(S)):
        return FloatCheck(float("nan"), float("inf"), False)
    n = S.shape[0]
    size = float(np.linalg.norm(S)) if scale is None else float(scale)
    margin = MARGIN_FACTOR * n * np.finfo(float).eps * max(size, np.finfo(float).tiny)
    eig = np.linalg.eigvalsh(S)
    extreme = float(eig[-1] if negative else eig[0])
    ok = extreme < -margin if negative else extreme > margin
    return FloatCheck(extreme, margin, bool(ok))


def rational_matrix(M) -> list[list[Fraction]]:
    """Every entry of ``M`` as the exact rational it stands for (floats are dyadic rationals);
    a non-finite entry raises ``ValueError``.

    Example:
        >>> rational_matrix([[0.5, 1], [Fraction(1, 3), 0.1]])[1]
        [Fraction(1, 3), Fraction(3602879701896397, 36028797018963968)]
    """
    return [[to_fraction(x) for x in row] for row in M]


def to_fraction(x) -> Fraction:
    """``x`` (an int, a Fraction or a finite float) as an exact rational.

    Example:
        >>> to_fraction(0.75), to_fraction(3)
        (Fraction(3, 4), Fraction(3, 1))
    """
    if isinstance(x, Fraction):
        return x
    if isinstance(x, (int, np.integer)):
        return Fraction(int(x))
    value = float(x)
    if not np.isfinite(value):
        raise ExpressionError(f"a certificate entry is not finite: {value}")
    return Fraction(value)


def exact_definite(M, *, negative: bool = False) -> bool:
    """Is the symmetric matrix ``M`` (floats, ints or Fractions) positive (``negative=True``:
    negative) definite, decided exactly: LDL^T pivots in rational arithmetic.

    Example:
        >>> exact_definite([[1, 2], [2, 4]]), exact_definite([[1, 2], [2, 5]])
        (False, True)
    """
    try:
        R = rational_matrix(M)
    except ValueError:
        return False
    n = len(R)
    if any(len(row) != n for row in R) or any(R[i][j] != R[j][i]
                                               for i in range(n) for j in range(i)):
        raise ExpressionError("exact_definite needs a square symmetric matrix")
    if negative:
        R = [[-x for x in row] for row in R]
    for k in range(n):
        pivot = R[k][k]
        if pivot <= 0:
            return False
        for i in range(k + 1, n):
            factor = R[i][k] / pivot
            if factor:
                for j in range(k + 1, n):
                    R[i][j] -= factor * R[k][j]
    return True
