"""Adan (Xie et al. 2022) in the official code's convention (betas are one minus the paper's)."""

from __future__ import annotations

import sympy as sp

from ..design import NONNEGATIVE, Design, DesignBuilder, g, k, theta
from ._common import ema, epsilon, learning_rate, weight_decay
from .registry import register


@register
def adan(no_prox: bool = False) -> Design:
    """Adan as ``sail-sg/Adan``: moments of g, of the gradient difference and of the
    Nesterov-corrected gradient; proximal weight decay after the step (``no_prox=True``: decoupled
    before it); optional clipping by the group gradient norm (``max_grad_norm > 0``; the official
    code takes the norm over all groups, ctopt over the parameter group).

    Example:
        >>> import ctopt
        >>> d = ctopt.zoo.adan()
        >>> (d.defaults["beta1"], d.defaults["beta2"], d.defaults["beta3"])
        (0.98, 0.92, 0.99)
    """
    b = DesignBuilder("adan", doc="Adan: adaptive Nesterov momentum.", no_prox=no_prox)
    lr = learning_rate(b, 1e-3)
    beta1 = ema(b, "beta1", 0.98, "first-moment EMA coefficient (paper: 1 - beta1)")
    beta2 = ema(b, "beta2", 0.92, "gradient-difference EMA coefficient (paper: 1 - beta2)")
    beta3 = ema(b, "beta3", 0.99, "second-moment EMA coefficient (paper: 1 - beta3)")
    eps = epsilon(b, 1e-8)
    wd = weight_decay(b, 0.0, "weight decay (proximal unless no_prox=True)")
    max_norm = b.hyper(
        "max_grad_norm", 0.0, NONNEGATIVE, "clip threshold on the group gradient norm (0: off)"
    )
    norm = b.reduction("grad_norm", "l2_norm", g)
    m, v = b.state("m", torch_name="exp_avg"), b.state("v", torch_name="exp_avg_diff")
    n, g_prev = b.state("n", torch_name="exp_avg_sq"), b.state("g_prev", torch_name="pre_grad")
    clip = b.let(
        "clip", sp.Piecewise((1, sp.Eq(max_norm, 0)), (sp.Min(1, max_norm / (norm + eps)), True))
    )
    gc = b.let("gc", clip * g)
    diff = b.let("diff", sp.Piecewise((0, sp.Eq(k, 1)), (gc - g_prev, True)))  # g_0 := g_1
    b.assign(m, beta1 * m + (1 - beta1) * gc)
    b.assign(v, beta2 * v + (1 - beta2) * diff)
    b.assign(n, beta3 * n + (1 - beta3) * (gc + beta2 * diff) ** 2)
    b.assign(g_prev, gc)
    denom = b.let("denom", sp.sqrt(n) / sp.sqrt(1 - beta3**k) + eps)
    step = b.let("step", (m / (1 - beta1**k) + beta2 * v / (1 - beta2**k)) / denom)
    if no_prox:
        b.update(theta * (1 - lr * wd) - lr * step)
    else:
        b.update((theta - lr * step) / (1 + lr * wd))
    return b.build()
