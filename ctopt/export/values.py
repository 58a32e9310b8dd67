"""What an exported optimizer accepts as values: hyperparameters (numbers or live 0-d tensors),
parameters (unique, real or complex), and the per-step numbers it hands to torch (they must fit
the parameter dtype). Torch only — copied into standalone exports.

Example:
    >>> import torch
    >>> Hyper("lr", 1e-3, 0.0, None).check(torch.tensor(0.5))
    0.5
    >>> fits(1e300, torch.float32), fits(1e300, torch.float64), fits(float("inf"), torch.float16)
    (False, True, True)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .errors import CtoptError, HyperparameterError

__all__ = ["Hyper", "ParameterError", "check_unique", "fits", "is_number", "real_view"]


class ParameterError(CtoptError, ValueError):
    """Parameters an optimizer cannot take (the same tensor twice, a non-floating tensor)."""


def is_number(value) -> bool:
    """Whether ``value`` is a real number a hyperparameter may hold: not a bool (Python, numpy
    or torch), not complex; a tensor only with one element.

    Example:
        >>> import numpy as np
        >>> is_number(0.1), is_number(True), is_number(np.bool_(True)), is_number(1j)
        (True, False, False, False)
    """
    if isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b":
        return False
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool
    try:
        float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


class Hyper(NamedTuple):
    """A hyperparameter as the runtime sees it: name, default and the interval it must lie in.

    A value may be a number or a one-element tensor; a tensor is kept as given in the param
    group and read at every step, so changing it in place (as LR schedulers and CUDA-graph code
    do) reaches the optimizer, as in torch.

    Example:
        >>> Hyper("beta1", 0.9, 0.0, 1.0, True, False).check(0.5)
        0.5
        >>> Hyper("beta1", 0.9, 0.0, 1.0, True, False).domain()
        '[0, 1)'
    """

    name: str
    default: float
    lower: float | None
    upper: float | None
    lower_closed: bool = True
    upper_closed: bool = True
    doc: str = ""

    def domain(self) -> str:
        lo = "-inf" if self.lower is None else f"{self.lower:g}"
        hi = "inf" if self.upper is None else f"{self.upper:g}"
        left = "[" if self.lower is not None and self.lower_closed else "("
        right = "]" if self.upper is not None and self.upper_closed else ")"
        return f"{left}{lo}, {hi}{right}"

    def check(self, value, where: str = "") -> float:
        """``float(value)`` or :class:`HyperparameterError` naming the parameter and its domain."""
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            raise HyperparameterError(
                f"{where}hyperparameter {self.name!r}: Tensor {self.name} must be 1-element, "
                f"got shape {tuple(value.shape)}")
        x = None
        if is_number(value):
            x = float(value.item() if isinstance(value, torch.Tensor) else value)
        ok = x is not None and math.isfinite(x)
        if ok and self.lower is not None:
            ok = x > self.lower or (self.lower_closed and x == self.lower)
        if ok and self.upper is not None:
            ok = x < self.upper or (self.upper_closed and x == self.upper)
        if not ok:
            raise HyperparameterError(
                f"{where}hyperparameter {self.name!r} = {value!r} is outside its domain "
                f"{self.domain()}" + (f" ({self.doc})" if self.doc else "")
            )
        return x

    def stored(self, value, where: str = ""):
        """The value as a param group keeps it: a checked float, or the (checked) tensor itself,
        so that in-place changes stay visible."""
        x = self.check(value, where)
        return value if isinstance(value, torch.Tensor) else x


def check_unique(params, existing=(), where: str = "") -> None:
    """Refuse a parameter given twice, in one group or across groups, naming it.

    Example:
        >>> import torch
        >>> a = torch.zeros(2, requires_grad=True)
        >>> check_unique([a, a])
        Traceback (most recent call last):
        ...
        ctopt.export.values.ParameterError: parameter 1 (shape (2,)) is the same tensor as parameter 0; a parameter may appear only once
    """
    seen = {id(p): f"parameter {i}" for i, p in enumerate(existing)}
    inside = {}
    for i, p in enumerate(params):
        if id(p) in inside:
            raise ParameterError(
                f"{where}parameter {i} (shape {tuple(p.shape)}) is the same tensor as parameter "
                f"{inside[id(p)]}; a parameter may appear only once")
        if id(p) in seen:
            raise ParameterError(
                f"{where}parameter {i} (shape {tuple(p.shape)}) is already in another param "
                "group (some parameters appear in more than one parameter group)")
        inside[id(p)] = i


def fits(value: float, dtype: torch.dtype) -> bool:
    """Whether a finite float64 number stays finite in ``dtype`` (non-finite numbers pass: they
    propagate as torch's own arithmetic would).

    Example:
        >>> import torch
        >>> fits(1e5, torch.float16), fits(1e5, torch.bfloat16)
        (False, True)
    """
    if not math.isfinite(value):
        return True
    largest = _LARGEST.get(dtype)
    if largest is None:
        if not dtype.is_floating_point and not dtype.is_complex:
            return True
        largest = _LARGEST[dtype] = torch.finfo(dtype.to_real() if dtype.is_complex else dtype).max
    return abs(value) <= largest


#: the largest finite value of each floating dtype seen (``torch.finfo`` is slow to build)
_LARGEST: dict = {}


def real_view(t: torch.Tensor) -> torch.Tensor:
    """``torch.view_as_real(t)`` for a complex tensor, ``t`` otherwise (torch.optim's handling of
    complex parameters: each is optimized as the real tensor of its real and imaginary parts).

    Example:
        >>> import torch
        >>> real_view(torch.tensor([1 + 2j])).tolist(), real_view(torch.ones(1)).tolist()
        ([[1.0, 2.0]], [1.0])
    """
    return torch.view_as_real(t) if t.is_complex() else t
