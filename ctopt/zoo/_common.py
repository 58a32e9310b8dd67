"""Hyperparameter declarations shared by the zoo (names and domains follow torch.optim)."""

from __future__ import annotations

import sympy as sp

from ..design import NONNEGATIVE, POSITIVE, UNIT, DesignBuilder


def learning_rate(b: DesignBuilder, default: float) -> sp.Symbol:
    return b.hyper("lr", default, NONNEGATIVE, "learning rate", role="lr")


def ema(b: DesignBuilder, name: str, default: float, doc: str) -> sp.Symbol:
    return b.hyper(name, default, UNIT, doc, role="ema")


def epsilon(b: DesignBuilder, default: float) -> sp.Symbol:
    return b.hyper("eps", default, POSITIVE, "denominator guard", role="eps")


def weight_decay(
    b: DesignBuilder, default: float = 0.0, doc: str = "L2 penalty added to the gradient"
) -> sp.Symbol:
    return b.hyper("weight_decay", default, NONNEGATIVE, doc)
