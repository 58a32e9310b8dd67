"""The dynamics lab: test problems, simulations of any design, and regime classification.

Problems are small deterministic objectives with a gradient (numpy, batched over leading axes):
an ill-conditioned quadratic, Rosenbrock, l2-regularised logistic regression and a small tanh MLP.
A design runs on them through the float64 oracle (:func:`run`, :func:`run_batch` for
many hyperparameter settings at once) or through its exported torch optimizer
(``backend="torch"``). :func:`classify` names a loss curve's regime — converging, oscillating,
spiking or diverging — by the quantitative criteria in its docstring; :func:`signgd_limit` and
:func:`phase_map` reproduce the observations of Ma, Wu & E (2021) on Adam.

Example:
    >>> import ctopt
    >>> from ctopt.dynamics import quadratic, run
    >>> t = run(ctopt.zoo.get("heavy_ball"), quadratic(), 200, lr=0.01)
    >>> t.regime
    'converging'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from .design import Design
from .errors import DesignError, HyperparameterError
from .oracle import batch_env, evaluate, trajectory

__all__ = [
    "PhaseMap", "Problem", "REGIMES", "Trajectory", "classify", "logistic_regression", "mlp",
    "phase_map", "quadratic", "rosenbrock", "run", "run_batch",
    "signgd_flow", "signgd_limit",
]

REGIMES = ("converging", "oscillating", "spiking", "diverging")


# ------------------------------------------------------------------------ problems
@dataclass(frozen=True)
class Problem:
    """A deterministic objective: ``loss(x)`` and ``grad(x)`` accept ``x`` of shape ``(..., n)``;
    ``minimum`` is its optimal value (or a lower bound)."""

    name: str
    x0: np.ndarray
    loss: Callable[[np.ndarray], np.ndarray]
    grad: Callable[[np.ndarray], np.ndarray]
    minimum: float = 0.0
    doc: str = ""


def quadratic(condition: float = 100.0, dim: int = 2, x0: Sequence[float] | None = None) -> Problem:
    """``0.5 * sum(h_i x_i**2)`` with curvatures ``h`` spread geometrically over
    ``[1/condition, 1]``; starts at ``(1, 1, ...)``.

    Example:
        >>> p = quadratic(10.0)
        >>> float(p.loss(p.x0)), p.grad(p.x0).tolist()
        (0.55, [0.1, 1.0])
    """
    h = np.geomspace(1.0 / condition, 1.0, dim)
    start = np.ones(dim) if x0 is None else np.asarray(x0, dtype=float)
    return Problem(f"quadratic(condition={condition:g})", start,
                   lambda x: 0.5 * np.sum(h * x * x, axis=-1), lambda x: h * x, 0.0,
                   "ill-conditioned diagonal quadratic")


def rosenbrock(a: float = 1.0, b: float = 100.0) -> Problem:
    """Rosenbrock's valley ``(a - x)**2 + b*(y - x**2)**2`` from ``(-1.2, 1)``; minimum 0 at
    ``(a, a**2)``.

    Example:
        >>> p = rosenbrock()
        >>> float(p.loss(np.array([1.0, 1.0])))
        0.0
    """
    def loss(v):
        x, y = v[..., 0], v[..., 1]
        return (a - x) ** 2 + b * (y - x * x) ** 2

    def grad(v):
        x, y = v[..., 0], v[..., 1]
        return np.stack([-2 * (a - x) - 4 * b * x * (y - x * x), 2 * b * (y - x * x)], axis=-1)

    return Problem("rosenbrock", np.array([-1.2, 1.0]), loss, grad, 0.0, "Rosenbrock's valley")


def logistic_regression(samples: int = 200, dim: int = 5, l2: float = 1e-2, seed: int = 0) -> Problem:
    """Mean logistic loss on a fixed synthetic data set plus ``0.5*l2*|x|**2``; its minimum is
    computed once with scipy's L-BFGS.

    Example:
        >>> p = logistic_regression(samples=50, dim=3)
        >>> bool(p.loss(p.x0) > p.minimum)
        True
    """
    from scipy.optimize import minimize

    rng = np.random.default_rng(seed)
    A = rng.standard_normal((samples, dim)) * np.geomspace(0.1, 3.0, dim)
    y = np.where(A @ rng.standard_normal(dim) + 0.5 * rng.standard_normal(samples) > 0, 1.0, -1.0)

    def loss(x):
        margins = (x @ A.T) * y
        return np.mean(np.logaddexp(0.0, -margins), axis=-1) + 0.5 * l2 * np.sum(x * x, axis=-1)

    def grad(x):
        margins = (x @ A.T) * y
        weights = -y / (1.0 + np.exp(margins)) / samples
        return weights @ A + l2 * x

    best = minimize(loss, np.zeros(dim), jac=grad, method="L-BFGS-B", tol=1e-14)
    return Problem(f"logistic_regression(d={dim})", np.zeros(dim), loss, grad, float(best.fun),
                   "l2-regularised logistic regression")


def mlp(samples: int = 32, hidden: int = 8, seed: int = 0) -> Problem:
    """A one-hidden-layer tanh network fitting ``sin(3u)`` on ``samples`` points in ``[-1, 1]``
    by mean squared error (minimum taken as 0). Parameters are flattened as
    ``(w1, b1, w2, b2)``.

    Example:
        >>> p = mlp(hidden=4)
        >>> p.x0.shape, p.grad(p.x0).shape
        ((13,), (13,))
    """
    rng = np.random.default_rng(seed)
    u = np.linspace(-1.0, 1.0, samples)
    target = np.sin(3.0 * u)
    h = hidden

    def unpack(x):
        return x[..., :h], x[..., h:2 * h], x[..., 2 * h:3 * h], x[..., 3 * h]

    def forward(x):
        w1, b1, w2, b2 = unpack(x)
        act = np.tanh(u[..., :, None] * w1[..., None, :] + b1[..., None, :])  # (..., s, h)
        return act, np.einsum("...sh,...h->...s", act, w2) + b2[..., None]

    def loss(x):
        return 0.5 * np.mean((forward(x)[1] - target) ** 2, axis=-1)

    def grad(x):
        w1, b1, w2, b2 = unpack(x)
        act, out = forward(x)
        r = (out - target) / samples  # (..., s)
        d_act = r[..., :, None] * w2[..., None, :] * (1.0 - act * act)
        parts = [np.einsum("...sh,s->...h", d_act, u), d_act.sum(axis=-2),
                 np.einsum("...s,...sh->...h", r, act), r.sum(axis=-1)[..., None]]
        return np.concatenate(parts, axis=-1)

    x0 = np.concatenate([rng.standard_normal(h), rng.standard_normal(h) * 0.5,
                         rng.standard_normal(h) / np.sqrt(h), [0.0]])
    return Problem(f"mlp(hidden={hidden})", x0, loss, grad, 0.0, "tanh MLP regression of sin(3u)")


# ----------------------------------------------------------------------- simulation
@dataclass(frozen=True)
class Trajectory:
    """A run: parameters ``x`` (``steps + 1`` rows) and ``loss`` (suboptimality ``loss -
    problem.minimum``), with its :func:`classify` regime."""

    design: str
    problem: str
    values: Mapping[str, float]
    x: np.ndarray
    loss: np.ndarray = field(repr=False)

    @property
    def regime(self) -> str:
        return classify(self.loss)


def run(design: Design, problem: Problem, steps: int, *, backend: str = "oracle",
             **values: float) -> Trajectory:
    """Run ``design`` on ``problem`` for ``steps`` full-batch steps.

    ``backend="oracle"`` uses the float64 oracle; ``backend="torch"`` the design's exported
    optimizer (``ctopt.to_torch``) on a float64 tensor, so the two can be compared.

    Example:
        >>> import ctopt
        >>> t = run(ctopt.zoo.get("adam"), rosenbrock(), 50, lr=0.01)
        >>> t.x.shape, bool(t.loss[-1] < t.loss[0])
        ((51, 2), True)
    """
    if backend == "oracle":
        from .oracle import simulate as oracle_simulate

        x = oracle_simulate(design, problem.grad, problem.x0, steps, **values)
    elif backend == "torch":
        x = _run_torch(design, problem, steps, values)
    else:
        raise DesignError(f"backend must be 'oracle' or 'torch', got {backend!r}")
    with np.errstate(all="ignore"):
        loss = problem.loss(x) - problem.minimum
    return Trajectory(design.name, problem.name, dict(values), x, loss)


def _run_torch(design: Design, problem: Problem, steps: int, values) -> np.ndarray:
    import torch

    from .export import to_torch

    p = torch.nn.Parameter(torch.tensor(problem.x0, dtype=torch.float64))
    opt = to_torch(design)([p], **values)
    out = np.empty((steps + 1, problem.x0.size))
    out[0] = problem.x0
    for i in range(1, steps + 1):
        p.grad = torch.from_numpy(np.asarray(problem.grad(p.detach().numpy()), dtype=np.float64))
        opt.step()
        out[i] = p.detach().numpy()
    return out


def run_batch(design: Design, problem: Problem, steps: int, **values) -> Trajectory:
    """Run ``design`` on ``problem`` under many hyperparameter settings at once, in float64.

    Each value may be a scalar or a 1-D array; arrays broadcast to ``P`` settings, and setting
    ``i`` evolves exactly as :func:`run` would with the ``i``-th values (both run the oracle's
    one loop, :func:`ctopt.oracle.trajectory`). Returns a :class:`Trajectory` whose ``x`` has
    shape ``(P, steps + 1, n)`` and ``loss`` ``(P, steps + 1)`` (its ``regime`` is not defined;
    classify rows).

    Example:
        >>> import ctopt
        >>> t = run_batch(ctopt.zoo.get("sgd"), quadratic(), 10, lr=np.array([0.5, 3.0]))
        >>> [classify(row) for row in t.loss]
        ['converging', 'diverging']
    """
    env, size = batch_env(design, values)
    x = np.broadcast_to(np.asarray(problem.x0, dtype=np.float64), (size, problem.x0.size)).copy()
    state = {}
    for s in design.states:
        init = evaluate(sp.sympify(s.init), env) if not sp.sympify(s.init).is_Number else float(s.init)
        state[s.name] = np.broadcast_to(np.asarray(init, dtype=np.float64), x.shape).copy()
    with np.errstate(all="ignore"):
        out = trajectory(design, problem.grad, x, steps, env, state).transpose(1, 0, 2)
        loss = problem.loss(out) - problem.minimum
    shown = {n: v for n, v in values.items()}
    return Trajectory(design.name, problem.name, shown, out, loss)


# -------------------------------------------------------------------- classification
def classify(loss: Sequence[float], *, blocks: int = 50, spike_decades: float = 1.0,
             diverge_factor: float = 10.0, progress: float = 1.0, swing: float = 0.3,
             floor: float = 1e-6) -> str:
    """The regime of a loss (suboptimality) curve: one of :data:`REGIMES`.

    Work on ``l = log10(max(loss, floor*loss_0))`` (below ``floor`` times the starting
    suboptimality the run counts as converged) cut into ``blocks`` equal blocks; ``hi_j`` and
    ``lo_j`` are block ``j``'s largest and smallest ``l``. Block maxima ignore the momentary dips
    of a loss crossing its minimum. Checked in this order:

    1. **diverging** — a non-finite value, or the last block's maximum exceeds
       ``diverge_factor * loss_0``;
    2. **spiking** — some ``hi_j`` exceeds ``min_{i<j} hi_i`` by more than ``spike_decades``:
       after the loss has been lower it comes back up by 10x (default) or more;
    3. **oscillating** — the second half is not at the floor, its block maxima fall by less than
       ``progress`` decades from its first to its last block, and its blocks swing by more than
       ``swing`` decades on average (mean of ``hi_j - lo_j``): the loss goes up and down without
       getting lower;
    4. **converging** — otherwise (including slow, smooth progress).

    Example:
        >>> classify(0.9 ** np.arange(100))
        'converging'
        >>> classify(1.1 ** np.arange(100))
        'diverging'
        >>> classify(10.0 ** np.sin(np.arange(200)))
        'oscillating'
    """
    y = np.asarray(loss, dtype=np.float64)
    if y.ndim != 1 or y.size < 8:
        raise DesignError("classify needs a 1-D loss curve with at least 8 values")
    if not np.all(np.isfinite(y)):
        return "diverging"
    start = max(abs(y[0]), 1e-300)
    base = np.log10(floor * start)
    ell = np.log10(np.maximum(y, floor * start))
    parts = np.array_split(ell[1:], min(blocks, y.size - 1))
    hi = np.array([p.max() for p in parts])
    lo = np.array([p.min() for p in parts])
    if hi[-1] > np.log10(diverge_factor * start):
        return "diverging"
    if np.max(hi[1:] - np.minimum.accumulate(hi)[:-1], initial=-np.inf) > spike_decades:
        return "spiking"
    half = slice(len(hi) // 2, None)
    at_floor = hi[-1] <= base + 1e-12
    fell = hi[half][0] - hi[half][-1]
    if not at_floor and fell < progress and np.mean(hi[half] - lo[half]) > swing:
        return "oscillating"
    return "converging"


# ------------------------------------------------------------------- Ma-Wu-E lab
def signgd_flow(x0: Sequence[float], t: np.ndarray) -> np.ndarray:
    """The exact signGD flow ``dx/dt = -sign(grad f(x))`` of a separable objective with its
    minimum at 0 (e.g. :func:`quadratic`): each coordinate moves toward 0 at unit speed and stops.
    Returns shape ``(len(t), n)``.

    Example:
        >>> signgd_flow([1.0, -0.5], np.array([0.0, 0.25, 1.0])).tolist()
        [[1.0, -0.5], [0.75, -0.25], [0.0, -0.0]]
    """
    x0 = np.asarray(x0, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)[:, None]
    return np.sign(x0) * np.maximum(np.abs(x0) - t, 0.0)


def signgd_limit(lrs: Sequence[float] = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3), *, horizon: float = 0.75,
                 problem: Problem | None = None, design: Design | None = None,
                 **values: float) -> dict[float, float]:
    """Distance between Adam's path in time ``t = k*lr`` and the signGD flow, for each ``lr``
    with the other hyperparameters fixed (Adam's defaults unless given).

    Returns ``{lr: max_{k*lr <= horizon} |x_k - x_flow(k*lr)|_inf}`` on a separable quadratic
    (default ``quadratic(100, x0=(1, 0.5))``); Ma, Wu & E's limit says it tends to 0 with lr.

    Example:
        >>> d = signgd_limit((0.1, 0.01))
        >>> d[0.01] < d[0.1]
        True
    """
    from .oracle import simulate as oracle_simulate
    from .zoo import get

    design = design if design is not None else get("adam")
    problem = problem if problem is not None else quadratic(100.0, x0=(1.0, 0.5))
    out = {}
    for lr in lrs:
        steps = int(round(horizon / lr))
        x = oracle_simulate(design, problem.grad, problem.x0, steps, lr=lr, **values)
        flow = signgd_flow(problem.x0, np.arange(steps + 1) * lr)
        out[lr] = float(np.max(np.abs(x - flow)))
    return out


@dataclass(frozen=True)
class PhaseMap:
    """Regimes of Adam over ``beta1 = 1 - b*eta``, ``beta2 = 1 - a*eta``: ``regimes[i, j]`` and
    ``final_loss[i, j]`` belong to ``b[i]``, ``a[j]``."""

    a: np.ndarray
    b: np.ndarray
    eta: float
    regimes: np.ndarray
    final_loss: np.ndarray

    def counts(self) -> dict[str, int]:
        """How many cells fall in each regime."""
        return {r: int(np.sum(self.regimes == r)) for r in REGIMES}

    def __str__(self) -> str:
        letters = {r: r[0].upper() for r in REGIMES}
        rows = ["b\\a  " + " ".join(f"{a:>5g}" for a in self.a)]
        for i, b in enumerate(self.b):
            rows.append(f"{b:>5g} " + " ".join(f"{letters[r]:>5}" for r in self.regimes[i]))
        return "\n".join(rows)


def phase_map(a: Sequence[float], b: Sequence[float], *, eta: float = 1e-2, steps: int = 3000,
              problem: Problem | None = None, design: Design | None = None,
              **values: float) -> PhaseMap:
    """Classify Adam (or ``design`` with ``beta1``/``beta2``) over the grid ``beta1 = 1 - b*eta``,
    ``beta2 = 1 - a*eta`` with ``lr = eta``, all cells in one batched float64 run on ``problem``
    (default :func:`quadratic` with condition 100). Each ``a*eta`` and ``b*eta`` must lie in
    ``(0, 1]``.

    Example:
        >>> pm = phase_map([1.0, 50.0], [1.0, 50.0], steps=300)
        >>> pm.regimes.shape
        (2, 2)
    """
    from .zoo import get

    design = design if design is not None else get("adam")
    problem = problem if problem is not None else quadratic(100.0)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    for name, c in (("a", a), ("b", b)):
        if np.any(c * eta <= 0) or np.any(c * eta > 1):
            raise HyperparameterError(f"every {name}*eta must lie in (0, 1] so that beta is in [0, 1)")
    bb, aa = np.meshgrid(b, a, indexing="ij")
    runs = run_batch(design, problem, steps, lr=eta, beta1=1 - bb.ravel() * eta,
                     beta2=1 - aa.ravel() * eta, **values)
    regimes = np.array([classify(row) for row in runs.loss]).reshape(bb.shape)
    return PhaseMap(a, b, eta, regimes, runs.loss[:, -1].reshape(bb.shape))
