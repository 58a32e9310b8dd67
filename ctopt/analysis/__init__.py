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

# public name -> submodule that defines it (imported on first use, so that each analysis loads
# only what it needs)
_PUBLIC = {
    "transfer_function": "transfer",
    "state_space": "transfer",
    "TransferFunction": "transfer",
    "StateSpace": "transfer",
    "closed_loop": "loops",
    "ClosedLoop": "loops",
    "stability_conditions": "stability",
    "StabilityConditions": "stability",
    "lyapunov": "certificates",
    "filter_validity": "validity",
    "worst_case_rate": "convergence",
    "tune": "convergence",
    "iqc_rate": "iqc",
    "check_lyapunov": "lyapunov_check",
    "Proof": "proof",
    "preconditioner": "preconditioners",
    "Preconditioner": "preconditioners",
    "critical_sharpness": "sharpness",
    "CriticalSharpness": "sharpness",
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

