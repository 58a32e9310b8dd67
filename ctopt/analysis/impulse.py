"""A numeric certificate that an impulse response stays nonnegative for *every* step.

For a stable realisation ``x_t = A x_{t-1} + b u_t`` with output ``y_t = c x_t`` the impulse
response is ``h[t] = c A^t b`` (``t >= 0``). When ``A`` has a simple, real, positive dominant
eigenvalue ``lam`` with spectral projector ``P``, ``(A/lam)^t = P + M^t`` for ``t >= 1`` with
``M = A/lam - P`` of spectral radius ``< 1``, so

    ``h[t] = lam^t (R + c M^t b)``,   ``R = c P b``.

Pick ``T`` with ``q = ||M^T||_2 <= 1/2`` and ``K = ||c|| max_{s < T} ||M^s b||``; then
``|c M^t b| <= K q^(t // T)``. Once ``K q^j < R/2`` the sign of ``h`` is the sign of ``R`` for
every ``t >= j*T``: checking ``h[0..j*T]`` step by step decides all steps. This is a
certificate (a bound on the whole horizon), not a sample. Other spectra (complex or negative
dominant poles, repeated dominant poles) are decided only by a witness: a negative value found
within the horizon; otherwise the answer is undecided, with the reason.

Example:
    >>> import numpy as np
    >>> A = np.array([[0.9, 1.0], [-0.2, 0.0]])    # z**2 - 0.9 z + 0.2: poles 0.5, 0.4
    >>> cert = nonnegative_impulse(A, np.array([0.3, 0.0]), np.array([1.0, 0.0]))
    >>> cert.holds, cert.method
    (True, 'certificate')
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ImpulseCertificate", "nonnegative_impulse", "impulse_response", "TOLERANCE",
           "MAX_HORIZON"]

#: Values ``h[t] >= -TOLERANCE * max|h|`` count as nonnegative (float64 rounding).
TOLERANCE = 1e-12
#: Longest horizon checked step by step.
MAX_HORIZON = 200_000


@dataclass(frozen=True)
class ImpulseCertificate:
    """``holds``: True (nonnegative for every t), False (a negative value, at ``witness``) or
    None (undecided); ``method``: ``"certificate"``, ``"witness"``, ``"identically zero"`` or
    ``"undecided"``; ``reason``: one readable sentence."""

    holds: bool | None
    method: str
    reason: str
    horizon: int = 0
    witness: int | None = None

    def __str__(self) -> str:
        return self.reason


def impulse_response(A: np.ndarray, b: np.ndarray, c: np.ndarray, steps: int) -> np.ndarray:
    """``h[t] = c A^t b`` for ``t = 0 .. steps - 1`` (float64).

    Example:
        >>> impulse_response(np.array([[0.5]]), np.array([1.0]), np.array([1.0]), 3).tolist()
        [1.0, 0.5, 0.25]
    """
    x = np.asarray(b, dtype=float).copy()
    out = np.empty(steps)
    for t in range(steps):
        out[t] = float(c @ x)
        x = A @ x
    return out


def _first_negative(A, b, c, steps: int) -> tuple[int | None, float]:
    """The first ``t < steps`` with ``h[t]`` clearly negative, and ``max|h|`` seen."""
    x = np.asarray(b, dtype=float).copy()
    scale = 0.0
    for t in range(steps):
        y = float(c @ x)
        scale = max(scale, abs(y))
        if y < -TOLERANCE * max(scale, 1e-300) and y < 0:
            return t, scale
        x = A @ x
        if t > 64 and not np.any(np.abs(x) > 1e-300 * max(scale, 1e-300)):
            break
    return None, scale


def nonnegative_impulse(A, b, c) -> ImpulseCertificate:
    """Decide ``c A^t b >= 0`` for every ``t >= 0`` (see the module doc).

    Example:
        >>> A = np.array([[-0.5]])
        >>> nonnegative_impulse(A, np.array([1.0]), np.array([1.0])).witness
        1
    """
    A = np.atleast_2d(np.asarray(A, dtype=float))
    b = np.asarray(b, dtype=float).reshape(-1)
    c = np.asarray(c, dtype=float).reshape(-1)
    n = A.shape[0]
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(b)) and np.all(np.isfinite(c))):
        return ImpulseCertificate(None, "undecided", "non-finite coefficients at these values")
    head = impulse_response(A, b, c, max(n, 1))
    if np.all(head == 0):
        return ImpulseCertificate(True, "identically zero", f"h[t] = 0 for t < {n}, hence for "
                                  "every t (Cayley-Hamilton)", n)
    eig, right = np.linalg.eig(A)
    rho = float(np.max(np.abs(eig)))
    if rho >= 1:
        return ImpulseCertificate(None, "undecided", f"spectral radius {rho:.6g} >= 1 at these "
                                  "values: the filter is not stable, no tail bound")
    order = np.argsort(-np.abs(eig))
    lam = eig[order[0]]
    second = float(np.abs(eig[order[1]])) if n > 1 else 0.0
    simple = n == 1 or second < rho * (1 - 1e-9)
    if simple and abs(lam.imag) <= 1e-12 * max(rho, 1e-300) and lam.real > 0:
        cert = _dominant_certificate(A, b, c, float(lam.real), right[:, order[0]].real)
        if cert is not None:
            return cert
    t, _ = _first_negative(A, b, c, min(MAX_HORIZON, 20_000))
    if t is not None:
        return ImpulseCertificate(False, "witness", f"h[{t}] < 0 (impulse response computed "
                                  f"step by step)", t + 1, t)
    why = ("the dominant pole is not simple, real and positive" if not simple or lam.real <= 0
           or abs(lam.imag) > 1e-12 * rho else "the tail bound needs too long a horizon")
    return ImpulseCertificate(None, "undecided", f"no negative value in 20000 steps, but {why}: "
                              "no tail bound", 20_000)


def _dominant_certificate(A, b, c, lam: float, v: np.ndarray) -> ImpulseCertificate | None:
    n = A.shape[0]
    eig_t, left = np.linalg.eig(A.T)
    w = left[:, int(np.argmin(np.abs(eig_t - lam)))].real
    wv = float(w @ v)
    if abs(wv) < 1e-10 * np.linalg.norm(w) * np.linalg.norm(v):
        return None
    P = np.outer(v, w) / wv
    R = float(c @ P @ b)
    M = A / lam - P
    if not (np.all(np.isfinite(M)) and np.isfinite(R)) or np.max(np.abs(P)) > 1e8:
        return None  # (nearly) defective dominant pole: the projector is ill-conditioned
    # T with ||M^T||_2 <= 1/2
    power, T = np.eye(n), 0
    norms_b = []
    while True:
        norms_b.append(float(np.linalg.norm(power @ b)))
        power = power @ M
        T += 1
        if not np.all(np.isfinite(power)) or np.max(np.abs(power)) > 1e12:
            return None
        q = float(np.linalg.norm(power, 2))
        if q <= 0.5 or T > 5000:
            break
    if q > 0.5:
        return None
    K = float(np.linalg.norm(c)) * max(norms_b)
    scale = max(abs(R), 1e-300)
    if abs(R) <= 1e-14 * max(K, 1e-300):
        return None  # the dominant mode is not excited: its sign says nothing
    if K == 0:
        j = 0
    elif q == 0:
        j = 1  # M^T = 0: the rest vanishes from step T on
    else:
        j = max(0, math.ceil(math.log(abs(R) / (2 * K)) / math.log(q)))
    horizon = j * T + 1
    if horizon > MAX_HORIZON:
        return None
    t, _ = _first_negative(A, b, c, horizon)
    if t is not None:
        return ImpulseCertificate(False, "witness", f"h[{t}] < 0 (impulse response computed "
                                  "step by step)", horizon, t)
    if R < 0:
        at = max(1, j * T)  # the decomposition holds from t = 1 on
        value = float(impulse_response(A, b, c, at + 1)[at])
        if value < 0:
            return ImpulseCertificate(False, "witness", f"h[{at}] = {value:.3g} < 0 (and h[t] "
                                      f"< 0 for every t >= {at}: the dominant pole {lam:.6g} "
                                      f"has residue {R:.3g} < 0 and the rest is bounded by "
                                      f"{K:.3g}*{q:.3g}^(t//{T}))", horizon, at)
        return None
    return ImpulseCertificate(True, "certificate", f"h[t] >= 0 for t <= {j * T} step by step; "
                              f"for t >= max(1, {j * T}), h[t] = {lam:.6g}^t ({R:.3g} + e[t]) with "
                              f"|e[t]| <= {K:.3g}*{q:.3g}^(t//{T}) < {scale / 2:.3g} (geometric "
                              "tail bound from the dominant pole)", horizon)
