"""Domains of hyperparameters: real intervals with readable text and sympy conditions.

Example:
    >>> from ctopt.domains import UNIT
    >>> str(UNIT), UNIT.contains(0.999), UNIT.contains(1.0)
    ('[0, 1)', True, False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import sympy as sp

__all__ = ["NONNEGATIVE", "OPEN_UNIT", "POSITIVE", "REAL", "UNIT", "Domain"]


@dataclass(frozen=True)
class Domain:
    """An interval of allowed real values, e.g. ``[0, 1)`` for an EMA coefficient.

    Example:
        >>> Domain(0, 1, upper_closed=False).contains(1.0)
        False
        >>> str(Domain(0, None, lower_closed=False))
        '(0, inf)'
    """

    lower: float | None = None
    upper: float | None = None
    lower_closed: bool = True
    upper_closed: bool = True

    def contains(self, value: float) -> bool:
        """Whether ``value`` is a finite real inside the interval."""
        try:
            x = float(value)
        except (TypeError, ValueError):
            return False
        if not math.isfinite(x):
            return False
        if self.lower is not None and (
            x < self.lower or (x == self.lower and not self.lower_closed)
        ):
            return False
        return not (
            self.upper is not None
            and (x > self.upper or (x == self.upper and not self.upper_closed))
        )

    def condition(self, symbol: sp.Symbol) -> sp.Basic:
        """The domain as a sympy boolean in ``symbol``."""
        parts = []
        if self.lower is not None:
            lo = sp.nsimplify(self.lower)
            parts.append(symbol >= lo if self.lower_closed else symbol > lo)
        if self.upper is not None:
            hi = sp.nsimplify(self.upper)
            parts.append(symbol <= hi if self.upper_closed else symbol < hi)
        return sp.And(*parts)

    def __str__(self) -> str:
        lo = "-inf" if self.lower is None else f"{self.lower:g}"
        hi = "inf" if self.upper is None else f"{self.upper:g}"
        left = "[" if self.lower is not None and self.lower_closed else "("
        right = "]" if self.upper is not None and self.upper_closed else ")"
        return f"{left}{lo}, {hi}{right}"


#: Common domains.
POSITIVE = Domain(0, None, lower_closed=False)
NONNEGATIVE = Domain(0, None)
UNIT = Domain(0, 1, upper_closed=False)  # an EMA coefficient: 0 <= beta < 1
OPEN_UNIT = Domain(0, 1, lower_closed=False, upper_closed=False)
REAL = Domain()
