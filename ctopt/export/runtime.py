"""What generated optimizer classes see as their globals: the base class, the hyperparameter
row type, the scalar helpers of the per-step part, ``torch`` and ``math``, and the names a
standalone export offers its users. :func:`ctopt.to_torch` runs a generated class in these
names, and a standalone export binds the same names from its bundled copy of the runtime.

Example:
    >>> from ctopt.export import runtime
    >>> {"GeneratedOptimizer", "Hyper", "_div", "torch", "math"} <= set(runtime.__all__)
    True
"""

from __future__ import annotations

import math

import torch

from .checkpoint import StateDictError
from .compiled import flat_parameters
from .errors import CtoptError, HyperparameterError, UnsupportedError
from .optimizer import GeneratedOptimizer, NonFiniteGradientError
from .scalars import (
    _choose,
    _copy_of,
    _div,
    _exp,
    _fe_full,
    _full_like,
    _log,
    _max,
    _min,
    _nan_sign,
    _pow,
    _sign,
    _sqrt,
    _tanh,
)
from .values import Hyper

__all__ = [
    "CtoptError", "GeneratedOptimizer", "Hyper", "HyperparameterError", "NonFiniteGradientError",
    "StateDictError", "UnsupportedError", "_choose", "_copy_of", "_div", "_exp", "_fe_full",
    "_full_like", "_log", "_max", "_min", "_nan_sign", "_pow", "_sign", "_sqrt", "_tanh",
    "flat_parameters", "math", "torch",
]
