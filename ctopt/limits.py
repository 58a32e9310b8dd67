"""Bounds on symbolic work, so that an analysis of a too-large design fails fast with a clear
error instead of hanging a notebook.

Example:
    >>> from ctopt.limits import check_size
    >>> check_size("Jury test", degree=3)
    >>> check_size("Jury test", degree=9)
    Traceback (most recent call last):
    ...
    ctopt.errors.UnsupportedError: Jury test: polynomial degree 9 exceeds the symbolic limit 6 ...
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from .errors import UnsupportedError

__all__ = ["MAX_STATES", "MAX_DEGREE", "check_size", "time_limit"]

#: Largest state count a symbolic analysis accepts.
MAX_STATES = 6
#: Largest polynomial degree a symbolic analysis accepts.
MAX_DEGREE = 6


def check_size(what: str, *, states: int | None = None, degree: int | None = None) -> None:
    """Raise :class:`UnsupportedError` when a symbolic task is larger than the limits.

    Example:
        >>> check_size("Lyapunov equation", states=3)
        >>> check_size("Lyapunov equation", states=12)
        Traceback (most recent call last):
        ...
        ctopt.errors.UnsupportedError: Lyapunov equation: 12 states exceed the symbolic limit 6 ...
    """
    if states is not None and states > MAX_STATES:
        raise UnsupportedError(
            f"{what}: {states} states exceed the symbolic limit {MAX_STATES} "
            "(use the numeric path, e.g. .to_control(**values))"
        )
    if degree is not None and degree > MAX_DEGREE:
        raise UnsupportedError(
            f"{what}: polynomial degree {degree} exceeds the symbolic limit {MAX_DEGREE} "
            "(use the numeric path, e.g. .to_control(**values))"
        )


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str = "symbolic analysis") -> Iterator[None]:
    """Abort the block with :class:`UnsupportedError` after ``seconds`` (main thread on POSIX
    only; elsewhere, or with ``seconds=None``, no limit applies).

    Example:
        >>> with time_limit(5):
        ...     x = sum(range(10))
    """
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def _expired(signum, frame):
        raise UnsupportedError(f"{what} did not finish within {seconds:g} s (time_limit)")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
