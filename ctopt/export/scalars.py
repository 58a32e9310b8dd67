"""IEEE scalar helpers the generated scalar part calls (float64 Python numbers: a division by
zero is an infinity, not an exception), and the list filler of the foreach code. Torch only —
copied into standalone exports.

Example:
    >>> _div(1.0, 0.0), _sqrt(-1.0) != _sqrt(-1.0), _max(1.0, 2.0)
    (inf, True, 2.0)
"""

from __future__ import annotations

import math

import torch


def _div(a, b):
    try:
        return a / b
    except ZeroDivisionError:
        return math.copysign(math.inf, a) * math.copysign(1.0, b) if a != 0 else math.nan


def _pow(a, b):
    try:
        return a ** b
    except ZeroDivisionError:
        return math.inf
    except OverflowError:
        return math.inf


def _sqrt(a):
    return math.sqrt(a) if a >= 0 else math.nan


def _exp(a):
    try:
        return math.exp(a)
    except OverflowError:
        return math.inf


def _log(a):
    return math.log(a) if a > 0 else (-math.inf if a == 0 else math.nan)


def _sign(a):
    return float((a > 0) - (a < 0)) if a == a else math.nan


def _nan_sign(x):
    """``torch.sign`` that keeps NaN (``torch.sign(nan)`` is 0; IEEE and the oracle say NaN).

    Example:
        >>> _nan_sign(torch.tensor([float("nan"), -2.0, 0.0])).tolist()
        [nan, -1.0, 0.0]
    """
    if torch.compiler.is_compiling():  # two comparisons vectorize; Inductor's sign does not
        s = (x > 0).to(x.dtype) - (x < 0).to(x.dtype)
        return torch.where(x != x, x, s)
    return torch.where(torch.isnan(x), x, torch.sign(x))


def _max(*args):
    return math.nan if any(a != a for a in args) else max(args)


def _min(*args):
    return math.nan if any(a != a for a in args) else min(args)


def _choose(cond, a, b):
    """A choice: a Python branch on a bool (a number chosen beside a tensor becomes a tensor
    like it), ``torch.where`` on a tensor.

    Example:
        >>> _choose(True, 1.0, 2.0), _choose(torch.tensor(0.0), torch.ones(1), 2.0).tolist()
        (1.0, [2.0])
        >>> _choose(False, torch.ones(2, dtype=torch.float64), 2.0)
        tensor([2., 2.], dtype=torch.float64)
    """
    if isinstance(cond, torch.Tensor):
        return torch.where(cond != 0, a, b)
    pick, other = (a, b) if cond else (b, a)
    if isinstance(other, torch.Tensor) and not isinstance(pick, torch.Tensor):
        return torch.full_like(other, pick)  # an elementwise choice stays a tensor
    return pick


def _fe_full(value, like):
    """A list of tensors shaped like ``like`` filled with ``value``."""
    return [torch.full_like(t, float(value)) for t in like]
