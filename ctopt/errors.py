"""ctopt's error types. Every error ctopt raises on bad input derives from :class:`CtoptError`.

The base classes :class:`CtoptError`, :class:`HyperparameterError` and :class:`UnsupportedError`
are defined by the export runtime (:mod:`ctopt.export.errors`), so that an exported optimizer,
with or without ctopt, raises the same classes.

Example:
    >>> from ctopt.errors import CtoptError, HyperparameterError
    >>> issubclass(HyperparameterError, ValueError) and issubclass(HyperparameterError, CtoptError)
    True
"""

from .export.errors import CtoptError, HyperparameterError, UnsupportedError

# ctopt's public name of the runtime's classes (tracebacks, reprs and pickles say ctopt.errors);
# a standalone export's bundled copies keep their own module name
for _cls in (CtoptError, HyperparameterError, UnsupportedError):
    _cls.__module__ = __name__
del _cls

__all__ = [
    "CtoptError",
    "DesignError",
    "DesignFileError",
    "HyperparameterError",
    "NotPreconditionedError",
    "UnsupportedError",
]


class DesignError(CtoptError, ValueError):
    """An invalid design: unknown symbol, unassigned state, bad domain, unsupported function..."""


class DesignFileError(CtoptError, ValueError):
    """A design file that is not a valid, safe ctopt design."""


class NotPreconditionedError(UnsupportedError):
    """A design whose update is not ``theta - lr * u / D`` (no preconditioner view)."""
