"""Regularized gradient clipping, delta-GClip (Tucat, Mukherjee et al. 2024)."""

from __future__ import annotations

import sympy as sp

from ..design import POSITIVE, Design, DesignBuilder, Domain, g, theta
from ._common import learning_rate, weight_decay
from .registry import register


@register
def dgclip() -> Design:
    """delta-GClip: theta <- theta - step_size*(g + weight_decay*theta) with
    step_size = lr*min(1, max(delta, gamma/||g||)), ||g|| the group's gradient L2 norm (before weight
    decay); a zero norm gives no step.

    Example:
        >>> import ctopt
        >>> d = ctopt.zoo.dgclip()
        >>> [r.name for r in d.reductions]
        ['grad_norm']
    """
    b = DesignBuilder("dgclip", doc="delta-GClip: clipping with a floor delta on the step size.")
    lr, wd = learning_rate(b, 1e-1), weight_decay(b)
    gamma = b.hyper("gamma", 0.1, POSITIVE, "gradient-norm threshold")
    delta = b.hyper("delta", 1e-3, Domain(0, 1), "floor of the step-size factor")
    norm = b.reduction("grad_norm", "l2_norm", g)
    step_size = b.let("step_size", sp.Piecewise((0, sp.Eq(norm, 0)),
                                                (lr * sp.Min(1, sp.Max(delta, gamma / norm)), True)))
    b.update(theta - step_size * (g + wd * theta))
    return b.build()
