"""IEEE scalar helpers the generated scalar part calls (float64 Python numbers: a division by
zero is an infinity, not an exception), and the list filler of the foreach code. Torch only —
copied into standalone exports.

The helpers also take 0-d tensors (then they are torch operations, read nothing back to the
host): a capturable step (see :mod:`.capture`) runs the same scalar part on the device.

Example:
    >>> _div(1.0, 0.0), _sqrt(-1.0) != _sqrt(-1.0), _max(1.0, 2.0)
    (inf, True, 2.0)
    >>> _max(torch.tensor(1.0, dtype=torch.float64), 2.0), _sqrt(torch.tensor(-1.0)).isnan()
    (tensor(2., dtype=torch.float64), tensor(True))
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
        out = a ** b
        return math.nan if isinstance(out, complex) else out  # (-8.0) ** 0.5 is NaN in IEEE
    except ZeroDivisionError:
        return math.inf
    except OverflowError:
        return math.inf


def _sqrt(a):
    if isinstance(a, torch.Tensor):
        return torch.sqrt(a)
    return math.sqrt(a) if a >= 0 else math.nan


def _exp(a):
    if isinstance(a, torch.Tensor):
        return torch.exp(a)
    try:
        return math.exp(a)
    except OverflowError:
        return math.inf


def _log(a):
    if isinstance(a, torch.Tensor):
        return torch.log(a)
    return math.log(a) if a > 0 else (-math.inf if a == 0 else math.nan)


def _tanh(a):
    return torch.tanh(a) if isinstance(a, torch.Tensor) else math.tanh(a)


def _sign(a):
    if isinstance(a, torch.Tensor):
        return _nan_sign(a)
    return float((a > 0) - (a < 0)) if a == a else math.nan


def _full_like(like, value):
    """``torch.full_like(like, value)``, also where ``value`` is a 0-d tensor (a coefficient of
    the compiled kernel): ``full_like`` reads such a value back to the host, which torch.compile
    cannot trace (an unbacked float), so it becomes a broadcast of the value in ``like``'s dtype.

    Example:
        >>> _full_like(torch.ones(2), 0.5).tolist(), _full_like(torch.ones(2), torch.tensor(-0.0))
        ([0.5, 0.5], tensor([-0., -0.]))
    """
    if isinstance(value, torch.Tensor):
        return value.to(like.dtype).expand_as(like)
    return torch.full_like(like, value)


def _copy_of(x):
    """A new tensor equal to ``x``: ``x.clone()``, and ``x`` negated twice while torch.compile
    traces.

    Inductor's ``remove_noop_ops`` replaces a clone by its source even where the source is an
    input written later in the graph, so the clone's reader sees the new value (pytorch issue
    198131, torch 2.13-2.14); negation is exact and no pass removes it.

    Example:
        >>> x = torch.tensor([1.0, -0.0])
        >>> y = _copy_of(x)
        >>> y.data_ptr() != x.data_ptr(), y.tolist()
        (True, [1.0, -0.0])
    """
    if torch.compiler.is_compiling():
        return torch.neg(torch.neg(x))
    return x.clone()


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
    if any(isinstance(a, torch.Tensor) for a in args):
        return _extreme(torch.maximum, "min", args)
    return math.nan if any(a != a for a in args) else max(args)


def _min(*args):
    if any(isinstance(a, torch.Tensor) for a in args):
        return _extreme(torch.minimum, "max", args)
    return math.nan if any(a != a for a in args) else min(args)


def _extreme(pair, bound: str, args):
    """Max/Min of tensors and numbers on the tensors' device (NaN wins, as for numbers): the
    numbers are bounds of ``torch.clamp``, so no number is copied to the device."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    out = tensors[0]
    for t in tensors[1:]:
        out = pair(out, t)
    for a in args:
        if not isinstance(a, torch.Tensor):
            out = out + a if a != a else torch.clamp(out, **{bound: a})
    return out


def _choose(cond, a, b):
    """A choice: a Python branch on a bool (a number chosen beside a tensor becomes a tensor
    like it), ``torch.where`` on a tensor.

    Example:
        >>> _choose(True, 1.0, 2.0), _choose(torch.tensor(0.0), torch.ones(1), 2.0).tolist()
        (1.0, [2.0])
        >>> _choose(False, torch.ones(2, dtype=torch.float64), 2.0)
        tensor([2., 2.], dtype=torch.float64)
        >>> _choose(torch.tensor(True), 0.001, 0.25).dtype  # a per-step choice on the device
        torch.float64
    """
    if isinstance(cond, torch.Tensor):
        if cond.dim() == 0 and not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
            a = torch.full((), a, dtype=torch.float64, device=cond.device)  # where() of two
            # numbers would be float32; a fill is a kernel, not a copy from the host
        return torch.where(cond != 0, a, b)
    pick, other = (a, b) if cond else (b, a)
    if isinstance(other, torch.Tensor) and not isinstance(pick, torch.Tensor):
        return torch.full_like(other, pick)  # an elementwise choice stays a tensor
    return pick


def _fe_full(value, like):
    """A list of tensors shaped like ``like`` filled with ``value``."""
    return [torch.full_like(t, float(value)) for t in like]
