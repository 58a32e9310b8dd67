"""ctopt's error types. Every error ctopt raises on bad input derives from :class:`CtoptError`.

Example:
    >>> from ctopt.errors import CtoptError, HyperparameterError
    >>> issubclass(HyperparameterError, ValueError) and issubclass(HyperparameterError, CtoptError)
    True
"""

__all__ = [
    "CtoptError",
    "DesignError",
    "DesignFileError",
    "HyperparameterError",
    "NotPreconditionedError",
    "UnsupportedError",
]


class CtoptError(Exception):
    """Base class of every error ctopt raises on purpose."""


class DesignError(CtoptError, ValueError):
    """An invalid design: unknown symbol, unassigned state, bad domain, unsupported function..."""


class HyperparameterError(CtoptError, ValueError):
    """A hyperparameter value outside its domain, or an unknown hyperparameter name."""


class DesignFileError(CtoptError, ValueError):
    """A design file that is not a valid, safe ctopt design."""


class UnsupportedError(CtoptError, NotImplementedError):
    """A request ctopt cannot honour (too large, unsupported input, missing extra)."""


class NotPreconditionedError(UnsupportedError):
    """A design whose update is not ``theta - lr * u / D`` (no preconditioner view)."""
