"""Export a design as a ``torch.optim.Optimizer``: for-loop, foreach and compiled paths, all
generated from the design by one code generator (see ``docs/export.md``).

Two halves: the **compiler** -- :mod:`~ctopt.export.codegen` (design -> program),
:mod:`~ctopt.export.printers` and :mod:`~ctopt.export.inplace` (program -> code),
:mod:`~ctopt.export.source` (code -> module text) -- needs no torch, so :func:`export_source`
runs without it; the **runtime** (:data:`ctopt.export.source.RUNTIME_MODULES`: errors, scalar
helpers, hyperparameter values, the compiled runner, checkpoints, the optimizer base class) is
torch only, imported here on first use and bundled verbatim into standalone exports.

Example:
    >>> import torch, ctopt
    >>> Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = Adam([w], lr=0.1, backend="foreach")
    >>> w.grad = torch.ones(3)
    >>> _ = opt.step()
    >>> round(w[0].item(), 4)
    0.9
"""

from __future__ import annotations

import importlib
import linecache
import math
import sys
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..design import Design

__all__ = [
    "BACKENDS", "NONFINITE", "GeneratedOptimizer", "Hyper", "NonFiniteGradientError",
    "ParameterError", "StateDictError", "export_source", "flat_parameters", "to_torch",
]

#: name -> the module of this package that defines it, imported on first use: the compiler
#: (``codegen``, ``printers``, ``inplace``, ``source``) needs no torch, the runtime does
_LAZY = {
    "BACKENDS": "optimizer", "NONFINITE": "optimizer", "GeneratedOptimizer": "optimizer",
    "NonFiniteGradientError": "optimizer", "Hyper": "values", "ParameterError": "values",
    "StateDictError": "checkpoint", "flat_parameters": "compiled", "class_name": "source",
    "class_source": "source", "module_source": "source", "HyperparameterError": "errors",
    "UnsupportedError": "errors",
}


def __getattr__(name: str):
    if name.isidentifier() and Path(__file__).with_name(f"{name}.py").is_file():
        return importlib.import_module(f"{__name__}.{name}")  # a submodule, on first use
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def _here(name: str):
    """This package's attribute ``name`` (loaded on first use, or as a test replaced it)."""
    return getattr(sys.modules[__name__], name)


_CACHE: dict = {}
#: per design, the value sets at which its filter checks passed (see ``_failed_checks``)
_PASSED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: torch.optim options that the zoo designs of these names stand for (a checkpoint holding
#: another value of them is refused)
TORCH_OPTIONS = {"amsgrad": {"amsgrad": True}, "adamw": {"decoupled_weight_decay": True},
                 "nesterov": {"nesterov": True}}


def _implied_options(design: Design, source: str, cls_name: str) -> dict:
    """The torch options ``design`` stands for, when it is the zoo design of its name."""
    if design.name not in TORCH_OPTIONS:
        return {}
    from .. import zoo
    from ..errors import DesignError

    try:
        same = _here("class_source")(zoo.get(design.name), cls_name) == source
    except (KeyError, ValueError, DesignError):
        same = False
    return dict(TORCH_OPTIONS[design.name]) if same else {}


def _failed_checks(design: Design, values: dict) -> str | None:
    """The filter conditions (stable, nonnegative impulse response, unit DC gain) that
    ``design`` fails at ``values``, joined; None where all hold. Passes at plain-number values
    are remembered (a design is immutable data; a tensor value could change in place)."""
    from ..analysis.validity import filter_validity

    key = tuple(sorted(values.items())) if all(
        type(v) in (float, int) for v in values.values()) else None
    passed = _PASSED.setdefault(design, set())
    if key is not None and key in passed:
        return None
    result = filter_validity(design, **values)
    if not result.ok:
        return "; ".join(str(f) for f in result.failed)
    if key is not None and len(passed) < 1024:
        passed.add(key)
    return None


def _check_design(design: Design) -> None:
    """Refuse designs whose moment filters are unstable or may produce a negative second moment
    at their default hyperparameters (``ctopt.analysis.validity``)."""
    from ..errors import DesignError

    for h in design.hyper:
        if not (math.isfinite(h.default) and h.domain.contains(h.default)):
            raise DesignError(f"design {design.name!r}: hyperparameter {h.name!r} default "
                              f"{h.default!r} is not a finite value in {h.domain}")
    failed = _failed_checks(design, design.defaults)
    if failed is not None:
        raise DesignError(
            f"design {design.name!r} fails the filter checks at its defaults: {failed}. "
            "Pass check=False to export it anyway.")


def _value_guard(design: Design):
    """A check of user values against the design's filter conditions, naming the violated
    condition."""
    from ..errors import HyperparameterError

    def guard(values: dict, where: str = "") -> None:
        failed = _failed_checks(design, values)
        if failed is not None:
            raise HyperparameterError(
                f"{where}these hyperparameters break design {design.name!r}'s filter checks: "
                f"{failed}. Export with check=False to allow them."
            )

    return staticmethod(guard)


def to_torch(design: Design, name: str | None = None, *, check: bool = True) -> type:
    """Compile ``design`` into a ``torch.optim.Optimizer`` subclass.

    The constructor takes ``params`` (tensors, param groups or named parameters) and every
    hyperparameter by its design name (``betas=(...)`` too when the design has beta1, beta2, ...),
    plus ``maximize``, ``backend`` ("auto", "forloop", "foreach", "compiled") and ``nonfinite``
    ("propagate", "skip", "raise"). The guard refuses a design whose moment filters are unstable
    or may make a second moment negative at its defaults, and the constructor (and
    ``add_param_group``) refuses user values that break those conditions; ``check=False`` skips
    both.

    Example:
        >>> import ctopt
        >>> Opt = ctopt.to_torch(ctopt.zoo.get("heavy_ball"))
        >>> Opt.__name__, Opt.state_keys
        ('HeavyBall', ('momentum_buffer',))
    """
    from ..design import Design
    from ..errors import DesignError
    from . import runtime

    if not isinstance(design, Design):
        raise DesignError(f"to_torch needs a ctopt Design, got {type(design).__name__}")
    if check:
        _check_design(design)
    cls_name = name or _here("class_name")(design)
    source = _here("class_source")(design, cls_name)
    key = (source, cls_name, check)
    if key in _CACHE:
        return _CACHE[key]
    filename = f"<ctopt export {design.name} #{len(_CACHE)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {name: getattr(runtime, name) for name in runtime.__all__}
    namespace["__name__"] = "ctopt.export.generated"
    exec(compile(source, filename, "exec"), namespace)  # our own printed code, never user text
    cls = namespace[cls_name]
    cls.__module__ = "ctopt.export.generated"
    cls.design = design
    cls.implied_options = _implied_options(design, source, cls_name)
    if check:
        cls.value_guard = _value_guard(design)
    _CACHE[key] = cls
    return cls


def export_source(design: Design, path: str | Path | None = None, name: str | None = None, *,
                  check: bool = True) -> str:
    """Write a standalone, readable module (torch only, no ctopt import) holding the optimizer;
    returns the source. ``path=None`` only returns it. Needs no torch itself.

    Example:
        >>> import ctopt
        >>> text = ctopt.export_source(ctopt.zoo.get("sgd"))
        >>> "class Sgd(GeneratedOptimizer)" in text
        True
    """
    if check:
        _check_design(design)
    text = _here("module_source")(design, name)
    if path is not None:
        Path(path).write_text(text)
    return text

