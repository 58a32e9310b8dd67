"""AdamSSM: Adam whose g**2 -> v filter gains one pole-zero pair.

The paper (Chakrabarti & Chopra, Automatica 2024) states the idea in its abstract; its own
coefficients, parameter names and update equations were not available to ctopt. This design is
built from the abstract alone: ``H_v(z) = (1-beta2) z/(z-beta2) * (1-pole)/(1-zero) *
(z-zero)/(z-pole)``, unit DC gain, bias correction from the filter's own step response.

Defaults pole=0.9, zero=0.99 (a mild lead pair, pole < zero <= beta2) come from ctopt's own
study, not from the paper: the filter is stable and its impulse response is nonnegative (for
poles in [0, 1) exactly when zero <= max(pole, beta2)), so v >= 0 always. Among six valid
candidates trained on digits and a character LSTM (6 seeds each) it was best on the LSTM and
tied with Adam on digits; a stronger lead (0.5, 0.99) and a lag pair (0.99, 0.9) did worse.
The evidence is small-scale; see docs/adamssm.md.

``pole`` and ``zero`` carry the role ``"ema"``: like beta2 they set time constants of the
second-moment filter, so the square-root scaling rule maps ``1 - pole`` and ``1 - zero`` to
``kappa*(1 - pole)`` and ``kappa*(1 - zero)``.
"""

from __future__ import annotations

import sympy as sp

from ..design import Design, DesignBuilder, Domain, g, k, theta
from ..filters import z
from ._common import ema, epsilon, learning_rate, weight_decay
from .registry import register


@register
def adamssm() -> Design:
    """AdamSSM: Adam with ``H_v(z) = (1-beta2) z/(z-beta2) * (1-pole)/(1-zero) * (z-zero)/(z-pole)``.
    With ``zero == pole`` it is exactly Adam.

    Example:
        >>> import ctopt
        >>> d = ctopt.zoo.adamssm()
        >>> d.filters[0].states
        ('v', 'v_1')
    """
    b = DesignBuilder("adamssm", doc="Adam with a pole-zero pair in its second-moment filter.")
    lr = learning_rate(b, 1e-3)
    beta1 = ema(b, "beta1", 0.9, "first-moment EMA coefficient")
    beta2 = ema(b, "beta2", 0.999, "second-moment EMA coefficient")
    pole = b.hyper("pole", 0.9, Domain(0, 1, upper_closed=False), "added pole p", role="ema")
    zero = b.hyper("zero", 0.99, Domain(-1, 1, False, False), "added zero q", role="ema")
    eps = epsilon(b, 1e-8)
    wd = weight_decay(b)
    m = b.state("m", torch_name="exp_avg")
    grad = b.let("grad", g + wd * theta)
    b.assign(m, beta1 * m + (1 - beta1) * grad)
    H = (1 - beta2) * z / (z - beta2) * (1 - pole) / (1 - zero) * (z - zero) / (z - pole)
    v = b.filter("v", H, input=grad**2, torch_name="exp_avg_sq")
    m_hat = b.let("m_hat", m / (1 - beta1**k))
    bias = b.let("bias_v", v.step_response(k))  # the filter's step response s[k]
    v_hat = b.let("v_hat", v / bias)
    b.update(theta - lr * m_hat / (sp.sqrt(v_hat) + eps))
    return b.build()
