"""AdamSSM's added pole and zero: where the second-moment filter is valid, and how candidate
pairs train on a task.

The filter from ``g**2`` to ``v`` is ``H(z) = (1-beta2) z/(z-beta2) * (1-p)/(1-q) * (z-q)/(z-p)``
(unit DC gain). :func:`impulse_response` evaluates it in closed form; :func:`filter_check`
reports stability, nonnegativity of the impulse response (so ``v >= 0`` for any gradients), the
weight ``h[0]`` given to the newest squared gradient and the mean delay ``sum k h[k]``.

Example:
    >>> c = filter_check(0.9, 0.99)
    >>> c["stable"], c["nonnegative"], round(c["h0"], 4)
    (True, True, 0.01)
    >>> filter_check(0.9, 0.9995)["nonnegative"]
    False
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .harness import OptimizerSpec, RunCurves

__all__ = ["filter_check", "impulse_response", "pole_zero_study"]


def impulse_response(pole: float, zero: float, beta2: float = 0.999, n: int = 20000) -> np.ndarray:
    """``h[0..n-1]`` of AdamSSM's second-moment filter, by the recursion the design realises.

    Example:
        >>> h = impulse_response(0.5, 0.5, 0.9, 3)  # pole == zero: Adam's EMA
        >>> np.round(h, 4).tolist()
        [0.1, 0.09, 0.081]
    """
    c = (1 - beta2) * (1 - pole) / (1 - zero)
    # y[k] = (beta2 + p) y[k-1] - beta2 p y[k-2] + c (u[k] - q u[k-1])
    h = np.zeros(n)
    u = np.zeros(n)
    u[0] = 1.0
    for i in range(n):
        prev1 = h[i - 1] if i >= 1 else 0.0
        prev2 = h[i - 2] if i >= 2 else 0.0
        h[i] = (beta2 + pole) * prev1 - beta2 * pole * prev2 + c * (u[i] - zero * (u[i - 1] if i else 0))
    return h


def filter_check(pole: float, zero: float, beta2: float = 0.999, n: int = 20000) -> dict:
    """Stability, nonnegativity of the first ``n`` taps (up to rounding: ``1e-12 * max|h|``),
    ``h0``, the mean delay ``sum k h[k] / sum h[k]`` and the DC gain ``sum h[k]``.

    With both poles in ``[0, 1)`` the taps are all nonnegative exactly when
    ``zero <= max(pole, beta2)``.

    Example:
        >>> filter_check(0.9, 0.99)["nonnegative"], filter_check(0.5, 0.9999, beta2=0.99)["nonnegative"]
        (True, False)
    """
    h = impulse_response(pole, zero, beta2, n)
    k = np.arange(n)
    return {
        "stable": bool(abs(pole) < 1 and abs(beta2) < 1),
        "nonnegative": bool(h.min() >= -1e-12 * np.abs(h).max()),
        "h0": float(h[0]),
        "mean_delay": float((k * h).sum() / h.sum()),
        "dc_gain": float(h.sum()),
    }


def pole_zero_study(task, pairs: Sequence[tuple[float, float]], *, lr: float = 1e-3,
                    seeds: int = 3, progress: bool = True) -> dict[tuple[float, float], list[RunCurves]]:
    """Train ctopt's exported AdamSSM with each ``(pole, zero)`` at ``lr`` for ``seeds`` seeds.

    Example:
        >>> from ctopt.experiments import LanguageTask
        >>> tiny = LanguageTask(chars=12_000, steps=2, hidden=4, embed=2, seq=4, batch=2)
        >>> out = pole_zero_study(tiny, [(0.9, 0.99)], seeds=1, progress=False)
        >>> out[(0.9, 0.99)][0].steps
        [2]
    """
    from tqdm.auto import tqdm

    from .harness import ctopt_factory

    bar = tqdm(total=len(pairs) * seeds, desc=f"{task.name} pole/zero", disable=not progress)
    out = {}
    for pole, zero in pairs:
        make = ctopt_factory(OptimizerSpec("AdamSSM", "adamssm", {"pole": pole, "zero": zero}))
        out[(pole, zero)] = []
        for seed in range(seeds):
            out[(pole, zero)].append(task.train(make, lr, seed))
            bar.update()
    bar.close()
    return out
