"""ctopt's error types. Every error ctopt raises on purpose is an instance of one of the specific
subclasses of :class:`CtoptError` below; none is raised as a bare ``CtoptError``.

=======================  ==================================================================
class                    raised for
=======================  ==================================================================
DesignError              an invalid design (unknown symbol, unassigned state, bad domain)
DesignFileError          a design file that is not a valid, safe ctopt design
HyperparameterError      a hyperparameter value outside its domain, an unknown hyperparameter
MissingValuesError       numeric values an analysis needs and was not given (``.names``)
OptionError              an unknown option, kind or name, or an argument of the wrong kind
ExpressionError          an analysis input of the wrong form (not a polynomial, not square...)
UnsupportedError         a request ctopt cannot honour (too large, missing extra)
NotPreconditionedError   a design whose update is not ``theta - lr * u / D``
InternalError            a check of ctopt's own result failed (a bug: please report it)
=======================  ==================================================================

The base classes :class:`CtoptError`, :class:`HyperparameterError` and :class:`UnsupportedError`
are defined by the export runtime (:mod:`ctopt.export.errors`), so that an exported optimizer,
with or without ctopt, raises the same classes.

Example:
    >>> from ctopt.errors import CtoptError, HyperparameterError, MissingValuesError
    >>> issubclass(HyperparameterError, ValueError) and issubclass(HyperparameterError, CtoptError)
    True
    >>> err = MissingValuesError(["lr", "h"], "to compute a rate")
    >>> err.names, str(err)
    (('lr', 'h'), "values needed for ['lr', 'h'] to compute a rate")
"""

from __future__ import annotations

from collections.abc import Iterable

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
    "ExpressionError",
    "HyperparameterError",
    "InternalError",
    "MissingValuesError",
    "NotPreconditionedError",
    "OptionError",
    "UnsupportedError",
]


class DesignError(CtoptError, ValueError):
    """An invalid design: unknown symbol, unassigned state, bad domain, unsupported function..."""


class MissingValuesError(HyperparameterError):
    """Numeric values that an analysis needs (hyperparameters, the curvature, a frozen factor)
    were not given. ``names`` lists them in the order they were found; ``purpose`` says what for.

    Example:
        >>> str(MissingValuesError(["h"]))
        "values needed for ['h']"
    """

    def __init__(self, names: Iterable[str], purpose: str = "") -> None:
        self.names = tuple(dict.fromkeys(str(n) for n in names))
        self.purpose = purpose
        super().__init__(f"values needed for {list(self.names)}" + (f" {purpose}" if purpose else ""))

    def __reduce__(self):
        return type(self), (self.names, self.purpose)


class OptionError(CtoptError, ValueError):
    """An unknown option, kind or name (a plot kind, an analysis, a slider, a problem class), or
    an argument of the wrong kind; the message lists what is allowed."""


class ExpressionError(CtoptError, ValueError):
    """An analysis input of the wrong form: not a polynomial in the variable, a matrix that is not
    square, a relation that is not an inequality, a condition that cannot be normalised."""


class DesignFileError(CtoptError, ValueError):
    """A design file that is not a valid, safe ctopt design."""


class NotPreconditionedError(UnsupportedError):
    """A design whose update is not ``theta - lr * u / D`` (no preconditioner view)."""


class InternalError(CtoptError, RuntimeError):
    """A self-check of ctopt's own result failed: a bug in ctopt, never a user's mistake."""
