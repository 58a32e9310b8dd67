"""The float64 numeric oracle: the ground truth every generated path is tested against.

It interprets a design's assignments directly, node by node, with numpy in float64: no code is
generated or evaluated. A quotient is computed as a division and a square root with ``sqrt``, so
the oracle rounds like a hand-written implementation.

Example:
    >>> import numpy as np, ctopt
    >>> traj = ctopt.simulate(ctopt.zoo.get("sgd"), lambda x: 2 * x, np.array([1.0]), 3, lr=0.25)
    >>> traj[:, 0].tolist()
    [1.0, 0.5, 0.25, 0.125]
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from functools import reduce

import numpy as np
import sympy as sp

from . import ops
from .design import Design, g, k, theta
from .errors import DesignError, HyperparameterError

__all__ = ["batch_env", "evaluate", "init_state", "simulate", "step", "trajectory"]

Value = np.ndarray | float


def evaluate(expr: sp.Basic, env: Mapping[sp.Symbol, Value]) -> Value:
    """Evaluate a sympy expression in float64, with symbols bound by ``env``.

    Example:
        >>> import sympy as sp
        >>> x = sp.Symbol("x")
        >>> float(evaluate(sp.sqrt(x) / 2, {x: 16.0}))
        2.0
    """
    if expr.is_Symbol:
        try:
            return env[expr]
        except KeyError:
            raise DesignError(f"no value for the symbol {expr.name!r}") from None
    if expr.is_Number or expr in (sp.true, sp.false):
        return float(expr) if expr.is_Number else bool(expr)
    if expr.is_Add:
        return reduce(operator.add, (evaluate(a, env) for a in expr.args))
    if expr.is_Mul:
        num, den = ops.split_product(expr)
        top = reduce(operator.mul, (evaluate(a, env) for a in num)) if num else 1.0
        if not den:
            return top
        return top / reduce(operator.mul, (evaluate(a, env) for a in den))
    if expr.is_Pow:
        return _power(evaluate(expr.base, env), expr.exp, env)
    if type(expr) in ops.MINMAX:
        return reduce(ops.MINMAX[type(expr)].numpy, (evaluate(a, env) for a in expr.args))
    if isinstance(expr, sp.Piecewise):
        return _piecewise(expr, env)
    if type(expr) in ops.RELATIONS:
        return ops.RELATIONS[type(expr)].numpy(evaluate(expr.lhs, env), evaluate(expr.rhs, env))
    if isinstance(expr, sp.Not):
        return np.logical_not(evaluate(expr.args[0], env))
    if type(expr) in ops.LOGIC:
        return reduce(ops.LOGIC[type(expr)].numpy, (evaluate(a, env) for a in expr.args))
    function = ops.function_of(expr)
    if function is not None:
        return function.numpy(evaluate(expr.args[0], env))
    raise DesignError(f"the oracle cannot evaluate {type(expr).__name__}: {expr}")


def _power(base: Value, exp: sp.Expr, env: Mapping[sp.Symbol, Value]) -> Value:
    form = ops.power_form(exp)
    if form == "sqrt":
        return np.sqrt(base)
    if form == "rsqrt":
        return 1.0 / np.sqrt(base)
    if form == "recip":
        return 1.0 / base
    exponent = evaluate(exp, env)
    if isinstance(base, float) and isinstance(exponent, (float, int)):
        return base ** (int(exponent) if float(exponent).is_integer() else exponent)
    return np.power(base, exponent)


def _piecewise(expr: sp.Piecewise, env: Mapping[sp.Symbol, Value]) -> Value:
    # first true condition wins; a scalar condition picks its branch without computing the others
    pending: list[tuple[Value, Value]] = []
    out = None
    for value, cond in expr.args:
        c = evaluate(cond, env)
        if np.ndim(c) == 0:
            if bool(c):
                out = evaluate(value, env)
                break
            continue
        with np.errstate(all="ignore"):
            pending.append((c, evaluate(value, env)))
    if out is None and not pending:
        raise DesignError(f"no branch of {expr} applies")
    for c, v in reversed(pending):
        out = v if out is None else np.where(c, v, out)
    return out


def _env(design: Design, values: Mapping[str, float]) -> dict[sp.Symbol, Value]:
    checked = design.check_values(**values)
    return {h.symbol: np.float64(checked[h.name]) for h in design.hyper}


def batch_env(design: Design, values: Mapping[str, object]) -> tuple[dict[sp.Symbol, Value], int]:
    """Hyperparameter values for ``P`` settings at once: each value a scalar or a 1-D array (of
    length ``P`` or 1), validated; arrays become columns ``(P, 1)``. Returns ``(env, P)``.

    Example:
        >>> import numpy as np, ctopt
        >>> env, size = batch_env(ctopt.zoo.get("sgd"), {"lr": np.array([0.1, 0.2])})
        >>> size, env[ctopt.zoo.get("sgd").hyperparameters["lr"].symbol].shape
        (2, (2, 1))
    """
    table = design.hyperparameters
    unknown = sorted(set(values) - set(table))
    if unknown:
        raise HyperparameterError(f"unknown hyperparameter(s) {unknown} for design {design.name!r}")
    arrays = {n: np.atleast_1d(np.asarray(v, dtype=np.float64)) for n, v in values.items()}
    if any(a.ndim != 1 for a in arrays.values()):
        raise HyperparameterError("batched hyperparameter values must be scalars or 1-D arrays")
    try:
        size = int(np.broadcast_shapes(*(a.shape for a in arrays.values()))[0]) if arrays else 1
    except ValueError:
        shapes = {n: a.shape for n, a in arrays.items()}
        raise HyperparameterError(f"batched values have incompatible lengths: {shapes}") from None
    env: dict = {}
    for h in design.hyper:
        if h.name not in arrays:
            env[h.symbol] = float(h.default)
            continue
        for v in arrays[h.name]:
            h.check(v)
        col = np.broadcast_to(arrays[h.name], (size,))
        env[h.symbol] = float(col[0]) if arrays[h.name].size == 1 else col[:, None].copy()
    return env, size


def init_state(design: Design, n: int, **values: float) -> dict[str, np.ndarray]:
    """Initial states of ``n`` coordinates under hyperparameter ``values`` (defaults elsewhere).

    Example:
        >>> import ctopt
        >>> ctopt.oracle.init_state(ctopt.zoo.get("adagrad"), 2, initial_accumulator_value=0.1)
        {'s': array([0.1, 0.1])}
    """
    values = design.check_values(**values)
    return {
        s.name: np.full(n, design.state_init(s.name, values), dtype=np.float64)
        for s in design.states
    }


def step(
    design: Design,
    x: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, np.ndarray],
    step_number: int,
    **values: float,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One iteration of ``design`` on one group: returns the new parameter and the new states.
    ``state`` is not modified.

    Example:
        >>> import numpy as np, ctopt
        >>> d = ctopt.zoo.get("adam")
        >>> s = ctopt.oracle.init_state(d, 1)
        >>> x, s = ctopt.oracle.step(d, np.array([1.0]), np.array([0.5]), s, 1, lr=0.1)
        >>> round(float(x[0]), 6)
        0.9
    """
    x = np.asarray(x, dtype=np.float64)
    grad = np.asarray(grad, dtype=np.float64)
    if x.shape != grad.shape:
        raise DesignError(
            f"gradient shape {grad.shape} does not match the parameter shape {x.shape}"
        )
    return _advance(design, _env(design, values), x, grad, state, step_number)


def _advance(design: Design, hyper: Mapping[sp.Symbol, Value], x: np.ndarray, grad: np.ndarray,
             state: Mapping[str, np.ndarray], step_number: int
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The one interpreter of an iteration: ``x`` is ``(n,)`` (one group) or ``(P, n)`` (``P``
    groups, e.g. one per hyperparameter setting of a :func:`batch_env`); reductions run over the
    last axis."""
    env = dict(hyper)
    env.update({g: grad, theta: x, k: int(step_number)})
    for r in design.reductions:
        value = ops.REDUCTIONS[r.kind].numpy(np.broadcast_to(evaluate(r.of, env), x.shape))
        env[r.symbol] = value if x.ndim == 1 else value[..., None]
    for s in design.states:
        env[s.symbol] = np.asarray(state[s.name], dtype=np.float64)
    new_x = x
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for a in design.assignments:
            value = evaluate(a.expr, env)
            value = (
                np.broadcast_to(np.asarray(value, dtype=np.float64), x.shape)
                if a.kind != "let"
                else value
            )
            env[a.target] = value
            if a.kind == "update":
                new_x = np.array(value, dtype=np.float64)
    new_state = {s.name: np.array(env[s.symbol], dtype=np.float64) for s in design.states}
    return new_x, new_state


def trajectory(design: Design, grad_fn: Callable[[np.ndarray], np.ndarray], x0: np.ndarray,
               steps: int, hyper: Mapping[sp.Symbol, Value], state: Mapping[str, np.ndarray],
               *, maximize: bool = False) -> np.ndarray:
    """The oracle's loop: ``steps`` iterations from ``x0`` (``(n,)`` or a batch ``(P, n)``) with
    hyperparameter values ``hyper`` (symbol -> value, e.g. from :func:`batch_env`) and initial
    states ``state``. Returns shape ``(steps + 1, *x0.shape)``.

    Example:
        >>> import numpy as np, ctopt
        >>> d = ctopt.zoo.get("sgd")
        >>> env, _ = batch_env(d, {"lr": np.array([0.25, 0.5])})
        >>> trajectory(d, lambda x: 2 * x, np.ones((2, 1)), 1, env, {})[:, :, 0].tolist()
        [[1.0, 1.0], [0.5, 0.0]]
    """
    if steps < 0:
        raise DesignError(f"steps must be >= 0, got {steps}")
    x = np.array(x0, dtype=np.float64)
    out = np.empty((steps + 1, *x.shape))
    out[0] = x
    for i in range(1, steps + 1):
        grad = np.asarray(grad_fn(x.copy()), dtype=np.float64).reshape(x.shape)
        x, state = _advance(design, hyper, x, -grad if maximize else grad, state, i)
        out[i] = x
    return out


def simulate(
    design: Design,
    grad_fn: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    steps: int,
    *,
    maximize: bool = False,
    **values: float,
) -> np.ndarray:
    """Run ``design`` for ``steps`` steps from ``x0`` (one parameter group) in float64.

    ``grad_fn(x)`` returns the gradient at ``x`` (it may be stochastic); reductions are computed
    over the whole of ``x``. Returns the trajectory, shape ``(steps + 1, n)``.

    Example:
        >>> import numpy as np, ctopt
        >>> traj = ctopt.simulate(ctopt.zoo.get("adam"), lambda x: x, np.ones(3), 10, lr=0.1)
        >>> traj.shape
        (11, 3)
    """
    x = np.array(x0, dtype=np.float64).reshape(-1)
    if steps < 0:
        raise DesignError(f"steps must be >= 0, got {steps}")
    state = init_state(design, x.size, **values)
    return trajectory(design, grad_fn, x, steps, _env(design, values), state, maximize=maximize)
