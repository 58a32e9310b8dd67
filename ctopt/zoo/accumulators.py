"""Second-moment accumulators without a first moment: AdaGrad and RMSprop (torch conventions)."""

from __future__ import annotations

import sympy as sp

from ..design import NONNEGATIVE, UNIT, Design, DesignBuilder, g, k, theta
from ._common import ema, epsilon, learning_rate, weight_decay
from .registry import register


@register
def adagrad() -> Design:
    """AdaGrad (Duchi, Hazan & Singer 2011) as ``torch.optim.Adagrad``: the accumulator is an
    integrator of grad**2; eps (1e-10) outside the root; lr decays as lr/(1 + (k-1)*lr_decay).

    Example:
        >>> import ctopt
        >>> d = ctopt.zoo.adagrad()
        >>> d.defaults["eps"]
        1e-10
    """
    b = DesignBuilder("adagrad", doc="AdaGrad: an integrator of squared gradients.")
    lr, wd = learning_rate(b, 1e-2), weight_decay(b)
    lr_decay = b.hyper("lr_decay", 0.0, NONNEGATIVE, "learning-rate decay")
    init = b.hyper("initial_accumulator_value", 0.0, NONNEGATIVE, "initial value of the sum")
    eps = epsilon(b, 1e-10)
    s = b.state("s", init=init, torch_name="sum")
    grad = b.let("grad", g + wd * theta)
    clr = b.let("clr", lr / (1 + (k - 1) * lr_decay))
    b.assign(s, s + grad**2)
    b.update(theta - clr * grad / (sp.sqrt(s) + eps))
    return b.build()


@register
def rmsprop(centered: bool = False) -> Design:
    """RMSprop as ``torch.optim.RMSprop`` (Hinton's lecture 6e): an EMA of grad**2 with
    coefficient alpha, eps outside the root, optional momentum buffer and ``centered`` variant.

    Example:
        >>> import ctopt
        >>> d = ctopt.zoo.rmsprop(centered=True)
        >>> [s.key for s in d.states]
        ['square_avg', 'momentum_buffer', 'grad_avg']
    """
    b = DesignBuilder("rmsprop", doc="RMSprop in torch's convention.", centered=centered)
    lr, wd = learning_rate(b, 1e-2), weight_decay(b)
    alpha = ema(b, "alpha", 0.99, "squared-gradient EMA coefficient")
    eps = epsilon(b, 1e-8)
    mu = b.hyper("momentum", 0.0, UNIT, "momentum factor")
    sq = b.state("sq", torch_name="square_avg")
    buf = b.state("buf", torch_name="momentum_buffer")
    grad = b.let("grad", g + wd * theta)
    b.assign(sq, alpha * sq + (1 - alpha) * grad**2)
    if centered:
        ga = b.state("ga", torch_name="grad_avg")
        b.assign(ga, alpha * ga + (1 - alpha) * grad)
        avg = b.let("avg", sp.sqrt(sq - ga**2) + eps)
    else:
        avg = b.let("avg", sp.sqrt(sq) + eps)
    b.assign(buf, mu * buf + grad / avg)
    b.update(theta - lr * buf)
    return b.build()
