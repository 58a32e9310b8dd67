"""ctopt: optimizers as small dynamical systems.

Write an optimizer once as a symbolic design; derive its transfer functions, prove when it is
stable, and compile the same design into a torch optimizer. Heavy dependencies (torch,
python-control, cvxpy, matplotlib) are imported only when a feature needs them.

Example:
    >>> import ctopt
    >>> d = ctopt.zoo.get("adam")
    >>> sorted(d.defaults)[:2]
    ['beta1', 'beta2']
"""

from __future__ import annotations

import importlib

from . import errors, filters, oracle, zoo
from .design import Design, DesignBuilder, Domain, Hyperparameter, State, g, k, theta
from .errors import CtoptError, DesignError, DesignFileError, HyperparameterError
from .filters import z
from .oracle import simulate

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use)
_LAZY = {
    "to_torch": "ctopt.export",
    "export_source": "ctopt.export",
    "transfer_function": "ctopt.analysis",
    "state_space": "ctopt.analysis",
    "closed_loop": "ctopt.analysis",
    "stability_conditions": "ctopt.analysis",
    "lyapunov": "ctopt.analysis",
    "filter_validity": "ctopt.analysis",
    "worst_case_rate": "ctopt.analysis",
    "tune": "ctopt.analysis",
    "iqc_rate": "ctopt.analysis",
    "check_lyapunov": "ctopt.analysis",
    "save_design": "ctopt.serialize",
    "load_design": "ctopt.serialize",
    "explore": "ctopt.explore",
    "preconditioner": "ctopt.analysis",
    "critical_sharpness": "ctopt.analysis",
    "SharpnessMonitor": "ctopt.monitor",
}
_SUBMODULES = (
    "analysis",
    "export",
    "plot",
    "scaling",
    "dynamics",
    "serialize",
    "experiments",
    "cli",
    "monitor",
)

__all__ = [
    "CtoptError",
    "Design",
    "DesignBuilder",
    "DesignError",
    "DesignFileError",
    "Domain",
    "Hyperparameter",
    "HyperparameterError",
    "State",
    "errors",
    "filters",
    "g",
    "k",
    "oracle",
    "simulate",
    "theta",
    "z",
    "zoo",
    *_LAZY,
    *_SUBMODULES,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"ctopt.{name}")
    else:
        raise AttributeError(f"module 'ctopt' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
