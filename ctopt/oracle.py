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

from .design import Design, g, k, theta
from .errors import DesignError

__all__ = ["evaluate", "init_state", "simulate", "step"]

Value = np.ndarray | float

_RELATIONS: dict[type, Callable] = {
    sp.Equality: operator.eq,
    sp.Unequality: operator.ne,
    sp.StrictLessThan: operator.lt,
    sp.LessThan: operator.le,
    sp.StrictGreaterThan: operator.gt,
    sp.GreaterThan: operator.ge,
}
_FUNCTIONS: dict[type, Callable] = {
    sp.Abs: np.abs,
    sp.sign: np.sign,
    sp.exp: np.exp,
    sp.log: np.log,
}


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
        num = [a for a in expr.args if not _is_reciprocal(a)]
        den = [
            a.base if a.exp == -1 else sp.Pow(a.base, -a.exp)
            for a in expr.args
            if _is_reciprocal(a)
        ]
        top = reduce(operator.mul, (evaluate(a, env) for a in num)) if num else 1.0
        if not den:
            return top
        return top / reduce(operator.mul, (evaluate(a, env) for a in den))
    if expr.is_Pow:
        base = evaluate(expr.base, env)
        if expr.exp == sp.S.Half:
            return np.sqrt(base)
        if expr.exp == -sp.S.Half:
            return 1.0 / np.sqrt(base)
        if expr.exp == -1:
            return 1.0 / base
        exponent = evaluate(expr.exp, env)
        if isinstance(base, float) and isinstance(exponent, (float, int)):
            return base ** (int(exponent) if float(exponent).is_integer() else exponent)
        return np.power(base, exponent)
    if isinstance(expr, (sp.Max, sp.Min)):
        op = np.maximum if isinstance(expr, sp.Max) else np.minimum
        return reduce(op, (evaluate(a, env) for a in expr.args))
    if isinstance(expr, sp.Piecewise):
        return _piecewise(expr, env)
    if type(expr) in _RELATIONS:
        return _RELATIONS[type(expr)](evaluate(expr.lhs, env), evaluate(expr.rhs, env))
    if isinstance(expr, (sp.And, sp.Or)):
        op = np.logical_and if isinstance(expr, sp.And) else np.logical_or
        return reduce(op, (evaluate(a, env) for a in expr.args))
    if isinstance(expr, sp.Not):
        return np.logical_not(evaluate(expr.args[0], env))
    if type(expr) in _FUNCTIONS:
        return _FUNCTIONS[type(expr)](evaluate(expr.args[0], env))
    raise DesignError(f"the oracle cannot evaluate {type(expr).__name__}: {expr}")


def _is_reciprocal(a: sp.Basic) -> bool:
    return a.is_Pow and a.exp.is_Number and a.exp < 0


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
    """One step of ``design`` on one group: returns the new parameter and the new states.
    ``state`` is not modified.

    Example:
        >>> import numpy as np, ctopt
        >>> d = ctopt.zoo.get("adam")
        >>> s = ctopt.oracle.init_state(d, 1)
        >>> x, s = ctopt.oracle.step(d, np.array([1.0]), np.array([0.5]), s, 1, lr=0.1)
        >>> round(float(x[0]), 6)
        0.9
    """
    env = _env(design, values)
    x = np.asarray(x, dtype=np.float64)
    grad = np.asarray(grad, dtype=np.float64)
    if x.shape != grad.shape:
        raise DesignError(
            f"gradient shape {grad.shape} does not match the parameter shape {x.shape}"
        )
    env.update({g: grad, theta: x, k: int(step_number)})
    for r in design.reductions:
        of = np.broadcast_to(evaluate(r.of, env), x.shape)
        env[r.symbol] = np.sqrt(np.sum(of * of))
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
    out = np.empty((steps + 1, x.size))
    out[0] = x
    for i in range(1, steps + 1):
        grad = np.asarray(grad_fn(x.copy()), dtype=np.float64).reshape(x.shape)
        x, state = step(design, x, -grad if maximize else grad, state, i, **values)
        out[i] = x
    return out
