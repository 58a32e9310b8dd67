"""The zoo: 13 optimizers as designs, each reading like its paper's algorithm box.

Example:
    >>> import ctopt
    >>> len(ctopt.zoo.names())
    13
    >>> print(ctopt.zoo.get("adam").equations()[1])
    Eq(m, beta1*m + grad*(1 - beta1))
"""

from .accumulators import adagrad, rmsprop
from .adam_family import adabelief, adam, adamw, amsgrad
from .adan_family import adan
from .clipping import dgclip
from .momentum import heavy_ball, nesterov, sgd, signgd
from .pole_zero import adamssm
from .registry import get, names, register, unregister

__all__ = [
    "adabelief",
    "adagrad",
    "adam",
    "adamssm",
    "adamw",
    "adan",
    "amsgrad",
    "dgclip",
    "get",
    "heavy_ball",
    "names",
    "nesterov",
    "register",
    "rmsprop",
    "sgd",
    "signgd",
    "unregister",
]
