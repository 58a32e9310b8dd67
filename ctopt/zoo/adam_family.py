"""Adam and its direct relatives: AdamW, AMSGrad, AdaBelief."""

from __future__ import annotations

import sympy as sp

from ..design import Design, DesignBuilder, g, k, theta
from ._common import ema, epsilon, learning_rate, weight_decay
from .registry import register


def _adam_box(name: str, *, decoupled: bool, amsgrad: bool, doc: str) -> Design:
    b = DesignBuilder(name, doc=doc)
    lr = learning_rate(b, 1e-3)
    beta1 = ema(b, "beta1", 0.9, "first-moment EMA coefficient")
    beta2 = ema(b, "beta2", 0.999, "second-moment EMA coefficient")
    eps = epsilon(b, 1e-8)
    wd = weight_decay(b, 1e-2, "decoupled weight decay") if decoupled else weight_decay(b)
    m = b.state("m", torch_name="exp_avg")
    v = b.state("v", torch_name="exp_avg_sq")
    grad = b.let("grad", g if decoupled else g + wd * theta)
    b.assign(m, beta1 * m + (1 - beta1) * grad)
    b.assign(v, beta2 * v + (1 - beta2) * grad**2)
    if amsgrad:
        vmax = b.state("vmax", torch_name="max_exp_avg_sq")
        b.assign(vmax, sp.Max(vmax, v))
        v = vmax
    m_hat = b.let("m_hat", m / (1 - beta1**k))
    v_hat = b.let("v_hat", v / (1 - beta2**k))
    decay = (1 - lr * wd) if decoupled else 1
    b.update(theta * decay - lr * m_hat / (sp.sqrt(v_hat) + eps))
    return b.build()


@register
def adam() -> Design:
    """Adam (Kingma & Ba 2015) as ``torch.optim.Adam``: bias-corrected moments, eps outside the
    square root, coupled (L2) weight decay.

    Example:
        >>> import ctopt
        >>> d = ctopt.zoo.adam()
        >>> [s.key for s in d.states]
        ['exp_avg', 'exp_avg_sq']
    """
    return _adam_box("adam", decoupled=False, amsgrad=False, doc="Adam in torch's convention.")


@register
def adamw() -> Design:
    """AdamW (Loshchilov & Hutter 2019) as ``torch.optim.AdamW``: theta is first decayed by
    (1 - lr*weight_decay), then takes Adam's step; weight_decay defaults to 1e-2.

    Example:
        >>> import ctopt
        >>> d = ctopt.zoo.adamw()
        >>> d.defaults["weight_decay"]
        0.01
    """
    return _adam_box("adamw", decoupled=True, amsgrad=False, doc="AdamW: decoupled weight decay.")


@register
def amsgrad() -> Design:
    """AMSGrad (Reddi et al. 2018) as ``torch.optim.Adam(amsgrad=True)``: the running maximum
    of the *uncorrected* v, then divided by the bias correction (torch's code convention).

    Example:
        >>> import ctopt
        >>> d = ctopt.zoo.amsgrad()
        >>> d.state_names
        ('m', 'v', 'vmax')
    """
    return _adam_box("amsgrad", decoupled=False, amsgrad=True, doc="AMSGrad in torch's convention.")


@register
def adabelief(decoupled: bool = True) -> Design:
    """AdaBelief (Zhuang et al. 2020), Algorithm 2 as in ``adabelief-pytorch`` 0.2.1 with
    ``rectify=False``: s tracks (g - m)**2 with the *new* m, eps is added inside the recursion (it
    accumulates in the state) and again outside the root. ``decoupled`` selects weight_decouple.
    Rectification (RAdam) is not modelled.

    Example:
        >>> import ctopt
        >>> d = ctopt.zoo.adabelief()
        >>> d.defaults["eps"]
        1e-16
    """
    b = DesignBuilder(
        "adabelief", doc="AdaBelief: the EMA of the belief (g - m)**2.", decoupled=decoupled
    )
    lr = learning_rate(b, 1e-3)
    beta1 = ema(b, "beta1", 0.9, "first-moment EMA coefficient")
    beta2 = ema(b, "beta2", 0.999, "belief EMA coefficient")
    eps = epsilon(b, 1e-16)
    wd = weight_decay(b, 0.0, "weight decay (decoupled unless decoupled=False)")
    m = b.state("m", torch_name="exp_avg")
    s = b.state("s", torch_name="exp_avg_var")
    grad = b.let("grad", g if decoupled else g + wd * theta)
    b.assign(m, beta1 * m + (1 - beta1) * grad)
    b.assign(s, beta2 * s + (1 - beta2) * (grad - m) ** 2 + eps)
    denom = b.let("denom", sp.sqrt(s) / sp.sqrt(1 - beta2**k) + eps)
    decay = (1 - lr * wd) if decoupled else 1
    b.update(theta * decay - lr / (1 - beta1**k) * m / denom)
    return b.build()
