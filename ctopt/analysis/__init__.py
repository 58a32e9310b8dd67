"""Analyses of a design: transfer functions, closed loops, stability, Lyapunov certificates,
filter validity and convergence rates. Each result prints in a terminal, renders as LaTeX in
Jupyter and carries its proof.

Example:
    >>> import ctopt
    >>> callable(ctopt.analysis.transfer_function)
    True
"""

from __future__ import annotations

import importlib
import sys
import types

# public name -> submodule that defines it (imported on first use, so that each analysis loads
# only what it needs)
_PUBLIC = {
    "transfer_function": "transfer",
    "state_space": "transfer",
    "TransferFunction": "transfer",
    "StateSpace": "transfer",
    "closed_loop": "closed_loop",
    "ClosedLoop": "closed_loop",
    "stability_conditions": "stability",
    "StabilityConditions": "stability",
    "lyapunov": "lyapunov",
    "filter_validity": "validity",
    "worst_case_rate": "convergence",
    "tune": "convergence",
    "iqc_rate": "iqc",
    "check_lyapunov": "lyapunov_check",
    "Proof": "proof",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'ctopt.analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ctopt.analysis.{_PUBLIC[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps public functions that share their submodule's name (``closed_loop``, ``lyapunov``)
    from being replaced by the submodule when the import system binds it on the package."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _PUBLIC and isinstance(value, types.ModuleType) and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
