"""Batch-size scaling rules applied to a design, and a numeric check of the square-root rule.

When the batch grows from ``B`` to ``kappa * B``, the square-root rule of Malladi, Lyu,
Panigrahi & Arora (NeurIPS 2022) keeps RMSprop and Adam on the same stochastic differential
equation: ``lr -> lr * sqrt(kappa)``, every EMA coefficient's ``1 - beta -> kappa * (1 - beta)``
and ``eps -> eps / sqrt(kappa)``, with ``kappa`` times fewer steps for the same samples. The rule
reads the ``role`` a design declares for each hyperparameter (``'lr'``, ``'ema'``, ``'eps'``),
so it applies to any design; its theory covers RMSprop and Adam only. The linear rule
(``lr -> kappa * lr``) is the SGD counterpart.

Example:
    >>> import ctopt
    >>> new = sqrt_rule(ctopt.zoo.get("adam"), 4)
    >>> round(new["lr"], 6), round(new["beta1"], 6), round(new["beta2"], 6), new["eps"]
    (0.002, 0.6, 0.996, 5e-09)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .design import Design
from .errors import DesignError, HyperparameterError

__all__ = ["RuleCheck", "linear_rule", "regression_curves", "sqrt_rule", "validate_sqrt_rule"]


def _values_and_roles(design_or_values, design, roles):
    if isinstance(design_or_values, Design):
        design = design_or_values
        values = design.defaults
    else:
        if design is None:
            raise DesignError(
                "a dict of values needs the design it belongs to (design=...): the design "
                "declares which hyperparameters are learning rates, EMA coefficients and eps"
            )
        values = design.check_values(**dict(design_or_values))
    table = {h.name: h.role for h in design.hyper}
    for name, role in (roles or {}).items():
        if name not in table:
            raise HyperparameterError(
                f"roles names {name!r}, not a hyperparameter of {design.name!r}"
            )
        if role not in ("lr", "ema", "eps", None):
            raise HyperparameterError(
                f"role of {name!r} must be 'lr', 'ema', 'eps' or None, got {role!r}"
            )
        table[name] = role
    return design, values, table


def _check_kappa(kappa: float) -> float:
    kappa = float(kappa)
    if not math.isfinite(kappa) or kappa <= 0:
        raise HyperparameterError(
            f"kappa (the batch-size ratio) must be a finite number > 0, got {kappa}"
        )
    return kappa


def sqrt_rule(
    design_or_values: Design | Mapping[str, float],
    kappa: float,
    design: Design | None = None,
    *,
    roles: Mapping[str, str | None] | None = None,
) -> dict[str, float]:
    """Hyperparameters for a batch ``kappa`` times larger, by the square-root scaling rule.

    ``design_or_values`` is a design (its defaults are scaled) or a dict of values together with
    ``design``. ``roles`` overrides declared roles (e.g. ``{"pole": "ema"}``). Hyperparameters
    without a role (weight decay, ...) are unchanged. A ``kappa`` that sends an EMA coefficient
    outside ``[0, 1)`` raises :class:`HyperparameterError` naming it.

    Example:
        >>> import ctopt
        >>> d = ctopt.zoo.get("rmsprop")
        >>> new = sqrt_rule({"lr": 0.01, "alpha": 0.99}, 4, d)
        >>> round(new["lr"], 6), round(new["alpha"], 6)
        (0.02, 0.96)
    """
    kappa = _check_kappa(kappa)
    design, values, table = _values_and_roles(design_or_values, design, roles)
    out = dict(values)
    for name, role in table.items():
        v = values[name]
        if role == "lr":
            out[name] = v * math.sqrt(kappa)
        elif role == "eps":
            out[name] = v / math.sqrt(kappa)
        elif role == "ema":
            new = 1.0 - kappa * (1.0 - v)
            if not 0.0 <= new < 1.0:
                limit = f"; it needs kappa <= {1.0 / (1.0 - v):g}" if v < 1.0 else ""
                raise HyperparameterError(
                    f"the square-root rule with kappa={kappa:g} sends the EMA coefficient "
                    f"{name!r} = {v:g} to 1 - kappa*(1 - {name}) = {new:g}, outside [0, 1){limit}"
                )
            out[name] = new
    return design.check_values(**out)


def linear_rule(
    design_or_values: Design | Mapping[str, float],
    kappa: float,
    design: Design | None = None,
    *,
    roles: Mapping[str, str | None] | None = None,
) -> dict[str, float]:
    """Hyperparameters for a batch ``kappa`` times larger by the linear rule for SGD-type designs:
    ``lr -> kappa * lr``, everything else (momentum included) unchanged.

    Example:
        >>> import ctopt
        >>> linear_rule(ctopt.zoo.get("heavy_ball"), 8)["lr"]
        0.008
    """
    kappa = _check_kappa(kappa)
    design, values, table = _values_and_roles(design_or_values, design, roles)
    out = dict(values)
    for name, role in table.items():
        if role == "lr":
            out[name] = values[name] * kappa
    return design.check_values(**out)


# ------------------------------------------------------------------ numeric validation
def regression_curves(
    design: Design,
    values: Mapping[str, float],
    batch: int,
    samples: int,
    seeds: int,
    *,
    dim: int = 10,
    noise: float = 1.0,
    checkpoints: int = 40,
    condition: float = 10.0,
    start: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Excess risk of ``design`` on streaming noisy linear regression, one row per seed.

    Each step draws ``batch`` fresh samples ``x ~ N(0, diag(lam))`` (``lam`` spread over
    ``[1/condition, 1]``) and ``y = x.w* + noise*xi``; ``w`` starts at 0 or, with ``start``, at
    ``w* + start*u`` for a fixed random unit-variance ``u`` (a start near the optimum keeps the run
    in the noise-dominated regime the rule is about) and hands the minibatch gradient of
    ``0.5*mean((x.w - y)**2)`` to the float64 oracle (each seed's sample stream is the same
    for every batch size: common random numbers); the seeds run as independent blocks of one
    coordinate vector (the design must be elementwise: no group reductions). Returns
    ``(samples_seen, risk)`` with ``risk[s, j] = 0.5*(w - w*)' diag(lam) (w - w*)`` at
    ``samples_seen[j]``.

    Example:
        >>> import ctopt
        >>> n, r = regression_curves(ctopt.zoo.get("adam"), {"lr": 0.01}, 4, 400, 2, checkpoints=4)
        >>> n.tolist(), r.shape
        ([100, 200, 300, 400], (2, 4))
    """
    from .oracle import init_state, step

    if design.reductions:
        raise DesignError(f"{design.name!r} has group reductions; seeds cannot share one vector")
    steps = samples // batch
    if steps < checkpoints or steps % checkpoints:
        raise DesignError(
            f"samples/batch = {steps} steps must be a multiple of checkpoints={checkpoints}"
        )
    lam = np.geomspace(1.0 / condition, 1.0, dim)
    rng = np.random.default_rng([seeds, dim, 12345])
    w_star = rng.standard_normal(dim)  # the same problem for every seed and batch size
    # every batch size reads the same sample stream per seed (common random numbers)
    streams = []
    for s in range(seeds):
        gen = np.random.default_rng([s, 777])
        xs = gen.standard_normal((steps * batch, dim)) * np.sqrt(lam)
        streams.append((xs, xs @ w_star + noise * gen.standard_normal(steps * batch)))
    w0 = np.zeros(dim) if start is None else w_star + start * rng.standard_normal(dim)
    x = np.tile(w0, seeds)
    state = init_state(design, x.size, **values)
    every = steps // checkpoints
    risk = np.empty((seeds, checkpoints))
    for i in range(1, steps + 1):
        w = x.reshape(seeds, dim)
        rows = slice((i - 1) * batch, i * batch)
        grads = [xs[rows].T @ (xs[rows] @ w[s] - ys[rows]) / batch
                 for s, (xs, ys) in enumerate(streams)]
        x, state = step(design, x, np.concatenate(grads), state, i, **values)
        if i % every == 0:
            err = x.reshape(seeds, dim) - w_star
            risk[:, i // every - 1] = 0.5 * (err**2 * lam).sum(axis=1)
    return np.arange(1, checkpoints + 1) * every * batch, risk


@dataclass(frozen=True)
class RuleCheck:
    """Result of :func:`validate_sqrt_rule`: loss curves and their distances.

    ``curves`` maps ``'base'``, ``'rule'`` and ``'unscaled'`` to ``log10`` excess-risk arrays of
    shape ``(seeds, checkpoints)`` over ``samples_seen``. ``distance_rule`` and
    ``distance_unscaled`` are the RMS over checkpoints of the difference between seed-mean
    ``log10`` curves (large batch vs base). ``seed_noise`` is the RMS over checkpoints of the
    standard error of that difference for independent seeds (the larger of the two comparisons):
    a distance below it means "equal within seed noise". Every run of a seed reads the same
    samples, so ``paired_noise`` (the standard error of the per-seed differences) is a stricter
    yardstick; it exposes the rule's small discretization bias at large ``kappa``.
    """

    design: str
    kappa: float
    samples_seen: np.ndarray
    curves: Mapping[str, np.ndarray]
    distance_rule: float
    distance_unscaled: float
    seed_noise: float
    paired_noise: float

    def __str__(self) -> str:
        return (
            f"{self.design}, kappa={self.kappa:g}: distance with the rule "
            f"{self.distance_rule:.3f}, "
            f"without {self.distance_unscaled:.3f}, seed noise {self.seed_noise:.3f} "
            f"(paired {self.paired_noise:.3f}; log10 risk)"
        )


def _distance(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(distance, seed noise, paired noise) between two sets of log-risk curves."""
    diff = a.mean(axis=0) - b.mean(axis=0)
    se = np.sqrt(a.var(axis=0, ddof=1) / len(a) + b.var(axis=0, ddof=1) / len(b))
    paired = (a - b).std(axis=0, ddof=1) / np.sqrt(len(a))
    rms = lambda x: float(np.sqrt(np.mean(x**2)))  # noqa: E731
    return rms(diff), rms(se), rms(paired)


def validate_sqrt_rule(
    design: Design,
    kappa: float,
    values: Mapping[str, float] | None = None,
    *,
    batch: int = 1,
    samples: int = 6400,
    seeds: int = 6,
    checkpoints: int = 40,
    noise: float = 10.0,
    start: float | None = 0.5,
    **problem: float,
) -> RuleCheck:
    """Run ``design`` at batch ``batch`` and at ``kappa * batch`` (with the square-root rule and
    with unchanged hyperparameters) on :func:`regression_curves` for the same number of samples.
    The default problem (``noise=10``, start ``0.5`` from the optimum) is gradient-noise
    dominated, the regime the rule's SDE argument is about; ``start=None`` (start at 0) and a small
    ``noise`` add a signal-dominated early phase where the rule is not expected to hold.

    Example:
        >>> import ctopt
        >>> r = validate_sqrt_rule(ctopt.zoo.get("adam"), 4, {"lr": 0.01, "beta1": 0.95},
        ...                        samples=800, seeds=3, checkpoints=4)
        >>> r.distance_rule < r.distance_unscaled
        True
    """
    kappa_int = int(round(kappa))
    if kappa_int != kappa or kappa_int < 1:
        raise HyperparameterError(f"validation needs an integer kappa >= 1, got {kappa}")
    base = design.check_values(**(values or {}))
    scaled = sqrt_rule(base, kappa_int, design)
    curves = {}
    n = None
    for label, vals, b in (("base", base, batch), ("rule", scaled, kappa_int * batch),
                           ("unscaled", base, kappa_int * batch)):
        n, risk = regression_curves(design, vals, b, samples, seeds, checkpoints=checkpoints,
                                   noise=noise, start=start, **problem)
        curves[label] = np.log10(risk)
    d_rule, noise_rule, paired_rule = _distance(curves["rule"], curves["base"])
    d_unscaled, noise_unscaled, paired_unscaled = _distance(curves["unscaled"], curves["base"])
    return RuleCheck(design.name, float(kappa_int), n, curves, d_rule, d_unscaled,
                     max(noise_rule, noise_unscaled), max(paired_rule, paired_unscaled))
