"""Gradient descent and its momentum family, in torch.optim.SGD's convention."""

from __future__ import annotations

import sympy as sp

from ..design import UNIT, Design, DesignBuilder, Domain, g, k, theta
from ._common import learning_rate, weight_decay
from .registry import register


@register
def sgd() -> Design:
    """Plain gradient descent, ``torch.optim.SGD(momentum=0)``.

    Example:
        >>> import ctopt
        >>> d = ctopt.zoo.sgd()
        >>> d.defaults["lr"]
        0.001
    """
    b = DesignBuilder("sgd", doc="Gradient descent: theta <- theta - lr*(g + weight_decay*theta).")
    lr, wd = learning_rate(b, 1e-3), weight_decay(b)
    grad = b.let("grad", g + wd * theta)
    b.update(theta - lr * grad)
    return b.build()


def _momentum(name: str, nesterov: bool, doc: str) -> Design:
    b = DesignBuilder(name, doc=doc)
    lr, wd = learning_rate(b, 1e-3), weight_decay(b)
    mu = b.hyper("momentum", 0.9, UNIT, "momentum factor", role="ema")
    dampening = b.hyper("dampening", 0.0, Domain(0, 1), "dampening of the gradient in the buffer")
    buf = b.state("buf", torch_name="momentum_buffer")
    grad = b.let("grad", g + wd * theta)
    damp = b.let("damp", sp.Piecewise((0, sp.Eq(k, 1)), (dampening, True)))  # torch: buf_1 = grad
    b.assign(buf, mu * buf + (1 - damp) * grad)
    b.update(theta - lr * (grad + mu * buf if nesterov else buf))
    return b.build()


@register
def heavy_ball() -> Design:
    """Polyak's heavy ball, ``torch.optim.SGD(momentum=0.9)``: buf <- mu*buf + (1-dampening)*grad
    (buf_1 = grad, as torch), theta <- theta - lr*buf.

    Example:
        >>> import ctopt
        >>> d = ctopt.zoo.heavy_ball()
        >>> d.state_names
        ('buf',)
    """
    return _momentum("heavy_ball", False, "Heavy-ball momentum in torch.optim.SGD's convention.")


@register
def nesterov() -> Design:
    """Nesterov momentum, ``torch.optim.SGD(momentum=0.9, nesterov=True)``:
    theta <- theta - lr*(grad + mu*buf).

    Example:
        >>> import ctopt
        >>> d = ctopt.zoo.nesterov()
        >>> d.defaults["momentum"]
        0.9
    """
    return _momentum("nesterov", True, "Nesterov momentum in torch.optim.SGD's convention.")


@register
def signgd() -> Design:
    """Sign gradient descent: theta <- theta - lr*sign(g + weight_decay*theta).

    Example:
        >>> import ctopt
        >>> d = ctopt.zoo.signgd()
        >>> len(d.states)
        0
    """
    b = DesignBuilder("signgd", doc="Sign gradient descent (the lr -> 0 limit of Adam, Ma-Wu-E).")
    lr, wd = learning_rate(b, 1e-3), weight_decay(b)
    b.update(theta - lr * sp.sign(g + wd * theta))
    return b.build()
