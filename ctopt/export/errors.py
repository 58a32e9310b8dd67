"""The error base classes of the runtime, shared by ctopt and every standalone export.

A standalone export bundles this module (it imports nothing), so an exported optimizer raises the
same classes that :mod:`ctopt.errors` re-exports: one hierarchy.

Example:
    >>> issubclass(HyperparameterError, CtoptError) and issubclass(HyperparameterError, ValueError)
    True
"""

__all__ = ["CtoptError", "HyperparameterError", "UnsupportedError"]


class CtoptError(Exception):
    """Base class of every error ctopt (and an optimizer it exported) raises on purpose (never
    raised itself: each error is one of its specific subclasses)."""


class HyperparameterError(CtoptError, ValueError):
    """A hyperparameter value outside its domain, or an unknown hyperparameter name."""


class UnsupportedError(CtoptError, NotImplementedError):
    """A request that cannot be honoured (too large, unsupported input, unknown option, missing
    extra)."""
